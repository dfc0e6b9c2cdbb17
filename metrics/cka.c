/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/cka.h"
#include "metrics/cka-internal.h"
#include "metrics/sample.h"
#include "metrics/base/banned.h"

/* Rows per product by default: 2048 keep BLAS near its DGEMM rate for
 * layers of width ~2,000 (k = 512 reached 55 % of DGEMM, 2048 70 % in
 * tests/bench), but the stacked block stays within ~256 MiB. */
#define MAX_BLOCK_ROWS 2048
#define MIN_BLOCK_ROWS 256
#define BLOCK_BYTES    ((size_t) 256 << 20)
#define DEFAULT_LEVEL  0.95

/* Layer @l's block @b: [@rows, widths[l]] (one column for a one-hot layer of @kinds), and
 * with @values (always for a one-hot layer, whose values are not stacked) finite. */
static int check_block(const kdl_tensor *b, size_t l, const size_t *widths,
                       const enum kdl_cka_layer *kinds, size_t rows, const size_t *ids, bool values)
{
        bool hot = kinds && kinds[l] == KDL_CKA_LAYER_ONEHOT;
        size_t bad, w = hot ? 1 : widths[l];

        if (b->ndim != 2 || b->shape[1] != w)
                return kdl_error(-KDL_ESHAPE,
                                 "layer %zu: expected [rows, %zu], got %zu-D "
                                 "with %zu columns",
                                 l, w, b->ndim, b->ndim == 2 ? b->shape[1] : 0);
        if (b->shape[0] != rows)
                return kdl_error(-KDL_ESHAPE, "layer %zu: %zu rows, layer 0 has %zu", l,
                                 b->shape[0], rows);
        if ((values || hot) && kdl_tensor_check_finite(b, &bad) < 0)
                return kdl_error(-KDL_ENONFINITE, "layer %zu: non-finite value at sample %zu", l,
                                 ids ? ids[bad] : bad);
        return 0;
}

