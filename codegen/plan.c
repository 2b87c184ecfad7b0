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

/* The first and last kernel of g touching each base buffer (-1: none). */
static void lifetimes(const nnc_kprog *p, const nnc_kgraph *g, int *first, int *last) {
  for (int i = 0; i < p->nbufs; i++)
    first[i] = last[i] = -1;
  for (int k = 0; k < g->n; k++) {
    const nnc_kernel *ker = g->k[k];
    for (int i = 0; i < ker->nreads; i++)
      touch(first, last, nnc_kbuf_base(p, ker->reads[i]), k);
    for (int i = 0; i < ker->nwrites; i++)
      touch(first, last, nnc_kbuf_base(p, ker->writes[i]), k);
  }
}

/* Inserts r into placed[0..*n), kept sorted by offset. */
static void insert_range(live_range *placed, int *n, live_range r) {
  int at = *n;
  while (at > 0 && placed[at - 1].off > r.off)
    at--;
  memmove(&placed[at + 1], &placed[at], sizeof(live_range) * (size_t)(*n - at));
  placed[at] = r;
  (*n)++;
}

/* One placement of the temporaries of one graph (offsets from 0 into
 * off[]), in order[0..n): each at the lowest offset free during its whole
 * lifetime (first fit among the ranges live during it, sorted by offset),
 * around the fixed ones; returns the bytes used. */
static int64_t place_in_order(const nnc_kprog *p, const int *first, const int *last,
                              const int64_t *fixed, const int *order, int n, int64_t *off,
                              live_range *placed) {
  int nplaced = 0;
  int64_t top = 0;
  for (int b = 0; fixed && b < p->nbufs; b++)
    if (fixed[b] >= 0 && first[b] >= 0) {
      live_range r = {b, first[b], last[b], fixed[b], bytes_of(&p->bufs[b])};
      insert_range(placed, &nplaced, r);
      off[b] = r.off;
      if (r.off + r.size > top) top = r.off + r.size;
    }
  for (int j = 0; j < n; j++) {
    int b = order[j];
    int64_t size = bytes_of(&p->bufs[b]), at = 0;
    for (int i = 0; i < nplaced; i++) {
      const live_range *r = &placed[i];
      if (r->last < first[b] || r->first > last[b]) continue;
      if (at + size <= r->off) break;
      if (r->off + r->size > at) at = r->off + r->size;
    }
    insert_range(placed, &nplaced, (live_range){b, first[b], last[b], at, size});
    off[b] = at;
    if (at + size > top) top = at + size;
  }
  return top;
}

/* Larger buffers first, then by first use and index. */
typedef struct size_key {
  int64_t size;
  int first, buf;
} size_key;

static int cmp_size_key(const void *x, const void *y) {
  const size_key *a = x, *b = y;
  if (a->size != b->size) return a->size > b->size ? -1 : 1;
  if (a->first != b->first) return a->first < b->first ? -1 : 1;
  return a->buf - b->buf;
}

/* Places the temporaries of one graph from base; returns the bytes used.
 * fixed (may be NULL): fixed[b] >= 0 is temporary b's offset from base,
 * decided before (share_kernels); the others are placed around them. Two
 * orders are tried, the one that needs less memory kept: by first use
 * (buffers of the same kernel by index), and largest first (a large
 * buffer placed late can find no gap its size and go on top). */
static int64_t place_temps(nnc_kprog *p, const nnc_kgraph *g, int64_t base, const int64_t *fixed) {
  int nb = p->nbufs, n = 0;
  int *first = malloc(sizeof(int) * (size_t)nb), *last = malloc(sizeof(int) * (size_t)nb);
  int *order = calloc((size_t)(nb + 1), sizeof(int));
  size_key *keys = malloc(sizeof(size_key) * (size_t)(nb + 1));
  int64_t *off[2] = {malloc(sizeof(int64_t) * (size_t)(nb + 1)),
                     malloc(sizeof(int64_t) * (size_t)(nb + 1))};
  live_range *placed = malloc(sizeof(live_range) * (size_t)(nb + 1));
  if (!first || !last || !order || !keys || !off[0] || !off[1] || !placed)
    nnc_ir_bug("plan: out of memory");
  lifetimes(p, g, first, last);
  for (int k = 0; k < g->n; k++)
    for (int b = 0; b < nb; b++)
      if (first[b] == k && p->bufs[b].kind == NNC_KBUF_TEMP && !(fixed && fixed[b] >= 0)) {
        order[n] = b;
        keys[n++] = (size_key){bytes_of(&p->bufs[b]), k, b};
      }
  int64_t top[2];
  top[0] = place_in_order(p, first, last, fixed, order, n, off[0], placed);
  qsort(keys, (size_t)n, sizeof(size_key), cmp_size_key);
  for (int j = 0; j < n; j++)
    order[j] = keys[j].buf;
  top[1] = place_in_order(p, first, last, fixed, order, n, off[1], placed);
  int best = top[1] < top[0];
  for (int b = 0; b < nb; b++)
    if (first[b] >= 0 && p->bufs[b].kind == NNC_KBUF_TEMP) p->bufs[b].offset = base + off[best][b];
  free(first);
  free(last);
  free(order);
  free(keys);
  free(off[0]);
  free(off[1]);
  free(placed);
  return top[best];
}

