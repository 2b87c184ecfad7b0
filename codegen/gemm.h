/* gemm.h: shape-specialised matrix-product kernels emitted as LLVM IR.
 *
 * The kernel lowering (lower.c) calls nnc_cg_emit_gemm for every MATMUL
 * node; it emits one function specialised to the shapes, layouts and fused
 * epilogue, using register-blocked AVX-512 FMA micro-kernels where the
 * target has them. Rows of C are independent, so the caller splits
 * [0, M) over threads; every element of C is computed with the same
 * arithmetic (same K order) wherever it runs, so results do not depend on
 * the thread count.
 */
#ifndef NNC_CG_GEMM_H
#define NNC_CG_GEMM_H

#include <stdbool.h>
#include <stdint.h>

#include <llvm-c/Core.h>

typedef enum nnc_cg_act { NNC_CG_ACT_NONE, NNC_CG_ACT_RELU } nnc_cg_act;

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
} nnc_cg_gemm;

/* Emits into mod a function
 *   void NAME(const float *A, const float *B, const float *bias, float *C,
 *             int64_t row_begin, int64_t row_end)
 * computing rows [row_begin, row_end) of C (f32). bias may be NULL when
 * !g->bias. Returns the function. The caller sets target attributes
 * ("target-cpu", "target-features", "prefer-vector-width") on it.
 * The epilogue order is: r = A.B + bias[n]; r = act(r); then C = r, or
 * C = C + r when accumulate. A, B and bias are read only and must not
 * overlap C (the parameters are marked noalias). Rows outside the range
 * and columns of C beyond N (ldc > N) are not touched. */
LLVMValueRef nnc_cg_emit_gemm(LLVMModuleRef mod, const char *name, const nnc_cg_gemm *g);

/* Rows per block the kernel prefers; the caller splits work in multiples. */
int64_t nnc_cg_gemm_row_block(const nnc_cg_gemm *g);

#endif
