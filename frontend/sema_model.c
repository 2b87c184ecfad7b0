/* sema_model.c: model bodies — names, tensor expressions and shapes, lowered
 * straight into graph IR.
 *
 * Takes a MODEL declaration and graph nodes for its inputs; gives the node
 * of its output. Checking and lowering are one walk: shapes are inferred by
 * building the nodes, and every user-facing precondition of a builder is
 * checked (and reported with a span) before the builder runs, so the IR's
 * own checks (nnc_ir_bug) never fire on user input.
 *
 * Values inside a model carry the batch as their first axis when they derive
 * from the input (`batched`); parameters do not. The language shows shapes
 * per sample (`x: f32[784]`, reshape targets, reduction axes); messages show
 * the real tensor shapes, batch included.
 *
 * A model used inside another (`f = cnn(x)`) is lowered again in place
 * under the prefix of its instance, with errors silenced: its body has been
 * checked on its own (sema.c) and reported there.
 */
#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "sema_internal.h"

/* ---- Reporting ---- */

void nnc_lower_error(nnc_lower *L, nnc_span at, const char *fmt, ...) {
  L->failed = true;
  if (L->s->quiet) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  nnc_diag_error(L->s->diags, at, "%s", buf);
}

void nnc_lower_note(nnc_lower *L, nnc_span at, const char *fmt, ...) {
  if (L->s->quiet) return;
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  nnc_diag_note(L->s->diags, at, "%s", buf);
}

const char *nnc_lower_shape_str(nnc_lower *L, const nnc_node *n) {
  char buf[160];
  return nnc_arena_strdup(L->s->arena, nnc_shape_str(buf, sizeof buf, n->dtype, &n->shape));
}

bool nnc_lower_check_shape(nnc_lower *L, nnc_span at, const char *what, const nnc_shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) {
    if (s->dim[i] < 1) {
      nnc_lower_error(L, at, "%s would have an empty dimension (%lld)", what, (long long)s->dim[i]);
      return false;
    }
    if (s->dim[i] > NNC_MAX_DIM || n > NNC_MAX_ELEMENTS / s->dim[i]) {
      nnc_lower_error(L, at, "%s is too large (more than %lld elements)", what,
                      (long long)NNC_MAX_ELEMENTS);
      return false;
    }
    n *= s->dim[i];
  }
  return true;
}

/* ---- Types ---- */

bool nnc_lower_type(nnc_sema *s, const nnc_ast *type, nnc_dtype *dtype, nnc_shape *shape) {
  static const char *const dtypes[] = {"f32", "i32"};
  if (strcmp(type->str, "f32") == 0)
    *dtype = NNC_F32;
  else if (strcmp(type->str, "i32") == 0)
    *dtype = NNC_I32;
  else {
    const char *hint = nnc_suggest(type->str, dtypes, 2);
    if (hint)
      nnc_sema_error(s, type->name_span, "unknown element type '%s'; did you mean '%s'?", type->str,
                     hint);
    else
      nnc_sema_error(s, type->name_span, "unknown element type '%s' (use f32, or i32 for indices)",
                     type->str);
    return false;
  }
  if (type->list.n > NNC_MAX_RANK - 1) {
    nnc_sema_error(s, type->span, "too many dimensions: %d (the limit is %d)", type->list.n,
                   NNC_MAX_RANK - 1);
    return false;
  }
  shape->rank = type->list.n;
  int64_t total = 1;
  for (int i = 0; i < type->list.n; i++) {
    const nnc_ast *d = type->list.items[i];
    double f;
    if (!nnc_sema_num(s, d, "dimension", -1e300, 1e300, &f)) return false;
    if (f != floor(f)) {
      nnc_sema_error(s, d->span, "dimension must be an integer, got %g", f);
      return false;
    }
    if (f < 1) {
      nnc_sema_error(s, d->span, "dimension must be positive, got %.0f", f);
      return false;
    }
    if (f > (double)NNC_MAX_DIM) {
      nnc_sema_error(s, d->span, "dimension %.0f is too large (the limit is %lld)", f,
                     (long long)NNC_MAX_DIM);
      return false;
    }
    int64_t v = (int64_t)f;
    if (total > NNC_MAX_ELEMENTS / v) {
      nnc_sema_error(s, type->span, "shape is too large (more than %lld elements)",
                     (long long)NNC_MAX_ELEMENTS);
      return false;
    }
    total *= v;
    shape->dim[i] = v;
  }
  return true;
}

