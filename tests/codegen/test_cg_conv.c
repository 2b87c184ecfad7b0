/* test_cg_conv.c: direct convolution kernels (codegen/lower_conv.c,
 * conv_direct.c). A convolution as the front end builds it (im2col,
 * cols.W^T + bias, NHWC -> NCHW) and its gradients by autodiff; at stride 1
 * the code generator computes the NCHW output ("conv") and the input
 * gradient ("conv_dx") directly, the weight gradient still by the product
 * of the columns. Each shape: forward, input and weight gradients against
 * the interpreter, the kernels it was lowered to, then 1, 2 and 3 threads
 * bit for bit. Odd channel counts (remainder channel blocks), rows shorter
 * and longer than a vector (masked loads and stores), padding 0, 1, 2 and
 * more than the kernel reaches, kernels 1x1, 3x3, 5x5 and non-square;
 * stride 2 and rows too wide for the kernel's registers keep the products.
 */
#include "cg_test.h"

typedef struct conv_case {
  int n, c, h, w, o;
  int64_t k[2], s[2], p[2];
  bool bias;
  bool direct; /* lowered to the direct kernels */
  bool no_dw;  /* only dx: the direct kernel reads dy itself, not its NHWC copy for dW */
} conv_case;

/* y = transpose_0312(reshape(im2col(x).W^T + b)), loss sum(relu(y) * r):
 * outputs y, dx and dW (unless no_dw). */
static void build(fixture *fx, const conv_case *cc) {
  nnc_graph *g = fx->g;
  int kk = (int)(cc->k[0] * cc->k[1]);
  nnc_node *x = fx_param(fx, "x", sh(4, cc->n, cc->c, cc->h, cc->w), -1, 1);
  nnc_node *w4 = fx_param(fx, "w", sh(4, cc->o, cc->c, (int)cc->k[0], (int)cc->k[1]), -1, 1);
  nnc_shape w2 = sh(2, cc->o, cc->c * kk);
  nnc_node *cols = nnc_ir_im2col(g, x, cc->k, cc->s, cc->p, 0);
  nnc_node *y = nnc_ir_matmul(g, cols, nnc_ir_reshape(g, w4, &w2), false, true);
  if (cc->bias) {
    nnc_node *b = fx_param(fx, "b", sh(1, cc->o), -1, 1);
    nnc_shape row = sh(2, 1, cc->o);
    y = nnc_ir_binary(g, NNC_OP_ADD, y, nnc_ir_reshape(g, b, &row));
  }
  int oh = (int)nnc_ir_window_out(cc->h, cc->k[0], cc->s[0], cc->p[0]),
      ow = (int)nnc_ir_window_out(cc->w, cc->k[1], cc->s[1], cc->p[1]);
  nnc_shape nhwc = sh(4, cc->n, oh, ow, cc->o);
  static const int to_nchw[4] = {0, 3, 1, 2};
  nnc_node *y4 = nnc_ir_transpose(g, nnc_ir_reshape(g, y, &nhwc), to_nchw);
  nnc_node *r = fx_tensor(fx, "r", NNC_ROLE_FROZEN, NNC_F32, y4->shape, -1, 1);
  nnc_shape scalar = sh(0);
  nnc_node *loss = nnc_ir_reshape(
      g,
      nnc_ir_reduce(g, NNC_OP_SUM,
                    nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_unary(g, NNC_OP_RELU, y4), r), 0xf),
      &scalar);
  nnc_node *wrt[2] = {x, w4}, *grad[2];
  nnc_ad_grad(g, loss, wrt, cc->no_dw ? 1 : 2, grad);
  nnc_graph_set_output(g, NNC_OUT_PRED, y4);
  nnc_graph_set_output(g, NNC_OUT_LOSS_VEC, grad[0]);
  if (!cc->no_dw) nnc_graph_set_output(g, NNC_OUT_CORRECT_VEC, grad[1]);
  fx->rtol = 1e-5;
  fx->atol = 1e-5 * sqrt((double)(cc->n * cc->h * cc->w * cc->c));
}

static void check_case(const conv_case *cc) {
  void *st;
  fx_setup(&st);
  fixture *fx = st;
  build(fx, cc);
  char *dump = fx_kernel_dump(fx);
  if (fx_has_kernel(dump, "conv") != cc->direct || fx_has_kernel(dump, "conv_dx") != cc->direct)
    fail_msg("case %dx%dx%dx%d o=%d: direct kernels %s, expected %s", cc->n, cc->c, cc->h, cc->w,
             cc->o, fx_has_kernel(dump, "conv") ? "present" : "absent",
             cc->direct ? "present" : "absent");
  /* dx needs no col2im (the output gradient's NHWC transpose stays for dW) */
  if (cc->direct && fx_has_kernel(dump, "col2im"))
    fail_msg("case %dx%dx%dx%d o=%d: a col2im kernel beside the direct ones", cc->n, cc->c, cc->h,
             cc->w, cc->o);
  free(dump);
  fx_check(fx);
  fx_check_threads(fx, 1, false);
  fx_teardown(&st);
}

