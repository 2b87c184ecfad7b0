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
 * copies and maxima work on bytes, and so on back.
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
    if (d->quant[i]) continue;
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
