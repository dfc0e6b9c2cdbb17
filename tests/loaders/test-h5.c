/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/alloc.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"
#include "loaders/stream.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* Fixtures come from tests/fixtures/mkfixtures.py (numpy float64 references). */
static char *fixture(const char *name)
{
        const char *dir = getenv("KDL_FIXTURES");
        char *p;

        assert_non_null(dir);
        assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
        return p;
}

static kdl_h5file *open_fixture(const char *name)
{
        char *p = fixture(name);
        kdl_h5file *f = NULL;

        assert_int_equal(kdl_h5_open(p, &f), 0);
        free(p);
        return f;
}

/* A float64 2-D reference dataset, read through the plain contiguous path. */
static double *reference(const char *name, size_t *ret_rows, size_t *ret_cols)
{
        kdl_h5file *f = open_fixture("reader-ref.h5");
        char *path;
        kdl_dsinfo ds = {0};
        kdl_h5reader *r = NULL;
        double *v;
        const kdl_dump *d = kdl_h5_dump(f);

        (void) d;
        assert_true(asprintf(&path, "/%s", name) > 0);
        /* reader-ref.h5 is not a dump; describe the dataset by hand. */
        ds.path = path;
        ds.is_float = true;
        ds.dtype = "float64";
        ds.ndim = 2;
        ds.shape[0] = 60;
        if (strstr(name, "flatten"))
                ds.shape[1] = strstr(name, "conv1") ? 48 : 18;
        else if (strstr(name, "pen"))
                ds.shape[1] = 4;
        else
                ds.shape[1] = strstr(name, "conv1") ? 3 : 6;
        assert_int_equal(kdl_h5_reader_open(f, &ds, KDL_SPATIAL_AVG, &r), 0);
        v = calloc(60 * ds.shape[1], sizeof(double));
        assert_int_equal(kdl_h5_reader_read(r, 0, 60, v), 0);
        *ret_rows = 60;
        *ret_cols = ds.shape[1];
        kdl_h5_reader_close(r);
        kdl_h5_close(f);
        free(path);
        return v;
}

static void test_catalogue(void **state)
{
        kdl_h5file *f = open_fixture("teacher.h5");
        const kdl_dump *d = kdl_h5_dump(f);
        const kdl_checkpoint *ck;

        (void) state;
        assert_int_equal(d->nproblems, 0);
        assert_int_equal(d->format, 1);
        assert_string_equal(d->role, "teacher");
        assert_string_equal(d->model, "teacher-fixture");
        assert_int_equal(d->n, 60);
        assert_int_equal(d->c, 5);
        assert_int_equal(d->ncheckpoints, 2);
        assert_string_equal(d->checkpoints[0].name, "init"); /* sorted by step */
        assert_string_equal(d->checkpoints[1].name, "final");
        assert_int_equal(d->checkpoints[1].step, 100);
        assert_true(d->checkpoints[1].has_epoch);
        ck = kdl_h5_checkpoint(f, "final");
        assert_non_null(ck);
        assert_null(kdl_h5_checkpoint(f, "nope"));
        assert_int_equal(ck->nlayers, 3);
        assert_string_equal(ck->layers[0].name, "conv1"); /* sorted by depth */
        assert_string_equal(ck->layers[1].name, "block.1");
        assert_string_equal(ck->layers[2].name, "pen");
        assert_string_equal(ck->layers[0].feature.dtype, "float16");
        assert_true(ck->layers[0].feature.chunked);
        assert_int_equal(ck->layers[0].feature.chunk[0], 16);
        assert_int_equal(ck->layers[0].feature.gzip, 4);
        assert_int_equal(ck->layers[1].feature.gzip, -1);
        assert_int_equal(kdl_dsinfo_width(&ck->layers[0].feature, KDL_SPATIAL_AVG), 3);
        assert_int_equal(kdl_dsinfo_width(&ck->layers[0].feature, KDL_SPATIAL_FLATTEN), 48);
        assert_int_equal(kdl_dsinfo_width(&ck->layers[1].feature, KDL_SPATIAL_MAX), 6);
        assert_null(ck->layers[0].gradient);
        assert_non_null(ck->layers[2].gradient);
        assert_non_null(ck->grad_logits);
        assert_string_equal(ck->head_input, "pen");
        assert_int_equal(ck->head_weight->shape[1], 8);
        assert_int_equal(d->label_min, 0);
        assert_int_equal(d->label_max, 4);
        assert_int_equal(kdl_h5_check(f), 0);
        kdl_h5_close(f);
}

