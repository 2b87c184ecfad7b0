/* train_parallel.c: the data-parallel training step and the split
 * evaluation (docs/distributed.md).
 *
 * A model compiled for data-parallel training (nnc_rt_model.micro_batches
 * G > 0) splits each global batch of B samples into G micro-batches of
 * b = B / G. grad_step computes one micro-batch's gradient (its loss scaled
 * so that the G gradients add up to the global batch's) into the GRAD
 * tensors; this file adds the G gradients as a pairwise tree,
 * ((g0 + g1) + (g2 + g3)), puts the sum back into the GRAD tensors and
 * runs update_step. With N ranks (N divides G), rank r computes the
 * micro-batches [r G/N, (r+1) G/N): an aligned subtree, which it sums
 * locally; the N subtree sums are added as the top of the same tree
 * (nnc_rt_comm_allreduce_tree: each rank sums a slice, the slices are
 * all-gathered), so every rank holds the same sum. Every addition is the one a single process
 * makes, so weights and losses are the same bits for every N dividing G.
 *
 * The caller has gathered (and augmented) the whole global batch into the
 * arena, so that augmentation draws the same random numbers on every rank;
 * each micro-batch is moved to the first b rows before its grad_step.
 * Dropout masks are drawn from the seed input, which for micro-batch g is
 * the run's seed plus g times a constant: masks depend on the global
 * micro-batch, not on the rank.
 *
 * Batch-norm running statistics: each micro-batch's new value (computed
 * from the value before the step) goes to a tensor "bufnew.<buffer>"; the
 * buffer becomes their mean, summed like the gradients.
 *
 * A model with batch norm has instead rank steps of synchronised
 * statistics (nnc_rt_model.sync_stats): rank r of N moves its B/N rows to
 * the front and runs the rank step for N (grad_step for N = G,
 * grad_half_step for N = G/2), whose batch sums are added over the ranks
 * inside the step by the hook it calls (hook_allreduce: the top of the
 * tree); its gradients come out as its subtree's sum (the tree of its
 * chunks, in the kernels), those marked synced already the global sum; the
 * buffers come out the same on every rank. One process runs the ordinary
 * step (the same bits).
 *
 * Collectives per step, in this order on every rank: an all-gather of each
 * rank's status and per-micro-batch loss sums (a rank that failed since
 * the last step, e.g. writing the log, stops every rank here with its
 * message), then the all-reduce of the gradient subtree sums.
 */
#include "rt_internal.h"
#include "nnc_hash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The prefix of the tensors that carry a buffer's new value (ir/optim.c). */
static const char BUFNEW[] = "bufnew.";

/* Floats of the GRAD tensors the ranks add (the synced ones they hold
 * already summed). */
static int64_t grad_floats(const nnc_rt_model *m) {
  int64_t n = 0;
  for (int i = 0; i < m->ntensors; i++)
    if (m->tensors[i].role == NNC_RT_GRAD && !m->tensors[i].synced)
      n += nnc_rt_numel(m->tensors[i].rank, m->tensors[i].shape);
  return n;
}

/* Moves the GRAD tensors the ranks add, in table order, between the
 * arena and v. */
enum grads_move { TO_ARENA, FROM_ARENA, ADD_FROM_ARENA /* v += */ };
static void move_grads(const nnc_rt_model *m, char *arena, float *v, enum grads_move how) {
  for (int i = 0; i < m->ntensors; i++) {
    const nnc_rt_tensor *t = &m->tensors[i];
    if (t->role != NNC_RT_GRAD || t->synced) continue;
    int64_t n = nnc_rt_numel(t->rank, t->shape);
    float *a = (float *)(arena + t->offset);
    switch (how) {
    case TO_ARENA: memcpy(a, v, (size_t)n * sizeof(float)); break;
    case FROM_ARENA: memcpy(v, a, (size_t)n * sizeof(float)); break;
    case ADD_FROM_ARENA:
      for (int64_t j = 0; j < n; j++)
        v[j] += a[j];
      break;
    }
    v += n;
  }
}

/* The rank step of synchronised statistics for n ranks: its entry point
 * and rows, or an error naming n and the batch. */
