/*  =========================================================================
    test_backend.c - the storage backend conformance suite

    One suite, written once against include/chat_backend.h, run against
    every backend there is: "sqlite" on a real file in a temporary
    directory, and "postgres" when CHAT_TEST_PG_CONNINFO names a server
    (its public schema is dropped and made again first, so every run starts
    empty; tests/with-postgres.sh provides a throw-away server). The backend
    handle is the cmocka group state, so the same test functions serve both.

    Every test makes its own users, so tests do not see each other's
    messages; the users list test only relies on the order.
    =========================================================================
*/

#include "test_util.h"
#include "chat_backend.h"
#include "chat_config.h"
#include "chat_wire.h"
#include <ctype.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sqlite3.h>

typedef struct {
    const char *name;                   //  Backend name, "sqlite" or "postgres"
    const chat_backend_ops_t *ops;      //  The backend; NULL: run skipped
    chat_backend_t *db;                 //  The handle every test uses
    chat_config_t cfg;                  //  Config it was opened with
    char *tmpdir;                       //  SQLite's directory, or NULL
} s_suite_t;

//  The suite of this group, or skip the test when the run is skipped
static s_suite_t *
s_suite (void **state)
{
    s_suite_t *suite = (s_suite_t *) *state;
    assert_non_null (suite);
    if (!suite->ops)
        skip ();
    return suite;
}


//  --------------------------------------------------------------------------
//  Collectors: copy what the callbacks hand out (valid only during the call)

#define S_MAX_ROWS 64

typedef struct {
    int64_t id;
    int64_t from_user_id;
    int64_t to_user_id;
    char *nickname;
    char *content;
    size_t content_len;
    int64_t created_ms;
    bool is_read;
    char *client_id;
} s_row_t;

typedef struct {
    int count;
    s_row_t rows [S_MAX_ROWS];
} s_rows_t;

static void
s_row_copy (s_row_t *row, const chat_message_t *message)
{
    row->id = message->id;
    row->from_user_id = message->from_user_id;
    row->to_user_id = message->to_user_id;
    row->nickname = message->nickname? strdup (message->nickname): NULL;
    row->content = (char *) malloc (message->content_len + 1);
    assert_non_null (row->content);
    memcpy (row->content, message->content, message->content_len);
    row->content [message->content_len] = 0;
    row->content_len = message->content_len;
    row->created_ms = message->created_ms;
    row->is_read = message->is_read;
    row->client_id = message->client_id? strdup (message->client_id): NULL;
}

static void
s_row_free (s_row_t *row)
{
    free (row->nickname);
    free (row->content);
    free (row->client_id);
    memset (row, 0, sizeof (s_row_t));
}

static void
s_on_message (const chat_message_t *message, void *ctx)
{
    s_rows_t *rows = (s_rows_t *) ctx;
    assert_true (rows->count < S_MAX_ROWS);
    s_row_copy (&rows->rows [rows->count++], message);
}

static void
s_rows_clear (s_rows_t *rows)
{
    for (int i = 0; i < rows->count; i++)
        s_row_free (&rows->rows [i]);
    rows->count = 0;
}

typedef struct {
    int64_t user_id;
    char *nickname;
    int64_t unread;
    s_row_t last;
} s_conv_t;

typedef struct {
    int count;
    s_conv_t convs [S_MAX_ROWS];
} s_convs_t;

static void
s_on_conversation (const chat_conversation_t *conv, void *ctx)
{
    s_convs_t *convs = (s_convs_t *) ctx;
    assert_true (convs->count < S_MAX_ROWS);
    s_conv_t *copy = &convs->convs [convs->count++];
    copy->user_id = conv->user_id;
    copy->nickname = strdup (conv->nickname);
    copy->unread = conv->unread;
    s_row_copy (&copy->last, &conv->last_message);
}

//  Conversation i is with user_id, its last message last_id, unread of it
//  unread
static void
s_assert_conversation (const s_convs_t *convs, int i, int64_t user_id, int64_t last_id,
                       int64_t unread)
{
    assert_true (i < convs->count);
    assert_int_equal (convs->convs [i].user_id, user_id);
    assert_int_equal (convs->convs [i].last.id, last_id);
    assert_int_equal (convs->convs [i].unread, unread);
}

static void
s_convs_clear (s_convs_t *convs)
{
    for (int i = 0; i < convs->count; i++) {
        free (convs->convs [i].nickname);
        s_row_free (&convs->convs [i].last);
    }
    convs->count = 0;
}

typedef struct {
    char token_hash [80];
    int64_t user_id;
    char nickname [40];
    int64_t expires_ms;
} s_session_t;

typedef struct {
    const char *prefix;                 //  Only sessions whose hash starts so
    int count;
    s_session_t sessions [S_MAX_ROWS];
} s_sessions_t;

static void
s_on_session (const char *token_hash, int64_t user_id, const char *nickname,
              int64_t expires_ms, void *ctx)
{
    s_sessions_t *list = (s_sessions_t *) ctx;
    assert_non_null (token_hash);
    assert_non_null (nickname);
    if (strncmp (token_hash, list->prefix, strlen (list->prefix)) != 0)
        return;                         //  Another test's session
    assert_true (list->count < S_MAX_ROWS);
    s_session_t *session = &list->sessions [list->count++];
    snprintf (session->token_hash, sizeof session->token_hash, "%s", token_hash);
    session->user_id = user_id;
    snprintf (session->nickname, sizeof session->nickname, "%s", nickname);
    session->expires_ms = expires_ms;
}

static s_session_t *
s_sessions_find (s_sessions_t *list, const char *token_hash)
{
    for (int i = 0; i < list->count; i++)
        if (streq (list->sessions [i].token_hash, token_hash))
            return &list->sessions [i];
    return NULL;
}

typedef struct {
    int count;
    int64_t ids [1024];
    char nicknames [1024][33];
} s_users_t;

static void
s_on_user (const chat_user_t *user, void *ctx)
{
    s_users_t *users = (s_users_t *) ctx;
    assert_true (users->count < 1024);
    users->ids [users->count] = user->id;
    snprintf (users->nicknames [users->count], 33, "%s", user->nickname);
    users->count++;
}


//  --------------------------------------------------------------------------
//  Helpers

static int64_t
s_user (s_suite_t *suite, const char *nickname)
{
    int64_t id = 0;
    int rc = suite->ops->user_create (suite->db, nickname, "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA",
                                      chat_now_ms (), &id);
    assert_int_equal (rc, CHAT_DB_OK);
    assert_true (id > 0);
    return id;
}

//  Store one message as a batch of one; returns its result, or the
//  batch's failure
static int
s_store_one (const chat_backend_ops_t *ops, chat_backend_t *db, chat_message_t *message,
             bool *duplicate)
{
    int result = -100;
    int rc = ops->message_store_batch (db, message, 1, &result, duplicate);
    if (rc != CHAT_DB_OK)
        return rc;
    assert_true (result == CHAT_DB_OK || result == CHAT_DB_NOT_FOUND);
    return result;
}

//  Store one message inside an open transaction; returns its id
static int64_t
s_put (s_suite_t *suite, int64_t from, int64_t to, const char *content,
       size_t content_len, const char *client_id)
{
    chat_message_t message = {
        .from_user_id = from, .to_user_id = to, .content = content,
        .content_len = content_len, .client_id = client_id
    };
    bool duplicate = true;
    assert_int_equal (s_store_one (suite->ops, suite->db, &message, &duplicate), CHAT_DB_OK);
    assert_false (duplicate);
    assert_true (message.id > 0);
    assert_ptr_equal (message.content, content);
    return message.id;
}

//  Store one message in a transaction of its own; returns its id
static int64_t
s_send (s_suite_t *suite, int64_t from, int64_t to, const char *content)
{
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    int64_t id = s_put (suite, from, to, content, strlen (content), NULL);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);
    return id;
}

static bool
s_history (s_suite_t *suite, int64_t user, int64_t with, int64_t before_id, int limit,
           s_rows_t *rows)
{
    s_rows_clear (rows);
    bool has_more = true;
    assert_int_equal (suite->ops->history (suite->db, user, with, before_id, limit,
                                           s_on_message, rows, &has_more), CHAT_DB_OK);
    return has_more;
}

static bool
s_sync (s_suite_t *suite, int64_t user, int64_t after_id, int limit, s_rows_t *rows)
{
    s_rows_clear (rows);
    bool has_more = true;
    assert_int_equal (suite->ops->sync (suite->db, user, after_id, limit,
                                        s_on_message, rows, &has_more), CHAT_DB_OK);
    return has_more;
}

//  Assert the rows are exactly these ids, in this order
static void
s_assert_ids (s_rows_t *rows, const int64_t *ids, int count)
{
    if (rows->count != count) {
        for (int i = 0; i < rows->count; i++)
            print_message ("  got id %" PRId64 "\n", rows->rows [i].id);
        fail_msg ("expected %d rows, got %d", count, rows->count);
    }
    for (int i = 0; i < count; i++)
        assert_int_equal (rows->rows [i].id, ids [i]);
}

static int64_t
s_mark_read (s_suite_t *suite, int64_t reader, int64_t partner, int64_t up_to_id)
{
    int64_t changed = -1;
    assert_int_equal (suite->ops->mark_read (suite->db, reader, partner, up_to_id, &changed),
                      CHAT_DB_OK);
    return changed;
}

