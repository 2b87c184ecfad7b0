/* llvm_qgemm.c: an int8 product of a deployed program (kernel.h's
 * nnc_kqgemm) as LLVM IR with AVX512-VNNI's vpdpbusd.
 *
 * The kernel function computes C in tiles of R rows x C blocks of 16
 * columns, the R rows of A first quantised into the workspace scratch (u8,
 * rows of K4 bytes), one <16 x i32> accumulator per row and block: per
 * step of 4 k, each row's 4 bytes of A are broadcast and vpdpbusd adds
 * their products with 64 bytes of the packed weights (16 columns x 4 k,
 * the VNNI layout, packed here from q->w into a private constant) to the
 * accumulator. The epilogue adds the int32 offsets, converts, scales per
 * column and applies the ReLU, with the operations and order of emit_c.c's
 * portable loops: the same integer sums and float epilogue, so the object
 * and the C agree bit for bit when the float kernels around the products
 * do (docs/deploy.md). Rows: tiles of 4, then single rows; columns: tiles
 * of 4 blocks, then single blocks, then a last partial
 * block stored lane by lane. Called once per prediction (begin and end
 * are ignored: the whole product).
 *
 * An A stored transposed (trans_a, [K, M]: a convolution's im2col at batch
 * > 1, 16 consecutive rows of A are 16 consecutive floats of each stored
 * row) is quantised 16 rows at a time with vector operations, in groups
 * of 16 such blocks so that every stored row is read in runs of 1 KiB;
 * a block's bytes are laid out as the products read them, 64 bytes per
 * step of 4 k (row r's 4 bytes at r * 4), by one byte shuffle. The rows
 * after the last block of 16 are quantised one by one into the same
 * layout.
 */
#include <stdlib.h>
#include <string.h>

#include "llvm_internal.h"

enum { LANES = 16, ROW_TILE = 4, COL_TILE = 4, SUPER = 16 };

static LLVMValueRef i64c(emitter *E, int64_t v) {
  return LLVMConstInt(E->ti64, (unsigned long long)v, 1);
}

/* base + byte offset */
static LLVMValueRef at(emitter *E, LLVMValueRef base, LLVMValueRef bytes) {
  return LLVMBuildInBoundsGEP2(E->b, E->ti8, base, &bytes, 1, "");
}

static LLVMValueRef intrinsic(emitter *E, const char *name, LLVMTypeRef ret, LLVMTypeRef *params,
                              unsigned n, LLVMTypeRef *fn_type) {
  *fn_type = LLVMFunctionType(ret, params, n, 0);
  LLVMValueRef f = LLVMGetNamedFunction(E->mod, name);
  return f ? f : LLVMAddFunction(E->mod, name, *fn_type);
}

typedef struct qstate {
  const nnc_kqgemm *q;
  LLVMValueRef a, c, scratch; /* A and C (f32), the quantised A (u8) */
  LLVMValueRef w, offset, scale;
  LLVMValueRef out, mul, add; /* out_buf >= 0: its bytes, the per-column map */
  LLVMTypeRef v16i32, v16f32, dp_type;
  LLVMValueRef dp;
  int64_t kq, nfull; /* steps of 4 k; blocks of 16 full columns */
  int64_t a_row;     /* bytes between the quantised rows of A in the scratch: K4, or 4
                        (trans_a: blocks of 16 rows, kq-major) */
  int64_t a_step;    /* bytes between two steps of 4 k of one row: 4, or 64 (trans_a) */
} qstate;

/* The scratch byte of row r (0-based in what the scratch holds), column k. */
static LLVMValueRef scratch_at(emitter *E, const qstate *S, LLVMValueRef r, LLVMValueRef k) {
  if (!S->q->trans_a)
    return LLVMBuildAdd(E->b, LLVMBuildMul(E->b, r, i64c(E, S->q->K4), ""), k, "");
  LLVMValueRef kq = LLVMBuildUDiv(E->b, k, i64c(E, 4), "");
  LLVMValueRef t = LLVMBuildURem(E->b, k, i64c(E, 4), "");
  LLVMValueRef slot = LLVMBuildAdd(E->b, LLVMBuildMul(E->b, kq, i64c(E, 16), ""), r, "");
  return LLVMBuildAdd(E->b, LLVMBuildMul(E->b, slot, i64c(E, 4), ""), t, "");
}

