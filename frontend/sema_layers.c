/* sema_layers.c: the built-in layers and functions of model bodies, each
 * desugared into the primitive ops of ir/ops.def.
 *
 * Takes a CALL node of a model body; gives the output value. One table lists
 * every built-in with its signature (the functions without parameters, and
 * the activations, are in sema_functions.c); the first argument is always the input
 * tensor, lowered before the layer's own nodes so that those nodes can be
 * tagged with the call's span and the layer's path ("mlp.dense1").
 *
 * Layouts and defaults follow PyTorch: dense weights are [out, in] and used
 * as x @ W^T; convolution weights are [out, in, kh, kw] over NCHW; weights
 * and biases of dense/conv start uniform in +-1/sqrt(fan_in) (PyTorch's
 * default, kaiming_uniform with a = sqrt(5)); batch norm keeps running
 * statistics with momentum 0.1 and eps 1e-5; embeddings start N(0, 1).
 */
#include <math.h>
#include <string.h>

#include "sema_layers_internal.h"

typedef struct builtin {
  const char *name;
  const char *const *params;
  int n, npositional, nrequired;
  layer_fn fn;
  bool needs_batch; /* input must derive from the model input */
} builtin;

/* Layer kinds with parameters, for default names dense1, conv1, bn1, ... */
enum { KIND_DENSE, KIND_CONV, KIND_BN, KIND_LN, KIND_EMBED };
static const char *const kind_prefix[] = {"dense", "conv", "bn", "ln", "embedding"};

/* An int or a pair [a, b] (kernel sizes, strides, padding). */
static bool pair_arg(layer_args *A, int slot, const char *what, int64_t def, int64_t lo,
                     int64_t out[2]) {
  out[0] = out[1] = def;
  const nnc_ast *e = A->a[slot];
  if (!e) return true;
  if (e->kind == NNC_AST_LIST) {
    if (e->list.n != 2) {
      nnc_lower_error(A->L, e->span, "'%s' must be one number or a list of two, got %d", what,
                      e->list.n);
      return false;
    }
    for (int i = 0; i < 2; i++)
      if (!nnc_sema_int(A->L->s, e->list.items[i], what, lo, 4096, &out[i]))
        return !(A->L->failed = true);
    return true;
  }
  if (!nnc_sema_int(A->L->s, e, what, lo, 4096, &out[0])) return !(A->L->failed = true);
  out[1] = out[0];
  return true;
}

/* The layer's path: name = "..." or the default kind + count. */
static const char *layer_path(layer_args *A, int name_slot, int kind) {
  int count = ++A->sc->counters[kind];
  const char *name = nnc_arena_printf(A->L->s->arena, "%s%d", kind_prefix[kind], count);
  nnc_span where = A->call->name_span;
  if (A->a[name_slot]) {
    if (!nnc_sema_str(A->L->s, A->a[name_slot], "name", &name)) return NULL;
    where = A->a[name_slot]->span;
    size_t n = strlen(name);
    if (n == 0 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != n) {
      nnc_lower_error(A->L, where, "layer name '%s' must be letters, digits and '_'", name);
      return NULL;
    }
  }
  const char *path = nnc_lower_layer_name(A->L, A->sc, name, where);
  if (path) A->tag = path;
  return path;
}

/* A weight or bias tensor "<path>.<what>", initialised by the user's init
 * argument (if given) or PyTorch's default uniform(+-1/sqrt(fan_in)). */
static nnc_node *weight(layer_args *A, const char *path, const char *what, int init_slot,
                        const nnc_shape *s, int64_t fan_in, int64_t fan_out) {
  double bound = 1.0 / sqrt((double)fan_in);
  nnc_init init = {NNC_INIT_UNIFORM, -bound, bound, fan_in, fan_out};
  if (init_slot >= 0 && A->a[init_slot] &&
      !nnc_sema_init(A->L->s, A->a[init_slot], fan_in, fan_out, &init)) {
    A->L->failed = true;
    return NULL;
  }
  const char *name = nnc_arena_printf(A->L->s->arena, "%s.%s", path, what);
  return nnc_lower_tensor(A->L, name, NNC_ROLE_PARAM, s, init, A->call->span);
}

/* ---- Layers ---- */

