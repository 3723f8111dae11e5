/*  =========================================================================
    test_msg.c - the internal protocol codec (actors/chat_msg.c)

    Every command goes through a real inproc PUSH/PULL pair (chat_outbox_t
    to chat_inbox_new), malformed messages are pushed by a raw PUSH socket,
    and the tap is watched by a SUB socket bound at CHAT_TAP_INPROC, where
    chatd's tap proxy would be.
    =========================================================================
*/

#include "test_util.h"
#include <inttypes.h>

//  Sample field values by command and position, so that the receiver can
//  compute what to expect from the command table alone
#define U(i) ((uint64_t) (1000 * ((uint64_t) cmd + 1) + (i)))
#define S(i) (f [i])

//  Fill f [i] with the text sample for field i of cmd, by its type
static void
s_samples (chat_cmd_t cmd, char f [CHAT_MAX_FIELDS][64])
{
    const char *picture = chat_cmd_picture (cmd);
    for (int i = 0; picture [i]; i++) {
        if (picture [i] == 'j')
            snprintf (f [i], 64, "{\"%s\":%d}", chat_cmd_name (cmd), i);
        else
        if (picture [i] == 'c')
            snprintf (f [i], 64, "caf\xc3\xa9 %d \xf0\x9f\x98\x80 %s", i, chat_cmd_name (cmd));
        else
        if (picture [i] == 'x')
            snprintf (f [i], 64, "secret-%d-%s", i, chat_cmd_name (cmd));
        else
            snprintf (f [i], 64, "%s-%d", chat_cmd_name (cmd), i);
    }
}

//  Send the sample of cmd through chat_send
static int
s_send_sample (chat_outbox_t *outbox, chat_actor_t to, chat_cmd_t cmd)
{
    char f [CHAT_MAX_FIELDS][64];
    s_samples (cmd, f);
    uint64_t u [CHAT_MAX_FIELDS];
    const char *s [CHAT_MAX_FIELDS];
    for (int i = 0; i < CHAT_MAX_FIELDS; i++) {
        u [i] = U (i);
        s [i] = f [i];
    }
    return chat_test_send (outbox, to, cmd, u, s);
}

//  Check a decoded message against the sample of its command
static void
s_check_sample (const chat_msg_t *m, chat_cmd_t cmd)
{
    char f [CHAT_MAX_FIELDS][64];
    s_samples (cmd, f);
    assert_int_equal (m->cmd, cmd);
    const char *picture = chat_cmd_picture (cmd);
    assert_int_equal (m->nfields, (int) strlen (picture));
    for (int i = 0; picture [i]; i++) {
        if (picture [i] == 'u') {
            char text [32];
            snprintf (text, sizeof text, "%" PRIu64, U (i));
            assert_int_equal (m->u [i], U (i));
            assert_string_equal (m->s [i], text);
            assert_int_equal (m->len [i], strlen (text));
        }
        else {
            assert_string_equal (m->s [i], f [i]);
            assert_int_equal (m->len [i], strlen (f [i]));
        }
    }
}

//  Receive with a deadline; fails the test if nothing comes
static int
s_recv (zsock_t *inbox, chat_msg_t *m)
{
    zpoller_t *poller = zpoller_new (inbox, NULL);
    void *which = zpoller_wait (poller, 2000);
    zpoller_destroy (&poller);
    if (!which)
        fail_msg ("nothing received in 2 s");
    return chat_msg_recv (inbox, m, false);
}

static int
s_teardown (void **state)
{
    (void) state;
    //  libzmq releases inproc endpoints on its reaper thread: give it a
    //  moment before the next test binds them again
    zclock_sleep (100);
    return 0;
}


//  --------------------------------------------------------------------------
//  The command table itself

