/* jit.c: compile in memory with ORC LLJIT and describe the result as an
 * nnc_rt_model the runtime trains with.
 *
 * nnc_cg_compile lowers and plans the program once, then compiles it as
 * JIT_PARTS parts (llvm_parts.c's fixed split of the kernels; part 0 has
 * the entry points) on threads that take the next part as they finish
 * one, each from kernel IR through
 * compile.c's pipeline to an object file in an LLVM context of its own.
 * The objects go to an LLJIT whose target machine matches theirs, which
 * links them: the runtime functions generated code calls
 * (nnc_rt_parallel) are absolute symbols at their addresses in this
 * process (they live in a static library, invisible to dlsym), everything
 * else (libm, memset) resolves against the process. Then it looks up the
 * entry points. The model table (offsets, tensor table) is built from the
 * memory plan; its strings live in the program's arena.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>

#include "cg_internal.h"

/* Parts the program is compiled in (codegen.h). */
#define JIT_PARTS NNC_CG_PARTS

struct nnc_cg_program {
  nnc_arena arena; /* the kernel program and the model's tables */
  nnc_kprog prog;
  nnc_rt_model model;
  LLVMOrcLLJITRef jit;
  const int64_t *profile[NNC_CG_NGRAPHS]; /* train, eval, grad, update, grad_half counters
                                             (profile.c); NULL: off */
  /* The second half of the compilation (finish), maybe on `finisher`. */
  nnc_cg_options opts;
  nnc_cg_target target;
  nnc_cg_part parts[JIT_PARTS];
  pthread_t finisher;
  bool pending;   /* finisher started and not yet joined */
  bool finish_ok; /* valid once finished */
  char finish_err[1024];
  double t0, t1, seconds; /* start, kernels built; start to callable code */
};

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
  rt->total_steps_off = buf_offset(p, p->input_buf[NNC_IN_TOTAL_STEPS]);
  rt->loss_vec_off = buf_offset(p, p->output_buf[NNC_OUT_LOSS_VEC]);
  rt->correct_vec_off = buf_offset(p, p->output_buf[NNC_OUT_CORRECT_VEC]);
  rt->lr_off = buf_offset(p, p->output_buf[NNC_OUT_LR]);
  rt->micro_batches = m->micro_batches; /* no data-parallel step without grad_step */
  rt->sync_stats = m->grad && m->grad->stat_ranks > 1;
  rt->comm_off = p->comm_off;
  nnc_rt_tensor *ts =
      nnc_arena_alloc(&prog->arena, sizeof(nnc_rt_tensor) * (size_t)(m->ntensors + 1));
  for (int i = 0; i < m->ntensors; i++) {
    const nnc_tensor *t = &m->tensors[i];
    nnc_rt_tensor *r = &ts[i];
    r->name = nnc_arena_strdup(&prog->arena, t->name);
    r->role = (int)t->role; /* same values (checked below) */
    r->rank = t->shape.rank;
    for (int d = 0; d < t->shape.rank; d++)
      r->shape[d] = t->shape.dim[d];
    r->offset = buf_offset(p, p->tensor_bufs[i]);
    r->init = (int)t->init.kind; /* same values (checked below) */
    r->init_a = (float)t->init.a;
    r->init_b = (float)t->init.b;
    r->fan_in = t->init.fan_in;
    r->fan_out = t->init.fan_out;
    r->synced = t->synced;
  }
  rt->ntensors = m->ntensors;
  rt->tensors = ts;
}

/* The IR's enums and the runtime's are converted by value (above): each
 * pair is pinned here, so reordering one side fails the build. */