int kdl__cka_check_blocks(const kdl_tensor *blocks, size_t nlayers, const size_t *widths,
                          const enum kdl_cka_layer *kinds, size_t rows, const size_t *ids)
{
        for (size_t l = 0; l < nlayers; l++) {
                int r = check_block(&blocks[l], l, widths, kinds, rows, ids, true);

                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- Feature-space state ----------------------------------------------------- */

/* Its layout, lifecycle and accumulation; merge and finalize are in
 * cka-shift.c. */

static const char *const precision_names[KDL_CKA_PRECISION_COUNT_] = {"double", "mixed"};

const char *kdl_cka_precision_name(enum kdl_cka_precision p)
{
        assert(p < KDL_CKA_PRECISION_COUNT_);
        return precision_names[p];
}

int kdl_cka_precision_parse(const char *s, enum kdl_cka_precision *ret)
{
        for (int p = 0; p < KDL_CKA_PRECISION_COUNT_; p++)
                if (strcmp(s, precision_names[p]) == 0) {
                        *ret = (enum kdl_cka_precision) p;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE, "unknown CKA precision '%s' (expected double or mixed)", s);
}

void kdl_cka_opts_init(kdl_cka_opts *o)
{
        assert(o);
        *o = (kdl_cka_opts){
                .block_rows = 0, /* chosen from the widths by opts_resolve() */
                .pairs = NULL,
                .bootstrap = 0,
                .seed = 0,
                .level = DEFAULT_LEVEL,
                .precision = KDL_CKA_PRECISION_DOUBLE,
                .interval = KDL_CKA_INTERVAL_PERCENTILE,
                .kinds = NULL,
                .external = NULL,
        };
}

static bool is_hot(const kdl_cka_opts *o, size_t j)
{
        return o->kinds && o->kinds[j] == KDL_CKA_LAYER_ONEHOT;
}

/* @in, or kdl_cka_opts_init()'s when NULL, with block_rows chosen when 0 (from the
 * stacked width: one-hot layers are not stacked). */
static void opts_resolve(const kdl_cka_opts *in, size_t l, const size_t *widths, kdl_cka_opts *o)
{
        size_t dz = 0;

        if (in)
                *o = *in;
        else
                kdl_cka_opts_init(o);
        for (size_t j = 0; j < l; j++)
                dz += is_hot(o, j) ? 0 : widths[j];
        if (!o->block_rows) {
                o->block_rows = BLOCK_BYTES / (sizeof(double) * (dz ? dz : 1));
                o->block_rows = o->block_rows > MAX_BLOCK_ROWS ? MAX_BLOCK_ROWS : o->block_rows;
                o->block_rows = o->block_rows < MIN_BLOCK_ROWS ? MIN_BLOCK_ROWS : o->block_rows;
        }
        assert(o->precision < KDL_CKA_PRECISION_COUNT_);
        assert(o->interval < KDL_CKA_INTERVAL_COUNT_);
}

/* Jackknife groups of a state with options @o: BCa intervals need them. */
static size_t jackknife_groups(const kdl_cka_opts *o)
{
        return o->bootstrap && o->interval == KDL_CKA_INTERVAL_BCA ? KDL_CKA_JACKKNIFE_GROUPS : 0;
}

/* Rows of one float product in mixed precision. */
static size_t mixed_rows(const kdl_cka_opts *o)
{
        return o->block_rows < KDL_CKA_MIXED_ROWS ? o->block_rows : KDL_CKA_MIXED_ROWS;
}

/* Whether the pair (@j, @k) is computed in the state; external pairs are not. */
static bool pair_needed(const kdl_cka_opts *o, size_t l, size_t j, size_t k)
{
        if (o->external && (o->external[j * l + k] || o->external[k * l + j]))
                return false;
        return j == k || !o->pairs || o->pairs[j * l + k] || o->pairs[k * l + j];
}

/* Whether it has a block: a one-hot layer's with itself is its counts, kept in m. */
static bool pair_block(const kdl_cka_opts *o, size_t l, size_t j, size_t k)
{
        return pair_needed(o, l, j, k) && !(j == k && is_hot(o, j));
}

/* Doubles per stats set and in the scratch, bytes of the mixed-precision
 * scratch (0 in double), and the largest needed D_j D_k; false on overflow. */
static bool state_sizes(size_t l, const size_t *widths, const kdl_cka_opts *o, size_t *ret_stats,
                        size_t *ret_scratch, size_t *ret_fbytes, size_t *ret_gmax)
{
        size_t dt = 0, dz = 0, nhot = 0, s = 0, scr, k, t, fb = 0, gmax = 0;

        for (size_t j = 0; j < l; j++) {
                if (__builtin_add_overflow(dt, widths[j], &dt))
                        return false;
                dz += is_hot(o, j) ? 0 : widths[j];
                nhot += is_hot(o, j);
        }
        for (size_t j = 0; j < l; j++)
                for (size_t i = j; i < l; i++)
                        if (pair_block(o, l, j, i)) {
                                if (__builtin_mul_overflow(widths[j], widths[i], &t) ||
                                    __builtin_add_overflow(s, t, &s))
                                        return false;
                                if (!is_hot(o, j) && !is_hot(o, i))
                                        gmax = t > gmax ? t : gmax;
                        }
        if (__builtin_mul_overflow(dt, l, &t) || __builtin_add_overflow(s, t, &s) ||
            __builtin_add_overflow(s, dt + l * l + l, &s))
                return false;
        /* z, a and the classes of a block. */
        if (__builtin_add_overflow(dz, l + nhot, &k) ||
            __builtin_mul_overflow(k, o->block_rows, &scr))
                return false;
        /* zw, aw, clsw; v, wb and grp (a size_t per row, counted as a double). */
        if (o->bootstrap && (__builtin_mul_overflow(scr, 2, &scr) ||
                             __builtin_add_overflow(scr, 3 * o->block_rows, &scr)))
                return false;
        if (__builtin_add_overflow(scr, o->block_rows + dt, &scr))
                return false;
        /* zf, gf and fexp. */
        if (o->precision == KDL_CKA_PRECISION_MIXED &&
            (__builtin_mul_overflow(mixed_rows(o), dz, &fb) ||
             __builtin_add_overflow(fb, gmax, &fb) ||
             __builtin_mul_overflow(fb, sizeof(float), &fb) ||
             __builtin_add_overflow(fb, l * sizeof(int), &fb)))
                return false;
        *ret_stats = s;
        *ret_scratch = scr;
        *ret_fbytes = fb;
        *ret_gmax = gmax;
        return true;
}

size_t kdl_cka_state_bytes(size_t nlayers, const size_t *widths, const kdl_cka_opts *opts)
{
        kdl_cka_opts o;
        size_t s, scr, fb, gmax, total;

        opts_resolve(opts, nlayers, widths, &o);
        if (!state_sizes(nlayers, widths, &o, &s, &scr, &fb, &gmax))
                return SIZE_MAX;
        if (__builtin_mul_overflow(s, o.bootstrap + 1 + jackknife_groups(&o), &total) ||
            __builtin_add_overflow(total, scr, &total) ||
            __builtin_mul_overflow(total, sizeof(double), &total) ||
            __builtin_add_overflow(total, fb, &total))
                return SIZE_MAX;
        return total;
}

void kdl__cka_stats_release(struct kdl__cka_stats *t, size_t nblk)
{
        free(t->m);
        if (t->g && nblk)
                free(t->g[0]); /* every block's, kdl__cka_stats_init() */
        free(t->g);
        free(t->u);
        free(t->p);
        free(t->sa);
}

int kdl__cka_stats_init(struct kdl__cka_stats *t, const kdl_cka_state *s)
{
        size_t total = 0;

        t->n = 0.0;
        t->m = kdl_new(double, s->dt);
        t->g = kdl_new(double *, s->nblk);
        t->u = kdl_new(double, s->dt * s->l);
        t->p = kdl_new(double, s->l * s->l);
        t->sa = kdl_new(double, s->l);
        if (!t->m || !t->g || !t->u || !t->p || !t->sa)
                return -ENOMEM;
        if (!s->nblk)
                return 0; /* one-hot layers alone */
        /* The blocks one after the other, so that those of a run (run_end()) are one
         * matrix. */
        for (size_t b = 0; b < s->nblk; b++)
                total += s->width[s->bj[b]] * s->width[s->bk[b]];
        t->g[0] = kdl_new(double, total);
        if (!t->g[0])
                return -ENOMEM;
        for (size_t b = 1; b < s->nblk; b++)
                t->g[b] = t->g[b - 1] + s->width[s->bj[b - 1]] * s->width[s->bk[b - 1]];
        return 0;
}

void kdl_cka_state_free(kdl_cka_state *s)
{
        if (!s)
                return;
        if (s->st)
                for (size_t i = 0; i < s->nstats; i++)
                        kdl__cka_stats_release(&s->st[i], s->nblk);
        free(s->st);
        free(s->width);
        free(s->off);
        free(s->kind);
        free(s->hot);
        free(s->ext);
        free(s->bj);
        free(s->bk);
        free(s->blk);
        free(s->shift);
        free(s->z);
        free(s->a);
        free(s->cls);
        free(s->clsw);
        free(s->zw);
        free(s->aw);
        free(s->v);
        free(s->ones);
        free(s->wb);
        free(s->grp);
        free(s->zf);
        free(s->gf);
        free(s->fexp);
        free(s);
}

/* Check the layers and the resolved options @o of a new state; the total
 * width and the largest needed D_j D_k on success. */
static int state_check(size_t nlayers, const size_t *widths, const kdl_cka_opts *o, size_t *ret_dt,
                       size_t *ret_gmax)
{
        size_t dt = 0, ns, nscr, nfb, nb, gmax;
        int bi, r;

        if (nlayers == 0)
                return kdl_error(-KDL_ESHAPE, "CKA needs at least one layer");
        if (!(o->level > 0.0 && o->level < 1.0))
                return kdl_error(-KDL_ERANGE, "confidence level %g is not in (0, 1)", o->level);
        for (size_t i = 0; i < nlayers; i++) {
                if (widths[i] == 0)
                        return kdl_error(-KDL_ESHAPE, "layer %zu has width 0", i);
                if (__builtin_add_overflow(dt, widths[i], &dt))
                        return kdl_error(-KDL_EOVERFLOW, "total width overflows");
        }
        r = kdl__blas_int(dt, &bi);
        if (r < 0)
                return r;
        r = kdl__blas_int(o->block_rows, &bi);
        if (r < 0)
                return r;
        if (!state_sizes(nlayers, widths, o, &ns, &nscr, &nfb, &gmax) ||
            __builtin_add_overflow(o->bootstrap, 1 + jackknife_groups(o), &nb))
                return kdl_error(-KDL_EOVERFLOW, "CKA state for total width %zu overflows", dt);
        *ret_dt = dt;
        *ret_gmax = gmax;
        return 0;
}

/* The layers' columns (s->width, s->off: the stacked ones first, one-hot layers after),
 * kinds and external pairs, the blocks of the pairs @o->pairs needs (s->bj, s->bk,
 * s->blk), and the shift. */
static int layout_init(kdl_cka_state *s, const size_t *widths, const kdl_cka_opts *o)
{
        size_t l = s->l, at = 0;

        s->width = kdl_new(size_t, l);
        s->off = kdl_new(size_t, l);
        s->kind = kdl_new(enum kdl_cka_layer, l);
        s->hot = kdl_new(size_t, l);
        s->bj = kdl_new(size_t, l * (l + 1) / 2);
        s->bk = kdl_new(size_t, l * (l + 1) / 2);
        s->blk = kdl_new(long, l *l);
        s->shift = kdl_new(double, s->dt);
        if (!s->width || !s->off || !s->kind || !s->hot || !s->bj || !s->bk || !s->blk || !s->shift)
                return -ENOMEM;
        if (o->external) {
                s->ext = kdl_new(bool, l *l);
                if (!s->ext)
                        return -ENOMEM;
                for (size_t i = 0; i < l * l; i++)
                        s->ext[i] = o->external[i] || o->external[(i % l) * l + i / l];
        }
        for (int hot = 0; hot < 2; hot++)
                for (size_t i = 0; i < l; i++) {
                        if (is_hot(o, i) != hot)
                                continue;
                        s->width[i] = widths[i];
                        s->kind[i] = o->kinds ? o->kinds[i] : KDL_CKA_LAYER_DENSE;
                        s->off[i] = at;
                        at += widths[i];
                        if (hot)
                                s->hot[s->nhot++] = i;
                        else
                                s->dz += widths[i];
                }
        for (size_t j = 0; j < l; j++)
                for (size_t k = j; k < l; k++) {
                        long b = -1;

                        if (pair_block(o, l, j, k)) {
                                /* A one-hot layer's block [D_y, D_k] is its class sums of
                                 * the other layer: a row per class, added row by row.  Two
                                 * stacked layers' has the later one's rows (run_end()). */
                                bool swap = !is_hot(o, j);

                                b = (long) s->nblk++;
                                s->bj[b] = swap ? k : j;
                                s->bk[b] = swap ? j : k;
                        }
                        s->blk[j * l + k] = s->blk[k * l + j] = b;
                }
        return 0;
}

/* The scratch of one row block: the shifted rows and their norms, the classes of the
 * one-hot layers, the weighted copies of a replicate (bootstrap only) and the float copy
 * and product (mixed precision only); @gmax: the largest needed D_j D_k. */
static int scratch_init(kdl_cka_state *s, size_t gmax)
{
        size_t br = s->o.block_rows, dz = s->dz, l = s->l, nh = s->nhot ? s->nhot : 1;

        s->z = kdl_new(double, br *(dz ? dz : 1));
        s->a = kdl_new(double, br *l);
        s->cls = kdl_new(double, br *nh);
        s->ones = kdl_new(double, br);
        if (!s->z || !s->a || !s->cls || !s->ones)
                return -ENOMEM;
        for (size_t i = 0; i < br; i++)
                s->ones[i] = 1.0;
        if (s->o.bootstrap) {
                s->zw = kdl_new(double, br *(dz ? dz : 1));
                s->aw = kdl_new(double, br *l);
                s->clsw = kdl_new(double, br *nh);
                s->v = kdl_new(double, br);
                s->wb = kdl_new(double, br);
                s->grp = kdl_new(size_t, br);
                if (!s->zw || !s->aw || !s->clsw || !s->v || !s->wb || !s->grp)
                        return -ENOMEM;
        }
        if (s->o.precision == KDL_CKA_PRECISION_MIXED) {
                s->zf = kdl_new(float, mixed_rows(&s->o) * (dz ? dz : 1));
                s->gf = kdl_new(float, gmax ? gmax : 1);
                s->fexp = kdl_new(int, l);
                if (!s->zf || !s->gf || !s->fexp)
                        return -ENOMEM;
        }
        return 0;
}

int kdl_cka_state_new(size_t nlayers, const size_t *widths, const kdl_cka_opts *opts,
                      kdl_cka_state **ret)
{
        kdl_cka_state *s = NULL;
        kdl_cka_opts o;
        size_t dt = 0, gmax = 0;
        int r;

        opts_resolve(opts, nlayers, widths, &o);
        r = state_check(nlayers, widths, &o, &dt, &gmax);
        if (r < 0)
                return r;
        s = kdl_new(kdl_cka_state, 1);
        if (!s)
                return -ENOMEM;
        s->l = nlayers;
        s->dt = dt;
        s->o = o;
        /* Borrowed only here: the blocks remember the mask, the layout the kinds. */
        s->o.pairs = NULL;
        s->o.kinds = NULL;
        s->o.external = NULL;
        s->nrep = o.bootstrap;
        s->ngroups = jackknife_groups(&o);
        s->nstats = 1 + s->nrep + s->ngroups;
        r = layout_init(s, widths, &o);
        if (r < 0)
                goto out;
        r = scratch_init(s, gmax);
        if (r < 0)
                goto out;
        s->st = kdl_new(struct kdl__cka_stats, s->nstats);
        if (!s->st) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < s->nstats; i++) {
                r = kdl__cka_stats_init(&s->st[i], s);
                if (r < 0)
                        goto out;
        }
        *ret = s;
        s = NULL;
out:
        kdl_cka_state_free(s);
        return r;
}

/* Whether block @b pairs two stacked layers (not a one-hot one). */
static bool stacked_block(const kdl_cka_state *s, size_t b)
{
        return s->kind[s->bj[b]] != KDL_CKA_LAYER_ONEHOT &&
               s->kind[s->bk[b]] != KDL_CKA_LAYER_ONEHOT;
}

/*
 * Mixed precision: the G blocks of @rows (<= KDL_CKA_MIXED_ROWS) rows @z
 * [rows, dz] by ssyrk/sgemm.  Each layer is scaled by 2^-e, e the exponent of
 * its largest magnitude in these rows, before rounding to float (exact, and
 * keeps every float in [-1, 1] and every product entry below 1024, so no
 * overflow or underflow whatever the data's units); the float result of
 * each product is scaled back by 2^(e_j + e_k) and added into the double
 * block.  Only the upper triangle of a diagonal block is added, as dsyrk
 * writes it.  Blocks with a one-hot layer are class sums, added in double.
 */
static void g_add_float(const kdl_cka_state *s, struct kdl__cka_stats *t, const double *z,
                        size_t rows)
{
        size_t dz = s->dz, l = s->l;
        int n = (int) dz, k = (int) rows;
        float *zf = s->zf, *gf = s->gf;

        for (size_t j = 0; j < l; j++) {
                double mx = 0.0;

                if (s->kind[j] == KDL_CKA_LAYER_ONEHOT)
                        continue;
                for (size_t i = 0; i < rows; i++)
                        for (size_t c = s->off[j]; c < s->off[j] + s->width[j]; c++)
                                mx = fabs(z[i * dz + c]) > mx ? fabs(z[i * dz + c]) : mx;
                /* frexp(0) gives 0; clamp so 2^±e stays a normal double. */
                frexp(mx, &s->fexp[j]);
                s->fexp[j] = s->fexp[j] > 1000 ? 1000 : s->fexp[j] < -1000 ? -1000 : s->fexp[j];
        }
        for (size_t i = 0; i < rows; i++)
                for (size_t j = 0; j < l; j++) {
                        double sc;

                        if (s->kind[j] == KDL_CKA_LAYER_ONEHOT)
                                continue;
                        sc = ldexp(1.0, -s->fexp[j]);
                        for (size_t c = s->off[j]; c < s->off[j] + s->width[j]; c++)
                                zf[i * dz + c] = (float) (sc * z[i * dz + c]);
                }
        for (size_t b = 0; b < s->nblk; b++) {
                size_t j = s->bj[b], q = s->bk[b], dj = s->width[j], dq = s->width[q];
                double back, *g = t->g[b];

                if (!stacked_block(s, b))
                        continue;
                back = ldexp(1.0, s->fexp[j] + s->fexp[q]);
                if (j == q) {
                        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int) dj, k, 1.0f,
                                    zf + s->off[j], n, 0.0f, gf, (int) dj);
                        for (size_t r = 0; r < dj; r++)
                                for (size_t c = r; c < dj; c++)
                                        g[r * dj + c] += back * (double) gf[r * dj + c];
                } else {
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int) dj, (int) dq, k,
                                    1.0f, zf + s->off[j], n, zf + s->off[q], n, 0.0f, gf, (int) dq);
                        for (size_t e = 0; e < dj * dq; e++)
                                g[e] += back * (double) gf[e];
                }
        }
}

