/*  =========================================================================
    sqlite_client_ids.c - which client_ids each sender has used, for the
    SQLite backend's message_store

    Owns, for the one backend handle that stores messages (persistence's):
    the client_ids of the messages stored since the last merge, in memory,
    and the merge of them into the client_ids table. Called by sqlite.c
    only, on that handle's thread; talks to no actor.

    Why. A sender's client_id is answered as a duplicate forever
    (docs/protocol.md), so the database needs every (sender, client_id).
    As an index of private_messages (schema 1 and 2) each message put an
    entry into its sender's leaf of that index: with many senders, one more
    B-tree page a message to dirty, write into the WAL, sync and checkpoint.
    chat-bench at window 8 (1,000 users, docs/benchmarks.md, thirteenth
    session): 67,000-76,000 acks/s with that index, 92,000-101,000 without
    any dedupe; this design gave 0-14 % more than the index in the same
    rounds (the look-up in client_ids is a statement a message).

    How. Every message is a row of private_messages with its client_id, so
    the rows are the durable record; the client_ids table (sender_id,
    client_id) -> message_id is an index of them kept up to
    client_ids_merged.through_id: every message with an id at most that
    has its entry in the table. The entries of later messages are here, in
    a chat_idmap keyed by SipHash (libsodium's crypto_shorthash, a random
    key per process, so that chosen client_ids cannot make it slow). When
    it holds merge_at entries (sqlite.c: 65,536) a merge starts: the
    entries, sorted by sender, go into the table a chunk per commit, in
    the same transaction as that commit's messages (twice as many as the
    commit stores, 64 to 4,096), and the last chunk moves through_id. So
    one merge writes each sender's leaf once for all its entries, instead
    of once per message. Until its merge commits an entry stays here too.

    After a restart the entries above through_id are read back from the
    rows (a range of rowids, at most about merge_at plus a merge's worth).
    Rows stored by another connection of the same file are read in the
    same way at the start of each transaction (none, normally: a rowid
    probe). A rolled back transaction takes its entries back out. Another
    handle that writes the same file may merge too: each transaction reads
    through_id first, and what another handle moved it past leaves memory
    (with a merge of ours in progress, whose entries are then in the
    table), so that no handle keeps more than its share; through_id only
    moves up.

    The entries are also kept in an array in message order (ids only grow
    as they are entered), so what leaves memory is always its oldest or
    its newest part: a merge that is done and another handle's merge take
    from the front, a rollback from the back, and none of them needs
    memory. A merge starts from a copy of that array, sorted by sender with
    a radix sort into arrays kept from merge to merge: 0.8-1.4 ms for
    65,536 entries (2.7 ms the first time, which allocates them), where
    collecting them from the map and qsort took 12-18 ms, inside the
    commit whose answers waited for it (docs/benchmarks.md, eighteenth
    session). For the same reason a merge's entries leave memory a
    sixteenth of merge_at a commit (or twice what the commit stored, if
    more) once it is done, not all at once (4-6 ms), and the next merge
    starts once they are gone.

    Out of memory: an entry that cannot be entered fails its store (-1:
    the backend fails the batch, which is answered storage_unavailable); a
    merge that cannot start stays undone until a later commit starts it.
    =========================================================================
*/

#include "sqlite_client_ids.h"
#include "chat_idmap.h"
#include <assert.h>
#include <czmq.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_CHUNK_MIN     64              //  Entries a commit merges, at least
#define S_CHUNK_MAX     4096            //  And at most
#define S_DROP_COMMITS  16              //  A merge_at's worth of merged
                                        //  entries leaves memory in as many
                                        //  commits

//  One client_id of one message. The map's key is its SipHash; entries
//  whose keys share a hash (in practice never) are chained.
typedef struct s_entry_t {
    struct s_entry_t *next;             //  Next entry with the same hash
    uint64_t key;                       //  Its key in the map
    int64_t sender_id;                  //  Who sent it
    int64_t message_id;                 //  The first message with it
    size_t len;                         //  Bytes of client_id
    char client_id [];                  //  len bytes, then a NUL
} s_entry_t;

