/* test_npy.c: the NumPy .npy loader (npy.c). .npy files are built byte by
 * byte here exactly as numpy.save lays them out (magic, version, header
 * length, a dict literal padded with spaces to 64 bytes and ended by '\n',
 * raw little-endian data): every accepted dtype and format version loads
 * with the right values and shapes; Fortran order, other dtypes, bad
 * headers, truncated data and disagreeing sample counts give an error
 * naming the file and the byte offset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_testutil.h"

static const char *dir;

static int setup(void **state) {
  dir = tu_tmpdir("npy");
  return dir ? 0 : -1;
}

static int teardown(void **state) {
  tu_rmdir(dir);
  return 0;
}

typedef struct npy_bytes {
  unsigned char b[8192];
  size_t len;
} npy_bytes;

/* A .npy file with the header dict text given verbatim. */
static void npy_raw(npy_bytes *f, int major, const char *dict, const void *data, size_t dlen) {
  size_t hl_size = major == 1 ? 2 : 4, pre = 8 + hl_size;
  size_t hlen = strlen(dict) + 1;
  while ((pre + hlen) % 64)
    hlen++;
  memcpy(f->b, "\x93NUMPY", 6);
  f->b[6] = (unsigned char)major;
  f->b[7] = 0;
  for (size_t i = 0; i < hl_size; i++)
    f->b[8 + i] = (unsigned char)(hlen >> (8 * i));
  memset(f->b + pre, ' ', hlen);
  memcpy(f->b + pre, dict, strlen(dict));
  f->b[pre + hlen - 1] = '\n';
  memcpy(f->b + pre + hlen, data, dlen);
  f->len = pre + hlen + dlen;
}

static void npy(npy_bytes *f, int major, const char *descr, const char *shape, const void *data,
                size_t dlen) {
  char dict[256];
  snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
           shape);
  npy_raw(f, major, dict, data, dlen);
}

static const char *save(const char *name, const npy_bytes *f) {
  const char *p = tu_path(dir, name);
  tu_write(p, f->b, f->len);
  return p;
}

static void test_f4_features_i8_labels(void **state) {
  const float x[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11.5f};
  const int64_t y[3] = {2, 0, 7};
  npy_bytes fx, fy;
  npy(&fx, 1, "<f4", "(3, 2, 2)", x, sizeof x);
  npy(&fy, 1, "<i8", "(3,)", y, sizeof y);
  const char *px = save("x.npy", &fx), *py = save("y.npy", &fy);
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_load_npy(&ds, px, py, 1, &err), 0);
  assert_int_equal(ds.n, 3);
  assert_int_equal(ds.rank, 2);
  assert_int_equal(ds.shape[0], 2);
  assert_int_equal(ds.shape[1], 2);
  assert_int_equal(ds.sample_size, 4);
  assert_memory_equal(ds.x, x, sizeof x);
  assert_int_equal(ds.labels[0], 2);
  assert_int_equal(ds.labels[2], 7);
  assert_int_equal(ds.num_classes, 8);
  nnc_rt_dataset_free(&ds);
}

static void test_versions_and_dtypes(void **state) {
  const double x8[4] = {0.5, -1.25, 3, 1e-3};
  const unsigned char xu[4] = {0, 1, 128, 255};
  const int32_t x4[4] = {-5, 6, 7, 100000};
  const float y2[4] = {1, 2, 3, 4}; /* targets [2, 2] */
  const uint8_t yc[2] = {1, 9};
  npy_bytes fx, fy;
  for (int major = 1; major <= 3; major++) {
    for (int dt = 0; dt < 3; dt++) {
      const char *descr = dt == 0 ? "<f8" : dt == 1 ? "|u1" : "<i4";
      const void *data = dt == 0 ? (const void *)x8 : dt == 1 ? (const void *)xu : (const void *)x4;
      size_t dlen = dt == 0 ? sizeof x8 : dt == 1 ? sizeof xu : sizeof x4;
      npy(&fx, major, descr, "(2, 2)", data, dlen);
      npy(&fy, major, "<f4", "(2, 2)", y2, sizeof y2);
      const char *px = save("x.npy", &fx), *py = save("y.npy", &fy);
      nnc_rt_dataset ds;
      nnc_rt_error err = {{0}};
      assert_int_equal(nnc_rt_load_npy(&ds, px, py, 0, &err), 0);
      assert_int_equal(ds.n, 2);
      assert_int_equal(ds.rank, 1);
      assert_int_equal(ds.sample_size, 2);
      for (int i = 0; i < 4; i++) {
        float want = dt == 0 ? (float)x8[i] : dt == 1 ? (float)xu[i] : (float)x4[i];
        assert_true(ds.x[i] == want);
      }
      assert_int_equal(ds.target_size, 2);
      assert_memory_equal(ds.targets, y2, sizeof y2);
      nnc_rt_dataset_free(&ds);
      /* Class labels from uint8, 1-D features: samples of shape [1]. */
      npy(&fx, major, descr, "(2,)", data, dlen / 2);
      npy(&fy, major, "|u1", "(2,)", yc, sizeof yc);
      px = save("x.npy", &fx), py = save("y.npy", &fy);
      assert_int_equal(nnc_rt_load_npy(&ds, px, py, 1, &err), 0);
      assert_int_equal(ds.rank, 1);
      assert_int_equal(ds.shape[0], 1);
      assert_int_equal(ds.labels[1], 9);
      assert_int_equal(ds.num_classes, 10);
      nnc_rt_dataset_free(&ds);
    }
  }
}