enum { DENSE_X, DENSE_UNITS, DENSE_ACT, DENSE_BIAS, DENSE_INIT, DENSE_BIAS_INIT, DENSE_NAME };

/* dense(x[B,F], units): x @ W^T + b, W[units, F], b[units] */
static nnc_value l_dense(layer_args *A) {
  nnc_node *x = A->x.node;
  if (x->shape.rank != 2) {
    if (x->shape.rank > 2)
      nnc_lower_error(A->L, A->call->list.items[0]->span,
                      "dense expects [batch, features], got %s; insert flatten()", shape_of(A, x));
    else
      nnc_lower_error(A->L, A->call->list.items[0]->span, "dense expects [batch, features], got %s",
                      shape_of(A, x));
    return NNC_VALUE_ERROR;
  }
  int64_t units;
  bool has_bias;
  if (!int_arg(A, DENSE_UNITS, "units", 1, 1, NNC_MAX_DIM, &units) ||
      !bool_arg(A, DENSE_BIAS, "bias", true, &has_bias))
    return fail(A);
  int64_t in = x->shape.dim[1];
  nnc_shape ws = {2, {units, in}};
  nnc_shape os = {2, {x->shape.dim[0], units}};
  if (!nnc_lower_check_shape(A->L, at(A), "the weight of this dense layer", &ws) ||
      !nnc_lower_check_shape(A->L, at(A), "the output of this dense layer", &os))
    return fail(A);
  const char *path = layer_path(A, DENSE_NAME, KIND_DENSE);
  if (!path) return fail(A);
  nnc_node *w = weight(A, path, "weight", DENSE_INIT, &ws, in, units);
  if (!w) return fail(A);
  nnc_node *y = nnc_ir_matmul(G(A), x, w, false, true);
  if (has_bias) {
    nnc_shape bs = {1, {units}}, row = {2, {1, units}};
    nnc_node *b = weight(A, path, "bias", DENSE_BIAS_INIT, &bs, in, units);
    if (!b) return fail(A);
    y = bin(A, NNC_OP_ADD, y, nnc_ir_reshape(G(A), b, &row));
  } else if (A->a[DENSE_BIAS_INIT]) {
    nnc_lower_error(A->L, A->a[DENSE_BIAS_INIT]->span, "bias_init given, but bias = false");
    return NNC_VALUE_ERROR;
  }
  y = nnc_layer_activation(A, DENSE_ACT, y, 1);
  return y ? tensor(A, y) : NNC_VALUE_ERROR;
}

enum {
  CONV_X,
  CONV_FILTERS,
  CONV_KERNEL,
  CONV_STRIDE,
  CONV_PAD,
  CONV_ACT,
  CONV_BIAS,
  CONV_INIT,
  CONV_BIAS_INIT,
  CONV_NAME
};

static bool need_nchw(layer_args *A, nnc_node *x) {
  if (x->shape.rank == 4) return true;
  nnc_lower_error(A->L, A->call->list.items[0]->span,
                  "%s expects [batch, channels, height, width], got %s; declare the input as "
                  "f32[channels, height, width] or use reshape()",
                  A->call->str, shape_of(A, x));
  return false;
}

/* Window geometry shared by conv2d and the pools; reports a window that
 * does not fit. */
static bool window(layer_args *A, nnc_node *x, const int64_t k[2], const int64_t s[2],
                   const int64_t p[2], int64_t *oh, int64_t *ow) {
  *oh = nnc_ir_window_out(x->shape.dim[2], k[0], s[0], p[0]);
  *ow = nnc_ir_window_out(x->shape.dim[3], k[1], s[1], p[1]);
  if (*oh >= 1 && *ow >= 1 && x->shape.dim[2] + 2 * p[0] >= k[0] &&
      x->shape.dim[3] + 2 * p[1] >= k[1])
    return true;
  nnc_lower_error(A->L, at(A), "%s window %lldx%lld does not fit the input %s (padding %lldx%lld)",
                  A->call->str, (long long)k[0], (long long)k[1], shape_of(A, x), (long long)p[0],
                  (long long)p[1]);
  return false;
}

