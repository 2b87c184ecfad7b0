/* session.c: a whole training run, from command line and spec to results.
 *
 * nnc_rt_main is the driver of a training program: `nnc run model.nn` calls
 * it with the JIT-compiled model, and the main() of a standalone `-o train`
 * executable (train_main.c) with the model and spec text from its object
 * file, so both take the same flags and train identically. In order:
 *   flags (argv) -> spec (text) -> data paths resolved (next to the .nn
 *   file, then /usr/share/datasets, then as given) -> training set loaded
 *   (an IDX test set meanwhile on a second thread) -> thread pool, split,
 *   standardisation fitted and applied -> arena (page-aligned, zeroed),
 *   weights initialised from the seed or transfer-loaded -> test set
 *   joined, checked and standardised -> nnc_rt_train (progress on stderr)
 *   -> test-set evaluation -> results on stdout.
 * It is the one runtime file that prints: every failure becomes one
 * "prog: error: <message>" on stderr and exit status 1 (2 for a bad command
 * line); the library calls below it only return messages. Checkpoints are
 * atomic (checkpoint.c), so an error leaves no half-written one.
 */
#include "rt_internal.h"

#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char DATASETS_DIR[] = "/usr/share/datasets";
/* Names of the standardisation statistics among a checkpoint's tensors. */
static const char MEAN_NAME[] = "nnc.standardize.mean", STD_NAME[] = "nnc.standardize.std";

enum { EXIT_OK = 0, EXIT_ERROR = 1, EXIT_USAGE = 2, MAX_OWNED = 16 };

/* ---- Command line ---------------------------------------------------------- */
typedef struct flags {
  int64_t epochs, batch; /* 0: not given */
  int64_t log_every;     /* -1: not given */
  uint64_t seed;
  int has_seed;
  int threads; /* 0: all cores */
  const char *data, *test_data, *resume, *log, *checkpoint;
  int quiet, help, report;
  int no_checkpoint, no_log;
  int data_parallel;         /* --data-parallel: the data-parallel step in one process too */
  const char *compiled_flag; /* --lr or --set given to a compiled program */
  const char *precision;     /* --precision: must be the compiled one */
} flags;

enum flag_id {
  FL_EPOCHS,
  FL_BATCH,
  FL_SEED,
  FL_THREADS,
  FL_DATA,
  FL_TEST_DATA,
  FL_RESUME,
  FL_LOG,
  FL_LOG_EVERY,
  FL_CHECKPOINT,
  FL_QUIET,
  FL_REPORT,
  FL_HELP,
  FL_NO_CHECKPOINT,
  FL_NO_LOG,
  FL_LR,
  FL_SET,
  FL_DATA_PARALLEL,
  FL_PRECISION,
  NFLAGS
};
static const char *const flag_names[NFLAGS] = {
    "--epochs",    "--batch",  "--seed",          "--threads",       "--data",
    "--test-data", "--resume", "--log",           "--log-every",     "--checkpoint",
    "--quiet",     "--report", "--help",          "--no-checkpoint", "--no-log",
    "--lr",        "--set",    "--data-parallel", "--precision"};

/* ---- One run ----------------------------------------------------------------- */
/* An IDX set loading on a thread of its own (the test set, while the
 * training set loads on the main thread). */
typedef struct idx_job {
  nnc_rt_dataset *ds;
  const char *images, *labels;
  float scale;
  int rc;
  nnc_rt_error err;
} idx_job;

typedef struct session {
  const nnc_rt_model *m;
  const char *prog;
  flags f;
  nnc_rt_spec spec;
  int label_is_class;
  nnc_rt_dataset train, val, test;
  int has_val, has_test;
  /* The files each set came from (features, labels), for messages. */
  const char *train_files[2], *test_files[2];
  nnc_rt_norm_stats stats;
  nnc_rt_named_tensor extra[2];
  int nextra;
  /* The test set's loader thread, joined by finish_test_set before the
   * first step, or at the end if an error comes first. */
  idx_job test_job;
  pthread_t test_thread;
  int test_loading; /* the thread runs and is not joined yet */
  nnc_rt_pool *pool;
  char *arena;
  size_t arena_len;
  char *owned[MAX_OWNED]; /* resolved paths, freed at the end */
  int nowned;
  double t_start, t_first_step, train_s, step_s; /* step_s: time in training steps */
  int64_t trained_samples;
  nnc_rt_train_result result;
  nnc_rt_error err;
  const nnc_rt_comm *comm; /* the ranks of a data-parallel run, or &single */
  nnc_rt_comm single;
} session;

static int usage_error(const session *S, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int usage_error(const session *S, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int status = nnc_rt_vusage_error(S->prog, fmt, ap);
  va_end(ap);
  return status;
}

int nnc_rt_vusage_error(const char *prog, const char *fmt, va_list ap) {
  fprintf(stderr, "%s: error: ", prog);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see '%s --help')\n", prog);
  return EXIT_USAGE;
}

/* A whole number in [lo, hi] from a flag's value. */
static int flag_int(const session *S, const char *flag, const char *v, int64_t lo, int64_t hi,
                    int64_t *out) {
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (!*v || *end || errno || x < lo || x > hi)
    return usage_error(S, "%s needs a whole number from %lld to %lld, got '%s'", flag,
                       (long long)lo, (long long)hi, v);
  *out = x;
  return 0;
}

