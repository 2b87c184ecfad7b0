/* deploy_cmd.c: the driver's half of `nnc MODEL.nn --emit=c|obj -o OUT/NAME`.
 *
 * Finds the trained values (--weights CKPT, else the .nn file's
 * checkpoint(path) when that file exists), loads them with the runtime's
 * checkpoint reader into an arena laid out by the training program's
 * table (nnc_cg_compile_table: no machine code), has codegen build the
 * inference program (codegen/deploy.h) and writes its files: NAME.h, and
 * NAME.c or NAME.o, NAME.weights with --extern-weights, NAME_test.c with
 * --emit-test. The test's expected outputs are nnc's own evaluation: the
 * module JIT-compiled as `nnc run` compiles it, its eval step run on the
 * same inputs with the same weights. With --quantize int8 the products
 * become int8 (codegen/deploy_quant.c), calibrated on training images run
 * through the float program compiled in memory; both programs are then
 * run on the test images and the two accuracies printed. --emit=onnx loads the weights the same
 * way and has codegen write an ONNX model (codegen/onnx.h). Only this file
 * and nnc.c print.
 */
#define _XOPEN_SOURCE 700
#include "deploy_cmd.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>

#include "deploy.h"
#include "nnc_rt.h"
#include "onnx.h"

enum { TEST_CALLS = 2 };
static const double TEST_TOLERANCE = 1e-4;
/* int8: the reference is the int8 program as the object computes it. The
 * C's float kernels (batch norm, pooling, ...) round differently from the
 * object's; an activation that lands on the other side of a quantisation
 * step then moves the outputs by a step's worth (up to 0.024 in the CNN's
 * logits, measured on the 10,000 test images). */
static const double TEST_TOLERANCE_INT8 = 0.05;

/* The trained values: an arena in the training layout, and the
 * standardisation statistics from the checkpoint. */
typedef struct trained {
  char *arena;
  float *mean, *std; /* NULL unless the data block standardises */
  const float **tensor;
  nnc_deploy_values values;
} trained;

static void trained_free(trained *t) {
  free(t->arena);
  free(t->mean);
  free(t->std);
  free(t->tensor);
}

static bool exists(const char *path) {
  return access(path, R_OK) == 0;
}

/* The checkpoint to deploy: --weights, else checkpoint(path) of the .nn
 * file as training wrote it (relative to the working folder, or next to
 * the .nn file). NULL after printing why. */
static char *find_checkpoint(const nnc_module *m, const char *nn_path, const char *flag) {
  if (flag) {
    if (exists(flag)) return strdup(flag);
    fprintf(stderr, "nnc: error: cannot read the checkpoint '%s': %s\n", flag, strerror(errno));
    return NULL;
  }
  const char *ck = m->config.checkpoint.path;
  if (!ck) {
    fprintf(stderr,
            "%s: error: no weights to deploy: the file has no checkpoint(path = ...); pass "
            "--weights CKPT (a checkpoint written by training)\n",
            nn_path);
    return NULL;
  }
  if (exists(ck)) return strdup(ck);
  const char *slash = strrchr(nn_path, '/');
  if (ck[0] != '/' && slash) {
    size_t n = (size_t)(slash - nn_path) + 1 + strlen(ck) + 1;
    char *next = malloc(n);
    if (next) snprintf(next, n, "%.*s/%s", (int)(slash - nn_path), nn_path, ck);
    if (next && exists(next)) return next;
    free(next);
  }
  fprintf(stderr,
          "%s: error: no weights to deploy: its checkpoint '%s' does not exist (train first: "
          "nnc run %s; or pass --weights CKPT)\n",
          nn_path, ck, nn_path);
  return NULL;
}

/* Loads the checkpoint's weights (and statistics) into an arena of model
 * table rt; false after printing why. */