static s_row_t *
s_row_find (s_rows_t *rows, int64_t id)
{
    for (int i = 0; i < rows->count; i++)
        if (rows->rows [i].id == id)
            return &rows->rows [i];
    return NULL;
}

//  Rows and distinct versions of schema_migrations, read behind the
//  backend's back
static void
s_migrations (s_suite_t *suite, int64_t *rows, int64_t *versions)
{
    const char *sql = "SELECT count(*), count(DISTINCT version), min(version) FROM schema_migrations";
    int64_t min_version = 0;
    if (streq (suite->name, "sqlite")) {
        sqlite3 *db = NULL;
        assert_int_equal (sqlite3_open_v2 (suite->cfg.sqlite_path, &db, SQLITE_OPEN_READONLY, NULL),
                          SQLITE_OK);
        sqlite3_stmt *stmt = NULL;
        assert_int_equal (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK);
        assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
        *rows = sqlite3_column_int64 (stmt, 0);
        *versions = sqlite3_column_int64 (stmt, 1);
        min_version = sqlite3_column_int64 (stmt, 2);
        sqlite3_finalize (stmt);
        sqlite3_close (db);
    }
    else {
        PGconn *conn = PQconnectdb (suite->cfg.postgres_conninfo);
        assert_int_equal (PQstatus (conn), CONNECTION_OK);
        PGresult *result = PQexec (conn, sql);
        assert_int_equal (PQresultStatus (result), PGRES_TUPLES_OK);
        *rows = atoll (PQgetvalue (result, 0, 0));
        *versions = atoll (PQgetvalue (result, 0, 1));
        min_version = atoll (PQgetvalue (result, 0, 2));
        PQclear (result);
        PQfinish (conn);
    }
    assert_int_equal (min_version, 1);
}


//  --------------------------------------------------------------------------
//  Opening and migrations

static void
test_open_twice (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t rows = 0, versions = 0;
    s_migrations (suite, &rows, &versions);
    assert_true (rows >= 1);
    assert_int_equal (rows, versions);
    int64_t alice = s_user (suite, "Open_Twice");

    //  A second handle on the same database: nothing to migrate, same data
    char error [256] = "";
    chat_backend_t *second = suite->ops->open (&suite->cfg, error, sizeof error);
    if (!second)
        fail_msg ("second open failed: %s", error);
    assert_int_equal (suite->ops->ping (second), CHAT_DB_OK);
    chat_user_t user;
    assert_int_equal (suite->ops->user_find (second, "open_twice", &user), CHAT_DB_OK);
    assert_int_equal (user.id, alice);
    suite->ops->close (&second);
    assert_null (second);

    //  And a third, after the second closed
    second = suite->ops->open (&suite->cfg, error, sizeof error);
    assert_non_null (second);
    suite->ops->close (&second);

    int64_t rows_after = 0, versions_after = 0;
    s_migrations (suite, &rows_after, &versions_after);
    assert_int_equal (rows_after, rows);
    assert_int_equal (versions_after, versions);
    assert_int_equal (suite->ops->ping (suite->db), CHAT_DB_OK);
}

static void
test_open_failure (void **state)
{
    s_suite_t *suite = s_suite (state);
    chat_config_t cfg = suite->cfg;
    if (streq (suite->name, "sqlite"))
        snprintf (cfg.sqlite_path, sizeof cfg.sqlite_path, "%s/no-such-dir/chat.db", suite->tmpdir);
    else
        snprintf (cfg.postgres_conninfo, sizeof cfg.postgres_conninfo,
                  "host=127.0.0.1 port=1 dbname=none user=none connect_timeout=2");
    char error [256] = "";
    chat_backend_t *db = suite->ops->open (&cfg, error, sizeof error);
    assert_null (db);
    assert_true (strlen (error) > 0);
    assert_null (strchr (error, '\n'));     //  One line
    if (streq (suite->name, "sqlite")) {
        char expected [1200];
        snprintf (expected, sizeof expected,
                  "cannot open database %s: unable to open database file", cfg.sqlite_path);
        assert_string_equal (error, expected);

        //  A file that is not a database
        snprintf (cfg.sqlite_path, sizeof cfg.sqlite_path, "%s/not-a-db", suite->tmpdir);
        FILE *file = fopen (cfg.sqlite_path, "w");
        assert_non_null (file);
        for (int i = 0; i < 512; i++)
            fputs ("this is not an SQLite database\n", file);
        fclose (file);
        error [0] = 0;
        assert_null (suite->ops->open (&cfg, error, sizeof error));
        snprintf (expected, sizeof expected,
                  "cannot open database %s: file is not a database", cfg.sqlite_path);
        assert_string_equal (error, expected);
    }
}

//  Two handles on one database, as auth and persistence have: a batch is
//  invisible to the other handle until it commits, then fully visible
static void
test_two_handles (void **state)
{
    s_suite_t *suite = s_suite (state);
    char error [256] = "";
    chat_backend_t *other = suite->ops->open (&suite->cfg, error, sizeof error);
    if (!other)
        fail_msg ("second open failed: %s", error);
    int64_t alice = s_user (suite, "Two_Alice");
    int64_t bob = 0;
    assert_int_equal (suite->ops->user_create (other, "Two_Bob", "hash", 1, &bob), CHAT_DB_OK);
    chat_user_t user;
    assert_int_equal (suite->ops->user_find (suite->db, "two_bob", &user), CHAT_DB_OK);
    assert_int_equal (user.id, bob);

    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    int64_t id = s_put (suite, alice, bob, "in flight", 9, "two-1");
    bool has_more = true;
    s_rows_t rows = { 0 };
    assert_int_equal (suite->ops->history (other, bob, alice, 0, 10, s_on_message, &rows, &has_more),
                      CHAT_DB_OK);
    assert_int_equal (rows.count, 0);
    assert_false (has_more);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);

    assert_int_equal (suite->ops->history (other, bob, alice, 0, 10, s_on_message, &rows, &has_more),
                      CHAT_DB_OK);
    int64_t expected [] = { id };
    s_assert_ids (&rows, expected, 1);
    assert_string_equal (rows.rows [0].content, "in flight");
    int64_t changed = 0;
    assert_int_equal (suite->ops->mark_read (other, bob, alice, id, &changed), CHAT_DB_OK);
    assert_int_equal (changed, 1);
    assert_true (s_history (suite, alice, bob, 0, 0, &rows));     //  limit 0: only has_more
    assert_int_equal (rows.count, 0);
    assert_false (s_history (suite, alice, bob, 0, 1, &rows));
    assert_true (rows.rows [0].is_read);

    //  The client_id is taken for the other handle too
    assert_int_equal (suite->ops->begin (other), CHAT_DB_OK);
    chat_message_t message = {
        .from_user_id = alice, .to_user_id = bob, .content = "again",
        .content_len = 5, .client_id = "two-1"
    };
    bool duplicate = false;
    assert_int_equal (s_store_one (suite->ops, other, &message, &duplicate), CHAT_DB_OK);
    assert_true (duplicate);
    assert_int_equal (message.id, id);
    assert_int_equal (suite->ops->commit (other), CHAT_DB_OK);
    s_rows_clear (&rows);
    suite->ops->close (&other);
}


//  --------------------------------------------------------------------------
//  Users

static void
test_user_create_find (void **state)
{
    s_suite_t *suite = s_suite (state);
    const char *hash = "$argon2id$v=19$m=65536,t=2,p=1$abc$def";
    int64_t id = 0;
    assert_int_equal (suite->ops->user_create (suite->db, "Mixed.Case-1", hash, 1000, &id), CHAT_DB_OK);
    assert_true (id > 0);

    chat_user_t user;
    const char *spellings [] = { "Mixed.Case-1", "mixed.case-1", "MIXED.CASE-1", "mIxEd.cAsE-1" };
    for (size_t i = 0; i < sizeof spellings / sizeof spellings [0]; i++) {
        memset (&user, 0, sizeof user);
        assert_int_equal (suite->ops->user_find (suite->db, spellings [i], &user), CHAT_DB_OK);
        assert_int_equal (user.id, id);
        assert_string_equal (user.nickname, "Mixed.Case-1");    //  As registered
        assert_string_equal (user.password_hash, hash);
    }
    memset (&user, 0, sizeof user);
    assert_int_equal (suite->ops->user_get (suite->db, id, &user), CHAT_DB_OK);
    assert_int_equal (user.id, id);
    assert_string_equal (user.nickname, "Mixed.Case-1");
    assert_string_equal (user.password_hash, hash);

    //  Taken, whatever the case
    int64_t other = -1;
    assert_int_equal (suite->ops->user_create (suite->db, "MIXED.case-1", hash, 1001, &other),
                      CHAT_DB_CONFLICT);
    assert_int_equal (suite->ops->user_create (suite->db, "Mixed.Case-1", hash, 1001, &other),
                      CHAT_DB_CONFLICT);
    //  The conflict stored nothing: the next user gets the next id
    int64_t next = 0;
    assert_int_equal (suite->ops->user_create (suite->db, "Mixed.Case-2", hash, 1002, &next), CHAT_DB_OK);
    assert_true (next > id);
    assert_int_equal (suite->ops->user_find (suite->db, "mixed.case-2", &user), CHAT_DB_OK);
    assert_int_equal (user.id, next);
}

