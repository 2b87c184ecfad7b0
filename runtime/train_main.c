/* train_main.c: main() of a standalone training executable (`nnc model.nn
 * -o train`).
 *
 * The compiled object that nnc writes defines the model (its arena layout,
 * tensor table and entry points) and the training spec text; this file
 * hands both to nnc_rt_main, which does everything `nnc run` does after
 * compiling, so the two train identically and take the same flags. It is
 * built as its own library (nnc_train_main), apart from nnc_runtime, because
 * the nnc driver links the runtime and has a main() of its own. Where MPI
 * is found it is built a second time with NNC_WITH_MPI (nnc_train_main_mpi):
 * started by mpirun, the program then joins the other ranks over MPI and
 * trains data-parallel (docs/distributed.md).
 */
#include "nnc_rt.h"

#include <stdio.h>

#if NNC_WITH_MPI
#include "comm_mpi.h"
#endif

extern const nnc_rt_model nnc_generated_model;
extern const char nnc_generated_spec[];

int main(int argc, char **argv) {
  double t_start = nnc_rt_now(); /* first thing: start of the start-to-first-step time */
  const char *prog = argc > 0 ? argv[0] : "train";
  nnc_rt_comm comm, *c = NULL;
#if NNC_WITH_MPI
  if (nnc_rt_comm_launched_size() > 1) {
    nnc_rt_error err;
    if (nnc_rt_comm_mpi_open(&comm, &argc, &argv, &err)) {
      fprintf(stderr, "%s: error: %s\n", prog, err.msg);
      return 1;
    }
    c = &comm;
  }
#else
  (void)comm;
#endif
  int status =
      nnc_rt_main_comm(&nnc_generated_model, nnc_generated_spec, prog, argc, argv, t_start, c);
  if (c && c->close) c->close(c->ctx);
  return status;
}
