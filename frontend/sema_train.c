/* sema_train.c: the `train` block -> nnc_train_config.
 *
 * Takes the TRAIN declaration; fills s->cfg (defaults from
 * nnc_config_defaults, then every setting given) and s->train_model.
 * A setting is `key = value`; a few are calls (`early_stop(...)`,
 * `checkpoint(...)`); parameter groups are `group NAME { ... }` blocks.
 * Each key has one handler; unknown keys get a suggestion, repeated keys a
 * note at the first one.
 */
#include <math.h>
#include <string.h>

#include "sema_internal.h"

typedef void (*setting_fn)(nnc_sema *s, const nnc_ast *value);

/* ---- model, data, validate ---- */

static void set_model(nnc_sema *s, const nnc_ast *v) {
  if (v->kind != NNC_AST_NAME) {
    nnc_sema_error(s, v->span, "'model' must name a model, not %s", nnc_sema_describe(s, v));
    return;
  }
  const nnc_ast *m = nnc_sema_find_model(s, v->str);
  if (m) {
    s->train_model = m;
    s->cfg.model = m->str;
    return;
  }
  if (nnc_sema_find_data(s, v->str) >= 0) {
    nnc_sema_error(s, v->span, "'%s' is a data set, not a model", v->str);
    return;
  }
  const char **names = nnc_arena_alloc(s->arena, sizeof(char *) * (size_t)(s->models.n + 1));
  for (int i = 0; i < s->models.n; i++)
    names[i] = s->models.items[i]->str;
  const char *hint = nnc_suggest(v->str, names, s->models.n);
  if (hint)
    nnc_sema_error(s, v->span, "unknown model '%s'; did you mean '%s'?", v->str, hint);
  else
    nnc_sema_error(s, v->span, "unknown model '%s'", v->str);
}

/* NAME.split -> data index and split ("train", "test", "validation"). */
static int data_split(nnc_sema *s, const nnc_ast *v, const char *what, const char **split) {
  static const char *const splits[] = {"train", "test", "validation"};
  const nnc_ast *base = v->kind == NNC_AST_MEMBER ? v->a : v;
  if (base->kind != NNC_AST_NAME) {
    nnc_sema_error(s, v->span, "'%s' must name a data split such as fashion.train, not %s", what,
                   nnc_sema_describe(s, v));
    return -1;
  }
  int d = nnc_sema_find_data(s, base->str);
  if (d < 0) {
    const char **names = nnc_arena_alloc(s->arena, sizeof(char *) * (size_t)(s->datas.n + 1));
    for (int i = 0; i < s->datas.n; i++)
      names[i] = s->datas.items[i]->str;
    const char *hint = nnc_suggest(base->str, names, s->datas.n);
    if (nnc_sema_find_model(s, base->str))
      nnc_sema_error(s, base->span, "'%s' is a model, not a data set", base->str);
    else if (hint)
      nnc_sema_error(s, base->span, "unknown data set '%s'; did you mean '%s'?", base->str, hint);
    else
      nnc_sema_error(s, base->span, "unknown data set '%s'", base->str);
    return -1;
  }
  *split = "train";
  if (v->kind != NNC_AST_MEMBER) return d;
  for (int i = 0; i < 3; i++)
    if (strcmp(v->str, splits[i]) == 0) {
      *split = splits[i];
      return d;
    }
  const char *hint = nnc_suggest(v->str, splits, 3);
  if (hint)
    nnc_sema_error(s, v->name_span, "unknown split '%s' of '%s'; did you mean '%s'?", v->str,
                   base->str, hint);
  else
    nnc_sema_error(s, v->name_span, "unknown split '%s' of '%s' (use train, test or validation)",
                   v->str, base->str);
  return -1;
}

static void set_data(nnc_sema *s, const nnc_ast *v) {
  const char *split;
  int d = data_split(s, v, "data", &split);
  if (d < 0) return;
  if (strcmp(split, "train") != 0) {
    nnc_sema_error(s, v->span, "'data' must be a training split, e.g. %s.train",
                   s->datas.items[d]->str);
    return;
  }
  s->cfg.data_ref = s->datas.items[d]->str;
  s->cfg.data = s->data_cfg[d];
}