/* ---- Tensors, names, tags ---- */

static const nnc_param_group *group_of(const nnc_lower *L, const char *name) {
  const nnc_train_config *c = &L->s->cfg;
  for (int i = 0; i < c->ngroups; i++)
    for (int k = 0; k < c->groups[i].npatterns; k++)
      if (fnmatch(c->groups[i].patterns[k], name, 0) == 0) return &c->groups[i];
  return NULL;
}

bool nnc_lower_is_frozen(const nnc_lower *L, const char *name) {
  const nnc_param_group *g = group_of(L, name);
  return g && g->frozen;
}

nnc_node *nnc_lower_tensor(nnc_lower *L, const char *name, nnc_tensor_role role,
                           const nnc_shape *shape, nnc_init init, nnc_span at) {
  int t = nnc_module_find_tensor(L->m, name);
  if (t < 0) {
    t = nnc_module_add_tensor(L->m, name, role, NNC_F32, shape, init, at);
    const nnc_param_group *g = role == NNC_ROLE_PARAM ? group_of(L, name) : NULL;
    if (g) {
      if (g->frozen) L->m->tensors[t].role = NNC_ROLE_FROZEN;
      L->m->tensors[t].lr_scale = g->lr_scale;
    }
  } else if (!nnc_shape_eq(&L->m->tensors[t].shape, shape)) {
    nnc_ir_bug("tensor %s lowered with two shapes", name);
  }
  return nnc_ir_param(L->g, t);
}

const char *nnc_lower_layer_name(nnc_lower *L, nnc_scope *sc, const char *name, nnc_span at) {
  int i = nnc_name_map_put(&sc->layer_index, L->s->arena, name, sc->nlayers);
  if (i != sc->nlayers) {
    nnc_lower_error(L, at, "duplicate layer name '%s' in model '%s'", name, sc->model->str);
    nnc_lower_note(L, sc->layer_at[i], "'%s' is first used here", name);
    return NULL;
  }
  if (sc->nlayers == sc->layer_cap) {
    int cap = sc->layer_cap ? 2 * sc->layer_cap : 8;
    nnc_arena *a = L->s->arena;
    sc->layer_names = nnc_arena_grow(a, sc->layer_names, sizeof(char *) * (size_t)sc->nlayers,
                                     sizeof(char *) * (size_t)cap);
    sc->layer_at = nnc_arena_grow(a, sc->layer_at, sizeof(nnc_span) * (size_t)sc->nlayers,
                                  sizeof(nnc_span) * (size_t)cap);
    sc->layer_cap = cap;
  }
  sc->layer_names[sc->nlayers] = name;
  sc->layer_at[sc->nlayers++] = at;
  return nnc_arena_printf(L->s->arena, "%s.%s", sc->prefix, name);
}

void nnc_lower_tag(nnc_lower *L, int mark, nnc_span at, const char *name) {
  for (int i = mark; i < L->g->nnodes; i++) {
    nnc_node *n = L->g->nodes[i];
    if (n->op == NNC_OP_PARAM || n->op == NNC_OP_INPUT) continue;
    n->span = at;
    n->name = name;
  }
}

/* ---- Variables ---- */

static nnc_var *find_var(nnc_scope *sc, const char *name) {
  for (int i = sc->nvars - 1; i >= 0; i--)
    if (strcmp(sc->vars[i].name, name) == 0) return &sc->vars[i];
  return NULL;
}

static nnc_var *add_var(nnc_lower *L, nnc_scope *sc, const char *name, nnc_span at) {
  if (sc->nvars == sc->var_cap) {
    int cap = sc->var_cap ? 2 * sc->var_cap : 8;
    sc->vars = nnc_arena_grow(L->s->arena, sc->vars, sizeof(nnc_var) * (size_t)sc->nvars,
                              sizeof(nnc_var) * (size_t)cap);
    sc->var_cap = cap;
  }
  nnc_var *v = &sc->vars[sc->nvars++];
  memset(v, 0, sizeof *v);
  v->name = name;
  v->at = at;
  return v;
}

/* ---- Values and elementwise arithmetic ---- */

