/* lower_matmul.c: kernels for MATMUL. An f32 product becomes a call of a
 * shape-specialised gemm (the LLVM backend emits it; nnc_cg_gemm in
 * kernel.h says what it computes) with a bias add and ReLU folded into its
 * epilogue where lower_fuse.c matched them, split over threads by row
 * blocks or column blocks; anything else becomes loops in the kernel IR.
 */
#include "lower_internal.h"

/* The matmul node behind a (possibly absorbed) epilogue chain ending at n;
 * *mask: the tensor of ReLU's backward select ending the chain, or NULL
 * (lower_fuse.c match_relu_mask). */
static const nnc_node *chain_matmul(lower *L, const nnc_node *n, const nnc_node **add, bool *relu,
                                    const nnc_node **mask) {
  *add = NULL;
  *mask = NULL;
  if (n->op == NNC_OP_SELECT) {
    *mask = nnc_lw_substituted(L, n->in[0]->in[0]); /* as match_relu_mask found it */
    *relu = false;
    return n->in[1];
  }
  *relu = n->op == NNC_OP_RELU;
  const nnc_node *c = *relu ? n->in[0] : n;
  if (c->op == NNC_OP_ADD) {
    *add = c;
    const nnc_node *a0 = c->in[0];
    c = a0->op == NNC_OP_MATMUL && L->final[a0->id] == n ? a0 : c->in[1];
  }
  return c;
}

static int bias_buffer(lower *L, const nnc_node *add, const nnc_node *mm) {
  if (!add) return -1;
  nnc_node *other = add->in[0] == mm ? add->in[1] : add->in[0];
  nnc_node *src = nnc_lw_row_bias_source(other, mm->shape.dim[1]);
  return L->buf[src->id];
}

/* Matrix product with loops (f64, or when gemm.c is not linked). Each
 * element of C sums over k in ascending order. */
static void kernel_matmul_loops(lower *L, nnc_kernel *k, const nnc_node *mm, int a_buf, int b_buf,
                                int bias, bool relu, int c_buf) {
  nnc_arena *a = L->a;
  int64_t M = mm->shape.dim[0], N = mm->shape.dim[1];
  bool ta = mm->attr[0], tb = mm->attr[1];
  int64_t K = ta ? mm->in[0]->shape.dim[0] : mm->in[0]->shape.dim[1];
  nnc_kt t = nnc_kt_of(mm->dtype);
  int vi = nnc_kernel_var(k), vj = nnc_kernel_var(k), vk = nnc_kernel_var(k);
  nnc_kexpr *i = nnc_kx_var(a, vi), *j = nnc_kx_var(a, vj), *kk = nnc_kx_var(a, vk);
  nnc_kblock *bi = nnc_kb_loop(a, &k->body, vi, M);
  k->split = true;
  k->extent = M;
  nnc_kexpr *aik = nnc_kx_load(a, L->p, a_buf,
                               ta ? nnc_kx_iadd(a, nnc_kx_imul(a, kk, M), i)
                                  : nnc_kx_iadd(a, nnc_kx_imul(a, i, K), kk));
  nnc_kexpr *bkj = nnc_kx_load(a, L->p, b_buf,
                               tb ? nnc_kx_iadd(a, nnc_kx_imul(a, j, K), kk)
                                  : nnc_kx_iadd(a, nnc_kx_imul(a, kk, N), j));
  nnc_kexpr *cij = nnc_kx_iadd(a, nnc_kx_imul(a, i, N), j);
  nnc_kexpr *prod = nnc_kx_bin(a, NNC_K_MUL, aik, bkj);
  if (tb) { /* rows of B contiguous along k: a dot product per element */
    nnc_kblock *bj = nnc_kb_loop(a, bi, vj, N);
    int acc = nnc_kernel_scalar(a, k, t);
    nnc_kb_set(a, bj, acc, nnc_kx_const(a, t, 0));
    nnc_kblock *bk = nnc_kb_loop(a, bj, vk, K);
    nnc_kb_set(a, bk, acc, nnc_kx_bin(a, NNC_K_ADD, nnc_kx_scalar(a, k, acc), prod));
    nnc_kexpr *v = nnc_kx_scalar(a, k, acc);
    if (bias >= 0) v = nnc_kx_bin(a, NNC_K_ADD, v, nnc_kx_load(a, L->p, bias, j));
    if (relu) v = nnc_kx_un(a, NNC_K_RELU, v);
    nnc_kb_store(a, bj, c_buf, cij, v);
  } else { /* rows of C accumulate rows of B: vectorises along j */
    nnc_kblock *b0 = nnc_kb_loop(a, bi, vj, N);
    nnc_kb_store(a, b0, c_buf, cij, nnc_kx_const(a, t, 0));
    nnc_kblock *bk = nnc_kb_loop(a, bi, vk, K);
    nnc_kblock *bj = nnc_kb_loop(a, bk, vj, N);
    nnc_kb_store(a, bj, c_buf, cij,
                 nnc_kx_bin(a, NNC_K_ADD, nnc_kx_load(a, L->p, c_buf, cij), prod));
    if (bias >= 0 || relu) {
      nnc_kblock *be = nnc_kb_loop(a, bi, vj, N);
      nnc_kexpr *v = nnc_kx_load(a, L->p, c_buf, cij);
      if (bias >= 0) v = nnc_kx_bin(a, NNC_K_ADD, v, nnc_kx_load(a, L->p, bias, j));
      if (relu) v = nnc_kx_un(a, NNC_K_RELU, v);
      nnc_kb_store(a, be, c_buf, cij, v);
    }
  }
}

