/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "metrics/kl-internal.h"
#include "metrics/moments.h"
#include "metrics/split.h"
#include "metrics/split-internal.h"
#include "metrics/base/banned.h"

/*
 * The domain level of the split metric at any C (metrics/split.h, "The
 * domain level at large C"): the memory plan of its modes, the blocked
 * mode's blocks of classes, and the most confused pairs of both modes.
 */

/* Rows of the head cosines formed at once when a block closes. */
#define COS_ROWS ((size_t) 64)

#define GIB 1073741824.0

static const char *const domain_names[KDL_SPLIT_DOMAIN_COUNT_] = {"auto", "full", "blocked", "off"};

const char *kdl_split_domain_name(enum kdl_split_domain d)
{
        return (unsigned) d < KDL_SPLIT_DOMAIN_COUNT_ ? domain_names[d] : "?";
}

int kdl_split_domain_parse(const char *s, enum kdl_split_domain *ret)
{
        for (int d = 0; d < KDL_SPLIT_DOMAIN_COUNT_; d++)
                if (strcmp(s, domain_names[d]) == 0) {
                        *ret = (enum kdl_split_domain) d;
                        return 0;
                }
        return kdl_error(-KDL_EUSAGE,
                         "unknown domain mode '%s' (expected auto, full, blocked or off)", s);
}

/* ---- The memory plan --------------------------------------------------------- */

static size_t sat_add(size_t a, size_t b)
{
        size_t r;

        return __builtin_add_overflow(a, b, &r) ? SIZE_MAX : r;
}

static size_t sat_mul(size_t a, size_t b)
{
        size_t r;

        return __builtin_mul_overflow(a, b, &r) ? SIZE_MAX : r;
}

static size_t max_size(size_t a, size_t b)
{
        return a > b ? a : b;
}

/* What every mode holds: the two passes' states (class counts, one sample's
 * scratch in each, histogram counts), the result's counts and distributions,
 * and the confused pairs (a heap and the result's copy). */
static size_t base_bytes(size_t c, const kdl_split_opts *o)
{
        size_t hist = sizeof(size_t) * 2 + sizeof(double) * 2; /* counts; result lo, hi, count */
        size_t per_tau = sat_add(sat_mul(6 * o->nbins, hist), 2 * KDL_SPLIT_W_SLOTS * hist);
        size_t b = sat_mul(c, 2 * sizeof(size_t) + (KDL_SPLIT_EVAL_WORK(1) + 1) * sizeof(double));

        per_tau = sat_add(per_tau, sat_mul(o->top_pairs, 2 * sizeof(kdl_split_pair)));
        return sat_add(b, sat_mul(o->ntaus, per_tau));
}

/* The full mode: the state's M per τ, and at finalize the pair scratch, the
 * cosines, then a normalised head, the Gram CKA (4 C² doubles) or the
 * result's M per τ, whichever is largest. */
static size_t full_bytes(size_t c, size_t dt, size_t ds, const kdl_split_opts *o)
{
        size_t cc = sat_mul(c, c), nh = (dt > 0) + (ds > 0);
        size_t msum = sat_mul(o->ntaus, cc);
        size_t held = sat_add(sat_add(msum, sat_mul(c, c - 1)), sat_mul(nh, cc));
        size_t extra = max_size(sat_mul(c, max_size(dt, ds)), msum);

        if (nh == 2)
                extra = max_size(extra, sat_mul(4, cc));
        return sat_add(base_bytes(c, o), sat_mul(sizeof(double), sat_add(held, extra)));
}

/* Doubles per τ of a block of @w classes, @l classes before the end. */
static size_t block_doubles(size_t l, size_t w)
{
        return sat_mul(w, sat_add(l, l - w));
}

/*
 * The blocks for @b doubles per τ, each the largest that fits: their starts
 * into @start (KDL_SPLIT_MAX_BLOCKS + 1 entries, the last C; may be NULL)
 * and the doubles of the largest into *@ret_most.
 * Return: the blocks; SIZE_MAX when more than KDL_SPLIT_MAX_BLOCKS are needed.
 */
