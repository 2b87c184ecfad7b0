/* dataset.c: transformations of a loaded nnc_rt_dataset, applied by the
 * driver after loading (IDX, CSV or NPY) and before training: scaling,
 * standardisation and the validation split; and the reading of one sample
 * as f32 features, which is where a set held as bytes becomes floats.
 *
 * Standardisation statistics are fitted on one set (the training split,
 * after the validation split is taken off, so validation data never leaks
 * into them) and applied to every set; they are returned to the caller so
 * they can be saved with a checkpoint (as extra tensors) and applied again
 * at inference. The standard deviation is the population one (divide by n,
 * as scikit-learn's StandardScaler) and a constant feature keeps std 1.
 * For f32 features the means and standard deviations are computed in
 * double in one pass over the data (shifted by the first sample). A set of
 * bytes is instead counted: a histogram of the 256 byte values per
 * feature, from which the same shifted sums follow exactly (every byte
 * value is an integer multiple of one power of two, so the sums are
 * integers, added in 128 bits); they are rounded to double once. Where the
 * f32 pass's sums are exact too, which they are for Fashion-MNIST's means,
 * both give the same statistics; its sum of squares rounds as it goes, so
 * the last bit of a std can in rare cases differ between the two forms.
 *
 * Applying the statistics to an f32 set rewrites it in place; a byte set
 * keeps a pointer to them and nnc_rt_dataset_sample standardises each
 * sample as it is read, with the same f32 operations in the same order
 * ((value - mean) / std), so the model sees the same floats either way.
 *
 * The split draws a permutation from an RNG seeded only by the caller's
 * seed, so the same seed always gives the same validation samples; both
 * parts keep the samples in their original relative order.
 */
#include "rt_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define NNC_RT_AVX512_SAMPLE 1
#endif

/* Keeps the split stream apart from other uses of the same seed. */
static const uint64_t SPLIT_SEED_SALT = UINT64_C(0x53504C4954A7F00D);

void nnc_rt_dataset_scale(nnc_rt_dataset *ds, float scale) {
  if (ds->u8) {
    for (int b = 0; b < 256; b++)
      ds->byte_value[b] *= scale;
    nnc_rt_dataset_bytes_changed(ds);
    return;
  }
  int64_t total = ds->n * ds->sample_size;
  for (int64_t i = 0; i < total; i++)
    ds->x[i] *= scale;
}

void nnc_rt_dataset_prefetch(const nnc_rt_dataset *ds, int64_t i) {
  size_t size = (size_t)ds->sample_size * (ds->u8 ? 1 : sizeof(float));
  const char *p = ds->u8 ? (const char *)ds->u8 : (const char *)ds->x;
  p += (size_t)i * size;
  for (size_t at = 0; at < size; at += 64)
    __builtin_prefetch(p + at);
}

void nnc_rt_dataset_bytes_changed(nnc_rt_dataset *ds) {
  float s = ds->byte_value[1];
  ds->byte_step = s;
  for (int b = 0; b < 256; b++)
    if (!(ds->byte_value[b] == (float)b * s)) ds->byte_step = 0;
}

#ifdef NNC_RT_AVX512_SAMPLE
/* (byte * step - mean) / std, 16 features at a time: the same f32
 * operations as the scalar loop below on byte_value[b] == (float)b * step,
 * each rounded once (intrinsics are not contracted into FMAs). Without
 * statistics mean is 0 and std 1, which leaves the product unchanged. */
__attribute__((target("avx512f"))) static void sample_avx512(const uint8_t *restrict b, float step,
                                                             const float *restrict mean,
                                                             const float *restrict std,
                                                             float *restrict out, int64_t d) {
  __m512 s = _mm512_set1_ps(step);
  for (int64_t j = 0; j < d; j += 16) {
    __mmask16 k = d - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (d - j)) - 1);
    uint8_t tail[16] = {0};
    const uint8_t *p = b + j;
    if (d - j < 16) p = memcpy(tail, p, (size_t)(d - j));
    __m512 v = _mm512_mul_ps(
        _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p))), s);
    if (mean)
      v = _mm512_div_ps(_mm512_sub_ps(v, _mm512_maskz_loadu_ps(k, mean + j)),
                        _mm512_mask_loadu_ps(_mm512_set1_ps(1), k, std + j));
    _mm512_mask_storeu_ps(out + j, k, v);
  }
}
#endif

