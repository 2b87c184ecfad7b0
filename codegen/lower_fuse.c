/* lower_fuse.c: which nodes get memory and which are fused into their
 * readers (the lowering's decisions), then buffers for those with memory.
 *
 * Fusion is decided per node, consumers first. A node either
 *  - has memory of its own: a leaf (PARAM, INPUT), a view (RESHAPE of a node
 *    with memory), or a KERNEL node computed by a kernel of its own; or
 *  - is INLINE: computed inside its consumer's kernel as an expression at the
 *    index the consumer reads, so whole elementwise chains (broadcasts,
 *    transposes, constants, one-hot, gather, random masks included) become
 *    one loop nest, and a reduction's producers run inside its loop.
 * A node is inlined when every consumer ends up in the same kernel reading
 * it at that kernel's own index (so it is computed once per element), or
 * when it has one consumer that does not read it more often than it has
 * elements. Ops whose LOWERING in ops.def is KERNEL (products, reductions,
 * windows, scatters) always get a kernel; a product followed by a
 * row-vector bias add and a ReLU is one gemm call with the epilogue folded
 * in (match_epilogues).
 */
#include <stdio.h>

#include "lower_internal.h"

/* What the lowering needs to know of each op besides ops.def's columns
 * (nnc_lw_op_traits says what each column means); every op spelled out, so
 * -Wswitch asks for a new op's row. */
nnc_lw_op_traits nnc_lw_traits(nnc_op op) {
#define T(elementwise, one_op, index_map, force, kop)                                              \
  return (nnc_lw_op_traits) {                                                                      \
    elementwise, one_op, index_map, FORCE_##force, NNC_K_##kop                                     \
  }
#define NNC_K_NO NNC_K_COUNT_ /* no kernel op */
  /* clang-format off */
  switch (op) {
                           /* elementwise, one_op, index_map, force, kop */
  case NNC_OP_INPUT:       T(0, 0, 0, NONE,   NO);
  case NNC_OP_PARAM:       T(0, 0, 0, NONE,   NO);
  case NNC_OP_CONST:       T(0, 0, 0, NONE,   NO);
  case NNC_OP_NEG:         T(1, 1, 0, NONE,   NEG);
  case NNC_OP_EXP:         T(1, 0, 0, NONE,   EXP);
  case NNC_OP_LOG:         T(1, 0, 0, NONE,   LOG);
  case NNC_OP_SQRT:        T(1, 0, 0, NONE,   SQRT);
  case NNC_OP_RSQRT:       T(1, 0, 0, NONE,   RSQRT);
  case NNC_OP_RECIP:       T(1, 0, 0, NONE,   RECIP);
  case NNC_OP_TANH:        T(1, 0, 0, NONE,   TANH);
  case NNC_OP_SIGMOID:     T(1, 0, 0, NONE,   SIGMOID);
  case NNC_OP_RELU:        T(1, 1, 0, NONE,   RELU);
  case NNC_OP_ABS:         T(1, 1, 0, NONE,   ABS);
  case NNC_OP_SIGN:        T(1, 0, 0, NONE,   SIGN);
  case NNC_OP_ERF:         T(1, 0, 0, NONE,   ERF);
  case NNC_OP_COS:         T(1, 0, 0, NONE,   COS);
  case NNC_OP_FLOOR:       T(1, 0, 0, NONE,   FLOOR);
  case NNC_OP_CAST:        T(1, 0, 0, NONE,   NO);
  case NNC_OP_ALLREDUCE:   T(1, 0, 0, ALL,    NO);
  case NNC_OP_ADD:         T(1, 1, 0, NONE,   ADD);
  case NNC_OP_SUB:         T(1, 1, 0, NONE,   SUB);
  case NNC_OP_MUL:         T(1, 1, 0, NONE,   MUL);
  case NNC_OP_DIV:         T(1, 0, 0, NONE,   DIV);
  case NNC_OP_MAX:         T(1, 1, 0, NONE,   MAX);
  case NNC_OP_MIN:         T(1, 1, 0, NONE,   MIN);
  case NNC_OP_POW:         T(1, 0, 0, NONE,   POW);
  case NNC_OP_GT:          T(1, 1, 0, NONE,   GT);
  case NNC_OP_GE:          T(1, 1, 0, NONE,   GE);
  case NNC_OP_EQ:          T(1, 1, 0, NONE,   EQ);
  case NNC_OP_SELECT:      T(1, 1, 0, NONE,   NO);
  case NNC_OP_SUM:         T(0, 0, 0, NONE,   NO);
  case NNC_OP_RMAX:        T(0, 0, 0, NONE,   NO);
  case NNC_OP_ARGMAX:      T(0, 0, 0, NONE,   NO);
  case NNC_OP_RESHAPE:     T(0, 0, 1, ALL,    NO);
  case NNC_OP_TRANSPOSE:   T(0, 0, 1, NONE,   NO);
  case NNC_OP_BROADCAST:   T(0, 0, 1, NONE,   NO);
  case NNC_OP_MATMUL:      T(0, 0, 0, NONE,   NO);
  case NNC_OP_IM2COL:      T(0, 0, 0, ALL,    NO);
  case NNC_OP_COL2IM:      T(0, 0, 0, NONE,   NO);
  case NNC_OP_GATHER:      T(0, 0, 0, TABLE,  NO);
  case NNC_OP_SCATTER_ADD: T(0, 0, 0, ALL,    NO);
  case NNC_OP_ONEHOT:      T(0, 0, 0, COSTLY, NO);
  case NNC_OP_RAND:        T(0, 0, 0, COSTLY, NO);
  case NNC_OP_COUNT_: break;
  }
  /* clang-format on */
#undef T
#undef NNC_K_NO
  nnc_ir_bug("codegen: op %d has no traits", (int)op);
}

