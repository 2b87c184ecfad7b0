/* frontend.h: the front end in one call, for the driver and tests.
 *
 *   source text --lexer/parser--> AST --sema--> nnc_module (graph IR + config)
 *
 * The source must be registered in diags first (nnc_diags_add_source).
 * Semantic analysis runs only when the file parsed without errors, so a
 * syntax error is not followed by a cascade of confused ones.
 */
#ifndef NNC_FRONTEND_H
#define NNC_FRONTEND_H

#include "ast.h"
#include "diag.h"
#include "ir.h"

typedef struct nnc_frontend_result {
  nnc_ast *ast;
  nnc_module *module; /* NULL on errors or when the file has no `train` block */
} nnc_frontend_result;

/* Returns true when the file has no errors. */
bool nnc_frontend_compile(nnc_arena *arena, nnc_diags *diags, uint32_t file,
                          nnc_frontend_result *out);

/* Command-line settings that change what is compiled. */
typedef struct nnc_frontend_options {
  int64_t batch;      /* > 0: overrides the train block's batch size */
  int64_t eval_batch; /* > 0: the eval graph's batch instead (deployment) */
  /* >= 1: the training graph is one rank's part of a batch of stat_ranks
   * times `batch` samples whose batch-norm statistics are synchronised
   * (nnc_sync_batch_sums): its 1/count and count/(count-1) are the global
   * batch's (module->stat_ranks). 0: an ordinary graph. */
  int64_t stat_ranks;
  double lr; /* > 0: overrides the optimizer's learning rate (--lr) */
  /* --set SETTING: train-block settings as written in a train block
   * ("epochs = 3", "optimizer = sgd(lr = 0.1)", "early_stop(patience = 2)"),
   * applied after the file's own, replacing them. Each is a source of its
   * own in diags, named "--set", so errors point into it. */
  const char *const *settings;
  int nsettings;
} nnc_frontend_options;

bool nnc_frontend_compile_with(nnc_arena *arena, nnc_diags *diags, uint32_t file,
                               const nnc_frontend_options *o, nnc_frontend_result *out);

#endif
