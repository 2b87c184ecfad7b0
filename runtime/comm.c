/* comm.c: the runtime's side of data-parallel training that needs no
 * communication library: the one-process engine, the launcher check, error
 * agreement and the fixed-order all-reduce, each written on the engine's
 * three collectives (nnc_rt_comm in nnc_rt.h). The MPI engine is
 * comm_mpi.c, in its own library.
 *
 * Why an all-gather and not MPI_Allreduce: the order in which an MPI
 * implementation adds the ranks' buffers is unspecified (it changes with
 * the algorithm chosen for the message size and the number of ranks), so
 * its sums are not reproducible bit for bit. Gathering every rank's
 * partial sum and adding them in one fixed order on every rank gives the
 * same bits everywhere and for any number of ranks whose micro-batches
 * form aligned subtrees of the same pairwise tree (docs/distributed.md).
 */
#include "rt_internal.h"

#include <stdlib.h>
#include <string.h>

static int single_allgather(void *ctx, const void *send, void *recv, size_t bytes,
                            nnc_rt_error *err) {
  (void)ctx, (void)err;
  if (send != recv) memmove(recv, send, bytes);
  return 0;
}

static int single_broadcast(void *ctx, void *buf, size_t bytes, int root, nnc_rt_error *err) {
  (void)ctx, (void)buf, (void)bytes, (void)root, (void)err;
  return 0;
}

static int single_barrier(void *ctx, nnc_rt_error *err) {
  (void)ctx, (void)err;
  return 0;
}

void nnc_rt_comm_single(nnc_rt_comm *c) {
  *c = (nnc_rt_comm){.rank = 0,
                     .size = 1,
                     .engine = "single",
                     .allgather = single_allgather,
                     .broadcast = single_broadcast,
                     .barrier = single_barrier};
}

int nnc_rt_comm_launched_size(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                     "MPI_LOCALNRANKS", "SLURM_NTASKS"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
    const char *v = getenv(vars[i]);
    if (v && *v) {
      long n = strtol(v, NULL, 10);
      if (n > 1) return n > 1 << 20 ? 1 << 20 : (int)n;
    }
  }
  return 1;
}

/* One rank's verdict as it travels. */
typedef struct verdict {
  int32_t failed;
  char msg[sizeof(((nnc_rt_error *)0)->msg)];
} verdict;

int nnc_rt_comm_agree(const nnc_rt_comm *c, int failed, nnc_rt_error *err) {
  if (c->size == 1) return failed ? -1 : 0;
  verdict mine = {.failed = failed != 0};
  if (failed) snprintf(mine.msg, sizeof mine.msg, "%s", err->msg);
  verdict *all = calloc((size_t)c->size, sizeof *all);
  if (!all) return nnc_rt_fail(err, "out of memory for the ranks' verdicts");
  nnc_rt_error local;
  if (c->allgather(c->ctx, &mine, all, sizeof mine, &local)) {
    free(all);
    *err = local;
    return -1;
  }
  int rc = 0;
  for (int r = 0; r < c->size && !rc; r++)
    if (all[r].failed) {
      all[r].msg[sizeof all[r].msg - 1] = 0;
      rc = r == 0 ? nnc_rt_fail(err, "%s", all[r].msg)
                  : nnc_rt_fail(err, "rank %d: %s", r, all[r].msg);
    }
  free(all);
  return rc;
}

void nnc_rt_tree_sum(float *vec, int64_t count, int64_t n) {
  for (int64_t width = 1; width < count; width *= 2)
    for (int64_t i = 0; i + width < count; i += 2 * width) {
      float *a = vec + i * n;
      const float *b = vec + (i + width) * n;
      for (int64_t j = 0; j < n; j++)
        a[j] += b[j];
    }
}

int64_t nnc_rt_comm_scratch_floats(const nnc_rt_comm *c, int64_t n) {
  int64_t slice = (n + c->size - 1) / c->size;
  return c->alltoall ? 2 * c->size * slice + 1 : c->size * n + 1;
}

/* Reduce-scatter then all-gather: rank r sums slice r of every rank's
 * vector (the same tree per element as a whole-vector sum), then the sums
 * are gathered. The vector is padded with zeros to size equal slices. */
static int allreduce_slices(const nnc_rt_comm *c, float *buf, int64_t n, float *scratch,
                            nnc_rt_error *err) {
  int64_t slice = (n + c->size - 1) / c->size, padded = slice * c->size;
  float *send = scratch, *recv = scratch + padded;
  memcpy(send, buf, (size_t)n * sizeof(float));
  memset(send + n, 0, (size_t)(padded - n) * sizeof(float));
  if (c->alltoall(c->ctx, send, recv, (size_t)slice * sizeof(float), err)) return -1;
  nnc_rt_tree_sum(recv, c->size, slice);
  if (c->allgather(c->ctx, recv, send, (size_t)slice * sizeof(float), err)) return -1;
  memcpy(buf, send, (size_t)n * sizeof(float));
  return 0;
}

int nnc_rt_comm_allreduce_tree(const nnc_rt_comm *c, float *buf, int64_t n, float *scratch,
                               nnc_rt_error *err) {
  if (c->size == 1) return 0;
  if (c->alltoall) return allreduce_slices(c, buf, n, scratch, err);
  if (c->allgather(c->ctx, buf, scratch, (size_t)n * sizeof(float), err)) return -1;
  nnc_rt_tree_sum(scratch, c->size, n);
  memcpy(buf, scratch, (size_t)n * sizeof(float));
  return 0;
}
