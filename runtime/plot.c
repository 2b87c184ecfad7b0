/* plot.c: the loss and accuracy curves of a run as a hand-written SVG.
 *
 * Input: the metrics log (metrics_log.c reads back its epoch rows). Output:
 * one SVG with a loss panel and, when the log has accuracy, an accuracy
 * panel beside it. Each panel has axes, value ticks at round values (steps
 * of 1, 2 or 5 times a power of ten, as matplotlib's default locator picks
 * them; the axis ends on ticks and does not go below zero for values that
 * are not negative), epoch ticks, a title, and up to two series: training
 * (solid blue) and the set evaluated each epoch (dashed orange), named by
 * what it is ("validation" or "test"). A series is a <polyline> plus one
 * <circle> per epoch whose <title> reads "train loss, epoch 3: 0.1234" (a
 * tooltip in browsers, and what the tests look for). The legend goes in the
 * corner (or side) of the panel where it covers no point of either curve.
 * Missing values (NaN) are skipped. The training loop writes it next to the
 * log when a run ends (run.csv -> run.svg).
 */
#include "rt_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { PANEL_W = 460, PANEL_H = 320, LEFT = 64, RIGHT = 16, TOP = 34, BOTTOM = 46 };

typedef struct panel {
  FILE *f;
  double x0;         /* left edge of the panel in the SVG */
  double emin, emax; /* epoch range */
  double vmin, vmax; /* value range, whole ticks */
  double step;       /* between value ticks */
} panel;

static double px(const panel *p, double epoch) {
  return p->x0 + LEFT + (epoch - p->emin) / (p->emax - p->emin) * (PANEL_W - LEFT - RIGHT);
}

static double py(const panel *p, double v) {
  return TOP + (p->vmax - v) / (p->vmax - p->vmin) * (PANEL_H - TOP - BOTTOM);
}

static double value(const nnc_rt_log_row *r, int which) {
  switch (which) {
  case 0: return r->loss;
  case 1: return r->val_loss;
  case 2: return r->acc;
  default: return r->val_acc;
  }
}

/* A step of 1, 2 or 5 times a power of ten giving at most `most`
 * intervals over span. */
static double round_step(double span, int most) {
  double step = pow(10, floor(log10(span / most)));
  static const double factors[] = {1, 2, 5, 10};
  for (int i = 0; i < 4; i++)
    if (span / (factors[i] * step) <= most) return factors[i] * step;
  return 10 * step;
}

/* Value range over the two series `first` and `first + 1`, padded 5%,
 * then widened to whole ticks; not below 0 when no value is negative (a
 * loss or an accuracy), nor above 1 for accuracies that stay within it. */
static int value_range(panel *p, const nnc_rt_log_row *rows, int n, int first) {
  double lo = INFINITY, hi = -INFINITY;
  for (int i = 0; i < n; i++)
    for (int k = first; k < first + 2; k++) {
      double v = value(&rows[i], k);
      if (isfinite(v)) lo = fmin(lo, v), hi = fmax(hi, v);
    }
  if (lo > hi) return 0;
  double pad = (hi - lo) * 0.05;
  if (pad == 0) pad = fabs(hi) * 0.1 + 0.05;
  double vlo = lo - pad, vhi = hi + pad;
  if (lo >= 0 && vlo < 0) vlo = 0;
  p->step = round_step(vhi - vlo, 5);
  p->vmin = floor(vlo / p->step) * p->step;
  p->vmax = ceil(vhi / p->step) * p->step;
  if (lo >= 0 && p->vmin < 0) p->vmin = 0;
  if (first == 2 && hi <= 1 && p->vmax > 1) p->vmax = 1;
  return 1;
}

