/* test_cg_gemm.c: the emitted matrix-product kernels against a float64 reference.
 *
 * Each case emits one kernel with nnc_cg_emit_gemm, JITs it (gemm_jit.c,
 * default<O3>, host CPU) and checks, for every layout (A and/or B
 * transposed), epilogue (bias, ReLU, accumulate), vector width and odd
 * shape: every element against a triple loop in double within a
 * forward-error bound; padding columns of C and rows outside
 * [row_begin, row_end) untouched; and the same bits whether the rows are
 * computed in one call or split over 2 or 3 calls at arbitrary rows (what
 * running on more threads does); a product whose K is summed in chunks
 * (a batch's gradient as the micro-batch products sum it) bit for bit
 * against those products added as a pairwise tree. Every array ends at an inaccessible page,
 * so a kernel reading or writing past an edge crashes the test.
 */
#define _DEFAULT_SOURCE /* mmap, mprotect, MAP_ANONYMOUS */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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
  f->seed = 2024;
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  gemm_jit_free(f->jit);
  free(f);
  return 0;
}

static float uniform(unsigned *seed) {
  *seed = *seed * 1664525u + 1013904223u;
  return (float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* n floats ending exactly where a PROT_NONE page begins. */
static float *guarded_floats(size_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = n * sizeof(float);
  size_t span = (bytes + page - 1) / page * page + page;
  char *base = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(base != MAP_FAILED);
  assert_int_equal(mprotect(base + span - page, page, PROT_NONE), 0);
  return (float *)(base + span - page - bytes);
}

static void free_guarded(float *p, size_t n) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), bytes = n * sizeof(float);
  size_t span = (bytes + page - 1) / page * page + page;
  munmap((char *)p + bytes + page - span, span);
}

static float *random_floats(size_t n, unsigned *seed) {
  float *p = guarded_floats(n);
  for (size_t i = 0; i < n; i++)
    p[i] = uniform(seed);
  return p;
}

enum { EPI_BIAS = 1, EPI_RELU = 2, EPI_ACC = 4 };

/* One product: M x N x K, layouts, epilogue bits, vector width, padding of
 * every row stride. */
typedef struct gemm_case {
  int64_t M, N, K;
  bool trans_a, trans_b;
  int epi;
  int vector_width;
  int64_t pad;
} gemm_case;

/* What the caller promises about row ranges (nnc_cg_gemm.row_align,
 * all_rows); the test keeps its calls to it. */
typedef struct row_promise {
  int64_t align;
  bool all_rows;
} row_promise;

static nnc_cg_gemm gemm_of(const gemm_case *c) {
  nnc_cg_gemm g = {0};
  g.M = c->M, g.N = c->N, g.K = c->K;
  g.trans_a = c->trans_a, g.trans_b = c->trans_b;
  g.lda = (c->trans_a ? c->M : c->K) + c->pad;
  g.ldb = (c->trans_b ? c->K : c->N) + c->pad;
  g.ldc = c->N + c->pad;
  g.accumulate = c->epi & EPI_ACC;
  g.bias = c->epi & EPI_BIAS;
  g.act = c->epi & EPI_RELU ? NNC_CG_ACT_RELU : NNC_CG_ACT_NONE;
  g.vector_width = c->vector_width;
  return g;
}

/* C[m, n] = C0 (if accumulate) + act(sum_k A.B + bias), in double, and the
 * float error bound of an FMA chain over K terms: (K + 2) u sum |a b|. */
static void reference(const nnc_cg_gemm *g, const float *A, const float *B, const float *bias,
                      const float *C0, int64_t m, int64_t n, double *want, double *tol) {
  const double u = 0x1p-24;
  double s = 0, mag = 0;
  for (int64_t k = 0; k < g->K; k++) {
    double a = g->trans_a ? A[k * g->lda + m] : A[m * g->lda + k];
    double b = g->trans_b ? B[n * g->ldb + k] : B[k * g->ldb + n];
    s += a * b, mag += fabs(a * b);
  }
  if (g->bias) s += bias[n], mag += fabs(bias[n]);
  if (g->act == NNC_CG_ACT_RELU && s < 0) s = 0;
  double old = g->accumulate ? C0[m * g->ldc + n] : 0;
  *want = s + old;
  *tol = 2 * (double)(g->K + 2) * u * mag + 2 * u * fabs(old) + 1e-30;
}

