/* test_simplify.c: nnc_simplify (ir/simplify.c) does what it says —
 * constant folding, identity removal, CSE, dead-code removal with
 * renumbering — keeps outputs, updates and inputs valid, and leaves what the
 * interpreter computes unchanged, down to a whole Adam training step. */
#include "ir_test.h"

static int count_op(const nnc_graph *g, nnc_op op) {
  int n = 0;
  for (int i = 0; i < g->nnodes; i++)
    n += g->nodes[i]->op == op;
  return n;
}

/* Runs g with fx_fill values; copies the value of `out` into v. */
static void eval_into(fixture *fx, const nnc_node *out, double *v) {
  assert_verified(fx->g);
  nnc_interp *in = nnc_interp_new(fx->g);
  fx_fill(fx, in);
  nnc_interp_run(in);
  fx_set(v, nnc_interp_value(in, out), (int)nnc_shape_numel(&out->shape));
  nnc_interp_free(in);
}

/* A node n with the given op and operand whose shape is the operand's own:
 * builders return the operand itself for such no-ops, passes may not. */
static nnc_node *noop(nnc_graph *g, nnc_op op, nnc_node *a) {
  nnc_node p;
  memset(&p, 0, sizeof p);
  p.op = op;
  p.nin = 1;
  p.in = &a;
  p.dtype = a->dtype;
  p.shape = a->shape;
  return nnc_ir_append(g, &p);
}

static void test_constant_folding(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 2, 3), -1, 1);
  nnc_node *five =
      nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_const(g, NNC_F64, 2), nnc_ir_const(g, NNC_F64, 3));
  nnc_node *one = nnc_ir_unary(g, NNC_OP_EXP, nnc_ir_const(g, NNC_F64, 0));
  nnc_shape s = sh(2, 2, 3);
  nnc_node *fill =
      nnc_ir_broadcast(g, nnc_ir_binary(g, NNC_OP_MUL, five, one), &s); /* [2,3] of 5 */
  nnc_node *six = nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_fill(g, NNC_F64, &s, 1.0), 0x3);
  nnc_node *y = nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_binary(g, NNC_OP_ADD, x, fill), six);
  nnc_graph_set_output(g, NNC_OUT_PRED, y);
  double before[6], after[6];
  eval_into(fx, y, before);
  nnc_simplify(g);
  eval_into(fx, g->outputs[NNC_OUT_PRED], after);
  for (int i = 0; i < 6; i++)
    assert_true(before[i] == after[i]);
  /* x, two constants (the [2,3] fill of 5 and the [1,1] 6), add, mul */
  assert_int_equal(g->nnodes, 5);
  assert_int_equal(count_op(g, NNC_OP_CONST), 2);
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == NNC_OP_CONST)
      assert_true(g->nodes[i]->fattr == 5 || g->nodes[i]->fattr == 6);
}

