/* test_cg_ops.c: every op of ops.def compiled through the kernel IR and
 * LLVM, run through the runtime ABI and compared with the reference
 * interpreter; then fused chains and update passes (simultaneous
 * assignment, in place and through temporaries). */
#include "cg_test.h"
#include "codegen/kernel.h"
#include "runtime/nnc_hash.h"

#include <unistd.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

static nnc_node *labels(fixture *fx, int n, int classes) {
  nnc_shape s = sh(1, n);
  fx->y_classes = classes;
  return nnc_ir_input(fx->g, NNC_IN_Y, NNC_I32, &s);
}

static void out(fixture *fx, nnc_output_kind k, nnc_node *n) {
  nnc_graph_set_output(fx->g, k, n);
}

/* ---- Elementwise ---- */

typedef struct unary_case {
  nnc_op op;
  double lo, hi;
} unary_case;

static void check_unary(nnc_op op, double lo, double hi, nnc_dtype t) {
  void *state;
  fx_setup(&state);
  fixture *fx = state;
  /* [7, 37]: a vector body and a remainder along the inner loop. */
  nnc_node *a = fx_tensor(fx, "a", NNC_ROLE_PARAM, t, sh(2, 7, 37), lo, hi);
  out(fx, NNC_OUT_PRED, nnc_ir_unary(fx->g, op, a));
  fx->rtol = t == NNC_F32 ? 2e-6 : 1e-12;
  fx->atol = t == NNC_F32 ? 1e-6 : 1e-12;
  if (op == NNC_OP_ERF && t == NNC_F32) fx->atol = 3e-7;
  fx_check(fx);
  fx_teardown(&state);
}

static const unary_case unary_cases[] = {
    {NNC_OP_NEG, -3, 3},  {NNC_OP_EXP, -20, 20},     {NNC_OP_LOG, 1e-3, 100},
    {NNC_OP_SQRT, 0, 10}, {NNC_OP_RSQRT, 0.1, 10},   {NNC_OP_RECIP, 0.5, 4},
    {NNC_OP_TANH, -6, 6}, {NNC_OP_SIGMOID, -12, 12}, {NNC_OP_RELU, -1, 1},
    {NNC_OP_ABS, -2, 2},  {NNC_OP_SIGN, -2, 2},      {NNC_OP_ERF, -3, 3},
    {NNC_OP_COS, -4, 4},  {NNC_OP_FLOOR, -5, 5},     {NNC_OP_ALLREDUCE, -3, 3},
};

static void test_unary_f32(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof unary_cases / sizeof unary_cases[0]; i++)
    check_unary(unary_cases[i].op, unary_cases[i].lo, unary_cases[i].hi, NNC_F32);
}

static void test_unary_f64(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof unary_cases / sizeof unary_cases[0]; i++)
    check_unary(unary_cases[i].op, unary_cases[i].lo, unary_cases[i].hi, NNC_F64);
}

/* exp and log far out: overflow to inf, underflow to 0, log(0) = -inf. */
static void test_exp_log_edges(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_param(fx, "a", sh(1, 40), -100, 88);
  out(fx, NNC_OUT_PRED, nnc_ir_unary(fx->g, NNC_OP_EXP, a));
  nnc_node *b = fx_param(fx, "b", sh(1, 40), 0, 1e-30);
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_unary(fx->g, NNC_OP_LOG, b));
  fx->atol = 1e-30;
  fx->rtol = 3e-6;
  fx_check(fx);
}

static void test_binary_broadcast(void **state) {
  (void)state;
  const nnc_op ops[] = {NNC_OP_ADD, NNC_OP_SUB, NNC_OP_MUL, NNC_OP_DIV, NNC_OP_MAX,
                        NNC_OP_MIN, NNC_OP_POW, NNC_OP_GT,  NNC_OP_GE,  NNC_OP_EQ};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    void *st;
    fx_setup(&st);
    fixture *fx = st;
    nnc_node *a = fx_param(fx, "a", sh(2, 9, 1), 0.5, 2);
    nnc_node *b = fx_param(fx, "b", sh(2, 1, 21), 0.5, 2);
    out(fx, NNC_OUT_PRED, nnc_ir_binary(fx->g, ops[i], a, b));
    /* and against a scalar constant, the other way round */
    out(fx, NNC_OUT_LOSS_VEC, nnc_ir_binary(fx->g, ops[i], nnc_ir_const(fx->g, NNC_F32, 1.25), b));
    fx->rtol = 3e-6;
    fx_check(fx);
    fx_teardown(&st);
  }
}

/* pow with constant integer, half and general exponents. */
static void test_pow(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_param(fx, "a", sh(1, 50), 0.2, 3);
  out(fx, NNC_OUT_PRED, nnc_ir_binary(fx->g, NNC_OP_POW, a, nnc_ir_const(fx->g, NNC_F32, 3)));
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_binary(fx->g, NNC_OP_POW, a, nnc_ir_const(fx->g, NNC_F32, -2)));
  out(fx, NNC_OUT_CORRECT_VEC,
      nnc_ir_binary(fx->g, NNC_OP_POW, a, nnc_ir_const(fx->g, NNC_F32, 0.5)));
  out(fx, NNC_OUT_LR, nnc_ir_binary(fx->g, NNC_OP_POW, a, nnc_ir_const(fx->g, NNC_F32, 1.7)));
  fx->rtol = 1e-5;
  fx_check(fx);
}

static void test_select_cast(void **state) {
  fixture *fx = *state;
  nnc_node *c = fx_param(fx, "c", sh(2, 5, 6), -1, 1);
  nnc_node *a = fx_param(fx, "a", sh(2, 5, 1), -1, 1);
  nnc_node *b = fx_param(fx, "b", sh(2, 1, 6), -1, 1);
  nnc_node *cond = nnc_ir_binary(fx->g, NNC_OP_GT, c, nnc_ir_const(fx->g, NNC_F32, 0));
  out(fx, NNC_OUT_PRED, nnc_ir_select(fx->g, cond, a, b));
  nnc_node *y = labels(fx, 8, 5);
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_cast(fx->g, y, NNC_F32));
  nnc_node *d = nnc_ir_cast(fx->g, nnc_ir_cast(fx->g, c, NNC_F64), NNC_F32);
  out(fx, NNC_OUT_CORRECT_VEC, nnc_ir_unary(fx->g, NNC_OP_EXP, d));
  fx_check(fx);
}

static void test_fill_and_const(void **state) {
  fixture *fx = *state;
  nnc_shape s = sh(2, 3, 17);
  out(fx, NNC_OUT_PRED, nnc_ir_fill(fx->g, NNC_F32, &s, 2.5));
  out(fx, NNC_OUT_LOSS, nnc_ir_const(fx->g, NNC_F32, -1.5));
  fx_check(fx);
}

/* ---- Reductions ---- */

