/* test_e2e_mlp.c: the whole compiler against an independent implementation.
 *
 * tests/e2e/data/mlp_ref.nn goes through the front end, the pass pipeline
 * (autodiff, Adam, simplification) and the JIT, exactly as `nnc run` does.
 * The compiled training step then starts from PyTorch's initial weights and
 * is fed PyTorch's batches (tests/e2e/data/mlp_ref.txt, made by
 * gen_mlp_ref.py beside it); every step's mean loss and the final weights
 * must agree with PyTorch's (float64) within f32 rounding.
 *
 * A second test runs the same steps with 1 and 2 threads: bit-identical. */
#define _POSIX_C_SOURCE 200809L
#include "e2e_ref.h"

enum { STEPS = 8, BATCH = 16, IN = 20, OUT = 5 };

static const char *const kNames[] = {"dense1.weight", "dense1.bias",   "dense2.weight",
                                     "dense2.bias",   "dense3.weight", "dense3.bias"};
enum { NPARAMS = sizeof kNames / sizeof kNames[0] };

/* The reference's initial weights into the arena by name (PyTorch's layout
 * [out, in] is nnc's dense layout). Every trainable tensor is covered. */
static void load_weights(compiled *c, const ref_file *r) {
  int loaded = 0;
  for (int k = 0; k < NPARAMS; k++) {
    char name[96];
    snprintf(name, sizeof name, "mlp.%s", kNames[k]);
    const nnc_rt_tensor *t = tensor_named(c->m, name);
    if (!t) fail_msg("the compiled model has no tensor %s", name);
    const ref_entry *e = ref_get(r, kNames[k], nnc_rt_numel(t->rank, t->shape));
    float *dst = (float *)(c->mem + t->offset);
    for (int64_t i = 0; i < e->n; i++)
      dst[i] = (float)e->v[i];
    loaded++;
  }
  int params = 0;
  for (int i = 0; i < c->m->ntensors; i++)
    params += c->m->tensors[i].role == NNC_RT_PARAM;
  assert_int_equal(params, loaded);
}

/* One optimizer step on the reference's batch s (0-based); the mean loss. */
static double train_step(compiled *c, const ref_file *r, int s) {
  const nnc_rt_model *m = c->m;
  char name[16];
  snprintf(name, sizeof name, "x%d", s);
  const ref_entry *x = ref_get(r, name, BATCH * IN);
  snprintf(name, sizeof name, "y%d", s);
  const ref_entry *y = ref_get(r, name, BATCH);
  float *xd = (float *)(c->mem + m->x_off);
  int32_t *yd = (int32_t *)(c->mem + m->y_off);
  for (int i = 0; i < BATCH * IN; i++)
    xd[i] = (float)x->v[i];
  for (int i = 0; i < BATCH; i++)
    yd[i] = (int32_t)y->v[i];
  if (m->step_off >= 0) {
    float step = (float)(s + 1);
    memcpy(c->mem + m->step_off, &step, sizeof step);
  }
  if (m->epoch_off >= 0) {
    float epoch = 0;
    memcpy(c->mem + m->epoch_off, &epoch, sizeof epoch);
  }
  if (m->seed_off >= 0) {
    uint32_t seed = 0;
    memcpy(c->mem + m->seed_off, &seed, sizeof seed);
  }
  m->train_step(c->mem, c->pool);
  const float *lv = (const float *)(c->mem + m->loss_vec_off);
  double sum = 0;
  for (int i = 0; i < BATCH; i++)
    sum += lv[i];
  return sum / BATCH;
}

static void ref_path(char *buf, size_t size, const char *file) {
  snprintf(buf, size, "%s/tests/e2e/data/%s", NNC_SOURCE_DIR, file);
}

/* The compiled model has the shape the reference assumes. */
static void check_layout(const nnc_rt_model *m) {
  assert_int_equal(m->batch, BATCH);
  assert_int_equal(m->sample_size, IN);
  assert_int_equal(m->label_is_class, 1);
  assert_int_equal(m->num_classes, OUT);
  assert_true(m->x_off >= 0 && m->y_off >= 0 && m->loss_vec_off >= 0);
  assert_true(m->step_off >= 0); /* Adam's bias correction needs the step */
}

