/* test_cg_mlp.c: whole training steps.
 *  - a small MLP built with the IR builders, made into a training step by
 *    nnc_build_training (Adam) and nnc_simplify, 3 steps against the
 *    interpreter running the same graph;
 *  - the same step bit-identical with 1, 2 and 3 threads;
 *  - examples/fashion_mlp.nn through the front end: first steps against the
 *    interpreter, and it learns a fixed batch;
 *  - `--emit=asm` of a product shows AVX-512 FMAs (vfmadd...ps %zmm). */
#define NNC_CG_TEST_FRONTEND
#include "cg_test.h"

#include <unistd.h>

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

/* relu(x W1 + b1) W2 + b2 -> cross-entropy on labels; outputs as the front
 * end makes them (loss vector, loss, correct vector, prediction). With wt
 * the weights are stored [out, in] and read transposed (x W1^T), as the
 * front end's dense layers store them. */
static void mlp_forward(fixture *fx, nnc_graph *g, int batch, int in, int hidden, int classes,
                        bool wt) {
  nnc_shape xs = sh(2, batch, in), ys = sh(1, batch), row = sh(2, 1, hidden),
            row2 = sh(2, 1, classes), b = sh(1, batch);
  nnc_node *x = nnc_ir_input(g, NNC_IN_X, NNC_F32, &xs);
  nnc_node *y = nnc_ir_input(g, NNC_IN_Y, NNC_I32, &ys);
  nnc_node *w1 = nnc_ir_param(g, 0), *b1 = nnc_ir_param(g, 1), *w2 = nnc_ir_param(g, 2),
           *b2 = nnc_ir_param(g, 3);
  nnc_node *h = nnc_ir_unary(g, NNC_OP_RELU,
                             nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_matmul(g, x, w1, false, wt),
                                           nnc_ir_reshape(g, b1, &row)));
  nnc_node *z = nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_matmul(g, h, w2, false, wt),
                              nnc_ir_reshape(g, b2, &row2));
  nnc_node *shifted = nnc_ir_binary(g, NNC_OP_SUB, z, nnc_ir_reduce(g, NNC_OP_RMAX, z, 0x2));
  nnc_node *lse = nnc_ir_unary(
      g, NNC_OP_LOG, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_unary(g, NNC_OP_EXP, shifted), 0x2));
  nnc_node *picked =
      nnc_ir_reduce(g, NNC_OP_SUM,
                    nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_onehot(g, y, classes, NNC_F32),
                                  nnc_ir_binary(g, NNC_OP_SUB, shifted, lse)),
                    0x2);
  nnc_node *lv = nnc_ir_reshape(g, nnc_ir_unary(g, NNC_OP_NEG, picked), &b);
  nnc_shape s0 = sh(0);
  nnc_graph_set_output(g, NNC_OUT_LOSS_VEC, lv);
  nnc_graph_set_output(
      g, NNC_OUT_LOSS,
      nnc_ir_reshape(g,
                     nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, lv, 0x1),
                                   nnc_ir_const(g, NNC_F32, 1.0 / batch)),
                     &s0));
  nnc_node *pred = nnc_ir_reshape(g, nnc_ir_argmax(g, z, 1), &b);
  nnc_graph_set_output(g, NNC_OUT_CORRECT_VEC,
                       nnc_ir_binary(g, NNC_OP_EQ, pred, nnc_ir_cast(g, y, NNC_F32)));
  nnc_graph_set_output(g, NNC_OUT_PRED, z);
  (void)fx;
}

/* The MLP trained by opt (its defaults, then weight decay wd) with
 * gradients clipped to a global norm of clip (0: not clipped). */
static void build_mlp_layout(fixture *fx, int batch, int in, int hidden, int classes,
                             nnc_optim_kind opt, double wd, double clip, bool wt) {
  double r1 = 1 / sqrt((double)in), r2 = 1 / sqrt((double)hidden);
  fx_param(fx, "w1", wt ? sh(2, hidden, in) : sh(2, in, hidden), -r1, r1);
  fx_param(fx, "b1", sh(1, hidden), -0.1, 0.1);
  fx_param(fx, "w2", wt ? sh(2, classes, hidden) : sh(2, hidden, classes), -r2, r2);
  fx_param(fx, "b2", sh(1, classes), -0.1, 0.1);
  fx->y_classes = classes;
  mlp_forward(fx, fx->g, batch, in, hidden, classes, wt);
  fx->m->eval = nnc_graph_new(fx->m, "eval");
  mlp_forward(fx, fx->m->eval, batch, in, hidden, classes, wt);
  fx->m->config.batch = batch;
  fx->m->config.optim.kind = opt;
  nnc_optim_defaults(&fx->m->config.optim, opt);
  fx->m->config.optim.weight_decay = wd;
  fx->m->config.regular.clip_norm = clip;
  char err[512];
  if (!nnc_build_training(fx->m, err, sizeof err)) fail_msg("build_training: %s", err);
  nnc_simplify(fx->m->train);
  nnc_simplify(fx->m->eval);
  fx->g = fx->m->train;
}

static void build_mlp_with(fixture *fx, int batch, int in, int hidden, int classes,
                           nnc_optim_kind opt, double wd, double clip) {
  build_mlp_layout(fx, batch, in, hidden, classes, opt, wd, clip, false);
}

