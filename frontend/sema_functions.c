/* sema_functions.c: the built-in functions of model bodies that are not
 * layers (no parameters, no name): elementwise activations, softmax and
 * log-softmax over an axis, sum and mean over axes; and the activations
 * that dense and conv2d apply through `activation =`. Each is desugared
 * into the primitive ops of ir/ops.def; sema_layers.c's table lists them.
 */
#include "sema_layers_internal.h"

static nnc_node *softmax_axis(layer_args *A, nnc_node *x, int axis, bool log) {
  nnc_node *m = nnc_ir_reduce(G(A), NNC_OP_RMAX, x, 1u << axis);
  nnc_node *z = bin(A, NNC_OP_SUB, x, m); /* x - max: exp cannot overflow */
  nnc_node *e = un(A, NNC_OP_EXP, z);
  nnc_node *s = nnc_ir_reduce(G(A), NNC_OP_SUM, e, 1u << axis);
  if (log) return bin(A, NNC_OP_SUB, z, un(A, NNC_OP_LOG, s)); /* z - log(sum(exp(z))) */
  return bin(A, NNC_OP_DIV, e, s);
}

/* gelu(x) = 0.5 x (1 + erf(x / sqrt(2))), the exact form */
static nnc_node *gelu(layer_args *A, nnc_node *x) {
  nnc_node *e = un(A, NNC_OP_ERF, bin(A, NNC_OP_MUL, x, cst(A, 0.70710678118654752440)));
  return bin(A, NNC_OP_MUL, bin(A, NNC_OP_MUL, x, cst(A, 0.5)), bin(A, NNC_OP_ADD, e, cst(A, 1.0)));
}

/* leaky_relu(x) = x > 0 ? x : a x; max(x, a x) when 0 <= a <= 1 */
static nnc_node *leaky(layer_args *A, nnc_node *x, double slope) {
  nnc_node *ax = bin(A, NNC_OP_MUL, x, cst(A, slope));
  if (slope >= 0 && slope <= 1) return bin(A, NNC_OP_MAX, x, ax);
  nnc_node *pos = bin(A, NNC_OP_GT, x, cst(A, 0.0));
  return nnc_ir_select(G(A), pos, x, ax);
}

static const char *const activation_names[] = {"relu",    "sigmoid",     "tanh",       "gelu",
                                               "softmax", "log_softmax", "leaky_relu", "linear"};

/* activation = relu (dense and conv2d): applied to the layer's output. */
nnc_node *nnc_layer_activation(layer_args *A, int slot, nnc_node *y, int channel_axis) {
  if (!A->a[slot]) return y;
  int k;
  if (!nnc_sema_word(A->L->s, A->a[slot], "activation", activation_names, 8, &k)) {
    A->L->failed = true;
    return NULL;
  }
  switch (k) {
  case 0: return un(A, NNC_OP_RELU, y);
  case 1: return un(A, NNC_OP_SIGMOID, y);
  case 2: return un(A, NNC_OP_TANH, y);
  case 3: return gelu(A, y);
  case 4: return softmax_axis(A, y, channel_axis, false);
  case 5: return softmax_axis(A, y, channel_axis, true);
  case 6: return leaky(A, y, 0.01);
  default: return y;
  }
}

/* A per-sample axis (negative counts from the end) to a tensor axis. */
static bool axis_of(layer_args *A, const nnc_ast *e, nnc_node *x, int *out) {
  int off = A->x.batched ? 1 : 0;
  int per = x->shape.rank - off;
  int64_t v;
  if (!nnc_sema_int(A->L->s, e, "axis", -64, 64, &v)) return !(A->L->failed = true);
  if (v < 0) v += per;
  if (v < 0 || v >= per) {
    nnc_lower_error(A->L, e->span,
                    "axis is out of range for %s (per-sample axes 0..%d, or -1 "
                    "for the last)",
                    shape_of(A, x), per - 1);
    return false;
  }
  *out = (int)v + off;
  return true;
}

