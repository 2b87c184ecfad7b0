/* e2e_tool.c: what e2e_cli.sh needs besides nnc, in plain C (no Python in
 * the test's path):
 *
 *   e2e_tool get FILE NAME            values of an F32 tensor of a safetensors
 *                                     file, one per line (%.9g)
 *   e2e_tool meta FILE KEY            a __metadata__ value
 *   e2e_tool same A B [opts] [GLOB..] the tensors of A (matching a glob, if
 *                                     given) are in B with the same dtype,
 *                                     shape and bytes; exit 1 otherwise
 *   e2e_tool differ A B [opts] [GLOB..] every selected tensor of A is in B
 *                                     with the same shape but other bytes
 *       opts: --prefix P  the name in B is P + the name in A
 *   e2e_tool npy DIR N D C SEED       a learnable C-class problem as NumPy
 *                                     files: DIR/x.npy <f4 [N,D], y.npy <i8
 *                                     [N]; the same as <f8 and |u1 in
 *                                     x64.npy, yu8.npy; a test set tx.npy,
 *                                     ty.npy of N/4 samples; the same
 *                                     f32 values as CSV (label last) in
 *                                     x.csv and tx.csv
 *   e2e_tool idx DIR NTRAIN NTEST     MNIST-style IDX files (raw) of 28x28
 *                                     images: class c in 0..3 is a bright
 *                                     square in quadrant c, plus noise
 *
 * The safetensors reader is independent of the runtime's: a small strict
 * JSON parser over the header, bounds-checked offsets. */
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *fmt, const char *a, const char *b) {
  fprintf(stderr, "e2e_tool: ");
  fprintf(stderr, fmt, a, b);
  fputc('\n', stderr);
  exit(2);
}

/* ---- safetensors ---- */

enum { MAX_T = 4096, MAX_META = 64 };

typedef struct st_tensor {
  char name[256];
  char dtype[16];
  int rank;
  int64_t shape[8];
  uint64_t begin, end;
} st_tensor;

typedef struct st_file {
  const char *path;
  unsigned char *buf;
  size_t size;
  const unsigned char *data; /* data section */
  size_t data_size;
  int n;
  st_tensor t[MAX_T];
  int nmeta;
  char meta_key[MAX_META][64], meta_val[MAX_META][256];
} st_file;

typedef struct json {
  const st_file *f;
  const char *p, *end;
} json;

static void jfail(json *j, const char *what) {
  char where[64];
  snprintf(where, sizeof where, "byte %ld", (long)(j->p - (const char *)j->f->buf));
  die("%s: bad header at %s", j->f->path, where);
  (void)what;
}

static void ws(json *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r'))
    j->p++;
}

static void expect(json *j, char c) {
  ws(j);
  if (j->p >= j->end || *j->p != c) jfail(j, "");
  j->p++;
}

static int peek(json *j, char c) {
  ws(j);
  return j->p < j->end && *j->p == c;
}

static void str(json *j, char *out, size_t size) {
  expect(j, '"');
  size_t n = 0;
  while (j->p < j->end && *j->p != '"') {
    char c = *j->p++;
    if (c == '\\') {
      if (j->p >= j->end) jfail(j, "");
      c = *j->p++;
      if (c == 'n')
        c = '\n';
      else if (c == 't')
        c = '\t';
      else if (c == 'u') { /* keep it simple: \uXXXX as '?' */
        j->p += 4;
        c = '?';
      }
    }
    if (n + 1 < size) out[n++] = c;
  }
  if (j->p >= j->end) jfail(j, "");
  j->p++;
  out[n] = 0;
}

static uint64_t num(json *j) {
  ws(j);
  if (j->p >= j->end || *j->p < '0' || *j->p > '9') jfail(j, "");
  uint64_t v = 0;
  while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
    v = v * 10 + (uint64_t)(*j->p++ - '0');
  return v;
}

