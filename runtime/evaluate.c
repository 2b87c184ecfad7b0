/* evaluate.c: a trained model on data — `nnc eval` and `nnc predict`.
 *
 * nnc_rt_eval_main takes the compiled model, the arena offset of its output,
 * the training spec and the command line. It loads the data to evaluate (the
 * spec's test set, or --data in the form of the spec's data: an IDX folder,
 * whose test files are used, a CSV file, or FEATURES.npy,LABELS.npy) and
 * scales it as training did, loads the weights of --weights (weights only;
 * with the standardisation statistics the training run saved beside them,
 * which it applies), and then either
 *   eval:    prints the loss and accuracy exactly as `nnc run` prints its
 *            test line, and for a classifier the confusion matrix and the
 *            accuracy of each class (from the arg-max of the output), or
 *   predict: writes the model's output for every sample, in order, to a
 *            .csv (a classifier: the predicted class and the softmax
 *            probabilities; otherwise the outputs) or .npy file (f32
 *            [n, outputs], the raw outputs).
 * Like nnc_rt_main it is a driver: it prints, and returns the exit status
 * (0 done, 1 error, 2 bad command line).
 */
#include "rt_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, MAX_PATHS = 4, MAX_MATRIX_CLASSES = 20 };

static const char MEAN_NAME[] = "nnc.standardize.mean", STD_NAME[] = "nnc.standardize.std";

typedef struct evaluation {
  const nnc_rt_model *m;
  int64_t pred_off;
  const char *prog;
  int predict;
  const char *weights, *data, *out;
  int64_t threads;
  int help;
  nnc_rt_spec spec;
  nnc_rt_dataset set;
  char *paths[MAX_PATHS]; /* resolved paths, freed at the end */
  int npaths;
  nnc_rt_norm_stats stats;
  nnc_rt_pool *pool;
  char *arena;
  size_t arena_len;
  float *pred; /* [set.n, m->num_classes] */
  nnc_rt_error err;
} evaluation;

static int usage(const evaluation *E, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage(const evaluation *E, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int status = nnc_rt_vusage_error(E->prog, fmt, ap);
  va_end(ap);
  return status;
}

static int ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), t = strlen(tail);
  return n > t && strcmp(s + n - t, tail) == 0;
}

/* ---- Command line ---------------------------------------------------------- */
static const char *const flag_names[] = {"--weights", "--data",  "--threads",
                                         "--output",  "--batch", "--help"};
enum { FL_WEIGHTS, FL_DATA, FL_THREADS, FL_OUTPUT, FL_BATCH, FL_HELP, NFLAGS };

static int unknown(const evaluation *E, const char *arg) {
  const char *best = nnc_rt_closest_flag(arg, flag_names, NFLAGS);
  if (arg[0] != '-') return usage(E, "unexpected argument '%s'", arg);
  if (best) return usage(E, "unknown option '%s'; did you mean '%s'?", arg, best);
  return usage(E, "unknown option '%s'", arg);
}

static int set_flag(evaluation *E, int id, const char *v) {
  char *end;
  switch (id) {
  case FL_WEIGHTS: E->weights = v; return 0;
  case FL_DATA: E->data = v; return 0;
  case FL_OUTPUT: E->out = v; return 0;
  case FL_THREADS:
    E->threads = strtoll(v, &end, 10);
    if (*end || E->threads < 0 || E->threads > 1024)
      return usage(E, "--threads needs a whole number from 0 to 1024, got '%s'", v);
    return 0;
  case FL_BATCH: return 0; /* the driver compiled the model with it */
  default: E->help = 1; return 0;
  }
}

/* --flag VALUE, --flag=VALUE, -o FILE, --help. */
static int parse_flags(evaluation *E, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *eq = strchr(arg, '=');
    if (!strcmp(arg, "-h")) arg = "--help";
    if (!strcmp(arg, "-o")) arg = "--output";
    size_t len = eq && !strncmp(arg, "--", 2) ? (size_t)(eq - arg) : strlen(arg);
    int id = -1;
    for (int k = 0; k < NFLAGS; k++)
      if (strlen(flag_names[k]) == len && !strncmp(flag_names[k], arg, len)) id = k;
    if (id < 0) {
      char name[128];
      snprintf(name, sizeof name, "%.*s", (int)len, arg);
      return unknown(E, name);
    }
    const char *v = NULL;
    if (id != FL_HELP) {
      v = arg[len] == '=' ? arg + len + 1 : i + 1 < argc ? argv[++i] : NULL;
      if (!v || !*v) return usage(E, "%s needs a value", flag_names[id]);
    }
    if (set_flag(E, id, v)) return EXIT_USAGE;
  }
  if (E->help) return 0;
  if (!E->weights) return usage(E, "--weights CKPT is required: the checkpoint to evaluate");
  if (E->predict && !E->out) return usage(E, "-o FILE is required: where the predictions go");
  if (E->out && !ends_with(E->out, ".csv") && !ends_with(E->out, ".npy"))
    return usage(E, "-o %s: predictions are written as .csv or .npy", E->out);
  if (!E->predict && E->out) return usage(E, "-o is for 'predict'; 'eval' prints its results");
  return 0;
}

