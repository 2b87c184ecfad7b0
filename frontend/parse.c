/* parse.c: runs the lexer and parser over one source (see parse.h) and turns
 * bison's syntax-error messages into nnc's: the offending token's text, what
 * was expected, a note at the bracket that is still open, and "did you mean"
 * for a misspelt keyword ('modle mlp(...)', 'retrun h').
 */
#include <string.h>

#include "parse_internal.h"
#include "parser.h"

int nnc_yyparse(nnc_parse_ctx *p);
void nnc_parse_syntax_error(nnc_parse_ctx *p, nnc_span at, const char *msg);

nnc_ast *nnc_parse(nnc_ast_ctx *c, uint32_t file) {
  nnc_parse_ctx p;
  memset(&p, 0, sizeof p);
  p.ast = c;
  p.diags = c->diags;
  p.file = file;
  nnc_lex_begin(&p);
  nnc_yyparse(&p);
  nnc_lex_end(&p);
  if (!p.result) {
    const nnc_source *src = nnc_diags_source(c->diags, file);
    p.result = nnc_ast_file(c, (nnc_span){file, 0, src ? (uint32_t)src->len : 0});
  }
  return p.result;
}

static const char *const statement_keywords[] = {"model", "data",   "train",
                                                 "param", "return", "group"};

/* 'retrun h' or 'modle m(...)': an identifier where a keyword was meant. */
static bool misspelt_keyword(nnc_parse_ctx *p) {
  const nnc_token_info *cand = NULL;
  if (p->last.kind == IDENT && p->last.stmt_start)
    cand = &p->last;
  else if (p->prev.kind == IDENT && p->prev.stmt_start && p->last.kind == IDENT)
    cand = &p->prev;
  if (!cand || !cand->text) return false;
  const char *s = nnc_suggest(cand->text, statement_keywords,
                              (int)(sizeof statement_keywords / sizeof statement_keywords[0]));
  if (!s) return false;
  nnc_diag_error(p->diags, cand->at, "unknown keyword '%s'; did you mean '%s'?", cand->text, s);
  return true;
}

/* A note at the innermost bracket that the expected token would close. */
static void note_open_bracket(nnc_parse_ctx *p, const char *expected, bool at_eof) {
  for (int i = p->nopen - 1; i >= 0; i--) {
    char ch = p->open[i].ch;
    const char *closer = ch == '(' ? "')'" : ch == '[' ? "']'" : "'}'";
    if (at_eof || (expected && strstr(expected, closer))) {
      nnc_diag_note(p->diags, p->open[i].at, "to match this '%c'", ch);
      return;
    }
    if (ch == '{') return; /* do not look past the enclosing block */
  }
}

void nnc_parse_syntax_error(nnc_parse_ctx *p, nnc_span at, const char *msg) {
  if (p->stop) return;
  if (strstr(msg, "memory exhausted")) {
    nnc_diag_error(p->diags, at, "input is nested too deeply");
    p->stop = true;
    return;
  }
  if (misspelt_keyword(p)) return;
  const char *u = strstr(msg, "unexpected ");
  const char *e = strstr(msg, ", expecting ");
  if (!u) {
    nnc_diag_error(p->diags, at, "%s", msg);
    return;
  }
  u += strlen("unexpected ");
  int ulen = e ? (int)(e - u) : (int)strlen(u);
  char text[64] = "";
  if ((p->last.kind == IDENT || p->last.kind == NUMBER) && p->last.text) {
    size_t n = strlen(p->last.text);
    snprintf(text, sizeof text, " '%.*s%s'", n > 32 ? 32 : (int)n, p->last.text,
             n > 32 ? "..." : "");
  }
  const char *expected = e ? e + strlen(", expecting ") : NULL;
  if (!expected && p->last.depth == 0) expected = "'model', 'data' or 'train'";
  if (expected)
    nnc_diag_error(p->diags, at, "unexpected %.*s%s, expected %s", ulen, u, text, expected);
  else
    nnc_diag_error(p->diags, at, "unexpected %.*s%s", ulen, u, text);
  bool in_parens = p->nopen && p->open[p->nopen - 1].ch != '{';
  note_open_bracket(p, expected, p->last.kind == END || (!expected && in_parens));
}
