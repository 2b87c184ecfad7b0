/* chunk.c: the training step's sums over the batch, in the data-parallel
 * step's order (nnc_chunk_batch_sums, passes.h; docs/distributed.md).
 *
 * The data-parallel step computes each micro-batch's gradient on its own
 * (a step compiled at b = B / G samples) and the runtime adds the G
 * gradients as a pairwise tree. For the ordinary step at B samples to give
 * the same bits, each of its sums over the batch must be those G sums
 * added as that tree. Which values carry the batch: a value "leads" when
 * its flat (row-major) order has the sample outermost and its dim 0 splits
 * into G equal parts; then part g of dim 0 is exactly micro-batch g's
 * slice. The inputs x and y lead; elementwise ops, reductions and argmax
 * that keep axis 0, reshapes whose dim 0 still splits, transposes that
 * keep axis 0, products' rows, im2col's rows and col2im's images, gathers
 * and one-hots at leading indices lead too.
 *
 * Rewritten, after simplification:
 *  - a MATMUL whose K runs over a leading operand gets attr[2] = G, which
 *    codegen honours (nnc_cg_gemm.chunks: each chunk summed as the
 *    product at K / G sums it, the chunk sums added as the tree);
 *  - a SUM over axis 0 of a leading operand x [d0, ...] becomes
 *    sum over axis 1 of x as [G, d0/G, ...] (each chunk from zero in the
 *    order the micro-batch's sum adds), then log2(G) levels of
 *    [n, ...] as [n/2, 2, ...] summed over axis 1: 0 + a + b, that is
 *    a + b, so level by level ((c0 + c1) + (c2 + c3)).
 * RMAX and ARGMAX need nothing (a maximum is exact in any order).
 * A RAND over the batch (dim 0 the batch: a dropout mask) gets attr[1] = G
 * and leads: micro-batch g's part draws with g's seed and its own index,
 * as the micro-batch step does (ops.def). Not handled (not exact):
 * SCATTER_ADD over the batch (an embedding's gradient).
 */
#include "passes.h"

#include <stdlib.h>

/* Whether dim 0 of n splits into `chunks` micro-batch slices. */
static bool splits(const nnc_node *n, int64_t chunks) {
  return n->shape.rank >= 1 && n->shape.dim[0] % chunks == 0;
}

/* Whether the RAND n draws over the batch: its dim 0 is x's (the batch)
 * and splits into the micro-batches. */
static bool rand_over_batch(const nnc_graph *g, const nnc_node *n, int64_t chunks) {
  const nnc_node *x = g->inputs[NNC_IN_X];
  return x && x->shape.rank >= 1 && splits(n, chunks) && n->shape.dim[0] == x->shape.dim[0];
}

/* Whether n leads (see above), from its operands' lead[]. */
static bool leads(const nnc_graph *g, const nnc_node *n, const bool *lead, int64_t chunks) {
  if (!splits(n, chunks)) return false;
  const nnc_node *a = n->nin > 0 ? n->in[0] : NULL;
  switch (nnc_op_class_of(n->op)) {
  case NNC_CLASS_LEAF:
    return n->op == NNC_OP_INPUT &&
           (n->attr[0] == NNC_IN_X || n->attr[0] == NNC_IN_Y); /* params, consts: no */
  case NNC_CLASS_UNARY: return lead[a->id];
  case NNC_CLASS_BINARY:
  case NNC_CLASS_CMP:
    for (int i = 0; i < n->nin; i++) /* a leading operand of the full dim 0 */
      if (lead[n->in[i]->id] && n->in[i]->shape.dim[0] == n->shape.dim[0]) return true;
    return false;
  case NNC_CLASS_REDUCE: return lead[a->id] && !(n->attr[0] & 1);
  case NNC_CLASS_SHAPE:
    if (n->op == NNC_OP_TRANSPOSE) return lead[a->id] && n->attr[0] == 0;
    if (n->op == NNC_OP_BROADCAST) return lead[a->id] && a->shape.dim[0] == n->shape.dim[0];
    return lead[a->id]; /* reshape: the flat order is kept */
  case NNC_CLASS_OTHER: break;
  }
  /* the other ops of class OTHER; SCATTER_ADD (a sum over the batch) does
   * not lead */
  if (n->op == NNC_OP_SELECT) {
    for (int i = 0; i < 3; i++)
      if (lead[n->in[i]->id] && n->in[i]->shape.dim[0] == n->shape.dim[0]) return true;
    return false;
  }
  if (n->op == NNC_OP_ARGMAX) return lead[a->id] && n->attr[0] != 0;
  if (n->op == NNC_OP_MATMUL) return !n->attr[0] && lead[a->id]; /* C's rows are A's */
  /* im2col's rows (n, oh, ow), col2im's images of rows (n, ...) */
  if (n->op == NNC_OP_IM2COL || n->op == NNC_OP_COL2IM || n->op == NNC_OP_ONEHOT)
    return lead[a->id];
  if (n->op == NNC_OP_GATHER) return lead[n->in[1]->id];
  if (n->op == NNC_OP_RAND) return rand_over_batch(g, n, chunks);
  return false;
}

