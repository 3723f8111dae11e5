/*  =========================================================================
    test_persistence.c - the persistence actor alone, over a real SQLite
    file in a temporary directory

    hub, ws-front and presence are chat_peer_t's. The test opens its own
    backend handle on the same file to create users, and independent
    sqlite3 connections to check what is really committed.
    =========================================================================
*/

#include "test_util.h"
#include "chat_actors.h"
#include "chat_backend.h"
#include "chat_wire.h"
#include <inttypes.h>
#include <jansson.h>
#include <sqlite3.h>

typedef struct {
    char *dir;                          //  Temporary directory
    chat_config_t cfg;                  //  Defaults, SQLite file in dir
    chat_backend_t *db;                 //  The test's own backend handle
    int64_t alice, bob, carol;          //  User ids
    chat_peer_t *rate_limiter;          //  Sends private_message
    chat_peer_t *hub;                   //  Receives message_stored and messages_read
    chat_peer_t *ws_front;              //  Sends requests, receives answers
    chat_peer_t *presence;              //  Receives users_listed
    zactor_t *persistence;              //  The actor under test
} fixture_t;

static int
s_setup_batch (void **state, int batch_max)
{
    fixture_t *f = (fixture_t *) zmalloc (sizeof (fixture_t));
    f->dir = chat_test_tmpdir ();
    chat_config_defaults (&f->cfg);
    if (batch_max)
        f->cfg.storage_batch_max = batch_max;
    snprintf (f->cfg.storage_backend, sizeof f->cfg.storage_backend, "sqlite");
    snprintf (f->cfg.sqlite_path, sizeof f->cfg.sqlite_path, "%s/chat.db", f->dir);
    char error [256] = "";
    f->db = chat_backend_sqlite.open (&f->cfg, error, sizeof error);
    if (!f->db)
        fail_msg ("cannot open %s: %s", f->cfg.sqlite_path, error);
    int64_t now = chat_now_ms ();
    assert_int_equal (chat_backend_sqlite.user_create (f->db, "alice", "x", now, &f->alice), CHAT_DB_OK);
    assert_int_equal (chat_backend_sqlite.user_create (f->db, "bob", "x", now, &f->bob), CHAT_DB_OK);
    assert_int_equal (chat_backend_sqlite.user_create (f->db, "Carol", "x", now, &f->carol), CHAT_DB_OK);

    f->rate_limiter = chat_peer_new (CHAT_ACTOR_RATE_LIMITER);
    f->hub = chat_peer_new (CHAT_ACTOR_HUB);
    f->ws_front = chat_peer_new (CHAT_ACTOR_WS_FRONT);
    f->presence = chat_peer_new (CHAT_ACTOR_PRESENCE);
    f->persistence = chat_test_start (chat_persistence_actor, &f->cfg);
    //  The first storage_status: up, nothing stored yet
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_STORAGE_STATUS, 2000);
    assert_int_equal (m->u [0], 1);
    assert_int_equal (m->u [1], 0);
    assert_int_equal (m->u [2], 0);
    *state = f;
    return 0;
}

static int
s_setup (void **state)
{
    return s_setup_batch (state, 0);
}

static int
s_setup_small_batch (void **state)
{
    return s_setup_batch (state, 16);
}

static int
s_teardown (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    zactor_destroy (&f->persistence);
    chat_peer_destroy (&f->rate_limiter);
    chat_peer_destroy (&f->hub);
    chat_peer_destroy (&f->ws_front);
    chat_peer_destroy (&f->presence);
    chat_backend_sqlite.close (&f->db);
    chat_test_rmdir (&f->dir);
    free (f);
    //  libzmq releases inproc endpoints on its reaper thread: give it a
    //  moment before the next test binds them again
    zclock_sleep (100);
    return 0;
}


//  --------------------------------------------------------------------------
//  Helpers

//  A private message as the rate-limiter admits it
static void
s_send (fixture_t *f, uint64_t conn_id, int64_t from, const char *nickname,
        int64_t to, const char *client_id, const char *content)
{
    chat_sendn (f->rate_limiter->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_PRIVATE_MESSAGE,
                conn_id, (uint64_t) from, nickname, strlen (nickname), (uint64_t) to,
                client_id, strlen (client_id), content, strlen (content));
}

