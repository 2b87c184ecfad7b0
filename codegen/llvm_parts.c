/* llvm_parts.c: which part of the program each kernel is compiled in.
 * The JIT compiles the program as parts on threads (jit.c, compile.c);
 * the part that takes longest decides the compile time, so the kernels are
 * shared out by an estimate of what each costs to compile. */
#include <stdlib.h>

#include "gemm.h"
#include "llvm_internal.h"

/* Estimated cost of optimising and compiling a kernel, in about
 * milliseconds of one core: each function compiled alone, NNC_DEBUG=2
 * (nnc_cg_print_function_times), fashion_cnn and fashion_mlp on AVX-512,
 * refitted at the eleventh stop (three runs averaged, docs/performance.md).
 * A direct weight gradient's body ~15-17 (its sums in loops; 55 before), a
 * direct convolution's 12-18 (its loops kept, conv_direct.c), a product
 * 13-22, one that packs B stored [N,K] (nnc_cg_gemm_packs_b: dense 1's
 * forward product) ~50 with its pack function (estimated at 18, it left
 * its part ~20 ms heavier), a hot loop kernel 5-20 (more with each
 * innermost loop, which the vectoriser turns into a vector loop and its
 * remainder), a cold kernel or an entry point ~3 (optimised, then fast
 * instruction selection). A count with products at 6 loop kernels put both
 * weight gradients in one part, the heavier by a third. */
static const double CONV_DW_COST = 16, CONV_COST = 15, GEMM_COST = 18, PACK_COST = 30,
                    KERNEL_COST = 5, INNER_LOOP_COST = 2.5, COLD_COST = 3, ENTRY_COST = 3;

static int innermost_loops(const nnc_kblock *blk) {
  int n = 0;
  for (int i = 0; i < blk->n; i++)
    if (blk->s[i]->kind == NNC_KS_LOOP)
      n += nnc_ll_has_loop(&blk->s[i]->body) ? innermost_loops(&blk->s[i]->body) : 1;
  return n;
}

static double kernel_cost(const nnc_kernel *k) {
  if (k->conv_dw) return CONV_DW_COST;
  if (k->is_conv) return CONV_COST;
  if (k->is_gemm) {
    nnc_cg_gemm g = nnc_ll_gemm_of(k);
    return GEMM_COST + (nnc_cg_gemm_packs_b(&g) ? PACK_COST : 0);
  }
  if (k->work < NNC_COLD_WORK) return COLD_COST;
  return KERNEL_COST + INNER_LOOP_COST * innermost_loops(&k->body);
}

/* Part i's share of the work, of nparts: nparts - 1 for the first two,
 * then one less each (5, 5, 4, 3, 2, 1 for six). The parts are compiled
 * by fewer threads than there are parts, each thread taking the next part
 * when it finishes one (compile.c): two equal cores start with equal
 * parts and end together, and the last, small parts go to whichever
 * thread is ahead, so one core slower than the other (on a shared host,
 * one virtual CPU compiled 1.5x slower than its twin) or an estimate off
 * by a part's worth no longer leaves the other idle (docs/performance.md,
 * "Parts pulled by threads"). */
static double share(int i, int nparts) {
  return (double)(i == 0 ? nparts - 1 : nparts - i);
}

/* The part where a kernel of this cost would finish first, relative to
 * the parts' shares. */
static int lightest(const double *load, int n, double cost) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if ((load[i] + cost) / share(i, n) < (load[best] + cost) / share(best, n)) best = i;
  return best;
}

typedef struct kernel_ref {
  int g, i;
  double cost;
} kernel_ref;

/* Dearest first; program order among equals. */
static int by_cost(const void *a, const void *b) {
  const kernel_ref *x = a, *y = b;
  if (x->cost != y->cost) return x->cost < y->cost ? 1 : -1;
  return x->g != y->g ? x->g - y->g : x->i - y->i;
}

