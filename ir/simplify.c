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

/* Folds n in place if its value is known; returns whether it did. */
static bool fold(nnc_node *n) {
  if (n->nin == 0 || !all_const(n)) return false;
  double a = n->in[0]->fattr, v = 0;
  switch (nnc_op_class_of(n->op)) {
  case NNC_CLASS_UNARY: v = nnc_interp_unary(n->op, a); break;
  case NNC_CLASS_BINARY:
  case NNC_CLASS_CMP: v = nnc_interp_binary(n->op, a, n->in[1]->fattr); break;
  case NNC_CLASS_SHAPE: v = a; break; /* reshape, transpose, broadcast of a fill */
  case NNC_CLASS_REDUCE:
    v = a;
    if (n->op == NNC_OP_SUM)
      v *= (double)(nnc_shape_numel(&n->in[0]->shape) / nnc_shape_numel(&n->shape));
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
  default: break; /* the other ops have no identity form */
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

void nnc_simplify(nnc_graph *g) {
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
    nnc_node *r = fold(n) ? n : identity(n);
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