/* Costs nothing to evaluate again: constants and memory, through index maps. */
static bool cheap(const nnc_node *n) {
  if (nnc_op_class_of(n->op) == NNC_CLASS_LEAF) return true;
  return nnc_lw_traits(n->op).index_map && cheap(n->in[0]);
}

static bool is_elementwise(const nnc_node *n) {
  return nnc_lw_traits(n->op).elementwise;
}

/* If b is a row vector [1, N] (through broadcasts and reshapes) of a node
 * with N contiguous elements, returns that node. */
nnc_node *nnc_lw_row_bias_source(nnc_node *b, int64_t N) {
  if (b->shape.rank != 2 || b->shape.dim[1] != N) return NULL;
  nnc_node *s = b;
  while (s->op == NNC_OP_BROADCAST || s->op == NNC_OP_RESHAPE) {
    if (s->op == NNC_OP_BROADCAST && s->in[0]->shape.rank != 0 &&
        nnc_shape_numel(&s->in[0]->shape) != N)
      return NULL;
    s = s->in[0];
  }
  if (nnc_shape_numel(&s->shape) != N) return NULL;
  if (s->op == NNC_OP_CONST) return NULL; /* a constant row needs no buffer: plain add */
  return s;
}

static bool plain_node(lower *L, const nnc_node *n) {
  return L->out_kind[n->id] < 0 && !L->is_update[n->id] && L->nusers[n->id] == 1;
}

static node_state decide_shared(lower *L, const nnc_node *n);

static bool is_zero_const(const nnc_node *n) {
  return n->op == NNC_OP_CONST && n->fattr == 0;
}

/* Autodiff's ReLU rule reads the pre-activation z: dz = [z > 0] dy. Since
 * [z > 0] = [relu(z) > 0] for every z, a mask gt(z, 0) that runs after the
 * ReLU may read relu(z) instead, which frees z to be folded into the
 * product's epilogue with the ReLU. Returns the chain's new end. */
