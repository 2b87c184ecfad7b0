/* verify.c: checks the graph IR invariants listed at the top of ir.h.
 * Run after every pass in debug builds (NNC_DEBUG_CHECKS) and by the tests;
 * a failure is a compiler bug, reported with the offending node. */
#include "ir.h"

#include <stdarg.h>
#include <string.h>

static bool fail(char *err, size_t n, const nnc_graph *g, const nnc_node *node, const char *fmt,
                 ...) {
  if (!err || !n) return false;
  int k = snprintf(err, n, "graph %s, %%%d (%s): ", g->name, node ? node->id : -1,
                   node ? nnc_op_name(node->op) : "-");
  if (k < 0 || (size_t)k >= n) return false;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + k, n - (size_t)k, fmt, ap);
  va_end(ap);
  return false;
}

static bool shape_ok(const nnc_shape *s) {
  if (s->rank < 0 || s->rank > NNC_MAX_RANK) return false;
  int64_t numel = 1;
  for (int d = 0; d < s->rank; d++) {
    if (s->dim[d] < 1 || s->dim[d] > ((int64_t)1 << 40)) return false;
    numel *= s->dim[d];
    if (numel > ((int64_t)1 << 40)) return false;
  }
  return true;
}

/* Operand broadcasts to the node's shape (invariant 3). */
static bool broadcasts_to(const nnc_shape *from, const nnc_shape *to) {
  if (from->rank == 0) return true;
  if (from->rank != to->rank) return false;
  for (int d = 0; d < to->rank; d++)
    if (from->dim[d] != to->dim[d] && from->dim[d] != 1) return false;
  return true;
}

static bool is_float(nnc_dtype t) {
  return t == NNC_F32 || t == NNC_F64;
}

static bool check_node(const nnc_graph *g, const nnc_node *n, char *err, size_t errlen) {
  int arity = nnc_op_arity(n->op);
  if (arity >= 0 && n->nin != arity)
    return fail(err, errlen, g, n, "has %d operands, needs %d", n->nin, arity);
  if (!shape_ok(&n->shape)) return fail(err, errlen, g, n, "bad shape");
  for (int i = 0; i < n->nin; i++) {
    const nnc_node *a = n->in[i];
    if (!a || a->id < 0 || a->id >= n->id || g->nodes[a->id] != a)
      return fail(err, errlen, g, n, "operand %d is not an earlier node of this graph", i);
  }
  switch (nnc_op_class_of(n->op)) {
  case NNC_CLASS_UNARY:
    if (!nnc_shape_eq(&n->shape, &n->in[0]->shape) || n->dtype != n->in[0]->dtype ||
        !is_float(n->dtype))
      return fail(err, errlen, g, n, "unary op must keep its float operand's shape and dtype");
    break;
  case NNC_CLASS_BINARY:
  case NNC_CLASS_CMP:
    for (int i = 0; i < n->nin; i++)
      if (!broadcasts_to(&n->in[i]->shape, &n->shape) || n->in[i]->dtype != n->dtype ||
          !is_float(n->dtype))
        return fail(err, errlen, g, n, "operand %d does not broadcast to the result", i);
    break;
  case NNC_CLASS_REDUCE:
    if (n->in[0]->shape.rank != n->shape.rank || !is_float(n->dtype))
      return fail(err, errlen, g, n, "reduction must keep rank");
    for (int d = 0; d < n->shape.rank; d++) {
      bool reduced = (n->attr[0] >> d) & 1;
      if (n->shape.dim[d] != (reduced ? 1 : n->in[0]->shape.dim[d]))
        return fail(err, errlen, g, n, "reduced shape wrong at axis %d", d);
    }
    break;
  case NNC_CLASS_SHAPE:
    if (n->op != NNC_OP_BROADCAST &&
        nnc_shape_numel(&n->shape) != nnc_shape_numel(&n->in[0]->shape))
      return fail(err, errlen, g, n, "changes the element count");
    if (n->op == NNC_OP_BROADCAST && !broadcasts_to(&n->in[0]->shape, &n->shape))
      return fail(err, errlen, g, n, "operand does not broadcast to the result");
    break;
  case NNC_CLASS_LEAF:
  case NNC_CLASS_OTHER: break;
  }
  if (n->op == NNC_OP_PARAM) {
    const nnc_module *m = g->module;
    if (n->attr[0] < 0 || n->attr[0] >= m->ntensors)
      return fail(err, errlen, g, n, "names no tensor");
    const nnc_tensor *t = &m->tensors[n->attr[0]];
    if (!nnc_shape_eq(&t->shape, &n->shape) || t->dtype != n->dtype)
      return fail(err, errlen, g, n, "shape differs from tensor %s", t->name);
  }
  if (n->op == NNC_OP_SELECT)
    for (int i = 0; i < 3; i++)
      if (!broadcasts_to(&n->in[i]->shape, &n->shape))
        return fail(err, errlen, g, n, "operand %d does not broadcast to the result", i);
  return true;
}

bool nnc_ir_verify(const nnc_graph *g, char *err, size_t errlen) {
  const nnc_module *m = g->module;
  for (int i = 0; i < g->nnodes; i++) {
    const nnc_node *n = g->nodes[i];
    if (!n || n->id != i) return fail(err, errlen, g, n, "node id is not its position %d", i);
    if (!check_node(g, n, err, errlen)) return false;
    if (n->op == NNC_OP_PARAM)
      for (int j = 0; j < i; j++)
        if (g->nodes[j]->op == NNC_OP_PARAM && g->nodes[j]->attr[0] == n->attr[0])
          return fail(err, errlen, g, n, "second param node for tensor @%lld",
                      (long long)n->attr[0]);
  }
  for (int k = 0; k < NNC_OUT_COUNT_; k++) {
    const nnc_node *o = g->outputs[k];
    if (o && (o->id < 0 || o->id >= g->nnodes || g->nodes[o->id] != o))
      return fail(err, errlen, g, NULL, "output %d is not a node of this graph", k);
  }
  for (int i = 0; i < g->nupdates; i++) {
    const nnc_update *u = &g->updates[i];
    if (u->tensor < 0 || u->tensor >= m->ntensors)
      return fail(err, errlen, g, NULL, "update of no tensor");
    const nnc_tensor *t = &m->tensors[u->tensor];
    const nnc_node *v = u->value;
    if (!v || v->id < 0 || v->id >= g->nnodes || g->nodes[v->id] != v)
      return fail(err, errlen, g, NULL, "update of %s is not a node of this graph", t->name);
    if (!nnc_shape_eq(&t->shape, &v->shape) || t->dtype != v->dtype)
      return fail(err, errlen, g, v, "update value shape differs from tensor %s", t->name);
    for (int j = 0; j < i; j++)
      if (g->updates[j].tensor == u->tensor)
        return fail(err, errlen, g, v, "second update of %s", t->name);
  }
  return true;
}
