/* test_hostile.c: inputs meant to break the front end, generated here. Each
 * must end in diagnostics (at least one error), without a crash, a hang or a
 * leak (the sanitizer build runs this too). */
#include "fe_test.h"

static void expect_errors(const char *what, const char *text, size_t len) {
  fe f;
  fe_compile_n(&f, text, len);
  if (f.diags.nerrors == 0) print_error("%s: no error reported\n", what);
  assert_true(f.diags.nerrors > 0);
  assert_false(f.ok);
  char *r = fe_render(&f); /* rendering must cope too */
  assert_non_null(r);
  free(r);
  fe_free(&f);
}

static void expect_errors_str(const char *what, const char *text) {
  expect_errors(what, text, strlen(text));
}

static char *repeat(const char *head, const char *unit, size_t times, const char *tail) {
  size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
  char *s = malloc(hl + ul * times + tl + 1);
  memcpy(s, head, hl);
  for (size_t i = 0; i < times; i++)
    memcpy(s + hl + i * ul, unit, ul);
  memcpy(s + hl + ul * times, tail, tl + 1);
  return s;
}

static void test_empty_and_blank(void **state) {
  (void)state;
  expect_errors("empty", "", 0);
  expect_errors_str("blank", "\n\n   \t\n# only a comment\n");
}

static void test_random_bytes(void **state) {
  (void)state;
  uint64_t x = 0x9E3779B97F4A7C15ull; /* fixed seed: xorshift64 */
  char *buf = malloc(1 << 16);
  for (int round = 0; round < 20; round++) {
    size_t n = 1 + (size_t)(x % (1 << 16));
    for (size_t i = 0; i < n; i++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      buf[i] = round % 2 ? (char)(x & 0xff) : " \n(){}[]=,.+-*/@:abcdef0123\"#"[x % 29];
    }
    fe f;
    fe_compile_n(&f, buf, n); /* may or may not be an error: must not crash */
    fe_free(&f);
  }
  free(buf);
}

static void test_nul_bytes(void **state) {
  (void)state;
  const char text[] = "model\0m(x: f32[1]) -> f32[1] {\0 return x }\0";
  expect_errors("NUL", text, sizeof text - 1);
  const char str[] = "data d = idx(\"a\0b\")\n";
  expect_errors("NUL in string", str, sizeof str - 1);
}

static void test_long_line(void **state) {
  (void)state;
  char *s = repeat("train { batch = ", "1+", 500000, "1 }\n"); /* a 1 MB line */
  expect_errors("1 MB expression", s, strlen(s));
  free(s);
  s = repeat("model m(x: f32[1]) -> f32[1] { return x }  # ", "x", 1 << 20, "\nmodl");
  expect_errors("1 MB comment", s, strlen(s));
  free(s);
  s = repeat("train { log = \"", "a", 1 << 20, "\" batch = -1 }");
  expect_errors("1 MB string", s, strlen(s));
  free(s);
}

static void test_deep_nesting(void **state) {
  (void)state;
  char *open = repeat("train { batch = ", "(", 10000, "1");
  char *s = repeat(open, ")", 10000, " }\n");
  expect_errors("10,000 parentheses", s, strlen(s));
  free(open);
  free(s);
  s = repeat("train { batch = ", "[", 10000, "");
  expect_errors("10,000 brackets", s, strlen(s));
  free(s);
  s = repeat("train { batch = ", "-", 100000, "1 }");
  expect_errors("100,000 minus signs", s, strlen(s));
  free(s);
  s = repeat("model m(x: f32[2]) -> f32[2] { return ", "relu(", 5000, "x");
  expect_errors("5,000 nested calls", s, strlen(s));
  free(s);
}

static void test_unterminated(void **state) {
  (void)state;
  expect_errors_str("string", "data d = idx(\"fashion");
  expect_errors_str("comment", "model m(x: f32[1]) -> f32[1] { return x }\n/* never closed");
  expect_errors_str("block", "model m(x: f32[1]) -> f32[1] {\n  return x\n");
  expect_errors_str("call", "train { optimizer = adam(lr = 1e-3\n");
}

static void test_absurd_shapes_and_numbers(void **state) {
  (void)state;
  const char *cases[] = {
      "model m(x: f32[1000000000000]) -> f32[1] { return dense(x, 1) }",
      "model m(x: f32[-5]) -> f32[1] { return dense(x, 1) }",
      "model m(x: f32[0]) -> f32[1] { return dense(x, 1) }",
      "model m(x: f32[2.5]) -> f32[1] { return dense(x, 1) }",
      "model m(x: f32[100000, 100000, 100000]) -> f32[1] { return dense(flatten(x), 1) }",
      "model m(x: f32[1,2,3,4,5,6,7,8,9]) -> f32[1] { return dense(flatten(x), 1) }",
      "model m(x: f32[4]) -> f32[1] { return dense(dense(x, 2000000000), 1) }",
      "model m(x: f32[1, 8, 8]) -> f32[1] { return dense(flatten(conv2d(x, 1, kernel = 9)), 1) }",
      "train { batch = 99999999999999999999999999999 }",
      "train { batch = 1e999 }",
      "train { epochs = -3 }",
      "train { seed = 1.5 }",
      "model m(x: f32[4]) -> f32[1] { return dense(x, 1e10) }",
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    expect_errors_str(cases[i], cases[i]);
}

static void test_error_cap(void **state) {
  (void)state;
  char *s = repeat("", "$ ", 1000, "");
  fe f;
  fe_compile(&f, s);
  assert_true(f.diags.fatal);
  assert_int_equal(f.diags.nerrors, NNC_MAX_ERRORS);
  fe_free(&f);
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_and_blank),
      cmocka_unit_test(test_random_bytes),
      cmocka_unit_test(test_nul_bytes),
      cmocka_unit_test(test_long_line),
      cmocka_unit_test(test_deep_nesting),
      cmocka_unit_test(test_unterminated),
      cmocka_unit_test(test_absurd_shapes_and_numbers),
      cmocka_unit_test(test_error_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
