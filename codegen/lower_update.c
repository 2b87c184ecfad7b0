/* lower_update.c: the update passes (ir.h invariant 5, simultaneous
 * assignment). The update values of all tensors of one shape are computed
 * in one pass that evaluates every new value at an index before it stores
 * any, e.g. Adam's m, v and weight in one loop. A tensor is written in
 * place when that pass reads its old value only at the index being written
 * and no other update pass reads it; otherwise into a temporary copied
 * back after every pass has run.
 *
 * Fused updates: a pass whose only operand with more than one element,
 * besides the tensors it writes in place, is the product that computes
 * the gradient (a weight gradient dyᵀ.x), read at the pass's own index,
 * becomes that product's epilogue (nnc_kernel.update): the gradient never
 * goes to memory, and p, m and v are read and written once, while the
 * product's tile is in registers. The product kernel then runs where the
 * pass would have run (after every other reader of the parameter and
 * every scalar the pass reads); the pass's arithmetic is the same
 * expressions, emitted on vectors (llvm.c). Not fused: a pass reading
 * anything else (a clipped gradient's global norm is a scalar and fuses;
 * a penalty's gradient added to the product's does not), products whose
 * C is stored transposed, split by columns, summed over K blocks through
 * C, accumulated, with an epilogue, or in bf16.
 */
#include <stdio.h>
#include <string.h>

#include "lower_internal.h"

static bool kernel_reads(const nnc_kprog *p, const nnc_kernel *k, int b) {
  for (int i = 0; i < k->nreads; i++)
    if (nnc_kbuf_base(p, k->reads[i]) == b) return true;
  return false;
}

typedef struct group {
  nnc_kernel *k;
  nnc_kexpr *at;      /* the pass's own flat index */
  nnc_kstmt **stores; /* one per update in the group */
  int *updates;
  int n;
  nnc_kernel *product; /* fused into this product kernel, or NULL */
} group;

/* Float ops the vector form of a pass emits as they are (no polynomial
 * or libm code of its own). */
static bool vector_op(nnc_kop op) {
  static const nnc_kop ops[] = {
      NNC_K_NEG, NNC_K_SQRT, NNC_K_RSQRT, NNC_K_RECIP, NNC_K_RELU, NNC_K_ABS, NNC_K_ADD, NNC_K_SUB,
      NNC_K_MUL, NNC_K_DIV,  NNC_K_MAX,   NNC_K_MIN,   NNC_K_LT,   NNC_K_LE,  NNC_K_GT,  NNC_K_GE};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
    if (ops[i] == op) return true;
  return false;
}

/* Whether e reads, besides scalars (buffers of one element), only base
 * buffers at index `at`, of which one temporary (*grad, -1 until found)
 * and otherwise persistent tensors; and is made only of float arithmetic
 * that the vector form of the pass emits (llvm.c: constants, loads,
 * scalars, unary and binary float ops, selects). */
static bool fusable_expr(const nnc_kprog *p, const nnc_kexpr *e, const nnc_kexpr *at, int *grad) {
  switch (e->kind) {
  case NNC_KX_CONST: return e->type == NNC_KT_F32;
  case NNC_KX_SCALAR: return e->type == NNC_KT_F32;
  case NNC_KX_LOAD: {
    int b = nnc_kbuf_base(p, e->buf);
    if (e->type != NNC_KT_F32) return false;
    if (p->bufs[b].numel == 1) return true;
    if (!nnc_kexpr_eq(e->a[0], at)) return false;
    if (p->bufs[b].kind == NNC_KBUF_TENSOR) return true;
    if (p->bufs[b].kind != NNC_KBUF_TEMP || (*grad >= 0 && *grad != b)) return false;
    *grad = b;
    return true;
  }
  case NNC_KX_UN: return vector_op(e->op) && fusable_expr(p, e->a[0], at, grad);
  case NNC_KX_BIN:
    return vector_op(e->op) && e->a[0]->type == NNC_KT_F32 && fusable_expr(p, e->a[0], at, grad) &&
           fusable_expr(p, e->a[1], at, grad);
  case NNC_KX_SELECT:
    return e->a[0]->type == NNC_KT_BOOL && fusable_expr(p, e->a[0], at, grad) &&
           fusable_expr(p, e->a[1], at, grad) && fusable_expr(p, e->a[2], at, grad);
  case NNC_KX_VAR:
  case NNC_KX_CAST:
  case NNC_KX_RAND: return false;
  }
  return false;
}