static void set_validate(nnc_sema *s, const nnc_ast *v) {
  const char *split;
  int d = data_split(s, v, "validate", &split);
  if (d < 0) return;
  if (strcmp(split, "train") == 0) {
    nnc_sema_error(s, v->span, "'validate' must be the test or validation split, e.g. %s.test",
                   s->datas.items[d]->str);
    return;
  }
  if (strcmp(split, "validation") == 0 && s->data_cfg[d].val_fraction <= 0) {
    nnc_sema_error(s, v->span,
                   "'%s' has no validation split; add 'validation = 0.1' to its data "
                   "block",
                   s->datas.items[d]->str);
    return;
  }
  if (strcmp(split, "test") == 0 && s->data_cfg[d].format == NNC_DATA_NPY &&
      !s->data_cfg[d].test.x_path) {
    nnc_sema_error(s, v->span, "'%s' has no test split; give test_x and test_y to npy()",
                   s->datas.items[d]->str);
    return;
  }
  if (strcmp(split, "test") == 0 && s->data_cfg[d].format == NNC_DATA_CSV &&
      !s->data_cfg[d].test.x_path) {
    nnc_sema_error(s, v->span, "'%s' has no test split; give test = \"file.csv\" to csv()",
                   s->datas.items[d]->str);
    return;
  }
  s->cfg.has_validation = true;
  s->cfg.validate_split = split;
  if (s->cfg.data_ref && strcmp(s->cfg.data_ref, s->datas.items[d]->str) != 0)
    nnc_sema_error(s, v->span, "'validate' must use the same data set as 'data' ('%s')",
                   s->cfg.data_ref);
}

/* ---- loss ---- */

/* In nnc_loss_kind's order. */
static const char *const losses[] = {"mse", "mae", "cross_entropy", "binary_cross_entropy"};

static void set_loss(nnc_sema *s, const nnc_ast *v) {
  static const nnc_loss_kind kinds[] = {NNC_LOSS_MSE, NNC_LOSS_MAE, NNC_LOSS_CROSS_ENTROPY,
                                        NNC_LOSS_BINARY_CROSS_ENTROPY};
  static const char *const p_loss[] = {"reduction"};
  static const char *const reductions[] = {"mean", "sum"};
  int k;
  if (!nnc_sema_word_or_call(s, v, "loss", losses, 4, &k)) return;
  s->cfg.loss = kinds[k];
  s->loss_at = v->span;
  const nnc_ast *a[1];
  nnc_sig sig = {losses[k], p_loss, 1, 0, 0};
  if (!nnc_sema_match(s, v, &sig, a) || !a[0]) return;
  int r;
  if (nnc_sema_word(s, a[0], "reduction", reductions, 2, &r))
    s->cfg.reduction = r ? NNC_REDUCE_SUM : NNC_REDUCE_MEAN;
}

/* ---- optimizer ---- */

static bool positive(nnc_sema *s, const nnc_ast *e, const char *what, double *out) {
  if (!nnc_sema_num(s, e, what, 0, 1e6, out)) return false;
  if (*out > 0) return true;
  nnc_sema_error(s, e->span, "'%s' must be positive", what);
  return false;
}

