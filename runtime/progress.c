/* progress.c: what the training loop shows while it runs.
 *
 * On a terminal (interactive) one live line is redrawn in place with '\r'
 * at most about ten times a second:
 *   epoch 2/10  step 312/937  loss 0.4123  acc 0.8521  41234 samples/s  ETA 0:12
 * (acc only when the model reports correctness; ETA for the whole run,
 * from the current epoch's speed). After each epoch the live line is
 * cleared and a summary line is printed:
 *   epoch 2/10  train loss 0.4123 acc 0.8521  val loss 0.4500 acc 0.8400  1.52 s  41234 samples/s
 * When not interactive (a file or pipe) only the summary lines appear. No
 * function here allocates; output goes to the stream the caller chose.
 */
#include "rt_internal.h"

#include <math.h>
#include <time.h>

static const double REDRAW_INTERVAL_S = 0.1;

double nnc_rt_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double nnc_rt_samples_per_s(int64_t samples, double seconds) {
  return seconds > 0 ? (double)samples / seconds : 0.0;
}

void nnc_rt_progress_init(nnc_rt_progress *p, FILE *out, int interactive, int64_t epochs,
                          int64_t steps_per_epoch, int64_t batch, int has_acc) {
  *p = (nnc_rt_progress){.out = out,
                         .interactive = interactive,
                         .has_acc = has_acc,
                         .epochs = epochs,
                         .steps_per_epoch = steps_per_epoch,
                         .batch = batch};
}

void nnc_rt_progress_begin_epoch(nnc_rt_progress *p, int64_t epoch) {
  p->epoch = epoch;
  p->epoch_start = p->last_draw = nnc_rt_now();
}

/* "h:mm:ss" or "m:ss". */
static void format_duration(char *buf, size_t size, double seconds) {
  if (!(seconds >= 0) || seconds > 1e8) seconds = 0;
  long s = (long)(seconds + 0.5);
  if (s >= 3600)
    snprintf(buf, size, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  else
    snprintf(buf, size, "%ld:%02ld", s / 60, s % 60);
}

void nnc_rt_progress_step(nnc_rt_progress *p, int64_t step, double loss_sum, double correct_sum,
                          int64_t samples) {
  if (!p->out || !p->interactive || samples <= 0) return;
  double now = nnc_rt_now();
  if (now - p->last_draw < REDRAW_INTERVAL_S && step < p->steps_per_epoch) return;
  p->last_draw = now;
  double elapsed = now - p->epoch_start;
  double per_step = step > 0 ? elapsed / (double)step : 0;
  int64_t steps_left = (p->epochs - p->epoch - 1) * p->steps_per_epoch + p->steps_per_epoch - step;
  char eta[32];
  format_duration(eta, sizeof eta, per_step * (double)steps_left);
  fprintf(p->out, "\repoch %lld/%lld  step %lld/%lld  loss %.4f", (long long)p->epoch + 1,
          (long long)p->epochs, (long long)step, (long long)p->steps_per_epoch,
          loss_sum / (double)samples);
  if (p->has_acc) fprintf(p->out, "  acc %.4f", correct_sum / (double)samples);
  fprintf(p->out, "  %.0f samples/s  ETA %s\033[K", nnc_rt_samples_per_s(samples, elapsed), eta);
  fflush(p->out);
  p->line_open = 1;
}

void nnc_rt_progress_resumed(const nnc_rt_progress *p, const char *path, int64_t epoch,
                             int64_t step, int patience_restarted) {
  if (!p->out) return;
  fprintf(p->out, "resumed from %s: epoch %lld of %lld done (step %lld)%s\n", path,
          (long long)epoch, (long long)p->epochs, (long long)step,
          patience_restarted ? "; it had stopped early, so early stopping's patience starts over"
                             : "");
  fflush(p->out);
}

void nnc_rt_progress_format_epoch(char *buf, size_t size, const nnc_rt_progress *p,
                                  const nnc_rt_epoch_stats *s) {
  int len = snprintf(buf, size, "epoch %lld/%lld  train loss %.4f", (long long)s->epoch + 1,
                     (long long)p->epochs, s->train_loss);
  if (len >= 0 && (size_t)len < size && p->has_acc)
    len += snprintf(buf + len, size - (size_t)len, " acc %.4f", s->train_acc);
  if (len >= 0 && (size_t)len < size && !isnan(s->val_loss)) {
    len += snprintf(buf + len, size - (size_t)len, "  val loss %.4f", s->val_loss);
    if (len >= 0 && (size_t)len < size && p->has_acc)
      len += snprintf(buf + len, size - (size_t)len, " acc %.4f", s->val_acc);
  }
  if (len >= 0 && (size_t)len < size)
    snprintf(buf + len, size - (size_t)len, "  %.2f s  %.0f samples/s", s->seconds,
             s->samples_per_s);
}

void nnc_rt_progress_end_epoch(nnc_rt_progress *p, const nnc_rt_epoch_stats *s) {
  if (!p->out) return;
  char line[256];
  nnc_rt_progress_format_epoch(line, sizeof line, p, s);
  fprintf(p->out, "%s%s\n", p->line_open ? "\r\033[K" : "", line);
  fflush(p->out);
  p->line_open = 0;
}