/* Every spatial rule, read in blocks of 7 rows that straddle the 16-row chunks. */
static void check_rule(const kdl_dsinfo *ds, kdl_h5file *f, enum kdl_spatial rule,
                       const char *refname, double rtol)
{
        size_t rows, cols;
        double *ref = reference(refname, &rows, &cols);
        double *got = calloc(rows * cols, sizeof(double));
        kdl_h5reader *r = NULL;

        assert_int_equal(kdl_h5_reader_open(f, ds, rule, &r), 0);
        assert_int_equal(kdl_h5_reader_cols(r), cols);
        for (size_t r0 = 0; r0 < rows; r0 += 7) {
                size_t r1 = r0 + 7 < rows ? r0 + 7 : rows;

                assert_int_equal(kdl_h5_reader_read(r, r0, r1, got + r0 * cols), 0);
        }
        for (size_t k = 0; k < rows * cols; k++)
                assert_close(got[k], ref[k], rtol, 1e-15);
        kdl_h5_reader_close(r);
        free(ref);
        free(got);
}

static void test_reader_rules(void **state)
{
        kdl_h5file *f = open_fixture("teacher.h5");
        const kdl_checkpoint *ck = kdl_h5_checkpoint(f, "final");

        (void) state;
        /* float16 storage: values are exact in double; the mean of 16 of them is
         * computed in double by both sides. */
        check_rule(&ck->layers[0].feature, f, KDL_SPATIAL_AVG, "teacher_conv1_avg", 1e-14);
        check_rule(&ck->layers[0].feature, f, KDL_SPATIAL_MAX, "teacher_conv1_max", 0.0);
        check_rule(&ck->layers[0].feature, f, KDL_SPATIAL_FLATTEN, "teacher_conv1_flatten", 0.0);
        check_rule(&ck->layers[1].feature, f, KDL_SPATIAL_AVG, "teacher_block1_avg", 1e-14);
        check_rule(&ck->layers[1].feature, f, KDL_SPATIAL_MAX, "teacher_block1_max", 0.0);
        check_rule(&ck->layers[1].feature, f, KDL_SPATIAL_FLATTEN, "teacher_block1_flatten", 0.0);
        kdl_h5_close(f);
}

static void test_pair_and_stream_join_on_ids(void **state)
{
        kdl_h5file *t = open_fixture("teacher.h5"), *s = open_fixture("student.h5");
        const kdl_checkpoint *cs = kdl_h5_checkpoint(s, "final");
        size_t rows, cols, prow, pcols, seen = 0;
        double *ref_pen = reference("student_pen_aligned", &rows, &cols);
        double *ref_conv = reference("student_conv1_avg_aligned", &prow, &pcols);
        kdl_pair *p = NULL;
        kdl_stream *st = NULL;
        struct kdl_stream_opts o = {.block_rows = 11};
        int pen, conv, r;

        (void) state;
        assert_int_equal(kdl_h5_pair(t, s, &p), 0);
        assert_true(p->joined);
        assert_non_null(p->student_rows);
        assert_int_equal(p->n, 60);
        assert_int_equal(kdl_stream_new(p->n, p, &o, &st), 0);
        pen = kdl_stream_add(st, s, &cs->layers[2].feature, KDL_SPATIAL_AVG, true);
        conv = kdl_stream_add(st, s, &cs->layers[0].feature, KDL_SPATIAL_AVG, true);
        assert_true(pen >= 0 && conv >= 0);
        assert_int_equal(kdl_stream_add_labels(st, t), 2);
        while ((r = kdl_stream_next(st)) > 0) {
                kdl_tensor a = kdl_stream_block(st, pen), b = kdl_stream_block(st, conv);
                const int64_t *y = kdl_stream_labels(st);

                for (size_t i = 0; i < kdl_stream_rows(st); i++) {
                        size_t n = kdl_stream_samples(st)[i];

                        assert_int_equal(n, seen + i);
                        assert_int_equal(y[i], (int64_t) (n % 5));
                        for (size_t j = 0; j < cols; j++)
                                assert_close(KDL_AT2(&a, i, j), ref_pen[n * cols + j], 0.0, 0.0);
                        for (size_t j = 0; j < pcols; j++)
                                assert_close(KDL_AT2(&b, i, j), ref_conv[n * pcols + j], 1e-14,
                                             1e-15);
                }
                seen += kdl_stream_rows(st);
        }
        assert_int_equal(r, 0);
        assert_int_equal(seen, 60);
        kdl_stream_rewind(st);
        assert_int_equal(kdl_stream_next(st), 1);
        assert_int_equal(kdl_stream_samples(st)[0], 0);
        kdl_stream_free(st);
        kdl_pair_free(p);
        kdl_h5_close(t);
        kdl_h5_close(s);
        free(ref_pen);
        free(ref_conv);
}

