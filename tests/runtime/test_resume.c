/* test_resume.c: training control in nnc_rt_train (train.c): checkpoints
 * during training, resume, early stopping and keep_best.
 *   - Resume is exact: 4 epochs with a checkpoint every epoch, against 2
 *     epochs then a resume (into a model initialised differently) up to 4:
 *     per-epoch losses and every tensor (weights, buffer, momentum) equal bit
 *     for bit, with noise augmentation on so the augmentation stream must be
 *     restored too; the log of the two runs together has all four epochs.
 *   - Resume refuses a checkpoint of another model (hash) or another epoch
 *     length, and one without a training position, and one that has done
 *     all the epochs asked for; a run that stopped early resumes with its
 *     patience restarted.
 *   - checkpoint_every writes after epochs N, 2N, ... and the last.
 *   - Early stopping and keep_best on a scripted model whose validation
 *     loss/accuracy per epoch is fixed: stops at the right epoch, keeps the
 *     right best checkpoint, and a resumed run stops where the uninterrupted
 *     one did (the patience counter is part of the state). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_testutil.h"

static const char *dir;

static int setup(void **state) {
  dir = tu_tmpdir("resume");
  return dir ? 0 : -1;
}

static int teardown(void **state) {
  tu_rmdir(dir);
  return 0;
}

typedef struct epoch_log {
  int calls;
  nnc_rt_epoch_stats stats[32];
} epoch_log;

static void log_epoch(void *user, const nnc_rt_epoch_stats *s) {
  epoch_log *log = user;
  assert_true(log->calls < 32);
  log->stats[log->calls++] = *s;
}

static const nnc_rt_augment NOISE = {NNC_RT_AUG_NOISE, 0.01};

/* Trains the linear model from init_seed for `epochs` (total), resuming
 * from `resume` when non-NULL; checkpoints to ckpt every epoch. */
static void lin_run(tu_lin *l, uint64_t init_seed, int64_t epochs, const char *ckpt,
                    const char *resume, const char *log_path, epoch_log *log) {
  tu_lin_make(l, 8, init_seed);
  nnc_rt_dataset train, val;
  tu_lin_data(&train, 100);
  tu_lin_data(&val, 37);
  nnc_rt_train_opts o = {.epochs = epochs,
                         .seed = 42,
                         .shuffle = 1,
                         .augment = &NOISE,
                         .naugment = 1,
                         .log_path = log_path,
                         .checkpoint_path = ckpt,
                         .checkpoint_every = 1,
                         .model_hash = "lin-v1",
                         .resume_path = resume};
  nnc_rt_error err = {{0}};
  *log = (epoch_log){0};
  int rc = nnc_rt_train(&l->m, l->arena, NULL, &train, &val, &o, log_epoch, log, &err);
  if (rc) printf("%s\n", err.msg);
  assert_int_equal(rc, 0);
  nnc_rt_dataset_free(&train);
  nnc_rt_dataset_free(&val);
}

