/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: opening a dump and cataloguing it, then what `kdlens inspect
 * --quick` does with it (the catalogue tables, schema problems, no values).
 */
#include <stdlib.h>

#include "analysis/inspect.h"
#include "loaders/h5.h"
#include "tests/fuzz/fuzz-file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Touch every field a command reads from the catalogue. */
static void walk(kdl_h5file *f)
{
        const kdl_dump *d = kdl_h5_dump(f);

        (void) kdl_h5_check(f);
        for (size_t k = 0; k < d->ncheckpoints; k++) {
                const kdl_checkpoint *ck = &d->checkpoints[k];

                if (kdl_h5_checkpoint(f, ck->name) == NULL)
                        abort(); /* a catalogued checkpoint must be found by its name */
                for (size_t j = 0; j < ck->nlayers; j++) {
                        const kdl_layer *l = &ck->layers[j];

                        if (kdl_h5_layer(ck, l->name) == NULL)
                                abort();
                        for (int r = 0; r < KDL_SPATIAL_COUNT_; r++)
                                (void) kdl_dsinfo_width(&l->feature, (enum kdl_spatial) r);
                }
                if (ck->head_input)
                        (void) kdl_h5_layer(ck, ck->head_input);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct kdl_run_inspect_opts quick;
        struct fuzz_file in;
        kdl_h5file *f = NULL;
        kdl_doc *doc = NULL;
        const char *paths[1];
        size_t nprob;

        kdl_run_inspect_opts_init(&quick);
        quick.scan_values = false;
        if (fuzz_file_open(&in, data, size) < 0)
                return 0;
        if (kdl_h5_open(in.path, &f) == 0) {
                walk(f);
                kdl_h5_close(f);
        }
        paths[0] = in.path;
        if (kdl_doc_new("inspect", &doc) == 0)
                (void) kdl_run_inspect(paths, 1, &quick, doc, &nprob);
        kdl_doc_free(doc);
        fuzz_file_close(&in);
        return 0;
}
