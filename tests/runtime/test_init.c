/* test_init.c: parameter initialisation (init.c). Each init kind's values
 * have the statistics of its distribution (PyTorch's bounds and standard
 * deviations), fill exactly their tensor, apply to every role, and depend
 * only on the seed and the table order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/nnc_rt.h"

enum { N = 100000, GUARD = 16 };

typedef struct stats {
  double mean, std, min, max;
} stats;

/* Initialises one tensor of N elements at offset 64 of a NaN-filled arena
 * and checks that the guard floats around it are untouched. */
static stats init_one(int kind, int role, float a, float b, int64_t fan_in, int64_t fan_out,
                      uint64_t seed, float *copy) {
  size_t bytes = 64 + (N + GUARD) * sizeof(float);
  char *arena = malloc(bytes);
  memset(arena, 0xFF, bytes);
  nnc_rt_tensor t = {.name = "t",
                     .role = role,
                     .rank = 2,
                     .shape = {N / 100, 100},
                     .offset = 64,
                     .init = kind,
                     .init_a = a,
                     .init_b = b,
                     .fan_in = fan_in,
                     .fan_out = fan_out};
  nnc_rt_model m = {.arena_bytes = bytes, .ntensors = 1, .tensors = &t};
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, seed);
  nnc_rt_init_tensors(&m, arena, &rng);
  const float *p = (const float *)(arena + 64);
  stats s = {0, 0, INFINITY, -INFINITY};
  double sq = 0;
  for (int i = 0; i < N; i++) {
    assert_true(isfinite(p[i]));
    s.mean += p[i];
    sq += (double)p[i] * p[i];
    s.min = p[i] < s.min ? p[i] : s.min;
    s.max = p[i] > s.max ? p[i] : s.max;
  }
  for (int i = 0; i < GUARD; i++)
    assert_true(isnan(p[N + i]));
  for (int i = 0; i < 16; i++)
    assert_true(isnan(((const float *)arena)[i]));
  s.mean /= N;
  s.std = sqrt(sq / N - s.mean * s.mean);
  if (copy) memcpy(copy, p, N * sizeof(float));
  free(arena);
  return s;
}

static void check_constant(int kind, float a, float want) {
  stats s = init_one(kind, NNC_RT_PARAM, a, 0, 1, 1, 1, NULL);
  assert_true(s.min == want && s.max == want);
}

static void test_constants(void **state) {
  check_constant(NNC_RT_INIT_ZEROS, 0, 0.0f);
  check_constant(NNC_RT_INIT_ONES, 0, 1.0f);
  check_constant(NNC_RT_INIT_CONSTANT, 0.25f, 0.25f);
  check_constant(NNC_RT_INIT_CONSTANT, -3.5f, -3.5f);
}

/* Normal(mean, std): sample mean within 5 standard errors, std within 2%. */
static void check_normal(stats s, double mean, double std) {
  assert_true(fabs(s.mean - mean) < 5 * std / sqrt(N));
  assert_true(fabs(s.std / std - 1) < 0.02);
  assert_true(s.min < mean - 3 * std && s.max > mean + 3 * std);
}

/* Uniform[lo, hi): inside the bounds, reaching near both, std (hi-lo)/sqrt 12. */
static void check_uniform(stats s, double lo, double hi) {
  double w = hi - lo;
  assert_true(s.min >= (float)lo && s.max < (float)hi);
  assert_true(s.min < lo + 0.001 * w && s.max > hi - 0.001 * w);
  assert_true(fabs(s.mean - (lo + hi) / 2) < 5 * w / sqrt(12.0 * N));
  assert_true(fabs(s.std / (w / sqrt(12.0)) - 1) < 0.02);
}

static void test_normal(void **state) {
  check_normal(init_one(NNC_RT_INIT_NORMAL, NNC_RT_PARAM, 1.0f, 0.5f, 1, 1, 2, NULL), 1.0, 0.5);
  check_normal(init_one(NNC_RT_INIT_NORMAL, NNC_RT_PARAM, 0.0f, 0.01f, 1, 1, 3, NULL), 0.0, 0.01);
}

static void test_uniform(void **state) {
  check_uniform(init_one(NNC_RT_INIT_UNIFORM, NNC_RT_PARAM, -2.0f, 3.0f, 1, 1, 4, NULL), -2, 3);
}

