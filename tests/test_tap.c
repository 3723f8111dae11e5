/*  =========================================================================
    test_tap.c - chat-tap's decoding and formatting (tools/chat_tap.c)

    Includes the tool's source with CHAT_TAP_NO_MAIN and drives
    chat_tap_format() with messages that really went through chat_send()
    and the tap publisher: a SUB socket bound at CHAT_TAP_INPROC stands in
    for the tap proxy, a chat_peer_t for the receiving actor.
    =========================================================================
*/

#include "test_util.h"
#define CHAT_TAP_NO_MAIN
#include "../tools/chat_tap.c"

//  Sample field values, by position, so the expected line can be computed
//  from the command table: u = 100 + i, s = "s<i>", c = "c<i>",
//  j = {"j":<i>}, x (passwords) = "hunter2-<i>"
#define U(i) ((uint64_t) (100 + (i)))
#define S(i) "s" #i
#define C(i) "c" #i
#define J(i) "{\"j\":" #i "}"
#define P(i) "hunter2-" #i

//  Ten seconds, 123 ms after the epoch: "00:00:10.123" with TZ=UTC
#define T_MS 10123
#define T_TEXT "00:00:10.123"

//  The tap as an actor sees it, per test
typedef struct {
    zsock_t *sub;                       //  Bound at CHAT_TAP_INPROC (the group's)
    chat_outbox_t *outbox;              //  Sends as `from`, publishing to the tap
    chat_peer_t *peer;                  //  Receives as `to`
    chat_actor_t to;                    //  The receiving actor
    char line [8192];                   //  Last formatted line
} tap_t;

//  Send the sample of cmd through chat_send: each field by its type
static int
s_send_sample (chat_outbox_t *outbox, chat_actor_t to, chat_cmd_t cmd)
{
    static const char *samples [CHAT_MAX_FIELDS][4] = {
        //  s, c, j, x for field i
        { S (0), C (0), J (0), P (0) }, { S (1), C (1), J (1), P (1) },
        { S (2), C (2), J (2), P (2) }, { S (3), C (3), J (3), P (3) },
        { S (4), C (4), J (4), P (4) }, { S (5), C (5), J (5), P (5) },
        { S (6), C (6), J (6), P (6) }, { S (7), C (7), J (7), P (7) },
        { S (8), C (8), J (8), P (8) }, { S (9), C (9), J (9), P (9) },
        { S (10), C (10), J (10), P (10) }, { S (11), C (11), J (11), P (11) },
    };
    const char *picture = chat_cmd_picture (cmd);
    uint64_t u [CHAT_MAX_FIELDS];
    const char *s [CHAT_MAX_FIELDS];
    for (int i = 0; i < CHAT_MAX_FIELDS; i++) {
        char type = i < (int) strlen (picture) ? picture [i] : 's';
        u [i] = U (i);
        s [i] = samples [i][type == 'c' ? 1 : type == 'j' ? 2 : type == 'x' ? 3 : 0];
    }
    return chat_test_send (outbox, to, cmd, u, s);
}

//  One SUB stands in for the tap proxy for the whole group: an inproc
//  endpoint is released asynchronously after its socket is destroyed
static int
s_group_setup (void **state)
{
    setenv ("TZ", "UTC", 1);
    tzset ();
    zsock_t *sub = zsock_new (ZMQ_SUB);
    assert_non_null (sub);
    zsock_set_subscribe (sub, "");
    zsock_set_linger (sub, 0);
    assert_int_equal (zsock_bind (sub, "%s", CHAT_TAP_INPROC), 0);
    *state = sub;
    return 0;
}

static int
s_group_teardown (void **state)
{
    zsock_t *sub = (zsock_t *) *state;
    zsock_destroy (&sub);
    return 0;
}