//  An entry in the message order array or in a merge, with what a merge
//  is sorted by, so that the sort reads no entry
typedef struct {
    int64_t sender_id;                  //  The entry's
    int64_t message_id;                 //  The entry's
    s_entry_t *entry;                   //  The entry (owned by the map)
} s_item_t;

struct chat_sqlite_ids_t {
    sqlite3 *db;                        //  The writer's connection (not ours)
    char *path;                         //  Database file, for log lines
    sqlite3_stmt *tail;                 //  Rows above an id, ascending
    sqlite3_stmt *find;                 //  A client_id's entry in the table
    sqlite3_stmt *merge;                //  One entry into the table
    sqlite3_stmt *through;              //  Move client_ids_merged.through_id
    sqlite3_stmt *read_through;         //  Read it
    unsigned char key [crypto_shorthash_KEYBYTES];  //  SipHash key
    chat_idmap_t map;                   //  Key -> chain of s_entry_t
    size_t count;                       //  Entries in the map, which are
    s_item_t *order;                    //  order [head .. head + count - 1],
    size_t head;                        //  oldest message first
    size_t order_size;                  //  Slots of order
    int64_t seen;                       //  Every committed row with id <= seen
                                        //  is in the table or in the map
    int64_t open_seen;                  //  The same, inside the transaction
    size_t open_stored;                 //  Messages the transaction stored
    int64_t merged_through;             //  through_id as committed
    size_t merge_at;                    //  Entries in memory that start a merge
    bool merging;                       //  A merge is in progress:
    s_item_t *sweep;                    //  its entries, by sender
    size_t sweep_count;                 //  Its entries
    size_t sweep_next;                  //  First entry not yet committed
    size_t sweep_written;               //  Entries the open transaction wrote
    int64_t sweep_through;              //  through_id once the merge is done
    s_item_t *spare;                    //  The sort's other array
    size_t sweep_size;                  //  Slots of sweep and of spare (kept
                                        //  from merge to merge: fresh pages
                                        //  cost a fault each)
    uint64_t sweeps;                    //  Merges finished
    uint64_t merged;                    //  Entries committed into the table
};


//  --------------------------------------------------------------------------
//  The entries in memory: a chat_idmap keyed by SipHash of sender and
//  client_id (0, which the map reserves, counts as 1)

static uint64_t
s_key (chat_sqlite_ids_t *self, int64_t sender_id, const char *client_id, size_t len)
{
    unsigned char pair [crypto_shorthash_BYTES + sizeof (int64_t)];
    crypto_shorthash (pair, (const unsigned char *) client_id, len, self->key);
    memcpy (pair + crypto_shorthash_BYTES, &sender_id, sizeof (int64_t));
    unsigned char out [crypto_shorthash_BYTES];
    crypto_shorthash (out, pair, sizeof pair, self->key);
    uint64_t key;
    memcpy (&key, out, sizeof key);
    return key? key: 1;
}

static s_entry_t *
s_lookup (chat_sqlite_ids_t *self, uint64_t key, int64_t sender_id,
          const char *client_id, size_t len)
{
    s_entry_t *entry = (s_entry_t *) chat_idmap_get (&self->map, key);
    while (entry && (entry->sender_id != sender_id || entry->len != len
                     || memcmp (entry->client_id, client_id, len) != 0))
        entry = entry->next;
    return entry;
}

//  Room for one more entry at the end of order: 0, or -1 if memory runs out
static int
s_order_room (chat_sqlite_ids_t *self)
{
    if (self->head + self->count < self->order_size)
        return 0;
    if (self->head > self->count) {
        //  Most slots are free at the front: slide the entries down
        memmove (self->order, self->order + self->head, self->count * sizeof (s_item_t));
        self->head = 0;
        return 0;
    }
    size_t size = self->order_size? self->order_size * 2: 1024;
    s_item_t *order = (s_item_t *) realloc (self->order, size * sizeof (s_item_t));
    if (!order)
        return -1;
    self->order = order;
    self->order_size = size;
    return 0;
}