static void
test_user_unknown (void **state)
{
    s_suite_t *suite = s_suite (state);
    chat_user_t user;
    assert_int_equal (suite->ops->user_find (suite->db, "nobody_here", &user), CHAT_DB_NOT_FOUND);
    assert_int_equal (suite->ops->user_find (suite->db, "", &user), CHAT_DB_NOT_FOUND);
    assert_int_equal (suite->ops->user_get (suite->db, INT64_MAX, &user), CHAT_DB_NOT_FOUND);
    assert_int_equal (suite->ops->user_get (suite->db, 0, &user), CHAT_DB_NOT_FOUND);
    assert_int_equal (suite->ops->user_get (suite->db, -5, &user), CHAT_DB_NOT_FOUND);
    //  A prefix or a longer name is another nickname
    s_user (suite, "Prefixed");
    assert_int_equal (suite->ops->user_find (suite->db, "prefix", &user), CHAT_DB_NOT_FOUND);
    assert_int_equal (suite->ops->user_find (suite->db, "prefixed2", &user), CHAT_DB_NOT_FOUND);
    assert_int_equal (suite->ops->user_find (suite->db, "prefixe%", &user), CHAT_DB_NOT_FOUND);
}

static void
test_users_list (void **state)
{
    s_suite_t *suite = s_suite (state);
    //  Byte order of the lower-cased nickname: - . 0-9 _ a-z, case ignored
    const char *created [] = { "list_zed", "LIST_alpha", "list_Beta", "LIST-dash",
                               "list.dot", "List9", "list_BETA2" };
    const char *expected [] = { "LIST-dash", "list.dot", "List9", "LIST_alpha",
                                "list_Beta", "list_BETA2", "list_zed" };
    int64_t ids [7];
    for (int i = 0; i < 7; i++)
        ids [i] = s_user (suite, created [i]);

    s_users_t *users = (s_users_t *) calloc (1, sizeof (s_users_t));
    assert_non_null (users);
    assert_int_equal (suite->ops->users_list (suite->db, s_on_user, users), CHAT_DB_OK);
    assert_true (users->count >= 7);
    //  The whole list is in order, without regard to case
    for (int i = 1; i < users->count; i++) {
        char a [33], b [33];
        for (int c = 0; c < 33; c++) {
            a [c] = (char) tolower ((unsigned char) users->nicknames [i - 1][c]);
            b [c] = (char) tolower ((unsigned char) users->nicknames [i][c]);
        }
        if (strcmp (a, b) > 0)
            fail_msg ("users_list: '%s' before '%s'", users->nicknames [i - 1], users->nicknames [i]);
    }
    //  Ours come in the expected order, each once, with its id
    int next = 0;
    for (int i = 0; i < users->count; i++) {
        for (int j = 0; j < 7; j++)
            if (streq (users->nicknames [i], expected [j])) {
                assert_int_equal (j, next);
                next++;
                for (int k = 0; k < 7; k++)
                    if (streq (created [k], expected [j]))
                        assert_int_equal (users->ids [i], ids [k]);
            }
    }
    assert_int_equal (next, 7);
    free (users);
}


//  --------------------------------------------------------------------------
//  Sessions

static void
test_sessions (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Sess_Alice");
    int64_t bob = s_user (suite, "Sess_Bob");
    int64_t now = 1700000000000;

    assert_int_equal (suite->ops->session_create (suite->db, "sess-live-1", alice, now - 10, now + 1000), CHAT_DB_OK);
    assert_int_equal (suite->ops->session_create (suite->db, "sess-live-2", bob, now - 10, now + 5000), CHAT_DB_OK);
    assert_int_equal (suite->ops->session_create (suite->db, "sess-old", bob, now - 5000, now - 1), CHAT_DB_OK);
    //  Expires exactly now: no longer valid at now
    assert_int_equal (suite->ops->session_create (suite->db, "sess-edge", alice, now - 5000, now), CHAT_DB_OK);
    //  A token hash is stored once
    assert_int_equal (suite->ops->session_create (suite->db, "sess-live-1", bob, now, now + 9000), CHAT_DB_CONFLICT);

    s_sessions_t list = { .prefix = "sess-" };
    assert_int_equal (suite->ops->sessions_live (suite->db, now, s_on_session, &list), CHAT_DB_OK);
    assert_int_equal (list.count, 2);
    s_session_t *one = s_sessions_find (&list, "sess-live-1");
    assert_non_null (one);
    assert_int_equal (one->user_id, alice);
    assert_string_equal (one->nickname, "Sess_Alice");
    assert_int_equal (one->expires_ms, now + 1000);
    s_session_t *two = s_sessions_find (&list, "sess-live-2");
    assert_non_null (two);
    assert_int_equal (two->user_id, bob);
    assert_string_equal (two->nickname, "Sess_Bob");
    assert_int_equal (two->expires_ms, now + 5000);

    //  Earlier, every one of them was live
    list.count = 0;
    assert_int_equal (suite->ops->sessions_live (suite->db, now - 100, s_on_session, &list), CHAT_DB_OK);
    assert_int_equal (list.count, 4);

    //  Expire: the two expired at now go, each reported once, with nickname
    list.count = 0;
    assert_int_equal (suite->ops->sessions_expire (suite->db, now, s_on_session, &list), CHAT_DB_OK);
    assert_int_equal (list.count, 2);
    s_session_t *old = s_sessions_find (&list, "sess-old");
    assert_non_null (old);
    assert_int_equal (old->user_id, bob);
    assert_string_equal (old->nickname, "Sess_Bob");
    assert_int_equal (old->expires_ms, now - 1);
    s_session_t *edge = s_sessions_find (&list, "sess-edge");
    assert_non_null (edge);
    assert_int_equal (edge->user_id, alice);
    assert_string_equal (edge->nickname, "Sess_Alice");
    list.count = 0;
    assert_int_equal (suite->ops->sessions_expire (suite->db, now, s_on_session, &list), CHAT_DB_OK);
    assert_int_equal (list.count, 0);
    //  Expired sessions are gone for good
    assert_int_equal (suite->ops->sessions_live (suite->db, now - 100, s_on_session, &list), CHAT_DB_OK);
    assert_int_equal (list.count, 2);

    //  Delete one
    assert_int_equal (suite->ops->session_delete (suite->db, "sess-live-1"), CHAT_DB_OK);
    assert_int_equal (suite->ops->session_delete (suite->db, "sess-live-1"), CHAT_DB_NOT_FOUND);
    assert_int_equal (suite->ops->session_delete (suite->db, "sess-never"), CHAT_DB_NOT_FOUND);
    list.count = 0;
    assert_int_equal (suite->ops->sessions_live (suite->db, now, s_on_session, &list), CHAT_DB_OK);
    assert_int_equal (list.count, 1);
    assert_string_equal (list.sessions [0].token_hash, "sess-live-2");

    //  Later, the last one expires; expire works without a callback too
    list.count = 0;
    assert_int_equal (suite->ops->sessions_expire (suite->db, now + 5000, s_on_session, &list), CHAT_DB_OK);
    assert_int_equal (list.count, 1);
    assert_string_equal (list.sessions [0].token_hash, "sess-live-2");
    list.count = 0;
    assert_int_equal (suite->ops->sessions_live (suite->db, 0, s_on_session, &list), CHAT_DB_OK);
    assert_int_equal (list.count, 0);
    //  A deleted token hash may be used again
    assert_int_equal (suite->ops->session_create (suite->db, "sess-live-1", alice, now, now + 10), CHAT_DB_OK);
    assert_int_equal (suite->ops->session_delete (suite->db, "sess-live-1"), CHAT_DB_OK);
}


//  --------------------------------------------------------------------------
//  Storing messages

static void
test_message_store (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Store_Alice");
    int64_t bob = s_user (suite, "Store_Bob");

    int64_t before = chat_now_ms ();
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    chat_message_t message = {
        .from_user_id = alice, .to_user_id = bob, .nickname = "Store_Alice",
        .content = "hello bob", .content_len = 9, .client_id = "store-c1",
        .id = -1, .created_ms = -1, .is_read = true
    };
    bool duplicate = true;
    assert_int_equal (s_store_one (suite->ops, suite->db, &message, &duplicate), CHAT_DB_OK);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);
    int64_t after = chat_now_ms ();
    assert_false (duplicate);
    assert_true (message.id > 0);
    assert_true (message.created_ms >= before && message.created_ms <= after);
    assert_false (message.is_read);
    assert_int_equal (message.from_user_id, alice);
    assert_int_equal (message.to_user_id, bob);

    //  What was stored comes back whole
    s_rows_t rows = { 0 };
    assert_false (s_history (suite, bob, alice, 0, 10, &rows));
    assert_int_equal (rows.count, 1);
    s_row_t *row = &rows.rows [0];
    assert_int_equal (row->id, message.id);
    assert_int_equal (row->from_user_id, alice);
    assert_int_equal (row->to_user_id, bob);
    assert_string_equal (row->nickname, "Store_Alice");
    assert_string_equal (row->content, "hello bob");
    assert_int_equal (row->content_len, 9);
    assert_int_equal (row->created_ms, message.created_ms);
    assert_false (row->is_read);
    assert_non_null (row->client_id);
    assert_string_equal (row->client_id, "store-c1");

    //  Without a client_id: stored as NULL, and twice is twice
    int64_t first = s_send (suite, bob, alice, "no id");
    int64_t second = s_send (suite, bob, alice, "no id");
    assert_true (second > first);
    assert_false (s_history (suite, alice, bob, 0, 10, &rows));
    assert_int_equal (rows.count, 3);
    assert_null (rows.rows [1].client_id);
    assert_string_equal (rows.rows [1].nickname, "Store_Bob");
    assert_null (rows.rows [2].client_id);
    s_rows_clear (&rows);
}

