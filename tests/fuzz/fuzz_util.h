/* fuzz_util.h: what the libFuzzer targets share (header-only). The runtime's
 * readers take paths, so an input is written to a file of this process
 * first; an input that stands for two files (images and labels, features
 * and labels) is split by its first two bytes. */
#ifndef NNC_FUZZ_UTIL_H
#define NNC_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Writes data to $TMPDIR/nnc-fuzz-<pid>-<tag> (replaced each call); the
 * path is in a static buffer per tag slot (0..3). */
static inline const char *fz_file(int slot, const char *tag, const uint8_t *data, size_t len) {
  static char paths[4][256];
  const char *dir = getenv("TMPDIR");
  snprintf(paths[slot], sizeof paths[slot], "%s/nnc-fuzz-%d-%s", dir && *dir ? dir : "/tmp",
           (int)getpid(), tag);
  FILE *f = fopen(paths[slot], "wb");
  if (!f) abort();
  if (len && fwrite(data, 1, len, f) != len) abort();
  if (fclose(f)) abort();
  return paths[slot];
}

static inline void fz_remove(int slot, const char *tag) {
  char path[256];
  const char *dir = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/nnc-fuzz-%d-%s", dir && *dir ? dir : "/tmp", (int)getpid(), tag);
  unlink(path);
  (void)slot;
}

/* Splits an input into two parts: the first two bytes (little-endian) give
 * the length of the first part, clamped to what is there. */
typedef struct fz_parts {
  const uint8_t *a, *b;
  size_t alen, blen;
} fz_parts;

static inline fz_parts fz_split(const uint8_t *data, size_t size) {
  fz_parts p = {data, data, 0, 0};
  if (size < 2) return p;
  size_t n = (size_t)data[0] | (size_t)data[1] << 8;
  data += 2, size -= 2;
  if (n > size) n = size;
  p.a = data, p.alen = n;
  p.b = data + n, p.blen = size - n;
  return p;
}

#endif
