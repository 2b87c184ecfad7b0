/* llvm.c: kernel IR -> LLVM IR.
 *
 * Takes a planned kernel program (every buffer at an arena offset) and
 * adds to an LLVM module one function per kernel,
 *   internal void k(ptr arena, i64 begin, i64 end)
 * (the split outer loop runs [begin, end); matrix products wrap a gemm.c
 * function), and one entry point per graph,
 *   void nnc_train_step(ptr arena, ptr pool) / nnc_eval_step
 * that runs the kernels in order, each through nnc_rt_parallel(pool, k,
 * arena, n) when it is worth threads, else directly. The program may be
 * split into parts, one module each, compiled separately (jit.c does it on
 * threads): the kernels are shared out by a fixed rule (nnc_cg_assign_parts),
 * part 0 has the entry points, and kernels become hidden globals so they
 * can be called across parts. Kernels whose speed cannot matter (and
 * products under COLD_GEMM_WORK) are marked cold: compiled with fast
 * instruction selection, by the JIT in an object of their own at -O0
 * (compile.c).
 *
 * Loops are emitted in canonical form with i64 induction variables;
 * addresses are arena + constant offset + index * element size with
 * inbounds GEPs, and every access carries alias-scope metadata saying that
 * distinct buffers do not overlap (the plan guarantees it), so the loop
 * vectoriser needs no runtime checks. Float arithmetic has fast-math flags
 * (reassociation, contraction) but never no-NaNs/no-infs: -inf is a real
 * value here (max-reduction identity). Functions carry the target's CPU,
 * features and "prefer-vector-width"="512".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/DebugInfo.h>

#include "gemm.h"
#include "cg_loop.h"
#include "llvm_internal.h"

/* Kernels with less work than this run on the calling thread. */
static const double PARALLEL_WORK = 1e6;

/* Kernels with less work than NNC_COLD_WORK (kernel.h), the entry points
 * and the wrappers around products (k NULL: code that only calls) are
 * marked cold and get quick instruction selection (compile.c). */
static const double COLD_WORK = NNC_COLD_WORK;

static void add_attr(emitter *E, LLVMValueRef fn, const char *k, const char *v) {
  LLVMAddAttributeAtIndex(
      fn, LLVMAttributeFunctionIndex,
      LLVMCreateStringAttribute(E->ctx, k, (unsigned)strlen(k), v, (unsigned)strlen(v)));
}

static void add_enum_attr(emitter *E, LLVMValueRef fn, const char *name) {
  unsigned kind = LLVMGetEnumAttributeKindForName(name, strlen(name));
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(E->ctx, kind, 0));
}

static void target_attrs(emitter *E, LLVMValueRef fn) {
  add_attr(E, fn, "target-cpu", E->t->cpu);
  add_attr(E, fn, "target-features", E->t->features);
  add_attr(E, fn, "prefer-vector-width", "512");
  add_attr(E, fn, "no-trapping-math", "true");
  add_enum_attr(E, fn, "nounwind");
}

static void helper_attrs(void *E, LLVMValueRef fn) {
  target_attrs(E, fn);
}

/* ---- statements ---- */

static void block(emitter *E, const nnc_kblock *blk, bool top);

static void writes_in(const nnc_kblock *blk, bool *stores, bool *sets) {
  for (int i = 0; i < blk->n; i++) {
    const nnc_kstmt *s = blk->s[i];
    if (s->kind == NNC_KS_LOOP) writes_in(&s->body, stores, sets);
    if (s->kind == NNC_KS_STORE) *stores = true;
    if (s->kind == NNC_KS_SET) *sets = true;
  }
}

/* llvm.loop !{self, !{"llvm.loop.unroll.disable"}} on a loop's back edge. */
void nnc_ll_no_unroll(emitter *E, LLVMValueRef br) {
  const char *k = "llvm.loop.unroll.disable";
  LLVMMetadataRef prop = LLVMMDStringInContext2(E->ctx, k, strlen(k));
  prop = LLVMMDNodeInContext2(E->ctx, &prop, 1);
  LLVMMetadataRef tmp = LLVMTemporaryMDNode(E->ctx, NULL, 0);
  LLVMMetadataRef ops[2] = {tmp, prop};
  LLVMMetadataRef id = LLVMMDNodeInContext2(E->ctx, ops, 2);
  LLVMMetadataReplaceAllUsesWith(tmp, id); /* makes id refer to itself; frees tmp */
  LLVMSetMetadata(br, E->md_loop, LLVMMetadataAsValue(E->ctx, id));
}

bool nnc_ll_has_loop(const nnc_kblock *blk) {
  for (int i = 0; i < blk->n; i++)
    if (blk->s[i]->kind == NNC_KS_LOOP) return true;
  return false;
}

static bool uses_var(const nnc_kexpr *e, int var) {
  if (!e) return false;
  if (e->kind == NNC_KX_VAR) return e->var == var;
  for (int i = 0; i < 3; i++)
    if (uses_var(e->a[i], var)) return true;
  return false;
}

/* Loop s only stores, at indices that move with its variable, values that
 * read nothing it stores: a copy or a fill (im2col's rows), whose
 * iterations are independent. */
static bool copies(const nnc_kprog *p, const nnc_kstmt *s) {
  for (int i = 0; i < s->body.n; i++) {
    const nnc_kstmt *t = s->body.s[i];
    if (t->kind != NNC_KS_STORE || !uses_var(t->index, s->var)) return false;
    for (int j = 0; j < s->body.n; j++)
      if (nnc_kexpr_reads(p, s->body.s[j]->value, nnc_kbuf_base(p, t->buf), NULL)) return false;
  }
  return true;
}

/* A loop over 8 or more rows that each are a copy loop (im2col's rows of
 * one tap): unrolled fully, each row's loop would be vectorised on its own
 * (conv 2's im2col: 126 vectorised loops, 60 ms of the loop vectoriser and
 * full unrolling); kept as a loop, the row's loop is vectorised once.
 * Pooling's 2 rows of a window are still unrolled (as tuned). */