static void test_resume_bit_exact(void **state) {
  tu_lin full, part, resumed;
  epoch_log lf, lp, lr;
  const char *ck_full = tu_path(dir, "full.safetensors"), *ck = tu_path(dir, "part.safetensors");
  const char *log = tu_path(dir, "run.csv");
  lin_run(&full, 1, 4, ck_full, NULL, NULL, &lf);
  char *full_arena = malloc(full.m.arena_bytes);
  memcpy(full_arena, full.arena, full.m.arena_bytes);
  lin_run(&part, 1, 2, ck, NULL, log, &lp);
  lin_run(&resumed, 7, 4, ck, ck, log, &lr); /* other initial weights: the checkpoint wins */
  assert_int_equal(lf.calls, 4);
  assert_int_equal(lp.calls, 2);
  assert_int_equal(lr.calls, 2);
  for (int e = 0; e < 2; e++) {
    assert_memory_equal(&lf.stats[e].train_loss, &lp.stats[e].train_loss, sizeof(double));
    assert_int_equal(lr.stats[e].epoch, e + 2);
    assert_memory_equal(&lf.stats[e + 2].train_loss, &lr.stats[e].train_loss, sizeof(double));
    assert_memory_equal(&lf.stats[e + 2].val_loss, &lr.stats[e].val_loss, sizeof(double));
  }
  printf("  epoch 4 train loss %.17g (both runs)\n", lf.stats[3].train_loss);
  for (int i = 0; i < full.m.ntensors; i++) {
    int64_t off = full.m.tensors[i].offset;
    assert_memory_equal(full_arena + off, resumed.arena + off, 4);
  }
  assert_true(*(float *)(resumed.arena + resumed.steps_off) == 48.0f); /* buffer: 4 x 12 steps */
  /* Both checkpoints now stand at epoch 4, step 48, with equal weights. */
  nnc_rt_train_state a, b;
  int has;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_checkpoint_load(ck_full, &part.m, part.arena, NULL, &a, &has, &err), 0);
  float w_full = tu_lin_w(&part);
  assert_int_equal(nnc_rt_checkpoint_load(ck, &part.m, part.arena, NULL, &b, &has, &err), 0);
  assert_true(w_full == tu_lin_w(&part));
  assert_int_equal(a.epoch, 4);
  assert_int_equal(b.step, 48);
  assert_memory_equal(&a.shuffle_rng, &b.shuffle_rng, sizeof a.shuffle_rng);
  assert_memory_equal(&a.augment_rng, &b.augment_rng, sizeof a.augment_rng);
  assert_string_equal(b.model_hash, "lin-v1");
  /* The log of the interrupted run has all four epochs, in order. */
  char *text = tu_read(log, NULL);
  int epochs = 0;
  for (char *p = text; (p = strstr(p, "\nepoch,")); p++) {
    epochs++;
    assert_int_equal(atoi(p + 7), epochs);
  }
  assert_int_equal(epochs, 4);
  assert_int_equal(strncmp(text, "kind,epoch,step,", 16), 0);
  assert_null(strstr(text + 1, "kind,")); /* one header */
  free(text);
  free(full_arena);
  tu_lin_free(&full);
  tu_lin_free(&part);
  tu_lin_free(&resumed);
}

static void test_resume_refusals(void **state) {
  tu_lin l;
  epoch_log log;
  const char *ck = tu_path(dir, "refuse.safetensors");
  lin_run(&l, 1, 1, ck, NULL, NULL, &log);
  nnc_rt_dataset train;
  nnc_rt_error err = {{0}};
  /* Another model hash. */
  tu_lin_data(&train, 100);
  nnc_rt_train_opts o = {.epochs = 3, .resume_path = ck, .model_hash = "other"};
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err), -1);
  char want[1100];
  snprintf(want, sizeof want,
           "%s: written by a different model (model hash lin-v1, this one other)", ck);
  assert_string_equal(err.msg, want);
  nnc_rt_dataset_free(&train);
  /* Another epoch length: 200 samples give 25 steps per epoch, not 12. */
  tu_lin_data(&train, 200);
  o.model_hash = "lin-v1";
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err), -1);
  snprintf(want, sizeof want,
           "%s: stopped at step 12 after 1 epochs, which does not fit 25 steps per epoch (was the "
           "data set or batch size changed?)",
           ck);
  assert_string_equal(err.msg, want);
  nnc_rt_dataset_free(&train);
  /* Weights only. */
  const char *w = tu_path(dir, "weights.safetensors");
  assert_int_equal(nnc_rt_checkpoint_save(w, &l.m, l.arena, NULL, &err), 0);
  tu_lin_data(&train, 100);
  o.resume_path = w;
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err), -1);
  snprintf(want, sizeof want, "%s: holds weights only, no training position to resume from", w);
  assert_string_equal(err.msg, want);
  /* Already at the end: nothing to train is an error that says so, not a
   * silent "trained 0 epochs". */
  o = (nnc_rt_train_opts){.epochs = 1, .resume_path = ck};
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err), -1);
  snprintf(want, sizeof want,
           "nothing to train: %s has done 1 epoch and the run is for 1 in total (epochs counts "
           "the resumed ones too); ask for more than 1",
           ck);
  assert_string_equal(err.msg, want);
  nnc_rt_dataset_free(&train);
  tu_lin_free(&l);
}

