/* conv_dw.c: the LLVM function of a direct convolution weight gradient
 * (kernel.h nnc_kconv_dw, matched by lower_conv_dw.c).
 *
 *   dw[o, c, kh, kw] = sum over n, oh, ow of dy[n, o, oh, ow] * x[n, c, ih, iw],
 *   ih = oh + kh - PH, iw = ow + kw - PW (zero outside the image)
 *
 * read straight from NCHW dy and x: no columns, no transposed dy. An item
 * is a block of ob output channels, one input channel c and a block of
 * khb tap rows (lower_conv_dw.c picks the blocks with the most
 * multiply-adds per load: fashion_cnn's 3x3 layers take 8 channels by one
 * tap row, 24 accumulators); each of its ob * khb * KW outputs has an
 * accumulator vector whose lanes are output positions. Per vector of
 * positions the khb * KW shifted input vectors are loaded (masked so that
 * padding reads zeros), then each output channel's dy vector and its
 * multiply-adds. When an output row is as long as an input row (OW == W)
 * a tap is one shift of the flat plane: the lanes run along the whole
 * plane (14x14 = 196 positions in 13 vectors, not 14 rows of 14 in 16
 * lanes) in a loop whose masks come from a constant table (the interior
 * vectors, in a copy of the body of their own, load without masks what
 * lies wholly inside); otherwise along each row, the rows with every tap
 * inside the image in a loop and the padded rows one by one. The code for
 * each block of tap rows is a copy of its own (its taps constant), chosen
 * by a switch per item.
 *
 * Order of the sums, the same whatever the batch and thread count: the
 * kernel's split loop runs over items, each item's outputs are summed by
 * one thread. For each of the `chunks` micro-batch chunks, each lane of an
 * accumulator adds its products image by image, row by row, vector by
 * vector (the accumulators stay in registers over a group of `group`
 * images and in the scratch buffer between groups, so a thread walks a
 * group across all its items while the group's data are in cache); at
 * the end of the chunk the lanes are added as a fixed tree
 * (halves, quarters, ...), giving the chunk's sum; the chunk sums are
 * added as the runtime's pairwise tree (nnc_rt_tree_sum). A rank of
 * data-parallel training that holds one chunk runs the same code on its
 * chunk and stores that chunk's sum, so the runtime's tree over the ranks
 * gives the full step's bits. Every operation is an explicit instruction
 * without fast-math flags (llvm.fmuladd, fadd), so the optimiser keeps
 * the order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_loop.h"
#include "llvm_internal.h"

enum { MAX_VL = 16, MAX_ACC = 32, MAX_CHUNKS = 64 };

typedef struct dw_emitter {
  emitter *E;
  const nnc_kconv_dw *d;
  LLVMTypeRef vec;
  LLVMValueRef dy, x, dw, scratch;
  int64_t taps, nacc;
} dw_emitter;

static LLVMValueRef i64c(dw_emitter *w, int64_t v) {
  return LLVMConstInt(w->E->ti64, (unsigned long long)v, 1);
}

static LLVMValueRef add64(dw_emitter *w, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildAdd(w->E->b, a, b, "");
}

static LLVMValueRef mul64(dw_emitter *w, LLVMValueRef a, int64_t c) {
  return LLVMBuildMul(w->E->b, a, i64c(w, c), "");
}

/* &base[idx] (floats); not inbounds: a shifted row's first vector may
 * start before the buffer, its lanes there masked off. */
static LLVMValueRef at(dw_emitter *w, LLVMValueRef base, LLVMValueRef idx) {
  return LLVMBuildGEP2(w->E->b, w->E->tf32, base, &idx, 1, "");
}

static LLVMValueRef intrinsic(dw_emitter *w, const char *name, LLVMTypeRef *over, size_t nover,
                              LLVMValueRef *args, unsigned nargs) {
  return nnc_cg_call_intrinsic(w->E->mod, w->E->b, name, over, nover, args, nargs);
}

/* A vector of base[idx + l] over the lanes l set in valid[] (zero in the
 * others), which are then never read. */
