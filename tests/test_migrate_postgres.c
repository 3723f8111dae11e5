/*  =========================================================================
    test_migrate_postgres.c - PostgreSQL migration 2 keeps every message
    and its read state

    Builds a version-1 database by hand, as chatd left it before migration
    2 (the DDL of migration 1 copied here, its schema_migrations row, and
    users and messages, a prefix of some conversations read, messages to
    oneself among them), then opens it with the PostgreSQL backend, which
    applies migration 2: the table conversations replaces the per-user
    indexes of private_messages and its is_read column. Checks through the
    backend what users see: conversations (order, last message, unread
    counts), history read flags, sync, a duplicate of a message from
    before, new messages and mark_read after the upgrade; and behind the
    backend's back, the conversation rows, that the indexes and the column
    are gone, and that version 2 is recorded once.

    Runs when CHAT_TEST_PG_CONNINFO names a server (tests/with-postgres.sh
    provides one), whose public schema it drops and makes again; skipped
    otherwise.
    =========================================================================
*/

#include "test_util.h"
#include "chat_backend.h"
#include "chat_config.h"
#include <inttypes.h>
#include <libpq-fe.h>

//  Migration 1 as it shipped (backends/postgres.c), and the table and row
//  s_migrate keeps its version in
static const char s_version_1 [] =
    "CREATE TABLE users ("
    "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "    nickname text NOT NULL,"
    "    password_hash text NOT NULL,"
    "    created_at timestamptz NOT NULL"
    ");"
    "CREATE UNIQUE INDEX users_nickname_lower ON users (lower (nickname));"
    "CREATE TABLE sessions ("
    "    token_hash text PRIMARY KEY,"
    "    user_id bigint NOT NULL REFERENCES users (id),"
    "    created_at timestamptz NOT NULL,"
    "    expires_at timestamptz NOT NULL"
    ");"
    "CREATE INDEX sessions_expires_at ON sessions (expires_at);"
    "CREATE TABLE private_messages ("
    "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "    sender_id bigint NOT NULL REFERENCES users (id),"
    "    receiver_id bigint NOT NULL REFERENCES users (id),"
    "    content text NOT NULL,"
    "    created_at timestamptz NOT NULL,"
    "    is_read boolean NOT NULL DEFAULT false,"
    "    client_id text NULL"
    ");"
    "CREATE UNIQUE INDEX private_messages_client_id"
    "    ON private_messages (sender_id, client_id) WHERE client_id IS NOT NULL;"
    "CREATE INDEX private_messages_conversation"
    "    ON private_messages (sender_id, receiver_id, id);"
    "CREATE INDEX private_messages_sent ON private_messages (sender_id, id);"
    "CREATE INDEX private_messages_received ON private_messages (receiver_id, id);"
    "CREATE INDEX private_messages_unread"
    "    ON private_messages (receiver_id, sender_id) WHERE NOT is_read;"
    "CREATE TABLE schema_migrations ("
    "    version integer PRIMARY KEY,"
    "    applied_at timestamptz NOT NULL"
    ");"
    "INSERT INTO schema_migrations (version, applied_at) VALUES (1, now ());";

//  Users 1 ann, 2 ben, 3 cat, 4 dan, 5 eve (eve has no messages), and
//  messages 1-11, ids given by the identity in this order (the schema is
//  new, so they start at 1; checked below). Read, as mark_read left them:
//  ben read ann's 1 and 3 (not 7); ann read ben's 2 (not 5, 11); ann read
//  her own 6 to herself (not 9); cat read dan's 10; cat's 8 to ann and
//  ann's 4 to cat are unread.
static const char s_data [] =
    "INSERT INTO users (nickname, password_hash, created_at) VALUES"
    "    ('ann', 'h', now ()), ('ben', 'h', now ()), ('cat', 'h', now ()),"
    "    ('dan', 'h', now ()), ('eve', 'h', now ());"
    "INSERT INTO private_messages (sender_id, receiver_id, content, created_at, is_read, client_id)"
    " VALUES (1, 2, 'a>b 1', timestamptz 'epoch' + interval '1001 ms', true, 'c1'),"
    "        (2, 1, 'b>a 2', timestamptz 'epoch' + interval '1002 ms', true, NULL),"
    "        (1, 2, 'a>b 3', timestamptz 'epoch' + interval '1003 ms', true, 'c3'),"
    "        (1, 3, 'a>c 4', timestamptz 'epoch' + interval '1004 ms', false, NULL),"
    "        (2, 1, 'b>a 5', timestamptz 'epoch' + interval '1005 ms', false, 'c5'),"
    "        (1, 1, 'a>a 6', timestamptz 'epoch' + interval '1006 ms', true, NULL),"
    "        (1, 2, 'a>b 7', timestamptz 'epoch' + interval '1007 ms', false, NULL),"
    "        (3, 1, 'c>a 8', timestamptz 'epoch' + interval '1008 ms', false, NULL),"
    "        (1, 1, 'a>a 9', timestamptz 'epoch' + interval '1009 ms', false, NULL),"
    "        (4, 3, 'd>c 10', timestamptz 'epoch' + interval '1010 ms', true, NULL),"
    "        (2, 1, 'b>a 11', timestamptz 'epoch' + interval '1011 ms', false, NULL);";

