/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/budget.h"
#include "metrics/base/error.h"
#include "metrics/calibration-internal.h"
#include "metrics/kl.h"
#include "metrics/kl-internal.h"
#include "metrics/base/banned.h"

#define DNAN ((double) NAN)

void kdl_calibration_opts_init(kdl_calibration_opts *o)
{
        assert(o);
        memset(o, 0, sizeof(*o));
        o->bins = KDL_CALIBRATION_BINS_DEFAULT;
        o->tau = KDL_CALIBRATION_TAU_DEFAULT;
}

/* The doubles of the state's arrays: 3 B + 2 C B + C; 0 when that overflows. */
static size_t state_doubles(const kdl_calibration_opts *o)
{
        size_t cb, n;

        if (kdl_mul_size(o->c, o->bins, &cb) < 0 || kdl_mul_size(cb, 2, &cb) < 0 ||
            kdl_mul_size(o->bins, 3, &n) < 0 || cb > SIZE_MAX - n || o->c > (SIZE_MAX - n - cb) / 2)
                return 0;
        return n + cb + 2 * o->c;
}

size_t kdl_calibration_state_bytes(const kdl_calibration_opts *o)
{
        size_t n = state_doubles(o);

        assert(o);
        if (n == 0)
                return SIZE_MAX;
        return kdl_sat_add(kdl_sat_mul(n, sizeof(double)), sizeof(kdl_calibration_state));
}

void kdl_calibration_state_free(kdl_calibration_state *s)
{
        if (!s)
                return;
        kdl_kl_state_free(s->klst);
        free(s->lp);
        free(s->cls);
        free(s->bin);
        free(s);
}

/* The KL state at the one temperature, with the smallest Spearman reservoir: only its mean
 * is used. */
static int kl_new(const kdl_calibration_opts *o, kdl_kl_state **ret)
{
        kdl_kl_opts ko;

        kdl_kl_opts_init(&ko);
        ko.c = o->c;
        ko.ntau = 1;
        ko.tau = &o->tau;
        ko.reservoir = 1;
        return kdl_kl_state_new(&ko, ret);
}

int kdl_calibration_state_new(const kdl_calibration_opts *o, kdl_calibration_state **ret)
{
        kdl_calibration_state *s = NULL;
        size_t cb;
        int err;

        assert(o && ret);
        if (o->c < 2)
                return kdl_error(-KDL_ESHAPE, "calibration needs at least 2 classes, got %zu",
                                 o->c);
        if (o->bins == 0)
                return kdl_error(-KDL_ERANGE, "calibration: 0 confidence bins");
        if (!(isfinite(o->tau) && o->tau > 0.0))
                return kdl_error(-KDL_ERANGE, "temperature %g is not finite and > 0", o->tau);
        if (state_doubles(o) == 0)
                return kdl_error(-KDL_EOVERFLOW, "calibration: %zu classes x %zu bins overflow",
                                 o->c, o->bins);
        cb = o->c * o->bins;
        s = kdl_new(kdl_calibration_state, 1);
        if (!s)
                return -ENOMEM;
        s->o = *o;
        s->bin = kdl_new(double, 3 * o->bins);
        s->cls = kdl_new(double, 2 * cb);
        s->lp = kdl_new(double, 2 * o->c);
        err = s->bin && s->cls && s->lp ? 0 : -ENOMEM;
        if (!err && o->teacher)
                err = kl_new(o, &s->klst);
        if (err < 0) {
                kdl_calibration_state_free(s);
                return err;
        }
        *ret = s;
        return 0;
}

/* The bin of @v in [0, 1] among @nb: (b/nb, (b+1)/nb], 0 also in bin 0. */
static size_t bin_of(double v, size_t nb)
{
        double x = ceil(v * (double) nb);

        if (!(x >= 1.0))
                return 0;
        if (x >= (double) nb)
                return nb - 1;
        return (size_t) x - 1;
}