/* Whether the pair (@j, @k) of two stacked layers (not a one-hot one) has a block. */
static bool stacked_pair(const kdl_cka_state *s, size_t j, size_t k)
{
        return s->blk[j * s->l + k] >= 0 && s->kind[j] != KDL_CKA_LAYER_ONEHOT &&
               s->kind[k] != KDL_CKA_LAYER_ONEHOT;
}

/*
 * The end (exclusive) of the run of layer @j's needed stacked partners from @k0 (one,
 * > j): k0, k0 + 1, ... are side by side in the stacked block Z, and their blocks with @j
 * (Σ z_k z_jᵀ, [D_k, D_j]) one below the other in memory (kdl__cka_stats_init()), so that
 * the whole run is one product [D_k0 + ..., D_j] added in place.
 */
static size_t run_end(const kdl_cka_state *s, size_t j, size_t k0)
{
        size_t k = k0 + 1;

        while (k < s->l && stacked_pair(s, j, k))
                k++;
        return k;
}

/* The blocks of stacked layer @j (with itself and its later stacked partners) of @rows
 * stacked rows @z [rows, dz] into @t: dsyrk on the diagonal, one dgemm per run of partners
 * (run_end()), so that Z_j is packed once for all of them. */
static void g_add_layer(const kdl_cka_state *s, struct kdl__cka_stats *t, const double *z,
                        size_t rows, size_t j)
{
        size_t l = s->l, dj = s->width[j];
        int n = (int) s->dz, k = (int) rows;

        if (s->kind[j] == KDL_CKA_LAYER_ONEHOT)
                return;
        if (stacked_pair(s, j, j))
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int) dj, k, 1.0, z + s->off[j],
                            n, 1.0, t->g[s->blk[j * l + j]], (int) dj);
        for (size_t q = j + 1; q < l; q++) {
                size_t e;

                if (!stacked_pair(s, j, q))
                        continue;
                e = run_end(s, j, q);
                /* The run's columns: stacked layers in order are side by side. */
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans,
                            (int) (s->off[e - 1] + s->width[e - 1] - s->off[q]), (int) dj, k, 1.0,
                            z + s->off[q], n, z + s->off[j], n, 1.0, t->g[s->blk[j * l + q]],
                            (int) dj);
                q = e - 1;
        }
}

