/* parse.h: text to syntax tree.
 *
 * nnc_parse runs the flex lexer and bison parser (lexer.l, parser.y) over one
 * registered source and returns its FILE node. Syntax errors are reported to
 * the builders' diagnostics and the parser recovers at the next line, so the
 * tree it returns holds every declaration it could read; it is never NULL.
 */
#ifndef NNC_PARSE_H
#define NNC_PARSE_H

#include "ast.h"

/* Brackets nested deeper than this are rejected by the lexer. */
enum { NNC_MAX_NESTING = 256 };

nnc_ast *nnc_parse(nnc_ast_ctx *c, uint32_t file);

#endif
