/* compile.c: the codegen pipeline, top to bottom.
 *
 *   lower (graph -> kernels)  ->  plan (arena offsets)  ->  LLVM module
 *   (kernels + entry points)  ->  verify (debug builds)  ->  optimise
 *   ->  machine code
 *
 * A program can be built as several parts, each its own module (llvm.c
 * assigns the kernels), compiled by threads that each take the next part
 * until none is left (nnc_cg_compile_parts): jit.c links them in memory
 * (each part's cold functions in a second object, compiled at -O0), `nnc
 * -o` writes one object file each; the other outputs of emit.c are one
 * part holding everything. Also here: the target
 * description (host CPU and features unless the options say otherwise),
 * the pass pipelines, and the one helper every LLVMErrorRef goes through.
 */
#define _GNU_SOURCE /* sched_getaffinity; clock_gettime, CLOCK_THREAD_CPUTIME_ID */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llvm-c/Linker.h>
#include <llvm-c/Support.h>
#include <llvm-c/Target.h>
#include <llvm-c/Transforms/PassBuilder.h>

#include "cg_internal.h"

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

/* Two of LLVM's options, which are the process's and can only be set
 * for all target machines (once per process, before any target machine
 * builds a pipeline):
 * - Instruction selection's pipeline runs no loop strength reduction
 *   (-disable-lsr): build_part runs it on the functions it pays for
 *   (strength_reduce).
 * - No list scheduling after register allocation (-post-RA-scheduler=
 *   false). The CPU models that turn it on (znver*) are out of order; it
 *   was ~8% of the CNN's machine code (llc-19 on the parts' modules) and
 *   moved no product's speed (docs/performance.md, fourteenth stop). */
static void set_llvm_options(void) {
  const char *argv[3] = {"nnc", "-disable-lsr", "-post-RA-scheduler=false"};
  LLVMParseCommandLineOptions(3, argv, NULL);
}

static void init_llvm(void) {
  /* Idempotent; LLVM guards its own registries. */
  LLVMInitializeNativeTarget();
  LLVMInitializeNativeAsmPrinter();
  LLVMInitializeNativeAsmParser();
  static pthread_once_t options_once = PTHREAD_ONCE_INIT; /* process state: LLVM's options */
  pthread_once(&options_once, set_llvm_options);
}

bool nnc_cg_set_cpu_level(nnc_cg_options *o, const char *name) {
  /* Each level's features spelled out (LLVM would imply them from the CPU
   * name, but the vector width is read from this string); each level
   * extends the one before. */
#define NNC_X86_V1      "+sse2"
#define NNC_X86_V2      NNC_X86_V1 ",+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+sahf"
#define NNC_X86_V3      NNC_X86_V2 ",+avx,+avx2,+bmi,+bmi2,+f16c,+fma,+lzcnt,+movbe,+xsave"
#define NNC_X86_V4      NNC_X86_V3 ",+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl,+evex512"
#define NNC_X86_V4_BF16 NNC_X86_V4 ",+avx512bf16,+avx512vnni"
  /* name, LLVM's CPU, features */
  static const char *const levels[][3] = {
      {"x86-64", "x86-64", NNC_X86_V1},
      {"x86-64-v2", "x86-64-v2", NNC_X86_V2},
      {"x86-64-v3", "x86-64-v3", NNC_X86_V3},
      {"x86-64-v4", "x86-64-v4", NNC_X86_V4},
      /* what precision = bf16 needs (vdpbf16ps); AMX is not used */
      {"x86-64-v4-bf16", "x86-64-v4", NNC_X86_V4_BF16},
      {"sapphirerapids", "sapphirerapids", NNC_X86_V4_BF16},
      {"znver4", "znver4", NNC_X86_V4_BF16},
  };
#undef NNC_X86_V1
#undef NNC_X86_V2
#undef NNC_X86_V3
#undef NNC_X86_V4
#undef NNC_X86_V4_BF16
  if (!strcmp(name, "native")) {
    o->cpu = o->features = NULL;
    return true;
  }
  for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++)
    if (!strcmp(name, levels[i][0])) {
      o->cpu = levels[i][1];
      o->features = levels[i][2];
      return true;
    }
  return false;
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
  t->host = !o->cpu;
  t->vector_width = strstr(t->features, "+avx512f") ? 16 : strstr(t->features, "+avx") ? 8 : 4;
  (void)err;
  (void)errlen;
  return true;
}

