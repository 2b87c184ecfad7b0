/* spec.c: reads the training specification, the text the compiler writes
 * beside a compiled model, into an nnc_rt_spec.
 *
 * The text is one `key = value` per line; `#` starts a comment outside
 * strings; blank lines are skipped; CRLF is fine. A value is one or more
 * tokens: a number (anything strtod reads whole, finite), a bare word, or a
 * "double-quoted string" with the escapes \" \\ \n. Each key has one type,
 * given by the table `keys` below, which is the only list of keys: the
 * parser, the duplicate check and the did-you-mean suggestion all read it.
 * List keys (data.augment, load.only) repeat; any other key given twice is
 * an error. After the last line, checks that need several keys (the files
 * each data format needs, keep_best without a path, ...) run.
 *
 * Errors read "origin:LINE: message" (or "origin: message" for a key that
 * is missing). Nothing here touches the file system: paths stay as written
 * and session.c resolves them.
 */
#include "rt_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- The keys ------------------------------------------------------------ */
typedef enum value_type {
  V_STR,     /* char *: a quoted string or a bare word */
  V_BOOL,    /* int: true | false */
  V_INT,     /* int64_t in [lo, hi] */
  V_U64,     /* uint64_t */
  V_NUM,     /* double in [lo, hi] */
  V_ENUM,    /* int: first + index of the word in words */
  V_AUGMENT, /* appends to augment[]: KIND AMOUNT */
  V_STR_LIST /* appends to load_only[] */
} value_type;

typedef struct key_def {
  const char *name;
  value_type type;
  size_t off;
  double lo, hi;
  const char *words; /* V_ENUM: "a|b|c" */
  int first;
} key_def;

#define F(field) offsetof(nnc_rt_spec, field)
#define NO_FIELD ((size_t)-1) /* checked, not stored */
static const key_def keys[] = {
    {"nnc_spec", V_INT, NO_FIELD, 1, 1, NULL, 0}, /* the format version; required */
    {"source", V_STR, F(source), 0, 0, NULL, 0},
    {"base_dir", V_STR, F(base_dir), 0, 0, NULL, 0},
    {"model", V_STR, F(model), 0, 0, NULL, 0},
    {"model_hash", V_STR, F(model_hash), 0, 0, NULL, 0},
    {"data.format", V_ENUM, F(format), 0, 0, "idx|csv|npy", NNC_RT_DATA_IDX},
    {"data.dir", V_STR, F(dir), 0, 0, NULL, 0},
    {"data.train.x", V_STR, F(train.x), 0, 0, NULL, 0},
    {"data.train.y", V_STR, F(train.y), 0, 0, NULL, 0},
    {"data.train.header", V_BOOL, F(train.header), 0, 0, NULL, 0},
    {"data.train.label_column", V_INT, F(train.label_column), -1e6, 1e6, NULL, 0},
    {"data.test.x", V_STR, F(test.x), 0, 0, NULL, 0},
    {"data.test.y", V_STR, F(test.y), 0, 0, NULL, 0},
    {"data.test.header", V_BOOL, F(test.header), 0, 0, NULL, 0},
    {"data.test.label_column", V_INT, F(test.label_column), -1e6, 1e6, NULL, 0},
    {"data.labels", V_ENUM, F(label_is_class), 0, 0, "target|class", 0},
    {"data.scale", V_NUM, F(scale), -1e30, 1e30, NULL, 0},
    {"data.standardize", V_BOOL, F(standardize), 0, 0, NULL, 0},
    {"data.shuffle", V_BOOL, F(shuffle), 0, 0, NULL, 0},
    {"data.val_fraction", V_NUM, F(val_fraction), 0, 0.99, NULL, 0},
    {"data.augment", V_AUGMENT, F(augment), 0, 0, NULL, 0},
    {"validate", V_ENUM, F(validate), 0, 0, "auto|none|test|validation", NNC_RT_VALIDATE_AUTO},
    {"epochs", V_INT, F(epochs), 1, 1e9, NULL, 0},
    {"seed", V_U64, F(seed), 0, 0, NULL, 0},
    {"precision", V_ENUM, F(precision), 0, 0, "f32|bf16", 0},
    {"metric.accuracy", V_BOOL, F(metric_accuracy), 0, 0, NULL, 0},
    {"early_stop.enabled", V_BOOL, F(early_stop), 0, 0, NULL, 0},
    {"early_stop.metric", V_ENUM, F(early_stop_metric), 0, 0, "loss|accuracy", NNC_RT_METRIC_LOSS},
    {"early_stop.patience", V_INT, F(patience), 0, 1e9, NULL, 0},
    {"early_stop.min_delta", V_NUM, F(min_delta), 0, 1e30, NULL, 0},
    {"early_stop.restore_best", V_BOOL, F(restore_best), 0, 0, NULL, 0},
    {"checkpoint.path", V_STR, F(checkpoint_path), 0, 0, NULL, 0},
    {"checkpoint.every", V_INT, F(checkpoint_every), 1, 1e9, NULL, 0},
    {"checkpoint.keep_best", V_BOOL, F(keep_best), 0, 0, NULL, 0},
    {"resume", V_STR, F(resume_path), 0, 0, NULL, 0},
    {"log.path", V_STR, F(log_path), 0, 0, NULL, 0},
    {"log.every_steps", V_INT, F(log_every_steps), 0, 1e12, NULL, 0},
    {"load.path", V_STR, F(load_path), 0, 0, NULL, 0},
    {"load.only", V_STR_LIST, F(load_only), 0, 0, NULL, 0},
    {"load.strip_prefix", V_STR, F(load_strip_prefix), 0, 0, NULL, 0},
    {"load.add_prefix", V_STR, F(load_add_prefix), 0, 0, NULL, 0},
};
#undef F
enum { NKEYS = sizeof keys / sizeof keys[0], MAX_TOKENS = 8 };

