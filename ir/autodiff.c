/* autodiff.c: reverse-mode automatic differentiation on the graph IR.
 *
 * nnc_ad_grad(g, y, wrt) appends to g the nodes that compute dy/dw for each
 * w in wrt, y a rank-0 float node. It first marks, in one forward pass over
 * the nodes, which of them depend on some w ("active"); then it walks the
 * nodes backward from y (creation order is a topological order), and for
 * every active node that has an adjoint applies that op's vector-Jacobian
 * product rule to push adjoint contributions to its active float operands.
 * A contribution goes through accumulate(), the one place adjoints are
 * summed and where broadcasting is undone (SUM over the broadcast axes, then
 * a reshape to the operand's shape). So no node is built for a gradient
 * nobody asked for: not for the input batch, not for frozen weights.
 *
 * Every rule is a few graph builder calls with its math beside it; the
 * backward graph is therefore ordinary IR that simplify.c and codegen
 * optimise and fuse like the forward one. Ops with no useful derivative
 * (comparisons, argmax, floor, sign, onehot, rand, integer casts, leaves)
 * contribute nothing. Matrix-product rules use matmul's transpose flags,
 * never explicit transposes.
 */
#include "passes.h"

#include <stdlib.h>

typedef struct ad {
  nnc_graph *g;
  nnc_node **adj; /* adjoint of node id, for ids <= y->id; NULL: none yet */
  bool *active;   /* node depends on some wrt node */
} ad;

static bool is_float(nnc_dtype t) {
  return t == NNC_F32 || t == NNC_F64;
}

/* ---- Builder shorthands ---- */
static nnc_node *k(ad *a, const nnc_node *like, double v) {
  return nnc_ir_const(a->g, like->dtype, v);
}
static nnc_node *add(ad *a, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(a->g, NNC_OP_ADD, x, y);
}
static nnc_node *sub(ad *a, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(a->g, NNC_OP_SUB, x, y);
}
static nnc_node *mul(ad *a, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(a->g, NNC_OP_MUL, x, y);
}
static nnc_node *dvd(ad *a, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(a->g, NNC_OP_DIV, x, y);
}
static nnc_node *neg(ad *a, nnc_node *x) {
  return nnc_ir_unary(a->g, NNC_OP_NEG, x);
}
static nnc_node *fn(ad *a, nnc_op op, nnc_node *x) {
  return nnc_ir_unary(a->g, op, x);
}
static nnc_node *cmp(ad *a, nnc_op op, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(a->g, op, x, y);
}
/* mask ? x : 0 and mask ? 0 : x */
static nnc_node *keep_if(ad *a, nnc_node *mask, nnc_node *x) {
  return nnc_ir_select(a->g, mask, x, k(a, x, 0));
}
static nnc_node *drop_if(ad *a, nnc_node *mask, nnc_node *x) {
  return nnc_ir_select(a->g, mask, k(a, x, 0), x);
}

/* Sums c over the axes where `to` was broadcast, giving shape `to`. */
static nnc_node *unbroadcast(ad *a, nnc_node *c, const nnc_shape *to) {
  if (nnc_shape_eq(&c->shape, to)) return c;
  if (c->shape.rank == 0) nnc_ir_bug("autodiff: rank-0 adjoint for a rank-%d operand", to->rank);
  uint32_t axes = 0;
  for (int d = 0; d < c->shape.rank; d++)
    if (to->rank == 0 || (to->dim[d] == 1 && c->shape.dim[d] != 1)) axes |= 1u << d;
  return nnc_ir_reshape(a->g, nnc_ir_reduce(a->g, NNC_OP_SUM, c, axes), to);
}

/* The one place adjoints are summed: adj(x) += c, unbroadcast to x's shape. */
static void accumulate(ad *a, nnc_node *x, nnc_node *c) {
  c = unbroadcast(a, c, &x->shape);
  if (c->dtype != x->dtype)
    nnc_ir_bug("autodiff: %s adjoint has the wrong dtype", nnc_op_name(x->op));
  a->adj[x->id] = a->adj[x->id] ? add(a, a->adj[x->id], c) : c;
}

/* Operand i of n needs an adjoint: it depends on wrt and is a float. */
static bool wants(const ad *a, const nnc_node *n, int i) {
  return a->active[n->in[i]->id] && is_float(n->in[i]->dtype);
}

#define X0 (n->in[0])
#define X1 (n->in[1])
#define X2 (n->in[2])
/* Pushes contribution c to operand i if that operand wants an adjoint; c is
 * built only then. */
#define PUSH(i, c)                                                                                 \
  do {                                                                                             \
    if (wants(a, n, i)) accumulate(a, n->in[i], (c));                                              \
  } while (0)

