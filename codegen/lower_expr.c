/* lower_expr.c: a graph node's value as a kernel expression at a given
 * index (gen: loaded when the node has memory, else computed from its op
 * by the op's definition, with its inline operands generated in turn), the
 * kernel construction helpers every kernel uses, and the kernels made of
 * one expression: elementwise nodes stored for their readers, outputs,
 * copies.
 */
#include <stdio.h>
#include <string.h>

#include "lower_internal.h"
#include "nnc_hash.h"

nnc_kexpr *nnc_lw_at(lower *L, const nnc_node *n, nnc_kexpr **idx) {
  const nnc_shape *s = &n->shape;
  if (!L->trans[n->id]) return nnc_lw_linear(L, idx, s);
  /* last axis major: [dim[r-1], dim[0] * ... * dim[r-2]] */
  nnc_shape rest = *s;
  rest.rank--;
  int64_t rows = nnc_shape_numel(&rest);
  return nnc_kx_iadd(L->a, nnc_kx_imul(L->a, idx[s->rank - 1], rows), nnc_lw_linear(L, idx, &rest));
}

nnc_kexpr *nnc_lw_linear(lower *L, nnc_kexpr **idx, const nnc_shape *s) {
  nnc_kexpr *e = nnc_kx_int(L->a, 0);
  int64_t stride = 1;
  for (int d = s->rank - 1; d >= 0; d--) {
    e = nnc_kx_iadd(L->a, e, nnc_kx_imul(L->a, idx[d], stride));
    stride *= s->dim[d];
  }
  return e;
}

/* The index at which an operand of shape `in` is read when its broadcasting
 * consumer is at idx (ir.h invariant 3). */
static void bcast_index(kgen *G, nnc_kexpr **idx, const nnc_shape *out, const nnc_shape *in,
                        nnc_kexpr **res) {
  (void)out;
  for (int d = 0; d < in->rank; d++)
    res[d] = in->dim[d] == 1 ? G->zero : idx[d];
}

/* Splits a flat index into the coordinates of shape s. */
static void unflatten(lower *L, nnc_kexpr *flat, const nnc_shape *s, nnc_kexpr **res) {
  int64_t stride = 1;
  for (int d = s->rank - 1; d >= 0; d--) {
    nnc_kexpr *q = stride == 1 ? flat : nnc_kx_bin(L->a, NNC_K_DIV, flat, nnc_kx_int(L->a, stride));
    res[d] = d == 0 ? q : nnc_kx_bin(L->a, NNC_K_REM, q, nnc_kx_int(L->a, s->dim[d]));
    stride *= s->dim[d];
  }
}

/* The coordinates in shape in of the element at idx of a reshape to
 * shape out: the trailing axes the two share are the same coordinates;
 * only the axes before them go through a flat index (batch norm's
 * [N, C, H, W] -> [G, N/G, C, H, W] is one multiply-add, no division). */
static int common_tail(const nnc_shape *out, const nnc_shape *in) {
  int ro = out->rank, ri = in->rank, common = 0;
  while (common < ro && common < ri && out->dim[ro - 1 - common] == in->dim[ri - 1 - common])
    common++;
  return common;
}

bool nnc_lw_reshape_cheap(const nnc_node *n) {
  return n->in[0]->shape.rank - common_tail(&n->shape, &n->in[0]->shape) <= 1;
}

static void reshape_index(lower *L, nnc_kexpr **idx, const nnc_shape *out, const nnc_shape *in,
                          nnc_kexpr **res) {
  int ro = out->rank, ri = in->rank, common = common_tail(out, in);
  nnc_shape head_out = {ro - common, {0}}, head_in = {ri - common, {0}};
  memcpy(head_out.dim, out->dim, sizeof(int64_t) * (size_t)head_out.rank);
  memcpy(head_in.dim, in->dim, sizeof(int64_t) * (size_t)head_in.rank);
  if (head_in.rank > 0) unflatten(L, nnc_lw_linear(L, idx, &head_out), &head_in, res);
  for (int i = 0; i < common; i++)
    res[ri - 1 - i] = idx[ro - 1 - i];
}