void nnc_rt_dataset_sample(const nnc_rt_dataset *ds, int64_t i, float *restrict out) {
  int64_t d = ds->sample_size;
  if (!ds->u8) {
    memcpy(out, ds->x + i * d, (size_t)d * sizeof(float));
    return;
  }
  const uint8_t *restrict b = ds->u8 + i * d;
#ifdef NNC_RT_AVX512_SAMPLE
  if (ds->byte_step != 0 && nnc_rt_cpu_features()->avx512f) {
    sample_avx512(b, ds->byte_step, ds->u8_mean, ds->u8_std, out, d);
    return;
  }
#endif
  const float *restrict value = ds->byte_value;
  if (!ds->u8_mean) {
    for (int64_t j = 0; j < d; j++)
      out[j] = value[b[j]];
    return;
  }
  const float *restrict mean = ds->u8_mean, *restrict std = ds->u8_std;
  for (int64_t j = 0; j < d; j++)
    out[j] = (value[b[j]] - mean[j]) / std[j];
}

/* Sums of one column range [begin, end) of features over every sample,
 * shifted by the first sample's values so a large common offset does not
 * cancel in sq - sum²/n. Each feature is summed in sample order whoever
 * runs its range, so the statistics do not depend on the thread count. */
typedef struct fit_job {
  const nnc_rt_dataset *ds;
  double *sum, *sq;
} fit_job;

static void fit_task(void *arg, int64_t begin, int64_t end) {
  const fit_job *f = arg;
  int64_t d = f->ds->sample_size;
  const float *x0 = f->ds->x;
  double *restrict sum = f->sum, *restrict sq = f->sq;
  for (int64_t i = 0; i < f->ds->n; i++) {
    const float *xi = f->ds->x + i * d;
    for (int64_t j = begin; j < end; j++) {
      double c = (double)xi[j] - (double)x0[j];
      sum[j] += c;
      sq[j] += c * c;
    }
  }
}

/* Byte sets: each feature's histogram gives the shifted sums exactly.
 * Every byte value is k * 2^unit_exp for an integer k (|k| < 2^40, checked
 * by byte_units); c = k_b - k_first, sum = sum of counts * c and sq = sum
 * of counts * c^2, in 128-bit integers. The samples are read in order,
 * each task counting its range of features of every row into 16-bit
 * counters (a 512-byte histogram per feature, so that the histograms of a
 * task's features stay in the core's cache) that are added into the sums
 * every FIT_PASS samples. */
typedef struct byte_fit_job {
  const nnc_rt_dataset *ds;
  const int64_t *units; /* k of each byte value */
  int unit_exp;
  uint16_t (*counts)[256]; /* [sample_size][256] */
  __int128 *s1, *s2;       /* [sample_size] */
  double *sum, *sq;
} byte_fit_job;

enum { FIT_PASS = UINT16_MAX };

static void byte_fit_task(void *arg, int64_t begin, int64_t end) {
  const byte_fit_job *f = arg;
  const nnc_rt_dataset *ds = f->ds;
  int64_t d = ds->sample_size;
  uint16_t(*counts)[256] = f->counts;
  for (int64_t i0 = 0; i0 < ds->n; i0 += FIT_PASS) {
    int64_t i1 = ds->n - i0 < FIT_PASS ? ds->n : i0 + FIT_PASS;
    memset(counts + begin, 0, (size_t)(end - begin) * sizeof *counts);
    for (int64_t i = i0; i < i1; i++) {
      const uint8_t *row = ds->u8 + i * d;
      for (int64_t j = begin; j < end; j++)
        counts[j][row[j]]++;
    }
    for (int64_t j = begin; j < end; j++) {
      int64_t first = f->units[ds->u8[j]];
      for (int b = 0; b < 256; b++) {
        __int128 c = f->units[b] - first;
        f->s1[j] += c * counts[j][b];
        f->s2[j] += c * c * counts[j][b];
      }
    }
  }
  for (int64_t j = begin; j < end; j++) {
    f->sum[j] = ldexp((double)f->s1[j], f->unit_exp);
    f->sq[j] = ldexp((double)f->s2[j], 2 * f->unit_exp);
  }
}

/* Writes k with byte_value[b] = k[b] * 2^*unit_exp for every byte value:
 * the exponent of the smallest last bit among them. -1 when one is not
 * finite or needs 2^40 or more units (no single scale of bytes does). */
static int byte_units(const nnc_rt_dataset *ds, int64_t *k, int *unit_exp) {
  int lowest = INT32_MAX;
  for (int b = 0; b < 256; b++) {
    float v = ds->byte_value[b];
    if (!isfinite(v)) return -1;
    int e;
    if (v != 0) frexpf(v, &e), lowest = e - 24 < lowest ? e - 24 : lowest;
  }
  if (lowest == INT32_MAX) lowest = 0; /* all zero */
  for (int b = 0; b < 256; b++) {
    double u = ldexp((double)ds->byte_value[b], -lowest);
    if (!(fabs(u) < 0x1p40)) return -1;
    k[b] = (int64_t)u;
  }
  *unit_exp = lowest;
  return 0;
}

