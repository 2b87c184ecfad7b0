/* gemm_bf16.c: matrix products with bf16 operands and f32 accumulation
 * (`precision = bf16`), emitted as LLVM IR for AVX512-BF16 (vdpbf16ps).
 *
 * Same contract as nnc_cg_emit_gemm (gemm.h): rows [row_begin, row_end)
 * of C = act(A.B + bias) (or C += ...), A, B, bias and C f32 in memory.
 * The operands are rounded to bf16 (round to nearest even, NaN kept
 * quiet) while they are packed, and the packing pairs the k dimension the
 * way vdpbf16ps reads it:
 *  - A, per block of MC rows and KC k: the bf16 pair (A[row, k0+2p],
 *    A[row, k0+2p+1]) as one 32-bit word, at apack[row][p] (A stored
 *    [M, K]) or apack[p][row] (A stored [K, M]: 16 rows per vector);
 *  - B, per panel of NV*16 columns and the same k block:
 *    bpack[p][col] = the pair (B[k0+2p, col], B[k0+2p+1, col]) (B stored
 *    [N, K]: 16 columns transposed in registers).
 * A k past K reads as zero. The micro-kernel keeps an MR x (NV*16) tile of
 * C in MR*NV zmm accumulators; per pair p it loads NV vectors of bpack
 * and broadcasts one A word per row: acc = vdpbf16ps(acc, a, b), i.e.
 * acc += A[k]*B[k] + A[k+1]*B[k+1] with exact products and f32 sums.
 * K is cut into blocks of KC whose partial sums go through C (f32); the
 * epilogue (bias, ReLU, accumulate) runs after the last block.
 *
 * Every element of C sees the same operations in the same order wherever
 * its row falls (tile or single row, thread split or not): k blocks in
 * order, pairs in order. So results do not depend on the thread count.
 * AMX tiles are not used: no machine this was written on had them.
 */
#include "cg_loop.h"
#include "gemm.h"

#include <string.h>

#define BF_LANES   16  /* f32 lanes of a zmm */
#define BF_MR      8   /* rows of a full micro-tile */
#define BF_NV      3   /* vectors of 16 columns per panel: 8 x 3 accumulators */
#define BF_MC      64  /* rows per block of packed A */
#define BF_KC      512 /* k per block (256 pairs); packed A 64 KiB, B 48 KiB */
#define BF_MAX_ACC (BF_MR * BF_NV)

typedef struct bf_emitter {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMValueRef fn;
  const nnc_cg_gemm *g;
  LLVMTypeRef f32, i1, i16, i32, i64, ptr, vf, vi, vbf;
  LLVMValueRef A, B, bias, C, row_begin, row_end;
  LLVMValueRef apack, bpack;
} bf_emitter;

/* The k block a pass covers and the panel it works on. */
typedef struct bf_pass {
  LLVMValueRef k0, mb; /* first k; first row of the A block */
  int64_t klen, pairs; /* k in the block; pairs = ceil(klen / 2) */
  bool first, last;
  LLVMValueRef n; /* first column of the panel */
  int width, nv;  /* columns; vectors */
} bf_pass;

typedef nnc_cg_loop bf_loop; /* cg_loop.h */
_Static_assert(BF_MAX_ACC <= NNC_CG_LOOP_MAX_CARRY, "a loop carries a micro-tile's accumulators");

static LLVMValueRef c64(bf_emitter *e, int64_t v) {
  return LLVMConstInt(e->i64, (uint64_t)v, 1);
}
static LLVMValueRef c32(bf_emitter *e, uint32_t v) {
  return LLVMConstInt(e->i32, v, 0);
}
static LLVMValueRef add(bf_emitter *e, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildAdd(e->b, a, b, "");
}
static LLVMValueRef mulc(bf_emitter *e, LLVMValueRef a, int64_t c) {
  return LLVMBuildMul(e->b, a, c64(e, c), "");
}
static LLVMValueRef gep(bf_emitter *e, LLVMTypeRef t, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(e->b, t, base, &idx, 1, "");
}

static LLVMValueRef intrinsic(bf_emitter *e, const char *name, LLVMTypeRef *over, size_t nover,
                              LLVMValueRef *args, unsigned nargs) {
  return nnc_cg_call_intrinsic(e->mod, e->b, name, over, nover, args, nargs);
}

