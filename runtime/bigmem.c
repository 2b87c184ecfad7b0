/* bigmem.c: the large buffers of a run (data sets held as bytes, the
 * model's arena) and whole-file mappings of the data files read into them.
 *
 * On the machines nnc runs on, a page fault costs microseconds (tens under
 * a hypervisor), and touching a fresh 47 MB buffer in 4 KB pages used to be
 * a large part of the time from start to the first training step. A buffer
 * of at least NNC_RT_BIG_PAGE bytes is therefore an anonymous mapping
 * aligned to 2 MB and advised as huge pages (MADV_HUGEPAGE, which Linux
 * honours when transparent huge pages are "always" or "madvise"), so it
 * faults in a few dozen times; smaller ones are plain anonymous mappings.
 * Both come zeroed. Data files are mapped read-only and populated in one
 * call (MAP_POPULATE) instead of being read into a buffer that faults page
 * by page; the mapping lives only while the file is decompressed or copied
 * (a file truncated by another process in that moment would end the
 * process with SIGBUS, a risk the read() it replaces did not have).
 * Nothing here prints; errors go to an nnc_rt_error.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_POPULATE, MADV_HUGEPAGE */
#include "rt_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MAP_POPULATE
#define MAP_POPULATE 0
#endif

/* The mapped length of a buffer of `bytes`: whole huge pages for a big one,
 * whole small pages otherwise (at least one). */
static size_t mapped_length(size_t bytes) {
  size_t unit = bytes >= NNC_RT_BIG_PAGE ? NNC_RT_BIG_PAGE : (size_t)sysconf(_SC_PAGESIZE);
  return bytes ? (bytes + unit - 1) / unit * unit : unit;
}

void *nnc_rt_big_alloc(size_t bytes) {
  size_t len = mapped_length(bytes);
  if (len < bytes) return NULL; /* wrapped */
  if (bytes < NNC_RT_BIG_PAGE) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
  }
  /* Map one huge page more than needed and trim both ends to the aligned
   * range, so that the buffer is exactly [p, p + len) and nnc_rt_big_free
   * needs nothing but its size. */
  if (len + NNC_RT_BIG_PAGE < len) return NULL;
  char *raw =
      mmap(NULL, len + NNC_RT_BIG_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return NULL;
  uintptr_t at = ((uintptr_t)raw + NNC_RT_BIG_PAGE - 1) & ~(uintptr_t)(NNC_RT_BIG_PAGE - 1);
  char *p = (char *)at;
  if (p > raw) munmap(raw, (size_t)(p - raw));
  size_t tail = (size_t)(raw + len + NNC_RT_BIG_PAGE - (p + len));
  if (tail) munmap(p + len, tail);
#ifdef MADV_HUGEPAGE
  madvise(p, len, MADV_HUGEPAGE); /* advice only: without it, small pages */
#endif
  return p;
}

void nnc_rt_big_free(void *p, size_t bytes) {
  if (p) munmap(p, mapped_length(bytes));
}

int nnc_rt_map_file(const char *path, const unsigned char **data, size_t *len, nnc_rt_error *err) {
  *data = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY);
  if (fd < 0) return nnc_rt_fail(err, "%s: cannot open: %s", path, strerror(errno));
  struct stat st = {0};
  if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
    int is_dir = S_ISDIR(st.st_mode);
    close(fd);
    return nnc_rt_fail(err, "%s: %s, not a regular file", path,
                       is_dir ? "is a folder" : "is a device, pipe or socket");
  }
  if (st.st_size == 0) return close(fd), 0; /* nothing to map: an empty file */
  if ((uint64_t)st.st_size > SIZE_MAX / 2) {
    close(fd);
    return nnc_rt_fail(err, "%s: too large to map (%lld bytes)", path, (long long)st.st_size);
  }
  void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  int e = errno;
  close(fd);
  if (p == MAP_FAILED) return nnc_rt_fail(err, "%s: cannot read: %s", path, strerror(e));
  *data = p;
  *len = (size_t)st.st_size;
  return 0;
}

void nnc_rt_unmap_file(const unsigned char *data, size_t len) {
  if (data) munmap((void *)data, len);
}
