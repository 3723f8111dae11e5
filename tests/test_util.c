/*  =========================================================================
    test_util.c - helpers for actor tests (see test_util.h)
    =========================================================================
*/

#include "test_util.h"
#include <ftw.h>
#include <sqlite3.h>

chat_peer_t *
chat_peer_new (chat_actor_t actor)
{
    chat_peer_t *self = (chat_peer_t *) zmalloc (sizeof (chat_peer_t));
    assert_non_null (self);
    self->actor = actor;
    self->inbox = chat_inbox_new (actor);
    assert_non_null (self->inbox);
    self->outbox = chat_outbox_new (actor, NULL);
    chat_msg_init (&self->msg);
    return self;
}

void
chat_peer_destroy (chat_peer_t **self_p)
{
    chat_peer_t *self = *self_p;
    if (self) {
        zsock_destroy (&self->inbox);
        chat_outbox_destroy (&self->outbox);
        chat_msg_release (&self->msg);
        free (self);
        *self_p = NULL;
    }
}

chat_msg_t *
chat_peer_recv (chat_peer_t *self, int timeout_ms)
{
    zpoller_t *poller = zpoller_new (self->inbox, NULL);
    void *which = zpoller_wait (poller, timeout_ms);
    zpoller_destroy (&poller);
    if (!which)
        return NULL;
    if (chat_msg_recv (self->inbox, &self->msg, false) != 0)
        fail_msg ("malformed message at %s", chat_actor_name (self->actor));
    return &self->msg;
}

chat_msg_t *
chat_peer_expect (chat_peer_t *self, chat_cmd_t cmd, int timeout_ms)
{
    chat_msg_t *m = chat_peer_recv (self, timeout_ms);
    if (!m)
        fail_msg ("%s: expected %s, got nothing in %d ms",
                  chat_actor_name (self->actor), chat_cmd_name (cmd), timeout_ms);
    if (m->cmd != cmd)
        fail_msg ("%s: expected %s, got %s", chat_actor_name (self->actor),
                  chat_cmd_name (cmd), chat_cmd_name (m->cmd));
    return m;
}

void
chat_peer_expect_nothing (chat_peer_t *self, int timeout_ms)
{
    chat_msg_t *m = chat_peer_recv (self, timeout_ms);
    if (m)
        fail_msg ("%s: expected nothing, got %s", chat_actor_name (self->actor), chat_cmd_name (m->cmd));
}

zactor_t *
chat_test_start (zactor_fn *fn, chat_config_t *cfg)
{
    zactor_t *actor = zactor_new (fn, cfg);
    assert_non_null (actor);
    char error [256] = "";
    if (chat_actor_started (actor, error, sizeof error) != 0)
        fail_msg ("actor did not start: %s", error);
    return actor;
}

char *
chat_test_tmpdir (void)
{
    char template_ [] = "/tmp/chatd-test-XXXXXX";
    char *path = mkdtemp (template_);
    assert_non_null (path);
    return strdup (path);
}

static int
s_remove (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st; (void) flag; (void) ftw;
    return remove (path);
}

void
chat_test_rmdir (char **path_p)
{
    if (*path_p) {
        nftw (*path_p, s_remove, 16, FTW_DEPTH | FTW_PHYS);
        free (*path_p);
        *path_p = NULL;
    }
}

