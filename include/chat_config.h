/*  =========================================================================
    chat_config.h - chatd's configuration, read once at start-up

    An INI file (read with inih), then CHAT_<SECTION>_<KEY> environment
    variables over it. The struct holds no pointers: main copies it into each
    actor, so no actor shares memory with another through it.
    config/chatd.ini is the commented example of every key.
    =========================================================================
*/

#ifndef CHAT_CONFIG_H_INCLUDED
#define CHAT_CONFIG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    //  [server]
    char server_bind [64];              //  Address to listen on
    int server_port;                    //  TCP port for HTTP and WebSocket
    char server_tap [256];              //  ZeroMQ endpoint for chat-tap, "" = off
    char server_log_level [16];         //  error, warning, info, debug

    //  [storage]
    char storage_backend [16];          //  "sqlite" or "postgres"
    int storage_batch_max;              //  Most messages stored in one commit

    //  [sqlite]
    char sqlite_path [1024];            //  Database file
    char sqlite_synchronous [16];       //  "full" (durable) or "normal"

    //  [postgres]
    char postgres_conninfo [1024];      //  libpq connection string
    int postgres_reconnect_max_ms;      //  Longest back-off between reconnects

    //  [auth]
    int auth_session_ttl_s;             //  Session lifetime (cookie Max-Age)
    int auth_password_opslimit;         //  Argon2id passes
    int auth_password_memlimit_kib;     //  Argon2id memory in KiB

    //  [rate_limit]
    double rate_limit_messages_per_second;  //  Sustained private messages per user
    int rate_limit_burst;               //  Bucket size for private messages
    int rate_limit_close_after;         //  Refusals in a row before close 1008
    double rate_limit_typing_per_second;    //  Typing events per user
    int rate_limit_typing_burst;        //  Bucket size for typing
    int rate_limit_login_slow_after;    //  Failed logins before slowing down
    int rate_limit_login_max_failures;  //  Failed logins before 429
    int rate_limit_login_window_s;      //  Window over which failures count

    //  [http]
    char http_allowed_origins [2048];   //  Space-separated extra origins
    int http_max_body_bytes;            //  Largest HTTP request body
    int http_request_timeout_ms;        //  Deadline for an API answer
    int http_handshake_timeout_s;       //  Headers, bodies, upgrades must complete
    int http_idle_timeout_s;            //  Idle keep-alive HTTP connections close

    //  [limits]
    int limits_max_message_bytes;       //  Largest private message content
    int limits_max_frame_bytes;         //  Largest WebSocket frame (1009 above)
    int limits_max_connections;         //  Connections the server accepts
    int limits_max_connections_per_user; // WebSockets per user
    int limits_max_connections_per_address; // WebSockets per client address
    int limits_max_queue_bytes;         //  Unsent bytes per connection before close
    int limits_max_inflight_per_connection; //  Unanswered messages before reading pauses

    //  [websocket]
    int websocket_ping_interval_s;      //  Ping period
    int websocket_pong_timeout_s;       //  Close when no answer for this long
    int websocket_presence_delay_ms;    //  Longest wait to batch presence frames
} chat_config_t;

//  Fill cfg with the built-in defaults.
void chat_config_defaults (chat_config_t *cfg);

//  Read the INI file at path (NULL: defaults only), then apply CHAT_*
//  environment variables. On error returns -1 and writes one line naming
//  the section and key into error.
int chat_config_load (chat_config_t *cfg, const char *path, char *error, size_t size);

//  Like chat_config_load, but from INI text in memory (NUL-terminated)
//  instead of a file, and WITHOUT the CHAT_* environment overrides: the
//  result depends on text alone (for tests and fuzzing). Errors name the
//  source "config text", e.g. "config text line 3: [server] port: ...".
int chat_config_load_string (chat_config_t *cfg, const char *text, char *error, size_t size);

//  Apply one key (used by the loader and by tests). Returns -1 and writes
//  the one-line error for an unknown section/key or a bad value.
int chat_config_set (chat_config_t *cfg, const char *section, const char *key,
                     const char *value, char *error, size_t size);

#ifdef __cplusplus
}
#endif

#endif
