/* print.c: the stable text form of the graph IR (nnc --emit=ir).
 *
 *   tensor @0 mlp.dense1.weight : f32[256,784] param init=he_uniform
 *   graph train {
 *     %0 = input x : f32[64,784]
 *     %5 = matmul(%0, %3) {ta=0, tb=1} : f32[64,256]   # mlp.dense1
 *     output loss = %20
 *     update @0 = %31
 *   }
 *
 * Golden tests compare this text, so it changes only on purpose. */
#include "ir.h"

#include <inttypes.h>

static const char *role_name(nnc_tensor_role r) {
  switch (r) {
  case NNC_ROLE_PARAM: return "param";
  case NNC_ROLE_FROZEN: return "frozen";
  case NNC_ROLE_BUFFER: return "buffer";
  case NNC_ROLE_OPT_STATE: return "state";
  case NNC_ROLE_GRAD: return "grad";
  }
  return "?";
}

static void print_init(FILE *out, const nnc_init *in) {
  switch (in->kind) {
  case NNC_INIT_ZEROS: fputs("zeros", out); return;
  case NNC_INIT_ONES: fputs("ones", out); return;
  case NNC_INIT_CONSTANT: fprintf(out, "constant(%g)", in->a); return;
  case NNC_INIT_NORMAL: fprintf(out, "normal(%g, %g)", in->a, in->b); return;
  case NNC_INIT_UNIFORM: fprintf(out, "uniform(%g, %g)", in->a, in->b); return;
  case NNC_INIT_XAVIER_UNIFORM: fputs("xavier_uniform", out); break;
  case NNC_INIT_XAVIER_NORMAL: fputs("xavier_normal", out); break;
  case NNC_INIT_HE_UNIFORM: fputs("he_uniform", out); break;
  case NNC_INIT_HE_NORMAL: fputs("he_normal", out); break;
  }
  fprintf(out, "(fan_in=%" PRId64 ", fan_out=%" PRId64 ")", in->fan_in, in->fan_out);
}

/* Attributes worth printing, by op; empty for most. */
static void print_attrs(FILE *out, const nnc_node *n) {
  switch (n->op) {
  case NNC_OP_INPUT: fprintf(out, " %s", nnc_input_name((nnc_input_kind)n->attr[0])); return;
  case NNC_OP_PARAM: fprintf(out, " @%" PRId64, n->attr[0]); return;
  case NNC_OP_CONST: fprintf(out, " %.9g", n->fattr); return;
  case NNC_OP_SUM:
  case NNC_OP_RMAX: fprintf(out, " {axes=0x%" PRIx64 "}", n->attr[0]); return;
  case NNC_OP_ARGMAX: fprintf(out, " {axis=%" PRId64 "}", n->attr[0]); return;
  case NNC_OP_TRANSPOSE:
    fputs(" {perm=", out);
    for (int i = 0; i < n->shape.rank; i++)
      fprintf(out, i ? ",%" PRId64 : "%" PRId64, n->attr[i]);
    fputc('}', out);
    return;
  case NNC_OP_MATMUL:
    fprintf(out, " {ta=%" PRId64 ", tb=%" PRId64 "}", n->attr[0], n->attr[1]);
    return;
  case NNC_OP_IM2COL:
  case NNC_OP_COL2IM:
    fprintf(out,
            " {k=%" PRId64 "x%" PRId64 ", stride=%" PRId64 "x%" PRId64 ", pad=%" PRId64 "x%" PRId64,
            n->attr[0], n->attr[1], n->attr[2], n->attr[3], n->attr[4], n->attr[5]);
    if (n->op == NNC_OP_IM2COL && n->fattr != 0) fprintf(out, ", fill=%g", n->fattr);
    fputc('}', out);
    return;
  case NNC_OP_ONEHOT: fprintf(out, " {classes=%" PRId64 "}", n->attr[0]); return;
  case NNC_OP_RAND:
    if (n->attr[1] > 1)
      fprintf(out, " {stream=%" PRId64 ", chunks=%" PRId64 "}", n->attr[0], n->attr[1]);
    else
      fprintf(out, " {stream=%" PRId64 "}", n->attr[0]);
    return;
  case NNC_OP_NEG:
  case NNC_OP_EXP:
  case NNC_OP_LOG:
  case NNC_OP_SQRT:
  case NNC_OP_RSQRT:
  case NNC_OP_RECIP:
  case NNC_OP_TANH:
  case NNC_OP_SIGMOID:
  case NNC_OP_RELU:
  case NNC_OP_ABS:
  case NNC_OP_SIGN:
  case NNC_OP_ERF:
  case NNC_OP_COS:
  case NNC_OP_FLOOR:
  case NNC_OP_ALLREDUCE:
  case NNC_OP_CAST:
  case NNC_OP_ADD:
  case NNC_OP_SUB:
  case NNC_OP_MUL:
  case NNC_OP_DIV:
  case NNC_OP_MAX:
  case NNC_OP_MIN:
  case NNC_OP_POW:
  case NNC_OP_GT:
  case NNC_OP_GE:
  case NNC_OP_EQ:
  case NNC_OP_SELECT:
  case NNC_OP_RESHAPE:
  case NNC_OP_BROADCAST:
  case NNC_OP_GATHER:
  case NNC_OP_SCATTER_ADD:
  case NNC_OP_COUNT_: return;
  }
}

