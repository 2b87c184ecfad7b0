/* interp_internal.h: the interpreter's scalar semantics, shared with the
 * constant folder (simplify.c) so that a folded constant has exactly the
 * value the interpreter would compute. Not part of the IR's public API. */
#ifndef NNC_INTERP_INTERNAL_H
#define NNC_INTERP_INTERNAL_H

#include "ir.h"

/* f(a) for an op of class UNARY (b unused), f(a, b) for one of class
 * BINARY or CMP (CMP gives 1.0 or 0.0). */
double nnc_interp_scalar(nnc_op op, double a, double b);
/* The value RAND gives at flat index i (runtime/nnc_hash.h). */
double nnc_interp_rand(double seed, double step, int64_t stream, uint64_t index);

#endif