static void build_mlp(fixture *fx, int batch, int in, int hidden, int classes, nnc_optim_kind opt) {
  build_mlp_with(fx, batch, in, hidden, classes, opt, 0, 0);
}

static void test_mlp_adam_3_steps(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 16, 24, 32, 10, NNC_OPT_ADAM);
  fx->steps = 3;
  /* Adam normalises each gradient element: where a gradient is ~0, f32 vs
   * f64 rounding can move a weight by up to lr; elsewhere it agrees closely. */
  fx->rtol = 1e-4;
  fx->atol = 2e-4;
  fx_check(fx);
}

static void test_mlp_sgd_3_steps(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 16, 24, 32, 10, NNC_OPT_MOMENTUM);
  fx->steps = 3;
  fx->rtol = 1e-4;
  fx->atol = 1e-5;
  fx_check(fx);
}

/* 3 steps from the same start with 1, 2 and 3 threads: identical arenas. */
static void test_mlp_threads_bit_identical(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 64, 200, 96, 10, NNC_OPT_ADAM);
  fx_check_threads(fx, 3, true);
}

/* ---- examples/fashion_mlp.nn through the front end ---- */

static void test_fashion_mlp_against_interp(void **state) {
  fixture *fx = *state;
  nnc_module *m = fx_load_example(&fx->arena, "fashion_mlp.nn");
  if (!m) skip();
  fx_use_module(fx, m);
  fx->steps = 2;
  fx->rtol = 1e-3;
  fx->atol = 3e-4;
  fx_check(fx);
}

/* examples/fashion_mlp.nn compiled for 2 threads into *r; false when the
 * example is not there. */
static bool compile_fashion_mlp(fixture *fx, fx_run *r) {
  nnc_module *m = fx_load_example(&fx->arena, "fashion_mlp.nn");
  if (!m) return false;
  fx_use_module(fx, m);
  fx_compile(fx, r, 2);
  return true;
}

/* The compiled step learns: the loss on one fixed batch falls. */
static void test_fashion_mlp_learns(void **state) {
  fixture *fx = *state;
  fx_run r;
  if (!compile_fashion_mlp(fx, &r)) skip();
  fx_fill(fx, &r, NULL);
  const float *lv = (const float *)(r.arena + r.model->loss_vec_off);
  double first = 0, last = 0;
  for (int s = 1; s <= 30; s++) {
    fx_inputs(fx, &r, NULL, 1); /* the same batch every step */
    float step = (float)s;
    memcpy(r.arena + r.model->step_off, &step, sizeof step);
    r.model->train_step(r.arena, r.pool);
    double loss = 0;
    for (int64_t i = 0; i < r.model->batch; i++)
      loss += lv[i];
    loss /= (double)r.model->batch;
    if (s == 1) first = loss;
    last = loss;
  }
  assert_true(isfinite(last));
  assert_true(last < 0.2 * first);
  r.model->eval_step(r.arena, r.pool);
  fx_release(&r);
}

/* ---- kernels shared by the train and eval steps (plan.c) ---- */

/* NNC_DUMP_KERNELS's text of prog (the caller frees it). The text goes
 * through a file rather than open_memstream, whose pointer into a local
 * GCC's -O2 -Wdangling-pointer cannot follow once this is inlined. */
static char *kernel_dump(const nnc_cg_program *prog) {
  FILE *f = tmpfile();
  assert_non_null(f);
  nnc_cg_dump_kernels(prog, f);
  long len = ftell(f);
  assert_true(len >= 0);
  char *text = malloc((size_t)len + 1);
  assert_non_null(text);
  rewind(f);
  assert_int_equal(fread(text, 1, (size_t)len, f), (size_t)len);
  text[len] = 0;
  fclose(f);
  return text;
}

/* Occurrences of `what` in the dump of prog's kernels. */
static int in_kernel_dump(const nnc_cg_program *prog, const char *what) {
  char *text = kernel_dump(prog);
  int n = 0;
  for (const char *p = text; (p = strstr(p, what)); p++)
    n++;
  free(text);
  return n;
}

/* Kernels of the eval step that call a train kernel's code. */
static int shared_kernels(const nnc_cg_program *prog) {
  return in_kernel_dump(prog, "same code as train.");
}

/* Trains fx's module for fx->steps steps, then runs the compiled eval step
 * on a new batch and compares its outputs with the interpreter's eval
 * graph started from the trained tensors: an eval kernel that shares a
 * train kernel's code reads and writes the eval step's buffers only if
 * plan.c placed them at the train buffers' offsets. Returns how many eval
 * kernels were shared. */
