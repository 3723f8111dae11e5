/*  =========================================================================
    test_rate_limiter.c - the rate-limiter actor alone, with its neighbours
    played by peers

    ws-front, hub and auth are chat_peer_t's; the rate-limiter is the real
    actor over inproc sockets. Everything sent to the actor goes through the
    ws-front peer's one socket (login_result too), so the actor sees it in
    the order the test sent it.
    =========================================================================
*/

#include "test_util.h"
#include "chat_actors.h"
#include <inttypes.h>
#include <jansson.h>

typedef struct {
    chat_config_t cfg;                  //  Defaults, adjusted per test
    zactor_t *limiter;                  //  The actor under test
    chat_peer_t *ws_front;              //  Sends everything, receives refusals
    chat_peer_t *persistence;           //  Receives admitted messages
    chat_peer_t *hub;                   //  Receives admitted typing
    chat_peer_t *auth;                  //  Receives admitted logins
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *f = (fixture_t *) zmalloc (sizeof (fixture_t));
    chat_config_defaults (&f->cfg);
    f->ws_front = chat_peer_new (CHAT_ACTOR_WS_FRONT);
    f->persistence = chat_peer_new (CHAT_ACTOR_PERSISTENCE);
    f->hub = chat_peer_new (CHAT_ACTOR_HUB);
    f->auth = chat_peer_new (CHAT_ACTOR_AUTH);
    *state = f;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    zactor_destroy (&f->limiter);
    chat_peer_destroy (&f->ws_front);
    chat_peer_destroy (&f->persistence);
    chat_peer_destroy (&f->hub);
    chat_peer_destroy (&f->auth);
    free (f);
    //  libzmq releases inproc endpoints on its reaper thread
    zclock_sleep (100);
    return 0;
}

static void
s_start (fixture_t *f)
{
    f->limiter = chat_test_start (chat_rate_limiter_actor, &f->cfg);
}

//  A private message from user 7 (conn 70) to user 9
static void
s_send_message (fixture_t *f, uint64_t user_id, const char *client_id, const char *content)
{
    chat_send (f->ws_front->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_PRIVATE_MESSAGE,
               user_id * 10, user_id, "alice", (uint64_t) 9, client_id, content);
}

//  Expect that message at persistence, every field unchanged
static void
s_expect_forwarded (fixture_t *f, uint64_t user_id, const char *client_id, const char *content)
{
    chat_msg_t *m = chat_peer_expect (f->persistence, CHAT_CMD_PRIVATE_MESSAGE, 2000);
    chat_peer_expect_nothing (f->hub, 0);
    assert_int_equal (m->u [0], user_id * 10);
    assert_int_equal (m->u [1], user_id);
    assert_string_equal (m->s [2], "alice");
    assert_int_equal (m->u [3], 9);
    assert_string_equal (m->s [4], client_id);
    assert_string_equal (m->s [5], content);
}

//  Expect a rate_limited refusal of client_id; returns retry_after_ms
static uint64_t
s_expect_refused (fixture_t *f, uint64_t user_id, const char *client_id)
{
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_MESSAGE_FAILED, 2000);
    assert_int_equal (m->u [0], user_id * 10);
    assert_string_equal (m->s [1], client_id);
    assert_int_equal (m->u [2], 9);
    assert_string_equal (m->s [3], "rate_limited");
    assert_true (m->len [4] > 0);
    assert_true (m->u [5] >= 1);
    return m->u [5];
}

//  Use up a bucket of burst messages, checking each one arrives at the hub
static void
s_use_burst (fixture_t *f, uint64_t user_id, int burst)
{
    for (int i = 0; i < burst; i++) {
        char client_id [32];
        snprintf (client_id, sizeof client_id, "c-%d", i);
        s_send_message (f, user_id, client_id, "héllo, wörld");
        s_expect_forwarded (f, user_id, client_id, "héllo, wörld");
    }
}


static void
test_burst_forwarded (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    f->cfg.rate_limit_messages_per_second = 1;
    f->cfg.rate_limit_burst = 5;
    s_start (f);
    s_use_burst (f, 7, 5);
    //  Another user has a bucket of its own
    s_send_message (f, 8, "other", "hi");
    s_expect_forwarded (f, 8, "other", "hi");
    chat_peer_expect_nothing (f->ws_front, 100);
}

