/* spec.h: writes the training specification text that the runtime's
 * session (runtime/session.c, nnc_rt_main) reads: the part of a .nn file's
 * configuration that is not compiled into kernels. `nnc run` hands it to
 * nnc_rt_main directly; `-o train` embeds it in the executable. */
#ifndef NNC_SPEC_H
#define NNC_SPEC_H

#include <stdint.h>

#include "ir.h"

/* The spec text for m, in m's arena. source is the .nn path as given;
 * base_dir the folder relative data paths are resolved against. */
char *nnc_spec_write(const nnc_module *m, const char *source, const char *base_dir,
                     const char *model_hash);

/* A stable 64-bit FNV-1a hash of the module's IR text, as 16 hex digits in
 * m's arena: checkpoints record it so a resume into another model fails. */
char *nnc_module_hash(const nnc_module *m);

#endif
