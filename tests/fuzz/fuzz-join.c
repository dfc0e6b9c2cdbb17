/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: the teacher/student join.  A fixed valid teacher and the
 * fuzzed student go through kdl_inputs_open() (open, schema check, pairing,
 * possibly on /sample_ids), then one streamed pass reads the teacher's and
 * the student's logits and feature layers and the labels of the last
 * checkpoints, as the analysis commands do.
 *
 * The teacher is KDL_FUZZ_TEACHER from the environment, else the one the
 * build writes with kdl-synth (tests/fuzz/meson.build); the seeds are
 * students of the same kdl-synth pair (tests/fuzz/mkseeds.py).
 */
#include <stdlib.h>

#include "analysis/inputs.h"
#include "loaders/stream.h"
#include "tests/fuzz/fuzz-file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int add(kdl_stream *s, kdl_h5file *f, const kdl_dsinfo *ds, bool student)
{
        if (!ds || kdl_dsinfo_width(ds, KDL_SPATIAL_FLATTEN) > FUZZ_MAX_COLS)
                return -1;
        return kdl_stream_add(s, f, ds, KDL_SPATIAL_AVG, student);
}

static void stream_pass(kdl_inputs *in, const struct kdl_ckpair *cp, bool skip)
{
        struct kdl_stream_opts o = {.block_rows = 5, .skip_nonfinite = skip};
        const kdl_pair *pair = in->pairs[0];
        kdl_stream *s = NULL;

        if (!pair || pair->n > FUZZ_MAX_ROWS || kdl_stream_new(pair->n, pair, &o, &s) < 0)
                return;
        (void) add(s, in->teacher, cp->partner->logits, false);
        (void) add(s, in->students[0], cp->main->logits, true);
        (void) kdl_stream_add_labels(s, in->teacher);
        for (size_t j = 0; j < cp->partner->nlayers; j++)
                (void) add(s, in->teacher, &cp->partner->layers[j].feature, false);
        for (size_t j = 0; j < cp->main->nlayers; j++)
                (void) add(s, in->students[0], &cp->main->layers[j].feature, true);
        while (kdl_stream_next(s) > 0)
                for (size_t i = 0; i < kdl_stream_count(s); i++)
                        (void) kdl_stream_block(s, (int) i);
        kdl_stream_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *teacher = getenv("KDL_FUZZ_TEACHER");
        struct kdl_ckpair *cks = NULL;
        struct fuzz_file in;
        kdl_inputs *inputs = NULL;
        const char *students[1];
        size_t n = 0;

        if (!teacher)
                teacher = KDL_FUZZ_TEACHER;
        if (fuzz_file_open(&in, data, size) < 0)
                return 0;
        students[0] = in.path;
        if (kdl_inputs_open(teacher, students, 1, &inputs) < 0)
                goto out;
        if (kdl_select_checkpoints(inputs->students[0], inputs->teacher, NULL, NULL, &cks, &n) ==
                    0 &&
            n > 0 && cks[0].partner)
                stream_pass(inputs, &cks[0], size & 1);
        free(cks);
        kdl_inputs_free(inputs);
out:
        fuzz_file_close(&in);
        return 0;
}
