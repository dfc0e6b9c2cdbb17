/* SPDX-License-Identifier: MIT */
/*
 * Chunked datasets, read by kdlens itself: each chunk's stored bytes come
 * from H5Dread_chunk(), and kdlens undoes the filters (deflate with
 * libdeflate, shuffle, fletcher32), checking every size, then converts the
 * stored type.  HDF5's filter pipeline never sees a chunk, so a truncated
 * or lying deflate stream is an error naming the chunk instead of a heap
 * overflow inside HDF5, and a deflate bomb stops at the chunk's size.
 *
 * A read is a box of the dataset.  Its chunks go through in windows: the
 * calling thread looks each one up and reads its stored bytes in chunk
 * order (HDF5 is called from that thread only) while helper threads
 * inflate and convert the chunks already read, each in its own scratch
 * buffers.  The decoded chunks of the box's last row of chunks that the
 * box does not use whole stay in a cache, so that reading row blocks in
 * order decodes each chunk once.  Buffers are kept from one read to the
 * next: fresh memory for every chunk cost more in page faults than the
 * inflating.
 */
#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5-internal.h"
#include "loaders/h5-chunk-internal.h"
#include "metrics/base/banned.h"

#define WINDOW_JOBS  256u        /* chunks handled per window, at most */
#define WINDOW_BYTES (8u << 20)  /* stored bytes of a window, unless threads need more */
#define THREAD_BYTES (64u << 20) /* threads decode in parallel only while this holds them */
#define RETAIN_BYTES (16u << 20) /* buffers kept from one read to the next, at most */

/* Chunks being read: what the threads share. */
struct window {
        kdl__h5_chunks *c;
        struct job *jobs;
        size_t n;
        enum kdl__h5_to to;
        void *out;
        const size_t *out_shape;
        pthread_mutex_t mu;
        pthread_cond_t cv;
        unsigned threads; /* decoding it, the caller's included */
        size_t ready;     /* jobs [0, ready) have their stored bytes */
        size_t next;      /* the next job to decode */
        bool produced;    /* ready is final */
        size_t failed;    /* the first failed job, n when none */
};

struct helper {
        struct window *w;
        struct scratch *s;
        pthread_t tid;
};

void kdl__h5_read_opts_init(struct kdl__h5_read_opts *o)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);

        o->chunk_max = (size_t) 256 << 20;
        o->cache_max = (size_t) 64 << 20;
        o->thread_work = (size_t) 512 << 10;
        o->threads = cpus < 1 ? 1 : cpus > 4 ? 4 : (unsigned) cpus;
}

/* Record a failure of @j in the job itself (helpers have no kdl_error()). */
int kdl__h5_job_error(struct job *j, int err, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(j->msg, sizeof(j->msg), fmt, ap);
        va_end(ap);
        j->err = err;
        return err;
}

/* ---- opening ------------------------------------------------------------------ */

static int read_filters(kdl__h5_chunks *c, hid_t dcpl)
{
        int nf = H5Pget_nfilters(dcpl), deflates = 0;
        unsigned opts = 0;

        if (nf < 0 || nf > H5Z_MAX_NFILTERS)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot list the filters", c->file, c->path);
        for (int k = 0; k < nf; k++) {
                unsigned flags, cd[8] = {0}, config;
                size_t ncd = 8;
                char name[64] = "";
                H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned) k, &flags, &ncd, cd, sizeof(name),
                                                 name, &config);

                if (id == H5Z_FILTER_DEFLATE) {
                        deflates++;
                } else if (id != H5Z_FILTER_SHUFFLE && id != H5Z_FILTER_FLETCHER32) {
                        name[sizeof(name) - 1] = '\0';
                        return kdl_error(-KDL_EHDF5,
                                         "'%s': %s: stored with filter '%s' (id %d), which "
                                         "kdlens does not decode (it decodes deflate, shuffle "
                                         "and fletcher32)",
                                         c->file, c->path, name[0] ? name : "unnamed", (int) id);
                }
                c->filters[k].id = id;
                c->filters[k].elem = id == H5Z_FILTER_SHUFFLE && ncd > 0 ? cd[0] : c->t.size;
        }
        if (deflates > 1)
                return kdl_error(-KDL_EHDF5,
                                 "'%s': %s: expected at most one deflate filter, found %d", c->file,
                                 c->path, deflates);
        c->nfilters = (size_t) nf;
        if (H5Pget_chunk_opts(dcpl, &opts) >= 0)
                c->edge_plain = opts & H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS;
        return 0;
}

