/* onednn_conv.c: the kernel-level peer of nnc's convolutions. Times oneDNN's
 * f32 convolution (forward with bias, backward data, backward weights) on
 * the shapes given on the command line, each in the layouts oneDNN picks for
 * itself (format "any"); the reorders from and to plain NCHW/OIHW happen
 * once, outside the timed loop. Before timing, each direction's result is
 * checked at a few points against a plain sum over the NCHW/OIHW data, so a
 * wrong argument cannot pass as a fast convolution. oneDNN runs on OpenMP:
 * OMP_NUM_THREADS sets its threads.
 *
 * A benchmark program, not part of nnc (nothing of nnc links oneDNN), built
 * only where CMake finds Debian's libdnnl-dev (oneDNN 2.6 C API).
 * bench/conv_peer.sh runs it beside nnc's own convolutions and the FMA peak
 * probe; docs/performance.md has the figures.
 *
 *   OMP_NUM_THREADS=T build-rel/bench/onednn_conv ITERS NAME N IC H W OC K STRIDE PAD [NAME ...]
 *
 * Prints one line per shape and direction:
 *   ONEDNN shape=NAME dir=fwd|bwd_data|bwd_weights n=.. ic=.. h=.. w=.. oc=.. oh=.. ow=.. k=..
 *          stride=.. pad=.. us=MEDIAN mean_us=MEAN gflops=G impl=oneDNN's kernel
 * with FLOPs = 2*N*OC*OH*OW*IC*K*K, the median and mean of ITERS timed
 * calls, and G from the median.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

typedef struct shape {
  const char *name;
  long n, ic, h, w, oc, k, stride, pad, oh, ow;
} shape;

/* The engine and stream every primitive runs on. */
typedef struct ctx {
  dnnl_engine_t engine;
  dnnl_stream_t stream;
} ctx;

static void check(dnnl_status_t s, const char *what) {
  if (s == dnnl_success) return;
  fprintf(stderr, "onednn_conv: %s failed (dnnl status %d)\n", what, (int)s);
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return 1e6 * (double)ts.tv_sec + 1e-3 * (double)ts.tv_nsec;
}

static dnnl_memory_desc_t md4(long a, long b, long c, long d, dnnl_format_tag_t tag) {
  dnnl_memory_desc_t md;
  dnnl_dims_t dims = {a, b, c, d};
  check(dnnl_memory_desc_init_by_tag(&md, 4, dims, dnnl_f32, tag), "memory_desc_init_by_tag");
  return md;
}

/* A plain buffer of n floats and the oneDNN memory over it. */
typedef struct plain {
  float *v;
  long n;
  dnnl_memory_t mem;
} plain;

static plain plain_new(const ctx *c, const dnnl_memory_desc_t *md, unsigned *seed) {
  plain p;
  p.n = (long)(dnnl_memory_desc_get_size(md) / sizeof(float));
  p.v = malloc(sizeof(float) * (size_t)p.n);
  if (!p.v) {
    fprintf(stderr, "onednn_conv: out of memory\n");
    exit(1);
  }
  for (long i = 0; i < p.n; i++) { /* uniform in [-1, 1): no denormals */
    *seed = *seed * 1664525u + 1013904223u;
    p.v[i] = (float)(*seed >> 8) / (float)(1u << 23) - 1.0f;
  }
  check(dnnl_memory_create(&p.mem, md, c->engine, p.v), "memory_create (plain)");
  return p;
}

static void plain_free(plain *p) {
  dnnl_memory_destroy(p->mem);
  free(p->v);
}