static int flag_u64(const session *S, const char *flag, const char *v, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (!*v || *end || errno || *v == '-' || *v == '+')
    return usage_error(S, "%s needs a whole number from 0 to 18446744073709551615, got '%s'", flag,
                       v);
  *out = x;
  return 0;
}

static int find_flag(const char *arg, size_t len) {
  for (int i = 0; i < NFLAGS; i++)
    if (strlen(flag_names[i]) == len && strncmp(flag_names[i], arg, len) == 0) return i;
  return -1;
}

static int unknown_flag(const session *S, const char *arg) {
  const char *best = nnc_rt_closest_flag(arg, flag_names, NFLAGS);
  if (arg[0] != '-') return usage_error(S, "unexpected argument '%s'", arg);
  if (best) return usage_error(S, "unknown option '%s'; did you mean '%s'?", arg, best);
  return usage_error(S, "unknown option '%s'", arg);
}

/* One option with its value v (NULL for switches). */
static int set_flag(session *S, int id, const char *v) {
  flags *f = &S->f;
  const char *name = flag_names[id];
  int64_t n = 0;
  switch ((enum flag_id)id) {
  case FL_EPOCHS: return flag_int(S, name, v, 1, 1000000000, &f->epochs);
  case FL_BATCH: return flag_int(S, name, v, 1, 1000000000, &f->batch);
  case FL_SEED: f->has_seed = 1; return flag_u64(S, name, v, &f->seed);
  case FL_THREADS:
    if (flag_int(S, name, v, 0, 1024, &n)) return EXIT_USAGE;
    f->threads = (int)n;
    return 0;
  case FL_DATA: f->data = v; return 0;
  case FL_TEST_DATA: f->test_data = v; return 0;
  case FL_RESUME: f->resume = v; return 0;
  case FL_LOG: f->log = v; return 0;
  case FL_LOG_EVERY: return flag_int(S, name, v, 0, 1000000000000, &f->log_every);
  case FL_CHECKPOINT: f->checkpoint = v; return 0;
  case FL_QUIET: f->quiet = 1; return 0;
  case FL_REPORT: f->report = 1; return 0;
  case FL_HELP: f->help = 1; return 0;
  case FL_NO_CHECKPOINT: f->no_checkpoint = 1; return 0;
  case FL_NO_LOG: f->no_log = 1; return 0;
  case FL_LR:
  case FL_SET: f->compiled_flag = name; return 0;
  case FL_DATA_PARALLEL: f->data_parallel = 1; return 0;
  case FL_PRECISION:
    if (strcmp(v, "f32") && strcmp(v, "bf16"))
      return usage_error(S, "--precision needs f32 or bf16, got '%s'", v);
    f->precision = v;
    return 0;
  case NFLAGS: break;
  }
  return 0;
}

/* --flag VALUE, --flag=VALUE, --switch. */
static int parse_flags(session *S, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *eq = strchr(arg, '=');
    if (strcmp(arg, "-h") == 0) arg = "--help";
    size_t len = eq && strncmp(arg, "--", 2) == 0 ? (size_t)(eq - arg) : strlen(arg);
    int id = find_flag(arg, len);
    if (id < 0) {
      char name[128];
      snprintf(name, sizeof name, "%.*s", (int)len, arg);
      return unknown_flag(S, name);
    }
    int is_switch = id == FL_QUIET || id == FL_REPORT || id == FL_HELP || id == FL_NO_CHECKPOINT ||
                    id == FL_NO_LOG || id == FL_DATA_PARALLEL;
    const char *v = NULL;
    if (is_switch && arg[len] == '=') return usage_error(S, "%s takes no value", flag_names[id]);
    if (!is_switch) {
      if (arg[len] == '=')
        v = arg + len + 1;
      else if (i + 1 < argc)
        v = argv[++i];
      else
        return usage_error(S, "%s needs a value", flag_names[id]);
      if (!*v) return usage_error(S, "%s needs a value", flag_names[id]);
    }
    if (set_flag(S, id, v)) return EXIT_USAGE;
  }
  return 0;
}