static void axes(const panel *p, const char *title) {
  double l = p->x0 + LEFT, r = p->x0 + PANEL_W - RIGHT, t = TOP, b = PANEL_H - BOTTOM;
  fprintf(p->f, "<g class=\"axes\" stroke=\"#333\" stroke-width=\"1\">\n");
  fprintf(p->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", l, b, r, b);
  fprintf(p->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>\n", l, t, l, b);
  fprintf(p->f, "</g>\n<g font-family=\"sans-serif\" font-size=\"11\" fill=\"#333\">\n");
  fprintf(p->f, "<text x=\"%.1f\" y=\"20\" font-size=\"14\" text-anchor=\"middle\">%s</text>\n",
          (l + r) / 2, title);
  fprintf(p->f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">epoch</text>\n", (l + r) / 2,
          PANEL_H - 8);
  /* Value ticks: multiples of step, printed with the step's decimals. */
  int decimals = p->step >= 1 ? 0 : (int)ceil(-log10(p->step) - 1e-9);
  int64_t first = (int64_t)llround(p->vmin / p->step), last = (int64_t)llround(p->vmax / p->step);
  for (int64_t k = first; k <= last; k++) {
    double v = (double)k * p->step;
    fprintf(p->f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.*f</text>\n", l - 6,
            py(p, v) + 4, decimals, v);
  }
  int64_t span = (int64_t)(p->emax - p->emin), stride = span > 10 ? (span + 9) / 10 : 1;
  for (int64_t e = (int64_t)ceil(p->emin); e <= (int64_t)p->emax; e += stride)
    fprintf(p->f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%lld</text>\n",
            px(p, (double)e), b + 16, (long long)e);
  fprintf(p->f, "</g>\n");
}

static void series(const panel *p, const nnc_rt_log_row *rows, int n, int which,
                   const char *label) {
  static const char *const colours[] = {"#1f77b4", "#ff7f0e"};
  const char *colour = colours[which % 2], *dash = which % 2 ? " stroke-dasharray=\"5,3\"" : "";
  fprintf(p->f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", colour,
          dash);
  for (int i = 0, first = 1; i < n; i++)
    if (isfinite(value(&rows[i], which))) {
      fprintf(p->f, "%s%.2f,%.2f", first ? "" : " ", px(p, (double)rows[i].epoch),
              py(p, value(&rows[i], which)));
      first = 0;
    }
  fprintf(p->f, "\"/>\n");
  for (int i = 0; i < n; i++) {
    double v = value(&rows[i], which);
    if (!isfinite(v)) continue;
    fprintf(p->f,
            "<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" fill=\"%s\"><title>%s, epoch %lld: %.6g"
            "</title></circle>\n",
            px(p, (double)rows[i].epoch), py(p, v), colour, label, (long long)rows[i].epoch, v);
  }
}

enum { LEGEND_W = 100, LEGEND_H = 34 };

/* How many points of the two series `first` and `first + 1` (each circle,
 * and points along each line segment) fall in the box at (x, y). */
static int covered(const panel *p, const nnc_rt_log_row *rows, int n, int first, double x,
                   double y) {
  int count = 0;
  for (int k = first; k < first + 2; k++) {
    double last_x = NAN, last_y = NAN;
    for (int i = 0; i < n; i++) {
      double v = value(&rows[i], k);
      if (!isfinite(v)) continue;
      double cx = px(p, (double)rows[i].epoch), cy = py(p, v);
      for (int t = isnan(last_x) ? 16 : 0; t <= 16; t++) {
        double sx = isnan(last_x) ? cx : last_x + (cx - last_x) * t / 16;
        double sy = isnan(last_y) ? cy : last_y + (cy - last_y) * t / 16;
        count += sx >= x - 4 && sx <= x + LEGEND_W + 4 && sy >= y - 4 && sy <= y + LEGEND_H + 4;
      }
      last_x = cx, last_y = cy;
    }
  }
  return count;
}

/* The legend in the first of six places (the corners, then the middle of
 * each side) where it covers nothing, else where it covers least. */
static void legend(const panel *p, const nnc_rt_log_row *rows, int n, int first,
                   const char *val_name) {
  double l = p->x0 + LEFT + 8, r = p->x0 + PANEL_W - RIGHT - LEGEND_W - 4, t = TOP + 4,
         b = PANEL_H - BOTTOM - LEGEND_H - 4, m = (t + b) / 2;
  const double places[6][2] = {{r, t}, {l, t}, {r, b}, {l, b}, {r, m}, {l, m}};
  int best = 0, best_count = -1;
  for (int i = 0; i < 6 && best_count != 0; i++) {
    int c = covered(p, rows, n, first, places[i][0], places[i][1]);
    if (best_count < 0 || c < best_count) best = i, best_count = c;
  }
  double x = places[best][0], y = places[best][1];
  fprintf(p->f, "<g class=\"legend\" font-family=\"sans-serif\" font-size=\"11\">\n");
  fprintf(p->f,
          "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"white\" "
          "fill-opacity=\"0.8\"/>\n",
          x, y, LEGEND_W, LEGEND_H);
  fprintf(p->f,
          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" "
          "stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.1f\">train</text>\n",
          x + 4, y + 10, x + 24, y + 10, x + 30, y + 14);
  fprintf(p->f,
          "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ff7f0e\" "
          "stroke-width=\"2\" stroke-dasharray=\"5,3\"/><text x=\"%.1f\" y=\"%.1f\">"
          "%s</text>\n</g>\n",
          x + 4, y + 26, x + 24, y + 26, x + 30, y + 30, val_name);
}

/* One panel for the series pair `first` (0: loss, 2: accuracy). */
static void draw_panel(FILE *f, int index, const nnc_rt_log_row *rows, int n, int first,
                       const char *val_name) {
  panel p = {.f = f, .x0 = index * PANEL_W};
  p.emin = (double)rows[0].epoch, p.emax = (double)rows[n - 1].epoch;
  if (p.emax <= p.emin) p.emin -= 0.5, p.emax += 0.5;
  value_range(&p, rows, n, first);
  const char *name = first ? "accuracy" : "loss";
  fprintf(f, "<g class=\"%s\">\n", name);
  axes(&p, name);
  char label[64];
  series(&p, rows, n, first, first ? "train accuracy" : "train loss");
  snprintf(label, sizeof label, "%s %s", val_name, name);
  series(&p, rows, n, first + 1, label);
  legend(&p, rows, n, first, val_name);
  fprintf(f, "</g>\n");
}

int nnc_rt_log_plot(const char *log_path, const char *svg_path, const char *val_name,
                    nnc_rt_error *err) {
  if (!val_name) val_name = "validation";
  nnc_rt_log_row *rows;
  int n;
  if (nnc_rt_log_read_epochs(log_path, &rows, &n, err)) return -1;
  FILE *f = fopen(svg_path, "w");
  if (!f) {
    free(rows);
    return nnc_rt_fail(err, "%s: cannot create: %s", svg_path, strerror(errno));
  }
  panel probe;
  int has_loss = n > 0 && value_range(&probe, rows, n, 0);
  int has_acc = n > 0 && value_range(&probe, rows, n, 2);
  int panels = has_loss + has_acc;
  fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  fprintf(f,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
          "viewBox=\"0 0 %d %d\">\n",
          (panels ? panels : 1) * PANEL_W, PANEL_H, (panels ? panels : 1) * PANEL_W, PANEL_H);
  fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  if (!panels)
    fprintf(f, "<text x=\"20\" y=\"40\" font-family=\"sans-serif\">no epochs logged</text>\n");
  if (has_loss) draw_panel(f, 0, rows, n, 0, val_name);
  if (has_acc) draw_panel(f, has_loss, rows, n, 2, val_name);
  fprintf(f, "</svg>\n");
  free(rows);
  if (fclose(f) != 0) return nnc_rt_fail(err, "%s: cannot write: %s", svg_path, strerror(errno));
  return 0;
}

int nnc_rt_log_svg_path(char *buf, size_t size, const char *log_path) {
  const char *slash = strrchr(log_path, '/'), *dot = strrchr(log_path, '.');
  if (!dot || (slash && dot < slash)) dot = log_path + strlen(log_path);
  int n = snprintf(buf, size, "%.*s.svg", (int)(dot - log_path), log_path);
  return n < 0 || (size_t)n >= size ? -1 : 0;
}