static const char *const augment_names[] = {"random_crop", "hflip", "shift", "noise"};

/* ---- Parser state ---------------------------------------------------------- */
typedef enum token_kind { T_NUM, T_WORD, T_STR } token_kind;

typedef struct token {
  token_kind kind;
  char *text; /* decoded, malloc'd */
  double num; /* T_NUM */
} token;

typedef struct parser {
  nnc_rt_spec *s;
  const char *origin;
  int line;
  int seen[NKEYS]; /* line where each key was first given, 0: not yet */
  token tok[MAX_TOKENS];
  int ntok;
  nnc_rt_error *err;
} parser;

static int fail_line(parser *p, int line, const char *msg) {
  if (line > 0) return nnc_rt_fail(p->err, "%s:%d: %s", p->origin, line, msg);
  return nnc_rt_fail(p->err, "%s: %s", p->origin, msg);
}

#define FAIL(p, ...)                                                                               \
  do {                                                                                             \
    char msg_[768];                                                                                \
    snprintf(msg_, sizeof msg_, __VA_ARGS__);                                                      \
    return fail_line(p, (p)->line, msg_);                                                          \
  } while (0)

static char *dup_range(const char *b, size_t n) {
  char *d = malloc(n + 1);
  if (!d) return NULL;
  memcpy(d, b, n);
  d[n] = 0;
  return d;
}

static void clear_tokens(parser *p) {
  for (int i = 0; i < p->ntok; i++)
    free(p->tok[i].text);
  p->ntok = 0;
}

/* ---- Did you mean ------------------------------------------------------- */
size_t nnc_rt_edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b), row[64];
  if (la >= 63 || lb >= 63) return 99;
  for (size_t j = 0; j <= lb; j++)
    row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up;
      row[j] = best;
    }
  }
  return row[lb];
}

const char *nnc_rt_closest_flag(const char *arg, const char *const *names, int n) {
  const char *best = NULL;
  size_t best_d = 3;
  for (int i = 0; i < n; i++) {
    size_t d = nnc_rt_edit_distance(arg, names[i]);
    if (d < best_d) best_d = d, best = names[i];
  }
  return best;
}

