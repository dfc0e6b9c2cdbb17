/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/spectral.h"
#include "metrics/spectral-internal.h"
#include "metrics/base/banned.h"

/* GCV grid: lambda / s_1 = 10^(GRID_LO + k (GRID_HI - GRID_LO) / GRID_STEPS). */
#define GRID_LO     (-10.0)
#define GRID_HI     5.0
#define GRID_STEPS  300
#define GOLDEN_ITER 60

void kdl_spectral_plan_init(kdl_spectral_plan *p)
{
        assert(p);
        *p = (kdl_spectral_plan){.method = KDL_SPECTRAL_EXACT_FEATURES,
                                 .rank = KDL_SPECTRAL_SKETCH_RANK,
                                 .oversample = KDL_SPECTRAL_SKETCH_OVERSAMPLE};
}

const char *kdl_spectral_method_name(enum kdl_spectral_method m)
{
        static const char *const names[KDL_SPECTRAL_METHOD_COUNT_] = {
                [KDL_SPECTRAL_EXACT_FEATURES] = "exact-features",
                [KDL_SPECTRAL_EXACT_GRAM] = "exact-gram",
                [KDL_SPECTRAL_SKETCH] = "sketch",
        };

        return (unsigned) m < KDL_SPECTRAL_METHOD_COUNT_ ? names[m] : "?";
}

/* Columns of the sketch's Omega. */
static size_t sketch_cols(const kdl_spectral_plan *p, size_t dx)
{
        size_t k = p->rank + p->oversample;

        return k < p->rank || k > dx ? dx : k;
}

size_t kdl_spectral_bytes(const kdl_spectral_plan *p, size_t n, size_t dx, size_t dy,
                          size_t block_rows)
{
        enum kdl_spectral_method m = p ? p->method : KDL_SPECTRAL_EXACT_FEATURES;
        double x = (double) dx, y = (double) dy, nn = (double) n, dbl;
        double rows = (double) (block_rows < n ? block_rows : n);
        double k = p ? (double) sketch_cols(p, dx) : 0.0, ints = 0.0;

        /* Every method: means, block means, the result (eig, tail). */
        dbl = 4.0 * (x + y) + 2.0 * x + 1.0;
        switch (m) {
        case KDL_SPECTRAL_EXACT_GRAM:
                /* rows kept, shift; at the end G, mean, v, dsyevd's 2n + 1 */
                dbl += nn * x + x + nn * nn + x + nn + 2.0 * nn + 1.0;
                break;
        case KDL_SPECTRAL_SKETCH:
                /* Omega, Y, the block and Z_b Omega; at the end Y + nu Omega, B,
                 * sigma, bounds, and LAPACK workspaces (QR, SVD: O(k nb)) */
                dbl += 2.0 * x * k + rows * (x + k) + x * k + k * k + 3.0 * k + x + k * (k + 256.0);
                ints += 8.0 * k;
                break;
        default:
                /* Sxx, Sxy, the block; at the end a copy of Sxx, w, dsyevd's
                 * workspace ('V' with a target), the ridge's V^T Sxy */
                dbl += x * x + x * y + rows * (x + y) + x * x + x;
                if (dy) {
                        dbl += 1.0 + 6.0 * x + 2.0 * x * x + x * y + x;
                        ints += 3.0 + 5.0 * x;
                } else {
                        dbl += 2.0 * x + 1.0;
                }
                break;
        }
        dbl = dbl * (double) sizeof(double) + ints * (double) sizeof(int);
        return dbl < (double) SIZE_MAX / 2 ? (size_t) dbl : SIZE_MAX;
}