//  Expect message_stored for this message; returns its id
static uint64_t
s_expect_stored (fixture_t *f, uint64_t conn_id, int64_t from, const char *nickname,
                 int64_t to, const char *client_id, const char *content, uint64_t duplicate)
{
    chat_msg_t *m = chat_peer_expect (f->hub, CHAT_CMD_MESSAGE_STORED, 10000);
    assert_int_equal (m->u [0], conn_id);
    assert_true (m->u [1] > 0);
    assert_int_equal (m->u [2], from);
    assert_string_equal (m->s [3], nickname);
    assert_int_equal (m->u [4], to);
    assert_string_equal (m->s [5], client_id);
    assert_int_equal (m->len [6], strlen (content));
    assert_memory_equal (m->s [6], content, strlen (content));
    int64_t ms;
    assert_int_equal (chat_timestamp_parse (m->s [7], &ms), 0);
    assert_true (llabs (ms - chat_now_ms ()) < 60000);
    assert_int_equal (m->u [8], duplicate);
    return m->u [1];
}

//  Send and wait for the acknowledgement; returns the id
static uint64_t
s_store (fixture_t *f, int64_t from, const char *nickname, int64_t to, const char *content)
{
    static int counter = 0;
    char client_id [32];
    snprintf (client_id, sizeof client_id, "s-%d", ++counter);
    s_send (f, 1, from, nickname, to, client_id, content);
    return s_expect_stored (f, 1, from, nickname, to, client_id, content, 0);
}

//  One integer from an independent, read-only connection to the file
static int64_t
s_query (fixture_t *f, const char *sql, int64_t param)
{
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (f->cfg.sqlite_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK);
    if (sqlite3_bind_parameter_count (stmt) > 0)
        sqlite3_bind_int64 (stmt, 1, param);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    int64_t value = sqlite3_column_int64 (stmt, 0);
    sqlite3_finalize (stmt);
    sqlite3_close (db);
    return value;
}

//  Ask for storage_status now (pipe command) and return it
static chat_msg_t *
s_status (fixture_t *f)
{
    zstr_send (f->persistence, "STATUS");
    return chat_peer_expect (f->ws_front, CHAT_CMD_STORAGE_STATUS, 2000);
}

//  Parse a JSON array of message objects; checks each object's shape and
//  that ids ascend. Fills ids (up to max); returns the count.
static size_t
s_message_ids (const char *text, uint64_t *ids, size_t max)
{
    json_t *array = json_loads (text, 0, NULL);
    assert_true (json_is_array (array));
    size_t index;
    json_t *message;
    uint64_t last = 0;
    json_array_foreach (array, index, message) {
        assert_true (json_is_integer (json_object_get (message, "message_id")));
        assert_true (json_is_integer (json_object_get (message, "from_user_id")));
        assert_true (json_is_integer (json_object_get (message, "to_user_id")));
        assert_true (json_is_string (json_object_get (message, "nickname")));
        assert_true (json_is_string (json_object_get (message, "content")));
        assert_true (json_is_string (json_object_get (message, "timestamp")));
        assert_true (json_is_boolean (json_object_get (message, "is_read")));
        uint64_t id = (uint64_t) json_integer_value (json_object_get (message, "message_id"));
        assert_true (id > last);
        last = id;
        assert_true (index < max);
        ids [index] = id;
    }
    size_t count = json_array_size (array);
    json_decref (array);
    return count;
}


//  --------------------------------------------------------------------------
//  Storing

