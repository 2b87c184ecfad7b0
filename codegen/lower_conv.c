/* lower_conv.c: stride-1 convolutions and their input gradients as direct
 * kernels (kernel.h's nnc_kconv, emitted by conv_direct.c), in place of the
 * chains the front end and autodiff build:
 *
 *   forward    transpose_0312(reshape(add(matmul(im2col(x), W^T), bias)))
 *              (NHWC product rows -> NCHW) becomes y = conv(x, W) + bias,
 *              written in NCHW by the transpose's kernel;
 *   input grad col2im(matmul(reshape(transpose_0231(dy)), W)) becomes
 *              dx = conv(dy, W with its channel axes swapped and its taps
 *              flipped), padding K-1-p, written by col2im's kernel.
 *
 * The nodes inside a chain are not computed (nnc_lw_decide makes them
 * dead); the columns and the NHWC gradient stay when something else reads
 * them (the weight gradient's product). Runs after the epilogue matcher and
 * before deciding. Only for trainers (kprog.direct_conv): deployed programs
 * keep the product, whose int8 form they quantise.
 */
#include "lower_internal.h"

/* Widest output row the kernel keeps in registers: 4 vectors of 16. The
 * cost rule (docs/performance.md): rows wider than that would leave too
 * few registers for output channels. */
enum { CONV_MAX_SEGS = 4, CONV_LANES = 16, CONV_ACCS = 24 };

static bool plain(lower *L, const nnc_node *n) {
  return L->out_kind[n->id] < 0 && !L->is_update[n->id] && L->nusers[n->id] == 1;
}

static bool is_perm(const nnc_node *t, int a, int b, int c, int d) {
  return t->op == NNC_OP_TRANSPOSE && t->shape.rank == 4 && t->attr[0] == a && t->attr[1] == b &&
         t->attr[2] == c && t->attr[3] == d;
}

/* Weights [O, C*KH*KW] straight from a parameter or input (through views). */
static bool plain_weights(const nnc_node *w, int64_t O, int64_t CKK) {
  if (w->shape.rank != 2 || w->shape.dim[0] != O || w->shape.dim[1] != CKK) return false;
  while (w->op == NNC_OP_RESHAPE)
    w = w->in[0];
  return w->op == NNC_OP_PARAM || w->op == NNC_OP_INPUT;
}

/* Whether a row of ow outputs fits the kernel's registers. */
static bool fits_kernel(int64_t ow) {
  return ow >= 1 && (ow + CONV_LANES - 1) / CONV_LANES <= CONV_MAX_SEGS;
}

static void claim(lower *L, nnc_lw_conv *c, const nnc_node *n) {
  L->conv[n->id] = c;
}

/* y = transpose_0312(reshape(add?(matmul(im2col(x), w, tb), bias))): t. */
static void match_forward(lower *L, const nnc_node *t) {
  if (!is_perm(t, 0, 3, 1, 2) || t->dtype != NNC_F32) return;
  const nnc_node *r = t->in[0];
  if (r->op != NNC_OP_RESHAPE || !plain(L, r) || r->shape.rank != 4) return;
  const nnc_node *e = r->in[0], *mm = e, *bias = NULL;
  if (!plain(L, e)) return;
  int64_t O = r->shape.dim[3];
  if (e->op == NNC_OP_ADD) {
    mm = e->in[0]->op == NNC_OP_MATMUL ? e->in[0] : e->in[1];
    const nnc_node *other = mm == e->in[0] ? e->in[1] : e->in[0];
    if (mm->op != NNC_OP_MATMUL || other == mm || !plain(L, mm) ||
        !nnc_shape_eq(&e->shape, &mm->shape))
      return;
    bias = nnc_lw_row_bias_source((nnc_node *)other, O);
    if (!bias) return;
  }
  if (mm->op != NNC_OP_MATMUL || mm->attr[0] || !mm->attr[1] || mm->attr[2] > 1) return;
  const nnc_node *cols = mm->in[0], *x = cols->in[0];
  if (cols->op != NNC_OP_IM2COL || cols->fattr != 0 || cols->attr[2] != 1 || cols->attr[3] != 1)
    return;
  if (x->shape.rank != 4 || x->dtype != NNC_F32) return;
  int64_t N = x->shape.dim[0], C = x->shape.dim[1], KH = cols->attr[0], KW = cols->attr[1];
  int64_t OH = r->shape.dim[1], OW = r->shape.dim[2];
  if (r->shape.dim[0] != N || mm->shape.dim[0] != N * OH * OW || mm->shape.dim[1] != O ||
      OH != nnc_ir_window_out(x->shape.dim[2], KH, 1, cols->attr[4]) ||
      OW != nnc_ir_window_out(x->shape.dim[3], KW, 1, cols->attr[5]) ||
      !plain_weights(mm->in[1], O, C * KH * KW) || !fits_kernel(OW))
    return;
  nnc_lw_conv *c = nnc_arena_alloc(L->a, sizeof *c);
  *c = (nnc_lw_conv){.out = t, .in = x, .w = mm->in[1], .bias = bias, .grad = false};
  c->geo = (nnc_kconv){.N = N,
                       .C = C,
                       .O = O,
                       .H = x->shape.dim[2],
                       .W = x->shape.dim[3],
                       .OH = OH,
                       .OW = OW,
                       .KH = KH,
                       .KW = KW,
                       .ph = cols->attr[4],
                       .pw = cols->attr[5],
                       .w0 = 0,
                       .wo = C * KH * KW,
                       .wi = KH * KW,
                       .wkh = KW,
                       .wkw = 1};
  claim(L, c, t);
  claim(L, c, r);
  claim(L, c, e);
  claim(L, c, mm);
  L->force[x->id] = L->force[mm->in[1]->id] = true;
  if (bias) L->force[bias->id] = true;
  if (L->nusers[cols->id] == 1) L->force[cols->id] = false; /* the epilogue matcher's */
}

