/* SPDX-License-Identifier: MIT */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/lib/kdl-test.h"
#include "kdl-config.h"
#include "reports/table.h"

static kdl_table *sample_table(void)
{
        kdl_table *t = NULL;

        assert_int_equal(kdl_table_new("kl", "KL by source", &t), 0);
        assert_int_equal(kdl_table_add_row(t), 0);
        assert_int_equal(kdl_table_put_str(t, "source", "logit_fisher"), 0);
        assert_int_equal(kdl_table_put_real(t, "value", 0.1234567891234), 0);
        assert_int_equal(kdl_table_put_int(t, "dim", 10), 0);
        assert_int_equal(kdl_table_add_row(t), 1);
        assert_int_equal(kdl_table_put_str(t, "source", "a_b, \"c\""), 0);
        assert_int_equal(kdl_table_put_real(t, "value", NAN), 0);
        assert_int_equal(kdl_table_put_bool(t, "ok", true), 0);
        return t;
}

static char *render(const kdl_table *t, enum kdl_format f)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);

        assert_int_equal(kdl_table_write(t, m, f), 0);
        fclose(m);
        return buf;
}

static void test_terminal(void **state)
{
        kdl_table *t = sample_table();
        char *s = render(t, KDL_FORMAT_TABLE);

        (void) state;
        assert_string_equal(s, "KL by source\n"
                               "source           value  dim  ok\n"
                               "--------------------------------\n"
                               "logit_fisher  0.123457   10  -\n"
                               "a_b, \"c\"           nan    -  yes\n");
        free(s);
        kdl_table_free(t);
}

static void test_markdown(void **state)
{
        kdl_table *t = sample_table();
        char *s = render(t, KDL_FORMAT_MD);

        (void) state;
        assert_string_equal(s, "### KL by source\n\n"
                               "| source       | value    | dim | ok  |\n"
                               "|:-------------|---------:|----:|:----|\n"
                               "| logit_fisher | 0.123457 |  10 | -   |\n"
                               "| a_b, \"c\"     |      nan |   - | yes |\n");
        free(s);
        kdl_table_free(t);
}

static void test_csv_is_exact_and_quoted(void **state)
{
        kdl_table *t = sample_table();
        char *s = render(t, KDL_FORMAT_CSV);

        (void) state;
        assert_string_equal(s, "source,value,dim,ok\n"
                               "logit_fisher,0.1234567891234,10,\n"
                               "\"a_b, \"\"c\"\"\",nan,,true\n");
        free(s);
        kdl_table_free(t);
}

static void test_tex_booktabs_escapes(void **state)
{
        kdl_table *t = sample_table();
        char *s = render(t, KDL_FORMAT_TEX);

        (void) state;
        assert_string_equal(s, "% KL by source (kdlens " KDL_VERSION
                               "; needs \\usepackage{booktabs})\n"
                               "\\begin{tabular}{lrrl}\n\\toprule\n"
                               "source & value & dim & ok \\\\\n\\midrule\n"
                               "logit\\_fisher & 0.123457 & 10 & - \\\\\n"
                               "a\\_b, \"c\" & nan & - & yes \\\\\n"
                               "\\bottomrule\n\\end{tabular}\n");
        free(s);
        kdl_table_free(t);
}

static void test_json_document(void **state)
{
        kdl_doc *d = NULL;
        char *buf = NULL;
        size_t len = 0;
        FILE *m;

        (void) state;
        assert_int_equal(kdl_doc_new("kl", &d), 0);
        assert_int_equal(kdl_doc_add_input(d, "t.h5"), 0);
        assert_int_equal(kdl_doc_add_note(d, "seed %d", 3), 0);
        assert_int_equal(kdl_doc_add_table(d, sample_table()), 0);
        m = open_memstream(&buf, &len);
        assert_int_equal(kdl_doc_write(d, m, KDL_FORMAT_JSON), 0);
        fclose(m);
        assert_string_equal(buf, "{\n  \"kdlens\": \"" KDL_VERSION "\",\n"
                                 "  \"command\": \"kl\",\n"
                                 "  \"inputs\": [\"t.h5\"],\n"
                                 "  \"notes\": [\"seed 3\"],\n"
                                 "  \"results\": [\n"
                                 "    {\"table\": \"kl\", \"source\": \"logit_fisher\", "
                                 "\"value\": 0.1234567891234, \"dim\": 10},\n"
                                 "    {\"table\": \"kl\", \"source\": \"a_b, \\\"c\\\"\", "
                                 "\"value\": null, \"ok\": true}\n"
                                 "  ]\n}\n");
        free(buf);
        kdl_doc_free(d);
}

