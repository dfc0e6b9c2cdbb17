/* SPDX-License-Identifier: MIT */
/* The --per-sample file of every command, in one layout (per-sample.h). */
#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kdl-config.h"
#include "metrics/base/alloc.h"
#include "metrics/base/outfile.h"
#include "metrics/pack.h"
#include "loaders/h5out.h"
#include "analysis/dist.h"
#include "analysis/per-sample.h"
#include "metrics/base/banned.h"

/* Rows of the scratch window, at least (a block's rows when more). */
#define WINDOW_ROWS 4096

struct kdl__per_sample {
        kdl_h5out *out; /* NULL under MPI on the ranks other than 0 */
        const kdl_inputs *in;
        size_t n; /* the teacher's samples: the rows of every dataset */
        const double *tau;
        size_t ntau;

        /* The group being written. */
        const kdl_pair *pair; /* logical sample -> teacher row */
        size_t nvalues;
        int *ids;    /* the datasets of its values */
        size_t next; /* the first teacher row not written */

        double *buf; /* window rows x ntau */
        size_t window;

        /* Under MPI on a rank other than 0: the group's blocks since the last
         * kdl__per_sample_combine(), each its m, its m samples, then each
         * value's m rows at each temperature (8 bytes each). */
        struct kdl__packer held;
};

/* @n int64 values into the 1-D dataset @name: @v, or 0..n-1 when @v is NULL
 * (written a window at a time). */
static int write_ids(kdl__per_sample *ps, const char *name, const int64_t *v)
{
        int64_t w[WINDOW_ROWS];
        int id = kdl_h5out_dataset(ps->out, name, ps->n, 0, true);

        if (id < 0 || v)
                return id < 0 ? id : kdl_h5out_write_i64(ps->out, id, 0, ps->n, v);
        for (size_t r0 = 0; r0 < ps->n; r0 += WINDOW_ROWS) {
                size_t r1 = r0 + WINDOW_ROWS < ps->n ? r0 + WINDOW_ROWS : ps->n;
                int err;

                for (size_t r = r0; r < r1; r++)
                        w[r - r0] = (int64_t) r;
                err = kdl_h5out_write_i64(ps->out, id, r0, r1, w);
                if (err < 0)
                        return err;
        }
        return 0;
}

/* The root: attributes, /sample_ids, /labels, /tau, and each student's path. */
static int write_root(kdl__per_sample *ps, const char *command)
{
        kdl_h5file *t = ps->in->teacher;
        const kdl_dump *d = kdl_h5_dump(t);
        int64_t *v = NULL;
        int err, id;

        err = kdl_h5out_attr(ps->out, "/", "command", command);
        err = err ?: kdl_h5out_attr(ps->out, "/", "kdlens", KDL_VERSION);
        err = err ?: kdl_h5out_attr(ps->out, "/", "teacher", d->path);
        err = err ?: (d->sample_ids ? kdl_h5_read_sample_ids(t, &v) : 0);
        err = err ?: write_ids(ps, "/sample_ids", v);
        free(v);
        v = NULL;
        if (!err && d->labels) {
                err = kdl_h5_read_labels(t, &v);
                err = err ?: write_ids(ps, "/labels", v);
                free(v);
        }
        if (!err) {
                id = kdl_h5out_dataset(ps->out, "/tau", ps->ntau, 0, false);
                err = id < 0 ? id : kdl_h5out_write(ps->out, id, 0, ps->ntau, ps->tau);
        }
        for (size_t k = 0; k < ps->in->nstudents && !err; k++) {
                char *g = kdl__asprintf("/students/%zu", k);

                err = g ? kdl_h5out_attr(ps->out, g, "student",
                                         kdl_h5_dump(ps->in->students[k])->path)
                        : -ENOMEM;
                free(g);
        }
        return err;
}

