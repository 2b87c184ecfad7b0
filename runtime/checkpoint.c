/* checkpoint.c: a compiled model's persistent state <-> a safetensors file.
 *
 * Saving takes the model's tensor table (every persistent tensor: params,
 * frozen weights, buffers, optimizer state), any extra tensors the caller
 * keeps outside the arena, and the training position (nnc_rt_train_state),
 * and hands them to safetensors.c, which writes atomically. The position
 * goes into "__metadata__" as strings (keys in docs/runtime.md); doubles are
 * printed with 17 significant digits and RNG words in hex, so they come
 * back bit for bit.
 *
 * Loading selects model tensors (by role: weights only, or everything for a
 * resume; and by fnmatch globs), renames the file's tensors (strip a prefix,
 * add a prefix) and matches by name. All problems are collected first —
 * each missing tensor, each shape or dtype mismatch, each tensor holding a
 * NaN or an infinity, and (for a load without
 * globs) each file tensor the model lacks — and reported together; only when there are none is the
 * arena written, so a failed load changes nothing.
 */
#include "rt_internal.h"

#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { META_MAX = 16 };
static const char CKPT_FORMAT[] = "nnc-checkpoint/1";

int nnc_rt_checkpoint_best_path(char *buf, size_t size, const char *path) {
  const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
  if (!dot || (slash && dot < slash) || dot == (slash ? slash + 1 : path))
    dot = path + strlen(path); /* no extension (a leading dot is a hidden name) */
  int n = snprintf(buf, size, "%.*s.best%s", (int)(dot - path), path, dot);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

/* ---- Save ---- */

typedef struct meta_buf {
  const char *kv[2 * META_MAX];
  char values[META_MAX][80];
  int n;
} meta_buf;

static void meta_put(meta_buf *mb, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void meta_put(meta_buf *mb, const char *key, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(mb->values[mb->n], sizeof mb->values[0], fmt, ap);
  va_end(ap);
  mb->kv[2 * mb->n] = key;
  mb->kv[2 * mb->n + 1] = mb->values[mb->n];
  mb->n++;
}

static void meta_rng(meta_buf *mb, const char *key, const nnc_rt_rng *r) {
  meta_put(mb, key, "%016" PRIx64 " %016" PRIx64 " %016" PRIx64 " %016" PRIx64, r->s[0], r->s[1],
           r->s[2], r->s[3]);
}

static void make_meta(meta_buf *mb, const nnc_rt_ckpt_save_opts *o) {
  const nnc_rt_train_state *st = o->state;
  const char *hash = o->model_hash ? o->model_hash : st ? st->model_hash : "";
  mb->n = 0;
  meta_put(mb, "format", "%s", CKPT_FORMAT);
  mb->kv[2 * mb->n] = "model_hash"; /* may be longer than a value slot */
  mb->kv[2 * mb->n++ + 1] = hash;
  if (!st) return;
  meta_put(mb, "step", "%" PRId64, st->step);
  meta_put(mb, "epoch", "%" PRId64, st->epoch);
  meta_put(mb, "schedule_step", "%" PRId64, st->step);
  meta_put(mb, "schedule_epoch", "%" PRId64, st->epoch);
  meta_put(mb, "seed", "%" PRIu64, st->seed);
  meta_rng(mb, "rng_shuffle", &st->shuffle_rng);
  meta_rng(mb, "rng_augment", &st->augment_rng);
  meta_put(mb, "best_metric", "%.17g", st->best_metric);
  meta_put(mb, "best_epoch", "%" PRId64, st->best_epoch);
  meta_put(mb, "wait", "%" PRId64, st->wait);
  meta_put(mb, "wall_s", "%.17g", st->wall_s);
}

int nnc_rt_checkpoint_save(const char *path, const nnc_rt_model *m, const char *arena,
                           const nnc_rt_ckpt_save_opts *opts, nnc_rt_error *err) {
  nnc_rt_ckpt_save_opts none = {0};
  if (!opts) opts = &none;
  int nt = m->ntensors + opts->nextra;
  nnc_rt_st_out *out = calloc(nt ? (size_t)nt : 1, sizeof *out);
  if (!out) return nnc_rt_fail(err, "%s: out of memory", path);
  nt = 0;
  for (int i = 0; i < m->ntensors; i++) {
    const nnc_rt_tensor *t = &m->tensors[i];
    if (t->role == NNC_RT_GRAD) continue; /* data-parallel plumbing, not state */
    out[nt++] = (nnc_rt_st_out){t->name, t->rank, t->shape, (const float *)(arena + t->offset)};
  }
  for (int i = 0; i < opts->nextra; i++) {
    const nnc_rt_named_tensor *t = &opts->extra[i];
    out[nt++] = (nnc_rt_st_out){t->name, t->rank, t->shape, t->data};
  }
  meta_buf mb;
  make_meta(&mb, opts);
  int rc = nnc_rt_st_write(path, out, nt, mb.kv, mb.n, opts->io, err);
  free(out);
  return rc;
}

/* ---- Load ---- */

/* The problems found while matching, reported all at once. */
typedef struct problems {
  int n, shown;
  size_t len;
  char text[sizeof(((nnc_rt_error *)0)->msg)];
  const nnc_rt_ckpt_load_opts *o;
} problems;

static void problem(problems *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(problems *p, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (p->o->on_problem) p->o->on_problem(p->o->user, line);
  p->n++;
  /* Keep room for the "(and N more)" tail. */
  if (p->shown == p->n - 1 && p->len + strlen(line) + 200 < sizeof p->text) {
    p->len += (size_t)snprintf(p->text + p->len, sizeof p->text - p->len, "\n  %s", line);
    p->shown++;
  }
}

static void shape_str(char *buf, size_t size, const char *dtype, int rank, const int64_t *shape) {
  int n = snprintf(buf, size, "%s[", dtype);
  for (int i = 0; i < rank && n >= 0 && (size_t)n < size; i++)
    n += snprintf(buf + n, size - (size_t)n, "%s%lld", i ? "," : "", (long long)shape[i]);
  if (n >= 0 && (size_t)n < size) snprintf(buf + n, size - (size_t)n, "]");
}

static const char *lower_dtype(const char *d) {
  return strcmp(d, "F32") == 0 ? "f32" : strcmp(d, "F64") == 0 ? "f64" : d;
}

static int matches_only(const nnc_rt_ckpt_load_opts *o, const char *name) {
  if (o->nonly == 0) return 1;
  for (int i = 0; i < o->nonly; i++)
    if (fnmatch(o->only[i], name, 0) == 0) return 1;
  return 0;
}

static int selected(const nnc_rt_ckpt_load_opts *o, const nnc_rt_tensor *t) {
  if (t->role == NNC_RT_GRAD) return 0; /* never saved */
  if (o->weights_only && t->role == NNC_RT_OPT_STATE) return 0;
  return matches_only(o, t->name);
}

/* The model-side names of the file's tensors after strip/add prefix. */
static char **renamed_names(const nnc_rt_st_file *f, const nnc_rt_ckpt_load_opts *o) {
  char **names = calloc((size_t)f->nentries + 1, sizeof *names);
  if (!names) return NULL;
  const char *strip = o->strip_prefix ? o->strip_prefix : "",
             *add = o->add_prefix ? o->add_prefix : "";
  for (int i = 0; i < f->nentries; i++) {
    const char *n = f->entries[i].name;
    if (strncmp(n, strip, strlen(strip)) == 0) n += strlen(strip);
    size_t len = strlen(add) + strlen(n) + 1;
    names[i] = malloc(len);
    if (!names[i]) {
      for (int k = 0; k < i; k++)
        free(names[k]);
      free(names);
      return NULL;
    }
    snprintf(names[i], len, "%s%s", add, n);
  }
  return names;
}

static int find_renamed(char **names, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(names[i], name) == 0) return i;
  return -1;
}

/* Checks one wanted tensor against the file; returns the entry or NULL. */
static const nnc_rt_st_entry *match_one(const nnc_rt_st_file *f, char **names, const char *name,
                                        int rank, const int64_t *shape, int required, int by_numel,
                                        problems *p) {
  char want[160], have[160];
  shape_str(want, sizeof want, "f32", rank, shape);
  int i = find_renamed(names, f->nentries, name);
  if (i < 0) {
    if (required) problem(p, "%s: missing from the checkpoint (model has %s)", name, want);
    return NULL;
  }
  const nnc_rt_st_entry *e = &f->entries[i];
  shape_str(have, sizeof have, lower_dtype(e->dtype_name), e->rank, e->shape);
  if (e->dtype == NNC_RT_ST_OTHER) {
    problem(p, "%s: checkpoint has %s; only F32 and F64 tensors load", name, have);
    return NULL;
  }
  int same = by_numel
                 ? nnc_rt_numel(e->rank, e->shape) == nnc_rt_numel(rank, shape)
                 : e->rank == rank && memcmp(e->shape, shape, (size_t)rank * sizeof *shape) == 0;
  if (!same) {
    problem(p, "%s: checkpoint has %s, model has %s", name, have, want);
    return NULL;
  }
  double v;
  int64_t bad = nnc_rt_st_first_nonfinite(f, e, &v);
  if (bad >= 0) {
    problem(p, "%s: element %lld is %g (byte %lld; only finite values load)", name, (long long)bad,
            v, (long long)(f->data_start + e->begin + bad * (e->dtype == NNC_RT_ST_F64 ? 8 : 4)));
    return NULL;
  }
  return e;
}

static int known_name(const nnc_rt_model *m, const nnc_rt_ckpt_load_opts *o, const char *name) {
  for (int i = 0; i < m->ntensors; i++)
    if (strcmp(m->tensors[i].name, name) == 0) return 1;
  for (int i = 0; i < o->nextra; i++)
    if (strcmp(o->extra[i].name, name) == 0) return 1;
  return 0;
}

/* Finds every problem; fills src[i] for each model tensor to load. */
static void match_all(const nnc_rt_st_file *f, char **names, const nnc_rt_model *m,
                      const nnc_rt_ckpt_load_opts *o, const nnc_rt_st_entry **src,
                      const nnc_rt_st_entry **extra_src, problems *p) {
  for (int i = 0; i < m->ntensors; i++) {
    const nnc_rt_tensor *t = &m->tensors[i];
    src[i] = selected(o, t) ? match_one(f, names, t->name, t->rank, t->shape, 1, 0, p) : NULL;
  }
  for (int i = 0; i < o->nextra; i++) {
    const nnc_rt_named_tensor *t = &o->extra[i];
    extra_src[i] = match_one(f, names, t->name, t->rank, t->shape, 0, o->extra_by_numel, p);
  }
  /* With globs the load takes what it selects; the rest of the file is not
   * its business. Without, the file must be this model's. */
  for (int i = 0; o->nonly == 0 && i < f->nentries; i++) {
    if (known_name(m, o, names[i])) continue;
    char have[160];
    const nnc_rt_st_entry *e = &f->entries[i];
    shape_str(have, sizeof have, lower_dtype(e->dtype_name), e->rank, e->shape);
    if (strcmp(names[i], e->name) == 0)
      problem(p, "%s: in the checkpoint (%s) but not in the model", names[i], have);
    else
      problem(p, "%s (renamed from %s): in the checkpoint (%s) but not in the model", names[i],
              e->name, have);
  }
}

/* A whole number in [lo, hi]. */
static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  if (!s || !*s) return -1;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  *out = v;
  return *end || errno || v < lo || v > hi ? -1 : 0;
}

/* Four hex words, not all zero: the all-zero state is a fixed point of
 * xoshiro256**, on which a bounded draw would never return. */
static int parse_rng(const char *s, nnc_rt_rng *r) {
  if (!s) return -1;
  for (int i = 0; i < 4; i++) {
    char *end;
    errno = 0;
    r->s[i] = strtoull(s, &end, 16);
    if (end == s || errno || *s == '-') return -1;
    s = end;
  }
  return *s || (r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0 ? -1 : 0;
}

/* The position's numbers, each in its range (a damaged file must not make
 * a run train 10^12 epochs or none): epochs and steps from 0 to
 * NNC_RT_MAX_EPOCHS and NNC_RT_MAX_STEPS, best_epoch <= epoch, wait >= 0. */
static const char *parse_position(const nnc_rt_st_file *f, nnc_rt_train_state *st) {
  if (parse_i64(nnc_rt_st_meta(f, "step"), 0, NNC_RT_MAX_STEPS, &st->step)) return "step";
  if (parse_i64(nnc_rt_st_meta(f, "epoch"), 0, NNC_RT_MAX_EPOCHS, &st->epoch)) return "epoch";
  if (parse_i64(nnc_rt_st_meta(f, "best_epoch"), 0, st->epoch, &st->best_epoch))
    return "best_epoch";
  if (parse_i64(nnc_rt_st_meta(f, "wait"), 0, st->epoch, &st->wait)) return "wait";
  if (parse_rng(nnc_rt_st_meta(f, "rng_shuffle"), &st->shuffle_rng)) return "rng_shuffle";
  if (parse_rng(nnc_rt_st_meta(f, "rng_augment"), &st->augment_rng)) return "rng_augment";
  return NULL;
}

static int parse_state(const nnc_rt_st_file *f, const char *path, nnc_rt_train_state *st,
                       int *has_state, nnc_rt_error *err) {
  memset(st, 0, sizeof *st);
  st->best_metric = NAN;
  const char *hash = nnc_rt_st_meta(f, "model_hash");
  snprintf(st->model_hash, sizeof st->model_hash, "%s", hash ? hash : "");
  *has_state = nnc_rt_st_meta(f, "step") != NULL;
  if (!*has_state) return 0;
  const char *bad = parse_position(f, st);
  const char *s = nnc_rt_st_meta(f, "seed"), *bm = nnc_rt_st_meta(f, "best_metric"),
             *ws = nnc_rt_st_meta(f, "wall_s");
  char *end = NULL;
  if (!bad && (!s || !*s || *s == '-')) bad = "seed";
  if (!bad) {
    errno = 0;
    st->seed = strtoull(s, &end, 10);
    if (*end || errno) bad = "seed";
  }
  if (!bad && bm) st->best_metric = strtod(bm, &end), bad = *end ? "best_metric" : NULL;
  if (!bad && ws) {
    st->wall_s = strtod(ws, &end);
    bad = *end || !(st->wall_s >= 0 && st->wall_s < 1e12) ? "wall_s" : NULL;
  }
  if (bad)
    return nnc_rt_fail(err, "%s: metadata \"%s\" is missing, malformed or out of range", path, bad);
  return 0;
}

static void copy_all(const nnc_rt_st_file *f, const nnc_rt_model *m, char *arena,
                     const nnc_rt_ckpt_load_opts *o, const nnc_rt_st_entry **src,
                     const nnc_rt_st_entry **extra_src) {
  for (int i = 0; i < m->ntensors; i++)
    if (src[i]) nnc_rt_st_read_f32(f, src[i], (float *)(arena + m->tensors[i].offset));
  for (int i = 0; i < o->nextra; i++)
    if (extra_src[i]) nnc_rt_st_read_f32(f, extra_src[i], o->extra[i].data);
}

int nnc_rt_checkpoint_load(const char *path, const nnc_rt_model *m, char *arena,
                           const nnc_rt_ckpt_load_opts *opts, nnc_rt_train_state *state,
                           int *has_state, nnc_rt_error *err) {
  nnc_rt_ckpt_load_opts none = {0};
  if (!opts) opts = &none;
  nnc_rt_st_file f;
  if (nnc_rt_st_read(&f, path, err)) return -1;
  char **names = renamed_names(&f, opts);
  const nnc_rt_st_entry **src = calloc((size_t)m->ntensors + (size_t)opts->nextra + 1, sizeof *src);
  int rc = 0;
  if (!names || !src) rc = nnc_rt_fail(err, "%s: out of memory", path);
  problems p = {.o = opts};
  if (rc == 0) match_all(&f, names, m, opts, src, src + m->ntensors, &p);
  if (rc == 0 && p.n)
    rc = nnc_rt_fail(err, "%s: %d tensor%s do%s not match the model:%s%s%.0d%s", path, p.n,
                     p.n == 1 ? "" : "s", p.n == 1 ? "es" : "", p.text,
                     p.shown < p.n ? "\n  (and " : "", p.shown < p.n ? p.n - p.shown : 0,
                     p.shown < p.n ? " more)" : "");
  nnc_rt_train_state st;
  int has = 0;
  if (rc == 0) rc = parse_state(&f, path, &st, &has, err);
  if (rc == 0) {
    copy_all(&f, m, arena, opts, src, src + m->ntensors);
    if (state) *state = st;
    if (has_state) *has_state = has;
  }
  if (names)
    for (int i = 0; i < f.nentries; i++)
      free(names[i]);
  free(names);
  free(src);
  nnc_rt_st_free(&f);
  return rc;
}