static void
test_table (void **state)
{
    (void) state;
    for (int i = 0; i < CHAT_CMD_COUNT; i++) {
        chat_cmd_t cmd = (chat_cmd_t) i;
        const char *name = chat_cmd_name (cmd);
        const char *picture = chat_cmd_picture (cmd);
        //  Lookup finds each command by its name, and only by its name
        assert_int_equal (chat_cmd_lookup (name, strlen (name)), cmd);
        assert_int_equal (chat_cmd_lookup (name, strlen (name) - 1), CHAT_CMD_COUNT);
        //  The picture has one known type per named field
        assert_true (strlen (picture) >= 1);
        assert_true (strlen (picture) <= CHAT_MAX_FIELDS);
        assert_int_equal (strspn (picture, "uscxj"), strlen (picture));
        int words = 0;
        const char *p = chat_cmd_fields (cmd);
        while (*p) {
            p += strspn (p, " ");
            if (*p) {
                words++;
                p += strcspn (p, " ");
            }
        }
        if (words != (int) strlen (picture))
            fail_msg ("%s: %d field names for picture %s", name, words, picture);
        assert_non_null (chat_cmd_path (cmd));
        //  No two commands share a name
        for (int j = 0; j < i; j++)
            assert_string_not_equal (chat_cmd_name ((chat_cmd_t) j), name);
    }
    //  Lookup uses the length, not a terminating NUL
    assert_int_equal (chat_cmd_lookup ("joinXYZ", 4), CHAT_CMD_JOIN);
    assert_int_equal (chat_cmd_lookup ("JOIN", 4), CHAT_CMD_COUNT);
    assert_int_equal (chat_cmd_lookup ("join ", 5), CHAT_CMD_COUNT);
    assert_int_equal (chat_cmd_lookup ("", 0), CHAT_CMD_COUNT);
    assert_int_equal (chat_cmd_lookup ("frobnicate", 10), CHAT_CMD_COUNT);

    //  Actors: names, lookup and endpoints
    for (int i = 0; i < CHAT_ACTOR_COUNT; i++) {
        chat_actor_t actor = (chat_actor_t) i;
        assert_int_equal (chat_actor_lookup (chat_actor_name (actor)), actor);
        char endpoint [64], expected [64];
        chat_actor_endpoint (actor, endpoint, sizeof endpoint);
        snprintf (expected, sizeof expected, "inproc://chatd-%s", chat_actor_name (actor));
        assert_string_equal (endpoint, expected);
    }
    assert_string_equal (chat_actor_name (CHAT_ACTOR_RATE_LIMITER), "rate-limiter");
    assert_string_equal (chat_actor_name (CHAT_ACTOR_WS_FRONT), "ws-front");
    assert_int_equal (chat_actor_lookup ("nobody"), CHAT_ACTOR_COUNT);
    assert_int_equal (chat_actor_lookup (""), CHAT_ACTOR_COUNT);
}


//  --------------------------------------------------------------------------
//  Every command, there and back

static void
test_round_trip (void **state)
{
    (void) state;
    zsock_t *inbox = chat_inbox_new (CHAT_ACTOR_PERSISTENCE);
    assert_non_null (inbox);
    chat_outbox_t *outbox = chat_outbox_new (CHAT_ACTOR_HUB, NULL);
    assert_non_null (outbox);
    chat_msg_t m;
    chat_msg_init (&m);

    //  Nothing waiting
    assert_int_equal (chat_msg_recv (inbox, &m, true), 1);

    //  One at a time
    for (int i = 0; i < CHAT_CMD_COUNT; i++) {
        assert_int_equal (s_send_sample (outbox, CHAT_ACTOR_PERSISTENCE, (chat_cmd_t) i), 0);
        assert_int_equal (s_recv (inbox, &m), 0);
        s_check_sample (&m, (chat_cmd_t) i);
    }
    //  All at once, read in order without blocking
    for (int i = 0; i < CHAT_CMD_COUNT; i++)
        assert_int_equal (s_send_sample (outbox, CHAT_ACTOR_PERSISTENCE, (chat_cmd_t) i), 0);
    assert_int_equal (s_recv (inbox, &m), 0);
    s_check_sample (&m, (chat_cmd_t) 0);
    for (int i = 1; i < CHAT_CMD_COUNT; i++) {
        assert_int_equal (chat_msg_recv (inbox, &m, true), 0);
        s_check_sample (&m, (chat_cmd_t) i);
    }
    assert_int_equal (chat_msg_recv (inbox, &m, true), 1);

    //  The edges of numbers, empty strings and NULL
    assert_int_equal (chat_send (outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_JOIN,
                                 (uint64_t) 0, UINT64_MAX, ""), 0);
    assert_int_equal (s_recv (inbox, &m), 0);
    assert_int_equal (m.cmd, CHAT_CMD_JOIN);
    assert_int_equal (m.u [0], 0);
    assert_true (m.u [1] == UINT64_MAX);
    assert_string_equal (m.s [1], "18446744073709551615");
    assert_string_equal (m.s [2], "");
    assert_int_equal (m.len [2], 0);
    assert_int_equal (chat_send (outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_SESSION_REVOKED,
                                 NULL, "expired"), 0);
    assert_int_equal (s_recv (inbox, &m), 0);
    assert_int_equal (m.cmd, CHAT_CMD_SESSION_REVOKED);
    assert_string_equal (m.s [0], "");
    assert_int_equal (m.len [0], 0);
    assert_string_equal (m.s [1], "expired");

    //  A big field (64 KiB of content) grows the receive buffer
    size_t big = 65536;
    char *content = (char *) malloc (big + 1);
    memset (content, 'z', big);
    content [big] = 0;
    assert_int_equal (chat_send (outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_PRIVATE_MESSAGE,
                                 (uint64_t) 1, (uint64_t) 2, "alice", (uint64_t) 3, "c-1", content), 0);
    assert_int_equal (s_recv (inbox, &m), 0);
    assert_int_equal (m.len [5], big);
    assert_memory_equal (m.s [5], content, big);
    assert_int_equal (m.s [5][big], 0);
    free (content);

    chat_msg_release (&m);
    chat_outbox_destroy (&outbox);
    assert_null (outbox);
    zsock_destroy (&inbox);
}

