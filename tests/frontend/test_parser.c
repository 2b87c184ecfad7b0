/* test_parser.c: the grammar (through AST dumps), precedence, builders used
 * directly, syntax-error messages and recovery. */
#include "fe_test.h"
#include "parse.h"

static char *parse_dump(const char *text, int *nerrors) {
  nnc_arena arena;
  nnc_arena_init(&arena);
  nnc_diags diags;
  nnc_diags_init(&diags, &arena);
  uint32_t file = nnc_diags_add_source(&diags, "p.nn", text, strlen(text));
  nnc_ast_ctx ctx = {&arena, &diags, false};
  nnc_ast *ast = nnc_parse(&ctx, file);
  char *buf = NULL;
  size_t n = 0;
  FILE *out = open_memstream(&buf, &n);
  nnc_ast_dump(out, ast);
  fclose(out);
  *nerrors = diags.nerrors;
  nnc_arena_destroy(&arena);
  return buf;
}

static void expect_dump(const char *text, const char *want) {
  int nerr;
  char *got = parse_dump(text, &nerr);
  assert_int_equal(nerr, 0);
  assert_string_equal(got, want);
  free(got);
}

static void test_model(void **state) {
  (void)state;
  expect_dump("model m(x: f32[4]) -> f32[2] {\n  h = relu(dense(x, 3, bias = false))\n"
              "  param w: f32[3, 2] = normal(0, 0.1)\n  return h @ w\n}\n",
              "(file (model m x:(type f32 4) (type f32 2) (block (assign h (call relu (call dense "
              "x 3 bias=false))) (param w (type f32 3 2) (call normal 0 0.1)) (return (@ h w)))))");
}

static void test_precedence(void **state) {
  (void)state;
  expect_dump("train { a = 1 + 2 * -3 - 4 / 5  b = x @ w + b }",
              "(file (train (block (assign a (- (+ 1 (* 2 (- 3))) (/ 4 5))) (assign b (+ (@ x w) "
              "b)))))");
}

static void test_data_and_train(void **state) {
  (void)state;
  expect_dump("data f = idx(\"d\") { scale = 1/255, augment = [hflip(), shift(2)] }\n"
              "train {\n  model = m; data = f.train\n  early_stop(patience = 3)\n"
              "  group head { params = [\"m.d*\"] }\n}\n",
              "(file (data f (call idx \"d\") (block (assign scale (/ 1 255)) (assign augment "
              "(list (call hflip) (call shift 2))))) (train (block (assign model m) (assign data "
              "f.train) (call early_stop patience=3) (group head (block (assign params (list "
              "\"m.d*\")))))))");
}

static void test_builders(void **state) {
  (void)state;
  nnc_arena arena;
  nnc_arena_init(&arena);
  nnc_diags diags;
  nnc_diags_init(&diags, &arena);
  nnc_ast_ctx c = {&arena, &diags, false};
  nnc_span at = {0, 0, 1};
  nnc_ast *x = nnc_ast_name(&c, at, "x");
  for (int i = 0; i < 3 * NNC_MAX_EXPR_DEPTH; i++) {
    x = nnc_ast_neg(&c, at, x);
    assert_true(x->depth <= NNC_MAX_EXPR_DEPTH);
  }
  assert_int_equal(diags.nerrors, 1); /* reported once */
  nnc_ast *big = nnc_ast_number(&c, at, "99999999999999999999");
  assert_int_equal(big->kind, NNC_AST_ERROR);
  nnc_ast *n = nnc_ast_number(&c, at, "123");
  assert_true(n->is_int);
  assert_int_equal(n->ival, 123);
  assert_int_equal(diags.nerrors, 2);
  nnc_arena_destroy(&arena);
}

static void test_recovery(void **state) {
  (void)state;
  fe f;
  fe_compile(&f, "model m(x: f32[4]) -> f32[2] {\n  h = dense(x,, 3)\n  g = (h\n"
                 "  return dense(h 2)\n}\ntrain { batch = }\n");
  /* one error per line; the unclosed '(' swallows its line and the next,
   * up to the '}' that closes the model */
  assert_int_equal(f.diags.nerrors, 3);
  assert_string_equal(f.diags.items[0].msg, "unexpected ',', expected ')'");
  assert_string_equal(f.diags.items[4].msg, "unexpected '}'");
  fe_free(&f);
}

static void test_keyword_typo(void **state) {
  (void)state;
  fe f;
  fe_compile(&f, "modle m(x: f32[4]) -> f32[2] {\n  return x\n}\n");
  assert_true(fe_has(&f, "unknown keyword 'modle'; did you mean 'model'?"));
  fe_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_model),          cmocka_unit_test(test_precedence),
      cmocka_unit_test(test_data_and_train), cmocka_unit_test(test_builders),
      cmocka_unit_test(test_recovery),       cmocka_unit_test(test_keyword_typo),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
