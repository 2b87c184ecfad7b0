/* diag.c: collecting and rendering diagnostics (see diag.h).
 *
 * Rendering follows clang: a header line `path:line:col: level: message`,
 * the source line, and a caret under the first byte of the span with tildes
 * under the rest of it (up to the end of that line). Control bytes in the
 * echoed line are shown as '?', tabs are kept so the caret line stays
 * aligned, and lines longer than the terminal are cut to a window around
 * the span.
 */
#include "diag.h"

#include <stdarg.h>
#include <string.h>

enum { WINDOW_BEFORE = 60, WINDOW_WIDTH = 120 };

void nnc_diags_init(nnc_diags *d, nnc_arena *arena) {
  memset(d, 0, sizeof *d);
  d->arena = arena;
}

uint32_t nnc_diags_add_source(nnc_diags *d, const char *path, const char *text, size_t len) {
  if (d->nfiles == d->file_cap) {
    int cap = d->file_cap ? 2 * d->file_cap : 4;
    d->files = nnc_arena_grow(d->arena, d->files, sizeof(nnc_source) * (size_t)d->nfiles,
                              sizeof(nnc_source) * (size_t)cap);
    d->file_cap = cap;
  }
  nnc_source *s = &d->files[d->nfiles];
  s->path = nnc_arena_strdup(d->arena, path ? path : "<input>");
  s->text = nnc_arena_strndup(d->arena, text ? text : "", text ? len : 0);
  s->len = text ? len : 0;
  return (uint32_t)d->nfiles++;
}

const nnc_source *nnc_diags_source(const nnc_diags *d, uint32_t file) {
  return file < (uint32_t)d->nfiles ? &d->files[file] : NULL;
}

static void push(nnc_diags *d, nnc_diag_level level, bool located, nnc_span at, const char *fmt,
                 va_list ap) {
  if (level == NNC_DIAG_NOTE) {
    if (!d->last_kept) return;
  } else {
    d->last_kept = false;
    if (d->fatal) return;
    if (level == NNC_DIAG_ERROR && d->nerrors >= NNC_MAX_ERRORS) {
      d->fatal = true;
      return;
    }
    d->last_kept = true;
    if (level == NNC_DIAG_ERROR)
      d->nerrors++;
    else
      d->nwarnings++;
  }
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  if (d->n == d->cap) {
    int cap = d->cap ? 2 * d->cap : 16;
    d->items = nnc_arena_grow(d->arena, d->items, sizeof(nnc_diag) * (size_t)d->n,
                              sizeof(nnc_diag) * (size_t)cap);
    d->cap = cap;
  }
  d->items[d->n++] = (nnc_diag){level, located, at, nnc_arena_strdup(d->arena, buf)};
}

#define DEFINE_REPORTER(fn, level)                                                                 \
  void fn(nnc_diags *d, nnc_span at, const char *fmt, ...) {                                       \
    va_list ap;                                                                                    \
    va_start(ap, fmt);                                                                             \
    push(d, level, true, at, fmt, ap);                                                             \
    va_end(ap);                                                                                    \
  }
DEFINE_REPORTER(nnc_diag_error, NNC_DIAG_ERROR)
DEFINE_REPORTER(nnc_diag_warning, NNC_DIAG_WARNING)
DEFINE_REPORTER(nnc_diag_note, NNC_DIAG_NOTE)

void nnc_diag_file_error(nnc_diags *d, uint32_t file, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  push(d, NNC_DIAG_ERROR, false, (nnc_span){file, 0, 0}, fmt, ap);
  va_end(ap);
}

void nnc_diags_linecol(const nnc_diags *d, uint32_t file, uint32_t offset, int *line, int *col) {
  const nnc_source *s = nnc_diags_source(d, file);
  *line = 1;
  *col = 1;
  if (!s) return;
  if (offset > s->len) offset = (uint32_t)s->len;
  size_t start = 0;
  for (size_t i = 0; i < offset; i++)
    if (s->text[i] == '\n') {
      ++*line;
      start = i + 1;
    }
  *col = (int)(offset - start) + 1;
}

/* ---- Rendering ---- */

typedef struct palette {
  const char *bold, *reset, *error, *warning, *note, *caret;
} palette;

