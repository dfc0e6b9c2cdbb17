/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/error.h"
#include "datasets/synth.h"
#include "loaders/h5.h"

/*
 * The synthetic generator's options, files and failure behaviour, and its
 * dumps as the loader sees them (schema, head identity, spatial and token
 * layouts, the sample-id join).  The data are checked against numpy in
 * more depth by tests/ref/test_synth.py.
 */

static const char *dir;

static char *path_in(const char *name)
{
        char *p;

        if (!dir)
                dir = kdl_test_tmpdir();
        if (asprintf(&p, "%s/%s", dir, name) < 0)
                fail_msg("asprintf");
        return p;
}

/* Whole file into memory; *@ret_len its size. */
static char *slurp(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "rb");
        char *buf;
        long len;

        assert_non_null(f);
        assert_int_equal(fseek(f, 0, SEEK_END), 0);
        len = ftell(f);
        assert_true(len > 0);
        rewind(f);
        buf = malloc((size_t) len);
        assert_non_null(buf);
        assert_int_equal(fread(buf, 1, (size_t) len, f), (size_t) len);
        fclose(f);
        *ret_len = (size_t) len;
        return buf;
}

static bool exists(const char *path)
{
        struct stat st;

        return stat(path, &st) == 0;
}

/* Number of entries of directory @d other than . and .. */
static size_t entries(const char *d)
{
        DIR *dd = opendir(d);
        struct dirent *e;
        size_t n = 0;

        assert_non_null(dd);
        while ((e = readdir(dd)))
                if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                        n++;
        closedir(dd);
        return n;
}

static void small_opts(struct kdl_synth_opts *o)
{
        kdl_synth_opts_init(o);
        o->n = 123;
        o->c = 4;
        o->teacher_nlayers = 2;
        o->teacher_widths[0] = 9;
        o->teacher_widths[1] = 17;
        o->student_nlayers = 2;
        o->student_widths[0] = 5;
        o->student_widths[1] = 20;
        o->chunk_rows = 50;
        o->ncheckpoints = 3;
}

static void test_defaults_are_valid(void **state)
{
        struct kdl_synth_opts o;

        (void) state;
        kdl_synth_opts_init(&o);
        assert_int_equal(kdl_synth_check(&o), 0);
        assert_int_equal(o.n, 2000);
        assert_int_equal(o.c, 10);
        assert_int_equal(o.teacher_nlayers, 3);
        assert_int_equal(o.teacher_widths[2], 256);
        assert_int_equal(o.dtype, KDL_STORE_F32);
        assert_int_equal(o.gzip, -1);
        assert_int_equal(o.ncheckpoints, 4);
        assert_true(o.sample_ids);
        assert_true(o.gradients);
}