int kdl_spectral_plan_choose(size_t n, size_t dx, size_t budget, size_t exact_max,
                             size_t block_rows, kdl_spectral_plan *p)
{
        kdl_spectral_plan f = *p, g = *p, sk = *p;
        size_t bs;
        bool ok_f, ok_g;

        assert(p);
        f.method = KDL_SPECTRAL_EXACT_FEATURES;
        g.method = KDL_SPECTRAL_EXACT_GRAM;
        g.rows = n;
        sk.method = KDL_SPECTRAL_SKETCH;
        ok_f = dx <= exact_max && kdl_spectral_bytes(&f, n, dx, 0, block_rows) <= budget;
        ok_g = n <= exact_max && kdl_spectral_bytes(&g, n, dx, 0, block_rows) <= budget;
        if (ok_f && (!ok_g || dx <= n)) {
                *p = f;
                return 0;
        }
        if (ok_g) {
                *p = g;
                return 0;
        }
        bs = kdl_spectral_bytes(&sk, n, dx, 0, block_rows);
        if (bs > budget)
                return kdl_error(-KDL_ERANGE,
                                 "the spectrum of %zu columns needs %.2f GiB sketched at rank %zu "
                                 "(oversample %zu), more than the %.2f GiB allowed",
                                 dx, (double) bs / 1073741824.0, p->rank, p->oversample,
                                 (double) budget / 1073741824.0);
        *p = sk;
        return 0;
}

int kdl_spectral_state_new(size_t dx, size_t dy, unsigned flags, kdl_spectral_state **ret)
{
        return kdl_spectral_state_new_plan(dx, dy, flags, NULL, ret);
}

int kdl_spectral_state_new_plan(size_t dx, size_t dy, unsigned flags, const kdl_spectral_plan *p,
                                kdl_spectral_state **ret)
{
        kdl_spectral_state *s = NULL;
        kdl_spectral_plan plan;
        size_t nxx = 0, nxy = 0;
        int bi, err;

        assert(ret);
        if (p)
                plan = *p;
        else
                kdl_spectral_plan_init(&plan);
        if ((unsigned) plan.method >= KDL_SPECTRAL_METHOD_COUNT_)
                return kdl_error(-KDL_ERANGE, "spectral state: method %d is not a method",
                                 (int) plan.method);
        if (plan.method == KDL_SPECTRAL_SKETCH && plan.rank == 0)
                return kdl_error(-KDL_ERANGE, "spectral state: a sketch of rank 0");
        if (plan.method != KDL_SPECTRAL_EXACT_FEATURES && dy)
                return kdl_error(-KDL_ESHAPE, "spectral state: %s takes no target block",
                                 kdl_spectral_method_name(plan.method));
        if (dx == 0)
                return kdl_error(-KDL_ESHAPE, "spectral state: feature block has no columns");
        if (((flags & KDL_SPECTRAL_CENTER_ROWS_X) && dx < 2) ||
            ((flags & KDL_SPECTRAL_CENTER_ROWS_Y) && dy < 2))
                return kdl_error(-KDL_ESHAPE,
                                 "spectral state: centring the rows of a one-column block "
                                 "leaves nothing");
        /* dx^2 and dx*dy are passed to BLAS as lengths (daxpy in merge); for
         * the sketch, dx*k. */
        if (plan.method == KDL_SPECTRAL_EXACT_FEATURES) {
                err = kdl_mul_size(dx, dx, &nxx);
                if (err < 0)
                        return err;
                err = kdl_mul_size(dx, dy, &nxy);
                if (err < 0)
                        return err;
        } else if (plan.method == KDL_SPECTRAL_SKETCH) {
                err = kdl_mul_size(dx, sketch_cols(&plan, dx), &nxx);
                if (err < 0)
                        return err;
        }
        err = kdl__blas_int(nxx, &bi);
        if (err < 0)
                return err;
        err = kdl__blas_int(nxy, &bi);
        if (err < 0)
                return err;
        err = kdl__blas_int(dx + dy, &bi);
        if (err < 0)
                return err;

        s = kdl_new(kdl_spectral_state, 1);
        if (!s)
                return -ENOMEM;
        s->dx = dx;
        s->dy = dy;
        s->flags = flags;
        s->plan = plan;
        s->mx = kdl_new(double, dx);
        s->my = kdl_new(double, dy);
        s->bmx = kdl_new(double, dx);
        s->bmy = kdl_new(double, dy);
        if (!s->mx || !s->my || !s->bmx || !s->bmy)
                goto nomem;
        switch (plan.method) {
        case KDL_SPECTRAL_EXACT_FEATURES:
                s->sxx = kdl_new(double, nxx);
                s->sxy = kdl_new(double, nxy);
                if (!s->sxx || !s->sxy)
                        goto nomem;
                break;
        case KDL_SPECTRAL_EXACT_GRAM:
                s->shift = kdl_new(double, dx);
                if (!s->shift)
                        goto nomem;
                break;
        default:
                s->k = sketch_cols(&plan, dx);
                s->omega = kdl__malloc(nxx, sizeof(double));
                s->ys = kdl_new(double, nxx);
                s->kv = kdl_new(double, s->k);
                if (!s->omega || !s->ys || !s->kv)
                        goto nomem;
                err = kdl__spectral_sketch_init(s);
                if (err < 0) {
                        kdl_spectral_state_free(s);
                        return err;
                }
                break;
        }
        *ret = s;
        return 0;
nomem:
        kdl_spectral_state_free(s);
        return -ENOMEM;
}