/* A run that early stopping ended, resumed for more epochs, trains until
 * patience runs out again (2 epochs here), not one epoch; the progress
 * stream says where it resumed. */
static void test_resume_after_early_stop(void **state) {
  (void)state;
  tu_lin l;
  tu_lin_make(&l, 8, 1);
  nnc_rt_dataset train;
  tu_lin_data(&train, 100);
  const char *ck = tu_path(dir, "stopped.safetensors");
  nnc_rt_train_result res;
  nnc_rt_error err = {{0}};
  /* min_delta so large that no epoch improves: stops after epoch 3. */
  nnc_rt_train_opts o = {.epochs = 10,
                         .early_stop = 1,
                         .patience = 2,
                         .min_delta = 1e30,
                         .checkpoint_path = ck,
                         .result = &res};
  if (nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err))
    fail_msg("%s", err.msg);
  assert_true(res.stopped_early);
  assert_int_equal(res.last_epoch, 3);
  char *text = NULL;
  size_t len = 0;
  FILE *progress = open_memstream(&text, &len);
  o.resume_path = ck;
  o.progress = progress;
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err), 0);
  fclose(progress);
  assert_true(res.stopped_early);
  assert_int_equal(res.epochs_run, 2);
  assert_int_equal(res.last_epoch, 5);
  char want[1200];
  snprintf(want, sizeof want,
           "resumed from %s: epoch 3 of 10 done (step 36); it had stopped early, so early "
           "stopping's patience starts over\n",
           ck);
  assert_non_null(strstr(text, want));
  free(text);
  nnc_rt_dataset_free(&train);
  tu_lin_free(&l);
}

/* Saves l's weights with the training position st, resumes from it and
 * expects "<path>: metadata "<field>" is missing, malformed or out of range". */
static void expect_bad_position(tu_lin *l, const nnc_rt_train_state *st, const char *field) {
  const char *ck = tu_path(dir, "damaged.safetensors");
  nnc_rt_error err = {{0}};
  nnc_rt_ckpt_save_opts so = {.state = st};
  assert_int_equal(nnc_rt_checkpoint_save(ck, &l->m, l->arena, &so, &err), 0);
  nnc_rt_dataset train;
  tu_lin_data(&train, 100);
  nnc_rt_train_opts o = {.epochs = 3, .shuffle = 1, .resume_path = ck};
  assert_int_equal(nnc_rt_train(&l->m, l->arena, NULL, &train, NULL, &o, NULL, NULL, &err), -1);
  char want[1100];
  snprintf(want, sizeof want, "%s: metadata \"%s\" is missing, malformed or out of range", ck,
           field);
  printf("  %s\n", err.msg);
  assert_string_equal(err.msg, want);
  nnc_rt_dataset_free(&train);
}

/* Damaged positions of issue 16: an all-zero RNG state (a fixed point of
 * xoshiro256**: the shuffle looped forever), a negative epoch (ran ~10^12
 * epochs), epoch 2^61 with step 0 (the product wrapped to 0: "trained" 0
 * epochs and exited 0), and the other fields out of their ranges. */
static void test_resume_damaged_position(void **state) {
  tu_lin l;
  tu_lin_make(&l, 8, 1);
  nnc_rt_train_state good = {.step = 12, .epoch = 1, .best_metric = NAN};
  nnc_rt_rng_seed(&good.shuffle_rng, 1);
  nnc_rt_rng_seed(&good.augment_rng, 2);
  nnc_rt_train_state st = good;
  memset(&st.shuffle_rng, 0, sizeof st.shuffle_rng);
  expect_bad_position(&l, &st, "rng_shuffle");
  st = good;
  memset(&st.augment_rng, 0, sizeof st.augment_rng);
  expect_bad_position(&l, &st, "rng_augment");
  st = good, st.epoch = -1, st.step = -12;
  expect_bad_position(&l, &st, "step");
  st = good, st.epoch = -1;
  expect_bad_position(&l, &st, "epoch");
  st = good, st.epoch = INT64_C(1) << 61, st.step = 0;
  expect_bad_position(&l, &st, "epoch");
  st = good, st.best_epoch = 2;
  expect_bad_position(&l, &st, "best_epoch");
  st = good, st.wait = -1;
  expect_bad_position(&l, &st, "wait");
  st = good, st.wall_s = -5;
  expect_bad_position(&l, &st, "wall_s");
  tu_lin_free(&l);
}