int nnc_cg_vector_width(const nnc_cg_options *o) {
  nnc_cg_target t;
  char err[16];
  nnc_cg_target_init(&t, o, err, sizeof err);
  int width = t.vector_width;
  nnc_cg_target_dispose(&t);
  return width;
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

/* precision = bf16 needs AVX512-BF16 in the target: the host's as the
 * runtime sees it (NNC_CPU_DISABLE can hide it, for tests), or --cpu's. */
static bool bf16_target(const nnc_cg_target *t, bool host, char *err, size_t errlen) {
  if (!strstr(t->features, "+avx512bf16")) {
    snprintf(err, errlen,
             "precision = bf16 needs AVX512-BF16 (vdpbf16ps); the target CPU '%s' has no "
             "avx512bf16; use --cpu x86-64-v4-bf16 (or sapphirerapids, znver4) for another "
             "machine, or precision = f32",
             t->cpu);
    return false;
  }
  nnc_rt_error rerr;
  if (host && nnc_rt_cpu_check_bf16(&rerr)) {
    snprintf(err, errlen,
             "precision = bf16 needs a CPU with AVX512-BF16 (cpuid feature avx512_bf16), and "
             "this one lacks it; use precision = f32 (--precision f32)");
    return false;
  }
  return true;
}

bool nnc_cg_build_kernels(nnc_kprog *p, const nnc_module *m, const nnc_cg_target *t, int opt_level,
                          char *err, size_t errlen) {
  p->vector_width = t->vector_width;
  p->use_gemm = true;
  p->bf16 = m->config.precision == NNC_PRECISION_BF16;
  /* NNC_FUSE_UPDATES=1: update passes fused into their gradients'
   * products (lower_update.c), where the loop kernels get the optimisation
   * the fused form mirrors (kernel_pipeline's LICM). Off by default: no
   * speed gained on the MLP step for 20% more compile time
   * (docs/performance.md); the tests compare both forms. */
  const char *fuse = getenv("NNC_FUSE_UPDATES");
  p->fuse_updates = opt_level >= 2 && fuse && !strcmp(fuse, "1");
  /* ReLU's backward select in the epilogue of the product before it
   * (lower_fuse.c, the same bits); NNC_FUSE_MASKS=0 keeps the select's
   * own kernel (for comparisons). */
  const char *masks = getenv("NNC_FUSE_MASKS");
  p->fuse_masks = !(masks && !strcmp(masks, "0"));
  /* Direct convolutions (lower_conv.c) on AVX-512, f32; NNC_DIRECT_CONV=0
   * keeps the im2col products (for comparisons). */
  const char *direct = getenv("NNC_DIRECT_CONV");
  p->direct_conv = t->vector_width == 16 && !p->bf16 && !(direct && !strcmp(direct, "0"));
  /* NNC_K_SPLIT=1: an input gradient dy.W split over the rows of W (K)
   * that each thread owns, the two partial products added after
   * (lower_matmul.c, k_split_parts; a different rounding). Off by default:
   * on the development machine's two cores the kernel adding the parts
   * costs more than the split saves (fashion_mlp's step 8 us slower,
   * docs/performance.md); the tests check both forms. */
  const char *ks = getenv("NNC_K_SPLIT");
  p->k_split = ks && !strcmp(ks, "1");
  if (p->bf16 && !bf16_target(t, t->host, err, errlen)) return false;
  if (!nnc_cg_lower(p, m, err, errlen)) return false;
  nnc_cg_plan(p);
  /* Cold kernels that differ only in their buffers' offsets compiled once
   * (twins.c); NNC_TWINS=0 compiles each (for comparisons). */
  const char *tw = getenv("NNC_TWINS");
  if (opt_level >= 1 && !(tw && !strcmp(tw, "0"))) nnc_cg_find_twins(p);
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

/* The loop kernels need little of O3: scalar clean-up, loops rotated
 * with invariants hoisted, short constant loops (3x3 windows, 2x2 pools)
 * unrolled fully, and the loop vectoriser. Each kernel is a separate
 * noinline function with constant bounds, so O3's inliner, IPO and second
 * round of loop passes find nothing to do, and its partial unrolling (and
 * the vectoriser's interleaving) multiplies the code that instruction
 * selection then pays for. Same speed as O3 on the MLP and the CNN (1
 * thread) with a fifth of the optimisation time and 40% less machine code
 * (see docs/performance.md). NNC_KERNEL_PIPELINE overrides it (tuning). */
static const char *kernel_pipeline(int level, char *buf, size_t n) {
  const char *env = getenv("NNC_KERNEL_PIPELINE");
  if (env) return env;
  if (level < 2) {
    snprintf(buf, n, "default<O%d>", level);
    return buf;
  }
  return "function(sroa,early-cse,instcombine,simplifycfg,loop-simplify,lcssa,loop(loop-rotate),"
         "loop-mssa(licm),loop(loop-unroll-full),loop-vectorize<interleave-forced-only>,"
         "instcombine,simplifycfg)";
}

/* gemm.c's kernels are vectorised and register-blocked as emitted; they
 * need scalar clean-up (CSE, constant folding, simple CFG), not O3, whose
 * loop passes cost ~0.3 s on them for no speed (measured on the MLP:
 * 139,000 samples/s either way). NNC_GEMM_PIPELINE overrides it (tuning). */
static const char *gemm_pipeline(int level) {
  const char *env = getenv("NNC_GEMM_PIPELINE");
  if (env) return env;
  return level ? "function(early-cse,instcombine,simplifycfg)" : "default<O0>";
}

/* Optimised cold functions (NNC_CG_COLD) become optnone (with noinline,
 * which optnone requires) for instruction selection only. */
static void cold_codegen(LLVMContextRef ctx, LLVMValueRef f) {
  unsigned len = (unsigned)strlen(NNC_CG_COLD);
  if (!LLVMGetStringAttributeAtIndex(f, LLVMAttributeFunctionIndex, NNC_CG_COLD, len)) return;
  LLVMRemoveStringAttributeAtIndex(f, LLVMAttributeFunctionIndex, NNC_CG_COLD, len);
  const char *names[2] = {"noinline", "optnone"};
  for (int i = 0; i < 2; i++) {
    unsigned kind = LLVMGetEnumAttributeKindForName(names[i], strlen(names[i]));
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(ctx, kind, 0));
  }
}

static void set_optnone(LLVMContextRef ctx, LLVMValueRef f, bool on) {
  unsigned kind = LLVMGetEnumAttributeKindForName("optnone", 7);
  if (on)
    LLVMAddAttributeAtIndex(f, LLVMAttributeFunctionIndex, LLVMCreateEnumAttribute(ctx, kind, 0));
  else
    LLVMRemoveEnumAttributeAtIndex(f, LLVMAttributeFunctionIndex, kind);
}

/* Loop strength reduction (and the freeze canonicalisation instruction
 * selection's pipeline ran before it), as that pipeline ran it first
 * thing, on mod's functions but the cold ones (optnone already: no
 * strength reduction at -O0) and the loop kernels marked NNC_CG_NO_LSR,
 * which the pass skips as optnone while it runs. The products and direct
 * convolutions keep their code; the loop kernels' vectorised loops,
 * whose speed it does not change, were ~a third of their machine code's
 * time (docs/performance.md). */
static bool strength_reduce(LLVMContextRef ctx, LLVMModuleRef mod, LLVMTargetMachineRef tm,
                            char *err, size_t errlen) {
  unsigned len = (unsigned)strlen(NNC_CG_NO_LSR);
  for (int on = 1; on >= 0; on--) {
    for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
      if (LLVMGetStringAttributeAtIndex(f, LLVMAttributeFunctionIndex, NNC_CG_NO_LSR, len)) {
        set_optnone(ctx, f, on);
        if (!on)
          LLVMRemoveStringAttributeAtIndex(f, LLVMAttributeFunctionIndex, NNC_CG_NO_LSR, len);
      }
    if (on &&
        !nnc_cg_optimize(mod, tm, "function(loop(canon-freeze,loop-reduce))", false, err, errlen))
      return false;
  }
  return true;
}

double nnc_cg_now(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Part `part` of p as LLVM IR, unoptimised, in two new modules of ctx for
 * tm's target: the kernels and entry points (*mod), the products' bodies
 * (*gemm_mod). */
static bool emit_part(const nnc_kprog *p, const nnc_cg_options *o, const nnc_cg_target *t,
                      LLVMTargetMachineRef tm, int part, int nparts, LLVMContextRef ctx,
                      bool verify, LLVMModuleRef *mod, LLVMModuleRef *gemm_mod, char *err,
                      size_t errlen) {
  const char *name = p->module->name && *p->module->name ? p->module->name : "nnc";
  *mod = LLVMModuleCreateWithNameInContext(name, ctx);
  *gemm_mod = LLVMModuleCreateWithNameInContext("nnc.gemm", ctx);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMModuleRef both[2] = {*mod, *gemm_mod};
  for (int i = 0; i < 2; i++) {
    LLVMSetTarget(both[i], t->triple);
    LLVMSetModuleDataLayout(both[i], dl);
  }
  LLVMDisposeTargetData(dl);
  return nnc_cg_emit_module(p, part, nparts, *mod, *gemm_mod, t, verify, o->profile, err, errlen);
}

/* Forward: the cold split (below). */
static LLVMModuleRef split_cold(LLVMModuleRef mod, int *ncold);
static bool is_cold(LLVMValueRef f);

/* nnc_cg_build_llvm; with cold (and opt_level > 0), mod's cold functions
 * split off into *cold (NULL: none) before the products are linked in,
 * so that the copy of the module split_cold makes holds none of the
 * products' and depthwise gradients' bodies, the largest functions (the
 * CNN: the copy was ~15-20 ms of thread CPU in each part). Same code as
 * splitting after the link: the same functions, linkage and visibility. */
static bool build_part(const nnc_kprog *p, const nnc_cg_options *o, const nnc_cg_target *t,
                       LLVMTargetMachineRef tm, int part, int nparts, LLVMContextRef ctx,
                       LLVMModuleRef *out, LLVMModuleRef *cold, nnc_cg_times *times, char *err,
                       size_t errlen) {
  double t0 = nnc_cg_now();
  LLVMModuleRef mod, gemm_mod;
  bool ok = emit_part(p, o, t, tm, part, nparts, ctx, o->verify, &mod, &gemm_mod, err, errlen);
  double t1 = nnc_cg_now();
  int level = o->opt_level < 0 ? 0 : o->opt_level > 3 ? 3 : o->opt_level;
  char buf[32];
  if (ok)
    ok = nnc_cg_optimize(mod, tm, kernel_pipeline(level, buf, sizeof buf), level >= 2, err, errlen);
  double t2 = nnc_cg_now();
  if (ok) ok = nnc_cg_optimize(gemm_mod, tm, gemm_pipeline(level), false, err, errlen);
  double t3 = nnc_cg_now();
  if (ok && level > 0)
    for (int m = 0; m < 2; m++)
      for (LLVMValueRef f = LLVMGetFirstFunction(m ? gemm_mod : mod); f; f = LLVMGetNextFunction(f))
        cold_codegen(ctx, f);
  if (ok && level > 0)
    ok = strength_reduce(ctx, mod, tm, err, errlen) &&
         strength_reduce(ctx, gemm_mod, tm, err, errlen);
  /* The products' module has no cold function (the usual case: products
   * are cold only under NNC_COLD_GEMM_WORK): the cold ones are all in mod,
   * split off now; else after linking, from everything. */
  bool cold_products = false;
  for (LLVMValueRef f = LLVMGetFirstFunction(gemm_mod); ok && f; f = LLVMGetNextFunction(f))
    cold_products |= is_cold(f);
  bool early = ok && cold && level > 0 && !cold_products;
  int ncold = 0;
  LLVMModuleRef split = NULL;
  if (early && (split = split_cold(mod, &ncold)))
    /* what the products' module defines is declared in the cold one as
     * split_cold declares a function it moved (hidden) */
    for (LLVMValueRef f = LLVMGetFirstFunction(gemm_mod); f; f = LLVMGetNextFunction(f)) {
      size_t len;
      const char *fname = LLVMGetValueName2(f, &len);
      LLVMValueRef d = LLVMIsDeclaration(f) ? NULL : LLVMGetNamedFunction(split, fname);
      if (d && LLVMIsDeclaration(d)) LLVMSetVisibility(d, LLVMHiddenVisibility);
    }
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
      /* unless split off early: as split_cold makes every function */
      LLVMLinkage l = LLVMGetLinkage(f);
      if (early && !LLVMIsDeclaration(f) && (l == LLVMInternalLinkage || l == LLVMPrivateLinkage)) {
        LLVMSetLinkage(f, LLVMExternalLinkage);
        LLVMSetVisibility(f, LLVMHiddenVisibility);
      }
    }
  if (ok && cold && level > 0 && cold_products) *cold = split_cold(mod, &ncold);
  if (ok && split) *cold = split;
  if (times) {
    times->ir = t1 - t0;
    times->optimise = t2 - t1;
    times->products = t3 - t2;
    times->cold_functions = ncold;
    times->split = nnc_cg_now() - t3;
  }
  if (!ok) {
    if (split) LLVMDisposeModule(split);
    LLVMDisposeModule(mod);
    return false;
  }
  *out = mod; /* ownership moves to the caller */
  return true;
}

bool nnc_cg_build_llvm(const nnc_kprog *p, const nnc_cg_options *o, const nnc_cg_target *t,
                       int part, int nparts, LLVMContextRef ctx, LLVMModuleRef *out,
                       nnc_cg_times *times, char *err, size_t errlen) {
  LLVMTargetMachineRef tm = nnc_cg_target_machine(t, o->opt_level, LLVMRelocPIC, err, errlen);
  if (!tm) return false;
  bool ok = build_part(p, o, t, tm, part, nparts, ctx, out, NULL, times, err, errlen);
  LLVMDisposeTargetMachine(tm);
  return ok;
}

static bool emit_code(LLVMTargetMachineRef tm, LLVMModuleRef mod, LLVMCodeGenFileType kind,
                      LLVMMemoryBufferRef *out, char *err, size_t errlen) {
  char *msg = NULL;
  bool ok = !LLVMTargetMachineEmitToMemoryBuffer(tm, mod, kind, &msg, out);
  if (!ok) snprintf(err, errlen, "codegen: machine code: %s", msg ? msg : "");
  LLVMDisposeMessage(msg);
  return ok;
}

bool nnc_cg_machine_code(LLVMModuleRef mod, const nnc_cg_target *t, int opt_level,
                         LLVMCodeGenFileType kind, LLVMMemoryBufferRef *out, char *err,
                         size_t errlen) {
  LLVMTargetMachineRef tm = nnc_cg_target_machine(t, opt_level, LLVMRelocPIC, err, errlen);
  if (!tm) return false;
  bool ok = emit_code(tm, mod, kind, out, err, errlen);
  LLVMDisposeTargetMachine(tm);
  return ok;
}

/* ---- cold code in a module of its own ----
 *
 * Cold functions (optnone, cold_codegen) get fast instruction selection
 * either way, but a target machine at -O3 still runs its machine passes
 * (greedy register allocation, scheduling, the IV users analysis) on them:
 * ~4.5 M llc instructions per function, 317 M for the CNN's 66. Split into
 * a module of their own and compiled by a target machine at -O0, they cost
 * 183 M, with the same instructions (fast instruction selection in both;
 * only register allocation differs). The JIT links both objects. */

static bool is_cold(LLVMValueRef f) {
  unsigned kind = LLVMGetEnumAttributeKindForName("optnone", 7);
  return !LLVMIsDeclaration(f) &&
         LLVMGetEnumAttributeAtIndex(f, LLVMAttributeFunctionIndex, kind) != NULL;
}

/* Replaces the definition f by a declaration of the same symbol (which the
 * other module defines). */
static void declare_only(LLVMModuleRef mod, LLVMValueRef f) {
  size_t len;
  char name[256];
  snprintf(name, sizeof name, "%s", LLVMGetValueName2(f, &len));
  LLVMValueRef d = LLVMAddFunction(mod, "nnc.declared", LLVMGlobalGetValueType(f));
  LLVMReplaceAllUsesWith(f, d);
  LLVMDeleteFunction(f); /* drops its body's references first */
  LLVMSetValueName2(d, name, strlen(name));
  LLVMSetVisibility(d, LLVMHiddenVisibility);
}

/* Whether f, a function of the copy of mod, is defined and hot in mod. */
static bool hot_in(LLVMModuleRef mod, LLVMValueRef f) {
  size_t len;
  LLVMValueRef g = LLVMGetNamedFunction(mod, LLVMGetValueName2(f, &len));
  return g && !LLVMIsDeclaration(g) && !is_cold(g);
}

/* A copy of mod in which the hot functions are declarations: their
 * bodies (most of the optimised module: copying them was most of the
 * split's time) are detached from their functions while mod is copied,
 * then put back, block for block in their order. */
static LLVMModuleRef clone_without_hot_bodies(LLVMModuleRef mod) {
  size_t n = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f))
    if (!LLVMIsDeclaration(f) && !is_cold(f)) n += LLVMCountBasicBlocks(f);
  LLVMBasicBlockRef *blocks = malloc(sizeof *blocks * (n ? n : 1));
  LLVMValueRef *owner = malloc(sizeof *owner * (n ? n : 1));
  if (!blocks || !owner) { /* the whole copy: the same result, slower */
    free(blocks);
    free(owner);
    return LLVMCloneModule(mod);
  }
  size_t at = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f) || is_cold(f)) continue;
    unsigned nb = LLVMCountBasicBlocks(f);
    LLVMGetBasicBlocks(f, blocks + at);
    for (unsigned i = 0; i < nb; i++) {
      owner[at + i] = f;
      LLVMRemoveBasicBlockFromParent(blocks[at + i]);
    }
    at += nb;
  }
  LLVMModuleRef out = LLVMCloneModule(mod);
  for (size_t i = 0; i < n; i++)
    LLVMAppendExistingBasicBlock(owner[i], blocks[i]);
  free(blocks);
  free(owner);
  return out;
}

