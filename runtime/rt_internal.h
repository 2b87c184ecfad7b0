/* rt_internal.h: declarations shared between runtime files and not part of
 * the public interface in nnc_rt.h: the monotonic clock and the progress
 * display used by the training loop (progress.c). Nothing outside runtime/
 * (and its tests) should include this. */
#ifndef NNC_RT_INTERNAL_H
#define NNC_RT_INTERNAL_H

#include "nnc_rt.h"

/* Seconds from an arbitrary fixed point (CLOCK_MONOTONIC). */
double nnc_rt_now(void);

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
/* Clears the live line and prints the epoch summary line. */
void nnc_rt_progress_end_epoch(nnc_rt_progress *p, const nnc_rt_epoch_stats *s);
/* Formats the summary line of s (no newline) into buf. */
void nnc_rt_progress_format_epoch(char *buf, size_t size, const nnc_rt_progress *p,
                                  const nnc_rt_epoch_stats *s);

#endif