static void test_xavier(void **state) {
  /* fan_in 300, fan_out 100: bound sqrt(6/400) = 0.1225, std sqrt(2/400) = 0.0707. */
  double bound = sqrt(6.0 / 400);
  check_uniform(init_one(NNC_RT_INIT_XAVIER_UNIFORM, NNC_RT_PARAM, 0, 0, 300, 100, 5, NULL), -bound,
                bound);
  check_normal(init_one(NNC_RT_INIT_XAVIER_NORMAL, NNC_RT_PARAM, 0, 0, 300, 100, 6, NULL), 0.0,
               sqrt(2.0 / 400));
}

static void test_he(void **state) {
  /* fan_in 300: bound sqrt(6/300) = 0.1414, std sqrt(2/300) = 0.0816; fan_out unused. */
  double bound = sqrt(6.0 / 300);
  check_uniform(init_one(NNC_RT_INIT_HE_UNIFORM, NNC_RT_PARAM, 0, 0, 300, 7, 7, NULL), -bound,
                bound);
  check_normal(init_one(NNC_RT_INIT_HE_NORMAL, NNC_RT_PARAM, 0, 0, 300, 9999, 8, NULL), 0.0,
               sqrt(2.0 / 300));
}

static void test_every_role(void **state) {
  const int roles[] = {NNC_RT_PARAM, NNC_RT_FROZEN, NNC_RT_BUFFER, NNC_RT_OPT_STATE};
  for (int r = 0; r < 4; r++) {
    stats s = init_one(NNC_RT_INIT_ONES, roles[r], 0, 0, 1, 1, 1, NULL);
    assert_true(s.min == 1.0f && s.max == 1.0f);
    s = init_one(NNC_RT_INIT_ZEROS, roles[r], 0, 0, 1, 1, 1, NULL);
    assert_true(s.min == 0.0f && s.max == 0.0f);
    check_normal(init_one(NNC_RT_INIT_HE_NORMAL, roles[r], 0, 0, 50, 1, 9, NULL), 0.0,
                 sqrt(2.0 / 50));
  }
}

static void test_deterministic(void **state) {
  float *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
  float *c = malloc(N * sizeof(float));
  const int kinds[] = {NNC_RT_INIT_NORMAL,         NNC_RT_INIT_UNIFORM,
                       NNC_RT_INIT_XAVIER_UNIFORM, NNC_RT_INIT_XAVIER_NORMAL,
                       NNC_RT_INIT_HE_UNIFORM,     NNC_RT_INIT_HE_NORMAL};
  for (int k = 0; k < 6; k++) {
    init_one(kinds[k], NNC_RT_PARAM, 0, 1, 10, 10, 42, a);
    init_one(kinds[k], NNC_RT_PARAM, 0, 1, 10, 10, 42, b);
    init_one(kinds[k], NNC_RT_PARAM, 0, 1, 10, 10, 43, c);
    assert_memory_equal(a, b, N * sizeof(float));
    int same = 0;
    for (int i = 0; i < N; i++)
      same += a[i] == c[i];
    assert_true(same < 100);
  }
  free(a);
  free(b);
  free(c);
}

static void test_table_order(void **state) {
  /* Two tensors draw one after the other from the same rng: the second
   * continues the stream, and constant tensors draw nothing. */
  float arena[3 * 8];
  nnc_rt_tensor t[3] = {
      {.name = "a", .rank = 1, .shape = {8}, .offset = 0, .init = NNC_RT_INIT_NORMAL, .init_b = 1},
      {.name = "z", .rank = 1, .shape = {8}, .offset = 32, .init = NNC_RT_INIT_ZEROS},
      {.name = "b", .rank = 1, .shape = {8}, .offset = 64, .init = NNC_RT_INIT_NORMAL, .init_b = 1},
  };
  nnc_rt_model m = {.arena_bytes = sizeof arena, .ntensors = 3, .tensors = t};
  nnc_rt_rng rng, ref;
  nnc_rt_rng_seed(&rng, 5);
  nnc_rt_rng_seed(&ref, 5);
  nnc_rt_init_tensors(&m, (char *)arena, &rng);
  for (int i = 0; i < 8; i++)
    assert_true(arena[i] == (float)nnc_rt_rng_normal(&ref));
  for (int i = 0; i < 8; i++)
    assert_true(arena[8 + i] == 0.0f);
  for (int i = 0; i < 8; i++)
    assert_true(arena[16 + i] == (float)nnc_rt_rng_normal(&ref));
  assert_memory_equal(&rng, &ref, sizeof rng);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_constants),
      cmocka_unit_test(test_normal),
      cmocka_unit_test(test_uniform),
      cmocka_unit_test(test_xavier),
      cmocka_unit_test(test_he),
      cmocka_unit_test(test_every_role),
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_table_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