static void print_help(const session *S, int have_spec) {
  const nnc_rt_spec *s = &S->spec;
  const char *src = have_spec && s->source ? s->source : "the .nn file";
  printf("usage: %s [options]\n\n", S->prog);
  if (have_spec)
    printf("Trains %s (compiled from %s, batch %lld) and evaluates it on the test set.\n\n",
           s->model ? s->model : "the model", src, (long long)S->m->batch);
  printf("options (defaults from %s):\n", src);
  printf("  --epochs N         total number of epochs (default %lld)\n",
         have_spec ? (long long)s->epochs : 1LL);
  printf("  --batch N          must equal the compiled batch size (%lld); recompile to change it\n",
         (long long)S->m->batch);
  printf("  --seed N           seed of initialisation, split, shuffling, augmentation, dropout"
         " (default %llu)\n",
         have_spec ? (unsigned long long)s->seed : 0ULL);
  printf("  --threads N        worker threads; 0 = all cores (default 0)\n");
  printf("  --precision P      must equal the compiled precision (%s); recompile to change it\n",
         have_spec && S->spec.precision ? "bf16" : "f32");
  /* Only the form this program's data takes. */
  static const char *const data_forms[] = {"the IDX folder", "a CSV file", "X.npy,Y.npy"};
  int format = have_spec && s->format >= NNC_RT_DATA_IDX && s->format <= NNC_RT_DATA_NPY
                   ? s->format - NNC_RT_DATA_IDX
                   : -1;
  if (format < 0)
    printf("  --data PATH        training data: the IDX folder, a CSV file, or X.npy,Y.npy\n");
  else
    printf("  --data PATH        training data: %s\n", data_forms[format]);
  if (format != 0)
    printf("  --test-data PATH   test data: %s\n",
           format < 0 ? "a CSV file or X.npy,Y.npy" : data_forms[format]);
  printf("  --resume CKPT      continue the run saved in this checkpoint\n");
  printf("  --checkpoint FILE  write checkpoints (safetensors) to FILE\n");
  printf(
      "  --log FILE         metrics log, .csv or .jsonl; an SVG of the curves goes next to it\n");
  printf("  --log-every N      also a row every N optimizer steps in the log; 0: epoch rows only"
         " (default %lld)\n",
         have_spec ? (long long)s->log_every_steps : 0LL);
  printf("  --no-checkpoint    write no checkpoints, whatever the .nn file says\n");
  printf("  --no-log           write no metrics log, whatever the .nn file says\n");
  printf("  --quiet            no progress output\n");
  printf("  --report           also print a machine-readable RESULT line\n");
  if (S->m->micro_batches > 0)
    printf(
        "  --data-parallel    train as mpirun -np N does (%lld micro-batches of %lld, summed in a\n"
        "                     fixed order): the same bits as N processes for N dividing %lld\n",
        (long long)S->m->micro_batches, (long long)(S->m->batch / S->m->micro_batches),
        (long long)S->m->micro_batches);
  printf("  --help             this text\n");
  printf("\nResults go to stdout, progress and errors to stderr. Exit status: 0 done, 1 error,\n"
         "2 bad command line.\n");
}

/* ---- Paths ------------------------------------------------------------------- */
static char *own(session *S, char *p) {
  if (!p) return NULL;
  if (S->nowned == MAX_OWNED) {
    free(p);
    return NULL;
  }
  return S->owned[S->nowned++] = p;
}

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static int is_kind(const char *path, int want_dir) {
  struct stat st;
  if (stat(path, &st)) return 0;
  return want_dir ? S_ISDIR(st.st_mode) : !S_ISDIR(st.st_mode);
}

/* Finds a data file or folder. Paths from the spec are tried next to the
 * .nn file (base_dir), in /usr/share/datasets, then as given; paths from
 * the command line as given, then in /usr/share/datasets. *out is
 * malloc'd. */
int nnc_rt_find_data(const char *base_dir, const char *path, int want_dir, int from_cli,
                     const char *what, char **out, nnc_rt_error *err) {
  char *cands[3] = {0};
  int n = 0;
  if (path[0] == '/') {
    cands[n++] = strdup(path);
  } else {
    if (!from_cli && base_dir && *base_dir) cands[n++] = join(base_dir, path);
    if (from_cli) cands[n++] = strdup(path);
    cands[n++] = join(DATASETS_DIR, path);
    if (!from_cli) cands[n++] = strdup(path);
  }
  int found = -1;
  for (int i = 0; i < n; i++) {
    if (!cands[i]) {
      found = -2;
      break;
    }
    if (found < 0 && is_kind(cands[i], want_dir)) found = i;
  }
  if (found >= 0) {
    *out = cands[found];
    cands[found] = NULL;
  } else if (found == -1) {
    char tried[1536] = "";
    for (int i = 0; i < n; i++)
      snprintf(tried + strlen(tried), sizeof tried - strlen(tried), "%s%s", i ? ", " : "",
               cands[i]);
    nnc_rt_fail(err, "%s '%s' not found; looked in: %s", what, path, tried);
  }
  for (int i = 0; i < n; i++)
    free(cands[i]);
  if (found == -2) return nnc_rt_fail(err, "out of memory");
  return found >= 0 ? 0 : -1;
}

/* nnc_rt_find_data with the result owned by the session. */
static int resolve(session *S, const char *path, int want_dir, int from_cli, const char *what,
                   const char **out) {
  char *p;
  if (nnc_rt_find_data(S->spec.base_dir, path, want_dir, from_cli, what, &p, &S->err)) return -1;
  *out = own(S, p);
  return *out ? 0 : nnc_rt_fail(&S->err, "too many paths");
}

/* An IDX file of the folder, raw or gzipped; *out is malloc'd. */
int nnc_rt_find_idx_file(const char *dir, const char *name, char **out, nnc_rt_error *err) {
  char gz[128];
  snprintf(gz, sizeof gz, "%s.gz", name);
  const char *names[2] = {name, gz};
  for (int i = 0; i < 2; i++) {
    char *p = join(dir, names[i]);
    if (!p) return nnc_rt_fail(err, "out of memory");
    if (is_kind(p, 0)) {
      *out = p;
      return 0;
    }
    free(p);
  }
  return nnc_rt_fail(err, "%s/%s (or %s.gz): not found", dir, name, name);
}

