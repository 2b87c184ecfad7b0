/* test_log.c: the metrics log (metrics_log.c) and its SVG (plot.c).
 *   - A 3-epoch run with a validation set logs to CSV and to JSON lines:
 *     one epoch row per epoch with the callback's numbers, a step row every
 *     5 steps, the model's learning rate, growing wall time; every JSON line
 *     parses.
 *   - The SVG written next to the log is well-formed (tags balance, one
 *     root) and holds a point per epoch for each curve with its value.
 *   - Plotting a hand-written log with accuracy draws the accuracy panel;
 *     a repeated epoch (from a resume) is drawn once, the later row.
 *   - Unknown log extensions are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_testutil.h"
#include "runtime/rt_internal.h"

static const char *dir;

static int setup(void **state) {
  dir = tu_tmpdir("log");
  return dir ? 0 : -1;
}

static int teardown(void **state) {
  tu_rmdir(dir);
  return 0;
}

typedef struct epoch_log {
  int calls;
  nnc_rt_epoch_stats stats[16];
} epoch_log;

static void log_epoch(void *user, const nnc_rt_epoch_stats *s) {
  epoch_log *log = user;
  log->stats[log->calls++] = *s;
}

static void run_logged(const char *log_path, epoch_log *log) {
  tu_lin l;
  tu_lin_make(&l, 8, 1);
  nnc_rt_dataset train, val;
  tu_lin_data(&train, 100);
  tu_lin_data(&val, 30);
  nnc_rt_train_opts o = {
      .epochs = 3, .seed = 1, .shuffle = 1, .log_path = log_path, .log_every_steps = 5};
  nnc_rt_error err = {{0}};
  *log = (epoch_log){0};
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, &val, &o, log_epoch, log, &err), 0);
  nnc_rt_dataset_free(&train);
  nnc_rt_dataset_free(&val);
  tu_lin_free(&l);
}

static int close_to(double a, double b) {
  return fabs(a - b) <= 1e-9 * fmax(1, fabs(b));
}

static void test_csv_log(void **state) {
  epoch_log log;
  const char *p = tu_path(dir, "run.csv");
  run_logged(p, &log);
  char *text = tu_read(p, NULL);
  printf("%s", text);
  char *line = strtok(text, "\n");
  assert_string_equal(
      line, "kind,epoch,step,loss,accuracy,val_loss,val_accuracy,lr,samples_per_s,wall_s");
  int epochs = 0, steps = 0;
  double last_wall = 0;
  while ((line = strtok(NULL, "\n"))) {
    char kind[8];
    long long epoch, step;
    double loss;
    int used;
    assert_int_equal(sscanf(line, "%7[a-z],%lld,%lld,%lf,%n", kind, &epoch, &step, &loss, &used),
                     4);
    const char *rest = line + used;
    if (strcmp(kind, "epoch") == 0) {
      /* No accuracy (the model has none): an empty cell. */
      double vl, lr, sps, wall;
      assert_int_equal(sscanf(rest, ",%lf,,%lf,%lf,%lf", &vl, &lr, &sps, &wall), 4);
      const nnc_rt_epoch_stats *s = &log.stats[epochs++];
      assert_int_equal(epoch, epochs);
      assert_int_equal(step, 12 * epochs);
      assert_true(close_to(loss, s->train_loss) && close_to(vl, s->val_loss));
      assert_true((float)lr == 0.05f);
      assert_true(sps > 0 && wall >= last_wall);
      last_wall = wall;
    } else {
      assert_string_equal(kind, "step");
      steps++;
      assert_int_equal(step, 5 * steps);
      assert_int_equal(epoch, (step - 1) / 12 + 1);
      assert_true(loss > 0);
      assert_non_null(strstr(rest, ",,,0.05")); /* no accuracy, no validation */
    }
  }
  assert_int_equal(epochs, 3);
  assert_int_equal(steps, 7); /* 36 steps */
  free(text);
}

static void test_jsonl_log(void **state) {
  epoch_log log;
  const char *p = tu_path(dir, "run.jsonl");
  run_logged(p, &log);
  char *text = tu_read(p, NULL);
  int rows = 0, epochs = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), rows++) {
    nnc_rt_json v;
    nnc_rt_error err = {{0}};
    assert_int_equal(nnc_rt_json_parse(&v, line, strlen(line), 0, p, &err), 0);
    assert_int_equal(v.kind, NNC_RT_JSON_OBJECT);
    assert_int_equal(v.n, 10);
    assert_int_equal(nnc_rt_json_get(&v, "accuracy")->kind, NNC_RT_JSON_NULL);
    if (strcmp(nnc_rt_json_get(&v, "kind")->string, "epoch") == 0) {
      const nnc_rt_epoch_stats *s = &log.stats[epochs++];
      assert_int_equal(nnc_rt_json_get(&v, "epoch")->integer, epochs);
      assert_true(close_to(nnc_rt_json_get(&v, "loss")->number, s->train_loss));
      assert_true(close_to(nnc_rt_json_get(&v, "val_loss")->number, s->val_loss));
    } else {
      assert_int_equal(nnc_rt_json_get(&v, "val_loss")->kind, NNC_RT_JSON_NULL);
    }
    nnc_rt_json_free(&v);
  }
  assert_int_equal(rows, 10);
  assert_int_equal(epochs, 3);
  free(text);
}

