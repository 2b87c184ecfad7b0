/* cg_loop.h: a counted loop with loop-carried values in LLVM IR, shared by
 * the product and convolution emitters (gemm.c and gemm_dot.c through
 * gemm_emit.h, gemm_bf16.c, conv_direct.c, conv_dw.c), and the call of an
 * overloaded intrinsic they and the expression emitters share (math.c).
 * Private to codegen. */
#ifndef NNC_CG_LOOP_H
#define NNC_CG_LOOP_H

#include <llvm-c/Core.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A call of LLVM intrinsic `name` (llvm.fma, llvm.masked.load, ...),
 * overloaded on the nover types over[], at builder b in module mod. */
static inline LLVMValueRef nnc_cg_call_intrinsic(LLVMModuleRef mod, LLVMBuilderRef b,
                                                 const char *name, LLVMTypeRef *over, size_t nover,
                                                 LLVMValueRef *args, unsigned nargs) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(mod, id, over, nover);
  LLVMTypeRef ft = LLVMIntrinsicGetType(LLVMGetModuleContext(mod), id, over, nover);
  return LLVMBuildCall2(b, ft, fn, args, nargs, "");
}

#define NNC_CG_LOOP_MAX_CARRY 32 /* loop-carried values one loop may hold */

typedef struct nnc_cg_loop {
  LLVMBasicBlockRef head, body, exit;
  LLVMValueRef iv;
  LLVMValueRef back; /* the latch's branch to the head (set by close) */
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
  l->back = LLVMBuildBr(b, l->head);
  LLVMPositionBuilderAtEnd(b, l->exit);
}

#endif
