/* llvm_predict.c: the interface of a deployed inference program in LLVM IR
 * (kernel.h's nnc_kdeploy; emit.c writes it as an object with a header).
 *
 * The weights block becomes one private constant global in .rodata, which
 * the kernels address instead of the arena for persistent tensors
 * (llvm.c's nnc_ll_buffer_ptr). PREFIX_predict is the only exported symbol:
 *
 *   i32 PREFIX_predict(ptr input, ptr output, ptr workspace)
 *
 * returns 1 for a NULL argument, 2 for a misaligned one; else prepares the
 * input in the workspace exactly as the runtime prepares data (times the
 * scale, minus the mean, over the std: plain IEEE operations, no fast-math
 * flags), calls the eval entry point (which runs every kernel on this
 * thread: no runtime needed) and copies the prediction out. It mirrors
 * predict_function and prepare_input of emit_c.c.
 */
#include <string.h>

#include "llvm_internal.h"

LLVMValueRef nnc_ll_constant(emitter *E, const char *name, const void *data, size_t n) {
  LLVMValueRef init = LLVMConstStringInContext2(E->ctx, data, n, 1);
  LLVMValueRef g = LLVMAddGlobal(E->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMPrivateLinkage);
  LLVMSetAlignment(g, 64);
  return g;
}

LLVMValueRef nnc_ll_weights(emitter *E) {
  const char *name = "nnc.weights";
  LLVMValueRef g = LLVMGetNamedGlobal(E->mod, name);
  if (g) return g;
  const nnc_kdeploy *d = E->p->deploy;
  return nnc_ll_constant(E, name, d->weights, (size_t)d->weights_bytes);
}

static LLVMValueRef float_table(emitter *E, const char *name, const float *x, int64_t n) {
  return nnc_ll_constant(E, name, x, sizeof(float) * (size_t)n);
}

nnc_ll_loop nnc_ll_loop_open(emitter *E, LLVMValueRef fn, int64_t from, int64_t to, int64_t step) {
  nnc_ll_loop l = {.step = step};
  l.pre = LLVMGetInsertBlock(E->b);
  l.head = LLVMAppendBasicBlockInContext(E->ctx, fn, "loop");
  l.body = LLVMAppendBasicBlockInContext(E->ctx, fn, "body");
  l.exit = LLVMAppendBasicBlockInContext(E->ctx, fn, "exit");
  LLVMBuildBr(E->b, l.head);
  LLVMPositionBuilderAtEnd(E->b, l.head);
  l.i = LLVMBuildPhi(E->b, E->ti64, "i");
  LLVMValueRef start = LLVMConstInt(E->ti64, (unsigned long long)from, 0);
  LLVMAddIncoming(l.i, &start, &l.pre, 1);
  LLVMValueRef more =
      LLVMBuildICmp(E->b, LLVMIntSLT, l.i, LLVMConstInt(E->ti64, (unsigned long long)to, 0), "");
  LLVMBuildCondBr(E->b, more, l.body, l.exit);
  LLVMPositionBuilderAtEnd(E->b, l.body);
  return l;
}

