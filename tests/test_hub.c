/*  =========================================================================
    test_hub.c - the hub actor alone, with its neighbours played by peers

    ws-front, rate-limiter, persistence and presence are chat_peer_t's; the
    hub is the real actor over inproc sockets.
    =========================================================================
*/

#include "test_util.h"
#include "chat_actors.h"
#include <inttypes.h>

typedef struct {
    chat_config_t cfg;                  //  Defaults
    zactor_t *hub;                      //  The actor under test
    chat_peer_t *ws_front;              //  Sends join/leave, receives deliver_*
    chat_peer_t *rate_limiter;          //  Sends typing
    chat_peer_t *persistence;           //  Sends message_stored, messages_read
    chat_peer_t *presence;              //  Receives join/leave
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *f = (fixture_t *) zmalloc (sizeof (fixture_t));
    chat_config_defaults (&f->cfg);
    f->ws_front = chat_peer_new (CHAT_ACTOR_WS_FRONT);
    f->rate_limiter = chat_peer_new (CHAT_ACTOR_RATE_LIMITER);
    f->persistence = chat_peer_new (CHAT_ACTOR_PERSISTENCE);
    f->presence = chat_peer_new (CHAT_ACTOR_PRESENCE);
    f->hub = chat_test_start (chat_hub_actor, &f->cfg);
    *state = f;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    zactor_destroy (&f->hub);
    chat_peer_destroy (&f->ws_front);
    chat_peer_destroy (&f->rate_limiter);
    chat_peer_destroy (&f->persistence);
    chat_peer_destroy (&f->presence);
    free (f);
    //  libzmq releases inproc endpoints on its reaper thread: give it a
    //  moment before the next test binds them again
    zclock_sleep (100);
    return 0;
}

//  join through the hub; waits until presence got the forwarded join, so
//  the route is in place when this returns
static void
s_join (fixture_t *f, uint64_t conn_id, uint64_t user_id, const char *nickname)
{
    chat_send (f->ws_front->outbox, CHAT_ACTOR_HUB, CHAT_CMD_JOIN, conn_id, user_id, nickname);
    chat_msg_t *m = chat_peer_expect (f->presence, CHAT_CMD_JOIN, 2000);
    assert_int_equal (m->u [0], conn_id);
    assert_int_equal (m->u [1], user_id);
    assert_string_equal (m->s [2], nickname);
}

static void
s_leave (fixture_t *f, uint64_t conn_id, uint64_t user_id, const char *nickname)
{
    chat_send (f->ws_front->outbox, CHAT_ACTOR_HUB, CHAT_CMD_LEAVE, conn_id, user_id, nickname);
    chat_msg_t *m = chat_peer_expect (f->presence, CHAT_CMD_LEAVE, 2000);
    assert_int_equal (m->u [0], conn_id);
    assert_int_equal (m->u [1], user_id);
    assert_string_equal (m->s [2], nickname);
}

static int
s_cmp_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y? -1: x > y? 1: 0;
}

//  Assert that a conn_ids list holds exactly the expected ids (any order)
static void
s_assert_ids (const char *list, const uint64_t *expected, size_t count)
{
    uint64_t got [64];
    size_t n = 0;
    const char *cursor = list;
    uint64_t id;
    while (chat_ids_next (&cursor, &id)) {
        assert_true (n < 64);
        got [n++] = id;
    }
    assert_int_equal (*cursor, 0);
    assert_int_equal (n, count);
    uint64_t want [64];
    if (count)
        memcpy (want, expected, count * sizeof (uint64_t));
    qsort (got, n, sizeof (uint64_t), s_cmp_u64);
    qsort (want, count, sizeof (uint64_t), s_cmp_u64);
    for (size_t i = 0; i < n; i++)
        assert_int_equal (got [i], want [i]);
}

static const char s_content [] = "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80, \"quoted\"\n";

static void
s_stored (fixture_t *f, uint64_t conn_id, uint64_t message_id, uint64_t from,
          uint64_t to, uint64_t duplicate)
{
    chat_send (f->persistence->outbox, CHAT_ACTOR_HUB, CHAT_CMD_MESSAGE_STORED,
               conn_id, message_id, from, "alice", to, "c-1", s_content,
               "2026-11-25T17:00:00.123Z", duplicate);
}

