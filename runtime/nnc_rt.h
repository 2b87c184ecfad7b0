/* nnc_rt.h: the runtime's public interface and the calling convention of
 * generated code.
 *
 * The runtime is plain C with no LLVM in it: it is linked into `nnc run`
 * (where the kernels come from the JIT) and into standalone `-o train`
 * executables (where they come from an object file). It owns the thread pool,
 * data sets, batching, the RNG, parameter initialisation, the training loop,
 * progress output, metrics logs and checkpoints.
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
int nnc_rt_fail(nnc_rt_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- The CPU and bf16 (cpu.c) -------------------------------------------
 * Features of the CPU this process runs on, asked once per process
 * (cpuid; AVX-512 only when the OS saves its state). NNC_CPU_DISABLE=
 * avx512f,avx512_bf16,amx_tile,amx_bf16 (any of them) reports those absent,
 * for tests. AMX is reported, not used (docs/language.md, precision). */
typedef struct nnc_rt_cpu {
  int avx512f, avx512_bf16; /* what precision = bf16 code needs */
  int amx_tile, amx_bf16;   /* present in cpuid (no tile permission asked) */
} nnc_rt_cpu;

const nnc_rt_cpu *nnc_rt_cpu_features(void);
/* 0 when the CPU runs precision = bf16 code; else -1 and err names the
 * missing feature. */
int nnc_rt_cpu_check_bf16(nnc_rt_error *err);
/* f32 -> bf16 (the upper 16 bits of an f32) with round to nearest even;
 * a NaN stays NaN (quieted), infinities stay, overflow gives infinity.
 * The rounding the bf16 products apply to their operands. */
uint16_t nnc_rt_bf16_bits(float x);
float nnc_rt_bf16_round(float x); /* the same as a float */

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

/* ---- Communication between the processes of a data-parallel run --------
 * A small interface so that the runtime core knows no communication
 * library: an engine (MPI: comm_mpi.c, library nnc_comm_mpi, built only
 * where CMake finds MPI) fills the struct; nnc_rt_comm_single is the one-
 * process engine. Every collective must be called by every rank in the
 * same order. Functions return 0, or -1 with err set. */
typedef struct nnc_rt_comm {
  int rank, size;
  const char *engine; /* "single", "mpi" */
  void *ctx;
  /* recv[r * bytes ..] = rank r's send[0 .. bytes), on every rank */
  int (*allgather)(void *ctx, const void *send, void *recv, size_t bytes, nnc_rt_error *err);
  int (*broadcast)(void *ctx, void *buf, size_t bytes, int root, nnc_rt_error *err);
  int (*barrier)(void *ctx, nnc_rt_error *err);
  /* recv[r * bytes ..] = rank r's send[rank * bytes ..]; may be NULL (then
   * the all-reduce gathers whole vectors instead of slices) */
  int (*alltoall)(void *ctx, const void *send, void *recv, size_t bytes, nnc_rt_error *err);
  void (*close)(void *ctx); /* at the end of the program; may be NULL */
} nnc_rt_comm;

/* The engine of one process: rank 0 of 1, collectives copy. */
void nnc_rt_comm_single(nnc_rt_comm *c);

/* The number of processes a launcher (mpirun, srun) started this one among,
 * from its environment (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_SIZE...); 1
 * when none did. A program built without MPI refuses to run when it is >1. */
int nnc_rt_comm_launched_size(void);

/* Error agreement: every rank passes whether it failed (its message in
 * err). Returns 0 on every rank when none failed; else -1 on every rank,
 * with err holding the message of the lowest failed rank, prefixed by
 * "rank R: " when R > 0. */
int nnc_rt_comm_agree(const nnc_rt_comm *c, int failed, nnc_rt_error *err);

/* All-reduce of n floats in a fixed order: buf becomes, on every rank, the
 * pairwise-tree sum over ranks ((r0 + r1) + (r2 + r3)) ..., so the bits
 * depend on the values alone, never on timing. With the engine's alltoall
 * each rank sums one slice of the vector over all ranks and the sums are
 * all-gathered (2 (size-1)/size * n floats received per rank); without,
 * every rank gathers every vector ((size-1) * n). scratch holds
 * nnc_rt_comm_scratch_floats(c, n) floats. */