//  A held outbox sends nothing until it is flushed, then everything in
//  order, to each peer; a long hold goes out in pieces of
//  CHAT_OUTBOX_HOLD_MAX; destroy flushes what is still held
static void
test_hold (void **state)
{
    (void) state;
    zsock_t *hub = chat_inbox_new (CHAT_ACTOR_HUB);
    zsock_t *presence = chat_inbox_new (CHAT_ACTOR_PRESENCE);
    assert_non_null (hub);
    assert_non_null (presence);
    chat_outbox_t *outbox = chat_outbox_new (CHAT_ACTOR_WS_FRONT, NULL);
    chat_msg_t m;
    chat_msg_init (&m);

    chat_outbox_hold (outbox);
    //  The arguments may go away once chat_send returns
    for (uint64_t i = 1; i <= 3; i++) {
        char nickname [16];
        snprintf (nickname, sizeof nickname, "user-%" PRIu64, i);
        assert_int_equal (chat_send (outbox, CHAT_ACTOR_HUB, CHAT_CMD_JOIN, i, i * 10, nickname), 0);
        memset (nickname, 'x', sizeof nickname - 1);
    }
    assert_int_equal (chat_send (outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_LIST_USERS, (uint64_t) 99), 0);
    zclock_sleep (50);
    assert_int_equal (chat_msg_recv (hub, &m, true), 1);
    assert_int_equal (chat_msg_recv (presence, &m, true), 1);

    assert_int_equal (chat_outbox_flush (outbox), 0);
    for (uint64_t i = 1; i <= 3; i++) {
        char nickname [16];
        snprintf (nickname, sizeof nickname, "user-%" PRIu64, i);
        assert_int_equal (s_recv (hub, &m), 0);
        assert_int_equal (m.cmd, CHAT_CMD_JOIN);
        assert_int_equal (m.u [0], i);
        assert_int_equal (m.u [1], i * 10);
        assert_string_equal (m.s [2], nickname);
    }
    assert_int_equal (s_recv (presence, &m), 0);
    assert_int_equal (m.cmd, CHAT_CMD_LIST_USERS);
    assert_int_equal (m.u [0], 99);

    //  Not held any more: a send goes at once
    assert_int_equal (chat_send (outbox, CHAT_ACTOR_HUB, CHAT_CMD_LIST_USERS, (uint64_t) 7), 0);
    assert_int_equal (s_recv (hub, &m), 0);
    assert_int_equal (m.u [0], 7);

    //  A long hold: the first CHAT_OUTBOX_HOLD_MAX leave when the next is
    //  queued, the rest on flush, all in order
    chat_outbox_hold (outbox);
    uint64_t total = CHAT_OUTBOX_HOLD_MAX + 10;
    for (uint64_t i = 0; i < total; i++)
        assert_int_equal (chat_send (outbox, CHAT_ACTOR_HUB, CHAT_CMD_LIST_USERS, i), 0);
    for (uint64_t i = 0; i < CHAT_OUTBOX_HOLD_MAX; i++) {
        assert_int_equal (s_recv (hub, &m), 0);
        assert_int_equal (m.u [0], i);
    }
    zclock_sleep (50);
    assert_int_equal (chat_msg_recv (hub, &m, true), 1);
    assert_int_equal (chat_outbox_flush (outbox), 0);
    for (uint64_t i = CHAT_OUTBOX_HOLD_MAX; i < total; i++) {
        assert_int_equal (s_recv (hub, &m), 0);
        assert_int_equal (m.u [0], i);
    }

    //  Destroy sends what is still held
    chat_outbox_hold (outbox);
    assert_int_equal (chat_send (outbox, CHAT_ACTOR_HUB, CHAT_CMD_LIST_USERS, (uint64_t) 1234), 0);
    chat_outbox_destroy (&outbox);
    assert_int_equal (s_recv (hub, &m), 0);
    assert_int_equal (m.u [0], 1234);

    chat_msg_release (&m);
    zsock_destroy (&hub);
    zsock_destroy (&presence);
}

