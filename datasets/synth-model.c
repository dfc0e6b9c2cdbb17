/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "loaders/h5write.h"
#include "datasets/synth.h"
#include "datasets/synth-internal.h"
#include "metrics/base/banned.h"

/*
 * The planted structure of the synthetic dumps (datasets/synth.h): the
 * model's parameters (class means, latent loadings, planted-rank
 * embeddings, student projections, heads, labels) and the samples drawn
 * from it, one block of rows at a time.
 */

/* ---- The model -------------------------------------------------------------- */

void kdl__synth_model_release(struct kdl__synth_model *m)
{
        for (size_t l = 0; l < KDL_SYNTH_MAX_LAYERS; l++) {
                free(m->t[l].means);
                free(m->t[l].mix);
                free(m->t[l].embed);
                free(m->s[l].proj);
        }
        for (size_t k = 0; k < KDL_SYNTH_MAX_CHECKPOINTS; k++) {
                free(m->sw[k]);
                free(m->sb[k]);
        }
        free(m->tw);
        free(m->tb);
        free(m->labels);
        free(m->perm);
}

static double *normals(uint64_t seed, enum kdl__synth_param p, uint64_t b, size_t n, double scale)
{
        double *x = kdl__malloc(n, sizeof(*x));
        struct kdl__synth_rng r;

        if (x) {
                kdl__synth_rng_init(&r, seed, STREAM_PARAM, p, b);
                kdl__synth_rng_fill_normal(&r, x, n, scale);
        }
        return x;
}

/* Orthonormalise the @rows rows of @a (rows x cols, rows <= cols) in place
 * by modified Gram-Schmidt, twice for stability.  Random Gaussian rows are
 * independent with probability one; a degenerate row is left at zero. */
static void orthonormalise_rows(double *a, size_t rows, size_t cols)
{
        for (int pass = 0; pass < 2; pass++) {
                for (size_t i = 0; i < rows; i++) {
                        double *ai = a + i * cols, nrm;

                        for (size_t j = 0; j < i; j++) {
                                const double *aj = a + j * cols;
                                double d = 0.0;

                                for (size_t k = 0; k < cols; k++)
                                        d += ai[k] * aj[k];
                                for (size_t k = 0; k < cols; k++)
                                        ai[k] -= d * aj[k];
                        }
                        nrm = 0.0;
                        for (size_t k = 0; k < cols; k++)
                                nrm += ai[k] * ai[k];
                        nrm = sqrt(nrm);
                        for (size_t k = 0; k < cols; k++)
                                ai[k] = nrm > 0.0 ? ai[k] / nrm : 0.0;
                }
        }
}

/* The S x D projection of student layer @j: orthonormal rows when S <= D
 * (a student that is too narrow loses the rest), orthonormal columns
 * otherwise (nothing is lost). */
static int make_projection(struct kdl__synth_model *m, size_t j)
{
        size_t S = m->s[j].width, D = m->t[m->s[j].src].width;
        size_t lo = S < D ? S : D, hi = S < D ? D : S;
        double *q, *p;

        q = normals(m->o->seed, PARAM_PROJ, j, lo * hi, 1.0);
        if (!q)
                return -ENOMEM;
        orthonormalise_rows(q, lo, hi);
        if (S <= D) {
                m->s[j].proj = q;
                return 0;
        }
        p = kdl__malloc(S * D, sizeof(*p));
        if (!p) {
                free(q);
                return -ENOMEM;
        }
        for (size_t a = 0; a < S; a++) /* p = q^T, q is D x S */
                for (size_t b = 0; b < D; b++)
                        p[a * D + b] = q[b * S + a];
        free(q);
        m->s[j].proj = p;
        return 0;
}

static size_t superclasses(const struct kdl_synth_opts *o)
{
        if (o->superclasses > 0)
                return o->superclasses;
        return o->c >= 6 ? o->c / 3 : 1;
}

