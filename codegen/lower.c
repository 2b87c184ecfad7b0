/* lower.c: graph IR -> kernel IR, with fusion.
 *
 * Takes a module's train and eval graphs, gives every persistent tensor,
 * input and output a buffer, and turns each graph into a list of kernels
 * (kernel.h) in an order that respects its dependences. Plan.c then places
 * the buffers, llvm.c emits the kernels.
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
 * elements. Products, reductions, windows and scatters are KERNEL nodes;
 * a product followed by a row-vector bias add and a ReLU is one gemm call
 * with the epilogue folded in.
 *
 * Updates (ir.h invariant 5, simultaneous assignment): the update values of
 * all tensors of one shape are computed in one pass that evaluates every
 * new value at an index before it stores any, e.g. Adam's m, v and weight
 * in one loop. A tensor is written in place when that pass reads its old
 * value only at the index being written and no other update pass reads it;
 * otherwise into a temporary copied back after every pass has run.
 */
#include <stdio.h>
#include <string.h>

#include "kernel.h"

typedef enum node_state {
  ST_DEAD,
  ST_LEAF,     /* PARAM / INPUT: memory of its own, no kernel */
  ST_VIEW,     /* RESHAPE of a node with memory */
  ST_INLINE,   /* computed inside its consumers' kernel */
  ST_KERNEL,   /* computed by a kernel of its own into its buffer */
  ST_ABSORBED, /* computed by a later node's kernel (gemm epilogue chain) */
} node_state;

typedef struct memo {
  int rank;
  nnc_kexpr *idx[NNC_MAX_RANK];
  nnc_kexpr *val;
  struct memo *next;
} memo;

typedef struct lower {
  nnc_kprog *p;
  nnc_arena *a;
  const nnc_graph *g;
  nnc_kgraph *kg;
  int nn;
  bool *live, *force, *ident;
  bool *recompute; /* INLINE in every kernel that reads it (see recomputable) */
  int *out_kind;   /* first output kind of a node, or -1 */
  int *is_update;  /* number of updates whose value is the node */
  nnc_node ***users;
  int *nusers;
  node_state *st;
  int *root;        /* INLINE: node id of the kernel node, or nn + group */
  int *buf;         /* buffer of a node with memory, else -1 */
  nnc_node **final; /* ABSORBED chain: the node whose kernel computes it */
  nnc_node **subst; /* an ABSORBED node its readers read instead (see match_epilogues) */
  int *group_of;    /* update index -> group */
  int ngroups;
  int nmade; /* kernels created so far: their names' numbers */
  char *err;
  size_t errlen;
} lower;

/* Expression building state of one kernel. */
typedef struct kgen {
  nnc_kernel *k;
  const nnc_node *self; /* the node this kernel computes (generated, not loaded) */
  memo **memo;          /* [nn] */
  nnc_kexpr *zero;
} kgen;

static bool fail(lower *L, const char *msg, const nnc_node *n) {
  snprintf(L->err, L->errlen, "codegen: %s (graph %s, node %%%d %s)", msg, L->g->name,
           n ? n->id : -1, n ? nnc_op_name(n->op) : "");
  return false;
}

/* Computed from its operands' elements at its own (broadcast) index. */
static bool is_elementwise(const nnc_node *n) {
  switch (n->op) {
  case NNC_OP_NEG:
  case NNC_OP_EXP:
  case NNC_OP_LOG:
  case NNC_OP_SQRT:
  case NNC_OP_RSQRT:
  case NNC_OP_RECIP:
  case NNC_OP_TANH:
  case NNC_OP_SIGMOID:
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR:
  case NNC_OP_CAST:
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ:
  case NNC_OP_SELECT: return true;
  case NNC_OP_INPUT:
  case NNC_OP_PARAM:
  case NNC_OP_CONST:
  case NNC_OP_SUM:
  case NNC_OP_RMAX:
  case NNC_OP_ARGMAX:
  case NNC_OP_RESHAPE:
  case NNC_OP_TRANSPOSE:
  case NNC_OP_BROADCAST:
  case NNC_OP_MATMUL:
  case NNC_OP_IM2COL:
  case NNC_OP_COL2IM:
  case NNC_OP_GATHER:
  case NNC_OP_SCATTER_ADD:
  case NNC_OP_ONEHOT:
  case NNC_OP_RAND:
  case NNC_OP_COUNT_: break;
  }
  return false;
}

/* Costs nothing to evaluate again: constants and memory, through index maps. */
static bool cheap(const nnc_node *n) {
  switch (n->op) {
  case NNC_OP_PARAM:
  case NNC_OP_INPUT:
  case NNC_OP_CONST: return true;
  case NNC_OP_BROADCAST:
  case NNC_OP_RESHAPE:
  case NNC_OP_TRANSPOSE: return cheap(n->in[0]);
  case NNC_OP_NEG:
  case NNC_OP_EXP:
  case NNC_OP_LOG:
  case NNC_OP_SQRT:
  case NNC_OP_RSQRT:
  case NNC_OP_RECIP:
  case NNC_OP_TANH:
  case NNC_OP_SIGMOID:
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR:
  case NNC_OP_CAST:
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ:
  case NNC_OP_SELECT:
  case NNC_OP_SUM:
  case NNC_OP_RMAX:
  case NNC_OP_ARGMAX:
  case NNC_OP_MATMUL:
  case NNC_OP_IM2COL:
  case NNC_OP_COL2IM:
  case NNC_OP_GATHER:
  case NNC_OP_SCATTER_ADD:
  case NNC_OP_ONEHOT:
  case NNC_OP_RAND:
  case NNC_OP_COUNT_: break;
  }
  return false;
}

/* ---- Liveness and users ---- */

static void mark_live(lower *L, const nnc_node *n) {
  if (L->live[n->id]) return;
  L->live[n->id] = true;
  for (int i = 0; i < n->nin; i++)
    mark_live(L, n->in[i]);
}

static void add_user(lower *L, nnc_node *n, nnc_node *user) {
  int id = n->id;
  for (int i = 0; i < L->nusers[id]; i++)
    if (L->users[id][i] == user) return;
  L->users[id] = nnc_arena_grow(L->a, L->users[id], sizeof(nnc_node *) * (size_t)L->nusers[id],
                                sizeof(nnc_node *) * (size_t)(L->nusers[id] + 1));
  L->users[id][L->nusers[id]++] = user;
}

/* ---- Matrix-product epilogues ---- */

/* If b is a row vector [1, N] (through broadcasts and reshapes) of a node
 * with N contiguous elements, returns that node. */
