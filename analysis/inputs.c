/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "analysis/inputs.h"
#include "metrics/base/banned.h"

static int open_checked(const char *path, kdl_h5file **ret)
{
        kdl_h5file *f = NULL;
        int err = kdl_h5_open(path, &f);

        if (err < 0)
                return err;
        err = kdl_h5_check(f);
        if (err < 0) {
                kdl_h5_close(f);
                return err;
        }
        *ret = f;
        return 0;
}

int kdl_join_parse(const char *s, enum kdl_join *ret)
{
        if (strcmp(s, "strict") == 0)
                *ret = KDL_JOIN_STRICT;
        else if (strcmp(s, "inner") == 0)
                *ret = KDL_JOIN_INNER;
        else
                return kdl_error(-KDL_EUSAGE, "--join: expected strict or inner, found '%s'", s);
        return 0;
}

static bool has_role(const kdl_dump *d, const char *role)
{
        return d && d->role && strcmp(d->role, role) == 0;
}

/* "role \"student\"" or "no role attribute" for @d; caller frees; NULL on ENOMEM. */
static char *role_text(const kdl_dump *d)
{
        return d->role ? kdl__asprintf("role \"%s\"", d->role) : kdl__strdup("no role attribute");
}

/* The teacher @dt (may be NULL) and the student @ds (may be NULL) given against their roles. */
static int roles_error(const kdl_dump *dt, const kdl_dump *ds)
{
        char *rt = dt ? role_text(dt) : NULL, *rs = ds ? role_text(ds) : NULL;
        int err;

        if ((dt && !rt) || (ds && !rs))
                err = kdl_error(-ENOMEM, "out of memory");
        else if (!ds)
                err = kdl_error(-KDL_EUSAGE,
                                "-t '%s' has %s (its root attribute role): expected the teacher's "
                                "dump; pass --ignore-roles to analyse it as the teacher anyway",
                                dt->path, rt);
        else if (!dt)
                err = kdl_error(-KDL_EUSAGE,
                                "-s '%s' has %s (its root attribute role): expected a student's "
                                "dump; pass --ignore-roles to analyse it as a student anyway",
                                ds->path, rs);
        else
                err = kdl_error(-KDL_EUSAGE,
                                "-t '%s' has %s and -s '%s' has %s (the dumps' root attribute "
                                "role): expected the teacher's dump after -t and a student's "
                                "after -s; swap them, or pass --ignore-roles to analyse them as "
                                "given",
                                dt->path, rt, ds->path, rs);
        free(rt);
        free(rs);
        return err;
}

/* A teacher that says it is a student, or a student that says it is a teacher. */
static int check_roles(const kdl_inputs *in)
{
        const kdl_dump *dt = in->teacher ? kdl_h5_dump(in->teacher) : NULL;
        const kdl_dump *first = in->nstudents ? kdl_h5_dump(in->students[0]) : NULL;

        if (has_role(dt, "student"))
                return roles_error(dt, first);
        for (size_t k = 0; k < in->nstudents; k++)
                if (has_role(kdl_h5_dump(in->students[k]), "teacher"))
                        return roles_error(dt, kdl_h5_dump(in->students[k]));
        return 0;
}

/* The inner join needs a teacher, a student, and /sample_ids in both. */
static int check_inner(const kdl_inputs *in)
{
        if (!in->teacher || !in->nstudents)
                return kdl_error(-KDL_EUSAGE, "--join inner: expected a teacher and a student to "
                                              "join on /sample_ids, found one dump");
        for (size_t k = 0; k <= in->nstudents; k++) {
                int err = kdl__join_check(k ? in->students[k - 1] : in->teacher);

                if (err < 0)
                        return err;
        }
        return 0;
}

/* Pair student @k with the teacher. */
static int pair_student(kdl_inputs *in, size_t k)
{
        const kdl_dump *dt = kdl_h5_dump(in->teacher);
        const kdl_dump *ds = kdl_h5_dump(in->students[k]);

        if (dt->c && ds->c && dt->c != ds->c)
                return kdl_error(-KDL_EMISMATCH,
                                 "'%s' has %zu classes and '%s' has %zu: expected the same classes",
                                 dt->path, dt->c, ds->path, ds->c);
        return kdl_h5_pair_join(in->teacher, in->students[k], in->opts.join == KDL_JOIN_INNER,
                                &in->pairs[k]);
}