//  Check a deliver_message; returns it
static chat_msg_t *
s_expect_deliver (fixture_t *f, uint64_t conn_id, uint64_t message_id, uint64_t from,
                  uint64_t to, const uint64_t *ids, size_t count, uint64_t online,
                  uint64_t duplicate)
{
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_DELIVER_MESSAGE, 2000);
    assert_int_equal (m->u [0], conn_id);
    s_assert_ids (m->s [1], ids, count);
    assert_int_equal (m->u [2], message_id);
    assert_int_equal (m->u [3], from);
    assert_string_equal (m->s [4], "alice");
    assert_int_equal (m->u [5], to);
    assert_string_equal (m->s [6], "c-1");
    assert_int_equal (m->len [7], strlen (s_content));
    assert_memory_equal (m->s [7], s_content, strlen (s_content));
    assert_string_equal (m->s [8], "2026-11-25T17:00:00.123Z");
    assert_int_equal (m->u [9], online);
    assert_int_equal (m->u [10], duplicate);
    return m;
}

static void
test_routes_to_every_connection (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_join (f, 11, 1, "alice");
    s_join (f, 12, 1, "alice");
    s_join (f, 21, 2, "bob");
    s_join (f, 22, 2, "bob");
    s_stored (f, 11, 100, 1, 2, 0);
    uint64_t ids [] = { 12, 21, 22 };
    s_expect_deliver (f, 11, 100, 1, 2, ids, 3, 1, 0);

    //  From the other connection of the sender
    s_stored (f, 12, 101, 1, 2, 0);
    uint64_t ids2 [] = { 11, 21, 22 };
    s_expect_deliver (f, 12, 101, 1, 2, ids2, 3, 1, 0);
    chat_peer_expect_nothing (f->ws_front, 100);
}

static void
test_recipient_offline (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_join (f, 11, 1, "alice");
    s_join (f, 12, 1, "alice");
    s_stored (f, 11, 100, 1, 3, 0);
    uint64_t ids [] = { 12 };
    s_expect_deliver (f, 11, 100, 1, 3, ids, 1, 0, 0);

    //  The sender's only connection: nobody else to deliver to
    s_leave (f, 12, 1, "alice");
    s_stored (f, 11, 101, 1, 3, 0);
    chat_msg_t *m = s_expect_deliver (f, 11, 101, 1, 3, NULL, 0, 0, 0);
    assert_int_equal (m->len [1], 0);
}

static void
test_duplicate_not_delivered (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_join (f, 11, 1, "alice");
    s_join (f, 12, 1, "alice");
    s_join (f, 21, 2, "bob");
    s_stored (f, 11, 100, 1, 2, 1);
    chat_msg_t *m = s_expect_deliver (f, 11, 100, 1, 2, NULL, 0, 1, 1);
    assert_int_equal (m->len [1], 0);
}

static void
test_leave_shrinks_routes (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_join (f, 11, 1, "alice");
    s_join (f, 21, 2, "bob");
    s_join (f, 22, 2, "bob");
    s_leave (f, 21, 2, "bob");
    s_stored (f, 11, 100, 1, 2, 0);
    uint64_t ids [] = { 22 };
    s_expect_deliver (f, 11, 100, 1, 2, ids, 1, 1, 0);

    //  A repeated leave and a leave for an unknown user change nothing
    s_leave (f, 21, 2, "bob");
    s_leave (f, 99, 7, "nobody");
    s_stored (f, 11, 101, 1, 2, 0);
    s_expect_deliver (f, 11, 101, 1, 2, ids, 1, 1, 0);

    s_leave (f, 22, 2, "bob");
    s_stored (f, 11, 102, 1, 2, 0);
    s_expect_deliver (f, 11, 102, 1, 2, NULL, 0, 0, 0);

    //  Back again
    s_join (f, 23, 2, "bob");
    s_stored (f, 11, 103, 1, 2, 0);
    uint64_t ids2 [] = { 23 };
    s_expect_deliver (f, 11, 103, 1, 2, ids2, 1, 1, 0);
}

static void
test_typing (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_join (f, 11, 1, "alice");
    s_join (f, 21, 2, "bob");
    s_join (f, 22, 2, "bob");
    chat_send (f->rate_limiter->outbox, CHAT_ACTOR_HUB, CHAT_CMD_TYPING,
               (uint64_t) 11, (uint64_t) 1, "alice", (uint64_t) 2, (uint64_t) 1);
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_DELIVER_TYPING, 2000);
    uint64_t ids [] = { 21, 22 };
    s_assert_ids (m->s [0], ids, 2);
    assert_int_equal (m->u [1], 1);
    assert_string_equal (m->s [2], "alice");
    assert_int_equal (m->u [3], 1);

    //  Recipient without a connection: dropped
    chat_send (f->rate_limiter->outbox, CHAT_ACTOR_HUB, CHAT_CMD_TYPING,
               (uint64_t) 11, (uint64_t) 1, "alice", (uint64_t) 3, (uint64_t) 0);
    chat_peer_expect_nothing (f->ws_front, 200);
}