static nnc_node *row_bias_source(nnc_node *b, int64_t N) {
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

/* matmul -> add(bias row) -> relu becomes one kernel: marks the chain. */
static void match_epilogues(lower *L) {
  for (int i = 0; i < L->nn; i++) {
    nnc_node *mm = L->g->nodes[i];
    if (!L->live[i] || mm->op != NNC_OP_MATMUL) continue;
    L->final[i] = mm;
    nnc_node *last = mm;
    if (plain_node(L, mm) && L->users[i][0]->op == NNC_OP_ADD) {
      nnc_node *add = L->users[i][0];
      nnc_node *other = add->in[0] == mm ? add->in[1] : add->in[0];
      nnc_node *src = other != mm && nnc_shape_eq(&add->shape, &mm->shape)
                          ? row_bias_source(other, mm->shape.dim[1])
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
}

/* ---- Deciding what gets memory ---- */

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
  switch (n->op) {
  case NNC_OP_IM2COL:
  case NNC_OP_SCATTER_ADD:
  case NNC_OP_RESHAPE:
    for (int i = 0; i < n->nin; i++)
      L->force[n->in[i]->id] = true;
    break;
  case NNC_OP_GATHER:
    L->force[n->in[0]->id] = true;
    if (!cheap(n->in[1])) L->force[n->in[1]->id] = true;
    break;
  case NNC_OP_ONEHOT:
  case NNC_OP_RAND:
    for (int i = 0; i < n->nin; i++)
      if (!cheap(n->in[i])) L->force[n->in[i]->id] = true;
    break;
  /* read at the reader's own index, or through kernels of their own */
  case NNC_OP_INPUT:
  case NNC_OP_PARAM:
  case NNC_OP_CONST:
  case NNC_OP_NEG:
  case NNC_OP_EXP:
  case NNC_OP_LOG:
  case NNC_OP_SQRT:
  case NNC_OP_RSQRT:
  case NNC_OP_RECIP:
  case NNC_OP_TANH:
  case NNC_OP_SIGMOID:
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR:
  case NNC_OP_CAST:
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ:
  case NNC_OP_SELECT:
  case NNC_OP_SUM:
  case NNC_OP_RMAX:
  case NNC_OP_ARGMAX:
  case NNC_OP_TRANSPOSE:
  case NNC_OP_BROADCAST:
  case NNC_OP_MATMUL:
  case NNC_OP_COL2IM:
  case NNC_OP_COUNT_: break;
  }
}

/* One vector op per element, whatever the operands. */
static bool cheap_op(nnc_op op) {
  switch (op) {
  case NNC_OP_NEG:
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ:
  case NNC_OP_SELECT: return true;
  case NNC_OP_INPUT:
  case NNC_OP_PARAM:
  case NNC_OP_CONST:
  case NNC_OP_EXP:
  case NNC_OP_LOG:
  case NNC_OP_SQRT:
  case NNC_OP_RSQRT:
  case NNC_OP_RECIP:
  case NNC_OP_TANH:
  case NNC_OP_SIGMOID:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR:
  case NNC_OP_CAST:
  case NNC_OP_DIV:
  case NNC_OP_POW:
  case NNC_OP_SUM:
  case NNC_OP_RMAX:
  case NNC_OP_ARGMAX:
  case NNC_OP_RESHAPE:
  case NNC_OP_TRANSPOSE:
  case NNC_OP_BROADCAST:
  case NNC_OP_MATMUL:
  case NNC_OP_IM2COL:
  case NNC_OP_COL2IM:
  case NNC_OP_GATHER:
  case NNC_OP_SCATTER_ADD:
  case NNC_OP_ONEHOT:
  case NNC_OP_RAND:
  case NNC_OP_COUNT_: break;
  }
  return false;
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
  if (!is_elementwise(n) || !cheap_op(n->op) || L->is_update[id] || L->final[id]) return false;
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

static void decide(lower *L) {
  for (int id = L->nn - 1; id >= 0; id--) {
    nnc_node *n = L->g->nodes[id];
    if (!L->live[id]) continue;
    bool used = L->out_kind[id] >= 0 || L->is_update[id] || L->force[id];
    for (int i = 0; i < L->nusers[id] && !used; i++) {
      node_state us = L->st[L->users[id][i]->id];
      used = us != ST_DEAD && us != ST_ABSORBED;
    }
    if (L->final[id] && L->final[id] != n) {
      L->st[id] = ST_ABSORBED;
      continue;
    }
    if (!used) {
      L->st[id] = ST_DEAD;
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

/* ---- Buffers ---- */

static int output_slot(lower *L, nnc_output_kind k, const nnc_node *n) {
  nnc_kprog *p = L->p;
  int64_t numel = nnc_shape_numel(&n->shape);
  if (p->output_buf[k] < 0) {
    p->output_buf[k] = nnc_kprog_add_buf(p, NNC_KBUF_OUTPUT, k, nnc_kt_of(n->dtype), numel,
                                         nnc_arena_printf(L->a, "out.%s", nnc_output_name(k)));
  }
  nnc_kbuf *b = &p->bufs[p->output_buf[k]];
  if (b->numel != numel || b->type != nnc_kt_of(n->dtype)) return -1;
  return p->output_buf[k];
}

static bool assign_buffers(lower *L) {
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
        if (p->bufs[p->input_buf[k]].numel != numel ||
            p->bufs[p->input_buf[k]].type != nnc_kt_of(n->dtype))
          return fail(L, "the graphs disagree on an input's shape", n);
        L->buf[id] = p->input_buf[k];
      }
      break;
    case ST_VIEW:
      if (L->buf[n->in[0]->id] < 0) return fail(L, "reshape of a node without memory", n);
      L->buf[id] = nnc_kprog_add_buf(p, NNC_KBUF_VIEW, L->buf[n->in[0]->id], nnc_kt_of(n->dtype),
                                     nnc_shape_numel(&n->shape), n->name);
      break;
    case ST_KERNEL:
      if (L->out_kind[id] >= 0) {
        L->buf[id] = output_slot(L, (nnc_output_kind)L->out_kind[id], n);
        if (L->buf[id] < 0) return fail(L, "the graphs disagree on an output's shape", n);
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

/* ---- Expressions ---- */

static nnc_kexpr *linear(lower *L, nnc_kexpr **idx, const nnc_shape *s) {
  nnc_kexpr *e = nnc_kx_int(L->a, 0);
  int64_t stride = 1;
  for (int d = s->rank - 1; d >= 0; d--) {
    e = nnc_kx_iadd(L->a, e, nnc_kx_imul(L->a, idx[d], stride));
    stride *= s->dim[d];
  }
  return e;
}

/* The index at which an operand of shape `in` is read when its broadcasting
 * consumer is at idx (ir.h invariant 3). */
static void bcast_index(kgen *G, nnc_kexpr **idx, const nnc_shape *out, const nnc_shape *in,
                        nnc_kexpr **res) {
  (void)out;
  for (int d = 0; d < in->rank; d++)
    res[d] = in->dim[d] == 1 ? G->zero : idx[d];
}

/* Splits a flat index into the coordinates of shape s. */
static void unflatten(lower *L, nnc_kexpr *flat, const nnc_shape *s, nnc_kexpr **res) {
  int64_t stride = 1;
  for (int d = s->rank - 1; d >= 0; d--) {
    nnc_kexpr *q = stride == 1 ? flat : nnc_kx_bin(L->a, NNC_K_DIV, flat, nnc_kx_int(L->a, stride));
    res[d] = d == 0 ? q : nnc_kx_bin(L->a, NNC_K_REM, q, nnc_kx_int(L->a, s->dim[d]));
    stride *= s->dim[d];
  }
}

static nnc_kexpr *gen(lower *L, kgen *G, const nnc_node *n, nnc_kexpr **idx);

static nnc_kexpr *fconst(lower *L, const nnc_node *n, double v) {
  return nnc_kx_const(L->a, nnc_kt_of(n->dtype), v);
}

static nnc_kop kop_of(nnc_op op) {
  switch (op) {
  case NNC_OP_NEG: return NNC_K_NEG;
  case NNC_OP_EXP: return NNC_K_EXP;
  case NNC_OP_LOG: return NNC_K_LOG;
  case NNC_OP_SQRT: return NNC_K_SQRT;
  case NNC_OP_RSQRT: return NNC_K_RSQRT;
  case NNC_OP_RECIP: return NNC_K_RECIP;
  case NNC_OP_TANH: return NNC_K_TANH;
  case NNC_OP_SIGMOID: return NNC_K_SIGMOID;
  case NNC_OP_RELU: return NNC_K_RELU;
  case NNC_OP_ABS: return NNC_K_ABS;
  case NNC_OP_SIGN: return NNC_K_SIGN;
  case NNC_OP_ERF: return NNC_K_ERF;
  case NNC_OP_COS: return NNC_K_COS;
  case NNC_OP_FLOOR: return NNC_K_FLOOR;
  case NNC_OP_ADD: return NNC_K_ADD;
  case NNC_OP_SUB: return NNC_K_SUB;
  case NNC_OP_MUL: return NNC_K_MUL;
  case NNC_OP_DIV: return NNC_K_DIV;
  case NNC_OP_MAX: return NNC_K_MAX;
  case NNC_OP_MIN: return NNC_K_MIN;
  case NNC_OP_POW: return NNC_K_POW;
  case NNC_OP_GT: return NNC_K_GT;
  case NNC_OP_GE: return NNC_K_GE;
  case NNC_OP_EQ: return NNC_K_EQ;
  /* not elementwise unary, binary or comparison */
  case NNC_OP_INPUT:
  case NNC_OP_PARAM:
  case NNC_OP_CONST:
  case NNC_OP_CAST:
  case NNC_OP_SELECT:
  case NNC_OP_SUM:
  case NNC_OP_RMAX:
  case NNC_OP_ARGMAX:
  case NNC_OP_RESHAPE:
  case NNC_OP_TRANSPOSE:
  case NNC_OP_BROADCAST:
  case NNC_OP_MATMUL:
  case NNC_OP_IM2COL:
  case NNC_OP_COL2IM:
  case NNC_OP_GATHER:
  case NNC_OP_SCATTER_ADD:
  case NNC_OP_ONEHOT:
  case NNC_OP_RAND:
  case NNC_OP_COUNT_: break;
  }
  nnc_ir_bug("codegen: %s is not elementwise", nnc_op_name(op));
}

/* Clamps an i64 index into [0, hi). */
static nnc_kexpr *clamp_index(lower *L, nnc_kexpr *i, int64_t hi) {
  nnc_kexpr *lo = nnc_kx_bin(L->a, NNC_K_MAX, i, nnc_kx_int(L->a, 0));
  return nnc_kx_bin(L->a, NNC_K_MIN, lo, nnc_kx_int(L->a, hi - 1));
}

/* An operand that is an integer in the graph's sense (i32, or a float
 * holding an integer) as an i64 index. */
static nnc_kexpr *as_index(lower *L, nnc_kexpr *e) {
  if (nnc_kt_is_float(e->type)) e = nnc_kx_un(L->a, NNC_K_FLOOR, e);
  return nnc_kx_cast(L->a, e, NNC_KT_I64);
}

/* Value of node n at idx, computed (not loaded) by the op's definition. */
static nnc_kexpr *gen_op(lower *L, kgen *G, const nnc_node *n, nnc_kexpr **idx) {
  nnc_arena *a = L->a;
  nnc_kexpr *sub[3][NNC_MAX_RANK];
  switch (n->op) {
  case NNC_OP_CONST: return fconst(L, n, n->fattr);
  case NNC_OP_NEG:
  case NNC_OP_EXP:
  case NNC_OP_LOG:
  case NNC_OP_SQRT:
  case NNC_OP_RSQRT:
  case NNC_OP_RECIP:
  case NNC_OP_TANH:
  case NNC_OP_SIGMOID:
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR: return nnc_kx_un(a, kop_of(n->op), gen(L, G, n->in[0], idx));
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ: {
    for (int i = 0; i < 2; i++)
      bcast_index(G, idx, &n->shape, &n->in[i]->shape, sub[i]);
    nnc_kexpr *x = gen(L, G, n->in[0], sub[0]), *y = gen(L, G, n->in[1], sub[1]);
    nnc_kexpr *r = nnc_kx_bin(a, kop_of(n->op), x, y);
    if (r->type == NNC_KT_BOOL) r = nnc_kx_select(a, r, fconst(L, n, 1), fconst(L, n, 0));
    return r;
  }
  case NNC_OP_SELECT: {
    for (int i = 0; i < 3; i++)
      bcast_index(G, idx, &n->shape, &n->in[i]->shape, sub[i]);
    nnc_kexpr *c = gen(L, G, n->in[0], sub[0]);
    c = nnc_kx_bin(a, NNC_K_NE, c, nnc_kx_const(a, c->type, 0));
    return nnc_kx_select(a, c, gen(L, G, n->in[1], sub[1]), gen(L, G, n->in[2], sub[2]));
  }
  case NNC_OP_CAST: return nnc_kx_cast(a, gen(L, G, n->in[0], idx), nnc_kt_of(n->dtype));
  case NNC_OP_BROADCAST:
    bcast_index(G, idx, &n->shape, &n->in[0]->shape, sub[0]);
    return gen(L, G, n->in[0], sub[0]);
  case NNC_OP_TRANSPOSE:
    for (int i = 0; i < n->shape.rank; i++)
      sub[0][n->attr[i]] = idx[i];
    return gen(L, G, n->in[0], sub[0]);
  case NNC_OP_RESHAPE:
    unflatten(L, linear(L, idx, &n->shape), &n->in[0]->shape, sub[0]);
    return gen(L, G, n->in[0], sub[0]);
  case NNC_OP_ONEHOT: {
    nnc_kexpr *label = as_index(L, gen(L, G, n->in[0], idx));
    nnc_kexpr *hit = nnc_kx_bin(a, NNC_K_EQ, label, idx[n->shape.rank - 1]);
    return nnc_kx_select(a, hit, fconst(L, n, 1), fconst(L, n, 0));
  }
  case NNC_OP_GATHER: {
    const nnc_node *table = n->in[0];
    nnc_kexpr *row = clamp_index(L, as_index(L, gen(L, G, n->in[1], idx)), table->shape.dim[0]);
    nnc_kexpr *at =
        nnc_kx_iadd(a, nnc_kx_imul(a, row, table->shape.dim[1]), idx[n->shape.rank - 1]);
    return nnc_kx_load(a, L->p, L->buf[table->id], at);
  }
  case NNC_OP_RAND: {
    nnc_kexpr *seed = gen(L, G, n->in[0], sub[0]); /* rank-0 operands: no index */
    nnc_kexpr *step = gen(L, G, n->in[1], sub[1]);
    if (nnc_kt_is_float(seed->type)) seed = nnc_kx_cast(a, seed, NNC_KT_I64);
    if (nnc_kt_is_float(step->type)) {
      nnc_kexpr *pos = nnc_kx_bin(a, NNC_K_GT, step, nnc_kx_const(a, step->type, 0));
      step = nnc_kx_select(a, pos, nnc_kx_cast(a, step, NNC_KT_I64), nnc_kx_int(a, 0));
    } else {
      step = nnc_kx_cast(a, step, NNC_KT_I64);
    }
    return nnc_kx_rand(a, nnc_kt_of(n->dtype), seed, step, linear(L, idx, &n->shape), n->attr[0]);
  }
  case NNC_OP_INPUT:
  case NNC_OP_PARAM:
  case NNC_OP_SUM:
  case NNC_OP_RMAX:
  case NNC_OP_ARGMAX:
  case NNC_OP_MATMUL:
  case NNC_OP_IM2COL:
  case NNC_OP_COL2IM:
  case NNC_OP_SCATTER_ADD:
  case NNC_OP_COUNT_: break;
  }
  nnc_ir_bug("codegen: %s cannot be computed inline", nnc_op_name(n->op));
}

static nnc_kexpr *gen(lower *L, kgen *G, const nnc_node *n, nnc_kexpr **idx) {
  if (L->subst[n->id]) n = L->subst[n->id];
  int id = n->id;
  if (L->buf[id] >= 0 && n != G->self)
    return nnc_kx_load(L->a, L->p, L->buf[id], linear(L, idx, &n->shape));
  int rank = n->shape.rank;
  for (memo *m = G->memo[id]; m; m = m->next)
    if (m->rank == rank && !memcmp(m->idx, idx, sizeof(nnc_kexpr *) * (size_t)rank)) return m->val;
  nnc_kexpr *v = gen_op(L, G, n, idx);
  memo *m = nnc_arena_alloc(L->a, sizeof *m);
  m->rank = rank;
  memcpy(m->idx, idx, sizeof(nnc_kexpr *) * (size_t)rank);
  m->val = v;
  m->next = G->memo[id];
  G->memo[id] = m;
  return v;
}

/* Where node n came from, for profiles: the front end names the nodes of
 * each layer ("mlp.dense1"); autodiff's and the optimizer's nodes have no
 * name, so a backward node is named after the nearest parameter, else the
 * nearest named node, among its operands (breadth first, a few levels). */
static const char *origin(lower *L, const nnc_node *n) {
  if (n->name) return nnc_arena_printf(L->a, "%s fwd", n->name);
  const nnc_node *level[64], *next[64];
  int nl = 1;
  level[0] = n;
  for (int depth = 0; depth < 4 && nl; depth++) {
    int nx = 0;
    const char *named = NULL;
    for (int i = 0; i < nl; i++)
      for (int j = 0; j < level[i]->nin; j++) {
        const nnc_node *u = level[i]->in[j];
        if (u->op == NNC_OP_PARAM)
          return nnc_arena_printf(L->a, "%s bwd", L->p->module->tensors[u->attr[0]].name);
        if (u->name && !named) named = u->name;
        if (nx < 64) next[nx++] = u;
      }
    if (named) return nnc_arena_printf(L->a, "%s bwd", named);
    memcpy(level, next, sizeof(next[0]) * (size_t)nx);
    nl = nx;
  }
  return "";
}

static nnc_kernel *new_kernel(lower *L, kgen *G, const char *what, const nnc_node *self) {
  char name[96];
  snprintf(name, sizeof name, "%s.k%d.%s", L->g->name, L->nmade, what);
  nnc_kernel *k = nnc_kernel_new(L->a, name);
  k->label =
      self ? nnc_arena_printf(L->a, "k%d %s %%%d %s", L->nmade, what, self->id, origin(L, self))
           : nnc_arena_printf(L->a, "k%d %s", L->nmade, what);
  L->nmade++;
  memset(G, 0, sizeof *G);
  G->k = k;
  G->self = self;
  G->memo = nnc_arena_alloc(L->a, sizeof(memo *) * (size_t)(L->nn + 1));
  G->zero = nnc_kx_int(L->a, 0);
  return k;
}

static void add_kernel(lower *L, nnc_kernel *k) {
  nnc_kernel_finish(L->a, k);
  nnc_kgraph_add(L->a, L->kg, k);
}

/* A loop per dim of s; idx gets the loop variables; returns the body. The
 * outermost loop is the one split over threads. */
static nnc_kblock *nest(lower *L, nnc_kernel *k, const nnc_shape *s, nnc_kexpr **idx) {
  nnc_kblock *blk = &k->body;
  for (int d = 0; d < s->rank; d++) {
    int v = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, v, s->dim[d]);
    idx[d] = nnc_kx_var(L->a, v);
  }
  if (s->rank > 0) {
    k->split = true;
    k->extent = s->dim[0];
  }
  return blk;
}

static double expr_cost(const nnc_kexpr *e) {
  return e->kind == NNC_KX_UN && (e->op == NNC_K_EXP || e->op == NNC_K_LOG || e->op == NNC_K_TANH)
             ? 20
             : 2;
}

/* ---- Kernels per op ---- */

/* Loops for a transpose in the order of its operand's axes: the operand
 * is read contiguously and the writes stride. idx gets the output's
 * coordinates; returns the body. */
static nnc_kblock *nest_source_order(lower *L, nnc_kernel *k, const nnc_node *n, nnc_kexpr **idx) {
  const nnc_shape *src = &n->in[0]->shape;
  nnc_kexpr *v[NNC_MAX_RANK] = {0};
  nnc_kblock *blk = &k->body;
  for (int d = 0; d < src->rank; d++) {
    int var = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, var, src->dim[d]);
    v[d] = nnc_kx_var(L->a, var);
  }
  for (int i = 0; i < n->shape.rank; i++)
    idx[i] = v[n->attr[i]];
  k->split = true;
  k->extent = src->dim[0];
  return blk;
}

/* A transpose walked in output order reads its operand with a stride; the
 * cache lines it touches are reused by the next index of the operand's
 * innermost axis if they still fit in L1: lines = product of the output
 * extents inside that axis. When they do not (NHWC -> NCHW of a 28x28
 * image: 784 lines) but walking in the operand's order would keep its
 * strided writes to few lines (32 channels), walk in the operand's order. */
static bool transpose_in_source_order(const nnc_node *n) {
  enum { L1_LINES = 256 }; /* 16 KiB of 64-byte lines: a third of L1 */
  int r = n->shape.rank;
  if (n->op != NNC_OP_TRANSPOSE || r < 2 || n->attr[r - 1] == r - 1) return false;
  const nnc_shape *src = &n->in[0]->shape;
  int64_t out_lines = 1, src_lines = 1;
  int j = 0;
  while (n->attr[j] != r - 1)
    j++;
  for (int i = j + 1; i < r; i++)
    out_lines *= n->shape.dim[i];
  for (int i = (int)n->attr[r - 1] + 1; i < r; i++)
    src_lines *= src->dim[i];
  return out_lines > L1_LINES && src_lines <= L1_LINES;
}

static void kernel_elementwise(lower *L, const nnc_node *n) {
  kgen G;
  nnc_kernel *k = new_kernel(L, &G, nnc_op_name(n->op), n);
  nnc_kexpr *idx[NNC_MAX_RANK];
  nnc_kblock *blk =
      transpose_in_source_order(n) ? nest_source_order(L, k, n, idx) : nest(L, k, &n->shape, idx);
  nnc_kexpr *v = gen(L, &G, n, idx);
  nnc_kb_store(L->a, blk, L->buf[n->id], linear(L, idx, &n->shape), v);
  k->work = (double)nnc_shape_numel(&n->shape) * expr_cost(v) * 4;
  add_kernel(L, k);
}

/* A block of columns that divides n into at least 2 parts, or n. */
static int64_t column_block(int64_t n) {
  for (int64_t b = 256; b >= 16; b /= 2)
    if (n % b == 0 && n / b >= 2) return b;
  return n;
}

/* The coefficient of loop variable v in the i64 expression e, or
 * NOT_AFFINE when e is not affine in v. */
#define NOT_AFFINE INT64_MIN
static int64_t coef_of(const nnc_kexpr *e, int v) {
  switch (e->kind) {
  case NNC_KX_VAR: return e->var == v;
  case NNC_KX_CONST: return 0;
  case NNC_KX_BIN: {
    int64_t x = coef_of(e->a[0], v), y = coef_of(e->a[1], v);
    if (x == NOT_AFFINE || y == NOT_AFFINE) return NOT_AFFINE;
    if (e->op == NNC_K_ADD) return x + y;
    if (e->op == NNC_K_SUB) return x - y;
    if (x == 0 && y == 0) return 0;
    if (e->op != NNC_K_MUL) return NOT_AFFINE;
    if (e->a[1]->kind == NNC_KX_CONST) return x * e->a[1]->i;
    if (e->a[0]->kind == NNC_KX_CONST) return y * e->a[0]->i;
    return NOT_AFFINE;
  }
  case NNC_KX_SCALAR:
  case NNC_KX_LOAD:
  case NNC_KX_UN:
  case NNC_KX_SELECT:
  case NNC_KX_CAST:
  case NNC_KX_RAND: break;
  }
  for (int i = 0; i < 3; i++)
    if (e->a[i] && coef_of(e->a[i], v) != 0) return NOT_AFFINE;
  return 0;
}

/* Does value expression e load some buffer contiguously along v? */
static bool loads_along(const nnc_kexpr *e, int v) {
  if (!e || !e->reads_mem) return false;
  if (e->kind == NNC_KX_LOAD && coef_of(e->a[0], v) == 1) return true;
  for (int i = 0; i < 3; i++)
    if (loads_along(e->a[i], v)) return true;
  return false;
}

/* For a reduction over the innermost axis and others: a kept axis along
 * which the operand's memory is contiguous (a batch-norm sum over N, H, W
 * of a convolution's output, stored [N*H*W, C]), or -1. Reducing with that
 * axis innermost reads memory in order instead of striding through all of
 * it once per kept index. */
static int unit_stride_kept_axis(lower *L, const nnc_node *n) {
  const nnc_node *x = n->in[0];
  uint32_t axes = (uint32_t)n->attr[0];
  int r = x->shape.rank;
  if (r < 2 || !(axes & (1u << (r - 1)))) return -1;
  kgen G = {0};
  G.k = nnc_kernel_new(L->a, "probe");
  G.self = n;
  G.memo = nnc_arena_alloc(L->a, sizeof(memo *) * (size_t)(L->nn + 1));
  G.zero = nnc_kx_int(L->a, 0);
  nnc_kexpr *idx[NNC_MAX_RANK];
  int var[NNC_MAX_RANK];
  for (int d = 0; d < r; d++) {
    var[d] = nnc_kernel_var(G.k);
    idx[d] = nnc_kx_var(L->a, var[d]);
  }
  nnc_kexpr *e = gen(L, &G, x, idx);
  if (loads_along(e, var[r - 1])) return -1; /* x - mean read in place: per-channel loads too */
  for (int d = 0; d < r - 1; d++)
    if (!(axes & (1u << d)) && loads_along(e, var[d])) return d;
  return -1;
}

/* Loops over the kept dims of reduction n other than `skip` (outermost
 * first; the first one is split over threads); sets their coordinates in
 * in_idx and out_idx; returns the body. */
static nnc_kblock *kept_loops(lower *L, nnc_kernel *k, const nnc_node *n, int skip,
                              nnc_kexpr **in_idx, nnc_kexpr **out_idx) {
  const nnc_shape *xs = &n->in[0]->shape;
  uint32_t axes = (uint32_t)n->attr[0];
  nnc_kblock *blk = &k->body;
  for (int d = 0; d < xs->rank; d++) {
    if (d == skip || (axes & (1u << d))) continue;
    int v = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, v, xs->dim[d]);
    in_idx[d] = out_idx[d] = nnc_kx_var(L->a, v);
    if (!k->split) {
      k->split = true;
      k->extent = xs->dim[d];
    }
  }
  return blk;
}

/* Loops over the reduced dims of n other than `skip` inside blk, in
 * ascending order; sets their coordinates in in_idx; returns the body. */
static nnc_kblock *reduced_loops(lower *L, nnc_kernel *k, const nnc_node *n, int skip,
                                 nnc_kblock *blk, nnc_kexpr **in_idx) {
  const nnc_shape *xs = &n->in[0]->shape;
  uint32_t axes = (uint32_t)n->attr[0];
  for (int d = 0; d < xs->rank; d++) {
    if (d == skip || !(axes & (1u << d))) continue;
    int v = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, v, xs->dim[d]);
    in_idx[d] = nnc_kx_var(L->a, v);
  }
  return blk;
}

/* sum / rmax keeping axis col innermost (a column sum such as a bias
 * gradient): the output row accumulates in memory, reduced dims outside
 * the contiguous column loop, so the inner loop is unit-stride and every
 * element still adds its terms in the order of the reduced dims. Threads
 * split over the outer kept dims, or over blocks of columns. */
static void kernel_reduce_columns(lower *L, const nnc_node *n, int col) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = new_kernel(L, &G, n->op == NNC_OP_SUM ? "colsum" : "colmax", n);
  const nnc_node *x = n->in[0];
  int r = x->shape.rank, last = col;
  uint32_t axes = (uint32_t)n->attr[0];
  int64_t N = x->shape.dim[last];
  nnc_kexpr *in_idx[NNC_MAX_RANK], *out_idx[NNC_MAX_RANK];
  nnc_kblock *blk = kept_loops(L, k, n, last, in_idx, out_idx);
  nnc_kexpr *col0 = nnc_kx_int(a, 0);
  int64_t B = N;
  if (!k->split && (B = column_block(N)) < N) {
    int vb = nnc_kernel_var(k);
    blk = nnc_kb_loop(a, blk, vb, N / B);
    col0 = nnc_kx_imul(a, nnc_kx_var(a, vb), B);
    k->split = true;
    k->extent = N / B;
  }
  nnc_kt t = nnc_kt_of(n->dtype);
  bool is_sum = n->op == NNC_OP_SUM;
  int vj = nnc_kernel_var(k);
  nnc_kexpr *j = nnc_kx_iadd(a, col0, nnc_kx_var(a, vj));
  in_idx[last] = out_idx[last] = j;
  for (int d = 0; d < r; d++)
    if (axes & (1u << d)) out_idx[d] = G.zero;
  nnc_kexpr *at = linear(L, out_idx, &n->shape);
  int out = L->buf[n->id];
  nnc_kb_store(a, nnc_kb_loop(a, blk, vj, B), out, at,
               nnc_kx_const(a, t, is_sum ? 0.0 : -__builtin_inf()));
  nnc_kblock *inner = nnc_kb_loop(a, reduced_loops(L, k, n, last, blk, in_idx), vj, B);
  nnc_kexpr *e = gen(L, &G, x, in_idx);
  nnc_kb_store(a, inner, out, at,
               nnc_kx_bin(a, is_sum ? NNC_K_ADD : NNC_K_MAX, nnc_kx_load(a, L->p, out, at), e));
  k->work = (double)nnc_shape_numel(&x->shape) * expr_cost(e) * 2;
  add_kernel(L, k);
}

/* sum / rmax over the innermost axis (length W) and others, e.g. a
 * batch-norm sum over N, H, W of an NCHW tensor: W lane accumulators per
 * output element in a scratch buffer, added to with a unit-stride vector
 * loop for every index of the other reduced dims, then reduced in lane
 * order. Each output element's order is fixed (per lane over the outer
 * reduced dims ascending, then the lanes ascending); threads split over
 * the kept dims, each with its own lanes. */
static void kernel_reduce_lanes(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = new_kernel(L, &G, n->op == NNC_OP_SUM ? "lanesum" : "lanemax", n);
  const nnc_node *x = n->in[0];
  int r = x->shape.rank, last = r - 1;
  int64_t W = x->shape.dim[last];
  nnc_kt t = nnc_kt_of(n->dtype);
  bool is_sum = n->op == NNC_OP_SUM;
  nnc_kop op = is_sum ? NNC_K_ADD : NNC_K_MAX;
  nnc_kexpr *init = nnc_kx_const(a, t, is_sum ? 0.0 : -__builtin_inf());
  int lanes = nnc_kprog_add_buf(L->p, NNC_KBUF_TEMP, 0, t, nnc_shape_numel(&n->shape) * W,
                                nnc_arena_printf(a, "%s.lanes.%d", L->g->name, n->id));
  nnc_kexpr *in_idx[NNC_MAX_RANK], *out_idx[NNC_MAX_RANK];
  for (int d = 0; d < r; d++)
    out_idx[d] = G.zero;
  nnc_kblock *blk = kept_loops(L, k, n, last, in_idx, out_idx);
  nnc_kexpr *at = linear(L, out_idx, &n->shape);
  int vj = nnc_kernel_var(k);
  nnc_kexpr *j = nnc_kx_var(a, vj);
  nnc_kexpr *lane = nnc_kx_iadd(a, nnc_kx_imul(a, at, W), j);
  nnc_kb_store(a, nnc_kb_loop(a, blk, vj, W), lanes, lane, init);
  in_idx[last] = j;
  nnc_kblock *inner = nnc_kb_loop(a, reduced_loops(L, k, n, last, blk, in_idx), vj, W);
  nnc_kexpr *e = gen(L, &G, x, in_idx);
  nnc_kb_store(a, inner, lanes, lane, nnc_kx_bin(a, op, nnc_kx_load(a, L->p, lanes, lane), e));
  int acc = nnc_kernel_scalar(a, k, t);
  nnc_kb_set(a, blk, acc, init);
  nnc_kb_set(a, nnc_kb_loop(a, blk, vj, W), acc,
             nnc_kx_bin(a, op, nnc_kx_scalar(a, k, acc), nnc_kx_load(a, L->p, lanes, lane)));
  nnc_kb_store(a, blk, L->buf[n->id], at, nnc_kx_scalar(a, k, acc));
  k->work = (double)nnc_shape_numel(&x->shape) * expr_cost(e) * 2;
  add_kernel(L, k);
}

/* sum / rmax: loops over the kept dims outside, the reduced dims inside,
 * a scalar accumulator, the operand's expression inlined in the loop. */
static void kernel_reduce(lower *L, const nnc_node *n) {
  const nnc_node *x0 = n->in[0];
  uint32_t axes0 = (uint32_t)n->attr[0];
  int r0 = x0->shape.rank;
  if (r0 >= 2 && !(axes0 & (1u << (r0 - 1))) && (axes0 & ((1u << (r0 - 1)) - 1))) {
    kernel_reduce_columns(L, n, r0 - 1);
    return;
  }
  int col = unit_stride_kept_axis(L, n);
  if (col >= 0) {
    kernel_reduce_columns(L, n, col);
    return;
  }
  /* lanes pay when the innermost axis fills a vector and other axes are
   * reduced too (else the scalar loop below is as good) */
  if (r0 >= 2 && (axes0 & (1u << (r0 - 1))) && (axes0 & ((1u << (r0 - 1)) - 1)) &&
      x0->shape.dim[r0 - 1] >= 8 && nnc_kt_is_float(nnc_kt_of(n->dtype))) {
    kernel_reduce_lanes(L, n);
    return;
  }
  kgen G;
  nnc_kernel *k = new_kernel(L, &G, nnc_op_name(n->op), n);
  const nnc_node *x = n->in[0];
  uint32_t axes = (uint32_t)n->attr[0];
  nnc_kexpr *in_idx[NNC_MAX_RANK], *out_idx[NNC_MAX_RANK];
  nnc_kblock *blk = &k->body;
  bool first = true;
  for (int d = 0; d < x->shape.rank; d++) {
    if (axes & (1u << d)) continue;
    int v = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, v, x->shape.dim[d]);
    in_idx[d] = out_idx[d] = nnc_kx_var(L->a, v);
    if (first) {
      k->split = true;
      k->extent = x->shape.dim[d];
      first = false;
    }
  }
  nnc_kt t = nnc_kt_of(n->dtype);
  int acc = nnc_kernel_scalar(L->a, k, t);
  bool is_sum = n->op == NNC_OP_SUM;
  nnc_kb_set(L->a, blk, acc, nnc_kx_const(L->a, t, is_sum ? 0.0 : -__builtin_inf()));
  nnc_kblock *inner = blk;
  for (int d = 0; d < x->shape.rank; d++) {
    if (!(axes & (1u << d))) continue;
    int v = nnc_kernel_var(k);
    inner = nnc_kb_loop(L->a, inner, v, x->shape.dim[d]);
    in_idx[d] = nnc_kx_var(L->a, v);
    out_idx[d] = G.zero;
  }
  nnc_kexpr *e = gen(L, &G, x, in_idx);
  nnc_kb_set(L->a, inner, acc,
             nnc_kx_bin(L->a, is_sum ? NNC_K_ADD : NNC_K_MAX, nnc_kx_scalar(L->a, k, acc), e));
  nnc_kb_store(L->a, blk, L->buf[n->id], linear(L, out_idx, &n->shape),
               nnc_kx_scalar(L->a, k, acc));
  k->work = (double)nnc_shape_numel(&x->shape) * expr_cost(e) * 2;
  add_kernel(L, k);
}

/* argmax along one axis; the first maximum wins (strict >). */
static void kernel_argmax(lower *L, const nnc_node *n) {
  kgen G;
  nnc_kernel *k = new_kernel(L, &G, "argmax", n);
  const nnc_node *x = n->in[0];
  int axis = (int)n->attr[0];
  nnc_kexpr *in_idx[NNC_MAX_RANK], *out_idx[NNC_MAX_RANK];
  nnc_kblock *blk = &k->body;
  bool first = true;
  for (int d = 0; d < x->shape.rank; d++) {
    if (d == axis) continue;
    int v = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, v, x->shape.dim[d]);
    in_idx[d] = out_idx[d] = nnc_kx_var(L->a, v);
    if (first) {
      k->split = true;
      k->extent = x->shape.dim[d];
      first = false;
    }
  }
  nnc_kt t = nnc_kt_of(x->dtype), ti = nnc_kt_of(n->dtype);
  int best = nnc_kernel_scalar(L->a, k, t), at = nnc_kernel_scalar(L->a, k, ti);
  nnc_kb_set(L->a, blk, best, nnc_kx_const(L->a, t, -__builtin_inf()));
  nnc_kb_set(L->a, blk, at, nnc_kx_const(L->a, ti, 0));
  int v = nnc_kernel_var(k);
  nnc_kblock *inner = nnc_kb_loop(L->a, blk, v, x->shape.dim[axis]);
  in_idx[axis] = nnc_kx_var(L->a, v);
  out_idx[axis] = G.zero;
  nnc_kexpr *e = gen(L, &G, x, in_idx);
  nnc_kexpr *better = nnc_kx_bin(L->a, NNC_K_GT, e, nnc_kx_scalar(L->a, k, best));
  nnc_kb_set(
      L->a, inner, at,
      nnc_kx_select(L->a, better, nnc_kx_cast(L->a, in_idx[axis], ti), nnc_kx_scalar(L->a, k, at)));
  nnc_kb_set(L->a, inner, best, nnc_kx_select(L->a, better, e, nnc_kx_scalar(L->a, k, best)));
  nnc_kb_store(L->a, blk, L->buf[n->id], linear(L, out_idx, &n->shape), nnc_kx_scalar(L->a, k, at));
  k->work = (double)nnc_shape_numel(&x->shape) * 4;
  add_kernel(L, k);
}

