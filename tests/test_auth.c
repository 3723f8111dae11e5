/*  =========================================================================
    test_auth.c - the auth actor alone, over a real SQLite file

    ws-front and rate-limiter are chat_peer_t's; auth is the real actor with
    its own SQLite backend handle on a database in a temporary directory.
    Argon2id runs with the cheapest parameters to keep the tests fast.
    =========================================================================
*/

#include "test_util.h"
#include "chat_actors.h"
#include "chat_backend.h"
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>

#define TTL_S 3600

typedef struct {
    chat_config_t cfg;                  //  Defaults, SQLite in dir, fast hashing
    char *dir;                          //  Temporary directory of the database
    zactor_t *auth;                     //  The actor under test
    chat_peer_t *ws_front;              //  Sends register/logout, receives replies
    chat_peer_t *rate_limiter;          //  Sends login, receives login_result
} fixture_t;

//  What a login that worked gave the client and ws-front
typedef struct {
    char token [128];                   //  The cookie value
    char token_hash [65];               //  From session_created
    uint64_t user_id;                   //  From session_created
    uint64_t expires_ms;                //  From session_created
} session_t;

static int
s_setup (void **state)
{
    fixture_t *f = (fixture_t *) zmalloc (sizeof (fixture_t));
    assert_true (sodium_init () >= 0);
    chat_config_defaults (&f->cfg);
    f->dir = chat_test_tmpdir ();
    snprintf (f->cfg.storage_backend, sizeof f->cfg.storage_backend, "sqlite");
    snprintf (f->cfg.sqlite_path, sizeof f->cfg.sqlite_path, "%s/chat.db", f->dir);
    f->cfg.auth_password_opslimit = 1;
    f->cfg.auth_password_memlimit_kib = 8192;
    f->cfg.auth_session_ttl_s = TTL_S;
    f->ws_front = chat_peer_new (CHAT_ACTOR_WS_FRONT);
    f->rate_limiter = chat_peer_new (CHAT_ACTOR_RATE_LIMITER);
    *state = f;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    zactor_destroy (&f->auth);
    chat_peer_destroy (&f->ws_front);
    chat_peer_destroy (&f->rate_limiter);
    chat_test_rmdir (&f->dir);
    free (f);
    //  libzmq releases inproc endpoints on its reaper thread
    zclock_sleep (100);
    return 0;
}

static void
s_start (fixture_t *f)
{
    f->auth = chat_test_start (chat_auth_actor, &f->cfg);
}

static void
s_restart (fixture_t *f)
{
    zactor_destroy (&f->auth);
    zclock_sleep (100);
    s_start (f);
    //  An inproc PUSH does not reconnect to an endpoint bound anew
    chat_outbox_destroy (&f->ws_front->outbox);
    f->ws_front->outbox = chat_outbox_new (CHAT_ACTOR_WS_FRONT, NULL);
    chat_outbox_destroy (&f->rate_limiter->outbox);
    f->rate_limiter->outbox = chat_outbox_new (CHAT_ACTOR_RATE_LIMITER, NULL);
}

//  Expect http_response for req_id with status; returns the parsed body
//  (NULL when empty) and copies set_cookie into cookie if given
static json_t *
s_expect_response (fixture_t *f, uint64_t req_id, int status, char *cookie, size_t size)
{
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_HTTP_RESPONSE, 5000);
    assert_int_equal (m->u [0], req_id);
    assert_int_equal (m->u [1], status);
    if (cookie)
        snprintf (cookie, size, "%s", m->s [3]);
    if (m->len [2] == 0)
        return NULL;
    json_error_t error;
    json_t *body = json_loads (m->s [2], 0, &error);
    assert_non_null (body);
    return body;
}

//  Expect an error response with that status and code, and no cookie
static void
s_expect_error (fixture_t *f, uint64_t req_id, int status, const char *code)
{
    char cookie [256];
    json_t *body = s_expect_response (f, req_id, status, cookie, sizeof cookie);
    assert_non_null (body);
    assert_string_equal (json_string_value (json_object_get (body, "error")), code);
    assert_non_null (json_string_value (json_object_get (body, "message")));
    assert_string_equal (cookie, "");
    json_decref (body);
}

