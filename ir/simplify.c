/* simplify.c: graph clean-up after autodiff and the optimizer (see passes.h).
 *
 * One forward pass over the nodes in creation order. Each node's operands
 * are first redirected to their replacements, then the node is
 *   - folded, when all its operands are constants (CONST nodes fill their
 *     shape with one value, so the result is one value too): the node turns
 *     into a CONST in place, keeping its position and so the topological
 *     order; values are computed with the interpreter's own scalar functions
 *     (interp_internal.h), in double, and rounded once by codegen;
 *   - replaced by an operand when it is an identity: x*1, 1*x, x+0, 0+x,
 *     x-0, x/1, x^1, neg(neg(x)), a reshape, broadcast, cast or transpose that
 *     changes nothing, select on a constant condition (only where the
 *     result has the operand's shape and dtype, so broadcasting is kept);
 *     a reshape of a reshape reads the innermost operand;
 *   - or merged with an earlier identical node (CSE: same op, dtype, shape,
 *     operands, attributes and fattr bits; found through a hash table).
 * Replacements are always earlier nodes, so invariant 1 holds throughout.
 * Finally outputs and updates are redirected, and dead code is removed:
 * only nodes that an output or an update needs are kept (INPUT nodes are
 * always kept, so g->inputs stays valid), and ids are renumbered.
 *
 * Then sums are rewritten so that factors constant along the summed axes
 * leave the sum (see rewrite_sum): batch norm's backward turns from five
 * full-size sums into two. Where any sum was rewritten, the new nodes are
 * put in topological order and the pass above runs once more (to merge the
 * sums that have become equal).
 */
#include "passes.h"

#include "interp_internal.h"

#include <math.h>

#include <stdlib.h>
#include <string.h>

static bool is_const(const nnc_node *n, double v) {
  return n->op == NNC_OP_CONST && n->fattr == v;
}
static bool all_const(const nnc_node *n) {
  for (int i = 0; i < n->nin; i++)
    if (n->in[i]->op != NNC_OP_CONST) return false;
  return true;
}
/* x can stand in for n: same shape and dtype. */
static bool same_type(const nnc_node *n, const nnc_node *x) {
  return n->dtype == x->dtype && nnc_shape_eq(&n->shape, &x->shape);
}

static void make_const(nnc_node *n, double v) {
  n->op = NNC_OP_CONST;
  n->nin = 0;
  n->in = NULL;
  memset(n->attr, 0, sizeof n->attr);
  n->fattr = v;
}

/* How many values the sum n of x adds. In a rank's graph of synchronised
 * batch statistics (graph stat_ranks = N > 1, nnc_sync_batch_sums) a sum
 * over a batch axis 0 (x's dim 0 the rank's samples, or a multiple of them:
 * images' pixels) stands for the sum over every rank's samples: N times
 * the rank's count, the number the one-process step uses. (A sum over
 * axis 0 of a parameter-shaped value whose dim 0 is a multiple of the
 * rank's batch would be miscounted there; the training graphs have none.) */
static double sum_count(const nnc_graph *g, const nnc_node *x, const nnc_node *n) {
  double count = (double)(nnc_shape_numel(&x->shape) / nnc_shape_numel(&n->shape));
  const nnc_node *in = g->inputs[NNC_IN_X];
  int64_t ranks = g->stat_ranks;
  if (ranks > 1 && in && in->shape.rank >= 1 && (n->attr[0] & 1) && x->shape.rank >= 1 &&
      x->shape.dim[0] % in->shape.dim[0] == 0)
    count *= (double)ranks;
  return count;
}

