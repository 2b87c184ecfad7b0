/* interp.h: the reference interpreter — evaluates a graph in double
 * precision, one node at a time, with the plainest loops that implement each
 * op's definition.
 *
 * It is the oracle of the test suite: the finite-difference gradient checks
 * of every VJP rule run on it, and the LLVM kernels are compared with it.
 * It is not used to train.
 */
#ifndef NNC_INTERP_H
#define NNC_INTERP_H

#include "ir.h"

typedef struct nnc_interp nnc_interp;

/* Buffers (malloc'd, owned by the interpreter) for every node, every
 * persistent tensor of g's module and every input; all zero. NULL on OOM. */
nnc_interp *nnc_interp_new(const nnc_graph *g);
void nnc_interp_free(nnc_interp *in);

/* Value of persistent tensor t: set before run, read after (updates applied). */
double *nnc_interp_tensor(nnc_interp *in, int t);
/* Value of an input (i32 inputs are stored as doubles holding integers). */
double *nnc_interp_input(nnc_interp *in, nnc_input_kind k);
/* ALLREDUCE's sum over ranks: fn(ctx, v, n) replaces v[0..n) by the sum
 * over the ranks of their v, the same on every rank (a test plays the
 * ranks as threads). Without one, ALLREDUCE is the identity (one process). */
typedef void (*nnc_interp_allreduce_fn)(void *ctx, double *v, int64_t n);
void nnc_interp_set_allreduce(nnc_interp *in, nnc_interp_allreduce_fn fn, void *ctx);
/* Evaluates every node in order, then applies the graph's updates. */
void nnc_interp_run(nnc_interp *in);
/* Evaluates only the nodes n depends on, in order; applies no update (the
 * persistent tensors keep their values). For a loss that finite
 * differences evaluate many times in a graph that also holds its gradient. */
void nnc_interp_run_for(nnc_interp *in, const nnc_node *n);
/* A node's value after run, row-major, numel(node->shape) doubles. */
const double *nnc_interp_value(const nnc_interp *in, const nnc_node *n);

#endif
