/* gemm_plan.c: how a matrix product is tiled, from its shape and the
 * target's vector width alone: which micro-kernel (outer or dot), the
 * register tile, cache blocks. The lowering asks it for the row block it
 * splits threads by; the LLVM emitter (gemm.c) emits the plan. No LLVM
 * here, so the kernel IR can describe products for any backend.
 */
#include "gemm_plan.h"

#define KC_OUTER 512 /* k per block when the outer kernel blocks K */
_Static_assert(KC_OUTER % 16 == 0, "k blocks hold whole vectors and unrolled steps (gemm.c)");

int nnc_cg_lanes(int vector_width) {
  if (vector_width >= 16) return 16;
  if (vector_width >= 8) return 8;
  return 4;
}

static int64_t max64(int64_t a, int64_t b) {
  return a > b ? a : b;
}

int64_t nnc_cg_gemm_chunk_k(const nnc_cg_gemm *g) {
  return g->chunks > 1 ? g->K / g->chunks : g->K;
}

nnc_cg_gemm_plan nnc_cg_gemm_plan_for(const nnc_cg_gemm *g) {
  nnc_cg_gemm_plan p;
  /* A chunked product is planned as one chunk's product (its kind decides
   * the arithmetic); blocking K changes no bits of the outer kernel (a
   * partial sum stored and reloaded continues the same FMA chain). */
  int64_t K = nnc_cg_gemm_chunk_k(g);
  bool chunked = g->chunks > 1;
  p.vl = nnc_cg_lanes(g->vector_width);
  p.regs = p.vl == 16 ? 32 : 16;
  /* Two k steps per iteration: 24 independent FMA chains already hide the
   * latency, and unrolling 4 gave the same speed (MLP, 1 and 2 threads)
   * for 20% more machine code to compile. */
  p.ku = 2;
  /* Long K is cut into blocks of KC_OUTER so a block of B's panel (512 x 48
   * floats, packed when B is stored [N,K]) stays in L2 while the rows
   * sweep it, instead of streaming from memory once per micro-tile.
   * Partial sums go through C, so with accumulate C's old value starts the
   * sum; an activation after an accumulate cannot be split that way. */
  bool can_block = !(g->accumulate && g->act != NNC_CG_ACT_NONE);
  bool blocks = K > 2 * KC_OUTER && can_block;
  /* Dot form needs k contiguous in both operands and enough k that its
   * reduction at the end is cheap (at K = 256 it matches the packed outer
   * kernel and needs no packing per call; narrow N wastes outer lanes).
   * Past 2 * KC_OUTER the packed, blocked outer kernel is faster (L2
   * bandwidth of the unpacked dot loads). */
  bool long_k = K >= 8 * p.vl || (g->N < p.vl && K >= 2 * p.vl);
  /* With many rows (a convolution's cols . W^T: 12544 x 64 x 288) the
   * outer kernel's per-call packing of B is amortised and it is ~20%
   * faster than the dot form. */
  bool many_rows = g->M >= 1024;
  if (!g->trans_a && g->trans_b && long_k && !blocks && !many_rows) {
    p.kind = NNC_CG_GEMM_DOT;
    /* mr*nr accumulators + nr B vectors + one A vector fit the registers. */
    p.mr = p.vl == 16 ? 4 : 3;
    p.nr = p.vl == 16 ? 4 : 3;
    p.ku = 2;
  } else {
    p.kind = NNC_CG_GEMM_OUTER;
    /* 8 x 3 vectors = 24 accumulators + 3 B vectors + a broadcast. */
    p.mr = p.vl == 16 ? 8 : 4;
    p.nr = 3;
  }
  /* A chunked product's blocks lie within its chunks and keep each
   * chunk's partial sums in a stack scratch, one slot of mc x N floats per
   * chunk (gemm.c): blocked only where a slot holds a micro-tile's rows. */
  int64_t slot_rows =
      chunked ? NNC_CG_CHUNK_SCRATCH / (4 * g->chunks * max64(g->N, 1)) / p.mr * p.mr : 0;
  bool fits = !chunked || slot_rows >= p.mr;
  p.kc = p.kind == NNC_CG_GEMM_OUTER && blocks && fits ? KC_OUTER : g->K;
  p.fold = g->accumulate && p.kc < g->K && !chunked;
  /* An unblocked chunked outer product runs its chunks two at a time
   * (gemm.c) in tiles of 6 x 2 vectors: both chunks' 24 accumulators stay
   * in registers, where an 8 x 3 tile's chunk sums were stored and
   * reloaded between chunks. gemm_bench (thread CPU time): the MLP's
   * 4-chunk weight gradients 256x784x64 ~180 -> ~200 GFLOP/s, 256x256x64
   * ~173 -> ~183 (4 x 3 tiles: 200 and 130-158). */
  if (chunked && p.kind == NNC_CG_GEMM_OUTER && p.kc == g->K && p.vl == 16) {
    p.mr = 6;
    p.nr = 2;
  }
  /* Keep a cache block of A (mc rows of kc floats) within ~192 KiB of L2. */
  int64_t rows = (192 * 1024) / (4 * max64(p.kc, 1));
  p.mc = max64(p.mr, rows / p.mr * p.mr);
  if (chunked && p.kc < g->K && g->M > slot_rows) {
    /* the fewest cache blocks the scratch holds, of even size (each one
     * streams B's blocks again) */
    int64_t nb = (g->M + slot_rows - 1) / slot_rows, even = (g->M + nb - 1) / nb;
    p.mc = (even + p.mr - 1) / p.mr * p.mr;
  }
  return p;
}

