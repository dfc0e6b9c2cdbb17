/* SPDX-License-Identifier: MIT */
/* What one kl job reads and holds at its peak (analysis/kl-internal.h), from the shapes alone. */
#include <assert.h>
#include <stdlib.h>

#include "metrics/base/budget.h"
#include "loaders/stream.h"
#include "metrics/kl-topk.h"
#include "analysis/kl-internal.h"
#include "metrics/base/banned.h"

#define D sizeof(double)

/* Reservoir slots the Spearman reservoir grows to for @n samples: from 256, doubling,
 * at most @cap (metrics/kl-reservoir.c). */
static size_t reservoir_slots(size_t n, size_t cap)
{
        size_t want = n < cap ? n : cap, na = 256;

        if (want == 0)
                return 0;
        while (na < want)
                na = na > cap / 2 ? cap : 2 * na;
        return na < cap ? na : cap;
}

/* Pass 0 when the widths differ: the head weight read at the start, and the
 * projector fit at its peak, M_ss and M_st with the block's work area, then
 * their eigendecomposition (V, the solution, P and LAPACK's transposed copy
 * and workspace). */
static int fit_phase(const struct kdl__kl_shape *sh, kdl__need *nd)
{
        size_t ss = kdl_sat_mul(sh->d_s, sh->d_s), st = kdl_sat_mul(sh->d_s, sh->d_t);
        size_t work = kdl_sat_mul(sh->rows + 2, sh->d_s + sh->d_t);
        size_t fit = kdl_sat_add(kdl_sat_add(kdl_sat_mul(5, ss), kdl_sat_mul(3, st)), work);
        int err;

        err = kdl__need_add(nd, kdl_sat_mul(kdl_sat_mul(sh->c, sh->d_t), D), 0,
                            "the teacher's head weight [%zu x %zu]", sh->c, sh->d_t);
        return err
                       ?: kdl__need_add(nd, kdl_sat_mul(fit, D), 0,
                                        "the projector fit: moments and eigendecomposition of "
                                        "widths %zu -> %zu",
                                        sh->d_s, sh->d_t);
}

/* The measuring pass's per-sample part: the values of a block (every
 * temperature and value, the feature differences, the head's outputs and
 * row-space coordinates) and the Spearman reservoir with its ranking. */
static size_t values_bytes(const struct kdl__kl_shape *sh, size_t k)
{
        /* + the per-sample writer's window: one value at every temperature */
        size_t per_row = sh->ntau * KDL_KL_VALUE_COUNT_ + sh->ntau;
        size_t slots = reservoir_slots(sh->n, sh->reservoir);
        size_t res = kdl_sat_mul(slots, 3 * sizeof(uint64_t) + sh->ntau * KDL_KL_VALUE_COUNT_ * D);

        if (sh->feat)
                per_row += sh->d_t + (sh->fitted ? sh->d_s : 0);
        if (sh->head)
                per_row += sh->c + k;
        /* Ranking the reservoir: the slot order, three columns and the ranked pairs. */
        res = kdl_sat_add(res, kdl_sat_mul(slots, 7 * D));
        return kdl_sat_add(kdl_sat_mul(kdl_sat_mul(sh->rows, per_row), D), res);
}

/*
 * Pass 1, at the larger of two moments: while the SVD of W_t runs (the job's
 * copy of W_t, the state's, LAPACK's input and its row-major transpose, V^T
 * twice), or once values accumulate (both copies of W_t and its row-space
 * basis, the per-sample part); with the fitted projector P, and its copy in
 * the state, alive throughout.
 */
static int measure_phase(const struct kdl__kl_shape *sh, kdl__need *ret)
{
        size_t k = sh->c < sh->d_t ? sh->c : sh->d_t, cd = kdl_sat_mul(sh->c, sh->d_t);
        size_t kd = kdl_sat_mul(k, sh->d_t);
        kdl__need svd = {.analysis = ret->analysis}, run = {.analysis = ret->analysis};
        int err = 0;

        if (sh->head) {
                err = kdl__need_add(
                        &svd, kdl_sat_mul(kdl_sat_add(kdl_sat_mul(4, cd), kdl_sat_mul(2, kd)), D),
                        0, "the head weight [%zu x %zu] while its SVD runs", sh->c, sh->d_t);
                err = err
                              ?: kdl__need_add(&run,
                                               kdl_sat_mul(kdl_sat_add(kdl_sat_mul(2, cd), kd), D),
                                               0, "the head weight [%zu x %zu] and its row space",
                                               sh->c, sh->d_t);
        }
        err = err
                      ?: kdl__need_add(&run, values_bytes(sh, k), KDL_LEVER_SPEARMAN,
                                       "the values of blocks of %zu rows and the Spearman "
                                       "reservoir of %zu samples",
                                       sh->rows, reservoir_slots(sh->n, sh->reservoir));
        if (!err)
                kdl__need_max(&run, &svd);
        if (!err && sh->fitted)
                err = kdl__need_add(&run, kdl_sat_mul(kdl_sat_mul(2 * D, sh->d_s), sh->d_t), 0,
                                    "the projector [%zu x %zu] and its copy", sh->d_s, sh->d_t);
        if (!err)
                kdl__need_max(ret, &run);
        kdl__need_release(&run);
        kdl__need_release(&svd);
        return err;
}

