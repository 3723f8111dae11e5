/*  =========================================================================
    test_migrate_sqlite.c - SQLite migrations 2 to 4 keep every message,
    its read state and its client_id

    Builds a version-1 database by hand, as chatd 1 left it (the schema of
    migration 1 copied here, with messages, some of them read), opens it
    with the SQLite backend, which applies migration 2 (the conversations
    table replaces the per-user indexes and is_read), and checks through
    the backend what a user sees: conversations with their order, last
    messages and unread counts, history with every field of its messages
    and their read flags, sync, mark_read and a new message after the
    upgrade, and that a client_id from before the upgrade is still taken.
    Then that the old indexes and column are gone and that the client_ids
    (migration 3: a table instead of a UNIQUE index) and the pair index
    (migration 4: the message_pairs table) were all moved.
    =========================================================================
*/

#include "test_util.h"
#include "chat_backend.h"
#include "chat_config.h"
#include <inttypes.h>
#include <sqlite3.h>

//  Migration 1 as it shipped (backends/sqlite.c), and its version row
static const char s_version_1 [] =
    "CREATE TABLE users ("
    "    id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "    nickname TEXT NOT NULL,"
    "    nickname_key TEXT NOT NULL UNIQUE,"
    "    password_hash TEXT NOT NULL,"
    "    created_ms INTEGER NOT NULL);"
    "CREATE TABLE sessions ("
    "    token_hash TEXT PRIMARY KEY,"
    "    user_id INTEGER NOT NULL REFERENCES users (id),"
    "    created_ms INTEGER NOT NULL,"
    "    expires_ms INTEGER NOT NULL);"
    "CREATE INDEX sessions_expires ON sessions (expires_ms);"
    "CREATE TABLE private_messages ("
    "    id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "    sender_id INTEGER NOT NULL,"
    "    receiver_id INTEGER NOT NULL,"
    "    content TEXT NOT NULL,"
    "    created_ms INTEGER NOT NULL,"
    "    is_read BOOLEAN NOT NULL DEFAULT 0,"
    "    client_id TEXT,"
    "    FOREIGN KEY (sender_id) REFERENCES users (id),"
    "    FOREIGN KEY (receiver_id) REFERENCES users (id));"
    "CREATE UNIQUE INDEX private_messages_client"
    "    ON private_messages (sender_id, client_id) WHERE client_id IS NOT NULL;"
    "CREATE INDEX private_messages_pair ON private_messages (sender_id, receiver_id, id);"
    "CREATE INDEX private_messages_partner ON private_messages (receiver_id, sender_id, id);"
    "CREATE INDEX private_messages_sent ON private_messages (sender_id, id);"
    "CREATE INDEX private_messages_received ON private_messages (receiver_id, id);"
    "CREATE INDEX private_messages_unread"
    "    ON private_messages (receiver_id, sender_id) WHERE is_read = 0;"
    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);"
    "INSERT INTO schema_migrations VALUES (1, '2026-11-01T00:00:00.000Z');"
    //  Users 1 ann, 2 ben, 3 cat
    "INSERT INTO users (nickname, nickname_key, password_hash, created_ms) VALUES"
    "    ('ann', 'ann', 'h', 1), ('ben', 'ben', 'h', 1), ('cat', 'cat', 'h', 1);"
    //  ann and ben: ben read ann's 1 and 3 (an id prefix of ann's messages
    //  to him, as mark_read made them); ann read nothing. ann and cat: cat
    //  read nothing. ann to herself: read 6.
    "INSERT INTO private_messages (id, sender_id, receiver_id, content, created_ms, is_read, client_id)"
    " VALUES (1, 1, 2, 'a>b 1', 1000, 1, 'c1'),"
    "        (2, 2, 1, 'b>a 2', 1001, 0, NULL),"
    "        (3, 1, 2, 'a>b 3', 1002, 1, 'c3'),"
    "        (4, 1, 3, 'a>c 4', 1003, 0, NULL),"
    "        (5, 2, 1, 'b>a 5', 1004, 0, NULL),"
    "        (6, 1, 1, 'a>a 6', 1005, 1, NULL),"
    "        (7, 1, 2, 'a>b 7', 1006, 0, NULL),"
    "        (8, 1, 1, 'a>a 8', 1007, 0, NULL);";

typedef struct {
    int count;
    int64_t id [16];
    bool is_read [16];
    int64_t partner [16];
    int64_t unread [16];
    int64_t from [16];                  //  Messages: sender
    int64_t created_ms [16];            //  Messages: time
    char content [16][16];              //  Messages: content
    char client_id [16][16];            //  Messages: client_id, "" if none
} s_seen_t;

