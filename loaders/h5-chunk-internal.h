/* SPDX-License-Identifier: MIT */
#ifndef KDL_LOADERS_H5_CHUNK_INTERNAL_H
#define KDL_LOADERS_H5_CHUNK_INTERNAL_H

/*
 * Shared by the chunk reader (h5-chunk.c) and the filter pipeline
 * (h5-filter.c): a read's chunk jobs, the per-thread scratch and the
 * reader's state.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <hdf5.h>
#include <libdeflate.h>

#include "loaders/h5-internal.h"

#define MAX_THREADS 64u

struct filter {
        H5Z_filter_t id;
        size_t elem; /* shuffle: bytes per element */
};

/* A decoded chunk in the cache. */
struct entry {
        uint64_t key; /* position in its row of chunks */
        unsigned char *buf;
};

/* What one thread decodes with. */
struct scratch {
        struct libdeflate_decompressor *inflater;
        unsigned char *dec, *tmp; /* the last stage's output, the one before */
        size_t dec_cap, tmp_cap;
};

/* One chunk of a read. */
struct job {
        size_t g[KDL_MAX_DIMS]; /* grid coordinates */
        uint64_t key;
        size_t src_start[KDL_MAX_DIMS], dst_start[KDL_MAX_DIMS], count[KDL_MAX_DIMS];
        const unsigned char *cached; /* the decoded chunk, from the cache */
        unsigned mask;               /* filters skipped when it was written */
        size_t raw_len, dec_len, tmp_len;
        unsigned char *raw; /* the stored bytes; kept for the next job in this slot */
        size_t raw_cap;
        unsigned char *dec;           /* a chunk to keep: its own output buffer */
        const unsigned char *decoded; /* raw, dec or a scratch buffer, once done */
        bool keep;                    /* into the cache afterwards */
        int err;
        char msg[200];
};

struct kdl__h5_chunks {
        const char *file, *path; /* borrowed, for messages */
        hid_t did;               /* borrowed */
        struct kdl__h5_num t;
        struct kdl__h5_read_opts o;
        size_t ndim;
        size_t shape[KDL_MAX_DIMS], chunk[KDL_MAX_DIMS], grid[KDL_MAX_DIMS];
        size_t bytes; /* of a decoded chunk */
        hsize_t eof;  /* the file's size */
        size_t nfilters;
        struct filter filters[H5Z_MAX_NFILTERS];
        bool edge_plain; /* partial edge chunks are stored unfiltered */
        struct scratch th[MAX_THREADS];
        struct job *jobs; /* WINDOW_JOBS slots */
        /* The cache: decoded chunks of row of chunks @band, sorted by key. */
        size_t band;
        struct entry *cache;
        size_t ncache, cache_cap, cache_bytes;
};

/* Record a failure of @j in the job itself (helpers have no kdl_error()); returns @err. */
int kdl__h5_job_error(struct job *j, int err, const char *fmt, ...) KDL_PRINTF(3, 4);

/**
 * kdl__h5_pipeline() - undo @c's filters on job @j's stored bytes with the
 * scratch @s; j->decoded points at the chunk's bytes afterwards.
 * Return: 0; a negative code with the message in @j.
 */
int kdl__h5_pipeline(const kdl__h5_chunks *c, struct job *j, const struct scratch *s);

#endif
