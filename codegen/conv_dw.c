/* conv_dw.c: the LLVM function of a direct convolution weight gradient
 * (kernel.h nnc_kconv_dw, matched by lower_conv_dw.c).
 *
 *   dw[o, c, kh, kw] = sum over n, oh, ow of dy[n, o, oh, ow] * x[n, c, ih, iw],
 *   ih = oh + kh - PH, iw = ow + kw - PW (zero outside the image)
 *
 * read straight from NCHW dy and x: no columns, no transposed dy. An item
 * is one input channel c and a block of ob output channels; its ob * KH *
 * KW outputs have one accumulator vector each, whose lanes are positions
 * along an output row. For each image row of dy (ob masked vector loads
 * per VL positions) and each tap row kh inside the image, the input row
 * shifted by kw - PW is one vector load, masked to the output row and the
 * image (constant masks: they depend only on the vector's place in the row
 * and kw), and goes into ob multiply-adds. Rows whose taps all lie inside
 * the image run as one loop; the padded rows at the top and bottom are
 * emitted one by one with their taps.
 *
 * Order of the sums, the same whatever the batch and thread count: the
 * kernel's split loop runs over items, each item's outputs are summed by
 * one thread. For each of the `chunks` micro-batch chunks, each lane of an
 * accumulator adds its products image by image, row by row, vector by
 * vector (the accumulators stay in the scratch buffer between images, so
 * a thread walks one image across all its items while the image is in
 * cache); at the end of the chunk the lanes are added as a fixed tree
 * (halves, quarters, ...), giving the chunk's sum; the chunk sums are
 * added as the runtime's pairwise tree (nnc_rt_tree_sum). A rank of
 * data-parallel training that holds one chunk runs the same code on its
 * chunk and stores that chunk's sum, so the runtime's tree over the ranks
 * gives the full step's bits. Every operation is an explicit instruction
 * without fast-math flags (llvm.fmuladd, fadd), so the optimiser keeps
 * the order.
 */
#include <string.h>

#include "cg_loop.h"
#include "llvm_internal.h"

enum { MAX_VL = 16, MAX_ACC = 32, MAX_CHUNKS = 64 };

