/* init.c: initial values of the persistent tensors of a compiled model.
 *
 * nnc_rt_init_tensors walks the model's tensor table in order (parameters,
 * frozen weights, buffers and optimizer state alike: each by its own init
 * rule) and fills each f32 tensor in the arena element by element from one
 * rng, so a seed fixes every initial value. The rules follow PyTorch's
 * torch.nn.init with its default gains:
 *   xavier_uniform  U(-b, b),  b = sqrt(6 / (fan_in + fan_out))
 *   xavier_normal   N(0, s),   s = sqrt(2 / (fan_in + fan_out))
 *   he_uniform      U(-b, b),  b = sqrt(6 / fan_in)   (kaiming, gain sqrt 2)
 *   he_normal       N(0, s),   s = sqrt(2 / fan_in)
 * The compiler fills fan_in and fan_out; a fan below 1 counts as 1 so a
 * malformed table cannot divide by zero.
 */
#include "rt_internal.h"

#include <math.h>
#include <string.h>

int64_t nnc_rt_numel(int rank, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++)
    n *= shape[i];
  return n;
}

int64_t nnc_rt_checked_mul(int64_t a, int64_t b) {
  if (a < 0 || b < 0) return -1;
  if (b && a > NNC_RT_MAX_FILE_ELEMENTS / b) return -1;
  return a * b;
}

int64_t nnc_rt_checked_numel(int rank, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < rank && n >= 0; i++)
    n = nnc_rt_checked_mul(n, shape[i]);
  return n;
}

static void fill_constant(float *p, int64_t n, float v) {
  for (int64_t i = 0; i < n; i++)
    p[i] = v;
}

/* U[lo, hi): computed in double, and a value that rounds up to hi in f32 is
 * pulled back below it so the interval stays half-open. */
static void fill_uniform(float *p, int64_t n, double lo, double hi, nnc_rt_rng *rng) {
  for (int64_t i = 0; i < n; i++) {
    float v = (float)(lo + (hi - lo) * nnc_rt_rng_uniform(rng));
    if (v >= (float)hi && hi > lo) v = nextafterf((float)hi, (float)lo);
    p[i] = v;
  }
}

static void fill_normal(float *p, int64_t n, double mean, double std, nnc_rt_rng *rng) {
  for (int64_t i = 0; i < n; i++)
    p[i] = (float)(mean + std * nnc_rt_rng_normal(rng));
}

static double fan(int64_t f) {
  return f < 1 ? 1.0 : (double)f;
}

static void init_tensor(const nnc_rt_tensor *t, float *p, nnc_rt_rng *rng) {
  int64_t n = nnc_rt_numel(t->rank, t->shape);
  double fan_sum = fan(t->fan_in) + fan(t->fan_out), b;
  switch ((enum nnc_rt_init_kind)t->init) {
  case NNC_RT_INIT_ZEROS: memset(p, 0, (size_t)n * sizeof *p); return;
  case NNC_RT_INIT_ONES: fill_constant(p, n, 1.0f); return;
  case NNC_RT_INIT_CONSTANT: fill_constant(p, n, t->init_a); return;
  case NNC_RT_INIT_NORMAL: fill_normal(p, n, t->init_a, t->init_b, rng); return;
  case NNC_RT_INIT_UNIFORM: fill_uniform(p, n, t->init_a, t->init_b, rng); return;
  case NNC_RT_INIT_XAVIER_UNIFORM:
    b = sqrt(6.0 / fan_sum);
    fill_uniform(p, n, -b, b, rng);
    return;
  case NNC_RT_INIT_XAVIER_NORMAL: fill_normal(p, n, 0.0, sqrt(2.0 / fan_sum), rng); return;
  case NNC_RT_INIT_HE_UNIFORM:
    b = sqrt(6.0 / fan(t->fan_in));
    fill_uniform(p, n, -b, b, rng);
    return;
  case NNC_RT_INIT_HE_NORMAL: fill_normal(p, n, 0.0, sqrt(2.0 / fan(t->fan_in)), rng); return;
  }
  /* An init kind this runtime does not know: zeros, never garbage. */
  memset(p, 0, (size_t)n * sizeof *p);
}

void nnc_rt_init_tensors(const nnc_rt_model *m, char *arena, nnc_rt_rng *rng) {
  for (int i = 0; i < m->ntensors; i++) {
    const nnc_rt_tensor *t = &m->tensors[i];
    init_tensor(t, (float *)(arena + t->offset), rng);
  }
}
