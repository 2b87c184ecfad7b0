/* gemm_jit.h: compiles single nnc_cg_emit_gemm kernels for tests and benchmarks.
 *
 * A stand-in for codegen's own JIT (jit.c) so the matrix-product emitter can
 * be tested and timed without the rest of the pipeline: each kernel gets its
 * own module with the host's target attributes, is optimised with
 * default<O3> for a host TargetMachine and added to one ORC LLJIT, or is
 * printed as assembly. Used by tests/codegen/gemm/test_cg_gemm.c and
 * bench/gemm_bench.c.
 */
#ifndef NNC_GEMM_JIT_H
#define NNC_GEMM_JIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codegen/gemm.h"

typedef void (*gemm_jit_fn)(const float *A, const float *B, const float *bias, float *C,
                            int64_t row_begin, int64_t row_end);

typedef struct gemm_jit gemm_jit;

/* Returns NULL and a message in err on failure. */
gemm_jit *gemm_jit_create(char *err, size_t errlen);
void gemm_jit_free(gemm_jit *j);

/* Emits, optimises and JITs the kernel for g; NULL and err on failure. The
 * code lives as long as j. */
gemm_jit_fn gemm_jit_compile(gemm_jit *j, const nnc_cg_gemm *g, char *err, size_t errlen);

/* The optimised kernel as assembly text (malloc'd; caller frees). */
char *gemm_jit_asm(gemm_jit *j, const nnc_cg_gemm *g, char *err, size_t errlen);

#endif