static bool copy_rows(const nnc_kprog *p, const nnc_kstmt *s) {
  if (s->extent < 8 || s->body.n == 0) return false;
  for (int i = 0; i < s->body.n; i++) {
    const nnc_kstmt *t = s->body.s[i];
    if (t->kind != NNC_KS_LOOP || t->extent <= 1 || nnc_ll_has_loop(&t->body) || !copies(p, t))
      return false;
  }
  return true;
}

/* At iteration iv of an update pass's split loop (kernel.h,
 * prefetch_bufs): each cache line of the row about 1 KB ahead of each such
 * buffer, prefetched for writing (llvm.prefetch rw=1, to L1), so the
 * other core's copies are invalidated before the store reaches them.
 * Rows past the end prefetch nothing that faults. */
static void prefetch_rows(emitter *E, LLVMValueRef iv) {
  const nnc_kernel *k = E->k;
  for (int i = 0; i < k->nprefetch; i++) {
    const nnc_kbuf *buf = &E->p->bufs[k->prefetch_bufs[i]];
    int64_t row = buf->numel / k->extent * nnc_kt_size(buf->type), ahead = (1023 + row) / row;
    LLVMValueRef at = LLVMBuildMul(
        E->b, LLVMBuildAdd(E->b, iv, LLVMConstInt(E->ti64, (unsigned long long)ahead, 0), ""),
        LLVMConstInt(E->ti64, (unsigned long long)row, 0), "");
    for (int64_t off = 0; off < row; off += 64) {
      LLVMValueRef o =
          LLVMBuildAdd(E->b, at, LLVMConstInt(E->ti64, (unsigned long long)off, 0), "");
      LLVMValueRef ptr = LLVMBuildGEP2(E->b, E->ti8, E->base[k->prefetch_bufs[i]], &o, 1, "");
      LLVMTypeRef pt = LLVMTypeOf(ptr);
      LLVMValueRef args[4] = {ptr, LLVMConstInt(E->ti32, 1, 0), LLVMConstInt(E->ti32, 3, 0),
                              LLVMConstInt(E->ti32, 1, 0)};
      nnc_cg_call_intrinsic(E->mod, E->b, "llvm.prefetch", &pt, 1, args, 4);
    }
  }
}

/* An innermost loop inside another loop, shorter than a vector or a copy:
 * unrolled fully, it would leave the outer loop innermost, and the
 * vectoriser would run across rows with gathers and scatters (code size,
 * compile time, no speed; a copy of 28-float rows became 2,000
 * instructions). Kept as a loop, short rows stay scalar or short vectors
 * and copies are vectorised along their rows. Longer loops that
 * accumulate keep the full unrolling their code was tuned with (their
 * sums' order depends on it). */
static void loop(emitter *E, const nnc_kstmt *s, LLVMValueRef lo, LLVMValueRef hi) {
  bool keep_loop = E->loop_depth > 0 && !nnc_ll_has_loop(&s->body) && s->extent > 1 &&
                   (s->extent < 16 || copies(E->p, s));
  keep_loop |= copy_rows(E->p, s);
  E->loop_depth++;
  LLVMBasicBlockRef pre = LLVMGetInsertBlock(E->b);
  LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(E->ctx, E->fn, "loop");
  LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(E->ctx, E->fn, "body");
  LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(E->ctx, E->fn, "exit");
  LLVMBuildBr(E->b, head);
  LLVMPositionBuilderAtEnd(E->b, head);
  LLVMValueRef iv = LLVMBuildPhi(E->b, E->ti64, "i");
  LLVMBuildCondBr(E->b, LLVMBuildICmp(E->b, LLVMIntSLT, iv, hi, ""), body, exit);
  LLVMPositionBuilderAtEnd(E->b, body);
  E->vars[s->var] = iv;
  if (E->loop_depth == 1 && E->k && E->k->nprefetch) prefetch_rows(E, iv);
  /* Values computed before the loop may be stale inside it if it writes
   * what they read. */
  bool stores = false, sets = false;
  writes_in(&s->body, &stores, &sets);
  nnc_ll_memo_invalidate(E, stores, sets);
  int mark = E->nmemo;
  block(E, &s->body, false);
  E->nmemo = mark;
  nnc_ll_memo_invalidate(E, stores, sets);
  LLVMValueRef next = LLVMBuildAdd(E->b, iv, LLVMConstInt(E->ti64, 1, 0), "");
  LLVMBasicBlockRef latch = LLVMGetInsertBlock(E->b);
  LLVMValueRef back = LLVMBuildBr(E->b, head);
  if (keep_loop) nnc_ll_no_unroll(E, back);
  LLVMValueRef vals[2] = {lo, next};
  LLVMBasicBlockRef bbs[2] = {pre, latch};
  LLVMAddIncoming(iv, vals, bbs, 2);
  LLVMPositionBuilderAtEnd(E->b, exit);
  E->loop_depth--;
}

/* A loop of one iteration (the kernel IR's loop nests keep every
 * dimension, sizes of 1 included): its body once, at iv = 0, without the
 * loop that the optimiser would otherwise have to find and remove (the
 * CNN's cold kernels held 92 such loops). It still counts as a loop for
 * the loops inside it (keep_loop's depth), so their code is the same. */
static void once(emitter *E, const nnc_kstmt *s) {
  E->loop_depth++;
  E->vars[s->var] = LLVMConstInt(E->ti64, 0, 0);
  if (E->loop_depth == 1 && E->k && E->k->nprefetch) prefetch_rows(E, E->vars[s->var]);
  int mark = E->nmemo;
  block(E, &s->body, false);
  E->nmemo = mark;
  bool stores = false, sets = false;
  writes_in(&s->body, &stores, &sets);
  nnc_ll_memo_invalidate(E, stores, sets);
  E->loop_depth--;
}

/* byte p[idx] (i8), tagged as an access of buffer buf */
static LLVMValueRef byte_at(emitter *E, int buf, const nnc_kexpr *index) {
  LLVMValueRef idx = nnc_ll_expr(E, index);
  return LLVMBuildInBoundsGEP2(E->b, E->ti8, E->base[nnc_kbuf_base(E->p, buf)], &idx, 1, "");
}

/* A store into the buffer the kernel holds in bytes for an int8 product
 * (E->qs, kernel.h's nnc_kqstore): the value quantised; where the kernel
 * reads its input in bytes (E->qs.from), a constant quantised and any
 * other value, a code 0..255 already, as it is. */
