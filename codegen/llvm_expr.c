/* llvm_expr.c: kernel IR expressions -> LLVM instructions.
 *
 * Each kernel expression becomes the instructions that compute it where
 * its statement runs; a DAG node used twice is emitted once while what it
 * reads is unchanged (a memo scoped by loops, invalidated by stores and
 * scalar assignments). Float arithmetic carries the fast-math flags of
 * math.c; max/min, comparisons and casts follow the interpreter's
 * definitions exactly, and RAND is runtime/nnc_hash.h's formula.
 */
#include <stdlib.h>
#include <string.h>

#include "cg_loop.h"
#include "llvm_internal.h"
#include "nnc_hash.h"

LLVMTypeRef nnc_ll_type(emitter *E, nnc_kt t) {
  switch (t) {
  case NNC_KT_F32: return E->tf32;
  case NNC_KT_F64: return E->tf64;
  case NNC_KT_I32: return E->ti32;
  case NNC_KT_I64: return E->ti64;
  case NNC_KT_BOOL: return E->ti1;
  }
  return E->tf32;
}

/* ---- memo of emitted expressions (scoped by loops) ---- */

static LLVMValueRef memo_get(emitter *E, const nnc_kexpr *e) {
  for (int i = E->nmemo - 1; i >= 0; i--)
    if (E->memo[i].e == e) return E->memo[i].v;
  return NULL;
}

static void memo_put(emitter *E, const nnc_kexpr *e, LLVMValueRef v) {
  if (E->nmemo == E->memo_cap) {
    E->memo_cap = E->memo_cap ? 2 * E->memo_cap : 256;
    E->memo = realloc(E->memo, sizeof(memo_entry) * (size_t)E->memo_cap);
    if (!E->memo) nnc_ir_bug("codegen: out of memory");
  }
  E->memo[E->nmemo++] = (memo_entry){e, v};
}

void nnc_ll_memo_invalidate(emitter *E, bool mem, bool scalar) {
  for (int i = 0; i < E->nmemo; i++)
    if (E->memo[i].e &&
        ((mem && E->memo[i].e->reads_mem) || (scalar && E->memo[i].e->reads_scalar)))
      E->memo[i].e = NULL;
}

/* ---- memory access ---- */

LLVMValueRef nnc_ll_address(emitter *E, int buf, LLVMValueRef idx) {
  LLVMValueRef base = E->base[nnc_kbuf_base(E->p, buf)];
  return LLVMBuildInBoundsGEP2(E->b, nnc_ll_type(E, E->p->bufs[buf].type), base, &idx, 1, "");
}

void nnc_ll_tag_access(emitter *E, LLVMValueRef inst, int buf) {
  int b = nnc_kbuf_base(E->p, buf);
  if (E->scope_md[b]) {
    LLVMSetMetadata(inst, E->md_scope, E->scope_md[b]);
    LLVMSetMetadata(inst, E->md_noalias, E->noalias_md[b]);
  }
  LLVMSetAlignment(inst, (unsigned)nnc_kt_size(E->p->bufs[buf].type));
}

/* ---- expressions ---- */

LLVMValueRef nnc_ll_expr(emitter *E, const nnc_kexpr *e);

/* A constant of type t (f32, f64, or a vector of them: splat). */
static LLVMValueRef splat_const(LLVMTypeRef t, LLVMValueRef (*elem)(LLVMTypeRef, double),
                                double v) {
  if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return elem(t, v);
  LLVMValueRef lanes[64];
  unsigned n = LLVMGetVectorSize(t);
  if (n > 64) nnc_ir_bug("codegen: vector of %u lanes", n);
  for (unsigned i = 0; i < n; i++)
    lanes[i] = elem(LLVMGetElementType(t), v);
  return LLVMConstVector(lanes, n);
}

static LLVMValueRef fconst(emitter *E, LLVMTypeRef t, double v) {
  (void)E;
  return splat_const(t, LLVMConstReal, v);
}

/* ---- the vector form of an update pass (E->vec) ---- */