static LLVMValueRef load_lanes(dw_emitter *w, LLVMValueRef base, LLVMValueRef idx,
                               const bool *valid) {
  emitter *E = w->E;
  int vl = w->d->vl;
  bool all = true;
  LLVMValueRef bits[MAX_VL];
  for (int l = 0; l < vl; l++) {
    bits[l] = LLVMConstInt(E->ti1, valid[l], 0);
    all &= valid[l];
  }
  LLVMValueRef ptr = at(w, base, idx);
  if (all) {
    LLVMValueRef v = LLVMBuildLoad2(E->b, w->vec, ptr, "");
    LLVMSetAlignment(v, 4);
    return v;
  }
  LLVMTypeRef over[2] = {w->vec, E->tptr};
  LLVMValueRef args[4] = {ptr, LLVMConstInt(E->ti32, 4, 0), LLVMConstVector(bits, (unsigned)vl),
                          LLVMConstNull(w->vec)};
  return intrinsic(w, "llvm.masked.load", over, 2, args, 4);
}

static LLVMValueRef load_vec(dw_emitter *w, LLVMValueRef base, LLVMValueRef idx) {
  LLVMValueRef v = LLVMBuildLoad2(w->E->b, w->vec, at(w, base, idx), "");
  LLVMSetAlignment(v, 4);
  return v;
}

static void store_vec(dw_emitter *w, LLVMValueRef v, LLVMValueRef base, LLVMValueRef idx) {
  LLVMSetAlignment(LLVMBuildStore(w->E->b, v, at(w, base, idx)), 4);
}

static LLVMValueRef fmuladd(dw_emitter *w, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c) {
  LLVMValueRef args[3] = {a, b, c};
  return intrinsic(w, "llvm.fmuladd", &w->vec, 1, args, 3);
}

/* The lanes of v added as a tree: (lanes [0, h) + lanes [h, 2h)) for h =
 * VL/2, VL/4, ..., 1; lane 0 is the sum. */
static LLVMValueRef lane_sum(dw_emitter *w, LLVMValueRef v) {
  emitter *E = w->E;
  for (int h = w->d->vl / 2; h >= 1; h /= 2) {
    LLVMValueRef lo[MAX_VL], hi[MAX_VL];
    for (int l = 0; l < h; l++) {
      lo[l] = LLVMConstInt(E->ti32, (unsigned long long)l, 0);
      hi[l] = LLVMConstInt(E->ti32, (unsigned long long)(l + h), 0);
    }
    LLVMValueRef a = LLVMBuildShuffleVector(E->b, v, v, LLVMConstVector(lo, (unsigned)h), "");
    LLVMValueRef b = LLVMBuildShuffleVector(E->b, v, v, LLVMConstVector(hi, (unsigned)h), "");
    v = LLVMBuildFAdd(E->b, a, b, "");
  }
  return LLVMBuildExtractElement(E->b, v, LLVMConstInt(E->ti32, 0, 0), "");
}

/* One item's place: first output channel, input channel, its block of
 * tap rows, and the flat index of its accumulators in the scratch buffer
 * (accumulator a = (j * khb + r) * KW + kw: channel o0 + j, tap row
 * kh0 + r, tap column kw). */
typedef struct item {
  LLVMValueRef o0, c, kb, acc;
} item;

static item item_of(dw_emitter *w, LLVMValueRef it) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  LLVMValueRef nkb = i64c(w, d->KH / d->khb), oc = LLVMBuildSDiv(E->b, it, nkb, "");
  LLVMValueRef C = i64c(w, d->C);
  item r;
  r.kb = LLVMBuildSRem(E->b, it, nkb, "");
  r.o0 = mul64(w, LLVMBuildSDiv(E->b, oc, C, ""), d->ob);
  r.c = LLVMBuildSRem(E->b, oc, C, "");
  r.acc = mul64(w, it, w->nacc * d->vl);
  return r;
}

/* Accumulator a's (i64) flat index in dw (and in a chunk's slot of sums). */
static LLVMValueRef out_index(dw_emitter *w, const item *r, LLVMValueRef a) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  LLVMValueRef per_o = i64c(w, d->khb * d->KW);
  LLVMValueRef j = LLVMBuildUDiv(E->b, a, per_o, ""), tap = LLVMBuildURem(E->b, a, per_o, "");
  LLVMValueRef oc = add64(w, mul64(w, add64(w, r->o0, j), d->C), r->c);
  LLVMValueRef kh0 = mul64(w, r->kb, d->khb); /* tap rows before the block: kh0 * KW taps */
  return add64(w, add64(w, mul64(w, oc, w->taps), mul64(w, kh0, d->KW)), tap);
}