static int idx_file(session *S, const char *dir, const char *name, const char **out) {
  char *p;
  if (nnc_rt_find_idx_file(dir, name, &p, &S->err)) return -1;
  *out = own(S, p);
  return *out ? 0 : nnc_rt_fail(&S->err, "too many paths");
}

/* ---- Data -------------------------------------------------------------------- */
static void *idx_job_run(void *arg) {
  idx_job *j = arg;
  j->rc = nnc_rt_load_idx(j->ds, j->images, j->labels, j->scale, &j->err);
  return NULL;
}

static int load_idx(session *S) {
  const char *dir, *xi, *yi, *xt, *yt;
  const char *want = S->f.data ? S->f.data : S->spec.dir;
  if (S->f.test_data)
    return nnc_rt_fail(&S->err, "--test-data does not apply to IDX data: the test files come "
                                "from the --data folder");
  if (resolve(S, want, 1, S->f.data != NULL, "IDX data folder", &dir)) return -1;
  if (idx_file(S, dir, "train-images-idx3-ubyte", &xi) ||
      idx_file(S, dir, "train-labels-idx1-ubyte", &yi) ||
      idx_file(S, dir, "t10k-images-idx3-ubyte", &xt) ||
      idx_file(S, dir, "t10k-labels-idx1-ubyte", &yt))
    return -1;
  /* The test set loads on a second thread while the training set loads
   * here, and goes on loading while the statistics are fitted and the
   * model is set up (finish_test_set): decompressing the data is most of
   * the time from start to the first step. */
  S->train_files[0] = xi, S->train_files[1] = yi;
  S->test_files[0] = xt, S->test_files[1] = yt;
  S->test_job = (idx_job){&S->test, xt, yt, (float)S->spec.scale, -1, {{0}}};
  S->test_loading = pthread_create(&S->test_thread, NULL, idx_job_run, &S->test_job) == 0;
  if (!S->test_loading) idx_job_run(&S->test_job);
  return nnc_rt_load_idx(&S->train, xi, yi, (float)S->spec.scale, &S->err);
}

/* One CSV or NPY split: the spec's files, or the command line's `path`
 * (a CSV file, or "X.npy,Y.npy"). */
static int load_files(session *S, const nnc_rt_spec_files *files, const char *cli,
                      nnc_rt_dataset *ds, const char *what, const char **paths) {
  const nnc_rt_spec *s = &S->spec;
  const char *x, *y = NULL;
  if (s->format == NNC_RT_DATA_NPY && cli) {
    const char *comma = strchr(cli, ',');
    if (!comma || !comma[1] || comma == cli)
      return nnc_rt_fail(&S->err,
                         "NumPy %s data is two files: give them as FEATURES.npy,LABELS.npy "
                         "(got '%s')",
                         what, cli);
    char *xs = own(S, strndup(cli, (size_t)(comma - cli)));
    if (!xs) return nnc_rt_fail(&S->err, "out of memory");
    if (resolve(S, xs, 0, 1, "data file", &x) || resolve(S, comma + 1, 0, 1, "data file", &y))
      return -1;
  } else {
    const char *want = cli ? cli : files->x;
    if (cli && strchr(cli, ','))
      return nnc_rt_fail(&S->err,
                         "--data '%s': this model's data is one CSV file (FEATURES.npy,LABELS.npy "
                         "is the form for npy data)",
                         cli);
    if (resolve(S, want, 0, cli != NULL, "data file", &x)) return -1;
    if (s->format == NNC_RT_DATA_NPY && resolve(S, files->y, 0, 0, "data file", &y)) return -1;
  }
  paths[0] = x, paths[1] = y ? y : x;
  if (s->format == NNC_RT_DATA_CSV) {
    nnc_rt_csv_opts o = {.header = files->header,
                         .label_column = files->label_column,
                         .label_is_class = S->label_is_class,
                         .num_classes = (int32_t)S->m->num_classes};
    if (nnc_rt_load_csv(ds, x, &o, &S->err)) return -1;
  } else if (nnc_rt_load_npy(ds, x, y, S->label_is_class, &S->err)) {
    return -1;
  }
  if (s->scale != 1) nnc_rt_dataset_scale(ds, (float)s->scale);
  return 0;
}

static int load_data(session *S) {
  const nnc_rt_spec *s = &S->spec;
  S->label_is_class = s->label_is_class >= 0 ? s->label_is_class : S->m->label_is_class;
  if (S->label_is_class != S->m->label_is_class)
    return nnc_rt_fail(&S->err,
                       "%s: the data has %s, but the model was compiled for %s (recompile)",
                       s->origin, S->label_is_class ? "class labels" : "float targets",
                       S->m->label_is_class ? "class labels" : "float targets");
  if (s->format == NNC_RT_DATA_IDX) return load_idx(S);
  if (load_files(S, &s->train, S->f.data, &S->train, "training", S->train_files)) return -1;
  if (!s->test.x && !S->f.test_data) return 0;
  S->has_test = 1;
  return load_files(S, &s->test, S->f.test_data, &S->test, "test", S->test_files);
}

/* A loaded set against the model, before anything trains (a bad test set
 * used to show only after training), naming the file and the sample: IDX
 * labels also by byte (one byte each after an 8-byte header). CSV labels
 * were checked by row as they loaded. */
