/*  =========================================================================
    chat_parse.c - parse what clients send (include/chat_parse.h)

    Used by ws-front for every WebSocket frame, API body, Origin and Cookie
    header, and by the fuzz harnesses (tests/fuzz/). Owns no state.
    =========================================================================
*/

#include "chat_parse.h"
#include "chat_wire.h"
#include <stdlib.h>
#include <string.h>

//  An id member: a JSON integer >= min. Returns 0 if present and valid,
//  1 if absent (or null), -1 if of the wrong type or range.
static int
s_member_id (json_t *object, const char *key, json_int_t min, uint64_t *value)
{
    json_t *member = json_object_get (object, key);
    if (!member || json_is_null (member))
        return 1;
    if (!json_is_integer (member) || json_integer_value (member) < min)
        return -1;
    *value = (uint64_t) json_integer_value (member);
    return 0;
}

static void
s_answer (chat_frame_t *frame, chat_frame_kind_t kind, const char *error, const char *message)
{
    frame->kind = kind;
    frame->error = error;
    frame->message = message;
}

static void
s_parse_private_message (chat_frame_t *frame, uint64_t user_id, size_t max_content_bytes)
{
    json_t *content = json_object_get (frame->root, "content");
    json_t *client_id = json_object_get (frame->root, "client_id");
    if (json_is_null (client_id))
        client_id = NULL;
    if (s_member_id (frame->root, "to_user_id", 1, &frame->to_user_id) != 0
    ||  !json_is_string (content)
    ||  (client_id && (!json_is_string (client_id) || json_string_length (client_id) > 64
                       //  Empty would read as "no client_id" inside chatd
                       ||  json_string_length (client_id) == 0
                       //  The backends keep client_id as a C string: with a
                       //  NUL inside, two ids would compare equal
                       ||  strlen (json_string_value (client_id)) != json_string_length (client_id)))) {
        s_answer (frame, CHAT_FRAME_ERROR, "bad_request",
                  "private_message needs to_user_id (integer), content (string) and optionally client_id (string of 1 to 64 bytes, no NUL)");
        return;
    }
    frame->content = json_string_value (content);
    frame->content_len = json_string_length (content);
    if (client_id) {
        frame->client_id = json_string_value (client_id);
        frame->client_id_len = json_string_length (client_id);
    }
    if (!chat_content_valid (frame->content, frame->content_len, max_content_bytes))
        s_answer (frame, CHAT_FRAME_MESSAGE_FAILED, "invalid_content",
                  "content must be 1 to max_message_bytes bytes of UTF-8 text, not only white space, without control characters");
    else
    if (frame->to_user_id == user_id)
        s_answer (frame, CHAT_FRAME_MESSAGE_FAILED, "invalid_recipient", "you cannot send a message to yourself");
    else
        frame->kind = CHAT_FRAME_PRIVATE_MESSAGE;
}

static void
s_parse_typing (chat_frame_t *frame, uint64_t user_id)
{
    json_t *is_typing = json_object_get (frame->root, "is_typing");
    if (s_member_id (frame->root, "to_user_id", 1, &frame->to_user_id) != 0 || !json_is_boolean (is_typing))
        s_answer (frame, CHAT_FRAME_ERROR, "bad_request", "typing needs to_user_id (integer) and is_typing (boolean)");
    else {
        frame->is_typing = json_is_true (is_typing);
        frame->kind = frame->to_user_id == user_id ? CHAT_FRAME_IGNORE : CHAT_FRAME_TYPING;
    }
}

static void
s_parse_load_history (chat_frame_t *frame)
{
    frame->limit = 50;
    if (s_member_id (frame->root, "with_user_id", 1, &frame->with_user_id) != 0
    ||  s_member_id (frame->root, "before_id", 0, &frame->before_id) < 0
    ||  s_member_id (frame->root, "limit", 1, &frame->limit) < 0)
        s_answer (frame, CHAT_FRAME_ERROR, "bad_request",
                  "load_history needs with_user_id (integer) and optionally before_id (integer >= 0) and limit (integer >= 1)");
    else {
        if (frame->limit > 100)
            frame->limit = 100;
        frame->kind = CHAT_FRAME_LOAD_HISTORY;
    }
}

static void
s_parse_sync (chat_frame_t *frame)
{
    frame->limit = 500;
    if (s_member_id (frame->root, "after_id", 0, &frame->after_id) < 0
    ||  s_member_id (frame->root, "limit", 1, &frame->limit) < 0)
        s_answer (frame, CHAT_FRAME_ERROR, "bad_request",
                  "sync takes optionally after_id (integer >= 0) and limit (integer >= 1)");
    else {
        if (frame->limit > 1000)
            frame->limit = 1000;
        frame->kind = CHAT_FRAME_SYNC;
    }
}

static void
s_parse_mark_read (chat_frame_t *frame)
{
    if (s_member_id (frame->root, "with_user_id", 1, &frame->with_user_id) != 0
    ||  s_member_id (frame->root, "up_to_id", 0, &frame->up_to_id) != 0)
        s_answer (frame, CHAT_FRAME_ERROR, "bad_request", "mark_read needs with_user_id and up_to_id (integers)");
    else
        frame->kind = CHAT_FRAME_MARK_READ;
}