static void
s_send_register (fixture_t *f, uint64_t req_id, const char *nickname, const char *password)
{
    chat_send (f->ws_front->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_REGISTER, req_id, nickname, password);
}

//  Register and expect 201; returns the user id
static uint64_t
s_register (fixture_t *f, uint64_t req_id, const char *nickname, const char *password)
{
    s_send_register (f, req_id, nickname, password);
    json_t *body = s_expect_response (f, req_id, 201, NULL, 0);
    assert_non_null (body);
    json_int_t user_id = json_integer_value (json_object_get (body, "user_id"));
    assert_true (user_id > 0);
    assert_string_equal (json_string_value (json_object_get (body, "nickname")), nickname);
    json_decref (body);
    return (uint64_t) user_id;
}

static void
s_send_login (fixture_t *f, uint64_t req_id, const char *nickname, const char *password)
{
    chat_send (f->rate_limiter->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGIN,
               req_id, "192.0.2.7", nickname, password);
}

static void
s_expect_login_result (fixture_t *f, const char *nickname, bool ok)
{
    chat_msg_t *m = chat_peer_expect (f->rate_limiter, CHAT_CMD_LOGIN_RESULT, 5000);
    assert_string_equal (m->s [0], "192.0.2.7");
    assert_string_equal (m->s [1], nickname);
    assert_int_equal (m->u [2], ok? 1: 0);
}

//  The hex BLAKE2b-256 of a token
static void
s_token_hash (const char *token, char *hex)
{
    unsigned char digest [32];
    crypto_generichash (digest, sizeof digest, (const unsigned char *) token, strlen (token), NULL, 0);
    sodium_bin2hex (hex, 65, digest, sizeof digest);
}

//  Log in and check everything ws-front and rate-limiter receive
static void
s_login (fixture_t *f, uint64_t req_id, const char *nickname, const char *password,
         uint64_t user_id, const char *registered, session_t *session)
{
    int64_t before = zclock_time ();
    s_send_login (f, req_id, nickname, password);
    //  ws-front learns the session first
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_SESSION_CREATED, 5000);
    assert_int_equal (m->len [0], 64);
    snprintf (session->token_hash, sizeof session->token_hash, "%s", m->s [0]);
    assert_int_equal (m->u [1], user_id);
    assert_string_equal (m->s [2], registered);
    session->user_id = m->u [1];
    session->expires_ms = m->u [3];
    assert_true ((int64_t) m->u [3] >= before + (int64_t) f->cfg.auth_session_ttl_s * 1000 - 1000);
    assert_true ((int64_t) m->u [3] <= zclock_time () + (int64_t) f->cfg.auth_session_ttl_s * 1000 + 1000);

    char cookie [256];
    json_t *body = s_expect_response (f, req_id, 200, cookie, sizeof cookie);
    assert_non_null (body);
    assert_int_equal (json_integer_value (json_object_get (body, "user_id")), user_id);
    assert_string_equal (json_string_value (json_object_get (body, "nickname")), registered);
    json_decref (body);

    //  session=<token>; HttpOnly; SameSite=Lax; Path=/; Max-Age=<ttl>
    assert_true (strncmp (cookie, "session=", 8) == 0);
    const char *semicolon = strchr (cookie, ';');
    assert_non_null (semicolon);
    snprintf (session->token, sizeof session->token, "%.*s", (int) (semicolon - cookie - 8), cookie + 8);
    assert_non_null (strstr (cookie, "; HttpOnly"));
    assert_non_null (strstr (cookie, "; SameSite=Lax"));
    assert_non_null (strstr (cookie, "; Path=/"));
    char max_age [32];
    snprintf (max_age, sizeof max_age, "; Max-Age=%d", f->cfg.auth_session_ttl_s);
    assert_non_null (strstr (cookie, max_age));

    //  At least 128 random bits, base64url
    unsigned char bin [64];
    size_t bin_len = 0;
    assert_int_equal (sodium_base642bin (bin, sizeof bin, session->token, strlen (session->token),
                                         NULL, &bin_len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING), 0);
    assert_true (bin_len >= 16);
    //  ws-front knows the session by the hash of the token only
    char hex [65];
    s_token_hash (session->token, hex);
    assert_string_equal (hex, session->token_hash);

    s_expect_login_result (f, nickname, true);
}