static int check_eval_after_training(fixture *fx, nnc_module *m) {
  fx_use_module(fx, m);
  fx->steps = 2;
  fx->rtol = 1e-3;
  fx->atol = 3e-4;
  fx_run r;
  fx_compile(fx, &r, fx->threads);
  fx_fill(fx, &r, NULL);
  for (int s = 1; s <= fx->steps; s++) {
    fx_inputs(fx, &r, NULL, s);
    r.model->train_step(r.arena, r.pool);
  }
  fx->g = m->eval;
  nnc_interp *in = nnc_interp_new(m->eval);
  assert_non_null(in);
  for (int t = 0; t < m->ntensors; t++) {
    double *v = nnc_interp_tensor(in, t);
    for (int64_t i = 0; i < nnc_shape_numel(&m->tensors[t].shape); i++)
      v[i] = get(r.arena, r.model->tensors[t].offset, m->tensors[t].dtype, i);
  }
  fx_inputs(fx, &r, in, fx->steps + 1);
  r.model->eval_step(r.arena, r.pool);
  nnc_interp_run(in);
  fx_compare(fx, &r, in, fx->steps + 1);
  nnc_interp_free(in);
  fx->g = m->train;
  int shared = shared_kernels(r.prog);
  fx_release(&r);
  return shared;
}

static void test_fashion_mlp_eval_shares_train_kernels(void **state) {
  fixture *fx = *state;
  nnc_module *m = fx_load_example(&fx->arena, "fashion_mlp.nn");
  if (!m) skip();
  /* the three products, the loss and the metrics (11 on 2026-12-06) */
  assert_true(check_eval_after_training(fx, m) >= 10);
}

/* The position in the train step of the first kernel whose name holds
 * `what` (the dump's "kernel train.kN.NAME ..."), -1 when absent; into
 * prev (size n) the name of the kernel before it ("" when first). */
static int train_kernel_before(const nnc_cg_program *prog, const char *what, char *prev, size_t n) {
  char *text = kernel_dump(prog);
  int at = -1, i = 0;
  prev[0] = 0;
  for (char *line = strstr(text, "kernel train."); line; line = strstr(line + 1, "kernel train.")) {
    char name[128];
    size_t l = strcspn(line + 7, " \n"); /* the name, after "kernel " */
    snprintf(name, sizeof name, "%.*s", (int)l, line + 7);
    if (strstr(name, what)) {
      at = i;
      break;
    }
    snprintf(prev, n, "%s", name);
    i++;
  }
  free(text);
  return at;
}

/* Each weight's update pass runs right after the product of its gradient
 * (lower_update.c, hoist_passes), while the gradient is in the cache:
 * dense2's before dense1's gradient is even computed, and the bias
 * corrections' scalar kernels at the start. The step's bits are checked
 * against the interpreter by test_fashion_mlp_against_interp. */
static void test_fashion_mlp_updates_after_their_products(void **state) {
  fixture *fx = *state;
  fx_run r;
  if (!compile_fashion_mlp(fx, &r)) skip();
  char prev[128];
  int w2 = train_kernel_before(r.prog, "update.adam.m.mlp.dense2.weight", prev, sizeof prev);
  assert_true(w2 > 0);
  assert_non_null(strstr(prev, ".matmul"));
  int w1 = train_kernel_before(r.prog, "update.adam.m.mlp.dense1.weight", prev, sizeof prev);
  assert_non_null(strstr(prev, ".matmul"));
  assert_true(w2 < w1);
  int w3 = train_kernel_before(r.prog, "update.adam.m.mlp.dense3.weight", prev, sizeof prev);
  assert_non_null(strstr(prev, ".matmul"));
  assert_true(w3 < w2);
  /* the step's scalars (Adam's bias corrections from the step count) */
  assert_true(train_kernel_before(r.prog, ".cast", prev, sizeof prev) < 4);
  fx_release(&r);
}

/* Conv, batch norm, pooling and dropout: the eval graph differs from the
 * train graph's forward pass in places (batch norm's running statistics,
 * pooling without the argmax), so its buffers are renamed partly. */
static const char small_cnn[] =
    "data d = idx(\"fashion-mnist\") { scale = 1/255 }\n"
    "model cnn(x: f32[1, 28, 28]) -> f32[10] {\n"
    "  h = maxpool(relu(batchnorm(conv2d(x, 4, kernel = 3, padding = 1))), 2)\n"
    "  h = maxpool(relu(batchnorm(conv2d(h, 8, kernel = 3, padding = 1))), 2)\n"
    "  h = relu(dense(dropout(flatten(h), 0.25), 16))\n"
    "  return dense(h, 10)\n"
    "}\n"
    "train { model = cnn  data = d.train  validate = d.test  loss = cross_entropy\n"
    "        optimizer = adam(lr = 1e-3)  batch = 8  epochs = 1 }\n";

static void test_small_cnn_eval_shares_train_kernels(void **state) {
  fixture *fx = *state;
  nnc_module *m = fx_compile_source(&fx->arena, "small_cnn.nn", small_cnn, sizeof small_cnn - 1);
  assert_non_null(m);
  /* the convolutions' im2col and products, the dense layers, the loss */
  assert_true(check_eval_after_training(fx, m) >= 10);
}

/* The small CNN compiled under the environment's settings (name=value,
 * or NULL), 2 train steps and an eval step from the same start: the arena
 * (malloc'd) and the cold functions the parts' timing lines count. */
