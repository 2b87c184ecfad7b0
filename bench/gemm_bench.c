/* gemm_bench.c: single-thread GFLOP/s of the emitted matrix-product kernels.
 *
 * Times nnc_cg_emit_gemm kernels (JITed through tests/codegen/gemm/gemm_jit.c)
 * on the products of one training step of the benchmark MLP 784-256-256-10
 * at batch 64, plus a convolution-sized product, each against OpenBLAS's
 * cblas_sgemm on one thread when built with it (NNC_BENCH_OPENBLAS). Prints
 * the median of several timed runs per shape, checks each kernel against a
 * double-precision reference, and counts zmm FMAs in the first kernel's
 * assembly. On a CPU with AVX512-BF16 also the bf16 kernel of each product
 * (precision = bf16, gemm_bf16.c: operands rounded while packed, same f32
 * data in memory). The CNN's conv weight gradients also chunked (the bf16
 * column then shows f32: chunked products are f32's). Not a test: the numbers depend on the machine
 * and its load.
 *
 *   build-gemm/gemm_bench [runs] [WORD] [cpu] [best]
 *
 * WORD: only the products whose name has it; cpu: rates from the thread's
 * CPU time (a loaded machine); best: the fastest of the runs instead of
 * their median (the run least disturbed by other processes).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <math.h>

#include "tests/codegen/gemm/gemm_jit.h"

#ifdef NNC_BENCH_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int n);
#endif

typedef struct shape {
  const char *what;
  int64_t M, N, K;
  bool trans_a, trans_b, bias, relu;
  int64_t chunks; /* nnc_cg_gemm.chunks: K summed as chunks added as a tree */
} shape;

static const shape shapes[] = {
    {"fwd1  x.W1^T +b relu", 64, 256, 784, false, true, true, true, 0},
    /* fwd1 as each of two threads runs it: split over W1's rows (lower_matmul.c
     * column_split), every thread all 64 rows of x and 128 columns */
    {"fwd1h x.W1^T +b relu", 64, 128, 784, false, true, true, true, 0},
    {"fwd2  h.W2^T +b relu", 64, 256, 256, false, true, true, true, 0},
    {"fwd3  h.W3^T +b     ", 64, 10, 256, false, true, true, false, 0},
    {"dX2   dY.W2         ", 64, 256, 256, false, false, false, false, 0},
    {"dX3   dY.W3         ", 64, 256, 10, false, false, false, false, 0},
    {"dW1   dY^T.X        ", 256, 784, 64, true, false, false, false, 0},
    {"dW2   dY^T.H        ", 256, 256, 64, true, false, false, false, 0},
    {"dW3   dY^T.H        ", 10, 256, 64, true, false, false, false, 0},
    /* The MLP's weight gradients as its ordinary step computes them: the
     * batch of 64 summed as 4 chunks of 16 added as a tree. */
    {"dW1 4 chunks dY^T.X ", 256, 784, 64, true, false, false, false, 4},
    {"dW2 4 chunks dY^T.H ", 256, 256, 64, true, false, false, false, 4},
    {"conv  im2col.W      ", 50176, 64, 288, false, false, true, true, 0},
    /* Other paths: packed B^T (short K, both transposed), K blocks. */
    {"x.W^T short K packed ", 64, 256, 16, false, true, false, false, 0},
    {"A^T.B^T packed       ", 256, 256, 64, true, true, false, false, 0},
    {"conv dW  dY^T.col    ", 64, 288, 50176, true, false, false, false, 0},
    {"x.W^T long K blocked ", 64, 256, 20000, false, true, false, false, 0},
    /* The CNN's products with K in blocks (fashion_cnn: dense 1 forward,
     * the conv 2 and conv 1 weight gradients). */
    {"cnn dense1 fwd blocked", 64, 128, 3136, false, true, true, true, 0},
    {"cnn conv2 dW blocked  ", 64, 144, 12544, false, true, false, false, 0},
    {"cnn conv1 dW blocked  ", 32, 9, 50176, false, true, false, false, 0},
    /* The same two weight gradients chunked as synchronised batch norm
     * makes them (4 micro-batches of 16: each chunk summed from zero in K
     * blocks, the chunk sums added as a tree; docs/distributed.md). */
    {"cnn conv2 dW 4 chunks ", 64, 144, 12544, false, true, false, false, 4},
    {"cnn conv1 dW 4 chunks ", 32, 9, 50176, false, true, false, false, 4},
};

