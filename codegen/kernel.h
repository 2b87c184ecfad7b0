/* kernel.h: the kernel IR — loop nests between the graph IR and LLVM.
 *
 * lower.c turns each graph into a list of kernels; plan.c gives every buffer
 * an arena offset; llvm.c turns each kernel into one LLVM function
 *   void k(char *arena, int64_t begin, int64_t end)
 * and each graph into an entry point that runs its kernels in order.
 *
 * A kernel is a tree of statements: counted loops with constant extents,
 * stores of an expression into a buffer at an element index, and
 * assignments to kernel-local scalars (accumulators). Expressions are DAGs
 * of typed nodes: constants, loop variables, scalars, loads, arithmetic.
 * Index arithmetic is ordinary i64 expressions, so affine indices, clamped
 * gathers and guarded window reads are all the same machinery.
 *
 * Semantics: statements run in order; an expression is evaluated where its
 * statement runs, reading current memory and scalars. When `split` is set
 * the kernel's body is a single loop whose iterations are independent and
 * the caller runs [begin, end) of it (on several threads); otherwise the
 * caller passes [0, 1) and the body runs once. Reductions are sequential
 * inner loops, so their order never depends on the thread count.
 *
 * Everything lives in the compilation's arena (no per-node free).
 */
#ifndef NNC_CG_KERNEL_H
#define NNC_CG_KERNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "gemm_plan.h"
#include "ir.h"

/* Value types of kernel expressions. */
typedef enum nnc_kt { NNC_KT_F32, NNC_KT_F64, NNC_KT_I32, NNC_KT_I64, NNC_KT_BOOL } nnc_kt;

nnc_kt nnc_kt_of(nnc_dtype t);
bool nnc_kt_is_float(nnc_kt t);
int nnc_kt_size(nnc_kt t);

/* Kernel expression ops, as K(ENUM, "name"): the enum and nnc_kop_name
 * are expanded from this list; switches over nnc_kop spell out every op. */
#define NNC_KOPS(K)                                                                                \
  /* unary, float */                                                                               \
  K(NEG, "neg")                                                                                    \
  K(EXP, "exp")                                                                                    \
  K(LOG, "log")                                                                                    \
  K(SQRT, "sqrt")                                                                                  \
  K(RSQRT, "rsqrt")                                                                                \
  K(RECIP, "recip")                                                                                \
  K(TANH, "tanh")                                                                                  \
  K(SIGMOID, "sigmoid")                                                                            \
  K(RELU, "relu")                                                                                  \
  K(ABS, "abs")                                                                                    \
  K(SIGN, "sign")                                                                                  \
  K(ERF, "erf")                                                                                    \
  K(COS, "cos")                                                                                    \
  K(FLOOR, "floor")                                                                                \
  /* unary, bool */                                                                                \
  K(NOT, "not")                                                                                    \
  /* binary, float or int (DIV and REM on ints: truncating, operands >= 0) */                      \
  K(ADD, "add")                                                                                    \
  K(SUB, "sub")                                                                                    \
  K(MUL, "mul")                                                                                    \
  K(DIV, "div")                                                                                    \
  K(REM, "rem")                                                                                    \
  K(MAX, "max")                                                                                    \
  K(MIN, "min")                                                                                    \
  K(POW, "pow")                                                                                    \
  /* comparisons -> bool */                                                                        \
  K(LT, "lt")                                                                                      \
  K(LE, "le")                                                                                      \
  K(GT, "gt")                                                                                      \
  K(GE, "ge")                                                                                      \
  K(EQ, "eq")                                                                                      \
  K(NE, "ne")                                                                                      \
  /* bool */                                                                                       \
  K(AND, "and")                                                                                    \
  K(OR, "or")

typedef enum nnc_kop {
#define NNC_KOP_ENUM_(e, name) NNC_K_##e,
  NNC_KOPS(NNC_KOP_ENUM_) /* one enumerator each */
#undef NNC_KOP_ENUM_
  NNC_K_COUNT_
} nnc_kop;

const char *nnc_kop_name(nnc_kop op);

