/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/kl-topk.h"
#include "loaders/stream.h"
#include "analysis/dist.h"
#include "analysis/kl-internal.h"
#include "analysis/kl-topk.h"
#include "analysis/kl-topk-internal.h"
#include "metrics/base/banned.h"

/* The top-k job runs beside kl's own job (analysis/kl.c) on one stream per
 * student checkpoint; it reads the two logits only. */

struct topk_job {
        const struct kdl_run_kl_opts *o;
        const size_t *k;
        size_t nk;
        kdl_h5file *tf, *sf;
        const kdl_checkpoint *ct, *cs;
        int zt, zs; /* stream indices */
        kdl_kl_topk_state *s;
        kdl_table *t;
};

static int topk_attach(kdl__job *job, kdl_stream *st)
{
        struct topk_job *j = job->ctx;
        enum kdl_spatial rule = j->o->common.spatial;
        const kdl_dsinfo *zt = j->ct->logits;
        kdl_kl_topk_opts ko;
        int err;

        /* kl's job has checked both logits are there with the same class count. */
        assert(zt && j->cs->logits && zt->ndim == 2);
        kdl_kl_topk_opts_init(&ko);
        ko.c = zt->shape[1];
        ko.ntau = j->o->common.ntau;
        ko.tau = j->o->common.tau;
        ko.nk = j->nk;
        ko.k = j->k;
        ko.reservoir = j->o->reservoir;
        ko.seed = j->o->seed;
        for (size_t i = 0; i < j->nk; i++)
                if (j->k[i] > ko.c)
                        return kdl_error(-KDL_ESHAPE,
                                         "'%s': %s: --topk %zu: expected at most %zu (its classes)",
                                         kdl_h5_dump(j->tf)->path, zt->path, j->k[i], ko.c);
        err = kdl_kl_topk_state_new(&ko, &j->s);
        if (err < 0)
                return err;
        j->zt = kdl__job_add(job, st, j->tf, zt, rule, false);
        if (j->zt < 0)
                return j->zt;
        j->zs = kdl__job_add(job, st, j->sf, j->cs->logits, rule, true);
        return j->zs < 0 ? j->zs : 0;
}

static int topk_block(kdl__job *job, kdl_stream *st, unsigned pass)
{
        struct topk_job *j = job->ctx;
        kdl_tensor zt, zs;
        kdl_kl_block b = {.samples = kdl_stream_samples(st)};

        (void) pass;
        if (kdl_stream_rows(st) == 0)
                return 0;
        zt = kdl_stream_block(st, j->zt);
        zs = kdl_stream_block(st, j->zs);
        b.zt = &zt;
        b.zs = &zs;
        return kdl_kl_topk_accumulate(j->s, &b);
}

static const char *source_of(enum kdl_kl_topk_value v)
{
        return v == KDL_KL_TOPK_HARD      ? "hard_label"
               : v == KDL_KL_TOPK_SAMPLED ? "sampled_logits"
                                          : "topk_logits";
}

int kdl__kl_topk_keys(kdl_table *t, const char *student, const kdl_checkpoint *cs,
                      const kdl_checkpoint *ct, double tau)
{
        int err;

        if (kdl_table_add_row(t) < 0)
                return -ENOMEM;
        err = kdl_table_put_str(t, "student", student);
        err = err ?: kdl_table_put_str(t, "checkpoint", cs->name);
        err = err ?: kdl_table_put_int(t, "step", cs->step);
        err = err ?: kdl_table_put_str(t, "teacher_checkpoint", ct->name);
        return err ?: kdl_table_put_real(t, "tau", tau);
}

/* One "kl_topk" row. */
static int put_row(const struct topk_job *j, const kdl_kl_topk_result *r, size_t it,
                   enum kdl_kl_topk_value v, size_t ik)
{
        const kdl_kl_fidelity *f = kdl_kl_topk_fidelity(r, it, v, ik);
        kdl_table *t = j->t;
        int err;

        err = kdl__kl_topk_keys(t, kdl_h5_dump(j->sf)->path, j->cs, j->ct, r->tau[it]);
        err = err ?: kdl_table_put_str(t, "source", source_of(v));
        err = err ?: kdl_table_put_str(t, "approximation", kdl_kl_topk_name(v));
        err = err ?: kdl_table_put_int(t, "k", (long long) (v == KDL_KL_TOPK_HARD ? 1 : r->k[ik]));
        err = err ?: kdl_table_put_int(t, "dim", (long long) f->dim);
        err = err ?: kdl_table_put_real(t, "mean", f->mean);
        err = err ?: kdl_table_put_real(t, "ratio", f->ratio);
        err = err ?: kdl_table_put_real(t, "pearson", f->pearson);
        err = err ?: kdl_table_put_real(t, "spearman", f->spearman);
        err = err ?: kdl_table_put_real(t, "relerr", f->relerr);
        err = err ?: kdl_table_put_int(t, "samples", (long long) r->n);
        err = err ?: kdl_table_put_int(t, "spearman_samples", (long long) r->spearman_n);
        return err;
}