/* Will the NHWC output gradient t = transpose_0231(dy), read through view a
 * by the input gradient's product mm, be stored channel-major (CNHW) for
 * other products anyway (the weight gradient's; nnc_lw_choose_layouts)?
 * Then its buffer holds dy's planes as they are, and the direct kernel
 * reads them there instead of dy itself in memory: dy stays computed
 * inside the transpose's kernel. */
static bool kept_channel_major(lower *L, const nnc_node *a, const nnc_node *mm) {
  const nnc_node *t = a->in[0];
  if (!plain(L, t) || L->out_kind[a->id] >= 0 || L->is_update[a->id] || L->nusers[a->id] < 2 ||
      a->shape.dim[1] != t->shape.dim[3])
    return false;
  for (int i = 0; i < L->nusers[a->id]; i++) {
    const nnc_node *u = L->users[a->id][i];
    if (u != mm && (u->op != NNC_OP_MATMUL || nnc_lw_conv_dw_takes(L, u))) return false;
  }
  return true;
}

/* dx = col2im(matmul(reshape(transpose_0231(dy)), w)): d. */
static void match_input_grad(lower *L, const nnc_node *d) {
  if (d->op != NNC_OP_COL2IM || d->dtype != NNC_F32 || d->attr[2] != 1 || d->attr[3] != 1) return;
  const nnc_node *mm = d->in[0];
  if (mm->op != NNC_OP_MATMUL || !plain(L, mm) || mm->attr[0] || mm->attr[1] || mm->attr[2] > 1 ||
      (L->final[mm->id] && L->final[mm->id] != mm))
    return;
  const nnc_node *a = mm->in[0];
  if (a->op != NNC_OP_RESHAPE || !is_perm(a->in[0], 0, 2, 3, 1)) return;
  const nnc_node *dy = a->in[0]->in[0];
  int64_t N = d->shape.dim[0], C = d->shape.dim[1], H = d->shape.dim[2], W = d->shape.dim[3];
  int64_t KH = d->attr[0], KW = d->attr[1], ph = d->attr[4], pw = d->attr[5];
  int64_t O = dy->shape.dim[1], OH = dy->shape.dim[2], OW = dy->shape.dim[3];
  if (dy->dtype != NNC_F32 || dy->shape.dim[0] != N || a->shape.dim[0] != N * OH * OW ||
      OH != nnc_ir_window_out(H, KH, 1, ph) || OW != nnc_ir_window_out(W, KW, 1, pw) ||
      !plain_weights(mm->in[1], O, C * KH * KW) || !fits_kernel(W))
    return;
  nnc_lw_conv *c = nnc_arena_alloc(L->a, sizeof *c);
  *c = (nnc_lw_conv){.out = d, .in = dy, .w = mm->in[1], .bias = NULL, .grad = true};
  /* dx[n,ci,h,w] = sum dy[n,co,h+p-kh,w+p-kw] W[co,ci,kh,kw]; with
   * kh' = KH-1-kh: dy[n,co,h+kh'-(KH-1-p),...] W[co,ci,KH-1-kh',KW-1-kw'] */
  c->geo = (nnc_kconv){.N = N,
                       .C = O,
                       .O = C,
                       .H = OH,
                       .W = OW,
                       .OH = H,
                       .OW = W,
                       .KH = KH,
                       .KW = KW,
                       .ph = KH - 1 - ph,
                       .pw = KW - 1 - pw,
                       .w0 = KH * KW - 1,
                       .wo = KH * KW,
                       .wi = C * KH * KW,
                       .wkh = -KW,
                       .wkw = -1};
  claim(L, c, d);
  claim(L, c, mm);
  L->force[mm->in[1]->id] = true;
  if (kept_channel_major(L, a, mm)) {
    c->in = a->in[0]; /* its buffer, CNHW */
    c->cnhw = true;
    return;
  }
  L->force[dy->id] = true;
  if (L->nusers[a->id] == 1) L->force[a->id] = false; /* the epilogue matcher's */
}