static void
test_store_and_duplicate (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    const char *content = "h\xc3\xa9llo \xf0\x9f\x98\x80 \"<b>\"\n\tbye";
    s_send (f, 7, f->alice, "alice", f->bob, "c-1", content);
    uint64_t id = s_expect_stored (f, 7, f->alice, "alice", f->bob, "c-1", content, 0);
    char timestamp [CHAT_TIMESTAMP_SIZE];
    snprintf (timestamp, sizeof timestamp, "%s", f->hub->msg.s [7]);
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages", 0), 1);

    //  The same client_id again, even with other content: the first one back
    zclock_sleep (5);
    s_send (f, 8, f->alice, "alice", f->bob, "c-1", "something else");
    uint64_t again = s_expect_stored (f, 8, f->alice, "alice", f->bob, "c-1", content, 1);
    assert_int_equal (again, id);
    assert_string_equal (f->hub->msg.s [7], timestamp);
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages", 0), 1);

    //  The same client_id from another sender is another message
    s_send (f, 9, f->bob, "bob", f->alice, "c-1", "from bob");
    uint64_t other = s_expect_stored (f, 9, f->bob, "bob", f->alice, "c-1", "from bob", 0);
    assert_true (other > id);

    //  No client_id: never a duplicate
    s_send (f, 7, f->alice, "alice", f->bob, "", "one");
    uint64_t first = s_expect_stored (f, 7, f->alice, "alice", f->bob, "", "one", 0);
    s_send (f, 7, f->alice, "alice", f->bob, "", "one");
    uint64_t second = s_expect_stored (f, 7, f->alice, "alice", f->bob, "", "one", 0);
    assert_true (second > first);
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages", 0), 4);

    //  The exact bytes are in the database
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (f->cfg.sqlite_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, "SELECT content FROM private_messages WHERE id = ?1", -1, &stmt, NULL), SQLITE_OK);
    sqlite3_bind_int64 (stmt, 1, (int64_t) id);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_int_equal (sqlite3_column_bytes (stmt, 0), strlen (content));
    assert_memory_equal (sqlite3_column_text (stmt, 0), content, strlen (content));
    sqlite3_finalize (stmt);
    sqlite3_close (db);

    chat_msg_t *m = s_status (f);
    assert_int_equal (m->u [0], 1);
    assert_int_equal (m->u [1], 4);            //  The duplicate is not counted
    chat_peer_expect_nothing (f->ws_front, 50);
}

static void
test_unknown_recipient (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    //  Both in flight together: the bad one does not spoil the good one
    s_send (f, 7, f->alice, "alice", 9999, "c-bad", "to nobody");
    s_send (f, 7, f->alice, "alice", f->bob, "c-good", "to bob");
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_MESSAGE_FAILED, 10000);
    assert_int_equal (m->u [0], 7);
    assert_string_equal (m->s [1], "c-bad");
    assert_int_equal (m->u [2], 9999);
    assert_string_equal (m->s [3], "unknown_user");
    assert_string_equal (m->s [4], "no such user");
    assert_int_equal (m->u [5], 0);
    s_expect_stored (f, 7, f->alice, "alice", f->bob, "c-good", "to bob", 0);
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages", 0), 1);
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages WHERE receiver_id = ?1", 9999), 0);
    chat_peer_expect_nothing (f->hub, 50);
}

//  Every acknowledgement comes after its commit; a burst is stored in
//  fewer transactions than messages
static void
test_ack_after_commit (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    const int burst = 300;
    for (int i = 0; i < burst; i++) {
        char client_id [16];
        snprintf (client_id, sizeof client_id, "b-%d", i);
        s_send (f, 7, f->alice, "alice", f->bob, client_id, "burst");
    }
    //  An independent connection sees each row when its ack arrives
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (f->cfg.sqlite_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, "SELECT client_id FROM private_messages WHERE id = ?1", -1, &stmt, NULL), SQLITE_OK);
    for (int i = 0; i < burst; i++) {
        chat_msg_t *m = chat_peer_expect (f->hub, CHAT_CMD_MESSAGE_STORED, 10000);
        char client_id [16];
        snprintf (client_id, sizeof client_id, "b-%d", i);
        assert_string_equal (m->s [5], client_id);      //  In order
        assert_int_equal (m->u [8], 0);
        sqlite3_bind_int64 (stmt, 1, (int64_t) m->u [1]);
        assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
        assert_string_equal ((const char *) sqlite3_column_text (stmt, 0), client_id);
        sqlite3_reset (stmt);
    }
    sqlite3_finalize (stmt);
    sqlite3_close (db);

    chat_msg_t *m = s_status (f);
    assert_int_equal (m->u [0], 1);
    assert_int_equal (m->u [1], burst);
    assert_true (m->u [2] >= 1);
    assert_true (m->u [2] < (uint64_t) burst);
    print_message ("      %d messages in %" PRIu64 " transactions\n", burst, m->u [2]);
}