void kdl_spectral_state_free(kdl_spectral_state *s)
{
        if (!s)
                return;
        free(s->kv);
        free(s->ys);
        free(s->omega);
        free(s->shift);
        free(s->rows);
        free(s->work);
        free(s->sxy);
        free(s->sxx);
        free(s->bmy);
        free(s->bmx);
        free(s->my);
        free(s->mx);
        free(s);
}

size_t kdl_spectral_count(const kdl_spectral_state *s)
{
        return s->n;
}

int kdl__spectral_copy_rows(const kdl_tensor *t, bool center_rows, const char *what, double *dst,
                            double *mean)
{
        size_t m = t->shape[0], d = t->shape[1];

        memset(mean, 0, d * sizeof(*mean));
        for (size_t i = 0; i < m; i++) {
                double *row = dst + i * d, rm = 0.0;

                for (size_t j = 0; j < d; j++) {
                        row[j] = KDL_AT2(t, i, j);
                        if (!isfinite(row[j]))
                                return kdl_error(-KDL_ENONFINITE,
                                                 "%s block: row %zu holds NaN or Inf", what, i);
                        rm += row[j];
                }
                if (center_rows) {
                        rm /= (double) d;
                        for (size_t j = 0; j < d; j++)
                                row[j] -= rm;
                }
                for (size_t j = 0; j < d; j++)
                        mean[j] += row[j];
        }
        for (size_t j = 0; j < d; j++)
                mean[j] /= (double) m;
        return 0;
}

int kdl__spectral_copy_centred(const kdl_tensor *t, bool center_rows, const char *what, double *dst,
                               double *mean)
{
        size_t m = t->shape[0], d = t->shape[1];
        int err = kdl__spectral_copy_rows(t, center_rows, what, dst, mean);

        if (err < 0)
                return err;
        for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < d; j++)
                        dst[i * d + j] -= mean[j];
        return 0;
}

/*
 * Add a centred batch (nb samples, means bmx/bmy, scatters already added to
 * s->sxx/sxy/tss by the caller) to the running means: the cross term of Chan,
 * Golub & LeVeque, S += (n_a n_b / n) delta delta^T with delta = mean_b -
 * mean_a, then mean_a += delta n_b / n.  bmx/bmy are overwritten by delta.
 */
