/*  =========================================================================
    test_sqlite_client_ids.c - the SQLite backend's client_ids: in memory,
    merged into their table in chunks, never lost

    A database made by the SQLite backend (every migration), then its own
    connection with a chat_sqlite_ids_t that merges after 100 entries, so
    that many merges run: stores messages as message_store does (find,
    INSERT, add) in transactions of a few, and checks that every client_id
    stored is found with its message's id after every transaction, across
    merges, rollbacks (also in the middle of a merge), a restart, and rows
    written by another connection; and that the table ends up holding
    exactly the messages it says it holds. Two handles on one file, each
    storing in turn and one only reading, each keep no more in memory
    than one would: what the other merged leaves it. Senders whose ids
    differ in several bytes are merged like the others. Out of memory (malloc
    made to fail): a client_id that cannot be entered fails its store, a
    rollback needs no memory, a merge that cannot start starts at a later
    commit, and what another handle merged leaves memory without needing
    any.
    =========================================================================
*/

#include "test_util.h"
#include "chat_backend.h"
#include "chat_config.h"
#include "../backends/sqlite_client_ids.h"
#include <inttypes.h>
#include <sqlite3.h>

#define S_MERGE_AT  100

//  This binary is linked with -Wl,--wrap=malloc,--wrap=realloc
//  (tests/CMakeLists.txt): malloc and realloc in this file and in the code
//  under test come here, and fail while s_malloc_fails is set
void *__real_malloc (size_t size);
void *__wrap_malloc (size_t size);
void *__real_realloc (void *ptr, size_t size);
void *__wrap_realloc (void *ptr, size_t size);
static bool s_malloc_fails;

void *
__wrap_malloc (size_t size)
{
    return s_malloc_fails? NULL: __real_malloc (size);
}

void *
__wrap_realloc (void *ptr, size_t size)
{
    return s_malloc_fails? NULL: __real_realloc (ptr, size);
}

typedef struct {
    char *dir;                          //  Temporary directory
    char path [256];                    //  The database file
    sqlite3 *db;                        //  Our connection
    chat_sqlite_ids_t *ids;             //  Under test
    sqlite3 *db2;                       //  A second connection (s_swap)
    chat_sqlite_ids_t *ids2;            //  With its own handle
    int64_t ids_of [2][2000];           //  Message id of client_id k<i>, by
                                        //  sender 1 or 2; 0 if not stored
} s_fixture_t;

static int
s_setup (void **state)
{
    s_fixture_t *self = (s_fixture_t *) calloc (1, sizeof (s_fixture_t));
    assert_non_null (self);
    self->dir = chat_test_tmpdir ();
    snprintf (self->path, sizeof self->path, "%s/chat.db", self->dir);
    chat_config_t cfg;
    chat_config_defaults (&cfg);
    snprintf (cfg.sqlite_path, sizeof cfg.sqlite_path, "%s", self->path);
    char error [256] = "";
    chat_backend_t *backend = chat_backend_sqlite.open (&cfg, error, sizeof error);
    if (!backend)
        fail_msg ("open: %s", error);
    int64_t id = 0;
    assert_int_equal (chat_backend_sqlite.user_create (backend, "one", "h", 1, &id), CHAT_DB_OK);
    assert_int_equal (id, 1);
    assert_int_equal (chat_backend_sqlite.user_create (backend, "two", "h", 1, &id), CHAT_DB_OK);
    assert_int_equal (id, 2);
    chat_backend_sqlite.close (&backend);

    assert_int_equal (sqlite3_open (self->path, &self->db), SQLITE_OK);
    chat_test_sql (self->db, "BEGIN");
    self->ids = chat_sqlite_ids_new (self->db, self->path, S_MERGE_AT);
    assert_non_null (self->ids);
    chat_test_sql (self->db, "COMMIT");
    *state = self;
    return 0;
}

static int
s_teardown (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    chat_sqlite_ids_destroy (&self->ids);
    chat_sqlite_ids_destroy (&self->ids2);
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
    assert_int_equal (chat_sqlite_ids_begin (self->ids), 0);
}

static void
s_commit (s_fixture_t *self)
{
    assert_int_equal (chat_sqlite_ids_flush (self->ids), 0);
    chat_test_sql (self->db, "COMMIT");
    chat_sqlite_ids_committed (self->ids);
}

