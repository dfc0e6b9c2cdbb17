/* SPDX-License-Identifier: MIT */
#ifndef KDL_TESTS_FUZZ_FILE_H
#define KDL_TESTS_FUZZ_FILE_H

#include <stddef.h>
#include <stdint.h>

/*
 * The fuzz targets hand their input to the loaders as a file by name, so no
 * loader API change is needed.  The file lives in memory, not on disk: in
 * $KDL_FUZZ_DIR, else /dev/shm (tmpfs), else $TMPDIR or /tmp.
 *
 * Not a memfd: its name "/proc/self/fd/N" is a symbolic link, and HDF5 1.10
 * resolves a link with realpath() when it opens a file; the link's target,
 * "/memfd:NAME (deleted)", does not exist, so H5Fopen() fails with "can't
 * retrieve real path for file" before reading a byte.
 */

struct fuzz_file {
        char path[4096];
};

/**
 * fuzz_file_open() - a new file holding @data; each call gets a new name.
 * The first call also says where kdl_h5_open() catalogues: in this process
 * (so that libFuzzer sees the catalogue's coverage and faults), or with
 * KDL_FUZZ_ISOLATE=1 in a child process, as the command line does.
 * Return: 0; -errno (the input is then skipped).  Remove with fuzz_file_close().
 */
int fuzz_file_open(struct fuzz_file *f, const uint8_t *data, size_t size);

/**
 * fuzz_file_close() - remove the file of @f; abort() when the input left HDF5
 * identifiers open (more of a kind than after the first input).
 */
void fuzz_file_close(struct fuzz_file *f);

/*
 * Inputs whose declared sizes alone would exhaust memory or time (2^40 rows,
 * a 2^28-wide row) are skipped by the read and join targets, so that the
 * fuzzer looks for memory errors rather than finding the same blow-up
 * again; tests/fuzz/run-cases.py covers those with its hostile cases.
 */
#define FUZZ_MAX_ROWS ((size_t) 1 << 16)
#define FUZZ_MAX_COLS ((size_t) 1 << 16)

#endif
