/* SPDX-License-Identifier: MIT */
#ifndef KDL_REPORTS_SITE_H
#define KDL_REPORTS_SITE_H

#include <stddef.h>

#include "reports/table.h"

/*
 * A report directory: DIR/index.html and DIR/index.md (sections of text,
 * figures and tables), DIR/figures (PDF/PNG/SVG), DIR/tables (LaTeX
 * booktabs, Markdown, CSV), DIR/data (the data behind every figure and the
 * JSON results) and DIR/scripts (the gnuplot scripts).
 *
 * Everything is written into a temporary sibling directory; only
 * kdl_site_commit() puts it in place, with an atomic exchange when DIR
 * exists, so an interrupted run never leaves half a report and never
 * damages the one that was there.
 */

typedef struct kdl_site kdl_site;

/* The stamp file that marks a directory as a kdlens report. */
#define KDL_SITE_STAMP ".kdlens-report"

/* Flags of kdl_site_open(). */
enum {
        KDL_SITE_FORCE = 1u << 0, /* replace @dir even if it is not a kdlens report */
};

/**
 * kdl_site_open() - start a report that will become @dir.
 * @flags: KDL_SITE_FORCE or 0.
 * @ret: caller finishes with kdl_site_commit() or kdl_site_abort().
 *
 * An existing @dir is replaced at commit only when it is a previous report
 * (it holds KDL_SITE_STAMP) or with KDL_SITE_FORCE; anything else is
 * refused here, before any work.  Temporary reports that a killed run left
 * next to @dir (stamped, named for a process that is gone) are removed.
 *
 * Return: 0; -KDL_EUSAGE for a target that is not a report; -errno when the
 * temporary directory cannot be made (the message names it); -ENOMEM.
 */
KDL_API int kdl_site_open(const char *dir, unsigned flags, kdl_site **ret);

/** kdl_site_path() - the temporary directory to write figures into (borrowed). */
KDL_API const char *kdl_site_path(const kdl_site *s);

/** kdl_site_section() - start a section with @title and an optional paragraph @text. */
KDL_API int kdl_site_section(kdl_site *s, const char *title, const char *text);

/** kdl_site_paragraph() - a paragraph of plain text in the current section. */
KDL_API int kdl_site_paragraph(kdl_site *s, const char *text);

/**
 * kdl_site_figure() - show figures/NAME.png (already rendered) with @caption,
 * linking the PDF, SVG, data and script.
 */
KDL_API int kdl_site_figure(kdl_site *s, const char *name, const char *caption);

/**
 * kdl_site_table() - write tables/NAME.{md,csv,tex} from @t and show it.
 * @name: file name (defaults to the table's name when NULL).
 */
KDL_API int kdl_site_table(kdl_site *s, const kdl_table *t, const char *name, const char *caption);

/** kdl_site_json() - write data/NAME.json: @d as kdlens's JSON document. */
KDL_API int kdl_site_json(kdl_site *s, const kdl_doc *d, const char *name);

/**
 * kdl_site_commit() - write index.html and index.md and put the report in place.
 * @command: the exact command line, shown in the report.
 * @inputs:  @ninputs input paths, shown in the report.
 * Frees @s in every case.
 * Return: 0; -errno.
 */
KDL_API int kdl_site_commit(kdl_site *s, const char *command, const char *const *inputs,
                            size_t ninputs);

/** kdl_site_abort() - remove the temporary directory and free @s.  NULL is a no-op. */
KDL_API void kdl_site_abort(kdl_site *s);

#endif
