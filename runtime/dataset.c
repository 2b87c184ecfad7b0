/* dataset.c: transformations of a loaded nnc_rt_dataset, applied by the
 * driver after loading (IDX, CSV or NPY) and before training: scaling,
 * standardisation and the validation split.
 *
 * Standardisation statistics are fitted on one set (the training split,
 * after the validation split is taken off, so validation data never leaks
 * into them) and applied to every set; they are returned to the caller so
 * they can be saved with a checkpoint (as extra tensors) and applied again
 * at inference. Means and standard deviations are computed in double in
 * one pass over the data (shifted by the first sample); the standard deviation is the population
 * one (divide by n, as scikit-learn's StandardScaler) and a constant feature keeps std 1.
 *
 * The split draws a permutation from an RNG seeded only by the caller's
 * seed, so the same seed always gives the same validation samples; both
 * parts keep the samples in their original relative order.
 */
#include "rt_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Keeps the split stream apart from other uses of the same seed. */
static const uint64_t SPLIT_SEED_SALT = UINT64_C(0x53504C4954A7F00D);

void nnc_rt_dataset_scale(nnc_rt_dataset *ds, float scale) {
  int64_t total = ds->n * ds->sample_size;
  for (int64_t i = 0; i < total; i++)
    ds->x[i] *= scale;
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
  fit_job f = {ds, sum, sq};
  nnc_rt_parallel(pool, fit_task, &f, d);
  for (int64_t j = 0; j < d; j++) {
    double m = sum[j] / (double)ds->n;
    double var = sq[j] / (double)ds->n - m * m, sd = var > 0 ? sqrt(var) : 0;
    stats->mean[j] = (float)((double)ds->x[j] + m);
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
  apply_job a = {stats, ds};
  nnc_rt_parallel(pool, apply_task, &a, ds->n);
  return 0;
}

void nnc_rt_norm_free(nnc_rt_norm_stats *stats) {
  free(stats->mean);
  free(stats->std);
  *stats = (nnc_rt_norm_stats){0};
}

/* dst = the samples of src whose keep[i] == want, in order. */
static int gather(nnc_rt_dataset *dst, const nnc_rt_dataset *src, const char *keep, char want,
                  int64_t n) {
  *dst = *src;
  dst->n = n;
  dst->x = malloc((size_t)(n * src->sample_size) * sizeof(float));
  dst->labels = src->labels ? malloc((size_t)n * sizeof(int32_t)) : NULL;
  dst->targets = src->targets ? malloc((size_t)(n * src->target_size) * sizeof(float)) : NULL;
  if (!dst->x || (src->labels && !dst->labels) || (src->targets && !dst->targets)) return -1;
  int64_t k = 0;
  for (int64_t i = 0; i < src->n; i++) {
    if (keep[i] != want) continue;
    memcpy(dst->x + k * src->sample_size, src->x + i * src->sample_size,
           (size_t)src->sample_size * sizeof(float));
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
 * Fashion-MNIST). The buffers keep their size. */
static void compact(nnc_rt_dataset *ds, const char *drop) {
  int64_t k = 0, d = ds->sample_size, t = ds->target_size;
  for (int64_t i = 0; i < ds->n; i++) {
    if (drop[i]) continue;
    if (k != i) {
      memmove(ds->x + k * d, ds->x + i * d, (size_t)d * sizeof(float));
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