static void combine_means(kdl_spectral_state *s, size_t nb, double *bmx, double *bmy)
{
        size_t na = s->n, n = na + nb;
        double f = (double) na * (double) nb / (double) n;
        double w = (double) nb / (double) n;
        int dx = (int) s->dx, dy = (int) s->dy;

        if (na == 0) {
                memcpy(s->mx, bmx, s->dx * sizeof(double));
                if (s->dy)
                        memcpy(s->my, bmy, s->dy * sizeof(double));
                s->n = n;
                return;
        }
        for (size_t j = 0; j < s->dx; j++)
                bmx[j] -= s->mx[j];
        for (size_t j = 0; j < s->dy; j++)
                bmy[j] -= s->my[j];
        if (s->plan.method == KDL_SPECTRAL_SKETCH)
                kdl__spectral_sketch_cross(s, f, bmx);
        else
                cblas_dsyr(CblasRowMajor, CblasUpper, dx, f, bmx, 1, s->sxx, dx);
        if (dy) {
                cblas_dger(CblasRowMajor, dx, dy, f, bmx, 1, bmy, 1, s->sxy, dy);
                s->tss += f * cblas_ddot(dy, bmy, 1, bmy, 1);
        }
        for (size_t j = 0; j < s->dx; j++)
                s->mx[j] += w * bmx[j];
        for (size_t j = 0; j < s->dy; j++)
                s->my[j] += w * bmy[j];
        s->n = n;
}

int kdl_spectral_accumulate(kdl_spectral_state *s, const kdl_tensor *x, const kdl_tensor *y)
{
        size_t m, need;
        double *xc, *yc;
        int mi, dx, dy, err;

        assert(s && x);
        assert((y != NULL) == (s->dy > 0));
        if (x->ndim != 2 || x->shape[1] != s->dx)
                return kdl_error(-KDL_ESHAPE, "feature block: expected [rows, %zu], got %zu-D%s",
                                 s->dx, x->ndim, x->ndim == 2 ? " with another column count" : "");
        m = x->shape[0];
        if (y && (y->ndim != 2 || y->shape[1] != s->dy || y->shape[0] != m))
                return kdl_error(-KDL_ESHAPE, "target block: expected [%zu, %zu]", m, s->dy);
        if (m == 0)
                return 0;
        err = kdl__blas_int(m, &mi);
        if (err < 0)
                return err;
        dx = (int) s->dx;
        dy = (int) s->dy;
        if (s->plan.method == KDL_SPECTRAL_EXACT_GRAM)
                return kdl__spectral_gram_accumulate(s, x);

        if (m > s->work_rows) {
                double *w;

                /* The sketch's Z_b Omega [m, k] follows the block. */
                err = kdl_mul_size(m, s->dx + s->dy + s->k, &need);
                if (err < 0)
                        return err;
                w = kdl__malloc(need, sizeof(double));
                if (!w)
                        return -ENOMEM;
                free(s->work);
                s->work = w;
                s->work_rows = m;
        }
        xc = s->work;
        yc = s->work + m * s->dx;
        err = kdl__spectral_copy_centred(x, s->flags & KDL_SPECTRAL_CENTER_ROWS_X, "feature", xc,
                                         s->bmx);
        if (err < 0)
                return err;
        if (y) {
                err = kdl__spectral_copy_centred(y, s->flags & KDL_SPECTRAL_CENTER_ROWS_Y, "target",
                                                 yc, s->bmy);
                if (err < 0)
                        return err;
        }

        /* Nothing fails from here on: the state changes only now. */
        if (s->plan.method == KDL_SPECTRAL_SKETCH) {
                kdl__spectral_sketch_block(s, xc, m, yc);
                combine_means(s, m, s->bmx, s->bmy);
                return 0;
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, dx, mi, 1.0, xc, dx, 1.0, s->sxx, dx);
        if (y) {
                size_t my = m * s->dy;

                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, dx, dy, mi, 1.0, xc, dx, yc,
                            dy, 1.0, s->sxy, dy);
                for (size_t k = 0; k < my; k++)
                        s->tss += yc[k] * yc[k];
        }
        combine_means(s, m, s->bmx, s->bmy);
        return 0;
}

