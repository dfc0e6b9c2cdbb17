/* SPDX-License-Identifier: MIT */
/* Each student's CKA runs in the report (report-internal.h): one per selected checkpoint,
 * their jobs on the checkpoints' streams, and what those jobs read and need. */
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

void kdl__report_cka_release(struct kdl__report_cka *sc)
{
        for (size_t c = 0; c < sc->n; c++) {
                if (sc->runs)
                        kdl__cka_abort(sc->runs[c]);
                if (sc->docs)
                        kdl_doc_free(sc->docs[c]);
        }
        free(sc->runs);
        free(sc->docs);
        free(sc->ckp);
        free(sc->done);
        free(sc->group);
        free(sc->gckp);
        *sc = (struct kdl__report_cka){0};
}

int kdl__report_cka_begin(const struct kdl__report *r, const struct kdl_run_cka_opts *o, size_t k,
                          bool share, struct kdl__report_cka *sc)
{
        size_t n = r->nsel[k];
        int err = 0;

        *sc = (struct kdl__report_cka){.one = kdl__report_one(r, k),
                                       .runs = kdl_new(struct kdl__cka_run *, n),
                                       .docs = kdl_new(kdl_doc *, n),
                                       .ckp = kdl_new(struct kdl_ckpair, n),
                                       .done = kdl_new(bool, n),
                                       .group = kdl_new(struct kdl__cka_run *, n),
                                       .gckp = kdl_new(struct kdl_ckpair, n),
                                       .n = n,
                                       .share = share};
        if (!sc->runs || !sc->docs || !sc->ckp || !sc->done || !sc->group || !sc->gckp)
                return -ENOMEM;
        for (size_t c = 0; c < n && !err; c++) {
                struct kdl_run_cka_opts oc = *o;

                /* --measure: the last checkpoint's alone (section-measures.c). */
                if (c + 1 < n)
                        oc.measures = 1u << KDL_RUN_CKA_MEASURE_CKA;
                /* The teacher's checkpoint is A, as kdlens cka -t T -s S compares them. */
                sc->ckp[c] = (struct kdl_ckpair){.main = r->sel[k][c].partner,
                                                 .partner = r->sel[k][c].main};
                err = kdl_doc_new("cka", &sc->docs[c]);
                err = err ?: kdl__cka_begin(&sc->one, &oc, sc->docs[c], &sc->runs[c]);
        }
        return err;
}

/* The runs not done yet from checkpoint @c on that compare the same teacher checkpoint as
 * @c, into sc->group and sc->gckp: their count, 1 when @c's runs alone. */
static size_t group(struct kdl__report_cka *sc, size_t c)
{
        size_t ng = 0;

        for (size_t i = c; i < sc->n; i++)
                if ((i == c || sc->share) && !sc->done[i] && sc->ckp[i].main == sc->ckp[c].main) {
                        sc->group[ng] = sc->runs[i];
                        sc->gckp[ng++] = sc->ckp[i];
                }
        return ng;
}

/* Checkpoint @c's CKA is on its stream (with the group's when @shared): they are done. */
static void mark(struct kdl__report_cka *sc, size_t c, bool shared)
{
        for (size_t i = c; i < sc->n; i++)
                sc->done[i] =
                        sc->done[i] || i == c || (shared && sc->ckp[i].main == sc->ckp[c].main);
}

int kdl__report_cka_job(struct kdl__report_cka *sc, size_t c, struct kdl__cka_shared **ret_sh,
                        kdl__job *ret)
{
        size_t ng;
        int shared;

        *ret_sh = NULL;
        if (sc->done[c])
                return 0;
        ng = group(sc, c);
        shared = ng > 1 ? kdl__cka_shared_new(sc->group, ng, 0, sc->gckp, ret_sh, ret) : 0;
        if (shared == 0)
                shared = kdl__cka_job(sc->runs[c], 0, &sc->ckp[c], ret);
        if (shared < 0)
                return shared;
        mark(sc, c, *ret_sh != NULL);
        return 1;
}

int kdl__report_cka_cost(struct kdl__report_cka *sc, size_t c, struct kdl_stream_cost *cost)
{
        size_t ng;
        int shared;

        if (sc->done[c])
                return 0;
        ng = group(sc, c);
        shared = ng > 1 ? kdl__cka_shared_cost(sc->group, ng, 0, sc->gckp, cost) : 0;
        return shared == 0 ? kdl__cka_job_cost(sc->runs[c], 0, &sc->ckp[c], cost) : shared;
}

int kdl__report_cka_need(struct kdl__report_cka *sc, size_t c, size_t rows, kdl__need *ret)
{
        size_t ng;
        int shared;

        if (sc->done[c])
                return 0;
        ng = group(sc, c);
        shared = ng > 1 ? kdl__cka_shared_need(sc->group, ng, 0, sc->gckp, rows, ret) : 0;
        if (shared == 0)
                shared = kdl__cka_job_need(sc->runs[c], 0, &sc->ckp[c], rows, ret);
        if (shared < 0)
                return shared;
        mark(sc, c, ng > 1 && shared == 1);
        return 0;
}
