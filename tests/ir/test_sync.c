/* test_sync.c: a data-parallel step with synchronised batch statistics
 * (nnc_sync_batch_sums, ir/chunk.c; the ALLREDUCE op) against one process.
 *
 * A batch-norm step (h = x s; batch statistics of h over axes 0, 2, 3;
 * normalise, scale, shift; squared error against y, mean over the batch;
 * gradients of s, gamma, beta into GRAD tensors; a running mean updated as
 * a buffer) is built at the global batch B with G = 4 chunks, as the
 * ordinary step (nnc_chunk_batch_sums), and at B/N rows with G/N chunks and
 * the global batch's constants, synchronised, for N = 1, 2, 4. The N rank
 * graphs run in the interpreter on N threads, each on its slice of the
 * batch, ALLREDUCE adding the ranks' values as a pairwise tree. Then, bit
 * for bit (float64): every rank's running mean is the global step's; the
 * ranks' gradients and losses, added as the tree, are the global step's.
 * Without synchronisation (each rank its own statistics) they differ: the
 * comparison can fail.
 *
 * The same for rank graphs as the driver derives them: a convolutional
 * model with two batch norms compiled by the front end at B/N samples with
 * the global batch's constants (nnc_frontend_options.stat_ranks), its
 * data-parallel gradient step built (nnc_build_data_parallel: loss 1/N,
 * buffers updated in the step), synchronised and chunked, against the
 * global batch's gradient step chunked as the ordinary step is.
 */
#define _POSIX_C_SOURCE 200809L
#include "ir_test.h"

#include <pthread.h>

#include "frontend/frontend.h"

enum { C = 3, HW = 2, B = 16, G = 4, MAXN = 4 };
enum { NOUT = 3 * C + C + 1 }; /* gradients of s, gamma, beta; running mean; loss */

typedef struct bn_step {
  nnc_module *m;
  nnc_graph *g;
  int s, gamma, beta, rm, grad[3];
  int allreduces;
} bn_step;

static nnc_node *cst(nnc_graph *g, double v) {
  return nnc_ir_const(g, NNC_F64, v);
}
static nnc_node *bin(nnc_graph *g, nnc_op op, nnc_node *a, nnc_node *b) {
  return nnc_ir_binary(g, op, a, b);
}

static int tensor(nnc_module *m, const char *name, nnc_tensor_role role) {
  nnc_shape cs = {4, {1, C, 1, 1}};
  nnc_init zeros = {NNC_INIT_ZEROS, 0, 0, 0, 0};
  return nnc_module_add_tensor(m, name, role, NNC_F64, &cs, zeros, (nnc_span){0, 0, 0});
}

/* The step at `rows` samples, `chunks` micro-batches, the constants of the
 * global batch B; synchronised when sync. */