static void test_reductions(void **state) {
  (void)state;
  const uint32_t masks[] = {0x1, 0x2, 0x4, 0x3, 0x5, 0x6, 0x7};
  for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
    void *st;
    fx_setup(&st);
    fixture *fx = st;
    nnc_node *a = fx_param(fx, "a", sh(3, 5, 6, 19), -2, 2);
    nnc_node *e = nnc_ir_unary(fx->g, NNC_OP_EXP, a); /* fused into the loop */
    out(fx, NNC_OUT_PRED, nnc_ir_reduce(fx->g, NNC_OP_SUM, e, masks[i]));
    out(fx, NNC_OUT_LOSS_VEC, nnc_ir_reduce(fx->g, NNC_OP_RMAX, a, masks[i]));
    fx->rtol = 1e-5;
    fx_check(fx);
    fx_teardown(&st);
  }
}

/* Reductions of a transposed operand whose memory is contiguous along a
 * kept axis (batch-norm sums of a convolution's [N*H*W, C] output, seen
 * as NCHW): reduced with that axis innermost. */
static void test_reductions_transposed(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *p = fx_param(fx, "p", sh(2, 2 * 3 * 5, 7), -2, 2);
  nnc_node *q = fx_param(fx, "q", sh(4, 2, 7, 3, 5), -2, 2);
  nnc_shape nhwc = sh(4, 2, 3, 5, 7);
  static const int to_nchw[4] = {0, 3, 1, 2};
  nnc_node *t = nnc_ir_transpose(g, nnc_ir_reshape(g, p, &nhwc), to_nchw);
  out(fx, NNC_OUT_PRED, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, t, q), 0xD));
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_reduce(g, NNC_OP_RMAX, t, 0xD));
  out(fx, NNC_OUT_CORRECT_VEC, nnc_ir_reduce(g, NNC_OP_SUM, t, 0xC)); /* keeps n and c */
  fx->rtol = 1e-5;
  fx_check(fx);
}

static void test_argmax(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_param(fx, "a", sh(3, 4, 7, 5), -2, 2);
  out(fx, NNC_OUT_PRED, nnc_ir_argmax(fx->g, a, 1));
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_argmax(fx->g, a, 2));
  out(fx, NNC_OUT_CORRECT_VEC, nnc_ir_argmax(fx->g, a, 0));
  fx_check(fx);
}

/* ---- Data movement ---- */

static void test_reshape_transpose_broadcast(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *a = fx_param(fx, "a", sh(3, 2, 3, 4), -1, 1);
  const int perm[3] = {2, 0, 1};
  out(fx, NNC_OUT_PRED, nnc_ir_unary(g, NNC_OP_TANH, nnc_ir_transpose(g, a, perm)));
  nnc_shape s = sh(2, 6, 4);
  nnc_node *e = nnc_ir_unary(g, NNC_OP_EXP, a);
  nnc_node *r = nnc_ir_reshape(g, e, &s); /* a view of e's buffer */
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_binary(g, NNC_OP_MUL, r, nnc_ir_reshape(g, a, &s)));
  nnc_node *b = fx_param(fx, "b", sh(2, 1, 4), -1, 1);
  nnc_shape bs = sh(2, 5, 4);
  out(fx, NNC_OUT_CORRECT_VEC, nnc_ir_broadcast(g, nnc_ir_unary(g, NNC_OP_SIGMOID, b), &bs));
  /* reshape of a constant fill: inlined, no buffer */
  nnc_shape f = sh(2, 4, 6), f2 = sh(1, 24);
  out(fx, NNC_OUT_LR, nnc_ir_reshape(g, nnc_ir_fill(g, NNC_F32, &f, 3), &f2));
  fx_check(fx);
}

/* ---- Matrix products ---- */

static void check_matmul(int M, int N, int K, bool ta, bool tb, nnc_dtype t, bool bias, bool relu) {
  void *st;
  fx_setup(&st);
  fixture *fx = st;
  nnc_graph *g = fx->g;
  nnc_node *a = fx_tensor(fx, "a", NNC_ROLE_PARAM, t, ta ? sh(2, K, M) : sh(2, M, K), -1, 1);
  nnc_node *b = fx_tensor(fx, "b", NNC_ROLE_PARAM, t, tb ? sh(2, N, K) : sh(2, K, N), -1, 1);
  nnc_node *c = nnc_ir_matmul(g, a, b, ta, tb);
  if (bias) {
    nnc_node *bv = fx_tensor(fx, "bias", NNC_ROLE_PARAM, t, sh(1, N), -1, 1);
    nnc_shape row = sh(2, 1, N);
    c = nnc_ir_binary(g, NNC_OP_ADD, c, nnc_ir_reshape(g, bv, &row));
  }
  if (relu) c = nnc_ir_unary(g, NNC_OP_RELU, c);
  out(fx, NNC_OUT_PRED, c);
  fx->rtol = 1e-5;
  fx->atol = 1e-5 * sqrt((double)K);
  fx_check(fx);
  fx_teardown(&st);
}

static void test_matmul(void **state) {
  (void)state;
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      check_matmul(5, 7, 3, ta, tb, NNC_F32, false, false);
      check_matmul(37, 53, 29, ta, tb, NNC_F32, false, false);
      check_matmul(13, 40, 17, ta, tb, NNC_F64, false, false);
    }
}

static void test_matmul_epilogue(void **state) {
  (void)state;
  check_matmul(64, 70, 33, false, false, NNC_F32, true, true);
  check_matmul(64, 70, 33, false, true, NNC_F32, true, false);
  check_matmul(9, 10, 33, false, false, NNC_F64, true, true);
}

/* A long-K product whose B is computed (a convolution's weight gradient,
 * dyᵀ.cols, has this form): B is 4.6 MB and wider than C is tall, so the
 * kernel is split over column blocks and each thread reads half of B.
 * Against the interpreter, then bit for bit with 1, 2 and 3 threads. */
static void test_matmul_long_k_column_split(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  enum { M = 16, N = 96, K = 12000 };
  nnc_node *a = fx_param(fx, "a", sh(2, K, M), -1, 1);
  nnc_node *b = nnc_ir_unary(g, NNC_OP_RELU, fx_param(fx, "b", sh(2, K, N), -1, 1));
  out(fx, NNC_OUT_PRED, nnc_ir_matmul(g, a, b, true, false));
  fx->rtol = 1e-5;
  fx->atol = 1e-5 * sqrt((double)K);
  fx_check(fx);
  fx_check_threads(fx, 1, false);
}

/* ---- Windows ---- */

/* im2col and col2im of x[2, 3, h, w] with window k, stride s, padding p;
 * col2im's operand is an elementwise product, inlined into its scatter;
 * and a pooling-like window max. */
