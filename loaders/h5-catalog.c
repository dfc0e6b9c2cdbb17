/* SPDX-License-Identifier: MIT */
/*
 * The catalogue: what kdl_h5_open() finds in a dump (labels, checkpoints,
 * their layers, gradients and head), checked against schema v1 with a
 * problem recorded for every departure.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

/* Rows must equal N; record N from the first dataset that says. */
static bool check_rows(kdl_h5file *f, const kdl_dsinfo *ds, const char *what)
{
        kdl_dump *d = &f->dump;

        if (d->n == 0) {
                d->n = ds->shape[0];
                return true;
        }
        if (ds->shape[0] != d->n) {
                kdl__h5_problem(f, "%s: expected %zu samples (%s), found %zu", ds->path, d->n, what,
                                ds->shape[0]);
                return false;
        }
        return true;
}

static bool expect_float(kdl_h5file *f, const kdl_dsinfo *ds)
{
        if (!ds->is_float) {
                kdl__h5_problem(f, "%s: expected floating-point values, found %s", ds->path,
                                ds->dtype);
                return false;
        }
        return true;
}

static bool expect_rank(kdl_h5file *f, const kdl_dsinfo *ds, size_t lo, size_t hi,
                        const char *expected)
{
        char s[160];

        if (ds->ndim >= lo && ds->ndim <= hi)
                return true;
        kdl__h5_shape_text(ds, s, sizeof(s));
        kdl__h5_problem(f, "%s: expected %s, found %s", ds->path, expected, s);
        return false;
}

static int layer_cmp(const void *a, const void *b)
{
        const kdl_layer *x = a, *y = b;

        if (x->depth != y->depth)
                return x->depth < y->depth ? -1 : 1;
        return strcmp(x->name, y->name);
}

static int checkpoint_cmp(const void *a, const void *b)
{
        const kdl_checkpoint *x = a, *y = b;

        if (x->step != y->step)
                return x->step < y->step ? -1 : 1;
        return strcmp(x->name, y->name);
}

static void scan_features(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *fgroup = kdl__h5_join(ck->group, "features");
        struct kdl__h5_names ns = {0};

        if (!fgroup)
                return;
        if (!kdl__h5_is_group(f->fid, fgroup)) {
                free(fgroup);
                return;
        }
        if (kdl__h5_list_group(f->fid, fgroup, &ns) < 0) {
                kdl__h5_problem(f, "%s: cannot list the feature layers", fgroup);
                goto out;
        }
        ck->layers = kdl_new(kdl_layer, ns.n ? ns.n : 1);
        if (!ck->layers)
                goto out;
        for (size_t k = 0; k < ns.n; k++) {
                char *path = kdl__h5_join(fgroup, ns.v[k]);
                kdl_layer *l = &ck->layers[ck->nlayers];
                bool present;

                if (!path)
                        break;
                if (!kdl__h5_is_dataset(f->fid, path)) {
                        kdl__h5_problem(f, "%s: expected a feature dataset, found a group", path);
                        free(path);
                        continue;
                }
                if (kdl__h5_describe(f, path, &l->feature) < 0) {
                        free(path);
                        continue;
                }
                free(path);
                l->name = kdl__strdup(ns.v[k]);
                if (!l->name) {
                        kdl__h5_dsinfo_release(&l->feature);
                        break;
                }
                if (kdl__h5_attr_int(f->fid, l->feature.path, "depth", &l->depth, &present) < 0)
                        kdl__h5_problem(f, "%s: expected an integer attribute 'depth', found %s",
                                        l->feature.path, present ? "another type" : "none");
                if (expect_rank(f, &l->feature, 2, 4, "[N, D], [N, T, D] or [N, Ch, H, W]") &&
                    expect_float(f, &l->feature))
                        check_rows(f, &l->feature, "as /labels and the logits");
                ck->nlayers++;
        }
        qsort(ck->layers, ck->nlayers, sizeof(*ck->layers), layer_cmp);
out:
        kdl__h5_names_release(&ns);
        free(fgroup);
}

