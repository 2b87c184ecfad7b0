/* test_pool.c: the thread pool (pool.c). Work split over 1, 2, 3 and 8
 * threads covers every index exactly once and sums like the serial loop;
 * n = 0, n = 1 and n < threads; NULL pool; nested calls run inline; FTZ/DAZ
 * set in every thread that runs a chunk. (Per-call overhead is a benchmark, not a test.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xmmintrin.h>

#include "runtime/nnc_rt.h"

enum { MAX_N = 100000, MAX_CHUNKS = 64 };

typedef struct sum_job {
  const double *values;
  unsigned char *visits; /* times each index was visited */
  double chunk_sum[MAX_CHUNKS];
  int64_t chunk_begin[MAX_CHUNKS];
  atomic_int nchunks;
  atomic_int csr_ok;  /* chunks that ran with FTZ and DAZ set */
  atomic_int flushed; /* chunks where a denormal product became 0 */
  pthread_t threads[MAX_CHUNKS];
} sum_job;

static void sum_task(void *arg, int64_t begin, int64_t end) {
  sum_job *job = arg;
  int c = atomic_fetch_add(&job->nchunks, 1);
  assert_true(c < MAX_CHUNKS);
  double s = 0;
  for (int64_t i = begin; i < end; i++) {
    s += job->values[i];
    job->visits[i]++;
  }
  job->chunk_sum[c] = s;
  job->chunk_begin[c] = begin;
  job->threads[c] = pthread_self();
  if ((_mm_getcsr() & 0x8040) == 0x8040) atomic_fetch_add(&job->csr_ok, 1);
  volatile float tiny = 1e-39f, one = 1.0f; /* 1e-39 is denormal in f32 */
  if (tiny * one == 0.0f) atomic_fetch_add(&job->flushed, 1);
}

static double values[MAX_N];
static unsigned char visits[MAX_N];

/* Runs sum_task over n with the pool and checks coverage and the sum. */
static void check_split(nnc_rt_pool *pool, int64_t n) {
  sum_job *job = calloc(1, sizeof *job);
  job->values = values;
  job->visits = visits;
  memset(visits, 0, sizeof visits);
  nnc_rt_parallel(pool, sum_task, job, n);
  int threads = nnc_rt_pool_threads(pool), nchunks = atomic_load(&job->nchunks);
  int expect_chunks = n == 0 ? 0 : n < threads ? (int)n : threads;
  assert_int_equal(nchunks, expect_chunks);
  for (int64_t i = 0; i < n; i++)
    assert_int_equal(visits[i], 1);
  /* Chunks are contiguous, in order of begin, sizes differ by at most 1. */
  int order[MAX_CHUNKS] = {0};
  for (int c = 0; c < nchunks; c++) {
    int k = c;
    for (; k > 0 && job->chunk_begin[order[k - 1]] > job->chunk_begin[c]; k--)
      order[k] = order[k - 1];
    order[k] = c;
  }
  double serial = 0, total = 0;
  for (int64_t i = 0; i < n; i++)
    serial += values[i];
  for (int k = 0; k < nchunks; k++) {
    int c = order[k];
    int64_t end = k + 1 < nchunks ? job->chunk_begin[order[k + 1]] : n;
    int64_t size = end - job->chunk_begin[c];
    assert_true(size == n / nchunks || size == n / nchunks + 1);
    total += job->chunk_sum[c];
  }
  if (nchunks) assert_int_equal(job->chunk_begin[order[0]], 0);
  /* Integer-valued doubles: the sum is exact in any order. */
  assert_true(total == serial);
  if (pool) { /* the pool sets FTZ/DAZ on its workers and its creator */
    assert_int_equal(atomic_load(&job->csr_ok), nchunks);
    assert_int_equal(atomic_load(&job->flushed), nchunks);
  }
  /* Chunk 0 runs on the caller; the others on whichever thread claims them. */
  for (int c = 0; c < nchunks; c++)
    if (job->chunk_begin[c] == 0) assert_true(pthread_equal(job->threads[c], pthread_self()));
  free(job);
}

static void fill_values(void) {
  for (int i = 0; i < MAX_N; i++)
    values[i] = (double)((i * 7919) % 1000);
}

static void test_threads(int nthreads) {
  fill_values();
  nnc_rt_error err = {{0}};
  nnc_rt_pool *pool = nnc_rt_pool_create(nthreads, &err);
  assert_non_null(pool);
  assert_int_equal(nnc_rt_pool_threads(pool), nthreads);
  const int64_t sizes[] = {0, 1, 2, 3, 7, 8, 9, 1000, MAX_N};
  for (int rep = 0; rep < 3; rep++)
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
      check_split(pool, sizes[i]);
  nnc_rt_pool_destroy(pool);
}