LLVMValueRef nnc_ll_quantize_u8(emitter *E, const nnc_kqgemm *q, LLVMValueRef x) {
  LLVMTypeRef f[1] = {E->tf32}, ff[2] = {E->tf32, E->tf32}, t;
  LLVMValueRef rint = intrinsic(E, "llvm.rint.f32", E->tf32, f, 1, &t);
  LLVMTypeRef rint_t = t;
  LLVMValueRef minnum = intrinsic(E, "llvm.minnum.f32", E->tf32, ff, 2, &t);
  LLVMValueRef maxnum = intrinsic(E, "llvm.maxnum.f32", E->tf32, ff, 2, &t);
  LLVMValueRef y = LLVMBuildFMul(E->b, x, LLVMConstReal(E->tf32, q->a_inv_scale), "");
  y = LLVMBuildCall2(E->b, rint_t, rint, &y, 1, "");
  LLVMValueRef hi[2] = {y, LLVMConstReal(E->tf32, 255.0 - q->a_zero)};
  y = LLVMBuildCall2(E->b, t, minnum, hi, 2, "");
  LLVMValueRef lo[2] = {y, LLVMConstReal(E->tf32, -(double)q->a_zero)};
  y = LLVMBuildCall2(E->b, t, maxnum, lo, 2, "");
  LLVMValueRef u = LLVMBuildAdd(E->b, LLVMBuildFPToSI(E->b, y, E->ti32, ""),
                                LLVMConstInt(E->ti32, (unsigned long long)q->a_zero, 0), "");
  return LLVMBuildTrunc(E->b, u, E->ti8, "");
}

/* Rows [m0, m0 + R) of A -> u8 rows 0..R-1 of the scratch:
 * clamp(rint(a * inv), -zero, 255 - zero) + zero, one element at a time.
 * Done per row tile (trans_a: for the rows after the last block of 16),
 * just before its products, so the quantised rows are still in L1 when
 * read. */
static void quantize_a(emitter *E, const qstate *S, LLVMValueRef m0, int64_t R) {
  const nnc_kqgemm *q = S->q;
  nnc_ll_loop m = nnc_ll_loop_open(E, E->fn, 0, R, 1);
  nnc_ll_loop k = nnc_ll_loop_open(E, E->fn, 0, q->K, 1);
  LLVMValueRef row = LLVMBuildAdd(E->b, m0, m.i, "");
  LLVMValueRef src =
      q->trans_a ? LLVMBuildAdd(E->b, LLVMBuildMul(E->b, k.i, i64c(E, q->lda), ""), row, "")
                 : LLVMBuildAdd(E->b, LLVMBuildMul(E->b, row, i64c(E, q->lda), ""), k.i, "");
  LLVMValueRef u; /* A quantised already (nbyte > 0): byte src */
  if (q->nbyte > 0)
    u = LLVMBuildLoad2(E->b, E->ti8, at(E, S->a, src), "");
  else
    u = nnc_ll_quantize_u8(
        E, q,
        LLVMBuildLoad2(E->b, E->tf32, at(E, S->a, LLVMBuildMul(E->b, src, i64c(E, 4), "")), ""));
  LLVMValueRef dst = scratch_at(E, S, m.i, k.i);
  LLVMBuildStore(E->b, u, at(E, S->scratch, dst));
  nnc_ll_loop_close(E, &k);
  if (q->K4 > q->K) { /* the padding: zeros (the padded weights are zero too) */
    nnc_ll_loop p = nnc_ll_loop_open(E, E->fn, q->K, q->K4, 1);
    dst = scratch_at(E, S, m.i, p.i);
    LLVMBuildStore(E->b, LLVMConstInt(E->ti8, 0, 0), at(E, S->scratch, dst));
    nnc_ll_loop_close(E, &p);
  }
  nnc_ll_loop_close(E, &m);
}

