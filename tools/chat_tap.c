/*  =========================================================================
    chat_tap.c - chat-tap: watch the messages chatd's actors send each other

    When chatd's configuration names a tap endpoint ([server] tap), every
    message an actor sends is also published there, as

        frame 0      the sending actor's name
        frame 1      the receiving actor's name
        frame 2..n   the internal message: command frame, then its fields

    (include/chat_msg.h; the proxy is in actors/chatd.c). chat-tap connects a
    SUB socket to that endpoint and prints each message on one line, decoded
    with the CHAT_COMMANDS table:

        18:40:01.123 ws-front > rate-limiter private_message conn_id=7 ...

    Rendering of a field, by its type in the command's picture:
        u, s    the text; bare when it holds only printable characters other
                than space, '"' and '\', else in double quotes with C escapes
        c, j    "<N bytes>", or with --content the value (c as s above; j
                verbatim, with control and invisible characters escaped)
        x       always "<secret>"; so is any field whose name contains
                "password" or "cookie" (set_cookie carries the session token)
    Other shapes:
        ?name frames=N          an unknown command; N = frames after the
                                command frame (fields are not shown)
        name !frames=N expected=2
                                a known command not sent as command + body
        name !fields=N expected=M
                                a known command whose body holds the wrong
                                number of fields (not shown: secrets cannot
                                be told apart)
        name !malformed body of N bytes
                                a body cut inside a field, or a number field
                                that is not a number
        !malformed frames=N     fewer than three frames in all

    Owns the SUB socket and nothing else; talks to the tap proxy only.

    The formatting is a separate function, chat_tap_format(), so that tests
    can include this file with CHAT_TAP_NO_MAIN defined and call it.
    =========================================================================
*/

#include "chat_msg.h"
#include "chat_config.h"
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

//  What to show; filled from the command line (or by a test)
typedef struct {
    bool content;                       //  Show c and j fields in full
    bool actor_filter;                  //  At least one -a was given
    bool actors [CHAT_ACTOR_COUNT];     //  Actors chosen with -a
    bool cmd_filter;                    //  At least one -m was given
    bool cmds [CHAT_CMD_COUNT];         //  Commands chosen with -m
} chat_tap_options_t;

//  The testable part (not static, so that a test including this file with
//  CHAT_TAP_NO_MAIN may use any of them; no header: nothing else links it)
void chat_tap_options_init (chat_tap_options_t *options);
int chat_tap_options_actor (chat_tap_options_t *options, const char *name);
int chat_tap_options_command (chat_tap_options_t *options, const char *name);
int chat_tap_format (zmsg_t *msg, const chat_tap_options_t *options, int64_t now_ms,
                     char *buf, size_t size);


//  --------------------------------------------------------------------------
//  Options

void
chat_tap_options_init (chat_tap_options_t *options)
{
    assert (options);
    memset (options, 0, sizeof *options);
}

//  Select an actor (-a). Returns -1 if no actor has that name.
int
chat_tap_options_actor (chat_tap_options_t *options, const char *name)
{
    assert (options && name);
    chat_actor_t actor = chat_actor_lookup (name);
    if (actor == CHAT_ACTOR_COUNT)
        return -1;
    options->actors [actor] = true;
    options->actor_filter = true;
    return 0;
}

//  Select a command (-m). Returns -1 if no command has that name.
int
chat_tap_options_command (chat_tap_options_t *options, const char *name)
{
    assert (options && name);
    chat_cmd_t cmd = chat_cmd_lookup (name, strlen (name));
    if (cmd == CHAT_CMD_COUNT)
        return -1;
    options->cmds [cmd] = true;
    options->cmd_filter = true;
    return 0;
}


//  --------------------------------------------------------------------------
//  Output buffer with snprintf semantics: writes what fits, counts it all

typedef struct {
    char *buf;                          //  Caller's buffer (may be NULL if size is 0)
    size_t size;                        //  Its size
    size_t len;                         //  Bytes the whole line needs
} s_out_t;

static void
s_put (s_out_t *out, const char *data, size_t n)
{
    if (out->len + 1 < out->size) {
        size_t room = out->size - 1 - out->len;
        memcpy (out->buf + out->len, data, n < room ? n : room);
    }
    out->len += n;
}

static void
s_puts (s_out_t *out, const char *text)
{
    s_put (out, text, strlen (text));
}

