/* SPDX-License-Identifier: MIT */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/kdl-test.h"
#include "metrics/base/error.h"
#include "loaders/h5.h"
#include "loaders/h5write.h"
#include "loaders/stream.h"

/*
 * The stream's pairing check: the teacher's and the student's /labels are
 * compared row by row in the first pass, by row order or through the
 * /sample_ids join (strict or inner), and the first difference is an error
 * naming the student file, the row, the id when joined, and both labels.
 * The dumps are written here: sample k has label k mod 3, id 100 + k and
 * logits (k, k / 2, -k), so every row read says which sample it is.
 */

#define N 50
#define C 3

static const char *dir;

static int64_t label_of(size_t k)
{
        return (int64_t) (k % C);
}

struct dump {
        const char *name, *role;
        size_t n;
        const size_t *keys; /* the sample stored at each row; NULL: row i holds sample i */
        bool labels, ids;
        size_t bad_row; /* a row with the next label instead; N for none */
};

static size_t key(const struct dump *d, size_t i)
{
        return d->keys ? d->keys[i] : i;
}

static void write_i64(kdl_h5w *w, const char *path, size_t n, const int64_t *v)
{
        kdl_h5wds *ds = NULL;

        assert_int_equal(kdl_h5w_dataset_open(w, path, 1, (size_t[]){n}, KDL_STORE_I64, 0, -1, &ds),
                         0);
        assert_int_equal(kdl_h5w_write_rows_i64(ds, 0, n, v), 0);
        assert_int_equal(kdl_h5w_dataset_close(ds), 0);
}

/* Write @d into the test directory; returns its path (caller frees). */
static char *write_dump(const struct dump *d)
{
        int64_t y[N], id[N];
        double z[N * C];
        kdl_h5wds *ds = NULL;
        kdl_h5w *w = NULL;
        char *path;

        if (!dir)
                dir = kdl_test_tmpdir();
        assert_true(asprintf(&path, "%s/%s", dir, d->name) > 0);
        for (size_t i = 0; i < d->n; i++) {
                size_t k = key(d, i);

                y[i] = i == d->bad_row ? (label_of(k) + 1) % C : label_of(k);
                id[i] = 100 + (int64_t) k;
                z[i * C] = (double) k;
                z[i * C + 1] = 0.5 * (double) k;
                z[i * C + 2] = -(double) k;
        }
        assert_int_equal(kdl_h5w_open(path, d->role, d->role, &w), 0);
        if (d->labels)
                write_i64(w, "/labels", d->n, y);
        if (d->ids)
                write_i64(w, "/sample_ids", d->n, id);
        assert_int_equal(kdl_h5w_dataset_open(w, "/checkpoints/final/logits", 2,
                                              (size_t[]){d->n, C}, KDL_STORE_F64, 0, -1, &ds),
                         0);
        assert_int_equal(kdl_h5w_write_rows(ds, 0, d->n, z), 0);
        assert_int_equal(kdl_h5w_dataset_close(ds), 0);
        assert_int_equal(kdl_h5w_attr_int(w, "/checkpoints/final", "step", 1), 0);
        assert_int_equal(kdl_h5w_close(w), 0);
        return path;
}

static kdl_h5file *open_dump(const struct dump *d)
{
        kdl_h5file *f = NULL;
        char *path = write_dump(d);

        assert_int_equal(kdl_h5_open(path, &f), 0);
        free(path);
        return f;
}

/* A permutation of 0..N-1: the first 10 samples in place, the others moved
 * (stride 17, coprime with 40). */
static const size_t *shuffled(void)
{
        static size_t p[N];

        for (size_t i = 0; i < N; i++)
                p[i] = i < 10 ? i : 10 + (17 * (i - 10) + 3) % (N - 10);
        return p;
}

static const kdl_dsinfo *logits(kdl_h5file *f)
{
        return kdl_h5_checkpoint(f, "final")->logits;
}

