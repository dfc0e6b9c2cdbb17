/* SPDX-License-Identifier: MIT */
/*
 * Hostile inputs: files that are not regular files, damaged or declared but
 * not written, made by tests/fixtures/mkfixtures.py (the .h5 files of hostile/, by h5py
 * and byte patching).  Each is refused with one line naming the file and the
 * object, and nothing crashes, hangs or allocates what the file does not hold.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/lib/kdl-test.h"
#include "loaders/h5.h"
#include "loaders/h5-internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static char *fixture(const char *name)
{
        const char *dir = getenv("KDL_FIXTURES");
        char *p;

        assert_non_null(dir);
        assert_true(asprintf(&p, "%s/hostile/%s", dir, name) > 0);
        return p;
}

/* The recorded message is one line holding every one of @needles (NULL-terminated). */
static void assert_message(const char *what, const char *const *needles)
{
        const char *msg = kdl_errmsg();

        if (strchr(msg, '\n'))
                fail_msg("%s: expected one line, got '%s'", what, msg);
        for (size_t k = 0; needles[k]; k++)
                if (!strstr(msg, needles[k]))
                        fail_msg("%s: expected '%s' in the message, got '%s'", what, needles[k],
                                 msg);
}

/* kdl_h5_open() of @path fails with @code and a message holding @path and @needle. */
static void expect_open_error(const char *path, int code, const char *needle)
{
        kdl_h5file *f = (kdl_h5file *) 0x1;
        int err = kdl_h5_open(path, &f);

        if (err != code)
                fail_msg("%s: expected %d, got %d (%s)", path, code, err, kdl_errmsg());
        assert_message(path, (const char *const[]){path, needle, NULL});
        assert_true(f == (kdl_h5file *) 0x1); /* never clobbered */
}

/* Fixture @name opens; its first problem names it, @object and says @needle. */
static void expect_problem(const char *name, const char *object, const char *needle)
{
        char *p = fixture(name);
        kdl_h5file *f = NULL;
        int err = kdl_h5_open(p, &f);

        if (err != 0)
                fail_msg("%s: expected to open, got %d (%s)", name, err, kdl_errmsg());
        assert_int_equal(kdl_h5_check(f), -KDL_ESCHEMA);
        assert_message(name, (const char *const[]){p, object, needle, NULL});
        kdl_h5_close(f);
        free(p);
}

/* 1. Only regular files: a FIFO would block HDF5 forever, a device be endless. */
static void test_inputs_only_regular_files(void **state)
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
static void test_damaged_is_not_absent(void **state)
{
        (void) state;
        expect_problem("damaged-sample-ids.h5", "/sample_ids",
                       "expected integer sample ids [N], found an object HDF5 cannot read "
                       "(damaged object header: bad object header version number)");
        expect_problem("damaged-head.h5", "/checkpoints/final/head",
                       "found an object HDF5 cannot read (damaged object header");
        /* Not "found a dataset": nothing says what it was. */
        expect_problem("damaged-checkpoint.h5", "/checkpoints/final",
                       "expected a checkpoint group, found an object HDF5 cannot read");
        expect_problem("dangling-gradients.h5", "/checkpoints/final/gradients/logits",
                       "found a soft link to '/nowhere/logits' that leads to no object");
        expect_problem("external-head-weight.h5", "/checkpoints/final/head/weight",
                       "found an external link to 'no-such-file.h5:/weight' (links to other "
                       "files are not followed)");
        expect_problem("labels-group.h5", "/labels",
                       "expected integer class labels [N], found a group");
        expect_problem("head-dataset.h5", "/checkpoints/final/head",
                       "expected the head group (weight, bias, attribute input), found a "
                       "dataset");
        expect_problem("logits-compound.h5", "/checkpoints/final/logits",
                       "expected floating-point values, found compound");
}

