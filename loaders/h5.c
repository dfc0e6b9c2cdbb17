/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

struct kdl_h5file {
        hid_t fid;
        kdl_dump dump;
};

/* ---- small helpers -------------------------------------------------------- */

static const char *const spatial_names[KDL_SPATIAL_COUNT_] = {"avg", "max", "flatten"};

const char *kdl_spatial_name(enum kdl_spatial rule)
{
        assert(rule < KDL_SPATIAL_COUNT_);
        return spatial_names[rule];
}

int kdl_spatial_parse(const char *s, enum kdl_spatial *ret)
{
        for (int k = 0; k < KDL_SPATIAL_COUNT_; k++)
                if (strcmp(s, spatial_names[k]) == 0) {
                        *ret = (enum kdl_spatial) k;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE, "unknown spatial rule '%s': expected avg, max or flatten", s);
}

/* Walk callback: keep the innermost (most specific) HDF5 error description. */
static herr_t last_error(unsigned n, const H5E_error2_t *e, void *data)
{
        char *buf = data;

        (void) n;
        if (e->desc && e->desc[0])
                snprintf(buf, 256, "%s", e->desc);
        return 0;
}

void kdl__h5_init(void)
{
        /* HDF5 must not print its error stack: errors become codes + messages. */
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

const char *kdl__h5_last_error(char buf[static 256])
{
        buf[0] = '\0';
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, last_error, buf);
        return buf[0] ? buf : "unknown HDF5 error";
}

/* Problems are one line each; the first one also becomes kdl_h5_check()'s error. */
KDL_PRINTF(2, 3) static void problem(kdl_h5file *f, const char *fmt, ...)
{
        kdl_dump *d = &f->dump;
        char **grown, *msg, *line;
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        line = kdl__asprintf("'%s': %s", d->path, msg);
        free(msg);
        if (!line)
                return;
        grown = realloc(d->problems, (d->nproblems + 1) * sizeof(*grown));
        if (!grown) {
                free(line);
                return;
        }
        d->problems = grown;
        d->problems[d->nproblems++] = line;
}

static bool link_exists(hid_t loc, const char *path)
{
        return kdl__h5_path_valid(loc, path);
}

/* H5Lexists fails on intermediate missing groups; walk the path component by component. */
bool kdl__h5_path_valid(hid_t loc, const char *path)
{
        char *copy = strdup(path), *p, *slash;
        bool ok = true;

        if (!copy)
                return false;
        p = copy;
        if (*p == '/')
                p++;
        while (ok && *p) {
                slash = strchr(p, '/');
                if (slash)
                        *slash = '\0';
                ok = H5Lexists(loc, copy, H5P_DEFAULT) > 0;
                if (ok && !slash)
                        break;
                if (slash) {
                        *slash = '/';
                        p = slash + 1;
                } else {
                        break;
                }
        }
        free(copy);
        return ok;
}

static H5O_type_t object_type(hid_t loc, const char *path)
{
        H5O_info_t info;

        if (!link_exists(loc, path) || H5Oget_info_by_name(loc, path, &info, H5P_DEFAULT) < 0)
                return H5O_TYPE_UNKNOWN;
        return info.type;
}

static bool is_group(hid_t loc, const char *path)
{
        return object_type(loc, path) == H5O_TYPE_GROUP;
}

static bool is_dataset(hid_t loc, const char *path)
{
        return object_type(loc, path) == H5O_TYPE_DATASET;
}

static char *join(const char *group, const char *name)
{
        if (strcmp(group, "/") == 0)
                return kdl__asprintf("/%s", name);
        return kdl__asprintf("%s/%s", group, name);
}

/* Attribute readers: 0 on success, -1 when absent or of the wrong kind. */
static int attr_int(hid_t loc, const char *obj, const char *name, int64_t *ret, bool *ret_present)
{
        hid_t a, type, space;
        long long v;
        int r = -1;

        *ret_present = H5Aexists_by_name(loc, obj, name, H5P_DEFAULT) > 0;
        if (!*ret_present)
                return -1;
        a = H5Aopen_by_name(loc, obj, name, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0)
                return -1;
        type = H5Aget_type(a);
        space = H5Aget_space(a);
        if (H5Tget_class(type) == H5T_INTEGER && H5Sget_simple_extent_npoints(space) == 1 &&
            H5Aread(a, H5T_NATIVE_LLONG, &v) >= 0) {
                *ret = v;
                r = 0;
        }
        H5Sclose(space);
        H5Tclose(type);
        H5Aclose(a);
        return r;
}

static int attr_string(hid_t loc, const char *obj, const char *name, char **ret, bool *ret_present)
{
        hid_t a, type, mem = -1, space;
        int r = -1;

        *ret_present = H5Aexists_by_name(loc, obj, name, H5P_DEFAULT) > 0;
        if (!*ret_present)
                return -1;
        a = H5Aopen_by_name(loc, obj, name, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0)
                return -1;
        type = H5Aget_type(a);
        space = H5Aget_space(a);
        if (H5Tget_class(type) != H5T_STRING || H5Sget_simple_extent_npoints(space) != 1)
                goto out;
        if (H5Tis_variable_str(type) > 0) {
                char *v = NULL;

                mem = H5Tcopy(H5T_C_S1);
                H5Tset_size(mem, H5T_VARIABLE);
                H5Tset_cset(mem, H5Tget_cset(type));
                if (H5Aread(a, mem, &v) >= 0 && v) {
                        *ret = kdl__strdup(v);
                        r = *ret ? 0 : -1;
                        H5free_memory(v);
                }
        } else {
                size_t n = H5Tget_size(type);
                char *v = kdl_new(char, n + 1);

                mem = H5Tcopy(H5T_C_S1);
                H5Tset_size(mem, n + 1);
                H5Tset_strpad(mem, H5T_STR_NULLTERM);
                if (v && H5Aread(a, mem, v) >= 0) {
                        *ret = v;
                        r = 0;
                } else {
                        free(v);
                }
        }
out:
        if (mem >= 0)
                H5Tclose(mem);
        H5Sclose(space);
        H5Tclose(type);
        H5Aclose(a);
        return r;
}