static bn_step build(nnc_arena *a, int64_t rows, int64_t chunks, bool sync) {
  bn_step S;
  S.m = nnc_module_new(a, "bn");
  nnc_graph *g = S.g = S.m->train = nnc_graph_new(S.m, "grad");
  nnc_shape xs = {4, {rows, C, HW, HW}};
  nnc_node *x = nnc_ir_input(g, NNC_IN_X, NNC_F64, &xs);
  nnc_node *y = nnc_ir_input(g, NNC_IN_Y, NNC_F64, &xs);
  S.s = tensor(S.m, "s", NNC_ROLE_PARAM);
  S.gamma = tensor(S.m, "gamma", NNC_ROLE_PARAM);
  S.beta = tensor(S.m, "beta", NNC_ROLE_PARAM);
  S.rm = tensor(S.m, "running_mean", NNC_ROLE_BUFFER);
  const char *gn[3] = {"grad.s", "grad.gamma", "grad.beta"};
  for (int i = 0; i < 3; i++)
    S.grad[i] = tensor(S.m, gn[i], NNC_ROLE_GRAD);
  nnc_node *w[3] = {nnc_ir_param(g, S.s), nnc_ir_param(g, S.gamma), nnc_ir_param(g, S.beta)};
  uint32_t axes = 1u | 4u | 8u;
  nnc_node *inv = cst(g, 1.0 / (double)(B * HW * HW)); /* the global count */
  nnc_node *h = bin(g, NNC_OP_MUL, x, w[0]);
  nnc_node *mean = bin(g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, h, axes), inv);
  nnc_node *d = bin(g, NNC_OP_SUB, h, mean);
  nnc_node *var =
      bin(g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, bin(g, NNC_OP_MUL, d, d), axes), inv);
  nnc_node *xhat =
      bin(g, NNC_OP_MUL, d, nnc_ir_unary(g, NNC_OP_RSQRT, bin(g, NNC_OP_ADD, var, cst(g, 1e-5))));
  nnc_node *out = bin(g, NNC_OP_ADD, bin(g, NNC_OP_MUL, xhat, w[1]), w[2]);
  nnc_node *e = bin(g, NNC_OP_SUB, out, y);
  nnc_node *sq = nnc_ir_reduce(g, NNC_OP_SUM, bin(g, NNC_OP_MUL, e, e), 1u | 2u | 4u | 8u);
  nnc_shape scalar = {0, {0}};
  nnc_node *loss = nnc_ir_reshape(g, bin(g, NNC_OP_MUL, sq, cst(g, 1.0 / B)), &scalar);
  g->outputs[NNC_OUT_LOSS] = loss;
  nnc_node *grads[3];
  nnc_ad_grad(g, loss, w, 3, grads);
  for (int i = 0; i < 3; i++)
    nnc_graph_add_update(g, S.grad[i], grads[i]);
  nnc_node *rm = nnc_ir_param(g, S.rm);
  nnc_graph_add_update(g, S.rm,
                       bin(g, NNC_OP_ADD, bin(g, NNC_OP_MUL, rm, cst(g, 0.9)),
                           bin(g, NNC_OP_MUL, mean, cst(g, 0.1))));
  nnc_simplify(g);
  S.allreduces = sync ? nnc_sync_batch_sums(g, chunks) : 0;
  nnc_chunk_batch_sums(g, chunks);
  assert_verified(g);
  return S;
}

/* Sample values: a function of the global row, so that every split sees
 * the same batch. */
static void fill(const bn_step *S, nnc_interp *in, int64_t first, int64_t rows) {
  double *x = nnc_interp_input(in, NNC_IN_X), *y = nnc_interp_input(in, NNC_IN_Y);
  int64_t per = C * HW * HW;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < per; i++) {
      double R = (double)(first + r);
      x[r * per + i] = sin(1.3 * R + 0.71 * (double)i) * 2.0 + 0.25 * (double)(i % C);
      y[r * per + i] = cos(0.9 * R - 0.37 * (double)i);
    }
  for (int c = 0; c < C; c++) {
    nnc_interp_tensor(in, S->s)[c] = 0.8 + 0.3 * c;
    nnc_interp_tensor(in, S->gamma)[c] = 1.1 - 0.2 * c;
    nnc_interp_tensor(in, S->beta)[c] = 0.05 * c - 0.1;
    nnc_interp_tensor(in, S->rm)[c] = 0.5 - 0.25 * c;
  }
}

/* Runs S on rows [first, first + rows); out: NOUT values (gradients,
 * running mean, loss). */
static void run(const bn_step *S, nnc_interp *in, int64_t first, int64_t rows, double *out) {
  fill(S, in, first, rows);
  nnc_interp_run(in);
  for (int i = 0; i < 3; i++)
    memcpy(out + i * C, nnc_interp_tensor(in, S->grad[i]), sizeof(double) * C);
  memcpy(out + 3 * C, nnc_interp_tensor(in, S->rm), sizeof(double) * C);
  out[4 * C] = nnc_interp_value(in, S->g->outputs[NNC_OUT_LOSS])[0];
}

/* The ranks, played by threads; ALLREDUCE adds their values as the tree. */
typedef struct team {
  pthread_barrier_t bar;
  int n;
  double *slot[MAXN];
} team;

/* Runs a step on rows [first, first + rows) of the batch in `in`; its
 * results to out. */
typedef void (*job_fn)(const void *step, nnc_interp *in, int64_t first, int64_t rows, double *out);

