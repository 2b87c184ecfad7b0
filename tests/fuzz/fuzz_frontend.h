/* fuzz_frontend.h: the front-end half shared by fuzz_check and
 * fuzz_passes (header-only): an input as the source of "fuzz.nn" through
 * the front end, as `nnc check` runs it. */
#ifndef NNC_FUZZ_FRONTEND_H
#define NNC_FUZZ_FRONTEND_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "frontend.h"

/* Compiles data in arena (the caller destroys it); the diagnostics are
 * rendered to `render` when it is not NULL. True when the file is clean. */
static inline bool fz_compile(nnc_arena *arena, const uint8_t *data, size_t size, FILE *render,
                              nnc_frontend_result *r) {
  nnc_arena_init(arena);
  nnc_diags diags;
  nnc_diags_init(&diags, arena);
  uint32_t file = nnc_diags_add_source(&diags, "fuzz.nn", (const char *)data, size);
  bool ok = nnc_frontend_compile(arena, &diags, file, r);
  if (render) nnc_diags_render(&diags, render, false);
  return ok;
}

#endif
