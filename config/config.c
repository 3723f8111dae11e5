/*  =========================================================================
    config.c - chatd's configuration (include/chat_config.h)

    Owns the one table of every configuration key: its section, name, type,
    place in chat_config_t, bounds, allowed words and default. Defaults, the
    INI file (read with inih), the CHAT_<SECTION>_<KEY> environment overrides
    and validation are all driven by that table; there is no per-key code.
    Talks to no actor: main calls chat_config_load once and copies the struct.
    chat_config_load_string reads INI text from memory through the same
    reader, for tests and the fuzz harness (tests/fuzz/fuzz_config.c).
    =========================================================================
*/

#include "chat_config.h"
#include <ini.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum {
    S_STRING,                           //  Text, up to the field's size - 1
    S_WORD,                             //  One of a list of words
    S_INT,                              //  Integer between min and max
    S_NUMBER                            //  Number above min, at most max
} s_type_t;

typedef struct {
    const char *section;                //  INI section
    const char *key;                    //  INI key
    s_type_t type;                      //  How the value is parsed
    size_t offset;                      //  Where it lives in chat_config_t
    size_t size;                        //  Size of the field (strings)
    double min;                         //  Least value (int), bound (number),
                                        //  least length (string)
    double max;                         //  Greatest value (int, number)
    const char *words;                  //  Allowed words, space-separated
    const char *fallback;               //  Default, as INI text
} s_key_t;

