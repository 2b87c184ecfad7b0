/* train.c: the training loop and evaluation over a compiled model.
 *
 * The compiled model (nnc_rt_model) sees the world only through its arena.
 * For each batch this file gathers samples into the arena at x_off (f32
 * [batch, sample_size]) and y_off (i32 class labels, or f32 targets), writes
 * the scalar inputs (step: f32, the 1-based global optimizer step; epoch:
 * f32, 0-based; seed: u32, the low bits of opts->seed; a negative offset
 * means the model has no such input), calls train_step or eval_step, and
 * reads the per-sample loss_vec and correct_vec (correct_vec_off == -1: the
 * model reports no accuracy) back.
 *
 * Training: each epoch visits a permutation of the training set (the
 * identity reshuffled by an rng seeded from opts->seed alone, so the order
 * of epoch e does not depend on anything but the seed and e) and runs
 * floor(n / batch) steps; the last partial batch is dropped. A non-finite
 * loss stops training with an error. Evaluation covers every sample: the
 * last batch is padded with zero samples (label 0) and only its first
 * `valid` results count. The only allocation is the permutation, made once
 * before the first step.
 */
#include "rt_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Keeps the shuffle stream apart from any other use of the same seed. */
static const uint64_t SHUFFLE_SEED_SALT = UINT64_C(0x5348554646C3A7E5);

static int check_dataset(const nnc_rt_model *m, const nnc_rt_dataset *ds, const char *what,
                         nnc_rt_error *err) {
  if (ds->sample_size != m->sample_size)
    return nnc_rt_fail(err, "%s set has %lld features per sample, the model expects %lld", what,
                       (long long)ds->sample_size, (long long)m->sample_size);
  if (m->label_is_class) {
    if (!ds->labels)
      return nnc_rt_fail(err, "%s set has no class labels, the model expects them", what);
    if (ds->num_classes > m->num_classes)
      return nnc_rt_fail(err, "%s set has labels up to %d, the model has %lld classes", what,
                         ds->num_classes - 1, (long long)m->num_classes);
    for (int64_t i = 0; i < ds->n; i++)
      if (ds->labels[i] < 0 || ds->labels[i] >= m->num_classes)
        return nnc_rt_fail(err, "%s set: sample %lld has label %d, outside 0..%lld", what,
                           (long long)i, ds->labels[i], (long long)m->num_classes - 1);
  } else if (!ds->targets || ds->target_size != m->target_size) {
    return nnc_rt_fail(err, "%s set has %lld targets per sample, the model expects %lld", what,
                       (long long)(ds->targets ? ds->target_size : 0), (long long)m->target_size);
  }
  return 0;
}

/* Copies sample idx of ds into row `row` of the batch in the arena. */
static void put_sample(const nnc_rt_model *m, char *arena, const nnc_rt_dataset *ds, int64_t row,
                       int64_t idx) {
  float *x = (float *)(arena + m->x_off) + row * m->sample_size;
  memcpy(x, ds->x + idx * m->sample_size, (size_t)m->sample_size * sizeof(float));
  if (m->label_is_class) {
    ((int32_t *)(arena + m->y_off))[row] = ds->labels[idx];
  } else {
    float *y = (float *)(arena + m->y_off) + row * m->target_size;
    memcpy(y, ds->targets + idx * m->target_size, (size_t)m->target_size * sizeof(float));
  }
}

/* Zero sample with label 0: the padding of a short evaluation batch. */
static void put_padding(const nnc_rt_model *m, char *arena, int64_t row) {
  memset((float *)(arena + m->x_off) + row * m->sample_size, 0,
         (size_t)m->sample_size * sizeof(float));
  if (m->label_is_class)
    ((int32_t *)(arena + m->y_off))[row] = 0;
  else
    memset((float *)(arena + m->y_off) + row * m->target_size, 0,
           (size_t)m->target_size * sizeof(float));
}

static void set_scalars(const nnc_rt_model *m, char *arena, int64_t step, int64_t epoch,
                        uint64_t seed) {
  float step_f = (float)step, epoch_f = (float)epoch;
  uint32_t seed_u = (uint32_t)seed;
  if (m->step_off >= 0) memcpy(arena + m->step_off, &step_f, sizeof step_f);
  if (m->epoch_off >= 0) memcpy(arena + m->epoch_off, &epoch_f, sizeof epoch_f);
  if (m->seed_off >= 0) memcpy(arena + m->seed_off, &seed_u, sizeof seed_u);
}

/* Sums loss_vec and correct_vec over the first `valid` samples of a batch. */
static void batch_sums(const nnc_rt_model *m, const char *arena, int64_t valid, double *loss,
                       double *correct) {
  const float *lv = (const float *)(arena + m->loss_vec_off);
  double l = 0, c = 0;
  for (int64_t i = 0; i < valid; i++)
    l += lv[i];
  if (m->correct_vec_off >= 0) {
    const float *cv = (const float *)(arena + m->correct_vec_off);
    for (int64_t i = 0; i < valid; i++)
      c += cv[i];
  }
  *loss += l;
  *correct += c;
}