/* for (it = begin; it < end; it++), the builder in the body. */
static nnc_cg_loop items_open(dw_emitter *w) {
  nnc_cg_loop l;
  nnc_cg_loop_open(w->E->b, w->E->ctx, w->E->fn, &l, w->E->begin, w->E->end, 0, NULL, "item");
  return l;
}

/* One vector of positions: dy[n, o0 + j] at flat index dy_at[j] (lanes
 * dy_ok), and for tap (kh0 + r, kw) the input at x_at[r][kw] (lanes
 * x_ok[r][kw]; none: the tap sees only padding here). acc[] += products.
 * The input vectors first, then one output-gradient vector at a time. */
typedef struct position {
  LLVMValueRef dy_at[MAX_ACC];
  bool dy_ok[MAX_VL];
  LLVMValueRef x_at[MAX_ACC][MAX_ACC];
  bool x_ok[MAX_ACC][MAX_ACC][MAX_VL];
} position;

static bool any_lane(const bool *ok, int vl) {
  for (int l = 0; l < vl; l++)
    if (ok[l]) return true;
  return false;
}

static void products(dw_emitter *w, position *ps, LLVMValueRef *acc) {
  const nnc_kconv_dw *d = w->d;
  LLVMValueRef xv[MAX_ACC][MAX_ACC] = {{0}};
  for (int64_t r = 0; r < d->khb; r++)
    for (int64_t kw = 0; kw < d->KW; kw++)
      if (any_lane(ps->x_ok[r][kw], d->vl))
        xv[r][kw] = load_lanes(w, w->x, ps->x_at[r][kw], ps->x_ok[r][kw]);
  for (int64_t j = 0; j < d->ob; j++) {
    LLVMValueRef dyv = load_lanes(w, w->dy, ps->dy_at[j], ps->dy_ok);
    for (int64_t r = 0; r < d->khb; r++)
      for (int64_t kw = 0; kw < d->KW; kw++) {
        int64_t a = (j * d->khb + r) * d->KW + kw;
        if (xv[r][kw]) acc[a] = fmuladd(w, dyv, xv[r][kw], acc[a]);
      }
  }
}

/* Flat indices of the item's planes: dy[n, o0 + j, 0, 0], x[n, c, 0, 0]. */
typedef struct planes {
  LLVMValueRef dy[MAX_ACC], x;
} planes;

/* The lanes of vector v that block kb of tap rows reads, as the low VL
 * bits: the output gradient's (tap < 0) those of positions in the plane,
 * tap r * KW + kw's those whose pixel also lies in the image. */
static uint32_t plane_lanes(const nnc_kconv_dw *d, int64_t kb, int64_t v, int64_t tap) {
  uint32_t m = 0;
  for (int l = 0; l < d->vl; l++) {
    int64_t p = v * d->vl + l;
    bool in = p < d->OH * d->OW;
    if (in && tap >= 0) {
      int64_t ih = p / d->OW + kb * d->khb + tap / d->KW - d->PH,
              iw = p % d->OW + tap % d->KW - d->PW;
      in = ih >= 0 && ih < d->H && iw >= 0 && iw < d->W;
    }
    m |= (uint32_t)in << l;
  }
  return m;
}

/* Plane mode (OW == W): vector v holds flat positions p = v * VL + l of
 * the output plane; tap (kh, kw) reads the input plane at p + (kh - PH) *
 * W + kw - PW, masked to the positions whose pixel lies in the image. The
 * vectors run as a loop (plane_products; unrolled, the scheduler spilled
 * accumulators); their masks come from a constant table, per block of tap
 * rows and vector: the output gradient's lanes, then each tap's, as the
 * low VL bits of an i32. One code serves every block of tap rows (the
 * item's block picks its shift and its part of the table). */