/* Each case breaks one option of valid small options. */
static void test_check_rejects_bad_options(void **state)
{
        struct kdl_synth_opts o;
        enum { NCASES = 26 };

        (void) state;
        for (int i = 0; i < NCASES; i++) {
                small_opts(&o);
                switch (i) {
                case 0:
                        o.n = 0;
                        break;
                case 1:
                        o.c = 1;
                        break;
                case 2:
                        o.c = KDL_SYNTH_MAX_WIDTH + 1;
                        break;
                case 3:
                        o.teacher_nlayers = 0;
                        break;
                case 4:
                        o.teacher_nlayers = KDL_SYNTH_MAX_LAYERS + 1;
                        break;
                case 5:
                        o.student_nlayers = 0;
                        break;
                case 6:
                        o.teacher_widths[1] = 0;
                        break;
                case 7:
                        o.student_widths[0] = KDL_SYNTH_MAX_WIDTH + 1;
                        break;
                case 8:
                        o.planted_layer = 3;
                        o.planted_rank = 1;
                        break;
                case 9:
                        o.planted_layer = 1;
                        o.planted_rank = 10;
                        break;
                case 10:
                        o.planted_layer = 2;
                        o.planted_rank = 0;
                        break;
                case 11:
                        o.dtype = KDL_STORE_I64;
                        break;
                case 12:
                        o.gzip = 10;
                        break;
                case 13:
                        o.gzip = 1;
                        o.chunk_rows = 0;
                        break;
                case 14:
                        o.teacher_nlayers = 1;
                        o.spatial = true;
                        break;
                case 15:
                        o.spatial = true;
                        o.tokens = true;
                        break; /* needs 3 layers */
                case 16:
                        o.spatial = true;
                        o.spatial_h = 0;
                        break;
                case 17:
                        o.tokens = true;
                        o.tokens_t = 0;
                        break;
                case 18:
                        o.permute_student = true;
                        o.sample_ids = false;
                        break;
                case 19:
                        o.ncheckpoints = 0;
                        break;
                case 20:
                        o.ncheckpoints = KDL_SYNTH_MAX_CHECKPOINTS + 1;
                        break;
                case 21:
                        o.superclasses = 5;
                        break;
                case 22:
                        o.mix_final = 1.5;
                        break;
                case 23:
                        o.noise = -1.0;
                        break;
                case 24:
                        o.sep_last = 0.0;
                        break;
                case 25:
                        o.block_rows = ((size_t) 1 << 16) + 1;
                        break;
                }
                kdl_error_clear();
                if (kdl_synth_check(&o) != -KDL_EUSAGE)
                        fail_msg("case %d accepted", i);
                assert_true(kdl_errmsg()[0] != '\0');
        }
        small_opts(&o);
        o.spatial = true;
        o.teacher_nlayers = 3;
        o.teacher_widths[2] = 4;
        o.tokens = true;
        assert_int_equal(kdl_synth_check(&o), 0);
}