int kdl__per_sample_open(const char *path, const char *command, const kdl_inputs *in,
                         const double *tau, size_t ntau, kdl__per_sample **ret)
{
        kdl__per_sample *ps;
        int err = 0;

        assert(path && command && in && in->teacher && tau && ntau > 0 && ret);
        /* Never replace an input (the temporary is renamed over @path). */
        for (size_t k = 0; k <= in->nstudents && !err; k++) {
                const kdl_dump *d = kdl_h5_dump(k ? in->students[k - 1] : in->teacher);

                err = kdl_out_check(path, KDL_OUT_FILE, (const char *const *) &d->path, 1);
        }
        if (err < 0)
                return err;
        ps = kdl_new(kdl__per_sample, 1);
        if (!ps)
                return -ENOMEM;
        *ps = (kdl__per_sample){
                .in = in, .n = kdl_h5_dump(in->teacher)->n, .tau = tau, .ntau = ntau};
        if (kdl__dist_rank() == 0) {
                err = kdl_h5out_open(path, &ps->out);
                err = err ?: write_root(ps, command);
        }
        if (err < 0) {
                kdl__per_sample_abort(ps);
                return err;
        }
        *ret = ps;
        return 0;
}

int kdl__per_sample_begin(kdl__per_sample *ps, size_t k, const char *checkpoint,
                          const char *teacher_checkpoint, const char *const *names, size_t nvalues)
{
        char *g = kdl__asprintf("/students/%zu/checkpoints/%s", k, checkpoint);
        const char *student = kdl_h5_dump(ps->in->students[k])->path;
        int err;

        assert(k < ps->in->nstudents && !ps->ids);
        ps->ids = kdl_new(int, nvalues ? nvalues : 1);
        if (!g || !ps->ids) {
                free(g);
                return -ENOMEM;
        }
        ps->pair = ps->in->pairs[k];
        ps->nvalues = nvalues;
        ps->next = 0;
        if (!ps->out) { /* under MPI, a rank other than 0 */
                free(g);
                return 0;
        }
        err = kdl_h5out_attr(ps->out, g, "student", student);
        err = err ?: kdl_h5out_attr(ps->out, g, "checkpoint", checkpoint);
        err = err ?: kdl_h5out_attr(ps->out, g, "teacher_checkpoint", teacher_checkpoint);
        for (size_t v = 0; v < nvalues && !err; v++) {
                char *p = kdl__asprintf("%s/%s", g, names[v]);
                int id = p ? kdl_h5out_dataset(ps->out, p, ps->n, ps->ntau, false) : -ENOMEM;

                free(p);
                err = id < 0 ? id : 0;
                ps->ids[v] = id;
        }
        free(g);
        return err;
}

/* The scratch window for blocks of @m rows. */
static int window(kdl__per_sample *ps, size_t m)
{
        size_t rows = m > WINDOW_ROWS ? m : WINDOW_ROWS;
        double *b;

        if (rows <= ps->window)
                return 0;
        b = kdl__malloc(rows * ps->ntau, sizeof(double));
        if (!b)
                return -ENOMEM;
        free(ps->buf);
        ps->buf = b;
        ps->window = rows;
        return 0;
}

static size_t teacher_row(const kdl__per_sample *ps, size_t sample)
{
        return ps->pair->teacher_rows ? ps->pair->teacher_rows[sample] : sample;
}

/* Teacher rows [next, @end) of every value: the block's rows (@m of them, @col at
 * @ctx; none when @m is 0) where they fall, NaN elsewhere; a window at a time. */
static int write_rows(kdl__per_sample *ps, size_t end, const size_t *samples, size_t m,
                      kdl__per_sample_col_fn *col, void *ctx)
{
        struct kdl__per_sample_col c[KDL_RUN_MAX_TAUS];
        size_t T = ps->ntau;
        int err = window(ps, m);

        assert(T <= KDL_RUN_MAX_TAUS);
        for (size_t v = 0; v < ps->nvalues && !err; v++) {
                size_t i = 0;

                for (size_t t = 0; t < T && m; t++)
                        c[t] = col(ctx, v, t);
                for (size_t r0 = ps->next; r0 < end && !err; r0 += ps->window) {
                        size_t r1 = r0 + ps->window < end ? r0 + ps->window : end;

                        for (size_t e = 0; e < (r1 - r0) * T; e++)
                                ps->buf[e] = (double) NAN;
                        for (size_t r; i < m && (r = teacher_row(ps, samples[i])) < r1; i++)
                                for (size_t t = 0; t < T; t++)
                                        ps->buf[(r - r0) * T + t] =
                                                c[t].p[(ptrdiff_t) i * c[t].stride];
                        err = kdl_h5out_write(ps->out, ps->ids[v], r0, r1, ps->buf);
                }
        }
        if (!err)
                ps->next = end;
        return err;
}

