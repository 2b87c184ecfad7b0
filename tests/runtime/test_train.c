/* test_train.c: the training loop and evaluation (train.c, progress.c),
 * driven by hand-written C "compiled models" that use the arena the way
 * generated code does:
 *   - linear regression y = 2x + 1, train_step doing SGD on w and b in the
 *     arena (per-sample loss through nnc_rt_parallel, gradient in a fixed
 *     order), which records every step, epoch, seed and sample it is given;
 *   - a fixed threshold classifier (no parameters) for accuracy and the
 *     masking of the padded evaluation batch.
 * Checked: convergence, one callback per epoch, floor(n/batch) steps per
 * epoch over distinct samples, scalar inputs, exact evaluation means over a
 * padded last batch, bit-identical reruns, NaN loss errors, progress lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/nnc_rt.h"

enum { MAX_STEPS = 4096, MAX_N = 1000 };
static const float LR = 0.1f;

/* What the current model's steps saw; reset by each test. */
static struct {
  nnc_rt_model m;
  int64_t train_calls, eval_calls;
  float steps[MAX_STEPS], epochs[MAX_STEPS], totals[MAX_STEPS];
  uint32_t seeds[MAX_STEPS];
  int64_t nsamples;
  int64_t samples[MAX_STEPS * 8]; /* index of each sample, in order of use */
  int64_t nan_at_step;            /* write a NaN loss at this global step */
  int64_t n;                      /* data set size, to map x back to an index */
} g;

#define AT(type, off) ((type *)(arena + (off)))

/* ---- Linear regression: x[i] = 2i/n - 1, y = 2x + 1 ---- */
static int64_t lin_w_off, lin_b_off;

static float lin_x(int64_t i, int64_t n) {
  return 2.0f * (float)i / (float)n - 1.0f;
}

static void make_lin_data(nnc_rt_dataset *ds, int64_t n) {
  *ds = (nnc_rt_dataset){.n = n, .rank = 1, .shape = {1}, .sample_size = 1, .target_size = 1};
  ds->x = malloc((size_t)n * sizeof(float));
  ds->targets = malloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) {
    ds->x[i] = lin_x(i, n);
    ds->targets[i] = 2.0f * ds->x[i] + 1.0f;
  }
  g.n = n;
}

typedef struct lin_args {
  const float *x, *y;
  float w, b;
  float *loss;
} lin_args;

static void lin_loss_task(void *arg, int64_t begin, int64_t end) {
  lin_args *a = arg;
  for (int64_t i = begin; i < end; i++) {
    float d = a->w * a->x[i] + a->b - a->y[i];
    a->loss[i] = d * d;
  }
}

static void lin_forward(char *arena, nnc_rt_pool *pool) {
  const nnc_rt_model *m = &g.m;
  lin_args a = {AT(float, m->x_off), AT(float, m->y_off), *AT(float, lin_w_off),
                *AT(float, lin_b_off), AT(float, m->loss_vec_off)};
  nnc_rt_parallel(pool, lin_loss_task, &a, m->batch);
}

static void lin_train(char *arena, nnc_rt_pool *pool) {
  const nnc_rt_model *m = &g.m;
  int64_t k = g.train_calls++;
  assert_true(k < MAX_STEPS);
  g.steps[k] = *AT(float, m->step_off);
  g.epochs[k] = *AT(float, m->epoch_off);
  g.seeds[k] = *AT(uint32_t, m->seed_off);
  g.totals[k] = *AT(float, m->total_steps_off);
  const float *x = AT(float, m->x_off), *y = AT(float, m->y_off);
  for (int64_t i = 0; i < m->batch; i++)
    g.samples[g.nsamples++] = (int64_t)lroundf((x[i] + 1.0f) * (float)g.n / 2.0f);
  lin_forward(arena, pool);
  /* d/dw mean (wx + b - y)^2 = mean 2(wx + b - y)x; d/db = mean 2(wx + b - y) */
  float *w = AT(float, lin_w_off), *b = AT(float, lin_b_off), gw = 0, gb = 0;
  for (int64_t i = 0; i < m->batch; i++) {
    float d = *w * x[i] + *b - y[i];
    gw += 2 * d * x[i];
    gb += 2 * d;
  }
  *w -= LR * gw / (float)m->batch;
  *b -= LR * gb / (float)m->batch;
  *AT(float, m->lr_off) = LR;
  if ((int64_t)g.steps[k] == g.nan_at_step) AT(float, m->loss_vec_off)[2] = NAN;
}