static int make_teacher_layer(struct kdl__synth_model *m, size_t l)
{
        const struct kdl_synth_opts *o = m->o;
        struct kdl__synth_tlayer *t = &m->t[l];
        size_t C = m->C, G = superclasses(o), r;
        double a = G < C ? o->super_share : 0.0, *sup = NULL;
        int err = -ENOMEM;

        t->width = o->teacher_widths[l];
        t->rank = o->planted_layer == l + 1 ? o->planted_rank : t->width;
        t->sep = m->L == 1 ? o->sep_last
                           : o->sep_first + (o->sep_last - o->sep_first) * (double) l /
                                                    (double) (m->L - 1);
        t->layout = LAYOUT_2D;
        t->ext = 1;
        if (o->spatial && l == 0) {
                t->layout = LAYOUT_SPATIAL;
                t->ext = o->spatial_h * o->spatial_w;
        } else if (o->tokens && l == m->L - 2) {
                t->layout = LAYOUT_TOKENS;
                t->ext = o->tokens_t;
        }
        r = t->rank;

        /* Class means: a share of a super-class centre plus a class offset,
         * so that classes of one super-class are similar (dark knowledge).
         * The offsets are drawn into the means and mixed in place: C x r
         * doubles once, not twice (260 MB each at C = 32,000, r = 1,024). */
        sup = normals(o->seed, PARAM_SUPER, l, G * r, 1.0);
        t->means = normals(o->seed, PARAM_OFFSET, l, C * r, 1.0);
        t->mix = normals(o->seed, PARAM_MIX, l, r * KDL_SYNTH_LATENT,
                         1.0 / sqrt((double) KDL_SYNTH_LATENT));
        if (!sup || !t->means || !t->mix)
                goto out;
        for (size_t c = 0; c < C; c++)
                for (size_t q = 0; q < r; q++)
                        t->means[c * r + q] =
                                a * sup[(c % G) * r + q] + sqrt(1.0 - a * a) * t->means[c * r + q];
        if (r < t->width) {
                t->embed = normals(o->seed, PARAM_EMBED, l, t->width * r, 1.0 / sqrt((double) r));
                if (!t->embed)
                        goto out;
        }
        err = 0;
out:
        free(sup);
        return err;
}

/* Class c's mean feature of teacher layer @t, width D, into @mu. */
static void class_mean(const struct kdl__synth_tlayer *t, size_t c, double *mu)
{
        const double *mc = t->means + c * t->rank;

        if (!t->embed) {
                for (size_t q = 0; q < t->rank; q++)
                        mu[q] = t->sep * mc[q];
                return;
        }
        for (size_t d = 0; d < t->width; d++) {
                double s = 0.0;

                for (size_t q = 0; q < t->rank; q++)
                        s += t->embed[d * t->rank + q] * mc[q];
                mu[d] = t->sep * s;
        }
}

static int make_heads(struct kdl__synth_model *m)
{
        const struct kdl_synth_opts *o = m->o;
        const struct kdl__synth_tlayer *pen = &m->t[m->L - 1];
        size_t C = m->C, D = pen->width, S = m->s[m->Ls - 1].width;
        const double *P = m->s[m->Ls - 1].proj;
        double *mu = NULL, *wp = NULL, rms = 0.0;
        int err = -ENOMEM;

        m->tw = kdl__malloc(C * D, sizeof(double));
        m->tb = normals(o->seed, PARAM_TBIAS, 0, C, 0.1);
        mu = kdl__malloc(D, sizeof(double));
        wp = kdl__malloc(C * S, sizeof(double));
        if (!m->tw || !m->tb || !mu || !wp)
                goto out;

        /* W[c] = scale * mu_c / |mu_c|^2 puts the target logit near @scale
         * and a same-super-class logit near scale * super_share^2. */
        for (size_t c = 0; c < C; c++) {
                double nrm2 = 0.0;

                class_mean(pen, c, mu);
                for (size_t d = 0; d < D; d++)
                        nrm2 += mu[d] * mu[d];
                for (size_t d = 0; d < D; d++)
                        m->tw[c * D + d] = kdl_h5w_round(
                                nrm2 > 0.0 ? o->logit_scale * mu[d] / nrm2 : 0.0, o->dtype);
        }
        for (size_t c = 0; c < C; c++)
                m->tb[c] = kdl_h5w_round(m->tb[c], o->dtype);

        /* The student's head reads the teacher's head through its projection:
         * W P^T (C x S). */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) C, (int) S, (int) D, 1.0, m->tw,
                    (int) D, P, (int) D, 0.0, wp, (int) S);
        for (size_t i = 0; i < C * S; i++)
                rms += wp[i] * wp[i];
        rms = sqrt(rms / (double) (C * S));
        for (size_t k = 0; k < m->K; k++) {
                double mk = m->mixk[k];

                m->sw[k] = normals(o->seed, PARAM_SHEAD, k, C * S, (1.0 - mk) * rms);
                m->sb[k] = kdl__malloc(C, sizeof(double));
                if (!m->sw[k] || !m->sb[k])
                        goto out;
                for (size_t i = 0; i < C * S; i++)
                        m->sw[k][i] = kdl_h5w_round(wp[i] + m->sw[k][i], o->dtype);
                for (size_t c = 0; c < C; c++)
                        m->sb[k][c] = kdl_h5w_round(mk * m->tb[c], o->dtype);
        }
        err = 0;