static void set_optimizer(nnc_sema *s, const nnc_ast *v) {
  static const char *const names[] = {"sgd",   "momentum", "nesterov", "adam",
                                      "adamw", "rmsprop",  "adagrad"};
  static const nnc_optim_kind kinds[] = {NNC_OPT_SGD,    NNC_OPT_MOMENTUM, NNC_OPT_NESTEROV,
                                         NNC_OPT_ADAM,   NNC_OPT_ADAMW,    NNC_OPT_RMSPROP,
                                         NNC_OPT_ADAGRAD};
  static const char *const p_sgd[] = {"lr", "weight_decay"};
  static const char *const p_mom[] = {"lr", "momentum", "weight_decay"};
  static const char *const p_adam[] = {"lr", "beta1", "beta2", "eps", "weight_decay"};
  static const char *const p_rms[] = {"lr", "alpha", "eps", "momentum", "weight_decay"};
  static const char *const p_ada[] = {"lr", "eps", "weight_decay"};
  int k;
  if (!nnc_sema_word_or_call(s, v, "optimizer", names, 7, &k)) return;
  nnc_optim_config *o = &s->cfg.optim;
  nnc_optim_defaults(o, kinds[k]);
  nnc_sig sig = {names[k], p_sgd, 2, 1, 0};
  if (k == 1 || k == 2) sig = (nnc_sig){names[k], p_mom, 3, 1, 0};
  if (k == 3 || k == 4) sig = (nnc_sig){names[k], p_adam, 5, 1, 0};
  if (k == 5) sig = (nnc_sig){names[k], p_rms, 5, 1, 0};
  if (k == 6) sig = (nnc_sig){names[k], p_ada, 3, 1, 0};
  const nnc_ast *a[5];
  if (!nnc_sema_match(s, v, &sig, a)) return;
  for (int i = 0; i < sig.n; i++) {
    if (!a[i]) continue;
    const char *p = sig.names[i];
    if (strcmp(p, "lr") == 0)
      positive(s, a[i], p, &o->lr);
    else if (strcmp(p, "weight_decay") == 0)
      nnc_sema_num(s, a[i], p, 0, 1e6, &o->weight_decay);
    else if (strcmp(p, "momentum") == 0)
      nnc_sema_num(s, a[i], p, 0, 0.999999, &o->momentum);
    else if (strcmp(p, "beta1") == 0)
      nnc_sema_num(s, a[i], p, 0, 0.999999, &o->beta1);
    else if (strcmp(p, "beta2") == 0)
      nnc_sema_num(s, a[i], p, 0, 0.999999, &o->beta2);
    else if (strcmp(p, "alpha") == 0)
      nnc_sema_num(s, a[i], p, 0, 0.999999, &o->alpha);
    else
      positive(s, a[i], p, &o->eps);
  }
}

/* ---- schedule ---- */

static const char *const sched_names[] = {"constant",    "step",   "multistep",
                                          "exponential", "cosine", "warmup"};

static bool set_unit(nnc_sema *s, const nnc_ast *e, bool *given) {
  static const char *const units[] = {"epoch", "step"};
  int u;
  if (!nnc_sema_word(s, e, "per", units, 2, &u)) return false;
  nnc_sched_unit unit = u ? NNC_PER_STEP : NNC_PER_EPOCH;
  if (*given && s->cfg.schedule.unit != unit) {
    nnc_sema_error(s, e->span, "'per' differs between warmup and the schedule inside it");
    return false;
  }
  *given = true;
  s->cfg.schedule.unit = unit;
  return true;
}

static void schedule(nnc_sema *s, const nnc_ast *v, bool inner, bool *unit_given) {
  static const char *const p_const[] = {"per"};
  static const char *const p_step[] = {"every", "gamma", "per"};
  static const char *const p_multi[] = {"milestones", "gamma", "per"};
  static const char *const p_exp[] = {"gamma", "per"};
  static const char *const p_cos[] = {"period", "min_lr", "per"};
  static const char *const p_warm[] = {"length", "then", "start", "per"};
  int k;
  if (!nnc_sema_word_or_call(s, v, "schedule", sched_names, 6, &k)) return;
  nnc_schedule_config *c = &s->cfg.schedule;
  const nnc_ast *a[4];
  static const nnc_sig sigs[] = {{"constant", p_const, 1, 0, 0},  {"step", p_step, 3, 1, 1},
                                 {"multistep", p_multi, 3, 1, 1}, {"exponential", p_exp, 2, 1, 0},
                                 {"cosine", p_cos, 3, 1, 0},      {"warmup", p_warm, 4, 2, 1}};
  if (!nnc_sema_match(s, v, &sigs[k], a)) return;
  if (a[sigs[k].n - 1] && !set_unit(s, a[sigs[k].n - 1], unit_given)) return;
  switch (k) {
  case 0: c->kind = NNC_SCHED_CONSTANT; break;
  case 1:
    c->kind = NNC_SCHED_STEP;
    nnc_sema_int(s, a[0], "every", 1, 1000000000, &c->every);
    c->gamma = 0.1;
    if (a[1]) nnc_sema_num(s, a[1], "gamma", 0, 1e6, &c->gamma);
    break;
  case 2: {
    c->kind = NNC_SCHED_MULTISTEP;
    c->gamma = 0.1;
    if (a[1]) nnc_sema_num(s, a[1], "gamma", 0, 1e6, &c->gamma);
    const nnc_ast *m = a[0];
    if (m->kind != NNC_AST_LIST || m->list.n == 0) {
      nnc_sema_error(s, m->span, "'milestones' must be a list such as [30, 60, 90]");
      break;
    }
    if (m->list.n > NNC_MAX_MILESTONES) {
      nnc_sema_error(s, m->span, "too many milestones (at most %d)", NNC_MAX_MILESTONES);
      break;
    }
    for (int i = 0; i < m->list.n; i++) {
      int64_t t;
      if (!nnc_sema_int(s, m->list.items[i], "milestone", 1, 1000000000, &t)) break;
      if (i && t <= c->milestones[i - 1]) {
        nnc_sema_error(s, m->list.items[i]->span, "milestones must increase");
        break;
      }
      c->milestones[c->nmilestones++] = t;
    }
    break;
  }
  case 3:
    c->kind = NNC_SCHED_EXPONENTIAL;
    c->gamma = 0.95;
    if (a[0]) nnc_sema_num(s, a[0], "gamma", 0, 1e6, &c->gamma);
    break;
  case 4:
    c->kind = NNC_SCHED_COSINE;
    if (a[0]) nnc_sema_int(s, a[0], "period", 1, 1000000000, &c->period);
    if (a[1]) nnc_sema_num(s, a[1], "min_lr", 0, 1e6, &c->min_lr);
    break;
  default:
    if (inner) {
      nnc_sema_error(s, v->name_span, "warmup cannot be nested inside another schedule");
      break;
    }
    nnc_sema_int(s, a[0], "length", 1, 1000000000, &c->warmup);
    if (a[2]) nnc_sema_num(s, a[2], "start", 0, 1, &c->warmup_start);
    c->kind = NNC_SCHED_CONSTANT;
    if (a[1]) schedule(s, a[1], true, unit_given);
    break;
  }
}