//  Another connection takes the database's write lock (and holds it until
//  s_unlock_writes): the actor's writes wait, then fail after the busy timeout
static sqlite3 *
s_lock_writes (fixture_t *f)
{
    sqlite3 *locker = NULL;
    assert_int_equal (sqlite3_open (f->cfg.sqlite_path, &locker), SQLITE_OK);
    assert_int_equal (sqlite3_exec (locker, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    return locker;
}

static void
s_unlock_writes (sqlite3 **locker_p)
{
    sqlite3_exec (*locker_p, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close (*locker_p);
    *locker_p = NULL;
}

//  One batch with a duplicate client_id inside it and an unknown recipient
//  in the middle: another connection holds the write lock while the first
//  message waits in its transaction, so the rest gathers in the inbox and
//  is stored by the next transaction, all together
static void
test_batch_mixed (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    sqlite3 *locker = s_lock_writes (f);
    s_send (f, 1, f->alice, "alice", f->bob, "mix-0", "waits for the lock");
    zclock_sleep (200);                 //  The actor is in begin, waiting
    s_send (f, 2, f->alice, "alice", f->bob, "mix-1", "first");
    s_send (f, 3, f->alice, "alice", 9999, "mix-2", "to nobody");
    s_send (f, 4, f->bob, "bob", f->alice, "", "no client id");
    s_send (f, 5, f->alice, "alice", f->bob, "mix-1", "resent in the same batch");
    s_send (f, 6, f->alice, "alice", f->bob, "mix-2", "client id still free");
    s_send (f, 7, f->alice, "alice", 9999, "mix-1", "resent to nobody");
    s_send (f, 8, f->alice, "alice", f->bob, "mix-0", "resent from the batch before");
    zclock_sleep (200);
    s_unlock_writes (&locker);

    uint64_t id0 = s_expect_stored (f, 1, f->alice, "alice", f->bob, "mix-0", "waits for the lock", 0);
    uint64_t id1 = s_expect_stored (f, 2, f->alice, "alice", f->bob, "mix-1", "first", 0);
    uint64_t id3 = s_expect_stored (f, 4, f->bob, "bob", f->alice, "", "no client id", 0);
    uint64_t dup = s_expect_stored (f, 5, f->alice, "alice", f->bob, "mix-1", "first", 1);
    uint64_t id5 = s_expect_stored (f, 6, f->alice, "alice", f->bob, "mix-2", "client id still free", 0);
    uint64_t dup_nobody = s_expect_stored (f, 7, f->alice, "alice", f->bob, "mix-1", "first", 1);
    uint64_t dup_before = s_expect_stored (f, 8, f->alice, "alice", f->bob, "mix-0", "waits for the lock", 1);
    //  Ids ascend in batch order; duplicates answer the first one's
    assert_true (id0 < id1 && id1 < id3 && id3 < id5);
    assert_int_equal (dup, id1);
    assert_int_equal (dup_nobody, id1);
    assert_int_equal (dup_before, id0);
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_MESSAGE_FAILED, 10000);
    assert_int_equal (m->u [0], 3);
    assert_string_equal (m->s [1], "mix-2");
    assert_int_equal (m->u [2], 9999);
    assert_string_equal (m->s [3], "unknown_user");
    chat_peer_expect_nothing (f->hub, 50);

    m = s_status (f);
    assert_int_equal (m->u [1], 4);             //  Stored: 0, 1, 3, 5
    assert_int_equal (m->u [2], 2);             //  In two transactions
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages", 0), 4);
    assert_int_equal (s_query (f, "SELECT max (id) FROM private_messages", 0), (int64_t) id5);
}

//  No transaction holds more than [storage] batch_max messages
static void
test_batch_max (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    for (int i = 0; i < 100; i++) {
        char client_id [16];
        snprintf (client_id, sizeof client_id, "m-%d", i);
        s_send (f, 7, f->alice, "alice", f->bob, client_id, "capped");
    }
    for (int i = 0; i < 100; i++)
        chat_peer_expect (f->hub, CHAT_CMD_MESSAGE_STORED, 10000);
    chat_msg_t *m = s_status (f);
    assert_int_equal (m->u [1], 100);
    assert_true (m->u [2] >= 7);                //  ceil (100 / 16)
    assert_true (m->u [2] < 100);
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages", 0), 100);
}

//  On $TERM, what is already in the inbox is stored before the actor exits
static void
test_term_stores_pending (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    for (int i = 0; i < 100; i++) {
        char client_id [16];
        snprintf (client_id, sizeof client_id, "t-%d", i);
        s_send (f, 7, f->alice, "alice", f->bob, client_id, "before term");
    }
    zactor_destroy (&f->persistence);
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages", 0), 100);
}


//  --------------------------------------------------------------------------
//  Reading

static void
s_load_history (fixture_t *f, int64_t user, int64_t with, uint64_t before_id,
                uint64_t limit, const char *request_id)
{
    chat_send (f->ws_front->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_LOAD_HISTORY,
               (uint64_t) 5, (uint64_t) user, (uint64_t) with, before_id, limit, request_id);
}

//  Expect history_loaded; fills ids and returns the count
static size_t
s_expect_history (fixture_t *f, int64_t with, const char *request_id, uint64_t *ids,
                  size_t max, uint64_t has_more)
{
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_HISTORY_LOADED, 5000);
    assert_int_equal (m->u [0], 5);
    assert_int_equal (m->u [1], with);
    assert_string_equal (m->s [2], request_id);
    assert_int_equal (m->u [4], has_more);
    return s_message_ids (m->s [3], ids, max);
}

static void
test_history (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    uint64_t ab [7];
    for (int i = 0; i < 7; i++)
        ab [i] = i % 2? s_store (f, f->bob, "bob", f->alice, "b to a")
                      : s_store (f, f->alice, "alice", f->bob, "a to b");
    s_store (f, f->alice, "alice", f->carol, "a to c");
    s_store (f, f->carol, "Carol", f->alice, "c to a");

    uint64_t ids [200];
    //  Newest page first, ascending inside the page
    s_load_history (f, f->alice, f->bob, 0, 3, "\"r-9\"");
    assert_int_equal (s_expect_history (f, f->bob, "\"r-9\"", ids, 200, 1), 3);
    assert_memory_equal (ids, ab + 4, 3 * sizeof (uint64_t));
    s_load_history (f, f->alice, f->bob, ab [4], 3, "17");
    assert_int_equal (s_expect_history (f, f->bob, "17", ids, 200, 1), 3);
    assert_memory_equal (ids, ab + 1, 3 * sizeof (uint64_t));
    s_load_history (f, f->alice, f->bob, ab [1], 3, "");
    assert_int_equal (s_expect_history (f, f->bob, "", ids, 200, 0), 1);
    assert_int_equal (ids [0], ab [0]);
    //  From the other side, limit 0 (default 50) and above 100 (clamped)
    s_load_history (f, f->bob, f->alice, 0, 0, "");
    assert_int_equal (s_expect_history (f, f->alice, "", ids, 200, 0), 7);
    assert_memory_equal (ids, ab, 7 * sizeof (uint64_t));
    s_load_history (f, f->bob, f->alice, 0, 100000, "");
    assert_int_equal (s_expect_history (f, f->alice, "", ids, 200, 0), 7);
    //  No conversation
    s_load_history (f, f->bob, f->carol, 0, 10, "");
    assert_int_equal (s_expect_history (f, f->carol, "", ids, 200, 0), 0);

    //  The message object
    s_load_history (f, f->alice, f->bob, ab [1], 1, "");
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_HISTORY_LOADED, 5000);
    json_t *messages = json_loads (m->s [3], 0, NULL);
    json_t *message = json_array_get (messages, 0);
    assert_int_equal (json_integer_value (json_object_get (message, "message_id")), ab [0]);
    assert_int_equal (json_integer_value (json_object_get (message, "from_user_id")), f->alice);
    assert_int_equal (json_integer_value (json_object_get (message, "to_user_id")), f->bob);
    assert_string_equal (json_string_value (json_object_get (message, "nickname")), "alice");
    assert_string_equal (json_string_value (json_object_get (message, "content")), "a to b");
    int64_t ms;
    assert_int_equal (chat_timestamp_parse (json_string_value (json_object_get (message, "timestamp")), &ms), 0);
    assert_true (json_is_false (json_object_get (message, "is_read")));
    json_decref (messages);
}

