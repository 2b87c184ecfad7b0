/* pipeline.c: the compiler's passes in order, readable top to bottom.
 *
 *   front end          m->train = forward + loss, m->eval = forward (eval mode)
 *   build_training     penalties, autodiff, clipping, schedule, optimizer update
 *                      (and, when the driver added m->grad for data-parallel
 *                      training, its gradient step and m->update)
 *   simplify           folding, CSE, DCE on every graph
 *   chunk_batch        with a data-parallel step: the training step's sums
 *                      over the batch in that step's order (same bits)
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
    nnc_graph *gs[4] = {m->train, m->eval, m->grad, m->update};
    for (int i = 0; i < 4; i++) {
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
 * does, and it updates no buffers (batch norm normalises a micro-batch
 * with its own statistics there). Otherwise the step is left as it is,
 * the faster. nnc_chunk_batch_sums can chunk a batch-norm step (the order
 * of ranks with synchronised statistics, nnc_sync_batch_sums), but until
 * the trainer runs such ranks it would only cost: the CNN's chunked conv
 * weight gradients (no K blocks) took 2.6-4x as long, the step 25-35%
 * more (docs/distributed.md, "Synchronised batch norm"). */
static bool exact_step(const nnc_graph *g, int64_t chunks) {
  if (!nnc_chunk_draws_exact(g, chunks)) return false;
  for (int i = 0; i < g->nupdates; i++)
    if (g->module->tensors[g->updates[i].tensor].role == NNC_ROLE_BUFFER) return false;
  return true;
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
  if (m->update) nnc_simplify(m->update);
  if (!after(m, o, pass_names[2], now_s() - t, err, errlen)) return false;

  t = now_s();
  int64_t chunks = m->grad ? m->micro_batches : o->batch_chunks;
  if (m->train && chunks > 1 && exact_step(m->train, chunks)) {
    nnc_chunk_batch_sums(m->train, chunks);
    m->micro_batches = chunks; /* the runtime sums losses per micro-batch */
  }
  return after(m, o, pass_names[3], now_s() - t, err, errlen);
}
