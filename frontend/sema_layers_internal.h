/* sema_layers_internal.h: what the files of built-in layers share:
 * sema_layers.c (the layers with parameters and shapes, and the table of
 * every built-in) and sema_functions.c (activations, axes, the functions
 * that are not layers). Not used outside them.
 */
#ifndef NNC_SEMA_LAYERS_INTERNAL_H
#define NNC_SEMA_LAYERS_INTERNAL_H

#include "sema_internal.h"

typedef struct layer_args {
  nnc_lower *L;
  nnc_scope *sc;
  const nnc_ast *call;
  const nnc_ast **a; /* argument values by signature slot; a[0] is the input */
  nnc_value x;       /* the lowered input */
  const char *tag;   /* name for the printer; layers with parameters set their path */
} layer_args;

typedef nnc_value (*layer_fn)(layer_args *A);

/* ---- Shorthands and arguments (header-only) ---- */

static inline nnc_graph *G(layer_args *A) {
  return A->L->g;
}
static inline nnc_value tensor(layer_args *A, nnc_node *n) {
  return (nnc_value){n, A->x.batched, false, 0};
}
static inline nnc_node *cst(layer_args *A, double v) {
  return nnc_ir_const(G(A), NNC_F32, v);
}
static inline nnc_node *bin(layer_args *A, nnc_op op, nnc_node *a, nnc_node *b) {
  return nnc_ir_binary(G(A), op, a, b);
}
static inline nnc_node *un(layer_args *A, nnc_op op, nnc_node *a) {
  return nnc_ir_unary(G(A), op, a);
}
static inline const char *shape_of(layer_args *A, nnc_node *n) {
  return nnc_lower_shape_str(A->L, n);
}
static inline nnc_span at(layer_args *A) {
  return A->call->span;
}
static inline nnc_value fail(layer_args *A) {
  A->L->failed = true;
  return NNC_VALUE_ERROR;
}

/* Integer argument with a default. */
static inline bool int_arg(layer_args *A, int slot, const char *what, int64_t def, int64_t lo,
                           int64_t hi, int64_t *out) {
  *out = def;
  if (!A->a[slot]) return true;
  if (nnc_sema_int(A->L->s, A->a[slot], what, lo, hi, out)) return true;
  A->L->failed = true;
  return false;
}

static inline bool num_arg(layer_args *A, int slot, const char *what, double def, double lo,
                           double hi, double *out) {
  *out = def;
  if (!A->a[slot]) return true;
  if (nnc_sema_num(A->L->s, A->a[slot], what, lo, hi, out)) return true;
  A->L->failed = true;
  return false;
}

static inline bool bool_arg(layer_args *A, int slot, const char *what, bool def, bool *out) {
  *out = def;
  if (!A->a[slot]) return true;
  if (nnc_sema_bool(A->L->s, A->a[slot], what, out)) return true;
  A->L->failed = true;
  return false;
}

/* ---- sema_functions.c ---- */

/* activation = relu|sigmoid|... (dense and conv2d): applied to y, softmax
 * over channel_axis; y itself without the argument, NULL after an error. */
nnc_node *nnc_layer_activation(layer_args *A, int slot, nnc_node *y, int channel_axis);

/* The built-in functions of the table. */
nnc_value nnc_fn_relu(layer_args *A);
nnc_value nnc_fn_sigmoid(layer_args *A);
nnc_value nnc_fn_tanh(layer_args *A);
nnc_value nnc_fn_exp(layer_args *A);
nnc_value nnc_fn_log(layer_args *A);
nnc_value nnc_fn_sqrt(layer_args *A);
nnc_value nnc_fn_abs(layer_args *A);
nnc_value nnc_fn_gelu(layer_args *A);
nnc_value nnc_fn_leaky_relu(layer_args *A);
nnc_value nnc_fn_softmax(layer_args *A);
nnc_value nnc_fn_log_softmax(layer_args *A);
nnc_value nnc_fn_sum(layer_args *A);
nnc_value nnc_fn_mean(layer_args *A);

#endif