/* A dataset added twice is read once; kdl_stream_use() reads only what it names. */
static void test_stream_shares_and_selects(void **state)
{
        kdl_h5file *t = open_fixture("teacher.h5");
        const kdl_checkpoint *ck = kdl_h5_checkpoint(t, "final");
        const kdl_dsinfo *pen = &ck->layers[2].feature;
        size_t dpen = pen->shape[1], c = ck->logits->shape[1], rows = 0;
        kdl_stream *st = NULL;
        int a, b, z, r;

        (void) state;
        assert_int_equal(kdl_stream_new(60, NULL, &(struct kdl_stream_opts){.block_rows = 7}, &st),
                         0);
        a = kdl_stream_add(st, t, pen, KDL_SPATIAL_AVG, false);
        z = kdl_stream_add(st, t, ck->logits, KDL_SPATIAL_AVG, false);
        b = kdl_stream_add(st, t, pen, KDL_SPATIAL_AVG, false);
        assert_true(a >= 0 && z > a);
        assert_int_equal(b, a);
        /* Another rule is another dataset. */
        assert_true(kdl_stream_add(st, t, &ck->layers[0].feature, KDL_SPATIAL_AVG, false) > z);
        assert_true(kdl_stream_add(st, t, &ck->layers[0].feature, KDL_SPATIAL_MAX, false) > z + 1);
        assert_int_equal(kdl_stream_count(st), 4);
        kdl_stream_use(st, (bool[]){false, true, false, false});
        while ((r = kdl_stream_next(st)) > 0) {
                kdl_tensor lz = kdl_stream_block(st, z);

                assert_int_equal(lz.shape[0], kdl_stream_rows(st));
                rows += kdl_stream_rows(st);
        }
        assert_int_equal(r, 0);
        assert_int_equal(rows, 60);
        assert_int_equal(kdl_stream_values_read(st), 60 * c);
        kdl_stream_rewind(st);
        kdl_stream_use(st, (bool[]){true, true, false, false});
        while ((r = kdl_stream_next(st)) > 0)
                ;
        assert_int_equal(kdl_stream_values_read(st), 60 * c + 60 * (c + dpen));
        kdl_stream_free(st);
        kdl_h5_close(t);
}

static void test_nonfinite_error_and_skip(void **state)
{
        kdl_h5file *f = open_fixture("bad/nan.h5");
        const kdl_checkpoint *ck = kdl_h5_checkpoint(f, "final");
        kdl_stream *st = NULL;
        struct kdl_stream_opts o = {.block_rows = 8, .skip_nonfinite = true};
        size_t total = 0;
        int idx, r;

        (void) state;
        /* Structure is fine: the NaN is found by reading. */
        assert_int_equal(kdl_h5_dump(f)->nproblems, 0);
        assert_int_equal(kdl_stream_new(60, NULL, NULL, &st), 0);
        idx = kdl_stream_add(st, f, &ck->layers[2].feature, KDL_SPATIAL_AVG, false);
        assert_true(idx >= 0);
        while ((r = kdl_stream_next(st)) > 0)
                ;
        assert_int_equal(r, -KDL_ENONFINITE);
        assert_non_null(strstr(kdl_errmsg(), "/checkpoints/final/features/pen"));
        assert_non_null(strstr(kdl_errmsg(), "NaN at sample 17"));
        kdl_stream_free(st);

        assert_int_equal(kdl_stream_new(60, NULL, &o, &st), 0);
        idx = kdl_stream_add(st, f, &ck->layers[2].feature, KDL_SPATIAL_AVG, false);
        while ((r = kdl_stream_next(st)) > 0)
                for (size_t i = 0; i < kdl_stream_rows(st); i++, total++)
                        assert_true(kdl_stream_samples(st)[i] != 17);
        assert_int_equal(r, 0);
        assert_int_equal(total, 59);
        assert_int_equal(kdl_stream_skipped(st), 1);
        kdl_stream_free(st);

        /* A sample dropped in the first pass stays dropped in a pass that
         * does not read the dataset holding its NaN. */
        assert_int_equal(kdl_stream_new(60, NULL, &o, &st), 0);
        idx = kdl_stream_add(st, f, &ck->layers[2].feature, KDL_SPATIAL_AVG, false);
        assert_int_equal(kdl_stream_add(st, f, ck->logits, KDL_SPATIAL_AVG, false), idx + 1);
        while ((r = kdl_stream_next(st)) > 0)
                ;
        assert_int_equal(kdl_stream_skipped(st), 1);
        kdl_stream_rewind(st);
        kdl_stream_use(st, (bool[]){false, true});
        total = 0;
        while ((r = kdl_stream_next(st)) > 0)
                for (size_t i = 0; i < kdl_stream_rows(st); i++, total++)
                        assert_true(kdl_stream_samples(st)[i] != 17);
        assert_int_equal(r, 0);
        assert_int_equal(total, 59);
        assert_int_equal(kdl_stream_skipped(st), 1);
        kdl_stream_free(st);

        assert_int_equal(kdl_h5_scan_values(f), 1);
        assert_int_equal(kdl_h5_check(f), -KDL_ESCHEMA);
        assert_non_null(strstr(kdl_errmsg(), "NaN at sample 17"));
        kdl_h5_close(f);
}

/* The recorded message is one line naming @path and saying @needle. */
static void assert_message(const char *path, const char *needle)
{
        const char *msg = kdl_errmsg();

        if (strchr(msg, '\n') || !strstr(msg, needle) || !strstr(msg, path))
                fail_msg("expected one line naming '%s' with '%s', got '%s'", path, needle, msg);
}