nnc_kexpr *nnc_lw_fconst(lower *L, const nnc_node *n, double v) {
  return nnc_kx_const(L->a, nnc_kt_of(n->dtype), v);
}

static nnc_kop kop_of(nnc_op op) {
  nnc_kop k = nnc_lw_traits(op).kop;
  if (k == NNC_K_COUNT_) nnc_ir_bug("codegen: %s is not elementwise", nnc_op_name(op));
  return k;
}

/* Clamps an i64 index into [0, hi). */
nnc_kexpr *nnc_lw_clamp_index(lower *L, nnc_kexpr *i, int64_t hi) {
  nnc_kexpr *lo = nnc_kx_bin(L->a, NNC_K_MAX, i, nnc_kx_int(L->a, 0));
  return nnc_kx_bin(L->a, NNC_K_MIN, lo, nnc_kx_int(L->a, hi - 1));
}

/* An operand that is an integer in the graph's sense (i32, or a float
 * holding an integer) as an i64 index. */
nnc_kexpr *nnc_lw_as_index(lower *L, nnc_kexpr *e) {
  if (nnc_kt_is_float(e->type)) e = nnc_kx_un(L->a, NNC_K_FLOOR, e);
  return nnc_kx_cast(L->a, e, NNC_KT_I64);
}

