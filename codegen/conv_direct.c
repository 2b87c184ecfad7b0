/* conv_direct.c: a direct convolution kernel (kernel.h's nnc_kconv) in
 * LLVM IR, for AVX-512: the forward pass and the input gradient of a
 * stride-1 convolution (lower_conv.c builds both as the same sum).
 *
 * Each call of the kernel's split loop computes one (image n, block of ob
 * output channels), R output rows at a time (three where a row is one
 * vector): ob x R x S accumulators of 16 lanes (S = ceil(OW / 16) vectors
 * along the row) sum, over input channels i and the taps (kh, kw), each
 * input row shifted by kw - pw, loaded once per tap as S vectors (masked
 * where the shift reads outside the row: the padding is zeros without a
 * padded copy; the masks are constants since the sizes are), times each
 * output channel's weight broadcast once for the R rows. Groups of R
 * rows cover the rows whose taps all read rows inside the image; the rows
 * near the top and bottom go one at a time (one loop over both ends),
 * their kh loop bounded to the taps inside. The sums plus the bias are
 * stored masked to OW. All blocks have ob channels (one copy of the code):
 * where ob does not divide O the last block starts at O - ob and stores
 * only the channels past the block before it. Every
 * output element is one sequential sum (i, kh, kw ascending), so the bits
 * do not depend on how the calls are split over threads.
 */
#include <string.h>

#include "cg_loop.h"
#include "llvm_internal.h"

enum { LANES = 16, MAX_ACC = NNC_CG_LOOP_MAX_CARRY };

typedef struct conv_emit {
  emitter *E;
  const nnc_kconv *g;
  LLVMTypeRef vt;
  LLVMValueRef zero;
  int64_t S; /* vectors per output row */
  /* the block's first channels not its own (the last block's overlap;
   * NULL: every block its own ob channels) */
  LLVMValueRef keep;
} conv_emit;

/* Loop l, closed, of `trips` iterations (-1: not a constant) is kept a
 * loop unless it runs once: full unrolling never unrolls these loops of
 * many fmas and only spends its analysis on them (conv 2's forward pass
 * and input gradient: 8-9 ms of the 9-10 ms their optimisation takes,
 * the same instructions); a one-trip loop (conv 1's single input channel)
 * is still unrolled away as before. */
static void keep_loop(emitter *E, const nnc_cg_loop *l, int64_t trips) {
  if (trips != 1) nnc_ll_no_unroll(E, l->back);
}

static LLVMValueRef i64c(emitter *E, int64_t v) {
  return LLVMConstInt(E->ti64, (unsigned long long)v, 1);
}

static LLVMValueRef at(emitter *E, LLVMValueRef base, LLVMValueRef off) {
  return LLVMBuildGEP2(E->b, E->tf32, base, &off, 1, "");
}

static LLVMValueRef call(emitter *E, const char *name, int nover, LLVMTypeRef *over,
                         LLVMValueRef *args, unsigned n) {
  return nnc_cg_call_intrinsic(E->mod, E->b, name, over, (size_t)nover, args, n);
}

/* Lanes l of the vector at element `first` of a row of `len` elements
 * with 0 <= first + l < len (and l < upto): their mask; *count lanes set. */
static LLVMValueRef row_mask(emitter *E, int64_t first, int64_t len, int64_t upto, int *count) {
  LLVMValueRef bits[LANES];
  *count = 0;
  for (int l = 0; l < LANES; l++) {
    bool on = first + l >= 0 && first + l < len && l < upto;
    *count += on;
    bits[l] = LLVMConstInt(E->ti1, on, 0);
  }
  return LLVMConstVector(bits, LANES);
}

static LLVMValueRef splat(conv_emit *C, LLVMValueRef x) {
  emitter *E = C->E;
  LLVMValueRef v = LLVMBuildInsertElement(E->b, LLVMGetUndef(C->vt), x, i64c(E, 0), "");
  return LLVMBuildShuffleVector(E->b, v, LLVMGetUndef(C->vt),
                                LLVMConstNull(LLVMVectorType(E->ti32, LANES)), "");
}

