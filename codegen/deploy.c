/* deploy.c: the inference program of a trained network, and the files
 * that come with it whatever the backend: the header, the weights file of
 * --extern-weights and the parity test program.
 *
 * nnc_deploy_build takes a module, keeps only the prediction of its eval
 * graph (so the loss, the labels and the metrics are dead and not
 * lowered), lowers and plans that graph alone with the ordinary passes
 * (lower*.c, plan.c: the same kernels `nnc run` evaluates with), then lays
 * the buffers out again for deployment: the persistent tensors the kernels
 * read go to a read-only weights block, the input, the prediction and the
 * eval temporaries to the caller's workspace, whose size is therefore
 * exactly what evaluation needs. No LLVM here; emit_c.c prints the program
 * as C, emit.c compiles it through llvm.c.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "deploy_internal.h"

static int64_t aligned(int64_t n) {
  return (n + NNC_DEPLOY_ALIGN - 1) / NNC_DEPLOY_ALIGN * NNC_DEPLOY_ALIGN;
}

static int64_t bytes_of(const nnc_kbuf *b) {
  return aligned(b->numel * nnc_kt_size(b->type));
}

bool nnc_deploy_in_weights(const nnc_deploy *d, int b) {
  return d->p.bufs[b].kind == NNC_KBUF_TENSOR;
}

void nnc_deploy_identifier(char *buf, size_t n, const char *name) {
  size_t j = 0;
  if (n == 0) return;
  if (!isalpha((unsigned char)name[0]) && name[0] != '_' && j + 1 < n) buf[j++] = '_';
  for (const char *s = name; *s && j + 1 < n; s++)
    buf[j++] = isalnum((unsigned char)*s) ? *s : '_';
  buf[j] = 0;
}

const char *nnc_deploy_float(char *buf, size_t n, double v, bool f32) {
  if (isnan(v)) return "NAN";
  if (isinf(v)) return v > 0 ? "INFINITY" : "(-INFINITY)";
  char num[40];
  if (f32)
    snprintf(num, sizeof num, "%.9g", (double)(float)v);
  else
    snprintf(num, sizeof num, "%.17g", v);
  bool has_point = strpbrk(num, ".e") != NULL;
  snprintf(buf, n, "%s%s%s", num, has_point ? "" : ".0", f32 ? "f" : "");
  return buf;
}

void nnc_deploy_float_list(FILE *f, const float *x, int64_t n) {
  char buf[48];
  for (int64_t i = 0; i < n; i++)
    fprintf(f, "%s%s",
            i == 0  ? "\n    "
            : i % 8 ? ", "
                    : ",\n    ",
            nnc_deploy_float(buf, sizeof buf, x[i], true));
  fputs("\n", f);
}

static bool fail(char *err, size_t errlen, const char *msg) {
  snprintf(err, errlen, "%s", msg);
  return false;
}

/* Marks every base buffer a kernel of g touches. */
static void touched_buffers(const nnc_kprog *p, const nnc_kgraph *g, bool *touched) {
  for (int i = 0; i < g->n; i++) {
    const nnc_kernel *k = g->k[i];
    for (int j = 0; j < k->nreads; j++)
      touched[nnc_kbuf_base(p, k->reads[j])] = true;
    for (int j = 0; j < k->nwrites; j++)
      touched[nnc_kbuf_base(p, k->writes[j])] = true;
  }
}

