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
 *
 * With --read, how fast the caches read at the moment instead: each of
 * THREADS threads sums its own buffer of KIB KiB (first touched by
 * itself) with four zmm accumulators, pass after pass, about 20 ms a
 * timing, the best of several kept. Written to test whether the windows
 * in which fashion_mlp's step runs slower against the FMA peak are windows
 * of slower caches: in the sixteenth stop's readings they were not
 * (docs/performance.md, "Fraction of the FMA peak").
 *
 *   build-rel/bench/fma_peak --read THREADS [KIB...]   (default: 256 768 8192)
 *   READ_RATE threads=T kib=K gbps=G      (G: GB/s read, all threads)
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { CHAINS = 16, REPEATS = 5, MAX_THREADS = 64 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* One thread's work: iters steps of CHAINS dependent FMAs each, or (floats
 * > 0) iters passes over a buffer of that many floats. */
typedef struct job {
  long iters;
  size_t floats; /* a multiple of 64 */
  pthread_barrier_t *start;
  float sink;    /* the result, so the work is not dead */
  double t0, t1; /* the thread's own start and end of its work */
} job;

static float sum_pass(const float *p, size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

/* The buffer is written and read once by its thread before the start, so
 * the timed passes find it in that core's caches. */
static void *read_passes(job *j) {
  float *buf = aligned_alloc(64, j->floats * sizeof(float));
  if (!buf) {
    fprintf(stderr, "fma_peak: out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < j->floats; i++)
    buf[i] = 1.0f / (float)(i % 97 + 1);
  float s = sum_pass(buf, j->floats);
  pthread_barrier_wait(j->start);
  j->t0 = now_s();
  for (long r = 0; r < j->iters; r++) {
    __asm__ volatile("" : : "r"(buf) : "memory"); /* each pass reads memory again */
    s += sum_pass(buf, j->floats);
  }
  j->t1 = now_s();
  j->sink = s;
  free(buf);
  return NULL;
}

static void *work(void *arg) {
  job *j = arg;
  if (j->floats) return read_passes(j);
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
static double timed(int threads, long iters, size_t floats, float *sink) {
  pthread_t tid[MAX_THREADS];
  job jobs[MAX_THREADS];
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job){.iters = iters, .floats = floats, .start = &start};
    if (pthread_create(&tid[t], NULL, work, &jobs[t]) != 0) {
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

static long parse(const char *s, long lo, long hi, const char *what) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*end || v < lo || v > hi) {
    fprintf(stderr, "fma_peak: '%s' is not %s (%ld-%ld)\n", s, what, lo, hi);
    exit(2);
  }
  return v;
}

/* --read THREADS [KIB...] */
static int read_rates(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: fma_peak --read THREADS [KIB...]\n");
    return 2;
  }
  int threads = (int)parse(argv[2], 1, MAX_THREADS, "a thread count");
  long sizes[MAX_THREADS] = {256, 768, 8192};
  int nsizes = 3;
  if (argc > 3) {
    nsizes = 0;
    for (int i = 3; i < argc && nsizes < MAX_THREADS; i++)
      sizes[nsizes++] = parse(argv[i], 4, 1L << 20, "a size in KiB");
  }
  float sink = 0;
  for (int i = 0; i < nsizes; i++) {
    size_t floats = (size_t)sizes[i] * 1024 / sizeof(float) / 64 * 64;
    /* about 20 ms a timing at 50 GB/s a thread */
    long passes = (long)(1e9 / ((double)floats * sizeof(float)));
    if (passes < 2) passes = 2;
    double best = 1e30;
    for (int r = 0; r < REPEATS; r++) {
      double s = timed(threads, passes, floats, &sink);
      if (s < best) best = s;
    }
    double bytes = (double)threads * (double)passes * (double)floats * sizeof(float);
    printf("READ_RATE threads=%d kib=%ld gbps=%.1f\n", threads, sizes[i], bytes / best * 1e-9);
  }
  if (sink == 12345.0f) printf("(sink)\n"); /* keeps the sums live */
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--read")) return read_rates(argc, argv);
  int counts[MAX_THREADS] = {1, 2}, ncounts = 2;
  if (argc > 1) {
    ncounts = 0;
    for (int i = 1; i < argc && ncounts < MAX_THREADS; i++)
      counts[ncounts++] = (int)parse(argv[i], 1, MAX_THREADS, "a thread count");
  }
  float sink = 0;
  /* about 0.2 s per timing on one thread */
  long iters = 1000000;
  double secs = timed(1, iters, 0, &sink);
  iters = secs > 0 ? (long)((double)iters * 0.2 / secs) : iters;
  if (iters < 1000000) iters = 1000000;
  if (iters > 200000000) iters = 200000000; /* at most about 2 s at 50 GFLOP/s a thread */
  for (int i = 0; i < ncounts; i++) {
    double best = 1e30;
    for (int r = 0; r < REPEATS; r++) {
      double s = timed(counts[i], iters, 0, &sink);
      if (s < best) best = s;
    }
    double flops = (double)counts[i] * (double)iters * CHAINS * 16 * 2;
    printf("FMA_PEAK threads=%d gflops=%.1f gflops_per_thread=%.1f\n", counts[i],
           flops / best * 1e-9, flops / best * 1e-9 / counts[i]);
  }
  if (sink == 12345.0f) printf("(sink)\n"); /* keeps the chains' results live */
  return 0;
}
