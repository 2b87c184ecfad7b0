/* fuzz_passes.c: libFuzzer target from source text through the graph
 * passes (tools/pipeline.c: training graph, autodiff, optimizer update,
 * simplification) with the IR verifier after every pass. A file the front
 * end accepts must come out of every pass as valid IR: a verifier failure
 * ("internal error") aborts, so the fuzzer reports it. */
#include <stdlib.h>
#include <string.h>

#include "fuzz_frontend.h"
#include "pipeline.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  nnc_arena arena;
  nnc_frontend_result r;
  if (fz_compile(&arena, data, size, NULL, &r) && r.module) {
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