/* Fixture @name opens; its first problem names it and says @needle. */
static void expect_problem(const char *name, const char *needle)
{
        kdl_h5file *f = open_fixture(name);

        assert_int_equal(kdl_h5_check(f), -KDL_ESCHEMA);
        assert_message(name, needle);
        kdl_h5_close(f);
}

/* kdl_h5_open() of @path fails with @code and one line naming it and saying @needle. */
static void expect_open_error(const char *path, int code, const char *needle)
{
        kdl_h5file *f = (kdl_h5file *) 0x1;
        int err = kdl_h5_open(path, &f);

        if (err != code)
                fail_msg("%s: expected %d, got %d (%s)", path, code, err, kdl_errmsg());
        assert_message(path, needle);
        assert_true(f == (kdl_h5file *) 0x1); /* never clobbered */
}

/* expect_open_error() of fixture @name. */
static void expect_fixture_error(const char *name, int code, const char *needle)
{
        char *p = fixture(name);

        expect_open_error(p, code, needle);
        free(p);
}

static void test_schema_problems(void **state)
{
        (void) state;
        expect_problem("bad/no-logits.h5", "/checkpoints/final/logits: expected the logits");
        expect_problem("bad/n-mismatch.h5", "expected 60 samples");
        expect_problem("bad/wrong-rank.h5", "expected 2-D [N, C], found 3-D [60, 5, 2]");
        expect_problem("bad/label-range.h5", "expected classes in [0, 5), found 5 at sample 9");
        expect_problem("bad/zero-size.h5", "expected a non-empty dataset, found 2-D [60, 0]");
        expect_problem("bad/overflow.h5", "overflows");
        expect_problem("bad/unknown-format.h5", "expected attribute kdlens_format=1, found 7");
}

static void test_open_failures(void **state)
{
        (void) state;
        expect_open_error("/nonexistent/x.h5", -ENOENT, "No such file");
        expect_fixture_error("bad/not-hdf5.h5", -KDL_EHDF5, "expected an HDF5 file");
        expect_fixture_error("bad/truncated.h5", -KDL_EHDF5, "truncated");
}

/* ---- Hostile inputs (issue #22) ---------------------------------------------
 *
 * Files that are not regular files, damaged, or declared but not written
 * (tests/fixtures/mkfixtures.py, hostile/: h5py and byte patching).  Each is
 * refused with one line naming the file and the object, and nothing
 * crashes, hangs or allocates what the file does not hold.
 */

