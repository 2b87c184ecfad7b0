/* test_dataset.c: transformations of data sets (dataset.c) and image
 * augmentation (augment.c): scaling, standardisation fitted on one set and
 * applied to another (values against hand-computed means and population
 * standard deviations), the seeded validation split (deterministic, a
 * partition, order kept), and each augmentation against its definition
 * (a shift explains every cropped/shifted image, flips mirror, noise has
 * the requested spread, the same seed repeats the same draws). A set held
 * as bytes (IDX images) against the same data held as f32: the same
 * statistics, and the same floats in every gathered and augmented batch. */
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
#include "runtime/rt_internal.h"

/* n samples of d features, x[i][j] = i * 10 + j, label i % 3. */
static void make(nnc_rt_dataset *ds, int64_t n, int64_t d) {
  *ds = (nnc_rt_dataset){.n = n, .rank = 1, .shape = {d}, .sample_size = d, .num_classes = 3};
  ds->x = malloc((size_t)(n * d) * sizeof(float));
  ds->labels = malloc((size_t)n * sizeof(int32_t));
  for (int64_t i = 0; i < n; i++) {
    for (int64_t j = 0; j < d; j++)
      ds->x[i * d + j] = (float)(i * 10 + j);
    ds->labels[i] = (int32_t)(i % 3);
  }
}

static void test_scale(void **state) {
  nnc_rt_dataset ds;
  make(&ds, 4, 2);
  nnc_rt_dataset_scale(&ds, 0.5f);
  assert_true(ds.x[0] == 0.0f && ds.x[1] == 0.5f && ds.x[7] == 15.5f);
  nnc_rt_dataset_free(&ds);
}

static void test_standardize(void **state) {
  /* Feature 0: 1, 2, 3, 6 -> mean 3, var (4+1+0+9)/4 = 3.5. Feature 1
   * constant 7 -> std stored as 1. */
  const float x[8] = {1, 7, 2, 7, 3, 7, 6, 7};
  nnc_rt_dataset train = {.n = 4, .rank = 1, .shape = {2}, .sample_size = 2};
  train.x = malloc(sizeof x);
  memcpy(train.x, x, sizeof x);
  nnc_rt_norm_stats st;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_norm_fit(&st, &train, NULL, &err), 0);
  assert_int_equal(st.size, 2);
  assert_true(st.mean[0] == 3.0f && st.mean[1] == 7.0f);
  assert_true(st.std[0] == (float)sqrt(3.5) && st.std[1] == 1.0f);
  assert_int_equal(nnc_rt_norm_apply(&st, &train, NULL, &err), 0);
  assert_true(train.x[0] == (1.0f - 3.0f) / (float)sqrt(3.5));
  assert_true(train.x[6] == (6.0f - 3.0f) / (float)sqrt(3.5));
  assert_true(train.x[1] == 0.0f && train.x[7] == 0.0f);
  /* Applied to another set with the training statistics. */
  nnc_rt_dataset test = {.n = 1, .rank = 1, .shape = {2}, .sample_size = 2};
  test.x = malloc(2 * sizeof(float));
  test.x[0] = 3, test.x[1] = 9;
  assert_int_equal(nnc_rt_norm_apply(&st, &test, NULL, &err), 0);
  assert_true(test.x[0] == 0.0f && test.x[1] == 2.0f);
  test.sample_size = 3;
  assert_int_equal(nnc_rt_norm_apply(&st, &test, NULL, &err), -1);
  assert_string_equal(err.msg, "standardisation statistics are for 2 features, the set has 3");
  nnc_rt_norm_free(&st);
  nnc_rt_dataset_free(&train);
  nnc_rt_dataset_free(&test);
}

/* A larger set far from zero (features 1000 + small spread, one constant):
 * the one-pass shifted statistics match a two-pass double reference, and
 * a pool of three threads gives the same bits as one thread. */
