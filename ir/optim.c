/* optim.c: turns the forward training graph into a whole training step
 * (nnc_build_training, see passes.h), following m->config:
 *
 *   g     = d loss / d p + d (l1 sum|W| + l2/2 sum W^2) / d p
 *                                      for every PARAM tensor; the penalties
 *                                      over weights (rank >= 2), their
 *                                      gradient added once to the loss's
 *   g     = g * min(1, max_norm / (||g||_global + 1e-6)),  then clamp(g, -v, v)
 *   lr    = schedule(t) * warmup(t)                  from the STEP/EPOCH inputs
 *   p, state = optimizer(p, g, state, lr * lr_scale(p), step)
 *
 * Everything is graph code appended to m->train: the learning rate is a
 * handful of scalar nodes, and the update of one parameter and its state is
 * one elementwise chain over (p, g, state) and scalars, so codegen fuses it
 * into one pass per parameter. The per-step scalars (learning rate,
 * schedule, warmup, bias corrections) are computed in f64 from the f32
 * step and epoch (integers, exact) and rounded once to the tensors' dtype
 * where they meet a tensor, as PyTorch computes them in Python floats: an
 * f32 1 - 0.999^t would be off by ~100 ulps, always the same way.
 * Formulas follow PyTorch's documented ones; docs/optimizers.md lists them
 * with the differences and their reasons. Optimizer state lives in new
 * tensors of role NNC_ROLE_OPT_STATE, zero initialised, named
 * "<optimizer>.<slot>.<parameter>".
 */
#include "passes.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>

typedef struct build {
  nnc_module *m;
  nnc_graph *g;
  nnc_dtype t; /* the loss's dtype; all scalars are made in it */
  char *err;
  size_t errlen;
} build;

/* One trainable parameter on its way through the pipeline. */
typedef struct param {
  int tensor;
  nnc_node *value, *grad;
} param;

static bool fail(build *b, const char *fmt, ...) {
  if (b->err && b->errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, b->errlen, fmt, ap);
    va_end(ap);
  }
  return false;
}

/* ---- Builder shorthands ---- */
static nnc_node *c(build *b, double v) {
  return nnc_ir_const(b->g, b->t, v);
}
static nnc_node *add(build *b, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(b->g, NNC_OP_ADD, x, y);
}
static nnc_node *sub(build *b, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(b->g, NNC_OP_SUB, x, y);
}
static nnc_node *mul(build *b, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(b->g, NNC_OP_MUL, x, y);
}
static nnc_node *dvd(build *b, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(b->g, NNC_OP_DIV, x, y);
}
static nnc_node *fn(build *b, nnc_op op, nnc_node *x) {
  return nnc_ir_unary(b->g, op, x);
}
static nnc_node *bin(build *b, nnc_op op, nnc_node *x, nnc_node *y) {
  return nnc_ir_binary(b->g, op, x, y);
}
/* x * s, or x itself when s is 1 */
static nnc_node *scale(build *b, nnc_node *x, double s) {
  return s == 1.0 ? x : mul(b, x, nnc_ir_const(b->g, x->dtype, s));
}

/* ---- Per-step scalars: f64, rounded once to the tensors' dtype ---- */

static nnc_node *k64(build *b, double v) {
  return nnc_ir_const(b->g, NNC_F64, v);
}
/* an f64 scalar as the dtype of the tensors it meets */
static nnc_node *rounded(build *b, nnc_node *x) {
  return x->dtype == b->t ? x : nnc_ir_cast(b->g, x, b->t);
}

/* sum of all elements, as a rank-0 node */
static nnc_node *total(build *b, nnc_node *x) {
  if (x->shape.rank == 0) return x;
  nnc_shape scalar = {0, {0}};
  return nnc_ir_reshape(b->g, nnc_ir_reduce(b->g, NNC_OP_SUM, x, (1u << x->shape.rank) - 1),
                        &scalar);
}

