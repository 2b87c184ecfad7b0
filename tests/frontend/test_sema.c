/* test_sema.c: names, shapes, desugaring and the training configuration,
 * checked on the module the front end builds. */
#include "fe_test.h"

static const char *mlp_src =
    "data fashion = idx(\"fashion-mnist\") { scale = 1/255 }\n"
    "model mlp(x: f32[784]) -> f32[10] {\n"
    "  h = relu(dense(x, 256))\n"
    "  h = dropout(h, 0.2)\n"
    "  h = relu(dense(h, 256, name = \"hidden\"))\n"
    "  h = dropout(h, 0.1)\n"
    "  return dense(h, 10)\n"
    "}\n"
    "train {\n"
    "  model = mlp  data = fashion.train  validate = fashion.test\n"
    "  loss = cross_entropy  optimizer = adam(lr = 2e-3, weight_decay = 0.01)\n"
    "  schedule = warmup(3, cosine(min_lr = 1e-5))\n"
    "  l2 = 1e-4  clip_norm = 5  batch = 64  epochs = 10  seed = 7\n"
    "}\n";

static const nnc_tensor *tensor(const nnc_module *m, const char *name) {
  int i = nnc_module_find_tensor(m, name);
  assert_true(i >= 0);
  return &m->tensors[i];
}

static void verify(const nnc_graph *g) {
  char err[256] = "";
  bool ok = nnc_ir_verify(g, err, sizeof err);
  if (!ok) print_error("%s\n", err);
  assert_true(ok);
}

static void test_mlp_names_and_shapes(void **state) {
  (void)state;
  fe f;
  fe_compile(&f, mlp_src);
  assert_true(f.ok);
  nnc_module *m = f.r.module;
  assert_non_null(m);
  assert_int_equal(m->ntensors, 6);
  const nnc_tensor *w = tensor(m, "mlp.dense1.weight");
  assert_int_equal(w->shape.rank, 2);
  assert_int_equal(w->shape.dim[0], 256);
  assert_int_equal(w->shape.dim[1], 784);
  assert_int_equal(w->role, NNC_ROLE_PARAM);
  assert_int_equal(tensor(m, "mlp.hidden.weight")->shape.dim[1], 256);
  assert_int_equal(tensor(m, "mlp.dense3.bias")->shape.dim[0], 10); /* counting named ones too */
  verify(m->train);
  verify(m->eval);
  assert_int_equal(m->train->inputs[NNC_IN_X]->shape.dim[0], 64);
  assert_int_equal(m->train->inputs[NNC_IN_Y]->dtype, NNC_I32);
  assert_int_equal(m->train->outputs[NNC_OUT_LOSS]->shape.rank, 0);
  assert_int_equal(m->train->outputs[NNC_OUT_LOSS_VEC]->shape.dim[0], 64);
  assert_non_null(m->train->outputs[NNC_OUT_CORRECT_VEC]);
  assert_int_equal(m->train->outputs[NNC_OUT_PRED]->shape.dim[1], 10);
  /* dropout: two random streams in train, none in eval */
  int streams = 0, rand_eval = 0;
  for (int i = 0; i < m->train->nnodes; i++)
    if (m->train->nodes[i]->op == NNC_OP_RAND) streams += 1 + (int)m->train->nodes[i]->attr[0];
  for (int i = 0; i < m->eval->nnodes; i++)
    rand_eval += m->eval->nodes[i]->op == NNC_OP_RAND;
  assert_int_equal(streams, 1 + 2); /* streams 0 and 1 */
  assert_int_equal(rand_eval, 0);
  assert_null(m->eval->inputs[NNC_IN_SEED]);
  fe_free(&f);
}

