/*  =========================================================================
    test_sqlite_pairs.c - the SQLite backend's pair ids: in memory, merged
    into message_pairs in chunks, never lost, and what history, sync,
    mark_read and conversations read from them

    First a database made by the SQLite backend (every migration), then its
    own connection with a chat_sqlite_pairs_t that merges after 100 ids,
    so that many merges run: stores messages between four users (and to
    oneself) as message_store does (INSERT, add) in transactions of a few,
    and checks after every transaction that each direction read as
    sqlite.c reads it (the table up to through_id, then memory) is exactly
    its rows, across merges, rollbacks (also in the middle of a merge), a
    restart, and rows written by another connection, caught up by a read
    transaction. Two handles on one file, each storing in turn and one
    only reading, each keep no more in memory than one would: what the
    other merged leaves it.

    Then the backend itself, whose merges start at 65,536 ids: 70,000
    messages between three users, so that the history pages, sync pages,
    unread counts and read markers cross the line between the table and
    memory, and again after a reopen.
    =========================================================================
*/

#include "test_util.h"
#include "chat_backend.h"
#include "chat_config.h"
#include "../backends/sqlite_pairs.h"
#include <inttypes.h>
#include <sqlite3.h>

#define S_MERGE_AT  100
#define S_USERS     4

typedef struct {
    char *dir;                          //  Temporary directory
    char path [256];                    //  The database file
    sqlite3 *db;                        //  Our connection
    chat_sqlite_pairs_t *pairs;         //  Under test
    sqlite3 *db2;                       //  A second connection (s_swap)
    chat_sqlite_pairs_t *pairs2;        //  With its own handle
    uint32_t random;                    //  A small LCG, for senders
} s_fixture_t;

static chat_backend_t *
s_backend_open (const char *path)
{
    chat_config_t cfg;
    chat_config_defaults (&cfg);
    snprintf (cfg.sqlite_path, sizeof cfg.sqlite_path, "%s", path);
    char error [256] = "";
    chat_backend_t *backend = chat_backend_sqlite.open (&cfg, error, sizeof error);
    if (!backend)
        fail_msg ("open: %s", error);
    return backend;
}

static int
s_setup (void **state)
{
    s_fixture_t *self = (s_fixture_t *) calloc (1, sizeof (s_fixture_t));
    assert_non_null (self);
    self->dir = chat_test_tmpdir ();
    snprintf (self->path, sizeof self->path, "%s/chat.db", self->dir);
    chat_backend_t *backend = s_backend_open (self->path);
    for (int i = 1; i <= S_USERS; i++) {
        char nickname [16];
        snprintf (nickname, sizeof nickname, "user%d", i);
        int64_t id = 0;
        assert_int_equal (chat_backend_sqlite.user_create (backend, nickname, "h", 1, &id),
                          CHAT_DB_OK);
        assert_int_equal (id, i);
    }
    chat_backend_sqlite.close (&backend);

    assert_int_equal (sqlite3_open (self->path, &self->db), SQLITE_OK);
    chat_test_sql (self->db, "BEGIN");
    self->pairs = chat_sqlite_pairs_new (self->db, self->path, S_MERGE_AT);
    assert_non_null (self->pairs);
    chat_test_sql (self->db, "COMMIT");
    chat_sqlite_pairs_committed (self->pairs);
    self->random = 12345;
    *state = self;
    return 0;
}

static int
s_teardown (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    chat_sqlite_pairs_destroy (&self->pairs);
    chat_sqlite_pairs_destroy (&self->pairs2);
    sqlite3_close (self->db);
    sqlite3_close (self->db2);
    chat_test_rmdir (&self->dir);
    free (self);
    return 0;
}

static void
s_begin (s_fixture_t *self)
{
    chat_test_sql (self->db, "BEGIN IMMEDIATE");
    assert_int_equal (chat_sqlite_pairs_begin (self->pairs), 0);
}

static void
s_commit (s_fixture_t *self)
{
    assert_int_equal (chat_sqlite_pairs_flush (self->pairs), 0);
    chat_test_sql (self->db, "COMMIT");
    chat_sqlite_pairs_committed (self->pairs);
}