/* 1. Only regular files: a FIFO would block HDF5 forever, a device be endless. */
static void test_hostile_not_regular_files(void **state)
{
        const char *dir = kdl_test_tmpdir();
        char *fifo, *link, *cmd;

        (void) state;
        assert_true(asprintf(&fifo, "%s/fifo.h5", dir) > 0);
        assert_true(asprintf(&link, "%s/link.h5", dir) > 0);
        assert_int_equal(mkfifo(fifo, 0600), 0);
        assert_int_equal(symlink(fifo, link), 0);
        expect_open_error(fifo, -KDL_EHDF5, "expected a regular file, found a FIFO");
        expect_open_error(link, -KDL_EHDF5, "expected a regular file, found a FIFO");
        expect_open_error(dir, -KDL_EHDF5, "expected a regular file, found a directory");
        expect_open_error("/dev/null", -KDL_EHDF5,
                          "expected a regular file, found a character device");
        expect_open_error("/dev/zero", -KDL_EHDF5,
                          "expected a regular file, found a character device");
        assert_true(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
        assert_int_equal(system(cmd), 0);
        free(cmd);
        free(fifo);
        free(link);
}

/* 2. An object that exists but cannot be used is a problem, never "absent". */
static void test_hostile_damaged_is_not_absent(void **state)
{
        (void) state;
        expect_problem("hostile/damaged-sample-ids.h5",
                       "/sample_ids: expected integer sample ids [N], found an object HDF5 cannot "
                       "read (damaged object header: bad object header version number)");
        expect_problem("hostile/damaged-head.h5",
                       "/checkpoints/final/head: expected the head group (weight, bias, attribute "
                       "input), found an object HDF5 cannot read (damaged object header");
        /* Not "found a dataset": nothing says what it was. */
        expect_problem("hostile/damaged-checkpoint.h5",
                       "/checkpoints/final: expected a checkpoint group, found an object HDF5 "
                       "cannot read");
        expect_problem("hostile/dangling-gradients.h5",
                       "/checkpoints/final/gradients/logits: expected the logit gradients [N, C], "
                       "found a soft link to '/nowhere/logits' that leads to no object");
        expect_problem("hostile/external-head-weight.h5",
                       "/checkpoints/final/head/weight: expected the head weight [C, D], found an "
                       "external link to 'no-such-file.h5:/weight' (links to other files are not "
                       "followed)");
        expect_problem("hostile/labels-group.h5",
                       "/labels: expected integer class labels [N], found a group");
        expect_problem("hostile/head-dataset.h5",
                       "/checkpoints/final/head: expected the head group (weight, bias, attribute "
                       "input), found a dataset");
        expect_problem("hostile/logits-compound.h5",
                       "/checkpoints/final/logits: expected floating-point values, found compound");
}

/* 3. Floats are IEEE binary16/32/64, integers whole bytes: anything else is refused. */
static void test_hostile_standard_numbers(void **state)
{
        (void) state;
        expect_problem("hostile/float16-overlap.h5",
                       "/checkpoints/final/features/conv1: expected IEEE binary16, binary32 or "
                       "binary64 values, found a 2-byte float that is not IEEE binary16/32/64 "
                       "(precision 16, offset 0, sign bit 15, exponent 5 bits at 10 with bias 15, "
                       "mantissa 14 bits at 0");
        expect_problem("hostile/labels-12-bit.h5",
                       "/labels: expected integers of 1, 2, 4 or 8 bytes, found a 4-byte integer "
                       "that is not a standard one (precision 12");
}

/* 4. What a dataset declares must be in the file before anything reads it. */
static void test_hostile_declared_sizes(void **state)
{
        kdl_h5file *f;

        (void) state;
        expect_problem("hostile/huge-chunked.h5",
                       "/checkpoints/final/logits: expected the 17592186044416 chunks 2-D "
                       "[1099511627776, 1048576] needs, found 0 written (declared but not "
                       "written)");
        expect_problem("hostile/huge-contiguous.h5",
                       "/checkpoints/final/logits: expected the 4611686018427387904 bytes 2-D "
                       "[1099511627776, 1048576] declares, found 1200 stored");
        expect_problem("hostile/labels-unwritten.h5",
                       "/labels: expected the 256 chunks 1-D [16777216] needs, found 0 written");
        /* Refused before being read: not catalogued, so nothing reads it. */
        f = open_fixture("hostile/labels-unwritten.h5");
        assert_null(kdl_h5_dump(f)->labels);
        kdl_h5_close(f);
}

/* 5. Attributes: sizes and types checked; what libhdf5 cannot survive, a child does. */
static void test_hostile_attributes(void **state)
{
        (void) state;
        expect_problem("hostile/model-5000.h5",
                       "/: attribute 'model': expected a string of at most 4096 bytes, found one "
                       "of 5000");
        expect_problem("hostile/format-4-bit.h5",
                       "/: attribute 'kdlens_format': expected one integer, found a 4-byte "
                       "integer that is not a standard one (precision 4");
        /* A 2^31-byte string, read in a child allowed 256 MiB more: refused, not
         * allocated.  AddressSanitizer's allocator aborts on the refusal instead of
         * returning NULL to libhdf5: the child dies, which is refused too.  Under
         * valgrind the child outlives its time limit instead: not checked there. */
#if defined(UNDER_ASAN)
        expect_fixture_error("hostile/role-vlen-huge.h5", -KDL_EHDF5,
                             "cannot read the file's structure: HDF5 crashed on it");
#else
        if (!getenv("KDL_UNDER_VALGRIND"))
                expect_problem("hostile/role-vlen-huge.h5",
                               "/: attribute 'role': cannot read the string");
#endif
        /* The global heap object of the role claims 2^40 bytes: libhdf5 copies that much. */
        expect_fixture_error("hostile/gheap-role.h5", -KDL_EHDF5,
                             "cannot read the file's structure: HDF5 crashed on it");
}

/* 6. HDF5's own reason, read where the call failed; a damaged group is one. */
static void test_hostile_error_text(void **state)
{
        char buf[256];

        (void) state;
        H5Eclear2(H5E_DEFAULT);
        assert_string_equal(kdl__h5_last_error(buf),
                            "HDF5 gave no reason (its error stack is empty)");
        expect_problem("hostile/damaged-features.h5",
                       "/checkpoints/final/features: expected a group, found a damaged group: bad "
                       "local heap signature");
        expect_problem("hostile/damaged-sample-ids.h5", "bad object header version number");
        expect_problem("bad/student-dup-ids.h5",
                       "/sample_ids: expected unique ids, found 1037 at rows 4 and 5");
}

static void test_pair_mismatches(void **state)
{
        kdl_h5file *t = open_fixture("teacher.h5");
        kdl_h5file *a = open_fixture("bad/student-ids-differ.h5");
        kdl_h5file *b = open_fixture("bad/student-dup-ids.h5");
        kdl_pair *p = NULL;

        (void) state;
        assert_int_equal(kdl_h5_pair(t, a, &p), -KDL_EMISMATCH);
        assert_non_null(strstr(kdl_errmsg(), "6 samples differ"));
        assert_int_equal(kdl_h5_pair(t, b, &p), -KDL_ESCHEMA);
        assert_non_null(strstr(kdl_errmsg(), "expected unique ids"));
        assert_null(p);
        kdl_h5_close(t);
        kdl_h5_close(a);
        kdl_h5_close(b);
}

static void test_labels(void **state)
{
        kdl_h5file *f = open_fixture("student.h5");
        const kdl_dump *d = kdl_h5_dump(f);
        kdl_h5reader *r = NULL;
        double ids[60];
        int64_t *y = NULL;

        (void) state;
        assert_int_equal(kdl_h5_read_labels(f, &y), 0);
        assert_int_equal(kdl_h5_reader_open(f, d->sample_ids, KDL_SPATIAL_AVG, &r), 0);
        assert_int_equal(kdl_h5_reader_read(r, 0, 60, ids), 0);
        /* Stored in the student's own order: sample id 1000 + k has label k % 5. */
        for (size_t i = 0; i < 60; i++)
                assert_int_equal(y[i], ((int64_t) ids[i] - 1000) % 5);
        kdl_h5_reader_close(r);
        free(y);
        kdl_h5_close(f);
}

static void expect_matrix_error(kdl_h5file *f, const kdl_dsinfo *ds, size_t rows, size_t cols,
                                int code, const char *needle)
{
        kdl_tensor *w = (kdl_tensor *) 0x1;

        assert_int_equal(kdl_h5_read_matrix(f, ds, rows, cols, &w), code);
        if (!strstr(kdl_errmsg(), needle) || !strstr(kdl_errmsg(), kdl_h5_dump(f)->path))
                fail_msg("expected '%s' naming the file, got '%s'", needle, kdl_errmsg());
        assert_true(w == (kdl_tensor *) 0x1); /* never clobbered */
}

/* A whole head weight, checked as the analyses check it. */
static void test_read_matrix(void **state)
{
        kdl_h5file *f = open_fixture("teacher.h5"), *bad = open_fixture("bad/nan.h5");
        const kdl_checkpoint *ck = kdl_h5_checkpoint(f, "final");
        kdl_h5reader *r = NULL;
        kdl_tensor *w = NULL;
        double ref[5 * 8];

        (void) state;
        assert_int_equal(kdl_h5_reader_open(f, ck->head_weight, KDL_SPATIAL_AVG, &r), 0);
        assert_int_equal(kdl_h5_reader_read(r, 0, 5, ref), 0);
        kdl_h5_reader_close(r);
        assert_int_equal(kdl_h5_read_matrix(f, ck->head_weight, 5, 0, &w), 0);
        assert_int_equal(w->ndim, 2);
        assert_int_equal(w->shape[0], 5);
        assert_int_equal(w->shape[1], 8);
        assert_true(kdl_tensor_is_contiguous(w));
        assert_memory_equal(w->data, ref, sizeof(ref));
        kdl_tensor_free(w);
        w = NULL;
        assert_int_equal(kdl_h5_read_matrix(f, ck->head_weight, 0, 8, &w), 0);
        kdl_tensor_free(w);

        expect_matrix_error(f, ck->head_weight, 4, 0, -KDL_ESCHEMA,
                            "/checkpoints/final/head/weight: expected [4, D] with D >= 1, found "
                            "2-D [5, 8] float");
        expect_matrix_error(f, ck->head_weight, 5, 7, -KDL_ESCHEMA,
                            "expected [5, 7], found 2-D [5, 8]");
        expect_matrix_error(f, ck->head_weight, 0, 7, -KDL_ESCHEMA,
                            "expected [C, 7] with C >= 1, found 2-D [5, 8]");
        expect_matrix_error(f, ck->head_bias, 0, 0, -KDL_ESCHEMA,
                            "head/bias: expected [C, D] with C, D >= 1, found 1-D [5]");
        expect_matrix_error(bad, &kdl_h5_checkpoint(bad, "final")->layers[2].feature, 0, 0,
                            -KDL_ENONFINITE, "NaN at sample 17");
        kdl_h5_close(bad);
        kdl_h5_close(f);
}

/* ---- out of memory ---------------------------------------------------------- */

static void assert_same_str(const char *a, const char *b)
{
        if (!a || !b)
                assert_true(a == b);
        else
                assert_string_equal(a, b);
}

static void assert_same_dsinfo(const kdl_dsinfo *a, const kdl_dsinfo *b)
{
        if (!a || !b) {
                assert_true(a == b);
                return;
        }
        assert_string_equal(a->path, b->path);
        assert_int_equal(a->ndim, b->ndim);
        assert_memory_equal(a->shape, b->shape, sizeof(a->shape));
        assert_string_equal(a->dtype, b->dtype);
        assert_int_equal(a->is_float, b->is_float);
        assert_int_equal(a->is_integer, b->is_integer);
        assert_int_equal(a->chunked, b->chunked);
        assert_memory_equal(a->chunk, b->chunk, sizeof(a->chunk));
        assert_int_equal(a->gzip, b->gzip);
        assert_int_equal(a->other_filter, b->other_filter);
}

static void assert_same_checkpoint(const kdl_checkpoint *a, const kdl_checkpoint *b)
{
        assert_string_equal(a->name, b->name);
        assert_string_equal(a->group, b->group);
        assert_int_equal(a->step, b->step);
        assert_int_equal(a->has_epoch, b->has_epoch);
        assert_int_equal(a->epoch, b->epoch);
        assert_same_dsinfo(a->logits, b->logits);
        assert_same_dsinfo(a->grad_logits, b->grad_logits);
        assert_int_equal(a->nlayers, b->nlayers);
        for (size_t k = 0; k < a->nlayers; k++) {
                assert_string_equal(a->layers[k].name, b->layers[k].name);
                assert_int_equal(a->layers[k].depth, b->layers[k].depth);
                assert_same_dsinfo(&a->layers[k].feature, &b->layers[k].feature);
                assert_same_dsinfo(a->layers[k].gradient, b->layers[k].gradient);
        }
        assert_same_dsinfo(a->head_weight, b->head_weight);
        assert_same_dsinfo(a->head_bias, b->head_bias);
        assert_same_str(a->head_input, b->head_input);
}

/* Everything a catalogue holds, field by field. */
static void assert_same_dump(const kdl_dump *a, const kdl_dump *b)
{
        assert_string_equal(a->path, b->path);
        assert_int_equal(a->format, b->format);
        assert_same_str(a->role, b->role);
        assert_same_str(a->model, b->model);
        assert_int_equal(a->n, b->n);
        assert_int_equal(a->c, b->c);
        assert_same_dsinfo(a->labels, b->labels);
        assert_same_dsinfo(a->sample_ids, b->sample_ids);
        assert_int_equal(a->label_min, b->label_min);
        assert_int_equal(a->label_max, b->label_max);
        assert_int_equal(a->ncheckpoints, b->ncheckpoints);
        for (size_t k = 0; k < a->ncheckpoints; k++)
                assert_same_checkpoint(&a->checkpoints[k], &b->checkpoints[k]);
        assert_int_equal(a->nproblems, b->nproblems);
        for (size_t k = 0; k < a->nproblems; k++)
                assert_string_equal(a->problems[k], b->problems[k]);
}

/*
 * A failure the hook injected: -ENOMEM, a message naming @path (or @alt,
 * when not NULL), nothing returned.
 */
static void assert_nomem(int err, bool fired, const char *path, const char *alt, const void *ret,
                         const void *unset)
{
        const char *msg = kdl_errmsg();

        if (err != -ENOMEM || !fired)
                fail_msg("expected -ENOMEM from the injected failure, got %d (%s), fired %d", err,
                         msg, fired);
        if (!strstr(msg, "out of memory") || !(strstr(msg, path) || (alt && strstr(msg, alt))))
                fail_msg("expected an out-of-memory message naming '%s', got '%s'", path, msg);
        assert_true(ret == unset); /* never clobbered */
}

/*
 * Fail the k-th allocation of kdl_h5_open() for k = 0, 1, ... until the
 * open needs no more than k: each run fails with -ENOMEM, or succeeds with
 * the whole catalogue (never a shorter one).  Return the runs.
 */
static long open_under_failure(const char *name)
{
        kdl_h5file *ref = open_fixture(name), *unset = (kdl_h5file *) 0x1;
        char *p = fixture(name);
        bool fired = true;
        long k;

        for (k = 0; fired; k++) {
                kdl_h5file *f = unset;
                int err;

                kdl__alloc_fail_after(k);
                err = kdl_h5_open(p, &f);
                fired = kdl__alloc_fail_after(-1) < 0;
                if (err == 0) {
                        assert_same_dump(kdl_h5_dump(f), kdl_h5_dump(ref));
                        kdl_h5_close(f);
                } else {
                        assert_nomem(err, fired, p, NULL, f, unset);
                }
        }
        kdl_h5_close(ref);
        free(p);
        return k;
}

static void test_open_out_of_memory(void **state)
{
        static const char *const names[] = {
                "teacher.h5",
                "student.h5",
                "bad/label-range.h5",
                "bad/no-logits.h5",
                "bad/zero-size.h5",
                "bad/overflow.h5",
                "bad/wrong-rank.h5",
                "bad/n-mismatch.h5",
                "bad/unknown-format.h5",
                "bad/student-dup-ids.h5",
        };

        (void) state;
        /* Made in this process, the allocations are those of making the
         * catalogue.  The teacher's takes many: every one was failed. */
        kdl__h5_isolate(false);
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
                assert_true(open_under_failure(names[i]) > 1);
        assert_true(open_under_failure("teacher.h5") > 80);
        /* Made in a child (the default), they are those of unpacking it and
         * of reading the labels here (a process each: a few files only). */
        kdl__h5_isolate(true);
        assert_true(open_under_failure("bad/unknown-format.h5") > 1);
        assert_true(open_under_failure("bad/label-range.h5") > 60);
        assert_true(open_under_failure("teacher.h5") > 60);
}

/* The catalogue made in a child process and sent back equals the one made here. */
static void test_isolated_same_catalogue(void **state)
{
        static const char *const names[] = {
                "teacher.h5",
                "student.h5",
                "bad/label-range.h5",
                "bad/no-logits.h5",
                "bad/overflow.h5",
                "bad/unknown-format.h5",
                "hostile/damaged-features.h5",
                "hostile/dangling-gradients.h5",
                "hostile/external-head-weight.h5",
                "hostile/float16-overlap.h5",
                "hostile/huge-contiguous.h5",
                "hostile/labels-unwritten.h5",
                "hostile/model-5000.h5",
        };

        (void) state;
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                kdl_h5file *here, *child;

                kdl__h5_isolate(false);
                here = open_fixture(names[i]);
                kdl__h5_isolate(true);
                child = open_fixture(names[i]);
                assert_same_dump(kdl_h5_dump(child), kdl_h5_dump(here));
                kdl_h5_close(here);
                kdl_h5_close(child);
        }
}