/* <n x T> splat of the scalar constant c. */
static LLVMValueRef splat_const(LLVMValueRef c, int n) {
  LLVMValueRef v[2 * BF_LANES];
  for (int i = 0; i < n; i++)
    v[i] = c;
  return LLVMConstVector(v, (unsigned)n);
}

static LLVMValueRef mask(bf_emitter *e, int lanes, int n) {
  LLVMValueRef bits[2 * BF_LANES];
  for (int l = 0; l < n; l++)
    bits[l] = LLVMConstInt(e->i1, l < lanes, 0);
  return LLVMConstVector(bits, (unsigned)n);
}

/* n floats (n = 16 or 32) at base[idx], of which the first `lanes` are
 * read and the rest are zero. */
static LLVMValueRef load_floats(bf_emitter *e, LLVMValueRef base, LLVMValueRef idx, int lanes,
                                int n) {
  LLVMTypeRef t = LLVMVectorType(e->f32, (unsigned)n);
  LLVMValueRef p = gep(e, e->f32, base, idx);
  if (lanes >= n) {
    LLVMValueRef v = LLVMBuildLoad2(e->b, t, p, "");
    LLVMSetAlignment(v, 4);
    return v;
  }
  if (lanes <= 0) return LLVMConstNull(t);
  LLVMTypeRef over[2] = {t, e->ptr};
  LLVMValueRef args[4] = {p, c32(e, 4), mask(e, lanes, n), LLVMConstNull(t)};
  return intrinsic(e, "llvm.masked.load", over, 2, args, 4);
}

static void store_floats(bf_emitter *e, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx,
                         int lanes) {
  LLVMValueRef p = gep(e, e->f32, base, idx);
  if (lanes >= BF_LANES) {
    LLVMSetAlignment(LLVMBuildStore(e->b, v, p), 4);
    return;
  }
  LLVMTypeRef over[2] = {e->vf, e->ptr};
  LLVMValueRef args[4] = {v, p, c32(e, 4), mask(e, lanes, BF_LANES)};
  intrinsic(e, "llvm.masked.store", over, 2, args, 4);
}

/* f32 -> bf16 bits, round to nearest even; a NaN stays a (quiet) NaN:
 * the same function as nnc_rt_bf16_round (runtime) bit for bit. Works on
 * a float or a vector of floats; gives i16 or <n x i16>. */
static LLVMValueRef round_bf16(bf_emitter *e, LLVMValueRef v) {
  LLVMTypeRef t = LLVMTypeOf(v);
  bool vec = LLVMGetTypeKind(t) == LLVMVectorTypeKind;
  int n = vec ? (int)LLVMGetVectorSize(t) : 1;
  LLVMTypeRef it = vec ? LLVMVectorType(e->i32, (unsigned)n) : e->i32;
  LLVMTypeRef ht = vec ? LLVMVectorType(e->i16, (unsigned)n) : e->i16;
#define K32(x) (vec ? splat_const(c32(e, (x)), n) : c32(e, (x)))
  LLVMValueRef bits = LLVMBuildBitCast(e->b, v, it, "");
  LLVMValueRef hi = LLVMBuildLShr(e->b, bits, K32(16), "");
  LLVMValueRef lsb = LLVMBuildAnd(e->b, hi, K32(1), "");
  LLVMValueRef r = LLVMBuildAdd(e->b, bits, LLVMBuildAdd(e->b, lsb, K32(0x7fff), ""), "");
  r = LLVMBuildLShr(e->b, r, K32(16), "");
  LLVMValueRef qnan = LLVMBuildOr(e->b, hi, K32(0x40), "");
  LLVMValueRef nan = LLVMBuildFCmp(e->b, LLVMRealUNO, v, v, "");
  r = LLVMBuildSelect(e->b, nan, qnan, r, "");
#undef K32
  return LLVMBuildTrunc(e->b, r, ht, "");
}

/* ---- loops ------------------------------------------------------------- */

static void loop_open(bf_emitter *e, bf_loop *l, LLVMValueRef start, LLVMValueRef limit, int n,
                      const LLVMValueRef *init) {
  nnc_cg_loop_open(e->b, e->ctx, e->fn, l, start, limit, n, init, "b");
}