typedef struct member {
  team *t;
  int rank;
  const nnc_graph *g; /* the step's graph */
  const void *step;
  job_fn job;
  double out[1024];
} member;

/* (v0 + v1) + (v2 + v3): in place over part[0..n). */
static double tree(double *part, int n) {
  for (int w = 1; w < n; w *= 2)
    for (int i = 0; i + w < n; i += 2 * w)
      part[i] += part[i + w];
  return part[0];
}

static void team_allreduce(void *ctx, double *v, int64_t n) {
  member *me = ctx;
  team *t = me->t;
  t->slot[me->rank] = v;
  pthread_barrier_wait(&t->bar);
  double *sum = malloc(sizeof(double) * (size_t)n);
  assert_non_null(sum);
  for (int64_t j = 0; j < n; j++) {
    double part[MAXN] = {0};
    for (int r = 0; r < t->n; r++)
      part[r] = t->slot[r][j];
    sum[j] = tree(part, t->n);
  }
  pthread_barrier_wait(&t->bar); /* every rank has read every v */
  memcpy(v, sum, sizeof(double) * (size_t)n);
  free(sum);
}

static void *rank_main(void *arg) {
  member *me = arg;
  nnc_interp *in = nnc_interp_new(me->g);
  nnc_interp_set_allreduce(in, team_allreduce, me);
  int64_t rows = B / me->t->n;
  me->job(me->step, in, me->rank * rows, rows, me->out);
  nnc_interp_free(in);
  return NULL;
}

/* Plays n ranks, each running job on its own thread; m[r].out their results. */
static void play(int n, const nnc_graph *g, const void *step, job_fn job, member *m) {
  team t = {.n = n};
  pthread_barrier_init(&t.bar, NULL, (unsigned)n);
  pthread_t th[MAXN];
  for (int r = 0; r < n; r++) {
    m[r] = (member){.t = &t, .rank = r, .g = g, .step = step, .job = job};
    assert_int_equal(pthread_create(&th[r], NULL, rank_main, &m[r]), 0);
  }
  for (int r = 0; r < n; r++)
    pthread_join(th[r], NULL);
  pthread_barrier_destroy(&t.bar);
}

static void bn_job(const void *step, nnc_interp *in, int64_t first, int64_t rows, double *out) {
  run(step, in, first, rows, out);
}

/* Whether output i is the same on every rank: the running mean, and a
 * gradient computed from synchronised sums (nnc_tensor.synced). */
static bool alike(const bn_step *S, int i) {
  return (i >= 3 * C && i < 4 * C) || (i < 3 * C && S->m->tensors[S->grad[i / C]].synced);
}

/* The N ranks' results combined as the runtime combines them: gradients
 * and losses added as the tree over ranks, but for those every rank holds
 * alike (checked), taken from rank 0. */
static void ranks(nnc_arena *a, int n, bool sync, double *out) {
  bn_step S = build(a, B / n, G / n, sync);
  if (sync) assert_true(S.allreduces >= 4); /* mean, variance, two backward sums */
  member m[MAXN];
  play(n, S.g, &S, bn_job, m);
  for (int i = 0; i < NOUT; i++) {
    double part[MAXN] = {0};
    for (int r = 0; r < n; r++)
      part[r] = m[r].out[i];
    out[i] = alike(&S, i) ? part[0] : tree(part, n);
    for (int r = 1; r < n && sync && alike(&S, i); r++)
      assert_memory_equal(&m[r].out[i], &m[0].out[i], sizeof(double));
  }
}

static void global(nnc_arena *a, double *out) {
  bn_step S = build(a, B, G, false);
  nnc_interp *in = nnc_interp_new(S.g);
  run(&S, in, 0, B, out);
  nnc_interp_free(in);
}

static void synchronised_ranks_match_one_process(void **state) {
  fixture *fx = *state;
  double one[NOUT], split[NOUT];
  global(&fx->arena, one);
  for (int n = 1; n <= MAXN; n *= 2) {
    ranks(&fx->arena, n, true, split);
    for (int i = 0; i < NOUT; i++)
      if (memcmp(&one[i], &split[i], sizeof(double)))
        fail_msg("N = %d, value %d: %.17g, one process %.17g", n, i, split[i], one[i]);
  }
}

