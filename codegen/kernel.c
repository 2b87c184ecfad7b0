/* kernel.c: constructors of the kernel IR (kernel.h), the bookkeeping the
 * memory plan needs (which buffers a kernel reads and writes) and a text
 * dump for debugging. Constant folding here is only what keeps index
 * arithmetic readable (x*1, x+0, constant operands); LLVM does the rest.
 */
#include "kernel.h"

#include <string.h>

nnc_kt nnc_kt_of(nnc_dtype t) {
  switch (t) {
  case NNC_F32: return NNC_KT_F32;
  case NNC_F64: return NNC_KT_F64;
  case NNC_I32: return NNC_KT_I32;
  }
  return NNC_KT_F32;
}

bool nnc_kt_is_float(nnc_kt t) {
  return t == NNC_KT_F32 || t == NNC_KT_F64;
}

int nnc_kt_size(nnc_kt t) {
  switch (t) {
  case NNC_KT_F32: return 4;
  case NNC_KT_F64: return 8;
  case NNC_KT_I32: return 4;
  case NNC_KT_I64: return 8;
  case NNC_KT_BOOL: return 1;
  }
  return 4;
}

static nnc_kexpr *new_expr(nnc_arena *a, nnc_kx_kind kind, nnc_kt t) {
  nnc_kexpr *e = nnc_arena_alloc(a, sizeof *e);
  e->kind = kind;
  e->type = t;
  return e;
}

static void inherit(nnc_kexpr *e, int n) {
  for (int i = 0; i < n; i++) {
    e->reads_mem |= e->a[i]->reads_mem;
    e->reads_scalar |= e->a[i]->reads_scalar;
  }
}

nnc_kexpr *nnc_kx_const(nnc_arena *a, nnc_kt t, double v) {
  nnc_kexpr *e = new_expr(a, NNC_KX_CONST, t);
  if (nnc_kt_is_float(t))
    e->f = v;
  else
    e->i = (int64_t)v;
  return e;
}

nnc_kexpr *nnc_kx_int(nnc_arena *a, int64_t v) {
  nnc_kexpr *e = new_expr(a, NNC_KX_CONST, NNC_KT_I64);
  e->i = v;
  return e;
}

nnc_kexpr *nnc_kx_var(nnc_arena *a, int var) {
  nnc_kexpr *e = new_expr(a, NNC_KX_VAR, NNC_KT_I64);
  e->var = var;
  return e;
}

nnc_kexpr *nnc_kx_scalar(nnc_arena *a, const nnc_kernel *k, int s) {
  nnc_kexpr *e = new_expr(a, NNC_KX_SCALAR, k->scalar_type[s]);
  e->var = s;
  e->reads_scalar = true;
  return e;
}

nnc_kexpr *nnc_kx_load(nnc_arena *a, const nnc_kprog *p, int buf, nnc_kexpr *index) {
  nnc_kexpr *e = new_expr(a, NNC_KX_LOAD, p->bufs[buf].type);
  e->buf = buf;
  e->a[0] = index;
  inherit(e, 1);
  e->reads_mem = true;
  return e;
}

static bool is_cmp(nnc_kop op) {
  return op >= NNC_K_LT && op <= NNC_K_NE;
}

nnc_kexpr *nnc_kx_un(nnc_arena *a, nnc_kop op, nnc_kexpr *x) {
  nnc_kexpr *e = new_expr(a, NNC_KX_UN, x->type);
  e->op = op;
  e->a[0] = x;
  inherit(e, 1);
  return e;
}

static bool is_iconst(const nnc_kexpr *e, int64_t v) {
  return e->kind == NNC_KX_CONST && !nnc_kt_is_float(e->type) && e->i == v;
}

