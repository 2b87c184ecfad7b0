/* gemm_plan.h: a matrix product as the kernel IR describes it (shapes,
 * layouts, fused epilogue) and how it is tiled. Plain C, no LLVM: the
 * kernel IR (kernel.h) carries an nnc_cg_gemm for every product kernel and
 * any backend reads it; the LLVM backend emits it through gemm.h.
 *
 * Rows of C are independent, so the caller splits [0, M) over threads in
 * multiples of nnc_cg_gemm_row_block; every element of C is computed with
 * the same arithmetic (same K order) wherever it runs, so results do not
 * depend on the thread count.
 */
#ifndef NNC_CG_GEMM_PLAN_H
#define NNC_CG_GEMM_PLAN_H

#include <stdbool.h>
#include <stdint.h>

/* The activation a product applies last. RELU_MASK is ReLU's backward
 * pass on the product (an input gradient dy.W^T): C = mask > 0 ? r : 0,
 * where mask is a tensor stored as C is (row stride ldc), the ReLU's
 * output, passed in the bias parameter (the product has no bias). */
typedef enum nnc_cg_act { NNC_CG_ACT_NONE, NNC_CG_ACT_RELU, NNC_CG_ACT_RELU_MASK } nnc_cg_act;

typedef struct nnc_cg_gemm {
  int64_t M, N, K;
  bool trans_a;          /* A stored [K, M] instead of [M, K] */
  bool trans_b;          /* B stored [N, K] instead of [K, N] */
  int64_t lda, ldb, ldc; /* row strides in elements of A, B, C as stored */
  bool accumulate;       /* C += A.B instead of C = A.B */
  bool bias;             /* add bias[n] (a row vector of N) before the activation */
  nnc_cg_act act;        /* applied last */
  int vector_width;      /* floats per vector the target prefers: 16 (AVX-512), 8, 4 */
  bool all_rows;         /* every call computes rows [0, M): the row range is
                            ignored and the row loops get constant bounds (no
                            code for tiles that never run) */
  int64_t row_align;     /* when M is a multiple of it: every row range is
                            too (then tiles for the remainders no range can
                            leave are not emitted); 0 or 1: no promise */
  bool bf16;             /* operands rounded to bf16, f32 accumulation
                            (gemm_bf16.c) where nnc_cg_gemm_bf16_applies */
  int64_t chunks;        /* > 1: K is `chunks` chunks of K / chunks (it
                            divides K); each chunk is summed from zero
                            exactly as a product of that K alone is, and
                            the chunk sums are added as a pairwise tree,
                            (c0 + c1) + (c2 + c3), the order in which the
                            runtime adds micro-batch gradients
                            (docs/distributed.md). 0 or 1: one sum over K */
} nnc_cg_gemm;

/* Bytes of stack a chunked product's K blocks may use for its chunks'
 * partial sums (nnc_cg_gemm_plan.kc). */
#define NNC_CG_CHUNK_SCRATCH (384 * 1024)

typedef enum nnc_cg_gemm_kind { NNC_CG_GEMM_OUTER, NNC_CG_GEMM_DOT } nnc_cg_gemm_kind;

/* How a product is tiled. Rows: cache blocks of mc rows, each split into
 * micro-tiles of mr rows, then a cascade of power-of-two tiles for the
 * rest. Columns: panels of nr vectors (outer) or nr columns (dot), the
 * last panel narrower. */
typedef struct nnc_cg_gemm_plan {
  nnc_cg_gemm_kind kind;
  int vl;     /* floats per vector */
  int regs;   /* vector registers of the target */
  int mr;     /* rows per full micro-tile */
  int nr;     /* outer: vectors per panel; dot: columns per panel */
  int ku;     /* unroll of the k loop */
  int64_t mc; /* rows per cache block */
  int64_t kc; /* k per block (K when not blocked); when it is less than K,
                 a multiple of vl and ku (gemm.c runs the blocks in a loop
                 whose last block alone may hold a partial vector or step).
                 A chunked product's blocks cut each chunk the same way:
                 its partial sums go to a scratch of chunks x mc x N floats
                 on the stack (at most NNC_CG_CHUNK_SCRATCH bytes) and C is
                 written once, after the last chunk */
  bool fold;  /* accumulate with K blocks: C's old value starts the sum */
} nnc_cg_gemm_plan;

/* The k of one chunk of g: K / chunks, or K. */
int64_t nnc_cg_gemm_chunk_k(const nnc_cg_gemm *g);
/* Floats per vector register for a target's vector width: 16, 8 or 4. */
int nnc_cg_lanes(int vector_width);

/* The tiling of g. The arithmetic of an element of C (the kernel kind and
 * K blocking) depends on the layouts, the chunk's k and N, and on M only
 * through one threshold (M >= 1024 takes the outer kernel), so a product
 * at a batch's rows and one at a micro-batch's compute an element alike
 * unless their row counts straddle it (docs/distributed.md). */
nnc_cg_gemm_plan nnc_cg_gemm_plan_for(const nnc_cg_gemm *g);
/* Do x and y describe the same product (every field equal)? */
bool nnc_cg_gemm_eq(const nnc_cg_gemm *x, const nnc_cg_gemm *y);

/* Whether g is emitted by the bf16 kernel (gemm_bf16.c): g->bf16 on an
 * AVX-512 target (vector_width 16), K > 0, no RELU_MASK, and no activation after an
 * accumulate that spans several k blocks. Otherwise the f32 kernel. */
bool nnc_cg_gemm_bf16_applies(const nnc_cg_gemm *g);

/* Rows per block the kernel prefers; the caller splits work in multiples.
 * A tile's rows, or a divisor of them that cuts M into two equal halves
 * where whole tiles cannot. */
int64_t nnc_cg_gemm_row_block(const nnc_cg_gemm *g);

#endif
