/* csv.c: loads a CSV file of numbers into an nnc_rt_dataset.
 *
 * One sample per row, cells separated by commas; one column (label_column,
 * negative counting from the end) is the label, the others, in order, the
 * features of a rank-1 sample. The caller says whether labels are integer
 * classes (whole numbers >= 0, num_classes = largest + 1) or one f32 target.
 * An optional header row is skipped. Cells may have spaces or tabs around
 * them; CRLF line ends and a missing final newline are fine; empty lines are
 * skipped. Everything else is an error naming the file, the row (the line
 * number in the file, 1-based, header included) and the column (1-based):
 *   "d.csv: row 3, column 2: expected a number, got 'abc'"
 * Quoted cells, NaN, infinities and cells with a NUL byte inside are not
 * numbers here. When the caller gives the model's class count, a class
 * label at or above it is an error at its row. Every row must
 * have as many cells as the first data row.
 */
#include "rt_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct csv_reader {
  const char *path;
  const char *p, *end; /* the unread text */
  int64_t row;         /* line number of the current line */
  nnc_rt_error *err;
} csv_reader;

/* The next line (without its end) into [*b, *e); 0 at end of file. */
static int next_line(csv_reader *r, const char **b, const char **e) {
  if (r->p >= r->end) return 0;
  const char *nl = memchr(r->p, '\n', (size_t)(r->end - r->p));
  *b = r->p;
  *e = nl ? nl : r->end;
  r->p = nl ? nl + 1 : r->end;
  if (*e > *b && (*e)[-1] == '\r') (*e)--;
  r->row++;
  return 1;
}

static int blank(const char *b, const char *e) {
  for (; b < e; b++)
    if (*b != ' ' && *b != '\t') return 0;
  return 1;
}

static int64_t count_cells(const char *b, const char *e) {
  int64_t n = 1;
  for (; b < e; b++)
    n += *b == ',';
  return n;
}

/* Parses the cell [b, e) as a finite number. */
static int cell_number(csv_reader *r, int64_t col, const char *b, const char *e, double *out) {
  while (b < e && (*b == ' ' || *b == '\t'))
    b++;
  while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
    e--;
  char buf[64];
  size_t n = (size_t)(e - b);
  if (n > 0 && n < sizeof buf) {
    memcpy(buf, b, n);
    buf[n] = 0;
    char *stop;
    errno = 0;
    double v = strtod(buf, &stop);
    /* stop must reach the cell's end: a NUL inside the cell ends buf early. */
    if (stop == buf + n && isfinite(v)) {
      /* Features and targets are stored as float: 1e39 would become inf. */
      if (!isfinite((float)v))
        return nnc_rt_fail(r->err,
                           "%s: row %lld, column %lld: %.*s is too large for a 32-bit float "
                           "(at most 3.4e38)",
                           r->path, (long long)r->row, (long long)col + 1, n > 40 ? 40 : (int)n, b);
      *out = v;
      return 0;
    }
  }
  return nnc_rt_fail(r->err, "%s: row %lld, column %lld: expected a number, got '%.*s'", r->path,
                     (long long)r->row, (long long)col + 1, n > 40 ? 40 : (int)n, b);
}

typedef struct csv_shape {
  int64_t ncols, label; /* label: 0-based column */
  int is_class;
  int32_t num_classes; /* labels must be below it; 0: any */
} csv_shape;