static void
s_on_message (const chat_message_t *message, void *ctx)
{
    s_seen_t *seen = (s_seen_t *) ctx;
    assert_true (seen->count < 16);
    seen->id [seen->count] = message->id;
    seen->is_read [seen->count] = message->is_read;
    seen->from [seen->count] = message->from_user_id;
    seen->created_ms [seen->count] = message->created_ms;
    assert_true (message->content_len < sizeof seen->content [0]);
    memcpy (seen->content [seen->count], message->content, message->content_len);
    seen->content [seen->count][message->content_len] = 0;
    snprintf (seen->client_id [seen->count], sizeof seen->client_id [0], "%s",
              message->client_id? message->client_id: "");
    seen->count++;
}

static void
s_on_conversation (const chat_conversation_t *conv, void *ctx)
{
    s_seen_t *seen = (s_seen_t *) ctx;
    assert_true (seen->count < 16);
    seen->id [seen->count] = conv->last_message.id;
    seen->is_read [seen->count] = conv->last_message.is_read;
    seen->partner [seen->count] = conv->user_id;
    seen->unread [seen->count] = conv->unread;
    seen->count++;
}

//  How many rows a query on the raw file answers
static int64_t
s_count (const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    int64_t count = sqlite3_column_int64 (stmt, 0);
    sqlite3_finalize (stmt);
    sqlite3_close (db);
    return count;
}

