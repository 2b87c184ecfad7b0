/* test_idx.c: the IDX loader (idx.c). Small IDX files written into a
 * temporary folder, raw and gzip-compressed, load with the right values;
 * every malformed file gives an error naming the file and the byte offset;
 * and, when Debian's Fashion-MNIST is installed, the real test set loads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "runtime/nnc_rt.h"

#define FASHION_DIR "/usr/share/datasets/fashion-mnist/"

static char tmpdir[64];
static char created[64][128];
static int ncreated;

static int make_tmpdir(void **state) {
  strcpy(tmpdir, "/tmp/nnc_test_idx_XXXXXX");
  return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state) {
  for (int i = 0; i < ncreated; i++)
    unlink(created[i]);
  return rmdir(tmpdir);
}

/* Writes bytes to tmpdir/name, gzip-compressed if gz; returns the path. */
static const char *write_file(const char *name, const unsigned char *bytes, size_t len, int gz) {
  char *path = created[ncreated++];
  snprintf(path, sizeof created[0], "%s/%s", tmpdir, name);
  if (gz) {
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    if (len) assert_int_equal(gzwrite(f, bytes, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
  } else {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    fclose(f);
  }
  return path;
}

/* An IDX file in memory: magic, big-endian dims, then data. */
typedef struct idx_bytes {
  unsigned char b[4096];
  size_t len;
} idx_bytes;

static void idx_header(idx_bytes *f, int type, int ndim, const uint32_t *dims) {
  f->len = 0;
  f->b[f->len++] = 0;
  f->b[f->len++] = 0;
  f->b[f->len++] = (unsigned char)type;
  f->b[f->len++] = (unsigned char)ndim;
  for (int i = 0; i < ndim; i++)
    for (int k = 3; k >= 0; k--)
      f->b[f->len++] = (unsigned char)(dims[i] >> (8 * k));
}

static void idx_append(idx_bytes *f, const unsigned char *data, size_t len) {
  memcpy(f->b + f->len, data, len);
  f->len += len;
}

/* The good pair: 3 images of 2x4 pixels and labels 1, 0, 4. */
static const unsigned char PIXELS[24] = {0,  1, 2, 3, 4, 5,  6,  7,  255, 128, 64, 32,
                                         16, 8, 4, 2, 9, 10, 11, 12, 13,  14,  15, 200};
static const unsigned char LABELS[3] = {1, 0, 4};

static void good_images(idx_bytes *f) {
  idx_header(f, 0x08, 3, (const uint32_t[]){3, 2, 4});
  idx_append(f, PIXELS, sizeof PIXELS);
}

static void good_labels(idx_bytes *f) {
  idx_header(f, 0x08, 1, (const uint32_t[]){3});
  idx_append(f, LABELS, sizeof LABELS);
}

static void check_good(const nnc_rt_dataset *ds) {
  assert_int_equal(ds->n, 3);
  assert_int_equal(ds->rank, 2);
  assert_int_equal(ds->shape[0], 2);
  assert_int_equal(ds->shape[1], 4);
  assert_int_equal(ds->sample_size, 8);
  /* The pixels stay bytes, standing for byte * scale. */
  assert_null(ds->x);
  assert_non_null(ds->u8);
  assert_memory_equal(ds->u8, PIXELS, sizeof PIXELS);
  for (int b = 0; b < 256; b++)
    assert_true(ds->byte_value[b] == (float)b * 0.5f);
  float x[8];
  for (int i = 0; i < 3; i++) {
    nnc_rt_dataset_sample(ds, i, x);
    for (int j = 0; j < 8; j++)
      assert_true(x[j] == (float)PIXELS[i * 8 + j] * 0.5f);
  }
  for (int i = 0; i < 3; i++)
    assert_int_equal(ds->labels[i], LABELS[i]);
  assert_int_equal(ds->num_classes, 5);
  assert_null(ds->targets);
}

static void load_good(int gz_images, int gz_labels) {
  idx_bytes im, lb;
  good_images(&im);
  good_labels(&lb);
  char iname[32], lname[32];
  snprintf(iname, sizeof iname, "good%d%d-images", gz_images, gz_labels);
  snprintf(lname, sizeof lname, "good%d%d-labels", gz_images, gz_labels);
  const char *ipath = write_file(iname, im.b, im.len, gz_images);
  const char *lpath = write_file(lname, lb.b, lb.len, gz_labels);
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_load_idx(&ds, ipath, lpath, 0.5f, &err), 0);
  check_good(&ds);
  nnc_rt_dataset_free(&ds);
  assert_null(ds.u8);
  assert_null(ds.storage);
  assert_int_equal(ds.n, 0);
}

static void test_raw(void **state) {
  load_good(0, 0);
}
static void test_gzip(void **state) {
  load_good(1, 1);
}
static void test_mixed(void **state) {
  load_good(1, 0);
}

/* Loads images/labels given as bytes and expects an error containing the
 * path of the file at fault (bad_is_labels) and every string in want. */
static void expect_error(const char *name, const idx_bytes *im, const idx_bytes *lb, int gz,
                         int bad_is_labels, const char *want1, const char *want2) {
  char iname[64], lname[64];
  snprintf(iname, sizeof iname, "%s-images%s", name, gz ? ".gz" : "");
  snprintf(lname, sizeof lname, "%s-labels%s", name, gz ? ".gz" : "");
  const char *ipath = write_file(iname, im->b, im->len, gz);
  const char *lpath = write_file(lname, lb->b, lb->len, gz);
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_load_idx(&ds, ipath, lpath, 1.0f, &err), -1);
  printf("  %s\n", err.msg);
  const char *bad = bad_is_labels ? lpath : ipath;
  assert_true(strncmp(err.msg, bad, strlen(bad)) == 0 && err.msg[strlen(bad)] == ':');
  assert_non_null(strstr(err.msg, want1));
  if (want2) assert_non_null(strstr(err.msg, want2));
  /* Nothing is left allocated or half-filled. */
  assert_null(ds.x);
  assert_null(ds.u8);
  assert_null(ds.storage);
  assert_null(ds.labels);
  assert_int_equal(ds.n, 0);
}

