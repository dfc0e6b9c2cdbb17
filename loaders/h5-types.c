/* SPDX-License-Identifier: MIT */
/*
 * Numbers: the HDF5 types a dump may hold (IEEE binary16/32/64 floats,
 * whole-byte standard integers), each named, and what any other type is.
 */
#include <stdio.h>
#include <string.h>

#include <hdf5.h>

#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "metrics/base/banned.h"

/* The IEEE 754 binary formats HDF5 can describe, field by field. */
static const struct ieee {
        size_t size, spos, epos, esize, mpos, msize, ebias;
        const char *name;
} ieee[] = {
        {2, 15, 10, 5, 0, 10, 15, "float16"},
        {4, 31, 23, 8, 0, 23, 127, "float32"},
        {8, 63, 52, 11, 0, 52, 1023, "float64"},
};

static const char *order_name(H5T_order_t o)
{
        return o == H5T_ORDER_LE   ? "little-endian"
               : o == H5T_ORDER_BE ? "big-endian"
                                   : "mixed-endian";
}

/* The name of @type if it is an IEEE binary16/32/64 float in little or big
 * endian order, else NULL and what it is in @w. */
const char *kdl__h5_ieee_float(hid_t type, struct kdl__h5_why *w)
{
        size_t size = H5Tget_size(type), prec = H5Tget_precision(type), spos, epos, esize, mpos,
               msize, ebias = H5Tget_ebias(type);
        int off = H5Tget_offset(type);
        H5T_order_t order = H5Tget_order(type);
        H5T_norm_t norm = H5Tget_norm(type);

        if (H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) < 0) {
                snprintf(w->text, sizeof(w->text), "a float whose fields HDF5 cannot read");
                return NULL;
        }
        for (size_t k = 0; k < sizeof(ieee) / sizeof(ieee[0]); k++) {
                const struct ieee *e = &ieee[k];

                if (size == e->size && prec == 8 * size && off == 0 && spos == e->spos &&
                    epos == e->epos && esize == e->esize && mpos == e->mpos && msize == e->msize &&
                    ebias == e->ebias && norm == H5T_NORM_IMPLIED &&
                    (order == H5T_ORDER_LE || order == H5T_ORDER_BE))
                        return e->name;
        }
        snprintf(w->text, sizeof(w->text),
                 "a %zu-byte float that is not IEEE binary16/32/64 (precision %zu, offset %d, "
                 "sign bit %zu, exponent %zu bits at %zu with bias %zu, mantissa %zu bits at %zu, "
                 "%s mantissa, %s)",
                 size, prec, off, spos, esize, epos, ebias, msize, mpos,
                 norm == H5T_NORM_IMPLIED  ? "implied-bit"
                 : norm == H5T_NORM_MSBSET ? "msb-set"
                                           : "unnormalised",
                 order_name(order));
        return NULL;
}

/* The name of @type if it is a whole-byte integer of 1, 2, 4 or 8 bytes,
 * little or big endian; else NULL and what it is in @w. */
const char *kdl__h5_std_integer(hid_t type, struct kdl__h5_why *w)
{
        static const char *const names[2][4] = {{"uint8", "uint16", "uint32", "uint64"},
                                                {"int8", "int16", "int32", "int64"}};
        size_t size = H5Tget_size(type), prec = H5Tget_precision(type);
        int off = H5Tget_offset(type), k = size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : 3;
        H5T_order_t order = H5Tget_order(type);
        H5T_sign_t sign = H5Tget_sign(type);

        if ((size == 1 || size == 2 || size == 4 || size == 8) && prec == 8 * size && off == 0 &&
            (order == H5T_ORDER_LE || order == H5T_ORDER_BE) &&
            (sign == H5T_SGN_NONE || sign == H5T_SGN_2))
                return names[sign == H5T_SGN_2][k];
        snprintf(w->text, sizeof(w->text),
                 "a %zu-byte integer that is not a standard one (precision %zu, offset %d, %s, %s)",
                 size, prec, off, order_name(order),
                 sign == H5T_SGN_2      ? "signed"
                 : sign == H5T_SGN_NONE ? "unsigned"
                                        : "bad sign");
        return NULL;
}

const char *kdl__h5_class_name(H5T_class_t c)
{
        switch (c) {
        case H5T_INTEGER:
                return "integer";
        case H5T_FLOAT:
                return "float";
        case H5T_STRING:
                return "string";
        case H5T_COMPOUND:
                return "compound";
        case H5T_ENUM:
                return "enum";
        case H5T_ARRAY:
                return "array";
        case H5T_VLEN:
                return "vlen";
        case H5T_BITFIELD:
                return "bitfield";
        case H5T_OPAQUE:
                return "opaque";
        case H5T_REFERENCE:
                return "reference";
        default:
                return "other";
        }
}

const char *kdl__h5_dtype(const char *name)
{
        static const char *const all[] = {"float16", "float32",  "float64",  "int8",      "int16",
                                          "int32",   "int64",    "uint8",    "uint16",    "uint32",
                                          "uint64",  "string",   "compound", "enum",      "array",
                                          "vlen",    "bitfield", "opaque",   "reference", "other"};

        for (size_t k = 0; k < sizeof(all) / sizeof(all[0]); k++)
                if (strcmp(all[k], name) == 0)
                        return all[k];
        return "other";
}