static nnc_node *relu_with_mask(lower *L, nnc_node *z) {
  int id = z->id;
  if (L->out_kind[id] >= 0 || L->is_update[id] || L->nusers[id] != 2) return z;
  nnc_node *r = NULL, *mask = NULL;
  for (int i = 0; i < 2; i++) {
    nnc_node *u = L->users[id][i];
    if (u->op == NNC_OP_RELU)
      r = u;
    else if (u->op == NNC_OP_GT && u->in[0] == z && is_zero_const(u->in[1]))
      mask = u;
  }
  if (!r || !mask || mask->id < r->id) return z;
  L->subst[id] = r;
  return r;
}

/* ReLU's backward select on a product, select(gt(h, 0), mm, 0) (autodiff's
 * rule with relu_with_mask's h = relu(z)), where h has memory of its own
 * (a product's epilogue or a leaf): one kernel, the product with
 * NNC_CG_ACT_RELU_MASK, computing [h > 0] (A.B) as each tile is stored,
 * the same values as the select's kernel, which then is not run and does
 * not read the product back from memory. f32 programs only (the bf16
 * kernel has no such epilogue). */
static void match_relu_mask(lower *L, nnc_node *mm) {
  int id = mm->id;
  if (!L->p->fuse_masks || !L->p->use_gemm || L->p->bf16 || mm->dtype != NNC_F32 ||
      mm->shape.rank != 2 || L->final[id] != mm || !plain_node(L, mm))
    return;
  nnc_node *s = L->users[id][0], *c = s->in[0];
  if (s->op != NNC_OP_SELECT || s->in[1] != mm || c == mm || !is_zero_const(s->in[2]) ||
      !nnc_shape_eq(&s->shape, &mm->shape) || L->is_update[s->id] || c->op != NNC_OP_GT ||
      !is_zero_const(c->in[1]) || !plain_node(L, c) || !nnc_shape_eq(&c->shape, &mm->shape))
    return;
  const nnc_node *h = nnc_lw_substituted(L, c->in[0]);
  bool stored = L->final[h->id] == h || h->op == NNC_OP_PARAM || h->op == NNC_OP_INPUT;
  if (!stored || h->dtype != NNC_F32 || !nnc_shape_eq(&h->shape, &mm->shape)) return;
  L->final[id] = L->final[c->id] = L->final[s->id] = s;
  L->force[h->id] = true;
}

/* matmul -> add(bias row) -> relu becomes one kernel: marks the chain. */
void nnc_lw_match_epilogues(lower *L) {
  for (int i = 0; i < L->nn; i++) {
    nnc_node *mm = L->g->nodes[i];
    if (!L->live[i] || mm->op != NNC_OP_MATMUL) continue;
    L->final[i] = mm;
    nnc_node *last = mm;
    if (plain_node(L, mm) && L->users[i][0]->op == NNC_OP_ADD) {
      nnc_node *add = L->users[i][0];
      nnc_node *other = add->in[0] == mm ? add->in[1] : add->in[0];
      nnc_node *src = other != mm && nnc_shape_eq(&add->shape, &mm->shape)
                          ? nnc_lw_row_bias_source(other, mm->shape.dim[1])
                          : NULL;
      if (src) {
        L->force[src->id] = true;
        last = add;
      }
    }
    if (last != mm && plain_node(L, last) && L->users[last->id][0]->op == NNC_OP_RELU)
      last = L->users[last->id][0];
    else if (last != mm)
      last = relu_with_mask(L, last);
    for (nnc_node *n = mm;; n = L->users[n->id][0]) {
      L->final[n->id] = last;
      if (n == last) break;
    }
    L->force[mm->in[0]->id] = L->force[mm->in[1]->id] = true;
  }
  for (int i = 0; i < L->nn; i++)
    if (L->live[i] && L->g->nodes[i]->op == NNC_OP_MATMUL) match_relu_mask(L, L->g->nodes[i]);
}

/* Does user u read n at u's own index (same shape, elementwise)? */
static bool reads_at_own_index(const nnc_node *u, const nnc_node *n) {
  return is_elementwise(u) && nnc_shape_eq(&u->shape, &n->shape);
}

