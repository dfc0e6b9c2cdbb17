/* SPDX-License-Identifier: MIT */
/*
 * The catalogue: what kdl_h5_open() finds in a dump (labels, checkpoints,
 * their layers, gradients and head), checked against schema v1 with a
 * problem recorded for every departure.
 */
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

/*
 * The helpers below return 1 when what they check holds, 0 when it does
 * not (a problem recorded: kdl__h5_problem() returns 0) and -ENOMEM; the
 * scan_*() functions return 0 or -ENOMEM.  A problem never stops the scan,
 * running out of memory always does.
 */

/* Rows must equal N; record N from the first dataset that says. */
int kdl__h5_check_rows(kdl_h5file *f, const kdl_dsinfo *ds, const char *what)
{
        kdl_dump *d = &f->dump;

        if (d->n == 0) {
                d->n = ds->shape[0];
                return 1;
        }
        if (ds->shape[0] != d->n)
                return kdl__h5_problem(f, "%s: expected %zu samples (%s), found %zu", ds->path,
                                       d->n, what, ds->shape[0]);
        return 1;
}

int kdl__h5_expect_float(kdl_h5file *f, const kdl_dsinfo *ds)
{
        if (!ds->is_float)
                return kdl__h5_problem(f, "%s: expected floating-point values, found %s", ds->path,
                                       ds->dtype);
        return 1;
}

int kdl__h5_expect_rank(kdl_h5file *f, const kdl_dsinfo *ds, size_t lo, size_t hi,
                        const char *expected)
{
        char s[160];

        if (ds->ndim >= lo && ds->ndim <= hi)
                return 1;
        kdl__h5_shape_text(ds, s, sizeof(s));
        return kdl__h5_problem(f, "%s: expected %s, found %s", ds->path, expected, s);
}

/* kdl__h5_expect_rank(), then kdl__h5_expect_float() if the rank is right. */
static int expect_float_rank(kdl_h5file *f, const kdl_dsinfo *ds, size_t lo, size_t hi,
                             const char *expected)
{
        int r = kdl__h5_expect_rank(f, ds, lo, hi, expected);

        return r > 0 ? kdl__h5_expect_float(f, ds) : r;
}

static bool same_shape(const kdl_dsinfo *a, const kdl_dsinfo *b)
{
        return a->ndim == b->ndim && memcmp(a->shape, b->shape, sizeof(a->shape)) == 0;
}

