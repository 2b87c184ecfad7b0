/* driver.h: what the commands of the nnc driver share (tools/nnc.c): a .nn
 * file compiled through the front end and the graph passes, its training
 * spec, and the command-line conventions of `nnc run`. Each command beyond
 * nnc.c's own lives in its own file: eval.c (eval, predict), summary.c,
 * build.c (-o). */
#ifndef NNC_TOOLS_DRIVER_H
#define NNC_TOOLS_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "codegen.h"
#include "frontend.h"
#include "ir.h"
#include "nnc_rt.h"

#define NNC_VERSION "0.1.0"

enum { MAX_SETTINGS = 32 };

/* What the command line changes in the compiled program. */
typedef struct compile_flags {
  nnc_frontend_options fo; /* fo.settings points into settings */
  const char *settings[MAX_SETTINGS];
} compile_flags;

/* Everything one compiled .nn file needs, freed by compiled_free. */
typedef struct compiled {
  nnc_arena arena;
  nnc_module *m;
  nnc_cg_program *prog; /* NULL unless JIT-compiled */
  const char *path;
} compiled;

/* Front end and graph passes (batch 0: the file's): a module ready for
 * codegen in c->m, or false after printing why. Free c either way. */
bool build_module(compiled *c, const char *path, int64_t batch);
/* The two halves of build_module: the front end's module as it built it,
 * then the graph passes over it. */
bool build_frontend(compiled *c, const char *path, const nnc_frontend_options *fo);
bool build_passes(compiled *c);
bool build_module_with(compiled *c, const char *path, const nnc_frontend_options *fo);
/* Takes --lr and --set out of argv[1..argc-1] into cf (and reads --batch,
 * which stays); prints and returns 2 for a bad value, else 0. */
int take_compile_flags(int *argc, char **argv, compile_flags *cf);
void compiled_free(compiled *c);
/* The training spec of c's module (in c's arena). */
char *spec_of(compiled *c);
/* "--batch N" / "--batch=N" among argv: 0 when absent, -1 when bad. */
int64_t batch_flag(int argc, char **argv);
/* Moves the first argument naming a .nn file to argv[0]. */
void file_first(int argc, char **argv);

/* The front end alone over path: its module (NULL: no train block) in
 * *out, or false after printing the diagnostics. */
bool frontend_module(nnc_arena *arena, const char *path, const nnc_frontend_options *o,
                     nnc_module **out);

/* Data-parallel training (parallel.c, docs/distributed.md). */
int64_t micro_batches_for(int64_t batch); /* 4, 2, or 0: none */
/* build_module_with plus the micro-batch graphs (m->grad, m->update). */
bool build_module_parallel(compiled *c, const char *path, const nnc_frontend_options *fo);
/* With MPI and a launcher: joins the ranks (*opened set); else nothing.
 * 1 after printing an error. */
int comm_open(nnc_rt_comm *comm, int *argc, char ***argv, bool *opened);

/* The commands in their own files; argv after the command's name. */
int cmd_eval(int argc, char **argv, int predict); /* eval.c */
int cmd_summary(int argc, char **argv);           /* summary.c */
/* nnc FILE -o PROGRAM, with co's code options (build.c). */
int cmd_build(const char *path, const char *out, const nnc_frontend_options *fo,
              const nnc_cg_options *co);
void print_version(void); /* the version and the runtime -o links (build.c) */

#endif