static void scan_gradients(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *gl = kdl__h5_join(ck->group, "gradients/logits");
        char *gf = kdl__h5_join(ck->group, "gradients/features");
        struct kdl__h5_names ns = {0};

        if (!gl || !gf)
                goto out;
        ck->grad_logits = kdl__h5_describe_new(f, gl);
        if (ck->grad_logits && ck->logits &&
            (ck->grad_logits->ndim != ck->logits->ndim ||
             memcmp(ck->grad_logits->shape, ck->logits->shape, sizeof(ck->logits->shape)) != 0)) {
                char a[160], b[160];

                kdl__h5_shape_text(ck->logits, a, sizeof(a));
                kdl__h5_shape_text(ck->grad_logits, b, sizeof(b));
                kdl__h5_problem(f, "%s: expected the shape of the logits %s, found %s", gl, a, b);
        } else if (ck->grad_logits) {
                expect_float(f, ck->grad_logits);
        }
        if (!kdl__h5_is_group(f->fid, gf) || kdl__h5_list_group(f->fid, gf, &ns) < 0)
                goto out;
        for (size_t k = 0; k < ns.n; k++) {
                char *path = kdl__h5_join(gf, ns.v[k]);
                kdl_layer *l = NULL;

                if (!path)
                        break;
                for (size_t j = 0; j < ck->nlayers; j++)
                        if (strcmp(ck->layers[j].name, ns.v[k]) == 0)
                                l = &ck->layers[j];
                if (!l) {
                        kdl__h5_problem(
                                f,
                                "%s: expected a gradient of a feature layer, found no layer "
                                "'%s' under features/",
                                path, ns.v[k]);
                } else if ((l->gradient = kdl__h5_describe_new(f, path))) {
                        if (l->gradient->ndim != l->feature.ndim ||
                            memcmp(l->gradient->shape, l->feature.shape,
                                   sizeof(l->feature.shape)) != 0) {
                                char a[160], b[160];

                                kdl__h5_shape_text(&l->feature, a, sizeof(a));
                                kdl__h5_shape_text(l->gradient, b, sizeof(b));
                                kdl__h5_problem(
                                        f, "%s: expected the shape of the feature %s, found %s",
                                        path, a, b);
                        } else {
                                expect_float(f, l->gradient);
                        }
                }
                free(path);
        }
out:
        kdl__h5_names_release(&ns);
        free(gl);
        free(gf);
}

static void scan_head(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *hg = kdl__h5_join(ck->group, "head");
        char *hw = NULL, *hb = NULL;
        const kdl_layer *in = NULL;
        bool present;

        if (!hg || !kdl__h5_is_group(f->fid, hg))
                goto out;
        hw = kdl__h5_join(hg, "weight");
        hb = kdl__h5_join(hg, "bias");
        if (!hw || !hb)
                goto out;
        ck->head_weight = kdl__h5_describe_new(f, hw);
        ck->head_bias = kdl__h5_describe_new(f, hb);
        if (!ck->head_weight)
                kdl__h5_problem(f, "%s: expected the head weight [C, D], found none", hw);
        if (!ck->head_bias)
                kdl__h5_problem(f, "%s: expected the head bias [C], found none", hb);
        if (kdl__h5_attr_string(f->fid, hg, "input", &ck->head_input, &present) < 0)
                kdl__h5_problem(f,
                                "%s: expected a string attribute 'input' naming a feature layer, "
                                "found %s",
                                hg, present ? "another type" : "none");
        else if (!(in = kdl_h5_layer(ck, ck->head_input)))
                kdl__h5_problem(f,
                                "%s: attribute input: expected a layer under features/, found '%s'",
                                hg, ck->head_input);

        if (ck->head_weight && expect_rank(f, ck->head_weight, 2, 2, "2-D [C, D]") &&
            expect_float(f, ck->head_weight)) {
                size_t c = ck->head_weight->shape[0], dw = ck->head_weight->shape[1];

                if (f->dump.c && c != f->dump.c)
                        kdl__h5_problem(f, "%s: expected %zu rows (classes), found %zu", hw,
                                        f->dump.c, c);
                if (in && dw != kdl_dsinfo_width(&in->feature, KDL_SPATIAL_FLATTEN) &&
                    dw != kdl_dsinfo_width(&in->feature, KDL_SPATIAL_AVG))
                        kdl__h5_problem(
                                f, "%s: expected %zu columns (the width of '%s'), found %zu", hw,
                                kdl_dsinfo_width(&in->feature, KDL_SPATIAL_FLATTEN), in->name, dw);
        }
        if (ck->head_bias && expect_rank(f, ck->head_bias, 1, 1, "1-D [C]") &&
            expect_float(f, ck->head_bias) && f->dump.c && ck->head_bias->shape[0] != f->dump.c)
                kdl__h5_problem(f, "%s: expected %zu entries (classes), found %zu", hb, f->dump.c,
                                ck->head_bias->shape[0]);
out:
        free(hg);
        free(hw);
        free(hb);
}