static int check_set(session *S, const nnc_rt_dataset *ds, const char *const files[2]) {
  const nnc_rt_model *m = S->m;
  if (ds->sample_size != m->sample_size)
    return nnc_rt_fail(&S->err, "%s: %lld features per sample, but the model expects %lld",
                       files[0], (long long)ds->sample_size, (long long)m->sample_size);
  if (!m->label_is_class) {
    if (ds->target_size != m->target_size)
      return nnc_rt_fail(&S->err, "%s: %lld targets per sample, but the model expects %lld",
                         files[1], (long long)ds->target_size, (long long)m->target_size);
    return 0;
  }
  int is_idx = S->spec.format == NNC_RT_DATA_IDX;
  for (int64_t i = 0; i < ds->n; i++)
    if (ds->labels[i] >= m->num_classes) {
      char where[48] = "";
      if (is_idx) snprintf(where, sizeof where, "byte %lld: ", (long long)(8 + i));
      return nnc_rt_fail(&S->err,
                         "%s: %ssample %lld has label %d, outside 0..%lld (the model has %lld "
                         "classes)",
                         files[1], where, (long long)i, ds->labels[i],
                         (long long)m->num_classes - 1, (long long)m->num_classes);
    }
  return 0;
}

/* The test set once its loader has finished (IDX; the others load at
 * once): checked against the model and standardised like the training
 * set. */
static int finish_test_set(session *S) {
  if (S->spec.format == NNC_RT_DATA_IDX) {
    if (S->test_loading) pthread_join(S->test_thread, NULL);
    S->test_loading = 0;
    if (S->test_job.rc) return S->err = S->test_job.err, -1;
    S->has_test = 1;
  }
  if (!S->has_test) return 0;
  if (check_set(S, &S->test, S->test_files)) return -1;
  return S->spec.standardize ? nnc_rt_norm_apply(&S->stats, &S->test, S->pool, &S->err) : 0;
}

/* Validation split, then standardisation fitted on what is left to train
 * and applied to both parts. */
static int prepare_data(session *S) {
  const nnc_rt_spec *s = &S->spec;
  if (s->val_fraction > 0) {
    if (nnc_rt_dataset_split(&S->train, &S->val, s->val_fraction, s->seed, &S->err)) return -1;
    S->has_val = 1;
  }
  if (!s->standardize) return 0;
  if (nnc_rt_norm_fit(&S->stats, &S->train, S->pool, &S->err)) return -1;
  /* The test set follows in finish_test_set. */
  nnc_rt_dataset *sets[2] = {&S->train, S->has_val ? &S->val : NULL};
  for (int i = 0; i < 2; i++)
    if (sets[i] && nnc_rt_norm_apply(&S->stats, sets[i], S->pool, &S->err)) return -1;
  float *data[2] = {S->stats.mean, S->stats.std};
  const char *names[2] = {MEAN_NAME, STD_NAME};
  for (int i = 0; i < 2; i++) {
    nnc_rt_named_tensor *t = &S->extra[i];
    *t = (nnc_rt_named_tensor){.name = names[i], .rank = S->train.rank, .data = data[i]};
    memcpy(t->shape, S->train.shape, sizeof t->shape);
  }
  S->nextra = 2;
  return 0;
}

/* ---- Model state ------------------------------------------------------------- */
static int make_arena(session *S) {
  size_t bytes = (S->m->arena_bytes + 63) / 64 * 64;
  if (bytes == 0) bytes = 64;
  S->arena = nnc_rt_big_alloc(bytes); /* page-aligned and zeroed */
  if (!S->arena) return nnc_rt_fail(&S->err, "out of memory for the model's %zu-byte arena", bytes);
  S->arena_len = bytes;
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, S->spec.seed);
  nnc_rt_init_tensors(S->m, S->arena, &rng);
  return 0;
}

/* How many model tensors a weights-only load with these globs selects. */
static int count_selected(const nnc_rt_model *m, const nnc_rt_spec *s) {
  int n = 0;
  for (int i = 0; i < m->ntensors; i++) {
    const nnc_rt_tensor *t = &m->tensors[i];
    int match = s->nload_only == 0;
    for (int k = 0; k < s->nload_only && !match; k++)
      match = fnmatch(s->load_only[k], t->name, 0) == 0;
    n += match && t->role != NNC_RT_OPT_STATE && t->role != NNC_RT_GRAD;
  }
  return n;
}