static void test_mlp_config(void **state) {
  (void)state;
  fe f;
  fe_compile(&f, mlp_src);
  const nnc_train_config *c = &f.r.module->config;
  assert_string_equal(c->model, "mlp");
  assert_string_equal(c->data_ref, "fashion");
  assert_int_equal(c->data.format, NNC_DATA_IDX);
  assert_string_equal(c->data.dir, "fashion-mnist");
  assert_float_equal(c->data.scale, 1.0 / 255, 1e-12);
  assert_true(c->has_validation);
  assert_string_equal(c->validate_split, "test");
  assert_int_equal(c->optim.kind, NNC_OPT_ADAM);
  assert_float_equal(c->optim.lr, 2e-3, 1e-12);
  assert_float_equal(c->optim.beta2, 0.999, 1e-12);
  assert_float_equal(c->optim.weight_decay, 0.01, 1e-12);
  assert_int_equal(c->schedule.kind, NNC_SCHED_COSINE);
  assert_int_equal(c->schedule.warmup, 3);
  assert_int_equal(c->schedule.period, 0); /* the run's length, known when it runs */
  assert_float_equal(c->schedule.min_lr, 1e-5, 1e-12);
  assert_float_equal(c->regular.l2, 1e-4, 1e-12);
  assert_float_equal(c->regular.clip_norm, 5, 1e-12);
  assert_int_equal(c->batch, 64);
  assert_int_equal(c->epochs, 10);
  assert_int_equal(c->seed, 7);
  assert_true(c->metric_accuracy);
  fe_free(&f);
}

static void test_linear_regression(void **state) {
  (void)state;
  fe f;
  fe_compile(
      &f, "data p = csv(\"p.csv\", header = true)\n"
          "model lin(x: f32[1]) -> f32[1] {\n"
          "  param w: f32[1, 1] = normal(0, 0.01)\n  param b: f32[1]\n"
          "  return x @ w + b\n}\n"
          "train { model = lin  data = p.train  loss = mse  optimizer = sgd(0.1)  batch = 16 }\n");
  assert_true(f.ok);
  nnc_module *m = f.r.module;
  const nnc_tensor *w = tensor(m, "lin.w");
  assert_int_equal(w->init.kind, NNC_INIT_NORMAL);
  assert_float_equal(w->init.b, 0.01, 1e-12);
  assert_int_equal(tensor(m, "lin.b")->init.kind, NNC_INIT_ZEROS);
  assert_int_equal(m->train->inputs[NNC_IN_Y]->dtype, NNC_F32);
  assert_int_equal(m->train->inputs[NNC_IN_Y]->shape.dim[1], 1);
  assert_null(m->train->outputs[NNC_OUT_CORRECT_VEC]);
  assert_false(m->config.metric_accuracy);
  assert_true(m->config.data.train.csv_header);
  assert_int_equal(m->config.optim.kind, NNC_OPT_SGD);
  assert_float_equal(m->config.optim.lr, 0.1, 1e-12);
  verify(m->train);
  fe_free(&f);
}

static const char *cnn_src =
    "data f = idx(\"fashion-mnist\")\n"
    "model cnn(x: f32[1, 28, 28]) -> f32[16, 7, 7] {\n"
    "  h = maxpool(relu(batchnorm(conv2d(x, 8, kernel = 3, padding = 1))), 2)\n"
    "  return avgpool(relu(batchnorm(conv2d(h, 16, kernel = 3, padding = \"same\"))), 2)\n"
    "}\n"
    "model net(x: f32[1, 28, 28]) -> f32[10] {\n"
    "  h = flatten(cnn(x))\n"
    "  return dense(h, 10, name = \"head\")\n"
    "}\n"
    "train {\n  model = net  data = f.train  loss = cross_entropy  batch = 8\n"
    "  freeze = [\"net.cnn.*\"]\n"
    "  group head { params = [\"net.head.*\"]  lr_scale = 10 }\n}\n";

static void test_cnn_nested_frozen(void **state) {
  (void)state;
  fe f;
  fe_compile(&f, cnn_src);
  if (!f.ok) {
    char *r = fe_render(&f);
    print_error("%s", r);
    free(r);
  }
  assert_true(f.ok);
  nnc_module *m = f.r.module;
  assert_int_equal(tensor(m, "net.cnn.conv1.weight")->shape.dim[0], 8);
  assert_int_equal(tensor(m, "net.cnn.conv2.weight")->shape.dim[1], 8);
  assert_int_equal(tensor(m, "net.cnn.conv1.weight")->role, NNC_ROLE_FROZEN);
  assert_int_equal(tensor(m, "net.cnn.bn1.gamma")->role, NNC_ROLE_FROZEN);
  assert_int_equal(tensor(m, "net.cnn.bn1.running_mean")->role, NNC_ROLE_BUFFER);
  assert_int_equal(tensor(m, "net.head.weight")->role, NNC_ROLE_PARAM);
  assert_float_equal(tensor(m, "net.head.weight")->lr_scale, 10, 1e-12);
  assert_int_equal(tensor(m, "net.head.weight")->shape.dim[1], 16 * 7 * 7);
  /* frozen batch norm: running statistics, no updates */
  assert_int_equal(m->train->nupdates, 0);
  verify(m->train);
  verify(m->eval);
  fe_free(&f);
}

