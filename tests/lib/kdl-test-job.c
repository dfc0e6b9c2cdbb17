/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>

#include "tests/lib/kdl-test.h"
#include "tests/lib/kdl-test-job.h"

static int probe_attach(kdl__job *j, kdl_stream *s)
{
        struct kdl_test_probe *p = j->ctx;

        p->idx = kdl__job_add(j, s, p->f, p->ds, KDL_SPATIAL_AVG, p->student);
        return p->idx < 0 ? p->idx : 0;
}

static int probe_block(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct kdl_test_probe *p = j->ctx;
        kdl_tensor b = kdl_stream_block(s, p->idx);

        assert_true(pass < (p->passes ? p->passes : 1));
        assert_int_equal(b.shape[0], kdl_stream_rows(s));
        for (size_t i = 0; i < b.shape[0]; i++)
                for (size_t c = 0; c < b.shape[1]; c++)
                        p->sum[pass] += KDL_AT2(&b, i, c);
        p->rows[pass] += b.shape[0];
        p->blocks[pass]++;
        return 0;
}

static int probe_end(kdl__job *j, kdl_stream *s, unsigned pass)
{
        struct kdl_test_probe *p = j->ctx;

        (void) s;
        if (p->fail_at_end)
                return p->fail_at_end;
        return pass + 1 < p->passes;
}

kdl__job kdl_test_probe_job(struct kdl_test_probe *p)
{
        return (kdl__job){.ctx = p, .attach = probe_attach, .block = probe_block, .end = probe_end};
}

kdl_inputs *kdl_test_fixture_inputs(bool student)
{
        const char *dir = getenv("KDL_FIXTURES");
        kdl_inputs *in = NULL;
        char *t = NULL, *s = NULL;

        assert_non_null(dir);
        assert_true(asprintf(&t, "%s/teacher.h5", dir) > 0);
        assert_true(asprintf(&s, "%s/student.h5", dir) > 0);
        assert_int_equal(kdl_inputs_open(t, (const char *const[]){s}, student ? 1 : 0, &in), 0);
        free(s);
        free(t);
        return in;
}

char *kdl_test_doc_json(const kdl_doc *d)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(f);
        assert_int_equal(kdl_doc_write(d, f, KDL_FORMAT_JSON), 0);
        fclose(f);
        return buf;
}
