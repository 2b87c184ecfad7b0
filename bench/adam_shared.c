/* adam_shared.c: what a weight's Adam pass on two threads pays when the
 * other core has read half the rows it writes. fashion_mlp's dense2 weight
 * W (256 x 256) is read by h.W^T split over W's rows (each core its own
 * 128 rows) and by dy.W split over W's columns (each core half of every
 * row); its pass, split over rows, then stores into lines the other core
 * holds, and each store waits until that copy is invalidated. Two threads,
 * pinned to CPUs 0 and 1, run steps of: read own rows; (shared, prefetch
 * and sweep) read own columns of every row; stream 2 MB of their own; write
 * the gradient's own rows; barrier; the pass over own rows (the loop of
 * bench/adam_bound.c), timed. Ways:
 *   own       no column reads: the lines are the core's alone
 *   shared    as fashion_mlp runs
 *   prefetch  shared, each weight line prefetched for writing 16 lines
 *             (1 KB, one row) ahead inside the pass (what llvm.c emits)
 *   sweep     shared, all the rows' lines prefetched for writing first
 * Wall time per pass, the median of 1,900 steps, per thread. Not a test:
 * the numbers are the machine's.
 *
 *   build-rel/bench/adam_shared
 *
 * Prints ADAM_SHARED way=W thread=T median_us=U
 */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { R = 256, C = 256, H = R / 2, STEPS = 2000, WARM = 100, JUNK = 1 << 19 };
enum way { OWN, SHARED, PREFETCH, SWEEP, NWAYS };
static const char *names[] = {"own", "shared", "prefetch", "sweep"};

typedef struct bench {
  float *w, *m, *v, *g, *junk[2];
  enum way way;
  atomic_int count, gen;
  double t[2][STEPS];
  float sink[2][16];
} bench;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void barrier(bench *b) {
  int g = atomic_load(&b->gen);
  if (atomic_fetch_add(&b->count, 1) == 1) {
    atomic_store(&b->count, 0);
    atomic_fetch_add(&b->gen, 1);
  } else {
    while (atomic_load(&b->gen) == g)
      _mm_pause();
  }
}

static void adam(float *w, float *m, float *v, const float *g, long n, int prefetch) {
  const __m512 b1 = _mm512_set1_ps(0.9f), c1 = _mm512_set1_ps(0.1f);
  const __m512 b2 = _mm512_set1_ps(0.999f), c2 = _mm512_set1_ps(0.001f);
  const __m512 lr = _mm512_set1_ps(1e-3f), inv_bc2 = _mm512_set1_ps(1.25f);
  const __m512 neg_eps = _mm512_set1_ps(-1e-8f);
  for (long i = 0; i < n; i += 16) {
    if (prefetch) _mm_prefetch((const char *)(w + i + 256), _MM_HINT_ET0);
    __m512 gi = _mm512_loadu_ps(g + i);
    __m512 m1 = _mm512_fmadd_ps(_mm512_loadu_ps(m + i), b1, _mm512_mul_ps(gi, c1));
    __m512 v1 =
        _mm512_fmadd_ps(_mm512_loadu_ps(v + i), b2, _mm512_mul_ps(_mm512_mul_ps(gi, gi), c2));
    __m512 d = _mm512_fnmadd_ps(_mm512_sqrt_ps(v1), inv_bc2, neg_eps);
    __m512 step = _mm512_div_ps(_mm512_mul_ps(m1, lr), d);
    _mm512_storeu_ps(m + i, m1);
    _mm512_storeu_ps(v + i, v1);
    _mm512_storeu_ps(w + i, _mm512_add_ps(_mm512_loadu_ps(w + i), step));
  }
}

static void thread_steps(bench *b, int t) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(t, &set);
  sched_setaffinity(0, sizeof set, &set); /* best effort */
  float *own = b->w + (long)t * H * C;
  for (int s = 0; s < STEPS; s++) {
    __m512 acc = _mm512_setzero_ps();
    for (long i = 0; i < (long)H * C; i += 16)
      acc = _mm512_add_ps(acc, _mm512_loadu_ps(own + i));
    if (b->way != OWN)
      for (int r = 0; r < R; r++)
        for (int c = t * H; c < t * H + H; c += 16)
          acc = _mm512_add_ps(acc, _mm512_loadu_ps(b->w + r * C + c));
    for (long j = 0; j < JUNK; j += 16)
      _mm512_storeu_ps(b->junk[t] + j, _mm512_add_ps(_mm512_loadu_ps(b->junk[t] + j), acc));
    _mm512_storeu_ps(b->sink[t], acc);
    for (long i = (long)t * H * C; i < (long)(t + 1) * H * C; i += 16)
      _mm512_storeu_ps(b->g + i, _mm512_set1_ps(1e-3f * (float)(i % 7)));
    barrier(b);
    double start = now();
    if (b->way == SWEEP)
      for (long i = 0; i < (long)H * C; i += 16)
        _mm_prefetch((const char *)(own + i), _MM_HINT_ET0);
    long off = (long)t * H * C;
    adam(own, b->m + off, b->v + off, b->g + off, (long)H * C, b->way == PREFETCH);
    b->t[t][s] = now() - start;
    barrier(b);
  }
}

static void *worker(void *p) {
  thread_steps(p, 1);
  return NULL;
}

static int by_value(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return a < b ? -1 : a > b;
}

int main(void) {
  static bench b;
  float **arrays[] = {&b.w, &b.m, &b.v, &b.g, &b.junk[0], &b.junk[1]};
  for (int i = 0; i < 6; i++) {
    long n = i < 4 ? (long)R * C : JUNK;
    *arrays[i] = aligned_alloc(64, (size_t)n * sizeof(float));
    if (!*arrays[i]) return 1;
    for (long j = 0; j < n; j++)
      (*arrays[i])[j] = i == 0 ? 0.01f : 0;
  }
  for (int way = OWN; way < NWAYS; way++) {
    b.way = (enum way)way;
    pthread_t th;
    if (pthread_create(&th, NULL, worker, &b)) return 1;
    thread_steps(&b, 0);
    pthread_join(th, NULL);
    for (int t = 0; t < 2; t++) {
      qsort(b.t[t] + WARM, STEPS - WARM, sizeof(double), by_value);
      printf("ADAM_SHARED way=%s thread=%d median_us=%.1f\n", names[way], t,
             b.t[t][WARM + (STEPS - WARM) / 2] * 1e6);
    }
  }
  return 0;
}
