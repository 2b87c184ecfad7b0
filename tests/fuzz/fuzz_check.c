/* fuzz_check.c: libFuzzer target for the front end as `nnc check` runs it:
 * lex, parse, names and shapes, lowering to the graph IR, and rendering
 * the diagnostics. Any input must end in a result or diagnostics: no crash,
 * no leak, no sanitizer report, no internal-error abort. */
#include "fuzz_frontend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *sink;
  if (!sink) sink = fopen("/dev/null", "w");
  nnc_arena arena;
  nnc_frontend_result r;
  fz_compile(&arena, data, size, sink, &r);
  nnc_arena_destroy(&arena);
  return 0;
}