static void lin_eval(char *arena, nnc_rt_pool *pool) {
  g.eval_calls++;
  lin_forward(arena, pool);
}

static nnc_rt_tensor lin_tensors[2];

/* Lays out the arena like the compiler's memory plan would. */
static char *make_lin_model(int64_t batch) {
  memset(&g, 0, sizeof g);
  int64_t off = 0, slot = 64 * ((batch * 4 + 63) / 64);
  nnc_rt_model *m = &g.m;
  m->batch = batch;
  m->sample_size = 1;
  m->target_size = 1;
  m->x_off = off, off += slot;
  m->y_off = off, off += slot;
  m->loss_vec_off = off, off += slot;
  m->correct_vec_off = -1;
  lin_w_off = off, off += 64;
  lin_b_off = off, off += 64;
  m->step_off = off, off += 4;
  m->epoch_off = off, off += 4;
  m->seed_off = off, off += 4;
  m->total_steps_off = off, off += 4;
  m->lr_off = off, off += 4;
  m->arena_bytes = (size_t)off;
  lin_tensors[0] = (nnc_rt_tensor){.name = "lin.w",
                                   .role = NNC_RT_PARAM,
                                   .rank = 1,
                                   .shape = {1},
                                   .offset = lin_w_off,
                                   .init = NNC_RT_INIT_UNIFORM,
                                   .init_a = -1,
                                   .init_b = 1};
  lin_tensors[1] = (nnc_rt_tensor){.name = "lin.b",
                                   .role = NNC_RT_PARAM,
                                   .rank = 1,
                                   .shape = {1},
                                   .offset = lin_b_off,
                                   .init = NNC_RT_INIT_ZEROS};
  m->ntensors = 2;
  m->tensors = lin_tensors;
  m->train_step = lin_train;
  m->eval_step = lin_eval;
  char *arena = calloc(1, m->arena_bytes);
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 1);
  nnc_rt_init_tensors(m, arena, &rng);
  return arena;
}

/* Records every epoch's stats. */
typedef struct epoch_log {
  int calls;
  nnc_rt_epoch_stats stats[64];
} epoch_log;

static void log_epoch(void *user, const nnc_rt_epoch_stats *s) {
  epoch_log *log = user;
  assert_true(log->calls < 64);
  log->stats[log->calls++] = *s;
}

static void test_linear_regression_converges(void **state) {
  const int64_t n = 100, batch = 8, steps = 12, epochs = 30; /* 4 samples dropped */
  char *arena = make_lin_model(batch);
  nnc_rt_dataset train;
  make_lin_data(&train, n);
  nnc_rt_error err = {{0}};
  nnc_rt_pool *pool = nnc_rt_pool_create(2, &err);
  nnc_rt_train_opts opts = {.epochs = epochs, .seed = UINT64_C(0x100000007), .shuffle = 1};
  epoch_log log = {0};
  int rc = nnc_rt_train(&g.m, arena, pool, &train, &train, &opts, log_epoch, &log, &err);
  assert_int_equal(rc, 0);
  float w = *AT(float, lin_w_off), b = *AT(float, lin_b_off);
  assert_true(fabsf(w - 2.0f) < 1e-4f && fabsf(b - 1.0f) < 1e-4f);
  /* One callback per epoch, in order, with plausible stats. */
  assert_int_equal(log.calls, epochs);
  for (int e = 0; e < epochs; e++) {
    assert_int_equal(log.stats[e].epoch, e);
    assert_true(isnan(log.stats[e].train_acc) && isnan(log.stats[e].val_acc));
    assert_true(log.stats[e].seconds >= 0 && log.stats[e].samples_per_s > 0);
  }
  assert_true(log.stats[0].train_loss > 0.01);
  assert_true(log.stats[epochs - 1].train_loss < 1e-8);
  assert_true(log.stats[epochs - 1].val_loss < 1e-8);
  /* floor(n / batch) steps per epoch, the step input 1-based and global,
   * epoch 0-based, seed the low 32 bits, total_steps those of the run. */
  assert_int_equal(g.train_calls, steps * epochs);
  for (int64_t k = 0; k < g.train_calls; k++) {
    assert_true(g.steps[k] == (float)(k + 1));
    assert_true(g.epochs[k] == (float)(k / steps));
    assert_int_equal(g.seeds[k], 7);
    assert_true(g.totals[k] == (float)(steps * epochs));
  }
  /* Each epoch uses steps*batch distinct samples, in a different order. */
  for (int e = 0; e < epochs; e++) {
    char seen[MAX_N] = {0};
    const int64_t *s = g.samples + e * steps * batch;
    for (int64_t i = 0; i < steps * batch; i++) {
      assert_in_range(s[i], 0, n - 1);
      assert_int_equal(seen[s[i]]++, 0);
    }
    if (e > 0) assert_memory_not_equal(s, s - steps * batch, steps * batch * sizeof *s);
  }
  /* Evaluation after each epoch: ceil(100 / 8) = 13 eval batches. */
  assert_int_equal(g.eval_calls, 13 * epochs);
  nnc_rt_pool_destroy(pool);
  nnc_rt_dataset_free(&train);
  free(arena);
}

