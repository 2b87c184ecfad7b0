/* cg_test.h: what the codegen tests share — a fresh module per test, a
 * runner that compiles the module's train graph with nnc_cg_compile, runs
 * one or more steps through the runtime ABI (arena at the planned offsets,
 * a thread pool) and the same steps through the reference interpreter, and
 * compares every output and every persistent tensor within a tolerance.
 * Header-only (static functions) so each test program stays one file. */
#ifndef NNC_CG_TEST_H
#define NNC_CG_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/codegen.h"
#include "ir/interp.h"
#include "ir/ir.h"
#include "ir/passes.h"
#include "runtime/nnc_rt.h"

enum { FX_MAX_TENSORS = 64 };

typedef struct fixture {
  nnc_arena arena;
  nnc_module *m;
  nnc_graph *g;
  double lo[FX_MAX_TENSORS], hi[FX_MAX_TENSORS]; /* value range per tensor */
  double x_lo, x_hi;                             /* range of the X input */
  int64_t y_classes;                             /* i32 Y input: labels in [0, y_classes) */
  double rtol, atol;
  int steps;                  /* training steps to compare */
  int threads;                /* pool size; 0: no pool (run inline) */
  const char *cpu, *features; /* target other than the host (nnc_cg_options); NULL: host */
  FILE *timing;               /* non-NULL: the compile's per-phase times go here */
  bool profile;               /* time every kernel call (nnc_cg_options.profile) */
} fixture;

static inline int fx_setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  nnc_arena_init(&fx->arena);
  fx->m = nnc_module_new(&fx->arena, "test");
  fx->g = fx->m->train = nnc_graph_new(fx->m, "train");
  fx->x_lo = -1;
  fx->x_hi = 1;
  fx->y_classes = 3;
  fx->rtol = 1e-4;
  fx->atol = 1e-5;
  fx->steps = 1;
  fx->threads = 2;
  *state = fx;
  return 0;
}

static inline int fx_teardown(void **state) {
  fixture *fx = *state;
  nnc_arena_destroy(&fx->arena);
  free(fx);
  return 0;
}

/* sh(2, 3, 4) is the shape [3,4]. */
static inline nnc_shape sh(int rank, ...) {
  nnc_shape s = {rank, {0}};
  va_list ap;
  va_start(ap, rank);
  for (int i = 0; i < rank; i++)
    s.dim[i] = va_arg(ap, int);
  va_end(ap);
  return s;
}

/* A persistent tensor whose values are drawn from [lo, hi); its PARAM node. */
static inline nnc_node *fx_tensor(fixture *fx, const char *name, nnc_tensor_role role, nnc_dtype t,
                                  nnc_shape s, double lo, double hi) {
  nnc_init init = {NNC_INIT_ZEROS, 0, 0, 0, 0};
  int i = nnc_module_add_tensor(fx->m, name, role, t, &s, init, (nnc_span){0, 0, 0});
  assert_true(i < FX_MAX_TENSORS);
  fx->lo[i] = lo;
  fx->hi[i] = hi;
  return nnc_ir_param(fx->g, i);
}

static inline nnc_node *fx_param(fixture *fx, const char *name, nnc_shape s, double lo, double hi) {
  return fx_tensor(fx, name, NNC_ROLE_PARAM, NNC_F32, s, lo, hi);
}

/* Deterministic values in [0, 1) (a 64-bit LCG, top 53 bits), rounded to
 * f32 so that both sides start from the same numbers. */
static inline double fx_rand(uint64_t *state) {
  *state = *state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
  return (double)(*state >> 11) * 0x1p-53;
}

static inline double fx_round(nnc_dtype t, double v) {
  return t == NNC_F32 ? (double)(float)v : v;
}

/* ---- arena access by dtype ---- */

static inline void put(char *arena, int64_t off, nnc_dtype t, int64_t i, double v) {
  switch (t) {
  case NNC_F32: ((float *)(arena + off))[i] = (float)v; break;
  case NNC_F64: ((double *)(arena + off))[i] = v; break;
  case NNC_I32: ((int32_t *)(arena + off))[i] = (int32_t)v; break;
  }
}

static inline double get(const char *arena, int64_t off, nnc_dtype t, int64_t i) {
  switch (t) {
  case NNC_F32: return ((const float *)(arena + off))[i];
  case NNC_F64: return ((const double *)(arena + off))[i];
  case NNC_I32: return ((const int32_t *)(arena + off))[i];
  }
  return 0;
}

