/* SPDX-License-Identifier: MIT */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kdl-config.h"
#include "metrics/base/alloc.h"
#include "metrics/base/outfile.h"
#include "reports/plot.h"
#include "reports/site.h"
#include "reports/table-internal.h"
#include "metrics/base/banned.h"

enum block_kind {
        BLOCK_SECTION,
        BLOCK_PARAGRAPH,
        BLOCK_FIGURE,
        BLOCK_TABLE,
        BLOCK_RAW,
        BLOCK_CONTENTS,
};

struct block {
        enum block_kind kind;
        char *text;    /* title, paragraph or caption */
        char *name;    /* figure or table file name; a section's anchor */
        char *md_body; /* a table rendered as Markdown; raw Markdown */
        char *html;    /* a table rendered as HTML; raw HTML */
};

struct kdl_site {
        char *dir;
        char *tmp;
        size_t nblocks;
        struct block *blocks;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void) st;
        (void) flag;
        (void) ftw;
        return remove(path);
}

static void remove_tree(const char *path)
{
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Whether @dir holds kdlens's stamp, i.e. is a report (or a report's temporary). */
static bool stamped(const char *dir)
{
        char *p = kdl__asprintf("%s/" KDL_SITE_STAMP, dir);
        struct stat st;
        bool yes = p && lstat(p, &st) == 0 && S_ISREG(st.st_mode);

        free(p);
        return yes;
}

/* kdl_out_sweep() callback: a killed run's temporary report goes, nothing else. */
static int remove_stale(const char *path, void *arg)
{
        struct stat st;

        (void) arg;
        if (lstat(path, &st) < 0 || !S_ISDIR(st.st_mode) || !stamped(path))
                return 0;
        remove_tree(path);
        return 1;
}

/* Refuse to replace anything at @dir that kdlens did not write, unless forced. */
static int check_target(const char *dir, unsigned flags)
{
        struct stat st;

        if (lstat(dir, &st) < 0)
                return errno == ENOENT
                               ? 0
                               : kdl_error(-errno, "cannot examine '%s': %s", dir, strerror(errno));
        if (S_ISDIR(st.st_mode) && stamped(dir))
                return 0;
        if (flags & KDL_SITE_FORCE)
                return 0;
        return kdl_error(-KDL_EUSAGE,
                         "'%s' exists and is not a kdlens report (%s): refusing to replace "
                         "it (--force replaces it)",
                         dir,
                         S_ISDIR(st.st_mode) ? "no " KDL_SITE_STAMP " in it" : "not a directory");
}

static int write_stamp(const char *dir)
{
        char *p = kdl__asprintf("%s/" KDL_SITE_STAMP, dir);
        FILE *fp;
        int err = 0;

        if (!p)
                return -ENOMEM;
        fp = fopen(p, "w");
        if (!fp)
                err = kdl_error(-errno, "cannot write '%s': %s", p, strerror(errno));
        else {
                fprintf(fp, "kdlens %s report; pid %ld\n", KDL_VERSION, (long) getpid());
                if (ferror(fp) | (fclose(fp) != 0))
                        err = kdl_error(-EIO, "cannot write '%s'", p);
        }
        free(p);
        return err;
}

int kdl_site_open(const char *dir, unsigned flags, kdl_site **ret)
{
        kdl_site *s;
        int err;

        err = check_target(dir, flags);
        if (err < 0)
                return err;
        err = kdl_out_sweep(dir, remove_stale, NULL);
        if (err < 0)
                return err;
        s = kdl_new(kdl_site, 1);
        if (!s)
                return -ENOMEM;
        s->dir = kdl__strdup(dir);
        /* A sibling, so the final rename stays on one file system. */
        s->tmp = kdl_out_tmpname(dir);
        if (!s->dir || !s->tmp) {
                kdl_site_abort(s);
                return -ENOMEM;
        }
        if (!mkdtemp(s->tmp)) {
                err = kdl_error(-errno, "cannot create a report next to '%s': %s", dir,
                                strerror(errno));
                free(s->tmp);
                s->tmp = NULL;
                kdl_site_abort(s);
                return err;
        }
        chmod(s->tmp, 0755);
        err = write_stamp(s->tmp);
        if (!err)
                err = kdl_fig_dirs(s->tmp);
        if (!err) {
                char *tables = kdl__asprintf("%s/tables", s->tmp);

                if (!tables)
                        err = -ENOMEM;
                else if (mkdir(tables, 0777) < 0)
                        err = kdl_error(-errno, "cannot create '%s': %s", tables, strerror(errno));
                free(tables);
        }
        if (err < 0) {
                kdl_site_abort(s);
                return err;
        }
        *ret = s;
        return 0;
}