static void test_wrong_magic(void **state) {
  idx_bytes im, lb;
  good_images(&im);
  good_labels(&lb);
  im.b[0] = 0x12;
  expect_error("magic", &im, &lb, 0, 0, "byte 0: not an IDX file", "0x12 0x00");
}

static void test_wrong_type(void **state) {
  idx_bytes im, lb;
  good_images(&im);
  good_labels(&lb);
  im.b[2] = 0x0D;
  expect_error("type", &im, &lb, 1, 0, "byte 2: element type 0x0d (float)",
               "expected 0x08 (unsigned byte)");
  good_images(&im);
  lb.b[2] = 0x0C;
  expect_error("ltype", &im, &lb, 0, 1, "byte 2: element type 0x0c (int)", NULL);
}

static void test_wrong_ndim(void **state) {
  idx_bytes im, lb;
  good_images(&im);
  idx_header(&lb, 0x08, 2, (const uint32_t[]){3, 1});
  idx_append(&lb, LABELS, 3);
  expect_error("ndim", &im, &lb, 0, 1, "byte 3: 2 dimensions, but label files have 1", NULL);
  idx_header(&im, 0x08, 1, (const uint32_t[]){24});
  good_labels(&lb);
  expect_error("ndim1", &im, &lb, 0, 0, "byte 3: 1 dimensions, but image files have 2 to 9", NULL);
}

static void test_truncated_header(void **state) {
  idx_bytes im, lb;
  good_images(&im);
  good_labels(&lb);
  im.len = 10; /* magic, the first dimension, half of the second */
  expect_error("hdr", &im, &lb, 0, 0, "byte 10: file ends inside the header",
               "1 of 3 dimension sizes");
  im.len = 2;
  expect_error("magic2", &im, &lb, 1, 0, "byte 2: file ends inside the 4-byte IDX magic", NULL);
  im.len = 0;
  expect_error("empty", &im, &lb, 0, 0, "byte 0: file ends inside the 4-byte IDX magic", NULL);
}