/* The matmul node behind a (possibly absorbed) epilogue chain ending at n. */
static const nnc_node *chain_matmul(lower *L, const nnc_node *n, const nnc_node **add, bool *relu) {
  *add = NULL;
  *relu = n->op == NNC_OP_RELU;
  const nnc_node *c = *relu ? n->in[0] : n;
  if (c->op == NNC_OP_ADD) {
    *add = c;
    const nnc_node *a0 = c->in[0];
    c = a0->op == NNC_OP_MATMUL && L->final[a0->id] == n ? a0 : c->in[1];
  }
  return c;
}

static int bias_buffer(lower *L, const nnc_node *add, const nnc_node *mm) {
  if (!add) return -1;
  nnc_node *other = add->in[0] == mm ? add->in[1] : add->in[0];
  nnc_node *src = row_bias_source(other, mm->shape.dim[1]);
  return L->buf[src->id];
}

/* Matrix product with loops (f64, or when gemm.c is not linked). Each
 * element of C sums over k in ascending order. */
static void kernel_matmul_loops(lower *L, nnc_kernel *k, const nnc_node *mm, int a_buf, int b_buf,
                                int bias, bool relu, int c_buf) {
  nnc_arena *a = L->a;
  int64_t M = mm->shape.dim[0], N = mm->shape.dim[1];
  bool ta = mm->attr[0], tb = mm->attr[1];
  int64_t K = ta ? mm->in[0]->shape.dim[0] : mm->in[0]->shape.dim[1];
  nnc_kt t = nnc_kt_of(mm->dtype);
  int vi = nnc_kernel_var(k), vj = nnc_kernel_var(k), vk = nnc_kernel_var(k);
  nnc_kexpr *i = nnc_kx_var(a, vi), *j = nnc_kx_var(a, vj), *kk = nnc_kx_var(a, vk);
  nnc_kblock *bi = nnc_kb_loop(a, &k->body, vi, M);
  k->split = true;
  k->extent = M;
  nnc_kexpr *aik = nnc_kx_load(a, L->p, a_buf,
                               ta ? nnc_kx_iadd(a, nnc_kx_imul(a, kk, M), i)
                                  : nnc_kx_iadd(a, nnc_kx_imul(a, i, K), kk));
  nnc_kexpr *bkj = nnc_kx_load(a, L->p, b_buf,
                               tb ? nnc_kx_iadd(a, nnc_kx_imul(a, j, K), kk)
                                  : nnc_kx_iadd(a, nnc_kx_imul(a, kk, N), j));
  nnc_kexpr *cij = nnc_kx_iadd(a, nnc_kx_imul(a, i, N), j);
  nnc_kexpr *prod = nnc_kx_bin(a, NNC_K_MUL, aik, bkj);
  if (tb) { /* rows of B contiguous along k: a dot product per element */
    nnc_kblock *bj = nnc_kb_loop(a, bi, vj, N);
    int acc = nnc_kernel_scalar(a, k, t);
    nnc_kb_set(a, bj, acc, nnc_kx_const(a, t, 0));
    nnc_kblock *bk = nnc_kb_loop(a, bj, vk, K);
    nnc_kb_set(a, bk, acc, nnc_kx_bin(a, NNC_K_ADD, nnc_kx_scalar(a, k, acc), prod));
    nnc_kexpr *v = nnc_kx_scalar(a, k, acc);
    if (bias >= 0) v = nnc_kx_bin(a, NNC_K_ADD, v, nnc_kx_load(a, L->p, bias, j));
    if (relu) v = nnc_kx_un(a, NNC_K_RELU, v);
    nnc_kb_store(a, bj, c_buf, cij, v);
  } else { /* rows of C accumulate rows of B: vectorises along j */
    nnc_kblock *b0 = nnc_kb_loop(a, bi, vj, N);
    nnc_kb_store(a, b0, c_buf, cij, nnc_kx_const(a, t, 0));
    nnc_kblock *bk = nnc_kb_loop(a, bi, vk, K);
    nnc_kblock *bj = nnc_kb_loop(a, bk, vj, N);
    nnc_kb_store(a, bj, c_buf, cij,
                 nnc_kx_bin(a, NNC_K_ADD, nnc_kx_load(a, L->p, c_buf, cij), prod));
    if (bias >= 0 || relu) {
      nnc_kblock *be = nnc_kb_loop(a, bi, vj, N);
      nnc_kexpr *v = nnc_kx_load(a, L->p, c_buf, cij);
      if (bias >= 0) v = nnc_kx_bin(a, NNC_K_ADD, v, nnc_kx_load(a, L->p, bias, j));
      if (relu) v = nnc_kx_un(a, NNC_K_RELU, v);
      nnc_kb_store(a, be, c_buf, cij, v);
    }
  }
}