int kdl_spectral_merge(kdl_spectral_state *into, const kdl_spectral_state *from)
{
        assert(into && from);
        if (into->dx != from->dx || into->dy != from->dy)
                return kdl_error(-KDL_EMISMATCH, "spectral merge: [%zu | %zu] into [%zu | %zu]",
                                 from->dx, from->dy, into->dx, into->dy);
        if (into->flags != from->flags)
                return kdl_error(-KDL_EMISMATCH, "spectral merge: states centre rows differently");
        if (into->plan.method != from->plan.method ||
            (into->plan.method == KDL_SPECTRAL_SKETCH &&
             (into->k != from->k || into->plan.rank != from->plan.rank ||
              into->plan.seed != from->plan.seed)))
                return kdl_error(-KDL_EMISMATCH,
                                 "spectral merge: %s into %s (a sketch merges only with one of the "
                                 "same rank, oversample and seed)",
                                 kdl_spectral_method_name(from->plan.method),
                                 kdl_spectral_method_name(into->plan.method));
        if (from->n == 0)
                return 0;
        if (into->plan.method == KDL_SPECTRAL_EXACT_GRAM)
                return kdl__spectral_gram_merge(into, from);
        if (into->plan.method == KDL_SPECTRAL_SKETCH) {
                /* Same Omega: the sketches add like the scatters they sketch. */
                cblas_daxpy((int) (into->dx * into->k), 1.0, from->ys, 1, into->ys, 1);
                into->trace += from->trace;
                memcpy(into->bmx, from->mx, into->dx * sizeof(double));
                combine_means(into, from->n, into->bmx, into->bmy);
                return 0;
        }

        /* Sizes were checked against the BLAS integer at kdl_spectral_state_new(). */
        cblas_daxpy((int) (into->dx * into->dx), 1.0, from->sxx, 1, into->sxx, 1);
        if (into->dy) {
                cblas_daxpy((int) (into->dx * into->dy), 1.0, from->sxy, 1, into->sxy, 1);
                into->tss += from->tss;
        }
        memcpy(into->bmx, from->mx, into->dx * sizeof(double));
        if (into->dy)
                memcpy(into->bmy, from->my, into->dy * sizeof(double));
        combine_means(into, from->n, into->bmx, into->bmy);
        return 0;
}

int kdl__spectral_check_rtol(double rtol)
{
        if (!(rtol >= 0.0) || !isfinite(rtol))
                return kdl_error(-KDL_ERANGE, "rank tolerance %g is not a finite value >= 0", rtol);
        return 0;
}

int kdl_spectral_summarize(const double *lambda, size_t d, double rank_rtol,
                           kdl_spectral_summary *ret)
{
        kdl_spectral_summary r = {.rank_rtol = rank_rtol};
        const double q[3] = {0.90, 0.95, 0.99};
        size_t *dims[3] = {&r.dims90, &r.dims95, &r.dims99};
        double lmax = 0.0, total = 0.0, sq = 0.0, h = 0.0, cum = 0.0;
        size_t next = 0;
        int err;

        assert(lambda || d == 0);
        assert(ret);
        err = kdl__spectral_check_rtol(rank_rtol);
        if (err < 0)
                return err;
        for (size_t k = 0; k < d; k++) {
                if (!isfinite(lambda[k]))
                        return kdl_error(-KDL_ENONFINITE, "eigenvalue %zu is NaN or Inf", k);
                lmax = fmax(lmax, lambda[k]);
        }
        if (lmax > 0.0) {
                /* Sum from the smallest (the tail) for accuracy; scale by the
                 * largest so that squares neither overflow nor underflow. */
                for (size_t k = d; k-- > 0;) {
                        double l = fmax(lambda[k], 0.0) / lmax;

                        total += l;
                        sq += l * l;
                        if (lambda[k] > rank_rtol * lmax)
                                r.rank++;
                }
                for (size_t k = 0; k < d; k++) {
                        double p = fmax(lambda[k], 0.0) / lmax / total;

                        if (p > 0.0)
                                h -= p * log(p);
                        cum += fmax(lambda[k], 0.0) / lmax;
                        while (next < 3 && cum >= q[next] * total)
                                *dims[next++] = k + 1;
                }
                /* Rounding can leave cum a hair below q * total at the end. */
                while (next < 3)
                        *dims[next++] = d;
                r.total = total * lmax;
                r.effective_rank = exp(h);
                r.participation_ratio = total * total / sq;
        }
        *ret = r;
        return 0;
}