static void print_node(FILE *out, const nnc_node *n) {
  char buf[160];
  fprintf(out, "  %%%d = %s", n->id, nnc_op_name(n->op));
  if (n->nin) {
    fputc('(', out);
    for (int i = 0; i < n->nin; i++)
      fprintf(out, i ? ", %%%d" : "%%%d", n->in[i]->id);
    fputc(')', out);
  }
  print_attrs(out, n);
  fprintf(out, " : %s", nnc_shape_str(buf, sizeof buf, n->dtype, &n->shape));
  if (n->name && n->op != NNC_OP_PARAM) fprintf(out, "   # %s", n->name);
  fputc('\n', out);
}

void nnc_ir_print_graph(FILE *out, const nnc_graph *g) {
  fprintf(out, "graph %s {\n", g->name);
  for (int i = 0; i < g->nnodes; i++)
    print_node(out, g->nodes[i]);
  for (int k = 0; k < NNC_OUT_COUNT_; k++)
    if (g->outputs[k]) fprintf(out, "  output %s = %%%d\n", nnc_output_name(k), g->outputs[k]->id);
  for (int i = 0; i < g->nupdates; i++)
    fprintf(out, "  update @%d %s = %%%d\n", g->updates[i].tensor,
            g->module->tensors[g->updates[i].tensor].name, g->updates[i].value->id);
  fputs("}\n", out);
}

void nnc_ir_print_module(FILE *out, const nnc_module *m) {
  char buf[160];
  fprintf(out, "module %s\n", m->name);
  for (int i = 0; i < m->ntensors; i++) {
    const nnc_tensor *t = &m->tensors[i];
    if (t->role == NNC_ROLE_GRAD) continue; /* data-parallel plumbing, not the model */
    fprintf(out, "tensor @%d %s : %s %s init=", i, t->name,
            nnc_shape_str(buf, sizeof buf, t->dtype, &t->shape), role_name(t->role));
    print_init(out, &t->init);
    if (t->lr_scale != 1.0) fprintf(out, " lr_scale=%g", t->lr_scale);
    fputc('\n', out);
  }
  if (m->train) nnc_ir_print_graph(out, m->train);
  if (m->eval) nnc_ir_print_graph(out, m->eval);
  if (m->grad) nnc_ir_print_graph(out, m->grad);
  if (m->update) nnc_ir_print_graph(out, m->update);
  if (m->grad_half) nnc_ir_print_graph(out, m->grad_half);
}