/* Without the ALLREDUCEs each rank normalises with its own statistics:
 * other gradients, another running mean (so the test above can fail). */
static void unsynchronised_ranks_differ(void **state) {
  fixture *fx = *state;
  double one[NOUT], split[NOUT];
  global(&fx->arena, one);
  ranks(&fx->arena, 2, false, split);
  assert_true(memcmp(one, split, sizeof(double) * 3 * C) != 0);
  assert_true(memcmp(one + 3 * C, split + 3 * C, sizeof(double) * C) != 0);
}

/* What is synchronised: the forward statistics and the backward sums that
 * reach per-sample values; not the gradient outputs nor the loss. */
static void allreduce_only_within_the_step(void **state) {
  fixture *fx = *state;
  bn_step S = build(&fx->arena, B / 2, G / 2, true);
  for (int u = 0; u < S.g->nupdates; u++) {
    const nnc_node *v = S.g->updates[u].value;
    while (v->op == NNC_OP_RESHAPE)
      v = v->in[0];
    if (S.m->tensors[S.g->updates[u].tensor].role == NNC_ROLE_GRAD)
      assert_int_not_equal(v->op, NNC_OP_ALLREDUCE);
  }
  /* s's gradient is a sum over the batch (the runtime adds the ranks'
   * parts); gamma's and beta's come from sums the simplifier shares with
   * the backward of the statistics, or scales: synchronised */
  assert_false(S.m->tensors[S.grad[0]].synced);
  assert_true(S.m->tensors[S.grad[1]].synced);
  assert_true(S.m->tensors[S.grad[2]].synced);
  const nnc_node *l = S.g->outputs[NNC_OUT_LOSS];
  for (int i = 0; i < S.g->nnodes; i++)
    if (S.g->nodes[i]->op == NNC_OP_ALLREDUCE) assert_ptr_not_equal(S.g->nodes[i]->in[0], l);
  /* one process (no hook): ALLREDUCE is the identity, and a constant is
   * not folded through it */
  nnc_graph *g = nnc_graph_new(S.m, "fold");
  nnc_node *r = nnc_ir_unary(g, NNC_OP_ALLREDUCE, cst(g, 2.5));
  g->outputs[NNC_OUT_LOSS] = r;
  nnc_simplify(g);
  assert_int_equal(g->outputs[NNC_OUT_LOSS]->op, NNC_OP_ALLREDUCE);
  nnc_interp *in = nnc_interp_new(g);
  nnc_interp_run(in);
  assert_true(nnc_interp_value(in, g->outputs[NNC_OUT_LOSS])[0] == 2.5);
  nnc_interp_free(in);
}

/* ---- Rank graphs from the front end ---- */

static const char MODEL[] =
    "data f = idx(\"d\")\n"
    "model m(x: f32[2, 4, 4]) -> f32[3] {\n"
    "  h = relu(batchnorm(conv2d(x, 3, kernel = 3, padding = 1)))\n"
    "  return dense(batchnorm(flatten(h)), 3)\n}\n"
    "train { model = m  data = f.train  loss = cross_entropy  batch = 16 }\n";
enum { SAMPLE = 2 * 4 * 4, CLASSES = 3 };

static nnc_module *compile(nnc_arena *a, const nnc_frontend_options *o) {
  nnc_diags diags;
  nnc_diags_init(&diags, a);
  uint32_t file = nnc_diags_add_source(&diags, "rank.nn", MODEL, sizeof MODEL - 1);
  nnc_frontend_result r;
  assert_true(nnc_frontend_compile_with(a, &diags, file, o, &r));
  assert_non_null(r.module);
  return r.module;
}

/* The gradient step of n ranks' synchronised statistics (n = 0: the global
 * batch's step, unsynchronised, chunked as the ordinary step), built as
 * the pipeline builds the data-parallel step. */