/* Moves mod's cold functions to a new module (returned; NULL when mod has
 * none): a copy of mod in which every other function is declared only,
 * and the global variables too (the profile counters; mod keeps them); in
 * mod the cold ones are declared only. Every function defined becomes a
 * hidden global symbol, so the two objects link. Also when mod keeps no
 * other function (a part of cold kernels only), so that every cold
 * function of the JIT is compiled alike: left in such a part's object, by
 * its optimising target machine, some came out with other roundings
 * (test_cg_mlp's fused updates against unfused, with six parts). */
static LLVMModuleRef split_cold(LLVMModuleRef mod, int *ncold) {
  int cold = 0;
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f)) continue;
    cold += is_cold(f);
    LLVMLinkage l = LLVMGetLinkage(f);
    if (l == LLVMInternalLinkage || l == LLVMPrivateLinkage) {
      LLVMSetLinkage(f, LLVMExternalLinkage);
      LLVMSetVisibility(f, LLVMHiddenVisibility);
    }
  }
  if (!cold) return NULL;
  *ncold = cold;
  LLVMModuleRef out = clone_without_hot_bodies(mod);
  LLVMModuleRef mods[2] = {mod, out};
  for (int m = 0; m < 2; m++) {
    /* the declarations declare_only appends are not visited */
    LLVMValueRef next, last = LLVMGetLastFunction(mods[m]);
    for (LLVMValueRef f = LLVMGetFirstFunction(mods[m]), end = NULL; f != end; f = next) {
      next = LLVMGetNextFunction(f);
      if (f == last) end = next;
      if (m == 0 ? is_cold(f) : hot_in(mod, f)) declare_only(mods[m], f);
    }
  }
  LLVMValueRef next;
  for (LLVMValueRef g = LLVMGetFirstGlobal(out); g; g = next) {
    next = LLVMGetNextGlobal(g);
    LLVMLinkage l = LLVMGetLinkage(g);
    if (LLVMIsDeclaration(g) || l == LLVMInternalLinkage || l == LLVMPrivateLinkage)
      continue; /* a module-local constant stays in both */
    size_t len;
    char name[256];
    snprintf(name, sizeof name, "%s", LLVMGetValueName2(g, &len));
    LLVMValueRef d = LLVMAddGlobal(out, LLVMGlobalGetValueType(g), "nnc.declared");
    LLVMReplaceAllUsesWith(g, d);
    LLVMDeleteGlobal(g);
    LLVMSetValueName2(d, name, strlen(name));
  }
  return out;
}

