/* plan.c: the static memory plan — one arena, every buffer at a fixed
 * offset, computed once at compile time.
 *
 * Layout, each buffer 64-byte aligned:
 *   persistent tensors: parameters (contiguous, table order), frozen
 *     weights, buffers, optimizer state;
 *   inputs (x, y, step, epoch, seed) and outputs (loss vector, loss,
 *     correct vector, prediction, learning rate), shared by both graphs;
 *   temporaries from temp_base: each graph's temporaries placed by lifetime
 *     (first to last kernel that touches them), first fit, reusing memory of
 *     buffers whose last use is over. The train and eval temporaries overlap
 *     (only one step runs at a time).
 * Views take their base buffer's offset. No buffer a kernel touches
 * overlaps another buffer the same kernel touches.
 */
#include <stdlib.h>
#include <string.h>

#include "kernel.h"

enum { ALIGN = 64 };

static int64_t bytes_of(const nnc_kbuf *b) {
  int64_t n = b->numel * nnc_kt_size(b->type);
  return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static int64_t place_fixed(nnc_kprog *p, int64_t off, nnc_kbuf_kind kind, int role) {
  for (int i = 0; i < p->nbufs; i++) {
    nnc_kbuf *b = &p->bufs[i];
    if (b->kind != kind) continue;
    if (kind == NNC_KBUF_TENSOR && (int)p->module->tensors[b->id].role != role) continue;
    b->offset = off;
    off += bytes_of(b);
  }
  return off;
}

typedef struct live_range {
  int buf, first, last;
  int64_t off, size;
} live_range;

static void touch(int *first, int *last, int b, int k) {
  if (first[b] < 0) first[b] = k;
  last[b] = k;
}

/* Places the temporaries of one graph from base; returns the bytes used. */
static int64_t place_temps(nnc_kprog *p, const nnc_kgraph *g, int64_t base) {
  int nb = p->nbufs;
  int *first = malloc(sizeof(int) * (size_t)nb), *last = malloc(sizeof(int) * (size_t)nb);
  live_range *placed = malloc(sizeof(live_range) * (size_t)nb);
  if (!first || !last || !placed) nnc_ir_bug("plan: out of memory");
  for (int i = 0; i < nb; i++)
    first[i] = last[i] = -1;
  for (int k = 0; k < g->n; k++) {
    const nnc_kernel *ker = g->k[k];
    for (int i = 0; i < ker->nreads; i++)
      touch(first, last, nnc_kbuf_base(p, ker->reads[i]), k);
    for (int i = 0; i < ker->nwrites; i++)
      touch(first, last, nnc_kbuf_base(p, ker->writes[i]), k);
  }
  int nplaced = 0;
  int64_t top = 0;
  for (int k = 0; k < g->n; k++) {
    for (int b = 0; b < nb; b++) {
      if (first[b] != k || p->bufs[b].kind != NNC_KBUF_TEMP) continue;
      int64_t size = bytes_of(&p->bufs[b]), off = 0;
      /* First fit among ranges still live at k (sorted by offset below). */
      for (int i = 0; i < nplaced; i++) {
        const live_range *r = &placed[i];
        if (r->last < k) continue;
        if (off + size <= r->off) break;
        if (r->off + r->size > off) off = r->off + r->size;
      }
      live_range nr = {b, k, last[b], off, size};
      int at = nplaced;
      while (at > 0 && placed[at - 1].off > off)
        at--;
      memmove(&placed[at + 1], &placed[at], sizeof(live_range) * (size_t)(nplaced - at));
      placed[at] = nr;
      nplaced++;
      p->bufs[b].offset = base + off;
      if (off + size > top) top = off + size;
    }
  }
  free(first);
  free(last);
  free(placed);
  return top;
}

void nnc_cg_plan(nnc_kprog *p) {
  int64_t off = 0;
  for (int role = NNC_ROLE_PARAM; role <= NNC_ROLE_GRAD; role++)
    off = place_fixed(p, off, NNC_KBUF_TENSOR, role);
  off = place_fixed(p, off, NNC_KBUF_INPUT, 0);
  off = place_fixed(p, off, NNC_KBUF_OUTPUT, 0);
  p->temp_base = off;
  int64_t temps = 0;
  if (p->has_train) {
    p->train.temp_bytes = place_temps(p, &p->train, off);
    temps = p->train.temp_bytes;
  }
  if (p->has_eval) {
    p->eval.temp_bytes = place_temps(p, &p->eval, off);
    if (p->eval.temp_bytes > temps) temps = p->eval.temp_bytes;
  }
  nnc_kgraph *dp[2] = {p->has_grad ? &p->grad : NULL, p->has_update ? &p->update : NULL};
  for (int i = 0; i < 2; i++)
    if (dp[i]) {
      dp[i]->temp_bytes = place_temps(p, dp[i], off);
      if (dp[i]->temp_bytes > temps) temps = dp[i]->temp_bytes;
    }
  /* Temporaries no kernel touches (none expected) still get a valid offset. */
  for (int i = 0; i < p->nbufs; i++)
    if (p->bufs[i].kind == NNC_KBUF_TEMP && p->bufs[i].offset < 0) p->bufs[i].offset = off;
  for (int i = 0; i < p->nbufs; i++)
    if (p->bufs[i].kind == NNC_KBUF_VIEW) p->bufs[i].offset = p->bufs[nnc_kbuf_base(p, i)].offset;
  p->arena_bytes = off + temps;
  if (p->arena_bytes == 0) p->arena_bytes = ALIGN;
}
