/* lower_window.c: kernels for the window and scatter ops: IM2COL (a gather
 * with padding; stored transposed, a copy of image rows per tap, when only
 * products read it), COL2IM (its adjoint, as a scatter-add over taps, or
 * stores when the windows tile the image) and SCATTER_ADD (the adjoint of
 * GATHER), and the sums and maxima over the windows of an im2col that
 * is not stored (pooling: the reduction reads the image through the
 * window). In training, max pooling's rmax also stores the tap of each
 * window's first maximum, which its gradient's col2im reads in place of
 * an argmax of stored columns ("windowargmax" and "unpool"); where the
 * windows tile the image, the elementwise kernel that reads the unpooled
 * gradient (ReLU's backward select) unpools it itself ("unpool_select").
 * Each writes every output element from one thread in a fixed order.
 */
#include "lower_internal.h"

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

/* A window op's sizes: image [N, C, H, W], window KH x KW, stride, padding
 * and the window positions OH x OW. */
typedef struct window {
  int64_t N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW;
} window;

static window window_of(const nnc_node *n, const nnc_shape *image) {
  window w = {.N = image->dim[0],
              .C = image->dim[1],
              .H = image->dim[2],
              .W = image->dim[3],
              .KH = n->attr[0],
              .KW = n->attr[1],
              .SH = n->attr[2],
              .SW = n->attr[3],
              .PH = n->attr[4],
              .PW = n->attr[5]};
  w.OH = nnc_ir_window_out(w.H, w.KH, w.SH, w.PH);
  w.OW = nnc_ir_window_out(w.W, w.KW, w.SW, w.PW);
  return w;
}

/* The largest divisor of n that is at most cap. */
static int64_t divisor_upto(int64_t n, int64_t cap) {
  for (int64_t d = cap < n ? cap : n; d > 1; d--)
    if (n % d == 0) return d;
  return 1;
}

/* Whether pixel (h, w) lies inside an H x W image. */
static nnc_kexpr *in_image(nnc_arena *a, nnc_kexpr *h, nnc_kexpr *w, int64_t H, int64_t W) {
  nnc_kexpr *zero = nnc_kx_int(a, 0);
  return nnc_kx_bin(a, NNC_K_AND,
                    nnc_kx_bin(a, NNC_K_AND, nnc_kx_bin(a, NNC_K_GE, h, zero),
                               nnc_kx_bin(a, NNC_K_LT, h, nnc_kx_int(a, H))),
                    nnc_kx_bin(a, NNC_K_AND, nnc_kx_bin(a, NNC_K_GE, w, zero),
                               nnc_kx_bin(a, NNC_K_LT, w, nnc_kx_int(a, W))));
}

/* Stores v (an expression of the loop variables voh, vow, offset by oh0
 * and ow0) over the rectangle [oh0, oh1) x [ow0, ow1) of one output row
 * block of im2col stored transposed: element (oh, ow) at base + oh*OW + ow. */
static void store_rect(lower *L, nnc_kernel *k, nnc_kblock *blk, int out, nnc_kexpr *base,
                       int64_t OW, int64_t oh0, int64_t oh1, int64_t ow0, int64_t ow1,
                       nnc_kexpr *(*val)(lower *, const void *, nnc_kexpr *, nnc_kexpr *),
                       const void *ctx) {
  if (oh1 <= oh0 || ow1 <= ow0) return;
  nnc_arena *a = L->a;
  int vh = nnc_kernel_var(k), vw = nnc_kernel_var(k);
  nnc_kblock *b = nnc_kb_loop(a, nnc_kb_loop(a, blk, vh, oh1 - oh0), vw, ow1 - ow0);
  nnc_kexpr *oh = nnc_kx_iadd(a, nnc_kx_var(a, vh), nnc_kx_int(a, oh0));
  nnc_kexpr *ow = nnc_kx_iadd(a, nnc_kx_var(a, vw), nnc_kx_int(a, ow0));
  nnc_kb_store(a, b, out, nnc_kx_iadd(a, base, nnc_kx_iadd(a, nnc_kx_imul(a, oh, OW), ow)),
               val(L, ctx, oh, ow));
}

/* What one tap of im2col reads: pixel (oh*SH + kh - PH, ow*SW + kw - PW)
 * of a plane, or the fill value. */
typedef struct tap_src {
  int x;
  nnc_kexpr *plane, *fill;
  int64_t W, SH, SW, dh, dw;
} tap_src;

static nnc_kexpr *tap_fill(lower *L, const void *ctx, nnc_kexpr *oh, nnc_kexpr *ow) {
  (void)L, (void)oh, (void)ow;
  return ((const tap_src *)ctx)->fill;
}