#define ANN 1
#define BEN 2
#define CAT 3
#define DAN 4
#define EVE 5

#define S_MAX 32

//  What the backend handed out, copied (valid only during the callback)
typedef struct {
    int count;
    int64_t id [S_MAX];
    int64_t from [S_MAX];
    int64_t to [S_MAX];
    bool is_read [S_MAX];
    char nickname [S_MAX][33];          //  The sender's
    char content [S_MAX][33];
    int64_t created_ms [S_MAX];
    int64_t partner [S_MAX];            //  Conversations only
    char partner_nickname [S_MAX][33];
    int64_t unread [S_MAX];
} s_seen_t;

static void
s_seen_message (s_seen_t *seen, const chat_message_t *message)
{
    assert_true (seen->count < S_MAX);
    int i = seen->count;
    seen->id [i] = message->id;
    seen->from [i] = message->from_user_id;
    seen->to [i] = message->to_user_id;
    seen->is_read [i] = message->is_read;
    snprintf (seen->nickname [i], 33, "%s", message->nickname? message->nickname: "");
    snprintf (seen->content [i], 33, "%.*s", (int) message->content_len, message->content);
    seen->created_ms [i] = message->created_ms;
}

static void
s_on_message (const chat_message_t *message, void *ctx)
{
    s_seen_t *seen = (s_seen_t *) ctx;
    s_seen_message (seen, message);
    seen->count++;
}

static void
s_on_conversation (const chat_conversation_t *conv, void *ctx)
{
    s_seen_t *seen = (s_seen_t *) ctx;
    s_seen_message (seen, &conv->last_message);
    seen->partner [seen->count] = conv->user_id;
    snprintf (seen->partner_nickname [seen->count], 33, "%s", conv->nickname);
    seen->unread [seen->count] = conv->unread;
    seen->count++;
}

typedef struct {
    const chat_backend_ops_t *ops;      //  NULL: no server, skipped
    chat_config_t cfg;
    chat_backend_t *db;
} s_fixture_t;

static void
s_conversations (s_fixture_t *fx, int64_t user, s_seen_t *seen)
{
    memset (seen, 0, sizeof *seen);
    assert_int_equal (fx->ops->conversations (fx->db, user, s_on_conversation, seen), CHAT_DB_OK);
}

static bool
s_history (s_fixture_t *fx, int64_t user, int64_t with, int limit, s_seen_t *seen)
{
    memset (seen, 0, sizeof *seen);
    bool more = true;
    assert_int_equal (fx->ops->history (fx->db, user, with, 0, limit, s_on_message, seen, &more),
                      CHAT_DB_OK);
    return more;
}

static bool
s_sync (s_fixture_t *fx, int64_t user, int64_t after_id, int limit, s_seen_t *seen)
{
    memset (seen, 0, sizeof *seen);
    bool more = true;
    assert_int_equal (fx->ops->sync (fx->db, user, after_id, limit, s_on_message, seen, &more),
                      CHAT_DB_OK);
    return more;
}

static int64_t
s_mark_read (s_fixture_t *fx, int64_t reader, int64_t partner, int64_t up_to_id)
{
    int64_t changed = -1;
    assert_int_equal (fx->ops->mark_read (fx->db, reader, partner, up_to_id, &changed), CHAT_DB_OK);
    return changed;
}