#define SAME(ir, rt) _Static_assert((int)(ir) == (int)(rt), #ir " is " #rt);
SAME(NNC_ROLE_PARAM, NNC_RT_PARAM)
SAME(NNC_ROLE_FROZEN, NNC_RT_FROZEN)
SAME(NNC_ROLE_BUFFER, NNC_RT_BUFFER)
SAME(NNC_ROLE_OPT_STATE, NNC_RT_OPT_STATE)
SAME(NNC_ROLE_GRAD, NNC_RT_GRAD)
SAME(NNC_INIT_ZEROS, NNC_RT_INIT_ZEROS)
SAME(NNC_INIT_ONES, NNC_RT_INIT_ONES)
SAME(NNC_INIT_CONSTANT, NNC_RT_INIT_CONSTANT)
SAME(NNC_INIT_NORMAL, NNC_RT_INIT_NORMAL)
SAME(NNC_INIT_UNIFORM, NNC_RT_INIT_UNIFORM)
SAME(NNC_INIT_XAVIER_UNIFORM, NNC_RT_INIT_XAVIER_UNIFORM)
SAME(NNC_INIT_XAVIER_NORMAL, NNC_RT_INIT_XAVIER_NORMAL)
SAME(NNC_INIT_HE_UNIFORM, NNC_RT_INIT_HE_UNIFORM)
SAME(NNC_INIT_HE_NORMAL, NNC_RT_INIT_HE_NORMAL)
SAME(NNC_MAX_RANK, NNC_RT_MAX_RANK)
#undef SAME

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

bool nnc_cg_create_jit(const nnc_cg_target *t, int opt_level, LLVMOrcLLJITRef *out, char *err,
                       size_t errlen) {
  LLVMTargetMachineRef tm = nnc_cg_target_machine(t, opt_level, LLVMRelocPIC, err, errlen);
  if (!tm) return false;
  LLVMOrcJITTargetMachineBuilderRef jtmb =
      LLVMOrcJITTargetMachineBuilderCreateFromTargetMachine(tm); /* owns tm */
  LLVMOrcLLJITBuilderRef builder = LLVMOrcCreateLLJITBuilder();
  LLVMOrcLLJITBuilderSetJITTargetMachineBuilder(builder, jtmb); /* builder owns jtmb */
  return nnc_cg_check(LLVMOrcCreateLLJIT(out, builder), "creating the JIT", err,
                      errlen); /* consumes builder */
}

/* Adds the parts' objects to the JIT (which takes them) and looks up the
 * entry points and profile counters. */
static bool link_parts(nnc_cg_program *prog, nnc_cg_part *parts, const nnc_cg_options *o, char *err,
                       size_t errlen) {
  LLVMOrcJITDylibRef jd = LLVMOrcLLJITGetMainJITDylib(prog->jit);
  for (int i = 0; i < 2 * JIT_PARTS; i++) {
    LLVMMemoryBufferRef *at = i % 2 ? &parts[i / 2].cold_obj : &parts[i / 2].obj;
    LLVMMemoryBufferRef obj = *at;
    *at = NULL; /* the JIT's now, even on failure */
    if (obj && !nnc_cg_check(LLVMOrcLLJITAddObjectFile(prog->jit, jd, obj),
                             "adding code to the JIT", err, errlen))
      return false;
  }
  LLVMOrcExecutorAddress addr;
  const nnc_kgraph *graphs[NNC_CG_NGRAPHS];
  nnc_cg_graphs(&prog->prog, graphs);
  static const char *const entries[NNC_CG_NGRAPHS] = {
      "nnc_train_step", "nnc_eval_step", "nnc_grad_step", "nnc_update_step", "nnc_grad_half_step"};
  nnc_rt_entry *slots[NNC_CG_NGRAPHS] = {&prog->model.train_step, &prog->model.eval_step,
                                         &prog->model.grad_step, &prog->model.update_step,
                                         &prog->model.grad_half_step};
  for (int g = 0; g < NNC_CG_NGRAPHS; g++) {
    if (!graphs[g]) continue;
    if (!nnc_cg_check(LLVMOrcLLJITLookup(prog->jit, &addr, entries[g]), "looking up an entry point",
                      err, errlen))
      return false;
    *slots[g] = (nnc_rt_entry)(uintptr_t)addr;
  }
  for (int g = 0; g < NNC_CG_NGRAPHS && o->profile; g++) {
    if (!graphs[g]) continue;
    const char *sym = nnc_cg_profile_symbol(graphs[g]);
    if (!nnc_cg_check(LLVMOrcLLJITLookup(prog->jit, &addr, sym), "looking up the profile counters",
                      err, errlen))
      return false;
    prog->profile[g] = (const int64_t *)(uintptr_t)addr;
  }
  return true;
}