/* Under MPI on a rank other than 0: the block's rows into ps->held. */
static int hold(kdl__per_sample *ps, const size_t *samples, size_t m, kdl__per_sample_col_fn *col,
                void *ctx)
{
        uint64_t m64 = m;
        int err = window(ps, m);

        kdl__pack(&ps->held, &m64, sizeof(m64));
        kdl__pack(&ps->held, samples, m * sizeof(*samples));
        for (size_t v = 0; v < ps->nvalues && !err; v++)
                for (size_t t = 0; t < ps->ntau; t++) {
                        struct kdl__per_sample_col c = col(ctx, v, t);

                        for (size_t i = 0; i < m; i++)
                                ps->buf[i] = c.p[(ptrdiff_t) i * c.stride];
                        kdl__pack(&ps->held, ps->buf, m * sizeof(double));
                }
        if (!err && ps->held.err)
                err = kdl_error(ps->held.err, "out of memory holding %zu bytes of per-sample rows",
                                ps->held.len);
        return err;
}

int kdl__per_sample_write(kdl__per_sample *ps, const size_t *samples, size_t m,
                          kdl__per_sample_col_fn *col, void *ctx)
{
        if (m == 0)
                return 0;
        if (!ps->out)
                return hold(ps, samples, m, col, ctx);
        return write_rows(ps, teacher_row(ps, samples[m - 1]) + 1, samples, m, col, ctx);
}

/* A block another rank held: its values, each m rows of each temperature. */
struct held_block {
        const double *v;
        size_t m, ntau;
};

static struct kdl__per_sample_col held_col(void *ctx, size_t v, size_t t)
{
        const struct held_block *b = ctx;

        return (struct kdl__per_sample_col){b->v + (v * b->ntau + t) * b->m, 1};
}

/* kdl__dist_funnel()'s take on rank 0: the blocks of one other rank, written.
 * Every field is 8 bytes, at an 8-byte offset of a malloc'd buffer, so the
 * samples and values are read in place. */
static int take(void *ctx, const void *buf, size_t len)
{
        static const char what[] = "MPI: per-sample rows";
        kdl__per_sample *ps = ctx;
        struct kdl__unpacker u = {buf, len, 0};
        int err = 0;

        while (!err && u.off < u.len) {
                struct held_block b = {.ntau = ps->ntau};
                const size_t *samples = NULL;
                uint64_t m = 0;

                err = kdl__unpack_get(&u, &m, sizeof(m), what);
                b.m = (size_t) m;
                /* Too short: bytes are left unread, which kdl__unpack_end() reports. */
                if (!err &&
                    (!(samples = kdl__unpack(&u, b.m * sizeof(*samples))) ||
                     !(b.v = kdl__unpack(&u, b.m * ps->nvalues * ps->ntau * sizeof(double)))))
                        err = kdl__unpack_end(&u, what);
                err = err ?: kdl__per_sample_write(ps, samples, b.m, held_col, &b);
        }
        return err;
}

int kdl__per_sample_combine(kdl__per_sample *ps)
{
        int err = kdl__dist_funnel(ps->held.buf, ps->held.len, take, ps);

        free(ps->held.buf);
        ps->held = (struct kdl__packer){0};
        return err;
}

int kdl__per_sample_end(kdl__per_sample *ps)
{
        int err = ps->out ? write_rows(ps, ps->n, NULL, 0, NULL, NULL) : 0;

        free(ps->ids);
        ps->ids = NULL;
        return err;
}

int kdl__per_sample_commit(kdl__per_sample *ps)
{
        kdl_h5out *out = ps->out;

        ps->out = NULL;
        kdl__per_sample_abort(ps);
        return out ? kdl_h5out_commit(out) : 0;
}

void kdl__per_sample_abort(kdl__per_sample *ps)
{
        if (!ps)
                return;
        kdl_h5out_abort(ps->out);
        free(ps->ids);
        free(ps->buf);
        free(ps->held.buf);
        free(ps);
}