static char *cold_split_run(fixture *fx, const char *split, const char *gemm_work, int *cold,
                            size_t *bytes) {
  setenv("NNC_SPLIT_COLD", split, 1);
  if (gemm_work)
    setenv("NNC_COLD_GEMM_WORK", gemm_work, 1);
  else
    unsetenv("NNC_COLD_GEMM_WORK");
  fx->timing = tmpfile();
  assert_non_null(fx->timing);
  char *arena = fx_arena_after(fx, 2, 2, true, bytes);
  unsetenv("NNC_SPLIT_COLD");
  unsetenv("NNC_COLD_GEMM_WORK");
  rewind(fx->timing);
  char line[512];
  int parts = 0;
  *cold = 0;
  while (fgets(line, sizeof line, fx->timing)) {
    const char *at = strstr(line, "cold code");
    int n;
    if (!strstr(line, "codegen: part ")) continue;
    parts++;
    assert_non_null(at);
    assert_int_equal(sscanf(strchr(at, '(') ? strchr(at, '(') : "", "(%d functions)", &n), 1);
    *cold += n;
  }
  assert_int_equal(parts, NNC_CG_PARTS);
  fclose(fx->timing);
  fx->timing = NULL;
  return arena;
}

/* Cold functions go to an object of their own per part, compiled at -O0
 * (compile.c, split_cold), and with NNC_COLD_GEMM_WORK=262144 products
 * under 262,144 FLOPs per step are cold (llvm.c, COLD_GEMM_WORK): here dense 1's forward, input and
 * weight gradients (8x392 by 392x16: 100,352 FLOPs each). The arena after two steps and an
 * evaluation is the same, bit for bit, in the three ways. */
static void test_small_cnn_cold_code_split(void **state) {
  fixture *fx = *state;
  nnc_module *m = fx_compile_source(&fx->arena, "small_cnn.nn", small_cnn, sizeof small_cnn - 1);
  assert_non_null(m);
  fx_use_module(fx, m);
  size_t bytes[3];
  int cold[3];
  char *unsplit = cold_split_run(fx, "0", "16384", &cold[0], &bytes[0]);
  char *split = cold_split_run(fx, "1", "16384", &cold[1], &bytes[1]);
  char *tiny = cold_split_run(fx, "1", "262144", &cold[2], &bytes[2]);
  assert_int_equal(cold[0], 0); /* nothing split off */
  assert_true(cold[1] >= 20);   /* entry points, wrappers, loss, scalars */
  assert_int_equal(cold[2], cold[1] + 3);
  assert_true(bytes[0] == bytes[1] && bytes[1] == bytes[2]);
  assert_memory_equal(unsplit, split, bytes[0]);
  assert_memory_equal(unsplit, tiny, bytes[0]);
  free(unsplit);
  free(split);
  free(tiny);
}

/* nnc -o's table (lowering and planning only) equals the JIT's, offset
 * for offset, and has no entry points. */
static void test_table_only_matches_jit(void **state) {
  fixture *fx = *state;
  nnc_module *m = fx_load_example(&fx->arena, "fashion_mlp.nn");
  if (!m) skip();
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  char err[512];
  nnc_cg_program *full, *table;
  if (!nnc_cg_compile(m, &o, &full, err, sizeof err)) fail_msg("compile: %s", err);
  if (!nnc_cg_compile_table(m, &o, &table, err, sizeof err)) fail_msg("table: %s", err);
  const nnc_rt_model *a = nnc_cg_model(full), *b = nnc_cg_model(table);
  assert_non_null(a->train_step);
  assert_null(b->train_step);
  assert_null(b->eval_step);
  assert_int_equal(a->arena_bytes, b->arena_bytes);
  int64_t offs_a[] = {a->x_off,       a->y_off,        a->step_off,   a->epoch_off,
                      a->seed_off,    a->loss_vec_off, a->lr_off,     a->correct_vec_off,
                      a->sample_size, a->batch,        a->num_classes};
  int64_t offs_b[] = {b->x_off,       b->y_off,        b->step_off,   b->epoch_off,
                      b->seed_off,    b->loss_vec_off, b->lr_off,     b->correct_vec_off,
                      b->sample_size, b->batch,        b->num_classes};
  assert_memory_equal(offs_a, offs_b, sizeof offs_a);
  assert_int_equal(a->ntensors, b->ntensors);
  assert_true(a->ntensors > 0);
  for (int i = 0; i < a->ntensors; i++) {
    assert_string_equal(a->tensors[i].name, b->tensors[i].name);
    assert_int_equal(a->tensors[i].offset, b->tensors[i].offset);
  }
  nnc_cg_free(full);
  nnc_cg_free(table);
}

/* ---- assembly ---- */

/* Writes m's code of `kind` (assembly, LLVM IR) for o's target to a
 * temporary file, opened for reading (already unlinked). */

static FILE *emit_asm(nnc_module *m, const nnc_cg_options *o) {
  return fx_emit_text(m, o, NNC_CG_ASM);
}

