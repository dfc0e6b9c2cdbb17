/* SPDX-License-Identifier: MIT */
/*
 * CCA, SVCCA, PWCCA and the orthogonal Procrustes distance from centred cross-products
 * (metrics/similarity.h).  Each layer is eigendecomposed once (dsyevd); a pair then costs
 * two products, the SVD of the r_a x r_b whitened cross-product (with the singular vectors
 * of the side PWCCA weights), that of its SVCCA corner and the singular values of S_ab.
 */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/similarity.h"
#include "metrics/base/banned.h"

#define DEFAULT_RTOL       1e-10
#define DEFAULT_SVCCA_KEEP 0.99
/* What needs the whitening W and the eigenvectors. */
#define CCA_FAMILY (KDL_SIMILARITY_CCA | KDL_SIMILARITY_SVCCA | KDL_SIMILARITY_PWCCA)

struct kdl_similarity_layer {
        unsigned what;  /* KDL_SIMILARITY_* */
        size_t d, r, k; /* width, rank after the cut, SVCCA's directions */
        double trace;   /* tr S: the sum of every eigenvalue */
        double *wt;     /* [r*d] rows e_i / √λ_i: Wᵀ, the whitening */
        double *zt;     /* [r*d] rows √λ_i e_i: S w_i, a variate's products with the neurons */
};

void kdl_similarity_opts_init(struct kdl_similarity_opts *o)
{
        *o = (struct kdl_similarity_opts){
                .rtol = DEFAULT_RTOL, .svcca_keep = DEFAULT_SVCCA_KEEP, .what = KDL_SIMILARITY_ALL};
}

size_t kdl_similarity_layer_rank(const kdl_similarity_layer *x)
{
        return x->r;
}

void kdl_similarity_layer_free(kdl_similarity_layer *x)
{
        if (!x)
                return;
        free(x->zt);
        free(x->wt);
        free(x);
}

/* The rank after the cut and SVCCA's directions, from the eigenvalues @lam descending. */
static void cut(kdl_similarity_layer *x, const double *lam, const struct kdl_similarity_opts *o)
{
        double kept = 0.0, run = 0.0;

        x->r = 0;
        if (!(lam[0] > 0.0))
                return;
        while (x->r < x->d && lam[x->r] > o->rtol * lam[0])
                kept += lam[x->r++];
        x->k = 0;
        while (x->k < x->r && run < o->svcca_keep * kept)
                run += lam[x->k++];
}

int kdl_similarity_layer_new(size_t d, const double *saa, const struct kdl_similarity_opts *opts,
                             kdl_similarity_layer **ret)
{
        struct kdl_similarity_opts o;
        kdl_similarity_layer *x = NULL;
        double *e = NULL, *w = NULL, *lam = NULL;
        size_t dd;
        int di, err, info;

        assert(saa && ret);
        if (opts)
                o = *opts;
        else
                kdl_similarity_opts_init(&o);
        if (d == 0)
                return kdl_error(-KDL_ESHAPE, "similarity: a layer of width 0");
        if (!(o.rtol >= 0.0 && o.rtol < 1.0) || !(o.svcca_keep > 0.0 && o.svcca_keep <= 1.0))
                return kdl_error(-KDL_ERANGE,
                                 "similarity: rank cut %g outside [0, 1) or SVCCA share %g "
                                 "outside (0, 1]",
                                 o.rtol, o.svcca_keep);
        err = kdl__blas_int(d, &di);
        err = err ?: kdl_mul_size(d, d, &dd);
        err = err ?: kdl__blas_int(dd, &info);
        if (err < 0)
                return err;
        x = kdl_new(kdl_similarity_layer, 1);
        e = kdl__malloc(d, d * sizeof(double));
        w = kdl_new(double, d);
        lam = kdl_new(double, d);
        if (!x || !e || !w || !lam) {
                err = -ENOMEM;
                goto out;
        }
        x->d = d;
        x->what = o.what;
        for (size_t i = 0; i < d; i++)
                for (size_t j = 0; j < d; j++) {
                        double v = 0.5 * (saa[i * d + j] + saa[j * d + i]);

                        if (!isfinite(v)) {
                                err = kdl_error(-KDL_ENONFINITE,
                                                "similarity: non-finite covariance entry");
                                goto out;
                        }
                        e[i * d + j] = v;
                        x->trace += i == j ? v : 0.0;
                }
        /* Symmetric, so row- and column-major agree; column-major output has eigenvector c
         * as column c, which read row-major is row c, in ascending order. */
        info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, o.what & CCA_FAMILY ? 'V' : 'N', 'U', di, e, di, w);
        if (info != 0) {
                err = kdl_error(-KDL_ENOCONV, "similarity: the eigensolver failed (info %d)", info);
                goto out;
        }
        for (size_t i = 0; i < d; i++)
                lam[i] = w[d - 1 - i];
        cut(x, lam, &o);
        /* Procrustes alone needs the trace and, for a constant layer, the rank. */
        x->wt = kdl__malloc(x->r && o.what & CCA_FAMILY ? x->r : 1, d * sizeof(double));
        x->zt = kdl__malloc(x->r && o.what & CCA_FAMILY ? x->r : 1, d * sizeof(double));
        if (!x->wt || !x->zt) {
                err = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < x->r && o.what & CCA_FAMILY; i++) {
                const double *ei = e + (d - 1 - i) * d;
                double s = sqrt(lam[i]);

                for (size_t c = 0; c < d; c++) {
                        x->wt[i * d + c] = ei[c] / s;
                        x->zt[i * d + c] = ei[c] * s;
                }
        }
        *ret = x;
        x = NULL;
