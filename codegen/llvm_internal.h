/* llvm_internal.h: what the LLVM backend's files share: the emitter state
 * (llvm.c: kernels, statements, entry points; llvm_expr.c: expressions).
 */
#ifndef NNC_CG_LLVM_INTERNAL_H
#define NNC_CG_LLVM_INTERNAL_H

#include "cg_internal.h"

typedef struct memo_entry {
  const nnc_kexpr *e; /* NULL: invalidated */
  LLVMValueRef v;
} memo_entry;

typedef struct emitter {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMModuleRef gemm_mod; /* gemm.c's functions: optimised on their own */
  LLVMBuilderRef b;
  const nnc_kprog *p;
  const nnc_cg_target *t;
  nnc_cg_math m;
  LLVMTypeRef tvoid, ti1, ti8, ti32, ti64, tf32, tf64, tptr, kfn_type;
  unsigned md_scope, md_noalias, md_loop;
  /* per kernel */
  const nnc_kernel *k;
  LLVMValueRef fn, arena, begin, end;
  int loop_depth;
  LLVMValueRef *vars, *scalars, *base;
  LLVMValueRef *scope_md, *noalias_md; /* [nbufs], by base buffer */
  memo_entry *memo;
  int nmemo, memo_cap;
  /* gemm.c functions emitted so far: kernels with the same product share one */
  nnc_cg_gemm *gemm_k;
  LLVMValueRef *gemm_fn; /* its declaration in mod */
  int ngemm;
  /* The part of the program this module holds (of nparts), and the part
   * of every kernel: [0] train, [1] eval, by kernel index. */
  int part, nparts;
  int *part_of[NNC_CG_NGRAPHS]; /* train, eval, grad, update, grad_half */
  nnc_kqstore qs; /* what the loop kernel being emitted stores in bytes (q NULL: nothing) */
  /* width > 0: an update pass emitted on vectors of `width` floats as a
   * product's epilogue (llvm_fused.c); nnc_ll_expr then gives vectors:
   * loads at the pass's own index read elements [flat, flat + lanes) (the
   * product's C: `grad`), loads of one-element buffers and constants are
   * splat, scalars are `scalars[var]`. */
  struct {
    int width, lanes, grad_buf;
    LLVMValueRef flat, grad, *scalars;
  } vec;
} emitter;

/* The LLVM type of kernel values of type t. */
LLVMTypeRef nnc_ll_type(emitter *E, nnc_kt t);
/* The value of e where the builder stands (emitted once per memo scope). */
LLVMValueRef nnc_ll_expr(emitter *E, const nnc_kexpr *e);
/* Forgets memoised values that read memory (mem) or scalars (scalar). */
void nnc_ll_memo_invalidate(emitter *E, bool mem, bool scalar);
/* Stores v at E->vec's elements of buf (masked to its lanes). */
void nnc_ll_vec_store(emitter *E, int buf, LLVMValueRef v);
/* Address of element idx of buffer buf, and the metadata of an access. */
LLVMValueRef nnc_ll_address(emitter *E, int buf, LLVMValueRef idx);
void nnc_ll_tag_access(emitter *E, LLVMValueRef inst, int buf);

/* for (i = from; i < to; i += step) in function fn, from where the
 * builder stands: open leaves the builder in the body, close after the loop. */
typedef struct nnc_ll_loop {
  LLVMValueRef i;
  LLVMBasicBlockRef pre, head, body, exit;
  int64_t step;
} nnc_ll_loop;
nnc_ll_loop nnc_ll_loop_open(emitter *E, LLVMValueRef fn, int64_t from, int64_t to, int64_t step);
void nnc_ll_loop_close(emitter *E, nnc_ll_loop *l);

/* llvm.loop !{self, !{"llvm.loop.unroll.disable"}} on a loop's back edge
 * br: no pass unrolls the loop, and full unrolling skips its analysis. */
void nnc_ll_no_unroll(emitter *E, LLVMValueRef br);

/* A new kernel function `name` (void (ptr arena, i64 begin, i64 end)),
 * the builder at its entry; sets E->fn, E->arena, E->begin, E->end. */
LLVMValueRef nnc_ll_kernel_fn(emitter *E, const char *name);
/* Whether blk holds a loop; the product k computes, as gemm.c emits it
 * (llvm.c, for llvm_parts.c too). */
bool nnc_ll_has_loop(const nnc_kblock *blk);
nnc_cg_gemm nnc_ll_gemm_of(const nnc_kernel *k);
/* The same with another type whose first three parameters are those. */
LLVMValueRef nnc_ll_kernel_fn_typed(emitter *E, const char *name, LLVMTypeRef type);

/* ---- conv_direct.c: a direct convolution (kernel.h's nnc_kconv) ---- */
/* The body of kernel function E->fn for k, its buffers at in, w, bias
 * (NULL: none) and out; the builder at the function's entry. */
void nnc_ll_emit_conv(emitter *E, const nnc_kernel *k, LLVMValueRef in, LLVMValueRef w,
                      LLVMValueRef bias, LLVMValueRef out);
/* Address of buffer buf's first element (in the arena, or the weights). */
LLVMValueRef nnc_ll_buffer_ptr(emitter *E, int buf);

/* ---- conv_dw.c: a direct convolution weight gradient (k->conv_dw) ---- */
LLVMValueRef nnc_ll_emit_conv_dw(emitter *E, const nnc_kernel *k);

/* ---- llvm_qgemm.c: an int8 product of a deployed program ---- */
/* The kernel function of k as the int8 product q (vpdpbusd). */
LLVMValueRef nnc_ll_emit_qgemm(emitter *E, const nnc_kernel *k, const nnc_kqgemm *q);
/* x (f32) quantised as q's A: the u8 byte (i8). */
LLVMValueRef nnc_ll_quantize_u8(emitter *E, const nnc_kqgemm *q, LLVMValueRef x);

/* ---- llvm_predict.c: a deployed program's interface (E->p->deploy) ---- */
/* A private constant global `name` holding n bytes of data, 64-byte
 * aligned (weights, input tables, int8 weight blocks). */
LLVMValueRef nnc_ll_constant(emitter *E, const char *name, const void *data, size_t n);
/* The constant weights block (made on first use). */
LLVMValueRef nnc_ll_weights(emitter *E);
/* PREFIX_predict(input, output, workspace): checks, the input prepared
 * into the workspace, run (the eval entry point), the prediction out. */
void nnc_ll_emit_predict(emitter *E, LLVMValueRef run);

#endif