/* Records the epoch of every checkpoint rename. */
typedef struct save_log {
  int epoch_now; /* set by the epoch callback */
  int nsaves;
  int epochs[32];
} save_log;

static int record_saves(void *user, int64_t call, const char *what) {
  save_log *s = user;
  if (strcmp(what, "rename") == 0) s->epochs[s->nsaves++] = s->epoch_now;
  return 0;
}

static void note_epoch(void *user, const nnc_rt_epoch_stats *st) {
  ((save_log *)user)->epoch_now = (int)st->epoch + 1;
}

static void test_checkpoint_every(void **state) {
  tu_lin l;
  tu_lin_make(&l, 8, 1);
  nnc_rt_dataset train;
  tu_lin_data(&train, 100);
  save_log saves = {0};
  nnc_rt_io_hooks io = {record_saves, &saves};
  nnc_rt_train_opts o = {.epochs = 5,
                         .checkpoint_path = tu_path(dir, "every.safetensors"),
                         .checkpoint_every = 2,
                         .io = &io};
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, note_epoch, &saves, &err),
                   0);
  assert_int_equal(saves.nsaves, 3);
  assert_int_equal(saves.epochs[0], 2);
  assert_int_equal(saves.epochs[1], 4);
  assert_int_equal(saves.epochs[2], 5);
  nnc_rt_dataset_free(&train);
  tu_lin_free(&l);
}

/* ---- A scripted model: per-epoch validation loss and accuracy ---- */
static const float VAL_LOSS[10] = {5, 4, 4.5f, 3.9f, 3.95f, 3.96f, 3.0f, 2, 1, 0};
static const float VAL_ACC[10] = {0.5f, 0.6f, 0.6f, 0.7f, 0.7f, 0.7f, 0.7f, 0.8f, 0.9f, 1};
static nnc_rt_model scripted;
static nnc_rt_tensor scripted_t[1];

static void scripted_train(char *arena, nnc_rt_pool *pool) {
  const nnc_rt_model *m = &scripted;
  for (int64_t i = 0; i < m->batch; i++) {
    ((float *)(arena + m->loss_vec_off))[i] = 1;
    ((float *)(arena + m->correct_vec_off))[i] = 0;
  }
  *(float *)(arena + scripted_t[0].offset) += 1; /* a weight that changes */
}

static void scripted_eval(char *arena, nnc_rt_pool *pool) {
  const nnc_rt_model *m = &scripted;
  int e = (int)*(float *)(arena + m->epoch_off); /* left by the last train step */
  for (int64_t i = 0; i < m->batch; i++) {
    ((float *)(arena + m->loss_vec_off))[i] = VAL_LOSS[e];
    ((float *)(arena + m->correct_vec_off))[i] = VAL_ACC[e];
  }
}

static char *scripted_make(void) {
  scripted = (nnc_rt_model){.arena_bytes = 256,
                            .batch = 2,
                            .sample_size = 1,
                            .target_size = 1,
                            .x_off = 0,
                            .y_off = 16,
                            .loss_vec_off = 32,
                            .correct_vec_off = 48,
                            .step_off = 64,
                            .epoch_off = 68,
                            .seed_off = 72,
                            .total_steps_off = -1,
                            .lr_off = -1};
  scripted_t[0] =
      (nnc_rt_tensor){.name = "s.w", .role = NNC_RT_PARAM, .rank = 1, .shape = {1}, .offset = 128};
  scripted.tensors = scripted_t;
  scripted.ntensors = 1;
  scripted.train_step = scripted_train;
  scripted.eval_step = scripted_eval;
  return calloc(1, 256);
}