/* The known key closest to name, or NULL: a key whose last part is name
 * ("patience" -> "early_stop.patience"), else one within a few edits. */
static const char *suggest_key(const char *name) {
  size_t n = strlen(name), best = n / 3 + 1;
  const char *found = NULL;
  for (int i = 0; i < NKEYS; i++) {
    const char *k = keys[i].name, *dot = strrchr(k, '.');
    if (dot && strcmp(dot + 1, name) == 0) return k;
  }
  for (int i = 0; i < NKEYS; i++) {
    size_t d = nnc_rt_edit_distance(name, keys[i].name);
    if (d < best || (d == best && !found && d <= 2)) best = d, found = keys[i].name;
  }
  return found;
}

/* ---- Tokens -------------------------------------------------------------- */
/* A quoted string starting at *pp (on the quote); leaves *pp after it. */
static int read_string(parser *p, const char **pp, const char *end, token *t) {
  const char *q = *pp + 1;
  char *out = malloc((size_t)(end - q) + 1);
  if (!out) FAIL(p, "out of memory");
  size_t n = 0;
  for (;; q++) {
    if (q >= end) {
      free(out);
      FAIL(p, "unterminated string (a closing \" is missing)");
    }
    if (*q == '"') break;
    if (*q != '\\') {
      out[n++] = *q;
      continue;
    }
    q++;
    char c = q < end ? *q : 0;
    if (c == '"' || c == '\\') {
      out[n++] = c;
    } else if (c == 'n') {
      out[n++] = '\n';
    } else {
      free(out);
      FAIL(p, "unknown escape '\\%c' in a string (only \\\" \\\\ and \\n)", c ? c : ' ');
    }
  }
  out[n] = 0;
  *t = (token){.kind = T_STR, .text = out};
  *pp = q + 1;
  return 0;
}

/* A bare token: a number if strtod reads all of it, else a word. */
static int read_bare(parser *p, const char **pp, const char *end, token *t) {
  const char *b = *pp, *e = b;
  while (e < end && !isspace((unsigned char)*e) && *e != '#' && *e != '"')
    e++;
  char *text = dup_range(b, (size_t)(e - b));
  if (!text) FAIL(p, "out of memory");
  char *stop;
  errno = 0;
  double v = strtod(text, &stop);
  int numeric = stop != text && *stop == 0;
  if (numeric && (!isfinite(v) || errno == ERANGE || isalpha((unsigned char)text[0]))) {
    /* strtod also reads "inf", "nan" and overflows: not numbers here. */
    if (!isalpha((unsigned char)text[0])) {
      char shown[64];
      snprintf(shown, sizeof shown, "%s", text);
      free(text);
      FAIL(p, "'%s' is not a finite number", shown);
    }
    numeric = 0;
  }
  *t = (token){.kind = numeric ? T_NUM : T_WORD, .text = text, .num = v};
  *pp = e;
  return 0;
}

/* Splits the value part of a line into p->tok. */
static int read_tokens(parser *p, const char *q, const char *end) {
  for (;;) {
    while (q < end && isspace((unsigned char)*q))
      q++;
    if (q >= end || *q == '#') return 0;
    if (p->ntok == MAX_TOKENS) FAIL(p, "too many values (at most %d)", MAX_TOKENS);
    token *t = &p->tok[p->ntok];
    if (*q == '"' ? read_string(p, &q, end, t) : read_bare(p, &q, end, t)) return -1;
    p->ntok++;
    if (q < end && !isspace((unsigned char)*q) && *q != '#')
      FAIL(p, "expected a space between values, got '%c'", *q);
  }
}

/* ---- Values -------------------------------------------------------------- */
static const char *kind_name(token_kind k) {
  return k == T_NUM ? "a number" : k == T_WORD ? "a word" : "a string";
}

