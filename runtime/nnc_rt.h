/* nnc_rt.h: the runtime's public interface and the calling convention of
 * generated code.
 *
 * The runtime is plain C with no LLVM in it: it is linked into `nnc run`
 * (where the kernels come from the JIT) and into standalone `-o train`
 * executables (where they come from an object file). It owns the thread pool,
 * data sets, batching, the RNG, parameter initialisation, the training loop,
 * progress output and (later) checkpoints.
 *
 * Contract with generated code. A compiled model is described by an
 * nnc_rt_model: one byte arena (the static memory plan) holding every tensor
 * — inputs, labels, parameters, gradients, optimizer state, activations —
 * at fixed byte offsets, and entry points that each take the arena base and
 * the thread pool. Generated kernels split work with nnc_rt_parallel(); they
 * never allocate. The runtime writes a batch into the arena at x_off/y_off,
 * sets the scalar inputs (step, epoch, seed), calls train_step or eval_step,
 * and reads per-sample loss and correctness back.
 *
 * Errors: functions return 0 on success and -1 on failure with a message in
 * an nnc_rt_error; nothing here prints to stderr or exits except the training
 * loop's progress output on the stream it is given.
 */
#ifndef NNC_RT_H
#define NNC_RT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { NNC_RT_MAX_RANK = 8 };

typedef struct nnc_rt_error {
  char msg[1024];
} nnc_rt_error;

/* Formats into err (if non-NULL) and returns -1, so callers can write
 * `return nnc_rt_fail(err, "...", ...);`. */
