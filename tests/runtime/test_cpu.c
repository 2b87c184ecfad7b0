/* test_cpu.c: CPU detection (cpu.c) against /proc/cpuinfo, and the bf16
 * rounding the bf16 products apply: round to nearest even, ties, NaN,
 * infinities, overflow. (Detection forced off by NNC_CPU_DISABLE is
 * checked end to end: tests/e2e/e2e_cli.sh, section bf16.) */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nnc_rt.h"

/* Whether the first "flags" line of /proc/cpuinfo lists flag; -1 when
 * there is no such file. */
static int cpuinfo_has(const char *flag) {
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return -1;
  static char line[1 << 15];
  int found = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "flags", 5)) {
      found = 0;
      for (char *t = strtok(strchr(line, ':') + 1, " \n"); t; t = strtok(NULL, " \n"))
        if (!strcmp(t, flag)) found = 1;
      break;
    }
  fclose(f);
  return found;
}

static void test_detection_matches_cpuinfo(void **state) {
  (void)state;
  if (getenv("NNC_CPU_DISABLE")) skip();
  const nnc_rt_cpu *c = nnc_rt_cpu_features();
  assert_ptr_equal(c, nnc_rt_cpu_features()); /* once per process */
  struct {
    const char *flag;
    int got;
  } want[] = {{"avx512f", c->avx512f},
              {"avx512_bf16", c->avx512_bf16},
              {"amx_tile", c->amx_tile},
              {"amx_bf16", c->amx_bf16}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    int has = cpuinfo_has(want[i].flag);
    if (has < 0) skip();
    if (has != want[i].got) fail_msg("%s: cpuinfo %d, detected %d", want[i].flag, has, want[i].got);
  }
  nnc_rt_error err = {{0}};
  int rc = nnc_rt_cpu_check_bf16(&err);
  assert_int_equal(rc, c->avx512_bf16 ? 0 : -1);
  if (rc) assert_non_null(strstr(err.msg, "avx512_bf16"));
}

static uint16_t bits_of(uint32_t u) {
  float x;
  memcpy(&x, &u, 4);
  return nnc_rt_bf16_bits(x);
}

static void test_round_nearest_even(void **state) {
  (void)state;
  assert_int_equal(bits_of(0x3f800000u), 0x3f80); /* 1 exactly */
  assert_int_equal(bits_of(0x3f808000u), 0x3f80); /* tie, even below */
  assert_int_equal(bits_of(0x3f818000u), 0x3f82); /* tie, even above */
  assert_int_equal(bits_of(0x3f808001u), 0x3f81); /* just above the tie */
  assert_int_equal(bits_of(0x3f807fffu), 0x3f80); /* just below */
  assert_int_equal(bits_of(0xbf818000u), 0xbf82); /* negative tie */
  assert_int_equal(bits_of(0x00000001u), 0x0000); /* smallest denormal */
  assert_int_equal(bits_of(0x80000000u), 0x8000); /* -0 */
  assert_int_equal(bits_of(0x7f7fffffu), 0x7f80); /* overflow to inf */
  assert_int_equal(bits_of(0x7f800000u), 0x7f80); /* inf */
  assert_int_equal(bits_of(0xff800000u), 0xff80); /* -inf */
  assert_true(isnan(nnc_rt_bf16_round(NAN)));
  float snan;
  uint32_t u = 0x7f800001u; /* would round to inf on the bits alone */
  memcpy(&snan, &u, 4);
  assert_true(isnan(nnc_rt_bf16_round(snan)));
  assert_true(nnc_rt_bf16_round(1.0f / 3.0f) == 0.333984375f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_detection_matches_cpuinfo),
      cmocka_unit_test(test_round_nearest_even),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
