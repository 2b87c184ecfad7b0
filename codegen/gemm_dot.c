/* gemm_dot.c: the dot-product micro-kernel of gemm.c (A [M,K] and B [N,K]
 * both contiguous along k): partial sums per lane, reduced by a fixed
 * shuffle tree. */
#include "gemm_emit.h"

/* ---- dot-product micro-kernel ------------------------------------------ */

/* One chunk of VL (or `lanes`) k values at k = pn->k0 + kl: acc[i][j] +=
 * A[m+i, k..] * B[n+j, k..] lane-wise; lane l of every accumulator sums
 * the k with k - k0 = l mod VL. */
static void dot_step(emitter *e, const panel *pn, int mr, LLVMValueRef m, LLVMValueRef kl,
                     int lanes, LLVMValueRef *acc) {
  const nnc_cg_gemm *g = e->g;
  LLVMValueRef k0 = add64(e, pn->k0, kl);
  LLVMValueRef bv[MAX_ACC];
  for (int j = 0; j < pn->nv; j++) {
    LLVMValueRef row = add64(e, pn->n, i64c(e, j));
    bv[j] = load_vec(e, e->B, add64(e, mul64(e, row, g->ldb), k0), lanes);
  }
  for (int i = 0; i < mr; i++) {
    LLVMValueRef row = add64(e, m, i64c(e, i));
    LLVMValueRef a = load_vec(e, e->A, add64(e, mul64(e, row, g->lda), k0), lanes);
    for (int j = 0; j < pn->nv; j++)
      acc[i * pn->nv + j] = fma_vec(e, a, bv[j], acc[i * pn->nv + j]);
  }
}

/* Sums the lanes of up to VL vectors at once with a fixed tree. Each
 * level pairs x and y, whose lanes are G groups of s partial sums, into
 * z = P + Q with 2G groups of s/2: P takes the first half of every group
 * (x's then y's), Q the second half. After log2(VL) levels lane l of the
 * result is the total of input owner[l]. out_lane[v] is where input v ends. */
static LLVMValueRef reduce_group(emitter *e, LLVMValueRef *v, int n, int *out_lane) {
  int vl = e->p.vl;
  LLVMValueRef cur[MAX_LANES];
  int owner[MAX_LANES][MAX_LANES]; /* owner[vector][group] */
  int count = vl;
  for (int i = 0; i < vl; i++) {
    cur[i] = i < n ? v[i] : LLVMConstNull(e->vec);
    owner[i][0] = i < n ? i : -1;
  }
  for (int s = vl, groups = 1; s > 1; s /= 2, groups *= 2) {
    for (int x = 0; x < count / 2; x++) {
      int p[MAX_LANES], q[MAX_LANES], own[MAX_LANES];
      for (int l = 0; l < vl; l++) {
        int g = l / s, r = l % s, h = s / 2;
        p[l] = r < h ? g * s + r : vl + g * s + (r - h);
        q[l] = r < h ? g * s + h + r : vl + g * s + r;
      }
      for (int g = 0; g < groups; g++) {
        own[2 * g] = owner[2 * x][g];
        own[2 * g + 1] = owner[2 * x + 1][g];
      }
      LLVMValueRef a = cur[2 * x], b = cur[2 * x + 1];
      cur[x] = LLVMBuildFAdd(e->b, shuffle(e, a, b, p, vl), shuffle(e, a, b, q, vl), "");
      memcpy(owner[x], own, sizeof own);
    }
    count /= 2;
  }
  for (int l = 0; l < vl; l++)
    if (owner[0][l] >= 0) out_lane[owner[0][l]] = l;
  return cur[0];
}

typedef struct c_row {
  LLVMValueRef ptr;
  int n;
} c_row;

static LLVMValueRef load_c_row(emitter *e, void *at) {
  c_row *c = at;
  LLVMValueRef v = LLVMBuildLoad2(e->b, vec_of(e, c->n), c->ptr, "");
  LLVMSetAlignment(v, 4);
  return v;
}

/* A tile's sums over one range of k, reduced: group g of VL accumulators
 * (row-major order i*nr + j) in sums[g], accumulator a's total in lane
 * lane_of[a] of its group. */
typedef struct dot_sums {
  LLVMValueRef sums[MAX_ACC / 4 + 1];
  int lane_of[MAX_ACC];
} dot_sums;

/* The sums over k in [kb, kb + klen) of the pass: lane accumulators over
 * full vectors of k in a loop unrolled ku times, leftover full vectors,
 * then a masked vector for klen % VL; the lanes reduced by the shuffle
 * tree. */
