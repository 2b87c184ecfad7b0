/* parallel.c: what the driver adds for data-parallel training
 * (docs/distributed.md).
 *
 * build_module_parallel compiles a .nn file as build_module_with does, plus
 * the micro-batch training graph: the front end is run a second time at
 * the micro-batch size b = B / G (G = 4 when 4 divides the batch B, else 2
 * when 2 does, else none), and its training graph becomes m->grad of the
 * first module (the tensors are the same, in the same order: checked);
 * the graph passes then build its gradient step and m->update
 * (nnc_build_data_parallel). The model hash ignores both, so checkpoints
 * resume across programs with and without them.
 *
 * With MPI (NNC_HAVE_MPI), `nnc run` joins the other ranks when a launcher
 * started it (comm_open), and `nnc -o` links the MPI trainer main and MPI's
 * libraries (mpi_link_args).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"
#if NNC_HAVE_MPI
#include "comm_mpi.h"
#endif

int64_t micro_batches_for(int64_t batch) {
  return batch >= 4 && batch % 4 == 0 ? 4 : batch >= 2 && batch % 2 == 0 ? 2 : 0;
}

/* The micro-batch module's tensors must be the first module's. */
static bool same_tensors(const nnc_module *a, const nnc_module *b) {
  if (a->ntensors != b->ntensors) return false;
  for (int i = 0; i < a->ntensors; i++)
    if (strcmp(a->tensors[i].name, b->tensors[i].name) ||
        a->tensors[i].role != b->tensors[i].role ||
        !nnc_shape_eq(&a->tensors[i].shape, &b->tensors[i].shape))
      return false;
  return true;
}

bool build_module_parallel(compiled *c, const char *path, const nnc_frontend_options *fo) {
  if (!build_frontend(c, path, fo)) return false;
  nnc_module *m = c->m;
  int64_t g = m->train ? micro_batches_for(m->config.batch) : 0;
  if (g > 0) {
    nnc_frontend_options micro = *fo;
    micro.batch = m->config.batch / g;
    micro.eval_batch = 0;
    nnc_module *mm = NULL;
    if (!frontend_module(&c->arena, path, &micro, &mm)) return false;
    if (!mm || !mm->train || !same_tensors(m, mm)) {
      fprintf(stderr, "%s: error: internal error: the micro-batch module differs\n", path);
      return false;
    }
    m->grad = mm->train;
    m->grad->module = m;
    m->grad->name = "grad";
    m->micro_batches = g;
  }
  return build_passes(c);
}

int comm_open(nnc_rt_comm *comm, int *argc, char ***argv, bool *opened) {
  *opened = false;
#if NNC_HAVE_MPI
  if (nnc_rt_comm_launched_size() > 1) {
    nnc_rt_error err;
    if (nnc_rt_comm_mpi_open(comm, argc, argv, &err)) {
      fprintf(stderr, "nnc: error: %s\n", err.msg);
      return 1;
    }
    *opened = true;
  }
#else
  (void)comm, (void)argc, (void)argv;
#endif
  return 0;
}
