/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "metrics/base/alloc.h"
#include "analysis/summary-internal.h"
#include "metrics/base/banned.h"

/* The tables of kdlens summary and its groups of repeats; the analysis is summary.c. */

enum { Q_ACCURACY, Q_FIDELITY, Q_ECE, Q_CLASSWISE_ECE, Q_KL, Q_NLL, Q_COUNT_ };

static const char *const qname[Q_COUNT_] = {
        "accuracy", "fidelity", "ece", "classwise_ece", "kl", "nll",
};

struct kdl__summary_value {
        size_t k;
        const kdl_checkpoint *ck;
        double v[Q_COUNT_];
};

/* ---- groups ------------------------------------------------------------------------ */

/* @a and @b name the same file: as given, or the same inode. */
static bool same_file(const char *a, const char *b)
{
        struct stat sa, sb;

        if (strcmp(a, b) == 0)
                return true;
        return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
               sa.st_ino == sb.st_ino;
}

static void groups_free(struct kdl__summary_group *g, size_t n)
{
        for (size_t i = 0; g && i < n; i++) {
                free(g[i].name);
                free(g[i].runs);
        }
        free(g);
}

/* Student @file of group @g into @g's runs: once, and only a student of @students. */
static int add_run(struct kdl__summary_group *g, const char *file, const char *const *students,
                   size_t n)
{
        size_t k = 0;

        while (k < n && !same_file(file, students[k]))
                k++;
        if (k == n)
                return kdl_error(-KDL_EUSAGE, "--group %s: '%s' is not a student (-s)", g->name,
                                 file);
        for (size_t i = 0; i < g->n; i++)
                if (g->runs[i] == k)
                        return kdl_error(-KDL_EUSAGE, "--group %s: '%s' is named twice", g->name,
                                         file);
        g->runs[g->n++] = k;
        return 0;
}

/* Group @spec, NAME=FILE,FILE,..., into @g (released by the caller either way). */
static int group_parse(const char *spec, const char *const *students, size_t n,
                       struct kdl__summary_group *g)
{
        const char *eq = strchr(spec, '='), *p;
        int err = 0;

        if (!eq || eq == spec || !eq[1])
                return kdl_error(-KDL_EUSAGE, "--group: expected NAME=FILE,FILE,..., found '%s'",
                                 spec);
        g->name = kdl__asprintf("%.*s", (int) (eq - spec), spec);
        g->runs = kdl_new(size_t, n ? n : 1);
        if (!g->name || !g->runs)
                return -ENOMEM;
        for (p = eq + 1; !err; p++) {
                size_t len = strcspn(p, ",");
                char *file;

                if (len == 0)
                        return kdl_error(-KDL_EUSAGE, "--group %s: an empty file name in '%s'",
                                         g->name, spec);
                file = kdl__asprintf("%.*s", (int) len, p);
                err = file ? add_run(g, file, students, n) : -ENOMEM;
                free(file);
                p += len;
                if (!*p)
                        break;
        }
        return err;
}

/* The @n groups @specs as indices into @students; *@ret freed with groups_free(). */
static int groups_parse(const char *const *specs, size_t n, const char *const *students,
                        size_t nstudents, struct kdl__summary_group **ret)
{
        struct kdl__summary_group *g;
        int err = 0;

        if (n > KDL_SUMMARY_MAX_GROUPS)
                return kdl_error(-KDL_EUSAGE, "--group: at most %d groups, found %zu",
                                 KDL_SUMMARY_MAX_GROUPS, n);
        g = kdl_new(struct kdl__summary_group, n ? n : 1);
        if (!g)
                return -ENOMEM;
        for (size_t i = 0; i < n && !err; i++) {
                err = group_parse(specs[i], students, nstudents, &g[i]);
                for (size_t j = 0; j < i && !err; j++)
                        if (strcmp(g[j].name, g[i].name) == 0)
                                err = kdl_error(-KDL_EUSAGE, "--group %s: given twice", g[i].name);
        }
        if (err < 0) {
                groups_free(g, n);
                return err;
        }
        *ret = g;
        return 0;
}

