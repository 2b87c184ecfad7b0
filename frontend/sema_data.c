/* sema_data.c: `data` declarations -> nnc_data_config.
 *
 *   data fashion = idx("fashion-mnist") { scale = 1/255, validation = 0.1 }
 *   data points  = csv("train.csv", test = "test.csv", header = true, label = -1)
 *   data arrays  = npy(x = "x.npy", y = "y.npy", test_x = "tx.npy", test_y = "ty.npy")
 *
 * Paths are kept as written: the driver resolves them (next to the .nn file,
 * then /usr/share/datasets), so nothing here touches the file system.
 */
#include <string.h>

#include "sema_internal.h"

static bool path_arg(nnc_sema *s, const nnc_ast *e, const char *what, const char **out) {
  if (!e) return true;
  if (!nnc_sema_str(s, e, what, out)) return false;
  if (!**out) {
    nnc_sema_error(s, e->span, "'%s' is an empty path", what);
    return false;
  }
  return true;
}

static void source(nnc_sema *s, const nnc_ast *call, nnc_data_config *d) {
  static const char *const formats[] = {"idx", "csv", "npy"};
  static const char *const p_idx[] = {"dir"};
  static const char *const p_csv[] = {"path", "test", "header", "label"};
  static const char *const p_npy[] = {"x", "y", "test_x", "test_y"};
  int k;
  if (!nnc_sema_word_or_call(s, call, "data format", formats, 3, &k)) return;
  const nnc_ast *a[4];
  switch (k) {
  case 0: {
    nnc_sig sig = {"idx", p_idx, 1, 1, 1};
    if (!nnc_sema_match(s, call, &sig, a)) return;
    d->format = NNC_DATA_IDX;
    path_arg(s, a[0], "dir", &d->dir);
    return;
  }
  case 1: {
    nnc_sig sig = {"csv", p_csv, 4, 1, 1};
    if (!nnc_sema_match(s, call, &sig, a)) return;
    d->format = NNC_DATA_CSV;
    path_arg(s, a[0], "path", &d->train.x_path);
    path_arg(s, a[1], "test", &d->test.x_path);
    bool header = false;
    if (a[2] && !nnc_sema_bool(s, a[2], "header", &header)) return;
    d->train.csv_header = d->test.csv_header = header;
    int64_t label = -1;
    if (a[3] && !nnc_sema_int(s, a[3], "label", -100000, 100000, &label)) return;
    d->train.label_column = d->test.label_column = label;
    return;
  }
  default: {
    nnc_sig sig = {"npy", p_npy, 4, 0, 2};
    if (!nnc_sema_match(s, call, &sig, a)) return;
    d->format = NNC_DATA_NPY;
    path_arg(s, a[0], "x", &d->train.x_path);
    path_arg(s, a[1], "y", &d->train.y_path);
    path_arg(s, a[2], "test_x", &d->test.x_path);
    path_arg(s, a[3], "test_y", &d->test.y_path);
    if (!a[2] != !a[3])
      nnc_sema_error(s, call->span, "npy needs both test_x and test_y, or neither");
    return;
  }
  }
}

/* augment = [random_crop(pad = 4), hflip(), shift(2), noise(0.05)] */
static void augment(nnc_sema *s, const nnc_ast *e, nnc_data_config *d) {
  static const char *const kinds[] = {"random_crop", "hflip", "shift", "noise"};
  static const char *const p_crop[] = {"pad"};
  static const char *const p_flip[] = {"p"};
  static const char *const p_shift[] = {"pixels"};
  static const char *const p_noise[] = {"std"};
  if (e->kind != NNC_AST_LIST) {
    nnc_sema_error(s, e->span, "'augment' must be a list such as [hflip(), random_crop(pad = 4)]");
    return;
  }
  for (int i = 0; i < e->list.n; i++) {
    const nnc_ast *c = e->list.items[i];
    if (d->naugment == NNC_MAX_AUGMENT) {
      nnc_sema_error(s, c->span, "too many augmentations (at most %d)", NNC_MAX_AUGMENT);
      return;
    }
    int k;
    if (!nnc_sema_word_or_call(s, c, "augmentation", kinds, 4, &k)) continue;
    const nnc_ast *a[1];
    nnc_augment *aug = &d->augment[d->naugment];
    nnc_sig sigs[4] = {{"random_crop", p_crop, 1, 1, 1},
                       {"hflip", p_flip, 1, 1, 0},
                       {"shift", p_shift, 1, 1, 1},
                       {"noise", p_noise, 1, 1, 1}};
    if (!nnc_sema_match(s, c, &sigs[k], a)) continue;
    int64_t pixels;
    switch (k) {
    case 0:
      aug->kind = NNC_AUG_RANDOM_CROP;
      if (!nnc_sema_int(s, a[0], "pad", 1, 64, &pixels)) continue;
      aug->a = (double)pixels;
      break;
    case 1:
      aug->kind = NNC_AUG_HFLIP;
      aug->a = 0.5;
      if (a[0] && !nnc_sema_num(s, a[0], "p", 0, 1, &aug->a)) continue;
      break;
    case 2:
      aug->kind = NNC_AUG_SHIFT;
      if (!nnc_sema_int(s, a[0], "pixels", 1, 64, &pixels)) continue;
      aug->a = (double)pixels;
      break;
    default:
      aug->kind = NNC_AUG_NOISE;
      if (!nnc_sema_num(s, a[0], "std", 0, 1e6, &aug->a)) continue;
      break;
    }
    d->naugment++;
  }
}

void nnc_sema_data(nnc_sema *s, const nnc_ast *decl, nnc_data_config *d) {
  static const char *const keys[] = {"scale", "standardize", "shuffle", "validation", "augment"};
  enum { NKEYS = 5 };
  memset(d, 0, sizeof *d);
  d->name = decl->str;
  d->scale = 1.0;
  d->shuffle = true;
  d->train.label_column = d->test.label_column = -1;
  source(s, decl->a, d);
  if (!decl->body) return;
  const nnc_ast *seen[NKEYS] = {0};
  for (int i = 0; i < decl->body->list.n; i++) {
    const nnc_ast *st = decl->body->list.items[i];
    if (st->kind != NNC_AST_ASSIGN) {
      nnc_sema_error(s, st->span, "expected 'setting = value' in a data block");
      continue;
    }
    int k = -1;
    for (int j = 0; j < NKEYS; j++)
      if (strcmp(st->str, keys[j]) == 0) k = j;
    if (k < 0) {
      const char *hint = nnc_suggest(st->str, keys, NKEYS);
      if (hint)
        nnc_sema_error(s, st->name_span, "unknown setting '%s' in data block; did you mean '%s'?",
                       st->str, hint);
      else
        nnc_sema_error(s, st->name_span, "unknown setting '%s' in data block", st->str);
      continue;
    }
    if (seen[k]) {
      nnc_sema_duplicate(s, st->str, st, seen[k]);
      continue;
    }
    seen[k] = st;
    switch (k) {
    case 0: nnc_sema_num(s, st->a, "scale", -1e30, 1e30, &d->scale); break;
    case 1: nnc_sema_bool(s, st->a, "standardize", &d->standardize); break;
    case 2: nnc_sema_bool(s, st->a, "shuffle", &d->shuffle); break;
    case 3: nnc_sema_num(s, st->a, "validation", 0, 0.99, &d->val_fraction); break;
    default: augment(s, st->a, d); break;
    }
  }
}
