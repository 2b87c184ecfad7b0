/* ckpt_show.c: a readable listing of a safetensors file (`nnc show`).
 *
 * One header line (file, tensor count, the training position from nnc's
 * metadata when present), then one line per tensor in file order: name,
 * dtype, shape, element count and either its values (up to SHOW_VALUES
 * elements) or mean, standard deviation, min and max. F32 and F64 tensors
 * are summarised; other dtypes are listed by shape only. The file goes
 * through the same validating reader as checkpoint loads, so a damaged file
 * is an error naming the byte, not a listing of garbage.
 */
#include "rt_internal.h"

#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SHOW_VALUES = 8 };

static int selected(const char *name, const char *const *globs, int nglobs) {
  if (nglobs == 0) return 1;
  for (int i = 0; i < nglobs; i++)
    if (fnmatch(globs[i], name, 0) == 0) return 1;
  return 0;
}

static void show_meta(FILE *out, const nnc_rt_st_file *f) {
  static const char *const keys[] = {"epoch", "step", "seed", "model_hash"};
  int any = 0;
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    const char *v = nnc_rt_st_meta(f, keys[i]);
    if (!v) continue;
    fprintf(out, "%s %s %s", any ? "," : ";", keys[i], v);
    any = 1;
  }
}

static int show_tensor(FILE *out, const nnc_rt_st_file *f, const nnc_rt_st_entry *e,
                       nnc_rt_error *err) {
  int64_t n = nnc_rt_numel(e->rank, e->shape);
  char shape[160];
  int len = snprintf(shape, sizeof shape, "[");
  for (int d = 0; d < e->rank; d++) {
    len += snprintf(shape + len, sizeof shape - (size_t)len, "%s%lld", d ? ", " : "",
                    (long long)e->shape[d]);
    if (len >= (int)sizeof shape - 24) break; /* the text only; n counts every dim */
  }
  snprintf(shape + len, sizeof shape - (size_t)len, "]");
  fprintf(out, "  %-32s %-4s %-18s %10lld", e->name, e->dtype_name, shape, (long long)n);
  if (e->dtype == NNC_RT_ST_OTHER || n == 0) {
    fputc('\n', out);
    return 0;
  }
  float *v = malloc((size_t)n * sizeof *v);
  if (!v) return nnc_rt_fail(err, "%s: out of memory (%lld elements)", e->name, (long long)n);
  nnc_rt_st_read_f32(f, e, v);
  if (n <= SHOW_VALUES) {
    fputs("  =", out);
    for (int64_t i = 0; i < n; i++)
      fprintf(out, " %.6g", v[i]);
  } else {
    double sum = 0, sq = 0, lo = INFINITY, hi = -INFINITY;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
      if (!isfinite(v[i])) {
        bad++;
        continue;
      }
      sum += v[i];
      sq += (double)v[i] * v[i];
      lo = v[i] < lo ? v[i] : lo;
      hi = v[i] > hi ? v[i] : hi;
    }
    int64_t k = n - bad;
    double mean = k ? sum / (double)k : NAN, var = k ? sq / (double)k - mean * mean : NAN;
    fprintf(out, "  mean %.4g std %.4g min %.4g max %.4g", mean, sqrt(var > 0 ? var : 0), lo, hi);
    if (bad) fprintf(out, "  (%lld not finite)", (long long)bad);
  }
  fputc('\n', out);
  free(v);
  return 0;
}

int nnc_rt_checkpoint_show(FILE *out, const char *path, const char *const *globs, int nglobs,
                           nnc_rt_error *err) {
  nnc_rt_st_file f;
  if (nnc_rt_st_read(&f, path, err)) return -1;
  int shown = 0;
  for (int i = 0; i < f.nentries; i++)
    shown += selected(f.entries[i].name, globs, nglobs);
  if (shown == 0 && nglobs > 0) {
    nnc_rt_st_free(&f);
    return nnc_rt_fail(err, "%s: no tensor matches '%s'%s", path, globs[0],
                       nglobs > 1 ? " or the other patterns" : "");
  }
  fprintf(out, "%s: %d tensor%s", path, f.nentries, f.nentries == 1 ? "" : "s");
  show_meta(out, &f);
  fputc('\n', out);
  int rc = 0;
  for (int i = 0; i < f.nentries && rc == 0; i++)
    if (selected(f.entries[i].name, globs, nglobs)) rc = show_tensor(out, &f, &f.entries[i], err);
  nnc_rt_st_free(&f);
  return rc;
}
