/* lower_reduce.c: kernels for SUM, RMAX and ARGMAX. The operand's
 * expression is generated inside the reduction's loops; every output
 * element adds (or compares) its terms in a fixed order whatever the
 * thread count, and the loop order is chosen so memory is read in order
 * (column sums, lane accumulators, plain scalar loops).
 */
#include "lower_internal.h"

/* A block of columns that divides n into at least 2 parts, or n. */
static int64_t column_block(int64_t n) {
  for (int64_t b = 256; b >= 16; b /= 2)
    if (n % b == 0 && n / b >= 2) return b;
  return n;
}

/* The coefficient of loop variable v in the i64 expression e, or
 * NOT_AFFINE when e is not affine in v. */
#define NOT_AFFINE INT64_MIN
static int64_t coef_of(const nnc_kexpr *e, int v) {
  switch (e->kind) {
  case NNC_KX_VAR: return e->var == v;
  case NNC_KX_CONST: return 0;
  case NNC_KX_BIN: {
    int64_t x = coef_of(e->a[0], v), y = coef_of(e->a[1], v);
    if (x == NOT_AFFINE || y == NOT_AFFINE) return NOT_AFFINE;
    if (e->op == NNC_K_ADD) return x + y;
    if (e->op == NNC_K_SUB) return x - y;
    if (x == 0 && y == 0) return 0;
    if (e->op != NNC_K_MUL) return NOT_AFFINE;
    if (e->a[1]->kind == NNC_KX_CONST) return x * e->a[1]->i;
    if (e->a[0]->kind == NNC_KX_CONST) return y * e->a[0]->i;
    return NOT_AFFINE;
  }
  case NNC_KX_SCALAR:
  case NNC_KX_LOAD:
  case NNC_KX_UN:
  case NNC_KX_SELECT:
  case NNC_KX_CAST:
  case NNC_KX_RAND: break;
  }
  for (int i = 0; i < 3; i++)
    if (e->a[i] && coef_of(e->a[i], v) != 0) return NOT_AFFINE;
  return 0;
}

/* Does value expression e load some buffer contiguously along v? */
static bool loads_along(const nnc_kexpr *e, int v) {
  if (!e || !e->reads_mem) return false;
  if (e->kind == NNC_KX_LOAD && coef_of(e->a[0], v) == 1) return true;
  for (int i = 0; i < 3; i++)
    if (loads_along(e->a[i], v)) return true;
  return false;
}

/* For a reduction over the innermost axis and others: a kept axis along
 * which the operand's memory is contiguous (a batch-norm sum over N, H, W
 * of a convolution's output, stored [N*H*W, C]), or -1. Reducing with that
 * axis innermost reads memory in order instead of striding through all of
 * it once per kept index. */
static int unit_stride_kept_axis(lower *L, const nnc_node *n) {
  const nnc_node *x = n->in[0];
  uint32_t axes = (uint32_t)n->attr[0];
  int r = x->shape.rank;
  if (r < 2 || !(axes & (1u << (r - 1)))) return -1;
  kgen G = {0};
  G.k = nnc_kernel_new(L->a, "probe");
  G.self = n;
  G.memo = nnc_arena_alloc(L->a, sizeof(memo *) * (size_t)(L->nn + 1));
  G.zero = nnc_kx_int(L->a, 0);
  nnc_kexpr *idx[NNC_MAX_RANK];
  int var[NNC_MAX_RANK];
  for (int d = 0; d < r; d++) {
    var[d] = nnc_kernel_var(G.k);
    idx[d] = nnc_kx_var(L->a, var[d]);
  }
  nnc_kexpr *e = nnc_lw_gen(L, &G, x, idx);
  if (loads_along(e, var[r - 1])) return -1; /* x - mean read in place: per-channel loads too */
  for (int d = 0; d < r - 1; d++)
    if (!(axes & (1u << d)) && loads_along(e, var[d])) return d;
  return -1;
}

/* Loops over the dims of shape xs outside the bit mask `skip` (outermost
 * first; the first one is split over threads unless k already is); sets
 * their coordinates in in_idx and out_idx; returns the body. */
