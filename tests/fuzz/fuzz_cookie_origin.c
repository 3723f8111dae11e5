/*  =========================================================================
    fuzz_cookie_origin.c - libFuzzer harness for chat_cookie_get and
    chat_origin_allowed (actors/chat_parse.c)

    Input layout: the first byte is the size of the cookie value buffer
    (0..255); the rest is split at newlines into up to five fields:
        cookie header \n cookie name \n origin \n host \n allowed origins
    A field that is not there is passed as NULL (the name as "session").
    Both functions are compared with a plain reference implementation
    written differently (strsep/strtok on a copy), and their outputs are
    checked: a found cookie is non-empty, fits, holds no ';', comes from the
    header, and starts or ends with a space or tab only when it was quoted. Run with tests/fuzz/run.sh.
    =========================================================================
*/

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "chat_parse.h"
#include "fuzz_check.h"
#include <string.h>

#define S_FIELDS 5

static char *
s_trim (char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    size_t len = strlen (text);
    while (len && (text [len - 1] == ' ' || text [len - 1] == '\t'))
        text [--len] = 0;
    return text;
}

//  Reference cookie reader: same contract, different code
static bool
s_ref_cookie (const char *header, const char *name, char *value, size_t size)
{
    if (!header || !*name || !size)
        return false;
    char *copy = strdup (header);
    FUZZ_CHECK (copy, "out of memory");
    bool found = false;
    char *rest = copy, *pair;
    while ((pair = strsep (&rest, ";"))) {
        char *equals = strchr (pair, '=');
        if (!equals)
            continue;
        *equals = 0;
        if (strcmp (s_trim (pair), name) != 0)
            continue;
        char *text = s_trim (equals + 1);
        size_t len = strlen (text);
        if (len >= 2 && text [0] == '"' && text [len - 1] == '"') {
            text [len - 1] = 0;
            text++;
            len -= 2;
        }
        if (len > 0 && len < size) {
            memcpy (value, text, len + 1);
            found = true;
        }
        break;                          //  The first one decides
    }
    free (copy);
    return found;
}

//  Reference origin check
static bool
s_ref_origin (const char *origin, const char *host, const char *allowed)
{
    if (!origin)
        return true;
    if (host && *host) {
        char *own = NULL;
        FUZZ_CHECK (asprintf (&own, "http://%s", host) > 0, "out of memory");
        bool same = strcmp (own, origin) == 0;
        free (own);
        if (same)
            return true;
    }
    if (!allowed)
        return false;
    char *copy = strdup (allowed);
    FUZZ_CHECK (copy, "out of memory");
    bool found = false;
    char *save = NULL;
    for (char *token = strtok_r (copy, " \t", &save); token && !found; token = strtok_r (NULL, " \t", &save))
        found = strcmp (token, origin) == 0;
    free (copy);
    return found;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t value_size = data [0];
    //  Split the rest into NUL-terminated fields
    char *text = (char *) malloc (size);
    FUZZ_CHECK (text, "out of memory");
    memcpy (text, data + 1, size - 1);
    text [size - 1] = 0;
    char *field [S_FIELDS] = { NULL };
    char *rest = text;
    for (int i = 0; i < S_FIELDS && rest; i++)
        field [i] = strsep (&rest, "\n");

    //  Cookie
    const char *name = field [1] ? field [1] : "session";
    char value [256], ref [256];
    memset (value, 'x', sizeof value);
    memset (ref, 0, sizeof ref);
    bool found = chat_cookie_get (field [0], name, value, value_size);
    bool ref_found = s_ref_cookie (field [0], name, ref, value_size);
    FUZZ_CHECK (found == ref_found, "found %d, reference %d", found, ref_found);
    if (found) {
        size_t len = strnlen (value, value_size);
        FUZZ_CHECK (len > 0 && len < value_size, "length %zu for size %zu", len, value_size);
        FUZZ_CHECK (strcmp (value, ref) == 0, "value [%s], reference [%s]", value, ref);
        FUZZ_CHECK (!strchr (value, ';'), "value holds ';'");
        FUZZ_CHECK (strstr (field [0], value), "value not from the header");
        //  Spaces at either end survive only inside quotes
        if (value [0] == ' ' || value [0] == '\t' || value [len - 1] == ' ' || value [len - 1] == '\t') {
            char quoted [260];
            snprintf (quoted, sizeof quoted, "\"%s\"", value);
            FUZZ_CHECK (strstr (field [0], quoted), "value [%s] not trimmed", value);
        }
    }
    else
    if (value_size)
        FUZZ_CHECK (value [0] == 0, "value not emptied");
    //  Bytes past the buffer are never written
    for (size_t i = value_size; i < sizeof value; i++)
        FUZZ_CHECK (value [i] == 'x', "wrote past size at %zu", i);

    //  Origin
    bool allowed = chat_origin_allowed (field [2], field [3], field [4]);
    bool ref_allowed = s_ref_origin (field [2], field [3], field [4]);
    FUZZ_CHECK (allowed == ref_allowed, "allowed %d, reference %d", allowed, ref_allowed);
    free (text);
    return 0;
}