static int sync_step(nnc_rt_dp *dp, int64_t n, nnc_rt_error *err) {
  const nnc_rt_model *m = dp->m;
  if (n == dp->G) dp->step = m->grad_step;
  if (n * 2 == dp->G) dp->step = m->grad_half_step;
  if (!dp->step) {
    char half[64] = "", alt[32] = "";
    if (m->grad_half_step) {
      snprintf(half, sizeof half, " or %lld of 2", (long long)(dp->G / 2));
      snprintf(alt, sizeof alt, "%lld or ", (long long)(dp->G / 2));
    }
    return nnc_rt_fail(err,
                       "%lld processes cannot share a batch of %lld with batch norm: its "
                       "statistics are synchronised over %lld ranks of 1 micro-batch of %lld "
                       "samples%s; run on %s%lld processes",
                       (long long)n, (long long)m->batch, (long long)dp->G,
                       (long long)(m->batch / dp->G), half, alt, (long long)dp->G);
  }
  dp->rows = m->batch / n;
  return 0;
}

/* The hook of the rank step's allreduces (nnc_rt_allreduce_hook). */
static void hook_allreduce(void *ctx, float *buf, int64_t n) {
  nnc_rt_dp *dp = ctx;
  if (dp->hook_failed) return;
  int64_t need = nnc_rt_comm_scratch_floats(dp->comm, n);
  if (need > dp->hook_scratch_n) {
    float *s = realloc(dp->hook_scratch, (size_t)need * sizeof(float));
    if (!s) {
      dp->hook_failed = nnc_rt_fail(&dp->hook_err, "out of memory for an all-reduce");
      return;
    }
    dp->hook_scratch = s, dp->hook_scratch_n = need;
  }
  if (nnc_rt_comm_allreduce_tree(dp->comm, buf, n, dp->hook_scratch, &dp->hook_err))
    dp->hook_failed = -1;
}

int nnc_rt_dp_init(nnc_rt_dp *dp, const nnc_rt_model *m, const nnc_rt_comm *comm,
                   nnc_rt_error *err) {
  memset(dp, 0, sizeof *dp);
  nnc_rt_comm_single(&dp->single);
  dp->comm = comm ? comm : &dp->single;
  int64_t n = dp->comm->size;
  /* one process of synchronised statistics: the ordinary step (the same bits) */
  if (m->sync_stats && n == 1) return 0;
  dp->m = m;
  if (m->micro_batches < 1 || !m->grad_step || !m->update_step)
    return nnc_rt_fail(err,
                       "this program has no data-parallel step (its batch of %lld is not "
                       "even, or it was compiled without one)",
                       (long long)m->batch);
  dp->G = m->micro_batches;
  dp->sync = m->sync_stats;
  if (dp->sync && sync_step(dp, n, err)) return -1;
  if (dp->G % n)
    return nnc_rt_fail(err,
                       "%lld processes cannot share the %lld micro-batches of %lld samples that "
                       "make up a batch of %lld; run on a number of processes that divides %lld",
                       (long long)n, (long long)dp->G, (long long)(m->batch / dp->G),
                       (long long)m->batch, (long long)dp->G);
  dp->b = m->batch / dp->G;
  dp->per = dp->G / n;
  dp->first = dp->comm->rank * dp->per;
  dp->P = grad_floats(m);
  dp->nsums = 1 + 2 * dp->per;
  dp->local = malloc((size_t)(dp->per * dp->P + 1) * sizeof(float));
  dp->gathered = malloc((size_t)nnc_rt_comm_scratch_floats(dp->comm, dp->P) * sizeof(float));
  dp->sums = malloc((size_t)dp->nsums * sizeof(double));
  dp->all_sums = malloc((size_t)(n * dp->nsums) * sizeof(double));
  dp->buffer_new = malloc(sizeof(int) * (size_t)(m->ntensors + 1));
  dp->buffer = malloc(sizeof(int) * (size_t)(m->ntensors + 1));
  for (int i = 0; dp->buffer && dp->buffer_new && i < m->ntensors; i++) {
    const nnc_rt_tensor *t = &m->tensors[i];
    if (t->role != NNC_RT_GRAD || strncmp(t->name, BUFNEW, sizeof BUFNEW - 1)) continue;
    for (int j = 0; j < m->ntensors; j++)
      if (!strcmp(m->tensors[j].name, t->name + sizeof BUFNEW - 1)) {
        dp->buffer_new[dp->nbuffers] = i;
        dp->buffer[dp->nbuffers++] = j;
      }
  }
  if (!dp->local || !dp->gathered || !dp->sums || !dp->all_sums || !dp->buffer || !dp->buffer_new) {
    nnc_rt_dp_free(dp);
    return nnc_rt_fail(err, "out of memory for the gradients of %lld micro-batches",
                       (long long)(dp->per + n));
  }
  return 0;
}

