/*  =========================================================================
    sqlite_pairs.c - each conversation direction's message ids, for the
    SQLite backend's history, sync, mark_read and conversations

    Owns, for one backend handle: the (sender, receiver, id) of the
    messages stored since the last merge, in memory, and the merge of them
    into the message_pairs table. Called by sqlite.c only, on that
    handle's thread; talks to no actor.

    Why. History pages, sync's streams, the unread counts and mark_read
    all read one direction of a conversation by id. As an index of
    private_messages (schema 1 to 3, private_messages_pair) each message
    put an entry into its pair's leaf of that index: with many
    conversations, one more B-tree page a message to dirty, write into the
    WAL, sync and checkpoint. chat-bench at window 8 (1,000 users,
    docs/benchmarks.md, fifteenth session): 73,000-85,000 acks/s with the
    index, 85,000-98,000 with none (no history possible), 87,000-98,000
    with this design, in the same rounds.

    How. The rows of private_messages are the durable record; the
    message_pairs table (sender_id, receiver_id, id) is an index of them
    kept up to message_pairs_merged.through_id: every message with an id
    at most that has its entry in the table. The ids of later messages
    are here, per direction an ascending array, in a chat_idmap keyed by
    the pair itself: sender and receiver (each below 2^32) packed into 64
    bits and scrambled by a bijection with a random key per process
    (s_key), so that every direction has a key of its own and nobody can
    aim directions at one slot. So one direction is the table's rows with id <= through,
    then the ids in memory, which are all above through. When merge_at ids
    are here a merge starts: the directions, sorted, go into the table a
    chunk per commit, in the same transaction as that commit's messages
    (twice as many ids as the commit stores, 64 to 4,096), and the last
    chunk moves through_id. So one merge writes each leaf of the table
    once for all its entries, instead of once per message. Until its merge
    commits an id stays here too.

    After a restart the ids above through_id are read back from the rows
    (a range of rowids, at most about merge_at plus a merge's worth). Rows
    stored by another connection of the same file are read in the same
    way at the start of each transaction (none, normally: a rowid probe).
    A rolled back transaction takes its ids back out. Another handle that
    writes the same file may merge too: each transaction reads through_id
    first, and what another handle moved it past leaves memory (with a
    merge of ours in progress, whose ids are then in the table), so that
    no handle keeps more than its share; through_id only moves up. The
    same design as sqlite_client_ids.c, which does this for the senders'
    client_ids.
    =========================================================================
*/

#include "sqlite_pairs.h"
#include "chat_idmap.h"
#include <assert.h>
#include <czmq.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_CHUNK_MIN     64              //  Ids a commit merges, at least
#define S_CHUNK_MAX     4096            //  And at most
#define S_IDS_INITIAL   2               //  First array of a direction

//  One direction of a conversation and its ids in memory
typedef struct {
    uint64_t key;                       //  Its key in the map (s_key)
    int64_t sender_id;                  //  From
    int64_t receiver_id;                //  To
    int64_t *ids;                       //  Ascending, all above merged_through
    size_t count;                       //  Ids in use
    size_t size;                        //  Ids allocated
    size_t swept;                       //  The prefix of ids the merge in
                                        //  progress writes (0: not in it)
} s_pair_t;

//  User ids up to this fit a key (sqlite.c: ids are the users table's rowids)
#define S_USER_ID_MAX   INT64_C (0xFFFFFFFF)

struct chat_sqlite_pairs_t {
    sqlite3 *db;                        //  The handle's connection (not ours)
    char *path;                         //  Database file, for log lines
    sqlite3_stmt *tail;                 //  Rows above an id, ascending
    sqlite3_stmt *merge;                //  One entry into the table
    sqlite3_stmt *through;              //  Move message_pairs_merged.through_id
    sqlite3_stmt *read_through;         //  Read it
    uint64_t secret;                    //  Random, for s_key
    chat_idmap_t map;                   //  Key -> s_pair_t, one a direction
    size_t count;                       //  Ids in memory
    int64_t seen;                       //  Every committed row with id <= seen
                                        //  is in the table or in memory
    int64_t open_seen;                  //  The same, inside the transaction
    size_t open_stored;                 //  Messages the transaction stored
    int64_t merged_through;             //  through_id as committed
    size_t merge_at;                    //  Ids in memory that start a merge
    s_pair_t **sweep;                   //  The merge in progress, by pair
    size_t sweep_pairs;                 //  Its pairs
    size_t sweep_pair;                  //  Where its next uncommitted id is:
    size_t sweep_offset;                //  sweep [pair]->ids [offset]
    size_t open_pair;                   //  Where it is after the chunk the
    size_t open_offset;                 //  open transaction wrote
    size_t open_written;                //  Ids in that chunk
    int64_t sweep_through;              //  through_id once the merge is done
    uint64_t sweeps;                    //  Merges finished
    uint64_t merged;                    //  Ids committed into the table
};


