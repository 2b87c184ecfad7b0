/* rng.c: the runtime's random numbers.
 *
 * nnc_rt_rng is xoshiro256** (Blackman and Vigna) seeded by four outputs of
 * splitmix64; its whole state is the four words of the struct, so saving the
 * struct in a checkpoint saves the stream. Uniform doubles take the top 53
 * bits; normals use the Box-Muller transform and draw two uniforms per
 * normal (no cached spare value, which would be hidden state); shuffles are
 * Fisher-Yates with unbiased bounded integers (rejection sampling).
 *
 * nnc_rt_hash_uniform is a separate, stateless counter-based hash for
 * dropout masks and augmentation, defined in nnc_hash.h (generated code
 * computes the same bits).
 */
#include "nnc_rt.h"

#include "nnc_hash.h"

#include <math.h>

/* splitmix64: a Weyl sequence through the same finalizer as the hash. */
static uint64_t splitmix64(uint64_t *x) {
  return nnc_hash_finalize(*x += UINT64_C(0x9E3779B97F4A7C15));
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

void nnc_rt_rng_seed(nnc_rt_rng *rng, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++)
    rng->s[i] = splitmix64(&x);
}

uint64_t nnc_rt_rng_next(nnc_rt_rng *rng) {
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double nnc_rt_rng_uniform(nnc_rt_rng *rng) {
  return (double)(nnc_rt_rng_next(rng) >> 11) * 0x1p-53;
}

/* Box-Muller: sqrt(-2 ln u1) cos(2 pi u2) with u1 in (0, 1], u2 in [0, 1). */
double nnc_rt_rng_normal(nnc_rt_rng *rng) {
  double u1 = 1.0 - nnc_rt_rng_uniform(rng);
  double u2 = nnc_rt_rng_uniform(rng);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Uniform integer in [0, bound), bound > 0, without modulo bias: reject the
 * lowest 2^64 mod bound values so the rest is a whole number of periods. */
static uint64_t bounded(nnc_rt_rng *rng, uint64_t bound) {
  uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    uint64_t r = nnc_rt_rng_next(rng);
    if (r >= threshold) return r % bound;
  }
}

void nnc_rt_rng_shuffle(nnc_rt_rng *rng, int64_t *perm, int64_t n) {
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)bounded(rng, (uint64_t)i + 1);
    int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
}

/* The formula is nnc_hash.h's, shared with the interpreter and codegen. */
float nnc_rt_hash_uniform(uint64_t seed, uint64_t step, uint64_t index) {
  return nnc_hash_uniform(seed, step, index);
}
