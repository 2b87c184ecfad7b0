/* gradcheck.c: `nnc gradcheck FILE [--batch N] [--tensors GLOB]`.
 *
 * Is the gradient of my model right? On the user's own model and the first
 * batch of its own training data (loaded and prepared as `nnc run` would),
 * from the initial weights of its init rules and seed, this compares for
 * every trainable tensor (or those matching GLOB):
 *
 *   compiled   the f32 gradient the generated code computes, against
 *   float64    the same graph's gradient in the float64 interpreter
 *              (ir/interp.c), and that against
 *   finite     central differences of the float64 loss on a sample of
 *   differences coordinates (the largest gradient and evenly spaced ones).
 *
 * The graph is the front end's training graph (forward and loss, dropout
 * and batch norm in training mode) with nnc_ad_grad's gradients stored
 * into extra tensors instead of an optimizer update, so the compiled step
 * writes them where they can be read. Errors are relative to the tensor's
 * largest float64 gradient (an element-wise relative error is meaningless
 * where the gradient is near 0): err = max_i |g_i - ref_i| / scale, scale =
 * max_i |ref_i|, but at least SCALE_FLOOR times the largest gradient of all
 * checked tensors (a gradient that is 0 in exact arithmetic, such as a
 * convolution's bias before batch norm, has only rounding noise).
 * One line per tensor: both errors and the worst coordinate; exit status 1
 * when one is above its threshold (COMPILED_TOL, FD_TOL). Sits beside the
 * driver: the front end and the spec come from nnc.c, data loading from the
 * runtime's session (nnc_rt_first_batch). */
#define _POSIX_C_SOURCE 200809L
#include "gradcheck.h"

#include <errno.h>
#include <float.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen.h"
#include "interp.h"
#include "nnc_rt.h"
#include "passes.h"

/* f32 against float64: a few hundred f32 roundings of the largest term. */
static const double COMPILED_TOL = 1e-3;
/* float64 against central differences with step h = FD_STEP (1 + |w|):
 * truncation ~ h^2, far below; cancellation ~ eps |loss| / h, allowed for.
 * A coordinate where the steps h and h/2 disagree has a kink (a ReLU or a
 * window's maximum switching) within h: not differentiable there, so it is
 * counted as such and not compared. */
static const double FD_TOL = 1e-5, FD_STEP = 1e-6;
static const double SCALE_FLOOR = 1e-3;
/* The batch unless --batch: small, since the interpreter is plain loops
 * and runs the whole graph twice per finite difference. */
enum { DEFAULT_BATCH = 8, FD_COORDS = 4, MAX_CHECKED = 256 };

typedef struct check {
  int param;     /* module tensor of the parameter */
  int grad;      /* module tensor the compiled step writes its gradient to */
  double *ref;   /* float64 gradient */
  double err_cg; /* compiled against float64 */
  int64_t worst_cg;
  double err_fd; /* float64 against finite differences */
  int64_t worst_fd;
  int nfd, kinks; /* coordinates compared, and left out at a kink */
} check;

typedef struct gradcheck {
  const char *path;
  int64_t batch;
  const char *glob;
  nnc_arena arena;
  nnc_module *m;
  check c[MAX_CHECKED];
  int n;
  nnc_cg_program *prog;
  char *mem; /* the compiled model's arena */
  nnc_interp *in;
} gradcheck;

static int usage_error(const char *fmt, const char *arg) {
  fputs("nnc: error: ", stderr);
  fprintf(stderr, fmt, arg);
  fputs(" (usage: nnc gradcheck FILE [--batch N] [--tensors GLOB])\n", stderr);
  return 2;
}

static int parse_args(gradcheck *G, int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    bool has_value = i + 1 < argc;
    if (!strcmp(a, "--batch")) {
      if (!has_value) return usage_error("%s needs a value", a);
      char *end;
      errno = 0;
      long long n = strtoll(argv[++i], &end, 10);
      if (errno || *end || n < 1 || n > (1 << 20))
        return usage_error("--batch needs a whole number from 1 to 1048576, got '%s'", argv[i]);
      G->batch = n;
    } else if (!strcmp(a, "--tensors")) {
      if (!has_value) return usage_error("%s needs a value", a);
      G->glob = argv[++i];
    } else if (a[0] == '-') {
      return usage_error("unknown option '%s'", a);
    } else if (G->path) {
      return usage_error("more than one input file ('%s')", a);
    } else {
      G->path = a;
    }
  }
  if (!G->batch) G->batch = DEFAULT_BATCH;
  return G->path ? 0 : usage_error("%s", "'gradcheck' needs a .nn file");
}