/* Read every block of @s, checking both logits blocks hold the same sample. */
static size_t read_all(kdl_stream *s, int zt, int zs)
{
        size_t rows = 0;
        int r;

        while ((r = kdl_stream_next(s)) > 0) {
                kdl_tensor a = kdl_stream_block(s, zt), b = kdl_stream_block(s, zs);

                for (size_t i = 0; i < kdl_stream_rows(s); i++)
                        for (size_t j = 0; j < C; j++)
                                assert_close(KDL_AT2(&a, i, j), KDL_AT2(&b, i, j), 0.0, 0.0);
                rows += kdl_stream_rows(s);
        }
        assert_int_equal(r, 0);
        return rows;
}

/* A teacher and a student dump written, opened and paired, and a stream over the pair. */
struct paired {
        kdl_h5file *t, *s;
        kdl_pair *p;
        kdl_stream *st;
};

static void pair_open(const struct dump *td, const struct dump *sd, size_t block_rows,
                      struct paired *c)
{
        c->t = open_dump(td);
        c->s = open_dump(sd);
        c->p = NULL;
        c->st = NULL;
        assert_int_equal(kdl_h5_pair_join(c->t, c->s, true, &c->p), 0);
        assert_int_equal(kdl_stream_new(c->p->n, c->p,
                                        &(struct kdl_stream_opts){.block_rows = block_rows},
                                        &c->st),
                         0);
}

static void pair_close(struct paired *c)
{
        kdl_stream_free(c->st);
        kdl_pair_free(c->p);
        kdl_h5_close(c->s);
        kdl_h5_close(c->t);
}

/* Read to the end of a pass; returns the blocks handed out, *@ret the last result. */
static size_t drain(kdl_stream *s, int *ret)
{
        size_t blocks = 0;

        while ((*ret = kdl_stream_next(s)) > 0)
                blocks++;
        return blocks;
}

static void test_joined_rows_pass_and_labels_are_read_once(void **state)
{
        struct dump td = {"t.h5", "teacher", N, NULL, true, true, N};
        struct dump sd = {"s.h5", "student", N, shuffled(), true, true, N};
        struct paired c;
        int zt, zs;

        (void) state;
        pair_open(&td, &sd, 7, &c);
        assert_true(c.p->joined && c.p->student_rows && !c.p->teacher_rows);
        zt = kdl_stream_add(c.st, c.t, logits(c.t), KDL_SPATIAL_AVG, false);
        zs = kdl_stream_add(c.st, c.s, logits(c.s), KDL_SPATIAL_AVG, true);
        assert_int_equal(read_all(c.st, zt, zs), N);
        assert_int_equal(kdl_stream_count(c.st), 2); /* the check's labels are not datasets */
        assert_int_equal(kdl_stream_values_read(c.st), 2 * N * C + 2 * N);
        kdl_stream_rewind(c.st);
        assert_int_equal(read_all(c.st, zt, zs), N);
        assert_int_equal(kdl_stream_values_read(c.st), 4 * N * C + 2 * N); /* checked once */
        pair_close(&c);
}

static void test_rows_in_another_order_are_refused(void **state)
{
        struct dump td = {"t-noids.h5", "teacher", N, NULL, true, false, N};
        struct dump sd = {"s-perm.h5", "student", N, shuffled(), true, false, N};
        size_t first = N;
        struct paired c;
        char want[512];
        int r;

        (void) state;
        for (size_t i = 0; i < N && first == N; i++)
                if (label_of(shuffled()[i]) != label_of(i))
                        first = i;
        assert_true(first > 7 && first < N); /* a block passes first */
        pair_open(&td, &sd, 7, &c);
        assert_false(c.p->joined); /* no ids: by row order, whatever the join asked */
        assert_true(kdl_stream_add(c.st, c.s, logits(c.s), KDL_SPATIAL_AVG, true) >= 0);
        /* The block holding the row is not handed out. */
        assert_int_equal(drain(c.st, &r), first / 7);
        assert_int_equal(r, -KDL_EMISMATCH);
        snprintf(want, sizeof(want),
                 "'%s': /labels: row %zu has label %lld where the teacher '%s' has %lld",
                 kdl_h5_dump(c.s)->path, first, (long long) label_of(shuffled()[first]),
                 kdl_h5_dump(c.t)->path, (long long) label_of(first));
        if (!strstr(kdl_errmsg(), want))
                fail_msg("expected '%s' in '%s'", want, kdl_errmsg());
        pair_close(&c);
}

