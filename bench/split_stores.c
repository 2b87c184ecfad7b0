/* split_stores.c: what two cores pay to write one small matrix between
 * them, by the way it is split. fashion_mlp's activations and their
 * gradients are 64 x 256 floats (1 KB rows); a product split over its
 * columns (x.W^T by W's rows) gives each core half of every row. Two
 * threads, pinned to CPUs 0 and 1, run steps of: barrier; each writes its
 * half of C = 2 x + step (x its own, in its cache), timed; barrier. Ways:
 *   rows      rows 0-31 / 32-63: each core's half contiguous
 *   cols      columns 0-127 / 128-255, row by row (512 B runs)
 *   panels    the same columns, 32 at a time down all the rows (the order
 *             of a product's tiles)
 *   sum_rows  C = mask > 0 ? p0 + p1 : 0 (the K split's sum of parts, p0
 *             written by core 0, p1 by core 1 before the barrier), rows
 *   sum_cols  the same by column halves, row by row
 * Wall time per step, the median of 4,000 steps, per thread. Not a test:
 * the numbers are the machine's (docs/performance.md, "Input gradients
 * split over K").
 *
 *   build-rel/bench/split_stores
 *
 * Prints SPLIT_STORES way=W thread=T median_us=U
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { M = 64, N = 256, STEPS = 4000 };
enum way { ROWS, COLS, PANELS, SUM_ROWS, SUM_COLS, NWAYS };
static const char *const names[NWAYS] = {"rows", "cols", "panels", "sum_rows", "sum_cols"};

static float *c_, *x_, *p_, *mask_;
static pthread_barrier_t bar;
static enum way way;
static double times[2][STEPS];

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void store(int i, int j, float step) {
  int at = i * N + j;
  if (way == SUM_ROWS || way == SUM_COLS) {
    float v = p_[at] + p_[M * N + at];
    c_[at] = mask_[at] > 0 ? v : 0;
  } else {
    c_[at] = x_[at] * 2 + step;
  }
}

static void *run(void *arg) {
  int t = (int)(long)arg;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(t, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  for (int s = 0; s < STEPS; s++) {
    float step = (float)s;
    for (int i = 0; i < M * N; i++) /* this core's part (the sums' ways) */
      p_[t * M * N + i] = (float)i + step;
    pthread_barrier_wait(&bar);
    double t0 = now();
    if (way == ROWS || way == SUM_ROWS) {
      for (int i = t * M / 2; i < (t + 1) * M / 2; i++)
        for (int j = 0; j < N; j++)
          store(i, j, step);
    } else if (way == PANELS) {
      for (int p = t * N / 2; p < (t + 1) * N / 2; p += 32)
        for (int i = 0; i < M; i++)
          for (int j = p; j < p + 32; j++)
            store(i, j, step);
    } else {
      for (int i = 0; i < M; i++)
        for (int j = t * N / 2; j < (t + 1) * N / 2; j++)
          store(i, j, step);
    }
    times[t][s] = now() - t0;
    pthread_barrier_wait(&bar);
  }
  return NULL;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(void) {
  c_ = aligned_alloc(64, sizeof(float) * M * N);
  x_ = aligned_alloc(64, sizeof(float) * M * N);
  p_ = aligned_alloc(64, sizeof(float) * 2 * M * N);
  mask_ = aligned_alloc(64, sizeof(float) * M * N);
  if (!c_ || !x_ || !p_ || !mask_) return 1;
  memset(c_, 0, sizeof(float) * M * N);
  for (int i = 0; i < M * N; i++) {
    x_[i] = (float)i;
    mask_[i] = (float)(i % 3);
  }
  for (way = 0; way < NWAYS; way++) {
    pthread_barrier_init(&bar, NULL, 2);
    pthread_t th[2];
    for (long t = 0; t < 2; t++)
      pthread_create(&th[t], NULL, run, (void *)t);
    for (int t = 0; t < 2; t++)
      pthread_join(th[t], NULL);
    pthread_barrier_destroy(&bar);
    for (int t = 0; t < 2; t++) {
      qsort(times[t], STEPS, sizeof(double), cmp);
      printf("SPLIT_STORES way=%s thread=%d median_us=%.2f\n", names[way], t,
             times[t][STEPS / 2] * 1e6);
    }
  }
  free(c_);
  free(x_);
  free(p_);
  free(mask_);
  return 0;
}
