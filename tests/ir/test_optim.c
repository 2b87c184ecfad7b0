/* test_optim.c: nnc_build_training (ir/optim.c) run through the reference
 * interpreter on a tiny float64 problem,
 *
 *   W: [2,3] weight, b: [3] bias, A, T: [2,3], c: [3] frozen constants
 *   loss = sum(A * (W - T)^2) + sum(c * tanh(b)),
 *
 * against two independent references: plain C loops in this file (the
 * closed-form gradient and each optimizer's update written out), and
 * PyTorch's torch.optim / lr_scheduler on the same problem
 * (data/gen_optim_ref.py, output in data/optim_ref.txt). Covers every
 * optimizer, weight decay, clipping by norm and by value, l1/l2 penalties,
 * every schedule with and without warmup, per-epoch vs per-step units,
 * per-tensor lr_scale, frozen tensors and optimizer-state naming.
 */
#include "ir_test.h"

#include <stdio.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

enum { NW = 6, NB = 3, NP = NW + NB, MAX_STEPS = 8 };
static const double W0[NW] = {0.5, -0.3, 0.8, -1.2, 0.1, 0.4};
static const double B0[NB] = {0.2, -0.5, 0.3};
static const double A[NW] = {1.0, 2.0, 0.5, 1.5, 0.3, 3.0};
static const double TGT[NW] = {0.1, 0.2, -0.4, 0.6, -0.1, 0.9};
static const double C[NB] = {1.0, -2.0, 0.5};
static const double TOL = 1e-12;

/* Tensors 0..4 are W, b, A, T, c; the loss is the graph's LOSS output. */
static void build_problem(fixture *fx, nnc_tensor_role w_role) {
  nnc_graph *g = fx->g;
  nnc_node *w = fx_tensor(fx, "net.w", w_role, NNC_F64, sh(2, 2, 3), 0, 0);
  nnc_node *b = fx_tensor(fx, "net.b", NNC_ROLE_PARAM, NNC_F64, sh(1, 3), 0, 0);
  nnc_node *a = fx_tensor(fx, "A", NNC_ROLE_FROZEN, NNC_F64, sh(2, 2, 3), 0, 0);
  nnc_node *t = fx_tensor(fx, "T", NNC_ROLE_FROZEN, NNC_F64, sh(2, 2, 3), 0, 0);
  nnc_node *c = fx_tensor(fx, "c", NNC_ROLE_FROZEN, NNC_F64, sh(1, 3), 0, 0);
  nnc_node *d = nnc_ir_binary(g, NNC_OP_SUB, w, t);
  nnc_node *quad = nnc_ir_reduce(
      g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, a, nnc_ir_binary(g, NNC_OP_MUL, d, d)), 0x3);
  nnc_node *bias = nnc_ir_reduce(
      g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, c, nnc_ir_unary(g, NNC_OP_TANH, b)), 0x1);
  nnc_shape scalar = sh(0);
  nnc_node *loss = nnc_ir_binary(g, NNC_OP_ADD, nnc_ir_reshape(g, quad, &scalar),
                                 nnc_ir_reshape(g, bias, &scalar));
  nnc_graph_set_output(g, NNC_OUT_LOSS, loss);
}

/* Builds the training step and runs `steps` of it; step s (1-based) is in
 * epoch (s - 1) / per_epoch. Writes W then b into out and each step's
 * learning rate (output LR) into lrs. */
/* Trains `steps` steps (per_epoch steps per epoch), with the run's length
 * (the tensor schedule.epochs, when the schedule reads it) set to
 * run_epochs as the runtime sets it, or left at its init value when 0. */