static void
s_rollback (s_fixture_t *self)
{
    chat_test_sql (self->db, "ROLLBACK");
    chat_sqlite_ids_rolled_back (self->ids);
}

//  Insert the row of a message of sender (client_id may be NULL); its id
static int64_t
s_insert (s_fixture_t *self, int64_t sender, const char *client_id)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (self->db,
        "INSERT INTO private_messages (sender_id, receiver_id, content, created_ms, client_id)"
        " VALUES (?1, 3 - ?1, 'x', 1, ?2)", -1, &stmt, NULL), SQLITE_OK);
    sqlite3_bind_int64 (stmt, 1, sender);
    if (client_id)
        sqlite3_bind_text (stmt, 2, client_id, -1, SQLITE_TRANSIENT);
    assert_int_equal (sqlite3_step (stmt), SQLITE_DONE);
    sqlite3_finalize (stmt);
    return sqlite3_last_insert_rowid (self->db);
}

//  Store a message of sender with client_id k<key> (key < 0: none) as
//  message_store does; returns its id, or the first one's if used before
static int64_t
s_store (s_fixture_t *self, int64_t sender, int key, bool *duplicate)
{
    char client_id [32];
    int len = snprintf (client_id, sizeof client_id, "k%d", key);
    int64_t first = 0;
    uint64_t map_key = 0;
    *duplicate = false;
    if (key >= 0) {
        int found = chat_sqlite_ids_find (self->ids, sender, client_id, (size_t) len,
                                          &map_key, &first);
        assert_true (found >= 0);
        if (found) {
            *duplicate = true;
            return first;
        }
    }
    int64_t id = s_insert (self, sender, key >= 0? client_id: NULL);
    assert_int_equal (chat_sqlite_ids_add (self->ids, sender, key >= 0? client_id: NULL,
                                           (size_t) len, map_key, id), 0);
    return id;
}

//  Every client_id stored so far is found with its id; the others are not
static void
s_check_all (s_fixture_t *self, int keys)
{
    for (int sender = 1; sender <= 2; sender++)
        for (int key = 0; key < keys; key++) {
            char client_id [32];
            int len = snprintf (client_id, sizeof client_id, "k%d", key);
            int64_t id = -1;
            uint64_t map_key = 0;
            int found = chat_sqlite_ids_find (self->ids, sender, client_id, (size_t) len,
                                              &map_key, &id);
            int64_t expected = self->ids_of [sender - 1][key];
            assert_int_equal (found, expected? 1: 0);
            if (expected)
                assert_int_equal (id, expected);
        }
}

//  The table holds an entry for every message up to through_id with a
//  client_id, each the right one, and nothing else
static void
s_check_table (s_fixture_t *self)
{
    chat_sqlite_ids_stats_t stats = chat_sqlite_ids_stats (self->ids);
    char sql [512];
    snprintf (sql, sizeof sql,
        "SELECT count (*) FROM private_messages AS m WHERE m.client_id IS NOT NULL"
        " AND m.id <= %" PRId64 " AND NOT EXISTS (SELECT 1 FROM client_ids AS c"
        "  WHERE c.sender_id = m.sender_id AND c.client_id = m.client_id AND c.message_id = m.id)",
        stats.merged_through);
    assert_int_equal (chat_test_sql_int (self->db, sql), 0);
    assert_int_equal (chat_test_sql_int (self->db,
        "SELECT count (*) FROM client_ids AS c WHERE NOT EXISTS (SELECT 1 FROM private_messages AS m"
        "  WHERE c.sender_id = m.sender_id AND c.client_id = m.client_id AND c.message_id = m.id)"), 0);
    assert_int_equal (chat_test_sql_int (self->db, "SELECT through_id FROM client_ids_merged"),
                      stats.merged_through);
}