/* Transfer learning: named weights from a checkpoint, before training. */
static int transfer_load(session *S) {
  const nnc_rt_spec *s = &S->spec;
  const char *path;
  if (resolve(S, s->load_path, 0, 0, "checkpoint", &path)) return -1;
  /* A full load (no globs) must account for every tensor in the file; the
   * standardisation statistics of the run that wrote it are read into
   * scratch and dropped (this run fits its own). */
  float *scratch = calloc(2 * (size_t)S->train.sample_size + 1, sizeof *scratch);
  if (!scratch) return nnc_rt_fail(&S->err, "out of memory");
  nnc_rt_named_tensor absorb[2];
  for (int i = 0; i < 2; i++) {
    absorb[i] = (nnc_rt_named_tensor){.name = i ? STD_NAME : MEAN_NAME,
                                      .rank = S->train.rank,
                                      .data = scratch + i * S->train.sample_size};
    memcpy(absorb[i].shape, S->train.shape, sizeof absorb[i].shape);
  }
  nnc_rt_ckpt_load_opts o = {.weights_only = 1,
                             .only = (const char *const *)s->load_only,
                             .nonly = s->nload_only,
                             .strip_prefix = s->load_strip_prefix,
                             .add_prefix = s->load_add_prefix,
                             .extra = s->nload_only ? NULL : absorb,
                             .nextra = s->nload_only ? 0 : 2};
  int rc = nnc_rt_checkpoint_load(path, S->m, S->arena, &o, NULL, NULL, &S->err);
  free(scratch);
  if (rc) return -1;
  if (!S->f.quiet) {
    int n = count_selected(S->m, s);
    fprintf(stderr, "loaded %d tensor%s from %s\n", n, n == 1 ? "" : "s", path);
  }
  return 0;
}

/* ---- Training ------------------------------------------------------------------ */
static void on_epoch(void *user, const nnc_rt_epoch_stats *st) {
  session *S = user;
  int64_t samples = S->train.n / S->m->batch * S->m->batch;
  S->trained_samples += samples;
  if (st->samples_per_s > 0) S->step_s += (double)samples / st->samples_per_s;
}

static const nnc_rt_dataset *validation_set(session *S) {
  switch (S->spec.validate) {
  case NNC_RT_VALIDATE_NONE: return NULL;
  case NNC_RT_VALIDATE_TEST: return S->has_test ? &S->test : NULL;
  case NNC_RT_VALIDATE_SPLIT: return S->has_val ? &S->val : NULL;
  default: return S->has_val ? &S->val : S->has_test ? &S->test : NULL;
  }
}

static void print_plan(const session *S, const nnc_rt_dataset *val) {
  if (S->f.quiet) return;
  fprintf(stderr, "training %s: %lld samples", S->spec.model ? S->spec.model : "model",
          (long long)S->train.n);
  if (S->has_val) fprintf(stderr, ", %lld for validation", (long long)S->val.n);
  if (S->has_test) fprintf(stderr, ", %lld for test", (long long)S->test.n);
  int threads = nnc_rt_pool_threads(S->pool);
  fprintf(stderr, "; batch %lld, %lld epoch%s, %d thread%s, seed %llu%s\n", (long long)S->m->batch,
          (long long)S->spec.epochs, S->spec.epochs == 1 ? "" : "s", threads,
          threads == 1 ? "" : "s", (unsigned long long)S->spec.seed,
          val == &S->test ? "; validating on the test set" : "");
  /* one process of synchronised batch norm runs the ordinary step */
  int sync_alone = S->m->sync_stats && S->comm->size == 1;
  if ((S->f.data_parallel || S->comm != &S->single) && S->m->micro_batches > 0 && S->m->grad_step &&
      !sync_alone) {
    int64_t g = S->m->micro_batches, floats = 0;
    for (int i = 0; i < S->m->ntensors; i++)
      if (S->m->tensors[i].role == NNC_RT_GRAD && !S->m->tensors[i].synced)
        floats += nnc_rt_numel(S->m->tensors[i].rank, S->m->tensors[i].shape);
    fprintf(stderr,
            "data-parallel: %d process%s (%s), each batch %lld micro-batches of %lld%s; %lld "
            "gradient bytes per process and step\n",
            S->comm->size, S->comm->size == 1 ? "" : "es", S->comm->engine, (long long)g,
            (long long)(S->m->batch / g), S->m->sync_stats ? ", batch norm synchronised" : "",
            (long long)(floats * 4));
  }
}

/* An output file (checkpoint, log) must be writable before training
 * starts, not only when the first epoch ends: its folder must exist and
 * take writes, and the path must not be a folder. */
static int check_output(session *S, const char *path, const char *what) {
  if (!path) return 0;
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    return nnc_rt_fail(&S->err, "%s %s: is a folder, not a file", what, path);
  const char *slash = strrchr(path, '/');
  char dir[4096];
  snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) + (slash == path) : 1,
           slash ? path : ".");
  if (access(dir, W_OK))
    return nnc_rt_fail(&S->err, "%s %s: cannot write into folder '%s': %s", what, path, dir,
                       strerror(errno));
  return 0;
}

