/* arena.h — a bump allocator: reserve the worst case once, hand out aligned slices,
 * reset between batches.  Ownership: arena_free() releases the block; slices are
 * never freed one by one.
 */
#ifndef MODELD_ENGINE_ARENA_H
#define MODELD_ENGINE_ARENA_H

#include <stddef.h>

#define ARENA_ALIGN 64 /* a cache line; also AVX-512 friendly */

typedef struct arena {
    unsigned char *base;
    size_t size;
    size_t used;
} arena;

/* Rounds n up to ARENA_ALIGN; the size a slice of n bytes takes in an arena. */
size_t arena_round(size_t n);
int arena_init(arena *a, size_t size); /* 0 on success, -1 on allocation failure */
void arena_free(arena *a);
/* NULL when the arena is exhausted (a planning bug: sizes are computed at load). */
void *arena_alloc(arena *a, size_t n);
void arena_reset(arena *a);

#endif