static void test_emit_asm_zmm_fma(void **state) {
  fixture *fx = *state;
  char *features = LLVMGetHostCPUFeatures();
  bool avx512 = strstr(features, "+avx512f") != NULL;
  LLVMDisposeMessage(features);
  if (!avx512) skip();
  build_mlp(fx, 64, 784, 256, 10, NNC_OPT_ADAM);
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  FILE *f = emit_asm(fx->m, &o);
  char line[512];
  int fma_zmm = 0;
  while (fgets(line, sizeof line, f))
    if (strstr(line, "vfmadd") && strstr(line, "zmm")) fma_zmm++;
  fclose(f);
  assert_true(fma_zmm > 0);
  /* and the IR and object forms are written too */
  char obj[] = "/tmp/nnc_test_obj_XXXXXX";
  int fd = mkstemp(obj);
  assert_true(fd >= 0);
  close(fd);
  char err[512];
  if (!nnc_cg_emit(fx->m, &o, NNC_CG_OBJ, obj, err, sizeof err)) fail_msg("emit obj: %s", err);
  if (!nnc_cg_emit(fx->m, &o, NNC_CG_LLVM, obj, err, sizeof err)) fail_msg("emit llvm: %s", err);
  remove(obj);
}

/* The kernel dump's block of the train kernel named ...what, up to the
 * next kernel (malloc'd), or NULL. */
static char *train_kernel_block(const nnc_cg_program *prog, const char *what) {
  char *text = kernel_dump(prog), *at = strstr(text, what), *block = NULL;
  if (at) {
    char *end = strstr(at, "\nkernel ");
    size_t n = end ? (size_t)(end - at) : strlen(at);
    block = malloc(n + 1);
    assert_non_null(block);
    memcpy(block, at, n);
    block[n] = 0;
  }
  free(text);
  return block;
}

/* dense2's weight is read by dy2.W2 split over W2's columns, so half the
 * rows each core's share of its Adam pass writes were read by the other
 * core: the pass prefetches them for writing, one 1 KB row (16 lines)
 * ahead (lower_update.c, mark_shared_writes; llvm.c, prefetch_rows).
 * dense1's weight is read only by x.W1^T, split over W1's rows, and m and
 * v only by the pass: none of theirs. */
static void test_fashion_mlp_prefetches_shared_weights(void **state) {
  fixture *fx = *state;
  fx_run r;
  if (!compile_fashion_mlp(fx, &r)) skip();
  char *w2 = train_kernel_block(r.prog, "update.adam.m.mlp.dense2.weight (split)");
  char *w1 = train_kernel_block(r.prog, "update.adam.m.mlp.dense1.weight (split)");
  assert_non_null(w2);
  assert_non_null(w1);
  const char *pf = strstr(w2, "prefetches for writing b");
  assert_non_null(pf);
  size_t len = strcspn(pf, "\n"), tail = strlen(" mlp.dense2.weight");
  assert_true(len > tail);
  assert_memory_equal(pf + len - tail, " mlp.dense2.weight", tail); /* not m's or v's */
  assert_null(strstr(pf + 1, "prefetches"));
  assert_null(strstr(w1, "prefetches"));
  free(w2);
  free(w1);
  fx_release(&r);
  /* in the pass's function: 16 prefetches for writing (rw 1, to L1) */
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  FILE *f = fx_emit_text(fx->m, &o, NNC_CG_LLVM);
  char line[512];
  int in_w2 = 0, in_w1 = 0, n_w2 = 0, n_w1 = 0;
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "define", 6)) {
      in_w2 = strstr(line, "update.adam.m.mlp.dense2.weight") != NULL;
      in_w1 = strstr(line, "update.adam.m.mlp.dense1.weight") != NULL;
    }
    bool pw = strstr(line, "call void @llvm.prefetch") && strstr(line, "i32 1, i32 3, i32 1)");
    n_w2 += in_w2 && pw;
    n_w1 += in_w1 && pw;
  }
  fclose(f);
  assert_int_equal(n_w2, 16);
  assert_int_equal(n_w1, 0);
}

/* With NNC_K_SPLIT=1, dh1 = dh2.W2 is split over W2's rows (K), the rows
 * each core's dense2 kernels own (lower_matmul.c, k_split_parts): two
 * partial products, 64x256 from K = 128 each, then the kernel adding them
 * with the ReLU mask, split over dh1's columns as dW1 = dh1ᵀ.x reads
 * them, and dense2's Adam pass after it; no core reads W2's rows the
 * other wrote, so the pass prefetches nothing. */
static void test_fashion_mlp_k_split(void **state) {
  fixture *fx = *state;
  fx_run r;
  setenv("NNC_K_SPLIT", "1", 1);
  bool compiled = compile_fashion_mlp(fx, &r);
  unsetenv("NNC_K_SPLIT");
  if (!compiled) skip();
  char *text = kernel_dump(r.prog);
  const char *gemm = "gemm M=64 N=256 K=128 ta=0 tb=0 bias=0 act=0 kparts\n";
  char *at = strstr(text, gemm), *head = at;
  assert_non_null(at);
  assert_null(strstr(at + strlen(gemm), " kparts"));
  while (head > text && strncmp(head, "\nkernel ", 8))
    head--;
  assert_non_null(strstr(head, ".matmul_relu_mask (split) extent 2 "));
  assert_true(strstr(head, ".matmul_relu_mask (split) extent 2 ") < at);
  char *sum = strstr(at, "\nkernel ");
  assert_non_null(sum);
  assert_non_null(strstr(sum, ".part_sum_relu_mask (split) extent 2 "));
  assert_true(strstr(sum, ".part_sum_relu_mask") < strchr(sum + 1, '\n'));
  free(text);
  char *w2 = train_kernel_block(r.prog, "update.adam.m.mlp.dense2.weight (split)");
  assert_non_null(w2);
  assert_null(strstr(w2, "prefetches"));
  free(w2);
  char prev[128];
  train_kernel_before(r.prog, "update.adam.m.mlp.dense2.weight", prev, sizeof prev);
  assert_non_null(strstr(prev, ".part_sum_relu_mask"));
  fx_release(&r);
}

