/* SPDX-License-Identifier: MIT */
/* The calibration states as bytes, for the processes of an MPI run (metrics/calibration.h). */
#include <assert.h>
#include <stdlib.h>

#include "metrics/calibration-internal.h"
#include "metrics/pack.h"
#include "metrics/base/banned.h"

/*
 * The sums only: the embedded KL state is a per-block scratch (its per-sample
 * values are added to the sum kl as they come; kdl_calibration_merge() does
 * not read it), so it does not travel.
 */
int kdl_calibration_state_pack(const kdl_calibration_state *s, void **buf, size_t *len)
{
        size_t nb = s->o.bins;
        struct kdl__packer p = {0};

        assert(s && buf && len);
        kdl__pack(&p, &s->n, sizeof(s->n));
        kdl__pack(&p, &s->correct, sizeof(s->correct));
        kdl__pack(&p, &s->agree, sizeof(s->agree));
        kdl__pack(&p, &s->nll, sizeof(s->nll));
        kdl__pack(&p, &s->conf, sizeof(s->conf));
        kdl__pack(&p, &s->kl, sizeof(s->kl));
        kdl__pack(&p, s->bin, 3 * nb * sizeof(*s->bin));
        kdl__pack(&p, s->cls, 2 * s->o.c * nb * sizeof(*s->cls));
        return kdl__pack_done(&p, buf, len);
}

int kdl_calibration_state_merge_packed(kdl_calibration_state *s, const void *buf, size_t len)
{
        static const char what[] = "calibration";
        struct kdl__unpacker u = {buf, len, 0};
        size_t nb = s->o.bins;
        kdl_calibration_state from = {.o = s->o}; /* the same options; its own sums */
        void *bin = NULL, *cls = NULL;
        int err;

        assert(s && buf);
        err = kdl__unpack_get(&u, &from.n, sizeof(from.n), what);
        err = err ?: kdl__unpack_get(&u, &from.correct, sizeof(from.correct), what);
        err = err ?: kdl__unpack_get(&u, &from.agree, sizeof(from.agree), what);
        err = err ?: kdl__unpack_get(&u, &from.nll, sizeof(from.nll), what);
        err = err ?: kdl__unpack_get(&u, &from.conf, sizeof(from.conf), what);
        err = err ?: kdl__unpack_get(&u, &from.kl, sizeof(from.kl), what);
        err = err ?: kdl__unpack_dup(&u, 3 * nb * sizeof(double), &bin, what);
        err = err ?: kdl__unpack_dup(&u, 2 * s->o.c * nb * sizeof(double), &cls, what);
        err = err ?: kdl__unpack_end(&u, what);
        if (!err) {
                from.bin = bin;
                from.cls = cls;
                err = kdl_calibration_merge(s, &from);
        }
        free(bin);
        free(cls);
        return err;
}
