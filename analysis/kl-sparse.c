/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/kl-sparse.h"
#include "loaders/stream.h"
#include "analysis/kl-topk.h"
#include "analysis/kl-topk-internal.h"
#include "analysis/pass.h"
#include "metrics/base/banned.h"

/* `kdlens kl` with a sparse-only teacher (logits_topk/, no dense logits): what those give
 * exactly, table "kl_sparse" (metrics/kl-sparse.h, docs/lm.md). */

struct sparse_job {
        const struct kdl_run_kl_opts *o;
        kdl_h5file *tf, *sf;
        const kdl_checkpoint *ct, *cs;
        int ix, val, lse, zs; /* stream indices; lse -1 without */
        kdl_kl_sparse_state *s;
        kdl_table *t;
        kdl_doc *doc;
};

static const kdl_checkpoint *teacher_checkpoint(const kdl_inputs *in,
                                                const struct kdl_run_kl_opts *o)
{
        struct kdl_ckpair *cks = NULL;
        const kdl_checkpoint *ct = NULL;
        size_t nck = 0;

        if (!in->teacher || in->nstudents == 0 ||
            kdl_select_checkpoints(in->students[0], in->teacher, o->common.checkpoint,
                                   o->common.teacher_checkpoint, &cks, &nck) < 0)
                return NULL;
        ct = nck ? cks[0].partner : NULL;
        free(cks);
        return ct;
}

bool kdl_kl_teacher_sparse(const kdl_inputs *in, const struct kdl_run_kl_opts *o)
{
        const kdl_checkpoint *ct = teacher_checkpoint(in, o);

        return ct && !ct->logits && ct->topk_indices;
}

static int add(kdl__job *job, kdl_stream *st, kdl_h5file *f, const kdl_dsinfo *ds, bool student)
{
        return ds ? kdl__job_add(job, st, f, ds, KDL_SPATIAL_AVG, student) : -1;
}

static int sparse_attach(kdl__job *job, kdl_stream *st)
{
        struct sparse_job *j = job->ctx;
        const kdl_checkpoint *ct = j->ct;
        kdl_kl_sparse_opts so = {
                .c = kdl_h5_dump(j->tf)->c,
                .k = ct->topk_indices->shape[1],
                .ntau = j->o->common.ntau,
                .tau = j->o->common.tau,
                .logprobs = !ct->topk_values,
                .lse = ct->topk_lse && ct->topk_values,
        };
        int err;

        if (!j->cs->logits)
                return kdl_error(-KDL_EMISSING, "'%s': %s/logits: expected [N, C], found none",
                                 kdl_h5_dump(j->sf)->path, j->cs->group);
        err = kdl_kl_sparse_state_new(&so, &j->s);
        if (err < 0)
                return err;
        j->ix = add(job, st, j->tf, ct->topk_indices, false);
        j->val = add(job, st, j->tf, ct->topk_values ? ct->topk_values : ct->topk_logprobs, false);
        j->lse = so.lse ? add(job, st, j->tf, ct->topk_lse, false) : -1;
        j->zs = add(job, st, j->sf, j->cs->logits, true);
        if (j->ix < -1 || j->val < -1 || j->lse < -1 || j->zs < -1)
                return j->ix < -1 ? j->ix : j->val < -1 ? j->val : j->lse < -1 ? j->lse : j->zs;
        return 0;
}

static int sparse_block(kdl__job *job, kdl_stream *st, unsigned pass)
{
        struct sparse_job *j = job->ctx;
        kdl_tensor ix, val, lse, zs;
        kdl_kl_sparse_block b = {.idx = &ix, .val = &val, .zs = &zs};

        (void) pass;
        if (kdl_stream_rows(st) == 0)
                return 0;
        ix = kdl_stream_block(st, j->ix);
        val = kdl_stream_block(st, j->val);
        zs = kdl_stream_block(st, j->zs);
        if (j->lse >= 0) {
                lse = kdl_stream_block(st, j->lse);
                b.lse = &lse;
        }
        return kdl_kl_sparse_accumulate(j->s, &b);
}

