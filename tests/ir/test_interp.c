/* test_interp.c: the reference interpreter (ir/interp.c), op by op, against
 * hand-computed values or plain loops written here: elementwise ops with
 * broadcasting, reductions, data movement, matrix products in all four
 * transpose combinations, im2col with stride and padding (and col2im as its
 * adjoint), gather/scatter_add, onehot, rand against the runtime's hash,
 * and updates applied as a simultaneous assignment. */
#include "ir_test.h"

#include "runtime/nnc_hash.h"
#include "runtime/nnc_rt.h"

/* Runs g (verified first) with tensors filled by fx_fill; caller frees. */
static nnc_interp *run(fixture *fx) {
  assert_verified(fx->g);
  nnc_interp *in = nnc_interp_new(fx->g);
  assert_non_null(in);
  fx_fill(fx, in);
  nnc_interp_run(in);
  return in;
}

static void test_unary(void **state) {
  fixture *fx = *state;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 2, 3), -2, 2);
  nnc_node *xp = fx_leaf(fx, "xp", sh(1, 6), 0.1, 3);
  const nnc_op ops[] = {NNC_OP_NEG, NNC_OP_EXP,  NNC_OP_TANH,  NNC_OP_SIGMOID, NNC_OP_RELU,
                        NNC_OP_ABS, NNC_OP_SIGN, NNC_OP_ERF,   NNC_OP_COS,     NNC_OP_FLOOR,
                        NNC_OP_LOG, NNC_OP_SQRT, NNC_OP_RSQRT, NNC_OP_RECIP};
  nnc_node *y[14];
  for (int i = 0; i < 14; i++)
    y[i] = nnc_ir_unary(fx->g, ops[i], i < 10 ? x : xp);
  nnc_interp *in = run(fx);
  const double *xv = nnc_interp_value(in, x), *pv = nnc_interp_value(in, xp);
  for (int j = 0; j < 6; j++) {
    double a = xv[j], p = pv[j];
    const double want[14] = {-a,
                             exp(a),
                             tanh(a),
                             1 / (1 + exp(-a)),
                             a > 0 ? a : 0,
                             fabs(a),
                             a > 0   ? 1
                             : a < 0 ? -1
                                     : 0,
                             erf(a),
                             cos(a),
                             floor(a),
                             log(p),
                             sqrt(p),
                             1 / sqrt(p),
                             1 / p};
    for (int i = 0; i < 14; i++)
      assert_near(nnc_interp_value(in, y[i])[j], want[i], 1e-15);
  }
  nnc_interp_free(in);
}

static void test_binary_broadcast(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_leaf(fx, "a", sh(2, 2, 3), 0.5, 2);
  nnc_node *row = fx_leaf(fx, "row", sh(2, 1, 3), 0.5, 2);
  nnc_node *col = fx_leaf(fx, "col", sh(2, 2, 1), 0.5, 2);
  nnc_node *s = nnc_ir_const(fx->g, NNC_F64, 1.25);
  const nnc_op ops[] = {NNC_OP_ADD, NNC_OP_SUB, NNC_OP_MUL, NNC_OP_DIV, NNC_OP_MAX,
                        NNC_OP_MIN, NNC_OP_POW, NNC_OP_GT,  NNC_OP_GE,  NNC_OP_EQ};
  nnc_node *r[10], *c[10], *k[10];
  for (int i = 0; i < 10; i++) {
    r[i] = nnc_ir_binary(fx->g, ops[i], a, row);   /* [2,3] op [1,3] */
    c[i] = nnc_ir_binary(fx->g, ops[i], row, col); /* [1,3] op [2,1] -> [2,3] */
    k[i] = nnc_ir_binary(fx->g, ops[i], s, a);     /* scalar op [2,3] */
  }
  nnc_node *self_eq = nnc_ir_binary(fx->g, NNC_OP_EQ, a, a);
  nnc_interp *in = run(fx);
  const double *av = nnc_interp_value(in, a), *rv = nnc_interp_value(in, row),
               *cv = nnc_interp_value(in, col);
  for (int i = 0; i < 10; i++)
    for (int p = 0; p < 2; p++)
      for (int q = 0; q < 3; q++) {
        double pairs[3][2] = {{av[p * 3 + q], rv[q]}, {rv[q], cv[p]}, {1.25, av[p * 3 + q]}};
        nnc_node *nodes[3] = {r[i], c[i], k[i]};
        for (int t = 0; t < 3; t++) {
          double x = pairs[t][0], y = pairs[t][1], want = 0;
          switch (i) {
          case 0: want = x + y; break;
          case 1: want = x - y; break;
          case 2: want = x * y; break;
          case 3: want = x / y; break;
          case 4: want = x > y ? x : y; break;
          case 5: want = x < y ? x : y; break;
          case 6: want = pow(x, y); break;
          case 7: want = x > y; break;
          case 8: want = x >= y; break;
          case 9: want = x == y; break;
          }
          assert_near(nnc_interp_value(in, nodes[t])[p * 3 + q], want, 1e-15);
        }
      }
  for (int j = 0; j < 6; j++)
    assert_true(nnc_interp_value(in, self_eq)[j] == 1.0);
  nnc_interp_free(in);
}