static const char *type_name(hid_t type, bool *ret_float, bool *ret_int)
{
        size_t size = H5Tget_size(type);

        *ret_float = false;
        *ret_int = false;
        switch (H5Tget_class(type)) {
        case H5T_FLOAT:
                *ret_float = true;
                return size == 2   ? "float16"
                       : size == 4 ? "float32"
                       : size == 8 ? "float64"
                                   : "float";
        case H5T_INTEGER: {
                bool sgn = H5Tget_sign(type) == H5T_SGN_2;

                *ret_int = true;
                switch (size) {
                case 1:
                        return sgn ? "int8" : "uint8";
                case 2:
                        return sgn ? "int16" : "uint16";
                case 4:
                        return sgn ? "int32" : "uint32";
                case 8:
                        return sgn ? "int64" : "uint64";
                default:
                        return "integer";
                }
        }
        case H5T_STRING:
                return "string";
        default:
                return "other";
        }
}

static void shape_text(const kdl_dsinfo *ds, char *buf, size_t len)
{
        size_t used = 0;

        used += (size_t) snprintf(buf + used, len - used, "%zu-D [", ds->ndim);
        for (size_t k = 0; k < ds->ndim && k < KDL_MAX_DIMS && used < len; k++)
                used += (size_t) snprintf(buf + used, len - used, "%s%zu", k ? ", " : "",
                                          ds->shape[k]);
        if (ds->ndim > KDL_MAX_DIMS && used < len)
                used += (size_t) snprintf(buf + used, len - used, ", ...");
        if (used < len)
                snprintf(buf + used, len - used, "]");
}

/*
 * Describe dataset @path.  Return 0 when it is a dataset we can describe,
 * -1 (problem recorded) otherwise.  @ret->path is owned by the catalogue.
 */
static int describe(kdl_h5file *f, const char *path, kdl_dsinfo *ret)
{
        hsize_t dims[H5S_MAX_RANK], chunk[H5S_MAX_RANK];
        hid_t did, space, type, plist;
        kdl_dsinfo ds = {0};
        size_t bytes = 8;
        int rank;

        did = H5Dopen2(f->fid, path, H5P_DEFAULT);
        if (did < 0) {
                char buf[256];

                problem(f, "%s: cannot open dataset: %s", path, kdl__h5_last_error(buf));
                return -1;
        }
        space = H5Dget_space(did);
        rank = H5Sget_simple_extent_ndims(space);
        if (rank < 0)
                rank = 0;
        H5Sget_simple_extent_dims(space, dims, NULL);
        ds.ndim = (size_t) rank;
        for (int k = 0; k < rank && k < KDL_MAX_DIMS; k++)
                ds.shape[k] = (size_t) dims[k];

        type = H5Dget_type(did);
        ds.dtype = type_name(type, &ds.is_float, &ds.is_integer);

        plist = H5Dget_create_plist(did);
        ds.gzip = -1;
        if (H5Pget_layout(plist) == H5D_CHUNKED) {
                int cr = H5Pget_chunk(plist, H5S_MAX_RANK, chunk);

                ds.chunked = true;
                for (int k = 0; k < cr && k < KDL_MAX_DIMS; k++)
                        ds.chunk[k] = (size_t) chunk[k];
        }
        for (int k = 0, nf = H5Pget_nfilters(plist); k < nf; k++) {
                unsigned flags, cd[8];
                size_t ncd = 8;
                H5Z_filter_t id =
                        H5Pget_filter2(plist, (unsigned) k, &flags, &ncd, cd, 0, NULL, NULL);

                if (id == H5Z_FILTER_DEFLATE)
                        ds.gzip = ncd > 0 ? (int) cd[0] : 6;
                else if (id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_FLETCHER32)
                        ds.other_filter = true;
        }
        H5Pclose(plist);
        H5Tclose(type);
        H5Sclose(space);
        H5Dclose(did);

        /* Checks that hold for every dataset: size arithmetic and emptiness. */
        for (size_t k = 0; k < ds.ndim && k < KDL_MAX_DIMS; k++) {
                if (__builtin_mul_overflow(bytes, ds.shape[k], &bytes)) {
                        char s[160];

                        shape_text(&ds, s, sizeof(s));
                        problem(f,
                                "%s: expected a size that fits in memory arithmetic, found %s "
                                "whose element count overflows",
                                path, s);
                        return -1;
                }
        }
        for (size_t k = 0; k < ds.ndim && k < KDL_MAX_DIMS; k++)
                if (ds.shape[k] == 0) {
                        char s[160];

                        shape_text(&ds, s, sizeof(s));
                        problem(f, "%s: expected a non-empty dataset, found %s", path, s);
                        return -1;
                }
        if (ds.ndim > KDL_MAX_DIMS) {
                char s[160];

                shape_text(&ds, s, sizeof(s));
                problem(f, "%s: expected at most %d dimensions, found %s", path, KDL_MAX_DIMS, s);
                return -1;
        }
        ds.path = kdl__strdup(path);
        if (!ds.path)
                return -1;
        *ret = ds;
        return 0;
}

static void dsinfo_release(kdl_dsinfo *ds)
{
        if (ds)
                free(ds->path);
}

static void dsinfo_free(kdl_dsinfo *ds)
{
        dsinfo_release(ds);
        free(ds);
}

/* Describe an optional dataset into a new heap dsinfo; NULL if absent or unusable. */
static kdl_dsinfo *describe_new(kdl_h5file *f, const char *path)
{
        kdl_dsinfo *ds;

        if (!is_dataset(f->fid, path))
                return NULL;
        ds = kdl_new(kdl_dsinfo, 1);
        if (!ds)
                return NULL;
        if (describe(f, path, ds) < 0) {
                dsinfo_free(ds);
                return NULL;
        }
        return ds;
}

