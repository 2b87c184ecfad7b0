/* nnc.c: the driver. Parses the command line, reads files, runs the layers
 * in order and prints what they report; the only place that prints
 * diagnostics or decides the exit status.
 *
 *   nnc check FILE...        diagnostics only; exit 0 and print nothing if clean
 *   nnc --emit=ir FILE       print the graph IR (tensors, train and eval graphs)
 *   nnc --help | --version
 *
 * Exit status: 0 success, 1 errors in an input file (or an unreadable one),
 * 2 usage errors.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontend.h"
#include "ir.h"

#define NNC_VERSION "0.1.0"

enum { MAX_SOURCE_BYTES = 64 << 20 };

static const char usage[] = "usage: nnc check FILE...        check .nn files, print diagnostics\n"
                            "       nnc --emit=ir FILE       print the graph IR of a .nn file\n"
                            "       nnc --help | --version\n";

/* Reads a whole file (any bytes) into a malloc'd buffer. */
static char *read_file(const char *path, size_t *len, const char **why) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    *why = strerror(errno);
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (!buf) break;
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    if (cap >= MAX_SOURCE_BYTES) {
      *why = "file too large (the limit is 64 MiB)";
      free(buf);
      fclose(f);
      return NULL;
    }
    char *bigger = realloc(buf, cap * 2);
    if (!bigger) free(buf);
    buf = bigger;
    cap *= 2;
  }
  if (!buf || ferror(f)) {
    *why = buf ? strerror(errno) : "out of memory";
    free(buf);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *len = n;
  return buf;
}

/* Front end over one file; prints diagnostics; the module or NULL in *out. */
static bool compile_file(nnc_arena *arena, const char *path, nnc_frontend_result *out) {
  size_t len;
  const char *why = NULL;
  char *text = read_file(path, &len, &why);
  if (!text) {
    fprintf(stderr, "nnc: error: cannot read '%s': %s\n", path, why);
    return false;
  }
  nnc_diags diags;
  nnc_diags_init(&diags, arena);
  uint32_t file = nnc_diags_add_source(&diags, path, text, len);
  free(text);
  bool ok = nnc_frontend_compile(arena, &diags, file, out);
  nnc_diags_render(&diags, stderr, isatty(fileno(stderr)));
  return ok;
}

static int cmd_check(int argc, char **argv) {
  if (argc < 1) {
    fputs("nnc: error: 'check' needs at least one file\n", stderr);
    fputs(usage, stderr);
    return 2;
  }
  int status = 0;
  for (int i = 0; i < argc; i++) {
    nnc_arena arena;
    nnc_arena_init(&arena);
    nnc_frontend_result r;
    if (!compile_file(&arena, argv[i], &r)) status = 1;
    nnc_arena_destroy(&arena);
  }
  return status;
}

static int cmd_emit_ir(const char *path) {
  nnc_arena arena;
  nnc_arena_init(&arena);
  nnc_frontend_result r;
  int status = 1;
  if (compile_file(&arena, path, &r)) {
    if (r.module) {
      nnc_ir_print_module(stdout, r.module);
      status = 0;
    } else {
      fprintf(stderr, "%s: error: no 'train' block: nothing to emit\n", path);
    }
  }
  nnc_arena_destroy(&arena);
  return status;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fputs(usage, stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    fputs(usage, stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0) {
    puts("nnc " NNC_VERSION);
    return 0;
  }
  if (strcmp(cmd, "check") == 0) return cmd_check(argc - 2, argv + 2);
  if (strcmp(cmd, "--emit=ir") == 0) {
    if (argc != 3) {
      fputs("nnc: error: --emit=ir needs exactly one file\n", stderr);
      return 2;
    }
    return cmd_emit_ir(argv[2]);
  }
  if (strncmp(cmd, "--emit=", 7) == 0) {
    fprintf(stderr, "nnc: error: unknown output kind '%s' (only --emit=ir for now)\n", cmd + 7);
    return 2;
  }
  fprintf(stderr, "nnc: error: unknown command or option '%s'\n", cmd);
  fputs(usage, stderr);
  return 2;
}
