/* batch_exchange.c: what it costs two cores to share a batch that each
 * wrote half of, as fashion_mlp's step shares its input x.
 *
 * The training loop gathers a batch into x on the pool's threads, each
 * thread its own rows; the first product then reads every row on both
 * threads (it is split over W1's rows, so each thread needs all of x), and
 * the next step's gather writes rows that both cores hold. Each step, half
 * of x (100 KB of a 64 x 784 batch) moves from one core's cache to the
 * other's and back. Timed here on the runtime's pool (2 threads), against
 * each thread writing and reading a private copy of the whole batch (twice
 * the writes, nothing shared), and against the same shared batch read by
 * its own writer only:
 *
 *   build-rel/bench/batch_exchange [STEPS]       (default 3000)
 *   BATCH_EXCHANGE shared_us=27.4 private_us=7.1 own_rows_us=...
 *
 * The difference is latency between the cores, which bench/core_pingpong
 * measures: docs/performance.md has both.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nnc_rt.h"

enum { ROWS = 64, COLS = 784, N = ROWS * COLS };

/* 16 floats (GCC's and clang's vector extension): the loops below move
 * whole cache lines, as the products' vector loads do. */
typedef float v16 __attribute__((vector_size(64)));
enum { LINES = N / 16 };

static v16 x[LINES], copy[LINES];
static v16 sums[2];
static const v16 ramp = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static void fill(v16 *d, int64_t from, int64_t to) {
  for (int64_t i = from; i < to; i++)
    d[i] = ramp + (float)(i & 1023);
}

static v16 total(const v16 *s, int64_t from, int64_t to) {
  v16 a = {0}, b = {0};
  for (int64_t i = from; i < to; i += 2) {
    a += s[i];
    b += s[i + 1];
  }
  return a + b;
}

/* Rows [begin, end) of x written. */
static void write_rows(void *arg, int64_t begin, int64_t end) {
  (void)arg;
  fill(x, begin * COLS / 16, end * COLS / 16);
}

/* Chunk 0 writes all of x, chunk 1 all of copy (n = 2). */
static void write_private(void *arg, int64_t begin, int64_t end) {
  (void)arg;
  (void)end;
  fill(begin == 0 ? x : copy, 0, LINES);
}

/* Sums all of x (or, with *arg set, chunk 1 sums copy); n = 2. */
static void read_all(void *arg, int64_t begin, int64_t end) {
  (void)end;
  sums[begin ? 1 : 0] = total(*(const int *)arg && begin ? copy : x, 0, LINES);
}

/* Sums only the rows [begin, end) the thread wrote. */
static void read_own(void *arg, int64_t begin, int64_t end) {
  (void)arg;
  sums[begin ? 1 : 0] = total(x, begin * COLS / 16, end * COLS / 16);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
  long steps = argc > 1 ? atol(argv[1]) : 3000;
  if (steps < 1) {
    fprintf(stderr, "usage: batch_exchange [STEPS]\n");
    return 2;
  }
  nnc_rt_error err;
  nnc_rt_pool *pool = nnc_rt_pool_create(2, &err);
  if (!pool) {
    fprintf(stderr, "batch_exchange: %s\n", err.msg);
    return 1;
  }
  int shared = 0, private = 1;
  double best[3] = {1e9, 1e9, 1e9};
  for (int r = 0; r < 5; r++) {
    double t0 = now();
    for (long i = 0; i < steps; i++) {
      nnc_rt_parallel(pool, write_rows, NULL, ROWS);
      nnc_rt_parallel(pool, read_all, &shared, 2);
    }
    double t1 = now();
    for (long i = 0; i < steps; i++) {
      nnc_rt_parallel(pool, write_private, NULL, 2);
      nnc_rt_parallel(pool, read_all, &private, 2);
    }
    double t2 = now();
    for (long i = 0; i < steps; i++) {
      nnc_rt_parallel(pool, write_rows, NULL, ROWS);
      nnc_rt_parallel(pool, read_own, NULL, ROWS);
    }
    double t3 = now();
    double t[3] = {t1 - t0, t2 - t1, t3 - t2};
    for (int k = 0; k < 3; k++)
      if (t[k] < best[k]) best[k] = t[k];
  }
  nnc_rt_pool_destroy(pool);
  printf("BATCH_EXCHANGE shared_us=%.1f private_us=%.1f own_rows_us=%.1f (a step: 64x784 "
         "floats written, then read; best of 5 runs of %ld; checksum %g)\n",
         1e6 * best[0] / (double)steps, 1e6 * best[1] / (double)steps,
         1e6 * best[2] / (double)steps, steps, (double)(sums[0][3] + sums[1][5]));
  return 0;
}