//  --- looking into the database file --------------------------------------

typedef struct {
    const char *needle;                 //  Text searched for in every cell
    int contains;                       //  Cells containing needle
    int equals;                         //  Cells equal to needle
    int argon2id;                       //  Cells starting with $argon2id$
} s_scan_t;

//  Look at every cell of every table of the database
static void
s_scan_db (fixture_t *f, s_scan_t *scan)
{
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (f->cfg.sqlite_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout (db, 2000);
    sqlite3_stmt *tables = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, "SELECT name FROM sqlite_master WHERE type = 'table'",
                                          -1, &tables, NULL), SQLITE_OK);
    while (sqlite3_step (tables) == SQLITE_ROW) {
        char sql [256];
        snprintf (sql, sizeof sql, "SELECT * FROM \"%s\"", (const char *) sqlite3_column_text (tables, 0));
        sqlite3_stmt *rows = NULL;
        assert_int_equal (sqlite3_prepare_v2 (db, sql, -1, &rows, NULL), SQLITE_OK);
        while (sqlite3_step (rows) == SQLITE_ROW)
            for (int i = 0; i < sqlite3_column_count (rows); i++) {
                const char *text = (const char *) sqlite3_column_text (rows, i);
                if (!text)
                    continue;
                if (strstr (text, scan->needle))
                    scan->contains++;
                if (streq (text, scan->needle))
                    scan->equals++;
                if (strncmp (text, "$argon2id$", 10) == 0)
                    scan->argon2id++;
            }
        sqlite3_finalize (rows);
    }
    sqlite3_finalize (tables);
    sqlite3_close (db);
}

//  Does any file in the test directory (database, journal, WAL) hold text?
static bool
s_files_contain (fixture_t *f, const char *text)
{
    bool found = false;
    zdir_t *dir = zdir_new (f->dir, NULL);
    assert_non_null (dir);
    zfile_t **files = zdir_flatten (dir);
    for (int i = 0; files [i] && !found; i++) {
        FILE *handle = fopen (zfile_filename (files [i], NULL), "rb");
        if (!handle)
            continue;
        size_t size = (size_t) zfile_cursize (files [i]);
        char *data = (char *) malloc (size + 1);
        assert_non_null (data);
        size_t got = fread (data, 1, size, handle);
        fclose (handle);
        found = memmem (data, got, text, strlen (text)) != NULL;
        free (data);
    }
    zdir_flatten_free (&files);
    zdir_destroy (&dir);
    return found;
}

//  Live sessions as the storage has them, through a handle of our own
typedef struct {
    const char *token_hash;             //  Session looked for
    int count;                          //  Live sessions
    int found;                          //  Times token_hash was among them
} s_live_t;

static void
s_count_live (const char *token_hash, int64_t user_id, const char *nickname, int64_t expires_ms, void *ctx)
{
    (void) user_id; (void) nickname; (void) expires_ms;
    s_live_t *live = (s_live_t *) ctx;
    live->count++;
    if (live->token_hash && streq (token_hash, live->token_hash))
        live->found++;
}

static void
s_sessions_live (fixture_t *f, s_live_t *live)
{
    const chat_backend_ops_t *ops = chat_backend_find ("sqlite");
    assert_non_null (ops);
    char error [256] = "";
    chat_backend_t *db = ops->open (&f->cfg, error, sizeof error);
    assert_non_null (db);
    assert_int_equal (ops->sessions_live (db, zclock_time (), s_count_live, live), CHAT_DB_OK);
    ops->close (&db);
}


