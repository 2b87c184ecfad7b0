/* gather.c: the training loop's batch gather on real data, the way
 * runtime/train.c's gather_task does it: BATCH random rows of
 * Fashion-MNIST's training images (bytes), each converted to f32 and
 * standardised with the training set's statistics into a batch buffer.
 * One thread. Ways, alternated round by round in this process:
 *   table   byte_value[b] looked up per feature, next row prefetched
 *           (the sample reader before the eleventh stop)
 *   vector  16 features at a time from (float)b * byte_step (AVX-512),
 *           rows prefetched 4 ahead (gather_task since then)
 * Both give the same floats (checked here, and by tests/runtime's
 * test_bytes_vector_path). Prints the median µs per batch of each way.
 *
 *   build-rel/bench/gather [IMAGES_GZ] [LABELS_GZ]
 *
 * Prints GATHER way=W batch=64 median_us=U
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt_internal.h"

enum { BATCH = 64, ROUNDS = 21, BATCHES = 200 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Microseconds per batch of BATCHES batches; rows prefetched `ahead`. */
static double run(const nnc_rt_dataset *ds, const int64_t *rows, float *out, int ahead) {
  int64_t d = ds->sample_size;
  double t0 = now();
  for (int k = 0; k < BATCHES; k++) {
    const int64_t *r = rows + (int64_t)k * BATCH;
    for (int i = 0; i < ahead - 1 && i < BATCH; i++)
      nnc_rt_dataset_prefetch(ds, r[i]);
    for (int i = 0; i < BATCH; i++) {
      if (i + ahead - 1 < BATCH) nnc_rt_dataset_prefetch(ds, r[i + ahead - 1]);
      nnc_rt_dataset_sample(ds, r[i], out + i * d);
    }
  }
  return (now() - t0) * 1e6 / BATCHES;
}

int main(int argc, char **argv) {
  const char *images =
      argc > 1 ? argv[1] : "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
  const char *labels =
      argc > 2 ? argv[2] : "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz";
  nnc_rt_error err = {{0}};
  nnc_rt_dataset ds;
  nnc_rt_norm_stats st;
  if (nnc_rt_load_idx(&ds, images, labels, 1.0f / 255, &err) ||
      nnc_rt_norm_fit(&st, &ds, NULL, &err) || nnc_rt_norm_apply(&st, &ds, NULL, &err)) {
    fprintf(stderr, "gather: %s\n", err.msg);
    return 1;
  }
  int64_t d = ds.sample_size, nrows = (int64_t)BATCHES * BATCH;
  int64_t *rows = malloc((size_t)nrows * sizeof *rows);
  float *a = malloc((size_t)(BATCH * d) * sizeof *a), *b = malloc((size_t)(BATCH * d) * sizeof *b);
  if (!rows || !a || !b) return 1;
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, 1);
  double t[2][ROUNDS];
  nnc_rt_dataset table = ds;
  table.byte_step = 0;
  for (int k = 0; k < ROUNDS; k++) {
    for (int64_t i = 0; i < nrows; i++)
      rows[i] = (int64_t)(nnc_rt_rng_uniform(&rng) * (double)ds.n) % ds.n;
    t[0][k] = run(&table, rows, a, 2);
    t[1][k] = run(&ds, rows, b, 4);
    if (memcmp(a, b, (size_t)(BATCH * d) * sizeof *a)) {
      fprintf(stderr, "gather: the two ways gave different floats\n");
      return 1;
    }
  }
  const char *way[2] = {"table", "vector"};
  for (int w = 0; w < 2; w++) {
    qsort(t[w], ROUNDS, sizeof t[w][0], cmp);
    printf("GATHER way=%s batch=%d median_us=%.2f\n", way[w], BATCH, t[w][ROUNDS / 2]);
  }
  if (!ds.byte_step) printf("gather: no AVX-512 or no single byte step: both ways are the table\n");
  nnc_rt_norm_free(&st);
  nnc_rt_dataset_free(&ds);
  free(rows), free(a), free(b);
  return 0;
}
