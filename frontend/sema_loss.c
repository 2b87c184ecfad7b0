/* sema_loss.c: the trained model's graphs — inputs, forward pass, loss and
 * outputs — built into the module.
 *
 * Takes the checked training configuration and model; gives m->train and
 * m->eval, each built from scratch over the same tensor table:
 *
 *   X  f32[batch, ...sample]          (input x)
 *   Y  i32[batch] for cross_entropy, else f32[batch, ...output]  (input y)
 *   pred = model(X)                    training mode / evaluation mode
 *   loss_vec f32[batch]                per-sample loss
 *   loss     f32[]                     mean (or sum) over the batch
 *   correct_vec f32[batch]             classification only
 *
 * Penalties, gradients and updates are not added here: ir/optim.c appends
 * them to m->train from m->config. Batch-norm running statistics are the
 * only updates the front end writes.
 */
#include <fnmatch.h>
#include <string.h>

#include "sema_internal.h"

typedef struct loss_ctx {
  nnc_lower *L;
  nnc_graph *g;
  int64_t batch;
} loss_ctx;

static nnc_node *cst(loss_ctx *c, double v) {
  return nnc_ir_const(c->g, NNC_F32, v);
}
static nnc_node *bin(loss_ctx *c, nnc_op op, nnc_node *a, nnc_node *b) {
  return nnc_ir_binary(c->g, op, a, b);
}

/* Mean over every axis but the batch: [B, ...] -> [B]. */
static nnc_node *per_sample_mean(loss_ctx *c, nnc_node *x) {
  nnc_shape vec = {1, {c->batch}};
  if (x->shape.rank == 1) return x;
  uint32_t axes = 0;
  for (int i = 1; i < x->shape.rank; i++)
    axes |= 1u << i;
  int64_t count = nnc_shape_numel(&x->shape) / c->batch;
  nnc_node *s = nnc_ir_reduce(c->g, NNC_OP_SUM, x, axes);
  if (count != 1) s = bin(c, NNC_OP_MUL, s, cst(c, 1.0 / (double)count));
  return nnc_ir_reshape(c->g, s, &vec);
}

/* cross_entropy(z, y) = -log_softmax(z)[y]
 *   = -sum_k onehot(y)_k (z_k - max z - log sum_j exp(z_j - max z)) */
static nnc_node *cross_entropy(loss_ctx *c, nnc_node *z, nnc_node *y) {
  int64_t k = z->shape.dim[1];
  nnc_node *m = nnc_ir_reduce(c->g, NNC_OP_RMAX, z, 2u);
  nnc_node *sh = bin(c, NNC_OP_SUB, z, m);
  nnc_node *lse = nnc_ir_unary(
      c->g, NNC_OP_LOG, nnc_ir_reduce(c->g, NNC_OP_SUM, nnc_ir_unary(c->g, NNC_OP_EXP, sh), 2u));
  nnc_node *logp = bin(c, NNC_OP_SUB, sh, lse);
  nnc_node *picked = nnc_ir_reduce(
      c->g, NNC_OP_SUM, bin(c, NNC_OP_MUL, nnc_ir_onehot(c->g, y, k, NNC_F32), logp), 2u);
  nnc_shape vec = {1, {c->batch}};
  return nnc_ir_unary(c->g, NNC_OP_NEG, nnc_ir_reshape(c->g, picked, &vec));
}

/* bce(z, t) = max(z, 0) - z t + log(1 + exp(-|z|)), stable for any z,
 * with max(z, 0) written (z + |z|) / 2: the same value, and at z = 0 (where
 * a zero-initialised model starts) the gradient is the true 1/2 - t, since
 * d|z| = sign(0) = 0 there; max's tie rule would give 1 - t. */