/* The deployment layout (see deploy_internal.h) over the plan's offsets. */
static bool relayout(nnc_deploy *d, char *err, size_t errlen) {
  nnc_kprog *p = &d->p;
  bool *touched = nnc_arena_alloc(&d->arena, (size_t)p->nbufs + 1);
  touched_buffers(p, &p->eval, touched);
  for (int b = 0; b < p->nbufs; b++) {
    const nnc_kbuf *kb = &p->bufs[b];
    if (!touched[b]) continue;
    if (kb->kind == NNC_KBUF_INPUT && kb->id != NNC_IN_X) {
      snprintf(err, errlen, "the prediction reads the input '%s': only x can be deployed",
               nnc_input_name((nnc_input_kind)kb->id));
      return false;
    }
    if (kb->kind == NNC_KBUF_TENSOR && d->mod.tensors[kb->id].dtype != NNC_F32) {
      snprintf(err, errlen, "tensor '%s' is not f32: only f32 weights can be deployed", kb->name);
      return false;
    }
  }
  d->w_off = nnc_arena_alloc(&d->arena, sizeof(int64_t) * ((size_t)d->mod.ntensors + 1));
  int64_t off = 0;
  for (int t = 0; t < d->mod.ntensors; t++) {
    int b = p->tensor_bufs[t];
    d->w_off[t] = -1;
    if (!touched[b]) continue;
    d->w_off[t] = p->bufs[b].offset = off;
    off += bytes_of(&p->bufs[b]);
  }
  d->w_bytes = off;
  d->x_buf = p->input_buf[NNC_IN_X];
  d->pred_buf = p->output_buf[NNC_OUT_PRED];
  if (d->x_buf < 0 || d->pred_buf < 0)
    return fail(err, errlen, "the prediction does not depend on the input x");
  /* Workspace: x, the prediction, then the temporaries as planned (for
   * calibration: one after another, none sharing memory). */
  p->bufs[d->x_buf].offset = 0;
  p->bufs[d->pred_buf].offset = bytes_of(&p->bufs[d->x_buf]);
  int64_t temps = p->bufs[d->pred_buf].offset + bytes_of(&p->bufs[d->pred_buf]);
  int64_t apart = temps;
  for (int b = 0; b < p->nbufs; b++) {
    if (p->bufs[b].kind != NNC_KBUF_TEMP) continue;
    if (d->o.calibration) {
      p->bufs[b].offset = apart;
      apart += bytes_of(&p->bufs[b]);
    } else {
      p->bufs[b].offset += temps - p->temp_base;
    }
  }
  for (int b = 0; b < p->nbufs; b++)
    if (p->bufs[b].kind == NNC_KBUF_VIEW) p->bufs[b].offset = p->bufs[nnc_kbuf_base(p, b)].offset;
  d->ws_bytes = d->o.calibration ? apart : temps + p->eval.temp_bytes;
  return true;
}

nnc_deploy *nnc_deploy_build(const nnc_module *m, const nnc_deploy_options *o, char *err,
                             size_t errlen) {
  if (!m->eval || !m->eval->outputs[NNC_OUT_PRED] || !m->eval->inputs[NNC_IN_X]) {
    snprintf(err, errlen, "the model has no prediction to deploy");
    return NULL;
  }
  nnc_deploy *d = calloc(1, sizeof *d);
  if (!d) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  nnc_arena_init(&d->arena);
  d->o = *o;
  d->o.prefix = nnc_arena_strdup(&d->arena, o->prefix);
  d->o.header = nnc_arena_strdup(&d->arena, o->header);
  char *upper = nnc_arena_strdup(&d->arena, o->prefix);
  for (char *s = upper; *s; s++)
    *s = (char)toupper((unsigned char)*s);
  d->upper = upper;
  /* The eval graph with the prediction as its only output: the loss,
   * the labels and the metrics are dead and are not lowered. */
  d->eval = *m->eval;
  for (int k = 0; k < NNC_OUT_COUNT_; k++)
    if (k != NNC_OUT_PRED) d->eval.outputs[k] = NULL;
  d->eval.nupdates = 0;
  d->mod = *m;
  d->mod.train = NULL;
  d->mod.eval = &d->eval;
  d->eval.module = &d->mod;
  d->p.arena = &d->arena;
  d->p.vector_width = o->vector_width > 0 ? o->vector_width : 16;
  d->p.use_gemm = true;
  if (!nnc_cg_lower(&d->p, &d->mod, err, errlen)) goto fail;
  nnc_cg_plan(&d->p);
  if (!relayout(d, err, errlen)) goto fail;
  const nnc_node *x = m->eval->inputs[NNC_IN_X], *pred = m->eval->outputs[NNC_OUT_PRED];
  d->batch = x->shape.dim[0];
  d->in_size = nnc_shape_numel(&x->shape) / d->batch;
  d->out_size = nnc_shape_numel(&pred->shape) / d->batch;
  d->in_type = d->p.bufs[d->x_buf].type;
  d->out_type = d->p.bufs[d->pred_buf].type;
  if (d->out_type != NNC_KT_F32 || (d->in_type != NNC_KT_F32 && d->in_type != NNC_KT_I32)) {
    snprintf(err, errlen, "only f32 predictions from f32 or i32 inputs can be deployed");
    goto fail;
  }
  return d;
fail:
  nnc_deploy_free(d);
  return NULL;
}

