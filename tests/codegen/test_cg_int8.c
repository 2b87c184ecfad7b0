/* test_cg_int8.c: the int8 deployed program (nnc --quantize int8,
 * codegen/deploy_quant.c) run through nnc_deploy_jit (the object's code)
 * against a plain reference written here: im2col, quantisation, int32
 * sums, the float epilogue and max pooling as loops. Two convolutions of
 * odd sizes, the second strided, both padded, ReLU and max pooling after
 * each, then a dense layer:
 *   conv1  K = 18 (padded to 20); at batch 5, 315 rows of A: 19 blocks of
 *          16 and 11 rows after them; A stored in bytes by its im2col
 *          (nnc_kqgemm.byte_writer[0]), which reads the float input;
 *   conv2  K = 27 (28), stride 2; at batch 5, 20 rows: a block and 4;
 *          conv1's ReLU stores bytes, pool1 takes maxima of bytes and the
 *          im2col copies bytes (a chain of 3);
 *   dense  K = 8; conv2's ReLU stores bytes, pool2 takes their maxima.
 * The outputs must be the reference's bit for bit, and the same as with
 * every A in float, quantised by the products themselves (nbyte 0). Then
 * with nnc_deploy_requantize (requantising epilogues): each convolution's
 * product stores the bytes its ReLU (or batch norm + ReLU, folded) stored,
 * in [N, C, H, W] (conv1 byte by byte, conv2 in words of 4 rows at batch
 * 5), and the reference applies the folded map; the same bits. */
#define NNC_CG_TEST_FRONTEND
#include "cg_test.h"

#include "codegen/deploy_internal.h"

enum { CIN = 2, H = 9, W = 7, C1 = 3, C2 = 8, CLASSES = 3, MAXB = 5 };

/* %s: "batchnorm" or "" (then the ReLU reads the convolution) */
static const char *SOURCE =
    "data d = idx(\"none\")\n"
    "model m(x: f32[2, 9, 7]) -> f32[3] {\n"
    "  h = maxpool(relu(%s(conv2d(x, 3, kernel = 3, padding = 1))), 2)\n"
    "  h = maxpool(relu(%s(conv2d(h, 8, kernel = 3, stride = 2, padding = 1))), 2)\n"
    "  return dense(flatten(h), 3)\n"
    "}\n"
    "train {\n"
    "  model = m  data = d.train  loss = cross_entropy  optimizer = sgd(lr = 0.1)\n"
    "  batch = %d  epochs = 1\n"
    "}\n";

static nnc_module *compile(nnc_arena *arena, int batch, bool bn) {
  static char text[1024];
  const char *b = bn ? "batchnorm" : "";
  int n = snprintf(text, sizeof text, SOURCE, b, b, batch);
  return fx_compile_source(arena, "int8.nn", text, (size_t)n);
}

static float uniform(uint32_t *s, float lo, float hi) {
  *s = *s * 1664525u + 1013904223u;
  return lo + (hi - lo) * (float)(*s >> 8) / (float)(1u << 24);
}

/* kernel.h's nnc_kqgemm arithmetic, as plainly as it is written there */
static unsigned char quantize(const nnc_kqgemm *q, float x) {
  float r = nearbyintf(x * q->a_inv_scale);
  r = fminf(fmaxf(r, (float)-q->a_zero), (float)(255 - q->a_zero));
  return (unsigned char)((int32_t)r + q->a_zero);
}

static float product(const nnc_kqgemm *q, const unsigned char *a, int64_t n) {
  int32_t acc = 0;
  for (int64_t k = 0; k < q->K; k++)
    acc += (int32_t)a[k] * q->w[n * q->K4 + k];
  float v = (float)(acc + q->offset[n]) * q->out_scale[n];
  return q->relu && !(v > 0) ? 0.0f : v;
}

