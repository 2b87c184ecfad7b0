/* fuzz_passes.c: libFuzzer target from source text through the graph
 * passes (tools/pipeline.c: training graph, autodiff, optimizer update,
 * simplification) with the IR verifier after every pass. A file the front
 * end accepts must come out of every pass as valid IR: a verifier failure
 * ("internal error") aborts, so the fuzzer reports it. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend.h"
#include "pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  nnc_arena arena;
  nnc_arena_init(&arena);
  nnc_diags diags;
  nnc_diags_init(&diags, &arena);
  uint32_t file = nnc_diags_add_source(&diags, "fuzz.nn", (const char *)data, size);
  nnc_frontend_result r;
  if (nnc_frontend_compile(&arena, &diags, file, &r) && r.module) {
    nnc_pipeline_opts o = {.verify = true};
    char err[1024];
    if (!nnc_pipeline_run(r.module, &o, err, sizeof err) &&
        strncmp(err, "internal error", 14) == 0) {
      fprintf(stderr, "%s\n", err);
      abort();
    }
  }
  nnc_arena_destroy(&arena);
  return 0;
}
