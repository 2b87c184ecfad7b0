/* gemm.c: emits shape-specialised matrix-product kernels as LLVM IR.
 *
 * Called by the LLVM backend once per product kernel, with all sizes,
 * strides, layouts and the fused epilogue known at compile time; it adds
 * one function to the module that computes a range of rows of
 *   C = act(A.B + bias)        or        C += act(A.B + bias)
 * and returns it; the caller sets the target attributes and splits rows
 * over threads. The tiling is chosen without LLVM (gemm_plan.c); nothing
 * here depends on the rest of codegen, so the kernels are tested on their
 * own (tests/codegen/gemm).
 *
 * Two register-blocked micro-kernels, chosen by layout:
 *  - outer: B rows are contiguous along n (B not transposed; when it is,
 *    each panel is packed per call into a stack buffer by VL x VL
 *    in-register transposes, or gathered if it does not fit). An
 *    mr x (nv * VL) tile of C lives in mr * nv vector accumulators; each
 *    k step loads nv vectors of B row k, broadcasts the mr elements
 *    A[m..m+mr, k] and does mr * nv FMAs. A may be stored either way (the
 *    broadcast is a scalar load with either stride). Long K is cut into
 *    blocks whose partial sums go through C.
 *  - dot (gemm_dot.c): A [M,K] and B [N,K] are both contiguous along k (x.W^T, the
 *    forward product of a dense layer). An mr x nr tile of C lives in
 *    mr * nr vector accumulators of partial sums over k; each step loads
 *    mr vectors of A and nr of B (no packing, no transposes) and the
 *    partial sums are reduced by a fixed shuffle tree at the end.
 * A chunked product (nnc_cg_gemm.chunks, a weight gradient whose K runs
 * over a batch of G micro-batches) runs either micro-kernel's k loop once
 * per chunk from zero and adds the chunk sums of the tile as a pairwise
 * tree before the epilogue; with long chunks (outer kernel), each chunk
 * is cut into K blocks whose partial sums go to a slot per chunk of a
 * stack scratch, and the tree adds the slots after the last block.
 * Every element of C is computed by the same sequence of operations
 * wherever its row falls in [row_begin, row_end) or in a tile, so results
 * do not depend on how rows are split over threads.
 */
#include "gemm_emit.h"

#include <stdio.h>
#include <string.h>

/* ---- outer-product micro-kernel --------------------------------------- */

static int vec_lanes(emitter *e, const panel *pn, int j) {
  int left = pn->width - j * e->p.vl;
  return left < e->p.vl ? left : e->p.vl;
}

/* Vector j of B row k for this panel: a (masked) load when B is [K,N] or
 * packed, a gather of a strided column when B is stored [N,K] and its
 * panel did not fit the stack buffer. */
static LLVMValueRef outer_b(emitter *e, const panel *pn, LLVMValueRef kl, int j) {
  const nnc_cg_gemm *g = e->g;
  int lanes = vec_lanes(e, pn, j);
  LLVMValueRef n = add64(e, pn->n, i64c(e, (int64_t)j * e->p.vl));
  if (pn->packed) {
    LLVMValueRef idx = add64(e, mul64(e, kl, (int64_t)pn->nv * e->p.vl), i64c(e, j * e->p.vl));
    return load_vec(e, pn->packed, idx, e->p.vl);
  }
  LLVMValueRef k = add64(e, pn->k0, kl);
  if (!g->trans_b) return load_vec(e, e->B, add64(e, mul64(e, k, g->ldb), n), lanes);
  LLVMValueRef v = LLVMConstNull(e->vec);
  for (int l = 0; l < lanes; l++) {
    LLVMValueRef row = mul64(e, add64(e, n, i64c(e, l)), g->ldb);
    LLVMValueRef s = load_f32(e, e->B, add64(e, row, k));
    v = LLVMBuildInsertElement(e->b, v, s, i64c(e, l), "");
  }
  return v;
}

/* One k step (k = k0 + kl): acc[i][j] += A[m+i, k] * B[k, n + j*VL ..].
 * acc is row-major over (i, j); every accumulator sees k in increasing
 * order. */
static void outer_step(emitter *e, const panel *pn, int mr, LLVMValueRef m, LLVMValueRef kl,
                       LLVMValueRef *acc) {
  const nnc_cg_gemm *g = e->g;
  LLVMValueRef bv[MAX_ACC];
  for (int j = 0; j < pn->nv; j++)
    bv[j] = outer_b(e, pn, kl, j);
  LLVMValueRef k = add64(e, pn->k0, kl);
  for (int i = 0; i < mr; i++) {
    LLVMValueRef row = add64(e, m, i64c(e, i));
    LLVMValueRef idx =
        g->trans_a ? add64(e, mul64(e, k, g->lda), row) : add64(e, mul64(e, row, g->lda), k);
    LLVMValueRef a = splat(e, load_f32(e, e->A, idx));
    for (int j = 0; j < pn->nv; j++)
      acc[i * pn->nv + j] = fma_vec(e, a, bv[j], acc[i * pn->nv + j]);
  }
}

typedef struct c_vec {
  LLVMValueRef idx;
  int lanes;
} c_vec;