static LLVMValueRef plane_masks(dw_emitter *w, int64_t nv) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  int64_t per = 1 + d->khb * d->KW, nkb = d->KH / d->khb;
  LLVMValueRef *bits = malloc(sizeof(LLVMValueRef) * (size_t)(nkb * nv * per));
  if (!bits) nnc_ir_bug("codegen: out of memory");
  for (int64_t kb = 0; kb < nkb; kb++)
    for (int64_t v = 0; v < nv; v++)
      for (int64_t t = 0; t < per; t++)
        bits[(kb * nv + v) * per + t] = LLVMConstInt(E->ti32, plane_lanes(d, kb, v, t - 1), 0);
  LLVMValueRef init = LLVMConstArray2(E->ti32, bits, (uint64_t)(nkb * nv * per));
  free(bits);
  char name[160];
  snprintf(name, sizeof name, "%s.masks", E->k->name);
  LLVMValueRef g = LLVMAddGlobal(E->mod, LLVMTypeOf(init), name);
  LLVMSetInitializer(g, init);
  LLVMSetGlobalConstant(g, 1);
  LLVMSetLinkage(g, LLVMPrivateLinkage);
  LLVMSetUnnamedAddress(g, LLVMGlobalUnnamedAddr);
  return g;
}

/* Entry idx of a mask table as a <VL x i1>. */
static LLVMValueRef mask_at(dw_emitter *w, LLVMValueRef table, LLVMValueRef idx) {
  emitter *E = w->E;
  LLVMValueRef m =
      LLVMBuildLoad2(E->b, E->ti32, LLVMBuildGEP2(E->b, E->ti32, table, &idx, 1, ""), "");
  m = LLVMBuildTrunc(E->b, m, LLVMIntTypeInContext(E->ctx, (unsigned)w->d->vl), "");
  return LLVMBuildBitCast(E->b, m, LLVMVectorType(E->ti1, (unsigned)w->d->vl), "");
}

static LLVMValueRef load_masked(dw_emitter *w, LLVMValueRef base, LLVMValueRef idx,
                                LLVMValueRef mask) {
  LLVMTypeRef over[2] = {w->vec, w->E->tptr};
  LLVMValueRef args[4] = {at(w, base, idx), LLVMConstInt(w->E->ti32, 4, 0), mask,
                          LLVMConstNull(w->vec)};
  return intrinsic(w, "llvm.masked.load", over, 2, args, 4);
}

/* Whether a load of vector v needs no mask in any block of tap rows: the
 * output gradient's (tap < 0) or tap r * KW + kw's. */
static bool plane_full(const nnc_kconv_dw *d, int64_t v, int64_t tap) {
  uint32_t all = (1u << d->vl) - 1;
  for (int64_t kb = 0; kb < d->KH / d->khb; kb++)
    if (plane_lanes(d, kb, v, tap) != all) return false;
  return true;
}

/* Vector v (i64) of the plane: acc[] += its products. plain[0] (the
 * output gradient) and plain[1 + r * KW + kw] (tap (r, kw)): loaded
 * without a mask, every lane of theirs in the plane and the image. xs:
 * the input plane shifted to the block's first tap row; t0: the vector's
 * entry in the mask table. */
static void plane_vector(dw_emitter *w, const planes *pl, LLVMValueRef xs, LLVMValueRef table,
                         LLVMValueRef t0, LLVMValueRef v, const bool *plain, LLVMValueRef *acc) {
  const nnc_kconv_dw *d = w->d;
  LLVMValueRef xv[MAX_ACC][MAX_ACC], p0 = mul64(w, v, d->vl);
  for (int64_t r = 0; r < d->khb; r++)
    for (int64_t kw = 0; kw < d->KW; kw++) {
      int64_t shift = (r - d->PH) * d->W + kw - d->PW;
      LLVMValueRef idx = add64(w, add64(w, xs, p0), i64c(w, shift));
      xv[r][kw] = plain[1 + r * d->KW + kw]
                      ? load_vec(w, w->x, idx)
                      : load_masked(w, w->x, idx,
                                    mask_at(w, table, add64(w, t0, i64c(w, 1 + r * d->KW + kw))));
    }
  LLVMValueRef dy_mask = plain[0] ? NULL : mask_at(w, table, t0);
  for (int64_t j = 0; j < d->ob; j++) {
    LLVMValueRef idx = add64(w, pl->dy[j], p0);
    LLVMValueRef dyv = plain[0] ? load_vec(w, w->dy, idx) : load_masked(w, w->dy, idx, dy_mask);
    for (int64_t r = 0; r < d->khb; r++)
      for (int64_t kw = 0; kw < d->KW; kw++) {
        int64_t a = (j * d->khb + r) * d->KW + kw;
        acc[a] = fmuladd(w, dyv, xv[r][kw], acc[a]);
      }
  }
}

