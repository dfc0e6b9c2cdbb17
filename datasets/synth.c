/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <cblas.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/rng.h"
#include "loaders/h5write.h"
#include "datasets/synth.h"
#include "metrics/base/banned.h"

/* ---- Random numbers ------------------------------------------------------ */

/*
 * xoshiro256** (Blackman & Vigna), seeded through splitmix64, and
 * Box-Muller normals: small, self-contained and the same on every platform
 * up to libm's log/cos.  Every stream is keyed by (seed, purpose, a, b) so
 * that a sample's values do not depend on which block or file asks.
 */
struct rng {
        uint64_t s[4];
        double spare;
        bool has_spare;
};

enum stream {
        STREAM_LABELS = 1,
        STREAM_PERM,
        STREAM_PARAM,  /* a = enum param, b = layer (and checkpoint) */
        STREAM_LATENT, /* a = sample */
        STREAM_TNOISE, /* a = sample, b = teacher layer */
        STREAM_TTINY,  /* a = sample, b = teacher layer */
        STREAM_TSHAPE, /* a = sample, b = teacher layer: spatial/token noise */
        STREAM_SNOISE, /* a = sample, b = student layer << 8 | checkpoint */
};

enum param {
        PARAM_SUPER = 1, /* super-class centres */
        PARAM_OFFSET,    /* class offsets */
        PARAM_MIX,       /* latent loadings */
        PARAM_EMBED,     /* planted-rank embedding */
        PARAM_PROJ,      /* student projections */
        PARAM_TBIAS,     /* teacher head bias */
        PARAM_SHEAD,     /* student head perturbation, b = checkpoint */
};

static uint64_t splitmix64(uint64_t *x)
{
        return kdl__rng_mix64(*x += KDL_RNG_GAMMA);
}

static void rng_init(struct rng *r, uint64_t seed, enum stream kind, uint64_t a, uint64_t b)
{
        uint64_t x = kdl__rng_mix64(seed + KDL_RNG_GAMMA * (uint64_t) kind);

        x = kdl__rng_mix64(x ^ (a + 0x632be59bd9b4e019ULL));
        x = kdl__rng_mix64(x ^ (b + 0x85157af5b2c3a8d1ULL));
        for (int i = 0; i < 4; i++)
                r->s[i] = splitmix64(&x);
        r->has_spare = false;
}

