/*  =========================================================================
    sqlite_pcache.h - SQLite's process-wide set-up for the backend (see
    sqlite_pcache.c)
    =========================================================================
*/

#ifndef CHAT_SQLITE_PCACHE_H_INCLUDED
#define CHAT_SQLITE_PCACHE_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

//  Configure SQLite before it starts: no memory statistics, and the page
//  cache that skips needless truncations. Runs once per process; later
//  calls only report. Returns 0 if both took effect, -1 if SQLite had
//  already started (then it runs as it was, correct but slower).
int chat_sqlite_setup (void);

//  What the page cache did since start (all connections): truncations
//  handed on to SQLite's cache, truncations skipped because no page was
//  at or above the limit, and pages moved onto the temporary key
typedef struct {
    uint64_t truncates_forwarded;
    uint64_t truncates_skipped;
    uint64_t rekeys_parked;
} chat_sqlite_pcache_stats_t;

void chat_sqlite_pcache_stats (chat_sqlite_pcache_stats_t *stats);

#endif