static size_t schedule(size_t c, size_t b, size_t *start, size_t *ret_most)
{
        size_t s = 0, n = 0, most = 0;

        while (s < c) {
                size_t l = c - s, w = l;

                if (n == KDL_SPLIT_MAX_BLOCKS)
                        return SIZE_MAX;
                if (block_doubles(l, l) > b) {
                        /* The root of w² - 2lw + b, then the exact largest w. */
                        double lf = (double) l, disc = lf * lf - (double) b;

                        w = (size_t) (lf - sqrt(disc > 0.0 ? disc : 0.0));
                        while (w > 0 && block_doubles(l, w) > b)
                                w--;
                        while (w + 1 < l && block_doubles(l, w + 1) <= b)
                                w++;
                        if (w == 0)
                                return SIZE_MAX;
                }
                if (start)
                        start[n] = s;
                most = max_size(most, block_doubles(l, w));
                s += w;
                n++;
        }
        if (start)
                start[n] = c;
        *ret_most = most;
        return n;
}

/* The blocked mode besides its blocks: the base, one sample's softmax, and
 * when a block closes, per head its inverse norms and COS_ROWS rows of
 * cosines, and one row of pairs (x and both heads' y). */
static size_t blocked_fixed(size_t c, size_t nh, const kdl_split_opts *o)
{
        size_t close = sat_add(sat_mul(nh, sat_mul(c, COS_ROWS + 1)), sat_mul(3 + 2, c));

        return sat_add(base_bytes(c, o), sat_mul(sizeof(double), close));
}

/* Doubles per τ the budget leaves for the blocks. */
static size_t block_budget(size_t c, size_t nh, const kdl_split_opts *o)
{
        size_t fixed = blocked_fixed(c, nh, o);

        return o->memory > fixed ? (o->memory - fixed) / (o->ntaus * sizeof(double)) : 0;
}

static void plan_blocked(kdl_split_plan *p, size_t c, size_t dt, size_t ds, const kdl_split_opts *o)
{
        size_t nh = (dt > 0) + (ds > 0), fixed = blocked_fixed(c, nh, o);
        size_t fin =
                sat_add(base_bytes(c, o), dt && ds ? kdl__split_heads_traces_bytes(c, dt, ds) : 0);
        size_t per = o->ntaus * sizeof(double), lo = 1, hi = sat_mul(c, c), most, n;

        /* The least doubles per τ that make do with KDL_SPLIT_MAX_BLOCKS blocks
         * (fewer doubles never mean fewer blocks). */
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (schedule(c, mid, NULL, &most) != SIZE_MAX)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        p->domain = KDL_SPLIT_DOMAIN_BLOCKED;
        p->nblocks = schedule(c, lo, NULL, &most);
        p->least_bytes = max_size(sat_add(fixed, sat_mul(per, most)), fin);
        p->bytes = p->least_bytes;
        n = schedule(c, block_budget(c, nh, o), NULL, &most);
        if (n != SIZE_MAX) {
                p->nblocks = n;
                p->bytes = max_size(sat_add(fixed, sat_mul(per, most)), fin);
        }
        p->fits = n != SIZE_MAX && p->bytes <= o->memory;
}

int kdl_split_plan_init(kdl_split_plan *ret, size_t c, size_t d_teacher, size_t d_student,
                        const kdl_split_opts *o)
{
        kdl_split_plan p = {.domain = KDL_SPLIT_DOMAIN_OFF, .least_bytes = SIZE_MAX};
        int err;

        assert(ret && o);
        *ret = p;
        if (c < 2)
                return kdl_error(-KDL_ESHAPE, "split: %zu classes, expected at least 2", c);
        err = kdl__split_check_opts(o);
        if (err < 0)
                return err;
        switch (o->domain) {
        case KDL_SPLIT_DOMAIN_OFF:
                p.bytes = p.least_bytes = base_bytes(c, o);
                break;
        case KDL_SPLIT_DOMAIN_BLOCKED:
                plan_blocked(&p, c, d_teacher, d_student, o);
                break;
        default:
                p.domain = KDL_SPLIT_DOMAIN_FULL;
                p.bytes = p.least_bytes = full_bytes(c, d_teacher, d_student, o);
                if (o->domain == KDL_SPLIT_DOMAIN_AUTO &&
                    (c > o->domain_max_c || p.bytes > o->memory))
                        plan_blocked(&p, c, d_teacher, d_student, o);
        }
        if (p.domain != KDL_SPLIT_DOMAIN_BLOCKED)
                p.fits = p.bytes <= o->memory;
        *ret = p;
        return 0;
}