void nnc_rt_dp_free(nnc_rt_dp *dp) {
  free(dp->local);
  free(dp->gathered);
  free(dp->sums);
  free(dp->all_sums);
  free(dp->buffer_new);
  free(dp->buffer);
  free(dp->hook_scratch);
  dp->hook_scratch = NULL;
  dp->local = dp->gathered = NULL;
  dp->sums = dp->all_sums = NULL;
  dp->buffer_new = dp->buffer = NULL;
}

/* Moves the samples of rows [first, first + rows) to the first rows. */
static void front_rows(const nnc_rt_dp *dp, char *arena, int64_t first, int64_t rows) {
  const nnc_rt_model *m = dp->m;
  if (first == 0) return;
  float *x = (float *)(arena + m->x_off);
  memmove(x, x + first * m->sample_size, (size_t)(rows * m->sample_size) * sizeof(float));
  if (m->label_is_class) {
    int32_t *y = (int32_t *)(arena + m->y_off);
    memmove(y, y + first, (size_t)rows * sizeof(int32_t));
  } else {
    float *y = (float *)(arena + m->y_off);
    memmove(y, y + first * m->target_size, (size_t)(rows * m->target_size) * sizeof(float));
  }
}

/* The step of synchronised statistics: this rank's rows of the global
 * batch to the front, its rank step (whose allreduces sum the batch
 * statistics over the ranks through the hook, in the tree order), its
 * micro-batches' loss sums. Run whether or not this rank failed: every
 * rank must take part in the step's collectives. */
static void sync_rank_step(nnc_rt_dp *dp, char *arena, nnc_rt_pool *pool,
                           const nnc_rt_step_scalars *sc) {
  const nnc_rt_model *m = dp->m;
  front_rows(dp, arena, dp->first * dp->b, dp->rows);
  nnc_rt_step_scalars s = *sc; /* the masks of the rank's first micro-batch and on */
  s.seed = (uint32_t)sc->seed + (uint32_t)dp->first * NNC_HASH_MICRO_SEED;
  nnc_rt_set_scalars(m, arena, &s);
  nnc_rt_allreduce_hook hook = {dp->comm->size > 1 ? hook_allreduce : NULL, dp};
  memcpy(arena + m->comm_off, &hook, sizeof hook);
  dp->step(arena, pool);
  for (int64_t j = 0; j < dp->per; j++) {
    double l = 0, k = 0;
    nnc_rt_batch_sums(m, arena, j * dp->b, dp->b, &l, &k);
    dp->sums[1 + 2 * j] = l;
    dp->sums[2 + 2 * j] = k;
  }
  move_grads(m, arena, dp->local, FROM_ARENA); /* the rank's subtree, summed in the step */
}