static void store_byte(emitter *E, const nnc_kstmt *s) {
  const nnc_kexpr *v = s->value;
  LLVMValueRef byte = nnc_ll_expr(E, v);
  if (E->qs.from >= 0 && v->kind != NNC_KX_CONST)
    byte = LLVMBuildTrunc(E->b, LLVMBuildFPToSI(E->b, byte, E->ti32, ""), E->ti8, "");
  else
    byte = nnc_ll_quantize_u8(E, E->qs.q, byte);
  LLVMValueRef st = LLVMBuildStore(E->b, byte, byte_at(E, s->buf, s->index));
  nnc_ll_tag_access(E, st, s->buf);
  LLVMSetAlignment(st, 1);
  nnc_ll_memo_invalidate(E, true, false);
}

static void block(emitter *E, const nnc_kblock *blk, bool top) {
  for (int i = 0; i < blk->n; i++) {
    const nnc_kstmt *s = blk->s[i];
    switch (s->kind) {
    case NNC_KS_LOOP:
      if (top && E->k->split)
        loop(E, s, E->begin, E->end);
      else if (s->extent == 1)
        once(E, s);
      else
        loop(E, s, LLVMConstInt(E->ti64, 0, 0),
             LLVMConstInt(E->ti64, (unsigned long long)s->extent, 0));
      break;
    case NNC_KS_STORE: {
      if (E->qs.q && nnc_kbuf_base(E->p, s->buf) == E->qs.buf) {
        store_byte(E, s);
        break;
      }
      LLVMValueRef v = nnc_ll_expr(E, s->value), idx = nnc_ll_expr(E, s->index);
      LLVMValueRef at = nnc_ll_address(E, s->buf, idx);
      nnc_ll_tag_access(E, LLVMBuildStore(E->b, v, at), s->buf);
      nnc_ll_memo_invalidate(E, true, false);
      break;
    }
    case NNC_KS_SET:
      LLVMBuildStore(E->b, nnc_ll_expr(E, s->value), E->scalars[s->var]);
      nnc_ll_memo_invalidate(E, false, true);
      break;
    }
  }
}

/* ---- kernels ---- */

/* k's base buffers, distinct, in nnc_cg_kernel_bases's order (malloc'd),
 * *n of them. */
static int *bases_of(const emitter *E, const nnc_kernel *k, int *n) {
  int *bases = malloc(sizeof(int) * (size_t)(k->nreads + k->nwrites + 1));
  if (!bases) nnc_ir_bug("codegen: out of memory");
  *n = nnc_cg_kernel_bases(E->p, k, bases);
  return bases;
}

/* alias.scope / noalias metadata: one scope per base buffer the kernel touches. */
static void alias_scopes(emitter *E, const nnc_kernel *k, const char *kname) {
  int n, *bases = bases_of(E, k, &n);
  LLVMMetadataRef *scopes = malloc(sizeof(LLVMMetadataRef) * (size_t)(n + 1));
  if (!scopes) nnc_ir_bug("codegen: out of memory");
  for (int i = 0; i < E->p->nbufs; i++)
    E->scope_md[i] = E->noalias_md[i] = NULL;
  char name[256];
  snprintf(name, sizeof name, "nnc.%s", kname);
  LLVMMetadataRef dom_name = LLVMMDStringInContext2(E->ctx, name, strlen(name));
  LLVMMetadataRef domain = LLVMMDNodeInContext2(E->ctx, &dom_name, 1);
  for (int j = 0; j < n; j++) {
    snprintf(name, sizeof name, "nnc.%s.b%d", kname, bases[j]);
    LLVMMetadataRef ops[2] = {LLVMMDStringInContext2(E->ctx, name, strlen(name)), domain};
    scopes[j] = LLVMMDNodeInContext2(E->ctx, ops, 2);
  }
  LLVMMetadataRef *others = malloc(sizeof(LLVMMetadataRef) * (size_t)(n + 1));
  if (!others) nnc_ir_bug("codegen: out of memory");
  for (int j = 0; j < n; j++) {
    int m = 0;
    for (int q = 0; q < n; q++)
      if (q != j) others[m++] = scopes[q];
    E->scope_md[bases[j]] =
        LLVMMetadataAsValue(E->ctx, LLVMMDNodeInContext2(E->ctx, &scopes[j], 1));
    E->noalias_md[bases[j]] =
        LLVMMetadataAsValue(E->ctx, LLVMMDNodeInContext2(E->ctx, others, (size_t)m));
  }
  free(others);
  free(scopes);
  free(bases);
}

LLVMValueRef nnc_ll_buffer_ptr(emitter *E, int buf) {
  const nnc_kbuf *base = &E->p->bufs[nnc_kbuf_base(E->p, buf)];
  LLVMValueRef off = LLVMConstInt(E->ti64, (unsigned long long)base->offset, 0);
  if (E->p->deploy && base->kind == NNC_KBUF_TENSOR) /* in the weights block */
    return LLVMBuildInBoundsGEP2(E->b, E->ti8, nnc_ll_weights(E), &off, 1, "");
  return LLVMBuildInBoundsGEP2(E->b, E->ti8, E->arena, &off, 1, "");
}

static void mark_cold(emitter *E, LLVMValueRef fn, const nnc_kernel *k) {
  if (!k || k->work < COLD_WORK) add_attr(E, fn, NNC_CG_COLD, "");
}

/* A hot loop kernel: no loop strength reduction (compile.c). Its loops
 * index the arena by constant offsets and induction variables, which
 * instruction selection folds into addresses as well; on fashion_cnn the
 * pass took a third of these kernels' machine code (the vectoriser's
 * interleaved loads and stores the most) and changed no kernel's speed
 * (docs/performance.md). Products and direct convolutions keep it: a
 * weight gradient's product ran twice as long without. */
static void mark_no_lsr(emitter *E, LLVMValueRef fn, const nnc_kernel *k) {
  if (k->work >= COLD_WORK) add_attr(E, fn, NNC_CG_NO_LSR, "");
}