static int train(session *S) {
  const nnc_rt_spec *s = &S->spec;
  const nnc_rt_dataset *val = validation_set(S);
  int rc = 0;
  if (s->validate == NNC_RT_VALIDATE_TEST && !val)
    rc = nnc_rt_fail(&S->err, "%s: 'validate = test', but the data has no test set", s->origin);
  if (rc == 0 &&
      (check_output(S, s->checkpoint_path, "checkpoint") || check_output(S, s->log_path, "log")))
    rc = -1;
  if (nnc_rt_comm_agree(S->comm, rc != 0, &S->err)) return -1;
  print_plan(S, val);
  nnc_rt_train_opts o = {.data_parallel = S->f.data_parallel || S->comm != &S->single,
                         .comm = S->comm,
                         .epochs = s->epochs,
                         .seed = s->seed,
                         .shuffle = s->shuffle,
                         .progress = S->f.quiet ? NULL : stderr,
                         .interactive = isatty(STDERR_FILENO),
                         .augment = s->augment,
                         .naugment = s->naugment,
                         .watch_metric = s->early_stop_metric,
                         .early_stop = s->early_stop,
                         .patience = s->patience,
                         .min_delta = s->min_delta,
                         .log_path = s->log_path,
                         .log_every_steps = s->log_every_steps,
                         .checkpoint_path = s->checkpoint_path,
                         .checkpoint_every = s->checkpoint_every,
                         .keep_best = s->keep_best,
                         .model_hash = s->model_hash,
                         .extra = S->nextra ? S->extra : NULL,
                         .nextra = S->nextra,
                         .resume_path = s->resume_path,
                         .result = &S->result,
                         .restore_best = s->restore_best,
                         .val_name = val == &S->test ? "test" : "validation"};
  /* The first step follows at once: nnc_rt_train only shuffles (and, when
   * resuming, loads the checkpoint) before it. */
  double t0 = nnc_rt_now();
  S->t_first_step = t0 - S->t_start;
  rc = nnc_rt_train(S->m, S->arena, S->pool, &S->train, val, &o, on_epoch, S, &S->err);
  S->train_s = nnc_rt_now() - t0;
  return rc;
}

static int report(session *S) {
  const nnc_rt_spec *s = &S->spec;
  double loss = NAN, acc = NAN;
  if (S->has_test) {
    if (nnc_rt_evaluate_split(S->m, S->arena, S->pool, &S->test, S->comm, &loss, &acc, &S->err))
      return -1;
  }
  if (S->comm->rank != 0) return 0; /* rank 0 prints */
  if (S->has_test) {
    if (!s->metric_accuracy) acc = NAN;
    if (isnan(acc))
      printf("test: loss %.9g (%lld samples)\n", loss, (long long)S->test.n);
    else
      printf("test: loss %.9g accuracy %.4f (%lld samples)\n", loss, acc, (long long)S->test.n);
  }
  if (S->result.stopped_early && !S->f.quiet)
    fprintf(stderr, "early stopping after epoch %lld: best epoch %lld\n",
            (long long)S->result.last_epoch, (long long)S->result.best_epoch);
  if (S->result.restored_epoch && !S->f.quiet)
    fprintf(stderr, "restored the weights of epoch %lld (restore_best)\n",
            (long long)S->result.restored_epoch);
  double sps = nnc_rt_samples_per_s(S->trained_samples, S->step_s);
  printf("trained %lld epoch%s in %.1f s: %.0f samples/s\n", (long long)S->result.epochs_run,
         S->result.epochs_run == 1 ? "" : "s", S->train_s, sps);
  if (S->f.report)
    printf("RESULT framework=nnc samples_per_s=%.1f test_acc=%.4f test_loss=%.9g train_s=%.3f "
           "start_to_first_step_s=%.3f model=%s epochs=%lld batch=%lld threads=%d\n",
           sps, acc, loss, S->train_s, S->t_first_step, s->model ? s->model : "model",
           (long long)S->result.epochs_run, (long long)S->m->batch, nnc_rt_pool_threads(S->pool));
  fflush(stdout);
  return 0;
}

/* ---- The program ----------------------------------------------------------------- */
/* Command-line values replace the spec's. */
static int apply_flags(session *S) {
  nnc_rt_spec *s = &S->spec;
  const flags *f = &S->f;
  if (f->batch && f->batch != S->m->batch)
    return usage_error(S,
                       "--batch %lld: this program was compiled for batch %lld and the batch "
                       "size is part of the compiled code; recompile with --batch %lld "
                       "(nnc %s --batch %lld -o %s)",
                       (long long)f->batch, (long long)S->m->batch, (long long)f->batch,
                       s->source ? s->source : "MODEL.nn", (long long)f->batch, S->prog);
  if (f->compiled_flag)
    return usage_error(S,
                       "%s changes what is compiled into this program; recompile with it (nnc %s "
                       "%s ... -o %s)",
                       f->compiled_flag, s->source ? s->source : "MODEL.nn", f->compiled_flag,
                       S->prog);
  const char *compiled = s->precision ? "bf16" : "f32";
  if (f->precision && strcmp(f->precision, compiled))
    return usage_error(S,
                       "--precision %s: this program was compiled with precision = %s, which is "
                       "part of the compiled code; recompile with it (nnc %s --precision %s -o %s)",
                       f->precision, compiled, s->source ? s->source : "MODEL.nn", f->precision,
                       S->prog);
  if (s->precision && nnc_rt_cpu_check_bf16(&S->err)) return EXIT_ERROR;
  char **strs[3] = {&s->resume_path, &s->log_path, &s->checkpoint_path};
  const char *vals[3] = {f->resume, f->log, f->checkpoint};
  for (int i = 0; i < 3; i++) {
    if (!vals[i]) continue;
    free(*strs[i]);
    *strs[i] = strdup(vals[i]);
    if (!*strs[i]) return nnc_rt_fail(&S->err, "out of memory"), EXIT_ERROR;
  }
  if (f->epochs) s->epochs = f->epochs;
  if (f->has_seed) s->seed = f->seed;
  if (f->log_every >= 0) s->log_every_steps = f->log_every;
  if (f->no_log) free(s->log_path), s->log_path = NULL;
  if (f->no_checkpoint || S->comm->rank != 0) { /* keep_best's file needs the path */
    free(s->checkpoint_path), s->checkpoint_path = NULL;
    s->keep_best = 0;
  }
  if (S->comm->rank != 0) { /* rank 0 alone writes and prints */
    free(s->log_path), s->log_path = NULL;
    S->f.quiet = 1, S->f.report = 0;
  }
  return 0;
}

