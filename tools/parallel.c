/* parallel.c: what the driver adds for data-parallel training
 * (docs/distributed.md).
 *
 * build_module_parallel compiles a .nn file as build_module_with does, plus
 * the micro-batch training graph: the front end is run a second time at
 * the micro-batch size b = B / G (G = 4 when 4 divides the batch B, else 2
 * when 2 does, else none), and its training graph becomes m->grad of the
 * first module (the tensors are the same, in the same order: checked).
 * A model with batch norm gets rank graphs instead, compiled with the
 * global batch's statistics constants (stat_ranks): m->grad for G ranks of
 * one micro-batch, m->grad_half for G/2 ranks of two (when G = 4);
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

/* Whether the model has buffers (batch norm's running statistics): its
 * rank graphs then share the batch statistics across ranks. */
static bool has_buffers(const nnc_module *m) {
  for (int i = 0; i < m->ntensors; i++)
    if (m->tensors[i].role == NNC_ROLE_BUFFER) return true;
  return false;
}

/* The training graph of `path` at `batch` samples, a rank's part of stat_ranks
 * (0: a micro-batch that normalises alone), as a graph of m named `name`. */
static nnc_graph *part_graph(compiled *c, const char *path, const nnc_frontend_options *fo,
                             int64_t batch, int64_t stat_ranks, const char *name) {
  nnc_frontend_options part = *fo;
  part.batch = batch;
  part.eval_batch = 0;
  part.stat_ranks = stat_ranks;
  nnc_module *mm = NULL;
  if (!frontend_module(&c->arena, path, &part, &mm)) return NULL;
  if (!mm || !mm->train || !same_tensors(c->m, mm)) {
    fprintf(stderr, "%s: error: internal error: the micro-batch module differs\n", path);
    return NULL;
  }
  mm->train->module = c->m;
  mm->train->name = name;
  return mm->train;
}

bool build_module_parallel(compiled *c, const char *path, const nnc_frontend_options *fo) {
  if (!build_frontend(c, path, fo)) return false;
  nnc_module *m = c->m;
  int64_t g = m->train ? micro_batches_for(m->config.batch) : 0;
  if (g > 0) {
    /* With batch norm: rank graphs of synchronised statistics, G ranks of
     * one micro-batch each (and G/2 of two when G = 4); else the
     * micro-batch graph */
    bool sync = has_buffers(m);
    int64_t b = m->config.batch;
    if (!(m->grad = part_graph(c, path, fo, b / g, sync ? g : 0, "grad"))) return false;
    if (sync && g == 4 && !(m->grad_half = part_graph(c, path, fo, b / 2, 2, "grad_half")))
      return false;
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