/* Products with fewer FLOPs than this per step (the CNN's last dense
 * layer, 64x128 by 128x10: 163,840, forward and both gradients) run for
 * microseconds whatever their code, but compiled hot they cost more machine
 * code than most loop kernels (~65 M llc instructions each). Cold: fast
 * instruction selection, which selects llvm.fmuladd as the same FMA
 * (gemm.c contracts by hand), so the bits stay. A product with an update
 * pass fused (fused_gemm_function) stays hot: the pass's multiply-adds are
 * contracted by instruction selection. Off by default (the loop kernels'
 * rule, 16,384): cold, each call took ~5 us more, ~15 us per CNN step,
 * which a 5-epoch run (4,690 steps) pays back several times over what the
 * ~4% of compile saved. NNC_COLD_GEMM_WORK=262144 turns it on. */
static const double COLD_GEMM_WORK = 16384;

static void mark_cold_gemm(emitter *E, LLVMValueRef fn, const nnc_kernel *k) {
  const char *env = getenv("NNC_COLD_GEMM_WORK");
  double limit = env ? atof(env) : COLD_GEMM_WORK;
  if (k->work < limit) add_attr(E, fn, NNC_CG_COLD, "");
}

/* The type of the function that runs k's code: the kernels' (arena, begin,
 * end), then for the first of twins (twins.c) the arena offsets of its nb
 * bases (0 otherwise; nb may be NULL). */
static LLVMTypeRef code_type(emitter *E, const nnc_kernel *k, int *nb) {
  int n = 0;
  if (k->has_twins) free(bases_of(E, k, &n));
  if (nb) *nb = n;
  if (!n) return E->kfn_type;
  LLVMTypeRef *params = malloc(sizeof(LLVMTypeRef) * (size_t)(3 + n));
  if (!params) nnc_ir_bug("codegen: out of memory");
  params[0] = E->tptr;
  for (int i = 1; i < 3 + n; i++)
    params[i] = E->ti64;
  LLVMTypeRef t = LLVMFunctionType(E->tvoid, params, (unsigned)(3 + n), 0);
  free(params);
  return t;
}

LLVMValueRef nnc_ll_kernel_fn(emitter *E, const char *name) {
  return nnc_ll_kernel_fn_typed(E, name, E->kfn_type);
}

LLVMValueRef nnc_ll_kernel_fn_typed(emitter *E, const char *name, LLVMTypeRef type) {
  LLVMValueRef fn = LLVMAddFunction(E->mod, name, type);
  /* With several parts the entry points (part 0) call kernels of the
   * others: visible to the JIT's linker, not outside the program. */
  if (E->nparts > 1)
    LLVMSetVisibility(fn, LLVMHiddenVisibility);
  else
    LLVMSetLinkage(fn, LLVMInternalLinkage);
  target_attrs(E, fn);
  /* Inlined into the entry point, every kernel would be optimised twice and
   * the entry would be one huge function for instruction selection (the
   * slowest part of compiling); a call per kernel costs nothing measurable. */
  add_enum_attr(E, fn, "noinline");
  LLVMAddAttributeAtIndex(
      fn, 1, LLVMCreateEnumAttribute(E->ctx, LLVMGetEnumAttributeKindForName("noalias", 7), 0));
  E->fn = fn;
  E->arena = LLVMGetParam(fn, 0);
  E->begin = LLVMGetParam(fn, 1);
  E->end = LLVMGetParam(fn, 2);
  LLVMPositionBuilderAtEnd(E->b, LLVMAppendBasicBlockInContext(E->ctx, fn, "entry"));
  return fn;
}

/* k's product as gemm.c emits it: row-split products get ranges of whole
 * row blocks (emit_gemm_kernel), which spares the tiles for other
 * remainders. */
nnc_cg_gemm nnc_ll_gemm_of(const nnc_kernel *k) {
  nnc_cg_gemm g = k->gemm;
  if (k->col_block <= 0) g.row_align = k->row_block;
  return g;
}

/* The declaration in mod of the gemm.c function computing k's product:
 * emitted into the gemm module the first time such a product is seen
 * (e.g. the train and eval graphs' forward products share one). */
static LLVMValueRef gemm_function(emitter *E, const nnc_kernel *k) {
  nnc_cg_gemm g = nnc_ll_gemm_of(k);
  for (int i = 0; i < E->ngemm; i++)
    if (nnc_cg_gemm_eq(&E->gemm_k[i], &g)) return E->gemm_fn[i];
  char name[256];
  snprintf(name, sizeof name, "nnc.gemm.%s", k->name);
  /* The product goes into the gemm module (already vectorised and
   * register-blocked: it needs clean-up, not O3); this module calls it by
   * name, and compile.c links the two after optimising each. */
  LLVMValueRef def = nnc_cg_emit_gemm(E->gemm_mod, name, &g);
  target_attrs(E, def);
  nnc_cg_gemm_helpers(def, helper_attrs, E);
  mark_cold_gemm(E, def, k);
  E->gemm_k = realloc(E->gemm_k, sizeof(*E->gemm_k) * (size_t)(E->ngemm + 1));
  E->gemm_fn = realloc(E->gemm_fn, sizeof(*E->gemm_fn) * (size_t)(E->ngemm + 1));
  if (!E->gemm_k || !E->gemm_fn) nnc_ir_bug("codegen: out of memory");
  E->gemm_k[E->ngemm] = g;
  return E->gemm_fn[E->ngemm++] = LLVMAddFunction(E->mod, name, LLVMGlobalGetValueType(def));
}

/* ---- an update pass as a product's epilogue (kernel.update) ---- */

/* gemm.c's begin: the pass's buffers from the product's extra argument
 * (the arena), in the product's entry block. */
static void fused_begin(void *ctx, LLVMBuilderRef b, LLVMValueRef arena) {
  emitter *E = ctx;
  E->b = E->m.b = b;
  E->arena = arena;
  const nnc_kernel *u = E->k->update;
  for (int i = 0; i < u->nreads + u->nwrites; i++) {
    int buf = nnc_kbuf_base(E->p, i < u->nreads ? u->reads[i] : u->writes[i - u->nreads]);
    if (buf != E->vec.grad_buf) E->base[buf] = nnc_ll_buffer_ptr(E, buf);
  }
}

/* gemm.c's store: the pass's statements (new values, then stores: see
 * lower_update.c) on elements [idx, idx + lanes) of C, whose values are v. */