/* A scalar runtime input (STEP, EPOCH: f32 holding an integer) in f64. */
static nnc_node *scalar_input(build *b, nnc_input_kind k) {
  nnc_shape scalar = {0, {0}};
  return nnc_ir_cast(b->g, nnc_ir_input(b->g, k, NNC_F32, &scalar), NNC_F64);
}

/* ---- Parameters and penalties ---- */

static nnc_node *param_node(const nnc_graph *g, int tensor) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == NNC_OP_PARAM && g->nodes[i]->attr[0] == tensor) return g->nodes[i];
  return NULL;
}

/* The PARAM tensors the training graph reads (a parameter it never reads
 * has no gradient and is left alone). */
static int collect_params(build *b, param *ps) {
  int n = 0;
  for (int t = 0; t < b->m->ntensors; t++) {
    nnc_node *v = b->m->tensors[t].role == NNC_ROLE_PARAM ? param_node(b->g, t) : NULL;
    if (v) ps[n++] = (param){t, v, NULL};
  }
  return n;
}

/* loss + l1 sum|W| + l2/2 sum W^2 over the weights: parameters of rank >= 2
 * (matrices, kernels, embeddings), not biases or norm scales, as in Keras'
 * kernel_regularizer. */
static nnc_node *add_penalties(build *b, nnc_node *loss, const param *ps, int n) {
  const nnc_regular_config *r = &b->m->config.regular;
  for (int i = 0; i < n; i++) {
    nnc_node *w = ps[i].value;
    if (w->shape.rank < 2) continue;
    if (r->l1 != 0) loss = add(b, loss, scale(b, total(b, fn(b, NNC_OP_ABS, w)), r->l1));
    if (r->l2 != 0) loss = add(b, loss, scale(b, total(b, mul(b, w, w)), r->l2 / 2));
  }
  return loss;
}

/* ---- Gradient clipping (before weight decay, as torch's clip_grad_*_ on
 * .grad before optimizer.step()) ---- */

/* torch.nn.utils.clip_grad_norm_: g *= min(1, max_norm / (||g|| + 1e-6)),
 * ||g|| the L2 norm of all gradients together. */
static void clip_by_norm(build *b, param *ps, int n, double max_norm) {
  nnc_node *sumsq = NULL;
  for (int i = 0; i < n; i++) {
    nnc_node *s = total(b, mul(b, ps[i].grad, ps[i].grad));
    sumsq = sumsq ? add(b, sumsq, s) : s;
  }
  nnc_node *norm = fn(b, NNC_OP_SQRT, sumsq);
  nnc_node *k = bin(b, NNC_OP_MIN, c(b, 1), dvd(b, c(b, max_norm), add(b, norm, c(b, 1e-6))));
  for (int i = 0; i < n; i++)
    ps[i].grad = mul(b, ps[i].grad, k);
}

/* torch.nn.utils.clip_grad_value_: g = clamp(g, -v, v). */
static void clip_by_value(build *b, param *ps, int n, double v) {
  for (int i = 0; i < n; i++)
    ps[i].grad = bin(b, NNC_OP_MIN, bin(b, NNC_OP_MAX, ps[i].grad, c(b, -v)), c(b, v));
}

/* ---- Learning-rate schedule ---- */

/* The number of epochs the run trains, as a scalar the runtime writes before
 * the first step (so `--epochs`, and resuming to a new total, stretch a
 * schedule whose length is the run's), initialised to the .nn file's
 * epochs. It is optimizer state, as PyTorch keeps T_max in the scheduler's
 * state: resume restores it, transfer learning does not load it. The name is
 * the runtime's contract (docs/runtime.md, "Schedules"). */
static nnc_node *run_epochs(build *b) {
  nnc_module *m = b->m;
  int t = nnc_module_find_tensor(m, "schedule.epochs");
  if (t < 0) {
    nnc_init init = {NNC_INIT_CONSTANT, (double)m->config.epochs, 0, 0, 0};
    nnc_shape scalar = {0, {0}};
    nnc_span none = {0, 0, 0};
    t = nnc_module_add_tensor(m, "schedule.epochs", NNC_ROLE_OPT_STATE, NNC_F32, &scalar, init,
                              none);
  }
  return nnc_ir_cast(b->g, nnc_ir_param(b->g, t), NNC_F64); /* schedules are f64 */
}