static bool load_trained(const nnc_module *m, const nnc_rt_model *rt, const char *ckpt,
                         trained *t) {
  memset(t, 0, sizeof *t);
  size_t bytes = (rt->arena_bytes + 63) / 64 * 64;
  int64_t d = nnc_shape_numel(&m->sample_shape);
  t->arena = aligned_alloc(64, bytes ? bytes : 64);
  t->mean = malloc(sizeof(float) * (size_t)d);
  t->std = malloc(sizeof(float) * (size_t)d);
  t->tensor = calloc((size_t)m->ntensors + 1, sizeof *t->tensor);
  if (!t->arena || !t->mean || !t->std || !t->tensor) {
    fputs("nnc: error: out of memory\n", stderr);
    return false;
  }
  memset(t->arena, 0, bytes);
  for (int64_t i = 0; i < d; i++)
    t->mean[i] = t->std[i] = NAN; /* NaN: not in the file */
  nnc_rt_named_tensor extra[2];
  for (int i = 0; i < 2; i++) {
    extra[i] = (nnc_rt_named_tensor){.name = i ? "nnc.standardize.std" : "nnc.standardize.mean",
                                     .rank = m->sample_shape.rank,
                                     .data = i ? t->std : t->mean};
    for (int k = 0; k < m->sample_shape.rank; k++)
      extra[i].shape[k] = m->sample_shape.dim[k];
  }
  nnc_rt_ckpt_load_opts o = {.weights_only = 1, .extra = extra, .nextra = 2, .extra_by_numel = 1};
  nnc_rt_error err;
  if (nnc_rt_checkpoint_load(ckpt, rt, t->arena, &o, NULL, NULL, &err)) {
    fprintf(stderr, "nnc: error: %s: %s\n", ckpt, err.msg);
    return false;
  }
  if (!m->config.data.standardize) {
    free(t->mean), free(t->std);
    t->mean = t->std = NULL;
  } else if (d > 0 && isnan(t->mean[0])) {
    fprintf(stderr,
            "nnc: error: %s has no standardisation statistics (nnc.standardize.mean/std), but "
            "the data block standardises: was it written by training this model?\n",
            ckpt);
    return false;
  }
  for (int i = 0; i < m->ntensors && i < rt->ntensors; i++)
    t->tensor[i] = (const float *)(t->arena + rt->tensors[i].offset);
  t->values = (nnc_deploy_values){.tensor = t->tensor,
                                  .scale = m->config.data.scale != 0 ? m->config.data.scale : 1,
                                  .mean = t->mean,
                                  .std = t->std};
  return true;
}

/* Raw test inputs (in the data's units) around the training data's
 * distribution: mean + std * z, z in [-2, 2), divided by the scale. */
static void test_inputs(const nnc_deploy_values *v, float *x, int64_t n, int64_t d) {
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 1);
  for (int64_t i = 0; i < n; i++) {
    double u = nnc_rt_rng_uniform(&rng);
    int64_t j = i % d;
    double val = v->mean ? v->mean[j] + v->std[j] * (4 * u - 2) : u;
    x[i] = (float)(val / v->scale);
  }
}

/* nnc's evaluation of the inputs: the JIT-compiled eval step with the
 * same weights, the input prepared as the runtime prepares data. */
static bool evaluate(const nnc_module *m, const nnc_cg_options *co, const char *ckpt,
                     const nnc_deploy *dp, const float *in, float *out) {
  nnc_cg_program *prog = NULL;
  char err[1024];
  nnc_cg_options o = *co;
  trained t;
  bool ok = nnc_cg_compile(m, &o, &prog, err, sizeof err); /* m: eval graph only */
  if (!ok) fprintf(stderr, "nnc: error: %s\n", err);
  ok = ok && load_trained(m, nnc_cg_model(prog), ckpt, &t);
  nnc_rt_error rerr;
  nnc_rt_pool *pool = ok ? nnc_rt_pool_create(1, &rerr) : NULL;
  if (ok && !pool) {
    fprintf(stderr, "nnc: error: %s\n", rerr.msg);
    ok = false;
  }
  int64_t B = nnc_deploy_batch(dp), D = nnc_deploy_input_size(dp), O = nnc_deploy_output_size(dp);
  float scale = (float)t.values.scale;
  for (int c = 0; ok && c < TEST_CALLS; c++) {
    float *x = (float *)(t.arena + nnc_cg_input_offset(prog, NNC_IN_X));
    for (int64_t i = 0; i < B * D; i++) {
      float v = in[c * B * D + i] * scale;
      if (t.mean) v = (v - t.mean[i % D]) / t.std[i % D];
      x[i] = v;
    }
    nnc_cg_model(prog)->eval_step(t.arena, pool);
    memcpy(out + c * B * O, t.arena + nnc_cg_output_offset(prog, NNC_OUT_PRED),
           sizeof(float) * (size_t)(B * O));
  }
  if (pool) nnc_rt_pool_destroy(pool);
  if (prog) trained_free(&t);
  nnc_cg_free(prog);
  return ok;
}