/* chunks: nnc_cg_gemm.chunks (0: one sum over K). */
static void check_chunked(fixture *f, const gemm_case *c, row_promise rp, int64_t chunks) {
  char err[512];
  nnc_cg_gemm g = gemm_of(c);
  g.chunks = chunks;
  g.row_align = rp.align;
  g.all_rows = rp.all_rows;
  gemm_jit_fn fn = gemm_jit_compile(f->jit, &g, err, sizeof err);
  if (!fn)
    fail_msg("M=%lld N=%lld K=%lld: %s", (long long)c->M, (long long)c->N, (long long)c->K, err);
  size_t na = (size_t)(c->trans_a ? c->K * g.lda : c->M * g.lda);
  size_t nb = (size_t)(c->trans_b ? c->N * g.ldb : c->K * g.ldb);
  size_t nc = (size_t)(c->M * g.ldc);
  float *A = random_floats(na, &f->seed), *B = random_floats(nb, &f->seed);
  float *bias = random_floats((size_t)c->N, &f->seed), *C0 = random_floats(nc, &f->seed);
  float *C1 = guarded_floats(nc), *C2 = guarded_floats(nc);

  /* One call over all rows against the reference; padding untouched. */
  memcpy(C1, C0, nc * sizeof(float));
  fn(A, B, g.bias ? bias : NULL, C1, 0, c->M);
  for (int64_t m = 0; m < c->M; m++)
    for (int64_t n = 0; n < g.ldc; n++) {
      float got = C1[m * g.ldc + n];
      if (n >= c->N) {
        if (memcmp(&got, &C0[m * g.ldc + n], sizeof got))
          fail_msg("padding C[%lld,%lld] written", (long long)m, (long long)n);
        continue;
      }
      double want, tol;
      reference(&g, A, B, bias, C0, m, n, &want, &tol);
      if (!(fabs(got - want) <= tol))
        fail_msg("M=%lld N=%lld K=%lld ta=%d tb=%d epi=%d vw=%d: C[%lld,%lld] = %.9g, want %.9g",
                 (long long)c->M, (long long)c->N, (long long)c->K, c->trans_a, c->trans_b, c->epi,
                 c->vector_width, (long long)m, (long long)n, got, want);
    }

  /* The same bits from 1..3 calls split at arbitrary rows (multiples of
   * row_align, or M), and rows outside the calls' ranges untouched. */
  for (int parts = 1; parts <= 3 && !rp.all_rows; parts++) {
    int64_t cut[4] = {0, 0, 0, c->M};
    int64_t lo = parts == 1 ? c->M / 3 : 0, hi = parts == 1 ? c->M - c->M / 4 : c->M;
    cut[0] = lo, cut[parts] = hi;
    for (int p = 1; p < parts; p++) {
      int64_t r = (int64_t)((f->seed = f->seed * 1664525u + 1013904223u) >> 8);
      cut[p] = cut[p - 1] + (hi > cut[p - 1] ? r % (hi - cut[p - 1] + 1) : 0);
    }
    for (int p = 0; p <= parts && rp.align > 1; p++)
      if (cut[p] != c->M) cut[p] -= cut[p] % rp.align;
    lo = cut[0], hi = cut[parts];
    memcpy(C2, C0, nc * sizeof(float));
    for (int p = 0; p < parts; p++)
      fn(A, B, g.bias ? bias : NULL, C2, cut[p], cut[p + 1]);
    for (int64_t m = 0; m < c->M; m++) {
      const float *want = m >= lo && m < hi ? C1 : C0;
      if (memcmp(C2 + m * g.ldc, want + m * g.ldc, (size_t)g.ldc * sizeof(float)))
        fail_msg("M=%lld N=%lld K=%lld ta=%d tb=%d: row %lld differs with %d part(s)",
                 (long long)c->M, (long long)c->N, (long long)c->K, c->trans_a, c->trans_b,
                 (long long)m, parts);
    }
  }
  free_guarded(A, na), free_guarded(B, nb), free_guarded(bias, (size_t)c->N);
  free_guarded(C0, nc), free_guarded(C1, nc), free_guarded(C2, nc);
}

static void check_promised(fixture *f, const gemm_case *c, row_promise rp) {
  check_chunked(f, c, rp, 0);
}

static void check_case(fixture *f, const gemm_case *c) {
  check_promised(f, c, (row_promise){0, false});
}

