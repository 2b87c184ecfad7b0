/* kernel_ir_no_llvm.c: a build-time check, not a test program. The kernel
 * IR and the lowering's shared state must be usable by a backend that does
 * not use LLVM (a C emitter), so their headers may not pull in LLVM's: this
 * file includes them and fails to compile if any LLVM-C header came along.
 * It is compiled with the codegen and IR folders only on the include path.
 */
#include "gemm_plan.h"
#include "kernel.h"
#include "lower_internal.h"

#if defined(LLVM_C_CORE_H) || defined(LLVM_C_TYPES_H)
#error "the kernel IR headers include LLVM headers"
#endif

/* Something to compile: a product described without LLVM. */
int64_t nnc_check_kernel_ir_row_block(void);
int64_t nnc_check_kernel_ir_row_block(void) {
  nnc_cg_gemm g = {.M = 64, .N = 256, .K = 784, .trans_b = true, .vector_width = 16};
  return nnc_cg_gemm_row_block(&g);
}