nnc_node *nnc_lower_node(nnc_lower *L, nnc_value v) {
  if (v.node) return v.node;
  return nnc_ir_const(L->g, NNC_F32, v.num);
}

static bool both_f32(nnc_lower *L, nnc_span at, const char *opname, nnc_value a, nnc_value b) {
  nnc_value vs[2] = {a, b};
  for (int i = 0; i < 2; i++)
    if (vs[i].node && vs[i].node->dtype != NNC_F32) {
      nnc_lower_error(L, at, "'%s' needs f32 values, got %s", opname,
                      nnc_lower_shape_str(L, vs[i].node));
      return false;
    }
  return true;
}

static double fold(nnc_op op, double a, double b) {
  switch (op) {
  case NNC_OP_ADD: return a + b;
  case NNC_OP_SUB: return a - b;
  case NNC_OP_MUL: return a * b;
  case NNC_OP_DIV: return a / b;
  default: return 0;
  }
}

/* Prepends 1-dims so n has rank r. */
static nnc_node *to_rank(nnc_lower *L, nnc_node *n, int r) {
  if (n->shape.rank == 0 || n->shape.rank == r) return n;
  nnc_shape s = {r, {0}};
  int k = r - n->shape.rank;
  for (int i = 0; i < r; i++)
    s.dim[i] = i < k ? 1 : n->shape.dim[i - k];
  return nnc_ir_reshape(L->g, n, &s);
}

nnc_value nnc_lower_binary(nnc_lower *L, nnc_span at, nnc_op op, const char *opname, nnc_value a,
                           nnc_value b) {
  if ((!a.node && !a.is_num) || (!b.node && !b.is_num)) return NNC_VALUE_ERROR;
  if (a.is_num && b.is_num) return (nnc_value){NULL, false, true, fold(op, a.num, b.num)};
  if (!both_f32(L, at, opname, a, b)) return NNC_VALUE_ERROR;
  int ra = a.node ? a.node->shape.rank : 0, rb = b.node ? b.node->shape.rank : 0;
  int r = ra > rb ? ra : rb;
  /* The batch axis must stay the first axis of the result. */
  if ((a.batched && ra < r) || (b.batched && rb < r)) {
    nnc_lower_error(L, at,
                    "cannot combine %s and %s with '%s': the parameter has more dimensions "
                    "than the batched value",
                    nnc_lower_shape_str(L, a.node), nnc_lower_shape_str(L, b.node), opname);
    return NNC_VALUE_ERROR;
  }
  if (a.node && b.node && ra && rb) {
    for (int i = 1; i <= (ra < rb ? ra : rb); i++) {
      int64_t da = a.node->shape.dim[ra - i], db = b.node->shape.dim[rb - i];
      if (da != db && da != 1 && db != 1) {
        nnc_lower_error(L, at, "shapes %s and %s do not match for '%s'",
                        nnc_lower_shape_str(L, a.node), nnc_lower_shape_str(L, b.node), opname);
        return NNC_VALUE_ERROR;
      }
    }
  }
  nnc_node *x = to_rank(L, nnc_lower_node(L, a), r);
  nnc_node *y = to_rank(L, nnc_lower_node(L, b), r);
  return (nnc_value){nnc_ir_binary(L->g, op, x, y), a.batched || b.batched, false, 0};
}

/* a @ w: a[..., K] (batched or not) times an unbatched matrix w[K, N]. */
static nnc_value lower_matmul(nnc_lower *L, nnc_span at, nnc_value a, nnc_value b) {
  if ((!a.node && !a.is_num) || (!b.node && !b.is_num)) return NNC_VALUE_ERROR;
  if (a.is_num || b.is_num) {
    nnc_lower_error(L, at, "'@' multiplies matrices; use '*' to scale by a number");
    return NNC_VALUE_ERROR;
  }
  if (!both_f32(L, at, "@", a, b)) return NNC_VALUE_ERROR;
  nnc_node *x = a.node, *w = b.node;
  if (b.batched || w->shape.rank != 2) {
    nnc_lower_error(L, at, "the right operand of '@' must be a parameter matrix [in, out], got %s",
                    nnc_lower_shape_str(L, w));
    return NNC_VALUE_ERROR;
  }
  if (x->shape.rank < 2) {
    nnc_lower_error(L, at, "the left operand of '@' must have at least 2 dimensions, got %s",
                    nnc_lower_shape_str(L, x));
    return NNC_VALUE_ERROR;
  }
  int r = x->shape.rank;
  int64_t k = x->shape.dim[r - 1];
  if (k != w->shape.dim[0]) {
    nnc_lower_error(L, at, "inner dimensions of '@' differ: %s @ %s (%lld vs %lld)",
                    nnc_lower_shape_str(L, x), nnc_lower_shape_str(L, w), (long long)k,
                    (long long)w->shape.dim[0]);
    return NNC_VALUE_ERROR;
  }
  nnc_shape flat = {2, {nnc_shape_numel(&x->shape) / k, k}};
  nnc_node *y = nnc_ir_matmul(L->g, nnc_ir_reshape(L->g, x, &flat), w, false, false);
  nnc_shape out = x->shape;
  out.dim[r - 1] = w->shape.dim[1];
  return (nnc_value){nnc_ir_reshape(L->g, y, &out), a.batched, false, 0};
}

