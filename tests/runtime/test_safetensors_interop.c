/* test_safetensors_interop.c: safetensors files cross between nnc and
 * NumPy (safetensors_interop.py, run with Debian's /usr/bin/python3).
 *   - NumPy writes a file by hand (struct + json + tobytes, F32 and F64, a
 *     scalar); nnc's loader reads it into a model, values checked.
 *   - nnc writes a checkpoint; NumPy parses it and checks every value and
 *     the metadata.
 * When /usr/bin/python3 or its numpy is missing the program exits 77, which
 * ctest reports as skipped (SKIP_RETURN_CODE). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt_testutil.h"

#define PYTHON "/usr/bin/python3"
#define SCRIPT NNC_SOURCE_DIR "/tests/runtime/safetensors_interop.py"

static const char *dir;

static int setup(void **state) {
  dir = tu_tmpdir("interop");
  return dir ? 0 : -1;
}

static int teardown(void **state) {
  tu_rmdir(dir);
  return 0;
}

static int python(const char *verb, const char *path) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, PYTHON " %s %s '%s'", SCRIPT, verb, path);
  return system(cmd);
}

/* A model of named tensors over an arena, filled by the caller. */
typedef struct tmodel {
  nnc_rt_model m;
  nnc_rt_tensor t[4];
  float arena[64];
} tmodel;

static void add(tmodel *tm, const char *name, int role, int rank, int64_t d0, int64_t d1,
                int64_t offset_floats) {
  tm->t[tm->m.ntensors++] = (nnc_rt_tensor){
      .name = name, .role = role, .rank = rank, .shape = {d0, d1}, .offset = 4 * offset_floats};
  tm->m.tensors = tm->t;
  tm->m.arena_bytes = sizeof tm->arena;
}

static void test_numpy_to_nnc(void **state) {
  const char *p = tu_path(dir, "numpy.safetensors");
  assert_int_equal(python("write", p), 0);
  tmodel tm;
  memset(&tm, 0, sizeof tm);
  add(&tm, "enc.w", NNC_RT_PARAM, 2, 3, 4, 0);
  add(&tm, "enc.b", NNC_RT_PARAM, 1, 4, 0, 16);
  add(&tm, "enc.scale", NNC_RT_BUFFER, 0, 0, 0, 24);
  nnc_rt_error err = {{0}};
  nnc_rt_train_state st;
  int has = 1;
  int rc = nnc_rt_checkpoint_load(p, &tm.m, (char *)tm.arena, NULL, &st, &has, &err);
  if (rc) printf("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(has, 0); /* a PyTorch-style file: no training position */
  for (int i = 0; i < 12; i++)
    assert_true(tm.arena[i] == (float)i * 0.5f - 1.0f);
  const double b[4] = {0.5, -1.25, 3.0, 1e-3};
  for (int i = 0; i < 4; i++)
    assert_true(tm.arena[16 + i] == (float)b[i]);
  assert_true(tm.arena[24] == 2.5f);
}

static void test_nnc_to_numpy(void **state) {
  tmodel tm;
  memset(&tm, 0, sizeof tm);
  add(&tm, "net.w", NNC_RT_PARAM, 2, 2, 3, 0);
  add(&tm, "net.b", NNC_RT_PARAM, 1, 3, 0, 8);
  add(&tm, "opt.net.w.m", NNC_RT_OPT_STATE, 2, 2, 3, 16);
  for (int i = 0; i < 6; i++)
    tm.arena[i] = (float)i / 4 - 3, tm.arena[16 + i] = 0.125f;
  for (int i = 0; i < 3; i++)
    tm.arena[8 + i] = -(float)i;
  nnc_rt_train_state st = {
      .epoch = 5, .step = 120, .seed = 9, .shuffle_rng = {{1, 0xDEADBEEF, 3, 4}}};
  nnc_rt_ckpt_save_opts so = {.state = &st, .model_hash = "interop"};
  const char *p = tu_path(dir, "nnc.safetensors");
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_checkpoint_save(p, &tm.m, (const char *)tm.arena, &so, &err), 0);
  assert_int_equal(python("check", p), 0);
}

int main(void) {
  if (access(PYTHON, X_OK) != 0 || system(PYTHON " -c 'import numpy' 2>/dev/null") != 0) {
    printf("skipped: " PYTHON " with numpy is not installed (apt-get install python3-numpy)\n");
    return 77;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_numpy_to_nnc),
      cmocka_unit_test(test_nnc_to_numpy),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
