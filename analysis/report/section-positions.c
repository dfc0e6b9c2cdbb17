/* SPDX-License-Identifier: MIT */
/* "Knowledge by position": for token dumps with /positions, split's per-position means of
 * the KD loss and its explicit and implicit parts (kdlens split, table split_positions). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "analysis/report/report-internal.h"
#include "metrics/base/banned.h"

#define TITLE "Knowledge by position"

/* One position of one student checkpoint: row @row of split_positions. */
struct pos_row {
        size_t row;
        double position;
};

static int cmp_position(const void *a, const void *b)
{
        const struct pos_row *x = a, *y = b;

        return x->position < y->position ? -1 : x->position > y->position;
}

/* The rows of @t for student @path at @ck and the report's tau into @rows (room for every
 * row of @t), by position.  Return: how many. */
static size_t position_rows(const struct kdl__report *r, const kdl_table *t, const char *path,
                            const char *ck, struct pos_row *rows)
{
        static const char *const keys[] = {"student", "checkpoint"};
        const char *const want[] = {path, ck};
        size_t n = 0;

        for (int i = -1; (i = kdl_table_find_row(t, (size_t) (i + 1), 2, keys, want)) >= 0;)
                if (kdl__report_same_tau(kdl__report_real(t, (size_t) i, "tau"), r->tau))
                        rows[n++] = (struct pos_row){(size_t) i,
                                                     kdl__report_real(t, (size_t) i, "position")};
        qsort(rows, n, sizeof(*rows), cmp_position);
        return n;
}

/* Column @key of the @n rows @rows of @t into @y. */
static void column(const kdl_table *t, const struct pos_row *rows, size_t n, const char *key,
                   double *y)
{
        for (size_t i = 0; i < n; i++)
                y[i] = kdl__report_real(t, rows[i].row, key);
}

/* The fewest and most tokens at a position of the @n rows @rows of @t. */
static void token_range(const kdl_table *t, const struct pos_row *rows, size_t n, double *lo,
                        double *hi)
{
        *lo = HUGE_VAL;
        *hi = 0.0;
        for (size_t i = 0; i < n; i++) {
                double v = kdl__report_real(t, rows[i].row, "samples");

                *lo = v < *lo ? v : *lo;
                *hi = v > *hi ? v : *hi;
        }
}

/* Figure @name of student @k: columns @keys of the @n rows @rows of @t, as lines over the
 * position @x (@y: room for @ns x @n values), shown with @caption. */
static int curves(struct kdl__report *r, const kdl_table *t, size_t k, const char *name,
                  const struct kdl_fig *f, const struct pos_row *rows, size_t n, const double *x,
                  double *y, const char *const *keys, const char *const *legend, size_t ns,
                  const char *caption)
{
        struct kdl_series s[4];
        int err;

        for (size_t j = 0; j < ns; j++) {
                column(t, rows, n, keys[j], y + j * n);
                s[j] = (struct kdl_series){legend[j], y + j * n, NULL};
        }
        err = kdl_fig_lines(kdl_site_path(r->site), name, f, x, NULL, n, s, ns);
        return err ?: kdl__report_show(r, name, caption, "split", k);
}

/* Student @k at its last checkpoint: the mean KL, TCKD and NCKD against the position, and
 * the explicit and implicit shares (@rows, @x, @y: room for every row of @t, 3 times). */
static int position_figures(struct kdl__report *r, const kdl_table *t, size_t k,
                            struct pos_row *rows, double *x, double *y)
{
        static const char *const loss_keys[] = {"kl", "tckd", "nckd"};
        static const char *const loss_legend[] = {"KL", "explicit: TCKD", "NCKD"};
        static const char *const share_keys[] = {"explicit_share", "implicit_share"};
        static const char *const share_legend[] = {"explicit: TCKD / KL",
                                                   "implicit: (1 - p^t_y) NCKD / KL"};
        const char *path = kdl_h5_dump(r->in->students[k])->path;
        const char *ck = kdl__report_last_pair(r, k)->main->name;
        size_t n = position_rows(r, t, path, ck, rows);
        struct kdl_fig f = {.xlabel = "position in the sequence", .ylabel = "nats per token"};
        char *name = NULL, *cap = NULL, *tokens;
        double lo, hi;
        int err;

        if (!n)
                return 0;
        column(t, rows, n, "position", x);
        token_range(t, rows, n, &lo, &hi);
        name = kdl__asprintf("split_positions_s%zu", k + 1);
        tokens = lo < hi ? kdl__asprintf("%.0f to %.0f tokens at a position", lo, hi)
                         : kdl__asprintf("%.0f tokens at each position", lo);
        cap = tokens ? kdl__asprintf("The KD loss of %s at checkpoint %s by position in the "
                                     "sequence (tau = %g): the mean over the tokens at each "
                                     "position of KL, its explicit part TCKD and NCKD (tau^2 "
                                     "included), the "
                                     "divergence over the non-target tokens (KL = TCKD + "
                                     "(1 - p^t_y) NCKD); %s",
                                     r->names[k], ck, r->tau, tokens)
                     : NULL;
        free(tokens);
        err = name && cap ? curves(r, t, k, name, &f, rows, n, x, y, loss_keys, loss_legend, 3, cap)
                          : -ENOMEM;
        free(name);
        free(cap);
        if (err)
                return err;
        f.ylabel = "share of the KD loss";
        name = kdl__asprintf("split_positions_shares_s%zu", k + 1);
        cap = kdl__asprintf("The same by position as shares of the KD loss: the teacher's "
                            "target-token confidence (explicit) and its distribution over the "
                            "other tokens (implicit), for %s at checkpoint %s (tau = %g)",
                            r->names[k], ck, r->tau);
        err = name && cap
                      ? curves(r, t, k, name, &f, rows, n, x, y, share_keys, share_legend, 2, cap)
                      : -ENOMEM;
        free(name);
        free(cap);
        return err;
}

int kdl__report_section_positions(struct kdl__report *r)
{
        const kdl_table *t = r->split ? kdl_doc_find_table(r->split, "split_positions") : NULL;
        size_t rows = t ? kdl_table_rows(t) : 0;
        struct pos_row *pr;
        double *x, *y;
        int err;

        if (!rows)
                return 0;
        pr = kdl_new(struct pos_row, rows);
        x = kdl_new(double, rows);
        y = kdl_new(double, 3 * rows);
        err = pr && x && y ? 0 : -ENOMEM;
        err = err
                      ?: kdl_site_section(r->site, TITLE,
                                          "How the KD loss and its explicit (target token, "
                                          "TCKD) and implicit (other tokens, NCKD) parts vary "
                                          "with the position of the token in its sequence: "
                                          "the mean over the tokens at each position.");
        for (size_t k = 0; k < r->in->nstudents && !err; k++)
                err = position_figures(r, t, k, pr, x, y);
        err = err
                      ?: kdl__report_show_table(r, r->split, "split_positions", "split_positions",
                                                "Explicit and implicit knowledge by position: "
                                                "the means over the tokens at each position");
        free(y);
        free(x);
        free(pr);
        return err;
}