static void scan_checkpoint(kdl_h5file *f, kdl_checkpoint *ck, bool root)
{
        char *lp = kdl__h5_join(ck->group, "logits");
        bool present;

        if (kdl__h5_attr_int(f->fid, ck->group, "step", &ck->step, &present) < 0) {
                ck->step = 0;
                if (!root || present)
                        kdl__h5_problem(f, "%s: expected an integer attribute 'step', found %s",
                                        ck->group, present ? "another type" : "none");
        }
        ck->has_epoch = kdl__h5_attr_int(f->fid, ck->group, "epoch", &ck->epoch, &present) == 0;
        if (!lp)
                return;
        ck->logits = kdl__h5_describe_new(f, lp);
        if (!ck->logits) {
                if (!kdl__h5_is_dataset(f->fid, lp))
                        kdl__h5_problem(f, "%s: expected the logits [N, C], found none", lp);
        } else if (expect_rank(f, ck->logits, 2, 2, "2-D [N, C]") && expect_float(f, ck->logits)) {
                check_rows(f, ck->logits, "as /labels");
                if (f->dump.c == 0)
                        f->dump.c = ck->logits->shape[1];
                else if (ck->logits->shape[1] != f->dump.c)
                        kdl__h5_problem(
                                f, "%s: expected %zu classes (as the other checkpoints), found %zu",
                                lp, f->dump.c, ck->logits->shape[1]);
                if (ck->logits->shape[1] < 2)
                        kdl__h5_problem(f, "%s: expected at least 2 classes, found %zu", lp,
                                        ck->logits->shape[1]);
        }
        free(lp);
        scan_features(f, ck);
        scan_gradients(f, ck);
        scan_head(f, ck);
}

static void scan_labels(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;

        d->labels = kdl__h5_describe_new(f, "/labels");
        d->sample_ids = kdl__h5_describe_new(f, "/sample_ids");
        if (d->labels) {
                if (expect_rank(f, d->labels, 1, 1, "1-D [N] integer labels")) {
                        if (!d->labels->is_integer)
                                kdl__h5_problem(f,
                                                "/labels: expected integer class labels, found %s",
                                                d->labels->dtype);
                        else
                                d->n = d->labels->shape[0];
                }
        }
        if (d->sample_ids && expect_rank(f, d->sample_ids, 1, 1, "1-D [N] integer ids")) {
                if (!d->sample_ids->is_integer)
                        kdl__h5_problem(f, "/sample_ids: expected integer ids, found %s",
                                        d->sample_ids->dtype);
                else
                        check_rows(f, d->sample_ids, "as /labels");
        }
        /* The label range needs C, known only after the checkpoints: check_label_range(). */
}

static void check_label_range(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        int64_t *v = NULL;

        if (!d->labels || !d->labels->is_integer || d->labels->ndim != 1)
                return;
        if (kdl_h5_read_labels(f, &v) < 0) {
                kdl__h5_problem(f, "/labels: cannot read: %s", kdl_errmsg());
                return;
        }
        d->label_min = INT64_MAX;
        d->label_max = INT64_MIN;
        for (size_t i = 0; i < d->labels->shape[0]; i++) {
                if (v[i] < d->label_min)
                        d->label_min = v[i];
                if (v[i] > d->label_max)
                        d->label_max = v[i];
        }
        if (d->c) {
                for (size_t i = 0; i < d->labels->shape[0]; i++)
                        if (v[i] < 0 || (uint64_t) v[i] >= d->c) {
                                kdl__h5_problem(
                                        f,
                                        "/labels: expected classes in [0, %zu), found %lld at "
                                        "sample %zu",
                                        d->c, (long long) v[i], i);
                                break;
                        }
        }
        free(v);
}

