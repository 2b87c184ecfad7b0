/* test_cg_gemm_bf16.c: the bf16 product kernels (codegen/gemm_bf16.c)
 * against a float64 reference on bf16-rounded inputs.
 *
 * For every layout, epilogue, odd shape and k blocking: each element of C
 * equals the product of the inputs rounded to bf16 (round to nearest
 * even), summed in double, within the error bound of an f32 sum over K
 * exact products; padding columns untouched; the same bits from one call
 * or from 2-3 calls split at arbitrary rows (what more threads do). The
 * rounding itself: a K = 1 product with B = 1 gives bf16(A) exactly, for
 * ties, NaN and infinities. Skipped on a CPU without AVX512-BF16.
 */
#define _DEFAULT_SOURCE
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "gemm_jit.h"

typedef struct fixture {
  gemm_jit *jit;
  unsigned seed;
} fixture;

static int setup(void **state) {
  char err[512];
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->jit = gemm_jit_create(err, sizeof err);
  if (!f->jit) {
    fprintf(stderr, "%s\n", err);
    free(f);
    return -1;
  }
  f->seed = 12;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  gemm_jit_free(f->jit);
  free(f);
  return 0;
}

static bool have_bf16(void) {
  return __builtin_cpu_supports("avx512bf16");
}

/* Round to nearest even on the bits; NaN stays NaN (quieted). Written
 * independently of the emitter: through the value, not a formula on bits. */
static float bf16_ref(float x) {
  if (isnan(x)) return x;
  uint32_t u;
  memcpy(&u, &x, 4);
  uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
  float flo, fhi;
  memcpy(&flo, &lo, 4);
  memcpy(&fhi, &hi, 4);
  if (isinf(x)) return x;
  double dlo = fabs((double)x - flo), dhi = fabs((double)fhi - x);
  if (isinf(fhi)) dhi = fabs(ldexp(1.0, 128) - fabs((double)x)); /* overflow threshold */
  if (dlo < dhi) return flo;
  if (dhi < dlo) return fhi;
  return (lo >> 16) & 1 ? fhi : flo; /* tie: even */
}

