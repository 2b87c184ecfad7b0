/* deploy_quant.c: int8 post-training quantisation of a deployed program
 * (nnc --quantize int8), TensorFlow Lite's scheme; see kernel.h's
 * nnc_kqgemm for the arithmetic.
 *
 * The products of the program (conv2d and dense: matrix products whose B
 * is a weight tensor) become int8 products; everything else (im2col,
 * pooling, batch norm, the other elementwise work) stays in float, so
 * activations are quantised where a product reads them and dequantised
 * where it writes them. Calibration: a second program of the same graph
 * whose temporaries do not share memory (nnc_deploy_options.calibration)
 * runs nnc's evaluation on training samples; after each call, the input
 * of every product is still in its workspace and nnc_deploy_observe takes
 * its range. nnc_deploy_quantize then fixes the scales, quantises the
 * weights per output channel, drops the float weights only the int8
 * products read from the weights block and adds the scratch of the
 * quantised inputs to the workspace. Where a product's input is a
 * temporary that one loop kernel writes (the im2col before a convolution,
 * the pooling before a dense layer) and only the product reads, that
 * kernel stores it quantised, in bytes (nnc_kqgemm.byte_writer): the
 * float tensor is never written and the product reads a quarter of the
 * bytes. Where that kernel only copies or takes maxima of elements of
 * another such temporary (an im2col of a pooling's output, the pooling of
 * a ReLU's), the kernel before it stores that one quantised and the
 * copies and maxima work on bytes, and so on back. nnc_deploy_requantize
 * then goes one step further back: where that first kernel only applies a
 * per-column affine map and a ReLU to a product's output (batch norm +
 * ReLU in eval), the map is folded at compile time and the product stores
 * the bytes itself (nnc_kqgemm.out_buf), so no float kernel is left
 * between the CNN's products.
 */
#define _POSIX_C_SOURCE 200809L
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "deploy_internal.h"

/* The full product of kernel k (one call does all of it in deployment). */
static int64_t full_n(const nnc_kernel *k) {
  return k->col_block > 0 ? k->gemm.N * k->extent : k->gemm.N;
}

/* The layer of the weight tensor B reads: "cnn.dense1.weight" -> "cnn.dense1". */
static void layer_of(char *buf, size_t n, const char *tensor) {
  snprintf(buf, n, "%s", tensor);
  char *dot = strrchr(buf, '.');
  if (dot) *dot = 0;
}

bool nnc_deploy_quantizable(const nnc_deploy *d, int i, const char *keep_float) {
  const nnc_kernel *k = d->p.eval.k[i];
  if (!k->is_gemm || k->gemm.accumulate || k->gemm.K < 8) return false;
  int a = nnc_kbuf_base(&d->p, k->a_buf), b = nnc_kbuf_base(&d->p, k->b_buf);
  if (!nnc_deploy_in_weights(d, b) || nnc_deploy_in_weights(d, a)) return false;
  if (k->bias_buf >= 0 && !nnc_deploy_in_weights(d, nnc_kbuf_base(&d->p, k->bias_buf)))
    return false;
  if (d->p.bufs[a].type != NNC_KT_F32 || d->p.bufs[b].type != NNC_KT_F32) return false;
  if (keep_float) {
    char layer[256];
    layer_of(layer, sizeof layer, d->p.bufs[b].name);
    if (fnmatch(keep_float, layer, 0) == 0 || fnmatch(keep_float, d->p.bufs[b].name, 0) == 0)
      return false;
  }
  return true;
}

void nnc_deploy_observe(const nnc_deploy *cal, const void *workspace, const bool *which,
                        float *amin, float *amax) {
  for (int i = 0; i < cal->p.eval.n; i++) {
    if (!which[i]) continue;
    const nnc_kernel *k = cal->p.eval.k[i];
    const nnc_kbuf *a = &cal->p.bufs[nnc_kbuf_base(&cal->p, k->a_buf)];
    const float *x = (const float *)((const char *)workspace + a->offset);
    const nnc_cg_gemm *g = &k->gemm;
    for (int64_t m = 0; m < g->M; m++)
      for (int64_t kk = 0; kk < g->K; kk++) {
        float v = g->trans_a ? x[kk * g->lda + m] : x[m * g->lda + kk];
        if (v < amin[i]) amin[i] = v;
        if (v > amax[i]) amax[i] = v;
      }
  }
}

