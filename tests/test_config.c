/*  =========================================================================
    test_config.c - configuration: defaults, INI file, environment, errors

    Real files in a temporary directory, real environment variables.
    =========================================================================
*/

#include "test_util.h"
#include <errno.h>
#include <libgen.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

typedef struct {
    char *dir;                          //  Temporary directory
    char path [1024];                   //  The INI file written by a test
    chat_config_t cfg;                  //  Loaded configuration
    char error [512];                   //  Last error
} fixture_t;

//  Remove every CHAT_* variable, so that the caller's environment cannot
//  change what a test sees
static void
s_clear_env (void)
{
    bool again = true;
    while (again) {
        again = false;
        for (char **e = environ; *e; e++)
            if (strncmp (*e, "CHAT_", 5) == 0) {
                char name [256];
                size_t n = strcspn (*e, "=");
                assert_true (n < sizeof name);
                memcpy (name, *e, n);
                name [n] = 0;
                unsetenv (name);
                again = true;           //  environ changed: start over
                break;
            }
    }
}

static int
s_setup (void **state)
{
    fixture_t *f = (fixture_t *) zmalloc (sizeof (fixture_t));
    f->dir = chat_test_tmpdir ();
    snprintf (f->path, sizeof f->path, "%s/chatd.ini", f->dir);
    s_clear_env ();
    *state = f;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_clear_env ();
    chat_test_rmdir (&f->dir);
    free (f);
    return 0;
}

static void
s_write (fixture_t *f, const char *text)
{
    FILE *file = fopen (f->path, "w");
    assert_non_null (file);
    assert_int_equal (fputs (text, file) >= 0, 1);
    assert_int_equal (fclose (file), 0);
}

//  Load f->path (written with text) and expect success
static void
s_load_ok (fixture_t *f, const char *text)
{
    s_write (f, text);
    f->error [0] = 0;
    if (chat_config_load (&f->cfg, f->path, f->error, sizeof f->error) != 0)
        fail_msg ("load failed: %s", f->error);
}

//  The error must be one line, and be exactly `expected`
static void
s_assert_error (fixture_t *f, const char *expected)
{
    assert_null (strchr (f->error, '\n'));
    assert_string_equal (f->error, expected);
}

//  Load the file (written with text); expect failure with exactly `expected`
static void
s_load_fails (fixture_t *f, const char *text, const char *expected)
{
    s_write (f, text);
    f->error [0] = 0;
    assert_int_equal (chat_config_load (&f->cfg, f->path, f->error, sizeof f->error), -1);
    s_assert_error (f, expected);
}

//  Set one key; expect failure with exactly `expected`
static void
s_set_fails (fixture_t *f, const char *section, const char *key, const char *value,
             const char *expected)
{
    f->error [0] = 0;
    assert_int_equal (chat_config_set (&f->cfg, section, key, value, f->error, sizeof f->error), -1);
    s_assert_error (f, expected);
}

static void
s_set_ok (fixture_t *f, const char *section, const char *key, const char *value)
{
    f->error [0] = 0;
    if (chat_config_set (&f->cfg, section, key, value, f->error, sizeof f->error) != 0)
        fail_msg ("set [%s] %s = %s failed: %s", section, key, value, f->error);
}


//  --------------------------------------------------------------------------