static void train_run(fixture *fx, int steps, int per_epoch, int run_epochs, double *out,
                      double *lrs) {
  char err[256] = "";
  if (!nnc_build_training(fx->m, err, sizeof err)) fail_msg("nnc_build_training: %s", err);
  assert_verified(fx->g);
  assert_non_null(fx->g->outputs[NNC_OUT_LR]);
  nnc_interp *in = nnc_interp_new(fx->g);
  assert_non_null(in);
  fx_set(nnc_interp_tensor(in, 0), W0, NW);
  fx_set(nnc_interp_tensor(in, 1), B0, NB);
  fx_set(nnc_interp_tensor(in, 2), A, NW);
  fx_set(nnc_interp_tensor(in, 3), TGT, NW);
  fx_set(nnc_interp_tensor(in, 4), C, NB);
  int length = nnc_module_find_tensor(fx->m, "schedule.epochs");
  if (length >= 0)
    nnc_interp_tensor(in, length)[0] = run_epochs ? run_epochs : fx->m->tensors[length].init.a;
  for (int s = 1; s <= steps; s++) {
    if (fx->g->inputs[NNC_IN_STEP]) nnc_interp_input(in, NNC_IN_STEP)[0] = s;
    if (fx->g->inputs[NNC_IN_EPOCH]) nnc_interp_input(in, NNC_IN_EPOCH)[0] = (s - 1) / per_epoch;
    nnc_interp_run(in);
    if (lrs) lrs[s - 1] = nnc_interp_value(in, fx->g->outputs[NNC_OUT_LR])[0];
  }
  fx_set(out, nnc_interp_tensor(in, 0), NW);
  fx_set(out + NW, nnc_interp_tensor(in, 1), NB);
  nnc_interp_free(in);
}

static void train(fixture *fx, int steps, int per_epoch, double *out, double *lrs) {
  train_run(fx, steps, per_epoch, 0, out, lrs);
}

/* ---- The C reference ---- */

/* The learning rate at t (epochs, or steps - 1), written from the
 * definitions of torch.optim.lr_scheduler. */
static double ref_lr(const nnc_train_config *cfg, int t) {
  const nnc_schedule_config *s = &cfg->schedule;
  double lr0 = cfg->optim.lr, factor = 1;
  int tt = t;
  if (s->warmup > 0) {
    if (t < s->warmup) factor = s->warmup_start + (1 - s->warmup_start) * t / (double)s->warmup;
    tt = t < s->warmup ? 0 : t - (int)s->warmup;
  }
  double lr = lr0;
  switch (s->kind) {
  case NNC_SCHED_CONSTANT: break;
  case NNC_SCHED_STEP: lr = lr0 * pow(s->gamma, tt / (int)s->every); break;
  case NNC_SCHED_MULTISTEP:
    for (int i = 0; i < s->nmilestones; i++)
      if (tt >= s->milestones[i]) lr *= s->gamma;
    break;
  case NNC_SCHED_EXPONENTIAL: lr = lr0 * pow(s->gamma, tt); break;
  case NNC_SCHED_COSINE:
    lr = s->min_lr + (lr0 - s->min_lr) * (1 + cos(M_PI * tt / (double)s->period)) / 2;
    break;
  }
  return lr * factor;
}

typedef struct ref_state {
  double m[NP], v[NP], buf[NP];
} ref_state;

/* One optimizer step on p[0..NP) (W then b) with gradient g. */
static void ref_step(const nnc_train_config *cfg, ref_state *st, double *p, double *g, double lr,
                     int step, const double *lr_scale) {
  const nnc_optim_config *o = &cfg->optim;
  for (int i = 0; i < NP; i++) {
    double l = lr * lr_scale[i], gi = g[i];
    if (o->kind != NNC_OPT_ADAMW) gi += o->weight_decay * p[i];
    switch (o->kind) {
    case NNC_OPT_SGD: p[i] -= l * gi; break;
    case NNC_OPT_MOMENTUM:
    case NNC_OPT_NESTEROV:
      st->buf[i] = step == 1 ? gi : o->momentum * st->buf[i] + gi; /* torch: buf_1 = g */
      p[i] -= l * (o->kind == NNC_OPT_NESTEROV ? gi + o->momentum * st->buf[i] : st->buf[i]);
      break;
    case NNC_OPT_ADAM:
    case NNC_OPT_ADAMW: {
      if (o->kind == NNC_OPT_ADAMW) p[i] *= 1 - l * o->weight_decay;
      st->m[i] = o->beta1 * st->m[i] + (1 - o->beta1) * gi;
      st->v[i] = o->beta2 * st->v[i] + (1 - o->beta2) * gi * gi;
      double mhat = st->m[i] / (1 - pow(o->beta1, step)),
             vhat = st->v[i] / (1 - pow(o->beta2, step));
      p[i] -= l * mhat / (sqrt(vhat) + o->eps);
      break;
    }
    case NNC_OPT_RMSPROP: {
      st->v[i] = o->alpha * st->v[i] + (1 - o->alpha) * gi * gi;
      double d = gi / (sqrt(st->v[i]) + o->eps);
      if (o->momentum > 0) d = st->buf[i] = o->momentum * st->buf[i] + d;
      p[i] -= l * d;
      break;
    }
    case NNC_OPT_ADAGRAD:
      st->v[i] += gi * gi;
      p[i] -= l * gi / (sqrt(st->v[i]) + o->eps);
      break;
    }
  }
}