static void reorder(const ctx *c, dnnl_memory_t from, dnnl_memory_t to) {
  const dnnl_memory_desc_t *fmd, *tmd;
  check(dnnl_memory_get_memory_desc(from, &fmd), "memory_get_memory_desc");
  check(dnnl_memory_get_memory_desc(to, &tmd), "memory_get_memory_desc");
  dnnl_primitive_desc_t pd;
  dnnl_primitive_t r;
  check(dnnl_reorder_primitive_desc_create(&pd, fmd, c->engine, tmd, c->engine, NULL),
        "reorder_primitive_desc_create");
  check(dnnl_primitive_create(&r, pd), "primitive_create (reorder)");
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
  check(dnnl_primitive_execute(r, c->stream, 2, args), "reorder");
  check(dnnl_stream_wait(c->stream), "stream_wait");
  dnnl_primitive_destroy(r);
  dnnl_primitive_desc_destroy(pd);
}

/* The memory the primitive wants for one argument (query), in its layout,
 * filled from the plain buffer (for outputs the values are overwritten). */
static dnnl_memory_t arg_memory(const ctx *c, const_dnnl_primitive_desc_t pd, dnnl_query_t query,
                                const plain *from) {
  const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, query, 0);
  dnnl_memory_t m;
  check(dnnl_memory_create(&m, md, c->engine, DNNL_MEMORY_ALLOCATE), "memory_create");
  reorder(c, from->mem, m);
  return m;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median and mean microseconds of iters calls of the primitive, after a
 * warm-up. The mean is what nnc's profile reports (total time over calls),
 * so it is the figure to compare with nnc on a loaded machine; the median
 * is the call that other processes did not interrupt. */
typedef struct timing {
  double median_us, mean_us;
} timing;

static timing time_primitive(const ctx *c, dnnl_primitive_t p, int nargs,
                             const dnnl_exec_arg_t *args, int iters) {
  double *t = malloc(sizeof(double) * (size_t)iters);
  if (!t) exit(1);
  for (int i = 0; i < 3; i++)
    check(dnnl_primitive_execute(p, c->stream, nargs, args), "execute");
  check(dnnl_stream_wait(c->stream), "stream_wait");
  for (int i = 0; i < iters; i++) {
    double t0 = now_us();
    check(dnnl_primitive_execute(p, c->stream, nargs, args), "execute");
    check(dnnl_stream_wait(c->stream), "stream_wait");
    t[i] = now_us() - t0;
  }
  timing r = {0, 0};
  for (int i = 0; i < iters; i++)
    r.mean_us += t[i] / iters;
  qsort(t, (size_t)iters, sizeof(double), cmp_double);
  r.median_us = t[iters / 2];
  free(t);
  return r;
}

/* The plain references, one output point each, from up to three plain
 * NCHW/OIHW inputs (the ones a direction does not use are unused). */
typedef double (*ref_fn)(const shape *s, const float *a, const float *b, const float *c, long d0,
                         long d1, long d2, long d3);

/* Input pixel (n, c, y, x) of the plain NCHW source, 0 in the padding. */
static double src_at(const shape *s, const float *src, long n, long ch, long y, long x) {
  if (y < 0 || y >= s->h || x < 0 || x >= s->w) return 0.0;
  return src[((n * s->ic + ch) * s->h + y) * s->w + x];
}

/* dst[n,o,y,x] = b[o] + sum_{c,i,j} src[n,c,y*S-P+i,x*S-P+j] * w[o,c,i,j] */
static double ref_fwd(const shape *s, const float *src, const float *w, const float *b, long n,
                      long o, long y, long x) {
  double acc = b[o];
  for (long ch = 0; ch < s->ic; ch++)
    for (long i = 0; i < s->k; i++)
      for (long j = 0; j < s->k; j++)
        acc += src_at(s, src, n, ch, y * s->stride - s->pad + i, x * s->stride - s->pad + j) *
               w[((o * s->ic + ch) * s->k + i) * s->k + j];
  return acc;
}

