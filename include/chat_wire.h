/*  =========================================================================
    chat_wire.h - client-facing formats shared by the actors

    The pieces of the client protocol (docs/protocol.md) that more than one
    actor produces: timestamps, the message object, and the validation
    rules for nicknames, passwords and message content. Pure functions; no
    state.
    =========================================================================
*/

#ifndef CHAT_WIRE_H_INCLUDED
#define CHAT_WIRE_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "chat_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

//  Current time in milliseconds since the epoch (wall clock, UTC)
int64_t chat_now_ms (void);

//  RFC 3339 UTC with milliseconds: "2026-11-25T17:00:00.123Z" (24 chars + NUL)
#define CHAT_TIMESTAMP_SIZE 32
void chat_timestamp_format (int64_t ms, char *buf, size_t size);
//  Parse the same format back; returns -1 if malformed
int chat_timestamp_parse (const char *text, int64_t *ms);

//  The message object of the protocol:
//  {"message_id","from_user_id","to_user_id","nickname","content","timestamp","is_read"}
json_t *chat_message_json (const chat_message_t *message);

//  A small JSON writer for what the server sends on hot paths (frames,
//  history pages): one growable buffer, no allocation per value. Keys come
//  from our code; strings are escaped (", \\ and control characters), other
//  UTF-8 bytes pass through as they are.
typedef struct {
    char *data;                         //  The text so far (not NUL-terminated)
    size_t len;                         //  Its length
    size_t cap;                         //  Capacity of data
} chat_json_t;

void chat_json_release (chat_json_t *json);
void chat_json_raw (chat_json_t *json, const char *text, size_t len);
void chat_json_lit (chat_json_t *json, const char *text);
void chat_json_string (chat_json_t *json, const char *text, size_t len);
void chat_json_u64 (chat_json_t *json, uint64_t value);
//  Write value in decimal backwards, ending just before end (at most 20
//  digits); returns the first digit. No snprintf: numbers are on hot paths
char *chat_u64_digits (uint64_t value, char *end);
//  "key": preceded by a comma unless it opens the object
void chat_json_key (chat_json_t *json, const char *key);
//  The message object, as chat_message_json builds it
void chat_json_message (chat_json_t *json, const chat_message_t *message);

//  3 to 32 characters of A-Z a-z 0-9 _ . -
bool chat_nickname_valid (const char *nickname);
//  8 to 256 bytes
bool chat_password_valid (const char *password, size_t len);
//  Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF)
bool chat_utf8_valid (const char *text, size_t len);
//  1 to max_bytes of valid UTF-8, not only white space, no control
//  characters other than tab, line feed and carriage return
bool chat_content_valid (const char *content, size_t len, size_t max_bytes);

#ifdef __cplusplus
}
#endif

#endif