static void
test_store_and_find (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    bool duplicate = false;
    int key = 0;
    for (int tx = 0; tx < 150; tx++) {
        s_begin (self);
        //  A few messages a transaction, from both senders, some without a
        //  client_id; the first one's client_id again in the same one
        int first_key = key;
        for (int i = 0; i < 3 + tx % 5; i++, key++) {
            for (int sender = 1; sender <= 2; sender++) {
                int64_t id = s_store (self, sender, key, &duplicate);
                assert_false (duplicate);
                self->ids_of [sender - 1][key] = id;
            }
            s_store (self, 1, -1, &duplicate);
        }
        assert_int_equal (s_store (self, 2, first_key, &duplicate), self->ids_of [1][first_key]);
        assert_true (duplicate);
        s_commit (self);
        //  Committed ones again, in their own transaction
        s_begin (self);
        assert_int_equal (s_store (self, 1, first_key, &duplicate), self->ids_of [0][first_key]);
        assert_true (duplicate);
        s_commit (self);
        if (tx % 10 == 0)
            s_check_all (self, key + 5);
    }
    s_check_all (self, key + 5);
    chat_sqlite_ids_stats_t stats = chat_sqlite_ids_stats (self->ids);
    assert_true (stats.sweeps >= 5);
    assert_true (stats.merged > 500);
    assert_true (stats.merged_through > 0);
    //  At most a merge's worth above the threshold waits in memory
    assert_true (stats.in_memory < 4 * S_MERGE_AT);
    s_check_table (self);

    //  A restart reads the rest back from the rows
    chat_sqlite_ids_destroy (&self->ids);
    chat_test_sql (self->db, "BEGIN");
    self->ids = chat_sqlite_ids_new (self->db, self->path, S_MERGE_AT);
    assert_non_null (self->ids);
    chat_test_sql (self->db, "COMMIT");
    chat_sqlite_ids_stats_t after = chat_sqlite_ids_stats (self->ids);
    assert_int_equal (after.merged_through, stats.merged_through);
    char sql [256];
    snprintf (sql, sizeof sql, "SELECT count (*) FROM private_messages"
              " WHERE client_id IS NOT NULL AND id > %" PRId64, stats.merged_through);
    assert_int_equal ((int64_t) after.in_memory, chat_test_sql_int (self->db, sql));
    s_check_all (self, key + 5);
}

static void
test_rollback (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    bool duplicate = false;
    int key = 0;
    //  Roll back every third transaction, which also drops its chunk of
    //  a merge in progress: the next commit writes that chunk again
    for (int tx = 0; tx < 120; tx++) {
        s_begin (self);
        int64_t stored [2][8];
        int first_key = key;
        for (int i = 0; i < 8; i++)
            for (int sender = 1; sender <= 2; sender++) {
                stored [sender - 1][i] = s_store (self, sender, key + i, &duplicate);
                assert_false (duplicate);
            }
        if (tx % 3 == 2) {
            assert_int_equal (chat_sqlite_ids_flush (self->ids), 0);
            s_rollback (self);
            continue;                   //  The keys are free again
        }
        s_commit (self);
        for (int i = 0; i < 8; i++)
            for (int sender = 1; sender <= 2; sender++)
                self->ids_of [sender - 1][first_key + i] = stored [sender - 1][i];
        key += 8;
    }
    s_check_all (self, key + 8);
    assert_true (chat_sqlite_ids_stats (self->ids).sweeps >= 3);
    s_check_table (self);
}

static void
test_other_connection (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    bool duplicate = false;
    s_begin (self);
    self->ids_of [0][0] = s_store (self, 1, 0, &duplicate);
    s_commit (self);

    //  Another writer of the same file stores sender 2's k1
    sqlite3 *other = NULL;
    assert_int_equal (sqlite3_open (self->path, &other), SQLITE_OK);
    chat_test_sql (other,
        "INSERT INTO private_messages (sender_id, receiver_id, content, created_ms, client_id)"
        " VALUES (2, 1, 'y', 1, 'k1')");
    int64_t theirs = sqlite3_last_insert_rowid (other);
    sqlite3_close (other);

    s_begin (self);
    assert_int_equal (s_store (self, 2, 1, &duplicate), theirs);
    assert_true (duplicate);
    //  The same client_id of another sender is another key
    self->ids_of [0][1] = s_store (self, 1, 1, &duplicate);
    assert_false (duplicate);
    s_commit (self);
    self->ids_of [1][1] = theirs;
    s_check_all (self, 4);
}

//  Open the second connection and its handle
static void
s_open_second (s_fixture_t *self)
{
    assert_int_equal (sqlite3_open (self->path, &self->db2), SQLITE_OK);
    sqlite3_busy_timeout (self->db2, 5000);
    chat_test_sql (self->db2, "BEGIN");
    self->ids2 = chat_sqlite_ids_new (self->db2, self->path, S_MERGE_AT);
    assert_non_null (self->ids2);
    chat_test_sql (self->db2, "COMMIT");
}