bool nnc_cg_gemm_bf16_applies(const nnc_cg_gemm *g) {
  /* 512: gemm_bf16.c's k block (BF_KC). Chunked products are f32's. */
  return g->bf16 && g->vector_width >= 16 && g->K > 0 && g->chunks <= 1 &&
         g->act != NNC_CG_ACT_RELU_MASK && /* the lowering fuses masks in f32 programs only */
         !(g->accumulate && g->act != NNC_CG_ACT_NONE && g->K > 512);
}

static int64_t gcd64(int64_t a, int64_t b) {
  while (b) {
    int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

int64_t nnc_cg_gemm_row_block(const nnc_cg_gemm *g) {
  if (nnc_cg_gemm_bf16_applies(g)) return 8; /* gemm_bf16.c's BF_MR */
  int64_t mr = nnc_cg_gemm_plan_for(g).mr, half = g->M / 2;
  /* Two threads take ceil(B/2) and floor(B/2) of the B row blocks: in
   * blocks of a whole tile, an odd B gives one thread a tile more (the
   * MLP's weight gradients, 256 rows in 6-row tiles: 132 rows and 124).
   * Where half of M is not whole tiles, a block dividing both the tile
   * and half of M gives both threads the same rows (128 and 128: 21 tiles
   * and one of 2 rows each). Only the tiles at the ends of a range change
   * (one more remainder tile is compiled); no element's arithmetic depends
   * on its tile. Not for products too small to hold a tile per half. */
  if (g->M % 2 == 0 && half >= mr && half % mr != 0) return gcd64(mr, half);
  return mr;
}

bool nnc_cg_gemm_eq(const nnc_cg_gemm *x, const nnc_cg_gemm *y) {
  return x->M == y->M && x->N == y->N && x->K == y->K && x->trans_a == y->trans_a &&
         x->trans_b == y->trans_b && x->lda == y->lda && x->ldb == y->ldb && x->ldc == y->ldc &&
         x->accumulate == y->accumulate && x->bias == y->bias && x->act == y->act &&
         x->vector_width == y->vector_width && x->all_rows == y->all_rows &&
         x->row_align == y->row_align && x->bf16 == y->bf16 &&
         (x->chunks > 1 ? x->chunks : 1) == (y->chunks > 1 ? y->chunks : 1);
}
