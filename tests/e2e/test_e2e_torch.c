/* test_e2e_torch.c: nnc step for step with PyTorch from the same weights.
 *
 * Each case is a .nn file in tests/e2e/torch/ and the PyTorch twin of it in
 * torch_ref.py there, which wrote <case>.ref: the initial weights (f32
 * values, under nnc's tensor names), PyTorch's data loss of each of 30
 * steps (float64) and its final weights. The test compiles the .nn file as
 * `nnc run` does, loads those weights, feeds the same batches (generated on
 * both sides from one integer recipe, so they need not be stored) and
 * requires every step's loss within 1e-6 relative of PyTorch's (1e-5 for
 * the CNN) and the final weights within 1e-5 (1 + |w|) of its. The cases
 * cover every optimizer, L1 and L2 penalties, clipping by norm and by
 * value, step, exponential and warmup+cosine schedules, and a CNN with
 * batch norm and max pooling over tied maxima. */
#define _POSIX_C_SOURCE 200809L
#include "e2e_ref.h"

enum { STEPS = 30, BATCH = 8, CLASSES = 3, PATCH = 4 };
/* Loss tolerance, relative: 1e-5 for the CNN cases (batch norm divides by
 * a batch's spread, which amplifies f32 rounding), 1e-6 for the rest. */
static double loss_rtol(const char *name) {
  return strncmp(name, "cnn", 3) == 0 ? 1e-5 : 1e-6;
}

/* torch_ref.py's stream(): values k / 2^24 from a 64-bit LCG. */
static uint64_t next_value(uint64_t *state) {
  *state = *state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
  return *state >> 40;
}

/* torch_ref.py's batch(): inputs in [-1, 1) (images: zero outside the
 * centre PATCH x PATCH) and labels of step s (0-based). */
static void fill_batch(compiled *c, int s, bool image, int64_t h, int64_t w) {
  const nnc_rt_model *m = c->m;
  uint64_t state = UINT64_C(1000003) * (uint64_t)(s + 1);
  float *x = (float *)(c->mem + m->x_off);
  int32_t *y = (int32_t *)(c->mem + m->y_off);
  for (int64_t b = 0; b < BATCH; b++) {
    for (int64_t i = 0; i < m->sample_size; i++) {
      double v = 2.0 * (double)next_value(&state) / (double)(1 << 24) - 1.0;
      int64_t r = i / w % h, col = i % w;
      bool inside = r >= h / 2 - PATCH / 2 && r < h / 2 + PATCH / 2 && col >= w / 2 - PATCH / 2 &&
                    col < w / 2 + PATCH / 2;
      x[b * m->sample_size + i] = image && !inside ? 0.0f : (float)v;
    }
    y[b] = (int32_t)(next_value(&state) % CLASSES);
  }
}

static void put_scalar(compiled *c, int64_t off, float v) {
  if (off >= 0) memcpy(c->mem + off, &v, sizeof v);
}

/* Every entry that is neither `losses` nor `final.*` is an initial tensor. */
static void load_initial(compiled *c, const ref_file *r) {
  int loaded = 0;
  for (int i = 0; i < r->n; i++) {
    const ref_entry *e = &r->e[i];
    if (!strcmp(e->name, "losses") || !strncmp(e->name, "final.", 6)) continue;
    const nnc_rt_tensor *t = tensor_named(c->m, e->name);
    if (!t) fail_msg("the compiled model has no tensor %s", e->name);
    assert_int_equal(e->n, nnc_rt_numel(t->rank, t->shape));
    float *dst = (float *)(c->mem + t->offset);
    for (int64_t j = 0; j < e->n; j++)
      dst[j] = (float)e->v[j];
    loaded += t->role == NNC_RT_PARAM;
  }
  int params = 0;
  for (int i = 0; i < c->m->ntensors; i++)
    params += c->m->tensors[i].role == NNC_RT_PARAM;
  assert_int_equal(params, loaded);
}

/* Final weights: |nnc - PyTorch| <= 1e-5 (1 + |PyTorch|) for every
 * element; returns the largest difference. */