/* Does user u read each element of n more than once? */
static bool rereads(const nnc_node *u, const nnc_node *n) {
  if (u->op == NNC_OP_BROADCAST) return true;
  if (is_elementwise(u)) return nnc_shape_numel(&u->shape) > nnc_shape_numel(&n->shape);
  return false;
}

static void force_operands(lower *L, const nnc_node *n) {
  switch (nnc_lw_traits(n->op).force) {
  case FORCE_NONE: return;
  case FORCE_ALL:
    for (int i = 0; i < n->nin; i++)
      L->force[n->in[i]->id] = true;
    return;
  case FORCE_TABLE:
    L->force[n->in[0]->id] = true;
    if (!cheap(n->in[1])) L->force[n->in[1]->id] = true;
    return;
  case FORCE_COSTLY:
    for (int i = 0; i < n->nin; i++)
      if (!cheap(n->in[i])) L->force[n->in[i]->id] = true;
    return;
  }
}

/* Has memory whatever its users: a leaf, a view or a kernel op's result
 * (a node with other users than n most likely has memory too). */
static bool has_memory(const lower *L, const nnc_node *n) {
  return nnc_op_lowering_of(n->op) != NNC_LOWER_INLINE || L->force[n->id] ||
         L->out_kind[n->id] >= 0;
}

/* Elements n's readers load: those of the memory under a cheap node's
 * broadcasts and views, none for a constant. */
static int64_t read_numel(const nnc_node *n) {
  if (cheap(n))
    while (n->op == NNC_OP_BROADCAST || n->op == NNC_OP_RESHAPE || n->op == NNC_OP_TRANSPOSE)
      n = n->in[0];
  return n->op == NNC_OP_CONST ? 0 : nnc_shape_numel(&n->shape);
}

/* Is n worth computing again in each kernel that reads it rather than
 * storing it once? Yes for a cheap elementwise op of one full-size operand
 * (that has memory, or is recomputable in turn) and per-channel vectors,
 * constants or memory (batch norm's x - mean, its scale and shift, ReLU
 * after it): each reader then reads that operand where it would have read
 * n, the same traffic, and the pass that wrote n is saved. (An operand read
 * only by n that is not recomputable would take n's place in memory.) Every reader
 * must read each element once; vectors stay in memory (they would be
 * recomputed for every element of their broadcast). */
static bool recomputable(lower *L, const nnc_node *n, int depth) {
  enum { MAX_CHAIN = 8 }; /* operands looked through, so long chains cost no more */
  int id = n->id;
  if (depth > MAX_CHAIN) return false;
  if (!is_elementwise(n) || !nnc_lw_traits(n->op).one_op || L->is_update[id] || L->final[id])
    return false;
  int64_t numel = nnc_shape_numel(&n->shape);
  int big = 0;
  for (int i = 0; i < n->nin; i++) {
    const nnc_node *o = n->in[i];
    if (read_numel(o) * 8 <= numel) continue;
    if (nnc_shape_numel(&o->shape) != numel || (L->final[o->id] && L->final[o->id] != o) || big++)
      return false;
    if (!cheap(o) && !has_memory(L, o) && L->nusers[o->id] < 2 && !recomputable(L, o, depth + 1))
      return false;
  }
  if (big != 1) return false;
  for (int i = 0; i < L->nusers[id]; i++) {
    const nnc_node *u = L->users[id][i];
    node_state us = L->st[u->id];
    if (us == ST_DEAD || us == ST_ABSORBED) continue;
    if (rereads(u, n) || (!is_elementwise(u) && nnc_op_class_of(u->op) != NNC_CLASS_REDUCE &&
                          u->op != NNC_OP_TRANSPOSE))
      return false;
  }
  return true;
}

/* Chooses INLINE (with its root) or KERNEL for an inlinable node. */
static node_state decide_inline(lower *L, const nnc_node *n) {
  node_state s = decide_shared(L, n);
  if (s == ST_KERNEL && !L->force[n->id] && L->out_kind[n->id] < 0 && recomputable(L, n, 0)) {
    L->recompute[n->id] = true;
    return ST_INLINE;
  }
  return s;
}

