/*  =========================================================================
    sqlite_pcache.c - SQLite's process-wide set-up for the backend: no
    memory statistics, and a page cache that skips needless truncations

    Used by backends/sqlite.c, which calls chat_sqlite_setup before its
    first sqlite3_open_v2; talks to no actor. Both settings are SQLite's
    global configuration (sqlite3_config), so they are made once, before
    SQLite initializes, under a pthread_once: auth and persistence open
    their handles on two threads at the same time.

    Memory statistics. With SQLITE_CONFIG_MEMSTATUS on (Debian's default)
    every allocation SQLite makes takes and releases a global mutex to keep
    sqlite3_memory_used () up to date. chatd never asks for it; off, the
    persistence thread spends 0.5 us less per message at full load
    (docs/benchmarks.md).

    The page cache. It is SQLite's own (pcache1, fetched with
    SQLITE_CONFIG_GETPCACHE2), wrapped. At the end of every transaction
    the pager truncates the cache to the database size; pcache1 does the
    work only if its largest key reached that size, and then walks the
    whole hash table when the largest key is far above it. When a b-tree
    balance splits a page, it swaps the new pages' numbers through a
    temporary key, the locking page (PENDING_BYTE / page size + 1: page
    262,145 with 4 KiB pages), and pcache1 keeps that as its largest key.
    So on a database under 1 GiB, each commit after a split walked every
    page of the cache (64 MiB, 16,384 pages, here): 1,200 times a second
    at 20,000 msgs/s, 4 % of the persistence thread. The wrapper keeps its
    own largest key, not counting the temporary one once the page has left
    it, and hands a truncation on only when some page can be at or above
    the limit; then pcache1's truncation does what it always did.

    Why this is exact: every page enters the cache through xFetch or moves
    through xRekey, and both raise max_key (a move onto the temporary key
    is counted in parked instead, and a move off it lowers parked). So no
    page is above max_key unless parked is not zero, and a truncation
    skipped with iLimit > max_key and parked == 0 would have dropped
    nothing. After a truncation that is handed on, nothing is at or above
    iLimit any more. A parked page that SQLite discards without moving it
    back (an error inside a balance) leaves parked above zero: from then on
    every truncation of that cache is handed on, as before.

    The wrapper's state is per cache, and a cache belongs to one
    connection, which one thread uses at a time (SQLITE_OPEN_NOMUTEX). The
    counters are atomics, read by tests.
    =========================================================================
*/

#include "sqlite_pcache.h"
#include <assert.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

//  SQLite's default PENDING_BYTE: the locking page sits at this offset
#define S_PENDING_BYTE  0x40000000u

//  One cache: SQLite's, and what we know about its keys
typedef struct {
    sqlite3_pcache *inner;              //  pcache1's handle
    unsigned max_key;                   //  No page has a larger key, but parked ones
    unsigned temp_key;                  //  The locking page's number for this page size
    unsigned parked;                    //  Pages now at temp_key
} s_cache_t;

static sqlite3_pcache_methods2 s_inner;         //  pcache1, set once before start
static pthread_once_t s_once = PTHREAD_ONCE_INIT;
static int s_setup_rc = -1;
static atomic_uint_fast64_t s_forwarded;
static atomic_uint_fast64_t s_skipped;
static atomic_uint_fast64_t s_parked;


//  --------------------------------------------------------------------------
//  The methods: pcache1's, with the keys watched

static int
s_init (void *arg)
{
    (void) arg;
    return s_inner.xInit? s_inner.xInit (s_inner.pArg): SQLITE_OK;
}

static void
s_shutdown (void *arg)
{
    (void) arg;
    if (s_inner.xShutdown)
        s_inner.xShutdown (s_inner.pArg);
}

static sqlite3_pcache *
s_create (int page_size, int extra_size, int purgeable)
{
    s_cache_t *self = (s_cache_t *) sqlite3_malloc (sizeof (s_cache_t));
    if (!self)
        return NULL;
    self->inner = s_inner.xCreate (page_size, extra_size, purgeable);
    if (!self->inner) {
        sqlite3_free (self);
        return NULL;
    }
    self->max_key = 0;
    self->temp_key = page_size > 0? S_PENDING_BYTE / (unsigned) page_size + 1: 0;
    self->parked = 0;
    return (sqlite3_pcache *) self;
}