static void test_no_shuffle_in_order(void **state) {
  char *arena = make_lin_model(4);
  nnc_rt_dataset train;
  make_lin_data(&train, 10);
  nnc_rt_error err;
  nnc_rt_train_opts opts = {.epochs = 2, .seed = 3, .shuffle = 0};
  assert_int_equal(nnc_rt_train(&g.m, arena, NULL, &train, NULL, &opts, NULL, NULL, &err), 0);
  assert_int_equal(g.train_calls, 4); /* 2 per epoch, samples 8 and 9 dropped */
  assert_int_equal(g.eval_calls, 0);
  for (int i = 0; i < 16; i++)
    assert_int_equal(g.samples[i], i % 8);
  nnc_rt_dataset_free(&train);
  free(arena);
}

static void test_evaluate_padded_batch(void **state) {
  /* n = 10, batch 4: batches of 4, 4 and 2 + 2 padding rows. The padding
   * (x = 0, y = 0) would add b^2 = 9 each if it were counted. */
  char *arena = make_lin_model(4);
  *AT(float, lin_w_off) = 0.5f;
  *AT(float, lin_b_off) = 3.0f;
  nnc_rt_dataset ds;
  make_lin_data(&ds, 10);
  double want = 0;
  for (int i = 0; i < 10; i++) {
    float d = 0.5f * ds.x[i] + 3.0f - ds.targets[i];
    want += (double)(d * d);
  }
  want /= 10;
  double loss, acc;
  nnc_rt_error err;
  assert_int_equal(nnc_rt_evaluate(&g.m, arena, NULL, &ds, &loss, &acc, &err), 0);
  assert_int_equal(g.eval_calls, 3);
  assert_true(loss == want);
  assert_true(isnan(acc));
  /* The padding rows really were zero samples. */
  assert_true(AT(float, g.m.x_off)[2] == 0.0f && AT(float, g.m.x_off)[3] == 0.0f);
  assert_true(AT(float, g.m.loss_vec_off)[3] == 9.0f);
  nnc_rt_dataset_free(&ds);
  free(arena);
}

/* ---- Threshold classifier: class 1 iff feature 0 > feature 1 ----
 * loss = 1 + label, correct = (prediction == label). */
static void cls_step(char *arena, nnc_rt_pool *pool) {
  const nnc_rt_model *m = &g.m;
  const float *x = AT(float, m->x_off);
  const int32_t *y = AT(int32_t, m->y_off);
  for (int64_t i = 0; i < m->batch; i++) {
    int pred = x[2 * i] > x[2 * i + 1];
    AT(float, m->loss_vec_off)[i] = 1.0f + (float)y[i];
    AT(float, m->correct_vec_off)[i] = pred == y[i] ? 1.0f : 0.0f;
  }
  g.eval_calls++;
}

static char *make_cls_model(int64_t batch) {
  memset(&g, 0, sizeof g);
  nnc_rt_model *m = &g.m;
  *m = (nnc_rt_model){.batch = batch, .sample_size = 2, .label_is_class = 1, .num_classes = 3};
  m->x_off = 0;
  m->y_off = 256;
  m->loss_vec_off = 512;
  m->correct_vec_off = 768;
  m->step_off = m->epoch_off = m->seed_off = m->total_steps_off = m->lr_off = -1; /* none */
  m->arena_bytes = 1024;
  m->train_step = m->eval_step = cls_step;
  return calloc(1, m->arena_bytes);
}

