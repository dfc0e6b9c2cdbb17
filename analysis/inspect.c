/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "analysis/inspect.h"
#include "metrics/base/banned.h"

void kdl_run_inspect_opts_init(struct kdl_run_inspect_opts *o)
{
        *o = (struct kdl_run_inspect_opts){.scan_values = true};
}

static char *shape_string(const kdl_dsinfo *ds)
{
        char *s = kdl__strdup("["), *t;

        for (size_t k = 0; s && k < ds->ndim && k < KDL_MAX_DIMS; k++) {
                t = kdl__asprintf("%s%s%zu", s, k ? ", " : "", ds->shape[k]);
                free(s);
                s = t;
        }
        if (!s)
                return NULL;
        t = kdl__asprintf("%s]", s);
        free(s);
        return t;
}

static char *chunk_string(const kdl_dsinfo *ds)
{
        kdl_dsinfo c = *ds;

        if (!ds->chunked)
                return kdl__strdup("contiguous");
        memcpy(c.shape, ds->chunk, sizeof(c.shape));
        return shape_string(&c);
}

static int dataset_row(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck, const char *kind,
                       const char *layer, const kdl_dsinfo *ds, bool has_depth, long long depth)
{
        char *shape = shape_string(ds), *chunks = chunk_string(ds);
        int err = -ENOMEM;

        if (!shape || !chunks || kdl_table_add_row(t) < 0)
                goto out;
        err = kdl_table_put_str(t, "file", d->path);
        err = err ?: kdl_table_put_str(t, "checkpoint", ck ? ck->name : "-");
        err = err ?: kdl_table_put_str(t, "kind", kind);
        err = err ?: kdl_table_put_str(t, "layer", layer ? layer : "-");
        if (!err && has_depth)
                err = kdl_table_put_int(t, "depth", depth);
        else if (!err)
                err = kdl_table_put_str(t, "depth", "-");
        err = err ?: kdl_table_put_str(t, "dataset", ds->path);
        err = err ?: kdl_table_put_str(t, "shape", shape);
        if (!err && ds->ndim >= 2 && ds->ndim <= KDL_MAX_DIMS)
                err = kdl_table_put_int(t, "width",
                                        (long long) kdl_dsinfo_width(ds, KDL_SPATIAL_AVG));
        err = err ?: kdl_table_put_str(t, "dtype", ds->dtype);
        err = err ?: kdl_table_put_str(t, "chunks", chunks);
        if (!err) {
                if (ds->gzip >= 0)
                        err = kdl_table_putf(t, "compression", "gzip-%d", ds->gzip);
                else
                        err = kdl_table_put_str(t, "compression",
                                                ds->other_filter ? "other" : "none");
        }
out:
        free(shape);
        free(chunks);
        return err;
}

static int describe_file(kdl_table *files, kdl_table *cks, kdl_table *sets, const kdl_dump *d)
{
        int err;

        if (kdl_table_add_row(files) < 0)
                return -ENOMEM;
        err = kdl_table_put_str(files, "file", d->path);
        err = err ?: kdl_table_put_str(files, "role", d->role ? d->role : "-");
        err = err ?: kdl_table_put_str(files, "model", d->model ? d->model : "-");
        err = err
                      ?: (d->format >= 0 ? kdl_table_put_int(files, "format", d->format)
                                         : kdl_table_put_str(files, "format", "-"));
        err = err ?: kdl_table_put_int(files, "samples", (long long) d->n);
        err = err ?: kdl_table_put_int(files, "classes", (long long) d->c);
        err = err ?: kdl_table_put_int(files, "checkpoints", (long long) d->ncheckpoints);
        err = err ?: kdl_table_put_bool(files, "labels", d->labels != NULL);
        err = err ?: kdl_table_put_bool(files, "sample_ids", d->sample_ids != NULL);
        err = err ?: kdl_table_put_int(files, "problems", (long long) d->nproblems);
        if (err)
                return err;

        if (d->labels && (err = dataset_row(sets, d, NULL, "labels", NULL, d->labels, false, 0)))
                return err;
        if (d->sample_ids &&
            (err = dataset_row(sets, d, NULL, "sample_ids", NULL, d->sample_ids, false, 0)))
                return err;
        for (size_t k = 0; k < d->ncheckpoints; k++) {
                const kdl_checkpoint *ck = &d->checkpoints[k];
                size_t ngrad = 0;

                for (size_t j = 0; j < ck->nlayers; j++)
                        ngrad += ck->layers[j].gradient != NULL;
                if (kdl_table_add_row(cks) < 0)
                        return -ENOMEM;
                err = kdl_table_put_str(cks, "file", d->path);
                err = err ?: kdl_table_put_str(cks, "checkpoint", ck->name);
                err = err ?: kdl_table_put_int(cks, "step", ck->step);
                err = err
                              ?: (ck->has_epoch ? kdl_table_put_int(cks, "epoch", ck->epoch)
                                                : kdl_table_put_str(cks, "epoch", "-"));
                err = err ?: kdl_table_put_bool(cks, "logits", ck->logits != NULL);
                err = err ?: kdl_table_put_int(cks, "feature_layers", (long long) ck->nlayers);
                err = err ?: kdl_table_put_bool(cks, "logit_gradients", ck->grad_logits != NULL);
                err = err ?: kdl_table_put_int(cks, "feature_gradients", (long long) ngrad);
                err = err
                              ?: kdl_table_put_bool(cks, "head",
                                                    ck->head_weight && ck->head_bias &&
                                                            ck->head_input);
                err = err
                              ?: kdl_table_put_str(cks, "head_input",
                                                   ck->head_input ? ck->head_input : "-");
                if (err)
                        return err;
                if (ck->logits &&
                    (err = dataset_row(sets, d, ck, "logits", NULL, ck->logits, false, 0)))
                        return err;
                for (size_t j = 0; j < ck->nlayers; j++) {
                        const kdl_layer *l = &ck->layers[j];

                        err = dataset_row(sets, d, ck, "feature", l->name, &l->feature, true,
                                          l->depth);
                        if (!err && l->gradient)
                                err = dataset_row(sets, d, ck, "feature_gradient", l->name,
                                                  l->gradient, true, l->depth);
                        if (err)
                                return err;
                }
                if (ck->grad_logits && (err = dataset_row(sets, d, ck, "logit_gradient", NULL,
                                                          ck->grad_logits, false, 0)))
                        return err;
                if (ck->head_weight && (err = dataset_row(sets, d, ck, "head_weight", NULL,
                                                          ck->head_weight, false, 0)))
                        return err;
                if (ck->head_bias &&
                    (err = dataset_row(sets, d, ck, "head_bias", NULL, ck->head_bias, false, 0)))
                        return err;
        }
        return 0;
}

