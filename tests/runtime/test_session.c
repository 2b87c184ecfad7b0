/* test_session.c: nnc_rt_main (session.c) end to end, in process, on the
 * hand-written linear model of rt_testutil.c and CSV / NPY files generated
 * into a temporary folder. stdout and stderr are redirected into files
 * around each call (dup2), so the tests check what a user would see:
 *   - a run trains, prints `test: ...` and `trained E epochs ...`;
 *     --report adds the RESULT line;
 *   - flags override the spec: --epochs, --seed (same seed, same numbers;
 *     another seed, others), --threads 1 and 2 give identical losses,
 *     --log writes the log and its SVG, --data replaces the data file,
 *     --resume continues exactly where an uninterrupted run would be;
 *   - NPY data, a validation split with standardisation (its statistics go
 *     into the checkpoint), transfer learning (load.path, load.only);
 *   - errors: bad flags exit 2 with the message (did-you-mean, a compiled
 *     batch mismatch), a missing data file exits 1 listing the places
 *     tried, a bad spec and a NaN loss exit 1; --help exits 0. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rt_testutil.h"

static const char *dir;
static tu_lin lin;

static int setup(void **state) {
  dir = tu_tmpdir("session");
  return dir ? 0 : -1;
}

static int teardown(void **state) {
  tu_rmdir(dir);
  return 0;
}

/* ---- Running nnc_rt_main ----------------------------------------------------- */
typedef struct outcome {
  int status;
  char *out, *err; /* what went to stdout and stderr */
} outcome;

static void outcome_free(outcome *o) {
  free(o->out);
  free(o->err);
}

/* Runs the program on spec with the NULL-terminated arguments. */
static outcome run_args(const char *spec, const char *const *args) {
  char *argv[32] = {"train"};
  int argc = 1;
  for (; args[argc - 1]; argc++)
    argv[argc] = (char *)args[argc - 1];
  argv[argc] = NULL;
  char out_path[512], err_path[512];
  snprintf(out_path, sizeof out_path, "%s", tu_path(dir, "stdout.txt"));
  snprintf(err_path, sizeof err_path, "%s", tu_path(dir, "stderr.txt"));
  fflush(stdout);
  fflush(stderr);
  int saved_out = dup(1), saved_err = dup(2);
  int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(saved_out >= 0 && saved_err >= 0 && fo >= 0 && fe >= 0);
  dup2(fo, 1);
  dup2(fe, 2);
  close(fo);
  close(fe);
  outcome o;
  o.status = nnc_rt_main(&lin.m, spec, "train", argc, argv, -1);
  fflush(stdout);
  fflush(stderr);
  dup2(saved_out, 1);
  dup2(saved_err, 2);
  close(saved_out);
  close(saved_err);
  o.out = tu_read(out_path, NULL);
  o.err = tu_read(err_path, NULL);
  return o;
}

#define RUN(spec, ...) run_args(spec, (const char *const[]){__VA_ARGS__, NULL})
#define RUN0(spec)     run_args(spec, (const char *const[]){NULL})

/* The line of text starting with prefix, copied (static buffer). */
static const char *line_with(const char *text, const char *prefix) {
  static char line[512];
  for (const char *p = text; p && *p;) {
    const char *nl = strchr(p, '\n'), *e = nl ? nl : p + strlen(p);
    if (strncmp(p, prefix, strlen(prefix)) == 0) {
      snprintf(line, sizeof line, "%.*s", (int)(e - p), p);
      return line;
    }
    p = nl ? nl + 1 : e;
  }
  return NULL;
}

static void expect_ok(const outcome *o) {
  if (o->status != 0) printf("status %d\nstdout:\n%s\nstderr:\n%s\n", o->status, o->out, o->err);
  assert_int_equal(o->status, 0);
}

/* ---- Data and specs ---------------------------------------------------------- */
/* y = 2x + 1 on n points; CSV rows "x,y". */
static void write_csv(const char *name, int64_t n, int header) {
  FILE *f = fopen(tu_path(dir, name), "w");
  assert_non_null(f);
  if (header) fprintf(f, "x,y\n");
  for (int64_t i = 0; i < n; i++) {
    float x = 2.0f * (float)i / (float)n - 1.0f;
    fprintf(f, "%.9g,%.9g\n", x, 2 * x + 1);
  }
  fclose(f);
}