/* One part of the program, from kernel IR to an object file in memory, in
 * an LLVM context of its own (so parts can compile on separate threads;
 * they share only read-only inputs), with its thread's target machines. */
typedef struct part_job {
  const nnc_kprog *prog;
  const nnc_cg_options *o;
  const nnc_cg_target *t;
  int part, nparts;
  bool split_cold;
  nnc_cg_part *out;
  bool ok;
  char err[512];
} part_job;

/* CPU time of the calling thread: a part's work on a busy machine. */
static double thread_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void compile_part(part_job *j, LLVMTargetMachineRef tm, LLVMTargetMachineRef cold_tm) {
  double c0 = thread_seconds();
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = NULL;
  LLVMModuleRef cold = NULL;
  j->ok = build_part(j->prog, j->o, j->t, tm, j->part, j->nparts, ctx, &mod,
                     j->split_cold ? &cold : NULL, &j->out->times, j->err, sizeof j->err);
  double t0 = nnc_cg_now() - j->out->times.split; /* the split counted with the machine code */
  if (j->ok) j->ok = emit_code(tm, mod, LLVMObjectFile, &j->out->obj, j->err, sizeof j->err);
  double t1 = nnc_cg_now();
  if (j->ok && cold)
    j->ok = emit_code(cold_tm, cold, LLVMObjectFile, &j->out->cold_obj, j->err, sizeof j->err);
  j->out->times.machine_code = t1 - t0;
  j->out->times.cold_code = nnc_cg_now() - t1;
  j->out->times.cpu = thread_seconds() - c0;
  if (cold) LLVMDisposeModule(cold);
  if (mod) LLVMDisposeModule(mod);
  LLVMContextDispose(ctx);
}