static void test_standardize_pool(void **state) {
  enum { N = 1001, D = 37 };
  nnc_rt_dataset a = {.n = N, .rank = 1, .shape = {D}, .sample_size = D}, b = a;
  a.x = malloc(N * D * sizeof(float));
  b.x = malloc(N * D * sizeof(float));
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 11);
  for (int i = 0; i < N * D; i++)
    a.x[i] = i % D == 5 ? 42.0f : 1000.0f + (float)(i % D) + (float)nnc_rt_rng_normal(&rng);
  memcpy(b.x, a.x, N * D * sizeof(float));
  nnc_rt_error err = {{0}};
  nnc_rt_pool *pool = nnc_rt_pool_create(3, &err);
  assert_non_null(pool);
  nnc_rt_norm_stats s1, s3;
  assert_int_equal(nnc_rt_norm_fit(&s1, &a, NULL, &err), 0);
  assert_int_equal(nnc_rt_norm_fit(&s3, &b, pool, &err), 0);
  for (int j = 0; j < D; j++) {
    double m = 0, v = 0;
    for (int i = 0; i < N; i++)
      m += a.x[i * D + j];
    m /= N;
    for (int i = 0; i < N; i++)
      v += (a.x[i * D + j] - m) * (a.x[i * D + j] - m);
    double sd = sqrt(v / N);
    assert_float_equal(s1.mean[j], m, 1e-4);
    if (j == 5)
      assert_true(s1.std[j] == 1.0f && s1.mean[j] == 42.0f);
    else
      assert_float_equal(s1.std[j], sd, 1e-5 * sd + 1e-6);
    assert_memory_equal(&s1.mean[j], &s3.mean[j], sizeof(float));
    assert_memory_equal(&s1.std[j], &s3.std[j], sizeof(float));
  }
  assert_int_equal(nnc_rt_norm_apply(&s1, &a, NULL, &err), 0);
  assert_int_equal(nnc_rt_norm_apply(&s3, &b, pool, &err), 0);
  assert_memory_equal(a.x, b.x, N * D * sizeof(float));
  assert_float_equal(a.x[7 * D + 5], 0.0, 0);
  nnc_rt_pool_destroy(pool);
  nnc_rt_norm_free(&s1);
  nnc_rt_norm_free(&s3);
  nnc_rt_dataset_free(&a);
  nnc_rt_dataset_free(&b);
}

static void test_split(void **state) {
  nnc_rt_dataset a, va, b, vb;
  nnc_rt_error err = {{0}};
  make(&a, 100, 3);
  make(&b, 100, 3);
  assert_int_equal(nnc_rt_dataset_split(&a, &va, 0.2, 7, &err), 0);
  assert_int_equal(nnc_rt_dataset_split(&b, &vb, 0.2, 7, &err), 0);
  assert_int_equal(a.n, 80);
  assert_int_equal(va.n, 20);
  assert_int_equal(va.sample_size, 3);
  assert_int_equal(va.num_classes, 3);
  /* Same seed, same split. */
  assert_memory_equal(va.x, vb.x, 60 * sizeof(float));
  assert_memory_equal(a.x, b.x, 240 * sizeof(float));
  /* A partition of the 100 samples, each part in ascending order, rows
   * intact (x and label move together). */
  char seen[100] = {0};
  const nnc_rt_dataset *parts[2] = {&a, &va};
  for (int p = 0; p < 2; p++) {
    int64_t prev = -1;
    for (int64_t i = 0; i < parts[p]->n; i++) {
      int64_t id = (int64_t)parts[p]->x[i * 3] / 10;
      assert_true(id > prev);
      prev = id;
      assert_true(parts[p]->x[i * 3 + 2] == (float)(id * 10 + 2));
      assert_int_equal(parts[p]->labels[i], id % 3);
      assert_int_equal(seen[id]++, 0);
    }
  }
  /* Another seed, another split. */
  nnc_rt_dataset c, vc;
  make(&c, 100, 3);
  assert_int_equal(nnc_rt_dataset_split(&c, &vc, 0.2, 8, &err), 0);
  assert_memory_not_equal(va.x, vc.x, 60 * sizeof(float));
  /* Bad fractions. */
  nnc_rt_dataset d, vd;
  make(&d, 3, 1);
  assert_int_equal(nnc_rt_dataset_split(&d, &vd, 1.0, 1, &err), -1);
  assert_string_equal(err.msg, "validation fraction 1 is not between 0 and 1");
  assert_int_equal(nnc_rt_dataset_split(&d, &vd, 0.1, 1, &err), -1);
  assert_string_equal(err.msg, "a validation fraction of 0.1 of 3 samples leaves 0 for "
                               "validation and 3 for training; both need at least one");
  assert_int_equal(d.n, 3);
  nnc_rt_dataset *all[] = {&a, &va, &b, &vb, &c, &vc, &d};
  for (int i = 0; i < 7; i++)
    nnc_rt_dataset_free(all[i]);
}