static void check_window(int h, int w, const int64_t k[2], const int64_t s[2], const int64_t p[2]) {
  void *st;
  fx_setup(&st);
  fixture *fx = st;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_param(fx, "x", sh(4, 2, 3, h, w), -1, 1);
  nnc_node *cols = nnc_ir_im2col(g, x, k, s, p, -0.5);
  out(fx, NNC_OUT_PRED, cols);
  nnc_shape cs = sh(2, (int)cols->shape.dim[0], (int)cols->shape.dim[1]);
  nnc_node *c2 = fx_param(fx, "c2", cs, -1, 1);
  nnc_node *c3 = fx_param(fx, "c3", cs, 0.5, 2);
  out(fx, NNC_OUT_LOSS_VEC,
      nnc_ir_col2im(g, nnc_ir_binary(g, NNC_OP_MUL, c2, c3), &x->shape, k, s, p));
  /* a second im2col read only by a window max and an elementwise product
   * (the shape of max pooling and its gradient mask) */
  nnc_node *win = nnc_ir_im2col(g, x, k, s, p, -0.5);
  nnc_node *m = nnc_ir_reduce(g, NNC_OP_RMAX, win, 0x2);
  out(fx, NNC_OUT_CORRECT_VEC,
      nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, win, m), 0x2));
  fx->rtol = 1e-5;
  fx_check(fx);
  fx_teardown(&st);
}

/* Pooling without its gradient (evaluation, deployment): an im2col read
 * only by a max or a sum over its window axis is not stored, the
 * reduction reads the image through the window (lower_window.c,
 * window_reduce). x[2, 3, h, w] max-pooled with channels in the window,
 * average-pooled (fill 0), and max-pooled per plane as the front end does
 * it ([6, 1, h, w], fill -inf): against the interpreter, 1, 2 and 3
 * threads bit for bit, and the kernels are the window ones (no im2col). */
static void check_window_reduce(int h, int w, const int64_t k[2], const int64_t s[2],
                                const int64_t p[2]) {
  void *st;
  fx_setup(&st);
  fixture *fx = st;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_param(fx, "x", sh(4, 2, 3, h, w), -1, 1);
  out(fx, NNC_OUT_PRED, nnc_ir_reduce(g, NNC_OP_RMAX, nnc_ir_im2col(g, x, k, s, p, -0.5), 0x2));
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_im2col(g, x, k, s, p, 0), 0x2));
  nnc_shape planes = sh(4, 6, 1, h, w);
  nnc_node *pl = nnc_ir_im2col(g, nnc_ir_reshape(g, x, &planes), k, s, p, -INFINITY);
  out(fx, NNC_OUT_CORRECT_VEC, nnc_ir_reduce(g, NNC_OP_RMAX, pl, 0x2));
  fx->rtol = 1e-5;
  fx->atol = 1e-6;
  fx_check(fx);
  fx_check_threads(fx, 1, false);
  char *dump = fx_kernel_dump(fx);
  assert_non_null(strstr(dump, "windowmax"));
  assert_non_null(strstr(dump, "windowsum"));
  assert_null(strstr(dump, "im2col"));
  free(dump);
  fx_teardown(&st);
}

static void test_window_reduce(void **state) {
  (void)state;
  static const struct {
    int h, w;
    int64_t k[2], s[2], p[2];
  } cases[] = {
      {8, 6, {2, 2}, {2, 2}, {0, 0}}, /* max pooling 2x2 */
      {9, 7, {3, 3}, {2, 2}, {1, 1}}, /* odd sizes, stride 2, padding */
      {7, 7, {2, 2}, {2, 2}, {1, 1}}, /* pool with padding */
      {6, 9, {3, 2}, {1, 3}, {1, 0}}, /* non-square window, overlapping rows */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_window_reduce(cases[i].h, cases[i].w, cases[i].k, cases[i].s, cases[i].p);
}

/* A convolution as the front end builds it (im2col, cols.W^T + bias) and
 * its two gradients by autodiff: dx = col2im(dy.W), dW = dy^T.cols. The
 * codegen stores the columns and dy.W transposed (lower_fuse.c
 * choose_layouts), and the output gradient's NHWC transpose channel-major,
 * so this checks the transposed im2col, the products reading and writing
 * the other layout, col2im reading it and the transpose writing it: against
 * the interpreter, then 1, 2 and 3 threads bit for bit. */
static void check_conv(int n, int c, int h, int w, int o, const int64_t k[2], const int64_t s[2],
                       const int64_t p[2]) {
  void *st;
  fx_setup(&st);
  fixture *fx = st;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_param(fx, "x", sh(4, n, c, h, w), -1, 1);
  nnc_node *wt = fx_param(fx, "w", sh(2, o, c * (int)(k[0] * k[1])), -1, 1);
  nnc_node *b = fx_param(fx, "b", sh(1, o), -1, 1);
  nnc_node *cols = nnc_ir_im2col(g, x, k, s, p, 0);
  nnc_shape row = sh(2, 1, o);
  nnc_node *y = nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_matmul(g, cols, wt, false, true),
                              nnc_ir_reshape(g, b, &row));
  /* NCHW as the front end makes it; through a ReLU the gradient is an
   * expression that is transposed back to NHWC for the products */
  int oh = (int)nnc_ir_window_out(h, k[0], s[0], p[0]),
      ow = (int)nnc_ir_window_out(w, k[1], s[1], p[1]);
  nnc_shape nhwc = sh(4, n, oh, ow, o);
  static const int to_nchw[4] = {0, 3, 1, 2};
  nnc_node *y4 = nnc_ir_transpose(g, nnc_ir_reshape(g, y, &nhwc), to_nchw);
  nnc_node *r = fx_tensor(fx, "r", NNC_ROLE_FROZEN, NNC_F32, y4->shape, -1, 1);
  nnc_shape scalar = sh(0);
  nnc_node *sq = nnc_ir_unary(g, NNC_OP_RELU, y4);
  nnc_node *loss = nnc_ir_reshape(
      g, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, sq, r), 0xf), &scalar);
  nnc_node *wrt[2] = {x, wt}, *grad[2];
  nnc_ad_grad(g, loss, wrt, 2, grad);
  out(fx, NNC_OUT_PRED, y);
  out(fx, NNC_OUT_LOSS_VEC, grad[0]);
  out(fx, NNC_OUT_CORRECT_VEC, grad[1]);
  fx->rtol = 1e-5;
  fx->atol = 1e-5 * sqrt((double)(n * h * w));
  fx_check(fx);
  fx_check_threads(fx, 1, false);
  fx_teardown(&st);
}

