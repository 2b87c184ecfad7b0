/* lower_conv_dw.c: a convolution's weight gradient as one direct kernel.
 *
 * A conv2d layer's backward (frontend/sema_layers.c, autodiff) computes
 * its weight gradient as the product
 *   dW [O, C*KH*KW] = reshape(transpose(dy, 0,2,3,1))ᵀ · im2col(x)
 * of the output gradient dy [N, O, OH, OW] in NHWC order and the input's
 * columns. Matched here (after match_epilogues, before deciding), the
 * product instead reads dy and x in NCHW (conv_dw_in[]): dy is stored by
 * its own kernel in its natural order, and the transpose and the columns
 * are made only for other readers (the input gradient's product, the
 * forward product). conv_dw.c emits the kernel (kernel.h nnc_kconv_dw).
 *
 * Matched: f32, stride 1, zero padding, KW <= 15, and either output rows
 * as long as input rows (lanes along the whole plane, at most
 * MAX_PLANE_VECTORS vectors) or rows of at most MAX_ROW_VECTORS vectors;
 * not with bf16 products or with update passes fused into products
 * (NNC_FUSE_UPDATES), which keep the product.
 * Taken where it saves a kernel (worth_it); NNC_CONV_DW=1 takes it
 * wherever it applies, NNC_CONV_DW=0 nowhere (for comparisons). The rule
 * reads nothing of the batch, so the rank graphs of data-parallel training
 * (a part of the batch, ir/chunk.c) choose as the full step does: the
 * same chunk sums, the same bits.
 */
#include <stdlib.h>
#include <string.h>

#include "lower_internal.h"

/* Vector registers an item may hold: its ob * khb * KW accumulators, the
 * khb * KW input vectors of one position and one output-gradient vector
 * at a time, within 31 of the 32. A whole plane's positions are unrolled
 * up to MAX_PLANE_VECTORS vectors; longer planes go row by row, rows of
 * at most MAX_ROW_VECTORS. */
enum { REGS = 31, MAX_PLANE_VECTORS = NNC_KCONV_DW_MAX_PLANE_VECTORS, MAX_ROW_VECTORS = 8 };
/* At most MAX_GROUP images per item in registers, their data within an
 * L1 data cache of L1_BYTES (32 KB: AMD Zen 4; Intel's are 48 KB). */
enum { MAX_GROUP = 4, L1_BYTES = 32 * 1024 };

/* The output gradient dy [N, O, OH, OW] under a product operand
 * reshape(transpose(dy, 0,2,3,1)) [N*OH*OW, O], or NULL. */
static const nnc_node *nchw_output_gradient(const nnc_node *a) {
  if (a->op != NNC_OP_RESHAPE || a->shape.rank != 2) return NULL;
  const nnc_node *t = a->in[0];
  if (t->op != NNC_OP_TRANSPOSE || t->shape.rank != 4 || t->attr[0] != 0 || t->attr[1] != 2 ||
      t->attr[2] != 3 || t->attr[3] != 1)
    return NULL;
  const nnc_node *dy = t->in[0];
  return dy->dtype == NNC_F32 ? dy : NULL;
}

/* The item's blocks: ob output channels (dividing O) and khb tap rows
 * (dividing KH) whose registers fit, with the most multiply-adds per
 * vector load (ob * khb * KW per ob + khb * KW), then the most
 * accumulators. */
static void choose_blocks(nnc_kconv_dw *d) {
  double best = 0;
  d->ob = d->khb = 1;
  for (int64_t khb = 1; khb <= d->KH; khb++)
    for (int64_t ob = 1; ob <= d->O; ob++) {
      int64_t acc = ob * khb * d->KW;
      if (d->KH % khb || d->O % ob || acc + khb * d->KW + 1 > REGS) continue;
      double per_load = (double)acc / (double)(ob + khb * d->KW) + 1e-6 * (double)acc;
      if (per_load > best) {
        best = per_load;
        d->ob = ob;
        d->khb = khb;
      }
    }
}

/* Images an item sums with its accumulators in registers: the most, up
 * to MAX_GROUP, whose data (ob output-gradient planes and one input
 * plane each) fit in L1_BYTES, so that the items after it (the other
 * blocks of tap rows, the next input channels) find the group's output
 * gradient in L1; at least one; dividing the images of a chunk.
 * fashion_cnn: conv 2 (8 planes of 14x14 and one) 4 images, 28 KB;
 * conv 1 (28x28) 1 image, 28 KB. The sums' order does not depend on it
 * (each lane adds image by image; between groups the accumulators wait
 * in the scratch buffer). */