static void loop_close(bf_emitter *e, bf_loop *l, int64_t step, const LLVMValueRef *next) {
  nnc_cg_loop_close(e->b, l, step, next);
}

/* ---- packing ------------------------------------------------------------ */

/* In-register transpose of 16 vectors of 16 words: stage h pairs vectors
 * j and j+h and swaps the off-diagonal h x h blocks, so after h = 8 .. 1
 * vector t holds old lane t of every vector. */
static void transpose16(bf_emitter *e, LLVMValueRef *v) {
  for (int h = BF_LANES / 2; h >= 1; h /= 2) {
    LLVMValueRef p[BF_LANES], q[BF_LANES];
    for (int l = 0; l < BF_LANES; l++) {
      int blk = l / (2 * h), r = l % (2 * h);
      p[l] = c32(e, (uint32_t)(r < h ? blk * 2 * h + r : BF_LANES + blk * 2 * h + r - h));
      q[l] = c32(e, (uint32_t)(r < h ? blk * 2 * h + h + r : BF_LANES + blk * 2 * h + r));
    }
    LLVMValueRef pm = LLVMConstVector(p, BF_LANES), qm = LLVMConstVector(q, BF_LANES);
    for (int j = 0; j < BF_LANES; j++) {
      if (j & h) continue;
      LLVMValueRef x = v[j], y = v[j + h];
      v[j] = LLVMBuildShuffleVector(e->b, x, y, pm, "");
      v[j + h] = LLVMBuildShuffleVector(e->b, x, y, qm, "");
    }
  }
}

/* Pairs per packed A row: BF_KC / 2 rounded to whole vectors. */
enum { A_ROW = BF_KC / 2, B_ROW = BF_NV * BF_LANES };

/* Where the pair word (row r - mb, pair p) of A lives in apack: rows of
 * A_ROW words when A is stored [M, K] (k contiguous), columns of BF_MC
 * words (rows contiguous) when it is stored [K, M]. */
static LLVMValueRef a_word(bf_emitter *e, LLVMValueRef rel, LLVMValueRef p) {
  if (e->g->trans_a) return add(e, mulc(e, p, BF_MC), rel);
  return add(e, mulc(e, rel, A_ROW), p);
}

/* The shuffle mask that interleaves two vectors of BF_LANES lanes,
 * x0 y0 x1 y1 ...: two k rows into k pairs. */
static LLVMValueRef interleave_mask(bf_emitter *e) {
  LLVMValueRef idx[2 * BF_LANES];
  for (int l = 0; l < BF_LANES; l++) {
    idx[2 * l] = c32(e, (uint32_t)l);
    idx[2 * l + 1] = c32(e, (uint32_t)(BF_LANES + l));
  }
  return LLVMConstVector(idx, 2 * BF_LANES);
}

/* The two parts of a loop whose last step is peeled: part 0 opens a loop
 * over [0, full) and sets *i to its index (the caller closes it); part 1
 * sets *i to full, the peeled step. False where the part has nothing to
 * do (no full steps; no peeled step). */
static bool peeled_part(bf_emitter *e, int part, int64_t full, bool peeled, bf_loop *l,
                        LLVMValueRef *i) {
  if (part == 0) {
    if (full == 0) return false;
    loop_open(e, l, c64(e, 0), c64(e, full), 0, NULL);
    *i = l->iv;
    return true;
  }
  if (!peeled) return false;
  *i = c64(e, full);
  return true;
}

/* A stored [K, M]: the pairs of rows [r, r + n) (n = 16: a vector; n = 1)
 * for every pair of the block, the odd last k peeled. */