/* Columns per block when a product is better split over columns than
 * rows, else 0. A product whose B is a parameter (x.W^T forward, dy.W
 * backward) is split over B's rows (columns of C): each thread then
 * reads only its share of the weights, the share its part of the update
 * pass writes (split over the weight's first dim), so the weights stay in
 * that core's cache instead of moving between cores every step. A product
 * with a long K whose B is larger than 4 MB and wider than C is tall (a
 * convolution's weight gradient dyᵀ.cols: 64x288x12544, B 14 MB) is split
 * over columns too: each thread then streams half of B instead of all of
 * it (conv2's 2.93 -> 2.46 ms per step). */
static int64_t column_split(const nnc_node *mm) {
  const nnc_node *b = mm->in[1];
  while (b->op == NNC_OP_RESHAPE)
    b = b->in[0];
  int64_t M = mm->shape.dim[0], N = mm->shape.dim[1];
  bool ta = mm->attr[0];
  int64_t K = ta ? mm->in[0]->shape.dim[0] : mm->in[0]->shape.dim[1];
  bool big_b = K * N * 4 > (4 << 20) && N > M;
  if ((b->op != NNC_OP_PARAM && !big_b) || N < 2 * M / 4) return 0;
  for (int64_t parts = 2; parts <= 8; parts *= 2)
    if (N % parts == 0 && (N / parts) % 16 == 0 && N / parts <= 128) return N / parts;
  return N % 2 == 0 && (N / 2) % 16 == 0 ? N / 2 : 0;
}