static tap_t *
s_tap_new (void **state, chat_actor_t from, chat_actor_t to)
{
    tap_t *self = (tap_t *) zmalloc (sizeof (tap_t));
    assert_non_null (self);
    self->sub = (zsock_t *) *state;
    zmsg_t *stale;
    while ((stale = zmsg_recv_nowait (self->sub)))
        zmsg_destroy (&stale);
    self->outbox = chat_outbox_new (from, "tap");
    self->peer = chat_peer_new (to);
    self->to = to;
    //  The subscription reaches the publisher asynchronously: send until
    //  the first message comes through, then drop what arrived
    bool through = false;
    for (int attempt = 0; attempt < 100 && !through; attempt++) {
        assert_int_equal (chat_send (self->outbox, to, CHAT_CMD_STORAGE_STATUS,
                                     (uint64_t) 1, (uint64_t) 0, (uint64_t) 0), 0);
        chat_peer_expect (self->peer, CHAT_CMD_STORAGE_STATUS, 1000);
        zpoller_t *poller = zpoller_new (self->sub, NULL);
        through = zpoller_wait (poller, 20) != NULL;
        zpoller_destroy (&poller);
    }
    assert_true (through);
    zmsg_t *msg;
    while ((msg = zmsg_recv_nowait (self->sub)))
        zmsg_destroy (&msg);
    return self;
}

static void
s_tap_destroy (tap_t **self_p)
{
    tap_t *self = *self_p;
    chat_outbox_destroy (&self->outbox);
    chat_peer_destroy (&self->peer);
    free (self);
    *self_p = NULL;
}

//  The next tapped message; checks that the receiving actor got it too
static zmsg_t *
s_tap_recv (tap_t *self, chat_cmd_t cmd)
{
    zpoller_t *poller = zpoller_new (self->sub, NULL);
    void *which = zpoller_wait (poller, 2000);
    zpoller_destroy (&poller);
    if (!which)
        fail_msg ("nothing tapped for %s", chat_cmd_name (cmd));
    zmsg_t *msg = zmsg_recv (self->sub);
    assert_non_null (msg);
    chat_peer_expect (self->peer, cmd, 2000);
    return msg;
}

//  Format msg with options into self->line; asserts it is not filtered and fits
static const char *
s_format (tap_t *self, zmsg_t *msg, const chat_tap_options_t *options)
{
    int len = chat_tap_format (msg, options, T_MS, self->line, sizeof self->line);
    assert_true (len >= 0);
    assert_true ((size_t) len < sizeof self->line);
    assert_int_equal (strlen (self->line), (size_t) len);
    assert_null (strchr (self->line, '\n'));
    return self->line;
}

//  Format *msg_p into line (any size), destroy it, return the line
static const char *
s_line (zmsg_t **msg_p, const chat_tap_options_t *options, char *line, size_t size)
{
    chat_tap_format (*msg_p, options, T_MS, line, size);
    zmsg_destroy (msg_p);
    return line;
}

//  Build a message of one frame a NUL-terminated string (NULL ends)
static zmsg_t *
s_frames (const char *frame, ...)
{
    zmsg_t *msg = zmsg_new ();
    va_list args;
    va_start (args, frame);
    for (; frame; frame = va_arg (args, const char *))
        zmsg_addstr (msg, frame);
    va_end (args);
    return msg;
}

//  Build a raw tapped message from NUL-terminated strings (NULL ends): the
//  sender, the receiver, the command, and the fields that make its body.
//  Fewer than three strings make that many frames and no body.
static zmsg_t *
s_raw (const char *frame, ...)
{
    const char *strings [3 + CHAT_MAX_FIELDS + 1];
    int count = 0;
    va_list args;
    va_start (args, frame);
    for (; frame; frame = va_arg (args, const char *))
        strings [count++] = frame;
    va_end (args);
    zmsg_t *msg = zmsg_new ();
    for (int i = 0; i < count && i < 3; i++)
        zmsg_addstr (msg, strings [i]);
    if (count >= 3) {
        zframe_t *body = chat_msg_body (strings + 3, count - 3);
        assert_non_null (body);
        zmsg_append (msg, &body);
    }
    return msg;
}