/* decide_inline without recomputing. */
static node_state decide_shared(lower *L, const nnc_node *n) {
  int id = n->id, root = -1, nreal = 0;
  bool all_own = true, reread = false;
  if (L->force[id] || L->out_kind[id] >= 0) return ST_KERNEL;
  if (cheap(n)) return ST_INLINE; /* constants and views of memory: anywhere */
  for (int i = 0; i < L->nusers[id]; i++) {
    const nnc_node *u = L->users[id][i];
    node_state us = L->st[u->id];
    if (us == ST_DEAD || us == ST_ABSORBED) continue;
    if (L->recompute[u->id]) return ST_KERNEL; /* read in any number of kernels */
    int r = us == ST_KERNEL ? u->id : L->root[u->id];
    bool own = reads_at_own_index(u, n) && (us == ST_KERNEL || L->ident[u->id]);
    if (nreal++ && r != root) return ST_KERNEL;
    root = r;
    all_own &= own;
    reread |= rereads(u, n);
  }
  /* Pseudo-users: the update passes of the groups that store n. */
  for (int i = 0; i < L->g->nupdates; i++) {
    if (L->g->updates[i].value != n) continue;
    int r = L->nn + L->group_of[i];
    if (nreal++ && r != root) return ST_KERNEL;
    root = r;
  }
  if (nreal == 0) return n->op == NNC_OP_CONST ? ST_INLINE : ST_DEAD;
  if (reread && !cheap(n)) return ST_KERNEL;
  if (nreal > 1 && !all_own) return ST_KERNEL;
  L->root[id] = root;
  if (nreal > 1) {
    L->ident[id] = true;
  } else if (root >= L->nn) {
    L->ident[id] = true; /* stored by its update pass at that pass's index */
  } else {
    const nnc_node *u = NULL;
    for (int i = 0; i < L->nusers[id] && !u; i++)
      if (L->st[L->users[id][i]->id] != ST_DEAD && L->st[L->users[id][i]->id] != ST_ABSORBED)
        u = L->users[id][i];
    L->ident[id] = all_own && u && (L->st[u->id] == ST_KERNEL || L->ident[u->id]);
  }
  return ST_INLINE;
}

/* The one live reader of n, or NULL. */
static const nnc_node *sole_reader(const lower *L, const nnc_node *n) {
  const nnc_node *u = NULL;
  for (int i = 0; i < L->nusers[n->id]; i++) {
    const nnc_node *r = L->users[n->id][i];
    if (L->st[r->id] == ST_DEAD || L->st[r->id] == ST_ABSORBED) continue;
    if (u) return NULL;
    u = r;
  }
  return u;
}

/* An elementwise node without memory of its own that only one node reads:
 * computed where that reader (a reshape computed inline) is. */
static bool inlinable_elementwise(const lower *L, const nnc_node *x) {
  return nnc_op_lowering_of(x->op) == NNC_LOWER_INLINE && is_elementwise(x) && !cheap(x) &&
         !L->force[x->id] && L->out_kind[x->id] < 0 && !L->is_update[x->id] && !L->final[x->id] &&
         L->nusers[x->id] == 1 && x->op != NNC_OP_ALLREDUCE;
}

/* A reshape read only by a reduction's kernel, of an elementwise node that
 * only it reads, is computed inline (its operand too) rather than given
 * its operand's memory as a view: batch norm's sum of (x - mean)^2 and of
 * (x - mean) * dy over [G, N/G, C, H, W] groups of its [N, C, H, W]
 * operand then reads x and dy instead of a product stored for it by a
 * pass of its own. Only reshapes whose index map needs no division, and
 * reductions in lanes, which add each term as the stored one would be
 * added (an exact add: the product is rounded, not contracted). */
