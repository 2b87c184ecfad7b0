/* metrics_log.c: the metrics log of a training run, written row by row and
 * read back to plot it.
 *
 * The format follows the file's extension: ".csv" gives CSV with a header
 *   kind,epoch,step,loss,accuracy,val_loss,val_accuracy,lr,samples_per_s,wall_s
 * and ".jsonl" or ".json" gives JSON lines, one object per row with the same
 * keys. kind is "epoch" for the summary after each epoch (loss/accuracy: the
 * epoch's training means; val_*: the evaluation set) or "step" for the rows
 * every N steps (loss/accuracy: means over the steps since the previous
 * row; no val_*). epoch is 1-based (the epoch the row belongs to), step the
 * number of optimizer steps done, lr the learning rate the model last
 * reported, wall_s seconds since the run began (continuing across a resume).
 * A value that does not exist is an empty CSV cell or JSON null. Each row is
 * flushed when written, so a crash loses at most the row being written and
 * `tail -f` works. A resumed run appends.
 */
#include "rt_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const COLUMNS[] = {"kind",          "epoch",    "step",         "loss",
                                      "accuracy",      "val_loss", "val_accuracy", "lr",
                                      "samples_per_s", "wall_s"};
enum { NCOLUMNS = sizeof COLUMNS / sizeof COLUMNS[0] };

static int log_kind(const char *path, int *jsonl, nnc_rt_error *err) {
  const char *dot = strrchr(path, '.');
  if (dot && strcmp(dot, ".csv") == 0) return *jsonl = 0, 0;
  if (dot && (strcmp(dot, ".jsonl") == 0 || strcmp(dot, ".json") == 0)) return *jsonl = 1, 0;
  return nnc_rt_fail(err, "%s: unknown log format: the name must end in .csv, .jsonl or .json",
                     path);
}

int nnc_rt_log_open(nnc_rt_log *log, const char *path, int append, nnc_rt_error *err) {
  *log = (nnc_rt_log){.path = path};
  if (log_kind(path, &log->jsonl, err)) return -1;
  log->f = fopen(path, append ? "a" : "w");
  if (!log->f) return nnc_rt_fail(err, "%s: cannot open the log: %s", path, strerror(errno));
  if (!log->jsonl && ftell(log->f) == 0) {
    for (int i = 0; i < NCOLUMNS; i++)
      fprintf(log->f, "%s%s", i ? "," : "", COLUMNS[i]);
    fputc('\n', log->f);
  }
  return 0;
}

/* One number, or the format's "missing": doubles with 10 significant
 * digits; an f32 value (the learning rate) with the fewest digits that read
 * back as the same float, so 0.05f prints as 0.05. */
static void put_num(FILE *f, int jsonl, double v, int is_f32) {
  if (!isfinite(v)) {
    if (jsonl) fputs("null", f);
    return;
  }
  char buf[32];
  for (int digits = is_f32 ? 6 : 10; digits <= 10; digits++) {
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (!is_f32 || (float)strtod(buf, NULL) == (float)v) break;
  }
  fputs(buf, f);
}

int nnc_rt_log_write(nnc_rt_log *log, const nnc_rt_log_row *r, nnc_rt_error *err) {
  if (!log->f) return 0;
  const double values[] = {r->loss, r->acc,           r->val_loss, r->val_acc,
                           r->lr,   r->samples_per_s, r->wall_s};
  const char *kind = r->is_epoch ? "epoch" : "step";
  if (log->jsonl)
    fprintf(log->f, "{\"kind\":\"%s\",\"epoch\":%lld,\"step\":%lld", kind, (long long)r->epoch,
            (long long)r->step);
  else
    fprintf(log->f, "%s,%lld,%lld", kind, (long long)r->epoch, (long long)r->step);
  for (int i = 0; i < 7; i++) {
    if (log->jsonl)
      fprintf(log->f, ",\"%s\":", COLUMNS[3 + i]);
    else
      fputc(',', log->f);
    put_num(log->f, log->jsonl, values[i], i == 4);
  }
  fputs(log->jsonl ? "}\n" : "\n", log->f);
  if (fflush(log->f) != 0 || ferror(log->f))
    return nnc_rt_fail(err, "%s: cannot write the log: %s", log->path, strerror(errno));
  return 0;
}

int nnc_rt_log_close(nnc_rt_log *log, nnc_rt_error *err) {
  if (!log->f) return 0;
  int bad = fclose(log->f);
  log->f = NULL;
  return bad ? nnc_rt_fail(err, "%s: cannot write the log: %s", log->path, strerror(errno)) : 0;
}

/* ---- Reading back ---- */

static double cell_value(const char *b, const char *e) {
  if (b == e) return NAN;
  char buf[64];
  size_t n = (size_t)(e - b) < sizeof buf - 1 ? (size_t)(e - b) : sizeof buf - 1;
  memcpy(buf, b, n);
  buf[n] = 0;
  return strtod(buf, NULL);
}

