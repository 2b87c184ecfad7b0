/* jit.c: compile in memory with ORC LLJIT and describe the result as an
 * nnc_rt_model the runtime trains with.
 *
 * nnc_cg_compile runs the pipeline of compile.c in a thread-safe context,
 * hands the optimised module to an LLJIT whose target machine matches the
 * one the module was optimised for, defines the runtime functions that
 * generated code calls (nnc_rt_parallel) as absolute symbols at their
 * addresses in this process (they live in a static library, invisible to
 * dlsym), lets everything else (libm, memset) resolve against the process,
 * and looks up the entry points. The model table (offsets, tensor table)
 * is built from the memory plan; its strings live in the program's arena.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include "cg_internal.h"

struct nnc_cg_program {
  nnc_arena arena; /* the kernel program and the model's tables */
  nnc_kprog prog;
  nnc_rt_model model;
  LLVMOrcLLJITRef jit;
  const int64_t *profile[2]; /* train, eval counters (profile.c); NULL: off */
};

static double now(void) {
  struct timespec ts;
  timespec_get(&ts, TIME_UTC);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int64_t buf_offset(const nnc_kprog *p, int buf) {
  return buf < 0 ? -1 : p->bufs[buf].offset;
}

static const nnc_node *input_node(const nnc_module *m, nnc_input_kind k) {
  if (m->train && m->train->inputs[k]) return m->train->inputs[k];
  return m->eval ? m->eval->inputs[k] : NULL;
}

static const nnc_node *output_node(const nnc_module *m, nnc_output_kind k) {
  if (m->eval && m->eval->outputs[k]) return m->eval->outputs[k];
  return m->train ? m->train->outputs[k] : NULL;
}

/* The model table: everything but the entry points. */
static void fill_model(nnc_cg_program *prog, const nnc_module *m) {
  const nnc_kprog *p = &prog->prog;
  nnc_rt_model *rt = &prog->model;
  memset(rt, 0, sizeof *rt);
  rt->arena_bytes = (size_t)p->arena_bytes;
  const nnc_node *x = input_node(m, NNC_IN_X), *y = input_node(m, NNC_IN_Y),
                 *pred = output_node(m, NNC_OUT_PRED);
  rt->batch = x && x->shape.rank > 0 ? x->shape.dim[0] : m->config.batch;
  int64_t batch = rt->batch > 0 ? rt->batch : 1;
  rt->sample_size = x ? nnc_shape_numel(&x->shape) / batch : 0;
  rt->label_is_class = y ? y->dtype == NNC_I32 : 1;
  rt->target_size = y && y->dtype != NNC_I32 ? nnc_shape_numel(&y->shape) / batch : 0;
  rt->num_classes = pred ? nnc_shape_numel(&pred->shape) / batch : 0;
  rt->x_off = buf_offset(p, p->input_buf[NNC_IN_X]);
  rt->y_off = buf_offset(p, p->input_buf[NNC_IN_Y]);
  rt->step_off = buf_offset(p, p->input_buf[NNC_IN_STEP]);
  rt->epoch_off = buf_offset(p, p->input_buf[NNC_IN_EPOCH]);
  rt->seed_off = buf_offset(p, p->input_buf[NNC_IN_SEED]);
  rt->loss_vec_off = buf_offset(p, p->output_buf[NNC_OUT_LOSS_VEC]);
  rt->correct_vec_off = buf_offset(p, p->output_buf[NNC_OUT_CORRECT_VEC]);
  rt->lr_off = buf_offset(p, p->output_buf[NNC_OUT_LR]);
  nnc_rt_tensor *ts =
      nnc_arena_alloc(&prog->arena, sizeof(nnc_rt_tensor) * (size_t)(m->ntensors + 1));
  for (int i = 0; i < m->ntensors; i++) {
    const nnc_tensor *t = &m->tensors[i];
    nnc_rt_tensor *r = &ts[i];
    r->name = nnc_arena_strdup(&prog->arena, t->name);
    r->role = (int)t->role; /* nnc_tensor_role matches nnc_rt_tensor_role */
    r->rank = t->shape.rank;
    for (int d = 0; d < t->shape.rank; d++)
      r->shape[d] = t->shape.dim[d];
    r->offset = buf_offset(p, p->tensor_bufs[i]);
    r->init = (int)t->init.kind; /* nnc_init_kind matches nnc_rt_init_kind */
    r->init_a = (float)t->init.a;
    r->init_b = (float)t->init.b;
    r->fan_in = t->init.fan_in;
    r->fan_out = t->init.fan_out;
  }
  rt->ntensors = m->ntensors;
  rt->tensors = ts;
}

static bool define_runtime_symbols(LLVMOrcLLJITRef jit, char *err, size_t errlen) {
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(jit);
  LLVMJITSymbolFlags flags = {LLVMJITSymbolGenericFlagsExported | LLVMJITSymbolGenericFlagsCallable,
                              0};
  LLVMOrcCSymbolMapPair syms[] = {
      {LLVMOrcLLJITMangleAndIntern(jit, "nnc_rt_parallel"),
       {(LLVMOrcExecutorAddress)(uintptr_t)&nnc_rt_parallel, flags}},
      {LLVMOrcLLJITMangleAndIntern(jit, "nnc_cg_profile_now"),
       {(LLVMOrcExecutorAddress)(uintptr_t)&nnc_cg_profile_now, flags}},
  };
  /* The names' references move into the materialisation unit. */
  LLVMOrcMaterializationUnitRef mu = LLVMOrcAbsoluteSymbols(syms, sizeof syms / sizeof syms[0]);
  LLVMErrorRef e = LLVMOrcJITDylibDefine(jd, mu);
  if (e) {
    LLVMOrcDisposeMaterializationUnit(mu);
    return nnc_cg_check(e, "defining runtime symbols", err, errlen);
  }
  LLVMOrcDefinitionGeneratorRef gen;
  if (!nnc_cg_check(LLVMOrcCreateDynamicLibrarySearchGeneratorForProcess(
                        &gen, LLVMOrcLLJITGetGlobalPrefix(jit), NULL, NULL),
                    "process symbol search", err, errlen))
    return false;
  LLVMOrcJITDylibAddGenerator(jd, gen); /* jd owns gen */
  return true;
}

static bool create_jit(const nnc_cg_target *t, int opt_level, LLVMOrcLLJITRef *out, char *err,
                       size_t errlen) {
  LLVMTargetMachineRef tm = nnc_cg_target_machine(t, opt_level, LLVMRelocDefault, err, errlen);
  if (!tm) return false;
  LLVMOrcJITTargetMachineBuilderRef jtmb =
      LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm); /* owns tm */
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb); /* builder owns jtmb */
  return nnc_cg_check(LLVMOrcCreateLLJIT(out, builder), "creating the JIT", err,
                      errlen); /* consumes builder */
}

