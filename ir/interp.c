/* interp.c: the reference interpreter (see interp.h).
 *
 * Every node gets its own buffer of doubles; nnc_interp_run evaluates the
 * nodes in creation order (a topological order, ir.h invariant 1), each with
 * the plainest loop that states the op's definition in ops.def, and then
 * copies the update values into the persistent tensors (all values are
 * computed before any is stored: simultaneous assignment). Everything is
 * computed in double whatever the node's dtype: f32 nodes are not rounded,
 * i32 values are doubles holding integers. This file is the test suite's
 * oracle for the VJP rules (finite differences) and for the LLVM kernels, so
 * it favours obviousness over speed.
 */
#include "interp.h"

#include "interp_internal.h"
#include "nnc_hash.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct nnc_interp {
  const nnc_graph *g;
  int nnodes;
  double **value; /* per node id */
  int ntensors;
  double **tensor; /* per module tensor */
  double *input[NNC_IN_COUNT_];
  nnc_interp_allreduce_fn allreduce; /* NULL: one process */
  void *allreduce_ctx;
};

/* ---- Scalar semantics (shared with the constant folder) ---- */

double nnc_interp_scalar(nnc_op op, double a, double b) {
  switch (op) {
  case NNC_OP_NEG: return -a;
  case NNC_OP_EXP: return exp(a);
  case NNC_OP_LOG: return log(a);
  case NNC_OP_SQRT: return sqrt(a);
  case NNC_OP_RSQRT: return 1.0 / sqrt(a);
  case NNC_OP_RECIP: return 1.0 / a;
  case NNC_OP_TANH: return tanh(a);
  case NNC_OP_SIGMOID: return 1.0 / (1.0 + exp(-a));
  case NNC_OP_RELU: return a > 0 ? a : 0.0;
  case NNC_OP_ABS: return fabs(a);
  case NNC_OP_SIGN: return (double)((a > 0) - (a < 0));
  case NNC_OP_ERF: return erf(a);
  case NNC_OP_COS: return cos(a);
  case NNC_OP_FLOOR: return floor(a);
  case NNC_OP_ALLREDUCE: return a; /* one process */
  case NNC_OP_ADD: return a + b;
  case NNC_OP_SUB: return a - b;
  case NNC_OP_MUL: return a * b;
  case NNC_OP_DIV: return a / b;
  case NNC_OP_MAX: return a >= b ? a : b;
  case NNC_OP_MIN: return a <= b ? a : b;
  case NNC_OP_POW: return pow(a, b);
  case NNC_OP_GT: return a > b ? 1.0 : 0.0;
  case NNC_OP_GE: return a >= b ? 1.0 : 0.0;
  case NNC_OP_EQ: return a == b ? 1.0 : 0.0;
  /* not elementwise unary, binary or comparison: a caller's bug */
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
  nnc_ir_bug("interp: %s has no scalar form", nnc_op_name(op));
}

/* ops.def's RAND formula (runtime/nnc_hash.h). */
double nnc_interp_rand(double seed, double step, int64_t stream, uint64_t index) {
  uint64_t s = (uint64_t)(uint32_t)(int64_t)seed ^ ((uint64_t)stream << 32);
  return nnc_hash_uniform(s, step > 0 ? (uint64_t)step : 0, index);
}

/* ---- Strided walks over a shape ----
 * A walker visits every element of `shape` in row-major order and keeps,
 * for up to three operands, the flat offset of the element each operand
 * reads there (stride 0 on axes it broadcasts or that are reduced away). */
typedef struct walker {
  int rank;
  int64_t dim[NNC_MAX_RANK], idx[NNC_MAX_RANK];
  int nops;
  int64_t stride[3][NNC_MAX_RANK];
  int64_t off[3];
} walker;

static void walker_init(walker *w, const nnc_shape *shape, int nops) {
  memset(w, 0, sizeof *w);
  w->rank = shape->rank;
  memcpy(w->dim, shape->dim, sizeof w->dim);
  w->nops = nops;
}

/* Operand k has shape `from` and is read broadcast at the walked shape
 * (invariant 3: rank 0, or same rank with dims equal or 1). */
static void walker_broadcast(walker *w, int k, const nnc_shape *from) {
  int64_t s = 1;
  for (int d = from->rank - 1; d >= 0; d--) {
    w->stride[k][d] = from->dim[d] == 1 ? 0 : s;
    s *= from->dim[d];
  }
}

static void walker_next(walker *w) {
  for (int d = w->rank - 1; d >= 0; d--) {
    w->idx[d]++;
    for (int k = 0; k < w->nops; k++)
      w->off[k] += w->stride[k][d];
    if (w->idx[d] < w->dim[d]) return;
    for (int k = 0; k < w->nops; k++)
      w->off[k] -= w->stride[k][d] * w->dim[d];
    w->idx[d] = 0;
  }
}

/* ---- One evaluator per op class ---- */

static const double *operand(const nnc_interp *in, const nnc_node *n, int k) {
  return in->value[n->in[k]->id];
}

static void eval_unary(nnc_interp *in, const nnc_node *n, double *out) {
  const double *a = operand(in, n, 0);
  int64_t numel = nnc_shape_numel(&n->shape);
  for (int64_t i = 0; i < numel; i++)
    out[i] = nnc_interp_scalar(n->op, a[i], 0);
}

static void eval_binary(nnc_interp *in, const nnc_node *n, double *out) {
  const double *a = operand(in, n, 0), *b = operand(in, n, 1);
  walker w;
  walker_init(&w, &n->shape, 2);
  walker_broadcast(&w, 0, &n->in[0]->shape);
  walker_broadcast(&w, 1, &n->in[1]->shape);
  int64_t numel = nnc_shape_numel(&n->shape);
  for (int64_t i = 0; i < numel; i++, walker_next(&w))
    out[i] = nnc_interp_scalar(n->op, a[w.off[0]], b[w.off[1]]);
}

/* select(c, a, b) = c != 0 ? a : b, all three broadcast. */
static void eval_select(nnc_interp *in, const nnc_node *n, double *out) {
  const double *c = operand(in, n, 0), *a = operand(in, n, 1), *b = operand(in, n, 2);
  walker w;
  walker_init(&w, &n->shape, 3);
  for (int k = 0; k < 3; k++)
    walker_broadcast(&w, k, &n->in[k]->shape);
  int64_t numel = nnc_shape_numel(&n->shape);
  for (int64_t i = 0; i < numel; i++, walker_next(&w))
    out[i] = c[w.off[0]] != 0 ? a[w.off[1]] : b[w.off[2]];
}

/* cast: float <-> float is the identity here (values are doubles);
 * float -> i32 truncates toward zero like C. */
static void eval_cast(nnc_interp *in, const nnc_node *n, double *out) {
  const double *a = operand(in, n, 0);
  int64_t numel = nnc_shape_numel(&n->shape);
  for (int64_t i = 0; i < numel; i++)
    out[i] = n->dtype == NNC_I32 ? trunc(a[i]) : a[i];
}

/* sum / rmax over the axes in attr[0]: walk the operand; the output is read
 * at the same index with the reduced axes pinned to 0. */
static void eval_reduce(nnc_interp *in, const nnc_node *n, double *out) {
  const nnc_shape *xs = &n->in[0]->shape;
  const double *x = operand(in, n, 0);
  int64_t onumel = nnc_shape_numel(&n->shape), numel = nnc_shape_numel(xs);
  for (int64_t i = 0; i < onumel; i++)
    out[i] = n->op == NNC_OP_SUM ? 0.0 : -INFINITY;
  walker w;
  walker_init(&w, xs, 1);
  walker_broadcast(&w, 0, &n->shape);
  for (int64_t i = 0; i < numel; i++, walker_next(&w)) {
    double *o = &out[w.off[0]];
    if (n->op == NNC_OP_SUM)
      *o += x[i];
    else if (x[i] > *o || isnan(x[i]))
      *o = x[i];
  }
}

/* argmax along attr[0], first index on ties, as a float. */
static void eval_argmax(nnc_interp *in, const nnc_node *n, double *out) {
  const nnc_shape *xs = &n->in[0]->shape;
  const double *x = operand(in, n, 0);
  int axis = (int)n->attr[0];
  int64_t len = xs->dim[axis], inner = 1, outer = 1;
  for (int d = axis + 1; d < xs->rank; d++)
    inner *= xs->dim[d];
  for (int d = 0; d < axis; d++)
    outer *= xs->dim[d];
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      const double *row = x + o * len * inner + i;
      int64_t best = 0;
      for (int64_t j = 1; j < len; j++)
        if (row[j * inner] > row[best * inner]) best = j;
      out[o * inner + i] = (double)best;
    }
}

