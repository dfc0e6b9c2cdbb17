/* SPDX-License-Identifier: MIT */
/*
 * The "split_positions" table of split: for a token dump with /positions, the means of
 * KL, TCKD, NCKD and the shares over the tokens at each position (docs/split.md#per-position).
 * Sums per position and temperature, grown to the largest position seen (at most
 * KDL__SPLIT_MAX_POSITIONS), merged under MPI as the per-class sums are.
 */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "analysis/split-internal.h"
#include "metrics/base/banned.h"

/* The sums per position and temperature, in this order. */
enum { S_KL, S_TCKD, S_NCKD, S_COUPLED, S_COUNT_ };

struct kdl__split_pos {
        size_t ntaus;
        size_t npos;   /* positions held: 0 .. npos - 1 */
        size_t beyond; /* tokens at a position outside [0, KDL__SPLIT_MAX_POSITIONS) */
        double *count; /* [npos] tokens */
        double *sum;   /* [npos][ntaus][S_COUNT_] */
};

int kdl__split_pos_new(size_t ntaus, struct kdl__split_pos **ret)
{
        struct kdl__split_pos *p = kdl_new(struct kdl__split_pos, 1);

        assert(ret && ntaus > 0);
        if (!p)
                return -ENOMEM;
        p->ntaus = ntaus;
        *ret = p;
        return 0;
}

void kdl__split_pos_free(struct kdl__split_pos *p)
{
        if (!p)
                return;
        free(p->sum);
        free(p->count);
        free(p);
}

/* Hold positions 0 .. @n - 1 (@n <= KDL__SPLIT_MAX_POSITIONS), doubling. */
static int grow(struct kdl__split_pos *p, size_t n)
{
        size_t want = p->npos ? p->npos : 64, w = p->ntaus * S_COUNT_;
        double *c, *s;

        if (n <= p->npos)
                return 0;
        while (want < n)
                want *= 2;
        if (want > KDL__SPLIT_MAX_POSITIONS)
                want = KDL__SPLIT_MAX_POSITIONS;
        c = kdl__realloc(p->count, want, sizeof(double));
        if (!c)
                return -ENOMEM;
        p->count = c;
        s = kdl__realloc(p->sum, want * w, sizeof(double));
        if (!s)
                return -ENOMEM;
        p->sum = s;
        memset(c + p->npos, 0, (want - p->npos) * sizeof(double));
        memset(s + p->npos * w, 0, (want - p->npos) * w * sizeof(double));
        p->npos = want;
        return 0;
}

int kdl__split_pos_add(struct kdl__split_pos *p, double position, size_t k,
                       const kdl_split_sample *v)
{
        double *s;
        size_t q;
        int err;

        assert(p && v && k < p->ntaus);
        if (!(position >= 0.0 && position < (double) KDL__SPLIT_MAX_POSITIONS)) {
                p->beyond += k == 0;
                return 0;
        }
        q = (size_t) position;
        err = grow(p, q + 1);
        if (err < 0)
                return err;
        p->count[q] += k == 0;
        s = p->sum + (q * p->ntaus + k) * S_COUNT_;
        s[S_KL] += v->kl;
        s[S_TCKD] += v->tckd;
        s[S_NCKD] += v->nckd;
        s[S_COUPLED] += v->pt_rest * v->nckd;
        return 0;
}

/* Packed: npos, beyond, ntaus, then count[npos] and sum[npos][ntaus][S_COUNT_], as doubles
 * (exact for every count below 2^53). */
static int pos_pack(const void *state, void **buf, size_t *len)
{
        const struct kdl__split_pos *p = state;
        size_t w = p->ntaus * S_COUNT_, n = 3 + p->npos * (1 + w);
        double *b = kdl__malloc(n, sizeof(double));

        if (!b)
                return -ENOMEM;
        b[0] = (double) p->npos;
        b[1] = (double) p->beyond;
        b[2] = (double) p->ntaus;
        if (p->npos) {
                memcpy(b + 3, p->count, p->npos * sizeof(double));
                memcpy(b + 3 + p->npos, p->sum, p->npos * w * sizeof(double));
        }
        *buf = b;
        *len = n * sizeof(double);
        return 0;
}