void nnc_deploy_free(nnc_deploy *d) {
  if (!d) return;
  nnc_arena_destroy(&d->arena);
  free(d);
}

int64_t nnc_deploy_batch(const nnc_deploy *d) {
  return d->batch;
}
int64_t nnc_deploy_input_size(const nnc_deploy *d) {
  return d->in_size;
}
int64_t nnc_deploy_output_size(const nnc_deploy *d) {
  return d->out_size;
}
bool nnc_deploy_input_is_i32(const nnc_deploy *d) {
  return d->in_type == NNC_KT_I32;
}
int64_t nnc_deploy_workspace_size(const nnc_deploy *d) {
  return d->ws_bytes;
}
int64_t nnc_deploy_weights_size(const nnc_deploy *d) {
  return d->w_bytes;
}
int nnc_deploy_kernels(const nnc_deploy *d) {
  return d->p.eval.n;
}
bool nnc_deploy_uses_tensor(const nnc_deploy *d, int t) {
  return t >= 0 && t < d->mod.ntensors && d->w_off[t] >= 0;
}

/* ---- the header ---- */

static const char *in_ctype(const nnc_deploy *d) {
  return d->in_type == NNC_KT_I32 ? "int32_t" : "float";
}

static void describe_input(const nnc_deploy *d, const nnc_deploy_values *v, FILE *f) {
  const char *P = d->upper;
  if (d->in_type == NNC_KT_I32) {
    fprintf(f, " *   input      %s_BATCH * %s_INPUT_SIZE int32_t values, sample after sample\n", P,
            P);
    return;
  }
  fprintf(f,
          " *   input      %s_BATCH * %s_INPUT_SIZE floats, sample after sample, in the\n"
          " *              data's own units (for an IDX image the pixel values 0..255):\n",
          P, P);
  if (v->scale != 1 && v->mean)
    fprintf(f,
            " *              multiplied by the data block's scale %.9g, then standardised\n"
            " *              with the training set's mean and std, inside\n",
            v->scale);
  else if (v->scale != 1)
    fprintf(f, " *              multiplied by the data block's scale %.9g inside\n", v->scale);
  else if (v->mean)
    fprintf(f, " *              standardised with the training set's mean and std inside\n");
  else
    fprintf(f, " *              used as they are (the data block has no scale)\n");
}

bool nnc_deploy_write_header(const nnc_deploy *d, const nnc_deploy_values *v, FILE *f, char *err,
                             size_t errlen) {
  const char *p = d->o.prefix, *P = d->upper;
  const nnc_module *m = &d->mod;
  char shape[128];
  nnc_shape_str(shape, sizeof shape, m->sample_dtype, &m->sample_shape);
  bool classes = m->config.loss == NNC_LOSS_CROSS_ENTROPY;
  fprintf(f, "/* %s: the trained network '%s' as a function; generated by nnc.\n *\n", d->o.header,
          m->name);
  if (d->o.extern_weights)
    fprintf(f,
            " *   int %s_predict_with(const void *weights, const %s *input, float *output,\n"
            " *                       void *workspace);\n *\n"
            " *   weights    the %s_WEIGHTS_SIZE bytes of the .weights file nnc wrote beside\n"
            " *              this header, loaded or mapped by the caller, aligned to 4 bytes\n",
            p, in_ctype(d), P);
  else
    fprintf(f, " *   int %s_predict(const %s *input, float *output, void *workspace);\n *\n", p,
            in_ctype(d));
  describe_input(d, v, f);
  fprintf(f, " *              (the model's input x: %s per sample)\n", shape);
  if (classes)
    fprintf(f,
            " *   output     %s_BATCH * %s_OUTPUT_SIZE floats: the model's return value, %lld\n"
            " *              logits per sample, one per class 0..%lld (the largest wins)\n",
            P, P, (long long)d->out_size, (long long)d->out_size - 1);
  else
    fprintf(f, " *   output     %s_BATCH * %s_OUTPUT_SIZE floats: the model's return value\n", P,
            P);
  fprintf(f,
          " *   workspace  %s_WORKSPACE_SIZE bytes aligned to %s_WORKSPACE_ALIGN, owned by the\n"
          " *              caller (aligned_alloc(%s_WORKSPACE_ALIGN, %s_WORKSPACE_SIZE), or a\n"
          " *              static buffer); scratch, needs no initialisation\n"
          " *\n"
          " * Returns 0, or 1 for a NULL argument, 2 for a misaligned one. No malloc, no\n"
          " * static mutable state, no threads: calls with workspaces of their own may run\n"
          " * at once on different threads. The kernels are the ones `nnc run` evaluates\n"
          " * with, run one after another on the calling thread%s\n"
          " */\n",
          P, P, P, P,
          d->quant
              ? ";\n * the products (dense, conv2d) in int8 (nnc --quantize int8, docs/deploy.md)."
              : ".");
  fprintf(f, "#ifndef %s_H\n#define %s_H\n\n#include <stdint.h>\n\n", P, P);
  fputs("#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n", f);
  fprintf(f, "#define %s_BATCH %lld /* samples per call */\n", P, (long long)d->batch);
  fprintf(f, "#define %s_INPUT_SIZE %lld /* %s per sample */\n", P, (long long)d->in_size,
          d->in_type == NNC_KT_I32 ? "int32_t values" : "floats");
  fprintf(f, "#define %s_OUTPUT_SIZE %lld /* floats per sample */\n", P, (long long)d->out_size);
  if (classes) fprintf(f, "#define %s_CLASSES %lld\n", P, (long long)d->out_size);
  fprintf(f, "#define %s_WORKSPACE_SIZE %lld /* bytes; exact, computed by nnc */\n", P,
          (long long)d->ws_bytes);
  fprintf(f, "#define %s_WORKSPACE_ALIGN %d\n", P, NNC_DEPLOY_ALIGN);
  if (d->o.extern_weights) {
    fprintf(f, "#define %s_WEIGHTS_SIZE %lld /* bytes of %s.weights */\n\n", P,
            (long long)d->w_bytes, p);
    fprintf(f,
            "int %s_predict_with(const void *weights, const %s *input, float *output, void "
            "*workspace);\n",
            p, in_ctype(d));
  } else {
    fprintf(f, "\nint %s_predict(const %s *input, float *output, void *workspace);\n", p,
            in_ctype(d));
  }
  fputs("\n#ifdef __cplusplus\n}\n#endif\n\n#endif\n", f);
  if (ferror(f)) return fail(err, errlen, "cannot write the header");
  return true;
}