/* Sizes around every tile edge: 1, below/above a vector, odd primes,
 * multiples of the micro-tiles, and K too short for the dot kernel. */
static const int64_t odd_shapes[][3] = {
    {1, 1, 1},     {1, 17, 3},   {3, 1, 40},    {7, 13, 5},   {13, 33, 31},  {16, 16, 16},
    {17, 47, 33},  {9, 49, 200}, {37, 100, 96}, {8, 48, 64},  {25, 95, 129}, {2, 5, 1000},
    {65, 10, 256}, {11, 3, 33},  {6, 64, 17},   {31, 129, 2}, {5, 7, 0},
};

static void run_layouts(void **state, bool trans_a, bool trans_b) {
  fixture *f = *state;
  for (size_t s = 0; s < sizeof odd_shapes / sizeof odd_shapes[0]; s++)
    for (int epi = 0; epi < 8; epi += (int)(s % 3) + 1) {
      gemm_case c = {
          odd_shapes[s][0],    odd_shapes[s][1], odd_shapes[s][2], trans_a, trans_b, epi, 16,
          (int64_t)(s % 2) * 3};
      check_case(f, &c);
    }
}

static void test_no_trans(void **state) {
  run_layouts(state, false, false);
}
static void test_trans_a(void **state) {
  run_layouts(state, true, false);
}
static void test_trans_b(void **state) {
  run_layouts(state, false, true);
}
static void test_trans_both(void **state) {
  run_layouts(state, true, true);
}

/* Every epilogue on both kernels (dot: trans_b with long K). */
static void test_epilogues(void **state) {
  fixture *f = *state;
  for (int epi = 0; epi < 8; epi++)
    for (int tb = 0; tb < 2; tb++) {
      gemm_case c = {19, 37, 70, false, tb, epi, 16, 1};
      check_case(f, &c);
    }
}

/* AVX2- and SSE-sized vectors (the code still runs on an AVX-512 host). */
static void test_vector_widths(void **state) {
  fixture *f = *state;
  for (int vw = 4; vw <= 8; vw *= 2)
    for (int l = 0; l < 4; l++) {
      gemm_case c = {23, 29, 41, l & 1, l >> 1, EPI_BIAS | EPI_RELU | (l == 3 ? EPI_ACC : 0),
                     vw, 2};
      check_case(f, &c);
      gemm_case d = {4, 8, 8, l & 1, l >> 1, 0, vw, 0};
      check_case(f, &d);
    }
}

/* The products of the benchmark MLP (784-256-256-10, batch 64) and
 * convolution-sized ones (K = 288, N = 64) with fewer rows; from 1024 rows
 * on, x.W^T takes the packed outer kernel instead of the dot form. */
static void test_model_shapes(void **state) {
  fixture *f = *state;
  const gemm_case cases[] = {
      {64, 256, 784, false, true, EPI_BIAS | EPI_RELU, 16, 0},
      {64, 256, 256, false, true, EPI_BIAS | EPI_RELU, 16, 0},
      {64, 10, 256, false, true, EPI_BIAS, 16, 0},
      {64, 256, 256, false, false, 0, 16, 0},
      {64, 256, 10, false, false, 0, 16, 0},
      {256, 784, 64, true, false, 0, 16, 0},
      {256, 256, 64, true, false, EPI_ACC, 16, 0},
      {10, 256, 64, true, false, 0, 16, 0},
      {1000, 64, 288, false, false, EPI_BIAS | EPI_RELU, 16, 0},
      {1000, 64, 288, false, true, EPI_BIAS | EPI_RELU, 16, 0},
      {1037, 64, 288, false, true, EPI_BIAS, 16, 0}, /* many rows: packed outer */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_case(f, &cases[i]);
}

/* Promised row ranges leave out the tiles for remainders they cannot
 * have: ranges of whole row blocks (M a multiple of the block or not) and
 * all rows in one call, around the tile heights of both kernels and of
 * narrow panels. */
static void test_row_promises(void **state) {
  fixture *f = *state;
  const int64_t ms[] = {64, 10, 37, 24, 3};
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
    for (int l = 0; l < 4; l++)
      for (int64_t align = 4; align <= 8; align += 4) {
        gemm_case c = {ms[i], 16 + 5 * l, 40 + 90 * (l >> 1), l & 1, l >> 1, l, 16, 0};
        check_promised(f, &c, (row_promise){align, false});
        gemm_case d = {ms[i], 48 * (l + 1) + 16, 10 + 120 * (l >> 1), l & 1, l >> 1, EPI_BIAS, 16,
                       1};
        check_promised(f, &d, (row_promise){align, false});
      }
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
    for (int l = 0; l < 4; l++) {
      gemm_case c = {ms[i], 128, 10 + 250 * (l >> 1), l & 1, l >> 1, EPI_BIAS | EPI_RELU, 16, 0};
      check_promised(f, &c, (row_promise){0, true});
    }
}

/* Long K is cut into blocks whose partial sums go through C: every layout,
 * with 2 and 3+ blocks and a short last one, accumulate (C's old value
 * starts the sum) and accumulate + ReLU (not blocked). */
static void test_k_blocks(void **state) {
  fixture *f = *state;
  const int64_t ks[] = {1100, 1601};
  for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++)
    for (int l = 0; l < 4; l++)
      for (int epi = 0; epi < 8; epi += 3) {
        gemm_case c = {13, 37, ks[i], l & 1, l >> 1, epi, 16, 1};
        check_case(f, &c);
      }
  const int epis[] = {EPI_BIAS | EPI_RELU, EPI_ACC | EPI_BIAS, EPI_ACC | EPI_RELU};
  for (int i = 0; i < 3; i++) {
    gemm_case c = {9, 11, 4200, false, true, epis[i], 16, 2}; /* dot, blocks of 2048 */
    check_case(f, &c);
  }
}

