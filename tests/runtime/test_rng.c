/* test_rng.c: the runtime RNG (rng.c): seeding and xoshiro256** against
 * published reference values, uniform and normal statistics, Fisher-Yates
 * shuffles, and nnc_rt_hash_uniform against an independent implementation
 * of its documented formula and values computed in Python. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "runtime/nnc_rt.h"

static void test_seed_is_splitmix64(void **state) {
  /* splitmix64 from 0: the reference outputs of Vigna's splitmix64.c. */
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 0);
  assert_true(rng.s[0] == UINT64_C(0xe220a8397b1dcdaf));
  assert_true(rng.s[1] == UINT64_C(0x6e789e6aa1b965f4));
  assert_true(rng.s[2] == UINT64_C(0x06c45d188009454f));
  assert_true(rng.s[3] == UINT64_C(0xf88bb8a8724c81ec));
}

static void test_xoshiro_reference(void **state) {
  nnc_rt_rng rng = {{1, 2, 3, 4}};
  const uint64_t expect[] = {11520, 0, 1509978240, UINT64_C(1215971899390074240),
                             UINT64_C(1216172134540287360)};
  for (int i = 0; i < 5; i++)
    assert_true(nnc_rt_rng_next(&rng) == expect[i]);
}

static void test_determinism(void **state) {
  nnc_rt_rng a, b, c;
  nnc_rt_rng_seed(&a, 42);
  nnc_rt_rng_seed(&b, 42);
  nnc_rt_rng_seed(&c, 43);
  int differ = 0;
  for (int i = 0; i < 1000; i++) {
    uint64_t x = nnc_rt_rng_next(&a), z = nnc_rt_rng_next(&c);
    assert_true(x == nnc_rt_rng_next(&b));
    differ += x != z;
  }
  assert_true(differ > 990);
  /* The state is the whole generator: a copy continues identically. */
  nnc_rt_rng copy = a;
  for (int i = 0; i < 10; i++)
    assert_true(nnc_rt_rng_normal(&a) == nnc_rt_rng_normal(&copy));
}

static void test_uniform_stats(void **state) {
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 7);
  const int n = 100000;
  double sum = 0, sq = 0, lo = 1, hi = 0;
  for (int i = 0; i < n; i++) {
    double u = nnc_rt_rng_uniform(&rng);
    assert_true(u >= 0.0 && u < 1.0);
    sum += u;
    sq += u * u;
    lo = u < lo ? u : lo;
    hi = u > hi ? u : hi;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  assert_true(fabs(mean - 0.5) < 0.005);     /* sd of the mean: 0.0009 */
  assert_true(fabs(var - 1.0 / 12) < 0.002); /* 1/12 = 0.0833 */
  assert_true(lo < 1e-3 && hi > 1 - 1e-3);
}

static void test_normal_stats(void **state) {
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 11);
  const int n = 100000;
  double sum = 0, sq = 0, within1 = 0, fourth = 0;
  for (int i = 0; i < n; i++) {
    double z = nnc_rt_rng_normal(&rng);
    assert_true(isfinite(z));
    sum += z;
    sq += z * z;
    fourth += z * z * z * z;
    within1 += fabs(z) < 1.0;
  }
  double mean = sum / n, var = sq / n - mean * mean;
  assert_true(fabs(mean) < 0.015);           /* sd of the mean: 0.0032 */
  assert_true(fabs(var - 1.0) < 0.02);       /* sd of the variance: 0.0045 */
  assert_true(fabs(fourth / n - 3.0) < 0.1); /* kurtosis of a normal */
  assert_true(fabs(within1 / n - 0.6827) < 0.01);
}

static int is_permutation(const int64_t *p, int64_t n) {
  char seen[1000] = {0};
  for (int64_t i = 0; i < n; i++) {
    if (p[i] < 0 || p[i] >= n || seen[p[i]]) return 0;
    seen[p[i]] = 1;
  }
  return 1;
}

static void shuffled(uint64_t seed, int64_t *p, int64_t n) {
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, seed);
  for (int64_t i = 0; i < n; i++)
    p[i] = i;
  nnc_rt_rng_shuffle(&rng, p, n);
}