/* Value of node n at idx, computed (not loaded) by the op's definition. */
static nnc_kexpr *gen_op(lower *L, kgen *G, const nnc_node *n, nnc_kexpr **idx) {
  nnc_arena *a = L->a;
  nnc_kexpr *sub[3][NNC_MAX_RANK];
  switch (n->op) {
  case NNC_OP_CONST: return nnc_lw_fconst(L, n, n->fattr);
  case NNC_OP_NEG:
  case NNC_OP_EXP:
  case NNC_OP_LOG:
  case NNC_OP_SQRT:
  case NNC_OP_RSQRT:
  case NNC_OP_RECIP:
  case NNC_OP_TANH:
  case NNC_OP_SIGMOID:
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR: return nnc_kx_un(a, kop_of(n->op), nnc_lw_gen(L, G, n->in[0], idx));
  /* one process: the identity (the ranks' sum is not lowered yet:
   * docs/distributed.md) */
  case NNC_OP_ALLREDUCE: return nnc_lw_gen(L, G, n->in[0], idx);
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ: {
    for (int i = 0; i < 2; i++)
      bcast_index(G, idx, &n->shape, &n->in[i]->shape, sub[i]);
    nnc_kexpr *x = nnc_lw_gen(L, G, n->in[0], sub[0]), *y = nnc_lw_gen(L, G, n->in[1], sub[1]);
    nnc_kexpr *r = nnc_kx_bin(a, kop_of(n->op), x, y);
    if (r->type == NNC_KT_BOOL)
      r = nnc_kx_select(a, r, nnc_lw_fconst(L, n, 1), nnc_lw_fconst(L, n, 0));
    return r;
  }
  case NNC_OP_SELECT: {
    for (int i = 0; i < 3; i++)
      bcast_index(G, idx, &n->shape, &n->in[i]->shape, sub[i]);
    nnc_kexpr *c = nnc_lw_gen(L, G, n->in[0], sub[0]);
    c = nnc_kx_bin(a, NNC_K_NE, c, nnc_kx_const(a, c->type, 0));
    return nnc_kx_select(a, c, nnc_lw_gen(L, G, n->in[1], sub[1]),
                         nnc_lw_gen(L, G, n->in[2], sub[2]));
  }
  case NNC_OP_CAST: return nnc_kx_cast(a, nnc_lw_gen(L, G, n->in[0], idx), nnc_kt_of(n->dtype));
  case NNC_OP_BROADCAST:
    bcast_index(G, idx, &n->shape, &n->in[0]->shape, sub[0]);
    return nnc_lw_gen(L, G, n->in[0], sub[0]);
  case NNC_OP_TRANSPOSE:
    for (int i = 0; i < n->shape.rank; i++)
      sub[0][n->attr[i]] = idx[i];
    return nnc_lw_gen(L, G, n->in[0], sub[0]);
  case NNC_OP_RESHAPE:
    reshape_index(L, idx, &n->shape, &n->in[0]->shape, sub[0]);
    return nnc_lw_gen(L, G, n->in[0], sub[0]);
  case NNC_OP_ONEHOT: {
    nnc_kexpr *label = nnc_lw_as_index(L, nnc_lw_gen(L, G, n->in[0], idx));
    nnc_kexpr *hit = nnc_kx_bin(a, NNC_K_EQ, label, idx[n->shape.rank - 1]);
    return nnc_kx_select(a, hit, nnc_lw_fconst(L, n, 1), nnc_lw_fconst(L, n, 0));
  }
  case NNC_OP_GATHER: {
    const nnc_node *table = n->in[0];
    nnc_kexpr *row = nnc_lw_clamp_index(L, nnc_lw_as_index(L, nnc_lw_gen(L, G, n->in[1], idx)),
                                        table->shape.dim[0]);
    nnc_kexpr *at =
        nnc_kx_iadd(a, nnc_kx_imul(a, row, table->shape.dim[1]), idx[n->shape.rank - 1]);
    return nnc_kx_load(a, L->p, L->buf[table->id], at);
  }
  case NNC_OP_RAND: {
    nnc_kexpr *seed = nnc_lw_gen(L, G, n->in[0], sub[0]); /* rank-0 operands: no index */
    nnc_kexpr *step = nnc_lw_gen(L, G, n->in[1], sub[1]);
    if (nnc_kt_is_float(seed->type)) seed = nnc_kx_cast(a, seed, NNC_KT_I64);
    if (nnc_kt_is_float(step->type)) {
      nnc_kexpr *pos = nnc_kx_bin(a, NNC_K_GT, step, nnc_kx_const(a, step->type, 0));
      step = nnc_kx_select(a, pos, nnc_kx_cast(a, step, NNC_KT_I64), nnc_kx_int(a, 0));
    } else {
      step = nnc_kx_cast(a, step, NNC_KT_I64);
    }
    if (n->attr[1] > 1) {
      /* chunked over the batch (ops.def): micro-batch g's seed and index.
       * g = at / per and at % per with per = b rows of dim 0 (b = dim 0 /
       * G) are idx[0] / b and the flat index with idx[0] % b: the same
       * integers, divided on the batch index alone, which the inner loops
       * hoist, so that they vectorise (a division per element kept the
       * mask's loop scalar). */
      int64_t b = n->shape.dim[0] / n->attr[1];
      nnc_kexpr *g = nnc_kx_bin(a, NNC_K_DIV, idx[0], nnc_kx_int(a, b));
      memcpy(sub[2], idx, sizeof(nnc_kexpr *) * (size_t)n->shape.rank);
      sub[2][0] = nnc_kx_bin(a, NNC_K_REM, idx[0], nnc_kx_int(a, b));
      idx = sub[2];
      if (seed->type != NNC_KT_I64) seed = nnc_kx_cast(a, seed, NNC_KT_I64);
      seed = nnc_kx_iadd(a, seed, nnc_kx_imul(a, g, NNC_HASH_MICRO_SEED)); /* mod 2^32: emit_rand */
    }
    nnc_kexpr *at = nnc_lw_linear(L, idx, &n->shape);
    return nnc_kx_rand(a, nnc_kt_of(n->dtype), seed, step, at, n->attr[0]);
  }
  case NNC_OP_INPUT:
  case NNC_OP_PARAM:
  case NNC_OP_SUM:
  case NNC_OP_RMAX:
  case NNC_OP_ARGMAX:
  case NNC_OP_MATMUL:
  case NNC_OP_IM2COL:
  case NNC_OP_COL2IM:
  case NNC_OP_SCATTER_ADD:
  case NNC_OP_COUNT_: break;
  }
  nnc_ir_bug("codegen: %s cannot be computed inline", nnc_op_name(n->op));
}