/* NNC_CG_ACT_RELU_MASK: C = mask > 0 ? A.B : 0 with the mask (C's row
 * stride) in the bias parameter, bit for bit the plain product's values
 * where the mask is above zero and +0 where it is zero, -0, negative or
 * NaN; the padding of C untouched, and the same bits from two calls split
 * at a row block. Both kernels, every layout, K blocks, chunks, narrow
 * vectors. */
static void check_relu_mask(fixture *f, nnc_cg_gemm g) {
  char err[512];
  nnc_cg_gemm plain = g;
  g.act = NNC_CG_ACT_RELU_MASK;
  gemm_jit_fn fp = gemm_jit_compile(f->jit, &plain, err, sizeof err);
  gemm_jit_fn fm = fp ? gemm_jit_compile(f->jit, &g, err, sizeof err) : NULL;
  if (!fm)
    fail_msg("M=%lld N=%lld K=%lld: %s", (long long)g.M, (long long)g.N, (long long)g.K, err);
  size_t na = (size_t)(g.trans_a ? g.K * g.lda : g.M * g.lda);
  size_t nb = (size_t)(g.trans_b ? g.N * g.ldb : g.K * g.ldb), nc = (size_t)(g.M * g.ldc);
  float *A = random_floats(na, &f->seed), *B = random_floats(nb, &f->seed);
  float *mask = random_floats(nc, &f->seed), *C0 = random_floats(nc, &f->seed);
  float *C1 = guarded_floats(nc), *C2 = guarded_floats(nc);
  const float odd[4] = {0.0f, -0.0f, NAN, 1e-40f}; /* 1e-40: a denormal above zero */
  for (size_t i = 0; i < nc; i += 5)
    mask[i] = odd[(i / 5) % 4];
  memcpy(C1, C0, nc * sizeof(float));
  fp(A, B, NULL, C1, 0, g.M);
  int64_t cut = g.M / 2 / 8 * 8; /* a multiple of every row block */
  memcpy(C2, C0, nc * sizeof(float));
  fm(A, B, mask, C2, 0, cut);
  fm(A, B, mask, C2, cut, g.M);
  for (int64_t m = 0; m < g.M; m++)
    for (int64_t n = 0; n < g.ldc; n++) {
      size_t i = (size_t)(m * g.ldc + n);
      float want = n >= g.N ? C0[i] : mask[i] > 0 ? C1[i] : 0.0f;
      if (memcmp(&C2[i], &want, sizeof want))
        fail_msg("M=%lld N=%lld K=%lld ta=%d tb=%d: C[%lld,%lld] = %.9g, want %.9g (mask %g)",
                 (long long)g.M, (long long)g.N, (long long)g.K, g.trans_a, g.trans_b, (long long)m,
                 (long long)n, C2[i], want, mask[i]);
    }
  free_guarded(A, na), free_guarded(B, nb), free_guarded(mask, nc);
  free_guarded(C0, nc), free_guarded(C1, nc), free_guarded(C2, nc);
}

