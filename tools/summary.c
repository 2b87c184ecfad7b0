/* summary.c: `nnc summary FILE.nn` — the model as Keras' model.summary()
 * shows it, and the memory it trains in.
 *
 * Compiles the file through the front end and the graph passes, then reads
 * the evaluation graph in order: consecutive nodes that the front end tagged
 * with one layer's path (mlp.dense1, mlp.relu) form one row, whose output
 * shape is its last node's (without the batch dimension) and whose
 * parameters are the persistent tensors named under that path. Then the
 * totals, and the static memory plan of the compiled step (lowering and
 * planning only, no machine code): bytes of parameters, frozen weights,
 * buffers and optimizer state, and of what a step uses besides (the batch,
 * activations, gradients and temporaries), all in the one arena that is
 * allocated once before training.
 */
#include <stdio.h>
#include <string.h>

#include "driver.h"
#include "nnc_rt.h"

/* 269322 -> "269,322" */
static const char *grouped(char *buf, size_t size, int64_t v) {
  char digits[32];
  int n = snprintf(digits, sizeof digits, "%lld", (long long)v), o = 0;
  for (int i = 0; i < n && (size_t)o + 2 < size; i++) {
    if (i && digits[i] != '-' && (n - i) % 3 == 0 && digits[i - 1] != '-') buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = 0;
  return buf;
}

/* "[256]", "[8, 14, 14]": the shape without its batch dimension. */
static const char *sample_shape(char *buf, size_t size, const nnc_shape *s) {
  int o = snprintf(buf, size, "[");
  for (int d = 1; d < s->rank && (size_t)o < size; d++)
    o += snprintf(buf + o, size - (size_t)o, "%s%lld", d > 1 ? ", " : "", (long long)s->dim[d]);
  if ((size_t)o < size) snprintf(buf + o, size - (size_t)o, "]");
  return buf;
}

/* Elements of the tensors of these roles named under path ("" for all). */
static int64_t count_under(const nnc_module *m, const char *path, unsigned roles) {
  size_t n = strlen(path);
  int64_t total = 0;
  for (int i = 0; i < m->ntensors; i++) {
    const nnc_tensor *t = &m->tensors[i];
    if (!(roles & 1u << t->role)) continue;
    if (n && (strncmp(t->name, path, n) != 0 || t->name[n] != '.')) continue;
    total += nnc_shape_numel(&t->shape);
  }
  return total;
}

static const unsigned WEIGHTS =
    1u << NNC_ROLE_PARAM | 1u << NNC_ROLE_FROZEN | 1u << NNC_ROLE_BUFFER;

static void print_layers(const nnc_module *m) {
  const nnc_graph *g = m->eval ? m->eval : m->train;
  printf("%-28s %-20s %12s\n", "layer", "output shape", "parameters");
  for (int i = 0; i < g->nnodes; i++) {
    const nnc_node *n = g->nodes[i];
    if (!n->name || n->op == NNC_OP_PARAM || n->op == NNC_OP_INPUT) continue;
    if (!strcmp(n->name, "loss") || !strcmp(n->name, "accuracy")) continue;
    /* The row ends where a node of another layer follows; the weights
     * read in between (PARAM nodes, untagged) do not end it. */
    int last = i, j = i + 1;
    for (; j < g->nnodes; j++) {
      const nnc_node *k = g->nodes[j];
      if (k->op == NNC_OP_PARAM || k->op == NNC_OP_INPUT || !k->name) continue;
      if (strcmp(k->name, n->name) != 0) break;
      last = j;
    }
    char shape[128], count[32];
    printf("%-28s %-20s %12s\n", n->name, sample_shape(shape, sizeof shape, &g->nodes[last]->shape),
           grouped(count, sizeof count, count_under(m, n->name, WEIGHTS)));
    i = last;
  }
}

static void print_totals(const nnc_module *m) {
  char a[32], b[32], c[32];
  int64_t trainable = count_under(m, "", 1u << NNC_ROLE_PARAM);
  int64_t frozen = count_under(m, "", 1u << NNC_ROLE_FROZEN);
  int64_t buffers = count_under(m, "", 1u << NNC_ROLE_BUFFER);
  printf("parameters: %s (trainable %s, frozen %s)", grouped(a, sizeof a, trainable + frozen),
         grouped(b, sizeof b, trainable), grouped(c, sizeof c, frozen));
  if (buffers) printf("; buffers %s", grouped(a, sizeof a, buffers));
  printf("\n");
}

/* The static memory plan from the compiled model's table. */
static void print_memory(const nnc_rt_model *rt) {
  int64_t by_role[4] = {0};
  for (int i = 0; i < rt->ntensors; i++) {
    const nnc_rt_tensor *t = &rt->tensors[i];
    if (t->role >= 0 && t->role < 4)
      by_role[t->role] += nnc_rt_numel(t->rank, t->shape) * (int64_t)sizeof(float);
  }
  int64_t persistent = by_role[0] + by_role[1] + by_role[2] + by_role[3];
  char v[32];
  printf("memory plan (one arena, allocated once; batch %lld):\n", (long long)rt->batch);
  static const char *const names[4] = {"parameters", "frozen weights", "buffers",
                                       "optimizer state"};
  for (int r = 0; r < 4; r++)
    if (by_role[r] || r == 0 || r == 3)
      printf("  %-44s %14s bytes\n", names[r], grouped(v, sizeof v, by_role[r]));
  printf("  %-44s %14s bytes\n", "batch, activations, gradients, temporaries",
         grouped(v, sizeof v, (int64_t)rt->arena_bytes - persistent));
  printf("  %-44s %14s bytes\n", "total per training step (no other allocation)",
         grouped(v, sizeof v, (int64_t)rt->arena_bytes));
}

int cmd_summary(int argc, char **argv) {
  file_first(argc, argv);
  if (argc < 1 || argv[0][0] == '-') {
    fputs("nnc: error: usage: nnc summary FILE.nn [--batch N] [--set SETTING]\n", stderr);
    return 2;
  }
  compile_flags cf;
  if (take_compile_flags(&argc, argv, &cf)) return 2;
  /* What is left: the file, and --batch N (--batch=N). */
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--batch") && i + 1 < argc && cf.fo.batch > 0) {
      i++;
      continue;
    }
    if (!strncmp(argv[i], "--batch=", 8)) continue;
    fprintf(stderr,
            "nnc: error: unexpected argument '%s' (nnc summary FILE.nn [--batch N] "
            "[--set SETTING])\n",
            argv[i]);
    return 2;
  }
  compiled c;
  int status = 1;
  char err[1024];
  /* The layers from the graph as the front end built it (before the
   * passes fold one layer's last reshape into the next). */
  if (!build_frontend(&c, argv[0], &cf.fo)) goto done;
  printf("model %s (%s)\n", c.m->config.model ? c.m->config.model : c.m->name, c.path);
  print_layers(c.m);
  if (!build_passes(&c)) goto done;
  nnc_cg_options co;
  nnc_cg_default_options(&co);
  if (!nnc_cg_compile_table(c.m, &co, &c.prog, err, sizeof err)) {
    fprintf(stderr, "%s: error: %s\n", c.path, err);
    goto done;
  }
  print_totals(c.m);
  print_memory(nnc_cg_model(c.prog));
  status = 0;
done:
  compiled_free(&c);
  return status;
}