static void
s_sync (fixture_t *f, int64_t user, uint64_t after_id, uint64_t limit, const char *request_id)
{
    chat_send (f->ws_front->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_SYNC,
               (uint64_t) 6, (uint64_t) user, after_id, limit, request_id);
}

static size_t
s_expect_synced (fixture_t *f, const char *request_id, uint64_t *ids, size_t max,
                 uint64_t has_more)
{
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_SYNCED, 5000);
    assert_int_equal (m->u [0], 6);
    assert_string_equal (m->s [1], request_id);
    assert_int_equal (m->u [3], has_more);
    return s_message_ids (m->s [2], ids, max);
}

static void
test_sync (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    uint64_t all [9];
    for (int i = 0; i < 7; i++)
        all [i] = i % 2? s_store (f, f->bob, "bob", f->alice, "b to a")
                       : s_store (f, f->alice, "alice", f->bob, "a to b");
    all [7] = s_store (f, f->alice, "alice", f->carol, "a to c");
    all [8] = s_store (f, f->carol, "Carol", f->alice, "c to a");

    uint64_t ids [2000];
    //  alice: every conversation, ascending, pages of 4
    s_sync (f, f->alice, 0, 4, "\"r-10\"");
    assert_int_equal (s_expect_synced (f, "\"r-10\"", ids, 2000, 1), 4);
    assert_memory_equal (ids, all, 4 * sizeof (uint64_t));
    s_sync (f, f->alice, ids [3], 4, "");
    assert_int_equal (s_expect_synced (f, "", ids, 2000, 1), 4);
    assert_memory_equal (ids, all + 4, 4 * sizeof (uint64_t));
    s_sync (f, f->alice, ids [3], 4, "");
    assert_int_equal (s_expect_synced (f, "", ids, 2000, 0), 1);
    assert_int_equal (ids [0], all [8]);
    s_sync (f, f->alice, all [8], 4, "");
    assert_int_equal (s_expect_synced (f, "", ids, 2000, 0), 0);
    //  bob sees only his own; limit 0 is the default (500), 5000 is clamped
    s_sync (f, f->bob, 0, 0, "");
    assert_int_equal (s_expect_synced (f, "", ids, 2000, 0), 7);
    assert_memory_equal (ids, all, 7 * sizeof (uint64_t));
    s_sync (f, f->carol, all [0], 5000, "");
    assert_int_equal (s_expect_synced (f, "", ids, 2000, 0), 2);
    assert_int_equal (ids [0], all [7]);
    assert_int_equal (ids [1], all [8]);
}