/* <16 x c> */
static LLVMValueRef splat(emitter *E, LLVMValueRef c) {
  LLVMValueRef v[LANES];
  (void)E;
  for (int j = 0; j < LANES; j++)
    v[j] = c;
  return LLVMConstVector(v, LANES);
}

/* trans_a: rows [m0, m0 + 16) of A (16 consecutive floats of each of its
 * K stored rows) -> the scratch in the layout the products read, 64 bytes
 * per step of 4 k: row r's 4 bytes at r * 4. The arithmetic of
 * quantize_a, 16 lanes at a time, and a byte shuffle that interleaves 4
 * k rows. */
static void quantize_block(emitter *E, const qstate *S, LLVMValueRef m0, int64_t G) {
  const nnc_kqgemm *q = S->q;
  LLVMTypeRef f[1] = {S->v16f32}, ff[2] = {S->v16f32, S->v16f32}, t, rint_t;
  LLVMValueRef rint = intrinsic(E, "llvm.rint.v16f32", S->v16f32, f, 1, &rint_t);
  LLVMValueRef minnum = intrinsic(E, "llvm.minnum.v16f32", S->v16f32, ff, 2, &t);
  LLVMValueRef maxnum = intrinsic(E, "llvm.maxnum.v16f32", S->v16f32, ff, 2, &t);
  LLVMTypeRef v16i8 = LLVMVectorType(E->ti8, LANES);
  LLVMValueRef inv = splat(E, LLVMConstReal(E->tf32, q->a_inv_scale));
  LLVMValueRef hi = splat(E, LLVMConstReal(E->tf32, 255.0 - q->a_zero));
  LLVMValueRef lo = splat(E, LLVMConstReal(E->tf32, -(double)q->a_zero));
  LLVMValueRef zpv = splat(E, LLVMConstInt(E->ti32, (unsigned long long)q->a_zero, 0));
  /* byte r * 4 + t of the result <- lane r of k row t */
  LLVMValueRef mask32[32], mask64[64];
  for (int j = 0; j < 32; j++)
    mask32[j] = LLVMConstInt(E->ti32, (unsigned long long)j, 0);
  for (int r = 0; r < LANES; r++)
    for (int tt = 0; tt < 4; tt++)
      mask64[r * 4 + tt] = LLVMConstInt(E->ti32, (unsigned long long)(tt * LANES + r), 0);
  nnc_ll_loop k = nnc_ll_loop_open(E, E->fn, 0, S->kq, 1);
  nnc_ll_loop g = nnc_ll_loop_open(E, E->fn, 0, G, 1);
  LLVMValueRef mg = LLVMBuildAdd(E->b, m0, LLVMBuildMul(E->b, g.i, i64c(E, LANES), ""), "");
  LLVMValueRef rowv[4];
  for (int tt = 0; tt < 4; tt++) {
    LLVMValueRef kk = LLVMBuildAdd(E->b, LLVMBuildMul(E->b, k.i, i64c(E, 4), ""), i64c(E, tt), "");
    /* past K (the padding): a row of zeros, read from row 0 and masked off */
    LLVMValueRef inside = LLVMBuildICmp(E->b, LLVMIntSLT, kk, i64c(E, q->K), "");
    LLVMValueRef krow = LLVMBuildSelect(E->b, inside, kk, i64c(E, 0), "");
    LLVMValueRef src = LLVMBuildAdd(E->b, LLVMBuildMul(E->b, krow, i64c(E, q->lda), ""), mg, "");
    if (q->nbyte > 0) { /* quantised already: 16 bytes */
      LLVMValueRef u = LLVMBuildLoad2(E->b, v16i8, at(E, S->a, src), "");
      LLVMSetAlignment(u, 1);
      rowv[tt] = LLVMBuildSelect(E->b, inside, u, LLVMConstNull(v16i8), "");
      continue;
    }
    LLVMValueRef x =
        LLVMBuildLoad2(E->b, S->v16f32, at(E, S->a, LLVMBuildMul(E->b, src, i64c(E, 4), "")), "");
    LLVMSetAlignment(x, 4);
    LLVMValueRef y = LLVMBuildFMul(E->b, x, inv, "");
    y = LLVMBuildCall2(E->b, rint_t, rint, &y, 1, "");
    LLVMValueRef a2[2] = {y, hi};
    y = LLVMBuildCall2(E->b, t, minnum, a2, 2, "");
    LLVMValueRef b2[2] = {y, lo};
    y = LLVMBuildCall2(E->b, t, maxnum, b2, 2, "");
    LLVMValueRef u = LLVMBuildAdd(E->b, LLVMBuildFPToSI(E->b, y, S->v16i32, ""), zpv, "");
    u = LLVMBuildTrunc(E->b, u, v16i8, "");
    rowv[tt] = LLVMBuildSelect(E->b, inside, u, LLVMConstNull(v16i8), "");
  }
  LLVMValueRef lo2 =
      LLVMBuildShuffleVector(E->b, rowv[0], rowv[1], LLVMConstVector(mask32, 32), "");
  LLVMValueRef hi2 =
      LLVMBuildShuffleVector(E->b, rowv[2], rowv[3], LLVMConstVector(mask32, 32), "");
  LLVMValueRef v = LLVMBuildShuffleVector(E->b, lo2, hi2, LLVMConstVector(mask64, 64), "");
  LLVMValueRef dst = LLVMBuildAdd(E->b, LLVMBuildMul(E->b, g.i, i64c(E, LANES * q->K4), ""),
                                  LLVMBuildMul(E->b, k.i, i64c(E, 64), ""), "");
  LLVMValueRef st = LLVMBuildStore(E->b, v, at(E, S->scratch, dst));
  LLVMSetAlignment(st, 64);
  nnc_ll_loop_close(E, &g);
  nnc_ll_loop_close(E, &k);
}

