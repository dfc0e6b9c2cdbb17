/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "loaders/h5write.h"
#include "datasets/synth.h"
#include "datasets/synth-internal.h"
#include "metrics/base/banned.h"

/*
 * The writer of the synthetic generator: the teacher's and the student's
 * dumps, block by block from the model (synth-model.c), under temporary
 * names renamed into place at the end.
 */

/* Datasets of one checkpoint. */
struct ckds {
        kdl_h5wds *feat[KDL_SYNTH_MAX_LAYERS];
        kdl_h5wds *logits, *glogits, *gfeat;
};

static int ckds_close(struct ckds *c)
{
        int err = 0, e;

        for (size_t l = 0; l < KDL_SYNTH_MAX_LAYERS; l++) {
                e = kdl_h5w_dataset_close(c->feat[l]);
                err = err < 0 ? err : e;
        }
        e = kdl_h5w_dataset_close(c->logits);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(c->glogits);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(c->gfeat);
        err = err < 0 ? err : e;
        memset(c, 0, sizeof(*c));
        return err;
}

/* The head's outputs for a block whose head input, as stored, is @hq
 * (B x D), written to the three datasets of @ds. */
static int write_head_outputs(const struct kdl__synth_model *m, struct kdl__synth_work *w,
                              struct ckds *ds, const double *W, const double *bias, size_t D,
                              const double *hq, size_t r0, size_t B)
{
        int err;

        kdl__synth_head_outputs(m, w, W, bias, D, hq, B);
        err = kdl_h5w_write_rows(ds->logits, r0, r0 + B, w->logits);
        if (err < 0 || !m->o->gradients)
                return err;
        err = kdl_h5w_write_rows(ds->glogits, r0, r0 + B, w->grad);
        if (err < 0)
                return err;
        return kdl_h5w_write_rows(ds->gfeat, r0, r0 + B, w->gfeat);
}

/* ---- Files -------------------------------------------------------------------- */

static char *checkpoint_name(size_t k, size_t K)
{
        static const char *const names[6][5] = {
                [1] = {"final"},
                [2] = {"init", "final"},
                [3] = {"init", "middle", "final"},
                [4] = {"init", "early", "middle", "final"},
                [5] = {"init", "early", "middle", "late", "final"},
        };

        if (K <= 5)
                return kdl__strdup(names[K][k]);
        if (k == 0)
                return kdl__strdup("init");
        if (k == K - 1)
                return kdl__strdup("final");
        return kdl__asprintf("ckpt%zu", k);
}

/* Write the small whole dataset @group/@leaf, contiguous, in one call. */
static int write_whole(kdl_h5w *h5, const char *group, const char *leaf, size_t ndim,
                       const size_t *shape, enum kdl_store store, const double *data)
{
        char *path = kdl__asprintf("%s/%s", group, leaf);
        kdl_h5wds *ds = NULL;
        int err, e;

        if (!path)
                return -ENOMEM;
        err = kdl_h5w_dataset_open(h5, path, ndim, shape, store, 0, -1, &ds);
        err = err ?: kdl_h5w_write_rows(ds, 0, shape[0], data);
        e = kdl_h5w_dataset_close(ds);
        free(path);
        return err ? err : e;
}

static int write_head(const struct kdl__synth_model *m, kdl_h5w *h5, const char *group,
                      const double *W, const double *b, size_t D, const char *input)
{
        size_t shape[2] = {m->C, D};
        char *path = kdl__asprintf("%s/head", group);
        int err;

        if (!path)
                return -ENOMEM;
        err = write_whole(h5, path, "weight", 2, shape, m->o->dtype, W);
        err = err ?: write_whole(h5, path, "bias", 1, shape, m->o->dtype, b);
        err = err ?: kdl_h5w_attr_string(h5, path, "input", input);
        free(path);
        return err;
}

/* Open an N-row dataset @group/@rel with the options' chunking; 2-D unless
 * @shape3 gives trailing sizes. */
static int open_rows(const struct kdl__synth_model *m, kdl_h5w *h5, const char *group,
                     const char *rel, size_t ndim, const size_t *trailing, enum kdl_store store,
                     kdl_h5wds **ret)
{
        size_t shape[4] = {m->N};
        char *path;
        int err;

        for (size_t k = 1; k < ndim; k++)
                shape[k] = trailing[k - 1];
        path = strcmp(group, "/") == 0 ? kdl__asprintf("/%s", rel)
                                       : kdl__asprintf("%s/%s", group, rel);
        if (!path)
                return -ENOMEM;
        err = kdl_h5w_dataset_open(h5, path, ndim, shape, store, m->o->chunk_rows, m->o->gzip, ret);
        free(path);
        return err;
}

static char *layer_name(size_t l)
{
        return kdl__asprintf("layer%zu", l + 1);
}