void
chat_frame_parse (const char *data, size_t len, uint64_t user_id,
                  size_t max_content_bytes, chat_frame_t *frame)
{
    memset (frame, 0, sizeof *frame);
    frame->client_id = "";
    json_error_t error;
    //  NUL is allowed by the parser so that content holding one is refused
    //  as invalid_content, not as bad_json
    frame->root = json_loadb (data, len, JSON_ALLOW_NUL, &error);
    if (!json_is_object (frame->root)) {
        frame->request_id = strdup ("");
        s_answer (frame, CHAT_FRAME_ERROR, "bad_json", "each frame must be one JSON object");
        return;
    }
    json_t *request_id = json_object_get (frame->root, "request_id");
    frame->request_id = request_id ? json_dumps (request_id, JSON_ENCODE_ANY | JSON_COMPACT) : strdup ("");
    json_t *type = json_object_get (frame->root, "type");
    //  A type with a NUL inside ("sync\u0000x") is no known type
    const char *name = json_is_string (type)
                    && strlen (json_string_value (type)) == json_string_length (type)
                     ? json_string_value (type) : "";
    if (strcmp (name, "private_message") == 0)
        s_parse_private_message (frame, user_id, max_content_bytes);
    else
    if (strcmp (name, "typing") == 0)
        s_parse_typing (frame, user_id);
    else
    if (strcmp (name, "load_history") == 0)
        s_parse_load_history (frame);
    else
    if (strcmp (name, "sync") == 0)
        s_parse_sync (frame);
    else
    if (strcmp (name, "mark_read") == 0)
        s_parse_mark_read (frame);
    else
        s_answer (frame, CHAT_FRAME_ERROR, "unknown_type", "unknown or missing type");
}

void
chat_frame_release (chat_frame_t *frame)
{
    json_decref (frame->root);
    free (frame->request_id);
    memset (frame, 0, sizeof *frame);
}

json_t *
chat_credentials_parse (const char *body, size_t len,
                        const char **nickname, size_t *nickname_len,
                        const char **password, size_t *password_len,
                        const char **error)
{
    json_error_t json_error;
    json_t *root = json_loadb (body, len, JSON_ALLOW_NUL, &json_error);
    json_t *nick = json_object_get (root, "nickname");
    json_t *pass = json_object_get (root, "password");
    *error = !json_is_object (root) ? "bad_json"
           : !json_is_string (nick) ? "invalid_nickname"
           : !json_is_string (pass) ? "invalid_password"
           : NULL;
    if (*error) {
        json_decref (root);
        return NULL;
    }
    *nickname = json_string_value (nick);
    *nickname_len = json_string_length (nick);
    *password = json_string_value (pass);
    *password_len = json_string_length (pass);
    return root;
}

bool
chat_origin_allowed (const char *origin, const char *host, const char *allowed)
{
    if (!origin)
        return true;
    size_t origin_len = strlen (origin);
    if (host && *host && strncmp (origin, "http://", 7) == 0 && strcmp (origin + 7, host) == 0)
        return true;
    for (const char *p = allowed ? allowed : ""; *p; ) {
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn (p, " \t");
        if (n && n == origin_len && memcmp (p, origin, n) == 0)
            return true;
        p += n;
    }
    return false;
}

bool
chat_cookie_get (const char *header, const char *name, char *value, size_t size)
{
    if (value && size)
        *value = 0;
    if (!header || !name || !*name || !value || !size)
        return false;
    size_t name_len = strlen (name);
    const char *p = header;
    while (*p) {
        //  One pair: up to the next ';' or the end
        size_t pair_len = strcspn (p, ";");
        const char *pair = p;
        p += pair_len;
        if (*p == ';')
            p++;
        const char *equals = memchr (pair, '=', pair_len);
        if (!equals)
            continue;
        //  Its name, without the spaces around it
        const char *key = pair;
        const char *key_end = equals;
        while (key < key_end && (*key == ' ' || *key == '\t'))
            key++;
        while (key_end > key && (key_end [-1] == ' ' || key_end [-1] == '\t'))
            key_end--;
        if ((size_t) (key_end - key) != name_len || memcmp (key, name, name_len) != 0)
            continue;
        //  The first pair with the name is the answer, whatever its value
        const char *text = equals + 1;
        const char *text_end = pair + pair_len;
        while (text < text_end && (*text == ' ' || *text == '\t'))
            text++;
        while (text_end > text && (text_end [-1] == ' ' || text_end [-1] == '\t'))
            text_end--;
        if (text_end - text >= 2 && *text == '"' && text_end [-1] == '"') {
            text++;
            text_end--;
        }
        size_t len = (size_t) (text_end - text);
        if (len == 0 || len >= size)
            return false;
        memcpy (value, text, len);
        value [len] = 0;
        return true;
    }
    return false;
}