static void
test_defaults (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    chat_config_t *c = &f->cfg;
    chat_config_defaults (c);
    assert_string_equal (c->server_bind, "127.0.0.1");
    assert_int_equal (c->server_port, 8080);
    assert_string_equal (c->server_tap, "");
    assert_string_equal (c->server_log_level, "info");
    assert_string_equal (c->storage_backend, "sqlite");
    assert_int_equal (c->storage_batch_max, 1024);
    assert_string_equal (c->sqlite_path, "chat.db");
    assert_string_equal (c->sqlite_synchronous, "full");
    assert_string_equal (c->postgres_conninfo, "");
    assert_int_equal (c->postgres_reconnect_max_ms, 5000);
    assert_int_equal (c->auth_session_ttl_s, 2592000);
    assert_int_equal (c->auth_password_opslimit, 2);
    assert_int_equal (c->auth_password_memlimit_kib, 65536);
    assert_true (c->rate_limit_messages_per_second == 5.0);
    assert_int_equal (c->rate_limit_burst, 20);
    assert_int_equal (c->rate_limit_close_after, 10);
    assert_true (c->rate_limit_typing_per_second == 3.0);
    assert_int_equal (c->rate_limit_typing_burst, 6);
    assert_int_equal (c->rate_limit_login_slow_after, 3);
    assert_int_equal (c->rate_limit_login_max_failures, 10);
    assert_int_equal (c->rate_limit_login_window_s, 900);
    assert_string_equal (c->http_allowed_origins, "");
    assert_int_equal (c->http_max_body_bytes, 16384);
    assert_int_equal (c->http_request_timeout_ms, 10000);
    assert_int_equal (c->limits_max_message_bytes, 4096);
    assert_int_equal (c->limits_max_frame_bytes, 65536);
    assert_int_equal (c->limits_max_connections, 19000);
    assert_int_equal (c->limits_max_connections_per_user, 16);
    assert_int_equal (c->limits_max_queue_bytes, 1048576);
    assert_int_equal (c->websocket_ping_interval_s, 54);
    assert_int_equal (c->websocket_pong_timeout_s, 60);
    assert_int_equal (c->websocket_presence_delay_ms, 500);

    //  Loading without a file gives the same
    chat_config_t loaded;
    memset (&loaded, 0xAA, sizeof loaded);
    assert_int_equal (chat_config_load (&loaded, NULL, f->error, sizeof f->error), 0);
    assert_memory_equal (&loaded, c, sizeof loaded);
}

//  The shipped example sets every key to its default
static void
test_example_file (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    char source [1024];
    snprintf (source, sizeof source, "%s", __FILE__);
    char path [1100];
    snprintf (path, sizeof path, "%s/../config/chatd.ini", dirname (source));
    if (chat_config_load (&f->cfg, path, f->error, sizeof f->error) != 0)
        fail_msg ("%s", f->error);
    chat_config_t defaults;
    chat_config_defaults (&defaults);
    assert_memory_equal (&f->cfg, &defaults, sizeof defaults);

    //  ... and sets every one of the 36 keys (none is only in a comment)
    FILE *file = fopen (path, "r");
    assert_non_null (file);
    char line [512];
    int keys = 0;
    while (fgets (line, sizeof line, file))
        if (line [0] != ';' && line [0] != '[' && strchr (line, '='))
            keys++;
    fclose (file);
    assert_int_equal (keys, 36);
}

static void
test_ini_every_type (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_load_ok (f,
        "; a comment\n"
        "# another comment\n"
        "[server]\n"
        "bind = 0.0.0.0\n"
        "port=9001\n"
        "tap = \"ipc:///tmp/chatd-tap\"\n"
        "log_level = DEBUG   ; words are case-insensitive\n"
        "\n"
        "[storage]\n"
        "backend = postgres\n"
        "batch_max = 1\n"
        "[postgres]\n"
        "conninfo = host=localhost dbname=chat\n"
        "reconnect_max_ms = 250\n"
        "[sqlite]\n"
        "path = /var/lib/chatd/chat.db\n"
        "synchronous = normal\n"
        "[rate_limit]\n"
        "messages_per_second = 0.5\n"
        "typing_per_second = 1e1\n"
        "burst = +7\n"
        "[http]\n"
        "allowed_origins = https://a.example https://b.example:8443\n"
        "[auth]\n"
        "password_memlimit_kib = 8\n"
        "[limits]\n"
        "max_message_bytes = 65536\n"
        "[websocket]\n"
        "ping_interval_s = 1\n");
    chat_config_t *c = &f->cfg;
    assert_string_equal (c->server_bind, "0.0.0.0");
    assert_int_equal (c->server_port, 9001);
    assert_string_equal (c->server_tap, "ipc:///tmp/chatd-tap");
    assert_string_equal (c->server_log_level, "debug");
    assert_string_equal (c->storage_backend, "postgres");
    assert_int_equal (c->storage_batch_max, 1);
    assert_string_equal (c->postgres_conninfo, "host=localhost dbname=chat");
    assert_int_equal (c->postgres_reconnect_max_ms, 250);
    assert_string_equal (c->sqlite_path, "/var/lib/chatd/chat.db");
    assert_string_equal (c->sqlite_synchronous, "normal");
    assert_true (c->rate_limit_messages_per_second == 0.5);
    assert_true (c->rate_limit_typing_per_second == 10.0);
    assert_int_equal (c->rate_limit_burst, 7);
    assert_string_equal (c->http_allowed_origins, "https://a.example https://b.example:8443");
    assert_int_equal (c->auth_password_memlimit_kib, 8);
    assert_int_equal (c->limits_max_message_bytes, 65536);
    assert_int_equal (c->websocket_ping_interval_s, 1);
    //  Keys not in the file keep their defaults
    assert_int_equal (c->rate_limit_close_after, 10);
    assert_int_equal (c->websocket_pong_timeout_s, 60);

    //  Boundaries are inclusive
    s_set_ok (f, "server", "port", "1");
    assert_int_equal (c->server_port, 1);
    s_set_ok (f, "server", "port", "65535");
    assert_int_equal (c->server_port, 65535);
    s_set_ok (f, "limits", "max_message_bytes", "1");
    assert_int_equal (c->limits_max_message_bytes, 1);
    //  A string that exactly fills its field
    char bind [64];
    memset (bind, 'b', 63);
    bind [63] = 0;
    s_set_ok (f, "server", "bind", bind);
    assert_string_equal (c->server_bind, bind);
    //  An empty value for a string that may be empty
    s_set_ok (f, "server", "tap", "");
    assert_string_equal (c->server_tap, "");
    s_set_ok (f, "server", "tap", "\"\"");
    assert_string_equal (c->server_tap, "");
}

