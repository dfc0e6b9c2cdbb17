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

/* What student @k's checkpoint @cp holds at once: the jobs of kl, cka and summary on the
 * stream they share with the others; @cka is a begun CKA run on the teacher and that
 * student. */
static int checkpoint_need(struct kdl__report *r, const struct kdl__report_opts *a,
                           struct kdl__cka_run *cka, size_t k, const struct kdl_ckpair *cp,
                           kdl__need *ret)
{
        const kdl_pair *pair = r->in->pairs[k];
        struct kdl_ckpair ckp = {.main = cp->partner, .partner = cp->main};
        struct kdl_stream_opts so = kdl_run_stream_opts(&r->o->common);
        kdl__need nd = {.analysis = ret->analysis}, kl = {.analysis = "kl"},
                  ck = {.analysis = "cka"}, sm = {.analysis = "summary"};
        struct kdl_stream_cost c;
        size_t rows;
        int err;

        kdl_stream_cost_init(&c, pair);
        err = kdl__kl_job_cost(r->in, &a->kl, k, cp, &c);
        err = err < 0 ? err : kdl__cka_job_cost(cka, 0, &ckp, &c);
        err = err < 0 ? err : kdl__summary_job_cost(r->in, &a->summary, k, cp, &c);
        rows = kdl_stream_cost_rows(&c, pair->n, &so);
        err = err
                      ?: kdl__need_add(
                                 &nd, kdl_stream_cost_bytes(&c, pair->n, &so), KDL_LEVER_BLOCK_ROWS,
                                 "blocks of %zu rows of the datasets of kl, cka and summary", rows);
        err = err ?: kdl__kl_job_need(r->in, &a->kl, k, cp, rows, &kl);
        err = err ?: kdl__cka_job_need(cka, 0, &ckp, rows, &ck);
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

int kdl__report_need(struct kdl__report *r, kdl__need *ret)
{
        struct kdl__report_opts a;
        int err = 0;

        kdl__report_opts(r, &a);
        for (size_t k = 0; k < r->in->nstudents && !err; k++) {
                /* The CKA of this student alone, as student_checkpoint() begins it. */
                kdl_inputs one = kdl__report_one(r, k);
                struct kdl__cka_run *cka = NULL;
                kdl_doc *scratch = NULL;

                err = kdl_doc_new("cka", &scratch);
                err = err ?: kdl__cka_begin(&one, &a.cka, scratch, &cka);
                for (size_t c = 0; c < r->nsel[k] && !err; c++)
                        err = checkpoint_need(r, &a, cka, k, &r->sel[k][c], ret);
                kdl__cka_abort(cka);
                kdl_doc_free(scratch);
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