/* Checks that svg is well-formed XML as far as tags go: every start tag is
 * closed in order, one root <svg>, attribute quotes balanced. */
static void check_xml(const char *svg) {
  char stack[64][32];
  int depth = 0, roots = 0;
  const char *p = svg;
  if (strncmp(p, "<?xml", 5) == 0) p = strstr(p, "?>") + 2;
  while ((p = strchr(p, '<'))) {
    const char *end = strchr(p, '>');
    assert_non_null(end);
    int quotes = 0;
    for (const char *q = p; q < end; q++)
      quotes += *q == '"';
    assert_int_equal(quotes % 2, 0);
    char name[32];
    if (p[1] == '/') {
      assert_int_equal(sscanf(p + 2, "%31[a-z]", name), 1);
      assert_true(depth > 0);
      assert_string_equal(stack[--depth], name);
    } else {
      assert_int_equal(sscanf(p + 1, "%31[a-z]", name), 1);
      if (depth == 0) roots++;
      if (end[-1] != '/') strcpy(stack[depth++], name);
    }
    p = end + 1;
  }
  assert_int_equal(depth, 0);
  assert_int_equal(roots, 1);
}

static int count(const char *s, const char *what) {
  int n = 0;
  for (; (s = strstr(s, what)); s++)
    n++;
  return n;
}

static void test_svg_next_to_log(void **state) {
  epoch_log log;
  run_logged(tu_path(dir, "curves.csv"), &log);
  char *svg = tu_read(tu_path(dir, "curves.svg"), NULL);
  assert_non_null(svg);
  check_xml(svg);
  assert_non_null(strstr(svg, "<svg xmlns=\"http://www.w3.org/2000/svg\""));
  assert_int_equal(count(svg, "<polyline"), 2); /* train and validation loss */
  assert_int_equal(count(svg, "<circle"), 6);
  assert_null(strstr(svg, "accuracy"));
  for (int e = 0; e < 3; e++) {
    char want[128];
    snprintf(want, sizeof want, "<title>train loss, epoch %d: %.6g</title>", e + 1,
             log.stats[e].train_loss);
    assert_non_null(strstr(svg, want));
    snprintf(want, sizeof want, "<title>validation loss, epoch %d: %.6g</title>", e + 1,
             log.stats[e].val_loss);
    assert_non_null(strstr(svg, want));
  }
  free(svg);
}

static void test_plot_accuracy_and_repeats(void **state) {
  const char *log = tu_path(dir, "hand.csv"), *svg = tu_path(dir, "hand.svg");
  const char *text = "kind,epoch,step,loss,accuracy,val_loss,val_accuracy,lr,samples_per_s,wall_s\n"
                     "epoch,1,10,2.0,0.30,2.1,0.25,0.1,100,1\n"
                     "step,2,15,1.5,0.5,,,0.1,100,1.5\n"
                     "epoch,2,20,1.0,0.60,1.2,0.55,0.1,100,2\n"
                     "epoch,3,30,0.9,0.70,1.1,0.65,0.1,100,3\n"
                     "epoch,3,30,0.5,0.80,0.7,0.75,0.1,100,3\n" /* resumed: replaces */
                     "epoch,4,40,0.4,0.85,0.6,0.80,0.1,100,4\n";
  tu_write(log, text, strlen(text));
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_log_plot(log, svg, NULL, &err), 0);
  char *s = tu_read(svg, NULL);
  check_xml(s);
  assert_int_equal(count(s, "<polyline"), 4);
  assert_int_equal(count(s, "<circle"), 16);
  assert_non_null(strstr(s, "<title>train accuracy, epoch 3: 0.8</title>"));
  assert_non_null(strstr(s, "<title>validation accuracy, epoch 4: 0.8</title>"));
  assert_non_null(strstr(s, "<title>train loss, epoch 3: 0.5</title>"));
  assert_null(strstr(s, "epoch 3: 0.9<"));
  assert_non_null(strstr(s, "width=\"920\""));
  free(s);
}

/* The numbers of the element `tag` carrying attribute `attr`="..." at each
 * occurrence of `after` in s: e.g. the value tick labels. */