/* ---- Expressions ---- */

static const char *const *model_names(nnc_lower *L, int *n) {
  nnc_sema *s = L->s;
  int nb = nnc_builtin_count();
  const char **all = nnc_arena_alloc(s->arena, sizeof(char *) * (size_t)(nb + s->models.n + 1));
  for (int i = 0; i < nb; i++)
    all[i] = nnc_builtin_name(i);
  for (int i = 0; i < s->models.n; i++)
    all[nb + i] = s->models.items[i]->str;
  *n = nb + s->models.n;
  return all;
}

static nnc_value lower_name(nnc_lower *L, nnc_scope *sc, const nnc_ast *e) {
  nnc_var *v = find_var(sc, e->str);
  if (v) return v->value;
  for (int i = 0; i < nnc_builtin_count(); i++)
    if (strcmp(nnc_builtin_name(i), e->str) == 0) {
      nnc_lower_error(L, e->span, "'%s' is a function; call it, e.g. %s(h)", e->str, e->str);
      return NNC_VALUE_ERROR;
    }
  if (nnc_sema_find_model(L->s, e->str)) {
    nnc_lower_error(L, e->span, "'%s' is a model; call it, e.g. %s(x)", e->str, e->str);
    return NNC_VALUE_ERROR;
  }
  const char **names = nnc_arena_alloc(L->s->arena, sizeof(char *) * (size_t)(sc->nvars + 1));
  for (int i = 0; i < sc->nvars; i++)
    names[i] = sc->vars[i].name;
  const char *hint = nnc_suggest(e->str, names, sc->nvars);
  if (hint)
    nnc_lower_error(L, e->span, "unknown name '%s'; did you mean '%s'?", e->str, hint);
  else
    nnc_lower_error(L, e->span, "unknown name '%s'", e->str);
  return NNC_VALUE_ERROR;
}