/* relu(conv2d(x [c][h][w], kernel 3, stride st, padding 1)) -> y [n][oh][ow] */
static void conv(const nnc_kqgemm *q, const float *x, int c, int h, int w, int st, float *y, int n,
                 int oh, int ow) {
  unsigned char col[64];
  for (int oy = 0; oy < oh; oy++)
    for (int ox = 0; ox < ow; ox++) {
      for (int ci = 0; ci < c; ci++)
        for (int ky = 0; ky < 3; ky++)
          for (int kx = 0; kx < 3; kx++) {
            int iy = oy * st + ky - 1, ix = ox * st + kx - 1;
            bool in = iy >= 0 && iy < h && ix >= 0 && ix < w;
            col[(ci * 3 + ky) * 3 + kx] = quantize(q, in ? x[(ci * h + iy) * w + ix] : 0.0f);
          }
      for (int j = 0; j < n; j++) {
        float v = product(q, col, j);
        if (q->out_buf >= 0) v = v * q->out_mul[j] + q->out_add[j]; /* the batch norm folded */
        y[(j * oh + oy) * ow + ox] = v > 0 ? v : 0.0f;
      }
    }
}

/* maxpool(x [c][h][w], 2) -> y [c][h / 2][w / 2] */
static void maxpool(const float *x, int c, int h, int w, float *y) {
  for (int ci = 0; ci < c; ci++)
    for (int py = 0; py < h / 2; py++)
      for (int px = 0; px < w / 2; px++) {
        float m = -INFINITY;
        for (int dy = 0; dy < 2; dy++)
          for (int dx = 0; dx < 2; dx++)
            m = fmaxf(m, x[(ci * h + py * 2 + dy) * w + px * 2 + dx]);
        y[(ci * (h / 2) + py) * (w / 2) + px] = m;
      }
}

/* the model for one sample; q: conv1, conv2, dense */
static void reference(const nnc_kqgemm *const *q, const float *x, float *out) {
  float y1[C1 * H * W], p1[C1 * 4 * 3], y2[C2 * 2 * 2], p2[C2];
  unsigned char a[C2];
  conv(q[0], x, CIN, H, W, 1, y1, C1, H, W);
  maxpool(y1, C1, H, W, p1);
  conv(q[1], p1, C1, 4, 3, 2, y2, C2, 2, 2);
  maxpool(y2, C2, 2, 2, p2);
  for (int k = 0; k < C2; k++)
    a[k] = quantize(q[2], p2[k]);
  for (int n = 0; n < CLASSES; n++)
    out[n] = product(q[2], a, n);
}

static void run_jit(const nnc_deploy *d, const nnc_deploy_values *v, const float *in, float *out) {
  nnc_cg_options co;
  nnc_cg_default_options(&co);
  char err[512];
  nnc_deploy_jit *j = nnc_deploy_jit_compile(d, v, &co, err, sizeof err);
  if (!j) fail_msg("jit: %s", err);
  void *ws = aligned_alloc(NNC_DEPLOY_ALIGN, (size_t)(nnc_deploy_workspace_size(d) + 63) / 64 * 64);
  assert_non_null(ws);
  assert_int_equal(nnc_deploy_jit_predict(j, in, out, ws), 0);
  free(ws);
  nnc_deploy_jit_free(j);
}

/* The batch norm after each convolution as nnc folds it: for column n,
 * v * mul[n] + add[n] with mul = gamma / sqrt(var + eps), add = beta -
 * mean * mul (to float precision; the folding is in double). */
static void check_fold(const nnc_module *m, const float **tensor, const nnc_kqgemm *q,
                       const char *bn) {
  const float *t[4] = {0}; /* gamma, beta, running_mean, running_var */
  const char *names[4] = {"gamma", "beta", "running_mean", "running_var"};
  for (int i = 0; i < m->ntensors; i++)
    for (int j = 0; j < 4; j++) {
      char want[64];
      snprintf(want, sizeof want, "m.%s.%s", bn, names[j]);
      if (!strcmp(m->tensors[i].name, want)) t[j] = tensor[i];
    }
  for (int j = 0; j < 4; j++)
    assert_non_null(t[j]);
  for (int64_t n = 0; n < q->N; n++) {
    double mul = t[0][n] / sqrt((double)t[3][n] + 1e-5), add = t[1][n] - t[2][n] * mul;
    assert_true(fabs(q->out_mul[n] - mul) <= 1e-4 * fabs(mul));
    assert_true(fabs(q->out_add[n] - add) <= 1e-4 * (fabs(add) + fabs(t[2][n] * mul)));
  }
}

