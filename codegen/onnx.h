/* onnx.h: the trained network as an ONNX model (nnc --emit=onnx).
 *
 * Takes a module's eval graph (its prediction only, as deployment does)
 * and the trained values, and writes an ONNX model (opset 13, IR version
 * 7) through protobuf-c: one graph input "input" in the data's own units
 * (the data block's scale and the training set's standardisation are ops
 * of the graph), one output "output" (the model's return value), the
 * persistent tensors the prediction reads as initializers. emit_onnx.c
 * says which ONNX ops each part of the graph becomes.
 *
 * Errors are returned as a message; nothing here prints.
 */
#ifndef NNC_CG_ONNX_H
#define NNC_CG_ONNX_H

#include <stdbool.h>
#include <stdio.h>

#include "deploy.h"
#include "ir.h"

typedef struct nnc_onnx_options {
  bool fold_bn;         /* batch norm after a convolution folded into its weights
                           (else a BatchNormalization op) */
  const char *producer; /* the producer_version: nnc's version ("0.1.0") */
} nnc_onnx_options;

/* Writes m's prediction as an ONNX model to out. v holds the values of
 * every persistent tensor the prediction reads. */
bool nnc_onnx_write(const nnc_module *m, const nnc_deploy_values *v, const nnc_onnx_options *o,
                    FILE *out, char *err, size_t errlen);

#endif