/* Ridge quantities at one lambda from the eigenvalues s_i of Sxx and the
 * squared norms q_i of the rows of V^T Sxy (see the header).  Eigenvalues at
 * or below cut are left out (the pseudo-inverse for lambda = 0). */
static kdl_spectral_ridge ridge_at(const double *s, const double *q, size_t d, size_t n, double tss,
                                   double lambda, double cut)
{
        kdl_spectral_ridge r = {.lambda = lambda, .tss = tss};
        double expl = 0.0, df = 0.0, den, nn = (double) n;

        for (size_t i = 0; i < d; i++) {
                double si = s[i], t = si + lambda;

                if (si <= cut || t <= 0.0)
                        continue;
                expl += q[i] * (si + 2.0 * lambda) / (t * t);
                df += si / t;
        }
        r.df = df;
        /* tss - expl cancels when the fit is near perfect; it cannot be negative. */
        r.rss = fmax(tss - expl, 0.0);
        den = 1.0 - (1.0 + df) / nn;
        r.gcv = den > 0.0 ? r.rss / nn / (den * den) : HUGE_VAL;
        r.r2 = tss > 0.0 ? 1.0 - r.rss / tss : (double) NAN;
        r.r2_gcv = tss > 0.0 ? 1.0 - nn * r.gcv / tss : (double) NAN;
        return r;
}

static kdl_spectral_ridge ridge_gcv(const double *s, const double *q, size_t d, size_t n,
                                    double tss, double s1)
{
        const double step = (GRID_HI - GRID_LO) / GRID_STEPS;
        const double g = 0.5 * (sqrt(5.0) - 1.0);
        kdl_spectral_ridge best, r;
        double a, b, c1, c2, f1, f2;
        int kbest = GRID_STEPS;

        if (!(s1 > 0.0)) {
                /* No variance in X: nothing to regress on, every lambda fits 0. */
                best = ridge_at(s, q, d, n, tss, 0.0, 0.0);
                best.by_gcv = true;
                return best;
        }
        best = ridge_at(s, q, d, n, tss, s1 * pow(10.0, GRID_HI), -1.0);
        for (int k = 0; k < GRID_STEPS; k++) {
                r = ridge_at(s, q, d, n, tss, s1 * pow(10.0, GRID_LO + k * step), -1.0);
                if (r.gcv < best.gcv) {
                        best = r;
                        kbest = k;
                }
        }
        /* Golden-section search on log10(lambda / s1) between the neighbours
         * of the best grid point; GCV is smooth there. */
        a = GRID_LO + (kbest > 0 ? kbest - 1 : 0) * step;
        b = GRID_LO + (kbest < GRID_STEPS ? kbest + 1 : GRID_STEPS) * step;
        c1 = b - g * (b - a);
        c2 = a + g * (b - a);
        f1 = ridge_at(s, q, d, n, tss, s1 * pow(10.0, c1), -1.0).gcv;
        f2 = ridge_at(s, q, d, n, tss, s1 * pow(10.0, c2), -1.0).gcv;
        for (int it = 0; it < GOLDEN_ITER; it++) {
                if (f1 <= f2) {
                        b = c2;
                        c2 = c1;
                        f2 = f1;
                        c1 = b - g * (b - a);
                        f1 = ridge_at(s, q, d, n, tss, s1 * pow(10.0, c1), -1.0).gcv;
                } else {
                        a = c1;
                        c1 = c2;
                        f1 = f2;
                        c2 = a + g * (b - a);
                        f2 = ridge_at(s, q, d, n, tss, s1 * pow(10.0, c2), -1.0).gcv;
                }
        }
        r = ridge_at(s, q, d, n, tss, s1 * pow(10.0, 0.5 * (a + b)), -1.0);
        if (r.gcv < best.gcv)
                best = r;
        best.by_gcv = true;
        return best;
}