/* lr0 * schedule(t), t >= 0 counted in the schedule's unit after warmup. */
static nnc_node *decayed(build *b, nnc_node *t, double lr0, bool *ok) {
  const nnc_schedule_config *s = &b->m->config.schedule;
  nnc_node *count = NULL; /* the exponent of gamma */
  switch (s->kind) {
  case NNC_SCHED_CONSTANT: return k64(b, lr0);
  case NNC_SCHED_STEP: /* StepLR: lr0 gamma^floor(t / every) */
    if (s->every < 1) return *ok = fail(b, "step schedule: every must be at least 1"), NULL;
    count = fn(b, NNC_OP_FLOOR, dvd(b, t, k64(b, (double)s->every)));
    break;
  case NNC_SCHED_MULTISTEP: /* MultiStepLR: lr0 gamma^(number of milestones <= t) */
    count = k64(b, 0);
    for (int i = 0; i < s->nmilestones; i++)
      count = add(b, count, bin(b, NNC_OP_GE, t, k64(b, (double)s->milestones[i])));
    break;
  case NNC_SCHED_EXPONENTIAL: count = t; break; /* ExponentialLR: lr0 gamma^t */
  case NNC_SCHED_COSINE: {
    /* CosineAnnealingLR's closed form: min + (lr0 - min) (1 + cos(pi t / T)) / 2 */
    /* No period: the rest of training after warmup, in epochs (the run's
     * epochs, run_epochs) or in steps (known when the data is: the
     * TOTAL_STEPS input), at least 1. */
    nnc_node *angle;
    if (s->period > 0) {
      angle = scale(b, t, 3.14159265358979323846 / (double)s->period);
    } else {
      nnc_node *total =
          s->unit == NNC_PER_STEP ? scalar_input(b, NNC_IN_TOTAL_STEPS) : run_epochs(b);
      nnc_node *rest = bin(b, NNC_OP_MAX, sub(b, total, k64(b, (double)s->warmup)), k64(b, 1));
      angle = dvd(b, scale(b, t, 3.14159265358979323846), rest);
    }
    nnc_node *cosine = fn(b, NNC_OP_COS, angle);
    return add(b, k64(b, s->min_lr), scale(b, add(b, k64(b, 1), cosine), (lr0 - s->min_lr) / 2));
  }
  }
  if (!(s->gamma > 0)) return *ok = fail(b, "schedule: gamma must be positive"), NULL;
  return scale(b, bin(b, NNC_OP_POW, k64(b, s->gamma), count), lr0);
}

/* The learning rate of this step, in f64. t is the epoch (0-based, per epoch) or
 * step - 1 (per step), so the first step uses t = 0 as PyTorch does when
 * scheduler.step() follows each epoch or each optimizer step. A warmup of
 * W units multiplies by min(1, start + (1 - start) t / W) (LinearLR) and
 * delays the schedule by W: schedule(max(t - W, 0)). */
static nnc_node *learning_rate(build *b, bool *ok) {
  const nnc_schedule_config *s = &b->m->config.schedule;
  double lr0 = b->m->config.optim.lr;
  if (s->kind == NNC_SCHED_CONSTANT && s->warmup <= 0) return k64(b, lr0);
  nnc_node *t = s->unit == NNC_PER_EPOCH ? scalar_input(b, NNC_IN_EPOCH)
                                         : sub(b, scalar_input(b, NNC_IN_STEP), k64(b, 1));
  if (s->warmup <= 0) return decayed(b, t, lr0, ok);
  double w = (double)s->warmup, start = s->warmup_start;
  nnc_node *after = bin(b, NNC_OP_MAX, sub(b, t, k64(b, w)), k64(b, 0));
  nnc_node *lr = decayed(b, after, lr0, ok);
  if (!lr) return NULL;
  nnc_node *ramp = add(b, k64(b, start), scale(b, t, (1 - start) / w));
  return mul(b, lr, bin(b, NNC_OP_MIN, k64(b, 1), ramp));
}

