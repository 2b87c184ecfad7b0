/* ir.h: the graph IR — tensors, ops, graphs and the module that holds them.
 *
 * The front end lowers a checked .nn file into an nnc_module: a table of
 * persistent tensors (parameters, buffers, optimizer state, each with a
 * stable hierarchical name), a training configuration (config.h), and
 * graphs: `train` (forward in training mode, then backward and update,
 * appended by autodiff.c and optim.c) and `eval` (forward in evaluation
 * mode). Codegen lowers each graph into one entry point.
 *
 * Invariants (checked by nnc_ir_verify):
 *  1. Nodes of a graph are stored in creation order and every operand of a
 *     node precedes it: creation order is a topological order.
 *  2. Shapes are static: 0 <= rank <= NNC_MAX_RANK, every dim >= 1, element
 *     count < 2^40. A node's shape and dtype are fixed by its builder from
 *     its operands (the shape rules are in ir.c, one per op class).
 *  3. Elementwise binary ops, CMP and SELECT broadcast: operands have the
 *     node's rank, each dim equal to the node's or 1; a rank-0 operand
 *     broadcasts to any shape. Builders insert nothing implicitly.
 *  4. Floating ops take f32 or f64 operands of one dtype; i32 appears only
 *     for class labels and indices (INPUT, CAST, ONEHOT, GATHER, SCATTER_ADD).
 *  5. PARAM nodes name an entry of module->tensors; a graph has at most one
 *     PARAM node per tensor. Updates write persistent tensors only, at most
 *     one update per tensor, all with the target's shape and dtype; their
 *     values are all computed before any is stored (simultaneous assignment).
 *  6. Nodes live in the module's arena and are never freed one by one.
 */
#ifndef NNC_IR_H
#define NNC_IR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "arena.h"
#include "names.h"
#include "config.h"

enum { NNC_MAX_RANK = 8, NNC_MAX_ATTR = 8 };

typedef enum nnc_op {
#define X(e, name, arity, cls, lowering, gradient) NNC_OP_##e,
#include "ops.def"
#undef X
  NNC_OP_COUNT_
} nnc_op;

typedef enum nnc_op_class {
  NNC_CLASS_LEAF,
  NNC_CLASS_UNARY,
  NNC_CLASS_BINARY,
  NNC_CLASS_CMP,
  NNC_CLASS_REDUCE,
  NNC_CLASS_SHAPE,
  NNC_CLASS_OTHER,
} nnc_op_class;

/* ops.def's LOWERING column: what codegen gives the op. */
typedef enum nnc_op_lowering {
  NNC_LOWER_MEMORY,
  NNC_LOWER_INLINE,
  NNC_LOWER_VIEW,
  NNC_LOWER_KERNEL,
} nnc_op_lowering;

/* ops.def's GRADIENT column: what autodiff does with the op. */
typedef enum nnc_op_gradient {
  NNC_GRAD_NONE,
  NNC_GRAD_ZERO,
  NNC_GRAD_RULE,
} nnc_op_gradient;

const char *nnc_op_name(nnc_op op);
int nnc_op_arity(nnc_op op); /* -1: variable */
nnc_op_class nnc_op_class_of(nnc_op op);
nnc_op_lowering nnc_op_lowering_of(nnc_op op);
nnc_op_gradient nnc_op_gradient_of(nnc_op op);

typedef enum nnc_dtype { NNC_F32, NNC_F64, NNC_I32 } nnc_dtype;
const char *nnc_dtype_name(nnc_dtype t);
size_t nnc_dtype_size(nnc_dtype t);

/* Values fed into a graph from the runtime each step (see nnc_rt.h), as
 * K(ENUM, "name"): the enum below and nnc_input_name are expanded from it. */
#define NNC_INPUT_KINDS(K)                                                                         \
  K(X, "x")                     /* the batch of samples, [batch, ...sample shape] */               \
  K(Y, "y")                     /* labels i32[batch] or targets f32[batch, ...] */                 \
  K(STEP, "step")               /* f32 scalar, optimizer step, 1-based */                          \
  K(EPOCH, "epoch")             /* f32 scalar, 0-based */                                          \
  K(SEED, "seed")               /* i32 scalar, seed for random masks */                            \
  K(TOTAL_STEPS, "total_steps") /* f32 scalar, optimizer steps of the whole run */