/* ---- the weights file ---- */

unsigned char *nnc_deploy_weights_block(const nnc_deploy *d, const nnc_deploy_values *v) {
  unsigned char *w = calloc((size_t)d->w_bytes + 1, 1);
  if (!w) return NULL;
  for (int t = 0; t < d->mod.ntensors; t++) {
    if (d->w_off[t] < 0) continue;
    int64_t n = nnc_shape_numel(&d->mod.tensors[t].shape);
    for (int64_t i = 0; i < n; i++) {
      uint32_t u;
      memcpy(&u, &v->tensor[t][i], 4);
      for (int byte = 0; byte < 4; byte++) /* little-endian whatever the host */
        w[d->w_off[t] + 4 * i + byte] = (unsigned char)(u >> (8 * byte));
    }
  }
  return w;
}

bool nnc_deploy_write_weights(const nnc_deploy *d, const nnc_deploy_values *v, FILE *f, char *err,
                              size_t errlen) {
  unsigned char *w = nnc_deploy_weights_block(d, v);
  if (!w) return fail(err, errlen, "out of memory");
  bool ok = fwrite(w, 1, (size_t)d->w_bytes, f) == (size_t)d->w_bytes;
  free(w);
  if (!ok) return fail(err, errlen, "cannot write the weights");
  return true;
}

/* ---- the parity test ---- */

static void float_array(FILE *f, const char *name, const float *x, int64_t n) {
  fprintf(f, "static const float %s[%lld] = {", name, (long long)n);
  nnc_deploy_float_list(f, x, n);
  fputs("};\n", f);
}

