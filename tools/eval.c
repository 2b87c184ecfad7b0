/* eval.c: `nnc eval` and `nnc predict` — a trained model on data.
 *
 *   nnc eval FILE.nn --weights CKPT [--data PATH] [--threads N]
 *   nnc predict FILE.nn --weights CKPT [--data PATH] -o OUT.csv|OUT.npy
 *
 * Compiles the model as `nnc run` does (JIT, the file's batch unless
 * --batch), finds where its output lies in the arena, and hands over to the
 * runtime's nnc_rt_eval_main (runtime/evaluate.c), which loads the data and
 * the weights, evaluates, and prints or writes the results.
 */
#include <stdio.h>
#include <string.h>

#include "driver.h"
#include "nnc_rt.h"

int cmd_eval(int argc, char **argv, int predict) {
  const char *name = predict ? "predict" : "eval";
  file_first(argc, argv);
  if (argc < 1 || argv[0][0] == '-') {
    fprintf(stderr, "nnc: error: '%s' needs a .nn file: nnc %s FILE.nn --weights CKPT%s\n", name,
            name, predict ? " -o OUT.csv" : "");
    return 2;
  }
  compile_flags cf; /* --batch, and --lr/--set as for nnc run (taken out of argv) */
  if (take_compile_flags(&argc, argv, &cf)) return 2;
  compiled c;
  int status = 1;
  char err[1024];
  if (!build_module_with(&c, argv[0], &cf.fo)) goto done;
  nnc_cg_options co;
  nnc_cg_default_options(&co);
  if (!nnc_cg_compile(c.m, &co, &c.prog, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", c.path, err);
    goto done;
  }
  char prog[16];
  snprintf(prog, sizeof prog, "nnc %s", name);
  status = nnc_rt_eval_main(nnc_cg_model(c.prog), nnc_cg_output_offset(c.prog, NNC_OUT_PRED),
                            spec_of(&c), prog, predict, argc, argv);
done:
  compiled_free(&c);
  return status;
}