/* Which part each kernel is compiled in (part_of[g][i]) and each part's
 * estimated work (load): the kernels dearest first (kernel_cost), each to
 * the part with the least work so far for its share (share: part 0 the
 * most; the longest-first rule); a product that an earlier
 * kernel already has goes to that kernel's part, at no cost (it is
 * emitted once there); the entry points are in part 0; a kernel sharing a
 * train kernel's code (plan.c) goes where that kernel is. Depends only on
 * the program, so every part's emitter computes the same assignment. */
void nnc_cg_assign_parts(const nnc_kprog *p, int nparts, int *part_of[NNC_CG_NGRAPHS],
                         double *load) {
  const nnc_kgraph *gs[NNC_CG_NGRAPHS];
  nnc_cg_graphs(p, gs);
  for (int g = 0; g < NNC_CG_NGRAPHS; g++) {
    part_of[g] = calloc((size_t)(gs[g] ? gs[g]->n : 0) + 1, sizeof(int));
    if (!part_of[g]) nnc_ir_bug("codegen: out of memory");
  }
  for (int i = 0; i < nparts; i++)
    load[i] = 0;
  load[0] = ENTRY_COST *
            (double)(p->has_train + p->has_eval + p->has_grad + p->has_update + p->has_grad_half);
  int n = 0;
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    n += gs[g] ? gs[g]->n : 0;
  kernel_ref *order = malloc(sizeof(kernel_ref) * (size_t)(n + 1));
  bool *done[NNC_CG_NGRAPHS];
  for (int g = 0; g < NNC_CG_NGRAPHS; g++) {
    done[g] = calloc((size_t)(gs[g] ? gs[g]->n : 0) + 1, sizeof(bool));
    if (!done[g]) nnc_ir_bug("codegen: out of memory");
  }
  if (!order) nnc_ir_bug("codegen: out of memory");
  n = 0;
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    for (int i = 0; gs[g] && i < gs[g]->n; i++)
      if (!gs[g]->k[i]->same_as && !gs[g]->k[i]->twin_of)
        order[n++] = (kernel_ref){g, i, kernel_cost(gs[g]->k[i])};
  qsort(order, (size_t)n, sizeof *order, by_cost);
  for (int o = 0; o < n; o++) {
    int g = order[o].g, i = order[o].i;
    const nnc_kernel *k = gs[g]->k[i];
    int part = -1;
    if (k->is_gemm) { /* a product some kernel placed already has? */
      nnc_cg_gemm mine = nnc_ll_gemm_of(k);
      for (int h = 0; h < NNC_CG_NGRAPHS && part < 0; h++)
        for (int j = 0; gs[h] && j < gs[h]->n && part < 0; j++) {
          nnc_cg_gemm other = nnc_ll_gemm_of(gs[h]->k[j]);
          if (done[h][j] && gs[h]->k[j]->is_gemm && nnc_cg_gemm_eq(&other, &mine))
            part = part_of[h][j];
        }
    }
    if (part < 0) {
      part = lightest(load, nparts, order[o].cost);
      load[part] += order[o].cost;
    }
    part_of[g][i] = part;
    done[g][i] = true;
  }
  free(order);
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    free(done[g]);
  /* Kernels with a train twin: the train graph's parts are all set. */
  for (int g = 1; g < NNC_CG_NGRAPHS; g++)
    for (int i = 0; gs[g] && gs[0] && i < gs[g]->n; i++)
      for (int j = 0; gs[g]->k[i]->same_as && j < gs[0]->n; j++)
        if (gs[0]->k[j] == gs[g]->k[i]->same_as) part_of[g][i] = part_of[0][j];
  /* Twins (compiled as their first, which comes before them): its part. */
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    for (int i = 0; gs[g] && i < gs[g]->n; i++)
      for (int h = 0; gs[g]->k[i]->twin_of && h <= g; h++)
        for (int j = 0; gs[h] && j < gs[h]->n; j++)
          if (gs[h]->k[j] == gs[g]->k[i]->twin_of) part_of[g][i] = part_of[h][j];
}

void nnc_cg_free_parts(int *part_of[NNC_CG_NGRAPHS]) {
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    free(part_of[g]);
}