/* Code for a CPU without FMA or AVX (x86-64 with SSE2 only): the products
 * multiply and add instead of calling fmaf per lane (llvm.fma), and the
 * step still matches the interpreter. (Runs on any x86-64 host.) */
static void test_sse2_target(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 64, 200, 96, 10, NNC_OPT_ADAM);
  fx->cpu = "x86-64";
  fx->features = "+sse2";
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  o.cpu = fx->cpu;
  o.features = fx->features;
  FILE *f = emit_asm(fx->m, &o);
  char line[512];
  int calls_fma = 0, packed_mul = 0;
  while (fgets(line, sizeof line, f)) {
    if (strstr(line, "call") && strstr(line, "fma")) calls_fma++;
    if (strstr(line, "mulps")) packed_mul++;
    if (strstr(line, "ymm") || strstr(line, "zmm") || strstr(line, "vfmadd"))
      fail_msg("SSE2 code uses AVX or FMA: %s", line);
  }
  fclose(f);
  assert_int_equal(calls_fma, 0);
  assert_true(packed_mul > 0);
  fx->steps = 2;
  fx_check(fx);
}

/* ---- update passes fused into their gradients' products ----
 * (lower_update.c): the same bits as the passes on their own, which the
 * data-parallel step runs after summing the gradients. */

/* fx's persistent tensors, one after the other, after 3 steps compiled
 * with the fusion that the variable env turns on fused (where it can be)
 * or not, on `threads` threads; *fused: how often `what` is in the kernel
 * dump (by default, the products that have a pass fused in). */
static char *tensors_fused_by(fixture *fx, const char *env, const char *what, bool fuse,
                              int threads, size_t *bytes, int *fused) {
  setenv(env, fuse ? "1" : "0", 1);
  fx_run r;
  fx_compile(fx, &r, threads);
  unsetenv(env);
  *fused = in_kernel_dump(r.prog, what);
  fx_fill(fx, &r, NULL);
  for (int s = 1; s <= 3; s++) {
    fx_inputs(fx, &r, NULL, s);
    r.model->train_step(r.arena, r.pool);
  }
  size_t n = 0, size[FX_MAX_TENSORS];
  assert_true(r.model->ntensors <= FX_MAX_TENSORS);
  for (int t = 0; t < r.model->ntensors; t++) {
    const nnc_rt_tensor *ts = &r.model->tensors[t];
    size[t] = 4;
    for (int d = 0; d < ts->rank; d++)
      size[t] *= (size_t)ts->shape[d];
    n += size[t];
  }
  char *out = malloc(n + 1), *at = out;
  assert_non_null(out);
  for (int t = 0; t < r.model->ntensors; t++) {
    memcpy(at, r.arena + r.model->tensors[t].offset, size[t]);
    at += size[t];
  }
  *bytes = n;
  fx_release(&r);
  return out;
}

static char *tensors_after_steps(fixture *fx, bool fuse, int threads, size_t *bytes, int *fused) {
  return tensors_fused_by(fx, "NNC_FUSE_UPDATES", "\n  fused train.", fuse, threads, bytes, fused);
}

/* got and ref (n bytes of floats) are the same bits. */
static void assert_same_floats(const char *got, const char *ref, size_t n, int threads) {
  for (size_t i = 0; i < n; i += 4)
    if (memcmp(got + i, ref + i, 4)) {
      float a, b;
      memcpy(&a, got + i, 4);
      memcpy(&b, ref + i, 4);
      fail_msg("%d threads: float %zu of the tensors is %.9g fused, %.9g not", threads, i / 4, a,
               b);
    }
}

/* Fused on 1, 2 and 3 threads: `expect` products take their update pass,
 * and every tensor is bit for bit what the unfused step gives. */
static void check_fused(fixture *fx, int expect) {
  size_t n0, n;
  int fused;
  char *ref = tensors_after_steps(fx, false, 1, &n0, &fused);
  assert_int_equal(fused, 0);
  for (int threads = 1; threads <= 3; threads++) {
    char *got = tensors_after_steps(fx, true, threads, &n, &fused);
    assert_int_equal(fused, expect);
    assert_int_equal(n, n0);
    assert_same_floats(got, ref, n, threads);
    free(got);
  }
  free(ref);
}

/* Odd shapes: w1's gradient 61x45 (two full vectors and a masked one per
 * row), w2's 45x37, K = the batch of 12; each pass has enough work to be
 * fused (NNC_COLD_WORK). */
static void test_fused_adam(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 12, 61, 45, 37, NNC_OPT_ADAM);
  check_fused(fx, 2);
}

/* K in 4 chunks of 3 added as a tree (ir/chunk.c), as `nnc run` compiles. */
static void test_fused_adam_chunked(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 12, 61, 45, 37, NNC_OPT_ADAM);
  nnc_chunk_batch_sums(fx->m->train, 4);
  check_fused(fx, 2);
}

