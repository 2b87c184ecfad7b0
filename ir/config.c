/* config.c: defaults of the training configuration (see config.h). The
 * numbers follow PyTorch's documented defaults so a .nn file that names an
 * optimizer without arguments behaves like torch.optim with none. */
#include "config.h"

#include <string.h>

void nnc_optim_defaults(nnc_optim_config *o, nnc_optim_kind kind) {
  memset(o, 0, sizeof *o);
  o->kind = kind;
  o->beta1 = 0.9;
  o->beta2 = 0.999;
  o->alpha = 0.99;
  o->eps = 1e-8;
  switch (kind) {
  case NNC_OPT_SGD: o->lr = 0.01; break;
  case NNC_OPT_MOMENTUM:
  case NNC_OPT_NESTEROV:
    o->lr = 0.01;
    o->momentum = 0.9;
    break;
  case NNC_OPT_ADAM: o->lr = 0.001; break;
  case NNC_OPT_ADAMW:
    o->lr = 0.001;
    o->weight_decay = 0.01;
    break;
  case NNC_OPT_RMSPROP: o->lr = 0.01; break;
  case NNC_OPT_ADAGRAD:
    o->lr = 0.01;
    o->eps = 1e-10;
    break;
  }
}

void nnc_config_defaults(nnc_train_config *c) {
  memset(c, 0, sizeof *c);
  c->data.scale = 1.0;
  c->data.shuffle = true;
  c->data.train.label_column = -1;
  c->data.test.label_column = -1;
  c->loss = NNC_LOSS_CROSS_ENTROPY;
  c->reduction = NNC_REDUCE_MEAN;
  nnc_optim_defaults(&c->optim, NNC_OPT_SGD);
  c->schedule.kind = NNC_SCHED_CONSTANT;
  c->schedule.unit = NNC_PER_EPOCH;
  c->schedule.gamma = 0.1;
  c->schedule.every = 1;
  c->batch = 32;
  c->epochs = 1;
  c->seed = 0;
  c->metric_accuracy = true;
  c->early_stop.metric = NNC_METRIC_LOSS;
  c->checkpoint.every = 1;
}