int kdl_summary_groups_check(const char *const *groups, size_t n, const char *const *students,
                             size_t nstudents)
{
        struct kdl__summary_group *g = NULL;
        int err = groups_parse(groups, n, students, nstudents, &g);

        groups_free(g, err < 0 ? 0 : n);
        return err;
}

/* ---- the table "summary" ----------------------------------------------------------- */

int kdl__summary_tables_init(struct kdl__summary_tables *tb, const kdl_inputs *in,
                             const struct kdl_run_summary_opts *o)
{
        /* The columns in order, with their labels in the human formats. */
        static const char *const cols[][2] = {
                {"role", NULL},       {"model", NULL},   {"group", NULL},
                {"checkpoint", NULL}, {"step", NULL},    {"teacher_checkpoint", NULL},
                {"tau", "τ"},         {"samples", NULL}, {"accuracy", NULL},
                {"fidelity", NULL},   {"ece", "ECE"},    {"classwise_ece", "classwise ECE"},
                {"kl", "τ²KL"},       {"nll", "NLL"},
        };
        const char **students;
        int err;

        *tb = (struct kdl__summary_tables){.ngroups = o->ngroups};
        students = kdl_new(const char *, in->nstudents ? in->nstudents : 1);
        if (!students)
                return -ENOMEM;
        for (size_t k = 0; k < in->nstudents; k++)
                students[k] = kdl_h5_dump(in->students[k])->path;
        err = groups_parse(o->groups, o->ngroups, students, in->nstudents, &tb->groups);
        free(students);
        err = err
                      ?: kdl_table_new("summary",
                                       "Accuracy, fidelity, calibration and KL per model and "
                                       "checkpoint",
                                       &tb->t);
        for (size_t i = 0; !err && i < sizeof(cols) / sizeof(cols[0]); i++)
                if (o->ngroups || strcmp(cols[i][0], "group") != 0)
                        err = kdl_table_set_label(tb->t, cols[i][0],
                                                  cols[i][1] ? cols[i][1] : cols[i][0]);
        return err;
}

void kdl__summary_tables_release(struct kdl__summary_tables *tb)
{
        kdl_table_free(tb->t);
        groups_free(tb->groups, tb->ngroups);
        free(tb->vals);
        *tb = (struct kdl__summary_tables){0};
}

/* The names of the groups student @k is a run of, comma-separated; NULL in none. */
static int group_names(const struct kdl__summary_tables *tb, size_t k, char **ret)
{
        char *s = NULL;

        for (size_t g = 0; g < tb->ngroups; g++)
                for (size_t i = 0; i < tb->groups[g].n; i++) {
                        char *t;

                        if (tb->groups[g].runs[i] != k)
                                continue;
                        t = s ? kdl__asprintf("%s,%s", s, tb->groups[g].name)
                              : kdl__strdup(tb->groups[g].name);
                        free(s);
                        if (!t)
                                return -ENOMEM;
                        s = t;
                }
        *ret = s;
        return 0;
}

/* Keep the values of a student's row for the groups. */
static int keep_values(struct kdl__summary_tables *tb, const struct kdl__summary_row *w,
                       const double *v)
{
        struct kdl__summary_value *x;

        if (tb->nvals == tb->cap) {
                size_t cap = tb->cap ? 2 * tb->cap : 16;

                x = kdl__realloc(tb->vals, cap, sizeof(*x));
                if (!x)
                        return -ENOMEM;
                tb->vals = x;
                tb->cap = cap;
        }
        x = &tb->vals[tb->nvals++];
        x->k = w->k;
        x->ck = w->ck;
        memcpy(x->v, v, sizeof(x->v));
        return 0;
}