/* `cnn(x)` or `cnn(x, name = "features")` inside a model. */
static nnc_value lower_model_call(nnc_lower *L, nnc_scope *sc, const nnc_ast *call,
                                  const nnc_ast *callee) {
  int nin = callee->list.n;
  nnc_value in[8];
  const char *instance = NULL;
  nnc_span instance_at = call->name_span;
  int npos = 0;
  bool ok = true;
  for (int i = 0; i < call->list.n; i++) {
    const nnc_ast *arg = call->list.items[i];
    if (arg->str && strcmp(arg->str, "name") == 0) {
      ok &= nnc_sema_str(L->s, arg->a, "name", &instance);
      instance_at = arg->a->span;
    } else if (arg->str) {
      nnc_lower_error(L, arg->name_span,
                      "unknown argument '%s' to model '%s' (models take their "
                      "inputs and an optional name)",
                      arg->str, callee->str);
      ok = false;
    } else if (npos >= nin || npos >= 8) {
      nnc_lower_error(L, arg->span, "too many arguments to model '%s': it takes %d input%s",
                      callee->str, nin, nin == 1 ? "" : "s");
      return NNC_VALUE_ERROR;
    } else {
      in[npos++] = nnc_lower_expr(L, sc, arg->a);
      if (!in[npos - 1].node) ok = false;
    }
  }
  if (npos < nin) {
    nnc_lower_error(L, call->span, "model '%s' takes %d input%s, got %d", callee->str, nin,
                    nin == 1 ? "" : "s", npos);
    return NNC_VALUE_ERROR;
  }
  if (!ok) return NNC_VALUE_ERROR;
  /* Each input must have the declared per-sample type. */
  for (int i = 0; i < nin; i++) {
    const nnc_ast *decl = callee->list.items[i];
    nnc_dtype t;
    nnc_shape s;
    L->s->quiet++;
    bool typed = nnc_lower_type(L->s, decl->type, &t, &s);
    L->s->quiet--;
    if (!typed) return NNC_VALUE_ERROR;
    nnc_node *n = in[i].node;
    bool match = in[i].batched && n->dtype == t && n->shape.rank == s.rank + 1;
    for (int d = 0; match && d < s.rank; d++)
      match = n->shape.dim[d + 1] == s.dim[d];
    if (!match) {
      nnc_shape want = {s.rank + 1, {n->shape.dim[0]}};
      for (int d = 0; d < s.rank; d++)
        want.dim[d + 1] = s.dim[d];
      char buf[160];
      nnc_lower_error(L, call->list.items[i]->span,
                      "input '%s' of model '%s' must be %s (%s per sample), got %s", decl->str,
                      callee->str, nnc_shape_str(buf, sizeof buf, t, &want),
                      nnc_arena_strdup(L->s->arena, nnc_shape_str(buf, sizeof buf, t, &s)),
                      in[i].batched ? nnc_lower_shape_str(L, n)
                                    : nnc_arena_printf(L->s->arena, "the unbatched %s",
                                                       nnc_lower_shape_str(L, n)));
      nnc_lower_note(L, decl->span, "declared here");
      return NNC_VALUE_ERROR;
    }
  }
  /* Instance name: the model's name, then name2, name3, ... */
  if (!instance) {
    int count = 0;
    size_t k = strlen(callee->str);
    for (int i = 0; i < sc->nlayers; i++) {
      const char *ln = sc->layer_names[i];
      if (strncmp(ln, callee->str, k) == 0 && strspn(ln + k, "0123456789") == strlen(ln + k))
        count++;
    }
    instance = count ? nnc_arena_printf(L->s->arena, "%s%d", callee->str, count + 1) : callee->str;
  }
  const char *path = nnc_lower_layer_name(L, sc, instance, instance_at);
  if (!path) return NNC_VALUE_ERROR;
  L->s->quiet++;
  nnc_value out = nnc_lower_model(L, callee, path, in, nin);
  L->s->quiet--;
  return out;
}

static nnc_value lower_call(nnc_lower *L, nnc_scope *sc, const nnc_ast *call) {
  bool found;
  nnc_value v = nnc_lower_builtin(L, sc, call, &found);
  if (found) return v;
  const nnc_ast *callee = nnc_sema_find_model(L->s, call->str);
  if (callee) {
    for (int i = 0; i < L->s->models.n; i++)
      if (L->s->models.items[i] == callee && L->s->model_bad[i]) {
        L->failed = true; /* a cycle, reported in sema.c */
        return NNC_VALUE_ERROR;
      }
    return lower_model_call(L, sc, call, callee);
  }
  int n;
  const char *const *names = model_names(L, &n);
  const char *hint = nnc_suggest(call->str, names, n);
  if (hint)
    nnc_lower_error(L, call->name_span, "unknown layer or function '%s'; did you mean '%s'?",
                    call->str, hint);
  else
    nnc_lower_error(L, call->name_span, "unknown layer or function '%s'", call->str);
  return NNC_VALUE_ERROR;
}