//  Store one message in a transaction of its own; returns its id
static int64_t
s_send (s_fixture_t *fx, int64_t from, int64_t to, const char *content, const char *client_id,
        bool *duplicate, bool *is_read)
{
    chat_message_t message = {
        .from_user_id = from, .to_user_id = to, .content = content,
        .content_len = strlen (content), .client_id = client_id
    };
    int result = -100;
    bool dup = true;
    assert_int_equal (fx->ops->begin (fx->db), CHAT_DB_OK);
    assert_int_equal (fx->ops->message_store_batch (fx->db, &message, 1, &result, &dup), CHAT_DB_OK);
    assert_int_equal (fx->ops->commit (fx->db), CHAT_DB_OK);
    assert_int_equal (result, CHAT_DB_OK);
    if (duplicate)
        *duplicate = dup;
    else
        assert_false (dup);
    if (is_read)
        *is_read = message.is_read;
    return message.id;
}

//  Assert the ids and read flags of what was seen
static void
s_assert_seen (const s_seen_t *seen, const int64_t *ids, const bool *read, int count)
{
    if (seen->count != count) {
        for (int i = 0; i < seen->count; i++)
            print_message ("  got id %" PRId64 "\n", seen->id [i]);
        fail_msg ("expected %d rows, got %d", count, seen->count);
    }
    for (int i = 0; i < count; i++) {
        assert_int_equal (seen->id [i], ids [i]);
        if (seen->is_read [i] != read [i])
            fail_msg ("message %" PRId64 ": is_read %d, expected %d",
                      ids [i], seen->is_read [i], read [i]);
    }
}

//  One value, as text, of a query run behind the backend's back
static char *
s_query (s_fixture_t *fx, const char *sql)
{
    PGconn *conn = PQconnectdb (fx->cfg.postgres_conninfo);
    assert_int_equal (PQstatus (conn), CONNECTION_OK);
    PGresult *res = PQexec (conn, sql);
    if (PQresultStatus (res) != PGRES_TUPLES_OK)
        fail_msg ("%s: %s", sql, PQerrorMessage (conn));
    assert_int_equal (PQntuples (res), 1);
    char *value = strdup (PQgetvalue (res, 0, 0));
    assert_non_null (value);
    PQclear (res);
    PQfinish (conn);
    return value;
}

static void
s_assert_query (s_fixture_t *fx, const char *sql, const char *expected)
{
    char *value = s_query (fx, sql);
    if (strcmp (value, expected) != 0)
        fail_msg ("%s\n  answered: %s\n  expected: %s", sql, value, expected);
    free (value);
}

//  Run SQL text on a connection of its own; fails the test on an error
static void
s_exec (s_fixture_t *fx, const char *sql)
{
    PGconn *conn = PQconnectdb (fx->cfg.postgres_conninfo);
    assert_int_equal (PQstatus (conn), CONNECTION_OK);
    PGresult *res = PQexec (conn, sql);
    if (PQresultStatus (res) != PGRES_COMMAND_OK && PQresultStatus (res) != PGRES_TUPLES_OK)
        fail_msg ("cannot run SQL: %s", PQerrorMessage (conn));
    PQclear (res);
    PQfinish (conn);
}

//  The conversation rows, "user>partner last read;" each, in key order
#define S_ROWS_SQL \
    "SELECT string_agg (format ('%s>%s %s %s;', user_id, partner_id, last_id, read_up_to), ''" \
    "                   ORDER BY user_id, partner_id) FROM conversations"


//  --------------------------------------------------------------------------

