/* gemm_emit.h: what gemm.c and gemm_dot.c share — the emitter, a column
 * panel, small IR helpers, loops, the epilogue and the chunk tree. Private
 * to the product emitter (see gemm.c for the design). */
#ifndef NNC_GEMM_EMIT_H
#define NNC_GEMM_EMIT_H

#include "cg_loop.h"
#include "gemm.h"

#include <string.h>

#define MAX_ACC    32 /* accumulator vectors one micro-tile may hold */
#define MAX_LANES  16
#define MAX_ROWS   16           /* rows of the largest micro-tile */
#define PACK_BYTES (128 * 1024) /* stack for one packed panel of B */

/* One column panel as the micro-kernel sees it. */
typedef struct panel {
  int width;           /* columns of C */
  int nv;              /* outer: vectors (the last may be partial); dot: = width */
  int mr;              /* rows per full micro-tile for this panel */
  LLVMValueRef n;      /* first column (i64) */
  LLVMValueRef packed; /* outer with B stored [N,K]: the panel as [klen][nv*VL] */
  /* The k block this pass covers: [k0, k0 + klen). C holds the running
   * sum between blocks; the epilogue runs after the last one. With K in
   * one block, k0 = 0, klen = K and first = last = true. With several, one
   * pass runs them all in a loop (one copy of the code, not one per kind
   * of block): k0, first and last are run-time values (last_v, first_v),
   * klen is the plan's kc and the last block has tail k (at most kc). */
  LLVMValueRef k0;
  int64_t klen, tail;
  bool first, last;
  LLVMValueRef first_v, last_v; /* i1 when the blocks run in a loop, else NULL */
  /* A chunked product's blocks (emitter.scratch): the chunk they are in
   * (i64; first_v and last_v are then its first and last block) and the
   * first row of the cache block, else NULL. */
  LLVMValueRef chunk_v, m0;
} panel;

typedef struct emitter {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMValueRef fn;
  const nnc_cg_gemm *g;
  nnc_cg_gemm_plan p;
  LLVMTypeRef f32, i1, i32, i64, ptr, vec;
  LLVMValueRef A, B, bias, C, row_begin, row_end;
  LLVMValueRef pack_buf;       /* stack buffer for packed panels, or NULL */
  const nnc_cg_gemm_store *st; /* C's stores replaced (gemm.h), or NULL */
  LLVMValueRef scratch;        /* chunked product in K blocks: chunks slots of
                                  `slot` floats, [chunk][row - m0][n], else NULL */
  int64_t slot;
} emitter;

typedef nnc_cg_loop loop; /* cg_loop.h */
_Static_assert(MAX_ACC <= NNC_CG_LOOP_MAX_CARRY, "a loop carries a micro-tile's accumulators");

/* ---- small IR helpers --------------------------------------------------- */

static inline LLVMValueRef i64c(emitter *e, int64_t v) {
  return LLVMConstInt(e->i64, (uint64_t)v, 1);
}

static inline LLVMValueRef add64(emitter *e, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildAdd(e->b, a, b, "");
}

static inline LLVMValueRef mul64(emitter *e, LLVMValueRef a, int64_t c) {
  return LLVMBuildMul(e->b, a, i64c(e, c), "");
}

static inline LLVMValueRef elem_ptr(emitter *e, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(e->b, e->f32, base, &idx, 1, "");
}

static inline LLVMTypeRef vec_of(emitter *e, int lanes) {
  return LLVMVectorType(e->f32, (unsigned)lanes);
}

static inline LLVMValueRef call_intrinsic(emitter *e, const char *name, LLVMTypeRef *over,
                                          size_t nover, LLVMValueRef *args, unsigned nargs) {
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef fty = LLVMIntrinsicGetType(e->ctx, id, over, nover);
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(e->mod, id, over, nover);
  return LLVMBuildCall2(e->b, fty, fn, args, nargs, "");
}

/* a * b + c: one FMA instruction where the target has them, a multiply and
 * an add where it does not (llvm.fma would be a call to fmaf per lane
 * there, ~50x slower). */
static inline LLVMValueRef fma_vec(emitter *e, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[3] = {a, b, c};
  return call_intrinsic(e, "llvm.fmuladd", &e->vec, 1, args, 3);
}

