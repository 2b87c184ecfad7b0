/* suggest.c: "did you mean" for misspelt names, keywords and arguments.
 *
 * Takes a word and the names valid at that place; gives the closest one by
 * optimal-string-alignment distance (Levenshtein plus adjacent swaps, so
 * 'activaton' -> 'activation' is 1 and 'mdoel' -> 'model' is 1), or NULL when
 * nothing is close enough to be a plausible typo.
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

const char *nnc_suggest(const char *word, const char *const *candidates, int n) {
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
