/* augment.c: image augmentation of training batches.
 *
 * The training loop calls nnc_rt_augment_batch on each batch after it is
 * gathered into the arena (never on evaluation batches). A sample of rank
 * >= 2 is read as [C, H, W] (all leading dimensions together are C; [H, W]
 * has C = 1); the same geometric change applies to every channel. Each
 * augmentation in the list runs in order, drawing from one nnc_rt_rng whose
 * state the checkpoint saves, so a resumed run augments exactly as an
 * uninterrupted one. The draws per sample are fixed by the list (crop and
 * shift: two integers; flip: one uniform; noise: one normal per element),
 * not by the data.
 *   random_crop(p): pad by p zeros on each side and crop H x W back at a
 *                   uniform offset: a shift by (dy, dx) in [-p, p]^2.
 *   shift(s):       shift by (dy, dx) uniform in [-s, s]^2, zeros fill in.
 *   hflip(q):       mirror left-right with probability q.
 *   noise(s):       add N(0, s^2) to every element.
 */
#include "rt_internal.h"

#include <math.h>
#include <string.h>

static const char *aug_name(int kind) {
  switch ((enum nnc_rt_augment_kind)kind) {
  case NNC_RT_AUG_RANDOM_CROP: return "random_crop";
  case NNC_RT_AUG_HFLIP: return "hflip";
  case NNC_RT_AUG_SHIFT: return "shift";
  case NNC_RT_AUG_NOISE: return "noise";
  }
  return "unknown augmentation";
}

int nnc_rt_augment_check(const nnc_rt_augment *aug, int naug, int rank, const int64_t *shape,
                         nnc_rt_error *err) {
  if (naug > 0 && rank < 2) {
    char s[64];
    int n = snprintf(s, sizeof s, "[");
    for (int i = 0; i < rank && n < (int)sizeof s; i++)
      n += snprintf(s + n, sizeof s - (size_t)n, "%s%lld", i ? "," : "", (long long)shape[i]);
    snprintf(s + n, sizeof s - (size_t)n, "]");
    return nnc_rt_fail(err,
                       "%s needs image samples [H,W] or [C,H,W]; the training samples have "
                       "shape %s",
                       aug_name(aug[0].kind), s);
  }
  for (int i = 0; i < naug; i++) {
    double a = aug[i].a;
    switch (aug[i].kind) {
    case NNC_RT_AUG_RANDOM_CROP:
    case NNC_RT_AUG_SHIFT:
      if (!(a >= 0 && a == floor(a) && a < 1e6))
        return nnc_rt_fail(err, "%s: %g pixels is not a whole number >= 0", aug_name(aug[i].kind),
                           a);
      break;
    case NNC_RT_AUG_HFLIP:
      if (!(a >= 0 && a <= 1)) return nnc_rt_fail(err, "hflip: probability %g is not in [0, 1]", a);
      break;
    case NNC_RT_AUG_NOISE:
      if (!(a >= 0 && isfinite(a)))
        return nnc_rt_fail(err, "noise: std %g is not a finite number >= 0", a);
      break;
    default: return nnc_rt_fail(err, "unknown augmentation kind %d", aug[i].kind);
    }
  }
  return 0;
}

/* Uniform integer in [-r, r]. */
static int64_t uniform_offset(nnc_rt_rng *rng, int64_t r) {
  int64_t k = (int64_t)(nnc_rt_rng_uniform(rng) * (double)(2 * r + 1));
  return k - r;
}

/* out[c][y][x] = in[c][y + dy][x + dx], zero outside. */
static void shift(float *x, float *scratch, int64_t c, int64_t h, int64_t w, int64_t dy,
                  int64_t dx) {
  if (dy == 0 && dx == 0) return;
  memcpy(scratch, x, (size_t)(c * h * w) * sizeof *x);
  for (int64_t k = 0; k < c; k++)
    for (int64_t y = 0; y < h; y++)
      for (int64_t xx = 0; xx < w; xx++) {
        int64_t sy = y + dy, sx = xx + dx;
        x[(k * h + y) * w + xx] =
            sy >= 0 && sy < h && sx >= 0 && sx < w ? scratch[(k * h + sy) * w + sx] : 0.0f;
      }
}

static void hflip(float *x, int64_t rows, int64_t w) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0, j = w - 1; i < j; i++, j--) {
      float t = x[r * w + i];
      x[r * w + i] = x[r * w + j];
      x[r * w + j] = t;
    }
}

void nnc_rt_augment_sample(const nnc_rt_augment *aug, int naug, int rank, const int64_t *shape,
                           float *x, float *scratch, nnc_rt_rng *rng) {
  int64_t h = shape[rank - 2], w = shape[rank - 1], c = 1;
  for (int i = 0; i < rank - 2; i++)
    c *= shape[i];
  for (int i = 0; i < naug; i++) {
    int64_t r = (int64_t)aug[i].a, dy, dx;
    switch ((enum nnc_rt_augment_kind)aug[i].kind) {
    case NNC_RT_AUG_RANDOM_CROP:
    case NNC_RT_AUG_SHIFT:
      dy = uniform_offset(rng, r);
      dx = uniform_offset(rng, r);
      shift(x, scratch, c, h, w, dy, dx);
      break;
    case NNC_RT_AUG_HFLIP:
      if (nnc_rt_rng_uniform(rng) < aug[i].a) hflip(x, c * h, w);
      break;
    case NNC_RT_AUG_NOISE:
      for (int64_t k = 0; k < c * h * w; k++)
        x[k] += (float)(aug[i].a * nnc_rt_rng_normal(rng));
      break;
    }
  }
}

void nnc_rt_augment_batch(const nnc_rt_augment *aug, int naug, int rank, const int64_t *shape,
                          float *x, int64_t rows, float *scratch, nnc_rt_rng *rng) {
  int64_t size = 1;
  for (int i = 0; i < rank; i++)
    size *= shape[i];
  for (int64_t r = 0; r < rows; r++)
    nnc_rt_augment_sample(aug, naug, rank, shape, x + r * size, scratch, rng);
}