/* Columns per block when a product is better split over columns than
 * rows, else 0. A product whose B is a parameter (x.W^T forward, dy.W
 * backward) is split over C's columns. For x.W^T those are W's rows: each
 * thread then reads only its share of the weights, the share its part of
 * the update pass writes (split over the weight's first dim), so the
 * weights stay in that core's cache. For dy.W they are W's columns: each
 * thread reads half of every row, and the update pass prefetches the
 * rows the other core read for writing (lower_update.c,
 * mark_shared_writes). A product
 * with a long K whose B is larger than 4 MB and wider than C is tall (a
 * convolution's weight gradient dyᵀ.cols: 64x288x12544, B 14 MB) is split
 * over columns too: each thread then streams half of B instead of all of
 * it (conv2's 2.93 -> 2.46 ms per step). */
static const nnc_node *unviewed(const nnc_node *b) {
  while (b->op == NNC_OP_RESHAPE)
    b = b->in[0];
  return b;
}

static int64_t column_split(const nnc_node *b, int64_t M, int64_t N, int64_t K) {
  b = unviewed(b);
  bool big_b = K * N * 4 > (4 << 20) && N > M;
  if ((b->op != NNC_OP_PARAM && !big_b) || N < 2 * M / 4) return 0;
  for (int64_t parts = 2; parts <= 8; parts *= 2)
    if (N % parts == 0 && (N / parts) % 16 == 0 && N / parts <= 128) return N / parts;
  return N % 2 == 0 && (N / 2) % 16 == 0 ? N / 2 : 0;
}

/* Parts of K for an input gradient dy.W (B a parameter W stored as [K,
 * N], K its rows: the rows every other kernel of W's layer splits by,
 * x.W^T's columns, dW's rows and the update pass's rows) that
 * column_split would split over W's columns, cb > 0: 2, else 0 (the
 * column split stays). Split over columns, each thread reads half of
 * every row of W, half of which the other thread's update pass wrote
 * (docs/architecture.md, "Who owns a weight's rows"); split over K, each
 * thread reads only the rows it owns and the two partial products are
 * added by the next kernel, part 0 + part 1, in that order on any number
 * of threads (a different rounding from one sum over K). Plain products
 * and ReLU masks (no bias or ReLU), f32, C not transposed, no chunks, K
 * at least 128 (64 per part) and C's rows short (fashion_mlp's dh1 =
 * dh2.W2, 64x256; not fashion_cnn's 64x3136 gradient of its flattened
 * features, whose parts would stream 1.6 MB through the cache). */