static nnc_kexpr *tap_pixel(lower *L, const void *ctx, nnc_kexpr *oh, nnc_kexpr *ow) {
  const tap_src *t = ctx;
  nnc_arena *a = L->a;
  nnc_kexpr *h = nnc_kx_iadd(a, nnc_kx_imul(a, oh, t->SH), nnc_kx_int(a, t->dh));
  nnc_kexpr *w = nnc_kx_iadd(a, nnc_kx_imul(a, ow, t->SW), nnc_kx_int(a, t->dw));
  return nnc_kx_load(a, L->p, t->x,
                     nnc_kx_iadd(a, t->plane, nnc_kx_iadd(a, nnc_kx_imul(a, h, t->W), w)));
}

/* im2col stored transposed (choose_layouts): row (c, kh, kw) holds that
 * tap's pixel for every window position (n, oh, ow). Taps are unrolled, so
 * each tap's positions inside the image are a constant rectangle
 * (tap_range): a copy of image rows, with the fill value around it, no
 * bounds test per element. Threads split over images. */
static void im2col_transposed(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, "im2col", n);
  window w = window_of(n, &n->in[0]->shape);
  int64_t rows = n->shape.dim[0];
  int out = L->buf[n->id];
  int vn = nnc_kernel_var(k), vc = nnc_kernel_var(k);
  nnc_kblock *bn = nnc_kb_loop(a, &k->body, vn, w.N);
  k->split = true;
  k->extent = w.N;
  nnc_kblock *bc = nnc_kb_loop(a, bn, vc, w.C);
  nnc_kexpr *img = nnc_kx_var(a, vn), *c = nnc_kx_var(a, vc);
  tap_src t = {.x = L->buf[n->in[0]->id],
               .plane = nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, img, w.C), c), w.H * w.W),
               .fill = nnc_lw_fconst(L, n, n->fattr),
               .W = w.W,
               .SH = w.SH,
               .SW = w.SW};
  for (int64_t kh = 0; kh < w.KH; kh++)
    for (int64_t kw = 0; kw < w.KW; kw++) {
      int64_t h0, h1, w0, w1;
      tap_range(kh, w.SH, w.PH, w.H, w.OH, &h0, &h1);
      tap_range(kw, w.SW, w.PW, w.W, w.OW, &w0, &w1);
      h0 = h0 < w.OH ? h0 : w.OH;
      w0 = w0 < w.OW ? w0 : w.OW;
      h1 = h1 > h0 ? h1 : h0;
      w1 = w1 > w0 ? w1 : w0;
      t.dh = kh - w.PH;
      t.dw = kw - w.PW;
      /* row (c*KH + kh)*KW + kw, image img's positions */
      nnc_kexpr *col =
          nnc_kx_iadd(a, nnc_kx_imul(a, c, w.KH * w.KW), nnc_kx_int(a, kh * w.KW + kw));
      nnc_kexpr *base = nnc_kx_iadd(a, nnc_kx_imul(a, col, rows), nnc_kx_imul(a, img, w.OH * w.OW));
      store_rect(L, k, bc, out, base, w.OW, 0, h0, 0, w.OW, tap_fill, &t);
      store_rect(L, k, bc, out, base, w.OW, h0, h1, 0, w0, tap_fill, &t);
      store_rect(L, k, bc, out, base, w.OW, h0, h1, w0, w1, tap_pixel, &t);
      store_rect(L, k, bc, out, base, w.OW, h0, h1, w1, w.OW, tap_fill, &t);
      store_rect(L, k, bc, out, base, w.OW, h1, w.OH, 0, w.OW, tap_fill, &t);
    }
  k->work = (double)nnc_shape_numel(&n->shape) * 4;
  nnc_lw_add_kernel(L, k);
}

/* im2col: one loop per coordinate of (n, oh, ow) x (c, kh, kw); reads in
 * the padding give the pad value. */
