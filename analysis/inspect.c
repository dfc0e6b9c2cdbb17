/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/stream.h"
#include "analysis/inspect.h"
#include "analysis/need.h"
#include "metrics/base/banned.h"

void kdl_run_inspect_opts_init(struct kdl_run_inspect_opts *o)
{
        *o = (struct kdl_run_inspect_opts){
                .scan_values = true, .join = KDL_JOIN_STRICT, .memory = kdl_memory_default()};
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

/* The "files" row of @d. */
static int file_row(kdl_table *files, const kdl_dump *d)
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
        return err;
}

/* The "checkpoints" row of @ck: the knowledge sources it holds. */
static int checkpoint_row(kdl_table *cks, const kdl_dump *d, const kdl_checkpoint *ck)
{
        size_t ngrad = 0;
        int err;

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
                                            ck->head_weight && ck->head_bias && ck->head_input);
        err = err ?: kdl_table_put_str(cks, "head_input", ck->head_input ? ck->head_input : "-");
        return err;
}

/* The "datasets" rows of @ck's sparse logits (logits_topk/), those there. */
static int sparse_datasets(kdl_table *sets, const kdl_dump *d, const kdl_checkpoint *ck)
{
        const kdl_dsinfo *ds[] = {ck->topk_indices, ck->topk_values, ck->topk_logprobs,
                                  ck->topk_lse};
        static const char *const kind[] = {"topk_indices", "topk_values", "topk_logprobs",
                                           "topk_logsumexp"};
        int err = 0;

        for (size_t i = 0; i < 4 && !err; i++)
                if (ds[i])
                        err = dataset_row(sets, d, ck, kind[i], NULL, ds[i], false, 0);
        return err;
}

/* The "datasets" rows of @ck's datasets. */
static int checkpoint_datasets(kdl_table *sets, const kdl_dump *d, const kdl_checkpoint *ck)
{
        int err;

        if (ck->logits && (err = dataset_row(sets, d, ck, "logits", NULL, ck->logits, false, 0)))
                return err;
        for (size_t j = 0; j < ck->nlayers; j++) {
                const kdl_layer *l = &ck->layers[j];

                err = dataset_row(sets, d, ck, "feature", l->name, &l->feature, true, l->depth);
                if (!err && l->gradient)
                        err = dataset_row(sets, d, ck, "feature_gradient", l->name, l->gradient,
                                          true, l->depth);
                if (err)
                        return err;
        }
        if (ck->grad_logits &&
            (err = dataset_row(sets, d, ck, "logit_gradient", NULL, ck->grad_logits, false, 0)))
                return err;
        if (ck->head_weight &&
            (err = dataset_row(sets, d, ck, "head_weight", NULL, ck->head_weight, false, 0)))
                return err;
        if (ck->head_bias &&
            (err = dataset_row(sets, d, ck, "head_bias", NULL, ck->head_bias, false, 0)))
                return err;
        return sparse_datasets(sets, d, ck);
}