static void
test_migration_2 (void **state)
{
    s_fixture_t *fx = (s_fixture_t *) *state;
    if (!fx->ops)
        skip ();

    //  A version-1 database, as chatd left it
    s_exec (fx, "SET client_min_messages = warning;"
                "DROP SCHEMA public CASCADE; CREATE SCHEMA public;");
    s_exec (fx, s_version_1);
    s_exec (fx, s_data);
    s_assert_query (fx, "SELECT string_agg (id::text, ',' ORDER BY id) FROM private_messages",
                    "1,2,3,4,5,6,7,8,9,10,11");
    s_assert_query (fx, "SELECT string_agg (id || nickname, ',' ORDER BY id) FROM users",
                    "1ann,2ben,3cat,4dan,5eve");

    //  Opening it applies migration 2
    char error [256] = "";
    fx->db = fx->ops->open (&fx->cfg, error, sizeof error);
    if (!fx->db)
        fail_msg ("open failed: %s", error);
    s_assert_query (fx, "SELECT string_agg (version::text, ',' ORDER BY version) FROM schema_migrations",
                    "1,2");

    //  The conversation rows: both ways for every pair that talked, one
    //  for ann with herself; last_id either way, read_up_to the newest
    //  read message to the user
    s_assert_query (fx, S_ROWS_SQL,
                    "1>1 9 6;1>2 11 2;1>3 8 0;2>1 11 3;3>1 8 0;3>4 10 10;4>3 10 0;");

    //  The per-user indexes and is_read are gone; the two others stay
    s_assert_query (fx, "SELECT count (*) FROM pg_indexes WHERE schemaname = 'public'"
                        " AND tablename = 'private_messages' AND indexname IN"
                        " ('private_messages_sent', 'private_messages_received',"
                        "  'private_messages_unread')", "0");
    s_assert_query (fx, "SELECT string_agg (indexname, ',' ORDER BY indexname) FROM pg_indexes"
                        " WHERE schemaname = 'public' AND tablename = 'private_messages'",
                    "private_messages_client_id,private_messages_conversation,private_messages_pkey");
    s_assert_query (fx, "SELECT count (*) FROM information_schema.columns"
                        " WHERE table_schema = 'public' AND table_name = 'private_messages'"
                        " AND column_name = 'is_read'", "0");
    s_assert_query (fx, "SELECT string_agg (column_name, ',' ORDER BY ordinal_position)"
                        " FROM information_schema.columns"
                        " WHERE table_schema = 'public' AND table_name = 'conversations'",
                    "user_id,partner_id,last_id,read_up_to");

    //  ann's conversations, newest first: ben (11), herself (9), cat (8).
    //  Unread: ben's 5 and 11 (2 was read), her own 9 (6 was read), cat's 8
    s_seen_t seen;
    s_conversations (fx, ANN, &seen);
    assert_int_equal (seen.count, 3);
    assert_int_equal (seen.partner [0], BEN);
    assert_string_equal (seen.partner_nickname [0], "ben");
    assert_int_equal (seen.id [0], 11);
    assert_int_equal (seen.from [0], BEN);
    assert_int_equal (seen.to [0], ANN);
    assert_string_equal (seen.nickname [0], "ben");
    assert_string_equal (seen.content [0], "b>a 11");
    assert_int_equal (seen.created_ms [0], 1011);
    assert_false (seen.is_read [0]);
    assert_int_equal (seen.unread [0], 2);
    assert_int_equal (seen.partner [1], ANN);
    assert_string_equal (seen.partner_nickname [1], "ann");
    assert_int_equal (seen.id [1], 9);
    assert_false (seen.is_read [1]);
    assert_int_equal (seen.unread [1], 1);
    assert_int_equal (seen.partner [2], CAT);
    assert_int_equal (seen.id [2], 8);
    assert_string_equal (seen.nickname [2], "cat");
    assert_false (seen.is_read [2]);
    assert_int_equal (seen.unread [2], 1);

    //  ben's: ann, the last message his own 11, which ann has not read;
    //  unread ann's 7 (1 and 3 were read)
    s_conversations (fx, BEN, &seen);
    assert_int_equal (seen.count, 1);
    assert_int_equal (seen.partner [0], ANN);
    assert_int_equal (seen.id [0], 11);
    assert_false (seen.is_read [0]);
    assert_int_equal (seen.unread [0], 1);

    //  cat's: dan (10, read), then ann (8); unread ann's 4
    s_conversations (fx, CAT, &seen);
    assert_int_equal (seen.count, 2);
    assert_int_equal (seen.partner [0], DAN);
    assert_int_equal (seen.id [0], 10);
    assert_true (seen.is_read [0]);
    assert_int_equal (seen.unread [0], 0);
    assert_int_equal (seen.partner [1], ANN);
    assert_int_equal (seen.id [1], 8);
    assert_int_equal (seen.unread [1], 1);

    //  dan's: cat, his 10 which cat read; eve's: none
    s_conversations (fx, DAN, &seen);
    assert_int_equal (seen.count, 1);
    assert_int_equal (seen.partner [0], CAT);
    assert_true (seen.is_read [0]);
    assert_int_equal (seen.unread [0], 0);
    s_conversations (fx, EVE, &seen);
    assert_int_equal (seen.count, 0);

    //  History keeps each message's read flag, from either side
    int64_t ab [] = { 1, 2, 3, 5, 7, 11 };
    bool ab_read [] = { true, true, true, false, false, false };
    assert_false (s_history (fx, ANN, BEN, 50, &seen));
    s_assert_seen (&seen, ab, ab_read, 6);
    assert_string_equal (seen.content [3], "b>a 5");
    assert_int_equal (seen.created_ms [3], 1005);
    assert_false (s_history (fx, BEN, ANN, 50, &seen));
    s_assert_seen (&seen, ab, ab_read, 6);
    assert_true (s_history (fx, BEN, ANN, 3, &seen));
    s_assert_seen (&seen, ab + 3, ab_read + 3, 3);
    int64_t aa [] = { 6, 9 };
    bool aa_read [] = { true, false };
    assert_false (s_history (fx, ANN, ANN, 50, &seen));
    s_assert_seen (&seen, aa, aa_read, 2);

    //  Sync: every message of ann's once (not dan's 10), ascending, flags
    int64_t all [] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 11 };
    bool all_read [] = { true, true, true, false, false, true, false, false, false, false };
    assert_false (s_sync (fx, ANN, 0, 50, &seen));
    s_assert_seen (&seen, all, all_read, 10);
    assert_true (s_sync (fx, ANN, 3, 4, &seen));
    s_assert_seen (&seen, all + 3, all_read + 3, 4);
    assert_false (s_sync (fx, ANN, 7, 3, &seen));
    s_assert_seen (&seen, all + 7, all_read + 7, 3);
    int64_t cats [] = { 4, 8, 10 };
    bool cats_read [] = { false, false, true };
    assert_false (s_sync (fx, CAT, 0, 50, &seen));
    s_assert_seen (&seen, cats, cats_read, 3);

    //  A client_id from before the upgrade is still known, with its flag
    bool duplicate = false, is_read = false;
    assert_int_equal (s_send (fx, ANN, BEN, "resend", "c3", &duplicate, &is_read), 3);
    assert_true (duplicate);
    assert_true (is_read);
    assert_int_equal (s_send (fx, BEN, ANN, "resend", "c5", &duplicate, &is_read), 5);
    assert_true (duplicate);
    assert_false (is_read);

    //  A new message moves last_id of both rows and arrives unread
    int64_t n1 = s_send (fx, ANN, BEN, "a>b new", "n1", NULL, &is_read);
    assert_true (n1 > 11);
    assert_false (is_read);
    s_conversations (fx, BEN, &seen);
    assert_int_equal (seen.count, 1);
    assert_int_equal (seen.id [0], n1);
    assert_string_equal (seen.content [0], "a>b new");
    assert_int_equal (seen.unread [0], 2);  //  7 and the new one
    s_conversations (fx, ANN, &seen);
    assert_int_equal (seen.partner [0], BEN);
    assert_int_equal (seen.id [0], n1);
    assert_int_equal (seen.unread [0], 2);  //  ben's 5 and 11 still

    //  A conversation that did not exist, with oneself: one row
    int64_t n2 = s_send (fx, EVE, EVE, "note", NULL, NULL, NULL);
    s_conversations (fx, EVE, &seen);
    assert_int_equal (seen.count, 1);
    assert_int_equal (seen.partner [0], EVE);
    assert_int_equal (seen.id [0], n2);
    assert_int_equal (seen.unread [0], 1);
    char expected [256];
    snprintf (expected, sizeof expected,
              "1>1 9 6;1>2 %" PRId64 " 2;1>3 8 0;2>1 %" PRId64 " 3;3>1 8 0;3>4 10 10;4>3 10 0;"
              "5>5 %" PRId64 " 0;", n1, n1, n2);
    s_assert_query (fx, S_ROWS_SQL, expected);

    //  mark_read goes on from the migrated read state: ben reads all of
    //  ann's (7 and the new one), then nothing more
    assert_int_equal (s_mark_read (fx, BEN, ANN, INT64_MAX), 2);
    assert_int_equal (s_mark_read (fx, BEN, ANN, INT64_MAX), 0);
    assert_int_equal (s_mark_read (fx, BEN, ANN, 3), 0);
    s_conversations (fx, BEN, &seen);
    assert_int_equal (seen.unread [0], 0);
    assert_true (seen.is_read [0]);
    //  ... which does not make ann's next message read
    int64_t n3 = s_send (fx, ANN, BEN, "a>b after", NULL, NULL, NULL);
    int64_t ab_after [] = { 1, 2, 3, 5, 7, 11, n1, n3 };
    bool ab_after_read [] = { true, true, true, false, true, false, true, false };
    assert_false (s_history (fx, BEN, ANN, 50, &seen));
    s_assert_seen (&seen, ab_after, ab_after_read, 8);
    s_conversations (fx, BEN, &seen);
    assert_int_equal (seen.unread [0], 1);
    //  ann reads up to 10: ben's 5 (2 was read before; read_up_to is 10
    //  now, 11 stays unread), then her own to herself up to the end
    assert_int_equal (s_mark_read (fx, ANN, BEN, 10), 1);
    assert_int_equal (s_mark_read (fx, ANN, ANN, INT64_MAX), 1);
    s_conversations (fx, ANN, &seen);
    assert_int_equal (seen.count, 3);
    assert_int_equal (seen.partner [0], BEN);
    assert_int_equal (seen.unread [0], 1);  //  11
    assert_int_equal (seen.partner [1], ANN);
    assert_int_equal (seen.unread [1], 0);
    assert_true (seen.is_read [1]);
    assert_int_equal (seen.partner [2], CAT);
    assert_int_equal (seen.unread [2], 1);
    snprintf (expected, sizeof expected,
              "1>1 9 9;1>2 %" PRId64 " 10;1>3 8 0;2>1 %" PRId64 " %" PRId64 ";3>1 8 0;"
              "3>4 10 10;4>3 10 0;5>5 %" PRId64 " 0;", n3, n3, n1, n2);
    s_assert_query (fx, S_ROWS_SQL, expected);
    fx->ops->close (&fx->db);

    //  Opening again migrates nothing more
    fx->db = fx->ops->open (&fx->cfg, error, sizeof error);
    if (!fx->db)
        fail_msg ("second open failed: %s", error);
    s_assert_query (fx, "SELECT count (*) || ' ' || max (version) FROM schema_migrations", "2 2");
    s_conversations (fx, BEN, &seen);
    assert_int_equal (seen.count, 1);
    assert_int_equal (seen.id [0], n3);
    fx->ops->close (&fx->db);
}