static void test_truncated_data(void **state) {
  idx_bytes im, lb;
  good_images(&im);
  good_labels(&lb);
  im.len -= 4; /* 16 header + 20 of 24 pixel bytes */
  expect_error("data", &im, &lb, 0, 0, "byte 36: file ends after 2 of 3 images", NULL);
  /* The same bytes gzipped: the offset is in the decompressed stream. */
  expect_error("gzdata", &im, &lb, 1, 0, "byte 36: file ends after 2 of 3 images", NULL);
  good_images(&im);
  idx_header(&lb, 0x08, 1, (const uint32_t[]){10000});
  idx_append(&lb, LABELS, 3);
  /* The count mismatch is found first at byte 4... */
  expect_error("lcount", &im, &lb, 1, 1, "byte 4: 10000 labels, but", "has 3 images");
  /* ...and with 10000 images, the short label data at byte 8 + 3. */
  idx_bytes big;
  idx_header(&big, 0x08, 3, (const uint32_t[]){10000, 0, 0});
  big.b[10] = 0; /* rows = 0 */
  expect_error("zero", &big, &lb, 0, 0, "byte 8: dimension 1 is 0", NULL);
}

static void test_truncated_labels(void **state) {
  /* 10000 images of 1x1 pixels, labels file cut after 3 labels (gzip). */
  static unsigned char pixels[10000];
  static idx_bytes big_im;
  idx_header(&big_im, 0x08, 3, (const uint32_t[]){10000, 1, 1});
  char *path = created[ncreated++];
  snprintf(path, sizeof created[0], "%s/big-images.gz", tmpdir);
  gzFile f = gzopen(path, "wb");
  gzwrite(f, big_im.b, (unsigned)big_im.len);
  gzwrite(f, pixels, sizeof pixels);
  gzclose(f);
  idx_bytes lb;
  idx_header(&lb, 0x08, 1, (const uint32_t[]){10000});
  idx_append(&lb, LABELS, 3);
  const char *lpath = write_file("t10k-labels.gz", lb.b, lb.len, 1);
  nnc_rt_dataset ds;
  nnc_rt_error err;
  assert_int_equal(nnc_rt_load_idx(&ds, path, lpath, 1.0f, &err), -1);
  printf("  %s\n", err.msg);
  assert_non_null(strstr(err.msg, "t10k-labels.gz: byte 11: file ends after 3 of 10000 labels"));
}

static void test_trailing_data(void **state) {
  idx_bytes im, lb;
  good_images(&im);
  good_labels(&lb);
  lb.b[lb.len++] = 7;
  expect_error("trail", &im, &lb, 1, 1, "byte 11: unexpected data after the last label", NULL);
}

static void test_count_mismatch(void **state) {
  idx_bytes im, lb;
  good_images(&im);
  idx_header(&lb, 0x08, 1, (const uint32_t[]){2});
  idx_append(&lb, LABELS, 2);
  expect_error("count", &im, &lb, 0, 1, "byte 4: 2 labels, but", "has 3 images");
}

static void test_missing_file(void **state) {
  idx_bytes lb;
  good_labels(&lb);
  const char *lpath = write_file("lonely-labels", lb.b, lb.len, 0);
  char ipath[128];
  snprintf(ipath, sizeof ipath, "%s/no-such-images.gz", tmpdir);
  nnc_rt_dataset ds;
  nnc_rt_error err;
  assert_int_equal(nnc_rt_load_idx(&ds, ipath, lpath, 1.0f, &err), -1);
  printf("  %s\n", err.msg);
  assert_non_null(strstr(err.msg, "no-such-images.gz: cannot open: No such file or directory"));
  assert_null(ds.x);
}