static int describe_file(kdl_table *files, kdl_table *cks, kdl_table *sets, const kdl_dump *d)
{
        int err = file_row(files, d);

        if (err)
                return err;
        if (d->labels && (err = dataset_row(sets, d, NULL, "labels", NULL, d->labels, false, 0)))
                return err;
        if (d->sequence_ids &&
            (err = dataset_row(sets, d, NULL, "sequence_ids", NULL, d->sequence_ids, false, 0)))
                return err;
        if (d->positions &&
            (err = dataset_row(sets, d, NULL, "positions", NULL, d->positions, false, 0)))
                return err;
        if (d->sample_ids &&
            (err = dataset_row(sets, d, NULL, "sample_ids", NULL, d->sample_ids, false, 0)))
                return err;
        for (size_t k = 0; k < d->ncheckpoints; k++) {
                err = checkpoint_row(cks, d, &d->checkpoints[k]);
                err = err ?: checkpoint_datasets(sets, d, &d->checkpoints[k]);
                if (err)
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

/* Read the labels of both dumps of @p in blocks: the stream compares them row
 * by row.  Return: 0; -KDL_EMISMATCH on the first row where they differ. */
static int check_labels(const kdl_pair *p)
{
        kdl_stream *s = NULL;
        int err;

        if (!kdl_h5_dump(p->teacher)->labels || !kdl_h5_dump(p->student)->labels)
                return 0;
        err = kdl_stream_new(p->n, p, NULL, &s);
        while (err == 0 && (err = kdl_stream_next(s)) > 0)
                err = 0;
        kdl_stream_free(s);
        return err;
}

/* Pair every student with the (first) teacher, as the analysis commands will,
 * and check the pairs' labels agree row by row. */
static int align(kdl_h5file **files, size_t n, const struct kdl_run_inspect_opts *o, kdl_doc *doc,
                 kdl_table *al, kdl_table *probs, size_t *nprob)
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
                /* A damaged dump's problems are already listed: pairing it would only
                 * say the same again, or pair rows the damage makes meaningless. */
                if (d->nproblems || kdl_h5_dump(teacher)->nproblems) {
                        err = kdl_table_add_row(al) < 0 ? -ENOMEM : 0;
                        err = err ?: kdl_table_put_str(al, "teacher", kdl_h5_dump(teacher)->path);
                        err = err ?: kdl_table_put_str(al, "student", d->path);
                        err = err ?: kdl_table_put_str(al, "status", "not paired: schema problems");
                        continue;
                }
                if (o->join == KDL_JOIN_INNER &&
                    ((r = kdl__join_check(teacher)) < 0 || (r = kdl__join_check(files[k])) < 0))
                        return r;
                r = kdl_h5_pair_join(teacher, files[k], o->join == KDL_JOIN_INNER, &p);
                if (r == 0 && (r = check_labels(p)) < 0 && r != -KDL_EMISMATCH) {
                        kdl_pair_free(p);
                        return r;
                }
                err = kdl_table_add_row(al) < 0 ? -ENOMEM : 0;
                err = err ?: kdl_table_put_str(al, "teacher", kdl_h5_dump(teacher)->path);
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
                        err = err ?: kdl__pair_describe(p, o->join, NULL, doc);
                }
                kdl_pair_free(p);
        }
        return err;
}

struct tables {
        kdl_table *files, *cks, *sets, *al, *probs;
};

static int tables_new(struct tables *tb)
{
        int err;

        err = kdl_table_new("files", "Files", &tb->files);
        err = err ?: kdl_table_new("checkpoints", "Checkpoints and knowledge sources", &tb->cks);
        err = err ?: kdl_table_new("datasets", "Datasets", &tb->sets);
        err = err ?: kdl_table_new("alignment", "Teacher/student alignment", &tb->al);
        err = err ?: kdl_table_new("problems", "Problems", &tb->probs);
        return err;
}

/* The tables into @doc: alignment when a pair was tried, problems when there are. */
static void tables_commit(struct tables *tb, kdl_doc *doc, size_t nprob, bool scanned)
{
        kdl_table_set_label(tb->sets, "width", "width (avg)");
        if (!scanned)
                kdl_doc_add_note(doc, "values not scanned for NaN/Inf (--quick)");
        kdl_doc_add_table(doc, tb->files);
        kdl_doc_add_table(doc, tb->cks);
        kdl_doc_add_table(doc, tb->sets);
        tb->files = tb->cks = tb->sets = NULL;
        if (kdl_table_rows(tb->al)) {
                kdl_doc_add_table(doc, tb->al);
                tb->al = NULL;
        }
        if (nprob) {
                kdl_doc_add_table(doc, tb->probs);
                tb->probs = NULL;
        }
}

static void tables_free(struct tables *tb)
{
        kdl_table_free(tb->files);
        kdl_table_free(tb->cks);
        kdl_table_free(tb->sets);
        kdl_table_free(tb->al);
        kdl_table_free(tb->probs);
}

/* The largest of what kdl_h5_scan_values() holds while it scans @ds of @f (a
 * floating-point one) into @nd: a block of 4 Mi doubles (32 MiB, at least one
 * row) and the dataset's chunk cache.  NEEDSWORK: h5-scan.c's block, stated
 * here; take it from there once the scan takes a budget. */
