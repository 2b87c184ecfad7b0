/* test_cg_chunk.c: the training step's sums over the batch in the
 * data-parallel step's order (nnc_chunk_batch_sums, ir/chunk.c; the
 * chunked products of codegen/gemm.c).
 *
 * A step at batch B computes a weight-gradient-like product x^T.y (K = B),
 * a bias-gradient-like sum over axis 0 and a scalar sum over the batch of
 * a forward product's rows x.w (a loss-like total), stored into tensors. After
 * nnc_chunk_batch_sums(G) each must equal, bit for bit, the same step compiled at b = B / G run on
 * each micro-batch's rows and the G results added as the runtime adds gradients (pairwise,
 * ((r0 + r1) + (r2 + r3))); within float error of a float64 reference; and
 * the same bits at 1, 2 and 3 threads. Batches whose micro-batch is odd
 * (b = 7, 9) and one with G = 2.
 */
#include "cg_test.h"

enum { F = 19, N = 37 };

/* Tensors written by the step: the product [F,N], the column sums [1,F],
 * the total [1]. */
typedef struct step_graph {
  nnc_module *m;
  int prod, col, total, w; /* w [F,1] is read */
} step_graph;

static step_graph build(nnc_arena *a, int64_t batch) {
  step_graph s;
  s.m = nnc_module_new(a, "chunk");
  nnc_graph *g = s.m->train = nnc_graph_new(s.m, "train");
  nnc_shape xs = {2, {batch, F}}, ys = {2, {batch, N}};
  nnc_node *x = nnc_ir_input(g, NNC_IN_X, NNC_F32, &xs);
  nnc_node *y = nnc_ir_input(g, NNC_IN_Y, NNC_F32, &ys);
  nnc_init zeros = {NNC_INIT_ZEROS, 0, 0, 0, 0};
  nnc_shape ps = {2, {F, N}}, cs = {2, {1, F}}, ts = {1, {1}};
  s.prod =
      nnc_module_add_tensor(s.m, "prod", NNC_ROLE_PARAM, NNC_F32, &ps, zeros, (nnc_span){0, 0, 0});
  s.col =
      nnc_module_add_tensor(s.m, "col", NNC_ROLE_PARAM, NNC_F32, &cs, zeros, (nnc_span){0, 0, 0});
  s.total =
      nnc_module_add_tensor(s.m, "total", NNC_ROLE_PARAM, NNC_F32, &ts, zeros, (nnc_span){0, 0, 0});
  nnc_node *xx = nnc_ir_binary(g, NNC_OP_MUL, x, x);
  nnc_node *col = nnc_ir_reduce(g, NNC_OP_SUM, xx, 1u);
  nnc_shape wsh = {2, {F, 1}};
  s.w = nnc_module_add_tensor(s.m, "w", NNC_ROLE_PARAM, NNC_F32, &wsh, zeros, (nnc_span){0, 0, 0});
  nnc_node *xw = nnc_ir_matmul(g, x, nnc_ir_param(g, s.w), false, false); /* [batch, 1] */
  nnc_node *all = nnc_ir_reduce(g, NNC_OP_SUM, xw, 1u);
  nnc_graph_add_update(g, s.prod, nnc_ir_matmul(g, x, y, true, false));
  nnc_graph_add_update(g, s.col, col);
  nnc_graph_add_update(g, s.total, nnc_ir_reshape(g, all, &ts));
  return s;
}

/* The step compiled as the other codegen tests compile (cg_test.h). */
static void compile(const step_graph *s, fx_run *r, int threads) {
  fixture fx;
  memset(&fx, 0, sizeof fx);
  fx.m = s->m;
  fx.g = s->m->train;
  fx_compile(&fx, r, threads);
}

/* Runs the step on rows [first, first + rows) of X, Y; copies the tensors
 * out (prod, col, total, in that order) into out. */
static void step(const step_graph *s, fx_run *r, const float *X, const float *Y, int64_t first,
                 int64_t rows, float *out) {
  float *x = (float *)(r->arena + nnc_cg_input_offset(r->prog, NNC_IN_X));
  float *y = (float *)(r->arena + nnc_cg_input_offset(r->prog, NNC_IN_Y));
  memcpy(x, X + first * F, sizeof(float) * (size_t)(rows * F));
  memcpy(y, Y + first * N, sizeof(float) * (size_t)(rows * N));
  float *w = (float *)(r->arena + r->model->tensors[s->w].offset);
  for (int f = 0; f < F; f++)
    w[f] = (float)(f % 7) * 0.25f - 0.7f;
  r->model->train_step(r->arena, r->pool);
  const int t[3] = {s->prod, s->col, s->total};
  const int64_t n[3] = {F * N, F, 1};
  for (int i = 0; i < 3; i++) {
    memcpy(out, r->arena + r->model->tensors[t[i]].offset, sizeof(float) * (size_t)n[i]);
    out += n[i];
  }
}

enum { OUT = F * N + F + 1 };

