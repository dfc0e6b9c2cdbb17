/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/alloc.h"
#include "metrics/base/error.h"
#include "loaders/h5out.h"
#include "loaders/h5write.h"

/*
 * The dump writer.  Error paths are provoked here; the values written are
 * read back by an independent reader, h5py + numpy, through $KDL_PYTHON
 * (the test is skipped without it).
 */

static const char *dir;

static char *tmpfile_path(const char *name)
{
        char *p;

        if (!dir)
                dir = kdl_test_tmpdir();
        if (asprintf(&p, "%s/%s", dir, name) < 0)
                fail_msg("asprintf");
        return p;
}

static void test_store_names(void **state)
{
        enum kdl_store s = KDL_STORE_U8;

        (void) state;
        for (int i = 0; i < KDL_STORE_COUNT_; i++) {
                assert_int_equal(kdl_store_parse(kdl_store_name((enum kdl_store) i), &s), 0);
                assert_int_equal(s, i);
        }
        assert_int_equal(kdl_store_parse("f16", &s), 0);
        assert_int_equal(s, KDL_STORE_F16);
        assert_int_equal(kdl_store_parse("f64", &s), 0);
        assert_int_equal(s, KDL_STORE_F64);
        s = KDL_STORE_I32;
        assert_int_equal(kdl_store_parse("half", &s), -KDL_EUSAGE);
        assert_int_equal(s, KDL_STORE_I32); /* not clobbered */
        assert_non_null(strstr(kdl_errmsg(), "'half'"));
}

static void test_round_f16_known_values(void **state)
{
        /* Values and their float16 roundings worked out by hand from the
         * binary16 format (11 significant bits, min normal 2^-14, min
         * subnormal 2^-24, max 65504), ties to even. */
        static const struct {
                double x, want;
        } cases[] = {
                {1.0, 1.0},
                {1.0 + 0x1p-11, 1.0},                     /* tie: to even (down) */
                {1.0 + 3 * 0x1p-11, 1.0 + 0x1p-9},        /* tie: to even (up) */
                {1.0 + 0x1p-11 + 0x1p-30, 1.0 + 0x1p-10}, /* above the tie */
                {-2.7182818284590451, -2.71875},
                {0.1, 0.0999755859375},
                {65504.0, 65504.0},
                {65519.99, 65504.0},
                {0x1p-24, 0x1p-24},     /* smallest subnormal */
                {0x1p-25, 0.0},         /* tie: to even (zero) */
                {3 * 0x1p-25, 0x1p-23}, /* tie: to even (2 * 2^-24) */
                {0x1p-25 + 0x1p-40, 0x1p-24},
                {9.3209738e-07, 16 * 0x1p-24}, /* HDF5 1.10 stores 8 * 2^-24 */
                {0x1p-14 - 0x1p-25, 0x1p-14},  /* rounds up into the normals */
                {1e-30, 0.0},
        };

        (void) state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                assert_close(kdl_h5w_round_f16(cases[i].x), cases[i].want, 0.0, 0.0);
                assert_close(kdl_h5w_round_f16(-cases[i].x), -cases[i].want, 0.0, 0.0);
        }
        assert_true(isinf(kdl_h5w_round_f16(65520.0)) && kdl_h5w_round_f16(65520.0) > 0);
        assert_true(isinf(kdl_h5w_round_f16(-1e300)) && kdl_h5w_round_f16(-1e300) < 0);
        assert_true(isnan(kdl_h5w_round_f16(NAN)));
        assert_true(signbit(kdl_h5w_round_f16(-0.0)));
        assert_true(signbit(kdl_h5w_round_f16(-1e-30)));
        assert_close(kdl_h5w_round(0.1, KDL_STORE_F32), (double) 0.1f, 0.0, 0.0);
        assert_close(kdl_h5w_round(0.1, KDL_STORE_F64), 0.1, 0.0, 0.0);
        assert_close(kdl_h5w_round(0.1, KDL_STORE_F16), 0.0999755859375, 0.0, 0.0);
}

static void test_open_unwritable(void **state)
{
        char *missing = tmpfile_path("no/such/dir.h5"), *adir = tmpfile_path("adir.h5");
        kdl_h5w *w = (kdl_h5w *) 0x1;

        (void) state;
        assert_int_equal(kdl_h5w_open(missing, "teacher", "m", &w), -ENOENT);
        assert_ptr_equal(w, (kdl_h5w *) 0x1); /* not clobbered */
        assert_non_null(strstr(kdl_errmsg(), missing));
        assert_int_equal(mkdir(adir, 0700), 0);
        assert_true(kdl_h5w_open(adir, "teacher", "m", &w) < 0);
        assert_non_null(strstr(kdl_errmsg(), adir));
        assert_int_equal(kdl_h5w_close(NULL), 0);
        assert_int_equal(kdl_h5w_dataset_close(NULL), 0);
        free(adir);
        free(missing);
}