static int topk_pack(const void *s, void **buf, size_t *len)
{
        return kdl_kl_topk_state_pack(s, buf, len);
}

static int topk_merge_packed(void *s, const void *buf, size_t len)
{
        return kdl_kl_topk_state_merge_packed(s, buf, len);
}

/* Under MPI: every rank's samples into rank 0's state, which alone writes the rows. */
static int topk_combine(kdl__job *job, kdl_stream *st, unsigned pass)
{
        static const struct kdl__dist_ops ops = {topk_pack, topk_merge_packed, NULL};
        struct topk_job *j = job->ctx;

        (void) st;
        (void) pass;
        return kdl__dist_combine(j->s, &ops);
}

static int topk_end(kdl__job *job, kdl_stream *st, unsigned pass)
{
        struct topk_job *j = job->ctx;
        kdl_kl_topk_result *r = NULL;
        int err;

        (void) st;
        (void) pass;
        if (kdl__dist_rank() > 0)
                return 0;
        err = kdl_kl_topk_finalize(j->s, &r);
        for (size_t it = 0; !err && it < r->ntau; it++) {
                err = put_row(j, r, it, KDL_KL_TOPK_HARD, 0);
                for (size_t ik = 0; ik < r->nk && !err; ik++)
                        for (int v = KDL_KL_TOPK_RENORM; v < KDL_KL_TOPK_VALUE_COUNT_ && !err; v++)
                                err = put_row(j, r, it, (enum kdl_kl_topk_value) v, ik);
        }
        kdl_kl_topk_result_free(r);
        return err;
}

/* Student @k at @cp: kl's passes, the top-k job beside kl's measuring one. */
static int run_checkpoint(struct kdl__kl_run *run, const kdl_inputs *in, struct topk_job *tj,
                          size_t k, const struct kdl_ckpair *cp)
{
        kdl__job job = {.ctx = tj,
                        .attach = topk_attach,
                        .block = topk_block,
                        .end = topk_end,
                        .combine = topk_combine};
        int err;

        tj->sf = in->students[k];
        tj->cs = cp->main;
        tj->ct = cp->partner;
        err = kdl__kl_run_checkpoint(run, k, cp, &job, 1);
        kdl_kl_topk_state_free(tj->s);
        tj->s = NULL;
        return err;
}

int kdl_run_kl_topk_plan(const kdl_inputs *in, const struct kdl_run_kl_opts *o, const size_t *k,
                         size_t nk, kdl_doc *doc)
{
        assert(nk >= 1 && nk <= KDL_RUN_MAX_TOPK);
        return kdl__kl_plan(in, o, &(struct kdl__kl_topk_ask){.k = k, .nk = nk}, doc);
}

int kdl_run_kl_topk(const kdl_inputs *in, const struct kdl_run_kl_opts *o, const size_t *k,
                    size_t nk, kdl_doc *doc)
{
        struct topk_job tj = {.o = o, .k = k, .nk = nk, .tf = in->teacher};
        struct kdl__kl_run *run = NULL;
        int err;

        assert(nk >= 1 && nk <= KDL_RUN_MAX_TOPK);
        err = kdl__kl_begin_topk(in, o, &(struct kdl__kl_topk_ask){.k = k, .nk = nk}, doc, &run);
        err = err
                      ?: kdl_table_new("kl_topk",
                                       "KD criterion approximated by sparse teacher targets",
                                       &tj.t);
        for (size_t s = 0; !err && s < in->nstudents; s++) {
                struct kdl_ckpair *cks = NULL;
                size_t nck = 0;

                err = kdl_select_checkpoints(in->students[s], in->teacher, o->common.checkpoint,
                                             o->common.teacher_checkpoint, &cks, &nck);
                for (size_t c = 0; c < nck && !err; c++)
                        err = run_checkpoint(run, in, &tj, s, &cks[c]);
                free(cks);
        }
        if (err) {
                kdl__kl_abort(run);
                kdl_table_free(tj.t);
                return err;
        }
        err = kdl__kl_end(run);
        if (!err)
                kdl_table_set_label(tj.t, "tau", "τ");
        err = err
                      ?: kdl_doc_add_note(
                                 doc,
                                 "kl_topk: S = the teacher's k largest logits; topk_renorm = "
                                 "tau^2 KL(p_t on S renormalised || p_s); topk_tail = tau^2 "
                                 "KL over S plus one bucket for the rest; sampled = tau^2 "
                                 "mean over k draws x ~ p_t of log p_t(x) - log p_s(x) "
                                 "(unbiased; seed %llu); hard = -log p_s(argmax p_t) at "
                                 "tau 1",
                                 (unsigned long long) o->seed);
        if (!err) {
                err = kdl_doc_add_table(doc, tj.t);
                tj.t = NULL;
        }
        kdl_table_free(tj.t);
        return err;
}
