/* parse_internal.h: state shared by the lexer (lexer.l) and the parser
 * (parser.y) while one file is parsed. Not for use outside those two.
 *
 * The lexer turns a newline into an NL token only where a statement can end:
 * outside parentheses and brackets, after a token that can end an expression
 * (Go's rule). So `batch = 64  epochs = 5` and `h = dense(x,\n 256)` both
 * work, and the parser can resynchronise at the end of a line after an error.
 */
#ifndef NNC_PARSE_INTERNAL_H
#define NNC_PARSE_INTERNAL_H

#include "parse.h"

typedef struct nnc_open_bracket {
  char ch; /* '(', '[' or '{' */
  nnc_span at;
} nnc_open_bracket;

typedef struct nnc_token_info {
  int kind; /* bison token kind, 0 for none */
  nnc_span at;
  const char *text; /* identifier / number text, else NULL */
  bool stmt_start;  /* first token of a statement */
  int depth;        /* open brackets before this token */
} nnc_token_info;

typedef struct nnc_parse_ctx {
  nnc_ast_ctx *ast;
  nnc_diags *diags;
  uint32_t file;
  void *scanner; /* yyscan_t */
  nnc_ast *result;
  /* lexer state */
  uint32_t offset;    /* byte offset of the next unread byte */
  bool ends_stmt;     /* the last token can end a statement */
  bool at_stmt_start; /* the next token starts a statement */
  nnc_open_bracket open[NNC_MAX_NESTING];
  int nopen;
  bool stop;                 /* a fatal lexical error: end the parse quietly */
  nnc_token_info last, prev; /* the lookahead and the token before it */
} nnc_parse_ctx;

/* The flex scanner, wrapped by the parser's yylex. */
union NNC_YYSTYPE;
int nnc_lex_token(union NNC_YYSTYPE *lval, nnc_span *lloc, nnc_parse_ctx *p);
/* Creates/destroys the scanner over p's source. */
void nnc_lex_begin(nnc_parse_ctx *p);
void nnc_lex_end(nnc_parse_ctx *p);

#endif
