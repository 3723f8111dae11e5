/*  =========================================================================
    test_util.h - helpers for actor tests: play an actor's neighbours

    A test starts one actor alone (zactor_new) and stands in for every actor
    it talks to: chat_peer_new (CHAT_ACTOR_HUB) binds the hub's inbox, so
    whatever the actor under test sends to the hub arrives here, and sends
    as the hub through its own outbox.
    =========================================================================
*/

#ifndef TEST_UTIL_H_INCLUDED
#define TEST_UTIL_H_INCLUDED

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "chat_msg.h"
#include "chat_config.h"

typedef struct {
    chat_actor_t actor;                 //  The actor this peer plays
    zsock_t *inbox;                     //  Bound at that actor's endpoint
    chat_outbox_t *outbox;              //  Sends as that actor
    chat_msg_t msg;                     //  Last message received
} chat_peer_t;

chat_peer_t *chat_peer_new (chat_actor_t actor);
void chat_peer_destroy (chat_peer_t **self_p);
//  Wait up to timeout_ms for the next message; fail the test unless it is
//  cmd. Returns the decoded message (valid until the next receive).
chat_msg_t *chat_peer_expect (chat_peer_t *self, chat_cmd_t cmd, int timeout_ms);
//  Returns the next message or NULL if none arrives within timeout_ms
chat_msg_t *chat_peer_recv (chat_peer_t *self, int timeout_ms);
//  Assert that nothing arrives within timeout_ms
void chat_peer_expect_nothing (chat_peer_t *self, int timeout_ms);

//  Send cmd with chat_send, its fields taken by position from u (numeric
//  fields) or s (every other type); returns chat_send's result
int chat_test_send (chat_outbox_t *outbox, chat_actor_t to, chat_cmd_t cmd,
                    const uint64_t *u, const char *const *s);

//  Start an actor and assert it reports ready
zactor_t *chat_test_start (zactor_fn *fn, chat_config_t *cfg);
//  A fresh temporary directory (removed by chat_test_rmdir)
char *chat_test_tmpdir (void);
void chat_test_rmdir (char **path_p);

//  Run SQL on a SQLite connection; fail the test with SQLite's message if
//  it does not succeed
typedef struct sqlite3 sqlite3;
void chat_test_sql (sqlite3 *db, const char *sql);
//  The first column of the first row of a query, as an integer; fails the
//  test if there is no row
int64_t chat_test_sql_int (sqlite3 *db, const char *sql);

#endif