static void write_npy(const char *name, const char *shape, const float *data, int64_t n) {
  char dict[128], head[128];
  snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }", shape);
  size_t hlen = strlen(dict) + 1;
  while ((10 + hlen) % 64)
    hlen++;
  memset(head, ' ', sizeof head);
  memcpy(head, "\x93NUMPY\x01\x00", 8);
  head[8] = (char)hlen, head[9] = 0;
  memcpy(head + 10, dict, strlen(dict));
  head[10 + hlen - 1] = '\n';
  FILE *f = fopen(tu_path(dir, name), "wb");
  assert_non_null(f);
  fwrite(head, 1, 10 + hlen, f);
  fwrite(data, sizeof *data, (size_t)n, f);
  fclose(f);
}

static void write_npy_pair(const char *xname, const char *yname, int64_t n) {
  float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
  for (int64_t i = 0; i < n; i++) {
    x[i] = 2.0f * (float)i / (float)n - 1.0f;
    y[i] = 2 * x[i] + 1;
  }
  char shape[64];
  snprintf(shape, sizeof shape, "(%lld, 1, 1)", (long long)n); /* 1x1 images */
  write_npy(xname, shape, x, n);
  snprintf(shape, sizeof shape, "(%lld,)", (long long)n);
  write_npy(yname, shape, y, n);
  free(x);
  free(y);
}

static char spec[4096];

/* A CSV spec over train.csv / test.csv in the temporary folder (by
 * base_dir), with extra lines appended. */
static const char *csv_spec(const char *extra) {
  snprintf(spec, sizeof spec,
           "# written by the test\n"
           "nnc_spec = 1\n"
           "source = \"lin.nn\"\n"
           "base_dir = \"%s\"\n"
           "model = lin\n"
           "model_hash = \"lin-hash\"\n"
           "data.format = csv\n"
           "data.train.x = \"train.csv\"\n"
           "data.train.header = true\n"
           "data.test.x = \"test.csv\"\n"
           "data.test.header = true\n"
           "data.labels = target\n"
           "epochs = 3\n"
           "seed = 7\n"
           "%s",
           dir, extra);
  return spec;
}

static int group_setup(void **state) {
  if (setup(state)) return -1;
  write_csv("train.csv", 100, 1);
  write_csv("test.csv", 37, 1);
  write_npy_pair("x.npy", "y.npy", 100);
  write_npy_pair("tx.npy", "ty.npy", 37);
  return 0;
}

static int make_model(void **state) {
  tu_lin_make(&lin, 8, 1);
  return 0;
}

static int free_model(void **state) {
  tu_lin_free(&lin);
  return 0;
}

/* The loss columns (kind..val_accuracy) of a CSV metrics log. */
static char *log_losses(const char *path) {
  char *text = tu_read(path, NULL);
  assert_non_null(text);
  char *out = calloc(1, strlen(text) + 1), *w = out;
  for (char *p = text; *p;) {
    char *nl = strchr(p, '\n');
    int commas = 0;
    for (char *c = p; c < nl; c++) {
      if (*c == ',' && ++commas == 7) break;
      *w++ = *c;
    }
    *w++ = '\n';
    p = nl + 1;
  }
  free(text);
  return out;
}

/* ---- Tests ------------------------------------------------------------------- */
static void test_basic_run(void **state) {
  outcome o = RUN(csv_spec(""), "--report");
  expect_ok(&o);
  const char *test = line_with(o.out, "test: loss ");
  assert_non_null(test);
  assert_non_null(strstr(test, "(37 samples)"));
  assert_null(strstr(test, "accuracy")); /* the model reports none */
  assert_non_null(line_with(o.out, "trained 3 epochs in "));
  const char *r = line_with(o.out, "RESULT framework=nnc samples_per_s=");
  assert_non_null(r);
  assert_non_null(strstr(r, " test_acc=nan test_loss="));
  assert_non_null(strstr(r, " train_s="));
  assert_non_null(strstr(r, " start_to_first_step_s="));
  assert_non_null(strstr(r, " epochs=3 batch=8"));
  assert_non_null(strstr(o.err, "training lin: 100 samples, 37 for test; batch 8, 3 epochs"));
  assert_non_null(strstr(o.err, "epoch 3/3")); /* the progress lines */
  outcome_free(&o);
  o = RUN(csv_spec(""), "--quiet");
  expect_ok(&o);
  assert_string_equal(o.err, "");
  assert_null(line_with(o.out, "RESULT"));
  outcome_free(&o);
}