static int scripted_train_run(int metric, int64_t epochs, double min_delta, int64_t patience,
                              const char *ckpt, const char *resume, nnc_rt_train_result *res) {
  char *arena = scripted_make();
  nnc_rt_dataset ds;
  tu_lin_data(&ds, 4);
  nnc_rt_train_opts o = {.epochs = epochs,
                         .watch_metric = metric,
                         .early_stop = 1,
                         .patience = patience,
                         .min_delta = min_delta,
                         .checkpoint_path = ckpt,
                         .checkpoint_every = 100,
                         .keep_best = ckpt != NULL,
                         .resume_path = resume,
                         .result = res};
  nnc_rt_error err = {{0}};
  int rc = nnc_rt_train(&scripted, arena, NULL, &ds, &ds, &o, NULL, NULL, &err);
  if (rc) printf("%s\n", err.msg);
  nnc_rt_dataset_free(&ds);
  free(arena);
  return rc;
}

static void test_early_stopping_loss(void **state) {
  /* min_delta 0.05, patience 2: best 5 (e1), 4 (e2), 4.5 waits 1, 3.9
   * improves (e4), 3.95 and 3.96 wait 1, 2: stop after epoch 6. */
  nnc_rt_train_result res;
  const char *ck = tu_path(dir, "es.safetensors");
  assert_int_equal(scripted_train_run(NNC_RT_METRIC_LOSS, 10, 0.05, 2, ck, NULL, &res), 0);
  assert_int_equal(res.stopped_early, 1);
  assert_int_equal(res.epochs_run, 6);
  assert_int_equal(res.last_epoch, 6);
  assert_int_equal(res.best_epoch, 4);
  assert_true(res.best_metric == (double)3.9f);
  /* The last checkpoint is the stopping epoch; the best one is epoch 4. */
  char best[600];
  assert_int_equal(nnc_rt_checkpoint_best_path(best, sizeof best, ck), 0);
  char want[600];
  snprintf(want, sizeof want, "%s/es.best.safetensors", dir);
  assert_string_equal(best, want);
  char *arena = scripted_make();
  nnc_rt_train_state st;
  int has;
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_checkpoint_load(ck, &scripted, arena, NULL, &st, &has, &err), 0);
  assert_int_equal(st.epoch, 6);
  assert_int_equal(st.wait, 2);
  assert_true(*(float *)(arena + 128) == 12.0f); /* 6 epochs x 2 steps */
  assert_int_equal(nnc_rt_checkpoint_load(best, &scripted, arena, NULL, &st, &has, &err), 0);
  assert_int_equal(st.epoch, 4);
  assert_int_equal(st.best_epoch, 4);
  assert_true(*(float *)(arena + 128) == 8.0f);
  free(arena);
  /* With patience 3 the run reaches epoch 7 (3.0) and improves to the end. */
  assert_int_equal(scripted_train_run(NNC_RT_METRIC_LOSS, 10, 0, 3, NULL, NULL, &res), 0);
  assert_int_equal(res.stopped_early, 0);
  assert_int_equal(res.epochs_run, 10);
  assert_int_equal(res.best_epoch, 10);
}

/* restore_best: the run above ends on epoch 4's weight (8 steps: 8.0), not
 * epoch 6's (12.0); the checkpoint stays the last epoch's. */
