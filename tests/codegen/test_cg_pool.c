/* test_cg_pool.c: max pooling in training, lowered without its columns.
 * The front end's pooling is im2col of each channel plane, rmax over the
 * window axis; autodiff's gradient is onehot(argmax of the same columns)
 * times dy, then col2im. The code generator stores the maximum and the tap
 * of the first maximum in one kernel that reads the image through the
 * window ("windowargmax"), and the gradient reads that tap ("unpool"): no
 * im2col, argmax, cast or col2im kernel. Where the windows tile the image
 * and ReLU's gradient reads the unpooled gradient, the ReLU's select
 * computes it itself ("unpool_select"): it is never stored; nor is the
 * ReLU's output, which the window maximum computes as it reads it. Forward and gradient against the
 * interpreter exactly (a maximum and a routed adjoint round nothing), for
 * odd sizes, stride 2, padding, overlapping windows and ties (constant
 * planes, ReLU zeros: each window's adjoint routed to the first maximum
 * in scan order, as the interpreter does), then 1, 2 and 3 threads bit
 * for bit. */
#include "cg_test.h"

/* How the pooled image is made from parameter p (and frozen q). */
typedef enum pool_input {
  RANDOM, /* p in [-1, 1] */
  TIES,   /* p + floor(2 q): values in {p, p + 1}, most windows tied */
  PLANES, /* p + floor(0 q): each plane one constant */
  RELU,   /* relu(p): a quarter of the windows all zeros */
} pool_input;

/* sum(m * r) with r frozen in [-1, 1]: each window's adjoint is its r. */
static nnc_node *weighted_sum(fixture *fx, nnc_node *m) {
  nnc_node *r = fx_tensor(fx, "r", NNC_ROLE_FROZEN, NNC_F32, m->shape, -1, 1);
  nnc_shape scalar = sh(0);
  uint32_t all = (1u << m->shape.rank) - 1;
  nnc_node *terms = nnc_ir_binary(fx->g, NNC_OP_MUL, m, r);
  return nnc_ir_reshape(fx->g, nnc_ir_reduce(fx->g, NNC_OP_SUM, terms, all), &scalar);
}

static void check_pool(int n, int c, int h, int w, const int64_t k[2], const int64_t s[2],
                       const int64_t pad[2], pool_input how) {
  void *st;
  fx_setup(&st);
  fixture *fx = st;
  nnc_graph *g = fx->g;
  bool tied = how == TIES || how == PLANES;
  nnc_node *p = fx_param(fx, "p", sh(4, n, c, h, w), tied ? 0.5 : -1, tied ? 0.5 : 1);
  nnc_node *x = p;
  if (tied) {
    nnc_node *q =
        fx_tensor(fx, "q", NNC_ROLE_FROZEN, NNC_F32, sh(4, n, c, h, w), 0, how == TIES ? 1 : 0);
    x = nnc_ir_binary(g, NNC_OP_ADD, p,
                      nnc_ir_unary(g, NNC_OP_FLOOR,
                                   nnc_ir_binary(g, NNC_OP_MUL, q, nnc_ir_const(g, NNC_F32, 2))));
  } else if (how == RELU) {
    x = nnc_ir_unary(g, NNC_OP_RELU, p);
  }
  nnc_shape planes = sh(4, n * c, 1, h, w);
  nnc_node *win = nnc_ir_im2col(g, nnc_ir_reshape(g, x, &planes), k, s, pad, -INFINITY);
  nnc_node *m = nnc_ir_reduce(g, NNC_OP_RMAX, win, 0x2);
  nnc_node *grad, *y = weighted_sum(fx, m);
  nnc_ad_grad(g, y, &p, 1, &grad);
  nnc_graph_set_output(g, NNC_OUT_PRED, m);
  nnc_graph_set_output(g, NNC_OUT_LOSS_VEC, grad);
  fx->rtol = fx->atol = 0; /* maxima are copies, the gradient r or 0 (or their sums) */
  if (k[0] > s[0] || k[1] > s[1]) fx->atol = 1e-6; /* overlapping windows add adjoints */
  fx_check(fx);
  fx_check_threads(fx, 1, false);
  char *dump = fx_kernel_dump(fx);
  assert_true(fx_has_kernel(dump, "windowargmax"));
  /* windows that tile the image: ReLU's gradient select computes the
   * unpooled gradient itself, which is never stored */
  bool tiles =
      k[0] == s[0] && k[1] == s[1] && pad[0] == 0 && pad[1] == 0 && h % k[0] == 0 && w % k[1] == 0;
  bool folded = how == RELU && tiles;
  if (!fx_has_kernel(dump, folded ? "unpool_select" : "unpool"))
    fail_msg("no kernel %s:\n%s", folded ? "unpool_select" : "unpool", dump);
  const char *gone[8] = {"im2col", "argmax", "cast", "col2im", "rmax"};
  int ngone = 5;
  /* the ReLU computed where the window maximum reads it, never stored */
  if (how == RELU) gone[ngone++] = "relu";
  if (folded) {
    gone[ngone++] = "unpool";
    gone[ngone++] = "select";
  }
  for (int i = 0; i < ngone; i++)
    if (fx_has_kernel(dump, gone[i])) fail_msg("a kernel %s is left:\n%s", gone[i], dump);
  free(dump);
  fx_teardown(&st);
}

static void test_pool_train(void **state) {
  (void)state;
  static const struct {
    int n, c, h, w;
    int64_t k[2], s[2], p[2];
  } cases[] = {
      {2, 3, 6, 6, {2, 2}, {2, 2}, {0, 0}},    /* 2x2 stride 2: windows tile the image */
      {2, 3, 8, 6, {2, 2}, {2, 2}, {0, 0}},    /* more rows of windows than columns */
      {2, 32, 28, 28, {2, 2}, {2, 2}, {0, 0}}, /* fashion_cnn's first pooling, batch 2 */
      {1, 1, 4, 6, {2, 2}, {2, 2}, {0, 0}},    /* one image, one channel */
      {3, 5, 6, 10, {2, 2}, {2, 2}, {0, 0}},   /* odd batch and channels */
      {2, 3, 9, 6, {3, 3}, {3, 3}, {0, 0}},    /* 3x3 windows that tile */
      {2, 3, 4, 9, {2, 3}, {2, 3}, {0, 0}},    /* non-square windows that tile */
      {3, 2, 9, 7, {2, 2}, {2, 2}, {0, 0}},    /* odd sizes: the last row and column unread */
      {2, 2, 7, 7, {2, 2}, {2, 2}, {1, 1}},    /* padding */
      {1, 3, 9, 7, {3, 3}, {2, 2}, {1, 1}},    /* overlapping windows, stride 2, padding */
      {2, 1, 6, 9, {3, 2}, {1, 3}, {1, 0}},    /* non-square window, overlapping rows */
  };
  static const pool_input inputs[] = {RANDOM, TIES, PLANES, RELU};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (size_t j = 0; j < sizeof inputs / sizeof inputs[0]; j++)
      check_pool(cases[i].n, cases[i].c, cases[i].h, cases[i].w, cases[i].k, cases[i].s, cases[i].p,
                 inputs[j]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pool_train),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
