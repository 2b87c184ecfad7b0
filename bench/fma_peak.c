/* fma_peak.c: the f32 FMA peak of this machine, on 1 and 2 threads (or the
 * counts given), in GFLOP/s. Each thread runs CHAINS independent
 * multiply-add chains on zmm registers (acc = acc * a + b, 16 lanes, 2
 * FLOPs per lane), enough of them to cover the FMA latency on every
 * AVX-512 core we know of (4 cycles, 2 per cycle: 8 in flight), so the loop
 * is bound by FMA throughput alone. The value stays finite and normal
 * (every chain tends to b / (1 - a)). Each count is timed several times,
 * the best kept. The denominator of bench/peak.sh's fraction of peak
 * (docs/performance.md). Not a test: the numbers are the machine's.
 *
 *   build-rel/bench/fma_peak [THREADS...]      (default: 1 2)
 *
 * Prints one line per thread count:
 *   FMA_PEAK threads=T gflops=G gflops_per_thread=G/T
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { CHAINS = 16, REPEATS = 5, MAX_THREADS = 64 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One thread's chains: iters steps of CHAINS dependent FMAs each. */
typedef struct job {
  long iters;
  pthread_barrier_t *start;
  float sink;    /* the chains' sum, so the work is not dead */
  double t0, t1; /* the thread's own start and end of its chains */
} job;

static void *fma_chains(void *arg) {
  job *j = arg;
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-6f);
  __m512 acc[CHAINS];
  for (int c = 0; c < CHAINS; c++)
    acc[c] = _mm512_set1_ps((float)c);
  pthread_barrier_wait(j->start);
  j->t0 = now_s();
  for (long i = 0; i < j->iters; i++) {
#pragma GCC unroll 16
    for (int c = 0; c < CHAINS; c++)
      acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  }
  __m512 s = acc[0];
  for (int c = 1; c < CHAINS; c++)
    s = _mm512_add_ps(s, acc[c]);
  j->sink = _mm512_reduce_add_ps(s);
  j->t1 = now_s();
  return NULL;
}

/* Seconds for `threads` threads to run iters steps each, from the first
 * thread's start to the last one's end, as the threads themselves read the
 * clock: a clock read by the main thread after the barrier could come late
 * (the main thread descheduled while the chains run), and the calibration
 * below then made the timings hundreds of times too long. */
static double timed(int threads, long iters, float *sink) {
  pthread_t tid[MAX_THREADS];
  job jobs[MAX_THREADS];
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job){.iters = iters, .start = &start};
    if (pthread_create(&tid[t], NULL, fma_chains, &jobs[t]) != 0) {
      perror("fma_peak: pthread_create");
      exit(1);
    }
  }
  pthread_barrier_wait(&start);
  double t0 = 1e300, t1 = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tid[t], NULL);
    *sink += jobs[t].sink;
    if (jobs[t].t0 < t0) t0 = jobs[t].t0;
    if (jobs[t].t1 > t1) t1 = jobs[t].t1;
  }
  double secs = t1 - t0;
  pthread_barrier_destroy(&start);
  return secs;
}

int main(int argc, char **argv) {
  int counts[MAX_THREADS] = {1, 2}, ncounts = 2;
  if (argc > 1) {
    ncounts = 0;
    for (int i = 1; i < argc && ncounts < MAX_THREADS; i++) {
      char *end;
      long t = strtol(argv[i], &end, 10);
      if (*end || t < 1 || t > MAX_THREADS) {
        fprintf(stderr, "fma_peak: '%s' is not a thread count (1-%d)\n", argv[i], MAX_THREADS);
        return 2;
      }
      counts[ncounts++] = (int)t;
    }
  }
  float sink = 0;
  /* about 0.2 s per timing on one thread */
  long iters = 1000000;
  double secs = timed(1, iters, &sink);
  iters = secs > 0 ? (long)((double)iters * 0.2 / secs) : iters;
  if (iters < 1000000) iters = 1000000;
  if (iters > 200000000) iters = 200000000; /* at most about 2 s at 50 GFLOP/s a thread */
  for (int i = 0; i < ncounts; i++) {
    double best = 1e30;
    for (int r = 0; r < REPEATS; r++) {
      double s = timed(counts[i], iters, &sink);
      if (s < best) best = s;
    }
    double flops = (double)counts[i] * (double)iters * CHAINS * 16 * 2;
    printf("FMA_PEAK threads=%d gflops=%.1f gflops_per_thread=%.1f\n", counts[i],
           flops / best * 1e-9, flops / best * 1e-9 / counts[i]);
  }
  if (sink == 12345.0f) printf("(sink)\n"); /* keeps the chains' results live */
  return 0;
}