static void
test_message_unknown_recipient (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Unknown_Alice");
    int64_t bob = s_user (suite, "Unknown_Bob");
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    int64_t kept = s_put (suite, alice, bob, "before", 6, "unk-1");
    int64_t strangers [] = { INT64_MAX, bob + 1000000, 0, -1 };
    for (size_t i = 0; i < sizeof strangers / sizeof strangers [0]; i++) {
        chat_message_t message = {
            .from_user_id = alice, .to_user_id = strangers [i],
            .content = "to nobody", .content_len = 9, .client_id = "unk-2"
        };
        bool duplicate = true;
        assert_int_equal (s_store_one (suite->ops, suite->db, &message, &duplicate), CHAT_DB_NOT_FOUND);
        assert_false (duplicate);
    }
    //  The batch goes on; the refused message's client_id is still free
    int64_t also = s_put (suite, alice, bob, "after", 5, "unk-2");
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);
    assert_true (also > kept);

    s_rows_t rows = { 0 };
    assert_false (s_history (suite, alice, bob, 0, 10, &rows));
    int64_t expected [] = { kept, also };
    s_assert_ids (&rows, expected, 2);
    assert_false (s_sync (suite, alice, 0, 10, &rows));
    s_assert_ids (&rows, expected, 2);
    s_rows_clear (&rows);
}

static void
test_ids_increase (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t a = s_user (suite, "Ids_A");
    int64_t b = s_user (suite, "Ids_B");
    int64_t c = s_user (suite, "Ids_C");
    int64_t last = 0;
    for (int batch = 0; batch < 3; batch++) {
        assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
        for (int i = 0; i < 10; i++) {
            int64_t from = i % 3 == 0? a: i % 3 == 1? b: c;
            int64_t to = i % 3 == 0? b: i % 3 == 1? c: a;
            int64_t id = s_put (suite, from, to, "x", 1, NULL);
            assert_true (id > last);
            last = id;
        }
        assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);
    }
}

static void
test_duplicate_across_transactions (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Dup_Alice");
    int64_t bob = s_user (suite, "Dup_Bob");
    int64_t carol = s_user (suite, "Dup_Carol");

    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    int64_t first = s_put (suite, alice, bob, "the first words", 15, "dup-c1");
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);
    s_rows_t rows = { 0 };
    s_history (suite, alice, bob, 0, 10, &rows);
    assert_int_equal (rows.count, 1);
    int64_t first_created = rows.rows [0].created_ms;

    //  Resent later, with other content: the first one answers
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    const char *resent = "other words";
    chat_message_t message = {
        .from_user_id = alice, .to_user_id = bob, .content = resent,
        .content_len = strlen (resent), .client_id = "dup-c1"
    };
    bool duplicate = false;
    assert_int_equal (s_store_one (suite->ops, suite->db, &message, &duplicate), CHAT_DB_OK);
    assert_true (duplicate);
    assert_int_equal (message.id, first);
    assert_int_equal (message.from_user_id, alice);
    assert_int_equal (message.to_user_id, bob);
    assert_int_equal (message.created_ms, first_created);
    assert_int_equal (message.content_len, 15);
    assert_memory_equal (message.content, "the first words", 15);
    assert_false (message.is_read);

    //  The same client_id from another sender is another message
    int64_t carols = s_put (suite, carol, bob, "carol's", 7, "dup-c1");
    assert_true (carols > first);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);

    //  Once read, a duplicate says so
    assert_int_equal (s_mark_read (suite, bob, alice, first), 1);
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    message.content = resent;
    message.content_len = strlen (resent);
    assert_int_equal (s_store_one (suite->ops, suite->db, &message, &duplicate), CHAT_DB_OK);
    assert_true (duplicate);
    assert_int_equal (message.id, first);
    assert_true (message.is_read);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);

    s_history (suite, alice, bob, 0, 10, &rows);
    int64_t expected [] = { first };
    s_assert_ids (&rows, expected, 1);
    assert_string_equal (rows.rows [0].content, "the first words");
    s_history (suite, carol, bob, 0, 10, &rows);
    int64_t expected_carol [] = { carols };
    s_assert_ids (&rows, expected_carol, 1);
    s_rows_clear (&rows);
}

static void
test_duplicate_same_transaction (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Same_Alice");
    int64_t bob = s_user (suite, "Same_Bob");

    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    int64_t first = s_put (suite, alice, bob, "one", 3, "same-1");
    chat_message_t message = {
        .from_user_id = alice, .to_user_id = bob, .content = "uno",
        .content_len = 3, .client_id = "same-1"
    };
    bool duplicate = false;
    assert_int_equal (s_store_one (suite->ops, suite->db, &message, &duplicate), CHAT_DB_OK);
    assert_true (duplicate);
    assert_int_equal (message.id, first);
    assert_memory_equal (message.content, "one", 3);
    //  The batch goes on after a duplicate
    int64_t second = s_put (suite, alice, bob, "two", 3, "same-2");
    message.content = "dos";
    message.client_id = "same-2";
    assert_int_equal (s_store_one (suite->ops, suite->db, &message, &duplicate), CHAT_DB_OK);
    assert_true (duplicate);
    assert_int_equal (message.id, second);
    assert_memory_equal (message.content, "two", 3);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);

    s_rows_t rows = { 0 };
    assert_false (s_history (suite, bob, alice, 0, 10, &rows));
    int64_t expected [] = { first, second };
    s_assert_ids (&rows, expected, 2);
    assert_string_equal (rows.rows [0].content, "one");
    assert_string_equal (rows.rows [1].content, "two");
    s_rows_clear (&rows);
}

static void
test_rollback (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Roll_Alice");
    int64_t bob = s_user (suite, "Roll_Bob");

    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    s_put (suite, alice, bob, "lost 1", 6, "roll-1");
    s_put (suite, bob, alice, "lost 2", 6, NULL);
    assert_int_equal (suite->ops->rollback (suite->db), CHAT_DB_OK);

    s_rows_t rows = { 0 };
    assert_false (s_history (suite, alice, bob, 0, 10, &rows));
    assert_int_equal (rows.count, 0);
    assert_false (s_sync (suite, alice, 0, 10, &rows));
    assert_int_equal (rows.count, 0);
    s_convs_t convs = { 0 };
    assert_int_equal (suite->ops->conversations (suite->db, alice, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 0);

    //  Nor does a later commit of another conversation bring them back
    //  (two messages: the ids the rolled back ones had are taken again)
    int64_t carol = s_user (suite, "Roll_Carol");
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    s_put (suite, carol, bob, "elsewhere 1", 11, NULL);
    s_put (suite, carol, bob, "elsewhere 2", 11, NULL);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);
    assert_int_equal (suite->ops->conversations (suite->db, alice, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 0);

    //  The client_id was never stored, so it is not a duplicate now
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    int64_t kept = s_put (suite, alice, bob, "kept", 4, "roll-1");
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);
    assert_false (s_history (suite, alice, bob, 0, 10, &rows));
    int64_t expected [] = { kept };
    s_assert_ids (&rows, expected, 1);
    assert_string_equal (rows.rows [0].content, "kept");
    s_rows_clear (&rows);
}

