/* ast.c: builders and a dumper for the syntax tree (see ast.h).
 *
 * The builders are called by the grammar actions in parser.y and by tests.
 * Two checks live here because they are about the text, not its meaning:
 * numeric literals that do not fit (reported once, replaced by an ERROR
 * node) and expressions nested deeper than NNC_MAX_EXPR_DEPTH (reported
 * once per file; the too-deep part is replaced by an ERROR node so that
 * the tree stays shallow and the recursive passes are safe).
 */
#include "ast.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static nnc_ast *node(nnc_ast_ctx *c, nnc_ast_kind kind, nnc_span at) {
  nnc_ast *n = nnc_arena_alloc(c->arena, sizeof *n);
  n->kind = kind;
  n->span = at;
  n->name_span = at;
  n->depth = 1;
  return n;
}

/* Depth check for an expression node built over its operands. */
static nnc_ast *nest(nnc_ast_ctx *c, nnc_ast *n, int child_depth) {
  n->depth = child_depth + 1;
  if (n->depth <= NNC_MAX_EXPR_DEPTH) return n;
  if (!c->depth_reported) {
    c->depth_reported = true;
    nnc_diag_error(c->diags, n->span, "expression is nested too deeply (limit %d levels)",
                   NNC_MAX_EXPR_DEPTH);
  }
  return nnc_ast_error(c, n->span);
}

static int depth_of(const nnc_ast *n) {
  return n ? n->depth : 0;
}

const char *nnc_ast_kind_name(nnc_ast_kind k) {
  switch (k) {
  case NNC_AST_ERROR: return "error";
  case NNC_AST_NUMBER: return "number";
  case NNC_AST_STRING: return "string";
  case NNC_AST_BOOL: return "bool";
  case NNC_AST_NAME: return "name";
  case NNC_AST_MEMBER: return "member";
  case NNC_AST_CALL: return "call";
  case NNC_AST_ARG: return "arg";
  case NNC_AST_BINARY: return "binary";
  case NNC_AST_NEG: return "neg";
  case NNC_AST_LIST: return "list";
  case NNC_AST_TYPE: return "type";
  case NNC_AST_ASSIGN: return "assign";
  case NNC_AST_RETURN: return "return";
  case NNC_AST_PARAM: return "param";
  case NNC_AST_BLOCK: return "block";
  case NNC_AST_GROUP: return "group";
  case NNC_AST_MODEL: return "model";
  case NNC_AST_DATA: return "data";
  case NNC_AST_TRAIN: return "train";
  case NNC_AST_FILE: return "file";
  }
  return "?";
}

nnc_ast *nnc_ast_error(nnc_ast_ctx *c, nnc_span at) {
  return node(c, NNC_AST_ERROR, at);
}

nnc_ast *nnc_ast_number(nnc_ast_ctx *c, nnc_span at, const char *text) {
  nnc_ast *n = node(c, NNC_AST_NUMBER, at);
  n->is_int = strspn(text, "0123456789") == strlen(text);
  if (n->is_int) {
    int64_t v = 0;
    for (const char *s = text; *s; s++) {
      int digit = *s - '0';
      if (v > (INT64_MAX - digit) / 10) {
        nnc_diag_error(c->diags, at, "integer literal is too large (the limit is %lld)",
                       (long long)INT64_MAX);
        return nnc_ast_error(c, at);
      }
      v = v * 10 + digit;
    }
    n->ival = v;
    n->num = (double)v;
    return n;
  }
  errno = 0;
  n->num = strtod(text, NULL);
  if (isinf(n->num) || (errno == ERANGE && fabs(n->num) > 1.0)) {
    nnc_diag_error(c->diags, at, "number is too large to represent");
    return nnc_ast_error(c, at);
  }
  return n;
}

nnc_ast *nnc_ast_string(nnc_ast_ctx *c, nnc_span at, const char *value) {
  nnc_ast *n = node(c, NNC_AST_STRING, at);
  n->str = value;
  return n;
}

nnc_ast *nnc_ast_bool(nnc_ast_ctx *c, nnc_span at, bool value) {
  nnc_ast *n = node(c, NNC_AST_BOOL, at);
  n->ival = value;
  return n;
}

nnc_ast *nnc_ast_name(nnc_ast_ctx *c, nnc_span at, const char *name) {
  nnc_ast *n = node(c, NNC_AST_NAME, at);
  n->str = name;
  return n;
}