//  --------------------------------------------------------------------------
//  The ids in memory: a chat_idmap keyed by the pair. The pair packed into
//  64 bits, XORed with the secret and put through SplitMix64's finalizer:
//  each step is invertible, so distinct pairs keep distinct keys, and the
//  key spreads over the map's slots. The map reserves 0: the one pair that
//  would get it takes the key of the pair (0, 0), which is no direction.

static uint64_t
s_scramble (uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C (0xBF58476D1CE4E5B9);
    x ^= x >> 27;
    x *= UINT64_C (0x94D049BB133111EB);
    x ^= x >> 31;
    return x;
}

static uint64_t
s_key (chat_sqlite_pairs_t *self, int64_t sender_id, int64_t receiver_id)
{
    assert (sender_id > 0 && sender_id <= S_USER_ID_MAX);
    assert (receiver_id > 0 && receiver_id <= S_USER_ID_MAX);
    uint64_t key = s_scramble ((((uint64_t) sender_id << 32) | (uint64_t) receiver_id)
                               ^ self->secret);
    return key? key: s_scramble (self->secret);
}

static s_pair_t *
s_lookup (chat_sqlite_pairs_t *self, int64_t sender_id, int64_t receiver_id)
{
    return (s_pair_t *) chat_idmap_get (&self->map, s_key (self, sender_id, receiver_id));
}

static void
s_pair_destroy (s_pair_t **pair_p)
{
    s_pair_t *pair = *pair_p;
    if (pair) {
        free (pair->ids);
        free (pair);
        *pair_p = NULL;
    }
}

//  Append id (above the pair's last) to its direction: 0, or -1 (logged)
//  if memory runs out or a user id is beyond what a key holds
static int
s_put (chat_sqlite_pairs_t *self, int64_t sender_id, int64_t receiver_id, int64_t id)
{
    if (sender_id < 1 || sender_id > S_USER_ID_MAX
    ||  receiver_id < 1 || receiver_id > S_USER_ID_MAX) {
        zsys_error ("sqlite %s: pairs: user id %" PRId64 " or %" PRId64 " is beyond %" PRId64,
                    self->path, sender_id, receiver_id, S_USER_ID_MAX);
        return -1;
    }
    uint64_t key = s_key (self, sender_id, receiver_id);
    s_pair_t *pair = (s_pair_t *) chat_idmap_get (&self->map, key);
    if (!pair) {
        pair = (s_pair_t *) calloc (1, sizeof (s_pair_t));
        if (pair)
            pair->ids = (int64_t *) malloc (S_IDS_INITIAL * sizeof (int64_t));
        if (!pair || !pair->ids) {
            s_pair_destroy (&pair);
            goto out_of_memory;
        }
        pair->size = S_IDS_INITIAL;
        pair->key = key;
        pair->sender_id = sender_id;
        pair->receiver_id = receiver_id;
        if (chat_idmap_put (&self->map, key, pair) != 0) {
            s_pair_destroy (&pair);
            goto out_of_memory;
        }
    }
    assert (pair->count == 0 || pair->ids [pair->count - 1] < id);
    if (pair->count == pair->size) {
        int64_t *ids = (int64_t *) realloc (pair->ids, 2 * pair->size * sizeof (int64_t));
        if (!ids)
            goto out_of_memory;
        pair->ids = ids;
        pair->size *= 2;
    }
    pair->ids [pair->count++] = id;
    self->count++;
    return 0;

out_of_memory:
    zsys_error ("sqlite %s: pairs: out of memory", self->path);
    return -1;
}

//  Take a direction with no ids left out of the map and free it
static void
s_remove (chat_sqlite_pairs_t *self, s_pair_t *pair)
{
    assert (pair->count == 0);
    chat_idmap_remove (&self->map, pair->key);
    s_pair_destroy (&pair);
}

