/* adam_bound.c: what bounds Adam's update pass on this machine, the
 * divider or memory. Runs the loop nnc emits for `update.adam.m.<weight>`
 * (codegen/lower_update.c; the instructions of `nnc --emit=asm` for
 * fashion_mlp: m and v by FMAs, vsqrtps, one FMA for sqrt(v) / sqrt(1 -
 * b2^t) + eps, vdivps, the add to the weight; four loads and three stores
 * per 16 weights) on one thread, over the MLP's two large weights (784 x 256
 * and 256 x 256) and, for the divider's own rate, 2048 weights (32 KB
 * with their state and gradient: L1), three ways:
 *   full      the pass as emitted
 *   no sqrt   the square root left out
 *   no div    the square root left out and the division made a multiply
 * each with the arrays warm (the previous call's; 3.2 MB for the first
 * weight: L2 and L3) and cold (64 MB written in between: memory). If the
 * three take the same time, the divider is not what bounds the pass and an
 * approximate reciprocal square root would gain nothing. Thread CPU time,
 * the best of 40 calls. Not a test: the numbers are the machine's.
 *
 *   build-rel/bench/adam_bound
 *
 * Prints one line per weight, state and way:
 *   ADAM n=N cache=warm|cold way=full|nosqrt|nodiv us=T cycles_per_vector@3.5GHz=C
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum way { FULL, NO_SQRT, NO_DIV };

static double cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

__attribute__((noinline)) static void adam(float *w, float *m, float *v, const float *g, long n,
                                           enum way way) {
  const __m512 b1 = _mm512_set1_ps(0.9f), c1 = _mm512_set1_ps(0.1f);
  const __m512 b2 = _mm512_set1_ps(0.999f), c2 = _mm512_set1_ps(0.001f);
  const __m512 lr = _mm512_set1_ps(1e-3f), inv_bc2 = _mm512_set1_ps(1.25f);
  const __m512 neg_eps = _mm512_set1_ps(-1e-8f);
  for (long i = 0; i < n; i += 16) {
    __m512 gi = _mm512_loadu_ps(g + i);
    __m512 m1 = _mm512_fmadd_ps(_mm512_loadu_ps(m + i), b1, _mm512_mul_ps(gi, c1));
    __m512 v1 =
        _mm512_fmadd_ps(_mm512_loadu_ps(v + i), b2, _mm512_mul_ps(_mm512_mul_ps(gi, gi), c2));
    __m512 s = way == FULL ? _mm512_sqrt_ps(v1) : v1;
    __m512 d = _mm512_fnmadd_ps(s, inv_bc2, neg_eps); /* -(s / bc2 + eps) */
    __m512 a = _mm512_mul_ps(m1, lr);
    __m512 step = way == NO_DIV ? _mm512_mul_ps(a, d) : _mm512_div_ps(a, d);
    _mm512_storeu_ps(m + i, m1);
    _mm512_storeu_ps(v + i, v1);
    _mm512_storeu_ps(w + i, _mm512_add_ps(_mm512_loadu_ps(w + i), step));
  }
}

int main(void) {
  static const long sizes[] = {784 * 256, 256 * 256, 2048};
  static const char *ways[] = {"full", "nosqrt", "nodiv"};
  long junk_bytes = 64L << 20;
  char *junk = malloc((size_t)junk_bytes);
  if (!junk) return 1;
  for (int s = 0; s < 3; s++) {
    long n = sizes[s];
    float *a[4];
    for (int i = 0; i < 4; i++) {
      a[i] = aligned_alloc(64, (size_t)n * sizeof(float));
      if (!a[i]) return 1;
      for (long j = 0; j < n; j++)
        a[i][j] = i == 3 ? 1e-3f * (float)(j % 7) : 0.01f;
    }
    for (int cold = 0; cold < 2; cold++)
      for (int way = FULL; way <= NO_DIV; way++) {
        double best = 1e9;
        for (int r = 0; r < 40; r++) {
          if (cold)
            for (long j = 0; j < junk_bytes; j += 64)
              junk[j]++;
          long reps = cold ? 1 : 1 + (1L << 18) / n; /* small n: many calls a timing */
          double t = cpu_now();
          for (long k = 0; k < reps; k++)
            adam(a[0], a[1], a[2], a[3], n, (enum way)way);
          t = (cpu_now() - t) / (double)reps;
          if (t < best) best = t;
        }
        printf("ADAM n=%ld cache=%s way=%s us=%.1f cycles_per_vector@3.5GHz=%.1f\n", n,
               cold ? "cold" : "warm", ways[way], best * 1e6, best * 3.5e9 / (double)(n / 16));
      }
    for (int i = 0; i < 4; i++)
      free(a[i]);
  }
  free(junk);
  return 0;
}