/* The feature dataset of layer @l in @group, with its depth attribute. */
static int open_feature(const struct kdl__synth_model *m, kdl_h5w *h5, const char *group,
                        bool teacher, size_t l, struct ckds *ds)
{
        size_t trailing[3], ndim = 2, D = teacher ? m->t[l].width : m->s[l].width;
        char *rel = NULL, *name = NULL, *path = NULL;
        int err;

        trailing[0] = D;
        if (teacher && m->t[l].layout == LAYOUT_SPATIAL) {
                ndim = 4;
                trailing[1] = m->o->spatial_h;
                trailing[2] = m->o->spatial_w;
        } else if (teacher && m->t[l].layout == LAYOUT_TOKENS) {
                ndim = 3;
                trailing[0] = m->o->tokens_t;
                trailing[1] = D;
        }
        err = -ENOMEM;
        name = layer_name(l);
        rel = name ? kdl__asprintf("features/%s", name) : NULL;
        if (!rel)
                goto out;
        err = open_rows(m, h5, group, rel, ndim, trailing, m->o->dtype, &ds->feat[l]);
        if (err < 0)
                goto out;
        err = -ENOMEM;
        path = strcmp(group, "/") == 0 ? kdl__asprintf("/%s", rel)
                                       : kdl__asprintf("%s/%s", group, rel);
        if (!path)
                goto out;
        err = kdl_h5w_attr_int(h5, path, "depth", (int64_t) l + 1);
out:
        free(path);
        free(rel);
        free(name);
        return err;
}

/* gradients/logits and gradients/features/@pen (width @Dpen) in @group. */
static int open_gradients(const struct kdl__synth_model *m, kdl_h5w *h5, const char *group,
                          const char *pen, size_t Dpen, struct ckds *ds)
{
        char *rel;
        int err;

        err = open_rows(m, h5, group, "gradients/logits", 2, &m->C, m->o->dtype, &ds->glogits);
        if (err < 0)
                return err;
        rel = kdl__asprintf("gradients/features/%s", pen);
        if (!rel)
                return -ENOMEM;
        err = open_rows(m, h5, group, rel, 2, &Dpen, m->o->dtype, &ds->gfeat);
        free(rel);
        return err;
}

/* Create the datasets of one checkpoint group @group (teacher: @teacher). */
static int open_checkpoint(const struct kdl__synth_model *m, kdl_h5w *h5, const char *group,
                           bool teacher, size_t k, struct ckds *ds)
{
        size_t nl = teacher ? m->L : m->Ls, C = m->C, Dpen;
        char *pen = NULL;
        int err;

        err = kdl_h5w_group_new(h5, group);
        for (size_t l = 0; err >= 0 && l < nl; l++)
                err = open_feature(m, h5, group, teacher, l, ds);
        if (err < 0)
                return err;
        Dpen = teacher ? m->t[nl - 1].width : m->s[nl - 1].width;
        err = open_rows(m, h5, group, "logits", 2, &C, m->o->dtype, &ds->logits);
        if (err < 0)
                goto out;
        err = -ENOMEM;
        pen = layer_name(nl - 1);
        if (!pen)
                goto out;
        if (m->o->gradients) {
                err = open_gradients(m, h5, group, pen, Dpen, ds);
                if (err < 0)
                        goto out;
        }
        err = write_head(m, h5, strcmp(group, "/") == 0 ? "" : group, teacher ? m->tw : m->sw[k],
                         teacher ? m->tb : m->sb[k], Dpen, pen);
        if (err < 0)
                goto out;
        err = kdl_h5w_attr_int(h5, group, "step",
                               teacher ? (int64_t) 1000 * (int64_t) (m->K - 1)
                                       : (int64_t) 1000 * (int64_t) k);
        if (err < 0 || teacher)
                goto out;
        err = kdl_h5w_attr_int(h5, group, "epoch", (int64_t) k);
out:
        free(pen);
        return err;
}

/* /labels and /sample_ids for rows [r0, r0 + B) whose samples are w->idx. */
static int write_ids(const struct kdl__synth_model *m, struct kdl__synth_work *w, kdl_h5wds *labels,
                     kdl_h5wds *ids, size_t r0, size_t B)
{
        int err;

        for (size_t b = 0; b < B; b++)
                w->ints[b] = m->labels[w->idx[b]];
        err = kdl_h5w_write_rows_i64(labels, r0, r0 + B, w->ints);
        if (err < 0 || !ids)
                return err;
        /* Ids are not row numbers, so that a join cannot pass by accident. */
        for (size_t b = 0; b < B; b++)
                w->ints[b] = 1000 + 3 * (int64_t) w->idx[b];
        return kdl_h5w_write_rows_i64(ids, r0, r0 + B, w->ints);
}

