/* test_autodiff.c: every VJP rule of ir/autodiff.c against float64 central
 * differences computed with the reference interpreter.
 *
 * For a node f built from float64 leaves, check() forms the scalar
 * y = sum(f * R) with fixed random weights R (so every output element
 * contributes differently), asks nnc_ad_grad for dy/dleaf and compares each
 * element with (y(v + h) - y(v - h)) / 2h. Then composites (log-softmax
 * cross-entropy, a two-layer MLP, batch-norm normalisation, convolution and
 * max pooling through im2col) and the structural promises: no gradient work
 * for the input or frozen weights, NULL where y does not depend on wrt.
 */
#include "ir_test.h"

enum { MAX_LEAVES = 8 };
static const double FD_STEP = 1e-5, FD_TOL = 1e-6;

/* Ops whose VJP rule some check below compared with finite differences:
 * every op of the checked function that depends on a leaf. The last test
 * demands one for every op whose GRADIENT in ops.def is RULE. */
static bool checked[NNC_OP_COUNT_];

static void mark_checked(const nnc_graph *g, const nnc_node *y, int n, nnc_node **leaves) {
  bool *active = calloc((size_t)y->id + 1, sizeof(bool));
  assert_non_null(active);
  for (int i = 0; i < n; i++)
    active[leaves[i]->id] = true;
  for (int i = 0; i <= y->id; i++) {
    const nnc_node *v = g->nodes[i];
    for (int j = 0; j < v->nin && !active[i]; j++)
      active[i] = active[v->in[j]->id];
    if (active[i]) checked[v->op] = true;
  }
  free(active);
}

static double eval_y(nnc_interp *in, const nnc_node *y) {
  nnc_interp_run(in);
  return nnc_interp_value(in, y)[0];
}

/* Checks d sum(f * R) / d leaves[i] for all i; labels (if any) go to the
 * graph's i32 input Y. */
static void check_labels(fixture *fx, nnc_node *f, int n, nnc_node **leaves, const double *labels) {
  nnc_graph *g = fx->g;
  nnc_node *r = fx_tensor(fx, "R", NNC_ROLE_FROZEN, f->dtype, f->shape, -1, 1);
  nnc_node *y = nnc_ir_binary(g, NNC_OP_MUL, f, r);
  if (y->shape.rank) {
    nnc_shape scalar = sh(0);
    y = nnc_ir_reshape(g, nnc_ir_reduce(g, NNC_OP_SUM, y, (1u << y->shape.rank) - 1), &scalar);
  }
  nnc_node *grads[MAX_LEAVES];
  nnc_ad_grad(g, y, leaves, n, grads);
  assert_verified(g);
  nnc_interp *in = nnc_interp_new(g);
  assert_non_null(in);
  fx_fill(fx, in);
  if (labels)
    fx_set(nnc_interp_input(in, NNC_IN_Y), labels,
           (int)nnc_shape_numel(&g->inputs[NNC_IN_Y]->shape));
  for (int i = 0; i < n; i++) {
    assert_non_null(grads[i]);
    assert_true(nnc_shape_eq(&grads[i]->shape, &leaves[i]->shape));
    int64_t numel = nnc_shape_numel(&leaves[i]->shape);
    double *analytic = malloc(sizeof(double) * (size_t)numel);
    eval_y(in, y); /* unperturbed values (the last check ran at v - h) */
    fx_set(analytic, nnc_interp_value(in, grads[i]), (int)numel);
    double *v = nnc_interp_tensor(in, (int)leaves[i]->attr[0]);
    for (int64_t j = 0; j < numel; j++) {
      double keep = v[j];
      v[j] = keep + FD_STEP;
      double yp = eval_y(in, y);
      v[j] = keep - FD_STEP;
      double ym = eval_y(in, y);
      v[j] = keep;
      double numeric = (yp - ym) / (2 * FD_STEP);
      if (!(fabs(analytic[j] - numeric) <= FD_TOL * fmax(1.0, fabs(numeric))))
        fail_msg("%s: d/d%s[%lld]: autodiff %.12g, finite differences %.12g", nnc_op_name(f->op),
                 fx->m->tensors[leaves[i]->attr[0]].name, (long long)j, analytic[j], numeric);
    }
    free(analytic);
  }
  nnc_interp_free(in);
  mark_checked(g, y, n, leaves);
}