int nnc_rt_comm_allreduce_tree(const nnc_rt_comm *c, float *buf, int64_t n, float *scratch,
                               nnc_rt_error *err);
int64_t nnc_rt_comm_scratch_floats(const nnc_rt_comm *c, int64_t n);

/* What a rank step of synchronised batch statistics calls to sum n floats
 * over the ranks in place (the same tree as nnc_rt_comm_allreduce_tree),
 * as it stands in the arena at nnc_rt_model.comm_off. fn NULL: one
 * process, no call. Errors stay in ctx (the runtime checks them after the
 * step). */
typedef struct nnc_rt_allreduce_hook {
  void (*fn)(void *ctx, float *buf, int64_t n);
  void *ctx;
} nnc_rt_allreduce_hook;

/* Sums count vectors of n floats (vec[i * n ..]) in place into vec[0..n)
 * as a pairwise tree (count a power of two): the order the data-parallel
 * step uses for micro-batches, on one rank and across ranks alike. */
void nnc_rt_tree_sum(float *vec, int64_t count, int64_t n);

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
 * A data set in memory: n samples of sample_size features each, and either
 * integer class labels or f32 targets of target_size each.
 *
 * Features are held as f32 (x; CSV, NPY) or as bytes (u8, x NULL; IDX
 * images, a quarter of the memory). A byte b stands for the feature value
 * byte_value[b] (the byte times the scale: (float)b * scale, exactly the
 * f32 an f32 set would hold), and, once nnc_rt_norm_apply has attached
 * statistics (u8_mean, u8_std), for (byte_value[b] - mean[j]) / std[j]:
 * the arithmetic that standardising an f32 set in place does, performed as
 * each sample is read, so both forms give the model the same floats.
 * nnc_rt_dataset_sample reads one sample of either form. */
typedef struct nnc_rt_dataset {
  int64_t n;
  int rank;                       /* rank of one sample, e.g. 3 for 1x28x28 */
  int64_t shape[NNC_RT_MAX_RANK]; /* shape of one sample */
  int64_t sample_size;            /* product of shape */
  float *x;                       /* n * sample_size f32 features, or NULL */
  uint8_t *u8;                    /* n * sample_size byte features, or NULL */
  float byte_value[256];          /* u8: the value of each byte */
  /* u8: s when byte_value[b] == (float)b * s for every b (as loaded; the
   * sample reader then converts bytes with vector arithmetic instead of
   * looking each one up), else 0. nnc_rt_dataset_bytes_changed sets it. */
  float byte_step;
  /* u8: standardisation applied as samples are read (borrowed from the
   * nnc_rt_norm_stats given to nnc_rt_norm_apply, which must outlive the
   * set), or NULL. */
  const float *u8_mean, *u8_std;
  void *storage; /* u8: the nnc_rt_big_alloc block holding it (freed with the set) */
  size_t storage_len;
  int32_t *labels; /* n class labels, or NULL */
  float *targets;  /* n * target_size, or NULL */
  int64_t target_size;
  int32_t num_classes; /* 1 + largest label seen, 0 for targets */
} nnc_rt_dataset;

/* Loads an IDX image file and IDX label file (raw or gzip, detected by
 * content). Pixels stay bytes (u8), standing for the byte times scale.
 * Malformed files give an error naming the file and byte offset. */
int nnc_rt_load_idx(nnc_rt_dataset *ds, const char *images_path, const char *labels_path,
                    float scale, nnc_rt_error *err);
void nnc_rt_dataset_free(nnc_rt_dataset *ds);
/* Writes the sample_size f32 features of sample i (scaled, standardised)
 * to out. */
void nnc_rt_dataset_sample(const nnc_rt_dataset *ds, int64_t i, float *out);
/* Recomputes ds->byte_step: call it after changing byte_value by hand
 * (the loaders and nnc_rt_dataset_scale do). */
void nnc_rt_dataset_bytes_changed(nnc_rt_dataset *ds);