static nnc_kblock *outer_loops(lower *L, nnc_kernel *k, const nnc_shape *xs, uint32_t skip,
                               nnc_kexpr **in_idx, nnc_kexpr **out_idx) {
  nnc_kblock *blk = &k->body;
  for (int d = 0; d < xs->rank; d++) {
    if (skip & (1u << d)) continue;
    int v = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, v, xs->dim[d]);
    in_idx[d] = out_idx[d] = nnc_kx_var(L->a, v);
    if (!k->split) {
      k->split = true;
      k->extent = xs->dim[d];
    }
  }
  return blk;
}

/* Loops over the kept dims of reduction n other than `skip` (-1: none). */
static nnc_kblock *kept_loops(lower *L, nnc_kernel *k, const nnc_node *n, int skip,
                              nnc_kexpr **in_idx, nnc_kexpr **out_idx) {
  uint32_t mask = (uint32_t)n->attr[0] | (skip >= 0 ? 1u << skip : 0);
  return outer_loops(L, k, &n->in[0]->shape, mask, in_idx, out_idx);
}

/* Loops over the reduced dims of n other than `skip` inside blk, in
 * ascending order; sets their coordinates in in_idx; returns the body. */
static nnc_kblock *reduced_loops(lower *L, nnc_kernel *k, const nnc_node *n, int skip,
                                 nnc_kblock *blk, nnc_kexpr **in_idx) {
  const nnc_shape *xs = &n->in[0]->shape;
  uint32_t axes = (uint32_t)n->attr[0];
  for (int d = 0; d < xs->rank; d++) {
    if (d == skip || !(axes & (1u << d))) continue;
    int v = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, v, xs->dim[d]);
    in_idx[d] = nnc_kx_var(L->a, v);
  }
  return blk;
}

/* Whether a reduction's operand x is a reshape computed in the reduction's
 * kernel in place of a view of a stored node (reshape_into_reduction):
 * its terms are then added exactly as the stored ones would be, rounded
 * first, not contracted with the add. */
static bool inlined_view(const lower *L, const nnc_node *x) {
  return x->op == NNC_OP_RESHAPE && L->st[x->id] == ST_INLINE;
}

/* sum / rmax keeping axis col innermost (a column sum such as a bias
 * gradient): the output row accumulates in memory, reduced dims outside
 * the contiguous column loop, so the inner loop is unit-stride and every
 * element still adds its terms in the order of the reduced dims. Threads
 * split over the outer kept dims, or over blocks of columns. */
static void kernel_reduce_columns(lower *L, const nnc_node *n, int col) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, n->op == NNC_OP_SUM ? "colsum" : "colmax", n);
  const nnc_node *x = n->in[0];
  int r = x->shape.rank, last = col;
  uint32_t axes = (uint32_t)n->attr[0];
  int64_t N = x->shape.dim[last];
  nnc_kexpr *in_idx[NNC_MAX_RANK], *out_idx[NNC_MAX_RANK];
  nnc_kblock *blk = kept_loops(L, k, n, last, in_idx, out_idx);
  nnc_kexpr *col0 = nnc_kx_int(a, 0);
  int64_t B = N;
  if (!k->split && (B = column_block(N)) < N) {
    int vb = nnc_kernel_var(k);
    blk = nnc_kb_loop(a, blk, vb, N / B);
    col0 = nnc_kx_imul(a, nnc_kx_var(a, vb), B);
    k->split = true;
    k->extent = N / B;
  }
  nnc_kt t = nnc_kt_of(n->dtype);
  bool is_sum = n->op == NNC_OP_SUM;
  int vj = nnc_kernel_var(k);
  nnc_kexpr *j = nnc_kx_iadd(a, col0, nnc_kx_var(a, vj));
  in_idx[last] = out_idx[last] = j;
  for (int d = 0; d < r; d++)
    if (axes & (1u << d)) out_idx[d] = G.zero;
  nnc_kexpr *at = nnc_lw_linear(L, out_idx, &n->shape);
  int out = L->buf[n->id];
  nnc_kb_store(a, nnc_kb_loop(a, blk, vj, B), out, at,
               nnc_kx_const(a, t, is_sum ? 0.0 : -__builtin_inf()));
  nnc_kblock *inner = nnc_kb_loop(a, reduced_loops(L, k, n, last, blk, in_idx), vj, B);
  nnc_kexpr *e = nnc_lw_gen(L, &G, x, in_idx);
  nnc_kexpr *acc = nnc_kx_load(a, L->p, out, at);
  nnc_kop op = is_sum ? NNC_K_ADD : NNC_K_MAX;
  nnc_kb_store(a, inner, out, at,
               inlined_view(L, x) ? nnc_kx_bin_exact(a, op, acc, e) : nnc_kx_bin(a, op, acc, e));
  k->work = (double)nnc_shape_numel(&x->shape) * nnc_lw_expr_cost(e) * 2;
  nnc_lw_add_kernel(L, k);
}