/* Everything before training; on every rank of a data-parallel run. */
static int prepare(session *S) {
  const nnc_rt_spec *s = &S->spec;
  if (load_data(S) || check_set(S, &S->train, S->train_files)) return -1;
  S->pool = nnc_rt_pool_create(S->f.threads, &S->err);
  if (!S->pool || prepare_data(S) || make_arena(S)) return -1;
  if (s->load_path && !s->resume_path && transfer_load(S)) return -1;
  /* nnc run: the machine code was generated while the data loaded. */
  if (S->m->ready && S->m->ready(S->m->ready_ctx, &S->err)) return -1;
  return finish_test_set(S);
}

static int run_steps(session *S) {
  /* A rank that cannot start stops every rank, with its message. */
  if (nnc_rt_comm_agree(S->comm, prepare(S) != 0, &S->err)) return -1;
  if (train(S)) return -1;
  return report(S);
}

static void end_session(session *S) {
  if (S->test_loading) pthread_join(S->test_thread, NULL);
  nnc_rt_dataset_free(&S->train);
  nnc_rt_dataset_free(&S->val);
  nnc_rt_dataset_free(&S->test);
  nnc_rt_norm_free(&S->stats);
  if (S->pool) nnc_rt_pool_destroy(S->pool);
  nnc_rt_big_free(S->arena, S->arena_len);
  for (int i = 0; i < S->nowned; i++)
    free(S->owned[i]);
  nnc_rt_spec_free(&S->spec);
}

int nnc_rt_first_batch(const nnc_rt_model *m, const char *spec_text, char *arena,
                       nnc_rt_error *err) {
  session *S = calloc(1, sizeof *S);
  if (!S) return nnc_rt_fail(err, "out of memory");
  S->m = m;
  S->prog = "gradcheck";
  S->f.log_every = -1;
  int rc = nnc_rt_spec_parse(&S->spec, spec_text, "training spec", &S->err);
  if (!rc) rc = load_data(S);
  if (!rc && !(S->pool = nnc_rt_pool_create(1, &S->err))) rc = -1;
  if (!rc) rc = prepare_data(S);
  if (!rc && S->train.n < m->batch)
    rc = nnc_rt_fail(&S->err, "the training data has %lld samples, fewer than a batch (%lld)",
                     (long long)S->train.n, (long long)m->batch);
  for (int64_t i = 0; !rc && i < m->batch; i++)
    nnc_rt_put_sample(m, arena, &S->train, i, i);
  if (rc) *err = S->err;
  end_session(S);
  free(S);
  return rc;
}

int nnc_rt_main(const nnc_rt_model *m, const char *spec_text, const char *prog, int argc,
                char **argv, double t_start) {
  return nnc_rt_main_comm(m, spec_text, prog, argc, argv, t_start, NULL);
}

int nnc_rt_main_comm(const nnc_rt_model *m, const char *spec_text, const char *prog, int argc,
                     char **argv, double t_start, const nnc_rt_comm *comm) {
  session *S = calloc(1, sizeof *S);
  if (!S) {
    fprintf(stderr, "%s: error: out of memory\n", prog);
    return EXIT_ERROR;
  }
  S->m = m;
  S->prog = prog ? prog : "train";
  S->t_start = t_start < 0 ? nnc_rt_now() : t_start;
  S->f.log_every = -1;
  nnc_rt_comm_single(&S->single);
  S->comm = comm ? comm : &S->single;
  int status = parse_flags(S, argc, argv);
  int have_spec =
      nnc_rt_spec_parse(&S->spec, spec_text ? spec_text : "", "training spec", &S->err) == 0;
  int launched = nnc_rt_comm_launched_size();
  if (status == 0 && !comm && launched > 1 && !S->f.help) {
    status = EXIT_ERROR;
    nnc_rt_fail(&S->err,
                "started as one of %d processes (by mpirun or another launcher), but this "
                "program was built without MPI, so it cannot train data-parallel; build nnc "
                "where MPI is installed (libopenmpi-dev, docs/distributed.md) or run one process",
                launched);
  } else if (status == 0 && S->f.help) {
    print_help(S, have_spec);
  } else if (status == 0 && !have_spec) {
    status = EXIT_ERROR;
  } else if (status == 0) {
    status = apply_flags(S);
    if (status == 0 && run_steps(S)) status = EXIT_ERROR;
  }
  /* Errors of a data-parallel run are agreed: every rank has the message,
   * rank 0 prints it. */
  if (status == EXIT_ERROR && S->comm->rank == 0) {
    fflush(stdout);
    fprintf(stderr, "%s: error: %s\n", S->prog, S->err.msg);
  }
  end_session(S);
  free(S);
  return status;
}