static LLVMValueRef vec_splat(emitter *E, LLVMValueRef s) {
  LLVMTypeRef vt = LLVMVectorType(LLVMTypeOf(s), (unsigned)E->vec.width);
  LLVMValueRef v =
      LLVMBuildInsertElement(E->b, LLVMGetUndef(vt), s, LLVMConstInt(E->ti32, 0, 0), "");
  LLVMTypeRef mty = LLVMVectorType(E->ti32, (unsigned)E->vec.width);
  return LLVMBuildShuffleVector(E->b, v, LLVMGetUndef(vt), LLVMConstNull(mty), "");
}

/* <width x i1> with the first `lanes` set. */
static LLVMValueRef vec_mask(emitter *E) {
  LLVMValueRef bits[64];
  for (int l = 0; l < E->vec.width; l++)
    bits[l] = LLVMConstInt(E->ti1, l < E->vec.lanes, 0);
  return LLVMConstVector(bits, (unsigned)E->vec.width);
}

static LLVMValueRef vec_call(emitter *E, const char *name, LLVMValueRef *args, unsigned n,
                             LLVMTypeRef vt) {
  LLVMTypeRef over[2] = {vt, E->tptr};
  return nnc_cg_call_intrinsic(E->m.mod, E->b, name, over, 2, args, n);
}

/* Load e (a LOAD) in vector form: the gradient, a splat scalar, or the
 * pass's elements [flat, flat + lanes). */
static LLVMValueRef vec_load(emitter *E, const nnc_kexpr *e) {
  int b = nnc_kbuf_base(E->p, e->buf);
  if (b == E->vec.grad_buf) return E->vec.grad;
  LLVMTypeRef t = nnc_ll_type(E, e->type);
  if (E->p->bufs[b].numel == 1) {
    LLVMValueRef ld =
        LLVMBuildLoad2(E->b, t, nnc_ll_address(E, e->buf, LLVMConstInt(E->ti64, 0, 0)), "");
    nnc_ll_tag_access(E, ld, e->buf);
    return vec_splat(E, ld);
  }
  LLVMTypeRef vt = LLVMVectorType(t, (unsigned)E->vec.width);
  LLVMValueRef ptr = nnc_ll_address(E, e->buf, E->vec.flat);
  LLVMValueRef ld;
  if (E->vec.lanes == E->vec.width) {
    ld = LLVMBuildLoad2(E->b, vt, ptr, "");
    nnc_ll_tag_access(E, ld, e->buf);
  } else {
    LLVMValueRef args[4] = {ptr, LLVMConstInt(E->ti32, 4, 0), vec_mask(E), LLVMConstNull(vt)};
    ld = vec_call(E, "llvm.masked.load", args, 4, vt);
    nnc_ll_tag_access(E, ld, e->buf);
  }
  return ld;
}

void nnc_ll_vec_store(emitter *E, int buf, LLVMValueRef v) {
  LLVMValueRef ptr = nnc_ll_address(E, buf, E->vec.flat);
  if (E->vec.lanes == E->vec.width) {
    nnc_ll_tag_access(E, LLVMBuildStore(E->b, v, ptr), buf);
    return;
  }
  LLVMValueRef args[4] = {v, ptr, LLVMConstInt(E->ti32, 4, 0), vec_mask(E)};
  nnc_ll_tag_access(E, vec_call(E, "llvm.masked.store", args, 4, LLVMTypeOf(v)), buf);
}

/* Whether e is the same in every lane: it reads only one-element buffers. */
static bool vec_uniform(const emitter *E, const nnc_kexpr *e) {
  if (!e) return true;
  if (e->kind == NNC_KX_SCALAR || e->kind == NNC_KX_VAR) return false;
  if (e->kind == NNC_KX_LOAD) return E->p->bufs[nnc_kbuf_base(E->p, e->buf)].numel == 1;
  for (int i = 0; i < 3; i++)
    if (!vec_uniform(E, e->a[i])) return false;
  return true;
}

