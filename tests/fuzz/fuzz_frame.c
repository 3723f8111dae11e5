/*  =========================================================================
    fuzz_frame.c - libFuzzer harness for chat_frame_parse (actors/chat_parse.c)

    The input is one WebSocket text frame, any bytes. Each frame is parsed
    twice: from user 1 with the default 4096-byte content limit, and from
    user 2 with a 16-byte limit, so that both the self checks and the
    content limit are reached by short inputs. After each parse the result
    must hold together:
      - kind is one of chat_frame_kind_t; error/message are set exactly for
        ERROR and MESSAGE_FAILED, with a code the protocol names
      - request_id is "" or valid JSON; "" when the frame is not an object
      - the frame is bad_json exactly when jansson does not read an object
      - PRIVATE_MESSAGE: content passes chat_content_valid with the limit,
        client_id is valid UTF-8 of at most 64 bytes with no NUL, the
        recipient is a valid id and not the sender
      - TYPING/IGNORE: the recipient is another user / the sender
      - LOAD_HISTORY: limit 1..100; SYNC: limit 1..1000; ids >= 0 (< 2^63)
    Run with tests/fuzz/run.sh.
    =========================================================================
*/

#include "chat_parse.h"
#include "chat_wire.h"
#include "fuzz_check.h"
#include <string.h>

#define S_ID_MAX UINT64_C (9223372036854775807)

static bool
s_streq (const char *a, const char *b)
{
    return a && b && strcmp (a, b) == 0;
}

static void
s_check (const uint8_t *data, size_t size, uint64_t user_id, size_t max_content)
{
    chat_frame_t frame;
    chat_frame_parse ((const char *) data, size, user_id, max_content, &frame);
    FUZZ_CHECK (frame.kind >= CHAT_FRAME_PRIVATE_MESSAGE && frame.kind <= CHAT_FRAME_IGNORE,
                "kind %d", (int) frame.kind);
    FUZZ_CHECK (frame.request_id, "request_id is NULL");
    FUZZ_CHECK (frame.client_id, "client_id is NULL");

    //  The same bytes through jansson alone: bad_json exactly for non-objects
    json_error_t error;
    json_t *root = json_loadb ((const char *) data, size, JSON_ALLOW_NUL, &error);
    bool is_object = json_is_object (root);
    json_decref (root);
    FUZZ_CHECK (is_object == !(frame.kind == CHAT_FRAME_ERROR && s_streq (frame.error, "bad_json")),
                "object %d but kind %d error %s", is_object, (int) frame.kind,
                frame.error ? frame.error : "-");

    //  request_id: "" or one JSON value
    if (*frame.request_id) {
        FUZZ_CHECK (is_object, "request_id %s for a non-object", frame.request_id);
        json_t *id = json_loads (frame.request_id, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
        FUZZ_CHECK (id, "request_id %s does not parse: %s", frame.request_id, error.text);
        json_decref (id);
    }

    switch (frame.kind) {
        case CHAT_FRAME_ERROR:
            FUZZ_CHECK (s_streq (frame.error, "bad_json") || s_streq (frame.error, "unknown_type")
                    ||  s_streq (frame.error, "bad_request"), "error %s", frame.error ? frame.error : "-");
            FUZZ_CHECK (frame.message && *frame.message, "no message");
            break;
        case CHAT_FRAME_MESSAGE_FAILED:
            FUZZ_CHECK (s_streq (frame.error, "invalid_content") || s_streq (frame.error, "invalid_recipient"),
                        "error %s", frame.error ? frame.error : "-");
            FUZZ_CHECK (frame.message && *frame.message, "no message");
            if (s_streq (frame.error, "invalid_recipient")) {
                FUZZ_CHECK (frame.to_user_id == user_id, "invalid_recipient to %llu",
                            (unsigned long long) frame.to_user_id);
                FUZZ_CHECK (chat_content_valid (frame.content, frame.content_len, max_content),
                            "invalid_recipient with invalid content");
            }
            else
                FUZZ_CHECK (!chat_content_valid (frame.content, frame.content_len, max_content),
                            "invalid_content for valid content");
            FUZZ_CHECK (frame.client_id_len <= 64, "client_id_len %zu", frame.client_id_len);
            FUZZ_CHECK (strlen (frame.client_id) == frame.client_id_len, "client_id holds a NUL");
            break;
        case CHAT_FRAME_PRIVATE_MESSAGE:
            FUZZ_CHECK (!frame.error && !frame.message, "error set");
            FUZZ_CHECK (frame.content, "no content");
            FUZZ_CHECK (chat_content_valid (frame.content, frame.content_len, max_content),
                        "content of %zu bytes is not valid", frame.content_len);
            FUZZ_CHECK (frame.content_len >= 1 && frame.content_len <= max_content,
                        "content_len %zu", frame.content_len);
            FUZZ_CHECK (frame.client_id_len <= 64, "client_id_len %zu", frame.client_id_len);
            FUZZ_CHECK (strlen (frame.client_id) == frame.client_id_len, "client_id holds a NUL");
            FUZZ_CHECK (chat_utf8_valid (frame.client_id, frame.client_id_len), "client_id not UTF-8");
            FUZZ_CHECK (frame.to_user_id >= 1 && frame.to_user_id <= S_ID_MAX && frame.to_user_id != user_id,
                        "to_user_id %llu", (unsigned long long) frame.to_user_id);
            break;
        case CHAT_FRAME_TYPING:
        case CHAT_FRAME_IGNORE:
            FUZZ_CHECK (!frame.error && !frame.message, "error set");
            FUZZ_CHECK (frame.to_user_id >= 1 && frame.to_user_id <= S_ID_MAX, "to_user_id %llu",
                        (unsigned long long) frame.to_user_id);
            FUZZ_CHECK ((frame.to_user_id == user_id) == (frame.kind == CHAT_FRAME_IGNORE),
                        "typing to %llu from %llu is kind %d", (unsigned long long) frame.to_user_id,
                        (unsigned long long) user_id, (int) frame.kind);
            break;
        case CHAT_FRAME_LOAD_HISTORY:
            FUZZ_CHECK (!frame.error && !frame.message, "error set");
            FUZZ_CHECK (frame.limit >= 1 && frame.limit <= 100, "limit %llu", (unsigned long long) frame.limit);
            FUZZ_CHECK (frame.with_user_id >= 1 && frame.with_user_id <= S_ID_MAX, "with_user_id");
            FUZZ_CHECK (frame.before_id <= S_ID_MAX, "before_id");
            break;
        case CHAT_FRAME_SYNC:
            FUZZ_CHECK (!frame.error && !frame.message, "error set");
            FUZZ_CHECK (frame.limit >= 1 && frame.limit <= 1000, "limit %llu", (unsigned long long) frame.limit);
            FUZZ_CHECK (frame.after_id <= S_ID_MAX, "after_id");
            break;
        case CHAT_FRAME_MARK_READ:
            FUZZ_CHECK (!frame.error && !frame.message, "error set");
            FUZZ_CHECK (frame.with_user_id >= 1 && frame.with_user_id <= S_ID_MAX, "with_user_id");
            FUZZ_CHECK (frame.up_to_id <= S_ID_MAX, "up_to_id");
            break;
    }
    chat_frame_release (&frame);
    FUZZ_CHECK (!frame.root && !frame.request_id, "release left pointers");
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    s_check (data, size, 1, 4096);
    s_check (data, size, 2, 16);
    return 0;
}