/* Add @rows stacked rows @z [rows, dz] with squared norms @a [rows, l] and classes @cls
 * [rows, nhot] to @t; @v holds the square roots of the weights, by which @z and @a were
 * already scaled (all ones for the main statistics).  The blocks of two stacked layers by
 * g_add_layer(); in mixed precision, ssyrk and sgemm per needed block and
 * KDL_CKA_MIXED_ROWS rows instead (g_add_float()).  The one-hot layers' sums are class
 * sums (kdl__cka_onehot_add()). */
static void stats_add_block(const kdl_cka_state *s, struct kdl__cka_stats *t, const double *z,
                            const double *a, const double *cls, const double *v, size_t rows)
{
        int n = (int) s->dz, k = (int) rows, li = (int) s->l;

        if (rows == 0)
                return;
        if (s->o.precision == KDL_CKA_PRECISION_MIXED) {
                size_t pr = mixed_rows(&s->o);

                for (size_t r0 = 0; r0 < rows && n; r0 += pr)
                        g_add_float(s, t, z + r0 * s->dz, rows - r0 < pr ? rows - r0 : pr);
        } else {
                for (size_t j = 0; j < s->l; j++)
                        g_add_layer(s, t, z, rows, j);
        }
        if (n) {
                cblas_dgemv(CblasRowMajor, CblasTrans, k, n, 1.0, z, n, v, 1, 1.0, t->m, 1);
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, li, k, 1.0, z, n, a, li,
                            1.0, t->u, li);
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, li, li, k, 1.0, a, li, a, li, 1.0,
                    t->p, li);
        cblas_dgemv(CblasRowMajor, CblasTrans, k, li, 1.0, a, li, v, 1, 1.0, t->sa, 1);
        t->n += cblas_ddot(k, v, 1, v, 1);
        if (s->nhot)
                kdl__cka_onehot_add(s, t, z, a, v, cls, rows);
}