/* Folds n in place if its value is known; returns whether it did. */
static bool fold(const nnc_graph *g, nnc_node *n) {
  if (n->nin == 0 || !all_const(n)) return false;
  if (n->op == NNC_OP_ALLREDUCE) return false; /* N ranks' constants add up to N c */
  double a = n->in[0]->fattr, v = 0;
  switch (nnc_op_class_of(n->op)) {
  case NNC_CLASS_UNARY: v = nnc_interp_scalar(n->op, a, 0); break;
  case NNC_CLASS_BINARY:
  case NNC_CLASS_CMP: v = nnc_interp_scalar(n->op, a, n->in[1]->fattr); break;
  case NNC_CLASS_SHAPE: v = a; break; /* reshape, transpose, broadcast of a fill */
  case NNC_CLASS_REDUCE:
    v = a;
    if (n->op == NNC_OP_SUM) v *= sum_count(g, n->in[0], n);
    break;
  case NNC_CLASS_OTHER:
    if (n->op == NNC_OP_SELECT)
      v = a != 0 ? n->in[1]->fattr : n->in[2]->fattr;
    else if (n->op == NNC_OP_CAST)
      v = n->dtype == NNC_I32 ? trunc(a) : a;
    else
      return false;
    break;
  case NNC_CLASS_LEAF: return false;
  }
  make_const(n, v);
  return true;
}

static bool identity_perm(const nnc_node *n) {
  for (int i = 0; i < n->shape.rank; i++)
    if (n->attr[i] != i) return false;
  return true;
}

