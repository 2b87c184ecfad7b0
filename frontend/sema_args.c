/* sema_args.c: call arguments and constant values.
 *
 * Every call in a .nn file — layers, optimizers, schedules, data sources,
 * initialisers — has a signature (nnc_sig). nnc_sema_match binds the given
 * arguments to it with Python's rules (positional first, then keywords) and
 * reports what does not fit. The converters read constant arguments
 * (numbers with constant folding, so `1/255` and `-1` work; integers;
 * booleans; strings; words such as `relu`) and check their range.
 */
#include <math.h>
#include <string.h>

#include "sema_internal.h"

bool nnc_sema_match(nnc_sema *s, const nnc_ast *call, const nnc_sig *sig, const nnc_ast **out) {
  bool ok = true;
  const nnc_ast *given_at[32] = {0};
  for (int i = 0; i < sig->n; i++)
    out[i] = NULL;
  int npos = 0;
  bool seen_keyword = false, unknown_keyword = false;
  for (int i = 0; call->kind == NNC_AST_CALL && i < call->list.n; i++) {
    const nnc_ast *arg = call->list.items[i];
    int slot = -1;
    if (!arg->str) {
      if (seen_keyword) {
        nnc_sema_error(s, arg->span, "positional argument after keyword argument");
        ok = false;
        continue;
      }
      if (npos >= sig->npositional) {
        {
          if (sig->npositional == 0)
            nnc_sema_error(s, arg->span, "%s takes only keyword arguments", sig->what);
          else
            nnc_sema_error(s, arg->span,
                           "too many arguments to %s: it takes %d positional argument%s", sig->what,
                           sig->npositional, sig->npositional == 1 ? "" : "s");
        }
        ok = false;
        continue;
      }
      slot = npos++;
    } else {
      seen_keyword = true;
      for (int k = 0; k < sig->n; k++)
        if (strcmp(sig->names[k], arg->str) == 0) slot = k;
      if (slot < 0) {
        {
          const char *hint = nnc_suggest(arg->str, sig->names, sig->n);
          if (hint)
            nnc_sema_error(s, arg->name_span, "unknown argument '%s' to %s; did you mean '%s'?",
                           arg->str, sig->what, hint);
          else
            nnc_sema_error(s, arg->name_span, "unknown argument '%s' to %s", arg->str, sig->what);
        }
        ok = false;
        unknown_keyword = true;
        continue;
      }
    }
    if (given_at[slot]) {
      nnc_sema_error(s, arg->name_span, "argument '%s' to %s given twice", sig->names[slot],
                     sig->what);
      nnc_sema_note(s, given_at[slot]->name_span, "first given here");
      ok = false;
      continue;
    }
    given_at[slot] = arg;
    out[slot] = arg->a;
  }
  /* A misspelt keyword usually is the missing argument: one error, not two. */
  for (int k = 0; k < sig->nrequired && !unknown_keyword; k++) {
    if (out[k] || given_at[k]) continue;
    nnc_sema_error(s, call->kind == NNC_AST_CALL ? call->span : call->span,
                   "missing argument '%s' to %s", sig->names[k], sig->what);
    ok = false;
  }
  return ok;
}

