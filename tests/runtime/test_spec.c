/* test_spec.c: the training-spec parser (spec.c).
 *   - A spec that sets every key reads back into every field; defaults hold
 *     for what a minimal spec leaves out.
 *   - Lexical details: comments (also after values, not inside strings),
 *     blank lines, CRLF, the escapes \" \\ \n, bare words for strings.
 *   - Every error names origin:line (or origin alone for a missing key), word
 *     for word: unknown keys with a did-you-mean, duplicates with the first
 *     line, wrong types and counts, ranges, bad strings, and the checks that
 *     span keys (the files each data format needs, keep_best, load.only).
 *   - Failure leaves nothing allocated (ASan's leak check). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "runtime/nnc_rt.h"

static const char FULL[] = "# every key\n"
                           "nnc_spec = 1\n"
                           "source = \"examples/fashion_mlp.nn\"\n"
                           "base_dir = \"/home/u/examples\"\n"
                           "model = mlp\n"
                           "model_hash = \"9f3a0c\"\n"
                           "data.format = npy\n"
                           "data.dir = \"unused\"\n"
                           "data.train.x = \"x.npy\"\n"
                           "data.train.y = \"y.npy\"\n"
                           "data.train.header = true\n"
                           "data.train.label_column = 0\n"
                           "data.test.x = \"tx.npy\"\n"
                           "data.test.y = \"ty.npy\"\n"
                           "data.test.header = false\n"
                           "data.test.label_column = -2\n"
                           "data.labels = class\n"
                           "data.scale = 0.00392156862745098\n"
                           "data.standardize = true\n"
                           "data.shuffle = false\n"
                           "data.val_fraction = 0.1\n"
                           "data.augment = random_crop 4\n"
                           "data.augment = hflip 0.5\n"
                           "data.augment = shift 2\n"
                           "data.augment = noise 0.01\n"
                           "validate = validation\n"
                           "epochs = 12\n"
                           "seed = 18446744073709551615\n"
                           "metric.accuracy = false\n"
                           "early_stop.enabled = true\n"
                           "early_stop.metric = accuracy\n"
                           "early_stop.patience = 3\n"
                           "early_stop.min_delta = 1e-4\n"
                           "checkpoint.path = \"run.safetensors\"\n"
                           "checkpoint.every = 2\n"
                           "checkpoint.keep_best = true\n"
                           "resume = \"old.safetensors\"\n"
                           "log.path = \"run.csv\"\n"
                           "log.every_steps = 100\n"
                           "load.path = \"pre.safetensors\"\n"
                           "load.only = \"cnn.conv*\"\n"
                           "load.only = \"cnn.bn?.*\"\n"
                           "load.strip_prefix = \"backbone.\"\n"
                           "load.add_prefix = \"cnn.\"\n";

static void test_every_key(void **state) {
  nnc_rt_spec s;
  nnc_rt_error err = {{0}};
  int rc = nnc_rt_spec_parse(&s, FULL, "full.spec", &err);
  if (rc) printf("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_string_equal(s.origin, "full.spec");
  assert_string_equal(s.source, "examples/fashion_mlp.nn");
  assert_string_equal(s.base_dir, "/home/u/examples");
  assert_string_equal(s.model, "mlp");
  assert_string_equal(s.model_hash, "9f3a0c");
  assert_int_equal(s.format, NNC_RT_DATA_NPY);
  assert_string_equal(s.dir, "unused");
  assert_string_equal(s.train.x, "x.npy");
  assert_string_equal(s.train.y, "y.npy");
  assert_int_equal(s.train.header, 1);
  assert_int_equal(s.train.label_column, 0);
  assert_string_equal(s.test.x, "tx.npy");
  assert_string_equal(s.test.y, "ty.npy");
  assert_int_equal(s.test.header, 0);
  assert_int_equal(s.test.label_column, -2);
  assert_int_equal(s.label_is_class, 1);
  assert_true(s.scale == 0.00392156862745098);
  assert_int_equal(s.standardize, 1);
  assert_int_equal(s.shuffle, 0);
  assert_true(s.val_fraction == 0.1);
  assert_int_equal(s.naugment, 4);
  assert_int_equal(s.augment[0].kind, NNC_RT_AUG_RANDOM_CROP);
  assert_true(s.augment[0].a == 4);
  assert_int_equal(s.augment[1].kind, NNC_RT_AUG_HFLIP);
  assert_true(s.augment[1].a == 0.5);
  assert_int_equal(s.augment[2].kind, NNC_RT_AUG_SHIFT);
  assert_int_equal(s.augment[3].kind, NNC_RT_AUG_NOISE);
  assert_true(s.augment[3].a == 0.01);
  assert_int_equal(s.validate, NNC_RT_VALIDATE_SPLIT);
  assert_int_equal(s.epochs, 12);
  assert_true(s.seed == UINT64_MAX);
  assert_int_equal(s.metric_accuracy, 0);
  assert_int_equal(s.early_stop, 1);
  assert_int_equal(s.early_stop_metric, NNC_RT_METRIC_ACCURACY);
  assert_int_equal(s.patience, 3);
  assert_true(s.min_delta == 1e-4);
  assert_string_equal(s.checkpoint_path, "run.safetensors");
  assert_int_equal(s.checkpoint_every, 2);
  assert_int_equal(s.keep_best, 1);
  assert_string_equal(s.resume_path, "old.safetensors");
  assert_string_equal(s.log_path, "run.csv");
  assert_int_equal(s.log_every_steps, 100);
  assert_string_equal(s.load_path, "pre.safetensors");
  assert_int_equal(s.nload_only, 2);
  assert_string_equal(s.load_only[0], "cnn.conv*");
  assert_string_equal(s.load_only[1], "cnn.bn?.*");
  assert_string_equal(s.load_strip_prefix, "backbone.");
  assert_string_equal(s.load_add_prefix, "cnn.");
  nnc_rt_spec_free(&s);
  nnc_rt_spec_free(&s); /* freeing twice is harmless */
}