static int want_count(parser *p, const key_def *k, int n) {
  if (p->ntok == n) return 0;
  if (p->ntok == 0) FAIL(p, "'%s' needs a value", k->name);
  FAIL(p, "'%s' takes %d value%s, got %d", k->name, n, n == 1 ? "" : "s", p->ntok);
}

static int to_int(parser *p, const key_def *k, const token *t, int64_t *out) {
  char *stop;
  errno = 0;
  long long v = t->kind == T_NUM ? strtoll(t->text, &stop, 10) : 0;
  if (t->kind != T_NUM || *stop || errno)
    FAIL(p, "'%s' must be a whole number, got '%s'", k->name, t->text);
  if ((double)v < k->lo || (double)v > k->hi)
    FAIL(p, "'%s' must be between %.0f and %.0f, got %lld", k->name, k->lo, k->hi, v);
  *out = v;
  return 0;
}

static int to_u64(parser *p, const key_def *k, const token *t, uint64_t *out) {
  char *stop;
  errno = 0;
  unsigned long long v = t->kind == T_NUM ? strtoull(t->text, &stop, 10) : 0;
  if (t->kind != T_NUM || *stop || errno || t->text[0] == '-' || t->text[0] == '+')
    FAIL(p, "'%s' must be a whole number from 0 to 18446744073709551615, got '%s'", k->name,
         t->text);
  *out = v;
  return 0;
}

static int to_num(parser *p, const key_def *k, const token *t, double *out) {
  if (t->kind != T_NUM)
    FAIL(p, "'%s' must be a number, got %s '%s'", k->name, kind_name(t->kind), t->text);
  if (t->num < k->lo || t->num > k->hi)
    FAIL(p, "'%s' must be between %g and %g, got %s", k->name, k->lo, k->hi, t->text);
  *out = t->num;
  return 0;
}

/* The index of word w in "a|b|c", or -1. */
static int word_index(const char *words, const char *w) {
  size_t n = strlen(w);
  for (int i = 0;; i++) {
    const char *bar = strchr(words, '|');
    size_t len = bar ? (size_t)(bar - words) : strlen(words);
    if (len == n && strncmp(words, w, n) == 0) return i;
    if (!bar) return -1;
    words = bar + 1;
  }
}

static int to_enum(parser *p, const key_def *k, const token *t, int *out) {
  int i = t->kind == T_WORD ? word_index(k->words, t->text) : -1;
  if (i < 0) {
    char alts[128];
    snprintf(alts, sizeof alts, "%s", k->words);
    for (char *c = alts; *c; c++)
      if (*c == '|') *c = ',';
    FAIL(p, "'%s' must be one of %s; got '%s'", k->name, alts, t->text);
  }
  *out = k->first + i;
  return 0;
}

/* data.augment = KIND AMOUNT, e.g. `random_crop 4`, `noise 0.01`. */
static int add_augment(parser *p, const key_def *k) {
  nnc_rt_spec *s = p->s;
  if (want_count(p, k, 2)) return -1;
  int kind = -1;
  for (int i = 0; i < 4; i++)
    if (p->tok[0].kind == T_WORD && strcmp(p->tok[0].text, augment_names[i]) == 0) kind = i;
  if (kind < 0)
    FAIL(p, "unknown augmentation '%s' (random_crop, hflip, shift or noise)", p->tok[0].text);
  key_def amount = {augment_names[kind], V_NUM, 0, 0, kind == NNC_RT_AUG_HFLIP ? 1 : 1e6, NULL, 0};
  double a;
  if (to_num(p, &amount, &p->tok[1], &a)) return -1;
  if ((kind == NNC_RT_AUG_RANDOM_CROP || kind == NNC_RT_AUG_SHIFT) && a != floor(a))
    FAIL(p, "%s takes a whole number of pixels, got %s", augment_names[kind], p->tok[1].text);
  if (s->naugment == NNC_RT_SPEC_MAX_LIST)
    FAIL(p, "too many augmentations (at most %d)", NNC_RT_SPEC_MAX_LIST);
  s->augment[s->naugment++] = (nnc_rt_augment){.kind = kind, .a = a};
  return 0;
}