static void check_batch(int64_t B, int64_t G) {
  nnc_arena a;
  nnc_arena_init(&a);
  int64_t b = B / G;
  uint64_t seed = 12345 + (uint64_t)B;
  float *X = malloc(sizeof(float) * (size_t)(B * F)), *Y = malloc(sizeof(float) * (size_t)(B * N));
  for (int64_t i = 0; i < B * F; i++)
    X[i] = (float)(2 * fx_rand(&seed) - 1);
  for (int64_t i = 0; i < B * N; i++)
    Y[i] = (float)(2 * fx_rand(&seed) - 1);

  /* The micro-batch steps and the tree. */
  step_graph micro = build(&a, b);
  fx_run rm;
  compile(&micro, &rm, 1);
  float part[4][OUT];
  for (int64_t g = 0; g < G; g++)
    step(&micro, &rm, X, Y, g * b, b, part[g]);
  fx_release(&rm);
  for (int64_t width = 1; width < G; width *= 2)
    for (int64_t i = 0; i + width < G; i += 2 * width)
      for (int j = 0; j < OUT; j++)
        part[i][j] += part[i + width][j];

  step_graph whole = build(&a, B);
  nnc_chunk_batch_sums(whole.m->train, G);
  for (int threads = 1; threads <= 3; threads++) {
    fx_run r;
    compile(&whole, &r, threads);
    float got[OUT];
    step(&whole, &r, X, Y, 0, B, got);
    fx_release(&r);
    for (int j = 0; j < OUT; j++)
      if (memcmp(&got[j], &part[0][j], sizeof(float)))
        fail_msg("B=%lld G=%lld, %d threads: value %d is %.9g, the micro-batches' tree %.9g",
                 (long long)B, (long long)G, threads, j, got[j], part[0][j]);
  }
  /* Against float64: x^T.y, column sums of x*x, the sum of y. */
  for (int f = 0; f < F; f++)
    for (int n = 0; n < N; n++) {
      double s = 0, mag = 0;
      for (int64_t k = 0; k < B; k++)
        s += (double)X[k * F + f] * Y[k * N + n], mag += fabs((double)X[k * F + f] * Y[k * N + n]);
      assert_true(fabs(part[0][f * N + n] - s) <= (double)(B + 2) * 0x1p-23 * mag);
    }
  for (int f = 0; f < F; f++) {
    double s = 0;
    for (int64_t k = 0; k < B; k++)
      s += (double)X[k * F + f] * X[k * F + f];
    assert_true(fabs(part[0][F * N + f] - s) <= (double)(B + 2) * 0x1p-23 * s);
  }
  double s = 0, mag = 0;
  for (int64_t i = 0; i < B * F; i++) {
    double t = (double)X[i] * ((float)(i % F % 7) * 0.25f - 0.7f);
    s += t, mag += fabs(t);
  }
  assert_true(fabs(part[0][OUT - 1] - s) <= (double)(B * F + 2) * 0x1p-23 * mag);
  free(X);
  free(Y);
  nnc_arena_destroy(&a);
}

static void test_micro_batches_of_7(void **state) {
  (void)state;
  check_batch(28, 4);
}

static void test_micro_batches_of_9(void **state) {
  (void)state;
  check_batch(36, 4);
}

static void test_two_micro_batches(void **state) {
  (void)state;
  check_batch(66, 2);
}

/* The pass marks the product over the batch and rewrites the sums over
 * it; a product whose rows are the batch (x.W) and a sum that keeps axis 0
 * are left alone. */
static void test_what_is_chunked(void **state) {
  (void)state;
  nnc_arena a;
  nnc_arena_init(&a);
  step_graph s = build(&a, 32);
  nnc_graph *g = s.m->train;
  nnc_shape ws = {2, {N, 5}};
  nnc_init zeros = {NNC_INIT_ZEROS, 0, 0, 0, 0};
  int w = nnc_module_add_tensor(s.m, "w", NNC_ROLE_PARAM, NNC_F32, &ws, zeros, (nnc_span){0, 0, 0});
  nnc_node *rows = nnc_ir_matmul(g, g->inputs[NNC_IN_Y], nnc_ir_param(g, w), false, false);
  nnc_node *kept = nnc_ir_reduce(g, NNC_OP_SUM, rows, 2u);
  nnc_graph_set_output(g, NNC_OUT_LOSS_VEC, nnc_ir_reshape(g, kept, &(nnc_shape){1, {32}}));
  int sums_before = 0, sums_after = 0;
  for (int i = 0; i < g->nnodes; i++)
    sums_before += g->nodes[i]->op == NNC_OP_SUM;
  nnc_chunk_batch_sums(g, 4);
  char err[512];
  assert_true(nnc_ir_verify(g, err, sizeof err));
  for (int i = 0; i < g->nnodes; i++) {
    const nnc_node *n = g->nodes[i];
    sums_after += n->op == NNC_OP_SUM;
    if (n->op == NNC_OP_MATMUL) assert_int_equal(n->attr[2], n->attr[0] ? 4 : 0);
  }
  /* each of the 2 sums over the batch: 1 chunk sum + 2 tree levels; x.w
   * and rows (rows of the batch) are not chunked */
  assert_int_equal(sums_after, sums_before + 2 * 2);
  nnc_arena_destroy(&a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_micro_batches_of_7),
      cmocka_unit_test(test_micro_batches_of_9),
      cmocka_unit_test(test_two_micro_batches),
      cmocka_unit_test(test_what_is_chunked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