static void test_shuffle(void **state) {
  int64_t a[1000], b[1000], c[1000];
  shuffled(1, a, 1000);
  shuffled(1, b, 1000);
  shuffled(2, c, 1000);
  assert_true(is_permutation(a, 1000));
  assert_true(is_permutation(c, 1000));
  assert_memory_equal(a, b, sizeof a);
  int fixed = 0, same = 0;
  for (int i = 0; i < 1000; i++) {
    fixed += a[i] == i;
    same += a[i] == c[i];
  }
  assert_true(fixed < 10 && same < 10); /* about 1 of each expected */
  /* n = 0 and 1 are no-ops. */
  int64_t one = 5;
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 3);
  nnc_rt_rng_shuffle(&rng, &one, 1);
  nnc_rt_rng_shuffle(&rng, NULL, 0);
  assert_int_equal(one, 5);
}

static void test_shuffle_uniform(void **state) {
  /* All 6 orders of 3 items equally likely: 60000 shuffles, 10000 each. */
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 99);
  int count[3][3][3] = {{{0}}};
  for (int i = 0; i < 60000; i++) {
    int64_t p[3] = {0, 1, 2};
    nnc_rt_rng_shuffle(&rng, p, 3);
    count[p[0]][p[1]][p[2]]++;
  }
  int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  for (int k = 0; k < 6; k++) {
    int c = count[orders[k][0]][orders[k][1]][orders[k][2]];
    assert_in_range(c, 9600, 10400); /* sd 91 */
  }
}

/* The documented formula, written out independently. */
static float reference_hash(uint64_t seed, uint64_t step, uint64_t index) {
  uint64_t a = step * 0x9E3779B97F4A7C15u;
  uint64_t b = index * 0xC2B2AE3D27D4EB4Fu;
  uint64_t x = seed ^ a ^ b;
  x = x ^ (x >> 30);
  x = x * 0xBF58476D1CE4E5B9u;
  x = x ^ (x >> 27);
  x = x * 0x94D049BB133111EBu;
  x = x ^ (x >> 31);
  uint32_t top24 = (uint32_t)(x >> 40);
  return (float)top24 / 16777216.0f;
}

static void test_hash_uniform_known(void **state) {
  /* Values computed with Python's integers from the documented formula. */
  assert_true(nnc_rt_hash_uniform(0, 0, 0) == 0.0f);
  assert_true(nnc_rt_hash_uniform(42, 1, 0) == 12441394 * 0x1p-24f);
  assert_true(nnc_rt_hash_uniform(42, 1, 1) == 6512081 * 0x1p-24f);
  assert_true(nnc_rt_hash_uniform(42, 2, 0) == 14246810 * 0x1p-24f);
  assert_true(nnc_rt_hash_uniform(12345, 7, 1000000) == 12597418 * 0x1p-24f);
  assert_true(nnc_rt_hash_uniform(0xFFFFFFFFu, 123456789, 987654321) == 5749612 * 0x1p-24f);
}

static void test_hash_uniform_reference(void **state) {
  double sum = 0;
  int n = 0;
  for (uint64_t seed = 0; seed < 4; seed++)
    for (uint64_t step = 0; step < 50; step++)
      for (uint64_t i = 0; i < 500; i++) {
        float u = nnc_rt_hash_uniform(seed * 0x1234567u, step, i);
        assert_true(u == reference_hash(seed * 0x1234567u, step, i));
        assert_true(u >= 0.0f && u < 1.0f);
        sum += u;
        n++;
      }
  assert_true(fabs(sum / n - 0.5) < 0.005);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_seed_is_splitmix64),
      cmocka_unit_test(test_xoshiro_reference),
      cmocka_unit_test(test_determinism),
      cmocka_unit_test(test_uniform_stats),
      cmocka_unit_test(test_normal_stats),
      cmocka_unit_test(test_shuffle),
      cmocka_unit_test(test_shuffle_uniform),
      cmocka_unit_test(test_hash_uniform_known),
      cmocka_unit_test(test_hash_uniform_reference),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