static void
test_env_override (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    setenv ("CHAT_SERVER_PORT", "9000", 1);
    setenv ("CHAT_RATE_LIMIT_MESSAGES_PER_SECOND", "2.5", 1);
    setenv ("CHAT_HTTP_ALLOWED_ORIGINS", "https://x.example https://y.example", 1);
    setenv ("CHAT_STORAGE_BACKEND", "postgres", 1);
    setenv ("CHAT_POSTGRES_CONNINFO", "dbname=fromenv", 1);
    setenv ("CHAT_WEBSOCKET_PONG_TIMEOUT_S", "120", 1);
    //  The environment wins over the file
    s_load_ok (f, "[server]\nport = 7000\nbind = 10.0.0.1\n[sqlite]\npath = file.db\n");
    chat_config_t *c = &f->cfg;
    assert_int_equal (c->server_port, 9000);
    assert_string_equal (c->server_bind, "10.0.0.1");
    assert_string_equal (c->sqlite_path, "file.db");
    assert_true (c->rate_limit_messages_per_second == 2.5);
    assert_string_equal (c->http_allowed_origins, "https://x.example https://y.example");
    assert_string_equal (c->storage_backend, "postgres");
    assert_string_equal (c->postgres_conninfo, "dbname=fromenv");
    assert_int_equal (c->websocket_pong_timeout_s, 120);

    //  Without a file too
    assert_int_equal (chat_config_load (c, NULL, f->error, sizeof f->error), 0);
    assert_int_equal (c->server_port, 9000);
    assert_string_equal (c->server_bind, "127.0.0.1");

    //  An empty variable sets an empty value
    setenv ("CHAT_SERVER_TAP", "", 1);
    assert_int_equal (chat_config_load (c, NULL, f->error, sizeof f->error), 0);
    assert_string_equal (c->server_tap, "");
    //  ... which for a key that must not be empty is an error
    setenv ("CHAT_SQLITE_PATH", "", 1);
    assert_int_equal (chat_config_load (c, NULL, f->error, sizeof f->error), -1);
    s_assert_error (f, "[sqlite] path (from CHAT_SQLITE_PATH): value must not be empty");
}

static void
test_env_unknown_ignored (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    setenv ("CHAT_TEST_PG_CONNINFO", "dbname=whatever", 1);
    setenv ("CHAT_SERVER_COLOUR", "red", 1);
    setenv ("CHAT_", "x", 1);
    setenv ("CHAT_FOO", "bar", 1);
    setenv ("chat_server_port", "abc", 1);      //  Only upper case is ours
    assert_int_equal (chat_config_load (&f->cfg, NULL, f->error, sizeof f->error), 0);
    chat_config_t defaults;
    chat_config_defaults (&defaults);
    assert_memory_equal (&f->cfg, &defaults, sizeof defaults);
    unsetenv ("chat_server_port");
}