void nnc_lw_kernel_im2col(lower *L, const nnc_node *n) {
  if (L->trans[n->id]) {
    im2col_transposed(L, n);
    return;
  }
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
  nnc_kexpr *in = in_image(a, h, w, H, W);
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

/* Whether col2im's windows tile its image exactly (stride = window, no
 * padding, every pixel covered: max pooling's gradient). */
static bool tiles_exactly(const nnc_node *n) {
  int64_t H = n->shape.dim[2], W = n->shape.dim[3];
  int64_t KH = n->attr[0], KW = n->attr[1], SH = n->attr[2], SW = n->attr[3];
  return SH == KH && SW == KW && n->attr[4] == 0 && n->attr[5] == 0 && H % KH == 0 && W % KW == 0 &&
         KW <= 8;
}

/* Whether col2im node n routes max pooling's gradient through the tap its
 * window max saved (onehot(index) * dy, read inline: no columns); its
 * kernel is then named "unpool". */
static bool unpools(const lower *L, const nnc_node *n) {
  const nnc_node *d = n->in[0];
  if (d->op == NNC_OP_MUL)
    for (int i = 0; i < 2; i++)
      if (d->in[i]->op == NNC_OP_ONEHOT && L->saved_by[d->in[i]->in[0]->id]) return true;
  return false;
}

/* Stage (1) of unpooling one plane where the windows tile the image
 * (col2im n of onehot(saved tap) * dy, one channel per image): one loop
 * over the plane's windows (dy and the tap contiguous) that vectorises
 * gives each window's KH x KW cells, 0 + cell as col2im_tiles computes
 * them, into a scratch plane at `base` laid out tap row major
 * ([kh][window][kw]), so that image row oh*KH + kh is W contiguous
 * scratch values from (kh*OH*OW + oh*OW)*KW (unpool_row). */
static void unpool_cells(lower *L, const nnc_node *n, kgen *G, nnc_kernel *k, nnc_kblock *bp,
                         int sc, nnc_kexpr *plane, nnc_kexpr *base) {
  nnc_arena *a = L->a;
  int64_t KH = n->attr[0], KW = n->attr[1];
  int64_t OH = n->shape.dim[2] / KH, OW = n->shape.dim[3] / KW;
  nnc_kt t = nnc_kt_of(n->dtype);
  int vj = nnc_kernel_var(k);
  nnc_kblock *b1 = nnc_kb_loop(a, bp, vj, OH * OW);
  nnc_kexpr *j = nnc_kx_var(a, vj);
  nnc_kexpr *win = nnc_kx_iadd(a, nnc_kx_imul(a, plane, OH * OW), j);
  for (int64_t tap = 0; tap < KH * KW; tap++) {
    nnc_kexpr *cell[2] = {win, nnc_kx_int(a, tap)};
    nnc_kexpr *v = nnc_lw_gen(L, G, n->in[0], cell);
    nnc_kexpr *at = nnc_kx_iadd(
        a, base,
        nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, j, nnc_kx_int(a, tap / KW * OH * OW)), KW),
                    nnc_kx_int(a, tap % KW)));
    nnc_kb_store(a, b1, sc, at, nnc_kx_bin(a, NNC_K_ADD, nnc_kx_const(a, t, 0), v));
  }
}

/* Where unpool_cells put pixel (oh*KH + kh, x) of its plane. */
static nnc_kexpr *unpool_row(lower *L, const nnc_node *n, nnc_kexpr *base, nnc_kexpr *oh,
                             nnc_kexpr *kh, nnc_kexpr *x) {
  nnc_arena *a = L->a;
  int64_t KH = n->attr[0], KW = n->attr[1];
  int64_t OH = n->shape.dim[2] / KH, OW = n->shape.dim[3] / KW;
  nnc_kexpr *row = nnc_kx_iadd(a, nnc_kx_imul(a, kh, OH * OW), nnc_kx_imul(a, oh, OW));
  return nnc_kx_iadd(a, base, nnc_kx_iadd(a, nnc_kx_imul(a, row, KW), x));
}

/* Max pooling's gradient where the windows tile the image, in two stages
 * per plane, each a loop that vectorises: (1) unpool_cells, (2) each
 * image row a copy of W contiguous scratch values. Threads split over
 * blocks of planes, each block with its own scratch plane. */
static void unpool_tiles(lower *L, const nnc_node *n, kgen *G, nnc_kernel *k) {
  nnc_arena *a = L->a;
  int64_t P = n->shape.dim[0], H = n->shape.dim[2], W = n->shape.dim[3];
  int64_t KH = n->attr[0], OH = H / KH, B = divisor_upto(P, 64);
  int sc = nnc_kprog_add_buf(L->p, NNC_KBUF_TEMP, 0, nnc_kt_of(n->dtype), B * H * W,
                             nnc_arena_printf(a, "%s.unpool.%d", L->g->name, n->id));
  int vb = nnc_kernel_var(k), vp = nnc_kernel_var(k), vh = nnc_kernel_var(k),
      vkh = nnc_kernel_var(k), vw = nnc_kernel_var(k);
  nnc_kblock *bp = nnc_kb_loop(a, nnc_kb_loop(a, &k->body, vb, B), vp, P / B);
  k->split = true;
  k->extent = B;
  nnc_kexpr *plane = nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_var(a, vb), P / B), nnc_kx_var(a, vp));
  nnc_kexpr *base = nnc_kx_imul(a, nnc_kx_var(a, vb), H * W);
  unpool_cells(L, n, G, k, bp, sc, plane, base);
  /* (2) image row oh*KH + kh */
  nnc_kblock *b2 = nnc_kb_loop(a, nnc_kb_loop(a, nnc_kb_loop(a, bp, vh, OH), vkh, KH), vw, W);
  nnc_kexpr *oh = nnc_kx_var(a, vh), *kh = nnc_kx_var(a, vkh), *x = nnc_kx_var(a, vw);
  nnc_kexpr *to =
      nnc_kx_iadd(a, nnc_kx_imul(a, plane, H * W),
                  nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, oh, KH), kh), W), x));
  nnc_kb_store(a, b2, L->buf[n->id], to,
               nnc_kx_load(a, L->p, sc, unpool_row(L, n, base, oh, kh, x)));
  k->work = (double)nnc_shape_numel(&n->in[0]->shape) * 4;
  nnc_lw_add_kernel(L, k);
}