typedef struct dw_emitter {
  emitter *E;
  const nnc_kconv_dw *d;
  LLVMTypeRef vec;
  LLVMValueRef dy, x, dw, scratch;
  int64_t taps, nacc, row_vectors;
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
  emitter *E = w->E;
  unsigned id = LLVMLookupIntrinsicID(name, strlen(name));
  LLVMTypeRef fty = LLVMIntrinsicGetType(E->ctx, id, over, nover);
  LLVMValueRef fn = LLVMGetIntrinsicDeclaration(E->mod, id, over, nover);
  return LLVMBuildCall2(E->b, fty, fn, args, nargs, "");
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

/* One item's place: first output channel, input channel, and the flat
 * index of its accumulators in the scratch buffer. */
typedef struct item {
  LLVMValueRef o0, c, acc;
} item;

static item item_of(dw_emitter *w, LLVMValueRef it) {
  emitter *E = w->E;
  LLVMValueRef C = i64c(w, w->d->C);
  item r;
  r.o0 = mul64(w, LLVMBuildSDiv(E->b, it, C, ""), w->d->ob);
  r.c = LLVMBuildSRem(E->b, it, C, "");
  r.acc = mul64(w, it, w->nacc * w->d->vl);
  return r;
}

/* Accumulator a of an item: output channel o0 + a / taps, tap a % taps;
 * its flat index in dw (and in a chunk's slot of sums). */
static LLVMValueRef out_index(dw_emitter *w, const item *r, int64_t a) {
  const nnc_kconv_dw *d = w->d;
  LLVMValueRef o = add64(w, r->o0, i64c(w, a / w->taps));
  LLVMValueRef oc = add64(w, mul64(w, o, d->C), r->c);
  return add64(w, mul64(w, oc, w->taps), i64c(w, a % w->taps));
}

/* for (it = begin; it < end; it++), the builder in the body. */
static nnc_cg_loop items_open(dw_emitter *w) {
  nnc_cg_loop l;
  nnc_cg_loop_open(w->E->b, w->E->ctx, w->E->fn, &l, w->E->begin, w->E->end, 0, NULL, "item");
  return l;
}

/* Output row oh (taps kh in [lo, hi) inside the image) of image n's
 * item: acc[] += its products. dyrow[j]: flat index of dy[n, o0 + j, 0, 0];
 * xrow: of x[n, c, 0, 0]. */
static void row(dw_emitter *w, LLVMValueRef oh, int64_t lo, int64_t hi, const LLVMValueRef *dyrow,
                LLVMValueRef xrow, LLVMValueRef *acc) {
  const nnc_kconv_dw *d = w->d;
  int vl = d->vl;
  for (int64_t v = 0; v < w->row_vectors; v++) {
    int64_t ow0 = v * vl;
    bool valid[MAX_VL];
    for (int l = 0; l < vl; l++)
      valid[l] = ow0 + l < d->OW;
    LLVMValueRef dyv[MAX_ACC];
    LLVMValueRef at_row = add64(w, mul64(w, oh, d->OW), i64c(w, ow0));
    for (int64_t j = 0; j < d->ob; j++)
      dyv[j] = load_lanes(w, w->dy, add64(w, dyrow[j], at_row), valid);
    for (int64_t kh = lo; kh < hi; kh++) {
      LLVMValueRef ih = add64(w, oh, i64c(w, kh - d->PH));
      LLVMValueRef xr = add64(w, xrow, mul64(w, ih, d->W));
      for (int64_t kw = 0; kw < d->KW; kw++) {
        int64_t off = ow0 + kw - d->PW; /* input column of lane 0 */
        bool any = false;
        for (int l = 0; l < vl; l++) {
          valid[l] = ow0 + l < d->OW && off + l >= 0 && off + l < d->W;
          any |= valid[l];
        }
        if (!any) continue;
        LLVMValueRef xv = load_lanes(w, w->x, add64(w, xr, i64c(w, off)), valid);
        for (int64_t j = 0; j < d->ob; j++) {
          int64_t a = j * w->taps + kh * d->KW + kw;
          acc[a] = fmuladd(w, dyv[j], xv, acc[a]);
        }
      }
    }
  }
}

/* The taps kh of output row oh that lie inside the image: [*lo, *hi). */
static void taps_inside(const nnc_kconv_dw *d, int64_t oh, int64_t *lo, int64_t *hi) {
  *lo = d->PH - oh > 0 ? d->PH - oh : 0;
  *hi = d->H + d->PH - oh < d->KH ? d->H + d->PH - oh : d->KH;
}

/* Image n's products into the accumulators of item r. */
static void image(dw_emitter *w, LLVMValueRef n, const item *r) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  LLVMValueRef acc[MAX_ACC], dyrow[MAX_ACC];
  for (int64_t a = 0; a < w->nacc; a++)
    acc[a] = load_vec(w, w->scratch, add64(w, r->acc, i64c(w, a * d->vl)));
  for (int64_t j = 0; j < d->ob; j++) {
    LLVMValueRef o = add64(w, r->o0, i64c(w, j));
    dyrow[j] = mul64(w, add64(w, mul64(w, n, d->O), o), d->OH * d->OW);
  }
  LLVMValueRef xrow = mul64(w, add64(w, mul64(w, n, d->C), r->c), d->H * d->W);
  /* the rows with every tap inside: [m0, m1) */
  int64_t m0 = d->OH, m1 = d->OH;
  for (int64_t oh = 0; oh < d->OH; oh++) {
    int64_t lo, hi;
    taps_inside(d, oh, &lo, &hi);
    if (lo == 0 && hi == d->KH) {
      if (m0 == d->OH) m0 = oh;
      m1 = oh + 1;
    }
  }
  for (int64_t oh = 0; oh < d->OH; oh++) {
    if (oh == m0 && m1 > m0) {
      nnc_cg_loop l;
      nnc_cg_loop_open(E->b, E->ctx, E->fn, &l, i64c(w, m0), i64c(w, m1), (int)w->nacc, acc,
                       "rows");
      LLVMValueRef next[MAX_ACC];
      memcpy(next, l.carry, sizeof(LLVMValueRef) * (size_t)w->nacc);
      row(w, l.iv, 0, d->KH, dyrow, xrow, next);
      nnc_cg_loop_close(E->b, &l, 1, next);
      memcpy(acc, l.carry, sizeof(LLVMValueRef) * (size_t)w->nacc);
      oh = m1 - 1;
      continue;
    }
    int64_t lo, hi;
    taps_inside(d, oh, &lo, &hi);
    if (lo < hi) row(w, i64c(w, oh), lo, hi, dyrow, xrow, acc);
  }
  for (int64_t a = 0; a < w->nacc; a++)
    store_vec(w, acc[a], w->scratch, add64(w, r->acc, i64c(w, a * d->vl)));
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

  nnc_cg_loop ln;
  LLVMValueRef n0 = mul64(w, g, per);
  nnc_cg_loop_open(E->b, E->ctx, E->fn, &ln, n0, add64(w, n0, i64c(w, per)), 0, NULL, "image");
  l = items_open(w);
  r = item_of(w, l.iv);
  image(w, ln.iv, &r);
  nnc_cg_loop_close(E->b, &l, 1, NULL);
  nnc_cg_loop_close(E->b, &ln, 1, NULL);

  l = items_open(w);
  r = item_of(w, l.iv);
  LLVMValueRef slot = d->chunks > 1 ? add64(w, i64c(w, (d->O / d->ob) * d->C * w->nacc * d->vl),
                                            mul64(w, g, d->O * d->C * w->taps))
                                    : NULL;
  for (int64_t a = 0; a < w->nacc; a++) {
    LLVMValueRef s = lane_sum(w, load_vec(w, w->scratch, add64(w, r.acc, i64c(w, a * d->vl))));
    LLVMValueRef o = out_index(w, &r, a);
    LLVMValueRef p = slot ? at(w, w->scratch, add64(w, slot, o)) : at(w, w->dw, o);
    LLVMSetAlignment(LLVMBuildStore(E->b, s, p), 4);
  }
  nnc_cg_loop_close(E->b, &l, 1, NULL);
}