typedef enum nnc_kx_kind {
  NNC_KX_CONST,  /* f (float types) or i (int types, bool) */
  NNC_KX_VAR,    /* loop variable `var` (i64) */
  NNC_KX_SCALAR, /* kernel-local scalar `var` */
  NNC_KX_LOAD,   /* buffer `buf` at element index a[0] (i64) */
  NNC_KX_UN,     /* op(a[0]) */
  NNC_KX_BIN,    /* op(a[0], a[1]) */
  NNC_KX_SELECT, /* a[0] (bool) ? a[1] : a[2] */
  NNC_KX_CAST,   /* a[0] converted to `type` */
  NNC_KX_RAND,   /* ops.def's RAND hash: seed a[0] (i64), step a[1] (i64),
                    flat index a[2] (i64), stream i -> uniform [0,1) of `type` */
} nnc_kx_kind;

typedef struct nnc_kexpr nnc_kexpr;
struct nnc_kexpr {
  nnc_kx_kind kind;
  nnc_kt type;
  nnc_kop op;
  int var, buf;
  double f;
  int64_t i;
  nnc_kexpr *a[3];
  bool reads_mem, reads_scalar; /* anywhere in the DAG below (for memoising) */
  /* A float BIN that never contracts with a product among its operands
   * (no fast-math flags): a reduction's add of a term computed inline,
   * rounded as if the term had been stored by a kernel of its own. */
  bool exact;
};

typedef enum nnc_ks_kind { NNC_KS_LOOP, NNC_KS_STORE, NNC_KS_SET } nnc_ks_kind;

typedef struct nnc_kstmt nnc_kstmt;
typedef struct nnc_kblock {
  nnc_kstmt **s;
  int n, cap;
} nnc_kblock;

struct nnc_kstmt {
  nnc_ks_kind kind;
  int var;          /* LOOP: its variable; SET: the scalar */
  int64_t extent;   /* LOOP: runs var over [0, extent) */
  nnc_kblock body;  /* LOOP */
  int buf;          /* STORE */
  nnc_kexpr *index; /* STORE: element index (i64) */
  nnc_kexpr *value; /* STORE, SET */
};

/* Where a buffer lives in the arena. */
typedef enum nnc_kbuf_kind {
  NNC_KBUF_TENSOR, /* persistent tensor `id` of the module */
  NNC_KBUF_INPUT,  /* input slot `id` (nnc_input_kind) */
  NNC_KBUF_OUTPUT, /* output slot `id` (nnc_output_kind) */
  NNC_KBUF_TEMP,   /* temporary of one graph, placed by lifetime */
  NNC_KBUF_VIEW,   /* same memory as buffer `id` (a reshape) */
} nnc_kbuf_kind;

typedef struct nnc_kbuf {
  nnc_kbuf_kind kind;
  int id;
  nnc_kt type;
  int64_t numel;
  int64_t offset; /* bytes from the arena base, set by plan.c; -1 before */
  const char *name;
} nnc_kbuf;

/* A direct convolution (lower_conv.c, emitted by conv_direct.c) instead of
 * a loop nest, stride 1, all f32, every plane row-major with unit stride
 * along its rows:
 *   out[n, o, r, c] = bias[o] + sum over i < C, kh < KH, kw < KW of
 *       w[w0 + o*wo + i*wi + kh*wkh + kw*wkw] * in[n, i, r + kh - ph, c + kw - pw]
 * with in read as zero outside its H x W plane; the sum runs over i, then
 * kh, then kw (a fixed order whatever the threads). The forward pass is
 * w = W[O,C,KH,KW] as it is; the input gradient is the same sum with the
 * roles of W's two channel axes swapped and the taps flipped (negative
 * strides), in = dy. The kernel's split loop runs over (n, block of ob
 * output channels); each call writes whole output planes of its block,
 * `rows` rows at a time. */