int kdl_inputs_open_with(const char *teacher, const char *const *students, size_t n,
                         const struct kdl_inputs_opts *o, kdl_inputs **ret)
{
        kdl_inputs *in = kdl_new(kdl_inputs, 1);
        int err = 0;

        if (!in)
                return -ENOMEM;
        if (o)
                in->opts = *o;
        in->students = kdl_new(kdl_h5file *, n ? n : 1);
        in->pairs = kdl_new(kdl_pair *, n ? n : 1);
        if (!in->students || !in->pairs) {
                err = -ENOMEM;
                goto out;
        }
        if (teacher && (err = open_checked(teacher, &in->teacher)) < 0)
                goto out;
        for (size_t k = 0; k < n; k++) {
                err = open_checked(students[k], &in->students[k]);
                in->nstudents = k + 1;
                if (err < 0)
                        goto out;
        }
        /* Roles first: a swapped pair fails its labels too, for a reason said here. */
        if (in->opts.roles == KDL_ROLES_CHECK && (err = check_roles(in)) < 0)
                goto out;
        if (in->opts.join == KDL_JOIN_INNER && (err = check_inner(in)) < 0)
                goto out;
        for (size_t k = 0; k < n && in->teacher; k++)
                if ((err = pair_student(in, k)) < 0)
                        goto out;
        *ret = in;
        return 0;
out:
        kdl_inputs_free(in);
        return err;
}

int kdl_inputs_open(const char *teacher, const char *const *students, size_t n, kdl_inputs **ret)
{
        return kdl_inputs_open_with(teacher, students, n, NULL, ret);
}

void kdl_inputs_free(kdl_inputs *in)
{
        if (!in)
                return;
        for (size_t k = 0; k < in->nstudents; k++) {
                kdl_h5_close(in->students[k]);
                kdl_pair_free(in->pairs[k]);
        }
        free(in->students);
        free(in->pairs);
        kdl_h5_close(in->teacher);
        free(in);
}

/* The note of pair @p when its rows are paired in order and no labels can check that. */
static int unchecked_note(const kdl_pair *p, kdl_doc *doc)
{
        const kdl_dump *dt = kdl_h5_dump(p->teacher), *ds = kdl_h5_dump(p->student);
        char *who;
        int err;

        if (p->joined || (dt->labels && ds->labels))
                return 0;
        who = !dt->labels && !ds->labels
                      ? kdl__strdup("neither dump has")
                      : kdl__asprintf("'%s' has no", (dt->labels ? ds : dt)->path);
        if (!who)
                return kdl_error(-ENOMEM, "out of memory");
        err = kdl_doc_add_note(doc,
                               "'%s' is paired with the teacher '%s' by row order, unchecked: %s "
                               "/labels to compare row by row (write /labels, or /sample_ids in "
                               "both dumps)",
                               ds->path, dt->path, who);
        free(who);
        return err;
}

/* The inner join's counts of pair @p: a note, and a row of @join unless NULL. */
static int inner_join_counts(const kdl_pair *p, kdl_table *join, kdl_doc *doc)
{
        const kdl_dump *dt = kdl_h5_dump(p->teacher), *ds = kdl_h5_dump(p->student);
        size_t nt = dt->sample_ids->shape[0], ns = ds->sample_ids->shape[0];
        int err = join && kdl_table_add_row(join) < 0 ? -ENOMEM : 0;

        if (join) {
                err = err ?: kdl_table_put_str(join, "student", ds->path);
                err = err ?: kdl_table_put_int(join, "teacher_samples", (long long) nt);
                err = err ?: kdl_table_put_int(join, "student_samples", (long long) ns);
                err = err ?: kdl_table_put_int(join, "shared_samples", (long long) p->n);
        }
        return err
                       ?: kdl_doc_add_note(doc,
                                           "--join inner: the teacher '%s' has %zu samples, '%s' "
                                           "%zu; the %zu sample ids they share are those compared "
                                           "(what describes the teacher alone uses all its "
                                           "samples)%s",
                                           dt->path, nt, ds->path, ns, p->n,
                                           join ? " (table join)" : "");
}