/* out_buf's byte of row m, column 0 (kernel.h's out_index) */
static LLVMValueRef out_base(emitter *E, const nnc_kqgemm *q, LLVMValueRef m) {
  LLVMValueRef o = i64c(E, 0);
  for (int d = 0; d < q->out_ndim; d++) {
    LLVMValueRef i = LLVMBuildUDiv(E->b, m, i64c(E, q->out_row[d]), "");
    i = LLVMBuildURem(E->b, i, i64c(E, q->out_ext[d]), "");
    o = LLVMBuildAdd(E->b, o, LLVMBuildMul(E->b, i, i64c(E, q->out_step[d]), ""), "");
  }
  return o;
}

/* The requantising epilogue of 16 columns from `col` (kernel.h's
 * out_buf): v * mul + add quantised as out_q's A, the ReLU as the code's
 * lower bound (its zero point): <16 x i32> codes 0..255. */
static LLVMValueRef requant(emitter *E, const qstate *S, LLVMValueRef v, LLVMValueRef off4) {
  const nnc_kqgemm *o = S->q->out_q;
  LLVMTypeRef f[1] = {S->v16f32}, ff[2] = {S->v16f32, S->v16f32}, t, rint_t;
  LLVMValueRef rint = intrinsic(E, "llvm.rint.v16f32", S->v16f32, f, 1, &rint_t);
  LLVMValueRef minnum = intrinsic(E, "llvm.minnum.v16f32", S->v16f32, ff, 2, &t);
  LLVMValueRef maxnum = intrinsic(E, "llvm.maxnum.v16f32", S->v16f32, ff, 2, &t);
  LLVMValueRef mul = LLVMBuildLoad2(E->b, S->v16f32, at(E, S->mul, off4), "");
  LLVMValueRef add = LLVMBuildLoad2(E->b, S->v16f32, at(E, S->add, off4), "");
  LLVMSetAlignment(mul, 4), LLVMSetAlignment(add, 4);
  LLVMValueRef y = LLVMBuildFAdd(E->b, LLVMBuildFMul(E->b, v, mul, ""), add, "");
  y = LLVMBuildFMul(E->b, y, splat(E, LLVMConstReal(E->tf32, o->a_inv_scale)), "");
  y = LLVMBuildCall2(E->b, rint_t, rint, &y, 1, "");
  LLVMValueRef a2[2] = {y, splat(E, LLVMConstReal(E->tf32, 255.0 - o->a_zero))};
  y = LLVMBuildCall2(E->b, t, minnum, a2, 2, "");
  LLVMValueRef b2[2] = {
      y, splat(E, LLVMConstReal(E->tf32, S->q->out_relu ? 0.0 : -(double)o->a_zero))};
  y = LLVMBuildCall2(E->b, t, maxnum, b2, 2, "");
  return LLVMBuildAdd(E->b, LLVMBuildFPToSI(E->b, y, S->v16i32, ""),
                      splat(E, LLVMConstInt(E->ti32, (unsigned long long)o->a_zero, 0)), "");
}