static void
s_putf (s_out_t *out, const char *format, ...)
{
    char text [64];
    va_list args;
    va_start (args, format);
    int n = vsnprintf (text, sizeof text, format, args);
    va_end (args);
    assert (n >= 0 && (size_t) n < sizeof text);
    s_put (out, text, (size_t) n);
}


//  --------------------------------------------------------------------------
//  Escaping

//  Length (2..4) of the well-formed UTF-8 multi-byte sequence at p, storing
//  its code point; 0 if there is none (stray byte, overlong, surrogate...)
static size_t
s_utf8_sequence (const unsigned char *p, size_t avail, uint32_t *code)
{
    size_t n;
    uint32_t cp, min;
    if (p [0] >= 0xC2 && p [0] <= 0xDF)      { n = 2; cp = p [0] & 0x1F; min = 0x80; }
    else if (p [0] >= 0xE0 && p [0] <= 0xEF) { n = 3; cp = p [0] & 0x0F; min = 0x800; }
    else if (p [0] >= 0xF0 && p [0] <= 0xF4) { n = 4; cp = p [0] & 0x07; min = 0x10000; }
    else
        return 0;
    if (n > avail)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p [i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p [i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *code = cp;
    return n;
}

//  Code points above ASCII that must not reach a terminal as they are:
//  C1 controls, line/paragraph separators, zero-width and bidi controls
static bool
s_invisible (uint32_t cp)
{
    return cp < 0xA0
        || cp == 0xAD
        || (cp >= 0x200B && cp <= 0x200F)
        || (cp >= 0x2028 && cp <= 0x202E)
        || (cp >= 0x2060 && cp <= 0x206F)
        || cp == 0xFEFF
        || (cp >= 0xFFF9 && cp <= 0xFFFB);
}

//  True if the text can be printed bare: not empty, and only printable
//  characters other than space, '"' and '\'
static bool
s_bare (const char *text, size_t len)
{
    if (len == 0)
        return false;
    const unsigned char *p = (const unsigned char *) text;
    for (size_t i = 0; i < len; ) {
        if (p [i] < 0x80) {
            if (p [i] <= 0x20 || p [i] >= 0x7F || p [i] == '"' || p [i] == '\\')
                return false;
            i++;
        }
        else {
            uint32_t cp;
            size_t n = s_utf8_sequence (p + i, len - i, &cp);
            if (n == 0 || s_invisible (cp))
                return false;
            i += n;
        }
    }
    return true;
}

//  Write text escaped. quoted: C-style inside double quotes (escapes '"' and
//  '\' too); otherwise verbatim but for non-printable bytes (for JSON).
static void
s_put_escaped (s_out_t *out, const char *text, size_t len, bool quoted)
{
    const unsigned char *p = (const unsigned char *) text;
    if (quoted)
        s_put (out, "\"", 1);
    for (size_t i = 0; i < len; ) {
        unsigned char byte = p [i];
        if (byte >= 0x80) {
            uint32_t cp;
            size_t n = s_utf8_sequence (p + i, len - i, &cp);
            if (n == 0)
                s_putf (out, "\\x%02x", byte);
            else
            if (s_invisible (cp))
                s_putf (out, "\\u{%04" PRIX32 "}", cp);
            else
                s_put (out, text + i, n);
            i += n ? n : 1;
            continue;
        }
        if (byte == '\n')
            s_puts (out, "\\n");
        else
        if (byte == '\r')
            s_puts (out, "\\r");
        else
        if (byte == '\t')
            s_puts (out, "\\t");
        else
        if (byte < 0x20 || byte == 0x7F)
            s_putf (out, "\\x%02x", byte);
        else
        if (quoted && (byte == '"' || byte == '\\')) {
            s_put (out, "\\", 1);
            s_put (out, text + i, 1);
        }
        else
            s_put (out, text + i, 1);
        i++;
    }
    if (quoted)
        s_put (out, "\"", 1);
}

//  A name or plain value: bare when safe, else quoted and escaped
static void
s_put_text (s_out_t *out, const char *text, size_t len)
{
    if (s_bare (text, len))
        s_put (out, text, len);
    else
        s_put_escaped (out, text, len, true);
}

static void
s_put_frame (s_out_t *out, zframe_t *frame)
{
    s_put_text (out, (const char *) zframe_data (frame), zframe_size (frame));
}

//  True if the field must never be shown, by type or by name
static bool
s_secret (char type, const char *name, size_t name_len)
{
    if (type == 'x')
        return true;
    char copy [64];
    snprintf (copy, sizeof copy, "%.*s", (int) name_len, name);
    return strstr (copy, "password") || strstr (copy, "cookie");
}


//  --------------------------------------------------------------------------
//  Filters

//  True if the frame holds the name of an actor chosen with -a
static bool
s_actor_chosen (const chat_tap_options_t *options, zframe_t *frame)
{
    if (!frame)
        return false;
    for (int i = 0; i < CHAT_ACTOR_COUNT; i++) {
        const char *name = chat_actor_name ((chat_actor_t) i);
        if (options->actors [i]
        &&  zframe_size (frame) == strlen (name)
        &&  memcmp (zframe_data (frame), name, strlen (name)) == 0)
            return true;
    }
    return false;
}


//  --------------------------------------------------------------------------
//  Format one tapped message (sender, receiver, command, fields) as one
//  line, without a newline, stamped with now_ms in local time. Works like
//  snprintf: writes at most size bytes including the NUL and returns the
//  length the whole line needs (if that is >= size the line was cut: call
//  again with a bigger buffer). Returns -1, writing nothing, if the options
//  filter the message out. Only msg's frame cursor is moved.

int
chat_tap_format (zmsg_t *msg, const chat_tap_options_t *options, int64_t now_ms,
                 char *buf, size_t size)
{
    assert (msg);
    assert (options);
    assert (buf || size == 0);

    //  The frames by position: sender, receiver, command, body
    size_t nframes = zmsg_size (msg);
    zframe_t *from = zmsg_first (msg);
    zframe_t *to = zmsg_next (msg);
    zframe_t *command = zmsg_next (msg);
    zframe_t *body = zmsg_next (msg);

    //  Decide whether the message passes the filters
    chat_cmd_t cmd = command
                   ? chat_cmd_lookup ((const char *) zframe_data (command), zframe_size (command))
                   : CHAT_CMD_COUNT;
    if (options->cmd_filter && (cmd == CHAT_CMD_COUNT || !options->cmds [cmd]))
        return -1;
    if (options->actor_filter && !s_actor_chosen (options, from) && !s_actor_chosen (options, to))
        return -1;

    s_out_t out = { buf, size, 0 };
    chat_msg_t m;
    chat_msg_init (&m);

    //  Local time with milliseconds
    time_t seconds = (time_t) (now_ms / 1000);
    struct tm tm;
    localtime_r (&seconds, &tm);
    s_putf (&out, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, (int) (now_ms % 1000));

    if (nframes < 3) {
        s_putf (&out, " !malformed frames=%zu", nframes);
        goto done;
    }
    s_put (&out, " ", 1);
    s_put_frame (&out, from);
    s_put (&out, " > ", 3);
    s_put_frame (&out, to);
    s_put (&out, " ", 1);

    if (cmd == CHAT_CMD_COUNT) {
        s_put (&out, "?", 1);
        s_put_frame (&out, command);
        s_putf (&out, " frames=%zu", nframes - 3);
        goto done;
    }
    s_puts (&out, chat_cmd_name (cmd));
    if (nframes != 4) {
        s_putf (&out, " !frames=%zu expected=2", nframes - 2);
        goto done;
    }
    if (chat_msg_decode_parts (zframe_data (command), zframe_size (command),
                               zframe_data (body), zframe_size (body), &m) != 0) {
        int count = chat_msg_body_count (zframe_data (body), zframe_size (body));
        size_t expected = strlen (chat_cmd_picture (cmd));
        if (count >= 0 && (size_t) count != expected)
            s_putf (&out, " !fields=%d expected=%zu", count, expected);
        else
            s_putf (&out, " !malformed body of %zu bytes", zframe_size (body));
        goto done;
    }
    //  Field names: the space-separated list, walked alongside the picture
    const char *picture = chat_cmd_picture (cmd);
    const char *name = chat_cmd_fields (cmd);
    for (int index = 0; index < m.nfields; index++) {
        while (*name == ' ')
            name++;
        size_t name_len = strcspn (name, " ");
        char type = picture [index];
        const char *data = m.s [index];
        size_t len = m.len [index];

        s_put (&out, " ", 1);
        s_put (&out, name, name_len);
        s_put (&out, "=", 1);
        if (s_secret (type, name, name_len))
            s_puts (&out, "<secret>");
        else
        if ((type == 'c' || type == 'j') && !options->content)
            s_putf (&out, "<%zu bytes>", len);
        else
        if (type == 'j' && len > 0)
            s_put_escaped (&out, data, len, false);
        else
            s_put_text (&out, data, len);
        name += name_len;
    }

done:
    chat_msg_release (&m);
    if (size > 0)
        buf [out.len < size ? out.len : size - 1] = 0;
    return out.len > INT_MAX ? INT_MAX : (int) out.len;
}


#ifndef CHAT_TAP_NO_MAIN
//  --------------------------------------------------------------------------
//  The command-line tool

//  Everything main holds
typedef struct {
    chat_tap_options_t options;         //  What to show
    const char *endpoint;               //  -e, or [server] tap of the config
    const char *config_path;            //  -c CONFIG or NULL
    uint64_t count;                     //  -n: stop after this many; 0 = never
    chat_config_t config;               //  Loaded with -c (or defaults + env)
    zsock_t *sub;                       //  SUB socket to the tap
    char *line;                         //  Line buffer
    size_t line_size;                   //  Its size
} self_t;

static void
s_usage (FILE *stream)
{
    fprintf (stream,
        "usage: chat-tap [-e ENDPOINT | -c CONFIG] [-a ACTOR]... [-m COMMAND]...\n"
        "                [--content] [-n COUNT]\n"
        "\n"
        "Print every message chatd's actors send each other, one line each.\n"
        "\n"
        "  -e ENDPOINT   the tap endpoint, e.g. ipc:///tmp/chatd.tap\n"
        "  -c CONFIG     read the endpoint from [server] tap of a chatd INI file\n"
        "                (without -e or -c: chatd's defaults and CHAT_SERVER_TAP)\n"
        "  -a ACTOR      only messages from or to ACTOR (repeatable)\n"
        "  -m COMMAND    only COMMAND (repeatable)\n"
        "  --content     show message content and JSON fields in full\n"
        "                (passwords and cookies are never shown)\n"
        "  -n COUNT      exit after printing COUNT messages\n"
        "  -h, --help    this help\n"
        "\n"
        "actors:");
    for (int i = 0; i < CHAT_ACTOR_COUNT; i++)
        fprintf (stream, " %s", chat_actor_name ((chat_actor_t) i));
    fprintf (stream, "\ncommands:");
    for (int i = 0; i < CHAT_CMD_COUNT; i++)
        fprintf (stream, "%s%s", i % 6 == 0 ? "\n   " : " ", chat_cmd_name ((chat_cmd_t) i));
    fprintf (stream, "\n");
}

//  Parse the command line into self. Returns 0 to run, 1 when done (help),
//  -1 on a usage error (already reported).
static int
s_parse_args (self_t *self, int argc, char *argv [])
{
    static const struct option longopts [] = {
        { "content", no_argument, NULL, 'C' },
        { "help",    no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };
    int opt;
    opterr = 0;
    while ((opt = getopt_long (argc, argv, ":e:c:a:m:n:h", longopts, NULL)) != -1) {
        switch (opt) {
            case 'e':
                self->endpoint = optarg;
                break;
            case 'c':
                self->config_path = optarg;
                break;
            case 'a':
                if (chat_tap_options_actor (&self->options, optarg) != 0) {
                    fprintf (stderr, "chat-tap: unknown actor '%s' (actors:", optarg);
                    for (int i = 0; i < CHAT_ACTOR_COUNT; i++)
                        fprintf (stderr, " %s", chat_actor_name ((chat_actor_t) i));
                    fprintf (stderr, ")\n");
                    return -1;
                }
                break;
            case 'm':
                if (chat_tap_options_command (&self->options, optarg) != 0) {
                    fprintf (stderr, "chat-tap: unknown command '%s' (chat-tap -h lists them)\n", optarg);
                    return -1;
                }
                break;
            case 'n': {
                char *end = NULL;
                errno = 0;
                unsigned long long count = strtoull (optarg, &end, 10);
                if (errno || !end || *end || optarg [0] < '1' || optarg [0] > '9' || count == 0) {
                    fprintf (stderr, "chat-tap: -n wants a positive number, not '%s'\n", optarg);
                    return -1;
                }
                self->count = (uint64_t) count;
                break;
            }
            case 'C':
                self->options.content = true;
                break;
            case 'h':
                s_usage (stdout);
                return 1;
            case ':':
                fprintf (stderr, "chat-tap: option -%c needs a value\n", optopt);
                return -1;
            default:
                if (optopt)
                    fprintf (stderr, "chat-tap: unknown option -%c (chat-tap -h for help)\n", optopt);
                else
                    fprintf (stderr, "chat-tap: unknown option '%s' (chat-tap -h for help)\n", argv [optind - 1]);
                return -1;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "chat-tap: unexpected argument '%s' (chat-tap -h for help)\n", argv [optind]);
        return -1;
    }
    if (self->endpoint && self->config_path) {
        fprintf (stderr, "chat-tap: give -e or -c, not both\n");
        return -1;
    }
    return 0;
}

//  Find the endpoint: -e, else [server] tap of -c CONFIG (or of chatd's
//  defaults plus CHAT_* environment). Returns 0 or -1 (reported).
static int
s_resolve_endpoint (self_t *self)
{
    if (self->endpoint) {
        if (!*self->endpoint) {
            fprintf (stderr, "chat-tap: -e wants an endpoint\n");
            return -1;
        }
        return 0;
    }
    char error [512] = "";
    if (chat_config_load (&self->config, self->config_path, error, sizeof error) != 0) {
        fprintf (stderr, "chat-tap: %s\n", error);
        return -1;
    }
    if (!*self->config.server_tap) {
        if (self->config_path)
            fprintf (stderr, "chat-tap: %s: [server] tap is not set, so chatd publishes nothing\n", self->config_path);
        else
            fprintf (stderr, "chat-tap: no tap endpoint: give -e ENDPOINT or -c CONFIG (or set CHAT_SERVER_TAP)\n");
        return -1;
    }
    self->endpoint = self->config.server_tap;
    return 0;
}

//  Print one message if it passes the filters. Returns 1 if printed, 0 if
//  filtered out, -1 if stdout failed.
static int
s_print (self_t *self, zmsg_t *msg)
{
    int len = chat_tap_format (msg, &self->options, zclock_time (), self->line, self->line_size);
    if (len < 0)
        return 0;
    if ((size_t) len >= self->line_size) {
        size_t size = (size_t) len + 1;
        char *line = (char *) realloc (self->line, size);
        assert (line);
        self->line = line;
        self->line_size = size;
        len = chat_tap_format (msg, &self->options, zclock_time (), self->line, self->line_size);
    }
    self->line [len] = '\n';
    if (fwrite (self->line, 1, (size_t) len + 1, stdout) != (size_t) len + 1 || fflush (stdout) != 0)
        return -1;
    return 1;
}

int
main (int argc, char *argv [])
{
    self_t self_struct, *self = &self_struct;
    memset (self, 0, sizeof *self);
    chat_tap_options_init (&self->options);
    int rc = s_parse_args (self, argc, argv);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if (s_resolve_endpoint (self) != 0)
        return 1;

    //  Writing to a closed pipe (chat-tap | head) ends the loop, not the process
    signal (SIGPIPE, SIG_IGN);
    //  czmq's handler sets zsys_interrupted on SIGINT/SIGTERM, which also
    //  interrupts the blocking receive below
    zsys_init ();

    self->line_size = 4096;
    self->line = (char *) malloc (self->line_size);
    assert (self->line);
    self->sub = zsock_new (ZMQ_SUB);
    assert (self->sub);
    zsock_set_rcvhwm (self->sub, 100000);
    zsock_set_linger (self->sub, 0);
    zsock_set_subscribe (self->sub, "");
    if (zsock_connect (self->sub, "%s", self->endpoint) != 0) {
        fprintf (stderr, "chat-tap: cannot connect to '%s': %s\n", self->endpoint, zmq_strerror (zmq_errno ()));
        rc = 1;
    }
    uint64_t printed = 0;
    while (rc == 0 && !zsys_interrupted) {
        zmsg_t *msg = zmsg_recv (self->sub);
        if (!msg)
            break;                      //  Interrupted
        int printed_one = s_print (self, msg);
        zmsg_destroy (&msg);
        if (printed_one < 0)
            break;                      //  stdout went away
        printed += (uint64_t) printed_one;
        if (self->count && printed >= self->count)
            break;
    }
    zsock_destroy (&self->sub);
    free (self->line);
    return rc;
}
#endif