static int pos_merge(void *state, const void *buf, size_t len)
{
        struct kdl__split_pos *p = state;
        const double *b = buf;
        size_t w = p->ntaus * S_COUNT_, n;
        int err;

        if (len < 3 * sizeof(double) || (size_t) b[2] != p->ntaus ||
            !(b[0] <= (double) KDL__SPLIT_MAX_POSITIONS))
                return kdl_error(-KDL_EMISMATCH, "split positions: a packed state of another run");
        n = (size_t) b[0];
        if (len != (3 + n * (1 + w)) * sizeof(double))
                return kdl_error(-KDL_EMISMATCH, "split positions: a packed state of another run");
        err = grow(p, n);
        if (err < 0)
                return err;
        p->beyond += (size_t) b[1];
        for (size_t q = 0; q < n; q++)
                p->count[q] += b[3 + q];
        for (size_t e = 0; e < n * w; e++)
                p->sum[e] += b[3 + n + e];
        return 0;
}

const struct kdl__dist_ops kdl__split_pos_ops = {pos_pack, pos_merge, NULL};

/* The ratio of sums @a / @b (NaN over a zero). */
static double ratio(double a, double b)
{
        return fabs(b) > 0.0 ? a / b : (double) NAN;
}

int kdl__split_pos_emit(const struct kdl__split_pos *p, const struct kdl__split_rows *w,
                        kdl_doc *doc)
{
        kdl_table *t = w->t[KDL__SPLIT_T_POSITIONS];
        int err = 0;

        for (size_t k = 0; k < p->ntaus && !err; k++)
                for (size_t q = 0; q < p->npos && !err; q++) {
                        const double *s = p->sum + (q * p->ntaus + k) * S_COUNT_, n = p->count[q];

                        if (!(n > 0.0))
                                continue;
                        err = kdl__split_put_keys(w, t, true, w->o->metric.taus[k]);
                        err = err ?: kdl_table_put_int(t, "position", (long long) q);
                        err = err ?: kdl_table_put_int(t, "samples", (long long) n);
                        err = err ?: kdl_table_put_real(t, "kl", s[S_KL] / n);
                        err = err ?: kdl_table_put_real(t, "tckd", s[S_TCKD] / n);
                        err = err ?: kdl_table_put_real(t, "nckd", s[S_NCKD] / n);
                        err = err ?: kdl_table_put_real(t, "nckd_coupled", s[S_COUPLED] / n);
                        err = err
                                      ?: kdl_table_put_real(t, "explicit_share",
                                                            ratio(s[S_TCKD], s[S_KL]));
                        err = err
                                      ?: kdl_table_put_real(t, "implicit_share",
                                                            ratio(s[S_COUPLED], s[S_KL]));
                }
        if (!err && p->beyond)
                err = kdl_doc_add_note(doc,
                                       "split_positions: '%s' at %s: %zu tokens at a position "
                                       "outside 0 to %d are left out of the table (they count "
                                       "in the other tables)",
                                       w->student, w->cks->name, p->beyond,
                                       KDL__SPLIT_MAX_POSITIONS - 1);
        return err;
}

int kdl__split_pos_attach(kdl__job *job, kdl_stream *s, const kdl_inputs *in, size_t k,
                          size_t ntaus, struct kdl__split_pos **ret, int *ret_idx)
{
        const kdl_dsinfo *pt = kdl_h5_dump(in->teacher)->positions,
                         *ps = kdl_h5_dump(in->students[k])->positions;
        int idx;

        *ret = NULL;
        if (!pt && !ps)
                return 0;
        idx = kdl__job_add(job, s, pt ? in->teacher : in->students[k], pt ? pt : ps,
                           KDL_SPATIAL_FLATTEN, !pt);
        if (idx < 0)
                return idx;
        *ret_idx = idx;
        return kdl__split_pos_new(ntaus, ret);
}