/* The reference training run: closed-form gradients, penalties on W,
 * clipping, schedule, optimizer. */
static void reference(const fixture *fx, int steps, int per_epoch, double *out, double *lrs) {
  const nnc_train_config *cfg = &fx->m->config;
  const nnc_regular_config *r = &cfg->regular;
  bool w_trains = fx->m->tensors[0].role == NNC_ROLE_PARAM;
  double p[NP], g[NP], lr_scale[NP];
  ref_state st;
  memset(&st, 0, sizeof st);
  fx_set(p, W0, NW);
  fx_set(p + NW, B0, NB);
  for (int i = 0; i < NP; i++)
    lr_scale[i] = fx->m->tensors[i < NW ? 0 : 1].lr_scale;
  for (int s = 1; s <= steps; s++) {
    for (int i = 0; i < NW; i++)
      g[i] = 2 * A[i] * (p[i] - TGT[i]) + r->l1 * ((p[i] > 0) - (p[i] < 0)) + r->l2 * p[i];
    for (int i = 0; i < NB; i++)
      g[NW + i] = C[i] * (1 - tanh(p[NW + i]) * tanh(p[NW + i]));
    if (!w_trains) memset(g, 0, sizeof(double) * NW);
    if (r->clip_norm > 0) {
      double ss = 0;
      for (int i = 0; i < NP; i++)
        ss += g[i] * g[i];
      double k = fmin(1, r->clip_norm / (sqrt(ss) + 1e-6));
      for (int i = 0; i < NP; i++)
        g[i] *= k;
    }
    if (r->clip_value > 0)
      for (int i = 0; i < NP; i++)
        g[i] = fmax(-r->clip_value, fmin(r->clip_value, g[i]));
    int t = cfg->schedule.unit == NNC_PER_EPOCH ? (s - 1) / per_epoch : s - 1;
    double lr = ref_lr(cfg, t);
    if (lrs) lrs[s - 1] = lr;
    double keep[NW];
    fx_set(keep, p, NW);
    ref_step(cfg, &st, p, g, lr, s, lr_scale);
    if (!w_trains) fx_set(p, keep, NW);
  }
  fx_set(out, p, NP);
}

/* ---- PyTorch's numbers ---- */

/* Reads the line `name v1 v2 ...` of data/optim_ref.txt into v; returns n. */
static int torch_ref(const char *name, double *v, int max) {
  FILE *f = fopen(NNC_SOURCE_DIR "/tests/ir/data/optim_ref.txt", "r");
  if (!f) fail_msg("cannot open data/optim_ref.txt");
  char line[4096];
  int n = -1;
  while (n < 0 && fgets(line, sizeof line, f)) {
    char *rest = line;
    size_t len = strlen(name);
    if (strncmp(line, name, len) != 0 || line[len] != ' ') continue;
    rest = line + len;
    for (n = 0; n < max; n++) {
      char *end;
      double x = strtod(rest, &end);
      if (end == rest) break;
      v[n] = x;
      rest = end;
    }
  }
  fclose(f);
  if (n < 0) fail_msg("no line %s in data/optim_ref.txt", name);
  return n;
}