static nnc_node *bce(loss_ctx *c, nnc_node *z, nnc_node *t) {
  nnc_node *e = nnc_ir_unary(c->g, NNC_OP_EXP,
                             nnc_ir_unary(c->g, NNC_OP_NEG, nnc_ir_unary(c->g, NNC_OP_ABS, z)));
  nnc_node *soft = nnc_ir_unary(c->g, NNC_OP_LOG, bin(c, NNC_OP_ADD, e, cst(c, 1.0)));
  nnc_node *pos =
      bin(c, NNC_OP_MUL, bin(c, NNC_OP_ADD, z, nnc_ir_unary(c->g, NNC_OP_ABS, z)), cst(c, 0.5));
  nnc_node *l = bin(c, NNC_OP_ADD, bin(c, NNC_OP_SUB, pos, bin(c, NNC_OP_MUL, z, t)), soft);
  return per_sample_mean(c, l);
}

static nnc_node *loss_vec(loss_ctx *c, nnc_loss_kind kind, nnc_node *pred, nnc_node *y) {
  switch (kind) {
  case NNC_LOSS_CROSS_ENTROPY: return cross_entropy(c, pred, y);
  case NNC_LOSS_BINARY_CROSS_ENTROPY: return bce(c, pred, y);
  case NNC_LOSS_MSE: {
    nnc_node *d = bin(c, NNC_OP_SUB, pred, y);
    return per_sample_mean(c, bin(c, NNC_OP_MUL, d, d));
  }
  case NNC_LOSS_MAE:
    return per_sample_mean(c, nnc_ir_unary(c->g, NNC_OP_ABS, bin(c, NNC_OP_SUB, pred, y)));
  }
  nnc_ir_bug("unknown loss %d", (int)kind);
}

/* 1.0 where the prediction is right: argmax for cross_entropy, z > 0 for
 * binary cross-entropy (averaged over outputs). */
static nnc_node *correct_vec(loss_ctx *c, nnc_loss_kind kind, nnc_node *pred, nnc_node *y) {
  nnc_shape vec = {1, {c->batch}};
  if (kind == NNC_LOSS_CROSS_ENTROPY) {
    nnc_node *am = nnc_ir_reshape(c->g, nnc_ir_argmax(c->g, pred, 1), &vec);
    return bin(c, NNC_OP_EQ, am, nnc_ir_cast(c->g, y, NNC_F32));
  }
  nnc_node *guess = bin(c, NNC_OP_GT, pred, cst(c, 0.0));
  return per_sample_mean(c, bin(c, NNC_OP_EQ, guess, y));
}

/* The loss must fit the model's output; reported at `loss = ...`. */
static bool check_loss(nnc_sema *s, const nnc_shape *out) {
  const char *model = s->train_model->str;
  char buf[160];
  nnc_shape_str(buf, sizeof buf, NNC_F32, out);
  if (s->cfg.loss != NNC_LOSS_CROSS_ENTROPY) return true;
  if (out->rank != 1) {
    nnc_sema_error(s, s->loss_at,
                   "cross_entropy needs class scores f32[classes], but model '%s' "
                   "returns %s; flatten() them first",
                   model, buf);
    return false;
  }
  if (out->dim[0] < 2) {
    nnc_sema_error(s, s->loss_at,
                   "cross_entropy needs at least 2 classes, but model '%s' returns "
                   "%s; use binary_cross_entropy for one output",
                   model, buf);
    return false;
  }
  return true;
}

