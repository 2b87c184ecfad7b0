/* cache_probe.c: how fast this machine's caches read at the moment, on
 * the thread count given. Each thread sums its own buffer of KIB KiB
 * (first touched by itself) with four zmm accumulators, pass after pass,
 * about 20 ms a timing; the best of several timings is kept. Written to
 * test whether the windows in which fashion_mlp's step runs slower
 * against the FMA peak (bench/peak.sh) are windows of slower caches: in
 * the sixteenth stop's readings they were not (docs/performance.md,
 * "Fraction of the FMA peak"). Not a test: the numbers are the machine's.
 *
 *   build-rel/bench/cache_probe THREADS [KIB...]   (default: 256 768 8192)
 *
 * Prints one line per size:
 *   CACHE_PROBE threads=T kib=K gbps=G      (G: GB/s read, all threads)
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { REPEATS = 5, MAX_THREADS = 64, MAX_SIZES = 16 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct job {
  size_t floats; /* the buffer's length, a multiple of 64 */
  long passes;
  pthread_barrier_t *ready, *start;
  float sink;
  double t0, t1;
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

static void *reader(void *arg) {
  job *j = arg;
  float *buf = aligned_alloc(64, j->floats * sizeof(float));
  if (!buf) {
    fprintf(stderr, "cache_probe: out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < j->floats; i++)
    buf[i] = 1.0f / (float)(i % 97 + 1);
  float s = sum_pass(buf, j->floats); /* warm: the buffer in this core's caches */
  pthread_barrier_wait(j->ready);
  pthread_barrier_wait(j->start);
  j->t0 = now_s();
  for (long r = 0; r < j->passes; r++) {
    __asm__ volatile("" : : "r"(buf) : "memory"); /* each pass reads memory again */
    s += sum_pass(buf, j->floats);
  }
  j->t1 = now_s();
  j->sink = s;
  free(buf);
  return NULL;
}

/* Seconds for `threads` threads to read their buffers `passes` times, from
 * the first thread's start to the last one's end (their own clocks). */
static double timed(int threads, size_t floats, long passes, float *sink) {
  pthread_t tid[MAX_THREADS];
  job jobs[MAX_THREADS];
  pthread_barrier_t ready, start;
  pthread_barrier_init(&ready, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job){.floats = floats, .passes = passes, .ready = &ready, .start = &start};
    if (pthread_create(&tid[t], NULL, reader, &jobs[t]) != 0) {
      perror("cache_probe: pthread_create");
      exit(1);
    }
  }
  pthread_barrier_wait(&ready);
  pthread_barrier_wait(&start);
  double t0 = 1e300, t1 = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(tid[t], NULL);
    *sink += jobs[t].sink;
    if (jobs[t].t0 < t0) t0 = jobs[t].t0;
    if (jobs[t].t1 > t1) t1 = jobs[t].t1;
  }
  pthread_barrier_destroy(&ready);
  pthread_barrier_destroy(&start);
  return t1 - t0;
}

static long parse(const char *s, long lo, long hi, const char *what) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*end || v < lo || v > hi) {
    fprintf(stderr, "cache_probe: '%s' is not %s (%ld-%ld)\n", s, what, lo, hi);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: cache_probe THREADS [KIB...]\n");
    return 2;
  }
  int threads = (int)parse(argv[1], 1, MAX_THREADS, "a thread count");
  long sizes[MAX_SIZES] = {256, 768, 8192};
  int nsizes = 3;
  if (argc > 2) {
    nsizes = 0;
    for (int i = 2; i < argc && nsizes < MAX_SIZES; i++)
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
      double s = timed(threads, floats, passes, &sink);
      if (s < best) best = s;
    }
    double bytes = (double)threads * (double)passes * (double)floats * sizeof(float);
    printf("CACHE_PROBE threads=%d kib=%ld gbps=%.1f\n", threads, sizes[i], bytes / best * 1e-9);
  }
  if (sink == 12345.0f) printf("(sink)\n"); /* keeps the sums live */
  return 0;
}
