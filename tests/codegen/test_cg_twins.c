/* test_cg_twins.c: cold kernels compiled once for all their twins (kernels
 * with the same code but for their buffers' offsets, codegen/twins.c), and
 * loops of one iteration emitted as their bodies (llvm.c `once`): the
 * step's results are the same bit for bit as with every kernel compiled on
 * its own, and the compiled program has fewer functions. Also how the
 * parts are compiled (compile.c): by one thread or by several taking the
 * next part, the same code. */
#define NNC_CG_TEST_FRONTEND
#include "cg_test.h"

#include <regex.h>
#include <sched.h>

#define SMALL_CNN(optimizer)                                                                       \
  "data d = idx(\"fashion-mnist\") { scale = 1/255 }\n"                                            \
  "model cnn(x: f32[1, 12, 12]) -> f32[10] {\n"                                                    \
  "  h = maxpool(relu(batchnorm(conv2d(x, 4, kernel = 3, padding = 1))), 2)\n"                     \
  "  h = relu(batchnorm(conv2d(h, 5, kernel = 3)))\n"                                              \
  "  h = relu(dense(flatten(h), 16))\n"                                                            \
  "  return dense(h, 10)\n"                                                                        \
  "}\n"                                                                                            \
  "train { model = cnn  data = d.train  validate = d.test  loss = cross_entropy\n"                 \
  "        optimizer = " optimizer "  batch = 8  epochs = 1 }\n"
static const char small_cnn[] = SMALL_CNN("adam(lr = 1e-3)");
/* Adam's first steps move a weight by about lr whatever its gradient's
 * size, so gradients near zero (a batch norm's shift) that differ in
 * their last bits from the interpreter's move it differently: compared
 * with the interpreter, the same network under momentum SGD. */
static const char small_cnn_sgd[] = SMALL_CNN("momentum(lr = 0.05, momentum = 0.9)");

/* The module compiled with NNC_TWINS=twins on `threads` threads, two
 * training steps and an evaluation from fx_fill's start: the arena
 * (malloc'd, *bytes long) and the twins the kernel count line reports. */
static char *run(fixture *fx, const char *twins, int threads, int *ntwins, size_t *bytes) {
  setenv("NNC_TWINS", twins, 1);
  fx->timing = tmpfile();
  assert_non_null(fx->timing);
  char *arena = fx_arena_after(fx, threads, 2, true, bytes);
  unsetenv("NNC_TWINS");
  rewind(fx->timing);
  char line[512];
  *ntwins = -1;
  while (fgets(line, sizeof line, fx->timing)) {
    const char *at = strstr(line, " the code of another but for their buffers");
    if (!strstr(line, "codegen: ") || !strstr(line, " kernels, ") || !at) continue;
    while (at > line && at[-1] >= '0' && at[-1] <= '9')
      at--;
    *ntwins = atoi(at);
  }
  fclose(fx->timing);
  fx->timing = NULL;
  return arena;
}

/* Two batch norms (their per-channel sums), four biases (their Adam
 * updates): twins, and the arena after two steps and an evaluation is the
 * one each kernel compiled on its own gives, on 1, 2 and 3 threads. */
static void test_small_cnn_twins_same_bits(void **state) {
  fixture *fx = *state;
  nnc_module *m = fx_compile_source(&fx->arena, "small_cnn.nn", small_cnn, sizeof small_cnn - 1);
  assert_non_null(m);
  fx_use_module(fx, m);
  int none, twins;
  size_t bytes, b;
  char *ref = run(fx, "0", 2, &none, &bytes);
  assert_int_equal(none, 0);
  for (int threads = 1; threads <= 3; threads++) {
    char *got = run(fx, "1", threads, &twins, &b);
    assert_true(twins >= 8);
    assert_int_equal(b, bytes);
    assert_memory_equal(ref, got, bytes);
    free(got);
  }
  free(ref);
}

/* The same step against the reference interpreter, twins compiled once. */
static void test_small_cnn_twins_against_interp(void **state) {
  fixture *fx = *state;
  nnc_module *m =
      fx_compile_source(&fx->arena, "small_cnn.nn", small_cnn_sgd, sizeof small_cnn_sgd - 1);
  assert_non_null(m);
  fx_use_module(fx, m);
  fx->steps = 2;
  fx->rtol = 1e-3;
  fx->atol = 1e-4;
  fx_check(fx);
}

/* Each twin names the kernel it runs as: one of the same kind (the same
 * op in its name), compiled before it. */