nnc_kexpr *nnc_kx_bin(nnc_arena *a, nnc_kop op, nnc_kexpr *x, nnc_kexpr *y) {
  if (x->type == NNC_KT_I64 && x->kind == NNC_KX_CONST && y->kind == NNC_KX_CONST) {
    switch (op) {
    case NNC_K_ADD: return nnc_kx_int(a, x->i + y->i);
    case NNC_K_SUB: return nnc_kx_int(a, x->i - y->i);
    case NNC_K_MUL: return nnc_kx_int(a, x->i * y->i);
    /* the others are not folded */
    case NNC_K_NEG:
    case NNC_K_EXP:
    case NNC_K_LOG:
    case NNC_K_SQRT:
    case NNC_K_RSQRT:
    case NNC_K_RECIP:
    case NNC_K_TANH:
    case NNC_K_SIGMOID:
    case NNC_K_RELU:
    case NNC_K_ABS:
    case NNC_K_SIGN:
    case NNC_K_ERF:
    case NNC_K_COS:
    case NNC_K_FLOOR:
    case NNC_K_NOT:
    case NNC_K_DIV:
    case NNC_K_REM:
    case NNC_K_MAX:
    case NNC_K_MIN:
    case NNC_K_POW:
    case NNC_K_LT:
    case NNC_K_LE:
    case NNC_K_GT:
    case NNC_K_GE:
    case NNC_K_EQ:
    case NNC_K_NE:
    case NNC_K_AND:
    case NNC_K_OR:
    case NNC_K_COUNT_: break;
    }
  }
  if (x->type == NNC_KT_I64) {
    if ((op == NNC_K_ADD || op == NNC_K_SUB) && is_iconst(y, 0)) return x;
    if (op == NNC_K_ADD && is_iconst(x, 0)) return y;
    if ((op == NNC_K_MUL || op == NNC_K_DIV) && is_iconst(y, 1)) return x;
    if (op == NNC_K_MUL && is_iconst(x, 1)) return y;
    if (op == NNC_K_MUL && (is_iconst(x, 0) || is_iconst(y, 0))) return nnc_kx_int(a, 0);
  }
  nnc_kexpr *e = new_expr(a, NNC_KX_BIN, is_cmp(op) ? NNC_KT_BOOL : x->type);
  e->op = op;
  e->a[0] = x;
  e->a[1] = y;
  inherit(e, 2);
  return e;
}

nnc_kexpr *nnc_kx_bin_exact(nnc_arena *a, nnc_kop op, nnc_kexpr *x, nnc_kexpr *y) {
  nnc_kexpr *e = nnc_kx_bin(a, op, x, y);
  if (e->kind == NNC_KX_BIN && nnc_kt_is_float(x->type)) e->exact = true;
  return e;
}

nnc_kexpr *nnc_kx_select(nnc_arena *a, nnc_kexpr *c, nnc_kexpr *x, nnc_kexpr *y) {
  nnc_kexpr *e = new_expr(a, NNC_KX_SELECT, x->type);
  e->a[0] = c;
  e->a[1] = x;
  e->a[2] = y;
  inherit(e, 3);
  return e;
}

nnc_kexpr *nnc_kx_cast(nnc_arena *a, nnc_kexpr *x, nnc_kt t) {
  if (x->type == t) return x;
  if (x->kind == NNC_KX_CONST && !nnc_kt_is_float(x->type) && t == NNC_KT_I64)
    return nnc_kx_int(a, x->i);
  nnc_kexpr *e = new_expr(a, NNC_KX_CAST, t);
  e->a[0] = x;
  inherit(e, 1);
  return e;
}

nnc_kexpr *nnc_kx_rand(nnc_arena *a, nnc_kt t, nnc_kexpr *seed, nnc_kexpr *step, nnc_kexpr *index,
                       int64_t stream) {
  nnc_kexpr *e = new_expr(a, NNC_KX_RAND, t);
  e->a[0] = seed;
  e->a[1] = step;
  e->a[2] = index;
  e->i = stream;
  inherit(e, 3);
  return e;
}

nnc_kexpr *nnc_kx_iadd(nnc_arena *a, nnc_kexpr *x, nnc_kexpr *y) {
  return nnc_kx_bin(a, NNC_K_ADD, x, y);
}