static void test_relu_mask(void **state) {
  fixture *f = *state;
  const int64_t shapes[][3] = {{64, 128, 256}, {64, 128, 10}, {19, 37, 70},
                               {13, 37, 1100}, {9, 11, 4200}, {7, 13, 5}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int l = 0; l < 4; l++) {
      gemm_case c = {shapes[s][0], shapes[s][1], shapes[s][2], l & 1, l >> 1, 0, 16, 3 * (l & 1)};
      check_relu_mask(f, gemm_of(&c));
    }
  gemm_case ch = {24, 45, 64, true, false, 0, 16, 2}; /* a weight gradient's 4 chunks */
  nnc_cg_gemm g = gemm_of(&ch);
  g.chunks = 4;
  check_relu_mask(f, g);
  for (int vw = 4; vw <= 8; vw *= 2) {
    gemm_case c = {23, 29, 41, false, vw == 8, 0, vw, 2};
    check_relu_mask(f, gemm_of(&c));
  }
}

/* FMAs (llvm.fmuladd calls) in the IR nnc_cg_emit_gemm gives for g. */
static int fmas_emitted(const nnc_cg_gemm *g) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext("count", ctx);
  LLVMValueRef fn = nnc_cg_emit_gemm(mod, "g", g);
  int n = 0;
  for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(fn); bb; bb = LLVMGetNextBasicBlock(bb))
    for (LLVMValueRef in = LLVMGetFirstInstruction(bb); in; in = LLVMGetNextInstruction(in)) {
      if (!LLVMIsACallInst(in)) continue;
      size_t len;
      const char *name = LLVMGetValueName2(LLVMGetCalledValue(in), &len);
      n += len >= 12 && !strncmp(name, "llvm.fmuladd", 12);
    }
  LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
  return n;
}

/* A product whose K is cut into blocks (first, middle ones, a shorter last
 * one) has one copy of its tile's k loop, run for every block, as an
 * unblocked product has: ku steps of mr x nr FMAs (compile time; it had
 * one copy per kind of block). 16 rows in one call: no remainder tiles. */
static void test_k_blocks_emitted_once(void **state) {
  (void)state;
  gemm_case c = {16, 48, 3000, false, false, EPI_BIAS | EPI_RELU, 16, 0};
  nnc_cg_gemm g = gemm_of(&c);
  g.all_rows = true;
  nnc_cg_gemm_plan p = nnc_cg_gemm_plan_for(&g);
  assert_int_equal(p.kind, NNC_CG_GEMM_OUTER);
  assert_true(p.kc < g.K && g.K % p.kc != 0 && g.K / p.kc >= 3); /* three kinds of block */
  assert_int_equal(g.M % p.mr, 0);
  assert_int_equal(fmas_emitted(&g), p.ku * p.mr * p.nr);
  g.K = 2 * p.kc + 3; /* an odd last block: one more step, in that block only */
  assert_int_equal(fmas_emitted(&g), (p.ku + 1) * p.mr * p.nr);
}

/* The chunked product (nnc_cg_gemm.chunks = G): G products of K / G
 * computed alone, from their slices of A and B, then added as
 * nnc_rt_tree_sum adds G vectors (pairwise, a[i] += a[i + width]), then
 * the epilogue; the chunked kernel must give exactly those bits. */
