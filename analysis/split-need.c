/* SPDX-License-Identifier: MIT */
/* What split plans and holds besides its stream: the domain mode within the budget
 * (kdl_run_split_plan(), analysis/split.h), from the shapes alone. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "analysis/split.h"
#include "analysis/split-internal.h"
#include "metrics/base/error.h"
#include "metrics/base/banned.h"

#define GIB 1073741824.0

static size_t add_bytes(size_t a, size_t b)
{
        return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

/* What the analysis holds besides the metric: the head weights (read unless
 * the domain level is off) and one sample's scratch (--per-sample). */
size_t kdl__split_own_bytes(size_t c, size_t dt, size_t ds, const struct kdl_run_split_opts *o)
{
        double b = (double) c * (double) KDL_SPLIT_EVAL_WORK(1) * 8.0;

        if (o->metric.domain != KDL_SPLIT_DOMAIN_OFF)
                b += (double) c * (double) (dt + ds) * 8.0;
        return b < (double) SIZE_MAX ? (size_t) b : SIZE_MAX;
}

/* The C x C tables of a full domain level with long_tables (JSON, CSV, the report):
 * confusion_teacher, head_cosine_teacher and head_cosine_student, one row per cell, about
 * 300 bytes a row as the document holds it (measured: 8.1 GB for C = 3,000). */
#define LONG_TABLE_ROW_BYTES 300.0

static size_t long_table_bytes(size_t c)
{
        double b = 3.0 * (double) c * (double) c * LONG_TABLE_ROW_BYTES;

        return b < (double) SIZE_MAX ? (size_t) b : SIZE_MAX;
}

/* The metric's options of a run: common's temperatures, the budget left by the analysis. */
kdl_split_opts kdl__split_metric_opts(size_t own, const struct kdl_run_split_opts *o)
{
        kdl_split_opts m = o->metric;

        m.ntaus = o->common.ntau;
        memcpy(m.taus, o->common.tau, o->common.ntau * sizeof(double));
        m.memory = o->common.memory > own ? o->common.memory - own : 0;
        return m;
}

int kdl_run_split_plan(size_t c, size_t d_teacher, size_t d_student,
                       const struct kdl_run_split_opts *o, kdl_split_plan *ret)
{
        size_t own = kdl__split_own_bytes(c, d_teacher, d_student, o);
        kdl_split_opts m = kdl__split_metric_opts(own, o);
        const char *what = "", *lower = "raise --memory";
        char blocks[100];
        kdl_split_plan p;
        size_t need;
        int err;

        assert(o && ret && o->common.ntau <= KDL_RUN_MAX_TAUS);
        err = kdl_split_plan_init(&p, c, d_teacher, d_student, &m);
        if (err < 0) {
                *ret = p;
                return err;
        }
        p.bytes = add_bytes(p.bytes, own);
        p.least_bytes = add_bytes(p.least_bytes, own);
        if (p.domain == KDL_SPLIT_DOMAIN_FULL && o->long_tables) {
                /* auto: the tables too must fit, or the blocked mode (no C x C table). */
                if (o->metric.domain == KDL_SPLIT_DOMAIN_AUTO &&
                    add_bytes(p.bytes, long_table_bytes(c)) > o->common.memory) {
                        struct kdl_run_split_opts b = *o;

                        b.metric.domain = KDL_SPLIT_DOMAIN_BLOCKED;
                        err = kdl_run_split_plan(c, d_teacher, d_student, &b, ret);
                        return err;
                }
                p.bytes = add_bytes(p.bytes, long_table_bytes(c));
                p.least_bytes = add_bytes(p.least_bytes, long_table_bytes(c));
        }
        p.fits = p.fits && p.bytes <= o->common.memory;
        *ret = p;
        if (p.fits)
                return 0;
        need = p.bytes;
        if (p.domain == KDL_SPLIT_DOMAIN_FULL) {
                what = " for the C x C matrices of its domain level";
                lower = "--domain blocked or --domain off lowers it, or raise --memory";
        } else if (p.domain == KDL_SPLIT_DOMAIN_BLOCKED) {
                snprintf(blocks, sizeof(blocks),
                         " for its domain level in blocks of classes, in at most %d passes over "
                         "the logits",
                         KDL_SPLIT_MAX_BLOCKS);
                what = blocks;
                lower = "--domain off lowers it, or raise --memory";
                need = p.least_bytes;
        }
        return kdl_error(-KDL_EBUDGET,
                         "split needs %s%.2f GiB%s (C = %zu, %zu temperature%s), more than the "
                         "memory budget of %.2f GiB (--memory): %s",
                         p.domain == KDL_SPLIT_DOMAIN_BLOCKED ? "at least " : "",
                         (double) need / GIB, what, c, m.ntaus, m.ntaus > 1 ? "s" : "",
                         (double) o->common.memory / GIB, lower);
}
