/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/base/rng.h"
#include "metrics/sample.h"
#include "metrics/base/banned.h"

/* One splitmix64 step on z: the finaliser is a bijection on 64-bit words with
 * good avalanche, so chaining it over the inputs gives a counter-based
 * generator (as Random123's idea, much simpler). */
static uint64_t step(uint64_t z)
{
        return kdl__rng_mix64(z + KDL_RNG_GAMMA);
}

uint64_t kdl_sample_hash(uint64_t seed, uint64_t id, uint64_t stream)
{
        return step(step(step(seed) ^ id) ^ (stream * 0xd1b54a32d192ed03ULL));
}

double kdl_sample_uniform(uint64_t seed, uint64_t id, uint64_t stream)
{
        return ((double) (kdl_sample_hash(seed, id, stream) >> 11) + 0.5) * 0x1.0p-53;
}

unsigned kdl_sample_poisson1(uint64_t seed, uint64_t id, uint64_t replicate)
{
        /* Stream 2^63 + replicate keeps the bootstrap weights apart from the
         * small stream numbers used for subsamples. */
        double u = kdl_sample_uniform(seed, id, (UINT64_C(1) << 63) + replicate);
        double p = exp(-1.0), cdf = p;
        unsigned k = 0;

        while (u > cdf && k < 30) {
                k++;
                p /= (double) k;
                cdf += p;
        }
        return k;
}

size_t kdl_sample_group(uint64_t seed, uint64_t id, size_t ngroups)
{
        /* Stream 2^62: apart from the subsample streams and the bootstrap's
         * 2^63 + replicate.  The modulo bias is below ngroups / 2^64. */
        assert(ngroups >= 1);
        return (size_t) (kdl_sample_hash(seed, id, UINT64_C(1) << 62) % ngroups);
}

struct keyed {
        uint64_t key;
        size_t row;
};

static int cmp_keyed(const void *a, const void *b)
{
        const struct keyed *x = a, *y = b;

        if (x->key != y->key)
                return x->key < y->key ? -1 : 1;
        return x->row < y->row ? -1 : x->row > y->row;
}

static int cmp_size(const void *a, const void *b)
{
        size_t x = *(const size_t *) a, y = *(const size_t *) b;

        return x < y ? -1 : x > y;
}

/* Every label in 0..@nclasses-1, or the error naming the first that is not. */
static int check_labels(size_t n, const int64_t *labels, size_t nclasses)
{
        for (size_t i = 0; i < n; i++)
                if (labels[i] < 0 || (uint64_t) labels[i] >= nclasses)
                        return kdl_error(-KDL_ERANGE, "label %lld of row %zu is outside 0..%zu",
                                         (long long) labels[i], i, nclasses ? nclasses - 1 : 0);
        return 0;
}

/* kdl_sample_select() and kdl_sample_select_counts(): @counts [nclasses],
 * or @count for every class (and, without labels, in all). */
static int select_rows(size_t n, const int64_t *labels, size_t nclasses, size_t count,
                       const size_t *counts, uint64_t seed, uint64_t stream, size_t **ret_rows,
                       size_t *ret_count)
{
        struct keyed *k = NULL;
        size_t *rows = NULL, *taken = NULL, m = 0;
        int r = 0;

        if (labels && (r = check_labels(n, labels, nclasses)) < 0)
                return r;
        k = kdl_new(struct keyed, n);
        rows = kdl_new(size_t, n);
        if (labels)
                taken = kdl_new(size_t, nclasses);
        if (!k || !rows || (labels && !taken)) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                k[i].key = kdl_sample_hash(seed, i, stream);
                k[i].row = i;
        }
        /* Sorting all keys is O(n log n) on O(n) memory; a per-class heap
         * would save little at the sizes kdlens reads. */
        qsort(k, n, sizeof(*k), cmp_keyed);
        for (size_t i = 0; i < n; i++) {
                size_t row = k[i].row;

                if (labels) {
                        size_t c = (size_t) labels[row];

                        if (taken[c] >= (counts ? counts[c] : count))
                                continue;
                        taken[c]++;
                } else if (m >= count) {
                        break;
                }
                rows[m++] = row;
        }
        qsort(rows, m, sizeof(*rows), cmp_size);

        *ret_rows = rows;
        *ret_count = m;
        rows = NULL;
out:
        free(taken);
        free(rows);
        free(k);
        return r;
}

int kdl_sample_select(size_t n, const int64_t *labels, size_t nclasses, size_t count, uint64_t seed,
                      uint64_t stream, size_t **ret_rows, size_t *ret_count)
{
        return select_rows(n, labels, nclasses, count, NULL, seed, stream, ret_rows, ret_count);
}

int kdl_sample_select_counts(size_t n, const int64_t *labels, size_t nclasses, const size_t *counts,
                             uint64_t seed, uint64_t stream, size_t **ret_rows, size_t *ret_count)
{
        assert(labels && counts);
        return select_rows(n, labels, nclasses, 0, counts, seed, stream, ret_rows, ret_count);
}

