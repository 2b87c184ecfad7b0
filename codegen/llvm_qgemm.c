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
 */
#include <stdlib.h>
#include <string.h>

#include "llvm_internal.h"

enum { LANES = 16, ROW_TILE = 4, COL_TILE = 4 };

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
  LLVMTypeRef v16i32, v16f32, dp_type;
  LLVMValueRef dp;
  int64_t kq, nfull; /* steps of 4 k; blocks of 16 full columns */
} qstate;

/* Rows [m0, m0 + R) of A -> u8 rows 0..R-1 of the scratch, K4 bytes each:
 * clamp(rint(a * inv), -zero, 255 - zero) + zero. Done per row tile, just
 * before its products, so the quantised rows are still in L1 when read. */
static void quantize_a(emitter *E, const qstate *S, LLVMValueRef m0, int R) {
  const nnc_kqgemm *q = S->q;
  LLVMTypeRef f[1] = {E->tf32}, ff[2] = {E->tf32, E->tf32}, t;
  LLVMValueRef rint = intrinsic(E, "llvm.rint.f32", E->tf32, f, 1, &t);
  LLVMTypeRef rint_t = t;
  LLVMValueRef minnum = intrinsic(E, "llvm.minnum.f32", E->tf32, ff, 2, &t);
  LLVMValueRef maxnum = intrinsic(E, "llvm.maxnum.f32", E->tf32, ff, 2, &t);
  nnc_ll_loop m = nnc_ll_loop_open(E, E->fn, 0, R, 1);
  nnc_ll_loop k = nnc_ll_loop_open(E, E->fn, 0, q->K, 1);
  LLVMValueRef row = LLVMBuildAdd(E->b, m0, m.i, "");
  LLVMValueRef src = LLVMBuildAdd(E->b, LLVMBuildMul(E->b, row, i64c(E, q->lda), ""), k.i, "");
  LLVMValueRef x =
      LLVMBuildLoad2(E->b, E->tf32, at(E, S->a, LLVMBuildMul(E->b, src, i64c(E, 4), "")), "");
  LLVMValueRef y = LLVMBuildFMul(E->b, x, LLVMConstReal(E->tf32, q->a_inv_scale), "");
  y = LLVMBuildCall2(E->b, rint_t, rint, &y, 1, "");
  LLVMValueRef hi[2] = {y, LLVMConstReal(E->tf32, 255.0 - q->a_zero)};
  y = LLVMBuildCall2(E->b, t, minnum, hi, 2, "");
  LLVMValueRef lo[2] = {y, LLVMConstReal(E->tf32, -(double)q->a_zero)};
  y = LLVMBuildCall2(E->b, t, maxnum, lo, 2, "");
  LLVMValueRef u = LLVMBuildAdd(E->b, LLVMBuildFPToSI(E->b, y, E->ti32, ""),
                                LLVMConstInt(E->ti32, (unsigned long long)q->a_zero, 0), "");
  LLVMValueRef dst = LLVMBuildAdd(E->b, LLVMBuildMul(E->b, m.i, i64c(E, q->K4), ""), k.i, "");
  LLVMBuildStore(E->b, LLVMBuildTrunc(E->b, u, E->ti8, ""), at(E, S->scratch, dst));
  nnc_ll_loop_close(E, &k);
  if (q->K4 > q->K) { /* the padding: zeros (the padded weights are zero too) */
    nnc_ll_loop p = nnc_ll_loop_open(E, E->fn, q->K, q->K4, 1);
    dst = LLVMBuildAdd(E->b, LLVMBuildMul(E->b, m.i, i64c(E, q->K4), ""), p.i, "");
    LLVMBuildStore(E->b, LLVMConstInt(E->ti8, 0, 0), at(E, S->scratch, dst));
    nnc_ll_loop_close(E, &p);
  }
  nnc_ll_loop_close(E, &m);
}

/* One tile: rows [m0, m0 + R), blocks [nb0, nb0 + C); `lanes` < 16: the
 * single last block is partial. */
static void tile(emitter *E, const qstate *S, LLVMValueRef m0, LLVMValueRef nb0, int R, int C,
                 int lanes) {
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
    LLVMValueRef off =
        LLVMBuildAdd(E->b, i64c(E, r * q->K4), LLVMBuildMul(E->b, k.i, i64c(E, 4), ""), "");
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
    for (int r = 0; r < R; r++) {
      LLVMValueRef s = LLVMBuildAdd(E->b, LLVMBuildLoad2(E->b, S->v16i32, acc[r][c], ""), off, "");
      LLVMValueRef v = LLVMBuildFMul(E->b, LLVMBuildSIToFP(E->b, s, S->v16f32, ""), sc, "");
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
  }
}

/* Rows [from, to) in tiles of R rows, every column. */
static void rows(emitter *E, const qstate *S, int64_t from, int64_t to, int R) {
  if (to <= from) return;
  nnc_ll_loop m = nnc_ll_loop_open(E, E->fn, from, to, R);
  quantize_a(E, S, m.i, R);
  int64_t ntile = S->nfull / COL_TILE * COL_TILE;
  if (ntile > 0) {
    nnc_ll_loop n = nnc_ll_loop_open(E, E->fn, 0, ntile, COL_TILE);
    tile(E, S, m.i, n.i, R, COL_TILE, LANES);
    nnc_ll_loop_close(E, &n);
  }
  if (S->nfull > ntile) {
    nnc_ll_loop n = nnc_ll_loop_open(E, E->fn, ntile, S->nfull, 1);
    tile(E, S, m.i, n.i, R, 1, LANES);
    nnc_ll_loop_close(E, &n);
  }
  if (S->q->N % LANES) tile(E, S, m.i, i64c(E, S->nfull), R, 1, (int)(S->q->N % LANES));
  nnc_ll_loop_close(E, &m);
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
  free(packed);
  free(offset);
  free(scale);
  int64_t mtile = q->M / ROW_TILE * ROW_TILE;
  rows(E, &S, 0, mtile, ROW_TILE);
  rows(E, &S, mtile, q->M, 1);
  LLVMBuildRetVoid(E->b);
  return fn;
}