int kdl__pair_describe(const kdl_pair *p, enum kdl_join join, kdl_table *t, kdl_doc *doc)
{
        int err = unchecked_note(p, doc);

        if (!err && join == KDL_JOIN_INNER && p->joined)
                err = inner_join_counts(p, t, doc);
        return err;
}

int kdl__join_check(const kdl_h5file *f)
{
        const kdl_dump *d = kdl_h5_dump(f);

        if (d->sample_ids)
                return 0;
        return kdl_error(-KDL_EUSAGE,
                         "--join inner: '%s' has no /sample_ids: the inner join pairs samples by "
                         "id, in both dumps (without ids, rows are paired in order and all must "
                         "be there)",
                         d->path);
}

/* Every pair's notes; with the inner join, the table "join" too. */
static int pairing_notes(const kdl_inputs *in, kdl_doc *doc)
{
        kdl_table *t = NULL;
        int err = 0;

        if (in->opts.join == KDL_JOIN_INNER)
                err = kdl_table_new("join", "Samples joined on /sample_ids (--join inner)", &t);
        for (size_t k = 0; k < in->nstudents && !err; k++)
                err = kdl__pair_describe(in->pairs[k], in->opts.join, t, doc);
        if (err || !t) {
                kdl_table_free(t);
                return err;
        }
        return kdl_doc_add_table(doc, t);
}

/* With --ignore-roles, the roles the dumps state, as given. */
static int ignored_roles_note(const kdl_inputs *in, kdl_doc *doc)
{
        char *list = kdl__strdup(""), *t;
        int err;

        for (size_t k = 0; list && k <= in->nstudents; k++) {
                kdl_h5file *f = k ? in->students[k - 1] : in->teacher;
                const kdl_dump *d = f ? kdl_h5_dump(f) : NULL;

                if (!d)
                        continue;
                t = kdl__asprintf("%s%s%s '%s' (role %s)", list, list[0] ? ", " : "",
                                  k ? "-s" : "-t", d->path, d->role ? d->role : "not stated");
                free(list);
                list = t;
        }
        if (!list)
                return kdl_error(-ENOMEM, "out of memory");
        err = kdl_doc_add_note(
                doc, "--ignore-roles: the dumps' roles were not checked; as given: %s", list);
        free(list);
        return err;
}

int kdl_inputs_describe(const kdl_inputs *in, kdl_doc *doc)
{
        int err = 0;

        if (in->teacher)
                err = kdl_doc_add_input(doc, kdl_h5_dump(in->teacher)->path);
        for (size_t k = 0; k < in->nstudents && !err; k++)
                err = kdl_doc_add_input(doc, kdl_h5_dump(in->students[k])->path);
        if (!err && in->teacher && in->nstudents)
                err = pairing_notes(in, doc);
        if (!err && in->opts.roles == KDL_ROLES_IGNORE)
                err = ignored_roles_note(in, doc);
        return err;
}

int kdl_inputs_teacher_labels(const kdl_inputs *in, const kdl_pair *pair, int64_t **ret)
{
        int64_t *all = NULL, *v;
        int err = kdl_h5_read_labels(in->teacher, &all);

        if (err < 0)
                return err;
        if (!pair || !pair->teacher_rows) {
                *ret = all;
                return 0;
        }
        v = kdl_new(int64_t, pair->n ? pair->n : 1);
        if (!v) {
                free(all);
                return kdl_error(-ENOMEM, "'%s': /labels: out of memory",
                                 kdl_h5_dump(in->teacher)->path);
        }
        for (size_t i = 0; i < pair->n; i++)
                v[i] = all[pair->teacher_rows[i]];
        free(all);
        *ret = v;
        return 0;
}

void kdl_run_common_init(struct kdl_run_common *c)
{
        *c = (struct kdl_run_common){.ntau = 1,
                                     .tau = {4.0},
                                     .spatial = KDL_SPATIAL_AVG,
                                     .memory = kdl_memory_default()};
}