/* transpose: output axis i reads source axis attr[i]. */
static void eval_transpose(nnc_interp *in, const nnc_node *n, double *out) {
  const nnc_shape *xs = &n->in[0]->shape;
  const double *x = operand(in, n, 0);
  int64_t src_stride[NNC_MAX_RANK], s = 1;
  for (int d = xs->rank - 1; d >= 0; d--) {
    src_stride[d] = s;
    s *= xs->dim[d];
  }
  walker w;
  walker_init(&w, &n->shape, 1);
  for (int i = 0; i < n->shape.rank; i++)
    w.stride[0][i] = src_stride[n->attr[i]];
  int64_t numel = nnc_shape_numel(&n->shape);
  for (int64_t i = 0; i < numel; i++, walker_next(&w))
    out[i] = x[w.off[0]];
}

static void eval_broadcast(nnc_interp *in, const nnc_node *n, double *out) {
  const double *x = operand(in, n, 0);
  walker w;
  walker_init(&w, &n->shape, 1);
  walker_broadcast(&w, 0, &n->in[0]->shape);
  int64_t numel = nnc_shape_numel(&n->shape);
  for (int64_t i = 0; i < numel; i++, walker_next(&w))
    out[i] = x[w.off[0]];
}

/* C[M,N] = op(A) op(B); op transposes where attr[0] / attr[1] say so. */
static void eval_matmul(nnc_interp *in, const nnc_node *n, double *out) {
  const double *a = operand(in, n, 0), *b = operand(in, n, 1);
  bool ta = n->attr[0], tb = n->attr[1];
  int64_t m = n->shape.dim[0], nn = n->shape.dim[1];
  int64_t k = ta ? n->in[0]->shape.dim[0] : n->in[0]->shape.dim[1];
  /* attr[2] = G > 1: K as G chunks, each summed from zero, the chunk sums
   * added as the pairwise tree ((c0 + c1) + (c2 + c3)) */
  enum { MAX_CHUNKS = 64 };
  int64_t chunks = n->attr[2] > 1 ? n->attr[2] : 1;
  if (chunks > MAX_CHUNKS || k % chunks)
    nnc_ir_bug("interp: matmul of %lld chunks", (long long)chunks);
  double part[MAX_CHUNKS];
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < nn; j++) {
      for (int64_t c = 0; c < chunks; c++) {
        part[c] = 0;
        for (int64_t p = c * (k / chunks); p < (c + 1) * (k / chunks); p++)
          part[c] += (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * nn + j]);
      }
      for (int64_t w = 1; w < chunks; w *= 2)
        for (int64_t c = 0; c + w < chunks; c += 2 * w)
          part[c] += part[c + w];
      out[i * nn + j] = part[0];
    }
}