static void test_identities(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 2, 3), -1, 1);
  nnc_node *r = nnc_ir_binary(g, NNC_OP_MUL, x, nnc_ir_const(g, NNC_F64, 1));
  r = nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_const(g, NNC_F64, 0), r);
  r = nnc_ir_binary(g, NNC_OP_SUB, r, nnc_ir_const(g, NNC_F64, 0));
  r = nnc_ir_binary(g, NNC_OP_DIV, r, nnc_ir_const(g, NNC_F64, 1));
  r = nnc_ir_binary(g, NNC_OP_POW, r, nnc_ir_const(g, NNC_F64, 1));
  r = nnc_ir_unary(g, NNC_OP_NEG, nnc_ir_unary(g, NNC_OP_NEG, r));
  r = noop(g, NNC_OP_RESHAPE, noop(g, NNC_OP_BROADCAST, noop(g, NNC_OP_CAST, r)));
  const int id[2] = {0, 1};
  r = nnc_ir_transpose(g, r, id);
  nnc_shape flat = sh(1, 6), back = sh(2, 2, 3);
  r = nnc_ir_reshape(g, nnc_ir_reshape(g, r, &flat), &back);
  r = nnc_ir_select(g, nnc_ir_const(g, NNC_F64, 1), r, nnc_ir_const(g, NNC_F64, 7));
  nnc_graph_set_output(g, NNC_OUT_PRED, r);
  /* x * ones[2,1]... that broadcasts x: kept */
  nnc_node *row = fx_leaf(fx, "row", sh(2, 1, 3), -1, 1);
  nnc_shape wide = sh(2, 4, 3);
  nnc_node *kept = nnc_ir_binary(g, NNC_OP_MUL, row, nnc_ir_fill(g, NNC_F64, &wide, 1.0));
  nnc_graph_set_output(g, NNC_OUT_LOSS_VEC, kept);
  nnc_simplify(g);
  assert_verified(g);
  assert_ptr_equal(g->outputs[NNC_OUT_PRED], x);
  assert_int_equal(g->outputs[NNC_OUT_LOSS_VEC]->op, NNC_OP_MUL);
  assert_int_equal(g->nnodes, 4); /* x, row, the fill, the broadcasting mul */
}

static void test_cse(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 2, 3), -1, 1);
  nnc_node *e1 = nnc_ir_unary(g, NNC_OP_EXP, x), *e2 = nnc_ir_unary(g, NNC_OP_EXP, x);
  nnc_node *s1 = nnc_ir_reduce(g, NNC_OP_SUM, e1, 0x1), *s2 = nnc_ir_reduce(g, NNC_OP_SUM, e2, 0x1);
  nnc_node *s3 = nnc_ir_reduce(g, NNC_OP_SUM, e2, 0x2); /* other axes: not merged */
  nnc_node *k1 = nnc_ir_const(g, NNC_F64, 0.5), *k2 = nnc_ir_const(g, NNC_F64, 0.5);
  nnc_node *k3 = nnc_ir_const(g, NNC_F64, 0.25);
  nnc_node *a = nnc_ir_binary(g, NNC_OP_MUL, s1, k1), *b = nnc_ir_binary(g, NNC_OP_MUL, s2, k2);
  nnc_node *c = nnc_ir_binary(g, NNC_OP_MUL, s2, k3);
  nnc_node *y = nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_binary(g, NNC_OP_ADD, a, b), c);
  nnc_node *z = nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_reduce(g, NNC_OP_SUM, s3, 0x1),
                              nnc_ir_reduce(g, NNC_OP_SUM, y, 0x2));
  nnc_graph_set_output(g, NNC_OUT_LOSS, z);
  double before[1], after[1];
  eval_into(fx, z, before);
  nnc_simplify(g);
  eval_into(fx, g->outputs[NNC_OUT_LOSS], after);
  assert_true(before[0] == after[0]);
  assert_int_equal(count_op(g, NNC_OP_EXP), 1);
  assert_int_equal(count_op(g, NNC_OP_SUM), 4);   /* axes 0x1 once, 0x2, and the two outer sums */
  assert_int_equal(count_op(g, NNC_OP_CONST), 2); /* 0.5 once, 0.25 */
  assert_int_equal(count_op(g, NNC_OP_MUL), 2);   /* a and b merged */
}

