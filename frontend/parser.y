/* parser.y: the grammar of .nn files (pure bison parser with locations).
 *
 * Takes tokens from lexer.l, gives an AST (ast.h) through the nnc_ast_*
 * builders: actions do nothing else. Statements are separated by newlines
 * (NL tokens, see parse_internal.h), ';' or ','; separators are optional
 * between statements, so `batch = 64  epochs = 5` is two statements. After a
 * syntax error the parser skips to the end of the line (or the closing '}')
 * and goes on, so one run reports several errors. Messages are rewritten
 * into nnc's style by nnc_parse_syntax_error (parse.c).
 *
 * Grammar summary (docs/language.md has the full story):
 *   file   -> { decl | sep }
 *   decl   -> 'model' IDENT '(' [input {',' input}] ')' '->' type block
 *           | 'data' IDENT '=' call [block]
 *           | 'train' block
 *   input  -> IDENT ':' type          type -> IDENT '[' [expr {',' expr}] ']'
 *   block  -> '{' { stmt | sep } '}'
 *   stmt   -> IDENT '=' expr | 'return' expr | 'param' IDENT ':' type ['=' expr]
 *           | call | 'group' IDENT block
 *   expr   -> expr ('+'|'-'|'*'|'/'|'@') expr | '-' expr | primary
 *   primary-> NUMBER | STRING | 'true' | 'false' | IDENT | IDENT '.' IDENT
 *           | call | '(' expr ')' | '[' [expr {',' expr}] ']'
 *   call   -> IDENT '(' [arg {',' arg}] ')'     arg -> expr | IDENT '=' expr
 */
%define api.pure full
%define api.prefix {nnc_yy}
%define api.location.type {nnc_span}
%define parse.error detailed
%locations
%param {nnc_parse_ctx *p}

%code requires {
#include "ast.h"
typedef struct nnc_parse_ctx nnc_parse_ctx;
}

%code {
#include "parse_internal.h"

/* A rule's span runs from its first symbol's start to its last one's end;
 * an empty rule sits at the end of what precedes it. */
#define YYLLOC_DEFAULT(Cur, Rhs, N)                                            \
  do {                                                                         \
    if (N) {                                                                   \
      (Cur).file = YYRHSLOC(Rhs, 1).file;                                      \
      (Cur).begin = YYRHSLOC(Rhs, 1).begin;                                    \
      (Cur).end = YYRHSLOC(Rhs, N).end;                                        \
    } else {                                                                   \
      (Cur).file = YYRHSLOC(Rhs, 0).file;                                      \
      (Cur).begin = (Cur).end = YYRHSLOC(Rhs, 0).end;                          \
    }                                                                          \
  } while (0)

static int nnc_yylex(NNC_YYSTYPE *lval, nnc_span *lloc, nnc_parse_ctx *p) {
  return nnc_lex_token(lval, lloc, p);
}

void nnc_parse_syntax_error(nnc_parse_ctx *p, nnc_span at, const char *msg);

static void nnc_yyerror(nnc_span *loc, nnc_parse_ctx *p, const char *msg) {
  nnc_parse_syntax_error(p, *loc, msg);
}
}

%union {
  nnc_ast *ast;
  const char *str;
}

%token END 0 "end of file"
%token <str> IDENT "identifier"
%token <str> NUMBER "number"
%token <str> STRING "string"
%token NL "end of line"
%token ARROW "'->'"
%token MODEL "'model'"
%token DATA "'data'"
%token TRAIN "'train'"
%token PARAM "'param'"
%token RETURN "'return'"
%token GROUP "'group'"
%token TRUE "'true'"
%token FALSE "'false'"

%type <ast> file decl model_decl data_decl train_decl inputs inputs1 input type
%type <str> keyword_key member
%type <ast> block stmts stmt expr primary call args args1 arg items items1

%left '+' '-'
%left '*' '/' '@'
%precedence NEG

%%

start: file { p->result = $1; }
  ;

file: %empty        { $$ = nnc_ast_file(p->ast, @$); }
  | file decl       { $$ = nnc_ast_append(p->ast, $1, $2); }
  | file sep        { $$ = $1; }
  | file error NL   { $$ = $1; }
  ;

sep: NL | ';' | ',' ;

decl: model_decl | data_decl | train_decl ;

model_decl: MODEL IDENT '(' inputs ')' ARROW type block
    { $$ = nnc_ast_model(p->ast, @$, $2, @2, $4, $7, $8); }
  ;

inputs: %empty      { $$ = nnc_ast_list_new(p->ast, @$); }
  | inputs1         { $$ = $1; }
  | inputs1 ','     { $$ = $1; }
  ;

inputs1: input      { $$ = nnc_ast_append(p->ast, nnc_ast_list_new(p->ast, @1), $1); }
  | inputs1 ',' input { $$ = nnc_ast_append(p->ast, $1, $3); }
  ;