/* The geometry shared by im2col and col2im: image x[N,C,H,W], window
 * attrs {kh, kw, sh, sw, ph, pw}, columns [N*OH*OW, C*KH*KW]. */
typedef struct window {
  int64_t n, c, h, w, kh, kw, sh, sw, ph, pw, oh, ow;
} window;

static window window_of(const nnc_node *n, const nnc_shape *x) {
  window g = {x->dim[0],  x->dim[1],  x->dim[2],  x->dim[3],  n->attr[0], n->attr[1],
              n->attr[2], n->attr[3], n->attr[4], n->attr[5], 0,          0};
  g.oh = nnc_ir_window_out(g.h, g.kh, g.sh, g.ph);
  g.ow = nnc_ir_window_out(g.w, g.kw, g.sw, g.pw);
  return g;
}

/* Fills map[row * ncols + col] with the flat index of the image element
 * that column cell holds, or -1 where the window lies in the padding.
 * Rows are (n, oh, ow), columns (c, kh, kw); the caller frees map. */
static int64_t *window_map(const window *g) {
  int64_t ncols = g->c * g->kh * g->kw;
  int64_t *map = malloc(sizeof(int64_t) * (size_t)(g->n * g->oh * g->ow * ncols));
  if (!map) nnc_ir_bug("interp: out of memory");
  int64_t *cell = map;
  for (int64_t n = 0; n < g->n; n++)
    for (int64_t oh = 0; oh < g->oh; oh++)
      for (int64_t ow = 0; ow < g->ow; ow++)
        for (int64_t c = 0; c < g->c; c++)
          for (int64_t kh = 0; kh < g->kh; kh++)
            for (int64_t kw = 0; kw < g->kw; kw++) {
              int64_t h = oh * g->sh - g->ph + kh, w = ow * g->sw - g->pw + kw;
              bool inside = h >= 0 && h < g->h && w >= 0 && w < g->w;
              *cell++ = inside ? ((n * g->c + c) * g->h + h) * g->w + w : -1;
            }
  return map;
}

