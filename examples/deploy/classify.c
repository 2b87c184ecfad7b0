/* classify.c: a program that ships a network trained by nnc.
 *
 * Classifies the images of an IDX file (raw or gzip, e.g. Fashion-MNIST's
 * t10k-images-idx3-ubyte.gz) with the model nnc emitted as model.c or
 * model.o beside model.h (`nnc MODEL.nn --emit=c -o OUT/model --name model`),
 * and prints the accuracy against the IDX labels and the time per sample.
 * The pixel values go in as the file holds them (0..255): the emitted
 * predict applies the data block's scale and the training standardisation.
 *
 *   classify IMAGES LABELS [--logits FILE] [--threads N] [--repeat R]
 *
 * --logits FILE  writes every sample's outputs, one line each (%.9g)
 * --threads N    also classifies with N threads, each with a workspace of
 *                its own, and checks that the outputs are the same bit for bit
 * --repeat R     times R passes over the images (best pass reported)
 *
 * Build (docs/deploy.md): cc -std=c99 -O2 -I OUT classify.c OUT/model.c -lz -lm -lpthread
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zlib.h>

#include "model.h"

typedef struct images {
  long n, size;   /* samples, pixels per sample */
  float *pixels;  /* n * size, as the file holds them */
  int32_t *label; /* n */
} images;

/* The whole of a (gzip or raw: gzread passes raw files through) file. */
static unsigned char *slurp(const char *path, long *len) {
  gzFile f = gzopen(path, "rb");
  if (!f) return NULL;
  long cap = 1 << 20, n = 0;
  unsigned char *buf = malloc((size_t)cap);
  for (int got; buf && (got = gzread(f, buf + n, (unsigned)(cap - n))) > 0;) {
    n += got;
    if (n == cap) {
      unsigned char *bigger = realloc(buf, (size_t)(cap *= 2));
      if (!bigger) free(buf);
      buf = bigger;
    }
  }
  gzclose(f);
  *len = n;
  return buf;
}

static long be32(const unsigned char *p) {
  return (long)p[0] << 24 | (long)p[1] << 16 | (long)p[2] << 8 | (long)p[3];
}

static int load(images *im, const char *img_path, const char *lab_path) {
  long ni, nl;
  unsigned char *img = slurp(img_path, &ni), *lab = slurp(lab_path, &nl);
  int ok = img && lab && ni >= 16 && nl >= 8 && img[2] == 8 && lab[2] == 8;
  if (ok) {
    int rank = img[3];
    im->n = be32(img + 4);
    im->size = 1;
    for (int d = 1; d < rank; d++)
      im->size *= be32(img + 4 + 4 * d);
    long head = 4 + 4L * rank;
    ok = be32(lab + 4) == im->n && ni >= head + im->n * im->size && nl >= 8 + im->n &&
         im->size == MODEL_INPUT_SIZE;
    im->pixels = ok ? malloc(sizeof(float) * (size_t)(im->n * im->size)) : NULL;
    im->label = ok ? malloc(sizeof(int32_t) * (size_t)im->n) : NULL;
    ok = ok && im->pixels && im->label;
    for (long i = 0; ok && i < im->n * im->size; i++)
      im->pixels[i] = img[head + i];
    for (long i = 0; ok && i < im->n; i++)
      im->label[i] = lab[8 + i];
  }
  free(img);
  free(lab);
  if (!ok)
    fprintf(stderr, "classify: cannot read %s and %s as IDX images of %d pixels\n", img_path,
            lab_path, MODEL_INPUT_SIZE);
  return ok ? 0 : -1;
}

/* Samples [begin, end) through predict, MODEL_BATCH at a time (the last
 * batch padded with zeros); outputs to out. */
typedef struct job {
  const images *im;
  long begin, end;
  float *out;
  int rc;
} job;