static uint64_t rotl(uint64_t x, int k)
{
        return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(struct rng *r)
{
        uint64_t *s = r->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;

        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return result;
}

/* Uniform in (0, 1): never 0, so log() below is finite. */
static double rng_uniform(struct rng *r)
{
        return ((double) (rng_next(r) >> 11) + 0.5) * 0x1.0p-53;
}

/* Uniform integer in [0, n), without modulo bias. */
static uint64_t rng_below(struct rng *r, uint64_t n)
{
        uint64_t limit = UINT64_MAX - UINT64_MAX % n, x;

        do
                x = rng_next(r);
        while (x >= limit);
        return x % n;
}

static double rng_normal(struct rng *r)
{
        double u, v, rad;

        if (r->has_spare) {
                r->has_spare = false;
                return r->spare;
        }
        u = rng_uniform(r);
        v = rng_uniform(r);
        rad = sqrt(-2.0 * log(u));
        r->spare = rad * sin(2.0 * M_PI * v);
        r->has_spare = true;
        return rad * cos(2.0 * M_PI * v);
}

static void rng_fill_normal(struct rng *r, double *x, size_t n, double scale)
{
        for (size_t i = 0; i < n; i++)
                x[i] = scale * rng_normal(r);
}

/* ---- Options --------------------------------------------------------------- */

void kdl_synth_opts_init(struct kdl_synth_opts *o)
{
        static const size_t tw[] = {64, 128, 256}, sw[] = {32, 64, 128};

        memset(o, 0, sizeof(*o));
        o->n = 2000;
        o->c = 10;
        o->teacher_nlayers = 3;
        memcpy(o->teacher_widths, tw, sizeof(tw));
        o->student_nlayers = 3;
        memcpy(o->student_widths, sw, sizeof(sw));
        o->dtype = KDL_STORE_F32;
        o->chunk_rows = 256;
        o->gzip = -1;
        o->spatial_h = 4;
        o->spatial_w = 4;
        o->tokens_t = 8;
        o->sample_ids = true;
        o->ncheckpoints = 4;
        o->super_share = 0.6;
        o->seed = 1;
        o->noise = 1.0;
        o->sep_first = 0.25;
        o->sep_last = 2.0;
        o->logit_scale = 6.0;
        o->mix_final = 0.9;
}

static int usage(const char *fmt, ...) KDL_PRINTF(1, 2);

static int usage(const char *fmt, ...)
{
        char *msg = NULL;
        va_list ap;
        int err;

        va_start(ap, fmt);
        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        va_end(ap);
        err = kdl_error(-KDL_EUSAGE, "%s", msg ? msg : fmt);
        free(msg);
        return err;
}

static bool finite_in(double x, double lo, double hi)
{
        return isfinite(x) && x >= lo && x <= hi;
}

/* Bound so that every BLAS dimension and block size fits an int. */
#define MAX_BLOCK_ROWS ((size_t) 1 << 16)

int kdl_synth_check(const struct kdl_synth_opts *o)
{
        size_t L = o->teacher_nlayers;

        if (o->n < 1)
                return usage("--n must be at least 1");
        if (o->c < 2 || o->c > KDL_SYNTH_MAX_WIDTH)
                return usage("--classes %zu is not 2..%zu", o->c, KDL_SYNTH_MAX_WIDTH);
        if (L < 1 || L > KDL_SYNTH_MAX_LAYERS)
                return usage("the teacher needs 1..%d layers, not %zu", KDL_SYNTH_MAX_LAYERS, L);
        if (o->student_nlayers < 1 || o->student_nlayers > KDL_SYNTH_MAX_LAYERS)
                return usage("the student needs 1..%d layers, not %zu", KDL_SYNTH_MAX_LAYERS,
                             o->student_nlayers);
        for (size_t l = 0; l < L; l++)
                if (o->teacher_widths[l] < 1 || o->teacher_widths[l] > KDL_SYNTH_MAX_WIDTH)
                        return usage("teacher width %zu is not 1..%zu", o->teacher_widths[l],
                                     KDL_SYNTH_MAX_WIDTH);
        for (size_t j = 0; j < o->student_nlayers; j++)
                if (o->student_widths[j] < 1 || o->student_widths[j] > KDL_SYNTH_MAX_WIDTH)
                        return usage("student width %zu is not 1..%zu", o->student_widths[j],
                                     KDL_SYNTH_MAX_WIDTH);
        if (o->planted_layer > L)
                return usage("--planted-rank: layer %zu is not 1..%zu", o->planted_layer, L);
        if (o->planted_layer > 0 &&
            (o->planted_rank < 1 || o->planted_rank > o->teacher_widths[o->planted_layer - 1]))
                return usage("--planted-rank: rank %zu is not 1..%zu (the width of layer%zu)",
                             o->planted_rank, o->teacher_widths[o->planted_layer - 1],
                             o->planted_layer);
        if (o->dtype != KDL_STORE_F16 && o->dtype != KDL_STORE_F32 && o->dtype != KDL_STORE_F64)
                return usage("--dtype must be float16, float32 or float64");
        if (o->gzip < -1 || o->gzip > 9)
                return usage("--gzip %d is not 0..9", o->gzip);
        if (o->gzip >= 0 && o->chunk_rows == 0)
                return usage("--gzip needs --chunk-rows > 0");
        if (o->spatial && L < 2)
                return usage("--spatial needs a teacher with 2 or more layers (the last feeds "
                             "the head)");
        if (o->tokens && L < (o->spatial ? 3u : 2u))
                return usage("--tokens needs a teacher with %d or more layers", o->spatial ? 3 : 2);
        if (o->spatial &&
            (o->spatial_h < 1 || o->spatial_w < 1 || o->spatial_h > 1024 || o->spatial_w > 1024))
                return usage("spatial size %zux%zu is not 1..1024 each", o->spatial_h,
                             o->spatial_w);
        if (o->tokens && (o->tokens_t < 1 || o->tokens_t > 4096))
                return usage("token count %zu is not 1..4096", o->tokens_t);
        if (o->permute_student && !o->sample_ids)
                return usage("--permute-student needs sample ids");
        if (o->ncheckpoints < 1 || o->ncheckpoints > KDL_SYNTH_MAX_CHECKPOINTS)
                return usage("--checkpoints %zu is not 1..%d", o->ncheckpoints,
                             KDL_SYNTH_MAX_CHECKPOINTS);
        if (o->superclasses > o->c)
                return usage("%zu super-classes for %zu classes", o->superclasses, o->c);
        if (!finite_in(o->super_share, 0.0, 1.0) || !finite_in(o->mix_final, 0.0, 1.0))
                return usage("super-class share and final mix must be in [0, 1]");
        if (!finite_in(o->noise, 0.0, 1e6) || !finite_in(o->sep_first, 0.0, 1e6) ||
            !finite_in(o->sep_last, 0.0, 1e6) || !finite_in(o->logit_scale, 0.0, 1e6))
                return usage("noise, separations and logit scale must be in [0, 1e6]");
        if (o->sep_last <= 0.0)
                return usage("the last layer's separation must be positive");
        if (o->block_rows > MAX_BLOCK_ROWS)
                return usage("block of %zu rows is more than %zu", o->block_rows, MAX_BLOCK_ROWS);
        return 0;
}

static int parse_size(const char *s, const char **end, size_t *ret)
{
        unsigned long long v;
        char *e;

        if (!(*s >= '0' && *s <= '9'))
                return -1;
        errno = 0;
        v = strtoull(s, &e, 10);
        if (errno || v > SIZE_MAX)
                return -1;
        *end = e;
        *ret = (size_t) v;
        return 0;
}

int kdl_synth_parse_widths(const char *s, size_t *widths, size_t *ret_n)
{
        size_t w[KDL_SYNTH_MAX_LAYERS], n = 0;
        const char *p = s, *e;

        for (;;) {
                size_t v;

                if (parse_size(p, &e, &v) < 0 || v < 1 || v > KDL_SYNTH_MAX_WIDTH ||
                    (*e != ',' && *e != '\0'))
                        return usage("bad width list '%s': expected numbers in 1..%zu separated "
                                     "by commas",
                                     s, KDL_SYNTH_MAX_WIDTH);
                if (n == KDL_SYNTH_MAX_LAYERS)
                        return usage("bad width list '%s': more than %d layers", s,
                                     KDL_SYNTH_MAX_LAYERS);
                w[n++] = v;
                if (*e == '\0')
                        break;
                p = e + 1;
        }
        memcpy(widths, w, n * sizeof(w[0]));
        *ret_n = n;
        return 0;
}

int kdl_synth_parse_planted(const char *s, size_t *ret_layer, size_t *ret_rank)
{
        const char *e;
        size_t layer, rank;

        if (parse_size(s, &e, &layer) < 0 || *e != ':' || parse_size(e + 1, &e, &rank) < 0 ||
            *e != '\0' || layer < 1 || rank < 1)
                return usage("bad planted rank '%s': expected LAYER:RANK, e.g. 2:5", s);
        *ret_layer = layer;
        *ret_rank = rank;
        return 0;
}

/* ---- The model -------------------------------------------------------------- */

enum layout { LAYOUT_2D, LAYOUT_SPATIAL, LAYOUT_TOKENS };

struct tlayer {
        size_t width;  /* D */
        size_t rank;   /* r: D, or the planted rank */
        double sep;    /* class separation */
        double *means; /* C x r */
        double *mix;   /* r x LATENT */
        double *embed; /* D x r when planted, else NULL */
        enum layout layout;
        size_t ext; /* spatial H*W or token count; 1 for 2-D */
};

struct slayer {
        size_t width; /* S */
        size_t src;   /* teacher layer index */
        double *proj; /* S x D_src, semi-orthogonal */
};

struct model {
        const struct kdl_synth_opts *o;
        size_t L, Ls, K, C, N;
        struct tlayer t[KDL_SYNTH_MAX_LAYERS];
        struct slayer s[KDL_SYNTH_MAX_LAYERS];
        double *tw, *tb;                       /* teacher head, as stored */
        double *sw[KDL_SYNTH_MAX_CHECKPOINTS]; /* student heads, as stored */
        double *sb[KDL_SYNTH_MAX_CHECKPOINTS];
        double mixk[KDL_SYNTH_MAX_CHECKPOINTS];
        int64_t *labels; /* N, teacher (natural) order */
        size_t *perm;    /* student row -> sample; NULL = identity */
        size_t block;    /* rows per block */
};

static void model_release(struct model *m)
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

static double *normals(uint64_t seed, enum param p, uint64_t b, size_t n, double scale)
{
        double *x = kdl__malloc(n, sizeof(*x));
        struct rng r;

        if (x) {
                rng_init(&r, seed, STREAM_PARAM, p, b);
                rng_fill_normal(&r, x, n, scale);
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
static int make_projection(struct model *m, size_t j)
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

static int make_teacher_layer(struct model *m, size_t l)
{
        const struct kdl_synth_opts *o = m->o;
        struct tlayer *t = &m->t[l];
        size_t C = m->C, G = superclasses(o), r;
        double a = G < C ? o->super_share : 0.0, *sup = NULL, *off = NULL;
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
         * so that classes of one super-class are similar (dark knowledge). */
        sup = normals(o->seed, PARAM_SUPER, l, G * r, 1.0);
        off = normals(o->seed, PARAM_OFFSET, l, C * r, 1.0);
        t->means = kdl__malloc(C * r, sizeof(double));
        t->mix = normals(o->seed, PARAM_MIX, l, r * KDL_SYNTH_LATENT,
                         1.0 / sqrt((double) KDL_SYNTH_LATENT));
        if (!sup || !off || !t->means || !t->mix)
                goto out;
        for (size_t c = 0; c < C; c++)
                for (size_t q = 0; q < r; q++)
                        t->means[c * r + q] =
                                a * sup[(c % G) * r + q] + sqrt(1.0 - a * a) * off[c * r + q];
        if (r < t->width) {
                t->embed = normals(o->seed, PARAM_EMBED, l, t->width * r, 1.0 / sqrt((double) r));
                if (!t->embed)
                        goto out;
        }
        err = 0;
out:
        free(off);
        free(sup);
        return err;
}

/* Class c's mean feature of teacher layer @t, width D, into @mu. */
static void class_mean(const struct tlayer *t, size_t c, double *mu)
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

static int make_heads(struct model *m)
{
        const struct kdl_synth_opts *o = m->o;
        const struct tlayer *pen = &m->t[m->L - 1];
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
static int make_labels(struct model *m)
{
        struct rng r;

        m->labels = kdl__malloc(m->N, sizeof(int64_t));
        if (!m->labels)
                return -ENOMEM;
        for (size_t i = 0; i < m->N; i++)
                m->labels[i] = (int64_t) (i % m->C);
        rng_init(&r, m->o->seed, STREAM_LABELS, 0, 0);
        for (size_t i = m->N - 1; i > 0; i--) { /* Fisher-Yates */
                size_t j = (size_t) rng_below(&r, (uint64_t) i + 1);
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
        rng_init(&r, m->o->seed, STREAM_PERM, 0, 0);
        for (size_t i = m->N - 1; i > 0; i--) {
                size_t j = (size_t) rng_below(&r, (uint64_t) i + 1);
                size_t t = m->perm[i];

                m->perm[i] = m->perm[j];
                m->perm[j] = t;
        }
        return 0;
}

static int model_init(struct model *m, const struct kdl_synth_opts *o)
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

/* Scratch for one block of rows; sizes are block x the widest need. */
struct work {
        size_t rows;
        double *u;                        /* rows x LATENT */
        double *z;                        /* rows x max rank */
        double *h[KDL_SYNTH_MAX_LAYERS];  /* teacher features, rows x D_l */
        double *ph[KDL_SYNTH_MAX_LAYERS]; /* student projections, rows x S_j */
        double *hs;                       /* a student feature, rows x max S */
        double *q;                        /* values as stored, rows x max stored row */
        double *logits, *grad;            /* rows x C */
        double *gfeat;                    /* rows x max(D_L, S_last) */
        double *noise;                    /* one sample's spatial/token noise */
        int64_t *ints;                    /* rows */
        size_t *idx;                      /* rows: the samples of the block */
};

static void work_release(struct work *w)
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

static int work_init(struct work *w, const struct model *m)
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
        w->grad = kdl__malloc(B, m->C * sizeof(double));
        w->gfeat = kdl__malloc(B, gw * sizeof(double));
        w->noise = kdl__malloc(maxn, sizeof(double));
        w->ints = kdl__malloc(B, sizeof(int64_t));
        w->idx = kdl__malloc(B, sizeof(size_t));
        if (!w->u || !w->z || !w->hs || !w->q || !w->logits || !w->grad || !w->gfeat || !w->noise ||
            !w->ints || !w->idx)
                return -ENOMEM;
        return 0;
}

/* Teacher features (before rounding to the store) of samples w->idx[0..B). */
static void gen_teacher(const struct model *m, struct work *w, size_t B)
{
        const struct kdl_synth_opts *o = m->o;
        struct rng r;

        for (size_t b = 0; b < B; b++) {
                rng_init(&r, o->seed, STREAM_LATENT, w->idx[b], 0);
                rng_fill_normal(&r, w->u + b * KDL_SYNTH_LATENT, KDL_SYNTH_LATENT, 1.0);
        }
        for (size_t l = 0; l < m->L; l++) {
                const struct tlayer *t = &m->t[l];
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

                        rng_init(&r, o->seed, STREAM_TNOISE, i, l);
                        for (size_t q = 0; q < R; q++)
                                zb[q] += t->sep * mc[q] + o->noise * rng_normal(&r);
                }
                if (!t->embed)
                        continue;
                /* Planted rank: h = A z plus a trace of full-rank noise. */
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) B, (int) D, (int) R, 1.0,
                            z, (int) R, t->embed, (int) R, 0.0, w->h[l], (int) D);
                for (size_t b = 0; b < B; b++) {
                        double *hb = w->h[l] + b * D;

                        rng_init(&r, o->seed, STREAM_TTINY, w->idx[b], l);
                        for (size_t d = 0; d < D; d++)
                                hb[d] += 1e-6 * o->noise * rng_normal(&r);
                }
        }
}

/* Round @n values of @x to the store into @q. */
static void round_into(double *q, const double *x, size_t n, enum kdl_store store)
{
        for (size_t i = 0; i < n; i++)
                q[i] = kdl_h5w_round(x[i], store);
}

/*
 * The stored rows of teacher layer @l: [D, H*W] or [T, D] per sample, the
 * feature plus zero-mean noise over the spatial positions (or tokens), so
 * that the spatial (token) average is the feature again.
 */
static void spread(const struct model *m, struct work *w, size_t l, size_t B)
{
        const struct tlayer *t = &m->t[l];
        size_t D = t->width, E = t->ext;
        struct rng r;

        for (size_t b = 0; b < B; b++) {
                const double *h = w->h[l] + b * D;
                double *q = w->q + b * D * E;

                rng_init(&r, m->o->seed, STREAM_TSHAPE, w->idx[b], l);
                rng_fill_normal(&r, w->noise, D * E, m->o->noise);
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

/* Datasets of one checkpoint. */
struct ckds {
        kdl_h5wds *feat[KDL_SYNTH_MAX_LAYERS];
        kdl_h5wds *logits, *glogits, *gfeat;
};

static int ckds_close(struct ckds *c)
{
        int err = 0, e;

        for (size_t l = 0; l < KDL_SYNTH_MAX_LAYERS; l++) {
                e = kdl_h5w_dataset_close(c->feat[l]);
                err = err < 0 ? err : e;
        }
        e = kdl_h5w_dataset_close(c->logits);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(c->glogits);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(c->gfeat);
        err = err < 0 ? err : e;
        memset(c, 0, sizeof(*c));
        return err;
}

/*
 * The head's outputs for a block whose head input, as stored, is @hq
 * (B x D): logits z = hq W^T + b; gradients softmax(z) - onehot(y) of the
 * logits as stored, and W^T of that.  Writes the three datasets.
 */
static int write_head_outputs(const struct model *m, struct work *w, struct ckds *ds,
                              const double *W, const double *bias, size_t D, const double *hq,
                              size_t r0, size_t B)
{
        enum kdl_store st = m->o->dtype;
        size_t C = m->C;
        int err;

        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) B, (int) C, (int) D, 1.0, hq,
                    (int) D, W, (int) D, 0.0, w->logits, (int) C);
        for (size_t b = 0; b < B; b++) {
                double *z = w->logits + b * C, *g = w->grad + b * C, mx, sum = 0.0;

                for (size_t c = 0; c < C; c++)
                        z[c] = kdl_h5w_round(z[c] + bias[c], st);
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
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int) B, (int) D, (int) C, 1.0,
                    w->grad, (int) C, W, (int) D, 0.0, w->gfeat, (int) D);
        round_into(w->gfeat, w->gfeat, B * D, st);

        err = kdl_h5w_write_rows(ds->logits, r0, r0 + B, w->logits);
        if (err < 0)
                return err;
        err = kdl_h5w_write_rows(ds->glogits, r0, r0 + B, w->grad);
        if (err < 0)
                return err;
        return kdl_h5w_write_rows(ds->gfeat, r0, r0 + B, w->gfeat);
}