static void
test_sync_limits (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    //  1100 messages (one batch of them and then some)
    for (int i = 0; i < 1100; i++) {
        char client_id [16];
        snprintf (client_id, sizeof client_id, "l-%d", i);
        s_send (f, 7, f->alice, "alice", f->bob, client_id, "many");
    }
    for (int i = 0; i < 1100; i++)
        chat_peer_expect (f->hub, CHAT_CMD_MESSAGE_STORED, 10000);
    static uint64_t ids [1100];
    s_sync (f, f->bob, 0, 0, "");
    assert_int_equal (s_expect_synced (f, "", ids, 1100, 1), 500);
    s_sync (f, f->bob, 0, 5000, "");
    assert_int_equal (s_expect_synced (f, "", ids, 1100, 1), 1000);
    s_sync (f, f->bob, ids [999], 5000, "");
    assert_int_equal (s_expect_synced (f, "", ids, 1100, 0), 100);
    s_load_history (f, f->bob, f->alice, 0, 0, "");
    assert_int_equal (s_expect_history (f, f->alice, "", ids, 1100, 1), 50);
    s_load_history (f, f->bob, f->alice, 0, 500, "");
    assert_int_equal (s_expect_history (f, f->alice, "", ids, 1100, 1), 100);
}

static void
test_mark_read (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    uint64_t a1 = s_store (f, f->alice, "alice", f->bob, "one");
    uint64_t a2 = s_store (f, f->alice, "alice", f->bob, "two");
    uint64_t b1 = s_store (f, f->bob, "bob", f->alice, "three");
    uint64_t a3 = s_store (f, f->alice, "alice", f->bob, "four");
    (void) a1;
    (void) b1;

    //  bob read alice's messages up to a2
    chat_send (f->ws_front->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_MARK_READ,
               (uint64_t) 21, (uint64_t) f->bob, (uint64_t) f->alice, a2);
    chat_msg_t *m = chat_peer_expect (f->hub, CHAT_CMD_MESSAGES_READ, 5000);
    assert_int_equal (m->u [0], f->bob);
    assert_int_equal (m->u [1], f->alice);
    assert_int_equal (m->u [2], a2);
    //  In the file: a message is read when its id is at most its
    //  recipient's read marker for its sender (docs/architecture.md)
    const char *read_sql =
        "SELECT count (*) FROM private_messages AS m"
        "  JOIN conversations AS r ON r.user_id = m.receiver_id AND r.partner_id = m.sender_id"
        " WHERE m.id <= r.read_up_to AND m.id <= ?1";
    const char *is_read_sql =
        "SELECT m.id <= coalesce ((SELECT read_up_to FROM conversations"
        "                           WHERE user_id = m.receiver_id AND partner_id = m.sender_id), 0)"
        "  FROM private_messages AS m WHERE m.id = ?1";
    assert_int_equal (s_query (f, read_sql, (int64_t) a3), 2);
    assert_int_equal (s_query (f, is_read_sql, (int64_t) a3), 0);
    assert_int_equal (s_query (f, is_read_sql, (int64_t) b1), 0);

    //  Again: nothing changes, so no receipt
    chat_send (f->ws_front->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_MARK_READ,
               (uint64_t) 21, (uint64_t) f->bob, (uint64_t) f->alice, a2);
    chat_peer_expect_nothing (f->hub, 300);
    assert_int_equal (s_query (f, read_sql, (int64_t) a3), 2);

    //  A mark_read right behind a message sees that message (flushed
    //  first). Both come down one pipe here, so that their order is certain
    s_send (f, 7, f->alice, "alice", f->bob, "c-late", "five");
    chat_send (f->rate_limiter->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_MARK_READ,
               (uint64_t) 21, (uint64_t) f->bob, (uint64_t) f->alice, (uint64_t) 1000000);
    uint64_t a4 = s_expect_stored (f, 7, f->alice, "alice", f->bob, "c-late", "five", 0);
    m = chat_peer_expect (f->hub, CHAT_CMD_MESSAGES_READ, 5000);
    assert_int_equal (m->u [2], 1000000);
    assert_int_equal (s_query (f, is_read_sql, (int64_t) a4), 1);
    assert_int_equal (s_query (f, read_sql, INT64_MAX), 4);

    //  The history shows the read state
    s_load_history (f, f->alice, f->bob, 0, 10, "");
    m = chat_peer_expect (f->ws_front, CHAT_CMD_HISTORY_LOADED, 5000);
    json_t *messages = json_loads (m->s [3], 0, NULL);
    assert_int_equal (json_array_size (messages), 5);
    assert_true (json_is_true (json_object_get (json_array_get (messages, 0), "is_read")));
    assert_true (json_is_false (json_object_get (json_array_get (messages, 2), "is_read")));
    json_decref (messages);
}