nnc_kexpr *nnc_lw_gen(lower *L, kgen *G, const nnc_node *n, nnc_kexpr **idx) {
  if (L->subst[n->id]) n = L->subst[n->id];
  int id = n->id;
  if (L->buf[id] >= 0 && n != G->self)
    return nnc_kx_load(L->a, L->p, L->buf[id], nnc_lw_at(L, n, idx));
  int rank = n->shape.rank;
  for (memo *m = G->memo[id]; m; m = m->next)
    if (m->rank == rank && !memcmp(m->idx, idx, sizeof(nnc_kexpr *) * (size_t)rank)) return m->val;
  nnc_kexpr *v = gen_op(L, G, n, idx);
  nnc_lw_memo_put(L, G, n, idx, v);
  return v;
}

void nnc_lw_memo_put(lower *L, kgen *G, const nnc_node *n, nnc_kexpr **idx, nnc_kexpr *v) {
  int rank = n->shape.rank;
  memo *m = nnc_arena_alloc(L->a, sizeof *m);
  m->rank = rank;
  memcpy(m->idx, idx, sizeof(nnc_kexpr *) * (size_t)rank);
  m->val = v;
  m->next = G->memo[n->id];
  G->memo[n->id] = m;
}

/* Where node n came from, for profiles: the front end names the nodes of
 * each layer ("mlp.dense1"); autodiff's and the optimizer's nodes have no
 * name, so a backward node is named after the nearest parameter, else the
 * nearest named node, among its operands (breadth first, a few levels). */
static const char *origin(lower *L, const nnc_node *n) {
  if (n->name) return nnc_arena_printf(L->a, "%s fwd", n->name);
  const nnc_node *level[64], *next[64];
  int nl = 1;
  level[0] = n;
  for (int depth = 0; depth < 4 && nl; depth++) {
    int nx = 0;
    const char *named = NULL;
    for (int i = 0; i < nl; i++)
      for (int j = 0; j < level[i]->nin; j++) {
        const nnc_node *u = level[i]->in[j];
        if (u->op == NNC_OP_PARAM)
          return nnc_arena_printf(L->a, "%s bwd", L->p->module->tensors[u->attr[0]].name);
        if (u->name && !named) named = u->name;
        if (nx < 64) next[nx++] = u;
      }
    if (named) return nnc_arena_printf(L->a, "%s bwd", named);
    memcpy(level, next, sizeof(next[0]) * (size_t)nx);
    nl = nx;
  }
  return "";
}

nnc_kernel *nnc_lw_new_kernel(lower *L, kgen *G, const char *what, const nnc_node *self) {
  char name[96];
  snprintf(name, sizeof name, "%s.k%d.%s", L->g->name, L->nmade, what);
  nnc_kernel *k = nnc_kernel_new(L->a, name);
  k->label =
      self ? nnc_arena_printf(L->a, "k%d %s %%%d %s", L->nmade, what, self->id, origin(L, self))
           : nnc_arena_printf(L->a, "k%d %s", L->nmade, what);
  L->nmade++;
  nnc_lw_gen_begin(L, G, k, self);
  return k;
}

void nnc_lw_gen_begin(lower *L, kgen *G, nnc_kernel *k, const nnc_node *self) {
  memset(G, 0, sizeof *G);
  G->k = k;
  G->self = self;
  G->memo = nnc_arena_alloc(L->a, sizeof(memo *) * (size_t)(L->nn + 1));
  G->zero = nnc_kx_int(L->a, 0);
}

void nnc_lw_add_kernel(lower *L, nnc_kernel *k) {
  nnc_kernel_finish(L->a, k);
  nnc_kgraph_add(L->a, L->kg, k);
}

/* A loop per dim of s; idx gets the loop variables; returns the body. The
 * outermost loop is the one split over threads. */
nnc_kblock *nnc_lw_nest(lower *L, nnc_kernel *k, const nnc_shape *s, nnc_kexpr **idx) {
  nnc_kblock *blk = &k->body;
  for (int d = 0; d < s->rank; d++) {
    int v = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, v, s->dim[d]);
    idx[d] = nnc_kx_var(L->a, v);
  }
  if (s->rank > 0) {
    k->split = true;
    k->extent = s->dim[0];
  }
  return blk;
}

double nnc_lw_expr_cost(const nnc_kexpr *e) {
  return e->kind == NNC_KX_UN && (e->op == NNC_K_EXP || e->op == NNC_K_LOG || e->op == NNC_K_TANH)
             ? 20
             : 2;
}