static void check_chunks_exact(fixture *f, const gemm_case *c, int64_t G) {
  char err[512];
  nnc_cg_gemm g = gemm_of(c), gc = g;
  int64_t kc = c->K / G;
  g.chunks = G;
  gc.K = kc;
  gc.chunks = 0;
  gc.bias = false, gc.act = NNC_CG_ACT_NONE, gc.accumulate = false;
  gemm_jit_fn whole = gemm_jit_compile(f->jit, &g, err, sizeof err);
  gemm_jit_fn part = whole ? gemm_jit_compile(f->jit, &gc, err, sizeof err) : NULL;
  if (!part) fail_msg("chunks: %s", err);
  size_t na = (size_t)(c->trans_a ? c->K * g.lda : c->M * g.lda);
  size_t nb = (size_t)(c->trans_b ? c->N * g.ldb : c->K * g.ldb);
  size_t nc = (size_t)(c->M * g.ldc);
  float *A = random_floats(na, &f->seed), *B = random_floats(nb, &f->seed);
  float *bias = random_floats((size_t)c->N, &f->seed), *C0 = random_floats(nc, &f->seed);
  float *got = guarded_floats(nc), *sums = guarded_floats(nc * (size_t)G);
  for (int64_t q = 0; q < G; q++) { /* chunk q: k in [q kc, (q+1) kc) */
    const float *Aq = A + (c->trans_a ? q * kc * g.lda : q * kc);
    const float *Bq = B + (c->trans_b ? q * kc : q * kc * g.ldb);
    part(Aq, Bq, NULL, sums + q * (int64_t)nc, 0, c->M);
  }
  for (int64_t width = 1; width < G; width *= 2)
    for (int64_t i = 0; i + width < G; i += 2 * width)
      for (size_t j = 0; j < nc; j++)
        sums[i * (int64_t)nc + (int64_t)j] += sums[(i + width) * (int64_t)nc + (int64_t)j];
  for (int64_t m = 0; m < c->M; m++)
    for (int64_t n = 0; n < c->N; n++) {
      float s = sums[m * g.ldc + n];
      if (g.bias) s += bias[n];
      if (g.act == NNC_CG_ACT_RELU && s < 0) s = 0;
      if (g.accumulate) s = C0[m * g.ldc + n] + s;
      sums[m * g.ldc + n] = s;
    }
  memcpy(got, C0, nc * sizeof(float));
  whole(A, B, g.bias ? bias : NULL, got, 0, c->M);
  for (int64_t m = 0; m < c->M; m++)
    if (memcmp(got + m * g.ldc, sums + m * g.ldc, (size_t)c->N * sizeof(float)))
      fail_msg("M=%lld N=%lld K=%lld ta=%d tb=%d epi=%d vw=%d chunks=%lld: row %lld differs from "
               "the chunk products added as a tree",
               (long long)c->M, (long long)c->N, (long long)c->K, c->trans_a, c->trans_b, c->epi,
               c->vector_width, (long long)G, (long long)m);
  free_guarded(A, na), free_guarded(B, nb), free_guarded(bias, (size_t)c->N);
  free_guarded(C0, nc), free_guarded(got, nc), free_guarded(sums, nc * (size_t)G);
}

/* Chunked products: every layout (so both kernels: dot with trans_b and a
 * long chunk), odd chunk lengths, chunks of a length the product alone
 * would block (1100), G = 2, 3 and 4, each epilogue; against the float64
 * reference and split over 1..3 row ranges (check_case), and bit for bit
 * against the chunk products and the tree. */
static void test_chunks(void **state) {
  fixture *f = *state;
  const int64_t shapes[][3] = {
      {13, 37, 7}, {17, 47, 33}, {9, 20, 16}, {25, 95, 129}, {6, 11, 1100}};
  const int64_t gs[] = {2, 4, 3};
  const int epis[] = {0, EPI_ACC, EPI_BIAS | EPI_RELU};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int l = 0; l < 4; l++)
      for (size_t gi = 0; gi < 3; gi++) {
        int epi = epis[(s + (size_t)l + gi) % 3], vw = (s + gi) % 4 == 3 ? 8 : 16;
        gemm_case c = {shapes[s][0], shapes[s][1], shapes[s][2] * gs[gi], l & 1, l >> 1,
                       epi,          vw,           (int64_t)(s % 2) * 3};
        check_chunked(f, &c, (row_promise){0, false}, gs[gi]);
        check_chunks_exact(f, &c, gs[gi]);
      }
}

/* Chunked products with chunks long enough to be cut into K blocks (the
 * outer kernel): several blocks per chunk, a partial last block of one
 * step or of a partial vector, odd chunk lengths, G = 2, 3, 4, every
 * layout, narrow and partial panels, each epilogue but accumulate + ReLU
 * (never blocked, and its kind is not the bare chunk's the check compares
 * with), vector widths 16 and 8; split over 1..3 row ranges and
 * bit for bit against the chunk products and the tree. Then more rows
 * than the scratch holds (several cache blocks), and a product too wide
 * for it (whole chunks in registers, as before). */