/* ---- Files -------------------------------------------------------------------- */

static char *checkpoint_name(size_t k, size_t K)
{
        static const char *const names[6][5] = {
                [1] = {"final"},
                [2] = {"init", "final"},
                [3] = {"init", "middle", "final"},
                [4] = {"init", "early", "middle", "final"},
                [5] = {"init", "early", "middle", "late", "final"},
        };

        if (K <= 5)
                return kdl__strdup(names[K][k]);
        if (k == 0)
                return kdl__strdup("init");
        if (k == K - 1)
                return kdl__strdup("final");
        return kdl__asprintf("ckpt%zu", k);
}

/* Write the small whole dataset @group/@leaf, contiguous, in one call. */
static int write_whole(kdl_h5w *h5, const char *group, const char *leaf, size_t ndim,
                       const size_t *shape, enum kdl_store store, const double *data)
{
        char *path = kdl__asprintf("%s/%s", group, leaf);
        kdl_h5wds *ds = NULL;
        int err, e;

        if (!path)
                return -ENOMEM;
        err = kdl_h5w_dataset_open(h5, path, ndim, shape, store, 0, -1, &ds);
        err = err ?: kdl_h5w_write_rows(ds, 0, shape[0], data);
        e = kdl_h5w_dataset_close(ds);
        free(path);
        return err ? err : e;
}