static LLVMValueRef emit_unary(emitter *E, const nnc_kexpr *e) {
  LLVMValueRef x = nnc_ll_expr(E, e->a[0]);
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMBuilderRef b = E->b;
  switch (e->op) {
  case NNC_K_NEG: return nnc_cg_fm(LLVMBuildFNeg(b, x, ""));
  case NNC_K_EXP: return nnc_cg_exp(&E->m, x);
  case NNC_K_LOG: return nnc_cg_log(&E->m, x);
  case NNC_K_SQRT: return nnc_cg_intrinsic1(&E->m, "llvm.sqrt", x);
  case NNC_K_RSQRT:
    return nnc_cg_fm(
        LLVMBuildFDiv(b, fconst(E, t, 1), nnc_cg_intrinsic1(&E->m, "llvm.sqrt", x), ""));
  case NNC_K_RECIP: return nnc_cg_fm(LLVMBuildFDiv(b, fconst(E, t, 1), x, ""));
  case NNC_K_TANH: return nnc_cg_tanh(&E->m, x);
  case NNC_K_SIGMOID: return nnc_cg_sigmoid(&E->m, x);
  case NNC_K_RELU: {
    LLVMValueRef pos = nnc_cg_fm(LLVMBuildFCmp(b, LLVMRealOGT, x, fconst(E, t, 0), ""));
    return LLVMBuildSelect(b, pos, x, fconst(E, t, 0), "");
  }
  case NNC_K_ABS: return nnc_cg_intrinsic1(&E->m, "llvm.fabs", x);
  case NNC_K_SIGN: {
    LLVMValueRef pos = LLVMBuildFCmp(b, LLVMRealOGT, x, fconst(E, t, 0), "");
    LLVMValueRef neg = LLVMBuildFCmp(b, LLVMRealOLT, x, fconst(E, t, 0), "");
    return LLVMBuildSelect(b, pos, fconst(E, t, 1),
                           LLVMBuildSelect(b, neg, fconst(E, t, -1), fconst(E, t, 0), ""), "");
  }
  case NNC_K_ERF: return nnc_cg_erf(&E->m, x);
  case NNC_K_COS: return nnc_cg_cos(&E->m, x);
  case NNC_K_FLOOR: return nnc_cg_intrinsic1(&E->m, "llvm.floor", x);
  case NNC_K_NOT: return LLVMBuildNot(b, x, "");
  /* not unary: a bug of the lowering */
  case NNC_K_ADD:
  case NNC_K_SUB:
  case NNC_K_MUL:
  case NNC_K_DIV:
  case NNC_K_REM:
  case NNC_K_MAX:
  case NNC_K_MIN:
  case NNC_K_POW:
  case NNC_K_LT:
  case NNC_K_LE:
  case NNC_K_GT:
  case NNC_K_GE:
  case NNC_K_EQ:
  case NNC_K_NE:
  case NNC_K_AND:
  case NNC_K_OR:
  case NNC_K_COUNT_: break;
  }
  nnc_ir_bug("codegen: bad unary kernel op %d", (int)e->op);
}

/* x^y for a constant integer y: repeated squaring. */
static LLVMValueRef powi(emitter *E, LLVMValueRef x, int64_t n) {
  LLVMTypeRef t = LLVMTypeOf(x);
  bool inv = n < 0;
  if (inv) n = -n;
  LLVMValueRef r = NULL, sq = x;
  while (n) {
    if (n & 1) r = r ? nnc_cg_fm(LLVMBuildFMul(E->b, r, sq, "")) : sq;
    n >>= 1;
    if (n) sq = nnc_cg_fm(LLVMBuildFMul(E->b, sq, sq, ""));
  }
  if (!r) r = fconst(E, t, 1);
  return inv ? nnc_cg_fm(LLVMBuildFDiv(E->b, fconst(E, t, 1), r, "")) : r;
}