/* padding = "same" (stride 1, odd kernel): output as large as the input. */
static bool padding_arg(layer_args *A, int slot, const int64_t k[2], const int64_t s[2],
                        int64_t p[2]) {
  const nnc_ast *e = A->a[slot];
  if (e && e->kind == NNC_AST_STRING) {
    if (strcmp(e->str, "same") != 0 && strcmp(e->str, "valid") != 0) {
      nnc_lower_error(A->L, e->span, "padding must be a number, a pair, \"same\" or \"valid\"");
      return false;
    }
    p[0] = p[1] = 0;
    if (e->str[0] == 'v') return true;
    if (s[0] != 1 || s[1] != 1 || k[0] % 2 == 0 || k[1] % 2 == 0) {
      nnc_lower_error(A->L, e->span, "padding = \"same\" needs stride 1 and an odd kernel size");
      return false;
    }
    p[0] = k[0] / 2;
    p[1] = k[1] / 2;
    return true;
  }
  return pair_arg(A, slot, "padding", 0, 0, p);
}

/* conv2d(x[N,C,H,W], O, kernel): im2col -> [N*OH*OW, C*KH*KW] times
 * W[O, C*KH*KW]^T -> [N*OH*OW, O] (+ b) -> [N,OH,OW,O] -> [N,O,OH,OW] */
static nnc_value l_conv2d(layer_args *A) {
  nnc_node *x = A->x.node;
  if (!need_nchw(A, x)) return fail(A);
  int64_t filters, k[2], s[2], p[2], oh, ow;
  bool has_bias;
  if (!int_arg(A, CONV_FILTERS, "filters", 1, 1, NNC_MAX_DIM, &filters) ||
      !pair_arg(A, CONV_KERNEL, "kernel", 3, 1, k) ||
      !pair_arg(A, CONV_STRIDE, "stride", 1, 1, s) || !padding_arg(A, CONV_PAD, k, s, p) ||
      !bool_arg(A, CONV_BIAS, "bias", true, &has_bias))
    return fail(A);
  if (!window(A, x, k, s, p, &oh, &ow)) return fail(A);
  int64_t n = x->shape.dim[0], c = x->shape.dim[1];
  nnc_shape ws = {4, {filters, c, k[0], k[1]}};
  nnc_shape cols_shape = {2, {n * oh * ow, c * k[0] * k[1]}};
  nnc_shape out_shape = {4, {n, filters, oh, ow}};
  if (!nnc_lower_check_shape(A->L, at(A), "the weight of this conv2d layer", &ws) ||
      !nnc_lower_check_shape(A->L, at(A), "the im2col matrix of this conv2d layer", &cols_shape) ||
      !nnc_lower_check_shape(A->L, at(A), "the output of this conv2d layer", &out_shape))
    return fail(A);
  const char *path = layer_path(A, CONV_NAME, KIND_CONV);
  if (!path) return fail(A);
  int64_t fan_in = c * k[0] * k[1], fan_out = filters * k[0] * k[1];
  nnc_node *w = weight(A, path, "weight", CONV_INIT, &ws, fan_in, fan_out);
  if (!w) return fail(A);
  nnc_node *cols = nnc_ir_im2col(G(A), x, k, s, p, 0.0);
  nnc_shape w2 = {2, {filters, fan_in}};
  nnc_node *y = nnc_ir_matmul(G(A), cols, nnc_ir_reshape(G(A), w, &w2), false, true);
  if (has_bias) {
    nnc_shape bs = {1, {filters}}, row = {2, {1, filters}};
    nnc_node *b = weight(A, path, "bias", CONV_BIAS_INIT, &bs, fan_in, fan_out);
    if (!b) return fail(A);
    y = bin(A, NNC_OP_ADD, y, nnc_ir_reshape(G(A), b, &row));
  }
  nnc_shape nhwc = {4, {n, oh, ow, filters}};
  static const int to_nchw[4] = {0, 3, 1, 2};
  y = nnc_ir_transpose(G(A), nnc_ir_reshape(G(A), y, &nhwc), to_nchw);
  y = nnc_layer_activation(A, CONV_ACT, y, 1);
  return y ? tensor(A, y) : NNC_VALUE_ERROR;
}

enum { POOL_X, POOL_SIZE, POOL_STRIDE, POOL_PAD };