/* batch: 1 or 5; bn: a batch norm between each convolution and its ReLU;
 * requant: nnc_deploy_requantize (the products store their consumers'
 * bytes) */
static void check_batch(int batch, bool bn, bool requant) {
  if (!__builtin_cpu_supports("avx512vnni")) skip();
  nnc_arena arena;
  nnc_arena_init(&arena);
  nnc_module *m = compile(&arena, batch, bn);
  assert_non_null(m);
  nnc_deploy_options o = {.prefix = "t", .header = "t.h"};
  char err[512];
  nnc_deploy *d = nnc_deploy_build(m, &o, err, sizeof err);
  if (!d) fail_msg("deploy: %s", err);
  assert_int_equal(nnc_deploy_batch(d), batch);
  uint32_t seed = 7;
  const float **tensor = calloc((size_t)m->ntensors + 1, sizeof *tensor);
  assert_non_null(tensor);
  for (int t = 0; t < m->ntensors; t++) {
    int64_t n = nnc_shape_numel(&m->tensors[t].shape);
    float *x = malloc(sizeof(float) * (size_t)n);
    assert_non_null(x);
    bool var = strstr(m->tensors[t].name, "running_var") != NULL;
    for (int64_t i = 0; i < n; i++)
      x[i] = var ? uniform(&seed, 0.3f, 2.0f) : uniform(&seed, -0.4f, 0.4f);
    tensor[t] = x;
  }
  nnc_deploy_values v = {.tensor = tensor, .scale = 1};
  int nk = nnc_deploy_kernels(d);
  bool which[64] = {0};
  float amin[64], amax[64];
  assert_true(nk <= 64);
  for (int i = 0; i < nk; i++) {
    which[i] = nnc_deploy_quantizable(d, i, NULL);
    amin[i] = -0.3f, amax[i] = 1.2f; /* inputs and activations beyond: clamped */
  }
  assert_int_equal(nnc_deploy_quantize(d, &v, which, amin, amax), 3);
  int64_t D = nnc_deploy_input_size(d);
  float *in = malloc(sizeof(float) * (size_t)(batch * D));
  assert_true(batch <= MAXB && in);
  for (int64_t i = 0; i < batch * D; i++)
    in[i] = uniform(&seed, -0.5f, 1.5f);
  if (requant) {
    /* the batch norm's rsqrt, a temporary: from a calibration program */
    nnc_deploy_options oc = o;
    oc.calibration = true;
    nnc_deploy *cal = bn ? nnc_deploy_build(m, &oc, err, sizeof err) : NULL;
    void *cws = NULL;
    if (bn) {
      float ignored[MAXB * CLASSES];
      if (!cal) fail_msg("deploy: %s", err);
      nnc_cg_options co;
      nnc_cg_default_options(&co);
      nnc_deploy_jit *j = nnc_deploy_jit_compile(cal, &v, &co, err, sizeof err);
      if (!j) fail_msg("jit: %s", err);
      cws =
          aligned_alloc(NNC_DEPLOY_ALIGN, (size_t)(nnc_deploy_workspace_size(cal) + 63) / 64 * 64);
      assert_non_null(cws);
      assert_int_equal(nnc_deploy_jit_predict(j, in, ignored, cws), 0);
      nnc_deploy_jit_free(j);
    }
    /* both convolutions (not the dense layer: its output is the prediction) */
    assert_int_equal(nnc_deploy_requantize(d, &v, cal, cws), 2);
    free(cws);
    nnc_deploy_free(cal);
  }
  const nnc_kqgemm *q[3];
  int nq = 0;
  for (int i = 0; i < nk; i++)
    if (d->quant[i]) {
      assert_true(nq < 3);
      q[nq++] = d->quant[i];
      assert_true(d->quant[i]->nbyte > 0 && d->quant[i]->byte_writer[0] < i); /* A in bytes */
    }
  assert_int_equal(nq, 3);
  assert_int_equal(q[0]->K, CIN * 9);
  assert_int_equal(q[0]->K4, 20);
  assert_int_equal(q[0]->M, batch * H * W);
  assert_int_equal(q[1]->K4, 28);
  assert_int_equal(q[1]->M, batch * 4);
  assert_true(q[0]->trans_a && q[1]->trans_a && !q[2]->trans_a); /* im2col stored [K, M] */
  /* conv1's im2col reads the input: only it stores bytes. conv2's im2col
   * copies the bytes pool1 stored, whose maxima are of the bytes that the
   * ReLU (not byte exact) stored; the dense layer's: pool2, the ReLU. */
  assert_int_equal(q[0]->nbyte, 1);
  assert_int_equal(q[1]->nbyte, 3);
  assert_int_equal(q[2]->nbyte, 2);
  for (int c = 1; c < q[1]->nbyte; c++)
    assert_true(q[1]->byte_writer[c] < q[1]->byte_writer[c - 1]);
  /* requantised: each convolution stores the bytes its ReLU stored, in
   * [N, C, H, W] (conv1: 63 = 9 x 7 bytes per channel, byte by byte;
   * conv2: 4, words of 4 rows); the ReLU kernels are not run */
  for (int c = 0; c < 2; c++) {
    assert_int_equal(q[c]->out_buf >= 0, requant);
    if (!requant) continue;
    assert_true(q[c]->out_q == q[c + 1]);
    assert_int_equal(q[c]->out_buf, q[c + 1]->byte_buf[q[c + 1]->nbyte - 1]);
    assert_int_equal(q[c]->absorbed, q[c + 1]->byte_writer[q[c + 1]->nbyte - 1]);
    assert_true(nnc_kq_absorbed((const nnc_kqgemm *const *)d->quant, nk, q[c]->absorbed));
    assert_int_equal(q[c]->out_col, c == 0 ? H * W : 4);
    assert_int_equal(q[c]->out_ext[0], c == 0 ? H * W : 4);
    assert_int_equal(q[c]->out_ndim, batch > 1 ? 2 : 1);
    assert_true(q[c]->out_relu);
    if (bn) check_fold(m, tensor, q[c], c == 0 ? "bn1" : "bn2");
    for (int64_t n = 0; !bn && n < q[c]->N; n++)
      assert_true(q[c]->out_mul[n] == 1.0f && q[c]->out_add[n] == 0.0f);
  }
  assert_int_equal(q[2]->out_buf, -1);
  float got[MAXB * CLASSES], floats[MAXB * CLASSES], want[CLASSES];
  run_jit(d, &v, in, got);
  for (int b = 0; b < batch; b++) {
    reference(q, in + b * D, want);
    for (int n = 0; n < CLASSES; n++)
      if (got[b * CLASSES + n] != want[n])
        fail_msg("batch %d sample %d class %d: %.9g, reference %.9g", batch, b, n,
                 (double)got[b * CLASSES + n], (double)want[n]);
  }
  /* the same with A in float, quantised by the products themselves (not
   * after nnc_deploy_requantize, which may give a byte buffer only the
   * room of its bytes) */
  if (!requant) {
    for (int i = 0; i < nk; i++)
      if (d->quant[i]) d->quant[i]->nbyte = 0;
    run_jit(d, &v, in, floats);
    assert_memory_equal(got, floats, sizeof(float) * (size_t)(batch * CLASSES));
  }
  free(in);
  for (int t = 0; t < m->ntensors; t++)
    free((void *)tensor[t]);
  free(tensor);
  nnc_deploy_free(d);
  nnc_arena_destroy(&arena);
}

static void test_int8_bytes_batch1(void **state) {
  (void)state;
  check_batch(1, false, false);
}

static void test_int8_bytes_batch5(void **state) {
  (void)state;
  check_batch(5, false, false);
}

static void test_int8_requant_relu_batch1(void **state) {
  (void)state;
  check_batch(1, false, true);
}

static void test_int8_requant_relu_batch5(void **state) {
  (void)state;
  check_batch(5, false, true);
}

static void test_int8_requant_bn_batch1(void **state) {
  (void)state;
  check_batch(1, true, true);
}

static void test_int8_requant_bn_batch5(void **state) {
  (void)state;
  check_batch(5, true, true);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_int8_bytes_batch1),
      cmocka_unit_test(test_int8_bytes_batch5),
      cmocka_unit_test(test_int8_requant_relu_batch1),
      cmocka_unit_test(test_int8_requant_relu_batch5),
      cmocka_unit_test(test_int8_requant_bn_batch1),
      cmocka_unit_test(test_int8_requant_bn_batch5),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