static void kernel_matmul(lower *L, const nnc_node *n) {
  kgen G;
  const nnc_node *add;
  bool relu;
  const nnc_node *mm = chain_matmul(L, n, &add, &relu);
  nnc_kernel *k = new_kernel(L, &G, relu ? "matmul_bias_relu" : add ? "matmul_bias" : "matmul", n);
  int a_buf = L->buf[mm->in[0]->id], b_buf = L->buf[mm->in[1]->id], c_buf = L->buf[n->id];
  int bias = bias_buffer(L, add, mm);
  int64_t M = mm->shape.dim[0], N = mm->shape.dim[1];
  bool ta = mm->attr[0], tb = mm->attr[1];
  int64_t K = ta ? mm->in[0]->shape.dim[0] : mm->in[0]->shape.dim[1];
  k->work = 2.0 * (double)M * (double)N * (double)K;
  k->label = nnc_arena_printf(L->a, "%s %lldx%lldx%lld%s%s", k->label, (long long)M, (long long)N,
                              (long long)K, ta ? " ta" : "", tb ? " tb" : "");
  if (L->p->use_gemm && mm->dtype == NNC_F32) {
    k->is_gemm = true;
    nnc_cg_gemm *g = &k->gemm;
    g->M = M;
    g->N = N;
    g->K = K;
    g->trans_a = ta;
    g->trans_b = tb;
    g->lda = mm->in[0]->shape.dim[1];
    g->ldb = mm->in[1]->shape.dim[1];
    g->ldc = N;
    g->bias = bias >= 0;
    g->act = relu ? NNC_CG_ACT_RELU : NNC_CG_ACT_NONE;
    g->vector_width = L->p->vector_width;
    k->row_block = nnc_cg_gemm_row_block(g);
    if (k->row_block < 1) k->row_block = 1;
    k->split = true;
    k->extent = (M + k->row_block - 1) / k->row_block;
    int64_t cb = column_split(mm);
    if (cb > 0) {
      g->N = cb;
      g->all_rows = true;
      k->col_block = cb;
      k->extent = N / cb;
    }
    k->a_buf = a_buf;
    k->b_buf = b_buf;
    k->bias_buf = bias;
    k->c_buf = c_buf;
  } else {
    kernel_matmul_loops(L, k, mm, a_buf, b_buf, bias, relu, c_buf);
  }
  add_kernel(L, k);
}

