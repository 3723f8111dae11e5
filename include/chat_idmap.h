/*  =========================================================================
    chat_idmap.h - a map from 64-bit ids to pointers, for one actor's own use

    Open addressing with linear probing and backward-shift deletion: no
    allocation per entry, O(1) lookups on the hot path (connection ids in
    ws-front, user ids in hub and presence). Key 0 is reserved (ids start at 1).
    Not thread-safe: each actor owns its maps.
    =========================================================================
*/

#ifndef CHAT_IDMAP_H_INCLUDED
#define CHAT_IDMAP_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t *keys;                     //  0 = empty slot
    void **values;                      //  Value per slot
    size_t capacity;                    //  Slots, a power of two
    size_t count;                       //  Entries in use
} chat_idmap_t;

void chat_idmap_init (chat_idmap_t *map);
void chat_idmap_release (chat_idmap_t *map);
//  Returns the value or NULL
void *chat_idmap_get (const chat_idmap_t *map, uint64_t key);
//  Insert or replace; returns 0, or -1 if out of memory (only an insert
//  can fail: replacing a key never allocates)
int chat_idmap_put (chat_idmap_t *map, uint64_t key, void *value);
//  Remove; returns the value that was there or NULL
void *chat_idmap_remove (chat_idmap_t *map, uint64_t key);
//  Iterate: size_t i = 0; uint64_t k; void *v; while (chat_idmap_next (map, &i, &k, &v)) ...
//  (do not insert or remove while iterating)
int chat_idmap_next (const chat_idmap_t *map, size_t *cursor, uint64_t *key, void **value);

#endif