static int tick_labels(const char *s, double *out, int max) {
  int n = 0;
  const char *key = "text-anchor=\"end\">";
  for (const char *p = s; (p = strstr(p, key)) && n < max; p += strlen(key))
    out[n++] = strtod(p + strlen(key), NULL);
  return n;
}

/* Issue 16: ticks fell on the data's extremes (0.4379, 0.357, ...), the
 * legend sat on the training accuracy curve at its right end, the y axis
 * of a loss could run below zero, and the test set used for validation was
 * called "validation". A 15-epoch run like fashion_cnn's, drawn with the
 * evaluated set named "test". */
static void test_plot_reads_well(void **state) {
  const char *log = tu_path(dir, "fashion.csv"), *svg = tu_path(dir, "fashion.svg");
  FILE *f = fopen(log, "w");
  assert_non_null(f);
  fputs("kind,epoch,step,loss,accuracy,val_loss,val_accuracy,lr,samples_per_s,wall_s\n", f);
  for (int e = 1; e <= 15; e++) {
    double loss = 0.06 + 0.38 * exp(-0.25 * (e - 1)), acc = 0.98 - 0.14 * exp(-0.3 * (e - 1));
    fprintf(f, "epoch,%d,%d,%.4f,%.4f,%.4f,%.4f,0.001,1000,%d\n", e, 100 * e, loss, acc,
            loss + 0.03, acc - 0.02, e);
  }
  fclose(f);
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_log_plot(log, svg, "test", &err), 0);
  char *s = tu_read(svg, NULL);
  check_xml(s);
  /* Round ticks, 1-2-5 steps, starting at zero for the loss. */
  double t[32];
  int nt = tick_labels(s, t, 32);
  assert_int_equal(nt, 11);
  const double want[11] = {0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.80, 0.85, 0.90, 0.95, 1.00};
  for (int i = 0; i < nt; i++)
    assert_true(fabs(t[i] - want[i]) < 1e-9);
  assert_non_null(strstr(s, "text-anchor=\"end\">0.0</text>"));
  assert_non_null(strstr(s, "text-anchor=\"end\">0.85</text>"));
  /* The evaluated set is named as what it is. */
  assert_non_null(strstr(s, "<title>test loss, epoch 15: "));
  assert_non_null(strstr(s, "<title>test accuracy, epoch 1: "));
  assert_null(strstr(s, "validation"));
  assert_int_equal(count(s, ">test</text>"), 2);
  /* No circle of either panel inside its legend's box. */
  const char *panels[2] = {strstr(s, "<g class=\"loss\">"), strstr(s, "<g class=\"accuracy\">")};
  for (int k = 0; k < 2; k++) {
    assert_non_null(panels[k]);
    const char *lg = strstr(panels[k], "<g class=\"legend\"");
    assert_non_null(lg);
    double x, y, w, h;
    assert_int_equal(sscanf(strstr(lg, "<rect"),
                            "<rect x=\"%lf\" y=\"%lf\" width=\"%lf\" height=\"%lf\"", &x, &y, &w,
                            &h),
                     4);
    int circles = 0;
    for (const char *c = panels[k]; (c = strstr(c, "<circle")) && c < lg; c++, circles++) {
      double cx, cy;
      assert_int_equal(sscanf(c, "<circle cx=\"%lf\" cy=\"%lf\"", &cx, &cy), 2);
      assert_false(cx >= x && cx <= x + w && cy >= y && cy <= y + h);
    }
    assert_int_equal(circles, 30);
  }
  free(s);
}

static void test_bad_extension(void **state) {
  tu_lin l;
  tu_lin_make(&l, 8, 1);
  nnc_rt_dataset train;
  tu_lin_data(&train, 100);
  const char *p = tu_path(dir, "run.txt");
  nnc_rt_train_opts o = {.epochs = 1, .log_path = p};
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err), -1);
  char want[600];
  snprintf(want, sizeof want, "%s: unknown log format: the name must end in .csv, .jsonl or .json",
           p);
  assert_string_equal(err.msg, want);
  char svg[64];
  assert_int_equal(nnc_rt_log_svg_path(svg, sizeof svg, "out/run.v2.jsonl"), 0);
  assert_string_equal(svg, "out/run.v2.svg");
  assert_int_equal(nnc_rt_log_svg_path(svg, sizeof svg, "a.b/run"), 0);
  assert_string_equal(svg, "a.b/run.svg");
  nnc_rt_dataset_free(&train);
  tu_lin_free(&l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_csv_log),         cmocka_unit_test(test_jsonl_log),
      cmocka_unit_test(test_svg_next_to_log), cmocka_unit_test(test_plot_accuracy_and_repeats),
      cmocka_unit_test(test_plot_reads_well), cmocka_unit_test(test_bad_extension),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