static void set_schedule(nnc_sema *s, const nnc_ast *v) {
  nnc_train_config defaults;
  nnc_config_defaults(&defaults);
  s->cfg.schedule = defaults.schedule; /* a --set replaces the file's */
  bool unit_given = false;
  schedule(s, v, false, &unit_given);
}

/* ---- numbers ---- */

static void set_batch(nnc_sema *s, const nnc_ast *v) {
  nnc_sema_int(s, v, "batch", 1, 1 << 20, &s->cfg.batch);
}
static void set_epochs(nnc_sema *s, const nnc_ast *v) {
  nnc_sema_int(s, v, "epochs", 1, 1000000, &s->cfg.epochs);
}
static void set_seed(nnc_sema *s, const nnc_ast *v) {
  int64_t seed;
  if (nnc_sema_int(s, v, "seed", 0, (int64_t)1 << 53, &seed)) s->cfg.seed = (uint64_t)seed;
}
static void set_precision(nnc_sema *s, const nnc_ast *v) {
  static const char *const words[] = {"f32", "bf16"};
  int k;
  if (nnc_sema_word(s, v, "precision", words, 2, &k)) s->cfg.precision = (nnc_precision)k;
}
static void set_l1(nnc_sema *s, const nnc_ast *v) {
  nnc_sema_num(s, v, "l1", 0, 1e6, &s->cfg.regular.l1);
}
static void set_l2(nnc_sema *s, const nnc_ast *v) {
  nnc_sema_num(s, v, "l2", 0, 1e6, &s->cfg.regular.l2);
}
static void set_clip_norm(nnc_sema *s, const nnc_ast *v) {
  positive(s, v, "clip_norm", &s->cfg.regular.clip_norm);
}
static void set_clip_value(nnc_sema *s, const nnc_ast *v) {
  positive(s, v, "clip_value", &s->cfg.regular.clip_value);
}

/* ---- transfer learning ---- */