/* The plane's vectors in order, in one loop. A masked load is slower
 * than a plain one, so the interior vectors [a, b) (where the output
 * gradient and the taps without a column shift are whole for every block
 * of tap rows: 10 of conv 2's 13) take a second copy of the body that
 * loads without masks what lies wholly inside over that range; the
 * vectors at the ends keep the masks. The same lanes are loaded either
 * way: the same bits. */
static void plane_products(dw_emitter *w, const planes *pl, LLVMValueRef kb, LLVMValueRef *acc) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  int64_t nv = (d->OH * d->OW + d->vl - 1) / d->vl, per = 1 + d->khb * d->KW;
  LLVMValueRef table = plane_masks(w, nv);
  bool inner[NNC_KCONV_DW_MAX_PLANE_VECTORS];
  int64_t a = nv, b = nv;
  for (int64_t v = 0; v < nv; v++) {
    inner[v] = plane_full(d, v, -1);
    for (int64_t r = 0; r < d->khb; r++)
      inner[v] &= plane_full(d, v, r * d->KW + d->PW);
    if (inner[v] && a == nv) a = v;
    if (inner[v]) b = v + 1;
  }
  for (int64_t v = a; v < b; v++)
    if (!inner[v]) b = a = nv; /* not one range: all masked */
  bool masked[1 + MAX_ACC] = {false}, plain[1 + MAX_ACC];
  for (int64_t t = 0; t < per; t++) {
    plain[t] = a < b;
    for (int64_t v = a; v < b; v++)
      plain[t] &= plane_full(d, v, t - 1);
  }
  /* the block's first tap row kh0 = kb * khb: its shift and its masks */
  LLVMValueRef xs = add64(w, pl->x, mul64(w, kb, d->khb * d->W)), m0 = mul64(w, kb, nv * per);
  nnc_cg_loop l;
  nnc_cg_loop_open(E->b, E->ctx, E->fn, &l, i64c(w, 0), i64c(w, nv), (int)w->nacc, acc, "plane");
  LLVMValueRef t0 = add64(w, m0, mul64(w, l.iv, per)), edge[MAX_ACC], mid[MAX_ACC];
  memcpy(edge, l.carry, sizeof(LLVMValueRef) * (size_t)w->nacc);
  if (a < b) {
    memcpy(mid, l.carry, sizeof(LLVMValueRef) * (size_t)w->nacc);
    LLVMValueRef in = LLVMBuildAnd(E->b, LLVMBuildICmp(E->b, LLVMIntSGE, l.iv, i64c(w, a), ""),
                                   LLVMBuildICmp(E->b, LLVMIntSLT, l.iv, i64c(w, b), ""), "");
    LLVMBasicBlockRef bm = LLVMAppendBasicBlockInContext(E->ctx, E->fn, "plane.inner");
    LLVMBasicBlockRef be = LLVMAppendBasicBlockInContext(E->ctx, E->fn, "plane.edge");
    LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(E->ctx, E->fn, "plane.join");
    LLVMBuildCondBr(E->b, in, bm, be);
    LLVMPositionBuilderAtEnd(E->b, bm);
    plane_vector(w, pl, xs, table, t0, l.iv, plain, mid);
    LLVMBasicBlockRef bm_end = LLVMGetInsertBlock(E->b);
    LLVMBuildBr(E->b, join);
    LLVMPositionBuilderAtEnd(E->b, be);
    plane_vector(w, pl, xs, table, t0, l.iv, masked, edge);
    LLVMBasicBlockRef be_end = LLVMGetInsertBlock(E->b);
    LLVMBuildBr(E->b, join);
    LLVMPositionBuilderAtEnd(E->b, join);
    for (int64_t i = 0; i < w->nacc; i++) {
      LLVMValueRef phi = LLVMBuildPhi(E->b, w->vec, "");
      LLVMValueRef vals[2] = {mid[i], edge[i]};
      LLVMBasicBlockRef from[2] = {bm_end, be_end};
      LLVMAddIncoming(phi, vals, from, 2);
      edge[i] = phi;
    }
  } else {
    plane_vector(w, pl, xs, table, t0, l.iv, masked, edge);
  }
  nnc_cg_loop_close(E->b, &l, 1, edge);
  memcpy(acc, l.carry, sizeof(LLVMValueRef) * (size_t)w->nacc);
}