/* maxpool/avgpool: each channel as its own image [N*C,1,H,W], im2col ->
 * [N*C*OH*OW, KH*KW], reduce the window axis, back to [N,C,OH,OW]. */
static nnc_value pool(layer_args *A, bool is_max) {
  nnc_node *x = A->x.node;
  if (!need_nchw(A, x)) return fail(A);
  int64_t k[2], s[2], p[2], oh, ow;
  if (!pair_arg(A, POOL_SIZE, "size", 2, 1, k)) return fail(A);
  if (!pair_arg(A, POOL_STRIDE, "stride", 1, 1, s)) return fail(A);
  if (!A->a[POOL_STRIDE]) s[0] = k[0], s[1] = k[1];
  if (!pair_arg(A, POOL_PAD, "padding", 0, 0, p)) return fail(A);
  if (p[0] > k[0] / 2 || p[1] > k[1] / 2) {
    nnc_lower_error(A->L, A->a[POOL_PAD]->span, "padding must be at most half the window size");
    return fail(A);
  }
  if (!window(A, x, k, s, p, &oh, &ow)) return fail(A);
  int64_t n = x->shape.dim[0], c = x->shape.dim[1];
  nnc_shape planes = {4, {n * c, 1, x->shape.dim[2], x->shape.dim[3]}};
  nnc_node *cols =
      nnc_ir_im2col(G(A), nnc_ir_reshape(G(A), x, &planes), k, s, p, is_max ? -INFINITY : 0.0);
  nnc_node *r = nnc_ir_reduce(G(A), is_max ? NNC_OP_RMAX : NNC_OP_SUM, cols, 2u);
  if (!is_max) r = bin(A, NNC_OP_MUL, r, cst(A, 1.0 / (double)(k[0] * k[1])));
  nnc_shape out = {4, {n, c, oh, ow}};
  return tensor(A, nnc_ir_reshape(G(A), r, &out));
}
static nnc_value l_maxpool(layer_args *A) {
  return pool(A, true);
}
static nnc_value l_avgpool(layer_args *A) {
  return pool(A, false);
}

static nnc_value l_global_avgpool(layer_args *A) {
  nnc_node *x = A->x.node;
  if (!need_nchw(A, x)) return fail(A);
  nnc_node *s = nnc_ir_reduce(G(A), NNC_OP_SUM, x, (1u << 2) | (1u << 3));
  s = bin(A, NNC_OP_MUL, s, cst(A, 1.0 / (double)(x->shape.dim[2] * x->shape.dim[3])));
  nnc_shape out = {2, {x->shape.dim[0], x->shape.dim[1]}};
  return tensor(A, nnc_ir_reshape(G(A), s, &out));
}

static nnc_value l_flatten(layer_args *A) {
  nnc_node *x = A->x.node;
  nnc_shape out = {2, {x->shape.dim[0], nnc_shape_numel(&x->shape) / x->shape.dim[0]}};
  return tensor(A, nnc_ir_reshape(G(A), x, &out));
}

/* reshape(x, [d...]): the per-sample shape; one dim may be -1. */
static nnc_value l_reshape(layer_args *A) {
  nnc_node *x = A->x.node;
  const nnc_ast *e = A->a[1];
  if (e->kind != NNC_AST_LIST) {
    nnc_lower_error(A->L, e->span, "reshape expects a per-sample shape such as [7, 7, 64]");
    return fail(A);
  }
  if (e->list.n > NNC_MAX_RANK - 1) {
    nnc_lower_error(A->L, e->span, "too many dimensions: %d (the limit is %d)", e->list.n,
                    NNC_MAX_RANK - 1);
    return fail(A);
  }
  nnc_shape s = {e->list.n + 1, {x->shape.dim[0]}};
  int infer = -1;
  int64_t known = 1, per = nnc_shape_numel(&x->shape) / x->shape.dim[0];
  for (int i = 0; i < e->list.n; i++) {
    int64_t v;
    if (!nnc_sema_int(A->L->s, e->list.items[i], "dimension", -1, NNC_MAX_DIM, &v)) return fail(A);
    if (v == -1 && infer < 0) {
      infer = i;
      continue;
    }
    if (v < 1) {
      nnc_lower_error(A->L, e->list.items[i]->span,
                      "dimension must be positive (or one -1 to infer it), got %lld", (long long)v);
      return fail(A);
    }
    s.dim[i + 1] = v;
    if (known > NNC_MAX_ELEMENTS / v)
      known = NNC_MAX_ELEMENTS + 1;
    else
      known *= v;
  }
  if (infer >= 0 && known <= per && per % known == 0) s.dim[infer + 1] = per / known;
  if ((infer >= 0 && (known > per || per % known)) || (infer < 0 && known != per)) {
    nnc_lower_error(A->L, e->span,
                    "cannot reshape %s to this per-sample shape: %lld elements per "
                    "sample do not fit",
                    shape_of(A, x), (long long)per);
    return fail(A);
  }
  return tensor(A, nnc_ir_reshape(G(A), x, &s));
}