void nnc_lw_match_conv(lower *L) {
  if (!L->p->direct_conv || !L->p->use_gemm) return;
  /* the forwards first: whether the weight gradient is direct too
   * (lower_conv_dw.c) depends on whether the forward still reads the
   * columns, and the input gradient's source on that */
  for (int id = L->nn - 1; id >= 0; id--)
    if (L->live[id] && !L->conv[id] && L->g->nodes[id]->op == NNC_OP_TRANSPOSE)
      match_forward(L, L->g->nodes[id]);
  for (int id = L->nn - 1; id >= 0; id--)
    if (L->live[id] && !L->conv[id] && L->g->nodes[id]->op == NNC_OP_COL2IM)
      match_input_grad(L, L->g->nodes[id]);
}

bool nnc_lw_conv_absorbs(const lower *L, const nnc_node *n) {
  return L->conv[n->id] && L->conv[n->id]->out != n;
}

/* Rows per group: three where the row is one vector (each weight
 * broadcast then feeds three FMAs; 8 channels x 3 rows fill the 24
 * accumulators: ~8% faster than two rows of 12 channels on fashion_cnn's
 * conv 2, docs/performance.md), else one. */
static int64_t row_group(int64_t OH, int64_t OW) {
  if (OW > CONV_LANES) return 1;
  return OH >= 3 ? 3 : OH;
}

/* Output channels per block: the largest divisor of O that the
 * accumulators allow when it uses at least half of them (one block
 * size: one copy of the kernel's code, plain stores); else as many as
 * they allow, spread evenly, the last block then starting early and
 * overlapping the one before (conv_direct.c). */
static int64_t channel_block(int64_t O, int64_t OW, int64_t rows) {
  int64_t segs = (OW + CONV_LANES - 1) / CONV_LANES, most = CONV_ACCS / (segs * rows);
  for (int64_t ob = most < O ? most : O; 2 * ob >= most; ob--)
    if (O % ob == 0) return ob;
  int64_t blocks = (O + most - 1) / most;
  return (O + blocks - 1) / blocks;
}

void nnc_lw_kernel_conv(lower *L, const nnc_node *n) {
  const nnc_lw_conv *c = L->conv[n->id];
  kgen G;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, c->grad ? "conv_dx" : "conv", n);
  const nnc_node *reads[3] = {c->in, c->w, c->bias};
  for (int i = 0; i < 3; i++)
    if (reads[i] && (L->buf[reads[i]->id] < 0 || L->trans[reads[i]->id] != (i == 0 && c->cnhw)))
      nnc_ir_bug("codegen: a direct convolution's operand %%%d not in the layout expected",
                 reads[i]->id);
  k->is_conv = true;
  k->conv = c->geo;
  nnc_kconv *g = &k->conv;
  g->in_c = c->cnhw ? g->N * g->H * g->W : g->H * g->W; /* CNHW: [C, N, H, W] */
  g->in_n = c->cnhw ? g->H * g->W : g->C * g->in_c;
  g->out_c = g->OH * g->OW;
  g->out_n = g->O * g->out_c;
  g->rows = row_group(g->OH, g->OW);
  g->ob = channel_block(g->O, g->OW, g->rows);
  g->in_buf = L->buf[c->in->id];
  g->w_buf = L->buf[c->w->id];
  g->bias_buf = c->bias ? L->buf[c->bias->id] : -1;
  g->out_buf = L->buf[n->id];
  k->split = true;
  k->extent = g->N * ((g->O + g->ob - 1) / g->ob);
  k->work = 2.0 * (double)(g->N * g->O * g->OH * g->OW) * (double)(g->C * g->KH * g->KW);
  k->label = nnc_arena_printf(L->a, "%s %lldx%lldx%lldx%lld k%lldx%lld", k->label, (long long)g->N,
                              (long long)g->C, (long long)g->O, (long long)(g->OH * g->OW),
                              (long long)g->KH, (long long)g->KW);
  nnc_lw_add_kernel(L, k);
}