/* The product kernel of L->kg that computes base buffer c, when it can
 * take an update pass over n elements as its epilogue; else NULL. */
static nnc_kernel *fusable_product(lower *L, int c, int64_t n) {
  const nnc_kprog *p = L->p;
  nnc_kernel *prod = NULL;
  for (int i = 0; i < L->kg->n; i++) {
    nnc_kernel *k = L->kg->k[i];
    for (int r = 0; r < k->nreads; r++) /* C read by another kernel: it is needed */
      if (nnc_kbuf_base(p, k->reads[r]) == c) return NULL;
    if (k->is_gemm && nnc_kbuf_base(p, k->c_buf) == c) prod = k;
  }
  if (!prod || prod->update) return NULL;
  const nnc_cg_gemm *g = &prod->gemm;
  nnc_cg_gemm_plan plan = nnc_cg_gemm_plan_for(g);
  /* C finished in one pass: one k block, or a chunked product (its K
   * blocks' partial sums go to its slots, gemm.c) */
  bool one_pass = (plan.kc >= g->K || g->chunks > 1) && !g->accumulate;
  bool plain = !g->bias && g->act == NNC_CG_ACT_NONE && !nnc_cg_gemm_bf16_applies(g);
  return one_pass && plain && prod->col_block <= 0 && g->ldc == g->N && g->M * g->N == n &&
                 nnc_kbuf_base(p, prod->a_buf) != c && nnc_kbuf_base(p, prod->b_buf) != c
             ? prod
             : NULL;
}

/* Does any update pass but group gi's write base buffer b? */
static bool written_by_other(lower *L, int gi, int b) {
  for (int u = 0; u < L->g->nupdates; u++)
    if (L->group_of[u] != gi &&
        nnc_kbuf_base(L->p, L->p->tensor_bufs[L->g->updates[u].tensor]) == b)
      return true;
  return false;
}

/* Does e read a scalar that another pass writes (the order of the passes
 * would then matter)? */
static bool reads_written_scalar(lower *L, int gi, const nnc_kexpr *e) {
  if (!e) return false;
  if (e->kind == NNC_KX_LOAD) {
    int b = nnc_kbuf_base(L->p, e->buf);
    return L->p->bufs[b].numel == 1 && written_by_other(L, gi, b);
  }
  for (int i = 0; i < 3; i++)
    if (reads_written_scalar(L, gi, e->a[i])) return true;
  return false;
}

/* The product G[gi]'s pass fuses into (see the top), or NULL. */
static nnc_kernel *fused_product(lower *L, const group *G, int gi) {
  const nnc_kprog *p = L->p;
  if (!p->fuse_updates || G[gi].k->work < NNC_COLD_WORK) return NULL;
  const nnc_kblock *blk = &G[gi].k->body;
  while (blk->n && blk->s[0]->kind == NNC_KS_LOOP)
    blk = &blk->s[0]->body;
  int grad = -1;
  for (int i = 0; i < blk->n; i++) {
    const nnc_kstmt *s = blk->s[i];
    if (s->kind == NNC_KS_LOOP || !fusable_expr(p, s->value, G[gi].at, &grad) ||
        reads_written_scalar(L, gi, s->value))
      return NULL;
    if (s->kind == NNC_KS_SET) continue;
    for (int g2 = 0; g2 < L->ngroups; g2++) /* written in place: no other pass reads it */
      if (g2 != gi && kernel_reads(p, G[g2].k, s->buf)) return NULL;
  }
  /* the tensors read at `at` must be ones this pass writes */
  for (int r = 0; r < G[gi].k->nreads; r++) {
    int b = nnc_kbuf_base(p, G[gi].k->reads[r]);
    if (b == grad || p->bufs[b].numel == 1) continue;
    bool own = false;
    for (int s = 0; s < G[gi].n; s++)
      own |= nnc_kbuf_base(p, p->tensor_bufs[L->g->updates[G[gi].updates[s]].tensor]) == b;
    if (!own) return NULL;
  }
  return grad >= 0 ? fusable_product(L, grad, p->bufs[grad].numel) : NULL;
}