static LLVMValueRef load_c_vec(emitter *e, void *at) {
  c_vec *c = at;
  return load_vec(e, e->C, c->idx, c->lanes);
}

/* acc[] += the k steps kl in [start, limit) (a multiple of ku of them) in
 * a loop unrolled ku times. */
static void outer_loop(emitter *e, const panel *pn, int mr, LLVMValueRef m, LLVMValueRef start,
                       LLVMValueRef limit, LLVMValueRef *acc) {
  int nacc = mr * pn->nv, ku = e->p.ku;
  loop l;
  loop_open(e, &l, start, limit, nacc, acc, "k");
  LLVMValueRef cur[MAX_ACC];
  memcpy(cur, l.carry, sizeof(LLVMValueRef) * (size_t)nacc);
  for (int u = 0; u < ku; u++)
    outer_step(e, pn, mr, m, add64(e, l.iv, i64c(e, u)), cur);
  loop_close(e, &l, ku, cur);
  memcpy(acc, l.carry, sizeof(LLVMValueRef) * (size_t)nacc);
}

/* Code that runs in the last block of a loop over k blocks only. */
typedef struct in_last {
  LLVMBasicBlockRef pre, then, join;
} in_last;

static in_last in_last_open(emitter *e, const panel *pn) {
  in_last br = {LLVMGetInsertBlock(e->b), LLVMAppendBasicBlockInContext(e->ctx, e->fn, "klast"),
                LLVMAppendBasicBlockInContext(e->ctx, e->fn, "kjoin")};
  LLVMBuildCondBr(e->b, pn->last_v, br.then, br.join);
  LLVMPositionBuilderAtEnd(e->b, br.then);
  return br;
}

static void in_last_close(emitter *e, in_last *br) {
  br->then = LLVMGetInsertBlock(e->b);
  LLVMBuildBr(e->b, br->join);
  LLVMPositionBuilderAtEnd(e->b, br->join);
}

/* acc[] += the k steps [kb, kb + klen) of the pass (k = k0 + kl): the k
 * loop unrolled ku times, then the klen % ku leftover steps. In a loop
 * over k blocks (pn->last_v) the block has kc steps, a multiple of ku,
 * or in the last block tail: the loop runs its whole unrolled steps and
 * the last block alone the leftover ones. Every accumulator sees k in
 * increasing order either way. */
static void outer_sweep(emitter *e, const panel *pn, int mr, LLVMValueRef m, int64_t kb,
                        int64_t klen, LLVMValueRef *acc) {
  int nacc = mr * pn->nv, ku = e->p.ku;
  if (pn->last_v) {
    int64_t tail_main = pn->tail / ku * ku;
    LLVMValueRef limit =
        LLVMBuildSelect(e->b, pn->last_v, i64c(e, tail_main), i64c(e, pn->klen), "");
    outer_loop(e, pn, mr, m, i64c(e, 0), limit, acc);
    if (tail_main == pn->tail) return;
    LLVMValueRef cur[MAX_ACC];
    memcpy(cur, acc, sizeof(LLVMValueRef) * (size_t)nacc);
    in_last br = in_last_open(e, pn);
    for (int64_t k = tail_main; k < pn->tail; k++)
      outer_step(e, pn, mr, m, i64c(e, k), cur);
    in_last_close(e, &br);
    for (int a = 0; a < nacc; a++) {
      LLVMValueRef phi = LLVMBuildPhi(e->b, e->vec, "");
      LLVMValueRef vals[2] = {acc[a], cur[a]};
      LLVMBasicBlockRef from[2] = {br.pre, br.then};
      LLVMAddIncoming(phi, vals, from, 2);
      acc[a] = phi;
    }
    return;
  }
  int64_t kmain = klen <= 4 * ku ? 0 : klen / ku * ku; /* short K: straight line */
  if (kmain > 0) outer_loop(e, pn, mr, m, i64c(e, kb), i64c(e, kb + kmain), acc);
  for (int64_t k = kmain; k < klen; k++)
    outer_step(e, pn, mr, m, i64c(e, kb + k), acc);
}

/* Where the tile's sums start: zero, or C's value (starts_from_c); in a
 * loop over k blocks, zero in the first block only. */
static LLVMValueRef outer_start(emitter *e, const panel *pn, LLVMValueRef idx, int lanes) {
  if (pn->first_v && !e->p.fold)
    return LLVMBuildSelect(e->b, pn->first_v, LLVMConstNull(e->vec), load_vec(e, e->C, idx, lanes),
                           "");
  return starts_from_c(e, pn) ? load_vec(e, e->C, idx, lanes) : LLVMConstNull(e->vec);
}

static void outer_store(emitter *e, const panel *pn, int mr, LLVMValueRef m, LLVMValueRef *acc,
                        bool last) {
  const nnc_cg_gemm *g = e->g;
  for (int j = 0; j < pn->nv; j++) {
    int lanes = vec_lanes(e, pn, j);
    LLVMValueRef n = add64(e, pn->n, i64c(e, (int64_t)j * e->p.vl));
    LLVMValueRef bias_v = g->bias && last ? load_vec(e, e->bias, n, lanes) : NULL;
    for (int i = 0; i < mr; i++) {
      c_vec at = {add64(e, mul64(e, add64(e, m, i64c(e, i)), g->ldc), n), lanes};
      LLVMValueRef mask_v = mask_at(e, last, at.idx, lanes, true);
      LLVMValueRef v = finish(e, last, acc[i * pn->nv + j], bias_v, mask_v, load_c_vec, &at);
      if (e->st && last)
        e->st->store(e->st->ctx, e->b, v, at.idx, lanes);
      else
        store_vec(e, v, e->C, at.idx, lanes);
    }
  }
}