/* The same walk over the value scan (a problem added, or -ENOMEM). */
static void test_scan_out_of_memory(void **state)
{
        bool fired = true;

        (void) state;
        for (long k = 0; fired; k++) {
                kdl_h5file *f = open_fixture("bad/nan.h5");
                int err;

                kdl__alloc_fail_after(k);
                err = kdl_h5_scan_values(f);
                fired = kdl__alloc_fail_after(-1) < 0;
                if (err >= 0) {
                        assert_int_equal(err, 1);
                        assert_int_equal(kdl_h5_dump(f)->nproblems, 1);
                        assert_non_null(strstr(kdl_h5_dump(f)->problems[0], "NaN at sample 17"));
                } else {
                        assert_nomem(err, fired, kdl_h5_dump(f)->path, NULL, NULL, NULL);
                }
                kdl_h5_close(f);
        }
}

/* ... over the pairing, the row-block reader (a row map, a spatial rule), a whole matrix. */
static void test_pair_read_out_of_memory(void **state)
{
        kdl_h5file *t = open_fixture("teacher.h5"), *s = open_fixture("student.h5");
        const kdl_dsinfo *conv = &kdl_h5_checkpoint(s, "final")->layers[0].feature;
        kdl_pair *p = NULL, *unset = (kdl_pair *) 0x1;
        double *rows = calloc(60 * 3, sizeof(double));
        bool fired = true;
        int err;

        (void) state;
        for (long k = 0; fired; k++) {
                kdl_pair *q = unset;

                kdl__alloc_fail_after(k);
                err = kdl_h5_pair(t, s, &q);
                fired = kdl__alloc_fail_after(-1) < 0;
                if (err == 0) {
                        assert_true(q->joined && q->n == 60 && q->student_rows);
                        kdl_pair_free(q);
                } else {
                        assert_nomem(err, fired, kdl_h5_dump(s)->path, kdl_h5_dump(t)->path, q,
                                     unset);
                }
        }
        assert_int_equal(kdl_h5_pair(t, s, &p), 0);
        fired = true;
        for (long k = 0; fired; k++) {
                kdl_h5reader *r = NULL;

                kdl__alloc_fail_after(k);
                err = kdl_h5_reader_open(s, conv, KDL_SPATIAL_AVG, &r);
                if (err == 0) {
                        kdl_h5_reader_set_rows(r, p->student_rows, p->n);
                        err = kdl_h5_reader_read(r, 0, 60, rows);
                }
                fired = kdl__alloc_fail_after(-1) < 0;
                if (err < 0)
                        assert_nomem(err, fired, kdl_h5_dump(s)->path, NULL, NULL, NULL);
                kdl_h5_reader_close(r);
        }
        fired = true;
        for (long k = 0; fired; k++) {
                kdl_tensor *w = (kdl_tensor *) 0x1;

                kdl__alloc_fail_after(k);
                err = kdl_h5_read_matrix(s, kdl_h5_checkpoint(s, "final")->head_weight, 0, 0, &w);
                fired = kdl__alloc_fail_after(-1) < 0;
                if (err == 0)
                        kdl_tensor_free(w);
                else
                        assert_nomem(err, fired, kdl_h5_dump(s)->path, NULL, w, (kdl_tensor *) 0x1);
        }
        kdl_pair_free(p);
        free(rows);
        kdl_h5_close(t);
        kdl_h5_close(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_catalogue),
                cmocka_unit_test(test_reader_rules),
                cmocka_unit_test(test_pair_and_stream_join_on_ids),
                cmocka_unit_test(test_stream_shares_and_selects),
                cmocka_unit_test(test_nonfinite_error_and_skip),
                cmocka_unit_test(test_schema_problems),
                cmocka_unit_test(test_open_failures),
                cmocka_unit_test(test_hostile_not_regular_files),
                cmocka_unit_test(test_hostile_damaged_is_not_absent),
                cmocka_unit_test(test_hostile_standard_numbers),
                cmocka_unit_test(test_hostile_declared_sizes),
                cmocka_unit_test(test_hostile_attributes),
                cmocka_unit_test(test_hostile_error_text),
                cmocka_unit_test(test_pair_mismatches),
                cmocka_unit_test(test_labels),
                cmocka_unit_test(test_read_matrix),
                cmocka_unit_test(test_open_out_of_memory),
                cmocka_unit_test(test_isolated_same_catalogue),
                cmocka_unit_test(test_scan_out_of_memory),
                cmocka_unit_test(test_pair_read_out_of_memory),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
