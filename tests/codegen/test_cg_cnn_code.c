/* test_cg_cnn_code.c: the shape of fashion_cnn's compiled code, which
 * decides its compile time (docs/performance.md, "Compile time"):
 *  - the kernels shared out between the JIT's parts by their shares;
 *  - the direct convolutions' loops kept, not unrolled;
 *  - the direct weight gradients' lane sums in a loop;
 *  - their interior vectors loaded without masks;
 *  - one packing transpose per product, shared by its panels. */
#define NNC_CG_TEST_FRONTEND
#include "cg_test.h"

#include <stdlib.h>
#include <unistd.h>

static bool ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), t = strlen(tail);
  return n >= t && !strcmp(s + n - t, tail);
}

/* The JIT compiles NNC_CG_PARTS parts, whose shares of the work fall from
 * the second to the last (5, 5, 4, ..., 1), by threads that each take the
 * next part when they finish one: the compile ends when the last part
 * does, however the cores' speeds differ. So each part's estimated work
 * is within 15% of its share; the dearest kernel, dense 1's forward
 * product that packs B (~50 ms with its pack function), goes to one of the
 * first two parts; fashion_cnn's two direct weight gradients (~16 ms
 * each) go to different parts, and no part holds more than two of its six
 * products. The shares' check fails with the parts equal (the last parts
 * as large as the first). */
static void test_fashion_cnn_parts_balanced(void **state) {
  fixture *fx = *state;
  nnc_module *m = fx_load_example(&fx->arena, "fashion_cnn.nn");
  if (!m) skip();
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  char err[512];
  nnc_cg_program *p;
  if (!nnc_cg_compile_table(m, &o, &p, err, sizeof err)) fail_msg("table: %s", err);
  enum { P = NNC_CG_PARTS };
  int dw[P] = {0}, products[P] = {0}, packing = -1, n = 0, ndw = 0;
  const char *name;
  double load[P];
  for (int part; (part = nnc_cg_kernel_part(p, P, n, &name, load)) >= 0; n++) {
    assert_true(part < P);
    dw[part] += ends_with(name, ".conv_dw");
    ndw += ends_with(name, ".conv_dw");
    products[part] += strncmp(name, "train.", 6) == 0 && strstr(name, ".matmul") != NULL;
    if (strncmp(name, "train.", 6) == 0 && ends_with(name, ".matmul_bias_relu")) packing = part;
  }
  assert_true(n > 90); /* 100 kernels at the fourteenth stop */
  if (ndw == 0) {      /* no direct convolutions (no AVX-512) */
    nnc_cg_free(p);
    skip();
  }
  assert_int_equal(ndw, 2);
  double total = 0, share[P], shares = 0;
  int nproducts = 0;
  for (int i = 0; i < P; i++) {
    assert_true(dw[i] <= 1);
    assert_true(products[i] <= 2);
    nproducts += products[i];
    total += load[i];
    share[i] = i == 0 ? P - 1 : P - i;
    shares += share[i];
  }
  assert_int_equal(nproducts, 6);
  assert_true(packing == 0 || packing == 1);
  for (int i = 0; i < P; i++) {
    double want = total * share[i] / shares;
    if (load[i] < 0.85 * want || load[i] > 1.15 * want)
      fail_msg("part %d: estimated %.1f against a share of %.1f", i, load[i], want);
  }
  assert_int_equal(nnc_cg_kernel_part(p, P, n, &name, NULL), -1);
  nnc_cg_free(p);
}

/* Lines of the LLVM IR file f that contain `needle` in the body of each
 * function whose name starts with `head` and ends with `tail` (at most
 * nmax functions); returns how many such functions. */
static int lines_in(FILE *f, const char *head, const char *tail, const char *needle, int *count,
                    int nmax) {
  char line[4096];
  int n = 0, cur = -1;
  rewind(f);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, "define ", 7) == 0) {
      char *at = strchr(line, '@'), *end = at ? strchr(at, '(') : NULL;
      cur = -1;
      if (end) {
        *end = 0;
        if (!strncmp(at + 1, head, strlen(head)) && ends_with(at, tail) && n < nmax)
          count[cur = n++] = 0;
      }
    } else if (line[0] == '}') {
      cur = -1;
    } else if (cur >= 0 && strstr(line, needle)) {
      count[cur]++;
    }
  }
  return n;
}

