/* emit.c: the same module as a file — object code, assembly or LLVM IR.
 *
 * nnc_cg_emit runs compile.c's pipeline in a context of its own and writes
 * the optimised module with LLVMTargetMachineEmitToFile (object, assembly)
 * or the IR printer. nnc_cg_emit_objects writes the program as several
 * object files, one per part, compiled on threads (`nnc -o`). Position-independent code, so
 * the object links into executables and shared libraries alike. Text outputs may go to stdout
 * ("-"). The object exports nnc_train_step / nnc_eval_step and calls
 * nnc_rt_parallel from the runtime library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg_internal.h"
#include "deploy_internal.h"

static bool write_text(const char *path, const char *text, size_t n, char *err, size_t errlen) {
  FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "wb");
  if (!f) {
    snprintf(err, errlen, "codegen: cannot open %s for writing", path);
    return false;
  }
  bool ok = fwrite(text, 1, n, f) == n;
  if (f != stdout)
    ok &= fclose(f) == 0;
  else
    ok &= fflush(f) == 0;
  if (!ok) snprintf(err, errlen, "codegen: cannot write %s", path);
  return ok;
}

static bool write_module(LLVMModuleRef mod, const nnc_cg_target *t, const nnc_cg_options *o,
                         nnc_cg_output kind, const char *path, nnc_cg_times *times, char *err,
                         size_t errlen) {
  if (kind == NNC_CG_LLVM) {
    char *text = LLVMPrintModuleToString(mod);
    bool ok = write_text(path, text, strlen(text), err, errlen);
    LLVMDisposeMessage(text);
    return ok;
  }
  if (kind == NNC_CG_OBJ && strcmp(path, "-") == 0) {
    snprintf(err, errlen, "codegen: object code cannot go to stdout");
    return false;
  }
  LLVMCodeGenFileType ft = kind == NNC_CG_ASM ? LLVMAssemblyFile : LLVMObjectFile;
  LLVMMemoryBufferRef buf = NULL;
  double t0 = nnc_cg_now();
  bool ok = nnc_cg_machine_code(mod, t, o->opt_level, ft, &buf, err, errlen);
  times->machine_code = nnc_cg_now() - t0;
  if (ok) ok = write_text(path, LLVMGetBufferStart(buf), LLVMGetBufferSize(buf), err, errlen);
  if (buf) LLVMDisposeMemoryBuffer(buf);
  return ok;
}

/* A program lowered and planned for its target, for the files below; its
 * options have profiling off (it calls back into this process: JIT only).
 * prog points into arena: a program does not move. */
typedef struct program {
  nnc_cg_options o;
  nnc_arena arena;
  nnc_kprog prog;
  nnc_cg_target t;
} program;

static void program_free(program *p) {
  nnc_cg_target_dispose(&p->t);
  nnc_arena_destroy(&p->arena);
}

static bool program_build(program *p, const nnc_module *m, const nnc_cg_options *o, char *err,
                          size_t errlen) {
  if (o)
    p->o = *o;
  else
    nnc_cg_default_options(&p->o);
  p->o.profile = false;
  nnc_arena_init(&p->arena);
  memset(&p->prog, 0, sizeof p->prog);
  p->prog.arena = &p->arena;
  if (!nnc_cg_target_init(&p->t, &p->o, err, errlen)) {
    nnc_arena_destroy(&p->arena);
    return false;
  }
  if (!nnc_cg_build_kernels(&p->prog, m, &p->t, p->o.opt_level, err, errlen)) {
    program_free(p);
    return false;
  }
  return true;
}

bool nnc_cg_emit(const nnc_module *m, const nnc_cg_options *o, nnc_cg_output kind, const char *path,
                 char *err, size_t errlen) {
  if (kind == NNC_CG_JIT) {
    snprintf(err, errlen, "codegen: nnc_cg_emit writes files; use nnc_cg_compile for the JIT");
    return false;
  }
  program p;
  if (!program_build(&p, m, o, err, errlen)) return false;
  LLVMContextRef ctx = LLVMContextCreate();
  LLVMModuleRef mod = NULL;
  bool ok = false;
  /* One part: a file holds one module, with the kernels internal. */
  nnc_cg_times times = {0};
  if (nnc_cg_build_llvm(&p.prog, &p.o, &p.t, 0, 1, ctx, &mod, &times, err, errlen)) {
    ok = write_module(mod, &p.t, &p.o, kind, path, &times, err, errlen);
    if (p.o.timing) {
      nnc_cg_print_kernel_count(p.o.timing, &p.prog);
      nnc_cg_print_times(p.o.timing, "module", &times);
    }
    LLVMDisposeModule(mod);
  }
  LLVMContextDispose(ctx);
  program_free(&p);
  return ok;
}

bool nnc_cg_emit_objects(const nnc_module *m, const nnc_cg_options *o, int nparts,
                         const char *const *paths, char *err, size_t errlen) {
  program p;
  if (!program_build(&p, m, o, err, errlen)) return false;
  nnc_cg_part parts[NNC_CG_MAX_PARTS];
  bool compiled = nnc_cg_compile_parts(&p.prog, &p.o, &p.t, nparts, false, parts, err, errlen);
  bool ok = compiled;
  if (ok && p.o.timing) nnc_cg_print_kernel_count(p.o.timing, &p.prog);
  for (int i = 0; ok && i < nparts; i++) {
    ok = write_text(paths[i], LLVMGetBufferStart(parts[i].obj), LLVMGetBufferSize(parts[i].obj),
                    err, errlen);
    if (p.o.timing) {
      char what[16];
      snprintf(what, sizeof what, "part %d", i);
      nnc_cg_print_times(p.o.timing, what, &parts[i].times);
    }
  }
  for (int i = 0; compiled && i < nparts; i++)
    LLVMDisposeMemoryBuffer(parts[i].obj);
  program_free(&p);
  return ok;
}

