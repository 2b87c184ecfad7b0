/* rt_internal.h: declarations shared between runtime files and not part of
 * the public interface in nnc_rt.h: the monotonic clock and the progress
 * display used by the training loop (progress.c), the small JSON parser
 * (json.c) read by the checkpoint loader and the log plotter, the safetensors
 * file layer (safetensors.c) and the metrics log writer (metrics_log.c).
 * Nothing outside runtime/ (and its tests) should include this. */
#ifndef NNC_RT_INTERNAL_H
#define NNC_RT_INTERNAL_H

#include "nnc_rt.h"

#include <stdarg.h>

/* nnc_rt_now(), the monotonic clock, is public (nnc_rt.h): drivers pass
 * its reading at process start to nnc_rt_main. */

/* Levenshtein distance of two short strings (99 when either has 63 or more
 * characters); for "did you mean" suggestions (spec.c, session.c). */
size_t nnc_rt_edit_distance(const char *a, const char *b);
/* The one of n flag names within 2 edits of arg, or NULL (did you mean). */
const char *nnc_rt_closest_flag(const char *arg, const char *const *names, int n);

/* Throughput: samples / seconds, 0 when no time has passed. */
double nnc_rt_samples_per_s(int64_t samples, double seconds);

/* The live progress display of one training run. All fields are owned by
 * progress.c; the training loop only calls the functions below. No function
 * allocates memory. */
typedef struct nnc_rt_progress {
  FILE *out;       /* NULL: silent */
  int interactive; /* 1: redraw one line with '\r'; 0: one line per epoch */
  int has_acc;     /* the model reports per-sample correctness */
  int64_t epochs, steps_per_epoch, batch;
  int64_t epoch;      /* 0-based, the epoch being run */
  double epoch_start; /* nnc_rt_now() when the epoch began */
  double last_draw;   /* nnc_rt_now() of the last redraw */
  int line_open;      /* a live line is on screen and must be cleared */
} nnc_rt_progress;

void nnc_rt_progress_init(nnc_rt_progress *p, FILE *out, int interactive, int64_t epochs,
                          int64_t steps_per_epoch, int64_t batch, int has_acc);
void nnc_rt_progress_begin_epoch(nnc_rt_progress *p, int64_t epoch);
/* After step `step` (1-based within the epoch) with the epoch's running sums
 * of per-sample loss and correctness over `samples` samples. Redraws at most
 * about ten times per second, and only when interactive. */
void nnc_rt_progress_step(nnc_rt_progress *p, int64_t step, double loss_sum, double correct_sum,
                          int64_t samples);
/* Says where a resumed run continues: "resumed from PATH: epoch E of N done
 * (step S)", and that patience starts over when the saved run had stopped
 * early. */
void nnc_rt_progress_resumed(const nnc_rt_progress *p, const char *path, int64_t epoch,
                             int64_t step, int patience_restarted);
/* Clears the live line and prints the epoch summary line. */
void nnc_rt_progress_end_epoch(nnc_rt_progress *p, const nnc_rt_epoch_stats *s);
/* Formats the summary line of s (no newline) into buf. */
void nnc_rt_progress_format_epoch(char *buf, size_t size, const nnc_rt_progress *p,
                                  const nnc_rt_epoch_stats *s);

/* ---- Data paths: nnc_rt_find_data, nnc_rt_find_idx_file (nnc_rt.h) ---- */

/* A bad command line (session.c): "prog: error: <message> (see 'prog
 * --help')" on stderr; returns exit status 2. */
int nnc_rt_vusage_error(const char *prog, const char *fmt, va_list ap);

/* ---- JSON (json.c) ----
 * A parsed JSON value. Numbers keep their double value and, when written as
 * an integer that fits, the exact int64. Every value records the byte
 * offset where it starts (text offset + the base given to the parser). */
typedef enum nnc_rt_json_kind {
  NNC_RT_JSON_NULL,
  NNC_RT_JSON_BOOL,
  NNC_RT_JSON_NUMBER,
  NNC_RT_JSON_STRING,
  NNC_RT_JSON_ARRAY,
  NNC_RT_JSON_OBJECT,
} nnc_rt_json_kind;

