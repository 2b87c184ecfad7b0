/* nnc.c: the driver. Parses the command line, reads files, runs the layers
 * in order and prints what they report; the only place that prints
 * diagnostics or decides the exit status.
 *
 *   nnc check FILE...              diagnostics only; exit 0 and print nothing if clean
 *   nnc run FILE [flags]           compile in memory (ORC LLJIT) and train now
 *   nnc show CKPT [GLOB...]        list the tensors of a safetensors file
 *   nnc eval|predict FILE --weights CKPT   a trained model on data (tools/eval.c)
 *   nnc summary FILE               layers, shapes, parameters, memory (tools/summary.c)
 *   nnc FILE -o PROGRAM            a standalone training executable (no LLVM in it)
 *   nnc --emit=KIND FILE [-o OUT]  ir | llvm | asm | train-obj
 *   nnc FILE --emit=c|obj -o OUT/NAME [--weights CKPT] [--name PREFIX]
 *                                  the trained network for deployment
 *   nnc --help | --version
 *
 * The pipeline: frontend (parse, check, lower) -> tools/pipeline.c (graph
 * passes) -> codegen (kernels, LLVM) -> runtime/session.c (nnc_rt_main:
 * data, training loop, results), which standalone programs share.
 *
 * Exit status: 0 success, 1 errors in an input file (or an unreadable one),
 * 2 usage errors.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codegen.h"
#include "deploy_cmd.h"
#include "driver.h"
#include "frontend.h"
#include "ir.h"
#include "nnc_rt.h"
#include "pipeline.h"
#include "gradcheck.h"
#include "spec.h"

enum { MAX_SOURCE_BYTES = 64 << 20 };

static const char usage[] =
    "usage: nnc check FILE...               check .nn files, print diagnostics\n"
    "       nnc run FILE [flags]            compile in memory and train now\n"
    "       nnc show CKPT [GLOB...]         list a checkpoint's tensors (values or statistics)\n"
    "       nnc eval FILE --weights CKPT [--data PATH]      loss, accuracy, confusion matrix\n"
    "       nnc predict FILE --weights CKPT [--data PATH] -o OUT.csv|OUT.npy\n"
    "       nnc summary FILE                layers, shapes, parameter counts, memory plan\n"
    "       nnc gradcheck FILE [--batch N] [--tensors GLOB]\n"
    "                                       compiled gradients against float64 and finite\n"
    "                                       differences on one batch; exit 1 if one is off\n"
    "       nnc FILE -o PROGRAM [--batch N] write a standalone training executable\n"
    "       nnc --emit=KIND FILE [-o OUT]   KIND: ir, llvm, asm (to stdout or OUT), train-obj\n"
    "                                       (the training kernels as an object; needs -o)\n"
    "       nnc FILE --emit=c -o OUT/NAME   the trained network as C99: OUT/NAME.c, OUT/NAME.h\n"
    "       nnc FILE --emit=obj -o OUT/NAME.o  the same compiled: OUT/NAME.o, OUT/NAME.h\n"
    "       nnc FILE --emit=onnx -o OUT.onnx   the trained network as an ONNX model (opset 13)\n"
    "       nnc --help | --version\n"
    "\n"
    "  --cpu LEVEL  with -o or --emit: code for any CPU of that level instead of this\n"
    "               machine's: x86-64, x86-64-v2, x86-64-v3 (AVX2, FMA), x86-64-v4\n"
    "               (AVX-512), x86-64-v4-bf16 (AVX-512 with AVX512-BF16: Zen 4,\n"
    "               Sapphire Rapids), sapphirerapids, znver4, or native (the default)\n"
    "  with --emit=c, --emit=obj or --emit=onnx (docs/deploy.md):\n"
    "  --weights CKPT    trained values (default: the file's checkpoint(path))\n"
    "  --name PREFIX     PREFIX_predict, PREFIX_BATCH... (default: the model's name)\n"
    "  --batch N         samples per predict call (default 1)\n"
    "  --emit-test       also OUT/NAME_test.c: checks the code against nnc's evaluation\n"
    "  --extern-weights  (C) weights in OUT/NAME.weights, PREFIX_predict_with(weights, ...)\n"
    "  --fold-bn         (ONNX) batch norm folded into the conv before it\n"
    "  --quantize int8   int8 products (TFLite's scheme), calibrated on training data;\n"
    "                    prints the test accuracy of int8 and float\n"
    "  --calibrate N     training samples for the calibration (default 1000)\n"
    "  --keep-float GLOB layers left in float (e.g. 'cnn.dense2', '*.conv1')\n"
    "\n"
    "flags of 'nnc run' (and of executables written with -o):\n"
    "  --epochs N  --batch N  --seed N  --threads N  --data PATH  --test-data PATH\n"
    "  --resume CKPT  --checkpoint FILE  --log FILE  --log-every N  --quiet  --report\n"
    "  --no-checkpoint  --no-log   write no checkpoint / metrics log, whatever the file says\n"
    "  --lr X  --set SETTING       change a train-block setting: --set epochs=3,\n"
    "                              --set 'optimizer = sgd(lr = 0.1)' (also with -o and --emit)\n"
    "  --precision f32|bf16        matrix products in f32 or with bf16 operands (AVX512-BF16)\n"
    "  (--batch, --lr, --set and --precision recompile: they are compiled into the kernels)\n"
    "  --compile-only              (nnc run) compile the whole program to machine code, print\n"
    "                              \"compiled FILE in T ms\" and stop: no data loaded, exit 0\n"
    "                              (with NNC_DEBUG=1: the compile's parts and times)\n"
    "\n"
    "environment: NNC_DEBUG=1 verifies the IR after every pass and prints pass times;\n"
    "             NNC_DUMP_AFTER=PASS|all prints the IR after a pass;\n"
    "             NNC_DUMP_KERNELS=1 (nnc run) prints the kernels and the memory plan\n";

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
static bool compile_file_with(nnc_arena *arena, const char *path, const nnc_frontend_options *o,
                              nnc_frontend_result *out) {
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
  bool ok = nnc_frontend_compile_with(arena, &diags, file, o, out);
  nnc_diags_render(&diags, stderr, isatty(fileno(stderr)));
  return ok;
}

bool frontend_module(nnc_arena *arena, const char *path, const nnc_frontend_options *o,
                     nnc_module **out) {
  nnc_frontend_result r;
  if (!compile_file_with(arena, path, o, &r)) return false;
  *out = r.module;
  return true;
}

static bool compile_file(nnc_arena *arena, const char *path, nnc_frontend_result *out) {
  return compile_file_with(arena, path, NULL, out);
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

/* nnc show CKPT [GLOB...]: the tensors of a safetensors file. */
static int cmd_show(int argc, char **argv) {
  if (argc < 1) {
    fputs("nnc: error: 'show' needs a .safetensors file\n", stderr);
    fputs(usage, stderr);
    return 2;
  }
  nnc_rt_error err;
  if (nnc_rt_checkpoint_show(stdout, argv[0], (const char *const *)argv + 1, argc - 1, &err)) {
    fprintf(stderr, "nnc: error: %s\n", err.msg);
    return 1;
  }
  return 0;
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

/* ---- Compiling to kernels ------------------------------------------------ */

void compiled_free(compiled *c) {
  if (c->prog) nnc_cg_free(c->prog);
  nnc_arena_destroy(&c->arena);
}

/* Front end and graph passes: a module ready for codegen, or false after
 * printing why. */
bool build_module(compiled *c, const char *path, int64_t batch) {
  nnc_frontend_options fo = {.batch = batch};
  return build_module_with(c, path, &fo);
}

bool build_module_with(compiled *c, const char *path, const nnc_frontend_options *fo) {
  return build_frontend(c, path, fo) && build_passes(c);
}

bool build_frontend(compiled *c, const char *path, const nnc_frontend_options *fo) {
  nnc_arena_init(&c->arena);
  c->path = path;
  c->prog = NULL;
  nnc_frontend_result r;
  if (!compile_file_with(&c->arena, path, fo, &r)) return false;
  if (!r.module) {
    fprintf(stderr, "%s: error: no 'train' block: nothing to compile\n", path);
    return false;
  }
  c->m = r.module;
  return true;
}

bool build_passes(compiled *c) {
  const char *path = c->path;
  nnc_pipeline_opts po;
  nnc_pipeline_default_opts(&po, stderr);
  po.batch_chunks = c->m->train ? micro_batches_for(c->m->config.batch) : 0;
  char err[1024];
  if (!nnc_pipeline_run(c->m, &po, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", path, err);
    return false;
  }
  return true;
}

/* The folder of path as an absolute path (for the spec's base_dir). */
static char *folder_of(nnc_arena *a, const char *path) {
  char *copy = nnc_arena_strdup(a, path);
  char *slash = strrchr(copy, '/');
  const char *dir = ".";
  if (slash == copy)
    dir = "/";
  else if (slash) {
    *slash = 0;
    dir = copy;
  }
  char *abs = realpath(dir, NULL);
  if (!abs) return nnc_arena_strdup(a, dir);
  char *out = nnc_arena_strdup(a, abs);
  free(abs);
  return out;
}

char *spec_of(compiled *c) {
  return nnc_spec_write(c->m, c->path, folder_of(&c->arena, c->path), nnc_module_hash(c->m));
}

/* The two services `nnc gradcheck` (gradcheck.c) takes from the driver. */
bool nnc_driver_frontend(nnc_arena *arena, const char *path, int64_t batch,
                         nnc_frontend_result *out) {
  nnc_frontend_options fo = {.batch = batch};
  return compile_file_with(arena, path, &fo, out);
}
char *nnc_driver_spec(nnc_arena *arena, const nnc_module *m, const char *path) {
  return nnc_spec_write(m, path, folder_of(arena, path), nnc_module_hash(m));
}

/* Finds "--batch N" / "--batch=N" among argv; 0 when absent, -1 when bad. */
int64_t batch_flag(int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    const char *v = NULL;
    if (!strcmp(argv[i], "--batch") && i + 1 < argc)
      v = argv[i + 1];
    else if (!strncmp(argv[i], "--batch=", 8))
      v = argv[i] + 8;
    if (!v) continue;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < 1 || n > (1 << 20)) return -1;
    return n;
  }
  return 0;
}