static void test_conv_layouts(void **state) {
  (void)state;
  static const struct {
    int n, c, h, w, o;
    int64_t k[2], s[2], p[2];
  } cases[] = {
      {3, 5, 9, 7, 6, {3, 3}, {1, 1}, {1, 1}},      /* odd sizes, "same" padding */
      {2, 3, 11, 10, 17, {3, 3}, {2, 2}, {1, 1}},   /* stride 2 */
      {2, 4, 7, 9, 5, {5, 3}, {2, 1}, {2, 0}},      /* non-square window, padding 2 */
      {3, 1, 6, 6, 8, {3, 3}, {3, 3}, {2, 2}},      /* taps that see only padding */
      {20, 32, 14, 14, 64, {3, 3}, {1, 1}, {1, 1}}, /* fashion_cnn's conv2: dW split over columns */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_conv(cases[i].n, cases[i].c, cases[i].h, cases[i].w, cases[i].o, cases[i].k, cases[i].s,
               cases[i].p);
}

static void test_im2col_col2im(void **state) {
  (void)state;
  static const struct {
    int h, w;
    int64_t k[2], s[2], p[2];
  } cases[] = {
      {7, 6, {3, 2}, {2, 1}, {1, 1}}, /* non-square, stride 2 on h */
      {8, 8, {3, 3}, {1, 1}, {1, 1}}, /* conv 3x3 "same" */
      {9, 7, {3, 3}, {2, 2}, {0, 0}}, /* stride 2, no padding */
      {6, 5, {5, 3}, {1, 2}, {2, 1}}, /* padding 2, taps that miss rows */
      {8, 6, {2, 2}, {2, 2}, {0, 0}}, /* max-pool windows */
      {9, 6, {3, 3}, {3, 3}, {0, 0}}, /* 3x3 windows that tile the image */
      {7, 7, {2, 2}, {2, 2}, {1, 1}}, /* pool with padding */
      {5, 4, {1, 1}, {1, 1}, {0, 0}}, /* 1x1 */
      {4, 4, {3, 3}, {3, 3}, {2, 2}}, /* stride 3, some taps see only padding */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_window(cases[i].h, cases[i].w, cases[i].k, cases[i].s, cases[i].p);
}

/* ---- Embedding, labels, randomness ---- */

static void test_gather_scatter_onehot(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *table = fx_param(fx, "table", sh(2, 6, 5), -1, 1);
  nnc_node *idx = labels(fx, 9, 6);
  out(fx, NNC_OUT_PRED, nnc_ir_gather(g, table, idx));
  nnc_node *dy = fx_param(fx, "dy", sh(2, 9, 5), -1, 1);
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_scatter_add(g, dy, idx, 6));
  out(fx, NNC_OUT_CORRECT_VEC, nnc_ir_onehot(g, idx, 7, NNC_F32));
  fx_check(fx);
}

static void test_rand(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_shape s0 = sh(0);
  nnc_node *seed = nnc_ir_input(g, NNC_IN_SEED, NNC_I32, &s0);
  nnc_node *step = nnc_ir_input(g, NNC_IN_STEP, NNC_F32, &s0);
  nnc_shape s = sh(2, 3, 50);
  out(fx, NNC_OUT_PRED, nnc_ir_rand(g, seed, step, &s, NNC_F32, 5));
  /* dropout-style use: mask fused into an elementwise chain */
  nnc_node *x = fx_param(fx, "x", s, -1, 1);
  nnc_node *keep = nnc_ir_binary(g, NNC_OP_GT, nnc_ir_rand(g, seed, step, &s, NNC_F32, 6),
                                 nnc_ir_const(g, NNC_F32, 0.3));
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_binary(g, NNC_OP_MUL, x, keep));
  fx->rtol = fx->atol = 0; /* bit for bit */
  fx->steps = 2;
  fx_check(fx);
}

/* RAND's three implementations agree by construction (runtime/nnc_hash.h);
 * this shows it: the compiled values equal the runtime's function bit for
 * bit (test_interp.c shows the interpreter's do, test_rand above that the
 * compiled ones equal the interpreter's). */
static void test_rand_is_the_runtime_hash(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_shape s0 = sh(0), s = sh(1, 1000);
  nnc_node *seed = nnc_ir_input(g, NNC_IN_SEED, NNC_I32, &s0);
  nnc_node *step = nnc_ir_input(g, NNC_IN_STEP, NNC_F32, &s0);
  out(fx, NNC_OUT_PRED, nnc_ir_rand(g, seed, step, &s, NNC_F32, 5));
  fx_run r;
  fx_compile(fx, &r, 2);
  for (int st = 1; st <= 3; st++) {
    fx_inputs(fx, &r, NULL, st); /* seed 1234, step st */
    r.model->train_step(r.arena, r.pool);
    int64_t off = nnc_cg_output_offset(r.prog, NNC_OUT_PRED);
    for (uint64_t i = 0; i < 1000; i++) {
      float want = nnc_rt_hash_uniform(1234 ^ (UINT64_C(5) << 32), (uint64_t)st, i);
      float got = ((const float *)(r.arena + off))[i];
      if (got != want)
        fail_msg("step %d [%llu]: got %.9g, want %.9g", st, (unsigned long long)i, got, want);
    }
  }
  fx_release(&r);
}

/* Whether the host CPU has the LLVM feature (e.g. "+avx512f"). */
static bool host_has(const char *feature) {
  char *features = LLVMGetHostCPUFeatures();
  bool has = strstr(features, feature) != NULL;
  LLVMDisposeMessage(features);
  return has;
}

/* Lines of fx's optimised LLVM IR (for this host) inside the functions
 * whose definition names `fn` that contain both a and b. */
static int llvm_lines(fixture *fx, const char *fn, const char *a, const char *b) {
  char path[] = "/tmp/nnc_test_ll_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  char err[512];
  if (!nnc_cg_emit(fx->m, &o, NNC_CG_LLVM, path, err, sizeof err)) fail_msg("emit: %s", err);
  FILE *f = fopen(path, "r");
  remove(path);
  assert_non_null(f);
  char line[1024];
  int n = 0;
  bool in_fn = false;
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "define", 6)) in_fn = strstr(line, fn) != NULL;
    if (in_fn && strstr(line, a) && strstr(line, b)) n++;
  }
  fclose(f);
  return n;
}

/* A rand chunked over the batch (ops.def, attr[1] = G, as ir/chunk.c marks
 * a dropout mask): micro-batch g draws with the seed seed + g *
 * NNC_HASH_MICRO_SEED and its own index, the compiled values equal to the
 * runtime's hash bit for bit at 1, 2 and 3 threads; and its loop vectorises
 * (lower_expr.c divides the batch index, not the flat index, by the
 * micro-batch: a division per element kept the loop scalar, 64-bit
 * multiplies one lane at a time). */
static void test_rand_chunked(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_shape s0 = sh(0), s = sh(2, 8, 200);
  nnc_node *seed = nnc_ir_input(g, NNC_IN_SEED, NNC_I32, &s0);
  nnc_node *step = nnc_ir_input(g, NNC_IN_STEP, NNC_F32, &s0);
  nnc_node *r = nnc_ir_rand(g, seed, step, &s, NNC_F32, 3);
  r->attr[1] = 4; /* 4 micro-batches of 2 rows */
  out(fx, NNC_OUT_PRED, r);
  fx_run run;
  fx_compile(fx, &run, 2);
  for (int st = 1; st <= 2; st++) {
    fx_inputs(fx, &run, NULL, st); /* seed 1234, step st */
    run.model->train_step(run.arena, run.pool);
    const float *got = (const float *)(run.arena + nnc_cg_output_offset(run.prog, NNC_OUT_PRED));
    for (uint64_t mb = 0; mb < 4; mb++)
      for (uint64_t j = 0; j < 400; j++) {
        uint32_t sg = 1234u + (uint32_t)mb * NNC_HASH_MICRO_SEED;
        float want = nnc_rt_hash_uniform(sg ^ (UINT64_C(3) << 32), (uint64_t)st, j);
        if (got[mb * 400 + j] != want)
          fail_msg("step %d [%llu]: got %.9g, want %.9g", st, (unsigned long long)(mb * 400 + j),
                   got[mb * 400 + j], want);
      }
  }
  fx_release(&run);
  fx_check_threads(fx, 2, false);
  if (!host_has("+avx512dq")) return;
  /* the hash's multiplies, a vector of lanes each */
  assert_true(llvm_lines(fx, ".rand(", " mul <", " x i64>") > 0);
}

