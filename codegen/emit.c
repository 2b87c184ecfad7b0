/* emit.c: the same module as a file — object code, assembly or LLVM IR.
 *
 * nnc_cg_emit runs compile.c's pipeline in a context of its own and writes
 * the optimised module with LLVMTargetMachineEmitToFile (object, assembly)
 * or the IR printer. Position-independent code, so the object links into
 * executables and shared libraries alike. Text outputs may go to stdout
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

bool nnc_cg_emit(const nnc_module *m, const nnc_cg_options *o, nnc_cg_output kind, const char *path,
                 char *err, size_t errlen) {
  nnc_cg_options defaults;
  if (!o) {
    nnc_cg_default_options(&defaults);
    o = &defaults;
  }
  if (kind == NNC_CG_JIT) {
    snprintf(err, errlen, "codegen: nnc_cg_emit writes files; use nnc_cg_compile for the JIT");
    return false;
  }
  /* Profiling calls back into this process (profile.c): JIT only. */
  nnc_cg_options plain = *o;
  plain.profile = false;
  o = &plain;
  nnc_arena arena;
  nnc_arena_init(&arena);
  nnc_kprog prog;
  memset(&prog, 0, sizeof prog);
  prog.arena = &arena;
  nnc_cg_target t;
  LLVMContextRef ctx = NULL;
  LLVMModuleRef mod = NULL;
  bool ok = false;
  if (!nnc_cg_target_init(&t, o, err, errlen)) goto done_arena;
  if (!nnc_cg_build_kernels(&prog, m, &t, err, errlen)) goto done_target;
  ctx = LLVMContextCreate();
  /* One part: a file holds one module, with the kernels internal. */
  nnc_cg_times times = {0};
  if (!nnc_cg_build_llvm(&prog, o, &t, 0, 1, ctx, &mod, &times, err, errlen)) goto done_ctx;
  ok = write_module(mod, &t, o, kind, path, &times, err, errlen);
  if (o->timing) nnc_cg_print_times(o->timing, "module", &times);
  LLVMDisposeModule(mod);
done_ctx:
  LLVMContextDispose(ctx);
done_target:
  nnc_cg_target_dispose(&t);
done_arena:
  nnc_arena_destroy(&arena);
  return ok;
}

/* A deployed inference program (deploy.h) as one object file: its kernels,
 * the weights in .rodata and PREFIX_predict, the only exported symbol. */
bool nnc_deploy_write_obj(const nnc_deploy *d, const nnc_deploy_values *v, const nnc_cg_options *o,
                          const char *path, char *err, size_t errlen) {
  char predict[256];
  snprintf(predict, sizeof predict, "%s_predict", d->o.prefix);
  nnc_kdeploy kd = {
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
  };
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
    if (nnc_cg_build_llvm(&p, &plain, &t, 0, 1, ctx, &mod, &times, err, errlen)) {
      ok = write_module(mod, &t, &plain, NNC_CG_OBJ, path, &times, err, errlen);
      LLVMDisposeModule(mod);
    }
    LLVMContextDispose(ctx);
    nnc_cg_target_dispose(&t);
  }
  free((void *)kd.weights);
  return ok;
}