static int write_head(const struct model *m, kdl_h5w *h5, const char *group, const double *W,
                      const double *b, size_t D, const char *input)
{
        size_t shape[2] = {m->C, D};
        char *path = kdl__asprintf("%s/head", group);
        int err;

        if (!path)
                return -ENOMEM;
        err = write_whole(h5, path, "weight", 2, shape, m->o->dtype, W);
        err = err ?: write_whole(h5, path, "bias", 1, shape, m->o->dtype, b);
        err = err ?: kdl_h5w_attr_string(h5, path, "input", input);
        free(path);
        return err;
}

/* Open an N-row dataset @group/@rel with the options' chunking; 2-D unless
 * @shape3 gives trailing sizes. */
static int open_rows(const struct model *m, kdl_h5w *h5, const char *group, const char *rel,
                     size_t ndim, const size_t *trailing, enum kdl_store store, kdl_h5wds **ret)
{
        size_t shape[4] = {m->N};
        char *path;
        int err;

        for (size_t k = 1; k < ndim; k++)
                shape[k] = trailing[k - 1];
        path = strcmp(group, "/") == 0 ? kdl__asprintf("/%s", rel)
                                       : kdl__asprintf("%s/%s", group, rel);
        if (!path)
                return -ENOMEM;
        err = kdl_h5w_dataset_open(h5, path, ndim, shape, store, m->o->chunk_rows, m->o->gzip, ret);
        free(path);
        return err;
}