int kdl__kl_shape_need(const struct kdl__kl_shape *sh, kdl__need *ret)
{
        kdl__need nd = {.analysis = ret->analysis}, fit = {.analysis = ret->analysis};
        int err;

        err = sh->fitted ? fit_phase(sh, &fit) : 0;
        err = err ?: measure_phase(sh, &nd);
        if (!err)
                kdl__need_max(&nd, &fit);
        err = err
                      ?: kdl__need_add(&nd, sh->stream_bytes, KDL_LEVER_BLOCK_ROWS,
                                       "blocks of %zu rows of %zu datasets", sh->rows,
                                       sh->ndatasets);
        if (!err)
                kdl__need_max(ret, &nd);
        kdl__need_release(&nd);
        kdl__need_release(&fit);
        return err;
}

/* ---- the datasets and the need of one job ---------------------------------------------- */

/* The sources of student @k's job at @cp, as kdl__kl_job() finds them; release with
 * kdl__kl_sources_release() whatever it returns. */
static int job_sources(const kdl_inputs *in, enum kdl_spatial rule, size_t k,
                       const struct kdl_ckpair *cp, struct kdl__kl_sources *x)
{
        *x = (struct kdl__kl_sources){
                .tf = in->teacher, .sf = in->students[k], .ct = cp->partner, .cs = cp->main};
        return kdl__kl_find_sources(x, rule);
}

/* The datasets kl_attach() adds for @x into @c; returns their count. */
static size_t job_cost(const struct kdl__kl_sources *x, enum kdl_spatial rule,
                       struct kdl_stream_cost *c)
{
        const kdl_dsinfo *ds[] = {x->ct->logits,
                                  x->cs->logits,
                                  x->feat ? &x->lt->feature : NULL,
                                  x->feat ? &x->ls->feature : NULL,
                                  x->gt,
                                  x->gzt,
                                  x->gzs};
        const bool student[] = {false, true, false, true, false, false, true};
        size_t n = 0;

        for (size_t i = 0; i < sizeof(ds) / sizeof(ds[0]); i++)
                if (ds[i]) {
                        kdl_stream_cost_add(c, ds[i], rule, student[i]);
                        n++;
                }
        return n;
}

/* The shape of @x's job on @n samples in blocks of @rows rows. */
static struct kdl__kl_shape job_shape(const struct kdl__kl_sources *x, size_t n, size_t rows,
                                      const struct kdl_run_kl_opts *o)
{
        return (struct kdl__kl_shape){.n = n,
                                      .c = x->c,
                                      .d_s = x->feat ? x->d_s : 0,
                                      .d_t = x->feat ? x->d_t : 0,
                                      .ntau = o->common.ntau,
                                      .reservoir = o->reservoir,
                                      .rows = rows,
                                      .feat = x->feat,
                                      .head = x->wt != NULL,
                                      .fitted = x->feat && x->d_s != x->d_t};
}

int kdl__kl_job_cost(const kdl_inputs *in, const struct kdl_run_kl_opts *o, size_t k,
                     const struct kdl_ckpair *cp, struct kdl_stream_cost *c)
{
        struct kdl__kl_sources x;
        int err = job_sources(in, o->common.spatial, k, cp, &x);

        if (!err)
                err = (int) job_cost(&x, o->common.spatial, c);
        kdl__kl_sources_release(&x);
        return err;
}

int kdl__kl_job_need(const kdl_inputs *in, const struct kdl_run_kl_opts *o, size_t k,
                     const struct kdl_ckpair *cp, size_t rows, kdl__need *ret)
{
        struct kdl__kl_sources x;
        struct kdl__kl_shape sh;
        int err = job_sources(in, o->common.spatial, k, cp, &x);

        sh = job_shape(&x, in->pairs[k]->n, rows, o);
        err = err ?: kdl__kl_shape_need(&sh, ret);
        kdl__kl_sources_release(&x);
        return err;
}