/* Data paths (session.c), shared by training, evaluation and nnc's
 * int8 calibration (tools/deploy_cmd.c).
 * nnc_rt_find_data finds a data file or folder: a path from the spec is
 * tried in base_dir, /usr/share/datasets, then as given; one from the
 * command line (from_cli) as given, then in /usr/share/datasets. The
 * error lists every place tried. nnc_rt_find_idx_file finds NAME or
 * NAME.gz in an IDX folder. Both give a malloc'd path. */
int nnc_rt_find_data(const char *base_dir, const char *path, int want_dir, int from_cli,
                     const char *what, char **out, nnc_rt_error *err);
int nnc_rt_find_idx_file(const char *dir, const char *name, char **out, nnc_rt_error *err);

/* Loads a CSV file of numbers: one sample per row, one column the label.
 * Errors name the file and the 1-based row (the line in the file) and
 * column: "d.csv: row 3, column 2: expected a number, got 'abc'". */
typedef struct nnc_rt_csv_opts {
  int header;           /* 1: the first row is a header and is skipped */
  int64_t label_column; /* 0-based; negative counts from the end (-1: last) */
  int label_is_class;   /* 1: integer class labels >= 0; 0: an f32 target */
  int32_t num_classes;  /* > 0: class labels must be below it (checked per row) */
} nnc_rt_csv_opts;
int nnc_rt_load_csv(nnc_rt_dataset *ds, const char *path, const nnc_rt_csv_opts *opts,
                    nnc_rt_error *err);

/* Loads NumPy .npy files (format 1.0, 2.0, 3.0; dtypes <f4 <f8 |u1 <i4
 * <i8; C order): features [n, ...] (a sample keeps the trailing shape) and
 * labels [n] (class labels, whole numbers >= 0) or [n] / [n, k] targets.
 * Errors name the file and the byte offset. */
int nnc_rt_load_npy(nnc_rt_dataset *ds, const char *x_path, const char *y_path, int label_is_class,
                    nnc_rt_error *err);

/* Multiplies every feature by scale (a byte set: its byte values). */
void nnc_rt_dataset_scale(nnc_rt_dataset *ds, float scale);

/* Per-feature standardisation statistics (sample_size entries each). */
typedef struct nnc_rt_norm_stats {
  int64_t size;
  float *mean, *std; /* std of a constant feature is stored as 1 */
} nnc_rt_norm_stats;
/* Mean and (population) standard deviation of each feature over ds. The
 * pool (NULL: the calling thread alone) splits the work; the result does
 * not depend on its size. A byte set is counted (a histogram of the 256
 * byte values per feature) and its sums computed exactly. */
int nnc_rt_norm_fit(nnc_rt_norm_stats *stats, const nnc_rt_dataset *ds, nnc_rt_pool *pool,
                    nnc_rt_error *err);
/* x = (x - mean) / std for each feature, split over the pool likewise; a
 * byte set instead keeps a pointer to the statistics (which must outlive
 * it) and is standardised as each sample is read. */
int nnc_rt_norm_apply(const nnc_rt_norm_stats *stats, nnc_rt_dataset *ds, nnc_rt_pool *pool,
                      nnc_rt_error *err);
void nnc_rt_norm_free(nnc_rt_norm_stats *stats);

/* Moves round(fraction * n) samples, chosen by a shuffle seeded with seed,
 * from train into val (a new data set); both keep their original order.
 * 0 < fraction < 1 and both parts must be non-empty. */
int nnc_rt_dataset_split(nnc_rt_dataset *train, nnc_rt_dataset *val, double fraction, uint64_t seed,
                         nnc_rt_error *err);

/* Image augmentation of training batches. Samples are [H, W] or [C, H, W]
 * (leading dimensions count as channels); offsets fill with zeros. */
enum nnc_rt_augment_kind {
  NNC_RT_AUG_RANDOM_CROP, /* a = padding: pad by a zeros, crop back at random */
  NNC_RT_AUG_HFLIP,       /* a = probability of mirroring left-right */
  NNC_RT_AUG_SHIFT,       /* a = largest shift in pixels, each axis */
  NNC_RT_AUG_NOISE,       /* a = std of added gaussian noise */
};
typedef struct nnc_rt_augment {
  int kind; /* enum nnc_rt_augment_kind */
  double a;
} nnc_rt_augment;
/* Checks that the augmentations fit samples of this shape. */
int nnc_rt_augment_check(const nnc_rt_augment *aug, int naug, int rank, const int64_t *shape,
                         nnc_rt_error *err);
