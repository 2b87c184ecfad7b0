/* fuzz_check.c: libFuzzer target for the front end as `nnc check` runs it:
 * lex, parse, names and shapes, lowering to the graph IR, and rendering
 * the diagnostics. Any input must end in a result or diagnostics: no crash,
 * no leak, no sanitizer report, no internal-error abort. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "frontend.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *sink;
  if (!sink) sink = fopen("/dev/null", "w");
  nnc_arena arena;
  nnc_arena_init(&arena);
  nnc_diags diags;
  nnc_diags_init(&diags, &arena);
  uint32_t file = nnc_diags_add_source(&diags, "fuzz.nn", (const char *)data, size);
  nnc_frontend_result r;
  nnc_frontend_compile(&arena, &diags, file, &r);
  nnc_diags_render(&diags, sink, false);
  nnc_arena_destroy(&arena);
  return 0;
}