#define S_FIELD(sec, name)      offsetof (chat_config_t, sec##_##name), \
                                sizeof (((chat_config_t *) 0)->sec##_##name)
#define S_STR(sec, name, minlen, def) \
    { #sec, #name, S_STRING, S_FIELD (sec, name), minlen, 0, NULL, def }
#define S_WRD(sec, name, words, def) \
    { #sec, #name, S_WORD, S_FIELD (sec, name), 0, 0, words, def }
#define S_INT(sec, name, lo, hi, def) \
    { #sec, #name, S_INT, S_FIELD (sec, name), lo, hi, NULL, def }
#define S_NUM(sec, name, above, hi, def) \
    { #sec, #name, S_NUMBER, S_FIELD (sec, name), above, hi, NULL, def }

//  Every key. config/chatd.ini documents each one; keep the two in step.
static const s_key_t s_keys [] = {
    S_STR (server, bind, 1, "127.0.0.1"),
    S_INT (server, port, 1, 65535, "8080"),
    S_STR (server, tap, 0, ""),
    S_WRD (server, log_level, "error warning info debug", "info"),

    S_WRD (storage, backend, "sqlite postgres", "sqlite"),
    S_INT (storage, batch_max, 1, 1000000, "1024"),

    S_STR (sqlite, path, 1, "chat.db"),
    S_WRD (sqlite, synchronous, "full normal", "full"),

    S_STR (postgres, conninfo, 0, ""),
    S_INT (postgres, reconnect_max_ms, 1, 3600000, "5000"),

    S_INT (auth, session_ttl_s, 1, INT_MAX, "2592000"),
    S_INT (auth, password_opslimit, 1, INT_MAX, "2"),
    S_INT (auth, password_memlimit_kib, 8, INT_MAX, "65536"),

    S_NUM (rate_limit, messages_per_second, 0, 1000000, "5"),
    S_INT (rate_limit, burst, 1, INT_MAX, "20"),
    S_INT (rate_limit, close_after, 1, INT_MAX, "10"),
    S_NUM (rate_limit, typing_per_second, 0, 1000000, "3"),
    S_INT (rate_limit, typing_burst, 1, INT_MAX, "6"),
    S_INT (rate_limit, login_slow_after, 1, INT_MAX, "3"),
    S_INT (rate_limit, login_max_failures, 1, INT_MAX, "10"),
    S_INT (rate_limit, login_window_s, 1, INT_MAX, "900"),

    S_STR (http, allowed_origins, 0, ""),
    S_INT (http, max_body_bytes, 1024, 67108864, "16384"),
    S_INT (http, request_timeout_ms, 1, 3600000, "10000"),
    S_INT (http, handshake_timeout_s, 1, 3600, "10"),
    S_INT (http, idle_timeout_s, 1, 3600, "30"),

    S_INT (limits, max_message_bytes, 1, 65536, "4096"),
    S_INT (limits, max_frame_bytes, 1024, 67108864, "65536"),
    S_INT (limits, max_connections, 1, 1000000, "19000"),
    S_INT (limits, max_connections_per_user, 1, 1000000, "16"),
    S_INT (limits, max_connections_per_address, 1, 1000000, "1000"),
    S_INT (limits, max_queue_bytes, 1024, INT_MAX, "1048576"),
    S_INT (limits, max_inflight_per_connection, 1, 1000000, "32"),

    S_INT (websocket, ping_interval_s, 1, 65535, "54"),
    S_INT (websocket, pong_timeout_s, 1, 65535, "60"),
    S_INT (websocket, presence_delay_ms, 0, 10000, "500"),
};
#define S_KEY_COUNT (sizeof s_keys / sizeof s_keys [0])

//  Longest value quoted back in an error message
#define S_QUOTE_MAX 64


//  --------------------------------------------------------------------------
//  Write the one-line error "[section] key (from VAR): what"

static void __attribute__ ((format (printf, 6, 7)))
s_error (char *error, size_t size, const char *section, const char *key,
         const char *origin, const char *format, ...)
{
    if (!error || !size)
        return;
    int n = snprintf (error, size, "[%s] %s%s%s%s: ", section, key,
                      origin ? " (from " : "", origin ? origin : "", origin ? ")" : "");
    if (n >= 0 && (size_t) n < size) {
        va_list args;
        va_start (args, format);
        vsnprintf (error + n, size - (size_t) n, format, args);
        va_end (args);
    }
}

static const s_key_t *
s_key_find (const char *section, const char *key, bool *section_known)
{
    *section_known = false;
    for (size_t i = 0; i < S_KEY_COUNT; i++)
        if (strcmp (s_keys [i].section, section) == 0) {
            *section_known = true;
            if (strcmp (s_keys [i].key, key) == 0)
                return &s_keys [i];
        }
    return NULL;
}

//  Is word (of length len) one of the space-separated words? Returns the
//  canonical spelling's start, or NULL.
static const char *
s_word_find (const char *words, const char *word)
{
    size_t len = strlen (word);
    const char *p = words;
    while (*p) {
        size_t n = strcspn (p, " ");
        if (n == len && n > 0 && strncasecmp (p, word, n) == 0)
            return p;
        p += n;
        while (*p == ' ')
            p++;
    }
    return NULL;
}

//  "a b c" -> "a, b, c" for error messages
static void
s_words_list (const char *words, char *buf, size_t size)
{
    size_t used = 0;
    for (const char *p = words; *p && used + 1 < size; p++) {
        if (*p == ' ' && used + 2 < size) {
            buf [used++] = ',';
            buf [used++] = ' ';
        }
        else
        if (*p != ' ')
            buf [used++] = *p;
    }
    buf [used] = 0;
}

//  Parse and store one value for the key. origin names the environment
//  variable it came from, or is NULL.
static int
s_key_apply (chat_config_t *cfg, const s_key_t *k, const char *value,
             const char *origin, char *error, size_t size)
{
    char *field = (char *) cfg + k->offset;
    if (k->type == S_STRING || k->type == S_WORD) {
        //  A value may be written in double quotes; they are not part of it
        size_t len = strlen (value);
        if (len >= 2 && value [0] == '"' && value [len - 1] == '"') {
            value++;
            len -= 2;
        }
        if (k->type == S_WORD) {
            char word [64];
            const char *found = NULL;
            if (len < sizeof word) {
                memcpy (word, value, len);
                word [len] = 0;
                found = s_word_find (k->words, word);
            }
            if (!found) {
                char list [128];
                s_words_list (k->words, list, sizeof list);
                s_error (error, size, k->section, k->key, origin,
                         "\"%.*s\" is not one of %s",
                         (int) (len > S_QUOTE_MAX ? S_QUOTE_MAX : len), value, list);
                return -1;
            }
            size_t n = strcspn (found, " ");
            assert (n < k->size);
            memcpy (field, found, n);
            field [n] = 0;
            return 0;
        }
        if (len >= k->size) {
            s_error (error, size, k->section, k->key, origin,
                     "value is longer than %zu bytes", k->size - 1);
            return -1;
        }
        if (len < (size_t) k->min) {
            s_error (error, size, k->section, k->key, origin, "value must not be empty");
            return -1;
        }
        memcpy (field, value, len);
        field [len] = 0;
        return 0;
    }
    //  Numbers: the whole text must be the number, nothing before or after
    char *end = NULL;
    errno = 0;
    if (k->type == S_INT) {
        long number = 0;
        bool valid = *value && !isspace ((unsigned char) *value);
        if (valid) {
            number = strtol (value, &end, 10);
            valid = end != value && *end == 0;
        }
        if (!valid) {
            s_error (error, size, k->section, k->key, origin,
                     "\"%.*s\" is not an integer", S_QUOTE_MAX, value);
            return -1;
        }
        if (errno == ERANGE || number < (long) k->min || number > (long) k->max) {
            if (k->max == INT_MAX)
                s_error (error, size, k->section, k->key, origin,
                         "\"%.*s\" is not an integer of at least %ld",
                         S_QUOTE_MAX, value, (long) k->min);
            else
                s_error (error, size, k->section, k->key, origin,
                         "\"%.*s\" is not between %ld and %ld",
                         S_QUOTE_MAX, value, (long) k->min, (long) k->max);
            return -1;
        }
        int stored = (int) number;
        memcpy (field, &stored, sizeof stored);
        return 0;
    }
    assert (k->type == S_NUMBER);
    double number = 0;
    bool valid = *value && !isspace ((unsigned char) *value);
    if (valid) {
        number = strtod (value, &end);
        valid = end != value && *end == 0 && isfinite (number);
    }
    if (!valid) {
        s_error (error, size, k->section, k->key, origin,
                 "\"%.*s\" is not a number", S_QUOTE_MAX, value);
        return -1;
    }
    if (!(number > k->min) || number > k->max) {
        s_error (error, size, k->section, k->key, origin,
                 "\"%.*s\" is not a number above %g and at most %g",
                 S_QUOTE_MAX, value, k->min, k->max);
        return -1;
    }
    memcpy (field, &number, sizeof number);
    return 0;
}


//  --------------------------------------------------------------------------
//  Fill cfg with the built-in defaults.

void
chat_config_defaults (chat_config_t *cfg)
{
    assert (cfg);
    memset (cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < S_KEY_COUNT; i++) {
        int rc = s_key_apply (cfg, &s_keys [i], s_keys [i].fallback, NULL, NULL, 0);
        assert (rc == 0);       //  A default that does not parse is a bug
        (void) rc;
    }
}


//  --------------------------------------------------------------------------
//  Apply one key. Returns -1 and writes the one-line error for an unknown
//  section/key or a bad value.

int
chat_config_set (chat_config_t *cfg, const char *section, const char *key,
                 const char *value, char *error, size_t size)
{
    assert (cfg);
    assert (section);
    assert (key);
    assert (value);
    bool section_known;
    const s_key_t *k = s_key_find (section, key, &section_known);
    if (!k) {
        s_error (error, size, section, key, NULL, "%s",
                 section_known ? "unknown key" : "unknown section");
        return -1;
    }
    return s_key_apply (cfg, k, value, NULL, error, size);
}


//  --------------------------------------------------------------------------
//  Reading INI text, from a file or from memory. inih reads lines with our
//  reader so that we know which line each key is on, and can refuse a line
//  too long for inih's line buffer rather than have it split in two, and
//  lets keys be indented. Both
//  sources go through the same reader and the same error reporting.

typedef struct {
    FILE *file;                         //  The open config file, or NULL
    const char *text;                   //  Else the rest of the INI text
    chat_config_t *cfg;                 //  Being filled
    int lineno;                         //  Lines handed to inih so far
    char *line;                         //  getline buffer
    size_t line_cap;                    //  Its capacity
    int read_errno;                     //  errno of a read error, or 0
    int too_long_line;                  //  First line too long, or 0
    int too_long_max;                   //  Longest line inih takes
    int error_line;                     //  Line of the first bad key, or 0
    char error [256];                   //  Its error
} s_reader_t;

//  The next line with its line end, from the file or the text: points
//  *line at it and returns its length, or -1 at the end or on a read error
static ssize_t
s_reader_next (s_reader_t *self, const char **line)
{
    if (self->file) {
        errno = 0;
        ssize_t len = getline (&self->line, &self->line_cap, self->file);
        if (len < 0 && ferror (self->file))
            self->read_errno = errno ? errno : EIO;
        *line = self->line;
        return len;
    }
    if (*self->text == 0)
        return -1;
    size_t len = strcspn (self->text, "\n");
    if (self->text [len] == '\n')
        len++;
    *line = self->text;
    self->text += len;
    return (ssize_t) len;
}

static char *
s_reader_gets (char *str, int num, void *stream)
{
    s_reader_t *self = (s_reader_t *) stream;
    const char *line;
    ssize_t len = s_reader_next (self, &line);
    if (len < 0)
        return NULL;
    self->lineno++;
    //  Drop leading white space: inih would take an indented line for the
    //  continuation of the previous value, and silently change that value
    while (len > 0 && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    size_t text = (size_t) len;
    while (text > 0 && (line [text - 1] == '\n' || line [text - 1] == '\r'))
        text--;
    //  inih needs room for the text, "\r\n" and the NUL
    if (num < 4 || text + 3 > (size_t) num) {
        if (!self->too_long_line) {
            self->too_long_line = self->lineno;
            self->too_long_max = num > 3 ? num - 3 : 0;
        }
        str [0] = '\n';                 //  Hand inih a blank line instead
        str [1] = 0;
        return str;
    }
    //  The text and one line feed: however many CRs the line ended with,
    //  it fits
    memcpy (str, line, text);
    str [text] = '\n';
    str [text + 1] = 0;
    return str;
}

static int
s_ini_handler (void *user, const char *section, const char *name, const char *value)
{
    s_reader_t *self = (s_reader_t *) user;
    if (self->error_line)
        return 1;                       //  Only the first error is reported
    if (chat_config_set (self->cfg, section, name, value,
                         self->error, sizeof self->error) != 0) {
        self->error_line = self->lineno;
        return 0;
    }
    return 1;
}

//  Parse the reader's source into cfg. source names it in errors:
//  "config file <path>" or "config text".
static int
s_load_reader (s_reader_t *reader, const char *source, char *error, size_t size)
{
    int rc = ini_parse_stream (s_reader_gets, reader, s_ini_handler, reader);
    int result = -1;
    if (reader->read_errno)
        snprintf (error, size, "cannot read %s: %s", source, strerror (reader->read_errno));
    else
    if (rc > 0 && (!reader->too_long_line || rc < reader->too_long_line)) {
        if (rc == reader->error_line)
            snprintf (error, size, "%s line %d: %s", source, rc, reader->error);
        else
            snprintf (error, size, "%s line %d: syntax error", source, rc);
    }
    else
    if (reader->too_long_line)
        snprintf (error, size, "%s line %d: line longer than %d bytes "
                  "(set long values with CHAT_<SECTION>_<KEY> instead)",
                  source, reader->too_long_line, reader->too_long_max);
    else
    if (rc < 0)
        snprintf (error, size, "cannot read %s: out of memory", source);
    else
        result = 0;
    return result;
}

static int
s_load_file (chat_config_t *cfg, const char *path, char *error, size_t size)
{
    s_reader_t reader = { .cfg = cfg };
    reader.file = fopen (path, "r");
    if (!reader.file) {
        snprintf (error, size, "cannot read config file %s: %s", path, strerror (errno));
        return -1;
    }
    size_t source_size = strlen (path) + sizeof "config file ";
    char *source = (char *) malloc (source_size);
    int result = -1;
    if (source) {
        snprintf (source, source_size, "config file %s", path);
        result = s_load_reader (&reader, source, error, size);
    }
    else
        snprintf (error, size, "cannot read config file %s: out of memory", path);
    free (source);
    free (reader.line);
    fclose (reader.file);
    return result;
}


//  --------------------------------------------------------------------------
//  Environment: CHAT_<SECTION>_<KEY>, upper case, for every key in the table

static int
s_load_env (chat_config_t *cfg, char *error, size_t size)
{
    for (size_t i = 0; i < S_KEY_COUNT; i++) {
        const s_key_t *k = &s_keys [i];
        char name [128];
        int n = snprintf (name, sizeof name, "CHAT_%s_%s", k->section, k->key);
        assert (n > 0 && (size_t) n < sizeof name);
        (void) n;
        for (char *p = name; *p; p++)
            *p = (char) toupper ((unsigned char) *p);
        const char *value = getenv (name);
        if (value && s_key_apply (cfg, k, value, name, error, size) != 0)
            return -1;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Rules that involve more than one key, checked once everything is read

static int
s_check (const chat_config_t *cfg, char *error, size_t size)
{
    if (strcmp (cfg->storage_backend, "postgres") == 0 && cfg->postgres_conninfo [0] == 0) {
        s_error (error, size, "postgres", "conninfo", NULL,
                 "must be set when [storage] backend is postgres");
        return -1;
    }
    if (cfg->websocket_pong_timeout_s <= cfg->websocket_ping_interval_s) {
        s_error (error, size, "websocket", "pong_timeout_s", NULL,
                 "must be greater than [websocket] ping_interval_s");
        return -1;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Defaults, then the INI file at path (if any), then the environment.

int
chat_config_load (chat_config_t *cfg, const char *path, char *error, size_t size)
{
    assert (cfg);
    char scratch [1];
    if (!error || !size) {
        error = scratch;
        size = sizeof scratch;
    }
    error [0] = 0;
    chat_config_defaults (cfg);
    if (path && s_load_file (cfg, path, error, size) != 0)
        return -1;
    if (s_load_env (cfg, error, size) != 0)
        return -1;
    return s_check (cfg, error, size);
}


//  --------------------------------------------------------------------------
//  Defaults, then the INI text; no environment (for tests and fuzzing).

int
chat_config_load_string (chat_config_t *cfg, const char *text, char *error, size_t size)
{
    assert (cfg);
    assert (text);
    char scratch [1];
    if (!error || !size) {
        error = scratch;
        size = sizeof scratch;
    }
    error [0] = 0;
    chat_config_defaults (cfg);
    s_reader_t reader = { .cfg = cfg, .text = text };
    if (s_load_reader (&reader, "config text", error, size) != 0)
        return -1;
    return s_check (cfg, error, size);
}