static void st_load(st_file *f, const char *path) {
  memset(f, 0, sizeof *f);
  f->path = path;
  FILE *fp = fopen(path, "rb");
  if (!fp) die("cannot open %s: %s", path, strerror(errno));
  fseek(fp, 0, SEEK_END);
  long sz = ftell(fp);
  fseek(fp, 0, SEEK_SET);
  f->buf = malloc(sz > 0 ? (size_t)sz : 1);
  if (!f->buf || fread(f->buf, 1, (size_t)sz, fp) != (size_t)sz) die("cannot read %s%s", path, "");
  fclose(fp);
  f->size = (size_t)sz;
  if (f->size < 8) die("%s: shorter than 8 bytes%s", path, "");
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | f->buf[i];
  if (hlen > f->size - 8) die("%s: header length beyond the file%s", path, "");
  f->data = f->buf + 8 + hlen;
  f->data_size = f->size - 8 - hlen;
  json j = {f, (const char *)f->buf + 8, (const char *)f->buf + 8 + hlen};
  expect(&j, '{');
  while (!peek(&j, '}')) {
    char key[256];
    str(&j, key, sizeof key);
    expect(&j, ':');
    expect(&j, '{');
    if (!strcmp(key, "__metadata__")) {
      while (!peek(&j, '}')) {
        if (f->nmeta == MAX_META) die("%s: too much metadata%s", path, "");
        str(&j, f->meta_key[f->nmeta], sizeof f->meta_key[0]);
        expect(&j, ':');
        str(&j, f->meta_val[f->nmeta], sizeof f->meta_val[0]);
        f->nmeta++;
        if (peek(&j, ',')) j.p++;
      }
    } else {
      if (f->n == MAX_T) die("%s: too many tensors%s", path, "");
      st_tensor *t = &f->t[f->n++];
      snprintf(t->name, sizeof t->name, "%s", key);
      int got = 0;
      while (!peek(&j, '}')) {
        char k[32];
        str(&j, k, sizeof k);
        expect(&j, ':');
        if (!strcmp(k, "dtype")) {
          str(&j, t->dtype, sizeof t->dtype);
          got |= 1;
        } else if (!strcmp(k, "shape")) {
          expect(&j, '[');
          while (!peek(&j, ']')) {
            if (t->rank == 8) jfail(&j, "");
            t->shape[t->rank++] = (int64_t)num(&j);
            if (peek(&j, ',')) j.p++;
          }
          j.p++;
          got |= 2;
        } else if (!strcmp(k, "data_offsets")) {
          expect(&j, '[');
          t->begin = num(&j);
          expect(&j, ',');
          t->end = num(&j);
          expect(&j, ']');
          got |= 4;
        } else {
          jfail(&j, "");
        }
        if (peek(&j, ',')) j.p++;
      }
      if (got != 7) die("%s: tensor %s lacks a key", path, key);
      if (t->begin > t->end || t->end > f->data_size)
        die("%s: %s: offsets beyond the file", path, key);
    }
    j.p++; /* '}' */
    if (peek(&j, ',')) j.p++;
  }
  j.p++;
  ws(&j);
  if (j.p != j.end) jfail(&j, "");
}

static const st_tensor *st_find(const st_file *f, const char *name) {
  for (int i = 0; i < f->n; i++)
    if (!strcmp(f->t[i].name, name)) return &f->t[i];
  return NULL;
}

static int cmd_get(const char *path, const char *name) {
  static st_file f;
  st_load(&f, path);
  const st_tensor *t = st_find(&f, name);
  if (!t) die("%s: no tensor %s", path, name);
  if (strcmp(t->dtype, "F32")) die("%s: %s is not F32", path, name);
  for (uint64_t o = t->begin; o + 4 <= t->end; o += 4) {
    float v;
    memcpy(&v, f.data + o, 4);
    printf("%.9g\n", v);
  }
  free(f.buf);
  return 0;
}

static int cmd_meta(const char *path, const char *key) {
  static st_file f;
  st_load(&f, path);
  for (int i = 0; i < f.nmeta; i++)
    if (!strcmp(f.meta_key[i], key)) {
      printf("%s\n", f.meta_val[i]);
      free(f.buf);
      return 0;
    }
  die("%s: no metadata %s", path, key);
  return 2;
}

