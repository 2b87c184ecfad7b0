/* pipeline.h: the compiler's middle, from a front-end module to a graph
 * ready for codegen. See pipeline.c. */
#ifndef NNC_PIPELINE_H
#define NNC_PIPELINE_H

#include <stdbool.h>
#include <stdio.h>

#include "ir.h"

typedef struct nnc_pipeline_opts {
  bool verify;            /* verify the IR after every pass */
  const char *dump_after; /* pass name, or "all": print the module after it */
  FILE *dump;             /* where dumps and per-pass times go (NULL: nowhere) */
  bool timing;            /* print the time of each pass to dump */
  int64_t batch_chunks;   /* > 1: the micro-batches of a data-parallel step
                             (its G), whether or not m->grad is built: the
                             training step sums over the batch in its order
                             (chunk_batch). 0: none */
} nnc_pipeline_opts;

/* Reads NNC_DEBUG (verify + timing) and NNC_DUMP_AFTER from the environment;
 * verification is always on in debug builds (NNC_DEBUG_CHECKS). */
void nnc_pipeline_default_opts(nnc_pipeline_opts *o, FILE *dump);

/* Runs the graph passes in order; false with a message in err on failure. */
bool nnc_pipeline_run(nnc_module *m, const nnc_pipeline_opts *o, char *err, size_t errlen);

#endif
