/* SPDX-License-Identifier: MIT */
#include <math.h>
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

int kdl_inputs_open(const char *teacher, const char *const *students, size_t n, kdl_inputs **ret)
{
        kdl_inputs *in = kdl_new(kdl_inputs, 1);
        int err = 0;

        if (!in)
                return -ENOMEM;
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
                if (in->teacher) {
                        const kdl_dump *dt = kdl_h5_dump(in->teacher);
                        const kdl_dump *ds = kdl_h5_dump(in->students[k]);

                        if (dt->c && ds->c && dt->c != ds->c) {
                                err = kdl_error(-KDL_EMISMATCH,
                                                "'%s' has %zu classes and '%s' has %zu: expected "
                                                "the same classes",
                                                dt->path, dt->c, ds->path, ds->c);
                                goto out;
                        }
                        err = kdl_h5_pair(in->teacher, in->students[k], &in->pairs[k]);
                        if (err < 0)
                                goto out;
                }
        }
        *ret = in;
        return 0;
out:
        kdl_inputs_free(in);
        return err;
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

int kdl_inputs_describe(const kdl_inputs *in, kdl_doc *doc)
{
        int err = 0;

        if (in->teacher)
                err = kdl_doc_add_input(doc, kdl_h5_dump(in->teacher)->path);
        for (size_t k = 0; k < in->nstudents && !err; k++)
                err = kdl_doc_add_input(doc, kdl_h5_dump(in->students[k])->path);
        return err;
}

void kdl_run_common_init(struct kdl_run_common *c)
{
        *c = (struct kdl_run_common){.ntau = 1, .tau = {4.0}, .spatial = KDL_SPATIAL_AVG};
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
