/* diag.h: source files and diagnostics of one compilation.
 *
 * The front end never prints. Lexer, parser and semantic analysis append
 * errors, warnings and notes to an nnc_diags, each with the span it is about;
 * the driver renders them clang-style (nnc_diags_render):
 *
 *   model.nn:4:21: error: unknown argument 'activaton' to dense; did you mean 'activation'?
 *     h = dense(x, 256, activaton = relu)
 *                       ^~~~~~~~~
 *
 * A note belongs to the error or warning before it and is dropped with it.
 * After NNC_MAX_ERRORS errors further diagnostics are dropped and the
 * compilation is marked fatal, so that no input can produce unbounded output.
 * Sources are registered here too (the span's `file` indexes this table):
 * line and column are computed from the text only when rendering.
 */
#ifndef NNC_DIAG_H
#define NNC_DIAG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "arena.h"
#include "ir.h" /* nnc_span */

enum { NNC_MAX_ERRORS = 20 };

typedef enum nnc_diag_level { NNC_DIAG_ERROR, NNC_DIAG_WARNING, NNC_DIAG_NOTE } nnc_diag_level;

typedef struct nnc_source {
  const char *path;
  const char *text; /* NUL-terminated copy; may contain NUL bytes before len */
  size_t len;
} nnc_source;

typedef struct nnc_diag {
  nnc_diag_level level;
  bool located; /* false: about the whole file (span.file only) */
  nnc_span span;
  const char *msg;
} nnc_diag;

typedef struct nnc_diags {
  nnc_arena *arena;
  nnc_source *files;
  int nfiles, file_cap;
  nnc_diag *items;
  int n, cap;
  int nerrors, nwarnings;
  bool fatal;     /* too many errors: stop reporting, stop early */
  bool last_kept; /* whether the last error/warning was kept (its notes follow it) */
} nnc_diags;

void nnc_diags_init(nnc_diags *d, nnc_arena *arena);
/* Registers a source; the text is copied into the arena. Returns its index. */
uint32_t nnc_diags_add_source(nnc_diags *d, const char *path, const char *text, size_t len);
const nnc_source *nnc_diags_source(const nnc_diags *d, uint32_t file);

void nnc_diag_error(nnc_diags *d, nnc_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void nnc_diag_warning(nnc_diags *d, nnc_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void nnc_diag_note(nnc_diags *d, nnc_span at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An error about a whole file, without a position. */
void nnc_diag_file_error(nnc_diags *d, uint32_t file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static inline bool nnc_diags_ok(const nnc_diags *d) {
  return d->nerrors == 0;
}

/* 1-based line and column (in bytes) of a byte offset. */
void nnc_diags_linecol(const nnc_diags *d, uint32_t file, uint32_t offset, int *line, int *col);

/* Writes every diagnostic to out; color adds clang's ANSI colors. */
void nnc_diags_render(const nnc_diags *d, FILE *out, bool color);

/* ---- "did you mean" (suggest.c) ---- */
/* Optimal-string-alignment (Damerau-Levenshtein) distance, capped at cap+1. */
int nnc_edit_distance(const char *a, const char *b, int cap);
/* The candidate closest to word if it is close enough to be a plausible
 * misspelling (distance <= max(1, len/3)), else NULL. */
const char *nnc_suggest(const char *word, const char *const *candidates, int n);

#endif