struct kdl_stream_opts kdl_run_stream_opts(const struct kdl_run_common *c)
{
        size_t share = c->memory / 16;

        /* Never 0: the stream would take that for its default. */
        share = share < 1 ? 1 : share;
        return (struct kdl_stream_opts){.block_rows = c->block_rows,
                                        .budget_bytes = share < KDL_STREAM_BUDGET_DEFAULT
                                                                ? share
                                                                : KDL_STREAM_BUDGET_DEFAULT,
                                        .skip_nonfinite = c->skip_nonfinite};
}

static const kdl_checkpoint *last(const kdl_h5file *f)
{
        const kdl_dump *d = kdl_h5_dump(f);

        return d->ncheckpoints ? &d->checkpoints[d->ncheckpoints - 1] : NULL;
}

/* -KDL_EUSAGE naming @spec and listing @f's checkpoints. */
static int no_such_checkpoint(const kdl_h5file *f, const char *spec)
{
        const kdl_dump *d = kdl_h5_dump(f);
        char *names = kdl__strdup(""), *t;

        for (size_t k = 0; names && k < d->ncheckpoints; k++) {
                t = kdl__asprintf("%s%s%s", names, k ? ", " : "", d->checkpoints[k].name);
                free(names);
                names = t;
        }
        kdl_error(-KDL_EUSAGE, "'%s': no checkpoint '%s' (there are: %s)", d->path, spec,
                  names ? names : "");
        free(names);
        return -KDL_EUSAGE;
}

static const kdl_checkpoint *partner_of(const kdl_h5file *partner, const char *partner_spec,
                                        const kdl_checkpoint *ck)
{
        const kdl_checkpoint *p = NULL;

        if (!partner)
                return NULL;
        if (!partner_spec)
                return last(partner);
        if (strcmp(partner_spec, "same") == 0) {
                p = kdl_h5_checkpoint(partner, ck->name);
                return p ? p : last(partner);
        }
        return kdl_h5_checkpoint(partner, partner_spec);
}

int kdl_select_checkpoints(const kdl_h5file *f, const kdl_h5file *partner, const char *spec,
                           const char *partner_spec, struct kdl_ckpair **ret, size_t *ret_n)
{
        const kdl_dump *d = kdl_h5_dump(f);
        struct kdl_ckpair *v;
        size_t n = 0;

        if (partner && partner_spec && strcmp(partner_spec, "same") != 0 &&
            !kdl_h5_checkpoint(partner, partner_spec))
                return no_such_checkpoint(partner, partner_spec);
        v = kdl_new(struct kdl_ckpair, d->ncheckpoints ? d->ncheckpoints : 1);
        if (!v)
                return -ENOMEM;
        if (spec && strcmp(spec, "all") == 0) {
                for (size_t k = 0; k < d->ncheckpoints; k++, n++) {
                        v[n].main = &d->checkpoints[k];
                        v[n].partner = partner_of(partner, partner_spec, v[n].main);
                }
        } else {
                const kdl_checkpoint *ck = spec ? kdl_h5_checkpoint(f, spec) : last(f);

                if (!ck) {
                        free(v);
                        return no_such_checkpoint(f, spec ? spec : "");
                }
                v[n].main = ck;
                v[n].partner = partner_of(partner, partner_spec, ck);
                n++;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}

int kdl_parse_reals(const char *s, const char *what, double *ret, size_t max)
{
        size_t n = 0;
        const char *p = s;

        while (*p) {
                char *end;
                double v = strtod(p, &end);

                if (end == p || !(v > 0.0) || !isfinite(v) || n == max ||
                    (*end != ',' && *end != '\0'))
                        return kdl_error(-KDL_EUSAGE,
                                         "%s: expected up to %zu positive numbers separated by "
                                         "commas, found '%s'",
                                         what, max, s);
                ret[n++] = v;
                p = *end == ',' ? end + 1 : end;
        }
        if (n == 0)
                return kdl_error(-KDL_EUSAGE, "%s: expected a number, found '%s'", what, s);
        return (int) n;
}
