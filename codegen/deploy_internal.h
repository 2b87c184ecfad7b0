/* deploy_internal.h: the inference program that the deployment backends
 * (emit_c.c, and emit.c through llvm.c) share; no LLVM.
 *
 * After nnc_deploy_build every base buffer's offset is relative to where
 * it lives: persistent tensors at offsets into the weights block (each
 * 64-byte aligned, table order), the input x, the prediction and the
 * eval temporaries at offsets into the caller's workspace.
 */
#ifndef NNC_CG_DEPLOY_INTERNAL_H
#define NNC_CG_DEPLOY_INTERNAL_H

#include "deploy.h"
#include "kernel.h"

enum { NNC_DEPLOY_ALIGN = 64 };

struct nnc_deploy {
  nnc_arena arena;
  nnc_module mod; /* the module with only the pruned eval graph */
  nnc_graph eval; /* the eval graph with only the prediction as output */
  nnc_kprog p;
  nnc_deploy_options o; /* strings copied into the arena */
  const char *upper;    /* the prefix in capitals, for macros */
  int64_t batch, in_size, out_size;
  nnc_kt in_type, out_type;
  int x_buf, pred_buf; /* base buffers of the input and the prediction */
  int64_t ws_bytes, w_bytes;
  int64_t *w_off;     /* [module ntensors]: offset in the weights block, -1: unread */
  nnc_kqgemm **quant; /* [eval kernels]: int8 product, or NULL; NULL: none (float) */
};

/* Does base buffer b live in the weights block (else the workspace)? */
bool nnc_deploy_in_weights(const nnc_deploy *d, int b);
/* "mlp.dense1.weight" -> "mlp_dense1_weight" into buf (n bytes). */
void nnc_deploy_identifier(char *buf, size_t n, const char *name);
/* A float constant as C source ("1.5f", "-2.0f", "INFINITY"); buf >= 48 bytes. */
const char *nnc_deploy_float(char *buf, size_t n, double v, bool f32);
/* The weights block (d->w_bytes, malloc'd): every tensor the program reads
 * at its offset, little-endian f32, zeros between. NULL: out of memory. */
unsigned char *nnc_deploy_weights_block(const nnc_deploy *d, const nnc_deploy_values *v);
/* n floats as the body of an initializer, 8 a line. */
void nnc_deploy_float_list(FILE *f, const float *x, int64_t n);

#endif