/* ---- kernels shared between graphs ----
 *
 * The eval graph repeats much of the train graph's forward pass, but
 * lowered on its own: its temporaries are other buffers, placed elsewhere,
 * and kernels bake their buffers' offsets in. share_kernels finds each
 * eval kernel that equals a train kernel up to a renaming of temporaries
 * (the same statements, expressions and products; persistent tensors,
 * inputs and outputs the same buffers; each eval temporary renamed to one
 * train temporary of the same size, one to one) and places the renamed
 * eval temporaries at their train twins' offsets, so the two kernels have
 * the same code and are compiled once (kernel.same_as). A renaming is
 * refused where two eval temporaries live at the same time and their twins
 * share memory (the train plan reused it). */

typedef struct share {
  const nnc_kprog *p;
  int *to, *from;          /* eval base -> train base, train base -> eval base; -1: none */
  int *added, nadded;      /* eval bases renamed by the kernel being compared */
  const int *first, *last; /* eval lifetimes */
  long budget;             /* expression nodes left to compare (DAGs compared as trees) */
} share;

/* (ctx: the share; nnc_kblock_same's same_buf) */
static bool same_buf(void *ctx, int be, int bt) {
  share *s = ctx;
  const nnc_kprog *p = s->p;
  if (be < 0 || bt < 0) return be == bt;
  if (p->bufs[be].type != p->bufs[bt].type) return false;
  int e = nnc_kbuf_base(p, be), t = nnc_kbuf_base(p, bt);
  if (p->bufs[e].kind != NNC_KBUF_TEMP || p->bufs[t].kind != NNC_KBUF_TEMP) return e == t;
  if (s->to[e] >= 0 || s->from[t] >= 0) return s->to[e] == t;
  if (bytes_of(&p->bufs[e]) != bytes_of(&p->bufs[t])) return false;
  s->to[e] = t;
  s->from[t] = e;
  s->added[s->nadded++] = e;
  return true;
}

static bool same_kernel(share *s, const nnc_kernel *x, const nnc_kernel *y) {
  if (x->split != y->split || x->extent != y->extent || x->nvars != y->nvars ||
      x->nscalars != y->nscalars || x->work != y->work || x->is_gemm != y->is_gemm ||
      x->is_conv != y->is_conv || x->nreads != y->nreads || x->nwrites != y->nwrites || x->update ||
      y->update || x->conv_dw || y->conv_dw)
    return false;
  for (int i = 0; i < x->nscalars; i++)
    if (x->scalar_type[i] != y->scalar_type[i]) return false;
  if (x->is_gemm)
    return nnc_cg_gemm_eq(&x->gemm, &y->gemm) && x->row_block == y->row_block &&
           x->col_block == y->col_block && x->k_parts == y->k_parts &&
           same_buf(s, x->a_buf, y->a_buf) && same_buf(s, x->b_buf, y->b_buf) &&
           same_buf(s, x->bias_buf, y->bias_buf) && same_buf(s, x->c_buf, y->c_buf);
  if (x->is_conv) {
    nnc_kconv a = x->conv, b = y->conv; /* the geometry equal, the buffers matched */
    bool bufs = same_buf(s, a.in_buf, b.in_buf) && same_buf(s, a.w_buf, b.w_buf) &&
                same_buf(s, a.bias_buf, b.bias_buf) && same_buf(s, a.out_buf, b.out_buf);
    a.in_buf = a.w_buf = a.bias_buf = a.out_buf = b.in_buf = b.w_buf = b.bias_buf = b.out_buf = 0;
    return bufs && !memcmp(&a, &b, sizeof a);
  }
  return nnc_kblock_same(&x->body, &y->body, false, same_buf, s, &s->budget);
}

