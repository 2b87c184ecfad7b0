/* lower_internal.h: the state the lowering passes share (lower.c is the
 * driver; one file per pass), and nothing outside codegen/lower*.c uses.
 *
 *   lower_fuse.c    epilogue chains, which node gets memory, buffers
 *   lower_expr.c    a node's value as a kernel expression; elementwise
 *                   kernels, output copies
 *   lower_reduce.c  sum / rmax / argmax kernels
 *   lower_matmul.c  products: gemm calls with their epilogues, or loops
 *   lower_window.c  im2col, col2im, scatter_add, window sums and maxima
 *                   (max pooling's with the tap of each maximum; its
 *                   gradient unpooled inside the kernel that reads it)
 *   lower_conv.c    convolutions and input gradients as direct kernels
 *   lower_update.c  the update passes (simultaneous assignment)
 */
#ifndef NNC_CG_LOWER_INTERNAL_H
#define NNC_CG_LOWER_INTERNAL_H

#include "kernel.h"

/* What a live node becomes (decided by lower_fuse.c, consumers first). */
typedef enum node_state {
  ST_DEAD,
  ST_LEAF,     /* PARAM / INPUT: memory of its own, no kernel */
  ST_VIEW,     /* RESHAPE of a node with memory */
  ST_INLINE,   /* computed inside its consumers' kernel */
  ST_KERNEL,   /* computed by a kernel of its own into its buffer */
  ST_ABSORBED, /* computed by a later node's kernel (gemm epilogue chain) */
} node_state;

/* A node's expression already generated at one index, in one kernel. */
typedef struct memo {
  int rank;
  nnc_kexpr *idx[NNC_MAX_RANK];
  nnc_kexpr *val;
  struct memo *next;
} memo;

/* A convolution chain computed by one direct kernel (lower_conv.c): `out`
 * gets the kernel; the chain's other nodes are not computed. */
typedef struct nnc_lw_conv {
  const nnc_node *out;
  const nnc_node *in, *w, *bias; /* read from memory; bias NULL: none */
  bool grad;                     /* the input gradient (else the forward) */
  bool cnhw;     /* in is the gradient's NHWC transpose, stored channel-major (CNHW) */
  nnc_kconv geo; /* sizes and weight strides; the rest set by the kernel */
} nnc_lw_conv;

/* Lowering state of one graph. Arrays are indexed by node id. */
typedef struct lower {
  nnc_kprog *p;
  nnc_arena *a;
  const nnc_graph *g;
  nnc_kgraph *kg;
  int nn;
  bool *live, *force, *ident;
  bool *recompute; /* INLINE in every kernel that reads it (see recomputable) */
  int *out_kind;   /* first output kind of a node, or -1 */
  int *is_update;  /* number of updates whose value is the node */
  nnc_node ***users;
  int *nusers;
  node_state *st;
  int *root;        /* INLINE: node id of the kernel node, or nn + group */
  int *buf;         /* buffer of a node with memory, else -1 */
  nnc_node **final; /* ABSORBED chain: the node whose kernel computes it */
  nnc_node **subst; /* an ABSORBED node its readers read instead (see match_epilogues) */
  bool *trans;      /* stored last axis major, as [dim[r-1], the rest]: a 2-D node
                       transposed (see choose_layouts) */
  /* Max pooling in training (nnc_lw_match_window_argmax): index_of[rmax]
   * is the i32 cast of the argmax of the same window columns, which the
   * rmax's kernel stores beside the maximum; saved_by[] of that cast, of
   * the argmax and of the views between them is the rmax (the cast keeps
   * its buffer and gets no kernel of its own; the others are dead). */
  const nnc_node **index_of, **saved_by;
  /* Max pooling's gradient folded into its reader (nnc_lw_match_unpool_readers):
   * unpool_of[s] is the unpooling col2im that elementwise node s reads (through
   * views) at its own index; s's kernel computes the col2im's cells itself, and
   * the col2im and the views get no memory. */
  const nnc_node **unpool_of;
  /* Two sums in lane accumulators over the same shape and axes that read a
   * stored node in common (nnc_lw_match_lane_twins): lanes_with[a] is the
   * sum b that a's kernel computes too, saved_by[b] is a. */
  const nnc_node **lanes_with;
  const nnc_lw_conv **conv; /* the direct convolution a node belongs to, or NULL */
  /* A convolution's weight gradient computed directly
   * (nnc_lw_match_conv_dw): conv_dw_in[product] = {dy, x}, the NCHW
   * operands it reads instead of its own; NULL for other nodes. */
  const nnc_node *(*conv_dw_in)[2];
  int *group_of; /* update index -> group */
  int ngroups;
  int nmade; /* kernels created so far: their names' numbers */
  char *err;
  size_t errlen;
} lower;

/* Expression building state of one kernel. */
typedef struct kgen {
  nnc_kernel *k;
  const nnc_node *self; /* the node this kernel computes (generated, not loaded) */
  memo **memo;          /* [nn] */
  nnc_kexpr *zero;
} kgen;