static void print_help(const evaluation *E) {
  const char *src = E->spec.source ? E->spec.source : "MODEL.nn";
  if (E->predict)
    printf("usage: %s %s --weights CKPT [--data PATH] -o FILE.csv|FILE.npy [--threads N]\n\n"
           "Writes the model's output for every sample of the test set (or of --data).\n",
           E->prog, src);
  else
    printf("usage: %s %s --weights CKPT [--data PATH] [--threads N]\n\n"
           "Evaluates the weights on the test set (or on --data): loss and accuracy, and\n"
           "for a classifier the confusion matrix and the accuracy of each class.\n",
           E->prog, src);
  printf("  --data PATH  the data in the form of the model's data: an IDX folder (its test\n"
         "               files), a CSV file, or FEATURES.npy,LABELS.npy\n");
}

/* ---- Data -------------------------------------------------------------------- */
static char *keep(evaluation *E, char *p) {
  if (E->npaths == MAX_PATHS) {
    free(p);
    nnc_rt_fail(&E->err, "too many paths");
    return NULL;
  }
  return E->paths[E->npaths++] = p;
}

static int load_idx(evaluation *E) {
  const nnc_rt_spec *s = &E->spec;
  char *dir, *x, *y;
  if (nnc_rt_find_data(s->base_dir, E->data ? E->data : s->dir, 1, E->data != NULL,
                       "IDX data folder", &dir, &E->err) ||
      !keep(E, dir))
    return -1;
  if (nnc_rt_find_idx_file(dir, "t10k-images-idx3-ubyte", &x, &E->err) || !keep(E, x) ||
      nnc_rt_find_idx_file(dir, "t10k-labels-idx1-ubyte", &y, &E->err) || !keep(E, y))
    return -1;
  return nnc_rt_load_idx(&E->set, x, y, (float)s->scale, &E->err);
}

/* The spec's test files, or --data in the form of the spec's data. */
static int load_files(evaluation *E) {
  const nnc_rt_spec *s = &E->spec;
  const nnc_rt_spec_files *f = s->test.x ? &s->test : &s->train;
  int npy = s->format == NNC_RT_DATA_NPY, from_cli = E->data != NULL;
  if (!E->data && !s->test.x)
    return nnc_rt_fail(&E->err, "%s has no test set: give the data to evaluate with --data %s",
                       s->source ? s->source : "the model",
                       npy ? "FEATURES.npy,LABELS.npy" : "FILE.csv");
  char *x, *y = NULL;
  const char *want_x = E->data ? E->data : f->x, *want_y = f->y;
  char *split = NULL;
  if (npy && E->data) {
    const char *comma = strchr(E->data, ',');
    if (!comma || comma == E->data || !comma[1])
      return nnc_rt_fail(&E->err,
                         "NumPy data is two files: give them as FEATURES.npy,LABELS.npy "
                         "(got '%s')",
                         E->data);
    split = strndup(E->data, (size_t)(comma - E->data));
    if (!split) return nnc_rt_fail(&E->err, "out of memory");
    want_x = split, want_y = comma + 1;
  } else if (!npy && E->data && strchr(E->data, ',')) {
    return nnc_rt_fail(&E->err, "--data '%s': this model's data is one CSV file", E->data);
  }
  int rc = nnc_rt_find_data(s->base_dir, want_x, 0, from_cli, "data file", &x, &E->err);
  free(npy && E->data ? split : NULL);
  if (rc || !keep(E, x)) return -1;
  if (npy &&
      (nnc_rt_find_data(s->base_dir, want_y, 0, from_cli, "data file", &y, &E->err) || !keep(E, y)))
    return -1;
  if (npy) return nnc_rt_load_npy(&E->set, x, y, E->m->label_is_class, &E->err);
  nnc_rt_csv_opts o = {.header = f->header,
                       .label_column = f->label_column,
                       .label_is_class = E->m->label_is_class,
                       .num_classes = (int32_t)E->m->num_classes};
  return nnc_rt_load_csv(&E->set, x, &o, &E->err);
}

static int load_set(evaluation *E) {
  if (E->spec.format == NNC_RT_DATA_IDX ? load_idx(E) : load_files(E)) return -1;
  if (E->spec.format != NNC_RT_DATA_IDX && E->spec.scale != 1)
    nnc_rt_dataset_scale(&E->set, (float)E->spec.scale);
  if (E->set.n == 0) return nnc_rt_fail(&E->err, "no samples to evaluate");
  return 0;
}