/* ---- The most confused pairs ----------------------------------------------- */

/* Whether @a is more confused than @b: a larger soft count; on a tie the
 * smaller i, then the smaller j. */
static bool more(const kdl_split_pair *a, const kdl_split_pair *b)
{
        if (a->mass > b->mass)
                return true;
        if (a->mass < b->mass)
                return false;
        return a->i < b->i || (a->i == b->i && a->j < b->j);
}

int kdl__split_top_init(struct kdl__split_top *t, size_t k)
{
        *t = (struct kdl__split_top){.k = k};
        if (k == 0)
                return 0;
        t->heap = kdl_new(kdl_split_pair, k);
        return t->heap ? 0 : -ENOMEM;
}

void kdl__split_top_release(struct kdl__split_top *t)
{
        free(t->heap);
        t->heap = NULL;
}

void kdl__split_top_add(struct kdl__split_top *t, size_t i, size_t j, double mass)
{
        kdl_split_pair p = {.i = i, .j = j, .mass = mass};
        size_t h = 0;

        if (t->n < t->k) { /* room: up from the end while the parent is better */
                for (h = t->n++; h > 0 && more(&t->heap[(h - 1) / 2], &p); h = (h - 1) / 2)
                        t->heap[h] = t->heap[(h - 1) / 2];
                t->heap[h] = p;
                return;
        }
        if (t->k == 0 || !more(&p, &t->heap[0]))
                return;
        for (;;) { /* replace the worst: down while a child is worse */
                size_t a = 2 * h + 1, m = h;
                const kdl_split_pair *worst = &p;

                for (size_t ch = a; ch < a + 2 && ch < t->n; ch++)
                        if (more(worst, &t->heap[ch])) {
                                worst = &t->heap[ch];
                                m = ch;
                        }
                if (m == h)
                        break;
                t->heap[h] = t->heap[m];
                h = m;
        }
        t->heap[h] = p;
}

static int cmp_more(const void *a, const void *b)
{
        return more(a, b) ? -1 : more(b, a) ? 1 : 0;
}

int kdl__split_top_result(const struct kdl__split_top *t, const size_t *count,
                          kdl_split_tau_result *r)
{
        r->ntop = 0;
        r->top = NULL;
        if (t->n == 0)
                return 0;
        r->top = kdl_new(kdl_split_pair, t->n);
        if (!r->top)
                return -ENOMEM;
        memcpy(r->top, t->heap, t->n * sizeof(*r->top));
        qsort(r->top, t->n, sizeof(*r->top), cmp_more);
        for (size_t q = 0; q < t->n; q++)
                r->top[q].confusion = r->top[q].mass / (double) count[r->top[q].i];
        r->ntop = t->n;
        return 0;
}

/* ---- The blocked domain level ---------------------------------------------- */

void kdl_split_blocks_free(kdl_split_blocks *d)
{
        if (!d)
                return;
        for (size_t k = 0; k < KDL_SPLIT_MAX_TAUS; k++) {
                free(d->acc[k]);
                kdl__split_top_release(&d->top[k]);
        }
        free(d->work);
        free(d);
}