//  The first n ids of a direction are in the table: take them out of
//  memory, and the direction with them if none are left
static void
s_drop_prefix (chat_sqlite_pairs_t *self, s_pair_t *pair, size_t n)
{
    assert (n <= pair->count);
    pair->count -= n;
    self->count -= n;
    memmove (pair->ids, pair->ids + n, pair->count * sizeof (int64_t));
    pair->swept = 0;
    if (pair->count == 0)
        s_remove (self, pair);
}

//  Every pair in the map, into a new array (*count of them); NULL (and
//  logged) if memory runs out
static s_pair_t **
s_pairs (chat_sqlite_pairs_t *self, size_t *count)
{
    s_pair_t **pairs = (s_pair_t **) malloc ((self->map.count + 1) * sizeof (s_pair_t *));
    if (!pairs) {
        zsys_error ("sqlite %s: pairs: out of memory", self->path);
        return NULL;
    }
    *count = 0;
    size_t cursor = 0;
    uint64_t key;
    void *value;
    while (chat_idmap_next (&self->map, &cursor, &key, &value))
        pairs [(*count)++] = (s_pair_t *) value;
    return pairs;
}


//  --------------------------------------------------------------------------
//  Constructor and destructor

static int
s_fail (chat_sqlite_pairs_t *self, const char *what)
{
    zsys_error ("sqlite %s: pairs: %s: %s", self->path, what, sqlite3_errmsg (self->db));
    return -1;
}