/* Takes --lr X and --set SETTING (also --lr=X, --set=SETTING) out of
 * argv[1..] into cf, and --batch's value (left in argv: the session checks
 * it); prints and returns 2 on a bad value. */
int take_compile_flags(int *argc, char **argv, compile_flags *cf) {
  memset(cf, 0, sizeof *cf);
  cf->fo.settings = cf->settings;
  cf->fo.batch = batch_flag(*argc - 1, argv + 1);
  if (cf->fo.batch < 0) {
    fputs("nnc: error: --batch needs a whole number from 1 to 1048576\n", stderr);
    return 2;
  }
  int out = 1;
  for (int i = 1; i < *argc; i++) {
    const char *a = argv[i], *v = NULL;
    bool lr = !strcmp(a, "--lr") || !strncmp(a, "--lr=", 5);
    bool set = !strcmp(a, "--set") || !strncmp(a, "--set=", 6);
    bool prec = !strcmp(a, "--precision") || !strncmp(a, "--precision=", 12);
    if (!lr && !set && !prec) {
      argv[out++] = argv[i];
      continue;
    }
    const char *eq = strchr(a, '=');
    v = eq ? eq + 1 : i + 1 < *argc ? argv[++i] : NULL;
    if (!v || !*v) {
      fprintf(stderr, "nnc: error: %s needs a value\n",
              lr    ? "--lr"
              : set ? "--set"
                    : "--precision");
      return 2;
    }
    if (prec) { /* --precision P is --set 'precision = P' */
      if (strcmp(v, "f32") && strcmp(v, "bf16")) {
        fprintf(stderr, "nnc: error: --precision needs f32 or bf16, got '%s'\n", v);
        return 2;
      }
      set = true;
      v = strcmp(v, "bf16") ? "precision = f32" : "precision = bf16";
    }
    if (set) {
      if (cf->fo.nsettings == MAX_SETTINGS) {
        fprintf(stderr, "nnc: error: at most %d --set\n", MAX_SETTINGS);
        return 2;
      }
      cf->settings[cf->fo.nsettings++] = v;
      continue;
    }
    char *end;
    cf->fo.lr = strtod(v, &end);
    if (*end || !(cf->fo.lr > 0) || cf->fo.lr > 1e6) {
      fprintf(stderr, "nnc: error: --lr needs a positive number, got '%s'\n", v);
      return 2;
    }
  }
  *argc = out;
  argv[out] = NULL;
  return 0;
}