static void eval_im2col(nnc_interp *in, const nnc_node *n, double *out) {
  window g = window_of(n, &n->in[0]->shape);
  const double *x = operand(in, n, 0);
  int64_t *map = window_map(&g), cells = nnc_shape_numel(&n->shape);
  for (int64_t i = 0; i < cells; i++)
    out[i] = map[i] < 0 ? n->fattr : x[map[i]];
  free(map);
}

/* col2im = im2col's adjoint: every column cell adds into the pixel it came
 * from; cells in the padding are dropped. */
static void eval_col2im(nnc_interp *in, const nnc_node *n, double *out) {
  window g = window_of(n, &n->shape);
  const double *cols = operand(in, n, 0);
  int64_t *map = window_map(&g), cells = nnc_shape_numel(&n->in[0]->shape);
  memset(out, 0, sizeof(double) * (size_t)nnc_shape_numel(&n->shape));
  for (int64_t i = 0; i < cells; i++)
    if (map[i] >= 0) out[map[i]] += cols[i];
  free(map);
}

static int64_t checked_index(double v, int64_t rows, const char *op) {
  if (!(v >= 0 && v < (double)rows))
    nnc_ir_bug("interp: %s index %g outside [0, %lld)", op, v, (long long)rows);
  return (int64_t)v;
}

/* gather: out[i, :] = table[idx[i], :]. */
static void eval_gather(nnc_interp *in, const nnc_node *n, double *out) {
  const double *table = operand(in, n, 0), *idx = operand(in, n, 1);
  int64_t rows = n->in[0]->shape.dim[0], d = n->in[0]->shape.dim[1];
  int64_t count = nnc_shape_numel(&n->in[1]->shape);
  for (int64_t i = 0; i < count; i++)
    memcpy(out + i * d, table + checked_index(idx[i], rows, "gather") * d,
           sizeof(double) * (size_t)d);
}

