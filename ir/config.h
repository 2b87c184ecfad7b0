/* config.h: the typed training configuration.
 *
 * Everything in a .nn file that is not the network itself — data, loss,
 * optimizer, schedule, regularisation, transfer learning, training control —
 * is checked by the front end and lowered into one nnc_train_config, held by
 * the module. Passes read it (optim.c builds the update graph from it) and
 * the driver hands the runtime what it needs. Strings are in the module's
 * arena. Numbers left unset by the user hold the documented defaults, set by
 * nnc_config_defaults().
 */
#ifndef NNC_CONFIG_H
#define NNC_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

enum { NNC_MAX_MILESTONES = 32, NNC_MAX_AUGMENT = 8, NNC_MAX_GROUPS = 16, NNC_MAX_PATTERNS = 16 };

/* ---- Data ---- */
typedef enum nnc_data_format {
  NNC_DATA_NONE,
  NNC_DATA_IDX,
  NNC_DATA_CSV,
  NNC_DATA_NPY
} nnc_data_format;

typedef enum nnc_augment_kind {
  NNC_AUG_RANDOM_CROP, /* a = padding in pixels */
  NNC_AUG_HFLIP,       /* a = probability */
  NNC_AUG_SHIFT,       /* a = max shift in pixels */
  NNC_AUG_NOISE,       /* a = std of added gaussian noise */
} nnc_augment_kind;

typedef struct nnc_augment {
  nnc_augment_kind kind;
  double a;
} nnc_augment;

/* One split of a data set (train or test): where its files are. */
typedef struct nnc_data_split {
  const char *x_path;   /* IDX images / CSV file / .npy features */
  const char *y_path;   /* IDX labels / .npy labels; NULL for CSV */
  int64_t label_column; /* CSV: which column is the label (default: last = -1) */
  bool csv_header;      /* CSV: first row is a header */
} nnc_data_split;

typedef struct nnc_data_config {
  const char *name; /* the `data` declaration's name */
  nnc_data_format format;
  const char *dir; /* idx("dir"): folder holding the four standard files */
  nnc_data_split train, test;
  double scale;        /* multiply features (default 1) */
  bool standardize;    /* subtract mean, divide by std (from the training split) */
  bool shuffle;        /* default true */
  double val_fraction; /* split this fraction off train for validation (0: none) */
  nnc_augment augment[NNC_MAX_AUGMENT];
  int naugment;
} nnc_data_config;

/* ---- Loss ---- */
typedef enum nnc_loss_kind {
  NNC_LOSS_MSE,
  NNC_LOSS_MAE,
  NNC_LOSS_CROSS_ENTROPY,        /* integer labels, from logits */
  NNC_LOSS_BINARY_CROSS_ENTROPY, /* from logits, f32 targets in [0,1] */
} nnc_loss_kind;

typedef enum nnc_reduction { NNC_REDUCE_MEAN, NNC_REDUCE_SUM } nnc_reduction;

/* `precision = f32 | bf16`: with bf16 the operands of every matrix product
 * (forward, input and weight gradients, convolutions as products) are
 * rounded to bf16 as the product reads them and accumulated in f32; all
 * else stays f32 (docs/language.md). */
typedef enum nnc_precision { NNC_PRECISION_F32, NNC_PRECISION_BF16 } nnc_precision;

/* ---- Optimizer ---- */
typedef enum nnc_optim_kind {
  NNC_OPT_SGD,
  NNC_OPT_MOMENTUM,
  NNC_OPT_NESTEROV,
  NNC_OPT_ADAM,
  NNC_OPT_ADAMW,
  NNC_OPT_RMSPROP,
  NNC_OPT_ADAGRAD,
} nnc_optim_kind;

typedef struct nnc_optim_config {
  nnc_optim_kind kind;
  double lr;           /* default 0.01 (sgd family), 0.001 (adam family, rmsprop), 0.01 adagrad */
  double momentum;     /* momentum, nesterov: default 0.9; rmsprop: default 0 */
  double beta1, beta2; /* adam, adamw: 0.9, 0.999 */
  double eps;          /* adam/adamw 1e-8, rmsprop 1e-8, adagrad 1e-10 */
  double alpha;        /* rmsprop smoothing constant: 0.99 */
  double weight_decay; /* coupled L2 in the gradient (sgd..adam, rmsprop, adagrad), decoupled in
                          adamw (default 0.01 there, 0 elsewhere) */
} nnc_optim_config;