static inline bool near(double got, double want, double rtol, double atol) {
  if (isnan(want)) return isnan(got);
  if (isinf(want)) return got == want;
  return fabs(got - want) <= atol + rtol * fabs(want);
}

/* A compiled program with its arena. */
typedef struct fx_run {
  nnc_cg_program *prog;
  const nnc_rt_model *model;
  char *arena;
  nnc_rt_pool *pool;
} fx_run;

static inline void fx_compile(fixture *fx, fx_run *r, int threads) {
  char err[1024] = "";
  if (!nnc_ir_verify(fx->g, err, sizeof err)) fail_msg("verify: %s", err);
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  o.verify = true;
  o.cpu = fx->cpu;
  o.features = fx->features;
  o.timing = fx->timing;
  o.profile = fx->profile;
  if (getenv("NNC_TEST_TIMING")) o.timing = stderr;
  if (!nnc_cg_compile(fx->m, &o, &r->prog, err, sizeof err)) fail_msg("compile: %s", err);
  if (getenv("NNC_TEST_DUMP")) nnc_cg_dump_kernels(r->prog, stderr);
  r->model = nnc_cg_model(r->prog);
  size_t bytes = (r->model->arena_bytes + 63) / 64 * 64;
  r->arena = aligned_alloc(64, bytes);
  assert_non_null(r->arena);
  memset(r->arena, 0, bytes);
  r->pool = NULL;
  if (threads > 0) {
    nnc_rt_error e;
    r->pool = nnc_rt_pool_create(threads, &e);
    assert_non_null(r->pool);
  }
}

static inline void fx_release(fx_run *r) {
  if (r->pool) nnc_rt_pool_destroy(r->pool);
  free(r->arena);
  nnc_cg_free(r->prog);
}

/* The kernel dump (nnc_cg_dump_kernels) of fx's compiled module, for
 * tests that check which kernels the lowering chose; the caller frees it. */