static void print_times(FILE *f, const nnc_kprog *p, const nnc_cg_part *parts, double t0, double t1,
                        double t2, double t3) {
  nnc_cg_print_kernel_count(f, p);
  for (int i = 0; i < JIT_PARTS; i++) {
    char what[16];
    snprintf(what, sizeof what, "part %d", i);
    nnc_cg_print_times(f, what, &parts[i].times);
  }
  fprintf(f,
          "codegen: kernels %.1f ms, llvm + machine code (%d parts) %.1f ms, link %.1f ms, "
          "total %.1f ms\n",
          1e3 * (t1 - t0), JIT_PARTS, 1e3 * (t2 - t1), 1e3 * (t3 - t2), 1e3 * (t3 - t0));
}

/* The second half: machine code for every part, the JIT, the entry
 * points. Frees the target and, on failure, whatever it made. */
static bool finish(nnc_cg_program *prog, char *err, size_t errlen) {
  /* NNC_SPLIT_COLD=0 keeps the cold functions in their parts' objects (A/B). */
  const char *env = getenv("NNC_SPLIT_COLD");
  bool split = !env || strcmp(env, "0") != 0;
  bool ok = nnc_cg_compile_parts(&prog->prog, &prog->opts, &prog->target, JIT_PARTS, split,
                                 prog->parts, err, errlen);
  double t2 = nnc_cg_now();
  ok = ok && nnc_cg_create_jit(&prog->target, prog->opts.opt_level, &prog->jit, err, errlen);
  ok = ok && define_runtime_symbols(prog->jit, err, errlen);
  ok = ok && link_parts(prog, prog->parts, &prog->opts, err, errlen);
  double t3 = nnc_cg_now();
  if (ok && prog->opts.timing)
    print_times(prog->opts.timing, &prog->prog, prog->parts, prog->t0, prog->t1, t2, t3);
  if (ok && prog->opts.timing && prog->opts.function_times)
    nnc_cg_print_function_times(prog->opts.timing, &prog->prog, &prog->opts, &prog->target,
                                JIT_PARTS);
  for (int i = 0; i < JIT_PARTS; i++) {
    LLVMMemoryBufferRef *objs[2] = {&prog->parts[i].obj, &prog->parts[i].cold_obj};
    for (int o = 0; o < 2; o++)
      if (*objs[o]) {
        LLVMDisposeMemoryBuffer(*objs[o]);
        *objs[o] = NULL;
      }
  }
  if (!ok && prog->jit) {
    char ignored[16];
    nnc_cg_check(LLVMOrcDisposeLLJIT(prog->jit), "", ignored, sizeof ignored);
    prog->jit = NULL;
  }
  nnc_cg_target_dispose(&prog->target);
  prog->seconds = t3 - prog->t0;
  return ok;
}

static void *finish_thread(void *arg) {
  nnc_cg_program *prog = arg;
  prog->finish_ok = finish(prog, prog->finish_err, sizeof prog->finish_err);
  return NULL;
}

/* The model's ready hook (nnc_rt_model.ready). */
static int model_ready(void *ctx, nnc_rt_error *err) {
  return nnc_cg_wait(ctx, err->msg, sizeof err->msg) ? 0 : -1;
}

/* Lowers, plans and fills the model table; then, with machine_code,
 * starts the second half on a thread. */
static bool start(const nnc_module *m, const nnc_cg_options *o, bool machine_code,
                  nnc_cg_program **out, char *err, size_t errlen) {
  nnc_cg_program *prog = calloc(1, sizeof *prog);
  if (!prog) {
    snprintf(err, errlen, "codegen: out of memory");
    return false;
  }
  if (o)
    prog->opts = *o;
  else
    nnc_cg_default_options(&prog->opts);
  prog->t0 = nnc_cg_now();
  nnc_arena_init(&prog->arena);
  prog->prog.arena = &prog->arena;
  if (!nnc_cg_target_init(&prog->target, &prog->opts, err, errlen)) goto fail_prog;
  if (!nnc_cg_build_kernels(&prog->prog, m, &prog->target, prog->opts.opt_level, err, errlen))
    goto fail_target;
  prog->t1 = nnc_cg_now();
  fill_model(prog, m);
  if (!machine_code) {
    nnc_cg_target_dispose(&prog->target);
    prog->finish_ok = true;
    *out = prog;
    return true;
  }
  prog->model.ready = model_ready;
  prog->model.ready_ctx = prog;
  prog->pending = pthread_create(&prog->finisher, NULL, finish_thread, prog) == 0;
  if (!prog->pending) finish_thread(prog); /* no thread: finish here */
  *out = prog;
  return true;

fail_target:
  nnc_cg_target_dispose(&prog->target);
fail_prog:
  nnc_arena_destroy(&prog->arena);
  free(prog);
  return false;
}

