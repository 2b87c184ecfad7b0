/* lower_window.c: kernels for the window and scatter ops: IM2COL (a gather
 * with padding), COL2IM (its adjoint, as a scatter-add over taps) and
 * SCATTER_ADD (the adjoint of GATHER). Each writes every output element
 * from one thread in a fixed order.
 */
#include "lower_internal.h"

/* im2col: one loop per coordinate of (n, oh, ow) x (c, kh, kw); reads in
 * the padding give the pad value. */
void nnc_lw_kernel_im2col(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, "im2col", n);
  const nnc_shape *xs = &n->in[0]->shape;
  int64_t N = xs->dim[0], C = xs->dim[1], H = xs->dim[2], W = xs->dim[3];
  int64_t KH = n->attr[0], KW = n->attr[1], SH = n->attr[2], SW = n->attr[3], PH = n->attr[4],
          PW = n->attr[5];
  int64_t OH = nnc_ir_window_out(H, KH, SH, PH), OW = nnc_ir_window_out(W, KW, SW, PW);
  int64_t ext[6] = {N, OH, OW, C, KH, KW};
  nnc_kexpr *v[6];
  nnc_kblock *blk = &k->body;
  for (int d = 0; d < 6; d++) {
    int var = nnc_kernel_var(k);
    blk = nnc_kb_loop(a, blk, var, ext[d]);
    v[d] = nnc_kx_var(a, var);
  }
  k->split = true;
  k->extent = N;
  nnc_kexpr *row =
      nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, v[0], OH), v[1]), OW), v[2]);
  nnc_kexpr *col =
      nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, v[3], KH), v[4]), KW), v[5]);
  nnc_kexpr *h = nnc_kx_iadd(a, nnc_kx_imul(a, v[1], SH), nnc_kx_iadd(a, v[4], nnc_kx_int(a, -PH)));
  nnc_kexpr *w = nnc_kx_iadd(a, nnc_kx_imul(a, v[2], SW), nnc_kx_iadd(a, v[5], nnc_kx_int(a, -PW)));
  nnc_kexpr *in = nnc_kx_bin(a, NNC_K_AND,
                             nnc_kx_bin(a, NNC_K_AND, nnc_kx_bin(a, NNC_K_GE, h, nnc_kx_int(a, 0)),
                                        nnc_kx_bin(a, NNC_K_LT, h, nnc_kx_int(a, H))),
                             nnc_kx_bin(a, NNC_K_AND, nnc_kx_bin(a, NNC_K_GE, w, nnc_kx_int(a, 0)),
                                        nnc_kx_bin(a, NNC_K_LT, w, nnc_kx_int(a, W))));
  nnc_kexpr *src = nnc_kx_iadd(
      a,
      nnc_kx_imul(a,
                  nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, v[0], C), v[3]), H),
                              nnc_lw_clamp_index(L, h, H)),
                  W),
      nnc_lw_clamp_index(L, w, W));
  nnc_kexpr *val = nnc_kx_select(a, in, nnc_kx_load(a, L->p, L->buf[n->in[0]->id], src),
                                 nnc_lw_fconst(L, n, n->fattr));
  nnc_kb_store(a, blk, L->buf[n->id], nnc_kx_iadd(a, nnc_kx_imul(a, row, C * KH * KW), col), val);
  k->work = (double)nnc_shape_numel(&n->shape) * 4;
  nnc_lw_add_kernel(L, k);
}

/* The window positions o in [lo, hi) whose tap k (o * S + k - P) lands
 * inside [0, size); hi <= lo when none does. */
static void tap_range(int64_t k, int64_t S, int64_t P, int64_t size, int64_t O, int64_t *lo,
                      int64_t *hi) {
  int64_t first = P > k ? (P - k + S - 1) / S : 0; /* ceil((P - k) / S) */
  int64_t last = (size - 1 + P - k) / S;           /* floor, may be negative */
  if (size - 1 + P - k < 0) last = -1;
  *lo = first;
  *hi = last + 1 < O ? last + 1 : O;
}

/* col2im as a scatter-add: each image's pixels start at zero, then every
 * column cell adds into the pixel it was read from, taps (kh, kw) in
 * ascending order, so each pixel sums its windows' cells in the same fixed
 * order as a gather would. The taps are unrolled here, so every tap's
 * window range is a constant and the inner loop over ow has no division
 * and no bounds test. Threads split over images; each image's pixels are
 * written by one thread only. Every cell is read once, so the operand's
 * expression is inlined (e.g. the max-pool mask times the gradient). */