/* The parts not yet taken: each thread takes the next in order (part 0,
 * the largest share, first: llvm_parts.c) until none is left. Which
 * thread compiles a part does not change its object. */
typedef struct queue {
  part_job *jobs;
  int n;
  atomic_int next;
} queue;

static void *take_parts(void *arg) {
  queue *q = arg;
  /* Its target machines, one for the parts' code and one at -O0 for their
   * cold objects (only where the cold functions are split off), serve
   * every part the thread takes: each new one cost ~2 ms of CPU in its
   * first compile (its subtarget and instruction selection tables), three
   * per part when each part made its own. */
  LLVMTargetMachineRef tms[2] = {NULL, NULL};
  for (int i; (i = atomic_fetch_add(&q->next, 1)) < q->n;) {
    part_job *j = &q->jobs[i];
    for (int c = 0; c < (j->split_cold ? 2 : 1); c++)
      if (!tms[c])
        tms[c] = nnc_cg_target_machine(j->t, c ? 0 : j->o->opt_level, LLVMRelocPIC, j->err,
                                       sizeof j->err);
    if (tms[0] && (tms[1] || !j->split_cold))
      compile_part(j, tms[0], tms[1]);
    else
      j->ok = false;
  }
  for (int c = 0; c < 2; c++)
    if (tms[c]) LLVMDisposeTargetMachine(tms[c]);
  return NULL;
}

