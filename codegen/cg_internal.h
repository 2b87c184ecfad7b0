/* cg_internal.h: what the files of codegen/ share and nothing outside uses.
 *
 * Without LLVM (the kernel IR, kernel.h, usable by any backend):
 *   lower*.c     graph IR -> kernel IR, one file per pass (lower_internal.h)
 *   plan.c       arena offsets of the buffers
 *   kernel.c     kernel IR builders and printer
 *   gemm_plan.c  how a product is tiled
 * The LLVM backend:
 *   compile.c    the pipeline: lower -> plan -> LLVM module -> optimise -> code
 *   llvm.c       kernel IR -> LLVM modules (one per part: kernels, entry points)
 *   llvm_expr.c  kernel expressions -> LLVM instructions (llvm_internal.h)
 *   gemm.c       register-blocked products as LLVM IR
 *   math.c       vectorisable exp/log/tanh/erf/sigmoid as LLVM IR
 *   jit.c        parts compiled on threads, ORC LLJIT, the nnc_rt_model table
 *   emit.c       object / assembly / LLVM IR files
 *   profile.c    per-kernel times (NNC_PROFILE)
 */
#ifndef NNC_CG_INTERNAL_H
#define NNC_CG_INTERNAL_H

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/TargetMachine.h>

#include "codegen.h"
#include "kernel.h"

/* Turns an LLVMErrorRef into a message in err (consuming it); returns
 * false when there was an error. Every LLVM error goes through here. */
bool nnc_cg_check(LLVMErrorRef e, const char *what, char *err, size_t errlen);

/* The target: triple, CPU, features (host by default, or o's). */
typedef struct nnc_cg_target {
  char *triple, *cpu, *features; /* LLVM-allocated: LLVMDisposeMessage */
  int vector_width;              /* floats per vector the target prefers */
  bool host;                     /* this machine's CPU (no --cpu) */
} nnc_cg_target;

bool nnc_cg_target_init(nnc_cg_target *t, const nnc_cg_options *o, char *err, size_t errlen);
void nnc_cg_target_dispose(nnc_cg_target *t);
/* A target machine for t; NULL with a message on failure. */
LLVMTargetMachineRef nnc_cg_target_machine(const nnc_cg_target *t, int opt_level,
                                           LLVMRelocMode reloc, char *err, size_t errlen);

/* The program's functions can be split into up to this many parts, each
 * an LLVM module of its own, optimised and compiled independently (jit.c
 * compiles them on separate threads). */
#define NNC_CG_MAX_PARTS 8

/* Emits part `part` of nparts of p into mod and the matrix products
 * (gemm.c) its kernels call into gemm_mod (the caller owns both), then
 * verifies them if asked. Part 0 holds the entry points ("nnc_train_step",
 * "nnc_eval_step"); kernels go to parts by llvm.c's fixed assignment. With
 * one part the kernels are internal; with several they are hidden globals
 * the entry points call across modules. A kernel's code does not depend
 * on the part it lands in. */
bool nnc_cg_emit_module(const nnc_kprog *p, int part, int nparts, LLVMModuleRef mod,
                        LLVMModuleRef gemm_mod, const nnc_cg_target *t, bool verify, bool profile,
                        char *err, size_t errlen);

/* String attribute llvm.c puts on functions whose speed does not matter
 * (little work per step): compile.c compiles them optnone after
 * optimising them, i.e. with fast instruction selection and no loop
 * strength reduction, which halves their machine-code time. */
#define NNC_CG_COLD "nnc-cold"

/* String attribute llvm.c puts on the hot loop kernels: compile.c runs
 * no loop strength reduction on them (it does on the other hot functions:
 * the products, the direct convolutions). */
#define NNC_CG_NO_LSR "nnc-no-lsr"

/* Does the entry point run k through nnc_rt_parallel (llvm.c)? */
bool nnc_cg_kernel_parallel(const nnc_kernel *k);

/* ---- profile.c: per-kernel timing (options.profile, JIT only) ----
 * With profiling on, each entry point times every kernel call with
 * nnc_cg_profile_now and adds the nanoseconds and a count to a global
 * int64 array of NNC_CG_PROFILE_SLOTS per kernel, named by
 * nnc_cg_profile_symbol: the nanoseconds of the calls after the first, the
 * calls, and the nanoseconds of the first call. The first step pays for
 * the first touches of its memory (zeroed pages, 2 MB at a time under
 * transparent huge pages: about 4 ms for fashion_mlp), which the report
 * keeps apart from the steady step. */
#define NNC_CG_PROFILE_SLOTS 3
int64_t nnc_cg_profile_now(void);
const char *nnc_cg_profile_symbol(const nnc_kgraph *g); /* "nnc_train_profile" */

void nnc_cg_profile_report(FILE *out, const nnc_kgraph *g, const int64_t *counters);

/* Which of nparts parts each kernel of p is compiled in (part_of[g][i],
 * arrays allocated here, one per graph: free them with nnc_cg_free_parts)
 * and each part's estimated compile work (load[nparts]): llvm.c's rule,
 * dearest kernels first to the least loaded part. */