static void pack_a_trans(bf_emitter *e, const bf_pass *ps, LLVMValueRef r, int n) {
  const nnc_cg_gemm *g = e->g;
  LLVMValueRef rel = LLVMBuildSub(e->b, r, ps->mb, "");
  LLVMValueRef interleave = interleave_mask(e);
  int64_t full = ps->klen / 2;
  for (int part = 0; part < 2; part++) {
    bf_loop l;
    LLVMValueRef p;
    if (!peeled_part(e, part, full, ps->klen % 2, &l, &p)) continue;
    LLVMValueRef half[2];
    for (int h = 0; h < 2; h++) {
      LLVMValueRef k = add(e, ps->k0, add(e, mulc(e, p, 2), c64(e, h)));
      LLVMValueRef src = add(e, mulc(e, k, g->lda), r);
      if (n == 1) {
        LLVMValueRef f = LLVMBuildLoad2(e->b, e->f32, gep(e, e->f32, e->A, src), "");
        LLVMSetAlignment(f, 4);
        half[h] =
            part == 1 && h == 1 ? c32(e, 0) : LLVMBuildZExt(e->b, round_bf16(e, f), e->i32, "");
      } else {
        half[h] = part == 1 && h == 1
                      ? LLVMConstNull(LLVMVectorType(e->i16, BF_LANES))
                      : round_bf16(e, load_floats(e, e->A, src, BF_LANES, BF_LANES));
      }
    }
    LLVMValueRef w =
        n == 1
            ? LLVMBuildOr(e->b, half[0], LLVMBuildShl(e->b, half[1], c32(e, 16), ""), "")
            : LLVMBuildBitCast(e->b, LLVMBuildShuffleVector(e->b, half[0], half[1], interleave, ""),
                               e->vi, "");
    LLVMValueRef d = gep(e, e->i32, e->apack, a_word(e, rel, p));
    LLVMSetAlignment(LLVMBuildStore(e->b, w, d), 4);
    if (part == 0) loop_close(e, &l, 1, NULL);
  }
}

/* apack for rows [mb, m1) of A and the pass's k block. */
static void pack_a(bf_emitter *e, const bf_pass *ps, LLVMValueRef m1) {
  const nnc_cg_gemm *g = e->g;
  if (g->trans_a) {
    /* 16 rows at a time (contiguous in A), then one at a time. */
    bf_loop v;
    loop_open(e, &v, ps->mb, LLVMBuildSub(e->b, m1, c64(e, BF_LANES - 1), ""), 0, NULL);
    pack_a_trans(e, ps, v.iv, BF_LANES);
    loop_close(e, &v, BF_LANES, NULL);
    bf_loop r;
    loop_open(e, &r, v.iv, m1, 0, NULL);
    pack_a_trans(e, ps, r.iv, 1);
    loop_close(e, &r, 1, NULL);
    return;
  }
  /* k contiguous: 32 floats -> 16 pair words per step. */
  bf_loop r;
  loop_open(e, &r, ps->mb, m1, 0, NULL);
  LLVMValueRef rel = LLVMBuildSub(e->b, r.iv, ps->mb, "");
  for (int64_t c = 0; c * 32 < ps->klen; c++) {
    int lanes = (int)(ps->klen - c * 32 < 32 ? ps->klen - c * 32 : 32);
    LLVMValueRef src = add(e, mulc(e, r.iv, g->lda), add(e, ps->k0, c64(e, c * 32)));
    LLVMValueRef h = round_bf16(e, load_floats(e, e->A, src, lanes, 32));
    LLVMValueRef w = LLVMBuildBitCast(e->b, h, e->vi, "");
    LLVMValueRef p = gep(e, e->i32, e->apack, a_word(e, rel, c64(e, c * 16)));
    LLVMSetAlignment(LLVMBuildStore(e->b, w, p), 4);
  }
  loop_close(e, &r, 1, NULL);
}

/* bpack[p][j] for the panel's columns and the pass's k block; columns
 * past the panel's width are zero. */