/* ---- int8 ---- */

/* The data block's IDX files NAME-images/labels (raw units: scale 1). */
static bool load_idx_set(const nnc_module *m, const char *nn_path, const char *images,
                         const char *labels, nnc_rt_dataset *ds) {
  memset(ds, 0, sizeof *ds);
  if (m->config.data.format != NNC_DATA_IDX || !m->config.data.dir) {
    fprintf(stderr, "%s: error: --quantize int8 calibrates on IDX data only (for now)\n", nn_path);
    return false;
  }
  const char *slash = strrchr(nn_path, '/');
  char *base = slash ? strndup(nn_path, (size_t)(slash - nn_path)) : strdup(".");
  char *dir = NULL, *x = NULL, *y = NULL;
  nnc_rt_error err;
  bool ok = base &&
            !nnc_rt_find_data(base, m->config.data.dir, 1, 0, "IDX data folder", &dir, &err) &&
            !nnc_rt_find_idx_file(dir, images, &x, &err) &&
            !nnc_rt_find_idx_file(dir, labels, &y, &err) && !nnc_rt_load_idx(ds, x, y, 1.0f, &err);
  if (!ok) fprintf(stderr, "%s: error: %s\n", nn_path, base ? err.msg : "out of memory");
  free(base), free(dir), free(x), free(y);
  return ok;
}

/* Runs j over the first n samples of ds, a batch at a time (the last one
 * padded with zeros); each call's outputs to `seen` (may be NULL); returns
 * the number classified right. */
typedef void (*observer)(void *ctx, const void *workspace);
static int64_t run_set(const nnc_deploy *d, const nnc_deploy_jit *j, const nnc_rt_dataset *ds,
                       int64_t n, observer seen, void *ctx, void *ws) {
  int64_t B = nnc_deploy_batch(d), D = nnc_deploy_input_size(d), O = nnc_deploy_output_size(d);
  float *in = malloc(sizeof(float) * (size_t)(B * D)),
        *out = malloc(sizeof(float) * (size_t)(B * O));
  int64_t right = 0;
  for (int64_t s = 0; in && out && s < n; s += B) {
    int64_t b = n - s < B ? n - s : B;
    memset(in, 0, sizeof(float) * (size_t)(B * D));
    for (int64_t i = 0; i < b; i++)
      nnc_rt_dataset_sample(ds, s + i, in + i * D);
    nnc_deploy_jit_predict(j, in, out, ws);
    if (seen) seen(ctx, ws);
    for (int64_t i = 0; ds->labels && i < b; i++) {
      int64_t best = 0;
      for (int64_t c = 1; c < O; c++)
        if (out[i * O + c] > out[i * O + best]) best = c;
      right += best == ds->labels[s + i];
    }
  }
  free(in);
  free(out);
  return right;
}

typedef struct ranges {
  const nnc_deploy *cal;
  const bool *which;
  float *amin, *amax;
} ranges;

static void observe(void *ctx, const void *ws) {
  ranges *r = ctx;
  nnc_deploy_observe(r->cal, ws, r->which, r->amin, r->amax);
}

static void *workspace_for(const nnc_deploy *d) {
  size_t n = (size_t)(nnc_deploy_workspace_size(d) + 63) / 64 * 64;
  return aligned_alloc(64, n ? n : 64);
}