//  The line chat-tap must print for the sample of cmd, computed from the table
static void
s_expected (char *buf, size_t size, const char *from, const char *to, chat_cmd_t cmd, bool content)
{
    int n = snprintf (buf, size, T_TEXT " %s > %s %s", from, to, chat_cmd_name (cmd));
    const char *picture = chat_cmd_picture (cmd);
    char names [256];
    snprintf (names, sizeof names, "%s", chat_cmd_fields (cmd));
    char *saveptr = NULL;
    char *name = strtok_r (names, " ", &saveptr);
    for (int i = 0; picture [i]; i++, name = strtok_r (NULL, " ", &saveptr)) {
        assert_non_null (name);
        char value [64];
        char sample [32];
        switch (picture [i]) {
            case 'u': snprintf (value, sizeof value, "%d", 100 + i); break;
            case 's': snprintf (value, sizeof value, "s%d", i); break;
            case 'c':
            case 'j':
                if (picture [i] == 'c')
                    snprintf (sample, sizeof sample, "c%d", i);
                else
                    snprintf (sample, sizeof sample, "{\"j\":%d}", i);
                if (content)
                    snprintf (value, sizeof value, "%s", sample);
                else
                    snprintf (value, sizeof value, "<%zu bytes>", strlen (sample));
                break;
            case 'x': snprintf (value, sizeof value, "<secret>"); break;
            default: fail_msg ("unknown field type '%c'", picture [i]);
        }
        if (strstr (name, "password") || strstr (name, "cookie"))
            snprintf (value, sizeof value, "<secret>");
        n += snprintf (buf + n, size - (size_t) n, " %s=%s", name, value);
    }
    assert_null (name);
}

//  Every command of the table, through chat_send and the tap, formats with
//  its field names and values, content hidden unless asked for
static void
test_every_command (void **state)
{
    tap_t *tap = s_tap_new (state, CHAT_ACTOR_WS_FRONT, CHAT_ACTOR_HUB);
    chat_tap_options_t hidden, shown;
    chat_tap_options_init (&hidden);
    chat_tap_options_init (&shown);
    shown.content = true;
    char expected [4096];
    for (int i = 0; i < CHAT_CMD_COUNT; i++) {
        chat_cmd_t cmd = (chat_cmd_t) i;
        assert_int_equal (s_send_sample (tap->outbox, CHAT_ACTOR_HUB, cmd), 0);
        zmsg_t *msg = s_tap_recv (tap, cmd);
        assert_int_equal (zmsg_size (msg), 4);

        s_expected (expected, sizeof expected, "ws-front", "hub", cmd, false);
        assert_string_equal (s_format (tap, msg, &hidden), expected);
        assert_null (strstr (tap->line, "hunter2"));

        s_expected (expected, sizeof expected, "ws-front", "hub", cmd, true);
        assert_string_equal (s_format (tap, msg, &shown), expected);
        assert_null (strstr (tap->line, "hunter2"));
        zmsg_destroy (&msg);
    }
    s_tap_destroy (&tap);
}