//  Take in the rows above open_seen
static int
s_read_tail (chat_sqlite_pairs_t *self)
{
    sqlite3_bind_int64 (self->tail, 1, self->open_seen);
    int rc;
    while ((rc = sqlite3_step (self->tail)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64 (self->tail, 0);
        if (s_put (self, sqlite3_column_int64 (self->tail, 1),
                   sqlite3_column_int64 (self->tail, 2), id) != 0) {
            sqlite3_reset (self->tail);
            return -1;
        }
        self->open_seen = id;
    }
    sqlite3_reset (self->tail);
    return rc == SQLITE_DONE? 0: s_fail (self, "read the newest messages");
}

//  message_pairs_merged.through_id as the transaction sees it
static int
s_read_through (chat_sqlite_pairs_t *self, int64_t *through)
{
    int rc = sqlite3_step (self->read_through);
    if (rc == SQLITE_ROW)
        *through = sqlite3_column_int64 (self->read_through, 0);
    sqlite3_reset (self->read_through);
    return rc == SQLITE_ROW? 0: s_fail (self, "read through_id");
}

chat_sqlite_pairs_t *
chat_sqlite_pairs_new (sqlite3 *db, const char *path, size_t merge_at)
{
    assert (db);
    assert (path);
    assert (merge_at > 0);
    if (sodium_init () < 0) {
        zsys_error ("sqlite %s: pairs: libsodium does not start", path);
        return NULL;
    }
    chat_sqlite_pairs_t *self = (chat_sqlite_pairs_t *) zmalloc (sizeof (chat_sqlite_pairs_t));
    assert (self);
    self->db = db;
    self->path = strdup (path);
    assert (self->path);
    self->merge_at = merge_at;
    randombytes_buf (&self->secret, sizeof self->secret);
    chat_idmap_init (&self->map);

    if (sqlite3_prepare_v2 (db,
            "SELECT id, sender_id, receiver_id FROM private_messages WHERE id > ?1 ORDER BY id",
            -1, &self->tail, NULL) != SQLITE_OK
    ||  sqlite3_prepare_v2 (db,
            "INSERT OR IGNORE INTO message_pairs (sender_id, receiver_id, id) VALUES (?1, ?2, ?3)",
            -1, &self->merge, NULL) != SQLITE_OK
    ||  sqlite3_prepare_v2 (db,
            "UPDATE message_pairs_merged SET through_id = max (through_id, ?1)",
            -1, &self->through, NULL) != SQLITE_OK
    ||  sqlite3_prepare_v2 (db, "SELECT through_id FROM message_pairs_merged",
                            -1, &self->read_through, NULL) != SQLITE_OK
    ||  s_read_through (self, &self->merged_through))
        goto failed;
    self->open_seen = self->merged_through;
    if (s_read_tail (self))
        goto failed;
    self->seen = self->open_seen;
    return self;

failed:
    s_fail (self, "load");
    chat_sqlite_pairs_destroy (&self);
    return NULL;
}

void
chat_sqlite_pairs_destroy (chat_sqlite_pairs_t **self_p)
{
    assert (self_p);
    chat_sqlite_pairs_t *self = *self_p;
    if (self) {
        sqlite3_finalize (self->tail);
        sqlite3_finalize (self->merge);
        sqlite3_finalize (self->through);
        sqlite3_finalize (self->read_through);
        size_t cursor = 0;
        uint64_t key;
        void *value;
        while (chat_idmap_next (&self->map, &cursor, &key, &value)) {
            s_pair_t *pair = (s_pair_t *) value;
            s_pair_destroy (&pair);
        }
        chat_idmap_release (&self->map);
        free (self->sweep);
        free (self->path);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Inside a transaction

//  Another handle moved through_id up to through: every id up to it is in
//  the table, so it leaves memory, and a merge of ours in progress is
//  dropped (its ids are at most our seen; those above through go into
//  the next merge). 0, or -1 (logged) if memory runs out.
static int
s_merged_elsewhere (chat_sqlite_pairs_t *self, int64_t through)
{
    size_t count = 0;
    s_pair_t **pairs = s_pairs (self, &count);
    if (!pairs)
        return -1;
    free (self->sweep);
    self->sweep = NULL;
    for (size_t i = 0; i < count; i++) {
        s_pair_t *pair = pairs [i];
        size_t covered = chat_sqlite_pairs_rank (pair->ids, pair->count, through);
        s_drop_prefix (self, pair, covered);
    }
    free (pairs);
    self->merged_through = through;
    if (self->seen < through)
        self->seen = through;
    return 0;
}

int
chat_sqlite_pairs_begin (chat_sqlite_pairs_t *self)
{
    assert (self);
    int64_t through;
    if (s_read_through (self, &through)
    ||  (through > self->merged_through && s_merged_elsewhere (self, through)))
        return -1;
    self->open_seen = self->seen;
    self->open_stored = 0;
    self->open_written = 0;
    return s_read_tail (self);
}

int
chat_sqlite_pairs_add (chat_sqlite_pairs_t *self, int64_t sender_id, int64_t receiver_id,
                       int64_t id)
{
    assert (self);
    assert (id > self->open_seen);
    if (s_put (self, sender_id, receiver_id, id) != 0)
        return -1;
    self->open_seen = id;
    self->open_stored++;
    return 0;
}

int
chat_sqlite_pairs_flush (chat_sqlite_pairs_t *self)
{
    assert (self);
    assert (self->open_written == 0);
    if (!self->sweep)
        return 0;
    size_t chunk = self->open_stored * 2;
    if (chunk < S_CHUNK_MIN)
        chunk = S_CHUNK_MIN;
    if (chunk > S_CHUNK_MAX)
        chunk = S_CHUNK_MAX;
    size_t at = self->sweep_pair, offset = self->sweep_offset, written = 0;
    while (written < chunk && at < self->sweep_pairs) {
        s_pair_t *pair = self->sweep [at];
        sqlite3_bind_int64 (self->merge, 1, pair->sender_id);
        sqlite3_bind_int64 (self->merge, 2, pair->receiver_id);
        sqlite3_bind_int64 (self->merge, 3, pair->ids [offset]);
        int rc = sqlite3_step (self->merge);
        sqlite3_reset (self->merge);
        if (rc != SQLITE_DONE)
            return s_fail (self, "merge");
        written++;
        if (++offset == pair->swept) {
            at++;
            offset = 0;
        }
    }
    if (at == self->sweep_pairs) {
        sqlite3_bind_int64 (self->through, 1, self->sweep_through);
        int rc = sqlite3_step (self->through);
        sqlite3_reset (self->through);
        if (rc != SQLITE_DONE)
            return s_fail (self, "move through_id");
    }
    self->open_pair = at;
    self->open_offset = offset;
    self->open_written = written;
    return 0;
}

//  By sender, then receiver: a chunk then fills the table's leaves one
//  after the other
static int
s_compare (const void *a, const void *b)
{
    const s_pair_t *x = *(const s_pair_t * const *) a;
    const s_pair_t *y = *(const s_pair_t * const *) b;
    if (x->sender_id != y->sender_id)
        return x->sender_id < y->sender_id? -1: 1;
    return x->receiver_id < y->receiver_id? -1: x->receiver_id > y->receiver_id? 1: 0;
}

//  Start a merge of every id in memory (all committed); if memory runs
//  out it starts again after a later commit
static void
s_sweep_start (chat_sqlite_pairs_t *self)
{
    self->sweep = s_pairs (self, &self->sweep_pairs);
    if (!self->sweep)
        return;
    //  Directions a rollback emptied go now
    size_t live = 0;
    for (size_t i = 0; i < self->sweep_pairs; i++)
        if (self->sweep [i]->count)
            self->sweep [live++] = self->sweep [i];
        else
            s_remove (self, self->sweep [i]);
    self->sweep_pairs = live;
    qsort (self->sweep, self->sweep_pairs, sizeof (s_pair_t *), s_compare);
    for (size_t i = 0; i < self->sweep_pairs; i++)
        self->sweep [i]->swept = self->sweep [i]->count;
    self->sweep_pair = 0;
    self->sweep_offset = 0;
    self->sweep_through = self->seen;
}

//  Every id of the merge is in the table: take them out of memory
static void
s_sweep_finish (chat_sqlite_pairs_t *self)
{
    self->merged_through = self->sweep_through;
    for (size_t i = 0; i < self->sweep_pairs; i++) {
        s_pair_t *pair = self->sweep [i];
        assert (pair->swept > 0);
        s_drop_prefix (self, pair, pair->swept);
    }
    free (self->sweep);
    self->sweep = NULL;
    self->sweeps++;
}

void
chat_sqlite_pairs_committed (chat_sqlite_pairs_t *self)
{
    assert (self);
    self->seen = self->open_seen;
    if (self->sweep && self->open_written) {
        self->sweep_pair = self->open_pair;
        self->sweep_offset = self->open_offset;
        self->merged += self->open_written;
        if (self->sweep_pair == self->sweep_pairs)
            s_sweep_finish (self);
    }
    if (!self->sweep && self->count >= self->merge_at)
        s_sweep_start (self);
    self->open_stored = 0;
    self->open_written = 0;
}

void
chat_sqlite_pairs_rolled_back (chat_sqlite_pairs_t *self)
{
    assert (self);
    //  What the transaction took in has ids above seen, at the end of each
    //  direction; a merge's ids are all at most seen, so the merge goes on
    //  from where it was. A direction left empty stays in the map (the
    //  map cannot lose entries while we iterate it) until the next merge
    //  starts.
    if (self->open_seen > self->seen) {
        size_t cursor = 0;
        uint64_t key;
        void *value;
        while (chat_idmap_next (&self->map, &cursor, &key, &value)) {
            s_pair_t *pair = (s_pair_t *) value;
            while (pair->count > 0 && pair->ids [pair->count - 1] > self->seen) {
                pair->count--;
                self->count--;
            }
            assert (pair->count >= pair->swept);
        }
    }
    self->open_seen = self->seen;
    self->open_stored = 0;
    self->open_written = 0;
}


//  --------------------------------------------------------------------------
//  Reading

int64_t
chat_sqlite_pairs_through (chat_sqlite_pairs_t *self)
{
    assert (self);
    return self->merged_through;
}

const int64_t *
chat_sqlite_pairs_ids (chat_sqlite_pairs_t *self, int64_t sender_id, int64_t receiver_id,
                       size_t *count)
{
    assert (self);
    assert (count);
    s_pair_t *pair = sender_id > 0 && sender_id <= S_USER_ID_MAX
                  && receiver_id > 0 && receiver_id <= S_USER_ID_MAX
                   ? s_lookup (self, sender_id, receiver_id): NULL;
    *count = pair? pair->count: 0;
    return pair? pair->ids: NULL;
}

size_t
chat_sqlite_pairs_rank (const int64_t *ids, size_t count, int64_t bound)
{
    assert (ids || count == 0);
    size_t low = 0, high = count;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        if (ids [middle] <= bound)
            low = middle + 1;
        else
            high = middle;
    }
    return low;
}

chat_sqlite_pairs_stats_t
chat_sqlite_pairs_stats (chat_sqlite_pairs_t *self)
{
    assert (self);
    chat_sqlite_pairs_stats_t stats = {
        .in_memory = self->count,
        .merged_through = self->merged_through,
        .sweeps = self->sweeps,
        .merged = self->merged
    };
    return stats;
}
