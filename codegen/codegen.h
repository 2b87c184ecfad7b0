/* codegen.h: from graph IR to native code through the LLVM C API.
 *
 * nnc_cg_compile lowers the module's `train` and `eval` graphs into kernel
 * IR (loop nests; kernel.h), plans memory (one arena, offsets from
 * lifetimes; plan.c), emits LLVM IR with an entry point per graph
 * (llvm.c) and either JITs it (ORC LLJIT, compiled on 2 threads; jit.c)
 * or writes it out as one object file, assembly or LLVM IR. The result is
 * an nnc_rt_model the runtime can train with (runtime/nnc_rt.h).
 *
 * Errors are returned as a message; nothing here prints, with one
 * exception: with options.verify, a module that fails LLVM's verifier (a
 * compiler bug) is dumped to stderr for the bug report.
 */
#ifndef NNC_CODEGEN_H
#define NNC_CODEGEN_H

#include <stdbool.h>
#include <stdio.h>

#include "ir.h"
#include "nnc_rt.h"

typedef enum nnc_cg_output {
  NNC_CG_JIT,  /* compile in memory; nnc_cg_model gives callable entries */
  NNC_CG_OBJ,  /* object file */
  NNC_CG_ASM,  /* assembly text */
  NNC_CG_LLVM, /* LLVM IR text */
} nnc_cg_output;

typedef struct nnc_cg_options {
  int opt_level;        /* 0..3, default 3 */
  bool verify;          /* LLVMVerifyModule after codegen (on in debug builds) */
  const char *cpu;      /* NULL: the host CPU */
  const char *features; /* NULL: the host's features */
  FILE *timing;         /* if set, per-phase times are written here */
  bool function_times;  /* JIT, with timing: also each function compiled alone
                           (nnc_cg_print_function_times; NNC_DEBUG=2) */
  bool profile;         /* JIT only: time every kernel call (nnc_cg_profile_print) */
} nnc_cg_options;

void nnc_cg_default_options(nnc_cg_options *o);
/* Sets o->cpu and o->features for one of the x86-64 psABI levels
 * ("x86-64", "x86-64-v2", "x86-64-v3": AVX2 and FMA, "x86-64-v4": AVX-512),
 * so the code runs on any CPU of that level; "native" resets them to the
 * host's. False for any other name. */
bool nnc_cg_set_cpu_level(nnc_cg_options *o, const char *name);
/* Floats per vector of the target o describes (16 with AVX-512, 8 with
 * AVX, else 4): what products are tiled for. */
int nnc_cg_vector_width(const nnc_cg_options *o);

typedef struct nnc_cg_program nnc_cg_program;

/* Compiles m (train and/or eval graph; either may be NULL) for the JIT.
 * On success *out owns the LLVM context, the JIT and the tables behind
 * the model; free it with nnc_cg_free. */
bool nnc_cg_compile(const nnc_module *m, const nnc_cg_options *o, nnc_cg_program **out, char *err,
                    size_t errlen);
/* The same in two halves, so the caller can work while LLVM does: lowers,
 * plans and fills the model table (everything but its entry points), then
 * returns while a background thread generates the machine code and links
 * it. The model's `ready` hook (and nnc_cg_wait) waits for that thread;
 * the entry points are valid once it returned 0. nnc_cg_free waits too. */
bool nnc_cg_compile_start(const nnc_module *m, const nnc_cg_options *o, nnc_cg_program **out,
                          char *err, size_t errlen);
bool nnc_cg_wait(nnc_cg_program *p, char *err, size_t errlen);
/* Only the first half: the model table (offsets of the memory plan) with
 * no entry points and no machine code, for a program whose code comes
 * from nnc_cg_emit (the same module lowers to the same plan). */
bool nnc_cg_compile_table(const nnc_module *m, const nnc_cg_options *o, nnc_cg_program **out,
                          char *err, size_t errlen);
/* Seconds from nnc_cg_compile_start to callable code (0 until then). */
double nnc_cg_compile_seconds(const nnc_cg_program *p);
const nnc_rt_model *nnc_cg_model(const nnc_cg_program *p);
void nnc_cg_free(nnc_cg_program *p);
/* Byte offset in the arena of an input or output slot; -1 when no graph
 * has it. (The model table has the ones the training loop needs; these
 * also give e.g. the prediction, for inference and tests.) */
int64_t nnc_cg_input_offset(const nnc_cg_program *p, nnc_input_kind k);
int64_t nnc_cg_output_offset(const nnc_cg_program *p, nnc_output_kind k);
/* With options.profile: writes each graph's kernels with their cumulative
 * time and call count, slowest first (NNC_PROFILE=1 in `nnc run`). Writes
 * nothing when p was compiled without profiling. */
void nnc_cg_profile_print(const nnc_cg_program *p, FILE *out);
/* Writes the kernel IR and memory plan of p (for debugging, --dump). */
void nnc_cg_dump_kernels(const nnc_cg_program *p, FILE *out);
/* The parts a program is compiled in, by `nnc run` (the JIT) and `nnc -o`:
 * a fixed number, so the compile is the same on every machine (a
 * kernel's code does not depend on its part). The parts' shares of the
 * work fall from the second to the last (5, 5, 4, 3, 2, 1), and as many
 * threads as there are CPUs take them in turn (docs/performance.md,
 * "Parts pulled by threads"). */
#define NNC_CG_PARTS 6

/* Which of nparts parts (the JIT compiles its parts on threads) p's
 * kernel number `index` (counting through the graphs, train first) is
 * compiled in, its name in *name; -1 past the last kernel. load[nparts],
 * unless NULL, gets each part's estimated compile work (llvm.c's rule, in
 * about milliseconds of one core). For tests and diagnostics. */
int nnc_cg_kernel_part(const nnc_cg_program *p, int nparts, int index, const char **name,
                       double *load);

/* Writes the same module as object code, assembly or LLVM IR to path
 * ("-" for stdout, text outputs only). */
bool nnc_cg_emit(const nnc_module *m, const nnc_cg_options *o, nnc_cg_output kind, const char *path,
                 char *err, size_t errlen);

/* The same code as nnc_cg_emit's object file, as nparts object files
 * (paths[0..nparts)) compiled on threads: linked together they
 * define the same entry points. At most 8 parts. */
bool nnc_cg_emit_objects(const nnc_module *m, const nnc_cg_options *o, int nparts,
                         const char *const *paths, char *err, size_t errlen);

#endif
