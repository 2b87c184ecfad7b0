/* emit_onnx.c: the prediction of a module's eval graph as an ONNX model
 * (onnx.h), built as protobuf-c messages of the schema subset in
 * onnx.proto and packed by protobuf-c.
 *
 * Unlike the C and object backends this one reads the graph IR, not the
 * kernel IR: ONNX runtimes want layers (Conv, Gemm, MaxPool), which the
 * graph still shows as short, fixed patterns of primitive ops (the front
 * end's desugaring of each layer). Translation is on demand from the
 * prediction backwards, memoised per node: a node is first tried against
 * the layer patterns it can end, whose inner nodes must have no other
 * reader; what matches no pattern becomes the ONNX op of its primitive:
 *
 *   conv2d      transpose(reshape(add(matmul(im2col(x), reshape(W)), b)))  -> Conv
 *   maxpool     reshape(rmax(im2col(reshape(x))))                        -> MaxPool
 *   avgpool     reshape(mul(sum(im2col(reshape(x))), 1/k^2))             -> AveragePool
 *   batchnorm   add(mul(mul(sub(x, mean), rsqrt(var + eps)), gamma), beta)
 *                              -> BatchNormalization, or folded into the Conv before it
 *   dense       add(matmul(a, W), b)                                     -> Gemm
 *   softmax     div(exp(x - rmax(x)), sum(exp(x - rmax(x))))              -> Softmax
 *   elementwise Add Sub Mul Div Max Min Pow Neg Exp Log Sqrt Reciprocal Tanh
 *               Sigmoid Relu Abs Sign Erf Cos Floor Cast, comparisons as
 *               Greater/GreaterOrEqual/Equal then Cast, select as Where
 *   mean        mul(sum(x), 1/count)                                     -> ReduceMean
 *   reductions  ReduceMax; sum as ReduceMean then Mul by the count (see
 *               reduce); ArgMax then Cast
 *   shapes      Reshape, Transpose, Expand; gather as Gather
 *   im2col      elsewhere: a Conv with a one-hot kernel, Transpose, Reshape
 *
 * The input is prepared by ops as the runtime prepares data: Mul by the
 * scale, Sub the mean, Div by the std, in float. Shapes are static: the
 * batch is the eval graph's (nnc --batch, 1 by default).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.h"
#include "onnx.pb-c.h"

enum { OPSET = 13, IR_VERSION = 7 };

typedef struct ox {
  nnc_arena a;
  const nnc_module *m;
  const nnc_graph *g;
  const nnc_deploy_values *v;
  const nnc_onnx_options *o;
  const char **value; /* [nnodes]: the ONNX value of each translated node */
  int *uses;          /* [nnodes]: readers among the nodes the prediction needs */
  const char **param; /* [ntensors]: initializer name of each tensor added */
  Onnx__NodeProto **nodes;
  size_t nnodes, node_cap;
  Onnx__TensorProto **inits;
  size_t ninits, init_cap;
  int fresh;
  const char *input; /* the prepared input x */
  char *err;
  size_t errlen;
  bool failed;
} ox;

static void fail(ox *X, const char *fmt, const char *what) {
  if (X->failed) return;
  X->failed = true;
  snprintf(X->err, X->errlen, fmt, what);
}

static const char *name_of(ox *X, const nnc_node *n, const char *op) {
  return nnc_arena_printf(&X->a, "%s/%s_%d", n && n->name ? n->name : "nnc", op, X->fresh++);
}

/* ---- messages ---- */

static void push(ox *X, void ***arr, size_t *n, size_t *cap, void *item) {
  if (*n == *cap) {
    size_t nc = *cap ? 2 * *cap : 64;
    *arr = nnc_arena_grow(&X->a, *arr, sizeof(void *) * *cap, sizeof(void *) * nc);
    *cap = nc;
  }
  (*arr)[(*n)++] = item;
}

/* Adds a node op_type(in...) with one output named after it; returns the output. */
static Onnx__NodeProto *node(ox *X, const nnc_node *origin, const char *op_type, int nin,
                             const char *const *in) {
  Onnx__NodeProto *p = nnc_arena_alloc(&X->a, sizeof *p);
  onnx__node_proto__init(p);
  p->op_type = (char *)op_type;
  p->name = (char *)name_of(X, origin, op_type);
  p->n_input = (size_t)nin;
  p->input = nnc_arena_alloc(&X->a, sizeof(char *) * (size_t)(nin + 1));
  for (int i = 0; i < nin; i++)
    p->input[i] = (char *)in[i];
  p->n_output = 1;
  p->output = nnc_arena_alloc(&X->a, sizeof(char *));
  p->output[0] = p->name;
  push(X, (void ***)&X->nodes, &X->nnodes, &X->node_cap, p);
  return p;
}

static const char *out_of(const Onnx__NodeProto *p) {
  return p->output[0];
}

