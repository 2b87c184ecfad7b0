/* twins.c: cold loop kernels that are one code but for where their buffers
 * lie in the arena. Batch norm's per-channel sums repeat for each layer
 * and pass, a bias's Adam update for each bias, the loss's sums and
 * negations for each of its terms: every kernel bakes its buffers' offsets
 * in as constants, so LLVM used to optimise and compile each copy
 * (fashion_cnn: 28 of its 85 cold functions, ~1 ms of a part's CPU each).
 * nnc_cg_find_twins points each such kernel at the first of its kind
 * (twin_of); the LLVM backend then compiles that one only, with the
 * arena offsets of its base buffers as arguments, and calls it with each
 * twin's. The code and the arithmetic are the kernel's; only the
 * addresses arrive at run time. No LLVM here. */
#include "kernel.h"

#include <stdlib.h>
#include <string.h>

int nnc_cg_kernel_bases(const nnc_kprog *p, const nnc_kernel *k, int *out) {
  int n = 0;
  for (int i = 0; i < k->nreads + k->nwrites; i++) {
    int b = nnc_kbuf_base(p, i < k->nreads ? k->reads[i] : k->writes[i - k->nreads]), j = 0;
    while (j < n && out[j] != b)
      j++;
    if (j == n) out[n++] = b;
  }
  return n;
}

/* A renaming of base buffers, one to one, built while two kernels are
 * compared: to[x's base] = y's base, from[] the inverse (-1: none). */
typedef struct renaming {
  const nnc_kprog *p;
  int *to, *from, *added, nadded;
  long budget; /* expression nodes left to compare (DAGs compared as trees) */
} renaming;

/* The emitted code depends on a buffer through its element type (loads,
 * stores, alignment), its base's address, and whether the base holds one
 * element (a scalar, loaded once). (ctx: the renaming; nnc_kblock_same's
 * same_buf) */
static bool same_buf(void *ctx, int x, int y) {
  renaming *r = ctx;
  if (x < 0 || y < 0) return x == y;
  const nnc_kbuf *bufs = r->p->bufs;
  int a = nnc_kbuf_base(r->p, x), b = nnc_kbuf_base(r->p, y);
  if (bufs[x].type != bufs[y].type || (bufs[a].numel == 1) != (bufs[b].numel == 1)) return false;
  if (r->to[a] >= 0 || r->from[b] >= 0) return r->to[a] == b;
  r->to[a] = b;
  r->from[b] = a;
  r->added[r->nadded++] = a;
  return true;
}

/* A loop kernel compiled cold and called directly (never on threads: a
 * cold kernel has far less work than llvm.c's PARALLEL_WORK), with
 * nothing besides its body that depends on its buffers. */
static bool candidate(const nnc_kernel *k) {
  return k->work < NNC_COLD_WORK && !k->is_gemm && !k->is_conv && !k->conv_dw && !k->update &&
         !k->allreduce && !k->nprefetch && !k->same_as && !k->twin_of;
}

/* Whether y is x's code with its base buffers renamed: the same loop nest,
 * statements and expressions, reads and writes in the same order. */
static bool twins(renaming *r, const nnc_kernel *x, const nnc_kernel *y) {
  if (x->split != y->split || x->nvars != y->nvars || x->nscalars != y->nscalars ||
      x->nreads != y->nreads || x->nwrites != y->nwrites)
    return false;
  for (int i = 0; i < x->nscalars; i++)
    if (x->scalar_type[i] != y->scalar_type[i]) return false;
  for (int i = 0; i < x->nreads; i++)
    if (!same_buf(r, x->reads[i], y->reads[i])) return false;
  for (int i = 0; i < x->nwrites; i++)
    if (!same_buf(r, x->writes[i], y->writes[i])) return false;
  /* the extent of a split loop is not in the code: the caller passes it */
  return nnc_kblock_same(&x->body, &y->body, x->split, same_buf, r, &r->budget);
}

int nnc_cg_find_twins(nnc_kprog *p) {
  const nnc_kgraph *gs[NNC_CG_NGRAPHS];
  nnc_cg_graphs(p, gs);
  int nb = p->nbufs, found = 0;
  int *to = malloc(sizeof(int) * (size_t)(3 * nb + 1));
  if (!to) nnc_ir_bug("codegen: out of memory");
  renaming r = {p, to, to + nb, to + 2 * nb, 0, 0};
  for (int i = 0; i < 2 * nb; i++)
    to[i] = -1;
  /* Kernels in the order the backends emit them (graph by graph), each
   * compared with the first kernels of their kinds before it. */
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    for (int i = 0; gs[g] && i < gs[g]->n; i++) {
      nnc_kernel *k = gs[g]->k[i];
      if (!candidate(k)) continue;
      for (int h = 0; h <= g && !k->twin_of; h++)
        for (int j = 0; gs[h] && j < (h == g ? i : gs[h]->n) && !k->twin_of; j++) {
          nnc_kernel *first = gs[h]->k[j];
          if (!candidate(first)) continue;
          r.nadded = 0;
          r.budget = 1L << 16;
          if (twins(&r, first, k)) {
            k->twin_of = first;
            first->has_twins = true;
            found++;
          }
          for (int a = 0; a < r.nadded; a++) { /* the next comparison starts afresh */
            r.from[r.to[r.added[a]]] = -1;
            r.to[r.added[a]] = -1;
          }
        }
    }
  free(to);
  return found;
}