const char *nnc_sema_describe(nnc_sema *s, const nnc_ast *e) {
  switch (e->kind) {
  case NNC_AST_NUMBER: return "a number";
  case NNC_AST_STRING: return "a string";
  case NNC_AST_BOOL: return "a boolean";
  case NNC_AST_NAME: return nnc_arena_printf(s->arena, "'%s'", e->str);
  case NNC_AST_MEMBER: return nnc_arena_printf(s->arena, "'%s.%s'", e->a->str, e->str);
  case NNC_AST_CALL: return nnc_arena_printf(s->arena, "a call to '%s'", e->str);
  case NNC_AST_LIST: return "a list";
  case NNC_AST_BINARY:
  case NNC_AST_NEG: return "an expression";
  case NNC_AST_ERROR:
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
  return "something else";
}

/* Folds a constant numeric expression; false if it is not one (no report). */
static bool fold(const nnc_ast *e, double *v) {
  double a, b;
  switch (e->kind) {
  case NNC_AST_NUMBER: *v = e->num; return true;
  case NNC_AST_NEG:
    if (!fold(e->a, &a)) return false;
    *v = -a;
    return true;
  case NNC_AST_BINARY:
    if (!fold(e->a, &a) || !fold(e->b, &b)) return false;
    switch (e->op) {
    case '+': *v = a + b; break;
    case '-': *v = a - b; break;
    case '*': *v = a * b; break;
    case '/': *v = a / b; break;
    default: return false;
    }
    return true;
  default: return false;
  }
}

static void fmt_num(char *buf, size_t n, double v) {
  if (v == floor(v) && fabs(v) < 1e18)
    snprintf(buf, n, "%.0f", v);
  else
    snprintf(buf, n, "%.10g", v);
}

bool nnc_sema_num(nnc_sema *s, const nnc_ast *e, const char *what, double lo, double hi,
                  double *out) {
  if (e->kind == NNC_AST_ERROR) return false;
  double v;
  if (!fold(e, &v)) {
    nnc_sema_error(s, e->span, "'%s' must be a number, not %s", what, nnc_sema_describe(s, e));
    return false;
  }
  if (!isfinite(v)) {
    nnc_sema_error(s, e->span, "'%s' is not a finite number", what);
    return false;
  }
  if (v < lo || v > hi) {
    char a[32], b[32], c[32];
    fmt_num(a, sizeof a, lo);
    fmt_num(b, sizeof b, hi);
    fmt_num(c, sizeof c, v);
    if (hi >= 1e300)
      nnc_sema_error(s, e->span, "'%s' must be at least %s, got %s", what, a, c);
    else
      nnc_sema_error(s, e->span, "'%s' must be between %s and %s, got %s", what, a, b, c);
    return false;
  }
  *out = v;
  return true;
}

bool nnc_sema_int(nnc_sema *s, const nnc_ast *e, const char *what, int64_t lo, int64_t hi,
                  int64_t *out) {
  if (e->kind == NNC_AST_ERROR) return false;
  double v;
  if (!fold(e, &v)) {
    nnc_sema_error(s, e->span, "'%s' must be an integer, not %s", what, nnc_sema_describe(s, e));
    return false;
  }
  if (!isfinite(v) || v != floor(v)) {
    char c[32];
    fmt_num(c, sizeof c, v);
    nnc_sema_error(s, e->span, "'%s' must be an integer, got %s", what, c);
    return false;
  }
  if (v < (double)lo || v > (double)hi) {
    char c[32];
    fmt_num(c, sizeof c, v);
    if (v > (double)hi && hi >= NNC_MAX_DIM)
      nnc_sema_error(s, e->span, "'%s' is too large: %s (the limit is %lld)", what, c,
                     (long long)hi);
    else
      nnc_sema_error(s, e->span, "'%s' must be between %lld and %lld, got %s", what, (long long)lo,
                     (long long)hi, c);
    return false;
  }
  *out = e->kind == NNC_AST_NUMBER && e->is_int ? e->ival : (int64_t)v;
  return true;
}

bool nnc_sema_bool(nnc_sema *s, const nnc_ast *e, const char *what, bool *out) {
  if (e->kind == NNC_AST_ERROR) return false;
  if (e->kind != NNC_AST_BOOL) {
    nnc_sema_error(s, e->span, "'%s' must be true or false, not %s", what, nnc_sema_describe(s, e));
    return false;
  }
  *out = e->ival != 0;
  return true;
}

bool nnc_sema_str(nnc_sema *s, const nnc_ast *e, const char *what, const char **out) {
  if (e->kind == NNC_AST_ERROR) return false;
  if (e->kind != NNC_AST_STRING) {
    nnc_sema_error(s, e->span, "'%s' must be a string, not %s", what, nnc_sema_describe(s, e));
    return false;
  }
  *out = e->str;
  return true;
}

bool nnc_sema_strs(nnc_sema *s, const nnc_ast *e, const char *what, const char **out, int max,
                   int *n) {
  *n = 0;
  if (e->kind == NNC_AST_STRING) {
    out[(*n)++] = e->str;
    return true;
  }
  if (e->kind != NNC_AST_LIST) {
    if (e->kind != NNC_AST_ERROR)
      nnc_sema_error(s, e->span, "'%s' must be a list of strings, not %s", what,
                     nnc_sema_describe(s, e));
    return false;
  }
  if (e->list.n > max) {
    nnc_sema_error(s, e->list.items[max]->span, "'%s' takes at most %d entries", what, max);
    return false;
  }
  bool ok = true;
  for (int i = 0; i < e->list.n; i++)
    ok &= nnc_sema_str(s, e->list.items[i], what, &out[(*n)++]);
  return ok;
}

const char *nnc_sema_callee(const nnc_ast *e) {
  if (e->kind == NNC_AST_NAME || e->kind == NNC_AST_CALL) return e->str;
  return NULL;
}

/* Names a word of choices (any arguments); reports an unknown one. */
bool nnc_sema_word_or_call(nnc_sema *s, const nnc_ast *e, const char *what,
                           const char *const *choices, int n, int *out) {
  if (e->kind == NNC_AST_ERROR) return false;
  const char *w = nnc_sema_callee(e);
  if (!w) {
    char list[256] = "";
    for (int i = 0; i < n && strlen(list) < 200; i++)
      snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", choices[i]);
    nnc_sema_error(s, e->span, "'%s' must be one of %s; got %s", what, list,
                   nnc_sema_describe(s, e));
    return false;
  }
  for (int i = 0; i < n; i++)
    if (strcmp(w, choices[i]) == 0) {
      *out = i;
      return true;
    }
  const char *hint = nnc_suggest(w, choices, n);
  if (hint)
    nnc_sema_error(s, e->name_span, "unknown %s '%s'; did you mean '%s'?", what, w, hint);
  else
    nnc_sema_error(s, e->name_span, "unknown %s '%s'", what, w);
  return false;
}

bool nnc_sema_word(nnc_sema *s, const nnc_ast *e, const char *what, const char *const *choices,
                   int n, int *out) {
  if (!nnc_sema_word_or_call(s, e, what, choices, n, out)) return false;
  if (e->kind == NNC_AST_CALL && e->list.n > 0) {
    nnc_sema_error(s, e->list.items[0]->span, "'%s' takes no arguments here", e->str);
    return false;
  }
  return true;
}

void nnc_sema_duplicate(nnc_sema *s, const char *what, const nnc_ast *again, const nnc_ast *first) {
  nnc_sema_error(s, again->name_span, "duplicate setting '%s'", what);
  nnc_sema_note(s, first->name_span, "previous setting is here");
}

/* ---- Initialisers ---- */

static const char *const init_names[] = {
    "zeros",          "ones",           "constant",      "normal",
    "uniform",        "xavier_uniform", "xavier_normal", "glorot_uniform",
    "glorot_normal",  "he_uniform",     "he_normal",     "kaiming_uniform",
    "kaiming_normal",
};
static const nnc_init_kind init_kinds[] = {
    NNC_INIT_ZEROS,         NNC_INIT_ONES,           NNC_INIT_CONSTANT,
    NNC_INIT_NORMAL,        NNC_INIT_UNIFORM,        NNC_INIT_XAVIER_UNIFORM,
    NNC_INIT_XAVIER_NORMAL, NNC_INIT_XAVIER_UNIFORM, NNC_INIT_XAVIER_NORMAL,
    NNC_INIT_HE_UNIFORM,    NNC_INIT_HE_NORMAL,      NNC_INIT_HE_UNIFORM,
    NNC_INIT_HE_NORMAL,
};

bool nnc_sema_init(nnc_sema *s, const nnc_ast *e, int64_t fan_in, int64_t fan_out, nnc_init *out) {
  enum { NINIT = sizeof init_names / sizeof init_names[0] };
  const char *w = nnc_sema_callee(e);
  int k = -1;
  for (int i = 0; w && i < NINIT; i++)
    if (strcmp(w, init_names[i]) == 0) k = i;
  if (k < 0) {
    if (e->kind == NNC_AST_ERROR) return false;
    const char *hint = w ? nnc_suggest(w, init_names, NINIT) : NULL;
    if (hint)
      nnc_sema_error(s, e->name_span, "unknown initialiser '%s'; did you mean '%s'?", w, hint);
    else if (w)
      nnc_sema_error(s, e->name_span, "unknown initialiser '%s'", w);
    else
      nnc_sema_error(s, e->span, "expected an initialiser such as he_normal(), not %s",
                     nnc_sema_describe(s, e));
    return false;
  }
  memset(out, 0, sizeof *out);
  out->kind = init_kinds[k];
  out->fan_in = fan_in;
  out->fan_out = fan_out;
  static const char *const one[] = {"value"};
  static const char *const two_normal[] = {"mean", "std"};
  static const char *const two_uniform[] = {"low", "high"};
  nnc_sig sig = {init_names[k], NULL, 0, 0, 0};
  if (out->kind == NNC_INIT_CONSTANT) sig = (nnc_sig){init_names[k], one, 1, 1, 1};
  if (out->kind == NNC_INIT_NORMAL) sig = (nnc_sig){init_names[k], two_normal, 2, 2, 0};
  if (out->kind == NNC_INIT_UNIFORM) sig = (nnc_sig){init_names[k], two_uniform, 2, 2, 0};
  const nnc_ast *args[2] = {NULL, NULL};
  if (!nnc_sema_match(s, e, &sig, args)) return false;
  bool ok = true;
  switch (out->kind) {
  case NNC_INIT_CONSTANT: ok = nnc_sema_num(s, args[0], "value", -1e30, 1e30, &out->a); break;
  case NNC_INIT_NORMAL:
    out->b = 1.0;
    if (args[0]) ok &= nnc_sema_num(s, args[0], "mean", -1e30, 1e30, &out->a);
    if (args[1]) ok &= nnc_sema_num(s, args[1], "std", 0, 1e30, &out->b);
    break;
  case NNC_INIT_UNIFORM:
    out->b = 1.0;
    if (args[0]) ok &= nnc_sema_num(s, args[0], "low", -1e30, 1e30, &out->a);
    if (args[1]) ok &= nnc_sema_num(s, args[1], "high", -1e30, 1e30, &out->b);
    if (ok && out->b < out->a) {
      nnc_sema_error(s, e->span, "uniform(low, high) needs low <= high");
      ok = false;
    }
    break;
  case NNC_INIT_ZEROS:
  case NNC_INIT_ONES:
  case NNC_INIT_XAVIER_UNIFORM:
  case NNC_INIT_XAVIER_NORMAL:
  case NNC_INIT_HE_UNIFORM:
  case NNC_INIT_HE_NORMAL: break;
  }
  return ok;
}
