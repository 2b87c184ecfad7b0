/* names.c: the name map of names.h (open addressing, linear probing). */
#include "names.h"

#include <stdint.h>
#include <string.h>

static uint64_t hash(const char *s) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
  return h;
}

/* The slot holding key, or the empty slot where it would go. */
static int slot(const nnc_name_map *m, const char *key) {
  int mask = m->cap - 1, i = (int)(hash(key) & (uint64_t)mask);
  while (m->keys[i] && strcmp(m->keys[i], key) != 0)
    i = (i + 1) & mask;
  return i;
}

int nnc_name_map_get(const nnc_name_map *m, const char *key) {
  if (m->cap == 0) return -1;
  int i = slot(m, key);
  return m->keys[i] ? m->values[i] : -1;
}

static void grow(nnc_name_map *m, nnc_arena *a) {
  nnc_name_map bigger = {.cap = m->cap ? 2 * m->cap : 16, .n = m->n};
  bigger.keys = nnc_arena_alloc(a, sizeof(char *) * (size_t)bigger.cap);
  bigger.values = nnc_arena_alloc(a, sizeof(int) * (size_t)bigger.cap);
  for (int i = 0; i < m->cap; i++)
    if (m->keys[i]) {
      int j = slot(&bigger, m->keys[i]);
      bigger.keys[j] = m->keys[i];
      bigger.values[j] = m->values[i];
    }
  *m = bigger;
}

int nnc_name_map_put(nnc_name_map *m, nnc_arena *a, const char *key, int value) {
  if (2 * (m->n + 1) > m->cap) grow(m, a);
  int i = slot(m, key);
  if (m->keys[i]) return m->values[i];
  m->keys[i] = key;
  m->values[i] = value;
  m->n++;
  return value;
}
