/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the block reader.  Open a dump (schema problems or not), then
 * read every dataset of its first checkpoint, /labels and /sample_ids in row
 * blocks, under every spatial rule a dataset's rank allows, once in stored
 * order and once through a reversing row map.
 */
#include <stdbool.h>
#include <stdlib.h>

#include "loaders/h5.h"
#include "tests/fuzz/fuzz-file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Rows per block: small and odd, so that blocks end inside chunks. */
#define BLOCK 7

static void read_all(kdl_h5file *f, const kdl_dsinfo *ds, enum kdl_spatial rule, bool reverse)
{
        kdl_h5reader *r = NULL;
        size_t *map = NULL, rows, cols;
        double *block = NULL;

        if (!ds || kdl_h5_reader_open(f, ds, rule, &r) < 0)
                return;
        rows = kdl_h5_reader_rows(r);
        cols = kdl_h5_reader_cols(r);
        if (rows > FUZZ_MAX_ROWS || cols > FUZZ_MAX_COLS || ds->ndim < 1 || ds->shape[0] != rows)
                goto out;
        for (size_t k = 1; k < ds->ndim && k < KDL_MAX_DIMS; k++)
                if (ds->shape[k] > FUZZ_MAX_COLS)
                        goto out; /* the raw row before a spatial rule */
        if (reverse) {
                map = malloc((rows ? rows : 1) * sizeof(*map));
                if (!map)
                        goto out;
                for (size_t i = 0; i < rows; i++)
                        map[i] = rows - 1 - i;
                kdl_h5_reader_set_rows(r, map, rows);
        }
        kdl_h5_reader_allow_nonfinite(r, reverse);
        block = malloc(BLOCK * (cols ? cols : 1) * sizeof(*block));
        if (!block)
                goto out;
        for (size_t r0 = 0; r0 < rows; r0 += BLOCK) {
                size_t r1 = r0 + BLOCK < rows ? r0 + BLOCK : rows;

                if (kdl_h5_reader_read(r, r0, r1, block) < 0)
                        break;
        }
out:
        free(block);
        kdl_h5_reader_close(r);
        free(map);
}

static void read_rules(kdl_h5file *f, const kdl_dsinfo *ds)
{
        if (!ds)
                return;
        for (int rule = 0; rule < KDL_SPATIAL_COUNT_; rule++) {
                read_all(f, ds, (enum kdl_spatial) rule, rule == 0);
                if (ds->ndim < 3)
                        break; /* the rule only matters for ranks 3 and 4 */
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct fuzz_file in;
        kdl_h5file *f = NULL;
        const kdl_dump *d;
        int64_t *labels = NULL;

        if (fuzz_file_open(&in, data, size) < 0)
                return 0;
        if (kdl_h5_open(in.path, &f) < 0)
                goto out;
        d = kdl_h5_dump(f);
        if (d->labels && d->labels->ndim == 1 && d->labels->shape[0] <= FUZZ_MAX_ROWS &&
            kdl_h5_read_labels(f, &labels) == 0)
                free(labels);
        read_rules(f, d->sample_ids);
        if (d->ncheckpoints) {
                const kdl_checkpoint *ck = &d->checkpoints[0];

                read_rules(f, ck->logits);
                read_rules(f, ck->grad_logits);
                read_rules(f, ck->head_weight);
                read_rules(f, ck->head_bias);
                for (size_t j = 0; j < ck->nlayers; j++) {
                        read_rules(f, &ck->layers[j].feature);
                        read_rules(f, ck->layers[j].gradient);
                }
        }
        kdl_h5_close(f);
out:
        fuzz_file_close(&in);
        return 0;
}