typedef struct nnc_kconv {
  int64_t N, C, O, H, W, OH, OW, KH, KW, ph, pw;
  int64_t in_n, in_c;   /* strides of in, in elements (rows: W) */
  int64_t out_n, out_c; /* strides of out (rows: OW) */
  int64_t w0, wo, wi, wkh, wkw;
  int64_t ob;   /* output channels per block (the register block) */
  int64_t rows; /* output rows computed together (sharing each weight's broadcast) */
  int in_buf, w_buf, bias_buf, out_buf; /* bias_buf -1: none */
} nnc_kconv;
/* A convolution's weight gradient computed directly from NCHW tensors
 * (lower_conv_dw.c matches it, conv_dw.c emits it), in place of the
 * product dy_nhwcᵀ · im2col(x): dw[o, c, kh, kw] = sum over n, oh, ow of
 * dy[n, o, oh, ow] * x[n, c, oh + kh - PH, ow + kw - PW] (stride 1, zero
 * padding). The kernel's split loop runs over items: a block of `ob`
 * output channels, an input channel c, a block of `khb` tap rows, item
 * ((o / ob) * C + c) * (KH / khb) + kh / khb. The batch is summed in
 * `chunks` micro-batch chunks, each from zero in the same order whatever
 * the batch, and the chunk sums added as the runtime's pairwise tree (as
 * a chunked product adds them, ir/chunk.c). `scratch` holds each item's
 * lane accumulators and the chunk sums (nnc_kconv_dw_scratch). */
typedef struct nnc_kconv_dw {
  int64_t N, C, H, W, O, OH, OW, KH, KW, PH, PW;
  int64_t ob, khb; /* output channels and tap rows per item (divide O, KH) */
  int64_t chunks;  /* >= 1, divides N */
  int64_t group;   /* images per item in registers (divides N / chunks) */
  int vl;          /* lanes per vector */
  bool plane;      /* lanes along a whole output plane (OW == W), else along a row */
  int dy_buf, x_buf, dw_buf, scratch_buf;
} nnc_kconv_dw;

/* The most vectors of a plane (nnc_kconv_dw.plane) whose lanes run along
 * a whole output plane; longer planes go row by row. */
#define NNC_KCONV_DW_MAX_PLANE_VECTORS 64

/* Floats of a direct weight gradient's scratch buffer: per item ob * khb
 * * KW accumulator vectors, then chunks x O*C*KH*KW chunk sums. */
int64_t nnc_kconv_dw_scratch(const nnc_kconv_dw *d);