//  Enter a client_id that is not in the map, of a message newer than every
//  entry's: 0, or -1 (logged) if memory runs out
static int
s_put (chat_sqlite_ids_t *self, uint64_t key, int64_t sender_id, const char *client_id,
       size_t len, int64_t message_id)
{
    assert (self->count == 0
        ||  message_id > self->order [self->head + self->count - 1].message_id);
    s_entry_t *entry = s_order_room (self) == 0
                     ? (s_entry_t *) malloc (sizeof (s_entry_t) + len + 1): NULL;
    if (!entry) {
        zsys_error ("sqlite %s: client ids: out of memory", self->path);
        return -1;
    }
    entry->next = (s_entry_t *) chat_idmap_get (&self->map, key);
    entry->key = key;
    entry->sender_id = sender_id;
    entry->message_id = message_id;
    entry->len = len;
    memcpy (entry->client_id, client_id, len);
    entry->client_id [len] = 0;
    if (chat_idmap_put (&self->map, key, entry) != 0) {
        zsys_error ("sqlite %s: client ids: out of memory", self->path);
        free (entry);
        return -1;
    }
    self->order [self->head + self->count] = (s_item_t) { sender_id, message_id, entry };
    self->count++;
    return 0;
}

//  Take an entry out of the map and free it (its caller takes it out of
//  order)
static void
s_unmap (chat_sqlite_ids_t *self, s_entry_t *entry)
{
    s_entry_t *head = (s_entry_t *) chat_idmap_get (&self->map, entry->key);
    if (head == entry) {
        if (entry->next) {
            //  A replacement: it never fails (chat_idmap.h)
            int rc = chat_idmap_put (&self->map, entry->key, entry->next);
            assert (rc == 0);
            (void) rc;
        }
        else
            chat_idmap_remove (&self->map, entry->key);
    }
    else {
        while (head->next != entry)
            head = head->next;
        head->next = entry->next;
    }
    free (entry);
}

//  Take out the entry of the oldest message
static void
s_drop_oldest (chat_sqlite_ids_t *self)
{
    assert (self->count > 0);
    s_unmap (self, self->order [self->head].entry);
    self->head++;
    self->count--;
    if (self->count == 0)
        self->head = 0;
}

//  Take out the entry of the newest message
static void
s_drop_newest (chat_sqlite_ids_t *self)
{
    assert (self->count > 0);
    s_unmap (self, self->order [self->head + self->count - 1].entry);
    self->count--;
    if (self->count == 0)
        self->head = 0;
}

//  The message id of the oldest / newest entry (count > 0)
#define S_OLDEST(self)  ((self)->order [(self)->head].message_id)
#define S_NEWEST(self)  ((self)->order [(self)->head + (self)->count - 1].message_id)


//  --------------------------------------------------------------------------
//  Constructor and destructor

static int
s_fail (chat_sqlite_ids_t *self, const char *what)
{
    zsys_error ("sqlite %s: client ids: %s: %s", self->path, what, sqlite3_errmsg (self->db));
    return -1;
}