static LLVMValueRef emit_float_binary(emitter *E, const nnc_kexpr *e, LLVMValueRef x,
                                      LLVMValueRef y) {
  LLVMBuilderRef b = E->b;
  if (e->exact && e->op == NNC_K_ADD) return LLVMBuildFAdd(b, x, y, ""); /* no contraction */
  switch (e->op) {
  case NNC_K_ADD: return nnc_cg_fm(LLVMBuildFAdd(b, x, y, ""));
  case NNC_K_SUB: return nnc_cg_fm(LLVMBuildFSub(b, x, y, ""));
  case NNC_K_MUL: return nnc_cg_fm(LLVMBuildFMul(b, x, y, ""));
  case NNC_K_DIV: return nnc_cg_fm(LLVMBuildFDiv(b, x, y, ""));
  case NNC_K_REM: return nnc_cg_fm(LLVMBuildFRem(b, x, y, ""));
  /* max/min as the interpreter defines them (a >= b ? a : b). The select
   * form is what reductions use too: maxnum would be faster to vectorise
   * but differs on NaN. */
  case NNC_K_MAX: return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOGE, x, y, ""), x, y, "");
  case NNC_K_MIN: return LLVMBuildSelect(b, LLVMBuildFCmp(b, LLVMRealOLE, x, y, ""), x, y, "");
  case NNC_K_POW: {
    const nnc_kexpr *ye = e->a[1];
    if (ye->kind == NNC_KX_CONST && ye->f == (double)(int64_t)ye->f && ye->f >= -64 && ye->f <= 64)
      return powi(E, x, (int64_t)ye->f);
    if (ye->kind == NNC_KX_CONST && ye->f == 0.5) return nnc_cg_intrinsic1(&E->m, "llvm.sqrt", x);
    return nnc_cg_pow(&E->m, x, y);
  }
  case NNC_K_LT: return LLVMBuildFCmp(b, LLVMRealOLT, x, y, "");
  case NNC_K_LE: return LLVMBuildFCmp(b, LLVMRealOLE, x, y, "");
  case NNC_K_GT: return LLVMBuildFCmp(b, LLVMRealOGT, x, y, "");
  case NNC_K_GE: return LLVMBuildFCmp(b, LLVMRealOGE, x, y, "");
  case NNC_K_EQ: return LLVMBuildFCmp(b, LLVMRealOEQ, x, y, "");
  case NNC_K_NE: return LLVMBuildFCmp(b, LLVMRealUNE, x, y, "");
  /* not a binary op on floats */
  case NNC_K_NEG:
  case NNC_K_EXP:
  case NNC_K_LOG:
  case NNC_K_SQRT:
  case NNC_K_RSQRT:
  case NNC_K_RECIP:
  case NNC_K_TANH:
  case NNC_K_SIGMOID:
  case NNC_K_RELU:
  case NNC_K_ABS:
  case NNC_K_SIGN:
  case NNC_K_ERF:
  case NNC_K_COS:
  case NNC_K_FLOOR:
  case NNC_K_NOT:
  case NNC_K_AND:
  case NNC_K_OR:
  case NNC_K_COUNT_: break;
  }
  nnc_ir_bug("codegen: bad float kernel op %d", (int)e->op);
}

static LLVMValueRef emit_int_binary(emitter *E, const nnc_kexpr *e, LLVMValueRef x,
                                    LLVMValueRef y) {
  LLVMBuilderRef b = E->b;
  switch (e->op) {
  case NNC_K_ADD: return LLVMBuildNSWAdd(b, x, y, "");
  case NNC_K_SUB: return LLVMBuildNSWSub(b, x, y, "");
  case NNC_K_MUL: return LLVMBuildNSWMul(b, x, y, "");
  case NNC_K_DIV: return LLVMBuildSDiv(b, x, y, "");
  case NNC_K_REM: return LLVMBuildSRem(b, x, y, "");
  case NNC_K_MAX: return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSGE, x, y, ""), x, y, "");
  case NNC_K_MIN: return LLVMBuildSelect(b, LLVMBuildICmp(b, LLVMIntSLE, x, y, ""), x, y, "");
  case NNC_K_LT: return LLVMBuildICmp(b, LLVMIntSLT, x, y, "");
  case NNC_K_LE: return LLVMBuildICmp(b, LLVMIntSLE, x, y, "");
  case NNC_K_GT: return LLVMBuildICmp(b, LLVMIntSGT, x, y, "");
  case NNC_K_GE: return LLVMBuildICmp(b, LLVMIntSGE, x, y, "");
  case NNC_K_EQ: return LLVMBuildICmp(b, LLVMIntEQ, x, y, "");
  case NNC_K_NE: return LLVMBuildICmp(b, LLVMIntNE, x, y, "");
  case NNC_K_AND: return LLVMBuildAnd(b, x, y, "");
  case NNC_K_OR: return LLVMBuildOr(b, x, y, "");
  /* not a binary op on integers */
  case NNC_K_NEG:
  case NNC_K_EXP:
  case NNC_K_LOG:
  case NNC_K_SQRT:
  case NNC_K_RSQRT:
  case NNC_K_RECIP:
  case NNC_K_TANH:
  case NNC_K_SIGMOID:
  case NNC_K_RELU:
  case NNC_K_ABS:
  case NNC_K_SIGN:
  case NNC_K_ERF:
  case NNC_K_COS:
  case NNC_K_FLOOR:
  case NNC_K_NOT:
  case NNC_K_POW:
  case NNC_K_COUNT_: break;
  }
  nnc_ir_bug("codegen: bad integer kernel op %d", (int)e->op);
}

