/* deploy_cmd.h: `nnc MODEL.nn --emit=c|obj -o OUT/NAME`, the driver's half of
 * deployment (codegen/deploy.h is the compiler's). See deploy_cmd.c. */
#ifndef NNC_TOOLS_DEPLOY_CMD_H
#define NNC_TOOLS_DEPLOY_CMD_H

#include <stdbool.h>

#include "codegen.h"
#include "ir.h"

typedef struct nnc_deploy_flags {
  const char *weights;    /* --weights CKPT; NULL: the .nn file's checkpoint(path) */
  const char *name;       /* --name PREFIX; NULL: the model's name */
  bool emit_test;         /* --emit-test: also NAME_test.c */
  bool extern_weights;    /* --extern-weights: NAME.weights and PREFIX_predict_with */
  bool fold_bn;           /* --fold-bn (ONNX): batch norm folded into the conv before it */
  const char *version;    /* nnc's version, for the ONNX model's producer_version */
  bool int8;              /* --quantize int8 */
  long calibrate;         /* --calibrate N: training samples (default 1000) */
  const char *keep_float; /* --keep-float GLOB: layers left in float */
} nnc_deploy_flags;

/* Writes OUT/NAME.c (obj: OUT/NAME.o) and OUT/NAME.h for the module m
 * compiled from nn_path, with the flags' extras. Prints its errors
 * ("nnc: error: ..." naming the file); returns the exit status. */
int nnc_deploy_main(const nnc_module *m, const char *nn_path, bool obj, const char *out,
                    const nnc_cg_options *co, const nnc_deploy_flags *f);

/* Writes OUT (an ONNX model, --emit=onnx) for the module m compiled from
 * nn_path; prints its errors, returns the exit status. */
int nnc_deploy_onnx_main(const nnc_module *m, const char *nn_path, const char *out,
                         const nnc_cg_options *co, const nnc_deploy_flags *f);

#endif