/* <VL x i1> with the first `lanes` set. */
static inline LLVMValueRef lane_mask(emitter *e, int lanes) {
  LLVMValueRef bits[MAX_LANES];
  for (int l = 0; l < e->p.vl; l++)
    bits[l] = LLVMConstInt(e->i1, l < lanes, 0);
  return LLVMConstVector(bits, (unsigned)e->p.vl);
}

/* Loads `lanes` floats at base[idx]; lanes < VL reads only those (masked)
 * and leaves the others zero. */
static inline LLVMValueRef load_vec(emitter *e, LLVMValueRef base, LLVMValueRef idx, int lanes) {
  LLVMValueRef ptr = elem_ptr(e, base, idx);
  if (lanes == e->p.vl) {
    LLVMValueRef v = LLVMBuildLoad2(e->b, e->vec, ptr, "");
    LLVMSetAlignment(v, 4);
    return v;
  }
  LLVMTypeRef over[2] = {e->vec, e->ptr};
  LLVMValueRef args[4] = {ptr, LLVMConstInt(e->i32, 4, 0), lane_mask(e, lanes),
                          LLVMConstNull(e->vec)};
  return call_intrinsic(e, "llvm.masked.load", over, 2, args, 4);
}

static inline void store_vec(emitter *e, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx,
                             int lanes) {
  LLVMValueRef ptr = elem_ptr(e, base, idx);
  if (lanes == e->p.vl) {
    LLVMSetAlignment(LLVMBuildStore(e->b, v, ptr), 4);
    return;
  }
  LLVMTypeRef over[2] = {e->vec, e->ptr};
  LLVMValueRef args[4] = {v, ptr, LLVMConstInt(e->i32, 4, 0), lane_mask(e, lanes)};
  call_intrinsic(e, "llvm.masked.store", over, 2, args, 4);
}

static inline LLVMValueRef load_f32(emitter *e, LLVMValueRef base, LLVMValueRef idx) {
  LLVMValueRef v = LLVMBuildLoad2(e->b, e->f32, elem_ptr(e, base, idx), "");
  LLVMSetAlignment(v, 4);
  return v;
}

static inline LLVMValueRef splat(emitter *e, LLVMValueRef s) {
  LLVMValueRef v = LLVMBuildInsertElement(e->b, LLVMGetUndef(e->vec), s, i64c(e, 0), "");
  LLVMTypeRef mty = LLVMVectorType(e->i32, (unsigned)e->p.vl);
  return LLVMBuildShuffleVector(e->b, v, LLVMGetUndef(e->vec), LLVMConstNull(mty), "");
}

/* shufflevector(a, b, idx[0..n)) giving <n x float>. */
static inline LLVMValueRef shuffle(emitter *e, LLVMValueRef a, LLVMValueRef b, const int *idx,
                                   int n) {
  LLVMValueRef m[2 * MAX_LANES];
  for (int l = 0; l < n; l++)
    m[l] = LLVMConstInt(e->i32, (uint64_t)idx[l], 0);
  return LLVMBuildShuffleVector(e->b, a, b, LLVMConstVector(m, (unsigned)n), "");
}

/* The fused epilogue on n floats (a vector of any width): +bias, act.
 * mask_v: the mask's n floats at the same elements (NNC_CG_ACT_RELU_MASK),
 * else NULL. */
static inline LLVMValueRef epilogue(emitter *e, LLVMValueRef v, LLVMValueRef bias_v,
                                    LLVMValueRef mask_v) {
  if (bias_v) v = LLVMBuildFAdd(e->b, v, bias_v, "");
  LLVMValueRef zero = LLVMConstNull(LLVMTypeOf(v));
  if (e->g->act == NNC_CG_ACT_RELU) {
    /* v < 0 ? 0 : v keeps NaN visible, like PyTorch's relu. */
    LLVMValueRef neg = LLVMBuildFCmp(e->b, LLVMRealOLT, v, zero, "");
    v = LLVMBuildSelect(e->b, neg, zero, v, "");
  }
  if (mask_v) { /* ReLU's backward select: [mask > 0] v, ordered (NaN drops v) */
    LLVMValueRef keep = LLVMBuildFCmp(e->b, LLVMRealOGT, mask_v, zero, "");
    v = LLVMBuildSelect(e->b, keep, v, zero, "");
  }
  return v;
}