static void
test_batch (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Batch_Alice");
    int64_t bob = s_user (suite, "Batch_Bob");
    //  One transaction of many messages, as persistence's group commit does
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    int64_t first = 0, last = 0;
    for (int i = 0; i < 2000; i++) {
        char client_id [16];
        snprintf (client_id, sizeof client_id, "b-%d", i);
        last = s_put (suite, i % 2? alice: bob, i % 2? bob: alice, client_id, strlen (client_id), client_id);
        if (i == 0)
            first = last;
    }
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);

    s_rows_t rows = { 0 };
    assert_true (s_history (suite, alice, bob, 0, 3, &rows));
    assert_int_equal (rows.count, 3);
    assert_int_equal (rows.rows [2].id, last);
    assert_string_equal (rows.rows [2].content, "b-1999");
    assert_true (s_sync (suite, bob, first - 1, 2, &rows));
    assert_int_equal (rows.count, 2);
    assert_int_equal (rows.rows [0].id, first);
    assert_string_equal (rows.rows [0].content, "b-0");
    //  One conversation, on both sides, with the batch's last message
    s_convs_t convs = { 0 };
    assert_int_equal (suite->ops->conversations (suite->db, alice, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 1);
    s_assert_conversation (&convs, 0, bob, last, 1000);
    s_convs_clear (&convs);
    assert_int_equal (suite->ops->conversations (suite->db, bob, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 1);
    s_assert_conversation (&convs, 0, alice, last, 1000);
    s_convs_clear (&convs);
    assert_int_equal (s_mark_read (suite, alice, bob, last), 1000);
    s_rows_clear (&rows);
}

//  Reads inside an open write transaction see what it stored so far:
//  conversations (order, last message, unread), sync, mark_read; and
//  what it stores after such a read is committed with it
static void
test_reads_in_transaction (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t me = s_user (suite, "Tx_Me");
    int64_t p1 = s_user (suite, "Tx_P1");
    int64_t p2 = s_user (suite, "Tx_P2");
    int64_t before = s_send (suite, p1, me, "committed");

    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    int64_t a = s_put (suite, p2, me, "a", 1, NULL);
    int64_t b = s_put (suite, me, p1, "b", 1, NULL);
    int64_t c = s_put (suite, p2, me, "c", 1, NULL);
    s_convs_t convs = { 0 };
    assert_int_equal (suite->ops->conversations (suite->db, me, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 2);
    s_assert_conversation (&convs, 0, p2, c, 2);
    s_assert_conversation (&convs, 1, p1, b, 1);
    s_convs_clear (&convs);
    s_rows_t rows = { 0 };
    assert_false (s_sync (suite, me, before, 10, &rows));
    int64_t stored [] = { a, b, c };
    s_assert_ids (&rows, stored, 3);
    s_rows_clear (&rows);
    assert_int_equal (s_mark_read (suite, me, p2, a), 1);
    int64_t d = s_put (suite, p1, me, "d", 1, NULL);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);

    assert_int_equal (suite->ops->conversations (suite->db, me, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 2);
    s_assert_conversation (&convs, 0, p1, d, 2);
    s_assert_conversation (&convs, 1, p2, c, 1);
    s_convs_clear (&convs);
    assert_int_equal (suite->ops->conversations (suite->db, p1, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 1);
    s_assert_conversation (&convs, 0, me, d, 1);
    s_convs_clear (&convs);
}


//  One call for a whole batch: duplicates inside the batch and from before,
//  unknown users in the middle, ids ascending in batch order
static void
test_batch_call (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Call_Alice");
    int64_t bob = s_user (suite, "Call_Bob");
    int64_t nobody = INT64_MAX;

    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    int64_t before = s_put (suite, alice, bob, "said before", 11, "call-pre");
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);

    struct { int64_t from, to; const char *content, *client_id; int result; bool duplicate; int first; } cases [] = {
        { alice, bob, "first", "call-1", CHAT_DB_OK, false, -1 },              //  0
        { alice, nobody, "to nobody", "call-2", CHAT_DB_NOT_FOUND, false, -1 },//  1
        { bob, alice, "no client id", NULL, CHAT_DB_OK, false, -1 },           //  2
        { alice, bob, "resent", "call-1", CHAT_DB_OK, true, 0 },               //  3: of 0
        { alice, bob, "client id free", "call-2", CHAT_DB_OK, false, -1 },     //  4: 1 was refused
        { alice, nobody, "resent elsewhere", "call-1", CHAT_DB_OK, true, 0 },  //  5: duplicate first
        { alice, bob, "resent old", "call-pre", CHAT_DB_OK, true, -2 },        //  6: of before
        { alice, bob, "resent old again", "call-pre", CHAT_DB_OK, true, -2 },  //  7: of before
        { bob, alice, "other sender", "call-1", CHAT_DB_OK, false, -1 },       //  8
        { nobody, bob, "unknown sender", "call-9", CHAT_DB_NOT_FOUND, false, -1 }, //  9
        { bob, alice, "no client id", NULL, CHAT_DB_OK, false, -1 },           //  10: not 2's duplicate
        { alice, bob, "resent twice", "call-2", CHAT_DB_OK, true, 4 },         //  11: of 4
    };
    size_t count = sizeof cases / sizeof cases [0];
    chat_message_t messages [12];
    int results [12];
    bool duplicates [12];
    assert_int_equal (count, 12);
    for (size_t i = 0; i < count; i++) {
        messages [i] = (chat_message_t) {
            .from_user_id = cases [i].from, .to_user_id = cases [i].to,
            .content = cases [i].content, .content_len = strlen (cases [i].content),
            .client_id = cases [i].client_id, .id = -1
        };
        results [i] = -100;
        duplicates [i] = !cases [i].duplicate;
    }
    int64_t start = chat_now_ms ();
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    assert_int_equal (suite->ops->message_store_batch (suite->db, messages, count, results, duplicates),
                      CHAT_DB_OK);
    //  The duplicates' contents are valid until the next call
    int64_t last = before;
    for (size_t i = 0; i < count; i++) {
        assert_int_equal (results [i], cases [i].result);
        if (results [i] != CHAT_DB_OK)
            continue;
        assert_int_equal (duplicates [i], cases [i].duplicate);
        if (cases [i].first == -1) {
            assert_true (messages [i].id > last);   //  Ascending in batch order
            last = messages [i].id;
            assert_ptr_equal (messages [i].content, cases [i].content);
            assert_true (messages [i].created_ms >= start);
            assert_false (messages [i].is_read);
        }
        else
        if (cases [i].first == -2) {
            assert_int_equal (messages [i].id, before);
            assert_int_equal (messages [i].to_user_id, bob);
            assert_int_equal (messages [i].content_len, 11);
            assert_memory_equal (messages [i].content, "said before", 11);
        }
        else {
            chat_message_t *first = &messages [cases [i].first];
            assert_int_equal (messages [i].id, first->id);
            assert_int_equal (messages [i].to_user_id, first->to_user_id);
            assert_int_equal (messages [i].to_user_id, cases [cases [i].first].to);
            assert_int_equal (messages [i].content_len, strlen (cases [cases [i].first].content));
            assert_memory_equal (messages [i].content, cases [cases [i].first].content,
                                 messages [i].content_len);
            assert_int_equal (messages [i].created_ms, first->created_ms);
        }
    }
    //  A second call in the same transaction sees the first call's client ids
    chat_message_t again [2] = {
        { .from_user_id = alice, .to_user_id = bob, .content = "x", .content_len = 1, .client_id = "call-1" },
        { .from_user_id = alice, .to_user_id = bob, .content = "y", .content_len = 1, .client_id = "call-3" },
    };
    assert_int_equal (suite->ops->message_store_batch (suite->db, again, 2, results, duplicates), CHAT_DB_OK);
    assert_int_equal (results [0], CHAT_DB_OK);
    assert_true (duplicates [0]);
    assert_int_equal (again [0].id, messages [0].id);
    assert_memory_equal (again [0].content, "first", 5);
    assert_int_equal (results [1], CHAT_DB_OK);
    assert_false (duplicates [1]);
    assert_true (again [1].id > last);
    //  An empty batch is nothing
    assert_int_equal (suite->ops->message_store_batch (suite->db, again, 0, results, duplicates), CHAT_DB_OK);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);

    //  Stored: exactly the new ones, in order, with their own contents
    s_rows_t rows = { 0 };
    assert_false (s_history (suite, alice, bob, 0, 50, &rows));
    int64_t expected [] = { before, messages [0].id, messages [2].id, messages [4].id,
                            messages [8].id, messages [10].id, again [1].id };
    s_assert_ids (&rows, expected, 7);
    assert_string_equal (rows.rows [1].content, "first");
    assert_string_equal (rows.rows [1].client_id, "call-1");
    assert_string_equal (rows.rows [3].content, "client id free");
    assert_string_equal (rows.rows [4].content, "other sender");
    assert_int_equal (rows.rows [4].from_user_id, bob);
    assert_null (rows.rows [5].client_id);
    s_rows_clear (&rows);
}

//  A large batch in one call, many pairs, unknown recipients sprinkled in:
//  ids ascend in batch order and every message is where it should be
static void
test_batch_call_large (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t users [5];
    char nickname [32];
    for (int u = 0; u < 5; u++) {
        snprintf (nickname, sizeof nickname, "Large_%d", u);
        users [u] = s_user (suite, nickname);
    }
    const size_t count = 1500;
    chat_message_t *messages = (chat_message_t *) calloc (count, sizeof (chat_message_t));
    int *results = (int *) calloc (count, sizeof (int));
    bool *duplicates = (bool *) calloc (count, sizeof (bool));
    char (*texts) [24] = calloc (count, 24);
    assert_true (messages && results && duplicates && texts);
    for (size_t i = 0; i < count; i++) {
        snprintf (texts [i], 24, "large-%zu", i);
        //  Senders and recipients in an order unlike the ids'
        messages [i].from_user_id = users [(i * 7) % 5];
        messages [i].to_user_id = i % 97 == 50? users [4] + 1000000: users [(i * 3 + 1) % 5];
        messages [i].content = texts [i];
        messages [i].content_len = strlen (texts [i]);
        messages [i].client_id = i % 2? texts [i]: NULL;
    }
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    assert_int_equal (suite->ops->message_store_batch (suite->db, messages, count, results, duplicates),
                      CHAT_DB_OK);
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);
    int64_t last = 0;
    size_t stored = 0;
    for (size_t i = 0; i < count; i++) {
        if (i % 97 == 50) {
            assert_int_equal (results [i], CHAT_DB_NOT_FOUND);
            continue;
        }
        assert_int_equal (results [i], CHAT_DB_OK);
        assert_false (duplicates [i]);
        assert_true (messages [i].id > last);
        last = messages [i].id;
        stored++;
    }
    assert_int_equal (stored, count - 15);
    //  Each user's sync lists its messages in id order with the right texts
    s_rows_t rows = { 0 };
    for (int u = 0; u < 5; u++) {
        s_sync (suite, users [u], 0, S_MAX_ROWS, &rows);
        assert_int_equal (rows.count, S_MAX_ROWS);
        for (int r = 0; r < rows.count; r++) {
            size_t i = (size_t) atoll (rows.rows [r].content + strlen ("large-"));
            assert_true (i < count);
            assert_int_equal (rows.rows [r].id, messages [i].id);
            assert_int_equal (rows.rows [r].from_user_id, messages [i].from_user_id);
            assert_int_equal (rows.rows [r].to_user_id, messages [i].to_user_id);
        }
    }
    s_rows_clear (&rows);
    free (messages);
    free (results);
    free (duplicates);
    free (texts);
}


//  --------------------------------------------------------------------------
//  History