/* A tile of a chunked product in K blocks (pn->chunk_v): its chunk's sum
 * starts from zero in the chunk's first block and from the chunk's slot
 * of the scratch in the others, and goes back to the slot after every
 * block but the last chunk's last; there the earlier chunks' slots and
 * the registers are added as the tree, as outer_tile adds the chunks of
 * an unblocked pass, and the epilogue writes C (once). */
static void outer_tile_slots(emitter *e, const panel *pn, int mr, LLVMValueRef m) {
  const nnc_cg_gemm *g = e->g;
  int nacc = mr * pn->nv;
  LLVMValueRef acc[MAX_ACC], at[MAX_ACC], cur[MAX_ACC];
  LLVMValueRef base = add64(e, mul64(e, LLVMBuildSub(e->b, m, pn->m0, ""), g->N), pn->n);
  LLVMValueRef mine = add64(e, base, mul64(e, pn->chunk_v, e->slot));
  for (int i = 0; i < mr; i++)
    for (int j = 0; j < pn->nv; j++) {
      int a = i * pn->nv + j;
      LLVMValueRef off = i64c(e, i * g->N + (int64_t)j * e->p.vl);
      at[a] = add64(e, base, off);
      cur[a] = add64(e, mine, off);
      LLVMValueRef old = load_vec(e, e->scratch, cur[a], vec_lanes(e, pn, j));
      acc[a] = LLVMBuildSelect(e->b, pn->first_v, LLVMConstNull(e->vec), old, "");
    }
  outer_sweep(e, pn, mr, m, 0, pn->klen, acc);
  LLVMValueRef last_chunk = LLVMBuildICmp(e->b, LLVMIntEQ, pn->chunk_v, i64c(e, g->chunks - 1), "");
  LLVMBasicBlockRef fin = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "kfinal");
  LLVMBasicBlockRef keep = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "kslot");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "kdone");
  LLVMBuildCondBr(e->b, LLVMBuildAnd(e->b, pn->last_v, last_chunk, ""), fin, keep);
  LLVMPositionBuilderAtEnd(e->b, keep);
  for (int a = 0; a < nacc; a++)
    store_vec(e, acc[a], e->scratch, cur[a], vec_lanes(e, pn, a % pn->nv));
  LLVMBuildBr(e->b, done);
  LLVMPositionBuilderAtEnd(e->b, fin);
  for (int a = 0; a < nacc; a++) {
    chunk_tree tree = {.n = 1};
    LLVMValueRef v;
    for (int64_t c = 0; c + 1 < g->chunks; c++) {
      v = load_vec(e, e->scratch, add64(e, at[a], i64c(e, c * e->slot)),
                   vec_lanes(e, pn, a % pn->nv));
      tree_push(e, &tree, &v);
    }
    tree_push(e, &tree, &acc[a]);
    tree_total(e, &tree, &acc[a]);
  }
  outer_store(e, pn, mr, m, acc, true);
  LLVMBuildBr(e->b, done);
  LLVMPositionBuilderAtEnd(e->b, done);
}

/* Two chunks of an unblocked chunked pass at once: acc[0..nacc) += the k
 * steps [kb, kb + klen), acc[nacc..2 nacc) += those of the next chunk,
 * [kb + klen, kb + 2 klen), in one loop (each accumulator's steps in
 * increasing k, as outer_sweep does them one chunk at a time). The two
 * chunk sums then go to the tree in registers, with no chunk sum stored
 * and reloaded between the chunks. */
static void outer_sweep_pair(emitter *e, const panel *pn, int mr, LLVMValueRef m, int64_t kb,
                             int64_t klen, LLVMValueRef *acc) {
  int nacc = mr * pn->nv, ku = e->p.ku;
  int64_t kmain = klen <= 4 * ku ? 0 : klen / ku * ku; /* short K: straight line */
  if (kmain > 0) {
    loop l;
    loop_open(e, &l, i64c(e, kb), i64c(e, kb + kmain), 2 * nacc, acc, "k2");
    LLVMValueRef cur[MAX_ACC];
    memcpy(cur, l.carry, sizeof(LLVMValueRef) * (size_t)(2 * nacc));
    for (int u = 0; u < ku; u++) {
      LLVMValueRef k = add64(e, l.iv, i64c(e, u));
      outer_step(e, pn, mr, m, k, cur);
      outer_step(e, pn, mr, m, add64(e, k, i64c(e, klen)), cur + nacc);
    }
    loop_close(e, &l, ku, cur);
    memcpy(acc, l.carry, sizeof(LLVMValueRef) * (size_t)(2 * nacc));
  }
  for (int64_t k = kmain; k < klen; k++) {
    outer_step(e, pn, mr, m, i64c(e, kb + k), acc);
    outer_step(e, pn, mr, m, i64c(e, kb + klen + k), acc + nacc);
  }
}