static void test_joined_label_difference_names_the_id(void **state)
{
        struct dump td = {"t.h5", "teacher", N, NULL, true, true, N};
        struct dump sd = {"s-bad.h5", "student", N, shuffled(), true, true, 11};
        size_t k = shuffled()[11]; /* the sample at the student's row 11, teacher row k */
        struct paired c;
        char want[512];
        int r;

        (void) state;
        pair_open(&td, &sd, 0, &c); /* no dataset added: the check alone */
        drain(c.st, &r);
        assert_int_equal(r, -KDL_EMISMATCH);
        snprintf(want, sizeof(want),
                 "'%s': /labels: row 11 (sample id %zu) has label %lld where the teacher '%s' has "
                 "%lld (row %zu) for that id",
                 kdl_h5_dump(c.s)->path, 100 + k, (long long) (label_of(k) + 1) % C,
                 kdl_h5_dump(c.t)->path, (long long) label_of(k), k);
        if (strcmp(kdl_errmsg(), want) != 0)
                fail_msg("expected '%s', found '%s'", want, kdl_errmsg());
        pair_close(&c);
}

static void test_without_labels_nothing_is_checked(void **state)
{
        struct dump td = {"t-noids.h5", "teacher", N, NULL, true, false, N};
        struct dump sd = {"s-nolabels.h5", "student", N, shuffled(), false, false, N};
        struct paired c;
        int r;

        (void) state;
        pair_open(&td, &sd, 7, &c);
        assert_true(kdl_stream_add(c.st, c.s, logits(c.s), KDL_SPATIAL_AVG, true) >= 0);
        assert_int_equal(drain(c.st, &r), (N + 6) / 7);
        assert_int_equal(r, 0);
        assert_int_equal(kdl_stream_values_read(c.st), N * C); /* no labels read */
        pair_close(&c);
}

static void test_inner_join_reads_the_shared_rows(void **state)
{
        /* The student holds the samples 5, 10, ... 45 in another order: 9 of the 50. */
        static const size_t sub[] = {45, 10, 30, 5, 40, 20, 35, 15, 25};
        struct dump td = {"t.h5", "teacher", N, NULL, true, true, N};
        struct dump sd = {"s-sub.h5", "student", 9, sub, true, true, N};
        kdl_pair *strict = (kdl_pair *) 0x1;
        struct paired c;
        size_t seen = 0;
        int zt, zs, r;

        (void) state;
        pair_open(&td, &sd, 4, &c);
        assert_true(c.p->joined && c.p->teacher_rows && c.p->student_rows);
        assert_int_equal(c.p->n, 9);
        assert_int_equal(kdl_h5_pair(c.t, c.s, &strict), -KDL_EMISMATCH);
        assert_non_null(strstr(kdl_errmsg(), "41 samples differ (41 of the teacher's are not in "
                                             "the student, 0 of the student's not in the "
                                             "teacher); --join inner analyses the 9 they share"));
        assert_true(strict == (kdl_pair *) 0x1); /* never clobbered */
        zt = kdl_stream_add(c.st, c.t, logits(c.t), KDL_SPATIAL_AVG, false);
        zs = kdl_stream_add(c.st, c.s, logits(c.s), KDL_SPATIAL_AVG, true);
        while ((r = kdl_stream_next(c.st)) > 0) {
                kdl_tensor a = kdl_stream_block(c.st, zt), b = kdl_stream_block(c.st, zs);

                for (size_t i = 0; i < kdl_stream_rows(c.st); i++, seen++) {
                        /* Teacher row order: samples 5, 10, ... 45. */
                        assert_close(KDL_AT2(&a, i, 0), 5.0 * (double) (seen + 1), 0.0, 0.0);
                        assert_close(KDL_AT2(&b, i, 0), 5.0 * (double) (seen + 1), 0.0, 0.0);
                }
        }
        assert_int_equal(r, 0);
        assert_int_equal(seen, 9);
        pair_close(&c);
}