/* Whether a lane reduction whose first kept axis is f (split over
 * threads) loops over the other axes in memory order: where a reduced
 * axis comes before another kept axis (batch norm's sums over
 * [G, N/G, C, H, W]: the images before the channels), the kept-axes-first
 * order reads one plane (3 KB for 28x28) and jumps an image ahead, so
 * memory order pays while the lanes of one split index stay in L1. Each
 * lane adds its terms in the same order either way. */
static bool lanes_in_memory_order(const nnc_node *n, int f, int nm) {
  const nnc_shape *xs = &n->in[0]->shape;
  uint32_t axes = (uint32_t)n->attr[0];
  int last = xs->rank - 1;
  if (f < 0) return false;
  bool reduced_before = false, kept_after = false;
  for (int d = f + 1; d < last; d++) {
    if (axes & (1u << d))
      reduced_before = true;
    else
      kept_after |= reduced_before;
  }
  int64_t lanes = nnc_shape_numel(&n->shape) / xs->dim[f] * xs->dim[last] * nm;
  return kept_after && lanes * 4 <= 16384;
}

/* sum / rmax over the innermost axis (length W) and others, e.g. a
 * batch-norm sum over N, H, W of an NCHW tensor: W lane accumulators per
 * output element in a scratch buffer, added to with a unit-stride vector
 * loop for every index of the other reduced dims, then reduced in lane
 * order. Each output element's order is fixed (per lane over the outer
 * reduced dims ascending, then the lanes ascending); threads split over
 * the kept dims, each with its own lanes. The other axes loop kept ones
 * first, or in memory order (lanes_in_memory_order). Where n has a twin
 * (lanes_with, nnc_lw_match_lane_twins), the same loops take the twin's
 * sum beside n's, each in lanes of its own and in the same order as its
 * own kernel would: one pass over the memory both read. */