/* Lines that carry !llvm.loop in each function whose name ends with tail. */
static int loops_in(FILE *f, const char *tail, int *count, int nmax) {
  return lines_in(f, "", tail, "!llvm.loop", count, nmax);
}

/* fashion_cnn's `--emit=llvm` output (NULL: the example is not found). */
static FILE *fashion_cnn_llvm(fixture *fx) {
  nnc_module *m = fx_load_example(&fx->arena, "fashion_cnn.nn");
  if (!m) return NULL;
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  return fx_emit_text(m, &o, NNC_CG_LLVM);
}

/* fashion_cnn's direct convolutions keep their loops that run more than
 * once (llvm.loop.unroll.disable): full unrolling never unrolled them and
 * only spent its analysis on them (conv 2's forward pass and input
 * gradient, ~6 ms each of the compile, the same instructions); conv 1's
 * one-trip channel loop is still unrolled away (not marked). */
static void test_fashion_cnn_conv_loops_kept(void **state) {
  FILE *f = fashion_cnn_llvm(*state);
  if (!f) skip();
  int fwd[4], dx[4];
  int nf = loops_in(f, ".conv", fwd, 4), nd = loops_in(f, ".conv_dx", dx, 4);
  bool unroll = false;
  char line[4096];
  rewind(f);
  while (fgets(line, sizeof line, f) && !unroll)
    unroll = strstr(line, "!\"llvm.loop.unroll.disable\"") != NULL;
  fclose(f);
  if (nf == 0) skip(); /* no direct convolutions (no AVX-512) */
  assert_int_equal(nf, 2);
  assert_int_equal(nd, 1);
  assert_true(unroll);
  /* conv 1 (one input channel): the calls and the two tap loops; conv 2
   * and its input gradient: also their channel and row loops */
  assert_int_equal(fwd[0], 3);
  assert_true(fwd[1] >= 6);
  assert_true(dx[0] >= 6);
}

/* In fashion_cnn's two direct weight gradients (conv_dw.c), the lines that
 * contain a and those that contain b, per function (ca[], cb[] of 4);
 * returns 2, or skips where there are none (no AVX-512). */
static int conv_dw_lines(fixture *fx, const char *a, int *ca, const char *b, int *cb) {
  FILE *f = fashion_cnn_llvm(fx);
  if (!f) skip();
  int n = lines_in(f, "nnc.conv_dw.", "", a, ca, 4);
  lines_in(f, "nnc.conv_dw.", "", b, cb, 4);
  fclose(f);
  if (n == 0) skip();
  assert_int_equal(n, 2);
  return n;
}

/* fashion_cnn's direct weight gradients add each accumulator's lanes
 * (and, chunked, its chunks' sums) in a loop over the accumulators: one
 * lane-sum tree of code (log2(16) = 4 halvings, two shuffles each), not
 * one per accumulator (24: 192 shuffles, and 24 chunk trees in one block,
 * about half of the function's instruction selection). */
static void test_fashion_cnn_conv_dw_sums_in_loops(void **state) {
  int shuffles[4], fadds[4];
  int n = conv_dw_lines(*state, "shufflevector", shuffles, "= fadd", fadds);
  for (int i = 0; i < n; i++) {
    assert_int_equal(shuffles[i], 8);
    assert_true(fadds[i] <= 4 + 8); /* the tree's 4, the chunk sums' */
  }
}

/* fashion_cnn's direct weight gradients (conv_dw.c plane mode, items of
 * 8 output channels by one tap row: 8 output-gradient vectors and 3
 * shifted input vectors per vector of positions) load the interior
 * vectors of a plane in a copy of the body of their own, where the
 * output gradient and the unshifted tap are whole: 13 masked loads (the
 * ends' body 11, the interior's 2 shifted taps) and 9 plain ones besides
 * the 24 accumulators and the lane sum's 1. With every vector masked
 * (11 and 25) each took ~6% (conv 2) and ~13% (conv 1) longer. */
