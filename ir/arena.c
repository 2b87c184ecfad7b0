/* arena.c: the per-compilation bump allocator (see arena.h). Chunks are
 * malloc'd, linked, and freed together; large requests get a chunk of their
 * own so that small ones keep packing into the current one. */
#include "arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CHUNK_SIZE = 64 * 1024, ALIGN = 16 };

struct nnc_arena_chunk {
  nnc_arena_chunk *next;
  size_t used, size;
  _Alignas(16) unsigned char data[];
};

static nnc_arena_chunk *chunk_new(size_t size) {
  nnc_arena_chunk *c = malloc(sizeof *c + size);
  if (!c) {
    fputs("nnc: out of memory\n", stderr);
    abort();
  }
  c->next = NULL;
  c->used = 0;
  c->size = size;
  return c;
}

void nnc_arena_init(nnc_arena *a) {
  a->head = NULL;
  a->total = 0;
}

void nnc_arena_destroy(nnc_arena *a) {
  nnc_arena_chunk *c = a->head;
  while (c) {
    nnc_arena_chunk *next = c->next;
    free(c);
    c = next;
  }
  a->head = NULL;
  a->total = 0;
}

void *nnc_arena_alloc(nnc_arena *a, size_t size) {
  if (size > SIZE_MAX / 2) {
    fputs("nnc: out of memory\n", stderr);
    abort();
  }
  size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
  if (size == 0) size = ALIGN;
  nnc_arena_chunk *c = a->head;
  if (!c || c->size - c->used < size) {
    if (size > CHUNK_SIZE / 4) {
      /* A big block gets its own chunk, linked behind the current one. */
      nnc_arena_chunk *big = chunk_new(size);
      if (c) {
        big->next = c->next;
        c->next = big;
      } else {
        a->head = big;
      }
      big->used = size;
      a->total += size;
      memset(big->data, 0, size);
      return big->data;
    }
    c = chunk_new(CHUNK_SIZE);
    c->next = a->head;
    a->head = c;
  }
  void *p = c->data + c->used;
  c->used += size;
  a->total += size;
  memset(p, 0, size);
  return p;
}

void *nnc_arena_grow(nnc_arena *a, void *old, size_t old_bytes, size_t new_bytes) {
  void *p = nnc_arena_alloc(a, new_bytes);
  if (old && old_bytes) memcpy(p, old, old_bytes < new_bytes ? old_bytes : new_bytes);
  return p;
}

char *nnc_arena_strndup(nnc_arena *a, const char *s, size_t n) {
  char *p = nnc_arena_alloc(a, n + 1);
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

char *nnc_arena_strdup(nnc_arena *a, const char *s) {
  return nnc_arena_strndup(a, s, strlen(s));
}

char *nnc_arena_printf(nnc_arena *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  char *p = nnc_arena_alloc(a, (size_t)n + 1);
  va_start(ap, fmt);
  vsnprintf(p, (size_t)n + 1, fmt, ap);
  va_end(ap);
  return p;
}