static char *layer_name(size_t l)
{
        return kdl__asprintf("layer%zu", l + 1);
}

/* Create the datasets of one checkpoint group @group (teacher: @teacher). */
static int open_checkpoint(const struct model *m, kdl_h5w *h5, const char *group, bool teacher,
                           size_t k, struct ckds *ds)
{
        size_t nl = teacher ? m->L : m->Ls, C = m->C, Dpen;
        char *rel = NULL, *name = NULL, *path = NULL, *pen = NULL;
        int err;

        err = kdl_h5w_group_new(h5, group);
        if (err < 0)
                return err;
        for (size_t l = 0; l < nl; l++) {
                size_t trailing[3], ndim = 2, D = teacher ? m->t[l].width : m->s[l].width;

                trailing[0] = D;
                if (teacher && m->t[l].layout == LAYOUT_SPATIAL) {
                        ndim = 4;
                        trailing[1] = m->o->spatial_h;
                        trailing[2] = m->o->spatial_w;
                } else if (teacher && m->t[l].layout == LAYOUT_TOKENS) {
                        ndim = 3;
                        trailing[0] = m->o->tokens_t;
                        trailing[1] = D;
                }
                err = -ENOMEM;
                name = layer_name(l);
                rel = name ? kdl__asprintf("features/%s", name) : NULL;
                if (!rel)
                        goto out;
                err = open_rows(m, h5, group, rel, ndim, trailing, m->o->dtype, &ds->feat[l]);
                if (err < 0)
                        goto out;
                err = -ENOMEM;
                path = strcmp(group, "/") == 0 ? kdl__asprintf("/%s", rel)
                                               : kdl__asprintf("%s/%s", group, rel);
                if (!path)
                        goto out;
                err = kdl_h5w_attr_int(h5, path, "depth", (int64_t) l + 1);
                if (err < 0)
                        goto out;
                free(path);
                free(rel);
                free(name);
                path = rel = name = NULL;
        }
        Dpen = teacher ? m->t[nl - 1].width : m->s[nl - 1].width;
        err = open_rows(m, h5, group, "logits", 2, &C, m->o->dtype, &ds->logits);
        if (err < 0)
                goto out;
        err = open_rows(m, h5, group, "gradients/logits", 2, &C, m->o->dtype, &ds->glogits);
        if (err < 0)
                goto out;
        err = -ENOMEM;
        pen = layer_name(nl - 1);
        rel = pen ? kdl__asprintf("gradients/features/%s", pen) : NULL;
        if (!rel)
                goto out;
        err = open_rows(m, h5, group, rel, 2, &Dpen, m->o->dtype, &ds->gfeat);
        if (err < 0)
                goto out;
        err = write_head(m, h5, strcmp(group, "/") == 0 ? "" : group, teacher ? m->tw : m->sw[k],
                         teacher ? m->tb : m->sb[k], Dpen, pen);
        if (err < 0)
                goto out;
        err = kdl_h5w_attr_int(h5, group, "step",
                               teacher ? (int64_t) 1000 * (int64_t) (m->K - 1)
                                       : (int64_t) 1000 * (int64_t) k);
        if (err < 0 || teacher)
                goto out;
        err = kdl_h5w_attr_int(h5, group, "epoch", (int64_t) k);
out:
        free(pen);
        free(path);
        free(rel);
        free(name);
        return err;
}