static void fused_store(void *ctx, LLVMBuilderRef b, LLVMValueRef v, LLVMValueRef idx, int lanes) {
  emitter *E = ctx;
  const nnc_kernel *u = E->k->update;
  E->b = E->m.b = b;
  E->vec.width = (int)LLVMGetVectorSize(LLVMTypeOf(v));
  E->vec.lanes = lanes;
  E->vec.flat = idx;
  E->vec.grad = v;
  E->nmemo = 0;
  const nnc_kblock *blk = &u->body;
  while (blk->n && blk->s[0]->kind == NNC_KS_LOOP)
    blk = &blk->s[0]->body;
  for (int i = 0; i < blk->n; i++) {
    const nnc_kstmt *s = blk->s[i];
    LLVMValueRef x = nnc_ll_expr(E, s->value);
    if (s->kind == NNC_KS_SET)
      E->vec.scalars[s->var] = x;
    else
      nnc_ll_vec_store(E, s->buf, x);
  }
  E->vec.width = 0;
}

/* The gemm.c function of product k with its update pass fused, in the
 * gemm module (never shared: the pass is its own); its declaration in
 * E->mod. */
static LLVMValueRef fused_gemm_function(emitter *E, const nnc_kernel *k) {
  nnc_cg_gemm g = nnc_ll_gemm_of(k);
  char name[256];
  snprintf(name, sizeof name, "nnc.gemm.%s", k->name);
  LLVMBuilderRef b = E->b;
  LLVMModuleRef math_mod = E->m.mod;
  LLVMValueRef arena = E->arena;
  E->m.mod = E->gemm_mod;
  E->vec.grad_buf = nnc_kbuf_base(E->p, k->c_buf);
  E->vec.scalars = calloc((size_t)k->update->nscalars + 1, sizeof(LLVMValueRef));
  if (!E->vec.scalars) nnc_ir_bug("codegen: out of memory");
  alias_scopes(E, k, k->name);
  nnc_cg_gemm_store st = {E, fused_begin, fused_store};
  LLVMValueRef def = nnc_cg_emit_gemm_to(E->gemm_mod, name, &g, &st);
  for (int i = 0; i < E->p->nbufs; i++)
    E->base[i] = NULL;
  free(E->vec.scalars);
  E->vec.scalars = NULL;
  E->vec.grad_buf = -1;
  E->b = E->m.b = b;
  E->m.mod = math_mod;
  E->arena = arena;
  target_attrs(E, def);
  nnc_cg_gemm_helpers(def, helper_attrs, E);
  mark_cold(E, def, k);
  return LLVMAddFunction(E->mod, name, LLVMGlobalGetValueType(def));
}

static LLVMValueRef emit_gemm_kernel(emitter *E, const nnc_kernel *k) {
  LLVMValueRef g = k->update ? fused_gemm_function(E, k) : gemm_function(E, k);
  LLVMValueRef fn = nnc_ll_kernel_fn(E, k->name);
  mark_cold(E, fn, NULL); /* a loop of calls */
  LLVMValueRef a = nnc_ll_buffer_ptr(E, k->a_buf), b = nnc_ll_buffer_ptr(E, k->b_buf),
               c = nnc_ll_buffer_ptr(E, k->c_buf);
  LLVMValueRef bias = k->bias_buf >= 0 ? nnc_ll_buffer_ptr(E, k->bias_buf) : LLVMConstNull(E->tptr);
  if (k->col_block > 0 || k->k_parts > 1) {
    /* for (j = begin; j < end; j++) gemm over columns [j * cb, (j + 1) * cb),
     * or over K's part j into C's j-th copy (k_parts) */
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(E->b);
    LLVMBasicBlockRef head = LLVMAppendBasicBlockInContext(E->ctx, fn, "cols");
    LLVMBasicBlockRef body = LLVMAppendBasicBlockInContext(E->ctx, fn, "col");
    LLVMBasicBlockRef exit = LLVMAppendBasicBlockInContext(E->ctx, fn, "done");
    LLVMBuildBr(E->b, head);
    LLVMPositionBuilderAtEnd(E->b, head);
    LLVMValueRef j = LLVMBuildPhi(E->b, E->ti64, "j");
    LLVMBuildCondBr(E->b, LLVMBuildICmp(E->b, LLVMIntSLT, j, E->end, ""), body, exit);
    LLVMPositionBuilderAtEnd(E->b, body);
    const nnc_cg_gemm *gm = &k->gemm;
    /* elements of A, B, bias and C per step of j */
    int64_t as = 0, bs = (gm->trans_b ? gm->ldb : 1) * k->col_block, cs = k->col_block;
    if (k->k_parts > 1) {
      as = gm->trans_a ? gm->K * gm->lda : gm->K;
      bs = gm->trans_b ? gm->K : gm->K * gm->ldb;
      cs = gm->M * gm->N;
    }
    LLVMValueRef off[3];
    int64_t steps[3] = {as, bs, cs};
    for (int i = 0; i < 3; i++)
      off[i] = LLVMBuildMul(E->b, j, LLVMConstInt(E->ti64, (unsigned long long)steps[i], 0), "");
    LLVMValueRef args[6] = {
        LLVMBuildInBoundsGEP2(E->b, E->tf32, a, &off[0], 1, ""),
        LLVMBuildInBoundsGEP2(E->b, E->tf32, b, &off[1], 1, ""),
        k->bias_buf >= 0 ? LLVMBuildInBoundsGEP2(E->b, E->tf32, bias, &off[2], 1, "") : bias,
        LLVMBuildInBoundsGEP2(E->b, E->tf32, c, &off[2], 1, ""),
        LLVMConstInt(E->ti64, 0, 0),
        LLVMConstInt(E->ti64, (unsigned long long)k->gemm.M, 0)};
    LLVMBuildCall2(E->b, LLVMGlobalGetValueType(g), g, args, 6, "");
    LLVMValueRef next = LLVMBuildAdd(E->b, j, LLVMConstInt(E->ti64, 1, 0), "");
    LLVMBuildBr(E->b, head);
    LLVMValueRef vals[2] = {E->begin, next};
    LLVMBasicBlockRef bbs[2] = {pre, body};
    LLVMAddIncoming(j, vals, bbs, 2);
    LLVMPositionBuilderAtEnd(E->b, exit);
    LLVMBuildRetVoid(E->b);
    return fn;
  }
  LLVMValueRef rb = LLVMConstInt(E->ti64, (unsigned long long)k->row_block, 0);
  LLVMValueRef M = LLVMConstInt(E->ti64, (unsigned long long)k->gemm.M, 0);
  LLVMValueRef r0 = LLVMBuildMul(E->b, E->begin, rb, "");
  LLVMValueRef r1 = LLVMBuildMul(E->b, E->end, rb, "");
  r1 = LLVMBuildSelect(E->b, LLVMBuildICmp(E->b, LLVMIntSLT, r1, M, ""), r1, M, "");
  LLVMValueRef args[7] = {a, b, bias, c, r0, r1, E->arena};
  LLVMBuildCall2(E->b, LLVMGlobalGetValueType(g), g, args, k->update ? 7 : 6, "");
  LLVMBuildRetVoid(E->b);
  return fn;
}