static void test_batchnorm_updates(void **state) {
  (void)state;
  fe f;
  fe_compile(&f, "data f = idx(\"d\")\nmodel m(x: f32[4]) -> f32[2] {\n"
                 "  return dense(batchnorm(dense(x, 3)), 2)\n}\n"
                 "train { model = m  data = f.train  loss = cross_entropy  batch = 4 }\n");
  assert_true(f.ok);
  nnc_module *m = f.r.module;
  assert_int_equal(m->train->nupdates, 2);
  assert_int_equal(m->eval->nupdates, 0);
  assert_string_equal(m->tensors[m->train->updates[0].tensor].name, "m.bn1.running_mean");
  verify(m->train);
  fe_free(&f);
}

static void test_shape_errors(void **state) {
  (void)state;
  fe f;
  fe_compile(&f, "model m(x: f32[1, 28, 28]) -> f32[10] {\n  h = dense(x, 10)\n  return h\n}\n");
  assert_false(f.ok);
  assert_true(fe_has(&f, "dense expects [batch, features], got f32[32,1,28,28]; insert flatten()"));
  fe_free(&f);
  fe_compile(&f, "model m(x: f32[8]) -> f32[10] {\n  return dense(x, 5)\n}\n");
  assert_true(fe_has(&f, "model 'm' returns f32[32,5], but is declared to return f32[10] "
                         "(f32[32,10] with the batch)"));
  fe_free(&f);
}

static void test_every_layer(void **state) {
  (void)state;
  fe f;
  fe_compile(&f, "data d = npy(x = \"x.npy\", y = \"y.npy\")\n"
                 "model tok(t: i32[12]) -> f32[4] {\n"
                 "  e = embedding(t, 100, 16)\n"
                 "  e = layernorm(e)\n"
                 "  s = mean(e, axis = 0)\n"
                 "  h = leaky_relu(dense(s, 8), 0.1) + gelu(dense(s, 8)) * sigmoid(dense(s, 8))\n"
                 "  h = tanh(h) - softmax(h) + log_softmax(h, axis = -1)\n"
                 "  h = exp(-abs(h)) + sqrt(abs(h)) + log(abs(h) + 1) / 2\n"
                 "  h = reshape(h, [2, 4])\n"
                 "  h = sum(h, axis = 0)\n"
                 "  return dense(h, 4, activation = softmax, init = xavier_uniform)\n"
                 "}\n"
                 "train { model = tok  data = d.train  loss = mse  optimizer = rmsprop "
                 "metrics = [loss] }\n");
  if (!f.ok) {
    char *r = fe_render(&f);
    print_error("%s", r);
    free(r);
  }
  assert_true(f.ok);
  verify(f.r.module->train);
  verify(f.r.module->eval);
  assert_int_equal(tensor(f.r.module, "tok.embedding1.table")->shape.dim[1], 16);
  fe_free(&f);
}

static void test_no_train_block(void **state) {
  (void)state;
  fe f;
  fe_compile(&f, "model m(x: f32[3]) -> f32[3] {\n  return relu(x)\n}\n");
  assert_true(f.ok);
  assert_null(f.r.module);
  fe_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mlp_names_and_shapes), cmocka_unit_test(test_mlp_config),
      cmocka_unit_test(test_linear_regression),    cmocka_unit_test(test_cnn_nested_frozen),
      cmocka_unit_test(test_batchnorm_updates),    cmocka_unit_test(test_shape_errors),
      cmocka_unit_test(test_every_layer),          cmocka_unit_test(test_no_train_block),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
