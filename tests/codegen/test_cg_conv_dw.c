/* test_cg_conv_dw.c: a convolution's weight gradient computed directly
 * from NCHW tensors (codegen/lower_conv_dw.c, conv_dw.c).
 *
 * The step is the backward of a conv2d layer as autodiff writes it: the
 * output gradient dy (NCHW, an elementwise function of the Y input)
 * transposed to NHWC and multiplied with the input's columns,
 * dW = dy_nhwcᵀ · im2col(x), stored into a tensor; a forward product
 * reads the same columns. Checked: against the interpreter over odd
 * shapes (channels not multiples of 16, rows shorter and longer than a
 * vector, padding 0/1/2, kernels 1/3/5 and non-square), that the direct
 * kernel is the one compiled (stride 2 keeps the product), the same bits
 * at 1, 2 and 3 threads, and with the batch in G micro-batch chunks
 * (nnc_chunk_batch_sums) the same bits as the step at B / G run on each
 * micro-batch and the results added as the runtime adds them.
 */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "cg_test.h"

typedef struct conv_case {
  int n, c, h, w, o;
  int64_t k[2], s[2], p[2];
} conv_case;

/* The step of case cc at batch n into module m (its train graph); the
 * weight gradient's tensor index in *dw. With dx, an input-gradient-like
 * product dy_nhwc · W reads dy's transpose too. */
static nnc_graph *build_step(nnc_module *m, const conv_case *cc, int n, int *dw, bool dx) {
  nnc_graph *g = m->train = nnc_graph_new(m, "train");
  int64_t oh = nnc_ir_window_out(cc->h, cc->k[0], cc->s[0], cc->p[0]);
  int64_t ow = nnc_ir_window_out(cc->w, cc->k[1], cc->s[1], cc->p[1]);
  nnc_shape xs = {4, {n, cc->c, cc->h, cc->w}}, ys = {4, {n, cc->o, oh, ow}};
  nnc_node *x = nnc_ir_input(g, NNC_IN_X, NNC_F32, &xs);
  nnc_node *y = nnc_ir_input(g, NNC_IN_Y, NNC_F32, &ys);
  nnc_node *cols = nnc_ir_im2col(g, x, cc->k, cc->s, cc->p, 0);
  int64_t taps = cc->c * cc->k[0] * cc->k[1];
  nnc_init zeros = {NNC_INIT_ZEROS, 0, 0, 0, 0};
  nnc_shape ws = {2, {cc->o, taps}};
  int wt = nnc_module_add_tensor(m, "w", NNC_ROLE_PARAM, NNC_F32, &ws, zeros, (nnc_span){0, 0, 0});
  *dw = nnc_module_add_tensor(m, "dw", NNC_ROLE_PARAM, NNC_F32, &ws, zeros, (nnc_span){0, 0, 0});
  /* the forward product reads the columns too */
  nnc_graph_set_output(g, NNC_OUT_PRED, nnc_ir_matmul(g, cols, nnc_ir_param(g, wt), false, true));
  /* no multiply-add: a kernel compiled cold (a small batch) contracts none */
  nnc_node *dy = nnc_ir_binary(g, NNC_OP_MUL, y, y);
  static const int to_nhwc[4] = {0, 2, 3, 1};
  nnc_shape rows = {2, {n * oh * ow, cc->o}};
  nnc_node *dy_rows = nnc_ir_reshape(g, nnc_ir_transpose(g, dy, to_nhwc), &rows);
  nnc_graph_add_update(g, *dw, nnc_ir_matmul(g, dy_rows, cols, true, false));
  if (dx)
    nnc_graph_set_output(g, NNC_OUT_LOSS_VEC,
                         nnc_ir_matmul(g, dy_rows, nnc_ir_param(g, wt), false, false));
  return g;
}

static nnc_graph *build(nnc_module *m, const conv_case *cc, int n, int *dw) {
  return build_step(m, cc, n, dw, false);
}