int nnc_rt_fail(nnc_rt_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- Thread pool --------------------------------------------------------
 * A fixed pool of worker threads created once. Every thread in it (and the
 * caller, which takes part) runs with flush-to-zero and denormals-are-zero
 * set in MXCSR. nnc_rt_parallel splits [0, n) into contiguous chunks, at
 * most one per thread, and returns when all are done. The split depends only
 * on n and the thread count; kernels must give results independent of it
 * (each index computed by the same arithmetic wherever it runs). */
typedef struct nnc_rt_pool nnc_rt_pool;
typedef void (*nnc_rt_task)(void *arg, int64_t begin, int64_t end);

nnc_rt_pool *nnc_rt_pool_create(int nthreads, nnc_rt_error *err); /* 0: all cores */
void nnc_rt_pool_destroy(nnc_rt_pool *pool);
int nnc_rt_pool_threads(const nnc_rt_pool *pool);
void nnc_rt_parallel(nnc_rt_pool *pool, nnc_rt_task fn, void *arg, int64_t n);
void nnc_rt_set_ftz_daz(void); /* for the calling thread */

/* ---- RNG ----------------------------------------------------------------
 * A small, fast, seedable generator (xoshiro256** seeded by splitmix64).
 * Its whole state is the struct, so it can be saved in a checkpoint. */
typedef struct nnc_rt_rng {
  uint64_t s[4];
} nnc_rt_rng;

void nnc_rt_rng_seed(nnc_rt_rng *rng, uint64_t seed);
uint64_t nnc_rt_rng_next(nnc_rt_rng *rng);
double nnc_rt_rng_uniform(nnc_rt_rng *rng); /* [0, 1) */
double nnc_rt_rng_normal(nnc_rt_rng *rng);  /* N(0, 1) */
void nnc_rt_rng_shuffle(nnc_rt_rng *rng, int64_t *perm, int64_t n);

/* Counter-based hash used by generated code for dropout masks: a uniform
 * float in [0,1) from (seed, step, index). Pure function, so masks do not
 * depend on thread count or evaluation order. Generated code inlines the
 * same arithmetic; this C version is the reference. */
float nnc_rt_hash_uniform(uint64_t seed, uint64_t step, uint64_t index);

/* ---- Data sets ------------------------------------------------------------
 * A data set in memory: n samples of sample_size f32 features each, and
 * either integer class labels or f32 targets of target_size each. */
typedef struct nnc_rt_dataset {
  int64_t n;
  int rank;                       /* rank of one sample, e.g. 3 for 1x28x28 */
  int64_t shape[NNC_RT_MAX_RANK]; /* shape of one sample */
  int64_t sample_size;            /* product of shape */
  float *x;                       /* n * sample_size */
  int32_t *labels;                /* n class labels, or NULL */
  float *targets;                 /* n * target_size, or NULL */
  int64_t target_size;
  int32_t num_classes; /* 1 + largest label seen, 0 for targets */
} nnc_rt_dataset;

/* Loads an IDX image file and IDX label file (raw or gzip, detected by
 * content). Pixel values are converted to f32 and multiplied by scale.
 * Malformed files give an error naming the file and byte offset. */
int nnc_rt_load_idx(nnc_rt_dataset *ds, const char *images_path, const char *labels_path,
                    float scale, nnc_rt_error *err);
void nnc_rt_dataset_free(nnc_rt_dataset *ds);

/* ---- Compiled model ------------------------------------------------------- */
typedef void (*nnc_rt_entry)(char *arena, nnc_rt_pool *pool);

enum nnc_rt_init_kind {
  NNC_RT_INIT_ZEROS,
  NNC_RT_INIT_ONES,
  NNC_RT_INIT_CONSTANT, /* a */
  NNC_RT_INIT_NORMAL,   /* mean a, std b */
  NNC_RT_INIT_UNIFORM,  /* [a, b) */
  NNC_RT_INIT_XAVIER_UNIFORM,
  NNC_RT_INIT_XAVIER_NORMAL,
  NNC_RT_INIT_HE_UNIFORM, /* kaiming, fan_in, gain sqrt(2) */
  NNC_RT_INIT_HE_NORMAL,
};

enum nnc_rt_tensor_role {
  NNC_RT_PARAM,     /* trainable weight */
  NNC_RT_FROZEN,    /* weight that is not trained */
  NNC_RT_BUFFER,    /* non-trained state, e.g. batch-norm running statistics */
  NNC_RT_OPT_STATE, /* optimizer state, e.g. adam moments */
};

/* A named persistent tensor in the arena (f32). Persistent tensors are
 * initialised by the runtime and saved in checkpoints by name. */
typedef struct nnc_rt_tensor {
  const char *name; /* hierarchical, e.g. "mlp.dense1.weight" */
  int role;         /* enum nnc_rt_tensor_role */
  int rank;
  int64_t shape[NNC_RT_MAX_RANK];
  int64_t offset; /* byte offset in the arena */
  int init;       /* enum nnc_rt_init_kind */
  float init_a, init_b;
  int64_t fan_in, fan_out;
} nnc_rt_tensor;

typedef struct nnc_rt_model {
  size_t arena_bytes;     /* size of the whole static memory plan */
  int64_t batch;          /* compiled batch size */
  int64_t sample_size;    /* f32 elements per input sample */
  int64_t x_off;          /* f32[batch, sample_size] */
  int64_t y_off;          /* i32[batch] labels or f32[batch, target_size] */
  int label_is_class;     /* 1: i32 class labels; 0: f32 targets */
  int64_t target_size;    /* f32 targets per sample, when !label_is_class */
  int64_t num_classes;    /* model output width for classification */
  int64_t loss_vec_off;   /* f32[batch]: per-sample loss, written by both steps */
  int64_t correct_vec_off;/* f32[batch]: 1 if the sample was right, or -1 if none */
  int64_t step_off;       /* f32 scalar input: optimizer step, 1-based */
  int64_t epoch_off;      /* f32 scalar input: epoch, 0-based */
  int64_t seed_off;       /* u32 scalar input: seed for dropout masks */
  int64_t lr_off;         /* f32 scalar output of the schedule: learning rate used */
  int ntensors;
  const nnc_rt_tensor *tensors;
  nnc_rt_entry train_step; /* forward, backward, update for one batch */
  nnc_rt_entry eval_step;  /* forward in evaluation mode */
} nnc_rt_model;

/* Initialises every persistent tensor from its init rule, in table order,
 * drawing from rng (so the same seed gives the same weights). */
void nnc_rt_init_tensors(const nnc_rt_model *m, char *arena, nnc_rt_rng *rng);

/* ---- Training loop ------------------------------------------------------- */
typedef struct nnc_rt_train_opts {
  int64_t epochs;
  uint64_t seed;
  int shuffle;     /* reshuffle the training set each epoch */
  FILE *progress;  /* where the progress line goes (stderr); NULL: silent */
  int interactive; /* 1: redraw one live line (a terminal); 0: plain lines */
} nnc_rt_train_opts;

typedef struct nnc_rt_epoch_stats {
  int64_t epoch;
  double train_loss, train_acc; /* means over the epoch's steps */
  double val_loss, val_acc;     /* NaN when there is no validation set */
  double samples_per_s;
  double seconds;
} nnc_rt_epoch_stats;

typedef void (*nnc_rt_epoch_cb)(void *user, const nnc_rt_epoch_stats *stats);

/* Trains m on train (the last partial batch of each epoch is dropped) and
 * evaluates on val (all samples, the last batch padded and masked) after
 * every epoch. arena must hold arena_bytes, already initialised. */
int nnc_rt_train(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool,
                 const nnc_rt_dataset *train, const nnc_rt_dataset *val,
                 const nnc_rt_train_opts *opts, nnc_rt_epoch_cb cb, void *user,
                 nnc_rt_error *err);

/* Evaluates m on ds with eval_step: mean loss and accuracy over all samples. */
int nnc_rt_evaluate(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool,
                    const nnc_rt_dataset *ds, double *loss, double *acc, nnc_rt_error *err);

#ifdef __cplusplus
}
#endif
#endif