static void test_defaults(void **state) {
  nnc_rt_spec s;
  nnc_rt_error err = {{0}};
  assert_int_equal(
      nnc_rt_spec_parse(&s, "nnc_spec = 1\ndata.format = idx\ndata.dir = fmnist", "m", &err), 0);
  assert_string_equal(s.dir, "fmnist");
  assert_null(s.source);
  assert_null(s.model_hash);
  assert_null(s.train.x);
  assert_int_equal(s.train.label_column, -1);
  assert_int_equal(s.test.label_column, -1);
  assert_int_equal(s.label_is_class, -1);
  assert_true(s.scale == 1);
  assert_int_equal(s.standardize, 0);
  assert_int_equal(s.shuffle, 1);
  assert_true(s.val_fraction == 0);
  assert_int_equal(s.naugment, 0);
  assert_int_equal(s.validate, NNC_RT_VALIDATE_AUTO);
  assert_int_equal(s.epochs, 1);
  assert_true(s.seed == 0);
  assert_int_equal(s.metric_accuracy, 1);
  assert_int_equal(s.early_stop, 0);
  assert_int_equal(s.early_stop_metric, NNC_RT_METRIC_LOSS);
  assert_int_equal(s.patience, 5);
  assert_int_equal(s.checkpoint_every, 1);
  assert_null(s.checkpoint_path);
  assert_null(s.load_path);
  nnc_rt_spec_free(&s);
}

static void test_lexical(void **state) {
  static const char text[] = "  # leading comment\r\n"
                             "\r\n"
                             "nnc_spec=1   # trailing comment\r\n"
                             "\tdata.format =\tcsv\r\n"
                             "data.train.x = \"a \\\"quoted\\\" #not-a-comment\\\\dir\\nx.csv\"\r\n"
                             "model = my_net.v2\n"
                             "data.scale = -.5e-1\n"
                             "log.path = \"\"\n"
                             "data.test.x = rel/path/t.csv"; /* no final newline */
  nnc_rt_spec s;
  nnc_rt_error err = {{0}};
  int rc = nnc_rt_spec_parse(&s, text, "lex", &err);
  if (rc) printf("%s\n", err.msg);
  assert_int_equal(rc, 0);
  assert_int_equal(s.format, NNC_RT_DATA_CSV);
  assert_string_equal(s.train.x, "a \"quoted\" #not-a-comment\\dir\nx.csv");
  assert_string_equal(s.model, "my_net.v2");
  assert_true(s.scale == -0.05);
  assert_string_equal(s.log_path, "");
  assert_string_equal(s.test.x, "rel/path/t.csv");
  nnc_rt_spec_free(&s);
}