/* A deployed inference program (deploy.h) as one object file: its kernels,
 * the weights in .rodata and PREFIX_predict, the only exported symbol. */
/* The interface of d for llvm_predict.c; kd->weights is malloc'd (NULL:
 * out of memory). */
static nnc_kdeploy kdeploy_of(const nnc_deploy *d, const nnc_deploy_values *v,
                              const char *predict) {
  return (nnc_kdeploy){
      .predict = predict,
      .weights = nnc_deploy_weights_block(d, v),
      .weights_bytes = d->w_bytes,
      .x_offset = d->p.bufs[d->x_buf].offset,
      .pred_offset = d->p.bufs[d->pred_buf].offset,
      .in_count = d->batch * d->in_size,
      .in_size = d->in_size,
      .out_count = d->batch * d->out_size,
      .in_i32 = d->in_type == NNC_KT_I32,
      .scale = (float)v->scale,
      .mean = v->mean,
      .std = v->std,
      .workspace_align = NNC_DEPLOY_ALIGN,
      .quant = (const nnc_kqgemm *const *)d->quant,
  };
}

/* d as machine code (an object file in memory, *obj the caller's) or, with
 * path, written to path. */
static bool deploy_code(const nnc_deploy *d, const nnc_deploy_values *v, const nnc_cg_options *o,
                        const char *predict, const char *path, LLVMMemoryBufferRef *obj, char *err,
                        size_t errlen) {
  nnc_kdeploy kd = kdeploy_of(d, v, predict);
  if (!kd.weights) {
    snprintf(err, errlen, "out of memory");
    return false;
  }
  nnc_kprog p = d->p; /* the same program, with its interface */
  p.deploy = &kd;
  nnc_cg_options plain = *o;
  plain.profile = false;
  nnc_cg_target t;
  bool ok = false;
  if (nnc_cg_target_init(&t, &plain, err, errlen)) {
    LLVMContextRef ctx = LLVMContextCreate();
    LLVMModuleRef mod = NULL;
    nnc_cg_times times = {0};
    if (d->quant && !strstr(t.features, "+avx512vnni"))
      snprintf(err, errlen,
               "int8 products in an object need a target with AVX512-VNNI (vpdpbusd); this one "
               "has none: use --emit=c for it");
    else if (nnc_cg_build_llvm(&p, &plain, &t, 0, 1, ctx, &mod, &times, err, errlen)) {
      if (path)
        ok = write_module(mod, &t, &plain, NNC_CG_OBJ, path, &times, err, errlen);
      else
        ok = nnc_cg_machine_code(mod, &t, plain.opt_level, LLVMObjectFile, obj, err, errlen);
      LLVMDisposeModule(mod);
    }
    LLVMContextDispose(ctx);
    nnc_cg_target_dispose(&t);
  }
  free((void *)kd.weights);
  return ok;
}

bool nnc_deploy_write_obj(const nnc_deploy *d, const nnc_deploy_values *v, const nnc_cg_options *o,
                          const char *path, char *err, size_t errlen) {
  char predict[256];
  snprintf(predict, sizeof predict, "%s_predict", d->o.prefix);
  return deploy_code(d, v, o, predict, path, NULL, err, errlen);
}

struct nnc_deploy_jit {
  LLVMOrcLLJITRef jit;
  int (*predict)(const float *input, float *output, void *workspace);
};

nnc_deploy_jit *nnc_deploy_jit_compile(const nnc_deploy *d, const nnc_deploy_values *v,
                                       const nnc_cg_options *o, char *err, size_t errlen) {
  nnc_deploy_jit *j = calloc(1, sizeof *j);
  LLVMMemoryBufferRef obj = NULL;
  nnc_cg_target t;
  if (!j) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (!deploy_code(d, v, o, "nnc_deploy_predict", NULL, &obj, err, errlen)) goto fail;
  if (!nnc_cg_target_init(&t, o, err, errlen)) goto fail;
  bool ok = nnc_cg_create_jit(&t, o->opt_level, &j->jit, err, errlen);
  nnc_cg_target_dispose(&t);
  if (!ok) goto fail;
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(j->jit);
  LLVMMemoryBufferRef code = obj;
  obj = NULL; /* the JIT's now, even on failure */
  LLVMOrcExecutorAddress addr;
  if (!nnc_cg_check(LLVMOrcLLJITAddObjectFile(j->jit, jd, code), "adding code to the JIT", err,
                    errlen) ||
      !nnc_cg_check(LLVMOrcLLJITLookup(j->jit, &addr, "nnc_deploy_predict"), "looking up predict",
                    err, errlen))
    goto fail;
  j->predict = (int (*)(const float *, float *, void *))(uintptr_t)addr;
  return j;
fail:
  if (obj) LLVMDisposeMemoryBuffer(obj);
  nnc_deploy_jit_free(j);
  return NULL;
}

int nnc_deploy_jit_predict(const nnc_deploy_jit *j, const float *input, float *output,
                           void *workspace) {
  return j->predict(input, output, workspace);
}

void nnc_deploy_jit_free(nnc_deploy_jit *j) {
  if (!j) return;
  if (j->jit) LLVMOrcDisposeLLJIT(j->jit);
  free(j);
}