/* The eigendecomposition of Sxx: @a [dx, dx] its eigenvectors (column-major,
 * only when there is a target), @w its ascending eigenvalues clamped at 0,
 * @eig those of the covariance Sxx / (n - 1), descending. */
static int covariance_eigen(const kdl_spectral_state *s, double *a, double *w, double *eig)
{
        size_t dx = s->dx;
        int info;

        /* The row-major upper triangle is the column-major lower triangle:
         * LAPACKE then works in place, without a transposed copy. */
        memcpy(a, s->sxx, dx * dx * sizeof(double));
        info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, s->dy ? 'V' : 'N', 'L', (int) dx, a, (int) dx, w);
        assert(info >= 0);
        if (info > 0)
                return kdl_error(-KDL_ENOCONV, "spectrum: dsyevd did not converge (info %d)", info);
        /* w is ascending scatter eigenvalues; rounding can make the smallest
         * slightly negative. */
        for (size_t i = 0; i < dx; i++) {
                w[i] = fmax(w[i], 0.0);
                eig[dx - 1 - i] = w[i] / (double) (s->n - 1);
        }
        return 0;
}

void kdl__spectral_tail_curve(kdl_spectral_result *r)
{
        size_t dx = r->d;
        double t = 0.0, total;

        if (!(r->sum.total > 0.0))
                return;
        /* Tail sums from the smallest; their total is the reference so
         * that tail[0] is exactly 1. */
        for (size_t k = dx; k-- > 0;) {
                r->tail[k + 1] = t;
                t += r->eig[k];
        }
        total = t;
        for (size_t k = 1; k <= dx; k++)
                r->tail[k] /= total;
        r->tail[0] = 1.0;
}

/* The ridge fit of Y from X into r->ridge, from the eigenvectors @a
 * (column-major) and ascending eigenvalues @w of Sxx. */
static int ridge_fit(const kdl_spectral_state *s, const kdl_spectral_opts *opt, const double *a,
                     const double *w, kdl_spectral_result *r)
{
        size_t dx = s->dx, dy = s->dy;
        double s1 = w[dx - 1], *qm, *q;
        int err = -ENOMEM;

        /* Column-major eigenvectors: row j of a (row-major) is the
         * eigenvector of w[j], so Q = V^T Sxy is a (dx x dx) Sxy. */
        qm = kdl__malloc(dx * dy, sizeof(double));
        q = kdl_new(double, dx);
        if (!qm || !q)
                goto out;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) dx, (int) dy, (int) dx, 1.0, a,
                    (int) dx, s->sxy, (int) dy, 0.0, qm, (int) dy);
        for (size_t i = 0; i < dx; i++)
                q[i] = cblas_ddot((int) dy, qm + i * dy, 1, qm + i * dy, 1);
        r->has_ridge = true;
        if (opt->ridge_lambda >= 0.0 && isfinite(opt->ridge_lambda))
                r->ridge = ridge_at(w, q, dx, s->n, s->tss, opt->ridge_lambda,
                                    opt->ridge_lambda > 0.0 ? -1.0 : opt->rank_rtol * s1);
        else
                r->ridge = ridge_gcv(w, q, dx, s->n, s->tss, s1);
        err = 0;
out:
        free(q);
        free(qm);
        return err;
}

void kdl_spectral_opts_init(kdl_spectral_opts *o)
{
        assert(o);
        *o = (kdl_spectral_opts){.rank_rtol = KDL_SPECTRAL_RANK_RTOL, .ridge_lambda = -1.0};
}