void nnc_cg_assign_parts(const nnc_kprog *p, int nparts, int *part_of[NNC_CG_NGRAPHS],
                         double *load);
void nnc_cg_free_parts(int *part_of[NNC_CG_NGRAPHS]);

/* An ORC LLJIT for target t (jit.c). */
bool nnc_cg_create_jit(const nnc_cg_target *t, int opt_level, LLVMOrcLLJITRef *out, char *err,
                       size_t errlen);

/* Runs an optimisation pipeline ("default<O3>", ...) on mod. */
bool nnc_cg_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, const char *pipeline,
                     bool vectorize, char *err, size_t errlen);

/* Lowers and plans m into p (p->arena must be set), for code optimised
 * at opt_level (nnc_cg_options). */
bool nnc_cg_build_kernels(nnc_kprog *p, const nnc_module *m, const nnc_cg_target *t, int opt_level,
                          char *err, size_t errlen);

/* Seconds spent on one module's phases (options.timing). */
typedef struct nnc_cg_times {
  double ir, optimise, products, machine_code;
  double split;       /* of that, splitting off the cold functions (nnc_cg_compile_parts) */
  double cold_code;   /* the cold functions' module at -O0 (nnc_cg_compile_parts) */
  int cold_functions; /* how many it has (0: none split off) */
  double cpu;         /* the part's thread CPU time, all phases (nnc_cg_compile_parts) */
} nnc_cg_times;

double nnc_cg_now(void);
void nnc_cg_print_times(FILE *f, const char *what, const nnc_cg_times *t);
/* "codegen: N kernels, M of them the code of a train kernel" (plan.c shares them). */
void nnc_cg_print_kernel_count(FILE *f, const nnc_kprog *p);
/* NNC_DEBUG=2: each function's optimisation and machine code, compiled
 * alone (thread CPU time), one line each. */
void nnc_cg_print_function_times(FILE *out, const nnc_kprog *p, const nnc_cg_options *o,
                                 const nnc_cg_target *t, int nparts);

/* Builds part `part` of nparts (see nnc_cg_emit_module) as an optimised
 * module in ctx: the shared front half of JIT and emit. times may be NULL. */
bool nnc_cg_build_llvm(const nnc_kprog *p, const nnc_cg_options *o, const nnc_cg_target *t,
                       int part, int nparts, LLVMContextRef ctx, LLVMModuleRef *out,
                       nnc_cg_times *times, char *err, size_t errlen);

/* Compiles mod to an object file or assembly text in memory (*out: the
 * caller's), position-independent. */
bool nnc_cg_machine_code(LLVMModuleRef mod, const nnc_cg_target *t, int opt_level,
                         LLVMCodeGenFileType kind, LLVMMemoryBufferRef *out, char *err,
                         size_t errlen);

/* One part of a program compiled by nnc_cg_compile_parts. */
typedef struct nnc_cg_part {
  LLVMMemoryBufferRef obj;      /* the object file (the caller's) */
  LLVMMemoryBufferRef cold_obj; /* with split_cold, the cold functions' (NULL: none) */
  nnc_cg_times times;
} nnc_cg_part;

/* Compiles parts 0..nparts-1 of p into object files in memory, parts 1..
 * on threads of their own (all on this one if a thread cannot start).
 * A kernel's code is the same in any part and on any thread. With
 * split_cold (and opt_level > 0) each part's cold functions go to a second
 * object (cold_obj) compiled at -O0: the same instructions, cheaper
 * machine passes; the two objects of a part must be linked together. On
 * failure no object is left. */
bool nnc_cg_compile_parts(const nnc_kprog *p, const nnc_cg_options *o, const nnc_cg_target *t,
                          int nparts, bool split_cold, nnc_cg_part *out, char *err, size_t errlen);

/* ---- math.c: f32 polynomials, f64 via libm ---- */
typedef struct nnc_cg_math {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
} nnc_cg_math;

LLVMValueRef nnc_cg_exp(nnc_cg_math *m, LLVMValueRef x);
LLVMValueRef nnc_cg_log(nnc_cg_math *m, LLVMValueRef x);
LLVMValueRef nnc_cg_tanh(nnc_cg_math *m, LLVMValueRef x);
LLVMValueRef nnc_cg_sigmoid(nnc_cg_math *m, LLVMValueRef x);
LLVMValueRef nnc_cg_erf(nnc_cg_math *m, LLVMValueRef x);
LLVMValueRef nnc_cg_cos(nnc_cg_math *m, LLVMValueRef x);
LLVMValueRef nnc_cg_pow(nnc_cg_math *m, LLVMValueRef x, LLVMValueRef y);
/* Sets the fast-math flags codegen uses on a floating-point instruction. */
LLVMValueRef nnc_cg_fm(LLVMValueRef v);
/* Calls an overloaded LLVM intrinsic (llvm.sqrt, llvm.fabs, ...) on x. */
LLVMValueRef nnc_cg_intrinsic1(nnc_cg_math *m, const char *name, LLVMValueRef x);
LLVMValueRef nnc_cg_intrinsic2(nnc_cg_math *m, const char *name, LLVMValueRef x, LLVMValueRef y);

#endif
