/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/base/alloc.h"
#include "analysis/dist.h"
#include "analysis/pass.h"
#include "metrics/base/banned.h"

/* Note that @j reads dataset @index (as returned by the stream, or an error). */
static int note_use(kdl__job *j, int index)
{
        if (index < 0)
                return index;
        if ((size_t) index >= j->nuses) {
                size_t n = (size_t) index + 8;
                bool *grown = realloc(j->uses, n * sizeof(*grown));

                if (!grown)
                        return kdl_error(-ENOMEM, "out of memory");
                memset(grown + j->nuses, 0, (n - j->nuses) * sizeof(*grown));
                j->uses = grown;
                j->nuses = n;
        }
        j->uses[index] = true;
        return index;
}

int kdl__job_add(kdl__job *j, kdl_stream *s, kdl_h5file *f, const kdl_dsinfo *ds,
                 enum kdl_spatial rule, bool student)
{
        return note_use(j, kdl_stream_add(s, f, ds, rule, student));
}

int kdl__job_add_labels(kdl__job *j, kdl_stream *s, kdl_h5file *f)
{
        return note_use(j, kdl_stream_add_labels(s, f));
}

/* Under MPI: this rank's part of the rows; refused when a job cannot
 * combine its states, or when there are more processes than rows (the same
 * answer on every rank: it depends on nothing a rank reads alone). */
static int distribute(kdl_stream *s, const kdl__job *jobs, size_t n)
{
        size_t p = (size_t) kdl__dist_size();

        for (size_t i = 0; i < n; i++)
                if (!jobs[i].combine)
                        return kdl_error(-KDL_EUSAGE,
                                         "this analysis does not run on more than "
                                         "one MPI process yet (run it without mpirun)");
        if (p > kdl_stream_n(s))
                return kdl_error(-KDL_EUSAGE,
                                 "%zu MPI processes for %zu samples: at most one "
                                 "process per sample",
                                 p, kdl_stream_n(s));
        kdl_stream_part(s, (unsigned) kdl__dist_rank(), (unsigned) p);
        return 0;
}

int kdl__jobs_run(kdl_stream *s, kdl__job *jobs, size_t n, unsigned *ret_passes)
{
        bool *use = NULL;
        unsigned pass = 0;
        size_t active = n, nds;
        int err = 0, more = 0;

        for (size_t i = 0; i < n && !err; i++) {
                jobs[i].done = false;
                err = jobs[i].attach(&jobs[i], s);
        }
        if (!err && kdl__dist_size() > 1)
                err = distribute(s, jobs, n);
        if ((err = kdl__dist_status(err)) < 0)
                goto out;
        nds = kdl_stream_count(s);
        use = kdl_new(bool, nds ? nds : 1);
        if (!use) {
                err = -ENOMEM;
                goto out;
        }
        while (active > 0) {
                /* Read only what the jobs still running read. */
                memset(use, 0, nds * sizeof(*use));
                for (size_t i = 0; i < n; i++)
                        for (size_t k = 0; !jobs[i].done && k < jobs[i].nuses && k < nds; k++)
                                use[k] = use[k] || jobs[i].uses[k];
                if (pass > 0)
                        kdl_stream_rewind(s);
                kdl_stream_use(s, use);
                while (!err && (more = kdl_stream_next(s)) > 0)
                        for (size_t i = 0; i < n && !err; i++)
                                if (!jobs[i].done)
                                        err = jobs[i].block(&jobs[i], s, pass);
                if ((err = kdl__dist_status(err ?: more)) < 0)
                        goto out;
                for (size_t i = 0; i < n && kdl__dist_size() > 1; i++)
                        if (!jobs[i].done && (err = jobs[i].combine(&jobs[i], s, pass)) < 0)
                                goto out;
                for (size_t i = 0; i < n; i++) {
                        if (jobs[i].done)
                                continue;
                        err = jobs[i].end ? jobs[i].end(&jobs[i], s, pass) : 0;
                        if ((more = kdl__dist_status(err)) < 0) {
                                err = more;
                                goto out;
                        }
                        if (err == 0) {
                                jobs[i].done = true;
                                active--;
                        }
                }
                err = 0;
                pass++;
        }
        if (ret_passes)
                *ret_passes = pass;
out:
        free(use);
        for (size_t i = 0; i < n; i++) {
                free(jobs[i].uses);
                jobs[i].uses = NULL;
                jobs[i].nuses = 0;
        }
        return err;
}