enum { BN_X, BN_MOMENTUM, BN_EPS, BN_NAME };

/* Per-channel [C] tensor as [1,C,1,1] (or [1,C]) for broadcasting. */
static nnc_node *per_channel(layer_args *A, nnc_node *v, int rank) {
  nnc_shape s = {rank, {1, v->shape.dim[0], 1, 1}};
  return nnc_ir_reshape(G(A), v, &s);
}

/* batchnorm(x[N,C] or x[N,C,H,W]): statistics over all axes but C.
 * train: y = (x - mean) / sqrt(var + eps) * gamma + beta with the batch's
 *   mean and biased variance; running_mean/var <- (1-m) r + m (mean, var
 *   unbiased), as PyTorch. eval (or frozen): the running statistics. */
static nnc_value l_batchnorm(layer_args *A) {
  nnc_node *x = A->x.node;
  int r = x->shape.rank;
  if (r != 2 && r != 4) {
    nnc_lower_error(
        A->L, A->call->list.items[0]->span,
        "batchnorm expects [batch, features] or [batch, channels, height, width], got %s",
        shape_of(A, x));
    return fail(A);
  }
  double momentum, eps;
  if (!num_arg(A, BN_MOMENTUM, "momentum", 0.1, 0, 1, &momentum) ||
      !num_arg(A, BN_EPS, "eps", 1e-5, 0, 1, &eps))
    return fail(A);
  int64_t c = x->shape.dim[1];
  /* the values per channel of the whole batch: of every rank whose
   * statistics are synchronised (nnc_frontend_options.stat_ranks) */
  int64_t count = nnc_shape_numel(&x->shape) / c * (A->L->training ? A->L->s->stat_ranks : 1);
  if (A->L->training && count < 2) {
    nnc_lower_error(A->L, at(A),
                    "batchnorm needs more than one value per channel in training, "
                    "got %s; use a larger batch",
                    shape_of(A, x));
    return fail(A);
  }
  const char *path = layer_path(A, BN_NAME, KIND_BN);
  if (!path) return fail(A);
  nnc_shape cs = {1, {c}};
  nnc_arena *ar = A->L->s->arena;
  nnc_init ones = {NNC_INIT_ONES, 0, 0, c, c}, zeros = {NNC_INIT_ZEROS, 0, 0, c, c};
  const char *gname = nnc_arena_printf(ar, "%s.gamma", path);
  nnc_node *gamma = nnc_lower_tensor(A->L, gname, NNC_ROLE_PARAM, &cs, ones, at(A));
  nnc_node *beta = nnc_lower_tensor(A->L, nnc_arena_printf(ar, "%s.beta", path), NNC_ROLE_PARAM,
                                    &cs, zeros, at(A));
  int rm_t = -1, rv_t = -1;
  nnc_node *rm = nnc_lower_tensor(A->L, nnc_arena_printf(ar, "%s.running_mean", path),
                                  NNC_ROLE_BUFFER, &cs, zeros, at(A));
  nnc_node *rv = nnc_lower_tensor(A->L, nnc_arena_printf(ar, "%s.running_var", path),
                                  NNC_ROLE_BUFFER, &cs, ones, at(A));
  rm_t = (int)rm->attr[0];
  rv_t = (int)rv->attr[0];
  bool batch_stats = A->L->training && !nnc_lower_is_frozen(A->L, gname);
  uint32_t axes = r == 2 ? 1u : (1u | 4u | 8u);
  nnc_node *mean, *var;
  if (batch_stats) {
    double inv = 1.0 / (double)count;
    mean = bin(A, NNC_OP_MUL, nnc_ir_reduce(G(A), NNC_OP_SUM, x, axes), cst(A, inv));
    nnc_node *d = bin(A, NNC_OP_SUB, x, mean);
    var = bin(A, NNC_OP_MUL, nnc_ir_reduce(G(A), NNC_OP_SUM, bin(A, NNC_OP_MUL, d, d), axes),
              cst(A, inv));
    /* running statistics, with the unbiased variance */
    double unbias = (double)count / (double)(count - 1);
    nnc_node *m_new = bin(A, NNC_OP_ADD, bin(A, NNC_OP_MUL, rm, cst(A, 1 - momentum)),
                          bin(A, NNC_OP_MUL, nnc_ir_reshape(G(A), mean, &cs), cst(A, momentum)));
    nnc_node *v_new =
        bin(A, NNC_OP_ADD, bin(A, NNC_OP_MUL, rv, cst(A, 1 - momentum)),
            bin(A, NNC_OP_MUL, nnc_ir_reshape(G(A), var, &cs), cst(A, momentum * unbias)));
    nnc_graph_add_update(G(A), rm_t, m_new);
    nnc_graph_add_update(G(A), rv_t, v_new);
  } else {
    mean = per_channel(A, rm, r);
    var = per_channel(A, rv, r);
  }
  nnc_node *xhat = bin(A, NNC_OP_MUL, bin(A, NNC_OP_SUB, x, mean),
                       un(A, NNC_OP_RSQRT, bin(A, NNC_OP_ADD, var, cst(A, eps))));
  nnc_node *y = bin(A, NNC_OP_ADD, bin(A, NNC_OP_MUL, xhat, per_channel(A, gamma, r)),
                    per_channel(A, beta, r));
  return tensor(A, y);
}