static void *classify(void *arg) {
  job *j = arg;
  void *ws = NULL;
  float *in = malloc(sizeof(float) * MODEL_BATCH * MODEL_INPUT_SIZE);
  float *out = malloc(sizeof(float) * MODEL_BATCH * MODEL_OUTPUT_SIZE);
  j->rc = posix_memalign(&ws, MODEL_WORKSPACE_ALIGN, MODEL_WORKSPACE_SIZE) || !in || !out;
  for (long s = j->begin; !j->rc && s < j->end; s += MODEL_BATCH) {
    long n = j->end - s < MODEL_BATCH ? j->end - s : MODEL_BATCH;
    memset(in, 0, sizeof(float) * MODEL_BATCH * MODEL_INPUT_SIZE);
    memcpy(in, j->im->pixels + s * MODEL_INPUT_SIZE,
           sizeof(float) * (size_t)(n * MODEL_INPUT_SIZE));
    j->rc = model_predict(in, out, ws);
    memcpy(j->out + s * MODEL_OUTPUT_SIZE, out, sizeof(float) * (size_t)(n * MODEL_OUTPUT_SIZE));
  }
  free(ws);
  free(in);
  free(out);
  return NULL;
}

static int run_threads(const images *im, float *out, int threads) {
  pthread_t tid[64];
  job jobs[64];
  long per = (im->n / threads + MODEL_BATCH - 1) / MODEL_BATCH * MODEL_BATCH;
  int rc = 0;
  for (int t = 0; t < threads; t++) {
    long b = t * per < im->n ? t * per : im->n, e = (t + 1) * per < im->n ? (t + 1) * per : im->n;
    jobs[t] = (job){im, b, t == threads - 1 ? im->n : e, out, 0};
    if (pthread_create(&tid[t], NULL, classify, &jobs[t])) return -1;
  }
  for (int t = 0; t < threads; t++) {
    pthread_join(tid[t], NULL);
    rc |= jobs[t].rc;
  }
  return rc;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
  const char *logits = NULL;
  int threads = 1, repeat = 1;
  if (argc < 3) {
    fputs("usage: classify IMAGES LABELS [--logits FILE] [--threads N] [--repeat R]\n", stderr);
    return 2;
  }
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--logits"))
      logits = argv[i + 1];
    else if (!strcmp(argv[i], "--threads"))
      threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--repeat"))
      repeat = atoi(argv[i + 1]);
  }
  if (threads < 1 || threads > 64 || repeat < 1) return 2;
  images im;
  if (load(&im, argv[1], argv[2])) return 1;
  float *out = malloc(sizeof(float) * (size_t)(im.n * MODEL_OUTPUT_SIZE));
  if (!out) return 1;
  double best = 1e30;
  for (int r = 0; r < repeat; r++) {
    double t0 = now();
    job all = {&im, 0, im.n, out, 0};
    classify(&all);
    if (all.rc) {
      fputs("classify: predict failed\n", stderr);
      return 1;
    }
    if (now() - t0 < best) best = now() - t0;
  }
  long right = 0;
  for (long i = 0; i < im.n; i++) {
    int arg = 0;
    for (int c = 1; c < MODEL_OUTPUT_SIZE; c++)
      if (out[i * MODEL_OUTPUT_SIZE + c] > out[i * MODEL_OUTPUT_SIZE + arg]) arg = c;
    right += arg == im.label[i];
  }
  printf("accuracy %.4f (%ld of %ld), %.2f us per sample (batch %d)\n", (double)right / im.n, right,
         im.n, 1e6 * best / im.n, MODEL_BATCH);
  if (threads > 1) {
    float *again = malloc(sizeof(float) * (size_t)(im.n * MODEL_OUTPUT_SIZE));
    if (!again || run_threads(&im, again, threads)) return 1;
    int same = !memcmp(out, again, sizeof(float) * (size_t)(im.n * MODEL_OUTPUT_SIZE));
    printf("%d threads, a workspace each: %s\n", threads, same ? "same outputs" : "OUTPUTS DIFFER");
    free(again);
    if (!same) return 1;
  }
  if (logits) {
    FILE *f = fopen(logits, "w");
    for (long i = 0; f && i < im.n; i++)
      for (int c = 0; c < MODEL_OUTPUT_SIZE; c++)
        fprintf(f, "%.9g%c", out[i * MODEL_OUTPUT_SIZE + c],
                c + 1 < MODEL_OUTPUT_SIZE ? ' ' : '\n');
    if (!f || fclose(f)) return 1;
  }
  free(out);
  free(im.pixels);
  free(im.label);
  return 0;
}