/* Stores R rows of codes (requant) of 16 columns from `col` (the first
 * `lanes`) at their out_buf bytes: 4 rows that are 4 consecutive bytes of
 * each column (out_row[0] == 1, out_step[0] == 1, out_ext[0] % 4 == 0;
 * tiles of 4 rows start at multiples of 4) as one 32-bit word per column,
 * else byte by byte. */
static void store_codes(emitter *E, const qstate *S, LLVMValueRef m0, LLVMValueRef col,
                        LLVMValueRef *u, int R, int lanes) {
  const nnc_kqgemm *q = S->q;
  bool words = R == ROW_TILE && q->out_ndim > 0 && q->out_row[0] == 1 && q->out_step[0] == 1 &&
               q->out_ext[0] % ROW_TILE == 0;
  LLVMValueRef colb = LLVMBuildMul(E->b, col, i64c(E, q->out_col), "");
  if (words) {
    LLVMValueRef w = u[0];
    for (int r = 1; r < R; r++)
      w = LLVMBuildOr(
          E->b, w,
          LLVMBuildShl(E->b, u[r], splat(E, LLVMConstInt(E->ti32, (unsigned)(8 * r), 0)), ""), "");
    LLVMValueRef base = LLVMBuildAdd(E->b, out_base(E, q, m0), colb, "");
    for (int j = 0; j < lanes; j++) {
      LLVMValueRef e = LLVMBuildExtractElement(E->b, w, LLVMConstInt(E->ti32, (unsigned)j, 0), "");
      LLVMValueRef st = LLVMBuildStore(
          E->b, e, at(E, S->out, LLVMBuildAdd(E->b, base, i64c(E, j * q->out_col), "")));
      LLVMSetAlignment(st, 1);
    }
    return;
  }
  for (int r = 0; r < R; r++) {
    LLVMValueRef m = LLVMBuildAdd(E->b, m0, i64c(E, r), "");
    LLVMValueRef base = LLVMBuildAdd(E->b, out_base(E, q, m), colb, "");
    LLVMValueRef b = LLVMBuildTrunc(E->b, u[r], LLVMVectorType(E->ti8, LANES), "");
    for (int j = 0; j < lanes; j++) {
      LLVMValueRef e = LLVMBuildExtractElement(E->b, b, LLVMConstInt(E->ti32, (unsigned)j, 0), "");
      LLVMBuildStore(E->b, e, at(E, S->out, LLVMBuildAdd(E->b, base, i64c(E, j * q->out_col), "")));
    }
  }
}

/* One tile: rows [m0, m0 + R) of C, whose quantised A rows start at byte
 * s0 of the scratch, blocks [nb0, nb0 + C); `lanes` < 16: the single last
 * block is partial. */