static void
test_env_errors (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    setenv ("CHAT_SERVER_PORT", "abc", 1);
    assert_int_equal (chat_config_load (&f->cfg, NULL, f->error, sizeof f->error), -1);
    s_assert_error (f, "[server] port (from CHAT_SERVER_PORT): \"abc\" is not an integer");
    unsetenv ("CHAT_SERVER_PORT");

    setenv ("CHAT_STORAGE_BACKEND", "mysql", 1);
    assert_int_equal (chat_config_load (&f->cfg, NULL, f->error, sizeof f->error), -1);
    s_assert_error (f, "[storage] backend (from CHAT_STORAGE_BACKEND): "
                       "\"mysql\" is not one of sqlite, postgres");
    unsetenv ("CHAT_STORAGE_BACKEND");

    setenv ("CHAT_RATE_LIMIT_MESSAGES_PER_SECOND", "0", 1);
    assert_int_equal (chat_config_load (&f->cfg, NULL, f->error, sizeof f->error), -1);
    assert_non_null (strstr (f->error, "[rate_limit] messages_per_second "
                                       "(from CHAT_RATE_LIMIT_MESSAGES_PER_SECOND): \"0\""));
    assert_null (strchr (f->error, '\n'));
    unsetenv ("CHAT_RATE_LIMIT_MESSAGES_PER_SECOND");

    //  An environment error wins even when the file is fine
    setenv ("CHAT_LIMITS_MAX_MESSAGE_BYTES", "65537", 1);
    s_load_fails (f, "[server]\nport = 8081\n",
                  "[limits] max_message_bytes (from CHAT_LIMITS_MAX_MESSAGE_BYTES): "
                  "\"65537\" is not between 1 and 65536");
}