static nnc_module *grad_step(nnc_arena *a, int n) {
  nnc_frontend_options o = {.batch = n ? B / n : B, .stat_ranks = n ? n : 1};
  nnc_module *m = compile(a, &o), *mm = compile(a, &o);
  m->grad = mm->train;
  m->grad->module = m;
  m->grad->name = "grad";
  m->micro_batches = G;
  char err[256] = "";
  if (!nnc_build_training(m, err, sizeof err) || !nnc_build_data_parallel(m, err, sizeof err))
    fail_msg("%s", err);
  nnc_simplify(m->grad);
  int64_t chunks = n ? G / n : G;
  if (n) assert_true(nnc_sync_batch_sums(m->grad, chunks) >= 8); /* 4 per batch norm */
  nnc_chunk_batch_sums(m->grad, chunks);
  assert_verified(m->grad);
  return m;
}

/* Runs m's grad step on rows [first, first + rows) of the batch; out: the
 * GRAD tensors, then the BUFFER tensors, in table order. */
static int run_grad(const nnc_module *m, nnc_interp *in, int64_t first, int64_t rows, double *out) {
  double *x = nnc_interp_input(in, NNC_IN_X), *y = nnc_interp_input(in, NNC_IN_Y);
  for (int64_t r = 0; r < rows; r++) {
    double R = (double)(first + r);
    for (int i = 0; i < SAMPLE; i++)
      x[r * SAMPLE + i] = sin(0.7 * R + 1.9 * i) + 0.1 * (i % 5);
    y[r] = (double)((first + r) * 7 % CLASSES);
  }
  for (int t = 0; t < m->ntensors; t++) { /* parameters and buffers, alike on every rank */
    double *v = nnc_interp_tensor(in, t);
    for (int64_t i = 0; i < nnc_shape_numel(&m->tensors[t].shape); i++)
      v[i] = 0.3 * cos(0.37 * (double)i + (double)t) + (m->tensors[t].role == NNC_ROLE_BUFFER);
  }
  nnc_interp_run(in);
  int k = 0;
  for (int pass = 0; pass < 2; pass++)
    for (int t = 0; t < m->ntensors; t++)
      if (m->tensors[t].role == (pass ? NNC_ROLE_BUFFER : NNC_ROLE_GRAD))
        for (int64_t i = 0; i < nnc_shape_numel(&m->tensors[t].shape); i++) {
          assert_true(k < 1024);
          out[k++] = nnc_interp_tensor(in, t)[i];
        }
  return k;
}

/* Whether value k of run_grad's output is the same on every rank. */
static bool alike_at(const nnc_module *m, int k) {
  for (int pass = 0; pass < 2; pass++)
    for (int t = 0; t < m->ntensors; t++)
      if (m->tensors[t].role == (pass ? NNC_ROLE_BUFFER : NNC_ROLE_GRAD)) {
        int64_t n = nnc_shape_numel(&m->tensors[t].shape);
        if (k < n) return pass || m->tensors[t].synced;
        k -= (int)n;
      }
  return false;
}

static void grad_job(const void *step, nnc_interp *in, int64_t first, int64_t rows, double *out) {
  run_grad(step, in, first, rows, out);
}

static void front_end_rank_graphs_match_one_process(void **state) {
  fixture *fx = *state;
  nnc_module *one = grad_step(&fx->arena, 0);
  double want[1024];
  nnc_interp *in = nnc_interp_new(one->grad);
  int nv = run_grad(one, in, 0, B, want);
  nnc_interp_free(in);
  for (int n = 2; n <= MAXN; n *= 2) {
    nnc_module *m = grad_step(&fx->arena, n);
    member ms[MAXN];
    play(n, m->grad, m, grad_job, ms);
    for (int k = 0; k < nv; k++) {
      double part[MAXN] = {0};
      for (int r = 0; r < n; r++)
        part[r] = ms[r].out[k];
      bool alike = alike_at(m, k);
      for (int r = 1; r < n && alike; r++)
        assert_memory_equal(&part[r], &part[0], sizeof(double));
      double got = alike ? part[0] : tree(part, n);
      if (memcmp(&got, &want[k], sizeof got))
        fail_msg("N = %d, value %d: %.17g, one process %.17g", n, k, got, want[k]);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(synchronised_ranks_match_one_process, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(unsynchronised_ranks_differ, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(allreduce_only_within_the_step, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(front_end_rank_graphs_match_one_process, fx_setup,
                                      fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
