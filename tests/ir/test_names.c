/* test_names.c: the name lookups that keep the compiler near-linear in
 * model size (issue 16): the name map (ir/names.c) against a plain list,
 * tensor lookup by name through it, and one PARAM node per tensor and
 * graph, found without a scan of the graph and still right after a pass
 * drops nodes. The timing itself is bench/check_scaling.sh's job. */
#include "ir_test.h"

#include <stdio.h>

#include "ir/names.h"

/* 5000 names (enough to grow the table many times) each map to their
 * index; absent names give -1; putting a name twice keeps the first. */
static void test_name_map(void **state) {
  nnc_arena a;
  nnc_arena_init(&a);
  nnc_name_map m = {0};
  assert_int_equal(nnc_name_map_get(&m, "x"), -1);
  enum { N = 5000 };
  for (int i = 0; i < N; i++) {
    char *k = nnc_arena_printf(&a, "layer%d.w", i);
    assert_int_equal(nnc_name_map_put(&m, &a, k, i), i);
  }
  assert_int_equal(m.n, N);
  assert_true(m.cap >= 2 * N && (m.cap & (m.cap - 1)) == 0);
  for (int i = 0; i < N; i++) {
    char k[32];
    snprintf(k, sizeof k, "layer%d.w", i);
    assert_int_equal(nnc_name_map_get(&m, k), i);
  }
  assert_int_equal(nnc_name_map_put(&m, &a, "layer7.w", 99), 7);
  assert_int_equal(nnc_name_map_get(&m, "layer7.w"), 7);
  assert_int_equal(nnc_name_map_get(&m, "layer5000.w"), -1);
  assert_int_equal(nnc_name_map_get(&m, ""), -1);
  assert_int_equal(nnc_name_map_put(&m, &a, "", 5), 5);
  assert_int_equal(nnc_name_map_get(&m, ""), 5);
  nnc_arena_destroy(&a);
}

static void test_find_tensor(void **state) {
  fixture *fx = *state;
  nnc_shape s = {1, {3}};
  for (int i = 0; i < 300; i++) {
    char name[32];
    snprintf(name, sizeof name, "t%d", i);
    assert_int_equal(nnc_module_add_tensor(fx->m, name, NNC_ROLE_PARAM, NNC_F32, &s, (nnc_init){0},
                                           (nnc_span){0}),
                     i);
  }
  assert_int_equal(nnc_module_find_tensor(fx->m, "t0"), 0);
  assert_int_equal(nnc_module_find_tensor(fx->m, "t299"), 299);
  assert_int_equal(nnc_module_find_tensor(fx->m, "t300"), -1);
  /* A second tensor of a name: lookups keep finding the first. */
  assert_int_equal(
      nnc_module_add_tensor(fx->m, "t5", NNC_ROLE_PARAM, NNC_F32, &s, (nnc_init){0}, (nnc_span){0}),
      300);
  assert_int_equal(nnc_module_find_tensor(fx->m, "t5"), 5);
}

static void test_param_reused(void **state) {
  fixture *fx = *state;
  nnc_shape s = {1, {3}};
  int t[40];
  for (int i = 0; i < 40; i++) {
    char name[32];
    snprintf(name, sizeof name, "p%d", i);
    t[i] = nnc_module_add_tensor(fx->m, name, NNC_ROLE_PARAM, NNC_F32, &s, (nnc_init){0},
                                 (nnc_span){0});
  }
  nnc_node *first[40];
  for (int i = 0; i < 40; i++)
    first[i] = nnc_ir_param(fx->g, t[i]);
  for (int i = 39; i >= 0; i--)
    assert_ptr_equal(nnc_ir_param(fx->g, t[i]), first[i]);
  assert_int_equal(fx->g->nnodes, 40);
  /* Another graph has its own PARAM nodes. */
  nnc_graph *eval = nnc_graph_new(fx->m, "eval");
  assert_ptr_not_equal(nnc_ir_param(eval, t[3]), first[3]);
  assert_int_equal(eval->nnodes, 1);
  /* A pass drops node 3 and renumbers the rest: the others are still
   * found, and p3 gets a new node. */
  for (int i = 3; i < 39; i++) {
    fx->g->nodes[i] = fx->g->nodes[i + 1];
    fx->g->nodes[i]->id = i;
  }
  fx->g->nnodes = 39;
  assert_ptr_equal(nnc_ir_param(fx->g, t[10]), first[10]);
  nnc_node *again = nnc_ir_param(fx->g, t[3]);
  assert_ptr_not_equal(again, first[3]);
  assert_int_equal(again->attr[0], t[3]);
  assert_int_equal(fx->g->nnodes, 40);
  assert_ptr_equal(nnc_ir_param(fx->g, t[3]), again);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_name_map),
      cmocka_unit_test_setup_teardown(test_find_tensor, fx_setup, fx_teardown),
      cmocka_unit_test_setup_teardown(test_param_reused, fx_setup, fx_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