/* Augments one sample in place (scratch: sample_size floats). */
void nnc_rt_augment_sample(const nnc_rt_augment *aug, int naug, int rank, const int64_t *shape,
                           float *x, float *scratch, nnc_rt_rng *rng);

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
  NNC_RT_GRAD,      /* data-parallel gradient from grad_step to update_step: not saved */
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
  /* A GRAD tensor that a rank step of synchronised batch statistics
   * computes from sums over every rank: it holds the global batch's
   * gradient on every rank, and is not added across the ranks again. */
  int synced;
} nnc_rt_tensor;

/* Elements of a tensor of this shape (1 for rank 0). */
int64_t nnc_rt_numel(int rank, const int64_t *shape);

typedef struct nnc_rt_model {
  size_t arena_bytes;      /* size of the whole static memory plan */
  int64_t batch;           /* compiled batch size */
  int64_t sample_size;     /* f32 elements per input sample */
  int64_t x_off;           /* f32[batch, sample_size] */
  int64_t y_off;           /* i32[batch] labels or f32[batch, target_size] */
  int label_is_class;      /* 1: i32 class labels; 0: f32 targets */
  int64_t target_size;     /* f32 targets per sample, when !label_is_class */
  int64_t num_classes;     /* model output width for classification */
  int64_t loss_vec_off;    /* f32[batch]: per-sample loss, written by both steps */
  int64_t correct_vec_off; /* f32[batch]: 1 if the sample was right, or -1 if none */
  int64_t step_off;        /* f32 scalar input: optimizer step, 1-based */
  int64_t epoch_off;       /* f32 scalar input: epoch, 0-based */
  int64_t seed_off;        /* u32 scalar input: seed for dropout masks */
  int64_t total_steps_off; /* f32 scalar input: optimizer steps of the whole run (-1: unused) */
  int64_t lr_off;          /* f32 scalar output of the schedule: learning rate used */
  int ntensors;
  const nnc_rt_tensor *tensors;
  nnc_rt_entry train_step; /* forward, backward, update for one batch */
  nnc_rt_entry eval_step;  /* forward in evaluation mode */
  /* Data-parallel training (docs/distributed.md), present when
   * micro_batches > 0 and grad_step is set: the global batch is
   * micro_batches micro-batches of batch / micro_batches samples each (the
   * training step's per-sample results are summed per micro-batch in
   * that order too, with or without grad_step). grad_step runs forward and backward
   * on one micro-batch (its samples at x_off/y_off, its per-sample results
   * in the first rows of loss_vec/correct_vec) and writes its gradients
   * into the GRAD tensors; update_step reads the GRAD tensors (the sum over
   * all micro-batches, put there by the runtime) and applies the
   * optimizer, as the end of train_step does. */
  int64_t micro_batches;
  nnc_rt_entry grad_step;
  nnc_rt_entry update_step;
  /* Synchronised batch statistics (sync_stats = 1: a model with batch
   * norm): grad_step is instead the step of rank r of micro_batches ranks
   * (its one micro-batch at x_off, the global batch's statistics), and
   * grad_half_step (when micro_batches = 4) that of 2 ranks (two
   * micro-batches each). Each sum over the batch used within the step is
   * summed over the ranks, inside the step, by the hook the runtime puts
   * at comm_off (nnc_rt_allreduce_hook; its fn NULL: one process). The
   * buffers come out the same on every rank; GRAD tensors marked synced
   * hold the global gradient already. */
  int sync_stats;
  nnc_rt_entry grad_half_step;
  int64_t comm_off;
  /* Optional (NULL in standalone trainers): `nnc run` generates machine
   * code while the session loads data. The session calls ready(ready_ctx)
   * before the first step; train_step and eval_step are valid only after
   * it returned 0 (-1: err says why). */
  int (*ready)(void *ctx, nnc_rt_error *err);
  void *ready_ctx;
} nnc_rt_model;