/* ---- Composites ---- */

/* log-softmax cross-entropy: row-wise max and sum kernels with the
 * elementwise parts fused into them. */
static void test_softmax_cross_entropy(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *z = fx_param(fx, "logits", sh(2, 16, 10), -3, 3);
  nnc_node *y = labels(fx, 16, 10);
  nnc_node *shifted = nnc_ir_binary(g, NNC_OP_SUB, z, nnc_ir_reduce(g, NNC_OP_RMAX, z, 0x2));
  nnc_node *lse = nnc_ir_unary(
      g, NNC_OP_LOG, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_unary(g, NNC_OP_EXP, shifted), 0x2));
  nnc_node *logp = nnc_ir_binary(g, NNC_OP_SUB, shifted, lse);
  nnc_node *picked = nnc_ir_reduce(
      g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_onehot(g, y, 10, NNC_F32), logp), 0x2);
  nnc_shape b = sh(1, 16);
  nnc_node *lv = nnc_ir_reshape(g, nnc_ir_unary(g, NNC_OP_NEG, picked), &b);
  out(fx, NNC_OUT_LOSS_VEC, lv);
  out(fx, NNC_OUT_LOSS,
      nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, lv, 0x1),
                    nnc_ir_const(g, NNC_F32, 1.0 / 16)));
  nnc_node *pred = nnc_ir_reshape(g, nnc_ir_argmax(g, z, 1), &b);
  out(fx, NNC_OUT_CORRECT_VEC, nnc_ir_binary(g, NNC_OP_EQ, pred, nnc_ir_cast(g, y, NNC_F32)));
  fx->rtol = 1e-5;
  fx_check(fx);
}

/* The text of the kernel whose name has `what` in dump, up to the next
 * kernel (into buf). */
static const char *kernel_text(const char *dump, const char *what, char *buf, size_t n) {
  const char *k = strstr(dump, what);
  assert_non_null(k);
  const char *end = strstr(k, "\nkernel ");
  size_t len = end ? (size_t)(end - k) : strlen(k);
  snprintf(buf, n, "%.*s", (int)len, k);
  return buf;
}

/* Elementwise kernels over [3, 4, 5, 9] loop over [3, 4, 45] (lower_expr.c
 * merge_axis) where every operand has the kernel's dims or ones on the
 * last two axes: a per-channel vector through a reshape, a broadcast node;
 * an operand [3, 1, 5, 1] keeps the full nest, and so does a kernel whose
 * last axis is one ([3, 4, 5, 1], which the loop's index would skip). The
 * values as the interpreter's, 1, 2 and 3 threads bit for bit. */
static void test_elementwise_merged_axes(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_param(fx, "x", sh(4, 3, 4, 5, 9), -2, 2);
  nnc_node *gamma = fx_param(fx, "gamma", sh(1, 4), 0.5, 2);
  nnc_node *c = fx_param(fx, "c", sh(4, 3, 4, 1, 1), -1, 1);
  nnc_node *mixed = fx_param(fx, "mixed", sh(4, 3, 1, 5, 1), -1, 1);
  nnc_node *y = fx_param(fx, "y", sh(4, 3, 4, 5, 1), -1, 1);
  nnc_shape channel = sh(4, 1, 4, 1, 1), full = sh(4, 3, 4, 5, 9);
  nnc_node *scaled = nnc_ir_binary(g, NNC_OP_MUL, x, nnc_ir_reshape(g, gamma, &channel));
  out(fx, NNC_OUT_PRED,
      nnc_ir_unary(g, NNC_OP_RELU,
                   nnc_ir_binary(g, NNC_OP_ADD, scaled, nnc_ir_broadcast(g, c, &full))));
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_binary(g, NNC_OP_SUB, x, mixed));
  out(fx, NNC_OUT_CORRECT_VEC, nnc_ir_binary(g, NNC_OP_MUL, y, nnc_ir_reshape(g, gamma, &channel)));
  char *dump = fx_kernel_dump(fx), text[4096];
  kernel_text(dump, ".relu ", text, sizeof text);
  assert_non_null(strstr(text, " < 45:"));
  kernel_text(dump, ".sub ", text, sizeof text);
  assert_null(strstr(text, " < 45:"));
  kernel_text(dump, ".mul ", text, sizeof text);
  assert_non_null(strstr(text, " < 5:"));
  assert_null(strstr(text, " < 20:"));
  free(dump);
  fx_check(fx);
  fx_check_threads(fx, 1, false);
}

/* ---- Updates ---- */

/* a := b, b := a: both read before either is written. */
static void test_update_swap(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_param(fx, "a", sh(2, 4, 33), -1, 1);
  nnc_node *b = fx_param(fx, "b", sh(2, 4, 33), -1, 1);
  nnc_graph_add_update(fx->g, 0, b);
  nnc_graph_add_update(fx->g, 1, nnc_ir_unary(fx->g, NNC_OP_NEG, a));
  fx->steps = 3;
  fx_check(fx);
}

/* An Adam-like step on tensors of shape s: m, v and w (tensors 0, 2 and
 * 3; 1 is the gradient) in one pass, in place. */
static void build_adam_like(fixture *fx, nnc_shape s) {
  nnc_graph *g = fx->g;
  nnc_node *w = fx_param(fx, "w", s, -1, 1);
  nnc_node *gr = fx_tensor(fx, "g", NNC_ROLE_BUFFER, NNC_F32, s, -1, 1);
  nnc_node *m = fx_tensor(fx, "m", NNC_ROLE_OPT_STATE, NNC_F32, s, -0.1, 0.1);
  nnc_node *v = fx_tensor(fx, "v", NNC_ROLE_OPT_STATE, NNC_F32, s, 0, 0.1);
  nnc_shape s0 = sh(0);
  nnc_node *step = nnc_ir_input(g, NNC_IN_STEP, NNC_F32, &s0);
  nnc_node *lr = nnc_ir_binary(g, NNC_OP_DIV, nnc_ir_const(g, NNC_F32, 0.01),
                               nnc_ir_unary(g, NNC_OP_SQRT, step));
  nnc_graph_set_output(g, NNC_OUT_LR, lr);
  nnc_node *m2 =
      nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_binary(g, NNC_OP_MUL, m, nnc_ir_const(g, NNC_F32, 0.9)),
                    nnc_ir_binary(g, NNC_OP_MUL, gr, nnc_ir_const(g, NNC_F32, 0.1)));
  nnc_node *v2 =
      nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_binary(g, NNC_OP_MUL, v, nnc_ir_const(g, NNC_F32, 0.99)),
                    nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_binary(g, NNC_OP_MUL, gr, gr),
                                  nnc_ir_const(g, NNC_F32, 0.01)));
  nnc_node *upd = nnc_ir_binary(g, NNC_OP_DIV, m2,
                                nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_unary(g, NNC_OP_SQRT, v2),
                                              nnc_ir_const(g, NNC_F32, 1e-8)));
  nnc_node *w2 = nnc_ir_binary(g, NNC_OP_SUB, w, nnc_ir_binary(g, NNC_OP_MUL, lr, upd));
  nnc_graph_add_update(g, 0, w2);
  nnc_graph_add_update(g, 2, m2);
  nnc_graph_add_update(g, 3, v2);
}