//  --- registration --------------------------------------------------------

static void
test_register_ok (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_start (f);
    char cookie [256];
    s_send_register (f, 11, "Alice", "correct horse");
    json_t *body = s_expect_response (f, 11, 201, cookie, sizeof cookie);
    assert_non_null (body);
    assert_true (json_integer_value (json_object_get (body, "user_id")) > 0);
    assert_string_equal (json_string_value (json_object_get (body, "nickname")), "Alice");
    assert_int_equal (json_object_size (body), 2);
    json_decref (body);
    assert_string_equal (cookie, "");
    uint64_t bob = s_register (f, 12, "bob_2.x-y", "12345678");
    uint64_t carol = s_register (f, 13, "carol", "another password");
    assert_true (carol > bob);
    //  Registering logs nobody in
    chat_peer_expect_nothing (f->ws_front, 100);
    chat_peer_expect_nothing (f->rate_limiter, 0);
}

static void
test_register_duplicate (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_start (f);
    s_register (f, 1, "Alice", "correct horse");
    s_send_register (f, 2, "alice", "other password");
    s_expect_error (f, 2, 409, "nickname_taken");
    s_send_register (f, 3, "ALICE", "other password");
    s_expect_error (f, 3, 409, "nickname_taken");
    s_send_register (f, 4, "Alice", "correct horse");
    s_expect_error (f, 4, 409, "nickname_taken");
}

static void
test_register_invalid (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_start (f);
    const char *bad_nicknames [] = {
        "ab", "", "bad nick", "émile", "semi;colon", "abcdefghijklmnopqrstuvwxyz0123456", NULL
    };
    uint64_t req_id = 1;
    for (int i = 0; bad_nicknames [i]; i++) {
        s_send_register (f, req_id, bad_nicknames [i], "good password");
        s_expect_error (f, req_id++, 400, "invalid_nickname");
    }
    char too_long [258];
    memset (too_long, 'p', 257);
    too_long [257] = 0;
    const char *bad_passwords [] = { "", "1234567", too_long, NULL };
    for (int i = 0; bad_passwords [i]; i++) {
        s_send_register (f, req_id, "dave", bad_passwords [i]);
        s_expect_error (f, req_id++, 400, "invalid_password");
    }
    //  The limits themselves are fine: 32 characters, 8 and 256 bytes
    s_register (f, req_id++, "abcdefghijklmnopqrstuvwxyz012345", "12345678");
    too_long [256] = 0;
    s_register (f, req_id++, "dave", too_long);
    s_register (f, req_id++, "abc", "12345678");
}


//  --- login ---------------------------------------------------------------

static void
test_login_ok (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_start (f);
    uint64_t alice = s_register (f, 1, "Alice", "correct horse");
    session_t one, two;
    s_login (f, 2, "alice", "correct horse", alice, "Alice", &one);
    //  A second login is a second session
    s_login (f, 3, "ALICE", "correct horse", alice, "Alice", &two);
    assert_string_not_equal (one.token, two.token);
    assert_string_not_equal (one.token_hash, two.token_hash);
    s_live_t live = { one.token_hash, 0, 0 };
    s_sessions_live (f, &live);
    assert_int_equal (live.count, 2);
    assert_int_equal (live.found, 1);
}

