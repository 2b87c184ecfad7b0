/* arena.h: one bump allocator per compilation.
 *
 * Everything the compiler builds for one .nn file — AST, IR nodes, strings,
 * tables — is allocated here and freed at once with nnc_arena_destroy. There
 * is no per-object free. Allocation failure aborts (the compiler cannot make
 * progress without memory and has nothing half-written to protect).
 */
#ifndef NNC_ARENA_H
#define NNC_ARENA_H

#include <stddef.h>

typedef struct nnc_arena_chunk nnc_arena_chunk;
typedef struct nnc_arena {
  nnc_arena_chunk *head;
  size_t total; /* bytes handed out, for statistics */
} nnc_arena;

void nnc_arena_init(nnc_arena *a);
void nnc_arena_destroy(nnc_arena *a);
/* Zeroed memory aligned to 16 bytes. */
void *nnc_arena_alloc(nnc_arena *a, size_t size);
/* Grows an array allocated here: a new copy of n*elem bytes, old contents kept. */
void *nnc_arena_grow(nnc_arena *a, void *old, size_t old_bytes, size_t new_bytes);
char *nnc_arena_strdup(nnc_arena *a, const char *s);
char *nnc_arena_strndup(nnc_arena *a, const char *s, size_t n);
char *nnc_arena_printf(nnc_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