static void test_chunk_blocks(void **state) {
  fixture *f = *state;
  const int64_t shapes[][3] = {{13, 37, 1100}, {37, 11, 1537}, {8, 53, 1031}};
  const int64_t gs[] = {2, 3, 4};
  const int epis[] = {0, EPI_ACC | EPI_BIAS, EPI_BIAS | EPI_RELU, EPI_ACC};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (int l = 0; l < 4; l++) {
      size_t gi = (s + (size_t)l) % 3;
      int epi = epis[(s + (size_t)l) % 4], vw = l == 2 ? 8 : 16;
      gemm_case c = {shapes[s][0], shapes[s][1], shapes[s][2] * gs[gi], l & 1, l >> 1,
                     epi,          vw,           (int64_t)l % 2};
      nnc_cg_gemm g = gemm_of(&c);
      g.chunks = gs[gi];
      nnc_cg_gemm_plan p = nnc_cg_gemm_plan_for(&g);
      assert_true(p.kc < shapes[s][2]);
      check_chunked(f, &c, (row_promise){0, false}, gs[gi]);
      check_chunks_exact(f, &c, gs[gi]);
    }
  gemm_case tall = {170, 300, 4 * 1100, true, false, 0, 16, 0};
  nnc_cg_gemm g = gemm_of(&tall);
  g.chunks = 4;
  nnc_cg_gemm_plan p = nnc_cg_gemm_plan_for(&g);
  assert_true(p.kc < 1100 && p.mc < tall.M && p.mc * tall.N * 4 * 4 <= NNC_CG_CHUNK_SCRATCH);
  check_chunked(f, &tall, (row_promise){0, false}, 4);
  check_chunks_exact(f, &tall, 4);
  gemm_case wide = {3, 9000, 4 * 1100, true, false, 0, 16, 0};
  g = gemm_of(&wide);
  g.chunks = 4;
  assert_int_equal(nnc_cg_gemm_plan_for(&g).kc, g.K);
  check_chunks_exact(f, &wide, 4);
}

/* A chunked product with long chunks has one copy of its tile's k loop,
 * run for every block of every chunk (it had one per chunk, each over
 * the whole chunk in registers), and an odd chunk length adds one step,
 * in the last block only. */
static void test_chunk_blocks_emitted_once(void **state) {
  (void)state;
  gemm_case c = {16, 48, 4 * 3000, true, false, 0, 16, 0};
  nnc_cg_gemm g = gemm_of(&c);
  g.all_rows = true;
  g.chunks = 4;
  nnc_cg_gemm_plan p = nnc_cg_gemm_plan_for(&g);
  assert_int_equal(p.kind, NNC_CG_GEMM_OUTER);
  assert_true(p.kc < g.K / g.chunks);
  assert_int_equal(fmas_emitted(&g), p.ku * p.mr * p.nr);
  g.K = 4 * (2 * p.kc + 3);
  assert_int_equal(fmas_emitted(&g), (p.ku + 1) * p.mr * p.nr);
}

/* An unblocked chunked product (the MLP's weight gradients: K = the
 * batch, 4 chunks) runs its chunks two at a time with both chunks'
 * accumulators in registers: with whole tiles and panels, little more
 * than the first pair's sums (a tile's accumulators) waits on the stack
 * while the second pair runs (8 x 3 tiles one chunk at a time stored
 * every chunk sum but the last, 3 x 24 vectors a tile); and the result is
 * the chunk products added as the tree. */
static void test_chunk_pairs_in_registers(void **state) {
  fixture *f = *state;
  char err[512];
  gemm_case c = {48, 64, 64, true, false, 0, 16, 0};
  nnc_cg_gemm g = gemm_of(&c);
  g.all_rows = true;
  g.chunks = 4;
  nnc_cg_gemm_plan p = nnc_cg_gemm_plan_for(&g);
  assert_int_equal(p.kind, NNC_CG_GEMM_OUTER);
  assert_int_equal(p.kc, g.K);
  if (__builtin_cpu_supports("avx512f")) {
    char *text = gemm_jit_asm(f->jit, &g, err, sizeof err);
    if (!text) fail_msg("%s", err);
    int spills = 0;
    for (char *q = text; (q = strstr(q, "%zmm")); q++) {
      char *eol = strchr(q, '\n'), *sp = strstr(q, "(%rsp)");
      spills += sp && (!eol || sp < eol);
    }
    free(text);
    if (getenv("NNC_TEST_SPILLS")) fprintf(stderr, "chunked product: %d zmm stack moves\n", spills);
    assert_true(spills <= 2 * p.mr * p.nr); /* 15 here; 98 one chunk at a time */
  }
  check_chunks_exact(f, &c, 4);
}