/* Whether a tile's chunks run two at a time (outer_sweep_pair): both
 * chunks' accumulators, their B vectors and two broadcasts fit the
 * registers. */
static bool pairs_fit(emitter *e, const panel *pn, int mr) {
  int nacc = mr * pn->nv;
  return 2 * nacc <= MAX_ACC && 2 * nacc + 2 * pn->nv + 2 <= e->p.regs;
}

static void outer_tile(emitter *e, const panel *pn, int mr, LLVMValueRef m) {
  const nnc_cg_gemm *g = e->g;
  int nacc = mr * pn->nv;
  if (pn->chunk_v) {
    outer_tile_slots(e, pn, mr, m);
    return;
  }
  LLVMValueRef acc[MAX_ACC];
  int64_t chunks = pass_chunks(e, pn), klen = pn->klen / chunks;
  chunk_tree tree = {.n = nacc};
  int64_t step = chunks > 1 && pairs_fit(e, pn, mr) ? 2 : 1;
  for (int64_t c = 0; c < chunks; c += step) {
    int now = c + step <= chunks ? (int)step : 1; /* chunks in this sweep */
    for (int h = 0; h < now; h++)
      for (int i = 0; i < mr; i++)
        for (int j = 0; j < pn->nv; j++) {
          LLVMValueRef n = add64(e, pn->n, i64c(e, (int64_t)j * e->p.vl));
          LLVMValueRef idx = add64(e, mul64(e, add64(e, m, i64c(e, i)), g->ldc), n);
          acc[h * nacc + i * pn->nv + j] = outer_start(e, pn, idx, vec_lanes(e, pn, j));
        }
    if (now == 2) {
      outer_sweep_pair(e, pn, mr, m, c * klen, klen, acc);
      tree_push(e, &tree, acc);
      tree_push(e, &tree, acc + nacc);
      continue;
    }
    outer_sweep(e, pn, mr, m, c * klen, klen, acc);
    if (chunks > 1) tree_push(e, &tree, acc);
  }
  if (chunks > 1) tree_total(e, &tree, acc);
  if (!pn->last_v) {
    outer_store(e, pn, mr, m, acc, pn->last);
    return;
  }
  /* the epilogue after the last block, a partial sum before */
  LLVMBasicBlockRef epi = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "kepi");
  LLVMBasicBlockRef partial = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "kpartial");
  LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "kdone");
  LLVMBuildCondBr(e->b, pn->last_v, epi, partial);
  LLVMPositionBuilderAtEnd(e->b, epi);
  outer_store(e, pn, mr, m, acc, true);
  LLVMBuildBr(e->b, done);
  LLVMPositionBuilderAtEnd(e->b, partial);
  outer_store(e, pn, mr, m, acc, false);
  LLVMBuildBr(e->b, done);
  LLVMPositionBuilderAtEnd(e->b, done);
}

/* ---- packing B stored [N,K] for the outer kernel ---------------------- */

/* In-register transpose of VL vectors of VL lanes: stage h pairs rows j and
 * j+h and swaps the off-diagonal h x h blocks (the same P/Q shuffles as the
 * reduction tree), so after h = VL/2 .. 1 vector k holds old lane k. */
static void transpose(emitter *e, LLVMValueRef *v) {
  int vl = e->p.vl;
  for (int h = vl / 2; h >= 1; h /= 2) {
    int p[MAX_LANES], q[MAX_LANES];
    for (int l = 0; l < vl; l++) {
      int blk = l / (2 * h), r = l % (2 * h);
      p[l] = r < h ? blk * 2 * h + r : vl + blk * 2 * h + r - h;
      q[l] = r < h ? blk * 2 * h + h + r : vl + blk * 2 * h + r;
    }
    for (int j = 0; j < vl; j++) {
      if (j & h) continue;
      LLVMValueRef x = v[j], y = v[j + h];
      v[j] = shuffle(e, x, y, p, vl);
      v[j + h] = shuffle(e, x, y, q, vl);
    }
  }
}

/* The product's function that packs one full VL x VL block, (src, ldb,
 * dst, stride): dst[t * stride + j] = src[j * ldb + t], VL loads, one
 * transpose, VL stores. Every full block of every panel calls it, so the
 * transpose is emitted once per product, not once per panel (shuffles are
 * the slowest IR to select; fashion_cnn's dense 1 product packs a panel of
 * 48 columns and one of 16). Named after the product (PRODUCT.packVL):
 * the JIT's parts make their functions global symbols, so one name per
 * module would be defined twice. Internal; the caller of nnc_cg_emit_gemm
 * gives it the target's attributes with the product's
 * (nnc_cg_gemm_helpers, which finds it by that name). */