/* Loops for a transpose in the order of its operand's axes: the operand
 * is read contiguously and the writes stride. idx gets the output's
 * coordinates; returns the body. */
static nnc_kblock *nest_source_order(lower *L, nnc_kernel *k, const nnc_node *n, nnc_kexpr **idx) {
  const nnc_shape *src = &n->in[0]->shape;
  nnc_kexpr *v[NNC_MAX_RANK] = {0};
  nnc_kblock *blk = &k->body;
  for (int d = 0; d < src->rank; d++) {
    int var = nnc_kernel_var(k);
    blk = nnc_kb_loop(L->a, blk, var, src->dim[d]);
    v[d] = nnc_kx_var(L->a, var);
  }
  for (int i = 0; i < n->shape.rank; i++)
    idx[i] = v[n->attr[i]];
  k->split = true;
  k->extent = src->dim[0];
  return blk;
}

/* A transpose walked in output order reads its operand with a stride; the
 * cache lines it touches are reused by the next index of the operand's
 * innermost axis if they still fit in L1: lines = product of the output
 * extents inside that axis. When they do not (NHWC -> NCHW of a 28x28
 * image: 784 lines) but walking in the operand's order would keep its
 * strided writes to few lines (32 channels), walk in the operand's order. */
static bool transpose_in_source_order(const nnc_node *n) {
  enum { L1_LINES = 256 }; /* 16 KiB of 64-byte lines: a third of L1 */
  int r = n->shape.rank;
  if (n->op != NNC_OP_TRANSPOSE || r < 2 || n->attr[r - 1] == r - 1) return false;
  const nnc_shape *src = &n->in[0]->shape;
  int64_t out_lines = 1, src_lines = 1;
  int j = 0;
  while (n->attr[j] != r - 1)
    j++;
  for (int i = j + 1; i < r; i++)
    out_lines *= n->shape.dim[i];
  for (int i = (int)n->attr[r - 1] + 1; i < r; i++)
    src_lines *= src->dim[i];
  return out_lines > L1_LINES && src_lines <= L1_LINES;
}

/* Whether node n, computed inline in root's kernel (or loaded), is read
 * correctly at coordinates whose axes from `a` on are merged into the
 * last (nnc_lw_merged_nest). A node of ones on those axes is: its
 * coordinates there are 0 either way (bcast_index), the others are the
 * loops' own, whatever it is computed from (a per-channel vector through
 * a reshape). A node with root's dims there is when it is loaded, or
 * computed by elementwise ops (or a broadcast) from such nodes. */
static bool merges_from(lower *L, const nnc_node *root, const nnc_node *n, int a) {
  if (L->subst[n->id]) n = L->subst[n->id];
  const nnc_shape *s = &n->shape, *r = &root->shape;
  if (nnc_shape_numel(s) == 1) return true; /* read at index 0 */
  if (s->rank != r->rank) return false;
  bool full = true, ones = true;
  for (int d = a; d < r->rank; d++) {
    full &= s->dim[d] == r->dim[d];
    ones &= s->dim[d] == 1;
  }
  if (ones && n != root) return true;
  if (!full) return false;
  if (n != root && L->buf[n->id] >= 0) return !L->trans[n->id];
  if (n->op == NNC_OP_CONST) return true;
  bool each = nnc_lw_traits(n->op).elementwise && n->op != NNC_OP_ALLREDUCE;
  if (!each && n->op != NNC_OP_BROADCAST) return false;
  for (int i = 0; i < n->nin; i++)
    if (!merges_from(L, root, n->in[i], a)) return false;
  return true;
}

nnc_kblock *nnc_lw_merged_nest(lower *L, nnc_kernel *k, const nnc_shape *s, int a,
                               nnc_kexpr **idx) {
  nnc_shape nest = {a + 1, {0}};
  for (int d = 0; d < a; d++)
    nest.dim[d] = s->dim[d];
  nest.dim[a] = 1;
  for (int d = a; d < s->rank; d++)
    nest.dim[a] *= s->dim[d];
  nnc_kexpr *loop[NNC_MAX_RANK];
  nnc_kblock *blk = nnc_lw_nest(L, k, &nest, loop);
  for (int d = 0; d < s->rank; d++)
    idx[d] = d < a ? loop[d] : d == s->rank - 1 ? loop[a] : nnc_kx_int(L->a, 0);
  return blk;
}