nnc_kexpr *nnc_kx_imul(nnc_arena *a, nnc_kexpr *x, int64_t c) {
  return nnc_kx_bin(a, NNC_K_MUL, x, nnc_kx_int(a, c));
}

/* ---- Kernels and statements ---- */

nnc_kernel *nnc_kernel_new(nnc_arena *a, const char *name) {
  nnc_kernel *k = nnc_arena_alloc(a, sizeof *k);
  k->name = nnc_arena_strdup(a, name);
  k->extent = 1;
  k->bias_buf = -1;
  return k;
}

int nnc_kernel_var(nnc_kernel *k) {
  return k->nvars++;
}

int nnc_kernel_scalar(nnc_arena *a, nnc_kernel *k, nnc_kt t) {
  k->scalar_type = nnc_arena_grow(a, k->scalar_type, sizeof(nnc_kt) * (size_t)k->nscalars,
                                  sizeof(nnc_kt) * (size_t)(k->nscalars + 1));
  k->scalar_type[k->nscalars] = t;
  return k->nscalars++;
}

static nnc_kstmt *append(nnc_arena *a, nnc_kblock *blk, nnc_ks_kind kind) {
  if (blk->n == blk->cap) {
    int cap = blk->cap ? 2 * blk->cap : 4;
    blk->s = nnc_arena_grow(a, blk->s, sizeof(nnc_kstmt *) * (size_t)blk->n,
                            sizeof(nnc_kstmt *) * (size_t)cap);
    blk->cap = cap;
  }
  nnc_kstmt *s = nnc_arena_alloc(a, sizeof *s);
  s->kind = kind;
  blk->s[blk->n++] = s;
  return s;
}

nnc_kblock *nnc_kb_loop(nnc_arena *a, nnc_kblock *blk, int var, int64_t extent) {
  nnc_kstmt *s = append(a, blk, NNC_KS_LOOP);
  s->var = var;
  s->extent = extent;
  return &s->body;
}

void nnc_kb_store(nnc_arena *a, nnc_kblock *blk, int buf, nnc_kexpr *index, nnc_kexpr *value) {
  nnc_kstmt *s = append(a, blk, NNC_KS_STORE);
  s->buf = buf;
  s->index = index;
  s->value = value;
}

void nnc_kb_set(nnc_arena *a, nnc_kblock *blk, int scalar, nnc_kexpr *value) {
  nnc_kstmt *s = append(a, blk, NNC_KS_SET);
  s->var = scalar;
  s->value = value;
}

static void add_unique(nnc_arena *a, int **list, int *n, int b) {
  for (int i = 0; i < *n; i++)
    if ((*list)[i] == b) return;
  *list = nnc_arena_grow(a, *list, sizeof(int) * (size_t)*n, sizeof(int) * (size_t)(*n + 1));
  (*list)[(*n)++] = b;
}

static void collect_expr(nnc_arena *a, nnc_kernel *k, const nnc_kexpr *e) {
  if (!e || !e->reads_mem) return;
  if (e->kind == NNC_KX_LOAD) add_unique(a, &k->reads, &k->nreads, e->buf);
  for (int i = 0; i < 3; i++)
    collect_expr(a, k, e->a[i]);
}

static void collect_block(nnc_arena *a, nnc_kernel *k, const nnc_kblock *b) {
  for (int i = 0; i < b->n; i++) {
    const nnc_kstmt *s = b->s[i];
    switch (s->kind) {
    case NNC_KS_LOOP: collect_block(a, k, &s->body); break;
    case NNC_KS_STORE:
      collect_expr(a, k, s->index);
      collect_expr(a, k, s->value);
      add_unique(a, &k->writes, &k->nwrites, s->buf);
      break;
    case NNC_KS_SET: collect_expr(a, k, s->value); break;
    }
  }
}