static LLVMValueRef pack_block_fn(emitter *e) {
  char name[320];
  size_t len;
  snprintf(name, sizeof name, "%s.pack%d", LLVMGetValueName2(e->fn, &len), e->p.vl);
  LLVMValueRef fn = LLVMGetNamedFunction(e->mod, name);
  if (fn) return fn;
  LLVMTypeRef params[4] = {e->ptr, e->i64, e->ptr, e->i64};
  fn = LLVMAddFunction(e->mod, name, LLVMFunctionType(LLVMVoidTypeInContext(e->ctx), params, 4, 0));
  LLVMSetLinkage(fn, LLVMInternalLinkage);
  unsigned noinline = LLVMGetEnumAttributeKindForName("noinline", 8);
  LLVMAddAttributeAtIndex(fn, LLVMAttributeFunctionIndex,
                          LLVMCreateEnumAttribute(e->ctx, noinline, 0));
  emitter h = *e;
  h.fn = fn;
  h.b = LLVMCreateBuilderInContext(e->ctx);
  LLVMPositionBuilderAtEnd(h.b, LLVMAppendBasicBlockInContext(e->ctx, fn, "entry"));
  LLVMValueRef src = LLVMGetParam(fn, 0), ldb = LLVMGetParam(fn, 1), dst = LLVMGetParam(fn, 2),
               stride = LLVMGetParam(fn, 3), v[MAX_LANES];
  for (int t = 0; t < h.p.vl; t++)
    v[t] = load_vec(&h, src, LLVMBuildMul(h.b, i64c(&h, t), ldb, ""), h.p.vl);
  transpose(&h, v);
  for (int t = 0; t < h.p.vl; t++)
    store_vec(&h, v[t], dst, LLVMBuildMul(h.b, i64c(&h, t), stride, ""), h.p.vl);
  LLVMBuildRetVoid(h.b);
  LLVMDisposeBuilder(h.b);
  return fn;
}

void nnc_cg_gemm_helpers(LLVMValueRef def, void (*attrs)(void *ctx, LLVMValueRef fn), void *ctx) {
  size_t len;
  const char *name = LLVMGetValueName2(def, &len);
  /* added to the module after def, while it was emitted, and named
   * DEF.something (pack_block_fn) */
  for (LLVMValueRef f = LLVMGetNextFunction(def); f; f = LLVMGetNextFunction(f)) {
    size_t flen;
    const char *fname = LLVMGetValueName2(f, &flen);
    if (flen > len && !strncmp(fname, name, len) && fname[len] == '.' && !LLVMIsDeclaration(f))
      attrs(ctx, f);
  }
}

/* Vector jv of a panel (jv: i64) for one chunk of `lanes` k: its VL rows
 * of B loaded along k, transposed and stored as rows of the panel. Rows
 * past the panel's width (`rows` of the VL are in it) are zero. */
static void pack_vector(emitter *e, const panel *pn, LLVMValueRef kl, int lanes, LLVMValueRef jv,
                        int rows) {
  int vl = e->p.vl;
  int64_t stride = (int64_t)pn->nv * vl;
  LLVMValueRef first = add64(e, pn->n, mul64(e, jv, vl)), v[MAX_LANES];
  if (lanes == vl && rows == vl) { /* a full block: the module's function */
    LLVMValueRef fn = pack_block_fn(e);
    LLVMValueRef src =
        elem_ptr(e, e->B, add64(e, mul64(e, first, e->g->ldb), add64(e, pn->k0, kl)));
    LLVMValueRef dst = elem_ptr(e, pn->packed, add64(e, mul64(e, kl, stride), mul64(e, jv, vl)));
    LLVMValueRef args[4] = {src, i64c(e, e->g->ldb), dst, i64c(e, stride)};
    LLVMBuildCall2(e->b, LLVMGlobalGetValueType(fn), fn, args, 4, "");
    return;
  }
  for (int t = 0; t < vl; t++) {
    LLVMValueRef row = add64(e, first, i64c(e, t));
    LLVMValueRef idx = add64(e, mul64(e, row, e->g->ldb), add64(e, pn->k0, kl));
    v[t] = t < rows ? load_vec(e, e->B, idx, lanes) : LLVMConstNull(e->vec);
  }
  transpose(e, v);
  for (int t = 0; t < lanes; t++) {
    LLVMValueRef k = add64(e, kl, i64c(e, t));
    store_vec(e, v[t], pn->packed, add64(e, mul64(e, k, stride), mul64(e, jv, vl)), vl);
  }
}

/* packed[kl + t][j] = B[n + j, k0 + kl + t] for one chunk of `lanes` k:
 * the panel's full vectors in a loop (one transpose of code, not one per
 * vector: shuffles are the slowest IR to select), then the partial one.
 * Columns past the panel's width are zero. */
static void pack_chunk(emitter *e, const panel *pn, LLVMValueRef kl, int lanes) {
  int vl = e->p.vl, full = pn->width / vl;
  if (full == 1) pack_vector(e, pn, kl, lanes, i64c(e, 0), vl);
  if (full > 1) {
    loop l;
    loop_open(e, &l, i64c(e, 0), i64c(e, full), 0, NULL, "packv");
    pack_vector(e, pn, kl, lanes, l.iv, vl);
    loop_close(e, &l, 1, NULL);
  }
  for (int jv = full; jv < pn->nv; jv++)
    pack_vector(e, pn, kl, lanes, i64c(e, jv), pn->width - jv * vl);
}

/* The block's k in chunks of VL, then the partial chunk. In a loop over k
 * blocks (pn->last_v) every block but the last has kc k, a multiple of
 * VL: only the last block can have a partial chunk. */