typedef struct nnc_rt_json {
  nnc_rt_json_kind kind;
  int64_t offset;
  int boolean;
  double number;
  int is_integer; /* an integer literal within int64 */
  int64_t integer;
  char *string;              /* STRING: decoded UTF-8, no NUL inside */
  int n;                     /* ARRAY, OBJECT: number of members */
  struct nnc_rt_json *items; /* ARRAY, OBJECT: the values */
  char **keys;               /* OBJECT: the keys */
} nnc_rt_json;

/* Parses exactly one JSON value filling text[0, len) (whitespace around it
 * allowed). Errors read "path: byte N: ..." with N = base + offset. */
int nnc_rt_json_parse(nnc_rt_json *v, const char *text, size_t len, int64_t base, const char *path,
                      nnc_rt_error *err);
void nnc_rt_json_free(nnc_rt_json *v);
/* The member named key of an object, or NULL. */
const nnc_rt_json *nnc_rt_json_get(const nnc_rt_json *obj, const char *key);
/* Appends s as a JSON string literal (quotes and escapes) to buf; returns
 * the length the full result would have, like snprintf. */
size_t nnc_rt_json_quote(char *buf, size_t size, size_t len, const char *s);

/* ---- Whole files ---- */
/* Reads the whole file into a malloc'd buffer (NUL-terminated). Only a
 * regular file is read (a folder, /dev/zero or a pipe is an error), and the
 * buffer is sized from the file's size, not grown while reading. */
int nnc_rt_read_file(const char *path, char **data, size_t *len, nnc_rt_error *err);

/* ---- Large buffers and mapped files (bigmem.c) ----
 * nnc_rt_big_alloc: zeroed memory for a data set's bytes or the arena; from
 * NNC_RT_BIG_PAGE bytes on, aligned to it and in huge pages where the
 * kernel grants them (page faults are the cost of a fresh buffer). Freed
 * by nnc_rt_big_free with the same size; NULL when out of memory.
 * nnc_rt_map_file: the whole regular file, read-only and populated (errors
 * as nnc_rt_read_file's); an empty file gives data NULL, len 0. */
#define NNC_RT_BIG_PAGE ((size_t)2 << 20)
void *nnc_rt_big_alloc(size_t bytes);
void nnc_rt_big_free(void *p, size_t bytes);
int nnc_rt_map_file(const char *path, const unsigned char **data, size_t *len, nnc_rt_error *err);
void nnc_rt_unmap_file(const unsigned char *data, size_t len);

/* ---- Sizes read from files ----
 * Every count a reader computes from a file's header goes through these:
 * the product of non-negative factors, or -1 when a factor is negative or
 * the product passes NNC_RT_MAX_FILE_ELEMENTS (2^40; no data set or
 * checkpoint read here is that large, so a header claiming it is damaged).
 * Nothing is multiplied unchecked, so no count wraps. */
#define NNC_RT_MAX_FILE_ELEMENTS (INT64_C(1) << 40)
int64_t nnc_rt_checked_mul(int64_t a, int64_t b);
/* The element count of a shape read from a file, checked as above. */
int64_t nnc_rt_checked_numel(int rank, const int64_t *shape);

/* The largest training position a checkpoint may hold: epochs as the
 * --epochs flag allows, global steps within f32's exact integers (the
 * model reads the step as f32). */
#define NNC_RT_MAX_EPOCHS INT64_C(1000000000)
#define NNC_RT_MAX_STEPS  (INT64_C(1) << 53)

/* ---- Safetensors files (safetensors.c) ---- */
typedef enum nnc_rt_st_dtype { NNC_RT_ST_F32, NNC_RT_ST_F64, NNC_RT_ST_OTHER } nnc_rt_st_dtype;