//  The line of the documentation, and content escaped onto one line
static void
test_private_message (void **state)
{
    tap_t *tap = s_tap_new (state, CHAT_ACTOR_WS_FRONT, CHAT_ACTOR_RATE_LIMITER);
    chat_tap_options_t options;
    chat_tap_options_init (&options);

    chat_send (tap->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_PRIVATE_MESSAGE,
               (uint64_t) 7, (uint64_t) 1, "alice", (uint64_t) 2, "c-1", "hello");
    zmsg_t *msg = s_tap_recv (tap, CHAT_CMD_PRIVATE_MESSAGE);
    assert_string_equal (s_format (tap, msg, &options), T_TEXT
        " ws-front > rate-limiter private_message conn_id=7 user_id=1 nickname=alice"
        " to_user_id=2 client_id=c-1 content=<5 bytes>");
    options.content = true;
    assert_string_equal (s_format (tap, msg, &options), T_TEXT
        " ws-front > rate-limiter private_message conn_id=7 user_id=1 nickname=alice"
        " to_user_id=2 client_id=c-1 content=hello");
    zmsg_destroy (&msg);

    //  Quotes, backslash, line breaks, terminal escapes, bidi override,
    //  a stray byte; UTF-8 letters stay as they are; empty client_id
    const char *content = "say \"hi\\\"\r\n\t\x1b[31m\x7f caf\xc3\xa9 \xe2\x80\xae\xff";
    chat_send (tap->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_PRIVATE_MESSAGE,
               (uint64_t) 7, (uint64_t) 1, "alice", (uint64_t) 2, NULL, content);
    msg = s_tap_recv (tap, CHAT_CMD_PRIVATE_MESSAGE);
    options.content = false;
    s_format (tap, msg, &options);
    char hidden [64];
    snprintf (hidden, sizeof hidden, " client_id=\"\" content=<%zu bytes>", strlen (content));
    assert_non_null (strstr (tap->line, hidden));
    options.content = true;
    s_format (tap, msg, &options);
    assert_non_null (strstr (tap->line,
        " client_id=\"\" content=\"say \\\"hi\\\\\\\"\\r\\n\\t\\x1b[31m\\x7f caf\xc3\xa9 \\u{202E}\\xff\""));
    zmsg_destroy (&msg);

    //  JSON verbatim with --content, control characters escaped
    chat_send (tap->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_HTTP_RESPONSE,
               (uint64_t) 3, (uint64_t) 201, "{\"user_id\": 1,\n \"nickname\": \"bob\"}", NULL);
    msg = s_tap_recv (tap, CHAT_CMD_HTTP_RESPONSE);
    assert_string_equal (s_format (tap, msg, &options), T_TEXT
        " ws-front > rate-limiter http_response req_id=3 status=201"
        " body={\"user_id\": 1,\\n \"nickname\": \"bob\"} set_cookie=<secret>");
    zmsg_destroy (&msg);
    s_tap_destroy (&tap);
}

//  Passwords and the session cookie never show, with or without --content
static void
test_secrets (void **state)
{
    tap_t *tap = s_tap_new (state, CHAT_ACTOR_AUTH, CHAT_ACTOR_WS_FRONT);
    chat_tap_options_t options;
    chat_tap_options_init (&options);
    for (int round = 0; round < 2; round++) {
        options.content = round == 1;
        chat_send (tap->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_REGISTER, (uint64_t) 1, "alice", "correct horse");
        zmsg_t *msg = s_tap_recv (tap, CHAT_CMD_REGISTER);
        assert_string_equal (s_format (tap, msg, &options),
                             T_TEXT " auth > ws-front register req_id=1 nickname=alice password=<secret>");
        zmsg_destroy (&msg);

        chat_send (tap->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_LOGIN, (uint64_t) 2, "127.0.0.1", "alice", "correct horse");
        msg = s_tap_recv (tap, CHAT_CMD_LOGIN);
        assert_string_equal (s_format (tap, msg, &options),
                             T_TEXT " auth > ws-front login req_id=2 address=127.0.0.1 nickname=alice password=<secret>");
        zmsg_destroy (&msg);

        chat_send (tap->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_HTTP_RESPONSE, (uint64_t) 2, (uint64_t) 200,
                   "{}", "session=SeCrEtToKeN; HttpOnly; SameSite=Lax; Path=/; Max-Age=2592000");
        msg = s_tap_recv (tap, CHAT_CMD_HTTP_RESPONSE);
        s_format (tap, msg, &options);
        assert_non_null (strstr (tap->line, " set_cookie=<secret>"));
        assert_null (strstr (tap->line, "SeCrEtToKeN"));
        zmsg_destroy (&msg);
    }
    s_tap_destroy (&tap);
}