void kdl__h5_catalog(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        struct kdl__h5_names ns = {0};
        bool present;

        if (kdl__h5_attr_int(f->fid, "/", "kdlens_format", &d->format, &present) < 0) {
                d->format = -1;
                kdl__h5_problem(f, "/: expected attribute kdlens_format=1, found %s",
                                present ? "a non-integer value" : "none (not a kdlens dump?)");
        } else if (d->format != 1) {
                kdl__h5_problem(f,
                                "/: expected attribute kdlens_format=1, found %lld (a newer kdlens "
                                "may read it)",
                                (long long) d->format);
                return; /* an unknown format: do not guess at its layout */
        }
        if (kdl__h5_attr_string(f->fid, "/", "role", &d->role, &present) == 0) {
                if (strcmp(d->role, "teacher") != 0 && strcmp(d->role, "student") != 0)
                        kdl__h5_problem(f,
                                        "/: attribute role: expected \"teacher\" or \"student\", "
                                        "found \"%s\"",
                                        d->role);
        } else if (present) {
                kdl__h5_problem(f, "/: attribute role: expected a string, found another type");
        }
        kdl__h5_attr_string(f->fid, "/", "model", &d->model, &present);

        scan_labels(f);

        if (kdl__h5_is_group(f->fid, "/checkpoints")) {
                if (kdl__h5_list_group(f->fid, "/checkpoints", &ns) < 0) {
                        kdl__h5_problem(f, "/checkpoints: cannot list the checkpoints");
                        return;
                }
                d->checkpoints = kdl_new(kdl_checkpoint, ns.n ? ns.n : 1);
                if (!d->checkpoints)
                        goto out;
                for (size_t k = 0; k < ns.n; k++) {
                        kdl_checkpoint *ck = &d->checkpoints[d->ncheckpoints];

                        ck->group = kdl__asprintf("/checkpoints/%s", ns.v[k]);
                        if (!ck->group)
                                break;
                        if (!kdl__h5_is_group(f->fid, ck->group)) {
                                kdl__h5_problem(f,
                                                "%s: expected a checkpoint group, found a dataset",
                                                ck->group);
                                free(ck->group);
                                ck->group = NULL;
                                continue;
                        }
                        ck->name = kdl__strdup(ns.v[k]);
                        d->ncheckpoints++;
                        if (!ck->name)
                                break;
                        scan_checkpoint(f, ck, false);
                }
                if (d->ncheckpoints == 0)
                        kdl__h5_problem(
                                f, "/checkpoints: expected at least one checkpoint group, found "
                                   "none");
        } else {
                d->checkpoints = kdl_new(kdl_checkpoint, 1);
                if (!d->checkpoints)
                        goto out;
                d->checkpoints[0].name = kdl__strdup("root");
                d->checkpoints[0].group = kdl__strdup("/");
                d->ncheckpoints = 1;
                if (d->checkpoints[0].name && d->checkpoints[0].group)
                        scan_checkpoint(f, &d->checkpoints[0], true);
        }
        qsort(d->checkpoints, d->ncheckpoints, sizeof(*d->checkpoints), checkpoint_cmp);
        check_label_range(f);
out:
        kdl__h5_names_release(&ns);
}

static void checkpoint_release(kdl_checkpoint *ck)
{
        for (size_t j = 0; j < ck->nlayers; j++) {
                free(ck->layers[j].name);
                kdl__h5_dsinfo_release(&ck->layers[j].feature);
                kdl__h5_dsinfo_free(ck->layers[j].gradient);
        }
        free(ck->layers);
        kdl__h5_dsinfo_free(ck->logits);
        kdl__h5_dsinfo_free(ck->grad_logits);
        kdl__h5_dsinfo_free(ck->head_weight);
        kdl__h5_dsinfo_free(ck->head_bias);
        free(ck->head_input);
        free(ck->name);
        free(ck->group);
}

void kdl__h5_dump_release(kdl_dump *d)
{
        for (size_t k = 0; k < d->ncheckpoints; k++)
                checkpoint_release(&d->checkpoints[k]);
        free(d->checkpoints);
        for (size_t k = 0; k < d->nproblems; k++)
                free(d->problems[k]);
        free(d->problems);
        kdl__h5_dsinfo_free(d->labels);
        kdl__h5_dsinfo_free(d->sample_ids);
        free(d->role);
        free(d->model);
        free(d->path);
}

const kdl_checkpoint *kdl_h5_checkpoint(const kdl_h5file *f, const char *name)
{
        for (size_t k = 0; k < f->dump.ncheckpoints; k++)
                if (strcmp(f->dump.checkpoints[k].name, name) == 0)
                        return &f->dump.checkpoints[k];
        return NULL;
}

const kdl_layer *kdl_h5_layer(const kdl_checkpoint *ck, const char *name)
{
        for (size_t k = 0; k < ck->nlayers; k++)
                if (strcmp(ck->layers[k].name, name) == 0)
                        return &ck->layers[k];
        return NULL;
}