static void check(fixture *fx, nnc_node *f, int n, nnc_node **leaves) {
  check_labels(fx, f, n, leaves, NULL);
}

#define LEAVES(...)                                                                                \
  (sizeof((nnc_node *[]){__VA_ARGS__}) / sizeof(nnc_node *)), (nnc_node *[]) {                     \
    __VA_ARGS__                                                                                    \
  }

/* ---- Elementwise ---- */

static void check_unary(void **state, nnc_op op, double lo, double hi) {
  fixture *fx = *state;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 3, 4), lo, hi);
  check(fx, nnc_ir_unary(fx->g, op, x), LEAVES(x));
}

static void test_neg(void **s) {
  check_unary(s, NNC_OP_NEG, -2, 2);
}
static void test_exp(void **s) {
  check_unary(s, NNC_OP_EXP, -2, 2);
}
static void test_log(void **s) {
  check_unary(s, NNC_OP_LOG, 0.2, 3);
}
static void test_sqrt(void **s) {
  check_unary(s, NNC_OP_SQRT, 0.2, 3);
}
static void test_rsqrt(void **s) {
  check_unary(s, NNC_OP_RSQRT, 0.2, 3);
}
static void test_recip(void **s) {
  check_unary(s, NNC_OP_RECIP, 0.2, 3);
}
/* one process: the identity, and so is its rule (the ranks' case:
 * tests/ir/test_sync.c) */
static void test_allreduce(void **s) {
  check_unary(s, NNC_OP_ALLREDUCE, -3, 3);
}
static void test_tanh(void **s) {
  check_unary(s, NNC_OP_TANH, -2, 2);
}
static void test_sigmoid(void **s) {
  check_unary(s, NNC_OP_SIGMOID, -3, 3);
}
static void test_relu(void **s) {
  check_unary(s, NNC_OP_RELU, -2, 2);
}
static void test_abs(void **s) {
  check_unary(s, NNC_OP_ABS, -2, 2);
}
static void test_erf(void **s) {
  check_unary(s, NNC_OP_ERF, -2, 2);
}
static void test_cos(void **s) {
  check_unary(s, NNC_OP_COS, -3, 3);
}

static void test_cast(void **state) {
  fixture *fx = *state;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 2, 3), -1, 1);
  nnc_node *f = nnc_ir_cast(fx->g, nnc_ir_cast(fx->g, x, NNC_F32), NNC_F64);
  check(fx, nnc_ir_binary(fx->g, NNC_OP_MUL, f, x), LEAVES(x));
}

/* a[2,3] op b[1,3], and a rank-0 operand on the left. */
static void check_binary(void **state, nnc_op op, double alo, double ahi, double blo, double bhi) {
  fixture *fx = *state;
  nnc_node *a = fx_leaf(fx, "a", sh(2, 2, 3), alo, ahi);
  nnc_node *b = fx_leaf(fx, "b", sh(2, 1, 3), blo, bhi);
  nnc_node *s = fx_leaf(fx, "s", sh(0), blo, bhi);
  nnc_node *f = nnc_ir_binary(fx->g, op, a, b);
  nnc_node *f2 = nnc_ir_binary(fx->g, op, s, a);
  check(fx, nnc_ir_binary(fx->g, NNC_OP_ADD, f, f2), LEAVES(a, b, s));
}

static void test_add(void **s) {
  check_binary(s, NNC_OP_ADD, -2, 2, -2, 2);
}
static void test_sub(void **s) {
  check_binary(s, NNC_OP_SUB, -2, 2, -2, 2);
}
static void test_mul(void **s) {
  check_binary(s, NNC_OP_MUL, -2, 2, -2, 2);
}
static void test_div(void **s) {
  check_binary(s, NNC_OP_DIV, 0.5, 2, 0.5, 2);
}
static void test_max(void **s) {
  check_binary(s, NNC_OP_MAX, -2, 2, -2, 2);
}
static void test_min(void **s) {
  check_binary(s, NNC_OP_MIN, -2, 2, -2, 2);
}
static void test_pow(void **s) {
  check_binary(s, NNC_OP_POW, 0.5, 2, 0.5, 2);
}

/* pow with a constant integer exponent also takes negative bases. */
static void test_pow_const_exponent(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_leaf(fx, "a", sh(2, 2, 3), -2, 2);
  check(fx, nnc_ir_binary(fx->g, NNC_OP_POW, a, nnc_ir_const(fx->g, NNC_F64, 3)), LEAVES(a));
}

