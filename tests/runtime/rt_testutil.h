/* rt_testutil.h: helpers shared by the runtime tests of data loading,
 * checkpoints, logs and resume: a per-program temporary folder, whole-file
 * write/read, and a hand-written "compiled model" — linear regression
 * y = 2x + 1 trained by SGD with momentum — whose arena holds the tensors
 * of every role (param, frozen, buffer, optimizer state) the way generated
 * code lays them out. */
#ifndef RT_TESTUTIL_H
#define RT_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/nnc_rt.h"

/* Creates /tmp/nnc_<name>_XXXXXX; returns its path. */
const char *tu_tmpdir(const char *name);
/* Removes every file in the folder, then the folder. */
void tu_rmdir(const char *dir);
/* dir/name into a static ring of buffers. */
const char *tu_path(const char *dir, const char *name);
void tu_write(const char *path, const void *bytes, size_t len);
/* The file's bytes (NUL-terminated, malloc'd); *len its size. NULL if absent. */
char *tu_read(const char *path, size_t *len);
int tu_exists(const char *path);

/* The linear model. Tensors: lin.w, lin.b (param), lin.scale (frozen, 1),
 * lin.steps (buffer: counts steps), opt.lin.w.v, opt.lin.b.v (momentum). */
typedef struct tu_lin {
  nnc_rt_model m;
  nnc_rt_tensor tensors[6];
  char *arena;
  int64_t w_off, b_off, scale_off, steps_off, vw_off, vb_off;
  int64_t nan_at_step; /* write a NaN loss at this global step (0: never) */
} tu_lin;

/* Builds the model for this batch size and initialises it from init_seed. */
void tu_lin_make(tu_lin *l, int64_t batch, uint64_t init_seed);
void tu_lin_free(tu_lin *l);
/* n samples x[i] = 2i/n - 1 of shape [1, 1] (an image, so augmentation
 * applies), targets 2x + 1. */
void tu_lin_data(nnc_rt_dataset *ds, int64_t n);
float tu_lin_w(const tu_lin *l);
float tu_lin_b(const tu_lin *l);

#endif