/* Do the renamings just added put two eval temporaries that live at the
 * same time into overlapping memory? */
static bool conflicts(const share *s) {
  const nnc_kbuf *bufs = s->p->bufs;
  for (int i = 0; i < s->nadded; i++) {
    int e = s->added[i];
    int64_t e0 = bufs[s->to[e]].offset, e1 = e0 + bytes_of(&bufs[e]);
    for (int f = 0; f < s->p->nbufs; f++) {
      if (f == e || s->to[f] < 0 || s->first[f] > s->last[e] || s->first[e] > s->last[f]) continue;
      int64_t f0 = bufs[s->to[f]].offset, f1 = f0 + bytes_of(&bufs[f]);
      if (e0 < f1 && f0 < e1) return true;
    }
  }
  return false;
}

/* Sets same_as of g's kernels equal to one of from's (placed already);
 * returns the offsets from base that g's renamed temporaries take (-1:
 * none), for place_temps. */
static int64_t *share_kernels(nnc_kprog *p, const nnc_kgraph *from, nnc_kgraph *g, int64_t base) {
  int nb = p->nbufs;
  int *to = malloc(sizeof(int) * (size_t)nb), *back = malloc(sizeof(int) * (size_t)nb),
      *added = malloc(sizeof(int) * (size_t)nb), *first = malloc(sizeof(int) * (size_t)nb),
      *last = malloc(sizeof(int) * (size_t)nb);
  int64_t *fixed = malloc(sizeof(int64_t) * (size_t)nb);
  if (!to || !back || !added || !first || !last || !fixed) nnc_ir_bug("plan: out of memory");
  for (int i = 0; i < nb; i++)
    to[i] = back[i] = -1;
  lifetimes(p, g, first, last);
  share s = {p, to, back, added, 0, first, last, 0};
  for (int k = 0; k < g->n; k++)
    for (int j = 0; j < from->n && !g->k[k]->same_as; j++) {
      s.nadded = 0;
      s.budget = 1L << 20;
      if (same_kernel(&s, g->k[k], from->k[j]) && !conflicts(&s)) {
        g->k[k]->same_as = from->k[j];
        continue;
      }
      for (int i = 0; i < s.nadded; i++) { /* undo this kernel's renamings */
        back[to[added[i]]] = -1;
        to[added[i]] = -1;
      }
    }
  for (int i = 0; i < nb; i++)
    fixed[i] = to[i] >= 0 ? p->bufs[to[i]].offset - base : -1;
  free(to);
  free(back);
  free(added);
  free(first);
  free(last);
  return fixed;
}

/* Whether a step all-reduces (the rank steps of synchronised batch
 * statistics; any graph with an allreduce). */
static bool has_allreduce(const nnc_kprog *p) {
  const nnc_kgraph *gs[NNC_CG_NGRAPHS];
  nnc_cg_graphs(p, gs);
  for (int g = 0; g < NNC_CG_NGRAPHS; g++)
    for (int i = 0; gs[g] && i < gs[g]->n; i++)
      if (gs[g]->k[i]->allreduce) return true;
  return false;
}

void nnc_cg_plan(nnc_kprog *p) {
  int64_t off = 0;
  for (int role = NNC_ROLE_PARAM; role <= NNC_ROLE_GRAD; role++)
    off = place_fixed(p, off, NNC_KBUF_TENSOR, role);
  off = place_fixed(p, off, NNC_KBUF_INPUT, 0);
  off = place_fixed(p, off, NNC_KBUF_OUTPUT, 0);
  if (has_allreduce(p)) { /* the runtime's hook: a function and its context */
    p->comm_off = off;
    off += ALIGN;
  }
  p->temp_base = off;
  int64_t temps = 0;
  if (p->has_train) {
    p->train.temp_bytes = place_temps(p, &p->train, off, NULL);
    temps = p->train.temp_bytes;
  }
  if (p->has_eval) {
    int64_t *fixed = p->has_train ? share_kernels(p, &p->train, &p->eval, off) : NULL;
    p->eval.temp_bytes = place_temps(p, &p->eval, off, fixed);
    free(fixed);
    if (p->eval.temp_bytes > temps) temps = p->eval.temp_bytes;
  }
  nnc_kgraph *dp[3] = {p->has_grad ? &p->grad : NULL, p->has_update ? &p->update : NULL,
                       p->has_grad_half ? &p->grad_half : NULL};
  for (int i = 0; i < 3; i++)
    if (dp[i]) {
      dp[i]->temp_bytes = place_temps(p, dp[i], off, NULL);
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