static void test_select(void **state) {
  fixture *fx = *state;
  nnc_node *c = fx_leaf(fx, "c", sh(2, 2, 3), -1, 1);
  nnc_node *a = fx_leaf(fx, "a", sh(2, 2, 3), -2, 2);
  nnc_node *b = fx_leaf(fx, "b", sh(2, 2, 1), -2, 2);
  nnc_node *cond = nnc_ir_binary(fx->g, NNC_OP_GT, c, nnc_ir_const(fx->g, NNC_F64, 0));
  nnc_node *f = nnc_ir_select(fx->g, cond, a, b);
  check(fx, f, LEAVES(a, b));
  /* The condition gets no gradient: y depends on c only through a comparison. */
  nnc_shape scalar = sh(0);
  nnc_node *y = nnc_ir_reshape(fx->g, nnc_ir_reduce(fx->g, NNC_OP_SUM, f, 0x3), &scalar), *dc;
  nnc_ad_grad(fx->g, y, &c, 1, &dc);
  assert_null(dc);
}

/* Ops with zero derivative: their outputs act as constants. */
static void test_piecewise_constant_ops(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 3, 4), -3, 3);
  nnc_node *zero = nnc_ir_const(g, NNC_F64, 0);
  nnc_node *f = nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_unary(g, NNC_OP_FLOOR, x), x);
  f = nnc_ir_binary(g, NNC_OP_ADD, f,
                    nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_unary(g, NNC_OP_SIGN, x), x));
  f = nnc_ir_binary(g, NNC_OP_ADD, f,
                    nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_binary(g, NNC_OP_GE, x, zero), x));
  f = nnc_ir_binary(g, NNC_OP_ADD, f,
                    nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_binary(g, NNC_OP_EQ, x, x), x));
  f = nnc_ir_binary(g, NNC_OP_ADD, f, nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_argmax(g, x, 1), x));
  check(fx, f, LEAVES(x));
}

/* ---- Reductions and data movement ---- */

static void test_sum(void **state) {
  fixture *fx = *state;
  nnc_node *x = fx_leaf(fx, "x", sh(3, 2, 3, 4), -1, 1);
  nnc_node *a = nnc_ir_reduce(fx->g, NNC_OP_SUM, x, 0x5);
  nnc_node *b = nnc_ir_reduce(fx->g, NNC_OP_SUM, x, 0x2);
  nnc_node *f = nnc_ir_binary(fx->g, NNC_OP_MUL, nnc_ir_binary(fx->g, NNC_OP_MUL, a, b), x);
  check(fx, f, LEAVES(x));
}

static void test_rmax(void **state) {
  fixture *fx = *state;
  nnc_node *x = fx_leaf(fx, "x", sh(3, 2, 3, 4), -1, 1);
  nnc_node *a = nnc_ir_reduce(fx->g, NNC_OP_RMAX, x, 0x4);
  nnc_node *b = nnc_ir_reduce(fx->g, NNC_OP_RMAX, x, 0x3);
  check(fx, nnc_ir_binary(fx->g, NNC_OP_ADD, a, b), LEAVES(x));
}

/* Tied maxima: x takes values in {0, 1, 2} only, so most windows hold
 * several equal maxima. d sum(rmax(x) * R)/dx must be R at the first
 * maximum of each window in row-major scan order and 0 elsewhere (PyTorch's
 * max_pool2d rule), for reduced axes that are last (pooling's layout) and
 * for ones that are not (moved last by the rule). Finite differences are
 * no use at a tie (max is not differentiable there), so the reference is
 * that rule written out in loops. */
