/* json.c: a small, strict JSON parser for the runtime's own inputs: the
 * header of a safetensors checkpoint (read by safetensors.c) and the JSON
 * lines of a metrics log (read back by plot.c to draw it).
 *
 * It takes a byte range and gives a tree of nnc_rt_json values (objects keep
 * their keys in order; strings are decoded to UTF-8, escapes and surrogate
 * pairs included). Everything is RFC 8259 except that a string may not
 * contain U+0000 (names become C strings). Input comes from files that may
 * be corrupt, so every error says where: "ckpt.safetensors: byte 41:
 * expected ':' after an object key", the byte being the offset within the
 * file (the caller passes the offset of text in it). Nesting is limited to
 * JSON_MAX_DEPTH so a hostile header cannot exhaust the stack.
 */
#include "rt_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { JSON_MAX_DEPTH = 64 };

typedef struct json_parser {
  const char *s;
  size_t len, pos;
  int64_t base;
  const char *path;
  nnc_rt_error *err;
} json_parser;

static int jfail(json_parser *p, size_t at, const char *what) {
  return nnc_rt_fail(p->err, "%s: byte %lld: %s", p->path, (long long)(p->base + (int64_t)at),
                     what);
}

static void skip_ws(json_parser *p) {
  while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                             p->s[p->pos] == '\r'))
    p->pos++;
}

static int peek(json_parser *p) {
  return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int parse_value(json_parser *p, nnc_rt_json *v, int depth);

static int hex4(json_parser *p, unsigned *out) {
  if (p->len - p->pos < 4) return jfail(p, p->pos, "\\u escape needs four hex digits");
  unsigned u = 0;
  for (int i = 0; i < 4; i++) {
    char c = p->s[p->pos + (size_t)i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : -1;
    if (d < 0) return jfail(p, p->pos + (size_t)i, "bad hex digit in \\u escape");
    u = u * 16 + (unsigned)d;
  }
  p->pos += 4;
  *out = u;
  return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) return o[0] = (char)cp, 1;
  if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), 2;
  if (cp < 0x10000)
    return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | (cp >> 6 & 0x3F)),
           o[2] = (char)(0x80 | (cp & 0x3F)), 3;
  o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* \uXXXX (already past the 'u'), with a following low surrogate if needed. */
static int unicode_escape(json_parser *p, unsigned *cp) {
  size_t at = p->pos - 2;
  if (hex4(p, cp)) return -1;
  if (*cp >= 0xDC00 && *cp < 0xE000) return jfail(p, at, "lone low surrogate in \\u escape");
  if (*cp >= 0xD800 && *cp < 0xDC00) {
    unsigned lo;
    if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u')
      return jfail(p, at, "high surrogate without a low one");
    p->pos += 2;
    if (hex4(p, &lo)) return -1;
    if (lo < 0xDC00 || lo >= 0xE000) return jfail(p, at, "high surrogate without a low one");
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
  }
  if (*cp == 0) return jfail(p, at, "\\u0000 is not allowed in a string");
  return 0;
}

/* A string literal at p->pos (the opening quote) into a malloc'd C string.
 * The decoded text is never longer than the literal. */
static int parse_string(json_parser *p, char **out) {
  size_t start = p->pos++;
  size_t end = start + 1;
  while (end < p->len && p->s[end] != '"')
    end += p->s[end] == '\\' ? 2 : 1;
  if (end >= p->len) return jfail(p, start, "unterminated string");
  char *o = malloc(end - start + 1), *w = o;
  if (!o) return jfail(p, start, "out of memory");
  while (p->pos < end) {
    unsigned char c = (unsigned char)p->s[p->pos++];
    if (c < 0x20) {
      free(o);
      return jfail(p, p->pos - 1, "control character in a string (escape it)");
    }
    if (c != '\\') {
      *w++ = (char)c;
      continue;
    }
    char e = p->s[p->pos++];
    unsigned cp;
    switch (e) {
    case '"': *w++ = '"'; break;
    case '\\': *w++ = '\\'; break;
    case '/': *w++ = '/'; break;
    case 'b': *w++ = '\b'; break;
    case 'f': *w++ = '\f'; break;
    case 'n': *w++ = '\n'; break;
    case 'r': *w++ = '\r'; break;
    case 't': *w++ = '\t'; break;
    case 'u':
      if (unicode_escape(p, &cp)) {
        free(o);
        return -1;
      }
      w += put_utf8(w, cp);
      break;
    default: free(o); return jfail(p, p->pos - 2, "unknown escape in a string");
    }
  }
  if (p->pos != end) { /* an escape ran past the closing quote */
    free(o);
    return jfail(p, start, "unterminated string");
  }
  p->pos = end + 1;
  *w = 0;
  *out = o;
  return 0;
}