/* Stores one row's cells: features into x, the label into ds. */
static int parse_row(csv_reader *r, const csv_shape *s, const char *b, const char *e,
                     nnc_rt_dataset *ds, int64_t i) {
  int64_t ncells = count_cells(b, e);
  if (ncells != s->ncols)
    return nnc_rt_fail(r->err, "%s: row %lld: %lld columns, but the first data row has %lld",
                       r->path, (long long)r->row, (long long)ncells, (long long)s->ncols);
  float *x = ds->x + i * ds->sample_size;
  for (int64_t col = 0; col < s->ncols; col++) {
    const char *c = memchr(b, ',', (size_t)(e - b));
    if (!c) c = e;
    double v = 0;
    if (cell_number(r, col, b, c, &v)) return -1;
    if (col != s->label) {
      *x++ = (float)v;
    } else if (!s->is_class) {
      ds->targets[i] = (float)v;
    } else if (v < 0 || v != floor(v) || v > INT32_MAX - 1) {
      return nnc_rt_fail(r->err,
                         "%s: row %lld, column %lld: a class label must be a whole number >= 0, "
                         "got '%.*s'",
                         r->path, (long long)r->row, (long long)col + 1, (int)(c - b), b);
    } else if (s->num_classes > 0 && v >= s->num_classes) {
      return nnc_rt_fail(r->err,
                         "%s: row %lld, column %lld: class label %.0f is outside 0..%d (the model "
                         "has %d classes)",
                         r->path, (long long)r->row, (long long)col + 1, v, s->num_classes - 1,
                         s->num_classes);
    } else {
      ds->labels[i] = (int32_t)v;
      if (ds->labels[i] + 1 > ds->num_classes) ds->num_classes = ds->labels[i] + 1;
    }
    b = c + 1;
  }
  return 0;
}

/* Data rows in the rest of the file (upper bound: lines). */
static int64_t count_lines(const char *p, const char *end) {
  int64_t n = 1;
  for (; p < end; p++)
    n += *p == '\n';
  return n;
}

static int setup(csv_reader *r, csv_shape *s, const nnc_rt_csv_opts *o, const char *b,
                 const char *e, nnc_rt_dataset *ds) {
  s->ncols = count_cells(b, e);
  s->is_class = o->label_is_class;
  s->num_classes = o->num_classes;
  s->label = o->label_column < 0 ? s->ncols + o->label_column : o->label_column;
  if (s->ncols < 2)
    return nnc_rt_fail(r->err, "%s: row %lld: need at least 2 columns (features and a label)",
                       r->path, (long long)r->row);
  if (s->label < 0 || s->label >= s->ncols)
    return nnc_rt_fail(r->err, "%s: label column %lld does not exist: rows have %lld columns",
                       r->path, (long long)o->label_column, (long long)s->ncols);
  int64_t cap = count_lines(b, r->end), cells = nnc_rt_checked_mul(cap, s->ncols - 1);
  if (cells < 0)
    return nnc_rt_fail(r->err, "%s: row %lld: %lld rows of %lld columns is too much data", r->path,
                       (long long)r->row, (long long)cap, (long long)s->ncols);
  ds->rank = 1;
  ds->shape[0] = ds->sample_size = s->ncols - 1;
  ds->x = malloc((size_t)cells * sizeof(float));
  if (s->is_class)
    ds->labels = malloc((size_t)cap * sizeof(int32_t));
  else
    ds->targets = malloc((size_t)cap * sizeof(float)), ds->target_size = 1;
  if (!ds->x || !(ds->labels || ds->targets))
    return nnc_rt_fail(r->err, "%s: out of memory for %lld rows", r->path, (long long)cap);
  return 0;
}

int nnc_rt_load_csv(nnc_rt_dataset *ds, const char *path, const nnc_rt_csv_opts *opts,
                    nnc_rt_error *err) {
  nnc_rt_csv_opts defaults = {.label_column = -1, .label_is_class = 1};
  if (!opts) opts = &defaults;
  *ds = (nnc_rt_dataset){0};
  char *text;
  size_t len;
  if (nnc_rt_read_file(path, &text, &len, err)) return -1;
  csv_reader r = {.path = path, .p = text, .end = text + len, .err = err};
  csv_shape s = {0};
  const char *b, *e;
  int rc = 0;
  if (opts->header) next_line(&r, &b, &e);
  while (rc == 0 && next_line(&r, &b, &e)) {
    if (blank(b, e)) continue;
    if (!ds->x) rc = setup(&r, &s, opts, b, e, ds);
    if (rc == 0) rc = parse_row(&r, &s, b, e, ds, ds->n++);
  }
  if (rc == 0 && ds->n == 0) rc = nnc_rt_fail(err, "%s: no data rows", path);
  free(text);
  if (rc) nnc_rt_dataset_free(ds);
  return rc;
}