static void test_epochs_and_seed(void **state) {
  outcome a = RUN(csv_spec(""), "--epochs", "2", "--quiet");
  expect_ok(&a);
  assert_non_null(line_with(a.out, "trained 2 epochs in "));
  outcome b = RUN(csv_spec(""), "--epochs=2", "--quiet", "--seed", "7");
  expect_ok(&b);
  outcome c = RUN(csv_spec(""), "--epochs=2", "--quiet", "--seed=8");
  expect_ok(&c);
  char ta[512];
  snprintf(ta, sizeof ta, "%s", line_with(a.out, "test:"));
  assert_string_equal(ta, line_with(b.out, "test:")); /* --seed 7 is the spec's seed */
  assert_string_not_equal(ta, line_with(c.out, "test:"));
  outcome_free(&a);
  outcome_free(&b);
  outcome_free(&c);
}

static void test_threads_and_log(void **state) {
  char log1[512], log2[512];
  snprintf(log1, sizeof log1, "%s", tu_path(dir, "t1.csv"));
  snprintf(log2, sizeof log2, "%s", tu_path(dir, "t2.csv"));
  outcome a = RUN(csv_spec(""), "--threads", "1", "--log", log1, "--quiet");
  expect_ok(&a);
  outcome b = RUN(csv_spec(""), "--threads", "2", "--log", log2, "--quiet");
  expect_ok(&b);
  char *la = log_losses(log1), *lb = log_losses(log2);
  assert_string_equal(la, lb);
  assert_non_null(strstr(la, "kind,epoch,step,loss,accuracy,val_loss,val_accuracy\n"));
  assert_non_null(strstr(la, "\nepoch,3,36,"));
  assert_true(tu_exists(tu_path(dir, "t1.svg")));
  free(la);
  free(lb);
  outcome_free(&a);
  outcome_free(&b);
}

/* Step rows: log.every_steps from the spec (the train block's log_every),
 * and --log-every replacing it (0: epoch rows only). */
static void test_log_every(void **state) {
  char log1[512], log2[512];
  snprintf(log1, sizeof log1, "%s", tu_path(dir, "every1.csv"));
  snprintf(log2, sizeof log2, "%s", tu_path(dir, "every2.csv"));
  outcome a = RUN(csv_spec("log.every_steps = 10\n"), "--log", log1, "--quiet");
  expect_ok(&a);
  outcome b = RUN(csv_spec("log.every_steps = 10\n"), "--log-every", "0", "--log", log2, "--quiet");
  expect_ok(&b);
  char *la = log_losses(log1), *lb = log_losses(log2);
  assert_non_null(strstr(la, "\nstep,1,10,"));
  assert_non_null(strstr(la, "\nstep,3,30,"));
  assert_null(strstr(la, "\nstep,1,5,"));
  assert_null(strstr(lb, "\nstep,"));
  assert_non_null(strstr(lb, "\nepoch,3,36,"));
  free(la);
  free(lb);
  outcome_free(&a);
  outcome_free(&b);
  outcome c = RUN(csv_spec(""), "--log-every", "-1");
  assert_int_equal(c.status, 2);
  outcome_free(&c);
  (void)state;
}

