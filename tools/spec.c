/* spec.c: the typed training configuration (ir/config.h) as the runtime's
 * spec text (format in docs/runtime.md): one `key = value` per line, strings
 * quoted and escaped. Only the configuration that the runtime acts on goes
 * here; the optimizer, loss and schedule are compiled into the kernels. */
#define _POSIX_C_SOURCE 200809L
#include "spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends `key = "value"` with \" \\ \n escaped; nothing for NULL. */
static void put_str(FILE *f, const char *key, const char *v) {
  if (!v) return;
  fprintf(f, "%s = \"", key);
  for (const char *p = v; *p; p++) {
    if (*p == '"' || *p == '\\') fputc('\\', f);
    if (*p == '\n') {
      fputs("\\n", f);
      continue;
    }
    fputc(*p, f);
  }
  fputs("\"\n", f);
}

static const char *bool_word(bool b) {
  return b ? "true" : "false";
}

static void put_split(FILE *f, const char *which, const nnc_data_split *s, bool csv) {
  char key[64];
  snprintf(key, sizeof key, "data.%s.x", which);
  put_str(f, key, s->x_path);
  snprintf(key, sizeof key, "data.%s.y", which);
  put_str(f, key, s->y_path);
  if (csv && s->x_path) {
    fprintf(f, "data.%s.header = %s\n", which, bool_word(s->csv_header));
    fprintf(f, "data.%s.label_column = %lld\n", which, (long long)s->label_column);
  }
}

static const char *const augment_words[] = {"random_crop", "hflip", "shift", "noise"};

static void put_data(FILE *f, const nnc_train_config *c) {
  const nnc_data_config *d = &c->data;
  static const char *const formats[] = {"none", "idx", "csv", "npy"};
  fprintf(f, "data.format = %s\n", formats[d->format]);
  put_str(f, "data.dir", d->dir);
  put_split(f, "train", &d->train, d->format == NNC_DATA_CSV);
  put_split(f, "test", &d->test, d->format == NNC_DATA_CSV);
  bool classes = c->loss == NNC_LOSS_CROSS_ENTROPY;
  fprintf(f, "data.labels = %s\n", classes ? "class" : "target");
  fprintf(f, "data.scale = %.17g\n", d->scale);
  fprintf(f, "data.standardize = %s\n", bool_word(d->standardize));
  fprintf(f, "data.shuffle = %s\n", bool_word(d->shuffle));
  fprintf(f, "data.val_fraction = %.17g\n", d->val_fraction);
  for (int i = 0; i < d->naugment; i++)
    fprintf(f, "data.augment = %s %.17g\n", augment_words[d->augment[i].kind], d->augment[i].a);
}

static void put_control(FILE *f, const nnc_train_config *c) {
  /* Without `validate =`, a declared validation split is evaluated (as
   * Keras' validation_split is); the test set only when asked for. */
  const char *validate = c->data.val_fraction > 0 ? "validation" : "none";
  if (c->has_validation)
    validate =
        c->validate_split && !strcmp(c->validate_split, "validation") ? "validation" : "test";
  fprintf(f, "validate = %s\n", validate);
  fprintf(f, "epochs = %lld\n", (long long)c->epochs);
  fprintf(f, "seed = %llu\n", (unsigned long long)c->seed);
  if (c->precision == NNC_PRECISION_BF16) fputs("precision = bf16\n", f);
  fprintf(f, "metric.accuracy = %s\n", bool_word(c->metric_accuracy));
  if (c->early_stop.enabled) {
    fputs("early_stop.enabled = true\n", f);
    fprintf(f, "early_stop.metric = %s\n",
            c->early_stop.metric == NNC_METRIC_ACCURACY ? "accuracy" : "loss");
    fprintf(f, "early_stop.patience = %lld\n", (long long)c->early_stop.patience);
    fprintf(f, "early_stop.min_delta = %.17g\n", c->early_stop.min_delta);
    if (c->early_stop.restore_best) fputs("early_stop.restore_best = true\n", f);
  }
  if (c->checkpoint.path) {
    put_str(f, "checkpoint.path", c->checkpoint.path);
    fprintf(f, "checkpoint.every = %lld\n",
            (long long)(c->checkpoint.every > 0 ? c->checkpoint.every : 1));
    fprintf(f, "checkpoint.keep_best = %s\n", bool_word(c->checkpoint.keep_best));
  }
  put_str(f, "resume", c->resume);
  put_str(f, "log.path", c->log);
  if (c->log_every > 0) fprintf(f, "log.every_steps = %lld\n", (long long)c->log_every);
  if (c->load.path) {
    put_str(f, "load.path", c->load.path);
    for (int i = 0; i < c->load.nonly; i++)
      put_str(f, "load.only", c->load.only[i]);
    put_str(f, "load.strip_prefix", c->load.strip_prefix);
    put_str(f, "load.add_prefix", c->load.add_prefix);
  }
}

/* Copies a malloc'd buffer into the arena and frees it. */
static char *to_arena(nnc_arena *a, char *buf, size_t len) {
  char *s = nnc_arena_strndup(a, buf ? buf : "", buf ? len : 0);
  free(buf);
  return s;
}

char *nnc_spec_write(const nnc_module *m, const char *source, const char *base_dir,
                     const char *model_hash) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NULL;
  fputs("# training specification written by nnc\nnnc_spec = 1\n", f);
  put_str(f, "source", source);
  put_str(f, "base_dir", base_dir);
  put_str(f, "model", m->config.model ? m->config.model : m->name);
  put_str(f, "model_hash", model_hash);
  put_data(f, &m->config);
  put_control(f, &m->config);
  fclose(f);
  return to_arena(m->arena, buf, len);
}

char *nnc_module_hash(const nnc_module *m) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NULL;
  nnc_ir_print_module(f, m);
  fclose(f);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)buf[i];
    h *= 0x100000001b3ull;
  }
  free(buf);
  return nnc_arena_printf(m->arena, "%016llx", (unsigned long long)h);
}
