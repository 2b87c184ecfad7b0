/* frontend.c: parse, then check and lower (see frontend.h). */
#include "frontend.h"

#include "parse.h"
#include "sema.h"

bool nnc_frontend_compile(nnc_arena *arena, nnc_diags *diags, uint32_t file,
                          nnc_frontend_result *out) {
  return nnc_frontend_compile_with(arena, diags, file, NULL, out);
}

bool nnc_frontend_compile_with(nnc_arena *arena, nnc_diags *diags, uint32_t file,
                               const nnc_frontend_options *o, nnc_frontend_result *out) {
  nnc_ast_ctx ctx = {arena, diags, false};
  out->ast = nnc_parse(&ctx, file);
  out->module = NULL;
  if (!nnc_diags_ok(diags)) return false;
  out->module = nnc_sema_run(arena, diags, out->ast, o ? o->batch : 0, o ? o->eval_batch : 0);
  return nnc_diags_ok(diags);
}