static void
test_refused_past_burst (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    f->cfg.rate_limit_messages_per_second = 1;
    f->cfg.rate_limit_burst = 5;
    s_start (f);
    s_use_burst (f, 7, 5);
    s_send_message (f, 7, "c-over", "too much");
    uint64_t retry = s_expect_refused (f, 7, "c-over");
    //  One token per second, and the bucket was just emptied
    assert_true (retry >= 1 && retry <= 1000);
    chat_peer_expect_nothing (f->persistence, 100);
}

static void
test_refill (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    f->cfg.rate_limit_messages_per_second = 2;
    f->cfg.rate_limit_burst = 3;
    s_start (f);
    s_use_burst (f, 7, 3);
    s_send_message (f, 7, "c-over", "too soon");
    uint64_t retry = s_expect_refused (f, 7, "c-over");
    assert_true (retry <= 500);
    //  After retry_after_ms one token is there again
    zclock_sleep ((int) retry);
    s_send_message (f, 7, "c-again", "now");
    s_expect_forwarded (f, 7, "c-again", "now");
    chat_peer_expect_nothing (f->ws_front, 50);
}

static void
test_escalation (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    f->cfg.rate_limit_messages_per_second = 0.2;    //  One token every 5 s
    f->cfg.rate_limit_burst = 2;
    f->cfg.rate_limit_close_after = 3;
    s_start (f);
    s_use_burst (f, 7, 2);
    for (int i = 1; i <= 3; i++) {
        char client_id [32];
        snprintf (client_id, sizeof client_id, "r-%d", i);
        s_send_message (f, 7, client_id, "spam");
        uint64_t retry = s_expect_refused (f, 7, client_id);
        assert_true (retry > 1000 && retry <= 5000);
    }
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_CLOSE_CONNECTION, 2000);
    assert_int_equal (m->u [0], 70);
    assert_int_equal (m->u [1], 1008);
    assert_string_equal (m->s [2], "rate limit exceeded");
    //  The streak starts again: two more refusals close nothing
    s_send_message (f, 7, "r-4", "spam");
    s_expect_refused (f, 7, "r-4");
    s_send_message (f, 7, "r-5", "spam");
    s_expect_refused (f, 7, "r-5");
    chat_peer_expect_nothing (f->ws_front, 100);
    chat_peer_expect_nothing (f->persistence, 0);
}

static void
test_admitted_message_resets_streak (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    f->cfg.rate_limit_messages_per_second = 2;
    f->cfg.rate_limit_burst = 1;
    f->cfg.rate_limit_close_after = 3;
    s_start (f);
    s_use_burst (f, 7, 1);
    s_send_message (f, 7, "r-1", "spam");
    s_expect_refused (f, 7, "r-1");
    s_send_message (f, 7, "r-2", "spam");
    uint64_t retry = s_expect_refused (f, 7, "r-2");
    zclock_sleep ((int) retry);
    s_send_message (f, 7, "ok", "fine");
    s_expect_forwarded (f, 7, "ok", "fine");
    //  Two refusals after an admitted message are not three in a row
    s_send_message (f, 7, "r-3", "spam");
    s_expect_refused (f, 7, "r-3");
    s_send_message (f, 7, "r-4", "spam");
    s_expect_refused (f, 7, "r-4");
    chat_peer_expect_nothing (f->ws_front, 100);
}

static void
test_typing_excess_dropped (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    f->cfg.rate_limit_typing_per_second = 0.2;
    f->cfg.rate_limit_typing_burst = 2;
    s_start (f);
    for (int i = 0; i < 5; i++)
        chat_send (f->ws_front->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_TYPING,
                   (uint64_t) 70, (uint64_t) 7, "alice", (uint64_t) 9, (uint64_t) (i % 2));
    for (int i = 0; i < 2; i++) {
        chat_msg_t *m = chat_peer_expect (f->hub, CHAT_CMD_TYPING, 2000);
        assert_int_equal (m->u [0], 70);
        assert_int_equal (m->u [1], 7);
        assert_string_equal (m->s [2], "alice");
        assert_int_equal (m->u [3], 9);
        assert_int_equal (m->u [4], (uint64_t) (i % 2));
    }
    chat_peer_expect_nothing (f->hub, 200);
    chat_peer_expect_nothing (f->ws_front, 0);
    //  Typing has its own bucket: messages still go through
    s_send_message (f, 7, "c-1", "hello");
    s_expect_forwarded (f, 7, "c-1", "hello");
}