/* Initialises every persistent tensor from its init rule, in table order,
 * drawing from rng (so the same seed gives the same weights). */
void nnc_rt_init_tensors(const nnc_rt_model *m, char *arena, nnc_rt_rng *rng);

/* ---- Checkpoints (safetensors) -------------------------------------------
 * A checkpoint is a safetensors file: an 8-byte little-endian header length,
 * a JSON header {"name": {"dtype": "F32", "shape": [..], "data_offsets":
 * [begin, end]}, ..., "__metadata__": {"key": "value", ...}}, then the raw
 * little-endian data. See docs/runtime.md for the metadata keys. */

/* A tensor that lives outside the arena (f32, row-major). */
typedef struct nnc_rt_named_tensor {
  const char *name;
  int rank;
  int64_t shape[NNC_RT_MAX_RANK];
  float *data;
} nnc_rt_named_tensor;

/* Failure injection for the checkpoint writer: before each write-class
 * system call (open, write, fsync, close, rename, directory fsync; `call`
 * counts them from 0 within one save) fail() is asked; a nonzero return is
 * an errno value and the call fails with it as if the system had (ENOSPC:
 * disk full). NULL hooks: no injection. */
typedef struct nnc_rt_io_hooks {
  int (*fail)(void *user, int64_t call, const char *what);
  void *user;
} nnc_rt_io_hooks;

/* Where a training run stands; saved in and restored from checkpoints. */
typedef struct nnc_rt_train_state {
  int64_t epoch;          /* completed epochs */
  int64_t step;           /* completed optimizer steps */
  uint64_t seed;          /* the run's seed */
  nnc_rt_rng shuffle_rng; /* as it stands before epoch `epoch` is shuffled */
  nnc_rt_rng augment_rng;
  double best_metric; /* best watched metric so far (NaN: none) */
  int64_t best_epoch; /* 1-based epoch that reached it, 0: none */
  int64_t wait;       /* epochs since the last improvement */
  double wall_s;      /* wall time of the run so far, seconds */
  char model_hash[128];
} nnc_rt_train_state;

typedef struct nnc_rt_ckpt_save_opts {
  const nnc_rt_train_state *state; /* NULL: weights only, no training position */
  const char *model_hash;          /* NULL: state->model_hash or "" */
  const nnc_rt_named_tensor *extra;
  int nextra;
  const nnc_rt_io_hooks *io;
} nnc_rt_ckpt_save_opts;

/* Writes every persistent tensor of m (params, frozen, buffers, optimizer
 * state) by name, the extra tensors, and the metadata, atomically: the data
 * goes to "path.tmp.<pid>", is flushed and fsynced, renamed over path, and
 * the folder is fsynced. On failure before the rename the temporary file is
 * removed and an existing file at path is untouched. */
int nnc_rt_checkpoint_save(const char *path, const nnc_rt_model *m, const char *arena,
                           const nnc_rt_ckpt_save_opts *opts, nnc_rt_error *err);

typedef struct nnc_rt_ckpt_load_opts {
  int weights_only;        /* 1: params, frozen and buffers only (transfer learning);
                              0: also optimizer state (resume) */
  const char *const *only; /* fnmatch globs over model tensor names; none: all */
  int nonly;
  const char *strip_prefix;   /* renames file names: drop this prefix, */
  const char *add_prefix;     /* then add this one */
  nnc_rt_named_tensor *extra; /* also filled from the file when present */
  int nextra;
  int extra_by_numel; /* 1: an extra tensor matches any shape of as many elements
                         (a data set's sample shape against a model's input) */
  /* Called with each problem line (mismatch, missing, extra) so a driver can
   * print them all; err holds as many as fit. */
  void (*on_problem)(void *user, const char *line);
  void *user;
} nnc_rt_ckpt_load_opts;

/* Loads the selected tensors of m from the safetensors file at path into
 * arena (F32 or F64, converted). Either every selected tensor loads or none
 * does: a selected tensor missing from the file, a shape mismatch, or
 * (with no `only` globs) a file tensor the model lacks is an error naming
 * it; with globs, file tensors outside the selection are ignored. state,
 * when non-NULL, receives the training position from the metadata (zeros
 * and a NaN best_metric when the file has none; has_state says which). */