bool nnc_cg_compile(const nnc_module *m, const nnc_cg_options *o, nnc_cg_program **out, char *err,
                    size_t errlen) {
  nnc_cg_options defaults;
  if (!o) {
    nnc_cg_default_options(&defaults);
    o = &defaults;
  }
  double t0 = now();
  nnc_cg_program *prog = calloc(1, sizeof *prog);
  if (!prog) {
    snprintf(err, errlen, "codegen: out of memory");
    return false;
  }
  nnc_arena_init(&prog->arena);
  prog->prog.arena = &prog->arena;
  nnc_cg_target t;
  LLVMOrcThreadSafeContextRef tsctx = NULL;
  LLVMModuleRef mod = NULL;
  if (!nnc_cg_target_init(&t, o, err, errlen)) goto fail_prog;
  if (!nnc_cg_build_kernels(&prog->prog, m, &t, err, errlen)) goto fail_target;
  double t1 = now();
  tsctx = LLVMOrcCreateNewThreadSafeContext();
  if (!nnc_cg_build_llvm(&prog->prog, o, &t, LLVMOrcThreadSafeContextGetContext(tsctx), &mod, err,
                         errlen))
    goto fail_ctx;
  double t2 = now();
  if (!create_jit(&t, o->opt_level, &prog->jit, err, errlen)) goto fail_mod;
  if (!define_runtime_symbols(prog->jit, err, errlen)) goto fail_jit;
  LLVMOrcThreadSafeModuleRef tsm = LLVMOrcCreateNewThreadSafeModule(mod, tsctx); /* tsm owns mod */
  mod = NULL;
  LLVMOrcDisposeThreadSafeContext(tsctx); /* tsm keeps the context alive */
  tsctx = NULL;
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(prog->jit);
  LLVMErrorRef e = LLVMOrcLLJITAddLLVMIRModule(prog->jit, jd, tsm);
  if (e) {
    LLVMOrcDisposeThreadSafeModule(tsm); /* still ours on failure */
    nnc_cg_check(e, "adding the module to the JIT", err, errlen);
    goto fail_jit;
  }
  fill_model(prog, m);
  LLVMOrcExecutorAddress addr;
  if (prog->prog.has_train) {
    if (!nnc_cg_check(LLVMOrcLLJITLookup(prog->jit, &addr, "nnc_train_step"),
                      "looking up nnc_train_step", err, errlen))
      goto fail_jit;
    prog->model.train_step = (nnc_rt_entry)(uintptr_t)addr;
  }
  if (prog->prog.has_eval) {
    if (!nnc_cg_check(LLVMOrcLLJITLookup(prog->jit, &addr, "nnc_eval_step"),
                      "looking up nnc_eval_step", err, errlen))
      goto fail_jit;
    prog->model.eval_step = (nnc_rt_entry)(uintptr_t)addr;
  }
  const nnc_kgraph *graphs[2] = {prog->prog.has_train ? &prog->prog.train : NULL,
                                 prog->prog.has_eval ? &prog->prog.eval : NULL};
  for (int g = 0; g < 2 && o->profile; g++) {
    if (!graphs[g]) continue;
    const char *sym = nnc_cg_profile_symbol(graphs[g]);
    if (!nnc_cg_check(LLVMOrcLLJITLookup(prog->jit, &addr, sym), "looking up the profile counters",
                      err, errlen))
      goto fail_jit;
    prog->profile[g] = (const int64_t *)(uintptr_t)addr;
  }
  double t3 = now();
  if (o->timing)
    fprintf(o->timing,
            "codegen: kernels %.1f ms, llvm %.1f ms, machine code %.1f ms, total %.1f ms\n",
            1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t3 - t2), 1e3 * (t3 - t0));
  nnc_cg_target_dispose(&t);
  *out = prog;
  return true;

