/* passes.h: graph-level passes, run in this order by the driver's pass list
 * (which verifies and dumps the IR after each, NNC_DEBUG / NNC_DUMP_AFTER):
 *
 *   front end      builds m->train (forward, loss) and m->eval
 *   nnc_build_training   penalties -> autodiff -> clipping -> schedule -> update
 *   nnc_simplify         constant folding, algebraic simplification, CSE, DCE
 *
 * Each returns false with a message in err on failure (an error a user can
 * cause, e.g. a loss that does not depend on any trainable parameter).
 */
#ifndef NNC_PASSES_H
#define NNC_PASSES_H

#include "ir.h"

/* Reverse-mode autodiff (autodiff.c). Appends to g the gradient of the
 * rank-0 node y with respect to each node of wrt[0..n); grads[i] is NULL
 * where y does not depend on wrt[i]. Only nodes on a path from a wrt node
 * to y get adjoints: no work for the input's gradient or frozen weights. */
void nnc_ad_grad(nnc_graph *g, nnc_node *y, nnc_node *const *wrt, int n, nnc_node **grads);

/* Turns m->train into a full training step from m->config (optim.c):
 * adds l1/l2 penalties to the loss, differentiates it with respect to every
 * NNC_ROLE_PARAM tensor, clips gradients (global norm, value), computes the
 * learning rate from the schedule on the STEP/EPOCH inputs (output
 * NNC_OUT_LR), creates optimizer-state tensors (role NNC_ROLE_OPT_STATE,
 * named "<opt>.<slot>.<param name>", e.g. "adam.m.mlp.dense1.weight"), and
 * adds one update per parameter and state tensor. */
bool nnc_build_training(nnc_module *m, char *err, size_t errlen);

/* Data-parallel training (optim.c): from m->grad, the training graph of one
 * micro-batch (config.batch / m->micro_batches samples), builds the
 * gradient step (gradients stored into tensors of role NNC_ROLE_GRAD,
 * "grad.<param name>") and m->update (clipping, schedule, optimizer on
 * those tensors). Run after nnc_build_training, whose optimizer-state
 * tensors it shares. */
bool nnc_build_data_parallel(nnc_module *m, char *err, size_t errlen);

/* The per-step scalars nnc_build_training uses, appended to g on its
 * STEP/EPOCH inputs, each computed in f64 and rounded once to t: out[0] the
 * learning rate, and for adam/adamw out[1] = lr / (1 - beta1^step) and
 * out[2] = sqrt(1 - beta2^step) (NULL otherwise). For tests that check
 * them over many steps against double arithmetic. */
bool nnc_optim_step_scalars(nnc_module *m, nnc_graph *g, nnc_dtype t, nnc_node *out[3], char *err,
                            size_t errlen);

/* Simplifies a graph in place (simplify.c): folds constants, removes
 * identities (x*1, x+0, reshape to the same shape), merges common
 * subexpressions and drops nodes no output or update needs. Renumbers nodes. */
void nnc_simplify(nnc_graph *g);

/* Puts g's nodes in an order where operands come first (nodes appended by
 * a rewrite go before their users), keeping an ordered graph's order, and
 * renumbers them (simplify.c). */
void nnc_ir_topo_sort(nnc_graph *g);

/* Makes the training step g reduce over the batch as the data-parallel
 * step does (chunk.c, docs/distributed.md): every sum over the batch axis
 * (a SUM over axis 0, a MATMUL whose K runs over the batch) becomes `chunks`
 * sums over consecutive micro-batches of samples, each summed as a step of
 * that micro-batch alone sums it, added as the runtime adds the
 * micro-batches' gradients: the pairwise tree (c0 + c1) + (c2 + c3).
 * chunks must be a power of two; 1 (a rank step of one micro-batch)
 * rewrites the sums over axis 0 alone, as sums over [1, d0, ...]: the form,
 * and so the kernels, of one chunk of the ordinary step's. Run after
 * nnc_simplify. */
void nnc_chunk_batch_sums(nnc_graph *g, int64_t chunks);
/* Makes g a rank's step of a data-parallel step with synchronised batch
 * statistics (chunk.c): after each sum over the batch whose value is used
 * within the step (batch norm's statistics and their backward sums), an
 * ALLREDUCE, every reader reading it. g is the global step at B/N rows,
 * with the global batch's constants; `chunks` its micro-batches (G/N).
 * Run after nnc_simplify, before nnc_chunk_batch_sums. Returns the number
 * of ALLREDUCEs inserted. */
int nnc_sync_batch_sums(nnc_graph *g, int64_t chunks);
/* Whether every random mask of g draws over the batch (dim 0 the batch),
 * so that nnc_chunk_batch_sums can make it draw per micro-batch as the
 * data-parallel step does. */
bool nnc_chunk_draws_exact(const nnc_graph *g, int64_t chunks);

#endif