static void
test_list_users (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    chat_send (f->ws_front->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_LIST_USERS, (uint64_t) 42);
    chat_msg_t *m = chat_peer_expect (f->presence, CHAT_CMD_USERS_LISTED, 5000);
    assert_int_equal (m->u [0], 42);
    json_t *users = json_loads (m->s [1], 0, NULL);
    assert_int_equal (json_array_size (users), 3);
    const char *order [] = { "alice", "bob", "Carol" };
    int64_t ids [] = { f->alice, f->bob, f->carol };
    for (size_t i = 0; i < 3; i++) {
        json_t *user = json_array_get (users, i);
        assert_int_equal (json_object_size (user), 2);
        assert_int_equal (json_integer_value (json_object_get (user, "user_id")), ids [i]);
        assert_string_equal (json_string_value (json_object_get (user, "nickname")), order [i]);
    }
    json_decref (users);
}

static void
test_list_conversations (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_store (f, f->bob, "bob", f->alice, "b1");
    uint64_t b2 = s_store (f, f->bob, "bob", f->alice, "b2");
    s_store (f, f->alice, "alice", f->carol, "a to c");
    uint64_t c1 = s_store (f, f->carol, "Carol", f->alice, "c1");

    chat_send (f->ws_front->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_LIST_CONVERSATIONS,
               (uint64_t) 43, (uint64_t) f->alice);
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_HTTP_RESPONSE, 5000);
    assert_int_equal (m->u [0], 43);
    assert_int_equal (m->u [1], 200);
    assert_int_equal (m->len [3], 0);
    json_t *body = json_loads (m->s [2], 0, NULL);
    json_t *conversations = json_object_get (body, "conversations");
    assert_int_equal (json_array_size (conversations), 2);
    //  Most recent first: Carol, then bob
    json_t *conv = json_array_get (conversations, 0);
    assert_int_equal (json_integer_value (json_object_get (conv, "user_id")), f->carol);
    assert_string_equal (json_string_value (json_object_get (conv, "nickname")), "Carol");
    assert_int_equal (json_integer_value (json_object_get (conv, "unread")), 1);
    json_t *last = json_object_get (conv, "last_message");
    assert_int_equal (json_integer_value (json_object_get (last, "message_id")), c1);
    assert_string_equal (json_string_value (json_object_get (last, "content")), "c1");
    conv = json_array_get (conversations, 1);
    assert_int_equal (json_integer_value (json_object_get (conv, "user_id")), f->bob);
    assert_int_equal (json_integer_value (json_object_get (conv, "unread")), 2);
    last = json_object_get (conv, "last_message");
    assert_int_equal (json_integer_value (json_object_get (last, "message_id")), b2);
    assert_string_equal (json_string_value (json_object_get (last, "nickname")), "bob");
    json_decref (body);

    //  A user without conversations
    chat_send (f->ws_front->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_LIST_CONVERSATIONS,
               (uint64_t) 44, (uint64_t) 9999);
    m = chat_peer_expect (f->ws_front, CHAT_CMD_HTTP_RESPONSE, 5000);
    assert_int_equal (m->u [1], 200);
    assert_string_equal (m->s [2], "{\"conversations\":[]}");
}


