/* SPDX-License-Identifier: MIT */
/*
 * The "softmax_bottleneck" table of dims: a student's hidden width d against the effective
 * rank of its teacher's centred log-probabilities over the evaluated samples (tokens), from
 * the teacher's centred-logit spectrum, exact or sketched (docs/dims.md#softmax-bottleneck).
 */
#include <math.h>
#include <stdlib.h>

#include "analysis/dims-internal.h"
#include "metrics/base/banned.h"

/* The shares of the variance the two ranks leave out. */
static const double shares[2] = {0.01, 0.001};
static const char *const rank_keys[2][3] = {
        {"rank_99", "rank_99_lo", "d_below_rank_99"},
        {"rank_999", "rank_999_lo", "d_below_rank_999"},
};

/* The least d with tail[d] <= @q (tail[C] = 0, so there is one). */
static size_t least(const double *tail, size_t c, double q)
{
        size_t d = 0;

        while (d < c && !(tail[d] <= q))
                d++;
        return d;
}

/* Whether @d is below a rank known to lie in [@lo, @hi]. */
static const char *below(size_t d, size_t lo, size_t hi)
{
        return d < lo ? "yes" : d >= hi ? "no" : "unresolved";
}

int kdl__dims_bottleneck_new(kdl_table **ret)
{
        return kdl_table_new("softmax_bottleneck",
                             "Softmax bottleneck: the student's width against the effective rank "
                             "of the teacher's centred log-probabilities",
                             ret);
}

int kdl__dims_bottleneck_row(kdl_table *t, const kdl_dump *d, const kdl_checkpoint *ck,
                             const struct kdl__dims_verdict *v)
{
        const kdl_spectral_result *r = v->tres;
        size_t c = r->d, at = v->d_s < c ? v->d_s : c;
        bool sketch = r->tail_lo != NULL;
        int err;

        err = kdl__dims_put_model(t, d, ck);
        err = err ?: kdl_table_put_str(t, "teacher_checkpoint", v->tck->name);
        err = err ?: kdl_table_put_int(t, "d_s", (long long) v->d_s);
        err = err ?: kdl_table_put_str(t, "d_s_from", v->d_s_from);
        err = err ?: kdl_table_put_int(t, "classes", (long long) c);
        err = err ?: kdl_table_put_int(t, "samples", (long long) r->n);
        err = err ?: kdl_table_put_str(t, "spectrum_method", kdl_spectral_method_name(r->method));
        for (int q = 0; q < 2 && !err; q++) {
                size_t hi = least(r->tail, c, shares[q]);
                size_t lo = sketch ? least(r->tail_lo, c, shares[q]) : hi;

                err = kdl_table_put_int(t, rank_keys[q][0], (long long) hi);
                if (!err && sketch)
                        err = kdl_table_put_int(t, rank_keys[q][1], (long long) lo);
                err = err ?: kdl_table_put_str(t, rank_keys[q][2], below(v->d_s, lo, hi));
        }
        err = err ?: kdl_table_put_real(t, "effective_rank", r->sum.effective_rank);
        err = err
                      ?: kdl_table_put_str(t, "d_below_effective_rank",
                                           isnan(r->sum.effective_rank)              ? "unknown"
                                           : (double) v->d_s < r->sum.effective_rank ? "yes"
                                                                                     : "no");
        err = err ?: kdl_table_put_real(t, "variance_beyond_d", r->tail[at]);
        if (!err && sketch)
                err = kdl_table_put_real(t, "variance_beyond_d_lo", r->tail_lo[at]);
        return err;
}

int kdl__dims_bottleneck_commit(kdl_doc *doc, kdl_table **t)
{
        kdl_table *x = *t;
        int err;

        *t = NULL;
        if (kdl_table_rows(x) == 0) {
                kdl_table_free(x);
                return 0;
        }
        err = kdl_doc_add_note(
                doc, "softmax_bottleneck: a student whose logits are W h + b, h of width d, has "
                     "centred log-probabilities (log p minus its mean over the classes, centred "
                     "over the samples) of rank at most d; rank_99 and rank_999 are the fewest "
                     "dimensions that hold 99 %% and 99.9 %% of the variance of the teacher's, "
                     "over every sample of its dump (the evaluated tokens), "
                     "effective_rank exp(H(lambda / sum lambda)); d_below_* = yes: the student "
                     "cannot reach that share at any training (from a sketch: between the two "
                     "ends, unresolved)");
        if (err < 0) {
                kdl_table_free(x);
                return err;
        }
        return kdl_doc_add_table(doc, x);
}