/*
 * Create the dump @path for @role with its /labels and (when asked for)
 * /sample_ids datasets.  On failure the caller's cleanup closes what was
 * opened: *@h5, *@labels and *@ids are set as soon as each exists.
 */
static int open_dump(const struct kdl__synth_model *m, const char *path, const char *role,
                     kdl_h5w **h5, kdl_h5wds **labels, kdl_h5wds **ids)
{
        char model[32];
        int err;

        snprintf(model, sizeof(model), "synth-%s", role);
        err = kdl_h5w_open(path, role, model, h5);
        err = err ?: open_rows(m, *h5, "/", "labels", 1, NULL, KDL_STORE_I64, labels);
        if (!err && m->o->sample_ids)
                err = open_rows(m, *h5, "/", "sample_ids", 1, NULL, KDL_STORE_I64, ids);
        return err;
}

static int write_teacher(const struct kdl__synth_model *m, struct kdl__synth_work *w,
                         const char *path)
{
        const struct kdl_synth_opts *o = m->o;
        const char *group = o->flat_teacher ? "/" : "/checkpoints/final";
        kdl_h5w *h5 = NULL;
        kdl_h5wds *labels = NULL, *ids = NULL;
        struct ckds ds = {0};
        struct kdl__synth_topk tk = {0};
        struct kdl__synth_seq sq = {0};
        size_t L = m->L;
        int err, e;

        err = open_dump(m, path, "teacher", &h5, &labels, &ids);
        err = err ?: kdl__synth_seq_open(m, h5, &sq);
        if (err < 0)
                goto out;
        err = open_checkpoint(m, h5, group, true, 0, &ds);
        if (!err && o->topk)
                err = kdl__synth_topk_open(m, h5, group, &tk);
        if (err < 0)
                goto out;

        for (size_t r0 = 0; r0 < m->N; r0 += m->block) {
                size_t B = m->N - r0 < m->block ? m->N - r0 : m->block;

                for (size_t b = 0; b < B; b++)
                        w->idx[b] = r0 + b;
                err = write_ids(m, w, labels, ids, r0, B);
                err = err ?: kdl__synth_seq_write(m, &sq, w->idx, r0, B);
                if (err < 0)
                        goto out;
                kdl__synth_gen_teacher(m, w, B);
                for (size_t l = 0; l < L; l++) {
                        if (m->t[l].layout == LAYOUT_2D)
                                kdl__synth_round_into(w->q, w->h[l], B * m->t[l].width, o->dtype);
                        else
                                kdl__synth_spread(m, w, l, B);
                        err = kdl_h5w_write_rows(ds.feat[l], r0, r0 + B, w->q);
                        if (err < 0)
                                goto out;
                }
                /* The head input is never spread, so w->q holds it as stored. */
                err = write_head_outputs(m, w, &ds, m->tw, m->tb, m->t[L - 1].width, w->q, r0, B);
                if (!err && o->topk)
                        err = kdl__synth_topk_write(&tk, w->logits, m->C, r0, B);
                if (err < 0)
                        goto out;
        }
out:
        e = kdl__synth_topk_close(&tk);
        err = err < 0 ? err : e;
        e = kdl__synth_seq_close(&sq);
        err = err < 0 ? err : e;
        e = ckds_close(&ds);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(ids);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(labels);
        err = err < 0 ? err : e;
        e = kdl_h5w_close(h5);
        return err < 0 ? err : e;
}

/* Create the datasets of the student's K checkpoints. */
static int open_student_checkpoints(const struct kdl__synth_model *m, kdl_h5w *h5, struct ckds *ds)
{
        for (size_t k = 0; k < m->K; k++) {
                char *name = checkpoint_name(k, m->K);
                char *group = name ? kdl__asprintf("/checkpoints/%s", name) : NULL;
                int err = group ? open_checkpoint(m, h5, group, false, k, &ds[k]) : -ENOMEM;

                free(group);
                free(name);
                if (err < 0)
                        return err;
        }
        return 0;
}

/* The student's rows [r0, r0 + B) of every checkpoint. */
static int write_student_block(const struct kdl__synth_model *m, struct kdl__synth_work *w,
                               struct ckds *ds, size_t r0, size_t B)
{
        size_t Ls = m->Ls;
        int err;

        kdl__synth_gen_teacher(m, w, B);
        kdl__synth_gen_student_proj(m, w, B);
        for (size_t k = 0; k < m->K; k++) {
                for (size_t j = 0; j < Ls; j++) {
                        kdl__synth_gen_student(m, w, j, k, B);
                        err = kdl_h5w_write_rows(ds[k].feat[j], r0, r0 + B, w->q);
                        if (err < 0)
                                return err;
                }
                /* w->q holds the last layer, the head input, as stored. */
                err = write_head_outputs(m, w, &ds[k], m->sw[k], m->sb[k], m->s[Ls - 1].width, w->q,
                                         r0, B);
                if (err < 0)
                        return err;
        }
        return 0;
}

