/* sema.c: semantic analysis, top to bottom.
 *
 * Takes the parsed FILE; gives a module (see sema.h). The order of work:
 *   1. declarations: names of models and data sets, duplicates, one train block
 *   2. data blocks -> data configs (sema_data.c)
 *   3. models that use each other in a cycle (reported once, then skipped)
 *   4. the train block -> training config (sema_train.c)
 *   5. every model checked on its own, in file order, lowering it into a
 *      scratch graph (sema_model.c): names, shapes, arguments
 *   6. if all is well, the trained model lowered for real into the module's
 *      `train` and `eval` graphs with inputs, loss and outputs (sema_loss.c)
 */
#include <stdarg.h>
#include <string.h>

#include "sema_internal.h"

void nnc_sema_error(nnc_sema *s, nnc_span at, const char *fmt, ...) {
  if (s->quiet) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  nnc_diag_error(s->diags, at, "%s", buf);
}

void nnc_sema_note(nnc_sema *s, nnc_span at, const char *fmt, ...) {
  if (s->quiet) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  nnc_diag_note(s->diags, at, "%s", buf);
}

const nnc_ast *nnc_sema_find_model(const nnc_sema *s, const char *name) {
  int i = nnc_name_map_get(&s->model_index, name);
  return i >= 0 ? s->models.items[i] : NULL;
}

int nnc_sema_find_data(const nnc_sema *s, const char *name) {
  return nnc_name_map_get(&s->data_index, name);
}

static void push(nnc_sema *s, nnc_ast_list *l, nnc_ast *item) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 8;
    l->items = nnc_arena_grow(s->arena, l->items, sizeof(nnc_ast *) * (size_t)l->n,
                              sizeof(nnc_ast *) * (size_t)cap);
    l->cap = cap;
  }
  l->items[l->n++] = item;
}

/* ---- 1. declarations ---- */

static const nnc_ast *find_decl(nnc_sema *s, const char *name) {
  const nnc_ast *m = nnc_sema_find_model(s, name);
  if (m) return m;
  int d = nnc_sema_find_data(s, name);
  return d >= 0 ? s->datas.items[d] : NULL;
}

static void collect(nnc_sema *s) {
  for (int i = 0; i < s->file->list.n; i++) {
    nnc_ast *d = s->file->list.items[i];
    if (d->kind == NNC_AST_TRAIN) {
      if (s->train) {
        nnc_sema_error(s, d->name_span, "only one train block is allowed");
        nnc_sema_note(s, s->train->name_span, "the first train block is here");
      } else {
        s->train = d;
      }
      continue;
    }
    const nnc_ast *prev = find_decl(s, d->str);
    if (prev) {
      nnc_sema_error(s, d->name_span, "redefinition of '%s'", d->str);
      nnc_sema_note(s, prev->name_span, "previous definition is here");
      continue;
    }
    bool reserved = false;
    for (int k = 0; k < nnc_builtin_count(); k++)
      reserved |= strcmp(nnc_builtin_name(k), d->str) == 0;
    if (reserved) {
      nnc_sema_error(s, d->name_span, "'%s' is a built-in layer; choose another name", d->str);
      continue;
    }
    bool is_model = d->kind == NNC_AST_MODEL;
    nnc_ast_list *l = is_model ? &s->models : &s->datas;
    nnc_name_map_put(is_model ? &s->model_index : &s->data_index, s->arena, d->str, l->n);
    push(s, l, d);
  }
}

/* ---- 3. cycles between models ---- */

typedef struct cycle_walk {
  nnc_sema *s;
  int *state; /* 0 unseen, 1 on the path, 2 done */
  int *path;
  int depth;
} cycle_walk;

static void visit_model(cycle_walk *w, int i);

static void visit_expr(cycle_walk *w, const nnc_ast *e) {
  if (!e) return;
  switch (e->kind) {
  case NNC_AST_CALL: {
    int j = nnc_name_map_get(&w->s->model_index, e->str);
    if (j >= 0) {
      if (w->state[j] == 1) {
        /* a back edge: every model on the path from j is in the cycle */
        nnc_sema_error(w->s, e->name_span, "model '%s' uses itself", e->str);
        for (int k = w->depth - 1; k >= 0; k--) {
          w->s->model_bad[w->path[k]] = true;
          if (w->path[k] == j) break;
        }
      } else if (w->state[j] == 0) {
        visit_model(w, j);
      }
    }
    for (int k = 0; k < e->list.n; k++)
      visit_expr(w, e->list.items[k]);
    return;
  }
  case NNC_AST_ARG:
  case NNC_AST_NEG:
  case NNC_AST_ASSIGN:
  case NNC_AST_RETURN:
  case NNC_AST_PARAM: visit_expr(w, e->a); return;
  case NNC_AST_BINARY:
    visit_expr(w, e->a);
    visit_expr(w, e->b);
    return;
  case NNC_AST_LIST:
    for (int k = 0; k < e->list.n; k++)
      visit_expr(w, e->list.items[k]);
    return;
  default: return;
  }
}

