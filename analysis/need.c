/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "analysis/need.h"
#include "metrics/base/banned.h"

static const char *const lever_names[KDL_LEVER_COUNT_] = {
        "--block-rows",
        "--spatial avg",
        "--subsample",
        "--bootstrap",
        "--interval percentile",
        "--batch",
        "--spearman-samples",
        "--quick",
        "--wide-max",
        "--wide-rank",
        "--layer",
        "--sketch-rank",
        "--domain off",
        "--per-class",
        "fewer --topk values",
};

int kdl__need_add(kdl__need *nd, size_t bytes, unsigned levers, const char *fmt, ...)
{
        struct kdl__need_part *p;
        va_list ap;

        if (bytes == 0)
                return 0;
        if (nd->n == KDL_NEED_PARTS) {
                p = &nd->part[nd->n - 1];
                p->bytes = kdl_sat_add(p->bytes, bytes);
                p->levers |= levers;
                return 0;
        }
        p = &nd->part[nd->n];
        va_start(ap, fmt);
        p->what = kdl__vasprintf(fmt, ap);
        va_end(ap);
        if (!p->what)
                return -ENOMEM;
        p->bytes = bytes;
        p->levers = levers;
        nd->n++;
        return 0;
}

size_t kdl__need_total(const kdl__need *nd)
{
        size_t t = 0;

        for (size_t k = 0; k < nd->n; k++)
                t = kdl_sat_add(t, nd->part[k].bytes);
        return t;
}

/* The parts of @from into @into, named after @from's analysis when @named. */
static int join(kdl__need *into, const kdl__need *from, bool named)
{
        int err = 0;

        for (size_t k = 0; k < from->n && !err; k++)
                err = kdl__need_add(into, from->part[k].bytes, from->part[k].levers, "%s%s%s",
                                    named ? from->analysis : "", named ? ": " : "",
                                    from->part[k].what);
        return err;
}

int kdl__need_append(kdl__need *into, const kdl__need *from)
{
        return join(into, from, false);
}

int kdl__need_merge(kdl__need *into, const kdl__need *from)
{
        return join(into, from, true);
}

void kdl__need_release(kdl__need *nd)
{
        for (size_t k = 0; k < nd->n; k++)
                free(nd->part[k].what);
        *nd = (kdl__need){.analysis = nd->analysis};
}

void kdl__need_max(kdl__need *a, kdl__need *b)
{
        if (kdl__need_total(b) > kdl__need_total(a)) {
                const char *analysis = a->analysis, *reads = a->reads;

                kdl__need_release(a);
                *a = *b;
                a->analysis = analysis;
                a->reads = reads;
                *b = (kdl__need){.analysis = analysis};
        }
        kdl__need_release(b);
}

/* "--subsample or --spatial avg" for @levers; NULL (no message) for none. */
static char *lever_text(unsigned levers)
{
        char *s = NULL, *t;

        for (int k = 0; k < KDL_LEVER_COUNT_; k++) {
                if (!(levers & (1u << k)))
                        continue;
                t = s ? kdl__asprintf("%s or %s", s, lever_names[k]) : kdl__strdup(lever_names[k]);
                free(s);
                if (!t)
                        return NULL;
                s = t;
        }
        return s;
}

static const struct kdl__need_part *largest(const kdl__need *nd)
{
        const struct kdl__need_part *big = nd->n ? &nd->part[0] : NULL;

        for (size_t k = 1; k < nd->n; k++)
                if (nd->part[k].bytes > big->bytes)
                        big = &nd->part[k];
        return big;
}