enum { LN_X, LN_EPS, LN_NAME };

/* layernorm(x[..., D]): normalise over the last axis, then gamma, beta [D]. */
static nnc_value l_layernorm(layer_args *A) {
  nnc_node *x = A->x.node;
  int r = x->shape.rank;
  if (r < 2) {
    nnc_lower_error(A->L, A->call->list.items[0]->span,
                    "layernorm expects [batch, ..., features], got %s", shape_of(A, x));
    return fail(A);
  }
  double eps;
  if (!num_arg(A, LN_EPS, "eps", 1e-5, 0, 1, &eps)) return fail(A);
  const char *path = layer_path(A, LN_NAME, KIND_LN);
  if (!path) return fail(A);
  int64_t d = x->shape.dim[r - 1];
  nnc_shape ds = {1, {d}};
  nnc_init ones = {NNC_INIT_ONES, 0, 0, d, d}, zeros = {NNC_INIT_ZEROS, 0, 0, d, d};
  nnc_arena *ar = A->L->s->arena;
  nnc_node *gamma = nnc_lower_tensor(A->L, nnc_arena_printf(ar, "%s.gamma", path), NNC_ROLE_PARAM,
                                     &ds, ones, at(A));
  nnc_node *beta = nnc_lower_tensor(A->L, nnc_arena_printf(ar, "%s.beta", path), NNC_ROLE_PARAM,
                                    &ds, zeros, at(A));
  uint32_t axis = 1u << (r - 1);
  nnc_node *mean =
      bin(A, NNC_OP_MUL, nnc_ir_reduce(G(A), NNC_OP_SUM, x, axis), cst(A, 1.0 / (double)d));
  nnc_node *c = bin(A, NNC_OP_SUB, x, mean);
  nnc_node *var =
      bin(A, NNC_OP_MUL, nnc_ir_reduce(G(A), NNC_OP_SUM, bin(A, NNC_OP_MUL, c, c), axis),
          cst(A, 1.0 / (double)d));
  nnc_node *xhat = bin(A, NNC_OP_MUL, c, un(A, NNC_OP_RSQRT, bin(A, NNC_OP_ADD, var, cst(A, eps))));
  nnc_shape row = {r, {1}};
  for (int i = 0; i < r; i++)
    row.dim[i] = i == r - 1 ? d : 1;
  nnc_node *y = bin(A, NNC_OP_ADD, bin(A, NNC_OP_MUL, xhat, nnc_ir_reshape(G(A), gamma, &row)),
                    nnc_ir_reshape(G(A), beta, &row));
  return tensor(A, y);
}