static void test_resume(void **state) {
  char full_log[512], part_log[512], full_ck[512], part_ck[512];
  snprintf(full_log, sizeof full_log, "%s", tu_path(dir, "full.csv"));
  snprintf(part_log, sizeof part_log, "%s", tu_path(dir, "part.csv"));
  snprintf(full_ck, sizeof full_ck, "%s", tu_path(dir, "full.safetensors"));
  snprintf(part_ck, sizeof part_ck, "%s", tu_path(dir, "part.safetensors"));
  /* NPY images of 1x1 pixels, so that noise augmentation applies and its
   * stream must be restored too. */
  snprintf(spec, sizeof spec,
           "nnc_spec = 1\nbase_dir = \"%s\"\nmodel_hash = \"h\"\ndata.format = npy\n"
           "data.train.x = \"x.npy\"\ndata.train.y = \"y.npy\"\ndata.test.x = \"tx.npy\"\n"
           "data.test.y = \"ty.npy\"\ndata.augment = noise 0.01\nseed = 5\n",
           dir);
  const char *sp = spec;
  outcome a = RUN(sp, "--epochs", "4", "--log", full_log, "--checkpoint", full_ck, "--quiet");
  expect_ok(&a);
  outcome b = RUN(sp, "--epochs", "2", "--log", part_log, "--checkpoint", part_ck, "--quiet");
  expect_ok(&b);
  outcome c = RUN(sp, "--epochs", "4", "--log", part_log, "--checkpoint", part_ck, "--resume",
                  part_ck, "--quiet", "--seed", "999" /* the checkpoint's seed wins */);
  expect_ok(&c);
  assert_non_null(line_with(c.out, "trained 2 epochs in "));
  char ta[512];
  snprintf(ta, sizeof ta, "%s", line_with(a.out, "test:"));
  assert_string_equal(ta, line_with(c.out, "test:"));
  char *la = log_losses(full_log), *lc = log_losses(part_log);
  assert_string_equal(la, lc);
  free(la);
  free(lc);
  outcome_free(&a);
  outcome_free(&b);
  outcome_free(&c);
}

static void test_npy_and_data_flag(void **state) {
  snprintf(spec, sizeof spec,
           "nnc_spec = 1\nbase_dir = \"%s\"\ndata.format = npy\n"
           "data.train.x = \"missing_x.npy\"\ndata.train.y = \"missing_y.npy\"\n"
           "data.test.x = \"tx.npy\"\ndata.test.y = \"ty.npy\"\nepochs = 2\n",
           dir);
  outcome o = RUN(spec, "--quiet");
  assert_int_equal(o.status, 1);
  outcome_free(&o);
  char data[1100];
  snprintf(data, sizeof data, "%s,%s", tu_path(dir, "x.npy"), tu_path(dir, "y.npy"));
  o = RUN(spec, "--quiet", "--data", data);
  expect_ok(&o);
  assert_non_null(strstr(line_with(o.out, "test:"), "(37 samples)"));
  outcome_free(&o);
  o = RUN(spec, "--quiet", "--data", tu_path(dir, "x.npy"));
  assert_int_equal(o.status, 1);
  assert_non_null(strstr(o.err, "train: error: NumPy training data is two files: give them as "
                                "FEATURES.npy,LABELS.npy"));
  outcome_free(&o);
  /* CSV: --data replaces the spec's training file (missing here). */
  snprintf(spec, sizeof spec,
           "nnc_spec = 1\nbase_dir = \"%s\"\ndata.format = csv\ndata.train.x = \"nope.csv\"\n"
           "data.train.header = true\n",
           dir);
  write_csv("other.csv", 64, 1);
  o = RUN(spec, "--data", tu_path(dir, "other.csv"), "--epochs", "2");
  expect_ok(&o);
  assert_non_null(strstr(o.err, "training model: 64 samples; batch 8, 2 epochs"));
  assert_non_null(line_with(o.out, "trained 2 epochs"));
  assert_null(line_with(o.out, "test:")); /* no test set */
  outcome_free(&o);
}

static void test_split_standardize_checkpoint(void **state) {
  char ck[512];
  snprintf(ck, sizeof ck, "%s", tu_path(dir, "std.safetensors"));
  outcome o = RUN(csv_spec("data.val_fraction = 0.2\ndata.standardize = true\n"
                           "early_stop.enabled = true\nearly_stop.patience = 1\n"),
                  "--checkpoint", ck, "--epochs", "30");
  expect_ok(&o);
  assert_non_null(strstr(o.err, "training lin: 80 samples, 20 for validation, 37 for test;"));
  char *bytes = tu_read(ck, NULL);
  assert_non_null(bytes);
  assert_non_null(strstr(bytes + 8, "\"nnc.standardize.mean\""));
  assert_non_null(strstr(bytes + 8, "\"nnc.standardize.std\""));
  free(bytes);
  outcome_free(&o);
}