static void tile(emitter *E, const qstate *S, LLVMValueRef m0, LLVMValueRef s0, LLVMValueRef nb0,
                 int R, int C, int lanes) {
  const nnc_kqgemm *q = S->q;
  LLVMValueRef acc[ROW_TILE][COL_TILE];
  LLVMBasicBlockRef entry = LLVMGetEntryBasicBlock(E->fn);
  LLVMBuilderRef ab = LLVMCreateBuilderInContext(E->ctx);
  LLVMPositionBuilder(ab, entry, LLVMGetFirstInstruction(entry));
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) {
      acc[r][c] = LLVMBuildAlloca(ab, S->v16i32, "acc");
      LLVMBuildStore(E->b, LLVMConstNull(S->v16i32), acc[r][c]);
    }
  LLVMDisposeBuilder(ab);
  nnc_ll_loop k = nnc_ll_loop_open(E, E->fn, 0, S->kq, 1);
  LLVMValueRef a[ROW_TILE], b[COL_TILE];
  for (int r = 0; r < R; r++) {
    LLVMValueRef off = LLVMBuildAdd(E->b, LLVMBuildAdd(E->b, s0, i64c(E, r * S->a_row), ""),
                                    LLVMBuildMul(E->b, k.i, i64c(E, S->a_step), ""), "");
    LLVMValueRef x = LLVMBuildLoad2(E->b, E->ti32, at(E, S->scratch, off), "");
    LLVMSetAlignment(x, 1);
    LLVMValueRef v =
        LLVMBuildInsertElement(E->b, LLVMGetUndef(S->v16i32), x, LLVMConstInt(E->ti32, 0, 0), "");
    a[r] = LLVMBuildShuffleVector(E->b, v, LLVMGetUndef(S->v16i32),
                                  LLVMConstNull(LLVMVectorType(E->ti32, LANES)), "splat");
  }
  for (int c = 0; c < C; c++) {
    LLVMValueRef blk = LLVMBuildAdd(E->b, nb0, i64c(E, c), "");
    LLVMValueRef off =
        LLVMBuildMul(E->b, LLVMBuildAdd(E->b, LLVMBuildMul(E->b, blk, i64c(E, S->kq), ""), k.i, ""),
                     i64c(E, 64), "");
    b[c] = LLVMBuildLoad2(E->b, S->v16i32, at(E, S->w, off), "");
    LLVMSetAlignment(b[c], 64);
  }
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) {
      LLVMValueRef args[3] = {LLVMBuildLoad2(E->b, S->v16i32, acc[r][c], ""), a[r], b[c]};
      LLVMBuildStore(E->b, LLVMBuildCall2(E->b, S->dp_type, S->dp, args, 3, ""), acc[r][c]);
    }
  nnc_ll_loop_close(E, &k);
  /* (float)(acc + offset) * scale, then the ReLU as `v > 0 ? v : 0` */
  LLVMValueRef zero = LLVMConstNull(S->v16f32);
  for (int c = 0; c < C; c++) {
    LLVMValueRef col =
        LLVMBuildMul(E->b, LLVMBuildAdd(E->b, nb0, i64c(E, c), ""), i64c(E, LANES), "");
    LLVMValueRef off4 = LLVMBuildMul(E->b, col, i64c(E, 4), "");
    LLVMValueRef off = LLVMBuildLoad2(E->b, S->v16i32, at(E, S->offset, off4), "");
    LLVMValueRef sc = LLVMBuildLoad2(E->b, S->v16f32, at(E, S->scale, off4), "");
    LLVMValueRef codes[ROW_TILE] = {0};
    for (int r = 0; r < R; r++) {
      LLVMValueRef s = LLVMBuildAdd(E->b, LLVMBuildLoad2(E->b, S->v16i32, acc[r][c], ""), off, "");
      LLVMValueRef v = LLVMBuildFMul(E->b, LLVMBuildSIToFP(E->b, s, S->v16f32, ""), sc, "");
      if (q->out_buf >= 0) {
        codes[r] = requant(E, S, v, off4);
        continue;
      }
      if (q->relu)
        v = LLVMBuildSelect(E->b, LLVMBuildFCmp(E->b, LLVMRealOGT, v, zero, ""), v, zero, "");
      LLVMValueRef row = LLVMBuildAdd(E->b, m0, i64c(E, r), "");
      LLVMValueRef dst = LLVMBuildAdd(E->b, LLVMBuildMul(E->b, row, i64c(E, q->ldc), ""), col, "");
      dst = LLVMBuildMul(E->b, dst, i64c(E, 4), "");
      if (lanes == LANES) {
        LLVMValueRef st = LLVMBuildStore(E->b, v, at(E, S->c, dst));
        LLVMSetAlignment(st, 4);
        continue;
      }
      for (int j = 0; j < lanes; j++) {
        LLVMValueRef e =
            LLVMBuildExtractElement(E->b, v, LLVMConstInt(E->ti32, (unsigned)j, 0), "");
        LLVMBuildStore(E->b, e, at(E, S->c, LLVMBuildAdd(E->b, dst, i64c(E, 4 * j), "")));
      }
    }
    if (q->out_buf >= 0) store_codes(E, S, m0, col, codes, R, lanes);
  }
}