/* The lines in front of each bad line below. */
static const char HEAD[] = "nnc_spec = 1\n"
                           "data.format = csv\n"
                           "data.train.x = \"d.csv\"\n";

typedef struct bad_case {
  const char *tail; /* appended to HEAD (line 4 on) */
  const char *msg;  /* the whole error */
} bad_case;

static const bad_case BAD[] = {
    {"epoch = 3\n", "t.spec:4: unknown key 'epoch'; did you mean 'epochs'?"},
    {"patience = 3\n", "t.spec:4: unknown key 'patience'; did you mean 'early_stop.patience'?"},
    {"data.formt = csv\n", "t.spec:4: unknown key 'data.formt'; did you mean 'data.format'?"},
    {"zzzzzzzz = 1\n", "t.spec:4: unknown key 'zzzzzzzz'"},
    {"\n# c\ndata.format = npy\n", "t.spec:6: 'data.format' is given twice (first on line 2)"},
    {"epochs 3\n", "t.spec:4: expected '=' after 'epochs'"},
    {"= 3\n", "t.spec:4: expected a key such as 'epochs', got '='"},
    {"epochs =\n", "t.spec:4: 'epochs' needs a value"},
    {"epochs = 3 4\n", "t.spec:4: 'epochs' takes 1 value, got 2"},
    {"epochs = 2.5\n", "t.spec:4: 'epochs' must be a whole number, got '2.5'"},
    {"epochs = 0\n", "t.spec:4: 'epochs' must be between 1 and 1000000000, got 0"},
    {"epochs = ten\n", "t.spec:4: 'epochs' must be a whole number, got 'ten'"},
    {"seed = -1\n",
     "t.spec:4: 'seed' must be a whole number from 0 to 18446744073709551615, got '-1'"},
    {"data.scale = inf\n", "t.spec:4: 'data.scale' must be a number, got a word 'inf'"},
    {"data.scale = 1e999\n", "t.spec:4: '1e999' is not a finite number"},
    {"data.scale = \"2\"\n", "t.spec:4: 'data.scale' must be a number, got a string '2'"},
    {"data.val_fraction = 1\n", "t.spec:4: 'data.val_fraction' must be between 0 and 0.99, got 1"},
    {"data.shuffle = yes\n", "t.spec:4: 'data.shuffle' must be true or false, got 'yes'"},
    {"early_stop.metric = acc\n",
     "t.spec:4: 'early_stop.metric' must be one of loss,accuracy; got 'acc'"},
    {"validate = val\n",
     "t.spec:4: 'validate' must be one of auto,none,test,validation; got 'val'"},
    {"model = 3\n", "t.spec:4: 'model' must be a string, got the number 3"},
    {"model = \"abc\n", "t.spec:4: unterminated string (a closing \" is missing)"},
    {"model = \"a\\tb\"\n", "t.spec:4: unknown escape '\\t' in a string (only \\\" \\\\ and \\n)"},
    {"model = \"a\"b\n", "t.spec:4: expected a space between values, got 'b'"},
    {"data.augment = blur 1\n",
     "t.spec:4: unknown augmentation 'blur' (random_crop, hflip, shift or noise)"},
    {"data.augment = noise\n", "t.spec:4: 'data.augment' takes 2 values, got 1"},
    {"data.augment = hflip 2\n", "t.spec:4: 'hflip' must be between 0 and 1, got 2"},
    {"data.augment = shift 1.5\n", "t.spec:4: shift takes a whole number of pixels, got 1.5"},
    {"nnc_spec = 1\n", "t.spec:4: 'nnc_spec' is given twice (first on line 1)"},
    {"checkpoint.keep_best = true\n", "t.spec:4: keep_best needs 'checkpoint.path'"},
    {"\nload.only = \"a*\"\n", "t.spec:5: 'load.only' needs 'load.path' (the checkpoint to load)"},
    {"data.test.y = \"y.csv\"\n", "t.spec:4: CSV data keeps its labels in a column"},
    {"validate = validation\n", "t.spec:4: 'validate = validation' needs data.val_fraction > 0"},
};