/* Shifted-data algorithm: subtracting a provisional mean (of the first
 * block) keeps the raw moments small, so centring at finalize does not
 * cancel catastrophically when |mean| >> spread.  One-hot layers keep a shift
 * of 0 (their 0/1 values do not cancel, and their sums stay counts). */
static void set_shift(kdl_cka_state *s, const kdl_tensor *blocks, size_t rows)
{
        for (size_t j = 0; j < s->l; j++)
                for (size_t c = 0; c < s->width[j] && s->kind[j] != KDL_CKA_LAYER_ONEHOT; c++) {
                        double sum = 0.0;

                        for (size_t i = 0; i < rows; i++)
                                sum += KDL_AT2(&blocks[j], i, c);
                        s->shift[s->off[j] + c] = sum / (double) rows;
                }
        s->shifted = true;
}

/* Rows [r0, r0 + nb) of @blocks, shifted, side by side into s->z, their
 * squared norms per layer into s->a (1 for a one-hot layer) and the classes
 * of the one-hot layers into s->cls.  Return: 0; -KDL_ERANGE for a class out
 * of range. */
static int stack_rows(kdl_cka_state *s, const kdl_tensor *blocks, size_t r0, size_t nb,
                      const size_t *ids)
{
        size_t l = s->l;
        int r;

        for (size_t q = 0; q < s->nhot; q++) {
                r = kdl__cka_onehot_rows(s, s->hot[q], q, &blocks[s->hot[q]], r0, nb, ids);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < nb; i++) {
                double *zi = s->z + i * s->dz;

                for (size_t j = 0; j < l; j++) {
                        const kdl_tensor *b = &blocks[j];
                        double *zij = zi + s->off[j];
                        const double *kj = s->shift + s->off[j];
                        double sq = 0.0;

                        if (s->kind[j] == KDL_CKA_LAYER_ONEHOT) {
                                s->a[i * l + j] = 1.0;
                                continue;
                        }
                        for (size_t c = 0; c < s->width[j]; c++) {
                                double x = KDL_AT2(b, r0 + i, c) - kj[c];

                                zij[c] = x;
                                sq += x * x;
                        }
                        s->a[i * l + j] = sq;
                }
        }
        return 0;
}