/* The tap rows kh of output row oh that lie inside the image: [*lo, *hi). */
static void rows_inside(const nnc_kconv_dw *d, int64_t oh, int64_t *lo, int64_t *hi) {
  *lo = d->PH - oh > 0 ? d->PH - oh : 0;
  *hi = d->H + d->PH - oh < d->KH ? d->H + d->PH - oh : d->KH;
}

/* Row mode: output row oh (i64), of whose tap rows [kh0, kh0 + khb) those
 * in [lo, hi) lie inside the image; vectors along the row. */
static void row_products(dw_emitter *w, const planes *pl, int64_t kh0, LLVMValueRef oh, int64_t lo,
                         int64_t hi, LLVMValueRef *acc) {
  const nnc_kconv_dw *d = w->d;
  position ps;
  for (int64_t v = 0; v * d->vl < d->OW; v++) {
    int64_t ow0 = v * d->vl;
    for (int l = 0; l < d->vl; l++)
      ps.dy_ok[l] = ow0 + l < d->OW;
    LLVMValueRef at_row = add64(w, mul64(w, oh, d->OW), i64c(w, ow0));
    for (int64_t j = 0; j < d->ob; j++)
      ps.dy_at[j] = add64(w, pl->dy[j], at_row);
    for (int64_t r = 0; r < d->khb; r++) {
      int64_t kh = kh0 + r;
      LLVMValueRef xr = add64(w, pl->x, mul64(w, add64(w, oh, i64c(w, kh - d->PH)), d->W));
      for (int64_t kw = 0; kw < d->KW; kw++) {
        int64_t off = ow0 + kw - d->PW; /* input column of lane 0 */
        for (int l = 0; l < d->vl; l++)
          ps.x_ok[r][kw][l] =
              kh >= lo && kh < hi && ow0 + l < d->OW && off + l >= 0 && off + l < d->W;
        ps.x_at[r][kw] = add64(w, xr, i64c(w, off));
      }
    }
    products(w, &ps, acc);
  }
}

/* Row mode over the whole plane: the rows whose tap rows [kh0, kh0 +
 * khb) all lie inside the image as one loop, the others one by one. */
static void rows(dw_emitter *w, const planes *pl, int64_t kh0, LLVMValueRef *acc) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  int64_t m0 = d->OH, m1 = d->OH;
  for (int64_t oh = 0; oh < d->OH; oh++) {
    int64_t lo, hi;
    rows_inside(d, oh, &lo, &hi);
    if (lo <= kh0 && hi >= kh0 + d->khb) {
      if (m0 == d->OH) m0 = oh;
      m1 = oh + 1;
    }
  }
  for (int64_t oh = 0; oh < d->OH; oh++) {
    if (oh == m0) {
      nnc_cg_loop l;
      nnc_cg_loop_open(E->b, E->ctx, E->fn, &l, i64c(w, m0), i64c(w, m1), (int)w->nacc, acc,
                       "rows");
      LLVMValueRef next[MAX_ACC];
      memcpy(next, l.carry, sizeof(LLVMValueRef) * (size_t)w->nacc);
      row_products(w, pl, kh0, l.iv, 0, d->KH, next);
      nnc_cg_loop_close(E->b, &l, 1, next);
      memcpy(acc, l.carry, sizeof(LLVMValueRef) * (size_t)w->nacc);
      oh = m1 - 1;
      continue;
    }
    int64_t lo, hi;
    rows_inside(d, oh, &lo, &hi);
    if (lo < kh0 + d->khb && hi > kh0) row_products(w, pl, kh0, i64c(w, oh), lo, hi, acc);
  }
}

/* Images [n0, n0 + group) of item r from block kb's tap rows (kb an
 * i64; in row mode a constant) into its accumulators, which stay in
 * registers over the group. */