/* dw = the chunk sums added as a pairwise tree: a binary counter whose
 * level k holds the sum of 2^k consecutive chunks, the older on the left,
 * as nnc_rt_tree_sum adds the ranks' gradients. */
static void chunk_tree(dw_emitter *w) {
  emitter *E = w->E;
  const nnc_kconv_dw *d = w->d;
  int64_t sums = (d->O / d->ob) * d->C * w->nacc * d->vl, slot = d->O * d->C * w->taps;
  nnc_cg_loop l = items_open(w);
  item r = item_of(w, l.iv);
  for (int64_t a = 0; a < w->nacc; a++) {
    LLVMValueRef o = out_index(w, &r, a), level[MAX_CHUNKS] = {0};
    for (int64_t g = 0; g < d->chunks; g++) {
      LLVMValueRef v = LLVMBuildLoad2(E->b, E->tf32,
                                      at(w, w->scratch, add64(w, i64c(w, sums + g * slot), o)), "");
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
  }
  nnc_cg_loop_close(E->b, &l, 1, NULL);
}

LLVMValueRef nnc_ll_emit_conv_dw(emitter *E, const nnc_kernel *k) {
  const nnc_kconv_dw *d = k->conv_dw;
  LLVMValueRef fn = nnc_ll_kernel_fn(E, k->name);
  dw_emitter w = {.E = E, .d = d, .vec = LLVMVectorType(E->tf32, (unsigned)d->vl)};
  w.taps = d->KH * d->KW;
  w.nacc = d->ob * w.taps;
  w.row_vectors = (d->OW + d->vl - 1) / d->vl;
  if (w.nacc > MAX_ACC || d->vl > MAX_VL || d->chunks > MAX_CHUNKS || d->N % d->chunks)
    nnc_ir_bug("codegen: direct weight gradient out of its limits");
  w.dy = nnc_ll_buffer_ptr(E, d->dy_buf);
  w.x = nnc_ll_buffer_ptr(E, d->x_buf);
  w.dw = nnc_ll_buffer_ptr(E, d->dw_buf);
  w.scratch = nnc_ll_buffer_ptr(E, d->scratch_buf);
  nnc_cg_loop lg;
  nnc_cg_loop_open(E->b, E->ctx, fn, &lg, i64c(&w, 0), i64c(&w, d->chunks), 0, NULL, "chunk");
  chunk(&w, lg.iv);
  nnc_cg_loop_close(E->b, &lg, 1, NULL);
  if (d->chunks > 1) chunk_tree(&w);
  LLVMBuildRetVoid(E->b);
  return fn;
}