/* Moves product k to the end of the kernel list with G's pass as its
 * epilogue: it reads what both read but C, writes what the pass writes. */
static void fuse(lower *L, group *G, nnc_kernel *k) {
  nnc_kgraph *kg = L->kg;
  int at = 0;
  while (kg->k[at] != k)
    at++;
  memmove(&kg->k[at], &kg->k[at + 1], sizeof(nnc_kernel *) * (size_t)(kg->n - at - 1));
  kg->n--;
  nnc_kernel *u = G->k;
  int c = nnc_kbuf_base(L->p, k->c_buf);
  int *reads = nnc_arena_alloc(L->a, sizeof(int) * (size_t)(k->nreads + u->nreads + 1)), n = 0;
  for (int i = 0; i < k->nreads + u->nreads; i++) {
    int b = i < k->nreads ? k->reads[i] : u->reads[i - k->nreads];
    bool seen = nnc_kbuf_base(L->p, b) == c;
    for (int j = 0; j < n && !seen; j++)
      seen = reads[j] == b;
    if (!seen) reads[n++] = b;
  }
  k->reads = reads;
  k->nreads = n;
  k->writes = u->writes;
  k->nwrites = u->nwrites;
  k->update = u;
  k->work += u->work;
  k->label = nnc_arena_printf(L->a, "%s +%s", k->label, u->label);
  G->product = k;
  nnc_kgraph_add(L->a, kg, k);
}

/* Updates of one shape and dtype share a pass, except that buffers (batch
 * norm's running statistics) have passes of their own: the same kernel in
 * the ordinary step and in the rank steps of synchronised statistics, so
 * compiled alike (a pass with an optimizer's arithmetic beside it may be
 * instruction-selected otherwise, contracting other multiply-adds), the
 * same bits. */
void nnc_lw_assign_groups(lower *L) {
  const nnc_graph *g = L->g;
  L->group_of = nnc_arena_alloc(L->a, sizeof(int) * (size_t)(g->nupdates + 1));
  for (int u = 0; u < g->nupdates; u++) {
    const nnc_tensor *t = &L->p->module->tensors[g->updates[u].tensor];
    int gi = -1;
    for (int v = 0; v < u && gi < 0; v++) {
      const nnc_tensor *s = &L->p->module->tensors[g->updates[v].tensor];
      if (nnc_shape_eq(&s->shape, &t->shape) && s->dtype == t->dtype &&
          (s->role == NNC_ROLE_BUFFER) == (t->role == NNC_ROLE_BUFFER))
        gi = L->group_of[v];
    }
    L->group_of[u] = gi >= 0 ? gi : L->ngroups++;
  }
}

/* Whether kernel j must stay before kernel u (one writes a buffer the
 * other reads or writes; views by their base buffer). */
static bool depends(const nnc_kprog *p, const nnc_kernel *j, const nnc_kernel *u) {
  for (int w = 0; w < j->nwrites; w++) {
    int b = nnc_kbuf_base(p, j->writes[w]);
    if (kernel_reads(p, u, b)) return true;
    for (int x = 0; x < u->nwrites; x++)
      if (nnc_kbuf_base(p, u->writes[x]) == b) return true;
  }
  for (int x = 0; x < u->nwrites; x++)
    if (kernel_reads(p, j, nnc_kbuf_base(p, u->writes[x]))) return true;
  return false;
}

/* A kernel computing scalars from scalars (Adam's bias corrections from
 * the step count): hoisted with the passes that read them. */
