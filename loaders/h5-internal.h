/* SPDX-License-Identifier: MIT */
#ifndef KDL_LOADERS_H5_INTERNAL_H
#define KDL_LOADERS_H5_INTERNAL_H

#include <stdbool.h>

#include <hdf5.h>

#include "loaders/h5.h"

/* Internals shared by the files of loaders/ (reader and writer). */

/** kdl__h5_init() - silence HDF5's own error printing (idempotent). */
void kdl__h5_init(void);

/** kdl__h5_last_error() - the innermost description on HDF5's error stack, in @buf. */
const char *kdl__h5_last_error(char buf[static 256]);

/** kdl__h5_path_valid() - true if every link of @path exists under @loc. */
bool kdl__h5_path_valid(hid_t loc, const char *path);

/** kdl__h5_fid() - the HDF5 file id of @f (borrowed). */
hid_t kdl__h5_fid(const kdl_h5file *f);

#endif
