/* lower.c: graph IR -> kernel IR, the driver.
 *
 * Takes a module's train and eval graphs, gives every persistent tensor,
 * input and output a buffer, and turns each graph into a list of kernels
 * (kernel.h) in an order that respects its dependences; plan.c then places
 * the buffers, llvm.c emits the kernels. lower_graph below is the list of
 * passes in order, each in a file of its own (lower_internal.h lists
 * them): liveness and users, update groups, product epilogues, max
 * pooling's maximum and argmax as one kernel, direct convolutions, what gets
 * memory, which 2-D nodes are stored transposed, max pooling's gradient
 * folded into its reader, buffers, one kernel per node that has one, output
 * copies, the update passes. Which kernel a node gets follows ops.def's LOWERING column (kernel_for
 * below spells out every op).
 */
#include <stdio.h>
#include <string.h>

#include "lower_internal.h"

bool nnc_lw_fail(lower *L, const char *msg, const nnc_node *n) {
  snprintf(L->err, L->errlen, "codegen: %s (graph %s, node %%%d %s)", msg, L->g->name,
           n ? n->id : -1, n ? nnc_op_name(n->op) : "");
  return false;
}

static void mark_live(lower *L, const nnc_node *n) {
  if (L->live[n->id]) return;
  L->live[n->id] = true;
  for (int i = 0; i < n->nin; i++)
    mark_live(L, n->in[i]);
}

void nnc_lw_add_user(lower *L, const nnc_node *n, nnc_node *user) {
  int id = n->id;
  for (int i = 0; i < L->nusers[id]; i++)
    if (L->users[id][i] == user) return;
  L->users[id] = nnc_arena_grow(L->a, L->users[id], sizeof(nnc_node *) * (size_t)L->nusers[id],
                                sizeof(nnc_node *) * (size_t)(L->nusers[id] + 1));
  L->users[id][L->nusers[id]++] = user;
}

/* The kernel of a node that has one (ST_KERNEL). */
static void kernel_for(lower *L, const nnc_node *n) {
  switch (n->op) {
  case NNC_OP_SUM:
  case NNC_OP_RMAX: nnc_lw_kernel_reduce(L, n); return;
  case NNC_OP_ARGMAX: nnc_lw_kernel_argmax(L, n); return;
  case NNC_OP_IM2COL: nnc_lw_kernel_im2col(L, n); return;
  case NNC_OP_COL2IM: nnc_lw_kernel_col2im(L, n); return;
  case NNC_OP_SCATTER_ADD: nnc_lw_kernel_scatter_add(L, n); return;
  case NNC_OP_MATMUL:
    if (L->conv_dw_in[n->id][0])
      nnc_lw_kernel_conv_dw(L, n);
    else
      nnc_lw_kernel_matmul(L, n);
    return;
  case NNC_OP_ALLREDUCE: /* a copy of its operand (in memory), then the hook */
    nnc_lw_kernel_elementwise(L, n);
    L->kg->k[L->kg->n - 1]->allreduce = n->dtype == NNC_F32; /* f64: the identity */
    return;
  /* inline ops stored for their readers: a loop nest over the node's
   * elements, or the end of a product's epilogue chain (bias, ReLU) */
  case NNC_OP_CONST:
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
  case NNC_OP_FLOOR:
  case NNC_OP_CAST:
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ:
  case NNC_OP_SELECT:
  case NNC_OP_TRANSPOSE:
  case NNC_OP_BROADCAST:
  case NNC_OP_GATHER:
  case NNC_OP_ONEHOT:
  case NNC_OP_RAND:
    if (L->final[n->id] == n)
      nnc_lw_kernel_matmul(L, n);
    else
      nnc_lw_kernel_elementwise(L, n);
    return;
  /* memory of their own, or views of it: no kernel */
  case NNC_OP_INPUT:
  case NNC_OP_PARAM:
  case NNC_OP_RESHAPE:
  case NNC_OP_COUNT_: break;
  }
  nnc_ir_bug("codegen: %s gets no kernel", nnc_op_name(n->op));
}