static void
test_login_refused (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_start (f);
    s_register (f, 1, "Alice", "correct horse");
    int64_t wrong_us = 0, unknown_us = 0;
    for (int i = 0; i < 3; i++) {
        //  Wrong password
        int64_t start = zclock_usecs ();
        s_send_login (f, 10 + (uint64_t) i, "alice", "wrong horse");
        s_expect_error (f, 10 + (uint64_t) i, 401, "invalid_credentials");
        wrong_us += zclock_usecs () - start;
        s_expect_login_result (f, "alice", false);
        //  Unknown nickname: the same answer
        start = zclock_usecs ();
        s_send_login (f, 20 + (uint64_t) i, "nobody", "correct horse");
        s_expect_error (f, 20 + (uint64_t) i, 401, "invalid_credentials");
        unknown_us += zclock_usecs () - start;
        s_expect_login_result (f, "nobody", false);
    }
    //  Same message text too
    s_send_login (f, 30, "alice", "wrong horse");
    json_t *wrong = s_expect_response (f, 30, 401, NULL, 0);
    s_expect_login_result (f, "alice", false);
    s_send_login (f, 31, "Nobody", "wrong horse");
    json_t *unknown = s_expect_response (f, 31, 401, NULL, 0);
    s_expect_login_result (f, "Nobody", false);
    assert_true (json_equal (wrong, unknown));
    json_decref (wrong);
    json_decref (unknown);
    //  An unknown nickname costs a hash verification as well
    assert_true (unknown_us * 4 >= wrong_us);
    //  No session anywhere
    chat_peer_expect_nothing (f->ws_front, 100);
    s_live_t live = { NULL, 0, 0 };
    s_sessions_live (f, &live);
    assert_int_equal (live.count, 0);
}

static void
test_password_stored_hashed (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_start (f);
    s_register (f, 1, "Alice", "Tr0ub4dor&3-secret");
    s_register (f, 2, "bob", "another-secret-pw");
    s_scan_t scan = { "Tr0ub4dor", 0, 0, 0 };
    s_scan_db (f, &scan);
    assert_int_equal (scan.contains, 0);
    assert_int_equal (scan.argon2id, 2);
    assert_false (s_files_contain (f, "Tr0ub4dor"));
    assert_false (s_files_contain (f, "another-secret-pw"));
}

static void
test_token_stored_hashed (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_start (f);
    uint64_t alice = s_register (f, 1, "Alice", "correct horse");
    session_t session;
    s_login (f, 2, "Alice", "correct horse", alice, "Alice", &session);
    s_scan_t scan = { session.token, 0, 0, 0 };
    s_scan_db (f, &scan);
    assert_int_equal (scan.contains, 0);
    assert_false (s_files_contain (f, session.token));
    //  What is stored is the hex BLAKE2b-256 of the cookie value
    char hex [65];
    s_token_hash (session.token, hex);
    s_scan_t hashed = { hex, 0, 0, 0 };
    s_scan_db (f, &hashed);
    assert_int_equal (hashed.equals, 1);
}


//  --- logout --------------------------------------------------------------

static void
test_logout (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_start (f);
    uint64_t alice = s_register (f, 1, "Alice", "correct horse");
    session_t session, other;
    s_login (f, 2, "Alice", "correct horse", alice, "Alice", &session);
    s_login (f, 3, "Alice", "correct horse", alice, "Alice", &other);

    chat_send (f->ws_front->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGOUT, (uint64_t) 4, session.token_hash);
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_SESSION_REVOKED, 5000);
    assert_string_equal (m->s [0], session.token_hash);
    assert_string_equal (m->s [1], "logout");
    char cookie [256];
    json_t *body = s_expect_response (f, 4, 204, cookie, sizeof cookie);
    assert_null (body);
    assert_true (strncmp (cookie, "session=;", 9) == 0);
    assert_non_null (strstr (cookie, "; HttpOnly"));
    assert_non_null (strstr (cookie, "; SameSite=Lax"));
    assert_non_null (strstr (cookie, "; Path=/"));
    assert_non_null (strstr (cookie, "; Max-Age=0"));

    //  Only that session is gone
    s_live_t live = { other.token_hash, 0, 0 };
    s_sessions_live (f, &live);
    assert_int_equal (live.count, 1);
    assert_int_equal (live.found, 1);

    //  Again: unauthorized, and nothing revoked
    chat_send (f->ws_front->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGOUT, (uint64_t) 5, session.token_hash);
    s_expect_error (f, 5, 401, "unauthorized");
    chat_send (f->ws_front->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGOUT, (uint64_t) 6, "");
    s_expect_error (f, 6, 401, "unauthorized");
    //  The cookie value itself is not a key
    chat_send (f->ws_front->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGOUT, (uint64_t) 7, other.token);
    s_expect_error (f, 7, 401, "unauthorized");
    chat_peer_expect_nothing (f->ws_front, 100);
}