/* ---- Sets held as bytes against the same data as f32 ---- */

enum { BN = 53, BH = 4, BW = 5, BD = BH * BW };

/* BN images of BH x BW bytes (every value 0..255 occurs, some features
 * constant), as a byte set with this scale and as the f32 set an f32
 * loader would have made: x = (float)byte * scale. Labels i % 3. */
static void make_pair(nnc_rt_dataset *bytes, nnc_rt_dataset *floats, float scale) {
  nnc_rt_dataset shape = {
      .n = BN, .rank = 2, .shape = {BH, BW}, .sample_size = BD, .num_classes = 3};
  *bytes = shape, *floats = shape;
  bytes->storage_len = BN * BD;
  bytes->u8 = bytes->storage = nnc_rt_big_alloc(bytes->storage_len);
  floats->x = malloc(BN * BD * sizeof(float));
  bytes->labels = malloc(BN * sizeof(int32_t));
  floats->labels = malloc(BN * sizeof(int32_t));
  assert_true(bytes->u8 && floats->x && bytes->labels && floats->labels);
  for (int b = 0; b < 256; b++)
    bytes->byte_value[b] = (float)b * scale;
  nnc_rt_dataset_bytes_changed(bytes);
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 5);
  for (int i = 0; i < BN * BD; i++) {
    int j = i % BD;
    uint8_t v = j == 3 ? 77 : (uint8_t)(i < 256 ? i : nnc_rt_rng_uniform(&rng) * 256);
    bytes->u8[i] = v;
    floats->x[i] = (float)v * scale;
  }
  for (int i = 0; i < BN; i++)
    bytes->labels[i] = floats->labels[i] = i % 3;
}

/* Every sample of a reads as the same floats as the same sample of b. */
static void assert_same_samples(const nnc_rt_dataset *a, const nnc_rt_dataset *b) {
  assert_int_equal(a->n, b->n);
  float xa[BD], xb[BD];
  for (int64_t i = 0; i < a->n; i++) {
    nnc_rt_dataset_sample(a, i, xa);
    nnc_rt_dataset_sample(b, i, xb);
    assert_memory_equal(xa, xb, sizeof xa);
    assert_int_equal(a->labels[i], b->labels[i]);
  }
}

/* Scale (the loader's and a second one), standardisation fitted on 1 and
 * on 3 threads and applied: the byte set gives the f32 set's statistics
 * bit for bit, and its samples the same floats; a gathered batch (as the
 * training loop writes it into the arena) is the same too. */