/* Threads for nparts parts: one per CPU this process may run on, at most
 * one per part. */
static int compile_threads(int nparts) {
  cpu_set_t set;
  int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  return cpus < 1 ? 1 : cpus < nparts ? cpus : nparts;
}

bool nnc_cg_compile_parts(const nnc_kprog *p, const nnc_cg_options *o, const nnc_cg_target *t,
                          int nparts, bool split_cold, nnc_cg_part *out, char *err, size_t errlen) {
  if (nparts < 1 || nparts > NNC_CG_MAX_PARTS) {
    snprintf(err, errlen, "codegen: %d parts", nparts);
    return false;
  }
  part_job jobs[NNC_CG_MAX_PARTS];
  pthread_t threads[NNC_CG_MAX_PARTS];
  bool started[NNC_CG_MAX_PARTS] = {false};
  for (int i = 0; i < nparts; i++) {
    out[i] = (nnc_cg_part){0};
    jobs[i] = (part_job){.prog = p,
                         .o = o,
                         .t = t,
                         .part = i,
                         .nparts = nparts,
                         .split_cold = split_cold,
                         .out = &out[i]};
  }
  queue q = {.jobs = jobs, .n = nparts};
  atomic_init(&q.next, 0);
  int nthreads = compile_threads(nparts);
  for (int i = 1; i < nthreads; i++)
    started[i] = pthread_create(&threads[i], NULL, take_parts, &q) == 0;
  take_parts(&q);
  for (int i = 1; i < nthreads; i++)
    if (started[i]) pthread_join(threads[i], NULL);
  bool ok = true;
  for (int i = 0; i < nparts; i++)
    if (ok && !jobs[i].ok) {
      snprintf(err, errlen, "%s", jobs[i].err);
      ok = false;
    }
  if (!ok)
    for (int i = 0; i < nparts; i++) {
      LLVMMemoryBufferRef *objs[2] = {&out[i].obj, &out[i].cold_obj};
      for (int o = 0; o < 2; o++)
        if (*objs[o]) {
          LLVMDisposeMemoryBuffer(*objs[o]);
          *objs[o] = NULL;
        }
    }
  return ok;
}