/* dropout(x, p): train: x * (u >= p) / (1 - p), u uniform per element from
 * the (seed, step) inputs and a stream of its own; eval: x. */
static nnc_value l_dropout(layer_args *A) {
  double p;
  if (!num_arg(A, 1, "p", 0.5, 0, 0.999, &p)) return fail(A);
  int stream = A->L->next_stream++;
  nnc_node *x = A->x.node;
  if (!A->L->training || p == 0) return A->x;
  nnc_shape scalar = {0, {0}};
  nnc_node *seed = nnc_ir_input(G(A), NNC_IN_SEED, NNC_I32, &scalar);
  nnc_node *step = nnc_ir_input(G(A), NNC_IN_STEP, NNC_F32, &scalar);
  nnc_node *u = nnc_ir_rand(G(A), seed, step, &x->shape, NNC_F32, stream);
  nnc_node *keep = bin(A, NNC_OP_GE, u, cst(A, p));
  return tensor(A, bin(A, NNC_OP_MUL, bin(A, NNC_OP_MUL, x, keep), cst(A, 1.0 / (1.0 - p))));
}

enum { EMB_X, EMB_VOCAB, EMB_DIM, EMB_INIT, EMB_NAME };

/* embedding(idx i32[B, ...], vocab, dim): rows of table[vocab, dim]. */
static nnc_value l_embedding(layer_args *A) {
  nnc_node *x = A->x.node;
  if (x->dtype != NNC_I32) {
    nnc_lower_error(A->L, A->call->list.items[0]->span,
                    "embedding expects i32 indices, got %s; declare the model input as i32[...]",
                    shape_of(A, x));
    return fail(A);
  }
  if (x->shape.rank >= NNC_MAX_RANK) {
    nnc_lower_error(A->L, at(A), "embedding input has too many dimensions");
    return fail(A);
  }
  int64_t vocab, dim;
  if (!int_arg(A, EMB_VOCAB, "vocab", 1, 1, NNC_MAX_DIM, &vocab) ||
      !int_arg(A, EMB_DIM, "dim", 1, 1, NNC_MAX_DIM, &dim))
    return fail(A);
  nnc_shape ts = {2, {vocab, dim}};
  nnc_shape out = x->shape;
  out.dim[out.rank++] = dim;
  if (!nnc_lower_check_shape(A->L, at(A), "the embedding table", &ts) ||
      !nnc_lower_check_shape(A->L, at(A), "the embedding output", &out))
    return fail(A);
  const char *path = layer_path(A, EMB_NAME, KIND_EMBED);
  if (!path) return fail(A);
  nnc_init init = {NNC_INIT_NORMAL, 0, 1, vocab, dim};
  if (A->a[EMB_INIT] && !nnc_sema_init(A->L->s, A->a[EMB_INIT], vocab, dim, &init)) return fail(A);
  nnc_node *table = nnc_lower_tensor(A->L, nnc_arena_printf(A->L->s->arena, "%s.table", path),
                                     NNC_ROLE_PARAM, &ts, init, at(A));
  return tensor(A, nnc_ir_gather(G(A), table, x));
}

/* ---- The table ---- */

static const char *const p_dense[] = {"x",    "units",     "activation", "bias",
                                      "init", "bias_init", "name"};
static const char *const p_conv[] = {"x",          "filters", "kernel", "stride",    "padding",
                                     "activation", "bias",    "init",   "bias_init", "name"};
static const char *const p_pool[] = {"x", "size", "stride", "padding"};
static const char *const p_x[] = {"x"};
static const char *const p_reshape[] = {"x", "shape"};
static const char *const p_bn[] = {"x", "momentum", "eps", "name"};
static const char *const p_ln[] = {"x", "eps", "name"};
static const char *const p_dropout[] = {"x", "p"};
static const char *const p_embedding[] = {"x", "vocab", "dim", "init", "name"};
static const char *const p_leaky[] = {"x", "slope"};
static const char *const p_softmax[] = {"x", "axis"};
static const char *const p_reduce[] = {"x", "axis", "keepdims"};