/* Chunks of 1,100 (a batch of 4,400): w1's and w2's gradients are cut
 * into K blocks per chunk, the update runs after the tree (gemm.c). */
static void test_fused_adam_chunk_blocks(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 4400, 61, 45, 37, NNC_OPT_ADAM);
  nnc_chunk_batch_sums(fx->m->train, 4);
  check_fused(fx, 2);
}

static void test_fused_adamw(void **state) {
  fixture *fx = *state;
  build_mlp_with(fx, 12, 61, 45, 37, NNC_OPT_ADAMW, 0.01, 0);
  check_fused(fx, 2);
}

static void test_fused_sgd_momentum_nesterov(void **state) {
  fixture *fx = *state;
  build_mlp_with(fx, 12, 61, 45, 37, NNC_OPT_NESTEROV, 1e-3, 0);
  check_fused(fx, 2);
}

static void test_fused_rmsprop(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 20, 61, 45, 37, NNC_OPT_RMSPROP);
  check_fused(fx, 2);
}

static void test_fused_adagrad(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 20, 61, 45, 37, NNC_OPT_ADAGRAD);
  check_fused(fx, 2);
}

/* Clipping by the global norm reads every gradient before any update:
 * nothing fuses, and the unfused step runs. */
static void test_clip_norm_not_fused(void **state) {
  fixture *fx = *state;
  build_mlp_with(fx, 12, 61, 45, 37, NNC_OPT_ADAM, 0, 0.5);
  check_fused(fx, 0);
}

/* ---- ReLU's backward select in the product before it (lower_fuse.c) ---- */

/* The MLP's hidden gradient dz.W2^T (12x45 from K = 37) computes [h > 0]
 * as its tiles are stored: one matmul_relu_mask kernel and no select
 * kernel, and after 3 steps on 1, 2 and 3 threads every tensor is bit for
 * bit what the select's own kernel gives (NNC_FUSE_MASKS=0). The pre-
 * activations are drawn so that some are exactly zero after the ReLU. */
static void check_masks_fused(fixture *fx) {
  size_t n0, n;
  int masked, selects;
  const char *env = "NNC_FUSE_MASKS";
  char *ref = tensors_fused_by(fx, env, ".matmul_relu_mask (", false, 1, &n0, &masked);
  free(tensors_fused_by(fx, env, ".select (", false, 1, &n, &selects));
  assert_int_equal(masked, 0);
  assert_int_equal(selects, 1);
  for (int threads = 1; threads <= 3; threads++) {
    char *got = tensors_fused_by(fx, env, ".matmul_relu_mask (", true, threads, &n, &masked);
    assert_int_equal(masked, 1);
    assert_int_equal(n, n0);
    assert_same_floats(got, ref, n, threads);
    free(got);
  }
  free(tensors_fused_by(fx, env, ".select (", true, 1, &n, &selects));
  assert_int_equal(selects, 0);
  free(ref);
}

static void test_relu_mask_fused(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 12, 61, 45, 37, NNC_OPT_ADAM);
  check_masks_fused(fx);
}

/* The same with the update passes fused too and K in chunks. */
static void test_relu_mask_fused_with_updates(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 12, 61, 45, 37, NNC_OPT_ADAM);
  nnc_chunk_batch_sums(fx->m->train, 4);
  setenv("NNC_FUSE_UPDATES", "1", 1);
  check_masks_fused(fx);
  unsetenv("NNC_FUSE_UPDATES");
}

/* ---- input gradients split over K (lower_matmul.c, k_split_parts) ---- */

/* The MLP with its weights stored [out, in] (x.W^T, as the front end's
 * dense layers): the hidden gradient dz.W2 (16x96, K = 128 classes) is
 * split over W2's rows into two partial products, which the next kernel
 * adds with the ReLU mask. */
static void build_k_split_mlp(fixture *fx) {
  build_mlp_layout(fx, 16, 40, 96, 128, NNC_OPT_ADAM, 0, 0, true);
}

/* 3 steps of the K-split step against the interpreter (f64, one sum over
 * K): the partial products and their sum are the plain product. */
static void test_k_split_against_interp(void **state) {
  fixture *fx = *state;
  build_k_split_mlp(fx);
  fx->steps = 3;
  fx->rtol = 1e-4;
  fx->atol = 2e-4;
  setenv("NNC_K_SPLIT", "1", 1);
  fx_check(fx);
  unsetenv("NNC_K_SPLIT");
}

/* One K-split product and one sum kernel with NNC_K_SPLIT=1 (none with
 * 0, the default); the same bits on 1, 2 and 3 threads (the parts do not depend on them), and
 * within rounding of the column split's. */