static void
s_rollback (s_fixture_t *self)
{
    chat_test_sql (self->db, "ROLLBACK");
    chat_sqlite_pairs_rolled_back (self->pairs);
}

static int64_t
s_user (s_fixture_t *self)
{
    self->random = self->random * 1103515245u + 12345u;
    return 1 + (self->random >> 16) % S_USERS;
}

//  Store a message from sender to receiver as message_store does
static void
s_store (s_fixture_t *self, int64_t sender, int64_t receiver)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (self->db,
        "INSERT INTO private_messages (sender_id, receiver_id, content, created_ms)"
        " VALUES (?1, ?2, 'x', 1)", -1, &stmt, NULL), SQLITE_OK);
    sqlite3_bind_int64 (stmt, 1, sender);
    sqlite3_bind_int64 (stmt, 2, receiver);
    assert_int_equal (sqlite3_step (stmt), SQLITE_DONE);
    sqlite3_finalize (stmt);
    assert_int_equal (chat_sqlite_pairs_add (self->pairs, sender, receiver,
                                             sqlite3_last_insert_rowid (self->db)), 0);
}

//  Each direction, read as sqlite.c reads it (message_pairs up to through,
//  then memory, all above through), is exactly its rows, in id order
static void
s_check_all (s_fixture_t *self)
{
    int64_t through = chat_sqlite_pairs_through (self->pairs);
    sqlite3_stmt *rows = NULL, *table = NULL;
    assert_int_equal (sqlite3_prepare_v2 (self->db,
        "SELECT id FROM private_messages WHERE sender_id = ?1 AND receiver_id = ?2 ORDER BY id",
        -1, &rows, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_prepare_v2 (self->db,
        "SELECT id FROM message_pairs WHERE sender_id = ?1 AND receiver_id = ?2 AND id <= ?3"
        " ORDER BY id", -1, &table, NULL), SQLITE_OK);
    for (int64_t sender = 1; sender <= S_USERS; sender++)
        for (int64_t receiver = 1; receiver <= S_USERS; receiver++) {
            size_t count = 0;
            const int64_t *recent = chat_sqlite_pairs_ids (self->pairs, sender, receiver, &count);
            for (size_t i = 0; i < count; i++)
                assert_true (recent [i] > through);
            sqlite3_bind_int64 (rows, 1, sender);
            sqlite3_bind_int64 (rows, 2, receiver);
            sqlite3_bind_int64 (table, 1, sender);
            sqlite3_bind_int64 (table, 2, receiver);
            sqlite3_bind_int64 (table, 3, through);
            size_t next = 0;
            bool in_table = true;       //  (a DONE statement steps anew)
            while (sqlite3_step (rows) == SQLITE_ROW) {
                int64_t id = sqlite3_column_int64 (rows, 0);
                if (in_table && sqlite3_step (table) == SQLITE_ROW)
                    assert_int_equal (sqlite3_column_int64 (table, 0), id);
                else {
                    in_table = false;
                    assert_true (next < count);
                    assert_int_equal (recent [next++], id);
                }
            }
            if (in_table)
                assert_int_equal (sqlite3_step (table), SQLITE_DONE);
            assert_int_equal (next, count);
            sqlite3_reset (rows);
            sqlite3_reset (table);
        }
    sqlite3_finalize (rows);
    sqlite3_finalize (table);
}

//  The table holds an entry for every message up to through_id, each the
//  right one, and nothing else
static void
s_check_table (s_fixture_t *self)
{
    chat_sqlite_pairs_stats_t stats = chat_sqlite_pairs_stats (self->pairs);
    char sql [512];
    snprintf (sql, sizeof sql,
        "SELECT count (*) FROM private_messages AS m WHERE m.id <= %" PRId64
        " AND NOT EXISTS (SELECT 1 FROM message_pairs AS p WHERE p.id = m.id"
        "  AND p.sender_id = m.sender_id AND p.receiver_id = m.receiver_id)",
        stats.merged_through);
    assert_int_equal (chat_test_sql_int (self->db, sql), 0);
    assert_int_equal (chat_test_sql_int (self->db,
        "SELECT count (*) FROM message_pairs AS p WHERE NOT EXISTS (SELECT 1 FROM"
        "  private_messages AS m WHERE p.id = m.id"
        "  AND p.sender_id = m.sender_id AND p.receiver_id = m.receiver_id)"), 0);
    assert_int_equal (chat_test_sql_int (self->db, "SELECT through_id FROM message_pairs_merged"),
                      stats.merged_through);
}

static void
test_store_and_read (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    for (int tx = 0; tx < 200; tx++) {
        s_begin (self);
        for (int i = 0; i < 3 + tx % 7; i++)
            s_store (self, s_user (self), s_user (self));
        s_commit (self);
        s_check_all (self);
    }
    chat_sqlite_pairs_stats_t stats = chat_sqlite_pairs_stats (self->pairs);
    assert_true (stats.sweeps >= 5);
    assert_true (stats.merged > 500);
    assert_true (stats.merged_through > 0);
    //  At most a merge's worth above the threshold waits in memory
    assert_true (stats.in_memory < 4 * S_MERGE_AT);
    s_check_table (self);

    //  A restart reads the rest back from the rows
    chat_sqlite_pairs_destroy (&self->pairs);
    chat_test_sql (self->db, "BEGIN");
    self->pairs = chat_sqlite_pairs_new (self->db, self->path, S_MERGE_AT);
    assert_non_null (self->pairs);
    chat_test_sql (self->db, "COMMIT");
    chat_sqlite_pairs_committed (self->pairs);
    chat_sqlite_pairs_stats_t after = chat_sqlite_pairs_stats (self->pairs);
    assert_int_equal (after.merged_through, stats.merged_through);
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count (*) FROM private_messages WHERE id > %" PRId64,
              stats.merged_through);
    assert_int_equal ((int64_t) after.in_memory, chat_test_sql_int (self->db, sql));
    s_check_all (self);
    //  And merges go on from there
    for (int tx = 0; tx < 60; tx++) {
        s_begin (self);
        for (int i = 0; i < 6; i++)
            s_store (self, s_user (self), s_user (self));
        s_commit (self);
    }
    s_check_all (self);
    assert_true (chat_sqlite_pairs_stats (self->pairs).merged_through > stats.merged_through);
    s_check_table (self);
}

