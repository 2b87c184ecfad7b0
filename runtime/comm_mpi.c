/* comm_mpi.c: nnc_rt_comm over MPI (Open MPI 4.1 on Debian; any MPI-3).
 *
 * Three collectives on MPI_COMM_WORLD: all-gather and broadcast of raw
 * bytes, and a barrier. Sums are never left to MPI (comm.c says why).
 * Messages over INT_MAX bytes go in pieces, since MPI counts are int.
 */
#include "comm_mpi.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static int mpi_fail(nnc_rt_error *err, const char *what, int code) {
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "code %d", code);
  return nnc_rt_fail(err, "MPI: %s failed: %s", what, s);
}

static int mpi_allgather(void *ctx, const void *send, void *recv, size_t bytes, nnc_rt_error *err) {
  (void)ctx;
  int size;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (bytes <= INT_MAX) {
    int rc = MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Allgather", rc);
  }
  /* In pieces: rank r's piece k lands at recv + r * bytes + k * piece. */
  size_t piece = (size_t)INT_MAX / 2;
  char *tmp = malloc(piece * (size_t)size);
  if (!tmp) return nnc_rt_fail(err, "out of memory for an all-gather of %zu bytes", bytes);
  for (size_t at = 0; at < bytes; at += piece) {
    size_t len = bytes - at < piece ? bytes - at : piece;
    int rc = MPI_Allgather((const char *)send + at, (int)len, MPI_BYTE, tmp, (int)len, MPI_BYTE,
                           MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) {
      free(tmp);
      return mpi_fail(err, "MPI_Allgather", rc);
    }
    for (int r = 0; r < size; r++)
      memcpy((char *)recv + (size_t)r * bytes + at, tmp + (size_t)r * len, len);
  }
  free(tmp);
  return 0;
}

static int mpi_alltoall(void *ctx, const void *send, void *recv, size_t bytes, nnc_rt_error *err) {
  (void)ctx;
  if (bytes > INT_MAX)
    return nnc_rt_fail(err, "MPI: an all-to-all of %zu bytes per rank is over MPI's int count",
                       bytes);
  int rc = MPI_Alltoall(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
  return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Alltoall", rc);
}

static int mpi_broadcast(void *ctx, void *buf, size_t bytes, int root, nnc_rt_error *err) {
  (void)ctx;
  for (size_t at = 0; at < bytes || at == 0; at += INT_MAX) {
    size_t len = bytes - at < (size_t)INT_MAX ? bytes - at : (size_t)INT_MAX;
    int rc = MPI_Bcast((char *)buf + at, (int)len, MPI_BYTE, root, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Bcast", rc);
    if (len == 0) break;
  }
  return 0;
}

static int mpi_barrier(void *ctx, nnc_rt_error *err) {
  (void)ctx;
  int rc = MPI_Barrier(MPI_COMM_WORLD);
  return rc == MPI_SUCCESS ? 0 : mpi_fail(err, "MPI_Barrier", rc);
}

static void mpi_close(void *ctx) {
  (void)ctx;
  int done = 0;
  MPI_Finalized(&done);
  if (!done) MPI_Finalize();
}

int nnc_rt_comm_mpi_open(nnc_rt_comm *c, int *argc, char ***argv, nnc_rt_error *err) {
  int rc = MPI_Init(argc, argv);
  if (rc != MPI_SUCCESS) return mpi_fail(err, "MPI_Init", rc);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  *c = (nnc_rt_comm){.engine = "mpi",
                     .allgather = mpi_allgather,
                     .broadcast = mpi_broadcast,
                     .barrier = mpi_barrier,
                     .alltoall = mpi_alltoall,
                     .close = mpi_close};
  MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &c->size);
  return 0;
}