static LLVMValueRef emit_kernel(emitter *E, const nnc_kernel *k) {
  E->k = k;
  if (k->is_gemm) return emit_gemm_kernel(E, k);
  if (k->conv_dw) return nnc_ll_emit_conv_dw(E, k); /* never cold: one code, one rounding */
  LLVMValueRef fn = nnc_ll_kernel_fn_typed(E, k->name, code_type(E, k, NULL));
  mark_cold(E, fn, k);
  if (k->has_twins) { /* the first of twins: its bases' offsets are arguments */
    int nb, *bases = bases_of(E, k, &nb);
    for (int j = 0; j < nb; j++) {
      LLVMValueRef off = LLVMGetParam(fn, (unsigned)(3 + j));
      E->base[bases[j]] = LLVMBuildInBoundsGEP2(E->b, E->ti8, E->arena, &off, 1, "");
    }
    free(bases);
  }
  if (k->is_conv) {
    const nnc_kconv *c = &k->conv;
    nnc_ll_emit_conv(E, k, nnc_ll_buffer_ptr(E, c->in_buf), nnc_ll_buffer_ptr(E, c->w_buf),
                     c->bias_buf >= 0 ? nnc_ll_buffer_ptr(E, c->bias_buf) : NULL,
                     nnc_ll_buffer_ptr(E, c->out_buf));
    return fn;
  }
  mark_no_lsr(E, fn, k);
  E->vars = calloc((size_t)k->nvars + 1, sizeof(LLVMValueRef));
  E->scalars = calloc((size_t)k->nscalars + 1, sizeof(LLVMValueRef));
  if (!E->vars || !E->scalars) nnc_ir_bug("codegen: out of memory");
  for (int s = 0; s < k->nscalars; s++)
    E->scalars[s] = LLVMBuildAlloca(E->b, nnc_ll_type(E, k->scalar_type[s]), "acc");
  for (int i = 0; i < k->nreads + k->nwrites; i++) {
    int b = nnc_kbuf_base(E->p, i < k->nreads ? k->reads[i] : k->writes[i - k->nreads]);
    if (!E->base[b]) E->base[b] = nnc_ll_buffer_ptr(E, b);
  }
  alias_scopes(E, k, k->name);
  E->nmemo = 0;
  block(E, &k->body, true);
  LLVMBuildRetVoid(E->b);
  for (int i = 0; i < k->nreads + k->nwrites; i++)
    E->base[nnc_kbuf_base(E->p, i < k->nreads ? k->reads[i] : k->writes[i - k->nreads])] = NULL;
  free(E->vars);
  free(E->scalars);
  return fn;
}

/* ---- entry points ---- */

bool nnc_cg_kernel_parallel(const nnc_kernel *k) {
  return k->split && k->extent > 1 && k->work >= PARALLEL_WORK;
}

/* Profiling (profile.c): the global counters of graph g, three i64 per
 * kernel: the nanoseconds of its calls after the first, its calls, and the
 * nanoseconds of its first call. */
static LLVMValueRef profile_counters(emitter *E, const nnc_kgraph *g) {
  LLVMTypeRef at = LLVMArrayType2(E->ti64, (uint64_t)(NNC_CG_PROFILE_SLOTS * g->n));
  LLVMValueRef gv = LLVMAddGlobal(E->mod, at, nnc_cg_profile_symbol(g));
  LLVMSetInitializer(gv, LLVMConstNull(at));
  return gv;
}

static LLVMValueRef profile_slot(emitter *E, LLVMValueRef counters, int at) {
  LLVMValueRef idx = LLVMConstInt(E->ti64, (unsigned long long)at, 0);
  return LLVMBuildInBoundsGEP2(E->b, E->ti64, counters, &idx, 1, "");
}

/* counters[at] += v */
static void profile_add(emitter *E, LLVMValueRef counters, int at, LLVMValueRef v) {
  LLVMValueRef ptr = profile_slot(E, counters, at);
  LLVMBuildStore(E->b, LLVMBuildAdd(E->b, LLVMBuildLoad2(E->b, E->ti64, ptr, ""), v, ""), ptr);
}

/* Kernel i took ns nanoseconds: to its first call's slot on its first call
 * (which pays for first touches of memory: page faults, zeroed pages), to
 * the others' slot after; one call more either way. */
static void profile_count(emitter *E, LLVMValueRef counters, int i, LLVMValueRef ns) {
  int at = NNC_CG_PROFILE_SLOTS * i;
  LLVMValueRef calls_at = profile_slot(E, counters, at + 1);
  LLVMValueRef calls = LLVMBuildLoad2(E->b, E->ti64, calls_at, "");
  LLVMValueRef zero = LLVMConstInt(E->ti64, 0, 0);
  LLVMValueRef first = LLVMBuildICmp(E->b, LLVMIntEQ, calls, zero, "");
  profile_add(E, counters, at, LLVMBuildSelect(E->b, first, zero, ns, ""));
  LLVMBuildStore(E->b, LLVMBuildAdd(E->b, calls, LLVMConstInt(E->ti64, 1, 0), ""), calls_at);
  profile_add(E, counters, at + 2, LLVMBuildSelect(E->b, first, ns, zero, ""));
}

