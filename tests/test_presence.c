/*  =========================================================================
    test_presence.c - the presence actor alone, with its neighbours played
    by peers (hub sends join/leave, persistence sends users_listed,
    ws-front receives everything presence says)
    =========================================================================
*/

#include "test_util.h"
#include "chat_actors.h"
#include <jansson.h>

typedef struct {
    chat_config_t cfg;                  //  Defaults
    zactor_t *presence;                 //  The actor under test
    chat_peer_t *hub;                   //  Sends join/leave
    chat_peer_t *persistence;           //  Sends users_listed
    chat_peer_t *ws_front;              //  Receives online_users, user_*, http_response
} fixture_t;

static int
s_setup (void **state)
{
    fixture_t *f = (fixture_t *) zmalloc (sizeof (fixture_t));
    chat_config_defaults (&f->cfg);
    f->hub = chat_peer_new (CHAT_ACTOR_HUB);
    f->persistence = chat_peer_new (CHAT_ACTOR_PERSISTENCE);
    f->ws_front = chat_peer_new (CHAT_ACTOR_WS_FRONT);
    f->presence = chat_test_start (chat_presence_actor, &f->cfg);
    *state = f;
    return 0;
}

static int
s_teardown (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    zactor_destroy (&f->presence);
    chat_peer_destroy (&f->hub);
    chat_peer_destroy (&f->persistence);
    chat_peer_destroy (&f->ws_front);
    free (f);
    //  libzmq releases inproc endpoints on its reaper thread: give it a
    //  moment before the next test binds them again
    zclock_sleep (100);
    return 0;
}

//  Join and check online_users for that connection; returns the users
//  array (caller owns it)
static json_t *
s_join (fixture_t *f, uint64_t conn_id, uint64_t user_id, const char *nickname)
{
    chat_send (f->hub->outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_JOIN, conn_id, user_id, nickname);
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_ONLINE_USERS, 2000);
    assert_int_equal (m->u [0], conn_id);
    json_t *users = json_loads (m->s [1], 0, NULL);
    assert_true (json_is_array (users));
    return users;
}

static void
s_leave (fixture_t *f, uint64_t conn_id, uint64_t user_id, const char *nickname)
{
    chat_send (f->hub->outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_LEAVE, conn_id, user_id, nickname);
}

//  Does the online_users array hold this user (exactly once)?
static bool
s_lists (json_t *users, uint64_t user_id, const char *nickname)
{
    int found = 0;
    size_t index;
    json_t *entry;
    json_array_foreach (users, index, entry) {
        assert_int_equal (json_object_size (entry), 2);
        if ((uint64_t) json_integer_value (json_object_get (entry, "user_id")) == user_id) {
            assert_string_equal (json_string_value (json_object_get (entry, "nickname")), nickname);
            found++;
        }
    }
    assert_true (found <= 1);
    return found == 1;
}

static void
s_expect_presence (fixture_t *f, chat_cmd_t cmd, uint64_t user_id, const char *nickname)
{
    chat_msg_t *m = chat_peer_expect (f->ws_front, cmd, 2000);
    assert_int_equal (m->u [0], user_id);
    assert_string_equal (m->s [1], nickname);
}

static void
test_online_users_lists_others (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    json_t *users = s_join (f, 11, 1, "alice");
    assert_int_equal (json_array_size (users), 0);
    json_decref (users);
    s_expect_presence (f, CHAT_CMD_USER_ONLINE, 1, "alice");

    users = s_join (f, 21, 2, "bob");
    assert_int_equal (json_array_size (users), 1);
    assert_true (s_lists (users, 1, "alice"));
    json_decref (users);
    s_expect_presence (f, CHAT_CMD_USER_ONLINE, 2, "bob");

    users = s_join (f, 31, 3, "carol");
    assert_int_equal (json_array_size (users), 2);
    assert_true (s_lists (users, 1, "alice"));
    assert_true (s_lists (users, 2, "bob"));
    json_decref (users);
    s_expect_presence (f, CHAT_CMD_USER_ONLINE, 3, "carol");

    //  alice's second connection: others only, never herself
    users = s_join (f, 12, 1, "alice");
    assert_int_equal (json_array_size (users), 2);
    assert_false (s_lists (users, 1, "alice"));
    assert_true (s_lists (users, 2, "bob"));
    assert_true (s_lists (users, 3, "carol"));
    json_decref (users);
    chat_peer_expect_nothing (f->ws_front, 100);
}

static void
test_online_offline_first_and_last (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    json_decref (s_join (f, 11, 1, "alice"));
    s_expect_presence (f, CHAT_CMD_USER_ONLINE, 1, "alice");
    json_decref (s_join (f, 12, 1, "alice"));
    json_decref (s_join (f, 13, 1, "alice"));
    chat_peer_expect_nothing (f->ws_front, 100);

    s_leave (f, 12, 1, "alice");
    s_leave (f, 11, 1, "alice");
    chat_peer_expect_nothing (f->ws_front, 100);
    s_leave (f, 13, 1, "alice");
    s_expect_presence (f, CHAT_CMD_USER_OFFLINE, 1, "alice");

    //  Back: online again
    json_decref (s_join (f, 14, 1, "alice"));
    s_expect_presence (f, CHAT_CMD_USER_ONLINE, 1, "alice");
}