/* /labels and /sample_ids for rows [r0, r0 + B) whose samples are w->idx. */
static int write_ids(const struct model *m, struct work *w, kdl_h5wds *labels, kdl_h5wds *ids,
                     size_t r0, size_t B)
{
        int err;

        for (size_t b = 0; b < B; b++)
                w->ints[b] = m->labels[w->idx[b]];
        err = kdl_h5w_write_rows_i64(labels, r0, r0 + B, w->ints);
        if (err < 0 || !ids)
                return err;
        /* Ids are not row numbers, so that a join cannot pass by accident. */
        for (size_t b = 0; b < B; b++)
                w->ints[b] = 1000 + 3 * (int64_t) w->idx[b];
        return kdl_h5w_write_rows_i64(ids, r0, r0 + B, w->ints);
}

/*
 * Create the dump @path for @role with its /labels and (when asked for)
 * /sample_ids datasets.  On failure the caller's cleanup closes what was
 * opened: *@h5, *@labels and *@ids are set as soon as each exists.
 */
static int open_dump(const struct model *m, const char *path, const char *role, kdl_h5w **h5,
                     kdl_h5wds **labels, kdl_h5wds **ids)
{
        char model[32];
        int err;

        snprintf(model, sizeof(model), "synth-%s", role);
        err = kdl_h5w_open(path, role, model, h5);
        err = err ?: open_rows(m, *h5, "/", "labels", 1, NULL, KDL_STORE_I64, labels);
        if (!err && m->o->sample_ids)
                err = open_rows(m, *h5, "/", "sample_ids", 1, NULL, KDL_STORE_I64, ids);
        return err;
}