//  --- expiry and restart --------------------------------------------------

static void
test_expiry (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    f->cfg.auth_session_ttl_s = 1;
    s_start (f);
    uint64_t alice = s_register (f, 1, "Alice", "correct horse");
    session_t session;
    s_login (f, 2, "Alice", "correct horse", alice, "Alice", &session);
    //  The timer runs every second; the session ends one second after login
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_SESSION_REVOKED, 4000);
    assert_string_equal (m->s [0], session.token_hash);
    assert_string_equal (m->s [1], "expired");
    assert_true (zclock_time () >= (int64_t) session.expires_ms);
    s_live_t live = { session.token_hash, 0, 0 };
    s_sessions_live (f, &live);
    assert_int_equal (live.count, 0);
    //  And it cannot be logged out any more
    chat_send (f->ws_front->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGOUT, (uint64_t) 3, session.token_hash);
    s_expect_error (f, 3, 401, "unauthorized");
    //  Nothing more: each session is revoked once
    chat_peer_expect_nothing (f->ws_front, 1500);
}

static void
test_restart_announces_sessions (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_start (f);
    uint64_t alice = s_register (f, 1, "Alice", "correct horse");
    uint64_t bob = s_register (f, 2, "Bob", "battery staple");
    session_t sessions [3];
    s_login (f, 3, "alice", "correct horse", alice, "Alice", &sessions [0]);
    s_login (f, 4, "bob", "battery staple", bob, "Bob", &sessions [1]);
    s_login (f, 5, "bob", "battery staple", bob, "Bob", &sessions [2]);
    chat_send (f->ws_front->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGOUT, (uint64_t) 6, sessions [2].token_hash);
    chat_peer_expect (f->ws_front, CHAT_CMD_SESSION_REVOKED, 5000);
    s_expect_response (f, 6, 204, NULL, 0);

    //  A new auth tells ws-front every live session before it is ready
    s_restart (f);
    int seen [2] = { 0, 0 };
    for (int i = 0; i < 2; i++) {
        chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_SESSION_CREATED, 1000);
        int which = streq (m->s [0], sessions [0].token_hash)? 0:
                    streq (m->s [0], sessions [1].token_hash)? 1: -1;
        assert_true (which >= 0);
        seen [which]++;
        assert_int_equal (m->u [1], sessions [which].user_id);
        assert_string_equal (m->s [2], which == 0? "Alice": "Bob");
        assert_int_equal (m->u [3], sessions [which].expires_ms);
    }
    assert_int_equal (seen [0], 1);
    assert_int_equal (seen [1], 1);
    chat_peer_expect_nothing (f->ws_front, 100);
    //  The sessions still work after the restart
    chat_send (f->ws_front->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGOUT, (uint64_t) 7, sessions [0].token_hash);
    chat_peer_expect (f->ws_front, CHAT_CMD_SESSION_REVOKED, 5000);
    s_expect_response (f, 7, 204, NULL, 0);
}

static void
test_open_failure (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    snprintf (f->cfg.sqlite_path, sizeof f->cfg.sqlite_path, "%s/missing/dir/chat.db", f->dir);
    zactor_t *actor = zactor_new (chat_auth_actor, &f->cfg);
    assert_non_null (actor);
    char error [256] = "";
    assert_int_equal (chat_actor_started (actor, error, sizeof error), -1);
    assert_true (strlen (error) > 0);
    assert_null (strchr (error, '\n'));
    zactor_destroy (&actor);
    //  Nothing was announced
    chat_peer_expect_nothing (f->ws_front, 50);
}


int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_register_ok, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_register_duplicate, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_register_invalid, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_login_ok, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_login_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_password_stored_hashed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_token_stored_hashed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_logout, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_expiry, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_restart_announces_sessions, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_open_failure, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