static void test_corrupt_gzip(void **state) {
  /* A gzip stream cut in half: the error names the file. */
  idx_bytes im, lb;
  good_images(&im);
  good_labels(&lb);
  const char *ipath = write_file("cut-images.gz", im.b, im.len, 1);
  FILE *f = fopen(ipath, "rb");
  unsigned char buf[256];
  size_t n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  f = fopen(ipath, "wb");
  fwrite(buf, 1, n / 2, f);
  fclose(f);
  const char *lpath = write_file("cut-labels", lb.b, lb.len, 0);
  nnc_rt_dataset ds;
  nnc_rt_error err;
  assert_int_equal(nnc_rt_load_idx(&ds, ipath, lpath, 1.0f, &err), -1);
  printf("  %s\n", err.msg);
  assert_non_null(strstr(err.msg, "cut-images.gz: byte 21: the gzip stream is cut short"));
}

/* Two gzip members (as `cat a.gz b.gz` makes): the one-call decompressor
 * stops after the first, so the file streams through zlib, which reads
 * both; the data is the same as from one member. */
static void test_gzip_two_members(void **state) {
  idx_bytes im, lb;
  good_images(&im);
  good_labels(&lb);
  const char *first = write_file("m1.gz", im.b, 7, 1);
  const char *second = write_file("m2.gz", im.b + 7, im.len - 7, 1);
  char *ipath = created[ncreated++];
  snprintf(ipath, sizeof created[0], "%s/two-members-images.gz", tmpdir);
  FILE *out = fopen(ipath, "wb");
  assert_non_null(out);
  const char *parts[2] = {first, second};
  for (int i = 0; i < 2; i++) {
    FILE *in = fopen(parts[i], "rb");
    assert_non_null(in);
    unsigned char buf[512];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
      assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
  }
  fclose(out);
  const char *lpath = write_file("two-members-labels.gz", lb.b, lb.len, 1);
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_load_idx(&ds, ipath, lpath, 0.5f, &err), 0);
  check_good(&ds);
  nnc_rt_dataset_free(&ds);
}

/* Writes the good images gzipped to name, changes them with `damage` (the
 * file open for update at its end), and expects the load to fail with
 * want (after the path). */
static void expect_gzip_damage(const char *name, void (*damage)(FILE *), const char *want) {
  idx_bytes im, lb;
  good_images(&im);
  good_labels(&lb);
  const char *ipath = write_file(name, im.b, im.len, 1);
  FILE *f = fopen(ipath, "r+b");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  damage(f);
  fclose(f);
  const char *lpath = write_file("damage-labels", lb.b, lb.len, 0);
  nnc_rt_dataset ds;
  nnc_rt_error err;
  assert_int_equal(nnc_rt_load_idx(&ds, ipath, lpath, 1.0f, &err), -1);
  printf("  %s\n", err.msg);
  char full[1100];
  snprintf(full, sizeof full, "%s: %s", ipath, want);
  assert_non_null(strstr(err.msg, full));
  assert_null(ds.x);
}

static void wrong_length(FILE *f) {
  assert_int_equal(fseek(f, -4, SEEK_END), 0);
  fputc(0x7f, f);
}

/* A gzip trailer whose length field is wrong: the one-call decompressor
 * refuses it, and zlib names the file. */
static void test_gzip_bad_trailer(void **state) {
  expect_gzip_damage("trailer-images.gz", wrong_length, "byte 40: incorrect length check");
}

/* The hostile header of issue 16: dims [64, 11, 1119412321, 2996173443]
 * multiply past 2^64 and used to wrap to a sample size of 1, so an 84-byte
 * file loaded and augmentations ran off the end of a sample. */
static void test_wrapping_dims(void **state) {
  idx_bytes im, lb;
  idx_header(&im, 0x08, 4, (const uint32_t[]){64, 11, 1119412321u, 2996173443u});
  unsigned char pad[64] = {0};
  idx_append(&im, pad, 84 - im.len);
  assert_int_equal(im.len, 84);
  good_labels(&lb);
  expect_error("wrap", &im, &lb, 0, 0, "byte 16: dimensions too large (over 2^40 elements)", NULL);
}

/* A header that claims 10^12 pixels with 2 bytes of data is reported as the
 * short file it is, before anything is allocated for the pixels (under
 * ASan, a 4 TB malloc would abort the test). */