static void test_fashion_cnn_conv_dw_interior_unmasked(void **state) {
  int masked[4], plain[4];
  int n = conv_dw_lines(*state, "@llvm.masked.load", masked, "= load <16 x float>", plain);
  for (int i = 0; i < n; i++) {
    assert_int_equal(masked[i], 11 + 2);
    assert_int_equal(plain[i], 24 + 1 + 8 + 1);
  }
}

/* fashion_cnn's dense 1 product packs its two panels of B (48 and 16
 * columns of W stored [N,K]) through one function, PRODUCT.pack16: one
 * 16x16 transpose of code (4 halvings of 16 shuffles), called by both
 * panels, instead of a transpose inlined in each (about a quarter of
 * that product's machine code each). */
static void test_fashion_cnn_pack_shared(void **state) {
  nnc_cg_options o;
  nnc_cg_default_options(&o);
  if (nnc_cg_vector_width(&o) != 16) skip(); /* pack8 or pack4 elsewhere */
  FILE *f = fashion_cnn_llvm(*state);
  if (!f) skip();
  int shuffles[2] = {0, 0}, calls[16];
  int n = lines_in(f, "nnc.gemm.", ".pack16", "shufflevector", shuffles, 2);
  int products = lines_in(f, "nnc.gemm.train.", "", ".pack16(", calls, 16);
  fclose(f);
  assert_int_equal(n, 1);
  assert_int_equal(shuffles[0], 64);
  int total = 0;
  for (int i = 0; i < products; i++)
    total += calls[i];
  assert_int_equal(total, 2);
}

/* Loop strength reduction runs where it pays (compile.c
 * strength_reduce): in the IR pipeline, on the products and the direct
 * convolutions (its induction variables, "lsr.iv", are in the optimised
 * module), and nowhere on the hot loop kernels (instruction selection's
 * pipeline runs none): on fashion_cnn it was a third of their machine
 * code's time for no speed. */
static void test_fashion_cnn_lsr_where_it_pays(void **state) {
  FILE *f = fashion_cnn_llvm(*state);
  if (!f) skip();
  int products[16], convs[4], dw[4], unpool[4], argmax[4];
  int np = lines_in(f, "nnc.gemm.train.", "", "%lsr.iv", products, 16);
  int nc = lines_in(f, "train.", ".conv", "%lsr.iv", convs, 4);
  int nd = lines_in(f, "nnc.conv_dw.", "", "%lsr.iv", dw, 4);
  int nu = lines_in(f, "train.", ".unpool_select", "%lsr.iv", unpool, 4);
  int na = lines_in(f, "train.", ".windowargmax", "%lsr.iv", argmax, 4);
  char line[4096];
  bool marked = false;
  rewind(f);
  while (fgets(line, sizeof line, f) && !marked)
    marked = strstr(line, "nnc-no-lsr") != NULL;
  fclose(f);
  assert_false(marked); /* compile.c's marks (NNC_CG_NO_LSR) are gone once used */
  int reduced = 0;      /* the six products; their pack function has no loop */
  for (int i = 0; i < np; i++)
    reduced += products[i] > 0;
  assert_true(reduced >= 6);
  if (nd == 0) skip(); /* no direct convolutions (no AVX-512) */
  assert_int_equal(nc, 2);
  for (int i = 0; i < nc; i++)
    assert_true(convs[i] > 0);
  for (int i = 0; i < nd; i++)
    assert_true(dw[i] > 0);
  assert_int_equal(nu, 2);
  assert_int_equal(na, 2);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(unpool[i], 0);
    assert_int_equal(argmax[i], 0);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      T(test_fashion_cnn_parts_balanced),        T(test_fashion_cnn_conv_loops_kept),
      T(test_fashion_cnn_conv_dw_sums_in_loops), T(test_fashion_cnn_conv_dw_interior_unmasked),
      T(test_fashion_cnn_pack_shared),           T(test_fashion_cnn_lsr_where_it_pays),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