int kdl_spectral_finalize(const kdl_spectral_state *s, const kdl_spectral_opts *opt,
                          kdl_spectral_result **ret)
{
        kdl_spectral_result *r = NULL;
        double *a = NULL, *w = NULL;
        size_t dx;
        int err;

        assert(s && opt && ret);
        dx = s->dx;
        if (s->n == 0)
                return kdl_error(-KDL_EMISSING, "spectrum: no samples");
        if (s->n < 2)
                return kdl_error(-KDL_ESHAPE, "spectrum: 1 sample, need at least 2");
        err = kdl__spectral_check_rtol(opt->rank_rtol);
        if (err < 0)
                return err;

        err = -ENOMEM;
        r = kdl_new(kdl_spectral_result, 1);
        if (!r)
                goto out;
        r->n = s->n;
        r->d = dx;
        r->method = s->plan.method;
        r->neig = dx;
        r->eig = kdl_new(double, dx);
        r->tail = kdl_new(double, dx + 1);
        if (!r->eig || !r->tail)
                goto out;
        if (s->plan.method == KDL_SPECTRAL_SKETCH) {
                err = kdl__spectral_sketch_finalize(s, r);
                r->sum.rank_rtol = opt->rank_rtol;
                goto done;
        }
        if (s->plan.method == KDL_SPECTRAL_EXACT_GRAM) {
                r->neig = s->n < dx ? s->n : dx;
                err = kdl__spectral_gram_eigen(s, r->eig);
        } else {
                a = kdl__malloc(dx * dx, sizeof(double));
                w = kdl_new(double, dx);
                if (!a || !w)
                        goto out;
                err = covariance_eigen(s, a, w, r->eig);
        }
        if (err < 0)
                goto out;
        err = kdl_spectral_summarize(r->eig, dx, opt->rank_rtol, &r->sum);
        if (err < 0)
                goto out;
        kdl__spectral_tail_curve(r);
        if (s->dy) {
                err = ridge_fit(s, opt, a, w, r);
                if (err < 0)
                        goto out;
        }
        err = 0;
done:
        if (err == 0) {
                *ret = r;
                r = NULL;
        }
out:
        free(w);
        free(a);
        kdl_spectral_result_free(r);
        return err;
}

void kdl_spectral_result_free(kdl_spectral_result *r)
{
        if (!r)
                return;
        free(r->tail_lo);
        free(r->eig_hi);
        free(r->tail);
        free(r->eig);
        free(r);
}

int kdl_spectral_verdict(const kdl_spectral_result *logits, size_t d_s, double r2, double tolerance,
                         kdl_spectral_verdict_result *ret)
{
        kdl_spectral_verdict_result v = {.realised = !isnan(r2)};
        const double *lo;
        size_t c;

        assert(logits && ret);
        if (!(tolerance >= 0.0 && tolerance <= 1.0))
                return kdl_error(-KDL_ERANGE, "tolerance %g is not in [0, 1]", tolerance);
        if (isinf(r2))
                return kdl_error(-KDL_ERANGE, "R^2 %g is not finite", r2);
        c = logits->d;
        lo = logits->tail_lo ? logits->tail_lo : logits->tail;
        /* tail[c] = 0, so the search ends by d = C. */
        while (v.d_needed < c && logits->tail[v.d_needed] > tolerance)
                v.d_needed++;
        while (v.d_needed_lo < c && lo[v.d_needed_lo] > tolerance)
                v.d_needed_lo++;
        v.residual = logits->tail[d_s < c ? d_s : c];
        v.residual_lo = lo[d_s < c ? d_s : c];
        /* From bounds: the true d_needed is in [d_needed_lo, d_needed]. */
        if (d_s < v.d_needed_lo)
                v.fails |= KDL_DIMS_ARCHITECTURAL;
        else if (d_s < v.d_needed)
                v.unresolved = true;
        if (v.realised && r2 < 1.0 - tolerance)
                v.fails |= KDL_DIMS_REALISED;
        *ret = v;
        return 0;
}