static void test_bytes_as_floats(void **state) {
  nnc_rt_dataset bytes, floats;
  make_pair(&bytes, &floats, 1.0f / 255);
  assert_null(bytes.x);
  assert_same_samples(&bytes, &floats);
  nnc_rt_dataset_scale(&bytes, 3.0f);
  nnc_rt_dataset_scale(&floats, 3.0f);
  assert_same_samples(&bytes, &floats);
  nnc_rt_error err = {{0}};
  nnc_rt_pool *pool = nnc_rt_pool_create(3, &err);
  assert_non_null(pool);
  nnc_rt_norm_stats sb, sb3, sf;
  assert_int_equal(nnc_rt_norm_fit(&sb, &bytes, NULL, &err), 0);
  assert_int_equal(nnc_rt_norm_fit(&sb3, &bytes, pool, &err), 0);
  assert_int_equal(nnc_rt_norm_fit(&sf, &floats, NULL, &err), 0);
  assert_memory_equal(sb.mean, sf.mean, BD * sizeof(float));
  assert_memory_equal(sb.std, sf.std, BD * sizeof(float));
  assert_memory_equal(sb3.mean, sf.mean, BD * sizeof(float));
  assert_memory_equal(sb3.std, sf.std, BD * sizeof(float));
  assert_true(sb.std[3] == 1.0f && sb.mean[3] == 77.0f / 255 * 3); /* constant feature */
  assert_true(sb.std[0] > 0.5f && sb.std[0] < 1.5f);
  assert_int_equal(nnc_rt_norm_apply(&sb, &bytes, pool, &err), 0);
  assert_int_equal(nnc_rt_norm_apply(&sf, &floats, pool, &err), 0);
  assert_true(bytes.u8_mean == sb.mean && bytes.u8_std == sb.std);
  assert_same_samples(&bytes, &floats);
  /* A batch of 7 rows gathered into an arena, in a shuffled order. */
  nnc_rt_model m = {
      .batch = 7, .sample_size = BD, .x_off = 0, .y_off = 7 * BD * 4, .label_is_class = 1};
  char arena_b[7 * BD * 4 + 7 * 4], arena_f[sizeof arena_b];
  for (int64_t r = 0; r < 7; r++) {
    nnc_rt_put_sample(&m, arena_b, &bytes, r, (r * 17 + 5) % BN);
    nnc_rt_put_sample(&m, arena_f, &floats, r, (r * 17 + 5) % BN);
  }
  assert_memory_equal(arena_b, arena_f, sizeof arena_b);
  /* A standardised value by hand: sample 1, feature 0. */
  float x1[BD];
  nnc_rt_dataset_sample(&bytes, 1, x1);
  assert_true(x1[0] == ((float)bytes.u8[BD] / 255 * 3 - sb.mean[0]) / sb.std[0] ||
              x1[0] == ((float)bytes.u8[BD] * (1.0f / 255) * 3.0f - sb.mean[0]) / sb.std[0]);
  /* Statistics go on once, and are fitted before that. */
  assert_int_equal(nnc_rt_norm_apply(&sb, &bytes, NULL, &err), -1);
  assert_string_equal(err.msg, "the set is standardised already");
  nnc_rt_norm_free(&sb3);
  assert_int_equal(nnc_rt_norm_fit(&sb3, &bytes, NULL, &err), -1);
  assert_string_equal(err.msg, "cannot fit statistics to a standardised set");
  nnc_rt_pool_destroy(pool);
  nnc_rt_norm_free(&sb);
  nnc_rt_norm_free(&sf);
  nnc_rt_dataset_free(&bytes);
  nnc_rt_dataset_free(&floats);
  assert_null(bytes.u8);
  assert_null(bytes.storage);
}

/* Samples of a byte set whose values are (float)b * step are converted 16
 * features at a time where the CPU has AVX-512 (byte_step set): the same
 * floats as the table, bit for bit, with and without statistics, for a
 * sample size with a tail (BD = 20) and one of whole blocks (32); a table
 * that is no multiple of one step keeps the table (byte_step 0). */
static void test_bytes_vector_path(void **state) {
  nnc_rt_dataset bytes, floats;
  make_pair(&bytes, &floats, 1.0f / 255);
  assert_true(bytes.byte_step == 1.0f / 255);
  nnc_rt_dataset table = bytes;
  table.byte_step = 0; /* the lookup path, for reference */
  assert_same_samples(&bytes, &table);
  assert_same_samples(&bytes, &floats);
  nnc_rt_error err = {{0}};
  nnc_rt_norm_stats st;
  assert_int_equal(nnc_rt_norm_fit(&st, &bytes, NULL, &err), 0);
  assert_int_equal(nnc_rt_norm_apply(&st, &bytes, NULL, &err), 0);
  table = bytes, table.byte_step = 0;
  assert_same_samples(&bytes, &table);
  float x[BD];
  nnc_rt_dataset_sample(&bytes, 7, x);
  for (int j = 0; j < BD; j++)
    assert_true(x[j] == ((float)bytes.u8[7 * BD + j] * (1.0f / 255) - st.mean[j]) / st.std[j]);
  /* 32 features: two whole blocks, every byte value. */
  nnc_rt_dataset wide = {.n = 8, .rank = 1, .shape = {32}, .sample_size = 32};
  uint8_t px[8 * 32];
  for (int i = 0; i < 8 * 32; i++)
    px[i] = (uint8_t)(i * 7 + 3);
  wide.u8 = px;
  for (int b = 0; b < 256; b++)
    wide.byte_value[b] = (float)b * 0.37f;
  nnc_rt_dataset_bytes_changed(&wide);
  assert_true(wide.byte_step == 0.37f);
  float w[32];
  for (int64_t i = 0; i < wide.n; i++) {
    nnc_rt_dataset_sample(&wide, i, w);
    for (int j = 0; j < 32; j++)
      assert_true(w[j] == wide.byte_value[px[i * 32 + j]]);
  }
  /* Not one step: byte 255 off by one ulp. */
  wide.byte_value[255] = nextafterf(wide.byte_value[255], 1e30f);
  nnc_rt_dataset_bytes_changed(&wide);
  assert_true(wide.byte_step == 0);
  nnc_rt_norm_free(&st);
  nnc_rt_dataset_free(&bytes);
  nnc_rt_dataset_free(&floats);
}