/* dsrc[n,c,h,w] = sum over (o,i,j) whose output (y,x) reads (h,w): ddst[n,o,y,x] * w[o,c,i,j] */
static double ref_bwd_data(const shape *s, const float *ddst, const float *w, const float *unused,
                           long n, long ch, long h, long x) {
  double acc = 0.0;
  for (long o = 0; o < s->oc; o++)
    for (long i = 0; i < s->k; i++)
      for (long j = 0; j < s->k; j++) {
        long ty = h + s->pad - i, tx = x + s->pad - j;
        if (ty < 0 || tx < 0 || ty % s->stride || tx % s->stride) continue;
        long oy = ty / s->stride, ox = tx / s->stride;
        if (oy >= s->oh || ox >= s->ow) continue;
        acc += (double)ddst[((n * s->oc + o) * s->oh + oy) * s->ow + ox] *
               w[((o * s->ic + ch) * s->k + i) * s->k + j];
      }
  return acc;
}

/* dw[o,c,i,j] = sum_{n,y,x} ddst[n,o,y,x] * src[n,c,y*S-P+i,x*S-P+j] */
static double ref_bwd_weights(const shape *s, const float *src, const float *ddst,
                              const float *unused, long o, long ch, long i, long j) {
  double acc = 0.0;
  for (long n = 0; n < s->n; n++)
    for (long y = 0; y < s->oh; y++)
      for (long x = 0; x < s->ow; x++)
        acc += (double)ddst[((n * s->oc + o) * s->oh + y) * s->ow + x] *
               src_at(s, src, n, ch, y * s->stride - s->pad + i, x * s->stride - s->pad + j);
  return acc;
}

/* Compares 16 spread points of a 4-d plain result with the reference. */
static void verify(const shape *s, const char *dir, const float *got, const long dims[4],
                   ref_fn ref, const float *a, const float *b, const float *c) {
  for (int t = 0; t < 16; t++) {
    long idx[4];
    for (int d = 0; d < 4; d++)
      idx[d] = (t * (2 * d + 3) + t / 3) % dims[d];
    idx[2] = (t == 0) ? 0 : (t == 1) ? dims[2] - 1 : idx[2]; /* the borders too */
    idx[3] = (t == 0) ? 0 : (t == 1) ? dims[3] - 1 : idx[3];
    double want = ref(s, a, b, c, idx[0], idx[1], idx[2], idx[3]);
    double v = got[((idx[0] * dims[1] + idx[1]) * dims[2] + idx[2]) * dims[3] + idx[3]];
    if (fabs(v - want) > 1e-3 * (1.0 + fabs(want))) {
      fprintf(stderr, "onednn_conv: %s %s at (%ld,%ld,%ld,%ld): %g, reference %g\n", s->name, dir,
              idx[0], idx[1], idx[2], idx[3], v, want);
      exit(1);
    }
  }
}

static void report(const shape *s, const char *dir, timing t, const_dnnl_primitive_desc_t pd) {
  const char *impl = "?";
  if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success) impl = "?";
  double flops = 2.0 * (double)(s->n * s->oc * s->oh * s->ow * s->ic * s->k * s->k);
  printf("ONEDNN shape=%s dir=%s n=%ld ic=%ld h=%ld w=%ld oc=%ld oh=%ld ow=%ld k=%ld stride=%ld "
         "pad=%ld us=%.1f mean_us=%.1f gflops=%.1f impl=%s\n",
         s->name, dir, s->n, s->ic, s->h, s->w, s->oc, s->oh, s->ow, s->k, s->stride, s->pad,
         t.median_us, t.mean_us, flops / t.median_us * 1e-3, impl);
  fflush(stdout);
}

/* One direction of a convolution: its arguments (the last is the output,
 * checked against ref at a few points; query dnnl_query_undef: the plain
 * memory as it is, else oneDNN's layout for that argument), the output's
 * plain dimensions, and the plain inputs of ref. */
typedef struct direction {
  const char *name;
  int nargs;
  struct {
    int arg;
    dnnl_query_t query;
    const plain *data;
  } args[4];
  long out_dims[4];
  ref_fn ref;
  const float *ref_inputs[3];
} direction;

