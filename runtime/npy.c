/* npy.c: loads NumPy .npy arrays into an nnc_rt_dataset.
 *
 * A .npy file is the magic "\x93NUMPY", a major and minor version byte, the
 * header length (u16 little-endian in version 1.0, u32 in 2.0 and 3.0), a
 * header that is a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 28, 28), }
 * and the raw elements. Accepted: versions 1.0, 2.0 and 3.0; descr '<f4',
 * '<f8', '|u1' (or '<u1'), '<i4', '<i8' (little-endian; '|' for bytes);
 * fortran_order False only. Everything else — another dtype, big-endian
 * data, Fortran order, a malformed header, a data section of the wrong
 * size — is an error naming the file and the byte offset where the problem
 * is. Features [n, d1, ...] become n samples of shape [d1, ...] ([1] for a
 * 1-D file); labels are [n] class labels (whole numbers >= 0, any dtype) or
 * [n] / [n, k] f32 targets; both files must agree on n. Features and
 * targets must be finite (also after conversion to f32).
 */
#include "rt_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef enum npy_dtype { NPY_F4, NPY_F8, NPY_U1, NPY_I4, NPY_I8 } npy_dtype;

typedef struct npy_array {
  const char *path;
  npy_dtype dtype;
  int itemsize;
  int rank;
  int64_t shape[NNC_RT_MAX_RANK + 1];
  int64_t count;      /* elements */
  const char *data;   /* into the file bytes */
  int64_t data_start; /* byte offset of the data */
} npy_array;

/* A cursor over the header dict with file offsets for messages. */
typedef struct npy_header {
  const char *s;
  size_t len, pos;
  int64_t base;
  const char *path;
  nnc_rt_error *err;
} npy_header;

static int hfail(npy_header *h, const char *what) {
  return nnc_rt_fail(h->err, "%s: byte %lld: %s", h->path, (long long)(h->base + (int64_t)h->pos),
                     what);
}

static void hskip(npy_header *h) {
  while (h->pos < h->len && (h->s[h->pos] == ' ' || h->s[h->pos] == '\n'))
    h->pos++;
}

static int hchar(npy_header *h, char c) {
  hskip(h);
  if (h->pos < h->len && h->s[h->pos] == c) return h->pos++, 1;
  return 0;
}

/* A quoted string ('...' or "...") into buf. */
static int hstring(npy_header *h, char *buf, size_t size) {
  hskip(h);
  char q = h->pos < h->len ? h->s[h->pos] : 0;
  if (q != '\'' && q != '"') return hfail(h, "expected a quoted string in the header");
  size_t start = ++h->pos;
  while (h->pos < h->len && h->s[h->pos] != q)
    h->pos++;
  if (h->pos >= h->len || h->pos - start >= size) return hfail(h, "bad string in the header");
  memcpy(buf, h->s + start, h->pos - start);
  buf[h->pos - start] = 0;
  h->pos++;
  return 0;
}

static int parse_descr(npy_header *h, npy_array *a) {
  static const struct {
    const char *name;
    npy_dtype dtype;
    int size;
  } ok[] = {{"<f4", NPY_F4, 4}, {"<f8", NPY_F8, 8}, {"|u1", NPY_U1, 1},
            {"<u1", NPY_U1, 1}, {"<i4", NPY_I4, 4}, {"<i8", NPY_I8, 8}};
  char d[32];
  hskip(h);
  int64_t at = h->base + (int64_t)h->pos;
  if (hstring(h, d, sizeof d)) return -1;
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    if (strcmp(d, ok[i].name) == 0) {
      a->dtype = ok[i].dtype;
      a->itemsize = ok[i].size;
      return 0;
    }
  return nnc_rt_fail(h->err,
                     "%s: byte %lld: dtype '%s' is not supported (use float32 '<f4', float64 "
                     "'<f8', uint8 '|u1', int32 '<i4' or int64 '<i8', little-endian)",
                     h->path, (long long)at, d);
}

static int parse_shape(npy_header *h, npy_array *a) {
  if (!hchar(h, '(')) return hfail(h, "expected '(' to start the shape");
  a->rank = 0;
  a->count = 1;
  while (!hchar(h, ')')) {
    hskip(h);
    if (a->rank > NNC_RT_MAX_RANK) return hfail(h, "shape has more than 9 dimensions");
    char *end;
    long long d = strtoll(h->s + h->pos, &end, 10);
    if (end == h->s + h->pos || d < 0) return hfail(h, "expected a dimension size");
    h->pos = (size_t)(end - h->s);
    a->shape[a->rank++] = d;
    a->count = nnc_rt_checked_mul(a->count, d);
    if (a->count < 0) return hfail(h, "shape too large (over 2^40 elements)");
    if (!hchar(h, ',') && !(hskip(h), h->pos < h->len && h->s[h->pos] == ')'))
      return hfail(h, "expected ',' or ')' in the shape");
  }
  return 0;
}