static double check_final(const compiled *c, const ref_file *r, const char *name) {
  double worst = 0;
  for (int i = 0; i < r->n; i++) {
    const ref_entry *e = &r->e[i];
    if (strncmp(e->name, "final.", 6) != 0) continue;
    const nnc_rt_tensor *t = tensor_named(c->m, e->name + 6);
    assert_non_null(t);
    const float *w = (const float *)(c->mem + t->offset);
    for (int64_t j = 0; j < e->n; j++) {
      double d = fabs(w[j] - e->v[j]);
      worst = fmax(worst, d);
      if (!(d <= 1e-5 * (1 + fabs(e->v[j]))))
        fail_msg("%s: %s[%lld] = %.9g, PyTorch %.9g", name, t->name, (long long)j, w[j], e->v[j]);
    }
  }
  return worst;
}

/* The largest change of a weight from its initial to its final value. */
static double moved(const ref_file *r) {
  double most = 0;
  for (int i = 0; i < r->n; i++) {
    const ref_entry *e = &r->e[i];
    if (strncmp(e->name, "final.", 6) != 0) continue;
    const ref_entry *e0 = ref_get(r, e->name + 6, e->n);
    for (int64_t j = 0; j < e->n; j++)
      most = fmax(most, fabs(e->v[j] - e0->v[j]));
  }
  return most;
}

static void run_case(const char *name) {
  char path[1024];
  ref_file r;
  snprintf(path, sizeof path, "%s/tests/e2e/torch/%s.ref", NNC_SOURCE_DIR, name);
  ref_load(&r, path);
  compiled c;
  snprintf(path, sizeof path, "%s/tests/e2e/torch/%s.nn", NNC_SOURCE_DIR, name);
  compile_nn(&c, path, 1);
  assert_int_equal(c.m->batch, BATCH);
  assert_int_equal(c.m->label_is_class, 1);
  load_initial(&c, &r);
  const nnc_rt_tensor *first = &c.m->tensors[0];
  bool image = first->rank == 4; /* the cnn cases' conv weight [F, 1, kh, kw] */
  const ref_entry *losses = ref_get(&r, "losses", STEPS);
  double worst = 0;
  for (int s = 0; s < STEPS; s++) {
    fill_batch(&c, s, image, image ? 8 : 1, image ? 8 : c.m->sample_size);
    put_scalar(&c, c.m->step_off, (float)(s + 1));
    put_scalar(&c, c.m->epoch_off, 0);
    c.m->train_step(c.mem, c.pool);
    const float *lv = (const float *)(c.mem + c.m->loss_vec_off);
    double got = 0;
    for (int i = 0; i < BATCH; i++)
      got += lv[i];
    got /= BATCH;
    double rel = fabs(got - losses->v[s]) / fabs(losses->v[s]);
    worst = fmax(worst, rel);
    if (!(rel <= loss_rtol(name)))
      fail_msg("%s step %d: loss %.9g, PyTorch %.9g (relative %.2e)", name, s + 1, got,
               losses->v[s], rel);
  }
  double worst_w = check_final(&c, &r, name);
  assert_true(moved(&r) > 1e-2); /* training did something, or agreeing proves little */
  print_message("%-24s worst loss rel diff %.2e, worst final weight diff %.2e\n", name, worst,
                worst_w);
  release(&c);
  ref_free(&r);
}

#define CASE(n)                                                                                    \
  static void test_##n(void **state) {                                                             \
    (void)state;                                                                                   \
    run_case(#n);                                                                                  \
  }
CASE(sgd_l2)
CASE(momentum_clip_norm)
CASE(nesterov_wd_clip_value)
CASE(adam_step)
CASE(adamw_warmup_cosine)
CASE(rmsprop_exponential)
CASE(adagrad_l1)
CASE(cnn_adam)
CASE(cnn_momentum)

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sgd_l2),
      cmocka_unit_test(test_momentum_clip_norm),
      cmocka_unit_test(test_nesterov_wd_clip_value),
      cmocka_unit_test(test_adam_step),
      cmocka_unit_test(test_adamw_warmup_cosine),
      cmocka_unit_test(test_rmsprop_exponential),
      cmocka_unit_test(test_adagrad_l1),
      cmocka_unit_test(test_cnn_adam),
      cmocka_unit_test(test_cnn_momentum),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
