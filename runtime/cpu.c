/* cpu.c: what the CPU this process runs on can do, and bf16 rounding.
 *
 * Code compiled with `precision = bf16` uses AVX512-BF16 instructions
 * (vdpbf16ps); a trainer built that way checks the CPU first and says
 * what is missing instead of dying on an illegal instruction. The CPU is
 * asked once per process (cpuid, and xgetbv for the OS's AVX-512 state).
 * AMX (amx_tile, amx_bf16) is reported but not used: no machine nnc's
 * bf16 kernels were written on had it, so no tile permission is requested.
 *
 * NNC_CPU_DISABLE=feature[,feature...] (avx512f, avx512_bf16, amx_tile,
 * amx_bf16) reports those features absent: how the tests simulate an
 * older CPU. It is read once, with the CPU.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "nnc_rt.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define NNC_RT_X86 1
#endif

static nnc_rt_cpu detected;
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;

/* Whether the comma-separated list names word. */
static int listed(const char *list, const char *word) {
  size_t n = strlen(word);
  for (const char *p = list; p && *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    if (len == n && !strncmp(p, word, n)) return 1;
    p = end ? end + 1 : NULL;
  }
  return 0;
}

static void detect(void) {
  nnc_rt_cpu c = {0};
#ifdef NNC_RT_X86
  unsigned a, b, cx, d;
  int os_zmm = 0;
  if (__get_cpuid(1, &a, &b, &cx, &d) && (cx >> 27 & 1)) { /* OSXSAVE */
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    os_zmm = (lo & 0xe6) == 0xe6; /* SSE, AVX, opmask, both zmm halves */
  }
  if (__get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
    c.avx512f = os_zmm && (b >> 16 & 1);
    c.amx_bf16 = d >> 22 & 1;
    c.amx_tile = d >> 24 & 1;
    unsigned max7 = a;
    if (max7 >= 1 && __get_cpuid_count(7, 1, &a, &b, &cx, &d))
      c.avx512_bf16 = c.avx512f && (a >> 5 & 1);
  }
#endif
  const char *off = getenv("NNC_CPU_DISABLE");
  if (off) {
    if (listed(off, "avx512f")) c.avx512f = c.avx512_bf16 = 0;
    if (listed(off, "avx512_bf16")) c.avx512_bf16 = 0;
    if (listed(off, "amx_tile")) c.amx_tile = c.amx_bf16 = 0;
    if (listed(off, "amx_bf16")) c.amx_bf16 = 0;
  }
  detected = c;
}

const nnc_rt_cpu *nnc_rt_cpu_features(void) {
  pthread_once(&detect_once, detect);
  return &detected;
}

int nnc_rt_cpu_check_bf16(nnc_rt_error *err) {
  const nnc_rt_cpu *c = nnc_rt_cpu_features();
  if (c->avx512_bf16) return 0;
  return nnc_rt_fail(err,
                     "this program was compiled with precision = bf16, which needs a CPU with "
                     "AVX512-BF16 (cpuid feature avx512_bf16%s); this CPU lacks it; rebuild with "
                     "precision = f32 (--precision f32)",
                     c->avx512f ? "" : ", and AVX-512 avx512f, also missing");
}

uint16_t nnc_rt_bf16_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(u >> 16 | 0x40); /* NaN: quiet */
  return (uint16_t)((u + 0x7fffu + (u >> 16 & 1)) >> 16);
}

float nnc_rt_bf16_round(float x) {
  uint32_t u = (uint32_t)nnc_rt_bf16_bits(x) << 16;
  float r;
  memcpy(&r, &u, sizeof r);
  return r;
}