static void
test_errors (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    chat_config_defaults (&f->cfg);
    //  Unknown section and key
    s_set_fails (f, "server", "colour", "red", "[server] colour: unknown key");
    s_set_fails (f, "colour", "red", "1", "[colour] red: unknown section");
    s_set_fails (f, "Server", "port", "1", "[Server] port: unknown section");
    s_set_fails (f, "", "port", "1", "[] port: unknown section");
    //  Integers are strict
    s_set_fails (f, "server", "port", "abc", "[server] port: \"abc\" is not an integer");
    s_set_fails (f, "server", "port", "80abc", "[server] port: \"80abc\" is not an integer");
    s_set_fails (f, "server", "port", "", "[server] port: \"\" is not an integer");
    s_set_fails (f, "server", "port", " 80", "[server] port: \" 80\" is not an integer");
    s_set_fails (f, "server", "port", "80 ", "[server] port: \"80 \" is not an integer");
    s_set_fails (f, "server", "port", "8.5", "[server] port: \"8.5\" is not an integer");
    s_set_fails (f, "server", "port", "0x50", "[server] port: \"0x50\" is not an integer");
    //  ... and within range
    s_set_fails (f, "server", "port", "0", "[server] port: \"0\" is not between 1 and 65535");
    s_set_fails (f, "server", "port", "65536", "[server] port: \"65536\" is not between 1 and 65535");
    s_set_fails (f, "server", "port", "-1", "[server] port: \"-1\" is not between 1 and 65535");
    s_set_fails (f, "server", "port", "99999999999999999999999",
                 "[server] port: \"99999999999999999999999\" is not between 1 and 65535");
    s_set_fails (f, "storage", "batch_max", "0",
                 "[storage] batch_max: \"0\" is not between 1 and 1000000");
    s_set_fails (f, "auth", "session_ttl_s", "0",
                 "[auth] session_ttl_s: \"0\" is not an integer of at least 1");
    s_set_fails (f, "auth", "session_ttl_s", "2147483648",
                 "[auth] session_ttl_s: \"2147483648\" is not an integer of at least 1");
    s_set_fails (f, "auth", "password_opslimit", "0",
                 "[auth] password_opslimit: \"0\" is not an integer of at least 1");
    s_set_fails (f, "auth", "password_memlimit_kib", "7",
                 "[auth] password_memlimit_kib: \"7\" is not an integer of at least 8");
    s_set_fails (f, "rate_limit", "burst", "0",
                 "[rate_limit] burst: \"0\" is not an integer of at least 1");
    s_set_fails (f, "rate_limit", "close_after", "0",
                 "[rate_limit] close_after: \"0\" is not an integer of at least 1");
    s_set_fails (f, "limits", "max_message_bytes", "0",
                 "[limits] max_message_bytes: \"0\" is not between 1 and 65536");
    s_set_fails (f, "limits", "max_message_bytes", "65537",
                 "[limits] max_message_bytes: \"65537\" is not between 1 and 65536");
    //  Numbers: strict, finite and positive
    const char *bad_numbers [] = { "abc", "", "5x", " 5", "nan", "inf", "-inf", "1e999", NULL };
    for (int i = 0; bad_numbers [i]; i++) {
        char expected [256];
        snprintf (expected, sizeof expected,
                  "[rate_limit] messages_per_second: \"%s\" is not a number", bad_numbers [i]);
        s_set_fails (f, "rate_limit", "messages_per_second", bad_numbers [i], expected);
    }
    s_set_fails (f, "rate_limit", "messages_per_second", "0",
                 "[rate_limit] messages_per_second: \"0\" is not a number above 0 and at most 1e+06");
    s_set_fails (f, "rate_limit", "typing_per_second", "-2",
                 "[rate_limit] typing_per_second: \"-2\" is not a number above 0 and at most 1e+06");
    //  Words
    s_set_fails (f, "storage", "backend", "mysql",
                 "[storage] backend: \"mysql\" is not one of sqlite, postgres");
    s_set_fails (f, "storage", "backend", "",
                 "[storage] backend: \"\" is not one of sqlite, postgres");
    s_set_fails (f, "storage", "backend", "sqlite postgres",
                 "[storage] backend: \"sqlite postgres\" is not one of sqlite, postgres");
    s_set_fails (f, "storage", "backend", "sql",
                 "[storage] backend: \"sql\" is not one of sqlite, postgres");
    s_set_fails (f, "server", "log_level", "verbose",
                 "[server] log_level: \"verbose\" is not one of error, warning, info, debug");
    s_set_fails (f, "sqlite", "synchronous", "off",
                 "[sqlite] synchronous: \"off\" is not one of full, normal");
    //  Strings longer than their field, or empty where that makes no sense
    char bind [65];
    memset (bind, 'b', 64);
    bind [64] = 0;
    s_set_fails (f, "server", "bind", bind, "[server] bind: value is longer than 63 bytes");
    s_set_fails (f, "server", "bind", "", "[server] bind: value must not be empty");
    s_set_fails (f, "sqlite", "path", "", "[sqlite] path: value must not be empty");
    char *origins = (char *) malloc (4000);
    memset (origins, 'o', 3999);
    origins [3999] = 0;
    s_set_fails (f, "http", "allowed_origins", origins,
                 "[http] allowed_origins: value is longer than 2047 bytes");
    free (origins);

    //  A refused value leaves the configuration as it was
    chat_config_t defaults;
    chat_config_defaults (&defaults);
    assert_memory_equal (&f->cfg, &defaults, sizeof defaults);

    //  A long value is quoted back shortened, still on one line
    char *junk = (char *) malloc (1000);
    memset (junk, 'j', 999);
    junk [999] = 0;
    assert_int_equal (chat_config_set (&f->cfg, "server", "port", junk, f->error, sizeof f->error), -1);
    assert_null (strchr (f->error, '\n'));
    assert_true (strlen (f->error) < 200);
    assert_non_null (strstr (f->error, "[server] port: \"jjjj"));
    free (junk);

    //  A small error buffer is filled without overflow
    char tiny [8];
    assert_int_equal (chat_config_set (&f->cfg, "server", "port", "abc", tiny, sizeof tiny), -1);
    assert_string_equal (tiny, "[server");
    assert_int_equal (chat_config_set (&f->cfg, "server", "port", "abc", NULL, 0), -1);
}