static void test_dead_code_and_renumbering(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_shape xs = sh(2, 2, 3), s0 = sh(0);
  nnc_node *x = nnc_ir_input(g, NNC_IN_X, NNC_F64, &xs);
  nnc_node *seed = nnc_ir_input(g, NNC_IN_SEED, NNC_I32, &s0); /* unused: kept */
  nnc_node *unused = fx_leaf(fx, "unused", sh(1, 3), -1, 1);
  nnc_node *w = fx_leaf(fx, "w", sh(2, 2, 3), -1, 1);
  nnc_ir_unary(g, NNC_OP_EXP, nnc_ir_unary(g, NNC_OP_TANH, x)); /* dead */
  nnc_ir_binary(g, NNC_OP_ADD, unused, unused);                 /* dead */
  nnc_node *y = nnc_ir_binary(g, NNC_OP_MUL, x, w);
  nnc_graph_set_output(g, NNC_OUT_PRED, y);
  nnc_graph_add_update(g, 1, nnc_ir_binary(g, NNC_OP_ADD, w, nnc_ir_const(g, NNC_F64, 1)));
  nnc_simplify(g);
  assert_verified(g);
  assert_int_equal(g->nnodes, 6); /* x, seed, w, y, 1, w + 1 */
  assert_ptr_equal(g->inputs[NNC_IN_X], x);
  assert_ptr_equal(g->inputs[NNC_IN_SEED], seed);
  assert_ptr_equal(g->outputs[NNC_OUT_PRED], y);
  assert_int_equal(g->updates[0].value->op, NNC_OP_ADD);
  assert_int_equal(count_op(g, NNC_OP_PARAM), 1);
  for (int i = 0; i < g->nnodes; i++)
    assert_int_equal(g->nodes[i]->id, i);
}

/* Batch norm's backward sums over N, H, W (axes 0x5 of [N,C,H]): the
 * per-channel factors leave the sums, sum(x - c) becomes sum(x) - count*c,
 * and sums of the same factors merge: the five sums become two, and the
 * values stay what they were (up to reassociation). */
static void test_sums_of_products(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_leaf(fx, "x", sh(3, 2, 3, 4), -1, 1);
  nnc_node *dy = fx_leaf(fx, "dy", sh(3, 2, 3, 4), -1, 1);
  nnc_node *c = fx_leaf(fx, "c", sh(3, 1, 3, 1), 0.5, 2);
  nnc_node *gamma = fx_leaf(fx, "gamma", sh(3, 1, 3, 1), 0.5, 2);
  nnc_shape full = sh(3, 2, 3, 4);
  const uint32_t A = 0x5;
  nnc_node *d = nnc_ir_binary(g, NNC_OP_SUB, x, c);    /* x - mean */
  nnc_node *xhat = nnc_ir_binary(g, NNC_OP_MUL, d, c); /* (x-m)*rstd */
  nnc_node *dg = nnc_ir_binary(g, NNC_OP_MUL, dy, nnc_ir_broadcast(g, gamma, &full)); /* dy*g */
  nnc_node *s[5];
  s[0] = nnc_ir_reduce(g, NNC_OP_SUM, dy, A);
  s[1] = nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, dy, xhat), A);
  s[2] = nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, dg, d), A);
  s[3] = nnc_ir_reduce(g, NNC_OP_SUM,
                       nnc_ir_unary(g, NNC_OP_NEG, nnc_ir_binary(g, NNC_OP_MUL, dg, c)), A);
  nnc_node *twice = nnc_ir_binary(g, NNC_OP_MUL, d, nnc_ir_const(g, NNC_F64, 0.25));
  s[4] = nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_ADD, twice, twice), A);
  nnc_node *y = s[0];
  for (int i = 1; i < 5; i++)
    y = nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_binary(g, NNC_OP_MUL, y, nnc_ir_const(g, NNC_F64, 3)),
                      s[i]);
  nnc_graph_set_output(g, NNC_OUT_PRED, y);
  double before[3], after[3];
  eval_into(fx, y, before);
  assert_int_equal(count_op(g, NNC_OP_SUM), 5);
  nnc_simplify(g);
  eval_into(fx, g->outputs[NNC_OUT_PRED], after);
  for (int i = 0; i < 3; i++)
    assert_near(before[i], after[i], 1e-12 * (1 + fabs(before[i])));
  /* sum(dy), sum(dy * (x - c)), and sum(x) for sum(x - c) */
  assert_int_equal(count_op(g, NNC_OP_SUM), 3);
  for (int i = 0; i < g->nnodes; i++) {
    const nnc_node *n = g->nodes[i];
    if (n->op != NNC_OP_SUM) continue;
    const nnc_node *o = n->in[0];
    assert_true(o == dy || o == x ||
                (o->op == NNC_OP_MUL && ((o->in[0] == dy) != (o->in[1] == dy))));
  }
}