/* The validation split of a byte set takes the same samples as of the f32
 * set, and the augmentations of gathered batches (crop, flip, noise) draw
 * and give the same floats. */
static void test_bytes_split_and_augment(void **state) {
  nnc_rt_dataset bytes, floats, vb, vf;
  make_pair(&bytes, &floats, 1.0f / 255);
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_dataset_split(&bytes, &vb, 0.25, 9, &err), 0);
  assert_int_equal(nnc_rt_dataset_split(&floats, &vf, 0.25, 9, &err), 0);
  assert_int_equal(vb.n, 13);
  assert_non_null(vb.u8);
  assert_null(vb.x);
  assert_same_samples(&bytes, &floats);
  assert_same_samples(&vb, &vf);
  nnc_rt_norm_stats sb, sf;
  assert_int_equal(nnc_rt_norm_fit(&sb, &bytes, NULL, &err), 0);
  assert_int_equal(nnc_rt_norm_fit(&sf, &floats, NULL, &err), 0);
  assert_memory_equal(sb.std, sf.std, BD * sizeof(float));
  assert_int_equal(nnc_rt_norm_apply(&sb, &bytes, NULL, &err), 0);
  assert_int_equal(nnc_rt_norm_apply(&sf, &floats, NULL, &err), 0);
  const nnc_rt_augment aug[3] = {
      {NNC_RT_AUG_RANDOM_CROP, 1}, {NNC_RT_AUG_HFLIP, 0.5}, {NNC_RT_AUG_NOISE, 0.1}};
  enum { ROWS = 8 };
  float xb[ROWS * BD], xf[ROWS * BD], scratch[BD];
  nnc_rt_rng rb, rf;
  nnc_rt_rng_seed(&rb, 3);
  nnc_rt_rng_seed(&rf, 3);
  for (int batch = 0; batch < 4; batch++) {
    for (int r = 0; r < ROWS; r++) {
      nnc_rt_dataset_sample(&bytes, (batch * ROWS + r) % bytes.n, xb + r * BD);
      nnc_rt_dataset_sample(&floats, (batch * ROWS + r) % floats.n, xf + r * BD);
    }
    nnc_rt_augment_batch(aug, 3, bytes.rank, bytes.shape, xb, ROWS, scratch, &rb);
    nnc_rt_augment_batch(aug, 3, floats.rank, floats.shape, xf, ROWS, scratch, &rf);
    assert_memory_equal(xb, xf, sizeof xb);
  }
  nnc_rt_norm_free(&sb);
  nnc_rt_norm_free(&sf);
  nnc_rt_dataset *all[] = {&bytes, &floats, &vb, &vf};
  for (int i = 0; i < 4; i++)
    nnc_rt_dataset_free(all[i]);
}

/* Byte values that are not finite (a scale too large) cannot be fitted. */
static void test_bytes_not_finite(void **state) {
  nnc_rt_dataset bytes, floats;
  make_pair(&bytes, &floats, 1e30f);
  nnc_rt_dataset_scale(&bytes, 1e30f);
  nnc_rt_norm_stats st;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_norm_fit(&st, &bytes, NULL, &err), -1);
  assert_string_equal(err.msg, "cannot standardise: the scaled byte values are not all finite");
  nnc_rt_dataset_free(&bytes);
  nnc_rt_dataset_free(&floats);
}

/* Fashion-MNIST's test images (when installed), as bytes and as f32
 * scaled by 1/255: the same 784 means and standard deviations, bit for
 * bit (the f32 pass's sums of the means are exact here, and its sums of
 * squares happen to round to the same f32 std). */