/* A document "kl" of two tables, kl and other, with the input @input. */
static kdl_doc *two_tables(const char *input)
{
        kdl_doc *d = NULL;
        kdl_table *t = NULL;

        assert_int_equal(kdl_doc_new("kl", &d), 0);
        assert_int_equal(kdl_doc_add_input(d, input), 0);
        assert_int_equal(kdl_doc_add_note(d, "a note"), 0);
        assert_int_equal(kdl_doc_add_table(d, sample_table()), 0);
        assert_int_equal(kdl_table_new("other", "Other", &t), 0);
        assert_int_equal(kdl_table_add_row(t), 0);
        assert_int_equal(kdl_table_put_int(t, "n", 7), 0);
        assert_int_equal(kdl_doc_add_table(d, t), 0);
        return d;
}

static char *read_file(const char *path)
{
        FILE *f = fopen(path, "r");
        char *buf = calloc(1, 4096);

        assert_non_null(f);
        assert_non_null(buf);
        assert_true(fread(buf, 1, 4095, f) > 0);
        fclose(f);
        return buf;
}

static void test_doc_write_only_one_table(void **state)
{
        kdl_doc *d = two_tables("t.h5");
        char *buf = NULL;
        size_t len = 0;
        FILE *m;

        (void) state;
        /* CSV: the table alone, no "# name" line; the notes are not CSV. */
        m = open_memstream(&buf, &len);
        assert_int_equal(kdl_doc_write_only(d, "other", m, KDL_FORMAT_CSV), 0);
        fclose(m);
        assert_string_equal(buf, "n\n7\n");
        free(buf);
        /* JSON: the wrapper with its inputs and notes, that table's records. */
        m = open_memstream(&buf, &len);
        assert_int_equal(kdl_doc_write_only(d, "other", m, KDL_FORMAT_JSON), 0);
        fclose(m);
        assert_non_null(strstr(buf, "\"notes\": [\"a note\"]"));
        assert_non_null(strstr(buf, "\"results\": [\n    {\"table\": \"other\", \"n\": 7}\n  ]"));
        assert_null(strstr(buf, "logit_fisher"));
        free(buf);
        /* A table it does not have: nothing written, the message names those it has. */
        m = open_memstream(&buf, &len);
        assert_int_equal(kdl_doc_write_only(d, "kl_features", m, KDL_FORMAT_CSV), -KDL_EUSAGE);
        fclose(m);
        assert_int_equal(len, 0);
        assert_string_equal(kdl_errmsg(),
                            "no table 'kl_features' in the output of kl: expected kl or other");
        free(buf);
        kdl_doc_free(d);
}

static void test_doc_write_csv_dir(void **state)
{
        const char *dir = kdl_test_tmpdir();
        char out[512], file[600], *s;
        kdl_doc *d;

        (void) state;
        snprintf(out, sizeof(out), "%s/csv", dir);
        snprintf(file, sizeof(file), "%s/kl.csv", out);
        /* One file per table, in a directory made for them. */
        d = two_tables("t.h5");
        assert_int_equal(kdl_doc_write_csv_dir(d, out, NULL), 0);
        s = read_file(file);
        assert_string_equal(s, "source,value,dim,ok\n"
                               "logit_fisher,0.1234567891234,10,\n"
                               "\"a_b, \"\"c\"\"\",nan,,true\n");
        free(s);
        snprintf(file, sizeof(file), "%s/other.csv", out);
        s = read_file(file);
        assert_string_equal(s, "n\n7\n");
        free(s);
        /* --table: that one only; one it does not have is refused. */
        assert_int_equal(remove(file), 0);
        assert_int_equal(kdl_doc_write_csv_dir(d, out, "kl"), 0);
        assert_int_not_equal(access(file, F_OK), 0);
        assert_int_equal(kdl_doc_write_csv_dir(d, out, "nope"), -KDL_EUSAGE);
        kdl_doc_free(d);
        /* Never over an input: the input is the file a table would replace. */
        snprintf(file, sizeof(file), "%s/kl.csv", out);
        d = two_tables(file);
        assert_int_equal(kdl_doc_write_csv_dir(d, out, NULL), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "is the input"));
        /* A file where the directory should be. */
        assert_int_equal(kdl_doc_write_csv_dir(d, file, NULL), -KDL_EUSAGE);
        assert_non_null(strstr(kdl_errmsg(), "is not a directory"));
        kdl_doc_free(d);
        assert_int_equal(remove(file), 0);
        assert_int_equal(rmdir(out), 0);
        assert_int_equal(rmdir(dir), 0);
}