typedef enum nnc_input_kind {
#define NNC_INPUT_ENUM_(e, name) NNC_IN_##e,
  NNC_INPUT_KINDS(NNC_INPUT_ENUM_) /* one enumerator each */
#undef NNC_INPUT_ENUM_
  NNC_IN_COUNT_
} nnc_input_kind;

const char *nnc_input_name(nnc_input_kind k); /* "x", "step", ... */

/* A byte range in a source file. Line and column are computed only when a
 * diagnostic is printed. file indexes the compilation's source table. */
typedef struct nnc_span {
  uint32_t file;
  uint32_t begin, end; /* byte offsets, end exclusive */
} nnc_span;

typedef struct nnc_shape {
  int rank;
  int64_t dim[NNC_MAX_RANK];
} nnc_shape;

int64_t nnc_shape_numel(const nnc_shape *s);
bool nnc_shape_eq(const nnc_shape *a, const nnc_shape *b);
/* "f32[64,784]"; buf must hold at least 128 bytes; returns buf. */
char *nnc_shape_str(char *buf, size_t n, nnc_dtype t, const nnc_shape *s);

typedef struct nnc_node nnc_node;
struct nnc_node {
  int id; /* index in the graph, printed as %id */
  nnc_op op;
  nnc_dtype dtype;
  nnc_shape shape;
  int nin;
  nnc_node **in;
  int64_t attr[NNC_MAX_ATTR];
  double fattr;
  nnc_span span;    /* where in the .nn file this came from (0,0,0: nowhere) */
  const char *name; /* optional, for the printer: "mlp.dense1" */
};

/* What a persistent tensor is for; the same values as the runtime's
 * nnc_rt_tensor_role (pinned by _Static_assert where codegen converts). */
typedef enum nnc_tensor_role {
  NNC_ROLE_PARAM,
  NNC_ROLE_FROZEN,
  NNC_ROLE_BUFFER,
  NNC_ROLE_OPT_STATE,
  NNC_ROLE_GRAD, /* a gradient the data-parallel step hands from `grad` to `update`: not
                    saved in checkpoints, not printed (so the model hash ignores it) */
} nnc_tensor_role;

/* Initialiser; the same values as the runtime's nnc_rt_init_kind (pinned
 * likewise). */
typedef enum nnc_init_kind {
  NNC_INIT_ZEROS,
  NNC_INIT_ONES,
  NNC_INIT_CONSTANT,
  NNC_INIT_NORMAL,
  NNC_INIT_UNIFORM,
  NNC_INIT_XAVIER_UNIFORM,
  NNC_INIT_XAVIER_NORMAL,
  NNC_INIT_HE_UNIFORM,
  NNC_INIT_HE_NORMAL,
} nnc_init_kind;

typedef struct nnc_init {
  nnc_init_kind kind;
  double a, b; /* constant / mean,std / low,high */
  int64_t fan_in, fan_out;
} nnc_init;

/* A tensor that outlives a step: parameter, frozen weight, buffer, or
 * optimizer state. Its name is stable across compilations of the same
 * model: checkpoints and transfer learning match tensors by it. */
typedef struct nnc_tensor {
  const char *name; /* "mlp.dense1.weight", "adam.m.mlp.dense1.weight" */
  nnc_tensor_role role;
  nnc_dtype dtype;
  nnc_shape shape;
  nnc_init init;
  double lr_scale; /* per-group learning-rate multiplier (1.0 default) */
  nnc_span span;
  /* A GRAD tensor that a rank's step with synchronised batch statistics
   * computes from sums over all ranks (nnc_sync_batch_sums): every rank
   * holds the global batch's gradient, not its part, so it is not added
   * across the ranks again. */
  bool synced;
} nnc_tensor;

typedef struct nnc_update {
  int tensor;      /* index in module->tensors */
  nnc_node *value; /* new value, shape and dtype of the tensor */
} nnc_update;