/* ---- Optimizers ---- */

/* The PARAM node of optimizer state "<opt>.<slot>.<param name>", created
 * zero-initialised (or found, if the module already has it). */
static nnc_node *state(build *b, const char *opt, const char *slot, int param_tensor) {
  nnc_module *m = b->m;
  const nnc_tensor *p = &m->tensors[param_tensor];
  char *name = nnc_arena_printf(m->arena, "%s.%s.%s", opt, slot, p->name);
  int t = nnc_module_find_tensor(m, name);
  if (t < 0) {
    nnc_init zeros = {NNC_INIT_ZEROS, 0, 0, 0, 0};
    nnc_shape shape = p->shape;
    t = nnc_module_add_tensor(m, name, NNC_ROLE_OPT_STATE, p->dtype, &shape, zeros, p->span);
  }
  return nnc_ir_param(b->g, t);
}

/* Scalars shared by all parameters' updates, f64. */
typedef struct shared {
  nnc_node *lr;        /* scheduled learning rate */
  nnc_node *bc1, *bc2; /* adam: 1 - beta1^t, sqrt(1 - beta2^t) */
} shared;

static const char *optim_name(nnc_optim_kind k) {
  switch (k) {
  case NNC_OPT_SGD: return "sgd";
  case NNC_OPT_MOMENTUM: return "momentum";
  case NNC_OPT_NESTEROV: return "nesterov";
  case NNC_OPT_ADAM: return "adam";
  case NNC_OPT_ADAMW: return "adamw";
  case NNC_OPT_RMSPROP: return "rmsprop";
  case NNC_OPT_ADAGRAD: return "adagrad";
  }
  return "?";
}

/* Appends the updates of one parameter p (gradient g, learning rate lr)
 * and of its state tensors. */
static void update_param(build *b, const param *ps, const shared *sh) {
  const nnc_optim_config *o = &b->m->config.optim;
  const char *name = optim_name(o->kind);
  nnc_node *p = ps->value, *g = ps->grad;
  nnc_node *lr64 = scale(b, sh->lr, b->m->tensors[ps->tensor].lr_scale);
  nnc_node *lr = rounded(b, lr64);
  /* coupled weight decay (all but adamw): g += wd p */
  if (o->weight_decay != 0 && o->kind != NNC_OPT_ADAMW) g = add(b, g, scale(b, p, o->weight_decay));
  nnc_node *step = NULL; /* what p moves by, before * lr */
  switch (o->kind) {
  case NNC_OPT_SGD: step = g; break; /* p -= lr g */
  case NNC_OPT_MOMENTUM:
  case NNC_OPT_NESTEROV: {
    /* buf = mu buf + g (buf starts at 0, so buf_1 = g as in torch);
     * momentum: p -= lr buf; nesterov: p -= lr (g + mu buf) */
    nnc_node *buf = state(b, name, "buf", ps->tensor);
    nnc_node *next = add(b, scale(b, buf, o->momentum), g);
    nnc_graph_add_update(b->g, (int)buf->attr[0], next);
    step = o->kind == NNC_OPT_MOMENTUM ? next : add(b, g, scale(b, next, o->momentum));
    break;
  }
  case NNC_OPT_ADAM:
  case NNC_OPT_ADAMW: {
    /* m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
     * p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps), with
     * lr/(1-b1^t) and sqrt(1-b2^t) each one rounding of their f64 value
     * (torch's step_size and bias_correction2_sqrt) */
    nnc_node *mm = state(b, name, "m", ps->tensor), *vv = state(b, name, "v", ps->tensor);
    nnc_node *m1 = add(b, scale(b, mm, o->beta1), scale(b, g, 1 - o->beta1));
    nnc_node *v1 = add(b, scale(b, vv, o->beta2), scale(b, mul(b, g, g), 1 - o->beta2));
    nnc_graph_add_update(b->g, (int)mm->attr[0], m1);
    nnc_graph_add_update(b->g, (int)vv->attr[0], v1);
    nnc_node *denom = add(b, dvd(b, fn(b, NNC_OP_SQRT, v1), rounded(b, sh->bc2)), c(b, o->eps));
    step = dvd(b, m1, denom);
    lr = rounded(b, dvd(b, lr64, sh->bc1));
    /* adamw: p = p (1 - lr wd) first (decoupled decay) */
    if (o->kind == NNC_OPT_ADAMW && o->weight_decay != 0)
      p = mul(b, p, rounded(b, sub(b, k64(b, 1), scale(b, lr64, o->weight_decay))));
    break;
  }
  case NNC_OPT_RMSPROP: {
    /* v = a v + (1-a) g^2; d = g / (sqrt(v) + eps);
     * with momentum: buf = mu buf + d, p -= lr buf; else p -= lr d */
    nnc_node *vv = state(b, name, "v", ps->tensor);
    nnc_node *v1 = add(b, scale(b, vv, o->alpha), scale(b, mul(b, g, g), 1 - o->alpha));
    nnc_graph_add_update(b->g, (int)vv->attr[0], v1);
    step = dvd(b, g, add(b, fn(b, NNC_OP_SQRT, v1), c(b, o->eps)));
    if (o->momentum > 0) {
      nnc_node *buf = state(b, name, "buf", ps->tensor);
      step = add(b, scale(b, buf, o->momentum), step);
      nnc_graph_add_update(b->g, (int)buf->attr[0], step);
    }
    break;
  }
  case NNC_OPT_ADAGRAD: {
    /* sum += g^2; p -= lr g / (sqrt(sum) + eps) */
    nnc_node *ss = state(b, name, "sum", ps->tensor);
    nnc_node *s1 = add(b, ss, mul(b, g, g));
    nnc_graph_add_update(b->g, (int)ss->attr[0], s1);
    step = dvd(b, g, add(b, fn(b, NNC_OP_SQRT, s1), c(b, o->eps)));
    break;
  }
  }
  nnc_graph_add_update(b->g, ps->tensor, sub(b, p, mul(b, lr, step)));
}

