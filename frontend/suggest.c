/* suggest.c: "did you mean" for misspelt names, keywords and arguments.
 *
 * Takes a word and the names valid at that place; gives the closest one by
 * optimal-string-alignment distance (Levenshtein plus adjacent swaps, so
 * 'activaton' -> 'activation' is 1 and 'mdoel' -> 'model' is 1), or NULL when
 * nothing is close enough to be a plausible typo. A word that PyTorch or
 * Keras spells differently (kernel_size, learning_rate, strides) gets our
 * spelling when that is among the names, however far apart the two are.
 */
#include <stdlib.h>
#include <string.h>

#include "diag.h"

enum { MAX_WORD = 64 };

int nnc_edit_distance(const char *a, const char *b, int cap) {
  size_t n = strlen(a), m = strlen(b);
  if (n > MAX_WORD || m > MAX_WORD) return cap + 1;
  if ((n > m ? n - m : m - n) > (size_t)cap) return cap + 1;
  /* d[i][j] = distance between a[0..i) and b[0..j) */
  int d[MAX_WORD + 1][MAX_WORD + 1];
  for (size_t i = 0; i <= n; i++)
    d[i][0] = (int)i;
  for (size_t j = 0; j <= m; j++)
    d[0][j] = (int)j;
  for (size_t i = 1; i <= n; i++) {
    for (size_t j = 1; j <= m; j++) {
      int cost = a[i - 1] != b[j - 1];
      int best = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
      if (d[i - 1][j - 1] + cost < best) best = d[i - 1][j - 1] + cost;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < best)
        best = d[i - 2][j - 2] + 1;
      d[i][j] = best;
    }
  }
  return d[n][m] > cap ? cap + 1 : d[n][m];
}

/* PyTorch's and Keras' names for what nnc calls otherwise. */
static const char *const foreign[][2] = {
    {"kernel_size", "kernel"},
    {"learning_rate", "lr"},
    {"strides", "stride"},
    {"pool_size", "size"},
    {"rate", "p"},
    {"out_features", "units"},
    {"out_channels", "filters"},
    {"use_bias", "bias"},
    {"kernel_initializer", "init"},
    {"bias_initializer", "bias_init"},
    {"epsilon", "eps"},
    {"negative_slope", "slope"},
    {"num_embeddings", "vocab"},
    {"embedding_dim", "dim"},
    {"T_max", "period"},
    {"eta_min", "min_lr"},
    {"step_size", "every"},
    {"decay_rate", "gamma"},
    {"batch_size", "batch"},
    {"num_epochs", "epochs"},
    {"max_epochs", "epochs"},
    {"validation_split", "validation"},
    {"lr_scheduler", "schedule"},
    {"scheduler", "schedule"},
    {"criterion", "loss"},
    {"optim", "optimizer"},
};

/* Our spelling of a foreign name, if it is among the candidates. */
static const char *translate(const char *word, const char *const *candidates, int n) {
  for (size_t f = 0; f < sizeof foreign / sizeof foreign[0]; f++) {
    if (strcmp(word, foreign[f][0]) != 0) continue;
    for (int i = 0; i < n; i++)
      if (candidates[i] && strcmp(candidates[i], foreign[f][1]) == 0) return candidates[i];
  }
  return NULL;
}

const char *nnc_suggest(const char *word, const char *const *candidates, int n) {
  const char *ours = translate(word, candidates, n);
  if (ours) return ours;
  int len = (int)strlen(word);
  if (len < 2) return NULL; /* every one-letter name is one edit from every other */
  int limit = len / 3 > 1 ? len / 3 : 1;
  const char *best = NULL;
  int best_d = limit + 1;
  for (int i = 0; i < n; i++) {
    if (!candidates[i] || strcmp(candidates[i], word) == 0) continue;
    int dist = nnc_edit_distance(word, candidates[i], limit);
    if (dist < best_d) {
      best_d = dist;
      best = candidates[i];
    }
  }
  return best;
}
