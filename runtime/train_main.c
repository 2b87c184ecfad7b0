/* train_main.c: main() of a standalone training executable (`nnc model.nn
 * -o train`).
 *
 * The compiled object that nnc writes defines the model (its arena layout,
 * tensor table and entry points) and the training spec text; this file
 * hands both to nnc_rt_main, which does everything `nnc run` does after
 * compiling, so the two train identically and take the same flags. It is
 * built as its own library (nnc_train_main), apart from nnc_runtime, because
 * the nnc driver links the runtime and has a main() of its own.
 */
#include "nnc_rt.h"

extern const nnc_rt_model nnc_generated_model;
extern const char nnc_generated_spec[];

int main(int argc, char **argv) {
  double t_start = nnc_rt_now(); /* first thing: start of the start-to-first-step time */
  return nnc_rt_main(&nnc_generated_model, nnc_generated_spec, argc > 0 ? argv[0] : "train", argc,
                     argv, t_start);
}