static bool scalar_kernel(const nnc_kprog *p, const nnc_kernel *k) {
  if (k->is_gemm || k->is_conv || k->conv_dw || k->allreduce || k->update || !k->nwrites)
    return false;
  for (int i = 0; i < k->nwrites; i++)
    if (p->bufs[nnc_kbuf_base(p, k->writes[i])].numel != 1) return false;
  for (int i = 0; i < k->nreads; i++)
    if (p->bufs[nnc_kbuf_base(p, k->reads[i])].numel != 1) return false;
  return true;
}

/* Moves each update pass (fused or not), and the scalar kernels before
 * it, to just after the last kernel it depends on, in list order: a
 * weight's pass then runs while its gradient and the weight, read by the
 * products just before, are still in the cache, not after every other
 * layer's passes have streamed through it (but after the kernel that adds
 * a K-split product's parts, if it follows that product). Kernels that do not depend on
 * each other may run in either order; no value changes. */
static void hoist_passes(lower *L, const group *G) {
  const nnc_kprog *p = L->p;
  nnc_kgraph *kg = L->kg;
  for (int i = 0; i < kg->n; i++) {
    nnc_kernel *k = kg->k[i];
    bool pass = scalar_kernel(p, k);
    for (int gi = 0; gi < L->ngroups && !pass; gi++)
      pass = k == G[gi].k || k == G[gi].product;
    if (!pass) continue;
    int at = i;
    while (at > 0 && !depends(p, kg->k[at - 1], k))
      at--;
    /* not between a K-split product and the kernel adding its parts, which
     * reads them while they are in the cache (lower_matmul.c) */
    if (at > 0 && at < i && kg->k[at - 1]->k_parts > 1) at++;
    memmove(&kg->k[at + 1], &kg->k[at], sizeof(nnc_kernel *) * (size_t)(i - at));
    kg->k[at] = k;
  }
}

/* Whether kernel j reads base buffer b only by the rows of b that the
 * same thread's part of b's update pass writes: a product x.W^T split over
 * blocks of C's columns, which are W's rows (lower_matmul.c,
 * column_split), or dy.W split over K, W's rows (k_split_parts). */
static bool reads_by_rows(const nnc_kprog *p, const nnc_kernel *j, int b) {
  bool rows = j->col_block > 0 ? j->gemm.trans_b : j->k_parts > 1 && !j->gemm.trans_b;
  if (!j->is_gemm || !rows || nnc_kbuf_base(p, j->b_buf) != b) return false;
  for (int r = 0; r < j->nreads; r++)
    if (j->reads[r] != j->b_buf && nnc_kbuf_base(p, j->reads[r]) == b) return false;
  return true;
}

/* Rows of 4 to 64 cache lines: one row's prefetches per iteration of the
 * split loop (llvm.c) keep ahead of the stores without a burst that would
 * stall on the core's outstanding misses. */
enum { PREFETCH_ROW_MIN = 256, PREFETCH_ROW_MAX = 4096 };

/* Sets k->prefetch_bufs for update pass k (see kernel.h): the buffers it
 * writes that another kernel of the step reads other than by rows. */
static void mark_shared_writes(lower *L, nnc_kernel *k) {
  const nnc_kprog *p = L->p;
  if (!k->split || k->extent < 2) return;
  k->prefetch_bufs = nnc_arena_alloc(L->a, sizeof(int) * (size_t)(k->nwrites + 1));
  for (int w = 0; w < k->nwrites; w++) {
    int b = nnc_kbuf_base(p, k->writes[w]);
    const nnc_kbuf *buf = &p->bufs[b];
    int64_t row = buf->numel / k->extent * nnc_kt_size(buf->type);
    if (buf->numel % k->extent || row < PREFETCH_ROW_MIN || row > PREFETCH_ROW_MAX) continue;
    bool across = false;
    for (int i = 0; i < L->kg->n && !across; i++) {
      const nnc_kernel *j = L->kg->k[i];
      across = j != k && kernel_reads(p, j, b) && !reads_by_rows(p, j, b);
    }
    if (across) k->prefetch_bufs[k->nprefetch++] = b;
  }
}