static shared shared_scalars(build *b, bool *ok) {
  const nnc_optim_config *o = &b->m->config.optim;
  shared sh = {learning_rate(b, ok), NULL, NULL};
  if (o->kind == NNC_OPT_ADAM || o->kind == NNC_OPT_ADAMW) {
    nnc_node *t = scalar_input(b, NNC_IN_STEP); /* 1-based: the number of this step */
    sh.bc1 = sub(b, k64(b, 1), bin(b, NNC_OP_POW, k64(b, o->beta1), t));
    sh.bc2 = fn(b, NNC_OP_SQRT, sub(b, k64(b, 1), bin(b, NNC_OP_POW, k64(b, o->beta2), t)));
  }
  return sh;
}

bool nnc_optim_step_scalars(nnc_module *m, nnc_graph *g, nnc_dtype t, nnc_node *out[3], char *err,
                            size_t errlen) {
  build b = {m, g, t, err, errlen};
  bool ok = true;
  shared sh = shared_scalars(&b, &ok);
  out[0] = ok ? rounded(&b, sh.lr) : NULL;
  out[1] = ok && sh.bc1 ? rounded(&b, dvd(&b, sh.lr, sh.bc1)) : NULL;
  out[2] = ok && sh.bc2 ? rounded(&b, sh.bc2) : NULL;
  return ok;
}

/* The gradients of g's loss (times loss_scale) with respect to the PARAM
 * tensors g reads, into ps: the parameters with a gradient, *kept of them.
 * False (err set) on a model that cannot be trained. */