static void
s_cachesize (sqlite3_pcache *cache, int size)
{
    s_inner.xCachesize (((s_cache_t *) cache)->inner, size);
}

static int
s_pagecount (sqlite3_pcache *cache)
{
    return s_inner.xPagecount (((s_cache_t *) cache)->inner);
}

static sqlite3_pcache_page *
s_fetch (sqlite3_pcache *cache, unsigned key, int create)
{
    s_cache_t *self = (s_cache_t *) cache;
    sqlite3_pcache_page *page = s_inner.xFetch (self->inner, key, create);
    if (page && key > self->max_key)
        self->max_key = key;
    return page;
}

static void
s_unpin (sqlite3_pcache *cache, sqlite3_pcache_page *page, int discard)
{
    s_inner.xUnpin (((s_cache_t *) cache)->inner, page, discard);
}

static void
s_rekey (sqlite3_pcache *cache, sqlite3_pcache_page *page, unsigned old_key, unsigned new_key)
{
    s_cache_t *self = (s_cache_t *) cache;
    s_inner.xRekey (self->inner, page, old_key, new_key);
    if (old_key == self->temp_key && self->parked > 0)
        self->parked--;
    if (new_key == self->temp_key) {
        self->parked++;
        atomic_fetch_add_explicit (&s_parked, 1, memory_order_relaxed);
    }
    else
    if (new_key > self->max_key)
        self->max_key = new_key;
}

static void
s_truncate (sqlite3_pcache *cache, unsigned limit)
{
    s_cache_t *self = (s_cache_t *) cache;
    if (self->parked == 0 && limit > self->max_key) {
        atomic_fetch_add_explicit (&s_skipped, 1, memory_order_relaxed);
        return;                         //  Nothing is at or above limit
    }
    atomic_fetch_add_explicit (&s_forwarded, 1, memory_order_relaxed);
    s_inner.xTruncate (self->inner, limit);
    if (self->max_key >= limit)
        self->max_key = limit > 0? limit - 1: 0;
    if (self->temp_key >= limit)
        self->parked = 0;               //  Dropped with the rest
}

static void
s_destroy (sqlite3_pcache *cache)
{
    s_cache_t *self = (s_cache_t *) cache;
    s_inner.xDestroy (self->inner);
    sqlite3_free (self);
}

static void
s_shrink (sqlite3_pcache *cache)
{
    if (s_inner.xShrink)
        s_inner.xShrink (((s_cache_t *) cache)->inner);
}

static const sqlite3_pcache_methods2 s_methods = {
    .iVersion = 1,
    .pArg = NULL,
    .xInit = s_init,
    .xShutdown = s_shutdown,
    .xCreate = s_create,
    .xCachesize = s_cachesize,
    .xPagecount = s_pagecount,
    .xFetch = s_fetch,
    .xUnpin = s_unpin,
    .xRekey = s_rekey,
    .xTruncate = s_truncate,
    .xDestroy = s_destroy,
    .xShrink = s_shrink
};


//  --------------------------------------------------------------------------
//  Set-up, once

static void
s_setup (void)
{
    //  Both fail with SQLITE_MISUSE once SQLite has initialized
    int rc = sqlite3_config (SQLITE_CONFIG_MEMSTATUS, 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_config (SQLITE_CONFIG_GETPCACHE2, &s_inner);
    if (rc == SQLITE_OK && s_inner.xCreate && s_inner.xFetch && s_inner.xRekey
    &&  s_inner.xTruncate && s_inner.xDestroy)
        rc = sqlite3_config (SQLITE_CONFIG_PCACHE2, &s_methods);
    else
    if (rc == SQLITE_OK)
        rc = SQLITE_ERROR;              //  No default cache to wrap
    s_setup_rc = rc == SQLITE_OK? 0: -1;
}

int
chat_sqlite_setup (void)
{
    pthread_once (&s_once, s_setup);
    return s_setup_rc;
}

void
chat_sqlite_pcache_stats (chat_sqlite_pcache_stats_t *stats)
{
    assert (stats);
    stats->truncates_forwarded = atomic_load_explicit (&s_forwarded, memory_order_relaxed);
    stats->truncates_skipped = atomic_load_explicit (&s_skipped, memory_order_relaxed);
    stats->rekeys_parked = atomic_load_explicit (&s_parked, memory_order_relaxed);
}
