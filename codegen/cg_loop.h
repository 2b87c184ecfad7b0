/* cg_loop.h: a counted loop with loop-carried values in LLVM IR, shared by
 * the product emitters (gemm.c and gemm_dot.c through gemm_emit.h, and
 * gemm_bf16.c). Private to codegen. */
#ifndef NNC_CG_LOOP_H
#define NNC_CG_LOOP_H

#include <llvm-c/Core.h>
#include <stdint.h>

#define NNC_CG_LOOP_MAX_CARRY 32 /* loop-carried values one loop may hold */

typedef struct nnc_cg_loop {
  LLVMBasicBlockRef head, body, exit;
  LLVMValueRef iv;
  int n;
  LLVMValueRef carry[NNC_CG_LOOP_MAX_CARRY];
} nnc_cg_loop;

/* for (iv = start; iv < limit; iv += step) with n loop-carried values
 * (init[] on entry), emitted with builder b into fn; start and limit are
 * i64. After nnc_cg_loop_close the builder sits in the exit block and
 * l->carry[] are the values after the last iteration (header phis
 * dominate the exit). */
static inline void nnc_cg_loop_open(LLVMBuilderRef b, LLVMContextRef ctx, LLVMValueRef fn,
                                    nnc_cg_loop *l, LLVMValueRef start, LLVMValueRef limit, int n,
                                    const LLVMValueRef *init, const char *name) {
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(b);
  l->head = LLVMAppendBasicBlockInContext(ctx, fn, name);
  l->body = LLVMAppendBasicBlockInContext(ctx, fn, name);
  l->exit = LLVMAppendBasicBlockInContext(ctx, fn, name);
  l->n = n;
  LLVMBuildBr(b, l->head);
  LLVMPositionBuilderAtEnd(b, l->head);
  l->iv = LLVMBuildPhi(b, LLVMTypeOf(start), "");
  LLVMAddIncoming(l->iv, &start, &pre, 1);
  for (int i = 0; i < n; i++) {
    l->carry[i] = LLVMBuildPhi(b, LLVMTypeOf(init[i]), "");
    LLVMAddIncoming(l->carry[i], (LLVMValueRef *)&init[i], &pre, 1);
  }
  LLVMValueRef more = LLVMBuildICmp(b, LLVMIntSLT, l->iv, limit, "");
  LLVMBuildCondBr(b, more, l->body, l->exit);
  LLVMPositionBuilderAtEnd(b, l->body);
}

/* The latch: iv += step, the carried values become next[]. */
static inline void nnc_cg_loop_close(LLVMBuilderRef b, nnc_cg_loop *l, int64_t step,
                                     const LLVMValueRef *next) {
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(b);
  LLVMValueRef iv_next =
      LLVMBuildAdd(b, l->iv, LLVMConstInt(LLVMTypeOf(l->iv), (uint64_t)step, 1), "");
  LLVMAddIncoming(l->iv, &iv_next, &latch, 1);
  for (int i = 0; i < l->n; i++)
    LLVMAddIncoming(l->carry[i], (LLVMValueRef *)&next[i], &latch, 1);
  LLVMBuildBr(b, l->head);
  LLVMPositionBuilderAtEnd(b, l->exit);
}

#endif
