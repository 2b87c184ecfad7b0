/* emit_c.c: the inference program (deploy.h) printed as portable C99.
 *
 * Takes a built nnc_deploy and its values; writes one C file that needs
 * only libm: the weights as static const arrays (or offsets into a block
 * the caller passes, with --extern-weights), one static function per
 * kernel with its label (origin in the model) in a comment and one
 * restrict pointer per buffer it touches, a run function calling them in
 * order, and PREFIX_predict around it. Sizes and offsets are constants.
 *
 * Statements print as they are: loops as `for` over int64_t, stores,
 * scalar assignments. Expressions print from the kernel expression DAG
 * with llvm_expr.c's semantics (max/min as a >= b ? a : b, casts as
 * fptosi/sitofp, float comparisons ordered but != unordered); a node used
 * twice in one statement is computed once into a const local. libm stands
 * in for math.c's polynomials, so results agree with the object's to
 * rounding, not bit for bit. Products (is_gemm kernels) print as blocked
 * loops whose inner loops a C compiler vectorises: tiles of 4 rows (or, for
 * the rows left, 4 columns) of dot products, each in 16 partial sums, or
 * an axpy over unit-stride rows when B is stored [K, N].
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "deploy_internal.h"

enum { NTYPES = NNC_KT_BOOL + 1, LANES = 16, ROWS = 4 };

/* One entry of a statement's use counts, keyed by expression node. */
typedef struct use_entry {
  const nnc_kexpr *e;
  int uses;
  int temp; /* -1: not hoisted */
  unsigned gen;
} use_entry;

typedef struct cwriter {
  FILE *f;
  const nnc_deploy *d;
  const nnc_kprog *p;
  bool helper[NNC_K_COUNT_][NTYPES]; /* helper functions the code calls */
  use_entry *uses;
  size_t cap;
  unsigned gen;
  int ntemps, depth;
  const char *bad; /* first unsupported construct, for the error */
  nnc_kqstore qs;  /* what the kernel being written stores in bytes (q NULL: nothing) */
  char qname[256]; /* that product's function name */
} cwriter;

static const char *ctype(nnc_kt t) {
  switch (t) {
  case NNC_KT_F32: return "float";
  case NNC_KT_F64: return "double";
  case NNC_KT_I32: return "int32_t";
  case NNC_KT_I64: return "int64_t";
  case NNC_KT_BOOL: return "int";
  }
  return "float";
}

/* Element type of a buffer in memory (bools as bytes). */
static const char *mtype(nnc_kt t) {
  return t == NNC_KT_BOOL ? "unsigned char" : ctype(t);
}

static const char *tname(nnc_kt t) {
  static const char *const names[NTYPES] = {"f32", "f64", "i32", "i64", "bool"};
  return names[t];
}

static void indent(cwriter *W) {
  fprintf(W->f, "%*s", 2 * W->depth, "");
}

/* ---- use counts of one statement (open addressing, reset by generation) ---- */

static use_entry *entry(cwriter *W, const nnc_kexpr *e) {
  size_t h = ((uintptr_t)e >> 4) * 0x9E3779B97F4A7C15u;
  for (size_t i = h & (W->cap - 1);; i = (i + 1) & (W->cap - 1)) {
    use_entry *u = &W->uses[i];
    if (u->gen != W->gen) {
      *u = (use_entry){e, 0, -1, W->gen};
      return u;
    }
    if (u->e == e) return u;
  }
}

static void count_uses(cwriter *W, const nnc_kexpr *e, size_t *n) {
  if (e->kind == NNC_KX_CONST || e->kind == NNC_KX_VAR) return;
  if (2 * (*n + 1) > W->cap) { /* grow: rehash the live entries */
    use_entry *old = W->uses;
    size_t oldcap = W->cap;
    W->cap *= 2;
    W->uses = calloc(W->cap, sizeof *W->uses);
    if (!W->uses) nnc_ir_bug("emit_c: out of memory");
    for (size_t i = 0; i < oldcap; i++)
      if (old[i].gen == W->gen) *entry(W, old[i].e) = old[i];
    free(old);
  }
  use_entry *u = entry(W, e);
  if (u->uses++ > 0) return;
  (*n)++;
  for (int i = 0; i < 3; i++)
    if (e->a[i]) count_uses(W, e->a[i], n);
}

/* ---- expressions ---- */

static void expr(cwriter *W, const nnc_kexpr *e);

static void call1(cwriter *W, const char *fn, const nnc_kexpr *x) {
  fprintf(W->f, "%s%s(", fn, x->type == NNC_KT_F32 ? "f" : "");
  expr(W, x);
  fputc(')', W->f);
}

/* A helper function of nnc's (nnc_max_f32, ...), emitted once if used. */
static void helper(cwriter *W, nnc_kop op, nnc_kt t, const nnc_kexpr *x, const nnc_kexpr *y) {
  W->helper[op][t] = true;
  fprintf(W->f, "nnc_%s_%s(", nnc_kop_name(op), tname(t));
  expr(W, x);
  if (y) {
    fputs(", ", W->f);
    expr(W, y);
  }
  fputc(')', W->f);
}

