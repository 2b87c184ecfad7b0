/* safetensors.c: the safetensors file format, below the model: reading and
 * validating a file, and writing one atomically. checkpoint.c maps a
 * model's tensors onto it.
 *
 * Layout: 8 bytes little-endian u64 N, N bytes of JSON header (a single
 * object; may be padded with trailing spaces), then the data section. Each
 * header key but "__metadata__" names a tensor: {"dtype": "F32", "shape":
 * [d0, ...], "data_offsets": [begin, end]}, offsets relative to the data
 * section; "__metadata__" maps strings to strings. Reading checks every
 * entry: known keys only, a shape of non-negative integers (rank <= 8), end
 * - begin == elements * dtype size, the range inside the file. Any dtype
 * parses; only F32 and F64 can be read as values (the caller decides).
 *
 * Writing goes to "path.tmp.<pid>", one write() per chunk of at most 1 MB, then
 * fsync, close, rename over path and fsync of the folder. Every one of those
 * system calls first consults the caller's nnc_rt_io_hooks, so tests can
 * make the Nth fail with any errno. A failure before the rename unlinks the
 * temporary file and leaves path as it was; after the rename the new file is
 * complete and only its durability is in question (reported as an error).
 */
#include "rt_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The reference implementation refuses headers over 100 MB. */
static const uint64_t ST_MAX_HEADER = 100000000;
enum { ST_WRITE_CHUNK = 1 << 20 };

static int entry_fail(const char *path, const nnc_rt_json *at, const char *name, const char *what,
                      nnc_rt_error *err) {
  return nnc_rt_fail(err, "%s: byte %lld: tensor '%s': %s", path, (long long)at->offset, name,
                     what);
}