/* col2im of windows that tile the image: every pixel receives exactly one
 * cell, so it is stored, not added, in the image's memory order: rows oh,
 * kh, then ow with the taps kw of a row unrolled, contiguous stores
 * (threads split over images). Each pixel's value is 0 + its cell, as the
 * scatter-add computes it. */
static void col2im_tiles(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  bool unpool = unpools(L, n);
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, unpool ? "unpool" : "col2im", n);
  if (unpool && n->shape.dim[1] == 1) {
    unpool_tiles(L, n, &G, k);
    return;
  }
  int64_t N = n->shape.dim[0], C = n->shape.dim[1], H = n->shape.dim[2], W = n->shape.dim[3];
  int64_t KH = n->attr[0], KW = n->attr[1];
  int64_t OH = H / KH, OW = W / KW;
  int out = L->buf[n->id];
  nnc_kt t = nnc_kt_of(n->dtype);
  int vn = nnc_kernel_var(k), vc = nnc_kernel_var(k), vh = nnc_kernel_var(k),
      vkh = nnc_kernel_var(k), vw = nnc_kernel_var(k);
  nnc_kblock *b = nnc_kb_loop(a, &k->body, vn, N);
  k->split = true;
  k->extent = N;
  b = nnc_kb_loop(a, nnc_kb_loop(a, nnc_kb_loop(a, nnc_kb_loop(a, b, vc, C), vh, OH), vkh, KH), vw,
                  OW);
  nnc_kexpr *img = nnc_kx_var(a, vn), *c = nnc_kx_var(a, vc), *oh = nnc_kx_var(a, vh),
            *kh = nnc_kx_var(a, vkh), *ow = nnc_kx_var(a, vw);
  nnc_kexpr *plane = nnc_kx_iadd(a, nnc_kx_imul(a, img, C), c);
  /* pixel (oh*KH + kh, ow*KW + kw) of plane; cell (window (n, c, oh, ow), tap (kh, kw)) */
  nnc_kexpr *pix_row = nnc_kx_iadd(a, nnc_kx_imul(a, oh, KH), kh);
  nnc_kexpr *at0 =
      nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, plane, H), pix_row), W),
                  nnc_kx_imul(a, ow, KW));
  nnc_kexpr *win =
      nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, img, OH), oh), OW), ow);
  for (int64_t kw = 0; kw < KW; kw++) {
    nnc_kexpr *tap = nnc_kx_iadd(a, nnc_kx_imul(a, kh, KW), nnc_kx_int(a, kw));
    nnc_kexpr *cell[2] = {win, nnc_kx_iadd(a, nnc_kx_imul(a, c, KH * KW), tap)};
    nnc_kexpr *v = nnc_lw_gen(L, &G, n->in[0], cell);
    nnc_kb_store(a, b, out, nnc_kx_iadd(a, at0, nnc_kx_int(a, kw)),
                 nnc_kx_bin(a, NNC_K_ADD, nnc_kx_const(a, t, 0), v));
  }
  k->work = (double)nnc_shape_numel(&n->in[0]->shape) * 4;
  nnc_lw_add_kernel(L, k);
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
  if (tiles_exactly(n)) {
    col2im_tiles(L, n);
    return;
  }
  kgen G;
  nnc_arena *a = L->a;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, unpools(L, n) ? "unpool" : "col2im", n);
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

/* Whether im2col node n is read only by sums or maxima over its window
 * axis (axis 1: max pooling's rmax, average pooling's sum; in training
 * max pooling's argmax too, which nnc_lw_match_window_argmax has given to
 * the rmax's kernel and left dead): then it gets no kernel and no memory,
 * and each reduction reads the image through the window itself
 * (nnc_lw_kernel_window_reduce), so the columns (as large as the image)
 * are neither written nor read. */
bool nnc_lw_window_reduced(lower *L, const nnc_node *n) {
  if (n->op != NNC_OP_IM2COL || L->out_kind[n->id] >= 0 || L->is_update[n->id] ||
      n->dtype != NNC_F32)
    return false;
  int readers = 0;
  for (int i = 0; i < L->nusers[n->id]; i++) {
    const nnc_node *u = L->users[n->id][i];
    if (L->st[u->id] == ST_DEAD || L->st[u->id] == ST_ABSORBED) continue;
    if ((u->op != NNC_OP_SUM && u->op != NNC_OP_RMAX) || u->attr[0] != 2 || u->in[0] != n ||
        L->st[u->id] != ST_KERNEL)
      return false;
    readers++;
  }
  return readers > 0;
}

/* A live node's only reader (a node that is no output or update value), or NULL. */
static nnc_node *only_reader(const lower *L, const nnc_node *n) {
  if (L->out_kind[n->id] >= 0 || L->is_update[n->id] || L->nusers[n->id] != 1) return NULL;
  return L->users[n->id][0];
}