static void test_bytes_fashion_stats(void **state) {
  const char *images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  const char *labels = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
  FILE *probe = fopen(images, "rb");
  if (!probe) skip();
  fclose(probe);
  nnc_rt_dataset bytes, floats;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_load_idx(&bytes, images, labels, 1.0f / 255, &err), 0);
  assert_true(bytes.byte_step == 1.0f / 255); /* read by the vector path */
  floats = bytes;
  floats.u8 = NULL, floats.storage = NULL, floats.labels = NULL;
  floats.x = malloc((size_t)(bytes.n * bytes.sample_size) * sizeof(float));
  assert_non_null(floats.x);
  for (int64_t i = 0; i < bytes.n; i++)
    nnc_rt_dataset_sample(&bytes, i, floats.x + i * bytes.sample_size);
  nnc_rt_norm_stats sb, sf;
  assert_int_equal(nnc_rt_norm_fit(&sb, &bytes, NULL, &err), 0);
  assert_int_equal(nnc_rt_norm_fit(&sf, &floats, NULL, &err), 0);
  assert_memory_equal(sb.mean, sf.mean, 784 * sizeof(float));
  assert_memory_equal(sb.std, sf.std, 784 * sizeof(float));
  /* The corner pixel is almost always 0; the centre is not. */
  assert_true(sb.mean[0] < 0.01f && sb.mean[14 * 28 + 14] > 0.3f);
  nnc_rt_norm_free(&sb);
  nnc_rt_norm_free(&sf);
  nnc_rt_dataset_free(&bytes);
  nnc_rt_dataset_free(&floats);
}

/* A 2-channel 5x6 image: channel k, pixel (y, x) = 100k + 10y + x + 1. */
enum { C = 2, H = 5, W = 6 };
static void image(float *x) {
  for (int k = 0; k < C; k++)
    for (int y = 0; y < H; y++)
      for (int xx = 0; xx < W; xx++)
        x[(k * H + y) * W + xx] = (float)(100 * k + 10 * y + xx + 1);
}

/* Is out the image shifted by some (dy, dx) with |dy|, |dx| <= r? */
static int explained_by_shift(const float *out, int r, int *sdy, int *sdx) {
  float in[C * H * W];
  image(in);
  for (int dy = -r; dy <= r; dy++)
    for (int dx = -r; dx <= r; dx++) {
      int ok = 1;
      for (int k = 0; k < C && ok; k++)
        for (int y = 0; y < H && ok; y++)
          for (int x = 0; x < W && ok; x++) {
            int sy = y + dy, sx = x + dx;
            float want = sy >= 0 && sy < H && sx >= 0 && sx < W ? in[(k * H + sy) * W + sx] : 0;
            ok = out[(k * H + y) * W + x] == want;
          }
      if (ok) return *sdy = dy, *sdx = dx, 1;
    }
  return 0;
}

static void test_crop_and_shift(void **state) {
  const int64_t shape[3] = {C, H, W};
  float x[C * H * W], scratch[C * H * W];
  for (int kind = 0; kind < 2; kind++) {
    nnc_rt_augment aug = {kind ? NNC_RT_AUG_SHIFT : NNC_RT_AUG_RANDOM_CROP, 2};
    nnc_rt_rng rng;
    nnc_rt_rng_seed(&rng, 5);
    int hist[5][5] = {{0}};
    for (int t = 0; t < 500; t++) {
      image(x);
      nnc_rt_augment_sample(&aug, 1, 3, shape, x, scratch, &rng);
      int dy = 99, dx = 99;
      assert_true(explained_by_shift(x, 2, &dy, &dx));
      hist[dy + 2][dx + 2]++;
    }
    /* All 25 offsets occur (500 draws, p = 1/25 each). */
    for (int i = 0; i < 25; i++)
      assert_true(hist[i / 5][i % 5] > 0);
  }
}