/* Whether the product n contracts over the batch: its K runs along a
 * leading operand's dim 0 (A stored [K,M], or B [K,N]). */
static bool contracts_batch(const nnc_node *n, const bool *lead) {
  return (n->attr[0] && lead[n->in[0]->id]) || (!n->attr[1] && lead[n->in[1]->id]);
}

static nnc_node *reshaped(nnc_graph *g, nnc_node *x, int rank, const int64_t *dims) {
  nnc_shape s = {rank, {0}};
  for (int d = 0; d < rank; d++)
    s.dim[d] = dims[d];
  return nnc_ir_reshape(g, x, &s);
}

/* The sum n over axis 0 (and maybe others) of a leading x, as the chunk
 * sums added as a tree; n becomes a reshape of the result (keeping its id
 * and users). */
static void chunk_sum(nnc_graph *g, nnc_node *n, int64_t chunks) {
  nnc_node *x = n->in[0];
  int r = x->shape.rank;
  if (r + 1 > NNC_MAX_RANK) return; /* no room for the chunk axis: left as it is */
  int64_t dims[NNC_MAX_RANK];
  dims[0] = chunks;
  dims[1] = x->shape.dim[0] / chunks;
  for (int d = 1; d < r; d++)
    dims[d + 1] = x->shape.dim[d];
  nnc_node *t = nnc_ir_reduce(g, NNC_OP_SUM, reshaped(g, x, r + 1, dims),
                              (uint32_t)n->attr[0] << 1); /* [chunks, 1, ...] */
  /* the tree over dim 0: [c, rest] as [c/2, 2, rest], summed over axis 1 */
  for (int64_t c = chunks; c > 1; c /= 2) {
    dims[0] = c / 2;
    dims[1] = 2;
    for (int d = 1; d < r; d++)
      dims[d + 1] = n->shape.dim[d];
    t = nnc_ir_reduce(g, NNC_OP_SUM, reshaped(g, t, r + 1, dims), 2u);
  }
  nnc_node *out = nnc_ir_reshape(g, t, &n->shape);
  n->op = out->op;
  n->nin = out->nin;
  n->in = out->in;
  n->attr[0] = 0;
}

bool nnc_chunk_draws_exact(const nnc_graph *g, int64_t chunks) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == NNC_OP_RAND && !rand_over_batch(g, g->nodes[i], chunks)) return false;
  return true;
}

void nnc_chunk_batch_sums(nnc_graph *g, int64_t chunks) {
  if (!g || chunks < 2 || (chunks & (chunks - 1))) return;
  int n0 = g->nnodes;
  bool *lead = calloc((size_t)n0 + 1, sizeof(bool));
  if (!lead) nnc_ir_bug("chunk: out of memory");
  for (int i = 0; i < n0; i++) /* operands come first */
    lead[i] = leads(g, g->nodes[i], lead, chunks);
  bool appended = false;
  for (int i = 0; i < n0; i++) {
    nnc_node *n = g->nodes[i];
    if (n->op == NNC_OP_MATMUL && contracts_batch(n, lead)) n->attr[2] = chunks;
    if (n->op == NNC_OP_RAND && lead[n->id]) n->attr[1] = chunks;
    if (n->op == NNC_OP_SUM && (n->attr[0] & 1) && lead[n->in[0]->id] && n->dtype != NNC_I32) {
      chunk_sum(g, n, chunks);
      appended = true;
    }
  }
  free(lead);
  if (appended) nnc_ir_topo_sort(g);
}
