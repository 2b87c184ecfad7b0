/* ast.h: the syntax tree of a .nn file and its builders.
 *
 * The parser's actions only call the builders below (nnc_ast_*), so the tree
 * can also be built by hand in tests. Every node carries the span of the
 * source text it came from; names carry their own span (name_span) so that
 * diagnostics can point at exactly the word that is wrong. Nodes live in the
 * compilation's arena.
 *
 * One node type serves every kind; which fields a kind uses:
 *
 *   NUMBER  num, is_int (written without '.' or exponent), ival (if is_int)
 *   STRING  str               BOOL    ival (0/1)
 *   NAME    str               MEMBER  a (the NAME before '.'), str, name_span
 *   CALL    str (callee), name_span, list (ARG nodes)
 *   ARG     str (keyword or NULL), name_span, a (value)
 *   BINARY  op ('+','-','*','/','@'), a, b        NEG  a
 *   LIST    list (elements)   TYPE    str (dtype), name_span, list (dims)
 *   ASSIGN  str (target), name_span, a            RETURN  a
 *   PARAM   str, name_span, type, a (initialiser or NULL)
 *   BLOCK   list (statements); span covers the braces
 *   GROUP   str, name_span, body               MODEL  str, name_span, list (inputs:
 *           ARG nodes whose `type` is set), type (declared output), body
 *   DATA    str, name_span, a (source CALL), body (or NULL)
 *   TRAIN   body, name_span (the keyword)       FILE   list (declarations)
 *   ERROR   a placeholder where an error has already been reported
 */
#ifndef NNC_AST_H
#define NNC_AST_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "diag.h"
#include "ir.h"

/* Expressions nested deeper than this are rejected (no stack overflow in the
 * recursive passes, whatever the input). */
enum { NNC_MAX_EXPR_DEPTH = 200 };

typedef enum nnc_ast_kind {
  NNC_AST_ERROR,
  NNC_AST_NUMBER,
  NNC_AST_STRING,
  NNC_AST_BOOL,
  NNC_AST_NAME,
  NNC_AST_MEMBER,
  NNC_AST_CALL,
  NNC_AST_ARG,
  NNC_AST_BINARY,
  NNC_AST_NEG,
  NNC_AST_LIST,
  NNC_AST_TYPE,
  NNC_AST_ASSIGN,
  NNC_AST_RETURN,
  NNC_AST_PARAM,
  NNC_AST_BLOCK,
  NNC_AST_GROUP,
  NNC_AST_MODEL,
  NNC_AST_DATA,
  NNC_AST_TRAIN,
  NNC_AST_FILE,
} nnc_ast_kind;

typedef struct nnc_ast nnc_ast;

typedef struct nnc_ast_list {
  nnc_ast **items;
  int n, cap;
} nnc_ast_list;

struct nnc_ast {
  nnc_ast_kind kind;
  nnc_span span;
  nnc_span name_span;
  int depth; /* expression nesting depth (1 for leaves) */
  const char *str;
  double num;
  int64_t ival;
  bool is_int;
  int op;
  nnc_ast *a, *b;
  nnc_ast *type;
  nnc_ast *body;
  nnc_ast_list list;
};

/* What the builders need: where to allocate, where to report. */
typedef struct nnc_ast_ctx {
  nnc_arena *arena;
  nnc_diags *diags;
  bool depth_reported; /* report "too deeply nested" once per file */
} nnc_ast_ctx;

const char *nnc_ast_kind_name(nnc_ast_kind k);

nnc_ast *nnc_ast_error(nnc_ast_ctx *c, nnc_span at);
/* Parses the literal text; reports overflow and returns an ERROR node then. */
nnc_ast *nnc_ast_number(nnc_ast_ctx *c, nnc_span at, const char *text);
nnc_ast *nnc_ast_string(nnc_ast_ctx *c, nnc_span at, const char *value);
nnc_ast *nnc_ast_bool(nnc_ast_ctx *c, nnc_span at, bool value);
nnc_ast *nnc_ast_name(nnc_ast_ctx *c, nnc_span at, const char *name);
nnc_ast *nnc_ast_member(nnc_ast_ctx *c, nnc_span at, nnc_ast *base, const char *name,
                        nnc_span name_at);
nnc_ast *nnc_ast_call(nnc_ast_ctx *c, nnc_span at, const char *callee, nnc_span callee_at,
                      nnc_ast *args /* LIST or NULL */);
nnc_ast *nnc_ast_arg(nnc_ast_ctx *c, nnc_span at, const char *keyword, nnc_span keyword_at,
                     nnc_ast *value);
nnc_ast *nnc_ast_binary(nnc_ast_ctx *c, nnc_span at, int op, nnc_ast *lhs, nnc_ast *rhs);
nnc_ast *nnc_ast_neg(nnc_ast_ctx *c, nnc_span at, nnc_ast *operand);
/* An empty LIST; grow it with nnc_ast_append. */
nnc_ast *nnc_ast_list_new(nnc_ast_ctx *c, nnc_span at);
/* Appends item to list->list (LIST, BLOCK, FILE); returns list. */
nnc_ast *nnc_ast_append(nnc_ast_ctx *c, nnc_ast *list, nnc_ast *item);
/* Sets a list's span to `at` (after its brackets are known); returns it. */
nnc_ast *nnc_ast_enclose(nnc_ast_ctx *c, nnc_span at, nnc_ast *list);
nnc_ast *nnc_ast_type(nnc_ast_ctx *c, nnc_span at, const char *dtype, nnc_span dtype_at,
                      nnc_ast *dims /* LIST */);
nnc_ast *nnc_ast_typed_input(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                             nnc_ast *type);
nnc_ast *nnc_ast_assign(nnc_ast_ctx *c, nnc_span at, const char *target, nnc_span target_at,
                        nnc_ast *value);
nnc_ast *nnc_ast_return(nnc_ast_ctx *c, nnc_span at, nnc_ast *value);
nnc_ast *nnc_ast_param(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                       nnc_ast *type, nnc_ast *init);
nnc_ast *nnc_ast_block(nnc_ast_ctx *c, nnc_span at, nnc_ast *stmts /* LIST */);
nnc_ast *nnc_ast_group(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                       nnc_ast *body);
nnc_ast *nnc_ast_model(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                       nnc_ast *inputs /* LIST */, nnc_ast *out_type, nnc_ast *body);
nnc_ast *nnc_ast_data(nnc_ast_ctx *c, nnc_span at, const char *name, nnc_span name_at,
                      nnc_ast *source, nnc_ast *body);
nnc_ast *nnc_ast_train(nnc_ast_ctx *c, nnc_span at, nnc_span keyword_at, nnc_ast *body);
nnc_ast *nnc_ast_file(nnc_ast_ctx *c, nnc_span at);

/* Span from the beginning of a to the end of b (same file). */
static inline nnc_span nnc_span_join(nnc_span a, nnc_span b) {
  return (nnc_span){a.file, a.begin < b.begin ? a.begin : b.begin, a.end > b.end ? a.end : b.end};
}

/* Writes the tree as an S-expression (for parser tests and debugging). */
void nnc_ast_dump(FILE *out, const nnc_ast *n);

#endif