static void test_update_adam_like(void **state) {
  fixture *fx = *state;
  build_adam_like(fx, sh(2, 20, 70));
  fx->steps = 3;
  fx_check(fx);
}

/* w := w^T (square): reads the old value elsewhere, so a temporary. */
static void test_update_transposed(void **state) {
  fixture *fx = *state;
  nnc_node *w = fx_param(fx, "w", sh(2, 9, 9), -1, 1);
  const int perm[2] = {1, 0};
  nnc_graph_add_update(fx->g, 0,
                       nnc_ir_binary(fx->g, NNC_OP_ADD, w, nnc_ir_transpose(fx->g, w, perm)));
  fx->steps = 2;
  fx_check(fx);
}

/* An update whose value is a kernel node (a column sum) and one that
 * reads another updated tensor with broadcasting. */
static void test_update_mixed(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_param(fx, "x", sh(2, 12, 8), -1, 1);
  nnc_node *s = fx_tensor(fx, "s", NNC_ROLE_BUFFER, NNC_F32, sh(2, 1, 8), -1, 1);
  nnc_node *colsum = nnc_ir_reduce(g, NNC_OP_SUM, x, 0x1);
  nnc_graph_add_update(g, 1, colsum);
  nnc_graph_add_update(g, 0, nnc_ir_binary(g, NNC_OP_MUL, x, s)); /* reads old s */
  fx->steps = 2;
  fx_check(fx);
}

/* Adam's pass over a convolution's weight [6, 5, 3, 3]: two loops, over
 * dim 0 and the other 45 elements (lower_update.c, flat_pass), not a nest
 * whose innermost loop has 3 iterations; the values as the interpreter's,
 * 1, 2 and 3 threads bit for bit. */
static void test_update_rank4_flat(void **state) {
  fixture *fx = *state;
  build_adam_like(fx, sh(4, 6, 5, 3, 3));
  char *dump = fx_kernel_dump(fx), text[4096];
  kernel_text(dump, "update.w", text, sizeof text);
  assert_non_null(strstr(text, " < 6:"));
  assert_non_null(strstr(text, " < 45:"));
  assert_null(strstr(text, " < 3:"));
  assert_null(strstr(dump, "update.copy")); /* in place */
  free(dump);
  fx->steps = 3;
  fx_check(fx);
  fx_check_threads(fx, 3, false);
}

/* An update reading an operand broadcast along some of the trailing axes
 * ([6, 5, 1, 1] against [6, 5, 3, 3]) keeps the full nest. */
static void test_update_rank4_broadcast(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *w = fx_param(fx, "w", sh(4, 6, 5, 3, 3), -1, 1);
  nnc_node *s = fx_tensor(fx, "s", NNC_ROLE_BUFFER, NNC_F32, sh(4, 6, 5, 1, 1), 0.5, 1.5);
  nnc_graph_add_update(g, 0, nnc_ir_binary(g, NNC_OP_MUL, w, s));
  char *dump = fx_kernel_dump(fx), text[4096];
  kernel_text(dump, "update.w", text, sizeof text);
  assert_non_null(strstr(text, " < 3:"));
  free(dump);
  fx->steps = 2;
  fx_check(fx);
  fx_check_threads(fx, 2, false);
}

/* ---- Recomputed nodes ---- */

/* fx's compiled kernels (nnc_cg_dump_kernels) in a temporary file, from
 * its start; the caller closes it. */
static FILE *kernel_dump(fixture *fx) {
  fx_run r;
  fx_compile(fx, &r, 0);
  FILE *f = tmpfile();
  assert_non_null(f);
  nnc_cg_dump_kernels(r.prog, f);
  rewind(f);
  fx_release(&r);
  return f;
}

/* Kernels in the compiled train step. */
static int train_kernels(fixture *fx) {
  FILE *f = kernel_dump(fx);
  char line[256];
  int n = -1;
  while (n < 0 && fgets(line, sizeof line, f))
    if (sscanf(line, "graph train: %d kernels", &n) != 1) n = -1;
  fclose(f);
  return n;
}

/* Batch norm over N, H, W, then ReLU, with x - mean read by three
 * kernels (the variance, the output, another sum): x - mean and the
 * normalised value are computed again in each from x and per-channel
 * vectors instead of being stored. */
static void test_recompute_batchnorm(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_param(fx, "x", sh(4, 3, 4, 5, 9), -2, 2);
  nnc_node *q = fx_param(fx, "q", sh(4, 3, 4, 5, 9), -1, 1);
  nnc_node *gamma = fx_param(fx, "gamma", sh(4, 1, 4, 1, 1), 0.5, 2);
  nnc_node *beta = fx_param(fx, "beta", sh(4, 1, 4, 1, 1), -1, 1);
  nnc_node *inv = nnc_ir_const(g, NNC_F32, 1.0 / (3 * 5 * 9));
  nnc_node *mean = nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, x, 0xD), inv);
  nnc_node *d = nnc_ir_binary(g, NNC_OP_SUB, x, mean);
  nnc_node *var = nnc_ir_binary(
      g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, d, d), 0xD), inv);
  nnc_node *rstd = nnc_ir_unary(g, NNC_OP_RSQRT,
                                nnc_ir_binary(g, NNC_OP_ADD, var, nnc_ir_const(g, NNC_F32, 1e-5)));
  nnc_node *y = nnc_ir_binary(
      g, NNC_OP_ADD, nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_binary(g, NNC_OP_MUL, d, rstd), gamma),
      beta);
  out(fx, NNC_OUT_PRED, nnc_ir_unary(g, NNC_OP_RELU, y));
  out(fx, NNC_OUT_LOSS_VEC, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, d, q), 0xD));
  fx->rtol = 1e-4;
  fx->atol = 1e-5;
  fx_check(fx);
  /* sum(x), mean, sum(d * d) with sum(d * q) (one kernel: both read x
   * and mean, nnc_lw_match_lane_twins), rstd, relu(...): no kernel for d */
  assert_int_equal(train_kernels(fx), 5);
}

