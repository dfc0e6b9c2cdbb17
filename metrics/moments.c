/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdlib.h>

#include "metrics/moments.h"
#include "metrics/base/banned.h"

/* ---- Streaming moments --------------------------------------------------------- */

void kdl_moments_add(kdl_moments *m, double x)
{
        double delta = x - m->mean;

        m->n++;
        m->mean += delta / (double) m->n;
        m->m2 += delta * (x - m->mean);
}

void kdl_moments_merge(kdl_moments *into, const kdl_moments *from)
{
        size_t n = into->n + from->n;
        double w, f, d;

        if (from->n == 0)
                return;
        w = (double) into->n * (double) from->n / (double) n;
        f = (double) from->n / (double) n;
        d = from->mean - into->mean;
        into->m2 += from->m2 + w * d * d;
        into->mean += f * d;
        into->n = n;
}

void kdl_comoments_add(kdl_comoments *m, double x, double y)
{
        double dx = x - m->mx, dy = y - m->my;

        m->n++;
        m->mx += dx / (double) m->n;
        m->my += dy / (double) m->n;
        m->sxx += dx * (x - m->mx);
        m->syy += dy * (y - m->my);
        m->sxy += dx * (y - m->my);
}

void kdl_comoments_batch(const double *x, const double *y, size_t n, kdl_comoments *ret)
{
        kdl_comoments m = {.n = n};

        if (n == 0) {
                *ret = m;
                return;
        }
        for (size_t i = 0; i < n; i++) {
                m.mx += x[i];
                m.my += y[i];
        }
        m.mx /= (double) n;
        m.my /= (double) n;
        for (size_t i = 0; i < n; i++) {
                double dx = x[i] - m.mx, dy = y[i] - m.my;

                m.sxx += dx * dx;
                m.syy += dy * dy;
                m.sxy += dx * dy;
        }
        *ret = m;
}

void kdl_comoments_merge(kdl_comoments *into, const kdl_comoments *from)
{
        size_t n = into->n + from->n;
        double w, f, dx, dy;

        if (from->n == 0)
                return;
        w = (double) into->n * (double) from->n / (double) n;
        f = (double) from->n / (double) n;
        dx = from->mx - into->mx;
        dy = from->my - into->my;
        into->sxx += from->sxx + w * dx * dx;
        into->syy += from->syy + w * dy * dy;
        into->sxy += from->sxy + w * dx * dy;
        into->mx += f * dx;
        into->my += f * dy;
        into->n = n;
}

double kdl_comoments_pearson(const kdl_comoments *m)
{
        return kdl_pearson_sums(m->sxx, m->syy, m->sxy);
}

double kdl_moments_shift_mean(size_t na, size_t nb, double *mean, const double *mean_b, size_t d,
                              double *ret_delta)
{
        size_t n = na + nb;
        double f = (double) nb / (double) n;

        assert(nb > 0);
        for (size_t j = 0; j < d; j++) {
                ret_delta[j] = mean_b[j] - mean[j];
                mean[j] += f * ret_delta[j];
        }
        return (double) na * (double) nb / (double) n;
}

/* ---- Correlation and ranks ------------------------------------------------------ */

double kdl_pearson_sums(double sxx, double syy, double sxy)
{
        double d = sqrt(sxx) * sqrt(syy);

        return d > 0.0 ? sxy / d : (double) NAN;
}

double kdl_pearson(const double *x, const double *y, size_t n)
{
        kdl_comoments m;

        if (n < 2)
                return (double) NAN;
        kdl_comoments_batch(x, y, n, &m);
        return kdl_pearson_sums(m.sxx, m.syy, m.sxy);
}

static int cmp_ranked(const void *pa, const void *pb)
{
        const kdl_ranked *a = pa, *b = pb;

        if (a->x < b->x)
                return -1;
        if (a->x > b->x)
                return 1;
        return (a->i > b->i) - (a->i < b->i);
}

void kdl_ranks(const double *x, size_t n, kdl_ranked *w, double *ret_ranks)
{
        for (size_t i = 0; i < n; i++) {
                w[i].x = x[i];
                w[i].i = i;
        }
        qsort(w, n, sizeof(*w), cmp_ranked);
        for (size_t i = 0; i < n;) {
                size_t j = i + 1;
                double r;

                while (j < n && !(w[j].x > w[i].x))
                        j++;
                r = 0.5 * (double) (i + 1 + j); /* mean of ranks i+1 .. j */
                for (size_t k = i; k < j; k++)
                        ret_ranks[w[k].i] = r;
                i = j;
        }
}

/* ---- Quantiles ----------------------------------------------------------------- */

double kdl_quantile_sorted(const double *x, size_t n, double q)
{
        double h = q * (double) (n - 1);
        size_t lo = (size_t) floor(h);

        assert(n >= 1);
        if (lo + 1 >= n)
                return x[n - 1];
        return x[lo] + (h - (double) lo) * (x[lo + 1] - x[lo]);
}

double kdl_quantile_hist(const kdl_hist_view *h, double q)
{
        double r = q * (double) h->n, cum = 0.0, x = h->max;

        for (size_t k = 0; k < h->nbins; k++) {
                double lo = h->lo[k], hi = h->hi[k], f;

                if (h->count[k] == 0)
                        continue;
                if (cum + (double) h->count[k] >= r) {
                        f = (r - cum) / (double) h->count[k];
                        if (k >= h->log_first && k < h->log_end)
                                x = exp2(log2(lo) + f * (log2(hi) - log2(lo)));
                        else
                                x = lo + f * (hi - lo);
                        break;
                }
                cum += (double) h->count[k];
        }
        if (x < h->min)
                x = h->min;
        if (x > h->max)
                x = h->max;
        return x;
}