static void test_dataset_errors(void **state)
{
        char *path = tmpfile_path("errors.h5");
        size_t shape[4] = {10, 3, 2, 2}, huge[2] = {1000, (size_t) 1 << 29};
        kdl_h5wds *d = NULL, *keep = (kdl_h5wds *) 0x1;
        kdl_h5w *w = NULL;
        double x[60] = {0};
        int64_t ix[10] = {0};

        (void) state;
        assert_int_equal(kdl_h5w_open(path, "student", NULL, &w), 0);

        assert_int_equal(kdl_h5w_dataset_open(w, "/a", 0, shape, KDL_STORE_F32, 0, -1, &keep),
                         -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_dataset_open(w, "/a", 5, shape, KDL_STORE_F32, 0, -1, &keep),
                         -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_dataset_open(w, "/a", 2, shape, KDL_STORE_COUNT_, 0, -1, &keep),
                         -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_dataset_open(w, "/a", 2, shape, KDL_STORE_F32, 0, 4, &keep),
                         -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "gzip needs chunked"));
        assert_int_equal(kdl_h5w_dataset_open(w, "/a", 2, shape, KDL_STORE_F32, 4, 10, &keep),
                         -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_dataset_open(w, "/a", 2, shape, KDL_STORE_F32, 4, -2, &keep),
                         -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_dataset_open(w, "a/b", 2, shape, KDL_STORE_F32, 0, -1, &keep),
                         -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_dataset_open(w, "/a//b", 2, shape, KDL_STORE_F32, 0, -1, &keep),
                         -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_dataset_open(w, "/a/", 2, shape, KDL_STORE_F32, 0, -1, &keep),
                         -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_dataset_open(w, "/", 2, shape, KDL_STORE_F32, 0, -1, &keep),
                         -KDL_EUSAGE);
        /* 1000 rows of 2 GiB: fine contiguous in principle, but a chunk of
         * 4 rows is 8 GiB, above HDF5's limit. */
        assert_int_equal(kdl_h5w_dataset_open(w, "/big", 2, huge, KDL_STORE_F32, 4, -1, &keep),
                         -KDL_EOVERFLOW);
        assert_non_null(strstr(kdl_errmsg(), "4 GiB"));
        assert_ptr_equal(keep, (kdl_h5wds *) 0x1);

        assert_int_equal(kdl_h5w_dataset_open(w, "/g/x", 2, shape, KDL_STORE_F32, 4, 1, &d), 0);
        assert_int_equal(kdl_h5w_write_rows(d, 3, 11, x), -KDL_ERANGE);
        assert_non_null(strstr(kdl_errmsg(), "/g/x"));
        assert_int_equal(kdl_h5w_write_rows(d, 5, 4, x), -KDL_ERANGE);
        assert_int_equal(kdl_h5w_write_rows(d, 4, 4, x), 0); /* empty: nothing to do */
        assert_int_equal(kdl_h5w_write_rows_i64(d, 0, 2, ix), -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_dataset_close(d), 0);

        /* the dataset exists; a group or dataset cannot go under it */
        assert_int_equal(kdl_h5w_dataset_open(w, "/g/x", 2, shape, KDL_STORE_F32, 0, -1, &keep),
                         -KDL_EHDF5);
        assert_non_null(strstr(kdl_errmsg(), "/g/x"));
        assert_int_equal(kdl_h5w_group_new(w, "/g/x/y"), -KDL_EHDF5);
        assert_non_null(strstr(kdl_errmsg(), "not a group"));
        assert_int_equal(kdl_h5w_group_new(w, "/g/x"), -KDL_EHDF5);
        assert_int_equal(kdl_h5w_dataset_open(w, "/g/x/z", 1, shape, KDL_STORE_F32, 0, -1, &keep),
                         -KDL_EHDF5);
        assert_int_equal(kdl_h5w_group_new(w, "/g"), 0); /* exists: fine */
        assert_int_equal(kdl_h5w_group_new(w, "/"), 0);
        assert_int_equal(kdl_h5w_group_new(w, "g"), -KDL_EUSAGE);

        /* integer stores */
        assert_int_equal(kdl_h5w_dataset_open(w, "/u", 1, shape, KDL_STORE_U8, 0, -1, &d), 0);
        assert_int_equal(kdl_h5w_write_rows(d, 0, 1, x), -KDL_EUSAGE);
        ix[3] = 256;
        assert_int_equal(kdl_h5w_write_rows_i64(d, 0, 10, ix), -KDL_ERANGE);
        assert_non_null(strstr(kdl_errmsg(), "256"));
        ix[3] = -1;
        assert_int_equal(kdl_h5w_write_rows_i64(d, 0, 10, ix), -KDL_ERANGE);
        ix[3] = 255;
        assert_int_equal(kdl_h5w_write_rows_i64(d, 0, 10, ix), 0);
        assert_int_equal(kdl_h5w_dataset_close(d), 0);
        assert_int_equal(kdl_h5w_dataset_open(w, "/i", 1, shape, KDL_STORE_I32, 0, -1, &d), 0);
        ix[0] = (int64_t) INT32_MAX + 1;
        assert_int_equal(kdl_h5w_write_rows_i64(d, 0, 1, ix), -KDL_ERANGE);
        ix[0] = INT32_MIN;
        assert_int_equal(kdl_h5w_write_rows_i64(d, 0, 1, ix), 0);
        assert_int_equal(kdl_h5w_dataset_close(d), 0);

        /* attributes */
        assert_int_equal(kdl_h5w_attr_int(w, "/nowhere", "depth", 1), -KDL_EMISSING);
        assert_non_null(strstr(kdl_errmsg(), "/nowhere"));
        assert_int_equal(kdl_h5w_attr_int(w, "/no/where", "depth", 1), -KDL_EMISSING);
        assert_int_equal(kdl_h5w_attr_string(w, "/g/x/deeper", "s", "v"), -KDL_EMISSING);
        assert_int_equal(kdl_h5w_attr_int(w, "nowhere", "depth", 1), -KDL_EUSAGE);
        assert_int_equal(kdl_h5w_attr_int(w, "/g/x", "depth", 1), 0);
        assert_int_equal(kdl_h5w_attr_int(w, "/g/x", "depth", 2), 0); /* replaced */

        assert_int_equal(kdl_h5w_close(w), 0);
        free(path);
}