/* load = checkpoint("file.safetensors", only = [...], strip_prefix = "..", add_prefix = "..") */
static void set_load(nnc_sema *s, const nnc_ast *v) {
  static const char *const p_ckpt[] = {"path", "only", "strip_prefix", "add_prefix"};
  if (v->kind != NNC_AST_CALL || strcmp(v->str, "checkpoint") != 0) {
    nnc_sema_error(s, v->span, "'load' must be checkpoint(\"file.safetensors\", ...)");
    return;
  }
  const nnc_ast *a[4];
  nnc_sig sig = {"checkpoint", p_ckpt, 4, 1, 1};
  if (!nnc_sema_match(s, v, &sig, a)) return;
  nnc_load_config *l = &s->cfg.load;
  nnc_sema_str(s, a[0], "path", &l->path);
  if (a[1] && nnc_sema_strs(s, a[1], "only", l->only, NNC_MAX_PATTERNS, &l->nonly))
    for (int i = 0; i < l->nonly; i++)
      s->load_only_at[i] = a[1]->kind == NNC_AST_LIST ? a[1]->list.items[i]->span : a[1]->span;
  if (a[2]) nnc_sema_str(s, a[2], "strip_prefix", &l->strip_prefix);
  if (a[3]) nnc_sema_str(s, a[3], "add_prefix", &l->add_prefix);
}

static nnc_param_group *new_group(nnc_sema *s, nnc_span at) {
  if (s->cfg.ngroups == NNC_MAX_GROUPS) {
    nnc_sema_error(s, at, "too many parameter groups (at most %d)", NNC_MAX_GROUPS);
    return NULL;
  }
  nnc_param_group *g = &s->cfg.groups[s->cfg.ngroups];
  memset(g, 0, sizeof *g);
  g->lr_scale = 1.0;
  g->span_begin = at.begin;
  g->span_end = at.end;
  s->group_at[s->cfg.ngroups++] = at;
  return g;
}

static bool patterns(nnc_sema *s, const nnc_ast *v, const char *what, nnc_param_group *g) {
  int gi = (int)(g - s->cfg.groups);
  if (!nnc_sema_strs(s, v, what, g->patterns, NNC_MAX_PATTERNS, &g->npatterns)) return false;
  for (int i = 0; i < g->npatterns; i++)
    s->pattern_at[gi][i] = v->kind == NNC_AST_LIST ? v->list.items[i]->span : v->span;
  return true;
}

/* freeze = ["cnn.conv*"]: a frozen group */
static void set_freeze(nnc_sema *s, const nnc_ast *v) {
  nnc_param_group *g = new_group(s, v->span);
  if (!g) return;
  g->frozen = true;
  patterns(s, v, "freeze", g);
}

/* group NAME { params = [...], lr_scale = 10, frozen = false } */
static void group(nnc_sema *s, const nnc_ast *st) {
  static const char *const keys[] = {"params", "lr_scale", "frozen"};
  nnc_param_group *g = new_group(s, st->name_span);
  if (!g) return;
  const nnc_ast *seen[3] = {0};
  for (int i = 0; i < st->body->list.n; i++) {
    const nnc_ast *e = st->body->list.items[i];
    if (e->kind != NNC_AST_ASSIGN) {
      nnc_sema_error(s, e->span, "expected 'setting = value' in a group");
      continue;
    }
    int k = -1;
    for (int j = 0; j < 3; j++)
      if (strcmp(e->str, keys[j]) == 0) k = j;
    if (k < 0) {
      const char *hint = nnc_suggest(e->str, keys, 3);
      if (hint)
        nnc_sema_error(s, e->name_span, "unknown setting '%s' in group; did you mean '%s'?", e->str,
                       hint);
      else
        nnc_sema_error(s, e->name_span,
                       "unknown setting '%s' in group (use params, lr_scale, frozen)", e->str);
      continue;
    }
    if (seen[k]) {
      nnc_sema_duplicate(s, e->str, e, seen[k]);
      continue;
    }
    seen[k] = e;
    if (k == 0)
      patterns(s, e->a, "params", g);
    else if (k == 1)
      nnc_sema_num(s, e->a, "lr_scale", 0, 1e6, &g->lr_scale);
    else
      nnc_sema_bool(s, e->a, "frozen", &g->frozen);
  }
  if (!seen[0]) nnc_sema_error(s, st->name_span, "group '%s' needs 'params = [...]'", st->str);
}

/* ---- training control ---- */