out:
        free(lam);
        free(w);
        free(e);
        kdl_similarity_layer_free(x);
        return err;
}

int kdl_similarity_layer_sqrt(const kdl_similarity_layer *x, double *ret)
{
        size_t d = x->d;
        double *y;

        assert(x && ret);
        if (!(x->what & CCA_FAMILY))
                return kdl_error(-KDL_ESHAPE, "similarity: a layer without its eigenvectors");
        memset(ret, 0, d * d * sizeof(double));
        if (x->r == 0)
                return 0;
        y = kdl__malloc(x->r, d * sizeof(double));
        if (!y)
                return -ENOMEM;
        /* Σ √λ e eᵀ = Yᵀ Y with rows λ^(1/4) e = z / ‖z‖^(1/2), ‖z‖ = √λ. */
        for (size_t i = 0; i < x->r; i++) {
                const double *z = x->zt + i * d;
                double f = 1.0 / sqrt(cblas_dnrm2((int) d, z, 1));

                for (size_t c = 0; c < d; c++)
                        y[i * d + c] = z[c] * f;
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int) d, (int) x->r, 1.0, y, (int) d,
                    0.0, ret, (int) d);
        for (size_t i = 0; i < d; i++)
                for (size_t c = 0; c < i; c++)
                        ret[i * d + c] = ret[c * d + i];
        free(y);
        return 0;
}

/* The singular values of the row-major [m, n] @a (overwritten) into @s, with the left
 * ([m, min]) and right ([min, n]) singular vectors into @u and @vt when @u is not NULL.
 * Return: 0; -KDL_ENOCONV. */
static int svd(size_t m, size_t n, double *a, double *s, double *u, double *vt)
{
        size_t mn = m < n ? m : n;
        double one;
        int info;

        /* LAPACKE checks the leading dimensions even when nothing is written there. */
        info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, u ? 'S' : 'N', (int) m, (int) n, a, (int) n, s,
                              u ? u : &one, (int) mn, u ? vt : &one, (int) n);
        if (info != 0)
                return kdl_error(-KDL_ENOCONV, "similarity: the SVD failed (info %d)", info);
        return 0;
}

/* Morcos et al.'s weights of the @m canonical directions of layer @x, whose coordinates
 * in its kept eigenbasis are the columns of @u (r x m, row stride @ldu; @trans: the rows
 * instead, m x r), into @alpha; @h [m*d] scratch.  A direction's variate is h = X W u, and
 * its products with the neurons Xᵀh = S W u = Zᵀu. */
static void pw_weights(const kdl_similarity_layer *x, const double *u, size_t ldu, bool trans,
                       size_t m, double *h, double *alpha)
{
        double total = 0.0;

        cblas_dgemm(CblasRowMajor, trans ? CblasNoTrans : CblasTrans, CblasNoTrans, (int) m,
                    (int) x->d, (int) x->r, 1.0, u, (int) ldu, x->zt, (int) x->d, 0.0, h,
                    (int) x->d);
        for (size_t i = 0; i < m; i++) {
                alpha[i] = cblas_dasum((int) x->d, h + i * x->d, 1);
                total += alpha[i];
        }
        for (size_t i = 0; i < m; i++)
                alpha[i] /= total;
}

static double mean(const double *v, size_t n, int power)
{
        double s = 0.0;

        for (size_t i = 0; i < n; i++)
                s += power == 2 ? v[i] * v[i] : v[i];
        return s / (double) n;
}

/* The canonical correlations of the whitened @mt [ra, rb] (its copy in @c), with PWCCA
 * and SVCCA, as @what asks, into @res; @u [ra*m], @vt [m*rb], @h scratch. */
static int cca(const kdl_similarity_layer *a, const kdl_similarity_layer *b, unsigned what,
               const double *mt, double *c, double *rho, double *u, double *vt, double *h,
               struct kdl_similarity *res)
{
        size_t ra = a->r, rb = b->r, m = ra < rb ? ra : rb;
        bool left = ra <= rb; /* PWCCA weights the layer of lower rank */
        bool pw = what & KDL_SIMILARITY_PWCCA, all = a->k == ra && b->k == rb;
        int err;