//  -a (from or to) and -m select; several of each are alternatives, the
//  two kinds combine; unknown names are refused
static void
test_filters (void **state)
{
    (void) state;
    chat_tap_options_t options;
    chat_tap_options_init (&options);
    char line [512];
    zmsg_t *to_rl = s_raw ("ws-front", "rate-limiter", "typing", "1", "2", "alice", "3", "1", NULL);
    zmsg_t *rl_hub = s_raw ("rate-limiter", "hub", "typing", "1", "2", "alice", "3", "1", NULL);
    zmsg_t *hub_ws = s_raw ("hub", "ws-front", "deliver_typing", "4,5", "2", "alice", "1", NULL);
    zmsg_t *unknown = s_raw ("hub", "ws-front", "frobnicate", NULL);

    //  No filter: everything
    assert_true (chat_tap_format (to_rl, &options, T_MS, line, sizeof line) > 0);
    assert_true (chat_tap_format (unknown, &options, T_MS, line, sizeof line) > 0);

    //  -a hub: from or to the hub
    assert_int_equal (chat_tap_options_actor (&options, "hub"), 0);
    assert_int_equal (chat_tap_format (to_rl, &options, T_MS, line, sizeof line), -1);
    assert_true (chat_tap_format (rl_hub, &options, T_MS, line, sizeof line) > 0);
    assert_true (chat_tap_format (hub_ws, &options, T_MS, line, sizeof line) > 0);
    //  -a hub -a ws-front
    assert_int_equal (chat_tap_options_actor (&options, "ws-front"), 0);
    assert_true (chat_tap_format (to_rl, &options, T_MS, line, sizeof line) > 0);

    //  -m typing as well: both must match
    assert_int_equal (chat_tap_options_command (&options, "typing"), 0);
    assert_true (chat_tap_format (to_rl, &options, T_MS, line, sizeof line) > 0);
    assert_true (chat_tap_format (rl_hub, &options, T_MS, line, sizeof line) > 0);
    assert_int_equal (chat_tap_format (hub_ws, &options, T_MS, line, sizeof line), -1);
    assert_int_equal (chat_tap_format (unknown, &options, T_MS, line, sizeof line), -1);
    assert_int_equal (chat_tap_options_command (&options, "deliver_typing"), 0);
    assert_true (chat_tap_format (hub_ws, &options, T_MS, line, sizeof line) > 0);
    assert_string_equal (line, T_TEXT " hub > ws-front deliver_typing conn_ids=4,5 from_user_id=2 nickname=alice is_typing=1");

    //  Unknown names are refused and select nothing
    chat_tap_options_t fresh;
    chat_tap_options_init (&fresh);
    assert_int_equal (chat_tap_options_actor (&fresh, "websocket"), -1);
    assert_int_equal (chat_tap_options_actor (&fresh, ""), -1);
    assert_int_equal (chat_tap_options_command (&fresh, "privatemessage"), -1);
    assert_int_equal (chat_tap_options_command (&fresh, "typing "), -1);
    assert_false (fresh.actor_filter);
    assert_false (fresh.cmd_filter);
    for (int i = 0; i < CHAT_ACTOR_COUNT; i++)
        assert_int_equal (chat_tap_options_actor (&fresh, chat_actor_name ((chat_actor_t) i)), 0);
    for (int i = 0; i < CHAT_CMD_COUNT; i++)
        assert_int_equal (chat_tap_options_command (&fresh, chat_cmd_name ((chat_cmd_t) i)), 0);

    zmsg_destroy (&to_rl);
    zmsg_destroy (&rl_hub);
    zmsg_destroy (&hub_ws);
    zmsg_destroy (&unknown);
}

