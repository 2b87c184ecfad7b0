/* idx.c: loads IDX image and label files (MNIST, Fashion-MNIST) into an
 * nnc_rt_dataset.
 *
 * An IDX file is a 4-byte magic (0x00 0x00, an element-type byte, the number
 * of dimensions), one big-endian u32 per dimension, then the elements in
 * row-major order. Images are "idx3" (n, rows, cols) and labels "idx1" (n),
 * both unsigned bytes (type 0x08), the only type accepted here. A sample
 * keeps the file's shape: [rows, cols] for idx3 (rank 2), nothing is
 * flattened. Pixels stay bytes: the data set keeps the decompressed file
 * itself (its u8 points past the header), and byte_value[b] = (float)b *
 * scale says what each byte stands for (nnc_rt_dataset_sample converts as
 * samples are read). Labels become i32 and num_classes is the largest
 * label plus one.
 *
 * A file is mapped whole (regular files only) and, when it starts with the
 * gzip magic, decompressed whole before parsing: by libdeflate in one call,
 * straight into the buffer the data set keeps (about twice zlib's speed:
 * decompressing the 26 MB of Fashion-MNIST's training images is most of
 * the time from start to the first step), when the file is one gzip member
 * whose trailer is believable; otherwise by zlib's inflate, member after
 * member, into a buffer that grows with the output actually produced. A raw
 * file is copied into such a buffer. Bytes after the last member that do
 * not start another one are an error, as is a damaged or cut stream. The
 * parser then reads the decompressed bytes, and checks that the data the
 * header announces is there, with every size computed by
 * nnc_rt_checked_mul. Every error names the file and the byte offset (in
 * the uncompressed stream) where the problem is: "t10k-labels.gz: byte 11:
 * file ends after 3 of 10000 labels".
 */
#include "rt_internal.h"

#include <errno.h>
#include <libdeflate.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { IDX_TYPE_UBYTE = 0x08 };
/* Deflate expands at most 1032:1; a trailer claiming more is not believed. */
enum { DEFLATE_MAX_RATIO = 1032 };

typedef struct idx_file {
  unsigned char *mem; /* the whole file, decompressed (an nnc_rt_big_alloc block) */
  size_t mem_len, mem_pos;
  size_t mem_alloc; /* the size mem was allocated with */
  const char *path;
  int64_t offset; /* bytes of the uncompressed stream consumed so far */
  nnc_rt_error *err;
  int ndim;
  int64_t dims[NNC_RT_MAX_RANK + 1];
} idx_file;

/* One gzip member in one libdeflate call; 0 (nothing allocated) when it
 * cannot, so the caller inflates with zlib instead. */
static int gunzip_fast(idx_file *f, const unsigned char *in, size_t size) {
  if (size < 18) return 0;
  /* The trailer's ISIZE: the uncompressed size mod 2^32. */
  const unsigned char *t = in + size - 4;
  size_t isize = (size_t)t[0] | (size_t)t[1] << 8 | (size_t)t[2] << 16 | (size_t)t[3] << 24;
  if (isize / DEFLATE_MAX_RATIO > size) return 0;
  struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
  unsigned char *out = NULL;
  size_t used = 0, got = 0;
  int ok =
      d && (out = nnc_rt_big_alloc(isize)) &&
      libdeflate_gzip_decompress_ex(d, in, size, out, isize, &used, &got) == LIBDEFLATE_SUCCESS &&
      used == size && got == isize;
  if (d) libdeflate_free_decompressor(d);
  if (!ok) {
    nnc_rt_big_free(out, isize);
    return 0;
  }
  f->mem = out;
  f->mem_len = f->mem_alloc = got;
  return 1;
}

static int gz_fail(idx_file *f, const z_stream *z, const unsigned char *in, const char *what) {
  return nnc_rt_fail(f->err, "%s: byte %lld: %s (at byte %lld of the compressed file)", f->path,
                     (long long)z->total_out, what, (long long)(z->next_in - in));
}

/* Inflates every gzip member of in[0, size) into f->mem, growing it as
 * output arrives; the input must end exactly after a member. */
static int gunzip_slow(idx_file *f, const unsigned char *in, size_t size) {
  z_stream z = {0};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
    return nnc_rt_fail(f->err, "%s: out of memory for gzip decompression", f->path);
  z.next_in = (unsigned char *)in;
  const unsigned char *end = in + size;
  size_t cap = 0;
  int rc = 0;
  for (;;) {
    if (z.total_out == cap) {
      size_t bigger = cap ? 2 * cap : (size_t)1 << 20;
      unsigned char *m = nnc_rt_big_alloc(bigger);
      if (!m) {
        rc = nnc_rt_fail(f->err, "%s: out of memory decompressing %zu bytes", f->path, bigger);
        break;
      }
      if (cap) memcpy(m, f->mem, cap);
      nnc_rt_big_free(f->mem, cap);
      f->mem = m, f->mem_alloc = cap = bigger;
    }
    z.next_out = f->mem + z.total_out;
    z.avail_out = (uInt)(cap - z.total_out < (1u << 30) ? cap - z.total_out : 1u << 30);
    size_t left = (size_t)(end - z.next_in);
    z.avail_in = (uInt)(left < (1u << 30) ? left : 1u << 30);
    int zr = inflate(&z, Z_NO_FLUSH);
    left = (size_t)(end - z.next_in);
    if (zr == Z_STREAM_END) {
      if (left == 0) break;
      if (left < 2 || z.next_in[0] != 0x1f || z.next_in[1] != 0x8b) {
        rc = gz_fail(f, &z, in, "data after the end of the gzip stream");
        break;
      }
      uLong total = z.total_out; /* inflateReset clears it */
      inflateReset(&z);
      z.total_out = total;
    } else if (zr == Z_BUF_ERROR && left == 0) {
      rc = gz_fail(f, &z, in, "the gzip stream is cut short");
      break;
    } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
      rc = gz_fail(f, &z, in, zr == Z_MEM_ERROR ? "out of memory" : z.msg ? z.msg : "damaged");
      break;
    }
  }
  f->mem_len = z.total_out;
  inflateEnd(&z);
  return rc;
}