static inline char *fx_kernel_dump(fixture *fx) {
  fx_run r;
  fx_compile(fx, &r, 0);
  FILE *f = tmpfile();
  assert_non_null(f);
  nnc_cg_dump_kernels(r.prog, f);
  long len = ftell(f);
  assert_true(len > 0);
  char *dump = calloc((size_t)len + 1, 1);
  assert_non_null(dump);
  rewind(f);
  assert_int_equal(fread(dump, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  fx_release(&r);
  return dump;
}

/* Whether the dump has a kernel named what ("kernel train.k3.what ..."). */
static inline bool fx_has_kernel(const char *dump, const char *what) {
  size_t n = strlen(what);
  for (const char *l = dump; l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
    if (strncmp(l, "kernel ", 7) != 0) continue;
    const char *name = strchr(l + 7, '.');      /* after the graph's name */
    name = name ? strchr(name + 1, '.') : NULL; /* after k<number> */
    if (name && !strncmp(name + 1, what, n) && (name[1 + n] == ' ' || name[1 + n] == '\n'))
      return true;
  }
  return false;
}

/* Same deterministic starting values on both sides. */
static inline void fx_fill(fixture *fx, fx_run *r, nnc_interp *in) {
  const nnc_module *m = fx->m;
  for (int t = 0; t < m->ntensors; t++) {
    uint64_t state = 0x9E3779B97F4A7C15u * (uint64_t)(t + 1);
    const nnc_tensor *ts = &m->tensors[t];
    double *v = in ? nnc_interp_tensor(in, t) : NULL;
    bool opt = ts->role == NNC_ROLE_OPT_STATE && fx->lo[t] == 0 && fx->hi[t] == 0;
    for (int64_t i = 0; i < nnc_shape_numel(&ts->shape); i++) {
      double x =
          opt ? 0 : fx_round(ts->dtype, fx->lo[t] + (fx->hi[t] - fx->lo[t]) * fx_rand(&state));
      if (v) v[i] = x;
      put(r->arena, r->model->tensors[t].offset, ts->dtype, i, x);
    }
  }
}

/* Inputs of step s (1-based): X from a seeded stream, Y labels, scalars. */
static inline void fx_inputs(fixture *fx, fx_run *r, nnc_interp *in, int s) {
  const nnc_graph *g = fx->g;
  for (int k = 0; k < NNC_IN_COUNT_; k++) {
    const nnc_node *n = g->inputs[k];
    if (!n) continue;
    int64_t off = nnc_cg_input_offset(r->prog, (nnc_input_kind)k);
    double *v = in ? nnc_interp_input(in, (nnc_input_kind)k) : NULL;
    uint64_t state = 0xC2B2AE3D27D4EB4Fu * (uint64_t)(k + 1) + (uint64_t)s;
    for (int64_t i = 0; i < nnc_shape_numel(&n->shape); i++) {
      double x;
      switch ((nnc_input_kind)k) {
      case NNC_IN_X:
        x = fx_round(n->dtype, fx->x_lo + (fx->x_hi - fx->x_lo) * fx_rand(&state));
        break;
      case NNC_IN_Y:
        x = n->dtype == NNC_I32 ? (double)(int64_t)(fx_rand(&state) * (double)fx->y_classes)
                                : fx_round(n->dtype, fx_rand(&state));
        break;
      case NNC_IN_STEP: x = s; break;
      case NNC_IN_EPOCH: x = (s - 1) / 2; break;
      case NNC_IN_SEED: x = 1234; break;
      default: x = 0; break;
      }
      if (v) v[i] = x;
      if (off >= 0) put(r->arena, off, n->dtype, i, x);
    }
  }
}

/* Compares outputs and tensors of the compiled step with the interpreter. */
static inline void fx_compare(fixture *fx, fx_run *r, nnc_interp *in, int step) {
  const nnc_graph *g = fx->g;
  int bad = 0;
  for (int k = 0; k < NNC_OUT_COUNT_; k++) {
    const nnc_node *n = g->outputs[k];
    if (!n) continue;
    int64_t off = nnc_cg_output_offset(r->prog, (nnc_output_kind)k);
    assert_true(off >= 0);
    const double *want = nnc_interp_value(in, n);
    for (int64_t i = 0; i < nnc_shape_numel(&n->shape); i++) {
      double got = get(r->arena, off, n->dtype, i);
      if (!near(got, want[i], fx->rtol, fx->atol) && bad++ < 10)
        print_error("step %d output %d [%lld]: got %.9g, want %.9g\n", step, k, (long long)i, got,
                    want[i]);
    }
  }
  for (int t = 0; t < fx->m->ntensors; t++) {
    const nnc_tensor *ts = &fx->m->tensors[t];
    const double *want = nnc_interp_tensor(in, t);
    for (int64_t i = 0; i < nnc_shape_numel(&ts->shape); i++) {
      double got = get(r->arena, r->model->tensors[t].offset, ts->dtype, i);
      if (!near(got, want[i], fx->rtol, fx->atol) && bad++ < 10)
        print_error("step %d tensor %s [%lld]: got %.9g, want %.9g\n", step, ts->name, (long long)i,
                    got, want[i]);
    }
  }
  if (bad) fail_msg("%d values differ from the interpreter", bad);
}

/* Ops that some fx_check compiled and compared with the interpreter: every
 * op of the graph that its outputs and updates depend on. test_cg_ops.c's
 * last test demands every op of ops.def. */
static bool fx_kernel_checked[NNC_OP_COUNT_];

static inline void fx_mark_live(const nnc_node *n, bool *live) {
  if (live[n->id]) return;
  live[n->id] = true;
  fx_kernel_checked[n->op] = true;
  for (int i = 0; i < n->nin; i++)
    fx_mark_live(n->in[i], live);
}

static inline void fx_mark_checked(const nnc_graph *g) {
  bool *live = calloc((size_t)g->nnodes + 1, sizeof(bool));
  assert_non_null(live);
  for (int k = 0; k < NNC_OUT_COUNT_; k++)
    if (g->outputs[k]) fx_mark_live(g->outputs[k], live);
  for (int u = 0; u < g->nupdates; u++)
    fx_mark_live(g->updates[u].value, live);
  free(live);
}

/* Compiles fx's module, runs fx->steps steps on both sides, compares. */
static inline void fx_check(fixture *fx) {
  fx_run r;
  fx_compile(fx, &r, fx->threads);
  nnc_interp *in = nnc_interp_new(fx->g);
  assert_non_null(in);
  fx_fill(fx, &r, in);
  for (int s = 1; s <= fx->steps; s++) {
    fx_inputs(fx, &r, in, s);
    r.model->train_step(r.arena, r.pool);
    nnc_interp_run(in);
    fx_compare(fx, &r, in, s);
  }
  nnc_interp_free(in);
  fx_release(&r);
  fx_mark_checked(fx->g);
}

/* fx's module compiled (on `threads` threads), `steps` training steps
 * (then an evaluation step when eval) from fx_fill's start: a copy of the
 * arena (malloc'd, *bytes long). The compile's timing lines go to
 * fx->timing if set. */
static inline char *fx_arena_after(fixture *fx, int threads, int steps, bool eval, size_t *bytes) {
  fx_run r;
  fx_compile(fx, &r, threads);
  fx_fill(fx, &r, NULL);
  for (int s = 1; s <= steps; s++) {
    fx_inputs(fx, &r, NULL, s);
    r.model->train_step(r.arena, r.pool);
  }
  if (eval) r.model->eval_step(r.arena, r.pool);
  *bytes = r.model->arena_bytes;
  char *arena = malloc(*bytes);
  assert_non_null(arena);
  memcpy(arena, r.arena, *bytes);
  fx_release(&r);
  return arena;
}

/* Runs `steps` training steps (then an evaluation step when eval) from the
 * same start with 1, 2 and 3 threads; fails unless the arenas are
 * identical bit for bit. */
static inline void fx_check_threads(fixture *fx, int steps, bool eval) {
  size_t bytes = 0, b;
  char *ref = fx_arena_after(fx, 1, steps, eval, &bytes);
  for (int threads = 2; threads <= 3; threads++) {
    char *got = fx_arena_after(fx, threads, steps, eval, &b);
    bool same = b == bytes && memcmp(ref, got, bytes) == 0;
    free(got);
    if (!same) {
      free(ref);
      fail_msg("arena after %d steps differs with %d threads", steps, threads);
    }
  }
  free(ref);
}

/* fx runs module m's train graph: inputs X in [0, 1), labels of 10
 * classes, each weight uniform within 1/sqrt(its first dimension), each
 * bias within 0.05, the optimizer's state 0 (models from .nn sources). */
static inline void fx_use_module(fixture *fx, nnc_module *m) {
  fx->m = m;
  fx->g = m->train;
  fx->x_lo = 0;
  fx->x_hi = 1;
  fx->y_classes = 10;
  for (int t = 0; t < m->ntensors && t < FX_MAX_TENSORS; t++) {
    const nnc_tensor *ts = &m->tensors[t];
    double r = ts->shape.rank >= 2 ? 1 / sqrt((double)ts->shape.dim[0]) : 0.05;
    fx->lo[t] = ts->role == NNC_ROLE_OPT_STATE ? 0 : -r;
    fx->hi[t] = ts->role == NNC_ROLE_OPT_STATE ? 0 : r;
  }
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

#ifdef NNC_CG_TEST_FRONTEND /* for tests that link nnc_frontend */
#include "frontend/frontend.h"

#include <stdlib.h> /* mkstemp: the test defines _POSIX_C_SOURCE */
#include <unistd.h>

/* .nn source through the front end, made into training and eval graphs
 * (simplified); NULL with the diagnostics printed when it does not compile. */
static inline nnc_module *fx_compile_source(nnc_arena *arena, const char *path, const char *text,
                                            size_t n) {
  nnc_diags diags;
  nnc_diags_init(&diags, arena);
  uint32_t file = nnc_diags_add_source(&diags, path, text, n);
  nnc_frontend_result r;
  if (!nnc_frontend_compile(arena, &diags, file, &r) || !r.module) {
    nnc_diags_render(&diags, stderr, false);
    return NULL;
  }
  char err[512];
  if (!nnc_build_training(r.module, err, sizeof err)) fail_msg("build_training: %s", err);
  nnc_simplify(r.module->train);
  if (r.module->eval) nnc_simplify(r.module->eval);
  return r.module;
}

/* examples/NAME through the front end (NULL: not found). */
static inline nnc_module *fx_load_example(nnc_arena *arena, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/examples/%s", NNC_SOURCE_DIR, name);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  static char text[1 << 16];
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  return fx_compile_source(arena, path, text, n);
}

/* What nnc_cg_emit writes for kind (LLVM IR, assembly), as a FILE to read
 * (its temporary file already removed). Needs mkstemp (_POSIX_C_SOURCE). */
static inline FILE *fx_emit_text(nnc_module *m, const nnc_cg_options *o, nnc_cg_output kind) {
  char path[] = "/tmp/nnc_test_asm_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  char err[512];
  if (!nnc_cg_emit(m, o, kind, path, err, sizeof err)) fail_msg("emit: %s", err);
  FILE *f = fopen(path, "r");
  remove(path);
  assert_non_null(f);
  return f;
}
#endif

#endif
