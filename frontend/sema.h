/* sema.h: semantic analysis of a parsed .nn file.
 *
 * Takes the FILE node from the parser; checks names, types and shapes of
 * every declaration, desugars layers into graph IR primitives, and fills the
 * training configuration. Gives an nnc_module (tensors, `train` and `eval`
 * graphs, config) when the file has a `train` block and no errors; NULL
 * otherwise. Errors go to diags; nothing is printed.
 */
#ifndef NNC_SEMA_H
#define NNC_SEMA_H

#include "ast.h"
#include "ir.h"

/* batch_override > 0 replaces the train block's batch size (a command-line
 * --batch), before anything is lowered. */
nnc_module *nnc_sema_run(nnc_arena *arena, nnc_diags *diags, const nnc_ast *file,
                         int64_t batch_override);

/* What the command line changes (nnc_frontend_options, parsed). */
typedef struct nnc_sema_overrides {
  int64_t batch;                  /* > 0: the batch size */
  int64_t stat_ranks;             /* nnc_frontend_options.stat_ranks */
  int64_t eval_batch;             /* > 0: the eval graph's batch instead (deployment: a batch
                                     that training could not use) */
  double lr;                      /* > 0: the optimizer's learning rate */
  const nnc_ast *const *settings; /* TRAIN nodes whose settings replace the file's */
  int nsettings;
} nnc_sema_overrides;
nnc_module *nnc_sema_run_with(nnc_arena *arena, nnc_diags *diags, const nnc_ast *file,
                              const nnc_sema_overrides *o);

#endif
