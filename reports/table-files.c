/* SPDX-License-Identifier: MIT */
/* A document as one CSV file per table in a directory (kdlens VERB -o DIR). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "metrics/base/alloc.h"
#include "metrics/base/outfile.h"
#include "reports/table.h"
#include "reports/table-internal.h"
#include "metrics/base/banned.h"

int kdl__doc_no_table(const kdl_doc *d, const char *name)
{
        char list[512] = "";
        size_t len = 0;

        for (size_t k = 0; k < d->ntables && len < sizeof(list); k++)
                len += (size_t) snprintf(list + len, sizeof(list) - len, "%s%s",
                                         k == 0               ? ""
                                         : k + 1 < d->ntables ? ", "
                                                              : " or ",
                                         d->tables[k]->name);
        return kdl_error(-KDL_EUSAGE, "no table '%s' in the output of %s: expected %s", name,
                         d->command, d->ntables ? list : "none (it has no table)");
}

/* @t into the file @path: written under a temporary name beside it and renamed
 * over it when complete, so that a failure leaves what was there. */
static int write_file(const kdl_table *t, const char *path)
{
        char *tmp = kdl_out_tmpname(path);
        FILE *fp = NULL;
        int fd, err;

        if (!tmp)
                return -ENOMEM;
        fd = mkstemp(tmp);
        if (fd < 0) {
                err = kdl_error(-errno, "cannot create '%s': %s", path, strerror(errno));
                free(tmp);
                return err;
        }
        fp = fdopen(fd, "w");
        if (!fp) {
                err = kdl_error(-errno, "cannot write '%s': %s", path, strerror(errno));
                close(fd);
                goto out;
        }
        err = kdl_table_write(t, fp, KDL_FORMAT_CSV);
        if (fclose(fp) != 0 && err == 0)
                err = kdl_error(-EIO, "cannot write '%s': %s", path, strerror(errno));
        if (err == 0 && rename(tmp, path) < 0)
                err = kdl_error(-errno, "cannot rename the temporary file to '%s': %s", path,
                                strerror(errno));
out:
        if (err < 0)
                unlink(tmp);
        free(tmp);
        return err;
}

int kdl_doc_write_csv_dir(const kdl_doc *d, const char *dir, const char *only)
{
        struct stat st;
        int err = 0;

        if (only && !kdl_doc_find_table(d, only))
                return kdl__doc_no_table(d, only);
        if (mkdir(dir, 0777) < 0 && errno != EEXIST)
                return kdl_error(-errno, "cannot create the directory '%s': %s", dir,
                                 strerror(errno));
        if (stat(dir, &st) < 0)
                return kdl_error(-errno, "cannot examine '%s': %s", dir, strerror(errno));
        if (!S_ISDIR(st.st_mode))
                return kdl_error(-KDL_EUSAGE, "the output '%s' is not a directory", dir);
        for (size_t k = 0; k < d->ntables && err == 0; k++) {
                const kdl_table *t = d->tables[k];
                char *path;

                if (only && strcmp(t->name, only) != 0)
                        continue;
                /* Table names are identifiers (docs/README.md#tables-by-command). */
                if (!t->name[0] || strchr(t->name, '/') || t->name[0] == '.')
                        return kdl_error(-KDL_ERANGE, "the table name '%s' is not a file name",
                                         t->name);
                path = kdl__asprintf("%s/%s.csv", dir, t->name);
                if (!path)
                        return -ENOMEM;
                err = kdl_out_check(path, KDL_OUT_FILE, (const char *const *) d->inputs,
                                    d->ninputs);
                err = err ?: write_file(t, path);
                free(path);
        }
        return err;
}
