/* gradcheck.h: `nnc gradcheck FILE [--batch N] [--tensors GLOB]`, and the
 * two services of the driver (nnc.c) it uses. */
#ifndef NNC_GRADCHECK_H
#define NNC_GRADCHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "frontend.h"

/* The command: argv holds what follows "gradcheck". Returns the exit
 * status: 0 every gradient agrees, 1 one does not (or an error), 2 bad
 * command line. */
int nnc_gradcheck_main(int argc, char **argv);

/* From nnc.c: the front end over one file with diagnostics printed
 * (batch > 0 overrides the train block's), and the training spec of a
 * module compiled from path. */
bool nnc_driver_frontend(nnc_arena *arena, const char *path, int64_t batch,
                         nnc_frontend_result *out);
char *nnc_driver_spec(nnc_arena *arena, const nnc_module *m, const char *path);

#endif
