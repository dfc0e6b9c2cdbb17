/* SPDX-License-Identifier: MIT */
/*
 * The filter pipeline of a chunk, undone by kdlens (loaders/h5-chunk.c reads
 * the stored bytes): deflate with libdeflate, shuffle and fletcher32, in the
 * reverse of the order they were applied, skipping what the chunk's filter
 * mask says was skipped, and checking every size against the chunk's.
 */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include <hdf5.h>
#include <libdeflate.h>

#include "loaders/h5-internal.h"
#include "loaders/h5-chunk-internal.h"
#include "metrics/base/banned.h"

/* ---- the filters -------------------------------------------------------------- */

/* Fletcher-32 as HDF5 computes it: 16-bit big-endian words, sums from 0. */
static uint32_t fletcher32(const unsigned char *p, size_t len)
{
        uint32_t a = 0, b = 0;

        for (size_t words = len / 2; words > 0;) {
                size_t n = words > 360 ? 360 : words;

                words -= n;
                for (; n > 0; n--, p += 2) {
                        a += (uint32_t) p[0] << 8 | p[1];
                        b += a;
                }
                a = (a & 0xffff) + (a >> 16);
                b = (b & 0xffff) + (b >> 16);
        }
        if (len % 2) {
                a += (uint32_t) p[0] << 8;
                b += a;
                a = (a & 0xffff) + (a >> 16);
                b = (b & 0xffff) + (b >> 16);
        }
        a = (a & 0xffff) + (a >> 16);
        b = (b & 0xffff) + (b >> 16);
        return b << 16 | a;
}

static bool fletcher32_ok(const unsigned char *p, size_t len)
{
        uint32_t sum = fletcher32(p, len), stored, swapped;

        stored = (uint32_t) p[len] | (uint32_t) p[len + 1] << 8 | (uint32_t) p[len + 2] << 16 |
                 (uint32_t) p[len + 3] << 24;
        /* HDF5 before 1.6.3 wrote the bytes of each half swapped; it still accepts both. */
        swapped = (sum & 0x00ff00ffu) << 8 | (sum & 0xff00ff00u) >> 8;
        return stored == sum || stored == swapped;
}

/* Undo HDF5's shuffle: byte b of element i is at b * n + i. */
static void unshuffle(const unsigned char *src, size_t len, size_t elem, unsigned char *dst)
{
        size_t n = elem > 1 ? len / elem : 0;

        if (elem == 2) { /* float16, int16: the common case, written so that it vectorises */
                for (size_t i = 0; i < n; i++) {
                        dst[2 * i] = src[i];
                        dst[2 * i + 1] = src[n + i];
                }
        } else if (elem == 4) {
                for (size_t i = 0; i < n; i++)
                        for (size_t b = 0; b < 4; b++)
                                dst[4 * i + b] = src[b * n + i];
        } else {
                for (size_t b = 0; b < elem && n > 0; b++)
                        for (size_t i = 0; i < n; i++)
                                dst[i * elem + b] = src[b * n + i];
        }
        memcpy(dst + n * elem, src + n * elem, len - n * elem); /* the leftover bytes */
}

static bool is_edge(const kdl__h5_chunks *c, const size_t *g)
{
        for (size_t k = 0; k < c->ndim; k++)
                if ((g[k] + 1) * c->chunk[k] > c->shape[k])
                        return true;
        return false;
}

/* Whether filter @k applies to the chunk of @j. */
static bool active(const kdl__h5_chunks *c, const struct job *j, size_t k)
{
        return !(j->mask & (1u << k)) && !(c->edge_plain && is_edge(c, j->g));
}

/*
 * The filters of @j undone, last written first.  With @s NULL, only plan:
 * set j->dec_len and j->tmp_len, the buffers the stages need (the last
 * stage writes j->dec or s->dec, the one before s->tmp, and so on).
 * Otherwise run them in @s's buffers and set j->decoded.
 * Return: 0 or an error recorded in @j.
 */
int kdl__h5_pipeline(const kdl__h5_chunks *c, struct job *j, const struct scratch *s)
{
        struct libdeflate_decompressor *dec = s ? s->inflater : NULL;
        size_t want[H5Z_MAX_NFILTERS], size = c->bytes, len = j->raw_len, stages = 0;
        const unsigned char *cur = j->raw;
        unsigned char *bufs[2] = {j->dec ? j->dec : s ? s->dec : NULL, s ? s->tmp : NULL};
        size_t lens[2] = {0, 0};
        bool known = true; /* the stored size follows from the chunk's */

        /* Forward, as written: the size each filter was given. */
        for (size_t k = 0; k < c->nfilters; k++) {
                want[k] = size;
                if (!active(c, j, k))
                        continue;
                if (c->filters[k].id == H5Z_FILTER_FLETCHER32) {
                        size += 4;
                        continue;
                }
                stages++;
                if (c->filters[k].id == H5Z_FILTER_DEFLATE)
                        known = false; /* compressed: the file says how long */
        }
        if (known && len != size)
                return kdl__h5_job_error(j, -KDL_EHDF5, "stored %zu bytes, expected %zu", len,
                                         size);
        for (size_t k = c->nfilters; k-- > 0;) {
                const struct filter *f = &c->filters[k];
                unsigned char *out;

                if (!active(c, j, k))
                        continue;
                if (f->id == H5Z_FILTER_FLETCHER32) {
                        if (len < 4)
                                return kdl__h5_job_error(j, -KDL_EHDF5,
                                                         "fletcher32: %zu bytes hold no checksum",
                                                         len);
                        len -= 4;
                        if (dec && !fletcher32_ok(cur, len))
                                return kdl__h5_job_error(
                                        j, -KDL_EHDF5,
                                        "fletcher32 checksum does not match the data");
                        continue;
                }
                stages--;
                out = bufs[stages % 2];
                if (f->id == H5Z_FILTER_DEFLATE) {
                        /* want[k] is known: one deflate at most (read_filters()). */
                        if (dec) {
                                enum libdeflate_result r = libdeflate_zlib_decompress(
                                        dec, cur, len, out, want[k], NULL);

                                if (r == LIBDEFLATE_SHORT_OUTPUT)
                                        return kdl__h5_job_error(j, -KDL_EHDF5,
                                                                 "deflate stream inflates to fewer "
                                                                 "than the %zu bytes expected",
                                                                 want[k]);
                                if (r == LIBDEFLATE_INSUFFICIENT_SPACE)
                                        return kdl__h5_job_error(j, -KDL_EHDF5,
                                                                 "deflate stream inflates to more "
                                                                 "than the %zu bytes expected",
                                                                 want[k]);
                                if (r != LIBDEFLATE_SUCCESS)
                                        return kdl__h5_job_error(j, -KDL_EHDF5,
                                                                 "deflate stream of %zu bytes is "
                                                                 "corrupt or truncated",
                                                                 len);
                        }
                        len = want[k];
                } else if (dec) {
                        unshuffle(cur, len, f->elem, out);
                }
                if (len > lens[stages % 2])
                        lens[stages % 2] = len;
                cur = out;
        }
        if (len != c->bytes)
                return kdl__h5_job_error(j, -KDL_EHDF5, "decodes to %zu bytes, expected %zu", len,
                                         c->bytes);
        j->dec_len = lens[0];
        j->tmp_len = lens[1];
        j->decoded = cur;
        return 0;
}