static int scan_need(const kdl_h5file *f, const kdl_dsinfo *ds, kdl__need *nd)
{
        kdl__need one = {.analysis = nd->analysis};
        struct kdl_stream_cost c;
        size_t inner = 1, rows;
        int err;

        if (!ds || !ds->is_float || ds->ndim < 1 || ds->ndim > KDL_MAX_DIMS)
                return 0;
        for (size_t k = 1; k < ds->ndim; k++)
                inner = kdl_sat_mul(inner, ds->shape[k]);
        rows = ((size_t) 4 << 20) / inner;
        rows = rows < 1 ? 1 : rows > ds->shape[0] ? ds->shape[0] : rows;
        kdl_stream_cost_init(&c, NULL);
        kdl_stream_cost_add(&c, ds, KDL_SPATIAL_FLATTEN, false);
        err = kdl__need_add(
                &one,
                kdl_sat_add(kdl_sat_mul(kdl_sat_mul(rows, inner), sizeof(double)), c.fixed_bytes),
                KDL_LEVER_QUICK, "the NaN/Inf scan of '%s': %s in blocks of %zu rows",
                kdl_h5_dump(f)->path, ds->path, rows);
        if (!err)
                kdl__need_max(nd, &one);
        kdl__need_release(&one);
        return err;
}

/* The need of scanning every file of @fs, one dataset at a time, as kdl_h5_scan_values(). */
static int scan_needs(kdl_h5file *const *fs, size_t n, kdl__need *nd)
{
        int err = 0;

        for (size_t k = 0; k < n && !err; k++) {
                const kdl_dump *d = kdl_h5_dump(fs[k]);

                for (size_t c = 0; c < d->ncheckpoints && !err; c++) {
                        const kdl_checkpoint *ck = &d->checkpoints[c];
                        const kdl_dsinfo *list[] = {
                                ck->logits,   ck->grad_logits, ck->topk_values, ck->topk_logprobs,
                                ck->topk_lse, ck->head_weight, ck->head_bias};

                        for (size_t j = 0; j < sizeof(list) / sizeof(list[0]) && !err; j++)
                                err = scan_need(fs[k], list[j], nd);
                        for (size_t j = 0; j < ck->nlayers && !err; j++) {
                                err = scan_need(fs[k], &ck->layers[j].feature, nd);
                                err = err ?: scan_need(fs[k], ck->layers[j].gradient, nd);
                        }
                }
        }
        return err;
}

/* Open the @n @paths into @fs, and with o->scan_values read every value (a
 * NaN or Inf is a problem of the file, not an error) once its need fits
 * o->memory. */
static int open_files(const char *const *paths, size_t n, const struct kdl_run_inspect_opts *o,
                      kdl_h5file **fs)
{
        kdl__need nd = {.analysis = "inspect"};
        int err = 0;

        for (size_t k = 0; k < n && !err; k++)
                err = kdl_h5_open(paths[k], &fs[k]);
        if (!err && o->scan_values) {
                err = scan_needs(fs, n, &nd);
                err = err ?: kdl__need_check(&nd, o->memory, KDL_LEVER_QUICK);
                kdl__need_release(&nd);
        }
        for (size_t k = 0; k < n && o->scan_values && err >= 0; k++)
                err = kdl_h5_scan_values(fs[k]);
        return err < 0 ? err : 0;
}

int kdl_run_inspect(const char *const *paths, size_t n, const struct kdl_run_inspect_opts *o,
                    kdl_doc *doc, size_t *ret_problems)
{
        struct tables tb = {0};
        kdl_h5file **fs = kdl_new(kdl_h5file *, n ? n : 1);
        size_t nprob = 0;
        int err;

        if (!fs)
                return -ENOMEM;
        err = open_files(paths, n, o, fs);
        err = err ?: tables_new(&tb);
        for (size_t k = 0; k < n && !err; k++) {
                const kdl_dump *d = kdl_h5_dump(fs[k]);

                err = describe_file(tb.files, tb.cks, tb.sets, d);
                for (size_t j = 0; j < d->nproblems && !err; j++)
                        err = add_problem(tb.probs, d->path, d->problems[j]);
                nprob += d->nproblems;
        }
        err = err ?: align(fs, n, o, doc, tb.al, tb.probs, &nprob);
        for (size_t k = 0; k < n && !err; k++)
                err = kdl_doc_add_input(doc, paths[k]);
        if (!err) {
                tables_commit(&tb, doc, nprob, o->scan_values);
                *ret_problems = nprob;
        }
        tables_free(&tb);
        for (size_t k = 0; k < n; k++)
                kdl_h5_close(fs[k]);
        free(fs);
        return err;
}