static int write_student(const struct kdl__synth_model *m, struct kdl__synth_work *w,
                         const char *path)
{
        kdl_h5w *h5 = NULL;
        kdl_h5wds *labels = NULL, *ids = NULL;
        struct ckds ds[KDL_SYNTH_MAX_CHECKPOINTS];
        struct kdl__synth_seq sq = {0};
        int err, e;

        memset(ds, 0, sizeof(ds));
        err = open_dump(m, path, "student", &h5, &labels, &ids);
        err = err ?: kdl__synth_seq_open(m, h5, &sq);
        if (err < 0)
                goto out;
        err = open_student_checkpoints(m, h5, ds);
        if (err < 0)
                goto out;
        for (size_t r0 = 0; r0 < m->N; r0 += m->block) {
                size_t B = m->N - r0 < m->block ? m->N - r0 : m->block;

                for (size_t b = 0; b < B; b++)
                        w->idx[b] = m->perm ? m->perm[r0 + b] : r0 + b;
                err = write_ids(m, w, labels, ids, r0, B);
                err = err ?: kdl__synth_seq_write(m, &sq, w->idx, r0, B);
                if (err < 0)
                        goto out;
                err = write_student_block(m, w, ds, r0, B);
                if (err < 0)
                        goto out;
        }
out:
        for (size_t k = 0; k < m->K; k++) {
                e = ckds_close(&ds[k]);
                err = err < 0 ? err : e;
        }
        e = kdl__synth_seq_close(&sq);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(ids);
        err = err < 0 ? err : e;
        e = kdl_h5w_dataset_close(labels);
        err = err < 0 ? err : e;
        e = kdl_h5w_close(h5);
        return err < 0 ? err : e;
}

/* Two different paths, neither a directory. */
static int check_paths(const char *teacher_path, const char *student_path)
{
        if (strcmp(teacher_path, student_path) == 0)
                return kdl__synth_usage(
                        "the teacher and the student need different files, not '%s' twice",
                        teacher_path);
        /* A directory in the way would only show at the final renames, when
         * the other file may already be replaced: refuse it first. */
        for (int i = 0; i < 2; i++) {
                const char *p = i == 0 ? teacher_path : student_path;
                struct stat st;

                if (stat(p, &st) == 0 && S_ISDIR(st.st_mode))
                        return kdl_error(-EISDIR, "cannot write '%s': %s", p, strerror(EISDIR));
        }
        return 0;
}

/* The model of @o and both dumps, under the names @ttmp and @stmp. */
static int write_both(const struct kdl_synth_opts *o, const char *ttmp, const char *stmp)
{
        struct kdl__synth_model m;
        struct kdl__synth_work w;
        int err;

        err = kdl__synth_model_init(&m, o);
        if (err < 0)
                goto out_model;
        err = kdl__synth_work_init(&w, &m);
        err = err ?: write_teacher(&m, &w, ttmp);
        err = err ?: write_student(&m, &w, stmp);
        kdl__synth_work_release(&w);
out_model:
        kdl__synth_model_release(&m);
        return err;
}

/* Both temporary files into place, or neither. */
static int rename_both(const char *ttmp, const char *teacher_path, const char *stmp,
                       const char *student_path)
{
        if (rename(ttmp, teacher_path) < 0)
                return kdl_error(-errno, "cannot rename '%s' to '%s': %s", ttmp, teacher_path,
                                 strerror(errno));
        if (rename(stmp, student_path) < 0) {
                int err = kdl_error(-errno, "cannot rename '%s' to '%s': %s", stmp, student_path,
                                    strerror(errno));

                unlink(teacher_path); /* not both: neither */
                return err;
        }
        return 0;
}

int kdl_synth_write(const struct kdl_synth_opts *o, const char *teacher_path,
                    const char *student_path)
{
        char *ttmp = NULL, *stmp = NULL;
        int err;

        assert(o && teacher_path && student_path);

        err = kdl_synth_check(o);
        err = err ?: check_paths(teacher_path, student_path);
        if (err < 0)
                return err;
        /* Write next to the targets and rename at the end, so that a
         * failure leaves nothing half-written (DESIGN.md, bad input). */
        err = -ENOMEM;
        ttmp = kdl__asprintf("%s.tmp%ld", teacher_path, (long) getpid());
        stmp = kdl__asprintf("%s.tmp%ld", student_path, (long) getpid());
        if (ttmp && stmp)
                err = write_both(o, ttmp, stmp);
        if (err == 0)
                err = rename_both(ttmp, teacher_path, stmp, student_path);
        if (err < 0) {
                if (ttmp)
                        unlink(ttmp);
                if (stmp)
                        unlink(stmp);
        }
        free(stmp);
        free(ttmp);
        return err;
}