static void
test_rollback (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    //  Roll back every third transaction, which also drops its chunk of a
    //  merge in progress: the next commit writes that chunk again. Its
    //  messages may be the first of a direction, which is then empty.
    for (int tx = 0; tx < 150; tx++) {
        s_begin (self);
        for (int i = 0; i < 8; i++)
            s_store (self, s_user (self), s_user (self));
        if (tx % 3 == 2) {
            assert_int_equal (chat_sqlite_pairs_flush (self->pairs), 0);
            s_rollback (self);
        }
        else
            s_commit (self);
        s_check_all (self);
    }
    assert_true (chat_sqlite_pairs_stats (self->pairs).sweeps >= 3);
    s_check_table (self);
}

static void
test_other_connection (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    s_begin (self);
    s_store (self, 1, 2);
    s_commit (self);

    //  Another writer of the same file stores 2 > 1 and 3 > 3
    sqlite3 *other = NULL;
    assert_int_equal (sqlite3_open (self->path, &other), SQLITE_OK);
    chat_test_sql (other,
        "INSERT INTO private_messages (sender_id, receiver_id, content, created_ms)"
        " VALUES (2, 1, 'y', 1), (3, 3, 'z', 1)");
    sqlite3_close (other);

    //  A read transaction takes them in
    chat_test_sql (self->db, "BEGIN");
    assert_int_equal (chat_sqlite_pairs_begin (self->pairs), 0);
    s_check_all (self);
    chat_test_sql (self->db, "COMMIT");
    chat_sqlite_pairs_committed (self->pairs);
    size_t count = 0;
    chat_sqlite_pairs_ids (self->pairs, 3, 3, &count);
    assert_int_equal (count, 1);

    //  And a write transaction goes on after them
    s_begin (self);
    s_store (self, 2, 1);
    s_commit (self);
    s_check_all (self);
    chat_sqlite_pairs_ids (self->pairs, 2, 1, &count);
    assert_int_equal (count, 2);
}