/* The index of the first maximum of row @r of @t. */
static size_t argmax(const kdl_tensor *t, size_t r)
{
        size_t am = 0;

        for (size_t k = 1; k < t->shape[1]; k++)
                if (KDL_AT2(t, r, k) > KDL_AT2(t, r, am))
                        am = k;
        return am;
}

/* Shapes, labels and values of @b; *@ret_m its rows. */
static int check_block(const kdl_calibration_state *s, const kdl_calibration_block *b,
                       size_t *ret_m)
{
        const kdl_kl_block kb = {.row0 = b->row0, .samples = b->samples};
        size_t m, c = s->o.c;
        int err;

        if (!b->z || b->z->ndim != 2)
                return kdl_error(-KDL_ESHAPE, "logits: expected a 2-D block");
        m = b->z->shape[0];
        if (!s->o.teacher != !b->zt)
                return kdl_error(-KDL_ESHAPE, "teacher logits: %s",
                                 b->zt ? "given but not announced" : "announced but missing");
        err = kdl__kl_check_tensor(b->z, "logits", m, c);
        if (!err && b->zt)
                err = kdl__kl_check_tensor(b->zt, "teacher logits", m, c);
        if (err < 0)
                return err;
        assert(b->labels || m == 0);
        for (size_t r = 0; r < m; r++)
                if (b->labels[r] < 0 || (uint64_t) b->labels[r] >= c)
                        return kdl_error(-KDL_ERANGE, "label %lld at sample %zu outside [0, %zu)",
                                         (long long) b->labels[r], kdl__kl_sample_index(&kb, r), c);
        err = kdl__kl_check_finite(b->z, "logits", &kb);
        if (!err && b->zt)
                err = kdl__kl_check_finite(b->zt, "teacher logits", &kb);
        if (err < 0)
                return err;
        *ret_m = m;
        return 0;
}

/* Add sample @r of @b, of label @y, to @s's sums. */
static void add_sample(kdl_calibration_state *s, const kdl_calibration_block *b, size_t r, size_t y)
{
        size_t c = s->o.c, nb = s->o.bins, am, k;
        const kdl_tensor *z = b->z;
        double *a = s->lp, *e = s->lp + c, rest, lse, conf, *hits = s->cls, *psum = s->cls + c * nb;

        /* p_j = e_j / (1 + rest), log p_j = a_j - (a_max + log1p(rest)) */
        am = kdl__kl_softmax(&KDL_AT2(z, r, 0), z->stride[1], c, 1.0, a, e, &rest);
        lse = a[am] + log1p(rest);
        conf = 1.0 / (1.0 + rest);
        k = bin_of(conf, nb);
        s->bin[k] += 1.0;
        s->bin[nb + k] += am == y ? 1.0 : 0.0;
        s->bin[2 * nb + k] += conf;
        s->correct += am == y;
        s->conf += conf;
        s->nll += lse - a[y];
        if (b->zt)
                s->agree += argmax(b->zt, r) == am;
        for (size_t j = 0; j < c; j++) {
                double p = e[j] / (1.0 + rest);

                k = bin_of(p, nb);
                psum[j * nb + k] += p;
                if (j == y)
                        hits[j * nb + k] += 1.0;
        }
}

int kdl_calibration_accumulate(kdl_calibration_state *s, const kdl_calibration_block *b)
{
        const double *kl = NULL;
        size_t m = 0;
        int err;

        assert(s && b);
        err = check_block(s, b, &m);
        if (err < 0 || m == 0)
                return err;
        if (s->klst) {
                const kdl_kl_block kb = {
                        .row0 = b->row0, .samples = b->samples, .zt = b->zt, .zs = b->z};

                err = kdl_kl_accumulate(s->klst, &kb);
                if (err < 0)
                        return err;
                kl = kdl_kl_values(s->klst, 0, KDL_KL_EXACT, NULL);
        }
        /* Nothing below fails. */
        for (size_t r = 0; r < m; r++) {
                add_sample(s, b, r, (size_t) b->labels[r]);
                if (kl)
                        s->kl += kl[r];
        }
        s->n += m;
        return 0;
}