/* Rows must equal N; record N from the first dataset that says. */
static bool check_rows(kdl_h5file *f, const kdl_dsinfo *ds, const char *what)
{
        kdl_dump *d = &f->dump;

        if (d->n == 0) {
                d->n = ds->shape[0];
                return true;
        }
        if (ds->shape[0] != d->n) {
                problem(f, "%s: expected %zu samples (%s), found %zu", ds->path, d->n, what,
                        ds->shape[0]);
                return false;
        }
        return true;
}

static bool expect_float(kdl_h5file *f, const kdl_dsinfo *ds)
{
        if (!ds->is_float) {
                problem(f, "%s: expected floating-point values, found %s", ds->path, ds->dtype);
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
        shape_text(ds, s, sizeof(s));
        problem(f, "%s: expected %s, found %s", ds->path, expected, s);
        return false;
}

/* ---- the catalogue -------------------------------------------------------- */

struct names {
        size_t n;
        char **v;
};

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *data)
{
        struct names *ns = data;
        char **grown;

        (void) g;
        (void) info;
        grown = realloc(ns->v, (ns->n + 1) * sizeof(*grown));
        if (!grown)
                return -1;
        ns->v = grown;
        ns->v[ns->n] = strdup(name);
        if (!ns->v[ns->n])
                return -1;
        ns->n++;
        return 0;
}

static void names_release(struct names *ns)
{
        for (size_t k = 0; k < ns->n; k++)
                free(ns->v[k]);
        free(ns->v);
        ns->n = 0;
        ns->v = NULL;
}

static int list_group(hid_t fid, const char *path, struct names *ret)
{
        hid_t g = H5Gopen2(fid, path, H5P_DEFAULT);
        herr_t r;

        if (g < 0)
                return -1;
        r = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, ret);
        H5Gclose(g);
        return r < 0 ? -1 : 0;
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

size_t kdl_dsinfo_width(const kdl_dsinfo *ds, enum kdl_spatial rule)
{
        size_t w = 1;

        if (ds->ndim <= 1)
                return ds->ndim == 1 ? 1 : 0;
        if (ds->ndim == 2 || rule == KDL_SPATIAL_FLATTEN) {
                for (size_t k = 1; k < ds->ndim && k < KDL_MAX_DIMS; k++)
                        w *= ds->shape[k];
                return w;
        }
        /* [N, Ch, H, W] → Ch; [N, T, D] → D */
        return ds->ndim == 4 ? ds->shape[1] : ds->shape[2];
}

static void scan_features(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *fgroup = join(ck->group, "features");
        struct names ns = {0};

        if (!fgroup)
                return;
        if (!is_group(f->fid, fgroup)) {
                free(fgroup);
                return;
        }
        if (list_group(f->fid, fgroup, &ns) < 0) {
                problem(f, "%s: cannot list the feature layers", fgroup);
                goto out;
        }
        ck->layers = kdl_new(kdl_layer, ns.n ? ns.n : 1);
        if (!ck->layers)
                goto out;
        for (size_t k = 0; k < ns.n; k++) {
                char *path = join(fgroup, ns.v[k]);
                kdl_layer *l = &ck->layers[ck->nlayers];
                bool present;

                if (!path)
                        break;
                if (!is_dataset(f->fid, path)) {
                        problem(f, "%s: expected a feature dataset, found a group", path);
                        free(path);
                        continue;
                }
                if (describe(f, path, &l->feature) < 0) {
                        free(path);
                        continue;
                }
                free(path);
                l->name = kdl__strdup(ns.v[k]);
                if (!l->name) {
                        dsinfo_release(&l->feature);
                        break;
                }
                if (attr_int(f->fid, l->feature.path, "depth", &l->depth, &present) < 0)
                        problem(f, "%s: expected an integer attribute 'depth', found %s",
                                l->feature.path, present ? "another type" : "none");
                if (expect_rank(f, &l->feature, 2, 4, "[N, D], [N, T, D] or [N, Ch, H, W]") &&
                    expect_float(f, &l->feature))
                        check_rows(f, &l->feature, "as /labels and the logits");
                ck->nlayers++;
        }
        qsort(ck->layers, ck->nlayers, sizeof(*ck->layers), layer_cmp);
out:
        names_release(&ns);
        free(fgroup);
}

static void scan_gradients(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *gl = join(ck->group, "gradients/logits");
        char *gf = join(ck->group, "gradients/features");
        struct names ns = {0};

        if (!gl || !gf)
                goto out;
        ck->grad_logits = describe_new(f, gl);
        if (ck->grad_logits && ck->logits &&
            (ck->grad_logits->ndim != ck->logits->ndim ||
             memcmp(ck->grad_logits->shape, ck->logits->shape, sizeof(ck->logits->shape)) != 0)) {
                char a[160], b[160];

                shape_text(ck->logits, a, sizeof(a));
                shape_text(ck->grad_logits, b, sizeof(b));
                problem(f, "%s: expected the shape of the logits %s, found %s", gl, a, b);
        } else if (ck->grad_logits) {
                expect_float(f, ck->grad_logits);
        }
        if (!is_group(f->fid, gf) || list_group(f->fid, gf, &ns) < 0)
                goto out;
        for (size_t k = 0; k < ns.n; k++) {
                char *path = join(gf, ns.v[k]);
                kdl_layer *l = NULL;

                if (!path)
                        break;
                for (size_t j = 0; j < ck->nlayers; j++)
                        if (strcmp(ck->layers[j].name, ns.v[k]) == 0)
                                l = &ck->layers[j];
                if (!l) {
                        problem(f,
                                "%s: expected a gradient of a feature layer, found no layer "
                                "'%s' under features/",
                                path, ns.v[k]);
                } else if ((l->gradient = describe_new(f, path))) {
                        if (l->gradient->ndim != l->feature.ndim ||
                            memcmp(l->gradient->shape, l->feature.shape,
                                   sizeof(l->feature.shape)) != 0) {
                                char a[160], b[160];

                                shape_text(&l->feature, a, sizeof(a));
                                shape_text(l->gradient, b, sizeof(b));
                                problem(f, "%s: expected the shape of the feature %s, found %s",
                                        path, a, b);
                        } else {
                                expect_float(f, l->gradient);
                        }
                }
                free(path);
        }
out:
        names_release(&ns);
        free(gl);
        free(gf);
}