static void
test_file_errors (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    char expected [1200];
    //  A bad value: the line, then the section and key
    snprintf (expected, sizeof expected,
              "config file %s line 3: [server] port: \"abc\" is not an integer", f->path);
    s_load_fails (f, "[server]\nbind = ::1\nport = abc\n", expected);
    snprintf (expected, sizeof expected,
              "config file %s line 2: [server] colour: unknown key", f->path);
    s_load_fails (f, "[server]\ncolour = blue\nport = abc\n", expected);
    snprintf (expected, sizeof expected,
              "config file %s line 5: [database] path: unknown section", f->path);
    s_load_fails (f, "[server]\nport = 1\n\n[database]\npath = x\n", expected);
    snprintf (expected, sizeof expected,
              "config file %s line 1: [] port: unknown section", f->path);
    s_load_fails (f, "port = 80\n", expected);
    snprintf (expected, sizeof expected,
              "config file %s line 2: [storage] backend: \"mysql\" is not one of sqlite, postgres",
              f->path);
    s_load_fails (f, "[storage]\nbackend = mysql\n", expected);
    //  Syntax errors
    snprintf (expected, sizeof expected, "config file %s line 2: syntax error", f->path);
    s_load_fails (f, "[server]\njust some words\nport = 80\n", expected);
    s_load_fails (f, "[server]\n[limits\n", expected);
    //  The first error is the one reported, whichever kind it is
    snprintf (expected, sizeof expected, "config file %s line 2: syntax error", f->path);
    s_load_fails (f, "[server]\noops\nport = abc\n", expected);
    snprintf (expected, sizeof expected,
              "config file %s line 2: [server] port: \"abc\" is not an integer", f->path);
    s_load_fails (f, "[server]\nport = abc\noops\n", expected);
    //  A line too long for inih is refused, not split in two
    char *text = (char *) malloc (2000);
    int n = snprintf (text, 2000, "[sqlite]\npath = /");
    memset (text + n, 'p', 500);
    strcpy (text + n + 500, "\n[server]\nport = 81\n");
    snprintf (expected, sizeof expected,
              "config file %s line 2: line longer than 197 bytes "
              "(set long values with CHAT_<SECTION>_<KEY> instead)", f->path);
    s_load_fails (f, text, expected);
    free (text);
    //  Indented keys are keys, not the continuation of the previous value
    s_load_ok (f, "[server]\n  bind = 10.1.1.1\n\tport = 8124\n  ; comment\n  [limits]\n"
                  "    max_connections = 7\n");
    assert_string_equal (f->cfg.server_bind, "10.1.1.1");
    assert_int_equal (f->cfg.server_port, 8124);
    assert_int_equal (f->cfg.limits_max_connections, 7);
    //  Stray carriage returns at the end of a line of the longest length
    char *longest = (char *) malloc (400);
    n = snprintf (longest, 400, "[sqlite]\npath = /");
    memset (longest + n, 'p', 197 - (n - 9));
    strcpy (longest + 9 + 197, "\r\r\r\n");
    s_load_ok (f, longest);
    assert_int_equal (strlen (f->cfg.sqlite_path), 197 - strlen ("path = "));
    free (longest);
    //  Windows line endings are fine
    s_load_ok (f, "[server]\r\nport = 8123\r\n");
    assert_int_equal (f->cfg.server_port, 8123);
    //  An empty file gives the defaults
    s_load_ok (f, "");
    assert_int_equal (f->cfg.server_port, 8080);
}

static void
test_postgres_needs_conninfo (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_load_fails (f, "[storage]\nbackend = postgres\n",
                  "[postgres] conninfo: must be set when [storage] backend is postgres");
    s_load_ok (f, "[storage]\nbackend = postgres\n[postgres]\nconninfo = dbname=chat\n");
    assert_string_equal (f->cfg.postgres_conninfo, "dbname=chat");
    //  The conninfo may come from the environment
    setenv ("CHAT_POSTGRES_CONNINFO", "dbname=env", 1);
    s_load_ok (f, "[storage]\nbackend = postgres\n");
    assert_string_equal (f->cfg.postgres_conninfo, "dbname=env");
}