static int idx_open(idx_file *f, const char *path, nnc_rt_error *err) {
  *f = (idx_file){.path = path, .err = err};
  const unsigned char *in;
  size_t size;
  if (nnc_rt_map_file(path, &in, &size, err)) return -1;
  int rc = 0;
  if (size >= 2 && in[0] == 0x1f && in[1] == 0x8b) {
    rc = gunzip_fast(f, in, size) ? 0 : gunzip_slow(f, in, size);
  } else if ((f->mem = nnc_rt_big_alloc(size))) {
    if (size) memcpy(f->mem, in, size);
    f->mem_len = f->mem_alloc = size;
  } else {
    rc = nnc_rt_fail(err, "%s: out of memory for its %zu bytes", path, size);
  }
  nnc_rt_unmap_file(in, size);
  if (rc) nnc_rt_big_free(f->mem, f->mem_alloc), f->mem = NULL;
  return rc;
}

static void idx_close(idx_file *f) {
  nnc_rt_big_free(f->mem, f->mem_alloc);
  f->mem = NULL;
}

/* Bytes not yet read. */
static size_t idx_left(const idx_file *f) {
  return f->mem_len - f->mem_pos;
}

/* Reads up to len bytes; *got says how many arrived (fewer at end of file). */
static int idx_read(idx_file *f, void *buf, size_t len, size_t *got) {
  size_t left = idx_left(f);
  *got = len < left ? len : left;
  memcpy(buf, f->mem + f->mem_pos, *got);
  f->mem_pos += *got;
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
  for (int i = 0; i < f->ndim; i++) {
    const unsigned char *b = raw + 4 * i;
    f->dims[i] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
    if (f->dims[i] == 0)
      return nnc_rt_fail(f->err, "%s: byte %d: dimension %d is 0", f->path, 4 + 4 * i, i);
    if (nnc_rt_checked_numel(i + 1, f->dims) < 0)
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

/* The images stay in f's buffer, which the data set takes over. */
static int load_images(nnc_rt_dataset *ds, idx_file *f, float scale) {
  if (idx_read_header(f, "image", 2, NNC_RT_MAX_RANK + 1)) return -1;
  ds->n = f->dims[0];
  ds->rank = f->ndim - 1;
  for (int i = 0; i < ds->rank; i++)
    ds->shape[i] = f->dims[i + 1];
  /* The header's product was checked; nothing below can wrap. */
  ds->sample_size = nnc_rt_checked_numel(ds->rank, ds->shape);
  int64_t total = ds->n * ds->sample_size;
  if ((int64_t)idx_left(f) < total) {
    int64_t have = (int64_t)idx_left(f);
    f->offset += have;
    return idx_short_data(f, have, ds->sample_size, ds->n, "image");
  }
  unsigned char *pixels = f->mem + f->mem_pos;
  f->mem_pos += (size_t)total;
  f->offset += total;
  if (idx_expect_end(f, "image")) return -1;
  for (int b = 0; b < 256; b++)
    ds->byte_value[b] = (float)b * scale;
  nnc_rt_dataset_bytes_changed(ds);
  ds->u8 = pixels;
  ds->storage = f->mem, ds->storage_len = f->mem_alloc;
  f->mem = NULL;
  return 0;
}

static int load_labels(nnc_rt_dataset *ds, idx_file *f, const char *images_path) {
  if (idx_read_header(f, "label", 1, 1)) return -1;
  if (f->dims[0] != ds->n)
    return nnc_rt_fail(f->err, "%s: byte 4: %lld labels, but %s has %lld images", f->path,
                       (long long)f->dims[0], images_path, (long long)ds->n);
  if ((int64_t)idx_left(f) < ds->n) {
    int64_t have = (int64_t)idx_left(f);
    f->offset += have;
    return idx_short_data(f, have, 1, ds->n, "label");
  }
  ds->labels = malloc((size_t)ds->n * sizeof(int32_t));
  if (!ds->labels)
    return nnc_rt_fail(f->err, "%s: out of memory for %lld labels", f->path, (long long)ds->n);
  const unsigned char *raw = f->mem + f->mem_pos;
  f->mem_pos += (size_t)ds->n;
  f->offset += ds->n;
  ds->num_classes = 0;
  for (int64_t i = 0; i < ds->n; i++) {
    ds->labels[i] = raw[i];
    if (raw[i] + 1 > ds->num_classes) ds->num_classes = raw[i] + 1;
  }
  return idx_expect_end(f, "label");
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
  nnc_rt_big_free(ds->storage, ds->storage_len);
  free(ds->labels);
  free(ds->targets);
  *ds = (nnc_rt_dataset){0};
}