static void test_select_cast(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_leaf(fx, "a", sh(2, 2, 3), -3, 3);
  nnc_node *b = fx_leaf(fx, "b", sh(2, 1, 3), -3, 3);
  nnc_node *c = nnc_ir_binary(fx->g, NNC_OP_GT, a, nnc_ir_const(fx->g, NNC_F64, 0));
  nnc_node *sel = nnc_ir_select(fx->g, c, a, b);
  nnc_node *i32 = nnc_ir_cast(fx->g, a, NNC_I32);
  nnc_node *back = nnc_ir_cast(fx->g, i32, NNC_F64);
  nnc_interp *in = run(fx);
  const double *av = nnc_interp_value(in, a), *bv = nnc_interp_value(in, b);
  for (int j = 0; j < 6; j++) {
    assert_true(nnc_interp_value(in, sel)[j] == (av[j] > 0 ? av[j] : bv[j % 3]));
    assert_true(nnc_interp_value(in, back)[j] == trunc(av[j])); /* toward zero, like C */
  }
  nnc_interp_free(in);
}

static void test_reductions(void **state) {
  fixture *fx = *state;
  nnc_node *x = fx_leaf(fx, "x", sh(3, 2, 3, 4), -1, 1);
  nnc_node *s[4], *m[4];
  const uint32_t masks[4] = {0x1, 0x2, 0x5, 0x7};
  for (int i = 0; i < 4; i++) {
    s[i] = nnc_ir_reduce(fx->g, NNC_OP_SUM, x, masks[i]);
    m[i] = nnc_ir_reduce(fx->g, NNC_OP_RMAX, x, masks[i]);
  }
  nnc_interp *in = run(fx);
  const double *xv = nnc_interp_value(in, x);
  for (int i = 0; i < 4; i++) {
    double want_s[24] = {0}, want_m[24];
    for (int j = 0; j < 24; j++)
      want_m[j] = -INFINITY;
    for (int p = 0; p < 2; p++)
      for (int q = 0; q < 3; q++)
        for (int r = 0; r < 4; r++) {
          int op = (masks[i] & 1) ? 0 : p, oq = (masks[i] & 2) ? 0 : q,
              orr = (masks[i] & 4) ? 0 : r;
          const nnc_shape *os = &s[i]->shape;
          int o = (op * (int)os->dim[1] + oq) * (int)os->dim[2] + orr;
          double v = xv[(p * 3 + q) * 4 + r];
          want_s[o] += v;
          want_m[o] = fmax(want_m[o], v);
        }
    for (int j = 0; j < nnc_shape_numel(&s[i]->shape); j++) {
      assert_near(nnc_interp_value(in, s[i])[j], want_s[j], 1e-14);
      assert_true(nnc_interp_value(in, m[i])[j] == want_m[j]);
    }
  }
  nnc_interp_free(in);
}

static void test_argmax_first_on_ties(void **state) {
  fixture *fx = *state;
  nnc_node *x = fx_leaf(fx, "x", sh(2, 3, 4), 0, 1);
  nnc_node *a1 = nnc_ir_argmax(fx->g, x, 1), *a0 = nnc_ir_argmax(fx->g, x, 0);
  assert_verified(fx->g);
  nnc_interp *in = nnc_interp_new(fx->g);
  const double v[12] = {1, 5, 5, 2, /**/ 7, 7, 7, 7, /**/ 0, 1, 2, 9};
  fx_set(nnc_interp_tensor(in, 0), v, 12);
  nnc_interp_run(in);
  const double w1[3] = {1, 0, 3}, w0[4] = {1, 1, 1, 2};
  for (int i = 0; i < 3; i++)
    assert_true(nnc_interp_value(in, a1)[i] == w1[i]);
  for (int i = 0; i < 4; i++)
    assert_true(nnc_interp_value(in, a0)[i] == w0[i]);
  nnc_interp_free(in);
}