/* Run $KDL_PYTHON on @script with @file as argv[1]; its exit status. */
static int run_python(const char *script, const char *file)
{
        const char *py = getenv("KDL_PYTHON");
        char *sp = tmpfile_path("check.py");
        FILE *f;
        pid_t pid;
        int status;

        f = fopen(sp, "w");
        assert_non_null(f);
        fputs(script, f);
        fclose(f);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                execl(py, py, sp, file, (char *) NULL);
                _exit(127);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        free(sp);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static bool have_h5py(void)
{
        const char *py = getenv("KDL_PYTHON");
        char *cmd;
        int r;

        if (!py || access(py, X_OK) != 0)
                return false;
        if (asprintf(&cmd, "%s -c 'import h5py, numpy' 2>/dev/null", py) < 0)
                return false;
        r = system(cmd);
        free(cmd);
        return r == 0;
}

static const char roundtrip_py[] =
        "import sys, h5py, numpy as np\n"
        "f = h5py.File(sys.argv[1], 'r')\n"
        "a = dict(f.attrs)\n"
        "assert a == {'kdlens_format': 1, 'role': 'teacher', 'model': 'm\\u00e9'}, a\n"
        "assert f['/checkpoints/c'].attrs['step'] == -7\n"
        "assert f['/checkpoints/c/x'].attrs['name'] == 'layer3.1.conv2'\n"
        "x64 = f['/checkpoints/c/x64'][...]\n"
        "for name, dt in (('x16', np.float16), ('x32', np.float32)):\n"
        "    d = f['/checkpoints/c/' + name]\n"
        "    assert d.dtype == dt and d.shape == (40, 3, 2), (name, d.dtype, d.shape)\n"
        "    with np.errstate(over='ignore'):\n"
        "        want = x64.astype(dt)\n"
        "    got = d[...]\n"
        "    same = (got == want) | (np.isnan(got) & np.isnan(want))\n"
        "    assert same.all(), (name, x64[~same], got[~same], want[~same])\n"
        "    assert (np.signbit(got) == np.signbit(want)).all(), name\n"
        "d = f['/checkpoints/c/x16']\n"
        "assert d.chunks == (16, 3, 2) and d.compression == 'gzip' and d.compression_opts == 6\n"
        "assert f['/checkpoints/c/x32'].chunks is None\n"
        "assert f['/checkpoints/c/x64'].dtype == np.float64\n"
        "i = f['/ints/i32'][...]\n"
        "assert f['/ints/i32'].dtype == np.int32 and list(i) == [-2147483648, 0, 2147483647, 5]\n"
        "u = f['/ints/u8'][...]\n"
        "assert f['/ints/u8'].dtype == np.uint8 and list(u) == [0, 255, 7, 0], u\n"
        "l = f['/ints/i64'][...]\n"
        "assert f['/ints/i64'].dtype == np.int64 and list(l) == [-2**63, 2**63 - 1, 3, 4]\n"
        "assert f['/empty'].shape == (0, 5)\n"
        "print('roundtrip ok')\n";

static void test_roundtrip_with_h5py(void **state)
{
        char *path = tmpfile_path("roundtrip.h5");
        size_t shape[3] = {40, 3, 2}, ishape[1] = {4}, eshape[2] = {0, 5};
        double x[240];
        int64_t i32[4] = {INT32_MIN, 0, INT32_MAX, 5}, u8[4] = {0, 255, 7, 0};
        int64_t i64[4] = {INT64_MIN, INT64_MAX, 3, 4};
        kdl_test_rng rng = {99};
        kdl_h5wds *d = NULL;
        kdl_h5w *w = NULL;
        static const char *const names[3] = {"/checkpoints/c/x16", "/checkpoints/c/x32",
                                             "/checkpoints/c/x64"};
        static const enum kdl_store stores[3] = {KDL_STORE_F16, KDL_STORE_F32, KDL_STORE_F64};

        (void) state;
        if (!have_h5py())
                skip();
        /* Values across float16's whole range and beyond: subnormals, exact
         * ties, overflow, NaN, infinities and signed zeros. */
        for (size_t i = 0; i < 240; i++)
                x[i] = (kdl_test_uniform(&rng) - 0.5) * ldexp(1.0, (int) (i % 48) - 30);
        x[0] = 1.0 + 0x1p-11;
        x[1] = 1.0 + 3 * 0x1p-11;
        x[2] = 0x1p-25;
        x[3] = 3 * 0x1p-25;
        x[4] = 65519.0;
        x[5] = 65520.0;
        x[6] = -1e300;
        x[7] = NAN;
        x[8] = INFINITY;
        x[9] = -0.0;
        x[10] = -1e-30;
        x[11] = 9.3209738e-07;
        x[12] = 1e39; /* float32 overflow */

        assert_int_equal(kdl_h5w_open(path, "teacher", "m\xc3\xa9", &w), 0);
        for (int k = 0; k < 3; k++) {
                assert_int_equal(kdl_h5w_dataset_open(w, names[k], 3, shape, stores[k],
                                                      k == 0 ? 16 : 0, k == 0 ? 6 : -1, &d),
                                 0);
                /* three uneven row blocks */
                assert_int_equal(kdl_h5w_write_rows(d, 0, 7, x), 0);
                assert_int_equal(kdl_h5w_write_rows(d, 7, 33, x + 7 * 6), 0);
                assert_int_equal(kdl_h5w_write_rows(d, 33, 40, x + 33 * 6), 0);
                assert_int_equal(kdl_h5w_dataset_close(d), 0);
        }
        assert_int_equal(kdl_h5w_attr_int(w, "/checkpoints/c", "step", -7), 0);
        assert_int_equal(kdl_h5w_attr_string(w, names[0], "name", "other"), 0);
        assert_int_equal(kdl_h5w_attr_string(w, "/checkpoints/c/x", "name", "x"), -KDL_EMISSING);
        assert_int_equal(kdl_h5w_group_new(w, "/checkpoints/c/x"), 0);
        assert_int_equal(kdl_h5w_attr_string(w, "/checkpoints/c/x", "name", "x"), 0);
        assert_int_equal(kdl_h5w_attr_string(w, "/checkpoints/c/x", "name", "layer3.1.conv2"), 0);

        assert_int_equal(kdl_h5w_dataset_open(w, "/ints/i32", 1, ishape, KDL_STORE_I32, 0, -1, &d),
                         0);
        assert_int_equal(kdl_h5w_write_rows_i64(d, 0, 4, i32), 0);
        assert_int_equal(kdl_h5w_dataset_close(d), 0);
        assert_int_equal(kdl_h5w_dataset_open(w, "/ints/u8", 1, ishape, KDL_STORE_U8, 2, 9, &d), 0);
        assert_int_equal(kdl_h5w_write_rows_i64(d, 0, 3, u8), 0); /* row 3 left unwritten: 0 */
        assert_int_equal(kdl_h5w_dataset_close(d), 0);
        assert_int_equal(kdl_h5w_dataset_open(w, "/ints/i64", 1, ishape, KDL_STORE_I64, 0, -1, &d),
                         0);
        assert_int_equal(kdl_h5w_write_rows_i64(d, 0, 4, i64), 0);
        assert_int_equal(kdl_h5w_dataset_close(d), 0);
        assert_int_equal(kdl_h5w_dataset_open(w, "/empty", 2, eshape, KDL_STORE_F32, 8, 1, &d), 0);
        assert_int_equal(kdl_h5w_write_rows(d, 0, 0, NULL), 0);
        assert_int_equal(kdl_h5w_dataset_close(d), 0);
        assert_int_equal(kdl_h5w_close(w), 0);

        assert_int_equal(run_python(roundtrip_py, path), 0);
        free(path);
}

static int remove_tmpdir(void **state)
{
        char *cmd;

        (void) state;
        if (dir && asprintf(&cmd, "rm -rf '%s'", dir) >= 0) {
                if (system(cmd) != 0)
                        return -1;
                free(cmd);
        }
        return 0;
}

/* A dump with a float16 dataset under new groups, two rows, an attribute. */
static int write_dump(const char *path)
{
        double rows[6] = {0.25, -1.5, 3.0e-6, 7.0, 65504.0, -0.125};
        kdl_h5w *w = NULL;
        kdl_h5wds *d = NULL;
        int err, e;

        err = kdl_h5w_open(path, "teacher", "oom", &w);
        if (err < 0)
                return err;
        err = kdl_h5w_dataset_open(w, "/checkpoints/final/logits", 2, (size_t[]){2, 3},
                                   KDL_STORE_F16, 1, 4, &d);
        if (err == 0) {
                err = kdl_h5w_write_rows(d, 0, 2, rows);
                e = kdl_h5w_dataset_close(d);
                err = err ? err : e;
        }
        if (err == 0)
                err = kdl_h5w_attr_int(w, "/checkpoints/final", "step", 100);
        e = kdl_h5w_close(w);
        return err ? err : e;
}

/* A per-sample file: one dataset, its rows, an attribute, then the rename. */
static int write_out(const char *path)
{
        double rows[4] = {1.0, 2.0, 3.0, 4.0};
        kdl_h5out *o = NULL;
        int err, k;

        err = kdl_h5out_open(path, &o);
        if (err < 0)
                return err;
        k = kdl_h5out_dataset(o, "/values/kl", 2, 2, false);
        err = k < 0 ? k : kdl_h5out_write(o, k, 0, 2, rows);
        if (err == 0)
                err = kdl_h5out_attr(o, "/values", "unit", "nats");
        if (err < 0) {
                kdl_h5out_abort(o);
                return err;
        }
        return kdl_h5out_commit(o);
}

/*
 * Fail each allocation of @session in turn: it fails with -ENOMEM and a
 * message naming the file, or succeeds.
 */
static void walk_out_of_memory(int (*session)(const char *), const char *name)
{
        char *path = tmpfile_path(name);
        bool fired = true;
        long k;

        for (k = 0; fired; k++) {
                int err;

                kdl__alloc_fail_after(k);
                err = session(path);
                fired = kdl__alloc_fail_after(-1) < 0;
                if (err == 0)
                        continue;
                if (err != -ENOMEM || !fired || !strstr(kdl_errmsg(), "out of memory") ||
                    !strstr(kdl_errmsg(), path))
                        fail_msg("allocation %ld: expected -ENOMEM naming '%s', got %d (%s)", k,
                                 path, err, kdl_errmsg());
        }
        assert_true(k > 3);
        assert_int_equal(session(path), 0);
        free(path);
}

static void test_out_of_memory(void **state)
{
        (void) state;
        walk_out_of_memory(write_dump, "oom.h5");
        walk_out_of_memory(write_out, "oom-out.h5");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_store_names),
                cmocka_unit_test(test_round_f16_known_values),
                cmocka_unit_test(test_open_unwritable),
                cmocka_unit_test(test_dataset_errors),
                cmocka_unit_test(test_roundtrip_with_h5py),
                cmocka_unit_test(test_out_of_memory),
        };
        return cmocka_run_group_tests(tests, NULL, remove_tmpdir);
}
