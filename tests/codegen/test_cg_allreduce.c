/* test_cg_allreduce.c: the allreduce op lowered to a call of the runtime's
 * hook (codegen/lower.c, llvm.c; nnc_rt_allreduce_hook at the model's
 * comm_off).
 *
 * A batch-norm-like step: the batch's mean and variance per feature of
 * x [rows, F] (sums over the batch, with the global batch's 1/B), stored
 * into buffers, and a per-sample value from them. Built at the global
 * batch B with its sums in G = 2 chunks (nnc_chunk_batch_sums, the
 * ordinary step), and at B/2 rows synchronised (nnc_sync_batch_sums: an
 * allreduce after each sum), as the pipeline builds a rank step. The rank
 * step runs compiled on two threads, each its half of the batch in its own
 * arena, its hook adding the two ranks' values (rank 0's + rank 1's, the
 * top of the tree): both ranks' buffers are the global step's bit for
 * bit, and the hook is called once per sum. With no hook (fn NULL) the
 * step runs alone on its rows: its mean is its half's. Fails on the parent
 * commit, where allreduce was lowered as the identity.
 */
#define _POSIX_C_SOURCE 200809L
#include "cg_test.h"

#include <pthread.h>

enum { B = 32, F = 24, G = 2 };

typedef struct step {
  nnc_module *m;
  int mean, var, out; /* buffers */
} step;

static int buffer(nnc_module *m, const char *name, const nnc_shape *shape) {
  nnc_init zeros = {NNC_INIT_ZEROS, 0, 0, 0, 0};
  return nnc_module_add_tensor(m, name, NNC_ROLE_BUFFER, NNC_F32, shape, zeros,
                               (nnc_span){0, 0, 0});
}

static step build(nnc_arena *a, int64_t rows, bool sync) {
  step s;
  s.m = nnc_module_new(a, "sync");
  nnc_graph *g = s.m->train = nnc_graph_new(s.m, "train");
  nnc_shape xs = {2, {rows, F}}, fs = {2, {1, F}};
  nnc_node *x = nnc_ir_input(g, NNC_IN_X, NNC_F32, &xs);
  s.mean = buffer(s.m, "mean", &fs);
  s.var = buffer(s.m, "var", &fs);
  s.out = buffer(s.m, "out", &xs);
  nnc_node *inv = nnc_ir_const(g, NNC_F32, 1.0 / B); /* the global batch's */
  nnc_node *mean = nnc_ir_binary(g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, x, 1u), inv);
  nnc_node *d = nnc_ir_binary(g, NNC_OP_SUB, x, mean);
  nnc_node *var = nnc_ir_binary(
      g, NNC_OP_MUL, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, d, d), 1u), inv);
  nnc_node *out = nnc_ir_binary(g, NNC_OP_MUL, d, nnc_ir_unary(g, NNC_OP_RSQRT, var));
  nnc_graph_add_update(g, s.mean, mean);
  nnc_graph_add_update(g, s.var, var);
  nnc_graph_add_update(g, s.out, out);
  nnc_simplify(g);
  if (sync) assert_int_equal(nnc_sync_batch_sums(g, 1), 2);
  nnc_chunk_batch_sums(g, sync ? G / 2 : G);
  return s;
}

static void compile(const step *s, fx_run *r) {
  fixture fx;
  memset(&fx, 0, sizeof fx);
  fx.m = s->m;
  fx.g = s->m->train;
  fx_compile(&fx, r, 1);
}

static float sample(int64_t row, int f) {
  return (float)sin(0.37 * (double)row + 1.3 * f) * 3.0f + 0.5f * (float)(f % 5);
}

/* Runs s on rows [first, first + rows) of the batch. */
static void run_step(fx_run *r, int64_t first, int64_t rows) {
  float *x = (float *)(r->arena + nnc_cg_input_offset(r->prog, NNC_IN_X));
  for (int64_t i = 0; i < rows; i++)
    for (int f = 0; f < F; f++)
      x[i * F + f] = sample(first + i, f);
  r->model->train_step(r->arena, r->pool);
}

