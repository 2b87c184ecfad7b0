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
 * `valid` results count. The only allocations are the permutation and the
 * augmentation scratch, made once before the first step.
 *
 * Around the loop (all optional, from nnc_rt_train_opts): augmentation of
 * each training batch from a second seeded stream; a watched metric (the
 * evaluation set's loss or accuracy, or the training set's when there is
 * none) driving early stopping (stop when `patience` epochs in a row fail
 * to improve on the best by more than min_delta) and keep_best; a metrics
 * log (metrics_log.c) and its SVG (plot.c); checkpoints (checkpoint.c) at
 * epoch ends. The whole position of a run — completed epochs and steps, both
 * RNG streams as they stand before the next epoch's shuffle, early-stopping
 * state, wall time — is one nnc_rt_train_state, saved with every checkpoint
 * and restored by resume_path, so a resumed run computes exactly what the
 * uninterrupted one would have.
 */
#include "rt_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Keep the shuffle and augmentation streams apart from any other use of
 * the same seed. */
static const uint64_t SHUFFLE_SEED_SALT = UINT64_C(0x5348554646C3A7E5);
static const uint64_t AUGMENT_SEED_SALT = UINT64_C(0x4155474D454E5421);

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
void nnc_rt_put_sample(const nnc_rt_model *m, char *arena, const nnc_rt_dataset *ds, int64_t row,
                       int64_t idx) {
  nnc_rt_dataset_sample(ds, idx, (float *)(arena + m->x_off) + row * m->sample_size);
  if (m->label_is_class) {
    ((int32_t *)(arena + m->y_off))[row] = ds->labels[idx];
  } else {
    float *y = (float *)(arena + m->y_off) + row * m->target_size;
    memcpy(y, ds->targets + idx * m->target_size, (size_t)m->target_size * sizeof(float));
  }
}

/* Copies the samples rows[begin..end) into batch rows begin..end: the
 * batch gather, split over the pool (byte data is converted, and
 * standardised, row by row: the result is the same whoever does which
 * row). */
typedef struct gather_job {
  const nnc_rt_model *m;
  char *arena;
  const nnc_rt_dataset *ds;
  const int64_t *rows;
} gather_job;