static float weight_at(const nnc_deploy_values *v, const nnc_deploy *d, const nnc_kernel *k,
                       int64_t n, int64_t kk) {
  const nnc_kbuf *b = &d->p.bufs[nnc_kbuf_base(&d->p, k->b_buf)];
  const float *w = v->tensor[b->id];
  const nnc_cg_gemm *g = &k->gemm;
  return g->trans_b ? w[n * g->ldb + kk] : w[kk * g->ldb + n];
}

/* Quantises one product: the activation range [lo, hi] (widened to hold
 * 0, so zero is exact), weights per output channel. */
static nnc_kqgemm *quantize_one(nnc_deploy *d, const nnc_deploy_values *v, const nnc_kernel *k,
                                float lo, float hi) {
  const nnc_cg_gemm *g = &k->gemm;
  nnc_kqgemm *q = nnc_arena_alloc(&d->arena, sizeof *q);
  int64_t N = full_n(k), K = g->K, K4 = (K + 3) / 4 * 4;
  *q = (nnc_kqgemm){
      .M = g->M, .N = N, .K = K, .K4 = K4, .lda = g->lda, .ldc = g->ldc, .trans_a = g->trans_a};
  q->a_buf = k->a_buf;
  q->c_buf = k->c_buf;
  q->relu = g->act == NNC_CG_ACT_RELU;
  if (lo > 0) lo = 0;
  if (hi < 0) hi = 0;
  double sa = ((double)hi - lo) / 255;
  if (!(sa > 0)) sa = 1;
  q->a_scale = (float)sa;
  q->a_inv_scale = (float)(1 / sa);
  double zp = nearbyint(-lo / sa);
  q->a_zero = (int32_t)(zp < 0 ? 0 : zp > 255 ? 255 : zp);
  q->a_min = lo, q->a_max = hi;
  int8_t *w = nnc_arena_alloc(&d->arena, (size_t)(N * K4));
  int32_t *offset = nnc_arena_alloc(&d->arena, sizeof(int32_t) * (size_t)N);
  float *out_scale = nnc_arena_alloc(&d->arena, sizeof(float) * (size_t)N);
  const float *bias =
      k->bias_buf >= 0 ? v->tensor[d->p.bufs[nnc_kbuf_base(&d->p, k->bias_buf)].id] : NULL;
  for (int64_t n = 0; n < N; n++) {
    double amax = 0;
    for (int64_t kk = 0; kk < K; kk++)
      amax = fmax(amax, fabs(weight_at(v, d, k, n, kk)));
    double sw = amax > 0 ? amax / 127 : 1;
    int64_t sum = 0;
    for (int64_t kk = 0; kk < K; kk++) {
      double r = nearbyint(weight_at(v, d, k, n, kk) / sw);
      w[n * K4 + kk] = (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
      sum += w[n * K4 + kk];
    }
    out_scale[n] = (float)(sa * sw);
    double bq = bias ? nearbyint(bias[n] / ((double)sa * sw)) : 0;
    bq = fmax(fmin(bq, 1e9), -1e9); /* an int32; far beyond any sane bias */
    offset[n] = (int32_t)((int64_t)bq - (int64_t)q->a_zero * sum);
  }
  q->w = w;
  q->offset = offset;
  q->out_scale = out_scale;
  return q;
}

static int64_t aligned(int64_t n) {
  return (n + NNC_DEPLOY_ALIGN - 1) / NNC_DEPLOY_ALIGN * NNC_DEPLOY_ALIGN;
}

/* The weights block again, with only the tensors float kernels read. */
static void relayout_weights(nnc_deploy *d) {
  bool *read = nnc_arena_alloc(&d->arena, (size_t)d->mod.ntensors + 1);
  for (int i = 0; i < d->p.eval.n; i++) {
    if (d->quant[i] || nnc_kq_absorbed((const nnc_kqgemm *const *)d->quant, d->p.eval.n, i))
      continue;
    const nnc_kernel *k = d->p.eval.k[i];
    for (int j = 0; j < k->nreads; j++) {
      const nnc_kbuf *b = &d->p.bufs[nnc_kbuf_base(&d->p, k->reads[j])];
      if (b->kind == NNC_KBUF_TENSOR) read[b->id] = true;
    }
  }
  int64_t off = 0;
  for (int t = 0; t < d->mod.ntensors; t++) {
    if (d->w_off[t] < 0) continue;
    if (!read[t]) {
      d->w_off[t] = -1;
      continue;
    }
    nnc_kbuf *b = &d->p.bufs[d->p.tensor_bufs[t]];
    d->w_off[t] = b->offset = off;
    off += aligned(b->numel * nnc_kt_size(b->type));
  }
  for (int b = 0; b < d->p.nbufs; b++)
    if (d->p.bufs[b].kind == NNC_KBUF_VIEW)
      d->p.bufs[b].offset = d->p.bufs[nnc_kbuf_base(&d->p, b)].offset;
  d->w_bytes = off;
}

static bool touches(const nnc_kprog *p, const int *bufs, int n, int base) {
  for (int j = 0; j < n; j++)
    if (nnc_kbuf_base(p, bufs[j]) == base) return true;
  return false;
}

/* The loop kernel that can store temporary `base` quantised for kernel
 * `reader`, or -1: one writer before it, a float loop kernel that does not
 * read it, and no reader but `reader`. */
static int sole_writer(const nnc_deploy *d, int base, int reader) {
  const nnc_kprog *p = &d->p;
  int writer = -1;
  if (p->bufs[base].kind != NNC_KBUF_TEMP) return -1;
  for (int j = 0; j < p->eval.n; j++) {
    const nnc_kernel *k = p->eval.k[j];
    bool reads = touches(p, k->reads, k->nreads, base);
    bool writes = touches(p, k->writes, k->nwrites, base);
    if (j == reader) {
      if (writes) return -1;
      continue;
    }
    if (reads || (writes && (writer >= 0 || k->is_gemm || j > reader))) return -1;
    if (writes) writer = j;
  }
  return writer;
}

/* Is e an element of base buffer `from` (*from, -1 until one is seen)? */
static bool element_of(const nnc_kprog *p, const nnc_kexpr *e, int *from) {
  if (e->kind != NNC_KX_LOAD || e->type != NNC_KT_F32 || e->a[0]->reads_mem) return false;
  int b = nnc_kbuf_base(p, e->buf);
  if (*from >= 0 && b != *from) return false;
  *from = b;
  return true;
}

/* Can blk compute on quantised values: does it store only into `base`,
 * at indices that read no memory, a constant, an element of one other
 * buffer (*from) or a kernel scalar, every scalar holding -inf and then
 * maxima of itself and such elements? Then quantising its input instead
 * of its output gives the same bytes (quantising is monotone). */
static bool byte_exact(const nnc_kprog *p, const nnc_kblock *blk, int base, int *from) {
  for (int i = 0; i < blk->n; i++) {
    const nnc_kstmt *s = blk->s[i];
    const nnc_kexpr *v = s->value;
    if (s->kind == NNC_KS_LOOP) {
      if (!byte_exact(p, &s->body, base, from)) return false;
    } else if (s->kind == NNC_KS_STORE) {
      if (nnc_kbuf_base(p, s->buf) != base || s->index->reads_mem) return false;
      if (v->kind != NNC_KX_CONST && v->kind != NNC_KX_SCALAR && !element_of(p, v, from))
        return false;
    } else if (v->kind == NNC_KX_CONST) { /* a scalar: -inf, then maxima */
      if (!(v->f < 0 && isinf(v->f))) return false;
    } else {
      if (v->kind != NNC_KX_BIN || v->op != NNC_K_MAX || v->type != NNC_KT_F32) return false;
      for (int j = 0; j < 2; j++)
        if (!(v->a[j]->kind == NNC_KX_SCALAR && v->a[j]->var == s->var) &&
            !element_of(p, v->a[j], from))
          return false;
    }
  }
  return true;
}

/* Where product q (eval kernel i) gets its A in bytes (nnc_kqgemm's
 * nbyte, byte_buf, byte_writer): back from A through sole writers that
 * are byte exact. */
static void byte_inputs(const nnc_deploy *d, int i, nnc_kqgemm *q) {
  const nnc_kprog *p = &d->p;
  int buf = nnc_kbuf_base(p, q->a_buf), reader = i;
  q->nbyte = 0;
  while (q->nbyte < NNC_KQ_CHAIN) {
    int w = sole_writer(d, buf, reader), from = -1;
    if (w < 0) return;
    q->byte_buf[q->nbyte] = buf;
    q->byte_writer[q->nbyte++] = w;
    if (!byte_exact(p, &p->eval.k[w]->body, buf, &from) || from < 0) return;
    for (int c = 0; c < q->nbyte; c++) /* no cycles */
      if (q->byte_buf[c] == from) return;
    buf = from, reader = w;
  }
}

int nnc_deploy_quantize(nnc_deploy *d, const nnc_deploy_values *v, const bool *which,
                        const float *amin, const float *amax) {
  int n = 0;
  d->quant = nnc_arena_alloc(&d->arena, sizeof(nnc_kqgemm *) * ((size_t)d->p.eval.n + 1));
  int64_t scratch = 0;
  for (int i = 0; i < d->p.eval.n; i++) {
    if (!which[i]) continue;
    nnc_kqgemm *q = quantize_one(d, v, d->p.eval.k[i], amin[i], amax[i]);
    q->scratch = d->ws_bytes;
    q->out_buf = q->absorbed = -1;
    byte_inputs(d, i, q);
    int64_t rows = q->M > 16 ? q->M : 16; /* llvm_qgemm.c quantises blocks of 16 rows */
    if (rows * q->K4 > scratch) scratch = rows * q->K4;
    d->quant[i] = q;
    n++;
  }
  d->ws_bytes += aligned(scratch); /* one scratch, used by one product at a time */
  relayout_weights(d);
  return n;
}

int64_t nnc_deploy_int8_bytes(const nnc_deploy *d) {
  int64_t bytes = 0;
  for (int i = 0; d->quant && i < d->p.eval.n; i++)
    if (d->quant[i]) bytes += d->quant[i]->N * (d->quant[i]->K4 + 8); /* w, offset, scale */
  return bytes;
}

nnc_kqstore nnc_kq_store_of(const nnc_kqgemm *const *quant, int n, int k) {
  for (int i = 0; quant && i < n; i++)
    for (int c = 0; quant[i] && c < quant[i]->nbyte; c++)
      if (quant[i]->byte_writer[c] == k)
        return (nnc_kqstore){.q = quant[i],
                             .product = i,
                             .buf = quant[i]->byte_buf[c],
                             .from = c + 1 < quant[i]->nbyte ? quant[i]->byte_buf[c + 1] : -1};
  return (nnc_kqstore){.product = -1, .buf = -1, .from = -1};
}

bool nnc_kq_absorbed(const nnc_kqgemm *const *quant, int n, int k) {
  for (int i = 0; quant && i < n; i++)
    if (quant[i] && quant[i]->out_buf >= 0 && quant[i]->absorbed == k) return true;
  return false;
}

/* ---- requantising epilogues (nnc_kqgemm.out_buf) ---- */

/* coef[var] += scale * (e's coefficient), *c0 += scale * e's constant:
 * false when e (i64) is not affine in the loop variables. */
static bool affine(const nnc_kexpr *e, int64_t scale, int64_t *coef, int64_t *c0) {
  if (e->kind == NNC_KX_VAR) {
    coef[e->var] += scale;
    return true;
  }
  if (e->kind == NNC_KX_CONST && !nnc_kt_is_float(e->type)) {
    *c0 += scale * e->i;
    return true;
  }
  if (e->kind != NNC_KX_BIN || nnc_kt_is_float(e->type)) return false;
  if (e->op == NNC_K_ADD)
    return affine(e->a[0], scale, coef, c0) && affine(e->a[1], scale, coef, c0);
  for (int j = 0; e->op == NNC_K_MUL && j < 2; j++)
    if (e->a[j]->kind == NNC_KX_CONST && !nnc_kt_is_float(e->a[j]->type))
      return affine(e->a[1 - j], scale * e->a[j]->i, coef, c0);
  return false;
}

/* What the absorbed kernel computes of an element x of C: s * x + t,
 * evaluated for column n at compile time (in double). */
typedef struct fold {
  const nnc_deploy *d, *cal;
  const nnc_deploy_values *v;
  const void *cal_ws;
  const nnc_kernel *k; /* the consumer */
  int c_base, chan;    /* C's base buffer; the loop variable of C's column */
  const nnc_kexpr *x;  /* the load of C */
  int64_t *coef;       /* [k->nvars] scratch */
} fold;

/* Element idx of the float buffer b as the program holds it when the
 * consumer runs: a weight, or a temporary as the calibration left it (a
 * function of the weights only: checked by the caller). */
static bool value_of(const fold *F, int b, int64_t idx, double *out) {
  const nnc_kbuf *buf = &F->d->p.bufs[b];
  if (idx < 0 || idx >= buf->numel || buf->type != NNC_KT_F32) return false;
  if (buf->kind == NNC_KBUF_TENSOR) {
    *out = F->v->tensor[buf->id][idx];
    return true;
  }
  if (buf->kind != NNC_KBUF_TEMP || !F->cal || F->cal->p.nbufs != F->d->p.nbufs) return false;
  for (int j = 0; j < F->d->p.eval.n; j++) { /* computed only from weights */
    const nnc_kernel *k = F->d->p.eval.k[j];
    if (!touches(&F->d->p, k->writes, k->nwrites, b)) continue;
    for (int a = 0; a < k->nreads; a++)
      if (!nnc_deploy_in_weights(F->d, nnc_kbuf_base(&F->d->p, k->reads[a]))) return false;
  }
  const nnc_kbuf *cb = &F->cal->p.bufs[b];
  if (cb->numel != buf->numel || strcmp(cb->name, buf->name)) return false;
  *out = ((const float *)((const char *)F->cal_ws + cb->offset))[idx];
  return true;
}

/* e = s * x + t for column n, or false. */
static bool fold_expr(const fold *F, const nnc_kexpr *e, int64_t n, double *s, double *t) {
  double s1 = 0, t1 = 0, s2 = 0, t2 = 0;
  switch (e->kind) {
  case NNC_KX_CONST:
    if (!nnc_kt_is_float(e->type)) return false;
    *s = 0, *t = e->f;
    return true;
  case NNC_KX_LOAD: {
    int b = nnc_kbuf_base(&F->d->p, e->buf);
    if (b == F->c_base) {
      if (!nnc_kexpr_eq(e, F->x)) return false;
      *s = 1, *t = 0;
      return true;
    }
    int64_t c0 = 0;
    memset(F->coef, 0, sizeof(int64_t) * (size_t)F->k->nvars);
    if (!affine(e->a[0], 1, F->coef, &c0)) return false;
    for (int j = 0; j < F->k->nvars; j++)
      if (j != F->chan && F->coef[j]) return false;
    *s = 0;
    return value_of(F, b, c0 + F->coef[F->chan] * n, t);
  }
  case NNC_KX_UN:
    if (!fold_expr(F, e->a[0], n, &s1, &t1)) return false;
    if (e->op == NNC_K_NEG) {
      *s = -s1, *t = -t1;
      return true;
    }
    if (s1 != 0) return false; /* the rest only of weights */
    *s = 0;
    if (e->op == NNC_K_RSQRT)
      *t = 1 / sqrt(t1);
    else if (e->op == NNC_K_SQRT)
      *t = sqrt(t1);
    else if (e->op == NNC_K_RECIP)
      *t = 1 / t1;
    else
      return false;
    return true;
  case NNC_KX_BIN:
    if (e->type != NNC_KT_F32 || !fold_expr(F, e->a[0], n, &s1, &t1) ||
        !fold_expr(F, e->a[1], n, &s2, &t2))
      return false;
    switch (e->op) {
    case NNC_K_ADD: *s = s1 + s2, *t = t1 + t2; return true;
    case NNC_K_SUB: *s = s1 - s2, *t = t1 - t2; return true;
    case NNC_K_MUL:
      if (s1 != 0 && s2 != 0) return false;
      *s = s1 * t2 + s2 * t1, *t = t1 * t2;
      return true;
    case NNC_K_DIV:
      if (s2 != 0) return false;
      *s = s1 / t2, *t = t1 / t2;
      return true;
    default: return false;
    }
  default: return false;
  }
}

/* Does byte range [o, o + n) of the workspace meet base buffer b's? */
static bool overlaps(const nnc_deploy *d, int b, int64_t o, int64_t n) {
  const nnc_kbuf *x = &d->p.bufs[b];
  if (nnc_deploy_in_weights(d, b)) return false;
  int64_t xn = x->numel * nnc_kt_size(x->type);
  return x->offset < o + n && o < x->offset + xn;
}

/* Can product q (eval kernel i) store what the consumer of its C stores,
 * in bytes, at the consumer's indices (see nnc_kqgemm.out_buf)? Fills q's
 * out_* fields and returns true if so. */
static bool requant_one(nnc_deploy *d, const nnc_deploy_values *v, const nnc_deploy *cal,
                        const void *cal_ws, int i, nnc_kqgemm *q) {
  const nnc_kprog *p = &d->p;
  int cb = nnc_kbuf_base(p, q->c_buf), r = -1;
  if (q->relu || q->ldc != q->N || p->bufs[cb].kind != NNC_KBUF_TEMP) return false;
  for (int j = 0; j < p->eval.n; j++) { /* C's only reader, after q; no other writer */
    const nnc_kernel *k = p->eval.k[j];
    if (j != i && touches(p, k->writes, k->nwrites, cb)) return false;
    if (!touches(p, k->reads, k->nreads, cb)) continue;
    if (r >= 0 || j < i || k->is_gemm || d->quant[j]) return false;
    r = j;
  }
  if (r < 0) return false;
  nnc_kqstore st = nnc_kq_store_of((const nnc_kqgemm *const *)d->quant, p->eval.n, r);
  const nnc_kernel *k = p->eval.k[r];
  if (!st.q || st.from >= 0 || st.q->byte_writer[st.q->nbyte - 1] != r || k->nwrites != 1 ||
      k->nvars > 64)
    return false;
  /* a perfect loop nest around one store */
  int64_t ext[64] = {0};
  const nnc_kblock *blk = &k->body;
  while (blk->n == 1 && blk->s[0]->kind == NNC_KS_LOOP) {
    ext[blk->s[0]->var] = blk->s[0]->extent;
    blk = &blk->s[0]->body;
  }
  if (blk->n != 1 || blk->s[0]->kind != NNC_KS_STORE) return false;
  const nnc_kstmt *s = blk->s[0];
  if (nnc_kbuf_base(p, s->buf) != st.buf) return false;
  /* the value: relu?(affine in x), x the one load of C */
  const nnc_kexpr *e = s->value, *x = NULL;
  bool relu = e->kind == NNC_KX_UN && e->op == NNC_K_RELU;
  if (relu) e = e->a[0];
  const nnc_kexpr *stack[64];
  int top = 0;
  stack[top++] = e;
  while (top > 0) { /* find x */
    const nnc_kexpr *y = stack[--top];
    if (y->kind == NNC_KX_LOAD && nnc_kbuf_base(p, y->buf) == cb)
      x = y;
    else if (y->kind != NNC_KX_LOAD)
      for (int j = 0; j < 3 && y->a[j] && top < 64; j++)
        stack[top++] = y->a[j];
  }
  if (!x) return false;
  /* x's index: m * N + n, n a variable of extent N, m a mixed radix of
   * the others; the store's: n * out_col + ... */
  int64_t cx[64] = {0}, co[64] = {0}, x0 = 0, o0 = 0;
  if (!affine(x->a[0], 1, cx, &x0) || !affine(s->index, 1, co, &o0) || x0 || o0) return false;
  int chan = -1, nd = 0, order[64];
  for (int j = 0; j < k->nvars; j++) {
    if (ext[j] <= 1) continue;
    if (cx[j] == 1 && ext[j] == q->N && chan < 0) {
      chan = j;
      continue;
    }
    if (cx[j] <= 0 || cx[j] % q->N) return false;
    order[nd++] = j;
  }
  if (chan < 0) return false;
  for (int a = 1; a < nd; a++) /* by row coefficient */
    for (int b = a; b > 0 && cx[order[b]] < cx[order[b - 1]]; b--) {
      int t = order[b];
      order[b] = order[b - 1], order[b - 1] = t;
    }
  int64_t rows = 1;
  q->out_ndim = 0;
  for (int a = 0; a < nd; a++) {
    int j = order[a];
    if (cx[j] / q->N != rows) return false;
    int D = q->out_ndim;
    if (D > 0 && co[j] == q->out_step[D - 1] * q->out_ext[D - 1]) { /* contiguous: merge */
      q->out_ext[D - 1] *= ext[j];
    } else {
      if (D == NNC_KQ_DIMS) return false;
      q->out_row[D] = rows, q->out_ext[D] = ext[j], q->out_step[D] = co[j];
      q->out_ndim++;
    }
    rows *= ext[j];
  }
  if (rows != q->M) return false;
  q->out_col = co[chan];
  /* the bytes are a permutation of C's elements, within out_buf */
  int ob = st.buf;
  if (q->out_col <= 0 || q->out_col * (q->N - 1) >= p->bufs[ob].numel) return false;
  /* the affine map per column */
  int64_t coef[64];
  fold F = {.d = d, .cal = cal, .v = v, .cal_ws = cal_ws, .k = k};
  F.c_base = cb, F.chan = chan, F.x = x, F.coef = coef;
  float *mul = nnc_arena_alloc(&d->arena, sizeof(float) * (size_t)q->N);
  float *add = nnc_arena_alloc(&d->arena, sizeof(float) * (size_t)q->N);
  for (int64_t n = 0; n < q->N; n++) {
    double sn, tn;
    if (!fold_expr(&F, e, n, &sn, &tn) || !isfinite(sn) || !isfinite(tn)) return false;
    mul[n] = (float)sn, add[n] = (float)tn;
  }
  /* The plan gave out_buf its memory from the consumer on; where anything
   * that runs from the product to the consumer (the product included)
   * touches that memory (the product's A, say), out_buf moves to memory
   * of its own after the workspace (its bytes only: only bytes are read
   * from it). */
  int64_t oo = p->bufs[ob].offset, on = p->bufs[ob].numel * nnc_kt_size(p->bufs[ob].type);
  bool apart = q->scratch < oo + on && oo < q->scratch + (q->M > 16 ? q->M : 16) * q->K4;
  for (int j = i; j < r && !apart; j++) {
    const nnc_kernel *kj = p->eval.k[j];
    for (int a = 0; a < kj->nreads; a++)
      apart |= overlaps(d, nnc_kbuf_base(p, kj->reads[a]), oo, on);
    for (int a = 0; a < kj->nwrites; a++)
      apart |= nnc_kbuf_base(p, kj->writes[a]) != cb &&
               overlaps(d, nnc_kbuf_base(p, kj->writes[a]), oo, on);
  }
  if (apart) {
    int64_t at = d->ws_bytes;
    d->ws_bytes += aligned(p->bufs[ob].numel);
    for (int b = 0; b < p->nbufs; b++)
      if (nnc_kbuf_base(p, b) == ob) d->p.bufs[b].offset = at;
  }
  q->out_mul = mul, q->out_add = add, q->out_relu = relu;
  q->out_q = st.q, q->out_buf = ob, q->absorbed = r;
  return true;
}

int nnc_deploy_requantize(nnc_deploy *d, const nnc_deploy_values *v, const nnc_deploy *cal,
                          const void *cal_ws) {
  int n = 0;
  for (int i = 0; d->quant && i < d->p.eval.n; i++)
    if (d->quant[i] && requant_one(d, v, cal, cal_ws, i, d->quant[i])) n++;
  if (n) relayout_weights(d);
  return n;
}
