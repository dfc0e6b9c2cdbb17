/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_PACK_H
#define KDL_METRICS_PACK_H

#include <stddef.h>

/*
 * A state as bytes, for sending it to another process of the same build
 * (analysis/dist.h): the fields one after another in host layout, no
 * header.  The metrics' *_pack() functions write with these, their
 * *_merge_packed() and *_load_packed() read.
 *
 *      struct kdl__packer p = {0};
 *      kdl__pack(&p, &s->n, sizeof(s->n));  ...
 *      return kdl__pack_done(&p, buf, len);      (*buf the caller's to free)
 *
 *      struct kdl__unpacker u = {buf, len, 0};
 *      const double *x = kdl__unpack(&u, n * sizeof(double));  (NULL: too short)
 */

struct kdl__packer {
        unsigned char *buf;
        size_t len, cap;
        int err;
};

/* Append @bytes of @x (an allocation failure is kept for kdl__pack_done()). */
void kdl__pack(struct kdl__packer *p, const void *x, size_t bytes);

/* Hand the bytes to *@buf, *@len.  Return: 0; -ENOMEM (nothing handed). */
int kdl__pack_done(struct kdl__packer *p, void **buf, size_t *len);

struct kdl__unpacker {
        const unsigned char *buf;
        size_t len, off;
};

/* The next @bytes (borrowed from the buffer; not aligned: memcpy them), or
 * NULL when fewer are left. */
const void *kdl__unpack(struct kdl__unpacker *u, size_t bytes);

/* The next @bytes copied to @x.  Return: 0; -KDL_ESCHEMA "@what: a packed
 * state of the wrong size" when fewer are left. */
int kdl__unpack_get(struct kdl__unpacker *u, void *x, size_t bytes, const char *what);

/* The next @bytes copied into a new allocation *@ret (the caller frees; NULL
 * on failure).  Return: 0; -KDL_ESCHEMA as kdl__unpack_get(); -ENOMEM. */
int kdl__unpack_dup(struct kdl__unpacker *u, size_t bytes, void **ret, const char *what);

/* -KDL_ESCHEMA "@what: a packed state of the wrong size" unless every byte was read. */
int kdl__unpack_end(const struct kdl__unpacker *u, const char *what);

#endif