bool nnc_cg_compile_start(const nnc_module *m, const nnc_cg_options *o, nnc_cg_program **out,
                          char *err, size_t errlen) {
  return start(m, o, true, out, err, errlen);
}

bool nnc_cg_compile_table(const nnc_module *m, const nnc_cg_options *o, nnc_cg_program **out,
                          char *err, size_t errlen) {
  return start(m, o, false, out, err, errlen);
}

bool nnc_cg_wait(nnc_cg_program *p, char *err, size_t errlen) {
  if (p->pending) {
    pthread_join(p->finisher, NULL);
    p->pending = false;
  }
  if (!p->finish_ok) snprintf(err, errlen, "%s", p->finish_err);
  return p->finish_ok;
}

double nnc_cg_compile_seconds(const nnc_cg_program *p) {
  return p->pending ? 0 : p->seconds;
}

bool nnc_cg_compile(const nnc_module *m, const nnc_cg_options *o, nnc_cg_program **out, char *err,
                    size_t errlen) {
  nnc_cg_program *prog;
  if (!nnc_cg_compile_start(m, o, &prog, err, errlen)) return false;
  if (!nnc_cg_wait(prog, err, errlen)) {
    nnc_cg_free(prog);
    return false;
  }
  *out = prog;
  return true;
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
  const nnc_kgraph *graphs[NNC_CG_NGRAPHS];
  nnc_cg_graphs(&p->prog, graphs);
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    if (p->profile[g]) nnc_cg_profile_report(out, graphs[g], p->profile[g]);
}

void nnc_cg_dump_kernels(const nnc_cg_program *p, FILE *out) {
  const nnc_kprog *kp = &p->prog;
  fprintf(out, "arena %lld bytes, temporaries from %lld\n", (long long)kp->arena_bytes,
          (long long)kp->temp_base);
  const nnc_kgraph *gs[NNC_CG_NGRAPHS];
  nnc_cg_graphs(kp, gs);
  for (int g = 0; g < NNC_CG_NGRAPHS; g++) {
    if (!gs[g]) continue;
    fprintf(out, "graph %s: %d kernels, %lld bytes of temporaries\n", gs[g]->name, gs[g]->n,
            (long long)gs[g]->temp_bytes);
    for (int i = 0; i < gs[g]->n; i++)
      nnc_kernel_print(out, kp, gs[g]->k[i]);
  }
}

void nnc_cg_free(nnc_cg_program *p) {
  if (!p) return;
  if (p->pending) pthread_join(p->finisher, NULL);
  char ignored[16];
  if (p->jit) nnc_cg_check(LLVMOrcDisposeLLJIT(p->jit), "", ignored, sizeof ignored);
  nnc_arena_destroy(&p->arena);
  free(p);
}

int nnc_cg_kernel_part(const nnc_cg_program *p, int nparts, int index, const char **name,
                       double *load) {
  if (nparts < 1 || nparts > NNC_CG_MAX_PARTS) return -1;
  const nnc_kgraph *gs[NNC_CG_NGRAPHS];
  nnc_cg_graphs(&p->prog, gs);
  int *part_of[NNC_CG_NGRAPHS];
  double loads[NNC_CG_MAX_PARTS];
  nnc_cg_assign_parts(&p->prog, nparts, part_of, loads);
  int part = -1;
  for (int g = 0, at = 0; g < NNC_CG_NGRAPHS; g++)
    for (int i = 0; gs[g] && i < gs[g]->n; i++, at++)
      if (at == index) {
        part = part_of[g][i];
        *name = gs[g]->k[i]->name;
      }
  nnc_cg_free_parts(part_of);
  for (int i = 0; load && i < nparts; i++)
    load[i] = loads[i];
  return part;
}