/* Max pooling's gradient reads the argmax of the columns it takes the
 * maximum of (autodiff's first_max_grad: onehot(cast<i32>(argmax)) * dy,
 * then col2im). Where im2col node n (f32, window axis 1) is read by
 * exactly one such rmax and one such argmax, and the argmax only, through
 * views, by a cast to i32, the rmax's kernel stores the tap of the first
 * maximum into the cast's buffer as it takes the maximum
 * (nnc_lw_kernel_window_reduce): no argmax or cast kernel, and the
 * columns go without memory (nnc_lw_window_reduced). */
static void match_one(lower *L, const nnc_node *n) {
  if (n->op != NNC_OP_IM2COL || n->dtype != NNC_F32 || L->out_kind[n->id] >= 0 ||
      L->is_update[n->id] || L->nusers[n->id] != 2)
    return;
  nnc_node *rmax = NULL, *argmax = NULL;
  for (int i = 0; i < 2; i++) {
    nnc_node *u = L->users[n->id][i];
    if (u->op == NNC_OP_RMAX && u->attr[0] == 2 && u->in[0] == n)
      rmax = u;
    else if (u->op == NNC_OP_ARGMAX && u->attr[0] == 1 && u->in[0] == n)
      argmax = u;
  }
  if (!rmax || !argmax) return;
  nnc_node *cast = only_reader(L, argmax);
  while (cast && cast->op == NNC_OP_RESHAPE)
    cast = only_reader(L, cast);
  if (!cast || cast->op != NNC_OP_CAST || cast->dtype != NNC_I32) return;
  L->index_of[rmax->id] = cast;
  for (nnc_node *v = argmax;; v = L->users[v->id][0]) {
    L->saved_by[v->id] = rmax;
    if (v == cast) break;
  }
  L->force[cast->id] = true; /* memory of its own: the gradient reads it */
}

void nnc_lw_match_window_argmax(lower *L) {
  for (int id = 0; id < L->nn; id++)
    if (L->live[id]) match_one(L, L->g->nodes[id]);
}

/* Whether the last two axes (a plane's rows and columns) of e's index
 * reach every memory e reads unchanged: e computed inline at (..., 0, p)
 * is then its pixel p of the plane, a flat index along the plane, as
 * memory read at that index (row major) is. Through elementwise ops,
 * broadcasts and reshapes that keep those axes, or read a per-channel
 * value (both axes 1). */
static bool flat_in_plane(const lower *L, const nnc_node *e) {
  int r = e->shape.rank;
  if (L->subst[e->id] || r < 2) return false;
  if (L->buf[e->id] >= 0) return !L->trans[e->id];
  if (e->op == NNC_OP_CONST) return true;
  bool elementwise = nnc_lw_traits(e->op).elementwise && e->op != NNC_OP_RAND &&
                     e->op != NNC_OP_ONEHOT && e->op != NNC_OP_ALLREDUCE;
  if (!elementwise && e->op != NNC_OP_BROADCAST && e->op != NNC_OP_RESHAPE) return false;
  for (int i = 0; i < e->nin; i++) {
    const nnc_shape *s = &e->in[i]->shape;
    if (s->rank == 0 && e->op != NNC_OP_RESHAPE) continue; /* a scalar */
    if (s->rank < 2 || s->dim[s->rank - 2] != e->shape.dim[r - 2] ||
        s->dim[s->rank - 1] != e->shape.dim[r - 1]) {
      if (e->op == NNC_OP_RESHAPE || s->rank != r || s->dim[r - 2] != 1 || s->dim[r - 1] != 1)
        return false;
      continue; /* read at (..., 0, 0) */
    }
    if (e->op != NNC_OP_RESHAPE && s->rank != r) return false;
    if (!flat_in_plane(L, e->in[i])) return false;
  }
  return true;
}

/* max pooling's maximum and first-maximum tap where the windows tile the
 * image (stride = window, no padding, KW dividing W: 2x2 stride 2), in two
 * stages per plane, each a loop that vectorises: (1) each image row's
 * windows, one loop over the plane's H*OW row segments (KW adjacent
 * pixels each; the loads deinterleave), the first KW taps of the running
 * maximum, into a scratch row block; (2) each window goes on from its
 * first row's partial through its other rows' partials (kh ascending),
 * contiguous loads along ow. The result is the row-major scan's (the
 * later of equal values never wins), so for every input without NaN the
 * same maximum bits and tap as the scan of the stored columns. Threads
 * split over blocks of planes, each block with its own scratch rows. */