static const conv_case cases[] = {
    {3, 5, 9, 7, 6, {3, 3}, {1, 1}, {1, 1}},     /* odd sizes, rows under a vector */
    {2, 3, 6, 21, 17, {3, 3}, {1, 1}, {1, 1}},   /* rows over a vector, O prime */
    {1, 2, 5, 33, 4, {3, 3}, {1, 1}, {1, 1}},    /* three vectors a row */
    {2, 4, 7, 9, 5, {5, 3}, {1, 1}, {2, 0}},     /* non-square window, padding 2 and 0 */
    {2, 3, 8, 8, 6, {1, 1}, {1, 1}, {0, 0}},     /* 1x1 */
    {2, 2, 10, 12, 4, {5, 5}, {1, 1}, {2, 2}},   /* 5x5, padding 2 */
    {4, 3, 5, 5, 3, {3, 3}, {1, 1}, {0, 0}},     /* no padding */
    {2, 2, 3, 4, 3, {5, 5}, {1, 1}, {2, 2}},     /* taps beyond the image on both sides */
    {4, 18, 14, 14, 20, {3, 3}, {1, 1}, {1, 1}}, /* fashion_cnn's conv2 in small */
    {2, 1, 28, 28, 32, {3, 3}, {1, 1}, {1, 1}},  /* fashion_cnn's conv1 */
    {2, 3, 11, 10, 17, {3, 3}, {2, 2}, {1, 1}},  /* stride 2: the product */
};

static bool direct(const conv_case *cc) {
  return cc->s[0] == 1 && cc->s[1] == 1;
}

/* Against the interpreter, the kernel chosen, 1/2/3 threads. */
static void test_against_interpreter(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const conv_case *cc = &cases[i];
    void *st;
    fx_setup(&st);
    fixture *fx = st;
    int dw;
    fx->g = build(fx->m, cc, cc->n, &dw);
    fx->lo[0] = -1;
    fx->hi[0] = 1;
    fx->x_lo = -1;
    fx->rtol = 1e-5;
    fx->atol = 1e-5 * sqrt((double)(cc->n * cc->h * cc->w));
    char *dump = fx_kernel_dump(fx);
    if ((strstr(dump, "conv_dw") != NULL) != direct(cc))
      fail_msg("case %zu: the direct kernel %s", i, direct(cc) ? "is missing" : "is used");
    free(dump);
    fx_check(fx);
    fx_check_threads(fx, 1, false);
    fx_teardown(&st);
  }
}

/* The weight gradient of case cc at batch n for the given rows of X, Y. */
static void run_step(const conv_case *cc, int n, int64_t G, const float *X, const float *Y,
                     int threads, float *out) {
  nnc_arena a;
  nnc_arena_init(&a);
  nnc_module *m = nnc_module_new(&a, "conv_dw");
  int dw;
  build(m, cc, n, &dw);
  if (G > 1) nnc_chunk_batch_sums(m->train, G);
  fixture fx;
  memset(&fx, 0, sizeof fx);
  fx.m = m;
  fx.g = m->train;
  fx_run r;
  fx_compile(&fx, &r, threads);
  const nnc_node *xn = m->train->inputs[NNC_IN_X], *yn = m->train->inputs[NNC_IN_Y];
  memcpy(r.arena + nnc_cg_input_offset(r.prog, NNC_IN_X), X,
         sizeof(float) * (size_t)nnc_shape_numel(&xn->shape));
  memcpy(r.arena + nnc_cg_input_offset(r.prog, NNC_IN_Y), Y,
         sizeof(float) * (size_t)nnc_shape_numel(&yn->shape));
  r.model->train_step(r.arena, r.pool);
  memcpy(out, r.arena + r.model->tensors[dw].offset,
         sizeof(float) * (size_t)nnc_shape_numel(&m->tensors[dw].shape));
  fx_release(&r);
  nnc_arena_destroy(&a);
}

/* Batch B in G chunks: the micro-batch steps (B / G each) added as the
 * runtime's tree give the whole step's bits, at 1, 2 and 3 threads. */
