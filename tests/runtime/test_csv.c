/* test_csv.c: the CSV loader (csv.c). Files written into a temporary
 * folder load with the right values (header or not, label column from
 * either end, class labels or float targets, CRLF, spaces, blank lines);
 * every malformed file gives the exact message with file, row and column;
 * a failed load leaves nothing allocated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "rt_testutil.h"

static const char *dir;

static int setup(void **state) {
  dir = tu_tmpdir("csv");
  return dir ? 0 : -1;
}

static int teardown(void **state) {
  tu_rmdir(dir);
  return 0;
}

static const char *csv_file(const char *name, const char *text) {
  const char *p = tu_path(dir, name);
  tu_write(p, text, strlen(text));
  return p;
}

static void test_header_last_column_classes(void **state) {
  const char *p = csv_file("a.csv", "f1,f2,label\n1.5,-2,3\n0,1e2,0\r\n  4 ,\t5,1\n\n");
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  nnc_rt_csv_opts o = {.header = 1, .label_column = -1, .label_is_class = 1};
  assert_int_equal(nnc_rt_load_csv(&ds, p, &o, &err), 0);
  assert_int_equal(ds.n, 3);
  assert_int_equal(ds.rank, 1);
  assert_int_equal(ds.shape[0], 2);
  assert_int_equal(ds.sample_size, 2);
  const float x[6] = {1.5f, -2, 0, 100, 4, 5};
  assert_memory_equal(ds.x, x, sizeof x);
  assert_int_equal(ds.labels[0], 3);
  assert_int_equal(ds.labels[1], 0);
  assert_int_equal(ds.labels[2], 1);
  assert_int_equal(ds.num_classes, 4);
  assert_null(ds.targets);
  nnc_rt_dataset_free(&ds);
}

static void test_first_column_targets_no_header(void **state) {
  /* No final newline; label in column 0 (also reachable as -3). */
  const char *p = csv_file("b.csv", "0.25,1,2\n-7.5,3,4");
  for (int k = 0; k < 2; k++) {
    nnc_rt_dataset ds;
    nnc_rt_error err = {{0}};
    nnc_rt_csv_opts o = {.header = 0, .label_column = k ? -3 : 0, .label_is_class = 0};
    assert_int_equal(nnc_rt_load_csv(&ds, p, &o, &err), 0);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.target_size, 1);
    assert_null(ds.labels);
    assert_true(ds.targets[0] == 0.25f && ds.targets[1] == -7.5f);
    const float x[4] = {1, 2, 3, 4};
    assert_memory_equal(ds.x, x, sizeof x);
    assert_int_equal(ds.num_classes, 0);
    nnc_rt_dataset_free(&ds);
  }
}

/* Loads text and expects exactly the message "<path>: <want>". */
static void expect_error(const char *text, const nnc_rt_csv_opts *o, const char *want) {
  const char *p = csv_file("bad.csv", text);
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_load_csv(&ds, p, o, &err), -1);
  char full[1100];
  snprintf(full, sizeof full, "%s: %s", p, want);
  printf("  %s\n", err.msg);
  assert_string_equal(err.msg, full);
  assert_null(ds.x);
  assert_null(ds.labels);
  assert_int_equal(ds.n, 0);
}

static void test_errors(void **state) {
  nnc_rt_csv_opts cls = {.header = 1, .label_column = -1, .label_is_class = 1};
  nnc_rt_csv_opts tgt = {.header = 0, .label_column = 1, .label_is_class = 0};
  expect_error("a,b,c\n1,2,3\n4,abc,5\n", &cls, "row 3, column 2: expected a number, got 'abc'");
  expect_error("a,b,c\n1,2,3\n4,,5\n", &cls, "row 3, column 2: expected a number, got ''");
  expect_error("a,b,c\n1,2,3\n4,5,nan\n", &cls, "row 3, column 3: expected a number, got 'nan'");
  /* Finite as a double, inf as a float: the stored value would not be finite. */
  expect_error("a,b,c\n1,2,3\n4,1e39,5\n", &cls,
               "row 3, column 2: 1e39 is too large for a 32-bit float (at most 3.4e38)");
  expect_error("1,2,3\n4,-5e50,6\n", &tgt,
               "row 2, column 2: -5e50 is too large for a 32-bit float (at most 3.4e38)");
  expect_error("a,b,c\n1,2,3\n4,5\n", &cls, "row 3: 2 columns, but the first data row has 3");
  expect_error("a,b,c\n1,2,3\n4,5,6,7\n", &cls, "row 3: 4 columns, but the first data row has 3");
  expect_error("a,b,c\n1,2,1.5\n", &cls,
               "row 2, column 3: a class label must be a whole number >= 0, got '1.5'");
  expect_error("a,b,c\n1,2,-1\n", &cls,
               "row 2, column 3: a class label must be a whole number >= 0, got '-1'");
  expect_error("1,\"2\"\n", &tgt, "row 1, column 2: expected a number, got '\"2\"'");
  expect_error("a,b,c\n", &cls, "no data rows");
  expect_error("1\n2\n", &tgt, "row 1: need at least 2 columns (features and a label)");
  nnc_rt_csv_opts far = {.label_column = 3};
  expect_error("1,2,3\n", &far, "label column 3 does not exist: rows have 3 columns");
  nnc_rt_csv_opts neg = {.label_column = -4};
  expect_error("1,2,3\n", &neg, "label column -4 does not exist: rows have 3 columns");
}

/* A NUL byte inside a cell used to end the cell: "1\0 2" read as 1. */
static void test_nul_in_cell(void **state) {
  const char *p = tu_path(dir, "nul.csv");
  static const char text[] = "1\0 2,3\n";
  tu_write(p, text, sizeof text - 1);
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_load_csv(&ds, p, NULL, &err), -1);
  char want[600];
  snprintf(want, sizeof want, "%s: row 1, column 1: expected a number, got '1'", p);
  assert_string_equal(err.msg, want);
  char zeros[60] = "4,";
  tu_write(p, zeros, sizeof zeros);
  assert_int_equal(nnc_rt_load_csv(&ds, p, NULL, &err), -1);
  assert_non_null(strstr(err.msg, "row 1, column 2: expected a number"));
}

/* With the model's class count, a label past it is reported at its row. */
static void test_label_out_of_range(void **state) {
  nnc_rt_csv_opts o = {.header = 1, .label_column = -1, .label_is_class = 1, .num_classes = 3};
  expect_error("a,b\n1,2\n\n5,3\n", &o,
               "row 4, column 2: class label 3 is outside 0..2 (the model has 3 classes)");
}

static void test_missing_file(void **state) {
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  const char *p = tu_path(dir, "nope.csv");
  assert_int_equal(nnc_rt_load_csv(&ds, p, NULL, &err), -1);
  char want[600];
  snprintf(want, sizeof want, "%s: cannot open: No such file or directory", p);
  assert_string_equal(err.msg, want);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_header_last_column_classes),
      cmocka_unit_test(test_first_column_targets_no_header),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_nul_in_cell),
      cmocka_unit_test(test_label_out_of_range),
      cmocka_unit_test(test_missing_file),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
