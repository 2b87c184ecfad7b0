/* lower_update.c: the update passes (ir.h invariant 5, simultaneous
 * assignment). The update values of all tensors of one shape are computed
 * in one pass that evaluates every new value at an index before it stores
 * any, e.g. Adam's m, v and weight in one loop. A tensor is written in
 * place when that pass reads its old value only at the index being written
 * and no other update pass reads it; otherwise into a temporary copied
 * back after every pass has run.
 */
#include <stdio.h>

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
} group;

void nnc_lw_assign_groups(lower *L) {
  const nnc_graph *g = L->g;
  L->group_of = nnc_arena_alloc(L->a, sizeof(int) * (size_t)(g->nupdates + 1));
  for (int u = 0; u < g->nupdates; u++) {
    const nnc_tensor *t = &L->p->module->tensors[g->updates[u].tensor];
    int gi = -1;
    for (int v = 0; v < u && gi < 0; v++) {
      const nnc_tensor *s = &L->p->module->tensors[g->updates[v].tensor];
      if (nnc_shape_eq(&s->shape, &t->shape) && s->dtype == t->dtype) gi = L->group_of[v];
    }
    L->group_of[u] = gi >= 0 ? gi : L->ngroups++;
  }
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
    nnc_kblock *blk = nnc_lw_nest(L, k, &t->shape, idx);
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
  }
  /* In place unless the old value is read elsewhere in the pass or by
   * another pass; otherwise into a temporary copied back at the end. */
  int ncopies = 0;
  int *copy_dst = nnc_arena_alloc(L->a, sizeof(int) * (size_t)(g->nupdates + 1));
  int *copy_src = nnc_arena_alloc(L->a, sizeof(int) * (size_t)(g->nupdates + 1));
  for (int gi = 0; gi < L->ngroups; gi++) {
    for (int s = 0; s < G[gi].n; s++) {
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
    G[gi].k->nreads = G[gi].k->nwrites = 0;
    G[gi].k->reads = G[gi].k->writes = NULL;
    nnc_lw_add_kernel(L, G[gi].k);
  }
  for (int c = 0; c < ncopies; c++)
    nnc_lw_kernel_copy(L, "update.copy", copy_dst[c], copy_src[c], p->bufs[copy_dst[c]].numel);
  return true;
}
