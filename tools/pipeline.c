/* pipeline.c: the compiler's passes in order, readable top to bottom.
 *
 *   front end          m->train = forward + loss, m->eval = forward (eval mode)
 *   build_training     penalties, autodiff, clipping, schedule, optimizer update
 *                      (and, when the driver added m->grad for data-parallel
 *                      training, its gradient step and m->update)
 *   simplify           folding, CSE, DCE on every graph
 *   chunk_batch        with a data-parallel step: the training step's sums
 *                      over the batch in that step's order (same bits); rank
 *                      graphs of synchronised batch norm: an allreduce after
 *                      each batch sum used within the step, their sums
 *                      chunked as their part of the tree
 *
 * After each pass the IR is verified (debug builds, or NNC_DEBUG=1) and
 * optionally printed (NNC_DUMP_AFTER=pass|all) with the pass's time.
 * Codegen (codegen/) takes the module from here.
 */
#define _POSIX_C_SOURCE 200809L
#include "pipeline.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "passes.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void nnc_pipeline_default_opts(nnc_pipeline_opts *o, FILE *dump) {
  memset(o, 0, sizeof *o);
  const char *dbg = getenv("NNC_DEBUG");
  bool debug = dbg && *dbg && strcmp(dbg, "0") != 0;
#ifdef NNC_DEBUG_CHECKS
  o->verify = true;
#else
  o->verify = debug;
#endif
  o->timing = debug;
  o->dump_after = getenv("NNC_DUMP_AFTER");
  o->dump = dump;
}

/* Verifies and optionally dumps after pass `name`, which took `secs`. */
static bool after(nnc_module *m, const nnc_pipeline_opts *o, const char *name, double secs,
                  char *err, size_t errlen) {
  if (o->timing && o->dump) fprintf(o->dump, "nnc: pass %-16s %8.3f ms\n", name, 1e3 * secs);
  if (o->verify) {
    nnc_graph *gs[5] = {m->train, m->eval, m->grad, m->update, m->grad_half};
    for (int i = 0; i < 5; i++) {
      char why[512];
      if (gs[i] && !nnc_ir_verify(gs[i], why, sizeof why)) {
        snprintf(err, errlen, "internal error: IR invalid after %s: %s", name, why);
        return false;
      }
    }
  }
  if (o->dump && o->dump_after && (!strcmp(o->dump_after, "all") || !strcmp(o->dump_after, name))) {
    fprintf(o->dump, "# after %s\n", name);
    nnc_ir_print_module(o->dump, m);
  }
  return true;
}

/* The passes, in order, by the names NNC_DUMP_AFTER takes. */
static const char *const pass_names[] = {"frontend", "build_training", "simplify", "chunk_batch"};

/* A dump request that names no pass is a mistake to report, not to ignore. */
static bool check_dump_after(const nnc_pipeline_opts *o, char *err, size_t errlen) {
  if (!o->dump_after || !strcmp(o->dump_after, "all")) return true;
  for (size_t i = 0; i < sizeof pass_names / sizeof pass_names[0]; i++)
    if (!strcmp(o->dump_after, pass_names[i])) return true;
  snprintf(err, errlen,
           "NNC_DUMP_AFTER=%s names no pass (use all, frontend, build_training, "
           "simplify or chunk_batch)",
           o->dump_after);
  return false;
}

/* Whether the training step g can give the data-parallel step's bits once
 * its batch sums are chunked: its random masks (dropout) draw over the
 * batch, so each micro-batch's part can draw as the data-parallel step
 * does. A step that updates buffers (batch norm) is chunked too: its
 * statistics and their backward sums become the G chunk sums added as the
 * tree, the order of the rank graphs with synchronised statistics
 * (sync_ranks below). The CNN's conv weight gradients become chunked
 * products, cut into K blocks within each chunk (gemm_plan.c), so they
 * run at the unchunked ones' speed (docs/distributed.md, "Synchronised
 * batch norm"). */
static bool exact_step(const nnc_graph *g, int64_t chunks) {
  return nnc_chunk_draws_exact(g, chunks);
}

/* A rank graph g of synchronised statistics (g->stat_ranks = N ranks of a
 * batch of G micro-batches): its batch sums used within the step get an
 * allreduce, then its own G/N chunks are summed as its subtree. The GRAD
 * tensors it marks synced must be those every other rank graph marks. */
static bool sync_ranks(nnc_module *m, nnc_graph *g, bool *synced, bool first, char *err,
                       size_t errlen) {
  nnc_sync_batch_sums(g, m->micro_batches / g->stat_ranks);
  nnc_chunk_batch_sums(g, m->micro_batches / g->stat_ranks);
  for (int t = 0; t < m->ntensors; t++) {
    if (m->tensors[t].role != NNC_ROLE_GRAD) continue;
    if (!first && synced[t] != m->tensors[t].synced) {
      snprintf(err, errlen, "internal error: the rank graphs disagree on %s", m->tensors[t].name);
      return false;
    }
    synced[t] = m->tensors[t].synced;
    m->tensors[t].synced = false; /* for the next graph */
  }
  return true;
}

/* The rank graphs of synchronised statistics, each synchronised. */
static bool sync_rank_graphs(nnc_module *m, char *err, size_t errlen) {
  nnc_graph *gs[2] = {m->grad, m->grad_half};
  bool *synced = calloc((size_t)m->ntensors + 1, sizeof(bool));
  if (!synced) nnc_ir_bug("pipeline: out of memory");
  bool ok = true, first = true;
  for (int i = 0; i < 2 && ok; i++)
    if (gs[i] && gs[i]->stat_ranks > 1) {
      ok = sync_ranks(m, gs[i], synced, first, err, errlen);
      first = false;
    }
  for (int t = 0; t < m->ntensors; t++)
    m->tensors[t].synced = synced[t];
  free(synced);
  return ok;
}

bool nnc_pipeline_run(nnc_module *m, const nnc_pipeline_opts *o, char *err, size_t errlen) {
  if (!check_dump_after(o, err, errlen)) return false;
  double t = now_s();
  if (!after(m, o, pass_names[0], 0, err, errlen)) return false;

  if (m->train) {
    t = now_s();
    if (!nnc_build_training(m, err, errlen)) return false;
    if (m->grad && !nnc_build_data_parallel(m, err, errlen)) return false;
    if (!after(m, o, pass_names[1], now_s() - t, err, errlen)) return false;
  }

  t = now_s();
  if (m->train) nnc_simplify(m->train);
  if (m->eval) nnc_simplify(m->eval);
  if (m->grad) nnc_simplify(m->grad);
  if (m->grad_half) nnc_simplify(m->grad_half);
  if (m->update) nnc_simplify(m->update);
  if (!after(m, o, pass_names[2], now_s() - t, err, errlen)) return false;

  t = now_s();
  int64_t chunks = m->grad ? m->micro_batches : o->batch_chunks;
  if (m->train && chunks > 1 && exact_step(m->train, chunks)) {
    nnc_chunk_batch_sums(m->train, chunks);
    m->micro_batches = chunks; /* the runtime sums losses per micro-batch */
  }
  if (m->grad && !sync_rank_graphs(m, err, errlen)) return false;
  return after(m, o, pass_names[3], now_s() - t, err, errlen);
}