nnc_value nnc_lower_expr(nnc_lower *L, nnc_scope *sc, const nnc_ast *e) {
  switch (e->kind) {
  case NNC_AST_NUMBER: return (nnc_value){NULL, false, true, e->num};
  case NNC_AST_NAME: return lower_name(L, sc, e);
  case NNC_AST_CALL: return lower_call(L, sc, e);
  case NNC_AST_NEG: {
    nnc_value a = nnc_lower_expr(L, sc, e->a);
    if (a.is_num) return (nnc_value){NULL, false, true, -a.num};
    if (!a.node) return a;
    if (!both_f32(L, e->span, "-", a, a)) return NNC_VALUE_ERROR;
    int mark = L->g->nnodes;
    a.node = nnc_ir_unary(L->g, NNC_OP_NEG, a.node);
    nnc_lower_tag(L, mark, e->span, sc->prefix);
    return a;
  }
  case NNC_AST_BINARY: {
    nnc_value a = nnc_lower_expr(L, sc, e->a);
    nnc_value b = nnc_lower_expr(L, sc, e->b);
    int mark = L->g->nnodes;
    nnc_value r;
    char opname[2] = {(char)e->op, 0};
    switch (e->op) {
    case '+': r = nnc_lower_binary(L, e->span, NNC_OP_ADD, opname, a, b); break;
    case '-': r = nnc_lower_binary(L, e->span, NNC_OP_SUB, opname, a, b); break;
    case '*': r = nnc_lower_binary(L, e->span, NNC_OP_MUL, opname, a, b); break;
    case '/': r = nnc_lower_binary(L, e->span, NNC_OP_DIV, opname, a, b); break;
    default: r = lower_matmul(L, e->span, a, b); break;
    }
    nnc_lower_tag(L, mark, e->span, sc->prefix);
    return r;
  }
  case NNC_AST_ERROR: L->failed = true; return NNC_VALUE_ERROR;
  case NNC_AST_STRING:
  case NNC_AST_BOOL:
  case NNC_AST_MEMBER:
  case NNC_AST_LIST:
    nnc_lower_error(L, e->span, "expected a tensor expression, got %s", nnc_sema_describe(L->s, e));
    return NNC_VALUE_ERROR;
  case NNC_AST_ARG:
  case NNC_AST_TYPE:
  case NNC_AST_ASSIGN:
  case NNC_AST_RETURN:
  case NNC_AST_PARAM:
  case NNC_AST_BLOCK:
  case NNC_AST_GROUP:
  case NNC_AST_MODEL:
  case NNC_AST_DATA:
  case NNC_AST_TRAIN:
  case NNC_AST_FILE: break;
  }
  nnc_ir_bug("lower_expr: %s is not an expression", nnc_ast_kind_name(e->kind));
}

/* ---- Statements ---- */

/* param w: f32[in, out] = init: fan_in/fan_out as for x @ w (rank 2:
 * [in, out]); higher ranks like PyTorch's convolution weights [out, in, k...]. */
static void lower_param(nnc_lower *L, nnc_scope *sc, const nnc_ast *st) {
  nnc_var *prev = find_var(sc, st->str);
  if (prev) {
    nnc_lower_error(L, st->name_span, "redefinition of '%s'", st->str);
    nnc_lower_note(L, prev->at, "previous definition is here");
    return;
  }
  nnc_dtype t;
  nnc_shape s;
  nnc_var *v = add_var(L, sc, st->str, st->name_span);
  v->is_param = true;
  if (!nnc_lower_type(L->s, st->type, &t, &s)) {
    L->failed = true;
    return;
  }
  if (t != NNC_F32) {
    nnc_lower_error(L, st->type->name_span, "parameters must be f32");
    return;
  }
  int64_t fan_in = 1, fan_out = 1;
  if (s.rank == 1)
    fan_in = fan_out = s.dim[0];
  else if (s.rank == 2)
    fan_in = s.dim[0], fan_out = s.dim[1];
  else if (s.rank > 2) {
    int64_t field = nnc_shape_numel(&s) / (s.dim[0] * s.dim[1]);
    fan_in = s.dim[1] * field;
    fan_out = s.dim[0] * field;
  }
  nnc_init init = {NNC_INIT_ZEROS, 0, 0, fan_in, fan_out};
  if (st->a && !nnc_sema_init(L->s, st->a, fan_in, fan_out, &init)) {
    L->failed = true;
    return;
  }
  const char *path = nnc_lower_layer_name(L, sc, st->str, st->name_span);
  if (!path) return;
  v->value = (nnc_value){nnc_lower_tensor(L, path, NNC_ROLE_PARAM, &s, init, st->name_span), false,
                         false, 0};
}

static void lower_assign(nnc_lower *L, nnc_scope *sc, const nnc_ast *st) {
  nnc_var *prev = find_var(sc, st->str);
  if (prev && prev->is_param) {
    nnc_lower_error(L, st->name_span, "cannot assign to parameter '%s'", st->str);
    nnc_lower_note(L, prev->at, "'%s' is declared here", st->str);
    return;
  }
  nnc_value v = nnc_lower_expr(L, sc, st->a);
  if (v.is_num) {
    nnc_lower_error(L, st->a->span, "a model's values are tensors; '%s' would be a plain number",
                    st->str);
    v = NNC_VALUE_ERROR;
  }
  if (!prev) prev = add_var(L, sc, st->str, st->name_span);
  prev->value = v;
}