/* The vectors of input row `row` for tap column kw: row[s*16 + kw - pw +
 * l], zero outside the row; NULL for a vector that reads only padding. */
static void tap_vectors(conv_emit *C, LLVMValueRef row, int64_t kw, LLVMValueRef *v) {
  emitter *E = C->E;
  const nnc_kconv *g = C->g;
  for (int64_t s = 0; s < C->S; s++) {
    int64_t first = s * LANES + kw - g->pw;
    int count;
    LLVMValueRef mask = row_mask(E, first, g->W, g->OW - s * LANES, &count);
    LLVMValueRef ptr = at(E, row, i64c(E, first));
    if (count == 0) {
      v[s] = NULL;
    } else if (count == LANES) {
      v[s] = LLVMBuildLoad2(E->b, C->vt, ptr, "");
      LLVMSetAlignment(v[s], 4);
    } else {
      LLVMTypeRef over[2] = {C->vt, E->tptr};
      LLVMValueRef args[4] = {ptr, LLVMConstInt(E->ti32, 4, 0), mask, C->zero};
      v[s] = call(E, "llvm.masked.load", 2, over, args, 4);
    }
  }
}

/* Output channel o's store mask: the constant lanes of the row, and
 * only where the block owns channel o (the last block may start before
 * its share, overlapping the one before it: those channels it computes
 * again and does not store). */
static LLVMValueRef owned(conv_emit *C, int64_t o, LLVMValueRef mask) {
  emitter *E = C->E;
  LLVMValueRef own = LLVMBuildICmp(E->b, LLVMIntSLE, C->keep, i64c(E, o), "");
  LLVMValueRef all =
      LLVMBuildInsertElement(E->b, LLVMGetUndef(LLVMTypeOf(mask)), own, i64c(E, 0), "");
  all = LLVMBuildShuffleVector(E->b, all, LLVMGetUndef(LLVMTypeOf(mask)),
                               LLVMConstNull(LLVMVectorType(E->ti32, LANES)), "");
  return LLVMBuildAnd(E->b, mask, all, "");
}

/* Output rows [r, r + R) (R > 1: rows whose taps are all inside the
 * image) of the block of ob output channels: image n's planes `in`,
 * output `out` and weights `w` at the block's first channel. */