static int64_t k_split_parts(lower *L, const nnc_node *n, const nnc_cg_gemm *g, const nnc_node *bn,
                             bool epilogue, int64_t cb) {
  if (!L->p->k_split || cb <= 0 || epilogue || g->trans_b || L->trans[n->id] || g->chunks > 1 ||
      unviewed(bn)->op != NNC_OP_PARAM)
    return 0;
  /* Rows of C of at most 4 KB: for a batch of 64 both parts fit in a
   * core's L2 with room to spare. Not a bound on M: a micro-batch's
   * product (docs/distributed.md) must be split as the batch's is. */
  return g->N <= 1024 && g->K >= 128 && g->K % 32 == 0 ? 2 : 0;
}

/* The kernel after a K-split product (k_split_parts): C = part 0 + part
 * 1, then the ReLU mask's select (mask > 0 ? C : 0) when mask >= 0. Split
 * over the blocks of cb columns the product itself would have been split
 * by, so that each thread writes the columns of C that the next product
 * (the weight gradient dyᵀ.x, split over dy's columns, the rows of the
 * layer's weight) reads on that thread; each block's rows are loops that
 * vectorise. */
static void kernel_part_sum(lower *L, const nnc_node *n, int parts, int64_t M, int64_t N,
                            int64_t cb, int mask, int c_buf) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, mask >= 0 ? "part_sum_relu_mask" : "part_sum", n);
  int vb = nnc_kernel_var(k), vi = nnc_kernel_var(k), vj = nnc_kernel_var(k);
  nnc_kblock *blk = nnc_kb_loop(a, &k->body, vb, N / cb);
  k->split = true;
  k->extent = N / cb;
  blk = nnc_kb_loop(a, nnc_kb_loop(a, blk, vi, M), vj, cb);
  nnc_kexpr *col = nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_var(a, vb), cb), nnc_kx_var(a, vj));
  nnc_kexpr *at = nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_var(a, vi), N), col);
  nnc_kexpr *v = nnc_kx_bin(a, NNC_K_ADD, nnc_kx_load(a, L->p, parts, at),
                            nnc_kx_load(a, L->p, parts, nnc_kx_iadd(a, at, nnc_kx_int(a, M * N))));
  if (mask >= 0) {
    nnc_kexpr *zero = nnc_kx_const(a, NNC_KT_F32, 0);
    v = nnc_kx_select(a, nnc_kx_bin(a, NNC_K_GT, nnc_kx_load(a, L->p, mask, at), zero), v, zero);
  }
  nnc_kb_store(a, blk, c_buf, at, v);
  /* Two threads for 64 x 256: each then writes the columns it reads next
   * (llvm.c runs a kernel on threads from PARALLEL_WORK). */
  k->work = (double)M * (double)N * 64;
  nnc_lw_add_kernel(L, k);
}

/* Operand x of a product as gemm reads it: whether it is stored transposed
 * relative to the product's [M,K] / [K,N] (the graph's flag, flipped when
 * the codegen stores x transposed, lower_fuse.c choose_layouts) and the
 * length of its rows as stored. */
static bool stored_trans(lower *L, const nnc_node *x, bool t) {
  return t != L->trans[x->id];
}

static int64_t stored_ld(lower *L, const nnc_node *x) {
  return L->trans[x->id] ? x->shape.dim[0] : x->shape.dim[1];
}

