/* test_lexer.c: tokens, spans, newline rule and lexical errors of lexer.l. */
#include "fe_test.h"
#include "parse_internal.h"
#include "parser.h"

typedef struct lexed {
  nnc_arena arena;
  nnc_diags diags;
  nnc_ast_ctx ast;
  nnc_parse_ctx p;
  int kinds[256];
  nnc_span spans[256];
  const char *vals[256];
  int n;
} lexed;

static void lex(lexed *l, const char *text, size_t len) {
  memset(l, 0, sizeof *l);
  nnc_arena_init(&l->arena);
  nnc_diags_init(&l->diags, &l->arena);
  l->ast = (nnc_ast_ctx){&l->arena, &l->diags, false};
  l->p.ast = &l->ast;
  l->p.diags = &l->diags;
  l->p.file = nnc_diags_add_source(&l->diags, "lex.nn", text, len);
  nnc_lex_begin(&l->p);
  for (;;) {
    NNC_YYSTYPE v = {0};
    nnc_span at;
    int k = nnc_lex_token(&v, &at, &l->p);
    if (l->n < 256) {
      l->kinds[l->n] = k;
      l->spans[l->n] = at;
      l->vals[l->n++] = v.str;
    }
    if (k == END) break;
  }
  nnc_lex_end(&l->p);
}

static void lex_str(lexed *l, const char *text) {
  lex(l, text, strlen(text));
}

static void test_tokens_and_spans(void **state) {
  (void)state;
  lexed l;
  lex_str(&l, "model m(x: f32[784]) -> f32[10] {");
  int want[] = {MODEL, IDENT, '(',   IDENT, ':',    IDENT, '[', NUMBER, ']',
                ')',   ARROW, IDENT, '[',   NUMBER, ']',   '{', END};
  assert_int_equal(l.n, (int)(sizeof want / sizeof want[0]));
  for (int i = 0; i < l.n; i++)
    assert_int_equal(l.kinds[i], want[i]);
  assert_string_equal(l.vals[1], "m");
  assert_string_equal(l.vals[7], "784");
  assert_int_equal(l.spans[1].begin, 6);
  assert_int_equal(l.spans[1].end, 7);
  assert_int_equal(l.spans[10].begin, 21); /* -> */
  assert_int_equal(l.diags.nerrors, 0);
  nnc_arena_destroy(&l.arena);
}

static void test_newline_rule(void **state) {
  (void)state;
  lexed l;
  /* NL after a complete expression, not inside parentheses, not after '+',
   * one for several blank lines, and one at the end of the file. */
  lex_str(&l, "a = f(x,\n y)\n\n\nb = c +\n d");
  int want[] = {IDENT, '=',   IDENT, '(',   IDENT, ',',   IDENT, ')',
                NL,    IDENT, '=',   IDENT, '+',   IDENT, NL,    END};
  assert_int_equal(l.n, (int)(sizeof want / sizeof want[0]));
  for (int i = 0; i < l.n; i++)
    assert_int_equal(l.kinds[i], want[i]);
  nnc_arena_destroy(&l.arena);
}

static void test_numbers_strings_comments(void **state) {
  (void)state;
  lexed l;
  lex_str(&l, "1e-3 0.5 .25 42 # comment\n\"a\\\"b\\n\" /* block\n comment */ true false");
  assert_int_equal(l.kinds[0], NUMBER);
  assert_string_equal(l.vals[0], "1e-3");
  assert_string_equal(l.vals[2], ".25");
  assert_int_equal(l.kinds[4], NL);
  assert_int_equal(l.kinds[5], STRING);
  assert_string_equal(l.vals[5], "a\"b\n");
  assert_int_equal(l.kinds[6], NL); /* the block comment holds a newline */
  assert_int_equal(l.kinds[7], TRUE);
  assert_int_equal(l.kinds[8], FALSE);
  assert_int_equal(l.diags.nerrors, 0);
  nnc_arena_destroy(&l.arena);
}

static void test_lexical_errors(void **state) {
  (void)state;
  lexed l;
  lex_str(&l, "x = \"abc\ny = 12ab $ \"q\\z\" /* open");
  assert_int_equal(l.diags.nerrors, 5);
  assert_string_equal(l.diags.items[0].msg, "missing terminating '\"' character");
  assert_string_equal(l.diags.items[1].msg, "invalid suffix 'ab' on number");
  assert_string_equal(l.diags.items[2].msg, "unexpected character '$'");
  assert_string_equal(l.diags.items[3].msg, "unknown escape sequence '\\z'");
  assert_string_equal(l.diags.items[4].msg, "unterminated comment");
  nnc_arena_destroy(&l.arena);
}

static void test_nul_and_binary(void **state) {
  (void)state;
  lexed l;
  const char text[] = {'a', 0, 'b', (char)0xff, (char)0xfe, '\n'};
  lex(&l, text, sizeof text);
  assert_int_equal(l.diags.nerrors, 2);
  assert_string_equal(l.diags.items[0].msg, "unexpected byte 0x00");
  assert_string_equal(l.diags.items[1].msg,
                      "unexpected bytes (2 bytes that are not part of any token)");
  nnc_arena_destroy(&l.arena);
}

static void test_nesting_limit(void **state) {
  (void)state;
  char text[NNC_MAX_NESTING + 10];
  memset(text, '(', sizeof text);
  lexed l;
  lex(&l, text, sizeof text);
  assert_int_equal(l.diags.nerrors, 1);
  assert_true(l.p.stop);
  nnc_arena_destroy(&l.arena);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tokens_and_spans),         cmocka_unit_test(test_newline_rule),
      cmocka_unit_test(test_numbers_strings_comments), cmocka_unit_test(test_lexical_errors),
      cmocka_unit_test(test_nul_and_binary),           cmocka_unit_test(test_nesting_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