/* 10 samples; the classifier gets 7 right (samples 2, 5 and 9 wrong). */
static void make_cls_data(nnc_rt_dataset *ds) {
  static const float x[20] = {1, 0, 0, 1, 1, 0, 0, 1, 3, 2, 2, 3, 0, 5, 5, 0, 1, 1, 1, 2};
  static const int32_t labels[10] = {1, 0, 0, 0, 1, 1, 0, 1, 0, 2};
  *ds = (nnc_rt_dataset){.n = 10, .rank = 1, .shape = {2}, .sample_size = 2, .num_classes = 3};
  ds->x = malloc(sizeof x);
  ds->labels = malloc(sizeof labels);
  memcpy(ds->x, x, sizeof x);
  memcpy(ds->labels, labels, sizeof labels);
}

static void test_evaluate_accuracy_masked(void **state) {
  char *arena = make_cls_model(4);
  nnc_rt_dataset ds;
  make_cls_data(&ds);
  double loss, acc;
  nnc_rt_error err;
  assert_int_equal(nnc_rt_evaluate(&g.m, arena, NULL, &ds, &loss, &acc, &err), 0);
  /* Padded rows (x = 0, 0; label 0) would count as correct with loss 1. */
  assert_int_equal(g.eval_calls, 3);
  assert_true(acc == 0.7);
  assert_true(loss == (1 + 0 + 0 + 0 + 1 + 1 + 0 + 1 + 0 + 2 + 10) / 10.0);
  /* Training: 2 steps of 4 (samples 0..7 unshuffled; 6 of 8 right). */
  epoch_log log = {0};
  nnc_rt_train_opts opts = {.epochs = 1, .shuffle = 0};
  assert_int_equal(nnc_rt_train(&g.m, arena, NULL, &ds, &ds, &opts, log_epoch, &log, &err), 0);
  assert_int_equal(log.calls, 1);
  assert_true(log.stats[0].train_acc == 6.0 / 8);
  assert_true(log.stats[0].train_loss == (1 + 0 + 0 + 0 + 1 + 1 + 0 + 1 + 8) / 8.0);
  assert_true(log.stats[0].val_acc == 0.7);
  nnc_rt_dataset_free(&ds);
  free(arena);
}

static void test_label_out_of_range(void **state) {
  char *arena = make_cls_model(4);
  nnc_rt_dataset ds;
  make_cls_data(&ds);
  ds.labels[6] = 3;
  nnc_rt_error err;
  double loss, acc;
  assert_int_equal(nnc_rt_evaluate(&g.m, arena, NULL, &ds, &loss, &acc, &err), -1);
  assert_string_equal(err.msg, "evaluation set: sample 6 has label 3, outside 0..2");
  ds.sample_size = 3;
  nnc_rt_train_opts opts = {.epochs = 1};
  assert_int_equal(nnc_rt_train(&g.m, arena, NULL, &ds, NULL, &opts, NULL, NULL, &err), -1);
  assert_string_equal(err.msg, "training set has 3 features per sample, the model expects 2");
  nnc_rt_dataset_free(&ds);
  free(arena);
}

static void test_too_few_samples(void **state) {
  char *arena = make_lin_model(16);
  nnc_rt_dataset train;
  make_lin_data(&train, 10);
  nnc_rt_error err;
  nnc_rt_train_opts opts = {.epochs = 1};
  assert_int_equal(nnc_rt_train(&g.m, arena, NULL, &train, NULL, &opts, NULL, NULL, &err), -1);
  assert_string_equal(err.msg, "training set has 10 samples, fewer than one batch of 16");
  nnc_rt_dataset_free(&train);
  free(arena);
}

/* Trains from the same initial arena and returns w, b and the log. */
static void train_run(uint64_t seed, nnc_rt_pool *pool, uint32_t wb[2], epoch_log *log) {
  char *arena = make_lin_model(8);
  nnc_rt_dataset train, val;
  make_lin_data(&val, 37);
  make_lin_data(&train, 100);
  nnc_rt_error err;
  nnc_rt_train_opts opts = {.epochs = 3, .seed = seed, .shuffle = 1};
  *log = (epoch_log){0};
  assert_int_equal(nnc_rt_train(&g.m, arena, pool, &train, &val, &opts, log_epoch, log, &err), 0);
  memcpy(&wb[0], arena + lin_w_off, 4);
  memcpy(&wb[1], arena + lin_b_off, 4);
  nnc_rt_dataset_free(&train);
  nnc_rt_dataset_free(&val);
  free(arena);
}