/* A sum whose operand has no factor constant along the summed axes is
 * left alone: a product of two full tensors, a sum of two. */
static void test_sums_left_alone(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 2, 3), -1, 1);
  nnc_node *w = fx_leaf(fx, "w", sh(2, 2, 3), -1, 1);
  nnc_node *r = fx_leaf(fx, "r", sh(2, 2, 1), -1, 1); /* constant along axis 1, not axis 0 */
  nnc_node *s1 = nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, w, x), 0x3);
  nnc_node *s2 = nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_ADD, x, w), 0x1);
  nnc_node *s3 = nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, x, r), 0x1);
  nnc_node *y = nnc_ir_binary(
      g, NNC_OP_ADD, nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_reduce(g, NNC_OP_SUM, s2, 0x2), s1),
      nnc_ir_reduce(g, NNC_OP_SUM, s3, 0x2));
  nnc_graph_set_output(g, NNC_OUT_LOSS, y);
  nnc_simplify(g);
  assert_verified(g);
  assert_int_equal(count_op(g, NNC_OP_SUM), 5);
  assert_ptr_equal(s1->in[0]->in[0], w); /* operand order kept */
}

/* A bias gradient: the rows of [N*W, C] (a transposed, reshaped [N,C,W])
 * summed. Through the reshape and transpose, over a sum and into sums the
 * graph has (sum(x)), it needs no pass of its own; without sum(x) in the
 * graph it stays as it is. */
static void check_bias_sum(fixture *fx, bool have_sum) {
  nnc_graph *g = fx->g;
  nnc_node *x = fx_leaf(fx, "x", sh(3, 2, 3, 4), -1, 1);
  nnc_node *c = fx_leaf(fx, "c", sh(3, 1, 3, 1), 0.5, 2);
  nnc_node *k = fx_leaf(fx, "k", sh(3, 1, 3, 1), -1, 1);
  nnc_shape full = sh(3, 2, 3, 4), rows = sh(2, 8, 3);
  nnc_node *xc = nnc_ir_binary(g, NNC_OP_MUL, x, c);
  nnc_node *dx = nnc_ir_binary(g, NNC_OP_SUB, nnc_ir_binary(g, NNC_OP_ADD, xc, xc),
                               nnc_ir_broadcast(g, k, &full));
  static const int nwc[3] = {0, 2, 1};
  nnc_node *b =
      nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_reshape(g, nnc_ir_transpose(g, dx, nwc), &rows), 0x1);
  nnc_graph_set_output(g, NNC_OUT_PRED, b);
  if (have_sum) nnc_graph_set_output(g, NNC_OUT_LOSS_VEC, nnc_ir_reduce(g, NNC_OP_SUM, x, 0x5));
  double before[3], after[3];
  eval_into(fx, b, before);
  nnc_simplify(g);
  eval_into(fx, g->outputs[NNC_OUT_PRED], after);
  for (int i = 0; i < 3; i++)
    assert_near(before[i], after[i], 1e-12 * (1 + fabs(before[i])));
  assert_int_equal(count_op(g, NNC_OP_SUM), 1);
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == NNC_OP_SUM)
      assert_ptr_equal(g->nodes[i]->in[0]->op, have_sum ? NNC_OP_PARAM : NNC_OP_RESHAPE);
}

static void test_bias_sum_from_other_sums(void **state) {
  check_bias_sum(*state, true);
}

static void test_bias_sum_kept(void **state) {
  check_bias_sum(*state, false);
}

/* An MLP regression step with Adam, l2, clipping and a warmup schedule:
 * two steps on a simplified and an unsimplified copy agree. */