static int64_t image_group(const nnc_kconv_dw *d) {
  int64_t per = d->N / d->chunks, bytes = 4 * (d->ob * d->OH * d->OW + d->H * d->W);
  int64_t g = MAX_GROUP < per ? MAX_GROUP : per;
  while (g > 1 && (g * bytes > L1_BYTES || per % g))
    g--;
  return g;
}

/* Whether the lanes may run along whole planes: an output row as long as
 * an input row, so a tap is one shift of the flat plane. */
static bool plane_fits(int64_t W, int64_t OH, int64_t OW, int vl) {
  return OW == W && (OH * OW + vl - 1) / vl <= MAX_PLANE_VECTORS;
}

/* Whether node n has a live reader other than `but` (through views). */
static bool read_otherwise(const lower *L, const nnc_node *n, const nnc_node *but) {
  for (int i = 0; i < L->nusers[n->id]; i++) {
    const nnc_node *u = L->users[n->id][i];
    if (u == but || !L->live[u->id] || nnc_lw_conv_absorbs(L, u)) continue;
    if (u->op != NNC_OP_RESHAPE || read_otherwise(L, u, but)) return true;
  }
  return false;
}

/* The cost rule. On fashion_cnn's conv2 the direct kernel took ~1.1 times
 * the product's time (docs/performance.md "Weight gradients without
 * columns"); it pays where it saves a pass: the columns, or dy's
 * transpose to NHWC, that no other kernel reads (conv1, whose input
 * gradient is not computed; any layer whose forward and input gradient
 * are direct too). NNC_CONV_DW=1 takes it wherever it applies. */
static bool worth_it(const lower *L, const nnc_node *mm, bool always) {
  return always || !read_otherwise(L, mm->in[1], mm) || !read_otherwise(L, mm->in[0]->in[0], mm);
}

/* Whether product mm is a weight gradient the direct kernel computes;
 * *dy and *x its NCHW operands. */
static bool matches(const lower *L, const nnc_node *mm, const nnc_node **dy, const nnc_node **x) {
  if (mm->op != NNC_OP_MATMUL || mm->dtype != NNC_F32 || !mm->attr[0] || mm->attr[1] ||
      L->final[mm->id] != mm)
    return false;
  const nnc_node *cols = mm->in[1];
  *dy = nchw_output_gradient(mm->in[0]);
  if (!*dy || cols->op != NNC_OP_IM2COL || cols->fattr != 0 || cols->dtype != NNC_F32) return false;
  *x = cols->in[0];
  int64_t KH = cols->attr[0], KW = cols->attr[1];
  if (cols->attr[2] != 1 || cols->attr[3] != 1 || 2 * KW + 1 > REGS) return false;
  const nnc_shape *ys = &(*dy)->shape, *xs = &(*x)->shape;
  int64_t OH = nnc_ir_window_out(xs->dim[2], KH, 1, cols->attr[4]);
  int64_t OW = nnc_ir_window_out(xs->dim[3], KW, 1, cols->attr[5]);
  int64_t chunks = mm->attr[2] > 1 ? mm->attr[2] : 1;
  int vl = nnc_cg_lanes(L->p->vector_width);
  return ys->dim[0] == xs->dim[0] && ys->dim[2] == OH && ys->dim[3] == OW &&
         (plane_fits(xs->dim[3], OH, OW, vl) || (OW + vl - 1) / vl <= MAX_ROW_VECTORS) &&
         xs->dim[0] % chunks == 0;
}

/* Removes user u from node n's readers. */
static void drop_user(lower *L, const nnc_node *n, const nnc_node *u) {
  int id = n->id, m = 0;
  for (int i = 0; i < L->nusers[id]; i++)
    if (L->users[id][i] != u) L->users[id][m++] = L->users[id][i];
  L->nusers[id] = m;
}

/* match_epilogues forced every product's operands into memory; an operand
 * the direct kernel no longer reads stays forced only for another product
 * that still does. */
