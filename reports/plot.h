/* SPDX-License-Identifier: MIT */
#ifndef KDL_REPORTS_PLOT_H
#define KDL_REPORTS_PLOT_H

#include <stdbool.h>
#include <stddef.h>

#include "metrics/base/error.h"

/*
 * Paper figures with gnuplot (the only code that runs it).  Each figure is
 * a data file DIR/data/NAME.dat and a script DIR/scripts/NAME.gp in one house
 * style (Okabe-Ito colour-blind-safe palette, a viridis map for heatmaps,
 * fonts readable at column width, legends outside the data); rendering runs
 *      cd DIR && gnuplot -e "fmt='png'" scripts/NAME.gp
 * for fmt in pdf (pdfcairo), png (pngcairo) and svg, writing DIR/figures/NAME.FMT.
 * Users restyle a figure by editing its script and running that line.
 * NAME is 1 to KDL_FIG_NAME_MAX letters, digits, '_', '-', '.' or '~'; any
 * other name is refused with -KDL_EUSAGE: make one from a name of the data
 * (a checkpoint, a layer) with kdl_fig_slug().
 *
 * Text (titles, labels, legend entries, tick labels) may be any UTF-8: it
 * is quoted for gnuplot, so quotes, backslashes and '%' show as they are and
 * never run as gnuplot commands; line breaks show as spaces.
 */
#define KDL_FIG_NAME_MAX 200

/**
 * kdl_fig_slug() - @s as figure-name characters: ASCII letters, digits, '_',
 * '-' and '.' stay, every other byte becomes "~XX" (its value in hex), so two
 * names never share a slug.  When that is longer than @max (>= 24), its first
 * @max - 17 characters (never half an escape) and "~" plus 16 hex digits of a
 * hash of @s are kept instead.
 * Return: a string the caller frees; NULL on ENOMEM.
 */
KDL_API char *kdl_fig_slug(const char *s, size_t max);

struct kdl_series {
        const char *name; /* legend entry */
        const double *y;  /* one value per x (or category); NaN = no point */
        /* NULL, or one standard deviation per value, drawn as error bars y ± sd (a mean
         * over repeated runs): lines with yerrorlines, side-by-side bars as a histogram
         * with errorbars; stacked bars leave them out.  The data file holds them in
         * one column per series after the values (NaN, in bars 0, for a series
         * without). */
        const double *sd;
};

/* Series k of a figure is drawn in colour (k + k / 8) mod 8 of the Okabe-Ito palette and
 * dash pattern k / 8 + 1: every series of a figure its own colour and dash pair. */

struct kdl_fig {
        const char *title;  /* NULL: none (papers put titles in captions) */
        const char *xlabel; /* with units, e.g. "dimension d" */
        const char *ylabel;
        bool logy; /* kdl_fig_bars(): side-by-side bars only (bars rise from the bottom) */
        bool logx;
        /* kdl_fig_bars() only: 0 for an automatic top of the y axis, else the
         * top (1 for shares and correlations, which cannot exceed it). */
        double ymax;
        /* kdl_fig_lines() only: 0 for the data's whole x range, else the right end of the x
         * axis when it cuts the range short (the data file keeps every point). */
        double xmax;
        /* Optional vertical markers (e.g. a student's width), with labels.  In kdl_fig_lines()
         * a marker past the right end of the x axis is drawn as an arrow at the edge, with
         * its label, never as a line at the edge. */
        size_t nmarks;
        const double *marks;
        const char *const *mark_labels;
};

/**
 * kdl_fig_lines() - one line (with points) per series over x.
 * @x:       @n x values; or NULL to place points at 0..n-1 with @xtics as labels.
 * @xtics:   NULL or @n tick labels (e.g. checkpoint names).
 * Return: 0; -errno when a file cannot be written; -KDL_ESHAPE for n == 0.
 */
KDL_API int kdl_fig_lines(const char *dir, const char *name, const struct kdl_fig *f,
                          const double *x, const char *const *xtics, size_t n,
                          const struct kdl_series *s, size_t ns);

/**
 * kdl_fig_bars() - bars per category, one bar per series, side by side
 * (@stacked false) or stacked (@stacked true).
 */
KDL_API int kdl_fig_bars(const char *dir, const char *name, const struct kdl_fig *f,
                         const char *const *categories, size_t ncat, const struct kdl_series *s,
                         size_t ns, bool stacked);

/* Heatmaps stay readable at any size: a value is printed in each cell only when neither
 * axis has more than KDL_FIG_CELL_VALUES_MAX cells, and an axis with more than
 * KDL_FIG_TICS_MAX cells labels every k-th of them (k = 2, 5, 10, 20, 50, ..., the smallest
 * that leaves at most KDL_FIG_TICS_MAX labels), the first included. */
#define KDL_FIG_CELL_VALUES_MAX 12
#define KDL_FIG_TICS_MAX        20

/**
 * kdl_fig_heatmap() - a @rows x @cols matrix (row-major) with labelled axes
 * and, when @annotate (and the matrix is small enough, above), the value
 * printed in each cell.
 * @zmin/@zmax: colour range; equal values mean the data's own range.
 */
KDL_API int kdl_fig_heatmap(const char *dir, const char *name, const struct kdl_fig *f,
                            const double *m, size_t rows, size_t cols,
                            const char *const *row_labels, const char *const *col_labels,
                            bool annotate, double zmin, double zmax);

/* A class x class matrix with more classes than this is shown by its top classes
 * (kdl_fig_top_classes()), KDL_FIG_TOP_CLASSES of them, not whole. */
#define KDL_FIG_CLASSES_MAX 50
#define KDL_FIG_TOP_CLASSES 20

/**
 * kdl_fig_top_classes() - the @k classes of the @c x @c class matrix @m (row-major: a
 * confusion matrix, cosines between classes) in its strongest relations: class i scores
 * max over j != i of m[i][j] + m[j][i] (its most confused or most similar partner; NaN
 * entries left out), and the @k best scores are kept (ties to the lower class), so that
 * each class shown has its strongest partner beside it unless the partner ranks k + 1 or
 * lower.  For a heatmap of a large matrix: those rows and columns, readable, instead of
 * every class.
 * @ret_idx: @k entries, set in increasing class order on success.
 * Return: 0; -KDL_ESHAPE when @k is 0 or more than @c; -ENOMEM.
 */
KDL_API int kdl_fig_top_classes(const double *m, size_t c, size_t k, size_t *ret_idx);

/**
 * kdl_fig_hist() - histograms on shared bins: @nbins bins with @nbins + 1
 * edges; each series holds @nbins counts or densities (drawn as steps).
 */
KDL_API int kdl_fig_hist(const char *dir, const char *name, const struct kdl_fig *f,
                         const double *edges, size_t nbins, const struct kdl_series *s, size_t ns);

/* Output formats, as a mask. */
enum { KDL_FIG_PDF = 1u << 0, KDL_FIG_PNG = 1u << 1, KDL_FIG_SVG = 1u << 2, KDL_FIG_ALL = 7u };

/**
 * kdl_fig_render() - run @gnuplot (a path or "gnuplot") on DIR/scripts/NAME.gp
 * for every format in @formats.
 * Return: 0; -KDL_EPLOT with gnuplot's first error line; -errno when it cannot run.
 */
KDL_API int kdl_fig_render(const char *dir, const char *name, const char *gnuplot,
                           unsigned formats);

/** kdl_fig_dirs() - create DIR/{data,scripts,figures}.  Return: 0; -errno. */
KDL_API int kdl_fig_dirs(const char *dir);

#endif