/* Inverse of a transpose's permutation: output axis i read source axis
 * perm[i], so the adjoint's axis perm[i] reads dy's axis i. */
static nnc_node *untranspose(ad *a, nnc_node *n, nnc_node *dy) {
  int inv[NNC_MAX_RANK];
  for (int i = 0; i < n->shape.rank; i++)
    inv[n->attr[i]] = i;
  return nnc_ir_transpose(a->g, dy, inv);
}

/* C = op_a(A) op_b(B), op = transpose where the flag is set:
 *   C = A B      dA = dC B^T      dB = A^T dC
 *   C = A B^T    dA = dC B        dB = dC^T A
 *   C = A^T B    dA = B dC^T      dB = A dC
 *   C = A^T B^T  dA = B^T dC^T    dB = dC^T A^T */
static void vjp_matmul(ad *a, nnc_node *n, nnc_node *dc) {
  nnc_graph *g = a->g;
  bool ta = n->attr[0], tb = n->attr[1];
  if (!ta)
    PUSH(0, nnc_ir_matmul(g, dc, X1, false, !tb));
  else
    PUSH(0, nnc_ir_matmul(g, X1, dc, tb, true));
  if (!tb)
    PUSH(1, nnc_ir_matmul(g, X0, dc, !ta, false));
  else
    PUSH(1, nnc_ir_matmul(g, dc, X0, true, ta));
}

static void window_attrs(const nnc_node *n, int64_t kk[2], int64_t st[2], int64_t pad[2]) {
  kk[0] = n->attr[0], kk[1] = n->attr[1];
  st[0] = n->attr[2], st[1] = n->attr[3];
  pad[0] = n->attr[4], pad[1] = n->attr[5];
}

/* x with its axes permuted (output axis i reads axis perm[i]); x itself
 * for the identity. */
static nnc_node *permute(nnc_graph *g, nnc_node *x, const int *perm) {
  for (int i = 0; i < x->shape.rank; i++)
    if (perm[i] != i) return nnc_ir_transpose(g, x, perm);
  return x;
}

/* d max(x)/dx_i = [i is the first maximum of its window, in row-major scan
 * order], times dy: the whole adjoint goes to one element, as PyTorch's
 * max_pool2d and max(dim) route it. (Giving it to every tied element, the
 * obvious [x_i == max(x)], is not a subgradient: a window of k equal
 * maxima would pass on k dy, and ties are common: constant image
 * backgrounds through ReLU.) Built from argmax so the interpreter and
 * codegen follow the same rule: the reduced axes moved last and flattened
 * to [rows, K], argmax over K (the first maximum wins), one-hot of it
 * times dy, then back to x's layout. */
static nnc_node *first_max_grad(ad *a, nnc_node *n, nnc_node *dy) {
  nnc_graph *g = a->g;
  const nnc_shape *xs = &n->in[0]->shape;
  int perm[NNC_MAX_RANK], inv[NNC_MAX_RANK], r = 0;
  int64_t rows = 1, width = 1;
  for (int pass = 0; pass < 2; pass++)
    for (int d = 0; d < xs->rank; d++)
      if ((int)((n->attr[0] >> d) & 1) == pass) perm[r++] = d;
  nnc_shape moved = {xs->rank, {0}};
  for (int i = 0; i < xs->rank; i++) {
    inv[perm[i]] = i;
    moved.dim[i] = xs->dim[perm[i]];
    if ((n->attr[0] >> perm[i]) & 1)
      width *= xs->dim[perm[i]];
    else
      rows *= xs->dim[perm[i]];
  }
  nnc_shape flat = {2, {rows, width}}, col = {2, {rows, 1}}, vec = {1, {rows}};
  nnc_node *x2 = nnc_ir_reshape(g, permute(g, n->in[0], perm), &flat);
  nnc_node *at = nnc_ir_cast(g, nnc_ir_reshape(g, nnc_ir_argmax(g, x2, 1), &vec), NNC_I32);
  nnc_node *d2 = mul(a, nnc_ir_onehot(g, at, width, dy->dtype), nnc_ir_reshape(g, dy, &col));
  return permute(g, nnc_ir_reshape(g, d2, &moved), inv);
}

/* The rule of each op. y = n; x, a, b are its operands X0, X1, X2; every
 * contribution has y's shape and accumulate() sums it back to a broadcast
 * operand's. No default: -Wswitch names a new op without a rule. */