static void scan_head(kdl_h5file *f, kdl_checkpoint *ck)
{
        char *hg = join(ck->group, "head");
        char *hw = NULL, *hb = NULL;
        const kdl_layer *in = NULL;
        bool present;

        if (!hg || !is_group(f->fid, hg))
                goto out;
        hw = join(hg, "weight");
        hb = join(hg, "bias");
        if (!hw || !hb)
                goto out;
        ck->head_weight = describe_new(f, hw);
        ck->head_bias = describe_new(f, hb);
        if (!ck->head_weight)
                problem(f, "%s: expected the head weight [C, D], found none", hw);
        if (!ck->head_bias)
                problem(f, "%s: expected the head bias [C], found none", hb);
        if (attr_string(f->fid, hg, "input", &ck->head_input, &present) < 0)
                problem(f,
                        "%s: expected a string attribute 'input' naming a feature layer, "
                        "found %s",
                        hg, present ? "another type" : "none");
        else if (!(in = kdl_h5_layer(ck, ck->head_input)))
                problem(f, "%s: attribute input: expected a layer under features/, found '%s'", hg,
                        ck->head_input);

        if (ck->head_weight && expect_rank(f, ck->head_weight, 2, 2, "2-D [C, D]") &&
            expect_float(f, ck->head_weight)) {
                size_t c = ck->head_weight->shape[0], dw = ck->head_weight->shape[1];

                if (f->dump.c && c != f->dump.c)
                        problem(f, "%s: expected %zu rows (classes), found %zu", hw, f->dump.c, c);
                if (in && dw != kdl_dsinfo_width(&in->feature, KDL_SPATIAL_FLATTEN) &&
                    dw != kdl_dsinfo_width(&in->feature, KDL_SPATIAL_AVG))
                        problem(f, "%s: expected %zu columns (the width of '%s'), found %zu", hw,
                                kdl_dsinfo_width(&in->feature, KDL_SPATIAL_FLATTEN), in->name, dw);
        }
        if (ck->head_bias && expect_rank(f, ck->head_bias, 1, 1, "1-D [C]") &&
            expect_float(f, ck->head_bias) && f->dump.c && ck->head_bias->shape[0] != f->dump.c)
                problem(f, "%s: expected %zu entries (classes), found %zu", hb, f->dump.c,
                        ck->head_bias->shape[0]);
out:
        free(hg);
        free(hw);
        free(hb);
}