static void window_argmax_tiles(lower *L, kgen *G, const nnc_node *n, nnc_kernel *k,
                                const window *w) {
  nnc_arena *a = L->a;
  const nnc_node *image = n->in[0]->in[0];
  int64_t P = w->N * w->C, seg = w->H * w->OW, B = divisor_upto(P, 64);
  nnc_kt t = nnc_kt_of(n->dtype), ti = NNC_KT_I32;
  int sv = nnc_kprog_add_buf(L->p, NNC_KBUF_TEMP, 0, t, B * seg,
                             nnc_arena_printf(a, "%s.rowmax.%d", L->g->name, n->id));
  int sa = nnc_kprog_add_buf(L->p, NNC_KBUF_TEMP, 0, ti, B * seg,
                             nnc_arena_printf(a, "%s.rowtap.%d", L->g->name, n->id));
  int vb = nnc_kernel_var(k), vp = nnc_kernel_var(k), vi = nnc_kernel_var(k),
      vh = nnc_kernel_var(k), vw = nnc_kernel_var(k);
  nnc_kblock *bb = nnc_kb_loop(a, &k->body, vb, B);
  k->split = true;
  k->extent = B;
  nnc_kblock *bp = nnc_kb_loop(a, bb, vp, P / B);
  nnc_kexpr *plane = nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_var(a, vb), P / B), nnc_kx_var(a, vp));
  nnc_kexpr *scratch = nnc_kx_imul(a, nnc_kx_var(a, vb), seg);
  nnc_kexpr *image_at = nnc_kx_imul(a, plane, w->H * w->W);
  /* (1) segment i of the plane: pixels i*KW .. i*KW + KW-1 (W = OW*KW);
   * an image computed here (window_inlines: batch norm and ReLU of the
   * convolution's output) at (plane, 0, 0, i*KW + kw), that pixel
   * (flat_in_plane) */
  nnc_kblock *b1 = nnc_kb_loop(a, bp, vi, seg);
  nnc_kexpr *i = nnc_kx_var(a, vi);
  int best, at;
  nnc_lw_first_max_init(L, k, b1, t, ti, &best, &at);
  for (int64_t kw = 0; kw < w->KW; kw++) {
    nnc_kexpr *px = nnc_kx_iadd(a, nnc_kx_imul(a, i, w->KW), nnc_kx_int(a, kw)), *v;
    if (L->buf[image->id] >= 0) {
      v = nnc_kx_load(a, L->p, L->buf[image->id], nnc_kx_iadd(a, image_at, px));
    } else {
      nnc_kexpr *idx[4] = {plane, G->zero, G->zero, px};
      v = nnc_lw_gen(L, G, image, idx);
    }
    nnc_lw_first_max_step(L, k, b1, best, at, v, nnc_kx_const(a, ti, (double)kw));
  }
  nnc_kexpr *cell = nnc_kx_iadd(a, scratch, i);
  nnc_kb_store(a, b1, sv, cell, nnc_kx_scalar(a, k, best));
  nnc_kb_store(a, b1, sa, cell, nnc_kx_scalar(a, k, at));
  /* (2) window (oh, ow): row segments oh*KH + kh, kh ascending */
  nnc_kblock *b2 = nnc_kb_loop(a, nnc_kb_loop(a, bp, vh, w->OH), vw, w->OW);
  nnc_kexpr *oh = nnc_kx_var(a, vh), *ow = nnc_kx_var(a, vw);
  for (int64_t kh = 0; kh < w->KH; kh++) {
    nnc_kexpr *row = nnc_kx_iadd(a, nnc_kx_imul(a, oh, w->KH), nnc_kx_int(a, kh));
    nnc_kexpr *c = nnc_kx_iadd(a, scratch, nnc_kx_iadd(a, nnc_kx_imul(a, row, w->OW), ow));
    nnc_kexpr *v = nnc_kx_load(a, L->p, sv, c);
    nnc_kexpr *tap = nnc_kx_bin(a, NNC_K_ADD, nnc_kx_load(a, L->p, sa, c),
                                nnc_kx_const(a, ti, (double)(kh * w->KW)));
    if (kh == 0) {
      nnc_kb_set(a, b2, best, v);
      nnc_kb_set(a, b2, at, tap);
      continue;
    }
    nnc_lw_first_max_step(L, k, b2, best, at, v, tap);
  }
  nnc_kexpr *out = nnc_kx_iadd(a, nnc_kx_imul(a, plane, w->OH * w->OW),
                               nnc_kx_iadd(a, nnc_kx_imul(a, oh, w->OW), ow));
  nnc_kb_store(a, b2, L->buf[n->id], out, nnc_kx_scalar(a, k, best));
  nnc_kb_store(a, b2, L->buf[L->index_of[n->id]->id], out, nnc_kx_scalar(a, k, at));
  k->work = (double)nnc_shape_numel(&n->in[0]->shape) * 3;
  nnc_lw_add_kernel(L, k);
}

/* Whether window w tiles its image: stride = window, no padding, every
 * pixel in one window. */
static bool window_tiles(const window *w) {
  return w->SH == w->KH && w->SW == w->KW && w->PH == 0 && w->PW == 0 && w->H == w->OH * w->KH &&
         w->W == w->OW * w->KW;
}

/* A sum or max over the window axis of an im2col without memory
 * (nnc_lw_window_reduced): loops over the window positions (n, oh, ow),
 * then the column's cells (c, kh, kw) in ascending order, as the reduction
 * of the stored columns would, so each result is the same bit for bit; the
 * taps are unrolled and read the image directly, with a bounds test only
 * for taps that can fall into the padding. Threads split over images. */