static void vjp(ad *a, nnc_node *n, nnc_node *dy) {
  nnc_graph *g = a->g;
  int64_t kk[2], st[2], pad[2];
  switch (n->op) {
  case NNC_OP_NEG: PUSH(0, neg(a, dy)); return;     /* d(-x) = -1 */
  case NNC_OP_EXP: PUSH(0, mul(a, dy, n)); return;  /* d exp(x) = exp(x) = y */
  case NNC_OP_LOG: PUSH(0, dvd(a, dy, X0)); return; /* d log(x) = 1/x */
  case NNC_OP_SQRT:                                 /* d sqrt(x) = 1 / (2 sqrt(x)) = 0.5 / y */
    PUSH(0, dvd(a, mul(a, dy, k(a, n, 0.5)), n));
    return;
  case NNC_OP_RSQRT: /* d x^-1/2 = -1/2 x^-3/2 = -0.5 y^3 */
    PUSH(0, mul(a, mul(a, dy, k(a, n, -0.5)), mul(a, n, mul(a, n, n))));
    return;
  case NNC_OP_RECIP:
    PUSH(0, neg(a, mul(a, dy, mul(a, n, n))));
    return; /* d(1/x) = -1/x^2 = -y^2 */
  /* y = sum over ranks r of x_r, the same y on every rank: dx_r = sum over
   * ranks of dy_r (each rank's dy is its part of the gradient) */
  case NNC_OP_ALLREDUCE: PUSH(0, nnc_ir_unary(g, NNC_OP_ALLREDUCE, dy)); return;
  case NNC_OP_TANH: /* d tanh(x) = 1 - tanh(x)^2 = 1 - y^2 */
    PUSH(0, mul(a, dy, sub(a, k(a, n, 1), mul(a, n, n))));
    return;
  case NNC_OP_SIGMOID: /* d sigmoid(x) = y (1 - y) */
    /* NNC_TEST_BROKEN_SIGMOID: a test build's wrong rule, which `nnc gradcheck` must catch */
#ifdef NNC_TEST_BROKEN_SIGMOID
    PUSH(0, mul(a, dy, n));
#else
    PUSH(0, mul(a, dy, mul(a, n, sub(a, k(a, n, 1), n))));
#endif
    return;
  case NNC_OP_RELU: /* d relu(x) = [x > 0]; 0 at x = 0 like PyTorch */
    PUSH(0, keep_if(a, cmp(a, NNC_OP_GT, X0, k(a, n, 0)), dy));
    return;
  case NNC_OP_ABS: PUSH(0, mul(a, dy, fn(a, NNC_OP_SIGN, X0))); return; /* d|x| = sign(x), 0 at 0 */
  case NNC_OP_ERF: /* d erf(x) = 2/sqrt(pi) exp(-x^2) */
    PUSH(0, mul(a, mul(a, dy, k(a, n, 1.1283791670955126)),
                fn(a, NNC_OP_EXP, neg(a, mul(a, X0, X0)))));
    return;
  case NNC_OP_COS: /* d cos(x) = -sin(x) = cos(x + pi/2) (there is no sin op) */
    PUSH(0, mul(a, dy, fn(a, NNC_OP_COS, add(a, X0, k(a, n, 1.5707963267948966)))));
    return;
  case NNC_OP_CAST: /* float -> float: identity up to rounding; to/from i32: none */
    if (is_float(n->dtype)) PUSH(0, nnc_ir_cast(g, dy, X0->dtype));
    return;
  case NNC_OP_ADD: /* d(a+b)/da = 1, d(a+b)/db = 1 */
    PUSH(0, dy);
    PUSH(1, dy);
    return;
  case NNC_OP_SUB: /* d(a-b)/da = 1, d(a-b)/db = -1 */
    PUSH(0, dy);
    PUSH(1, neg(a, dy));
    return;
  case NNC_OP_MUL: /* d(a*b)/da = b, d(a*b)/db = a */
    PUSH(0, mul(a, dy, X1));
    PUSH(1, mul(a, dy, X0));
    return;
  case NNC_OP_DIV: /* d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -y/b */
    PUSH(0, dvd(a, dy, X1));
    PUSH(1, neg(a, dvd(a, mul(a, dy, n), X1)));
    return;
  case NNC_OP_MAX: /* d max(a,b)/da = [a >= b], /db = [a < b]: a tie goes to a */
    PUSH(0, keep_if(a, cmp(a, NNC_OP_GE, X0, X1), dy));
    PUSH(1, drop_if(a, cmp(a, NNC_OP_GE, X0, X1), dy));
    return;
  case NNC_OP_MIN: /* d min(a,b)/da = [a <= b], /db = [a > b]: a tie goes to a */
    PUSH(0, keep_if(a, cmp(a, NNC_OP_GE, X1, X0), dy));
    PUSH(1, drop_if(a, cmp(a, NNC_OP_GE, X1, X0), dy));
    return;
  case NNC_OP_POW: /* d a^b/da = b a^(b-1), d a^b/db = a^b log(a) = y log(a) */
    PUSH(0, mul(a, mul(a, dy, X1), nnc_ir_binary(g, NNC_OP_POW, X0, sub(a, X1, k(a, n, 1)))));
    PUSH(1, mul(a, mul(a, dy, n), fn(a, NNC_OP_LOG, X0)));
    return;
  case NNC_OP_SELECT: /* y = c ? a : b: dy flows to the chosen side; c gets none */
    PUSH(1, nnc_ir_select(g, X0, dy, k(a, n, 0)));
    PUSH(2, nnc_ir_select(g, X0, k(a, n, 0), dy));
    return;
  case NNC_OP_SUM: PUSH(0, nnc_ir_broadcast(g, dy, &X0->shape)); return; /* d sum(x)/dx_i = 1 */
  case NNC_OP_RMAX: PUSH(0, first_max_grad(a, n, dy)); return;
  case NNC_OP_RESHAPE: PUSH(0, nnc_ir_reshape(g, dy, &X0->shape)); return; /* same elements */
  case NNC_OP_TRANSPOSE: PUSH(0, untranspose(a, n, dy)); return;           /* permutation^-1 */
  case NNC_OP_BROADCAST: PUSH(0, dy); return; /* accumulate() sums the stretched axes */
  case NNC_OP_MATMUL: vjp_matmul(a, n, dy); return;
  case NNC_OP_IM2COL: /* linear, adjoint col2im (padding cells read a constant) */
    window_attrs(n, kk, st, pad);
    PUSH(0, nnc_ir_col2im(g, dy, &X0->shape, kk, st, pad));
    return;
  case NNC_OP_COL2IM: /* linear, adjoint im2col with zero padding */
    window_attrs(n, kk, st, pad);
    PUSH(0, nnc_ir_im2col(g, dy, kk, st, pad, 0.0));
    return;
  case NNC_OP_GATHER: /* y[i] = T[idx[i]]: dT[r] = sum of dy[i] with idx[i] = r */
    PUSH(0, nnc_ir_scatter_add(g, dy, X1, X0->shape.dim[0]));
    return;
  case NNC_OP_SCATTER_ADD: /* y[idx[i]] += d[i]: dd[i] = dy[idx[i]] */
    PUSH(0, nnc_ir_gather(g, dy, X1));
    return;
  /* GRADIENT ZERO in ops.def: piecewise constant or integer-valued */
  case NNC_OP_SIGN:
  case NNC_OP_FLOOR:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ:
  case NNC_OP_ARGMAX:
  case NNC_OP_ONEHOT:
  case NNC_OP_RAND:
  /* GRADIENT NONE: leaves, whose adjoint is the result */
  case NNC_OP_INPUT:
  case NNC_OP_PARAM:
  case NNC_OP_CONST: return;
  case NNC_OP_COUNT_: break;
  }
  nnc_ir_bug("autodiff: node %%%d has no op", n->id);
}

