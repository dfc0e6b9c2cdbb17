/* SPDX-License-Identifier: MIT */
/*
 * The stored types of the writer: their names, sizes and HDF5 types, and
 * rounding to them (float16 by hand: HDF5 1.10 has no half type).
 */
#include <assert.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <hdf5.h>

#include "metrics/base/error.h"
#include "loaders/h5write.h"
#include "loaders/h5write-internal.h"
#include "metrics/base/banned.h"

static const char *const store_names[KDL_STORE_COUNT_] = {
        [KDL_STORE_F16] = "float16", [KDL_STORE_F32] = "float32", [KDL_STORE_F64] = "float64",
        [KDL_STORE_I64] = "int64",   [KDL_STORE_I32] = "int32",   [KDL_STORE_U8] = "uint8",
};

const char *kdl_store_name(enum kdl_store store)
{
        assert(store < KDL_STORE_COUNT_);
        return store_names[store];
}

int kdl_store_parse(const char *s, enum kdl_store *ret)
{
        static const char *const short_names[] = {"f16", "f32", "f64"};

        for (size_t i = 0; i < KDL_STORE_COUNT_; i++) {
                if (strcmp(s, store_names[i]) == 0 || (i < 3 && strcmp(s, short_names[i]) == 0)) {
                        *ret = (enum kdl_store) i;
                        return 0;
                }
        }
        return kdl_error(-KDL_EUSAGE,
                         "unknown storage type '%s' (expected float16, float32, float64, int64, "
                         "int32 or uint8)",
                         s);
}

bool kdl__h5w_store_is_float(enum kdl_store store)
{
        return store <= KDL_STORE_F64;
}

size_t kdl__h5w_store_bytes(enum kdl_store store)
{
        static const size_t bytes[KDL_STORE_COUNT_] = {2, 4, 8, 8, 4, 1};

        return bytes[store];
}

/* The IEEE binary16 type as h5py defines it, in the byte order of @base (a
 * float32 type): HDF5 1.10 has no predefined half-precision type, so derive
 * one from float32 (sign bit 15, exponent bits 10..14 with bias 15, mantissa
 * bits 0..9). */
hid_t kdl__h5w_float16_type(hid_t base)
{
        hid_t t = H5Tcopy(base);

        if (t < 0)
                return t;
        if (H5Tset_fields(t, 15, 10, 5, 0, 10) < 0 || H5Tset_size(t, 2) < 0 ||
            H5Tset_ebias(t, 15) < 0 || H5Tset_precision(t, 16) < 0 || H5Tset_offset(t, 0) < 0) {
                H5Tclose(t);
                return H5I_INVALID_HID;
        }
        return t;
}

/* A new type id for @store; the caller closes it with H5Tclose(). */
hid_t kdl__h5w_file_type(enum kdl_store store)
{
        switch (store) {
        case KDL_STORE_F16:
                return kdl__h5w_float16_type(H5T_IEEE_F32LE);
        case KDL_STORE_F32:
                return H5Tcopy(H5T_IEEE_F32LE);
        case KDL_STORE_F64:
                return H5Tcopy(H5T_IEEE_F64LE);
        case KDL_STORE_I64:
                return H5Tcopy(H5T_STD_I64LE);
        case KDL_STORE_I32:
                return H5Tcopy(H5T_STD_I32LE);
        case KDL_STORE_U8:
                return H5Tcopy(H5T_STD_U8LE);
        case KDL_STORE_COUNT_:
                break;
        }
        return H5I_INVALID_HID;
}

double kdl_h5w_round_f16(double x)
{
        double a = fabs(x), r;
        int e, q;

        if (!isfinite(x) || !(a > 0.0))
                return x;
        /* 65504 is the largest float16; halfway to the next binade (65520)
         * rounds to even, i.e. up, i.e. to infinity. */
        if (a >= 65520.0)
                return copysign(INFINITY, x);
        /* a = f * 2^e with f in [0.5, 1): 11 significant bits leave a
         * quantum of 2^(e - 11); subnormals share the quantum 2^-24. */
        frexp(a, &e);
        q = e - 11;
        if (q < -24)
                q = -24;
        r = nearbyint(ldexp(a, -q)); /* exact scaling; ties to even */
        return copysign(ldexp(r, q), x);
}

/* The IEEE binary16 bits of @x rounded as kdl_h5w_round_f16(). */
uint16_t kdl__h5w_f16_bits(double x)
{
        uint16_t sign = signbit(x) ? 0x8000 : 0;
        double r;
        int e;

        if (isnan(x))
                return sign | 0x7e00;
        r = fabs(kdl_h5w_round_f16(x));
        if (isinf(r))
                return sign | 0x7c00;
        if (!(r > 0.0))
                return sign;
        frexp(r, &e);    /* r = f * 2^e, f in [0.5, 1) */
        if (e - 1 < -14) /* subnormal: a multiple of 2^-24 below 2^-14 */
                return sign | (uint16_t) ldexp(r, 24);
        /* normal: biased exponent e - 1 + 15, 10 mantissa bits */
        return sign | (uint16_t) ((e + 14) << 10) | (uint16_t) (ldexp(r, 11 - e) - 1024.0);
}

double kdl_h5w_round(double x, enum kdl_store store)
{
        switch (store) {
        case KDL_STORE_F16:
                return kdl_h5w_round_f16(x);
        case KDL_STORE_F32:
                return (double) (float) x;
        default:
                return x;
        }
}