void nnc_lw_kernel_matmul(lower *L, const nnc_node *n) {
  kgen G;
  const nnc_node *add, *mask;
  bool relu;
  const nnc_node *mm = chain_matmul(L, n, &add, &relu, &mask);
  nnc_kernel *k = nnc_lw_new_kernel(L, &G,
                                    relu   ? "matmul_bias_relu"
                                    : add  ? "matmul_bias"
                                    : mask ? "matmul_relu_mask"
                                           : "matmul",
                                    n);
  int a_buf = L->buf[mm->in[0]->id], b_buf = L->buf[mm->in[1]->id], c_buf = L->buf[n->id];
  int bias = mask ? L->buf[mask->id] : bias_buffer(L, add, mm);
  if (mask && bias < 0) nnc_ir_bug("codegen: a ReLU mask without memory");
  int64_t M = mm->shape.dim[0], N = mm->shape.dim[1];
  bool ta = mm->attr[0], tb = mm->attr[1];
  int64_t K = ta ? mm->in[0]->shape.dim[0] : mm->in[0]->shape.dim[1];
  k->work = 2.0 * (double)M * (double)N * (double)K;
  k->label = nnc_arena_printf(L->a, "%s %lldx%lldx%lld%s%s", k->label, (long long)M, (long long)N,
                              (long long)K, ta ? " ta" : "", tb ? " tb" : "");
  if (L->p->use_gemm && mm->dtype == NNC_F32) {
    k->is_gemm = true;
    nnc_cg_gemm *g = &k->gemm;
    const nnc_node *an = mm->in[0], *bn = mm->in[1];
    g->M = M;
    g->N = N;
    g->K = K;
    g->trans_a = stored_trans(L, an, ta);
    g->trans_b = stored_trans(L, bn, tb);
    g->lda = stored_ld(L, an);
    g->ldb = stored_ld(L, bn);
    g->ldc = N;
    if (L->trans[n->id]) { /* C stored [N,M] (choose_layouts, no epilogue): C^T = B^T.A^T */
      if (bias >= 0 || relu) nnc_ir_bug("codegen: a transposed product with an epilogue");
      g->M = N;
      g->N = M;
      g->trans_a = !stored_trans(L, bn, tb);
      g->trans_b = !stored_trans(L, an, ta);
      g->lda = stored_ld(L, bn);
      g->ldb = stored_ld(L, an);
      g->ldc = M;
      const nnc_node *swap = an;
      an = bn;
      bn = swap;
      int sb = a_buf;
      a_buf = b_buf;
      b_buf = sb;
      k->label = nnc_arena_printf(L->a, "%s ct", k->label);
    }
    g->bias = bias >= 0 && !mask;
    g->act = mask ? NNC_CG_ACT_RELU_MASK : relu ? NNC_CG_ACT_RELU : NNC_CG_ACT_NONE;
    g->vector_width = L->p->vector_width;
    g->bf16 = L->p->bf16;
    g->chunks = mm->attr[2]; /* K over the batch in micro-batch chunks (ir/chunk.c) */
    k->row_block = nnc_cg_gemm_row_block(g);
    if (k->row_block < 1) k->row_block = 1;
    k->split = true;
    k->extent = (g->M + k->row_block - 1) / k->row_block;
    int64_t cb = column_split(bn, g->M, g->N, K);
    int64_t parts = k_split_parts(L, n, g, bn, relu || add, cb);
    if (parts > 1) {
      int c = c_buf;
      c_buf = nnc_kprog_add_buf(L->p, NNC_KBUF_TEMP, 0, NNC_KT_F32, parts * g->M * g->N,
                                nnc_arena_printf(L->a, "%s.parts.%d", L->g->name, n->id));
      g->K = K / parts;
      g->act = NNC_CG_ACT_NONE;
      g->all_rows = true;
      k->row_block = g->M;
      k->extent = parts;
      k->k_parts = parts;
      k->a_buf = a_buf;
      k->b_buf = b_buf;
      k->bias_buf = -1;
      k->c_buf = c_buf;
      k->label = nnc_arena_printf(L->a, "%s kparts %lld", k->label, (long long)parts);
      nnc_lw_add_kernel(L, k);
      kernel_part_sum(L, n, c_buf, g->M, g->N, cb, bias, c);
      return;
    }
    if (cb > 0) {
      k->extent = g->N / cb;
      g->N = cb;
      g->all_rows = true;
      k->col_block = cb;
    }
    k->a_buf = a_buf;
    k->b_buf = b_buf;
    k->bias_buf = bias;
    k->c_buf = c_buf;
  } else {
    if (L->trans[n->id] || L->trans[mm->in[0]->id] || L->trans[mm->in[1]->id])
      nnc_ir_bug("codegen: a transposed layout outside gemm");
    if (mask) nnc_ir_bug("codegen: a ReLU mask outside gemm");
    kernel_matmul_loops(L, k, mm, a_buf, b_buf, bias, relu, c_buf);
  }
  nnc_lw_add_kernel(L, k);
}