void nnc_lw_kernel_col2im(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, "col2im", n);
  int64_t N = n->shape.dim[0], C = n->shape.dim[1], H = n->shape.dim[2], W = n->shape.dim[3];
  int64_t KH = n->attr[0], KW = n->attr[1], SH = n->attr[2], SW = n->attr[3], PH = n->attr[4],
          PW = n->attr[5];
  int64_t OH = nnc_ir_window_out(H, KH, SH, PH), OW = nnc_ir_window_out(W, KW, SW, PW);
  int out = L->buf[n->id];
  nnc_kt t = nnc_kt_of(n->dtype);
  int vn = nnc_kernel_var(k), vi = nnc_kernel_var(k), vc = nnc_kernel_var(k);
  nnc_kblock *bn = nnc_kb_loop(a, &k->body, vn, N);
  k->split = true;
  k->extent = N;
  nnc_kexpr *img = nnc_kx_var(a, vn), *c = nnc_kx_var(a, vc);
  nnc_kb_store(a, nnc_kb_loop(a, bn, vi, C * H * W), out,
               nnc_kx_iadd(a, nnc_kx_imul(a, img, C * H * W), nnc_kx_var(a, vi)),
               nnc_kx_const(a, t, 0));
  nnc_kblock *bc = nnc_kb_loop(a, bn, vc, C);
  nnc_kexpr *plane = nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, img, C), c), H * W);
  for (int64_t kh = 0; kh < KH; kh++)
    for (int64_t kw = 0; kw < KW; kw++) {
      int64_t h0, h1, w0, w1;
      tap_range(kh, SH, PH, H, OH, &h0, &h1);
      tap_range(kw, SW, PW, W, OW, &w0, &w1);
      if (h1 <= h0 || w1 <= w0) continue;
      int vh = nnc_kernel_var(k), vw = nnc_kernel_var(k);
      nnc_kblock *bw = nnc_kb_loop(a, nnc_kb_loop(a, bc, vh, h1 - h0), vw, w1 - w0);
      nnc_kexpr *oh = nnc_kx_iadd(a, nnc_kx_var(a, vh), nnc_kx_int(a, h0));
      nnc_kexpr *ow = nnc_kx_iadd(a, nnc_kx_var(a, vw), nnc_kx_int(a, w0));
      /* pixel (oh * SH + kh - PH, ow * SW + kw - PW) of the plane */
      nnc_kexpr *at = nnc_kx_iadd(
          a, plane,
          nnc_kx_iadd(
              a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, oh, SH), nnc_kx_int(a, kh - PH)), W),
              nnc_kx_iadd(a, nnc_kx_imul(a, ow, SW), nnc_kx_int(a, kw - PW))));
      nnc_kexpr *cell[2] = {
          nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, img, OH), oh), OW), ow),
          nnc_kx_iadd(a, nnc_kx_imul(a, c, KH * KW), nnc_kx_int(a, kh * KW + kw))};
      nnc_kexpr *v = nnc_lw_gen(L, &G, n->in[0], cell);
      nnc_kb_store(a, bw, out, at, nnc_kx_bin(a, NNC_K_ADD, nnc_kx_load(a, L->p, out, at), v));
    }
  k->work = (double)nnc_shape_numel(&n->in[0]->shape) * 4;
  nnc_lw_add_kernel(L, k);
}

/* scatter_add: threads split over columns; each column adds the rows in
 * index order. Indices outside [0, rows) are clamped (the runtime checks
 * labels; this only keeps memory safe). */
void nnc_lw_kernel_scatter_add(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, "scatter_add", n);
  int64_t V = n->shape.dim[0], D = n->shape.dim[1];
  int64_t P = nnc_shape_numel(&n->in[1]->shape);
  int vj = nnc_kernel_var(k), vr = nnc_kernel_var(k), vp = nnc_kernel_var(k);
  nnc_kexpr *j = nnc_kx_var(a, vj), *r = nnc_kx_var(a, vr), *p = nnc_kx_var(a, vp);
  nnc_kblock *bj = nnc_kb_loop(a, &k->body, vj, D);
  k->split = true;
  k->extent = D;
  int out = L->buf[n->id];
  nnc_kb_store(a, nnc_kb_loop(a, bj, vr, V), out, nnc_kx_iadd(a, nnc_kx_imul(a, r, D), j),
               nnc_kx_const(a, nnc_kt_of(n->dtype), 0));
  nnc_kblock *bp = nnc_kb_loop(a, bj, vp, P);
  nnc_kexpr *row =
      nnc_lw_clamp_index(L, nnc_lw_as_index(L, nnc_kx_load(a, L->p, L->buf[n->in[1]->id], p)), V);
  nnc_kexpr *at = nnc_kx_iadd(a, nnc_kx_imul(a, row, D), j);
  nnc_kexpr *dy =
      nnc_kx_load(a, L->p, L->buf[n->in[0]->id], nnc_kx_iadd(a, nnc_kx_imul(a, p, D), j));
  nnc_kb_store(a, bp, out, at, nnc_kx_bin(a, NNC_K_ADD, nnc_kx_load(a, L->p, out, at), dy));
  k->work = (double)(P * D + V * D) * 2;
  nnc_lw_add_kernel(L, k);
}