/* The dict: keys descr, fortran_order, shape in any order, each once. */
static int parse_dict(npy_header *h, npy_array *a) {
  int seen = 0;
  if (!hchar(h, '{')) return hfail(h, "header does not start with '{'");
  while (!hchar(h, '}')) {
    char key[32];
    if (hstring(h, key, sizeof key)) return -1;
    if (!hchar(h, ':')) return hfail(h, "expected ':' after a key");
    hskip(h);
    if (strcmp(key, "descr") == 0) {
      if (parse_descr(h, a)) return -1;
      seen |= 1;
    } else if (strcmp(key, "fortran_order") == 0) {
      if (h->len - h->pos >= 4 && memcmp(h->s + h->pos, "True", 4) == 0)
        return hfail(h, "fortran_order is True: only C-order arrays are supported "
                        "(save np.ascontiguousarray(a))");
      if (h->len - h->pos < 5 || memcmp(h->s + h->pos, "False", 5) != 0)
        return hfail(h, "fortran_order must be True or False");
      h->pos += 5;
      seen |= 2;
    } else if (strcmp(key, "shape") == 0) {
      if (parse_shape(h, a)) return -1;
      seen |= 4;
    } else {
      return hfail(h, "unknown key in the header");
    }
    if (!hchar(h, ',') && !(hskip(h), h->pos < h->len && h->s[h->pos] == '}'))
      return hfail(h, "expected ',' or '}' in the header");
  }
  if (seen != 7) return hfail(h, "header lacks 'descr', 'fortran_order' or 'shape'");
  return 0;
}

static int read_npy(npy_array *a, const char *bytes, size_t len, const char *path,
                    nnc_rt_error *err) {
  memset(a, 0, sizeof *a);
  a->path = path;
  if (len < 10 || memcmp(bytes, "\x93NUMPY", 6) != 0)
    return nnc_rt_fail(err, "%s: byte 0: not a .npy file (no \\x93NUMPY magic)", path);
  int major = (unsigned char)bytes[6], minor = (unsigned char)bytes[7];
  if (major < 1 || major > 3 || minor != 0)
    return nnc_rt_fail(err, "%s: byte 6: .npy format version %d.%d (1.0, 2.0 and 3.0 load)", path,
                       major, minor);
  size_t hl_size = major == 1 ? 2 : 4, hlen = 0;
  if (len < 8 + hl_size)
    return nnc_rt_fail(err, "%s: byte %zu: file ends inside the header length", path, len);
  for (size_t i = 0; i < hl_size; i++)
    hlen |= (size_t)(unsigned char)bytes[8 + i] << (8 * i);
  size_t start = 8 + hl_size;
  if (hlen > len - start)
    return nnc_rt_fail(err, "%s: byte 8: header length %zu runs past the end of the file", path,
                       hlen);
  npy_header h = {bytes + start, hlen, 0, (int64_t)start, path, err};
  if (parse_dict(&h, a)) return -1;
  a->data_start = (int64_t)(start + hlen);
  a->data = bytes + a->data_start;
  int64_t want = a->count * a->itemsize, have = (int64_t)len - a->data_start;
  if (have != want)
    return nnc_rt_fail(
        err, "%s: byte %lld: %s: the shape needs %lld bytes of data, the file has %lld", path,
        (long long)(have < want ? (int64_t)len : a->data_start + want),
        have < want ? "file ends early" : "data after the array", (long long)want, (long long)have);
  return 0;
}

static double element(const npy_array *a, int64_t i) {
  const char *p = a->data + i * a->itemsize;
  float f;
  double d;
  int32_t i4;
  int64_t i8;
  switch (a->dtype) {
  case NPY_F4: memcpy(&f, p, 4); return f;
  case NPY_F8: memcpy(&d, p, 8); return d;
  case NPY_U1: return (unsigned char)*p;
  case NPY_I4: memcpy(&i4, p, 4); return i4;
  case NPY_I8: memcpy(&i8, p, 8); return (double)i8;
  }
  return 0;
}