/* Whether e reads every buffer at index `at`, or at an index without
 * loop variables, and is made of elementwise arithmetic only. */
static bool reads_at(const nnc_kexpr *e, const nnc_kexpr *at) {
  switch (e->kind) {
  case NNC_KX_CONST: return true;
  case NNC_KX_LOAD: return nnc_kexpr_eq(e->a[0], at) || e->a[0]->kind == NNC_KX_CONST;
  case NNC_KX_UN:
  case NNC_KX_CAST: return reads_at(e->a[0], at);
  case NNC_KX_BIN: return reads_at(e->a[0], at) && reads_at(e->a[1], at);
  case NNC_KX_SELECT:
    return reads_at(e->a[0], at) && reads_at(e->a[1], at) && reads_at(e->a[2], at);
  case NNC_KX_VAR:
  case NNC_KX_SCALAR:
  case NNC_KX_RAND: return false;
  }
  return false;
}

/* Whether group gi's pass over tensor shape s (rank 3 or more) can loop
 * over [dim 0, the rest] (nnc_lw_merged_nest from axis 1): its values,
 * generated on a scratch kernel at those coordinates, read every operand
 * at the pass's own index or at a constant one. Optimizers' passes do;
 * one reading an operand broadcast along some of the trailing axes does
 * not. A convolution's weight [64, 32, 3, 3] otherwise loops 3 at a time
 * innermost, which the loop vectoriser made masked 3-of-4-lane vectors
 * (fashion_cnn's conv 2 Adam pass: 108 us a step on one thread). */
static bool flat_pass(lower *L, int gi, const nnc_shape *s) {
  const nnc_graph *g = L->g;
  if (s->rank < 3 || s->dim[0] < 1) return false;
  nnc_kernel *scratch = nnc_kernel_new(L->a, "flat");
  kgen KG;
  nnc_lw_gen_begin(L, &KG, scratch, NULL);
  nnc_kexpr *idx[NNC_MAX_RANK];
  const nnc_kblock *body = nnc_lw_merged_nest(L, scratch, s, 1, idx);
  nnc_kexpr *at = nnc_lw_linear(L, idx, s);
  for (int u = 0; u < g->nupdates; u++)
    if (L->group_of[u] == gi && !reads_at(nnc_lw_gen(L, &KG, g->updates[u].value, idx), at))
      return false;
  return body->n == 0 && scratch->nscalars == 0; /* nothing generated beside the values */
}