/* 3. Floats are IEEE binary16/32/64, integers whole bytes: anything else is refused. */
static void test_standard_numbers(void **state)
{
        (void) state;
        expect_problem("float16-overlap.h5", "/checkpoints/final/features/conv1",
                       "expected IEEE binary16, binary32 or binary64 values, found a 2-byte "
                       "float that is not IEEE binary16/32/64 (precision 16, offset 0, sign bit "
                       "15, exponent 5 bits at 10 with bias 15, mantissa 14 bits at 0");
        expect_problem("labels-12-bit.h5", "/labels",
                       "expected integers of 1, 2, 4 or 8 bytes, found a 4-byte integer that "
                       "is not a standard one (precision 12");
}

/* 4. What a dataset declares must be in the file before anything reads it. */
static void test_declared_sizes(void **state)
{
        char *p = fixture("labels-unwritten.h5");
        kdl_h5file *f = NULL;

        (void) state;
        expect_problem("huge-chunked.h5", "/checkpoints/final/logits",
                       "expected the 17592186044416 chunks 2-D [1099511627776, 1048576] needs, "
                       "found 0 written (declared but not written)");
        expect_problem("huge-contiguous.h5", "/checkpoints/final/logits",
                       "expected the 4611686018427387904 bytes 2-D [1099511627776, 1048576] "
                       "declares, found 1200 stored");
        expect_problem("labels-unwritten.h5", "/labels",
                       "expected the 256 chunks 1-D [16777216] needs, found 0 written");
        /* Refused before being read: not catalogued, so nothing reads it. */
        assert_int_equal(kdl_h5_open(p, &f), 0);
        assert_null(kdl_h5_dump(f)->labels);
        kdl_h5_close(f);
        free(p);
}

/* 5. Attributes: sizes and types checked; what libhdf5 cannot survive, a child does. */
static void test_attributes(void **state)
{
        char *huge = fixture("role-vlen-huge.h5"), *heap = fixture("gheap-role.h5");

        (void) state;
        expect_problem("model-5000.h5", "/: attribute 'model'",
                       "expected a string of at most 4096 bytes, found one of 5000");
        expect_problem("format-4-bit.h5", "/: attribute 'kdlens_format'",
                       "expected one integer, found a 4-byte integer that is not a standard one "
                       "(precision 4");
        /* A 2^31-byte string, read in a child allowed 256 MiB more: refused, not
         * allocated.  AddressSanitizer's allocator aborts on the refusal instead of
         * returning NULL to libhdf5: the child dies, which is refused too. */
#if defined(UNDER_ASAN)
        expect_open_error(huge, -KDL_EHDF5, "cannot read the file's structure: HDF5 crashed on it");
#else
        expect_problem("role-vlen-huge.h5", "/: attribute 'role'", "cannot read the string");
#endif
        /* The global heap object of the role claims 2^40 bytes: libhdf5 copies that much. */
        expect_open_error(heap, -KDL_EHDF5, "cannot read the file's structure: HDF5 crashed on it");
        free(huge);
        free(heap);
}

/* 6. HDF5's own reason, read where the call failed; a damaged group is one. */
static void test_error_text(void **state)
{
        char buf[256];

        (void) state;
        H5Eclear2(H5E_DEFAULT);
        assert_string_equal(kdl__h5_last_error(buf),
                            "HDF5 gave no reason (its error stack is empty)");
        expect_problem("damaged-features.h5", "/checkpoints/final/features",
                       "expected a group, found a damaged group: bad local heap signature");
        expect_problem("damaged-sample-ids.h5", "/sample_ids", "bad object header version number");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_inputs_only_regular_files),
                cmocka_unit_test(test_damaged_is_not_absent),
                cmocka_unit_test(test_standard_numbers),
                cmocka_unit_test(test_declared_sizes),
                cmocka_unit_test(test_attributes),
                cmocka_unit_test(test_error_text),
        };

        kdl__h5_init();
        return cmocka_run_group_tests(tests, NULL, NULL);
}
