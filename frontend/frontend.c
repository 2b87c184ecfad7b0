/* frontend.c: parse, then check and lower (see frontend.h). */
#include "frontend.h"

#include <string.h>

#include "parse.h"
#include "sema.h"

enum { MAX_SETTINGS = 32 };

/* Each --set SETTING parsed as the body of a train block: its TRAIN node,
 * or NULL after a syntax error (reported). */
static const nnc_ast *parse_setting(nnc_ast_ctx *ctx, const char *setting) {
  const char *text = nnc_arena_printf(ctx->arena, "train { %s }\n", setting);
  uint32_t file = nnc_diags_add_source(ctx->diags, "--set", text, strlen(text));
  const nnc_ast *ast = nnc_parse(ctx, file);
  if (!ast || ast->list.n != 1 || ast->list.items[0]->kind != NNC_AST_TRAIN) return NULL;
  return ast->list.items[0];
}

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
  nnc_sema_overrides ov = {0};
  const nnc_ast *settings[MAX_SETTINGS];
  if (o) {
    ov.batch = o->batch, ov.eval_batch = o->eval_batch, ov.lr = o->lr, ov.settings = settings;
    ov.stat_ranks = o->stat_ranks;
    for (int i = 0; i < o->nsettings && i < MAX_SETTINGS; i++)
      if ((settings[ov.nsettings] = parse_setting(&ctx, o->settings[i]))) ov.nsettings++;
    if (!nnc_diags_ok(diags)) return false;
  }
  out->module = nnc_sema_run_with(arena, diags, out->ast, &ov);
  return nnc_diags_ok(diags);
}