void nnc_kernel_finish(nnc_arena *a, nnc_kernel *k) {
  if (k->is_gemm) {
    add_unique(a, &k->reads, &k->nreads, k->a_buf);
    add_unique(a, &k->reads, &k->nreads, k->b_buf);
    if (k->bias_buf >= 0) add_unique(a, &k->reads, &k->nreads, k->bias_buf);
    if (k->gemm.accumulate) add_unique(a, &k->reads, &k->nreads, k->c_buf);
    add_unique(a, &k->writes, &k->nwrites, k->c_buf);
    return;
  }
  if (k->is_conv) {
    add_unique(a, &k->reads, &k->nreads, k->conv.in_buf);
    add_unique(a, &k->reads, &k->nreads, k->conv.w_buf);
    if (k->conv.bias_buf >= 0) add_unique(a, &k->reads, &k->nreads, k->conv.bias_buf);
    add_unique(a, &k->writes, &k->nwrites, k->conv.out_buf);
    return;
  }
  if (k->conv_dw) {
    add_unique(a, &k->reads, &k->nreads, k->conv_dw->dy_buf);
    add_unique(a, &k->reads, &k->nreads, k->conv_dw->x_buf);
    add_unique(a, &k->writes, &k->nwrites, k->conv_dw->dw_buf);
    add_unique(a, &k->writes, &k->nwrites, k->conv_dw->scratch_buf);
    return;
  }
  collect_block(a, k, &k->body);
}

void nnc_kgraph_add(nnc_arena *a, nnc_kgraph *g, nnc_kernel *k) {
  if (g->n == g->cap) {
    int cap = g->cap ? 2 * g->cap : 16;
    g->k = nnc_arena_grow(a, g->k, sizeof(nnc_kernel *) * (size_t)g->n,
                          sizeof(nnc_kernel *) * (size_t)cap);
    g->cap = cap;
  }
  g->k[g->n++] = k;
}

int nnc_kprog_add_buf(nnc_kprog *p, nnc_kbuf_kind kind, int id, nnc_kt t, int64_t numel,
                      const char *name) {
  if (p->nbufs == p->buf_cap) {
    int cap = p->buf_cap ? 2 * p->buf_cap : 64;
    p->bufs = nnc_arena_grow(p->arena, p->bufs, sizeof(nnc_kbuf) * (size_t)p->nbufs,
                             sizeof(nnc_kbuf) * (size_t)cap);
    p->buf_cap = cap;
  }
  nnc_kbuf *b = &p->bufs[p->nbufs];
  b->kind = kind;
  b->id = id;
  b->type = t;
  b->numel = numel;
  b->offset = -1;
  b->name = name ? nnc_arena_strdup(p->arena, name) : "";
  return p->nbufs++;
}

void nnc_cg_graphs(const nnc_kprog *p, const nnc_kgraph *gs[NNC_CG_NGRAPHS]) {
  gs[0] = p->has_train ? &p->train : NULL;
  gs[1] = p->has_eval ? &p->eval : NULL;
  gs[2] = p->has_grad ? &p->grad : NULL;
  gs[3] = p->has_update ? &p->update : NULL;
  gs[4] = p->has_grad_half ? &p->grad_half : NULL;
}

int nnc_kbuf_base(const nnc_kprog *p, int b) {
  while (p->bufs[b].kind == NNC_KBUF_VIEW)
    b = p->bufs[b].id;
  return b;
}

bool nnc_kexpr_same_node(const nnc_kexpr *x, const nnc_kexpr *y) {
  return x->kind == y->kind && x->type == y->type && x->op == y->op && x->var == y->var &&
         x->i == y->i && x->f == y->f && x->exact == y->exact;
}

bool nnc_kexpr_eq(const nnc_kexpr *x, const nnc_kexpr *y) {
  if (x == y) return true;
  if (!x || !y || !nnc_kexpr_same_node(x, y) || x->buf != y->buf) return false;
  for (int i = 0; i < 3; i++)
    if (!nnc_kexpr_eq(x->a[i], y->a[i])) return false;
  return true;
}

typedef struct block_match {
  bool (*same_buf)(void *ctx, int x, int y);
  void *ctx;
  long *budget;
} block_match;