/* same (want_equal = 1) / differ (0). */
static int cmd_compare(int want_equal, int argc, char **argv) {
  static st_file a, b;
  if (argc < 2) die("%s%s: needs two files", want_equal ? "same" : "differ", "");
  st_load(&a, argv[0]);
  st_load(&b, argv[1]);
  const char *prefix = "";
  int nglob = 0;
  char **globs = argv + 2;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--prefix") && i + 1 < argc)
      prefix = argv[++i];
    else
      globs[nglob++] = argv[i];
  }
  int checked = 0, bad = 0;
  for (int i = 0; i < a.n; i++) {
    const st_tensor *ta = &a.t[i];
    int sel = nglob == 0;
    for (int g = 0; g < nglob && !sel; g++)
      sel = fnmatch(globs[g], ta->name, 0) == 0;
    if (!sel) continue;
    char bname[512];
    snprintf(bname, sizeof bname, "%s%s", prefix, ta->name);
    const st_tensor *tb = st_find(&b, bname);
    checked++;
    if (!tb) {
      fprintf(stderr, "%s: %s missing (from %s in %s)\n", argv[1], bname, ta->name, argv[0]);
      bad++;
      continue;
    }
    int shape_ok = ta->rank == tb->rank && !strcmp(ta->dtype, tb->dtype) &&
                   ta->end - ta->begin == tb->end - tb->begin;
    for (int d = 0; shape_ok && d < ta->rank; d++)
      shape_ok = ta->shape[d] == tb->shape[d];
    if (!shape_ok) {
      fprintf(stderr, "%s: %s has another dtype or shape than %s in %s\n", argv[1], bname, ta->name,
              argv[0]);
      bad++;
      continue;
    }
    int equal = memcmp(a.data + ta->begin, b.data + tb->begin, ta->end - ta->begin) == 0;
    if (equal != want_equal) {
      fprintf(stderr, "%s: %s %s %s in %s\n", argv[1], bname, equal ? "equals" : "differs from",
              ta->name, argv[0]);
      bad++;
    }
  }
  if (checked == 0) die("no tensor of %s selected%s", argv[0], "");
  printf("%d tensors checked (%s), %d wrong\n", checked,
         want_equal ? "must be identical" : "must differ", bad);
  free(a.buf);
  free(b.buf);
  return bad ? 1 : 0;
}

/* ---- generated data ---- */

static uint64_t rng_state;
static double urand(void) { /* [0, 1) */
  rng_state = rng_state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
  return (double)(rng_state >> 11) * 0x1p-53;
}
static double nrand(void) {
  double u = urand(), v = urand();
  return sqrt(-2 * log(1 - u)) * cos(6.283185307179586 * v);
}

static FILE *create(const char *dir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (!f) die("cannot create %s: %s", path, strerror(errno));
  return f;
}