static void visit_model(cycle_walk *w, int i) {
  w->state[i] = 1;
  w->path[w->depth++] = i;
  const nnc_ast *body = w->s->models.items[i]->body;
  for (int k = 0; k < body->list.n; k++)
    visit_expr(w, body->list.items[k]);
  w->depth--;
  w->state[i] = 2;
}

static void check_cycles(nnc_sema *s) {
  int n = s->models.n;
  cycle_walk w = {s, nnc_arena_alloc(s->arena, sizeof(int) * (size_t)(n + 1)),
                  nnc_arena_alloc(s->arena, sizeof(int) * (size_t)(n + 1)), 0};
  for (int i = 0; i < n; i++)
    if (!w.state[i]) visit_model(&w, i);
}

/* ---- 5. each model on its own ---- */

static void check_model(nnc_sema *s, int i) {
  const nnc_ast *model = s->models.items[i];
  nnc_module *scratch = nnc_module_new(s->arena, model->str);
  nnc_lower L;
  memset(&L, 0, sizeof L);
  L.s = s;
  L.m = scratch;
  L.g = nnc_graph_new(scratch, "check");
  L.training = true;
  L.batch = s->cfg.batch;
  nnc_value inputs[8];
  bool ok = true;
  if (model->list.n > 8) {
    nnc_sema_error(s, model->list.items[8]->span, "too many inputs (at most 8)");
    return;
  }
  for (int k = 0; k < model->list.n; k++) {
    const nnc_ast *in = model->list.items[k];
    nnc_dtype t;
    nnc_shape sample;
    if (!nnc_lower_type(s, in->type, &t, &sample)) {
      ok = false;
      continue;
    }
    nnc_shape shape = {sample.rank + 1, {L.batch}};
    for (int d = 0; d < sample.rank; d++)
      shape.dim[d + 1] = sample.dim[d];
    if (!nnc_lower_check_shape(&L, in->type->span, "a batch of this input", &shape)) {
      ok = false;
      continue;
    }
    inputs[k] = (nnc_value){nnc_ir_fill(L.g, t, &shape, 0.0), true, false, 0};
  }
  nnc_dtype t;
  nnc_shape out;
  ok &= nnc_lower_type(s, model->type, &t, &out);
  if (ok && t != NNC_F32) {
    nnc_sema_error(s, model->type->name_span, "a model's output must be f32");
    ok = false;
  }
  if (!ok) return;
  nnc_lower_model(&L, model, model->str, inputs, model->list.n);
}

nnc_module *nnc_sema_run(nnc_arena *arena, nnc_diags *diags, const nnc_ast *file,
                         int64_t batch_override) {
  nnc_sema_overrides o = {.batch = batch_override};
  return nnc_sema_run_with(arena, diags, file, &o);
}

nnc_module *nnc_sema_run_with(nnc_arena *arena, nnc_diags *diags, const nnc_ast *file,
                              const nnc_sema_overrides *o) {
  nnc_sema s;
  memset(&s, 0, sizeof s);
  s.eval_batch = o->eval_batch;
  s.stat_ranks = o->stat_ranks > 1 ? o->stat_ranks : 1;
  s.stat_ranks_set = o->stat_ranks > 0 ? o->stat_ranks : 0;
  s.arena = arena;
  s.diags = diags;
  s.file = file;
  s.overrides = o->settings;
  s.noverrides = o->nsettings;
  nnc_config_defaults(&s.cfg);
  if (file->list.n == 0) {
    nnc_diag_file_error(diags, file->span.file,
                        "nothing to check: the file declares no model, data or train block");
    return NULL;
  }
  collect(&s);
  s.data_cfg = nnc_arena_alloc(arena, sizeof(nnc_data_config) * (size_t)(s.datas.n + 1));
  s.model_bad = nnc_arena_alloc(arena, sizeof(bool) * (size_t)(s.models.n + 1));
  for (int i = 0; i < s.datas.n; i++)
    nnc_sema_data(&s, s.datas.items[i], &s.data_cfg[i]);
  check_cycles(&s);
  if (s.train) nnc_sema_train(&s);
  if (o->batch > 0) s.cfg.batch = o->batch; /* nnc run --batch N */
  if (o->lr > 0) s.cfg.optim.lr = o->lr;    /* --lr X */
  if (s.train_model && s.train_model->list.n != 1)
    nnc_sema_error(&s, s.train_model->name_span,
                   "a trained model takes exactly one input (the sample); '%s' takes %d",
                   s.train_model->str, s.train_model->list.n);
  for (int i = 0; i < s.models.n && !diags->fatal; i++)
    if (!s.model_bad[i]) check_model(&s, i);
  if (!s.train || !s.train_model || !nnc_diags_ok(diags)) return NULL;
  if (!nnc_sema_build(&s)) return NULL;
  return s.module;
}