static int parse_dtype(nnc_rt_st_entry *e, const nnc_rt_json *d, int *size, const char *path,
                       nnc_rt_error *err) {
  static const struct {
    const char *name;
    int size;
  } dtypes[] = {{"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
                {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
                {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  if (!d || d->kind != NNC_RT_JSON_STRING)
    return entry_fail(path, d ? d : &(nnc_rt_json){0}, e->name, "\"dtype\" must be a string", err);
  for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
    if (strcmp(d->string, dtypes[i].name) == 0) {
      e->dtype_name = dtypes[i].name;
      e->dtype = i == 0 ? NNC_RT_ST_F64 : i == 1 ? NNC_RT_ST_F32 : NNC_RT_ST_OTHER;
      *size = dtypes[i].size;
      return 0;
    }
  char what[96];
  snprintf(what, sizeof what, "unknown dtype \"%.40s\"", d->string);
  return entry_fail(path, d, e->name, what, err);
}

/* A JSON array of n..m non-negative integers into out; count in *got. */
static int int_array(const nnc_rt_json *a, int64_t *out, int max, int *got, const char *field,
                     const char *name, const char *path, nnc_rt_error *err) {
  char what[96];
  snprintf(what, sizeof what, "\"%s\" must be an array of at most %d non-negative integers", field,
           max);
  if (!a || a->kind != NNC_RT_JSON_ARRAY || a->n > max)
    return entry_fail(path, a ? a : &(nnc_rt_json){0}, name, what, err);
  for (int i = 0; i < a->n; i++) {
    if (!a->items[i].is_integer || a->items[i].integer < 0)
      return entry_fail(path, &a->items[i], name, what, err);
    out[i] = a->items[i].integer;
  }
  *got = a->n;
  return 0;
}

static int parse_entry(nnc_rt_st_file *f, int i, const char *path, nnc_rt_error *err) {
  const nnc_rt_json *v = &f->header.items[i];
  nnc_rt_st_entry *e = &f->entries[f->nentries];
  e->name = f->header.keys[i];
  if (v->kind != NNC_RT_JSON_OBJECT)
    return entry_fail(path, v, e->name, "expected an object with dtype, shape, data_offsets", err);
  for (int k = 0; k < v->n; k++)
    if (strcmp(v->keys[k], "dtype") && strcmp(v->keys[k], "shape") &&
        strcmp(v->keys[k], "data_offsets"))
      return entry_fail(path, &v->items[k], e->name, "unknown field", err);
  int size = 0, n = 0;
  int64_t offs[2];
  if (parse_dtype(e, nnc_rt_json_get(v, "dtype"), &size, path, err)) return -1;
  if (int_array(nnc_rt_json_get(v, "shape"), e->shape, NNC_RT_MAX_RANK, &e->rank, "shape", e->name,
                path, err))
    return -1;
  const nnc_rt_json *o = nnc_rt_json_get(v, "data_offsets");
  if (int_array(o, offs, 2, &n, "data_offsets", e->name, path, err)) return -1;
  if (n != 2) return entry_fail(path, o, e->name, "\"data_offsets\" must be [begin, end]", err);
  e->begin = offs[0], e->end = offs[1];
  int64_t bytes = nnc_rt_checked_mul(nnc_rt_checked_numel(e->rank, e->shape), size),
          data_len = (int64_t)f->len - f->data_start;
  if (bytes < 0) return entry_fail(path, o, e->name, "shape too large (over 2^40 elements)", err);
  char what[200];
  if (e->end < e->begin || e->end - e->begin != bytes) {
    snprintf(what, sizeof what, "data_offsets [%lld, %lld] hold %lld bytes, the shape needs %lld",
             (long long)e->begin, (long long)e->end, (long long)(e->end - e->begin),
             (long long)bytes);
    return entry_fail(path, o, e->name, what, err);
  }
  if (e->end > data_len) {
    snprintf(what, sizeof what, "data ends at byte %lld, past the end of the file (%zu bytes)",
             (long long)(f->data_start + e->end), f->len);
    return entry_fail(path, o, e->name, what, err);
  }
  f->nentries++;
  return 0;
}

static int check_metadata(const nnc_rt_json *m, const char *path, nnc_rt_error *err) {
  if (m->kind != NNC_RT_JSON_OBJECT)
    return nnc_rt_fail(err, "%s: byte %lld: \"__metadata__\" must be an object", path,
                       (long long)m->offset);
  for (int i = 0; i < m->n; i++)
    if (m->items[i].kind != NNC_RT_JSON_STRING)
      return nnc_rt_fail(err, "%s: byte %lld: metadata value of \"%s\" must be a string", path,
                         (long long)m->items[i].offset, m->keys[i]);
  return 0;
}

static int read_header(nnc_rt_st_file *f, const char *path, nnc_rt_error *err) {
  if (f->len < 8)
    return nnc_rt_fail(err, "%s: byte %zu: file ends inside the 8-byte header length", path,
                       f->len);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--)
    n = n << 8 | (unsigned char)f->bytes[i];
  /* A file of another kind fails one of these first checks: say so before
   * the detail (its first 8 bytes read as a length are text, not a size). */
  if (n < 2 || n > ST_MAX_HEADER)
    return nnc_rt_fail(err, "%s: byte 0: not a safetensors file: header length %llu is %s", path,
                       (unsigned long long)n, n < 2 ? "too small" : "over the 100 MB limit");
  if (n > f->len - 8)
    return nnc_rt_fail(err,
                       "%s: byte 0: not a safetensors file: header length %llu runs past the "
                       "end of the file (%zu bytes)",
                       path, (unsigned long long)n, f->len);
  if (f->bytes[8] != '{')
    return nnc_rt_fail(err, "%s: byte 8: not a safetensors file: the header must start with '{'",
                       path);
  f->data_start = 8 + (int64_t)n;
  if (nnc_rt_json_parse(&f->header, f->bytes + 8, (size_t)n, 8, path, err)) return -1;
  if (f->header.kind != NNC_RT_JSON_OBJECT)
    return nnc_rt_fail(err, "%s: byte 8: the header must be a JSON object", path);
  return 0;
}

static int check_duplicates(const nnc_rt_st_file *f, const char *path, nnc_rt_error *err) {
  for (int i = 0; i < f->header.n; i++)
    for (int j = 0; j < i; j++)
      if (strcmp(f->header.keys[i], f->header.keys[j]) == 0)
        return nnc_rt_fail(err, "%s: byte %lld: \"%s\" appears twice in the header", path,
                           (long long)f->header.items[i].offset, f->header.keys[i]);
  return 0;
}

int nnc_rt_st_read(nnc_rt_st_file *f, const char *path, nnc_rt_error *err) {
  memset(f, 0, sizeof *f);
  int rc = nnc_rt_read_file(path, &f->bytes, &f->len, err);
  if (rc == 0) rc = read_header(f, path, err);
  if (rc == 0) rc = check_duplicates(f, path, err);
  if (rc == 0 && f->header.n) {
    f->entries = calloc((size_t)f->header.n, sizeof *f->entries);
    if (!f->entries) rc = nnc_rt_fail(err, "%s: out of memory", path);
  }
  for (int i = 0; rc == 0 && i < f->header.n; i++) {
    if (strcmp(f->header.keys[i], "__metadata__") == 0) {
      f->metadata = &f->header.items[i];
      rc = check_metadata(f->metadata, path, err);
    } else {
      rc = parse_entry(f, i, path, err);
    }
  }
  if (rc) nnc_rt_st_free(f);
  return rc;
}

void nnc_rt_st_free(nnc_rt_st_file *f) {
  nnc_rt_json_free(&f->header);
  free(f->entries);
  free(f->bytes);
  memset(f, 0, sizeof *f);
}

const nnc_rt_st_entry *nnc_rt_st_find(const nnc_rt_st_file *f, const char *name) {
  for (int i = 0; i < f->nentries; i++)
    if (strcmp(f->entries[i].name, name) == 0) return &f->entries[i];
  return NULL;
}

const char *nnc_rt_st_meta(const nnc_rt_st_file *f, const char *key) {
  const nnc_rt_json *v = nnc_rt_json_get(f->metadata, key);
  return v ? v->string : NULL;
}

int64_t nnc_rt_st_first_nonfinite(const nnc_rt_st_file *f, const nnc_rt_st_entry *e,
                                  double *value) {
  const char *src = f->bytes + f->data_start + e->begin;
  int size = e->dtype == NNC_RT_ST_F64 ? 8 : 4;
  int64_t n = (e->end - e->begin) / size;
  for (int64_t i = 0; i < n; i++) {
    float x;
    double d;
    if (size == 4)
      memcpy(&x, src + 4 * i, 4), d = x;
    else
      memcpy(&d, src + 8 * i, 8);
    if (!isfinite(d) || !isfinite((float)d)) {
      *value = d;
      return i;
    }
  }
  return -1;
}

/* Data is little-endian; this runtime runs on little-endian machines only. */
void nnc_rt_st_read_f32(const nnc_rt_st_file *f, const nnc_rt_st_entry *e, float *dst) {
  const char *src = f->bytes + f->data_start + e->begin;
  int64_t n = (e->end - e->begin) / (e->dtype == NNC_RT_ST_F64 ? 8 : 4);
  if (e->dtype == NNC_RT_ST_F32) {
    memcpy(dst, src, (size_t)n * 4);
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    double d;
    memcpy(&d, src + 8 * i, 8);
    dst[i] = (float)d;
  }
}

/* ---- Writing ---- */

typedef struct st_writer {
  const nnc_rt_io_hooks *io;
  int64_t call; /* index of the next write-class system call */
  const char *path;
  nnc_rt_error *err;
} st_writer;

/* Asks the hook whether the next system call should fail; returns the errno
 * to fail with, or 0. */
static int injected(st_writer *w, const char *what) {
  int64_t call = w->call++;
  return w->io && w->io->fail ? w->io->fail(w->io->user, call, what) : 0;
}

static int write_all(st_writer *w, int fd, const char *tmp, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    size_t chunk = len < ST_WRITE_CHUNK ? len : ST_WRITE_CHUNK;
    int e = injected(w, "write");
    ssize_t n = e ? -1 : write(fd, p, chunk);
    if (n < 0 && !e) e = errno;
    if (e == EINTR) continue;
    if (n < 0) return nnc_rt_fail(w->err, "%s: cannot write: %s", tmp, strerror(e));
    if (n == 0) return nnc_rt_fail(w->err, "%s: cannot write: no progress", tmp);
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes. */
static char *make_header(const nnc_rt_st_out *t, int nt, const char *const *meta, int nmeta,
                         size_t *hlen) {
  size_t cap = 256 + (size_t)nt * 256, len = 0;
  for (int i = 0; i < nt; i++)
    cap += 6 * strlen(t[i].name);
  for (int i = 0; i < 2 * nmeta; i++)
    cap += 6 * strlen(meta[i]) + 8;
  char *h = malloc(cap);
  if (!h) return NULL;
  len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{");
  for (int i = 0; i < nmeta; i++) {
    len = nnc_rt_json_quote(h, cap, len, meta[2 * i]);
    h[len++] = ':';
    len = nnc_rt_json_quote(h, cap, len, meta[2 * i + 1]);
    if (i + 1 < nmeta) h[len++] = ',';
  }
  h[len++] = '}';
  int64_t off = 0;
  for (int i = 0; i < nt; i++) {
    int64_t n = nnc_rt_numel(t[i].rank, t[i].shape);
    h[len++] = ',';
    len = nnc_rt_json_quote(h, cap, len, t[i].name);
    len += (size_t)snprintf(h + len, cap - len, ":{\"dtype\":\"F32\",\"shape\":[");
    for (int d = 0; d < t[i].rank; d++)
      len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
    len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%lld,%lld]}", (long long)off,
                            (long long)(off + 4 * n));
    off += 4 * n;
  }
  h[len++] = '}';
  while (len % 8)
    h[len++] = ' ';
  *hlen = len;
  return h;
}

/* Header and data into the open temporary file, then fsync and close. */
static int write_body(st_writer *w, int fd, const char *tmp, const nnc_rt_st_out *t, int nt,
                      const char *const *meta, int nmeta) {
  size_t hlen;
  char *h = make_header(t, nt, meta, nmeta, &hlen);
  if (!h) return nnc_rt_fail(w->err, "%s: out of memory for the header", w->path);
  unsigned char lenbytes[8];
  for (int i = 0; i < 8; i++)
    lenbytes[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  int rc = write_all(w, fd, tmp, lenbytes, 8);
  if (rc == 0) rc = write_all(w, fd, tmp, h, hlen);
  free(h);
  for (int i = 0; rc == 0 && i < nt; i++)
    rc = write_all(w, fd, tmp, t[i].data, (size_t)nnc_rt_numel(t[i].rank, t[i].shape) * 4);
  if (rc) return rc;
  int e = injected(w, "fsync");
  if (e || fsync(fd) != 0)
    return nnc_rt_fail(w->err, "%s: fsync failed: %s", tmp, strerror(e ? e : errno));
  return 0;
}

/* The folder holding path ("." when it has none). */
static void dir_of(char *buf, size_t size, const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(buf, size, ".");
  else if (slash == path)
    snprintf(buf, size, "/");
  else
    snprintf(buf, size, "%.*s", (int)(slash - path), path);
}

static int sync_dir(st_writer *w) {
  char dir[PATH_MAX];
  dir_of(dir, sizeof dir, w->path);
  int e = injected(w, "open folder");
  int fd = e ? -1 : open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    return nnc_rt_fail(w->err, "%s: written, but cannot open its folder to fsync it: %s", w->path,
                       strerror(e ? e : errno));
  e = injected(w, "fsync folder");
  int rc = e ? -1 : fsync(fd);
  if (rc != 0 && !e) e = errno;
  close(fd);
  /* Some file systems cannot fsync a folder (EINVAL): nothing more to do. */
  if (rc != 0 && e != EINVAL)
    return nnc_rt_fail(w->err, "%s: written, but fsync of its folder failed: %s", w->path,
                       strerror(e));
  return 0;
}

int nnc_rt_st_write(const char *path, const nnc_rt_st_out *t, int nt, const char *const *meta,
                    int nmeta, const nnc_rt_io_hooks *io, nnc_rt_error *err) {
  st_writer w = {.io = io, .path = path, .err = err};
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
    return nnc_rt_fail(err, "%s: path too long", path);
  int e = injected(&w, "open");
  int fd = e ? -1 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return nnc_rt_fail(err, "%s: cannot create: %s", tmp, strerror(e ? e : errno));
  int rc = write_body(&w, fd, tmp, t, nt, meta, nmeta);
  e = rc ? 0 : injected(&w, "close");
  if (close(fd) != 0 || e) {
    if (rc == 0) rc = nnc_rt_fail(err, "%s: close failed: %s", tmp, strerror(e ? e : errno));
  }
  if (rc == 0) {
    e = injected(&w, "rename");
    if (e || rename(tmp, path) != 0)
      rc = nnc_rt_fail(err, "%s: cannot rename %s over it: %s", path, tmp, strerror(e ? e : errno));
  }
  if (rc) {
    unlink(tmp);
    return rc;
  }
  return sync_dir(&w);
}