static void set_metrics(nnc_sema *s, const nnc_ast *v) {
  static const char *const metrics[] = {"loss", "accuracy"};
  s->metrics_given = true;
  s->metrics_at = v->span;
  s->cfg.metric_accuracy = false;
  if (v->kind != NNC_AST_LIST) {
    nnc_sema_error(s, v->span, "'metrics' must be a list such as [loss, accuracy]");
    return;
  }
  for (int i = 0; i < v->list.n; i++) {
    int k;
    if (nnc_sema_word(s, v->list.items[i], "metric", metrics, 2, &k) && k == 1)
      s->cfg.metric_accuracy = true;
  }
}

static void set_resume(nnc_sema *s, const nnc_ast *v) {
  nnc_sema_str(s, v, "resume", &s->cfg.resume);
}
static void set_log(nnc_sema *s, const nnc_ast *v) {
  nnc_sema_str(s, v, "log", &s->cfg.log);
}
static void set_log_every(nnc_sema *s, const nnc_ast *v) {
  nnc_sema_int(s, v, "log_every", 1, (int64_t)1 << 40, &s->cfg.log_every);
}

/* early_stop(metric = loss, patience = 5, min_delta = 0, restore_best = false) */
static void set_early_stop(nnc_sema *s, const nnc_ast *v) {
  static const char *const p[] = {"metric", "patience", "min_delta", "restore_best"};
  static const char *const metrics[] = {"loss", "accuracy"};
  const nnc_ast *a[4];
  nnc_sig sig = {"early_stop", p, 4, 0, 0};
  if (!nnc_sema_match(s, v, &sig, a)) return;
  nnc_early_stop_config *e = &s->cfg.early_stop;
  *e = (nnc_early_stop_config){0};
  e->enabled = true;
  e->metric = NNC_METRIC_LOSS;
  e->patience = 5;
  int k;
  if (a[0] && nnc_sema_word(s, a[0], "metric", metrics, 2, &k)) {
    e->metric = k ? NNC_METRIC_ACCURACY : NNC_METRIC_LOSS;
    s->early_stop_at = a[0]->span;
  }
  if (a[1]) nnc_sema_int(s, a[1], "patience", 1, 1000000, &e->patience);
  if (a[2]) nnc_sema_num(s, a[2], "min_delta", 0, 1e30, &e->min_delta);
  if (a[3]) nnc_sema_bool(s, a[3], "restore_best", &e->restore_best);
}

/* checkpoint(path = "ckpt.safetensors", every = 1, keep_best = false) */
static void set_checkpoint(nnc_sema *s, const nnc_ast *v) {
  static const char *const p[] = {"path", "every", "keep_best"};
  const nnc_ast *a[3];
  nnc_sig sig = {"checkpoint", p, 3, 1, 1};
  if (!nnc_sema_match(s, v, &sig, a)) return;
  nnc_checkpoint_config *c = &s->cfg.checkpoint;
  *c = (nnc_checkpoint_config){.every = 1};
  nnc_sema_str(s, a[0], "path", &c->path);
  if (a[1]) nnc_sema_int(s, a[1], "every", 1, 1000000, &c->every);
  if (a[2]) nnc_sema_bool(s, a[2], "keep_best", &c->keep_best);
}

/* ---- the block ---- */

static const struct {
  const char *key;
  setting_fn fn;
  bool is_call; /* written `key(...)` rather than `key = value` */
} settings[] = {
    {"model", set_model, false},
    {"data", set_data, false},
    {"validate", set_validate, false},
    {"loss", set_loss, false},
    {"optimizer", set_optimizer, false},
    {"schedule", set_schedule, false},
    {"batch", set_batch, false},
    {"epochs", set_epochs, false},
    {"seed", set_seed, false},
    {"precision", set_precision, false},
    {"l1", set_l1, false},
    {"l2", set_l2, false},
    {"clip_norm", set_clip_norm, false},
    {"clip_value", set_clip_value, false},
    {"load", set_load, false},
    {"freeze", set_freeze, false},
    {"metrics", set_metrics, false},
    {"resume", set_resume, false},
    {"log", set_log, false},
    {"log_every", set_log_every, false},
    {"early_stop", set_early_stop, true},
    {"checkpoint", set_checkpoint, true},
};
enum { NSETTINGS = sizeof settings / sizeof settings[0] };

static int find_setting(const char *key) {
  for (int i = 0; i < NSETTINGS; i++)
    if (strcmp(settings[i].key, key) == 0) return i;
  return -1;
}