static int put_row(struct sparse_job *j, double tau, const char *name, const kdl_moments *m)
{
        kdl_table *t = j->t;
        int err;

        err = kdl__kl_topk_keys(t, kdl_h5_dump(j->sf)->path, j->cs, j->ct, tau);
        err = err ?: kdl_table_put_str(t, "approximation", name);
        err = err ?: kdl_table_put_int(t, "k", (long long) j->ct->topk_indices->shape[1]);
        err = err ?: kdl_table_put_real(t, "mean", m->mean);
        err = err
                      ?: kdl_table_put_real(t, "sd",
                                            m->n > 1 ? sqrt(m->m2 / (double) (m->n - 1))
                                                     : (double) NAN);
        err = err ?: kdl_table_put_int(t, "samples", (long long) m->n);
        return err;
}

static int sparse_end(kdl__job *job, kdl_stream *st, unsigned pass)
{
        struct sparse_job *j = job->ctx;
        kdl_kl_sparse_result *r = NULL;
        int err;

        (void) st;
        (void) pass;
        err = kdl_kl_sparse_finalize(j->s, &r);
        err = err ?: put_row(j, 1.0, "hard", &r->v[KDL_KL_SPARSE_HARD]);
        if (!err && r->normaliser) {
                err = put_row(j, 1.0, "teacher_mass", &r->v[KDL_KL_SPARSE_MASS]);
                err = err ?: put_row(j, 1.0, "topk_tail", &r->v[KDL_KL_SPARSE_TAIL]);
        }
        for (size_t t = 0; !err && t < r->ntau; t++)
                err = put_row(j, j->o->common.tau[t], "topk_renorm",
                              &r->v[KDL_KL_SPARSE_RENORM + t]);
        err = err
                      ?: kdl_doc_add_note(
                                 j->doc,
                                 "'%s' checkpoint %s holds only sparse logits (k = %zu): the "
                                 "exact KL needs the teacher's whole distribution and is not "
                                 "computed%s",
                                 kdl_h5_dump(j->tf)->path, j->ct->name,
                                 j->ct->topk_indices->shape[1],
                                 r && r->normaliser ? "; topk_tail (tau 1) is a lower bound of it"
                                                    : "; without logsumexp or logprobs neither the "
                                                      "teacher's mass on its top k nor topk_tail");
        free(r);
        return err;
}

int kdl_run_kl_sparse(const kdl_inputs *in, const struct kdl_run_kl_opts *o, kdl_doc *doc)
{
        struct sparse_job j = {.o = o, .tf = in->teacher, .doc = doc};
        struct kdl_stream_opts so = kdl_run_stream_opts(&o->common);
        int err;

        assert(in->teacher && in->nstudents >= 1);
        err = kdl_table_new("kl_sparse", "What a sparse-only teacher gives exactly", &j.t);
        err = err ?: kdl_inputs_describe(in, doc);
        for (size_t s = 0; !err && s < in->nstudents; s++) {
                struct kdl_ckpair *cks = NULL;
                size_t nck = 0;

                err = kdl_select_checkpoints(in->students[s], in->teacher, o->common.checkpoint,
                                             o->common.teacher_checkpoint, &cks, &nck);
                for (size_t c = 0; c < nck && !err; c++) {
                        kdl__job job = {.ctx = &j,
                                        .attach = sparse_attach,
                                        .block = sparse_block,
                                        .end = sparse_end};
                        kdl_stream *st = NULL;

                        j.sf = in->students[s];
                        j.cs = cks[c].main;
                        j.ct = cks[c].partner;
                        if (!j.ct->topk_indices || j.ct->logits)
                                err = kdl_error(-KDL_EUSAGE,
                                                "'%s': checkpoint %s: expected only sparse "
                                                "logits, as the first checkpoint compared",
                                                kdl_h5_dump(j.tf)->path, j.ct->name);
                        err = err ?: kdl_stream_new(in->pairs[s]->n, in->pairs[s], &so, &st);
                        err = err ?: kdl__jobs_run(st, &job, 1, NULL);
                        kdl_stream_free(st);
                        kdl_kl_sparse_state_free(j.s);
                        j.s = NULL;
                }
                free(cks);
        }
        if (!err) {
                kdl_table_set_label(j.t, "tau", "τ");
                err = kdl_doc_add_table(doc, j.t);
                j.t = NULL;
        }
        kdl_table_free(j.t);
        return err;
}
