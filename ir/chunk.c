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
 * With G = 1 (a rank of one micro-batch, whose step must sum as one chunk
 * of the ordinary step) only the sums are rewritten, as [1, d0, ...]:
 * the reduction over the chunk's axes is then the same kernel as the
 * ordinary step's chunk sums (over [d0, ...] its loops differ, and so
 * did its bits).
 * RMAX and ARGMAX need nothing (a maximum is exact in any order).
 * A RAND over the batch (dim 0 the batch: a dropout mask) gets attr[1] = G
 * and leads: micro-batch g's part draws with g's seed and its own index,
 * as the micro-batch step does (ops.def). Not handled (not exact):
 * SCATTER_ADD over the batch (an embedding's gradient).
 *
 * Synchronised statistics (nnc_sync_batch_sums): a rank of a data-parallel
 * step whose batch statistics are shared (batch norm) holds B/N samples,
 * G/N micro-batches; its graph is the global step's at B/N rows with the
 * global batch's constants. Each sum over its batch whose value is used
 * within the step (a batch norm's mean and variance, their backward sums:
 * whatever reaches a per-sample value or a buffer's update) is followed by
 * an ALLREDUCE, which adds the ranks' partials, each the tree of the
 * rank's chunks, as the top of the tree: the global step's sum, bit for
 * bit. Sums that only become gradient outputs (summed by the runtime
 * before the update) or the loss (the runtime adds the per-sample losses)
 * are left to the rank. Not synchronised (not exact): a maximum over the
 * batch (RMAX, ARGMAX over axis 0) used within the step.
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

/* Whether n sums over the batch: a SUM over axis 0 of a leading operand,
 * or a product whose K runs over it. */
static bool sums_batch(const nnc_node *n, const bool *lead) {
  if (n->op == NNC_OP_SUM) return (n->attr[0] & 1) && lead[n->in[0]->id] && n->dtype != NNC_I32;
  return n->op == NNC_OP_MATMUL && contracts_batch(n, lead);
}

/* lead[] of g's nodes (see above); malloc'd, freed by the caller. */
static bool *leading_nodes(const nnc_graph *g, int64_t chunks) {
  bool *lead = calloc((size_t)g->nnodes + 1, sizeof(bool));
  if (!lead) nnc_ir_bug("chunk: out of memory");
  for (int i = 0; i < g->nnodes; i++) /* operands come first */
    lead[i] = leads(g, g->nodes[i], lead, chunks);
  return lead;
}

/* Whether each node's value is used within the step: it reaches a
 * per-sample (leading) value or a buffer's update. Gradient outputs and
 * the loss are not "within". */
static bool *used_within(const nnc_graph *g, const bool *lead) {
  bool *within = calloc((size_t)g->nnodes + 1, sizeof(bool));
  if (!within) nnc_ir_bug("chunk: out of memory");
  for (int i = 0; i < g->nupdates; i++)
    if (g->module->tensors[g->updates[i].tensor].role == NNC_ROLE_BUFFER)
      within[g->updates[i].value->id] = true;
  for (int i = g->nnodes - 1; i >= 0; i--) { /* users come after operands */
    const nnc_node *n = g->nodes[i];
    if (lead[i]) within[i] = true;
    if (within[i])
      for (int k = 0; k < n->nin; k++)
        within[n->in[k]->id] = true;
  }
  return within;
}

/* Whether each node's value reaches a tensor's update. */
static bool *reaches_update(const nnc_graph *g) {
  bool *to = calloc((size_t)g->nnodes + 1, sizeof(bool));
  if (!to) nnc_ir_bug("chunk: out of memory");
  for (int i = 0; i < g->nupdates; i++)
    to[g->updates[i].value->id] = true;
  for (int i = g->nnodes - 1; i >= 0; i--)
    for (int k = 0; k < g->nodes[i]->nin && to[i]; k++)
      to[g->nodes[i]->in[k]->id] = true;
  return to;
}

/* Whether v reaches updates only as gradient outputs, through reshapes
 * (what else it reaches are graph outputs: the loss, which the runtime
 * adds per sample): the rank's part is then the runtime's to add. A
 * gradient computed further from the sum (the simplifier moves a
 * per-channel factor out of a sum) must be added before that. */
static bool direct_gradient(const nnc_graph *g, int n0, const nnc_node *v, const bool *to_update) {
  for (int u = 0; u < g->nupdates; u++)
    if (g->updates[u].value == v && g->module->tensors[g->updates[u].tensor].role != NNC_ROLE_GRAD)
      return false;
  for (int j = 0; j < n0; j++) /* the nodes to_update[] knows */
    for (int k = 0; k < g->nodes[j]->nin; k++)
      if (g->nodes[j]->in[k] == v && to_update[j] &&
          (g->nodes[j]->op != NNC_OP_RESHAPE || !direct_gradient(g, n0, g->nodes[j], to_update)))
        return false;
  return true;
}

/* Marks the GRAD tensors whose value depends on an ALLREDUCE other than
 * through per-sample values: the whole batch's gradient on every rank. */
static void mark_synced(nnc_graph *g, const bool *lead) {
  bool *global = calloc((size_t)g->nnodes + 1, sizeof(bool));
  if (!global) nnc_ir_bug("chunk: out of memory");
  for (int i = 0; i < g->nnodes; i++) { /* operands come first */
    const nnc_node *n = g->nodes[i];
    global[i] = n->op == NNC_OP_ALLREDUCE;
    for (int k = 0; k < n->nin && !global[i]; k++)
      global[i] = global[n->in[k]->id] && !lead[n->in[k]->id];
  }
  for (int u = 0; u < g->nupdates; u++) {
    nnc_tensor *t = &g->module->tensors[g->updates[u].tensor];
    if (t->role == NNC_ROLE_GRAD) t->synced = global[g->updates[u].value->id];
  }
  free(global);
}

int nnc_sync_batch_sums(nnc_graph *g, int64_t chunks) {
  if (!g || chunks < 1) return 0;
  int n0 = g->nnodes, inserted = 0;
  bool *lead = leading_nodes(g, chunks);
  bool *within = used_within(g, lead), *to_update = reaches_update(g);
  for (int i = 0; i < n0; i++) {
    nnc_node *s = g->nodes[i];
    if (!sums_batch(s, lead) || (!within[i] && direct_gradient(g, n0, s, to_update))) continue;
    nnc_node *all = nnc_ir_unary(g, NNC_OP_ALLREDUCE, s);
    for (int j = 0; j < n0; j++) /* every reader of s reads the ranks' sum */
      for (int k = 0; k < g->nodes[j]->nin; k++)
        if (g->nodes[j]->in[k] == s) g->nodes[j]->in[k] = all;
    for (int u = 0; u < g->nupdates; u++)
      if (g->updates[u].value == s) g->updates[u].value = all;
    inserted++;
  }
  free(within);
  free(to_update);
  free(lead);
  if (inserted) {
    nnc_ir_topo_sort(g); /* new ids: lead[] again */
    lead = leading_nodes(g, chunks);
    mark_synced(g, lead);
    free(lead);
  }
  return inserted;
}

bool nnc_chunk_draws_exact(const nnc_graph *g, int64_t chunks) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == NNC_OP_RAND && !rand_over_batch(g, g->nodes[i], chunks)) return false;
  return true;
}

void nnc_chunk_batch_sums(nnc_graph *g, int64_t chunks) {
  if (!g || chunks < 1 || (chunks & (chunks - 1))) return;
  int n0 = g->nnodes;
  bool *lead = leading_nodes(g, chunks);
  bool appended = false;
  for (int i = 0; i < n0; i++) {
    nnc_node *n = g->nodes[i];
    if (n->op == NNC_OP_MATMUL && sums_batch(n, lead) && chunks > 1) n->attr[2] = chunks;
    if (n->op == NNC_OP_RAND && lead[n->id] && chunks > 1) n->attr[1] = chunks;
    if (n->op == NNC_OP_SUM && sums_batch(n, lead)) {
      chunk_sum(g, n, chunks);
      appended = true;
    }
  }
  free(lead);
  if (appended) nnc_ir_topo_sort(g);
}