static void test_transfer(void **state) {
  char ck[512], extra[1024];
  snprintf(ck, sizeof ck, "%s", tu_path(dir, "pre.safetensors"));
  outcome o = RUN(csv_spec(""), "--checkpoint", ck, "--quiet");
  expect_ok(&o);
  outcome_free(&o);
  /* By a name relative to base_dir. */
  snprintf(extra, sizeof extra, "load.path = \"pre.safetensors\"\n");
  o = RUN0(csv_spec(extra));
  expect_ok(&o);
  assert_non_null(strstr(o.err, "loaded 4 tensors from "));
  outcome_free(&o);
  snprintf(extra, sizeof extra,
           "load.path = \"%s\"\nload.only = \"lin.w\"\nload.strip_prefix = \"x.\"\n", ck);
  o = RUN0(csv_spec(extra));
  expect_ok(&o);
  assert_non_null(strstr(o.err, "loaded 1 tensor from "));
  outcome_free(&o);
  snprintf(extra, sizeof extra, "load.path = \"%s\"\nload.add_prefix = \"net.\"\n", ck);
  o = RUN0(csv_spec(extra));
  assert_int_equal(o.status, 1);
  assert_non_null(strstr(o.err, "train: error: "));
  assert_non_null(strstr(o.err, "lin.w: missing from the checkpoint"));
  outcome_free(&o);
}