static void assert_all_near(const char *what, const double *got, const double *want, int n,
                            double tol) {
  for (int i = 0; i < n; i++)
    if (!(fabs(got[i] - want[i]) <= tol * fmax(1.0, fabs(want[i]))))
      fail_msg("%s[%d]: nnc %.17g, reference %.17g", what, i, got[i], want[i]);
}

/* Trains 3 steps of the configured problem; compares with the C reference
 * and, if torch_case is given, with PyTorch. */
static void check_steps(fixture *fx, const char *torch_case) {
  double got[NP], want[NP], torch[NP];
  train(fx, 3, 1, got, NULL);
  reference(fx, 3, 1, want, NULL);
  assert_all_near("vs C reference", got, want, NP, TOL);
  if (torch_case) {
    assert_int_equal(torch_ref(torch_case, torch, NP), NP);
    assert_all_near(torch_case, got, torch, NP, 1e-10);
  }
  /* and it moved: the step did something */
  assert_true(fabs(got[0] - W0[0]) > 1e-4 || fabs(got[NW] - B0[0]) > 1e-4);
}

static void set_optim(fixture *fx, nnc_optim_kind kind, double lr) {
  nnc_optim_defaults(&fx->m->config.optim, kind);
  fx->m->config.optim.lr = lr;
}

/* ---- Optimizers ---- */

#define OPTIM_TEST(fname, kind, lr, setup, torch_case)                                             \
  static void fname(void **state) {                                                                \
    fixture *fx = *state;                                                                          \
    build_problem(fx, NNC_ROLE_PARAM);                                                             \
    set_optim(fx, kind, lr);                                                                       \
    nnc_train_config *cfg = &fx->m->config;                                                        \
    (void)cfg;                                                                                     \
    setup;                                                                                         \
    check_steps(fx, torch_case);                                                                   \
  }

OPTIM_TEST(test_sgd, NNC_OPT_SGD, 0.1, , "sgd")
OPTIM_TEST(test_sgd_weight_decay, NNC_OPT_SGD, 0.1, cfg->optim.weight_decay = 0.01, "sgd_wd")
OPTIM_TEST(test_momentum, NNC_OPT_MOMENTUM, 0.1, cfg->optim.momentum = 0.9, "momentum")
OPTIM_TEST(test_nesterov, NNC_OPT_NESTEROV, 0.1, cfg->optim.weight_decay = 0.01, "nesterov_wd")
OPTIM_TEST(test_adam, NNC_OPT_ADAM, 0.1, , "adam")
OPTIM_TEST(test_adam_weight_decay, NNC_OPT_ADAM, 0.1, cfg->optim.weight_decay = 0.01, "adam_wd")
OPTIM_TEST(test_adamw, NNC_OPT_ADAMW, 0.1, cfg->optim.weight_decay = 0.1, "adamw")
OPTIM_TEST(test_rmsprop, NNC_OPT_RMSPROP, 0.01, , "rmsprop")
OPTIM_TEST(test_rmsprop_momentum, NNC_OPT_RMSPROP, 0.01, cfg->optim.momentum = 0.9,
           "rmsprop_momentum")
OPTIM_TEST(test_adagrad, NNC_OPT_ADAGRAD, 0.1, , "adagrad")
OPTIM_TEST(test_clip_norm, NNC_OPT_SGD, 0.1, cfg->regular.clip_norm = 1.0, "sgd_clip_norm")
OPTIM_TEST(test_clip_value, NNC_OPT_SGD, 0.1, cfg->regular.clip_value = 0.5, "sgd_clip_value")
OPTIM_TEST(test_l1_l2, NNC_OPT_SGD, 0.1, (cfg->regular.l1 = 0.05, cfg->regular.l2 = 0.1),
           "sgd_l1_l2")
OPTIM_TEST(test_adam_everything, NNC_OPT_ADAM, 0.05,
           (cfg->optim.weight_decay = 0.02, cfg->regular.l2 = 0.1, cfg->regular.clip_norm = 2.0,
            cfg->regular.clip_value = 0.3),
           NULL)