static bool differentiate(build *b, double loss_scale, param *ps, int *kept) {
  nnc_module *m = b->m;
  nnc_graph *g = b->g;
  if (!g || !g->outputs[NNC_OUT_LOSS]) return fail(b, "the training graph has no loss");
  nnc_node *loss = g->outputs[NNC_OUT_LOSS];
  if (loss->shape.rank != 0 || loss->dtype == NNC_I32)
    return fail(b, "the loss must be a float scalar");
  b->t = loss->dtype;
  nnc_node **wrt = calloc((size_t)m->ntensors + 1, sizeof(nnc_node *));
  nnc_node **grads = malloc(sizeof(nnc_node *) * (size_t)(m->ntensors + 1));
  if (!wrt || !grads) nnc_ir_bug("optim: out of memory");
  bool ok = true;
  int n = collect_params(b, ps);
  *kept = 0;
  for (int i = 0; i < n && ok; i++)
    if (ps[i].value->dtype != b->t)
      ok = fail(b, "parameter %s is %s but the loss is %s", m->tensors[ps[i].tensor].name,
                nnc_dtype_name(ps[i].value->dtype), nnc_dtype_name(b->t));
  if (ok) {
    for (int i = 0; i < n; i++)
      wrt[i] = ps[i].value;
    nnc_node *y = loss_scale == 1 ? loss : scale(b, loss, loss_scale);
    nnc_ad_grad(g, y, wrt, n, grads);
    for (int i = 0; i < n; i++) /* a parameter the loss does not depend on keeps its value */
      if (grads[i]) ps[(*kept)++] = (param){ps[i].tensor, ps[i].value, grads[i]};
    if (!*kept) ok = fail(b, "the loss does not depend on any trainable parameter");
  }
  free(wrt);
  free(grads);
  return ok;
}

/* g += d(penalties)/dp (l1 sign(W), l2 W) for the kept parameters, once,
 * on the whole batch's loss gradient: the data-parallel step adds it after
 * the micro-batches' gradients are summed, so both steps add the same
 * value to the same sum. Before clipping, so it is clipped like the
 * loss's. */
static void add_penalty_grads(build *b, param *ps, int n) {
  const nnc_regular_config *r = &b->m->config.regular;
  if (r->l1 == 0 && r->l2 == 0) return;
  nnc_node *pen = add_penalties(b, c(b, 0), ps, n);
  nnc_node **wrt = malloc(sizeof(nnc_node *) * (size_t)(n + 1));
  nnc_node **grads = malloc(sizeof(nnc_node *) * (size_t)(n + 1));
  if (!wrt || !grads) nnc_ir_bug("optim: out of memory");
  for (int i = 0; i < n; i++)
    wrt[i] = ps[i].value;
  nnc_ad_grad(b->g, pen, wrt, n, grads);
  for (int i = 0; i < n; i++)
    if (grads[i]) ps[i].grad = add(b, ps[i].grad, grads[i]);
  free(wrt);
  free(grads);
}

/* The penalties' gradients, clipping, the learning rate (output
 * NNC_OUT_LR) and every parameter's update, appended to b->g, from the
 * loss gradients in ps. */
static bool apply_updates(build *b, param *ps, int kept) {
  nnc_module *m = b->m;
  add_penalty_grads(b, ps, kept);
  if (m->config.regular.clip_norm > 0) clip_by_norm(b, ps, kept, m->config.regular.clip_norm);
  if (m->config.regular.clip_value > 0) clip_by_value(b, ps, kept, m->config.regular.clip_value);
  bool ok = true;
  shared sh = shared_scalars(b, &ok);
  if (!ok) return false;
  nnc_graph_set_output(b->g, NNC_OUT_LR, rounded(b, sh.lr));
  for (int i = 0; i < kept; i++)
    update_param(b, &ps[i], &sh);
  return true;
}

bool nnc_build_training(nnc_module *m, char *err, size_t errlen) {
  build b = {m, m->train, NNC_F32, err, errlen};
  param *ps = malloc(sizeof(param) * (size_t)(m->ntensors + 1));
  if (!ps) nnc_ir_bug("optim: out of memory");
  int kept = 0;
  bool ok = differentiate(&b, 1, ps, &kept) && apply_updates(&b, ps, kept);
  free(ps);
  return ok;
}