bool nnc_deploy_write_test(const nnc_deploy *d, const nnc_deploy_tests *t, FILE *f, char *err,
                           size_t errlen) {
  const char *p = d->o.prefix, *P = d->upper;
  int64_t nin = t->ncalls * d->batch * d->in_size, nout = t->ncalls * d->batch * d->out_size;
  fprintf(f,
          "/* %s_test.c: checks the deployed '%s' against nnc's own evaluation;\n"
          " * generated by nnc. %d calls of predict on the inputs below must give the\n"
          " * outputs nnc computed for them, each within %g. Exit 0 when they do.\n"
          " *   cc -std=c99 -O2 %s_test.c %s.c -lm && ./a.out%s\n */\n",
          p, d->mod.name, t->ncalls, t->tolerance, p, p,
          d->o.extern_weights ? " [PATH.weights]" : "");
  fprintf(f, "#include <math.h>\n#include <stdint.h>\n#include <stdio.h>\n#include <stdlib.h>\n\n");
  fprintf(f, "#include \"%s\"\n\n", d->o.header);
  fprintf(f, "#define CALLS %d\n#define TOLERANCE %.17g\n\n", t->ncalls, t->tolerance);
  if (d->in_type == NNC_KT_I32) {
    fprintf(f, "static const int32_t inputs[%lld] = {", (long long)nin);
    for (int64_t i = 0; i < nin; i++)
      fprintf(f, "%s%d", i == 0 ? "\n    " : i % 16 ? ", " : ",\n    ", (int)t->input[i]);
    fputs("\n};\n", f);
  } else {
    float_array(f, "inputs", t->input, nin);
  }
  float_array(f, "expected", t->output, nout);
  if (d->o.extern_weights)
    fprintf(f,
            "\n/* The weights file, read into memory aligned like malloc's. */\n"
            "static void *load_weights(const char *path) {\n"
            "  FILE *f = fopen(path, \"rb\");\n"
            "  void *w = malloc(%s_WEIGHTS_SIZE + 1);\n"
            "  int ok = f && w && fread(w, 1, %s_WEIGHTS_SIZE, f) == %s_WEIGHTS_SIZE;\n"
            "  if (f) fclose(f);\n"
            "  if (!ok) {\n"
            "    fprintf(stderr, \"%s_test: cannot read %%s\\n\", path);\n"
            "    free(w);\n"
            "    return NULL;\n"
            "  }\n"
            "  return w;\n"
            "}\n",
            P, P, P, p);
  fprintf(f, "\nint main(int argc, char **argv) {\n");
  if (d->o.extern_weights)
    fprintf(f,
            "  void *weights = load_weights(argc > 1 ? argv[1] : \"%s.weights\");\n"
            "  if (!weights) return 1;\n",
            p);
  else
    fputs("  (void)argc;\n  (void)argv;\n", f);
  fprintf(f,
          "  /* C99 has no aligned_alloc: align by hand inside a larger block. */\n"
          "  char *block = malloc(%s_WORKSPACE_SIZE + %s_WORKSPACE_ALIGN);\n"
          "  static float out[%s_BATCH * %s_OUTPUT_SIZE];\n"
          "  if (!block) return 1;\n"
          "  void *ws = block + (%s_WORKSPACE_ALIGN - (uintptr_t)block %% %s_WORKSPACE_ALIGN);\n"
          "  double worst = 0;\n"
          "  long bad = 0;\n"
          "  for (int c = 0; c < CALLS; c++) {\n",
          P, P, P, P, P, P);
  if (d->o.extern_weights)
    fprintf(f,
            "    if (%s_predict_with(weights, inputs + (long)c * %s_BATCH * %s_INPUT_SIZE, out, "
            "ws)) {\n",
            p, P, P);
  else
    fprintf(f, "    if (%s_predict(inputs + (long)c * %s_BATCH * %s_INPUT_SIZE, out, ws)) {\n", p,
            P, P);
  fprintf(f,
          "      fprintf(stderr, \"%s_test: predict failed\\n\");\n"
          "      return 1;\n"
          "    }\n"
          "    for (long i = 0; i < %s_BATCH * %s_OUTPUT_SIZE; i++) {\n"
          "      double want = expected[(long)c * %s_BATCH * %s_OUTPUT_SIZE + i];\n"
          "      double diff = fabs((double)out[i] - want);\n"
          "      if (!(diff <= TOLERANCE)) bad++;\n"
          "      if (diff > worst || diff != diff) worst = diff;\n"
          "    }\n"
          "  }\n"
          "  printf(\"%s_test: %%d outputs, largest difference %%g (tolerance %%g): %%s\\n\",\n"
          "         CALLS * %s_BATCH * %s_OUTPUT_SIZE, worst, TOLERANCE, bad ? \"FAILED\" : "
          "\"ok\");\n"
          "  free(block);\n",
          p, P, P, P, P, p, P, P);
  if (d->o.extern_weights) fputs("  free(weights);\n", f);
  fputs("  return bad ? 1 : 0;\n}\n", f);
  if (ferror(f)) return fail(err, errlen, "cannot write the test program");
  return true;
}