static void test_bad_flags(void **state) {
  static const struct {
    const char *args[4];
    const char *msg;
  } cases[] = {
      {{"--epochs", "x"},
       "train: error: --epochs needs a whole number from 1 to 1000000000, got 'x' (see 'train "
       "--help')\n"},
      {{"--epochs", "0"},
       "train: error: --epochs needs a whole number from 1 to 1000000000, got '0' (see 'train "
       "--help')\n"},
      {{"--epoch", "3"},
       "train: error: unknown option '--epoch'; did you mean '--epochs'? (see 'train --help')\n"},
      {{"--bogus"}, "train: error: unknown option '--bogus' (see 'train --help')\n"},
      {{"model.nn"}, "train: error: unexpected argument 'model.nn' (see 'train --help')\n"},
      {{"--seed"}, "train: error: --seed needs a value (see 'train --help')\n"},
      {{"--data="}, "train: error: --data needs a value (see 'train --help')\n"},
      {{"--quiet=1"}, "train: error: --quiet takes no value (see 'train --help')\n"},
      {{"--threads", "-1"},
       "train: error: --threads needs a whole number from 0 to 1024, got '-1' (see 'train "
       "--help')\n"},
      {{"--batch", "16"},
       "train: error: --batch 16: this program was compiled for batch 8 and the batch size is part "
       "of the compiled code; recompile with --batch 16 (nnc lin.nn --batch 16 -o train) (see "
       "'train --help')\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    outcome o = run_args(csv_spec(""), cases[i].args);
    if (strcmp(o.err, cases[i].msg) != 0) printf("case %zu: %s", i, o.err);
    assert_int_equal(o.status, 2);
    assert_string_equal(o.err, cases[i].msg);
    assert_string_equal(o.out, "");
    outcome_free(&o);
  }
  outcome o = RUN(csv_spec(""), "--batch", "8", "--quiet", "--epochs", "1");
  expect_ok(&o); /* the compiled batch is accepted */
  outcome_free(&o);
}

static void test_missing_data(void **state) {
  outcome o = RUN0(csv_spec("data.test.y = \"\"\n"));
  assert_int_equal(o.status, 1); /* spec error */
  assert_string_equal(o.err,
                      "train: error: training spec:15: CSV data keeps its labels in a column\n");
  outcome_free(&o);
  snprintf(spec, sizeof spec,
           "nnc_spec = 1\nbase_dir = \"%s\"\ndata.format = csv\ndata.train.x = \"nope.csv\"\n",
           dir);
  o = RUN0(spec);
  char want[2048];
  snprintf(want, sizeof want,
           "train: error: data file 'nope.csv' not found; looked in: %s/nope.csv, "
           "/usr/share/datasets/nope.csv, nope.csv\n",
           dir);
  assert_int_equal(o.status, 1);
  assert_string_equal(o.err, want);
  assert_string_equal(o.out, "");
  outcome_free(&o);
  o = RUN(spec, "--data", "/nonexistent/d.csv");
  assert_int_equal(o.status, 1);
  assert_string_equal(o.err, "train: error: data file '/nonexistent/d.csv' not found; looked in: "
                             "/nonexistent/d.csv\n");
  outcome_free(&o);
  snprintf(spec, sizeof spec,
           "nnc_spec = 1\nbase_dir = \"%s\"\ndata.format = idx\ndata.dir = \"no-such-set\"\n", dir);
  o = RUN0(spec);
  snprintf(want, sizeof want,
           "train: error: IDX data folder 'no-such-set' not found; looked in: %s/no-such-set, "
           "/usr/share/datasets/no-such-set, no-such-set\n",
           dir);
  assert_int_equal(o.status, 1);
  assert_string_equal(o.err, want);
  outcome_free(&o);
  /* A folder without the IDX files. */
  snprintf(spec, sizeof spec, "nnc_spec = 1\ndata.format = idx\ndata.dir = \"%s\"\n", dir);
  o = RUN0(spec);
  snprintf(want, sizeof want,
           "train: error: %s/train-images-idx3-ubyte (or train-images-idx3-ubyte.gz): not found\n",
           dir);
  assert_int_equal(o.status, 1);
  assert_string_equal(o.err, want);
  outcome_free(&o);
}

/* Expects status 1, stderr "train: error: <want>\n" and nothing on stdout:
 * the run stopped before its first epoch. */
static void expect_early_error(outcome o, const char *want) {
  char full[2200];
  snprintf(full, sizeof full, "train: error: %s\n", want);
  printf("  %s", o.err);
  assert_int_equal(o.status, 1);
  assert_string_equal(o.err, full);
  assert_string_equal(o.out, "");
  outcome_free(&o);
}

/* Issue 16: a bad test set was found only after training, a checkpoint
 * into a missing folder failed only after the first epoch, and --resume
 * FOLDER / --data /dev/zero gave "read error at byte 0" or ran out of
 * memory. Each now stops before training, naming the file. */
static void test_checked_before_training(void **state) {
  FILE *f = fopen(tu_path(dir, "wide.csv"), "w");
  assert_non_null(f);
  fputs("a,b,y\n1,2,3\n4,5,6\n", f);
  fclose(f);
  char want[2048], log[512];
  snprintf(log, sizeof log, "%s", tu_path(dir, "early.csv"));
  snprintf(want, sizeof want, "%s: 2 features per sample, but the model expects 1",
           tu_path(dir, "wide.csv"));
  expect_early_error(RUN(csv_spec(""), "--test-data", tu_path(dir, "wide.csv"), "--log", log),
                     want);
  assert_false(tu_exists(log));
  char ck[512];
  snprintf(ck, sizeof ck, "%s", tu_path(dir, "no-such-folder/ck.safetensors"));
  snprintf(want, sizeof want,
           "checkpoint %s: cannot write into folder '%s/no-such-folder': No such file or directory",
           ck, dir);
  expect_early_error(RUN(csv_spec(""), "--checkpoint", ck, "--log", log), want);
  assert_false(tu_exists(log));
  snprintf(want, sizeof want, "checkpoint %s: is a folder, not a file", dir);
  expect_early_error(RUN(csv_spec(""), "--checkpoint", dir), want);
  snprintf(want, sizeof want, "%s: is a folder, not a regular file", dir);
  expect_early_error(RUN(csv_spec(""), "--resume", dir, "--quiet"), want);
  expect_early_error(RUN(csv_spec(""), "--data", "/dev/zero"),
                     "/dev/zero: is a device, pipe or socket, not a regular file");
}

/* Class labels beyond the model's classes name the file and the row (CSV)
 * or the sample and byte (IDX), before training. The linear model is
 * relabelled as a 2-class model: nothing trains, so it never runs. */
static void test_labels_out_of_range(void **state) {
  lin.m.label_is_class = 1, lin.m.num_classes = 2;
  FILE *f = fopen(tu_path(dir, "cls.csv"), "w");
  assert_non_null(f);
  fputs("0.5,0\n0.25,1\n0.1,5\n", f);
  fclose(f);
  snprintf(spec, sizeof spec,
           "nnc_spec = 1\nbase_dir = \"%s\"\ndata.format = csv\ndata.train.x = \"cls.csv\"\n"
           "data.labels = class\n",
           dir);
  char want[2048];
  snprintf(want, sizeof want,
           "%s/cls.csv: row 3, column 2: class label 5 is outside 0..1 (the model has 2 classes)",
           dir);
  expect_early_error(RUN0(spec), want);
  /* IDX: 2 images of 1x1 pixels, labels 1 and 7. */
  const char *names[4] = {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte",
                          "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"};
  static const unsigned char images[18] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 9, 9};
  static const unsigned char labels[10] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 7};
  for (int i = 0; i < 4; i++)
    tu_write(tu_path(dir, names[i]), i < 2 ? (const char *)images : (const char *)labels,
             i < 2 ? sizeof images : sizeof labels);
  snprintf(spec, sizeof spec, "nnc_spec = 1\ndata.format = idx\ndata.dir = \"%s\"\n", dir);
  snprintf(want, sizeof want,
           "%s/train-labels-idx1-ubyte: byte 9: sample 1 has label 7, outside 0..1 (the model "
           "has 2 classes)",
           dir);
  expect_early_error(RUN0(spec), want);
  /* The test set loads on a thread of its own behind the training set's
   * setup: its problems still stop the run before the first step. */
  static const unsigned char good_labels[10] = {0, 0, 8, 1, 0, 0, 0, 2, 1, 0};
  tu_write(tu_path(dir, names[2]), (const char *)good_labels, sizeof good_labels);
  snprintf(want, sizeof want,
           "%s/t10k-labels-idx1-ubyte: byte 9: sample 1 has label 7, outside 0..1 (the model "
           "has 2 classes)",
           dir);
  expect_early_error(RUN0(spec), want);
  tu_write(tu_path(dir, names[3]), (const char *)good_labels, sizeof good_labels);
  tu_write(tu_path(dir, names[1]), (const char *)images, sizeof images - 1);
  snprintf(want, sizeof want, "%s/t10k-images-idx3-ubyte: byte 17: file ends after 1 of 2 images",
           dir);
  expect_early_error(RUN0(spec), want);
  for (int i = 0; i < 4; i++)
    unlink(tu_path(dir, names[i]));
  lin.m.label_is_class = 0, lin.m.num_classes = 0;
}