typedef struct nnc_kernel {
  const char *name;  /* LLVM function name: "train.k12.matmul_bias_relu" */
  const char *label; /* for profiles: "k12 matmul_bias_relu 64x256x784 mlp.dense1 fwd" */
  nnc_kblock body;
  bool split;     /* body is one loop split over threads by the caller */
  int64_t extent; /* split: that loop's extent (the caller's n); else 1 */
  int nvars;
  int nscalars;
  nnc_kt *scalar_type; /* [nscalars] */
  double work;         /* rough cost in element-operations, for threading */
  /* A matrix product (gemm_plan.h) instead of a loop nest: computes
   * rows [begin * row_block, min(end * row_block, M)) of C. */
  bool is_gemm;
  nnc_cg_gemm gemm;
  int64_t row_block;
  /* col_block > 0: split over blocks of col_block columns instead of rows
   * (gemm.N is then col_block; every call computes all M rows of one
   * block), so each thread reads only its part of B, e.g. the rows of a
   * weight matrix that the same thread's part of the update writes. */
  int64_t col_block;
  /* k_parts > 1: split over parts of K instead (lower_matmul.c,
   * k_split_parts): call j computes the partial product over K's j-th
   * part (gemm.K = K / k_parts of it: A's columns, B's rows) into
   * C + j * M * N, every row; c_buf holds k_parts products one after the
   * other, which the next kernel adds in order, part 0 first. The parts
   * do not depend on the thread count. */
  int64_t k_parts;
  /* bias_buf: the bias row, or with gemm.act NNC_CG_ACT_RELU_MASK the
   * mask (a tensor stored as C is, passed where the bias goes); -1: none */
  int a_buf, b_buf, bias_buf, c_buf;
  /* Non-NULL: C is not stored; instead this update pass (lower_update.c,
   * fused) runs on each finished element of C, its loads of c_buf (at the
   * pass's own index) reading the element. The pass's loop nest runs over
   * C's elements in C's flat order. */
  const struct nnc_kernel *update;
  /* Buffers read and written (for the memory plan), deduplicated. */
  int *reads, nreads, *writes, nwrites;
  /* An update pass (lower_update.c): base buffers it writes in place that
   * other kernels of the step read across its rows (a weight that dy.W
   * reads by columns): the lines of the other core's share are then
   * shared, and each store waits for their copies to be invalidated. The
   * split loop prefetches, for writing, the row about 1 KB ahead of each
   * (llvm.c); values are unchanged. */
  int *prefetch_bufs, nprefetch;
  /* Set by plan.c: a kernel of the train graph that this (eval) kernel
   * equals, its buffers placed at the same offsets, so both have the same
   * machine code: the backends call that kernel's function instead. */
  const struct nnc_kernel *same_as;
  /* Set by twins.c (the JIT and trainer programs, not deployed ones): a
   * cold loop kernel, of any graph, whose code is this one's but for its
   * base buffers' offsets. The backend compiles only twin_of, which then
   * takes its bases' offsets as arguments (has_twins; the order of
   * nnc_cg_kernel_bases), and calls it with this kernel's. */
  const struct nnc_kernel *twin_of;
  bool has_twins;
  /* An allreduce (ops.def): the kernel copies its operand into its one
   * written buffer, then the entry point calls the runtime's hook on that
   * buffer (kprog.comm_off), which sums it over the ranks in place. */
  bool allreduce;
  /* A direct convolution (see nnc_kconv) instead of the body. */
  bool is_conv;
  nnc_kconv conv;
  /* Non-NULL: a direct convolution weight gradient (no body, not is_gemm). */
  const nnc_kconv_dw *conv_dw;
} nnc_kernel;

/* The kernel graphs of a program, in the order nnc_cg_graphs lists them:
 * train, eval, grad, update, grad_half. */
enum { NNC_CG_NGRAPHS = 5 };

typedef struct nnc_kgraph {
  const char *name; /* "train" / "eval" */
  nnc_kernel **k;
  int n, cap;
  int64_t temp_bytes; /* set by plan.c: bytes of temporaries from temp_base */
} nnc_kgraph;

/* An int8 product of a deployed program (deploy_quant.c), in place of a
 * float product kernel C[M,N] = act(A[M,K] . W^T + bias), TFLite's scheme:
 * A quantised per tensor, asymmetric, stored as u8 = clamp(rint(a *
 * a_inv_scale) + a_zero, 0, 255) (int8 shifted by 128, as vpdpbusd wants
 * it) in the workspace at `scratch`, rows of K4 bytes (K rounded up to 4,
 * padded with zeros; the object lays an A stored transposed out in blocks
 * of 16 rows instead, llvm_qgemm.c); W symmetric per output channel, int8 [N][K4], zero
 * padded; then C[m,n] = act((float)(sum_k A[m,k] W[n,k] + offset[n]) *
 * out_scale[n]) with the int32 accumulator, offset[n] = round(bias[n] /
 * out_scale[n]) - a_zero * sum_k W[n,k] and out_scale[n] = a_scale *
 * w_scale[n]. */