static int add_only(parser *p, const key_def *k) {
  nnc_rt_spec *s = p->s;
  if (want_count(p, k, 1)) return -1;
  if (s->nload_only == NNC_RT_SPEC_MAX_LIST)
    FAIL(p, "too many '%s' patterns (at most %d)", k->name, NNC_RT_SPEC_MAX_LIST);
  s->load_only[s->nload_only++] = p->tok[0].text;
  p->tok[0].text = NULL; /* moved into the spec */
  return 0;
}

/* Stores the line's tokens into the field of key k. */
static int set_value(parser *p, const key_def *k) {
  char *field = k->off == NO_FIELD ? NULL : (char *)p->s + k->off;
  if (k->type == V_AUGMENT) return add_augment(p, k);
  if (k->type == V_STR_LIST) return add_only(p, k);
  if (want_count(p, k, 1)) return -1;
  token *t = &p->tok[0];
  switch (k->type) {
  case V_STR:
    if (t->kind == T_NUM) FAIL(p, "'%s' must be a string, got the number %s", k->name, t->text);
    *(char **)field = t->text;
    t->text = NULL;
    return 0;
  case V_BOOL:
    if (t->kind != T_WORD || (strcmp(t->text, "true") && strcmp(t->text, "false")))
      FAIL(p, "'%s' must be true or false, got '%s'", k->name, t->text);
    *(int *)field = strcmp(t->text, "true") == 0;
    return 0;
  case V_INT: {
    int64_t v = 0;
    if (to_int(p, k, t, &v)) return -1;
    if (k->off != NO_FIELD) memcpy(field, &v, sizeof v);
    return 0;
  }
  case V_U64: return to_u64(p, k, t, (uint64_t *)field);
  case V_NUM: return to_num(p, k, t, (double *)field);
  case V_ENUM: return to_enum(p, k, t, (int *)field);
  case V_AUGMENT:
  case V_STR_LIST: break;
  }
  return 0;
}

/* ---- Lines --------------------------------------------------------------- */
static int find_key(const char *name) {
  for (int i = 0; i < NKEYS; i++)
    if (strcmp(keys[i].name, name) == 0) return i;
  return -1;
}

/* key = value ... [# comment] */
static int parse_line(parser *p, const char *b, const char *e) {
  while (b < e && isspace((unsigned char)*b))
    b++;
  if (b == e || *b == '#') return 0;
  const char *k = b;
  while (b < e && (isalnum((unsigned char)*b) || *b == '_' || *b == '.'))
    b++;
  if (b == k) FAIL(p, "expected a key such as 'epochs', got '%c'", *k);
  char name[64];
  snprintf(name, sizeof name, "%.*s", (int)(b - k), k);
  while (b < e && (*b == ' ' || *b == '\t'))
    b++;
  if (b == e || *b != '=') FAIL(p, "expected '=' after '%s'", name);
  int i = find_key(name);
  if (i < 0) {
    const char *s = suggest_key(name);
    if (s) FAIL(p, "unknown key '%s'; did you mean '%s'?", name, s);
    FAIL(p, "unknown key '%s'", name);
  }
  const key_def *def = &keys[i];
  int list = def->type == V_AUGMENT || def->type == V_STR_LIST;
  if (p->seen[i] && !list) FAIL(p, "'%s' is given twice (first on line %d)", name, p->seen[i]);
  if (!p->seen[i]) p->seen[i] = p->line;
  int rc = read_tokens(p, b + 1, e);
  if (rc == 0) rc = set_value(p, def);
  clear_tokens(p);
  return rc;
}

/* ---- Checks across keys ---------------------------------------------------- */
static int line_of(const parser *p, const char *name) {
  return p->seen[find_key(name)];
}

static int fail_key(parser *p, const char *name, const char *msg) {
  return fail_line(p, line_of(p, name), msg);
}