/* ---- Schedules (SGD, lr 0.1, per step, 6 steps) ---- */

static void check_schedule(fixture *fx, const char *torch_case, int per_epoch) {
  double got[NP], want[NP], lr_got[MAX_STEPS], lr_want[MAX_STEPS], lr_torch[MAX_STEPS];
  train(fx, 6, per_epoch, got, lr_got);
  reference(fx, 6, per_epoch, want, lr_want);
  assert_all_near("lr vs C reference", lr_got, lr_want, 6, TOL);
  assert_all_near("params vs C reference", got, want, NP, TOL);
  if (torch_case) {
    assert_int_equal(torch_ref(torch_case, lr_torch, MAX_STEPS), 6);
    assert_all_near(torch_case, lr_got, lr_torch, 6, 1e-12);
  }
}

#define SCHED_TEST(fname, setup, torch_case)                                                       \
  static void fname(void **state) {                                                                \
    fixture *fx = *state;                                                                          \
    build_problem(fx, NNC_ROLE_PARAM);                                                             \
    set_optim(fx, NNC_OPT_SGD, 0.1);                                                               \
    nnc_schedule_config *s = &fx->m->config.schedule;                                              \
    s->unit = NNC_PER_STEP;                                                                        \
    setup;                                                                                         \
    check_schedule(fx, torch_case, 1);                                                             \
  }

SCHED_TEST(test_sched_step, (s->kind = NNC_SCHED_STEP, s->every = 2, s->gamma = 0.5), "sched_step")
SCHED_TEST(test_sched_multistep,
           (s->kind = NNC_SCHED_MULTISTEP, s->gamma = 0.1, s->nmilestones = 3, s->milestones[0] = 2,
            s->milestones[1] = 3, s->milestones[2] = 5),
           "sched_multistep")
SCHED_TEST(test_sched_exponential, (s->kind = NNC_SCHED_EXPONENTIAL, s->gamma = 0.9),
           "sched_exponential")
SCHED_TEST(test_sched_cosine, (s->kind = NNC_SCHED_COSINE, s->period = 4, s->min_lr = 0.01),
           "sched_cosine")
SCHED_TEST(test_sched_warmup_step,
           (s->kind = NNC_SCHED_STEP, s->every = 2, s->gamma = 0.5, s->warmup = 2,
            s->warmup_start = 0.1),
           "sched_warmup_step")
SCHED_TEST(test_sched_warmup_cosine,
           (s->kind = NNC_SCHED_COSINE, s->period = 4, s->min_lr = 0.01, s->warmup = 2,
            s->warmup_start = 0.1),
           "sched_warmup_cosine")
SCHED_TEST(test_sched_warmup_constant, (s->kind = NNC_SCHED_CONSTANT, s->warmup = 3), NULL)

/* Per epoch, 2 steps an epoch: the rate changes with the EPOCH input only. */
static void test_sched_per_epoch(void **state) {
  fixture *fx = *state;
  build_problem(fx, NNC_ROLE_PARAM);
  set_optim(fx, NNC_OPT_SGD, 0.1);
  nnc_schedule_config *s = &fx->m->config.schedule;
  s->kind = NNC_SCHED_STEP, s->every = 1, s->gamma = 0.5, s->unit = NNC_PER_EPOCH;
  check_schedule(fx, NULL, 2);
  assert_null(fx->g->inputs[NNC_IN_STEP]); /* sgd with an epoch schedule needs no step */
  double lr[MAX_STEPS], p[NP];
  reference(fx, 6, 2, p, lr);
  assert_true(lr[0] == 0.1 && lr[1] == 0.1 && lr[2] == 0.05 && lr[5] == 0.025);
}

/* SGD(0.1) with cosine() and no period, in a file that says 5 epochs. */
static void cosine_over_5_epochs(fixture *fx) {
  build_problem(fx, NNC_ROLE_PARAM);
  set_optim(fx, NNC_OPT_SGD, 0.1);
  fx->m->config.epochs = 5;
  fx->m->config.schedule.kind = NNC_SCHED_COSINE;
}