int kdl_sample_class_counts(size_t n, const int64_t *labels, size_t nclasses, size_t **ret_counts)
{
        size_t *counts;
        int r = check_labels(n, labels, nclasses);

        if (r < 0)
                return r;
        counts = kdl_new(size_t, nclasses ? nclasses : 1);
        if (!counts)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                counts[labels[i]]++;
        *ret_counts = counts;
        return 0;
}

static const char *const rule_names[KDL_SAMPLE_CLASS_RULE_COUNT_] = {"frequent", "seeded"};

const char *kdl_sample_class_rule_name(enum kdl_sample_class_rule rule)
{
        assert(rule < KDL_SAMPLE_CLASS_RULE_COUNT_);
        return rule_names[rule];
}

int kdl_sample_class_rule_parse(const char *s, enum kdl_sample_class_rule *ret)
{
        for (int v = 0; v < KDL_SAMPLE_CLASS_RULE_COUNT_; v++)
                if (strcmp(s, rule_names[v]) == 0) {
                        *ret = (enum kdl_sample_class_rule) v;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE, "unknown class rule '%s' (expected frequent or seeded)", s);
}

int kdl_sample_classes(const size_t *counts, size_t nclasses, size_t min_count, size_t kmax,
                       enum kdl_sample_class_rule rule, uint64_t seed, uint64_t stream,
                       size_t **ret_classes, size_t *ret_count)
{
        struct keyed *k = kdl_new(struct keyed, nclasses ? nclasses : 1);
        size_t *out = NULL, m = 0, e = 0;

        assert(rule < KDL_SAMPLE_CLASS_RULE_COUNT_);
        if (!k)
                return -ENOMEM;
        /* Eligible classes keyed so that the wanted ones sort first: the
         * complement of the count (most samples first), or the hash; ties
         * (equal counts) go to the lower class through cmp_keyed. */
        for (size_t c = 0; c < nclasses; c++)
                if (counts[c] >= min_count)
                        k[e++] = (struct keyed){rule == KDL_SAMPLE_FREQUENT
                                                        ? ~(uint64_t) counts[c]
                                                        : kdl_sample_hash(seed, c, stream),
                                                c};
        qsort(k, e, sizeof(*k), cmp_keyed);
        m = e < kmax ? e : kmax;
        out = kdl_new(size_t, m ? m : 1);
        if (!out) {
                free(k);
                return -ENOMEM;
        }
        for (size_t i = 0; i < m; i++)
                out[i] = k[i].row;
        qsort(out, m, sizeof(*out), cmp_size);
        free(k);
        *ret_classes = out;
        *ret_count = m;
        return 0;
}

/* kdl_sample_select_sequences(): the order of the rows. */
struct seqkey {
        uint64_t hs; /* the sequence's hash */
        int64_t s;   /* its id */
        uint64_t hr; /* the row's hash */
        size_t row;
};

static int cmp_seqkey(const void *pa, const void *pb)
{
        const struct seqkey *a = pa, *b = pb;

        if (a->hs != b->hs)
                return a->hs < b->hs ? -1 : 1;
        if (a->s != b->s)
                return a->s < b->s ? -1 : 1;
        if (a->hr != b->hr)
                return a->hr < b->hr ? -1 : 1;
        return a->row < b->row ? -1 : a->row > b->row;
}

int kdl_sample_select_sequences(size_t n, const int64_t *seq, size_t count, size_t per_seq,
                                uint64_t seed, uint64_t stream, size_t **ret_rows,
                                size_t *ret_count)
{
        struct seqkey *k = NULL;
        size_t *rows = NULL, taken = 0;
        int err = -ENOMEM;

        assert(seq || n == 0);
        assert(ret_rows && ret_count);
        k = kdl_new(struct seqkey, n);
        rows = kdl_new(size_t, n);
        if (!k || !rows)
                goto out;
        for (size_t i = 0; i < n; i++)
                k[i] = (struct seqkey){.hs = kdl_sample_hash(seed, (uint64_t) seq[i], stream),
                                       .s = seq[i],
                                       .hr = kdl_sample_hash(seed, i, stream + 1),
                                       .row = i};
        qsort(k, n, sizeof(*k), cmp_seqkey);
        /* The sequences in hash order, each whole or its per_seq rows of smallest hash, until
         * count rows are taken. */
        for (size_t a = 0, b; a < n && taken < count; a = b) {
                for (b = a; b < n && k[b].s == k[a].s; b++)
                        if (!per_seq || b - a < per_seq)
                                rows[taken++] = k[b].row;
        }
        qsort(rows, taken, sizeof(*rows), cmp_size);
        *ret_rows = rows;
        *ret_count = taken;
        rows = NULL;
        err = 0;
out:
        free(rows);
        free(k);
        return err;
}
