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

/* 6. HDF5's own reason, read where the call failed: never "unknown HDF5 error". */
static void test_error_text(void **state)
{
        char buf[256];

        (void) state;
        H5Eclear2(H5E_DEFAULT);
        assert_string_equal(kdl__h5_last_error(buf),
                            "HDF5 gave no reason (its error stack is empty)");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_inputs_only_regular_files),
                cmocka_unit_test(test_error_text),
        };

        kdl__h5_init();
        return cmocka_run_group_tests(tests, NULL, NULL);
}