/* Converts every element to f32 into dst; NaN and infinities (which CSV
 * refuses too) are errors naming the sample, the element and its byte, not
 * a "loss became NaN" epochs later. per_sample: elements per sample. */
static int convert_finite(const npy_array *a, float *dst, int64_t per_sample, const char *what,
                          nnc_rt_error *err) {
  for (int64_t i = 0; i < a->count; i++) {
    double v = element(a, i);
    if (!isfinite(v) || !isfinite((float)v))
      return nnc_rt_fail(err, "%s: byte %lld: sample %lld, %s %lld is %g (only finite values load)",
                         a->path, (long long)(a->data_start + i * a->itemsize),
                         (long long)(i / per_sample), what, (long long)(i % per_sample), v);
    dst[i] = (float)v;
  }
  return 0;
}

static int load_features(nnc_rt_dataset *ds, const npy_array *a, nnc_rt_error *err) {
  if (a->rank < 1)
    return nnc_rt_fail(err, "%s: a 0-dimensional array cannot hold samples", a->path);
  ds->n = a->shape[0];
  ds->rank = a->rank == 1 ? 1 : a->rank - 1;
  ds->shape[0] = 1;
  for (int i = 1; i < a->rank; i++)
    ds->shape[i - 1] = a->shape[i];
  ds->sample_size = nnc_rt_checked_numel(a->rank - 1, a->shape + 1);
  ds->x = malloc((size_t)(a->count ? a->count : 1) * sizeof(float));
  if (!ds->x) return nnc_rt_fail(err, "%s: out of memory", a->path);
  return convert_finite(a, ds->x, ds->sample_size, "feature", err);
}

static int load_labels(nnc_rt_dataset *ds, const npy_array *a, int is_class, const char *x_path,
                       nnc_rt_error *err) {
  if (a->rank < 1 || a->shape[0] != ds->n)
    return nnc_rt_fail(err, "%s: %lld labels, but %s has %lld samples", a->path,
                       (long long)(a->rank ? a->shape[0] : 0), x_path, (long long)ds->n);
  if (is_class) {
    if (a->rank != 1)
      return nnc_rt_fail(err, "%s: class labels must be 1-dimensional [n], not %d-dimensional",
                         a->path, a->rank);
    ds->labels = malloc((size_t)(ds->n ? ds->n : 1) * sizeof(int32_t));
    if (!ds->labels) return nnc_rt_fail(err, "%s: out of memory", a->path);
    for (int64_t i = 0; i < ds->n; i++) {
      double v = element(a, i);
      if (!(v >= 0) || v != floor(v) || v > INT32_MAX - 1)
        return nnc_rt_fail(err, "%s: byte %lld: label %lld is %g, not a whole number >= 0", a->path,
                           (long long)(a->data_start + i * a->itemsize), (long long)i, v);
      ds->labels[i] = (int32_t)v;
      if (ds->labels[i] + 1 > ds->num_classes) ds->num_classes = ds->labels[i] + 1;
    }
    return 0;
  }
  if (a->rank > 2)
    return nnc_rt_fail(err, "%s: targets must be [n] or [n, k], not %d-dimensional", a->path,
                       a->rank);
  ds->target_size = a->rank == 2 ? a->shape[1] : 1;
  ds->targets = malloc((size_t)(a->count ? a->count : 1) * sizeof(float));
  if (!ds->targets) return nnc_rt_fail(err, "%s: out of memory", a->path);
  return convert_finite(a, ds->targets, ds->target_size, "target", err);
}

int nnc_rt_load_npy(nnc_rt_dataset *ds, const char *x_path, const char *y_path, int label_is_class,
                    nnc_rt_error *err) {
  *ds = (nnc_rt_dataset){0};
  char *xb = NULL, *yb = NULL;
  size_t xl, yl;
  npy_array xa, ya;
  int rc = nnc_rt_read_file(x_path, &xb, &xl, err);
  if (rc == 0) rc = read_npy(&xa, xb, xl, x_path, err);
  if (rc == 0) rc = nnc_rt_read_file(y_path, &yb, &yl, err);
  if (rc == 0) rc = read_npy(&ya, yb, yl, y_path, err);
  if (rc == 0) rc = load_features(ds, &xa, err);
  if (rc == 0) rc = load_labels(ds, &ya, label_is_class, x_path, err);
  free(xb);
  free(yb);
  if (rc) nnc_rt_dataset_free(ds);
  return rc;
}
