/* SPDX-License-Identifier: MIT */
#ifndef KDL_REPORTS_SITE_H
#define KDL_REPORTS_SITE_H

#include <stddef.h>
#include <stdio.h>

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

/* The prefix of a section's anchor (kdl_site_anchor()); a figure's anchor is fig-NAME, a
 * table's tab-NAME, the table of contents' "contents". */
#define KDL_SITE_SECTION_ANCHOR "sec-"

/**
 * kdl_site_anchor() - the anchor of the section titled @title: @prefix, then the title in
 * lower case with every run of other than letters and digits one '-'.  Titles of one report
 * are distinct, so are their anchors.
 * Return: a string the caller frees; NULL when out of memory.
 */
KDL_API char *kdl_site_anchor(const char *prefix, const char *title);

/**
 * kdl_site_section() - start a section with @title and an optional paragraph @text; its
 * anchor is kdl_site_anchor(KDL_SITE_SECTION_ANCHOR, @title), listed in the table of
 * contents with the section's figures.
 */
KDL_API int kdl_site_section(kdl_site *s, const char *title, const char *text);

/** kdl_site_paragraph() - a paragraph of plain text in the current section. */
KDL_API int kdl_site_paragraph(kdl_site *s, const char *text);

/**
 * kdl_site_contents() - place the table of contents here (once; without it, it comes
 * before the first section).
 * Return: 0; -EINVAL when placed already; -ENOMEM.
 */
KDL_API int kdl_site_contents(kdl_site *s);

/**
 * kdl_site_raw() - a block written as it is: @html into index.html, @md into index.md (each
 * ending in a newline).  For what a table of cells cannot say (links in cells).
 */
KDL_API int kdl_site_raw(kdl_site *s, const char *html, const char *md);

/** kdl_site_html_text() - @s into @fp as HTML text (<, >, & and " escaped). */
KDL_API void kdl_site_html_text(FILE *fp, const char *s);

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
 * kdl_site_commit() - write index.html and index.md, each with a table of contents (every
 * section and figure, figures numbered in order; kdl_site_contents()), and put the report
 * in place.
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