static void pack_panel(emitter *e, const panel *pn) {
  int vl = e->p.vl;
  int64_t len = pn->last_v ? pn->tail : pn->klen, full = len / vl * vl;
  LLVMValueRef limit = pn->last_v
                           ? LLVMBuildSelect(e->b, pn->last_v, i64c(e, full), i64c(e, pn->klen), "")
                           : i64c(e, full);
  if (pn->last_v || full > 0) {
    loop l;
    loop_open(e, &l, i64c(e, 0), limit, 0, NULL, "pack");
    pack_chunk(e, pn, l.iv, vl);
    loop_close(e, &l, vl, NULL);
  }
  if (len % vl == 0) return;
  in_last br = {0};
  if (pn->last_v) br = in_last_open(e, pn);
  pack_chunk(e, pn, i64c(e, full), (int)(len % vl));
  if (pn->last_v) in_last_close(e, &br);
}

/* ---- rows and panels ---------------------------------------------------- */

static void tile(emitter *e, const panel *pn, int mr, LLVMValueRef m) {
  if (e->p.kind == NNC_CG_GEMM_DOT)
    nnc_gemm_dot_tile(e, pn, mr, m);
  else
    outer_tile(e, pn, mr, m);
}

/* Whether a range's remainder after its full tiles of mr rows can need a
 * tile of `size` rows (a power of two below mr; the remainder is done in
 * its binary digits). With all_rows the remainder is M % mr. When M is a
 * multiple of row_align a range's length is q * row_align; when it is
 * not, the range ending at M has length q * row_align + M % row_align.
 * (q * row_align) % mr repeats with period mr in q, so q < mr covers all;
 * no range is longer than M. */
static bool remainder_tile(const nnc_cg_gemm *g, int mr, int size) {
  if (g->all_rows) return (g->M % mr) & size;
  if (size > g->M) return false; /* no range is that long */
  if (g->row_align <= 1) return true;
  int64_t tails[2] = {0, g->M % g->row_align};
  for (int t = 0; t < 2; t++)
    for (int64_t q = 0; q < mr && q * g->row_align + tails[t] <= g->M; q++)
      if ((q * g->row_align + tails[t]) % mr & size) return true;
  return false;
}

/* Whether any row range can leave rows after its full tiles of mr. */
static bool any_remainder(const nnc_cg_gemm *g, int mr) {
  for (int size = 1; size < mr; size *= 2)
    if (remainder_tile(g, mr, size)) return true;
  return false;
}

/* Rows [m0, m1) of one panel: full tiles of pn->mr rows, then at most one
 * tile of each power of two below pn->mr for the remainder (only those
 * some range can need). A row's tile size changes only the grouping,
 * never the arithmetic of its elements. */
static void rows(emitter *e, const panel *pn, LLVMValueRef m0, LLVMValueRef m1) {
  int mr = pn->mr;
  LLVMValueRef m = m0;
  if (e->g->M >= mr) { /* else no range holds a full tile */
    loop l;
    LLVMValueRef limit = LLVMBuildSub(e->b, m1, i64c(e, mr - 1), "");
    loop_open(e, &l, m0, limit, 0, NULL, "m");
    tile(e, pn, mr, l.iv);
    loop_close(e, &l, mr, NULL);
    m = l.iv;
  }
  int top = 1;
  while (top * 2 < mr)
    top *= 2;
  for (int rows_left = top; rows_left >= 1 && mr > 1; rows_left /= 2) {
    if (!remainder_tile(e->g, mr, rows_left)) continue;
    LLVMBasicBlockRef pre = LLVMGetInsertBlock(e->b);
    LLVMBasicBlockRef then = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "mrest");
    LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(e->ctx, e->fn, "mjoin");
    LLVMValueRef left = LLVMBuildSub(e->b, m1, m, "");
    LLVMBuildCondBr(e->b, LLVMBuildICmp(e->b, LLVMIntSGE, left, i64c(e, rows_left), ""), then,
                    join);
    LLVMPositionBuilderAtEnd(e->b, then);
    tile(e, pn, rows_left, m);
    LLVMValueRef m_next = add64(e, m, i64c(e, rows_left));
    LLVMBasicBlockRef then_end = LLVMGetInsertBlock(e->b);
    LLVMBuildBr(e->b, join);
    LLVMPositionBuilderAtEnd(e->b, join);
    LLVMValueRef phi = LLVMBuildPhi(e->b, e->i64, "");
    LLVMValueRef vals[2] = {m, m_next};
    LLVMBasicBlockRef from[2] = {pre, then_end};
    LLVMAddIncoming(phi, vals, from, 2);
    m = phi;
  }
}

/* A panel of `width` columns starting at n. Narrow panels get taller
 * tiles so the tile still has enough independent accumulators. */