static void test_data_movement(void **state) {
  fixture *fx = *state;
  nnc_node *x = fx_leaf(fx, "x", sh(3, 2, 3, 4), -1, 1);
  nnc_shape rs = sh(2, 6, 4);
  nnc_node *r = nnc_ir_reshape(fx->g, x, &rs);
  const int perm[3] = {2, 0, 1};
  nnc_node *t = nnc_ir_transpose(fx->g, x, perm); /* [4,2,3] */
  nnc_node *row = fx_leaf(fx, "row", sh(3, 1, 3, 1), -1, 1);
  nnc_shape bs = sh(3, 2, 3, 4);
  nnc_node *b = nnc_ir_broadcast(fx->g, row, &bs);
  nnc_node *s = nnc_ir_broadcast(fx->g, nnc_ir_const(fx->g, NNC_F64, 2.5), &bs);
  nnc_interp *in = run(fx);
  const double *xv = nnc_interp_value(in, x), *rv = nnc_interp_value(in, row);
  for (int j = 0; j < 24; j++)
    assert_true(nnc_interp_value(in, r)[j] == xv[j]);
  for (int p = 0; p < 2; p++)
    for (int q = 0; q < 3; q++)
      for (int u = 0; u < 4; u++) {
        assert_true(nnc_interp_value(in, t)[(u * 2 + p) * 3 + q] == xv[(p * 3 + q) * 4 + u]);
        assert_true(nnc_interp_value(in, b)[(p * 3 + q) * 4 + u] == rv[q]);
        assert_true(nnc_interp_value(in, s)[(p * 3 + q) * 4 + u] == 2.5);
      }
  nnc_interp_free(in);
}

static void test_matmul_transposes(void **state) {
  fixture *fx = *state;
  enum { M = 3, K = 4, N = 5 };
  nnc_node *a = fx_leaf(fx, "a", sh(2, M, K), -1, 1), *at = fx_leaf(fx, "at", sh(2, K, M), -1, 1);
  nnc_node *b = fx_leaf(fx, "b", sh(2, K, N), -1, 1), *bt = fx_leaf(fx, "bt", sh(2, N, K), -1, 1);
  nnc_node *c[4] = {
      nnc_ir_matmul(fx->g, a, b, false, false), nnc_ir_matmul(fx->g, a, bt, false, true),
      nnc_ir_matmul(fx->g, at, b, true, false), nnc_ir_matmul(fx->g, at, bt, true, true)};
  nnc_interp *in = run(fx);
  const double *av = nnc_interp_value(in, a), *atv = nnc_interp_value(in, at),
               *bv = nnc_interp_value(in, b), *btv = nnc_interp_value(in, bt);
  for (int v = 0; v < 4; v++) {
    assert_int_equal(c[v]->shape.dim[0], M);
    assert_int_equal(c[v]->shape.dim[1], N);
    for (int i = 0; i < M; i++)
      for (int j = 0; j < N; j++) {
        double want = 0;
        for (int p = 0; p < K; p++)
          want += ((v & 2) ? atv[p * M + i] : av[i * K + p]) *
                  ((v & 1) ? btv[j * K + p] : bv[p * N + j]);
        assert_near(nnc_interp_value(in, c[v])[i * N + j], want, 1e-14);
      }
  }
  nnc_interp_free(in);
}

/* A direct convolution (stride 2, padding 1, padding value 0) against
 * im2col + matmul; then an im2col of a 1x1x3x3 image checked by hand. */