#undef PUSH
#undef X0
#undef X1
#undef X2

void nnc_ad_grad(nnc_graph *g, nnc_node *y, nnc_node *const *wrt, int n, nnc_node **grads) {
  if (y->shape.rank != 0 || !is_float(y->dtype)) nnc_ir_bug("autodiff: y must be a float scalar");
  int count = y->id + 1; /* nodes after y cannot reach it */
  ad a = {g, calloc((size_t)count, sizeof(nnc_node *)), calloc((size_t)count, sizeof(bool))};
  if (!a.adj || !a.active) nnc_ir_bug("autodiff: out of memory");
  for (int i = 0; i < n; i++)
    if (wrt[i]->id < count) a.active[wrt[i]->id] = true;
  for (int i = 0; i < count; i++) {
    const nnc_node *v = g->nodes[i];
    for (int j = 0; j < v->nin && !a.active[i]; j++)
      a.active[i] = a.active[v->in[j]->id];
  }
  if (a.active[y->id]) a.adj[y->id] = nnc_ir_const(g, y->dtype, 1.0); /* dy/dy = 1 */
  for (int i = count - 1; i >= 0; i--) {
    nnc_node *v = g->nodes[i]; /* reread: appending may move g->nodes */
    if (a.adj[i] && a.active[i]) vjp(&a, v, a.adj[i]);
  }
  for (int i = 0; i < n; i++)
    grads[i] = wrt[i]->id < count ? a.adj[wrt[i]->id] : NULL;
  free(a.adj);
  free(a.active);
}