//  chat_sendn: explicit lengths, so fields may hold any bytes
static void
test_sendn (void **state)
{
    (void) state;
    zsock_t *inbox = chat_inbox_new (CHAT_ACTOR_HUB);
    assert_non_null (inbox);
    chat_outbox_t *outbox = chat_outbox_new (CHAT_ACTOR_RATE_LIMITER, NULL);
    chat_msg_t m;
    chat_msg_init (&m);

    const char content [] = "a\0b\0c";
    const char *nickname = "alice-and-more";
    assert_int_equal (chat_sendn (outbox, CHAT_ACTOR_HUB, CHAT_CMD_PRIVATE_MESSAGE,
                                  (uint64_t) 7, (uint64_t) 8,
                                  nickname, (size_t) 5,
                                  (uint64_t) 9,
                                  NULL, (size_t) 0,
                                  content, sizeof content - 1), 0);
    assert_int_equal (s_recv (inbox, &m), 0);
    assert_int_equal (m.cmd, CHAT_CMD_PRIVATE_MESSAGE);
    assert_int_equal (m.u [0], 7);
    assert_int_equal (m.u [1], 8);
    assert_string_equal (m.s [2], "alice");
    assert_int_equal (m.len [2], 5);
    assert_int_equal (m.u [3], 9);
    assert_int_equal (m.len [4], 0);
    assert_string_equal (m.s [4], "");
    assert_int_equal (m.len [5], sizeof content - 1);
    assert_memory_equal (m.s [5], content, sizeof content - 1);

    //  Fields received later do not disturb a smaller buffer's contents
    assert_int_equal (chat_send (outbox, CHAT_ACTOR_HUB, CHAT_CMD_LIST_USERS, (uint64_t) 42), 0);
    assert_int_equal (s_recv (inbox, &m), 0);
    assert_int_equal (m.cmd, CHAT_CMD_LIST_USERS);
    assert_int_equal (m.nfields, 1);
    assert_int_equal (m.u [0], 42);

    //  chat_msg_decode on a zmsg the caller keeps
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, "user_online");
    zmsg_append (msg, &(zframe_t *) { chat_msg_body ((const char *[]) { "5", "bob" }, 2) });
    assert_int_equal (chat_msg_decode (msg, &m), 0);
    assert_int_equal (m.cmd, CHAT_CMD_USER_ONLINE);
    assert_int_equal (m.u [0], 5);
    assert_string_equal (m.s [1], "bob");
    assert_int_equal (zmsg_size (msg), 2);
    //  ... and a zmsg of one frame a field, as chatd once sent, is refused
    zmsg_t *old = zmsg_new ();
    zmsg_addstr (old, "user_online");
    zmsg_addstr (old, "5");
    zmsg_addstr (old, "bob");
    assert_int_equal (chat_msg_decode (old, &m), -1);
    zmsg_destroy (&old);
    zmsg_destroy (&msg);

    chat_msg_release (&m);
    chat_outbox_destroy (&outbox);
    zsock_destroy (&inbox);
}


//  --------------------------------------------------------------------------
//  chat_forward passes every command on as received, held or not, and the
//  forwarded message stays readable where it was received

static void
test_forward (void **state)
{
    (void) state;
    zsock_t *middle = chat_inbox_new (CHAT_ACTOR_RATE_LIMITER);
    zsock_t *last = chat_inbox_new (CHAT_ACTOR_PERSISTENCE);
    assert_non_null (middle);
    assert_non_null (last);
    chat_outbox_t *first_out = chat_outbox_new (CHAT_ACTOR_WS_FRONT, NULL);
    chat_outbox_t *middle_out = chat_outbox_new (CHAT_ACTOR_RATE_LIMITER, NULL);
    chat_msg_t m, forwarded;
    chat_msg_init (&m);
    chat_msg_init (&forwarded);

    for (int held = 0; held < 2; held++)
        for (int i = 0; i < CHAT_CMD_COUNT; i++) {
            chat_cmd_t cmd = (chat_cmd_t) i;
            assert_int_equal (s_send_sample (first_out, CHAT_ACTOR_RATE_LIMITER, cmd), 0);
            assert_int_equal (s_recv (middle, &m), 0);
            if (held)
                chat_outbox_hold (middle_out);
            assert_int_equal (chat_forward (middle_out, CHAT_ACTOR_PERSISTENCE, &m), 0);
            if (held) {
                assert_int_equal (chat_msg_recv (last, &forwarded, true), 1);
                assert_int_equal (chat_outbox_flush (middle_out), 0);
            }
            assert_int_equal (s_recv (last, &forwarded), 0);
            s_check_sample (&forwarded, cmd);
            s_check_sample (&m, cmd);
        }

    chat_msg_release (&m);
    chat_msg_release (&forwarded);
    chat_outbox_destroy (&first_out);
    chat_outbox_destroy (&middle_out);
    zsock_destroy (&middle);
    zsock_destroy (&last);
}