static void pack_b(bf_emitter *e, const bf_pass *ps) {
  const nnc_cg_gemm *g = e->g;
  if (!g->trans_b) {
    /* B stored [K, N]: rows k and k+1 along n, interleaved. */
    LLVMValueRef shuf = interleave_mask(e);
    int64_t full = ps->klen / 2;
    for (int part = 0; part < 2; part++) {
      /* part 0: the full pairs in a loop; part 1: the odd last k. */
      bf_loop l;
      LLVMValueRef p;
      if (!peeled_part(e, part, full, ps->klen % 2, &l, &p)) continue;
      LLVMValueRef k = add(e, ps->k0, mulc(e, p, 2));
      for (int j = 0; j < ps->nv; j++) {
        int lanes = ps->width - j * BF_LANES;
        LLVMValueRef n = add(e, ps->n, c64(e, j * BF_LANES));
        LLVMValueRef lo =
            round_bf16(e, load_floats(e, e->B, add(e, mulc(e, k, g->ldb), n), lanes, BF_LANES));
        LLVMValueRef hi =
            part == 0 ? round_bf16(e, load_floats(e, e->B,
                                                  add(e, mulc(e, add(e, k, c64(e, 1)), g->ldb), n),
                                                  lanes, BF_LANES))
                      : LLVMConstNull(LLVMVectorType(e->i16, BF_LANES));
        LLVMValueRef w =
            LLVMBuildBitCast(e->b, LLVMBuildShuffleVector(e->b, lo, hi, shuf, ""), e->vi, "");
        LLVMValueRef d = gep(e, e->i32, e->bpack, add(e, mulc(e, p, B_ROW), c64(e, j * BF_LANES)));
        LLVMSetAlignment(LLVMBuildStore(e->b, w, d), 4);
      }
      if (part == 0) loop_close(e, &l, 1, NULL);
    }
    return;
  }
  /* B stored [N, K]: column j's k contiguous; 32 floats -> its 16 pair
   * words. 16 columns at a time are transposed in registers so that each
   * vector holds one pair of 16 columns, a row of bpack (the last chunk
   * peeled: fewer k). */
  int64_t full = ps->klen / 32, tail = ps->klen % 32;
  for (int part = 0; part < 2; part++) {
    bf_loop c;
    LLVMValueRef ci;
    int lanes = part == 0 ? 32 : (int)tail;
    if (!peeled_part(e, part, full, tail != 0, &c, &ci)) continue;
    LLVMValueRef k = add(e, ps->k0, mulc(e, ci, 32));
    for (int jv = 0; jv < ps->nv; jv++) {
      LLVMValueRef v[BF_LANES];
      for (int t = 0; t < BF_LANES; t++) {
        int j = jv * BF_LANES + t;
        if (j >= ps->width) {
          v[t] = LLVMConstNull(e->vi);
          continue;
        }
        LLVMValueRef src = add(e, mulc(e, add(e, ps->n, c64(e, j)), g->ldb), k);
        v[t] =
            LLVMBuildBitCast(e->b, round_bf16(e, load_floats(e, e->B, src, lanes, 32)), e->vi, "");
      }
      transpose16(e, v);
      for (int t = 0; t < (lanes + 1) / 2; t++) {
        LLVMValueRef row = add(e, mulc(e, ci, 16), c64(e, t));
        LLVMValueRef d =
            gep(e, e->i32, e->bpack, add(e, mulc(e, row, B_ROW), c64(e, jv * BF_LANES)));
        LLVMSetAlignment(LLVMBuildStore(e->b, v[t], d), 4);
      }
    }
    if (part == 0) loop_close(e, &c, 1, NULL);
  }
}

/* ---- micro-kernel ------------------------------------------------------- */

static LLVMValueRef dpbf16(bf_emitter *e, LLVMValueRef acc, LLVMValueRef a, LLVMValueRef b) {
  LLVMValueRef args[3] = {acc, a, b};
  return intrinsic(e, "llvm.x86.avx512bf16.dpbf16ps.512", NULL, 0, args, 3);
}

static LLVMValueRef epilogue(bf_emitter *e, LLVMValueRef v, LLVMValueRef bias_v) {
  if (bias_v) v = LLVMBuildFAdd(e->b, v, bias_v, "");
  if (e->g->act == NNC_CG_ACT_RELU) {
    LLVMValueRef zero = LLVMConstNull(LLVMTypeOf(v));
    v = LLVMBuildSelect(e->b, LLVMBuildFCmp(e->b, LLVMRealOLT, v, zero, ""), zero, v, "");
  }
  return v;
}

/* fold: accumulate over several k blocks, C's old value starts the sum. */
static bool folds(const nnc_cg_gemm *g) {
  return g->accumulate && g->K > BF_KC;
}