/* CLOCK_MONOTONIC, or CLOCK_THREAD_CPUTIME_ID (the `cpu` argument: the
 * time the thread ran, not the time it waited for a core on a loaded
 * machine). */
static double now(clockid_t clk) {
  struct timespec t;
  clock_gettime(clk, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static float *random_floats(size_t n, unsigned *seed) {
  float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
  for (size_t i = 0; i < n; i++) {
    *seed = *seed * 1664525u + 1013904223u;
    p[i] = (float)((*seed >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  return p;
}

static nnc_cg_gemm gemm_of(const shape *s) {
  nnc_cg_gemm g = {0};
  g.M = s->M, g.N = s->N, g.K = s->K;
  g.trans_a = s->trans_a, g.trans_b = s->trans_b;
  g.lda = s->trans_a ? s->M : s->K;
  g.ldb = s->trans_b ? s->K : s->N;
  g.ldc = s->N;
  g.bias = s->bias;
  g.act = s->relu ? NNC_CG_ACT_RELU : NNC_CG_ACT_NONE;
  g.vector_width = 16;
  g.chunks = s->chunks;
  return g;
}

/* Largest |C - reference| over a sample of rows, relative to sum |a*b|. */
static double check(const nnc_cg_gemm *g, const float *A, const float *B, const float *bias,
                    const float *C) {
  double worst = 0;
  int64_t step = g->M > 64 ? g->M / 61 : 1;
  for (int64_t m = 0; m < g->M; m += step)
    for (int64_t n = 0; n < g->N; n++) {
      double s = 0, mag = 1e-30;
      for (int64_t k = 0; k < g->K; k++) {
        double a = g->trans_a ? A[k * g->lda + m] : A[m * g->lda + k];
        double b = g->trans_b ? B[n * g->ldb + k] : B[k * g->ldb + n];
        s += a * b, mag += fabs(a * b);
      }
      if (g->bias) s += bias[n];
      if (g->act == NNC_CG_ACT_RELU && s < 0) s = 0;
      double err = fabs(C[m * g->ldc + n] - s) / mag;
      if (err > worst) worst = err;
    }
  return worst;
}

typedef struct timing_args {
  gemm_jit_fn fn;
  const nnc_cg_gemm *g;
  const float *A, *B, *bias;
  float *C;
} timing_args;

static void run_kernel(const timing_args *t) {
  t->fn(t->A, t->B, t->bias, t->C, 0, t->g->M);
}

/* Rows in two calls, as two threads would (each packs its own panels). */
static void run_halves(const timing_args *t) {
  int64_t half = t->g->M / 2;
  t->fn(t->A, t->B, t->bias, t->C, 0, half);
  t->fn(t->A, t->B, t->bias, t->C, half, t->g->M);
}

#ifdef NNC_BENCH_OPENBLAS
static void run_blas(const timing_args *t) {
  const nnc_cg_gemm *g = t->g;
  cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
              g->trans_b ? CblasTrans : CblasNoTrans, (int)g->M, (int)g->N, (int)g->K, 1.0f, t->A,
              (int)g->lda, t->B, (int)g->ldb, 0.0f, t->C, (int)g->ldc);
}
#endif

/* Median GFLOP/s over `runs` timed batches of ~20 ms each (best: the fastest). */
static double gflops(void (*f)(const timing_args *), const timing_args *t, int runs, clockid_t clk,
                     bool best) {
  double flop = 2.0 * (double)t->g->M * (double)t->g->N * (double)t->g->K;
  int reps = 1;
  f(t);
  double t0 = now(clk);
  f(t);
  double one = now(clk) - t0;
  if (one < 0.02) reps = (int)(0.02 / (one + 1e-9)) + 1;
  double rate[64];
  if (runs > 64) runs = 64;
  for (int r = 0; r < runs; r++) {
    t0 = now(clk);
    for (int i = 0; i < reps; i++)
      f(t);
    rate[r] = flop * reps / (now(clk) - t0) * 1e-9;
  }
  qsort(rate, (size_t)runs, sizeof rate[0], cmp_double);
  return best ? rate[runs - 1] : rate[runs / 2];
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 7;
  bool cpu = false, best = false;
  for (int a = 3; a < argc; a++) {
    cpu |= !strcmp(argv[a], "cpu");
    best |= !strcmp(argv[a], "best");
  }
  clockid_t clk = cpu ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
  if (runs < 1) runs = 1;
  char err[512];
  gemm_jit *j = gemm_jit_create(err, sizeof err);
  if (!j) {
    fprintf(stderr, "gemm_bench: %s\n", err);
    return 1;
  }
#ifdef NNC_BENCH_OPENBLAS
  openblas_set_num_threads(1);
#endif
  nnc_cg_gemm first = gemm_of(&shapes[0]);
  char *text = gemm_jit_asm(j, &first, err, sizeof err);
  int fmas = 0;
  for (char *p = text; p && (p = strstr(p, "vfmadd")); p++) {
    char *eol = strchr(p, '\n');
    char *z = strstr(p, "%zmm");
    if (z && (!eol || z < eol)) fmas++;
  }
  printf("%s: %d vfmadd...ps %%zmm instructions in its assembly\n", shapes[0].what, fmas);
  free(text);

  printf("%-21s %6s %6s %6s  %8s  %8s  %8s  %8s  %s\n", "product", "M", "N", "K", "nnc", "nnc/2",
         "openblas", "nnc bf16", "rel.err");
  unsigned seed = 12345;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    if (argc > 2 && !strstr(shapes[s].what, argv[2])) continue;
    nnc_cg_gemm g = gemm_of(&shapes[s]);
    float *A = random_floats((size_t)(g.M * g.K), &seed);
    float *B = random_floats((size_t)(g.N * g.K), &seed);
    float *bias = random_floats((size_t)g.N, &seed);
    float *C = random_floats((size_t)(g.M * g.N), &seed);
    gemm_jit_fn fn = gemm_jit_compile(j, &g, err, sizeof err);
    if (!fn) {
      fprintf(stderr, "gemm_bench: %s\n", err);
      return 1;
    }
    timing_args t = {fn, &g, A, B, bias, C};
    double ours = gflops(run_kernel, &t, runs, clk, best),
           halves = gflops(run_halves, &t, runs, clk, best);
    double rel = check(&g, A, B, bias, C);
    double blas = 0, bf16 = 0;
#ifdef NNC_BENCH_OPENBLAS
    blas = gflops(run_blas, &t, runs, clk, best);
#endif
    if (__builtin_cpu_supports("avx512bf16")) {
      nnc_cg_gemm gb = g;
      gb.bf16 = true;
      timing_args tb = t;
      tb.g = &gb;
      tb.fn = gemm_jit_compile(j, &gb, err, sizeof err);
      if (!tb.fn) {
        fprintf(stderr, "gemm_bench: %s\n", err);
        return 1;
      }
      bf16 = gflops(run_kernel, &tb, runs, clk, best);
    }
    printf("%-21s %6lld %6lld %6lld  %8.1f  %8.1f  %8.1f  %8.1f  %.1e\n", shapes[s].what,
           (long long)g.M, (long long)g.N, (long long)g.K, ours, halves, blas, bf16, rel);
    free(A), free(B), free(bias), free(C);
  }
  gemm_jit_free(j);
  return 0;
}