static bool reshape_into_reduction(lower *L, const nnc_node *n) {
  int id = n->id;
  if (n->op != NNC_OP_RESHAPE || L->force[id] || L->out_kind[id] >= 0 || L->is_update[id] ||
      !nnc_lw_reshape_cheap(n))
    return false;
  const nnc_node *u = sole_reader(L, n), *x = n->in[0];
  if (!u || (u->op != NNC_OP_SUM && u->op != NNC_OP_RMAX) || L->st[u->id] != ST_KERNEL ||
      u->in[0] != n || !nnc_lw_reduces_in_lanes(u) || !inlinable_elementwise(L, x))
    return false;
  L->root[id] = u->id;
  return true;
}

/* Whether im2col n (decided INLINE: nnc_lw_window_reduced) reads an
 * elementwise node, or a reshape of one, that its one window reduction
 * (a training step's, which saves the argmax: inference keeps the ReLU's
 * stored bytes for int8 requantisation) computes inline rather than
 * reading memory: max pooling after batch
 * norm and ReLU then reads the convolution's output, and the ReLU's
 * output (as large as the image) is neither written nor read back
 * (nnc_lw_kernel_window_reduce). The reshape to planes maps the plane
 * through a division, once a plane. */
static bool window_inlines(const lower *L, const nnc_node *n) {
  const nnc_node *r = n->in[0], *u = sole_reader(L, n);
  if (n->op != NNC_OP_IM2COL || L->st[n->id] != ST_INLINE || !u || L->st[u->id] != ST_KERNEL ||
      !L->index_of[u->id])
    return false;
  if (r->op != NNC_OP_RESHAPE) return inlinable_elementwise(L, r);
  return !L->force[r->id] && L->out_kind[r->id] < 0 && !L->is_update[r->id] &&
         sole_reader(L, r) == n && inlinable_elementwise(L, r->in[0]);
}

/* A reshape computed in its reader's window reduction (window_inlines). */
static bool reshape_into_window(lower *L, const nnc_node *n) {
  const nnc_node *u = sole_reader(L, n);
  if (n->op != NNC_OP_RESHAPE || !u || u->op != NNC_OP_IM2COL || !window_inlines(L, u))
    return false;
  L->root[n->id] = sole_reader(L, u)->id;
  return true;
}

void nnc_lw_decide(lower *L) {
  /* an f32 allreduce has a kernel of its own, after which the runtime's
   * hook sums its memory over the ranks; its readers read that memory (the
   * hook takes floats: the front end's models are f32; an f64 one is the
   * identity, one process's sum) */
  for (int id = 0; id < L->nn; id++)
    if (L->live[id] && L->g->nodes[id]->op == NNC_OP_ALLREDUCE && L->g->nodes[id]->dtype == NNC_F32)
      L->force[id] = true;
  for (int id = L->nn - 1; id >= 0; id--) {
    nnc_node *n = L->g->nodes[id];
    if (!L->live[id]) continue;
    bool used = L->out_kind[id] >= 0 || L->is_update[id] || L->force[id];
    for (int i = 0; i < L->nusers[id] && !used; i++) {
      node_state us = L->st[L->users[id][i]->id];
      used = us != ST_DEAD && us != ST_ABSORBED;
    }
    if (L->conv[id]) { /* a direct convolution's node (lower_conv.c) */
      L->st[id] = L->conv[id]->out == n && used ? ST_KERNEL : ST_DEAD;
      continue;
    }
    if (L->final[id] && L->final[id] != n) {
      L->st[id] = ST_ABSORBED;
      continue;
    }
    if (!used || (L->saved_by[id] && n->op != NNC_OP_CAST)) {
      L->st[id] = ST_DEAD; /* an argmax its window max's kernel saves: not computed */
      continue;
    }
    if (reshape_into_reduction(L, n) || reshape_into_window(L, n)) {
      L->st[id] = ST_INLINE;
      continue;
    }
    if (nnc_op_lowering_of(n->op) == NNC_LOWER_KERNEL && nnc_lw_window_reduced(L, n)) {
      L->st[id] = ST_INLINE;
      if (window_inlines(L, n))
        L->root[id] = sole_reader(L, n)->id;
      else
        force_operands(L, n);
      continue;
    }
    force_operands(L, n);
    switch (nnc_op_lowering_of(n->op)) {
    case NNC_LOWER_MEMORY: L->st[id] = ST_LEAF; break;
    case NNC_LOWER_VIEW: L->st[id] = ST_VIEW; break;
    case NNC_LOWER_KERNEL: L->st[id] = ST_KERNEL; break;
    case NNC_LOWER_INLINE: L->st[id] = L->final[id] == n ? ST_KERNEL : decide_inline(L, n); break;
    }
  }
}