/* Fresh state for lowering g into kg: every per-node array allocated. */
static void init_state(lower *L, nnc_kprog *p, const nnc_graph *g, nnc_kgraph *kg, char *err,
                       size_t errlen) {
  memset(L, 0, sizeof *L);
  L->p = p;
  L->a = p->arena;
  L->g = g;
  L->kg = kg;
  L->nn = g->nnodes;
  L->err = err;
  L->errlen = errlen;
  kg->name = g->name;
  size_t nn = (size_t)g->nnodes + 1;
  L->live = nnc_arena_alloc(L->a, nn);
  L->force = nnc_arena_alloc(L->a, nn);
  L->ident = nnc_arena_alloc(L->a, nn);
  L->recompute = nnc_arena_alloc(L->a, nn);
  L->out_kind = nnc_arena_alloc(L->a, sizeof(int) * nn);
  L->is_update = nnc_arena_alloc(L->a, sizeof(int) * nn);
  L->users = nnc_arena_alloc(L->a, sizeof(nnc_node **) * nn);
  L->nusers = nnc_arena_alloc(L->a, sizeof(int) * nn);
  L->st = nnc_arena_alloc(L->a, sizeof(node_state) * nn);
  L->root = nnc_arena_alloc(L->a, sizeof(int) * nn);
  L->buf = nnc_arena_alloc(L->a, sizeof(int) * nn);
  L->final = nnc_arena_alloc(L->a, sizeof(nnc_node *) * nn);
  L->subst = nnc_arena_alloc(L->a, sizeof(nnc_node *) * nn);
  L->trans = nnc_arena_alloc(L->a, nn);
  L->index_of = nnc_arena_alloc(L->a, sizeof(nnc_node *) * nn);
  L->saved_by = nnc_arena_alloc(L->a, sizeof(nnc_node *) * nn);
  L->unpool_of = nnc_arena_alloc(L->a, sizeof(nnc_node *) * nn);
  L->lanes_with = nnc_arena_alloc(L->a, sizeof(nnc_node *) * nn);
  L->conv = nnc_arena_alloc(L->a, sizeof(nnc_lw_conv *) * nn);
  L->conv_dw_in = nnc_arena_alloc(L->a, sizeof(*L->conv_dw_in) * nn);
  for (size_t i = 0; i < nn; i++) {
    L->out_kind[i] = -1;
    L->buf[i] = -1;
    L->root[i] = -1;
  }
}

/* Liveness from the outputs and updates, and each live node's readers. */
static void find_users(lower *L) {
  const nnc_graph *g = L->g;
  for (int o = NNC_OUT_COUNT_ - 1; o >= 0; o--)
    if (g->outputs[o]) {
      mark_live(L, g->outputs[o]);
      L->out_kind[g->outputs[o]->id] = o;
    }
  for (int u = 0; u < g->nupdates; u++) {
    mark_live(L, g->updates[u].value);
    L->is_update[g->updates[u].value->id]++;
  }
  for (int i = 0; i < g->nnodes; i++) {
    nnc_node *n = g->nodes[i];
    if (!L->live[i]) continue;
    for (int j = 0; j < n->nin; j++)
      nnc_lw_add_user(L, n->in[j], n);
  }
}

/* One kernel for each node that has one, in graph order (a saved argmax
 * index is stored by its window max's kernel). */
static void node_kernels(lower *L) {
  for (int i = 0; i < L->nn; i++)
    if (L->st[i] == ST_KERNEL && L->conv[i])
      nnc_lw_kernel_conv(L, L->g->nodes[i]);
    else if (L->st[i] == ST_KERNEL && !L->saved_by[i])
      kernel_for(L, L->g->nodes[i]);
}

/* The passes, in order. */
static bool lower_graph(nnc_kprog *p, const nnc_graph *g, nnc_kgraph *kg, char *err,
                        size_t errlen) {
  lower L;
  init_state(&L, p, g, kg, err, errlen);
  find_users(&L);
  nnc_lw_assign_groups(&L);
  nnc_lw_match_epilogues(&L);
  nnc_lw_match_window_argmax(&L);
  nnc_lw_match_conv(&L);
  nnc_lw_match_conv_dw(&L);
  nnc_lw_decide(&L);
  nnc_lw_choose_layouts(&L);
  nnc_lw_match_unpool_readers(&L);
  if (!nnc_lw_assign_buffers(&L)) return false;
  nnc_lw_match_lane_twins(&L);
  node_kernels(&L);
  if (!nnc_lw_output_copies(&L)) return false;
  return nnc_lw_update_passes(&L);
}

bool nnc_cg_lower(nnc_kprog *p, const nnc_module *m, char *err, size_t errlen) {
  p->module = m;
  p->comm_off = -1; /* plan.c places the hook if a kernel all-reduces */
  p->tensor_bufs = nnc_arena_alloc(p->arena, sizeof(int) * (size_t)(m->ntensors + 1));
  for (int i = 0; i < NNC_IN_COUNT_; i++)
    p->input_buf[i] = -1;
  for (int i = 0; i < NNC_OUT_COUNT_; i++)
    p->output_buf[i] = -1;
  for (int t = 0; t < m->ntensors; t++) {
    const nnc_tensor *ts = &m->tensors[t];
    p->tensor_bufs[t] = nnc_kprog_add_buf(p, NNC_KBUF_TENSOR, t, nnc_kt_of(ts->dtype),
                                          nnc_shape_numel(&ts->shape), ts->name);
  }
  if (m->train) {
    p->has_train = true;
    if (!lower_graph(p, m->train, &p->train, err, errlen)) return false;
  }
  if (m->eval) {
    p->has_eval = true;
    if (!lower_graph(p, m->eval, &p->eval, err, errlen)) return false;
  }
  /* After train and eval: the micro-batch graph's x, y, loss_vec and
   * correct_vec are prefixes of theirs (nnc_lw_assign_buffers). */
  if (m->grad) {
    p->has_grad = true;
    if (!lower_graph(p, m->grad, &p->grad, err, errlen)) return false;
  }
  if (m->update) {
    p->has_update = true;
    if (!lower_graph(p, m->update, &p->update, err, errlen)) return false;
  }
  if (m->grad_half) {
    p->has_grad_half = true;
    if (!lower_graph(p, m->grad_half, &p->grad_half, err, errlen)) return false;
  }
  return true;
}