static bool check_output(nnc_lower *L, const nnc_ast *model, const nnc_ast *ret, nnc_value v) {
  if (v.is_num || (v.node && !v.batched)) {
    nnc_lower_error(L, ret->span, "model '%s' must return a value computed from its input",
                    model->str);
    return false;
  }
  if (!v.node) return false;
  nnc_dtype t;
  nnc_shape s;
  L->s->quiet++;
  bool typed = nnc_lower_type(L->s, model->type, &t, &s);
  L->s->quiet--;
  if (!typed) {
    L->failed = true;
    return false;
  }
  bool match = v.node->dtype == t && v.node->shape.rank == s.rank + 1;
  for (int d = 0; match && d < s.rank; d++)
    match = v.node->shape.dim[d + 1] == s.dim[d];
  if (!match) {
    char buf[160];
    nnc_shape with_batch = {s.rank + 1, {v.node->shape.dim[0]}};
    for (int d = 0; d < s.rank; d++)
      with_batch.dim[d + 1] = s.dim[d];
    nnc_lower_error(L, ret->span,
                    "model '%s' returns %s, but is declared to return %s (%s with "
                    "the batch)",
                    model->str, nnc_lower_shape_str(L, v.node),
                    nnc_arena_strdup(L->s->arena, nnc_shape_str(buf, sizeof buf, t, &s)),
                    nnc_arena_strdup(L->s->arena, nnc_shape_str(buf, sizeof buf, t, &with_batch)));
    nnc_lower_note(L, model->type->span, "declared here");
    return false;
  }
  return true;
}

nnc_value nnc_lower_model(nnc_lower *L, const nnc_ast *model, const char *prefix,
                          const nnc_value *inputs, int ninputs) {
  if (L->depth >= NNC_MAX_MODEL_DEPTH) {
    nnc_lower_error(L, model->name_span, "models are nested too deeply (limit %d)",
                    NNC_MAX_MODEL_DEPTH);
    return NNC_VALUE_ERROR;
  }
  L->stack[L->depth++] = model;
  nnc_scope sc;
  memset(&sc, 0, sizeof sc);
  sc.prefix = prefix;
  sc.model = model;
  for (int i = 0; i < ninputs && i < model->list.n; i++) {
    const nnc_ast *in = model->list.items[i];
    nnc_var *prev = find_var(&sc, in->str);
    if (prev) {
      nnc_lower_error(L, in->name_span, "redefinition of '%s'", in->str);
      nnc_lower_note(L, prev->at, "previous definition is here");
    }
    nnc_var *v = add_var(L, &sc, in->str, in->name_span);
    v->value = inputs[i];
  }
  const nnc_ast *ret = NULL;
  nnc_value out = NNC_VALUE_ERROR;
  const nnc_ast *body = model->body;
  for (int i = 0; i < body->list.n && !L->s->diags->fatal; i++) {
    const nnc_ast *st = body->list.items[i];
    if (ret) {
      nnc_lower_error(L, st->span, "statement after 'return'");
      nnc_lower_note(L, ret->span, "the model returns here");
      break;
    }
    switch (st->kind) {
    case NNC_AST_ASSIGN: lower_assign(L, &sc, st); break;
    case NNC_AST_PARAM: lower_param(L, &sc, st); break;
    case NNC_AST_RETURN:
      ret = st;
      out = nnc_lower_expr(L, &sc, st->a);
      break;
    case NNC_AST_CALL:
      nnc_lower_error(L, st->span, "the result of '%s' is not used; assign it, e.g. h = %s(...)",
                      st->str, st->str);
      break;
    case NNC_AST_GROUP:
      nnc_lower_error(L, st->span, "'group' is only allowed in a train block");
      break;
    default: nnc_lower_error(L, st->span, "this statement is not allowed in a model"); break;
    }
  }
  L->depth--;
  if (!ret) {
    nnc_lower_error(L, model->name_span, "model '%s' has no 'return'", model->str);
    return NNC_VALUE_ERROR;
  }
  if (!check_output(L, model, ret->a, out)) return NNC_VALUE_ERROR;
  return out;
}