//  The one place that knows every command's argument list for chat_send:
//  fails the test for a command added to the table without a case here
int
chat_test_send (chat_outbox_t *outbox, chat_actor_t to, chat_cmd_t cmd,
                const uint64_t *u, const char *const *s)
{
    switch (cmd) {
        case CHAT_CMD_REGISTER:
            return chat_send (outbox, to, cmd, u [0], s [1], s [2]);
        case CHAT_CMD_LOGIN:
            return chat_send (outbox, to, cmd, u [0], s [1], s [2], s [3]);
        case CHAT_CMD_LOGIN_RESULT:
            return chat_send (outbox, to, cmd, s [0], s [1], u [2]);
        case CHAT_CMD_LOGOUT:
            return chat_send (outbox, to, cmd, u [0], s [1]);
        case CHAT_CMD_LIST_USERS:
            return chat_send (outbox, to, cmd, u [0]);
        case CHAT_CMD_USERS_LISTED:
            return chat_send (outbox, to, cmd, u [0], s [1]);
        case CHAT_CMD_LIST_CONVERSATIONS:
            return chat_send (outbox, to, cmd, u [0], u [1]);
        case CHAT_CMD_HTTP_RESPONSE:
            return chat_send (outbox, to, cmd, u [0], u [1], s [2], s [3]);
        case CHAT_CMD_SESSION_CREATED:
            return chat_send (outbox, to, cmd, s [0], u [1], s [2], u [3]);
        case CHAT_CMD_SESSION_REVOKED:
            return chat_send (outbox, to, cmd, s [0], s [1]);
        case CHAT_CMD_JOIN:
            return chat_send (outbox, to, cmd, u [0], u [1], s [2]);
        case CHAT_CMD_LEAVE:
            return chat_send (outbox, to, cmd, u [0], u [1], s [2]);
        case CHAT_CMD_ONLINE_USERS:
            return chat_send (outbox, to, cmd, u [0], s [1]);
        case CHAT_CMD_USER_ONLINE:
            return chat_send (outbox, to, cmd, u [0], s [1]);
        case CHAT_CMD_USER_OFFLINE:
            return chat_send (outbox, to, cmd, u [0], s [1]);
        case CHAT_CMD_PRIVATE_MESSAGE:
            return chat_send (outbox, to, cmd, u [0], u [1], s [2], u [3], s [4], s [5]);
        case CHAT_CMD_MESSAGE_STORED:
            return chat_send (outbox, to, cmd, u [0], u [1], u [2], s [3], u [4], s [5], s [6], s [7], u [8]);
        case CHAT_CMD_DELIVER_MESSAGE:
            return chat_send (outbox, to, cmd, u [0], s [1], u [2], u [3], s [4], u [5], s [6], s [7], s [8], u [9], u [10]);
        case CHAT_CMD_MESSAGE_FAILED:
            return chat_send (outbox, to, cmd, u [0], s [1], u [2], s [3], s [4], u [5]);
        case CHAT_CMD_CLOSE_CONNECTION:
            return chat_send (outbox, to, cmd, u [0], u [1], s [2]);
        case CHAT_CMD_TYPING:
            return chat_send (outbox, to, cmd, u [0], u [1], s [2], u [3], u [4]);
        case CHAT_CMD_DELIVER_TYPING:
            return chat_send (outbox, to, cmd, s [0], u [1], s [2], u [3]);
        case CHAT_CMD_LOAD_HISTORY:
            return chat_send (outbox, to, cmd, u [0], u [1], u [2], u [3], u [4], s [5]);
        case CHAT_CMD_HISTORY_LOADED:
            return chat_send (outbox, to, cmd, u [0], u [1], s [2], s [3], u [4]);
        case CHAT_CMD_SYNC:
            return chat_send (outbox, to, cmd, u [0], u [1], u [2], u [3], s [4]);
        case CHAT_CMD_SYNCED:
            return chat_send (outbox, to, cmd, u [0], s [1], s [2], u [3]);
        case CHAT_CMD_MARK_READ:
            return chat_send (outbox, to, cmd, u [0], u [1], u [2], u [3]);
        case CHAT_CMD_MESSAGES_READ:
            return chat_send (outbox, to, cmd, u [0], u [1], u [2]);
        case CHAT_CMD_DELIVER_READ:
            return chat_send (outbox, to, cmd, s [0], u [1], u [2]);
        case CHAT_CMD_REQUEST_FAILED:
            return chat_send (outbox, to, cmd, u [0], s [1], s [2], s [3]);
        case CHAT_CMD_STORAGE_STATUS:
            return chat_send (outbox, to, cmd, u [0], u [1], u [2]);
        case CHAT_CMD_COUNT:
            break;
    }
    fail_msg ("no sample for command %d", (int) cmd);
    return -1;
}

void
chat_test_sql (sqlite3 *db, const char *sql)
{
    char *error = NULL;
    int rc = sqlite3_exec (db, sql, NULL, NULL, &error);
    if (rc != SQLITE_OK)
        fail_msg ("%s: %s", sql, error? error: sqlite3_errstr (rc));
    sqlite3_free (error);
}

int64_t
chat_test_sql_int (sqlite3 *db, const char *sql)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    int64_t value = sqlite3_column_int64 (stmt, 0);
    sqlite3_finalize (stmt);
    return value;
}