static int add_problem(kdl_table *t, const char *file, const char *msg)
{
        int err;

        if (kdl_table_add_row(t) < 0)
                return -ENOMEM;
        err = kdl_table_put_str(t, "file", file);
        return err ?: kdl_table_put_str(t, "problem", msg);
}

/* Pair every student with the (first) teacher, as the analysis commands will. */
static int align(kdl_h5file **files, size_t n, kdl_table *al, kdl_table *probs, size_t *nprob)
{
        kdl_h5file *teacher = NULL;
        int err = 0;

        for (size_t k = 0; k < n && !teacher; k++) {
                const kdl_dump *d = kdl_h5_dump(files[k]);

                if (d->role && strcmp(d->role, "teacher") == 0)
                        teacher = files[k];
        }
        if (!teacher)
                return 0;
        for (size_t k = 0; k < n && !err; k++) {
                const kdl_dump *d = kdl_h5_dump(files[k]);
                kdl_pair *p = NULL;
                int r;

                if (!d->role || strcmp(d->role, "student") != 0)
                        continue;
                r = kdl_h5_pair(teacher, files[k], &p);
                if (kdl_table_add_row(al) < 0)
                        return -ENOMEM;
                err = kdl_table_put_str(al, "teacher", kdl_h5_dump(teacher)->path);
                err = err ?: kdl_table_put_str(al, "student", d->path);
                if (r < 0) {
                        err = err ?: kdl_table_put_str(al, "status", "mismatch");
                        err = err ?: add_problem(probs, d->path, kdl_errmsg());
                        (*nprob)++;
                } else {
                        err = err ?: kdl_table_put_str(al, "status", "ok");
                        err = err ?: kdl_table_put_int(al, "samples", (long long) p->n);
                        err = err
                                      ?: kdl_table_put_str(al, "aligned_by",
                                                           p->joined ? "sample_ids" : "row order");
                        err = err ?: kdl_table_put_bool(al, "reordered", p->student_rows != NULL);
                }
                kdl_pair_free(p);
        }
        return err;
}

int kdl_run_inspect(const char *const *paths, size_t n, const struct kdl_run_inspect_opts *o,
                    kdl_doc *doc, size_t *ret_problems)
{
        kdl_table *files = NULL, *cks = NULL, *sets = NULL, *al = NULL, *probs = NULL;
        kdl_h5file **fs = kdl_new(kdl_h5file *, n ? n : 1);
        size_t nprob = 0;
        int err = 0;

        if (!fs)
                return -ENOMEM;
        for (size_t k = 0; k < n && !err; k++)
                err = kdl_h5_open(paths[k], &fs[k]);
        if (err < 0)
                goto out;
        for (size_t k = 0; k < n && o->scan_values; k++) {
                err = kdl_h5_scan_values(fs[k]);
                if (err < 0)
                        goto out;
        }
        err = kdl_table_new("files", "Files", &files);
        err = err ?: kdl_table_new("checkpoints", "Checkpoints and knowledge sources", &cks);
        err = err ?: kdl_table_new("datasets", "Datasets", &sets);
        err = err ?: kdl_table_new("alignment", "Teacher/student alignment", &al);
        err = err ?: kdl_table_new("problems", "Problems", &probs);
        if (err)
                goto out;
        for (size_t k = 0; k < n && !err; k++) {
                const kdl_dump *d = kdl_h5_dump(fs[k]);

                err = describe_file(files, cks, sets, d);
                for (size_t j = 0; j < d->nproblems && !err; j++)
                        err = add_problem(probs, d->path, d->problems[j]);
                nprob += d->nproblems;
        }
        err = err ?: align(fs, n, al, probs, &nprob);
        for (size_t k = 0; k < n && !err; k++)
                err = kdl_doc_add_input(doc, paths[k]);
        if (err)
                goto out;
        kdl_table_set_label(sets, "width", "width (avg)");
        if (!o->scan_values)
                kdl_doc_add_note(doc, "values not scanned for NaN/Inf (--quick)");
        kdl_doc_add_table(doc, files);
        kdl_doc_add_table(doc, cks);
        kdl_doc_add_table(doc, sets);
        files = cks = sets = NULL;
        if (kdl_table_rows(al)) {
                kdl_doc_add_table(doc, al);
                al = NULL;
        }
        if (nprob) {
                kdl_doc_add_table(doc, probs);
                probs = NULL;
        }
        *ret_problems = nprob;
out:
        kdl_table_free(files);
        kdl_table_free(cks);
        kdl_table_free(sets);
        kdl_table_free(al);
        kdl_table_free(probs);
        for (size_t k = 0; k < n; k++)
                kdl_h5_close(fs[k]);
        free(fs);
        return err;
}