/* Expects loading (x, y) to fail with "<path of bad>: <want>". */
static void expect_error(const npy_bytes *fx, const npy_bytes *fy, int is_class, int bad_is_y,
                         const char *want) {
  const char *px = save("ex.npy", fx), *py = save("ey.npy", fy);
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_load_npy(&ds, px, py, is_class, &err), -1);
  char full[1100];
  snprintf(full, sizeof full, "%s: %s", bad_is_y ? py : px, want);
  printf("  %s\n", err.msg);
  assert_string_equal(err.msg, full);
  assert_null(ds.x);
  assert_null(ds.labels);
  assert_null(ds.targets);
}

static void test_errors(void **state) {
  const float x[4] = {1, 2, 3, 4};
  const int64_t y[2] = {0, 1};
  npy_bytes fx, fy, bad;
  npy(&fx, 1, "<f4", "(2, 2)", x, sizeof x);
  npy(&fy, 1, "<i8", "(2,)", y, sizeof y);
  /* The dict starts at byte 10 in version 1; these headers pad to 128. */
  npy_raw(&bad, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", x, sizeof x);
  expect_error(&bad, &fy, 1, 0,
               "byte 44: fortran_order is True: only C-order arrays are supported "
               "(save np.ascontiguousarray(a))");
  npy(&bad, 1, ">f4", "(2, 2)", x, sizeof x);
  expect_error(&bad, &fy, 1, 0,
               "byte 20: dtype '>f4' is not supported (use float32 '<f4', float64 '<f8', uint8 "
               "'|u1', int32 '<i4' or int64 '<i8', little-endian)");
  npy(&bad, 1, "<f2", "(2, 2)", x, 8);
  expect_error(&bad, &fy, 1, 0,
               "byte 20: dtype '<f2' is not supported (use float32 '<f4', float64 '<f8', uint8 "
               "'|u1', int32 '<i4' or int64 '<i8', little-endian)");
  npy(&bad, 1, "<f4", "(2, 2)", x, 12);
  expect_error(&bad, &fy, 1, 0,
               "byte 140: file ends early: the shape needs 16 bytes of data, the file has 12");
  npy(&bad, 1, "<f4", "(2, 2)", x, sizeof x);
  bad.b[bad.len++] = 0;
  expect_error(&bad, &fy, 1, 0,
               "byte 144: data after the array: the shape needs 16 bytes of data, the file has 17");
  npy(&bad, 1, "<f4", "(2, 2)", x, sizeof x);
  bad.b[0] = 'X';
  expect_error(&bad, &fy, 1, 0, "byte 0: not a .npy file (no \\x93NUMPY magic)");
  npy(&bad, 4, "<f4", "(2, 2)", x, sizeof x);
  expect_error(&bad, &fy, 1, 0, "byte 6: .npy format version 4.0 (1.0, 2.0 and 3.0 load)");
  npy_raw(&bad, 1, "{'descr': '<f4', 'shape': (2, 2), }", x, sizeof x);
  expect_error(&bad, &fy, 1, 0, "byte 45: header lacks 'descr', 'fortran_order' or 'shape'");
  npy_raw(&bad, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", x, sizeof x);
  expect_error(&bad, &fy, 1, 0, "byte 64: expected a dimension size");
  /* Labels: count mismatch, fractional class labels. */
  const int64_t y3[3] = {0, 1, 2};
  npy(&bad, 1, "<i8", "(3,)", y3, sizeof y3);
  char want[600];
  snprintf(want, sizeof want, "3 labels, but %s has 2 samples", tu_path(dir, "ex.npy"));
  expect_error(&fx, &bad, 1, 1, want);
  const float yf[2] = {1, 0.5f};
  npy(&bad, 1, "<f4", "(2,)", yf, sizeof yf);
  expect_error(&fx, &bad, 1, 1, "byte 132: label 1 is 0.5, not a whole number >= 0");
}

/* NaN and infinities in features or targets used to load and surface as
 * "loss became NaN/inf" with no word of the data; f64 values past the f32
 * range become inf on conversion and are refused too. */
static void test_non_finite(void **state) {
  const float x[4] = {1, 2, NAN, 4};
  const int64_t y[2] = {0, 1};
  npy_bytes fx, fy, bad;
  npy(&fx, 1, "<f4", "(2, 2)", x, sizeof x);
  npy(&fy, 1, "<i8", "(2,)", y, sizeof y);
  expect_error(&fx, &fy, 1, 0, "byte 136: sample 1, feature 0 is nan (only finite values load)");
  const float ok[4] = {1, 2, 3, 4};
  npy(&fx, 1, "<f4", "(2, 2)", ok, sizeof ok);
  const double t[4] = {0.5, 1e300, 2, 3};
  npy(&bad, 1, "<f8", "(2, 2)", t, sizeof t);
  expect_error(&fx, &bad, 0, 1, "byte 136: sample 0, target 1 is 1e+300 (only finite values load)");
  const float ti[2] = {-INFINITY, 1};
  npy(&bad, 1, "<f4", "(2,)", ti, sizeof ti);
  expect_error(&fx, &bad, 0, 1, "byte 128: sample 0, target 0 is -inf (only finite values load)");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_f4_features_i8_labels),
      cmocka_unit_test(test_versions_and_dtypes),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_non_finite),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