/* ---- Weights ------------------------------------------------------------------ */
/* The arena with the checkpoint's weights; the standardisation statistics
 * saved with them applied to the set when the spec standardises. */
static int load_weights(evaluation *E) {
  const nnc_rt_model *m = E->m;
  size_t bytes = (m->arena_bytes + 63) / 64 * 64;
  E->arena_len = bytes ? bytes : 64;
  E->arena = nnc_rt_big_alloc(E->arena_len); /* page-aligned and zeroed */
  if (!E->arena) return nnc_rt_fail(&E->err, "out of memory for the model's %zu-byte arena", bytes);
  nnc_rt_named_tensor extra[2];
  int nextra = 0;
  if (E->spec.standardize) {
    E->stats.size = E->set.sample_size;
    E->stats.mean = calloc((size_t)E->set.sample_size, sizeof(float));
    E->stats.std = calloc((size_t)E->set.sample_size, sizeof(float));
    if (!E->stats.mean || !E->stats.std) return nnc_rt_fail(&E->err, "out of memory");
    float *data[2] = {E->stats.mean, E->stats.std};
    const char *names[2] = {MEAN_NAME, STD_NAME};
    for (nextra = 0; nextra < 2; nextra++) {
      extra[nextra] =
          (nnc_rt_named_tensor){.name = names[nextra], .rank = E->set.rank, .data = data[nextra]};
      memcpy(extra[nextra].shape, E->set.shape, sizeof extra[nextra].shape);
    }
  }
  nnc_rt_ckpt_load_opts o = {.weights_only = 1, .extra = extra, .nextra = nextra};
  if (nnc_rt_checkpoint_load(E->weights, m, E->arena, &o, NULL, NULL, &E->err)) return -1;
  if (!E->spec.standardize) return 0;
  /* A saved std is never 0 (a constant feature's is 1): 0 means absent. */
  if (E->stats.std[0] == 0)
    return nnc_rt_fail(&E->err,
                       "%s has no standardisation statistics (%s, %s), which this model's data "
                       "needs: use a checkpoint that training wrote",
                       E->weights, MEAN_NAME, STD_NAME);
  return nnc_rt_norm_apply(&E->stats, &E->set, E->pool, &E->err);
}

/* ---- Results --------------------------------------------------------------------- */
static int64_t argmax(const float *row, int64_t k) {
  int64_t best = 0;
  for (int64_t j = 1; j < k; j++)
    if (row[j] > row[best]) best = j;
  return best;
}

/* Rows: the true class; columns: the predicted one. */
static int print_confusion(evaluation *E) {
  int64_t k = E->m->num_classes, n = E->set.n;
  int64_t *counts = calloc((size_t)(k * k), sizeof *counts);
  if (!counts) return nnc_rt_fail(&E->err, "out of memory");
  for (int64_t i = 0; i < n; i++)
    counts[E->set.labels[i] * k + argmax(E->pred + i * k, k)]++;
  if (k <= MAX_MATRIX_CLASSES) {
    printf("confusion matrix (rows: true class, columns: predicted class):\n     ");
    for (int64_t j = 0; j < k; j++)
      printf(" %6lld", (long long)j);
    for (int64_t i = 0; i < k; i++) {
      printf("\n%5lld", (long long)i);
      for (int64_t j = 0; j < k; j++)
        printf(" %6lld", (long long)counts[i * k + j]);
    }
    printf("\n");
  }
  printf("accuracy per class:\n");
  for (int64_t i = 0; i < k; i++) {
    int64_t total = 0;
    for (int64_t j = 0; j < k; j++)
      total += counts[i * k + j];
    if (total > 0)
      printf("  class %lld: %.4f (%lld of %lld)\n", (long long)i,
             (double)counts[i * k + i] / (double)total, (long long)counts[i * k + i],
             (long long)total);
    else
      printf("  class %lld: no samples\n", (long long)i);
  }
  free(counts);
  return 0;
}

/* A .npy (format 1.0) of f32 [n, k]. */
static void write_npy(FILE *f, const float *v, int64_t n, int64_t k) {
  char dict[128];
  int len = snprintf(dict, sizeof dict,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%lld, %lld), }",
                     (long long)n, (long long)k);
  int total = (10 + len + 1 + 63) / 64 * 64; /* magic, version, length, dict, '\n' */
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  unsigned char hlen[2] = {(unsigned char)((total - 10) & 0xff),
                           (unsigned char)((total - 10) >> 8)};
  fwrite(hlen, 1, 2, f);
  fprintf(f, "%s%*s\n", dict, total - 10 - len - 1, "");
  fwrite(v, sizeof(float), (size_t)(n * k), f); /* little-endian, as the host */
}