static bool same_options(const kdl_calibration_opts *a, const kdl_calibration_opts *b)
{
        return a->c == b->c && a->bins == b->bins && a->teacher == b->teacher &&
               memcmp(&a->tau, &b->tau, sizeof(double)) == 0;
}

int kdl_calibration_merge(kdl_calibration_state *into, const kdl_calibration_state *from)
{
        size_t nb = into->o.bins, ncls = 2 * into->o.c * nb;

        assert(into && from);
        if (!same_options(&into->o, &from->o))
                return kdl_error(-KDL_EMISMATCH,
                                 "calibration merge: the states have different options");
        for (size_t i = 0; i < 3 * nb; i++)
                into->bin[i] += from->bin[i];
        for (size_t i = 0; i < ncls; i++)
                into->cls[i] += from->cls[i];
        into->n += from->n;
        into->correct += from->correct;
        into->agree += from->agree;
        into->nll += from->nll;
        into->conf += from->conf;
        into->kl += from->kl;
        return 0;
}

size_t kdl_calibration_count(const kdl_calibration_state *s)
{
        assert(s);
        return s->n;
}

void kdl_calibration_result_free(kdl_calibration_result *r)
{
        if (!r)
                return;
        free(r->bin_count);
        free(r->bin_accuracy);
        free(r->bin_confidence);
        free(r);
}

/* ECE, the reliability bins and classwise ECE into @r. */
static void binned(const kdl_calibration_state *s, kdl_calibration_result *r)
{
        size_t nb = s->o.bins, ncb = s->o.c * nb;
        const double *cnt = s->bin, *hit = s->bin + nb, *conf = s->bin + 2 * nb;
        const double *hits = s->cls, *psum = s->cls + ncb;
        double n = (double) s->n, ece = 0.0, cw = 0.0;

        for (size_t k = 0; k < nb; k++) {
                ece += fabs(hit[k] - conf[k]);
                r->bin_count[k] = (size_t) cnt[k];
                r->bin_accuracy[k] = cnt[k] > 0.0 ? hit[k] / cnt[k] : DNAN;
                r->bin_confidence[k] = cnt[k] > 0.0 ? conf[k] / cnt[k] : DNAN;
        }
        for (size_t i = 0; i < ncb; i++)
                cw += fabs(hits[i] - psum[i]);
        r->ece = ece / n;
        r->classwise_ece = cw / (n * (double) s->o.c);
}

int kdl_calibration_finalize(const kdl_calibration_state *s, kdl_calibration_result **ret)
{
        double n = (double) s->n;
        kdl_calibration_result *r;

        assert(s && ret);
        if (s->n == 0)
                return kdl_error(-KDL_EMISSING, "calibration: no samples were accumulated");
        r = kdl_new(kdl_calibration_result, 1);
        if (!r)
                return -ENOMEM;
        r->bin_count = kdl_new(size_t, s->o.bins);
        r->bin_accuracy = kdl_new(double, s->o.bins);
        r->bin_confidence = kdl_new(double, s->o.bins);
        if (!r->bin_count || !r->bin_accuracy || !r->bin_confidence) {
                kdl_calibration_result_free(r);
                return -ENOMEM;
        }
        r->n = s->n;
        r->c = s->o.c;
        r->bins = s->o.bins;
        r->teacher = s->o.teacher;
        r->tau = s->o.tau;
        r->accuracy = (double) s->correct / n;
        r->fidelity = s->o.teacher ? (double) s->agree / n : DNAN;
        r->kl = s->o.teacher ? s->kl / n : DNAN;
        r->nll = s->nll / n;
        r->confidence = s->conf / n;
        binned(s, r);
        *ret = r;
        return 0;
}
