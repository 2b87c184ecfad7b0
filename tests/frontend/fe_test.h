/* fe_test.h: helpers shared by the front-end tests: compile a string with a
 * fresh arena, render diagnostics into a string, read a file. */
#ifndef NNC_FE_TEST_H
#define NNC_FE_TEST_H

#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frontend.h"

typedef struct fe {
  nnc_arena arena;
  nnc_diags diags;
  uint32_t file;
  nnc_frontend_result r;
  bool ok;
} fe;

static inline void fe_compile_n(fe *f, const char *text, size_t len) {
  nnc_arena_init(&f->arena);
  nnc_diags_init(&f->diags, &f->arena);
  f->file = nnc_diags_add_source(&f->diags, "test.nn", text, len);
  f->ok = nnc_frontend_compile(&f->arena, &f->diags, f->file, &f->r);
}

static inline void fe_compile(fe *f, const char *text) {
  fe_compile_n(f, text, strlen(text));
}

static inline void fe_free(fe *f) {
  nnc_arena_destroy(&f->arena);
}

/* Diagnostics as the driver prints them (no color); caller frees. */
static inline char *fe_render(const fe *f) {
  char *buf = NULL;
  size_t n = 0;
  FILE *out = open_memstream(&buf, &n);
  nnc_diags_render(&f->diags, out, false);
  fclose(out);
  return buf;
}

/* Whether some diagnostic's message contains text. */
static inline bool fe_has(const fe *f, const char *text) {
  for (int i = 0; i < f->diags.n; i++)
    if (strstr(f->diags.items[i].msg, text)) return true;
  return false;
}

static inline char *fe_read_file(const char *path, size_t *len) {
  FILE *in = fopen(path, "rb");
  if (!in) return NULL;
  fseek(in, 0, SEEK_END);
  long n = ftell(in);
  fseek(in, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  *len = fread(buf, 1, (size_t)n, in);
  buf[*len] = 0;
  fclose(in);
  return buf;
}

#endif