void nnc_cg_print_times(FILE *f, const char *what, const nnc_cg_times *t) {
  fprintf(f,
          "codegen: %s: llvm ir %.1f ms, optimise kernels %.1f ms, products %.1f ms, machine code "
          "%.1f ms, cold code %.1f ms (%d functions); cpu %.1f ms\n",
          what, 1e3 * t->ir, 1e3 * t->optimise, 1e3 * t->products, 1e3 * t->machine_code,
          1e3 * t->cold_code, t->cold_functions, 1e3 * t->cpu);
}

void nnc_cg_print_kernel_count(FILE *f, const nnc_kprog *p) {
  const nnc_kgraph *gs[NNC_CG_NGRAPHS];
  nnc_cg_graphs(p, gs);
  int n = 0, shared = 0, twins = 0;
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    for (int i = 0; gs[g] && i < gs[g]->n; i++) {
      n++;
      shared += gs[g]->k[i]->same_as != NULL;
      twins += gs[g]->k[i]->twin_of != NULL;
    }
  fprintf(f,
          "codegen: %d kernels, %d of them the code of a train kernel (compiled once), %d the "
          "code of another but for their buffers (twins)\n",
          n, shared, twins);
}

/* ---- per-function times (NNC_DEBUG=2) ----
 *
 * Each function of each part compiled alone, as the part would compile it:
 * a copy of the part's unoptimised module with every other function
 * declared only, optimised by its module's pipeline and given machine code
 * by the level the part uses for it (cold functions at -O0 when split).
 * Thread CPU time, so that the figures hold on a busy machine; the sum is
 * more than the part's time (each copy pays a module's fixed cost). */
