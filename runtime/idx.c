/* idx.c: loads IDX image and label files (MNIST, Fashion-MNIST) into an
 * nnc_rt_dataset.
 *
 * An IDX file is a 4-byte magic (0x00 0x00, an element-type byte, the number
 * of dimensions), one big-endian u32 per dimension, then the elements in
 * row-major order. Images are "idx3" (n, rows, cols) and labels "idx1" (n),
 * both unsigned bytes (type 0x08), the only type accepted here. A sample
 * keeps the file's shape: [rows, cols] for idx3 (rank 2), nothing is
 * flattened. Pixels become f32 times scale; labels become i32 and
 * num_classes is the largest label plus one.
 *
 * A file is read whole; a raw file is parsed from that buffer, and a gzip
 * file is decompressed in one call by libdeflate (about twice zlib's speed:
 * decompressing the 26 MB of Fashion-MNIST's training images is most of
 * `nnc run`'s start-up). When that cannot be done — several gzip members, a
 * damaged or truncated stream, a size over 4 GB, an unreadable file — the
 * file is streamed through zlib's gzopen/gzread instead, which
 * decompresses gzip and passes any other file through unchanged; so
 * damaged files get zlib's diagnosis. Either way the parser sees the same
 * bytes. Every error names the file and the byte offset (in
 * the uncompressed stream) where the problem is: "t10k-labels.gz: byte 11:
 * file ends after 3 of 10000 labels".
 */
#include "rt_internal.h"

#include <errno.h>
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { IDX_TYPE_UBYTE = 0x08, IDX_CHUNK = 1 << 16 };
/* Larger data sets than this (elements) are surely a corrupt header. */
static const int64_t IDX_MAX_ELEMENTS = INT64_C(1) << 40;

typedef struct idx_file {
  gzFile gz;
  unsigned char *mem; /* the whole decompressed file (libdeflate), or NULL */
  size_t mem_len, mem_pos;
  const char *path;
  int64_t offset; /* bytes of the uncompressed stream consumed so far */
  nnc_rt_error *err;
  int ndim;
  int64_t dims[NNC_RT_MAX_RANK + 1];
} idx_file;

/* The whole file, decompressed, in f->mem: the bytes themselves for a raw
 * file, libdeflate's output for gzip. 0 (and nothing allocated) whenever
 * it cannot, so the caller streams instead. */
static int read_whole(idx_file *f, const char *path) {
  char *in;
  size_t size;
  nnc_rt_error ignored;
  if (nnc_rt_read_file(path, &in, &size, &ignored)) return 0;
  const unsigned char *b = (const unsigned char *)in;
  if (size < 2 || b[0] != 0x1f || b[1] != 0x8b) {
    f->mem = (unsigned char *)in;
    f->mem_len = size;
    return 1;
  }
  unsigned char *out = NULL;
  int ok = 0;
  if (size >= 18) {
    /* The trailer's ISIZE: the uncompressed size mod 2^32. */
    const unsigned char *t = b + size - 4;
    size_t isize = (size_t)t[0] | (size_t)t[1] << 8 | (size_t)t[2] << 16 | (size_t)t[3] << 24;
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    size_t used = 0, got = 0;
    ok =
        d && (out = malloc(isize ? isize : 1)) &&
        libdeflate_gzip_decompress_ex(d, in, size, out, isize, &used, &got) == LIBDEFLATE_SUCCESS &&
        used == size && got == isize;
    if (d) libdeflate_free_decompressor(d);
    if (ok) {
      f->mem = out;
      f->mem_len = got;
    }
  }
  if (!ok) free(out);
  free(in);
  return ok;
}