/* An elementwise kernel over [N, C, H, W] loops over [N, C, H * W] when
 * every operand allows it (merges_from; per-channel operands [1, C, 1, 1]
 * do), or over [N, C * H * W]: fashion_cnn's batch norm backward over
 * rows of 28 floats otherwise vectorised 4 lanes wide. Axis 0 stays (the
 * threads split it). The first axis from which the rest merge, or 0. */
static int merge_axis(lower *L, const nnc_node *n) {
  /* A merged axis of one would be an operand's broadcast axis too, whose
   * coordinate bcast_index sets to 0: none. */
  const nnc_shape *s = &n->shape;
  int from = s->rank - 1;
  if (s->rank > 0 && s->dim[s->rank - 1] > 1)
    while (from > 1 && s->dim[from - 1] > 1)
      from--;
  for (int a = from; a < s->rank - 1; a++)
    if (merges_from(L, n, n, a)) return a;
  return 0;
}

void nnc_lw_kernel_elementwise(lower *L, const nnc_node *n) {
  if (L->unpool_of[n->id]) {
    nnc_lw_kernel_unpool_into(L, n);
    return;
  }
  kgen G;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, nnc_op_name(n->op), n);
  nnc_kexpr *idx[NNC_MAX_RANK];
  /* A transpose stored last axis major (choose_layouts) is contiguous on
   * both sides in its operand's order. */
  bool src_order = L->trans[n->id] ? n->op == NNC_OP_TRANSPOSE : transpose_in_source_order(n);
  int a = src_order || L->trans[n->id] ? 0 : merge_axis(L, n);
  nnc_kblock *blk = src_order ? nest_source_order(L, k, n, idx)
                    : a       ? nnc_lw_merged_nest(L, k, &n->shape, a, idx)
                              : nnc_lw_nest(L, k, &n->shape, idx);
  nnc_kexpr *v = nnc_lw_gen(L, &G, n, idx);
  nnc_kb_store(L->a, blk, L->buf[n->id], nnc_lw_at(L, n, idx), v);
  k->work = (double)nnc_shape_numel(&n->shape) * nnc_lw_expr_cost(v) * 4;
  nnc_lw_add_kernel(L, k);
}

/* dst[i] = src[i] over n elements. */
void nnc_lw_kernel_copy(lower *L, const char *what, int dst, int src, int64_t n) {
  kgen G;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, what, NULL);
  int v = nnc_kernel_var(k);
  nnc_kblock *blk = nnc_kb_loop(L->a, &k->body, v, n);
  k->split = true;
  k->extent = n;
  nnc_kexpr *i = nnc_kx_var(L->a, v);
  nnc_kb_store(L->a, blk, dst, i, nnc_kx_load(L->a, L->p, src, i));
  k->work = (double)n;
  nnc_lw_add_kernel(L, k);
}

/* Outputs whose node has no kernel writing the output slot directly. */
bool nnc_lw_output_copies(lower *L) {
  for (int o = 0; o < NNC_OUT_COUNT_; o++) {
    const nnc_node *n = L->g->outputs[o];
    if (!n) continue;
    int slot = nnc_lw_output_slot(L, (nnc_output_kind)o, n);
    if (slot < 0) return nnc_lw_fail(L, "the graphs disagree on an output's shape", n);
    if (L->buf[n->id] == slot) continue;
    kgen G;
    nnc_kernel *k = nnc_lw_new_kernel(L, &G, "output", NULL);
    nnc_kexpr *idx[NNC_MAX_RANK];
    nnc_kblock *blk = nnc_lw_nest(L, k, &n->shape, idx);
    nnc_kb_store(L->a, blk, slot, nnc_lw_linear(L, idx, &n->shape), nnc_lw_gen(L, &G, n, idx));
    k->work = (double)nnc_shape_numel(&n->shape);
    nnc_lw_add_kernel(L, k);
  }
  return true;
}