static void test_hflip_and_noise(void **state) {
  /* [H, W] samples: the first channel of image(). */
  const int64_t shape[2] = {H, W};
  float x[C * H * W], scratch[H * W];
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 1);
  nnc_rt_augment always = {NNC_RT_AUG_HFLIP, 1.0}, never = {NNC_RT_AUG_HFLIP, 0.0};
  image(x);
  nnc_rt_augment_sample(&always, 1, 2, shape, x, scratch, &rng);
  for (int y = 0; y < H; y++)
    for (int xx = 0; xx < W; xx++)
      assert_true(x[y * W + xx] == (float)(10 * y + (W - 1 - xx) + 1));
  image(x);
  nnc_rt_augment_sample(&never, 1, 2, shape, x, scratch, &rng);
  assert_true(x[0] == 1.0f && x[W - 1] == (float)W);
  /* hflip(0.5): about half of 1000 samples flipped. */
  nnc_rt_augment half = {NNC_RT_AUG_HFLIP, 0.5};
  int flipped = 0;
  for (int t = 0; t < 1000; t++) {
    image(x);
    nnc_rt_augment_sample(&half, 1, 2, shape, x, scratch, &rng);
    flipped += x[0] == (float)W;
  }
  assert_in_range(flipped, 430, 570);
  /* noise(0.5): mean ~0, std ~0.5 over 30000 values. */
  nnc_rt_augment noise = {NNC_RT_AUG_NOISE, 0.5};
  double sum = 0, sq = 0;
  for (int t = 0; t < 1000; t++) {
    image(x);
    nnc_rt_augment_sample(&noise, 1, 2, shape, x, scratch, &rng);
    for (int i = 0; i < H * W; i++) {
      double d = x[i] - (double)(10 * (i / W) + i % W + 1);
      sum += d, sq += d * d;
    }
  }
  double mean = sum / 30000, sd = sqrt(sq / 30000 - mean * mean);
  assert_true(fabs(mean) < 0.02 && fabs(sd - 0.5) < 0.02);
}

static void test_batch_deterministic(void **state) {
  const int64_t shape[3] = {C, H, W};
  const nnc_rt_augment augs[3] = {
      {NNC_RT_AUG_RANDOM_CROP, 1}, {NNC_RT_AUG_HFLIP, 0.5}, {NNC_RT_AUG_NOISE, 0.1}};
  float a[4 * C * H * W], b[4 * C * H * W], scratch[C * H * W];
  for (int pass = 0; pass < 2; pass++) {
    float *x = pass ? b : a;
    for (int r = 0; r < 4; r++)
      image(x + r * C * H * W);
    nnc_rt_rng rng;
    nnc_rt_rng_seed(&rng, 99);
    nnc_rt_augment_batch(augs, 3, 3, shape, x, 4, scratch, &rng);
  }
  assert_memory_equal(a, b, sizeof a);
  /* Rows got different draws. */
  assert_memory_not_equal(a, a + C * H * W, C * H * W * sizeof(float));
}

static void test_augment_check(void **state) {
  nnc_rt_error err = {{0}};
  const int64_t flat[1] = {784}, img[2] = {28, 28};
  nnc_rt_augment flip = {NNC_RT_AUG_HFLIP, 0.5}, bad_crop = {NNC_RT_AUG_RANDOM_CROP, 1.5},
                 bad_p = {NNC_RT_AUG_HFLIP, 2}, bad_noise = {NNC_RT_AUG_NOISE, -1};
  assert_int_equal(nnc_rt_augment_check(&flip, 1, 1, flat, &err), -1);
  assert_string_equal(err.msg, "hflip needs image samples [H,W] or [C,H,W]; the training samples "
                               "have shape [784]");
  assert_int_equal(nnc_rt_augment_check(&flip, 1, 2, img, &err), 0);
  assert_int_equal(nnc_rt_augment_check(NULL, 0, 1, flat, &err), 0);
  assert_int_equal(nnc_rt_augment_check(&bad_crop, 1, 2, img, &err), -1);
  assert_string_equal(err.msg, "random_crop: 1.5 pixels is not a whole number >= 0");
  assert_int_equal(nnc_rt_augment_check(&bad_p, 1, 2, img, &err), -1);
  assert_string_equal(err.msg, "hflip: probability 2 is not in [0, 1]");
  assert_int_equal(nnc_rt_augment_check(&bad_noise, 1, 2, img, &err), -1);
  assert_string_equal(err.msg, "noise: std -1 is not a finite number >= 0");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scale),
      cmocka_unit_test(test_standardize),
      cmocka_unit_test(test_standardize_pool),
      cmocka_unit_test(test_split),
      cmocka_unit_test(test_bytes_as_floats),
      cmocka_unit_test(test_bytes_vector_path),
      cmocka_unit_test(test_bytes_split_and_augment),
      cmocka_unit_test(test_bytes_not_finite),
      cmocka_unit_test(test_bytes_fashion_stats),
      cmocka_unit_test(test_crop_and_shift),
      cmocka_unit_test(test_hflip_and_noise),
      cmocka_unit_test(test_batch_deterministic),
      cmocka_unit_test(test_augment_check),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