static void unknown_setting(nnc_sema *s, const nnc_ast *st) {
  const char *keys[NSETTINGS + 1];
  for (int i = 0; i < NSETTINGS; i++)
    keys[i] = settings[i].key;
  keys[NSETTINGS] = "group";
  const char *hint = nnc_suggest(st->str, keys, NSETTINGS + 1);
  if (hint)
    nnc_sema_error(s, st->name_span, "unknown setting '%s' in train block; did you mean '%s'?",
                   st->str, hint);
  else
    nnc_sema_error(s, st->name_span, "unknown setting '%s' in train block", st->str);
}

/* IDX files hold class labels (whole numbers), which only cross_entropy
 * reads; a loss on float targets would fail when the data loads. */
static void check_labels(nnc_sema *s) {
  const nnc_train_config *c = &s->cfg;
  if (!c->data_ref || c->data.format != NNC_DATA_IDX || c->loss == NNC_LOSS_CROSS_ENTROPY) return;
  nnc_sema_error(s, s->loss_at,
                 "%s needs float targets, but '%s' is IDX data, whose labels are class "
                 "indices; use 'loss = cross_entropy' (one output per class)",
                 losses[c->loss], c->data_ref);
  int d = nnc_sema_find_data(s, c->data_ref);
  if (d >= 0) nnc_sema_note(s, s->datas.items[d]->name_span, "'%s' is declared here", c->data_ref);
}

/* Rules that involve several settings. */
static void check_together(nnc_sema *s) {
  nnc_train_config *c = &s->cfg;
  bool classify = c->loss == NNC_LOSS_CROSS_ENTROPY || c->loss == NNC_LOSS_BINARY_CROSS_ENTROPY;
  if (!s->metrics_given)
    c->metric_accuracy = classify;
  else if (c->metric_accuracy && !classify)
    nnc_sema_error(s, s->metrics_at,
                   "accuracy needs a classification loss (cross_entropy or "
                   "binary_cross_entropy)");
  if (c->early_stop.enabled && c->early_stop.metric == NNC_METRIC_ACCURACY && !classify)
    nnc_sema_error(s, s->early_stop_at,
                   "early stopping on accuracy needs a classification "
                   "loss");
  check_labels(s);
}

/* The settings of one train block (the file's, or the --set ones), each
 * at most once per block (seen). */
static void apply_block(nnc_sema *s, const nnc_ast *block, const nnc_ast **seen) {
  const nnc_ast *body = block->body;
  for (int i = 0; i < body->list.n; i++) {
    const nnc_ast *st = body->list.items[i];
    if (st->kind == NNC_AST_GROUP) {
      group(s, st);
      continue;
    }
    if (st->kind != NNC_AST_ASSIGN && st->kind != NNC_AST_CALL) {
      nnc_sema_error(s, st->span, "expected 'setting = value' in a train block");
      continue;
    }
    int k = find_setting(st->str);
    if (k < 0) {
      unknown_setting(s, st);
      continue;
    }
    bool is_call = st->kind == NNC_AST_CALL;
    if (is_call != settings[k].is_call) {
      if (is_call)
        nnc_sema_error(s, st->span, "'%s' is a setting; write '%s = ...'", st->str, st->str);
      else
        nnc_sema_error(s, st->name_span, "write '%s(...)' without '='", st->str);
      continue;
    }
    if (seen[k]) {
      nnc_sema_duplicate(s, st->str, st, seen[k]);
      continue;
    }
    seen[k] = st;
    settings[k].fn(s, is_call ? st : st->a);
  }
}

void nnc_sema_train(nnc_sema *s) {
  const nnc_ast *seen[NSETTINGS] = {0}, *replaced[NSETTINGS] = {0};
  apply_block(s, s->train, seen);
  /* --set: the command line's settings replace the file's. */
  for (int i = 0; i < s->noverrides; i++)
    apply_block(s, s->overrides[i], replaced);
  /* Settings that read others (epochs may follow schedule) are finished
   * after the whole block. */
  static const char *const required[] = {"model", "data", "loss"};
  for (int i = 0; i < 3; i++)
    if (!seen[find_setting(required[i])] && !replaced[find_setting(required[i])])
      nnc_sema_error(s, s->train->name_span, "train block needs '%s = ...'", required[i]);
  check_together(s);
}
