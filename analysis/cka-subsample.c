/* SPDX-License-Identifier: MIT */
/*
 * The subsample of the cka command: plain, or of a token dump by sequence (--sequences,
 * docs/cka.md#token-dumps-subsamples-by-sequence).
 */
#include <assert.h>
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "metrics/sample.h"
#include "analysis/cka-internal.h"
#include "metrics/base/banned.h"

/* The sequence id of each of the @n rows of @pair (NULL: A's rows) into *@ret (caller frees),
 * from A's /sequence_ids. */
static int read_sequences(kdl_h5file *fa, const kdl_pair *pair, size_t n, int64_t **ret)
{
        const kdl_dump *d = kdl_h5_dump(fa);
        kdl_h5reader *rd = NULL;
        double *all = NULL;
        int64_t *seq = NULL;
        int err;

        if (!d->sequence_ids)
                return kdl_error(-KDL_EUSAGE,
                                 "'%s': --sequences: expected /sequence_ids [N], found none",
                                 d->path);
        all = kdl__malloc(d->n, sizeof(double));
        seq = kdl_new(int64_t, n);
        err = all && seq ? kdl_h5_reader_open(fa, d->sequence_ids, KDL_SPATIAL_FLATTEN, &rd)
                         : -ENOMEM;
        err = err ?: kdl_h5_reader_read(rd, 0, d->n, all);
        for (size_t i = 0; i < n && !err; i++)
                seq[i] = (int64_t) all[pair && pair->teacher_rows ? pair->teacher_rows[i] : i];
        kdl_h5_reader_close(rd);
        free(all);
        if (err < 0) {
                free(seq);
                return err;
        }
        *ret = seq;
        return 0;
}

int kdl__subsample_sequences(kdl_h5file *fa, const kdl_pair *pair, size_t n, size_t count,
                             size_t per_seq, uint64_t seed, uint64_t stream, size_t **ret,
                             size_t *ret_n)
{
        int64_t *seq = NULL;
        int err;

        assert(fa && ret && ret_n);
        err = read_sequences(fa, pair, n, &seq);
        err = err ?: kdl_sample_select_sequences(n, seq, count, per_seq, seed, stream, ret, ret_n);
        free(seq);
        return err;
}

int kdl__cka_subsample(kdl_h5file *fa, const kdl_pair *pair, size_t n,
                       const struct kdl_run_cka_opts *o, uint64_t stream, size_t **ret,
                       size_t *ret_n)
{
        assert(fa && o && ret && ret_n);
        if (!o->sequences)
                return kdl_sample_select(n, NULL, 0, o->subsample, o->seed, stream, ret, ret_n);
        return kdl__subsample_sequences(fa, pair, n, o->subsample, o->per_sequence, o->seed, stream,
                                        ret, ret_n);
}