static void test_k_split_threads(void **state) {
  fixture *fx = *state;
  build_k_split_mlp(fx);
  size_t n0, n;
  int parts, sums;
  const char *env = "NNC_K_SPLIT";
  char *plain = tensors_fused_by(fx, env, " kparts", false, 1, &n0, &parts);
  assert_int_equal(parts, 0);
  free(tensors_fused_by(fx, env, ".part_sum_relu_mask (", false, 1, &n, &sums));
  assert_int_equal(sums, 0);
  char *ref = NULL;
  for (int threads = 1; threads <= 3; threads++) {
    char *got = tensors_fused_by(fx, env, " kparts", true, threads, &n, &parts);
    assert_int_equal(parts, 1);
    assert_int_equal(n, n0);
    if (ref) {
      assert_same_floats(got, ref, n, threads);
      free(got);
    } else {
      ref = got;
    }
  }
  free(tensors_fused_by(fx, env, ".part_sum_relu_mask (", true, 2, &n, &sums));
  assert_int_equal(sums, 1);
  for (size_t i = 0; i < n; i += 4) {
    float a, b;
    memcpy(&a, ref + i, 4);
    memcpy(&b, plain + i, 4);
    if (!near(a, b, 1e-4, 1e-5)) fail_msg("float %zu: %.9g K-split, %.9g not", i / 4, a, b);
  }
  free(ref);
  free(plain);
}

/* ---- the kernel profile (NNC_PROFILE=1, profile.c) ---- */

/* The profile of r's train step as nnc_cg_profile_print writes it. */
static char *profile_text(fx_run *r) {
  char *text = NULL;
  size_t size = 0;
  FILE *f = open_memstream(&text, &size);
  assert_non_null(f);
  nnc_cg_profile_print(r->prog, f);
  fclose(f);
  return text;
}

/* The microseconds of the train graph's rows ("us/call" × "calls"), summed;
 * *calls: their calls; *rows: how many. */
static double profile_rows(const char *text, long long *calls, int *rows) {
  double us_all = 0;
  *calls = 0;
  *rows = 0;
  const char *line = strstr(text, "\n") + 1; /* after "profile train: ..." */
  line = strstr(line, "\n") + 1;             /* after the column heads */
  while (*line == ' ') {
    double t, pct, us;
    long long n;
    assert_int_equal(sscanf(line, "%lf %lf %lf %lld", &t, &pct, &us, &n), 4);
    us_all += us * (double)n;
    *calls += n;
    ++*rows;
    line = strchr(line, '\n') + 1;
  }
  return us_all;
}

/* One step: its kernels' calls and times as they are. After more, the
 * rows count the steps after the first, and the header prints the first
 * step's total apart (the first touches of memory: zeroed pages). */
static void test_profile_first_step_apart(void **state) {
  fixture *fx = *state;
  build_mlp(fx, 12, 61, 45, 37, NNC_OPT_ADAM);
  fx->profile = true;
  fx_run r;
  fx_compile(fx, &r, 2);
  fx_fill(fx, &r, NULL);
  fx_inputs(fx, &r, NULL, 1);
  r.model->train_step(r.arena, r.pool);
  char *one = profile_text(&r);
  int kernels, rows;
  long long calls;
  assert_int_equal(sscanf(one, "profile train: 1 step, %d kernels,", &kernels), 1);
  profile_rows(one, &calls, &rows);
  assert_true(kernels > 10);
  assert_int_equal(rows, kernels);
  assert_int_equal(calls, kernels); /* each kernel once */
  for (int s = 2; s <= 4; s++) {
    fx_inputs(fx, &r, NULL, s);
    r.model->train_step(r.arena, r.pool);
  }
  char *four = profile_text(&r);
  int k4;
  double per_step, all, first;
  assert_int_equal(sscanf(four,
                          "profile train: 4 steps, %d kernels, %lf us per step in kernels "
                          "after the first (%lf ms in all; the first step %lf ms)",
                          &k4, &per_step, &all, &first),
                   4);
  assert_int_equal(k4, kernels);
  double us = profile_rows(four, &calls, &rows);
  assert_int_equal(rows, kernels);
  assert_int_equal(calls, 3LL * kernels); /* steps 2 to 4 */
  assert_true(first > 0 && per_step > 0 && all >= 0);
  /* the rows' us/call to 0.01 us, the header's us per step to 0.1 */
  assert_true(fabs(us - 3 * per_step) <= 0.005 * (double)calls + 0.15);
  free(one);
  free(four);
  fx->profile = false;
  fx_release(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_mlp_adam_3_steps),
      T(test_mlp_sgd_3_steps),
      T(test_mlp_threads_bit_identical),
      T(test_fashion_mlp_against_interp),
      T(test_fashion_mlp_eval_shares_train_kernels),
      T(test_fashion_mlp_updates_after_their_products),
      T(test_fashion_mlp_prefetches_shared_weights),
      T(test_fashion_mlp_k_split),
      T(test_small_cnn_eval_shares_train_kernels),
      T(test_small_cnn_cold_code_split),
      T(test_fashion_mlp_learns),
      T(test_table_only_matches_jit),
      T(test_emit_asm_zmm_fma),
      T(test_sse2_target),
      T(test_fused_adam),
      T(test_fused_adam_chunked),
      T(test_fused_adam_chunk_blocks),
      T(test_fused_adamw),
      T(test_fused_sgd_momentum_nesterov),
      T(test_fused_rmsprop),
      T(test_fused_adagrad),
      T(test_clip_norm_not_fused),
      T(test_relu_mask_fused),
      T(test_relu_mask_fused_with_updates),
      T(test_k_split_against_interp),
      T(test_k_split_threads),
      T(test_profile_first_step_apart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