/* Builds the primitive for desc (hint: the forward's, for the backward
 * directions), checks its output, times it and prints the line. Returns its
 * primitive descriptor, which the caller destroys. */
static dnnl_primitive_desc_t run_direction(const ctx *c, const shape *s, const direction *d,
                                           const_dnnl_op_desc_t desc,
                                           const_dnnl_primitive_desc_t hint, int iters) {
  dnnl_primitive_desc_t pd;
  dnnl_primitive_t prim;
  check(dnnl_primitive_desc_create(&pd, desc, NULL, c->engine, hint), "primitive_desc_create");
  check(dnnl_primitive_create(&prim, pd), "primitive_create");
  dnnl_exec_arg_t args[4];
  for (int i = 0; i < d->nargs; i++)
    args[i] = (dnnl_exec_arg_t){d->args[i].arg,
                                d->args[i].query == dnnl_query_undef
                                    ? d->args[i].data->mem
                                    : arg_memory(c, pd, d->args[i].query, d->args[i].data)};
  check(dnnl_primitive_execute(prim, c->stream, d->nargs, args), "execute");
  check(dnnl_stream_wait(c->stream), "stream_wait");
  const plain *out = d->args[d->nargs - 1].data;
  reorder(c, args[d->nargs - 1].memory, out->mem);
  verify(s, d->name, out->v, d->out_dims, d->ref, d->ref_inputs[0], d->ref_inputs[1],
         d->ref_inputs[2]);
  report(s, d->name, time_primitive(c, prim, d->nargs, args, iters), pd);
  for (int i = 0; i < d->nargs; i++)
    if (d->args[i].query != dnnl_query_undef) dnnl_memory_destroy(args[i].memory);
  dnnl_primitive_destroy(prim);
  return pd;
}