/* The earlier node n equals, or n itself. */
static nnc_node *identity(nnc_node *n) {
  nnc_node *a = n->nin > 0 ? n->in[0] : NULL, *b = n->nin > 1 ? n->in[1] : NULL;
  switch (n->op) {
  case NNC_OP_ADD:
    if (is_const(b, 0) && same_type(n, a)) return a;
    if (is_const(a, 0) && same_type(n, b)) return b;
    break;
  case NNC_OP_SUB:
    if (is_const(b, 0) && same_type(n, a)) return a;
    break;
  case NNC_OP_MUL:
    if (is_const(b, 1) && same_type(n, a)) return a;
    if (is_const(a, 1) && same_type(n, b)) return b;
    break;
  case NNC_OP_DIV:
  case NNC_OP_POW:
    if (is_const(b, 1) && same_type(n, a)) return a;
    break;
  case NNC_OP_NEG:
    if (a->op == NNC_OP_NEG) return a->in[0];
    break;
  case NNC_OP_RESHAPE:
    if (a->op == NNC_OP_RESHAPE) n->in[0] = a = a->in[0]; /* reshape(reshape(x)) = reshape(x) */
    if (same_type(n, a)) return a;
    break;
  case NNC_OP_BROADCAST:
  case NNC_OP_CAST:
    if (same_type(n, a)) return a;
    break;
  case NNC_OP_TRANSPOSE:
    if (identity_perm(n)) return a;
    break;
  case NNC_OP_SELECT:
    if (a->op == NNC_OP_CONST) {
      nnc_node *chosen = a->fattr != 0 ? n->in[1] : n->in[2];
      if (same_type(n, chosen)) return chosen;
    }
    break;
  /* no identity form */
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
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR:
  case NNC_OP_ALLREDUCE:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ:
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
  return n;
}

/* ---- Common subexpressions ---- */

typedef struct cse_table {
  nnc_node **slot;
  size_t mask;
} cse_table;

static uint64_t mix(uint64_t h, uint64_t v) {
  return (h ^ v) * UINT64_C(0x100000001B3) + (h >> 29);
}

static uint64_t node_hash(const nnc_node *n) {
  uint64_t h = UINT64_C(0xCBF29CE484222325), bits;
  h = mix(h, (uint64_t)n->op);
  h = mix(h, (uint64_t)n->dtype);
  h = mix(h, (uint64_t)n->shape.rank);
  for (int d = 0; d < n->shape.rank; d++)
    h = mix(h, (uint64_t)n->shape.dim[d]);
  for (int i = 0; i < n->nin; i++)
    h = mix(h, (uint64_t)(uintptr_t)n->in[i]);
  for (int i = 0; i < NNC_MAX_ATTR; i++)
    h = mix(h, (uint64_t)n->attr[i]);
  memcpy(&bits, &n->fattr, sizeof bits);
  return mix(h, bits);
}

static bool node_same(const nnc_node *a, const nnc_node *b) {
  if (a->op != b->op || a->dtype != b->dtype || a->nin != b->nin ||
      !nnc_shape_eq(&a->shape, &b->shape))
    return false;
  for (int i = 0; i < a->nin; i++)
    if (a->in[i] != b->in[i]) return false;
  return memcmp(a->attr, b->attr, sizeof a->attr) == 0 &&
         memcmp(&a->fattr, &b->fattr, sizeof a->fattr) == 0;
}

/* The earlier node identical to n, or n (then remembered). */
static nnc_node *cse(cse_table *t, nnc_node *n) {
  for (size_t i = node_hash(n) & t->mask;; i = (i + 1) & t->mask) {
    if (!t->slot[i]) return t->slot[i] = n;
    if (node_same(t->slot[i], n)) return t->slot[i];
  }
}

/* ---- Dead code ---- */

static void remove_dead(nnc_graph *g) {
  bool *live = calloc((size_t)g->nnodes + 1, sizeof(bool));
  if (!live) nnc_ir_bug("simplify: out of memory");
  for (int k = 0; k < NNC_OUT_COUNT_; k++)
    if (g->outputs[k]) live[g->outputs[k]->id] = true;
  for (int u = 0; u < g->nupdates; u++)
    live[g->updates[u].value->id] = true;
  for (int i = g->nnodes - 1; i >= 0; i--) {
    nnc_node *n = g->nodes[i];
    if (n->op == NNC_OP_INPUT) live[i] = true;
    for (int j = 0; live[i] && j < n->nin; j++)
      live[n->in[j]->id] = true;
  }
  int kept = 0;
  for (int i = 0; i < g->nnodes; i++)
    if (live[i]) {
      g->nodes[kept] = g->nodes[i];
      g->nodes[kept]->id = kept;
      kept++;
    }
  g->nnodes = kept;
  free(live);
}

static void simplify_once(nnc_graph *g) {
  size_t cap = 16;
  while (cap < 2 * (size_t)g->nnodes)
    cap *= 2;
  cse_table table = {calloc(cap, sizeof(nnc_node *)), cap - 1};
  nnc_node **repl = malloc(sizeof(nnc_node *) * ((size_t)g->nnodes + 1));
  if (!table.slot || !repl) nnc_ir_bug("simplify: out of memory");
  for (int i = 0; i < g->nnodes; i++) {
    nnc_node *n = g->nodes[i];
    for (int j = 0; j < n->nin; j++)
      n->in[j] = repl[n->in[j]->id];
    nnc_node *r = fold(g, n) ? n : identity(n);
    repl[i] = r == n ? cse(&table, n) : r;
  }
  for (int k = 0; k < NNC_OUT_COUNT_; k++)
    if (g->outputs[k]) g->outputs[k] = repl[g->outputs[k]->id];
  for (int u = 0; u < g->nupdates; u++)
    g->updates[u].value = repl[g->updates[u].value->id];
  free(repl);
  free(table.slot);
  remove_dead(g);
}

/* ---- Sums of products ----
 *
 * sum_A(s * c1 * ... * f1 * f2 ...) = s * c1 * ... * sum_A(f1 * f2 ...)
 * where s is a sign (neg), the c are constant along the summed axes A
 * (scalars, per-channel vectors, broadcasts of them, fills; a + a counts
 * as 2 * a) and the f are the other factors, multiplied in the order of
 * their ids so that two sums of the same factors become one node. And
 * sum_A(x +- c) = sum_A(x) +- count * c, sum_A(c - x) = count * c - sum_A(x).
 * Each pulls per-element work out of a full pass over x and leaves sums
 * that other nodes already compute (batch norm: sum(dy * xhat) is
 * rstd * sum(dy * (x - mean)), sum(x - mean) is sum(x) - count * mean). */

enum { MAX_FACTORS = 16 };

typedef struct factors {
  nnc_node *c[MAX_FACTORS], *f[MAX_FACTORS];
  int nc, nf;
  bool negate, ok;
} factors;

/* The value n, constant along `axes` of a rank-`rank` operand, as a node
 * that broadcasts to the sum's shape; NULL if n varies along them. */
static nnc_node *along_axes(nnc_graph *g, nnc_node *n, uint32_t axes, int rank) {
  while (n->op == NNC_OP_BROADCAST)
    n = n->in[0];
  if (n->op == NNC_OP_CONST) return n->shape.rank == 0 ? n : nnc_ir_const(g, n->dtype, n->fattr);
  if (n->shape.rank == 0) return n;
  if (n->shape.rank != rank) return NULL;
  for (int d = 0; d < rank; d++)
    if ((axes >> d & 1) && n->shape.dim[d] != 1) return NULL;
  return n;
}

static void add_factor(nnc_node **list, int *count, nnc_node *n, factors *F) {
  if (*count == MAX_FACTORS)
    F->ok = false;
  else
    list[(*count)++] = n;
}

/* Splits the product n (of the sum's operand shape) into F. */
static void collect(nnc_graph *g, nnc_node *n, uint32_t axes, int rank, factors *F) {
  nnc_node *c = along_axes(g, n, axes, rank);
  if (c) {
    add_factor(F->c, &F->nc, c, F);
  } else if (n->op == NNC_OP_NEG) {
    F->negate = !F->negate;
    collect(g, n->in[0], axes, rank, F);
  } else if (n->op == NNC_OP_MUL) {
    collect(g, n->in[0], axes, rank, F);
    collect(g, n->in[1], axes, rank, F);
  } else if (n->op == NNC_OP_ADD && n->in[0] == n->in[1]) {
    add_factor(F->c, &F->nc, nnc_ir_const(g, n->dtype, 2), F);
    collect(g, n->in[0], axes, rank, F);
  } else {
    add_factor(F->f, &F->nf, n, F);
  }
}

static int by_id(const void *a, const void *b) {
  int x = (*(nnc_node *const *)a)->id, y = (*(nnc_node *const *)b)->id;
  return (x > y) - (x < y);
}

/* The graph being rewritten; nodes below nold were there before. */
typedef struct sums {
  nnc_graph *g;
  int nold;
} sums;

static nnc_node *try_sum(sums *S, nnc_node *x, uint32_t axes, int depth);

/* sum(s * c1 * ... * f1 * f2 ...) = s * c1 * ... * sum(f1 * f2 ...), or NULL.
 * Tried for another rule's sake (depth > 0): only with one f whose sum
 * reduces further. */
static nnc_node *pull_factors(sums *S, nnc_node *n, int depth) {
  nnc_graph *g = S->g;
  nnc_node *x = n->in[0];
  uint32_t axes = (uint32_t)n->attr[0];
  factors F = {.ok = true};
  collect(g, x, axes, x->shape.rank, &F);
  if (!F.ok || F.nf == 0 || (F.nc == 0 && !F.negate)) return NULL;
  qsort(F.f, (size_t)F.nf, sizeof F.f[0], by_id);
  nnc_node *p = F.f[0];
  for (int i = 1; i < F.nf; i++)
    p = nnc_ir_binary(g, NNC_OP_MUL, p, F.f[i]);
  if (!nnc_shape_eq(&p->shape, &x->shape)) return NULL; /* the f do not cover x's shape */
  nnc_node *r = depth == 0  ? nnc_ir_reduce(g, NNC_OP_SUM, p, axes)
                : F.nf == 1 ? try_sum(S, p, axes, depth)
                            : NULL;
  if (!r) return NULL;
  for (int i = 0; i < F.nc; i++)
    r = nnc_ir_binary(g, NNC_OP_MUL, r, F.c[i]);
  return F.negate ? nnc_ir_unary(g, NNC_OP_NEG, r) : r;
}

static nnc_node *rewrite_sum(sums *S, nnc_node *n, int depth);

/* Takes the op and operands of r into n, which keeps its id and users. */
static void become(nnc_node *n, const nnc_node *r) {
  n->op = r->op;
  n->nin = r->nin;
  n->in = r->in;
  memcpy(n->attr, r->attr, sizeof n->attr);
  n->fattr = r->fattr;
}

/* sum_axes(x) where the graph has it already, or a rule rewrites it into
 * sums that it has (then the new sum node, rewritten), else NULL: for the
 * rules below, which pay only when no new pass over x results. */
static nnc_node *try_sum(sums *S, nnc_node *x, uint32_t axes, int depth) {
  enum { MAX_DEPTH = 8 };
  nnc_graph *g = S->g;
  for (int i = 0; i < S->nold; i++) {
    nnc_node *o = g->nodes[i];
    if (o->op == NNC_OP_SUM && o->in[0] == x && (uint32_t)o->attr[0] == axes) return o;
  }
  if (depth >= MAX_DEPTH) return NULL;
  nnc_node *s = nnc_ir_reduce(g, NNC_OP_SUM, x, axes);
  nnc_node *r = rewrite_sum(S, s, depth + 1);
  if (!r || !same_type(s, r)) return NULL;
  become(s, r);
  return s;
}

/* sum over axes of reshape(x) as reshape(sum over x's axes): where the
 * reshape merges or splits dims in groups each wholly summed or wholly
 * kept (the [N*H*W, C] rows of a convolution's gradient as [N,H,W,C]).
 * Returns the mask over x's axes, or -1. */
static int64_t reshape_axes(const nnc_node *x, uint32_t axes) {
  const nnc_shape *in = &x->in[0]->shape, *out = &x->shape;
  uint32_t res = 0;
  /* dim d of a shape covers the positions (product before d, product up to d] */
  int64_t ilo = 1;
  for (int i = 0; i < in->rank; ilo *= in->dim[i++]) {
    int64_t ihi = ilo * in->dim[i], olo = 1;
    bool summed = false, kept = false;
    for (int j = 0; j < out->rank; olo *= out->dim[j++]) {
      int64_t ohi = olo * out->dim[j];
      if (out->dim[j] == 1 || ohi <= ilo || olo >= ihi) continue; /* no overlap */
      if (axes >> j & 1)
        summed = true;
      else
        kept = true;
    }
    if (summed && kept) return -1;
    if (summed) res |= 1u << i;
  }
  return res;
}

/* The new value of the sum n, or NULL where no rule applies. New nodes
 * are appended to g (topo_sort puts them in place). */
static nnc_node *rewrite_sum(sums *S, nnc_node *n, int depth) {
  nnc_graph *g = S->g;
  nnc_node *x = n->in[0];
  uint32_t axes = (uint32_t)n->attr[0];
  int rank = x->shape.rank;
  if (x->op == NNC_OP_ADD || x->op == NNC_OP_SUB) {
    for (int i = 0; i < 2; i++) {
      nnc_node *c = along_axes(g, x->in[i], axes, rank), *v = x->in[1 - i];
      if (!c || !nnc_shape_eq(&v->shape, &x->shape)) continue;
      double count = sum_count(g, x, n);
      /* tried for another rule's sake (depth > 0): only if sum(v) reduces too, else
       * sum(v) would be a new pass (and a product's output a second reader) */
      nnc_node *sv = depth ? try_sum(S, v, axes, depth) : nnc_ir_reduce(g, NNC_OP_SUM, v, axes);
      if (!sv) continue;
      nnc_node *sc = nnc_ir_binary(g, NNC_OP_MUL, c, nnc_ir_const(g, n->dtype, count));
      if (x->op == NNC_OP_ADD) return nnc_ir_binary(g, NNC_OP_ADD, sv, sc);
      return i == 1 ? nnc_ir_binary(g, NNC_OP_SUB, sv, sc) : nnc_ir_binary(g, NNC_OP_SUB, sc, sv);
    }
  }
  if (x->op == NNC_OP_MUL || x->op == NNC_OP_NEG || x->op == NNC_OP_ADD) {
    nnc_node *r = pull_factors(S, n, depth);
    if (r) return r;
  }
  /* sum(a +- b) = sum(a) +- sum(b) where both of those reduce further */
  if ((x->op == NNC_OP_ADD || x->op == NNC_OP_SUB) && nnc_shape_eq(&x->in[0]->shape, &x->shape) &&
      nnc_shape_eq(&x->in[1]->shape, &x->shape)) {
    nnc_node *a = try_sum(S, x->in[0], axes, depth),
             *b = a ? try_sum(S, x->in[1], axes, depth) : NULL;
    return b ? nnc_ir_binary(g, x->op, a, b) : NULL;
  }
  if (x->op == NNC_OP_TRANSPOSE) {
    uint32_t src = 0;
    int perm[NNC_MAX_RANK];
    for (int d = 0; d < rank; d++) {
      perm[d] = (int)x->attr[d];
      if (axes >> d & 1) src |= 1u << perm[d];
    }
    nnc_node *s = try_sum(S, x->in[0], src, depth);
    return s ? nnc_ir_transpose(g, s, perm) : NULL;
  }
  if (x->op == NNC_OP_RESHAPE) {
    int64_t src = reshape_axes(x, axes);
    nnc_node *s = src >= 0 ? try_sum(S, x->in[0], (uint32_t)src, depth) : NULL;
    if (!s || nnc_shape_numel(&s->shape) != nnc_shape_numel(&n->shape)) return NULL;
    return nnc_ir_reshape(g, s, &n->shape);
  }
  return NULL;
}

/* Puts g's nodes in an order where operands come first (depth first from
 * each node in the present order, so an ordered graph keeps its order),
 * then renumbers. */
void nnc_ir_topo_sort(nnc_graph *g) {
  int nn = g->nnodes, done = 0, top = 0;
  char *seen = calloc((size_t)nn + 1, 1);
  int *next = calloc((size_t)nn + 1, sizeof(int));
  nnc_node **stack = malloc(sizeof(nnc_node *) * ((size_t)nn + 1));
  nnc_node **order = malloc(sizeof(nnc_node *) * ((size_t)nn + 1));
  if (!seen || !next || !stack || !order) nnc_ir_bug("simplify: out of memory");
  for (int i = 0; i < nn; i++) {
    if (seen[i]) continue;
    seen[i] = 1;
    stack[top++] = g->nodes[i];
    while (top) {
      nnc_node *t = stack[top - 1];
      if (next[t->id] < t->nin) {
        nnc_node *u = t->in[next[t->id]++];
        if (!seen[u->id]) {
          seen[u->id] = 1;
          stack[top++] = u;
        }
      } else {
        order[done++] = t;
        top--;
      }
    }
  }
  for (int i = 0; i < nn; i++) {
    g->nodes[i] = order[i];
    g->nodes[i]->id = i;
  }
  free(seen);
  free(next);
  free(stack);
  free(order);
}

/* Rewrites every sum in place (it takes the op and operands of its new
 * value, so its users need no redirection); returns whether any changed. */
static bool rewrite_sums(nnc_graph *g) {
  bool changed = false;
  sums S = {g, g->nnodes};
  for (int i = 0; i < g->nnodes; i++) { /* including sums the rewrites append */
    nnc_node *n = g->nodes[i];
    if (n->op != NNC_OP_SUM || n->dtype == NNC_I32) continue;
    nnc_node *r = rewrite_sum(&S, n, 0);
    if (!r || !same_type(n, r)) continue;
    become(n, r);
    changed = true;
  }
  return changed;
}

void nnc_simplify(nnc_graph *g) {
  simplify_once(g);
  int n = g->nnodes;
  if (!rewrite_sums(g)) {
    g->nnodes = n; /* drop what failed attempts appended; nothing reads it */
    return;
  }
  nnc_ir_topo_sort(g);
  simplify_once(g);
}
