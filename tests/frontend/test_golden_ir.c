/* test_golden_ir.c: `nnc --emit=ir` text of every example, compared with
 * tests/frontend/golden/<example>.ir. Run with NNC_UPDATE_GOLDEN=1 to write
 * the current output as the new expectation (then review the diff). */
#include "fe_test.h"

#include <dirent.h>

static int check_example(const char *name) {
  char path[1024], golden[1024];
  snprintf(path, sizeof path, "%s/examples/%s", NNC_SOURCE_DIR, name);
  snprintf(golden, sizeof golden, "%s/tests/frontend/golden/%.*s.ir", NNC_SOURCE_DIR,
           (int)(strlen(name) - 3), name);
  size_t len = 0;
  char *text = fe_read_file(path, &len);
  assert_non_null(text);
  fe f;
  fe_compile_n(&f, text, len);
  free(text);
  if (!f.ok || !f.r.module) {
    char *r = fe_render(&f);
    print_error("%s does not compile:\n%s", name, r);
    free(r);
    fe_free(&f);
    return 1;
  }
  char err[256];
  int bad = 0;
  if (!nnc_ir_verify(f.r.module->train, err, sizeof err) ||
      !nnc_ir_verify(f.r.module->eval, err, sizeof err)) {
    print_error("%s: %s\n", name, err);
    bad++;
  }
  char *got = NULL;
  size_t n = 0;
  FILE *out = open_memstream(&got, &n);
  nnc_ir_print_module(out, f.r.module);
  fclose(out);
  fe_free(&f);
  const char *update = getenv("NNC_UPDATE_GOLDEN");
  if (update && strcmp(update, "1") == 0) {
    FILE *g = fopen(golden, "wb");
    assert_non_null(g);
    fwrite(got, 1, n, g);
    fclose(g);
  } else {
    size_t glen;
    char *want = fe_read_file(golden, &glen);
    if (!want) {
      print_error("%s: missing (run with NNC_UPDATE_GOLDEN=1 to create it)\n", golden);
      bad++;
    } else if (strcmp(want, got) != 0) {
      size_t i = 0;
      int line = 1;
      while (want[i] && want[i] == got[i])
        line += want[i++] == '\n';
      print_error("%s differs from the golden IR at line %d (NNC_UPDATE_GOLDEN=1 rewrites it)\n",
                  name, line);
      bad++;
    }
    free(want);
  }
  free(got);
  return bad;
}

static void test_examples(void **state) {
  (void)state;
  DIR *d = opendir(NNC_SOURCE_DIR "/examples");
  assert_non_null(d);
  struct dirent *e;
  int bad = 0, n = 0;
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (l > 3 && strcmp(e->d_name + l - 3, ".nn") == 0) {
      bad += check_example(e->d_name);
      n++;
    }
  }
  closedir(d);
  assert_true(n >= 6);
  assert_int_equal(bad, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_examples)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