/* After an allreduce kernel (kernel.h): the runtime's hook, read from the
 * arena at comm_off (nnc_rt_allreduce_hook: fn, ctx), is called on the
 * kernel's buffer of n floats, fn(ctx, buf, n), when fn is set; in one
 * process it is not (the sum over one rank is the value). */
static void call_allreduce_hook(emitter *E, LLVMValueRef entry, LLVMValueRef arena,
                                const nnc_kernel *k) {
  const nnc_kbuf *b = &E->p->bufs[k->writes[0]];
  if (E->p->comm_off < 0 || k->nwrites != 1 || b->type != NNC_KT_F32)
    nnc_ir_bug("codegen: allreduce kernel %s without a hook or an f32 buffer", k->name);
  LLVMValueRef off[3] = {LLVMConstInt(E->ti64, (unsigned long long)E->p->comm_off, 0),
                         LLVMConstInt(E->ti64, (unsigned long long)E->p->comm_off + 8, 0),
                         LLVMConstInt(E->ti64, (unsigned long long)b->offset, 0)};
  LLVMValueRef fn = LLVMBuildLoad2(
      E->b, E->tptr, LLVMBuildInBoundsGEP2(E->b, E->ti8, arena, &off[0], 1, ""), "hook");
  LLVMValueRef ctx = LLVMBuildLoad2(
      E->b, E->tptr, LLVMBuildInBoundsGEP2(E->b, E->ti8, arena, &off[1], 1, ""), "hook_ctx");
  LLVMBasicBlockRef call = LLVMAppendBasicBlockInContext(E->ctx, entry, "allreduce");
  LLVMBasicBlockRef next = LLVMAppendBasicBlockInContext(E->ctx, entry, "");
  LLVMBuildCondBr(E->b, LLVMBuildIsNotNull(E->b, fn, ""), call, next);
  LLVMPositionBuilderAtEnd(E->b, call);
  LLVMTypeRef params[3] = {E->tptr, E->tptr, E->ti64};
  LLVMValueRef args[3] = {ctx, LLVMBuildInBoundsGEP2(E->b, E->ti8, arena, &off[2], 1, ""),
                          LLVMConstInt(E->ti64, (unsigned long long)b->numel, 0)};
  LLVMBuildCall2(E->b, LLVMFunctionType(E->tvoid, params, 3, 0), fn, args, 3, "");
  LLVMBuildBr(E->b, next);
  LLVMPositionBuilderAtEnd(E->b, next);
}

/* The kernel whose function runs k: its train twin's (plan.c), and that
 * kernel's first twin (twins.c). */
static const nnc_kernel *code_of(const nnc_kernel *k) {
  if (k->same_as) k = k->same_as;
  return k->twin_of ? k->twin_of : k;
}

/* fn(arena, 0, n) for k, and where fn is the first of twins the offsets
 * of k's bases (of its train twin's: the same offsets) after them. */
static void call_kernel(emitter *E, const nnc_kernel *k, LLVMValueRef fn, LLVMValueRef arena,
                        LLVMValueRef n) {
  const nnc_kernel *own = k->same_as ? k->same_as : k;
  int nb, nown = 0;
  LLVMTypeRef t = code_type(E, code_of(k), &nb);
  int *bases = nb ? bases_of(E, own, &nown) : NULL;
  LLVMValueRef *args = malloc(sizeof(LLVMValueRef) * (size_t)(3 + nb));
  if (!args) nnc_ir_bug("codegen: out of memory");
  args[0] = arena;
  args[1] = LLVMConstInt(E->ti64, 0, 0);
  args[2] = n;
  if (nown != nb)
    nnc_ir_bug("codegen: kernel %s has other bases than its twin %s", k->name, code_of(k)->name);
  for (int j = 0; j < nb; j++)
    args[3 + j] = LLVMConstInt(E->ti64, (unsigned long long)E->p->bufs[bases[j]].offset, 0);
  LLVMBuildCall2(E->b, t, fn, args, (unsigned)(3 + nb), "");
  free(args);
  free(bases);
}

/* Graph g's kernels of this part, and in part 0 its entry point, which
 * calls the other parts' kernels by name. */
