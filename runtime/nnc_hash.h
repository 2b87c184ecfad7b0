/* nnc_hash.h: the counter-based hash behind the RAND op (dropout masks,
 * augmentation), defined once for its three users: the runtime
 * (nnc_rt_hash_uniform, the reference), the graph interpreter (ir/interp.c)
 * and the LLVM emitter (codegen/llvm.c), which expands the same step list
 * into IR instructions. Generated code depends on every bit of it, so it
 * is part of the ABI and must not change. Header-only, no dependencies.
 *
 * All arithmetic is on uint64_t, wrapping:
 *   x = seed ^ (step * NNC_HASH_STEP_MUL) ^ (index * NNC_HASH_INDEX_MUL)
 *   then the splitmix64 finalizer, NNC_HASH_FINALIZER's steps in order
 *   result = (x >> 40) * 2^-24   (the top 24 bits; exact in f32)
 * so a result is a multiple of 2^-24 in [0, 1 - 2^-24].
 */
#ifndef NNC_HASH_H
#define NNC_HASH_H

#include <stdint.h>

#define NNC_HASH_STEP_MUL  0x9E3779B97F4A7C15u
#define NNC_HASH_INDEX_MUL 0xC2B2AE3D27D4EB4Fu
enum { NNC_HASH_BITS = 24 }; /* bits of x kept, from the top */
/* Data-parallel training draws micro-batch g's masks with the seed
 * seed + g * NNC_HASH_MICRO_SEED (mod 2^32), so that they depend on the
 * global micro-batch, not on the rank (runtime/train_parallel.c); a RAND
 * chunked over the batch (ops.def) draws the same in one kernel. */
#define NNC_HASH_MICRO_SEED 0x9E3779B9u

/* The splitmix64 finalizer as a list: XORSHIFT(n) is x ^= x >> n, MUL(c) is
 * x *= c. Each user expands it with its own two macros. */
#define NNC_HASH_FINALIZER(XORSHIFT, MUL)                                                          \
  XORSHIFT(30) MUL(0xBF58476D1CE4E5B9u) XORSHIFT(27) MUL(0x94D049BB133111EBu) XORSHIFT(31)

static inline uint64_t nnc_hash_finalize(uint64_t x) {
#define NNC_HASH_XORSHIFT_(n) x ^= x >> (n);
#define NNC_HASH_MUL_(c)      x *= (uint64_t)(c);
  NNC_HASH_FINALIZER(NNC_HASH_XORSHIFT_, NNC_HASH_MUL_)
#undef NNC_HASH_XORSHIFT_
#undef NNC_HASH_MUL_
  return x;
}

static inline uint64_t nnc_hash_counter(uint64_t seed, uint64_t step, uint64_t index) {
  return nnc_hash_finalize(seed ^ (step * (uint64_t)NNC_HASH_STEP_MUL) ^
                           (index * (uint64_t)NNC_HASH_INDEX_MUL));
}

/* Uniform in [0, 1): what RAND gives at flat index `index`. */
static inline float nnc_hash_uniform(uint64_t seed, uint64_t step, uint64_t index) {
  return (float)(nnc_hash_counter(seed, step, index) >> (64 - NNC_HASH_BITS)) *
         (1.0f / (float)(UINT32_C(1) << NNC_HASH_BITS));
}

#endif