static void row_group(conv_emit *C, int64_t R, LLVMValueRef r, LLVMValueRef in, LLVMValueRef w,
                      LLVMValueRef out, LLVMValueRef bias) {
  emitter *E = C->E;
  const nnc_kconv *g = C->g;
  int64_t S = C->S, cnt = g->ob;
  int nacc = (int)(cnt * R * S);
  LLVMValueRef init[MAX_ACC], acc[MAX_ACC];
  for (int a = 0; a < nacc; a++)
    init[a] = C->zero;
  /* taps kh with 0 <= r + kh - ph < H (all of them for rows inside) */
  LLVMValueRef lo = i64c(E, 0), hi = i64c(E, g->KH);
  if (R == 1) {
    lo = LLVMBuildSub(E->b, i64c(E, g->ph), r, "");
    lo = LLVMBuildSelect(E->b, LLVMBuildICmp(E->b, LLVMIntSGT, lo, i64c(E, 0), ""), lo, i64c(E, 0),
                         "");
    hi = LLVMBuildSub(E->b, i64c(E, g->H + g->ph), r, "");
    hi = LLVMBuildSelect(E->b, LLVMBuildICmp(E->b, LLVMIntSLT, hi, i64c(E, g->KH), ""), hi,
                         i64c(E, g->KH), "");
  }
  nnc_cg_loop chans, taps;
  nnc_cg_loop_open(E->b, E->ctx, E->fn, &chans, i64c(E, 0), i64c(E, g->C), nacc, init, "chans");
  LLVMValueRef i = chans.iv;
  nnc_cg_loop_open(E->b, E->ctx, E->fn, &taps, lo, hi, nacc, chans.carry, "taps");
  LLVMValueRef kh = taps.iv;
  for (int a = 0; a < nacc; a++)
    acc[a] = taps.carry[a];
  /* row j: in + i*in_c + (r + j + kh - ph)*W; w + i*wi + kh*wkh */
  LLVMValueRef rows[MAX_ACC];
  LLVMValueRef ic = LLVMBuildMul(E->b, i, i64c(E, g->in_c), "");
  for (int64_t j = 0; j < R; j++) {
    LLVMValueRef ro = LLVMBuildAdd(E->b, LLVMBuildAdd(E->b, r, kh, ""), i64c(E, j - g->ph), "");
    rows[j] = at(E, in, LLVMBuildAdd(E->b, ic, LLVMBuildMul(E->b, ro, i64c(E, g->W), ""), ""));
  }
  LLVMValueRef wo = LLVMBuildAdd(E->b, LLVMBuildMul(E->b, i, i64c(E, g->wi), ""),
                                 LLVMBuildMul(E->b, kh, i64c(E, g->wkh), ""), "");
  LLVMValueRef wt = at(E, w, wo);
  LLVMTypeRef over = C->vt;
  for (int64_t kw = 0; kw < g->KW; kw++) {
    LLVMValueRef v[MAX_ACC];
    for (int64_t j = 0; j < R; j++)
      tap_vectors(C, rows[j], kw, v + j * S);
    for (int64_t o = 0; o < cnt; o++) {
      LLVMValueRef wp = at(E, wt, i64c(E, o * g->wo + kw * g->wkw));
      LLVMValueRef ws = splat(C, LLVMBuildLoad2(E->b, E->tf32, wp, ""));
      for (int64_t js = 0; js < R * S; js++) {
        if (!v[js]) continue;
        LLVMValueRef args[3] = {ws, v[js], acc[o * R * S + js]};
        acc[o * R * S + js] = call(E, "llvm.fma", 1, &over, args, 3);
      }
    }
  }
  nnc_cg_loop_close(E->b, &taps, 1, acc);
  keep_loop(E, &taps, R == 1 ? -1 : g->KH);
  nnc_cg_loop_close(E->b, &chans, 1, taps.carry);
  keep_loop(E, &chans, g->C);
  /* out + o*out_c + (r + j)*OW + s*16: sums plus the bias, masked to the
   * row (and to the channels the block owns) */
  LLVMValueRef orow = at(E, out, LLVMBuildMul(E->b, r, i64c(E, g->OW), ""));
  for (int64_t o = 0; o < cnt; o++) {
    LLVMValueRef b = NULL;
    if (bias) b = splat(C, LLVMBuildLoad2(E->b, E->tf32, at(E, bias, i64c(E, o)), ""));
    for (int64_t js = 0; js < R * S; js++) {
      int64_t j = js / S, s = js % S;
      LLVMValueRef y = chans.carry[o * R * S + js];
      if (b) y = LLVMBuildFAdd(E->b, y, b, "");
      LLVMValueRef ptr = at(E, orow, i64c(E, o * g->out_c + j * g->OW + s * LANES));
      int count;
      LLVMValueRef mask = row_mask(E, s * LANES, g->OW, LANES, &count);
      if (count == LANES && !C->keep) {
        LLVMSetAlignment(LLVMBuildStore(E->b, y, ptr), 4);
      } else {
        LLVMTypeRef ov[2] = {C->vt, E->tptr};
        LLVMValueRef args[4] = {y, ptr, LLVMConstInt(E->ti32, 4, 0),
                                C->keep ? owned(C, o, mask) : mask};
        call(E, "llvm.masked.store", 2, ov, args, 4);
      }
    }
  }
}

/* The whole planes of the block: groups of R rows where every tap's row
 * is inside the image, and the rows near the top and bottom one at a time
 * (one loop over both ends, their taps bounded: one copy of the
 * single-row code). */