static void test_errors(void **state) {
  for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
    char text[512];
    snprintf(text, sizeof text, "%s%s", HEAD, BAD[i].tail);
    nnc_rt_spec s;
    nnc_rt_error err = {{0}};
    assert_int_equal(nnc_rt_spec_parse(&s, text, "t.spec", &err), -1);
    if (strcmp(err.msg, BAD[i].msg) != 0)
      printf("case %zu:\n  got:  %s\n  want: %s\n", i, err.msg, BAD[i].msg);
    assert_string_equal(err.msg, BAD[i].msg);
    nnc_rt_spec_free(&s);
  }
}

static void test_whole_spec_errors(void **state) {
  static const bad_case cases[] = {
      {"data.format = csv\ndata.train.x = a.csv\n",
       "w: not a training spec: the line 'nnc_spec = 1' is missing"},
      {"nnc_spec = 2\n", "w:1: 'nnc_spec' must be between 1 and 1, got 2"},
      {"nnc_spec = 1\n", "w: missing 'data.format' (idx, csv or npy)"},
      {"nnc_spec = 1\ndata.format = idx\n", "w:2: IDX data needs 'data.dir' (the folder)"},
      {"nnc_spec = 1\ndata.format = idx\ndata.dir = d\ndata.labels = target\n",
       "w:4: IDX data has class labels, not targets"},
      {"nnc_spec = 1\ndata.format = csv\n", "w:2: missing 'data.train.x' (the training data file)"},
      {"nnc_spec = 1\ndata.format = npy\ndata.train.x = x.npy\n",
       "w:3: NumPy data needs 'data.train.y' too"},
      {"nnc_spec = 1\ndata.format = npy\ndata.train.x = x.npy\ndata.train.y = y.npy\n"
       "data.test.y = ty.npy\n",
       "w:5: NumPy test data needs both 'data.test.x' and 'data.test.y'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    nnc_rt_spec s;
    nnc_rt_error err = {{0}};
    assert_int_equal(nnc_rt_spec_parse(&s, cases[i].tail, "w", &err), -1);
    if (strcmp(err.msg, cases[i].msg) != 0)
      printf("case %zu:\n  got:  %s\n  want: %s\n", i, err.msg, cases[i].msg);
    assert_string_equal(err.msg, cases[i].msg);
  }
}

static void test_list_limits(void **state) {
  char text[4096];
  size_t n = (size_t)snprintf(text, sizeof text, "%s", HEAD);
  for (int i = 0; i <= NNC_RT_SPEC_MAX_LIST; i++)
    n += (size_t)snprintf(text + n, sizeof text - n, "data.augment = noise 0.1\n");
  nnc_rt_spec s;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_spec_parse(&s, text, "l", &err), -1);
  assert_string_equal(err.msg, "l:20: too many augmentations (at most 16)");
  n = (size_t)snprintf(text, sizeof text, "%sload.path = p\n", HEAD);
  for (int i = 0; i <= NNC_RT_SPEC_MAX_LIST; i++)
    n += (size_t)snprintf(text + n, sizeof text - n, "load.only = \"pattern%d\"\n", i);
  assert_int_equal(nnc_rt_spec_parse(&s, text, "l", &err), -1);
  assert_string_equal(err.msg, "l:21: too many 'load.only' patterns (at most 16)");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_key),         cmocka_unit_test(test_defaults),
      cmocka_unit_test(test_lexical),           cmocka_unit_test(test_errors),
      cmocka_unit_test(test_whole_spec_errors), cmocka_unit_test(test_list_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
