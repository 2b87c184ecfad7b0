/* profile.c: per-kernel times of JIT-compiled steps (NNC_PROFILE=1).
 *
 * When options.profile is set, llvm.c brackets every kernel call in the
 * entry points with nnc_cg_profile_now() and adds the elapsed nanoseconds
 * and one call to a global array of the module (NNC_CG_PROFILE_SLOTS int64
 * per kernel, in kernel order), the first call's time apart. Without the
 * option none of this is emitted, so normal code pays nothing. The times
 * include the thread pool's dispatch for kernels that run in parallel,
 * which is part of what a kernel costs.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cg_internal.h"

int64_t nnc_cg_profile_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

const char *nnc_cg_profile_symbol(const nnc_kgraph *g) {
  if (!strcmp(g->name, "eval")) return "nnc_eval_profile";
  if (!strcmp(g->name, "grad")) return "nnc_grad_profile";
  if (!strcmp(g->name, "grad_half")) return "nnc_grad_half_profile";
  if (!strcmp(g->name, "update")) return "nnc_update_profile";
  return "nnc_train_profile";
}

typedef struct row {
  const nnc_kernel *k;
  int64_t ns, calls;
} row;

static int slower_first(const void *x, const void *y) {
  const row *a = x, *b = y;
  return a->ns < b->ns ? 1 : a->ns > b->ns ? -1 : 0;
}

/* The rows count the calls after the first step where there were several
 * (the first pays for first touches of memory; its total is printed
 * apart), all of them otherwise. */
void nnc_cg_profile_report(FILE *out, const nnc_kgraph *g, const int64_t *counters) {
  row *rows = malloc(sizeof(row) * (size_t)(g->n + 1));
  if (!rows) return;
  int64_t steps = 0, first = 0;
  for (int i = 0; i < g->n; i++) {
    const int64_t *c = counters + NNC_CG_PROFILE_SLOTS * i;
    if (c[1] > steps) steps = c[1];
    first += c[2];
  }
  if (steps == 0) {
    free(rows);
    return;
  }
  int64_t total = 0;
  for (int i = 0; i < g->n; i++) {
    const int64_t *c = counters + NNC_CG_PROFILE_SLOTS * i;
    rows[i] =
        steps > 1 ? (row){g->k[i], c[0], c[1] > 0 ? c[1] - 1 : 0} : (row){g->k[i], c[2], c[1]};
    total += rows[i].ns;
  }
  qsort(rows, (size_t)g->n, sizeof(row), slower_first);
  if (steps > 1)
    fprintf(out,
            "profile %s: %lld steps, %d kernels, %.1f us per step in kernels after the first "
            "(%.1f ms in all; the first step %.2f ms)\n",
            g->name, (long long)steps, g->n, 1e-3 * (double)total / (double)(steps - 1),
            1e-6 * (double)total, 1e-6 * (double)first);
  else
    fprintf(out, "profile %s: 1 step, %d kernels, %.1f us in kernels\n", g->name, g->n,
            1e-3 * (double)total);
  fprintf(out, "  %9s %6s %9s %8s  kernel\n", "ms", "%", "us/call", "calls");
  for (int i = 0; i < g->n; i++) {
    const row *r = &rows[i];
    fprintf(out, "  %9.2f %6.2f %9.2f %8lld  %s%s\n", 1e-6 * (double)r->ns,
            total ? 100.0 * (double)r->ns / (double)total : 0.0,
            r->calls ? 1e-3 * (double)r->ns / (double)r->calls : 0.0, (long long)r->calls,
            r->k->label ? r->k->label : r->k->name,
            nnc_cg_kernel_parallel(r->k) ? " [threads]" : "");
  }
  free(rows);
}