static int write_teacher(const struct model *m, struct work *w, const char *path)
{
        const struct kdl_synth_opts *o = m->o;
        const char *group = o->flat_teacher ? "/" : "/checkpoints/final";
        kdl_h5w *h5 = NULL;
        kdl_h5wds *labels = NULL, *ids = NULL;
        struct ckds ds = {0};
        size_t L = m->L;
        int err, e;

        err = open_dump(m, path, "teacher", &h5, &labels, &ids);
        if (err < 0)
                goto out;
        err = open_checkpoint(m, h5, group, true, 0, &ds);
        if (err < 0)
                goto out;

        for (size_t r0 = 0; r0 < m->N; r0 += m->block) {
                size_t B = m->N - r0 < m->block ? m->N - r0 : m->block;

                for (size_t b = 0; b < B; b++)
                        w->idx[b] = r0 + b;
                err = write_ids(m, w, labels, ids, r0, B);
                if (err < 0)
                        goto out;
                gen_teacher(m, w, B);
                for (size_t l = 0; l < L; l++) {
                        if (m->t[l].layout == LAYOUT_2D)
                                round_into(w->q, w->h[l], B * m->t[l].width, o->dtype);
                        else
                                spread(m, w, l, B);
                        err = kdl_h5w_write_rows(ds.feat[l], r0, r0 + B, w->q);
                        if (err < 0)
                                goto out;
                }
                /* The head input is never spread, so w->q holds it as stored. */
                err = write_head_outputs(m, w, &ds, m->tw, m->tb, m->t[L - 1].width, w->q, r0, B);
                if (err < 0)
                        goto out;
        }
out:
        e = ckds_close(&ds);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(ids);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(labels);
        err = err < 0 ? err : e;
        e = kdl_h5w_close(h5);
        return err < 0 ? err : e;
}