int nnc_rt_evaluate(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool, const nnc_rt_dataset *ds,
                    double *loss, double *acc, nnc_rt_error *err) {
  *loss = *acc = NAN;
  if (m->batch < 1) return nnc_rt_fail(err, "model batch size %lld < 1", (long long)m->batch);
  if (check_dataset(m, ds, "evaluation", err)) return -1;
  if (ds->n <= 0) return 0;
  double loss_sum = 0, correct_sum = 0;
  for (int64_t start = 0; start < ds->n; start += m->batch) {
    int64_t valid = ds->n - start < m->batch ? ds->n - start : m->batch;
    for (int64_t r = 0; r < valid; r++)
      put_sample(m, arena, ds, r, start + r);
    for (int64_t r = valid; r < m->batch; r++)
      put_padding(m, arena, r);
    m->eval_step(arena, pool);
    batch_sums(m, arena, valid, &loss_sum, &correct_sum);
  }
  *loss = loss_sum / (double)ds->n;
  if (m->correct_vec_off >= 0) *acc = correct_sum / (double)ds->n;
  return 0;
}

/* One training epoch; fills the train_* fields of st. */
static int train_epoch(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool,
                       const nnc_rt_dataset *train, const nnc_rt_train_opts *opts, int64_t epoch,
                       const int64_t *perm, nnc_rt_progress *progress, nnc_rt_epoch_stats *st,
                       nnc_rt_error *err) {
  int64_t steps = train->n / m->batch;
  double loss_sum = 0, correct_sum = 0, start = nnc_rt_now();
  for (int64_t s = 0; s < steps; s++) {
    const int64_t *rows = perm + s * m->batch;
    for (int64_t r = 0; r < m->batch; r++)
      put_sample(m, arena, train, r, rows[r]);
    set_scalars(m, arena, epoch * steps + s + 1, epoch, opts->seed);
    m->train_step(arena, pool);
    double batch_loss = 0;
    batch_sums(m, arena, m->batch, &batch_loss, &correct_sum);
    if (!isfinite(batch_loss))
      return nnc_rt_fail(err, "loss became NaN/inf at epoch %lld step %lld/%lld (global step %lld)",
                         (long long)epoch + 1, (long long)s + 1, (long long)steps,
                         (long long)(epoch * steps + s + 1));
    loss_sum += batch_loss;
    nnc_rt_progress_step(progress, s + 1, loss_sum, correct_sum, (s + 1) * m->batch);
  }
  double seconds = nnc_rt_now() - start, samples = (double)(steps * m->batch);
  st->train_loss = loss_sum / samples;
  st->train_acc = m->correct_vec_off >= 0 ? correct_sum / samples : NAN;
  st->samples_per_s = nnc_rt_samples_per_s(steps * m->batch, seconds);
  return 0;
}

int nnc_rt_train(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool, const nnc_rt_dataset *train,
                 const nnc_rt_dataset *val, const nnc_rt_train_opts *opts, nnc_rt_epoch_cb cb,
                 void *user, nnc_rt_error *err) {
  nnc_rt_train_opts defaults = {.epochs = 1, .shuffle = 1};
  if (!opts) opts = &defaults;
  if (m->batch < 1) return nnc_rt_fail(err, "model batch size %lld < 1", (long long)m->batch);
  if (opts->epochs < 0)
    return nnc_rt_fail(err, "negative epoch count %lld", (long long)opts->epochs);
  if (check_dataset(m, train, "training", err)) return -1;
  if (val && check_dataset(m, val, "validation", err)) return -1;
  int64_t steps = train->n / m->batch;
  if (steps == 0)
    return nnc_rt_fail(err, "training set has %lld samples, fewer than one batch of %lld",
                       (long long)train->n, (long long)m->batch);
  int64_t *perm = malloc((size_t)train->n * sizeof *perm);
  if (!perm)
    return nnc_rt_fail(err, "out of memory for a permutation of %lld samples", (long long)train->n);
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, opts->seed ^ SHUFFLE_SEED_SALT);
  nnc_rt_progress progress;
  nnc_rt_progress_init(&progress, opts->progress, opts->interactive, opts->epochs, steps, m->batch,
                       m->correct_vec_off >= 0);
  nnc_rt_set_ftz_daz();
  int rc = 0;
  for (int64_t epoch = 0; epoch < opts->epochs && rc == 0; epoch++) {
    double start = nnc_rt_now();
    nnc_rt_progress_begin_epoch(&progress, epoch);
    for (int64_t i = 0; i < train->n; i++)
      perm[i] = i;
    if (opts->shuffle) nnc_rt_rng_shuffle(&rng, perm, train->n);
    nnc_rt_epoch_stats st = {.epoch = epoch, .val_loss = NAN, .val_acc = NAN};
    rc = train_epoch(m, arena, pool, train, opts, epoch, perm, &progress, &st, err);
    if (rc == 0 && val && val->n > 0)
      rc = nnc_rt_evaluate(m, arena, pool, val, &st.val_loss, &st.val_acc, err);
    if (rc) break;
    st.seconds = nnc_rt_now() - start;
    nnc_rt_progress_end_epoch(&progress, &st);
    if (cb) cb(user, &st);
  }
  free(perm);
  return rc;
}