static Onnx__AttributeProto *attribute(ox *X, Onnx__NodeProto *p, const char *name,
                                       Onnx__AttributeProto__AttributeType t) {
  Onnx__AttributeProto *a = nnc_arena_alloc(&X->a, sizeof *a);
  onnx__attribute_proto__init(a);
  a->name = (char *)name;
  a->has_type = 1;
  a->type = t;
  p->attribute = nnc_arena_grow(&X->a, p->attribute, sizeof(void *) * p->n_attribute,
                                sizeof(void *) * (p->n_attribute + 1));
  p->attribute[p->n_attribute++] = a;
  return a;
}

static void attr_int(ox *X, Onnx__NodeProto *p, const char *name, int64_t v) {
  Onnx__AttributeProto *a = attribute(X, p, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
  a->has_i = 1;
  a->i = v;
}

static void attr_float(ox *X, Onnx__NodeProto *p, const char *name, double v) {
  Onnx__AttributeProto *a = attribute(X, p, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  a->has_f = 1;
  a->f = (float)v;
}

static void attr_ints(ox *X, Onnx__NodeProto *p, const char *name, int n, const int64_t *v) {
  Onnx__AttributeProto *a = attribute(X, p, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  a->n_ints = (size_t)n;
  a->ints = nnc_arena_alloc(&X->a, sizeof(int64_t) * (size_t)(n + 1));
  memcpy(a->ints, v, sizeof(int64_t) * (size_t)n);
}

static int32_t elem_type(nnc_dtype t) {
  switch (t) {
  case NNC_F32: return ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  case NNC_F64: return ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE;
  case NNC_I32: return ONNX__TENSOR_PROTO__DATA_TYPE__INT32;
  }
  return ONNX__TENSOR_PROTO__DATA_TYPE__UNDEFINED;
}

/* An initializer: n elements of `size` bytes, each given as a 64-bit
 * pattern (its low `size` bytes), stored little-endian whatever the host. */
static Onnx__TensorProto *initializer(ox *X, const char *name, int32_t type, int rank,
                                      const int64_t *dims, int size) {
  Onnx__TensorProto *t = nnc_arena_alloc(&X->a, sizeof *t);
  onnx__tensor_proto__init(t);
  t->name = (char *)name;
  t->has_data_type = 1;
  t->data_type = type;
  t->n_dims = (size_t)rank;
  t->dims = nnc_arena_alloc(&X->a, sizeof(int64_t) * (size_t)(rank + 1));
  int64_t n = 1;
  for (int i = 0; i < rank; i++)
    n *= t->dims[i] = dims[i];
  t->has_raw_data = 1;
  t->raw_data.len = (size_t)(n * size);
  t->raw_data.data = nnc_arena_alloc(&X->a, t->raw_data.len + 1);
  push(X, (void ***)&X->inits, &X->ninits, &X->init_cap, t);
  return t;
}

static void put(Onnx__TensorProto *t, int64_t i, int size, uint64_t bits) {
  for (int b = 0; b < size; b++)
    t->raw_data.data[i * size + b] = (uint8_t)(bits >> (8 * b));
}

static uint64_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static const char *float_init(ox *X, const char *name, int rank, const int64_t *dims,
                              const float *x) {
  Onnx__TensorProto *t = initializer(X, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, rank, dims, 4);
  for (size_t i = 0; i < t->raw_data.len / 4; i++)
    put(t, (int64_t)i, 4, f32_bits(x[i]));
  return name;
}

static const char *scalar_f32(ox *X, const nnc_node *origin, double v) {
  float f = (float)v;
  return float_init(X, name_of(X, origin, "const"), 0, NULL, &f);
}

static const char *ints_init(ox *X, const nnc_node *origin, int n, const int64_t *v) {
  int64_t dims[1] = {n};
  Onnx__TensorProto *t =
      initializer(X, name_of(X, origin, "shape"), ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, dims, 8);
  for (int i = 0; i < n; i++)
    put(t, i, 8, (uint64_t)v[i]);
  return t->name;
}

static const char *shape_init(ox *X, const nnc_node *origin, const nnc_shape *s) {
  return ints_init(X, origin, s->rank, s->dim);
}

/* The initializer of persistent tensor t (its own name), added once. */
static const char *param(ox *X, int t) {
  if (X->param[t]) return X->param[t];
  const nnc_tensor *ts = &X->m->tensors[t];
  if (ts->dtype != NNC_F32 || !X->v->tensor[t]) {
    fail(X, "tensor '%s' has no f32 values to export", ts->name);
    return "";
  }
  return X->param[t] = float_init(X, ts->name, ts->shape.rank, ts->shape.dim, X->v->tensor[t]);
}

/* ---- helpers over the graph ---- */

static const char *value(ox *X, const nnc_node *n);

static const char *op1(ox *X, const nnc_node *n, const char *op, const char *a) {
  return out_of(node(X, n, op, 1, &a));
}

static const char *op2(ox *X, const nnc_node *n, const char *op, const char *a, const char *b) {
  const char *in[2] = {a, b};
  return out_of(node(X, n, op, 2, in));
}

static const char *reshape_to(ox *X, const nnc_node *n, const char *a, const nnc_shape *s) {
  return op2(X, n, "Reshape", a, shape_init(X, n, s));
}

static const char *cast_to(ox *X, const nnc_node *n, const char *a, int32_t onnx_type) {
  Onnx__NodeProto *p = node(X, n, "Cast", 1, &a);
  attr_int(X, p, "to", onnx_type);
  return out_of(p);
}

/* Is n an op `op` that only the node being translated reads? */
static bool only(const ox *X, const nnc_node *n, nnc_op op) {
  return n->op == op && X->uses[n->id] == 1;
}

/* The tensor index of reshape(param) (or a param itself), else -1. */
static int param_of(const nnc_node *n) {
  if (n->op == NNC_OP_RESHAPE) n = n->in[0];
  return n->op == NNC_OP_PARAM ? (int)n->attr[0] : -1;
}

static bool shape_is(const nnc_shape *s, int rank, const int64_t *dims) {
  if (s->rank != rank) return false;
  for (int i = 0; i < rank; i++)
    if (s->dim[i] != dims[i]) return false;
  return true;
}

/* reshape(param [C]) to [1, C, 1, ...] of rank `rank`: the tensor, else -1. */
static int channel_param(const ox *X, const nnc_node *n, int rank, int64_t c) {
  int t = param_of(n);
  if (t < 0 || n->shape.rank != rank || rank < 2) return -1;
  const nnc_shape *ts = &X->m->tensors[t].shape;
  if (ts->rank != 1 || ts->dim[0] != c) return -1;
  for (int i = 0; i < rank; i++)
    if (n->shape.dim[i] != (i == 1 ? c : 1)) return -1;
  return t;
}

/* ---- layer patterns ---- */

typedef struct conv_match {
  const nnc_node *x;
  int w, b; /* tensors; b -1: none */
  int64_t k[2], s[2], p[2];
} conv_match;

/* transpose(reshape(add(matmul(im2col(x), reshape(W)^T), reshape(b)))) */
static bool match_conv(const ox *X, const nnc_node *t, conv_match *c) {
  static const int64_t to_nchw[4] = {0, 3, 1, 2};
  if (t->op != NNC_OP_TRANSPOSE || t->shape.rank != 4) return false;
  for (int i = 0; i < 4; i++)
    if (t->attr[i] != to_nchw[i]) return false;
  const nnc_node *r = t->in[0];
  if (!only(X, r, NNC_OP_RESHAPE)) return false;
  const nnc_node *y = r->in[0];
  c->b = -1;
  if (only(X, y, NNC_OP_ADD)) {
    int b = param_of(y->in[1]);
    int64_t row[2] = {1, t->shape.dim[1]};
    if (b < 0 || !shape_is(&y->in[1]->shape, 2, row) || X->m->tensors[b].shape.rank != 1)
      return false;
    c->b = b;
    y = y->in[0];
  }
  if (!only(X, y, NNC_OP_MATMUL) || y->attr[0] || !y->attr[1]) return false;
  const nnc_node *cols = y->in[0];
  c->w = param_of(y->in[1]);
  if (!only(X, cols, NNC_OP_IM2COL) || c->w < 0) return false;
  c->x = cols->in[0];
  for (int i = 0; i < 2; i++)
    c->k[i] = cols->attr[i], c->s[i] = cols->attr[2 + i], c->p[i] = cols->attr[4 + i];
  const nnc_shape *ws = &X->m->tensors[c->w].shape;
  int64_t w4[4] = {t->shape.dim[1], c->x->shape.dim[1], c->k[0], c->k[1]};
  if (!shape_is(ws, 4, w4) || c->x->shape.rank != 4) return false;
  return cols->fattr == 0 || (c->p[0] == 0 && c->p[1] == 0);
}

static void window_attrs(ox *X, Onnx__NodeProto *p, const int64_t *k, const int64_t *s,
                         const int64_t *pad) {
  int64_t pads[4] = {pad[0], pad[1], pad[0], pad[1]};
  attr_ints(X, p, "kernel_shape", 2, k);
  attr_ints(X, p, "strides", 2, s);
  attr_ints(X, p, "pads", 4, pads);
}

static const char *emit_conv(ox *X, const nnc_node *t, const conv_match *c, const char *w,
                             const char *b) {
  const char *in[3] = {value(X, c->x), w, b};
  Onnx__NodeProto *p = node(X, t, "Conv", b ? 3 : 2, in);
  window_attrs(X, p, c->k, c->s, c->p);
  return out_of(p);
}

typedef struct bn_match {
  const nnc_node *x;
  int gamma, beta, mean, var;
  double eps;
} bn_match;

/* add(mul(mul(sub(x, mean), rsqrt(add(var, eps))), gamma), beta), each
 * statistic reshape(param [C]) to [1, C, 1, ...] */
static bool match_bn(const ox *X, const nnc_node *n, bn_match *b) {
  int r = n->shape.rank;
  if (n->op != NNC_OP_ADD || r < 2) return false;
  int64_t c = n->shape.dim[1];
  const nnc_node *scaled = n->in[0];
  if (!only(X, scaled, NNC_OP_MUL)) return false;
  const nnc_node *norm = scaled->in[0];
  if (!only(X, norm, NNC_OP_MUL)) return false;
  const nnc_node *centred = norm->in[0], *rs = norm->in[1];
  if (!only(X, centred, NNC_OP_SUB) || rs->op != NNC_OP_RSQRT) return false;
  const nnc_node *ve = rs->in[0];
  if (ve->op != NNC_OP_ADD || ve->in[1]->op != NNC_OP_CONST) return false;
  b->x = centred->in[0];
  b->beta = channel_param(X, n->in[1], r, c);
  b->gamma = channel_param(X, scaled->in[1], r, c);
  b->mean = channel_param(X, centred->in[1], r, c);
  b->var = channel_param(X, ve->in[0], r, c);
  b->eps = ve->in[1]->fattr;
  return b->beta >= 0 && b->gamma >= 0 && b->mean >= 0 && b->var >= 0 &&
         nnc_shape_eq(&b->x->shape, &n->shape);
}

/* Conv weights and bias with the batch norm after them folded in:
 * W' = W s, b' = (b - mean) s + beta, s = gamma / sqrt(var + eps) per
 * output channel (in double, rounded once). */
static const char *folded_conv(ox *X, const nnc_node *n, const conv_match *c, const bn_match *b) {
  const float *w = X->v->tensor[c->w], *bias = c->b >= 0 ? X->v->tensor[c->b] : NULL;
  const float *g = X->v->tensor[b->gamma], *be = X->v->tensor[b->beta];
  const float *mu = X->v->tensor[b->mean], *var = X->v->tensor[b->var];
  if (!w || !g || !be || !mu || !var || (c->b >= 0 && !bias)) {
    fail(X, "%s", "missing values for a folded batch norm");
    return "";
  }
  const nnc_shape *ws = &X->m->tensors[c->w].shape;
  int64_t oc = ws->dim[0], per = nnc_shape_numel(ws) / oc;
  float *nw = nnc_arena_alloc(&X->a, sizeof(float) * (size_t)(oc * per));
  float *nb = nnc_arena_alloc(&X->a, sizeof(float) * (size_t)oc);
  for (int64_t o = 0; o < oc; o++) {
    double s = (double)g[o] / sqrt((double)var[o] + b->eps);
    for (int64_t i = 0; i < per; i++)
      nw[o * per + i] = (float)(w[o * per + i] * s);
    nb[o] = (float)(((bias ? bias[o] : 0.0) - mu[o]) * s + be[o]);
  }
  const char *wn = nnc_arena_printf(&X->a, "%s.bn_folded", X->m->tensors[c->w].name);
  const char *bn = nnc_arena_printf(&X->a, "%s.bn_folded", X->m->tensors[b->beta].name);
  return emit_conv(X, n, c, float_init(X, wn, ws->rank, ws->dim, nw),
                   float_init(X, bn, 1, &oc, nb));
}

static const char *batchnorm(ox *X, const nnc_node *n, const bn_match *b) {
  conv_match c;
  if (X->o->fold_bn && X->uses[b->x->id] == 1 && match_conv(X, b->x, &c))
    return folded_conv(X, n, &c, b);
  const char *in[5] = {value(X, b->x), param(X, b->gamma), param(X, b->beta), param(X, b->mean),
                       param(X, b->var)};
  Onnx__NodeProto *p = node(X, n, "BatchNormalization", 5, in);
  attr_float(X, p, "epsilon", b->eps);
  return out_of(p);
}

/* reshape(rmax(im2col(reshape(x))) or mul(sum(im2col(reshape(x))), 1/k^2))
 * over planes [N*C, 1, H, W]: MaxPool / AveragePool on x [N, C, H, W],
 * then to the reshape's shape ([N, C, OH, OW], or flat when the simplifier
 * merged the pool's reshape with a flatten after it). */
static const char *pool(ox *X, const nnc_node *n) {
  const nnc_node *r = n->in[0];
  bool avg = false;
  if (only(X, r, NNC_OP_MUL) && r->in[1]->op == NNC_OP_CONST) {
    avg = true;
    r = r->in[0];
    if (!only(X, r, NNC_OP_SUM)) return NULL;
  } else if (!only(X, r, NNC_OP_RMAX)) {
    return NULL;
  }
  const nnc_node *cols = r->in[0];
  if (r->attr[0] != 2 || !only(X, cols, NNC_OP_IM2COL)) return NULL;
  const nnc_node *planes = cols->in[0];
  if (!only(X, planes, NNC_OP_RESHAPE)) return NULL;
  const nnc_node *x = planes->in[0];
  const int64_t *k = cols->attr, *s = cols->attr + 2, *p = cols->attr + 4;
  if (x->shape.rank != 4 || planes->shape.dim[1] != 1) return NULL;
  if (avg && fabs(n->in[0]->in[1]->fattr * (double)(k[0] * k[1]) - 1) > 1e-6) return NULL;
  bool padded = p[0] || p[1];
  if (padded && cols->fattr != (avg ? 0.0 : -INFINITY)) return NULL;
  const char *in = value(X, x);
  Onnx__NodeProto *o = node(X, n, avg ? "AveragePool" : "MaxPool", 1, &in);
  window_attrs(X, o, k, s, p);
  if (avg) attr_int(X, o, "count_include_pad", 1); /* nnc divides by k^2 */
  nnc_shape out = {4,
                   {x->shape.dim[0], x->shape.dim[1],
                    (x->shape.dim[2] + 2 * p[0] - k[0]) / s[0] + 1,
                    (x->shape.dim[3] + 2 * p[1] - k[1]) / s[1] + 1}};
  return nnc_shape_eq(&out, &n->shape) ? out_of(o) : reshape_to(X, n, out_of(o), &n->shape);
}

/* add(matmul(a, W), reshape(b) [1, N]) -> Gemm(a, W, b) */
static const char *gemm(ox *X, const nnc_node *n) {
  const nnc_node *mm = n->in[0];
  if (n->shape.rank != 2 || !only(X, mm, NNC_OP_MATMUL)) return NULL;
  int b = param_of(n->in[1]);
  int64_t row[2] = {1, n->shape.dim[1]};
  if (b < 0 || X->m->tensors[b].shape.rank != 1 || !shape_is(&n->in[1]->shape, 2, row)) return NULL;
  const char *in[3] = {value(X, mm->in[0]), value(X, mm->in[1]), param(X, b)};
  Onnx__NodeProto *p = node(X, n, "Gemm", 3, in);
  if (mm->attr[0]) attr_int(X, p, "transA", 1);
  if (mm->attr[1]) attr_int(X, p, "transB", 1);
  return out_of(p);
}

/* div(exp(z), sum(exp(z), axis)) with z = sub(x, rmax(x, axis)) -> Softmax */
static const char *softmax(ox *X, const nnc_node *n) {
  const nnc_node *e = n->in[0], *s = n->in[1];
  if (e->op != NNC_OP_EXP || X->uses[e->id] != 2 || !only(X, s, NNC_OP_SUM) || s->in[0] != e)
    return NULL;
  const nnc_node *z = e->in[0];
  if (!only(X, z, NNC_OP_SUB)) return NULL;
  const nnc_node *x = z->in[0], *m = z->in[1];
  if (!only(X, m, NNC_OP_RMAX) || m->in[0] != x || m->attr[0] != s->attr[0]) return NULL;
  int axis = -1;
  for (int i = 0; i < n->shape.rank; i++)
    if (s->attr[0] == (int64_t)1 << i) axis = i;
  if (axis < 0) return NULL;
  const char *in = value(X, x);
  Onnx__NodeProto *p = node(X, n, "Softmax", 1, &in);
  attr_int(X, p, "axis", axis);
  return out_of(p);
}

/* ---- primitives ---- */

/* im2col(x [N,C,H,W]) -> [N*OH*OW, C*KH*KW] as a Conv with a one-hot
 * kernel (output channel (c,i,j) copies x[c] at offset (i,j)), then NHWC
 * rows. Exact: each output is one product by 1 plus zeros. Zero fill only
 * (a Conv pads with zeros), or no padding. */
static const char *im2col(ox *X, const nnc_node *n) {
  const nnc_node *x = n->in[0];
  const int64_t *k = n->attr, *s = n->attr + 2, *p = n->attr + 4;
  if ((p[0] || p[1]) && n->fattr != 0) {
    fail(X, "%s: a window with padding not filled with zeros cannot be exported to ONNX",
         n->name ? n->name : "im2col");
    return "";
  }
  int64_t c = x->shape.dim[1], ckk = c * k[0] * k[1];
  int64_t dims[4] = {ckk, c, k[0], k[1]};
  float *one_hot = nnc_arena_alloc(&X->a, sizeof(float) * (size_t)(ckk * ckk));
  for (int64_t o = 0; o < ckk; o++) /* o = (ci, i, j): weight [o][ci][i][j] = 1 */
    one_hot[o * ckk + o] = 1;
  conv_match cm = {.x = x, .b = -1, .k = {k[0], k[1]}, .s = {s[0], s[1]}, .p = {p[0], p[1]}};
  const char *w = float_init(X, name_of(X, n, "one_hot"), 4, dims, one_hot);
  const char *y = emit_conv(X, n, &cm, w, NULL);
  Onnx__NodeProto *t = node(X, n, "Transpose", 1, &y);
  int64_t perm[4] = {0, 2, 3, 1};
  attr_ints(X, t, "perm", 4, perm);
  return reshape_to(X, n, out_of(t), &n->shape);
}

/* Reductions keep the reduced axes (keepdims). A sum is ReduceMean times
 * the count: opset 13's ReduceSum takes its axes as an input, which
 * OpenCV 4.6 does not read; mul(sum, 1/count), a mean, is ReduceMean alone. */
static const char *reduce(ox *X, const nnc_node *n, nnc_op op, double times) {
  const nnc_node *x = n->in[0];
  int64_t axes[NNC_MAX_RANK], count = 1;
  int na = 0;
  for (int i = 0; i < x->shape.rank; i++)
    if (n->attr[0] & ((int64_t)1 << i)) axes[na++] = i, count *= x->shape.dim[i];
  const char *in = value(X, x);
  Onnx__NodeProto *p = node(X, n, op == NNC_OP_RMAX ? "ReduceMax" : "ReduceMean", 1, &in);
  attr_ints(X, p, "axes", na, axes);
  attr_int(X, p, "keepdims", 1);
  double scale = op == NNC_OP_SUM ? (double)count * times : 1;
  if (fabs(scale - 1) <= 1e-6) return out_of(p);
  return op2(X, n, "Mul", out_of(p), scalar_f32(X, n, scale));
}

/* mul(sum(x), c) with c = 1 / count: a mean. */
static const char *mean(ox *X, const nnc_node *n) {
  const nnc_node *s = n->in[0], *c = n->in[1];
  if (!only(X, s, NNC_OP_SUM) || c->op != NNC_OP_CONST || c->shape.rank != 0) return NULL;
  int64_t count = nnc_shape_numel(&s->in[0]->shape) / nnc_shape_numel(&s->shape);
  if (fabs(c->fattr * (double)count - 1) > 1e-6) return NULL;
  return reduce(X, s, NNC_OP_SUM, c->fattr);
}

static const char *const onnx_names[] = {
    [NNC_OP_NEG] = "Neg",           [NNC_OP_EXP] = "Exp",          [NNC_OP_LOG] = "Log",
    [NNC_OP_SQRT] = "Sqrt",         [NNC_OP_RECIP] = "Reciprocal", [NNC_OP_TANH] = "Tanh",
    [NNC_OP_SIGMOID] = "Sigmoid",   [NNC_OP_RELU] = "Relu",        [NNC_OP_ABS] = "Abs",
    [NNC_OP_SIGN] = "Sign",         [NNC_OP_ERF] = "Erf",          [NNC_OP_COS] = "Cos",
    [NNC_OP_FLOOR] = "Floor",       [NNC_OP_ADD] = "Add",          [NNC_OP_SUB] = "Sub",
    [NNC_OP_MUL] = "Mul",           [NNC_OP_DIV] = "Div",          [NNC_OP_MAX] = "Max",
    [NNC_OP_MIN] = "Min",           [NNC_OP_POW] = "Pow",          [NNC_OP_GT] = "Greater",
    [NNC_OP_GE] = "GreaterOrEqual", [NNC_OP_EQ] = "Equal",
};

/* The layer pattern n ends, translated; NULL when none matches. */
static const char *layer(ox *X, const nnc_node *n) {
  conv_match c;
  bn_match b;
  if (n->op == NNC_OP_TRANSPOSE && match_conv(X, n, &c))
    return emit_conv(X, n, &c, param(X, c.w), c.b >= 0 ? param(X, c.b) : NULL);
  if (n->op == NNC_OP_ADD) return match_bn(X, n, &b) ? batchnorm(X, n, &b) : gemm(X, n);
  if (n->op == NNC_OP_RESHAPE) return pool(X, n);
  if (n->op == NNC_OP_DIV) return softmax(X, n);
  if (n->op == NNC_OP_MUL) return mean(X, n);
  return NULL;
}

/* n as the ONNX op of its primitive. */
static const char *primitive(ox *X, const nnc_node *n) {
  const char *a = n->nin > 0 ? value(X, n->in[0]) : NULL;
  const char *b = n->nin > 1 ? value(X, n->in[1]) : NULL;
  switch (n->op) {
  case NNC_OP_INPUT:
    if (n->attr[0] == NNC_IN_X) return X->input;
    fail(X, "the prediction reads the input '%s': only x can be exported",
         nnc_input_name((nnc_input_kind)n->attr[0]));
    return "";
  case NNC_OP_PARAM: return param(X, (int)n->attr[0]);
  case NNC_OP_CONST: {
    if (n->dtype != NNC_F32) {
      fail(X, "%s", "a constant other than f32 cannot be exported yet");
      return "";
    }
    int64_t numel = nnc_shape_numel(&n->shape);
    float *x = nnc_arena_alloc(&X->a, sizeof(float) * (size_t)numel);
    for (int64_t i = 0; i < numel; i++)
      x[i] = (float)n->fattr;
    return float_init(X, name_of(X, n, "const"), n->shape.rank, n->shape.dim, x);
  }
  case NNC_OP_NEG:
  case NNC_OP_EXP:
  case NNC_OP_LOG:
  case NNC_OP_SQRT:
  case NNC_OP_RECIP:
  case NNC_OP_TANH:
  case NNC_OP_SIGMOID:
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR: return op1(X, n, onnx_names[n->op], a);
  case NNC_OP_RSQRT: return op1(X, n, "Reciprocal", op1(X, n, "Sqrt", a));
  case NNC_OP_CAST: return cast_to(X, n, a, elem_type(n->dtype));
  case NNC_OP_ALLREDUCE: return a; /* one process: the identity */
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW: return op2(X, n, onnx_names[n->op], a, b);
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ: return cast_to(X, n, op2(X, n, onnx_names[n->op], a, b), elem_type(n->dtype));
  case NNC_OP_SELECT: {
    /* c != 0 */
    const char *in[3] = {cast_to(X, n, a, ONNX__TENSOR_PROTO__DATA_TYPE__BOOL), b,
                         value(X, n->in[2])};
    return out_of(node(X, n, "Where", 3, in));
  }
  case NNC_OP_SUM:
  case NNC_OP_RMAX: return reduce(X, n, n->op, 1);
  case NNC_OP_ARGMAX: {
    Onnx__NodeProto *p = node(X, n, "ArgMax", 1, &a);
    attr_int(X, p, "axis", n->attr[0]);
    attr_int(X, p, "keepdims", 1);
    return cast_to(X, n, out_of(p), elem_type(n->dtype));
  }
  case NNC_OP_RESHAPE: return reshape_to(X, n, a, &n->shape);
  case NNC_OP_TRANSPOSE: {
    Onnx__NodeProto *p = node(X, n, "Transpose", 1, &a);
    attr_ints(X, p, "perm", n->shape.rank, n->attr);
    return out_of(p);
  }
  case NNC_OP_BROADCAST: return op2(X, n, "Expand", a, shape_init(X, n, &n->shape));
  case NNC_OP_MATMUL: {
    const char *in[2] = {a, b};
    Onnx__NodeProto *p = node(X, n, "Gemm", 2, in);
    if (n->attr[0]) attr_int(X, p, "transA", 1);
    if (n->attr[1]) attr_int(X, p, "transB", 1);
    return out_of(p);
  }
  case NNC_OP_IM2COL: return im2col(X, n);
  case NNC_OP_GATHER: {
    Onnx__NodeProto *p = node(X, n, "Gather", 2, (const char *const[]){a, b});
    attr_int(X, p, "axis", 0);
    return out_of(p);
  }
  /* training only, or gone from eval graphs */
  case NNC_OP_COL2IM:
  case NNC_OP_SCATTER_ADD:
  case NNC_OP_ONEHOT:
  case NNC_OP_RAND:
  case NNC_OP_COUNT_: break;
  }
  fail(X, "the prediction uses the op '%s', which cannot be exported to ONNX", nnc_op_name(n->op));
  return "";
}

static const char *value(ox *X, const nnc_node *n) {
  if (X->value[n->id]) return X->value[n->id];
  const char *v = layer(X, n);
  if (!v) v = primitive(X, n);
  return X->value[n->id] = v;
}

/* ---- the model ---- */

static void count_uses(ox *X, const nnc_node *n, bool *seen) {
  if (seen[n->id]) return;
  seen[n->id] = true;
  for (int i = 0; i < n->nin; i++) {
    X->uses[n->in[i]->id]++;
    count_uses(X, n->in[i], seen);
  }
}

static Onnx__ValueInfoProto *value_info(ox *X, const char *name, nnc_dtype t, const nnc_shape *s) {
  Onnx__ValueInfoProto *vi = nnc_arena_alloc(&X->a, sizeof *vi);
  Onnx__TypeProto *tp = nnc_arena_alloc(&X->a, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = nnc_arena_alloc(&X->a, sizeof *tt);
  Onnx__TensorShapeProto *sp = nnc_arena_alloc(&X->a, sizeof *sp);
  onnx__value_info_proto__init(vi);
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  onnx__tensor_shape_proto__init(sp);
  sp->n_dim = (size_t)s->rank;
  sp->dim = nnc_arena_alloc(&X->a, sizeof(void *) * (size_t)(s->rank + 1));
  for (int i = 0; i < s->rank; i++) {
    Onnx__TensorShapeProto__Dimension *d = nnc_arena_alloc(&X->a, sizeof *d);
    onnx__tensor_shape_proto__dimension__init(d);
    d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    d->dim_value = s->dim[i];
    sp->dim[i] = d;
  }
  tt->has_elem_type = 1;
  tt->elem_type = elem_type(t);
  tt->shape = sp;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  vi->name = (char *)name;
  vi->type = tp;
  return vi;
}

/* The graph input in the data's units, prepared as the runtime prepares
 * data: times the scale, minus the mean, over the std. */
static const char *prepare_input(ox *X, const nnc_node *x) {
  const char *in = "input";
  if (x->dtype != NNC_F32) return in;
  if (X->v->scale != 1) in = op2(X, NULL, "Mul", in, scalar_f32(X, NULL, X->v->scale));
  if (X->v->mean) {
    const nnc_shape *s = &X->m->sample_shape;
    in =
        op2(X, NULL, "Sub", in, float_init(X, "nnc.standardize.mean", s->rank, s->dim, X->v->mean));
    in = op2(X, NULL, "Div", in, float_init(X, "nnc.standardize.std", s->rank, s->dim, X->v->std));
  }
  return in;
}

/* The node that computes `from` now writes "output" (pred is computed,
 * never a graph input or an initializer). */
static bool rename_output(ox *X, const char *from) {
  bool found = false;
  for (size_t i = 0; i < X->nnodes; i++) {
    Onnx__NodeProto *p = X->nodes[i];
    for (size_t j = 0; j < p->n_input; j++)
      if (p->input[j] == from) p->input[j] = "output";
    if (p->output[0] == from) p->output[0] = "output", found = true;
  }
  return found;
}

static bool build(ox *X, Onnx__ModelProto *model) {
  const nnc_graph *g = X->m->eval;
  const nnc_node *x = g->inputs[NNC_IN_X], *pred = g->outputs[NNC_OUT_PRED];
  X->g = g;
  X->value = nnc_arena_alloc(&X->a, sizeof(char *) * (size_t)(g->nnodes + 1));
  X->uses = nnc_arena_alloc(&X->a, sizeof(int) * (size_t)(g->nnodes + 1));
  X->param = nnc_arena_alloc(&X->a, sizeof(char *) * (size_t)(X->m->ntensors + 1));
  bool *seen = nnc_arena_alloc(&X->a, (size_t)g->nnodes + 1);
  count_uses(X, pred, seen);
  X->input = prepare_input(X, x);
  const char *out = value(X, pred);
  if (X->failed) return false;
  if (!rename_output(X, out)) out = op1(X, pred, "Identity", out), rename_output(X, out);

  Onnx__GraphProto *gp = nnc_arena_alloc(&X->a, sizeof *gp);
  onnx__graph_proto__init(gp);
  gp->name = (char *)X->m->name;
  gp->doc_string = nnc_arena_printf(
      &X->a,
      "The prediction of the trained network '%s'. input: the raw data, in its own units "
      "(the data block's scale and the training set's standardisation are the first ops); "
      "output: the model's return value%s.",
      X->m->name, X->m->config.loss == NNC_LOSS_CROSS_ENTROPY ? " (logits, one per class)" : "");
  gp->n_node = X->nnodes;
  gp->node = X->nodes;
  gp->n_initializer = X->ninits;
  gp->initializer = X->inits;
  gp->n_input = gp->n_output = 1;
  gp->input = nnc_arena_alloc(&X->a, sizeof(void *));
  gp->output = nnc_arena_alloc(&X->a, sizeof(void *));
  gp->input[0] = value_info(X, "input", x->dtype, &x->shape);
  gp->output[0] = value_info(X, "output", pred->dtype, &pred->shape);

  Onnx__OperatorSetIdProto *opset = nnc_arena_alloc(&X->a, sizeof *opset);
  onnx__operator_set_id_proto__init(opset);
  opset->domain = "";
  opset->has_version = 1;
  opset->version = OPSET;
  onnx__model_proto__init(model);
  model->has_ir_version = 1;
  model->ir_version = IR_VERSION;
  model->producer_name = "nnc";
  model->producer_version = (char *)(X->o->producer ? X->o->producer : "");
  model->graph = gp;
  model->n_opset_import = 1;
  model->opset_import = nnc_arena_alloc(&X->a, sizeof(void *));
  model->opset_import[0] = opset;
  return true;
}

bool nnc_onnx_write(const nnc_module *m, const nnc_deploy_values *v, const nnc_onnx_options *o,
                    FILE *out, char *err, size_t errlen) {
  if (!m->eval || !m->eval->outputs[NNC_OUT_PRED] || !m->eval->inputs[NNC_IN_X]) {
    snprintf(err, errlen, "the model has no prediction to export");
    return false;
  }
  ox X = {.m = m, .v = v, .o = o, .err = err, .errlen = errlen};
  nnc_arena_init(&X.a);
  Onnx__ModelProto model;
  bool ok = build(&X, &model);
  if (ok) {
    size_t n = onnx__model_proto__get_packed_size(&model);
    uint8_t *buf = malloc(n + 1);
    ok = buf && onnx__model_proto__pack(&model, buf) == n && fwrite(buf, 1, n, out) == n;
    if (!ok) snprintf(err, errlen, "cannot write the ONNX model");
    free(buf);
  }
  nnc_arena_destroy(&X.a);
  return ok;
}