static void gather_task(void *arg, int64_t begin, int64_t end) {
  const gather_job *g = arg;
  /* Rows are random: ask for a few ahead, or each waits on memory (a
   * byte row of Fashion-MNIST converts in less time than it takes to
   * arrive). */
  enum { AHEAD = 4 };
  for (int64_t i = begin; i < end && i < begin + AHEAD - 1; i++)
    nnc_rt_dataset_prefetch(g->ds, g->rows[i]);
  for (int64_t i = begin; i < end; i++) {
    if (i + AHEAD - 1 < end) nnc_rt_dataset_prefetch(g->ds, g->rows[i + AHEAD - 1]);
    nnc_rt_put_sample(g->m, g->arena, g->ds, i, g->rows[i]);
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

void nnc_rt_set_scalars(const nnc_rt_model *m, char *arena, const nnc_rt_step_scalars *s) {
  float step_f = (float)s->step, epoch_f = (float)s->epoch, total_f = (float)s->total_steps;
  uint32_t seed_u = (uint32_t)s->seed;
  if (m->step_off >= 0) memcpy(arena + m->step_off, &step_f, sizeof step_f);
  if (m->epoch_off >= 0) memcpy(arena + m->epoch_off, &epoch_f, sizeof epoch_f);
  if (m->seed_off >= 0) memcpy(arena + m->seed_off, &seed_u, sizeof seed_u);
  if (m->total_steps_off >= 0) memcpy(arena + m->total_steps_off, &total_f, sizeof total_f);
}

/* Adds to *loss and *correct the sums of loss_vec and correct_vec over
 * `valid` samples of a batch from row `first`. */
void nnc_rt_batch_sums(const nnc_rt_model *m, const char *arena, int64_t first, int64_t valid,
                       double *loss, double *correct) {
  const float *lv = (const float *)(arena + m->loss_vec_off) + first;
  double l = 0, c = 0;
  for (int64_t i = 0; i < valid; i++)
    l += lv[i];
  if (m->correct_vec_off >= 0) {
    const float *cv = (const float *)(arena + m->correct_vec_off) + first;
    for (int64_t i = 0; i < valid; i++)
      c += cv[i];
  }
  *loss += l;
  *correct += c;
}

void nnc_rt_eval_batch(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool,
                       const nnc_rt_dataset *ds, int64_t start, double *loss, double *correct) {
  int64_t valid = ds->n - start < m->batch ? ds->n - start : m->batch;
  for (int64_t r = 0; r < valid; r++)
    nnc_rt_put_sample(m, arena, ds, r, start + r);
  for (int64_t r = valid; r < m->batch; r++)
    put_padding(m, arena, r);
  m->eval_step(arena, pool);
  nnc_rt_batch_sums(m, arena, 0, valid, loss, correct);
}

int nnc_rt_evaluate(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool, const nnc_rt_dataset *ds,
                    double *loss, double *acc, nnc_rt_error *err) {
  return nnc_rt_predict(m, arena, pool, ds, -1, NULL, loss, acc, err);
}

int nnc_rt_predict(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool, const nnc_rt_dataset *ds,
                   int64_t pred_off, float *out, double *loss, double *acc, nnc_rt_error *err) {
  *loss = *acc = NAN;
  if (out && pred_off < 0) return nnc_rt_fail(err, "the model's output is not kept in its arena");
  if (m->batch < 1) return nnc_rt_fail(err, "model batch size %lld < 1", (long long)m->batch);
  if (check_dataset(m, ds, "evaluation", err)) return -1;
  if (ds->n <= 0) return 0;
  double loss_sum = 0, correct_sum = 0;
  for (int64_t start = 0; start < ds->n; start += m->batch) {
    int64_t valid = ds->n - start < m->batch ? ds->n - start : m->batch;
    nnc_rt_eval_batch(m, arena, pool, ds, start, &loss_sum, &correct_sum);
    if (out) /* f32[batch, num_classes] at pred_off: keep the valid rows */
      memcpy(out + start * m->num_classes, arena + pred_off,
             (size_t)(valid * m->num_classes) * sizeof(float));
  }
  *loss = loss_sum / (double)ds->n;
  if (m->correct_vec_off >= 0) *acc = correct_sum / (double)ds->n;
  return 0;
}

/* One training run: everything the epoch and step functions share. */
typedef struct run {
  const nnc_rt_model *m;
  char *arena;
  nnc_rt_pool *pool;
  const nnc_rt_dataset *train, *val;
  const nnc_rt_train_opts *o;
  int64_t steps; /* per epoch */
  int64_t *perm;
  float *scratch; /* one sample, for augmentation */
  nnc_rt_train_state st;
  nnc_rt_progress progress;
  nnc_rt_log log;
  double t0; /* nnc_rt_now() at the start, less the wall time of resumed epochs */
  double lr; /* as the model last reported it; NaN: it does not */

  int patience_restarted; /* resumed a run that had stopped early */
  float *best;            /* restore_best: the weights of epoch best_kept */
  int64_t best_kept;      /* 1-based, 0: none kept */
  /* The window of the next step row of the log. */
  double win_loss, win_correct, win_start;
  int64_t win_samples;
  nnc_rt_error *err;
  nnc_rt_dp dp; /* data-parallel: the step's state; dp.m NULL otherwise */
  const nnc_rt_comm *comm;
  int pending; /* data-parallel: an error (in err) waits for the next agreement */
} run;

static double read_lr(const run *r) {
  float lr;
  if (r->m->lr_off < 0) return NAN;
  memcpy(&lr, r->arena + r->m->lr_off, sizeof lr);
  return lr;
}

/* A step row of the log every log_every_steps steps. */
static int log_step(run *r, int64_t epoch, double loss, double correct) {
  r->win_loss += loss, r->win_correct += correct, r->win_samples += r->m->batch;
  if (r->o->log_every_steps <= 0 || r->st.step % r->o->log_every_steps) return 0;
  double now = nnc_rt_now(), n = (double)r->win_samples;
  nnc_rt_log_row row = {.epoch = epoch + 1,
                        .step = r->st.step,
                        .loss = r->win_loss / n,
                        .acc = r->m->correct_vec_off >= 0 ? r->win_correct / n : NAN,
                        .val_loss = NAN,
                        .val_acc = NAN,
                        .lr = r->lr,
                        .samples_per_s = nnc_rt_samples_per_s(r->win_samples, now - r->win_start),
                        .wall_s = now - r->t0};
  r->win_loss = r->win_correct = 0, r->win_samples = 0, r->win_start = now;
  return nnc_rt_log_write(&r->log, &row, r->err);
}

/* One training epoch; fills the train_* fields of st. */
static int train_epoch(run *r, int64_t epoch, nnc_rt_epoch_stats *st) {
  const nnc_rt_model *m = r->m;
  double loss_sum = 0, correct_sum = 0, start = nnc_rt_now();
  r->win_start = start;
  for (int64_t s = 0; s < r->steps; s++) {
    gather_job g = {m, r->arena, r->train, r->perm + s * m->batch};
    /* Small batches of small samples are not worth a parallel call. */
    if (m->batch * m->sample_size >= 16384)
      nnc_rt_parallel(r->pool, gather_task, &g, m->batch);
    else
      gather_task(&g, 0, m->batch);
    if (r->o->naugment > 0)
      nnc_rt_augment_batch(r->o->augment, r->o->naugment, r->train->rank, r->train->shape,
                           (float *)(r->arena + m->x_off), m->batch, r->scratch,
                           &r->st.augment_rng);
    nnc_rt_step_scalars sc = {epoch * r->steps + s + 1, epoch, r->st.seed, r->o->epochs * r->steps};
    double batch_loss = 0, batch_correct = 0;
    if (r->dp.m) {
      if (nnc_rt_dp_step(&r->dp, r->arena, r->pool, &sc, r->pending, &batch_loss, &batch_correct,
                         r->err))
        return -1;
    } else {
      nnc_rt_set_scalars(m, r->arena, &sc);
      m->train_step(r->arena, r->pool);
      /* per micro-batch, added in order, as the data-parallel step adds
       * them: the same printed numbers */
      int64_t G = m->micro_batches > 1 ? m->micro_batches : 1, b = m->batch / G;
      for (int64_t g = 0; g < G; g++)
        nnc_rt_batch_sums(m, r->arena, g * b, b, &batch_loss, &batch_correct);
    }
    if (!isfinite(batch_loss))
      return nnc_rt_fail(r->err,
                         "loss became NaN/inf at epoch %lld step %lld/%lld (global step %lld)",
                         (long long)epoch + 1, (long long)s + 1, (long long)r->steps,
                         (long long)(epoch * r->steps + s + 1));
    loss_sum += batch_loss;
    correct_sum += batch_correct;
    r->st.step = epoch * r->steps + s + 1;
    r->lr = read_lr(r);
    if (log_step(r, epoch, batch_loss, batch_correct)) {
      if (!r->dp.m) return -1;
      r->pending = 1; /* data-parallel: every rank stops at the next agreement */
    }
    nnc_rt_progress_step(&r->progress, s + 1, loss_sum, correct_sum, (s + 1) * m->batch);
  }
  double seconds = nnc_rt_now() - start, samples = (double)(r->steps * m->batch);
  st->train_loss = loss_sum / samples;
  st->train_acc = m->correct_vec_off >= 0 ? correct_sum / samples : NAN;
  st->samples_per_s = nnc_rt_samples_per_s(r->steps * m->batch, seconds);
  return 0;
}

/* The watched metric of an epoch; updates best/wait. Returns 1 if it
 * improved on the best so far. */
static int watch(run *r, const nnc_rt_epoch_stats *s) {
  int acc = r->o->watch_metric == NNC_RT_METRIC_ACCURACY, has_val = r->val && r->val->n > 0;
  double v = acc ? (has_val ? s->val_acc : s->train_acc) : (has_val ? s->val_loss : s->train_loss);
  double best = r->st.best_metric, d = r->o->min_delta;
  int improved = isnan(best) || (acc ? v > best + d : v < best - d);
  if (improved) {
    r->st.best_metric = v;
    r->st.best_epoch = s->epoch + 1;
    r->st.wait = 0;
  } else {
    r->st.wait++;
  }
  return improved;
}

static int save(run *r, const char *path) {
  r->st.wall_s = nnc_rt_now() - r->t0;
  nnc_rt_ckpt_save_opts so = {.state = &r->st,
                              .model_hash = r->o->model_hash,
                              .extra = r->o->extra,
                              .nextra = r->o->nextra,
                              .io = r->o->io};
  return nnc_rt_checkpoint_save(path, r->m, r->arena, &so, r->err);
}

/* The weights restore_best keeps: parameters, frozen weights, buffers. */
static int is_weight(const nnc_rt_tensor *t) {
  return t->role != NNC_RT_OPT_STATE && t->role != NNC_RT_GRAD;
}

/* Copies the weights between the arena and r->best (to_arena: back). */
static void copy_weights(run *r, int to_arena) {
  size_t at = 0;
  for (int i = 0; i < r->m->ntensors; i++) {
    const nnc_rt_tensor *t = &r->m->tensors[i];
    if (!is_weight(t)) continue;
    size_t bytes = (size_t)nnc_rt_numel(t->rank, t->shape) * sizeof(float);
    if (to_arena)
      memcpy(r->arena + t->offset, (char *)r->best + at, bytes);
    else
      memcpy((char *)r->best + at, r->arena + t->offset, bytes);
    at += bytes;
  }
}

static int alloc_best(run *r) {
  size_t bytes = 1;
  for (int i = 0; i < r->m->ntensors; i++)
    if (is_weight(&r->m->tensors[i]))
      bytes += (size_t)nnc_rt_numel(r->m->tensors[i].rank, r->m->tensors[i].shape) * sizeof(float);
  r->best = malloc(bytes);
  return r->best ? 0 : nnc_rt_fail(r->err, "out of memory for the best weights (%zu bytes)", bytes);
}

/* After epoch `epoch` (0-based) finished: log, watch, checkpoint. Sets
 * *stop when early stopping ends the run. */
static int end_epoch(run *r, const nnc_rt_epoch_stats *s, int *stop) {
  const nnc_rt_train_opts *o = r->o;
  r->st.epoch = s->epoch + 1;
  nnc_rt_log_row row = {.is_epoch = 1,
                        .epoch = s->epoch + 1,
                        .step = r->st.step,
                        .loss = s->train_loss,
                        .acc = s->train_acc,
                        .val_loss = s->val_loss,
                        .val_acc = s->val_acc,
                        .lr = r->lr,
                        .samples_per_s = s->samples_per_s,
                        .wall_s = nnc_rt_now() - r->t0};
  if (nnc_rt_log_write(&r->log, &row, r->err)) return -1;
  int improved = watch(r, s);
  if (r->best && improved) {
    copy_weights(r, 0);
    r->best_kept = s->epoch + 1;
  }
  *stop = o->early_stop && !improved && r->st.wait >= o->patience;
  if (!o->checkpoint_path) return 0;
  int64_t every = o->checkpoint_every > 0 ? o->checkpoint_every : 1;
  if (r->st.epoch % every == 0 || r->st.epoch == o->epochs || *stop)
    if (save(r, o->checkpoint_path)) return -1;
  if (o->keep_best && improved) {
    char best[4096];
    if (nnc_rt_checkpoint_best_path(best, sizeof best, o->checkpoint_path))
      return nnc_rt_fail(r->err, "%s: path too long", o->checkpoint_path);
    if (save(r, best)) return -1;
  }
  return 0;
}

static int check_opts(const nnc_rt_model *m, const nnc_rt_dataset *train,
                      const nnc_rt_train_opts *o, nnc_rt_error *err) {
  if (o->epochs < 0) return nnc_rt_fail(err, "negative epoch count %lld", (long long)o->epochs);
  if (nnc_rt_augment_check(o->augment, o->naugment, train->rank, train->shape, err)) return -1;
  if ((o->early_stop || o->keep_best) && o->watch_metric == NNC_RT_METRIC_ACCURACY &&
      m->correct_vec_off < 0)
    return nnc_rt_fail(err, "accuracy is watched, but the model does not report accuracy");
  if (o->keep_best && !o->checkpoint_path)
    return nnc_rt_fail(err, "keep_best needs a checkpoint path");
  if (o->early_stop && o->patience < 0)
    return nnc_rt_fail(err, "negative patience %lld", (long long)o->patience);
  return 0;
}

/* Restores the run's position from o->resume_path. */
static int resume(run *r) {
  const nnc_rt_train_opts *o = r->o;
  nnc_rt_ckpt_load_opts lo = {.extra = (nnc_rt_named_tensor *)o->extra, .nextra = o->nextra};
  int has_state;
  nnc_rt_train_state st;
  if (nnc_rt_checkpoint_load(o->resume_path, r->m, r->arena, &lo, &st, &has_state, r->err))
    return -1;
  const char *hash = o->model_hash ? o->model_hash : "";
  if (!has_state)
    return nnc_rt_fail(r->err, "%s: holds weights only, no training position to resume from",
                       o->resume_path);
  if (*hash && *st.model_hash && strcmp(hash, st.model_hash) != 0)
    return nnc_rt_fail(r->err, "%s: written by a different model (model hash %s, this one %s)",
                       o->resume_path, st.model_hash, hash);
  /* step == epoch * steps, without a product that could wrap. */
  if (st.epoch ? st.step % st.epoch || st.step / st.epoch != r->steps : st.step != 0)
    return nnc_rt_fail(r->err,
                       "%s: stopped at step %lld after %lld epochs, which does not fit %lld steps "
                       "per epoch (was the data set or batch size changed?)",
                       o->resume_path, (long long)st.step, (long long)st.epoch,
                       (long long)r->steps);
  if (st.epoch >= o->epochs)
    return nnc_rt_fail(r->err,
                       "nothing to train: %s has done %lld epoch%s and the run is for %lld in "
                       "total (epochs counts the resumed ones too); ask for more than %lld",
                       o->resume_path, (long long)st.epoch, st.epoch == 1 ? "" : "s",
                       (long long)o->epochs, (long long)st.epoch);
  /* A run that early stopping ended is resumed to train more: patience
   * starts over, as a new fit does in Keras (otherwise it would stop again
   * after one epoch). */
  r->patience_restarted = o->early_stop && st.wait >= o->patience;
  if (r->patience_restarted) st.wait = 0;
  r->st = st;
  return 0;
}

/* A schedule whose length is the run's (cosine without a period) reads the
 * run's total epochs from this scalar optimizer-state tensor; it is set
 * here, after any resume, so `--epochs` and resuming to a new total
 * stretch the schedule instead of restarting its cycle. */
static const char RUN_EPOCHS_TENSOR[] = "schedule.epochs";

static void set_run_length(const run *r) {
  for (int i = 0; i < r->m->ntensors; i++) {
    const nnc_rt_tensor *t = &r->m->tensors[i];
    if (t->role != NNC_RT_OPT_STATE || t->rank != 0 || strcmp(t->name, RUN_EPOCHS_TENSOR)) continue;
    float epochs = (float)r->o->epochs;
    memcpy(r->arena + t->offset, &epochs, sizeof epochs);
  }
}

static void init_state(run *r) {
  nnc_rt_train_state *st = &r->st;
  memset(st, 0, sizeof *st);
  st->seed = r->o->seed;
  nnc_rt_rng_seed(&st->shuffle_rng, r->o->seed ^ SHUFFLE_SEED_SALT);
  nnc_rt_rng_seed(&st->augment_rng, r->o->seed ^ AUGMENT_SEED_SALT);
  st->best_metric = NAN;
  snprintf(st->model_hash, sizeof st->model_hash, "%s", r->o->model_hash ? r->o->model_hash : "");
}

static int run_epochs(run *r, nnc_rt_epoch_cb cb, void *user) {
  const nnc_rt_train_opts *o = r->o;
  int stop = 0;
  for (int64_t epoch = r->st.epoch; epoch < o->epochs && !stop; epoch++) {
    double start = nnc_rt_now();
    nnc_rt_progress_begin_epoch(&r->progress, epoch);
    for (int64_t i = 0; i < r->train->n; i++)
      r->perm[i] = i;
    if (o->shuffle) nnc_rt_rng_shuffle(&r->st.shuffle_rng, r->perm, r->train->n);
    nnc_rt_epoch_stats st = {.epoch = epoch, .val_loss = NAN, .val_acc = NAN};
    if (train_epoch(r, epoch, &st)) return -1;
    if (r->val && r->val->n > 0 &&
        nnc_rt_evaluate_split(r->m, r->arena, r->pool, r->val, r->comm, &st.val_loss, &st.val_acc,
                              r->err))
      return -1;
    st.seconds = nnc_rt_now() - start;
    nnc_rt_progress_end_epoch(&r->progress, &st);
    if (cb) cb(user, &st);
    int failed = r->pending || end_epoch(r, &st, &stop);
    /* Rank 0 alone writes checkpoints and the log: its errors end all. */
    if (r->comm && r->comm->size > 1 ? nnc_rt_comm_agree(r->comm, failed, r->err) : failed)
      return -1;
    if (o->result) o->result->epochs_run++, o->result->stopped_early = stop;
  }
  return 0;
}

/* Closes the log and draws its SVG; keeps the first error. */
static int finish_log(run *r, int rc) {
  nnc_rt_error local, *err = rc ? &local : r->err;
  if (!r->log.f) return rc;
  if (nnc_rt_log_close(&r->log, err)) return -1;
  char svg[4096];
  if (nnc_rt_log_svg_path(svg, sizeof svg, r->o->log_path))
    return rc ? rc : nnc_rt_fail(err, "%s: path too long", r->o->log_path);
  if (nnc_rt_log_plot(r->o->log_path, svg, r->o->val_name, err)) return -1;
  return rc;
}

int nnc_rt_train(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool, const nnc_rt_dataset *train,
                 const nnc_rt_dataset *val, const nnc_rt_train_opts *opts, nnc_rt_epoch_cb cb,
                 void *user, nnc_rt_error *err) {
  nnc_rt_train_opts defaults = {.epochs = 1, .shuffle = 1};
  if (!opts) opts = &defaults;
  if (m->batch < 1) return nnc_rt_fail(err, "model batch size %lld < 1", (long long)m->batch);
  if (check_opts(m, train, opts, err)) return -1;
  if (check_dataset(m, train, "training", err)) return -1;
  if (val && check_dataset(m, val, opts->val_name ? opts->val_name : "validation", err)) return -1;
  run r = {.m = m, .arena = arena, .pool = pool, .train = train, .val = val, .o = opts, .err = err};
  r.steps = train->n / m->batch;
  r.lr = NAN;
  if (r.steps == 0)
    return nnc_rt_fail(err, "training set has %lld samples, fewer than one batch of %lld",
                       (long long)train->n, (long long)m->batch);
  if (opts->result) *opts->result = (nnc_rt_train_result){.best_metric = NAN};
  r.comm = opts->comm && opts->comm->size > 1 ? opts->comm : NULL;
  if (opts->data_parallel && nnc_rt_dp_init(&r.dp, m, opts->comm, err)) return -1;
  init_state(&r);
  int rc = opts->resume_path ? resume(&r) : 0;
  if (rc == 0) set_run_length(&r);
  r.perm = malloc((size_t)train->n * sizeof *r.perm);
  r.scratch = malloc((size_t)m->sample_size * sizeof *r.scratch + 1);
  if (rc == 0 && (!r.perm || !r.scratch))
    rc = nnc_rt_fail(err, "out of memory for a permutation of %lld samples", (long long)train->n);
  r.t0 = nnc_rt_now() - r.st.wall_s;
  if (rc == 0 && opts->log_path) rc = nnc_rt_log_open(&r.log, opts->log_path, r.st.epoch > 0, err);
  /* Every rank starts, or none (rank 0 alone opens the log). */
  if (r.comm) rc = nnc_rt_comm_agree(r.comm, rc != 0, err);
  if (rc) {
    if (r.log.f) finish_log(&r, rc);
    free(r.perm), free(r.scratch);
    nnc_rt_dp_free(&r.dp);
    return -1;
  }
  nnc_rt_progress_init(&r.progress, opts->progress, opts->interactive, opts->epochs, r.steps,
                       m->batch, m->correct_vec_off >= 0);
  if (opts->resume_path)
    nnc_rt_progress_resumed(&r.progress, opts->resume_path, r.st.epoch, r.st.step,
                            r.patience_restarted);
  nnc_rt_set_ftz_daz();
  if (rc == 0 && opts->restore_best) rc = alloc_best(&r);
  if (rc == 0) rc = run_epochs(&r, cb, user);
  if (rc == 0 && r.best_kept && r.best_kept != r.st.epoch) {
    copy_weights(&r, 1);
    if (opts->result) opts->result->restored_epoch = r.best_kept;
  }
  rc = finish_log(&r, rc);
  if (r.comm) rc = nnc_rt_comm_agree(r.comm, rc != 0, err);
  if (opts->result) {
    opts->result->last_epoch = r.st.epoch;
    opts->result->best_metric = r.st.best_metric;
    opts->result->best_epoch = r.st.best_epoch;
  }
  free(r.perm);
  free(r.scratch);
  free(r.best);
  nnc_rt_dp_free(&r.dp);
  return rc;
}