int nnc_rt_checkpoint_load(const char *path, const nnc_rt_model *m, char *arena,
                           const nnc_rt_ckpt_load_opts *opts, nnc_rt_train_state *state,
                           int *has_state, nnc_rt_error *err);

/* Lists the tensors of a safetensors file on out (nnc show): name, dtype,
 * shape, and the values of small tensors or summary statistics of large
 * ones, plus nnc's training position when the metadata has it. globs
 * (fnmatch, nglobs of them) select tensors; a selection that matches
 * nothing is an error. */
int nnc_rt_checkpoint_show(FILE *out, const char *path, const char *const *globs, int nglobs,
                           nnc_rt_error *err);

/* "run.safetensors" -> "run.best.safetensors"; "run" -> "run.best". */
int nnc_rt_checkpoint_best_path(char *buf, size_t size, const char *path);

/* ---- Metrics log and plot ------------------------------------------------- */
/* Reads a metrics log written by nnc_rt_train and draws its epoch rows as an
 * SVG: loss (and accuracy, when logged) of training and of the set
 * evaluated each epoch against the epoch. val_name says what that set is
 * in titles and legend: "validation" (NULL) or "test". The later row wins
 * where a resumed run repeats an epoch. */
int nnc_rt_log_plot(const char *log_path, const char *svg_path, const char *val_name,
                    nnc_rt_error *err);
/* "run.csv" -> "run.svg" (the extension replaced, or ".svg" appended). */
int nnc_rt_log_svg_path(char *buf, size_t size, const char *log_path);

/* ---- Training loop ------------------------------------------------------- */
enum nnc_rt_metric { NNC_RT_METRIC_LOSS, NNC_RT_METRIC_ACCURACY };

typedef struct nnc_rt_train_result {
  int64_t epochs_run; /* epochs trained by this call */
  int64_t last_epoch; /* completed epochs in total (resumed ones included) */
  int stopped_early;  /* early stopping ended the run */
  double best_metric; /* best watched metric (NaN: none) */
  int64_t best_epoch; /* 1-based */
  /* restore_best: the epoch whose weights the run ended on, 0: none */
  int64_t restored_epoch;
} nnc_rt_train_result;