out:
        free(wp);
        free(mu);
        return err;
}

/* Balanced labels (i mod C), shuffled; and the student's row order. */
static int make_labels(struct kdl__synth_model *m)
{
        struct kdl__synth_rng r;

        m->labels = kdl__malloc(m->N, sizeof(int64_t));
        if (!m->labels)
                return -ENOMEM;
        for (size_t i = 0; i < m->N; i++)
                m->labels[i] = (int64_t) (i % m->C);
        kdl__synth_rng_init(&r, m->o->seed, STREAM_LABELS, 0, 0);
        for (size_t i = m->N - 1; i > 0; i--) { /* Fisher-Yates */
                size_t j = (size_t) kdl__synth_rng_below(&r, (uint64_t) i + 1);
                int64_t t = m->labels[i];

                m->labels[i] = m->labels[j];
                m->labels[j] = t;
        }
        if (!m->o->permute_student)
                return 0;
        m->perm = kdl__malloc(m->N, sizeof(size_t));
        if (!m->perm)
                return -ENOMEM;
        for (size_t i = 0; i < m->N; i++)
                m->perm[i] = i;
        kdl__synth_rng_init(&r, m->o->seed, STREAM_PERM, 0, 0);
        for (size_t i = m->N - 1; i > 0; i--) {
                size_t j = (size_t) kdl__synth_rng_below(&r, (uint64_t) i + 1);
                size_t t = m->perm[i];

                m->perm[i] = m->perm[j];
                m->perm[j] = t;
        }
        return 0;
}

int kdl__synth_model_init(struct kdl__synth_model *m, const struct kdl_synth_opts *o)
{
        int err;

        memset(m, 0, sizeof(*m));
        m->o = o;
        m->L = o->teacher_nlayers;
        m->Ls = o->student_nlayers;
        m->K = o->ncheckpoints;
        m->C = o->c;
        m->N = o->n;
        for (size_t k = 0; k < m->K; k++)
                m->mixk[k] =
                        m->K == 1 ? o->mix_final : o->mix_final * (double) k / (double) (m->K - 1);

        /* Whole chunks per block, so that compressed chunks are written once. */
        m->block = o->block_rows;
        if (m->block == 0) {
                m->block = 256;
                if (o->chunk_rows > 0 && o->chunk_rows <= 4096)
                        m->block = o->chunk_rows * ((256 + o->chunk_rows - 1) / o->chunk_rows);
        }
        if (m->block > m->N)
                m->block = m->N;

        for (size_t l = 0; l < m->L; l++) {
                err = make_teacher_layer(m, l);
                if (err < 0)
                        return err;
        }
        for (size_t j = 0; j < m->Ls; j++) {
                m->s[j].width = o->student_widths[j];
                m->s[j].src = ((j + 1) * m->L + m->Ls - 1) / m->Ls - 1; /* ceil - 1 */
                err = make_projection(m, j);
                if (err < 0)
                        return err;
        }
        err = make_heads(m);
        if (err < 0)
                return err;
        return make_labels(m);
}

/* ---- Generating blocks ------------------------------------------------------ */

void kdl__synth_work_release(struct kdl__synth_work *w)
{
        for (size_t l = 0; l < KDL_SYNTH_MAX_LAYERS; l++) {
                free(w->h[l]);
                free(w->ph[l]);
        }
        free(w->u);
        free(w->z);
        free(w->hs);
        free(w->q);
        free(w->logits);
        free(w->grad);
        free(w->gfeat);
        free(w->noise);
        free(w->ints);
        free(w->idx);
}

static size_t max_size(size_t a, size_t b)
{
        return a > b ? a : b;
}