static void test_inner_join_needs_a_shared_id(void **state)
{
        static const size_t none[] = {60, 61, 62};
        struct dump td = {"t.h5", "teacher", N, NULL, true, true, N};
        struct dump sd = {"s-none.h5", "student", 3, none, true, true, N};
        kdl_h5file *t = open_dump(&td), *s = open_dump(&sd);
        kdl_pair *p = (kdl_pair *) 0x1;

        (void) state;
        assert_int_equal(kdl_h5_pair_join(t, s, true, &p), -KDL_EMISMATCH);
        assert_non_null(strstr(kdl_errmsg(), "no id in common (50 in the teacher, 3 in the "
                                             "student)"));
        assert_true(p == (kdl_pair *) 0x1); /* never clobbered */
        kdl_h5_close(s);
        kdl_h5_close(t);
}

/* The stream's blocks hold what its budget allows by the cost it states beforehand. */
static void test_cost_is_what_the_blocks_take(void **state)
{
        struct dump td = {"t.h5", "teacher", N, NULL, true, true, N};
        struct dump sd = {"s.h5", "student", N, shuffled(), true, true, N};
        /* Per row: the samples and labels (16); the check's teacher labels (8 + 8) and
         * student labels through the row map (8 + 8 + 8 + 16); the teacher's logits (3 x 8)
         * and the student's through the row map (3 x 8 + 3 x 8 + 16). */
        const size_t row = 16 + 16 + 40 + 24 + 64;
        struct kdl_stream_opts o = {.budget_bytes = 7 * row + row - 1};
        struct kdl_stream_cost c;
        struct paired p;
        int r;

        (void) state;
        pair_open(&td, &sd, 7, &p);
        kdl_stream_free(p.st);
        assert_int_equal(kdl_stream_new(p.p->n, p.p, &o, &p.st), 0);
        kdl_stream_cost_init(&c, p.p);
        kdl_stream_cost_add(&c, logits(p.t), KDL_SPATIAL_AVG, false);
        kdl_stream_cost_add(&c, logits(p.s), KDL_SPATIAL_AVG, true);
        assert_int_equal(c.row_bytes, row);
        assert_int_equal(kdl_stream_cost_rows(&c, N, &o), 7);
        assert_int_equal(kdl_stream_cost_bytes(&c, N, &o), 7 * row + c.fixed_bytes);
        assert_int_equal(kdl_stream_cost_rows(&c, 5, &o), 5); /* never more than the samples */
        assert_int_equal(kdl_stream_cost_rows(&c, N, &(struct kdl_stream_opts){.budget_bytes = 1}),
                         1); /* at least one row */
        o.skip_nonfinite = true;
        assert_int_equal(kdl_stream_cost_bytes(&c, N, &o), 7 * row + c.fixed_bytes + N / 8 + 1);
        assert_true(kdl_stream_add(p.st, p.t, logits(p.t), KDL_SPATIAL_AVG, false) >= 0);
        assert_true(kdl_stream_add(p.st, p.s, logits(p.s), KDL_SPATIAL_AVG, true) >= 0);
        assert_int_equal(kdl_stream_next(p.st), 1);
        assert_int_equal(kdl_stream_rows(p.st), 7);
        assert_int_equal(drain(p.st, &r), (N - 7 + 6) / 7);
        assert_int_equal(r, 0);
        pair_close(&p);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_joined_rows_pass_and_labels_are_read_once),
                cmocka_unit_test(test_rows_in_another_order_are_refused),
                cmocka_unit_test(test_joined_label_difference_names_the_id),
                cmocka_unit_test(test_without_labels_nothing_is_checked),
                cmocka_unit_test(test_inner_join_reads_the_shared_rows),
                cmocka_unit_test(test_inner_join_needs_a_shared_id),
                cmocka_unit_test(test_cost_is_what_the_blocks_take),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