static void images_taps(dw_emitter *w, LLVMValueRef n0, int64_t group, const item *r,
                        LLVMValueRef kb) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  LLVMValueRef acc[MAX_ACC];
  for (int64_t a = 0; a < w->nacc; a++)
    acc[a] = load_vec(w, w->scratch, add64(w, r->acc, i64c(w, a * d->vl)));
  nnc_cg_loop l;
  nnc_cg_loop_open(E->b, E->ctx, E->fn, &l, n0, add64(w, n0, i64c(w, group)), (int)w->nacc, acc,
                   "image");
  LLVMValueRef next[MAX_ACC];
  memcpy(next, l.carry, sizeof(LLVMValueRef) * (size_t)w->nacc);
  planes pl;
  for (int64_t j = 0; j < d->ob; j++) {
    LLVMValueRef o = add64(w, r->o0, i64c(w, j));
    pl.dy[j] = mul64(w, add64(w, mul64(w, l.iv, d->O), o), d->OH * d->OW);
  }
  pl.x = mul64(w, add64(w, mul64(w, l.iv, d->C), r->c), d->H * d->W);
  if (d->plane)
    plane_products(w, &pl, kb, next);
  else
    rows(w, &pl, LLVMConstIntGetSExtValue(kb) * d->khb, next);
  nnc_cg_loop_close(E->b, &l, 1, next);
  for (int64_t a = 0; a < w->nacc; a++)
    store_vec(w, l.carry[a], w->scratch, add64(w, r->acc, i64c(w, a * d->vl)));
}

/* Images [n0, n0 + group) into the accumulators of item r. Plane mode:
 * one code for every block of tap rows (their shifts and masks indexed by
 * r->kb); row mode: one copy per block (its taps constant, the padded
 * rows unrolled), chosen by a switch on r->kb. */
static void images(dw_emitter *w, LLVMValueRef n0, int64_t group, const item *r) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  if (d->plane) {
    images_taps(w, n0, group, r, r->kb);
    return;
  }
  int64_t nkb = d->KH / d->khb;
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(E->ctx, E->fn, "taps_done");
  LLVMValueRef sw = LLVMBuildSwitch(E->b, r->kb, done, (unsigned)nkb);
  for (int64_t kb = 0; kb < nkb; kb++) {
    LLVMBasicBlockRef bb = LLVMAppendBasicBlockInContext(E->ctx, E->fn, "taps");
    LLVMAddCase(sw, i64c(w, kb), bb);
    LLVMPositionBuilderAtEnd(E->b, bb);
    images_taps(w, n0, group, r, i64c(w, kb));
    LLVMBuildBr(E->b, done);
  }
  LLVMPositionBuilderAtEnd(E->b, done);
}

/* Chunk g (i64): its accumulators from zero, its images, then each
 * accumulator's lane sum into chunk g's slot of sums (or, with one chunk,
 * into dw). */
static void chunk(dw_emitter *w, LLVMValueRef g) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  int64_t per = d->N / d->chunks;
  nnc_cg_loop l = items_open(w);
  item r = item_of(w, l.iv);
  for (int64_t a = 0; a < w->nacc; a++)
    store_vec(w, LLVMConstNull(w->vec), w->scratch, add64(w, r.acc, i64c(w, a * d->vl)));
  nnc_cg_loop_close(E->b, &l, 1, NULL);

  /* a group of images at a time over all the items (their data in cache,
   * lower_conv_dw.c sizes it), each item's accumulators in registers over
   * the group */
  int64_t group = d->group;
  nnc_cg_loop ln;
  LLVMValueRef n0 = mul64(w, g, per);
  nnc_cg_loop_open(E->b, E->ctx, E->fn, &ln, n0, add64(w, n0, i64c(w, per)), 0, NULL, "group");
  l = items_open(w);
  r = item_of(w, l.iv);
  images(w, ln.iv, group, &r);
  nnc_cg_loop_close(E->b, &l, 1, NULL);
  nnc_cg_loop_close(E->b, &ln, group, NULL);

  l = items_open(w);
  r = item_of(w, l.iv);
  int64_t per_slot = d->O * d->C * w->taps;
  LLVMValueRef slot =
      d->chunks > 1 ? add64(w, i64c(w, per_slot * d->vl), mul64(w, g, per_slot)) : NULL;
  /* a loop over the accumulators: one lane-sum tree of code, not nacc
   * (instruction selection's cost grows faster than a block's size) */
  nnc_cg_loop la;
  nnc_cg_loop_open(E->b, E->ctx, E->fn, &la, i64c(w, 0), i64c(w, w->nacc), 0, NULL, "acc");
  LLVMValueRef s = lane_sum(w, load_vec(w, w->scratch, add64(w, r.acc, mul64(w, la.iv, d->vl))));
  LLVMValueRef o = out_index(w, &r, la.iv);
  LLVMValueRef p = slot ? at(w, w->scratch, add64(w, slot, o)) : at(w, w->dw, o);
  LLVMSetAlignment(LLVMBuildStore(E->b, s, p), 4);
  nnc_cg_loop_close(E->b, &la, 1, NULL);
  nnc_cg_loop_close(E->b, &l, 1, NULL);
}

