/* names.h: a map from names to small integers (a tensor's index, a model's
 * index), so that looking a name up costs the same however many there are:
 * the compiler stays near-linear in the size of the model. Open addressing
 * with linear probing, FNV-1a hashes, at most half full; the table lives in
 * the compilation's arena (a grown table leaves the old one there, which
 * costs at most twice the final size). Keys are not copied: they must live
 * as long as the map (arena strings do).
 */
#ifndef NNC_NAMES_H
#define NNC_NAMES_H

#include "arena.h"

typedef struct nnc_name_map {
  const char **keys; /* NULL: empty slot */
  int *values;
  int cap, n; /* cap: 0 or a power of two */
} nnc_name_map;

/* The value stored for key, or -1. */
int nnc_name_map_get(const nnc_name_map *m, const char *key);
/* Stores key -> value (value >= 0) unless key is already there; returns
 * the value the map now holds for key. */
int nnc_name_map_put(nnc_name_map *m, nnc_arena *a, const char *key, int value);

#endif