static void
test_messages_read (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_join (f, 11, 1, "alice");
    s_join (f, 12, 1, "alice");
    s_join (f, 21, 2, "bob");
    //  bob read alice's messages up to 100: alice's connections learn it
    chat_send (f->persistence->outbox, CHAT_ACTOR_HUB, CHAT_CMD_MESSAGES_READ,
               (uint64_t) 2, (uint64_t) 1, (uint64_t) 100);
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_DELIVER_READ, 2000);
    uint64_t ids [] = { 11, 12 };
    s_assert_ids (m->s [0], ids, 2);
    assert_int_equal (m->u [1], 2);
    assert_int_equal (m->u [2], 100);

    //  Partner without a connection: dropped
    chat_send (f->persistence->outbox, CHAT_ACTOR_HUB, CHAT_CMD_MESSAGES_READ,
               (uint64_t) 1, (uint64_t) 5, (uint64_t) 100);
    chat_peer_expect_nothing (f->ws_front, 200);
}

//  Many users, joins and leaves in mixed order: the table grows and
//  deletes without losing a route
static void
test_many_users (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    const uint64_t users = 1500;
    for (uint64_t u = 1; u <= users; u++) {
        chat_send (f->ws_front->outbox, CHAT_ACTOR_HUB, CHAT_CMD_JOIN, 1000 + u, u, "user");
        chat_send (f->ws_front->outbox, CHAT_ACTOR_HUB, CHAT_CMD_JOIN, 5000 + u, u, "user");
    }
    size_t sent = users * 2;
    //  Drop every other user and one connection of every third
    for (uint64_t u = 1; u <= users; u++) {
        if (u % 2 == 0) {
            chat_send (f->ws_front->outbox, CHAT_ACTOR_HUB, CHAT_CMD_LEAVE, 1000 + u, u, "user");
            chat_send (f->ws_front->outbox, CHAT_ACTOR_HUB, CHAT_CMD_LEAVE, 5000 + u, u, "user");
            sent += 2;
        }
        else
        if (u % 3 == 0) {
            chat_send (f->ws_front->outbox, CHAT_ACTOR_HUB, CHAT_CMD_LEAVE, 5000 + u, u, "user");
            sent++;
        }
    }
    //  Every join and leave reaches presence (one socket: in order)
    size_t forwarded = 0;
    while (forwarded < sent && chat_peer_recv (f->presence, 2000))
        forwarded++;
    assert_int_equal (forwarded, sent);

    for (uint64_t u = 1; u <= users; u++) {
        //  Sender 0 has no connection: conn_ids holds only the recipient's
        chat_send (f->rate_limiter->outbox, CHAT_ACTOR_HUB, CHAT_CMD_TYPING,
                   (uint64_t) 1, (uint64_t) 1000000, "user", u, (uint64_t) 1);
    }
    size_t delivered = 0;
    chat_msg_t *m;
    while ((m = chat_peer_recv (f->ws_front, 500))) {
        uint64_t ids [2];
        size_t n = 0;
        const char *cursor = m->s [0];
        uint64_t id;
        while (chat_ids_next (&cursor, &id) && n < 2)
            ids [n++] = id;
        assert_true (n >= 1);
        uint64_t u = ids [0] > 5000? ids [0] - 5000: ids [0] - 1000;
        assert_int_equal (u % 2, 1);
        if (u % 3 == 0) {
            uint64_t want [] = { 1000 + u };
            s_assert_ids (m->s [0], want, 1);
        }
        else {
            uint64_t want [] = { 1000 + u, 5000 + u };
            s_assert_ids (m->s [0], want, 2);
        }
        delivered++;
    }
    assert_int_equal (delivered, (users + 1) / 2);
}

int
main (void)
{
    zsys_init ();
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_routes_to_every_connection, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_recipient_offline, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_duplicate_not_delivered, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_leave_shrinks_routes, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_typing, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_messages_read, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_many_users, s_setup, s_teardown),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    zsys_shutdown ();
    return rc;
}