/* The shifted sums of every feature into sum and sq. */
static int fit_sums(const nnc_rt_dataset *ds, nnc_rt_pool *pool, double *sum, double *sq,
                    nnc_rt_error *err) {
  if (!ds->u8) {
    fit_job f = {ds, sum, sq};
    nnc_rt_parallel(pool, fit_task, &f, ds->sample_size);
    return 0;
  }
  if (ds->u8_mean) return nnc_rt_fail(err, "cannot fit statistics to a standardised set");
  int64_t units[256];
  byte_fit_job f = {.ds = ds, .units = units, .sum = sum, .sq = sq};
  if (byte_units(ds, units, &f.unit_exp))
    return nnc_rt_fail(err, "cannot standardise: the scaled byte values are not all finite");
  size_t d = (size_t)ds->sample_size;
  f.counts = malloc(d * sizeof *f.counts);
  f.s1 = calloc(d, sizeof *f.s1);
  f.s2 = calloc(d, sizeof *f.s2);
  if (f.counts && f.s1 && f.s2) nnc_rt_parallel(pool, byte_fit_task, &f, ds->sample_size);
  int ok = f.counts && f.s1 && f.s2;
  free(f.counts), free(f.s1), free(f.s2);
  return ok ? 0 : nnc_rt_fail(err, "out of memory for standardisation statistics");
}

int nnc_rt_norm_fit(nnc_rt_norm_stats *stats, const nnc_rt_dataset *ds, nnc_rt_pool *pool,
                    nnc_rt_error *err) {
  int64_t d = ds->sample_size;
  *stats = (nnc_rt_norm_stats){.size = d};
  double *sum = calloc((size_t)d + 1, sizeof *sum), *sq = calloc((size_t)d + 1, sizeof *sq);
  stats->mean = malloc(((size_t)d + 1) * sizeof(float));
  stats->std = malloc(((size_t)d + 1) * sizeof(float));
  if (!sum || !sq || !stats->mean || !stats->std) {
    free(sum), free(sq), nnc_rt_norm_free(stats);
    return nnc_rt_fail(err, "out of memory for standardisation statistics");
  }
  if (ds->n <= 0) {
    free(sum), free(sq), nnc_rt_norm_free(stats);
    return nnc_rt_fail(err, "cannot standardise: the training set is empty");
  }
  if (fit_sums(ds, pool, sum, sq, err)) {
    free(sum), free(sq), nnc_rt_norm_free(stats);
    return -1;
  }
  for (int64_t j = 0; j < d; j++) {
    double m = sum[j] / (double)ds->n;
    double var = sq[j] / (double)ds->n - m * m, sd = var > 0 ? sqrt(var) : 0;
    float first = ds->u8 ? ds->byte_value[ds->u8[j]] : ds->x[j];
    stats->mean[j] = (float)((double)first + m);
    stats->std[j] = sd > 0 && (float)sd > 0 ? (float)sd : 1.0f;
  }
  free(sum);
  free(sq);
  return 0;
}

typedef struct apply_job {
  const nnc_rt_norm_stats *stats;
  nnc_rt_dataset *ds;
} apply_job;

static void apply_task(void *arg, int64_t begin, int64_t end) {
  const apply_job *a = arg;
  int64_t d = a->ds->sample_size;
  const float *restrict mean = a->stats->mean, *restrict std = a->stats->std;
  for (int64_t i = begin; i < end; i++) {
    float *restrict xi = a->ds->x + i * d;
    for (int64_t j = 0; j < d; j++)
      xi[j] = (xi[j] - mean[j]) / std[j];
  }
}

int nnc_rt_norm_apply(const nnc_rt_norm_stats *stats, nnc_rt_dataset *ds, nnc_rt_pool *pool,
                      nnc_rt_error *err) {
  if (stats->size != ds->sample_size)
    return nnc_rt_fail(err, "standardisation statistics are for %lld features, the set has %lld",
                       (long long)stats->size, (long long)ds->sample_size);
  if (ds->u8) {
    if (ds->u8_mean) return nnc_rt_fail(err, "the set is standardised already");
    ds->u8_mean = stats->mean, ds->u8_std = stats->std;
    return 0;
  }
  apply_job a = {stats, ds};
  nnc_rt_parallel(pool, apply_task, &a, ds->n);
  return 0;
}