static int read_geometry(kdl__h5_chunks *c, hid_t dcpl)
{
        hsize_t dims[H5S_MAX_RANK], cdims[H5S_MAX_RANK];
        hid_t space = H5Dget_space(c->did);
        int rank = space < 0 ? -1 : H5Sget_simple_extent_dims(space, dims, NULL);
        size_t bytes = c->t.size;

        if (space >= 0)
                H5Sclose(space);
        if (rank < 1 || rank > KDL_MAX_DIMS || H5Pget_chunk(dcpl, rank, cdims) != rank)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot read the chunk layout", c->file,
                                 c->path);
        c->ndim = (size_t) rank;
        for (size_t k = 0; k < c->ndim; k++) {
                if (cdims[k] == 0 || __builtin_mul_overflow(bytes, cdims[k], &bytes))
                        return kdl_error(-KDL_EHDF5, "'%s': %s: unusable chunk dimensions", c->file,
                                         c->path);
                c->shape[k] = (size_t) dims[k];
                c->chunk[k] = (size_t) cdims[k];
                c->grid[k] = c->shape[k] / c->chunk[k] + (c->shape[k] % c->chunk[k] != 0);
        }
        for (size_t k = 1, keys = 1; k < c->ndim; k++)
                if (__builtin_mul_overflow(keys, c->grid[k], &keys))
                        return kdl_error(-KDL_EHDF5, "'%s': %s: too many chunks per row", c->file,
                                         c->path);
        if (bytes > c->o.chunk_max)
                return kdl_error(-KDL_EHDF5,
                                 "'%s': %s: chunks of %zu bytes exceed the limit of %zu bytes",
                                 c->file, c->path, bytes, c->o.chunk_max);
        c->bytes = bytes;
        return 0;
}

int kdl__h5_chunks_open(const char *file, const char *path, hid_t fid, hid_t did,
                        const struct kdl__h5_num *t, const struct kdl__h5_read_opts *o,
                        kdl__h5_chunks **ret)
{
        hid_t dcpl = H5Dget_create_plist(did);
        kdl__h5_chunks *c = NULL;
        int err;

        if (dcpl < 0)
                return kdl_error(-KDL_EHDF5, "'%s': %s: cannot read the storage layout", file,
                                 path);
        if (H5Pget_layout(dcpl) != H5D_CHUNKED) {
                H5Pclose(dcpl);
                return 0;
        }
        c = kdl_new(kdl__h5_chunks, 1);
        if (!c) {
                H5Pclose(dcpl);
                return kdl__h5_nomem(file, path);
        }
        *c = (kdl__h5_chunks){
                .file = file, .path = path, .did = did, .t = *t, .o = *o, .band = SIZE_MAX};
        if (c->o.threads < 1)
                c->o.threads = 1;
        if (c->o.threads > MAX_THREADS)
                c->o.threads = MAX_THREADS;
        err = read_geometry(c, dcpl);
        if (err == 0)
                err = read_filters(c, dcpl);
        if (err == 0 && H5Fget_filesize(fid, &c->eof) < 0)
                err = kdl_error(-KDL_EHDF5, "'%s': cannot read the file's size", file);
        H5Pclose(dcpl);
        if (err < 0) {
                free(c);
                return err;
        }
        *ret = c;
        return 1;
}

static void cache_clear(kdl__h5_chunks *c)
{
        for (size_t k = 0; k < c->ncache; k++)
                free(c->cache[k].buf);
        c->ncache = 0;
        c->cache_bytes = 0;
}

void kdl__h5_chunks_close(kdl__h5_chunks *c)
{
        if (!c)
                return;
        cache_clear(c);
        free(c->cache);
        for (size_t k = 0; k < MAX_THREADS; k++) {
                libdeflate_free_decompressor(c->th[k].inflater);
                free(c->th[k].dec);
                free(c->th[k].tmp);
        }
        for (size_t k = 0; c->jobs && k < WINDOW_JOBS; k++) {
                free(c->jobs[k].raw);
                free(c->jobs[k].dec);
        }
        free(c->jobs);
        free(c);
}