static void kernel_reduce_lanes(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  const nnc_node *m[2] = {n, L->lanes_with[n->id]};
  int nm = m[1] ? 2 : 1;
  nnc_kernel *k = nnc_lw_new_kernel(
      L, &G, n->op == NNC_OP_SUM ? (nm == 2 ? "lanesum2" : "lanesum") : "lanemax", n);
  const nnc_node *x = n->in[0];
  int r = x->shape.rank, last = r - 1;
  uint32_t axes = (uint32_t)n->attr[0];
  int64_t W = x->shape.dim[last];
  nnc_kt t = nnc_kt_of(n->dtype);
  bool is_sum = n->op == NNC_OP_SUM;
  nnc_kop op = is_sum ? NNC_K_ADD : NNC_K_MAX;
  nnc_kexpr *init = nnc_kx_const(a, t, is_sum ? 0.0 : -__builtin_inf());
  int lanes[2];
  for (int i = 0; i < nm; i++)
    lanes[i] = nnc_kprog_add_buf(L->p, NNC_KBUF_TEMP, 0, t, nnc_shape_numel(&n->shape) * W,
                                 nnc_arena_printf(a, "%s.lanes.%d", L->g->name, m[i]->id));
  nnc_kexpr *in_idx[NNC_MAX_RANK], *out_idx[NNC_MAX_RANK];
  for (int d = 0; d < r; d++)
    out_idx[d] = G.zero;
  int vj = nnc_kernel_var(k);
  nnc_kexpr *j = nnc_kx_var(a, vj);
  in_idx[last] = j;
  int f = -1; /* the first kept axis, the one split over threads */
  for (int d = 0; d < last && f < 0; d++)
    if (!(axes & (1u << d))) f = d;
  nnc_kblock *blk, *inner, *b0;
  bool mem_order = lanes_in_memory_order(n, f, nm);
  if (mem_order) {
    /* the split axis outermost, then every other axis in memory order:
     * the lanes' init, the terms, and the lanes' sums each in a loop nest
     * of their own over the kept axes (the same variables) */
    int var[NNC_MAX_RANK];
    for (int d = 0; d < last; d++)
      var[d] = nnc_kernel_var(k);
    blk = nnc_kb_loop(a, &k->body, var[f], x->shape.dim[f]);
    k->split = true;
    k->extent = x->shape.dim[f];
    for (int d = 0; d < last; d++) {
      in_idx[d] = nnc_kx_var(a, var[d]);
      if (!(axes & (1u << d))) out_idx[d] = in_idx[d];
    }
    nnc_kblock *init_at = blk, *sums_at;
    for (int d = 0; d < last; d++)
      if (d != f && !(axes & (1u << d))) init_at = nnc_kb_loop(a, init_at, var[d], x->shape.dim[d]);
    b0 = nnc_kb_loop(a, init_at, vj, W);
    inner = blk;
    for (int d = 0; d < last; d++)
      if (d != f) inner = nnc_kb_loop(a, inner, var[d], x->shape.dim[d]);
    inner = nnc_kb_loop(a, inner, vj, W);
    sums_at = blk;
    for (int d = 0; d < last; d++)
      if (d != f && !(axes & (1u << d))) sums_at = nnc_kb_loop(a, sums_at, var[d], x->shape.dim[d]);
    blk = sums_at;
  } else {
    blk = kept_loops(L, k, n, last, in_idx, out_idx);
    b0 = nnc_kb_loop(a, blk, vj, W);
    inner = nnc_kb_loop(a, reduced_loops(L, k, n, last, blk, in_idx), vj, W);
  }
  nnc_kexpr *at = nnc_lw_linear(L, out_idx, &n->shape);
  nnc_kexpr *lane = nnc_kx_iadd(a, nnc_kx_imul(a, at, W), j);
  for (int i = 0; i < nm; i++)
    nnc_kb_store(a, b0, lanes[i], lane, init);
  double work = 0;
  for (int i = 0; i < nm; i++) {
    const nnc_node *xi = m[i]->in[0];
    nnc_kexpr *e = nnc_lw_gen(L, &G, xi, in_idx);
    nnc_kexpr *lane_v = nnc_kx_load(a, L->p, lanes[i], lane);
    nnc_kb_store(a, inner, lanes[i], lane,
                 inlined_view(L, xi) ? nnc_kx_bin_exact(a, op, lane_v, e)
                                     : nnc_kx_bin(a, op, lane_v, e));
    work += (double)nnc_shape_numel(&xi->shape) * nnc_lw_expr_cost(e) * 2;
  }
  /* the lanes' sum: in memory order its loop sits in a loop over the
   * channels of its own, where LLVM's fast-math reassociated it otherwise
   * than in the kept-axes-first nest; exact adds fix its order (lane 0
   * first) whatever the surroundings */
  for (int i = 0; i < nm; i++) {
    int acc = nnc_kernel_scalar(a, k, t);
    nnc_kb_set(a, blk, acc, init);
    nnc_kb_set(a, nnc_kb_loop(a, blk, vj, W), acc,
               (mem_order ? nnc_kx_bin_exact : nnc_kx_bin)(a, op, nnc_kx_scalar(a, k, acc),
                                                           nnc_kx_load(a, L->p, lanes[i], lane)));
    nnc_kb_store(a, blk, L->buf[m[i]->id], at, nnc_kx_scalar(a, k, acc));
  }
  k->work = work;
  nnc_lw_add_kernel(L, k);
}

bool nnc_lw_reduces_in_lanes(const nnc_node *n) {
  const nnc_node *x = n->in[0];
  uint32_t axes = (uint32_t)n->attr[0];
  int r = x->shape.rank;
  /* lanes pay when the innermost axis fills a vector and other axes are
   * reduced too (else the scalar loop is as good) */
  return r >= 2 && (axes & (1u << (r - 1))) && (axes & ((1u << (r - 1)) - 1)) &&
         x->shape.dim[r - 1] >= 8 && nnc_kt_is_float(nnc_kt_of(n->dtype));
}

/* Which kernel sum / rmax n gets; *col: the kept axis a column kernel
 * keeps innermost. */