/* im2col: one loop per coordinate of (n, oh, ow) x (c, kh, kw); reads in
 * the padding give the pad value. */
static void kernel_im2col(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = new_kernel(L, &G, "im2col", n);
  const nnc_shape *xs = &n->in[0]->shape;
  int64_t N = xs->dim[0], C = xs->dim[1], H = xs->dim[2], W = xs->dim[3];
  int64_t KH = n->attr[0], KW = n->attr[1], SH = n->attr[2], SW = n->attr[3], PH = n->attr[4],
          PW = n->attr[5];
  int64_t OH = nnc_ir_window_out(H, KH, SH, PH), OW = nnc_ir_window_out(W, KW, SW, PW);
  int64_t ext[6] = {N, OH, OW, C, KH, KW};
  nnc_kexpr *v[6];
  nnc_kblock *blk = &k->body;
  for (int d = 0; d < 6; d++) {
    int var = nnc_kernel_var(k);
    blk = nnc_kb_loop(a, blk, var, ext[d]);
    v[d] = nnc_kx_var(a, var);
  }
  k->split = true;
  k->extent = N;
  nnc_kexpr *row =
      nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, v[0], OH), v[1]), OW), v[2]);
  nnc_kexpr *col =
      nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, v[3], KH), v[4]), KW), v[5]);
  nnc_kexpr *h = nnc_kx_iadd(a, nnc_kx_imul(a, v[1], SH), nnc_kx_iadd(a, v[4], nnc_kx_int(a, -PH)));
  nnc_kexpr *w = nnc_kx_iadd(a, nnc_kx_imul(a, v[2], SW), nnc_kx_iadd(a, v[5], nnc_kx_int(a, -PW)));
  nnc_kexpr *in = nnc_kx_bin(a, NNC_K_AND,
                             nnc_kx_bin(a, NNC_K_AND, nnc_kx_bin(a, NNC_K_GE, h, nnc_kx_int(a, 0)),
                                        nnc_kx_bin(a, NNC_K_LT, h, nnc_kx_int(a, H))),
                             nnc_kx_bin(a, NNC_K_AND, nnc_kx_bin(a, NNC_K_GE, w, nnc_kx_int(a, 0)),
                                        nnc_kx_bin(a, NNC_K_LT, w, nnc_kx_int(a, W))));
  nnc_kexpr *src = nnc_kx_iadd(
      a,
      nnc_kx_imul(a,
                  nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, v[0], C), v[3]), H),
                              clamp_index(L, h, H)),
                  W),
      clamp_index(L, w, W));
  nnc_kexpr *val =
      nnc_kx_select(a, in, nnc_kx_load(a, L->p, L->buf[n->in[0]->id], src), fconst(L, n, n->fattr));
  nnc_kb_store(a, blk, L->buf[n->id], nnc_kx_iadd(a, nnc_kx_imul(a, row, C * KH * KW), col), val);
  k->work = (double)nnc_shape_numel(&n->shape) * 4;
  add_kernel(L, k);
}

