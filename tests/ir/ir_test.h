/* ir_test.h: what the graph-IR tests share — a fresh arena, module and
 * graph per test (cmocka setup/teardown), shape literals, leaves whose
 * values the interpreter fills deterministically, and a verifier check.
 * Header-only (static functions) so each test program stays one file. */
#ifndef NNC_IR_TEST_H
#define NNC_IR_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ir/interp.h"
#include "ir/ir.h"
#include "ir/passes.h"

enum { FX_MAX_TENSORS = 64 };

typedef struct fixture {
  nnc_arena arena;
  nnc_module *m;
  nnc_graph *g;
  double lo[FX_MAX_TENSORS], hi[FX_MAX_TENSORS]; /* value range per tensor */
} fixture;

static inline int fx_setup(void **state) {
  fixture *fx = calloc(1, sizeof *fx);
  nnc_arena_init(&fx->arena);
  fx->m = nnc_module_new(&fx->arena, "test");
  fx->g = fx->m->train = nnc_graph_new(fx->m, "train");
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

/* A persistent tensor of the given role whose values fx_fill draws from
 * [lo, hi); returns its PARAM node. */
static inline nnc_node *fx_tensor(fixture *fx, const char *name, nnc_tensor_role role, nnc_dtype t,
                                  nnc_shape s, double lo, double hi) {
  nnc_init init = {NNC_INIT_ZEROS, 0, 0, 0, 0};
  int i = nnc_module_add_tensor(fx->m, name, role, t, &s, init, (nnc_span){0, 0, 0});
  assert_true(i < FX_MAX_TENSORS);
  fx->lo[i] = lo;
  fx->hi[i] = hi;
  return nnc_ir_param(fx->g, i);
}

/* A float64 trainable leaf with values in [lo, hi). */
static inline nnc_node *fx_leaf(fixture *fx, const char *name, nnc_shape s, double lo, double hi) {
  return fx_tensor(fx, name, NNC_ROLE_PARAM, NNC_F64, s, lo, hi);
}

/* Deterministic values in [0, 1) (a 64-bit LCG, top 53 bits). */
static inline double fx_rand(uint64_t *state) {
  *state = *state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
  return (double)(*state >> 11) * 0x1p-53;
}

/* Fills every tensor t from its range, the same values for the same t. */
static inline void fx_fill(fixture *fx, nnc_interp *in) {
  for (int t = 0; t < fx->m->ntensors; t++) {
    uint64_t state = 0x9E3779B97F4A7C15u * (uint64_t)(t + 1);
    double *v = nnc_interp_tensor(in, t);
    for (int64_t i = 0; i < nnc_shape_numel(&fx->m->tensors[t].shape); i++)
      v[i] = fx->lo[t] + (fx->hi[t] - fx->lo[t]) * fx_rand(&state);
  }
}

static inline void fx_set(double *dst, const double *src, int n) {
  memcpy(dst, src, sizeof(double) * (size_t)n);
}

#define assert_verified(g)                                                                         \
  do {                                                                                             \
    char err_[256] = "";                                                                           \
    if (!nnc_ir_verify((g), err_, sizeof err_)) fail_msg("verify: %s", err_);                      \
  } while (0)

#define assert_near(a, b, tol)                                                                     \
  do {                                                                                             \
    double a_ = (a), b_ = (b);                                                                     \
    if (!(fabs(a_ - b_) <= (tol)*fmax(1.0, fmax(fabs(a_), fabs(b_)))))                             \
      fail_msg("%s = %.17g, %s = %.17g (tol %g)", #a, a_, #b, b_, (double)(tol));                  \
  } while (0)

#endif