static void test_same_seed_bit_identical(void **state) {
  nnc_rt_error err;
  nnc_rt_pool *pool = nnc_rt_pool_create(2, &err);
  uint32_t a[2], b[2], c[2];
  epoch_log la, lb, lc;
  train_run(42, NULL, a, &la);
  train_run(42, pool, b, &lb);
  train_run(43, NULL, c, &lc);
  assert_memory_equal(a, b, sizeof a);
  assert_false(a[0] == c[0] && a[1] == c[1]);
  for (int e = 0; e < 3; e++) {
    assert_memory_equal(&la.stats[e].train_loss, &lb.stats[e].train_loss, sizeof(double));
    assert_memory_equal(&la.stats[e].val_loss, &lb.stats[e].val_loss, sizeof(double));
    assert_true(la.stats[e].train_loss != lc.stats[e].train_loss);
  }
  nnc_rt_pool_destroy(pool);
}

static void test_nan_loss_stops(void **state) {
  char *arena = make_lin_model(8);
  nnc_rt_dataset train;
  make_lin_data(&train, 100);
  g.nan_at_step = 15; /* epoch 2, its 3rd of 12 steps */
  nnc_rt_error err = {{0}};
  nnc_rt_train_opts opts = {.epochs = 5, .seed = 1, .shuffle = 1};
  epoch_log log = {0};
  assert_int_equal(nnc_rt_train(&g.m, arena, NULL, &train, NULL, &opts, log_epoch, &log, &err), -1);
  assert_string_equal(err.msg, "loss became NaN/inf at epoch 2 step 3/12 (global step 15)");
  assert_int_equal(log.calls, 1);
  assert_int_equal(g.train_calls, 15);
  nnc_rt_dataset_free(&train);
  free(arena);
}

/* Runs 3 epochs with progress into a temporary file and returns its text. */
static char *progress_text(int interactive) {
  char *arena = make_lin_model(8);
  nnc_rt_dataset train;
  make_lin_data(&train, 100);
  FILE *out = tmpfile();
  nnc_rt_error err;
  nnc_rt_train_opts opts = {
      .epochs = 3, .seed = 1, .shuffle = 1, .progress = out, .interactive = interactive};
  assert_int_equal(nnc_rt_train(&g.m, arena, NULL, &train, &train, &opts, NULL, NULL, &err), 0);
  long len = ftell(out);
  char *text = calloc(1, (size_t)len + 1);
  rewind(out);
  assert_int_equal(fread(text, 1, (size_t)len, out), len);
  fclose(out);
  nnc_rt_dataset_free(&train);
  free(arena);
  return text;
}

static void test_progress_plain(void **state) {
  char *text = progress_text(0);
  printf("%s", text);
  assert_null(strchr(text, '\r'));
  int lines = 0;
  for (char *line = text; *line; line = strchr(line, '\n') + 1, lines++) {
    char want[32];
    snprintf(want, sizeof want, "epoch %d/3  train loss ", lines + 1);
    assert_true(strncmp(line, want, strlen(want)) == 0);
    assert_non_null(strstr(line, "  val loss "));
    assert_non_null(strstr(line, " samples/s"));
  }
  assert_int_equal(lines, 3);
  free(text);
}

static void test_progress_interactive(void **state) {
  char *text = progress_text(1);
  /* The last step of each epoch always draws the live line, which the
   * summary line then clears. */
  assert_non_null(strstr(text, "\repoch 1/3  step 12/12  loss "));
  assert_non_null(strstr(text, "\repoch 3/3  step 12/12  loss "));
  assert_non_null(strstr(text, "ETA 0:00"));
  assert_non_null(strstr(text, "\r\033[Kepoch 3/3  train loss "));
  assert_true(text[strlen(text) - 1] == '\n');
  free(text);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_linear_regression_converges),
      cmocka_unit_test(test_no_shuffle_in_order),
      cmocka_unit_test(test_evaluate_padded_batch),
      cmocka_unit_test(test_evaluate_accuracy_masked),
      cmocka_unit_test(test_label_out_of_range),
      cmocka_unit_test(test_too_few_samples),
      cmocka_unit_test(test_same_seed_bit_identical),
      cmocka_unit_test(test_nan_loss_stops),
      cmocka_unit_test(test_progress_plain),
      cmocka_unit_test(test_progress_interactive),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