/* Cosine per epoch without a period runs over the configured epochs. */
static void test_sched_cosine_default_period(void **state) {
  fixture *fx = *state;
  cosine_over_5_epochs(fx);
  double p[NP], lr[MAX_STEPS];
  train(fx, 6, 1, p, lr);
  assert_near(lr[0], 0.1, 1e-15);
  assert_near(lr[5], 0.0, 1e-15); /* t = 5 = period */
  fx->m->config.schedule.period = 5;
  double want[NP], lr_want[MAX_STEPS];
  reference(fx, 6, 1, want, lr_want);
  assert_all_near("lr", lr, lr_want, 6, TOL);
}

/* A run of 8 epochs (--epochs 8, or resumed to 8) stretches the default
 * period to 8 though the file says 5: 0.05 (1 + cos(pi t / 8)), no rise
 * after epoch 5. */
static void test_sched_cosine_run_length(void **state) {
  fixture *fx = *state;
  cosine_over_5_epochs(fx);
  double p[NP], lr[MAX_STEPS];
  train_run(fx, 8, 1, 8, p, lr);
  int t = nnc_module_find_tensor(fx->m, "schedule.epochs");
  assert_true(t >= 0);
  assert_int_equal(fx->m->tensors[t].role, NNC_ROLE_OPT_STATE);
  assert_int_equal(fx->m->tensors[t].shape.rank, 0);
  assert_true(fx->m->tensors[t].init.kind == NNC_INIT_CONSTANT && fx->m->tensors[t].init.a == 5);
  for (int e = 0; e < 8; e++)
    assert_near(lr[e], 0.05 * (1 + cos(M_PI * e / 8)), 1e-12);
  assert_near(lr[4], 0.05 * (1 + cos(M_PI / 2)), 1e-15); /* half way at epoch 5 */
  for (int e = 1; e < 8; e++)
    assert_true(lr[e] < lr[e - 1]);
}

/* ---- Parameters, state, errors ---- */

static void test_lr_scale(void **state) {
  fixture *fx = *state;
  build_problem(fx, NNC_ROLE_PARAM);
  set_optim(fx, NNC_OPT_ADAM, 0.1);
  fx->m->tensors[1].lr_scale = 0.25;
  check_steps(fx, NULL);
}

static void test_frozen_weight_and_state_names(void **state) {
  fixture *fx = *state;
  build_problem(fx, NNC_ROLE_FROZEN);
  set_optim(fx, NNC_OPT_ADAM, 0.1);
  check_steps(fx, NULL);
  const nnc_module *m = fx->m;
  assert_true(nnc_module_find_tensor(m, "adam.m.net.w") < 0);
  int mb = nnc_module_find_tensor(m, "adam.m.net.b"),
      vb = nnc_module_find_tensor(m, "adam.v.net.b");
  assert_true(mb >= 0 && vb >= 0);
  assert_int_equal(m->tensors[mb].role, NNC_ROLE_OPT_STATE);
  assert_int_equal(m->tensors[vb].init.kind, NNC_INIT_ZEROS);
  assert_true(nnc_shape_eq(&m->tensors[vb].shape, &m->tensors[1].shape));
  for (int i = 0; i < fx->g->nupdates; i++)
    assert_true(fx->g->updates[i].tensor != 0); /* W kept */
  assert_int_equal(fx->g->nupdates, 3);         /* b, adam.m.net.b, adam.v.net.b */
}

static void test_state_names_per_optimizer(void **state) {
  fixture *fx = *state;
  build_problem(fx, NNC_ROLE_PARAM);
  set_optim(fx, NNC_OPT_RMSPROP, 0.01);
  fx->m->config.optim.momentum = 0.5;
  char err[128];
  assert_true(nnc_build_training(fx->m, err, sizeof err));
  const char *names[4] = {"rmsprop.v.net.w", "rmsprop.buf.net.w", "rmsprop.v.net.b",
                          "rmsprop.buf.net.b"};
  for (int i = 0; i < 4; i++)
    assert_true(nnc_module_find_tensor(fx->m, names[i]) >= 0);
  assert_int_equal(fx->g->nupdates, 6);
  assert_verified(fx->g);
}