static void test_1_thread(void **state) {
  test_threads(1);
}
static void test_2_threads(void **state) {
  test_threads(2);
}
static void test_3_threads(void **state) {
  test_threads(3);
}
static void test_8_threads(void **state) {
  test_threads(8);
}

static void test_null_pool(void **state) {
  fill_values();
  check_split(NULL, 0);
  check_split(NULL, 1);
  check_split(NULL, 1000);
  assert_int_equal(nnc_rt_pool_threads(NULL), 1);
  nnc_rt_pool_destroy(NULL);
}

static void test_all_cores_and_bad_count(void **state) {
  nnc_rt_error err = {{0}};
  nnc_rt_pool *pool = nnc_rt_pool_create(0, &err);
  assert_non_null(pool);
  assert_true(nnc_rt_pool_threads(pool) >= 1);
  nnc_rt_pool_destroy(pool);
  assert_null(nnc_rt_pool_create(-1, &err));
  assert_non_null(strstr(err.msg, "thread count -1"));
}

typedef struct nested_job {
  nnc_rt_pool *pool;
  atomic_long total;
} nested_job;

static void inner_task(void *arg, int64_t begin, int64_t end) {
  atomic_fetch_add(&((nested_job *)arg)->total, end - begin);
}

static void outer_task(void *arg, int64_t begin, int64_t end) {
  nested_job *job = arg;
  for (int64_t i = begin; i < end; i++)
    nnc_rt_parallel(job->pool, inner_task, job, 100);
}

static void test_nested_runs_inline(void **state) {
  nnc_rt_error err;
  nested_job job = {.pool = nnc_rt_pool_create(2, &err)};
  assert_non_null(job.pool);
  nnc_rt_parallel(job.pool, outer_task, &job, 10);
  assert_int_equal(atomic_load(&job.total), 1000);
  nnc_rt_pool_destroy(job.pool);
}

/* Chunks other than the caller's take 2 ms, so the caller falls asleep
 * waiting; between calls the workers fall asleep too. */
static void slow_task(void *arg, int64_t begin, int64_t end) {
  if (begin > 0) nanosleep(&(struct timespec){0, 2000000}, NULL);
  atomic_fetch_add((atomic_long *)arg, end - begin);
}

static void test_sleep_and_wake(void **state) {
  nnc_rt_error err;
  nnc_rt_pool *pool = nnc_rt_pool_create(2, &err);
  assert_non_null(pool);
  atomic_long done = 0;
  for (int i = 1; i <= 20; i++) {
    nnc_rt_parallel(pool, slow_task, &done, 10);
    assert_int_equal(atomic_load(&done), 10 * i); /* the worker's chunk finished too */
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  nnc_rt_pool_destroy(pool);
}

/* Many short jobs back to back, of every size around the thread count:
 * each index of each job is visited exactly once, and no chunk of one job
 * runs during the next (a late worker must not claim a chunk of a job that
 * is gone). */
typedef struct stress_job {
  atomic_int visits[32];
  atomic_int running; /* chunks of this job in flight */
  atomic_int overlap; /* chunks that saw another job's index range */
  int64_t n;
} stress_job;

static void stress_task(void *arg, int64_t begin, int64_t end) {
  stress_job *job = arg;
  atomic_fetch_add(&job->running, 1);
  if (end > job->n) atomic_fetch_add(&job->overlap, 1);
  for (int64_t i = begin; i < end; i++)
    atomic_fetch_add(&job->visits[i], 1);
  atomic_fetch_sub(&job->running, 1);
}

static void stress(int nthreads) {
  nnc_rt_error err;
  nnc_rt_pool *pool = nnc_rt_pool_create(nthreads, &err);
  assert_non_null(pool);
  stress_job *job = calloc(1, sizeof *job);
  assert_non_null(job);
  for (int it = 0; it < 20000; it++) {
    job->n = 1 + it % 31;
    for (int i = 0; i < 32; i++)
      atomic_store(&job->visits[i], 0);
    nnc_rt_parallel(pool, stress_task, job, job->n);
    assert_int_equal(atomic_load(&job->running), 0); /* every chunk finished */
    for (int i = 0; i < 32; i++)
      assert_int_equal(atomic_load(&job->visits[i]), i < job->n);
  }
  assert_int_equal(atomic_load(&job->overlap), 0);
  free(job);
  nnc_rt_pool_destroy(pool);
}

static void test_stress_2_threads(void **state) {
  stress(2);
}
static void test_stress_8_threads(void **state) {
  stress(8);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_1_thread),           cmocka_unit_test(test_2_threads),
      cmocka_unit_test(test_3_threads),          cmocka_unit_test(test_8_threads),
      cmocka_unit_test(test_null_pool),          cmocka_unit_test(test_all_cores_and_bad_count),
      cmocka_unit_test(test_nested_runs_inline), cmocka_unit_test(test_sleep_and_wake),
      cmocka_unit_test(test_stress_2_threads),   cmocka_unit_test(test_stress_8_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