void nnc_lw_kernel_window_reduce(lower *L, const nnc_node *n) {
  kgen G;
  nnc_arena *a = L->a;
  const nnc_node *cols = n->in[0], *image = cols->in[0];
  bool is_sum = n->op == NNC_OP_SUM;
  nnc_kernel *k = nnc_lw_new_kernel(L, &G,
                                    is_sum               ? "windowsum"
                                    : L->index_of[n->id] ? "windowargmax"
                                                         : "windowmax",
                                    n);
  window w = window_of(cols, &image->shape);
  if (L->index_of[n->id] && w.C == 1 && window_tiles(&w) &&
      (L->buf[image->id] >= 0 || flat_in_plane(L, image))) {
    window_argmax_tiles(L, &G, n, k, &w);
    return;
  }
  int vn = nnc_kernel_var(k), vh = nnc_kernel_var(k), vw = nnc_kernel_var(k),
      vc = nnc_kernel_var(k);
  nnc_kblock *b = nnc_kb_loop(a, &k->body, vn, w.N);
  k->split = true;
  k->extent = w.N;
  b = nnc_kb_loop(a, nnc_kb_loop(a, b, vh, w.OH), vw, w.OW);
  nnc_kexpr *img = nnc_kx_var(a, vn), *oh = nnc_kx_var(a, vh), *ow = nnc_kx_var(a, vw);
  nnc_kt t = nnc_kt_of(n->dtype);
  int acc = nnc_kernel_scalar(a, k, t);
  nnc_kb_set(a, b, acc, nnc_kx_const(a, t, is_sum ? 0.0 : -__builtin_inf()));
  /* the argmax's own running best and tap, as nnc_lw_kernel_argmax keeps
   * them (its test differs from max's on NaN) */
  const nnc_node *index = L->index_of[n->id];
  int best = -1, at = -1;
  if (index) nnc_lw_first_max_init(L, k, b, t, NNC_KT_I32, &best, &at);
  nnc_kblock *bc = w.C > 1 ? nnc_kb_loop(a, b, vc, w.C) : b;
  nnc_kexpr *c = w.C > 1 ? nnc_kx_var(a, vc) : G.zero;
  nnc_kexpr *fill = nnc_lw_fconst(L, cols, cols->fattr);
  for (int64_t kh = 0; kh < w.KH; kh++)
    for (int64_t kw = 0; kw < w.KW; kw++) {
      int64_t h0, h1, w0, w1;
      tap_range(kh, w.SH, w.PH, w.H, w.OH, &h0, &h1);
      tap_range(kw, w.SW, w.PW, w.W, w.OW, &w0, &w1);
      nnc_kexpr *h = nnc_kx_iadd(a, nnc_kx_imul(a, oh, w.SH), nnc_kx_int(a, kh - w.PH));
      nnc_kexpr *x = nnc_kx_iadd(a, nnc_kx_imul(a, ow, w.SW), nnc_kx_int(a, kw - w.PW));
      nnc_kexpr *v;
      if (h0 == 0 && h1 == w.OH && w0 == 0 && w1 == w.OW) { /* never in the padding */
        nnc_kexpr *idx[4] = {img, c, h, x};
        v = nnc_lw_gen(L, &G, image, idx);
      } else {
        nnc_kexpr *in = in_image(a, h, x, w.H, w.W);
        nnc_kexpr *idx[4] = {img, c, nnc_lw_clamp_index(L, h, w.H), nnc_lw_clamp_index(L, x, w.W)};
        v = nnc_kx_select(a, in, nnc_lw_gen(L, &G, image, idx), fill);
      }
      nnc_kb_set(a, bc, acc,
                 nnc_kx_bin(a, is_sum ? NNC_K_ADD : NNC_K_MAX, nnc_kx_scalar(a, k, acc), v));
      if (index) { /* column (c, kh, kw) of the window: the first maximum wins */
        nnc_kexpr *col =
            nnc_kx_iadd(a, nnc_kx_imul(a, c, w.KH * w.KW), nnc_kx_int(a, kh * w.KW + kw));
        nnc_lw_first_max_step(L, k, bc, best, at, v, nnc_kx_cast(a, col, NNC_KT_I32));
      }
    }
  nnc_kexpr *row =
      nnc_kx_iadd(a, nnc_kx_imul(a, nnc_kx_iadd(a, nnc_kx_imul(a, img, w.OH), oh), w.OW), ow);
  nnc_kb_store(a, b, L->buf[n->id], row, nnc_kx_scalar(a, k, acc));
  if (index) nnc_kb_store(a, b, L->buf[index->id], row, nnc_kx_scalar(a, k, at));
  k->work = (double)nnc_shape_numel(&cols->shape) * 2;
  nnc_lw_add_kernel(L, k);
}