//  --- logins ---------------------------------------------------------------

static void
s_send_login (fixture_t *f, uint64_t req_id, const char *address, const char *nickname)
{
    chat_send (f->ws_front->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_LOGIN,
               req_id, address, nickname, "pass word 123");
}

static void
s_send_result (fixture_t *f, const char *address, const char *nickname, bool ok)
{
    chat_send (f->ws_front->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_LOGIN_RESULT,
               address, nickname, (uint64_t) (ok? 1: 0));
}

//  Expect the login at auth, unchanged; returns how long it took in ms
static int64_t
s_expect_login (fixture_t *f, int64_t sent_ms, uint64_t req_id, const char *address, const char *nickname)
{
    chat_msg_t *m = chat_peer_expect (f->auth, CHAT_CMD_LOGIN, 8000);
    int64_t took = zclock_mono () - sent_ms;
    assert_int_equal (m->u [0], req_id);
    assert_string_equal (m->s [1], address);
    assert_string_equal (m->s [2], nickname);
    assert_string_equal (m->s [3], "pass word 123");
    return took;
}

static void
s_expect_429 (fixture_t *f, uint64_t req_id)
{
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_HTTP_RESPONSE, 2000);
    assert_int_equal (m->u [0], req_id);
    assert_int_equal (m->u [1], 429);
    json_error_t error;
    json_t *body = json_loads (m->s [2], 0, &error);
    assert_non_null (body);
    assert_string_equal (json_string_value (json_object_get (body, "error")), "rate_limited");
    assert_non_null (json_string_value (json_object_get (body, "message")));
    json_decref (body);
    assert_string_equal (m->s [3], "");
}

static void
s_login_config (fixture_t *f)
{
    f->cfg.rate_limit_login_slow_after = 2;
    f->cfg.rate_limit_login_max_failures = 4;
    f->cfg.rate_limit_login_window_s = 60;
}

static void
test_login_slowed_then_refused (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_login_config (f);
    s_start (f);
    //  No failures yet: forwarded at once
    int64_t sent = zclock_mono ();
    s_send_login (f, 1, "10.0.0.1", "Alice");
    s_expect_login (f, sent, 1, "10.0.0.1", "Alice");
    //  Two failures (the nickname in any case): slowed by 250 ms
    s_send_result (f, "10.0.0.1", "alice", false);
    s_send_result (f, "10.0.0.1", "ALICE", false);
    sent = zclock_mono ();
    s_send_login (f, 2, "10.0.0.1", "Alice");
    chat_peer_expect_nothing (f->auth, 150);
    int64_t took = s_expect_login (f, sent, 2, "10.0.0.1", "Alice");
    assert_true (took >= 240);
    //  Three: 500 ms, from another address too (the nickname counts)
    s_send_result (f, "10.0.0.1", "Alice", false);
    sent = zclock_mono ();
    s_send_login (f, 3, "10.0.0.2", "aLiCe");
    took = s_expect_login (f, sent, 3, "10.0.0.2", "aLiCe");
    assert_true (took >= 490);
    //  Four: refused, for the nickname from anywhere and for anyone from
    //  that address
    s_send_result (f, "10.0.0.1", "alice", false);
    s_send_login (f, 4, "10.0.0.3", "alice");
    s_expect_429 (f, 4);
    s_send_login (f, 5, "10.0.0.1", "bob");
    s_expect_429 (f, 5);
    chat_peer_expect_nothing (f->auth, 100);
    //  Someone else from elsewhere is not affected
    sent = zclock_mono ();
    s_send_login (f, 6, "10.0.0.4", "carol");
    took = s_expect_login (f, sent, 6, "10.0.0.4", "carol");
    assert_true (took < 240);
}