//  --------------------------------------------------------------------------

static int
s_setup (void **state)
{
    s_fixture_t *fx = (s_fixture_t *) calloc (1, sizeof (s_fixture_t));
    assert_non_null (fx);
    *state = fx;
    chat_config_defaults (&fx->cfg);
    const char *conninfo = getenv ("CHAT_TEST_PG_CONNINFO");
    if (!conninfo || !*conninfo) {
        print_message ("test_migrate_postgres: CHAT_TEST_PG_CONNINFO is not set: "
                       "skipped (tests/with-postgres.sh runs it)\n");
        return 0;
    }
    fx->ops = chat_backend_find ("postgres");
    assert_non_null (fx->ops);
    snprintf (fx->cfg.postgres_conninfo, sizeof fx->cfg.postgres_conninfo, "%s", conninfo);
    snprintf (fx->cfg.storage_backend, sizeof fx->cfg.storage_backend, "postgres");
    return 0;
}

static int
s_teardown (void **state)
{
    s_fixture_t *fx = (s_fixture_t *) *state;
    if (fx) {
        if (fx->db)
            fx->ops->close (&fx->db);
        free (fx);
        *state = NULL;
    }
    return 0;
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_migration_2),
    };
    zsys_set_logstream (stderr);
    return cmocka_run_group_tests_name ("migrate postgres", tests, s_setup, s_teardown);
}
