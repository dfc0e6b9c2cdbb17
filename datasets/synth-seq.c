/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "loaders/h5write.h"
#include "datasets/synth-internal.h"
#include "metrics/base/banned.h"

/*
 * Token dumps (kdl-synth --sequence-length L): the samples as tokens of sequences of L
 * consecutive samples, sample i at position i mod L of sequence i / L (the last sequence
 * shorter when L does not divide N): /sequence_ids (int64 [N]) and /positions (int32 [N])
 * in each dump, in its own row order.
 */

int kdl__synth_seq_open(const struct kdl__synth_model *m, kdl_h5w *h5, struct kdl__synth_seq *q)
{
        size_t shape[1] = {m->N};
        int err;

        if (!m->o->sequence_length)
                return 0;
        q->ints = kdl_new(int64_t, m->block);
        if (!q->ints)
                return -ENOMEM;
        err = kdl_h5w_dataset_open(h5, "/sequence_ids", 1, shape, KDL_STORE_I64, m->o->chunk_rows,
                                   m->o->gzip, &q->seq);
        return err
                       ?: kdl_h5w_dataset_open(h5, "/positions", 1, shape, KDL_STORE_I32,
                                               m->o->chunk_rows, m->o->gzip, &q->pos);
}

int kdl__synth_seq_write(const struct kdl__synth_model *m, struct kdl__synth_seq *q,
                         const size_t *idx, size_t r0, size_t B)
{
        size_t L = m->o->sequence_length;
        int err;

        if (!q->seq)
                return 0;
        for (size_t b = 0; b < B; b++)
                q->ints[b] = (int64_t) (idx[b] / L);
        err = kdl_h5w_write_rows_i64(q->seq, r0, r0 + B, q->ints);
        for (size_t b = 0; b < B; b++)
                q->ints[b] = (int64_t) (idx[b] % L);
        return err ?: kdl_h5w_write_rows_i64(q->pos, r0, r0 + B, q->ints);
}

int kdl__synth_seq_close(struct kdl__synth_seq *q)
{
        int err = kdl_h5w_dataset_close(q->seq), e;

        e = kdl_h5w_dataset_close(q->pos);
        err = err < 0 ? err : e;
        free(q->ints);
        memset(q, 0, sizeof(*q));
        return err;
}