static void
test_slowed_login_does_not_block (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_login_config (f);
    s_start (f);
    for (int i = 0; i < 3; i++)
        s_send_result (f, "10.0.0.1", "alice", false);
    int64_t sent = zclock_mono ();
    s_send_login (f, 1, "10.0.0.1", "alice");
    //  While that login waits, others are served
    s_send_message (f, 7, "c-1", "meanwhile");
    s_expect_forwarded (f, 7, "c-1", "meanwhile");
    s_send_login (f, 2, "10.0.0.9", "dave");
    s_expect_login (f, sent, 2, "10.0.0.9", "dave");
    int64_t took = s_expect_login (f, sent, 1, "10.0.0.1", "alice");
    assert_true (took >= 490);
    //  A login still waiting at shutdown is freed (valgrind checks)
    s_send_login (f, 3, "10.0.0.1", "alice");
}

static void
test_success_clears_nickname (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_login_config (f);
    s_start (f);
    s_send_result (f, "10.0.0.1", "bob", false);
    s_send_result (f, "10.0.0.1", "bob", false);
    //  Slowed for the nickname, from a fresh address
    int64_t sent = zclock_mono ();
    s_send_login (f, 1, "10.0.0.2", "bob");
    int64_t took = s_expect_login (f, sent, 1, "10.0.0.2", "bob");
    assert_true (took >= 240);
    //  bob logs in: his nickname's record is gone
    s_send_result (f, "10.0.0.2", "Bob", true);
    sent = zclock_mono ();
    s_send_login (f, 2, "10.0.0.3", "bob");
    took = s_expect_login (f, sent, 2, "10.0.0.3", "bob");
    assert_true (took < 240);
    //  The address that failed keeps its record
    sent = zclock_mono ();
    s_send_login (f, 3, "10.0.0.1", "carol");
    took = s_expect_login (f, sent, 3, "10.0.0.1", "carol");
    assert_true (took >= 240);
}

static void
test_failures_expire (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_login_config (f);
    f->cfg.rate_limit_login_window_s = 1;
    s_start (f);
    for (int i = 0; i < 4; i++)
        s_send_result (f, "10.0.0.1", "eve", false);
    s_send_login (f, 1, "10.0.0.1", "eve");
    s_expect_429 (f, 1);
    //  Outside the window the failures no longer count
    zclock_sleep (1100);
    int64_t sent = zclock_mono ();
    s_send_login (f, 2, "10.0.0.1", "eve");
    int64_t took = s_expect_login (f, sent, 2, "10.0.0.1", "eve");
    assert_true (took < 240);
}

static void
test_idle_state_swept (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    s_login_config (f);
    f->cfg.rate_limit_login_window_s = 1;
    f->cfg.rate_limit_messages_per_second = 2;
    f->cfg.rate_limit_burst = 1;
    f->cfg.rate_limit_typing_per_second = 2;
    f->cfg.rate_limit_typing_burst = 1;
    s_start (f);
    //  Some state of every kind: buckets, streaks, failure records
    s_use_burst (f, 7, 1);
    s_send_message (f, 7, "r-1", "spam");
    s_expect_refused (f, 7, "r-1");
    chat_send (f->ws_front->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_TYPING,
               (uint64_t) 70, (uint64_t) 7, "alice", (uint64_t) 9, (uint64_t) 1);
    chat_peer_expect (f->hub, CHAT_CMD_TYPING, 2000);
    for (int i = 0; i < 3; i++)
        s_send_result (f, "10.0.0.1", "eve", false);
    //  Past the periodic sweep (every 5 s), which forgets what is idle
    //  (not visible from outside; run under valgrind it checks the sweep's
    //  memory handling), everyone starts afresh
    zclock_sleep (5500);
    s_send_message (f, 7, "c-1", "hello again");
    s_expect_forwarded (f, 7, "c-1", "hello again");
    int64_t sent = zclock_mono ();
    s_send_login (f, 1, "10.0.0.1", "eve");
    int64_t took = s_expect_login (f, sent, 1, "10.0.0.1", "eve");
    assert_true (took < 240);
    chat_peer_expect_nothing (f->ws_front, 50);
}


int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_burst_forwarded, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_refused_past_burst, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_refill, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_escalation, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_admitted_message_resets_streak, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_typing_excess_dropped, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_login_slowed_then_refused, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_slowed_login_does_not_block, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_success_clears_nickname, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_failures_expire, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_idle_state_swept, s_setup, s_teardown),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