static void test_twins_of_their_kind(void **state) {
  fixture *fx = *state;
  nnc_module *m = fx_load_example(&fx->arena, "fashion_cnn.nn");
  if (!m) skip();
  fx_use_module(fx, m);
  char *dump = fx_kernel_dump(fx);
  int twins = 0;
  char name[256] = "";
  for (const char *l = dump; l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
    if (!strncmp(l, "kernel ", 7)) sscanf(l + 7, "%255s", name);
    char first[256];
    if (sscanf(l, "  twin of %255s", first) != 1) continue;
    twins++;
    /* the kind after "graph.kN.": train.k3.colsum and train.k2.colsum */
    const char *op = strchr(strchr(name, '.') + 1, '.') + 1;
    const char *op1 = strchr(strchr(first, '.') + 1, '.') + 1;
    size_t len = strcspn(op, ".");
    assert_int_equal(len, strcspn(op1, "."));
    assert_memory_equal(op, op1, len);
    assert_non_null(strstr(dump, first));
    assert_true(strstr(dump, first) < l);
  }
  /* batch norm's sums and scales, the loss's terms, the biases' updates:
   * 10 in the train graph as built here (nnc run's, whose batch is chunked
   * and which has an evaluation graph too, has 26) */
  assert_true(twins >= 8);
  free(dump);
}

/* No loop of one iteration in the kernels as emitted (before any
 * optimisation): an index that is 0 needs no loop. */
static void test_no_one_iteration_loops(void **state) {
  fixture *fx = *state;
  nnc_module *m = fx_load_example(&fx->arena, "fashion_cnn.nn");
  if (!m) skip();
  setenv("NNC_KERNEL_PIPELINE", "function(verify)", 1);
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  FILE *f = fx_emit_text(m, &o, NNC_CG_LLVM);
  unsetenv("NNC_KERNEL_PIPELINE");
  regex_t one, any;
  assert_int_equal(regcomp(&one, "icmp slt i64 %i[0-9]*, 1$", REG_NOSUB), 0);
  assert_int_equal(regcomp(&any, "icmp slt i64 %i[0-9]*, [0-9]+$", REG_NOSUB | REG_EXTENDED), 0);
  char line[4096];
  int ones = 0, loops = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    ones += regexec(&one, line, 0, NULL, 0) == 0;
    loops += regexec(&any, line, 0, NULL, 0) == 0;
  }
  fclose(f);
  regfree(&one);
  regfree(&any);
  assert_true(loops > 50); /* the pattern finds the loops there are */
  assert_int_equal(ones, 0);
}

/* The JIT's NNC_CG_PARTS parts compiled by one thread (the process held
 * to one CPU) and by as many as there are CPUs, each taking the next part
 * when it finishes one: every part compiled (its timing line), and the
 * arena after two steps and an evaluation the same bit for bit. */
static void test_parts_by_any_threads(void **state) {
  fixture *fx = *state;
  cpu_set_t all, one;
  if (sched_getaffinity(0, sizeof all, &all) != 0 || CPU_COUNT(&all) < 2) skip();
  nnc_module *m = fx_compile_source(&fx->arena, "small_cnn.nn", small_cnn, sizeof small_cnn - 1);
  assert_non_null(m);
  fx_use_module(fx, m);
  int first = 0;
  while (!CPU_ISSET(first, &all))
    first++;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  size_t bytes[2];
  char *arena[2];
  for (int run = 0; run < 2; run++) {
    assert_int_equal(sched_setaffinity(0, sizeof(cpu_set_t), run == 0 ? &one : &all), 0);
    fx->timing = tmpfile();
    assert_non_null(fx->timing);
    arena[run] = fx_arena_after(fx, 2, 2, true, &bytes[run]);
    rewind(fx->timing);
    char line[512];
    bool seen[NNC_CG_PARTS] = {false};
    while (fgets(line, sizeof line, fx->timing)) {
      int part;
      if (sscanf(line, "codegen: part %d: llvm ir", &part) == 1 && part >= 0 && part < NNC_CG_PARTS)
        seen[part] = true;
    }
    fclose(fx->timing);
    fx->timing = NULL;
    for (int i = 0; i < NNC_CG_PARTS; i++)
      if (!seen[i]) fail_msg("run %d: no timing line for part %d", run, i);
  }
  assert_int_equal(sched_setaffinity(0, sizeof all, &all), 0);
  assert_int_equal(bytes[0], bytes[1]);
  assert_memory_equal(arena[0], arena[1], bytes[0]);
  free(arena[0]);
  free(arena[1]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_small_cnn_twins_same_bits), T(test_small_cnn_twins_against_interp),
      T(test_twins_of_their_kind),       T(test_no_one_iteration_loops),
      T(test_parts_by_any_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