static bool same_expr(const block_match *m, const nnc_kexpr *x, const nnc_kexpr *y) {
  if (!x || !y) return x == y;
  if (--*m->budget < 0 || !nnc_kexpr_same_node(x, y)) return false;
  if (x->kind == NNC_KX_LOAD ? !m->same_buf(m->ctx, x->buf, y->buf) : x->buf != y->buf)
    return false;
  for (int i = 0; i < 3; i++)
    if (!same_expr(m, x->a[i], y->a[i])) return false;
  return true;
}

static bool same_block(const block_match *m, const nnc_kblock *x, const nnc_kblock *y, bool split) {
  if (x->n != y->n) return false;
  for (int i = 0; i < x->n; i++) {
    const nnc_kstmt *a = x->s[i], *b = y->s[i];
    if (a->kind != b->kind || a->var != b->var) return false;
    if (a->extent != b->extent && !(split && a->kind == NNC_KS_LOOP)) return false;
    if (a->kind == NNC_KS_LOOP && !same_block(m, &a->body, &b->body, false)) return false;
    if (a->kind == NNC_KS_STORE &&
        (!m->same_buf(m->ctx, a->buf, b->buf) || !same_expr(m, a->index, b->index)))
      return false;
    if (a->kind != NNC_KS_LOOP && !same_expr(m, a->value, b->value)) return false;
  }
  return true;
}

bool nnc_kblock_same(const nnc_kblock *x, const nnc_kblock *y, bool split,
                     bool (*same_buf)(void *ctx, int x, int y), void *ctx, long *budget) {
  block_match m = {same_buf, ctx, budget};
  return same_block(&m, x, y, split);
}

bool nnc_kexpr_reads(const nnc_kprog *p, const nnc_kexpr *e, int base, const nnc_kexpr *except_at) {
  if (!e || !e->reads_mem) return false;
  if (e->kind == NNC_KX_LOAD && nnc_kbuf_base(p, e->buf) == base &&
      !(except_at && nnc_kexpr_eq(e->a[0], except_at)))
    return true;
  for (int i = 0; i < 3; i++)
    if (nnc_kexpr_reads(p, e->a[i], base, except_at)) return true;
  return false;
}

/* ---- Printing ---- */

const char *nnc_kop_name(nnc_kop op) {
  static const char *const names[] = {
#define NAME(e, name) name,
      NNC_KOPS(NAME)
#undef NAME
  };
  return (unsigned)op < NNC_K_COUNT_ ? names[op] : "?";
}

static void print_expr(FILE *out, const nnc_kexpr *e) {
  switch (e->kind) {
  case NNC_KX_CONST:
    if (nnc_kt_is_float(e->type))
      fprintf(out, "%g", e->f);
    else
      fprintf(out, "%lld", (long long)e->i);
    return;
  case NNC_KX_VAR: fprintf(out, "i%d", e->var); return;
  case NNC_KX_SCALAR: fprintf(out, "s%d", e->var); return;
  case NNC_KX_LOAD:
    fprintf(out, "b%d[", e->buf);
    print_expr(out, e->a[0]);
    fputc(']', out);
    return;
  case NNC_KX_UN:
  case NNC_KX_BIN:
    fprintf(out, "%s%s(", nnc_kop_name(e->op), e->exact ? ".exact" : "");
    print_expr(out, e->a[0]);
    if (e->kind == NNC_KX_BIN) {
      fputs(", ", out);
      print_expr(out, e->a[1]);
    }
    fputc(')', out);
    return;
  case NNC_KX_SELECT:
  case NNC_KX_RAND:
    fputs(e->kind == NNC_KX_SELECT ? "select(" : "rand(", out);
    for (int i = 0; i < 3; i++) {
      if (i) fputs(", ", out);
      print_expr(out, e->a[i]);
    }
    fputc(')', out);
    return;
  case NNC_KX_CAST:
    fprintf(out, "cast<%d>(", (int)e->type);
    print_expr(out, e->a[0]);
    fputc(')', out);
    return;
  }
}