int nnc_rt_dp_step(nnc_rt_dp *dp, char *arena, nnc_rt_pool *pool, const nnc_rt_step_scalars *sc,
                   int failed, double *loss, double *correct, nnc_rt_error *err) {
  const nnc_rt_model *m = dp->m;
  const nnc_rt_comm *c = dp->comm;
  dp->sums[0] = failed;
  if (dp->sync) {
    sync_rank_step(dp, arena, pool, sc);
    if (dp->hook_failed && !failed) {
      *err = dp->hook_err;
      dp->sums[0] = failed = 1;
    }
  }
  for (int64_t j = 0; j < dp->per && !failed && !dp->sync; j++) {
    int64_t g = dp->first + j;
    front_rows(dp, arena, g * dp->b, dp->b);
    nnc_rt_step_scalars s = *sc;
    s.seed = (uint32_t)sc->seed + (uint32_t)g * NNC_HASH_MICRO_SEED;
    nnc_rt_set_scalars(m, arena, &s);
    m->grad_step(arena, pool);
    double l = 0, k = 0;
    nnc_rt_batch_sums(m, arena, 0, dp->b, &l, &k);
    dp->sums[1 + 2 * j] = l;
    dp->sums[2 + 2 * j] = k;
    /* The tree's first level as the gradients come: slot j/2 = g_j + g_j+1. */
    move_grads(m, arena, dp->local + j / 2 * dp->P, j % 2 ? ADD_FROM_ARENA : FROM_ARENA);
  }
  /* The status and the micro-batches' sums: the agreement point. */
  if (c->allgather(c->ctx, dp->sums, dp->all_sums, (size_t)dp->nsums * sizeof(double), err))
    return -1;
  int any_failed = 0;
  for (int r = 0; r < c->size; r++)
    any_failed |= dp->all_sums[r * dp->nsums] != 0;
  if (any_failed) return nnc_rt_comm_agree(c, failed, err) ? -1 : nnc_rt_fail(err, "a rank failed");
  double l = 0, k = 0; /* in the order of the micro-batches, whoever computed them */
  for (int r = 0; r < c->size; r++)
    for (int64_t j = 0; j < dp->per; j++) {
      l += dp->all_sums[r * dp->nsums + 1 + 2 * j];
      k += dp->all_sums[r * dp->nsums + 2 + 2 * j];
    }
  *loss = l, *correct = k;
  if (!dp->sync) nnc_rt_tree_sum(dp->local, (dp->per + 1) / 2, dp->P);
  if (nnc_rt_comm_allreduce_tree(c, dp->local, dp->P, dp->gathered, err)) return -1;
  move_grads(m, arena, dp->local, TO_ARENA);
  float inv = 1.0f / (float)dp->G; /* a power of two: exact */
  for (int i = 0; i < dp->nbuffers; i++) {
    const nnc_rt_tensor *src = &m->tensors[dp->buffer_new[i]], *dst = &m->tensors[dp->buffer[i]];
    const float *s = (const float *)(arena + src->offset);
    float *d = (float *)(arena + dst->offset);
    for (int64_t j = 0, n = nnc_rt_numel(dst->rank, dst->shape); j < n; j++)
      d[j] = s[j] * inv;
  }
  nnc_rt_set_scalars(m, arena, sc);
  m->update_step(arena, pool);
  return 0;
}

int nnc_rt_evaluate_split(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool,
                          const nnc_rt_dataset *ds, const nnc_rt_comm *c, double *loss, double *acc,
                          nnc_rt_error *err) {
  if (!c || c->size == 1) return nnc_rt_evaluate(m, arena, pool, ds, loss, acc, err);
  *loss = *acc = NAN;
  if (ds->n <= 0) return 0;
  int64_t nb = (ds->n + m->batch - 1) / m->batch, per = (nb + c->size - 1) / c->size;
  double *mine = calloc((size_t)(2 * per), sizeof(double));
  double *all = calloc((size_t)(2 * per * c->size), sizeof(double));
  if (!mine || !all) {
    free(mine), free(all);
    return nnc_rt_fail(err, "out of memory for the evaluation of %lld batches", (long long)nb);
  }
  for (int64_t j = 0; j < per && c->rank * per + j < nb; j++) {
    int64_t batch = c->rank * per + j;
    nnc_rt_eval_batch(m, arena, pool, ds, batch * m->batch, &mine[2 * j], &mine[2 * j + 1]);
  }
  int rc = c->allgather(c->ctx, mine, all, (size_t)(2 * per) * sizeof(double), err);
  if (rc == 0) { /* in batch order, as one process adds them */
    double l = 0, k = 0;
    for (int64_t i = 0; i < nb; i++)
      l += all[2 * i], k += all[2 * i + 1];
    *loss = l / (double)ds->n;
    if (m->correct_vec_off >= 0) *acc = k / (double)ds->n;
  }
  free(mine);
  free(all);
  return rc;
}