static bool build_graph(nnc_sema *s, nnc_module *m, const char *name, bool training,
                        const nnc_shape *out_shape) {
  nnc_lower L;
  memset(&L, 0, sizeof L);
  L.s = s;
  L.m = m;
  L.g = nnc_graph_new(m, name);
  L.training = training;
  L.batch = !training && s->eval_batch > 0 ? s->eval_batch : s->cfg.batch;
  int64_t b = L.batch;
  nnc_shape xs = {m->sample_shape.rank + 1, {b}};
  for (int i = 0; i < m->sample_shape.rank; i++)
    xs.dim[i + 1] = m->sample_shape.dim[i];
  nnc_node *x = nnc_ir_input(L.g, NNC_IN_X, m->sample_dtype, &xs);
  nnc_node *y;
  if (s->cfg.loss == NNC_LOSS_CROSS_ENTROPY) {
    nnc_shape ys = {1, {b}};
    y = nnc_ir_input(L.g, NNC_IN_Y, NNC_I32, &ys);
  } else {
    nnc_shape ys = {out_shape->rank + 1, {b}};
    for (int i = 0; i < out_shape->rank; i++)
      ys.dim[i + 1] = out_shape->dim[i];
    y = nnc_ir_input(L.g, NNC_IN_Y, NNC_F32, &ys);
  }
  x->span = y->span = s->train_model->name_span;
  nnc_value in = {x, true, false, 0};
  s->quiet++; /* checked and reported in pass 1 */
  nnc_value pred = nnc_lower_model(&L, s->train_model, s->train_model->str, &in, 1);
  s->quiet--;
  if (!pred.node || L.failed) return false;
  loss_ctx c = {&L, L.g, b};
  int mark = L.g->nnodes;
  nnc_node *lv = loss_vec(&c, s->cfg.loss, pred.node, y);
  nnc_node *total = nnc_ir_reduce(L.g, NNC_OP_SUM, lv, 1u);
  nnc_shape scalar = {0, {0}};
  total = nnc_ir_reshape(L.g, total, &scalar);
  if (s->cfg.reduction == NNC_REDUCE_MEAN)
    total = bin(&c, NNC_OP_MUL, total, cst(&c, 1.0 / (double)b));
  nnc_lower_tag(&L, mark, s->loss_at, "loss");
  nnc_graph_set_output(L.g, NNC_OUT_PRED, pred.node);
  nnc_graph_set_output(L.g, NNC_OUT_LOSS_VEC, lv);
  nnc_graph_set_output(L.g, NNC_OUT_LOSS, total);
  if (s->cfg.loss == NNC_LOSS_CROSS_ENTROPY || s->cfg.loss == NNC_LOSS_BINARY_CROSS_ENTROPY) {
    mark = L.g->nnodes;
    nnc_graph_set_output(L.g, NNC_OUT_CORRECT_VEC, correct_vec(&c, s->cfg.loss, pred.node, y));
    nnc_lower_tag(&L, mark, s->loss_at, "accuracy");
  }
  if (training)
    m->train = L.g;
  else
    m->eval = L.g;
#ifdef NNC_DEBUG_CHECKS
  char err[256];
  if (!nnc_ir_verify(L.g, err, sizeof err)) nnc_ir_bug("front end built a bad graph: %s", err);
#endif
  return true;
}

/* One pattern that must match some tensor of m; reported at `at`. */
static bool check_pattern(nnc_sema *s, nnc_module *m, const char *p, nnc_span at) {
  for (int t = 0; t < m->ntensors; t++)
    if (fnmatch(p, m->tensors[t].name, 0) == 0) return true;
  nnc_sema_error(s, at, "pattern '%s' matches no parameter of model '%s'", p, m->name);
  if (m->ntensors)
    nnc_sema_note(s, s->train_model->name_span, "its parameters are named like '%s'",
                  m->tensors[0].name);
  return false;
}

/* Every freeze/group/load pattern must name some tensor: a typo here would
 * silently train (or not train, or not load) the wrong weights. */
static bool check_patterns(nnc_sema *s, nnc_module *m) {
  bool ok = true;
  for (int g = 0; g < s->cfg.ngroups; g++)
    for (int k = 0; k < s->cfg.groups[g].npatterns; k++)
      ok &= check_pattern(s, m, s->cfg.groups[g].patterns[k], s->pattern_at[g][k]);
  for (int k = 0; k < s->cfg.load.nonly; k++)
    ok &= check_pattern(s, m, s->cfg.load.only[k], s->load_only_at[k]);
  return ok;
}

bool nnc_sema_build(nnc_sema *s) {
  const nnc_ast *model = s->train_model;
  nnc_module *m = nnc_module_new(s->arena, model->str);
  m->config = s->cfg;
  nnc_shape out;
  nnc_dtype out_t;
  if (!nnc_lower_type(s, model->list.items[0]->type, &m->sample_dtype, &m->sample_shape) ||
      !nnc_lower_type(s, model->type, &out_t, &out))
    return false;
  if (!check_loss(s, &out)) return false;
  if (!build_graph(s, m, "train", true, &out) || !build_graph(s, m, "eval", false, &out))
    return false;
  if (m->train) m->train->stat_ranks = s->stat_ranks_set;
  if (!check_patterns(s, m)) return false;
  s->module = m;
  return true;
}
