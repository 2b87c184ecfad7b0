/* test_comm.c: the runtime's communication layer without MPI (comm.c): the
 * pairwise-tree sum's order, the one-process engine, and, over an engine
 * of threads in one process (each thread a rank, collectives through a
 * shared buffer and a barrier), the fixed-order all-reduce by whole vectors
 * and by slices giving the same bits as the tree sum, and the error
 * agreement naming the lowest failed rank. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/nnc_rt.h"

static void test_tree_order(void **state) {
  /* Sequentially ((1e8 + 1) - 1e8) + 1 = 1 in f32; the tree pairs first:
   * (1e8 + 1) + (-1e8 + 1) = 1e8 - 1e8 = 0. */
  float v[4] = {1e8f, 1, -1e8f, 1};
  nnc_rt_tree_sum(v, 4, 1);
  assert_true(v[0] == 0.0f);
  float w[3] = {1, 2, 4}; /* an odd count: (1 + 2) + 4 */
  nnc_rt_tree_sum(w, 3, 1);
  assert_true(w[0] == 7.0f);
}

static void test_single(void **state) {
  nnc_rt_comm c;
  nnc_rt_comm_single(&c);
  assert_int_equal(c.rank, 0);
  assert_int_equal(c.size, 1);
  nnc_rt_error err = {"kept"};
  assert_int_equal(nnc_rt_comm_agree(&c, 0, &err), 0);
  assert_int_equal(nnc_rt_comm_agree(&c, 1, &err), -1);
  assert_string_equal(err.msg, "kept");
  float v[2] = {1, 2}, scratch[8];
  assert_int_equal(nnc_rt_comm_allreduce_tree(&c, v, 2, scratch, &err), 0);
  assert_true(v[0] == 1 && v[1] == 2);
}

/* ---- An engine of threads ---- */
enum { MAX_RANKS = 4, N = 1001 };
typedef struct world {
  int size;
  pthread_barrier_t barrier;
  char *slots[MAX_RANKS]; /* each rank's send buffer during a collective */
} world;
typedef struct rank_ctx {
  world *w;
  int rank;
} rank_ctx;

static int t_allgather(void *ctx, const void *send, void *recv, size_t bytes, nnc_rt_error *err) {
  rank_ctx *r = ctx;
  r->w->slots[r->rank] = (char *)send;
  pthread_barrier_wait(&r->w->barrier);
  for (int i = 0; i < r->w->size; i++)
    memcpy((char *)recv + (size_t)i * bytes, r->w->slots[i], bytes);
  pthread_barrier_wait(&r->w->barrier);
  return 0;
}
static int t_alltoall(void *ctx, const void *send, void *recv, size_t bytes, nnc_rt_error *err) {
  rank_ctx *r = ctx;
  r->w->slots[r->rank] = (char *)send;
  pthread_barrier_wait(&r->w->barrier);
  for (int i = 0; i < r->w->size; i++)
    memcpy((char *)recv + (size_t)i * bytes, r->w->slots[i] + (size_t)r->rank * bytes, bytes);
  pthread_barrier_wait(&r->w->barrier);
  return 0;
}
static int t_barrier(void *ctx, nnc_rt_error *err) {
  pthread_barrier_wait(&((rank_ctx *)ctx)->w->barrier);
  return 0;
}

typedef struct job {
  rank_ctx ctx;
  int slices;     /* use the alltoall path */
  int fail;       /* this rank fails the agreement */
  float v[N];     /* in: this rank's vector; out: the sum */
  int agreed;     /* nnc_rt_comm_agree's result */
  char msg[1024]; /* and message */
} job;

static float value(int rank, int i) { /* values whose sum depends on the order */
  return (float)((rank * 7919 + i * 104729) % 2003) * (i % 3 ? 1e-3f : 1e5f) - 3.3f * (float)rank;
}

static void *rank_main(void *arg) {
  job *j = arg;
  nnc_rt_comm c = {.rank = j->ctx.rank,
                   .size = j->ctx.w->size,
                   .engine = "threads",
                   .ctx = &j->ctx,
                   .allgather = t_allgather,
                   .barrier = t_barrier,
                   .alltoall = j->slices ? t_alltoall : NULL};
  float *scratch = malloc(sizeof(float) * (size_t)nnc_rt_comm_scratch_floats(&c, N));
  nnc_rt_error err = {{0}};
  if (nnc_rt_comm_allreduce_tree(&c, j->v, N, scratch, &err)) j->agreed = 99;
  free(scratch);
  snprintf(err.msg, sizeof err.msg, "failure on rank %d", c.rank);
  j->agreed = nnc_rt_comm_agree(&c, j->fail, &err);
  snprintf(j->msg, sizeof j->msg, "%s", err.msg);
  return NULL;
}

static void run_world(int size, int slices, job *jobs, int failing) {
  world w = {.size = size};
  pthread_barrier_init(&w.barrier, NULL, (unsigned)size);
  pthread_t t[MAX_RANKS];
  for (int r = 0; r < size; r++) {
    jobs[r].ctx = (rank_ctx){&w, r};
    jobs[r].slices = slices;
    jobs[r].fail = r == failing || (failing == 99 && r == size - 1);
    for (int i = 0; i < N; i++)
      jobs[r].v[i] = value(r, i);
    pthread_create(&t[r], NULL, rank_main, &jobs[r]);
  }
  for (int r = 0; r < size; r++)
    pthread_join(t[r], NULL);
  pthread_barrier_destroy(&w.barrier);
}

static void test_allreduce_is_the_tree(void **state) {
  static job jobs[MAX_RANKS];
  static float expect[MAX_RANKS * N];
  for (int size = 2; size <= MAX_RANKS; size++) {
    for (int r = 0; r < size; r++)
      for (int i = 0; i < N; i++)
        expect[r * N + i] = value(r, i);
    nnc_rt_tree_sum(expect, size, N);
    for (int slices = 0; slices < 2; slices++) {
      run_world(size, slices, jobs, -1);
      for (int r = 0; r < size; r++) {
        assert_memory_equal(jobs[r].v, expect, sizeof(float) * N);
        assert_int_equal(jobs[r].agreed, 0);
      }
    }
  }
}

static void test_agree_names_the_lowest_failed_rank(void **state) {
  static job jobs[MAX_RANKS];
  run_world(4, 1, jobs, 2);
  for (int r = 0; r < 4; r++) {
    assert_int_equal(jobs[r].agreed, -1);
    assert_string_equal(jobs[r].msg, "rank 2: failure on rank 2");
  }
  run_world(2, 0, jobs, 0); /* rank 0's own message has no prefix */
  for (int r = 0; r < 2; r++)
    assert_string_equal(jobs[r].msg, "failure on rank 0");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tree_order),
      cmocka_unit_test(test_single),
      cmocka_unit_test(test_allreduce_is_the_tree),
      cmocka_unit_test(test_agree_names_the_lowest_failed_rank),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
