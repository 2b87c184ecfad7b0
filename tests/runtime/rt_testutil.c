/* rt_testutil.c: the helpers of rt_testutil.h. The linear model's
 * train_step reads the model through a pointer kept in a static (tests run
 * one model at a time), computes per-sample squared errors and does one
 * momentum-SGD update:
 *   v = 0.9 v + g;  w -= lr * v   (g the mean gradient, lr 0.05)
 * writing lr to lr_off, as a compiled schedule would. */
#include "rt_testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *tu_tmpdir(const char *name) {
  static char dirs[8][128];
  static int next;
  char *d = dirs[next++ % 8];
  snprintf(d, sizeof dirs[0], "/tmp/nnc_%s_XXXXXX", name);
  return mkdtemp(d);
}

void tu_rmdir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(tu_path(dir, e->d_name));
  closedir(d);
  rmdir(dir);
}

const char *tu_path(const char *dir, const char *name) {
  static char ring[16][512];
  static int next;
  char *p = ring[next++ % 16];
  snprintf(p, sizeof ring[0], "%s/%s", dir, name);
  return p;
}

void tu_write(const char *path, const void *bytes, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(bytes, 1, len, f) != len) abort();
  fclose(f);
}

char *tu_read(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  rewind(f);
  char *b = malloc((size_t)n + 1);
  if (fread(b, 1, (size_t)n, f) != (size_t)n) abort();
  b[n] = 0;
  fclose(f);
  if (len) *len = (size_t)n;
  return b;
}

int tu_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static tu_lin *current;
static const float LIN_LR = 0.05f, LIN_MOMENTUM = 0.9f;

#define AT(type, off) ((type *)(arena + (off)))

static void lin_loss(const tu_lin *l, char *arena) {
  const nnc_rt_model *m = &l->m;
  const float *x = AT(float, m->x_off), *y = AT(float, m->y_off);
  float w = *AT(float, l->w_off), b = *AT(float, l->b_off), s = *AT(float, l->scale_off);
  for (int64_t i = 0; i < m->batch; i++) {
    float d = s * (w * x[i] + b) - y[i];
    AT(float, m->loss_vec_off)[i] = d * d;
  }
}

static void lin_train(char *arena, nnc_rt_pool *pool) {
  const tu_lin *l = current;
  const nnc_rt_model *m = &l->m;
  const float *x = AT(float, m->x_off), *y = AT(float, m->y_off);
  float *w = AT(float, l->w_off), *b = AT(float, l->b_off);
  float gw = 0, gb = 0;
  lin_loss(l, arena);
  for (int64_t i = 0; i < m->batch; i++) {
    float d = *w * x[i] + *b - y[i];
    gw += 2 * d * x[i];
    gb += 2 * d;
  }
  float *vw = AT(float, l->vw_off), *vb = AT(float, l->vb_off);
  *vw = LIN_MOMENTUM * *vw + gw / (float)m->batch;
  *vb = LIN_MOMENTUM * *vb + gb / (float)m->batch;
  *w -= LIN_LR * *vw;
  *b -= LIN_LR * *vb;
  *AT(float, l->steps_off) += 1;
  *AT(float, m->lr_off) = LIN_LR;
  float step;
  memcpy(&step, arena + m->step_off, 4);
  if (l->nan_at_step && (int64_t)step == l->nan_at_step) AT(float, m->loss_vec_off)[0] = NAN;
}

static void lin_eval(char *arena, nnc_rt_pool *pool) {
  lin_loss(current, arena);
}

static nnc_rt_tensor scalar(const char *name, int role, int64_t off, int init, float a, float b) {
  return (nnc_rt_tensor){.name = name,
                         .role = role,
                         .rank = 1,
                         .shape = {1},
                         .offset = off,
                         .init = init,
                         .init_a = a,
                         .init_b = b,
                         .fan_in = 1,
                         .fan_out = 1};
}

void tu_lin_make(tu_lin *l, int64_t batch, uint64_t init_seed) {
  memset(l, 0, sizeof *l);
  current = l;
  int64_t off = 0, slot = 64 * ((batch * 4 + 63) / 64);
  nnc_rt_model *m = &l->m;
  m->batch = batch;
  m->sample_size = 1;
  m->target_size = 1;
  m->x_off = off, off += slot;
  m->y_off = off, off += slot;
  m->loss_vec_off = off, off += slot;
  m->correct_vec_off = -1;
  l->w_off = off, off += 64;
  l->b_off = off, off += 64;
  l->scale_off = off, off += 64;
  l->steps_off = off, off += 64;
  l->vw_off = off, off += 64;
  l->vb_off = off, off += 64;
  m->step_off = off, off += 4;
  m->epoch_off = off, off += 4;
  m->seed_off = off, off += 4;
  m->total_steps_off = -1;
  m->lr_off = off, off += 4;
  m->arena_bytes = (size_t)off;
  l->tensors[0] = scalar("lin.w", NNC_RT_PARAM, l->w_off, NNC_RT_INIT_UNIFORM, -1, 1);
  l->tensors[1] = scalar("lin.b", NNC_RT_PARAM, l->b_off, NNC_RT_INIT_UNIFORM, -1, 1);
  l->tensors[2] = scalar("lin.scale", NNC_RT_FROZEN, l->scale_off, NNC_RT_INIT_ONES, 0, 0);
  l->tensors[3] = scalar("lin.steps", NNC_RT_BUFFER, l->steps_off, NNC_RT_INIT_ZEROS, 0, 0);
  l->tensors[4] = scalar("opt.lin.w.v", NNC_RT_OPT_STATE, l->vw_off, NNC_RT_INIT_ZEROS, 0, 0);
  l->tensors[5] = scalar("opt.lin.b.v", NNC_RT_OPT_STATE, l->vb_off, NNC_RT_INIT_ZEROS, 0, 0);
  m->ntensors = 6;
  m->tensors = l->tensors;
  m->train_step = lin_train;
  m->eval_step = lin_eval;
  l->arena = calloc(1, m->arena_bytes);
  nnc_rt_rng rng;
  nnc_rt_rng_seed(&rng, init_seed);
  nnc_rt_init_tensors(m, l->arena, &rng);
}

void tu_lin_free(tu_lin *l) {
  free(l->arena);
  l->arena = NULL;
  if (current == l) current = NULL;
}

void tu_lin_data(nnc_rt_dataset *ds, int64_t n) {
  *ds = (nnc_rt_dataset){.n = n, .rank = 2, .shape = {1, 1}, .sample_size = 1, .target_size = 1};
  ds->x = malloc((size_t)n * sizeof(float));
  ds->targets = malloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n; i++) {
    ds->x[i] = 2.0f * (float)i / (float)n - 1.0f;
    ds->targets[i] = 2.0f * ds->x[i] + 1.0f;
  }
}

float tu_lin_w(const tu_lin *l) {
  float v;
  memcpy(&v, l->arena + l->w_off, 4);
  return v;
}

float tu_lin_b(const tu_lin *l) {
  float v;
  memcpy(&v, l->arena + l->b_off, 4);
  return v;
}
