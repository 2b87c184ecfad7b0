/* ir.c: graph IR construction — the module, its tensor table, graphs, and
 * one builder per op class with that class's shape rule.
 *
 * Builders are the only way nodes are made, so every node's shape and dtype
 * is inferred in one place. Preconditions that a user could violate are
 * checked by the front end first (with a span and a message); a violated
 * precondition here is a compiler bug and stops with nnc_ir_bug.
 */
#include "ir.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ops.def as a table: one row per op, indexed by nnc_op. */
static const struct op_info {
  const char *name;
  int arity;
  nnc_op_class cls;
  nnc_op_lowering lowering;
  nnc_op_gradient gradient;
} op_info[] = {
#define X(e, name, arity, cls, lowering, gradient)                                                 \
  {name, arity, NNC_CLASS_##cls, NNC_LOWER_##lowering, NNC_GRAD_##gradient},
#include "ops.def"
#undef X
};
_Static_assert(sizeof op_info / sizeof op_info[0] == NNC_OP_COUNT_, "one row per op");

const char *nnc_op_name(nnc_op op) {
  return op_info[op].name;
}
int nnc_op_arity(nnc_op op) {
  return op_info[op].arity;
}
nnc_op_class nnc_op_class_of(nnc_op op) {
  return op_info[op].cls;
}
nnc_op_lowering nnc_op_lowering_of(nnc_op op) {
  return op_info[op].lowering;
}
nnc_op_gradient nnc_op_gradient_of(nnc_op op) {
  return op_info[op].gradient;
}

const char *nnc_input_name(nnc_input_kind k) {
  static const char *const names[] = {
#define NAME(e, name) name,
      NNC_INPUT_KINDS(NAME)
#undef NAME
  };
  return (unsigned)k < NNC_IN_COUNT_ ? names[k] : "?";
}

const char *nnc_output_name(nnc_output_kind k) {
  static const char *const names[] = {
#define NAME(e, name) name,
      NNC_OUTPUT_KINDS(NAME)
#undef NAME
  };
  return (unsigned)k < NNC_OUT_COUNT_ ? names[k] : "?";
}

const char *nnc_dtype_name(nnc_dtype t) {
  switch (t) {
  case NNC_F32: return "f32";
  case NNC_F64: return "f64";
  case NNC_I32: return "i32";
  }
  return "?";
}

size_t nnc_dtype_size(nnc_dtype t) {
  switch (t) {
  case NNC_F32: return 4;
  case NNC_F64: return 8;
  case NNC_I32: return 4;
  }
  return 0;
}

_Noreturn void nnc_ir_bug(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("nnc: internal error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

/* ---- Shapes ---- */

int64_t nnc_shape_numel(const nnc_shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++)
    n *= s->dim[i];
  return n;
}

bool nnc_shape_eq(const nnc_shape *a, const nnc_shape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->dim[i] != b->dim[i]) return false;
  return true;
}

char *nnc_shape_str(char *buf, size_t n, nnc_dtype t, const nnc_shape *s) {
  size_t k = (size_t)snprintf(buf, n, "%s[", nnc_dtype_name(t));
  for (int i = 0; i < s->rank && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)s->dim[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

int64_t nnc_ir_window_out(int64_t in, int64_t k, int64_t stride, int64_t pad) {
  return (in + 2 * pad - k) / stride + 1;
}

/* ---- Module ---- */

nnc_module *nnc_module_new(nnc_arena *arena, const char *name) {
  nnc_module *m = nnc_arena_alloc(arena, sizeof *m);
  m->arena = arena;
  m->name = nnc_arena_strdup(arena, name ? name : "");
  nnc_config_defaults(&m->config);
  m->sample_dtype = NNC_F32;
  return m;
}

int nnc_module_add_tensor(nnc_module *m, const char *name, nnc_tensor_role role, nnc_dtype dtype,
                          const nnc_shape *shape, nnc_init init, nnc_span span) {
  if (m->ntensors == m->tensor_cap) {
    int cap = m->tensor_cap ? 2 * m->tensor_cap : 16;
    m->tensors = nnc_arena_grow(m->arena, m->tensors, sizeof(nnc_tensor) * (size_t)m->ntensors,
                                sizeof(nnc_tensor) * (size_t)cap);
    m->tensor_cap = cap;
  }
  nnc_tensor *t = &m->tensors[m->ntensors];
  t->name = nnc_arena_strdup(m->arena, name);
  t->role = role;
  t->dtype = dtype;
  t->shape = *shape;
  t->init = init;
  t->lr_scale = 1.0;
  t->span = span;
  nnc_name_map_put(&m->tensor_index, m->arena, t->name, m->ntensors);
  return m->ntensors++;
}

int nnc_module_find_tensor(const nnc_module *m, const char *name) {
  return nnc_name_map_get(&m->tensor_index, name);
}

nnc_graph *nnc_graph_new(nnc_module *m, const char *name) {
  nnc_graph *g = nnc_arena_alloc(m->arena, sizeof *g);
  g->name = nnc_arena_strdup(m->arena, name);
  g->module = m;
  return g;
}

/* ---- Node construction ---- */

nnc_node *nnc_ir_append(nnc_graph *g, nnc_node *proto) {
  nnc_arena *a = g->module->arena;
  if (g->nnodes == g->cap) {
    int cap = g->cap ? 2 * g->cap : 64;
    g->nodes = nnc_arena_grow(a, g->nodes, sizeof(nnc_node *) * (size_t)g->nnodes,
                              sizeof(nnc_node *) * (size_t)cap);
    g->cap = cap;
  }
  nnc_node *n = nnc_arena_alloc(a, sizeof *n);
  *n = *proto;
  if (proto->nin) {
    n->in = nnc_arena_alloc(a, sizeof(nnc_node *) * (size_t)proto->nin);
    memcpy(n->in, proto->in, sizeof(nnc_node *) * (size_t)proto->nin);
  }
  n->id = g->nnodes;
  g->nodes[g->nnodes++] = n;
  return n;
}

/* A prototype node with operands; shape and dtype set by the caller. */
static nnc_node proto_of(nnc_op op, int nin, nnc_node **in) {
  nnc_node p;
  memset(&p, 0, sizeof p);
  p.op = op;
  p.nin = nin;
  p.in = in;
  /* Inherit the first operand's span and name: a derived node comes from
   * the same source expression unless the builder's caller says otherwise. */
  if (nin > 0 && in[0]) p.span = in[0]->span;
  return p;
}

static bool is_float(nnc_dtype t) {
  return t == NNC_F32 || t == NNC_F64;
}

nnc_node *nnc_ir_input(nnc_graph *g, nnc_input_kind kind, nnc_dtype t, const nnc_shape *s) {
  if (g->inputs[kind]) return g->inputs[kind];
  nnc_node p = proto_of(NNC_OP_INPUT, 0, NULL);
  p.attr[0] = kind;
  p.dtype = t;
  p.shape = *s;
  return g->inputs[kind] = nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_param(nnc_graph *g, int tensor) {
  nnc_module *m = g->module;
  if (tensor < 0 || tensor >= m->ntensors) nnc_ir_bug("param: no tensor %d", tensor);
  if (tensor >= g->param_cap) {
    int cap = g->param_cap ? g->param_cap : 16;
    while (cap <= tensor)
      cap *= 2;
    g->param_nodes =
        nnc_arena_grow(m->arena, g->param_nodes, sizeof(nnc_node *) * (size_t)g->param_cap,
                       sizeof(nnc_node *) * (size_t)cap);
    g->param_cap = cap;
  }
  /* PARAM nodes are made only here, so the remembered one is the only
   * one; it counts while it is still in the graph (a pass that drops
   * nodes renumbers the rest, so id finds it), else a new one is made. */
  nnc_node *n = g->param_nodes[tensor];
  if (n && n->id < g->nnodes && g->nodes[n->id] == n) return n;
  nnc_node p = proto_of(NNC_OP_PARAM, 0, NULL);
  p.attr[0] = tensor;
  p.dtype = m->tensors[tensor].dtype;
  p.shape = m->tensors[tensor].shape;
  p.span = m->tensors[tensor].span;
  p.name = m->tensors[tensor].name;
  return g->param_nodes[tensor] = nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_fill(nnc_graph *g, nnc_dtype t, const nnc_shape *s, double value) {
  nnc_node p = proto_of(NNC_OP_CONST, 0, NULL);
  p.dtype = t;
  p.shape = *s;
  p.fattr = value;
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_const(nnc_graph *g, nnc_dtype t, double value) {
  nnc_shape s = {0, {0}};
  return nnc_ir_fill(g, t, &s, value);
}

nnc_node *nnc_ir_unary(nnc_graph *g, nnc_op op, nnc_node *a) {
  if (nnc_op_class_of(op) != NNC_CLASS_UNARY) nnc_ir_bug("%s is not unary", nnc_op_name(op));
  if (!is_float(a->dtype)) nnc_ir_bug("%s of %s", nnc_op_name(op), nnc_dtype_name(a->dtype));
  nnc_node p = proto_of(op, 1, &a);
  p.dtype = a->dtype;
  p.shape = a->shape;
  return nnc_ir_append(g, &p);
}

/* Broadcast shape of operands (invariant 3): same rank, dims equal or 1;
 * rank 0 broadcasts to anything. */
static nnc_shape broadcast_shape(nnc_op op, nnc_node **in, int nin) {
  nnc_shape out = {0, {0}};
  for (int i = 0; i < nin; i++)
    if (in[i]->shape.rank > out.rank) out = in[i]->shape;
  for (int i = 0; i < nin; i++) {
    const nnc_shape *s = &in[i]->shape;
    if (s->rank == 0) continue;
    if (s->rank != out.rank)
      nnc_ir_bug("%s: operand ranks %d and %d", nnc_op_name(op), s->rank, out.rank);
    for (int d = 0; d < s->rank; d++) {
      if (s->dim[d] == out.dim[d] || s->dim[d] == 1) continue;
      if (out.dim[d] == 1) {
        out.dim[d] = s->dim[d];
        continue;
      }
      nnc_ir_bug("%s: dims %lld and %lld at axis %d", nnc_op_name(op), (long long)s->dim[d],
                 (long long)out.dim[d], d);
    }
  }
  return out;
}

nnc_node *nnc_ir_binary(nnc_graph *g, nnc_op op, nnc_node *a, nnc_node *b) {
  nnc_op_class c = nnc_op_class_of(op);
  if (c != NNC_CLASS_BINARY && c != NNC_CLASS_CMP) nnc_ir_bug("%s is not binary", nnc_op_name(op));
  if (a->dtype != b->dtype || !is_float(a->dtype))
    nnc_ir_bug("%s of %s and %s", nnc_op_name(op), nnc_dtype_name(a->dtype),
               nnc_dtype_name(b->dtype));
  nnc_node *in[2] = {a, b};
  nnc_node p = proto_of(op, 2, in);
  p.dtype = a->dtype;
  p.shape = broadcast_shape(op, in, 2);
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_select(nnc_graph *g, nnc_node *c, nnc_node *a, nnc_node *b) {
  if (a->dtype != b->dtype || c->dtype != a->dtype || !is_float(a->dtype))
    nnc_ir_bug("select of mixed dtypes");
  nnc_node *in[3] = {c, a, b};
  nnc_node p = proto_of(NNC_OP_SELECT, 3, in);
  p.span = a->span;
  p.dtype = a->dtype;
  p.shape = broadcast_shape(NNC_OP_SELECT, in, 3);
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_cast(nnc_graph *g, nnc_node *a, nnc_dtype t) {
  nnc_node p = proto_of(NNC_OP_CAST, 1, &a);
  p.dtype = t;
  p.shape = a->shape;
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_reduce(nnc_graph *g, nnc_op op, nnc_node *a, uint32_t axes) {
  if (nnc_op_class_of(op) != NNC_CLASS_REDUCE) nnc_ir_bug("%s is not a reduction", nnc_op_name(op));
  if (!is_float(a->dtype)) nnc_ir_bug("%s of %s", nnc_op_name(op), nnc_dtype_name(a->dtype));
  if (axes >> a->shape.rank)
    nnc_ir_bug("%s: axes 0x%x beyond rank %d", nnc_op_name(op), axes, a->shape.rank);
  nnc_node p = proto_of(op, 1, &a);
  p.attr[0] = axes;
  p.dtype = a->dtype;
  p.shape = a->shape;
  for (int d = 0; d < a->shape.rank; d++)
    if (axes & (1u << d)) p.shape.dim[d] = 1;
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_argmax(nnc_graph *g, nnc_node *a, int axis) {
  if (axis < 0 || axis >= a->shape.rank)
    nnc_ir_bug("argmax: axis %d of rank %d", axis, a->shape.rank);
  nnc_node p = proto_of(NNC_OP_ARGMAX, 1, &a);
  p.attr[0] = axis;
  p.dtype = a->dtype;
  p.shape = a->shape;
  p.shape.dim[axis] = 1;
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_reshape(nnc_graph *g, nnc_node *a, const nnc_shape *s) {
  if (nnc_shape_numel(s) != nnc_shape_numel(&a->shape)) nnc_ir_bug("reshape changes element count");
  if (nnc_shape_eq(s, &a->shape)) return a;
  nnc_node p = proto_of(NNC_OP_RESHAPE, 1, &a);
  p.dtype = a->dtype;
  p.shape = *s;
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_transpose(nnc_graph *g, nnc_node *a, const int *perm) {
  nnc_node p = proto_of(NNC_OP_TRANSPOSE, 1, &a);
  p.dtype = a->dtype;
  p.shape.rank = a->shape.rank;
  unsigned seen = 0;
  for (int i = 0; i < a->shape.rank; i++) {
    if (perm[i] < 0 || perm[i] >= a->shape.rank || (seen & (1u << perm[i])))
      nnc_ir_bug("transpose: bad permutation");
    seen |= 1u << perm[i];
    p.attr[i] = perm[i];
    p.shape.dim[i] = a->shape.dim[perm[i]];
  }
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_broadcast(nnc_graph *g, nnc_node *a, const nnc_shape *s) {
  if (nnc_shape_eq(s, &a->shape)) return a;
  if (a->shape.rank != 0) {
    if (a->shape.rank != s->rank) nnc_ir_bug("broadcast: rank %d to %d", a->shape.rank, s->rank);
    for (int d = 0; d < s->rank; d++)
      if (a->shape.dim[d] != 1 && a->shape.dim[d] != s->dim[d]) nnc_ir_bug("broadcast: axis %d", d);
  }
  nnc_node p = proto_of(NNC_OP_BROADCAST, 1, &a);
  p.dtype = a->dtype;
  p.shape = *s;
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_matmul(nnc_graph *g, nnc_node *a, nnc_node *b, bool trans_a, bool trans_b) {
  if (a->shape.rank != 2 || b->shape.rank != 2 || a->dtype != b->dtype || !is_float(a->dtype))
    nnc_ir_bug("matmul needs two 2-d float operands of one dtype");
  int64_t m = trans_a ? a->shape.dim[1] : a->shape.dim[0];
  int64_t k = trans_a ? a->shape.dim[0] : a->shape.dim[1];
  int64_t kb = trans_b ? b->shape.dim[1] : b->shape.dim[0];
  int64_t n = trans_b ? b->shape.dim[0] : b->shape.dim[1];
  if (k != kb) nnc_ir_bug("matmul: inner dims %lld and %lld", (long long)k, (long long)kb);
  nnc_node *in[2] = {a, b};
  nnc_node p = proto_of(NNC_OP_MATMUL, 2, in);
  p.attr[0] = trans_a;
  p.attr[1] = trans_b;
  p.dtype = a->dtype;
  p.shape.rank = 2;
  p.shape.dim[0] = m;
  p.shape.dim[1] = n;
  return nnc_ir_append(g, &p);
}

static void set_window_attrs(nnc_node *p, const int64_t k[2], const int64_t stride[2],
                             const int64_t pad[2]) {
  p->attr[0] = k[0];
  p->attr[1] = k[1];
  p->attr[2] = stride[0];
  p->attr[3] = stride[1];
  p->attr[4] = pad[0];
  p->attr[5] = pad[1];
}

nnc_node *nnc_ir_im2col(nnc_graph *g, nnc_node *x, const int64_t k[2], const int64_t stride[2],
                        const int64_t pad[2], double pad_value) {
  if (x->shape.rank != 4) nnc_ir_bug("im2col needs NCHW");
  int64_t oh = nnc_ir_window_out(x->shape.dim[2], k[0], stride[0], pad[0]);
  int64_t ow = nnc_ir_window_out(x->shape.dim[3], k[1], stride[1], pad[1]);
  if (oh < 1 || ow < 1) nnc_ir_bug("im2col: window larger than input");
  nnc_node p = proto_of(NNC_OP_IM2COL, 1, &x);
  set_window_attrs(&p, k, stride, pad);
  p.fattr = pad_value;
  p.dtype = x->dtype;
  p.shape.rank = 2;
  p.shape.dim[0] = x->shape.dim[0] * oh * ow;
  p.shape.dim[1] = x->shape.dim[1] * k[0] * k[1];
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_col2im(nnc_graph *g, nnc_node *cols, const nnc_shape *x_shape, const int64_t k[2],
                        const int64_t stride[2], const int64_t pad[2]) {
  if (x_shape->rank != 4) nnc_ir_bug("col2im needs NCHW");
  int64_t oh = nnc_ir_window_out(x_shape->dim[2], k[0], stride[0], pad[0]);
  int64_t ow = nnc_ir_window_out(x_shape->dim[3], k[1], stride[1], pad[1]);
  if (cols->shape.rank != 2 || cols->shape.dim[0] != x_shape->dim[0] * oh * ow ||
      cols->shape.dim[1] != x_shape->dim[1] * k[0] * k[1])
    nnc_ir_bug("col2im: columns do not match the image shape");
  nnc_node p = proto_of(NNC_OP_COL2IM, 1, &cols);
  set_window_attrs(&p, k, stride, pad);
  p.dtype = cols->dtype;
  p.shape = *x_shape;
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_gather(nnc_graph *g, nnc_node *table, nnc_node *idx) {
  if (table->shape.rank != 2 || idx->dtype != NNC_I32 || idx->shape.rank >= NNC_MAX_RANK)
    nnc_ir_bug("gather needs table[V,D] and i32 indices");
  nnc_node *in[2] = {table, idx};
  nnc_node p = proto_of(NNC_OP_GATHER, 2, in);
  p.dtype = table->dtype;
  p.shape = idx->shape;
  p.shape.dim[p.shape.rank++] = table->shape.dim[1];
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_scatter_add(nnc_graph *g, nnc_node *dy, nnc_node *idx, int64_t rows) {
  if (idx->dtype != NNC_I32 || dy->shape.rank != idx->shape.rank + 1)
    nnc_ir_bug("scatter_add needs dy[..., D] and i32 indices [...]");
  nnc_node *in[2] = {dy, idx};
  nnc_node p = proto_of(NNC_OP_SCATTER_ADD, 2, in);
  p.dtype = dy->dtype;
  p.shape.rank = 2;
  p.shape.dim[0] = rows;
  p.shape.dim[1] = dy->shape.dim[dy->shape.rank - 1];
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_onehot(nnc_graph *g, nnc_node *labels, int64_t classes, nnc_dtype t) {
  if (labels->dtype != NNC_I32 || labels->shape.rank >= NNC_MAX_RANK)
    nnc_ir_bug("onehot needs i32 labels");
  nnc_node p = proto_of(NNC_OP_ONEHOT, 1, &labels);
  p.attr[0] = classes;
  p.dtype = t;
  p.shape = labels->shape;
  p.shape.dim[p.shape.rank++] = classes;
  return nnc_ir_append(g, &p);
}

nnc_node *nnc_ir_rand(nnc_graph *g, nnc_node *seed, nnc_node *step, const nnc_shape *s, nnc_dtype t,
                      int64_t stream) {
  nnc_node *in[2] = {seed, step};
  nnc_node p = proto_of(NNC_OP_RAND, 2, in);
  p.span = (nnc_span){0, 0, 0};
  p.attr[0] = stream;
  p.dtype = t;
  p.shape = *s;
  return nnc_ir_append(g, &p);
}

void nnc_graph_set_output(nnc_graph *g, nnc_output_kind k, nnc_node *n) {
  g->outputs[k] = n;
}

void nnc_graph_add_update(nnc_graph *g, int tensor, nnc_node *value) {
  for (int i = 0; i < g->nupdates; i++)
    if (g->updates[i].tensor == tensor) {
      g->updates[i].value = value; /* a later update of the same tensor replaces it */
      return;
    }
  if (g->nupdates == g->update_cap) {
    int cap = g->update_cap ? 2 * g->update_cap : 16;
    g->updates =
        nnc_arena_grow(g->module->arena, g->updates, sizeof(nnc_update) * (size_t)g->nupdates,
                       sizeof(nnc_update) * (size_t)cap);
    g->update_cap = cap;
  }
  g->updates[g->nupdates++] = (nnc_update){tensor, value};
}