/* scatter_add: out[idx[i], :] += dy[i, :], out zero elsewhere. */
static void eval_scatter_add(nnc_interp *in, const nnc_node *n, double *out) {
  const double *dy = operand(in, n, 0), *idx = operand(in, n, 1);
  int64_t rows = n->shape.dim[0], d = n->shape.dim[1];
  int64_t count = nnc_shape_numel(&n->in[1]->shape);
  memset(out, 0, sizeof(double) * (size_t)nnc_shape_numel(&n->shape));
  for (int64_t i = 0; i < count; i++) {
    int64_t r = checked_index(idx[i], rows, "scatter_add");
    for (int64_t j = 0; j < d; j++)
      out[r * d + j] += dy[i * d + j];
  }
}

/* onehot: out[i, c] = labels[i] == c; a label outside [0, classes) gives a
 * row of zeros. */
static void eval_onehot(nnc_interp *in, const nnc_node *n, double *out) {
  const double *labels = operand(in, n, 0);
  int64_t classes = n->attr[0], count = nnc_shape_numel(&n->in[0]->shape);
  for (int64_t i = 0; i < count; i++)
    for (int64_t c = 0; c < classes; c++)
      out[i * classes + c] = labels[i] == (double)c ? 1.0 : 0.0;
}

static void eval_rand(nnc_interp *in, const nnc_node *n, double *out) {
  double seed = operand(in, n, 0)[0], step = operand(in, n, 1)[0];
  int64_t numel = nnc_shape_numel(&n->shape);
  int64_t chunks = n->attr[1] > 1 ? n->attr[1] : 1, per = numel / chunks;
  for (int64_t i = 0; i < numel; i++) { /* ops.def: chunk g draws with its own seed */
    uint32_t s = (uint32_t)(int64_t)seed + (uint32_t)(i / per) * NNC_HASH_MICRO_SEED;
    out[i] = nnc_interp_rand((double)s, step, n->attr[0], (uint64_t)(i % per));
  }
}

static void copy(double *out, const double *src, const nnc_shape *s) {
  memcpy(out, src, sizeof(double) * (size_t)nnc_shape_numel(s));
}

static void eval_node(nnc_interp *in, const nnc_node *n) {
  double *out = in->value[n->id];
  switch (n->op) {
  case NNC_OP_INPUT: copy(out, in->input[n->attr[0]], &n->shape); return;
  case NNC_OP_PARAM: copy(out, in->tensor[n->attr[0]], &n->shape); return;
  case NNC_OP_CONST:
    for (int64_t i = 0, e = nnc_shape_numel(&n->shape); i < e; i++)
      out[i] = n->fattr;
    return;
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
  case NNC_OP_FLOOR: eval_unary(in, n, out); return;
  case NNC_OP_ALLREDUCE:
    copy(out, operand(in, n, 0), &n->shape);
    if (in->allreduce) in->allreduce(in->allreduce_ctx, out, nnc_shape_numel(&n->shape));
    return;
  case NNC_OP_CAST: eval_cast(in, n, out); return;
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ: eval_binary(in, n, out); return;
  case NNC_OP_SELECT: eval_select(in, n, out); return;
  case NNC_OP_SUM:
  case NNC_OP_RMAX: eval_reduce(in, n, out); return;
  case NNC_OP_ARGMAX: eval_argmax(in, n, out); return;
  case NNC_OP_RESHAPE: copy(out, operand(in, n, 0), &n->shape); return;
  case NNC_OP_TRANSPOSE: eval_transpose(in, n, out); return;
  case NNC_OP_BROADCAST: eval_broadcast(in, n, out); return;
  case NNC_OP_MATMUL: eval_matmul(in, n, out); return;
  case NNC_OP_IM2COL: eval_im2col(in, n, out); return;
  case NNC_OP_COL2IM: eval_col2im(in, n, out); return;
  case NNC_OP_GATHER: eval_gather(in, n, out); return;
  case NNC_OP_SCATTER_ADD: eval_scatter_add(in, n, out); return;
  case NNC_OP_ONEHOT: eval_onehot(in, n, out); return;
  case NNC_OP_RAND: eval_rand(in, n, out); return;
  case NNC_OP_COUNT_: break;
  }
  nnc_ir_bug("interp: node %%%d has no op", n->id);
}