const char *kdl_site_path(const kdl_site *s)
{
        return s->tmp;
}

static void block_release(struct block *b)
{
        free(b->text);
        free(b->name);
        free(b->md_body);
        free(b->html);
}

void kdl_site_abort(kdl_site *s)
{
        if (!s)
                return;
        if (s->tmp)
                remove_tree(s->tmp);
        for (size_t k = 0; k < s->nblocks; k++)
                block_release(&s->blocks[k]);
        free(s->blocks);
        free(s->tmp);
        free(s->dir);
        free(s);
}

static int push(kdl_site *s, struct block b)
{
        struct block *grown = realloc(s->blocks, (s->nblocks + 1) * sizeof(*grown));

        if (!grown) {
                block_release(&b);
                return kdl_error(-ENOMEM, "out of memory");
        }
        s->blocks = grown;
        s->blocks[s->nblocks++] = b;
        return 0;
}

char *kdl_site_anchor(const char *prefix, const char *title)
{
        size_t n = strlen(prefix), len = n;
        char *id = kdl_new(char, n + strlen(title) + 1);

        if (!id)
                return NULL;
        memcpy(id, prefix, n);
        for (const char *c = title; *c; c++) {
                bool word = (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9');

                if (*c >= 'A' && *c <= 'Z')
                        id[len++] = (char) (*c - 'A' + 'a');
                else if (word)
                        id[len++] = *c;
                else if (len > n && id[len - 1] != '-')
                        id[len++] = '-';
        }
        while (len > n && id[len - 1] == '-')
                len--;
        id[len] = '\0';
        return id;
}

int kdl_site_section(kdl_site *s, const char *title, const char *text)
{
        struct block b = {.kind = BLOCK_SECTION,
                          .text = kdl__strdup(title),
                          .name = kdl_site_anchor(KDL_SITE_SECTION_ANCHOR, title)};
        int err;

        if (!b.text || !b.name) {
                block_release(&b);
                return -ENOMEM;
        }
        err = push(s, b);
        if (!err && text)
                err = kdl_site_paragraph(s, text);
        return err;
}

int kdl_site_paragraph(kdl_site *s, const char *text)
{
        struct block b = {.kind = BLOCK_PARAGRAPH, .text = kdl__strdup(text)};

        return b.text ? push(s, b) : -ENOMEM;
}

int kdl_site_raw(kdl_site *s, const char *html, const char *md)
{
        struct block b = {.kind = BLOCK_RAW, .html = kdl__strdup(html), .md_body = kdl__strdup(md)};

        if (!b.html || !b.md_body) {
                block_release(&b);
                return -ENOMEM;
        }
        return push(s, b);
}

int kdl_site_contents(kdl_site *s)
{
        for (size_t k = 0; k < s->nblocks; k++)
                if (s->blocks[k].kind == BLOCK_CONTENTS)
                        return kdl_error(-EINVAL, "the table of contents is placed already");
        return push(s, (struct block){.kind = BLOCK_CONTENTS});
}

int kdl_site_figure(kdl_site *s, const char *name, const char *caption)
{
        struct block b = {
                .kind = BLOCK_FIGURE, .text = kdl__strdup(caption), .name = kdl__strdup(name)};

        if (!b.text || !b.name) {
                block_release(&b);
                return -ENOMEM;
        }
        return push(s, b);
}

/* Render @t with @fn into a string (open_memstream). */
static char *render(const kdl_table *t, int (*fn)(const kdl_table *, FILE *))
{
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        int err;

        if (!m) {
                kdl_error(-ENOMEM, "out of memory");
                return NULL;
        }
        err = fn(t, m);
        fclose(m);
        if (err < 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

static int write_md(const kdl_table *t, FILE *fp)
{
        return kdl_table_write(t, fp, KDL_FORMAT_MD);
}

static int write_file(const kdl_site *s, const char *sub, const char *name, const char *ext,
                      const kdl_table *t, const kdl_doc *d, enum kdl_format f)
{
        char *p = kdl__asprintf("%s/%s/%s.%s", s->tmp, sub, name, ext);
        FILE *fp;
        int err;

        if (!p)
                return -ENOMEM;
        fp = fopen(p, "w");
        if (!fp) {
                err = kdl_error(-errno, "cannot write '%s': %s", p, strerror(errno));
                free(p);
                return err;
        }
        err = t ? kdl_table_write(t, fp, f) : kdl_doc_write(d, fp, f);
        if (fclose(fp) != 0 && !err)
                err = kdl_error(-EIO, "cannot write '%s'", p);
        free(p);
        return err;
}

int kdl_site_table(kdl_site *s, const kdl_table *t, const char *name, const char *caption)
{
        struct block b = {.kind = BLOCK_TABLE};
        static const struct {
                const char *ext;
                enum kdl_format f;
        } files[] = {{"md", KDL_FORMAT_MD}, {"csv", KDL_FORMAT_CSV}, {"tex", KDL_FORMAT_TEX}};
        int err;

        name = name ? name : kdl_table_name(t);
        for (size_t k = 0; k < sizeof(files) / sizeof(files[0]); k++) {
                err = write_file(s, "tables", name, files[k].ext, t, NULL, files[k].f);
                if (err < 0)
                        return err;
        }
        b.text = kdl__strdup(caption ? caption : kdl_table_title(t));
        b.name = kdl__strdup(name);
        b.md_body = render(t, write_md);
        b.html = render(t, kdl__table_write_html);
        if (!b.text || !b.name || !b.md_body || !b.html) {
                block_release(&b);
                return -ENOMEM;
        }
        return push(s, b);
}

int kdl_site_json(kdl_site *s, const kdl_doc *d, const char *name)
{
        return write_file(s, "data", name, "json", NULL, d, KDL_FORMAT_JSON);
}

void kdl_site_html_text(FILE *fp, const char *s)
{
        for (; *s; s++) {
                switch (*s) {
                case '<':
                        fputs("&lt;", fp);
                        break;
                case '>':
                        fputs("&gt;", fp);
                        break;
                case '&':
                        fputs("&amp;", fp);
                        break;
                case '"':
                        fputs("&quot;", fp);
                        break;
                default:
                        fputc(*s, fp);
                }
        }
}

/* The first words of @caption for the table of contents, into @buf: at most TOC_WORDS
 * bytes, cut at a space ("..." then). */
#define TOC_WORDS 96
static const char *toc_words(const char *caption, char buf[TOC_WORDS + 4])
{
        size_t n = strlen(caption);
        bool cut = n > TOC_WORDS;

        if (cut) {
                n = TOC_WORDS;
                while (n > 0 && caption[n] != ' ')
                        n--;
                n = n ? n : TOC_WORDS;
        }
        while (n > 0 && strchr(" ,;:(", caption[n - 1]))
                n--;
        snprintf(buf, TOC_WORDS + 4, "%.*s%s", (int) n, caption, cut ? "..." : "");
        return buf;
}

/* Whether @s places its table of contents (else it comes before the first section). */
static bool has_contents(const kdl_site *s)
{
        for (size_t k = 0; k < s->nblocks; k++)
                if (s->blocks[k].kind == BLOCK_CONTENTS)
                        return true;
        return false;
}

/* The table of contents: every section, and under it its figures (#fig-NAME). */
static void write_toc(const kdl_site *s, FILE *fp, bool html)
{
        size_t fig = 0;
        bool open = false;
        char buf[TOC_WORDS + 4];

        fputs(html ? "<nav id=\"contents\">\n<h3>Contents</h3>\n<ol class=\"toc\">\n"
                   : "\n<a id=\"contents\"></a>\n\n### Contents\n\n",
              fp);
        for (size_t k = 0; k < s->nblocks; k++) {
                const struct block *b = &s->blocks[k];

                if (b->kind == BLOCK_SECTION) {
                        if (html) {
                                fputs(open ? "</ul></li>\n" : "", fp);
                                fprintf(fp, "<li><a href=\"#%s\">", b->name);
                                kdl_site_html_text(fp, b->text);
                                fputs("</a><ul>\n", fp);
                        } else
                                fprintf(fp, "- [%s](#%s)\n", b->text, b->name);
                        open = true;
                } else if (b->kind == BLOCK_FIGURE) {
                        fig++;
                        if (html) {
                                fprintf(fp, "<li><a href=\"#fig-%s\">Figure %zu</a>: ", b->name,
                                        fig);
                                kdl_site_html_text(fp, toc_words(b->text, buf));
                                fputs("</li>\n", fp);
                        } else
                                fprintf(fp, "  - [Figure %zu](#fig-%s): %s\n", fig, b->name,
                                        toc_words(b->text, buf));
                }
        }
        if (html)
                fputs(open ? "</ul></li>\n</ol>\n</nav>\n" : "</ol>\n</nav>\n", fp);
}

static void write_html(const kdl_site *s, FILE *fp, const char *command, const char *const *inputs,
                       size_t ninputs, const char *when)
{
        bool open_section = false;
        size_t fig = 0;

        fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
              "<title>kdlens report</title>\n<style>\n"
              "body{font-family:Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;"
              "padding:0 1em;color:#222;line-height:1.45}\n"
              "h1{font-size:1.6em}h2{font-size:1.3em;border-bottom:1px solid #ccc;"
              "padding-bottom:.2em;margin-top:2em}\n"
              "figure{display:inline-block;vertical-align:top;width:47%;margin:1em 1.5% 1em 0}"
              "figure img{width:100%;border:1px solid #eee}\n"
              "figcaption{font-size:.9em;color:#444}\n"
              "table{border-collapse:collapse;font-size:.85em;margin:.8em 0;display:block;"
              "overflow-x:auto}\n"
              "th,td{padding:.2em .6em;border-bottom:1px solid #ddd;text-align:right;"
              "white-space:nowrap}\n"
              "th{border-bottom:2px solid #888}td.t,th.t{text-align:left}\n"
              "code{background:#f4f4f4;padding:.1em .3em}.links{font-size:.85em}\n"
              "nav ol.toc{columns:2;font-size:.85em;padding-left:1.4em}"
              "nav ol.toc li{break-inside:avoid}nav ol.toc ul{padding-left:1em;margin:0}\n"
              "table.summary td a{color:inherit;text-decoration:none;"
              "border-bottom:1px dotted #888}"
              "table.summary th,table.summary td.w{white-space:normal}\n"
              "</style>\n</head>\n<body>\n<h1>kdlens report</h1>\n<p>kdlens ",
              fp);
        fputs(KDL_VERSION ", ", fp);
        kdl_site_html_text(fp, when);
        fputs(". Command:<br><code>", fp);
        kdl_site_html_text(fp, command);
        fputs("</code></p>\n<p>Inputs:</p>\n<ul>\n", fp);
        for (size_t k = 0; k < ninputs; k++) {
                fputs("<li><code>", fp);
                kdl_site_html_text(fp, inputs[k]);
                fputs("</code></li>\n", fp);
        }
        fputs("</ul>\n", fp);
        if (!has_contents(s))
                write_toc(s, fp, true);
        for (size_t k = 0; k < s->nblocks; k++) {
                const struct block *b = &s->blocks[k];

                switch (b->kind) {
                case BLOCK_SECTION:
                        if (open_section)
                                fputs("</section>\n", fp);
                        fprintf(fp, "<section id=\"%s\">\n<h2>", b->name);
                        kdl_site_html_text(fp, b->text);
                        fputs("</h2>\n", fp);
                        open_section = true;
                        break;
                case BLOCK_PARAGRAPH:
                        fputs("<p>", fp);
                        kdl_site_html_text(fp, b->text);
                        fputs("</p>\n", fp);
                        break;
                case BLOCK_FIGURE:
                        fprintf(fp, "<figure id=\"fig-%s\">\n<img src=\"figures/%s.png\" alt=\"",
                                b->name, b->name);
                        kdl_site_html_text(fp, b->text);
                        fprintf(fp, "\">\n<figcaption><b>Figure %zu.</b> ", ++fig);
                        kdl_site_html_text(fp, b->text);
                        fprintf(fp,
                                " <span class=\"links\">[<a href=\"figures/%s.pdf\">PDF</a> "
                                "<a href=\"figures/%s.svg\">SVG</a> <a "
                                "href=\"data/%s.dat\">data</a> "
                                "<a href=\"scripts/%s.gp\">gnuplot</a>]</span></figcaption>\n"
                                "</figure>\n",
                                b->name, b->name, b->name, b->name);
                        break;
                case BLOCK_RAW:
                        fputs(b->html, fp);
                        break;
                case BLOCK_CONTENTS:
                        write_toc(s, fp, true);
                        break;
                case BLOCK_TABLE:
                        fprintf(fp, "<p id=\"tab-%s\"><b>", b->name);
                        kdl_site_html_text(fp, b->text);
                        fprintf(fp,
                                "</b> <span class=\"links\">[<a href=\"tables/%s.tex\">LaTeX</a> "
                                "<a href=\"tables/%s.md\">Markdown</a> "
                                "<a href=\"tables/%s.csv\">CSV</a>]</span></p>\n",
                                b->name, b->name, b->name);
                        fputs(b->html, fp);
                        break;
                }
        }
        if (open_section)
                fputs("</section>\n", fp);
        fputs("<p class=\"links\">Every figure re-renders from this directory with "
              "<code>gnuplot -e \"fmt='pdf'\" scripts/NAME.gp</code> (fmt: pdf, png, svg).</p>\n"
              "</body>\n</html>\n",
              fp);
}

static void write_markdown(const kdl_site *s, FILE *fp, const char *command,
                           const char *const *inputs, size_t ninputs, const char *when)
{
        fprintf(fp, "# kdlens report\n\nkdlens %s, %s. Command:\n\n```\n%s\n```\n\nInputs:\n\n",
                KDL_VERSION, when, command);
        size_t fig = 0;

        for (size_t k = 0; k < ninputs; k++)
                fprintf(fp, "- `%s`\n", inputs[k]);
        if (!has_contents(s))
                write_toc(s, fp, false);
        for (size_t k = 0; k < s->nblocks; k++) {
                const struct block *b = &s->blocks[k];

                switch (b->kind) {
                case BLOCK_SECTION:
                        fprintf(fp, "\n<a id=\"%s\"></a>\n\n## %s\n", b->name, b->text);
                        break;
                case BLOCK_PARAGRAPH:
                        fprintf(fp, "\n%s\n", b->text);
                        break;
                case BLOCK_RAW:
                        fprintf(fp, "\n%s", b->md_body);
                        break;
                case BLOCK_CONTENTS:
                        write_toc(s, fp, false);
                        break;
                case BLOCK_FIGURE:
                        fprintf(fp,
                                "\n<a id=\"fig-%s\"></a>\n\n![%s](figures/%s.png)\n\n"
                                "*Figure %zu. %s* ([PDF](figures/%s.pdf), "
                                "[SVG](figures/%s.svg), [data](data/%s.dat), "
                                "[gnuplot](scripts/%s.gp))\n",
                                b->name, b->text, b->name, ++fig, b->text, b->name, b->name,
                                b->name, b->name);
                        break;
                case BLOCK_TABLE:
                        /* Drop the "### title" line of the Markdown rendering: the caption replaces
                         * it. */
                        fprintf(fp,
                                "\n<a id=\"tab-%s\"></a>\n\n**%s** ([LaTeX](tables/%s.tex), "
                                "[CSV](tables/%s.csv))\n\n%s",
                                b->name, b->text, b->name, b->name,
                                strncmp(b->md_body, "### ", 4) == 0 && strchr(b->md_body, '\n')
                                        ? strchr(b->md_body, '\n') + 2
                                        : b->md_body);
                        break;
                }
        }
}

static int write_index(const kdl_site *s, const char *file, const char *command,
                       const char *const *inputs, size_t ninputs, const char *when, bool html)
{
        char *p = kdl__asprintf("%s/%s", s->tmp, file);
        FILE *fp;
        int err = 0;

        if (!p)
                return -ENOMEM;
        fp = fopen(p, "w");
        if (!fp) {
                err = kdl_error(-errno, "cannot write '%s': %s", p, strerror(errno));
                free(p);
                return err;
        }
        if (html)
                write_html(s, fp, command, inputs, ninputs, when);
        else
                write_markdown(s, fp, command, inputs, ninputs, when);
        if (ferror(fp) | (fclose(fp) != 0))
                err = kdl_error(-EIO, "cannot write '%s'", p);
        free(p);
        return err;
}

int kdl_site_commit(kdl_site *s, const char *command, const char *const *inputs, size_t ninputs)
{
        char when[64];
        time_t now = time(NULL);
        struct tm tm;
        int err;

        strftime(when, sizeof(when), "%Y-%m-%d %H:%M UTC", gmtime_r(&now, &tm));
        err = write_index(s, "index.md", command, inputs, ninputs, when, false);
        if (!err)
                err = write_index(s, "index.html", command, inputs, ninputs, when, true);
        if (err < 0) {
                kdl_site_abort(s);
                return err;
        }
        /* Swap atomically with an existing report; the old one ends up in tmp. */
        if (renameat2(AT_FDCWD, s->tmp, AT_FDCWD, s->dir, RENAME_EXCHANGE) == 0) {
                kdl_site_abort(s); /* removes the old report */
                return 0;
        }
        if (errno == ENOENT && rename(s->tmp, s->dir) == 0) {
                free(s->tmp);
                s->tmp = NULL;
                kdl_site_abort(s);
                return 0;
        }
        err = kdl_error(-errno, "cannot put the report in place at '%s': %s", s->dir,
                        strerror(errno));
        kdl_site_abort(s);
        return err;
}
