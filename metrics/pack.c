/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/error.h"
#include "metrics/pack.h"
#include "metrics/base/banned.h"

void kdl__pack(struct kdl__packer *p, const void *x, size_t bytes)
{
        if (p->err || bytes == 0)
                return;
        if (p->len + bytes > p->cap) {
                size_t cap = 2 * (p->len + bytes);
                unsigned char *grown = realloc(p->buf, cap);

                if (!grown) {
                        p->err = -ENOMEM;
                        return;
                }
                p->buf = grown;
                p->cap = cap;
        }
        memcpy(p->buf + p->len, x, bytes);
        p->len += bytes;
}

int kdl__pack_done(struct kdl__packer *p, void **buf, size_t *len)
{
        if (p->err) {
                free(p->buf);
                return p->err;
        }
        *buf = p->buf;
        *len = p->len;
        return 0;
}

const void *kdl__unpack(struct kdl__unpacker *u, size_t bytes)
{
        const void *at = u->buf + u->off;

        if (bytes > u->len - u->off)
                return NULL;
        u->off += bytes;
        return at;
}

static int short_state(const char *what)
{
        return kdl_error(-KDL_ESCHEMA, "%s: a packed state of the wrong size", what);
}

int kdl__unpack_get(struct kdl__unpacker *u, void *x, size_t bytes, const char *what)
{
        const void *at = kdl__unpack(u, bytes);

        if (!at)
                return short_state(what);
        memcpy(x, at, bytes);
        return 0;
}

int kdl__unpack_dup(struct kdl__unpacker *u, size_t bytes, void **ret, const char *what)
{
        const void *at = kdl__unpack(u, bytes);

        *ret = NULL;
        if (!at)
                return short_state(what);
        *ret = malloc(bytes ? bytes : 1);
        if (!*ret)
                return -ENOMEM;
        memcpy(*ret, at, bytes);
        return 0;
}

int kdl__unpack_end(const struct kdl__unpacker *u, const char *what)
{
        return u->off != u->len ? short_state(what) : 0;
}
