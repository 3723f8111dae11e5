/*  =========================================================================
    chat_parse.h - the pure part of ws-front: parsing what clients send

    Everything that reads outside input before it becomes an internal
    message: a WebSocket text frame, the body of register and login, the
    Origin check, the session cookie. No I/O and no state, so each is unit-tested and fuzzed
    alone (tests/fuzz/). ws-front (actors/ws_front.c) calls these and sends
    the result on.
    =========================================================================
*/

#ifndef CHAT_PARSE_H_INCLUDED
#define CHAT_PARSE_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CHAT_FRAME_PRIVATE_MESSAGE,         //  Send it on to rate-limiter
    CHAT_FRAME_TYPING,                  //  Send it on to rate-limiter
    CHAT_FRAME_LOAD_HISTORY,            //  Send it on to persistence
    CHAT_FRAME_SYNC,                    //  Send it on to persistence
    CHAT_FRAME_MARK_READ,               //  Send it on to persistence
    CHAT_FRAME_ERROR,                   //  Answer {"type":"error", error, message}
    CHAT_FRAME_MESSAGE_FAILED,          //  Answer {"type":"message_failed", ...}
    CHAT_FRAME_IGNORE                   //  Nothing to do (typing to oneself)
} chat_frame_kind_t;

typedef struct {
    chat_frame_kind_t kind;             //  What to do with it
    const char *error;                  //  Code, for ERROR and MESSAGE_FAILED
    const char *message;                //  Text for people, likewise
    uint64_t to_user_id;                //  private_message, typing
    uint64_t with_user_id;              //  load_history, mark_read
    uint64_t before_id;                 //  load_history: 0 = no bound
    uint64_t after_id;                  //  sync
    uint64_t limit;                     //  load_history (1..100), sync (1..1000)
    uint64_t up_to_id;                  //  mark_read
    bool is_typing;                     //  typing
    const char *content;                //  private_message: exact bytes
    size_t content_len;
    const char *client_id;              //  private_message: "" when absent
    size_t client_id_len;
    char *request_id;                   //  As given, serialized; "" when absent
    json_t *root;                       //  Owns the strings above
} chat_frame_t;

//  Parse one complete text frame from user_id. Never fails: the result's
//  kind says what to send on or what to answer. Release with
//  chat_frame_release. max_content_bytes is [limits] max_message_bytes.
void chat_frame_parse (const char *data, size_t len, uint64_t user_id,
                       size_t max_content_bytes, chat_frame_t *frame);
void chat_frame_release (chat_frame_t *frame);

//  The body of POST /api/register and /api/login: a JSON object with
//  string members nickname and password. Returns NULL and sets *error to
//  "bad_json", "invalid_nickname" or "invalid_password"; or the parsed
//  object (caller json_decref's it), with the strings pointing into it.
json_t *chat_credentials_parse (const char *body, size_t len,
                                const char **nickname, size_t *nickname_len,
                                const char **password, size_t *password_len,
                                const char **error);

//  Whether a request from origin may act: an absent origin (NULL) may; so
//  may the server's own, "http://" + host; so may any origin listed in the
//  space-separated allowed list. Exact comparison.
bool chat_origin_allowed (const char *origin, const char *host, const char *allowed);

//  Find the cookie called name in header, the raw value of a Cookie:
//  request header ("a=b; session=XYZ; c=d", RFC 6265 section 4.2.1, read
//  leniently: spaces and tabs around pairs, names and values are skipped;
//  pairs without "=" are skipped). Names match exactly and case-sensitively,
//  never on a prefix or suffix. A value in double quotes loses its quotes.
//  When the name occurs more than once the first one counts. Copies the
//  value and a NUL into value (size bytes) and returns true; returns false
//  when header is NULL, the cookie is absent, its value is empty, or the
//  value does not fit (value is then "").
bool chat_cookie_get (const char *header, const char *name, char *value, size_t size);

#ifdef __cplusplus
}
#endif

#endif