static panel make_panel(emitter *e, int width, LLVMValueRef n, const panel *ks) {
  panel pn = *ks;
  pn.width = width;
  pn.nv = e->p.kind == NNC_CG_GEMM_DOT ? width : (width + e->p.vl - 1) / e->p.vl;
  int full = e->p.kind == NNC_CG_GEMM_DOT ? e->p.nr : e->p.nr * e->p.vl;
  pn.mr = e->p.mr;
  if (width < full) {
    int budget = e->p.mr * e->p.nr; /* accumulators of a full tile */
    pn.mr = budget / pn.nv;
    if (pn.mr > MAX_ROWS) pn.mr = MAX_ROWS;
    if (pn.mr * pn.nv + pn.nv + 2 > e->p.regs) pn.mr = e->p.mr;
    /* The tallest height from there down to a full tile's for which the
     * row promise leaves no remainder: one tile shape for the panel
     * instead of two (compile time; narrow panels are a small share). */
    for (int h = pn.mr; h >= e->p.mr; h--)
      if (!any_remainder(e->g, h)) {
        pn.mr = h;
        break;
      }
  }
  pn.n = n;
  pn.packed = NULL;
  if (e->pack_buf) {
    pn.packed = e->pack_buf;
    pack_panel(e, &pn);
  }
  return pn;
}

/* Every panel of columns over rows [m0, m1) for one k block (ks). */
static void panels(emitter *e, LLVMValueRef m0, LLVMValueRef m1, const panel *ks) {
  int64_t width = e->p.kind == NNC_CG_GEMM_DOT ? e->p.nr : (int64_t)e->p.nr * e->p.vl;
  int64_t nfull = e->g->N / width, rest = e->g->N % width;
  if (nfull > 0) {
    loop nb;
    loop_open(e, &nb, i64c(e, 0), i64c(e, nfull * width), 0, NULL, "n");
    panel pn = make_panel(e, (int)width, nb.iv, ks);
    rows(e, &pn, m0, m1);
    loop_close(e, &nb, width, NULL);
  }
  if (rest > 0) {
    panel pn = make_panel(e, (int)rest, i64c(e, nfull * width), ks);
    rows(e, &pn, m0, m1);
  }
}

/* Cache blocks of mc rows; within one, k blocks in increasing order (the
 * first and last known at run time: they start from zero and end in the
 * epilogue; a chunked product's run chunk by chunk, each chunk's from
 * zero), and within those every panel sweeps the block's rows so the
 * block of A stays in L2 while B's panels stream past it. */
static void body(emitter *e) {
  const nnc_cg_gemm *g = e->g;
  int64_t kc = e->p.kc, nblocks = kc > 0 ? (g->K + kc - 1) / kc : 1;
  loop mb;
  loop_open(e, &mb, e->row_begin, e->row_end, 0, NULL, "mb");
  LLVMValueRef end = add64(e, mb.iv, i64c(e, e->p.mc));
  LLVMValueRef lt = LLVMBuildICmp(e->b, LLVMIntSLT, end, e->row_end, "");
  LLVMValueRef m1 = LLVMBuildSelect(e->b, lt, end, e->row_end, "");
  panel ks = {0};
  if (e->scratch) { /* a loop over the chunks, in each one over its blocks */
    int64_t klen = g->K / g->chunks;
    nblocks = (klen + kc - 1) / kc;
    loop ch, kb;
    loop_open(e, &ch, i64c(e, 0), i64c(e, g->chunks), 0, NULL, "chunk");
    loop_open(e, &kb, i64c(e, 0), i64c(e, klen), 0, NULL, "kb");
    ks.chunk_v = ch.iv;
    ks.m0 = mb.iv;
    ks.k0 = add64(e, mul64(e, ch.iv, klen), kb.iv);
    ks.klen = kc;
    ks.tail = klen - (nblocks - 1) * kc;
    ks.first_v = LLVMBuildICmp(e->b, LLVMIntEQ, kb.iv, i64c(e, 0), "");
    ks.last_v = LLVMBuildICmp(e->b, LLVMIntSGE, kb.iv, i64c(e, (nblocks - 1) * kc), "");
    panels(e, mb.iv, m1, &ks);
    loop_close(e, &kb, kc, NULL);
    loop_close(e, &ch, 1, NULL);
  } else if (nblocks == 1) {
    ks.k0 = i64c(e, 0);
    ks.klen = ks.tail = g->K;
    ks.first = ks.last = true;
    panels(e, mb.iv, m1, &ks);
  } else { /* one loop over the blocks: first and last known at run time */
    loop kb;
    loop_open(e, &kb, i64c(e, 0), i64c(e, g->K), 0, NULL, "kb");
    ks.k0 = kb.iv;
    ks.klen = kc;
    ks.tail = g->K - (nblocks - 1) * kc;
    ks.first_v = LLVMBuildICmp(e->b, LLVMIntEQ, kb.iv, i64c(e, 0), "");
    ks.last_v = LLVMBuildICmp(e->b, LLVMIntSGE, kb.iv, i64c(e, (nblocks - 1) * kc), "");
    panels(e, mb.iv, m1, &ks);
    loop_close(e, &kb, kc, NULL);
  }
  loop_close(e, &mb, e->p.mc, NULL);
  LLVMBuildRetVoid(e->b);
}