static const float *tensor(const fx_run *r, int t) {
  return (const float *)(r->arena + r->model->tensors[t].offset);
}

/* Two ranks on threads: the hook adds rank 0's and rank 1's values. */
typedef struct team {
  pthread_barrier_t bar;
  float *slot[2];
} team;

typedef struct rank {
  team *t;
  int r, calls;
  fx_run run;
} rank;

static void add_ranks(void *ctx, float *buf, int64_t n) {
  rank *me = ctx;
  team *t = me->t;
  me->calls++;
  t->slot[me->r] = buf;
  pthread_barrier_wait(&t->bar);
  float *sum = malloc(sizeof(float) * (size_t)n);
  for (int64_t i = 0; i < n; i++)
    sum[i] = t->slot[0][i] + t->slot[1][i];
  pthread_barrier_wait(&t->bar); /* both have read both */
  memcpy(buf, sum, sizeof(float) * (size_t)n);
  free(sum);
}

static void *rank_main(void *arg) {
  rank *me = arg;
  nnc_rt_allreduce_hook hook = {add_ranks, me};
  memcpy(me->run.arena + me->run.model->comm_off, &hook, sizeof hook);
  run_step(&me->run, me->r * (B / 2), B / 2);
  return NULL;
}

static void ranks_match_the_global_step(void **state) {
  nnc_arena *a = *state;
  step one = build(a, B, false), half = build(a, B / 2, true);
  fx_run global;
  compile(&one, &global);
  assert_true(global.model->comm_off < 0); /* no allreduce, no hook */
  run_step(&global, 0, B);
  team t;
  pthread_barrier_init(&t.bar, NULL, 2);
  rank rk[2];
  pthread_t th[2];
  for (int r = 0; r < 2; r++) {
    rk[r] = (rank){.t = &t, .r = r};
    compile(&half, &rk[r].run);
    assert_true(rk[r].run.model->comm_off >= 0);
    assert_int_equal(pthread_create(&th[r], NULL, rank_main, &rk[r]), 0);
  }
  for (int r = 0; r < 2; r++)
    pthread_join(th[r], NULL);
  pthread_barrier_destroy(&t.bar);
  for (int r = 0; r < 2; r++) {
    assert_int_equal(rk[r].calls, 2); /* the mean's sum, the variance's */
    assert_memory_equal(tensor(&rk[r].run, half.mean), tensor(&global, one.mean),
                        sizeof(float) * F);
    assert_memory_equal(tensor(&rk[r].run, half.var), tensor(&global, one.var), sizeof(float) * F);
    assert_memory_equal(tensor(&rk[r].run, half.out), tensor(&global, one.out) + r * (B / 2) * F,
                        sizeof(float) * (B / 2) * F);
  }
  /* no hook: the rank's own sum, half of the rows' with the global 1/B */
  nnc_rt_allreduce_hook none = {NULL, NULL};
  memcpy(rk[0].run.arena + rk[0].run.model->comm_off, &none, sizeof none);
  run_step(&rk[0].run, 0, B / 2);
  for (int f = 0; f < F; f++) {
    double s = 0;
    for (int64_t i = 0; i < B / 2; i++)
      s += sample(i, f);
    assert_float_equal(tensor(&rk[0].run, half.mean)[f], s / B, 1e-5);
  }
  for (int r = 0; r < 2; r++)
    fx_release(&rk[r].run);
  fx_release(&global);
}

static int setup(void **state) {
  nnc_arena *a = calloc(1, sizeof *a);
  nnc_arena_init(a);
  *state = a;
  return 0;
}

static int teardown(void **state) {
  nnc_arena_destroy(*state);
  free(*state);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(ranks_match_the_global_step, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