static LLVMValueRef emit_cast(emitter *E, const nnc_kexpr *e) {
  LLVMValueRef x = nnc_ll_expr(E, e->a[0]);
  nnc_kt from = e->a[0]->type, to = e->type;
  LLVMTypeRef t = nnc_ll_type(E, to);
  bool ff = nnc_kt_is_float(from), tf = nnc_kt_is_float(to);
  if (ff && tf)
    return nnc_kt_size(to) > nnc_kt_size(from) ? LLVMBuildFPExt(E->b, x, t, "")
                                               : LLVMBuildFPTrunc(E->b, x, t, "");
  if (ff) {
    if (to == NNC_KT_BOOL)
      return LLVMBuildFCmp(E->b, LLVMRealUNE, x, LLVMConstReal(LLVMTypeOf(x), 0), "");
    return LLVMBuildFPToSI(E->b, x, t, "");
  }
  if (tf)
    return from == NNC_KT_BOOL ? LLVMBuildUIToFP(E->b, x, t, "") : LLVMBuildSIToFP(E->b, x, t, "");
  if (to == NNC_KT_BOOL)
    return LLVMBuildICmp(E->b, LLVMIntNE, x, LLVMConstInt(LLVMTypeOf(x), 0, 0), "");
  if (nnc_kt_size(to) > nnc_kt_size(from))
    return from == NNC_KT_BOOL ? LLVMBuildZExt(E->b, x, t, "") : LLVMBuildSExt(E->b, x, t, "");
  return LLVMBuildTrunc(E->b, x, t, "");
}

/* ops.def's RAND: runtime/nnc_hash.h's formula, its finalizer expanded
 * from the same step list. */
static LLVMValueRef emit_rand(emitter *E, const nnc_kexpr *e) {
  LLVMBuilderRef b = E->b;
  LLVMTypeRef i64 = E->ti64;
  LLVMValueRef seed = nnc_ll_expr(E, e->a[0]);
  if (e->a[0]->type == NNC_KT_I32)
    seed = LLVMBuildZExt(b, seed, i64, "");
  else
    seed = LLVMBuildAnd(b, seed, LLVMConstInt(i64, 0xffffffffu, 0), "");
  LLVMValueRef s = LLVMBuildXor(b, seed, LLVMConstInt(i64, (unsigned long long)e->i << 32, 0), "");
  LLVMValueRef step = nnc_ll_expr(E, e->a[1]), index = nnc_ll_expr(E, e->a[2]);
  LLVMValueRef x =
      LLVMBuildXor(b, s, LLVMBuildMul(b, step, LLVMConstInt(i64, NNC_HASH_STEP_MUL, 0), ""), "");
  x = LLVMBuildXor(b, x, LLVMBuildMul(b, index, LLVMConstInt(i64, NNC_HASH_INDEX_MUL, 0), ""), "");
#define XORSHIFT(n) x = LLVMBuildXor(b, x, LLVMBuildLShr(b, x, LLVMConstInt(i64, n, 0), ""), "");
#define MUL(c)      x = LLVMBuildMul(b, x, LLVMConstInt(i64, c, 0), "");
  NNC_HASH_FINALIZER(XORSHIFT, MUL)
#undef XORSHIFT
#undef MUL
  x = LLVMBuildLShr(b, x, LLVMConstInt(i64, 64 - NNC_HASH_BITS, 0), "");
  LLVMTypeRef ft = nnc_ll_type(E, e->type);
  LLVMValueRef f = LLVMBuildUIToFP(b, LLVMBuildTrunc(b, x, E->ti32, ""), ft, "");
  return LLVMBuildFMul(b, f, LLVMConstReal(ft, 1.0 / (double)(UINT32_C(1) << NNC_HASH_BITS)), "");
}

