/* SPDX-License-Identifier: MIT */
#ifndef KDL_TESTS_LIB_KDL_TEST_JOB_H
#define KDL_TESTS_LIB_KDL_TEST_JOB_H

#include <stdbool.h>
#include <stddef.h>

#include "analysis/inputs.h"
#include "analysis/pass.h"
#include "reports/table.h"

/*
 * Helpers of the analysis tests: another analysis to run beside the one
 * under test, the fixture dumps, and a document as JSON text.
 */

/* A job that reads one dataset and, pass by pass, counts its blocks and
 * rows and sums its values; it asks for @passes passes (0 counts as 1). */
struct kdl_test_probe {
        kdl_h5file *f;
        const kdl_dsinfo *ds;
        bool student; /* @ds belongs to the student of the stream's pair */
        unsigned passes;
        int fail_at_end; /* when non-zero, end() of pass 0 returns it */
        int idx;         /* the dataset's stream index */
        double sum[3];
        size_t rows[3], blocks[3];
};

/* kdl_test_probe_job() - the job of @p (borrowed). */
kdl__job kdl_test_probe_job(struct kdl_test_probe *p);

/* kdl_test_fixture_inputs() - $KDL_FIXTURES/teacher.h5, with student.h5 when @student. */
kdl_inputs *kdl_test_fixture_inputs(bool student);

/* kdl_test_doc_json() - @d as JSON text (caller frees). */
char *kdl_test_doc_json(const kdl_doc *d);

#endif