/* The window positions o in [lo, hi) whose tap k (o * S + k - P) lands
 * inside [0, size); hi <= lo when none does. */
static void tap_range(int64_t k, int64_t S, int64_t P, int64_t size, int64_t O, int64_t *lo,
                      int64_t *hi) {
  int64_t first = P > k ? (P - k + S - 1) / S : 0; /* ceil((P - k) / S) */
  int64_t last = (size - 1 + P - k) / S;           /* floor, may be negative */
  if (size - 1 + P - k < 0) last = -1;
  *lo = first;
  *hi = last + 1 < O ? last + 1 : O;
}

/* col2im as a scatter-add: each image's pixels start at zero, then every
 * column cell adds into the pixel it was read from, taps (kh, kw) in
 * ascending order, so each pixel sums its windows' cells in the same fixed
 * order as a gather would. The taps are unrolled here, so every tap's
 * window range is a constant and the inner loop over ow has no division
 * and no bounds test. Threads split over images; each image's pixels are
 * written by one thread only. Every cell is read once, so the operand's
 * expression is inlined (e.g. the max-pool mask times the gradient). */
static void kernel_col2im(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = new_kernel(L, &G, "col2im", n);
  int64_t N = n->shape.dim[0], C = n->shape.dim[1], H = n->shape.dim[2], W = n->shape.dim[3];
  int64_t KH = n->attr[0], KW = n->attr[1], SH = n->attr[2], SW = n->attr[3], PH = n->attr[4],
          PW = n->attr[5];
  int64_t OH = nnc_ir_window_out(H, KH, SH, PH), OW = nnc_ir_window_out(W, KW, SW, PW);
  int out = L->buf[n->id];
  nnc_kt t = nnc_kt_of(n->dtype);
  int vn = nnc_kernel_var(k), vi = nnc_kernel_var(k), vc = nnc_kernel_var(k);
  nnc_kblock *bn = nnc_kb_loop(a, &k->body, vn, N);
  k->split = true;
  k->extent = N;
  nnc_kexpr *img = nnc_kx_var(a, vn), *c = nnc_kx_var(a, vc);
  nnc_kb_store(a, nnc_kb_loop(a, bn, vi, C * H * W), out,
               nnc_kx_iadd(a, nnc_kx_imul(a, img, C * H * W), nnc_kx_var(a, vi)),
               nnc_kx_const(a, t, 0));
  nnc_kblock *bc = nnc_kb_loop(a, bn, vc, C);
  nnc_kexpr *plane = nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, img, C), c), H * W);
  for (int64_t kh = 0; kh < KH; kh++)
    for (int64_t kw = 0; kw < KW; kw++) {
      int64_t h0, h1, w0, w1;
      tap_range(kh, SH, PH, H, OH, &h0, &h1);
      tap_range(kw, SW, PW, W, OW, &w0, &w1);
      if (h1 <= h0 || w1 <= w0) continue;
      int vh = nnc_kernel_var(k), vw = nnc_kernel_var(k);
      nnc_kblock *bw = nnc_kb_loop(a, nnc_kb_loop(a, bc, vh, h1 - h0), vw, w1 - w0);
      nnc_kexpr *oh = nnc_kx_iadd(a, nnc_kx_var(a, vh), nnc_kx_int(a, h0));
      nnc_kexpr *ow = nnc_kx_iadd(a, nnc_kx_var(a, vw), nnc_kx_int(a, w0));
      /* pixel (oh * SH + kh - PH, ow * SW + kw - PW) of the plane */
      nnc_kexpr *at = nnc_kx_iadd(
          a, plane,
          nnc_kx_iadd(
              a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, oh, SH), nnc_kx_int(a, kh - PH)), W),
              nnc_kx_iadd(a, nnc_kx_imul(a, ow, SW), nnc_kx_int(a, kw - PW))));
      nnc_kexpr *cell[2] = {
          nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, img, OH), oh), OW), ow),
          nnc_kx_iadd(a, nnc_kx_imul(a, c, KH * KW), nnc_kx_int(a, kh * KW + kw))};
      nnc_kexpr *v = gen(L, &G, n->in[0], cell);
      nnc_kb_store(a, bw, out, at, nnc_kx_bin(a, NNC_K_ADD, nnc_kx_load(a, L->p, out, at), v));
    }
  k->work = (double)nnc_shape_numel(&n->in[0]->shape) * 4;
  add_kernel(L, k);
}

/* scatter_add: threads split over columns; each column adds the rows in
 * index order. Indices outside [0, rows) are clamped (the runtime checks
 * labels; this only keeps memory safe). */
static void kernel_scatter_add(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = new_kernel(L, &G, "scatter_add", n);
  int64_t V = n->shape.dim[0], D = n->shape.dim[1];
  int64_t P = nnc_shape_numel(&n->in[1]->shape);
  int vj = nnc_kernel_var(k), vr = nnc_kernel_var(k), vp = nnc_kernel_var(k);
  nnc_kexpr *j = nnc_kx_var(a, vj), *r = nnc_kx_var(a, vr), *p = nnc_kx_var(a, vp);
  nnc_kblock *bj = nnc_kb_loop(a, &k->body, vj, D);
  k->split = true;
  k->extent = D;
  int out = L->buf[n->id];
  nnc_kb_store(a, nnc_kb_loop(a, bj, vr, V), out, nnc_kx_iadd(a, nnc_kx_imul(a, r, D), j),
               nnc_kx_const(a, nnc_kt_of(n->dtype), 0));
  nnc_kblock *bp = nnc_kb_loop(a, bj, vp, P);
  nnc_kexpr *row = clamp_index(L, as_index(L, nnc_kx_load(a, L->p, L->buf[n->in[1]->id], p)), V);
  nnc_kexpr *at = nnc_kx_iadd(a, nnc_kx_imul(a, row, D), j);
  nnc_kexpr *dy =
      nnc_kx_load(a, L->p, L->buf[n->in[0]->id], nnc_kx_iadd(a, nnc_kx_imul(a, p, D), j));
  nnc_kb_store(a, bp, out, at, nnc_kx_bin(a, NNC_K_ADD, nnc_kx_load(a, L->p, out, at), dy));
  k->work = (double)(P * D + V * D) * 2;
  add_kernel(L, k);
}