static void scan_checkpoint(kdl_h5file *f, kdl_checkpoint *ck, bool root)
{
        char *lp = join(ck->group, "logits");
        bool present;

        if (attr_int(f->fid, ck->group, "step", &ck->step, &present) < 0) {
                ck->step = 0;
                if (!root || present)
                        problem(f, "%s: expected an integer attribute 'step', found %s", ck->group,
                                present ? "another type" : "none");
        }
        ck->has_epoch = attr_int(f->fid, ck->group, "epoch", &ck->epoch, &present) == 0;
        if (!lp)
                return;
        ck->logits = describe_new(f, lp);
        if (!ck->logits) {
                if (!is_dataset(f->fid, lp))
                        problem(f, "%s: expected the logits [N, C], found none", lp);
        } else if (expect_rank(f, ck->logits, 2, 2, "2-D [N, C]") && expect_float(f, ck->logits)) {
                check_rows(f, ck->logits, "as /labels");
                if (f->dump.c == 0)
                        f->dump.c = ck->logits->shape[1];
                else if (ck->logits->shape[1] != f->dump.c)
                        problem(f, "%s: expected %zu classes (as the other checkpoints), found %zu",
                                lp, f->dump.c, ck->logits->shape[1]);
                if (ck->logits->shape[1] < 2)
                        problem(f, "%s: expected at least 2 classes, found %zu", lp,
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

        d->labels = describe_new(f, "/labels");
        d->sample_ids = describe_new(f, "/sample_ids");
        if (d->labels) {
                if (expect_rank(f, d->labels, 1, 1, "1-D [N] integer labels")) {
                        if (!d->labels->is_integer)
                                problem(f, "/labels: expected integer class labels, found %s",
                                        d->labels->dtype);
                        else
                                d->n = d->labels->shape[0];
                }
        }
        if (d->sample_ids && expect_rank(f, d->sample_ids, 1, 1, "1-D [N] integer ids")) {
                if (!d->sample_ids->is_integer)
                        problem(f, "/sample_ids: expected integer ids, found %s",
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
                problem(f, "/labels: cannot read: %s", kdl_errmsg());
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
                                problem(f,
                                        "/labels: expected classes in [0, %zu), found %lld at "
                                        "sample %zu",
                                        d->c, (long long) v[i], i);
                                break;
                        }
        }
        free(v);
}

static void scan(kdl_h5file *f)
{
        kdl_dump *d = &f->dump;
        struct names ns = {0};
        bool present;

        if (attr_int(f->fid, "/", "kdlens_format", &d->format, &present) < 0) {
                d->format = -1;
                problem(f, "/: expected attribute kdlens_format=1, found %s",
                        present ? "a non-integer value" : "none (not a kdlens dump?)");
        } else if (d->format != 1) {
                problem(f,
                        "/: expected attribute kdlens_format=1, found %lld (a newer kdlens "
                        "may read it)",
                        (long long) d->format);
                return; /* an unknown format: do not guess at its layout */
        }
        if (attr_string(f->fid, "/", "role", &d->role, &present) == 0) {
                if (strcmp(d->role, "teacher") != 0 && strcmp(d->role, "student") != 0)
                        problem(f,
                                "/: attribute role: expected \"teacher\" or \"student\", "
                                "found \"%s\"",
                                d->role);
        } else if (present) {
                problem(f, "/: attribute role: expected a string, found another type");
        }
        attr_string(f->fid, "/", "model", &d->model, &present);

        scan_labels(f);

        if (is_group(f->fid, "/checkpoints")) {
                if (list_group(f->fid, "/checkpoints", &ns) < 0) {
                        problem(f, "/checkpoints: cannot list the checkpoints");
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
                        if (!is_group(f->fid, ck->group)) {
                                problem(f, "%s: expected a checkpoint group, found a dataset",
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
                        problem(f, "/checkpoints: expected at least one checkpoint group, found "
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
        names_release(&ns);
}

int kdl_h5_open(const char *path, kdl_h5file **ret)
{
        kdl_h5file *f;
        char buf[256];
        struct stat st;
        htri_t is;
        hid_t fapl;

        assert(path && ret);
        kdl__h5_init();
        if (access(path, R_OK) < 0)
                return kdl_error(-errno, "cannot open '%s': %s", path, strerror(errno));
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0)
                return kdl_error(-KDL_EHDF5, "'%s': expected an HDF5 file, found an empty file",
                                 path);
        is = H5Fis_hdf5(path);
        if (is <= 0)
                return kdl_error(-KDL_EHDF5, "'%s': expected an HDF5 file, found %s", path,
                                 is == 0 ? "another kind of file" : "a file HDF5 cannot read");
        f = kdl_new(kdl_h5file, 1);
        if (!f)
                return -ENOMEM;
        f->dump.path = kdl__strdup(path);
        if (!f->dump.path) {
                free(f);
                return -ENOMEM;
        }
        fapl = H5Pcreate(H5P_FILE_ACCESS);
        /* Close every object with the file, so a failed read never leaks handles. */
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
        f->fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        if (f->fid < 0) {
                /* Read the stack before any other HDF5 call clears it. */
                int err = kdl_error(-KDL_EHDF5,
                                    "'%s': cannot open as HDF5 (truncated or damaged "
                                    "file?): %s",
                                    path, kdl__h5_last_error(buf));

                H5Pclose(fapl);
                free(f->dump.path);
                free(f);
                return err;
        }
        H5Pclose(fapl);
        scan(f);
        *ret = f;
        return 0;
}

static void checkpoint_release(kdl_checkpoint *ck)
{
        for (size_t j = 0; j < ck->nlayers; j++) {
                free(ck->layers[j].name);
                dsinfo_release(&ck->layers[j].feature);
                dsinfo_free(ck->layers[j].gradient);
        }
        free(ck->layers);
        dsinfo_free(ck->logits);
        dsinfo_free(ck->grad_logits);
        dsinfo_free(ck->head_weight);
        dsinfo_free(ck->head_bias);
        free(ck->head_input);
        free(ck->name);
        free(ck->group);
}

void kdl_h5_close(kdl_h5file *f)
{
        kdl_dump *d;

        if (!f)
                return;
        d = &f->dump;
        for (size_t k = 0; k < d->ncheckpoints; k++)
                checkpoint_release(&d->checkpoints[k]);
        free(d->checkpoints);
        for (size_t k = 0; k < d->nproblems; k++)
                free(d->problems[k]);
        free(d->problems);
        dsinfo_free(d->labels);
        dsinfo_free(d->sample_ids);
        free(d->role);
        free(d->model);
        free(d->path);
        if (f->fid >= 0)
                H5Fclose(f->fid);
        free(f);
}

const kdl_dump *kdl_h5_dump(const kdl_h5file *f)
{
        return &f->dump;
}

int kdl_h5_check(const kdl_h5file *f)
{
        if (f->dump.nproblems == 0)
                return 0;
        return kdl_error(-KDL_ESCHEMA, "%s", f->dump.problems[0]);
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

hid_t kdl__h5_fid(const kdl_h5file *f)
{
        return f->fid;
}

static int read_int64_all(kdl_h5file *f, const kdl_dsinfo *ds, int64_t **ret)
{
        int64_t *v;
        hid_t did;
        char buf[256];

        if (ds->ndim != 1 || !ds->is_integer)
                return kdl_error(-KDL_ESCHEMA, "'%s': %s: expected 1-D integers, found %zu-D %s",
                                 f->dump.path, ds->path, ds->ndim, ds->dtype);
        v = kdl_new(int64_t, ds->shape[0]);
        if (!v)
                return -ENOMEM;
        did = H5Dopen2(f->fid, ds->path, H5P_DEFAULT);
        if (did < 0 || H5Dread(did, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
                int err = kdl_error(-KDL_EHDF5, "'%s': %s: cannot read: %s", f->dump.path, ds->path,
                                    kdl__h5_last_error(buf));

                if (did >= 0)
                        H5Dclose(did);
                free(v);
                return err;
        }
        H5Dclose(did);
        *ret = v;
        return 0;
}

int kdl_h5_read_labels(kdl_h5file *f, int64_t **ret)
{
        if (!f->dump.labels)
                return kdl_error(-KDL_EMISSING,
                                 "'%s': /labels: expected integer class labels "
                                 "[N], found none",
                                 f->dump.path);
        return read_int64_all(f, f->dump.labels, ret);
}

/* ---- row-block reading ---------------------------------------------------- */

struct kdl_h5reader {
        kdl_h5file *f;
        const kdl_dsinfo *ds;
        hid_t did, fspace;
        size_t stored_rows; /* rows in the file */
        size_t rows;        /* logical rows */
        size_t inner;       /* stored elements per row */
        size_t cols;        /* after the rule */
        size_t groups;      /* reduction: output columns */
        size_t glen;        /* reduction: elements reduced into one column */
        ptrdiff_t gstep;    /* reduction: stride between reduced elements */
        ptrdiff_t gnext;    /* reduction: offset between consecutive groups */
        bool reduce;
        enum kdl_spatial rule;
        const size_t *map;
        bool allow_nonfinite;
        double *raw;
        size_t raw_rows;
        size_t *order;
        size_t order_cap;
};

/* Bytes of two row-bands of chunks of @ds, within [1 MiB, 64 MiB]. */
static size_t cache_bytes(const kdl_dsinfo *ds)
{
        const char *digits = ds->dtype + strcspn(ds->dtype, "0123456789");
        size_t elem = *digits ? (size_t) atoi(digits) / 8 : 8, band = 2 * ds->chunk[0];

        for (size_t k = 1; k < ds->ndim; k++)
                band *= ds->shape[k];
        band *= elem ? elem : 1;
        if (band < (1u << 20))
                return 1u << 20;
        return band > (64u << 20) ? 64u << 20 : band;
}

int kdl_h5_reader_open(kdl_h5file *f, const kdl_dsinfo *ds, enum kdl_spatial rule,
                       kdl_h5reader **ret)
{
        kdl_h5reader *r;
        hid_t dapl;
        char buf[256];

        assert(f && ds && ret && rule < KDL_SPATIAL_COUNT_);
        if (ds->ndim < 1 || ds->ndim > KDL_MAX_DIMS || !(ds->is_float || ds->is_integer))
                return kdl_error(-KDL_ESHAPE,
                                 "'%s': %s: expected numeric data of rank 1 to 4, "
                                 "found %zu-D %s",
                                 f->dump.path, ds->path, ds->ndim, ds->dtype);
        r = kdl_new(kdl_h5reader, 1);
        if (!r)
                return -ENOMEM;
        r->f = f;
        r->ds = ds;
        r->rule = rule;
        r->stored_rows = r->rows = ds->shape[0];
        r->inner = 1;
        for (size_t k = 1; k < ds->ndim; k++)
                r->inner *= ds->shape[k]; /* no overflow: checked by describe() */
        r->cols = r->inner;
        if (ds->ndim >= 3 && rule != KDL_SPATIAL_FLATTEN) {
                r->reduce = true;
                if (ds->ndim == 4) { /* [N, Ch, H, W]: reduce the contiguous H*W of each Ch */
                        r->groups = ds->shape[1];
                        r->glen = ds->shape[2] * ds->shape[3];
                        r->gstep = 1;
                        r->gnext = (ptrdiff_t) r->glen;
                } else { /* [N, T, D]: reduce over T, stride D */
                        r->groups = ds->shape[2];
                        r->glen = ds->shape[1];
                        r->gstep = (ptrdiff_t) ds->shape[2];
                        r->gnext = 1;
                }
                r->cols = r->groups;
        }
        /* A chunk cache that holds two bands of chunks across all columns, so
         * a block boundary inside a chunk does not decompress it twice, and
         * no more: a flat 64 MiB per dataset grew the memory of a command
         * reading seven datasets by hundreds of MiB. */
        dapl = H5Pcreate(H5P_DATASET_ACCESS);
        if (ds->chunked)
                H5Pset_chunk_cache(dapl, 12421, cache_bytes(ds), 1.0);
        r->did = H5Dopen2(f->fid, ds->path, dapl);
        H5Pclose(dapl);
        if (r->did < 0) {
                int err = kdl_error(-KDL_EHDF5, "'%s': %s: cannot open: %s", f->dump.path, ds->path,
                                    kdl__h5_last_error(buf));

                free(r);
                return err;
        }
        r->fspace = H5Dget_space(r->did);
        *ret = r;
        return 0;
}

void kdl_h5_reader_close(kdl_h5reader *r)
{
        if (!r)
                return;
        if (r->fspace >= 0)
                H5Sclose(r->fspace);
        if (r->did >= 0)
                H5Dclose(r->did);
        free(r->raw);
        free(r->order);
        free(r);
}

size_t kdl_h5_reader_rows(const kdl_h5reader *r)
{
        return r->rows;
}

size_t kdl_h5_reader_cols(const kdl_h5reader *r)
{
        return r->cols;
}

void kdl_h5_reader_set_rows(kdl_h5reader *r, const size_t *rows, size_t n)
{
        r->map = rows;
        r->rows = rows ? n : r->stored_rows;
}

void kdl_h5_reader_allow_nonfinite(kdl_h5reader *r, bool allow)
{
        r->allow_nonfinite = allow;
}

/* Stored rows [a, b) into @dst (b - a rows of r->inner doubles). */
static int read_stored(kdl_h5reader *r, size_t a, size_t b, double *dst)
{
        hsize_t start[KDL_MAX_DIMS] = {0}, count[KDL_MAX_DIMS];
        hid_t mspace;
        herr_t st;
        char buf[256];

        start[0] = a;
        count[0] = b - a;
        for (size_t k = 1; k < r->ds->ndim; k++)
                count[k] = r->ds->shape[k];
        if (H5Sselect_hyperslab(r->fspace, H5S_SELECT_SET, start, NULL, count, NULL) < 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot select rows %zu..%zu",
                                 r->f->dump.path, r->ds->path, a, b);
        /* The memory space takes the selection's own shape: with a 1-D one,
         * HDF5 1.10 maps chunks element by element (H5S_select_iterate), and
         * reading 1 GiB of float32 took seconds of CPU instead of a fraction. */
        mspace = H5Screate_simple((int) r->ds->ndim, count, NULL);
        st = H5Dread(r->did, H5T_NATIVE_DOUBLE, mspace, r->fspace, H5P_DEFAULT, dst);
        H5Sclose(mspace);
        if (st < 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot read rows %zu..%zu: %s",
                                 r->f->dump.path, r->ds->path, a, b, kdl__h5_last_error(buf));
        return 0;
}

static int cmp_size(const void *a, const void *b)
{
        size_t x = *(const size_t *) a, y = *(const size_t *) b;

        return x < y ? -1 : x > y;
}

static void reduce_row(const kdl_h5reader *r, const double *src, double *dst)
{
        for (size_t g = 0; g < r->groups; g++) {
                const double *p = src + (ptrdiff_t) g * r->gnext;
                double acc = r->rule == KDL_SPATIAL_MAX ? -HUGE_VAL : 0.0;

                for (size_t e = 0; e < r->glen; e++) {
                        double v = p[(ptrdiff_t) e * r->gstep];

                        if (r->rule == KDL_SPATIAL_MAX)
                                acc = v > acc || isnan(v) ? v : acc;
                        else
                                acc += v;
                }
                dst[g] = r->rule == KDL_SPATIAL_MAX ? acc : acc / (double) r->glen;
        }
}

static int nonfinite_error(const kdl_h5reader *r, const double *row, size_t stored_row)
{
        const char *what = "Inf";

        for (size_t e = 0; e < r->inner; e++)
                if (isnan(row[e]))
                        what = "NaN";
        return kdl_error(-KDL_ENONFINITE,
                         "'%s': %s: expected finite values, found %s at sample "
                         "%zu",
                         r->f->dump.path, r->ds->path, what, stored_row);
}

static bool row_finite(const double *row, size_t n)
{
        double acc = 0.0;

        /* One multiply-add per value: NaN/Inf propagate into the sum (no fast-math). */
        for (size_t e = 0; e < n; e++)
                acc += row[e] * 0.0;
        return !isnan(acc);
}

int kdl_h5_reader_read(kdl_h5reader *r, size_t r0, size_t r1, double *out)
{
        size_t m = r1 - r0;
        double *src;
        size_t *stored = NULL; /* stored row of each raw row, for messages */
        int err;

        assert(r0 <= r1 && r1 <= r->rows && out);
        if (m == 0)
                return 0;

        if (!r->map && !r->reduce) {
                /* The common case: straight into the caller's block. */
                err = read_stored(r, r0, r1, out);
                if (err < 0)
                        return err;
                if (!r->allow_nonfinite)
                        for (size_t i = 0; i < m; i++)
                                if (!row_finite(out + i * r->inner, r->inner))
                                        return nonfinite_error(r, out + i * r->inner, r0 + i);
                return 0;
        }

        if (m > r->raw_rows) {
                double *raw = kdl__malloc(m, r->inner * sizeof(double));

                if (!raw)
                        return -ENOMEM;
                free(r->raw);
                r->raw = raw;
                r->raw_rows = m;
        }
        if (r->map) {
                /* Sort (stored row, logical row) pairs, read runs of consecutive
                 * stored rows, then scatter: few reads when the map is nearly in order. */
                if (2 * m > r->order_cap) {
                        size_t *o = kdl_new(size_t, 2 * m);

                        if (!o)
                                return -ENOMEM;
                        free(r->order);
                        r->order = o;
                        r->order_cap = 2 * m;
                }
                for (size_t i = 0; i < m; i++) {
                        r->order[2 * i] = r->map[r0 + i];
                        r->order[2 * i + 1] = i;
                }
                qsort(r->order, m, 2 * sizeof(size_t), cmp_size);
                for (size_t i = 0; i < m;) {
                        size_t j = i + 1;

                        while (j < m && r->order[2 * j] == r->order[2 * (j - 1)] + 1)
                                j++;
                        err = read_stored(r, r->order[2 * i], r->order[2 * i] + (j - i),
                                          r->raw + i * r->inner);
                        if (err < 0)
                                return err;
                        i = j;
                }
                stored = r->order;
        } else {
                err = read_stored(r, r0, r1, r->raw);
                if (err < 0)
                        return err;
        }
        for (size_t k = 0; k < m; k++) {
                size_t dest = stored ? stored[2 * k + 1] : k;

                src = r->raw + k * r->inner;
                if (!r->allow_nonfinite && !row_finite(src, r->inner))
                        return nonfinite_error(r, src, stored ? stored[2 * k] : r0 + k);
                if (r->reduce)
                        reduce_row(r, src, out + dest * r->cols);
                else
                        memcpy(out + dest * r->cols, src, r->inner * sizeof(double));
        }
        return 0;
}

/* ---- value scan ----------------------------------------------------------- */

static int scan_dataset(kdl_h5file *f, const kdl_dsinfo *ds, const char *unit)
{
        kdl_h5reader *r = NULL;
        double *buf = NULL;
        size_t block;
        int err, found = 0;

        if (!ds || !ds->is_float || ds->ndim < 1 || ds->ndim > KDL_MAX_DIMS)
                return 0;
        err = kdl_h5_reader_open(f, ds, KDL_SPATIAL_FLATTEN, &r);
        if (err < 0)
                return err;
        kdl_h5_reader_allow_nonfinite(r, true);
        /* About 32 MiB of doubles per block, at least one row. */
        block = (4u << 20) / (r->inner ? r->inner : 1);
        if (block == 0)
                block = 1;
        if (block > r->rows)
                block = r->rows;
        buf = kdl__malloc(block, r->inner * sizeof(double));
        if (!buf) {
                err = -ENOMEM;
                goto out;
        }
        for (size_t r0 = 0; r0 < r->rows && !found; r0 += block) {
                size_t r1 = r0 + block < r->rows ? r0 + block : r->rows;

                err = kdl_h5_reader_read(r, r0, r1, buf);
                if (err < 0)
                        goto out;
                for (size_t i = 0; i < r1 - r0; i++) {
                        const double *row = buf + i * r->inner;

                        if (!row_finite(row, r->inner)) {
                                const char *what = "Inf";

                                for (size_t e = 0; e < r->inner; e++)
                                        if (isnan(row[e]))
                                                what = "NaN";
                                problem(f, "%s: expected finite values, found %s at %s %zu",
                                        ds->path, what, unit, r0 + i);
                                found = 1;
                                break;
                        }
                }
        }
        err = found;
out:
        free(buf);
        kdl_h5_reader_close(r);
        return err;
}

int kdl_h5_scan_values(kdl_h5file *f)
{
        int added = 0, err;

        for (size_t k = 0; k < f->dump.ncheckpoints; k++) {
                const kdl_checkpoint *ck = &f->dump.checkpoints[k];
                const kdl_dsinfo *list[] = {ck->logits, ck->grad_logits, ck->head_weight,
                                            ck->head_bias};

                for (size_t j = 0; j < sizeof(list) / sizeof(list[0]); j++) {
                        err = scan_dataset(f, list[j], j < 2 ? "sample" : "row");
                        if (err < 0)
                                return err;
                        added += err;
                }
                for (size_t j = 0; j < ck->nlayers; j++) {
                        err = scan_dataset(f, &ck->layers[j].feature, "sample");
                        if (err < 0)
                                return err;
                        added += err;
                        err = scan_dataset(f, ck->layers[j].gradient, "sample");
                        if (err < 0)
                                return err;
                        added += err;
                }
        }
        return added;
}

/* ---- teacher/student alignment -------------------------------------------- */

static int cmp_id(const void *a, const void *b)
{
        const int64_t *x = a, *y = b;

        return x[0] < y[0] ? -1 : x[0] > y[0];
}

/* Sorted (id, row) pairs; fails on a duplicate id. */
static int sorted_ids(kdl_h5file *f, int64_t **ret)
{
        int64_t *ids = NULL, *pairs;
        size_t n = f->dump.sample_ids->shape[0];
        int err;

        err = read_int64_all(f, f->dump.sample_ids, &ids);
        if (err < 0)
                return err;
        pairs = kdl__malloc(n, 2 * sizeof(int64_t));
        if (!pairs) {
                free(ids);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                pairs[2 * i] = ids[i];
                pairs[2 * i + 1] = (int64_t) i;
        }
        free(ids);
        qsort(pairs, n, 2 * sizeof(int64_t), cmp_id);
        for (size_t i = 1; i < n; i++)
                if (pairs[2 * i] == pairs[2 * (i - 1)]) {
                        err = kdl_error(-KDL_ESCHEMA,
                                        "'%s': /sample_ids: expected unique ids, "
                                        "found %lld at samples %lld and %lld",
                                        f->dump.path, (long long) pairs[2 * i],
                                        (long long) pairs[2 * (i - 1) + 1],
                                        (long long) pairs[2 * i + 1]);
                        free(pairs);
                        return err;
                }
        *ret = pairs;
        return 0;
}

int kdl_h5_pair(kdl_h5file *t, kdl_h5file *s, kdl_pair **ret)
{
        const kdl_dump *dt = &t->dump, *ds = &s->dump;
        int64_t *tp = NULL, *sp = NULL;
        kdl_pair *p = NULL;
        size_t missing_t = 0, missing_s, identity = 1;
        int err;

        assert(t && s && ret);
        if (!dt->sample_ids || !ds->sample_ids || dt->sample_ids->ndim != 1 ||
            ds->sample_ids->ndim != 1 || !dt->sample_ids->is_integer ||
            !ds->sample_ids->is_integer) {
                if (dt->n != ds->n)
                        return kdl_error(-KDL_EMISMATCH,
                                         "'%s' has %zu samples and '%s' has %zu: expected the same "
                                         "samples in the same order (or /sample_ids in both to "
                                         "join them)",
                                         dt->path, dt->n, ds->path, ds->n);
                p = kdl_new(kdl_pair, 1);
                if (!p)
                        return -ENOMEM;
                p->n = dt->n;
                *ret = p;
                return 0;
        }

        err = sorted_ids(t, &tp);
        if (err < 0)
                goto out;
        err = sorted_ids(s, &sp);
        if (err < 0)
                goto out;
        p = kdl_new(kdl_pair, 1);
        if (!p) {
                err = -ENOMEM;
                goto out;
        }
        p->n = dt->sample_ids->shape[0];
        p->joined = true;
        p->student_rows = kdl_new(size_t, p->n);
        if (!p->student_rows) {
                err = -ENOMEM;
                goto out;
        }
        /* Merge the two sorted id lists. */
        {
                size_t i = 0, j = 0, nt = p->n, ns = ds->sample_ids->shape[0], matched = 0;

                while (i < nt) {
                        while (j < ns && sp[2 * j] < tp[2 * i])
                                j++;
                        if (j < ns && sp[2 * j] == tp[2 * i]) {
                                p->student_rows[tp[2 * i + 1]] = (size_t) sp[2 * j + 1];
                                if (tp[2 * i + 1] != sp[2 * j + 1])
                                        identity = 0;
                                matched++;
                        } else {
                                missing_t++;
                        }
                        i++;
                }
                missing_s = ns - matched;
        }
        if (missing_t || missing_s) {
                err = kdl_error(-KDL_EMISMATCH,
                                "'%s' and '%s': /sample_ids: %zu samples differ (%zu of the "
                                "teacher's are not in the student, %zu of the student's not in the "
                                "teacher)",
                                dt->path, ds->path, missing_t + missing_s, missing_t, missing_s);
                goto out;
        }
        if (identity) {
                free(p->student_rows);
                p->student_rows = NULL;
        }
        *ret = p;
        p = NULL;
        err = 0;
out:
        kdl_pair_free(p);
        free(tp);
        free(sp);
        return err;
}

void kdl_pair_free(kdl_pair *p)
{
        if (!p)
                return;
        free(p->student_rows);
        free(p);
}