/* The rows of s->z, s->a and s->cls whose weight @w[i] (@nb of them) is positive,
 * scaled by sqrt(w) so that one product gives Σ w z zᵀ, into @t; rows of
 * weight 0 are dropped. */
static void add_weighted(kdl_cka_state *s, struct kdl__cka_stats *t, const double *w, size_t nb)
{
        size_t l = s->l, dz = s->dz, nh = s->nhot, kept = 0;

        for (size_t i = 0; i < nb; i++) {
                double sw;

                if (!(w[i] > 0.0))
                        continue;
                sw = sqrt(w[i]);
                for (size_t c = 0; c < dz; c++)
                        s->zw[kept * dz + c] = sw * s->z[i * dz + c];
                for (size_t j = 0; j < l; j++)
                        s->aw[kept * l + j] = sw * s->a[i * l + j];
                for (size_t q = 0; q < nh; q++)
                        s->clsw[kept * nh + q] = s->cls[i * nh + q];
                s->v[kept] = sw;
                kept++;
        }
        stats_add_block(s, t, s->zw, s->aw, s->clsw, s->v, kept);
}

/* The @nb stacked rows of s->z and s->a, samples @ids, into every bootstrap
 * replicate with its Poisson weights, and (BCa) into the sums of their
 * jackknife groups. */