/* Rows [m, m + mr) of the panel for one k block. */
static void tile(bf_emitter *e, const bf_pass *ps, int mr, LLVMValueRef m) {
  const nnc_cg_gemm *g = e->g;
  int nv = ps->nv, nacc = mr * nv;
  bool from_c = !ps->first || folds(g);
  LLVMValueRef acc[BF_MAX_ACC], cidx[BF_MAX_ACC];
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < nv; j++) {
      int lanes = ps->width - j * BF_LANES;
      cidx[i * nv + j] =
          add(e, mulc(e, add(e, m, c64(e, i)), g->ldc), add(e, ps->n, c64(e, j * BF_LANES)));
      acc[i * nv + j] =
          from_c ? load_floats(e, e->C, cidx[i * nv + j], lanes, BF_LANES) : LLVMConstNull(e->vf);
    }
  LLVMValueRef rel = LLVMBuildSub(e->b, m, ps->mb, "");
  bf_loop l;
  loop_open(e, &l, c64(e, 0), c64(e, ps->pairs), nacc, acc);
  LLVMValueRef cur[BF_MAX_ACC], bv[BF_NV];
  for (int j = 0; j < nv; j++) {
    LLVMValueRef p = gep(e, e->i32, e->bpack, add(e, mulc(e, l.iv, B_ROW), c64(e, j * BF_LANES)));
    LLVMValueRef v = LLVMBuildLoad2(e->b, e->vi, p, "");
    LLVMSetAlignment(v, 4);
    bv[j] = LLVMBuildBitCast(e->b, v, e->vbf, "");
  }
  for (int i = 0; i < mr; i++) {
    LLVMValueRef p = gep(e, e->i32, e->apack, a_word(e, add(e, rel, c64(e, i)), l.iv));
    LLVMValueRef w = LLVMBuildLoad2(e->b, e->i32, p, "");
    LLVMSetAlignment(w, 4);
    LLVMValueRef v = LLVMBuildInsertElement(e->b, LLVMGetUndef(e->vi), w, c64(e, 0), "");
    v = LLVMBuildShuffleVector(e->b, v, LLVMGetUndef(e->vi),
                               LLVMConstNull(LLVMVectorType(e->i32, BF_LANES)), "");
    LLVMValueRef a = LLVMBuildBitCast(e->b, v, e->vbf, "");
    for (int j = 0; j < nv; j++)
      cur[i * nv + j] = dpbf16(e, l.carry[i * nv + j], a, bv[j]);
  }
  loop_close(e, &l, 1, cur);
  for (int j = 0; j < nv; j++) {
    int lanes = ps->width - j * BF_LANES;
    LLVMValueRef bias_v = NULL;
    if (g->bias && ps->last)
      bias_v = load_floats(e, e->bias, add(e, ps->n, c64(e, j * BF_LANES)), lanes, BF_LANES);
    for (int i = 0; i < mr; i++) {
      LLVMValueRef s = l.carry[i * nv + j];
      if (ps->last) {
        s = epilogue(e, s, bias_v);
        if (g->accumulate && !folds(g))
          s = LLVMBuildFAdd(e->b, load_floats(e, e->C, cidx[i * nv + j], lanes, BF_LANES), s, "");
      }
      store_floats(e, s, e->C, cidx[i * nv + j], lanes);
    }
  }
}

/* Rows [mb, m1): full tiles of BF_MR rows, then single rows (a row's
 * arithmetic does not depend on its tile). */
static void rows(bf_emitter *e, const bf_pass *ps, LLVMValueRef m1) {
  bf_loop l;
  LLVMValueRef limit = LLVMBuildSub(e->b, m1, c64(e, BF_MR - 1), "");
  loop_open(e, &l, ps->mb, limit, 0, NULL);
  tile(e, ps, BF_MR, l.iv);
  loop_close(e, &l, BF_MR, NULL);
  bf_loop r;
  loop_open(e, &r, l.iv, m1, 0, NULL);
  tile(e, ps, 1, r.iv);
  loop_close(e, &r, 1, NULL);
}

static void panels(bf_emitter *e, bf_pass *ps, LLVMValueRef m1) {
  int64_t width = BF_NV * BF_LANES, nfull = e->g->N / width, rest = e->g->N % width;
  if (nfull > 0) {
    bf_loop l;
    loop_open(e, &l, c64(e, 0), c64(e, nfull * width), 0, NULL);
    ps->n = l.iv;
    ps->width = (int)width;
    ps->nv = BF_NV;
    pack_b(e, ps);
    rows(e, ps, m1);
    loop_close(e, &l, width, NULL);
  }
  if (rest > 0) {
    ps->n = c64(e, nfull * width);
    ps->width = (int)rest;
    ps->nv = (int)((rest + BF_LANES - 1) / BF_LANES);
    pack_b(e, ps);
    rows(e, ps, m1);
  }
}