void nnc_rt_norm_free(nnc_rt_norm_stats *stats) {
  free(stats->mean);
  free(stats->std);
  *stats = (nnc_rt_norm_stats){0};
}

/* Bytes per feature as the set holds them. */
static size_t feature_bytes(const nnc_rt_dataset *ds) {
  return ds->u8 ? 1 : sizeof(float);
}

/* dst = the samples of src whose keep[i] == want, in order. */
static int gather(nnc_rt_dataset *dst, const nnc_rt_dataset *src, const char *keep, char want,
                  int64_t n) {
  *dst = *src;
  size_t row = (size_t)src->sample_size * feature_bytes(src);
  dst->n = n;
  dst->x = NULL, dst->u8 = NULL, dst->storage = NULL, dst->storage_len = 0;
  if (src->u8) {
    dst->storage_len = (size_t)n * row;
    dst->u8 = dst->storage = nnc_rt_big_alloc(dst->storage_len);
  } else {
    dst->x = malloc((size_t)n * row);
  }
  dst->labels = src->labels ? malloc((size_t)n * sizeof(int32_t)) : NULL;
  dst->targets = src->targets ? malloc((size_t)(n * src->target_size) * sizeof(float)) : NULL;
  if ((!dst->x && !dst->u8) || (src->labels && !dst->labels) || (src->targets && !dst->targets))
    return -1;
  char *to = dst->u8 ? (char *)dst->u8 : (char *)dst->x;
  const char *from = src->u8 ? (const char *)src->u8 : (const char *)src->x;
  int64_t k = 0;
  for (int64_t i = 0; i < src->n; i++) {
    if (keep[i] != want) continue;
    memcpy(to + (size_t)k * row, from + (size_t)i * row, row);
    if (src->labels) dst->labels[k] = src->labels[i];
    if (src->targets)
      memcpy(dst->targets + k * src->target_size, src->targets + i * src->target_size,
             (size_t)src->target_size * sizeof(float));
    k++;
  }
  return 0;
}

/* Keeps the samples of ds with drop[i] == 0, in order, in place: the
 * training part of a split is most of the set, and copying it into fresh
 * memory costs more than the rest of the split (page faults on ~170 MB for
 * Fashion-MNIST held as f32). The buffers keep their size. */
static void compact(nnc_rt_dataset *ds, const char *drop) {
  int64_t k = 0, t = ds->target_size;
  size_t row = (size_t)ds->sample_size * feature_bytes(ds);
  char *x = ds->u8 ? (char *)ds->u8 : (char *)ds->x;
  for (int64_t i = 0; i < ds->n; i++) {
    if (drop[i]) continue;
    if (k != i) {
      memmove(x + (size_t)k * row, x + (size_t)i * row, row);
      if (ds->labels) ds->labels[k] = ds->labels[i];
      if (ds->targets) memmove(ds->targets + k * t, ds->targets + i * t, (size_t)t * sizeof(float));
    }
    k++;
  }
  ds->n = k;
}

int nnc_rt_dataset_split(nnc_rt_dataset *train, nnc_rt_dataset *val, double fraction, uint64_t seed,
                         nnc_rt_error *err) {
  *val = (nnc_rt_dataset){0};
  if (!(fraction > 0 && fraction < 1))
    return nnc_rt_fail(err, "validation fraction %g is not between 0 and 1", fraction);
  int64_t nval = (int64_t)floor(fraction * (double)train->n + 0.5);
  if (nval < 1 || nval >= train->n)
    return nnc_rt_fail(err,
                       "a validation fraction of %g of %lld samples leaves %lld for validation "
                       "and %lld for training; both need at least one",
                       fraction, (long long)train->n, (long long)nval,
                       (long long)(train->n - nval));
  int64_t *perm = malloc((size_t)train->n * sizeof *perm);
  char *in_val = calloc((size_t)train->n, 1);
  int rc = !perm || !in_val ? -1 : 0;
  if (rc == 0) {
    nnc_rt_rng rng;
    nnc_rt_rng_seed(&rng, seed ^ SPLIT_SEED_SALT);
    for (int64_t i = 0; i < train->n; i++)
      perm[i] = i;
    nnc_rt_rng_shuffle(&rng, perm, train->n);
    for (int64_t i = 0; i < nval; i++)
      in_val[perm[i]] = 1;
    rc = gather(val, train, in_val, 1, nval);
  }
  free(perm);
  if (rc) {
    free(in_val);
    nnc_rt_dataset_free(val);
    return nnc_rt_fail(err, "out of memory splitting %lld samples", (long long)train->n);
  }
  compact(train, in_val);
  free(in_val);
  val->num_classes = train->num_classes;
  return 0;
}