static void print_block(FILE *out, const nnc_kblock *b, int depth) {
  for (int i = 0; i < b->n; i++) {
    const nnc_kstmt *s = b->s[i];
    fprintf(out, "%*s", 2 * depth, "");
    switch (s->kind) {
    case NNC_KS_LOOP:
      fprintf(out, "for i%d < %lld:\n", s->var, (long long)s->extent);
      print_block(out, &s->body, depth + 1);
      break;
    case NNC_KS_STORE:
      fprintf(out, "b%d[", s->buf);
      print_expr(out, s->index);
      fputs("] = ", out);
      print_expr(out, s->value);
      fputc('\n', out);
      break;
    case NNC_KS_SET:
      fprintf(out, "s%d = ", s->var);
      print_expr(out, s->value);
      fputc('\n', out);
      break;
    }
  }
}

void nnc_kernel_print(FILE *out, const nnc_kprog *p, const nnc_kernel *k) {
  fprintf(out, "kernel %s%s extent %lld work %g\n", k->name, k->split ? " (split)" : "",
          (long long)k->extent, k->work);
  if (k->same_as) fprintf(out, "  same code as %s\n", k->same_as->name);
  if (k->twin_of) fprintf(out, "  twin of %s (its code, with these buffers)\n", k->twin_of->name);
  for (int i = 0; i < k->nreads; i++)
    fprintf(out, "  reads b%d %s @%lld\n", k->reads[i], p->bufs[k->reads[i]].name,
            (long long)p->bufs[k->reads[i]].offset);
  for (int i = 0; i < k->nwrites; i++)
    fprintf(out, "  writes b%d %s @%lld\n", k->writes[i], p->bufs[k->writes[i]].name,
            (long long)p->bufs[k->writes[i]].offset);
  for (int i = 0; i < k->nprefetch; i++)
    fprintf(out, "  prefetches for writing b%d %s\n", k->prefetch_bufs[i],
            p->bufs[k->prefetch_bufs[i]].name);
  if (k->is_gemm)
    fprintf(out, "  gemm M=%lld N=%lld K=%lld ta=%d tb=%d bias=%d act=%d%s\n", (long long)k->gemm.M,
            (long long)k->gemm.N, (long long)k->gemm.K, k->gemm.trans_a, k->gemm.trans_b,
            k->gemm.bias, (int)k->gemm.act, k->k_parts > 1 ? " kparts" : "");
  else if (k->is_conv)
    fprintf(out,
            "  conv N=%lld C=%lld O=%lld in %lldx%lld out %lldx%lld k %lldx%lld pad %lld,%lld "
            "w %lld+o*%lld+i*%lld+kh*%lld+kw*%lld ob=%lld bias=%d\n",
            (long long)k->conv.N, (long long)k->conv.C, (long long)k->conv.O, (long long)k->conv.H,
            (long long)k->conv.W, (long long)k->conv.OH, (long long)k->conv.OW,
            (long long)k->conv.KH, (long long)k->conv.KW, (long long)k->conv.ph,
            (long long)k->conv.pw, (long long)k->conv.w0, (long long)k->conv.wo,
            (long long)k->conv.wi, (long long)k->conv.wkh, (long long)k->conv.wkw,
            (long long)k->conv.ob, k->conv.bias_buf >= 0);
  else if (k->conv_dw) {
    const nnc_kconv_dw *d = k->conv_dw;
    fprintf(out, "  conv_dw N=%lld C=%lld %lldx%lld O=%lld k=%lldx%lld pad=%lldx%lld",
            (long long)d->N, (long long)d->C, (long long)d->H, (long long)d->W, (long long)d->O,
            (long long)d->KH, (long long)d->KW, (long long)d->PH, (long long)d->PW);
    fprintf(out, " item %lldx%lld chunks=%lld group=%lld %s\n", (long long)d->ob, (long long)d->khb,
            (long long)d->chunks, (long long)d->group, d->plane ? "plane" : "rows");
  } else
    print_block(out, &k->body, 1);
  if (k->update) { /* C's elements (b<c>[at]) go into the pass instead of memory */
    fprintf(out, "  fused %s, C b%d:\n", k->update->name, k->c_buf);
    print_block(out, &k->update->body, 2);
  }
}