typedef enum reduce_path { BY_WINDOW, BY_COLUMNS, BY_LANES, BY_SCALAR } reduce_path;
static reduce_path path_of(lower *L, const nnc_node *n, int *col) {
  const nnc_node *x0 = n->in[0];
  if (x0->op == NNC_OP_IM2COL && L->st[x0->id] == ST_INLINE) return BY_WINDOW;
  uint32_t axes0 = (uint32_t)n->attr[0];
  int r0 = x0->shape.rank;
  *col = r0 - 1;
  if (r0 >= 2 && !(axes0 & (1u << (r0 - 1))) && (axes0 & ((1u << (r0 - 1)) - 1))) return BY_COLUMNS;
  if ((*col = unit_stride_kept_axis(L, n)) >= 0) return BY_COLUMNS;
  return nnc_lw_reduces_in_lanes(n) ? BY_LANES : BY_SCALAR;
}

/* Whether the stored nodes (kernels and leaves) that e reads, through
 * inlined nodes and views, are all computed before node id `at`'s kernel. */
static bool ready_before(const lower *L, const nnc_node *e, int at) {
  switch (L->st[e->id]) {
  case ST_LEAF: return true;
  case ST_KERNEL: return e->id < at;
  case ST_INLINE:
  case ST_VIEW:
    for (int i = 0; i < e->nin; i++)
      if (!ready_before(L, e->in[i], at)) return false;
    return true;
  case ST_DEAD:
  case ST_ABSORBED: break;
  }
  return false;
}

/* Whether e reads stored node s, through inlined nodes and views. */
static bool reads_stored(const lower *L, const nnc_node *e, const nnc_node *s) {
  if (e == s) return true;
  if (L->st[e->id] != ST_INLINE && L->st[e->id] != ST_VIEW) return false;
  for (int i = 0; i < e->nin; i++)
    if (reads_stored(L, e->in[i], s)) return true;
  return false;
}

/* Whether e and f read a stored node (a kernel's or a leaf) in common. */
static bool share_a_read(const lower *L, const nnc_node *e, const nnc_node *f) {
  if (L->st[e->id] == ST_KERNEL || L->st[e->id] == ST_LEAF) return reads_stored(L, f, e);
  if (L->st[e->id] != ST_INLINE && L->st[e->id] != ST_VIEW) return false;
  for (int i = 0; i < e->nin; i++)
    if (share_a_read(L, e->in[i], f)) return true;
  return false;
}

/* A sum in lane accumulators that could take a twin's sum in its loops. */
static bool lane_sum(lower *L, const nnc_node *n) {
  int col;
  return L->live[n->id] && L->st[n->id] == ST_KERNEL && n->op == NNC_OP_SUM &&
         !L->saved_by[n->id] && !L->lanes_with[n->id] && path_of(L, n, &col) == BY_LANES;
}

/* Batch norm's backward takes sum(dz) and sum((x - mean) * dz) over the
 * same axes of the same shape, each in a lane kernel of its own reading
 * dz. Where two such sums a < b (node ids) read a stored node in common
 * and everything b reads is computed before a's kernel, a's kernel takes
 * b's sum too (lanes_with[a] = b; saved_by[b] = a: b gets no kernel of
 * its own), so dz is read once; each sum keeps its terms' order. */
void nnc_lw_match_lane_twins(lower *L) {
  for (int ia = 0; ia < L->nn; ia++) {
    const nnc_node *na = L->g->nodes[ia];
    if (!lane_sum(L, na)) continue;
    for (int ib = ia + 1; ib < L->nn; ib++) {
      const nnc_node *nb = L->g->nodes[ib];
      if (!lane_sum(L, nb) || nb->attr[0] != na->attr[0] || nb->dtype != na->dtype ||
          !nnc_shape_eq(&nb->in[0]->shape, &na->in[0]->shape) || !ready_before(L, nb->in[0], ia) ||
          !share_a_read(L, na->in[0], nb->in[0]))
        continue;
      L->lanes_with[ia] = nb;
      L->saved_by[ib] = na;
      break;
    }
  }
}

/* sum / rmax: by windows, columns or lanes where path_of says so; else
 * loops over the kept dims outside, the reduced dims inside, a scalar
 * accumulator, the operand's expression inlined in the loop. */