nnc_ast *nnc_ast_member(nnc_ast_ctx *c, nnc_span at, nnc_ast *base, const char *name,
                        nnc_span name_at) {
  nnc_ast *n = node(c, NNC_AST_MEMBER, at);
  n->a = base;
  n->str = name;
  n->name_span = name_at;
  return nest(c, n, depth_of(base));
}

nnc_ast *nnc_ast_call(nnc_ast_ctx *c, nnc_span at, const char *callee, nnc_span callee_at,
                      nnc_ast *args) {
  nnc_ast *n = node(c, NNC_AST_CALL, at);
  n->str = callee;
  n->name_span = callee_at;
  int d = 0;
  if (args) {
    n->list = args->list;
    for (int i = 0; i < n->list.n; i++)
      if (depth_of(n->list.items[i]) > d) d = depth_of(n->list.items[i]);
  }
  return nest(c, n, d);
}

nnc_ast *nnc_ast_arg(nnc_ast_ctx *c, nnc_span at, const char *keyword, nnc_span keyword_at,
                     nnc_ast *value) {
  nnc_ast *n = node(c, NNC_AST_ARG, at);
  n->str = keyword;
  n->name_span = keyword ? keyword_at : at;
  n->a = value;
  n->depth = depth_of(value); /* an argument adds no level of its own */
  return n;
}

nnc_ast *nnc_ast_binary(nnc_ast_ctx *c, nnc_span at, int op, nnc_ast *lhs, nnc_ast *rhs) {
  nnc_ast *n = node(c, NNC_AST_BINARY, at);
  n->op = op;
  n->a = lhs;
  n->b = rhs;
  int d = depth_of(lhs) > depth_of(rhs) ? depth_of(lhs) : depth_of(rhs);
  return nest(c, n, d);
}

nnc_ast *nnc_ast_neg(nnc_ast_ctx *c, nnc_span at, nnc_ast *operand) {
  nnc_ast *n = node(c, NNC_AST_NEG, at);
  n->a = operand;
  return nest(c, n, depth_of(operand));
}

nnc_ast *nnc_ast_list_new(nnc_ast_ctx *c, nnc_span at) {
  return node(c, NNC_AST_LIST, at);
}

nnc_ast *nnc_ast_append(nnc_ast_ctx *c, nnc_ast *list, nnc_ast *item) {
  nnc_ast_list *l = &list->list;
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 4;
    l->items = nnc_arena_grow(c->arena, l->items, sizeof(nnc_ast *) * (size_t)l->n,
                              sizeof(nnc_ast *) * (size_t)cap);
    l->cap = cap;
  }
  l->items[l->n++] = item;
  if (list->kind == NNC_AST_LIST && depth_of(item) >= list->depth) list->depth = depth_of(item) + 1;
  return list;
}

nnc_ast *nnc_ast_enclose(nnc_ast_ctx *c, nnc_span at, nnc_ast *list) {
  (void)c;
  list->span = at;
  list->name_span = at;
  if (list->depth > NNC_MAX_EXPR_DEPTH) return nest(c, list, list->depth - 1);
  return list;
}

nnc_ast *nnc_ast_type(nnc_ast_ctx *c, nnc_span at, const char *dtype, nnc_span dtype_at,
                      nnc_ast *dims) {
  nnc_ast *n = node(c, NNC_AST_TYPE, at);
  n->str = dtype;
  n->name_span = dtype_at;
  if (dims) n->list = dims->list;
  return n;
}

nnc_ast *nnc_ast_typed_input(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                             nnc_ast *type) {
  nnc_ast *n = node(c, NNC_AST_ARG, at);
  n->str = name;
  n->name_span = name_at;
  n->type = type;
  return n;
}

nnc_ast *nnc_ast_assign(nnc_ast_ctx *c, nnc_span at, const char *target, nnc_span target_at,
                        nnc_ast *value) {
  nnc_ast *n = node(c, NNC_AST_ASSIGN, at);
  n->str = target;
  n->name_span = target_at;
  n->a = value;
  return n;
}

nnc_ast *nnc_ast_return(nnc_ast_ctx *c, nnc_span at, nnc_ast *value) {
  nnc_ast *n = node(c, NNC_AST_RETURN, at);
  n->a = value;
  return n;
}

nnc_ast *nnc_ast_param(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                       nnc_ast *type, nnc_ast *init) {
  nnc_ast *n = node(c, NNC_AST_PARAM, at);
  n->str = name;
  n->name_span = name_at;
  n->type = type;
  n->a = init;
  return n;
}

