/* test_diagnostics.c: golden diagnostics.
 *
 * Every file in tests/frontend/diag/ is a broken .nn file. Each diagnostic
 * the front end must report is written in a comment at the end of the line
 * it points at:
 *
 *   h = dense(x, 256, activaton = relu)  # error: unknown argument ...
 *   model mlp(x: f32[4]) -> f32[2] {     # note@7: previous definition is here
 *   batch = 0  # error@11: 'batch' must be ...  # note@3: ...   (several on one line)
 *   #> error@20: missing terminating '"' character     (about the next line)
 *
 * `# error: MSG`, `# warning: MSG` or `# note: MSG` checks the level, the
 * line and the message word for word; `# error@COL: MSG` also checks the
 * column; `# file-error: MSG` is a diagnostic without a position. The
 * diagnostics reported must be exactly the expected ones (in any order).
 */
#include "fe_test.h"

#include <dirent.h>

typedef struct expect {
  int level;     /* nnc_diag_level, or -1 for file-error */
  int line, col; /* col 0: not checked */
  char msg[512];
  bool matched;
} expect;

enum { MAX_EXPECT = 64 };

/* All expectation tags on one line, in order; a tag's message runs to the
 * next tag or the end of the line. "#> error..." applies to the next line
 * (for lines where a comment cannot go, e.g. inside an unterminated string). */
static int parse_expectations(const char *text, expect *out) {
  static const struct {
    const char *tag;
    int level;
  } tags[] = {{"# error", NNC_DIAG_ERROR},  {"# warning", NNC_DIAG_WARNING},
              {"# note", NNC_DIAG_NOTE},    {"# file-error", -1},
              {"#> error", NNC_DIAG_ERROR}, {"#> note", NNC_DIAG_NOTE}};
  enum { NTAGS = sizeof tags / sizeof tags[0] };
  int n = 0, line = 1;
  const char *p = text;
  while (*p) {
    const char *end = strchr(p, '\n');
    if (!end) end = p + strlen(p);
    const char *hit = NULL;
    int t = -1;
    for (const char *q = p; q < end; q++) {
      for (int k = 0; k < NTAGS && !hit; k++) {
        size_t tl = strlen(tags[k].tag);
        if (q + tl < end && strncmp(q, tags[k].tag, tl) == 0 && (q[tl] == ':' || q[tl] == '@')) {
          hit = q;
          t = k;
        }
      }
      if (!hit) continue;
      if (n == MAX_EXPECT) break;
      expect *e = &out[n++];
      memset(e, 0, sizeof *e);
      e->level = tags[t].level;
      e->line = tags[t].tag[1] == '>' ? line + 1 : line;
      const char *m = hit + strlen(tags[t].tag);
      if (*m == '@') e->col = (int)strtol(m + 1, (char **)&m, 10);
      m++; /* ':' */
      while (*m == ' ')
        m++;
      /* the message ends at the next tag */
      const char *stop = end;
      for (const char *r = m; r < end && stop == end; r++)
        for (int k = 0; k < NTAGS; k++) {
          size_t tl = strlen(tags[k].tag);
          if (r + tl < end && strncmp(r, tags[k].tag, tl) == 0 && (r[tl] == ':' || r[tl] == '@'))
            stop = r;
        }
      size_t len = (size_t)(stop - m);
      while (len && (m[len - 1] == ' ' || m[len - 1] == '\r'))
        len--;
      if (len >= sizeof e->msg) len = sizeof e->msg - 1;
      memcpy(e->msg, m, len);
      q = stop - 1;
      hit = NULL;
    }
    line++;
    p = *end ? end + 1 : end;
  }
  return n;
}

static const char *level_name(int l) {
  return l == NNC_DIAG_ERROR     ? "error"
         : l == NNC_DIAG_WARNING ? "warning"
         : l == NNC_DIAG_NOTE    ? "note"
                                 : "file-error";
}

/* Returns the number of mismatches, printing each. */
static int check_file(const char *dir, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  size_t len = 0;
  char *text = fe_read_file(path, &len);
  if (!text) {
    print_error("%s: cannot read\n", path);
    return 1;
  }
  expect ex[MAX_EXPECT];
  int nex = parse_expectations(text, ex);
  fe f;
  fe_compile_n(&f, text, len);
  int bad = 0;
  if (nex == 0) {
    print_error("%s: no expected diagnostics written in the file\n", name);
    bad++;
  }
  for (int i = 0; i < f.diags.n; i++) {
    const nnc_diag *d = &f.diags.items[i];
    int line = 0, col = 0, level = d->located ? (int)d->level : -1;
    if (d->located) nnc_diags_linecol(&f.diags, d->span.file, d->span.begin, &line, &col);
    bool found = false;
    for (int k = 0; k < nex && !found; k++) {
      expect *e = &ex[k];
      if (e->matched || e->level != level || strcmp(e->msg, d->msg) != 0) continue;
      if (level >= 0 && (e->line != line || (e->col && e->col != col))) continue;
      e->matched = found = true;
    }
    if (!found) {
      print_error("%s:%d:%d: unexpected %s: %s\n", name, line, col, level_name(level), d->msg);
      bad++;
    }
  }
  for (int k = 0; k < nex; k++)
    if (!ex[k].matched) {
      print_error("%s:%d: expected %s not reported: %s\n", name, ex[k].line,
                  level_name(ex[k].level), ex[k].msg);
      bad++;
    }
  if (bad) {
    char *r = fe_render(&f);
    print_error("--- what nnc reported for %s:\n%s", name, r);
    free(r);
  }
  fe_free(&f);
  free(text);
  return bad;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_golden_diagnostics(void **state) {
  (void)state;
  const char *dir = NNC_SOURCE_DIR "/tests/frontend/diag";
  DIR *d = opendir(dir);
  assert_non_null(d);
  char *names[512];
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < 512) {
    size_t l = strlen(e->d_name);
    if (l > 3 && strcmp(e->d_name + l - 3, ".nn") == 0) names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], by_name);
  assert_true(n >= 25);
  int bad = 0;
  for (int i = 0; i < n; i++) {
    bad += check_file(dir, names[i]);
    free(names[i]);
  }
  assert_int_equal(bad, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_golden_diagnostics)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