/* An .npy v1.0 header for descr and shape [n] or [n, d]. */
static void npy_header(FILE *f, const char *descr, long n, long d) {
  char dict[256];
  if (d > 0)
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%ld, %ld), }",
             descr, n, d);
  else
    snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (%ld,), }", descr,
             n);
  size_t len = strlen(dict), total = 10 + len + 1;
  size_t pad = (64 - total % 64) % 64;
  uint16_t hl = (uint16_t)(len + pad + 1);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  unsigned char h[2] = {(unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
  fwrite(h, 1, 2, f);
  fputs(dict, f);
  for (size_t i = 0; i < pad; i++)
    fputc(' ', f);
  fputc('\n', f);
}

static void write_npy_set(const char *dir, const char *xname, const char *yname, const char *x64,
                          const char *yu8, long n, long d, long c, const double *w) {
  double *x = malloc(sizeof(double) * (size_t)(n * d));
  int64_t *y = malloc(sizeof(int64_t) * (size_t)n);
  for (long i = 0; i < n; i++) {
    long best = 0;
    double bestv = -1e300;
    for (long j = 0; j < d; j++)
      x[i * d + j] = nrand();
    for (long k = 0; k < c; k++) {
      double s = 0;
      for (long j = 0; j < d; j++)
        s += w[k * d + j] * x[i * d + j];
      if (s > bestv) bestv = s, best = k;
    }
    y[i] = best;
  }
  FILE *f = create(dir, xname);
  npy_header(f, "<f4", n, d);
  for (long i = 0; i < n * d; i++) {
    float v = (float)x[i];
    fwrite(&v, 4, 1, f);
  }
  fclose(f);
  f = create(dir, yname);
  npy_header(f, "<i8", n, 0);
  fwrite(y, 8, (size_t)n, f);
  fclose(f);
  char csvname[64];
  snprintf(csvname, sizeof csvname, "%.*s.csv", (int)strlen(xname) - 4, xname); /* x.npy -> x.csv */
  f = create(dir, csvname); /* the same f32 values, exactly (%.9g) */
  for (long i = 0; i < n; i++) {
    for (long j = 0; j < d; j++)
      fprintf(f, "%.9g,", (double)(float)x[i * d + j]);
    fprintf(f, "%ld\n", (long)y[i]);
  }
  fclose(f);
  if (x64) {
    f = create(dir, x64);
    npy_header(f, "<f8", n, d);
    fwrite(x, 8, (size_t)(n * d), f);
    fclose(f);
    f = create(dir, yu8);
    npy_header(f, "|u1", n, 0);
    for (long i = 0; i < n; i++)
      fputc((int)y[i], f);
    fclose(f);
  }
  free(x);
  free(y);
}

static int cmd_npy(const char *dir, long n, long d, long c, uint64_t seed) {
  rng_state = seed;
  double *w = malloc(sizeof(double) * (size_t)(c * d));
  for (long i = 0; i < c * d; i++)
    w[i] = nrand();
  write_npy_set(dir, "x.npy", "y.npy", "x64.npy", "yu8.npy", n, d, c, w);
  write_npy_set(dir, "tx.npy", "ty.npy", NULL, NULL, n / 4 > 0 ? n / 4 : 1, d, c, w);
  free(w);
  return 0;
}

static void be32(FILE *f, uint32_t v) {
  unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8),
                        (unsigned char)v};
  fwrite(b, 1, 4, f);
}

static void write_idx(const char *dir, const char *images, const char *labels, long n) {
  FILE *fi = create(dir, images), *fl = create(dir, labels);
  be32(fi, 0x00000803);
  be32(fi, (uint32_t)n);
  be32(fi, 28);
  be32(fi, 28);
  be32(fl, 0x00000801);
  be32(fl, (uint32_t)n);
  for (long i = 0; i < n; i++) {
    int c = (int)(urand() * 4);
    int oy = (c / 2) * 14 + 2 + (int)(urand() * 5), ox = (c % 2) * 14 + 2 + (int)(urand() * 5);
    unsigned char img[28 * 28];
    for (int p = 0; p < 28 * 28; p++)
      img[p] = (unsigned char)(urand() * 100);
    for (int y = oy; y < oy + 7; y++)
      for (int x = ox; x < ox + 7; x++)
        img[y * 28 + x] = (unsigned char)(155 + urand() * 100);
    fwrite(img, 1, sizeof img, fi);
    fputc(c, fl);
  }
  fclose(fi);
  fclose(fl);
}

static int cmd_idx(const char *dir, long ntrain, long ntest) {
  rng_state = 12345;
  write_idx(dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", ntrain);
  write_idx(dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", ntest);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 4 && !strcmp(argv[1], "get")) return cmd_get(argv[2], argv[3]);
  if (argc >= 4 && !strcmp(argv[1], "meta")) return cmd_meta(argv[2], argv[3]);
  if (argc >= 2 && !strcmp(argv[1], "same")) return cmd_compare(1, argc - 2, argv + 2);
  if (argc >= 2 && !strcmp(argv[1], "differ")) return cmd_compare(0, argc - 2, argv + 2);
  if (argc == 7 && !strcmp(argv[1], "npy"))
    return cmd_npy(argv[2], atol(argv[3]), atol(argv[4]), atol(argv[5]),
                   strtoull(argv[6], NULL, 10));
  if (argc == 5 && !strcmp(argv[1], "idx")) return cmd_idx(argv[2], atol(argv[3]), atol(argv[4]));
  fprintf(stderr, "usage: e2e_tool get|meta|same|differ|npy|idx ... (see e2e_tool.c)\n");
  return 2;
}