static void add_replicates(kdl_cka_state *s, const size_t *ids, size_t nb)
{
        for (size_t b = 0; b < s->nrep; b++) {
                for (size_t i = 0; i < nb; i++)
                        s->wb[i] = (double) kdl_sample_poisson1(s->o.seed, ids[i], b);
                add_weighted(s, &s->st[1 + b], s->wb, nb);
        }
        if (!s->ngroups)
                return;
        for (size_t i = 0; i < nb; i++)
                s->grp[i] = kdl_sample_group(s->o.seed, ids[i], s->ngroups);
        for (size_t g = 0; g < s->ngroups; g++) {
                for (size_t i = 0; i < nb; i++)
                        s->wb[i] = s->grp[i] == g ? 1.0 : 0.0;
                add_weighted(s, &s->st[1 + s->nrep + g], s->wb, nb);
        }
}

/* Every squared norm of the @nb rows s->a is finite (so every value of the rows is). */
static bool stacked_finite(const kdl_cka_state *s, size_t nb)
{
        for (size_t i = 0; i < nb * s->l; i++)
                if (!isfinite(s->a[i]))
                        return false;
        return true;
}

int kdl_cka_accumulate(kdl_cka_state *s, const kdl_tensor *blocks, const size_t *ids)
{
        size_t rows, br;
        bool first;
        int r = 0;

        assert(s && blocks && (ids || s->nstats == 1));
        br = s->o.block_rows;
        rows = blocks[0].ndim == 2 ? blocks[0].shape[0] : 0;
        /* A block of one product's rows has its values checked as they are stacked (their
         * squared norms are finite), not in a pass of its own; a larger one first, so that
         * nothing is added when a value is not finite. */
        for (size_t l = 0; l < s->l && r == 0; l++)
                r = check_block(&blocks[l], l, s->width, s->kind, rows, ids, rows > br);
        if (r < 0 || rows == 0)
                return r;
        /* Every class first, so that a bad one leaves @s unchanged. */
        for (size_t r0 = 0; r0 < rows; r0 += br) {
                size_t nb = rows - r0 < br ? rows - r0 : br;

                for (size_t q = 0; q < s->nhot; q++) {
                        r = kdl__cka_onehot_rows(s, s->hot[q], q, &blocks[s->hot[q]], r0, nb, ids);
                        if (r < 0)
                                return r;
                }
        }
        first = !s->shifted;
        if (first)
                set_shift(s, blocks, rows);
        for (size_t r0 = 0; r0 < rows; r0 += br) {
                size_t nb = rows - r0 < br ? rows - r0 : br;

                r = stack_rows(s, blocks, r0, nb, ids);
                assert(r == 0);
                if (rows <= br && !stacked_finite(s, nb)) {
                        s->shifted = !first; /* the shift of a block not taken */
                        return kdl__cka_check_blocks(blocks, s->l, s->width, s->kind, rows, ids);
                }
                stats_add_block(s, &s->st[0], s->z, s->a, s->cls, s->ones, nb);
                if (s->nrep)
                        add_replicates(s, ids + r0, nb);
        }
        return 0;
}

int kdl_cka_state_mean(const kdl_cka_state *s, size_t j, double *ret)
{
        const struct kdl__cka_stats *t = &s->st[0];

        assert(s && ret && j < s->l);
        if (!(t->n > 0.0))
                return kdl_error(-KDL_EMISSING, "CKA: no samples");
        for (size_t c = 0; c < s->width[j]; c++)
                ret[c] = s->shift[s->off[j] + c] + t->m[s->off[j] + c] / t->n;
        return 0;
}