#define SIG(p) p, (int)(sizeof p / sizeof p[0])
static const builtin builtins[] = {
    {"dense", SIG(p_dense), 2, 2, l_dense, true},
    {"conv2d", SIG(p_conv), 3, 2, l_conv2d, true},
    {"maxpool", SIG(p_pool), 2, 2, l_maxpool, true},
    {"avgpool", SIG(p_pool), 2, 2, l_avgpool, true},
    {"global_avgpool", SIG(p_x), 1, 1, l_global_avgpool, true},
    {"flatten", SIG(p_x), 1, 1, l_flatten, true},
    {"reshape", SIG(p_reshape), 2, 2, l_reshape, true},
    {"batchnorm", SIG(p_bn), 1, 1, l_batchnorm, true},
    {"layernorm", SIG(p_ln), 1, 1, l_layernorm, true},
    {"dropout", SIG(p_dropout), 2, 2, l_dropout, true},
    {"embedding", SIG(p_embedding), 3, 3, l_embedding, true},
    {"relu", SIG(p_x), 1, 1, nnc_fn_relu, false},
    {"leaky_relu", SIG(p_leaky), 2, 1, nnc_fn_leaky_relu, false},
    {"sigmoid", SIG(p_x), 1, 1, nnc_fn_sigmoid, false},
    {"tanh", SIG(p_x), 1, 1, nnc_fn_tanh, false},
    {"gelu", SIG(p_x), 1, 1, nnc_fn_gelu, false},
    {"softmax", SIG(p_softmax), 1, 1, nnc_fn_softmax, false},
    {"log_softmax", SIG(p_softmax), 1, 1, nnc_fn_log_softmax, false},
    {"exp", SIG(p_x), 1, 1, nnc_fn_exp, false},
    {"log", SIG(p_x), 1, 1, nnc_fn_log, false},
    {"sqrt", SIG(p_x), 1, 1, nnc_fn_sqrt, false},
    {"abs", SIG(p_x), 1, 1, nnc_fn_abs, false},
    {"sum", SIG(p_reduce), 2, 1, nnc_fn_sum, false},
    {"mean", SIG(p_reduce), 2, 1, nnc_fn_mean, false},
};
enum { NBUILTINS = sizeof builtins / sizeof builtins[0] };

int nnc_builtin_count(void) {
  return NBUILTINS;
}

const char *nnc_builtin_name(int i) {
  return builtins[i].name;
}

nnc_value nnc_lower_builtin(nnc_lower *L, nnc_scope *sc, const nnc_ast *call, bool *found) {
  const builtin *b = NULL;
  for (int i = 0; i < NBUILTINS; i++)
    if (strcmp(builtins[i].name, call->str) == 0) b = &builtins[i];
  *found = b != NULL;
  if (!b) return NNC_VALUE_ERROR;
  const nnc_ast *a[16];
  nnc_sig sig = {b->name, b->params, b->n, b->npositional, b->nrequired};
  if (!nnc_sema_match(L->s, call, &sig, a)) {
    L->failed = true;
    return NNC_VALUE_ERROR;
  }
  nnc_value x = nnc_lower_expr(L, sc, a[0]);
  if (x.is_num) {
    nnc_lower_error(L, a[0]->span, "%s expects a tensor, got a number", b->name);
    return NNC_VALUE_ERROR;
  }
  if (!x.node) return NNC_VALUE_ERROR;
  if (b->needs_batch && !x.batched) {
    nnc_lower_error(L, a[0]->span,
                    "%s applies to values computed from the model's input, not to "
                    "the parameter %s",
                    b->name, nnc_lower_shape_str(L, x.node));
    return NNC_VALUE_ERROR;
  }
  if (x.node->dtype != NNC_F32 && b->fn != l_embedding) {
    nnc_lower_error(L, a[0]->span, "%s expects f32 values, got %s", b->name,
                    nnc_lower_shape_str(L, x.node));
    return NNC_VALUE_ERROR;
  }
  layer_args A = {L, sc, call, a, x, nnc_arena_printf(L->s->arena, "%s.%s", sc->prefix, b->name)};
  int mark = L->g->nnodes;
  nnc_value v = b->fn(&A);
  nnc_lower_tag(L, mark, call->span, A.tag);
  return v;
}