//  Open the second connection and its handle
static void
s_open_second (s_fixture_t *self)
{
    assert_int_equal (sqlite3_open (self->path, &self->db2), SQLITE_OK);
    sqlite3_busy_timeout (self->db2, 5000);
    chat_test_sql (self->db2, "BEGIN");
    self->pairs2 = chat_sqlite_pairs_new (self->db2, self->path, S_MERGE_AT);
    assert_non_null (self->pairs2);
    chat_test_sql (self->db2, "COMMIT");
    chat_sqlite_pairs_committed (self->pairs2);
}

//  The second connection and handle become the ones s_begin, s_store,
//  s_commit and s_check_all use, and the first the second
static void
s_swap (s_fixture_t *self)
{
    sqlite3 *db = self->db;
    chat_sqlite_pairs_t *pairs = self->pairs;
    self->db = self->db2;
    self->pairs = self->pairs2;
    self->db2 = db;
    self->pairs2 = pairs;
}

static void
test_two_handles (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    s_open_second (self);
    //  Both store, in turn, each after it took in what the other stored
    //  and merged; neither holds much more than merge_at
    for (int tx = 0; tx < 200; tx++) {
        s_swap (self);
        s_begin (self);
        s_check_all (self);
        for (int i = 0; i < 4; i++)
            s_store (self, s_user (self), s_user (self));
        s_commit (self);
        s_check_all (self);
        assert_true (chat_sqlite_pairs_stats (self->pairs).in_memory < 4 * S_MERGE_AT);
    }
    s_check_table (self);
    int64_t through = chat_sqlite_pairs_stats (self->pairs).merged_through;
    assert_true (through > 0);
    uint64_t reader_merged = chat_sqlite_pairs_stats (self->pairs2).merged;

    //  Now only the first stores and the second only reads: what the first
    //  merges leaves the second's memory (it never merges itself)
    for (int tx = 0; tx < 300; tx++) {
        s_begin (self);
        for (int i = 0; i < 4; i++)
            s_store (self, s_user (self), s_user (self));
        s_commit (self);
        s_swap (self);
        chat_test_sql (self->db, "BEGIN");
        assert_int_equal (chat_sqlite_pairs_begin (self->pairs), 0);
        s_check_all (self);
        chat_test_sql (self->db, "COMMIT");
        chat_sqlite_pairs_committed (self->pairs);
        assert_true (chat_sqlite_pairs_stats (self->pairs).in_memory < 4 * S_MERGE_AT);
        s_swap (self);
    }
    chat_sqlite_pairs_stats_t reader = chat_sqlite_pairs_stats (self->pairs2);
    assert_true (reader.merged_through > through);
    assert_int_equal (reader.merged_through, chat_sqlite_pairs_stats (self->pairs).merged_through);
    assert_int_equal (reader.merged, reader_merged);
    s_check_table (self);
}

//  A direction's key holds user ids up to 2^32 - 1: past that a store
//  fails (the transaction goes), and nothing of it stays
static void
test_user_id_limit (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    int64_t beyond = INT64_C (1) << 32;
    s_begin (self);
    s_store (self, 1, 2);
    assert_int_equal (chat_sqlite_pairs_add (self->pairs, 1, beyond, 1000), -1);
    assert_int_equal (chat_sqlite_pairs_add (self->pairs, beyond, 1, 1000), -1);
    s_rollback (self);
    size_t count = 7;
    assert_null (chat_sqlite_pairs_ids (self->pairs, 1, beyond, &count));
    assert_int_equal (count, 0);
    chat_sqlite_pairs_ids (self->pairs, 1, 2, &count);
    assert_int_equal (count, 0);
    //  The largest ids that fit are directions of their own
    int64_t last = beyond - 1;
    s_begin (self);
    assert_int_equal (chat_sqlite_pairs_add (self->pairs, last, last - 1, 1000), 0);
    assert_int_equal (chat_sqlite_pairs_add (self->pairs, last - 1, last, 1001), 0);
    assert_int_equal (chat_sqlite_pairs_add (self->pairs, last, last, 1002), 0);
    const int64_t *ids = chat_sqlite_pairs_ids (self->pairs, last - 1, last, &count);
    assert_int_equal (count, 1);
    assert_int_equal (ids [0], 1001);
    s_rollback (self);
    assert_int_equal (chat_sqlite_pairs_stats (self->pairs).in_memory, 0);
}