static void unforce(lower *L, const nnc_node *n) {
  L->force[n->id] = false;
  for (int i = 0; i < L->nusers[n->id]; i++) {
    const nnc_node *u = L->users[n->id][i];
    if (u->op == NNC_OP_MATMUL && !L->conv_dw_in[u->id][0] && !nnc_lw_conv_absorbs(L, u))
      L->force[n->id] = true;
  }
}

/* Whether the direct kernel is on (NNC_CONV_DW, the program); *always:
 * NNC_CONV_DW=1. */
static bool enabled(const lower *L, bool *always) {
  const char *env = getenv("NNC_CONV_DW");
  *always = env && !strcmp(env, "1");
  return !(env && !strcmp(env, "0")) && !L->p->bf16 && !L->p->fuse_updates && L->p->use_gemm;
}

bool nnc_lw_conv_dw_takes(const lower *L, const nnc_node *mm) {
  bool always;
  const nnc_node *dy, *x;
  return enabled(L, &always) && L->live[mm->id] && matches(L, mm, &dy, &x) &&
         worth_it(L, mm, always);
}

void nnc_lw_match_conv_dw(lower *L) {
  for (int i = 0; i < L->nn; i++) {
    nnc_node *mm = L->g->nodes[i];
    const nnc_node *dy, *x;
    if (!nnc_lw_conv_dw_takes(L, mm)) continue;
    matches(L, mm, &dy, &x);
    L->conv_dw_in[i][0] = dy;
    L->conv_dw_in[i][1] = x;
    for (int k = 0; k < 2; k++) {
      drop_user(L, mm->in[k], mm);
      unforce(L, mm->in[k]);
    }
    nnc_lw_add_user(L, dy, mm);
    nnc_lw_add_user(L, x, mm);
    L->force[dy->id] = L->force[x->id] = true;
  }
}

int64_t nnc_kconv_dw_scratch(const nnc_kconv_dw *d) {
  int64_t taps = d->O * d->C * d->KH * d->KW; /* = items x accumulators */
  return taps * d->vl + d->chunks * taps;
}

void nnc_lw_kernel_conv_dw(lower *L, const nnc_node *n) {
  const nnc_node *dy = L->conv_dw_in[n->id][0], *x = L->conv_dw_in[n->id][1];
  const nnc_node *cols = n->in[1];
  if (L->trans[dy->id] || L->trans[x->id] || L->trans[n->id] || L->buf[dy->id] < 0 ||
      L->buf[x->id] < 0)
    nnc_ir_bug("codegen: a direct weight gradient's operands are not in NCHW memory");
  nnc_kconv_dw *d = nnc_arena_alloc(L->a, sizeof *d);
  *d = (nnc_kconv_dw){.N = x->shape.dim[0],
                      .C = x->shape.dim[1],
                      .H = x->shape.dim[2],
                      .W = x->shape.dim[3],
                      .O = dy->shape.dim[1],
                      .OH = dy->shape.dim[2],
                      .OW = dy->shape.dim[3],
                      .KH = cols->attr[0],
                      .KW = cols->attr[1],
                      .PH = cols->attr[4],
                      .PW = cols->attr[5],
                      .chunks = n->attr[2] > 1 ? n->attr[2] : 1,
                      .vl = nnc_cg_lanes(L->p->vector_width),
                      .dy_buf = L->buf[dy->id],
                      .x_buf = L->buf[x->id],
                      .dw_buf = L->buf[n->id]};
  choose_blocks(d);
  d->group = image_group(d);
  d->plane = plane_fits(d->W, d->OH, d->OW, d->vl);
  kgen G;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, "conv_dw", n);
  d->scratch_buf =
      nnc_kprog_add_buf(L->p, NNC_KBUF_TEMP, 0, NNC_KT_F32, nnc_kconv_dw_scratch(d),
                        nnc_arena_printf(L->a, "%s.%%%d.conv_dw_acc", L->g->name, n->id));
  k->conv_dw = d;
  k->split = true;
  k->extent = d->O / d->ob * d->C * (d->KH / d->khb);
  k->work = 2.0 * (double)(d->O * d->C * d->KH * d->KW) * (double)(d->N * d->OH * d->OW);
  k->label = nnc_arena_printf(L->a, "%s %lldx%lldx%lld direct", k->label, (long long)d->O,
                              (long long)(d->C * d->KH * d->KW), (long long)(d->N * d->OH * d->OW));
  nnc_lw_add_kernel(L, k);
}
