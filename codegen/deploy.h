/* deploy.h: the trained network as code to ship inside someone else's
 * program (nnc --emit=c / --emit=obj).
 *
 * From a module's eval graph with only its prediction kept (no loss, no
 * labels), nnc_deploy_build lowers and plans an inference program of its
 * own: the kernels of the eval graph in order, a workspace holding only
 * the input, the prediction and the eval temporaries (its size is exact),
 * and the persistent tensors the kernels read as read-only weights apart
 * from the workspace. Two backends print it: portable C99 (emit_c.c, no
 * LLVM) and an object file through LLVM (emit.c). Both give
 *
 *   int PREFIX_predict(const float *input, float *output, void *workspace);
 *
 * which applies the data block's scale and the training set's
 * standardisation to the raw input, runs the kernels on the calling thread
 * and copies the prediction out. The caller owns all memory: no malloc, no
 * static mutable state, so threads with workspaces of their own may call it
 * at once. The header (nnc_deploy_write_header) says all this.
 *
 * Errors are returned as a message; nothing here prints.
 */
#ifndef NNC_CG_DEPLOY_H
#define NNC_CG_DEPLOY_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "codegen.h"
#include "ir.h"

/* The values the deployed code is built from. */
typedef struct nnc_deploy_values {
  const float *const *tensor; /* [module->ntensors]: each persistent tensor's values
                                 (f32, row-major); only those the eval graph reads
                                 need to be non-NULL */
  double scale;               /* the data block's scale (1: none) */
  const float *mean, *std;    /* standardisation per input feature; NULL: none */
} nnc_deploy_values;

typedef struct nnc_deploy_options {
  const char *prefix;  /* C identifier prefix: "mlp" -> mlp_predict, MLP_BATCH */
  const char *header;  /* the header's file name, as NAME.c includes it */
  bool extern_weights; /* weights in a file of their own (nnc_deploy_write_weights)
                          and PREFIX_predict_with(weights, ...) instead of predict */
  int vector_width;    /* floats per vector of the target (product tiling); 0: 16 */
  bool calibration;    /* no two temporaries share workspace memory, so every
                          product's input is still there after a call
                          (nnc_deploy_observe); not for shipping */
} nnc_deploy_options;

/* Inputs with the outputs nnc computed for them, for NAME_test.c: ncalls
 * calls of predict, each with batch * input_size inputs. */
typedef struct nnc_deploy_tests {
  int ncalls;
  const float *input;  /* [ncalls * batch * input_size] raw values */
  const float *output; /* [ncalls * batch * output_size] */
  double tolerance;    /* largest |difference| accepted */
} nnc_deploy_tests;

typedef struct nnc_deploy nnc_deploy;

/* Builds the inference program of m (its eval graph). NULL with a message
 * when the model cannot be deployed (no prediction, an input other than
 * x read by the prediction). */
nnc_deploy *nnc_deploy_build(const nnc_module *m, const nnc_deploy_options *o, char *err,
                             size_t errlen);
void nnc_deploy_free(nnc_deploy *d);

int64_t nnc_deploy_batch(const nnc_deploy *d);
int64_t nnc_deploy_input_size(const nnc_deploy *d);  /* elements per sample */
int64_t nnc_deploy_output_size(const nnc_deploy *d); /* elements per sample */
bool nnc_deploy_input_is_i32(const nnc_deploy *d);   /* else f32 */
int64_t nnc_deploy_workspace_size(const nnc_deploy *d);
int64_t nnc_deploy_weights_size(const nnc_deploy *d);
/* Is tensor t of the module read by the inference program? */
bool nnc_deploy_uses_tensor(const nnc_deploy *d, int t);

/* ---- int8 quantisation (deploy_quant.c; kernel.h's nnc_kqgemm) ---- */
/* Can eval kernel i be an int8 product (a product of an activation by a
 * weight tensor)? Not when its layer (or weight tensor) matches keep_float
 * (a glob such as "cnn.dense2" or "*.conv1"; NULL: none). */
bool nnc_deploy_quantizable(const nnc_deploy *d, int i, const char *keep_float);
/* Widens [amin[i], amax[i]] by the input of every product i in `which`,
 * read from the workspace of a calibration program after a call. */
void nnc_deploy_observe(const nnc_deploy *cal, const void *workspace, const bool *which,
                        float *amin, float *amax);
/* Makes products `which` int8 with the calibrated ranges; returns how many. */
int nnc_deploy_quantize(nnc_deploy *d, const nnc_deploy_values *v, const bool *which,
                        const float *amin, const float *amax);
/* Then gives each int8 product whose output only a loop kernel reads, one
 * that applies a per-column affine map and maybe a ReLU (batch norm in
 * eval) and stores the result quantised for the next product, a
 * requantising epilogue that stores those bytes itself (nnc_kqgemm.out_buf);
 * that kernel is no longer run. The map's per-column values come from the
 * weights, or, for temporaries computed from them (the batch norm's
 * rsqrt), from the workspace cal_ws of calibration program cal after a
 * call (both may be NULL). Returns how many. */
int nnc_deploy_requantize(nnc_deploy *d, const nnc_deploy_values *v, const nnc_deploy *cal,
                          const void *cal_ws);
int nnc_deploy_kernels(const nnc_deploy *d); /* eval kernels, for `which` */
/* Bytes of the int8 products' constants (weights, offsets, scales). */
int64_t nnc_deploy_int8_bytes(const nnc_deploy *d);

/* The program compiled in memory through LLVM (as the object would be),
 * for calibration and to measure accuracy: predict as the header's. */
typedef struct nnc_deploy_jit nnc_deploy_jit;
nnc_deploy_jit *nnc_deploy_jit_compile(const nnc_deploy *d, const nnc_deploy_values *v,
                                       const nnc_cg_options *o, char *err, size_t errlen);
int nnc_deploy_jit_predict(const nnc_deploy_jit *j, const float *input, float *output,
                           void *workspace);
void nnc_deploy_jit_free(nnc_deploy_jit *j);

/* The header: size macros, the interface, and a comment saying how to
 * call it (valid C and C++). */
bool nnc_deploy_write_header(const nnc_deploy *d, const nnc_deploy_values *v, FILE *out, char *err,
                             size_t errlen);
/* Portable C99 source of the whole inference (emit_c.c). */
bool nnc_deploy_write_c(const nnc_deploy *d, const nnc_deploy_values *v, FILE *out, char *err,
                        size_t errlen);
/* The weights file of --extern-weights: every tensor the program reads at
 * its offset (64-byte aligned), little-endian f32. */
bool nnc_deploy_write_weights(const nnc_deploy *d, const nnc_deploy_values *v, FILE *out, char *err,
                              size_t errlen);
/* A C program that calls predict on t's inputs and exits 0 when every
 * output is within t->tolerance of t's outputs. */
bool nnc_deploy_write_test(const nnc_deploy *d, const nnc_deploy_tests *t, FILE *out, char *err,
                           size_t errlen);
/* The same interface as an object file through LLVM (emit.c). */
bool nnc_deploy_write_obj(const nnc_deploy *d, const nnc_deploy_values *v, const nnc_cg_options *o,
                          const char *path, char *err, size_t errlen);

#endif