static void block_rows(conv_emit *C, LLVMValueRef in, LLVMValueRef w, LLVMValueRef out,
                       LLVMValueRef bias) {
  emitter *E = C->E;
  const nnc_kconv *g = C->g;
  int64_t R = g->rows;
  /* rows r with 0 <= r - ph and r + KH - 1 - ph < H */
  int64_t top = 0, mid = 0;
  if (R > 1) {
    top = g->ph < 0 ? 0 : g->ph > g->OH ? g->OH : g->ph;
    int64_t bot = g->H + g->ph - g->KH + 1;
    bot = bot < top ? top : bot > g->OH ? g->OH : bot;
    mid = top + (bot - top) / R * R;
  }
  if (mid > top) {
    nnc_cg_loop rows;
    nnc_cg_loop_open(E->b, E->ctx, E->fn, &rows, i64c(E, top), i64c(E, mid), 0, NULL, "rows");
    row_group(C, R, rows.iv, in, w, out, bias);
    nnc_cg_loop_close(E->b, &rows, R, NULL);
    keep_loop(E, &rows, (mid - top) / R);
  }
  int64_t edges = top + g->OH - mid; /* rows [0, top) then [mid, OH) */
  if (edges > 0) {
    nnc_cg_loop rows;
    nnc_cg_loop_open(E->b, E->ctx, E->fn, &rows, i64c(E, 0), i64c(E, edges), 0, NULL, "row");
    LLVMValueRef r = rows.iv;
    if (mid > top) {
      LLVMValueRef below = LLVMBuildICmp(E->b, LLVMIntSGE, r, i64c(E, top), "");
      r = LLVMBuildAdd(E->b, r, LLVMBuildSelect(E->b, below, i64c(E, mid - top), i64c(E, 0), ""),
                       "");
    }
    row_group(C, 1, r, in, w, out, bias);
    nnc_cg_loop_close(E->b, &rows, 1, NULL);
    keep_loop(E, &rows, edges);
  }
}

void nnc_ll_emit_conv(emitter *E, const nnc_kernel *k, LLVMValueRef in, LLVMValueRef w,
                      LLVMValueRef bias, LLVMValueRef out) {
  const nnc_kconv *g = &k->conv;
  conv_emit C = {
      .E = E, .g = g, .vt = LLVMVectorType(E->tf32, LANES), .S = (g->OW + LANES - 1) / LANES};
  C.zero = LLVMConstNull(C.vt);
  if (g->ob * g->rows * C.S > MAX_ACC || g->ob > g->O)
    nnc_ir_bug("codegen: a direct convolution with too many sums");
  int64_t blocks = (g->O + g->ob - 1) / g->ob;
  nnc_cg_loop calls;
  nnc_cg_loop_open(E->b, E->ctx, E->fn, &calls, E->begin, E->end, 0, NULL, "calls");
  LLVMValueRef n = LLVMBuildSDiv(E->b, calls.iv, i64c(E, blocks), "");
  LLVMValueRef o0 =
      LLVMBuildMul(E->b, LLVMBuildSRem(E->b, calls.iv, i64c(E, blocks), ""), i64c(E, g->ob), "");
  if (g->O % g->ob) { /* the last block ends at O, overlapping the one before */
    LLVMValueRef share = o0, end = i64c(E, g->O - g->ob);
    o0 = LLVMBuildSelect(E->b, LLVMBuildICmp(E->b, LLVMIntSGT, o0, end, ""), end, o0, "");
    C.keep = LLVMBuildSub(E->b, share, o0, "");
  }
  LLVMValueRef inn = at(E, in, LLVMBuildMul(E->b, n, i64c(E, g->in_n), ""));
  LLVMValueRef outn = at(E, out,
                         LLVMBuildAdd(E->b, LLVMBuildMul(E->b, n, i64c(E, g->out_n), ""),
                                      LLVMBuildMul(E->b, o0, i64c(E, g->out_c), ""), ""));
  LLVMValueRef wn =
      at(E, w, LLVMBuildAdd(E->b, i64c(E, g->w0), LLVMBuildMul(E->b, o0, i64c(E, g->wo), ""), ""));
  LLVMValueRef bn = bias ? at(E, bias, o0) : NULL;
  block_rows(&C, inn, wn, outn, bn);
  nnc_cg_loop_close(E->b, &calls, 1, NULL);
  keep_loop(E, &calls, -1);
  LLVMBuildRetVoid(E->b);
}