static void
test_duplicate_leave_harmless (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    json_decref (s_join (f, 11, 1, "alice"));
    s_expect_presence (f, CHAT_CMD_USER_ONLINE, 1, "alice");
    json_decref (s_join (f, 12, 1, "alice"));
    //  The same leave twice, and leaves for unknown connections and users
    s_leave (f, 11, 1, "alice");
    s_leave (f, 11, 1, "alice");
    s_leave (f, 99, 1, "alice");
    s_leave (f, 98, 7, "nobody");
    chat_peer_expect_nothing (f->ws_front, 150);
    //  alice is still online with connection 12
    json_t *users = s_join (f, 21, 2, "bob");
    assert_true (s_lists (users, 1, "alice"));
    json_decref (users);
    s_expect_presence (f, CHAT_CMD_USER_ONLINE, 2, "bob");
    //  A repeated join of the same connection counts once
    json_decref (s_join (f, 21, 2, "bob"));
    s_leave (f, 21, 2, "bob");
    s_expect_presence (f, CHAT_CMD_USER_OFFLINE, 2, "bob");
    s_leave (f, 12, 1, "alice");
    s_expect_presence (f, CHAT_CMD_USER_OFFLINE, 1, "alice");
    s_leave (f, 12, 1, "alice");
    chat_peer_expect_nothing (f->ws_front, 100);
}

static void
test_users_listed (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    json_decref (s_join (f, 21, 2, "bob"));
    s_expect_presence (f, CHAT_CMD_USER_ONLINE, 2, "bob");
    json_decref (s_join (f, 41, 4, "dave"));
    s_expect_presence (f, CHAT_CMD_USER_ONLINE, 4, "dave");

    const char *listed = "[{\"user_id\":1,\"nickname\":\"alice\"},"
                          "{\"user_id\":2,\"nickname\":\"bob\"},"
                          "{\"user_id\":3,\"nickname\":\"Carol\"},"
                          "{\"user_id\":4,\"nickname\":\"dave\"}]";
    chat_send (f->persistence->outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_USERS_LISTED,
               (uint64_t) 77, listed);
    chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_HTTP_RESPONSE, 2000);
    assert_int_equal (m->u [0], 77);
    assert_int_equal (m->u [1], 200);
    assert_int_equal (m->len [3], 0);
    json_t *body = json_loads (m->s [2], 0, NULL);
    assert_non_null (body);
    json_t *users = json_object_get (body, "users");
    assert_int_equal (json_array_size (users), 4);
    const char *nicknames [] = { "alice", "bob", "Carol", "dave" };
    bool online [] = { false, true, false, true };
    for (size_t i = 0; i < 4; i++) {
        json_t *user = json_array_get (users, i);
        assert_int_equal (json_integer_value (json_object_get (user, "user_id")), i + 1);
        assert_string_equal (json_string_value (json_object_get (user, "nickname")), nicknames [i]);
        assert_true (json_is_boolean (json_object_get (user, "online")));
        assert_int_equal (json_is_true (json_object_get (user, "online")), online [i]);
    }
    json_decref (body);

    //  Empty list
    chat_send (f->persistence->outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_USERS_LISTED,
               (uint64_t) 78, "[]");
    m = chat_peer_expect (f->ws_front, CHAT_CMD_HTTP_RESPONSE, 2000);
    assert_int_equal (m->u [0], 78);
    assert_int_equal (m->u [1], 200);
    assert_string_equal (m->s [2], "{\"users\":[]}");
}

static void
test_users_listed_malformed (void **state)
{
    fixture_t *f = (fixture_t *) *state;
    const char *bad [] = { "not json", "{\"user_id\":1}", "[{\"user_id\":\"1\",\"nickname\":\"x\"}]", "[3]" };
    for (size_t i = 0; i < 4; i++) {
        chat_send (f->persistence->outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_USERS_LISTED,
                   (uint64_t) (90 + i), bad [i]);
        chat_msg_t *m = chat_peer_expect (f->ws_front, CHAT_CMD_HTTP_RESPONSE, 2000);
        assert_int_equal (m->u [0], 90 + i);
        assert_int_equal (m->u [1], 500);
        json_t *body = json_loads (m->s [2], 0, NULL);
        assert_string_equal (json_string_value (json_object_get (body, "error")), "internal_error");
        assert_true (json_is_string (json_object_get (body, "message")));
        json_decref (body);
    }
}

int
main (void)
{
    zsys_init ();
    const struct CMUnitTest tests [] = {
        cmocka_unit_test_setup_teardown (test_online_users_lists_others, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_online_offline_first_and_last, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_duplicate_leave_harmless, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_users_listed, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown (test_users_listed_malformed, s_setup, s_teardown),
    };
    int rc = cmocka_run_group_tests (tests, NULL, NULL);
    zsys_shutdown ();
    return rc;
}
