/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "kdl-config.h"
#include "metrics/base/error.h"
#include "metrics/pack.h"
#include "analysis/dist.h"
#include "analysis/sources.h"
#if KDL_HAVE_MPI
#include <mpi.h>
#endif
#include "metrics/base/banned.h"

static int rank, size = 1;
static size_t moved; /* bytes sent and received in the collectives that carry data */

int kdl__dist_rank(void)
{
        return rank;
}

int kdl__dist_size(void)
{
        return size;
}

size_t kdl__dist_bytes(void)
{
        return moved;
}

#if KDL_HAVE_MPI

static bool started_by_mpirun(void)
{
        return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

int kdl__dist_init(int *argc, char ***argv)
{
        if (!started_by_mpirun())
                return 0;
        if (MPI_Init(argc, argv) != MPI_SUCCESS)
                return kdl_error(-KDL_EUSAGE, "MPI could not start");
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        return 0;
}

int kdl__dist_finish(int rc)
{
        int all = rc, up = 0;

        MPI_Initialized(&up);
        if (!up)
                return rc;
        MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
        if (getenv("KDL_MPI_BYTES"))
                fprintf(stderr, "kdlens: rank %d moved %zu bytes\n", rank, moved);
        MPI_Finalize();
        return all;
}

int kdl__dist_status(int err)
{
        int mine[2] = {err < 0 ? 0 : 1, rank}, first[2];
        char msg[1024];
        int code = err;

        if (size == 1)
                return err;
        /* The lowest rank with an error, or (1, x) when none has. */
        MPI_Allreduce(mine, first, 1, MPI_2INT, MPI_MINLOC, MPI_COMM_WORLD);
        if (first[0] == 1)
                return 0;
        if (rank == first[1])
                snprintf(msg, sizeof(msg), "%s", kdl_errmsg());
        MPI_Bcast(&code, 1, MPI_INT, first[1], MPI_COMM_WORLD);
        MPI_Bcast(msg, sizeof(msg), MPI_CHAR, first[1], MPI_COMM_WORLD);
        if (rank != first[1])
                kdl_error(code, "%s", msg);
        return code;
}

int kdl__dist_sum(double *x, size_t n)
{
        if (size == 1)
                return 0;
        if (n > INT32_MAX)
                return kdl_error(-KDL_EOVERFLOW, "MPI: %zu values to sum", n);
        MPI_Allreduce(MPI_IN_PLACE, x, (int) n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        moved += 2 * n * sizeof(double);
        return 0;
}

/* Collective: @state packed when @me (MPI counts are ints: at most 2 GiB),
 * then every rank's status. */
static int pack_checked(bool me, const void *state, const struct kdl__dist_ops *ops, void **buf,
                        size_t *len)
{
        int err = me ? ops->pack(state, buf, len) : 0;

        if (!err && *len > INT32_MAX)
                err = kdl_error(-KDL_EOVERFLOW, "MPI: a packed state of %zu bytes (at most 2 GiB)",
                                *len);
        return kdl__dist_status(err);
}

/* Rank 0 merges the packed states of the other ranks in rank order. */
static int gather_merge(void *state, const struct kdl__dist_ops *ops)
{
        void *mine = NULL;
        size_t len = 0;
        long long n, *lens = NULL;
        int *counts = NULL, *displs = NULL, err = 0;
        char *all = NULL;

        if ((err = pack_checked(rank != 0, state, ops, &mine, &len)) < 0)
                goto out;
        n = (long long) len;
        if (rank == 0) {
                lens = calloc((size_t) size, sizeof(*lens));
                counts = calloc((size_t) size, sizeof(*counts));
                displs = calloc((size_t) size, sizeof(*displs));
                if (!lens || !counts || !displs)
                        err = -ENOMEM;
        }
        if ((err = kdl__dist_status(err)) < 0)
                goto out;
        MPI_Gather(&n, 1, MPI_LONG_LONG, lens, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
        if (rank == 0) {
                long long total = 0;

                for (int r = 0; r < size; r++) {
                        counts[r] = (int) lens[r];
                        displs[r] = (int) total;
                        total += lens[r];
                }
                if (total > INT32_MAX)
                        err = kdl_error(-KDL_EOVERFLOW, "MPI: packed states of %lld bytes", total);
                else if (!(all = malloc(total ? (size_t) total : 1)))
                        err = -ENOMEM;
        }
        if ((err = kdl__dist_status(err)) < 0)
                goto out;
        MPI_Gatherv(mine, (int) len, MPI_BYTE, all, counts, displs, MPI_BYTE, 0, MPI_COMM_WORLD);
        moved += len;
        for (int r = 1; rank == 0 && r < size && !err; r++) {
                moved += (size_t) counts[r];
                err = ops->merge(state, all + displs[r], (size_t) counts[r]);
        }
        err = kdl__dist_status(err);
out:
        free(mine);
        free(lens);
        free(counts);
        free(displs);
        free(all);
        return err;
}

/* Rank 0's state to every rank. */
static int broadcast(void *state, const struct kdl__dist_ops *ops)
{
        void *buf = NULL;
        size_t len = 0;
        long long n;
        int err = 0;

        if ((err = pack_checked(rank == 0, state, ops, &buf, &len)) < 0)
                goto out;
        n = (long long) len;
        MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
        if (rank != 0 && !(buf = malloc(n ? (size_t) n : 1)))
                err = -ENOMEM;
        if ((err = kdl__dist_status(err)) < 0)
                goto out;
        MPI_Bcast(buf, (int) n, MPI_BYTE, 0, MPI_COMM_WORLD);
        moved += (size_t) n * (rank == 0 ? (size_t) size - 1 : 1);
        if (rank != 0)
                err = ops->load(state, buf, (size_t) n);
        err = kdl__dist_status(err);
out:
        free(buf);
        return err;
}

int kdl__dist_combine(void *state, const struct kdl__dist_ops *ops)
{
        int err;

        if (size == 1)
                return 0;
        err = gather_merge(state, ops);
        if (!err && ops->load)
                err = broadcast(state, ops);
        return err;
}

int kdl__dist_broadcast(void *state, const struct kdl__dist_ops *ops)
{
        return size == 1 ? 0 : broadcast(state, ops);
}

/* MPI counts are ints: a message goes in pieces of at most 1 GiB. */
#define PIECE ((size_t) 1 << 30)

static void send_all(const void *buf, size_t len)
{
        for (size_t at = 0; at < len; at += PIECE) {
                size_t k = len - at < PIECE ? len - at : PIECE;

                MPI_Send((const char *) buf + at, (int) k, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
        }
}

static void recv_all(void *buf, size_t len, int from)
{
        for (size_t at = 0; at < len; at += PIECE) {
                size_t k = len - at < PIECE ? len - at : PIECE;

                MPI_Recv((char *) buf + at, (int) k, MPI_BYTE, from, 0, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE);
        }
}

int kdl__dist_funnel(const void *buf, size_t len,
                     int (*take)(void *ctx, const void *buf, size_t len), void *ctx)
{
        unsigned long long n = len, *lens = NULL, most = 0;
        char *in = NULL;
        int err = 0;

        if (size == 1)
                return 0;
        if (rank == 0 && !(lens = calloc((size_t) size, sizeof(*lens))))
                err = -ENOMEM;
        if ((err = kdl__dist_status(err)) < 0)
                goto out;
        MPI_Gather(&n, 1, MPI_UNSIGNED_LONG_LONG, lens, 1, MPI_UNSIGNED_LONG_LONG, 0,
                   MPI_COMM_WORLD);
        for (int r = 1; rank == 0 && r < size; r++)
                most = lens[r] > most ? lens[r] : most;
        /* Room for the largest before anyone sends, so that rank 0 takes every message. */
        if (rank == 0 && !(in = malloc(most ? (size_t) most : 1)))
                err = -ENOMEM;
        if ((err = kdl__dist_status(err)) < 0)
                goto out;
        if (rank != 0) {
                send_all(buf, len);
                moved += len;
        }
        for (int r = 1; rank == 0 && r < size; r++) {
                recv_all(in, (size_t) lens[r], r);
                moved += (size_t) lens[r];
                if (!err)
                        err = take(ctx, in, (size_t) lens[r]);
        }
        err = kdl__dist_status(err);
out:
        free(in);
        free(lens);
        return err;
}

#else /* one process */

int kdl__dist_init(int *argc, char ***argv)
{
        (void) argc;
        (void) argv;
        return 0;
}

int kdl__dist_finish(int rc)
{
        return rc;
}

int kdl__dist_status(int err)
{
        return err;
}

int kdl__dist_sum(double *x, size_t n)
{
        (void) x;
        (void) n;
        return 0;
}

int kdl__dist_combine(void *state, const struct kdl__dist_ops *ops)
{
        (void) state;
        (void) ops;
        return 0;
}

int kdl__dist_broadcast(void *state, const struct kdl__dist_ops *ops)
{
        (void) state;
        (void) ops;
        return 0;
}

int kdl__dist_funnel(const void *buf, size_t len,
                     int (*take)(void *ctx, const void *buf, size_t len), void *ctx)
{
        (void) buf;
        (void) len;
        (void) take;
        (void) ctx;
        return 0;
}

#endif

/* ---- gathered rows -------------------------------------------------------------------- */

/* The state kdl__dist_gather() combines: a gather and its sources. */
struct gathered {
        struct kdl__gather *g;
        const struct kdl__srcs *l;
};

/* n, ids[n], labels[n], then each source's n rows. */
static int rows_pack(const void *state, void **buf, size_t *len)
{
        const struct gathered *x = state;
        const struct kdl__gather *g = x->g;
        struct kdl__packer p = {0};

        kdl__pack(&p, &g->n, sizeof(g->n));
        kdl__pack(&p, g->ids, g->n * sizeof(*g->ids));
        kdl__pack(&p, g->labels, g->n * sizeof(*g->labels));
        for (size_t k = 0; k < x->l->n; k++)
                kdl__pack(&p, g->data[k], g->n * x->l->v[k].width * sizeof(double));
        return kdl__pack_done(&p, buf, len);
}

/* The packed rows after those of x->g (which has room for g->nwant). */
static int rows_merge(void *state, const void *buf, size_t len)
{
        struct gathered *x = state;
        struct kdl__gather *g = x->g;
        struct kdl__unpacker u = {buf, len, 0};
        static const char what[] = "MPI: gathered rows";
        size_t m = 0;
        int err;

        err = kdl__unpack_get(&u, &m, sizeof(m), what);
        if (!err && m > g->nwant - g->n)
                err = kdl_error(-KDL_ESCHEMA, "MPI: %zu gathered rows after %zu of %zu wanted", m,
                                g->n, g->nwant);
        err = err ?: kdl__unpack_get(&u, g->ids + g->n, m * sizeof(*g->ids), what);
        err = err ?: kdl__unpack_get(&u, g->labels + g->n, m * sizeof(*g->labels), what);
        for (size_t k = 0; k < x->l->n && !err; k++) {
                size_t w = x->l->v[k].width;

                err = kdl__unpack_get(&u, g->data[k] + g->n * w, m * w * sizeof(double), what);
        }
        err = err ?: kdl__unpack_end(&u, what);
        if (!err)
                g->n += m;
        return err;
}

static int rows_load(void *state, const void *buf, size_t len)
{
        struct gathered *x = state;

        x->g->n = 0;
        return rows_merge(state, buf, len);
}

int kdl__dist_gather(struct kdl__gather *g, const struct kdl__srcs *l)
{
        static const struct kdl__dist_ops ops = {rows_pack, rows_merge, rows_load};
        struct gathered x = {g, l};

        return kdl__dist_combine(&x, &ops);
}