nnc_ast *nnc_ast_block(nnc_ast_ctx *c, nnc_span at, nnc_ast *stmts) {
  nnc_ast *n = node(c, NNC_AST_BLOCK, at);
  if (stmts) n->list = stmts->list;
  return n;
}

nnc_ast *nnc_ast_group(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                       nnc_ast *body) {
  nnc_ast *n = node(c, NNC_AST_GROUP, at);
  n->str = name;
  n->name_span = name_at;
  n->body = body;
  return n;
}

nnc_ast *nnc_ast_model(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                       nnc_ast *inputs, nnc_ast *out_type, nnc_ast *body) {
  nnc_ast *n = node(c, NNC_AST_MODEL, at);
  n->str = name;
  n->name_span = name_at;
  if (inputs) n->list = inputs->list;
  n->type = out_type;
  n->body = body;
  return n;
}

nnc_ast *nnc_ast_data(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                      nnc_ast *source, nnc_ast *body) {
  nnc_ast *n = node(c, NNC_AST_DATA, at);
  n->str = name;
  n->name_span = name_at;
  n->a = source;
  n->body = body;
  return n;
}

nnc_ast *nnc_ast_train(nnc_ast_ctx *c, nnc_span at, nnc_span keyword_at, nnc_ast *body) {
  nnc_ast *n = node(c, NNC_AST_TRAIN, at);
  n->name_span = keyword_at;
  n->body = body;
  return n;
}

nnc_ast *nnc_ast_file(nnc_ast_ctx *c, nnc_span at) {
  return node(c, NNC_AST_FILE, at);
}

/* ---- Dump ---- */

static void dump_list(FILE *out, const nnc_ast_list *l) {
  for (int i = 0; i < l->n; i++) {
    fputc(' ', out);
    nnc_ast_dump(out, l->items[i]);
  }
}

void nnc_ast_dump(FILE *out, const nnc_ast *n) {
  if (!n) {
    fputs("nil", out);
    return;
  }
  switch (n->kind) {
  case NNC_AST_NUMBER: fprintf(out, "%g", n->num); return;
  case NNC_AST_STRING: fprintf(out, "\"%s\"", n->str); return;
  case NNC_AST_BOOL: fputs(n->ival ? "true" : "false", out); return;
  case NNC_AST_NAME: fputs(n->str, out); return;
  case NNC_AST_ERROR: fputs("<error>", out); return;
  case NNC_AST_MEMBER:
    nnc_ast_dump(out, n->a);
    fprintf(out, ".%s", n->str);
    return;
  case NNC_AST_BINARY:
    fprintf(out, "(%c ", n->op);
    nnc_ast_dump(out, n->a);
    fputc(' ', out);
    nnc_ast_dump(out, n->b);
    fputc(')', out);
    return;
  case NNC_AST_NEG:
    fputs("(- ", out);
    nnc_ast_dump(out, n->a);
    fputc(')', out);
    return;
  case NNC_AST_ARG:
    if (n->type) {
      fprintf(out, "%s:", n->str);
      nnc_ast_dump(out, n->type);
      return;
    }
    if (n->str) fprintf(out, "%s=", n->str);
    nnc_ast_dump(out, n->a);
    return;
  case NNC_AST_CALL: fprintf(out, "(call %s", n->str); break;
  case NNC_AST_LIST: fputs("(list", out); break;
  case NNC_AST_TYPE: fprintf(out, "(type %s", n->str); break;
  case NNC_AST_BLOCK: fputs("(block", out); break;
  case NNC_AST_FILE: fputs("(file", out); break;
  case NNC_AST_ASSIGN:
  case NNC_AST_RETURN:
  case NNC_AST_PARAM:
  case NNC_AST_GROUP:
  case NNC_AST_MODEL:
  case NNC_AST_DATA:
  case NNC_AST_TRAIN:
    fprintf(out, "(%s", nnc_ast_kind_name(n->kind));
    if (n->str) fprintf(out, " %s", n->str);
    dump_list(out, &n->list);
    if (n->type) {
      fputc(' ', out);
      nnc_ast_dump(out, n->type);
    }
    if (n->a) {
      fputc(' ', out);
      nnc_ast_dump(out, n->a);
    }
    if (n->body) {
      fputc(' ', out);
      nnc_ast_dump(out, n->body);
    }
    fputc(')', out);
    return;
  }
  dump_list(out, &n->list);
  fputc(')', out);
}