//  --------------------------------------------------------------------------
//  chat_zloop_watch: what waited before the loop started is read, a drain
//  that stops early is called again before the loop sleeps, a message sent
//  while it sleeps wakes it, and a drain's -1 ends the loop

typedef struct {
    zsock_t *inbox;                     //  Watched
    chat_outbox_t *outbox;              //  Sends to it
    chat_msg_t msg;                     //  Received
    uint64_t received;                  //  list_users received, in order
    int calls;                          //  Drain calls
    bool timed_out;                     //  The 2 s guard fired
} watch_test_t;

//  Reads at most two messages a call; ends the loop at the seventh
static int
s_watch_drain (void *arg)
{
    watch_test_t *test = (watch_test_t *) arg;
    test->calls++;
    for (int count = 0; count < 2; count++) {
        int rc = chat_msg_recv (test->inbox, &test->msg, true);
        if (rc == 1)
            return 0;
        assert_int_equal (rc, 0);
        assert_int_equal (test->msg.u [0], test->received + 1);
        if (++test->received == 7)
            return -1;
    }
    return 1;
}

//  While the loop sleeps: one more message
static int
s_watch_send_late (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop; (void) timer_id;
    watch_test_t *test = (watch_test_t *) arg;
    assert_int_equal (test->received, 6);
    return chat_send (test->outbox, CHAT_ACTOR_HUB, CHAT_CMD_LIST_USERS, (uint64_t) 7);
}

static int
s_watch_guard (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop; (void) timer_id;
    ((watch_test_t *) arg)->timed_out = true;
    return -1;
}

static void
test_zloop_watch (void **state)
{
    (void) state;
    watch_test_t test = { 0 };
    test.inbox = chat_inbox_new (CHAT_ACTOR_HUB);
    assert_non_null (test.inbox);
    test.outbox = chat_outbox_new (CHAT_ACTOR_WS_FRONT, NULL);
    chat_msg_init (&test.msg);
    for (uint64_t id = 1; id <= 6; id++)
        assert_int_equal (chat_send (test.outbox, CHAT_ACTOR_HUB, CHAT_CMD_LIST_USERS, id), 0);
    //  Reading the socket's events now takes its edge before the loop runs
    assert_true (zsock_events (test.inbox) & ZMQ_POLLIN);

    zloop_t *loop = zloop_new ();
    chat_watch_t watch;
    assert_int_equal (chat_zloop_watch (loop, test.inbox, &watch, s_watch_drain, &test), 0);
    zloop_timer (loop, 100, 1, s_watch_send_late, &test);
    zloop_timer (loop, 2000, 1, s_watch_guard, &test);
    assert_int_equal (zloop_start (loop), -1);
    assert_false (test.timed_out);
    assert_int_equal (test.received, 7);
    //  Six waiting, and no edge for them: three calls of two (the third
    //  ends on its limit, not on an empty inbox) and one that finds the
    //  inbox empty came from the re-runs alone (s_watch_send_late checked
    //  that all six were read before it); then the late one
    assert_true (test.calls >= 5);

    zloop_destroy (&loop);
    chat_msg_release (&test.msg);
    chat_outbox_destroy (&test.outbox);
    zsock_destroy (&test.inbox);
}


//  chat_pipe_drain: every command waiting is handed over in order, $TERM
//  ends it; an empty pipe returns 0

static void
s_record_command (void *arg, const char *command)
{
    char *seen = (char *) arg;
    strcat (seen, command);
    strcat (seen, ";");
}

static void
test_pipe_drain (void **state)
{
    (void) state;
    zsock_t *actor_end = zsock_new_pair ("@inproc://test-pipe-drain");
    zsock_t *caller_end = zsock_new_pair (">inproc://test-pipe-drain");
    assert_non_null (actor_end);
    assert_non_null (caller_end);
    char seen [64] = "";
    assert_int_equal (chat_pipe_drain (actor_end, s_record_command, seen), 0);
    zstr_send (caller_end, "STATUS");
    zstr_send (caller_end, "FOO");
    zclock_sleep (50);
    assert_int_equal (chat_pipe_drain (actor_end, s_record_command, seen), 0);
    assert_string_equal (seen, "STATUS;FOO;");
    zstr_send (caller_end, "STATUS");
    zstr_send (caller_end, "$TERM");
    zstr_send (caller_end, "AFTER");
    zclock_sleep (50);
    assert_int_equal (chat_pipe_drain (actor_end, s_record_command, seen), -1);
    assert_string_equal (seen, "STATUS;FOO;STATUS;");
    zsock_destroy (&caller_end);
    zsock_destroy (&actor_end);
}


//  --------------------------------------------------------------------------
//  Malformed messages are refused, whole, and the next one is read

