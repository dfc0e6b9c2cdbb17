/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>

#include "analysis/dims.h"
#include "analysis/dims-internal.h"
#include "metrics/base/banned.h"

/* What dims would hold, from the shapes alone (--plan): its jobs run one at a time, the
 * teacher's checkpoints first, then each student's (as kdl_run_dims() runs them). */

int kdl__dims_need(struct kdl__dims_run *r, const kdl_inputs *in, const struct kdl_run_dims_opts *o,
                   kdl__need *ret)
{
        struct kdl_ckpair *sel = NULL;
        size_t nsel = 0;
        int err = 0;

        /* The jobs run one at a time: the teacher's checkpoints, then each student's. */
        if (in->teacher) {
                err = kdl__dims_teacher_checkpoints(in, o, &sel, &nsel);
                for (size_t k = 0; k < nsel && !err; k++)
                        err = kdl__dims_job_need(r, in->teacher, sel[k].main, sel[k].main,
                                                 kdl_h5_dump(in->teacher)->n, NULL, ret);
                free(sel);
                sel = NULL;
        }
        for (size_t s = 0; s < in->nstudents && !err; s++) {
                const kdl_pair *pair = in->pairs[s];

                err = kdl_select_checkpoints(in->students[s], in->teacher, o->common.checkpoint,
                                             o->common.teacher_checkpoint, &sel, &nsel);
                for (size_t k = 0; k < nsel && !err; k++)
                        err = kdl__dims_job_need(r, in->students[s], sel[k].main, sel[k].partner,
                                                 pair ? pair->n : kdl_h5_dump(in->students[s])->n,
                                                 pair, ret);
                free(sel);
                sel = NULL;
        }
        return err;
}

int kdl_run_dims_plan(const kdl_inputs *in, const struct kdl_run_dims_opts *o, kdl_doc *doc)
{
        kdl__need nd = {.analysis = "dims"};
        struct kdl__dims_run *r = NULL;
        int err;

        err = kdl__dims_begin(in, o, doc, &r);
        err = err ?: kdl__dims_need(r, in, o, &nd);
        err = err ?: kdl__need_doc(&nd, 1, o->common.memory, KDL_DIMS_LEVERS, doc);
        kdl__need_release(&nd);
        kdl__dims_abort(r);
        return err;
}
