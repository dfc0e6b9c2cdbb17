/* SPDX-License-Identifier: MIT */
#ifndef KDL_METRICS_BASE_OUTFILE_H
#define KDL_METRICS_BASE_OUTFILE_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/base/error.h"

/*
 * Output paths that never destroy a user's data.  Every file or directory
 * kdlens writes (a --per-sample file, a report directory) is built under a
 * temporary sibling name and renamed into place; this module names those
 * temporaries, recognises the ones a killed run left behind, and refuses a
 * target whose replacement would lose an input or something kdlens did not
 * write.  It is POSIX file-system bookkeeping only (no HDF5, no numerics),
 * kept in the base so that loaders/ (per-sample files) and reports/ (report
 * directories) share it.
 *
 * A temporary is "<target>.tmp-<pid>-XXXXXX" next to the target: the pid of
 * the run that made it is in its name, so a later run removes it only when
 * that process is gone.
 */

/** What kind of output a target is, for kdl_out_check(). */
enum kdl_out_kind {
        KDL_OUT_FILE, /* a regular file, replaced by rename */
        KDL_OUT_DIR,  /* a directory, replaced whole by an atomic exchange */
};

/**
 * kdl_out_check() - refuse an output target that would destroy an input.
 * @out:    the target path (borrowed); it need not exist.
 * @kind:   what will be put there.
 * @inputs: @n input file paths (borrowed).
 *
 * Refused: @out is one of the inputs (the same device and inode, whatever the
 * spelling: hard links, symbolic links, "..", relative paths); @out is a
 * directory that holds an input at any depth; @kind is KDL_OUT_FILE and @out
 * exists but is not a regular file (a directory, a symbolic link, a FIFO, a
 * device: renaming over it would replace it, not write into it).
 *
 * Return: 0; -KDL_EUSAGE with a one-line message naming @out and the input;
 * -errno when @out or an input cannot be examined.
 */
KDL_API int kdl_out_check(const char *out, enum kdl_out_kind kind, const char *const *inputs,
                          size_t n);

/**
 * kdl_out_tmpname() - the temporary sibling template of @target for this
 * process, "<target>.tmp-<pid>-XXXXXX", ready for mkstemp()/mkdtemp().
 * Return: a string the caller frees; NULL on ENOMEM (message recorded).
 */
KDL_API char *kdl_out_tmpname(const char *target);

/**
 * kdl_out_is_stale() - whether @name (a file name in @target's directory, no
 * slash) is a temporary of @target left by a process that no longer runs.
 * It must match "<basename of target>.tmp-<pid>-XXXXXX" exactly; a pid that
 * is alive (or belongs to another user) keeps it.
 */
KDL_API bool kdl_out_is_stale(const char *target, const char *name);

/**
 * kdl_out_sweep() - call @rm on every stale temporary of @target (see
 * kdl_out_is_stale()), with its full path; @rm decides whether the entry
 * is really one of kdlens's (by its stamp) and removes it.
 * Return: the number of entries @rm returned 1 for; -errno when @target's
 * directory cannot be listed (a missing directory is 0).
 */
KDL_API int kdl_out_sweep(const char *target, int (*rm)(const char *path, void *arg), void *arg);

#endif