/* One k block over rows [mb, m1). */
static void kblock(bf_emitter *e, bf_pass *ps, LLVMValueRef m1) {
  ps->pairs = (ps->klen + 1) / 2;
  pack_a(e, ps, m1);
  panels(e, ps, m1);
}

static void body(bf_emitter *e) {
  const nnc_cg_gemm *g = e->g;
  int64_t nblocks = (g->K + BF_KC - 1) / BF_KC;
  bf_loop mb;
  loop_open(e, &mb, e->row_begin, e->row_end, 0, NULL);
  LLVMValueRef end = add(e, mb.iv, c64(e, BF_MC));
  LLVMValueRef m1 = LLVMBuildSelect(e->b, LLVMBuildICmp(e->b, LLVMIntSLT, end, e->row_end, ""), end,
                                    e->row_end, "");
  bf_pass ps;
  memset(&ps, 0, sizeof ps);
  ps.mb = mb.iv;
  ps.k0 = c64(e, 0);
  ps.klen = nblocks == 1 ? g->K : BF_KC;
  ps.first = true;
  ps.last = nblocks == 1;
  kblock(e, &ps, m1);
  if (nblocks > 2) {
    bf_loop kb;
    loop_open(e, &kb, c64(e, BF_KC), c64(e, (nblocks - 1) * BF_KC), 0, NULL);
    ps.k0 = kb.iv;
    ps.klen = BF_KC;
    ps.first = false;
    ps.last = false;
    kblock(e, &ps, m1);
    loop_close(e, &kb, BF_KC, NULL);
  }
  if (nblocks > 1) {
    ps.k0 = c64(e, (nblocks - 1) * BF_KC);
    ps.klen = g->K - (nblocks - 1) * BF_KC;
    ps.first = false;
    ps.last = true;
    kblock(e, &ps, m1);
  }
  loop_close(e, &mb, BF_MC, NULL);
  LLVMBuildRetVoid(e->b);
}

LLVMValueRef nnc_cg_emit_gemm_bf16(LLVMModuleRef mod, const char *name, const nnc_cg_gemm *g) {
  bf_emitter e;
  memset(&e, 0, sizeof e);
  e.ctx = LLVMGetModuleContext(mod);
  e.mod = mod;
  e.g = g;
  e.f32 = LLVMFloatTypeInContext(e.ctx);
  e.i1 = LLVMInt1TypeInContext(e.ctx);
  e.i16 = LLVMInt16TypeInContext(e.ctx);
  e.i32 = LLVMInt32TypeInContext(e.ctx);
  e.i64 = LLVMInt64TypeInContext(e.ctx);
  e.ptr = LLVMPointerTypeInContext(e.ctx, 0);
  e.vf = LLVMVectorType(e.f32, BF_LANES);
  e.vi = LLVMVectorType(e.i32, BF_LANES);
  e.vbf = LLVMVectorType(LLVMBFloatTypeInContext(e.ctx), 2 * BF_LANES);

  LLVMValueRef args[7];
  e.fn = nnc_cg_gemm_fn(mod, name, false, args, &e.b);
  e.A = args[0];
  e.B = args[1];
  e.bias = args[2];
  e.C = args[3];
  e.row_begin = args[4];
  e.row_end = args[5];
  /* Packed A: BF_MC rows of A_ROW words (+16 for the last store of a row
   * whose k block is not a multiple of 32); packed B: A_ROW pairs (+16) of
   * B_ROW words. */
  e.apack = LLVMBuildAlloca(e.b, LLVMArrayType2(e.i32, (uint64_t)(BF_MC * A_ROW + 16)), "apack");
  LLVMSetAlignment(e.apack, 64);
  e.bpack = LLVMBuildAlloca(e.b, LLVMArrayType2(e.i32, (uint64_t)((A_ROW + 16) * B_ROW)), "bpack");
  LLVMSetAlignment(e.bpack, 64);
  if (g->all_rows) {
    e.row_begin = c64(&e, 0);
    e.row_end = c64(&e, g->M);
  }
  if (g->M > 0 && g->N > 0 && g->K > 0)
    body(&e);
  else
    LLVMBuildRetVoid(e.b);
  LLVMDisposeBuilder(e.b);
  return e.fn;
}