/* Where max pooling's gradient (an unpooling col2im whose windows tile the
 * image, one channel per plane) is read, through views, only by one
 * elementwise kernel node s at s's own index (ReLU's backward select
 * [z > 0] dy, after batch norm), s's kernel computes the cells itself
 * (nnc_lw_kernel_unpool_into): the col2im and its views get no memory,
 * so the unpooled gradient, as large as the image, is neither written
 * nor read back. s is [N, C, H, W] over the col2im's N*C planes. */
void nnc_lw_match_unpool_readers(lower *L) {
  for (int id = 0; id < L->nn; id++) {
    const nnc_node *n = L->g->nodes[id];
    if (!L->live[id] || L->st[id] != ST_KERNEL || n->op != NNC_OP_COL2IM || n->dtype != NNC_F32 ||
        !tiles_exactly(n) || !unpools(L, n) || n->shape.dim[1] != 1 || L->trans[id])
      continue;
    const nnc_node *v = n; /* the view s reads */
    nnc_node *s = only_reader(L, n);
    while (s && s->op == NNC_OP_RESHAPE && L->st[s->id] == ST_VIEW) {
      v = s;
      s = only_reader(L, s);
    }
    if (!s || L->st[s->id] != ST_KERNEL || !nnc_lw_traits(s->op).elementwise ||
        s->op == NNC_OP_ALLREDUCE || L->final[s->id] || L->trans[s->id] || L->unpool_of[s->id] ||
        !nnc_shape_eq(&s->shape, &v->shape) || s->shape.rank != 4 ||
        s->shape.dim[0] * s->shape.dim[1] != n->shape.dim[0] ||
        s->shape.dim[2] != n->shape.dim[2] || s->shape.dim[3] != n->shape.dim[3])
      continue;
    bool direct = false;
    for (int i = 0; i < s->nin; i++)
      direct |= s->in[i] == v;
    if (!direct) continue;
    L->unpool_of[s->id] = n;
    for (const nnc_node *u = n;; u = L->users[u->id][0]) {
      L->st[u->id] = ST_INLINE;
      if (u == v) break;
    }
  }
}

void nnc_lw_kernel_unpool_into(lower *L, const nnc_node *s) {
  kgen G;
  nnc_arena *a = L->a;
  const nnc_node *n = L->unpool_of[s->id], *v = n;
  while (L->users[v->id][0] != s)
    v = L->users[v->id][0];
  nnc_kernel *k = nnc_lw_new_kernel(L, &G, nnc_arena_printf(a, "unpool_%s", nnc_op_name(s->op)), s);
  int64_t N = s->shape.dim[0], C = s->shape.dim[1], H = s->shape.dim[2], W = s->shape.dim[3];
  int64_t KH = n->attr[0], OH = H / KH;
  /* a scratch plane per image: the images are what threads split over */
  int sc = nnc_kprog_add_buf(L->p, NNC_KBUF_TEMP, 0, nnc_kt_of(n->dtype), N * H * W,
                             nnc_arena_printf(a, "%s.unpool.%d", L->g->name, n->id));
  int vn = nnc_kernel_var(k), vc = nnc_kernel_var(k), vh = nnc_kernel_var(k),
      vkh = nnc_kernel_var(k), vw = nnc_kernel_var(k);
  nnc_kblock *bc = nnc_kb_loop(a, nnc_kb_loop(a, &k->body, vn, N), vc, C);
  k->split = true;
  k->extent = N;
  /* s's index, its axes of one at the constant zero as the broadcasts
   * of its operands read them, so that the memo below is what they find */
  nnc_kexpr *img = N > 1 ? nnc_kx_var(a, vn) : G.zero, *c = C > 1 ? nnc_kx_var(a, vc) : G.zero;
  nnc_kexpr *plane = nnc_kx_iadd(a, nnc_kx_imul(a, img, C), c);
  nnc_kexpr *base = nnc_kx_imul(a, img, H * W);
  unpool_cells(L, n, &G, k, bc, sc, plane, base);
  /* (2) each image row of s: its operand v is the scratch row */
  nnc_kblock *b2 = nnc_kb_loop(a, nnc_kb_loop(a, nnc_kb_loop(a, bc, vh, OH), vkh, KH), vw, W);
  nnc_kexpr *oh = nnc_kx_var(a, vh), *kh = nnc_kx_var(a, vkh), *x = nnc_kx_var(a, vw);
  nnc_kexpr *h = nnc_kx_iadd(a, nnc_kx_imul(a, oh, KH), kh);
  nnc_kexpr *idx[4] = {img, c, H > 1 ? h : G.zero, W > 1 ? x : G.zero};
  nnc_lw_memo_put(L, &G, v, idx, nnc_kx_load(a, L->p, sc, unpool_row(L, n, base, oh, kh, x)));
  nnc_kexpr *val = nnc_lw_gen(L, &G, s, idx);
  nnc_kb_store(a, b2, L->buf[s->id], nnc_lw_at(L, s, idx), val);
  k->work = (double)nnc_shape_numel(&s->shape) * (nnc_lw_expr_cost(val) + 2) * 4;
  nnc_lw_add_kernel(L, k);
}
