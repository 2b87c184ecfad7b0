/* gemm.h: shape-specialised matrix-product kernels emitted as LLVM IR.
 *
 * The LLVM backend calls nnc_cg_emit_gemm for every product kernel of the
 * kernel IR (an nnc_cg_gemm, gemm_plan.h); it emits one function
 * specialised to the shapes, layouts and fused epilogue, using
 * register-blocked AVX-512 FMA micro-kernels where the target has them,
 * tiled as nnc_cg_gemm_plan_for says.
 */
#ifndef NNC_CG_GEMM_H
#define NNC_CG_GEMM_H

#include <stdbool.h>
#include <stdint.h>

#include <llvm-c/Core.h>

#include "gemm_plan.h"

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

/* What a product does with each finished piece of C instead of storing
 * it (an optimizer update fused into its weight gradient's product,
 * lower_update.c). The function gets a seventh parameter, `ptr extra`,
 * passed to begin, once, in its entry block; then store is called in
 * place of every store of C: v holds the finished values of elements
 * [idx, idx + lanes) of C (idx an i64 element index from C's pointer,
 * v a vector of at least `lanes` floats, the rest undefined). Only for
 * products whose C is finished in one pass (one k block, no accumulate)
 * and that are not emitted by the bf16 kernel. */
typedef struct nnc_cg_gemm_store {
  void *ctx;
  void (*begin)(void *ctx, LLVMBuilderRef b, LLVMValueRef extra);
  void (*store)(void *ctx, LLVMBuilderRef b, LLVMValueRef v, LLVMValueRef idx, int lanes);
} nnc_cg_gemm_store;

/* nnc_cg_emit_gemm with C's stores replaced by st (NULL: stored). */
LLVMValueRef nnc_cg_emit_gemm_to(LLVMModuleRef mod, const char *name, const nnc_cg_gemm *g,
                                 const nnc_cg_gemm_store *st);

/* The function every product kernel is (both emitters above):
 *   void name(ptr A, ptr B, ptr bias, ptr C, i64 row_begin, i64 row_end)
 * with A, B, bias and C noalias and nocapture, and with `extra` a seventh
 * parameter `ptr` (nnc_cg_gemm_store). args receives the parameters, *b a
 * new builder at the entry block (the caller disposes). */
LLVMValueRef nnc_cg_gemm_fn(LLVMModuleRef mod, const char *name, bool extra, LLVMValueRef args[7],
                            LLVMBuilderRef *b);

/* Does g's function pack each panel of B (stored [N,K]) into a copy on
 * the stack, through the product's pack function (nnc_cg_gemm_helpers)? */
bool nnc_cg_gemm_packs_b(const nnc_cg_gemm *g);

/* The functions gemm.c emitted with product def (its packing of B stored
 * [N,K], shared by its panels; named DEF.packVL, after def in its module)
 * are passed to attrs, which gives them the product's target attributes. */
void nnc_cg_gemm_helpers(LLVMValueRef def, void (*attrs)(void *ctx, LLVMValueRef fn), void *ctx);

/* The same with bf16 operands and f32 accumulation (AVX512-BF16,
 * gemm_bf16.c); nnc_cg_emit_gemm calls it where nnc_cg_gemm_bf16_applies.
 * The target must have avx512bf16. */
LLVMValueRef nnc_cg_emit_gemm_bf16(LLVMModuleRef mod, const char *name, const nnc_cg_gemm *g);

#endif