static void test_im2col_conv(void **state) {
  fixture *fx = *state;
  enum { NB = 2, C = 2, H = 5, W = 4, F = 3, KH = 3, KW = 2 };
  const int64_t k[2] = {KH, KW}, st[2] = {2, 2}, pad[2] = {1, 1};
  nnc_node *x = fx_leaf(fx, "x", sh(4, NB, C, H, W), -1, 1);
  nnc_node *w = fx_leaf(fx, "w", sh(2, F, C * KH * KW), -1, 1);
  nnc_node *cols = nnc_ir_im2col(fx->g, x, k, st, pad, 0.0);
  nnc_node *y = nnc_ir_matmul(fx->g, cols, w, false, true); /* [N*OH*OW, F] */
  nnc_node *img = fx_leaf(fx, "img", sh(4, 1, 1, 3, 3), 0, 1);
  const int64_t k2[2] = {2, 2}, s1[2] = {1, 1};
  nnc_node *small = nnc_ir_im2col(fx->g, img, k2, s1, pad, -7.0); /* 4x4 windows of 2x2 */
  nnc_interp *in = run(fx);
  int64_t oh = nnc_ir_window_out(H, KH, 2, 1), ow = nnc_ir_window_out(W, KW, 2, 1);
  assert_int_equal(oh, 3);
  assert_int_equal(ow, 3);
  const double *xv = nnc_interp_value(in, x), *wv = nnc_interp_value(in, w);
  for (int n = 0; n < NB; n++)
    for (int i = 0; i < oh; i++)
      for (int j = 0; j < ow; j++)
        for (int f = 0; f < F; f++) {
          double want = 0;
          for (int c = 0; c < C; c++)
            for (int p = 0; p < KH; p++)
              for (int q = 0; q < KW; q++) {
                int h = i * 2 - 1 + p, ww = j * 2 - 1 + q;
                if (h >= 0 && h < H && ww >= 0 && ww < W)
                  want += xv[((n * C + c) * H + h) * W + ww] *
                          wv[f * C * KH * KW + (c * KH + p) * KW + q];
              }
          assert_near(nnc_interp_value(in, y)[((n * oh + i) * ow + j) * F + f], want, 1e-14);
        }
  double im[9];
  fx_set(im, nnc_interp_value(in, img), 9);
  const double *sv = nnc_interp_value(in, small);
  assert_int_equal(small->shape.dim[0], 16);
  /* row 0 = window at (-1,-1): three padding cells, then im[0] */
  assert_true(sv[0] == -7 && sv[1] == -7 && sv[2] == -7 && sv[3] == im[0]);
  /* row 5 = window at (0,0): im[0], im[1], im[3], im[4] */
  assert_true(sv[20] == im[0] && sv[21] == im[1] && sv[22] == im[3] && sv[23] == im[4]);
  nnc_interp_free(in);
}

/* <col2im(a), b> == <a, im2col(b)> for random a, b. */
static void test_col2im_adjoint(void **state) {
  fixture *fx = *state;
  const int64_t k[2] = {3, 2}, st[2] = {2, 1}, pad[2] = {1, 2};
  nnc_shape xs = sh(4, 2, 3, 5, 4);
  nnc_node *b = fx_leaf(fx, "b", xs, -1, 1);
  nnc_node *cb = nnc_ir_im2col(fx->g, b, k, st, pad, 0.0);
  nnc_node *a = fx_leaf(fx, "a", cb->shape, -1, 1);
  nnc_node *ca = nnc_ir_col2im(fx->g, a, &xs, k, st, pad);
  nnc_interp *in = run(fx);
  double lhs = 0, rhs = 0;
  for (int64_t i = 0; i < nnc_shape_numel(&xs); i++)
    lhs += nnc_interp_value(in, ca)[i] * nnc_interp_value(in, b)[i];
  for (int64_t i = 0; i < nnc_shape_numel(&cb->shape); i++)
    rhs += nnc_interp_value(in, a)[i] * nnc_interp_value(in, cb)[i];
  assert_near(lhs, rhs, 1e-13);
  assert_true(fabs(lhs) > 1e-3);
  nnc_interp_free(in);
}

static void test_gather_scatter_onehot(void **state) {
  fixture *fx = *state;
  nnc_node *table = fx_leaf(fx, "table", sh(2, 4, 3), -1, 1);
  nnc_shape is = sh(2, 2, 3);
  nnc_node *idx = nnc_ir_input(fx->g, NNC_IN_Y, NNC_I32, &is);
  nnc_node *rows = nnc_ir_gather(fx->g, table, idx); /* [2,3,3] */
  nnc_node *back = nnc_ir_scatter_add(fx->g, rows, idx, 4);
  nnc_shape ls = sh(1, 6);
  nnc_node *flat = nnc_ir_reshape(fx->g, idx, &ls);
  nnc_node *oh = nnc_ir_onehot(fx->g, flat, 4, NNC_F64);
  assert_verified(fx->g);
  nnc_interp *in = nnc_interp_new(fx->g);
  fx_fill(fx, in);
  const double iv[6] = {2, 0, 2, 3, 2, 1};
  fx_set(nnc_interp_input(in, NNC_IN_Y), iv, 6);
  nnc_interp_run(in);
  const double *tv = nnc_interp_value(in, table);
  const double count[4] = {1, 1, 3, 1};
  for (int i = 0; i < 6; i++)
    for (int d = 0; d < 3; d++)
      assert_true(nnc_interp_value(in, rows)[i * 3 + d] == tv[(int)iv[i] * 3 + d]);
  for (int r = 0; r < 4; r++)
    for (int d = 0; d < 3; d++)
      assert_near(nnc_interp_value(in, back)[r * 3 + d], count[r] * tv[r * 3 + d], 1e-15);
  for (int i = 0; i < 6; i++)
    for (int c = 0; c < 4; c++)
      assert_true(nnc_interp_value(in, oh)[i * 4 + c] == (c == iv[i]));
  nnc_interp_free(in);
}