typedef struct nnc_rt_st_entry {
  const char *name; /* points into the parsed header */
  nnc_rt_st_dtype dtype;
  const char *dtype_name;
  int rank;
  int64_t shape[NNC_RT_MAX_RANK];
  int64_t begin, end; /* byte range in the data section */
} nnc_rt_st_entry;

typedef struct nnc_rt_st_file {
  char *bytes; /* the whole file */
  size_t len;
  int64_t data_start; /* 8 + header length */
  nnc_rt_json header;
  nnc_rt_st_entry *entries;
  int nentries;
  const nnc_rt_json *metadata; /* the __metadata__ object, or NULL */
} nnc_rt_st_file;

/* Reads and validates a safetensors file: header length limits, JSON
 * syntax, each entry's dtype/shape/offsets against the data section. */
int nnc_rt_st_read(nnc_rt_st_file *f, const char *path, nnc_rt_error *err);
void nnc_rt_st_free(nnc_rt_st_file *f);
const nnc_rt_st_entry *nnc_rt_st_find(const nnc_rt_st_file *f, const char *name);
/* A metadata string, or NULL. */
const char *nnc_rt_st_meta(const nnc_rt_st_file *f, const char *key);
/* The index of the first element of an F32 or F64 entry that is NaN or
 * infinite (also once converted to f32), with its value; -1 if none. */
int64_t nnc_rt_st_first_nonfinite(const nnc_rt_st_file *f, const nnc_rt_st_entry *e, double *value);
/* Copies an entry's data into dst as f32 (F32 copied, F64 converted). */
void nnc_rt_st_read_f32(const nnc_rt_st_file *f, const nnc_rt_st_entry *e, float *dst);

/* One tensor to write. */
typedef struct nnc_rt_st_out {
  const char *name;
  int rank;
  const int64_t *shape;
  const float *data;
} nnc_rt_st_out;

/* Writes tensors and metadata (nmeta key/value pairs) atomically to path
 * (temporary file, fsync, rename, folder fsync); see nnc_rt_io_hooks. */
int nnc_rt_st_write(const char *path, const nnc_rt_st_out *t, int nt, const char *const *meta,
                    int nmeta, const nnc_rt_io_hooks *io, nnc_rt_error *err);

/* ---- Metrics log (metrics_log.c) ---- */
typedef struct nnc_rt_log_row {
  int is_epoch;        /* 1: an epoch summary; 0: a step row */
  int64_t epoch, step; /* epoch 1-based; step: global steps done */
  double loss, acc;    /* NaN: not reported */
  double val_loss, val_acc;
  double lr, samples_per_s, wall_s;
} nnc_rt_log_row;

typedef struct nnc_rt_log {
  FILE *f;
  const char *path;
  int jsonl;
} nnc_rt_log;

/* Opens path (.csv, .jsonl or .json) for writing, or for appending when
 * append (a resumed run): a CSV header is written only into an empty file. */
int nnc_rt_log_open(nnc_rt_log *log, const char *path, int append, nnc_rt_error *err);
/* Writes one row and flushes it. */
int nnc_rt_log_write(nnc_rt_log *log, const nnc_rt_log_row *row, nnc_rt_error *err);
int nnc_rt_log_close(nnc_rt_log *log, nnc_rt_error *err);
/* Reads the epoch rows back (nnc_rt_log_plot's input); later duplicates of
 * an epoch replace earlier ones; sorted by epoch. */
int nnc_rt_log_read_epochs(const char *path, nnc_rt_log_row **rows, int *nrows, nnc_rt_error *err);

/* ---- Batches ---- */
/* Asks the cache for sample i's features, which are read next (a batch
 * visits samples in shuffled order, so each one misses the cache). */
void nnc_rt_dataset_prefetch(const nnc_rt_dataset *ds, int64_t i);
/* Copies sample idx of ds (features, label or targets) into row `row` of
 * the model's x and y inputs in arena. */
void nnc_rt_put_sample(const nnc_rt_model *m, char *arena, const nnc_rt_dataset *ds, int64_t row,
                       int64_t idx);

