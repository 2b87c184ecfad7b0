/* e2e_ref.h: what the end-to-end tests against PyTorch share: reference
 * files of lines `name count v1 v2 ...` (made by a Python script beside
 * their data), and a .nn file compiled in-process exactly as `nnc run`
 * does (front end, pass pipeline, JIT) with its arena and thread pool.
 * Header-only (static functions) so each test program stays one file. */
#ifndef NNC_E2E_REF_H
#define NNC_E2E_REF_H

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
#include "frontend/frontend.h"
#include "ir/ir.h"
#include "runtime/nnc_rt.h"
#include "tools/pipeline.h"

enum { REF_MAX = 64 };

/* ---- the reference file: lines "name count v1 v2 ..." ---- */

typedef struct ref_entry {
  char name[64];
  int64_t n;
  double *v;
} ref_entry;

typedef struct ref_file {
  int n;
  ref_entry e[REF_MAX];
} ref_file;

static inline void ref_load(ref_file *r, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("cannot open %s", path);
  memset(r, 0, sizeof *r);
  int c;
  while ((c = fgetc(f)) != EOF) {
    if (c == '#') { /* comment line */
      while ((c = fgetc(f)) != EOF && c != '\n') {
      }
      continue;
    }
    if (c == '\n' || c == ' ') continue;
    ungetc(c, f);
    assert_true(r->n < REF_MAX);
    ref_entry *e = &r->e[r->n++];
    long long n;
    if (fscanf(f, "%63s %lld", e->name, &n) != 2) fail_msg("%s: bad entry %d", path, r->n);
    e->n = n;
    e->v = malloc((size_t)n * sizeof *e->v);
    assert_non_null(e->v);
    for (int64_t i = 0; i < n; i++)
      if (fscanf(f, "%lf", &e->v[i]) != 1)
        fail_msg("%s: %s: value %lld missing", path, e->name, (long long)i);
  }
  fclose(f);
}

static inline const ref_entry *ref_get(const ref_file *r, const char *name, int64_t n) {
  for (int i = 0; i < r->n; i++)
    if (!strcmp(r->e[i].name, name)) {
      if (r->e[i].n != n)
        fail_msg("reference %s has %lld values, expected %lld", name, (long long)r->e[i].n,
                 (long long)n);
      return &r->e[i];
    }
  fail_msg("reference has no %s", name);
  return NULL;
}

static inline void ref_free(ref_file *r) {
  for (int i = 0; i < r->n; i++)
    free(r->e[i].v);
}

/* ---- compiling a .nn file in-process: front end -> pipeline -> JIT ---- */

typedef struct compiled {
  nnc_arena arena;
  nnc_cg_program *prog;
  const nnc_rt_model *m;
  char *mem; /* the model's arena */
  nnc_rt_pool *pool;
} compiled;

static inline char *read_text(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  static char buf[1 << 16];
  *len = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[*len] = 0;
  return buf;
}

static inline void compile_nn(compiled *c, const char *path, int threads) {
  nnc_arena_init(&c->arena);
  size_t len;
  const char *text = read_text(path, &len);
  nnc_diags diags;
  nnc_diags_init(&diags, &c->arena);
  uint32_t file = nnc_diags_add_source(&diags, path, text, len);
  nnc_frontend_result fr;
  bool ok = nnc_frontend_compile(&c->arena, &diags, file, &fr);
  if (!ok || !fr.module) {
    nnc_diags_render(&diags, stderr, false);
    fail_msg("%s does not compile", path);
  }
  nnc_pipeline_opts po;
  nnc_pipeline_default_opts(&po, stderr);
  po.verify = true;
  char err[1024] = "";
  if (!nnc_pipeline_run(fr.module, &po, err, sizeof err)) fail_msg("pipeline: %s", err);
  nnc_cg_options co;
  nnc_cg_default_options(&co);
  co.verify = true;
  if (!nnc_cg_compile(fr.module, &co, &c->prog, err, sizeof err)) fail_msg("codegen: %s", err);
  c->m = nnc_cg_model(c->prog);
  size_t bytes = (c->m->arena_bytes + 63) / 64 * 64;
  c->mem = aligned_alloc(64, bytes);
  assert_non_null(c->mem);
  memset(c->mem, 0, bytes);
  nnc_rt_error e;
  c->pool = nnc_rt_pool_create(threads, &e);
  if (!c->pool) fail_msg("pool: %s", e.msg);
}

static inline void release(compiled *c) {
  nnc_rt_pool_destroy(c->pool);
  free(c->mem);
  nnc_cg_free(c->prog);
  nnc_arena_destroy(&c->arena);
}

static inline const nnc_rt_tensor *tensor_named(const nnc_rt_model *m, const char *name) {
  for (int i = 0; i < m->ntensors; i++)
    if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
  return NULL;
}

#endif