/* The top-k job of kl --topk @topk beside student @k's job at @cp, on its stream of @rows
 * rows (analysis/kl-topk.c): its state as kdl_kl_topk_state_new() and the pass allocate it. */
static int topk_need(const kdl_inputs *in, const struct kdl_run_kl_opts *o, size_t k,
                     const struct kdl_ckpair *cp, const struct kdl__kl_topk_ask *topk, size_t rows,
                     kdl__need *nd)
{
        const kdl_dsinfo *zt = cp->partner->logits;
        size_t n = in->pairs[k]->n, state, res;
        kdl_kl_topk_opts ko;
        int err;

        /* kl's job refuses logits that are not [N, C]; the top-k job asks nothing more. */
        if (!zt || zt->ndim != 2)
                return 0;
        kdl_kl_topk_opts_init(&ko);
        ko.c = zt->shape[1];
        ko.ntau = o->common.ntau;
        ko.nk = topk->nk;
        ko.k = topk->k;
        ko.reservoir = o->reservoir;
        state = kdl_kl_topk_bytes(&ko, n, rows, &res);
        err = kdl__need_add(nd, state, KDL_LEVER_TOPK | KDL_LEVER_BLOCK_ROWS,
                            "the top-k state of %zu k at %zu temperatures (C = %zu)", topk->nk,
                            o->common.ntau, ko.c);
        return err
                       ?: kdl__need_add(nd, res, KDL_LEVER_TOPK | KDL_LEVER_SPEARMAN,
                                        "the top-k Spearman reservoir of %zu samples x %zu "
                                        "values",
                                        n < o->reservoir ? n : o->reservoir,
                                        o->common.ntau * (2 + 3 * topk->nk));
}

int kdl__kl_need(const kdl_inputs *in, const struct kdl_run_kl_opts *o,
                 const struct kdl__kl_topk_ask *topk, kdl__need *ret)
{
        struct kdl_stream_opts so = kdl_run_stream_opts(&o->common);
        int err = 0;

        for (size_t k = 0; !err && k < in->nstudents; k++) {
                size_t n = in->pairs[k]->n, nck = 0;
                struct kdl_ckpair *cks = NULL;

                err = kdl_select_checkpoints(in->students[k], in->teacher, o->common.checkpoint,
                                             o->common.teacher_checkpoint, &cks, &nck);
                for (size_t c = 0; c < nck && err >= 0; c++) {
                        kdl__need nd = {.analysis = ret->analysis}, job = nd;
                        struct kdl_stream_cost sc;
                        size_t rows;

                        kdl_stream_cost_init(&sc, in->pairs[k]);
                        err = kdl__kl_job_cost(in, o, k, &cks[c], &sc);
                        rows = kdl_stream_cost_rows(&sc, n, &so);
                        if (err >= 0)
                                err = kdl__need_add(&nd, kdl_stream_cost_bytes(&sc, n, &so),
                                                    KDL_LEVER_BLOCK_ROWS,
                                                    "blocks of %zu rows of %d datasets", rows, err);
                        err = err ?: kdl__kl_job_need(in, o, k, &cks[c], rows, &job);
                        err = err ?: kdl__need_append(&nd, &job);
                        if (!err && topk)
                                err = topk_need(in, o, k, &cks[c], topk, rows, &nd);
                        if (!err)
                                kdl__need_max(ret, &nd);
                        kdl__need_release(&job);
                        kdl__need_release(&nd);
                }
                free(cks);
        }
        return err < 0 ? err : 0;
}

int kdl_run_kl_plan(const kdl_inputs *in, const struct kdl_run_kl_opts *o, kdl_doc *doc)
{
        return kdl__kl_plan(in, o, NULL, doc);
}

int kdl__kl_plan(const kdl_inputs *in, const struct kdl_run_kl_opts *o,
                 const struct kdl__kl_topk_ask *topk, kdl_doc *doc)
{
        kdl__need nd = {.analysis = "kl"};
        int err;

        assert(in && o && doc);
        if (!in->teacher || in->nstudents == 0)
                return kdl_error(-KDL_EUSAGE, "kl needs a teacher (-t) and a student (-s)");
        err = kdl_inputs_describe(in, doc);
        err = err ?: kdl__kl_need(in, o, topk, &nd);
        err = err ?: kdl__need_doc(&nd, 1, o->common.memory, KDL_KL_LEVERS, doc);
        kdl__need_release(&nd);
        return err;
}
