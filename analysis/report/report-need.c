/* SPDX-License-Identifier: MIT */
/* What the report needs (report-internal.h): the analyses of a student checkpoint share one
 * stream and run together, so their needs add up. */
#include <stdlib.h>

#include "analysis/cka-internal.h"
#include "analysis/dims-internal.h"
#include "analysis/kl-internal.h"
#include "analysis/layers-internal.h"
#include "analysis/split-internal.h"
#include "analysis/summary-internal.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* Split's and dims' jobs ride the students' streams: split's own parts (its states, and
 * its blocks, which the shared stream makes fewer: an upper bound) and dims' job of each
 * checkpoint join kl's, cka's and summary's; layers runs alone, after the streams. */
const char kdl__report_need_note[] =
        "the need is the largest of the students' passes (kl, cka, summary, split and dims on "
        "one stream; split's own blocks counted too, an upper bound), the teacher's passes "
        "(summary and dims), layers, which runs alone after them, and the kl --topk run of the "
        "section on sparse teacher targets when there is one (alone too)";

/* What student @k's checkpoint @c holds at once: the jobs of kl, cka (of the CKA runs @sc,
 * as its stream gets them) and summary on the stream they share with the others. */
static int checkpoint_need(struct kdl__report *r, const struct kdl__report_opts *a,
                           struct kdl__report_cka *sc, struct kdl__dims_run *dr,
                           const kdl__need *sp, size_t k, size_t c, kdl__need *ret)
{
        const struct kdl_ckpair *cp = &r->sel[k][c];
        const kdl_pair *pair = r->in->pairs[k];
        struct kdl_stream_opts so = kdl_run_stream_opts(&r->o->common);
        kdl__need nd = {.analysis = ret->analysis}, kl = {.analysis = "kl"},
                  ck = {.analysis = "cka"}, sm = {.analysis = "summary"}, dm = {.analysis = "dims"};
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
        err = err
                      ?: kdl__dims_job_need(dr, r->in->students[k], cp->main, cp->partner, pair->n,
                                            pair, &dm);
        err = err ?: kdl__need_merge(&nd, &dm);
        err = err ?: kdl__need_merge(&nd, sp);
        if (!err)
                kdl__need_max(ret, &nd);
        kdl__need_release(&dm);
        kdl__need_release(&sm);
        kdl__need_release(&ck);
        kdl__need_release(&kl);
        kdl__need_release(&nd);
        return err;
}

/* The largest need of student @k's checkpoints, their CKA passes shared or not, into @ret. */
static int student_need(struct kdl__report *r, const struct kdl__report_opts *a,
                        struct kdl__dims_run *dr, const kdl__need *sp, size_t k, bool share,
                        kdl__need *ret)
{
        struct kdl__report_cka sc;
        int err;

        err = kdl__report_cka_begin(r, &a->cka, k, share, &sc);
        for (size_t c = 0; c < r->nsel[k] && !err; c++)
                err = checkpoint_need(r, a, &sc, dr, sp, k, c, ret);
        kdl__report_cka_release(&sc);
        return err;
}

int kdl__report_need(struct kdl__report *r, kdl__need *ret)
{
        struct kdl__report_opts a;
        struct kdl__dims_run *dr = NULL;
        kdl__need sp = {.analysis = "split"}, ly = {.analysis = "layers"},
                  others = {.analysis = ret->analysis};
        kdl_inputs teacher_only = *r->in;
        kdl_doc *scratch = NULL;
        int err;

        kdl__report_opts(r, &a);
        teacher_only.nstudents = 0;
        err = kdl_doc_new("dims", &scratch);
        err = err ?: kdl__dims_begin(r->in, &a.dims, scratch, &dr);
        /* Split's domain level takes what the others leave: their students' passes first,
         * without split, then split planned within the rest (at least a sixteenth). */
        for (size_t k = 0; k < r->in->nstudents && !err; k++)
                err = student_need(r, &a, dr, &sp, k, true, &others);
        if (!err) {
                size_t mem = r->o->common.memory, used = kdl__need_total(&others), over;

                r->split_memory = used < mem - mem / 16 ? mem - used : mem / 16;
                kdl__report_opts(r, &a);
                err = kdl__split_need(r->in, &a.split, &sp);
                /* Its budget bounds its states; its blocks and head come on top: once more
                 * with them taken off. */
                over = kdl_sat_add(used, kdl__need_total(&sp));
                if (!err && over > mem && r->split_memory > over - mem + mem / 16) {
                        r->split_memory -= over - mem;
                        kdl__need_release(&sp);
                        kdl__report_opts(r, &a);
                        err = kdl__split_need(r->in, &a.split, &sp);
                }
        }
        for (size_t k = 0; k < r->in->nstudents && !err; k++) {
                kdl__need shared = {.analysis = ret->analysis}, alone = {.analysis = ret->analysis};
                size_t ts, ta;

                err = student_need(r, &a, dr, &sp, k, true, &shared);
                err = err ?: student_need(r, &a, dr, &sp, k, false, &alone);
                ts = kdl__need_total(&shared);
                ta = kdl__need_total(&alone);
                r->share[k] = ts <= r->o->common.memory || ts <= ta;
                if (!err)
                        kdl__need_max(ret, r->share[k] ? &shared : &alone);
                kdl__need_release(&alone);
                kdl__need_release(&shared);
        }
        /* The teacher's passes, before the students': summary's and dims' jobs of each
         * checkpoint a student checkpoint is compared with, on its stream. */
        for (size_t k = 0; k < r->in->nstudents && !err; k++)
                for (size_t c = 0; c < r->nsel[k] && !err; c++) {
                        const struct kdl_ckpair *cp = &r->sel[k][c];
                        kdl__need t = {.analysis = "summary"}, d = {.analysis = "dims"},
                                  nd = {.analysis = ret->analysis};

                        err = kdl__summary_teacher_need(r->in, &a.summary, cp->partner, &t);
                        err = err
                                      ?: kdl__dims_job_need(
                                                 dr, r->in->teacher, cp->partner, cp->partner,
                                                 kdl_h5_dump(r->in->teacher)->n, NULL, &d);
                        err = err ?: kdl__need_merge(&nd, &t);
                        err = err ?: kdl__need_merge(&nd, &d);
                        if (!err)
                                kdl__need_max(ret, &nd);
                        kdl__need_release(&nd);
                        kdl__need_release(&d);
                        kdl__need_release(&t);
                }
        /* layers, alone after the streams (it reads the labels to count the classes). */
        err = err ?: kdl__layers_need(&teacher_only, &a.layers, &ly);
        if (!err) {
                kdl__need nd = {.analysis = ret->analysis};

                err = kdl__need_merge(&nd, &ly);
                if (!err)
                        kdl__need_max(ret, &nd);
                kdl__need_release(&nd);
        }
        err = err ?: kdl__report_topk_need(r, ret);
        ret->reads = KDL_LAYERS_READS;
        kdl__need_release(&ly);
        kdl__need_release(&sp);
        kdl__need_release(&others);
        kdl__dims_abort(dr);
        kdl_doc_free(scratch);
        return err;
}