static void
test_rank (void **state)
{
    (void) state;
    int64_t ids [] = { 3, 5, 9 };
    assert_int_equal (chat_sqlite_pairs_rank (NULL, 0, 7), 0);
    assert_int_equal (chat_sqlite_pairs_rank (ids, 3, 2), 0);
    assert_int_equal (chat_sqlite_pairs_rank (ids, 3, 3), 1);
    assert_int_equal (chat_sqlite_pairs_rank (ids, 3, 8), 2);
    assert_int_equal (chat_sqlite_pairs_rank (ids, 3, 9), 3);
    assert_int_equal (chat_sqlite_pairs_rank (ids, 3, INT64_MAX), 3);
}


//  --------------------------------------------------------------------------
//  The backend across its first merge

#define S_MANY          120000          //  Messages: a merge of 65,536 and more
#define S_BATCH         2000            //  A batch: 4,000 ids merged a commit

//  Message k (from 1) goes 1 > 2, 2 > 1, 1 > 3 or 1 > 1, in turn
static int64_t
s_from (int64_t k)
{
    static const int64_t from [4] = { 1, 2, 1, 1 };
    return from [(k - 1) % 4];
}

static int64_t
s_to (int64_t k)
{
    static const int64_t to [4] = { 2, 1, 3, 1 };
    return to [(k - 1) % 4];
}

//  Message k is between a and b (either way)
static bool
s_between (int64_t k, int64_t a, int64_t b)
{
    return (s_from (k) == a && s_to (k) == b) || (s_from (k) == b && s_to (k) == a);
}

typedef struct {
    int64_t first;                      //  The first id passed
    int64_t last;                       //  The id before (0 at first)
    int64_t count;                      //  Messages seen
    bool ordered;                       //  Every id above the one before
} s_walk_t;

static void
s_on_message (const chat_message_t *message, void *ctx)
{
    s_walk_t *walk = (s_walk_t *) ctx;
    if (walk->count == 0)
        walk->first = message->id;
    else
    if (message->id <= walk->last)
        walk->ordered = false;
    walk->last = message->id;
    walk->count++;
}

//  History between user and partner, a page of 100 at a time from the
//  newest back: every message of theirs, once, in order
static void
s_check_history (chat_backend_t *db, int64_t user, int64_t partner)
{
    int64_t before = 0, expected = S_MANY;
    bool more = true;
    while (more) {
        s_walk_t walk = { .ordered = true };
        assert_int_equal (chat_backend_sqlite.history (db, user, partner, before, 100,
                                                       s_on_message, &walk, &more), CHAT_DB_OK);
        assert_true (walk.ordered);
        //  The page is the 100 (or what is left) newest below before
        int64_t k = walk.last;
        assert_true (walk.count == 100 || !more);
        for (int64_t taken = 0; taken < walk.count; k--)
            if (s_between (k, user, partner)) {
                if (taken == 0)
                    assert_int_equal (walk.last, k);
                taken++;
            }
        while (expected > walk.last)
            assert_false (s_between (expected--, user, partner));
        expected = walk.first - 1;
        assert_int_equal (k, expected);
        before = walk.first;
    }
    while (expected > 0)
        assert_false (s_between (expected--, user, partner));
}

//  Sync for user above after_id, a page of 1,000 at a time: every message
//  to or from them, once, ascending
static void
s_check_sync (chat_backend_t *db, int64_t user, int64_t after_id)
{
    int64_t total = 0, expected = 0;
    for (int64_t k = after_id + 1; k <= S_MANY; k++)
        expected += s_from (k) == user || s_to (k) == user;
    bool more = true;
    while (more) {
        s_walk_t walk = { .ordered = true };
        assert_int_equal (chat_backend_sqlite.sync (db, user, after_id, 1000, s_on_message,
                                                    &walk, &more), CHAT_DB_OK);
        assert_true (walk.ordered);
        assert_true (walk.count == 1000 || !more);
        if (walk.count)
            assert_true (walk.first > after_id);
        total += walk.count;
        after_id = walk.count? walk.last: after_id;
        if (!walk.count)
            break;
    }
    assert_int_equal (total, expected);
}

typedef struct {
    int64_t partner;                    //  Whose conversation
    int64_t unread;                     //  Its unread count
} s_unread_t;