void nnc_ll_loop_close(emitter *E, nnc_ll_loop *l) {
  LLVMValueRef next =
      LLVMBuildAdd(E->b, l->i, LLVMConstInt(E->ti64, (unsigned long long)l->step, 0), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(E->b);
  LLVMBuildBr(E->b, l->head);
  LLVMAddIncoming(l->i, &next, &latch, 1);
  LLVMPositionBuilderAtEnd(E->b, l->exit);
}

/* ptr + byte offset + i * 4 */
static LLVMValueRef element(emitter *E, LLVMValueRef ptr, int64_t offset, LLVMValueRef i) {
  LLVMValueRef off = LLVMConstInt(E->ti64, (unsigned long long)offset, 0);
  LLVMValueRef at = LLVMBuildInBoundsGEP2(E->b, E->ti8, ptr, &off, 1, "");
  return LLVMBuildInBoundsGEP2(E->b, E->tf32, at, &i, 1, "");
}

/* Returns `code` from fn when cond holds, else goes on. */
static void return_if(emitter *E, LLVMValueRef fn, LLVMValueRef cond, int code) {
  LLVMBasicBlockRef bail = LLVMAppendBasicBlockInContext(E->ctx, fn, "bail");
  LLVMBasicBlockRef go = LLVMAppendBasicBlockInContext(E->ctx, fn, "go");
  LLVMBuildCondBr(E->b, cond, bail, go);
  LLVMPositionBuilderAtEnd(E->b, bail);
  LLVMBuildRet(E->b, LLVMConstInt(E->ti32, (unsigned long long)code, 0));
  LLVMPositionBuilderAtEnd(E->b, go);
}

static LLVMValueRef misaligned(emitter *E, LLVMValueRef p, int64_t align) {
  LLVMValueRef bits = LLVMBuildPtrToInt(E->b, p, E->ti64, "");
  bits = LLVMBuildAnd(E->b, bits, LLVMConstInt(E->ti64, (unsigned long long)(align - 1), 0), "");
  return LLVMBuildICmp(E->b, LLVMIntNE, bits, LLVMConstInt(E->ti64, 0, 0), "");
}

void nnc_ll_emit_predict(emitter *E, LLVMValueRef run) {
  const nnc_kdeploy *d = E->p->deploy;
  LLVMTypeRef params[3] = {E->tptr, E->tptr, E->tptr};
  LLVMValueRef fn = LLVMAddFunction(E->mod, d->predict, LLVMFunctionType(E->ti32, params, 3, 0));
  LLVMAddAttributeAtIndex(
      fn, LLVMAttributeFunctionIndex,
      LLVMCreateStringAttribute(E->ctx, "target-cpu", 10, E->t->cpu, (unsigned)strlen(E->t->cpu)));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateStringAttribute(E->ctx, "target-features", 15, E->t->features,
                                                    (unsigned)strlen(E->t->features)));
  LLVMValueRef in = LLVMGetParam(fn, 0), out = LLVMGetParam(fn, 1), ws = LLVMGetParam(fn, 2);
  LLVMPositionBuilderAtEnd(E->b, LLVMAppendBasicBlockInContext(E->ctx, fn, "entry"));
  LLVMValueRef null = LLVMConstNull(E->tptr);
  LLVMValueRef any_null =
      LLVMBuildOr(E->b, LLVMBuildICmp(E->b, LLVMIntEQ, in, null, ""),
                  LLVMBuildOr(E->b, LLVMBuildICmp(E->b, LLVMIntEQ, out, null, ""),
                              LLVMBuildICmp(E->b, LLVMIntEQ, ws, null, ""), ""),
                  "");
  return_if(E, fn, any_null, 1);
  LLVMValueRef bad =
      LLVMBuildOr(E->b, misaligned(E, ws, d->workspace_align),
                  LLVMBuildOr(E->b, misaligned(E, in, 4), misaligned(E, out, 4), ""), "");
  return_if(E, fn, bad, 2);
  /* The input, prepared as the runtime prepares data. */
  LLVMValueRef mean = d->mean ? float_table(E, "nnc.input_mean", d->mean, d->in_size) : NULL;
  LLVMValueRef std = d->std ? float_table(E, "nnc.input_std", d->std, d->in_size) : NULL;
  nnc_ll_loop c = nnc_ll_loop_open(E, fn, 0, d->in_count, 1);
  LLVMTypeRef et = d->in_i32 ? E->ti32 : E->tf32;
  LLVMValueRef v = LLVMBuildLoad2(E->b, et, element(E, in, 0, c.i), "");
  if (!d->in_i32) {
    if (d->scale != 1) v = LLVMBuildFMul(E->b, v, LLVMConstReal(E->tf32, d->scale), "");
    if (mean) {
      LLVMValueRef j =
          LLVMBuildSRem(E->b, c.i, LLVMConstInt(E->ti64, (unsigned long long)d->in_size, 0), "");
      v = LLVMBuildFSub(E->b, v, LLVMBuildLoad2(E->b, E->tf32, element(E, mean, 0, j), ""), "");
      v = LLVMBuildFDiv(E->b, v, LLVMBuildLoad2(E->b, E->tf32, element(E, std, 0, j), ""), "");
    }
  }
  LLVMBuildStore(E->b, v, element(E, ws, d->x_offset, c.i));
  nnc_ll_loop_close(E, &c);
  LLVMValueRef args[2] = {ws, null};
  LLVMBuildCall2(E->b, LLVMGlobalGetValueType(run), run, args, 2, "");
  c = nnc_ll_loop_open(E, fn, 0, d->out_count, 1);
  LLVMValueRef p = LLVMBuildLoad2(E->b, E->tf32, element(E, ws, d->pred_offset, c.i), "");
  LLVMBuildStore(E->b, p, element(E, out, 0, c.i));
  nnc_ll_loop_close(E, &c);
  LLVMBuildRet(E->b, LLVMConstInt(E->ti32, 0, 0));
}