static void test_loss_without_parameters_is_an_error(void **state) {
  fixture *fx = *state;
  nnc_node *a = fx_tensor(fx, "frozen", NNC_ROLE_FROZEN, NNC_F64, sh(1, 3), 0, 1);
  nnc_shape scalar = sh(0);
  nnc_graph_set_output(fx->g, NNC_OUT_LOSS,
                       nnc_ir_reshape(fx->g, nnc_ir_reduce(fx->g, NNC_OP_SUM, a, 1), &scalar));
  char err[128] = "";
  assert_false(nnc_build_training(fx->m, err, sizeof err));
  assert_non_null(strstr(err, "does not depend on any trainable parameter"));
}

/* The frontend's case: an f32 model (STEP/EPOCH inputs need no cast), with
 * everything switched on; the graph verifies before and after nnc_simplify
 * and one step moves the weight. */
static void test_f32_everything(void **state) {
  fixture *fx = *state;
  nnc_graph *g = fx->g;
  nnc_node *w = fx_tensor(fx, "w", NNC_ROLE_PARAM, NNC_F32, sh(2, 2, 3), -1, 1);
  nnc_node *b = fx_tensor(fx, "b", NNC_ROLE_PARAM, NNC_F32, sh(2, 1, 3), -1, 1);
  nnc_shape scalar = sh(0);
  nnc_node *y = nnc_ir_unary(g, NNC_OP_TANH, nnc_ir_binary(g, NNC_OP_ADD, w, b));
  nnc_graph_set_output(
      g, NNC_OUT_LOSS,
      nnc_ir_reshape(g, nnc_ir_reduce(g, NNC_OP_SUM, nnc_ir_binary(g, NNC_OP_MUL, y, y), 0x3),
                     &scalar));
  nnc_train_config *cfg = &fx->m->config;
  nnc_optim_defaults(&cfg->optim, NNC_OPT_ADAMW);
  cfg->regular = (nnc_regular_config){0.01, 0.02, 1.0, 0.5};
  cfg->schedule.kind = NNC_SCHED_COSINE;
  cfg->schedule.warmup = 2;
  cfg->schedule.warmup_start = 0.5;
  cfg->epochs = 10;
  char err[128];
  assert_true(nnc_build_training(fx->m, err, sizeof err));
  assert_verified(g);
  assert_int_equal(g->outputs[NNC_OUT_LR]->dtype, NNC_F32);
  nnc_simplify(g);
  assert_verified(g);
  nnc_interp *in = nnc_interp_new(g);
  fx_fill(fx, in);
  double w0 = nnc_interp_tensor(in, 0)[0];
  nnc_interp_input(in, NNC_IN_STEP)[0] = 1;
  nnc_interp_input(in, NNC_IN_EPOCH)[0] = 0;
  nnc_interp_run(in);
  assert_near(nnc_interp_value(in, g->outputs[NNC_OUT_LR])[0], 0.0005, 1e-15);
  assert_true(nnc_interp_tensor(in, 0)[0] != w0);
  nnc_interp_free(in);
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_sgd),
      T(test_sgd_weight_decay),
      T(test_momentum),
      T(test_nesterov),
      T(test_adam),
      T(test_adam_weight_decay),
      T(test_adamw),
      T(test_rmsprop),
      T(test_rmsprop_momentum),
      T(test_adagrad),
      T(test_clip_norm),
      T(test_clip_value),
      T(test_l1_l2),
      T(test_adam_everything),
      T(test_sched_step),
      T(test_sched_multistep),
      T(test_sched_exponential),
      T(test_sched_cosine),
      T(test_sched_cosine_run_length),
      T(test_sched_warmup_step),
      T(test_sched_warmup_cosine),
      T(test_sched_warmup_constant),
      T(test_sched_per_epoch),
      T(test_sched_cosine_default_period),
      T(test_lr_scale),
      T(test_frozen_weight_and_state_names),
      T(test_state_names_per_optimizer),
      T(test_loss_without_parameters_is_an_error),
      T(test_f32_everything),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