static void check_rmax_ties(fixture *fx, uint32_t axes) {
  nnc_graph *g = fx->g;
  enum { D0 = 3, D1 = 4, D2 = 5, N = D0 * D1 * D2 };
  nnc_node *x = fx_leaf(fx, "x", sh(3, D0, D1, D2), 0, 1);
  nnc_node *m = nnc_ir_reduce(g, NNC_OP_RMAX, x, axes);
  nnc_node *r = fx_tensor(fx, "R", NNC_ROLE_FROZEN, NNC_F64, m->shape, -1, 1);
  nnc_shape scalar = sh(0);
  nnc_node *y = nnc_ir_reshape(
      g, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, m, r), 0x7), &scalar);
  nnc_node *grad;
  nnc_ad_grad(g, y, &x, 1, &grad);
  assert_verified(g);
  nnc_interp *in = nnc_interp_new(g);
  assert_non_null(in);
  fx_fill(fx, in);
  double *xv = nnc_interp_tensor(in, (int)x->attr[0]);
  uint64_t state = 7;
  for (int i = 0; i < N; i++)
    xv[i] = floor(fx_rand(&state) * 3);
  nnc_interp_run(in);
  const double *got = nnc_interp_value(in, grad), *rv = nnc_interp_tensor(in, (int)r->attr[0]);
  const int dim[3] = {D0, D1, D2};
  double want[N] = {0};
  int first[N]; /* per window (output element): flat index of its first maximum */
  for (int i = 0; i < N; i++)
    first[i] = -1;
  int ties = 0;
  for (int i = 0; i < N; i++) { /* row-major order visits each window's elements in scan order */
    int c[3] = {i / (D1 * D2), i / D2 % D1, i % D2}, w = 0;
    for (int d = 0; d < 3; d++)
      w = w * ((axes >> d) & 1 ? 1 : dim[d]) + ((axes >> d) & 1 ? 0 : c[d]);
    if (first[w] < 0 || xv[i] > xv[first[w]])
      first[w] = i;
    else if (xv[i] == xv[first[w]])
      ties++;
  }
  for (int w = 0; w < (int)nnc_shape_numel(&m->shape); w++)
    want[first[w]] = rv[w];
  assert_true(ties > 0);
  for (int i = 0; i < N; i++)
    if (got[i] != want[i]) fail_msg("axes 0x%x: dx[%d] = %g, want %g", axes, i, got[i], want[i]);
  nnc_interp_free(in);
}

static void test_rmax_ties_first_maximum(void **state) {
  (void)state;
  const uint32_t masks[] = {0x4, 0x6, 0x1, 0x5, 0x7};
  for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
    void *st;
    fx_setup(&st);
    check_rmax_ties(st, masks[i]);
    fx_teardown(&st);
  }
}

static void test_reshape_transpose_broadcast(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_leaf(fx, "x", sh(3, 2, 3, 4), -1, 1);
  nnc_node *row = fx_leaf(fx, "row", sh(3, 1, 3, 1), -1, 1);
  nnc_node *s = fx_leaf(fx, "s", sh(0), -1, 1);
  const int perm[3] = {1, 2, 0};
  nnc_node *t = nnc_ir_transpose(g, x, perm); /* [3,4,2] */
  nnc_shape rs = sh(3, 2, 3, 4);
  nnc_node *r = nnc_ir_reshape(g, t, &rs);
  nnc_node *f = nnc_ir_binary(g, NNC_OP_MUL, r, nnc_ir_broadcast(g, row, &rs));
  f = nnc_ir_binary(g, NNC_OP_ADD, f, nnc_ir_broadcast(g, nnc_ir_binary(g, NNC_OP_MUL, s, s), &rs));
  check(fx, f, LEAVES(x, row, s));
}

static void check_matmul(void **state, bool ta, bool tb) {
  fixture *fx = *state;
  nnc_node *a = fx_leaf(fx, "a", ta ? sh(2, 4, 3) : sh(2, 3, 4), -1, 1);
  nnc_node *b = fx_leaf(fx, "b", tb ? sh(2, 5, 4) : sh(2, 4, 5), -1, 1);
  check(fx, nnc_ir_matmul(fx->g, a, b, ta, tb), LEAVES(a, b));
}

static void test_matmul_nn(void **s) {
  check_matmul(s, false, false);
}
static void test_matmul_nt(void **s) {
  check_matmul(s, false, true);
}
static void test_matmul_tn(void **s) {
  check_matmul(s, true, false);
}
static void test_matmul_tt(void **s) {
  check_matmul(s, true, true);
}

static void test_im2col(void **state) {
  fixture *fx = *state;
  const int64_t k[2] = {3, 2}, st[2] = {2, 1}, pad[2] = {1, 1};
  nnc_node *x = fx_leaf(fx, "x", sh(4, 2, 2, 5, 4), -1, 1);
  nnc_node *c = nnc_ir_im2col(fx->g, x, k, st, pad, 0.5);
  check(fx, nnc_ir_binary(fx->g, NNC_OP_MUL, c, c), LEAVES(x));
}