/* Whether a graph's input or output of numel elements can use buffer b:
 * the same size, or a prefix of it for the micro-batch graph of
 * data-parallel training (its batch is a part of the others'). */
static bool fits(const lower *L, const nnc_kbuf *b, int64_t numel) {
  const nnc_module *m = L->p->module;
  return b->numel == numel || ((L->g == m->grad || L->g == m->grad_half) && numel < b->numel);
}

int nnc_lw_output_slot(lower *L, nnc_output_kind k, const nnc_node *n) {
  nnc_kprog *p = L->p;
  int64_t numel = nnc_shape_numel(&n->shape);
  if (p->output_buf[k] < 0) {
    p->output_buf[k] = nnc_kprog_add_buf(p, NNC_KBUF_OUTPUT, k, nnc_kt_of(n->dtype), numel,
                                         nnc_arena_printf(L->a, "out.%s", nnc_output_name(k)));
  }
  nnc_kbuf *b = &p->bufs[p->output_buf[k]];
  if (!fits(L, b, numel) || b->type != nnc_kt_of(n->dtype)) return -1;
  return p->output_buf[k];
}

bool nnc_lw_assign_buffers(lower *L) {
  nnc_kprog *p = L->p;
  for (int id = 0; id < L->nn; id++) {
    nnc_node *n = L->g->nodes[id];
    switch (L->st[id]) {
    case ST_LEAF:
      if (n->op == NNC_OP_PARAM) {
        L->buf[id] = p->tensor_bufs[n->attr[0]];
      } else {
        int k = (int)n->attr[0];
        int64_t numel = nnc_shape_numel(&n->shape);
        if (p->input_buf[k] < 0) {
          p->input_buf[k] =
              nnc_kprog_add_buf(p, NNC_KBUF_INPUT, k, nnc_kt_of(n->dtype), numel,
                                nnc_arena_printf(L->a, "in.%s", nnc_input_name((nnc_input_kind)k)));
        }
        if (!fits(L, &p->bufs[p->input_buf[k]], numel) ||
            p->bufs[p->input_buf[k]].type != nnc_kt_of(n->dtype))
          return nnc_lw_fail(L, "the graphs disagree on an input's shape", n);
        L->buf[id] = p->input_buf[k];
      }
      break;
    case ST_VIEW:
      if (L->buf[n->in[0]->id] < 0) return nnc_lw_fail(L, "reshape of a node without memory", n);
      L->buf[id] = nnc_kprog_add_buf(p, NNC_KBUF_VIEW, L->buf[n->in[0]->id], nnc_kt_of(n->dtype),
                                     nnc_shape_numel(&n->shape), n->name);
      break;
    case ST_KERNEL:
      if (L->out_kind[id] >= 0) {
        L->buf[id] = nnc_lw_output_slot(L, (nnc_output_kind)L->out_kind[id], n);
        if (L->buf[id] < 0) return nnc_lw_fail(L, "the graphs disagree on an output's shape", n);
      } else {
        char name[64];
        snprintf(name, sizeof name, "%s.%%%d.%s", L->g->name, id, nnc_op_name(n->op));
        L->buf[id] = nnc_kprog_add_buf(p, NNC_KBUF_TEMP, 0, nnc_kt_of(n->dtype),
                                       nnc_shape_numel(&n->shape), name);
      }
      break;
    case ST_DEAD:
    case ST_INLINE:
    case ST_ABSORBED: break;
    }
  }
  return true;
}