enum { NNC_KQ_CHAIN = 4, NNC_KQ_DIMS = 6 }; /* nnc_kqgemm's byte_buf, out_row: at most */
typedef struct nnc_kqgemm {
  int64_t M, N, K, K4;
  int64_t lda, ldc;       /* row strides of A and C, in floats */
  bool trans_a;           /* A stored [K, M] (a convolution's im2col at batch > 1):
                             A[m, k] at a[k * lda + m] */
  int a_buf, c_buf;       /* the float kernel's A and C */
  float a_inv_scale;      /* 1 / a_scale */
  int32_t a_zero;         /* in u8 terms: 0..255 */
  const int8_t *w;        /* [N * K4] */
  const int32_t *offset;  /* [N] */
  const float *out_scale; /* [N] */
  bool relu;
  /* nbyte > 0: A arrives quantised, in bytes, through a chain of loop
   * kernels. byte_writer[0] (A's only writer; the product A's only other
   * reader: an im2col, a pooling) stores each value quantised as above,
   * one u8 at byte `index` of A's buffer byte_buf[0] instead of a float at
   * element `index`. Where it only copies or takes maxima of elements of
   * one other temporary (an im2col of a pooling's output, a max pooling),
   * and that temporary's only writer is a loop kernel too, that kernel
   * stores the temporary (byte_buf[1]) in bytes the same way, and
   * byte_writer[0] computes on the bytes (quantising commutes with copies
   * and maxima), and so on back: byte_writer[c] reads byte_buf[c + 1] in
   * bytes when c + 1 < nbyte. So the activations are quantised once, where
   * first written, and stored as bytes all the way to the product. */
  int nbyte;
  int byte_buf[NNC_KQ_CHAIN], byte_writer[NNC_KQ_CHAIN];
  int64_t scratch; /* workspace offset of the quantised A: max(M, 16) * K4 bytes */
  /* out_buf >= 0: a requantising epilogue (deploy_quant.c). C's only
   * reader, loop kernel `absorbed`, computed relu?(v * s[n] + t[n]) of each
   * element v of C (a batch norm in eval, a ReLU; n the column) and stored
   * it quantised for product out_q (its byte_writer[out_q->nbyte - 1])
   * into base buffer out_buf at a permutation of C's indices (NHWC ->
   * NCHW). Instead the product stores those bytes itself and `absorbed`
   * is not run: byte out_index(m, n) of out_buf = max?(quantise_out_q(v *
   * out_mul[n] + out_add[n]), out_q->a_zero), v the float of C[m, n] as
   * above (max with the zero point: out_relu). out_index(m, n) = n *
   * out_col + sum_d ((m / out_row[d]) % out_ext[d]) * out_step[d]. */
  int out_buf, absorbed;
  const struct nnc_kqgemm *out_q;
  const float *out_mul, *out_add; /* [N] */
  bool out_relu;
  int out_ndim;
  int64_t out_col, out_row[NNC_KQ_DIMS], out_ext[NNC_KQ_DIMS], out_step[NNC_KQ_DIMS];
  float a_scale, a_min, a_max; /* the calibrated range (for comments) */
} nnc_kqgemm;

/* What eval kernel k stores in bytes for an int8 product (one of its
 * byte_writer): q NULL (and product -1) when nothing. */
typedef struct nnc_kqstore {
  const nnc_kqgemm *q;
  int product; /* q's eval index */
  int buf;     /* the base buffer k stores quantised, a byte per element */
  int from;    /* >= 0: the base buffer k reads in bytes: each element a float code
                  0..255, which k's stores into buf store as it is; -1: k reads floats
                  and its stores quantise */
} nnc_kqstore;
nnc_kqstore nnc_kq_store_of(const nnc_kqgemm *const *quant, int n, int k);
/* Is eval kernel k absorbed by a product's requantising epilogue (not run)? */
bool nnc_kq_absorbed(const nnc_kqgemm *const *quant, int n, int k);

/* A deployed inference program's interface (deploy.c), for a backend that
 * emits PREFIX_predict itself: the persistent tensors live in a read-only
 * weights block at their buffers' offsets, everything else in the caller's
 * workspace; the entry point runs every kernel on the calling thread. */
typedef struct nnc_kdeploy {
  const char *predict;          /* the exported function: "mlp_predict" */
  const unsigned char *weights; /* the weights block, weights_bytes long */
  int64_t weights_bytes;
  int64_t x_offset, pred_offset; /* in the workspace */
  int64_t in_count, in_size;     /* input elements per call, per sample */
  int64_t out_count;             /* output floats per call */
  bool in_i32;                   /* i32 input (copied as is) instead of f32 */
  float scale;                   /* the raw input times this, */
  const float *mean, *std;       /* then standardised when non-NULL ([in_size]) */
  int64_t workspace_align;
  const nnc_kqgemm *const *quant; /* [eval.n]: each eval kernel's int8 product, or NULL
                                     (float); NULL: no kernel is quantised */
} nnc_kdeploy;