/* @found (dataset @path) should have the shape of @what, @expected. */
static int shape_problem(kdl_h5file *f, const char *path, const char *what,
                         const kdl_dsinfo *expected, const kdl_dsinfo *found)
{
        char a[160], b[160];

        kdl__h5_shape_text(expected, a, sizeof(a));
        kdl__h5_shape_text(found, b, sizeof(b));
        return kdl__h5_problem(f, "%s: expected the shape of %s %s, found %s", path, what, a, b);
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

/* Feature layer @name of group @fgroup, into the next free slot of ck->layers. */
static int scan_layer(kdl_h5file *f, kdl_checkpoint *ck, const char *fgroup, const char *name)
{
        kdl_layer *l = &ck->layers[ck->nlayers];
        char *path = kdl__h5_join(fgroup, name);
        bool present = true;
        int r;

        if (!path)
                return kdl__h5_nomem(f->dump.path, NULL);
        r = kdl__h5_describe(f, path, "a feature dataset", &l->feature);
        free(path);
        if (r <= 0)
                return r;
        l->name = kdl__strdup(name);
        if (!l->name) {
                kdl__h5_dsinfo_release(&l->feature);
                return kdl__h5_nomem(f->dump.path, NULL);
        }
        ck->nlayers++; /* the catalogue owns it now */
        r = kdl__h5_check_attrs(f, l->feature.path);
        if (r > 0)
                r = kdl__h5_attr_int(f, l->feature.path, "depth", &l->depth, &present);
        if (r == 0 && !present)
                r = kdl__h5_problem(f, "%s: expected an integer attribute 'depth', found none",
                                    l->feature.path);
        if (r >= 0)
                r = expect_float_rank(f, &l->feature, 2, 4, "[N, D], [N, T, D] or [N, Ch, H, W]");
        if (r > 0)
                r = kdl__h5_check_rows(f, &l->feature, "as /labels and the logits");
        return r;
}

static int scan_features(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *fgroup = kdl__h5_join(ck->group, "features");
        struct kdl__h5_names ns = {0};
        bool present;
        int err;

        if (!fgroup)
                return kdl__h5_nomem(f->dump.path, NULL);
        err = kdl__h5_find(f, fgroup, H5O_TYPE_GROUP, "a group of feature layers", &present);
        if (err > 0)
                err = kdl__h5_list_group(f, fgroup, &ns);
        if (err <= 0)
                goto out;
        ck->layers = kdl_new(kdl_layer, ns.n ? ns.n : 1);
        if (!ck->layers) {
                err = kdl__h5_nomem(f->dump.path, NULL);
                goto out;
        }
        for (size_t k = 0; k < ns.n && err >= 0; k++)
                err = scan_layer(f, ck, fgroup, ns.v[k]);
        if (err >= 0)
                qsort(ck->layers, ck->nlayers, sizeof(*ck->layers), layer_cmp);
out:
        kdl__h5_names_release(&ns);
        free(fgroup);
        return err < 0 ? err : 0;
}

/* gradients/logits (@gl), optional: the shape of the logits. */
static int scan_grad_logits(kdl_h5file *f, kdl_checkpoint *ck, const char *gl)
{
        int r = kdl__h5_describe_new(f, gl, "the logit gradients [N, C]", false, &ck->grad_logits);

        if (r <= 0)
                return r;
        if (ck->logits && !same_shape(ck->grad_logits, ck->logits))
                return shape_problem(f, gl, "the logits", ck->logits, ck->grad_logits);
        return kdl__h5_expect_float(f, ck->grad_logits);
}

/* gradients/features/@name (under @gf): the gradient of feature layer @name. */
static int scan_grad_feature(kdl_h5file *f, kdl_checkpoint *ck, const char *gf, const char *name)
{
        char *path = kdl__h5_join(gf, name);
        kdl_layer *l = NULL;
        int r;

        if (!path)
                return kdl__h5_nomem(f->dump.path, NULL);
        for (size_t j = 0; j < ck->nlayers; j++)
                if (strcmp(ck->layers[j].name, name) == 0)
                        l = &ck->layers[j];
        if (!l)
                r = kdl__h5_problem(f,
                                    "%s: expected a gradient of a feature layer, found no layer "
                                    "'%s' under features/",
                                    path, name);
        else if ((r = kdl__h5_describe_new(f, path, "a feature gradient", false, &l->gradient)) > 0)
                r = same_shape(l->gradient, &l->feature)
                            ? kdl__h5_expect_float(f, l->gradient)
                            : shape_problem(f, path, "the feature", &l->feature, l->gradient);
        free(path);
        return r;
}

static int scan_gradients(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *g = kdl__h5_join(ck->group, "gradients");
        char *gl = kdl__h5_join(ck->group, "gradients/logits");
        char *gf = kdl__h5_join(ck->group, "gradients/features");
        struct kdl__h5_names ns = {0};
        bool present;
        int err;

        if (!g || !gl || !gf) {
                err = kdl__h5_nomem(f->dump.path, NULL);
                goto out;
        }
        err = kdl__h5_find(f, g, H5O_TYPE_GROUP, "a group of gradients", &present);
        if (err <= 0)
                goto out; /* no gradients, or a problem */
        err = scan_grad_logits(f, ck, gl);
        if (err >= 0)
                err = kdl__h5_find(f, gf, H5O_TYPE_GROUP, "a group of feature gradients", &present);
        if (err > 0)
                err = kdl__h5_list_group(f, gf, &ns);
        if (err <= 0)
                goto out; /* no gradients of features, or a problem */
        for (size_t k = 0; k < ns.n && err >= 0; k++)
                err = scan_grad_feature(f, ck, gf, ns.v[k]);
out:
        kdl__h5_names_release(&ns);
        free(g);
        free(gl);
        free(gf);
        return err < 0 ? err : 0;
}

/* head/weight (@hw) and head/bias (@hb): both expected. */
static int describe_head(kdl_h5file *f, kdl_checkpoint *ck, const char *hw, const char *hb)
{
        int r = kdl__h5_describe_new(f, hw, "the head weight [C, D]", true, &ck->head_weight);

        if (r >= 0)
                r = kdl__h5_describe_new(f, hb, "the head bias [C]", true, &ck->head_bias);
        return r;
}

/* The head's attribute "input" (group @hg) names a feature layer: *@ret_in. */
static int head_input(kdl_h5file *f, kdl_checkpoint *ck, const char *hg, const kdl_layer **ret_in)
{
        bool present = true;
        int r = kdl__h5_check_attrs(f, hg);

        if (r > 0)
                r = kdl__h5_attr_string(f, hg, "input", &ck->head_input, &present);
        if (r == 0 && !present)
                return kdl__h5_problem(f,
                                       "%s: expected a string attribute 'input' naming a feature "
                                       "layer, found none",
                                       hg);
        if (r <= 0)
                return r;
        *ret_in = kdl_h5_layer(ck, ck->head_input);
        if (!*ret_in)
                return kdl__h5_problem(
                        f, "%s: attribute input: expected a layer under features/, found '%s'", hg,
                        ck->head_input);
        return 1;
}

/* head/weight (@hw) is [C, D], D the width of the head's input @in (when known). */
static int check_head_weight(kdl_h5file *f, const kdl_checkpoint *ck, const char *hw,
                             const kdl_layer *in)
{
        const kdl_dsinfo *w = ck->head_weight;
        size_t flat;
        int r;

        if (!w)
                return 0;
        r = expect_float_rank(f, w, 2, 2, "2-D [C, D]");
        if (r <= 0)
                return r;
        if (f->dump.c && w->shape[0] != f->dump.c)
                r = kdl__h5_problem(f, "%s: expected %zu rows (classes), found %zu", hw, f->dump.c,
                                    w->shape[0]);
        if (r < 0 || !in)
                return r;
        flat = kdl_dsinfo_width(&in->feature, KDL_SPATIAL_FLATTEN);
        if (w->shape[1] != flat && w->shape[1] != kdl_dsinfo_width(&in->feature, KDL_SPATIAL_AVG))
                r = kdl__h5_problem(f, "%s: expected %zu columns (the width of '%s'), found %zu",
                                    hw, flat, in->name, w->shape[1]);
        return r;
}

/* head/bias (@hb) is [C]. */
static int check_head_bias(kdl_h5file *f, const kdl_checkpoint *ck, const char *hb)
{
        const kdl_dsinfo *b = ck->head_bias;
        int r;

        if (!b)
                return 0;
        r = expect_float_rank(f, b, 1, 1, "1-D [C]");
        if (r > 0 && f->dump.c && b->shape[0] != f->dump.c)
                r = kdl__h5_problem(f, "%s: expected %zu entries (classes), found %zu", hb,
                                    f->dump.c, b->shape[0]);
        return r;
}

static int scan_head(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *hg = kdl__h5_join(ck->group, "head");
        char *hw = NULL, *hb = NULL;
        const kdl_layer *in = NULL;
        bool present;
        int err;

        if (!hg)
                return kdl__h5_nomem(f->dump.path, NULL);
        err = kdl__h5_find(f, hg, H5O_TYPE_GROUP, "the head group (weight, bias, attribute input)",
                           &present);
        if (err <= 0)
                goto out;
        hw = kdl__h5_join(hg, "weight");
        hb = kdl__h5_join(hg, "bias");
        if (!hw || !hb) {
                err = kdl__h5_nomem(f->dump.path, NULL);
                goto out;
        }
        err = describe_head(f, ck, hw, hb);
        if (err >= 0)
                err = head_input(f, ck, hg, &in);
        if (err >= 0)
                err = check_head_weight(f, ck, hw, in);
        if (err >= 0)
                err = check_head_bias(f, ck, hb);
out:
        free(hg);
        free(hw);
        free(hb);
        return err < 0 ? err : 0;
}

/* The logits @z (dataset @lp): [N, C], C >= 2 and the same in every checkpoint. */
static int check_logits(kdl_h5file *f, const char *lp, const kdl_dsinfo *z)
{
        int r = expect_float_rank(f, z, 2, 2, "2-D [N, C]");

        if (r <= 0)
                return r;
        r = kdl__h5_check_rows(f, z, "as /labels");
        if (r >= 0 && f->dump.c == 0)
                f->dump.c = z->shape[1];
        else if (r >= 0 && z->shape[1] != f->dump.c)
                r = kdl__h5_problem(
                        f, "%s: expected %zu classes (as the other checkpoints), found %zu", lp,
                        f->dump.c, z->shape[1]);
        if (r >= 0 && z->shape[1] < 2)
                r = kdl__h5_problem(f, "%s: expected at least 2 classes, found %zu", lp,
                                    z->shape[1]);
        return r;
}

static int scan_logits(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *lp = kdl__h5_join(ck->group, "logits");
        int r;

        if (!lp)
                return kdl__h5_nomem(f->dump.path, NULL);
        r = kdl__h5_describe_new(f, lp, "the logits [N, C]", !ck->topk_indices, &ck->logits);
        if (r > 0)
                r = check_logits(f, lp, ck->logits);
        free(lp);
        return r < 0 ? r : 0;
}

static int scan_checkpoint(kdl_h5file *f, kdl_checkpoint *ck, bool root)
{
        bool present = true;
        int err = root ? 1 : kdl__h5_check_attrs(f, ck->group); /* the root's: scan_root() */

        if (err > 0)
                err = kdl__h5_attr_int(f, ck->group, "step", &ck->step, &present);
        if (err == 0) {
                ck->step = 0;
                if (!root && !present)
                        err = kdl__h5_problem(
                                f, "%s: expected an integer attribute 'step', found none",
                                ck->group);
        }
        if (err > 0)
                err = kdl__h5_attr_int(f, ck->group, "epoch", &ck->epoch, &present);
        if (err < 0)
                return err;
        ck->has_epoch = err > 0;
        /* Sparse logits first: with them, the dense logits are optional. */
        err = kdl__h5_scan_topk(f, ck);
        err = err ?: scan_logits(f, ck);
        err = err ?: scan_features(f, ck);
        err = err ?: scan_gradients(f, ck);
        err = err ?: scan_head(f, ck);
        return err;
}

/* A 1-D integer dataset: @expected names the rank, @what the values. */
int kdl__h5_expect_integers(kdl_h5file *f, const kdl_dsinfo *ds, const char *expected,
                            const char *what)
{
        int r = kdl__h5_expect_rank(f, ds, 1, 1, expected);

        if (r <= 0)
                return r;
        if (!ds->is_integer)
                return kdl__h5_problem(f, "%s: expected %s, found %s", ds->path, what, ds->dtype);
        return 1;
}

static int scan_labels(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        int err = kdl__h5_describe_new(f, "/labels", "integer class labels [N]", false, &d->labels);

        if (err >= 0)
                err = kdl__h5_describe_new(f, "/sample_ids", "integer sample ids [N]", false,
                                           &d->sample_ids);
        if (err >= 0 && d->labels) {
                err = kdl__h5_expect_integers(f, d->labels, "1-D [N] integer labels",
                                              "integer class labels");
                if (err > 0)
                        d->n = d->labels->shape[0];
        }
        if (err >= 0 && d->sample_ids) {
                err = kdl__h5_expect_integers(f, d->sample_ids, "1-D [N] integer ids",
                                              "integer ids");
                if (err > 0)
                        err = kdl__h5_check_rows(f, d->sample_ids, "as /labels");
        }
        /* The label range needs C, known only after the checkpoints: kdl__h5_check_labels(). */
        return err < 0 ? err : 0;
}

int kdl__h5_check_labels(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        int64_t *v = NULL;
        int err;

        if (!d->labels || !d->labels->is_integer || d->labels->ndim != 1)
                return 0;
        err = kdl_h5_read_labels(f, &v);
        if (err == -ENOMEM)
                return err;
        if (err < 0)
                return kdl__h5_problem(f, "/labels: cannot read: %s", kdl_errmsg());
        d->label_min = INT64_MAX;
        d->label_max = INT64_MIN;
        for (size_t i = 0; i < d->labels->shape[0]; i++) {
                if (v[i] < d->label_min)
                        d->label_min = v[i];
                if (v[i] > d->label_max)
                        d->label_max = v[i];
        }
        for (size_t i = 0; d->c && i < d->labels->shape[0]; i++)
                if (v[i] < 0 || (uint64_t) v[i] >= d->c) {
                        err = kdl__h5_problem(f,
                                              "/labels: expected classes in [0, %zu), found %lld "
                                              "at sample %zu",
                                              d->c, (long long) v[i], i);
                        break;
                }
        free(v);
        return err;
}

static int int64_cmp(const void *a, const void *b)
{
        const int64_t *x = a, *y = b;

        return *x < *y ? -1 : *x > *y;
}

int kdl__h5_check_ids(kdl_h5file *f)
{
        const kdl_dsinfo *ds = f->dump.sample_ids;
        int64_t *v = NULL, *s = NULL;
        size_t n, i, a = 0, b;
        int err;

        if (!ds || !ds->is_integer || ds->ndim != 1)
                return 0;
        err = kdl__h5_read_int64(f, ds, &v);
        if (err == -ENOMEM)
                return err;
        if (err < 0)
                return kdl__h5_problem(f, "/sample_ids: cannot read: %s", kdl_errmsg());
        n = ds->shape[0];
        s = kdl_new(int64_t, n ? n : 1);
        if (!s) {
                err = kdl__h5_nomem(f->dump.path, ds->path);
                goto out;
        }
        /* A sorted copy puts equal ids side by side: O(N log N) time. */
        memcpy(s, v, n * sizeof(*s));
        qsort(s, n, sizeof(*s), int64_cmp);
        for (i = 1; i < n && s[i] != s[i - 1]; i++)
                ;
        if (i < n) {
                while (v[a] != s[i])
                        a++;
                for (b = a + 1; v[b] != s[i]; b++)
                        ;
                err = kdl__h5_problem(f,
                                      "/sample_ids: expected unique ids, found %lld at rows %zu "
                                      "and %zu",
                                      (long long) s[i], a, b);
        }
out:
        free(s);
        free(v);
        return err;
}

/* The root's attributes: 1 to go on, 0 for a format not to read further, -ENOMEM. */
static int scan_root(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        bool present = true;
        int r = kdl__h5_check_attrs(f, "/");

        if (r <= 0) {
                d->format = -1;
                return r; /* the format cannot be known: do not guess at the layout */
        }
        r = kdl__h5_attr_int(f, "/", "kdlens_format", &d->format, &present);
        if (r == 0) {
                d->format = -1;
                if (!present)
                        r = kdl__h5_problem(f, "/: expected attribute kdlens_format=1, found none "
                                               "(not a kdlens dump?)");
        } else if (r > 0 && d->format != 1) {
                r = kdl__h5_problem(f,
                                    "/: expected attribute kdlens_format=1, found %lld (a newer "
                                    "kdlens may read it)",
                                    (long long) d->format);
                return r; /* an unknown format: do not guess at its layout */
        }
        if (r < 0)
                return r;
        r = kdl__h5_attr_string(f, "/", "role", &d->role, &present);
        if (r > 0 && strcmp(d->role, "teacher") != 0 && strcmp(d->role, "student") != 0)
                r = kdl__h5_problem(f,
                                    "/: attribute role: expected \"teacher\" or \"student\", "
                                    "found \"%s\"",
                                    d->role);
        if (r >= 0)
                r = kdl__h5_attr_string(f, "/", "model", &d->model, &present);
        return r < 0 ? r : 1;
}

/* Group /checkpoints/@name, into the next free slot of the checkpoints. */
static int scan_checkpoint_group(kdl_h5file *f, const char *name)
{
        kdl_dump *d = &f->dump;
        kdl_checkpoint *ck = &d->checkpoints[d->ncheckpoints];
        char *group = kdl__asprintf("/checkpoints/%s", name);
        bool present;
        int r;

        if (!group)
                return kdl__h5_nomem(d->path, NULL);
        r = kdl__h5_find(f, group, H5O_TYPE_GROUP, "a checkpoint group", &present);
        if (r <= 0) {
                free(group);
                return r;
        }
        ck->group = group;
        ck->name = kdl__strdup(name);
        d->ncheckpoints++; /* the catalogue owns it now */
        if (!ck->name)
                return kdl__h5_nomem(d->path, NULL);
        return scan_checkpoint(f, ck, false);
}

/* A dump without /checkpoints: the root is its only checkpoint. */
static int scan_root_checkpoint(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        kdl_checkpoint *ck;

        d->checkpoints = kdl_new(kdl_checkpoint, 1);
        if (!d->checkpoints)
                return kdl__h5_nomem(d->path, NULL);
        ck = &d->checkpoints[0];
        d->ncheckpoints = 1;
        ck->name = kdl__strdup("root");
        ck->group = kdl__strdup("/");
        if (!ck->name || !ck->group)
                return kdl__h5_nomem(d->path, NULL);
        return scan_checkpoint(f, ck, true);
}

/* The checkpoints: 1 to go on, 0 when /checkpoints cannot be listed, -ENOMEM. */
static int scan_checkpoints(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        struct kdl__h5_names ns = {0};
        bool present;
        int err =
                kdl__h5_find(f, "/checkpoints", H5O_TYPE_GROUP, "a group of checkpoints", &present);

        if (err == 0 && !present)
                return scan_root_checkpoint(f) ?: 1;
        if (err > 0)
                err = kdl__h5_list_group(f, "/checkpoints", &ns);
        if (err <= 0)
                goto out;
        d->checkpoints = kdl_new(kdl_checkpoint, ns.n ? ns.n : 1);
        if (!d->checkpoints) {
                err = kdl__h5_nomem(d->path, NULL);
                goto out;
        }
        for (size_t k = 0; k < ns.n && err >= 0; k++)
                err = scan_checkpoint_group(f, ns.v[k]);
        if (err >= 0 && d->ncheckpoints == 0)
                err = kdl__h5_problem(
                        f, "/checkpoints: expected at least one checkpoint group, found none");
        if (err >= 0)
                err = 1;
out:
        kdl__h5_names_release(&ns);
        return err;
}

int kdl__h5_catalog(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        int err = scan_root(f);

        if (err <= 0)
                return err;
        err = scan_labels(f) ?: kdl__h5_scan_tokens(f);
        if (err == 0)
                err = scan_checkpoints(f);
        if (err <= 0)
                return err;
        qsort(d->checkpoints, d->ncheckpoints, sizeof(*d->checkpoints), checkpoint_cmp);
        return 0;
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
        kdl__h5_topk_release(ck);
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
        kdl__h5_dsinfo_free(d->sequence_ids);
        kdl__h5_dsinfo_free(d->positions);
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