static void test_conv_direct(void **state) {
  (void)state;
  static const conv_case cases[] = {
      {2, 3, 9, 7, 5, {3, 3}, {1, 1}, {1, 1}, true, true, false},   /* odd sizes, row < 16 */
      {2, 5, 6, 20, 17, {3, 3}, {1, 1}, {1, 1}, true, true, false}, /* row of 2 vectors, O = 17 */
      {1, 2, 5, 33, 3, {5, 5}, {1, 1}, {2, 2}, false, true, false}, /* 5x5, padding 2, 3 vectors */
      {3, 4, 8, 8, 6, {1, 1}, {1, 1}, {0, 0}, true, true, false},   /* 1x1 */
      {2, 3, 7, 9, 4, {3, 3}, {1, 1}, {0, 0}, true, true, false},   /* padding 0: dx pads 2 */
      {2, 3, 6, 6, 4, {3, 5}, {1, 1}, {2, 1}, true, true, false},   /* non-square, padding 2 */
      {2, 2, 5, 6, 3, {1, 1}, {1, 1}, {1, 1}, true, true, false},   /* taps that see only padding */
      {3, 32, 14, 14, 64, {3, 3}, {1, 1}, {1, 1}, true, true, false}, /* fashion_cnn's conv 2 */
      {2, 1, 28, 28, 32, {3, 3}, {1, 1}, {1, 1}, true, true, false},  /* fashion_cnn's conv 1 */
      {2, 3, 11, 10, 17, {3, 3}, {2, 2}, {1, 1}, true, false, false}, /* stride 2: the products */
      {1, 2, 3, 70, 3, {3, 3}, {1, 1}, {1, 1}, true, false, false}, /* row of 5 vectors: too wide */
      {2, 3, 9, 7, 5, {3, 3}, {1, 1}, {1, 1}, true, true, true},    /* dx from dy itself */
      {2, 4, 6, 19, 6, {3, 3}, {1, 1}, {0, 0}, true, true, true},   /* the same, 2 vectors */
      /* output channels no block size divides: the last block overlaps the
       * one before (forward 67 in blocks of 12, the last from 55; rows of 2
       * vectors 13 in blocks of 7, the last from 6) */
      {2, 5, 14, 14, 67, {3, 3}, {1, 1}, {1, 1}, true, true, false},
      {1, 7, 5, 20, 13, {3, 3}, {1, 1}, {1, 1}, true, true, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_case(&cases[i]);
}

/* The geometry line ("  conv N=...") of the first kernel `what` in a
 * kernel dump, or NULL. */
static const char *kernel_line(const char *dump, const char *what) {
  char key[64];
  snprintf(key, sizeof key, ".%s ", what);
  const char *l = strstr(dump, key), *geo = l ? strstr(l, "\n  conv N=") : NULL;
  return geo ? geo + 1 : NULL;
}

/* fashion_cnn's conv 2 (64 output channels, rows of 14 three at a time:
 * at most 8 per block) and its input gradient (32): blocks of 8, a
 * divisor, so one block size and plain stores, not 11 + remainder; conv 1 (rows of 28, two
 * vectors, 32 channels) likewise. Both still equal the interpreter at 1,
 * 2 and 3 threads bit for bit. */
static void test_conv_channel_blocks(void **state) {
  (void)state;
  static const conv_case cases[] = {
      {3, 32, 14, 14, 64, {3, 3}, {1, 1}, {1, 1}, true, true, false},
      {2, 3, 28, 28, 32, {3, 3}, {1, 1}, {1, 1}, true, true, false},
  };
  static const char *const expect[][2] = {
      {"C=32 O=64", "C=64 O=32"},
      {"C=3 O=32", "C=32 O=3"},
  };
  for (int c = 0; c < 2; c++) {
    void *st;
    fx_setup(&st);
    fixture *fx = st;
    build(fx, &cases[c]);
    char *dump = fx_kernel_dump(fx);
    const char *fwd = kernel_line(dump, "conv"), *dx = kernel_line(dump, "conv_dx");
    assert_non_null(fwd);
    assert_non_null(dx);
    assert_non_null(strstr(fwd, expect[c][0]));
    assert_non_null(strstr(dx, expect[c][1]));
    /* ob= on the geometry line, before the end of the line */
    const char *ob = strstr(fwd, "ob=");
    assert_non_null(ob);
    assert_int_equal(strtol(ob + 3, NULL, 10), 8);
    ob = strstr(dx, "ob=");
    assert_non_null(ob);
    assert_int_equal(strtol(ob + 3, NULL, 10), c == 0 ? 8 : 3);
    free(dump);
    fx_check(fx);
    fx_check_threads(fx, 1, false);
    fx_teardown(&st);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv_direct),
      cmocka_unit_test(test_conv_channel_blocks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