/* dw = the chunk sums added as a pairwise tree: a binary counter whose
 * level k holds the sum of 2^k consecutive chunks, the older on the left,
 * as nnc_rt_tree_sum adds the ranks' gradients. */
static void chunk_tree(dw_emitter *w) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  int64_t slot = d->O * d->C * w->taps, sums = slot * d->vl;
  nnc_cg_loop l = items_open(w);
  item r = item_of(w, l.iv);
  nnc_cg_loop la; /* over the accumulators, as chunk()'s lane sums */
  nnc_cg_loop_open(E->b, E->ctx, E->fn, &la, i64c(w, 0), i64c(w, w->nacc), 0, NULL, "acc");
  LLVMValueRef o = out_index(w, &r, la.iv), level[MAX_CHUNKS] = {0};
  for (int64_t g = 0; g < d->chunks; g++) {
    LLVMValueRef v =
        LLVMBuildLoad2(E->b, E->tf32, at(w, w->scratch, add64(w, i64c(w, sums + g * slot), o)), "");
    LLVMSetAlignment(v, 4);
    int k = 0;
    for (; level[k]; k++) {
      v = LLVMBuildFAdd(E->b, level[k], v, "");
      level[k] = NULL;
    }
    level[k] = v;
  }
  LLVMValueRef total = NULL;
  for (int k = 0; k < MAX_CHUNKS; k++)
    if (level[k]) total = total ? LLVMBuildFAdd(E->b, level[k], total, "") : level[k];
  LLVMSetAlignment(LLVMBuildStore(E->b, total, at(w, w->dw, o)), 4);
  nnc_cg_loop_close(E->b, &la, 1, NULL);
  nnc_cg_loop_close(E->b, &l, 1, NULL);
}

/* The kernel's body goes into the products' module, as gemm.c's do: it
 * is vectorised and register-blocked as emitted and needs clean-up, not
 * the loop kernels' pipeline; the kernel function calls it. */
LLVMValueRef nnc_ll_emit_conv_dw(emitter *E, const nnc_kernel *k) {
  const nnc_kconv_dw *d = k->conv_dw;
  char name[256];
  snprintf(name, sizeof name, "nnc.conv_dw.%s", k->name);
  LLVMModuleRef mod = E->mod;
  E->mod = E->gemm_mod; /* the body, its intrinsics and mask tables */
  LLVMValueRef impl = nnc_ll_kernel_fn(E, name);
  LLVMSetLinkage(impl, LLVMExternalLinkage);
  LLVMSetVisibility(impl, LLVMDefaultVisibility);
  dw_emitter w = {.E = E, .d = d, .vec = LLVMVectorType(E->tf32, (unsigned)d->vl)};
  w.taps = d->KH * d->KW;
  w.nacc = d->ob * d->khb * d->KW;
  if (w.nacc > MAX_ACC || d->vl > MAX_VL || d->chunks > MAX_CHUNKS || d->N % d->chunks ||
      d->KW > MAX_ACC || d->group < 1 || (d->N / d->chunks) % d->group)
    nnc_ir_bug("codegen: direct weight gradient out of its limits");
  w.dy = nnc_ll_buffer_ptr(E, d->dy_buf);
  w.x = nnc_ll_buffer_ptr(E, d->x_buf);
  w.dw = nnc_ll_buffer_ptr(E, d->dw_buf);
  w.scratch = nnc_ll_buffer_ptr(E, d->scratch_buf);
  nnc_cg_loop lg;
  nnc_cg_loop_open(E->b, E->ctx, impl, &lg, i64c(&w, 0), i64c(&w, d->chunks), 0, NULL, "chunk");
  chunk(&w, lg.iv);
  nnc_cg_loop_close(E->b, &lg, 1, NULL);
  if (d->chunks > 1) chunk_tree(&w);
  LLVMBuildRetVoid(E->b);
  E->mod = mod;
  LLVMValueRef decl = LLVMAddFunction(mod, name, E->kfn_type);
  LLVMValueRef fn = nnc_ll_kernel_fn(E, k->name);
  LLVMValueRef args[3] = {E->arena, E->begin, E->end};
  LLVMBuildCall2(E->b, E->kfn_type, decl, args, 3, "");
  LLVMBuildRetVoid(E->b);
  return fn;
}