static nnc_node *param_node(const nnc_graph *g, int tensor) {
  for (int i = 0; i < g->nnodes; i++)
    if (g->nodes[i]->op == NNC_OP_PARAM && g->nodes[i]->attr[0] == tensor) return g->nodes[i];
  return NULL;
}

/* Appends d loss / d p for every selected trainable p, each stored by the
 * step into a new tensor "gradcheck.<p>". False (printed) when none. */
static bool add_gradients(gradcheck *G) {
  nnc_module *m = G->m;
  nnc_graph *g = m->train;
  nnc_node *wrt[MAX_CHECKED], *grads[MAX_CHECKED];
  int params[MAX_CHECKED], n = 0;
  for (int t = 0; t < m->ntensors && n < MAX_CHECKED; t++) {
    const nnc_tensor *ts = &m->tensors[t];
    if (ts->role != NNC_ROLE_PARAM || (G->glob && fnmatch(G->glob, ts->name, 0) != 0)) continue;
    nnc_node *p = param_node(g, t);
    if (p) wrt[n] = p, params[n++] = t;
  }
  if (!n) {
    fprintf(stderr, "%s: error: no trainable tensor %s%s\n", G->path,
            G->glob ? "matches " : "is read by the loss", G->glob ? G->glob : "");
    return false;
  }
  nnc_ad_grad(g, g->outputs[NNC_OUT_LOSS], wrt, n, grads);
  for (int i = 0; i < n; i++) {
    const nnc_tensor *p = &m->tensors[params[i]];
    if (!grads[i]) {
      printf("%-28s no gradient: the loss does not depend on it\n", p->name);
      continue;
    }
    nnc_init zeros = {NNC_INIT_ZEROS, 0, 0, 0, 0};
    const char *name = nnc_arena_printf(m->arena, "gradcheck.%s", p->name);
    int t = nnc_module_add_tensor(m, name, NNC_ROLE_OPT_STATE, p->dtype, &p->shape, zeros, p->span);
    nnc_graph_add_update(g, t, grads[i]);
    G->c[G->n++] = (check){.param = params[i], .grad = t};
  }
  return G->n > 0;
}