bool nnc_lw_update_passes(lower *L) {
  const nnc_graph *g = L->g;
  const nnc_kprog *p = L->p;
  group *G = nnc_arena_alloc(L->a, sizeof(group) * (size_t)(L->ngroups + 1));
  for (int gi = 0; gi < L->ngroups; gi++) {
    int first = -1, n = 0;
    for (int u = 0; u < g->nupdates; u++)
      if (L->group_of[u] == gi) {
        if (first < 0) first = u;
        n++;
      }
    const nnc_tensor *t = &p->module->tensors[g->updates[first].tensor];
    kgen KG;
    char what[80];
    snprintf(what, sizeof what, "update.%s", t->name);
    nnc_kernel *k = nnc_lw_new_kernel(L, &KG, what, NULL);
    nnc_kexpr *idx[NNC_MAX_RANK];
    nnc_kblock *blk = flat_pass(L, gi, &t->shape) ? nnc_lw_merged_nest(L, k, &t->shape, 1, idx)
                                                  : nnc_lw_nest(L, k, &t->shape, idx);
    G[gi].k = k;
    G[gi].at = nnc_lw_linear(L, idx, &t->shape);
    G[gi].stores = nnc_arena_alloc(L->a, sizeof(nnc_kstmt *) * (size_t)n);
    G[gi].updates = nnc_arena_alloc(L->a, sizeof(int) * (size_t)n);
    int *scalars = nnc_arena_alloc(L->a, sizeof(int) * (size_t)n);
    double work = 0;
    /* Every new value first, then every store: simultaneous assignment. */
    for (int u = 0; u < g->nupdates; u++) {
      if (L->group_of[u] != gi) continue;
      const nnc_node *v = g->updates[u].value;
      if (v->dtype != t->dtype || !nnc_shape_eq(&v->shape, &t->shape))
        return nnc_lw_fail(L, "update of another shape", v);
      nnc_kexpr *e = nnc_lw_gen(L, &KG, v, idx);
      work += nnc_lw_expr_cost(e) * 4;
      int s = G[gi].n;
      scalars[s] = nnc_kernel_scalar(L->a, k, e->type);
      nnc_kb_set(L->a, blk, scalars[s], e);
      G[gi].updates[G[gi].n++] = u;
    }
    for (int s = 0; s < G[gi].n; s++) {
      int tb = p->tensor_bufs[g->updates[G[gi].updates[s]].tensor];
      nnc_kb_store(L->a, blk, tb, G[gi].at, nnc_kx_scalar(L->a, k, scalars[s]));
      G[gi].stores[s] = blk->s[blk->n - 1];
    }
    k->work = work * (double)nnc_shape_numel(&t->shape);
    nnc_kernel_finish(L->a, k);
    G[gi].product = NULL;
  }
  nnc_kernel **fused = nnc_arena_alloc(L->a, sizeof(nnc_kernel *) * (size_t)(L->ngroups + 1));
  for (int gi = 0; gi < L->ngroups; gi++)
    fused[gi] = fused_product(L, G, gi);
  /* In place unless the old value is read elsewhere in the pass or by
   * another pass; otherwise into a temporary copied back at the end. */
  int ncopies = 0;
  int *copy_dst = nnc_arena_alloc(L->a, sizeof(int) * (size_t)(g->nupdates + 1));
  int *copy_src = nnc_arena_alloc(L->a, sizeof(int) * (size_t)(g->nupdates + 1));
  for (int gi = 0; gi < L->ngroups; gi++) {
    for (int s = 0; s < G[gi].n && !fused[gi]; s++) {
      int tb = p->tensor_bufs[g->updates[G[gi].updates[s]].tensor];
      bool safe = true;
      /* the SET statements of the pass hold all its reads */
      const nnc_kblock *blk = &G[gi].k->body;
      while (blk->n && blk->s[0]->kind == NNC_KS_LOOP)
        blk = &blk->s[0]->body;
      for (int i = 0; i < blk->n && safe; i++)
        if (blk->s[i]->kind == NNC_KS_SET)
          safe = !nnc_kexpr_reads(p, blk->s[i]->value, tb, G[gi].at);
      for (int g2 = 0; g2 < L->ngroups && safe; g2++)
        if (g2 != gi) safe = !kernel_reads(p, G[g2].k, tb);
      if (safe) continue;
      const nnc_kbuf *b = &p->bufs[tb];
      char name[96];
      snprintf(name, sizeof name, "%s.new.%s", g->name, b->name);
      int tmp = nnc_kprog_add_buf(L->p, NNC_KBUF_TEMP, 0, b->type, b->numel, name);
      G[gi].stores[s]->buf = tmp;
      copy_dst[ncopies] = tb;
      copy_src[ncopies++] = tmp;
    }
  }
  for (int gi = 0; gi < L->ngroups; gi++) {
    if (fused[gi]) {
      fuse(L, &G[gi], fused[gi]);
      continue;
    }
    G[gi].k->nreads = G[gi].k->nwrites = 0;
    G[gi].k->reads = G[gi].k->writes = NULL;
    nnc_lw_add_kernel(L, G[gi].k);
  }
  for (int c = 0; c < ncopies; c++)
    nnc_lw_kernel_copy(L, "update.copy", copy_dst[c], copy_src[c], p->bufs[copy_dst[c]].numel);
  hoist_passes(L, G);
  for (int gi = 0; gi < L->ngroups; gi++)
    if (!fused[gi]) mark_shared_writes(L, G[gi].k);
  return true;
}