static void
s_on_conversation (const chat_conversation_t *conv, void *ctx)
{
    s_unread_t *seen = (s_unread_t *) ctx;
    if (conv->user_id == seen->partner)
        seen->unread = conv->unread;
}

//  The unread count user sees from partner
static int64_t
s_unread (chat_backend_t *db, int64_t user, int64_t partner)
{
    s_unread_t seen = { .partner = partner, .unread = -1 };
    assert_int_equal (chat_backend_sqlite.conversations (db, user, s_on_conversation, &seen),
                      CHAT_DB_OK);
    return seen.unread;
}

//  Messages from partner to user with an id in (above, up_to]
static int64_t
s_count_to (int64_t partner, int64_t user, int64_t above, int64_t up_to)
{
    int64_t count = 0;
    for (int64_t k = above + 1; k <= up_to && k <= S_MANY; k++)
        count += s_from (k) == partner && s_to (k) == user;
    return count;
}

static int64_t
s_through (const char *path)
{
    sqlite3 *raw = NULL;
    assert_int_equal (sqlite3_open (path, &raw), SQLITE_OK);
    int64_t through = chat_test_sql_int (raw, "SELECT through_id FROM message_pairs_merged");
    sqlite3_close (raw);
    return through;
}

static void
test_backend_across_merge (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    chat_sqlite_pairs_destroy (&self->pairs);
    sqlite3_close (self->db);
    self->db = NULL;
    chat_backend_t *db = s_backend_open (self->path);

    static chat_message_t batch [S_BATCH];
    static int results [S_BATCH];
    for (int64_t stored = 0; stored < S_MANY; stored += S_BATCH) {
        for (int64_t i = 0; i < S_BATCH; i++)
            batch [i] = (chat_message_t) {
                .from_user_id = s_from (stored + i + 1), .to_user_id = s_to (stored + i + 1),
                .content = "m", .content_len = 1
            };
        assert_int_equal (chat_backend_sqlite.begin (db), CHAT_DB_OK);
        assert_int_equal (chat_backend_sqlite.message_store_batch (db, batch, S_BATCH, results,
                                                                   NULL), CHAT_DB_OK);
        assert_int_equal (chat_backend_sqlite.commit (db), CHAT_DB_OK);
        assert_int_equal (batch [S_BATCH - 1].id, stored + S_BATCH);
    }
    //  The first merge is done: the table has the ids up to about 66,000,
    //  memory the rest
    int64_t through = s_through (self->path);
    assert_true (through >= 65536 && through < S_MANY);

    int64_t marker = 0;
    for (int round = 0; round < 2; round++) {
        s_check_history (db, 1, 2);
        s_check_history (db, 2, 1);
        s_check_history (db, 1, 3);
        s_check_history (db, 1, 1);
        s_check_sync (db, 3, 0);
        s_check_sync (db, 2, through - 1000);
        s_check_sync (db, 1, through - 10);
        //  Unread and mark_read, below the table's line, then across it
        assert_int_equal (s_unread (db, 1, 2), s_count_to (2, 1, marker, S_MANY));
        int64_t up_to = round == 0? through - 3: through + 5001;
        int64_t changed = -1;
        assert_int_equal (chat_backend_sqlite.mark_read (db, 1, 2, up_to, &changed), CHAT_DB_OK);
        assert_int_equal (changed, s_count_to (2, 1, marker, up_to));
        marker = up_to;
        assert_int_equal (s_unread (db, 1, 2), s_count_to (2, 1, marker, S_MANY));
        //  Past the newest: the marker stops at it, and nothing more is new
        assert_int_equal (chat_backend_sqlite.mark_read (db, 3, 1, INT64_MAX, &changed),
                          CHAT_DB_OK);
        assert_int_equal (changed, round == 0? s_count_to (1, 3, 0, S_MANY): 0);
        assert_int_equal (s_unread (db, 3, 1), 0);
        //  Again after a reopen, which reads memory back from the rows
        chat_backend_sqlite.close (&db);
        db = s_backend_open (self->path);
    }
    chat_backend_sqlite.close (&db);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_rank),
        cmocka_unit_test_setup_teardown (test_store_and_read, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_rollback, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_other_connection, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_user_id_limit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_two_handles, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_backend_across_merge, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