static void unary(cwriter *W, const nnc_kexpr *e) {
  const nnc_kexpr *x = e->a[0];
  const char *one = e->type == NNC_KT_F32 ? "1.0f" : "1.0";
  switch (e->op) {
  case NNC_K_NEG: fputs("(-", W->f), expr(W, x), fputc(')', W->f); return;
  case NNC_K_EXP: call1(W, "exp", x); return;
  case NNC_K_LOG: call1(W, "log", x); return;
  case NNC_K_SQRT: call1(W, "sqrt", x); return;
  case NNC_K_RSQRT: fprintf(W->f, "(%s / ", one), call1(W, "sqrt", x), fputc(')', W->f); return;
  case NNC_K_RECIP: fprintf(W->f, "(%s / ", one), expr(W, x), fputc(')', W->f); return;
  case NNC_K_TANH: call1(W, "tanh", x); return;
  case NNC_K_ABS: call1(W, "fabs", x); return;
  case NNC_K_ERF: call1(W, "erf", x); return;
  case NNC_K_COS: call1(W, "cos", x); return;
  case NNC_K_FLOOR: call1(W, "floor", x); return;
  case NNC_K_SIGMOID:
  case NNC_K_RELU:
  case NNC_K_SIGN: helper(W, e->op, e->type, x, NULL); return;
  case NNC_K_NOT: fputs("(!", W->f), expr(W, x), fputc(')', W->f); return;
  /* not unary: a bug of the lowering */
  case NNC_K_ADD:
  case NNC_K_SUB:
  case NNC_K_MUL:
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
  nnc_ir_bug("emit_c: bad unary kernel op %d", (int)e->op);
}

static const char *infix(nnc_kop op) {
  switch (op) {
  case NNC_K_ADD: return "+";
  case NNC_K_SUB: return "-";
  case NNC_K_MUL: return "*";
  case NNC_K_DIV: return "/";
  case NNC_K_REM: return "%";
  case NNC_K_LT: return "<";
  case NNC_K_LE: return "<=";
  case NNC_K_GT: return ">";
  case NNC_K_GE: return ">=";
  case NNC_K_EQ: return "==";
  case NNC_K_NE: return "!="; /* unordered on floats, like LLVM's une */
  case NNC_K_AND: return "&";
  case NNC_K_OR: return "|";
  /* not infix */
  case NNC_K_MAX:
  case NNC_K_MIN:
  case NNC_K_POW:
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
  case NNC_K_COUNT_: break;
  }
  return NULL;
}

static void binary(cwriter *W, const nnc_kexpr *e) {
  const nnc_kexpr *x = e->a[0], *y = e->a[1];
  bool fl = nnc_kt_is_float(x->type);
  if (e->op == NNC_K_MAX || e->op == NNC_K_MIN) {
    helper(W, e->op, x->type, x, y);
    return;
  }
  if (e->op == NNC_K_POW || (fl && e->op == NNC_K_REM)) {
    fprintf(W->f, "%s%s(", e->op == NNC_K_POW ? "pow" : "fmod", x->type == NNC_KT_F32 ? "f" : "");
    expr(W, x);
    fputs(", ", W->f);
    expr(W, y);
    fputc(')', W->f);
    return;
  }
  const char *op = infix(e->op);
  if (!op) nnc_ir_bug("emit_c: bad binary kernel op %d", (int)e->op);
  fputc('(', W->f);
  expr(W, x);
  fprintf(W->f, " %s ", op);
  expr(W, y);
  fputc(')', W->f);
}

static void cast(cwriter *W, const nnc_kexpr *e) {
  nnc_kt to = e->type;
  if (to == NNC_KT_BOOL) { /* != 0: true for NaN, like LLVM's une */
    fputc('(', W->f);
    expr(W, e->a[0]);
    fputs(" != 0)", W->f);
    return;
  }
  fprintf(W->f, "((%s)", ctype(to));
  expr(W, e->a[0]);
  fputc(')', W->f);
}

static void expr_inline(cwriter *W, const nnc_kexpr *e) {
  char buf[48];
  switch (e->kind) {
  case NNC_KX_CONST:
    if (nnc_kt_is_float(e->type))
      fprintf(W->f, e->f < 0 ? "(%s)" : "%s",
              nnc_deploy_float(buf, sizeof buf, e->f, e->type == NNC_KT_F32));
    else if (e->i < 0)
      fprintf(W->f, "(%lld)", (long long)e->i);
    else
      fprintf(W->f, "%lld", (long long)e->i);
    return;
  case NNC_KX_VAR: fprintf(W->f, "i%d", e->var); return;
  case NNC_KX_SCALAR: fprintf(W->f, "s%d", e->var); return;
  case NNC_KX_LOAD:
    if (W->qs.q && W->qs.from >= 0 &&
        nnc_kbuf_base(W->p, e->buf) == W->qs.from) { /* bytes: the code */
      fprintf(W->f, "(float)((const unsigned char *)b%d)[", W->qs.from);
      expr(W, e->a[0]);
      fputc(']', W->f);
      return;
    }
    fprintf(W->f, "b%d[", nnc_kbuf_base(W->p, e->buf));
    expr(W, e->a[0]);
    fputc(']', W->f);
    return;
  case NNC_KX_UN: unary(W, e); return;
  case NNC_KX_BIN: binary(W, e); return;
  case NNC_KX_SELECT:
    fputc('(', W->f);
    for (int i = 0; i < 3; i++) {
      if (i) fputs(i == 1 ? " ? " : " : ", W->f);
      expr(W, e->a[i]);
    }
    fputc(')', W->f);
    return;
  case NNC_KX_CAST: cast(W, e); return;
  case NNC_KX_RAND: /* dropout masks: gone from eval graphs */
    W->bad = "random numbers";
    fputs("0", W->f);
    return;
  }
}

static void expr(cwriter *W, const nnc_kexpr *e) {
  if (e->kind != NNC_KX_CONST && e->kind != NNC_KX_VAR) {
    use_entry *u = entry(W, e);
    if (u->temp >= 0) {
      fprintf(W->f, "t%d", u->temp);
      return;
    }
  }
  expr_inline(W, e);
}

/* Nodes used more than once in the statement become const locals, operands
 * first. Loads are hoisted too: an expression reads memory where its
 * statement runs, so this is the value every use would read. */
static void hoist(cwriter *W, const nnc_kexpr *e) {
  if (e->kind == NNC_KX_CONST || e->kind == NNC_KX_VAR) return;
  use_entry *u = entry(W, e);
  if (u->temp >= 0 || u->uses == 0) return;
  for (int i = 0; i < 3; i++)
    if (e->a[i]) hoist(W, e->a[i]);
  if (u->uses > 1 && e->kind != NNC_KX_SCALAR) {
    indent(W);
    fprintf(W->f, "const %s t%d = ", ctype(e->type), W->ntemps);
    expr_inline(W, e);
    fputs(";\n", W->f);
    entry(W, e)->temp = W->ntemps++;
  } else {
    u->uses = -1; /* visited */
  }
}

/* Starts a statement over up to two expressions: counts, hoists shared
 * nodes; returns whether a block was opened for them. */
static bool begin_statement(cwriter *W, const nnc_kexpr *a, const nnc_kexpr *b) {
  W->gen++;
  size_t n = 0;
  count_uses(W, a, &n);
  if (b) count_uses(W, b, &n);
  bool shared = false;
  for (size_t i = 0; i < W->cap; i++)
    shared |=
        W->uses[i].gen == W->gen && W->uses[i].uses > 1 && W->uses[i].e->kind != NNC_KX_SCALAR;
  if (shared) {
    indent(W);
    fputs("{\n", W->f);
    W->depth++;
  }
  hoist(W, a);
  if (b) hoist(W, b);
  return shared;
}

static void end_statement(cwriter *W, bool block) {
  if (!block) return;
  W->depth--;
  indent(W);
  fputs("}\n", W->f);
}

static void block(cwriter *W, const nnc_kblock *blk) {
  for (int i = 0; i < blk->n; i++) {
    const nnc_kstmt *s = blk->s[i];
    switch (s->kind) {
    case NNC_KS_LOOP:
      indent(W);
      fprintf(W->f, "for (int64_t i%d = 0; i%d < %lld; i%d++) {\n", s->var, s->var,
              (long long)s->extent, s->var);
      W->depth++;
      block(W, &s->body);
      W->depth--;
      indent(W);
      fputs("}\n", W->f);
      break;
    case NNC_KS_STORE: {
      bool b = begin_statement(W, s->index, s->value);
      indent(W);
      int base = nnc_kbuf_base(W->p, s->buf);
      const nnc_kexpr *v = s->value;
      if (!W->qs.q || base != W->qs.buf) {
        fprintf(W->f, "b%d[", base);
        expr(W, s->index);
        fputs("] = ", W->f);
        expr(W, v);
        fputs(";\n", W->f);
      } else if (W->qs.from >= 0 && v->kind != NNC_KX_CONST) { /* a code 0..255 */
        fprintf(W->f, "((unsigned char *)b%d)[", base);
        expr(W, s->index);
        fputs("] = (unsigned char)(int32_t)", W->f);
        expr(W, v);
        fputs(";\n", W->f);
      } else { /* quantised */
        fprintf(W->f, "((unsigned char *)b%d)[", base);
        expr(W, s->index);
        fprintf(W->f, "] = %s_quantize(", W->qname);
        expr(W, v);
        fputs(");\n", W->f);
      }
      end_statement(W, b);
      break;
    }
    case NNC_KS_SET: {
      bool b = begin_statement(W, s->value, NULL);
      indent(W);
      fprintf(W->f, "s%d = ", s->var);
      expr(W, s->value);
      fputs(";\n", W->f);
      end_statement(W, b);
      break;
    }
    }
  }
}

/* ---- kernels ---- */

/* The base buffers k touches, in first-seen order; written[i] if k writes it. */
static int kernel_buffers(const nnc_kprog *p, const nnc_kernel *k, int *bases, bool *written) {
  int n = 0;
  for (int i = 0; i < k->nreads + k->nwrites; i++) {
    bool w = i >= k->nreads;
    int b = nnc_kbuf_base(p, w ? k->writes[i - k->nreads] : k->reads[i]);
    int at = 0;
    while (at < n && bases[at] != b)
      at++;
    if (at == n) {
      bases[n] = b;
      written[n++] = false;
    }
    written[at] |= w;
  }
  return n;
}

static void kernel_name(char *buf, size_t n, const nnc_kernel *k) {
  nnc_deploy_identifier(buf, n, k->name);
}

static void kernel_head(cwriter *W, const nnc_kernel *k, const int *bases, const bool *written,
                        int nb) {
  char name[256];
  kernel_name(name, sizeof name, k);
  fprintf(W->f, "/* %s */\n", k->label ? k->label : k->name);
  fprintf(W->f, "static void %s(", name);
  for (int i = 0; i < nb; i++) {
    const nnc_kbuf *b = &W->p->bufs[bases[i]];
    fprintf(W->f, "%s%s%s *restrict b%d", i ? ", " : "", written[i] ? "" : "const ", mtype(b->type),
            bases[i]);
  }
  fputs(nb ? ") {\n" : "void) {\n", W->f);
  for (int i = 0; i < nb; i++) {
    const nnc_kbuf *b = &W->p->bufs[bases[i]];
    fprintf(W->f, "  /* b%d: %s, %lld elements */\n", bases[i], b->name, (long long)b->numel);
  }
}

/* Operand names of a product kernel. */
typedef struct gemm_names {
  char A[96]; /* A(m + r, kk) */
  char acc[64], bias[64];
  int b, c;
} gemm_names;

static gemm_names names_of(const cwriter *W, const nnc_kernel *k) {
  const nnc_cg_gemm *g = &k->gemm;
  gemm_names n = {.b = nnc_kbuf_base(W->p, k->b_buf), .c = nnc_kbuf_base(W->p, k->c_buf)};
  int a = nnc_kbuf_base(W->p, k->a_buf);
  if (g->trans_a)
    snprintf(n.A, sizeof n.A, "b%d[(kk) * %lld + m + r]", a, (long long)g->lda);
  else
    snprintf(n.A, sizeof n.A, "b%d[(m + r) * %lld + (kk)]", a, (long long)g->lda);
  if (g->accumulate)
    snprintf(n.acc, sizeof n.acc, "b%d[(m + r) * %lld + n + q] + ", n.c, (long long)g->ldc);
  if (k->bias_buf >= 0)
    snprintf(n.bias, sizeof n.bias, " + b%d[n + q]", nnc_kbuf_base(W->p, k->bias_buf));
  return n;
}

/* Dot products (B stored [N, K]) for rows [m, m + rows) and columns
 * [n0, n1) in tiles of rows x cols outputs, each summed in LANES partial
 * sums (independent chains a C compiler turns into vector registers). */
static void gemm_dots(cwriter *W, const nnc_kernel *k, int rows, int cols, int64_t n0, int64_t n1) {
  const nnc_cg_gemm *g = &k->gemm;
  gemm_names nm = names_of(W, k);
  FILE *f = W->f;
  fprintf(f, "    for (int64_t n = %lld; n < %lld; n += %d) {\n", (long long)n0, (long long)n1,
          cols);
  fprintf(f, "      float part[%d][%d][%d] = {{{0}}};\n", rows, cols, LANES);
  fprintf(f, "      int64_t k0 = 0;\n      for (; k0 + %d <= %lld; k0 += %d)\n", LANES,
          (long long)g->K, LANES);
  fprintf(f, "        for (int r = 0; r < %d; r++)\n          for (int q = 0; q < %d; q++)\n", rows,
          cols);
  fprintf(f, "            for (int j = 0; j < %d; j++) {\n", LANES);
  fprintf(f, "              const int64_t kk = k0 + j;\n");
  fprintf(f, "              part[r][q][j] += %s * b%d[(n + q) * %lld + kk];\n            }\n", nm.A,
          nm.b, (long long)g->ldb);
  fprintf(f, "      for (int r = 0; r < %d; r++)\n        for (int q = 0; q < %d; q++) {\n", rows,
          cols);
  fprintf(f, "          float sum = 0;\n          for (int j = 0; j < %d; j++)\n", LANES);
  fprintf(f, "            sum += part[r][q][j];\n");
  fprintf(f, "          for (int64_t kk = k0; kk < %lld; kk++)\n", (long long)g->K);
  fprintf(f, "            sum += %s * b%d[(n + q) * %lld + kk];\n", nm.A, nm.b, (long long)g->ldb);
  fprintf(f, "          const float v = %ssum%s;\n", nm.acc, nm.bias);
  fprintf(f, "          b%d[(m + r) * %lld + n + q] = %s;\n        }\n    }\n", nm.c,
          (long long)g->ldc, g->act == NNC_CG_ACT_RELU ? "v > 0 ? v : 0.0f" : "v");
}

/* B stored [K, N]: rows of C as sums of rows of B scaled by A (axpy over
 * unit-stride rows), accumulated in C itself. */
static void gemm_axpy(cwriter *W, const nnc_kernel *k, int64_t N) {
  const nnc_cg_gemm *g = &k->gemm;
  gemm_names nm = names_of(W, k);
  FILE *f = W->f;
  fprintf(f, "    const int r = 0;\n");
  fprintf(f, "    float *restrict cr = b%d + m * %lld;\n", nm.c, (long long)g->ldc);
  if (!g->accumulate)
    fprintf(f, "    for (int64_t n = 0; n < %lld; n++)\n      cr[n] = 0;\n", (long long)N);
  fprintf(f, "    for (int64_t kk = 0; kk < %lld; kk++) {\n", (long long)g->K);
  fprintf(f, "      const float av = %s;\n", nm.A);
  fprintf(f, "      const float *restrict br = b%d + kk * %lld;\n", nm.b, (long long)g->ldb);
  fprintf(f, "      for (int64_t n = 0; n < %lld; n++)\n        cr[n] += av * br[n];\n    }\n",
          (long long)N);
  if (k->bias_buf >= 0 || g->act == NNC_CG_ACT_RELU) {
    fprintf(f, "    for (int64_t n = 0; n < %lld; n++) {\n      const int q = 0;\n", (long long)N);
    fprintf(f, "      const float v = cr[n]%s;\n      cr[n] = %s;\n    }\n", nm.bias,
            g->act == NNC_CG_ACT_RELU ? "v > 0 ? v : 0.0f" : "v");
  }
}

static void gemm_kernel(cwriter *W, const nnc_kernel *k) {
  const nnc_cg_gemm *g = &k->gemm;
  /* Split over column blocks for threads: one call does all of them here. */
  int64_t N = k->col_block > 0 ? g->N * k->extent : g->N;
  /* inference programs have no backward pass, so no ReLU mask */
  if (g->act == NNC_CG_ACT_RELU_MASK) nnc_ir_bug("emit_c: a product with a ReLU mask");
  fprintf(W->f, "  /* C[%lld x %lld] = A . B%s%s%s, K = %lld */\n", (long long)g->M, (long long)N,
          g->trans_b ? "^T" : "", k->bias_buf >= 0 ? " + bias" : "",
          g->act == NNC_CG_ACT_RELU ? ", then ReLU" : "", (long long)g->K);
  if (!g->trans_b) {
    fprintf(W->f, "  for (int64_t m = 0; m < %lld; m++) {\n", (long long)g->M);
    gemm_axpy(W, k, N);
    fputs("  }\n", W->f);
    return;
  }
  /* Tiles of ROWS rows (they share B's loads), or of ROWS columns for the
   * rows left (they share A's), then single outputs. */
  int64_t blocked = g->M / ROWS * ROWS, ncols = N / ROWS * ROWS;
  if (blocked > 0) {
    fprintf(W->f, "  for (int64_t m = 0; m < %lld; m += %d) {\n", (long long)blocked, ROWS);
    gemm_dots(W, k, ROWS, 1, 0, N);
    fputs("  }\n", W->f);
  }
  if (blocked < g->M) {
    fprintf(W->f, "  for (int64_t m = %lld; m < %lld; m++) {\n", (long long)blocked,
            (long long)g->M);
    if (ncols > 0) gemm_dots(W, k, 1, ROWS, 0, ncols);
    if (ncols < N) gemm_dots(W, k, 1, 1, ncols, N);
    fputs("  }\n", W->f);
  }
}

/* NAME_quantize: a float of q's A as its u8 byte. */
static void quantize_fn(FILE *f, const char *name, const nnc_kqgemm *q) {
  char num[48];
  fprintf(f, "static unsigned char %s_quantize(float x) {\n", name);
  fprintf(f, "  float r = nearbyintf(x * %s);\n",
          nnc_deploy_float(num, sizeof num, q->a_inv_scale, true));
  fprintf(f, "  r = r <= %d.0f ? r : %d.0f;\n", 255 - (int)q->a_zero, 255 - (int)q->a_zero);
  fprintf(f, "  r = r >= %d.0f ? r : %d.0f;\n", -(int)q->a_zero, -(int)q->a_zero);
  fprintf(f, "  return (unsigned char)((int32_t)r + %d);\n}\n\n", (int)q->a_zero);
}

/* An int8 product (kernel.h's nnc_kqgemm): its constants, then A quantised
 * into the scratch, int32 dot products, the float epilogue; the same
 * operations in the same order as llvm_qgemm.c's. */
static void int8_kernel(cwriter *W, const nnc_kernel *k, const nnc_kqgemm *q) {
  FILE *f = W->f;
  char name[256];
  kernel_name(name, sizeof name, k);
  fprintf(f, "/* %s: int8 */\n", k->label ? k->label : k->name);
  fprintf(f, "static const int8_t %s_w[%lld] = {", name, (long long)(q->N * q->K4));
  for (int64_t i = 0; i < q->N * q->K4; i++)
    fprintf(f, "%s%d", i == 0 ? "\n    " : i % 24 ? ", " : ",\n    ", q->w[i]);
  fprintf(f, "\n};\nstatic const int32_t %s_offset[%lld] = {", name, (long long)q->N);
  for (int64_t i = 0; i < q->N; i++)
    fprintf(f, "%s%ld", i == 0 ? "\n    " : i % 8 ? ", " : ",\n    ", (long)q->offset[i]);
  fprintf(f, "\n};\nstatic const float %s_scale[%lld] = {", name, (long long)q->N);
  nnc_deploy_float_list(f, q->out_scale, q->N);
  fputs("};\n", f);
  if (q->nbyte == 0) quantize_fn(f, name, q);
  fprintf(f,
          "/* C[%lld x %lld] = A . W^T in int8: A per tensor (range [%g, %g], scale %g, zero\n"
          " * point %d, as u8), W per output channel; int32 sums */\n",
          (long long)q->M, (long long)q->N, q->a_min, q->a_max, q->a_scale, (int)q->a_zero);
  char oq[256];
  if (q->out_buf >= 0) { /* the requantising epilogue's map; its quantize */
    fprintf(f, "static const float %s_mul[%lld] = {", name, (long long)q->N);
    nnc_deploy_float_list(f, q->out_mul, q->N);
    fprintf(f, "};\nstatic const float %s_add[%lld] = {", name, (long long)q->N);
    nnc_deploy_float_list(f, q->out_add, q->N);
    fputs("};\n", f);
    int j = 0;
    while (W->d->quant[j] != q->out_q)
      j++;
    kernel_name(oq, sizeof oq, W->p->eval.k[j]);
    quantize_fn(f, oq, q->out_q);
  }
  fprintf(f,
          "static void %s(const float *restrict a, %s *restrict %s, unsigned char *restrict "
          "aq) {\n",
          name, q->out_buf >= 0 ? "unsigned char" : "float", q->out_buf >= 0 ? "out" : "c");
  fprintf(f, "  for (int64_t m = 0; m < %lld; m++) {\n", (long long)q->M);
  fprintf(f, "    for (int64_t k = 0; k < %lld; k++)\n", (long long)q->K);
  if (q->nbyte > 0) /* A arrives quantised, in bytes */
    fprintf(f, "      aq[m * %lld + k] = ((const unsigned char *)a)[%s * %lld + %s];\n",
            (long long)q->K4, q->trans_a ? "k" : "m", (long long)q->lda, q->trans_a ? "m" : "k");
  else
    fprintf(f, "      aq[m * %lld + k] = %s_quantize(a[%s * %lld + %s]);\n", (long long)q->K4, name,
            q->trans_a ? "k" : "m", (long long)q->lda, q->trans_a ? "m" : "k");
  if (q->K4 > q->K)
    fprintf(f, "    for (int64_t k = %lld; k < %lld; k++)\n      aq[m * %lld + k] = 0;\n",
            (long long)q->K, (long long)q->K4, (long long)q->K4);
  fputs("  }\n", f);
  fprintf(f, "  for (int64_t m = 0; m < %lld; m++)\n", (long long)q->M);
  fprintf(f, "    for (int64_t n = 0; n < %lld; n++) {\n", (long long)q->N);
  fprintf(f, "      const unsigned char *restrict ar = aq + m * %lld;\n", (long long)q->K4);
  fprintf(f, "      const int8_t *restrict wr = %s_w + n * %lld;\n", name, (long long)q->K4);
  fprintf(f, "      int32_t acc = 0;\n      for (int64_t k = 0; k < %lld; k++)\n",
          (long long)q->K4);
  fprintf(f, "        acc += (int32_t)ar[k] * (int32_t)wr[k];\n");
  fprintf(f, "      const float v = (float)(acc + %s_offset[n]) * %s_scale[n];\n", name, name);
  if (q->out_buf < 0) {
    fprintf(f, "      c[m * %lld + n] = %s;\n    }\n}\n\n", (long long)q->ldc,
            q->relu ? "v > 0 ? v : 0.0f" : "v");
    return;
  }
  /* requantised: kernel.h's out_buf */
  fprintf(f, "      const unsigned char u = %s_quantize(v * %s_mul[n] + %s_add[n]);\n", oq, name,
          name);
  fprintf(f, "      out[n * %lld", (long long)q->out_col);
  for (int d = 0; d < q->out_ndim; d++)
    fprintf(f, " + m / %lld %% %lld * %lld", (long long)q->out_row[d], (long long)q->out_ext[d],
            (long long)q->out_step[d]);
  if (q->out_relu)
    fprintf(f, "] = u > %d ? u : %d;\n    }\n}\n\n", (int)q->out_q->a_zero, (int)q->out_q->a_zero);
  else
    fputs("] = u;\n    }\n}\n\n", f);
}

static void kernel(cwriter *W, const nnc_kernel *k) {
  int *bases = malloc(sizeof(int) * (size_t)(k->nreads + k->nwrites + 1));
  bool *written = malloc((size_t)(k->nreads + k->nwrites + 1));
  if (!bases || !written) nnc_ir_bug("emit_c: out of memory");
  int nb = kernel_buffers(W->p, k, bases, written);
  kernel_head(W, k, bases, written, nb);
  if (k->is_conv) nnc_ir_bug("emit_c: a direct convolution in a deployed program");
  if (k->conv_dw) nnc_ir_bug("emit_c: a weight gradient in an inference program");
  if (k->is_gemm) {
    gemm_kernel(W, k);
  } else {
    for (int s = 0; s < k->nscalars; s++)
      fprintf(W->f, "  %s s%d = 0;\n", ctype(k->scalar_type[s]), s);
    W->ntemps = 0;
    W->depth = 1;
    block(W, &k->body);
  }
  fputs("}\n\n", W->f);
  free(bases);
  free(written);
}

/* ---- the file ---- */

static void helpers(cwriter *W, FILE *f) {
  for (int op = 0; op < NNC_K_COUNT_; op++)
    for (int t = 0; t < NTYPES; t++) {
      if (!W->helper[op][t]) continue;
      const char *T = ctype((nnc_kt)t), *n = tname((nnc_kt)t), *o = nnc_kop_name((nnc_kop)op);
      const char *fs = t == NNC_KT_F32 ? "f" : "";
      fprintf(f, "static %s nnc_%s_%s(%s x", T, o, n, T);
      if (op == NNC_K_MAX || op == NNC_K_MIN) fprintf(f, ", %s y", T);
      fputs(") {\n  return ", f);
      /* the ops helper() is called for (llvm_expr.c's definitions) */
      if (op == NNC_K_MAX) fputs("x >= y ? x : y", f);
      if (op == NNC_K_MIN) fputs("x <= y ? x : y", f);
      if (op == NNC_K_RELU) fputs("x > 0 ? x : 0", f);
      if (op == NNC_K_SIGN) fputs("x > 0 ? 1 : x < 0 ? -1 : 0", f);
      if (op == NNC_K_SIGMOID) fprintf(f, "1 / (1 + exp%s(-x))", fs);
      fputs(";\n}\n\n", f);
    }
}

/* The pointer to base buffer b where the run function stands. */
static void buffer_arg(cwriter *W, FILE *f, int b) {
  const nnc_kbuf *kb = &W->p->bufs[b];
  if (nnc_deploy_in_weights(W->d, b)) {
    char id[256];
    nnc_deploy_identifier(id, sizeof id, kb->name);
    if (W->d->o.extern_weights)
      fprintf(f, "(const float *)(w + %lld)", (long long)kb->offset);
    else
      fprintf(f, "w%d_%s", kb->id, id);
  } else {
    fprintf(f, "(%s *)(ws + %lld)", mtype(kb->type), (long long)kb->offset);
  }
}

static void weights(const nnc_deploy *d, const nnc_deploy_values *v, FILE *f) {
  char id[256];
  for (int t = 0; t < d->mod.ntensors; t++) {
    if (d->w_off[t] < 0) continue;
    const nnc_tensor *ts = &d->mod.tensors[t];
    int64_t n = nnc_shape_numel(&ts->shape);
    char shape[128];
    nnc_shape_str(shape, sizeof shape, ts->dtype, &ts->shape);
    nnc_deploy_identifier(id, sizeof id, ts->name);
    fprintf(f, "/* %s: %s */\nstatic const float w%d_%s[%lld] = {", ts->name, shape, t, id,
            (long long)n);
    nnc_deploy_float_list(f, v->tensor[t], n);
    fputs("};\n\n", f);
  }
}

static bool finite_values(const nnc_deploy *d, const nnc_deploy_values *v, char *err,
                          size_t errlen) {
  for (int t = 0; t < d->mod.ntensors; t++) {
    if (d->w_off[t] < 0) continue;
    if (!v->tensor[t]) {
      snprintf(err, errlen, "no values for tensor '%s'", d->mod.tensors[t].name);
      return false;
    }
    int64_t n = nnc_shape_numel(&d->mod.tensors[t].shape);
    for (int64_t i = 0; i < n; i++)
      if (!isfinite(v->tensor[t][i])) {
        snprintf(err, errlen, "tensor '%s' has a non-finite value at element %lld",
                 d->mod.tensors[t].name, (long long)i);
        return false;
      }
  }
  return true;
}

/* input -> x in the workspace: scale, then standardisation, as the
 * runtime prepares data (separate statements: no contraction into fma). */
static void prepare_input(const nnc_deploy *d, const nnc_deploy_values *v, FILE *f) {
  char num[48];
  const char *T = d->in_type == NNC_KT_I32 ? "int32_t" : "float";
  bool fl = d->in_type == NNC_KT_F32;
  if (fl && v->mean) {
    const float *stats[2] = {v->mean, v->std};
    const char *names[2] = {"input_mean", "input_std"};
    for (int s = 0; s < 2; s++) {
      fprintf(f, "/* the training set's standardisation: %s */\n", s ? "std" : "mean");
      fprintf(f, "static const float %s[%lld] = {", names[s], (long long)d->in_size);
      nnc_deploy_float_list(f, stats[s], d->in_size);
      fputs("};\n\n", f);
    }
  }
  fprintf(f, "/* The raw input as the model saw its data in training. */\n");
  fprintf(f, "static void prepare_input(const %s *restrict input, %s *restrict x) {\n", T, T);
  fprintf(f, "  for (int64_t i = 0; i < %lld; i++) {\n", (long long)(d->batch * d->in_size));
  fprintf(f, "    %s v = input[i];\n", T);
  if (fl && v->scale != 1)
    fprintf(f, "    v = v * %s;\n", nnc_deploy_float(num, sizeof num, v->scale, true));
  if (fl && v->mean) {
    fprintf(f, "    v = v - input_mean[i %% %lld];\n", (long long)d->in_size);
    fprintf(f, "    v = v / input_std[i %% %lld];\n", (long long)d->in_size);
  }
  fputs("    x[i] = v;\n  }\n}\n\n", f);
}

static void run_function(cwriter *W, FILE *f) {
  const nnc_kgraph *g = &W->p->eval;
  fprintf(f, "/* The eval graph's kernels, in order. */\nstatic void run(%schar *ws) {\n",
          W->d->o.extern_weights ? "const char *w, " : "");
  int *bases = NULL;
  bool *written = NULL;
  for (int i = 0; i < g->n; i++) {
    const nnc_kernel *k = g->k[i];
    if (W->d->quant && W->d->quant[i]) {
      const nnc_kqgemm *q = W->d->quant[i];
      char name[256];
      kernel_name(name, sizeof name, k);
      fprintf(f, "  %s(", name);
      buffer_arg(W, f, nnc_kbuf_base(W->p, q->a_buf));
      fputs(", ", f);
      if (q->out_buf >= 0)
        fprintf(f, "(unsigned char *)(ws + %lld)", (long long)W->p->bufs[q->out_buf].offset);
      else
        buffer_arg(W, f, nnc_kbuf_base(W->p, q->c_buf));
      fprintf(f, ", (unsigned char *)(ws + %lld));\n", (long long)q->scratch);
      continue;
    }
    if (nnc_kq_absorbed((const nnc_kqgemm *const *)W->d->quant, g->n, i)) continue;
    bases = realloc(bases, sizeof(int) * (size_t)(k->nreads + k->nwrites + 1));
    written = realloc(written, (size_t)(k->nreads + k->nwrites + 1));
    if (!bases || !written) nnc_ir_bug("emit_c: out of memory");
    int nb = kernel_buffers(W->p, k, bases, written);
    char name[256];
    kernel_name(name, sizeof name, k);
    fprintf(f, "  %s(", name);
    for (int j = 0; j < nb; j++) {
      if (j) fputs(", ", f);
      buffer_arg(W, f, bases[j]);
    }
    fputs(");\n", f);
  }
  free(bases);
  free(written);
  fputs("}\n\n", f);
}

static void predict_function(const nnc_deploy *d, FILE *f) {
  const char *p = d->o.prefix, *P = d->upper;
  const char *T = d->in_type == NNC_KT_I32 ? "int32_t" : "float";
  bool ext = d->o.extern_weights;
  if (ext)
    fprintf(f,
            "int %s_predict_with(const void *weights, const %s *input, float *output, "
            "void *workspace) {\n",
            p, T);
  else
    fprintf(f, "int %s_predict(const %s *input, float *output, void *workspace) {\n", p, T);
  fprintf(f, "  if (!input || !output || !workspace%s) return 1;\n", ext ? " || !weights" : "");
  fprintf(f,
          "  if ((uintptr_t)workspace %% %s_WORKSPACE_ALIGN || (uintptr_t)input %% sizeof *input "
          "||\n      (uintptr_t)output %% sizeof *output%s)\n    return 2;\n",
          P, ext ? " || (uintptr_t)weights % sizeof(float)" : "");
  fputs("  char *ws = (char *)workspace;\n", f);
  fprintf(f, "  prepare_input(input, (%s *)(ws + %lld));\n", T,
          (long long)d->p.bufs[d->x_buf].offset);
  fprintf(f, "  run(%sws);\n", ext ? "(const char *)weights, " : "");
  fprintf(f, "  const float *pred = (const float *)(ws + %lld);\n",
          (long long)d->p.bufs[d->pred_buf].offset);
  fprintf(f, "  for (int64_t i = 0; i < %s_BATCH * %s_OUTPUT_SIZE; i++)\n", P, P);
  fputs("    output[i] = pred[i];\n  return 0;\n}\n", f);
}

bool nnc_deploy_write_c(const nnc_deploy *d, const nnc_deploy_values *v, FILE *out, char *err,
                        size_t errlen) {
  if (!d->o.extern_weights && !finite_values(d, v, err, errlen)) return false;
  cwriter W;
  memset(&W, 0, sizeof W);
  W.d = d;
  W.p = &d->p;
  W.cap = 1024;
  W.uses = calloc(W.cap, sizeof *W.uses);
  char *body = NULL;
  size_t body_len = 0;
  W.f = open_memstream(&body, &body_len);
  if (!W.uses || !W.f) nnc_ir_bug("emit_c: out of memory");
  for (int i = 0; i < d->p.eval.n; i++)
    if (d->quant && d->quant[i]) {
      int8_kernel(&W, d->p.eval.k[i], d->quant[i]);
    } else if (!nnc_kq_absorbed((const nnc_kqgemm *const *)d->quant, d->p.eval.n, i)) {
      /* a kernel that stores bytes for a product calls its NAME_quantize */
      W.qs = nnc_kq_store_of((const nnc_kqgemm *const *)d->quant, d->p.eval.n, i);
      if (W.qs.q) { /* NAME_quantize before the first of them */
        kernel_name(W.qname, sizeof W.qname, d->p.eval.k[W.qs.product]);
        if (i == W.qs.q->byte_writer[W.qs.q->nbyte - 1]) quantize_fn(W.f, W.qname, W.qs.q);
      }
      kernel(&W, d->p.eval.k[i]);
      W.qs = (nnc_kqstore){.product = -1, .buf = -1, .from = -1};
    }
  fclose(W.f);
  free(W.uses);
  if (W.bad) {
    snprintf(err, errlen, "the prediction uses %s, which the C backend does not support", W.bad);
    free(body);
    return false;
  }
  fprintf(out,
          "/* %s.c: the trained network '%s' as portable C99; generated by nnc.\n"
          " * The interface and how to call it: %s. Needs only libm:\n"
          " *   cc -std=c99 -O2 -c %s.c\n"
          " * One function per kernel of the model's evaluation, in the order run()\n"
          " * calls them, each with its origin in the model in a comment. */\n",
          d->o.prefix, d->mod.name, d->o.header, d->o.prefix);
  fprintf(out, "#include <math.h>\n#include <stdint.h>\n\n#include \"%s\"\n\n", d->o.header);
  if (!d->o.extern_weights) weights(d, v, out);
  prepare_input(d, v, out);
  helpers(&W, out);
  fwrite(body, 1, body_len, out);
  free(body);
  run_function(&W, out);
  predict_function(d, out);
  if (ferror(out)) {
    snprintf(err, errlen, "cannot write the C source");
    return false;
  }
  return true;
}