/* Stores value v of column `col` into row r. */
static void set_column(nnc_rt_log_row *r, int col, double v) {
  switch (col) {
  case 1: r->epoch = (int64_t)v; break;
  case 2: r->step = (int64_t)v; break;
  case 3: r->loss = v; break;
  case 4: r->acc = v; break;
  case 5: r->val_loss = v; break;
  case 6: r->val_acc = v; break;
  case 7: r->lr = v; break;
  case 8: r->samples_per_s = v; break;
  case 9: r->wall_s = v; break;
  }
}

static nnc_rt_log_row empty_row(void) {
  return (nnc_rt_log_row){.loss = NAN,
                          .acc = NAN,
                          .val_loss = NAN,
                          .val_acc = NAN,
                          .lr = NAN,
                          .samples_per_s = NAN,
                          .wall_s = NAN};
}

/* A CSV line into r by the header's column order; 1 if it is an epoch row. */
static int csv_row(const int *cols, int ncols, const char *b, const char *e, nnc_rt_log_row *r) {
  *r = empty_row();
  int is_epoch = 0;
  for (int c = 0; c < ncols && b <= e; c++) {
    const char *comma = memchr(b, ',', (size_t)(e - b));
    if (!comma) comma = e;
    if (cols[c] == 0)
      is_epoch = comma - b == 5 && memcmp(b, "epoch", 5) == 0;
    else if (cols[c] > 0)
      set_column(r, cols[c], cell_value(b, comma));
    b = comma + 1;
  }
  return r->is_epoch = is_epoch;
}

static int json_row(const char *b, const char *e, int64_t off, const char *path, nnc_rt_log_row *r,
                    nnc_rt_error *err) {
  nnc_rt_json v;
  *r = empty_row();
  if (nnc_rt_json_parse(&v, b, (size_t)(e - b), off, path, err)) return -1;
  const nnc_rt_json *kind = nnc_rt_json_get(&v, "kind");
  r->is_epoch = kind && kind->kind == NNC_RT_JSON_STRING && strcmp(kind->string, "epoch") == 0;
  for (int c = 1; c < NCOLUMNS; c++) {
    const nnc_rt_json *x = nnc_rt_json_get(&v, COLUMNS[c]);
    if (x && x->kind == NNC_RT_JSON_NUMBER) set_column(r, c, x->number);
  }
  nnc_rt_json_free(&v);
  return 0;
}

/* Adds r, replacing a row of the same epoch. */
static int add_row(nnc_rt_log_row **rows, int *n, const nnc_rt_log_row *r) {
  for (int i = 0; i < *n; i++)
    if ((*rows)[i].epoch == r->epoch) return (*rows)[i] = *r, 0;
  nnc_rt_log_row *more = realloc(*rows, (size_t)(*n + 1) * sizeof *more);
  if (!more) return -1;
  *rows = more;
  more[(*n)++] = *r;
  return 0;
}

static int by_epoch(const void *a, const void *b) {
  int64_t x = ((const nnc_rt_log_row *)a)->epoch, y = ((const nnc_rt_log_row *)b)->epoch;
  return (x > y) - (x < y);
}

/* The CSV header: the COLUMNS index of each of its cells (-1: unknown). */
static int csv_header(const char *b, const char *e, int *cols) {
  int n = 0;
  while (b <= e && n < 32) {
    const char *comma = memchr(b, ',', (size_t)(e - b));
    if (!comma) comma = e;
    cols[n] = -1;
    for (int c = 0; c < NCOLUMNS; c++)
      if ((size_t)(comma - b) == strlen(COLUMNS[c]) &&
          memcmp(b, COLUMNS[c], strlen(COLUMNS[c])) == 0)
        cols[n] = c;
    n++;
    b = comma + 1;
  }
  return n;
}

int nnc_rt_log_read_epochs(const char *path, nnc_rt_log_row **rows, int *nrows, nnc_rt_error *err) {
  *rows = NULL;
  *nrows = 0;
  int jsonl = 0, cols[32], ncols = 0, rc = 0;
  char *text;
  size_t len;
  if (log_kind(path, &jsonl, err) || nnc_rt_read_file(path, &text, &len, err)) return -1;
  for (const char *b = text, *end = text + len; rc == 0 && b < end;) {
    const char *e = memchr(b, '\n', (size_t)(end - b));
    if (!e) e = end;
    nnc_rt_log_row r;
    if (e == b) {
      /* empty line */
    } else if (!jsonl && ncols == 0) {
      ncols = csv_header(b, e, cols);
    } else if (jsonl) {
      if (json_row(b, e, b - text, path, &r, err))
        rc = -1;
      else if (r.is_epoch && add_row(rows, nrows, &r))
        rc = nnc_rt_fail(err, "%s: out of memory", path);
    } else if (csv_row(cols, ncols, b, e, &r) && add_row(rows, nrows, &r)) {
      rc = nnc_rt_fail(err, "%s: out of memory", path);
    }
    b = e + 1;
  }
  free(text);
  if (rc) {
    free(*rows);
    *rows = NULL;
    *nrows = 0;
    return -1;
  }
  qsort(*rows, (size_t)*nrows, sizeof **rows, by_epoch);
  return 0;
}