int kdl_split_blocks_new(size_t c, size_t d_teacher, size_t d_student, const kdl_split_opts *o,
                         kdl_split_blocks **ret)
{
        size_t nh = (d_teacher > 0) + (d_student > 0);
        kdl_split_blocks *d;
        kdl_split_plan p;
        int err;

        assert(o && ret);
        err = kdl_split_plan_init(&p, c, d_teacher, d_student, o);
        if (err < 0)
                return err;
        if (o->domain != KDL_SPLIT_DOMAIN_BLOCKED)
                return kdl_error(-KDL_ERANGE,
                                 "split: blocks of classes need the blocked domain "
                                 "mode, not %s",
                                 kdl_split_domain_name(o->domain));
        if (!p.fits)
                return kdl_error(-KDL_ERANGE,
                                 "split: the blocked domain level of %zu classes needs %.2f GiB "
                                 "(in at most %d passes), more than its budget of %.2f GiB",
                                 c, (double) p.least_bytes / GIB, KDL_SPLIT_MAX_BLOCKS,
                                 (double) o->memory / GIB);
        d = kdl_new(kdl_split_blocks, 1);
        if (!d)
                return -ENOMEM;
        d->c = c;
        d->o = *o;
        d->nblocks = schedule(c, block_budget(c, nh, o), d->start, &d->acc_size);
        assert(d->nblocks == p.nblocks);
        d->work = kdl_new(double, 2 * c);
        if (!d->work) {
                kdl_split_blocks_free(d);
                return -ENOMEM;
        }
        for (size_t k = 0; k < o->ntaus; k++) {
                d->acc[k] = kdl_new(double, d->acc_size);
                if (!d->acc[k] || kdl__split_top_init(&d->top[k], o->top_pairs) < 0) {
                        kdl_split_blocks_free(d);
                        return -ENOMEM;
                }
        }
        *ret = d;
        return 0;
}

size_t kdl_split_blocks_count(const kdl_split_blocks *d)
{
        assert(d);
        return d->nblocks;
}

static int all_closed(void)
{
        return kdl_error(-KDL_ERANGE, "split: every block of the domain level is closed");
}

int kdl_split_blocks_accumulate(kdl_split_blocks *d, const kdl_tensor *zt, const int64_t *labels)
{
        size_t c, s, e, b, l;
        int err;

        assert(d && zt && (labels || zt->shape[0] == 0));
        if (d->q == d->nblocks)
                return all_closed();
        c = d->c;
        err = kdl__split_check_block(c, zt, NULL, labels);
        if (err < 0)
                return err;
        s = d->start[d->q];
        e = d->start[d->q + 1];
        b = e - s;
        l = c - s;
        for (size_t i = 0; i < zt->shape[0]; i++) {
                const double *z = zt->data + (ptrdiff_t) i * zt->stride[0];
                ptrdiff_t st = zt->stride[1];
                size_t y = (size_t) labels[i];

                if (y < s) /* its pairs were in an earlier block */
                        continue;
                for (size_t k = 0; k < d->o.ntaus; k++) {
                        double tau = d->o.taus[k], rest, ip;
                        /* p^t_j = e_j / (1 + rest) as kdl__split_eval_one() adds it
                         * into M: the same bits. */
                        size_t j0 = s, j1 = y < e ? c : e;
                        double *a =
                                y < e ? d->acc[k] + (y - s) * l : d->acc[k] + b * l + (y - e) * b;

                        (void) kdl__kl_softmax(z, st, c, tau, d->work, d->work + c, &rest);
                        ip = 1.0 / (1.0 + rest);
                        for (size_t j = j0; j < j1; j++)
                                a[j - s] += d->work[c + j] * ip;
                }
        }
        d->n += zt->shape[0];
        return 0;
}

/* A_ij of the open block [@s, @e) for its class @i and a class @j >= @s. */
static double a_ij(const kdl_split_blocks *d, const double *acc, size_t i, size_t j)
{
        size_t s = d->start[d->q], e = d->start[d->q + 1], l = d->c - s;

        if (i < e)
                return acc[(i - s) * l + (j - s)];
        return acc[(e - s) * l + (i - e) * (e - s) + (j - s)];
}