static int write_student(const struct model *m, struct work *w, const char *path)
{
        const struct kdl_synth_opts *o = m->o;
        kdl_h5w *h5 = NULL;
        kdl_h5wds *labels = NULL, *ids = NULL;
        struct ckds ds[KDL_SYNTH_MAX_CHECKPOINTS];
        size_t Ls = m->Ls;
        int err, e;

        memset(ds, 0, sizeof(ds));
        err = open_dump(m, path, "student", &h5, &labels, &ids);
        if (err < 0)
                goto out;
        for (size_t k = 0; k < m->K; k++) {
                char *name = checkpoint_name(k, m->K);
                char *group = name ? kdl__asprintf("/checkpoints/%s", name) : NULL;

                err = group ? open_checkpoint(m, h5, group, false, k, &ds[k]) : -ENOMEM;
                free(group);
                free(name);
                if (err < 0)
                        goto out;
        }

        for (size_t r0 = 0; r0 < m->N; r0 += m->block) {
                size_t B = m->N - r0 < m->block ? m->N - r0 : m->block;

                for (size_t b = 0; b < B; b++)
                        w->idx[b] = m->perm ? m->perm[r0 + b] : r0 + b;
                err = write_ids(m, w, labels, ids, r0, B);
                if (err < 0)
                        goto out;
                gen_teacher(m, w, B);
                for (size_t j = 0; j < Ls; j++) {
                        const struct slayer *s = &m->s[j];
                        size_t D = m->t[s->src].width;

                        /* P h_t for every checkpoint at once. */
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int) B,
                                    (int) s->width, (int) D, 1.0, w->h[s->src], (int) D, s->proj,
                                    (int) D, 0.0, w->ph[j], (int) s->width);
                }
                for (size_t k = 0; k < m->K; k++) {
                        double mk = m->mixk[k];

                        for (size_t j = 0; j < Ls; j++) {
                                size_t S = m->s[j].width;
                                struct rng r;

                                for (size_t b = 0; b < B; b++) {
                                        const double *ph = w->ph[j] + b * S;
                                        double *q = w->q + b * S;

                                        rng_init(&r, o->seed, STREAM_SNOISE, w->idx[b],
                                                 ((uint64_t) j << 8) | k);
                                        for (size_t d = 0; d < S; d++)
                                                q[d] = kdl_h5w_round(mk * ph[d] +
                                                                             (1.0 - mk) * o->noise *
                                                                                     rng_normal(&r),
                                                                     o->dtype);
                                }
                                err = kdl_h5w_write_rows(ds[k].feat[j], r0, r0 + B, w->q);
                                if (err < 0)
                                        goto out;
                        }
                        /* w->q holds the last layer, the head input, as stored. */
                        err = write_head_outputs(m, w, &ds[k], m->sw[k], m->sb[k],
                                                 m->s[Ls - 1].width, w->q, r0, B);
                        if (err < 0)
                                goto out;
                }
        }
out:
        for (size_t k = 0; k < m->K; k++) {
                e = ckds_close(&ds[k]);
                err = err < 0 ? err : e;
        }
        e = kdl_h5w_dataset_close(ids);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(labels);
        err = err < 0 ? err : e;
        e = kdl_h5w_close(h5);
        return err < 0 ? err : e;
}

int kdl_synth_write(const struct kdl_synth_opts *o, const char *teacher_path,
                    const char *student_path)
{
        struct model m;
        struct work w;
        char *ttmp = NULL, *stmp = NULL;
        bool model_made = false, work_made = false;
        int err;

        assert(o && teacher_path && student_path);

        err = kdl_synth_check(o);
        if (err < 0)
                return err;
        if (strcmp(teacher_path, student_path) == 0)
                return usage("the teacher and the student need different files, not '%s' twice",
                             teacher_path);

        /* A directory in the way would only show at the final renames, when
         * the other file may already be replaced: refuse it first. */
        for (int i = 0; i < 2; i++) {
                const char *p = i == 0 ? teacher_path : student_path;
                struct stat st;

                if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
                        return kdl_error(-EISDIR, "cannot write '%s': %s", p, strerror(EISDIR));
        }

        /* Write next to the targets and rename at the end, so that a
         * failure leaves nothing half-written (DESIGN.md, bad input). */
        err = -ENOMEM;
        ttmp = kdl__asprintf("%s.tmp%ld", teacher_path, (long) getpid());
        stmp = kdl__asprintf("%s.tmp%ld", student_path, (long) getpid());
        if (!ttmp || !stmp)
                goto out;

        model_made = true;
        err = model_init(&m, o);
        if (err < 0)
                goto out;
        work_made = true;
        err = work_init(&w, &m);
        if (err < 0)
                goto out;

        err = write_teacher(&m, &w, ttmp);
        if (err < 0)
                goto out;
        err = write_student(&m, &w, stmp);
        if (err < 0)
                goto out;
        if (rename(ttmp, teacher_path) < 0) {
                err = kdl_error(-errno, "cannot rename '%s' to '%s': %s", ttmp, teacher_path,
                                strerror(errno));
                goto out;
        }
        if (rename(stmp, student_path) < 0) {
                err = kdl_error(-errno, "cannot rename '%s' to '%s': %s", stmp, student_path,
                                strerror(errno));
                unlink(teacher_path); /* not both: neither */
                goto out;
        }
out:
        if (err < 0) {
                if (ttmp)
                        unlink(ttmp);
                if (stmp)
                        unlink(stmp);
        }
        if (work_made)
                work_release(&w);
        if (model_made)
                model_release(&m);
        free(stmp);
        free(ttmp);
        return err;
}