/* ---- the cache ---------------------------------------------------------------- */

/* The position of cache entry @key, or where it would go. */
static size_t cache_find(const kdl__h5_chunks *c, uint64_t key)
{
        size_t lo = 0, hi = c->ncache;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (c->cache[mid].key < key)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static const unsigned char *cache_get(const kdl__h5_chunks *c, const struct job *j)
{
        size_t at;

        if (j->g[0] != c->band)
                return NULL;
        at = cache_find(c, j->key);
        return at < c->ncache && c->cache[at].key == j->key ? c->cache[at].buf : NULL;
}

/* Keep the decoded chunk of @j (taking its buffer) if it fits; 0 or -ENOMEM. */
static int cache_put(kdl__h5_chunks *c, struct job *j)
{
        unsigned char *buf = (unsigned char *) j->decoded;
        size_t at;

        if (j->g[0] != c->band) {
                cache_clear(c);
                c->band = j->g[0];
        }
        at = cache_find(c, j->key);
        if (c->cache_bytes + c->bytes > c->o.cache_max ||
            (at < c->ncache && c->cache[at].key == j->key))
                return 0;
        if (c->ncache == c->cache_cap) {
                size_t cap = c->cache_cap ? 2 * c->cache_cap : 16;
                struct entry *grown = kdl__realloc(c->cache, cap, sizeof(*grown));

                if (!grown)
                        return kdl__h5_nomem(c->file, c->path);
                c->cache = grown;
                c->cache_cap = cap;
        }
        memmove(c->cache + at + 1, c->cache + at, (c->ncache - at) * sizeof(*c->cache));
        c->cache[at] = (struct entry){.key = j->key, .buf = buf};
        c->ncache++;
        c->cache_bytes += c->bytes;
        if (buf == j->raw) {
                j->raw = NULL;
                j->raw_cap = 0;
        } else {
                j->dec = NULL;
        }
        return 0;
}

/* ---- a window of chunks ------------------------------------------------------- */

/* Decode job @j (its stored bytes read) with @s and convert it into the box. */
static void decode(struct window *w, struct job *j, const struct scratch *s)
{
        const kdl__h5_chunks *c = w->c;
        const unsigned char *src = j->cached;

        if (!src) {
                if (kdl__h5_pipeline(c, j, s) < 0)
                        return;
                src = j->decoded;
        }
        kdl__h5_convert_box(&c->t, w->to, c->ndim, src, c->chunk, j->src_start, w->out,
                            w->out_shape, j->dst_start, j->count);
}

/* Take and decode jobs until none is left to take (a helper thread, or the caller's). */
static void consume(struct window *w, const struct scratch *s)
{
        pthread_mutex_lock(&w->mu);
        for (;;) {
                size_t k;

                while (w->next >= w->ready && !w->produced)
                        pthread_cond_wait(&w->cv, &w->mu);
                if (w->next >= w->ready)
                        break;
                k = w->next++;
                if (k > w->failed)
                        continue;
                pthread_mutex_unlock(&w->mu);
                decode(w, &w->jobs[k], s);
                pthread_mutex_lock(&w->mu);
                if (w->jobs[k].err && k < w->failed)
                        w->failed = k;
        }
        pthread_mutex_unlock(&w->mu);
}

static void *helper_main(void *arg)
{
        struct helper *h = arg;

        consume(h->w, h->s);
        return NULL;
}

/* The stored bytes of job @j; 0 or an error recorded in @j. */
static int fetch(const kdl__h5_chunks *c, struct job *j)
{
        hsize_t off[KDL_MAX_DIMS];
        uint32_t mask = 0;
        char buf[256];

        for (size_t k = 0; k < c->ndim; k++)
                off[k] = (hsize_t) (j->g[k] * c->chunk[k]);
        if (H5Dread_chunk(c->did, H5P_DEFAULT, off, &mask, j->raw) < 0)
                return kdl__h5_job_error(j, -KDL_EHDF5, "cannot read its %zu stored bytes: %s",
                                         j->raw_len, kdl__h5_last_error(buf));
        if (mask != j->mask)
                return kdl__h5_job_error(j, -KDL_EHDF5, "filter mask changed while reading");
        return 0;
}

/* Record that job @k failed; stop at the first failure in job order. */
static void failed(struct window *w, size_t k)
{
        pthread_mutex_lock(&w->mu);
        if (k < w->failed)
                w->failed = k;
        pthread_mutex_unlock(&w->mu);
}

/* Fetch and decode jobs [0, w->n): helper threads decode while this one fetches. */
static void run_window(struct window *w)
{
        kdl__h5_chunks *c = w->c;
        struct helper hs[MAX_THREADS];
        size_t nh = 0;

        for (; nh + 1 < w->threads; nh++) {
                hs[nh] = (struct helper){.w = w, .s = &c->th[nh + 1]};
                if (pthread_create(&hs[nh].tid, NULL, helper_main, &hs[nh]) != 0)
                        break; /* fewer helpers: slower, not wrong */
        }
        for (size_t k = 0; k < w->n; k++) {
                struct job *j = &w->jobs[k];
                bool stop;

                pthread_mutex_lock(&w->mu);
                stop = w->failed < k;
                pthread_mutex_unlock(&w->mu);
                if (stop)
                        break;
                if (!j->err && !j->cached)
                        fetch(c, j);
                if (!j->err && nh == 0)
                        decode(w, j, &c->th[0]); /* alone: decode it while it is warm */
                if (j->err) {
                        failed(w, k);
                        break;
                }
                pthread_mutex_lock(&w->mu);
                w->ready = k + 1;
                if (nh == 0)
                        w->next = k + 1;
                pthread_cond_signal(&w->cv);
                pthread_mutex_unlock(&w->mu);
        }
        pthread_mutex_lock(&w->mu);
        w->produced = true;
        pthread_cond_broadcast(&w->cv);
        pthread_mutex_unlock(&w->mu);
        consume(w, &c->th[0]);
        for (size_t k = 0; k < nh; k++)
                pthread_join(hs[k].tid, NULL);
}

/* At least @need bytes at *@buf (*@cap of them now; contents not kept); 0 or -ENOMEM. */
static int reserve(const kdl__h5_chunks *c, unsigned char **buf, size_t *cap, size_t need)
{
        if (*cap >= need)
                return 0;
        free(*buf);
        *cap = 0;
        *buf = kdl__malloc(need, 1);
        if (!*buf)
                return kdl__h5_nomem(c->file, c->path);
        *cap = need;
        return 0;
}

/*
 * Plan job @j at grid position j->g for the box @start/@count: its part of
 * the box, the cache, the chunk's stored size, its buffers.  Return: 0; an
 * error recorded in @j; -ENOMEM (message recorded).
 */
static int plan(kdl__h5_chunks *c, struct job *j, const size_t *start, const size_t *count)
{
        hsize_t off[KDL_MAX_DIMS], size = 0;
        haddr_t addr = HADDR_UNDEF;
        bool whole = true;
        unsigned mask = 0;
        char buf[256];

        j->key = 0;
        for (size_t k = 0; k < c->ndim; k++) {
                size_t o = j->g[k] * c->chunk[k], end = o + c->chunk[k];
                size_t lo = start[k] > o ? start[k] : o;
                size_t hi = start[k] + count[k] < end ? start[k] + count[k] : end;

                off[k] = (hsize_t) o;
                j->src_start[k] = lo - o;
                j->dst_start[k] = lo - start[k];
                j->count[k] = hi - lo;
                whole = whole && lo == o && hi == (end < c->shape[k] ? end : c->shape[k]);
                if (k > 0)
                        j->key = j->key * c->grid[k] + j->g[k];
        }
        j->cached = cache_get(c, j);
        if (j->cached)
                return 0;
        j->keep = !whole && j->g[0] == (start[0] + count[0] - 1) / c->chunk[0];
        if (H5Dget_chunk_info_by_coord(c->did, off, &mask, &addr, &size) < 0)
                return kdl__h5_job_error(j, -KDL_EHDF5, "cannot look it up: %s",
                                         kdl__h5_last_error(buf));
        if (size == 0 || addr == HADDR_UNDEF)
                return kdl__h5_job_error(j, -KDL_EHDF5,
                                         "declared but not written (no chunk stored)");
        if (size > c->o.chunk_max)
                return kdl__h5_job_error(j, -KDL_EHDF5,
                                         "stored size %llu bytes exceeds the limit of %zu bytes",
                                         (unsigned long long) size, c->o.chunk_max);
        if (addr > c->eof || size > c->eof - addr)
                return kdl__h5_job_error(
                        j, -KDL_EHDF5,
                        "stored at bytes %llu..%llu, past the end of the file (%llu "
                        "bytes)",
                        (unsigned long long) addr, (unsigned long long) (addr + size),
                        (unsigned long long) c->eof);
        j->mask = mask;
        j->raw_len = (size_t) size;
        if (kdl__h5_pipeline(c, j, NULL) < 0)
                return j->err;
        j->decoded = NULL;
        if (reserve(c, &j->raw, &j->raw_cap, j->raw_len) < 0)
                return -ENOMEM;
        /* A chunk to keep decodes into its own buffer, which the cache takes. */
        if (j->keep && j->dec_len && !(j->dec = kdl__malloc(j->dec_len, 1)))
                return kdl__h5_nomem(c->file, c->path);
        return 0;
}

/* Room in the scratch of @w's threads for its chunks; 0 or -ENOMEM. */
static int grow_scratch(kdl__h5_chunks *c, const struct window *w)
{
        size_t dec = 0, tmp = 0;

        for (size_t k = 0; k < w->n; k++) {
                const struct job *j = &w->jobs[k];

                if (j->cached || j->err)
                        continue;
                if (!j->dec && j->dec_len > dec)
                        dec = j->dec_len;
                if (j->tmp_len > tmp)
                        tmp = j->tmp_len;
        }
        for (unsigned t = 0; t < w->threads; t++) {
                struct scratch *s = &c->th[t];
                int err = reserve(c, &s->dec, &s->dec_cap, dec);

                if (err < 0 || (err = reserve(c, &s->tmp, &s->tmp_cap, tmp)) < 0)
                        return err;
        }
        return 0;
}

/* The next grid position of the box [@lo, @hi] after @g; false after the last. */
static bool next_chunk(size_t ndim, const size_t *lo, const size_t *hi, size_t *g)
{
        for (size_t k = ndim; k-- > 0;) {
                if (g[k] < hi[k]) {
                        g[k]++;
                        return true;
                }
                g[k] = lo[k];
        }
        return false;
}

/* Threads worth their memory: each holds a chunk and two more in flight. */
static unsigned threads_max(const kdl__h5_chunks *c)
{
        size_t fit = THREAD_BYTES / (3 * c->bytes);

        return fit < 1 ? 1 : fit < c->o.threads ? (unsigned) fit : c->o.threads;
}

/* Threads for window @w: one per chunk to decode at most, and per o.thread_work bytes. */
static unsigned threads_for(const kdl__h5_chunks *c, const struct window *w)
{
        size_t work = 0, t = threads_max(c), worth;

        for (size_t k = 0; k < w->n; k++)
                work += !w->jobs[k].cached && !w->jobs[k].err;
        worth = c->o.thread_work ? 1 + work * c->bytes / c->o.thread_work : t;
        t = worth < t ? worth : t;
        return work < 1 ? 1 : work < t ? (unsigned) work : (unsigned) t;
}

/* Free the buffers kept for the next read when they add up to more than RETAIN_BYTES. */
static void trim(kdl__h5_chunks *c)
{
        size_t kept = 0;

        for (size_t k = 0; k < WINDOW_JOBS; k++)
                kept += c->jobs ? c->jobs[k].raw_cap : 0;
        for (size_t k = 0; k < MAX_THREADS; k++)
                kept += c->th[k].dec_cap + c->th[k].tmp_cap;
        if (kept <= RETAIN_BYTES)
                return;
        for (size_t k = 0; c->jobs && k < WINDOW_JOBS; k++) {
                free(c->jobs[k].raw);
                c->jobs[k].raw = NULL;
                c->jobs[k].raw_cap = 0;
        }
        for (size_t k = 0; k < MAX_THREADS; k++) {
                free(c->th[k].dec);
                free(c->th[k].tmp);
                c->th[k].dec = c->th[k].tmp = NULL;
                c->th[k].dec_cap = c->th[k].tmp_cap = 0;
        }
}

static int lazy_init(kdl__h5_chunks *c)
{
        if (!c->jobs && !(c->jobs = kdl_new(struct job, WINDOW_JOBS)))
                return kdl__h5_nomem(c->file, c->path);
        for (unsigned k = 0; k < c->o.threads; k++)
                if (!c->th[k].inflater && !(c->th[k].inflater = libdeflate_alloc_decompressor()))
                        return kdl__h5_nomem(c->file, c->path);
        return 0;
}

/* The first failure of @w's jobs, recorded; 0 when none. */
static int window_error(const kdl__h5_chunks *c, const struct window *w)
{
        for (size_t k = 0; k < w->n; k++) {
                const struct job *j = &w->jobs[k];
                char at[24 * KDL_MAX_DIMS] = "";
                size_t used = 0;

                if (!j->err)
                        continue;
                for (size_t d = 0; d < c->ndim; d++)
                        used += (size_t) snprintf(at + used, sizeof(at) - used, "%s%zu",
                                                  d ? ", " : "", j->g[d] * c->chunk[d]);
                return kdl_error(j->err, "'%s': %s: chunk at [%s]: %s", c->file, c->path, at,
                                 j->msg);
        }
        return 0;
}

int kdl__h5_chunks_read(kdl__h5_chunks *c, const size_t *start, const size_t *count,
                        enum kdl__h5_to to, void *out)
{
        size_t lo[KDL_MAX_DIMS], hi[KDL_MAX_DIMS], g[KDL_MAX_DIMS];
        struct job *jobs;
        bool more = true;
        int err;

        for (size_t k = 0; k < c->ndim; k++) {
                assert(count[k] > 0 && start[k] + count[k] <= c->shape[k]);
                lo[k] = g[k] = start[k] / c->chunk[k];
                hi[k] = (start[k] + count[k] - 1) / c->chunk[k];
        }
        err = lazy_init(c);
        jobs = c->jobs;
        while (err == 0 && more) {
                struct window w = {.c = c, .jobs = jobs, .to = to, .out = out, .out_shape = count};
                size_t bytes = 0, budget = WINDOW_BYTES;
                int nomem = 0;

                /* Enough for every thread to have two chunks to decode. */
                if (budget < 2 * threads_max(c) * c->bytes)
                        budget = 2 * threads_max(c) * c->bytes;
                /* Plan a window: up to WINDOW_JOBS chunks and the byte budget
                 * (at least one chunk); a failure ends it and the read. */
                while (more && w.n < WINDOW_JOBS && (w.n == 0 || bytes < budget)) {
                        struct job *j = &jobs[w.n];

                        *j = (struct job){.raw = j->raw, .raw_cap = j->raw_cap};
                        memcpy(j->g, g, sizeof(g));
                        nomem = plan(c, j, start, count);
                        if (nomem == -ENOMEM) {
                                more = false;
                                break;
                        }
                        nomem = 0;
                        bytes += j->cached ? 0 : j->raw_len + (j->dec ? j->dec_len : 0);
                        w.n++;
                        more = !j->err && next_chunk(c->ndim, lo, hi, g);
                }
                w.threads = threads_for(c, &w);
                nomem = nomem ?: grow_scratch(c, &w);
                w.failed = w.n;
                if (nomem == 0) {
                        pthread_mutex_init(&w.mu, NULL);
                        pthread_cond_init(&w.cv, NULL);
                        run_window(&w);
                        pthread_mutex_destroy(&w.mu);
                        pthread_cond_destroy(&w.cv);
                }
                /* The first failure in chunk order, whichever thread met it. */
                err = window_error(c, &w) ?: nomem;
                for (size_t k = 0; k < w.n; k++) {
                        if (err == 0 && jobs[k].keep && jobs[k].decoded)
                                err = cache_put(c, &jobs[k]);
                        free(jobs[k].dec);
                        jobs[k].dec = NULL;
                }
        }
        trim(c);
        return err;
}