static bool has_flag(int argc, char **argv, const char *flag) {
  for (int i = 0; i < argc; i++)
    if (!strcmp(argv[i], flag)) return true;
  return false;
}

/* Takes every `flag` out of argv[0..*argc); whether there was one. */
static bool take_flag(int *argc, char **argv, const char *flag) {
  int out = 0;
  for (int i = 0; i < *argc; i++)
    if (strcmp(argv[i], flag)) argv[out++] = argv[i];
  bool found = out < *argc;
  *argc = out;
  argv[out] = NULL;
  return found;
}

/* The line `nnc run --report` (and --compile-only, which loads no data)
 * prints once the machine code is ready. */
static void print_compiled(const char *path, double front_s, double code_s, bool data) {
  fprintf(stderr, "nnc: compiled %s in %.1f ms (front end %.1f ms, then code %.1f ms%s)\n", path,
          1e3 * (front_s + code_s), 1e3 * front_s, 1e3 * code_s,
          data ? " beside loading the data" : "");
}

/* The .nn file may follow flags (`nnc run --quiet m.nn`): moves the first
 * argument that names a .nn file to the front, the others keeping their
 * order. */
void file_first(int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    size_t n = strlen(argv[i]);
    if (argv[i][0] == '-' || n < 4 || strcmp(argv[i] + n - 3, ".nn") != 0) continue;
    char *file = argv[i];
    memmove(argv + 1, argv, (size_t)i * sizeof *argv);
    argv[0] = file;
    return;
  }
}

