/*  =========================================================================
    chat_idmap.c - id to pointer map (include/chat_idmap.h)
    =========================================================================
*/

#include "chat_idmap.h"
#include <assert.h>
#include <stdlib.h>

static size_t
s_slot (uint64_t key, size_t capacity)
{
    //  Fibonacci hashing spreads sequential ids over the table
    return (size_t) ((key * 11400714819323198485ull) >> 17) & (capacity - 1);
}

//  The slot that holds key, or the empty slot that ends its probe run
static size_t
s_find (const chat_idmap_t *map, uint64_t key)
{
    size_t i = s_slot (key, map->capacity);
    while (map->keys [i] && map->keys [i] != key)
        i = (i + 1) & (map->capacity - 1);
    return i;
}

void
chat_idmap_init (chat_idmap_t *map)
{
    map->keys = NULL;
    map->values = NULL;
    map->capacity = 0;
    map->count = 0;
}

void
chat_idmap_release (chat_idmap_t *map)
{
    free (map->keys);
    free (map->values);
    chat_idmap_init (map);
}

void *
chat_idmap_get (const chat_idmap_t *map, uint64_t key)
{
    assert (key);
    if (!map->capacity)
        return NULL;
    size_t i = s_find (map, key);
    return map->keys [i]? map->values [i]: NULL;
}

static int
s_grow (chat_idmap_t *map)
{
    size_t capacity = map->capacity ? map->capacity * 2 : 64;
    uint64_t *keys = (uint64_t *) calloc (capacity, sizeof (uint64_t));
    void **values = (void **) calloc (capacity, sizeof (void *));
    if (!keys || !values) {
        free (keys);
        free (values);
        return -1;
    }
    for (size_t i = 0; i < map->capacity; i++)
        if (map->keys [i]) {
            size_t j = s_slot (map->keys [i], capacity);
            while (keys [j])
                j = (j + 1) & (capacity - 1);
            keys [j] = map->keys [i];
            values [j] = map->values [i];
        }
    free (map->keys);
    free (map->values);
    map->keys = keys;
    map->values = values;
    map->capacity = capacity;
    return 0;
}

int
chat_idmap_put (chat_idmap_t *map, uint64_t key, void *value)
{
    assert (key);
    size_t i = map->capacity? s_find (map, key): 0;
    //  Only a new key can need the map to grow: a replacement never fails
    if (!map->capacity || !map->keys [i]) {
        if ((map->count + 1) * 4 > map->capacity * 3) {
            if (s_grow (map) != 0)
                return -1;
            i = s_find (map, key);
        }
        map->count++;
    }
    map->keys [i] = key;
    map->values [i] = value;
    return 0;
}

void *
chat_idmap_remove (chat_idmap_t *map, uint64_t key)
{
    assert (key);
    if (!map->capacity)
        return NULL;
    size_t mask = map->capacity - 1;
    size_t i = s_find (map, key);
    if (!map->keys [i])
        return NULL;
    void *value = map->values [i];
    //  Backward-shift: move later entries of the probe run into the hole
    size_t hole = i;
    for (size_t j = (i + 1) & mask; map->keys [j]; j = (j + 1) & mask) {
        size_t home = s_slot (map->keys [j], map->capacity);
        //  Entry j may move to hole if its home is not in (hole, j]
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            map->keys [hole] = map->keys [j];
            map->values [hole] = map->values [j];
            hole = j;
        }
    }
    map->keys [hole] = 0;
    map->values [hole] = NULL;
    map->count--;
    return value;
}

int
chat_idmap_next (const chat_idmap_t *map, size_t *cursor, uint64_t *key, void **value)
{
    for (size_t i = *cursor; i < map->capacity; i++)
        if (map->keys [i]) {
            *key = map->keys [i];
            *value = map->values [i];
            *cursor = i + 1;
            return 1;
        }
    *cursor = map->capacity;
    return 0;
}