static const palette plain = {"", "", "", "", "", ""};
static const palette ansi = {"\033[1m",    "\033[0m",    "\033[1;31m",
                             "\033[1;35m", "\033[1;36m", "\033[1;32m"};

static const char *level_name(nnc_diag_level l) {
  switch (l) {
  case NNC_DIAG_ERROR: return "error";
  case NNC_DIAG_WARNING: return "warning";
  case NNC_DIAG_NOTE: return "note";
  }
  return "?";
}

static const char *level_color(const palette *p, nnc_diag_level l) {
  switch (l) {
  case NNC_DIAG_ERROR: return p->error;
  case NNC_DIAG_WARNING: return p->warning;
  case NNC_DIAG_NOTE: return p->note;
  }
  return "";
}

/* Echoes bytes [from, to) of a line; control bytes become '?'. */
static void echo(FILE *out, const char *text, size_t from, size_t to) {
  for (size_t i = from; i < to; i++) {
    unsigned char c = (unsigned char)text[i];
    fputc(c == '\t' || (c >= 0x20 && c != 0x7f) ? c : '?', out);
  }
}

/* The caret line: blanks (tabs kept) up to the span, then ^~~~. UTF-8
 * continuation bytes take no column. */
static void caret(FILE *out, const char *text, size_t from, size_t b, size_t e) {
  for (size_t i = from; i < b; i++) {
    unsigned char c = (unsigned char)text[i];
    if ((c & 0xC0) == 0x80) continue;
    fputc(c == '\t' ? '\t' : ' ', out);
  }
  fputc('^', out);
  for (size_t i = b + 1; i < e; i++)
    if (((unsigned char)text[i] & 0xC0) != 0x80) fputc('~', out);
}

static void render_source(FILE *out, const nnc_source *s, nnc_span sp, const palette *p) {
  size_t b = sp.begin < s->len ? sp.begin : s->len;
  size_t line_start = b, line_end = b;
  while (line_start > 0 && s->text[line_start - 1] != '\n')
    line_start--;
  while (line_end < s->len && s->text[line_end] != '\n')
    line_end++;
  size_t e = sp.end > b ? sp.end : b + 1;
  if (e > line_end) e = line_end > b ? line_end : b + 1;
  /* Window long lines around the span. */
  size_t from = line_start, to = line_end;
  bool cut_front = false, cut_back = false;
  if (to - from > WINDOW_WIDTH) {
    if (b - from > WINDOW_BEFORE) {
      from = b - WINDOW_BEFORE;
      cut_front = true;
    }
    if (to - from > WINDOW_WIDTH) {
      to = from + WINDOW_WIDTH;
      cut_back = true;
    }
    if (e > to) e = to > b ? to : b + 1;
  }
  if (cut_front) fputs("...", out);
  echo(out, s->text, from, to);
  if (cut_back) fputs("...", out);
  fputc('\n', out);
  if (cut_front) fputs("   ", out);
  fputs(p->caret, out);
  caret(out, s->text, from, b, e);
  fputs(p->reset, out);
  fputc('\n', out);
}

void nnc_diags_render(const nnc_diags *d, FILE *out, bool color) {
  const palette *p = color ? &ansi : &plain;
  for (int i = 0; i < d->n; i++) {
    const nnc_diag *g = &d->items[i];
    const nnc_source *s = nnc_diags_source(d, g->span.file);
    fputs(p->bold, out);
    if (s && g->located) {
      int line, col;
      nnc_diags_linecol(d, g->span.file, g->span.begin, &line, &col);
      fprintf(out, "%s:%d:%d: ", s->path, line, col);
    } else if (s) {
      fprintf(out, "%s: ", s->path);
    } else {
      fputs("nnc: ", out);
    }
    fprintf(out, "%s%s:%s%s %s%s\n", level_color(p, g->level), level_name(g->level), p->reset,
            p->bold, g->msg, p->reset);
    if (s && g->located) render_source(out, s, g->span, p);
  }
  if (d->fatal)
    fprintf(out, "%s%sfatal error:%s%s too many errors emitted, stopping now%s\n", p->bold,
            p->error, p->reset, p->bold, p->reset);
}