/* A product split over two threads gets the same rows on each: the MLP's
 * weight gradients (256 rows in 6-row tiles) have row blocks that divide
 * 128, not 6-row blocks that give one thread 132 rows and the other 124;
 * products whose halves are whole tiles, or too short for a tile each,
 * keep the tile's rows. Ranges cut at such blocks give the same bits. */
static void test_row_block_even_halves(void **state) {
  fixture *f = *state;
  const int64_t ns[] = {784, 256};
  for (int i = 0; i < 2; i++) {
    gemm_case c = {256, ns[i], 64, true, false, 0, 16, 0};
    nnc_cg_gemm g = gemm_of(&c);
    g.chunks = 4;
    int64_t mr = nnc_cg_gemm_plan_for(&g).mr, rb = nnc_cg_gemm_row_block(&g);
    assert_int_equal(mr, 6);
    assert_int_equal(rb, 2);
    int64_t blocks = (g.M + rb - 1) / rb;
    assert_int_equal((blocks + 1) / 2 * rb, 128); /* the first thread's rows */
  }
  gemm_case fwd = {64, 256, 784, false, true, EPI_BIAS | EPI_RELU, 16, 0};
  nnc_cg_gemm gf = gemm_of(&fwd);
  assert_int_equal(nnc_cg_gemm_row_block(&gf), nnc_cg_gemm_plan_for(&gf).mr);
  gemm_case small = {10, 256, 64, true, false, 0, 16, 0};
  nnc_cg_gemm gs = gemm_of(&small);
  gs.chunks = 4;
  assert_int_equal(nnc_cg_gemm_row_block(&gs), nnc_cg_gemm_plan_for(&gs).mr);
  /* 32 rows: halves of 16, blocks of 2; the 2- and 4-row tiles this
   * leaves, bit for bit against one call */
  gemm_case c = {32, 80, 64, true, false, 0, 16, 0};
  nnc_cg_gemm g = gemm_of(&c);
  g.chunks = 4;
  int64_t rb = nnc_cg_gemm_row_block(&g);
  assert_int_equal(rb, 2);
  check_chunked(f, &c, (row_promise){rb, false}, 4);
}

/* The zmm FMA micro-kernel is what the optimiser leaves in the assembly. */
static void test_asm_has_zmm_fma(void **state) {
  fixture *f = *state;
  char err[512];
  for (int tb = 0; tb < 2; tb++) {
    gemm_case c = {64, 256, 784, false, tb, EPI_BIAS | EPI_RELU, 16, 0};
    nnc_cg_gemm g = gemm_of(&c);
    char *text = gemm_jit_asm(f->jit, &g, err, sizeof err);
    if (!text) fail_msg("%s", err);
    if (__builtin_cpu_supports("avx512f")) {
      /* vfmadd231ps (%rax), %zmm1, %zmm2 or with an {1to16} broadcast */
      bool found = false;
      for (char *p = text; (p = strstr(p, "vfmadd")) && !found; p++) {
        char *eol = strchr(p, '\n'), *z = strstr(p, "%zmm");
        found = z && (!eol || z < eol) && strncmp(p + 9, "ps", 2) == 0;
      }
      assert_true(found);
    }
    free(text);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_trans),
      cmocka_unit_test(test_trans_a),
      cmocka_unit_test(test_trans_b),
      cmocka_unit_test(test_trans_both),
      cmocka_unit_test(test_epilogues),
      cmocka_unit_test(test_vector_widths),
      cmocka_unit_test(test_model_shapes),
      cmocka_unit_test(test_k_blocks),
      cmocka_unit_test(test_k_blocks_emitted_once),
      cmocka_unit_test(test_row_promises),
      cmocka_unit_test(test_chunks),
      cmocka_unit_test(test_chunk_blocks),
      cmocka_unit_test(test_chunk_blocks_emitted_once),
      cmocka_unit_test(test_chunk_pairs_in_registers),
      cmocka_unit_test(test_row_block_even_halves),
      cmocka_unit_test(test_asm_has_zmm_fma),
      cmocka_unit_test(test_relu_mask),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