typedef struct nnc_rt_train_opts {
  int64_t epochs;
  uint64_t seed;
  int shuffle;     /* reshuffle the training set each epoch */
  FILE *progress;  /* where the progress line goes (stderr); NULL: silent */
  int interactive; /* 1: redraw one live line (a terminal); 0: plain lines */
  /* ---- Fields below were added after the first ABI; all default to off. */
  /* Augmentation of each training batch (not of evaluation), in order, from
   * a seeded stream saved in checkpoints. Needs samples of rank >= 2. */
  const nnc_rt_augment *augment;
  int naugment;
  /* The watched metric, for early stopping and keep_best: the evaluation
   * set's (val) metric, or the training metric when val is NULL. */
  int watch_metric; /* enum nnc_rt_metric */
  int early_stop;   /* 1: stop after `patience` epochs without improvement */
  int64_t patience; /* epochs */
  double min_delta; /* an improvement must exceed this */
  /* Metrics log: .csv, or JSON lines for .jsonl/.json; one row per epoch,
   * plus one every log_every_steps steps when > 0. An SVG of the curves is
   * written next to it (run.csv -> run.svg) when training ends. */
  const char *log_path;
  int64_t log_every_steps;
  /* Checkpoints (safetensors): after every checkpoint_every epochs (0 counts
   * as 1) and after the last; keep_best also writes the best epoch so far by
   * the watched metric to the path with ".best" before the extension. */
  const char *checkpoint_path;
  int64_t checkpoint_every;
  int keep_best;
  const char *model_hash; /* stored in checkpoints, checked on resume; NULL: "" */
  /* Tensors outside the arena saved with (and restored from) checkpoints,
   * e.g. the standardisation statistics. */
  const nnc_rt_named_tensor *extra;
  int nextra;
  /* Continue from this checkpoint: weights, optimizer state, step, epoch,
   * RNG streams, early-stopping state. epochs stays the total count. */
  const char *resume_path;
  const nnc_rt_io_hooks *io;   /* checkpoint write-failure injection (tests) */
  nnc_rt_train_result *result; /* filled when non-NULL */
  /* End on the weights (parameters, frozen weights, buffers) of the best
   * epoch by the watched metric, kept in memory, instead of the last
   * epoch's (Keras' restore_best_weights). Checkpoints at checkpoint_path
   * stay the last epoch's, the resumable position; after a resume, only
   * epochs trained since can be restored. */
  int restore_best;
  /* What val is, in messages and the curves' legend: "validation" (NULL)
   * or "test" when the test set is evaluated each epoch. */
  const char *val_name;
  /* Data-parallel training (docs/distributed.md): with data_parallel set
   * the step is m's grad_step over micro-batches and update_step, the
   * micro-batches split over comm's ranks (NULL: one process). Evaluation
   * is split over the ranks too. Every rank must call nnc_rt_train with the
   * same options but for the outputs, which rank 0 alone should name. */
  int data_parallel;
  const nnc_rt_comm *comm;
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
int nnc_rt_train(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool, const nnc_rt_dataset *train,
                 const nnc_rt_dataset *val, const nnc_rt_train_opts *opts, nnc_rt_epoch_cb cb,
                 void *user, nnc_rt_error *err);

/* Evaluates m on ds with eval_step: mean loss and accuracy over all samples. */
int nnc_rt_evaluate(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool, const nnc_rt_dataset *ds,
                    double *loss, double *acc, nnc_rt_error *err);
/* nnc_rt_evaluate that also copies the model's output for every sample to
 * out (f32[ds->n, m->num_classes], the output width: logits or regression
 * values), read from the arena at pred_off after each eval_step (the
 * compiler's offset of the model output; the table does not carry it). */
int nnc_rt_predict(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool, const nnc_rt_dataset *ds,
                   int64_t pred_off, float *out, double *loss, double *acc, nnc_rt_error *err);

/* ---- Training specification (spec.c) ------------------------------------
 * What a training run needs besides the compiled model: data, training
 * control, checkpoints, transfer learning. The compiler writes it as text
 * (embedded in `-o train` executables as one string, so no struct layout is
 * shared between compiler and runtime) and nnc_rt_spec_parse reads it back.
 * One `key = value` per line, `#` comments; values are numbers, bare words
 * or "double-quoted strings" (escapes \" \\ \n); list keys repeat. Every key
 * is documented in docs/runtime.md ("The training specification"). */
enum nnc_rt_data_format { NNC_RT_DATA_NONE, NNC_RT_DATA_IDX, NNC_RT_DATA_CSV, NNC_RT_DATA_NPY };
/* Which set the loop evaluates after every epoch. AUTO: the validation
 * split when data.val_fraction > 0, else the test set. */
enum nnc_rt_validate {
  NNC_RT_VALIDATE_AUTO,
  NNC_RT_VALIDATE_NONE,
  NNC_RT_VALIDATE_TEST,
  NNC_RT_VALIDATE_SPLIT,
};
enum { NNC_RT_SPEC_MAX_LIST = 16 }; /* entries of data.augment, of load.only */

/* The files of one split, as written in the .nn file (NULL: not given). */
typedef struct nnc_rt_spec_files {
  char *x;              /* CSV file / .npy features */
  char *y;              /* .npy labels */
  int header;           /* CSV: the first row is a header */
  int64_t label_column; /* CSV: 0-based, negative from the end */
} nnc_rt_spec_files;

/* A parsed spec. Strings are owned (malloc'd) and freed by
 * nnc_rt_spec_free; unset strings are NULL. */
typedef struct nnc_rt_spec {
  char *origin;   /* where the text came from, for messages */
  char *source;   /* the .nn file it was compiled from */
  char *base_dir; /* the folder relative data paths are looked up in first */
  char *model, *model_hash;
  int format; /* enum nnc_rt_data_format */
  char *dir;  /* IDX: the folder with the four standard files */
  nnc_rt_spec_files train, test;
  int label_is_class;  /* 1: classes, 0: f32 targets, -1: as the model says */
  double scale;        /* 1 */
  int standardize;     /* 0 */
  int shuffle;         /* 1 */
  double val_fraction; /* 0: no validation split */
  nnc_rt_augment augment[NNC_RT_SPEC_MAX_LIST];
  int naugment;
  int validate;        /* enum nnc_rt_validate */
  int precision;       /* 0: f32, 1: bf16 products (the CPU is checked at start) */
  int64_t epochs;      /* 1 */
  uint64_t seed;       /* 0 */
  int metric_accuracy; /* 1: report accuracy (when the model computes it) */
  int early_stop;
  int early_stop_metric; /* enum nnc_rt_metric */
  int64_t patience;      /* 5 */
  double min_delta;
  int restore_best; /* end on the best epoch's weights */
  char *checkpoint_path;
  int64_t checkpoint_every; /* 1 */
  int keep_best;
  char *resume_path;
  char *log_path;
  int64_t log_every_steps;
  char *load_path; /* transfer learning: weights to load before training */
  char *load_only[NNC_RT_SPEC_MAX_LIST];
  int nload_only;
  char *load_strip_prefix, *load_add_prefix;
} nnc_rt_spec;

/* Parses text into s (defaults for what it leaves out). origin names the
 * text in messages: "train.spec:7: unknown key 'epoch'; did you mean
 * 'epochs'?". On failure s holds nothing to free (freeing it is harmless). */
int nnc_rt_spec_parse(nnc_rt_spec *s, const char *text, const char *origin, nnc_rt_error *err);
void nnc_rt_spec_free(nnc_rt_spec *s);

/* ---- The training program (session.c) ------------------------------------
 * Seconds on a monotonic clock from an arbitrary fixed point. A driver reads
 * it first thing in main() and passes it to nnc_rt_main as t_start. */
double nnc_rt_now(void);

/* The first batch of a run's training data, for gradient checks: loads and
 * prepares the data of spec_text as nnc_rt_main would (paths, scale,
 * validation split, standardisation) and writes samples 0 .. batch-1, in
 * file order, into the model's x and y inputs in arena. */
int nnc_rt_first_batch(const nnc_rt_model *m, const char *spec_text, char *arena,
                       nnc_rt_error *err);

/* The whole of a training program, shared by `nnc run` and standalone
 * `-o train` executables: parses the flags in argv[1..argc-1] (argv[0] is
 * not read; flags in docs/runtime.md), parses spec_text, loads and prepares
 * the data, initialises (or transfer-loads) the weights, trains m, evaluates
 * it on the test set and prints the results. prog prefixes messages
 * ("prog: error: ..."). t_start is nnc_rt_now() at process start (for the
 * start-to-first-step time of --report); a negative value means "now".
 * The one runtime function that prints: progress on stderr, results on
 * stdout. Returns the exit status: 0 done, 1 error, 2 bad command line. */
int nnc_rt_main(const nnc_rt_model *m, const char *spec_text, const char *prog, int argc,
                char **argv, double t_start);

/* nnc_rt_main as one rank of a data-parallel run over comm (NULL: one
 * process; a program whose launcher started several processes but that has
 * no comm refuses to run): every rank loads the data and trains its part
 * of each batch; rank 0 alone prints, writes checkpoints and the log
 * (docs/distributed.md). With --data-parallel, or more than one rank, it
 * trains with m's data-parallel step (micro_batches > 0). */
int nnc_rt_main_comm(const nnc_rt_model *m, const char *spec_text, const char *prog, int argc,
                     char **argv, double t_start, const nnc_rt_comm *comm);

/* `nnc eval` (predict = 0) and `nnc predict` (predict = 1): the weights of
 * --weights CKPT on the test set or --data, as docs/runtime.md describes
 * ("Using a trained model"). pred_off is the arena offset of the model's
 * output (the compiler's; -1: unknown, then eval prints no confusion
 * matrix and predict fails). Flags in argv[1..argc-1]; prints like
 * nnc_rt_main and returns the exit status. */
int nnc_rt_eval_main(const nnc_rt_model *m, int64_t pred_off, const char *spec_text,
                     const char *prog, int predict, int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