LLVMValueRef nnc_cg_gemm_fn(LLVMModuleRef mod, const char *name, bool extra, LLVMValueRef args[7],
                            LLVMBuilderRef *b) {
  LLVMContextRef ctx = LLVMGetModuleContext(mod);
  LLVMTypeRef ptr = LLVMPointerTypeInContext(ctx, 0), i64 = LLVMInt64TypeInContext(ctx);
  LLVMTypeRef params[7] = {ptr, ptr, ptr, ptr, i64, i64, ptr};
  unsigned n = extra ? 7 : 6;
  LLVMTypeRef fty = LLVMFunctionType(LLVMVoidTypeInContext(ctx), params, n, 0);
  LLVMValueRef fn = LLVMAddFunction(mod, name, fty);
  for (unsigned i = 0; i < n; i++)
    args[i] = LLVMGetParam(fn, i);
  /* A, B and bias are read-only and never alias C (the planner gives every
   * tensor its own range of the arena). */
  unsigned noalias = LLVMGetEnumAttributeKindForName("noalias", 7);
  unsigned nocapture = LLVMGetEnumAttributeKindForName("nocapture", 9);
  for (unsigned i = 0; i < 4; i++) {
    LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(ctx, noalias, 0));
    LLVMAddAttributeAtIndex(fn, i + 1, LLVMCreateEnumAttribute(ctx, nocapture, 0));
  }
  *b = LLVMCreateBuilderInContext(ctx);
  LLVMPositionBuilderAtEnd(*b, LLVMAppendBasicBlockInContext(ctx, fn, "entry"));
  return fn;
}

/* Does g, tiled as p, read B stored [N,K] from a packed copy of each
 * panel (one that fits in PACK_BYTES of stack)? */
static bool packs_b(const nnc_cg_gemm *g, const nnc_cg_gemm_plan *p) {
  return p->kind == NNC_CG_GEMM_OUTER && g->trans_b && g->K > 0 &&
         p->kc * p->nr * p->vl * 4 <= PACK_BYTES;
}

bool nnc_cg_gemm_packs_b(const nnc_cg_gemm *g) {
  nnc_cg_gemm_plan p = nnc_cg_gemm_plan_for(g);
  return !nnc_cg_gemm_bf16_applies(g) && packs_b(g, &p);
}

LLVMValueRef nnc_cg_emit_gemm(LLVMModuleRef mod, const char *name, const nnc_cg_gemm *g) {
  return nnc_cg_emit_gemm_to(mod, name, g, NULL);
}

LLVMValueRef nnc_cg_emit_gemm_to(LLVMModuleRef mod, const char *name, const nnc_cg_gemm *g,
                                 const nnc_cg_gemm_store *st) {
  if (!st && nnc_cg_gemm_bf16_applies(g)) return nnc_cg_emit_gemm_bf16(mod, name, g);
  emitter e;
  memset(&e, 0, sizeof e);
  e.st = st;
  e.ctx = LLVMGetModuleContext(mod);
  e.mod = mod;
  e.g = g;
  e.p = nnc_cg_gemm_plan_for(g);
  /* A fused epilogue reads and writes rows of other tensors: cache blocks
   * of one row tile, so each tile sweeps all panels along its rows
   * (contiguous streams) rather than each panel sweeping all rows. The
   * grouping of rows never changes an element's arithmetic. */
  if (st) e.p.mc = e.p.mr;
  e.f32 = LLVMFloatTypeInContext(e.ctx);
  e.i1 = LLVMInt1TypeInContext(e.ctx);
  e.i32 = LLVMInt32TypeInContext(e.ctx);
  e.i64 = LLVMInt64TypeInContext(e.ctx);
  e.ptr = LLVMPointerTypeInContext(e.ctx, 0);
  e.vec = vec_of(&e, e.p.vl);

  LLVMValueRef args[7];
  e.fn = nnc_cg_gemm_fn(mod, name, st != NULL, args, &e.b);
  if (st) st->begin(st->ctx, e.b, args[6]);
  e.A = args[0];
  e.B = args[1];
  e.bias = args[2];
  e.C = args[3];
  e.row_begin = args[4];
  e.row_end = args[5];
  /* The outer kernel reads B stored [N,K] from a packed copy of each panel
   * when one fits in PACK_BYTES of stack; bigger ones are gathered. */
  int64_t panel_floats = e.p.kc * e.p.nr * e.p.vl;
  if (packs_b(g, &e.p)) {
    e.pack_buf = LLVMBuildAlloca(e.b, LLVMArrayType2(e.f32, (uint64_t)panel_floats), "bpack");
    LLVMSetAlignment(e.pack_buf, 64);
  }
  /* A chunked product in K blocks keeps its chunks' partial sums in a
   * slot each of a cache block's rows (gemm_plan.h). */
  if (g->chunks > 1 && e.p.kc < g->K && g->M > 0 && g->N > 0) {
    e.slot = (e.p.mc < g->M ? e.p.mc : g->M) * g->N;
    uint64_t n = (uint64_t)(g->chunks * e.slot);
    e.scratch = LLVMBuildAlloca(e.b, LLVMArrayType2(e.f32, n), "chunks");
    LLVMSetAlignment(e.scratch, 64);
  }
  if (g->all_rows) {
    e.row_begin = i64c(&e, 0);
    e.row_end = i64c(&e, g->M);
  }
  if (g->M > 0 && g->N > 0)
    body(&e);
  else
    LLVMBuildRetVoid(e.b);
  LLVMDisposeBuilder(e.b);
  return e.fn;
}