/* Rows [m0, m0 + R) of C, every column; their A at byte s0 of the scratch. */
static void columns(emitter *E, const qstate *S, LLVMValueRef m0, LLVMValueRef s0, int R) {
  int64_t ntile = S->nfull / COL_TILE * COL_TILE;
  if (ntile > 0) {
    nnc_ll_loop n = nnc_ll_loop_open(E, E->fn, 0, ntile, COL_TILE);
    tile(E, S, m0, s0, n.i, R, COL_TILE, LANES);
    nnc_ll_loop_close(E, &n);
  }
  if (S->nfull > ntile) {
    nnc_ll_loop n = nnc_ll_loop_open(E, E->fn, ntile, S->nfull, 1);
    tile(E, S, m0, s0, n.i, R, 1, LANES);
    nnc_ll_loop_close(E, &n);
  }
  if (S->q->N % LANES) tile(E, S, m0, s0, i64c(E, S->nfull), R, 1, (int)(S->q->N % LANES));
}

/* Rows [from, to) in tiles of R rows, each quantised just before. */
static void rows(emitter *E, const qstate *S, int64_t from, int64_t to, int R) {
  if (to <= from) return;
  nnc_ll_loop m = nnc_ll_loop_open(E, E->fn, from, to, R);
  quantize_a(E, S, m.i, R);
  columns(E, S, m.i, i64c(E, 0), R);
  nnc_ll_loop_close(E, &m);
}

/* trans_a: blocks of 16 rows quantised 16 lanes at a time, each in tiles
 * of 4 rows; then the rows left, quantised one by one, in single rows. */
static void blocks_trans(emitter *E, const qstate *S, int64_t from, int64_t to, int64_t G) {
  if (to <= from) return;
  nnc_ll_loop m = nnc_ll_loop_open(E, E->fn, from, to, LANES * G);
  quantize_block(E, S, m.i, G);
  nnc_ll_loop g = nnc_ll_loop_open(E, E->fn, 0, G, 1);
  LLVMValueRef mg = LLVMBuildAdd(E->b, m.i, LLVMBuildMul(E->b, g.i, i64c(E, LANES), ""), "");
  LLVMValueRef sg = LLVMBuildMul(E->b, g.i, i64c(E, LANES * S->q->K4), "");
  nnc_ll_loop r = nnc_ll_loop_open(E, E->fn, 0, LANES, ROW_TILE);
  columns(E, S, LLVMBuildAdd(E->b, mg, r.i, ""),
          LLVMBuildAdd(E->b, sg, LLVMBuildMul(E->b, r.i, i64c(E, 4), ""), ""), ROW_TILE);
  nnc_ll_loop_close(E, &r);
  nnc_ll_loop_close(E, &g);
  nnc_ll_loop_close(E, &m);
}

static void rows_trans(emitter *E, const qstate *S) {
  int64_t M = S->q->M, blocked = M / LANES * LANES, group = LANES * SUPER;
  int64_t grouped = M / group * group;
  blocks_trans(E, S, 0, grouped, SUPER);
  blocks_trans(E, S, grouped, blocked, 1);
  if (M == blocked) return;
  quantize_a(E, S, i64c(E, blocked), M - blocked);
  nnc_ll_loop r = nnc_ll_loop_open(E, E->fn, 0, M - blocked, 1);
  columns(E, S, LLVMBuildAdd(E->b, i64c(E, blocked), r.i, ""),
          LLVMBuildMul(E->b, r.i, i64c(E, 4), ""), 1);
  nnc_ll_loop_close(E, &r);
}

/* The weights in the VNNI layout: block nb, step kq, column j, byte t at
 * ((nb * KQ + kq) * 16 + j) * 4 + t; columns past N are zero. */