static int check_data(parser *p) {
  const nnc_rt_spec *s = p->s;
  if (!line_of(p, "data.format")) return fail_line(p, 0, "missing 'data.format' (idx, csv or npy)");
  if (s->format == NNC_RT_DATA_IDX) {
    if (!s->dir) return fail_key(p, "data.format", "IDX data needs 'data.dir' (the folder)");
    if (s->label_is_class == 0)
      return fail_key(p, "data.labels", "IDX data has class labels, not targets");
    return 0;
  }
  if (!s->train.x)
    return fail_key(p, "data.format", "missing 'data.train.x' (the training data file)");
  if (s->format == NNC_RT_DATA_CSV) {
    if (s->train.y) return fail_key(p, "data.train.y", "CSV data keeps its labels in a column");
    if (s->test.y) return fail_key(p, "data.test.y", "CSV data keeps its labels in a column");
    return 0;
  }
  if (!s->train.y) return fail_key(p, "data.train.x", "NumPy data needs 'data.train.y' too");
  if (!s->test.x != !s->test.y)
    return fail_key(p, s->test.x ? "data.test.x" : "data.test.y",
                    "NumPy test data needs both 'data.test.x' and 'data.test.y'");
  return 0;
}

static int check_all(parser *p) {
  const nnc_rt_spec *s = p->s;
  if (!line_of(p, "nnc_spec"))
    return fail_line(p, 0, "not a training spec: the line 'nnc_spec = 1' is missing");
  if (check_data(p)) return -1;
  if (s->validate == NNC_RT_VALIDATE_SPLIT && s->val_fraction <= 0)
    return fail_key(p, "validate", "'validate = validation' needs data.val_fraction > 0");
  if (s->keep_best && !s->checkpoint_path)
    return fail_key(p, "checkpoint.keep_best", "keep_best needs 'checkpoint.path'");
  if (s->nload_only && !s->load_path)
    return fail_key(p, "load.only", "'load.only' needs 'load.path' (the checkpoint to load)");
  return 0;
}

/* ---- Entry points ------------------------------------------------------------ */
static void set_defaults(nnc_rt_spec *s) {
  memset(s, 0, sizeof *s);
  s->train.label_column = s->test.label_column = -1;
  s->label_is_class = -1;
  s->scale = 1;
  s->shuffle = 1;
  s->epochs = 1;
  s->metric_accuracy = 1;
  s->patience = 5;
  s->checkpoint_every = 1;
}

int nnc_rt_spec_parse(nnc_rt_spec *s, const char *text, const char *origin, nnc_rt_error *err) {
  set_defaults(s);
  if (!origin) origin = "spec";
  parser p = {.s = s, .origin = origin, .err = err};
  s->origin = dup_range(origin, strlen(origin));
  if (!s->origin) return nnc_rt_fail(err, "out of memory");
  int rc = 0;
  for (const char *b = text; rc == 0 && *b;) {
    const char *nl = strchr(b, '\n'), *e = nl ? nl : b + strlen(b);
    const char *end = e > b && e[-1] == '\r' ? e - 1 : e;
    p.line++;
    rc = parse_line(&p, b, end);
    b = nl ? nl + 1 : e;
  }
  if (rc == 0) rc = check_all(&p);
  if (rc) nnc_rt_spec_free(s);
  return rc;
}

void nnc_rt_spec_free(nnc_rt_spec *s) {
  char **strings[] = {&s->origin,     &s->source,    &s->base_dir,          &s->model,
                      &s->model_hash, &s->dir,       &s->train.x,           &s->train.y,
                      &s->test.x,     &s->test.y,    &s->checkpoint_path,   &s->resume_path,
                      &s->log_path,   &s->load_path, &s->load_strip_prefix, &s->load_add_prefix};
  for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
    free(*strings[i]);
  for (int i = 0; i < s->nload_only; i++)
    free(s->load_only[i]);
  set_defaults(s);
}