        if (what & (KDL_SIMILARITY_CCA | KDL_SIMILARITY_PWCCA) ||
            (all && what & KDL_SIMILARITY_SVCCA)) {
                memcpy(c, mt, ra * rb * sizeof(double));
                err = svd(ra, rb, c, rho, pw ? u : NULL, vt);
                if (err < 0)
                        return err;
                if (what & KDL_SIMILARITY_CCA) {
                        res->cca_mean_rho = mean(rho, m, 1);
                        res->cca_mean_rho2 = mean(rho, m, 2);
                }
                /* SVCCA keeping every direction is CCA. */
                if (all && what & KDL_SIMILARITY_SVCCA)
                        res->svcca = mean(rho, m, 1);
        }
        if (pw) {
                /* c (the SVD's input, now spent) takes the weights. */
                pw_weights(left ? a : b, left ? u : vt, left ? m : rb, !left, m, h, c);
                res->pwcca = 0.0;
                for (size_t i = 0; i < m; i++)
                        res->pwcca += c[i] * rho[i];
        }
        if (all || !(what & KDL_SIMILARITY_SVCCA))
                return 0;
        /* SVCCA: the corner of the top k_a x k_b directions. */
        for (size_t i = 0; i < a->k; i++)
                memcpy(c + i * b->k, mt + i * rb, b->k * sizeof(double));
        err = svd(a->k, b->k, c, rho, NULL, NULL);
        if (err < 0)
                return err;
        res->svcca = mean(rho, a->k < b->k ? a->k : b->k, 1);
        return 0;
}

/* ν = ‖S_ab‖_* / √(tr S_aa tr S_bb) from a copy @c of @sab, singular values into @sv. */
static int procrustes(const kdl_similarity_layer *a, const kdl_similarity_layer *b,
                      const double *sab, double *c, double *sv, struct kdl_similarity *res)
{
        size_t mn = a->d < b->d ? a->d : b->d;
        double nu = 0.0;
        int err;

        memcpy(c, sab, a->d * b->d * sizeof(double));
        err = svd(a->d, b->d, c, sv, NULL, NULL);
        if (err < 0)
                return err;
        for (size_t i = 0; i < mn; i++)
                nu += sv[i];
        nu /= sqrt(a->trace * b->trace);
        res->procrustes = 2.0 - 2.0 * nu;
        /* ν <= 1 exactly; rounding may pass it by an ulp. */
        res->procrustes_angular = acos(nu < 1.0 ? nu : 1.0);
        return 0;
}

int kdl_similarity_pair(const kdl_similarity_layer *a, const kdl_similarity_layer *b,
                        const double *sab, struct kdl_similarity *ret)
{
        unsigned what = a->what & b->what;
        size_t da, db, ra, rb, big, wide;
        double *t = NULL, *mt = NULL, *c = NULL, *rho = NULL, *u = NULL, *vt = NULL, *h = NULL;
        struct kdl_similarity res = {.cca_mean_rho = NAN,
                                     .cca_mean_rho2 = NAN,
                                     .svcca = NAN,
                                     .pwcca = NAN,
                                     .procrustes = NAN,
                                     .procrustes_angular = NAN};
        int err, bi;

        assert(a && b && sab && ret);
        da = a->d;
        db = b->d;
        ra = a->r;
        rb = b->r;
        res.rank_a = ra;
        res.rank_b = rb;
        res.svcca_a = a->k;
        res.svcca_b = b->k;
        for (size_t i = 0; i < da * db; i++)
                if (!isfinite(sab[i]))
                        return kdl_error(-KDL_ENONFINITE, "similarity: non-finite cross-product");
        if (ra == 0 || rb == 0) {
                *ret = res;
                return 0;
        }
        /* ra <= da and rb <= db, so every product and array fits in da db or max(d) max(r). */
        err = kdl_mul_size(da, db, &big);
        err = err ?: kdl_mul_size(da > db ? da : db, ra > rb ? ra : rb, &wide);
        err = err ?: kdl__blas_int(big, &bi);
        err = err ?: kdl__blas_int(wide, &bi);
        if (err < 0)
                return err;
        t = kdl__malloc(da, (rb ? rb : 1) * sizeof(double));
        mt = kdl__malloc(ra, rb * sizeof(double));
        c = kdl__malloc(big, sizeof(double));
        rho = kdl__malloc(da + db + 1, sizeof(double));
        u = kdl__malloc(ra, (ra < rb ? ra : rb) * sizeof(double));
        vt = kdl__malloc(ra < rb ? ra : rb, rb * sizeof(double));
        h = kdl__malloc(ra < rb ? ra : rb, (da > db ? da : db) * sizeof(double));
        if (!t || !mt || !c || !rho || !u || !vt || !h) {
                err = -ENOMEM;
                goto out;
        }
        if (what & CCA_FAMILY) {
                /* M = W_aᵀ S_ab W_b: T = S_ab W_b [da, rb], then W_aᵀ T. */
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) da, (int) rb, (int) db,
                            1.0, sab, (int) db, b->wt, (int) db, 0.0, t, (int) rb);
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) ra, (int) rb, (int) da,
                            1.0, a->wt, (int) da, t, (int) rb, 0.0, mt, (int) rb);
                err = cca(a, b, what, mt, c, rho, u, vt, h, &res);
        }
        if (!err && what & KDL_SIMILARITY_PROCRUSTES)
                err = procrustes(a, b, sab, c, rho, &res);
        if (err >= 0)
                *ret = res;
out:
        free(h);
        free(vt);
        free(u);
        free(rho);
        free(c);
        free(mt);
        free(t);
        return err;
}