/* Whether every live reader of node id is an op in `ok` (and there is one). */
static bool read_only_by(lower *L, int id, nnc_op ok) {
  int readers = 0;
  for (int i = 0; i < L->nusers[id]; i++) {
    const nnc_node *u = L->users[id][i];
    if (L->st[u->id] == ST_DEAD) continue;
    if (u->op != ok) return false;
    readers++;
  }
  return readers > 0;
}

/* Whether node id may be stored last axis major: f32 with memory of its
 * own or a view, rank 2 or more, not an output or update value, nothing
 * read in its place. */
static bool may_reorder(lower *L, int id, node_state st) {
  const nnc_node *n = L->g->nodes[id];
  return L->live[id] && L->st[id] == st && n->dtype == NNC_F32 && n->shape.rank >= 2 &&
         L->out_kind[id] < 0 && !L->is_update[id] && !L->subst[id] &&
         (!L->final[id] || L->final[id] == n);
}

/* A transpose whose every reader is a view of the same last axis read only
 * by products (NCHW -> NHWC of a convolution's output gradient, read as
 * dy [N*H*W, C]): marks it and its views. */
static void reorder_transpose(lower *L, int id) {
  const nnc_node *n = L->g->nodes[id];
  int64_t last = n->shape.dim[n->shape.rank - 1];
  int views = 0;
  for (int i = 0; i < L->nusers[id]; i++) {
    const nnc_node *u = L->users[id][i];
    if (L->st[u->id] == ST_DEAD) continue;
    if (u->op != NNC_OP_RESHAPE || !may_reorder(L, u->id, ST_VIEW) ||
        u->shape.dim[u->shape.rank - 1] != last || !read_only_by(L, u->id, NNC_OP_MATMUL))
      return;
    views++;
  }
  if (!views) return;
  L->trans[id] = true;
  for (int i = 0; i < L->nusers[id]; i++)
    if (L->st[L->users[id][i]->id] != ST_DEAD) L->trans[L->users[id][i]->id] = true;
}

/* A layout is the codegen's choice: the graph's meaning is unchanged, only
 * the order of the elements in the node's buffer. A convolution's columns
 * (im2col, [N*OH*OW, C*KH*KW]) stored transposed are rows of whole output
 * images per tap, so im2col is a shifted copy of image rows, contiguous on
 * both sides, instead of a gather of C*KH*KW scattered pixels per row; the
 * products that read them take them as the other operand layout (gemm.c
 * reads either). Likewise a product read only by col2im (the input
 * gradient dy.W) is computed transposed, as (W^T.dy^T), so col2im reads
 * its cells along the image row instead of with a stride of C*KH*KW; and
 * the output gradient's NCHW -> NHWC transpose for the products is stored
 * channel-major (CNHW), a copy of whole image planes. A product's operand
 * layouts pick its micro-kernel and packing (gemm_plan.c: e.g. the dot
 * form needs A untransposed, so a forward product below 1,024 rows changes
 * form), and with them the order of its sums: a new draw of single-seed
 * results. Each element is still summed in a fixed order whatever the
 * thread count. Only f32 products through gemm, and only nodes whose
 * every reader reads the buffer itself: products, col2im (through
 * nnc_lw_at) and views marked alike. */
void nnc_lw_choose_layouts(lower *L) {
  if (!L->p->use_gemm) return;
  for (int id = 0; id < L->nn; id++) {
    const nnc_node *n = L->g->nodes[id];
    if (!may_reorder(L, id, ST_KERNEL)) continue;
    if (n->op == NNC_OP_IM2COL && read_only_by(L, id, NNC_OP_MATMUL))
      L->trans[id] = true;
    else if (n->op == NNC_OP_MATMUL && n->shape.rank == 2 && read_only_by(L, id, NNC_OP_COL2IM))
      L->trans[id] = true;
    else if (n->op == NNC_OP_TRANSPOSE && !L->final[id])
      reorder_transpose(L, id);
  }
}