/* The code options of nnc run from the environment: NNC_PROFILE,
 * NNC_DEBUG (1: phase times, 2: also each function's). */
static void run_options(nnc_cg_options *co) {
  nnc_cg_default_options(co);
  co->profile = getenv("NNC_PROFILE") && strcmp(getenv("NNC_PROFILE"), "0");
  if (getenv("NNC_DEBUG")) co->timing = stderr;
  co->function_times = getenv("NNC_DEBUG") && !strcmp(getenv("NNC_DEBUG"), "2");
}

/* nnc run FILE --compile-only: front end, kernels and machine code (the
 * JIT linked, the entry points looked up) as a run would compile them,
 * then the "compiled" line; the session's flags are not read. */
static int compile_only(const char *path, const compile_flags *cf, double t_start) {
  compiled c;
  if (!build_module_with(&c, path, &cf->fo)) {
    compiled_free(&c);
    return 1;
  }
  nnc_cg_options co;
  run_options(&co);
  char err[1024];
  double t_code = nnc_rt_now();
  if (!nnc_cg_compile(c.m, &co, &c.prog, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", c.path, err);
    compiled_free(&c);
    return 1;
  }
  print_compiled(c.path, t_code - t_start, nnc_cg_compile_seconds(c.prog), false);
  compiled_free(&c);
  return 0;
}

/* nnc run FILE [flags]: JIT-compile and hand over to the runtime session,
 * which parses the remaining flags exactly as a standalone trainer does. */
static int cmd_run(int argc, char **argv, double t_start) {
  file_first(argc, argv);
  if (argc < 1 || argv[0][0] == '-') {
    if (argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h"))) {
      fputs(usage, stdout);
      return 0;
    }
    fputs("nnc: error: 'run' needs a .nn file\n", stderr);
    fputs(usage, stderr);
    return 2;
  }
  compile_flags cf;
  if (take_compile_flags(&argc, argv, &cf)) return 2;
  /* --compile-only: the whole compile, on the cores it would have beside
   * the data loading, then stop (bench/compile_time.sh measures with it). */
  if (take_flag(&argc, argv, "--compile-only")) return compile_only(argv[0], &cf, t_start);
  /* Data-parallel (several ranks, or --data-parallel): with the
   * micro-batch steps, which are not compiled otherwise. */
  nnc_rt_comm comm;
  bool have_comm;
  if (comm_open(&comm, &argc, &argv, &have_comm)) return 1;
  bool parallel =
      have_comm || nnc_rt_comm_launched_size() > 1 || has_flag(argc, argv, "--data-parallel");
  compiled c;
  if (!(parallel ? build_module_parallel(&c, argv[0], &cf.fo)
                 : build_module_with(&c, argv[0], &cf.fo))) {
    compiled_free(&c);
    if (have_comm && comm.close) comm.close(comm.ctx);
    return 1;
  }
  nnc_cg_options co;
  run_options(&co);
  char err[1024];
  /* Machine code is generated on a background thread while the session
   * parses its flags and loads the data; the model's ready hook joins it
   * before the first step. */
  double t_code = nnc_rt_now();
  if (!nnc_cg_compile_start(c.m, &co, &c.prog, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", c.path, err);
    compiled_free(&c);
    return 1;
  }
  if (getenv("NNC_DUMP_KERNELS") && strcmp(getenv("NNC_DUMP_KERNELS"), "0"))
    nnc_cg_dump_kernels(c.prog, stderr);
  const char *spec = spec_of(&c);
  /* The session reads argv[1..]: the .nn path stands in argv[0]'s place. */
  int status = nnc_rt_main_comm(nnc_cg_model(c.prog), spec, "nnc run", argc, argv, t_start,
                                have_comm ? &comm : NULL);
  /* A run that failed before its first step (a bad flag, a missing data
   * file) may leave LLVM still generating code that nobody will call:
   * end now, with the message already out, rather than join that thread
   * (the CNN's takes most of a second). One process only: ranks end
   * through the communicator. NNC_DEBUG keeps the wait, so that a bad
   * flag still measures the whole compile (bench/compile_time.sh). */
  if (status != 0 && !have_comm && !getenv("NNC_DEBUG") && nnc_cg_compile_seconds(c.prog) == 0) {
    fflush(NULL);
    _exit(status);
  }
  if ((has_flag(argc, argv, "--report") || getenv("NNC_DEBUG")) && (!have_comm || !comm.rank) &&
      nnc_cg_wait(c.prog, err, sizeof err)) {
    print_compiled(c.path, t_code - t_start, nnc_cg_compile_seconds(c.prog), true);
  }
  nnc_cg_profile_print(c.prog, stderr); /* NNC_PROFILE=1 */
  compiled_free(&c);
  if (have_comm && comm.close) comm.close(comm.ctx);
  return status;
}

/* nnc --emit=llvm|asm|train-obj FILE [-o OUT] [--batch N] */
static int cmd_emit(const char *kind, const char *path, const char *out,
                    const nnc_frontend_options *fo, const nnc_cg_options *co) {
  nnc_cg_output k;
  if (!strcmp(kind, "llvm"))
    k = NNC_CG_LLVM;
  else if (!strcmp(kind, "asm"))
    k = NNC_CG_ASM;
  else if (!strcmp(kind, "train-obj"))
    k = NNC_CG_OBJ;
  else {
    fprintf(stderr, "nnc: error: unknown output kind '%s' (ir, llvm, asm, train-obj, c or obj)\n",
            kind);
    return 2;
  }
  if (k == NNC_CG_OBJ && !out) {
    fputs("nnc: error: --emit=train-obj needs -o FILE\n", stderr);
    return 2;
  }
  compiled c;
  int status = 1;
  if (build_module_with(&c, path, fo)) {
    char err[1024];
    if (nnc_cg_emit(c.m, co, k, out ? out : "-", err, sizeof err))
      status = 0;
    else
      fprintf(stderr, "%s: error: %s\n", path, err);
  }
  compiled_free(&c);
  return status;
}

/* nnc FILE --emit=c|obj|onnx -o OUT/NAME [--weights CKPT] ...: deployment
 * (tools/deploy_cmd.c), batch 1 unless --batch says otherwise. */
static int cmd_deploy(const char *kind, const char *path, const char *out, int64_t batch,
                      const nnc_frontend_options *base, const nnc_cg_options *co,
                      const nnc_deploy_flags *df) {
  if (!out) {
    fprintf(stderr, "nnc: error: --emit=%s needs -o OUT/NAME\n", kind);
    return 2;
  }
  /* The training graph keeps the file's batch (batch norm may need it);
   * only the eval graph, the one deployed, takes --batch. */
  compiled c;
  int status = 1;
  nnc_frontend_options fo = *base;
  fo.batch = 0;
  fo.eval_batch = batch ? batch : 1;
  if (build_module_with(&c, path, &fo))
    status = !strcmp(kind, "onnx") ? nnc_deploy_onnx_main(c.m, path, out, co, df)
                                   : nnc_deploy_main(c.m, path, !strcmp(kind, "obj"), out, co, df);
  compiled_free(&c);
  return status;
}

int main(int argc, char **argv) {
  double t_start = nnc_rt_now();
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
    print_version();
    return 0;
  }
  if (strcmp(cmd, "check") == 0) return cmd_check(argc - 2, argv + 2);
  if (strcmp(cmd, "run") == 0) return cmd_run(argc - 2, argv + 2, t_start);
  if (strcmp(cmd, "show") == 0) return cmd_show(argc - 2, argv + 2);
  if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 2, argv + 2, 0);
  if (strcmp(cmd, "predict") == 0) return cmd_eval(argc - 2, argv + 2, 1);
  if (strcmp(cmd, "summary") == 0) return cmd_summary(argc - 2, argv + 2);
  if (strcmp(cmd, "gradcheck") == 0) return nnc_gradcheck_main(argc - 2, argv + 2);
  /* The remaining forms: [--emit=KIND] FILE [-o OUT] [--batch N] [--lr X]
   * [--set SETTING], any order. */
  compile_flags cf;
  if (take_compile_flags(&argc, argv, &cf)) return 2;
  const char *emit = NULL, *file = NULL, *out = NULL, *cpu = NULL;
  int64_t batch = 0;
  nnc_deploy_flags df = {0};
  bool deploy_flag = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--weights") && i + 1 < argc)
      df.weights = argv[++i], deploy_flag = true;
    else if (!strcmp(a, "--name") && i + 1 < argc)
      df.name = argv[++i], deploy_flag = true;
    else if (!strcmp(a, "--emit-test"))
      df.emit_test = deploy_flag = true;
    else if (!strcmp(a, "--extern-weights"))
      df.extern_weights = deploy_flag = true;
    else if (!strcmp(a, "--fold-bn"))
      df.fold_bn = deploy_flag = true;
    else if (!strcmp(a, "--quantize") && i + 1 < argc) {
      if (strcmp(argv[++i], "int8")) {
        fprintf(stderr, "nnc: error: --quantize '%s': the one scheme is int8\n", argv[i]);
        return 2;
      }
      df.int8 = deploy_flag = true;
    } else if (!strcmp(a, "--calibrate") && i + 1 < argc) {
      char *end;
      df.calibrate = strtol(argv[++i], &end, 10);
      if (*end || df.calibrate < 1) {
        fprintf(stderr, "nnc: error: --calibrate needs a number of samples, at least 1\n");
        return 2;
      }
      deploy_flag = true;
    } else if (!strcmp(a, "--keep-float") && i + 1 < argc)
      df.keep_float = argv[++i], deploy_flag = true;
    else if (!strncmp(a, "--emit=", 7))
      emit = a + 7;
    else if (!strncmp(a, "--cpu=", 6))
      cpu = a + 6;
    else if (!strcmp(a, "--cpu") && i + 1 < argc)
      cpu = argv[++i];
    else if (!strcmp(a, "-o") && i + 1 < argc)
      out = argv[++i];
    else if (!strcmp(a, "--batch") || !strncmp(a, "--batch=", 8)) {
      batch = batch_flag(argc - i, argv + i);
      if (batch < 0) {
        fputs("nnc: error: --batch needs a whole number from 1 to 1048576\n", stderr);
        return 2;
      }
      if (!strcmp(a, "--batch")) i++;
    } else if (a[0] == '-') {
      fprintf(stderr, "nnc: error: unknown command or option '%s'\n", a);
      fputs(usage, stderr);
      return 2;
    } else if (!file)
      file = a;
    else {
      fprintf(stderr, "nnc: error: more than one input file ('%s' and '%s')\n", file, a);
      return 2;
    }
  }
  if (!file) {
    fputs("nnc: error: no input file\n", stderr);
    fputs(usage, stderr);
    return 2;
  }
  nnc_cg_options co; /* for -o and --emit */
  nnc_cg_default_options(&co);
  if (cpu && !nnc_cg_set_cpu_level(&co, cpu)) {
    fprintf(stderr,
            "nnc: error: unknown --cpu '%s' (x86-64, x86-64-v2, x86-64-v3, x86-64-v4, "
            "x86-64-v4-bf16, sapphirerapids, znver4 or native)\n",
            cpu);
    return 2;
  }
  if (emit && !strcmp(emit, "ir")) {
    if (out || batch || cpu) {
      fputs("nnc: error: --emit=ir prints to stdout and takes no -o, --batch or --cpu\n", stderr);
      return 2;
    }
    return cmd_emit_ir(file);
  }
  bool deploy = emit && (!strcmp(emit, "c") || !strcmp(emit, "obj") || !strcmp(emit, "onnx"));
  if (deploy_flag && !deploy) {
    fputs("nnc: error: --weights, --name, --emit-test, --extern-weights and --fold-bn go with "
          "--emit=c, --emit=obj or --emit=onnx\n",
          stderr);
    return 2;
  }
  if (df.fold_bn && strcmp(emit, "onnx")) {
    fputs("nnc: error: --fold-bn goes with --emit=onnx (C and objects fuse batch norm into the "
          "loop after the convolution)\n",
          stderr);
    return 2;
  }
  if ((df.calibrate || df.keep_float) && !df.int8) {
    fputs("nnc: error: --calibrate and --keep-float go with --quantize int8\n", stderr);
    return 2;
  }
  if (df.int8 && strcmp(emit, "c") && strcmp(emit, "obj")) {
    fputs("nnc: error: --quantize int8 goes with --emit=c or --emit=obj\n", stderr);
    return 2;
  }
  if (!df.calibrate) df.calibrate = 1000;
  df.version = NNC_VERSION;
  if (deploy) return cmd_deploy(emit, file, out, batch, &cf.fo, &co, &df);
  cf.fo.batch = batch;
  if (emit) return cmd_emit(emit, file, out, &cf.fo, &co);
  if (out) return cmd_build(file, out, &cf.fo, &co);
  fprintf(stderr, "nnc: error: nothing to do with '%s': use 'nnc check', 'nnc run', -o or --emit\n",
          file);
  return 2;
}