static void test_restore_best(void **state) {
  (void)state;
  char *arena = scripted_make();
  nnc_rt_dataset ds;
  tu_lin_data(&ds, 4);
  nnc_rt_train_result res;
  const char *ck = tu_path(dir, "rb.safetensors");
  nnc_rt_train_opts o = {.epochs = 10,
                         .early_stop = 1,
                         .patience = 2,
                         .min_delta = 0.05,
                         .checkpoint_path = ck,
                         .restore_best = 1,
                         .result = &res};
  nnc_rt_error err = {{0}};
  assert_int_equal(nnc_rt_train(&scripted, arena, NULL, &ds, &ds, &o, NULL, NULL, &err), 0);
  assert_int_equal(res.last_epoch, 6);
  assert_int_equal(res.restored_epoch, 4);
  assert_true(*(float *)(arena + 128) == 8.0f);
  nnc_rt_train_state st;
  int has;
  assert_int_equal(nnc_rt_checkpoint_load(ck, &scripted, arena, NULL, &st, &has, &err), 0);
  assert_true(*(float *)(arena + 128) == 12.0f);
  /* Without it, the last epoch's weights. */
  memset(arena, 0, 256);
  o.restore_best = 0;
  o.checkpoint_path = NULL;
  assert_int_equal(nnc_rt_train(&scripted, arena, NULL, &ds, &ds, &o, NULL, NULL, &err), 0);
  assert_int_equal(res.restored_epoch, 0);
  assert_true(*(float *)(arena + 128) == 12.0f);
  nnc_rt_dataset_free(&ds);
  free(arena);
}

static void test_early_stopping_accuracy_and_resume(void **state) {
  /* Accuracy 0.5, 0.6, 0.6, 0.7, 0.7, 0.7 -> patience 2 stops after 6. */
  nnc_rt_train_result res;
  assert_int_equal(scripted_train_run(NNC_RT_METRIC_ACCURACY, 10, 0, 2, NULL, NULL, &res), 0);
  assert_int_equal(res.epochs_run, 6);
  assert_int_equal(res.best_epoch, 4);
  assert_true(res.best_metric == (double)0.7f);
  /* Interrupted after 5 epochs (wait = 1), resumed: still stops after 6. */
  const char *ck = tu_path(dir, "acc.safetensors");
  assert_int_equal(scripted_train_run(NNC_RT_METRIC_ACCURACY, 5, 0, 2, ck, NULL, &res), 0);
  assert_int_equal(res.stopped_early, 0);
  assert_int_equal(scripted_train_run(NNC_RT_METRIC_ACCURACY, 10, 0, 2, ck, ck, &res), 0);
  assert_int_equal(res.epochs_run, 1);
  assert_int_equal(res.last_epoch, 6);
  assert_int_equal(res.stopped_early, 1);
  assert_int_equal(res.best_epoch, 4);
}

static void test_option_errors(void **state) {
  tu_lin l;
  tu_lin_make(&l, 8, 1);
  nnc_rt_dataset train;
  tu_lin_data(&train, 100);
  nnc_rt_error err = {{0}};
  nnc_rt_train_opts o = {.epochs = 1, .early_stop = 1, .watch_metric = NNC_RT_METRIC_ACCURACY};
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err), -1);
  assert_string_equal(err.msg, "accuracy is watched, but the model does not report accuracy");
  o = (nnc_rt_train_opts){.epochs = 1, .keep_best = 1};
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err), -1);
  assert_string_equal(err.msg, "keep_best needs a checkpoint path");
  train.rank = 1;
  o = (nnc_rt_train_opts){.epochs = 1, .augment = &NOISE, .naugment = 1};
  assert_int_equal(nnc_rt_train(&l.m, l.arena, NULL, &train, NULL, &o, NULL, NULL, &err), -1);
  assert_string_equal(err.msg, "noise needs image samples [H,W] or [C,H,W]; the training samples "
                               "have shape [1]");
  nnc_rt_dataset_free(&train);
  tu_lin_free(&l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_resume_bit_exact),
      cmocka_unit_test(test_resume_refusals),
      cmocka_unit_test(test_resume_damaged_position),
      cmocka_unit_test(test_resume_after_early_stop),
      cmocka_unit_test(test_checkpoint_every),
      cmocka_unit_test(test_early_stopping_loss),
      cmocka_unit_test(test_restore_best),
      cmocka_unit_test(test_early_stopping_accuracy_and_resume),
      cmocka_unit_test(test_option_errors),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