static void test_col2im(void **state) {
  fixture *fx = *state;
  const int64_t k[2] = {2, 3}, st[2] = {1, 2}, pad[2] = {1, 0};
  nnc_shape xs = sh(4, 2, 2, 4, 5);
  int64_t rows = 2 * nnc_ir_window_out(4, 2, 1, 1) * nnc_ir_window_out(5, 3, 2, 0);
  nnc_node *c = fx_leaf(fx, "cols", sh(2, (int)rows, 2 * 2 * 3), -1, 1);
  nnc_node *x = nnc_ir_col2im(fx->g, c, &xs, k, st, pad);
  check(fx, nnc_ir_binary(fx->g, NNC_OP_MUL, x, x), LEAVES(c));
}

static void test_gather(void **state) {
  fixture *fx = *state;
  nnc_node *table = fx_leaf(fx, "table", sh(2, 5, 3), -1, 1);
  nnc_shape is = sh(2, 2, 3);
  nnc_node *idx = nnc_ir_input(fx->g, NNC_IN_Y, NNC_I32, &is);
  nnc_node *rows = nnc_ir_gather(fx->g, table, idx);
  const double labels[6] = {4, 0, 4, 2, 4, 1}; /* 4 thrice, 3 never */
  check_labels(fx, nnc_ir_binary(fx->g, NNC_OP_MUL, rows, rows), LEAVES(table), labels);
}

static void test_scatter_add(void **state) {
  fixture *fx = *state;
  nnc_node *d = fx_leaf(fx, "d", sh(2, 6, 3), -1, 1);
  nnc_shape is = sh(1, 6);
  nnc_node *idx = nnc_ir_input(fx->g, NNC_IN_Y, NNC_I32, &is);
  nnc_node *out = nnc_ir_scatter_add(fx->g, d, idx, 4);
  const double labels[6] = {3, 0, 3, 1, 3, 1};
  check_labels(fx, nnc_ir_binary(fx->g, NNC_OP_MUL, out, out), LEAVES(d), labels);
}

/* ---- Composites ---- */

/* mean over the batch of -log softmax(z)[label], with the max subtracted. */
static void test_log_softmax_cross_entropy(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *z = fx_leaf(fx, "logits", sh(2, 4, 5), -3, 3);
  nnc_shape ls = sh(1, 4);
  nnc_node *labels = nnc_ir_input(g, NNC_IN_Y, NNC_I32, &ls);
  nnc_node *shifted = nnc_ir_binary(g, NNC_OP_SUB, z, nnc_ir_reduce(g, NNC_OP_RMAX, z, 0x2));
  nnc_node *lse = nnc_ir_unary(
      g, NNC_OP_LOG, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_unary(g, NNC_OP_EXP, shifted), 0x2));
  nnc_node *logp = nnc_ir_binary(g, NNC_OP_SUB, shifted, lse);
  nnc_node *picked = nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_onehot(g, labels, 5, NNC_F64), logp);
  nnc_node *loss = nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, picked, 0x3),
                                 nnc_ir_const(g, NNC_F64, -0.25));
  const double y[4] = {1, 4, 0, 1};
  check_labels(fx, loss, LEAVES(z), y);
}

/* relu(x W1 + b1) W2^T + b2, weights as [in,out] and [out,in]. */
static nnc_node *mlp(fixture *fx, nnc_node *x, nnc_node *w1, nnc_node *b1, nnc_node *w2) {
  nnc_graph *g = fx->g;
  nnc_node *h = nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_matmul(g, x, w1, false, false), b1);
  return nnc_ir_matmul(g, nnc_ir_unary(g, NNC_OP_RELU, h), w2, false, true);
}

static void test_mlp(void **state) {
  fixture *fx = *state;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 4, 3), -1, 1);
  nnc_node *w1 = fx_leaf(fx, "w1", sh(2, 3, 5), -1, 1),
           *b1 = fx_leaf(fx, "b1", sh(2, 1, 5), -0.5, 0.5);
  nnc_node *w2 = fx_leaf(fx, "w2", sh(2, 2, 5), -1, 1), *b2 = fx_leaf(fx, "b2", sh(1, 2), -1, 1);
  nnc_shape s = sh(2, 1, 2);
  nnc_node *out =
      nnc_ir_binary(fx->g, NNC_OP_ADD, mlp(fx, x, w1, b1, w2), nnc_ir_reshape(fx->g, b2, &s));
  check(fx, nnc_ir_unary(fx->g, NNC_OP_TANH, out), LEAVES(x, w1, b1, w2, b2));
}