/* ---- Augmentation stream ---- */
/* Augments rows [0, rows) of a batch at x (rank/shape of one sample). */
void nnc_rt_augment_batch(const nnc_rt_augment *aug, int naug, int rank, const int64_t *shape,
                          float *x, int64_t rows, float *scratch, nnc_rt_rng *rng);

/* ---- The training step's plumbing (train.c), shared with the
 * data-parallel step (train_parallel.c) ---- */
typedef struct nnc_rt_step_scalars {
  int64_t step; /* 1-based global optimizer step */
  int64_t epoch;
  uint64_t seed;
  int64_t total_steps;
} nnc_rt_step_scalars;
/* Writes the step's scalar inputs into the arena. */
void nnc_rt_set_scalars(const nnc_rt_model *m, char *arena, const nnc_rt_step_scalars *s);
/* Adds loss_vec and correct_vec over samples [first, first + valid) to
 * *loss, *correct (each summed from zero, then added). */
void nnc_rt_batch_sums(const nnc_rt_model *m, const char *arena, int64_t first, int64_t valid,
                       double *loss, double *correct);
/* Runs eval_step on the batch of ds starting at sample `start` (padded at
 * the end of ds); *loss, *correct = the sums over its valid samples. */
void nnc_rt_eval_batch(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool,
                       const nnc_rt_dataset *ds, int64_t start, double *loss, double *correct);

/* ---- Data-parallel training (train_parallel.c) ---- */
typedef struct nnc_rt_dp {
  const nnc_rt_model *m;
  const nnc_rt_comm *comm; /* the run's, or &single */
  nnc_rt_comm single;
  int64_t G, b;     /* micro-batches per batch, samples per micro-batch */
  int64_t per;      /* micro-batches per rank */
  int64_t first;    /* this rank's first micro-batch */
  int64_t P;        /* floats of all GRAD tensors */
  int64_t nsums;    /* doubles per rank in the status all-gather */
  float *local;     /* [(per + 1) / 2][P]: this rank's micro-batch gradients, in pairs */
  float *gathered;  /* scratch of nnc_rt_comm_allreduce_tree */
  double *sums;     /* [nsums]: status, then loss and correct per micro-batch */
  double *all_sums; /* [size][nsums] */
  /* Buffers the step sets to the mean of the micro-batches' new values
   * (tensor "bufnew.<name>" -> tensor <name>): batch-norm statistics. */
  int nbuffers;
  int *buffer_new, *buffer;
  /* Synchronised batch statistics (model sync_stats): the rank step runs
   * `rows` samples (per micro-batches) with `step`; its allreduces call
   * the hook, which sums into place with `hook_scratch`. */
  int sync;
  nnc_rt_entry step;
  int64_t rows;
  float *hook_scratch;
  int64_t hook_scratch_n;
  int hook_failed; /* a hook's collective failed: hook_err says why */
  nnc_rt_error hook_err;
} nnc_rt_dp;
int nnc_rt_dp_init(nnc_rt_dp *dp, const nnc_rt_model *m, const nnc_rt_comm *comm,
                   nnc_rt_error *err);
void nnc_rt_dp_free(nnc_rt_dp *dp);
/* One optimizer step over the global batch already in the arena (all B
 * rows): this rank's micro-batches, the fixed-order sum over all ranks,
 * update_step. `failed`: this rank has an error pending (in err), which
 * then ends every rank. *loss, *correct: the global batch's sums. */
int nnc_rt_dp_step(nnc_rt_dp *dp, char *arena, nnc_rt_pool *pool, const nnc_rt_step_scalars *sc,
                   int failed, double *loss, double *correct, nnc_rt_error *err);
/* nnc_rt_evaluate with the batches split over comm's ranks (contiguous
 * ranges) and their sums added in batch order: the same result as one
 * process. A collective. */
int nnc_rt_evaluate_split(const nnc_rt_model *m, char *arena, nnc_rt_pool *pool,
                          const nnc_rt_dataset *ds, const nnc_rt_comm *c, double *loss, double *acc,
                          nnc_rt_error *err);

#endif