static void test_nan_loss(void **state) {
  lin.nan_at_step = 15;
  outcome o = RUN(csv_spec(""), "--quiet");
  lin.nan_at_step = 0;
  assert_int_equal(o.status, 1);
  assert_string_equal(o.err,
                      "train: error: loss became NaN/inf at epoch 2 step 3/12 (global step 15)\n");
  assert_string_equal(o.out, "");
  outcome_free(&o);
}

static void test_help(void **state) {
  outcome o = RUN(csv_spec(""), "--help");
  assert_int_equal(o.status, 0);
  assert_non_null(strstr(o.out, "usage: train [options]"));
  assert_non_null(strstr(o.out, "Trains lin (compiled from lin.nn, batch 8)"));
  assert_non_null(strstr(o.out, "--epochs N         total number of epochs (default 3)"));
  assert_non_null(strstr(o.out, "--threads N"));
  assert_string_equal(o.err, "");
  outcome_free(&o);
  o = RUN("not a spec", "-h");
  assert_int_equal(o.status, 0);
  assert_non_null(strstr(o.out, "usage: train [options]"));
  outcome_free(&o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_basic_run, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_epochs_and_seed, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_threads_and_log, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_log_every, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_resume, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_npy_and_data_flag, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_split_standardize_checkpoint, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_transfer, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_bad_flags, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_missing_data, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_nan_loss, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_help, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_checked_before_training, make_model, free_model),
      cmocka_unit_test_setup_teardown(test_labels_out_of_range, make_model, free_model),
  };
  return cmocka_run_group_tests(tests, group_setup, teardown);
}