//  Push a raw message: a command frame and a body of the given fields
//  (NULL-terminated)
static void
s_push_raw (zsock_t *push, const char *command, ...)
{
    const char *fields [CHAT_MAX_FIELDS + 1];
    int count = 0;
    va_list args;
    va_start (args, command);
    for (const char *field = va_arg (args, const char *); field; field = va_arg (args, const char *))
        fields [count++] = field;
    va_end (args);
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, command);
    zframe_t *body = chat_msg_body (fields, count);
    assert_non_null (body);
    zmsg_append (msg, &body);
    assert_int_equal (zmsg_send (&msg, push), 0);
}

//  Push a message of a command frame and a body given as raw bytes
static void
s_push_bytes (zsock_t *push, const char *command, const void *body, size_t size)
{
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, command);
    zmsg_addmem (msg, body, size);
    assert_int_equal (zmsg_send (&msg, push), 0);
}

//  The good message behind a bad one is read next, whole
static void
s_expect_good_after_bad (zsock_t *inbox, chat_outbox_t *outbox, chat_msg_t *m,
                         uint64_t marker, const char *why)
{
    assert_int_equal (chat_send (outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_LEAVE,
                                 marker, (uint64_t) 77, "carol"), 0);
    if (s_recv (inbox, m) != -1)
        fail_msg ("accepted: %s", why);
    assert_int_equal (chat_msg_recv (inbox, m, true), 0);
    assert_int_equal (m->cmd, CHAT_CMD_LEAVE);
    assert_int_equal (m->u [0], marker);
    assert_int_equal (m->u [1], 77);
    assert_string_equal (m->s [2], "carol");
    assert_int_equal (chat_msg_recv (inbox, m, true), 1);
}