/* (x - m) * q over [4, 6, 4, 5, 9], m per channel; *q the operand q. */
static nnc_node *centred_product(fixture *fx, nnc_node **q) {
  nnc_node *x = fx_param(fx, "x", sh(4, 6, 4, 5, 9), -2, 2);
  *q = fx_param(fx, "q", sh(4, 6, 4, 5, 9), -1, 1);
  nnc_node *m = fx_param(fx, "m", sh(4, 1, 4, 1, 1), -0.5, 0.5);
  return nnc_ir_binary(fx->g, NNC_OP_MUL, nnc_ir_binary(fx->g, NNC_OP_SUB, x, m), *q);
}

/* The sum over [G, N/G, C, H, W] groups of the batch of x, [N, C, H, W]. */
static nnc_node *grouped_sum(fixture *fx, nnc_node *x) {
  nnc_shape groups = sh(5, 2, 3, 4, 5, 9);
  return nnc_ir_reduce(fx->g, NNC_OP_SUM, nnc_ir_reshape(fx->g, x, &groups), 0x1A);
}

/* fx's outputs checked against the interpreter and at 1, 2 and 3 threads;
 * *kernels: the train step's kernels; then one step at 2 threads, the
 * first 8 floats of each output outs[0..n) into got[8 i ..]. Tears fx down. */
static void step_sums(void *st, int *kernels, const nnc_output_kind *outs, int n, float *got) {
  fixture *fx = st;
  fx_check(fx);
  fx_check_threads(fx, 1, false);
  *kernels = train_kernels(fx);
  fx_run r;
  fx_compile(fx, &r, 2);
  fx_fill(fx, &r, NULL);
  fx_inputs(fx, &r, NULL, 1);
  r.model->train_step(r.arena, r.pool);
  for (int i = 0; i < n; i++)
    memcpy(got + 8 * i, r.arena + nnc_cg_output_offset(r.prog, outs[i]), sizeof(float) * 8);
  fx_release(&r);
  fx_teardown(&st);
}

/* Batch norm's sums over groups of the batch: sum over [G, N/G, C, H, W]
 * of a reshape of (x - m) * q, [N, C, H, W]. The reduction computes the
 * product itself (one kernel, no pass storing it), and adds each product
 * rounded, as it adds the stored one: the same bits as when the product
 * is stored (also an output). Returns the sums of one step, 1, 2 or 3
 * threads, which must agree bit for bit. */
static float *grouped_sums(bool store_product, int *kernels) {
  void *st;
  fx_setup(&st);
  fixture *fx = st;
  nnc_node *q, *t = centred_product(fx, &q);
  out(fx, NNC_OUT_PRED, grouped_sum(fx, t));
  if (store_product) out(fx, NNC_OUT_LOSS_VEC, t);
  float *got = malloc(sizeof(float) * 8);
  assert_non_null(got);
  step_sums(st, kernels, (nnc_output_kind[]){NNC_OUT_PRED}, 1, got);
  return got;
}

static void test_reduce_through_reshape(void **state) {
  (void)state;
  int fused, stored;
  float *a = grouped_sums(false, &fused), *b = grouped_sums(true, &stored);
  assert_int_equal(fused, 1);  /* the lanesum alone */
  assert_int_equal(stored, 2); /* the product, then the lanesum */
  for (int i = 0; i < 8; i++)
    if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
      fail_msg("sum %d: %.9g computed inline, %.9g stored", i, a[i], b[i]);
  free(a);
  free(b);
}

/* Batch norm's backward sums over groups of the batch, sum(dz) and
 * sum((x - m) * dz), [G, N/G, C, H, W] views of [N, C, H, W]: `which` 0
 * takes both (one kernel, the lanes of both in the same loops, dz read
 * once), 1 only the first, 2 only the second (a kernel each). Returns the
 * 8 + 8 sums of one step (2 threads; 1 and 3 checked equal), to be
 * compared bit for bit. */
static float *twin_sums(int which, int *kernels) {
  void *st;
  fx_setup(&st);
  fixture *fx = st;
  nnc_node *dz, *t = centred_product(fx, &dz);
  nnc_node *s1 = grouped_sum(fx, dz), *s2 = grouped_sum(fx, t);
  out(fx, NNC_OUT_PRED, which == 2 ? s2 : s1);
  if (which == 0) out(fx, NNC_OUT_LOSS_VEC, s2);
  float *got = calloc(16, sizeof(float));
  assert_non_null(got);
  nnc_output_kind outs[2] = {NNC_OUT_PRED, NNC_OUT_LOSS_VEC};
  step_sums(st, kernels, outs, which == 0 ? 2 : 1, which == 2 ? got + 8 : got);
  return got;
}

static void test_twin_lane_sums(void **state) {
  (void)state;
  int both, first, second;
  float *a = twin_sums(0, &both), *b = twin_sums(1, &first), *c = twin_sums(2, &second);
  assert_int_equal(first, 1);
  assert_int_equal(second, 1);
  assert_int_equal(both, 1); /* one lanesum2, not two lanesums */
  for (int i = 0; i < 16; i++) {
    float want = i < 8 ? b[i] : c[i];
    if (memcmp(&a[i], &want, sizeof(float)) != 0)
      fail_msg("sum %d: %.9g in one kernel, %.9g alone", i, a[i], want);
  }
  free(a);
  free(b);
  free(c);
}

/* Whether the train step's lane sum loops over the images (extent
 * `images`) right outside the channels (extent `channels`): memory order. */
static bool images_outside_channels(fixture *fx, int images, int channels) {
  FILE *f = kernel_dump(fx);
  char line[256], want[2][32];
  snprintf(want[0], sizeof want[0], " < %d:", images);
  snprintf(want[1], sizeof want[1], " < %d:", channels);
  bool in_lanes = false, after_images = false, found = false;
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "kernel ", 7) == 0) in_lanes = strstr(line, ".lanesum") != NULL;
    if (!in_lanes || !strstr(line, "for ")) continue;
    found |= after_images && strstr(line, want[1]);
    after_images = strstr(line, want[0]) != NULL;
  }
  fclose(f);
  return found;
}

/* Batch norm's sums over [G, N/G, C, H, W] groups of the batch: the lane
 * kernel takes the images of a group outside the channels (memory order:
 * one image's planes one after the other, not one plane an image apart);
 * each lane adds the same terms in the same order as before, so the sums
 * agree with the interpreter and bit for bit at 1, 2 and 3 threads. */
static void test_lanes_in_memory_order(void **state) {
  fixture *fx = *state;
  nnc_node *x = fx_param(fx, "x", sh(4, 6, 4, 5, 9), -2, 2);
  nnc_node *sq = nnc_ir_binary(fx->g, NNC_OP_MUL, x, x);
  out(fx, NNC_OUT_PRED, grouped_sum(fx, x));
  out(fx, NNC_OUT_LOSS_VEC, grouped_sum(fx, sq));
  fx_check(fx);
  fx_check_threads(fx, 1, false);
  assert_true(images_outside_channels(fx, 3, 4));
}

/* The memory plan: temporaries a (16 floats, kernels 0-1), b (16 floats,
 * 0-3), c (32 floats, 2-3). By first use, a and b take the first two
 * 64-byte slots and c, which a's freed slot cannot hold, goes on top: 256
 * bytes; largest first, c and then a share the first 128 bytes, b after
 * them: 192, the plan kept (place_temps tries both). */