/* The kernel of a node that has one (ST_KERNEL). */
static void kernel_for(lower *L, const nnc_node *n) {
  switch (n->op) {
  case NNC_OP_SUM:
  case NNC_OP_RMAX: kernel_reduce(L, n); return;
  case NNC_OP_ARGMAX: kernel_argmax(L, n); return;
  case NNC_OP_IM2COL: kernel_im2col(L, n); return;
  case NNC_OP_COL2IM: kernel_col2im(L, n); return;
  case NNC_OP_SCATTER_ADD: kernel_scatter_add(L, n); return;
  case NNC_OP_MATMUL: kernel_matmul(L, n); return;
  /* inline ops stored for their readers: a loop nest over the node's
   * elements, or the end of a product's epilogue chain (bias, ReLU) */
  case NNC_OP_CONST:
  case NNC_OP_NEG:
  case NNC_OP_EXP:
  case NNC_OP_LOG:
  case NNC_OP_SQRT:
  case NNC_OP_RSQRT:
  case NNC_OP_RECIP:
  case NNC_OP_TANH:
  case NNC_OP_SIGMOID:
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR:
  case NNC_OP_CAST:
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ:
  case NNC_OP_SELECT:
  case NNC_OP_TRANSPOSE:
  case NNC_OP_BROADCAST:
  case NNC_OP_GATHER:
  case NNC_OP_ONEHOT:
  case NNC_OP_RAND:
    if (L->final[n->id] == n)
      kernel_matmul(L, n);
    else
      kernel_elementwise(L, n);
    return;
  /* memory of their own, or views of it: no kernel */
  case NNC_OP_INPUT:
  case NNC_OP_PARAM:
  case NNC_OP_RESHAPE:
  case NNC_OP_COUNT_: break;
  }
  nnc_ir_bug("codegen: %s gets no kernel", nnc_op_name(n->op));
}

/* dst[i] = src[i] over n elements. */
static void kernel_copy(lower *L, const char *what, int dst, int src, int64_t n) {
  kgen G;
  nnc_kernel *k = new_kernel(L, &G, what, NULL);
  int v = nnc_kernel_var(k);
  nnc_kblock *blk = nnc_kb_loop(L->a, &k->body, v, n);
  k->split = true;
  k->extent = n;
  nnc_kexpr *i = nnc_kx_var(L->a, v);
  nnc_kb_store(L->a, blk, dst, i, nnc_kx_load(L->a, L->p, src, i));
  k->work = (double)n;
  add_kernel(L, k);
}

/* Outputs whose node has no kernel writing the output slot directly. */
static bool output_copies(lower *L) {
  for (int o = 0; o < NNC_OUT_COUNT_; o++) {
    const nnc_node *n = L->g->outputs[o];
    if (!n) continue;
    int slot = output_slot(L, (nnc_output_kind)o, n);
    if (slot < 0) return fail(L, "the graphs disagree on an output's shape", n);
    if (L->buf[n->id] == slot) continue;
    kgen G;
    nnc_kernel *k = new_kernel(L, &G, "output", NULL);
    nnc_kexpr *idx[NNC_MAX_RANK];
    nnc_kblock *blk = nest(L, k, &n->shape, idx);
    nnc_kb_store(L->a, blk, slot, linear(L, idx, &n->shape), gen(L, &G, n, idx));
    k->work = (double)nnc_shape_numel(&n->shape);
    add_kernel(L, k);
  }
  return true;
}

/* ---- Update passes ---- */

static bool expr_eq(const nnc_kexpr *x, const nnc_kexpr *y) {
  if (x == y) return true;
  if (!x || !y || x->kind != y->kind || x->type != y->type || x->op != y->op || x->var != y->var ||
      x->buf != y->buf || x->i != y->i || x->f != y->f)
    return false;
  for (int i = 0; i < 3; i++)
    if (!expr_eq(x->a[i], y->a[i])) return false;
  return true;
}

/* Does e load base buffer b at an index other than at? */
static bool reads_elsewhere(const nnc_kprog *p, const nnc_kexpr *e, int b, const nnc_kexpr *at) {
  if (!e || !e->reads_mem) return false;
  if (e->kind == NNC_KX_LOAD && nnc_kbuf_base(p, e->buf) == b && !expr_eq(e->a[0], at)) return true;
  for (int i = 0; i < 3; i++)
    if (reads_elsewhere(p, e->a[i], b, at)) return true;
  return false;
}

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

static void assign_groups(lower *L) {
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

static bool update_passes(lower *L) {
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
    nnc_kernel *k = new_kernel(L, &KG, what, NULL);
    nnc_kexpr *idx[NNC_MAX_RANK];
    nnc_kblock *blk = nest(L, k, &t->shape, idx);
    G[gi].k = k;
    G[gi].at = linear(L, idx, &t->shape);
    G[gi].stores = nnc_arena_alloc(L->a, sizeof(nnc_kstmt *) * (size_t)n);
    G[gi].updates = nnc_arena_alloc(L->a, sizeof(int) * (size_t)n);
    int *scalars = nnc_arena_alloc(L->a, sizeof(int) * (size_t)n);
    double work = 0;
    /* Every new value first, then every store: simultaneous assignment. */
    for (int u = 0; u < g->nupdates; u++) {
      if (L->group_of[u] != gi) continue;
      const nnc_node *v = g->updates[u].value;
      if (v->dtype != t->dtype || !nnc_shape_eq(&v->shape, &t->shape))
        return fail(L, "update of another shape", v);
      nnc_kexpr *e = gen(L, &KG, v, idx);
      work += expr_cost(e) * 4;
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
          safe = !reads_elsewhere(p, blk->s[i]->value, tb, G[gi].at);
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
    add_kernel(L, G[gi].k);
  }
  for (int c = 0; c < ncopies; c++)
    kernel_copy(L, "update.copy", copy_dst[c], copy_src[c], p->bufs[copy_dst[c]].numel);
  return true;
}

/* ---- Driver ---- */

static bool lower_graph(nnc_kprog *p, const nnc_graph *g, nnc_kgraph *kg, char *err,
                        size_t errlen) {
  lower L;
  memset(&L, 0, sizeof L);
  L.p = p;
  L.a = p->arena;
  L.g = g;
  L.kg = kg;
  L.nn = g->nnodes;
  L.err = err;
  L.errlen = errlen;
  kg->name = g->name;
  size_t nn = (size_t)g->nnodes + 1;
  L.live = nnc_arena_alloc(L.a, nn);
  L.force = nnc_arena_alloc(L.a, nn);
  L.ident = nnc_arena_alloc(L.a, nn);
  L.recompute = nnc_arena_alloc(L.a, nn);
  L.out_kind = nnc_arena_alloc(L.a, sizeof(int) * nn);
  L.is_update = nnc_arena_alloc(L.a, sizeof(int) * nn);
  L.users = nnc_arena_alloc(L.a, sizeof(nnc_node **) * nn);
  L.nusers = nnc_arena_alloc(L.a, sizeof(int) * nn);
  L.st = nnc_arena_alloc(L.a, sizeof(node_state) * nn);
  L.root = nnc_arena_alloc(L.a, sizeof(int) * nn);
  L.buf = nnc_arena_alloc(L.a, sizeof(int) * nn);
  L.final = nnc_arena_alloc(L.a, sizeof(nnc_node *) * nn);
  L.subst = nnc_arena_alloc(L.a, sizeof(nnc_node *) * nn);
  for (size_t i = 0; i < nn; i++) {
    L.out_kind[i] = -1;
    L.buf[i] = -1;
    L.root[i] = -1;
  }
  for (int o = NNC_OUT_COUNT_ - 1; o >= 0; o--)
    if (g->outputs[o]) {
      mark_live(&L, g->outputs[o]);
      L.out_kind[g->outputs[o]->id] = o;
    }
  for (int u = 0; u < g->nupdates; u++) {
    mark_live(&L, g->updates[u].value);
    L.is_update[g->updates[u].value->id]++;
  }
  for (int i = 0; i < g->nnodes; i++) {
    nnc_node *n = g->nodes[i];
    if (!L.live[i]) continue;
    for (int j = 0; j < n->nin; j++)
      add_user(&L, n->in[j], n);
  }
  assign_groups(&L);
  match_epilogues(&L);
  decide(&L);
  if (!assign_buffers(&L)) return false;
  for (int i = 0; i < g->nnodes; i++)
    if (L.st[i] == ST_KERNEL) kernel_for(&L, g->nodes[i]);
  if (!output_copies(&L)) return false;
  return update_passes(&L);
}

bool nnc_cg_lower(nnc_kprog *p, const nnc_module *m, char *err, size_t errlen) {
  p->module = m;
  p->tensor_bufs = nnc_arena_alloc(p->arena, sizeof(int) * (size_t)(m->ntensors + 1));
  for (int i = 0; i < NNC_IN_COUNT_; i++)
    p->input_buf[i] = -1;
  for (int i = 0; i < NNC_OUT_COUNT_; i++)
    p->output_buf[i] = -1;
  for (int t = 0; t < m->ntensors; t++) {
    const nnc_tensor *ts = &m->tensors[t];
    p->tensor_bufs[t] = nnc_kprog_add_buf(p, NNC_KBUF_TENSOR, t, nnc_kt_of(ts->dtype),
                                          nnc_shape_numel(&ts->shape), ts->name);
  }
  if (m->train) {
    p->has_train = true;
    if (!lower_graph(p, m->train, &p->train, err, errlen)) return false;
  }
  if (m->eval) {
    p->has_eval = true;
    if (!lower_graph(p, m->eval, &p->eval, err, errlen)) return false;
  }
  return true;
}
