/* arena.c — per-session bump allocator.  One block, allocated at session open from
 * sizes planned at model load; forward() only bumps and resets, never mallocs. */
#include "engine/arena.h"

#include <stdlib.h>

size_t arena_round(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

int arena_init(arena *a, size_t size)
{
    /* A failed init leaves an empty arena, so a later alloc returns NULL rather
     * than an offset from NULL; a size that wraps when rounded is a failure, not
     * a zero-byte arena. */
    size_t rounded = arena_round(size ? size : 1);
    a->base = rounded >= size ? aligned_alloc(ARENA_ALIGN, rounded) : NULL;
    a->size = a->base ? rounded : 0;
    a->used = 0;
    return a->base ? 0 : -1;
}

void arena_free(arena *a)
{
    free(a->base);
    a->base = NULL;
    a->size = a->used = 0;
}

void *arena_alloc(arena *a, size_t n)
{
    size_t need = arena_round(n);
    if (!a->base || need < n || need > a->size - a->used)
        return NULL;
    void *p = a->base + a->used;
    a->used += need;
    return p;
}

void arena_reset(arena *a)
{
    a->used = 0;
}