static void
test_pong_after_ping (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_load_fails (f, "[websocket]\nping_interval_s = 60\npong_timeout_s = 60\n",
                  "[websocket] pong_timeout_s: must be greater than [websocket] ping_interval_s");
    s_load_ok (f, "[websocket]\nping_interval_s = 1\npong_timeout_s = 2\n");
    assert_int_equal (f->cfg.websocket_pong_timeout_s, 2);
}

static void
test_unreadable_file (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    char path [1100], expected [1300];
    snprintf (path, sizeof path, "%s/missing.ini", f->dir);
    assert_int_equal (chat_config_load (&f->cfg, path, f->error, sizeof f->error), -1);
    snprintf (expected, sizeof expected, "cannot read config file %s: %s", path, strerror (ENOENT));
    s_assert_error (f, expected);

    //  A directory
    assert_int_equal (chat_config_load (&f->cfg, f->dir, f->error, sizeof f->error), -1);
    snprintf (expected, sizeof expected, "cannot read config file %s: %s", f->dir, strerror (EISDIR));
    s_assert_error (f, expected);

    //  No permission (root reads anything, so only checked for others)
    if (geteuid () != 0) {
        s_write (f, "[server]\nport = 1\n");
        assert_int_equal (chmod (f->path, 0), 0);
        assert_int_equal (chat_config_load (&f->cfg, f->path, f->error, sizeof f->error), -1);
        snprintf (expected, sizeof expected, "cannot read config file %s: %s", f->path, strerror (EACCES));
        s_assert_error (f, expected);
    }
}


//  --------------------------------------------------------------------------
//  chat_config_load_string: the same reader over text in memory, without
//  the environment (used by the fuzz harness tests/fuzz/fuzz_config.c)

//  Load text; expect failure with exactly `expected`
static void
s_string_fails (fixture_t *f, const char *text, const char *expected)
{
    f->error [0] = 0;
    assert_int_equal (chat_config_load_string (&f->cfg, text, f->error, sizeof f->error), -1);
    s_assert_error (f, expected);
}

static void
s_string_ok (fixture_t *f, const char *text)
{
    f->error [0] = 0;
    if (chat_config_load_string (&f->cfg, text, f->error, sizeof f->error) != 0)
        fail_msg ("load_string failed: %s", f->error);
    assert_string_equal (f->error, "");
}

static void
test_load_string (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    //  The same text gives the same struct from a file and from memory
    const char *text =
        "; comment\n"
        "[server]\n"
        "bind = \"::1\"\n"
        "port = 9001 ; inline comment\n"
        "log_level = DEBUG\n"
        "[storage]\n"
        "backend = postgres\n"
        "[postgres]\n"
        "conninfo = dbname=chat host=/tmp\n"
        "[rate_limit]\n"
        "messages_per_second = 2.5\n"
        "[http]\n"
        "allowed_origins = http://a.com https://b.org\n";
    s_load_ok (f, text);
    chat_config_t from_file = f->cfg;
    s_string_ok (f, text);
    assert_memory_equal (&f->cfg, &from_file, sizeof from_file);
    assert_int_equal (f->cfg.server_port, 9001);
    assert_string_equal (f->cfg.server_bind, "::1");
    assert_string_equal (f->cfg.server_log_level, "debug");
    assert_string_equal (f->cfg.storage_backend, "postgres");
    assert_string_equal (f->cfg.http_allowed_origins, "http://a.com https://b.org");

    //  The example file read into memory gives the defaults
    char source [1024], path [1100];
    snprintf (source, sizeof source, "%s", __FILE__);
    snprintf (path, sizeof path, "%s/../config/chatd.ini", dirname (source));
    FILE *file = fopen (path, "r");
    assert_non_null (file);
    char *example = (char *) calloc (1, 65536);
    assert_non_null (example);
    size_t n = fread (example, 1, 65535, file);
    fclose (file);
    assert_true (n > 0 && n < 65535);
    s_string_ok (f, example);
    free (example);
    chat_config_t defaults;
    chat_config_defaults (&defaults);
    assert_memory_equal (&f->cfg, &defaults, sizeof defaults);

    //  Empty text, no final newline, Windows line endings
    s_string_ok (f, "");
    assert_memory_equal (&f->cfg, &defaults, sizeof defaults);
    s_string_ok (f, "[server]\nport = 8124");
    assert_int_equal (f->cfg.server_port, 8124);
    s_string_ok (f, "[server]\r\nport = 8125\r\n");
    assert_int_equal (f->cfg.server_port, 8125);
    //  Each load starts from the defaults
    s_string_ok (f, "[limits]\nmax_message_bytes = 10\n");
    assert_int_equal (f->cfg.server_port, 8080);
    assert_int_equal (f->cfg.limits_max_message_bytes, 10);

    //  The environment is not read
    setenv ("CHAT_SERVER_PORT", "9999", 1);
    setenv ("CHAT_SERVER_BIND", "", 1);        //  Would be an error
    s_string_ok (f, "[server]\nlog_level = error\n");
    assert_int_equal (f->cfg.server_port, 8080);
    assert_string_equal (f->cfg.server_bind, "127.0.0.1");
    unsetenv ("CHAT_SERVER_PORT");
    unsetenv ("CHAT_SERVER_BIND");
}