/* Named results a graph hands back to the runtime, as K(ENUM, "name"). */
#define NNC_OUTPUT_KINDS(K)                                                                        \
  K(LOSS_VEC, "loss_vec")       /* f32[batch] per-sample loss (before mean/sum) */                 \
  K(LOSS, "loss")               /* f32 scalar: the data loss (reduced loss_vec); l1/l2 penalties   \
                                   are added only to what optim.c differentiates */                \
  K(CORRECT_VEC, "correct_vec") /* f32[batch] 1.0 where the prediction is right */                 \
  K(PRED, "pred")               /* the model's output (logits, regression values) */               \
  K(LR, "lr")                   /* f32 scalar learning rate of this step */

typedef enum nnc_output_kind {
#define NNC_OUTPUT_ENUM_(e, name) NNC_OUT_##e,
  NNC_OUTPUT_KINDS(NNC_OUTPUT_ENUM_) /* one enumerator each */
#undef NNC_OUTPUT_ENUM_
  NNC_OUT_COUNT_
} nnc_output_kind;

const char *nnc_output_name(nnc_output_kind k); /* "loss", "pred", ... */

typedef struct nnc_graph {
  const char *name; /* "train", "eval" */
  struct nnc_module *module;
  nnc_node **nodes;
  int nnodes, cap;
  nnc_node *inputs[NNC_IN_COUNT_];   /* at most one INPUT node per kind */
  nnc_node *outputs[NNC_OUT_COUNT_]; /* NULL where absent */
  nnc_update *updates;
  int nupdates, update_cap;
  nnc_node **param_nodes; /* per tensor: its PARAM node here, or NULL */
  int param_cap;
  /* >= 1: a training graph that is one of stat_ranks ranks' parts of the
   * batch, with batch-norm statistics synchronised across them (front end,
   * nnc_frontend_options.stat_ranks; the driver's rank graphs): a sum over
   * its batch stands for the sum over all ranks (simplify.c), and
   * nnc_build_data_parallel scales its loss by 1/stat_ranks and keeps its
   * buffers' updates (nnc_sync_batch_sums makes them the same on every
   * rank). 0: an ordinary graph (micro-batches normalise alone). */
  int64_t stat_ranks;
} nnc_graph;

typedef struct nnc_module {
  nnc_arena *arena;
  const char *name; /* model name */
  nnc_tensor *tensors;
  int ntensors, tensor_cap;
  nnc_name_map tensor_index; /* name -> the first tensor of that name */
  nnc_graph *train;          /* NULL until built */
  nnc_graph *eval;
  /* Data-parallel training (optim.c, nnc_build_data_parallel): `grad` is
   * the training graph of one micro-batch of config.batch / micro_batches
   * samples, storing its gradients into GRAD tensors; `update` reads them
   * and applies clipping and the optimizer. NULL when not built;
   * micro_batches is also set, without them, when the training step sums
   * over the batch in their order (tools/pipeline.c, chunk_batch). */
  nnc_graph *grad;
  nnc_graph *update;
  int64_t micro_batches;
  /* With synchronised batch statistics (grad->stat_ranks = G = 4): the
   * rank graph of G/2 ranks, B/2 samples of two micro-batches each, its
   * gradients into the same GRAD tensors as `grad`'s. NULL otherwise. */
  nnc_graph *grad_half;
  nnc_train_config config;
  nnc_shape sample_shape; /* shape of one input sample */
  nnc_dtype sample_dtype;
} nnc_module;

/* ---- Module and graphs ---- */
nnc_module *nnc_module_new(nnc_arena *arena, const char *name);
/* Adds a persistent tensor; returns its index. name is copied. */
int nnc_module_add_tensor(nnc_module *m, const char *name, nnc_tensor_role role, nnc_dtype dtype,
                          const nnc_shape *shape, nnc_init init, nnc_span span);
int nnc_module_find_tensor(const nnc_module *m, const char *name); /* -1 if none */
nnc_graph *nnc_graph_new(nnc_module *m, const char *name);

