/*  =========================================================================
    fuzz_config.c - libFuzzer harness for chat_config_load_string
    (config/config.c), which runs the INI reader, inih and every key's
    validation without files or environment.

    The input is the INI text (cut at its first NUL). Checks on success:
    every value is within the bounds the table in config.c declares (port
    1..65535, backend sqlite or postgres and postgres with a conninfo,
    words from their lists, strings terminated inside their fields and
    non-empty where required, rates above 0 and finite); on failure: the
    error is one non-empty line naming "config text line N" with N within
    the text, or the one cross-key rule. Loading is deterministic: the same
    text loads to the same struct. Run with tests/fuzz/run.sh.
    =========================================================================
*/

#include "chat_config.h"
#include "fuzz_check.h"
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#define S_TERMINATED(field) (strnlen ((field), sizeof (field)) < sizeof (field))
#define S_IN(value, lo, hi) ((value) >= (lo) && (value) <= (hi))

static bool
s_one_of (const char *value, const char *a, const char *b, const char *c, const char *d)
{
    return (a && strcmp (value, a) == 0) || (b && strcmp (value, b) == 0)
        || (c && strcmp (value, c) == 0) || (d && strcmp (value, d) == 0);
}

static void
s_check_valid (const chat_config_t *cfg)
{
    FUZZ_CHECK (S_TERMINATED (cfg->server_bind) && S_TERMINATED (cfg->server_tap)
            &&  S_TERMINATED (cfg->server_log_level) && S_TERMINATED (cfg->storage_backend)
            &&  S_TERMINATED (cfg->sqlite_path) && S_TERMINATED (cfg->sqlite_synchronous)
            &&  S_TERMINATED (cfg->postgres_conninfo) && S_TERMINATED (cfg->http_allowed_origins),
                "a string runs past its field");
    FUZZ_CHECK (*cfg->server_bind, "empty bind");
    FUZZ_CHECK (S_IN (cfg->server_port, 1, 65535), "port %d", cfg->server_port);
    FUZZ_CHECK (s_one_of (cfg->server_log_level, "error", "warning", "info", "debug"),
                "log_level %s", cfg->server_log_level);
    FUZZ_CHECK (s_one_of (cfg->storage_backend, "sqlite", "postgres", NULL, NULL),
                "backend %s", cfg->storage_backend);
    FUZZ_CHECK (strcmp (cfg->storage_backend, "postgres") != 0 || *cfg->postgres_conninfo,
                "postgres without conninfo");
    FUZZ_CHECK (S_IN (cfg->storage_batch_max, 1, 1000000), "batch_max %d", cfg->storage_batch_max);
    FUZZ_CHECK (*cfg->sqlite_path, "empty sqlite path");
    FUZZ_CHECK (s_one_of (cfg->sqlite_synchronous, "full", "normal", NULL, NULL),
                "synchronous %s", cfg->sqlite_synchronous);
    FUZZ_CHECK (S_IN (cfg->postgres_reconnect_max_ms, 1, 3600000), "reconnect_max_ms");
    FUZZ_CHECK (cfg->auth_session_ttl_s >= 1 && cfg->auth_password_opslimit >= 1
            &&  cfg->auth_password_memlimit_kib >= 8, "auth");
    FUZZ_CHECK (isfinite (cfg->rate_limit_messages_per_second) && cfg->rate_limit_messages_per_second > 0
            &&  cfg->rate_limit_messages_per_second <= 1000000, "messages_per_second %g",
                cfg->rate_limit_messages_per_second);
    FUZZ_CHECK (isfinite (cfg->rate_limit_typing_per_second) && cfg->rate_limit_typing_per_second > 0
            &&  cfg->rate_limit_typing_per_second <= 1000000, "typing_per_second %g",
                cfg->rate_limit_typing_per_second);
    FUZZ_CHECK (cfg->rate_limit_burst >= 1 && cfg->rate_limit_close_after >= 1
            &&  cfg->rate_limit_typing_burst >= 1 && cfg->rate_limit_login_slow_after >= 1
            &&  cfg->rate_limit_login_max_failures >= 1 && cfg->rate_limit_login_window_s >= 1, "rate_limit");
    FUZZ_CHECK (S_IN (cfg->http_max_body_bytes, 1024, 67108864), "max_body_bytes");
    FUZZ_CHECK (S_IN (cfg->http_request_timeout_ms, 1, 3600000), "request_timeout_ms");
    FUZZ_CHECK (S_IN (cfg->http_handshake_timeout_s, 1, 3600), "handshake_timeout_s");
    FUZZ_CHECK (S_IN (cfg->http_idle_timeout_s, 1, 3600), "idle_timeout_s");
    FUZZ_CHECK (S_IN (cfg->limits_max_message_bytes, 1, 65536), "max_message_bytes");
    FUZZ_CHECK (S_IN (cfg->limits_max_frame_bytes, 1024, 67108864), "max_frame_bytes");
    FUZZ_CHECK (S_IN (cfg->limits_max_connections, 1, 1000000), "max_connections");
    FUZZ_CHECK (S_IN (cfg->limits_max_connections_per_user, 1, 1000000), "max_connections_per_user");
    FUZZ_CHECK (S_IN (cfg->limits_max_connections_per_address, 1, 1000000), "max_connections_per_address");
    FUZZ_CHECK (cfg->limits_max_queue_bytes >= 1024, "max_queue_bytes");
    FUZZ_CHECK (S_IN (cfg->websocket_ping_interval_s, 1, 65535), "ping_interval_s");
    FUZZ_CHECK (S_IN (cfg->websocket_pong_timeout_s, 1, 65535), "pong_timeout_s");
    FUZZ_CHECK (cfg->websocket_pong_timeout_s > cfg->websocket_ping_interval_s, "pong_timeout_s <= ping_interval_s");
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *text = (char *) malloc (size + 1);
    FUZZ_CHECK (text, "out of memory");
    memcpy (text, data, size);
    text [size] = 0;
    int lines = 1;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';

    chat_config_t cfg, again;
    char error [512], error_again [512];
    memset (error, 'x', sizeof error);
    int rc = chat_config_load_string (&cfg, text, error, sizeof error);
    FUZZ_CHECK (rc == 0 || rc == -1, "rc %d", rc);
    FUZZ_CHECK (strnlen (error, sizeof error) < sizeof error, "error not terminated");
    if (rc == 0) {
        FUZZ_CHECK (error [0] == 0, "error on success: %s", error);
        s_check_valid (&cfg);
    }
    else {
        FUZZ_CHECK (error [0], "empty error");
        FUZZ_CHECK (!strchr (error, '\n'), "error of more than one line: %s", error);
        int line = 0;
        if (sscanf (error, "config text line %d: ", &line) == 1)
            FUZZ_CHECK (line >= 1 && line <= lines, "line %d of %d", line, lines);
        else
            //  Without a line number: a rule across keys, checked at the end
            FUZZ_CHECK (strcmp (error, "[postgres] conninfo: must be set when [storage] backend is postgres") == 0
                    ||  strcmp (error, "[websocket] pong_timeout_s: must be greater than [websocket] ping_interval_s") == 0,
                        "error %s", error);
    }
    //  Deterministic
    int rc_again = chat_config_load_string (&again, text, error_again, sizeof error_again);
    FUZZ_CHECK (rc_again == rc, "rc %d then %d", rc, rc_again);
    if (rc == 0)
        FUZZ_CHECK (memcmp (&cfg, &again, sizeof cfg) == 0, "two loads differ");
    else
        FUZZ_CHECK (strcmp (error, error_again) == 0, "errors differ");
    free (text);
    return 0;
}