static void emit_entry(emitter *E, const nnc_kgraph *g, const int *part_of, const char *name,
                       bool profile) {
  LLVMValueRef *fns = malloc(sizeof(LLVMValueRef) * (size_t)(g->n + 1));
  if (!fns) nnc_ir_bug("codegen: out of memory");
  const nnc_kqgemm *const *quant = E->p->deploy && g == &E->p->eval ? E->p->deploy->quant : NULL;
  for (int i = 0; i < g->n; i++) {
    const nnc_kernel *k = g->k[i];
    if (nnc_kq_absorbed(quant, g->n, i)) /* a product stores its bytes */
      fns[i] = NULL;
    else if (part_of[i] == E->part && quant && quant[i])
      fns[i] = nnc_ll_emit_qgemm(E, k, quant[i]);
    else if (part_of[i] == E->part && !k->same_as && !k->twin_of) {
      E->qs = nnc_kq_store_of(quant, g->n, i);
      fns[i] = emit_kernel(E, k);
      E->qs = (nnc_kqstore){.product = -1, .buf = -1, .from = -1};
    } else if (E->part == 0 || part_of[i] == E->part) {
      /* another part's kernel, or a train kernel's twin (emitted with the
       * train graph, which comes first): called by name. A deployed
       * program has no train graph, so no kernel that stores bytes for an
       * int8 product is a twin. */
      if (k->same_as && nnc_kq_store_of(quant, g->n, i).product >= 0)
        nnc_ir_bug("codegen: kernel %s stores bytes but shares %s's code", k->name,
                   k->same_as->name);
      const nnc_kernel *code = code_of(k);
      fns[i] = LLVMGetNamedFunction(E->mod, code->name);
      if (!fns[i]) fns[i] = LLVMAddFunction(E->mod, code->name, code_type(E, code, NULL));
    }
  }
  if (E->part != 0) {
    free(fns);
    return;
  }
  LLVMTypeRef params[2] = {E->tptr, E->tptr};
  LLVMTypeRef et = LLVMFunctionType(E->tvoid, params, 2, 0);
  LLVMValueRef entry = LLVMAddFunction(E->mod, name, et);
  target_attrs(E, entry);
  mark_cold(E, entry, NULL); /* a list of calls */
  LLVMPositionBuilderAtEnd(E->b, LLVMAppendBasicBlockInContext(E->ctx, entry, "entry"));
  LLVMValueRef arena = LLVMGetParam(entry, 0), pool = LLVMGetParam(entry, 1);
  LLVMTypeRef pparams[4] = {E->tptr, E->tptr, E->tptr, E->ti64};
  LLVMTypeRef pt = LLVMFunctionType(E->tvoid, pparams, 4, 0);
  LLVMValueRef par = NULL;
  if (E->p->deploy) /* called by the predict wrapper only; needs no runtime */
    LLVMSetLinkage(entry, LLVMInternalLinkage);
  else if (!(par = LLVMGetNamedFunction(E->mod, "nnc_rt_parallel")))
    par = LLVMAddFunction(E->mod, "nnc_rt_parallel", pt);
  LLVMValueRef counters = NULL, clock = NULL;
  LLVMTypeRef now_type = LLVMFunctionType(E->ti64, NULL, 0, 0);
  if (profile) {
    counters = profile_counters(E, g);
    clock = LLVMGetNamedFunction(E->mod, "nnc_cg_profile_now");
    if (!clock) clock = LLVMAddFunction(E->mod, "nnc_cg_profile_now", now_type);
  }
  for (int i = 0; i < g->n; i++) {
    const nnc_kernel *k = g->k[i];
    if (nnc_kq_absorbed(quant, g->n, i)) continue;
    LLVMValueRef t0 = profile ? LLVMBuildCall2(E->b, now_type, clock, NULL, 0, "") : NULL;
    LLVMValueRef n = LLVMConstInt(E->ti64, (unsigned long long)k->extent, 0);
    if (par && nnc_cg_kernel_parallel(k)) {
      LLVMValueRef args[4] = {pool, fns[i], arena, n};
      LLVMBuildCall2(E->b, pt, par, args, 4, "");
    } else {
      call_kernel(E, k, fns[i], arena, n);
    }
    if (k->allreduce) call_allreduce_hook(E, entry, arena, k);
    if (profile) {
      LLVMValueRef t1 = LLVMBuildCall2(E->b, now_type, clock, NULL, 0, "");
      profile_count(E, counters, i, LLVMBuildSub(E->b, t1, t0, ""));
    }
  }
  LLVMBuildRetVoid(E->b);
  free(fns);
}

bool nnc_cg_emit_module(const nnc_kprog *p, int part, int nparts, LLVMModuleRef mod,
                        LLVMModuleRef gemm_mod, const nnc_cg_target *t, bool verify, bool profile,
                        char *err, size_t errlen) {
  if (nparts < 1 || nparts > NNC_CG_MAX_PARTS || part < 0 || part >= nparts) {
    snprintf(err, errlen, "codegen: part %d of %d", part, nparts);
    return false;
  }
  emitter E;
  memset(&E, 0, sizeof E);
  E.part = part;
  E.nparts = nparts;
  E.ctx = LLVMGetModuleContext(mod);
  E.mod = mod;
  E.gemm_mod = gemm_mod;
  E.b = LLVMCreateBuilderInContext(E.ctx);
  E.p = p;
  E.t = t;
  E.m = (nnc_cg_math){E.ctx, mod, E.b};
  E.tvoid = LLVMVoidTypeInContext(E.ctx);
  E.ti1 = LLVMInt1TypeInContext(E.ctx);
  E.ti8 = LLVMInt8TypeInContext(E.ctx);
  E.ti32 = LLVMInt32TypeInContext(E.ctx);
  E.ti64 = LLVMInt64TypeInContext(E.ctx);
  E.tf32 = LLVMFloatTypeInContext(E.ctx);
  E.tf64 = LLVMDoubleTypeInContext(E.ctx);
  E.tptr = LLVMPointerTypeInContext(E.ctx, 0);
  LLVMTypeRef kp[3] = {E.tptr, E.ti64, E.ti64};
  E.kfn_type = LLVMFunctionType(E.tvoid, kp, 3, 0);
  E.md_scope = LLVMGetMDKindIDInContext(E.ctx, "alias.scope", 11);
  E.md_noalias = LLVMGetMDKindIDInContext(E.ctx, "noalias", 7);
  E.md_loop = LLVMGetMDKindIDInContext(E.ctx, "llvm.loop", 9);
  E.base = calloc((size_t)p->nbufs + 1, sizeof(LLVMValueRef));
  E.scope_md = calloc((size_t)p->nbufs + 1, sizeof(LLVMValueRef));
  E.noalias_md = calloc((size_t)p->nbufs + 1, sizeof(LLVMValueRef));
  const nnc_kgraph *gs[NNC_CG_NGRAPHS];
  nnc_cg_graphs(p, gs);
  if (!E.base || !E.scope_md || !E.noalias_md) nnc_ir_bug("codegen: out of memory");
  double load[NNC_CG_MAX_PARTS];
  nnc_cg_assign_parts(p, nparts, E.part_of, load);
  static const char *const entries[NNC_CG_NGRAPHS] = {
      "nnc_train_step", "nnc_eval_step", "nnc_grad_step", "nnc_update_step", "nnc_grad_half_step"};
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    if (gs[g]) emit_entry(&E, gs[g], E.part_of[g], entries[g], profile);
  if (p->deploy && part == 0) nnc_ll_emit_predict(&E, LLVMGetNamedFunction(mod, "nnc_eval_step"));
  nnc_cg_free_parts(E.part_of);
  free(E.base);
  free(E.scope_md);
  free(E.noalias_md);
  free(E.memo);
  free(E.gemm_k);
  free(E.gemm_fn);
  LLVMDisposeBuilder(E.b);
  if (verify) {
    LLVMModuleRef mods[2] = {mod, gemm_mod};
    for (int i = 0; i < 2; i++) {
      char *msg = NULL;
      if (LLVMVerifyModule(mods[i], LLVMReturnStatusAction, &msg)) {
        /* A compiler bug: the module goes to stderr for the bug report. */
        LLVMDumpModule(mods[i]);
        snprintf(err, errlen, "codegen: LLVM module does not verify: %s", msg ? msg : "");
        LLVMDisposeMessage(msg);
        return false;
      }
      LLVMDisposeMessage(msg);
    }
  }
  return true;
}