/* (x - mean) / sqrt(var + eps) * gamma + beta over the batch axis. */
static void test_batchnorm(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 5, 3), -2, 2);
  nnc_node *gamma = fx_leaf(fx, "gamma", sh(2, 1, 3), 0.5, 1.5);
  nnc_node *beta = fx_leaf(fx, "beta", sh(2, 1, 3), -1, 1);
  nnc_node *inv_n = nnc_ir_const(g, NNC_F64, 1.0 / 5);
  nnc_node *mean = nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, x, 1), inv_n);
  nnc_node *c = nnc_ir_binary(g, NNC_OP_SUB, x, mean);
  nnc_node *var = nnc_ir_binary(
      g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, c, c), 1), inv_n);
  nnc_node *r = nnc_ir_unary(g, NNC_OP_RSQRT,
                             nnc_ir_binary(g, NNC_OP_ADD, var, nnc_ir_const(g, NNC_F64, 1e-5)));
  nnc_node *y = nnc_ir_binary(
      g, NNC_OP_ADD, nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_binary(g, NNC_OP_MUL, c, r), gamma), beta);
  check(fx, y, LEAVES(x, gamma, beta));
}

/* conv 3x3 stride 1 pad 1 as im2col + matmul, back to NCHW, then 2x2 max
 * pooling as im2col (padding -inf) + rmax. */
static void test_conv_pool(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  enum { NB = 2, C = 2, H = 4, F = 3 };
  nnc_node *x = fx_leaf(fx, "x", sh(4, NB, C, H, H), -1, 1);
  nnc_node *w = fx_leaf(fx, "w", sh(2, F, C * 9), -1, 1);
  nnc_node *b = fx_leaf(fx, "b", sh(2, 1, F), -1, 1);
  const int64_t k3[2] = {3, 3}, one[2] = {1, 1}, k2[2] = {2, 2}, zero[2] = {0, 0};
  nnc_node *cols = nnc_ir_im2col(g, x, k3, one, one, 0.0);
  nnc_node *y =
      nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_matmul(g, cols, w, false, true), b); /* [N*H*W, F] */
  nnc_shape nhwf = sh(4, NB, H, H, F);
  const int to_nchw[4] = {0, 3, 1, 2};
  nnc_node *img = nnc_ir_transpose(g, nnc_ir_reshape(g, y, &nhwf), to_nchw);
  nnc_node *pc = nnc_ir_im2col(g, img, k2, k2, zero, -INFINITY); /* [N*2*2, F*4] */
  nnc_shape win = sh(3, NB * 4, F, 4);
  nnc_node *pooled = nnc_ir_reduce(g, NNC_OP_RMAX, nnc_ir_reshape(g, pc, &win), 0x4);
  check(fx, pooled, LEAVES(x, w, b));
}

/* ---- What gets no gradient ---- */

static int count_op(const nnc_graph *g, int from, nnc_op op) {
  int n = 0;
  for (int i = from; i < g->nnodes; i++)
    n += g->nodes[i]->op == op;
  return n;
}

/* MLP on the input batch with w1 frozen: only dW2 is computed (one matmul);
 * with w1 trainable, dW2, dh and dW1 (three), never dx (a fourth). */
