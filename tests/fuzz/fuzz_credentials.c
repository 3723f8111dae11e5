/*  =========================================================================
    fuzz_credentials.c - libFuzzer harness for chat_credentials_parse
    (actors/chat_parse.c)

    The input is a register/login request body, any bytes. Checks: success
    exactly when jansson reads an object whose nickname and password are
    strings; on success the pointers and lengths are those strings' (NULs
    included); on failure the error is the first that applies of bad_json,
    invalid_nickname, invalid_password. Run with tests/fuzz/run.sh.
    =========================================================================
*/

#include "chat_parse.h"
#include "fuzz_check.h"
#include <string.h>

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    const char *nickname = NULL, *password = NULL, *error = "unset";
    size_t nickname_len = 0, password_len = 0;
    json_t *root = chat_credentials_parse ((const char *) data, size, &nickname, &nickname_len,
                                           &password, &password_len, &error);
    //  The expected outcome, straight from jansson
    json_error_t json_error;
    json_t *ref = json_loadb ((const char *) data, size, JSON_ALLOW_NUL, &json_error);
    json_t *nick = json_object_get (ref, "nickname");
    json_t *pass = json_object_get (ref, "password");
    const char *expected = !json_is_object (ref) ? "bad_json"
                         : !json_is_string (nick) ? "invalid_nickname"
                         : !json_is_string (pass) ? "invalid_password"
                         : NULL;
    if (expected) {
        FUZZ_CHECK (!root, "parsed although %s", expected);
        FUZZ_CHECK (error && strcmp (error, expected) == 0, "error %s, expected %s",
                    error ? error : "(null)", expected);
    }
    else {
        FUZZ_CHECK (root, "refused with %s", error ? error : "(null)");
        FUZZ_CHECK (!error, "error %s on success", error);
        FUZZ_CHECK (nickname && password, "NULL strings");
        FUZZ_CHECK (nickname_len == json_string_length (nick)
                &&  memcmp (nickname, json_string_value (nick), nickname_len) == 0, "nickname differs");
        FUZZ_CHECK (password_len == json_string_length (pass)
                &&  memcmp (password, json_string_value (pass), password_len) == 0, "password differs");
        FUZZ_CHECK (nickname [nickname_len] == 0 && password [password_len] == 0, "not terminated");
        json_decref (root);
    }
    json_decref (ref);
    return 0;
}