/* The mask's floats at elements [idx, idx + lanes) of C (C's layout, read
 * through the bias parameter) for NNC_CG_ACT_RELU_MASK after the last
 * block, else NULL: a vector of VL (lanes past `lanes` zero), or of
 * `lanes` floats when that is the epilogue's width (the dot kernel's
 * rows of nr). */
static inline LLVMValueRef mask_at(emitter *e, bool last, LLVMValueRef idx, int lanes, bool full) {
  if (!last || e->g->act != NNC_CG_ACT_RELU_MASK) return NULL;
  if (full) return load_vec(e, e->bias, idx, lanes);
  LLVMValueRef v = LLVMBuildLoad2(e->b, vec_of(e, lanes), elem_ptr(e, e->bias, idx), "");
  LLVMSetAlignment(v, 4);
  return v;
}

/* ---- loops ------------------------------------------------------------- */

/* The emitter's loops (cg_loop.h). */
static inline void loop_open(emitter *e, loop *l, LLVMValueRef start, LLVMValueRef limit, int n,
                             const LLVMValueRef *init, const char *name) {
  nnc_cg_loop_open(e->b, e->ctx, e->fn, l, start, limit, n, init, name);
}

static inline void loop_close(emitter *e, loop *l, int64_t step, const LLVMValueRef *next) {
  nnc_cg_loop_close(e->b, l, step, next);
}

/* Whether this pass starts from the value in C (a previous block's partial
 * sum, or C's old value when accumulating over K blocks). */
static inline bool starts_from_c(emitter *e, const panel *pn) {
  return !pn->first || e->p.fold;
}

/* What a finished sum s of an element becomes before it is stored: the
 * epilogue after the last block (last); a plain partial sum before. */
static inline LLVMValueRef finish(emitter *e, bool last, LLVMValueRef s, LLVMValueRef bias_v,
                                  LLVMValueRef mask_v, LLVMValueRef (*load_c)(emitter *, void *),
                                  void *at) {
  if (!last) return s;
  s = epilogue(e, s, bias_v, mask_v);
  if (e->g->accumulate && !e->p.fold) s = LLVMBuildFAdd(e->b, load_c(e, at), s, "");
  return s;
}

/* ---- chunk sums added as a pairwise tree -------------------------------- */

/* The sums of the chunks of a chunked product (nnc_cg_gemm.chunks), n
 * values each, added as the runtime's nnc_rt_tree_sum adds G vectors:
 * a binary counter whose level d holds the sum of 2^d consecutive chunks,
 * folded from the lowest level up at the end. FAdd commutes exactly, so
 * only the grouping matters. */
#define MAX_LEVELS 16
typedef struct chunk_tree {
  int n;
  bool full[MAX_LEVELS];
  LLVMValueRef level[MAX_LEVELS][MAX_ACC];
} chunk_tree;

static inline void tree_push(emitter *e, chunk_tree *t, LLVMValueRef *v) {
  int d = 0;
  for (; t->full[d]; d++) {
    for (int a = 0; a < t->n; a++)
      v[a] = LLVMBuildFAdd(e->b, t->level[d][a], v[a], "");
    t->full[d] = false;
  }
  memcpy(t->level[d], v, sizeof(LLVMValueRef) * (size_t)t->n);
  t->full[d] = true;
}

static inline void tree_total(emitter *e, chunk_tree *t, LLVMValueRef *out) {
  bool have = false;
  for (int d = 0; d < MAX_LEVELS; d++) {
    if (!t->full[d]) continue;
    for (int a = 0; a < t->n; a++)
      out[a] = have ? LLVMBuildFAdd(e->b, t->level[d][a], out[a], "") : t->level[d][a];
    have = true;
  }
}

/* Chunks of the pass: g->chunks for a chunked product emitted unblocked
 * (the pass is all of K), else 1 (blocked ones run one chunk's block a
 * pass, gemm.c). */
static inline int64_t pass_chunks(emitter *e, const panel *pn) {
  int64_t c = e->g->chunks > 1 ? e->g->chunks : 1;
  if (c > 1 && (pn->klen != e->g->K || pn->klen % c)) c = 1;
  return c;
}

/* gemm_dot.c: the dot-product micro-kernel's tile of mr rows at m. */
void nnc_gemm_dot_tile(emitter *e, const panel *pn, int mr, LLVMValueRef m);

#endif