int kdl__summary_put_row(struct kdl__summary_tables *tb, const kdl_inputs *in,
                         const struct kdl_run_summary_opts *o, const struct kdl__summary_row *w,
                         const kdl_calibration_result *res)
{
        bool student = w->k != SIZE_MAX;
        const char *model = kdl_h5_dump(student ? in->students[w->k] : in->teacher)->path;
        const double v[Q_COUNT_] = {res->accuracy,      res->fidelity, res->ece,
                                    res->classwise_ece, res->kl,       res->nll};
        char *groups = NULL;
        int err;

        (void) o;
        if (kdl_table_add_row(tb->t) < 0)
                return -ENOMEM;
        err = kdl_table_put_str(tb->t, "role", student ? "student" : "teacher");
        err = err ?: kdl_table_put_str(tb->t, "model", model);
        err = err ?: (student ? group_names(tb, w->k, &groups) : 0);
        if (!err && groups)
                err = kdl_table_put_str(tb->t, "group", groups);
        free(groups);
        err = err ?: kdl_table_put_str(tb->t, "checkpoint", w->ck->name);
        err = err ?: kdl_table_put_int(tb->t, "step", w->ck->step);
        if (!err && student) {
                err = kdl_table_put_str(tb->t, "teacher_checkpoint", w->ckt->name);
                err = err ?: kdl_table_put_real(tb->t, "tau", res->tau);
        }
        err = err ?: kdl_table_put_int(tb->t, "samples", (long long) res->n);
        for (int q = 0; q < Q_COUNT_ && !err; q++)
                if (student || (q != Q_FIDELITY && q != Q_KL))
                        err = kdl_table_put_real(tb->t, qname[q], v[q]);
        if (!err && student)
                err = keep_values(tb, w, v);
        return err;
}

/* ---- the table "summary_groups" ---------------------------------------------------- */

/* The mean and the sample standard deviation (n - 1; NaN for one value) of @x[@n], in two
 * passes (as numpy's std(ddof=1)). */
static void mean_sd(const double *x, size_t n, double *ret_mean, double *ret_sd)
{
        double s = 0.0, ss = 0.0, mean;

        for (size_t i = 0; i < n; i++)
                s += x[i];
        mean = s / (double) n;
        for (size_t i = 0; i < n; i++)
                ss += (x[i] - mean) * (x[i] - mean);
        *ret_mean = mean;
        *ret_sd = n > 1 ? sqrt(ss / (double) (n - 1)) : (double) NAN;
}

static bool in_group(const struct kdl__summary_group *g, size_t k)
{
        for (size_t i = 0; i < g->n; i++)
                if (g->runs[i] == k)
                        return true;
        return false;
}

/* The checkpoint a row of the group table is for: runs are matched by name, or with the default
 * checkpoint (@last) all of them, each student's last. */
static bool same_slot(const kdl_checkpoint *a, const kdl_checkpoint *b, bool last)
{
        return last || strcmp(a->name, b->name) == 0;
}

/* The row of group @g at the checkpoint of value @first (and those of the same slot). */
static int group_row(kdl_table *t, const struct kdl__summary_tables *tb,
                     const struct kdl__summary_group *g, size_t first, bool last, bool pm,
                     double *x)
{
        const char *name = tb->vals[first].ck->name;
        size_t runs = 0;
        int err;

        for (size_t i = first; i < tb->nvals; i++)
                if (in_group(g, tb->vals[i].k) &&
                    same_slot(tb->vals[i].ck, tb->vals[first].ck, last)) {
                        if (strcmp(tb->vals[i].ck->name, name) != 0)
                                name = "last";
                        runs++;
                }
        if (kdl_table_add_row(t) < 0)
                return -ENOMEM;
        err = kdl_table_put_str(t, "group", g->name);
        err = err ?: kdl_table_put_str(t, "checkpoint", name);
        err = err ?: kdl_table_put_int(t, "runs", (long long) runs);
        for (int q = 0; q < Q_COUNT_ && !err; q++) {
                double mean, sd;
                size_t n = 0;
                char key[32];

                for (size_t i = first; i < tb->nvals; i++)
                        if (in_group(g, tb->vals[i].k) &&
                            same_slot(tb->vals[i].ck, tb->vals[first].ck, last))
                                x[n++] = tb->vals[i].v[q];
                mean_sd(x, n, &mean, &sd);
                if (pm && n > 1) {
                        err = kdl_table_putf(t, qname[q], "%.6g ± %.2g", mean, sd);
                } else if (pm) {
                        err = kdl_table_putf(t, qname[q], "%.6g", mean);
                } else {
                        snprintf(key, sizeof(key), "%s_mean", qname[q]);
                        err = kdl_table_put_real(t, key, mean);
                        snprintf(key, sizeof(key), "%s_sd", qname[q]);
                        err = err ?: kdl_table_put_real(t, key, sd);
                }
        }
        return err;
}

