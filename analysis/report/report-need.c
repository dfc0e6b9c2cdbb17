/* SPDX-License-Identifier: MIT */
/* What the report needs (report-internal.h): the analyses of a student checkpoint share one
 * stream and run together, so their needs add up. */
#include <stdlib.h>

#include "analysis/cka-internal.h"
#include "analysis/kl-internal.h"
#include "analysis/summary-internal.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* NEEDSWORK: split, dims (their student and teacher jobs) and layers (run alone, after the
 * streams) do not state their needs yet; once they do, theirs join kl's, cka's and summary's here.
 */
const char kdl__report_need_note[] =
        "the need counts kl, cka, summary and the stream they share with split and dims; "
        "split, dims and layers do not state their needs yet";

/* What student @k's checkpoint @c holds at once: the jobs of kl, cka (of the CKA runs @sc,
 * as its stream gets them) and summary on the stream they share with the others. */
static int checkpoint_need(struct kdl__report *r, const struct kdl__report_opts *a,
                           struct kdl__report_cka *sc, size_t k, size_t c, kdl__need *ret)
{
        const struct kdl_ckpair *cp = &r->sel[k][c];
        const kdl_pair *pair = r->in->pairs[k];
        struct kdl_stream_opts so = kdl_run_stream_opts(&r->o->common);
        kdl__need nd = {.analysis = ret->analysis}, kl = {.analysis = "kl"},
                  ck = {.analysis = "cka"}, sm = {.analysis = "summary"};
        struct kdl_stream_cost cost;
        size_t rows;
        int err;

        kdl_stream_cost_init(&cost, pair);
        err = kdl__kl_job_cost(r->in, &a->kl, k, cp, &cost);
        err = err < 0 ? err : kdl__report_cka_cost(sc, c, &cost);
        err = err < 0 ? err : kdl__summary_job_cost(r->in, &a->summary, k, cp, &cost);
        rows = kdl_stream_cost_rows(&cost, pair->n, &so);
        err = err < 0 ? err
                      : kdl__need_add(&nd, kdl_stream_cost_bytes(&cost, pair->n, &so),
                                      KDL_LEVER_BLOCK_ROWS,
                                      "blocks of %zu rows of the datasets of kl, cka and summary",
                                      rows);
        err = err ?: kdl__kl_job_need(r->in, &a->kl, k, cp, rows, &kl);
        err = err ?: kdl__report_cka_need(sc, c, rows, &ck);
        err = err ?: kdl__summary_job_need(r->in, &a->summary, k, cp, rows, &sm);
        err = err ?: kdl__need_merge(&nd, &kl);
        err = err ?: kdl__need_merge(&nd, &ck);
        err = err ?: kdl__need_merge(&nd, &sm);
        if (!err)
                kdl__need_max(ret, &nd);
        kdl__need_release(&sm);
        kdl__need_release(&ck);
        kdl__need_release(&kl);
        kdl__need_release(&nd);
        return err;
}

/* The largest need of student @k's checkpoints, their CKA passes shared or not, into @ret. */
static int student_need(struct kdl__report *r, const struct kdl__report_opts *a, size_t k,
                        bool share, kdl__need *ret)
{
        struct kdl__report_cka sc;
        int err;

        err = kdl__report_cka_begin(r, &a->cka, k, share, &sc);
        for (size_t c = 0; c < r->nsel[k] && !err; c++)
                err = checkpoint_need(r, a, &sc, k, c, ret);
        kdl__report_cka_release(&sc);
        return err;
}

int kdl__report_need(struct kdl__report *r, kdl__need *ret)
{
        struct kdl__report_opts a;
        int err = 0;

        kdl__report_opts(r, &a);
        for (size_t k = 0; k < r->in->nstudents && !err; k++) {
                kdl__need shared = {.analysis = ret->analysis}, alone = {.analysis = ret->analysis};
                size_t ts, ta;

                err = student_need(r, &a, k, true, &shared);
                err = err ?: student_need(r, &a, k, false, &alone);
                ts = kdl__need_total(&shared);
                ta = kdl__need_total(&alone);
                r->share[k] = ts <= r->o->common.memory || ts <= ta;
                if (!err)
                        kdl__need_max(ret, r->share[k] ? &shared : &alone);
                kdl__need_release(&alone);
                kdl__need_release(&shared);
        }
        /* The teacher's passes, before the students': summary's job of each checkpoint a
         * student checkpoint is compared with, alone on its stream. */
        for (size_t k = 0; k < r->in->nstudents && !err; k++)
                for (size_t c = 0; c < r->nsel[k] && !err; c++) {
                        kdl__need t = {.analysis = "summary"}, nd = {.analysis = ret->analysis};

                        err = kdl__summary_teacher_need(r->in, &a.summary, r->sel[k][c].partner,
                                                        &t);
                        err = err ?: kdl__need_merge(&nd, &t);
                        if (!err)
                                kdl__need_max(ret, &nd);
                        kdl__need_release(&nd);
                        kdl__need_release(&t);
                }
        return err;
}