/* A classifier's rows: class, then the softmax probabilities; otherwise the
 * outputs as they are. */
static void write_csv(FILE *f, const float *v, int64_t n, int64_t k, int classes) {
  fputs(classes ? "class" : "", f);
  for (int64_t j = 0; j < k; j++)
    fprintf(f, "%s%s%lld", j || classes ? "," : "", classes ? "p" : "y", (long long)j);
  fputc('\n', f);
  for (int64_t i = 0; i < n; i++) {
    const float *row = v + i * k;
    if (classes) {
      double mx = row[argmax(row, k)], sum = 0;
      for (int64_t j = 0; j < k; j++)
        sum += exp((double)row[j] - mx);
      fprintf(f, "%lld", (long long)argmax(row, k));
      for (int64_t j = 0; j < k; j++)
        fprintf(f, ",%.9g", exp((double)row[j] - mx) / sum);
    } else {
      for (int64_t j = 0; j < k; j++)
        fprintf(f, "%s%.9g", j ? "," : "", (double)row[j]);
    }
    fputc('\n', f);
  }
}

static int write_predictions(evaluation *E) {
  FILE *f = fopen(E->out, "wb");
  if (!f) return nnc_rt_fail(&E->err, "%s: cannot create: %s", E->out, strerror(errno));
  int64_t n = E->set.n, k = E->m->num_classes;
  if (ends_with(E->out, ".npy"))
    write_npy(f, E->pred, n, k);
  else
    write_csv(f, E->pred, n, k, E->m->label_is_class);
  int bad = ferror(f);
  if (fclose(f) || bad)
    return nnc_rt_fail(&E->err, "%s: cannot write: %s", E->out, strerror(errno));
  fprintf(stderr, "wrote %lld predictions (%lld output%s each) to %s\n", (long long)n, (long long)k,
          k == 1 ? "" : "s", E->out);
  return 0;
}

static int run(evaluation *E) {
  const nnc_rt_model *m = E->m;
  if (load_set(E)) return -1;
  E->pool = nnc_rt_pool_create((int)E->threads, &E->err);
  if (!E->pool || load_weights(E)) return -1;
  if (m->ready && m->ready(m->ready_ctx, &E->err)) return -1;
  int keep_pred = E->predict || (m->label_is_class && E->pred_off >= 0);
  if (keep_pred) {
    E->pred = malloc((size_t)(E->set.n * m->num_classes) * sizeof(float));
    if (!E->pred)
      return nnc_rt_fail(&E->err, "out of memory for %lld predictions", (long long)E->set.n);
  }
  double loss, acc;
  nnc_rt_set_ftz_daz();
  if (nnc_rt_predict(m, E->arena, E->pool, &E->set, E->pred_off, E->pred, &loss, &acc, &E->err))
    return -1;
  if (E->predict) return write_predictions(E);
  if (!E->spec.metric_accuracy) acc = NAN;
  const char *name = E->data ? E->data : "test";
  if (isnan(acc))
    printf("%s: loss %.9g (%lld samples)\n", name, loss, (long long)E->set.n);
  else
    printf("%s: loss %.9g accuracy %.4f (%lld samples)\n", name, loss, acc, (long long)E->set.n);
  return E->pred ? print_confusion(E) : 0;
}

int nnc_rt_eval_main(const nnc_rt_model *m, int64_t pred_off, const char *spec_text,
                     const char *prog, int predict, int argc, char **argv) {
  evaluation *E = calloc(1, sizeof *E);
  if (!E) {
    fprintf(stderr, "%s: error: out of memory\n", prog);
    return EXIT_ERROR;
  }
  *E = (evaluation){.m = m, .pred_off = pred_off, .prog = prog, .predict = predict};
  int status = parse_flags(E, argc, argv);
  if (status == 0 &&
      nnc_rt_spec_parse(&E->spec, spec_text ? spec_text : "", "training spec", &E->err))
    status = EXIT_ERROR;
  else if (status == 0 && E->help)
    print_help(E);
  else if (status == 0 && run(E))
    status = EXIT_ERROR;
  fflush(stdout);
  if (status == EXIT_ERROR) fprintf(stderr, "%s: error: %s\n", prog, E->err.msg);
  nnc_rt_dataset_free(&E->set);
  nnc_rt_norm_free(&E->stats);
  if (E->pool) nnc_rt_pool_destroy(E->pool);
  nnc_rt_big_free(E->arena, E->arena_len);
  free(E->pred);
  for (int i = 0; i < E->npaths; i++)
    free(E->paths[i]);
  nnc_rt_spec_free(&E->spec);
  free(E);
  return status;
}