static void
test_load_string_errors (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_string_fails (f, "[server]\nbind = ::1\nport = abc\n",
                    "config text line 3: [server] port: \"abc\" is not an integer");
    s_string_fails (f, "[server]\nport = 0\n",
                    "config text line 2: [server] port: \"0\" is not between 1 and 65535");
    s_string_fails (f, "[server]\nport = 65536\n",
                    "config text line 2: [server] port: \"65536\" is not between 1 and 65535");
    s_string_fails (f, "[server]\n\n[database]\npath = x\n",
                    "config text line 4: [database] path: unknown section");
    s_string_fails (f, "port = 80\n", "config text line 1: [] port: unknown section");
    s_string_fails (f, "[storage]\nbackend = mysql\n",
                    "config text line 2: [storage] backend: \"mysql\" is not one of sqlite, postgres");
    s_string_fails (f, "[server]\njust some words\nport = 80\n", "config text line 2: syntax error");
    s_string_fails (f, "[server]\r\n[limits\r\n", "config text line 2: syntax error");
    s_string_fails (f, "[server]\nport = abc\noops\n",
                    "config text line 2: [server] port: \"abc\" is not an integer");
    //  Cross-key rule
    s_string_fails (f, "[storage]\nbackend = postgres\n",
                    "[postgres] conninfo: must be set when [storage] backend is postgres");
    //  A line too long for inih is refused, not split in two
    char *text = (char *) malloc (2000);
    assert_non_null (text);
    int n = snprintf (text, 2000, "[sqlite]\npath = /");
    memset (text + n, 'p', 500);
    strcpy (text + n + 500, "\n[server]\nport = 81\n");
    s_string_fails (f, text, "config text line 2: line longer than 197 bytes "
                             "(set long values with CHAT_<SECTION>_<KEY> instead)");
    //  ... even as the last line without a newline
    strcpy (text + n + 500, "");
    s_string_fails (f, text, "config text line 2: line longer than 197 bytes "
                             "(set long values with CHAT_<SECTION>_<KEY> instead)");
    //  197 bytes is fine
    memset (text, 0, 2000);
    n = snprintf (text, 2000, "[sqlite]\npath = /");
    memset (text + n, 'p', 197 - (n - 9));
    s_string_ok (f, text);
    assert_int_equal (strlen (f->cfg.sqlite_path), 197 - strlen ("path = "));
    free (text);
    //  No error buffer at all is allowed
    assert_int_equal (chat_config_load_string (&f->cfg, "[server]\nport = x\n", NULL, 0), -1);
    assert_int_equal (chat_config_load_string (&f->cfg, "[server]\nport = 2\n", NULL, 0), 0);
    //  A small error buffer gets a truncated, terminated line
    char small [12];
    assert_int_equal (chat_config_load_string (&f->cfg, "[server]\nport = x\n", small, sizeof small), -1);
    assert_string_equal (small, "config text");
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_defaults, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_example_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_ini_every_type, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_env_override, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_env_unknown_ignored, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_env_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_file_errors, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_postgres_needs_conninfo, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_pong_after_ping, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_unreadable_file, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_load_string, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_load_string_errors, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