/* Offer the open block's pairs at temperature @k to the heap. */
static void block_top(kdl_split_blocks *d, size_t k, const size_t *count)
{
        size_t s = d->start[d->q], e = d->start[d->q + 1], c = d->c;
        struct kdl__split_top *t = &d->top[k];

        for (size_t i = s; i < e; i++)
                for (size_t j = s; j < c && count[i]; j++) {
                        double m = a_ij(d, d->acc[k], i, j);

                        if (j != i && kdl__split_top_wants(t, m))
                                kdl__split_top_add(t, i, j, m);
                }
        for (size_t j = e; j < c; j++)
                for (size_t i = s; i < e && count[j]; i++) {
                        double m = a_ij(d, d->acc[k], j, i);

                        if (kdl__split_top_wants(t, m))
                                kdl__split_top_add(t, j, i, m);
                }
}

/* Head @w's rows, row-major with unit column stride (a copy into *@copy
 * when @w has other strides), and its row stride into *@ret_ld. */
static const double *head_rows(const kdl_tensor *w, double **copy, size_t *ret_ld)
{
        size_t c = w->shape[0], d = w->shape[1];

        *copy = NULL;
        if (w->stride[1] == 1 && w->stride[0] >= (ptrdiff_t) d) {
                *ret_ld = (size_t) w->stride[0];
                return w->data;
        }
        *copy = kdl__malloc(c * d, sizeof(double));
        if (!*copy)
                return NULL;
        for (size_t i = 0; i < c; i++)
                for (size_t j = 0; j < d; j++)
                        (*copy)[i * d + j] = KDL_AT2(w, i, j);
        *ret_ld = d;
        return *copy;
}

/* One head at a block's end: its rows, inverse norms and a chunk of cosines. */
struct block_head {
        const kdl_tensor *w; /* NULL when absent */
        const double *rows;
        size_t ld;
        double *copy, *inv, *cos;
};

static void block_head_release(struct block_head *h)
{
        free(h->copy);
        free(h->inv);
        free(h->cos);
}

static int block_head_init(struct block_head *h, const kdl_tensor *w, size_t c, double cos_eps)
{
        *h = (struct block_head){.w = w};
        if (!w)
                return 0;
        h->rows = head_rows(w, &h->copy, &h->ld);
        h->inv = kdl__malloc(c, sizeof(double));
        h->cos = kdl__malloc(COS_ROWS * c, sizeof(double));
        if (!h->rows || !h->inv || !h->cos)
                return -ENOMEM;
        kdl__split_inv_norms(w, cos_eps, h->inv);
        return 0;
}

/* The pairs (i, j > i) of row @i whose classes both have samples: the
 * cosines of head @h (row @i of its chunk from @i0) into @y, or with @h
 * NULL, (A_ij/n_i + A_ji/n_j)/2 at temperature @k into @y.  Return: the pairs. */
static size_t row_pairs(const kdl_split_blocks *d, const size_t *count, size_t i, size_t i0,
                        const struct block_head *h, size_t k, double *y)
{
        size_t c = d->c, m = 0;

        for (size_t j = i + 1; j < c; j++) {
                if (!count[j])
                        continue;
                if (h)
                        y[m++] = h->cos[(i - i0) * (c - i0) + (j - i0)];
                else /* as kdl__split_pairs_pearson() symmetrises M: the same bits */
                        y[m++] = 0.5 * (a_ij(d, d->acc[k], i, j) / (double) count[i] +
                                        a_ij(d, d->acc[k], j, i) / (double) count[j]);
        }
        return m;
}

/* The open block's pairs i < j: their co-moments of (M + Mᵀ)/2 with each
 * head's cosines, COS_ROWS rows at a time. */