int kdl__need_check(const kdl__need *nd, size_t budget, unsigned accepted)
{
        size_t total = kdl__need_total(nd);
        const struct kdl__need_part *big = largest(nd);
        char sz[KDL_MEMORY_FMT], *lower;
        int err;

        if (total <= budget)
                return 0;
        assert(big);
        lower = lever_text(big->levers & accepted);
        if (nd->n == 1)
                err = kdl_budget_check(total, budget, nd->analysis, lower, "%s", big->what);
        else
                err = kdl_budget_check(total, budget, nd->analysis, lower,
                                       "%s (%s) and %zu smaller part%s", big->what,
                                       kdl_memory_format(big->bytes, sz), nd->n - 1,
                                       nd->n > 2 ? "s" : "");
        free(lower);
        return err;
}

int kdl__need_plan(const kdl__need *nd, size_t budget, unsigned accepted, kdl_table *plan,
                   kdl_table *parts)
{
        const struct kdl__need_part *big = largest(nd);
        size_t total = kdl__need_total(nd);
        char sz[KDL_MEMORY_FMT];
        int err = 0;

        for (size_t k = 0; k < nd->n && !err; k++) {
                char *lower = lever_text(nd->part[k].levers & accepted);

                err = kdl_table_add_row(parts) < 0 ? -ENOMEM : 0;
                err = err ?: kdl_table_put_str(parts, "analysis", nd->analysis);
                err = err ?: kdl_table_put_str(parts, "part", nd->part[k].what);
                err = err ?: kdl_table_put_int(parts, "bytes", (long long) nd->part[k].bytes);
                err = err
                              ?: kdl_table_put_str(parts, "size",
                                                   kdl_memory_format(nd->part[k].bytes, sz));
                err = err ?: kdl_table_put_str(parts, "lowered_by", lower ? lower : "-");
                free(lower);
        }
        err = err ?: (kdl_table_add_row(plan) < 0 ? -ENOMEM : 0);
        err = err ?: kdl_table_put_str(plan, "analysis", nd->analysis);
        err = err ?: kdl_table_put_int(plan, "need_bytes", (long long) total);
        err = err ?: kdl_table_put_str(plan, "need", kdl_memory_format(total, sz));
        err = err ?: kdl_table_put_int(plan, "budget_bytes", (long long) budget);
        err = err ?: kdl_table_put_str(plan, "budget", kdl_memory_format(budget, sz));
        err = err ?: kdl_table_put_bool(plan, "fits", total <= budget);
        err = err ?: kdl_table_put_str(plan, "largest", big ? big->what : "-");
        return err;
}

int kdl__need_doc(const kdl__need *nds, size_t n, size_t budget, unsigned accepted, kdl_doc *doc)
{
        kdl_table *plan = NULL, *parts = NULL;
        char b[KDL_MEMORY_FMT], p[KDL_MEMORY_FMT];
        const char *reads = NULL;
        int err;

        err = kdl_table_new("plan", "Memory each analysis needs, and whether it fits --memory",
                            &plan);
        err = err ?: kdl_table_new("plan_parts", "What the memory is for", &parts);
        for (size_t k = 0; k < n && !err; k++)
                err = kdl__need_plan(&nds[k], budget, accepted, plan, parts);
        for (size_t k = 0; k < n && !reads; k++)
                reads = nds[k].reads;
        err = err
                      ?: kdl_doc_add_note(doc,
                                          "--memory is %s (%s of physical memory here); nothing "
                                          "was read but the dumps' shapes%s%s",
                                          kdl_memory_format(budget, b),
                                          kdl_memory_format(kdl_memory_physical(), p),
                                          reads ? " and " : "", reads ? reads : "");
        err = err
                      ?: kdl_doc_add_note(doc,
                                          "each need is what the analysis holds at its peak; the "
                                          "program, the HDF5 and BLAS libraries and the result "
                                          "tables take about 64 MiB more that no option changes");
        if (!err) {
                err = kdl_doc_add_table(doc, plan);
                plan = NULL;
        }
        if (!err) {
                err = kdl_doc_add_table(doc, parts);
                parts = NULL;
        }
        kdl_table_free(parts);
        kdl_table_free(plan);
        return err;
}