/* number = [-] int [frac] [exp], RFC 8259 grammar exactly. */
static int parse_number(json_parser *p, nnc_rt_json *v) {
  size_t start = p->pos, i = p->pos;
  int integer = 1;
  if (i < p->len && p->s[i] == '-') i++;
  if (i >= p->len || p->s[i] < '0' || p->s[i] > '9') return jfail(p, start, "expected a value");
  if (p->s[i] == '0' && i + 1 < p->len && p->s[i + 1] >= '0' && p->s[i + 1] <= '9')
    return jfail(p, start, "number with a leading zero");
  while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
    i++;
  if (i < p->len && p->s[i] == '.') {
    integer = 0;
    if (++i >= p->len || p->s[i] < '0' || p->s[i] > '9')
      return jfail(p, i, "expected a digit after '.'");
    while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
      i++;
  }
  if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
    integer = 0;
    if (++i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
    if (i >= p->len || p->s[i] < '0' || p->s[i] > '9')
      return jfail(p, i, "expected a digit in the exponent");
    while (i < p->len && p->s[i] >= '0' && p->s[i] <= '9')
      i++;
  }
  char buf[64];
  size_t n = i - start;
  if (n >= sizeof buf) return jfail(p, start, "number too long");
  memcpy(buf, p->s + start, n);
  buf[n] = 0;
  v->kind = NNC_RT_JSON_NUMBER;
  v->number = strtod(buf, NULL);
  if (integer) {
    errno = 0;
    long long x = strtoll(buf, NULL, 10);
    v->is_integer = errno == 0;
    v->integer = x;
  }
  p->pos = i;
  return 0;
}

static int literal(json_parser *p, const char *word) {
  size_t n = strlen(word);
  if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
    return jfail(p, p->pos, "expected a value");
  p->pos += n;
  return 0;
}

/* Appends a zeroed member to an array or object value. */
static nnc_rt_json *push_member(json_parser *p, nnc_rt_json *v, char *key) {
  if ((v->n & (v->n - 1)) == 0) { /* grow at powers of two */
    int cap = v->n ? 2 * v->n : 1;
    nnc_rt_json *items = realloc(v->items, (size_t)cap * sizeof *items);
    if (items) v->items = items;
    char **keys = key ? realloc(v->keys, (size_t)cap * sizeof *keys) : v->keys;
    if (keys) v->keys = keys;
    if (!items || (key && !keys)) {
      free(key);
      jfail(p, p->pos, "out of memory");
      return NULL;
    }
  }
  if (key) v->keys[v->n] = key;
  nnc_rt_json *m = &v->items[v->n++];
  memset(m, 0, sizeof *m);
  return m;
}

/* '[' or '{' already seen at `open`; members until the closing bracket. */
static int parse_members(json_parser *p, nnc_rt_json *v, int is_object, int depth) {
  char close = is_object ? '}' : ']';
  size_t open = p->pos++;
  v->kind = is_object ? NNC_RT_JSON_OBJECT : NNC_RT_JSON_ARRAY;
  skip_ws(p);
  if (peek(p) == close) return p->pos++, 0;
  for (;;) {
    char *key = NULL;
    skip_ws(p);
    if (is_object) {
      if (peek(p) != '"') return jfail(p, p->pos, "expected a string key in an object");
      if (parse_string(p, &key)) return -1;
      skip_ws(p);
      if (peek(p) != ':') {
        free(key);
        return jfail(p, p->pos, "expected ':' after an object key");
      }
      p->pos++;
    }
    nnc_rt_json *m = push_member(p, v, key);
    if (!m || parse_value(p, m, depth + 1)) return -1;
    skip_ws(p);
    int c = peek(p);
    if (c == ',') {
      p->pos++;
      continue;
    }
    if (c == close) return p->pos++, 0;
    if (c < 0) return jfail(p, open, is_object ? "unclosed '{'" : "unclosed '['");
    return jfail(p, p->pos,
                 is_object ? "expected ',' or '}' in an object"
                           : "expected ',' or ']' in an array");
  }
}