//  The second connection and handle become the ones s_begin, s_store,
//  s_commit and s_check_all use, and the first the second
static void
s_swap (s_fixture_t *self)
{
    sqlite3 *db = self->db;
    chat_sqlite_ids_t *ids = self->ids;
    self->db = self->db2;
    self->ids = self->ids2;
    self->db2 = db;
    self->ids2 = ids;
}

static void
test_two_handles (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    s_open_second (self);
    bool duplicate = false;
    int key = 0;
    //  Both store, in turn; each finds what the other stored, duplicates
    //  included, and neither holds much more than merge_at
    for (int tx = 0; tx < 200; tx++) {
        s_swap (self);
        s_begin (self);
        s_check_all (self, key + 3);
        for (int i = 0; i < 4; i++, key++) {
            int sender = 1 + (tx + i) % 2;
            self->ids_of [sender - 1][key] = s_store (self, sender, key, &duplicate);
            assert_false (duplicate);
        }
        assert_int_equal (s_store (self, 1 + tx % 2, key - 2, &duplicate),
                          self->ids_of [(tx % 2)][key - 2]);
        assert_true (duplicate);
        s_commit (self);
        assert_true (chat_sqlite_ids_stats (self->ids).in_memory < 4 * S_MERGE_AT);
    }
    s_check_table (self);
    int64_t through = chat_sqlite_ids_stats (self->ids).merged_through;
    assert_true (through > 0);
    uint64_t reader_merged = chat_sqlite_ids_stats (self->ids2).merged;

    //  Now only the first stores and the second only reads: what the first
    //  merges leaves the second's memory (it never merges itself)
    for (int tx = 0; tx < 200; tx++) {
        s_begin (self);
        for (int i = 0; i < 4 && key < 2000; i++, key++)
            self->ids_of [0][key] = s_store (self, 1, key, &duplicate);
        s_commit (self);
        s_swap (self);
        chat_test_sql (self->db, "BEGIN");
        assert_int_equal (chat_sqlite_ids_begin (self->ids), 0);
        if (tx % 20 == 0)
            s_check_all (self, key);
        chat_test_sql (self->db, "COMMIT");
        chat_sqlite_ids_committed (self->ids);
        assert_true (chat_sqlite_ids_stats (self->ids).in_memory < 4 * S_MERGE_AT);
        s_swap (self);
    }
    chat_sqlite_ids_stats_t reader = chat_sqlite_ids_stats (self->ids2);
    assert_true (reader.merged_through > through);
    assert_int_equal (reader.merged_through, chat_sqlite_ids_stats (self->ids).merged_through);
    assert_int_equal (reader.merged, reader_merged);
    s_check_table (self);
}

//  A committed transaction of count messages of sender with new keys from
//  *key on
static void
s_store_committed (s_fixture_t *self, int64_t sender, int count, int *key)
{
    bool duplicate = false;
    s_begin (self);
    for (int i = 0; i < count; i++, (*key)++) {
        self->ids_of [sender - 1][*key] = s_store (self, sender, *key, &duplicate);
        assert_false (duplicate);
    }
    s_commit (self);
}

//  Look up sender's client_id m<key>: chat_sqlite_ids_find's answer
static int
s_find_m (s_fixture_t *self, int64_t sender, int key, uint64_t *map_key, int64_t *id)
{
    char client_id [32];
    int len = snprintf (client_id, sizeof client_id, "m%d", key);
    return chat_sqlite_ids_find (self->ids, sender, client_id, (size_t) len, map_key, id);
}

//  Senders whose ids differ in several bytes: a merge (sorted by sender a
//  byte at a time) writes every entry, and every one is found after it
static void
test_many_senders (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    static const int64_t senders [] = { 1, 2, 258, 65537, 70000, 16777217, 5000000000 };
    enum { SENDERS = sizeof senders / sizeof senders [0], KEYS = 60 };
    int64_t stored [SENDERS][KEYS] = { { 0 } };
    uint64_t map_key = 0;
    int64_t id = 0;
    for (int key = 0; key < KEYS; key++) {
        s_begin (self);
        for (int k = SENDERS - 1; k >= 0; k--) {
            assert_int_equal (s_find_m (self, senders [k], key, &map_key, &id), 0);
            char client_id [32];
            int len = snprintf (client_id, sizeof client_id, "m%d", key);
            stored [k][key] = s_insert (self, senders [k], client_id);
            assert_int_equal (chat_sqlite_ids_add (self->ids, senders [k], client_id,
                                                   (size_t) len, map_key, stored [k][key]), 0);
        }
        s_commit (self);
    }
    assert_true (chat_sqlite_ids_stats (self->ids).sweeps >= 2);
    s_check_table (self);
    for (int k = 0; k < SENDERS; k++)
        for (int key = 0; key < KEYS; key++) {
            assert_int_equal (s_find_m (self, senders [k], key, &map_key, &id), 1);
            assert_int_equal (id, stored [k][key]);
        }
}