static void test_mlp_against_pytorch(void **state) {
  (void)state;
  char path[1024];
  ref_file r;
  ref_path(path, sizeof path, "mlp_ref.txt");
  ref_load(&r, path);
  compiled c;
  ref_path(path, sizeof path, "mlp_ref.nn");
  compile_nn(&c, path, 1);
  check_layout(c.m);
  load_weights(&c, &r);

  const ref_entry *losses = ref_get(&r, "losses", STEPS);
  double worst = 0;
  for (int s = 0; s < STEPS; s++) {
    double got = train_step(&c, &r, s), want = losses->v[s];
    double rel = fabs(got - want) / fabs(want);
    print_message("step %d: loss %.9f, PyTorch %.9f (rel diff %.2e)\n", s + 1, got, want, rel);
    if (rel > worst) worst = rel;
    if (!(rel <= 1e-4)) fail_msg("step %d: loss %.9g, PyTorch %.9g", s + 1, got, want);
  }
  /* The losses must actually move, or the comparison proves little. */
  assert_true(fabs(losses->v[STEPS - 1] - losses->v[0]) > 1e-3);

  /* Final weights after 8 Adam steps. Adam divides by sqrt(v): an element
   * whose gradients are tiny amplifies rounding, hence a small atol. */
  double worst_w = 0;
  for (int k = 0; k < NPARAMS; k++) {
    char name[96], fname[96];
    snprintf(name, sizeof name, "mlp.%s", kNames[k]);
    snprintf(fname, sizeof fname, "final.%s", kNames[k]);
    const nnc_rt_tensor *t = tensor_named(c.m, name);
    const ref_entry *e = ref_get(&r, fname, nnc_rt_numel(t->rank, t->shape));
    const float *w = (const float *)(c.mem + t->offset);
    for (int64_t i = 0; i < e->n; i++) {
      double d = fabs(w[i] - e->v[i]);
      if (d > worst_w) worst_w = d;
      if (!(d <= 1e-4 + 1e-4 * fabs(e->v[i])))
        fail_msg("%s[%lld] = %.9g, PyTorch %.9g", name, (long long)i, w[i], e->v[i]);
    }
  }
  print_message("worst loss rel diff %.2e, worst weight abs diff %.2e\n", worst, worst_w);
  release(&c);
  ref_free(&r);
}

/* The same 8 steps with 1 and 2 threads give the same arena, bit for bit. */
static void test_mlp_threads_identical(void **state) {
  (void)state;
  char path[1024];
  ref_file r;
  ref_path(path, sizeof path, "mlp_ref.txt");
  ref_load(&r, path);
  char *arena1 = NULL;
  size_t bytes = 0;
  for (int threads = 1; threads <= 2; threads++) {
    compiled c;
    ref_path(path, sizeof path, "mlp_ref.nn");
    compile_nn(&c, path, threads);
    load_weights(&c, &r);
    for (int s = 0; s < STEPS; s++)
      train_step(&c, &r, s);
    if (threads == 1) {
      bytes = c.m->arena_bytes;
      arena1 = malloc(bytes);
      assert_non_null(arena1);
      memcpy(arena1, c.mem, bytes);
    } else {
      assert_int_equal(c.m->arena_bytes, bytes);
      /* Every persistent tensor (weights and Adam moments) and the losses. */
      for (int i = 0; i < c.m->ntensors; i++) {
        const nnc_rt_tensor *t = &c.m->tensors[i];
        if (memcmp(arena1 + t->offset, c.mem + t->offset,
                   (size_t)nnc_rt_numel(t->rank, t->shape) * 4) != 0)
          fail_msg("%s differs between 1 and 2 threads", t->name);
      }
      assert_memory_equal(arena1 + c.m->loss_vec_off, c.mem + c.m->loss_vec_off, BATCH * 4);
    }
    release(&c);
  }
  free(arena1);
  ref_free(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp_against_pytorch),
      cmocka_unit_test(test_mlp_threads_identical),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