/* ---- Lifetime and access ---- */

static double *zeros(const nnc_shape *s) {
  return calloc((size_t)nnc_shape_numel(s), sizeof(double));
}

nnc_interp *nnc_interp_new(const nnc_graph *g) {
  nnc_interp *in = calloc(1, sizeof *in);
  if (!in) return NULL;
  in->g = g;
  in->nnodes = g->nnodes;
  in->ntensors = g->module->ntensors;
  in->value = calloc((size_t)in->nnodes + 1, sizeof(double *));
  in->tensor = calloc((size_t)in->ntensors + 1, sizeof(double *));
  if (!in->value || !in->tensor) goto fail;
  for (int i = 0; i < in->nnodes; i++)
    if (!(in->value[i] = zeros(&g->nodes[i]->shape))) goto fail;
  for (int t = 0; t < in->ntensors; t++)
    if (!(in->tensor[t] = zeros(&g->module->tensors[t].shape))) goto fail;
  for (int k = 0; k < NNC_IN_COUNT_; k++)
    if (g->inputs[k] && !(in->input[k] = zeros(&g->inputs[k]->shape))) goto fail;
  return in;
fail:
  nnc_interp_free(in);
  return NULL;
}

void nnc_interp_free(nnc_interp *in) {
  if (!in) return;
  for (int i = 0; in->value && i < in->nnodes; i++)
    free(in->value[i]);
  for (int t = 0; in->tensor && t < in->ntensors; t++)
    free(in->tensor[t]);
  for (int k = 0; k < NNC_IN_COUNT_; k++)
    free(in->input[k]);
  free(in->value);
  free(in->tensor);
  free(in);
}

double *nnc_interp_tensor(nnc_interp *in, int t) {
  if (t < 0 || t >= in->ntensors) nnc_ir_bug("interp: no tensor %d", t);
  return in->tensor[t];
}

double *nnc_interp_input(nnc_interp *in, nnc_input_kind k) {
  if (!in->input[k]) nnc_ir_bug("interp: graph %s has no input %d", in->g->name, (int)k);
  return in->input[k];
}

void nnc_interp_set_allreduce(nnc_interp *in, nnc_interp_allreduce_fn fn, void *ctx) {
  in->allreduce = fn;
  in->allreduce_ctx = ctx;
}

void nnc_interp_run(nnc_interp *in) {
  const nnc_graph *g = in->g;
  if (g->nnodes != in->nnodes || g->module->ntensors != in->ntensors)
    nnc_ir_bug("interp: graph %s changed after nnc_interp_new", g->name);
  for (int i = 0; i < in->nnodes; i++)
    eval_node(in, g->nodes[i]);
  for (int u = 0; u < g->nupdates; u++) {
    const nnc_update *up = &g->updates[u];
    copy(in->tensor[up->tensor], in->value[up->value->id], &up->value->shape);
  }
}

void nnc_interp_run_for(nnc_interp *in, const nnc_node *n) {
  const nnc_graph *g = in->g;
  bool *need = calloc((size_t)in->nnodes + 1, sizeof(bool));
  if (!need) nnc_ir_bug("interp: out of memory");
  need[n->id] = true;
  for (int i = n->id; i >= 0; i--) /* operands come before their users */
    for (int j = 0; need[i] && j < g->nodes[i]->nin; j++)
      need[g->nodes[i]->in[j]->id] = true;
  for (int i = 0; i <= n->id; i++)
    if (need[i]) eval_node(in, g->nodes[i]);
  free(need);
}

const double *nnc_interp_value(const nnc_interp *in, const nnc_node *n) {
  if (n->id < 0 || n->id >= in->nnodes || in->g->nodes[n->id] != n)
    nnc_ir_bug("interp: node is not in graph %s", in->g->name);
  return in->value[n->id];
}