static void check_chunks(const conv_case *cc, int64_t B, int64_t G) {
  int64_t b = B / G, oh = nnc_ir_window_out(cc->h, cc->k[0], 1, cc->p[0]),
          ow = nnc_ir_window_out(cc->w, cc->k[1], 1, cc->p[1]);
  int64_t xper = cc->c * cc->h * cc->w, yper = cc->o * oh * ow;
  int64_t nw = cc->o * cc->c * cc->k[0] * cc->k[1];
  float *X = malloc(sizeof(float) * (size_t)(B * xper)),
        *Y = malloc(sizeof(float) * (size_t)(B * yper));
  float *part = malloc(sizeof(float) * (size_t)(G * nw)), *got = malloc(sizeof(float) * (size_t)nw);
  uint64_t seed = 777 + (uint64_t)B;
  for (int64_t i = 0; i < B * xper; i++)
    X[i] = (float)(2 * fx_rand(&seed) - 1);
  for (int64_t i = 0; i < B * yper; i++)
    Y[i] = (float)(2 * fx_rand(&seed) - 1);
  for (int64_t g = 0; g < G; g++)
    run_step(cc, (int)b, 1, X + g * b * xper, Y + g * b * yper, 1, part + g * nw);
  for (int64_t width = 1; width < G; width *= 2)
    for (int64_t i = 0; i + width < G; i += 2 * width)
      for (int64_t j = 0; j < nw; j++)
        part[i * nw + j] += part[(i + width) * nw + j];
  for (int threads = 1; threads <= 3; threads++) {
    run_step(cc, (int)B, G, X, Y, threads, got);
    for (int64_t j = 0; j < nw; j++)
      if (memcmp(&got[j], &part[j], sizeof(float)))
        fail_msg("B=%lld G=%lld, %d threads: dw[%lld] is %.9g, the micro-batches' tree %.9g",
                 (long long)B, (long long)G, threads, (long long)j, got[j], part[j]);
  }
  free(X);
  free(Y);
  free(part);
  free(got);
}

static void test_chunks_are_micro_batches(void **state) {
  (void)state;
  check_chunks(&cases[0], 12, 4); /* micro-batches of 3 */
  check_chunks(&cases[1], 8, 2);
  check_chunks(&cases[8], 8, 4);
  check_chunks(&cases[9], 4, 4); /* one image a chunk */
}

/* The cost rule: where the columns and dy's transpose are made for other
 * readers anyway (a forward product, an input-gradient product) the
 * product stays; NNC_CONV_DW=1 takes the direct kernel there too, and it
 * matches the interpreter. */
static void test_cost_rule(void **state) {
  (void)state;
  for (int always = 0; always < 2; always++) {
    if (always) setenv("NNC_CONV_DW", "1", 1);
    void *st;
    fx_setup(&st);
    fixture *fx = st;
    int dw;
    fx->g = build_step(fx->m, &cases[0], cases[0].n, &dw, true);
    fx->lo[0] = -1;
    fx->hi[0] = 1;
    fx->rtol = 1e-5;
    fx->atol = 1e-4;
    char *dump = fx_kernel_dump(fx);
    bool direct_used = strstr(dump, "conv_dw") != NULL;
    free(dump);
    if (direct_used != (always == 1))
      fail_msg("NNC_CONV_DW=%d: direct kernel %d", always, direct_used);
    fx_check(fx);
    fx_teardown(&st);
    unsetenv("NNC_CONV_DW");
  }
}

/* The images an item sums in registers: as many (up to 4) as keep their
 * data within a 32 KB L1, dividing a chunk's images. fashion_cnn's conv 2
 * (8 channels of 14x14 and the input plane, 7 KB an image) takes 4, its
 * conv 1 (28x28, 28 KB) one; a chunk of 6 images of conv 2 takes 3. Each
 * matches the interpreter and gives the same bits at 1, 2 and 3 threads
 * (the sums' order does not depend on the group). */
static void test_image_groups(void **state) {
  (void)state;
  static const conv_case shapes[] = {
      {8, 32, 14, 14, 64, {3, 3}, {1, 1}, {1, 1}},
      {4, 1, 28, 28, 32, {3, 3}, {1, 1}, {1, 1}},
      {6, 4, 14, 14, 16, {3, 3}, {1, 1}, {1, 1}},
  };
  static const char *const expect[] = {"chunks=1 group=4 plane", "chunks=1 group=1 plane",
                                       "chunks=1 group=3 plane"};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    void *st;
    fx_setup(&st);
    fixture *fx = st;
    int dw;
    fx->g = build(fx->m, &shapes[i], shapes[i].n, &dw);
    fx->lo[0] = -1;
    fx->hi[0] = 1;
    fx->x_lo = -1;
    fx->rtol = 1e-5;
    fx->atol = 1e-5 * sqrt((double)(shapes[i].n * shapes[i].h * shapes[i].w));
    char *dump = fx_kernel_dump(fx);
    if (!strstr(dump, expect[i])) fail_msg("shape %zu: no \"%s\" in\n%s", i, expect[i], dump);
    free(dump);
    fx_check(fx);
    fx_check_threads(fx, 1, false);
    fx_teardown(&st);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_against_interpreter),
      cmocka_unit_test(test_image_groups),
      cmocka_unit_test(test_chunks_are_micro_batches),
      cmocka_unit_test(test_cost_rule),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