static void
test_history_empty (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Empty_Alice");
    int64_t bob = s_user (suite, "Empty_Bob");
    int64_t carol = s_user (suite, "Empty_Carol");
    s_rows_t rows = { 0 };
    assert_false (s_history (suite, alice, bob, 0, 50, &rows));
    assert_int_equal (rows.count, 0);
    //  Others talking changes nothing for the pair
    s_send (suite, alice, carol, "hi carol");
    s_send (suite, carol, bob, "hi bob");
    assert_false (s_history (suite, alice, bob, 0, 50, &rows));
    assert_int_equal (rows.count, 0);
    assert_false (s_history (suite, bob, alice, 0, 50, &rows));
    assert_int_equal (rows.count, 0);
    //  Unknown users have empty conversations
    assert_false (s_history (suite, alice, INT64_MAX, 0, 50, &rows));
    assert_int_equal (rows.count, 0);
}

static void
test_history_pages (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Page_Alice");
    int64_t bob = s_user (suite, "Page_Bob");
    int64_t carol = s_user (suite, "Page_Carol");

    //  Ten messages between alice and bob, both ways, with carol's
    //  messages to and from both of them in between
    int64_t ab [10];
    for (int i = 0; i < 10; i++) {
        char text [32];
        snprintf (text, sizeof text, "page %d", i);
        ab [i] = i % 3 == 1? s_send (suite, bob, alice, text): s_send (suite, alice, bob, text);
        s_send (suite, i % 2? carol: alice, i % 2? alice: carol, "noise");
        s_send (suite, i % 2? bob: carol, i % 2? carol: bob, "noise");
    }
    s_rows_t rows = { 0 };

    //  Everything, ascending, from either side
    assert_false (s_history (suite, alice, bob, 0, 50, &rows));
    s_assert_ids (&rows, ab, 10);
    for (int i = 0; i < 10; i++) {
        char text [32];
        snprintf (text, sizeof text, "page %d", i);
        assert_string_equal (rows.rows [i].content, text);
        assert_int_equal (rows.rows [i].from_user_id, i % 3 == 1? bob: alice);
        assert_int_equal (rows.rows [i].to_user_id, i % 3 == 1? alice: bob);
        assert_string_equal (rows.rows [i].nickname, i % 3 == 1? "Page_Bob": "Page_Alice");
    }
    assert_false (s_history (suite, bob, alice, 0, 50, &rows));
    s_assert_ids (&rows, ab, 10);

    //  Exactly as many as there are: no more; one fewer: more
    assert_false (s_history (suite, alice, bob, 0, 10, &rows));
    s_assert_ids (&rows, ab, 10);
    assert_true (s_history (suite, alice, bob, 0, 9, &rows));
    s_assert_ids (&rows, ab + 1, 9);

    //  Paging back by before_id, 4 at a time
    assert_true (s_history (suite, alice, bob, 0, 4, &rows));
    s_assert_ids (&rows, ab + 6, 4);
    assert_true (s_history (suite, bob, alice, rows.rows [0].id, 4, &rows));
    s_assert_ids (&rows, ab + 2, 4);
    assert_false (s_history (suite, alice, bob, rows.rows [0].id, 4, &rows));
    s_assert_ids (&rows, ab, 2);
    //  Nothing before the first
    assert_false (s_history (suite, alice, bob, ab [0], 4, &rows));
    assert_int_equal (rows.count, 0);

    //  before_id need not be one of the conversation's ids: carol's noise
    //  right after ab [4] is below ab [5]
    assert_true (s_history (suite, alice, bob, ab [4] + 1, 2, &rows));
    int64_t expect_bound [] = { ab [3], ab [4] };
    s_assert_ids (&rows, expect_bound, 2);
    //  A bound above every id is no bound
    assert_false (s_history (suite, alice, bob, INT64_MAX, 50, &rows));
    s_assert_ids (&rows, ab, 10);

    //  One at a time
    assert_true (s_history (suite, alice, bob, 0, 1, &rows));
    s_assert_ids (&rows, ab + 9, 1);
    assert_false (s_history (suite, alice, bob, ab [1], 1, &rows));
    s_assert_ids (&rows, ab, 1);

    //  Carol's conversation with alice holds only theirs
    assert_false (s_history (suite, carol, alice, 0, 50, &rows));
    assert_int_equal (rows.count, 10);
    for (int i = 0; i < rows.count; i++) {
        assert_true ((rows.rows [i].from_user_id == carol && rows.rows [i].to_user_id == alice)
                  || (rows.rows [i].from_user_id == alice && rows.rows [i].to_user_id == carol));
        if (i > 0)
            assert_true (rows.rows [i].id > rows.rows [i - 1].id);
    }
    s_rows_clear (&rows);
}


//  --------------------------------------------------------------------------
//  Sync

static void
test_sync (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t me = s_user (suite, "Sync_Me");
    int64_t ann = s_user (suite, "Sync_Ann");
    int64_t ben = s_user (suite, "Sync_Ben");
    s_rows_t rows = { 0 };
    assert_false (s_sync (suite, me, 0, 100, &rows));
    assert_int_equal (rows.count, 0);

    //  Sent and received, with two partners, and others' messages between
    int64_t mine [12];
    for (int i = 0; i < 12; i++) {
        switch (i % 4) {
            case 0: mine [i] = s_send (suite, me, ann, "to ann"); break;
            case 1: mine [i] = s_send (suite, ben, me, "from ben"); break;
            case 2: mine [i] = s_send (suite, ann, me, "from ann"); break;
            default: mine [i] = s_send (suite, me, ben, "to ben"); break;
        }
        s_send (suite, ann, ben, "not mine");
        s_send (suite, ben, ann, "not mine");
    }
    //  Everything, ascending, both directions
    assert_false (s_sync (suite, me, 0, 100, &rows));
    s_assert_ids (&rows, mine, 12);
    for (int i = 0; i < 12; i++)
        assert_true (rows.rows [i].from_user_id == me || rows.rows [i].to_user_id == me);
    assert_string_equal (rows.rows [1].content, "from ben");
    assert_string_equal (rows.rows [1].nickname, "Sync_Ben");
    assert_int_equal (rows.rows [3].to_user_id, ben);

    //  Exactly as many as there are: no more
    assert_false (s_sync (suite, me, 0, 12, &rows));
    s_assert_ids (&rows, mine, 12);
    assert_true (s_sync (suite, me, 0, 11, &rows));
    s_assert_ids (&rows, mine, 11);

    //  Paging forward from the last id received, 5 at a time
    assert_true (s_sync (suite, me, 0, 5, &rows));
    s_assert_ids (&rows, mine, 5);
    assert_true (s_sync (suite, me, rows.rows [4].id, 5, &rows));
    s_assert_ids (&rows, mine + 5, 5);
    assert_false (s_sync (suite, me, rows.rows [4].id, 5, &rows));
    s_assert_ids (&rows, mine + 10, 2);
    assert_false (s_sync (suite, me, mine [11], 5, &rows));
    assert_int_equal (rows.count, 0);

    //  after_id need not be one of mine
    assert_false (s_sync (suite, me, mine [9] + 1, 50, &rows));
    s_assert_ids (&rows, mine + 10, 2);
    //  Received only, from the other side
    assert_true (s_sync (suite, ann, mine [0] - 1, 1, &rows));
    s_assert_ids (&rows, mine, 1);
    assert_int_equal (rows.rows [0].to_user_id, ann);
    s_rows_clear (&rows);
}


//  --------------------------------------------------------------------------
//  Read state

static void
test_mark_read (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t reader = s_user (suite, "Read_Reader");
    int64_t partner = s_user (suite, "Read_Partner");
    int64_t other = s_user (suite, "Read_Other");
    int64_t p1 = s_send (suite, partner, reader, "p1");
    int64_t r1 = s_send (suite, reader, partner, "r1");
    int64_t o1 = s_send (suite, other, reader, "o1");
    int64_t p2 = s_send (suite, partner, reader, "p2");
    int64_t p3 = s_send (suite, partner, reader, "p3");
    int64_t x1 = s_send (suite, partner, other, "x1");

    //  Up to p2: p1 and p2 only
    assert_int_equal (s_mark_read (suite, reader, partner, p2), 2);
    s_rows_t rows = { 0 };
    s_history (suite, reader, partner, 0, 50, &rows);
    assert_int_equal (rows.count, 4);
    assert_true (s_row_find (&rows, p1)->is_read);
    assert_true (s_row_find (&rows, p2)->is_read);
    assert_false (s_row_find (&rows, p3)->is_read);
    assert_false (s_row_find (&rows, r1)->is_read);     //  The reader's own
    s_history (suite, reader, other, 0, 50, &rows);
    assert_false (s_row_find (&rows, o1)->is_read);     //  Another partner's
    s_history (suite, partner, other, 0, 50, &rows);
    assert_false (s_row_find (&rows, x1)->is_read);     //  Not to the reader

    //  Again: nothing new
    assert_int_equal (s_mark_read (suite, reader, partner, p2), 0);
    assert_int_equal (s_mark_read (suite, reader, partner, p1), 0);
    //  The rest
    assert_int_equal (s_mark_read (suite, reader, partner, INT64_MAX), 1);
    //  The partner reads the reader's message
    assert_int_equal (s_mark_read (suite, partner, reader, r1), 1);
    s_history (suite, partner, reader, 0, 50, &rows);
    for (int i = 0; i < rows.count; i++)
        assert_true (rows.rows [i].is_read);
    //  Unknown partner, zero bound: nothing
    assert_int_equal (s_mark_read (suite, reader, INT64_MAX, INT64_MAX), 0);
    assert_int_equal (s_mark_read (suite, reader, other, 0), 0);
    assert_int_equal (s_mark_read (suite, reader, other, o1), 1);
    //  Read state shows in sync too
    s_sync (suite, reader, 0, 50, &rows);
    assert_int_equal (rows.count, 5);
    for (int i = 0; i < rows.count; i++)
        assert_true (rows.rows [i].is_read);
    s_rows_clear (&rows);
}