void nnc_lw_kernel_reduce(lower *L, const nnc_node *n) {
  int col;
  switch (path_of(L, n, &col)) {
  case BY_WINDOW: nnc_lw_kernel_window_reduce(L, n); return;
  case BY_COLUMNS: kernel_reduce_columns(L, n, col); return;
  case BY_LANES: kernel_reduce_lanes(L, n); return;
  case BY_SCALAR: break;
  }
  kgen G;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, nnc_op_name(n->op), n);
  const nnc_node *x = n->in[0];
  uint32_t axes = (uint32_t)n->attr[0];
  nnc_kexpr *in_idx[NNC_MAX_RANK], *out_idx[NNC_MAX_RANK];
  nnc_kblock *blk = kept_loops(L, k, n, -1, in_idx, out_idx);
  nnc_kt t = nnc_kt_of(n->dtype);
  int acc = nnc_kernel_scalar(L->a, k, t);
  bool is_sum = n->op == NNC_OP_SUM;
  nnc_kb_set(L->a, blk, acc, nnc_kx_const(L->a, t, is_sum ? 0.0 : -__builtin_inf()));
  nnc_kblock *inner = blk;
  for (int d = 0; d < x->shape.rank; d++) {
    if (!(axes & (1u << d))) continue;
    int v = nnc_kernel_var(k);
    inner = nnc_kb_loop(L->a, inner, v, x->shape.dim[d]);
    in_idx[d] = nnc_kx_var(L->a, v);
    out_idx[d] = G.zero;
  }
  nnc_kexpr *e = nnc_lw_gen(L, &G, x, in_idx);
  nnc_kb_set(L->a, inner, acc,
             nnc_kx_bin(L->a, is_sum ? NNC_K_ADD : NNC_K_MAX, nnc_kx_scalar(L->a, k, acc), e));
  nnc_kb_store(L->a, blk, L->buf[n->id], nnc_lw_linear(L, out_idx, &n->shape),
               nnc_kx_scalar(L->a, k, acc));
  k->work = (double)nnc_shape_numel(&x->shape) * nnc_lw_expr_cost(e) * 2;
  nnc_lw_add_kernel(L, k);
}

void nnc_lw_first_max_init(lower *L, nnc_kernel *k, nnc_kblock *b, nnc_kt t, nnc_kt ti, int *best,
                           int *at) {
  *best = nnc_kernel_scalar(L->a, k, t);
  *at = nnc_kernel_scalar(L->a, k, ti);
  nnc_kb_set(L->a, b, *best, nnc_kx_const(L->a, t, -__builtin_inf()));
  nnc_kb_set(L->a, b, *at, nnc_kx_const(L->a, ti, 0));
}

void nnc_lw_first_max_step(lower *L, nnc_kernel *k, nnc_kblock *b, int best, int at, nnc_kexpr *v,
                           nnc_kexpr *index) {
  nnc_arena *a = L->a;
  nnc_kexpr *better = nnc_kx_bin(a, NNC_K_GT, v, nnc_kx_scalar(a, k, best));
  nnc_kb_set(a, b, at, nnc_kx_select(a, better, index, nnc_kx_scalar(a, k, at)));
  nnc_kb_set(a, b, best, nnc_kx_select(a, better, v, nnc_kx_scalar(a, k, best)));
}

/* argmax along one axis; the first maximum wins (strict >). */
void nnc_lw_kernel_argmax(lower *L, const nnc_node *n) {
  kgen G;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, "argmax", n);
  const nnc_node *x = n->in[0];
  int axis = (int)n->attr[0];
  nnc_kexpr *in_idx[NNC_MAX_RANK], *out_idx[NNC_MAX_RANK];
  nnc_kblock *blk = outer_loops(L, k, &x->shape, 1u << axis, in_idx, out_idx);
  nnc_kt ti = nnc_kt_of(n->dtype);
  int best, at;
  nnc_lw_first_max_init(L, k, blk, nnc_kt_of(x->dtype), ti, &best, &at);
  int v = nnc_kernel_var(k);
  nnc_kblock *inner = nnc_kb_loop(L->a, blk, v, x->shape.dim[axis]);
  in_idx[axis] = nnc_kx_var(L->a, v);
  out_idx[axis] = G.zero;
  nnc_kexpr *e = nnc_lw_gen(L, &G, x, in_idx);
  nnc_lw_first_max_step(L, k, inner, best, at, e, nnc_kx_cast(L->a, in_idx[axis], ti));
  nnc_kb_store(L->a, blk, L->buf[n->id], nnc_lw_linear(L, out_idx, &n->shape),
               nnc_kx_scalar(L->a, k, at));
  k->work = (double)nnc_shape_numel(&x->shape) * 4;
  nnc_lw_add_kernel(L, k);
}