static int parse_value(json_parser *p, nnc_rt_json *v, int depth) {
  skip_ws(p);
  memset(v, 0, sizeof *v);
  v->offset = p->base + (int64_t)p->pos;
  if (depth > JSON_MAX_DEPTH) return jfail(p, p->pos, "nested too deeply");
  switch (peek(p)) {
  case '{': return parse_members(p, v, 1, depth);
  case '[': return parse_members(p, v, 0, depth);
  case '"': v->kind = NNC_RT_JSON_STRING; return parse_string(p, &v->string);
  case 't': v->kind = NNC_RT_JSON_BOOL, v->boolean = 1; return literal(p, "true");
  case 'f': v->kind = NNC_RT_JSON_BOOL; return literal(p, "false");
  case 'n': v->kind = NNC_RT_JSON_NULL; return literal(p, "null");
  case -1: return jfail(p, p->pos, "unexpected end of JSON");
  default: return parse_number(p, v);
  }
}

int nnc_rt_json_parse(nnc_rt_json *v, const char *text, size_t len, int64_t base, const char *path,
                      nnc_rt_error *err) {
  json_parser p = {.s = text, .len = len, .base = base, .path = path, .err = err};
  if (parse_value(&p, v, 0)) {
    nnc_rt_json_free(v);
    return -1;
  }
  skip_ws(&p);
  if (p.pos != p.len) {
    nnc_rt_json_free(v);
    return jfail(&p, p.pos, "unexpected text after the JSON value");
  }
  return 0;
}

void nnc_rt_json_free(nnc_rt_json *v) {
  for (int i = 0; i < v->n; i++) {
    nnc_rt_json_free(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->string);
  memset(v, 0, sizeof *v);
}

const nnc_rt_json *nnc_rt_json_get(const nnc_rt_json *obj, const char *key) {
  if (!obj || obj->kind != NNC_RT_JSON_OBJECT) return NULL;
  for (int i = 0; i < obj->n; i++)
    if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
  return NULL;
}

size_t nnc_rt_json_quote(char *buf, size_t size, size_t len, const char *s) {
#define PUT(c)                                                                                     \
  do {                                                                                             \
    if (len + 1 < size) buf[len] = (c);                                                            \
    len++;                                                                                         \
  } while (0)
  PUT('"');
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\') {
      PUT('\\');
      PUT((char)*c);
    } else if (*c < 0x20) {
      char esc[8];
      snprintf(esc, sizeof esc, "\\u%04x", *c);
      for (char *e = esc; *e; e++)
        PUT(*e);
    } else {
      PUT((char)*c);
    }
  }
  PUT('"');
  if (size) buf[len < size ? len : size - 1] = 0;
  return len;
#undef PUT
}

int nnc_rt_read_file(const char *path, char **data, size_t *len, nnc_rt_error *err) {
  *data = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return nnc_rt_fail(err, "%s: cannot open: %s", path, strerror(errno));
  struct stat st = {0};
  if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
    int is_dir = S_ISDIR(st.st_mode);
    fclose(f);
    return nnc_rt_fail(err, "%s: %s, not a regular file", path,
                       is_dir ? "is a folder" : "is a device, pipe or socket");
  }
  /* One byte more than the size: a file that grew meanwhile shows as such. */
  size_t cap = (size_t)st.st_size, n = 0;
  char *buf = (uint64_t)st.st_size < SIZE_MAX - 1 ? malloc(cap + 2) : NULL;
  if (!buf) {
    fclose(f);
    return nnc_rt_fail(err, "%s: out of memory for its %lld bytes", path, (long long)st.st_size);
  }
  n = fread(buf, 1, cap + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad || n != cap) {
    free(buf);
    return bad ? nnc_rt_fail(err, "%s: read error at byte %zu", path, n)
               : nnc_rt_fail(err, "%s: changed size while being read", path);
  }
  buf[n] = 0;
  *data = buf;
  *len = n;
  return 0;
}