//  Read state is a marker per reader and partner: marking past the newest
//  message does not make a later one read

static void
test_read_marker (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t reader = s_user (suite, "Marker_Reader");
    int64_t partner = s_user (suite, "Marker_Partner");
    int64_t p1 = s_send (suite, partner, reader, "p1");
    assert_int_equal (s_mark_read (suite, reader, partner, INT64_MAX), 1);
    int64_t p2 = s_send (suite, partner, reader, "p2 after the mark");
    int64_t r1 = s_send (suite, reader, partner, "r1");

    s_rows_t rows = { 0 };
    s_history (suite, reader, partner, 0, 50, &rows);
    assert_int_equal (rows.count, 3);
    assert_true (s_row_find (&rows, p1)->is_read);
    assert_false (s_row_find (&rows, p2)->is_read);
    assert_false (s_row_find (&rows, r1)->is_read);
    s_convs_t convs = { 0 };
    assert_int_equal (suite->ops->conversations (suite->db, reader, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 1);
    assert_int_equal (convs.convs [0].unread, 1);
    assert_int_equal (convs.convs [0].last.id, r1);
    s_convs_clear (&convs);

    //  A bound below the marker moves nothing back
    assert_int_equal (s_mark_read (suite, reader, partner, p1 - 1), 0);
    s_history (suite, reader, partner, 0, 50, &rows);
    assert_true (s_row_find (&rows, p1)->is_read);
    //  A bound between messages marks only those below it
    int64_t p3 = s_send (suite, partner, reader, "p3");
    assert_int_equal (s_mark_read (suite, reader, partner, p3 - 1), 1);
    s_sync (suite, reader, p1, 50, &rows);
    assert_int_equal (rows.count, 3);
    assert_true (s_row_find (&rows, p2)->is_read);
    assert_false (s_row_find (&rows, p3)->is_read);
    //  The reader's own messages are the partner's to read
    assert_int_equal (s_mark_read (suite, partner, reader, INT64_MAX), 1);
    s_history (suite, partner, reader, 0, 50, &rows);
    assert_true (s_row_find (&rows, r1)->is_read);
    assert_false (s_row_find (&rows, p3)->is_read);
    s_rows_clear (&rows);
}

//  A conversation with oneself is one conversation, each message once

static void
test_self_conversation (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t me = s_user (suite, "Self_Me");
    int64_t other = s_user (suite, "Self_Other");
    int64_t n1 = s_send (suite, me, me, "note 1");
    int64_t o1 = s_send (suite, other, me, "o1");
    int64_t n2 = s_send (suite, me, me, "note 2");

    s_rows_t rows = { 0 };
    assert_false (s_history (suite, me, me, 0, 50, &rows));
    int64_t notes [] = { n1, n2 };
    s_assert_ids (&rows, notes, 2);
    assert_false (s_sync (suite, me, 0, 50, &rows));
    int64_t all [] = { n1, o1, n2 };
    s_assert_ids (&rows, all, 3);

    s_convs_t convs = { 0 };
    assert_int_equal (suite->ops->conversations (suite->db, me, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 2);
    assert_int_equal (convs.convs [0].user_id, me);
    assert_int_equal (convs.convs [0].last.id, n2);
    assert_int_equal (convs.convs [0].unread, 2);
    assert_int_equal (convs.convs [1].user_id, other);
    assert_int_equal (convs.convs [1].unread, 1);
    s_convs_clear (&convs);

    assert_int_equal (s_mark_read (suite, me, me, n1), 1);
    assert_int_equal (suite->ops->conversations (suite->db, me, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.convs [0].unread, 1);
    assert_false (convs.convs [0].last.is_read);
    s_convs_clear (&convs);
    s_rows_clear (&rows);
}

//  Sync over many partners: pages are the oldest messages across all of
//  them, also when one partner alone fills more than a page

static void
test_sync_partners (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t me = s_user (suite, "Fan_Me");
    int64_t partners [12];
    for (int i = 0; i < 12; i++) {
        char nickname [32];
        snprintf (nickname, sizeof nickname, "Fan_P%d", i);
        partners [i] = s_user (suite, nickname);
    }
    int64_t mine [60];
    int count = 0;
    //  A burst from one partner, then round robin both ways, then a burst
    for (int i = 0; i < 15; i++)
        mine [count++] = s_send (suite, partners [3], me, "burst");
    for (int i = 0; i < 24; i++)
        mine [count++] = i % 2? s_send (suite, me, partners [i % 12], "out")
                              : s_send (suite, partners [(i * 5) % 12], me, "in");
    for (int i = 0; i < 15; i++)
        mine [count++] = s_send (suite, me, partners [7], "burst back");
    assert_int_equal (count, 54);

    s_rows_t rows = { 0 };
    //  Pages of 7 from the start, and from points inside and at the edges
    //  of the bursts
    int starts [] = { -1, 0, 5, 13, 14, 15, 26, 38, 39, 47, 52, 53 };
    for (size_t k = 0; k < sizeof starts / sizeof starts [0]; k++) {
        int64_t after_id = starts [k] < 0? 0: mine [starts [k]];
        int seen = starts [k] + 1;
        while (seen < count) {
            int page = count - seen < 7? count - seen: 7;
            bool more = s_sync (suite, me, after_id, 7, &rows);
            s_assert_ids (&rows, mine + seen, page);
            assert_int_equal (more, seen + page < count);
            after_id = rows.rows [page - 1].id;
            seen += page;
        }
        assert_false (s_sync (suite, me, after_id, 7, &rows));
        assert_int_equal (rows.count, 0);
    }
    //  One page of everything
    assert_false (s_sync (suite, me, 0, 1000, &rows));
    s_assert_ids (&rows, mine, count);
    s_rows_clear (&rows);
}


//  --------------------------------------------------------------------------
//  Conversations

static void
test_conversations (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t me = s_user (suite, "Conv_Me");
    int64_t p1 = s_user (suite, "Conv_P1");
    int64_t p2 = s_user (suite, "Conv_P2");
    int64_t p3 = s_user (suite, "Conv_P3");
    int64_t outsider = s_user (suite, "Conv_Out");

    s_convs_t convs = { 0 };
    assert_int_equal (suite->ops->conversations (suite->db, me, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 0);

    s_send (suite, me, p1, "to p1");
    s_send (suite, p2, me, "p2 first");
    s_send (suite, p3, me, "p3 only");
    int64_t p1_last = s_send (suite, p1, me, "p1 back");
    s_send (suite, p1, outsider, "elsewhere");
    int64_t p2_last = s_send (suite, p2, me, "p2 second");
    s_send (suite, outsider, p3, "elsewhere");

    assert_int_equal (suite->ops->conversations (suite->db, me, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 3);
    assert_int_equal (convs.convs [0].user_id, p2);
    assert_string_equal (convs.convs [0].nickname, "Conv_P2");
    assert_int_equal (convs.convs [0].unread, 2);
    assert_int_equal (convs.convs [0].last.id, p2_last);
    assert_int_equal (convs.convs [0].last.from_user_id, p2);
    assert_int_equal (convs.convs [0].last.to_user_id, me);
    assert_string_equal (convs.convs [0].last.nickname, "Conv_P2");
    assert_string_equal (convs.convs [0].last.content, "p2 second");
    assert_false (convs.convs [0].last.is_read);
    assert_int_equal (convs.convs [1].user_id, p1);
    assert_string_equal (convs.convs [1].nickname, "Conv_P1");
    assert_int_equal (convs.convs [1].unread, 1);
    assert_int_equal (convs.convs [1].last.id, p1_last);
    assert_int_equal (convs.convs [2].user_id, p3);
    assert_int_equal (convs.convs [2].unread, 1);
    assert_string_equal (convs.convs [2].last.content, "p3 only");
    s_convs_clear (&convs);

    //  Writing to p3 brings it first; my own messages are not unread for me
    int64_t to_p3 = s_send (suite, me, p3, "to p3");
    assert_int_equal (suite->ops->conversations (suite->db, me, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 3);
    assert_int_equal (convs.convs [0].user_id, p3);
    assert_string_equal (convs.convs [0].nickname, "Conv_P3");
    assert_int_equal (convs.convs [0].unread, 1);
    assert_int_equal (convs.convs [0].last.id, to_p3);
    assert_int_equal (convs.convs [0].last.from_user_id, me);
    assert_string_equal (convs.convs [0].last.nickname, "Conv_Me");
    assert_int_equal (convs.convs [1].user_id, p2);
    assert_int_equal (convs.convs [2].user_id, p1);
    s_convs_clear (&convs);

    //  Reading clears unread counts, the last message shows read
    assert_int_equal (s_mark_read (suite, me, p2, p2_last), 2);
    assert_int_equal (s_mark_read (suite, me, p1, p1_last - 1), 0);
    assert_int_equal (suite->ops->conversations (suite->db, me, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 3);
    assert_int_equal (convs.convs [1].user_id, p2);
    assert_int_equal (convs.convs [1].unread, 0);
    assert_true (convs.convs [1].last.is_read);
    assert_int_equal (convs.convs [2].user_id, p1);
    assert_int_equal (convs.convs [2].unread, 1);
    s_convs_clear (&convs);

    //  From p1's side: me (unread: my one message) then the outsider
    assert_int_equal (suite->ops->conversations (suite->db, p1, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 2);
    assert_int_equal (convs.convs [0].user_id, outsider);
    assert_int_equal (convs.convs [0].unread, 0);
    assert_int_equal (convs.convs [1].user_id, me);
    assert_int_equal (convs.convs [1].unread, 1);
    assert_int_equal (convs.convs [1].last.id, p1_last);
    s_convs_clear (&convs);

    assert_int_equal (suite->ops->conversations (suite->db, INT64_MAX, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 0);
}


//  --------------------------------------------------------------------------
//  Content round-trips byte for byte

static void
test_content_exact (void **state)
{
    s_suite_t *suite = s_suite (state);
    int64_t alice = s_user (suite, "Bytes_Alice");
    int64_t bob = s_user (suite, "Bytes_Bob");

    //  4096 bytes of multi-byte UTF-8: 1, 2, 3 and 4 byte sequences
    char *big = (char *) malloc (4097);
    assert_non_null (big);
    const char *pieces [] = { "a", "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x8e\x89" };
    size_t len = 0;
    for (int i = 0; len < 4096; i++) {
        const char *piece = pieces [i % 4];
        size_t piece_len = strlen (piece);
        if (len + piece_len > 4096)
            piece = "z", piece_len = 1;
        memcpy (big + len, piece, piece_len);
        len += piece_len;
    }
    assert_int_equal (len, 4096);
    big [4096] = 0;

    struct { const char *content; size_t len; } cases [] = {
        { "h\xc3\xa9llo w\xc3\xb6rld \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x8e\x89", 0 },
        { "tab\there\nnew line\r\nend\n", 0 },
        { "  padded  ", 0 },
        { "x", 0 },
        { "quotes ' \" \\ % _ ; -- /* */", 0 },
        { big, 4096 },
    };
    size_t ncases = sizeof cases / sizeof cases [0];
    int64_t ids [6];
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    for (size_t i = 0; i < ncases; i++) {
        if (cases [i].len == 0)
            cases [i].len = strlen (cases [i].content);
        char client_id [16];
        snprintf (client_id, sizeof client_id, "bytes-%zu", i);
        ids [i] = s_put (suite, alice, bob, cases [i].content, cases [i].len, client_id);
    }
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);

    s_rows_t rows = { 0 };
    s_history (suite, bob, alice, 0, 50, &rows);
    s_assert_ids (&rows, ids, (int) ncases);
    for (size_t i = 0; i < ncases; i++) {
        assert_int_equal (rows.rows [i].content_len, cases [i].len);
        assert_memory_equal (rows.rows [i].content, cases [i].content, cases [i].len);
    }
    s_sync (suite, bob, ids [0] - 1, 50, &rows);
    s_assert_ids (&rows, ids, (int) ncases);
    for (size_t i = 0; i < ncases; i++) {
        assert_int_equal (rows.rows [i].content_len, cases [i].len);
        assert_memory_equal (rows.rows [i].content, cases [i].content, cases [i].len);
    }
    s_rows_clear (&rows);

    //  The last message of the conversation: the big one
    s_convs_t convs = { 0 };
    assert_int_equal (suite->ops->conversations (suite->db, alice, s_on_conversation, &convs), CHAT_DB_OK);
    assert_int_equal (convs.count, 1);
    assert_int_equal (convs.convs [0].last.content_len, 4096);
    assert_memory_equal (convs.convs [0].last.content, big, 4096);
    s_convs_clear (&convs);

    //  A duplicate answers the stored bytes
    assert_int_equal (suite->ops->begin (suite->db), CHAT_DB_OK);
    for (size_t i = 0; i < ncases; i++) {
        char client_id [16];
        snprintf (client_id, sizeof client_id, "bytes-%zu", i);
        chat_message_t message = {
            .from_user_id = alice, .to_user_id = bob, .content = "different",
            .content_len = 9, .client_id = client_id
        };
        bool duplicate = false;
        assert_int_equal (s_store_one (suite->ops, suite->db, &message, &duplicate), CHAT_DB_OK);
        assert_true (duplicate);
        assert_int_equal (message.id, ids [i]);
        assert_int_equal (message.content_len, cases [i].len);
        assert_memory_equal (message.content, cases [i].content, cases [i].len);
    }
    assert_int_equal (suite->ops->commit (suite->db), CHAT_DB_OK);
    free (big);
}


//  --------------------------------------------------------------------------
//  Group fixtures: one per backend, the handle is the group state

static int
s_suite_open (s_suite_t *suite)
{
    char error [512] = "";
    suite->db = suite->ops->open (&suite->cfg, error, sizeof error);
    if (!suite->db) {
        print_error ("test_backend: cannot open the %s backend: %s\n", suite->name, error);
        return -1;
    }
    return 0;
}

static int
s_setup_sqlite (void **state)
{
    s_suite_t *suite = (s_suite_t *) calloc (1, sizeof (s_suite_t));
    assert_non_null (suite);
    *state = suite;
    suite->name = "sqlite";
    chat_config_defaults (&suite->cfg);
    suite->tmpdir = chat_test_tmpdir ();
    snprintf (suite->cfg.sqlite_path, sizeof suite->cfg.sqlite_path, "%s/chat.db", suite->tmpdir);
    suite->ops = chat_backend_find ("sqlite");
    assert_non_null (suite->ops);
    assert_string_equal (suite->ops->name, "sqlite");
    return s_suite_open (suite);
}

static int
s_setup_postgres (void **state)
{
    s_suite_t *suite = (s_suite_t *) calloc (1, sizeof (s_suite_t));
    assert_non_null (suite);
    *state = suite;
    suite->name = "postgres";
    chat_config_defaults (&suite->cfg);
    const char *conninfo = getenv ("CHAT_TEST_PG_CONNINFO");
    if (!conninfo || !*conninfo) {
        print_message ("test_backend: CHAT_TEST_PG_CONNINFO is not set: "
                       "the PostgreSQL run is skipped (tests/with-postgres.sh runs it)\n");
        return 0;
    }
    const chat_backend_ops_t *ops = chat_backend_find ("postgres");
    if (!ops) {
        print_message ("test_backend: the postgres backend is not built in: "
                       "the PostgreSQL run is skipped\n");
        return 0;
    }
    snprintf (suite->cfg.postgres_conninfo, sizeof suite->cfg.postgres_conninfo, "%s", conninfo);
    snprintf (suite->cfg.storage_backend, sizeof suite->cfg.storage_backend, "postgres");

    //  Start from an empty database
    PGconn *conn = PQconnectdb (conninfo);
    if (PQstatus (conn) != CONNECTION_OK) {
        print_error ("test_backend: cannot connect to %s: %s", conninfo, PQerrorMessage (conn));
        PQfinish (conn);
        return -1;
    }
    PGresult *result = PQexec (conn, "SET client_min_messages = warning;"
                                     "DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
    int status = PQresultStatus (result);
    if (status != PGRES_COMMAND_OK)
        print_error ("test_backend: cannot reset the schema: %s", PQerrorMessage (conn));
    PQclear (result);
    PQfinish (conn);
    if (status != PGRES_COMMAND_OK)
        return -1;

    suite->ops = ops;
    assert_string_equal (suite->ops->name, "postgres");
    return s_suite_open (suite);
}

static int
s_teardown (void **state)
{
    s_suite_t *suite = (s_suite_t *) *state;
    if (suite) {
        if (suite->db)
            suite->ops->close (&suite->db);
        assert_null (suite->db);
        chat_test_rmdir (&suite->tmpdir);
        free (suite);
        *state = NULL;
    }
    return 0;
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_open_twice),
        cmocka_unit_test (test_open_failure),
        cmocka_unit_test (test_two_handles),
        cmocka_unit_test (test_user_create_find),
        cmocka_unit_test (test_user_unknown),
        cmocka_unit_test (test_users_list),
        cmocka_unit_test (test_sessions),
        cmocka_unit_test (test_message_store),
        cmocka_unit_test (test_message_unknown_recipient),
        cmocka_unit_test (test_ids_increase),
        cmocka_unit_test (test_duplicate_across_transactions),
        cmocka_unit_test (test_duplicate_same_transaction),
        cmocka_unit_test (test_rollback),
        cmocka_unit_test (test_batch),
        cmocka_unit_test (test_reads_in_transaction),
        cmocka_unit_test (test_batch_call),
        cmocka_unit_test (test_batch_call_large),
        cmocka_unit_test (test_history_empty),
        cmocka_unit_test (test_history_pages),
        cmocka_unit_test (test_sync),
        cmocka_unit_test (test_mark_read),
        cmocka_unit_test (test_read_marker),
        cmocka_unit_test (test_self_conversation),
        cmocka_unit_test (test_sync_partners),
        cmocka_unit_test (test_conversations),
        cmocka_unit_test (test_content_exact),
    };
    zsys_set_logstream (stderr);
    int failed = cmocka_run_group_tests_name ("backend sqlite", tests, s_setup_sqlite, s_teardown);
    failed += cmocka_run_group_tests_name ("backend postgres", tests, s_setup_postgres, s_teardown);
    return failed? 1: 0;
}