/* The kernel program of a module: buffers shared by both graphs. */
typedef struct nnc_kprog {
  nnc_arena *arena;
  const nnc_module *module;
  nnc_kbuf *bufs;
  int nbufs, buf_cap;
  int *tensor_bufs;               /* [module->ntensors]: buffer of each persistent tensor */
  int input_buf[NNC_IN_COUNT_];   /* -1 when no graph reads it */
  int output_buf[NNC_OUT_COUNT_]; /* -1 when no graph writes it */
  nnc_kgraph train, eval;
  bool has_train, has_eval;
  nnc_kgraph grad, update; /* data-parallel steps (module->grad, ->update) */
  bool has_grad, has_update;
  nnc_kgraph grad_half; /* the rank step of G/2 ranks (module->grad_half) */
  bool has_grad_half;
  /* Byte offset in the arena of the all-reduce hook (nnc_rt_allreduce_hook:
   * function, then context), read by the entry points after each allreduce
   * kernel; -1 when no kernel all-reduces. */
  int64_t comm_off;
  int64_t temp_base;         /* first byte of the temporaries (both graphs overlap) */
  int64_t arena_bytes;       /* total */
  int vector_width;          /* floats per vector of the target (gemm) */
  bool use_gemm;             /* f32 products through gemm.c */
  bool bf16;                 /* products with bf16 operands (precision = bf16) */
  bool fuse_updates;         /* update passes fused into their gradient's product
                                (lower_update.c) where they can be */
  bool fuse_masks;           /* ReLU's backward select fused into the product
                                that makes its gradient (lower_fuse.c) */
  bool direct_conv;          /* stride-1 convolutions and their input gradients as
                                direct kernels (lower_conv.c): trainers only */
  bool k_split;              /* input gradients dy.W split over W's rows
                                (lower_matmul.c, k_split_parts; off by
                                default, NNC_K_SPLIT=1) */
  const nnc_kdeploy *deploy; /* non-NULL: a deployed inference program (see above) */
} nnc_kprog;

/* Kernels with less work than this (element-operations per step) take
 * about a microsecond whatever their code: the LLVM backend compiles
 * them with quick instruction selection, which fuses no multiply-adds
 * (llvm.c). An update pass is fused into a product only when it has at
 * least this much work, so that both forms contract alike. */
#define NNC_COLD_WORK 16384.0

/* ---- Builders (kernel.c) ---- */
nnc_kexpr *nnc_kx_const(nnc_arena *a, nnc_kt t, double v);
nnc_kexpr *nnc_kx_int(nnc_arena *a, int64_t v); /* i64 constant */
nnc_kexpr *nnc_kx_var(nnc_arena *a, int var);
nnc_kexpr *nnc_kx_scalar(nnc_arena *a, const nnc_kernel *k, int s);
nnc_kexpr *nnc_kx_load(nnc_arena *a, const nnc_kprog *p, int buf, nnc_kexpr *index);
nnc_kexpr *nnc_kx_un(nnc_arena *a, nnc_kop op, nnc_kexpr *x);
nnc_kexpr *nnc_kx_bin(nnc_arena *a, nnc_kop op, nnc_kexpr *x, nnc_kexpr *y);
/* nnc_kx_bin marked exact (float operands; see nnc_kexpr). */
nnc_kexpr *nnc_kx_bin_exact(nnc_arena *a, nnc_kop op, nnc_kexpr *x, nnc_kexpr *y);
nnc_kexpr *nnc_kx_select(nnc_arena *a, nnc_kexpr *c, nnc_kexpr *x, nnc_kexpr *y);
nnc_kexpr *nnc_kx_cast(nnc_arena *a, nnc_kexpr *x, nnc_kt t);
nnc_kexpr *nnc_kx_rand(nnc_arena *a, nnc_kt t, nnc_kexpr *seed, nnc_kexpr *step, nnc_kexpr *index,
                       int64_t stream);