static void
test_migration_2 (void **state)
{
    (void) state;
    char *dir = chat_test_tmpdir ();
    chat_config_t cfg;
    chat_config_defaults (&cfg);
    snprintf (cfg.sqlite_path, sizeof cfg.sqlite_path, "%s/chat.db", dir);

    sqlite3 *raw = NULL;
    assert_int_equal (sqlite3_open (cfg.sqlite_path, &raw), SQLITE_OK);
    assert_int_equal (sqlite3_exec (raw, s_version_1, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close (raw);

    char error [256] = "";
    chat_backend_t *db = chat_backend_sqlite.open (&cfg, error, sizeof error);
    assert_non_null (db);
    const chat_backend_ops_t *ops = &chat_backend_sqlite;

    //  ann's conversations: herself (8), ben (7), cat (4), newest first.
    //  Unread for ann: ben's 2 and 5; her own 8 to herself (6 was read)
    s_seen_t seen = { 0 };
    assert_int_equal (ops->conversations (db, 1, s_on_conversation, &seen), CHAT_DB_OK);
    assert_int_equal (seen.count, 3);
    assert_int_equal (seen.partner [0], 1);
    assert_int_equal (seen.id [0], 8);
    assert_int_equal (seen.unread [0], 1);
    assert_int_equal (seen.partner [1], 2);
    assert_int_equal (seen.id [1], 7);
    assert_int_equal (seen.unread [1], 2);
    assert_false (seen.is_read [1]);
    assert_int_equal (seen.partner [2], 3);
    assert_int_equal (seen.unread [2], 0);
    //  ben's: ann, with her 7 unread (1 and 3 were read)
    memset (&seen, 0, sizeof seen);
    assert_int_equal (ops->conversations (db, 2, s_on_conversation, &seen), CHAT_DB_OK);
    assert_int_equal (seen.count, 1);
    assert_int_equal (seen.partner [0], 1);
    assert_int_equal (seen.unread [0], 1);

    //  History between ann and ben keeps each message, with its read flag
    memset (&seen, 0, sizeof seen);
    bool more = true;
    assert_int_equal (ops->history (db, 2, 1, 0, 50, s_on_message, &seen, &more), CHAT_DB_OK);
    assert_false (more);
    int64_t pair [] = { 1, 2, 3, 5, 7 };
    bool pair_read [] = { true, false, true, false, false };
    int64_t pair_from [] = { 1, 2, 1, 2, 1 };
    const char *pair_content [] = { "a>b 1", "b>a 2", "a>b 3", "b>a 5", "a>b 7" };
    const char *pair_client [] = { "c1", "", "c3", "", "" };
    int64_t pair_ms [] = { 1000, 1001, 1002, 1004, 1006 };
    assert_int_equal (seen.count, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal (seen.id [i], pair [i]);
        assert_int_equal (seen.is_read [i], pair_read [i]);
        assert_int_equal (seen.from [i], pair_from [i]);
        assert_string_equal (seen.content [i], pair_content [i]);
        assert_string_equal (seen.client_id [i], pair_client [i]);
        assert_int_equal (seen.created_ms [i], pair_ms [i]);
    }
    //  A page below a before_id, and ann's notes to herself, each once
    memset (&seen, 0, sizeof seen);
    assert_int_equal (ops->history (db, 1, 2, 5, 2, s_on_message, &seen, &more), CHAT_DB_OK);
    assert_true (more);
    assert_int_equal (seen.count, 2);
    assert_int_equal (seen.id [0], 2);
    assert_int_equal (seen.id [1], 3);
    memset (&seen, 0, sizeof seen);
    assert_int_equal (ops->history (db, 1, 1, 0, 50, s_on_message, &seen, &more), CHAT_DB_OK);
    assert_false (more);
    assert_int_equal (seen.count, 2);
    assert_int_equal (seen.id [0], 6);
    assert_string_equal (seen.content [0], "a>a 6");
    assert_true (seen.is_read [0]);
    assert_int_equal (seen.id [1], 8);
    assert_false (seen.is_read [1]);
    //  Sync sees every message of ann's, once, with its flag
    memset (&seen, 0, sizeof seen);
    assert_int_equal (ops->sync (db, 1, 0, 50, s_on_message, &seen, &more), CHAT_DB_OK);
    assert_int_equal (seen.count, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal (seen.id [i], i + 1);
    assert_true (seen.is_read [5]);
    assert_false (seen.is_read [7]);

    //  Reading and writing go on from there
    int64_t changed = -1;
    assert_int_equal (ops->mark_read (db, 1, 2, 5, &changed), CHAT_DB_OK);
    assert_int_equal (changed, 2);
    chat_message_t message = {
        .from_user_id = 3, .to_user_id = 1, .content = "c>a", .content_len = 3
    };
    int result = -1;
    assert_int_equal (ops->begin (db), CHAT_DB_OK);
    assert_int_equal (ops->message_store_batch (db, &message, 1, &result, NULL), CHAT_DB_OK);
    assert_int_equal (ops->commit (db), CHAT_DB_OK);
    assert_int_equal (result, CHAT_DB_OK);
    assert_true (message.id > 8);
    memset (&seen, 0, sizeof seen);
    assert_int_equal (ops->conversations (db, 1, s_on_conversation, &seen), CHAT_DB_OK);
    assert_int_equal (seen.count, 3);
    assert_int_equal (seen.partner [0], 3);
    assert_int_equal (seen.id [0], message.id);
    assert_int_equal (seen.unread [0], 1);
    assert_int_equal (seen.partner [2], 2);
    assert_int_equal (seen.unread [2], 0);
    //  A client_id from before the upgrade is still known
    chat_message_t again = {
        .from_user_id = 1, .to_user_id = 2, .content = "resend", .content_len = 6,
        .client_id = "c3"
    };
    bool duplicate = false;
    assert_int_equal (ops->begin (db), CHAT_DB_OK);
    assert_int_equal (ops->message_store_batch (db, &again, 1, &result, &duplicate), CHAT_DB_OK);
    assert_int_equal (ops->commit (db), CHAT_DB_OK);
    assert_true (duplicate);
    assert_int_equal (again.id, 3);
    assert_true (again.is_read);
    ops->close (&db);

    //  The per-user indexes and the column are gone; version 2 is recorded
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT count (*) FROM sqlite_schema WHERE type = 'index' AND name IN ("
        " 'private_messages_partner', 'private_messages_sent',"
        " 'private_messages_received', 'private_messages_unread')"), 0);
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT count (*) FROM pragma_table_info ('private_messages') WHERE name = 'is_read'"), 0);
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT max (version) FROM schema_migrations"), 4);
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT count (*) FROM schema_migrations"), 4);
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT count (*) FROM sqlite_schema WHERE name = 'private_messages_client'"), 0);
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT count (*) FROM client_ids WHERE (sender_id, client_id, message_id)"
        " IN (VALUES (1, 'c1', 1), (1, 'c3', 3))"), 2);
    assert_int_equal (s_count (cfg.sqlite_path, "SELECT count (*) FROM client_ids"), 2);
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT through_id FROM client_ids_merged"), 8);
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT count (*) FROM conversations"), 5);
    //  Every message from before the upgrade is in message_pairs; the one
    //  stored after it waits in memory for a merge (and is read back from
    //  its row at the next open)
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT count (*) FROM sqlite_schema WHERE name = 'private_messages_pair'"), 0);
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT count (*) FROM message_pairs AS p JOIN private_messages AS m"
        "    ON m.id = p.id AND m.sender_id = p.sender_id AND m.receiver_id = p.receiver_id"), 8);
    assert_int_equal (s_count (cfg.sqlite_path, "SELECT count (*) FROM message_pairs"), 8);
    assert_int_equal (s_count (cfg.sqlite_path,
        "SELECT through_id FROM message_pairs_merged"), 8);
    chat_test_rmdir (&dir);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_migration_2),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