input: IDENT ':' type { $$ = nnc_ast_typed_input(p->ast, @$, $1, @1, $3); }
  ;

type: IDENT '[' items ']' { $$ = nnc_ast_type(p->ast, @$, $1, @1, $3); }
  ;

data_decl: DATA IDENT '=' call  { $$ = nnc_ast_data(p->ast, @$, $2, @2, $4, NULL); }
  | DATA IDENT '=' call block   { $$ = nnc_ast_data(p->ast, @$, $2, @2, $4, $5); }
  ;

train_decl: TRAIN block { $$ = nnc_ast_train(p->ast, @$, @1, $2); }
  ;

block: '{' stmts '}'      { $$ = nnc_ast_block(p->ast, @$, $2); }
  | '{' stmts error '}'   { $$ = nnc_ast_block(p->ast, @$, $2); }
  ;

stmts: %empty             { $$ = nnc_ast_list_new(p->ast, @$); }
  | stmts stmt            { $$ = nnc_ast_append(p->ast, $1, $2); }
  | stmts sep             { $$ = $1; }
  | stmts error NL        { $$ = $1; }
  ;

stmt: IDENT '=' expr                 { $$ = nnc_ast_assign(p->ast, @$, $1, @1, $3); }
  | keyword_key '=' expr             { $$ = nnc_ast_assign(p->ast, @$, $1, @1, $3); }
  | RETURN expr                      { $$ = nnc_ast_return(p->ast, @$, $2); }
  | PARAM IDENT ':' type             { $$ = nnc_ast_param(p->ast, @$, $2, @2, $4, NULL); }
  | PARAM IDENT ':' type '=' expr    { $$ = nnc_ast_param(p->ast, @$, $2, @2, $4, $6); }
  | call                             { $$ = $1; }
  | GROUP IDENT block                { $$ = nnc_ast_group(p->ast, @$, $2, @2, $3); }
  ;

/* `model = mlp` and `data = fashion.train` in a train block */
keyword_key: MODEL             { $$ = "model"; }
  | DATA                       { $$ = "data"; }
  ;

/* `fashion.train`: keywords are fine after '.' */
member: IDENT                  { $$ = $1; }
  | keyword_key                { $$ = $1; }
  | TRAIN                      { $$ = "train"; }
  ;

expr: expr '+' expr            { $$ = nnc_ast_binary(p->ast, @$, '+', $1, $3); }
  | expr '-' expr              { $$ = nnc_ast_binary(p->ast, @$, '-', $1, $3); }
  | expr '*' expr              { $$ = nnc_ast_binary(p->ast, @$, '*', $1, $3); }
  | expr '/' expr              { $$ = nnc_ast_binary(p->ast, @$, '/', $1, $3); }
  | expr '@' expr              { $$ = nnc_ast_binary(p->ast, @$, '@', $1, $3); }
  | '-' expr %prec NEG         { $$ = nnc_ast_neg(p->ast, @$, $2); }
  | primary                    { $$ = $1; }
  ;

primary: NUMBER                { $$ = nnc_ast_number(p->ast, @$, $1); }
  | STRING                     { $$ = nnc_ast_string(p->ast, @$, $1); }
  | TRUE                       { $$ = nnc_ast_bool(p->ast, @$, true); }
  | FALSE                      { $$ = nnc_ast_bool(p->ast, @$, false); }
  | IDENT                      { $$ = nnc_ast_name(p->ast, @$, $1); }
  | IDENT '.' member           { $$ = nnc_ast_member(p->ast, @$, nnc_ast_name(p->ast, @1, $1), $3, @3); }
  | call                       { $$ = $1; }
  | '(' expr ')'               { $$ = $2; }
  | '[' items ']'              { $$ = nnc_ast_enclose(p->ast, @$, $2); }
  ;

items: %empty                  { $$ = nnc_ast_list_new(p->ast, @$); }
  | items1                     { $$ = $1; }
  | items1 ','                 { $$ = $1; }
  ;

items1: expr                   { $$ = nnc_ast_append(p->ast, nnc_ast_list_new(p->ast, @1), $1); }
  | items1 ',' expr            { $$ = nnc_ast_append(p->ast, $1, $3); }
  ;

call: IDENT '(' args ')'       { $$ = nnc_ast_call(p->ast, @$, $1, @1, $3); }
  ;

args: %empty                   { $$ = nnc_ast_list_new(p->ast, @$); }
  | args1                      { $$ = $1; }
  | args1 ','                  { $$ = $1; }
  ;

args1: arg                     { $$ = nnc_ast_append(p->ast, nnc_ast_list_new(p->ast, @1), $1); }
  | args1 ',' arg              { $$ = nnc_ast_append(p->ast, $1, $3); }
  ;

arg: expr                      { $$ = nnc_ast_arg(p->ast, @$, NULL, @$, $1); }
  | IDENT '=' expr             { $$ = nnc_ast_arg(p->ast, @$, $1, @1, $3); }
  ;

%%