static int block_agreement(kdl_split_blocks *d, const size_t *count, const kdl_tensor *wt,
                           const kdl_tensor *ws)
{
        size_t s = d->start[d->q], e = d->start[d->q + 1], c = d->c;
        struct block_head h[2] = {{0}}; /* released even when not made */
        double *x = kdl__malloc(3 * c, sizeof(double)), *y[2] = {x + c, x + 2 * c};
        int err;

        err = block_head_init(&h[0], wt, c, d->o.cos_eps);
        err = err ?: block_head_init(&h[1], ws, c, d->o.cos_eps);
        if (err < 0 || !x) {
                err = -ENOMEM;
                goto out;
        }
        for (size_t i0 = s; i0 < e && !err; i0 += COS_ROWS) {
                size_t i1 = e - i0 < COS_ROWS ? e : i0 + COS_ROWS;

                for (int g = 0; g < 2 && !err; g++)
                        if (h[g].w)
                                err = kdl__split_cos_rows(h[g].rows, h[g].ld, c, h[g].w->shape[1],
                                                          h[g].inv, i0, i1, h[g].cos);
                for (size_t i = i0; i < i1 && !err; i++) {
                        size_t m = 0;

                        if (!count[i])
                                continue;
                        for (int g = 0; g < 2; g++)
                                if (h[g].w)
                                        m = row_pairs(d, count, i, i0, &h[g], 0, y[g]);
                        for (size_t k = 0; k < d->o.ntaus; k++) {
                                (void) row_pairs(d, count, i, i0, NULL, k, x);
                                for (int g = 0; g < 2; g++) {
                                        kdl_comoments part;

                                        if (!h[g].w)
                                                continue;
                                        kdl_comoments_batch(x, y[g], m, &part);
                                        kdl_comoments_merge(&d->agree[k][g], &part);
                                }
                        }
                }
        }
out:
        block_head_release(&h[0]);
        block_head_release(&h[1]);
        free(x);
        return err;
}

/* Whether @s is the first pass of the samples @d holds (@n of them). */
static int check_pass(const kdl_split_blocks *d, const kdl_split_state *s, size_t n)
{
        size_t c;

        (void) kdl__split_state_counts(s, &c);
        if (c != d->c || kdl_split_state_count(s) != n ||
            !kdl__split_opts_equal(&d->o, kdl__split_state_opts(s)))
                return kdl_error(-KDL_EMISMATCH,
                                 "split: the domain level's block holds %zu samples, the first "
                                 "pass %zu (or other options)",
                                 n, kdl_split_state_count(s));
        return 0;
}

int kdl_split_blocks_next(kdl_split_blocks *d, const kdl_split_state *s, const kdl_tensor *wt,
                          const kdl_tensor *ws)
{
        const size_t *count;
        size_t next;
        int err;

        assert(d && s);
        if (d->q == d->nblocks)
                return all_closed();
        err = check_pass(d, s, d->n);
        if (!err && wt)
                err = kdl__split_check_head(wt, d->c, "teacher");
        if (!err && ws)
                err = kdl__split_check_head(ws, d->c, "student");
        if (err < 0)
                return err;
        count = kdl__split_state_counts(s, NULL);
        err = wt || ws ? block_agreement(d, count, wt, ws) : 0;
        if (err < 0)
                return err;
        for (size_t k = 0; k < d->o.ntaus; k++)
                block_top(d, k, count);
        if (d->q == 0)
                d->nfirst = d->n;
        d->n = 0;
        d->q++;
        if (d->q == d->nblocks) {
                for (size_t k = 0; k < d->o.ntaus; k++) {
                        free(d->acc[k]);
                        d->acc[k] = NULL;
                }
                return 0;
        }
        next = block_doubles(d->c - d->start[d->q], d->start[d->q + 1] - d->start[d->q]);
        for (size_t k = 0; k < d->o.ntaus; k++)
                memset(d->acc[k], 0, next * sizeof(double));
        return 1;
}

int kdl__split_blocks_check(const kdl_split_blocks *d, const kdl_split_state *s)
{
        if (d->q < d->nblocks)
                return kdl_error(-KDL_EMISSING,
                                 "split: %zu of the %zu blocks of the domain level are closed",
                                 d->q, d->nblocks);
        return check_pass(d, s, d->nfirst);
}

int kdl__split_blocks_tau(const kdl_split_blocks *d, size_t k, const size_t *count,
                          kdl_split_tau_result *t)
{
        t->pearson_confusion_teacher = kdl_comoments_pearson(&d->agree[k][0]);
        t->pearson_confusion_student = kdl_comoments_pearson(&d->agree[k][1]);
        return kdl__split_top_result(&d->top[k], count, t);
}
