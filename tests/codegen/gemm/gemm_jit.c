/* gemm_jit.c: host TargetMachine + ORC LLJIT around nnc_cg_emit_gemm.
 *
 * Test and benchmark scaffolding only (see gemm_jit.h): every kernel is
 * built in a fresh ThreadSafeContext, tagged with the host CPU, its features
 * and "prefer-vector-width"="512" the way codegen's llvm.c tags kernels,
 * verified, optimised with default<O3>, then handed to the JIT (which takes
 * ownership of the module) or printed as assembly.
 */
#include "gemm_jit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/Analysis.h>
#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/Target.h>
#include <llvm-c/TargetMachine.h>
#include <llvm-c/Transforms/PassBuilder.h>

struct gemm_jit {
  LLVMTargetMachineRef tm;
  LLVMOrcLLJITRef jit;
  char *cpu, *features;
  int count; /* kernels so far; names them */
};

/* Every LLVMErrorRef goes through here: false and the message in err. */
static bool check(LLVMErrorRef e, const char *what, char *err, size_t errlen) {
  if (!e) return true;
  char *msg = LLVMGetErrorMessage(e);
  snprintf(err, errlen, "%s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return false;
}

gemm_jit *gemm_jit_create(char *err, size_t errlen) {
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  gemm_jit *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  char *triple = LLVMGetDefaultTargetTriple();
  LLVMTargetRef target;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(triple, &target, &msg)) {
    snprintf(err, errlen, "target: %s", msg);
    LLVMDisposeMessage(msg);
    LLVMDisposeMessage(triple);
    free(j);
    return NULL;
  }
  j->cpu = LLVMGetHostCPUName();
  j->features = LLVMGetHostCPUFeatures();
  j->tm = LLVMCreateTargetMachine(target, triple, j->cpu, j->features, LLVMCodeGenLevelAggressive,
                                  LLVMRelocDefault, LLVMCodeModelJITDefault);
  LLVMDisposeMessage(triple);
  if (!check(LLVMOrcCreateLLJIT(&j->jit, NULL), "LLJIT", err, errlen)) {
    gemm_jit_free(j);
    return NULL;
  }
  return j;
}

void gemm_jit_free(gemm_jit *j) {
  if (!j) return;
  if (j->jit) LLVMOrcDisposeLLJIT(j->jit);
  if (j->tm) LLVMDisposeTargetMachine(j->tm);
  LLVMDisposeMessage(j->cpu);
  LLVMDisposeMessage(j->features);
  free(j);
}

/* Builds the optimised module for g in ctx; NULL on a verifier failure. */
static LLVMModuleRef build(gemm_jit *j, LLVMContextRef ctx, const nnc_cg_gemm *g, const char *name,
                           char *err, size_t errlen) {
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(name, ctx);
  char *triple = LLVMGetTargetMachineTriple(j->tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(j->tm);
  LLVMSetModuleDataLayout(mod, dl);
  LLVMDisposeTargetData(dl);

  LLVMValueRef fn = nnc_cg_emit_gemm(mod, name, g);
  LLVMAddTargetDependentFunctionAttr(fn, "target-cpu", j->cpu);
  LLVMAddTargetDependentFunctionAttr(fn, "target-features", j->features);
  LLVMAddTargetDependentFunctionAttr(fn, "prefer-vector-width",
                                     g->vector_width >= 16 ? "512" : "256");

  char *msg = NULL;
  if (LLVMVerifyModule(mod, LLVMReturnStatusAction, &msg)) {
    snprintf(err, errlen, "verifier: %s", msg);
    LLVMDisposeMessage(msg);
    LLVMDumpModule(mod);
    LLVMDisposeModule(mod);
    return NULL;
  }
  LLVMDisposeMessage(msg);
  LLVMPassBuilderOptionsRef opts = LLVMCreatePassBuilderOptions();
  LLVMErrorRef e = LLVMRunPasses(mod, "default<O3>", j->tm, opts);
  LLVMDisposePassBuilderOptions(opts);
  if (!check(e, "passes", err, errlen)) {
    LLVMDisposeModule(mod);
    return NULL;
  }
  return mod;
}

gemm_jit_fn gemm_jit_compile(gemm_jit *j, const nnc_cg_gemm *g, char *err, size_t errlen) {
  char name[32];
  snprintf(name, sizeof name, "gemm%d", j->count++);
  LLVMOrcThreadSafeContextRef tsc = LLVMOrcCreateNewThreadSafeContext();
  LLVMModuleRef mod = build(j, LLVMOrcThreadSafeContextGetContext(tsc), g, name, err, errlen);
  if (!mod) {
    LLVMOrcDisposeThreadSafeContext(tsc);
    return NULL;
  }
  /* The ThreadSafeModule takes the module; the JIT takes the TSM. */
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsc);
  LLVMOrcDisposeThreadSafeContext(tsc);
  LLVMOrcJITDylibRef dylib = LLVMOrcLLJITGetMainJITDylib(j->jit);
  if (!check(LLVMOrcLLJITAddLLVMIRModule(j->jit, dylib, tsm), "add module", err, errlen)) {
    LLVMOrcDisposeThreadSafeModule(tsm);
    return NULL;
  }
  LLVMOrcExecutorAddress addr = 0;
  if (!check(LLVMOrcLLJITLookup(j->jit, &addr, name), "lookup", err, errlen)) return NULL;
  gemm_jit_fn fn;
  memcpy(&fn, &addr, sizeof fn); /* object pointer to function pointer */
  return fn;
}

char *gemm_jit_asm(gemm_jit *j, const nnc_cg_gemm *g, char *err, size_t errlen) {
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = build(j, ctx, g, "gemm_asm", err, errlen);
  char *text = NULL;
  if (mod) {
    LLVMMemoryBufferRef buf = NULL;
    char *msg = NULL;
    if (LLVMTargetMachineEmitToMemoryBuffer(j->tm, mod, LLVMAssemblyFile, &msg, &buf)) {
      snprintf(err, errlen, "asm: %s", msg);
      LLVMDisposeMessage(msg);
    } else {
      size_t n = LLVMGetBufferSize(buf);
      text = malloc(n + 1);
      if (text) {
        memcpy(text, LLVMGetBufferStart(buf), n);
        text[n] = 0;
      }
      LLVMDisposeMemoryBuffer(buf);
    }
    LLVMDisposeModule(mod);
  }
  LLVMContextDispose(ctx);
  return text;
}