static void
test_malformed (void **state)
{
    (void) state;
    zsock_t *inbox = chat_inbox_new (CHAT_ACTOR_PRESENCE);
    assert_non_null (inbox);
    zsock_t *push = zsock_new_push (">inproc://chatd-presence");
    assert_non_null (push);
    chat_outbox_t *outbox = chat_outbox_new (CHAT_ACTOR_HUB, NULL);
    chat_msg_t m;
    chat_msg_init (&m);

    struct { const char *frames [7]; const char *why; } bad [] = {
        { { "join", "1", "2", NULL }, "too few fields" },
        { { "join", "1", "2", "bob", "extra", NULL }, "too many fields" },
        { { "join", NULL }, "no fields" },
        { { "join", "x", "2", "bob", NULL }, "non-numeric u" },
        { { "join", "1", "2x", "bob", NULL }, "trailing junk in u" },
        { { "join", "", "2", "bob", NULL }, "empty u" },
        { { "join", "-1", "2", "bob", NULL }, "negative u" },
        { { "join", " 1", "2", "bob", NULL }, "space in u" },
        { { "join", "+1", "2", "bob", NULL }, "plus in u" },
        { { "join", "18446744073709551616", "2", "bob", NULL }, "u above 2^64-1" },
        { { "join", "123456789012345678901", "2", "bob", NULL }, "21 digits" },
        { { "frobnicate", "1", NULL }, "unknown command" },
        { { "JOIN", "1", "2", "bob", NULL }, "upper case command" },
        { { "", "1", "2", "bob", NULL }, "empty command" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        const char *const *f = bad [i].frames;
        s_push_raw (push, f [0], f [1], f [2], f [3], f [4], f [5], NULL);
        s_expect_good_after_bad (inbox, outbox, &m, i + 1, bad [i].why);
    }
    //  Bodies that are not whole fields: the length runs past the end, the
    //  NUL is missing, bytes follow the last field, a length is cut
    struct { const char *body; size_t size; const char *why; } bodies [] = {
        { "\x01\0\0\0" "1\0" "\x01\0\0\0" "2\0" "\x09\0\0\0" "bob\0", 21, "length past the end" },
        { "\x01\0\0\0" "1\0" "\x01\0\0\0" "2\0" "\x03\0\0\0" "bobX", 20, "no NUL" },
        { "\x01\0\0\0" "1\0" "\x01\0\0\0" "2\0" "\x03\0\0\0" "bob\0" "?", 21, "trailing byte" },
        { "\x01\0\0\0" "1\0" "\x01\0\0\0" "2\0" "\x03\0", 14, "cut length" },
        { "\xff\xff\xff\xff" "1\0", 6, "huge length" },
        { "", 0, "empty body" },
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies [0]; i++) {
        s_push_bytes (push, "join", bodies [i].body, bodies [i].size);
        s_expect_good_after_bad (inbox, outbox, &m, 100 + i, bodies [i].why);
    }
    //  ... while the same bytes done right decode
    s_push_bytes (push, "join", "\x01\0\0\0" "1\0" "\x01\0\0\0" "2\0" "\x03\0\0\0" "bob\0", 20);
    assert_int_equal (s_recv (inbox, &m), 0);
    assert_int_equal (m.u [0], 1);
    assert_int_equal (m.u [1], 2);
    assert_string_equal (m.s [2], "bob");

    //  One frame a field, a lone command frame, and a third frame are refused
    zmsg_t *msg = zmsg_new ();
    zmsg_addstr (msg, "join");
    zmsg_addstr (msg, "1");
    zmsg_addstr (msg, "2");
    zmsg_addstr (msg, "bob");
    assert_int_equal (zmsg_send (&msg, push), 0);
    s_expect_good_after_bad (inbox, outbox, &m, 200, "one frame a field");
    zstr_send (push, "join");
    s_expect_good_after_bad (inbox, outbox, &m, 201, "no body frame");
    msg = zmsg_new ();
    zmsg_addstr (msg, "join");
    zmsg_append (msg, &(zframe_t *) { chat_msg_body ((const char *[]) { "1", "2", "bob" }, 3) });
    zmsg_addstr (msg, "extra");
    assert_int_equal (zmsg_send (&msg, push), 0);
    s_expect_good_after_bad (inbox, outbox, &m, 202, "a frame after the body");

    //  The largest number is fine, leading zeros too
    s_push_raw (push, "join", "18446744073709551615", "007", "bob", NULL);
    assert_int_equal (s_recv (inbox, &m), 0);
    assert_true (m.u [0] == UINT64_MAX);
    assert_int_equal (m.u [1], 7);

    chat_msg_release (&m);
    chat_outbox_destroy (&outbox);
    zsock_destroy (&push);
    zsock_destroy (&inbox);
}


//  --------------------------------------------------------------------------
//  Connection id lists

static void
test_ids_next (void **state)
{
    (void) state;
    struct { const char *list; uint64_t ids [8]; int count; } cases [] = {
        { "", { 0 }, 0 },
        { "42", { 42 }, 1 },
        { "1,2,3", { 1, 2, 3 }, 3 },
        { ",5,,6,", { 5, 6 }, 2 },
        { "0", { 0 }, 1 },
        { "18446744073709551615,1", { UINT64_MAX, 1 }, 2 },
        { "7x,8", { 7 }, 1 },                 //  Stops at junk
        { "x", { 0 }, 0 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases [0]; c++) {
        const char *cursor = cases [c].list;
        uint64_t id;
        int count = 0;
        while (chat_ids_next (&cursor, &id)) {
            assert_true (count < cases [c].count);
            assert_true (id == cases [c].ids [count]);
            count++;
        }
        if (count != cases [c].count)
            fail_msg ("\"%s\": %d ids, expected %d", cases [c].list, count, cases [c].count);
    }
}


//  --------------------------------------------------------------------------
//  The start-up handshake

static void
s_ready_actor (zsock_t *pipe, void *args)
{
    const char *error = (const char *) args;
    zsock_signal (pipe, 0);
    chat_actor_report (pipe, error);
    if (error)
        return;
    while (true) {
        char *command = zstr_recv (pipe);
        bool term = !command || streq (command, "$TERM");
        zstr_free (&command);
        if (term)
            break;
    }
}

static void
test_actor_started (void **state)
{
    (void) state;
    char error [64] = "untouched";
    zactor_t *actor = zactor_new (s_ready_actor, NULL);
    assert_int_equal (chat_actor_started (actor, error, sizeof error), 0);
    assert_string_equal (error, "untouched");
    zactor_destroy (&actor);

    actor = zactor_new (s_ready_actor, (void *) "cannot open /nowhere/chat.db: No such file");
    assert_int_equal (chat_actor_started (actor, error, sizeof error), -1);
    assert_string_equal (error, "cannot open /nowhere/chat.db: No such file");
    zactor_destroy (&actor);

    //  A small buffer gets the start of the reason
    char small [8];
    actor = zactor_new (s_ready_actor, (void *) "database is locked");
    assert_int_equal (chat_actor_started (actor, small, sizeof small), -1);
    assert_string_equal (small, "databas");
    zactor_destroy (&actor);

    //  No buffer at all
    actor = zactor_new (s_ready_actor, (void *) "bad");
    assert_int_equal (chat_actor_started (actor, NULL, 0), -1);
    zactor_destroy (&actor);

}


//  --------------------------------------------------------------------------
//  The tap: every message sent is also published as [from, to, command,
//  fields...] to CHAT_TAP_INPROC

//  Receive one multipart message from the tap, or NULL after timeout_ms
static zmsg_t *
s_tap_recv (zsock_t *sub, int timeout_ms)
{
    zpoller_t *poller = zpoller_new (sub, NULL);
    void *which = zpoller_wait (poller, timeout_ms);
    zpoller_destroy (&poller);
    return which ? zmsg_recv (sub) : NULL;
}

static void
s_drain (zsock_t *sock)
{
    while (zsock_events (sock) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv (sock);
        zmsg_destroy (&msg);
    }
}

static void
test_tap (void **state)
{
    (void) state;
    zsock_t *sub = zsock_new (ZMQ_SUB);
    assert_non_null (sub);
    zsock_set_subscribe (sub, "");
    assert_int_equal (zsock_bind (sub, "%s", CHAT_TAP_INPROC), 0);
    zsock_t *inbox = chat_inbox_new (CHAT_ACTOR_HUB);
    assert_non_null (inbox);
    chat_outbox_t *tapped = chat_outbox_new (CHAT_ACTOR_WS_FRONT, "ipc:///tmp/chatd-tap-unused");
    chat_outbox_t *silent = chat_outbox_new (CHAT_ACTOR_AUTH, "");
    chat_outbox_t *silent2 = chat_outbox_new (CHAT_ACTOR_PRESENCE, NULL);
    chat_msg_t m;
    chat_msg_init (&m);

    //  The subscription reaches the publisher asynchronously: send until
    //  the tap sees something, then start from a clean slate
    zmsg_t *msg = NULL;
    for (int attempt = 0; attempt < 200 && !msg; attempt++) {
        chat_send (tapped, CHAT_ACTOR_HUB, CHAT_CMD_LIST_USERS, (uint64_t) attempt);
        msg = s_tap_recv (sub, 10);
    }
    assert_non_null (msg);
    zmsg_destroy (&msg);
    zclock_sleep (50);
    s_drain (sub);
    s_drain (inbox);

    //  Every command is published exactly as sent, with sender and receiver
    for (int i = 0; i < CHAT_CMD_COUNT; i++) {
        chat_cmd_t cmd = (chat_cmd_t) i;
        assert_int_equal (s_send_sample (tapped, CHAT_ACTOR_HUB, cmd), 0);
        msg = s_tap_recv (sub, 2000);
        assert_non_null (msg);
        //  sender, receiver, command, body
        assert_int_equal (zmsg_size (msg), 4);
        char *from = zmsg_popstr (msg);
        char *to = zmsg_popstr (msg);
        assert_string_equal (from, "ws-front");
        assert_string_equal (to, "hub");
        zstr_free (&from);
        zstr_free (&to);
        //  The rest is the message itself, which decodes like the original
        assert_int_equal (chat_msg_decode (msg, &m), 0);
        s_check_sample (&m, cmd);
        zmsg_destroy (&msg);
        //  ... and the receiver got it too
        assert_int_equal (s_recv (inbox, &m), 0);
        s_check_sample (&m, cmd);
    }

    //  Outboxes without a tap publish nothing, but still deliver
    assert_int_equal (chat_send (silent, CHAT_ACTOR_HUB, CHAT_CMD_LIST_USERS, (uint64_t) 1), 0);
    assert_int_equal (chat_send (silent2, CHAT_ACTOR_HUB, CHAT_CMD_LIST_USERS, (uint64_t) 2), 0);
    //  (from two sockets: in either order)
    assert_int_equal (s_recv (inbox, &m), 0);
    uint64_t first = m.u [0];
    assert_int_equal (s_recv (inbox, &m), 0);
    assert_int_equal (first + m.u [0], 3);
    assert_true (first != m.u [0]);
    msg = s_tap_recv (sub, 200);
    assert_null (msg);

    chat_msg_release (&m);
    chat_outbox_destroy (&tapped);
    chat_outbox_destroy (&silent);
    chat_outbox_destroy (&silent2);
    zsock_destroy (&inbox);
    zsock_destroy (&sub);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_teardown (test_table, s_teardown),
        cmocka_unit_test_teardown (test_round_trip, s_teardown),
        cmocka_unit_test_teardown (test_hold, s_teardown),
        cmocka_unit_test_teardown (test_sendn, s_teardown),
        cmocka_unit_test_teardown (test_forward, s_teardown),
        cmocka_unit_test_teardown (test_zloop_watch, s_teardown),
        cmocka_unit_test_teardown (test_pipe_drain, s_teardown),
        cmocka_unit_test_teardown (test_malformed, s_teardown),
        cmocka_unit_test_teardown (test_ids_next, s_teardown),
        cmocka_unit_test_teardown (test_actor_started, s_teardown),
        cmocka_unit_test_teardown (test_tap, s_teardown),
    };
    //  CHAT_TEST_FILTER=test_tap runs only the tests matching the pattern
    if (getenv ("CHAT_TEST_FILTER"))
        cmocka_set_test_filter (getenv ("CHAT_TEST_FILTER"));
    return cmocka_run_group_tests (tests, NULL, NULL);
}