static void build_training(fixture *fx) {
  nnc_graph *g = fx->g;
  nnc_shape xs = sh(2, 4, 3), ys = sh(2, 4, 2), s0 = sh(0);
  nnc_node *x = nnc_ir_input(g, NNC_IN_X, NNC_F64, &xs),
           *t = nnc_ir_input(g, NNC_IN_Y, NNC_F64, &ys);
  nnc_node *w1 = fx_leaf(fx, "w1", sh(2, 3, 5), -1, 1),
           *b1 = fx_leaf(fx, "b1", sh(2, 1, 5), -0.1, 0.1);
  nnc_node *w2 = fx_leaf(fx, "w2", sh(2, 5, 2), -1, 1);
  nnc_node *h = nnc_ir_unary(
      g, NNC_OP_RELU, nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_matmul(g, x, w1, false, false), b1));
  nnc_node *d = nnc_ir_binary(g, NNC_OP_SUB, nnc_ir_matmul(g, h, w2, false, false), t);
  nnc_node *loss = nnc_ir_binary(
      g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, d, d), 0x3),
      nnc_ir_const(g, NNC_F64, 1.0 / 8));
  nnc_graph_set_output(g, NNC_OUT_LOSS, nnc_ir_reshape(g, loss, &s0));
  nnc_train_config *cfg = &fx->m->config;
  nnc_optim_defaults(&cfg->optim, NNC_OPT_ADAM);
  cfg->regular.l2 = 0.01;
  cfg->regular.clip_norm = 5;
  cfg->schedule.kind = NNC_SCHED_EXPONENTIAL;
  cfg->schedule.gamma = 0.9;
  cfg->schedule.warmup = 1;
  cfg->schedule.unit = NNC_PER_STEP;
  char err[128];
  assert_true(nnc_build_training(fx->m, err, sizeof err));
  assert_verified(g);
}

static void train_two_steps(fixture *fx, double *params) {
  nnc_interp *in = nnc_interp_new(fx->g);
  fx_fill(fx, in);
  uint64_t st = 7;
  for (int i = 0; i < 12; i++)
    nnc_interp_input(in, NNC_IN_X)[i] = fx_rand(&st) * 2 - 1;
  for (int i = 0; i < 8; i++)
    nnc_interp_input(in, NNC_IN_Y)[i] = fx_rand(&st);
  for (int s = 1; s <= 2; s++) {
    nnc_interp_input(in, NNC_IN_STEP)[0] = s;
    nnc_interp_run(in);
  }
  int k = 0;
  for (int t = 0; t < fx->m->ntensors; t++)
    for (int64_t i = 0; i < nnc_shape_numel(&fx->m->tensors[t].shape); i++)
      params[k++] = nnc_interp_tensor(in, t)[i];
  nnc_interp_free(in);
}

static void test_training_step_unchanged(void **state) {
  fixture *fx = *state, *plain;
  fx_setup((void **)&plain);
  build_training(fx);
  build_training(plain);
  int before = fx->g->nnodes;
  nnc_simplify(fx->g);
  assert_verified(fx->g);
  assert_true(fx->g->nnodes < before);
  double a[256], b[256];
  assert_int_equal(fx->m->ntensors, plain->m->ntensors);
  train_two_steps(fx, a);
  train_two_steps(plain, b);
  int n = 0;
  for (int t = 0; t < fx->m->ntensors; t++)
    n += (int)nnc_shape_numel(&fx->m->tensors[t].shape);
  assert_true(n <= 256);
  for (int i = 0; i < n; i++)
    assert_near(a[i], b[i], 1e-14);
  fx_teardown((void **)&plain);
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_constant_folding),          T(test_identities),       T(test_cse),
      T(test_dead_code_and_renumbering), T(test_sums_of_products), T(test_sums_left_alone),
      T(test_bias_sum_from_other_sums),  T(test_bias_sum_kept),    T(test_training_step_unchanged),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