/* Whether value @i opens a slot of group @g: the first of its group at its checkpoint. */
static bool opens_slot(const struct kdl__summary_tables *tb, const struct kdl__summary_group *g,
                       size_t i, bool last)
{
        if (!in_group(g, tb->vals[i].k))
                return false;
        for (size_t j = 0; j < i; j++)
                if (in_group(g, tb->vals[j].k) && same_slot(tb->vals[j].ck, tb->vals[i].ck, last))
                        return false;
        return true;
}

static int groups_table(const struct kdl__summary_tables *tb, const struct kdl_run_summary_opts *o,
                        kdl_table **ret)
{
        bool last = o->common.checkpoint == NULL;
        double *x = kdl_new(double, tb->nvals ? tb->nvals : 1);
        kdl_table *t = NULL;
        int err = x ? 0 : -ENOMEM;

        err = err
                      ?: kdl_table_new("summary_groups",
                                       "Repeated runs: mean and standard deviation over runs", &t);
        for (size_t g = 0; g < tb->ngroups && !err; g++)
                for (size_t i = 0; i < tb->nvals && !err; i++)
                        if (opens_slot(tb, &tb->groups[g], i, last))
                                err = group_row(t, tb, &tb->groups[g], i, last, o->pm_text, x);
        if (!err && o->pm_text) {
                err = kdl_table_set_label(t, "ece", "ECE");
                err = err ?: kdl_table_set_label(t, "classwise_ece", "classwise ECE");
                err = err ?: kdl_table_set_label(t, "kl", "τ²KL");
                err = err ?: kdl_table_set_label(t, "nll", "NLL");
        }
        free(x);
        if (err < 0) {
                kdl_table_free(t);
                return err;
        }
        *ret = t;
        return 0;
}

static int notes(const struct kdl__summary_tables *tb, const kdl_inputs *in,
                 const struct kdl_run_summary_opts *o, kdl_doc *doc)
{
        int err = kdl_doc_add_note(
                doc,
                "accuracy: top-1 against /labels; fidelity: top-1 agreement with the teacher; "
                "ece, classwise_ece: %zu equal-width bins on [0, 1]; nll: mean -log p_y "
                "(nats); kl: mean tau^2 KL(p_t || p_s) at tau = %g, as kdlens kl's; all but kl "
                "at temperature 1",
                o->bins, o->common.tau[0]);

        for (size_t g = 0; g < tb->ngroups && !err; g++) {
                char *files = NULL;

                for (size_t i = 0; i < tb->groups[g].n; i++) {
                        const char *p = kdl_h5_dump(in->students[tb->groups[g].runs[i]])->path;
                        char *t = files ? kdl__asprintf("%s, '%s'", files, p)
                                        : kdl__asprintf("'%s'", p);

                        free(files);
                        files = t;
                        if (!files)
                                return -ENOMEM;
                }
                err = kdl_doc_add_note(doc, "group %s: %zu run%s: %s", tb->groups[g].name,
                                       tb->groups[g].n, tb->groups[g].n == 1 ? "" : "s", files);
                free(files);
        }
        if (!err && tb->ngroups)
                err = kdl_doc_add_note(doc,
                                       "summary_groups: mean and sample standard deviation "
                                       "(n - 1) over the runs of each group%s",
                                       o->common.checkpoint ? ", matched by checkpoint name"
                                                            : "; each run at its last checkpoint");
        return err;
}

int kdl__summary_tables_commit(struct kdl__summary_tables *tb, const kdl_inputs *in,
                               const struct kdl_run_summary_opts *o, kdl_doc *doc)
{
        kdl_table *gt = NULL;
        int err;

        err = notes(tb, in, o, doc);
        err = err ?: (tb->ngroups ? groups_table(tb, o, &gt) : 0);
        if (!err) {
                err = kdl_doc_add_table(doc, tb->t);
                tb->t = NULL;
        }
        if (!err && gt) {
                err = kdl_doc_add_table(doc, gt);
                gt = NULL;
        }
        kdl_table_free(gt);
        return err;
}