//  --------------------------------------------------------------------------
//  Storage failure: another connection holds the write lock, so every
//  write fails (after SQLite's busy timeout); reads still work in WAL mode

static void
test_storage_failure (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    sqlite3 *locker = s_lock_writes (f);

    s_send (f, 7, f->alice, "alice", f->bob, "f-1", "lost");
    s_send (f, 8, f->alice, "alice", f->bob, "f-2", "lost too");
    const char *client_ids [] = { "f-1", "f-2" };
    uint64_t conns [] = { 7, 8 };
    //  Each failure, then storage_status down (perhaps both in one batch)
    size_t failed = 0;
    bool down = false;
    while (failed < 2 || !down) {
        chat_msg_t *m = chat_peer_recv (f->ws_front, 20000);
        assert_non_null (m);
        if (m->cmd == CHAT_CMD_MESSAGE_FAILED) {
            assert_int_equal (m->u [0], conns [failed]);
            assert_string_equal (m->s [1], client_ids [failed]);
            assert_int_equal (m->u [2], f->bob);
            assert_string_equal (m->s [3], "storage_unavailable");
            assert_string_equal (m->s [4], "storage is unavailable; retry");
            failed++;
        }
        else {
            assert_int_equal (m->cmd, CHAT_CMD_STORAGE_STATUS);
            if (m->u [0] == 0)
                down = true;
        }
    }
    chat_peer_expect_nothing (f->hub, 50);

    s_unlock_writes (&locker);
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages", 0), 0);

    //  The ping finds the database again: up (the periodic status may
    //  come first, still down)
    chat_msg_t *m;
    do {
        m = chat_peer_expect (f->ws_front, CHAT_CMD_STORAGE_STATUS, 6000);
        assert_int_equal (m->u [1], 0);
    } while (m->u [0] == 0);
    //  And storing works again
    s_send (f, 7, f->alice, "alice", f->bob, "f-1", "found");
    s_expect_stored (f, 7, f->alice, "alice", f->bob, "f-1", "found", 0);
    assert_int_equal (s_query (f, "SELECT count (*) FROM private_messages", 0), 1);
}

//  A backend that cannot open: the actor reports the reason and stops
static void
test_open_failure (void **state)
{
    (void) state;
    chat_config_t cfg;
    chat_config_defaults (&cfg);
    snprintf (cfg.sqlite_path, sizeof cfg.sqlite_path, "/nonexistent-dir/sub/chat.db");
    zactor_t *actor = zactor_new (chat_persistence_actor, &cfg);
    assert_non_null (actor);
    char error [256] = "";
    assert_int_equal (chat_actor_started (actor, error, sizeof error), -1);
    assert_true (strlen (error) > 0);
    zactor_destroy (&actor);
}

int
main (void)
{
    zsys_init ();
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_store_and_duplicate, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_unknown_recipient, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_ack_after_commit, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_batch_max, s_setup_small_batch, s_teardown),
        cmocka_unit_test_setup_teardown (test_batch_mixed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_term_stores_pending, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_history, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sync, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_sync_limits, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_mark_read, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_list_users, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_list_conversations, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_storage_failure, s_setup, s_teardown),
        cmocka_unit_test (test_open_failure),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    zsys_shutdown ();
    return rc;
}