/* How the operands of a node with memory are made to have memory too. */
typedef enum nnc_lw_force {
  FORCE_NONE,   /* read at the reader's own index, or through kernels of their own */
  FORCE_ALL,    /* every operand read from memory */
  FORCE_TABLE,  /* gather: the table from memory, the indices unless cheap */
  FORCE_COSTLY, /* every operand that is not a constant or a view of memory */
} nnc_lw_force;

/* An op's traits for the lowering (lower_fuse.c spells them out per op). */
typedef struct nnc_lw_op_traits {
  bool elementwise;   /* computed from its operands at its own (broadcast) index */
  bool one_op;        /* one vector instruction per element: worth recomputing */
  bool index_map;     /* reads its operand through an index map only */
  nnc_lw_force force; /* of its operands */
  nnc_kop kop;        /* elementwise unary/binary/cmp: its kernel op; else NNC_K_COUNT_ */
} nnc_lw_op_traits;

nnc_lw_op_traits nnc_lw_traits(nnc_op op);

/* ---- lower.c ---- */
/* Sets L->err to "codegen: msg (graph, node)"; returns false. */
bool nnc_lw_fail(lower *L, const char *msg, const nnc_node *n);
/* Adds user to n's readers (once). */
void nnc_lw_add_user(lower *L, const nnc_node *n, nnc_node *user);

/* ---- lower_fuse.c: the passes that decide, in order ---- */
/* Marks matmul -> bias add -> ReLU chains that become one gemm call. */
void nnc_lw_match_epilogues(lower *L);
/* Gives every live node its state (L->st), consumers first. */
void nnc_lw_decide(lower *L);
/* Picks the nodes stored last axis major (L->trans): a convolution's
 * im2col columns read only by products, a product read only by col2im,
 * and an NCHW -> NHWC transpose read only by products (through a view), so
 * that the window kernels and the transpose walk memory contiguously along
 * image rows. */
void nnc_lw_choose_layouts(lower *L);
/* Gives every node with memory its buffer (L->buf). */
bool nnc_lw_assign_buffers(lower *L);
/* The source of a row-vector bias [1, N] of a product, or NULL. */
nnc_node *nnc_lw_row_bias_source(nnc_node *b, int64_t N);
/* The buffer of output slot k for node n (made on first use); -1 when the
 * graphs disagree on its shape. */
int nnc_lw_output_slot(lower *L, nnc_output_kind k, const nnc_node *n);

/* ---- lower_expr.c: expressions and the kernels built from them ---- */
/* Where node n's element at idx is in its buffer: the flat index, or the
 * last axis major one when n is stored so (L->trans). */
nnc_kexpr *nnc_lw_at(lower *L, const nnc_node *n, nnc_kexpr **idx);
/* The flat element index of coordinates idx in shape s. */
nnc_kexpr *nnc_lw_linear(lower *L, nnc_kexpr **idx, const nnc_shape *s);
/* Node n's value at idx in G's kernel: loaded if it has memory, else
 * generated from its op (memoised per index). */
nnc_kexpr *nnc_lw_gen(lower *L, kgen *G, const nnc_node *n, nnc_kexpr **idx);
/* Makes nnc_lw_gen of node n (one without memory) at exactly the index
 * expressions idx give v in G's kernel. */
void nnc_lw_memo_put(lower *L, kgen *G, const nnc_node *n, nnc_kexpr **idx, nnc_kexpr *v);
nnc_kexpr *nnc_lw_fconst(lower *L, const nnc_node *n, double v); /* of n's type */
/* Whether reshape n's readers find its operand's coordinates without a
 * division: the axes before the trailing ones both shapes share are at
 * most one axis of the operand. */
bool nnc_lw_reshape_cheap(const nnc_node *n);
nnc_kexpr *nnc_lw_clamp_index(lower *L, nnc_kexpr *i, int64_t hi);
nnc_kexpr *nnc_lw_as_index(lower *L, nnc_kexpr *e);
/* A new kernel named after `what` (and self, the node it computes, if any). */
nnc_kernel *nnc_lw_new_kernel(lower *L, kgen *G, const char *what, const nnc_node *self);
/* G set up to generate k's expressions (done by nnc_lw_new_kernel). */
void nnc_lw_gen_begin(lower *L, kgen *G, nnc_kernel *k, const nnc_node *self);
void nnc_lw_add_kernel(lower *L, nnc_kernel *k);
nnc_kblock *nnc_lw_nest(lower *L, nnc_kernel *k, const nnc_shape *s, nnc_kexpr **idx);
/* A loop per axis of s before a, one over the product of the rest; idx
 * gets coordinates of shape s that read an operand with s's dims on axes
 * a.. at its flat index there ([.., 0, ..., 0, j]): right for operands
 * whose dims on those axes are all s's or all one. */