/* ---- Builders ----
 * Each returns a new node appended to g, with shape and dtype inferred.
 * Operands must be valid for the op (callers check user-facing errors
 * first and report them with spans); a violated precondition is a
 * compiler bug and aborts with a message naming the op (nnc_ir_bug). */
nnc_node *nnc_ir_input(nnc_graph *g, nnc_input_kind kind, nnc_dtype t, const nnc_shape *s);
nnc_node *nnc_ir_param(nnc_graph *g, int tensor);                /* one node per tensor, reused */
nnc_node *nnc_ir_const(nnc_graph *g, nnc_dtype t, double value); /* rank 0 */
nnc_node *nnc_ir_fill(nnc_graph *g, nnc_dtype t, const nnc_shape *s, double value);
nnc_node *nnc_ir_unary(nnc_graph *g, nnc_op op, nnc_node *a);
nnc_node *nnc_ir_binary(nnc_graph *g, nnc_op op, nnc_node *a, nnc_node *b); /* also CMP */
nnc_node *nnc_ir_select(nnc_graph *g, nnc_node *c, nnc_node *a, nnc_node *b);
nnc_node *nnc_ir_cast(nnc_graph *g, nnc_node *a, nnc_dtype t);
nnc_node *nnc_ir_reduce(nnc_graph *g, nnc_op op, nnc_node *a, uint32_t axes); /* SUM, RMAX */
nnc_node *nnc_ir_argmax(nnc_graph *g, nnc_node *a, int axis);
nnc_node *nnc_ir_reshape(nnc_graph *g, nnc_node *a, const nnc_shape *s);
nnc_node *nnc_ir_transpose(nnc_graph *g, nnc_node *a, const int *perm);
nnc_node *nnc_ir_broadcast(nnc_graph *g, nnc_node *a, const nnc_shape *s);
nnc_node *nnc_ir_matmul(nnc_graph *g, nnc_node *a, nnc_node *b, bool trans_a, bool trans_b);
nnc_node *nnc_ir_im2col(nnc_graph *g, nnc_node *x, const int64_t k[2], const int64_t stride[2],
                        const int64_t pad[2], double pad_value);
nnc_node *nnc_ir_col2im(nnc_graph *g, nnc_node *cols, const nnc_shape *x_shape, const int64_t k[2],
                        const int64_t stride[2], const int64_t pad[2]);
nnc_node *nnc_ir_gather(nnc_graph *g, nnc_node *table, nnc_node *idx);
nnc_node *nnc_ir_scatter_add(nnc_graph *g, nnc_node *dy, nnc_node *idx, int64_t rows);
nnc_node *nnc_ir_onehot(nnc_graph *g, nnc_node *labels, int64_t classes, nnc_dtype t);
nnc_node *nnc_ir_rand(nnc_graph *g, nnc_node *seed, nnc_node *step, const nnc_shape *s, nnc_dtype t,
                      int64_t stream);

/* Low-level: append a node built by hand (used by passes that copy
 * nodes). Shape, dtype, operands and attrs must already be set. */
nnc_node *nnc_ir_append(nnc_graph *g, nnc_node *proto);

void nnc_graph_set_output(nnc_graph *g, nnc_output_kind k, nnc_node *n);
void nnc_graph_add_update(nnc_graph *g, int tensor, nnc_node *value);

/* Output size of a window op along one spatial dim. */
int64_t nnc_ir_window_out(int64_t in, int64_t k, int64_t stride, int64_t pad);

/* ---- Text form, verification ----
 * The printer writes a stable text form: one line per node,
 *   %12 = matmul(%3, %7) {ta=0, tb=1} : f32[64,256]   # mlp.dense1
 * followed by outputs and updates; tensors of the module are listed first. */
void nnc_ir_print_module(FILE *out, const nnc_module *m);
void nnc_ir_print_graph(FILE *out, const nnc_graph *g);

/* Checks the invariants above; on failure writes a message naming the node
 * into err (if non-NULL) and returns false. */
bool nnc_ir_verify(const nnc_graph *g, char *err, size_t errlen);

/* A broken compiler invariant: prints "nnc: internal error: ..." and aborts. */
_Noreturn void nnc_ir_bug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