static LLVMValueRef expr_uncached(emitter *E, const nnc_kexpr *e) {
  switch (e->kind) {
  case NNC_KX_CONST:
    if (E->vec.width && nnc_kt_is_float(e->type))
      return fconst(E, LLVMVectorType(nnc_ll_type(E, e->type), (unsigned)E->vec.width), e->f);
    if (nnc_kt_is_float(e->type)) return LLVMConstReal(nnc_ll_type(E, e->type), e->f);
    return LLVMConstInt(nnc_ll_type(E, e->type), (unsigned long long)e->i, 1);
  case NNC_KX_VAR: return E->vars[e->var];
  case NNC_KX_SCALAR:
    if (E->vec.width) return E->vec.scalars[e->var];
    return LLVMBuildLoad2(E->b, nnc_ll_type(E, e->type), E->scalars[e->var], "");
  case NNC_KX_LOAD: {
    if (E->vec.width) return vec_load(E, e);
    if (E->qs.q && E->qs.from >= 0 && nnc_kbuf_base(E->p, e->buf) == E->qs.from) {
      /* held in bytes for an int8 product (kernel.h's nnc_kqstore): the code */
      LLVMValueRef idx = nnc_ll_expr(E, e->a[0]);
      LLVMValueRef at = LLVMBuildInBoundsGEP2(E->b, E->ti8, E->base[E->qs.from], &idx, 1, "");
      LLVMValueRef ld = LLVMBuildLoad2(E->b, E->ti8, at, "");
      nnc_ll_tag_access(E, ld, e->buf);
      LLVMSetAlignment(ld, 1);
      return LLVMBuildUIToFP(E->b, ld, E->tf32, "");
    }
    LLVMValueRef ld = LLVMBuildLoad2(E->b, nnc_ll_type(E, e->type),
                                     nnc_ll_address(E, e->buf, nnc_ll_expr(E, e->a[0])), "");
    nnc_ll_tag_access(E, ld, e->buf);
    return ld;
  }
  case NNC_KX_UN: return emit_unary(E, e);
  case NNC_KX_BIN: {
    LLVMValueRef x = nnc_ll_expr(E, e->a[0]), y = nnc_ll_expr(E, e->a[1]);
    if (E->vec.width && e->op == NNC_K_DIV && vec_uniform(E, e->a[1])) {
      /* x / y with y the same for every element: what the loop form
       * becomes once LICM hoists the division (allow-reciprocal):
       * x * (1 / y), 1 / y rounded once. */
      LLVMValueRef r = nnc_cg_fm(LLVMBuildFDiv(E->b, fconst(E, LLVMTypeOf(y), 1), y, ""));
      return nnc_cg_fm(LLVMBuildFMul(E->b, x, r, ""));
    }
    return nnc_kt_is_float(e->a[0]->type) ? emit_float_binary(E, e, x, y)
                                          : emit_int_binary(E, e, x, y);
  }
  case NNC_KX_SELECT: {
    LLVMValueRef c = nnc_ll_expr(E, e->a[0]), x = nnc_ll_expr(E, e->a[1]),
                 y = nnc_ll_expr(E, e->a[2]);
    return LLVMBuildSelect(E->b, c, x, y, "");
  }
  case NNC_KX_CAST: return emit_cast(E, e);
  case NNC_KX_RAND: return emit_rand(E, e);
  }
  nnc_ir_bug("codegen: bad kernel expression");
}

LLVMValueRef nnc_ll_expr(emitter *E, const nnc_kexpr *e) {
  if (e->kind == NNC_KX_CONST || e->kind == NNC_KX_VAR) return expr_uncached(E, e);
  LLVMValueRef v = memo_get(E, e);
  if (v) return v;
  v = expr_uncached(E, e);
  memo_put(E, e, v);
  return v;
}