//  Take in the rows above open_seen (their client_ids, and how far they go)
static int
s_read_tail (chat_sqlite_ids_t *self)
{
    sqlite3_bind_int64 (self->tail, 1, self->open_seen);
    int rc;
    while ((rc = sqlite3_step (self->tail)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64 (self->tail, 0);
        const char *client_id = (const char *) sqlite3_column_text (self->tail, 2);
        int64_t sender_id = sqlite3_column_int64 (self->tail, 1);
        size_t len = (size_t) sqlite3_column_bytes (self->tail, 2);
        //  A client_id already there keeps its earlier message
        uint64_t key = client_id? s_key (self, sender_id, client_id, len): 0;
        if (client_id && !s_lookup (self, key, sender_id, client_id, len)
        &&  s_put (self, key, sender_id, client_id, len, id) != 0) {
            sqlite3_reset (self->tail);
            return -1;
        }
        if (id > self->open_seen)
            self->open_seen = id;
    }
    sqlite3_reset (self->tail);
    return rc == SQLITE_DONE? 0: s_fail (self, "read the newest messages");
}

//  client_ids_merged.through_id as the transaction sees it
static int
s_read_through (chat_sqlite_ids_t *self, int64_t *through)
{
    int rc = sqlite3_step (self->read_through);
    if (rc == SQLITE_ROW)
        *through = sqlite3_column_int64 (self->read_through, 0);
    sqlite3_reset (self->read_through);
    return rc == SQLITE_ROW? 0: s_fail (self, "read through_id");
}

chat_sqlite_ids_t *
chat_sqlite_ids_new (sqlite3 *db, const char *path, size_t merge_at)
{
    assert (db);
    assert (path);
    assert (merge_at > 0);
    if (sodium_init () < 0) {
        zsys_error ("sqlite %s: client ids: libsodium does not start", path);
        return NULL;
    }
    chat_sqlite_ids_t *self = (chat_sqlite_ids_t *) zmalloc (sizeof (chat_sqlite_ids_t));
    assert (self);
    self->db = db;
    self->path = strdup (path);
    assert (self->path);
    self->merge_at = merge_at;
    crypto_shorthash_keygen (self->key);
    chat_idmap_init (&self->map);

    if (sqlite3_prepare_v2 (db,
            "SELECT id, sender_id, client_id FROM private_messages WHERE id > ?1 ORDER BY id",
            -1, &self->tail, NULL) != SQLITE_OK
    ||  sqlite3_prepare_v2 (db,
            "SELECT message_id FROM client_ids WHERE sender_id = ?1 AND client_id = ?2",
            -1, &self->find, NULL) != SQLITE_OK
    ||  sqlite3_prepare_v2 (db,
            "INSERT OR IGNORE INTO client_ids (sender_id, client_id, message_id) VALUES (?1, ?2, ?3)",
            -1, &self->merge, NULL) != SQLITE_OK
    ||  sqlite3_prepare_v2 (db, "UPDATE client_ids_merged SET through_id = max (through_id, ?1)",
                            -1, &self->through, NULL) != SQLITE_OK
    ||  sqlite3_prepare_v2 (db, "SELECT through_id FROM client_ids_merged",
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
    chat_sqlite_ids_destroy (&self);
    return NULL;
}

void
chat_sqlite_ids_destroy (chat_sqlite_ids_t **self_p)
{
    assert (self_p);
    chat_sqlite_ids_t *self = *self_p;
    if (self) {
        sqlite3_finalize (self->tail);
        sqlite3_finalize (self->find);
        sqlite3_finalize (self->merge);
        sqlite3_finalize (self->through);
        sqlite3_finalize (self->read_through);
        size_t cursor = 0;
        uint64_t key;
        void *value;
        while (chat_idmap_next (&self->map, &cursor, &key, &value))
            for (s_entry_t *entry = (s_entry_t *) value, *next; entry; entry = next) {
                next = entry->next;
                free (entry);
            }
        chat_idmap_release (&self->map);
        free (self->order);
        free (self->sweep);
        free (self->spare);
        free (self->path);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Inside a transaction

//  Another handle moved through_id up to through: every entry up to it is
//  in the table, so it leaves memory, and a merge of ours in progress is
//  dropped (its entries above through go into the next merge)
static void
s_merged_elsewhere (chat_sqlite_ids_t *self, int64_t through)
{
    self->merging = false;
    while (self->count > 0 && S_OLDEST (self) <= through)
        s_drop_oldest (self);
    self->merged_through = through;
    if (self->seen < through)
        self->seen = through;
}

int
chat_sqlite_ids_begin (chat_sqlite_ids_t *self)
{
    assert (self);
    int64_t through;
    if (s_read_through (self, &through))
        return -1;
    if (through > self->merged_through)
        s_merged_elsewhere (self, through);
    self->open_seen = self->seen;
    self->open_stored = 0;
    self->sweep_written = 0;
    return s_read_tail (self);
}

int
chat_sqlite_ids_find (chat_sqlite_ids_t *self, int64_t sender_id, const char *client_id,
                      size_t len, uint64_t *key, int64_t *message_id)
{
    assert (self);
    assert (client_id);
    assert (key);
    assert (message_id);
    *key = s_key (self, sender_id, client_id, len);
    s_entry_t *entry = s_lookup (self, *key, sender_id, client_id, len);
    if (entry) {
        *message_id = entry->message_id;
        return 1;
    }
    sqlite3_bind_int64 (self->find, 1, sender_id);
    sqlite3_bind_text (self->find, 2, client_id, (int) len, SQLITE_STATIC);
    int rc = sqlite3_step (self->find);
    if (rc == SQLITE_ROW)
        *message_id = sqlite3_column_int64 (self->find, 0);
    sqlite3_reset (self->find);
    if (rc == SQLITE_ROW)
        return 1;
    return rc == SQLITE_DONE? 0: s_fail (self, "find");
}

int
chat_sqlite_ids_add (chat_sqlite_ids_t *self, int64_t sender_id, const char *client_id,
                     size_t len, uint64_t key, int64_t message_id)
{
    assert (self);
    assert (message_id > self->open_seen);
    self->open_seen = message_id;
    self->open_stored++;
    return client_id? s_put (self, key, sender_id, client_id, len, message_id): 0;
}

int
chat_sqlite_ids_flush (chat_sqlite_ids_t *self)
{
    assert (self);
    assert (self->sweep_written == 0);
    if (!self->merging)
        return 0;
    size_t chunk = self->open_stored * 2;
    if (chunk < S_CHUNK_MIN)
        chunk = S_CHUNK_MIN;
    if (chunk > S_CHUNK_MAX)
        chunk = S_CHUNK_MAX;
    if (chunk > self->sweep_count - self->sweep_next)
        chunk = self->sweep_count - self->sweep_next;
    for (size_t i = 0; i < chunk; i++) {
        s_item_t *item = &self->sweep [self->sweep_next + i];
        sqlite3_bind_int64 (self->merge, 1, item->sender_id);
        sqlite3_bind_text (self->merge, 2, item->entry->client_id, (int) item->entry->len,
                           SQLITE_STATIC);
        sqlite3_bind_int64 (self->merge, 3, item->message_id);
        int rc = sqlite3_step (self->merge);
        sqlite3_reset (self->merge);
        if (rc != SQLITE_DONE)
            return s_fail (self, "merge");
    }
    if (self->sweep_next + chunk == self->sweep_count) {
        sqlite3_bind_int64 (self->through, 1, self->sweep_through);
        int rc = sqlite3_step (self->through);
        sqlite3_reset (self->through);
        if (rc != SQLITE_DONE)
            return s_fail (self, "move through_id");
    }
    self->sweep_written = chunk;
    return 0;
}

//  Sort count (> 0) items by sender: a chunk then fills one sender's
//  leaves of the table after the other (the order within a sender's few
//  leaves does not change which pages it dirties), and the sort reads no
//  entry. A radix sort of from into out and spare (each as large), a byte
//  a pass from the lowest, each pass a stable counting sort into the other
//  array; bytes that are the same in every item (most of them: user ids
//  are small) are skipped. Returns the array that holds the result, out or
//  spare.
static s_item_t *
s_sort_by_sender (const s_item_t *from, s_item_t *out, s_item_t *spare, size_t count)
{
    //  The bits in which some sender differs from the first one
    uint64_t first = (uint64_t) from [0].sender_id;
    uint64_t differ = 0;
    for (size_t i = 1; i < count; i++)
        differ |= (uint64_t) from [i].sender_id ^ first;
    const s_item_t *in = from;
    for (int shift = 0; shift < 64; shift += 8) {
        if (((differ >> shift) & 0xff) == 0)
            continue;
        size_t at [256] = { 0 };
        for (size_t i = 0; i < count; i++)
            at [((uint64_t) in [i].sender_id >> shift) & 0xff]++;
        size_t sum = 0;
        for (int digit = 0; digit < 256; digit++) {
            size_t here = at [digit];
            at [digit] = sum;
            sum += here;
        }
        for (size_t i = 0; i < count; i++)
            out [at [((uint64_t) in [i].sender_id >> shift) & 0xff]++] = in [i];
        s_item_t *written = out;
        out = spare;
        spare = written;
        in = written;
    }
    if (in == from) {
        memcpy (out, from, count * sizeof (s_item_t));
        return out;
    }
    return spare;                       //  The array the last pass wrote
}

//  Start a merge of every entry (none of them merged before). If memory
//  runs out (logged) none starts; the next commit tries again, and the
//  entries stay here meanwhile.
static void
s_sweep_start (chat_sqlite_ids_t *self)
{
    assert (self->count > 0);
    if (self->sweep_size < self->count) {
        size_t size = self->sweep_size? self->sweep_size: 1024;
        while (size < self->count)
            size *= 2;
        free (self->sweep);
        free (self->spare);
        self->sweep = (s_item_t *) malloc (size * sizeof (s_item_t));
        self->spare = (s_item_t *) malloc (size * sizeof (s_item_t));
        self->sweep_size = self->sweep && self->spare? size: 0;
        if (!self->sweep_size) {
            zsys_error ("sqlite %s: client ids: out of memory to start a merge", self->path);
            free (self->sweep);
            free (self->spare);
            self->sweep = self->spare = NULL;
            return;
        }
    }
    s_item_t *sorted = s_sort_by_sender (self->order + self->head, self->sweep, self->spare,
                                         self->count);
    if (sorted == self->spare) {
        self->spare = self->sweep;
        self->sweep = sorted;
    }
    self->merging = true;
    self->sweep_count = self->count;
    self->sweep_next = 0;
    self->sweep_through = self->seen;
}

void
chat_sqlite_ids_committed (chat_sqlite_ids_t *self)
{
    assert (self);
    self->seen = self->open_seen;
    if (self->merging) {
        self->sweep_next += self->sweep_written;
        self->merged += self->sweep_written;
        if (self->sweep_next == self->sweep_count) {
            //  Every entry of the merge is in the table now: they leave
            //  memory over the next commits (below)
            self->merged_through = self->sweep_through;
            self->merging = false;
            self->sweeps++;
        }
    }
    //  Merged entries (the oldest, up to merged_through) leave memory a
    //  share a commit: taking all 65,536 out at once took 4-6 ms, which the
    //  commit's answers waited for. The share is at least twice what the
    //  commit stored, so memory cannot grow faster than it empties. Until
    //  they are gone they answer as the table would, and no merge starts.
    size_t drop = self->merge_at / S_DROP_COMMITS + 1;
    if (drop < self->open_stored * 2)
        drop = self->open_stored * 2;
    for (size_t n = 0; n < drop && self->count > 0
                       && S_OLDEST (self) <= self->merged_through; n++)
        s_drop_oldest (self);
    bool merged_left = self->count > 0 && S_OLDEST (self) <= self->merged_through;
    if (!self->merging && !merged_left && self->count >= self->merge_at)
        s_sweep_start (self);
    self->open_stored = 0;
    self->sweep_written = 0;
}

void
chat_sqlite_ids_rolled_back (chat_sqlite_ids_t *self)
{
    assert (self);
    //  What the transaction entered has ids above seen: the newest
    //  entries. A merge's entries are all at most seen, so the merge goes
    //  on from where it was.
    while (self->count > 0 && S_NEWEST (self) > self->seen)
        s_drop_newest (self);
    self->open_seen = self->seen;
    self->open_stored = 0;
    self->sweep_written = 0;
}

chat_sqlite_ids_stats_t
chat_sqlite_ids_stats (chat_sqlite_ids_t *self)
{
    assert (self);
    chat_sqlite_ids_stats_t stats = {
        .in_memory = self->count,
        .merged_through = self->merged_through,
        .sweeps = self->sweeps,
        .merged = self->merged
    };
    return stats;
}