static void test_parse_widths(void **state)
{
        size_t w[KDL_SYNTH_MAX_LAYERS] = {7}, n = 99;
        static const char *const bad[] = {
                "",
                ",",
                "8,",
                ",8",
                "8,,9",
                "0",
                "-4",
                "+4",
                " 4",
                "4 ",
                "4x",
                "1048577",
                "99999999999999999999999",
                "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17",
        };

        (void) state;
        assert_int_equal(kdl_synth_parse_widths("64,128,256", w, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(w[0], 64);
        assert_int_equal(w[2], 256);
        assert_int_equal(kdl_synth_parse_widths("1048576", w, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(kdl_synth_parse_widths("1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", w, &n),
                         0);
        assert_int_equal(n, 16);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                w[0] = 7;
                n = 99;
                if (kdl_synth_parse_widths(bad[i], w, &n) != -KDL_EUSAGE)
                        fail_msg("'%s' accepted", bad[i]);
                assert_int_equal(n, 99); /* outputs untouched */
                assert_int_equal(w[0], 7);
        }
}

static void test_parse_planted(void **state)
{
        size_t layer = 5, rank = 6;
        static const char *const bad[] = {"",    "2",     "2:",  ":3",   "0:3",
                                          "2:0", "2:3:4", "a:b", "2:-3", "-2:3"};

        (void) state;
        assert_int_equal(kdl_synth_parse_planted("2:13", &layer, &rank), 0);
        assert_int_equal(layer, 2);
        assert_int_equal(rank, 13);
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                layer = 5;
                rank = 6;
                if (kdl_synth_parse_planted(bad[i], &layer, &rank) != -KDL_EUSAGE)
                        fail_msg("'%s' accepted", bad[i]);
                assert_int_equal(layer, 5);
                assert_int_equal(rank, 6);
        }
}

static void test_same_seed_same_bytes(void **state)
{
        struct kdl_synth_opts o;
        char *t1 = path_in("t1.h5"), *s1 = path_in("s1.h5"), *t2 = path_in("t2.h5");
        char *s2 = path_in("s2.h5"), *t3 = path_in("t3.h5"), *s3 = path_in("s3.h5");
        char *a, *b;
        size_t la, lb;

        (void) state;
        small_opts(&o);
        o.seed = 77;
        o.dtype = KDL_STORE_F16;
        o.gzip = 3;
        o.spatial = true;
        o.permute_student = true;
        assert_int_equal(kdl_synth_write(&o, t1, s1), 0);
        assert_int_equal(kdl_synth_write(&o, t2, s2), 0);
        o.seed = 78;
        assert_int_equal(kdl_synth_write(&o, t3, s3), 0);

        a = slurp(t1, &la);
        b = slurp(t2, &lb);
        assert_true(la == lb && memcmp(a, b, la) == 0);
        free(b);
        b = slurp(t3, &lb);
        assert_false(la == lb && memcmp(a, b, la) == 0);
        free(b);
        free(a);
        a = slurp(s1, &la);
        b = slurp(s2, &lb);
        assert_true(la == lb && memcmp(a, b, la) == 0);
        free(b);
        free(a);
        free(s3);
        free(t3);
        free(s2);
        free(t2);
        free(s1);
        free(t1);
}

static void test_all_layouts_write(void **state)
{
        struct kdl_synth_opts o;
        char *sub = path_in("layouts"), *t, *s;

        (void) state;
        assert_int_equal(mkdir(sub, 0700), 0);
        if (asprintf(&t, "%s/t.h5", sub) < 0 || asprintf(&s, "%s/s.h5", sub) < 0)
                fail_msg("asprintf");
        for (int k = 0; k < 6; k++) {
                small_opts(&o);
                o.teacher_nlayers = 3;
                o.teacher_widths[2] = 6;
                o.spatial = k & 1;
                o.tokens = k & 2;
                o.flat_teacher = k == 4;
                o.sample_ids = k != 4;
                o.dtype = (enum kdl_store)(k % 3);
                o.chunk_rows = k == 5 ? 0 : 16;
                o.planted_layer = k == 5 ? 3 : 0;
                o.planted_rank = 2;
                o.block_rows = k == 3 ? 1 : 0;
                o.ncheckpoints = (size_t) k + 1;
                assert_int_equal(kdl_synth_write(&o, t, s), 0);
                assert_true(exists(t) && exists(s));
                assert_int_equal(entries(sub), 2); /* no temporary files left */
        }
        free(s);
        free(t);
        free(sub);
}

static void test_failures_leave_nothing(void **state)
{
        struct kdl_synth_opts o;
        char *sub = path_in("fail"), *t = NULL, *s = NULL, *missing = NULL, *isdir = NULL, *buf;
        FILE *f;
        size_t len;

        (void) state;
        assert_int_equal(mkdir(sub, 0700), 0);
        if (asprintf(&t, "%s/t.h5", sub) < 0 || asprintf(&s, "%s/s.h5", sub) < 0 ||
            asprintf(&missing, "%s/no/such/s.h5", sub) < 0 || asprintf(&isdir, "%s/d", sub) < 0)
                fail_msg("asprintf");
        small_opts(&o);

        /* bad options: nothing created */
        o.c = 0;
        assert_int_equal(kdl_synth_write(&o, t, s), -KDL_EUSAGE);
        assert_int_equal(entries(sub), 0);
        small_opts(&o);
        assert_int_equal(kdl_synth_write(&o, t, t), -KDL_EUSAGE);
        assert_int_equal(entries(sub), 0);

        /* the student cannot be created: the finished teacher is removed too */
        assert_int_equal(kdl_synth_write(&o, t, missing), -ENOENT);
        assert_non_null(strstr(kdl_errmsg(), "no/such/s.h5"));
        assert_int_equal(entries(sub), 0);
        assert_int_equal(kdl_synth_write(&o, missing, s), -ENOENT);
        assert_int_equal(entries(sub), 0);

        /* a target is a directory: refused before anything is written */
        assert_int_equal(mkdir(isdir, 0700), 0);
        assert_int_equal(kdl_synth_write(&o, t, isdir), -EISDIR);
        assert_non_null(strstr(kdl_errmsg(), isdir));
        assert_int_equal(kdl_synth_write(&o, isdir, s), -EISDIR);
        assert_int_equal(entries(sub), 1);

        /* an existing file survives a failed run */
        f = fopen(t, "w");
        assert_non_null(f);
        fputs("precious", f);
        fclose(f);
        assert_int_equal(kdl_synth_write(&o, t, missing), -ENOENT);
        assert_int_equal(kdl_synth_write(&o, t, isdir), -EISDIR);
        buf = slurp(t, &len);
        assert_true(len == 8 && memcmp(buf, "precious", 8) == 0);
        free(buf);
        assert_int_equal(entries(sub), 2);

        free(isdir);
        free(missing);
        free(s);
        free(t);
        free(sub);
}

/* The whole of dataset @ds through the loader's block reader, in blocks of
 * 37 rows (not a divisor of anything); @rows maps logical to stored rows. */
static double *read_all(kdl_h5file *f, const kdl_dsinfo *ds, const size_t *rows, size_t *ret_n,
                        size_t *ret_cols)
{
        kdl_h5reader *r = NULL;
        size_t n, cols;
        double *x;

        assert_non_null(ds);
        assert_int_equal(kdl_h5_reader_open(f, ds, KDL_SPATIAL_AVG, &r), 0);
        n = kdl_h5_reader_rows(r);
        cols = kdl_h5_reader_cols(r);
        if (rows)
                kdl_h5_reader_set_rows(r, rows, n);
        x = malloc(n * cols * sizeof(*x));
        assert_non_null(x);
        for (size_t r0 = 0; r0 < n; r0 += 37)
                assert_int_equal(
                        kdl_h5_reader_read(r, r0, r0 + 37 < n ? r0 + 37 : n, x + r0 * cols), 0);
        kdl_h5_reader_close(r);
        *ret_n = n;
        *ret_cols = cols;
        return x;
}

static kdl_h5file *open_checked(const char *path)
{
        kdl_h5file *f = NULL;

        assert_int_equal(kdl_h5_open(path, &f), 0);
        if (kdl_h5_check(f) != 0)
                fail_msg("%s: %s", path, kdl_errmsg());
        return f;
}

static void test_loader_reads_the_planted_structure(void **state)
{
        struct kdl_synth_opts o;
        char *t1 = path_in("lt1.h5"), *s1 = path_in("ls1.h5"), *t2 = path_in("lt2.h5");
        char *s2 = path_in("ls2.h5");
        kdl_h5file *ft1, *fs1, *ft2, *fs2;
        const kdl_dump *d;
        const kdl_checkpoint *ck, *ck2;
        kdl_pair *pair = NULL;
        double *a, *b, *h, *w, *bias, *z;
        size_t n, cols, n2, cols2, nw, cw, nb, cb;
        int64_t *lt, *ls;

        (void) state;
        small_opts(&o);
        o.teacher_nlayers = 3;
        o.teacher_widths[2] = 11;
        o.dtype = KDL_STORE_F64;
        o.chunk_rows = 40;
        o.gzip = 2;
        assert_int_equal(kdl_synth_write(&o, t1, s1), 0); /* plain layout, student in order */
        o.spatial = true;
        o.tokens = true;
        o.permute_student = true;
        assert_int_equal(kdl_synth_write(&o, t2, s2), 0);
        ft1 = open_checked(t1);
        fs1 = open_checked(s1);
        ft2 = open_checked(t2);
        fs2 = open_checked(s2);

        /* catalogue */
        d = kdl_h5_dump(ft2);
        assert_int_equal(d->format, 1);
        assert_string_equal(d->role, "teacher");
        assert_int_equal(d->n, 123);
        assert_int_equal(d->c, 4);
        assert_int_equal(d->ncheckpoints, 1);
        ck = &d->checkpoints[0];
        assert_string_equal(ck->name, "final");
        assert_int_equal(ck->nlayers, 3);
        assert_string_equal(ck->layers[0].name, "layer1");
        assert_int_equal(ck->layers[0].feature.ndim, 4);
        assert_int_equal(ck->layers[1].feature.ndim, 3);
        assert_int_equal(ck->layers[2].feature.gzip, 2);
        assert_string_equal(ck->head_input, "layer3");
        assert_non_null(ck->layers[2].gradient);
        d = kdl_h5_dump(fs2);
        assert_string_equal(d->role, "student");
        assert_int_equal(d->ncheckpoints, 3);
        assert_string_equal(d->checkpoints[0].name, "init");
        assert_string_equal(d->checkpoints[1].name, "middle");
        assert_string_equal(d->checkpoints[2].name, "final");
        assert_true(d->checkpoints[0].step < d->checkpoints[1].step &&
                    d->checkpoints[1].step < d->checkpoints[2].step);

        /* spatial and token layers average back to the 2-D features */
        ck2 = &kdl_h5_dump(ft1)->checkpoints[0];
        for (size_t l = 0; l < 2; l++) {
                a = read_all(ft2, &ck->layers[l].feature, NULL, &n, &cols);
                b = read_all(ft1, &ck2->layers[l].feature, NULL, &n2, &cols2);
                assert_int_equal(n, n2);
                assert_int_equal(cols, cols2);
                for (size_t i = 0; i < n * cols; i++)
                        assert_close(a[i], b[i], 0.0, 1e-12);
                free(b);
                free(a);
        }

        /* logits = W h + b from the stored head input, to float64 rounding */
        h = read_all(ft2, &ck->layers[2].feature, NULL, &n, &cols);
        w = read_all(ft2, ck->head_weight, NULL, &nw, &cw);
        bias = read_all(ft2, ck->head_bias, NULL, &nb, &cb);
        z = read_all(ft2, ck->logits, NULL, &n2, &cols2);
        assert_int_equal(cols, cw);
        assert_int_equal(nw, 4);
        assert_int_equal(nb * cb, 4);
        for (size_t i = 0; i < n; i++) {
                for (size_t c = 0; c < nw; c++) {
                        double s = bias[c];

                        for (size_t k = 0; k < cols; k++)
                                s += h[i * cols + k] * w[c * cols + k];
                        assert_close(z[i * nw + c], s, 1e-13, 1e-13);
                }
        }
        free(z);
        free(bias);
        free(w);
        free(h);

        /* the permuted student joins on /sample_ids and then matches the
         * student stored in order, row for row */
        assert_int_equal(kdl_h5_pair(ft2, fs2, &pair), 0);
        assert_true(pair->joined);
        assert_non_null(pair->student_rows);
        assert_int_equal(kdl_h5_read_labels(ft2, &lt), 0);
        assert_int_equal(kdl_h5_read_labels(fs2, &ls), 0);
        for (size_t i = 0; i < pair->n; i++)
                assert_int_equal(ls[pair->student_rows[i]], lt[i]);
        ck = &kdl_h5_dump(fs2)->checkpoints[2];
        ck2 = &kdl_h5_dump(fs1)->checkpoints[2];
        a = read_all(fs2, &ck->layers[1].feature, pair->student_rows, &n, &cols);
        b = read_all(fs1, &ck2->layers[1].feature, NULL, &n2, &cols2);
        assert_int_equal(n * cols, n2 * cols2);
        for (size_t i = 0; i < n * cols; i++)
                assert_close(a[i], b[i], 1e-12, 1e-13);
        free(b);
        free(a);

        free(ls);
        free(lt);
        kdl_pair_free(pair);
        kdl_h5_close(fs2);
        kdl_h5_close(ft2);
        kdl_h5_close(fs1);
        kdl_h5_close(ft1);
        free(s2);
        free(t2);
        free(s1);
        free(t1);
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

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults_are_valid),
                cmocka_unit_test(test_check_rejects_bad_options),
                cmocka_unit_test(test_parse_widths),
                cmocka_unit_test(test_parse_planted),
                cmocka_unit_test(test_same_seed_same_bytes),
                cmocka_unit_test(test_all_layouts_write),
                cmocka_unit_test(test_failures_leave_nothing),
                cmocka_unit_test(test_loader_reads_the_planted_structure),
        };
        return cmocka_run_group_tests(tests, NULL, remove_tmpdir);
}