static int instructions(LLVMValueRef f) {
  int n = 0;
  for (LLVMBasicBlockRef bb = LLVMGetFirstBasicBlock(f); bb; bb = LLVMGetNextBasicBlock(bb))
    for (LLVMValueRef i = LLVMGetFirstInstruction(bb); i; i = LLVMGetNextInstruction(i))
      n++;
  return n;
}

static void probe_module(FILE *out, LLVMContextRef ctx, LLVMModuleRef mod, const char *pipeline,
                         bool vectorize, const nnc_cg_options *o, const nnc_cg_target *t, int part,
                         double *sum) {
  int level = o->opt_level < 0 ? 0 : o->opt_level > 3 ? 3 : o->opt_level;
  LLVMTargetMachineRef tm = nnc_cg_target_machine(t, level, LLVMRelocPIC, NULL, 0);
  for (LLVMValueRef f = LLVMGetFirstFunction(mod); tm && f; f = LLVMGetNextFunction(f)) {
    if (LLVMIsDeclaration(f)) continue;
    size_t len;
    char name[256];
    snprintf(name, sizeof name, "%s", LLVMGetValueName2(f, &len));
    LLVMModuleRef one = LLVMCloneModule(mod);
    LLVMValueRef next;
    for (LLVMValueRef g = LLVMGetFirstFunction(one); g; g = next) {
      next = LLVMGetNextFunction(g);
      size_t glen;
      const char *gname = LLVMGetValueName2(g, &glen);
      if (!LLVMIsDeclaration(g) && strcmp(gname, name)) declare_only(one, g);
    }
    LLVMValueRef mine = LLVMGetNamedFunction(one, name);
    int before = instructions(mine);
    char err[256];
    double t0 = thread_seconds();
    nnc_cg_optimize(one, tm, pipeline, vectorize, err, sizeof err);
    double t1 = thread_seconds();
    int after = instructions(mine);
    if (level > 0) cold_codegen(ctx, mine);
    if (level > 0) strength_reduce(ctx, one, tm, err, sizeof err);
    bool cold = level > 0 && is_cold(mine);
    LLVMMemoryBufferRef obj = NULL;
    double t2 = thread_seconds();
    if (nnc_cg_machine_code(one, t, cold ? 0 : level, LLVMObjectFile, &obj, err, sizeof err))
      LLVMDisposeMemoryBuffer(obj);
    double t3 = thread_seconds();
    fprintf(out,
            "codegen: function %s part %d%s: optimise %.2f ms, machine code %.2f ms, "
            "instructions %d -> %d\n",
            name, part, cold ? " cold" : "", 1e3 * (t1 - t0), 1e3 * (t3 - t2), before, after);
    LLVMDisposeModule(one);
    sum[0] += t1 - t0;
    sum[1] += t3 - t2;
  }
  if (tm) LLVMDisposeTargetMachine(tm);
}

void nnc_cg_print_function_times(FILE *out, const nnc_kprog *p, const nnc_cg_options *o,
                                 const nnc_cg_target *t, int nparts) {
  int level = o->opt_level < 0 ? 0 : o->opt_level > 3 ? 3 : o->opt_level;
  int *part_of[NNC_CG_NGRAPHS];
  double load[NNC_CG_MAX_PARTS];
  nnc_cg_assign_parts(p, nparts, part_of, load);
  nnc_cg_free_parts(part_of);
  for (int part = 0; part < nparts; part++) {
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMTargetMachineRef tm = nnc_cg_target_machine(t, level, LLVMRelocPIC, NULL, 0);
    LLVMModuleRef mod = NULL, gemm_mod = NULL;
    char err[256], buf[32];
    double sum[2] = {0, 0};
    if (tm && emit_part(p, o, t, tm, part, nparts, ctx, false, &mod, &gemm_mod, err, sizeof err)) {
      probe_module(out, ctx, mod, kernel_pipeline(level, buf, sizeof buf), level >= 2, o, t, part,
                   sum);
      probe_module(out, ctx, gemm_mod, gemm_pipeline(level), false, o, t, part, sum);
    }
    fprintf(out,
            "codegen: part %d, its functions alone: optimise %.1f ms, machine code %.1f ms "
            "(estimated %.1f ms)\n",
            part, 1e3 * sum[0], 1e3 * sum[1], load[part]);
    if (mod) LLVMDisposeModule(mod);
    if (gemm_mod) LLVMDisposeModule(gemm_mod);
    if (tm) LLVMDisposeTargetMachine(tm);
    LLVMContextDispose(ctx);
  }
}