static void test_plan_largest_first(void **state) {
  (void)state;
  nnc_arena a;
  nnc_arena_init(&a);
  nnc_kprog p = {.arena = &a, .comm_off = -1};
  int ba = nnc_kprog_add_buf(&p, NNC_KBUF_TEMP, 0, NNC_KT_F32, 16, "a");
  int bb = nnc_kprog_add_buf(&p, NNC_KBUF_TEMP, 0, NNC_KT_F32, 16, "b");
  int bc = nnc_kprog_add_buf(&p, NNC_KBUF_TEMP, 0, NNC_KT_F32, 32, "c");
  const int touched[4][3] = {{ba, bb, -1}, {ba, -1, -1}, {bc, -1, -1}, {bb, bc, -1}};
  for (int k = 0; k < 4; k++) {
    nnc_kernel *ker = nnc_kernel_new(&a, "k");
    ker->writes = nnc_arena_alloc(&a, sizeof(int) * 3);
    for (int i = 0; i < 3 && touched[k][i] >= 0; i++)
      ker->writes[ker->nwrites++] = touched[k][i];
    nnc_kgraph_add(&a, &p.train, ker);
  }
  p.has_train = true;
  nnc_cg_plan(&p);
  assert_int_equal(p.train.temp_bytes, 192);
  int64_t oa = p.bufs[ba].offset, ob = p.bufs[bb].offset, oc = p.bufs[bc].offset;
  assert_true(ob >= oa + 64 || oa >= ob + 64);  /* a and b live together */
  assert_true(ob >= oc + 128 || oc >= ob + 64); /* b and c too */
  nnc_arena_destroy(&a);
}

/* ---- Per-step scalars of the optimizer and schedule ---- */

/* |got - want| is at most half an f32 ulp of want (with 1e-6 of slack for
 * a last-bit difference in the double value): got is want rounded once. */
static bool rounded_once(float got, double want) {
  double ulp = nextafterf((float)want, INFINITY) - (float)want;
  return fabs((double)got - want) <= 0.5 * ulp * (1 + 1e-6);
}

/* Adam's lr / (1 - beta1^t) and sqrt(1 - beta2^t) and a warmed-up cosine
 * learning rate, compiled, for every step t = 1 .. 10^6: each is the
 * double-precision value rounded once to f32 (computed in f32, 1 - 0.999^t
 * was ~100 ulps off). */
static void test_step_scalars_rounded_once(void **state) {
  fixture *fx = *state;
  nnc_train_config *cfg = &fx->m->config;
  nnc_optim_defaults(&cfg->optim, NNC_OPT_ADAM);
  nnc_schedule_config *sc = &cfg->schedule;
  sc->kind = NNC_SCHED_COSINE;
  sc->unit = NNC_PER_STEP;
  sc->period = 300000;
  sc->min_lr = 1e-5;
  sc->warmup = 1000;
  sc->warmup_start = 0.1;
  nnc_node *s[3];
  char err[256];
  assert_true(nnc_optim_step_scalars(fx->m, fx->g, NNC_F32, s, err, sizeof err));
  nnc_shape one = sh(1, 1);
  out(fx, NNC_OUT_LR, s[0]);
  out(fx, NNC_OUT_LOSS, s[1]);
  out(fx, NNC_OUT_PRED, nnc_ir_reshape(fx->g, s[2], &one));
  fx_run r;
  fx_compile(fx, &r, 0);
  const nnc_rt_model *m = r.model;
  int64_t lr_off = nnc_cg_output_offset(r.prog, NNC_OUT_LR);
  int64_t size_off = nnc_cg_output_offset(r.prog, NNC_OUT_LOSS);
  int64_t bc2_off = nnc_cg_output_offset(r.prog, NNC_OUT_PRED);
  const double lr0 = cfg->optim.lr, b1 = cfg->optim.beta1, b2 = cfg->optim.beta2;
  const double pi = 3.14159265358979323846, w = (double)sc->warmup;
  int bad = 0;
  for (int step = 1; step <= 1000000; step++) {
    float fs = (float)step;
    memcpy(r.arena + m->step_off, &fs, sizeof fs);
    m->train_step(r.arena, NULL);
    double t = step - 1, after = fmax(t - w, 0);
    double lr =
        sc->min_lr + (1 + cos(after * (pi / (double)sc->period))) * ((lr0 - sc->min_lr) / 2);
    lr *= fmin(1, sc->warmup_start + t * ((1 - sc->warmup_start) / w));
    double want[3] = {lr, lr / (1 - pow(b1, step)), sqrt(1 - pow(b2, step))};
    float got[3];
    memcpy(&got[0], r.arena + lr_off, 4);
    memcpy(&got[1], r.arena + size_off, 4);
    memcpy(&got[2], r.arena + bc2_off, 4);
    for (int i = 0; i < 3; i++)
      if (!rounded_once(got[i], want[i]) && bad++ < 10)
        print_error("step %d scalar %d: %.9g, double %.17g\n", step, i, got[i], want[i]);
  }
  fx_release(&r);
  if (bad) fail_msg("%d scalars are not the double value rounded once", bad);
}

/* Runs last: every op of ops.def was compiled and compared with the
 * interpreter by some test above. */
static void test_every_op_is_checked(void **state) {
  (void)state;
  int missing = 0;
  for (int op = 0; op < NNC_OP_COUNT_; op++)
    if (!fx_kernel_checked[op]) {
      print_error("op '%s' has no kernel-against-interpreter check in "
                  "tests/codegen/test_cg_ops.c\n",
                  nnc_op_name((nnc_op)op));
      missing++;
    }
  if (missing) fail_msg("%d op(s) without a kernel check", missing);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_unary_f32),
      T(test_unary_f64),
      T(test_exp_log_edges),
      T(test_binary_broadcast),
      T(test_pow),
      T(test_select_cast),
      T(test_fill_and_const),
      T(test_reductions),
      T(test_reductions_transposed),
      T(test_argmax),
      T(test_reshape_transpose_broadcast),
      T(test_matmul),
      T(test_matmul_epilogue),
      T(test_matmul_long_k_column_split),
      T(test_im2col_col2im),
      T(test_window_reduce),
      T(test_conv_layouts),
      T(test_step_scalars_rounded_once),
      T(test_gather_scatter_onehot),
      T(test_rand),
      T(test_rand_is_the_runtime_hash),
      T(test_rand_chunked),
      T(test_softmax_cross_entropy),
      T(test_update_swap),
      T(test_update_adam_like),
      T(test_update_transposed),
      T(test_update_mixed),
      T(test_elementwise_merged_axes),
      T(test_update_rank4_flat),
      T(test_update_rank4_broadcast),
      T(test_recompute_batchnorm),
      cmocka_unit_test(test_reduce_through_reshape),
      cmocka_unit_test(test_twin_lane_sums),
      T(test_lanes_in_memory_order),
      cmocka_unit_test(test_plan_largest_first),
      cmocka_unit_test(test_every_op_is_checked), /* last */
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