static void test_claims_more_than_file(void **state) {
  idx_bytes im, lb;
  idx_header(&im, 0x08, 3, (const uint32_t[]){1000000, 1000, 1000});
  idx_append(&im, PIXELS, 2);
  good_labels(&lb);
  expect_error("claim", &im, &lb, 0, 0, "byte 18: file ends after 0 of 1000000 images", NULL);
  idx_header(&im, 0x08, 3, (const uint32_t[]){4000000000u, 1, 1});
  expect_error("lclaim", &im, &lb, 0, 0, "byte 16: file ends after 0 of 4000000000 images", NULL);
}

static void junk_after(FILE *f) {
  fputs("JUNK", f);
}

/* Bytes after the gzip stream are an error, not silently dropped (zlib's
 * gzread used to ignore them); a second member is still data. */
static void test_gzip_trailing_junk(void **state) {
  expect_gzip_damage("junk-images.gz", junk_after,
                     "byte 40: data after the end of the gzip stream (at byte 56");
}

/* Only regular files are data: a folder or /dev/zero is refused at once
 * (/dev/zero used to be read until memory ran out). */
static void test_not_regular(void **state) {
  idx_bytes lb;
  good_labels(&lb);
  const char *lpath = write_file("reg-labels", lb.b, lb.len, 0);
  nnc_rt_dataset ds;
  nnc_rt_error err;
  assert_int_equal(nnc_rt_load_idx(&ds, "/dev/zero", lpath, 1.0f, &err), -1);
  assert_string_equal(err.msg, "/dev/zero: is a device, pipe or socket, not a regular file");
  assert_int_equal(nnc_rt_load_idx(&ds, tmpdir, lpath, 1.0f, &err), -1);
  assert_non_null(strstr(err.msg, ": is a folder, not a regular file"));
}

static void test_fashion_mnist(void **state) {
  const char *images = FASHION_DIR "t10k-images-idx3-ubyte.gz";
  const char *labels = FASHION_DIR "t10k-labels-idx1-ubyte.gz";
  if (access(images, R_OK) || access(labels, R_OK)) skip();
  nnc_rt_dataset ds;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_load_idx(&ds, images, labels, 1.0f, &err), 0);
  assert_int_equal(ds.n, 10000);
  assert_int_equal(ds.rank, 2);
  assert_int_equal(ds.shape[0], 28);
  assert_int_equal(ds.shape[1], 28);
  assert_int_equal(ds.sample_size, 784);
  assert_int_equal(ds.num_classes, 10);
  /* Checked with zcat | od: label 0 is 9 (ankle boot), pixels of image 0
   * sum to 33456, and each class has 1000 test images. */
  assert_int_equal(ds.labels[0], 9);
  double sum = 0;
  for (int i = 0; i < 784; i++)
    sum += ds.u8[i];
  assert_true(sum == 33456.0);
  int count[10] = {0};
  for (int64_t i = 0; i < ds.n; i++)
    count[ds.labels[i]]++;
  for (int c = 0; c < 10; c++)
    assert_int_equal(count[c], 1000);
  nnc_rt_dataset_free(&ds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_raw),
      cmocka_unit_test(test_gzip),
      cmocka_unit_test(test_mixed),
      cmocka_unit_test(test_wrong_magic),
      cmocka_unit_test(test_wrong_type),
      cmocka_unit_test(test_wrong_ndim),
      cmocka_unit_test(test_truncated_header),
      cmocka_unit_test(test_truncated_data),
      cmocka_unit_test(test_truncated_labels),
      cmocka_unit_test(test_trailing_data),
      cmocka_unit_test(test_count_mismatch),
      cmocka_unit_test(test_missing_file),
      cmocka_unit_test(test_corrupt_gzip),
      cmocka_unit_test(test_gzip_two_members),
      cmocka_unit_test(test_gzip_bad_trailer),
      cmocka_unit_test(test_wrapping_dims),
      cmocka_unit_test(test_claims_more_than_file),
      cmocka_unit_test(test_gzip_trailing_junk),
      cmocka_unit_test(test_not_regular),
      cmocka_unit_test(test_fashion_mnist),
  };
  return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