/* ---- Learning-rate schedule ---- */
typedef enum nnc_sched_kind {
  NNC_SCHED_CONSTANT,
  NNC_SCHED_STEP,        /* lr * gamma^floor(t / every) */
  NNC_SCHED_MULTISTEP,   /* lr * gamma^(number of milestones <= t) */
  NNC_SCHED_EXPONENTIAL, /* lr * gamma^t */
  NNC_SCHED_COSINE,      /* min_lr + (lr - min_lr) * (1 + cos(pi * t / period)) / 2 */
} nnc_sched_kind;

typedef enum nnc_sched_unit { NNC_PER_EPOCH, NNC_PER_STEP } nnc_sched_unit;

typedef struct nnc_schedule_config {
  nnc_sched_kind kind;
  nnc_sched_unit unit; /* what t counts: epochs (default) or optimizer steps */
  double gamma;        /* step: 0.1, multistep: 0.1, exponential: 0.95 */
  int64_t every;       /* step */
  int64_t milestones[NNC_MAX_MILESTONES];
  int nmilestones;
  int64_t period;      /* cosine: default = epochs (or total steps, per step) */
  double min_lr;       /* cosine: 0 */
  int64_t warmup;      /* linear warmup length in `unit`s, 0: none; lr rises from
                          lr*warmup_start to the scheduled lr, t counted after it */
  double warmup_start; /* fraction of lr at the first warmup step: default 0 */
} nnc_schedule_config;

/* ---- Regularisation and clipping ---- */
typedef struct nnc_regular_config {
  double l1,
      l2; /* penalties added to the loss: l1*sum|w| + l2/2*sum w^2 over weights (not biases) */
  double clip_norm;  /* clip gradients by global L2 norm, 0: off */
  double clip_value; /* clip each gradient element to [-v, v], 0: off */
} nnc_regular_config;

/* ---- Transfer learning ---- */
typedef struct nnc_param_group {
  const char *patterns[NNC_MAX_PATTERNS]; /* glob over tensor names: "cnn.conv*" */
  int npatterns;
  bool frozen;                   /* no gradient, no update, batch-norm statistics fixed */
  double lr_scale;               /* multiplies the schedule's lr (default 1) */
  uint32_t span_begin, span_end; /* where the group was declared */
} nnc_param_group;

typedef struct nnc_load_config {
  const char *path; /* checkpoint (safetensors) to load before training; NULL: none */
  const char *only[NNC_MAX_PATTERNS]; /* load only tensors matching these globs (none: all that
                                         match by name) */
  int nonly;
  const char *strip_prefix; /* rename: drop this prefix from names in the file */
  const char *add_prefix;   /* rename: then add this prefix */
} nnc_load_config;

/* ---- Training control ---- */
typedef enum nnc_metric { NNC_METRIC_LOSS, NNC_METRIC_ACCURACY } nnc_metric;

typedef struct nnc_early_stop_config {
  bool enabled;
  nnc_metric metric; /* watched on the validation set (or the test split if none) */
  int64_t patience;  /* epochs without improvement before stopping */
  double min_delta;
  bool restore_best; /* end on the best epoch's weights (Keras' restore_best_weights) */
} nnc_early_stop_config;

typedef struct nnc_checkpoint_config {
  const char *path; /* where to write; NULL: no checkpoints */
  int64_t every;    /* epochs between checkpoints (default 1) */
  bool keep_best;   /* also keep path's "best" copy by the watched metric */
} nnc_checkpoint_config;

typedef struct nnc_train_config {
  const char *model;    /* name of the model being trained */
  const char *data_ref; /* "fashion" */
  nnc_data_config data;
  bool has_validation;        /* validate = ... given */
  const char *validate_split; /* "test" or "validation" (the part split off by val_fraction) */
  nnc_loss_kind loss;
  nnc_reduction reduction;
  nnc_optim_config optim;
  nnc_schedule_config schedule;
  nnc_regular_config regular;
  nnc_param_group groups[NNC_MAX_GROUPS];
  int ngroups;
  nnc_load_config load;
  int64_t batch;           /* default 32 */
  int64_t epochs;          /* default 1 */
  uint64_t seed;           /* default 0 */
  nnc_precision precision; /* default f32 */
  bool metric_accuracy;    /* report accuracy (default: true for classification losses) */
  nnc_early_stop_config early_stop;
  nnc_checkpoint_config checkpoint;
  const char *resume; /* checkpoint to resume from */
  const char *log;    /* metrics log path (.csv or .jsonl) */
  int64_t log_every;  /* also a step row every N optimizer steps; 0: epoch rows only */
} nnc_train_config;

/* Fills c with the documented defaults (sgd, constant schedule, batch 32...). */
void nnc_config_defaults(nnc_train_config *c);
/* Sets the optimizer's per-kind defaults for every field (call after choosing kind). */
void nnc_optim_defaults(nnc_optim_config *o, nnc_optim_kind kind);

#endif