fail_jit : {
  char ignored[16];
  nnc_cg_check(LLVMOrcDisposeLLJIT(prog->jit), "", ignored, sizeof ignored);
}
fail_mod:
  if (mod) LLVMDisposeModule(mod);
fail_ctx:
  if (tsctx) LLVMOrcDisposeThreadSafeContext(tsctx);
fail_target:
  nnc_cg_target_dispose(&t);
fail_prog:
  nnc_arena_destroy(&prog->arena);
  free(prog);
  return false;
}

const nnc_rt_model *nnc_cg_model(const nnc_cg_program *p) {
  return &p->model;
}

int64_t nnc_cg_input_offset(const nnc_cg_program *p, nnc_input_kind k) {
  return buf_offset(&p->prog, p->prog.input_buf[k]);
}

int64_t nnc_cg_output_offset(const nnc_cg_program *p, nnc_output_kind k) {
  return buf_offset(&p->prog, p->prog.output_buf[k]);
}

void nnc_cg_profile_print(const nnc_cg_program *p, FILE *out) {
  const nnc_kgraph *graphs[2] = {&p->prog.train, &p->prog.eval};
  for (int g = 0; g < 2; g++)
    if (p->profile[g]) nnc_cg_profile_report(out, graphs[g], p->profile[g]);
}

void nnc_cg_dump_kernels(const nnc_cg_program *p, FILE *out) {
  const nnc_kprog *kp = &p->prog;
  fprintf(out, "arena %lld bytes, temporaries from %lld\n", (long long)kp->arena_bytes,
          (long long)kp->temp_base);
  const nnc_kgraph *gs[2] = {kp->has_train ? &kp->train : NULL, kp->has_eval ? &kp->eval : NULL};
  for (int g = 0; g < 2; g++) {
    if (!gs[g]) continue;
    fprintf(out, "graph %s: %d kernels, %lld bytes of temporaries\n", gs[g]->name, gs[g]->n,
            (long long)gs[g]->temp_bytes);
    for (int i = 0; i < gs[g]->n; i++)
      nnc_kernel_print(out, kp, gs[g]->k[i]);
  }
}

void nnc_cg_free(nnc_cg_program *p) {
  if (!p) return;
  char ignored[16];
  if (p->jit) nnc_cg_check(LLVMOrcDisposeLLJIT(p->jit), "", ignored, sizeof ignored);
  nnc_arena_destroy(&p->arena);
  free(p);
}