/* Front end, gradients, simplification, JIT; false after printing why. */
static bool build(gradcheck *G) {
  nnc_frontend_result r;
  if (!nnc_driver_frontend(&G->arena, G->path, G->batch, &r)) return false;
  if (!r.module || !r.module->train || !r.module->train->outputs[NNC_OUT_LOSS]) {
    fprintf(stderr, "%s: error: no 'train' block: nothing to check\n", G->path);
    return false;
  }
  G->m = r.module;
  G->m->eval = NULL; /* only the training graph is checked */
  if (!add_gradients(G)) return false;
  nnc_simplify(G->m->train);
  char err[1024];
  if (!nnc_ir_verify(G->m->train, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", G->path, err);
    return false;
  }
  nnc_cg_options co;
  nnc_cg_default_options(&co);
  if (!nnc_cg_compile(G->m, &co, &G->prog, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", G->path, err);
    return false;
  }
  return true;
}

static void put_f32(char *mem, int64_t off, double v) {
  float f = (float)v;
  if (off >= 0) memcpy(mem + off, &f, sizeof f);
}

/* Initial weights (init rules, the run's seed) and the first batch in the
 * compiled arena; the same numbers, as doubles, in the interpreter. */
static bool prepare(gradcheck *G) {
  const nnc_rt_model *rm = nnc_cg_model(G->prog);
  size_t bytes = (rm->arena_bytes + 63) / 64 * 64;
  G->mem = aligned_alloc(64, bytes);
  G->in = nnc_interp_new(G->m->train);
  if (!G->mem || !G->in) {
    fprintf(stderr, "nnc: error: out of memory\n");
    return false;
  }
  memset(G->mem, 0, bytes);
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, G->m->config.seed);
  nnc_rt_init_tensors(rm, G->mem, &rng);
  nnc_rt_error e;
  if (nnc_rt_first_batch(rm, nnc_driver_spec(&G->arena, G->m, G->path), G->mem, &e)) {
    fprintf(stderr, "%s: error: %s\n", G->path, e.msg);
    return false;
  }
  put_f32(G->mem, rm->step_off, 1);
  put_f32(G->mem, rm->epoch_off, 0);
  put_f32(G->mem, rm->total_steps_off, 1);
  if (rm->seed_off >= 0) {
    uint32_t seed = (uint32_t)G->m->config.seed;
    memcpy(G->mem + rm->seed_off, &seed, sizeof seed);
  }
  for (int t = 0; t < G->m->ntensors; t++) {
    const float *src = (const float *)(G->mem + rm->tensors[t].offset);
    double *dst = nnc_interp_tensor(G->in, t);
    for (int64_t i = 0; i < nnc_shape_numel(&G->m->tensors[t].shape); i++)
      dst[i] = src[i];
  }
  for (int k = 0; k < NNC_IN_COUNT_; k++) {
    const nnc_node *n = G->m->train->inputs[k];
    int64_t off = nnc_cg_input_offset(G->prog, (nnc_input_kind)k);
    if (!n || off < 0) continue;
    double *dst = nnc_interp_input(G->in, (nnc_input_kind)k);
    for (int64_t i = 0; i < nnc_shape_numel(&n->shape); i++) {
      const char *at = G->mem + off + i * (int64_t)nnc_dtype_size(n->dtype);
      int32_t iv;
      float fv;
      if (n->dtype == NNC_I32)
        memcpy(&iv, at, sizeof iv), dst[i] = iv;
      else
        memcpy(&fv, at, sizeof fv), dst[i] = fv;
    }
  }
  return true;
}

/* max_i |got_i - ref_i| / max_i |ref_i| over the indices idx[0..n) (all
 * when idx is NULL); the worst index in *worst. */
static double largest(const double *v, int64_t numel) {
  double m = 0;
  for (int64_t i = 0; i < numel; i++)
    m = fmax(m, fabs(v[i]));
  return m;
}

static double rel_error(const double *got, const double *ref, int64_t numel, const int64_t *idx,
                        int n, double floor, int64_t *worst) {
  double scale = fmax(largest(ref, numel), floor), err = 0;
  *worst = 0;
  for (int64_t j = 0; j < (idx ? n : numel); j++) {
    int64_t i = idx ? idx[j] : j;
    double d = fabs(got[i] - ref[i]);
    if (d > err) err = d, *worst = i;
  }
  return scale > 0 ? err / scale : err;
}

static double interp_loss(gradcheck *G) {
  const nnc_node *loss = G->m->train->outputs[NNC_OUT_LOSS];
  nnc_interp_run_for(G->in, loss);
  return nnc_interp_value(G->in, loss)[0];
}

/* (loss(w + h) - loss(w - h)) / 2h in float64, w restored; adds the
 * rounding error of that quotient to *noise. */
static double central(gradcheck *G, double *w, double h, double *noise) {
  double keep = *w;
  *w = keep + h;
  double up = interp_loss(G);
  *w = keep - h;
  double down = interp_loss(G);
  *w = keep;
  *noise += 4 * DBL_EPSILON * (fabs(up) + fabs(down)) / (2 * h);
  return (up - down) / (2 * h);
}

/* Coordinates for finite differences: the largest |gradient|, then evenly
 * spaced ones. */
static int fd_coords(const double *ref, int64_t numel, int64_t *idx) {
  int64_t big = 0;
  for (int64_t i = 1; i < numel; i++)
    if (fabs(ref[i]) > fabs(ref[big])) big = i;
  int n = 0;
  idx[n++] = big;
  for (int k = 1; k < FD_COORDS && k < numel; k++) {
    int64_t i = (int64_t)((double)k * (double)numel / FD_COORDS);
    if (i != big) idx[n++] = i;
  }
  return n;
}

/* Compares each checked tensor; fills the errors. */
static bool compare(gradcheck *G) {
  const nnc_rt_model *rm = nnc_cg_model(G->prog);
  nnc_interp_run(G->in);
  rm->train_step(G->mem, NULL);
  double floor = 0;
  for (int k = 0; k < G->n; k++) {
    check *c = &G->c[k];
    int64_t numel = nnc_shape_numel(&G->m->tensors[c->param].shape);
    c->ref = malloc(sizeof(double) * (size_t)numel * 2);
    if (!c->ref) return false;
    double *got = c->ref + numel;
    memcpy(c->ref, nnc_interp_tensor(G->in, c->grad), sizeof(double) * (size_t)numel);
    const float *cg = (const float *)(G->mem + rm->tensors[c->grad].offset);
    for (int64_t i = 0; i < numel; i++)
      got[i] = cg[i];
    floor = fmax(floor, SCALE_FLOOR * largest(c->ref, numel));
  }
  for (int k = 0; k < G->n; k++) {
    check *c = &G->c[k];
    int64_t numel = nnc_shape_numel(&G->m->tensors[c->param].shape), idx[FD_COORDS];
    double *got = c->ref + numel, *w = nnc_interp_tensor(G->in, c->param);
    c->err_cg = rel_error(got, c->ref, numel, NULL, 0, floor, &c->worst_cg);
    double *fd = got; /* its sampled coordinates now hold finite differences */
    c->nfd = fd_coords(c->ref, numel, idx);
    double scale = fmax(largest(c->ref, numel), floor);
    int kept = 0;
    for (int j = 0; j < c->nfd; j++) {
      double h = FD_STEP * (1 + fabs(w[idx[j]])), noise = 0;
      double d1 = central(G, w + idx[j], h, &noise), d2 = central(G, w + idx[j], h / 2, &noise);
      fd[idx[j]] = d2;
      if (fabs(d1 - d2) <= FD_TOL * scale + noise)
        idx[kept++] = idx[j]; /* smooth here: compared */
      else
        c->kinks++;
    }
    c->nfd = kept;
    c->err_fd = rel_error(fd, c->ref, numel, idx, c->nfd, floor, &c->worst_fd);
  }
  return true;
}

/* "[i,j,...]" of a flat index in shape s. */
static void coord(char *buf, size_t size, const nnc_shape *s, int64_t flat) {
  int64_t at[NNC_MAX_RANK];
  for (int d = s->rank - 1; d >= 0; d--) {
    at[d] = flat % s->dim[d];
    flat /= s->dim[d];
  }
  int len = snprintf(buf, size, "[");
  for (int d = 0; d < s->rank && len < (int)size; d++)
    len += snprintf(buf + len, size - (size_t)len, "%s%lld", d ? "," : "", (long long)at[d]);
  if (len < (int)size) snprintf(buf + len, size - (size_t)len, "]");
}

static int report(const gradcheck *G) {
  printf("gradcheck %s: batch %lld; compiled f32 against float64 (tolerance %.0e), float64 "
         "against central differences (tolerance %.0e); errors relative to each tensor's "
         "largest gradient\n",
         G->path, (long long)nnc_cg_model(G->prog)->batch, COMPILED_TOL, FD_TOL);
  int bad = 0;
  for (int k = 0; k < G->n; k++) {
    const check *c = &G->c[k];
    const nnc_tensor *p = &G->m->tensors[c->param];
    char at_cg[64], at_fd[64];
    coord(at_cg, sizeof at_cg, &p->shape, c->worst_cg);
    coord(at_fd, sizeof at_fd, &p->shape, c->worst_fd);
    bool ok = c->err_cg <= COMPILED_TOL && c->err_fd <= FD_TOL;
    bad += !ok;
    printf("%-28s f32 %.2e at %-12s finite diff. %.2e at %-12s (%d coords, %d at a kink)  %s\n",
           p->name, c->err_cg, at_cg, c->err_fd, at_fd, c->nfd, c->kinks, ok ? "ok" : "FAILED");
  }
  printf("%s\n", bad ? "gradcheck: FAILED" : "gradcheck: ok");
  return bad ? 1 : 0;
}

int nnc_gradcheck_main(int argc, char **argv) {
  gradcheck *G = calloc(1, sizeof *G);
  if (!G) return 1;
  int status = parse_args(G, argc, argv);
  if (status) {
    free(G);
    return status;
  }
  nnc_arena_init(&G->arena);
  status = 1;
  if (build(G) && prepare(G) && compare(G)) status = report(G);
  for (int k = 0; k < G->n; k++)
    free(G->c[k].ref);
  if (G->in) nnc_interp_free(G->in);
  free(G->mem);
  if (G->prog) nnc_cg_free(G->prog);
  nnc_arena_destroy(&G->arena);
  free(G);
  return status;
}