/* Calibrates and quantises d; prints the accuracies. */
static bool quantize(const nnc_module *m, const char *nn_path, nnc_deploy *d,
                     const nnc_deploy_options *o, const nnc_deploy_values *v,
                     const nnc_cg_options *co, const nnc_deploy_flags *fl) {
  int nk = nnc_deploy_kernels(d);
  bool *which = calloc((size_t)nk + 1, 1);
  float *amin = malloc(sizeof(float) * ((size_t)nk + 1));
  float *amax = malloc(sizeof(float) * ((size_t)nk + 1));
  nnc_rt_dataset train = {0}, test = {0};
  nnc_deploy *cal = NULL;
  nnc_deploy_jit *jf = NULL, *jq = NULL;
  void *wf = NULL, *wq = NULL;
  bool ok = false;
  char err[1024];
  int nq = 0, nproducts = 0;
  if (!which || !amin || !amax) goto done;
  for (int i = 0; i < nk; i++) {
    which[i] = nnc_deploy_quantizable(d, i, fl->keep_float);
    amin[i] = INFINITY, amax[i] = -INFINITY;
    nq += which[i];
    nproducts += nnc_deploy_quantizable(d, i, NULL);
  }
  if (nq == 0) {
    fprintf(stderr, "%s: error: --quantize int8: no product to quantise%s\n", nn_path,
            fl->keep_float ? " (--keep-float keeps them all)" : "");
    goto done;
  }
  if (!load_idx_set(m, nn_path, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", &train) ||
      !load_idx_set(m, nn_path, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", &test))
    goto done;
  nnc_deploy_options oc = *o;
  oc.calibration = true;
  cal = nnc_deploy_build(m, &oc, err, sizeof err);
  jf = cal ? nnc_deploy_jit_compile(cal, v, co, err, sizeof err) : NULL;
  wf = cal ? workspace_for(cal) : NULL;
  if (!jf || !wf) {
    fprintf(stderr, "%s: error: %s\n", nn_path, wf || !cal || !jf ? err : "out of memory");
    goto done;
  }
  /* Whole calls only: a padded batch would show the products zeros. */
  int64_t ncal = fl->calibrate < train.n ? fl->calibrate : train.n, B = nnc_deploy_batch(d);
  if (ncal >= B) ncal = ncal / B * B;
  ranges r = {cal, which, amin, amax};
  run_set(cal, jf, &train, ncal, observe, &r, wf);
  int64_t wfloat = nnc_deploy_weights_size(d);
  nnc_deploy_quantize(d, v, which, amin, amax);
  nnc_deploy_requantize(d, v, cal, wf);
  jq = nnc_deploy_jit_compile(d, v, co, err, sizeof err);
  wq = workspace_for(d);
  if (!jq || !wq) {
    fprintf(stderr, "%s: error: %s\n", nn_path, jq ? "out of memory" : err);
    goto done;
  }
  double af = (double)run_set(cal, jf, &test, test.n, NULL, NULL, wf) / (double)test.n;
  double aq = (double)run_set(d, jq, &test, test.n, NULL, NULL, wq) / (double)test.n;
  printf("int8: test accuracy %.4f (float %.4f, %+.2f points) on %lld test images; %d of %d "
         "products int8, calibrated on %lld training images; weights %lld -> %lld bytes\n",
         aq, af, 100 * (aq - af), (long long)test.n, nq, nproducts, (long long)ncal,
         (long long)wfloat, (long long)(nnc_deploy_weights_size(d) + nnc_deploy_int8_bytes(d)));
  ok = true;
done:
  nnc_deploy_jit_free(jf);
  nnc_deploy_jit_free(jq);
  nnc_deploy_free(cal);
  nnc_rt_dataset_free(&train);
  nnc_rt_dataset_free(&test);
  free(wf), free(wq), free(which), free(amin), free(amax);
  return ok;
}

/* The int8 program's outputs for the test inputs (its own reference: the
 * C and the object compute the same int8 arithmetic). */
static bool evaluate_int8(const nnc_deploy *d, const nnc_deploy_values *v, const nnc_cg_options *co,
                          const char *nn_path, const float *in, float *out) {
  char err[1024];
  nnc_deploy_jit *j = nnc_deploy_jit_compile(d, v, co, err, sizeof err);
  void *ws = j ? workspace_for(d) : NULL;
  if (!ws) fprintf(stderr, "%s: error: %s\n", nn_path, j ? "out of memory" : err);
  int64_t B = nnc_deploy_batch(d), D = nnc_deploy_input_size(d), O = nnc_deploy_output_size(d);
  for (int c = 0; ws && c < TEST_CALLS; c++)
    nnc_deploy_jit_predict(j, in + c * B * D, out + c * B * O, ws);
  bool ok = ws != NULL;
  free(ws);
  nnc_deploy_jit_free(j);
  return ok;
}

/* ---- files ---- */

typedef bool (*writer)(FILE *f, void *ctx, char *err, size_t errlen);

/* Writes path with w; on failure removes it and prints why. */
static bool write_file(const char *path, writer w, void *ctx) {
  FILE *f = fopen(path, "wb");
  if (!f) {
    fprintf(stderr, "nnc: error: cannot open %s for writing: %s\n", path, strerror(errno));
    return false;
  }
  char err[1024] = "";
  bool ok = w(f, ctx, err, sizeof err);
  if (fclose(f) != 0 && ok) {
    snprintf(err, sizeof err, "%s", strerror(errno));
    ok = false;
  }
  if (!ok) {
    fprintf(stderr, "nnc: error: %s: %s\n", path, err);
    remove(path);
  }
  return ok;
}

typedef struct job {
  const nnc_deploy *d;
  const nnc_deploy_values *v;
  const nnc_deploy_tests *tests;
} job;

static bool w_header(FILE *f, void *ctx, char *err, size_t errlen) {
  job *j = ctx;
  return nnc_deploy_write_header(j->d, j->v, f, err, errlen);
}
static bool w_c(FILE *f, void *ctx, char *err, size_t errlen) {
  job *j = ctx;
  return nnc_deploy_write_c(j->d, j->v, f, err, errlen);
}
static bool w_weights(FILE *f, void *ctx, char *err, size_t errlen) {
  job *j = ctx;
  return nnc_deploy_write_weights(j->d, j->v, f, err, errlen);
}
static bool w_test(FILE *f, void *ctx, char *err, size_t errlen) {
  job *j = ctx;
  return nnc_deploy_write_test(j->d, j->tests, f, err, errlen);
}

static bool is_identifier(const char *s) {
  if (!*s || (!isalpha((unsigned char)*s) && *s != '_')) return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '_') return false;
  return true;
}

/* "OUT/NAME.c" or "OUT/NAME" -> "OUT/NAME" (malloc'd). */
static char *strip_ext(const char *out, const char *ext) {
  size_t n = strlen(out), e = strlen(ext);
  if (n > e && !strcmp(out + n - e, ext)) n -= e;
  char *base = malloc(n + 1);
  if (base) memcpy(base, out, n), base[n] = 0;
  return base;
}

static char *with_ext(const char *base, const char *ext) {
  size_t n = strlen(base) + strlen(ext) + 1;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s%s", base, ext);
  return s;
}

int nnc_deploy_main(const nnc_module *m, const char *nn_path, bool obj, const char *out,
                    const nnc_cg_options *co, const nnc_deploy_flags *fl) {
  const char *prefix = fl->name ? fl->name : m->name;
  if (!is_identifier(prefix)) {
    fprintf(stderr, "nnc: error: --name '%s' is not a C identifier\n", prefix);
    return 2;
  }
  if (fl->int8 && fl->extern_weights) {
    fputs("nnc: error: --quantize int8 goes without --extern-weights (for now)\n", stderr);
    return 2;
  }
  if (obj && fl->extern_weights) {
    fputs("nnc: error: --extern-weights goes with --emit=c (the object keeps its weights in "
          ".rodata)\n",
          stderr);
    return 2;
  }
  int status = 1;
  char *base = strip_ext(out, obj ? ".o" : ".c");
  char *h_path = with_ext(base, ".h"), *src = with_ext(base, obj ? ".o" : ".c");
  char *w_path = with_ext(base, ".weights"), *t_path = with_ext(base, "_test.c");
  const char *slash = strrchr(base, '/');
  char *header = with_ext(slash ? slash + 1 : base, ".h");
  char *ckpt = NULL;
  nnc_cg_program *table = NULL;
  nnc_deploy *d = NULL;
  trained t = {0};
  float *tin = NULL, *tout = NULL;
  char err[1024];
  if (!base || !h_path || !src || !w_path || !t_path || !header) goto done;
  if (slash && slash != base) { /* OUT/ may not exist yet (its parent must) */
    char *dir = strndup(base, (size_t)(slash - base));
    if (dir && mkdir(dir, 0777) != 0 && errno != EEXIST) {
      fprintf(stderr, "nnc: error: cannot make the folder %s: %s\n", dir, strerror(errno));
      free(dir);
      goto done;
    }
    free(dir);
  }
  ckpt = find_checkpoint(m, nn_path, fl->weights);
  if (!ckpt) goto done;
  /* The eval graph alone: its batch is the deployed one, which the
   * training graph (at the file's batch) does not share. */
  nnc_module eval_only = *m;
  eval_only.train = NULL;
  if (!nnc_cg_compile_table(&eval_only, co, &table, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", nn_path, err);
    goto done;
  }
  if (!load_trained(m, nnc_cg_model(table), ckpt, &t)) goto done;
  nnc_deploy_options o = {.prefix = prefix,
                          .header = header,
                          .extern_weights = fl->extern_weights,
                          .vector_width = obj ? nnc_cg_vector_width(co) : 16};
  d = nnc_deploy_build(m, &o, err, sizeof err);
  if (!d) {
    fprintf(stderr, "%s: error: %s\n", nn_path, err);
    goto done;
  }
  if (fl->int8 && !quantize(m, nn_path, d, &o, &t.values, co, fl)) goto done;
  job j = {d, &t.values, NULL};
  if (!write_file(h_path, w_header, &j)) goto done;
  if (obj) {
    if (!nnc_deploy_write_obj(d, &t.values, co, src, err, sizeof err)) {
      fprintf(stderr, "nnc: error: %s: %s\n", src, err);
      goto done;
    }
  } else if (!write_file(src, w_c, &j)) {
    goto done;
  }
  if (fl->extern_weights && !write_file(w_path, w_weights, &j)) goto done;
  if (fl->emit_test && nnc_deploy_input_is_i32(d)) {
    fprintf(stderr, "%s: error: --emit-test does not support i32 (index) inputs yet\n", nn_path);
    goto done;
  }
  if (fl->emit_test) {
    int64_t B = nnc_deploy_batch(d), D = nnc_deploy_input_size(d), O = nnc_deploy_output_size(d);
    tin = malloc(sizeof(float) * (size_t)(TEST_CALLS * B * D));
    tout = malloc(sizeof(float) * (size_t)(TEST_CALLS * B * O));
    if (!tin || !tout) {
      fputs("nnc: error: out of memory\n", stderr);
      goto done;
    }
    test_inputs(&t.values, tin, TEST_CALLS * B * D, D);
    if (fl->int8 ? !evaluate_int8(d, &t.values, co, nn_path, tin, tout)
                 : !evaluate(&eval_only, co, ckpt, d, tin, tout))
      goto done;
    nnc_deploy_tests tests = {TEST_CALLS, tin, tout,
                              fl->int8 ? TEST_TOLERANCE_INT8 : TEST_TOLERANCE};
    j.tests = &tests;
    if (!write_file(t_path, w_test, &j)) goto done;
  }
  status = 0;
done:
  free(tin);
  free(tout);
  trained_free(&t);
  nnc_deploy_free(d);
  nnc_cg_free(table);
  free(ckpt);
  free(base), free(h_path), free(src), free(w_path), free(t_path), free(header);
  return status;
}

typedef struct onnx_job {
  const nnc_module *m;
  const nnc_deploy_values *v;
  const nnc_onnx_options *o;
} onnx_job;

static bool w_onnx(FILE *f, void *ctx, char *err, size_t errlen) {
  onnx_job *j = ctx;
  return nnc_onnx_write(j->m, j->v, j->o, f, err, errlen);
}

int nnc_deploy_onnx_main(const nnc_module *m, const char *nn_path, const char *out,
                         const nnc_cg_options *co, const nnc_deploy_flags *fl) {
  if (fl->name || fl->emit_test || fl->extern_weights) {
    fputs("nnc: error: --name, --emit-test and --extern-weights go with --emit=c or --emit=obj, "
          "not --emit=onnx\n",
          stderr);
    return 2;
  }
  int status = 1;
  char *ckpt = find_checkpoint(m, nn_path, fl->weights);
  nnc_cg_program *table = NULL;
  trained t = {0};
  char err[1024];
  nnc_module eval_only = *m;
  eval_only.train = NULL;
  if (!ckpt) goto done;
  if (!nnc_cg_compile_table(&eval_only, co, &table, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", nn_path, err);
    goto done;
  }
  if (!load_trained(m, nnc_cg_model(table), ckpt, &t)) goto done;
  nnc_onnx_options o = {.fold_bn = fl->fold_bn, .producer = fl->version};
  onnx_job j = {&eval_only, &t.values, &o};
  if (write_file(out, w_onnx, &j)) status = 0;
done:
  trained_free(&t);
  nnc_cg_free(table);
  free(ckpt);
  return status;
}