static void
test_out_of_memory (void **state)
{
    s_fixture_t *self = (s_fixture_t *) *state;
    bool duplicate = false;
    int key = 0;

    //  A client_id that cannot be entered fails its store; the rollback
    //  that follows leaves it unused
    s_begin (self);
    uint64_t map_key = 0;
    int64_t first = 0;
    assert_int_equal (chat_sqlite_ids_find (self->ids, 1, "k0", 2, &map_key, &first), 0);
    int64_t id = s_insert (self, 1, "k0");
    s_malloc_fails = true;
    int rc = chat_sqlite_ids_add (self->ids, 1, "k0", 2, map_key, id);
    s_malloc_fails = false;
    assert_int_equal (rc, -1);
    s_rollback (self);
    s_check_all (self, 5);

    //  A rollback takes out what its transaction entered without memory
    s_begin (self);
    for (int i = 0; i < 10; i++) {
        s_store (self, 1 + i % 2, i, &duplicate);
        assert_false (duplicate);
    }
    assert_int_equal (chat_sqlite_ids_stats (self->ids).in_memory, 10);
    chat_test_sql (self->db, "ROLLBACK");
    s_malloc_fails = true;
    chat_sqlite_ids_rolled_back (self->ids);
    s_malloc_fails = false;
    assert_int_equal (chat_sqlite_ids_stats (self->ids).in_memory, 0);
    s_check_all (self, 15);

    //  The commit that reaches merge_at cannot start the merge: the
    //  entries stay in memory, and the next commit starts it
    while (chat_sqlite_ids_stats (self->ids).in_memory + 10 < S_MERGE_AT)
        s_store_committed (self, 1, 10, &key);
    s_begin (self);
    for (int i = 0; i < 10; i++, key++)
        self->ids_of [0][key] = s_store (self, 1, key, &duplicate);
    assert_int_equal (chat_sqlite_ids_flush (self->ids), 0);
    chat_test_sql (self->db, "COMMIT");
    s_malloc_fails = true;
    chat_sqlite_ids_committed (self->ids);
    s_malloc_fails = false;
    chat_sqlite_ids_stats_t stats = chat_sqlite_ids_stats (self->ids);
    assert_true (stats.in_memory >= S_MERGE_AT);
    assert_int_equal (stats.merged, 0);
    s_check_all (self, key + 5);
    while (chat_sqlite_ids_stats (self->ids).sweeps == 0)
        s_store_committed (self, 1, 10, &key);
    s_check_all (self, key + 5);
    s_check_table (self);

    //  Another handle merges what it stored. This one's begin takes those
    //  entries out of memory without needing any; the rows the other one
    //  stored after its merge started need memory to be taken in, so that
    //  begin fails. After its rollback the next begin takes them in.
    s_open_second (self);
    s_swap (self);
    while (chat_sqlite_ids_stats (self->ids).sweeps == 0)
        s_store_committed (self, 2, 10, &key);
    s_swap (self);
    stats = chat_sqlite_ids_stats (self->ids);
    chat_test_sql (self->db, "BEGIN IMMEDIATE");
    s_malloc_fails = true;
    rc = chat_sqlite_ids_begin (self->ids);
    s_malloc_fails = false;
    assert_int_equal (rc, -1);
    chat_sqlite_ids_stats_t failed = chat_sqlite_ids_stats (self->ids);
    assert_true (failed.in_memory < stats.in_memory);
    assert_true (failed.merged_through > stats.merged_through);
    s_rollback (self);
    s_begin (self);
    s_check_all (self, key + 5);
    s_commit (self);
    chat_sqlite_ids_stats_t after = chat_sqlite_ids_stats (self->ids);
    assert_int_equal (after.merged_through, chat_sqlite_ids_stats (self->ids2).merged_through);
    assert_true (after.merged_through > stats.merged_through);
    s_check_table (self);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_store_and_find, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_rollback, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_other_connection, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_two_handles, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_many_senders, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_out_of_memory, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