static bool axis_arg(layer_args *A, int slot, nnc_node *x, int *out) {
  if (!A->a[slot]) {
    *out = x->shape.rank - 1;
    if (A->x.batched && x->shape.rank < 2) {
      nnc_lower_error(A->L, at(A), "%s needs a feature axis, got %s", A->call->str, shape_of(A, x));
      return false;
    }
    return true;
  }
  return axis_of(A, A->a[slot], x, out);
}

/* ---- Functions ---- */

static nnc_value unary(layer_args *A, nnc_op op) {
  return tensor(A, un(A, op, A->x.node));
}
nnc_value nnc_fn_relu(layer_args *A) {
  return unary(A, NNC_OP_RELU);
}
nnc_value nnc_fn_sigmoid(layer_args *A) {
  return unary(A, NNC_OP_SIGMOID);
}
nnc_value nnc_fn_tanh(layer_args *A) {
  return unary(A, NNC_OP_TANH);
}
nnc_value nnc_fn_exp(layer_args *A) {
  return unary(A, NNC_OP_EXP);
}
nnc_value nnc_fn_log(layer_args *A) {
  return unary(A, NNC_OP_LOG);
}
nnc_value nnc_fn_sqrt(layer_args *A) {
  return unary(A, NNC_OP_SQRT);
}
nnc_value nnc_fn_abs(layer_args *A) {
  return unary(A, NNC_OP_ABS);
}
nnc_value nnc_fn_gelu(layer_args *A) {
  return tensor(A, gelu(A, A->x.node));
}

nnc_value nnc_fn_leaky_relu(layer_args *A) {
  double slope;
  if (!num_arg(A, 1, "slope", 0.01, -1e6, 1e6, &slope)) return fail(A);
  return tensor(A, leaky(A, A->x.node, slope));
}

static nnc_value softmax_like(layer_args *A, bool log) {
  int axis;
  if (!axis_arg(A, 1, A->x.node, &axis)) return fail(A);
  return tensor(A, softmax_axis(A, A->x.node, axis, log));
}
nnc_value nnc_fn_softmax(layer_args *A) {
  return softmax_like(A, false);
}
nnc_value nnc_fn_log_softmax(layer_args *A) {
  return softmax_like(A, true);
}

/* sum/mean(x, axis = a or [a, b], keepdims = false); no axis: every
 * per-sample axis (every axis of a parameter). */
static nnc_value reduce(layer_args *A, bool mean) {
  nnc_node *x = A->x.node;
  int off = A->x.batched ? 1 : 0;
  uint32_t axes = 0;
  const nnc_ast *e = A->a[1];
  if (!e) {
    for (int i = off; i < x->shape.rank; i++)
      axes |= 1u << i;
  } else {
    int n = e->kind == NNC_AST_LIST ? e->list.n : 1;
    for (int i = 0; i < n && i < NNC_MAX_RANK; i++) {
      int ax;
      if (!axis_of(A, e->kind == NNC_AST_LIST ? e->list.items[i] : e, x, &ax)) return fail(A);
      axes |= 1u << ax;
    }
  }
  bool keep;
  if (!bool_arg(A, 2, "keepdims", false, &keep)) return fail(A);
  nnc_node *r = nnc_ir_reduce(G(A), NNC_OP_SUM, x, axes);
  if (mean) {
    int64_t count = 1;
    for (int i = 0; i < x->shape.rank; i++)
      if (axes & (1u << i)) count *= x->shape.dim[i];
    r = bin(A, NNC_OP_MUL, r, cst(A, 1.0 / (double)count));
  }
  if (!keep) {
    nnc_shape s = {0, {0}};
    for (int i = 0; i < x->shape.rank; i++)
      if (!(axes & (1u << i))) s.dim[s.rank++] = x->shape.dim[i];
    r = nnc_ir_reshape(G(A), r, &s);
  }
  return tensor(A, r);
}
nnc_value nnc_fn_sum(layer_args *A) {
  return reduce(A, false);
}
nnc_value nnc_fn_mean(layer_args *A) {
  return reduce(A, true);
}