int kdl__synth_work_init(struct kdl__synth_work *w, const struct kdl__synth_model *m)
{
        size_t B = m->block, maxr = 1, maxs = 1, maxq = m->C, maxn = 1, gw;

        memset(w, 0, sizeof(*w));
        w->rows = B;
        for (size_t l = 0; l < m->L; l++) {
                size_t stored;

                maxr = max_size(maxr, m->t[l].rank);
                if (kdl_mul_size(m->t[l].width, m->t[l].ext, &stored) < 0)
                        return -KDL_EOVERFLOW;
                maxq = max_size(maxq, stored);
                if (m->t[l].ext > 1)
                        maxn = max_size(maxn, stored);
                w->h[l] = kdl__malloc(B, m->t[l].width * sizeof(double));
                if (!w->h[l])
                        return -ENOMEM;
        }
        for (size_t j = 0; j < m->Ls; j++) {
                maxs = max_size(maxs, m->s[j].width);
                maxq = max_size(maxq, m->s[j].width);
                w->ph[j] = kdl__malloc(B, m->s[j].width * sizeof(double));
                if (!w->ph[j])
                        return -ENOMEM;
        }
        gw = max_size(m->t[m->L - 1].width, m->s[m->Ls - 1].width);
        w->u = kdl__malloc(B, KDL_SYNTH_LATENT * sizeof(double));
        w->z = kdl__malloc(B, maxr * sizeof(double));
        w->hs = kdl__malloc(B, maxs * sizeof(double));
        w->q = kdl__malloc(B, maxq * sizeof(double));
        w->logits = kdl__malloc(B, m->C * sizeof(double));
        w->noise = kdl__malloc(maxn, sizeof(double));
        w->ints = kdl__malloc(B, sizeof(int64_t));
        w->idx = kdl__malloc(B, sizeof(size_t));
        if (!w->u || !w->z || !w->hs || !w->q || !w->logits || !w->noise || !w->ints || !w->idx)
                return -ENOMEM;
        if (!m->o->gradients)
                return 0;
        w->grad = kdl__malloc(B, m->C * sizeof(double));
        w->gfeat = kdl__malloc(B, gw * sizeof(double));
        return w->grad && w->gfeat ? 0 : -ENOMEM;
}

/* Teacher features (before rounding to the store) of samples w->idx[0..B). */
void kdl__synth_gen_teacher(const struct kdl__synth_model *m, struct kdl__synth_work *w, size_t B)
{
        const struct kdl_synth_opts *o = m->o;
        struct kdl__synth_rng r;

        for (size_t b = 0; b < B; b++) {
                kdl__synth_rng_init(&r, o->seed, STREAM_LATENT, w->idx[b], 0);
                kdl__synth_rng_fill_normal(&r, w->u + b * KDL_SYNTH_LATENT, KDL_SYNTH_LATENT, 1.0);
        }
        for (size_t l = 0; l < m->L; l++) {
                const struct kdl__synth_tlayer *t = &m->t[l];
                size_t R = t->rank, D = t->width;
                double *z = t->embed ? w->z : w->h[l];

                /* z = u B^T + sep * M[y] + noise * e */
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) B, (int) R,
                            KDL_SYNTH_LATENT, 1.0, w->u, KDL_SYNTH_LATENT, t->mix, KDL_SYNTH_LATENT,
                            0.0, z, (int) R);
                for (size_t b = 0; b < B; b++) {
                        size_t i = w->idx[b];
                        const double *mc = t->means + (size_t) m->labels[i] * R;
                        double *zb = z + b * R;

                        kdl__synth_rng_init(&r, o->seed, STREAM_TNOISE, i, l);
                        for (size_t q = 0; q < R; q++)
                                zb[q] += t->sep * mc[q] + o->noise * kdl__synth_rng_normal(&r);
                }
                if (!t->embed)
                        continue;
                /* Planted rank: h = A z plus a trace of full-rank noise. */
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) B, (int) D, (int) R, 1.0,
                            z, (int) R, t->embed, (int) R, 0.0, w->h[l], (int) D);
                for (size_t b = 0; b < B; b++) {
                        double *hb = w->h[l] + b * D;

                        kdl__synth_rng_init(&r, o->seed, STREAM_TTINY, w->idx[b], l);
                        for (size_t d = 0; d < D; d++)
                                hb[d] += 1e-6 * o->noise * kdl__synth_rng_normal(&r);
                }
        }
}

/* Round @n values of @x to the store into @q. */
void kdl__synth_round_into(double *q, const double *x, size_t n, enum kdl_store store)
{
        for (size_t i = 0; i < n; i++)
                q[i] = kdl_h5w_round(x[i], store);
}