/* The micro-batch graph m->grad differentiates
 *
 *   loss_g * (1/G if the loss is a mean)
 *
 * so that the sum of the G micro-batches' gradients is the gradient of the
 * global batch's loss (the update adds the penalties' once), and stores
 * each gradient into a tensor "grad.<param>" (role GRAD). A rank's graph
 * with synchronised statistics (graph stat_ranks = N) is the global
 * batch's step at B/N: its loss is scaled by 1/N and its buffers' updates
 * stay in it; so is m->grad_half (N = 2), which stores into the same GRAD
 * tensors. The update graph m->update reads those tensors (which the
 * runtime has replaced by the sum over all micro-batches of all ranks) as
 * the gradients and does what nnc_build_training does after
 * differentiating. The learning rate and optimizer state are the same
 * graph code on the same tensors, so checkpoints do not change. */
static double loss_scale(const nnc_module *m, const nnc_graph *g) {
  if (m->config.reduction != NNC_REDUCE_MEAN) return 1;
  return 1.0 / (double)(g->stat_ranks >= 1 ? g->stat_ranks : m->micro_batches);
}

/* m->grad_half's gradients into the GRAD tensors m->grad's went to. */
static bool build_grad_half(nnc_module *m, char *err, size_t errlen) {
  build b = {m, m->grad_half, NNC_F32, err, errlen};
  param *ps = malloc(sizeof(param) * (size_t)(m->ntensors + 1));
  if (!ps) nnc_ir_bug("optim: out of memory");
  int kept = 0;
  bool ok = differentiate(&b, loss_scale(m, m->grad_half), ps, &kept);
  for (int i = 0; ok && i < kept; i++) {
    const char *name = nnc_arena_printf(m->arena, "grad.%s", m->tensors[ps[i].tensor].name);
    int t = nnc_module_find_tensor(m, name);
    if (t < 0)
      ok = fail(&b, "internal error: the rank graph's %s has no tensor", name);
    else
      nnc_graph_add_update(m->grad_half, t, ps[i].grad);
  }
  free(ps);
  return ok;
}

bool nnc_build_data_parallel(nnc_module *m, char *err, size_t errlen) {
  build b = {m, m->grad, NNC_F32, err, errlen};
  if (!m->grad || m->micro_batches < 1) return fail(&b, "no micro-batch graph to build from");
  param *ps = malloc(sizeof(param) * (size_t)(m->ntensors + 1));
  if (!ps) nnc_ir_bug("optim: out of memory");
  int kept = 0;
  bool ok = differentiate(&b, loss_scale(m, m->grad), ps, &kept);
  nnc_init zeros = {NNC_INIT_ZEROS, 0, 0, 0, 0};
  /* Buffers (batch-norm running statistics) of micro-batches that
   * normalise alone: each micro-batch's new value, from the value before
   * the step, goes to "bufnew.<buffer>"; the runtime sets the buffer to the
   * mean over the micro-batches (the blend with the mean statistics), the
   * same on every rank. */
  for (int i = 0; ok && m->grad->stat_ranks < 1 && i < m->grad->nupdates; i++) {
    const nnc_tensor *buf = &m->tensors[m->grad->updates[i].tensor];
    if (buf->role != NNC_ROLE_BUFFER) continue;
    char *name = nnc_arena_printf(m->arena, "bufnew.%s", buf->name);
    nnc_shape shape = buf->shape;
    m->grad->updates[i].tensor =
        nnc_module_add_tensor(m, name, NNC_ROLE_GRAD, buf->dtype, &shape, zeros, buf->span);
  }
  if (ok) {
    m->update = nnc_graph_new(m, "update");
    for (int i = 0; i < kept; i++) {
      const nnc_tensor *p = &m->tensors[ps[i].tensor];
      char *name = nnc_arena_printf(m->arena, "grad.%s", p->name);
      nnc_shape shape = p->shape;
      int t = nnc_module_add_tensor(m, name, NNC_ROLE_GRAD, p->dtype, &shape, zeros, p->span);
      nnc_graph_add_update(m->grad, t, ps[i].grad);
      ps[i].value = nnc_ir_param(m->update, ps[i].tensor);
      ps[i].grad = nnc_ir_param(m->update, t);
    }
    b.g = m->update;
    ok = apply_updates(&b, ps, kept);
  }
  free(ps);
  return ok && (!m->grad_half || build_grad_half(m, err, errlen));
}