static void test_no_work_for_input_or_frozen(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_shape xs = sh(2, 4, 3);
  nnc_node *x = nnc_ir_input(g, NNC_IN_X, NNC_F64, &xs);
  nnc_node *w1 = fx_tensor(fx, "w1", NNC_ROLE_FROZEN, NNC_F64, sh(2, 3, 5), -1, 1);
  nnc_node *b1 = fx_leaf(fx, "b1", sh(2, 1, 5), -1, 1);
  nnc_node *w2 = fx_leaf(fx, "w2", sh(2, 2, 5), -1, 1);
  nnc_node *out = mlp(fx, x, w1, b1, w2);
  nnc_shape scalar = sh(0);
  nnc_node *y = nnc_ir_reshape(g, nnc_ir_reduce(g, NNC_OP_SUM, out, 0x3), &scalar);
  int before = g->nnodes;
  nnc_node *grads[2];
  nnc_node *wrt[2] = {w2, b1};
  nnc_ad_grad(g, y, wrt, 2, grads);
  assert_verified(g);
  assert_non_null(grads[0]);
  assert_non_null(grads[1]);
  assert_int_equal(count_op(g, before, NNC_OP_MATMUL), 2); /* dW2 and dh (for b1) */
  before = g->nnodes;
  nnc_node *wrt2[1] = {w2};
  nnc_ad_grad(g, y, wrt2, 1, grads);
  assert_int_equal(count_op(g, before, NNC_OP_MATMUL), 1); /* dW2 only */
  before = g->nnodes;
  nnc_node *wrt3[2] = {w1, w2};
  nnc_ad_grad(g, y, wrt3, 2, grads);
  assert_int_equal(count_op(g, before, NNC_OP_MATMUL), 3); /* dW2, dh, dW1; no dx */
  for (int i = before; i < g->nnodes; i++)                 /* nothing of x's shape is built */
    assert_false(nnc_shape_eq(&g->nodes[i]->shape, &xs) && g->nodes[i]->op == NNC_OP_MATMUL);
  assert_verified(g);
}

static void test_independent_wrt_is_null(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_leaf(fx, "a", sh(1, 3), -1, 1), *b = fx_leaf(fx, "b", sh(1, 3), -1, 1);
  nnc_node *c = fx_leaf(fx, "c", sh(1, 3), -1, 1);
  nnc_shape scalar = sh(0);
  nnc_node *y = nnc_ir_reshape(
      fx->g, nnc_ir_reduce(fx->g, NNC_OP_SUM, nnc_ir_unary(fx->g, NNC_OP_EXP, a), 1), &scalar);
  nnc_node *late = nnc_ir_unary(fx->g, NNC_OP_EXP, c); /* after y */
  nnc_node *wrt[4] = {a, b, late, nnc_ir_argmax(fx->g, a, 0)};
  nnc_node *grads[4];
  int before = fx->g->nnodes;
  nnc_ad_grad(fx->g, y, wrt, 4, grads);
  assert_non_null(grads[0]);
  assert_null(grads[1]);
  assert_null(grads[2]);
  assert_null(grads[3]);
  assert_true(fx->g->nnodes - before <= 4); /* seed, broadcast, exp product: nothing for b */
  assert_verified(fx->g);
}

/* Runs last: every op with a gradient rule had a finite-difference check. */
static void test_every_rule_is_checked(void **state) {
  (void)state;
  int missing = 0;
  for (int op = 0; op < NNC_OP_COUNT_; op++)
    if (nnc_op_gradient_of((nnc_op)op) == NNC_GRAD_RULE && !checked[op]) {
      print_error("op '%s' has a gradient rule (ops.def GRADIENT RULE) but no float64 "
                  "finite-difference check in tests/ir/test_autodiff.c\n",
                  nnc_op_name((nnc_op)op));
      missing++;
    }
  if (missing) fail_msg("%d op(s) without a gradient check", missing);
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_neg),
      T(test_exp),
      T(test_log),
      T(test_sqrt),
      T(test_rsqrt),
      T(test_recip),
      T(test_allreduce),
      T(test_tanh),
      T(test_sigmoid),
      T(test_relu),
      T(test_abs),
      T(test_erf),
      T(test_cos),
      T(test_cast),
      T(test_add),
      T(test_sub),
      T(test_mul),
      T(test_div),
      T(test_max),
      T(test_min),
      T(test_pow),
      T(test_pow_const_exponent),
      T(test_select),
      T(test_piecewise_constant_ops),
      T(test_sum),
      T(test_rmax),
      T(test_rmax_ties_first_maximum),
      T(test_reshape_transpose_broadcast),
      T(test_matmul_nn),
      T(test_matmul_nt),
      T(test_matmul_tn),
      T(test_matmul_tt),
      T(test_im2col),
      T(test_col2im),
      T(test_gather),
      T(test_scatter_add),
      T(test_log_softmax_cross_entropy),
      T(test_mlp),
      T(test_batchnorm),
      T(test_conv_pool),
      T(test_no_work_for_input_or_frozen),
      T(test_independent_wrt_is_null),
      cmocka_unit_test(test_every_rule_is_checked), /* last */
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
