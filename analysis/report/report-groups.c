/* SPDX-License-Identifier: MIT */
/* Repeated runs (--group): the students of a figure gathered into units, a group's runs
 * drawn as one series of mean ± sd. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

/* The group of student @k: the first of the "group" cell of its rows in summary's table
 * (the groups as kdlens summary resolved them), into @buf; "" for none. */
static const char *group_of(const struct kdl__report *r, size_t k, char *buf, size_t size)
{
        const kdl_table *t = kdl_doc_find_table(r->summary, "summary");
        const char *path = kdl_h5_dump(r->in->students[k])->path;

        buf[0] = '\0';
        for (size_t i = 0; t && i < kdl_table_rows(t); i++) {
                const char *g = kdl__report_str(t, i, "group");

                if (strcmp(kdl__report_str(t, i, "role"), "student") != 0 ||
                    strcmp(kdl__report_str(t, i, "model"), path) != 0 || !*g)
                        continue;
                snprintf(buf, size, "%.*s", (int) strcspn(g, ","), g);
                break;
        }
        return buf;
}

/* A group name, as group_of() copies it. */
struct gname {
        char s[256];
};

void kdl__report_units_release(struct kdl__report_units *u)
{
        for (size_t i = 0; u->name && i < u->n; i++)
                free(u->name[i]);
        free(u->name);
        free(u->of);
        free(u->size);
        *u = (struct kdl__report_units){0};
}

int kdl__report_units_init(const struct kdl__report *r, struct kdl__report_units *u)
{
        size_t ns = r->in->nstudents;
        struct gname *g = kdl_new(struct gname, ns ? ns : 1);
        int err = 0;

        *u = (struct kdl__report_units){.of = kdl_new(size_t, ns ? ns : 1),
                                        .size = kdl_new(size_t, ns ? ns : 1),
                                        .name = kdl_new(char *, ns ? ns : 1)};
        if (!g || !u->of || !u->size || !u->name) {
                free(g);
                return -ENOMEM;
        }
        for (size_t k = 0; k < ns; k++) {
                size_t j = 0;

                group_of(r, k, g[k].s, sizeof(g[k].s));
                while (j < k && !(g[k].s[0] && strcmp(g[j].s, g[k].s) == 0))
                        j++;
                if (j < k) { /* a run of the group of student j */
                        u->of[k] = u->of[j];
                        u->size[u->of[k]]++;
                        continue;
                }
                u->of[k] = u->n;
                u->size[u->n] = 1;
                u->name[u->n++] = kdl__strdup(g[k].s[0] ? g[k].s : r->names[k]);
                u->grouped = u->grouped || g[k].s[0];
        }
        for (size_t i = 0; i < u->n && !err; i++) {
                char *named = u->size[i] > 1 || u->grouped
                                      ? kdl__asprintf("%s (n = %zu)", u->name[i], u->size[i])
                                      : NULL;

                if (!u->name[i] || ((u->size[i] > 1 || u->grouped) && !named))
                        err = -ENOMEM;
                if (named) {
                        free(u->name[i]);
                        u->name[i] = named;
                }
        }
        free(g);
        return err;
}

void kdl__report_units_stats(const struct kdl__report_units *u, const double *y, size_t ns,
                             size_t n, double *mean, double *sd)
{
        for (size_t i = 0; i < u->n; i++)
                for (size_t j = 0; j < n; j++) {
                        double s = 0.0, ss = 0.0, m;
                        size_t c = 0;

                        for (size_t k = 0; k < ns; k++)
                                if (u->of[k] == i && !isnan(y[k * n + j])) {
                                        s += y[k * n + j];
                                        c++;
                                }
                        m = c ? s / (double) c : (double) NAN;
                        for (size_t k = 0; k < ns; k++)
                                if (u->of[k] == i && !isnan(y[k * n + j]))
                                        ss += (y[k * n + j] - m) * (y[k * n + j] - m);
                        mean[i * n + j] = m;
                        sd[i * n + j] = c > 1 ? sqrt(ss / (double) (c - 1)) : (double) NAN;
                }
}