static void test_put_needs_a_row(void **state)
{
        kdl_table *t = NULL;

        (void) state;
        assert_int_equal(kdl_table_new("x", NULL, &t), 0);
        assert_int_equal(kdl_table_put_int(t, "a", 1), -KDL_ERANGE);
        assert_int_equal(kdl_table_cols(t), 0);
        kdl_table_free(t);
}

/* Rows as the analyses write them: string keys beside numbers, one key missing. */
static kdl_table *keyed_table(void)
{
        static const char *const rows[][3] = {
                {"s1.h5", "init", "pt_y"}, {"s1.h5", "final", "pt_y"}, {"s2.h5", "final", "pt_y"},
                {"s1.h5", "final", "w"},   {"s1.h5", "final", "pt_y"}, {"s1.h5", NULL, "pt_y"},
        };
        kdl_table *t = NULL;

        assert_int_equal(kdl_table_new("histograms", NULL, &t), 0);
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                assert_int_equal(kdl_table_add_row(t), (int) i);
                assert_int_equal(kdl_table_put_str(t, "student", rows[i][0]), 0);
                if (rows[i][1])
                        assert_int_equal(kdl_table_put_str(t, "checkpoint", rows[i][1]), 0);
                assert_int_equal(kdl_table_put_real(t, "tau", 4.0), 0);
                assert_int_equal(kdl_table_put_str(t, "quantity", rows[i][2]), 0);
        }
        return t;
}

static void test_find_row_matches_every_key(void **state)
{
        static const char *const keys[] = {"student", "checkpoint", "quantity"};
        static const char *const want[] = {"s1.h5", "final", "pt_y"};
        kdl_table *t = keyed_table();
        int found[4], n = 0;

        (void) state;
        for (int i = kdl_table_find_row(t, 0, 3, keys, want); i >= 0 && n < 4;
             i = kdl_table_find_row(t, (size_t) i + 1, 3, keys, want))
                found[n++] = i;
        assert_int_equal(n, 2);
        assert_int_equal(found[0], 1);
        assert_int_equal(found[1], 4);
        /* Fewer keys match more rows; none matches every row from @from on. */
        assert_int_equal(kdl_table_find_row(t, 0, 1, keys, (const char *[]){"s2.h5"}), 2);
        assert_int_equal(kdl_table_find_row(t, 3, 2, keys, want), 3);
        assert_int_equal(kdl_table_find_row(t, 3, 0, keys, want), 3);
        kdl_table_free(t);
}

static void test_find_row_misses(void **state)
{
        kdl_table *t = keyed_table();

        (void) state;
        /* Past the last row; a value no row has; a key the table lacks. */
        assert_int_equal(
                kdl_table_find_row(t, 6, 1, (const char *[]){"student"}, (const char *[]){"s1.h5"}),
                -1);
        assert_int_equal(
                kdl_table_find_row(t, 0, 1, (const char *[]){"quantity"}, (const char *[]){"ps_y"}),
                -1);
        assert_int_equal(
                kdl_table_find_row(t, 0, 1, (const char *[]){"layer"}, (const char *[]){"s1.h5"}),
                -1);
        /* A number or an empty cell is not the string that spells it, nor "". */
        assert_int_equal(
                kdl_table_find_row(t, 0, 1, (const char *[]){"tau"}, (const char *[]){"4"}), -1);
        assert_int_equal(
                kdl_table_find_row(t, 5, 1, (const char *[]){"checkpoint"}, (const char *[]){""}),
                -1);
        kdl_table_free(t);
}

static void test_format_parse(void **state)
{
        enum kdl_format f = KDL_FORMAT_TABLE;

        (void) state;
        assert_int_equal(kdl_format_parse("tex", &f), 0);
        assert_int_equal(f, KDL_FORMAT_TEX);
        assert_int_equal(kdl_format_parse("xml", &f), -KDL_EUSAGE);
        assert_int_equal(f, KDL_FORMAT_TEX);
        assert_non_null(strstr(kdl_errmsg(), "'xml'"));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_terminal),
                cmocka_unit_test(test_markdown),
                cmocka_unit_test(test_csv_is_exact_and_quoted),
                cmocka_unit_test(test_tex_booktabs_escapes),
                cmocka_unit_test(test_json_document),
                cmocka_unit_test(test_doc_write_only_one_table),
                cmocka_unit_test(test_doc_write_csv_dir),
                cmocka_unit_test(test_put_needs_a_row),
                cmocka_unit_test(test_find_row_matches_every_key),
                cmocka_unit_test(test_find_row_misses),
                cmocka_unit_test(test_format_parse),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
