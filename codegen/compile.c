/* compile.c: the codegen pipeline, top to bottom.
 *
 *   lower (graph -> kernels)  ->  plan (arena offsets)  ->  LLVM module
 *   (kernels + entry points)  ->  verify (debug builds)  ->  optimise
 *
 * jit.c and emit.c take the optimised module from here and either JIT it
 * or write it out. Also here: the target description (host CPU and
 * features unless the options say otherwise) and the one helper every
 * LLVMErrorRef goes through.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llvm-c/Linker.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "cg_internal.h"

#ifndef NNC_HAVE_GEMM
#define NNC_HAVE_GEMM 0
#endif

void nnc_cg_default_options(nnc_cg_options *o) {
  memset(o, 0, sizeof *o);
  o->opt_level = 3;
#ifdef NNC_DEBUG_CHECKS
  o->verify = true;
#endif
}

bool nnc_cg_check(LLVMErrorRef e, const char *what, char *err, size_t errlen) {
  if (!e) return true;
  char *msg = LLVMGetErrorMessage(e); /* consumes e */
  snprintf(err, errlen, "codegen: %s: %s", what, msg);
  LLVMDisposeErrorMessage(msg);
  return false;
}

static void init_llvm(void) {
  /* Idempotent; LLVM guards its own registries. */
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  LLVMInitializeNativeAsmParser();
}

bool nnc_cg_target_init(nnc_cg_target *t, const nnc_cg_options *o, char *err, size_t errlen) {
  init_llvm();
  memset(t, 0, sizeof *t);
  t->triple = LLVMGetDefaultTargetTriple();
  if (o->cpu) {
    t->cpu = LLVMCreateMessage(o->cpu);
    t->features = LLVMCreateMessage(o->features ? o->features : "");
  } else {
    t->cpu = LLVMGetHostCPUName();
    t->features = o->features ? LLVMCreateMessage(o->features) : LLVMGetHostCPUFeatures();
  }
  t->vector_width = strstr(t->features, "+avx512f") ? 16 : strstr(t->features, "+avx") ? 8 : 4;
  (void)err;
  (void)errlen;
  return true;
}

void nnc_cg_target_dispose(nnc_cg_target *t) {
  LLVMDisposeMessage(t->triple);
  LLVMDisposeMessage(t->cpu);
  LLVMDisposeMessage(t->features);
  memset(t, 0, sizeof *t);
}

LLVMTargetMachineRef nnc_cg_target_machine(const nnc_cg_target *t, int opt_level,
                                           LLVMRelocMode reloc, char *err, size_t errlen) {
  LLVMTargetRef target;
  char *msg = NULL;
  if (LLVMGetTargetFromTriple(t->triple, &target, &msg)) {
    snprintf(err, errlen, "codegen: no LLVM target for %s: %s", t->triple, msg ? msg : "");
    LLVMDisposeMessage(msg);
    return NULL;
  }
  LLVMCodeGenOptLevel level = opt_level <= 0   ? LLVMCodeGenLevelNone
                              : opt_level == 1 ? LLVMCodeGenLevelLess
                              : opt_level == 2 ? LLVMCodeGenLevelDefault
                                               : LLVMCodeGenLevelAggressive;
  return LLVMCreateTargetMachine(target, t->triple, t->cpu, t->features, level, reloc,
                                 LLVMCodeModelDefault);
}

bool nnc_cg_build_kernels(nnc_kprog *p, const nnc_module *m, const nnc_cg_target *t, char *err,
                          size_t errlen) {
  p->vector_width = t->vector_width;
  p->use_gemm = NNC_HAVE_GEMM;
  if (!nnc_cg_lower(p, m, err, errlen)) return false;
  nnc_cg_plan(p);
  return true;
}

bool nnc_cg_optimize(LLVMModuleRef mod, LLVMTargetMachineRef tm, const char *pipeline,
                     bool vectorize, char *err, size_t errlen) {
  LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(po, vectorize);
  LLVMPassBuilderOptionsSetSLPVectorization(po, vectorize);
  LLVMPassBuilderOptionsSetLoopUnrolling(po, vectorize);
  bool ok = nnc_cg_check(LLVMRunPasses(mod, pipeline, tm, po), "optimisation", err, errlen);
  LLVMDisposePassBuilderOptions(po);
  return ok;
}

/* gemm.c's kernels are vectorised and register-blocked as emitted; they
 * need scalar clean-up (CSE, constant folding, simple CFG), not O3, whose
 * loop passes cost ~0.3 s on them for no speed (measured on the MLP:
 * 139,000 samples/s either way). NNC_GEMM_PIPELINE overrides it (tuning). */
static const char *gemm_pipeline(void) {
  const char *env = getenv("NNC_GEMM_PIPELINE");
  return env ? env : "function(early-cse,instcombine,simplifycfg)";
}

static double now(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

bool nnc_cg_build_llvm(const nnc_kprog *p, const nnc_cg_options *o, const nnc_cg_target *t,
                       LLVMContextRef ctx, LLVMModuleRef *out, char *err, size_t errlen) {
  double t0 = now();
  LLVMTargetMachineRef tm = nnc_cg_target_machine(t, o->opt_level, LLVMRelocPIC, err, errlen);
  if (!tm) return false;
  const char *name = p->module->name && *p->module->name ? p->module->name : "nnc";
  LLVMModuleRef mod = LLVMModuleCreateWithNameInContext(name, ctx);
  LLVMModuleRef gemm_mod = LLVMModuleCreateWithNameInContext("nnc.gemm", ctx);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMModuleRef both[2] = {mod, gemm_mod};
  for (int i = 0; i < 2; i++) {
    LLVMSetTarget(both[i], t->triple);
    LLVMSetModuleDataLayout(both[i], dl);
  }
  LLVMDisposeTargetData(dl);
  bool ok = nnc_cg_emit_module(p, mod, gemm_mod, t, o->verify, o->profile, err, errlen);
  double t1 = now();
  int level = o->opt_level < 0 ? 0 : o->opt_level > 3 ? 3 : o->opt_level;
  char pipeline[32];
  snprintf(pipeline, sizeof pipeline, "default<O%d>", level);
  if (ok) ok = nnc_cg_optimize(mod, tm, pipeline, level >= 2, err, errlen);
  double t2 = now();
  if (ok)
    ok = nnc_cg_optimize(gemm_mod, tm, level ? gemm_pipeline() : "default<O0>", false, err, errlen);
  double t3 = now();
  /* Linking consumes gemm_mod. */
  if (ok && LLVMLinkModules2(mod, gemm_mod)) {
    snprintf(err, errlen, "codegen: linking the gemm module failed");
    ok = false;
  } else if (!ok) {
    LLVMDisposeModule(gemm_mod);
  }
  if (ok) /* the products are private to this module once linked */
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
      size_t len;
      const char *fname = LLVMGetValueName2(f, &len);
      if (len > 9 && !strncmp(fname, "nnc.gemm.", 9) && !LLVMIsDeclaration(f))
        LLVMSetLinkage(f, LLVMInternalLinkage);
    }
  if (o->timing)
    fprintf(o->timing,
            "codegen: llvm ir %.1f ms, optimise kernels (O%d) %.1f ms, products (%s) %.1f ms\n",
            1e3 * (t1 - t0), level, 1e3 * (t2 - t1), level ? gemm_pipeline() : "default<O0>",
            1e3 * (t3 - t2));
  LLVMDisposeTargetMachine(tm);
  if (!ok) {
    LLVMDisposeModule(mod);
    return false;
  }
  *out = mod; /* ownership moves to the caller */
  return true;
}