//  Unknown commands, wrong field counts, short messages, odd actor names
static void
test_malformed (void **state)
{
    (void) state;
    chat_tap_options_t options;
    chat_tap_options_init (&options);
    options.content = true;
    char line [512];

    zmsg_t *msg = s_raw ("auth", "hub", "frobnicate", "a", "hunter2", NULL);
    assert_string_equal (s_line (&msg, &options, line, sizeof line),
                         T_TEXT " auth > hub ?frobnicate frames=1");

    msg = s_raw ("auth", "hub", "bad\ncommand", NULL);
    assert_string_equal (s_line (&msg, &options, line, sizeof line),
                         T_TEXT " auth > hub ?\"bad\\ncommand\" frames=1");

    //  A known command with too few fields: nothing shown, the secret included
    msg = s_raw ("ws-front", "auth", "register", "1", "hunter2", NULL);
    assert_string_equal (s_line (&msg, &options, line, sizeof line),
                         T_TEXT " ws-front > auth register !fields=2 expected=3");

    msg = s_raw ("ws-front", "auth", NULL);
    assert_string_equal (s_line (&msg, &options, line, sizeof line),
                         T_TEXT " !malformed frames=2");

    //  A known command sent as one frame a field, or with no body
    msg = s_frames ("ws-front", "auth", "logout", "4", "hunter2", NULL);
    assert_string_equal (s_line (&msg, &options, line, sizeof line),
                         T_TEXT " ws-front > auth logout !frames=3 expected=2");
    msg = s_frames ("ws-front", "auth", "logout", NULL);
    assert_string_equal (s_line (&msg, &options, line, sizeof line),
                         T_TEXT " ws-front > auth logout !frames=1 expected=2");

    //  A body cut inside a field, and a number field that is not a number:
    //  nothing of it shown
    msg = s_frames ("ws-front", "auth", "register", NULL);
    zmsg_addmem (msg, "\x01\0\0\0" "1\0" "\x07\0\0\0" "hunt", 14);
    assert_string_equal (s_line (&msg, &options, line, sizeof line),
                         T_TEXT " ws-front > auth register !malformed body of 14 bytes");
    msg = s_raw ("ws-front", "auth", "register", "one", "alice", "hunter2", NULL);
    assert_string_equal (s_line (&msg, &options, line, sizeof line),
                         T_TEXT " ws-front > auth register !malformed body of 30 bytes");

    msg = s_raw ("ws\x01" "front", "my auth", "logout", "4", "ab12", NULL);
    assert_string_equal (s_line (&msg, &options, line, sizeof line),
                         T_TEXT " \"ws\\x01front\" > \"my auth\" logout req_id=4 token_hash=ab12");
}

//  snprintf semantics: a short buffer gets a cut, terminated line and the
//  length the whole line needs
static void
test_short_buffer (void **state)
{
    (void) state;
    chat_tap_options_t options;
    chat_tap_options_init (&options);
    zmsg_t *msg = s_raw ("hub", "ws-front", "user_online", "2", "alice", NULL);
    const char *full = T_TEXT " hub > ws-front user_online user_id=2 nickname=alice";
    char line [512];
    assert_int_equal (chat_tap_format (msg, &options, T_MS, NULL, 0), (int) strlen (full));
    memset (line, 'X', sizeof line);
    assert_int_equal (chat_tap_format (msg, &options, T_MS, line, 10), (int) strlen (full));
    assert_int_equal (strlen (line), 9);
    assert_memory_equal (line, full, 9);
    assert_int_equal (chat_tap_format (msg, &options, T_MS, line, sizeof line), (int) strlen (full));
    assert_string_equal (line, full);
    zmsg_destroy (&msg);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_every_command),
        cmocka_unit_test (test_private_message),
        cmocka_unit_test (test_secrets),
        cmocka_unit_test (test_filters),
        cmocka_unit_test (test_malformed),
        cmocka_unit_test (test_short_buffer),
    };
    return cmocka_run_group_tests (tests, s_group_setup, s_group_teardown);
}