/* i64 helpers that fold constants: x + y, x * c. */
nnc_kexpr *nnc_kx_iadd(nnc_arena *a, nnc_kexpr *x, nnc_kexpr *y);
nnc_kexpr *nnc_kx_imul(nnc_arena *a, nnc_kexpr *x, int64_t c);

nnc_kernel *nnc_kernel_new(nnc_arena *a, const char *name);
int nnc_kernel_var(nnc_kernel *k);
int nnc_kernel_scalar(nnc_arena *a, nnc_kernel *k, nnc_kt t);
/* Appends a loop to blk and returns its body. */
nnc_kblock *nnc_kb_loop(nnc_arena *a, nnc_kblock *blk, int var, int64_t extent);
void nnc_kb_store(nnc_arena *a, nnc_kblock *blk, int buf, nnc_kexpr *index, nnc_kexpr *value);
void nnc_kb_set(nnc_arena *a, nnc_kblock *blk, int scalar, nnc_kexpr *value);
/* Fills k->reads / k->writes from its statements. */
void nnc_kernel_finish(nnc_arena *a, nnc_kernel *k);
void nnc_kgraph_add(nnc_arena *a, nnc_kgraph *g, nnc_kernel *k);

int nnc_kprog_add_buf(nnc_kprog *p, nnc_kbuf_kind kind, int id, nnc_kt t, int64_t numel,
                      const char *name);
/* The program's graphs, NULL where absent: train, eval, grad, update,
 * grad_half (the order of the entry points and of profile counters). */
void nnc_cg_graphs(const nnc_kprog *p, const nnc_kgraph *gs[NNC_CG_NGRAPHS]);
/* The buffer whose memory b uses (b itself unless b is a view). */
int nnc_kbuf_base(const nnc_kprog *p, int b);
/* Structural equality of two expressions. */
bool nnc_kexpr_eq(const nnc_kexpr *x, const nnc_kexpr *y);
/* Whether blocks x and y are the same loops, statements and expressions,
 * each buffer that one of them stores to or loads from matched with the
 * other's by same_buf(ctx, x's, y's), which may record a renaming (plan.c
 * renames eval temporaries, twins.c base buffers). *budget counts the
 * expression nodes still to compare (DAGs are compared as trees): past it,
 * false. With split, the loops of x and y themselves (a split kernel's
 * top level, which runs over the range its caller passes) may differ in
 * extent. */
bool nnc_kblock_same(const nnc_kblock *x, const nnc_kblock *y, bool split,
                     bool (*same_buf)(void *ctx, int x, int y), void *ctx, long *budget);
/* The fields of one expression node, without its buffer and operands: for
 * comparisons that match buffers their own way (plan.c's shared kernels). */
bool nnc_kexpr_same_node(const nnc_kexpr *x, const nnc_kexpr *y);
/* Does e load base buffer `base` (through any view), at an index other
 * than except_at (at any index where except_at is NULL)? */
bool nnc_kexpr_reads(const nnc_kprog *p, const nnc_kexpr *e, int base, const nnc_kexpr *except_at);

/* Text dump for debugging and tests. */
void nnc_kernel_print(FILE *out, const nnc_kprog *p, const nnc_kernel *k);

/* ---- Passes ---- */
/* lower.c: builds p's buffers and kernel lists from m's graphs. */
bool nnc_cg_lower(nnc_kprog *p, const nnc_module *m, char *err, size_t errlen);
/* plan.c: assigns every buffer its arena offset. */
void nnc_cg_plan(nnc_kprog *p);
/* twins.c: sets twin_of and has_twins (see nnc_kernel); returns how many
 * kernels are twins. */
int nnc_cg_find_twins(nnc_kprog *p);
/* k's base buffers, distinct, in the order of its reads then its writes,
 * into out[] (room for nreads + nwrites); returns how many. */
int nnc_cg_kernel_bases(const nnc_kprog *p, const nnc_kernel *k, int *out);

#endif
