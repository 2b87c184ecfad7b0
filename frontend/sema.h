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
 * --batch), before anything is lowered; eval_batch > 0 is the eval graph's
 * batch instead (deployment: a batch that training could not use). */
nnc_module *nnc_sema_run(nnc_arena *arena, nnc_diags *diags, const nnc_ast *file,
                         int64_t batch_override, int64_t eval_batch);

#endif