static int idx_open(idx_file *f, const char *path, nnc_rt_error *err) {
  *f = (idx_file){.path = path, .err = err};
  if (read_whole(f, path)) return 0;
  errno = 0;
  f->gz = gzopen(path, "rb");
  if (!f->gz)
    return nnc_rt_fail(err, "%s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
  gzbuffer(f->gz, 1 << 17);
  return 0;
}

static void idx_close(idx_file *f) {
  if (f->gz) gzclose(f->gz);
  f->gz = NULL;
  free(f->mem);
  f->mem = NULL;
}

/* Reads up to len bytes; *got says how many arrived (fewer at end of file).
 * Fails only on a read or gzip error. */
static int idx_read(idx_file *f, void *buf, size_t len, size_t *got) {
  *got = 0;
  if (f->mem) {
    size_t left = f->mem_len - f->mem_pos;
    *got = len < left ? len : left;
    memcpy(buf, f->mem + f->mem_pos, *got);
    f->mem_pos += *got;
    f->offset += (int64_t)*got;
    return 0;
  }
  while (*got < len) {
    size_t want = len - *got;
    if (want > (1u << 30)) want = 1u << 30;
    int n = gzread(f->gz, (char *)buf + *got, (unsigned)want);
    if (n < 0) {
      int code;
      const char *msg = gzerror(f->gz, &code);
      if (code == Z_ERRNO) msg = strerror(errno);
      return nnc_rt_fail(f->err, "%s: byte %lld: read error: %s", f->path,
                         (long long)(f->offset + (int64_t)*got), msg);
    }
    if (n == 0) break;
    *got += (size_t)n;
  }
  f->offset += (int64_t)*got;
  return 0;
}

static const char *idx_type_name(int type) {
  switch (type) {
  case 0x08: return "unsigned byte";
  case 0x09: return "signed byte";
  case 0x0B: return "short";
  case 0x0C: return "int";
  case 0x0D: return "float";
  case 0x0E: return "double";
  default: return "not an IDX type";
  }
}

/* Reads and checks the magic and the dimension sizes; what says "image" or
 * "label" in messages; the file must have min_dims..max_dims dimensions. */
static int idx_read_header(idx_file *f, const char *what, int min_dims, int max_dims) {
  unsigned char magic[4];
  size_t got;
  if (idx_read(f, magic, 4, &got)) return -1;
  if (got < 4)
    return nnc_rt_fail(f->err, "%s: byte %zu: file ends inside the 4-byte IDX magic", f->path, got);
  if (magic[0] != 0 || magic[1] != 0)
    return nnc_rt_fail(f->err,
                       "%s: byte 0: not an IDX file (starts 0x%02x 0x%02x, expected 0x00 0x00)",
                       f->path, magic[0], magic[1]);
  if (magic[2] != IDX_TYPE_UBYTE)
    return nnc_rt_fail(f->err,
                       "%s: byte 2: element type 0x%02x (%s), expected 0x08 (unsigned byte)",
                       f->path, magic[2], idx_type_name(magic[2]));
  f->ndim = magic[3];
  if (f->ndim < min_dims || f->ndim > max_dims)
    return nnc_rt_fail(f->err, "%s: byte 3: %d dimensions, but %s files have %d%s%.0d", f->path,
                       f->ndim, what, min_dims, min_dims == max_dims ? "" : " to ",
                       min_dims == max_dims ? 0 : max_dims);
  unsigned char raw[4 * (NNC_RT_MAX_RANK + 1)];
  if (idx_read(f, raw, 4 * (size_t)f->ndim, &got)) return -1;
  if (got < 4 * (size_t)f->ndim)
    return nnc_rt_fail(f->err,
                       "%s: byte %lld: file ends inside the header (%zu of %d dimension sizes)",
                       f->path, (long long)f->offset, got / 4, f->ndim);
  int64_t elements = 1;
  for (int i = 0; i < f->ndim; i++) {
    const unsigned char *b = raw + 4 * i;
    f->dims[i] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
    if (f->dims[i] == 0)
      return nnc_rt_fail(f->err, "%s: byte %d: dimension %d is 0", f->path, 4 + 4 * i, i);
    elements *= f->dims[i];
    if (elements > IDX_MAX_ELEMENTS)
      return nnc_rt_fail(f->err, "%s: byte %d: dimensions too large (over 2^40 elements)", f->path,
                         4 + 4 * i);
  }
  return 0;
}

/* After the data: the file must end here. */
static int idx_expect_end(idx_file *f, const char *what) {
  unsigned char extra;
  size_t got;
  if (idx_read(f, &extra, 1, &got)) return -1;
  if (got)
    return nnc_rt_fail(f->err, "%s: byte %lld: unexpected data after the last %s", f->path,
                       (long long)(f->offset - 1), what);
  return 0;
}

static int idx_short_data(idx_file *f, int64_t done, int64_t per_item, int64_t n,
                          const char *what) {
  return nnc_rt_fail(f->err, "%s: byte %lld: file ends after %lld of %lld %ss", f->path,
                     (long long)f->offset, (long long)(done / per_item), (long long)n, what);
}

static int load_images(nnc_rt_dataset *ds, idx_file *f, float scale) {
  if (idx_read_header(f, "image", 2, NNC_RT_MAX_RANK + 1)) return -1;
  ds->n = f->dims[0];
  ds->rank = f->ndim - 1;
  ds->sample_size = 1;
  for (int i = 0; i < ds->rank; i++) {
    ds->shape[i] = f->dims[i + 1];
    ds->sample_size *= ds->shape[i];
  }
  int64_t total = ds->n * ds->sample_size;
  ds->x = malloc((size_t)total * sizeof(float));
  if (!ds->x)
    return nnc_rt_fail(f->err, "%s: out of memory for %lld pixels", f->path, (long long)total);
  unsigned char buf[IDX_CHUNK];
  for (int64_t done = 0; done < total;) {
    size_t want = total - done < IDX_CHUNK ? (size_t)(total - done) : IDX_CHUNK, got;
    if (idx_read(f, buf, want, &got)) return -1;
    for (size_t i = 0; i < got; i++)
      ds->x[done + (int64_t)i] = (float)buf[i] * scale;
    done += (int64_t)got;
    if (got < want) return idx_short_data(f, done, ds->sample_size, ds->n, "image");
  }
  return idx_expect_end(f, "image");
}

static int load_labels(nnc_rt_dataset *ds, idx_file *f, const char *images_path) {
  if (idx_read_header(f, "label", 1, 1)) return -1;
  if (f->dims[0] != ds->n)
    return nnc_rt_fail(f->err, "%s: byte 4: %lld labels, but %s has %lld images", f->path,
                       (long long)f->dims[0], images_path, (long long)ds->n);
  unsigned char *raw = malloc((size_t)ds->n);
  ds->labels = malloc((size_t)ds->n * sizeof(int32_t));
  if (!raw || !ds->labels) {
    free(raw);
    return nnc_rt_fail(f->err, "%s: out of memory for %lld labels", f->path, (long long)ds->n);
  }
  size_t got;
  int rc = idx_read(f, raw, (size_t)ds->n, &got);
  if (rc == 0 && (int64_t)got < ds->n) rc = idx_short_data(f, (int64_t)got, 1, ds->n, "label");
  if (rc == 0) {
    ds->num_classes = 0;
    for (int64_t i = 0; i < ds->n; i++) {
      ds->labels[i] = raw[i];
      if (raw[i] + 1 > ds->num_classes) ds->num_classes = raw[i] + 1;
    }
  }
  free(raw);
  return rc ? rc : idx_expect_end(f, "label");
}

int nnc_rt_load_idx(nnc_rt_dataset *ds, const char *images_path, const char *labels_path,
                    float scale, nnc_rt_error *err) {
  *ds = (nnc_rt_dataset){0};
  idx_file f;
  int rc = idx_open(&f, images_path, err);
  if (rc == 0) rc = load_images(ds, &f, scale);
  idx_close(&f);
  if (rc == 0) rc = idx_open(&f, labels_path, err);
  if (rc == 0) {
    rc = load_labels(ds, &f, images_path);
    idx_close(&f);
  }
  if (rc) nnc_rt_dataset_free(ds);
  return rc;
}

void nnc_rt_dataset_free(nnc_rt_dataset *ds) {
  if (!ds) return;
  free(ds->x);
  free(ds->labels);
  free(ds->targets);
  *ds = (nnc_rt_dataset){0};
}