/* rand reproduces the runtime's nnc_rt_hash_uniform bit for bit. */
static void test_rand_matches_runtime(void **state) {
  fixture *fx = *state;
  nnc_shape s0 = sh(0), s = sh(2, 3, 5);
  nnc_node *seed = nnc_ir_input(fx->g, NNC_IN_SEED, NNC_I32, &s0);
  nnc_node *step = nnc_ir_input(fx->g, NNC_IN_STEP, NNC_F32, &s0);
  nnc_node *r0 = nnc_ir_rand(fx->g, seed, step, &s, NNC_F32, 0);
  nnc_node *r3 = nnc_ir_rand(fx->g, seed, step, &s, NNC_F32, 3);
  assert_verified(fx->g);
  nnc_interp *in = nnc_interp_new(fx->g);
  nnc_interp_input(in, NNC_IN_SEED)[0] = 42;
  nnc_interp_input(in, NNC_IN_STEP)[0] = 17;
  nnc_interp_run(in);
  for (uint64_t i = 0; i < 15; i++) {
    assert_true(nnc_interp_value(in, r0)[i] == (double)nnc_rt_hash_uniform(42, 17, i));
    assert_true(nnc_interp_value(in, r3)[i] ==
                (double)nnc_rt_hash_uniform(42 ^ (UINT64_C(3) << 32), 17, i));
  }
  nnc_interp_free(in);
}

/* A rand chunked over the batch (ops.def, attr[1] = G): micro-batch g
 * draws with the seed seed + g * NNC_HASH_MICRO_SEED (mod 2^32) and its own
 * index, as the data-parallel step's micro-batch step does; a seed near
 * 2^32 wraps. */
static void test_rand_chunked(void **state) {
  fixture *fx = *state;
  nnc_shape s0 = sh(0), s = sh(2, 4, 3);
  nnc_node *seed = nnc_ir_input(fx->g, NNC_IN_SEED, NNC_I32, &s0);
  nnc_node *step = nnc_ir_input(fx->g, NNC_IN_STEP, NNC_F32, &s0);
  nnc_node *r = nnc_ir_rand(fx->g, seed, step, &s, NNC_F32, 2);
  r->attr[1] = 2; /* 2 micro-batches of 2 rows */
  assert_verified(fx->g);
  const uint32_t seeds[2] = {42u, 0xFFFFFFF0u};
  for (int k = 0; k < 2; k++) {
    nnc_interp *in = nnc_interp_new(fx->g);
    nnc_interp_input(in, NNC_IN_SEED)[0] = (double)(int32_t)seeds[k];
    nnc_interp_input(in, NNC_IN_STEP)[0] = 5;
    nnc_interp_run(in);
    for (uint64_t g = 0; g < 2; g++)
      for (uint64_t j = 0; j < 6; j++) {
        uint32_t sg = seeds[k] + (uint32_t)g * NNC_HASH_MICRO_SEED;
        assert_true(nnc_interp_value(in, r)[g * 6 + j] ==
                    (double)nnc_rt_hash_uniform(sg ^ (UINT64_C(2) << 32), 5, j));
      }
    nnc_interp_free(in);
  }
}

/* Updates read the old values: swapping two tensors swaps them. */
static void test_updates_are_simultaneous(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_leaf(fx, "a", sh(1, 3), 0, 1), *b = fx_leaf(fx, "b", sh(1, 3), 2, 3);
  nnc_graph_add_update(fx->g, 0, b);
  nnc_graph_add_update(fx->g, 1, nnc_ir_binary(fx->g, NNC_OP_ADD, a, b));
  nnc_interp *in = run(fx);
  const double *av = nnc_interp_value(in, a), *bv = nnc_interp_value(in, b);
  for (int i = 0; i < 3; i++) {
    assert_true(nnc_interp_tensor(in, 0)[i] == bv[i]);
    assert_true(nnc_interp_tensor(in, 1)[i] == av[i] + bv[i]);
  }
  nnc_interp_free(in);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_unary, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_binary_broadcast, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_select_cast, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_reductions, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_argmax_first_on_ties, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_data_movement, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_matmul_transposes, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_im2col_conv, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_col2im_adjoint, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_gather_scatter_onehot, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_rand_matches_runtime, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_rand_chunked, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_updates_are_simultaneous, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