/*
 * The stored rows of teacher layer @l: [D, H*W] or [T, D] per sample, the
 * feature plus zero-mean noise over the spatial positions (or tokens), so
 * that the spatial (token) average is the feature again.
 */
void kdl__synth_spread(const struct kdl__synth_model *m, struct kdl__synth_work *w, size_t l,
                       size_t B)
{
        const struct kdl__synth_tlayer *t = &m->t[l];
        size_t D = t->width, E = t->ext;
        struct kdl__synth_rng r;

        for (size_t b = 0; b < B; b++) {
                const double *h = w->h[l] + b * D;
                double *q = w->q + b * D * E;

                kdl__synth_rng_init(&r, m->o->seed, STREAM_TSHAPE, w->idx[b], l);
                kdl__synth_rng_fill_normal(&r, w->noise, D * E, m->o->noise);
                for (size_t d = 0; d < D; d++) {
                        double mean = 0.0;

                        for (size_t p = 0; p < E; p++)
                                mean += t->layout == LAYOUT_SPATIAL ? w->noise[d * E + p]
                                                                    : w->noise[p * D + d];
                        mean /= (double) E;
                        for (size_t p = 0; p < E; p++) {
                                size_t at = t->layout == LAYOUT_SPATIAL ? d * E + p : p * D + d;

                                q[at] = kdl_h5w_round(h[d] + (w->noise[at] - mean), m->o->dtype);
                        }
                }
        }
}

void kdl__synth_head_outputs(const struct kdl__synth_model *m, struct kdl__synth_work *w,
                             const double *W, const double *bias, size_t D, const double *hq,
                             size_t B)
{
        enum kdl_store st = m->o->dtype;
        size_t C = m->C;

        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) B, (int) C, (int) D, 1.0, hq,
                    (int) D, W, (int) D, 0.0, w->logits, (int) C);
        for (size_t b = 0; b < B; b++) {
                double *z = w->logits + b * C, *g = w->grad + b * C, mx, sum = 0.0;

                for (size_t c = 0; c < C; c++)
                        z[c] = kdl_h5w_round(z[c] + bias[c], st);
                if (!m->o->gradients)
                        continue;
                mx = z[0];
                for (size_t c = 1; c < C; c++)
                        mx = z[c] > mx ? z[c] : mx;
                for (size_t c = 0; c < C; c++) {
                        g[c] = exp(z[c] - mx);
                        sum += g[c];
                }
                for (size_t c = 0; c < C; c++)
                        g[c] /= sum;
                g[m->labels[w->idx[b]]] -= 1.0;
                for (size_t c = 0; c < C; c++)
                        g[c] = kdl_h5w_round(g[c], st);
        }
        if (!m->o->gradients)
                return;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) B, (int) D, (int) C, 1.0,
                    w->grad, (int) C, W, (int) D, 0.0, w->gfeat, (int) D);
        kdl__synth_round_into(w->gfeat, w->gfeat, B * D, st);
}

void kdl__synth_gen_student_proj(const struct kdl__synth_model *m, struct kdl__synth_work *w,
                                 size_t B)
{
        for (size_t j = 0; j < m->Ls; j++) {
                const struct kdl__synth_slayer *s = &m->s[j];
                size_t D = m->t[s->src].width;

                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) B, (int) s->width,
                            (int) D, 1.0, w->h[s->src], (int) D, s->proj, (int) D, 0.0, w->ph[j],
                            (int) s->width);
        }
}

/* h_s = m_k P_j h_t + (1 - m_k) noise e_{j,k}, as stored. */
void kdl__synth_gen_student(const struct kdl__synth_model *m, struct kdl__synth_work *w, size_t j,
                            size_t k, size_t B)
{
        const struct kdl_synth_opts *o = m->o;
        double mk = m->mixk[k];
        size_t S = m->s[j].width;
        struct kdl__synth_rng r;

        for (size_t b = 0; b < B; b++) {
                const double *ph = w->ph[j] + b * S;
                double *q = w->q + b * S;

                kdl__synth_rng_init(&r, o->seed, STREAM_SNOISE, w->idx[b], ((uint64_t) j << 8) | k);
                for (size_t d = 0; d < S; d++)
                        q[d] = kdl_h5w_round(mk * ph[d] + (1.0 - mk) * o->noise *
                                                                  kdl__synth_rng_normal(&r),
                                             o->dtype);
        }
}