static void dot_reduce(emitter *e, const panel *pn, int mr, LLVMValueRef m, int64_t kb,
                       int64_t klen, dot_sums *ds) {
  int vl = e->p.vl, nr = pn->nv, nacc = mr * nr, ku = e->p.ku;
  LLVMValueRef acc[MAX_ACC];
  for (int a = 0; a < nacc; a++)
    acc[a] = LLVMConstNull(e->vec);
  int64_t chunks = klen / vl, cmain = chunks / ku * ku;
  if (cmain > 0) {
    loop l;
    loop_open(e, &l, i64c(e, kb), i64c(e, kb + cmain * vl), nacc, acc, "kc");
    LLVMValueRef cur[MAX_ACC];
    memcpy(cur, l.carry, sizeof(LLVMValueRef) * (size_t)nacc);
    for (int u = 0; u < ku; u++)
      dot_step(e, pn, mr, m, add64(e, l.iv, i64c(e, u * vl)), vl, cur);
    loop_close(e, &l, (int64_t)ku * vl, cur);
    memcpy(acc, l.carry, sizeof(LLVMValueRef) * (size_t)nacc);
  }
  for (int64_t c = cmain; c < chunks; c++)
    dot_step(e, pn, mr, m, i64c(e, kb + c * vl), vl, acc);
  if (klen % vl) dot_step(e, pn, mr, m, i64c(e, kb + chunks * vl), (int)(klen % vl), acc);
  for (int a0 = 0, grp = 0; a0 < nacc; a0 += vl, grp++) {
    int n = nacc - a0 < vl ? nacc - a0 : vl;
    ds->sums[grp] = reduce_group(e, acc + a0, n, ds->lane_of + a0);
  }
}

/* Row i's nr sums (<nr x float>): they span at most two groups; one
 * shuffle gathers them. */
static LLVMValueRef dot_row(emitter *e, const dot_sums *ds, int mr, int nr, int i) {
  int vl = e->p.vl, nacc = mr * nr, first = i * nr, g0 = first / vl, idx[MAX_LANES];
  for (int j = 0; j < nr; j++) {
    int a = first + j;
    idx[j] = ds->lane_of[a] + (a / vl == g0 ? 0 : vl);
  }
  LLVMValueRef hi = g0 + 1 < (nacc + vl - 1) / vl ? ds->sums[g0 + 1] : LLVMGetUndef(e->vec);
  return shuffle(e, ds->sums[g0], hi, idx, nr);
}

void nnc_gemm_dot_tile(emitter *e, const panel *pn, int mr, LLVMValueRef m) {
  const nnc_cg_gemm *g = e->g;
  int nr = pn->nv;
  dot_sums ds;
  LLVMValueRef rowv[MAX_ACC];
  int64_t chunks = pass_chunks(e, pn), klen = pn->klen / chunks;
  if (chunks > 1) { /* each chunk's rows, added as the tree */
    chunk_tree tree = {.n = mr};
    for (int64_t c = 0; c < chunks; c++) {
      dot_reduce(e, pn, mr, m, c * klen, klen, &ds);
      for (int i = 0; i < mr; i++)
        rowv[i] = dot_row(e, &ds, mr, nr, i);
      tree_push(e, &tree, rowv);
    }
    tree_total(e, &tree, rowv);
  } else {
    dot_reduce(e, pn, mr, m, 0, pn->klen, &ds);
  }

  LLVMValueRef bias_v = NULL;
  if (g->bias && pn->last) {
    LLVMValueRef v = LLVMBuildLoad2(e->b, vec_of(e, nr), elem_ptr(e, e->bias, pn->n), "");
    LLVMSetAlignment(v, 4);
    bias_v = v;
  }
  for (int i = 0; i < mr; i++) {
    LLVMValueRef v = chunks > 1 ? rowv[i] : dot_row(e, &ds, mr, nr, i);
    LLVMValueRef idx = add64(e, mul64(e, add64(e, m, i64c(e, i)), g->ldc), pn->n);
    LLVMValueRef ptr = elem_ptr(e, e->C, idx);
    c_row at = {ptr, nr};
    if (starts_from_c(e, pn)) v = LLVMBuildFAdd(e->b, load_c_row(e, &at), v, "");
    v = finish(e, pn->last, v, bias_v, mask_at(e, pn->last, idx, nr, false), load_c_row, &at);
    if (e->st && pn->last)
      e->st->store(e->st->ctx, e->b, v, idx, nr);
    else
      LLVMSetAlignment(LLVMBuildStore(e->b, v, ptr), 4);
  }
}