/* Builds, checks and times the three directions of one shape. */
static void bench_shape(const ctx *c, const shape *s, int iters) {
  unsigned seed = 12345;
  dnnl_memory_desc_t src_md = md4(s->n, s->ic, s->h, s->w, dnnl_nchw);
  dnnl_memory_desc_t w_md = md4(s->oc, s->ic, s->k, s->k, dnnl_oihw);
  dnnl_memory_desc_t dst_md = md4(s->n, s->oc, s->oh, s->ow, dnnl_nchw);
  dnnl_memory_desc_t b_md;
  dnnl_dims_t bdims = {s->oc};
  check(dnnl_memory_desc_init_by_tag(&b_md, 1, bdims, dnnl_f32, dnnl_x), "memory_desc_init_by_tag");
  dnnl_memory_desc_t src_any = md4(s->n, s->ic, s->h, s->w, dnnl_format_tag_any);
  dnnl_memory_desc_t w_any = md4(s->oc, s->ic, s->k, s->k, dnnl_format_tag_any);
  dnnl_memory_desc_t dst_any = md4(s->n, s->oc, s->oh, s->ow, dnnl_format_tag_any);
  dnnl_dims_t strides = {s->stride, s->stride}, pad = {s->pad, s->pad};
  plain src = plain_new(c, &src_md, &seed), w = plain_new(c, &w_md, &seed);
  plain b = plain_new(c, &b_md, &seed), ddst = plain_new(c, &dst_md, &seed);
  plain out_dst = plain_new(c, &dst_md, &seed), out_dsrc = plain_new(c, &src_md, &seed);
  plain out_dw = plain_new(c, &w_md, &seed);

  const dnnl_query_t SRC = dnnl_query_src_md, W = dnnl_query_weights_md;

  /* Forward (training), with bias as nnc's forward product has it. */
  dnnl_convolution_desc_t fd;
  check(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct,
                                           &src_any, &w_any, &b_md, &dst_any, strides, pad, pad),
        "convolution_forward_desc_init");
  const direction fwd = {"fwd",
                         4,
                         {{DNNL_ARG_SRC, SRC, &src},
                          {DNNL_ARG_WEIGHTS, W, &w},
                          {DNNL_ARG_BIAS, dnnl_query_undef, &b},
                          {DNNL_ARG_DST, dnnl_query_dst_md, &out_dst}},
                         {s->n, s->oc, s->oh, s->ow},
                         ref_fwd,
                         {src.v, w.v, b.v}};
  dnnl_primitive_desc_t fpd = run_direction(c, s, &fwd, &fd, NULL, iters);

  /* Backward data: the input's gradient from the output's. */
  dnnl_convolution_desc_t dd;
  check(dnnl_convolution_backward_data_desc_init(&dd, dnnl_convolution_direct, &src_any, &w_any,
                                                 &dst_any, strides, pad, pad),
        "convolution_backward_data_desc_init");
  const direction bwd_data = {"bwd_data",
                              3,
                              {{DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, &ddst},
                               {DNNL_ARG_WEIGHTS, W, &w},
                               {DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, &out_dsrc}},
                              {s->n, s->ic, s->h, s->w},
                              ref_bwd_data,
                              {ddst.v, w.v, NULL}};
  dnnl_primitive_desc_destroy(run_direction(c, s, &bwd_data, &dd, fpd, iters));

  /* Backward weights (no bias gradient: nnc's is a separate sum). */
  dnnl_convolution_desc_t wd;
  check(dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &src_any, &w_any,
                                                    NULL, &dst_any, strides, pad, pad),
        "convolution_backward_weights_desc_init");
  const direction bwd_weights = {"bwd_weights",
                                 3,
                                 {{DNNL_ARG_SRC, SRC, &src},
                                  {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, &ddst},
                                  {DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, &out_dw}},
                                 {s->oc, s->ic, s->k, s->k},
                                 ref_bwd_weights,
                                 {src.v, ddst.v, NULL}};
  dnnl_primitive_desc_destroy(run_direction(c, s, &bwd_weights, &wd, fpd, iters));
  dnnl_primitive_desc_destroy(fpd);
  plain *ps[] = {&src, &w, &b, &ddst, &out_dst, &out_dsrc, &out_dw};
  for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
    plain_free(ps[i]);
}

static int parse_long(const char *s, long min, long *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v < min || v > 100000) return 0;
  *out = v;
  return 1;
}

int main(int argc, char **argv) {
  long iters;
  if (argc < 11 || (argc - 2) % 9 != 0 || !parse_long(argv[1], 1, &iters)) {
    fprintf(stderr, "usage: onednn_conv ITERS NAME N IC H W OC K STRIDE PAD [NAME N IC ...]\n");
    return 2;
  }
  ctx c;
  check(dnnl_engine_create(&c.engine, dnnl_cpu, 0), "engine_create");
  check(dnnl_stream_create(&c.stream, c.engine, dnnl_stream_default_flags), "stream_create");
  for (int a = 2; a < argc; a += 9) {
    shape s = {.name = argv[a]};
    long *f[] = {&s.n, &s.ic, &s.h, &s.w, &s.oc, &s.k, &s.stride, &s.pad};
    for (int i = 0; i < 8; i++)
      if (!parse_long(argv[a + 1 + i], i == 7 ? 0 : 1, f[i])) {
        fprintf(stderr, "onednn_conv: %s: bad number '%s'\n", s.name, argv[a + 1 + i]);
        return 2;
      }
    s.oh = (s.h + 2 * s.pad - s.k) / s.stride + 1;
    s.ow = (s.w + 2 * s.pad - s.k) / s.stride + 1;
    if (s.oh < 1 || s.ow < 1) {
      fprintf(stderr, "onednn_conv: %s: the kernel is larger than the padded input\n", s.name);
      return 2;
    }
    bench_shape(&c, &s, (int)iters);
  }
  dnnl_stream_destroy(c.stream);
  dnnl_engine_destroy(c.engine);
  return 0;
}
