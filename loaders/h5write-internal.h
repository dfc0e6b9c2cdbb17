/* SPDX-License-Identifier: MIT */
#ifndef KDL_LOADERS_H5WRITE_INTERNAL_H
#define KDL_LOADERS_H5WRITE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hdf5.h>

#include "loaders/h5write.h"

/* The stored types (h5write-store.c), for the writer (h5write.c). */

/** kdl__h5w_store_is_float() - true for the floating-point stored types. */
bool kdl__h5w_store_is_float(enum kdl_store store);

/** kdl__h5w_store_bytes() - bytes of one stored element. */
size_t kdl__h5w_store_bytes(enum kdl_store store);

/**
 * kdl__h5w_float16_type() - the IEEE binary16 type as h5py defines it, in
 * the byte order of @base (a float32 type); caller closes it with
 * H5Tclose(); negative on failure.
 */
hid_t kdl__h5w_float16_type(hid_t base);

/** kdl__h5w_file_type() - a new type id for @store; caller closes it with H5Tclose(). */
hid_t kdl__h5w_file_type(enum kdl_store store);

/** kdl__h5w_f16_bits() - the IEEE binary16 bits of @x rounded as kdl_h5w_round_f16(). */
uint16_t kdl__h5w_f16_bits(double x);

#endif