nnc_kblock *nnc_lw_merged_nest(lower *L, nnc_kernel *k, const nnc_shape *s, int a, nnc_kexpr **idx);
double nnc_lw_expr_cost(const nnc_kexpr *e);
void nnc_lw_kernel_elementwise(lower *L, const nnc_node *n);
void nnc_lw_kernel_copy(lower *L, const char *what, int dst, int src, int64_t n);
/* Copies into output slots that no kernel wrote directly. */
bool nnc_lw_output_copies(lower *L);

/* ---- one kernel per op (lower_reduce.c, lower_matmul.c, lower_window.c) ---- */
void nnc_lw_kernel_reduce(lower *L, const nnc_node *n);
/* Whether sum / rmax n's shape takes the lane accumulators (its innermost
 * axis and others reduced, the innermost at least a vector long), unless
 * its operand is contiguous along a kept axis. */
bool nnc_lw_reduces_in_lanes(const nnc_node *n);
/* Pairs of lane sums that one kernel computes (lanes_with): their operands'
 * memory read once. After the buffers are assigned. */
void nnc_lw_match_lane_twins(lower *L);
void nnc_lw_kernel_argmax(lower *L, const nnc_node *n);
/* argmax's running first maximum in kernel k: scalars *best (type t, from
 * -inf) and *at (type ti, from 0) set at the top of block b; then each
 * step keeps value v and its index where v > best (the first of equal
 * values stays; NaN never wins). */
void nnc_lw_first_max_init(lower *L, nnc_kernel *k, nnc_kblock *b, nnc_kt t, nnc_kt ti, int *best,
                           int *at);
void nnc_lw_first_max_step(lower *L, nnc_kernel *k, nnc_kblock *b, int best, int at, nnc_kexpr *v,
                           nnc_kexpr *index);
/* The product whose epilogue chain ends at n (n itself, or its bias add or ReLU). */
void nnc_lw_kernel_matmul(lower *L, const nnc_node *n);
void nnc_lw_kernel_im2col(lower *L, const nnc_node *n);
void nnc_lw_kernel_col2im(lower *L, const nnc_node *n);
void nnc_lw_kernel_scatter_add(lower *L, const nnc_node *n);
/* Whether im2col n is read only by sums or maxima over its window axis,
 * which then read the image through the window (no columns in memory). */
bool nnc_lw_window_reduced(lower *L, const nnc_node *n);
/* sum or rmax over the window axis of such an im2col (and the tap of the
 * first maximum, where index_of says so). */
void nnc_lw_kernel_window_reduce(lower *L, const nnc_node *n);
/* Before deciding: max pooling's training pattern, the rmax and argmax of
 * the same window columns (the argmax read only as i32 by its gradient),
 * becomes one kernel that stores the maximum and its tap (index_of,
 * saved_by), so the columns are neither written nor read. */
void nnc_lw_match_window_argmax(lower *L);
/* After the layouts: an unpooling col2im whose windows tile the image, read
 * (through views) only by an elementwise kernel node at that node's own
 * index (ReLU's backward select), is computed inside that node's kernel
 * (unpool_of): the routed gradient is never stored and read back. */
void nnc_lw_match_unpool_readers(lower *L);
/* The kernel of an elementwise node s with unpool_of[s] set. */
void nnc_lw_kernel_unpool_into(lower *L, const nnc_node *s);

/* ---- lower_conv.c ---- */
/* Before deciding: the stride-1 convolution chains (forward, input
 * gradient) that become direct kernels (L->conv). */
void nnc_lw_match_conv(lower *L);
/* The direct kernel of the chain that ends at n. */
void nnc_lw_kernel_conv(lower *L, const nnc_node *n);
/* Whether n is an inner node of a direct convolution's chain (computed
 * inside its kernel, so not a reader of its operands). */
bool nnc_lw_conv_absorbs(const lower *L, const nnc_node *n);

/* ---- lower_conv_dw.c ---- */
/* After the direct convolutions: a convolution's weight-gradient product
 * dy_nhwcᵀ · im2col(x) that the direct kernel computes reads dy and x
 * (NCHW) instead, so the transpose and (unless read otherwise) the
 * columns are not made. */
void nnc_lw_match_conv_dw(lower *L);
/* Whether match_conv_dw takes product mm (its rule, as things stand). */
bool nnc_lw_conv_dw_takes(const lower *L, const nnc_node *mm);
/* The direct weight-gradient kernel of such a product n. */
void nnc_lw_kernel_conv_dw(lower *L, const nnc_node *n);

/* ---- lower_update.c ---- */
/* Groups updates by shape (one pass per group); before deciding. */
void nnc_lw_assign_groups(lower *L);
/* The update passes and their copies back; last. */
bool nnc_lw_update_passes(lower *L);

/* The node a reader of n reads in its place: n, or where match_epilogues
 * absorbed n (relu_with_mask), what it was substituted by, to the end of
 * the chain. */
static inline const nnc_node *nnc_lw_substituted(const lower *L, const nnc_node *n) {
  while (L->subst[n->id])
    n = L->subst[n->id];
  return n;
}

#endif