static int8_t *pack(const nnc_kqgemm *q, int64_t nblocks, int64_t kq) {
  int8_t *p = calloc((size_t)(nblocks * kq * 64 + 1), 1);
  if (!p) nnc_ir_bug("codegen: out of memory");
  for (int64_t n = 0; n < q->N; n++)
    for (int64_t k = 0; k < q->K; k++)
      p[((n / LANES * kq + k / 4) * LANES + n % LANES) * 4 + k % 4] = q->w[n * q->K4 + k];
  return p;
}

LLVMValueRef nnc_ll_emit_qgemm(emitter *E, const nnc_kernel *k, const nnc_kqgemm *q) {
  E->k = k;
  LLVMValueRef fn = nnc_ll_kernel_fn(E, k->name);
  qstate S = {.q = q, .kq = q->K4 / 4, .nfull = q->N / LANES};
  int64_t nblocks = (q->N + LANES - 1) / LANES;
  S.v16i32 = LLVMVectorType(E->ti32, LANES);
  S.v16f32 = LLVMVectorType(E->tf32, LANES);
  LLVMTypeRef dp_params[3] = {S.v16i32, S.v16i32, S.v16i32};
  S.dp = intrinsic(E, "llvm.x86.avx512.vpdpbusd.512", S.v16i32, dp_params, 3, &S.dp_type);
  const nnc_kbuf *A = &E->p->bufs[nnc_kbuf_base(E->p, q->a_buf)];
  const nnc_kbuf *Cb = &E->p->bufs[nnc_kbuf_base(E->p, q->c_buf)];
  S.a = at(E, E->arena, i64c(E, A->offset));
  S.c = at(E, E->arena, i64c(E, Cb->offset));
  S.scratch = at(E, E->arena, i64c(E, q->scratch));
  int8_t *packed = pack(q, nblocks, S.kq);
  int32_t *offset = calloc((size_t)(nblocks * LANES), sizeof(int32_t));
  float *scale = calloc((size_t)(nblocks * LANES), sizeof(float));
  if (!offset || !scale) nnc_ir_bug("codegen: out of memory");
  memcpy(offset, q->offset, sizeof(int32_t) * (size_t)q->N);
  memcpy(scale, q->out_scale, sizeof(float) * (size_t)q->N);
  char name[300];
  snprintf(name, sizeof name, "%s.w8", k->name);
  S.w = nnc_ll_constant(E, name, packed, (size_t)(nblocks * S.kq * 64));
  snprintf(name, sizeof name, "%s.offset", k->name);
  S.offset = nnc_ll_constant(E, name, offset, sizeof(int32_t) * (size_t)(nblocks * LANES));
  snprintf(name, sizeof name, "%s.scale", k->name);
  S.scale = nnc_ll_constant(E, name, scale, sizeof(float) * (size_t)(nblocks * LANES));
  if (q->out_buf >= 0) { /* the per-column map, padded like the scales */
    float *mul = calloc((size_t)(nblocks * LANES), sizeof(float));
    float *add = calloc((size_t)(nblocks * LANES), sizeof(float));
    if (!mul || !add) nnc_ir_bug("codegen: out of memory");
    memcpy(mul, q->out_mul, sizeof(float) * (size_t)q->N);
    memcpy(add, q->out_add, sizeof(float) * (size_t)q->N);
    snprintf(name, sizeof name, "%s.mul", k->name);
    S.mul = nnc_ll_constant(E, name, mul, sizeof(float) * (size_t)(nblocks * LANES));
    snprintf(name, sizeof name, "%s.add", k->name);
    S.add = nnc_ll_constant(E, name, add, sizeof(float) * (size_t)(nblocks * LANES));
    S.out = at(E, E->arena, i64c(E, E->p->bufs[q->out_buf].offset));
    free(mul), free(add);
  }
  free(packed);
  free(offset);
  free(scale);
  if (q->trans_a) {
    S.a_row = 4, S.a_step = 64;
    rows_trans(E, &S);
  } else {
    S.a_row = q->K4, S.a_step = 4;
    int64_t mtile = q->M / ROW_TILE * ROW_TILE;
    rows(E, &S, 0, mtile, ROW_TILE);
    rows(E, &S, mtile, q->M, 1);
  }
  LLVMBuildRetVoid(E->b);
  return fn;
}