static float uniform(unsigned *seed) {
  *seed = *seed * 1664525u + 1013904223u;
  return (float)((*seed >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}

static float *random_floats(size_t n, unsigned *seed) {
  float *p = malloc((n ? n : 1) * sizeof(float));
  for (size_t i = 0; i < n; i++)
    p[i] = uniform(seed);
  return p;
}

enum { EPI_BIAS = 1, EPI_RELU = 2, EPI_ACC = 4 };

static nnc_cg_gemm gemm_of(int64_t M, int64_t N, int64_t K, bool ta, bool tb, int epi) {
  nnc_cg_gemm g = {0};
  g.M = M, g.N = N, g.K = K;
  g.trans_a = ta, g.trans_b = tb;
  g.lda = (ta ? M : K) + 1;
  g.ldb = (tb ? K : N) + 1;
  g.ldc = N + 1;
  g.accumulate = epi & EPI_ACC;
  g.bias = epi & EPI_BIAS;
  g.act = epi & EPI_RELU ? NNC_CG_ACT_RELU : NNC_CG_ACT_NONE;
  g.vector_width = 16;
  g.bf16 = true;
  return g;
}

static void check(fixture *f, int64_t M, int64_t N, int64_t K, bool ta, bool tb, int epi) {
  char err[512];
  nnc_cg_gemm g = gemm_of(M, N, K, ta, tb, epi);
  assert_true(nnc_cg_gemm_bf16_applies(&g));
  gemm_jit_fn fn = gemm_jit_compile(f->jit, &g, err, sizeof err);
  if (!fn) fail_msg("%s", err);
  size_t na = (size_t)(ta ? K * g.lda : M * g.lda), nb = (size_t)(tb ? N * g.ldb : K * g.ldb);
  size_t nc = (size_t)(M * g.ldc);
  float *A = random_floats(na, &f->seed), *B = random_floats(nb, &f->seed);
  float *bias = random_floats((size_t)N, &f->seed), *C0 = random_floats(nc, &f->seed);
  float *C1 = malloc(nc * sizeof(float)), *C2 = malloc(nc * sizeof(float));
  memcpy(C1, C0, nc * sizeof(float));
  fn(A, B, g.bias ? bias : NULL, C1, 0, M);
  const double u = 0x1p-24;
  for (int64_t m = 0; m < M; m++)
    for (int64_t n = 0; n < g.ldc; n++) {
      float got = C1[m * g.ldc + n];
      if (n >= N) {
        if (memcmp(&got, &C0[m * g.ldc + n], 4))
          fail_msg("padding C[%lld,%lld] written", (long long)m, (long long)n);
        continue;
      }
      double s = 0, mag = 0;
      for (int64_t k = 0; k < K; k++) {
        double a = bf16_ref(ta ? A[k * g.lda + m] : A[m * g.lda + k]);
        double b = bf16_ref(tb ? B[n * g.ldb + k] : B[k * g.ldb + n]);
        s += a * b, mag += fabs(a * b);
      }
      if (g.bias) s += bias[n], mag += fabs(bias[n]);
      if (g.act == NNC_CG_ACT_RELU && s < 0) s = 0;
      double old = g.accumulate ? C0[m * g.ldc + n] : 0;
      double want = s + old, tol = 2 * (double)(K + 2) * u * mag + 2 * u * fabs(old) + 1e-30;
      if (!(fabs(got - want) <= tol))
        fail_msg("M=%lld N=%lld K=%lld ta=%d tb=%d epi=%d: C[%lld,%lld] = %.9g, want %.9g",
                 (long long)M, (long long)N, (long long)K, ta, tb, epi, (long long)m, (long long)n,
                 got, want);
    }
  for (int parts = 2; parts <= 3; parts++) {
    int64_t cut[4] = {0, 0, 0, M};
    for (int p = 1; p < parts; p++)
      cut[p] = cut[p - 1] +
               (int64_t)((f->seed = f->seed * 1664525u + 1013904223u) >> 8) % (M - cut[p - 1] + 1);
    cut[parts] = M;
    memcpy(C2, C0, nc * sizeof(float));
    for (int p = 0; p < parts; p++)
      fn(A, B, g.bias ? bias : NULL, C2, cut[p], cut[p + 1]);
    if (memcmp(C1, C2, nc * sizeof(float)))
      fail_msg("M=%lld N=%lld K=%lld: bits differ with %d parts", (long long)M, (long long)N,
               (long long)K, parts);
  }
  free(A), free(B), free(bias), free(C0), free(C1), free(C2);
}

static void test_layouts_and_shapes(void **state) {
  fixture *f = *state;
  if (!have_bf16()) skip();
  static const int64_t shapes[][3] = {{1, 1, 1},   {3, 5, 2},     {8, 16, 32},  {9, 48, 33},
                                      {17, 49, 7}, {64, 100, 63}, {70, 10, 784}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int l = 0; l < 4; l++)
      check(f, shapes[s][0], shapes[s][1], shapes[s][2], l & 1, l >> 1, EPI_BIAS | EPI_RELU);
}

static void test_epilogues(void **state) {
  fixture *f = *state;
  if (!have_bf16()) skip();
  for (int epi = 0; epi < 8; epi++)
    check(f, 11, 37, 45, epi & 1, false, epi);
}

/* K over the 512-k block: partial sums through C, 2 and 3+ blocks. */
static void test_k_blocks(void **state) {
  fixture *f = *state;
  if (!have_bf16()) skip();
  const int64_t ks[] = {1100, 1601};
  for (int i = 0; i < 2; i++)
    for (int l = 0; l < 4; l++)
      check(f, 13, 37, ks[i], l & 1, l >> 1, i ? EPI_ACC : EPI_BIAS);
  nnc_cg_gemm g = gemm_of(9, 11, 1100, false, true, EPI_ACC | EPI_RELU);
  assert_false(nnc_cg_gemm_bf16_applies(&g)); /* left to the f32 kernel */
}

/* K = 1, B = 1, no bias: C is A rounded to bf16, bit for bit. */
static void test_rounding(void **state) {
  fixture *f = *state;
  if (!have_bf16()) skip();
  uint32_t bits[] = {
      0x3f800000u,                           /* 1 */
      0x3f808000u,                           /* 1 + half an ulp: tie, to even (1) */
      0x3f818000u,                           /* tie, to even (up) */
      0x3f808001u,                           /* above the tie: up */
      0x3f807fffu,                           /* below: down */
      0xbf808001u,                           /* negative */
      0x7f7fffffu,                           /* largest float: rounds to inf */
      0x7f800000u,                           /* inf */
      0xff800000u,                           /* -inf */
      0x00000000u, 0x80000000u, 0x7fc00000u, /* quiet NaN */
      0x7f800001u,                           /* signalling NaN: stays NaN */
  };
  int n = (int)(sizeof bits / sizeof bits[0]);
  char err[512];
  nnc_cg_gemm g = gemm_of(n, 1, 1, false, false, 0);
  g.lda = 1, g.ldb = 1, g.ldc = 1;
  gemm_jit_fn fn = gemm_jit_compile(f->jit, &g, err, sizeof err);
  if (!fn) fail_msg("%s", err);
  float A[16], B = 1, C[16];
  memcpy(A, bits, sizeof bits);
  fn(A, &B, NULL, C, 0, n);
  for (int i = 0; i < n; i++) {
    float want = bf16_ref(A[i]) + 0.0f; /* the sum starts at +0: -0 + 0 = +0 */
    if (isnan(want)) {
      if (!isnan(C[i])) fail_msg("%08x: NaN lost", bits[i]);
      continue;
    }
    if (memcmp(&want, &C[i], 4)) fail_msg("%08x: got %.9g, want %.9g", bits[i], C[i], want);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rounding),
      cmocka_unit_test(test_layouts_and_shapes),
      cmocka_unit_test(test_epilogues),
      cmocka_unit_test(test_k_blocks),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
