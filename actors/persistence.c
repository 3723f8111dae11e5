/*  =========================================================================
    persistence.c - the persistence actor: stores messages (group commit)

    Owns the storage backend handle used for messages, read state and the
    user and conversation lists. Talks to:

        rate-limiter > private_message store (group commit), then
                                       message_stored > hub, or
                                       message_failed > ws-front
        ws-front > load_history / sync > history_loaded / synced > ws-front
        ws-front > mark_read           > messages_read > hub
        ws-front > list_users          > users_listed > presence
        ws-front > list_conversations  > http_response > ws-front
        (itself)                       > storage_status > ws-front

    Group commit: when the inbox is readable we drain what is waiting, up to
    [storage] batch_max private messages, and store them in one transaction
    with one message_store_batch call (the backend stores the whole batch at
    once: one multi-row INSERT on PostgreSQL). Only after the commit
    succeeds is any of them acknowledged. Any other command first flushes
    the batch in hand, so it sees every earlier message. A failed begin/store/commit rolls back and answers
    storage_unavailable for every message of the batch.

    mark_read sends messages_read to the hub only when it marked something:
    a receipt always stands for messages that were really read, so nobody
    can push receipts for conversations they are not part of.

    storage_status goes to ws-front at start, whenever `up` changes and every
    5 s. While storage is down we ping it with a back-off from 100 ms
    doubling to [postgres] reconnect_max_ms. Requests are still attempted
    while down (the backend reconnects on its next call); each failure is
    answered at once.

    Besides $TERM the pipe accepts "STATUS": send storage_status now (used by
    tests to read the counters). On $TERM we store and commit whatever is
    already waiting in the inbox before exiting.
    =========================================================================
*/

#include "chat_actors.h"
#include "chat_backend.h"
#include "chat_config.h"
#include "chat_msg.h"
#include "chat_wire.h"
#include <jansson.h>

#define S_STATUS_INTERVAL_MS    5000    //  Periodic storage_status
#define S_PING_INITIAL_MS       100     //  First retry while storage is down
#define S_DRAIN_MAX             1000    //  Most other commands handled per wake-up

#define S_HISTORY_DEFAULT       50
#define S_HISTORY_MAX           100
#define S_SYNC_DEFAULT          500
#define S_SYNC_MAX              1000

static const char s_unavailable_text [] = "storage is unavailable; retry";
static const char s_unavailable_body [] =
    "{\"error\":\"storage_unavailable\",\"message\":\"storage is unavailable; retry\"}";

//  One private message of the batch in hand, and what became of it
typedef struct {
    chat_msg_t msg;                     //  As received (buffers reused)
    bool stored;                        //  Stored (or duplicate); else unknown user
    bool duplicate;                     //  The sender had used client_id before
    uint64_t message_id;                //  Its id (the first one's for a duplicate)
    uint64_t to_user_id;                //  Its recipient (the first one's for a duplicate)
    char timestamp [CHAT_TIMESTAMP_SIZE];   //  Its time, formatted
    char *content;                      //  A duplicate's stored content (reused)
    size_t content_len;                 //  Its length
    size_t content_cap;                 //  Capacity of content
} s_slot_t;

typedef struct {
    zsock_t *pipe;                      //  Actor command pipe
    zsock_t *inbox;                     //  Our PULL inbox (inproc://chatd-persistence)
    chat_outbox_t *outbox;              //  PUSH sockets to hub, ws-front, presence
    chat_config_t cfg;                  //  Our copy of the configuration
    const chat_backend_ops_t *ops;      //  The storage backend
    chat_backend_t *db;                 //  Our handle on it
    zloop_t *loop;                      //  Reactor: pipe, inbox, timers
    chat_watch_t pipe_watch;            //  The pipe in loop
    chat_watch_t inbox_watch;           //  The inbox in loop
    bool inbox_empty;                   //  The last s_drain ended on an empty inbox
    bool context_gone;                  //  A receive failed with ETERM
    s_slot_t *batch;                    //  cfg.storage_batch_max slots
    chat_message_t *messages;           //  The batch as the backend takes it
    int *results;                       //  Each message's result from the backend
    bool *duplicates;                   //  Each message's duplicate flag
    size_t batch_max;                   //  Number of slots (and of the above)
    size_t pending;                     //  Private messages in hand, not stored yet
    bool up;                            //  Storage answered the last request
    uint64_t stored_total;              //  Messages stored since start
    uint64_t batches_total;             //  Transactions committed since start
    int ping_timer;                     //  zloop id of the pending ping, or -1
    int ping_delay_ms;                  //  Its current back-off
    bool terminated;                    //  $TERM received
    chat_json_t json;                   //  Reused buffer for history and sync pages
} self_t;


//  --------------------------------------------------------------------------
//  Lifecycle

static self_t *
s_self_new (zsock_t *pipe, const chat_config_t *cfg)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    assert (self);
    self->pipe = pipe;
    self->cfg = *cfg;
    self->ping_timer = -1;
    self->ping_delay_ms = S_PING_INITIAL_MS;
    self->up = true;
    self->outbox = chat_outbox_new (CHAT_ACTOR_PERSISTENCE, self->cfg.server_tap);
    self->batch_max = self->cfg.storage_batch_max > 0? (size_t) self->cfg.storage_batch_max: 1;
    self->batch = (s_slot_t *) zmalloc (self->batch_max * sizeof (s_slot_t));
    assert (self->batch);
    self->messages = (chat_message_t *) zmalloc (self->batch_max * sizeof (chat_message_t));
    self->results = (int *) zmalloc (self->batch_max * sizeof (int));
    self->duplicates = (bool *) zmalloc (self->batch_max * sizeof (bool));
    assert (self->messages && self->results && self->duplicates);
    for (size_t i = 0; i < self->batch_max; i++)
        chat_msg_init (&self->batch [i].msg);
    self->loop = zloop_new ();
    assert (self->loop);
    zloop_set_nonstop (self->loop, true);
    return self;
}

//  Open the backend and bind the inbox. Returns 0, or -1 with a one-line
//  reason in error.
static int
s_self_open (self_t *self, char *error, size_t size)
{
    self->ops = chat_backend_find (self->cfg.storage_backend);
    if (!self->ops) {
        snprintf (error, size, "[storage] backend: '%s' is not available",
                  self->cfg.storage_backend);
        return -1;
    }
    char reason [256] = "";
    self->db = self->ops->open (&self->cfg, reason, sizeof reason);
    if (!self->db) {
        //  One line naming the key to fix, for chatd's start-up error
        snprintf (error, size, "%s: %s", streq (self->cfg.storage_backend, "postgres")
                  ? "[postgres] conninfo" : "[sqlite] path", reason);
        return -1;
    }
    self->inbox = chat_inbox_new (CHAT_ACTOR_PERSISTENCE);
    if (!self->inbox) {
        snprintf (error, size, "cannot bind inproc://chatd-persistence");
        return -1;
    }
    return 0;
}

static void
s_self_destroy (self_t **self_p)
{
    assert (self_p);
    self_t *self = *self_p;
    if (self) {
        zloop_destroy (&self->loop);
        for (size_t i = 0; i < self->batch_max; i++) {
            chat_msg_release (&self->batch [i].msg);
            free (self->batch [i].content);
        }
        free (self->batch);
        free (self->messages);
        free (self->results);
        free (self->duplicates);
        chat_json_release (&self->json);
        if (self->db)
            self->ops->close (&self->db);
        chat_outbox_destroy (&self->outbox);
        zsock_destroy (&self->inbox);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Health

static void
s_send_status (self_t *self)
{
    chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_STORAGE_STATUS,
               (uint64_t) self->up, self->stored_total, self->batches_total);
}

static int s_ping_timer (zloop_t *loop, int timer_id, void *arg);

//  Storage answered (up) or failed (down); report changes, ping while down
static void
s_set_up (self_t *self, bool up)
{
    if (up == self->up)
        return;
    self->up = up;
    if (up) {
        zsys_info ("persistence: storage is available again");
        if (self->ping_timer != -1) {
            zloop_timer_end (self->loop, self->ping_timer);
            self->ping_timer = -1;
        }
    }
    else {
        zsys_warning ("persistence: storage is unavailable");
        self->ping_delay_ms = S_PING_INITIAL_MS;
        if (self->ping_timer == -1)
            self->ping_timer = zloop_timer (self->loop, (size_t) self->ping_delay_ms, 1, s_ping_timer, self);
    }
    s_send_status (self);
}

static int
s_ping_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    self_t *self = (self_t *) arg;
    self->ping_timer = -1;              //  One-shot: zloop dropped it
    if (self->up)
        return 0;
    if (self->ops->ping (self->db) == CHAT_DB_OK)
        s_set_up (self, true);
    else {
        int max_ms = self->cfg.postgres_reconnect_max_ms > 0? self->cfg.postgres_reconnect_max_ms: 5000;
        self->ping_delay_ms = self->ping_delay_ms * 2 > max_ms? max_ms: self->ping_delay_ms * 2;
        self->ping_timer = zloop_timer (self->loop, (size_t) self->ping_delay_ms, 1, s_ping_timer, self);
    }
    return 0;
}

static int
s_status_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    s_send_status ((self_t *) arg);
    return 0;
}


//  --------------------------------------------------------------------------
//  Group commit

static void
s_slot_keep_content (s_slot_t *slot, const char *content, size_t len)
{
    if (len + 1 > slot->content_cap) {
        slot->content_cap = len + 1;
        slot->content = (char *) realloc (slot->content, slot->content_cap);
        assert (slot->content);
    }
    if (len)
        memcpy (slot->content, content, len);
    slot->content [len] = 0;
    slot->content_len = len;
}

//  Store the first count slots in the open transaction with one call of
//  the backend, and record what became of each
static int
s_store_batch (self_t *self, size_t count, int64_t now_ms)
{
    for (size_t i = 0; i < count; i++) {
        chat_msg_t *m = &self->batch [i].msg;
        self->messages [i] = (chat_message_t) {
            .from_user_id = (int64_t) m->u [1],
            .to_user_id = (int64_t) m->u [3],
            .nickname = m->s [2],
            .content = m->s [5],
            .content_len = m->len [5],
            .created_ms = now_ms,
            .client_id = m->len [4]? m->s [4]: NULL
        };
    }
    int rc = self->ops->message_store_batch (self->db, self->messages, count,
                                             self->results, self->duplicates);
    if (rc != CHAT_DB_OK)
        return rc;
    for (size_t i = 0; i < count; i++) {
        s_slot_t *slot = &self->batch [i];
        const chat_message_t *message = &self->messages [i];
        //  CHAT_DB_NOT_FOUND: unknown recipient, answered after the commit
        slot->stored = self->results [i] == CHAT_DB_OK;
        if (!slot->stored)
            continue;
        slot->duplicate = self->duplicates [i];
        slot->message_id = (uint64_t) message->id;
        slot->to_user_id = (uint64_t) message->to_user_id;
        chat_timestamp_format (message->created_ms, slot->timestamp, sizeof slot->timestamp);
        //  A duplicate's content points into the backend until its next call
        if (slot->duplicate)
            s_slot_keep_content (slot, message->content, message->content_len);
    }
    return CHAT_DB_OK;
}

//  Store the batch in hand in one transaction, then answer each message
static void
s_flush (self_t *self)
{
    size_t count = self->pending;
    if (count == 0)
        return;
    self->pending = 0;

    int64_t now_ms = chat_now_ms ();
    int rc = self->ops->begin (self->db);
    bool begun = rc == CHAT_DB_OK;
    //  The batch's results go out as one burst (see chat_outbox_hold)
    chat_outbox_hold (self->outbox);
    if (rc == CHAT_DB_OK)
        rc = s_store_batch (self, count, now_ms);
    if (rc == CHAT_DB_OK)
        rc = self->ops->commit (self->db);

    if (rc != CHAT_DB_OK) {
        zsys_error ("persistence: storing %zu message(s) failed", count);
        if (begun)
            self->ops->rollback (self->db);
        for (size_t i = 0; i < count; i++) {
            chat_msg_t *m = &self->batch [i].msg;
            chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_MESSAGE_FAILED,
                        m->u [0], m->s [4], m->len [4], m->u [3],
                        "storage_unavailable", strlen ("storage_unavailable"),
                        s_unavailable_text, strlen (s_unavailable_text), (uint64_t) 0);
        }
        chat_outbox_flush (self->outbox);
        s_set_up (self, false);
        return;
    }

    //  Committed: now, and only now, acknowledge
    self->batches_total++;
    for (size_t i = 0; i < count; i++) {
        s_slot_t *slot = &self->batch [i];
        chat_msg_t *m = &slot->msg;
        if (!slot->stored) {
            chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_MESSAGE_FAILED,
                        m->u [0], m->s [4], m->len [4], m->u [3],
                        "unknown_user", strlen ("unknown_user"),
                        "no such user", strlen ("no such user"), (uint64_t) 0);
            continue;
        }
        if (!slot->duplicate)
            self->stored_total++;
        const char *content = slot->duplicate? slot->content: m->s [5];
        size_t content_len = slot->duplicate? slot->content_len: m->len [5];
        chat_sendn (self->outbox, CHAT_ACTOR_HUB, CHAT_CMD_MESSAGE_STORED,
                    m->u [0], slot->message_id, m->u [1], m->s [2], m->len [2],
                    slot->to_user_id, m->s [4], m->len [4], content, content_len,
                    slot->timestamp, strlen (slot->timestamp), (uint64_t) slot->duplicate);
    }
    chat_outbox_flush (self->outbox);
    s_set_up (self, true);
}


//  --------------------------------------------------------------------------
//  Reads

//  A storage failure while answering a WebSocket request
static void
s_request_failed (self_t *self, uint64_t conn_id, const char *type,
                  const char *request_id, size_t request_id_len)
{
    chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_REQUEST_FAILED,
                conn_id, type, strlen (type), request_id, request_id_len,
                "storage_unavailable", strlen ("storage_unavailable"));
    s_set_up (self, false);
}

//  Send an HTTP answer; takes ownership of body (NULL: internal error)
static void
s_http_response (self_t *self, uint64_t req_id, uint64_t status, json_t *body)
{
    char *text = body? json_dumps (body, JSON_COMPACT): NULL;
    if (text)
        chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_HTTP_RESPONSE,
                   req_id, status, text, "");
    else
        chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_HTTP_RESPONSE,
                   req_id, (uint64_t) 500,
                   "{\"error\":\"internal_error\",\"message\":\"cannot build the answer\"}", "");
    free (text);
    json_decref (body);
}

static void
s_http_unavailable (self_t *self, uint64_t req_id)
{
    chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_HTTP_RESPONSE,
               req_id, (uint64_t) 503, s_unavailable_body, "");
    s_set_up (self, false);
}

static void
s_collect_message (const chat_message_t *message, void *ctx)
{
    //  Into a JSON array being written: "[" then objects separated by ","
    chat_json_t *json = (chat_json_t *) ctx;
    if (json->len > 1)
        chat_json_raw (json, ",", 1);
    chat_json_message (json, message);
}

static uint64_t
s_clamp (uint64_t limit, uint64_t fallback, uint64_t max)
{
    return limit == 0? fallback: limit > max? max: limit;
}

//  load_history conn_id user_id with_user_id before_id limit request_id
static void
s_handle_load_history (self_t *self, chat_msg_t *m)
{
    bool has_more = false;
    int limit = (int) s_clamp (m->u [4], S_HISTORY_DEFAULT, S_HISTORY_MAX);
    self->json.len = 0;
    chat_json_raw (&self->json, "[", 1);
    int rc = self->ops->history (self->db, (int64_t) m->u [1], (int64_t) m->u [2],
                                 (int64_t) m->u [3], limit, s_collect_message, &self->json,
                                 &has_more);
    chat_json_raw (&self->json, "]", 1);
    if (rc == CHAT_DB_OK) {
        chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_HISTORY_LOADED,
                    m->u [0], m->u [2], m->s [5], m->len [5], self->json.data, self->json.len,
                    (uint64_t) has_more);
        s_set_up (self, true);
    }
    else
        s_request_failed (self, m->u [0], "load_history", m->s [5], m->len [5]);
}

//  sync conn_id user_id after_id limit request_id
static void
s_handle_sync (self_t *self, chat_msg_t *m)
{
    bool has_more = false;
    int limit = (int) s_clamp (m->u [3], S_SYNC_DEFAULT, S_SYNC_MAX);
    self->json.len = 0;
    chat_json_raw (&self->json, "[", 1);
    int rc = self->ops->sync (self->db, (int64_t) m->u [1], (int64_t) m->u [2], limit,
                              s_collect_message, &self->json, &has_more);
    chat_json_raw (&self->json, "]", 1);
    if (rc == CHAT_DB_OK) {
        chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_SYNCED,
                    m->u [0], m->s [4], m->len [4], self->json.data, self->json.len,
                    (uint64_t) has_more);
        s_set_up (self, true);
    }
    else
        s_request_failed (self, m->u [0], "sync", m->s [4], m->len [4]);
}

//  mark_read conn_id user_id with_user_id up_to_id
static void
s_handle_mark_read (self_t *self, chat_msg_t *m)
{
    int64_t changed = 0;
    int rc = self->ops->mark_read (self->db, (int64_t) m->u [1], (int64_t) m->u [2],
                                   (int64_t) m->u [3], &changed);
    if (rc == CHAT_DB_OK) {
        if (changed > 0)
            chat_send (self->outbox, CHAT_ACTOR_HUB, CHAT_CMD_MESSAGES_READ,
                       m->u [1], m->u [2], m->u [3]);
        s_set_up (self, true);
    }
    else
        s_request_failed (self, m->u [0], "mark_read", "", 0);
}

static void
s_collect_user (const chat_user_t *user, void *ctx)
{
    json_array_append_new ((json_t *) ctx, json_pack ("{s:I,s:s}",
                           "user_id", (json_int_t) user->id, "nickname", user->nickname));
}

//  list_users req_id: the list goes to presence, which adds "online"
static void
s_handle_list_users (self_t *self, chat_msg_t *m)
{
    json_t *users = json_array ();
    int rc = self->ops->users_list (self->db, s_collect_user, users);
    char *text = rc == CHAT_DB_OK? json_dumps (users, JSON_COMPACT): NULL;
    if (text) {
        chat_send (self->outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_USERS_LISTED, m->u [0], text);
        s_set_up (self, true);
    }
    else
        s_http_unavailable (self, m->u [0]);
    free (text);
    json_decref (users);
}

static void
s_collect_conversation (const chat_conversation_t *conv, void *ctx)
{
    json_array_append_new ((json_t *) ctx, json_pack ("{s:I,s:s,s:o,s:I}",
                           "user_id", (json_int_t) conv->user_id,
                           "nickname", conv->nickname? conv->nickname: "",
                           "last_message", chat_message_json (&conv->last_message),
                           "unread", (json_int_t) conv->unread));
}

//  list_conversations req_id user_id
static void
s_handle_list_conversations (self_t *self, chat_msg_t *m)
{
    json_t *conversations = json_array ();
    int rc = self->ops->conversations (self->db, (int64_t) m->u [1],
                                       s_collect_conversation, conversations);
    if (rc == CHAT_DB_OK) {
        s_http_response (self, m->u [0], 200,
                         json_pack ("{s:O}", "conversations", conversations));
        s_set_up (self, true);
    }
    else
        s_http_unavailable (self, m->u [0]);
    json_decref (conversations);
}

static void
s_dispatch (self_t *self, chat_msg_t *m)
{
    switch (m->cmd) {
        case CHAT_CMD_LOAD_HISTORY:       s_handle_load_history (self, m); break;
        case CHAT_CMD_SYNC:               s_handle_sync (self, m); break;
        case CHAT_CMD_MARK_READ:          s_handle_mark_read (self, m); break;
        case CHAT_CMD_LIST_USERS:         s_handle_list_users (self, m); break;
        case CHAT_CMD_LIST_CONVERSATIONS: s_handle_list_conversations (self, m); break;
        default:
            zsys_warning ("persistence: unexpected command %s", chat_cmd_name (m->cmd));
            break;
    }
}


//  --------------------------------------------------------------------------
//  The inbox

//  Handle what is waiting: private messages join the batch (stored when it
//  is full, when another command comes, or when nothing more is waiting);
//  other commands are answered in order. Returns the number of commands
//  received and decoded.
static size_t
s_drain (self_t *self)
{
    size_t received = 0;
    size_t others = 0;                  //  Commands other than private_message
    self->inbox_empty = false;
    while (others < S_DRAIN_MAX) {
        s_slot_t *slot = &self->batch [self->pending];
        int rc = chat_msg_recv (self->inbox, &slot->msg, true);
        if (rc == 1) {
            self->inbox_empty = true;
            break;                      //  Nothing more waiting
        }
        if (rc != 0) {
            if (zmq_errno () == ETERM) {
                self->context_gone = true;
                break;                  //  Context terminated
            }
            others++;
            continue;                   //  Malformed: logged and dropped
        }
        received++;
        if (slot->msg.cmd == CHAT_CMD_PRIVATE_MESSAGE) {
            if (++self->pending == self->batch_max)
                break;                  //  A full batch: store it now
        }
        else {
            others++;
            //  Later commands see every earlier message. The command sits
            //  in slot [pending], which s_flush does not touch.
            s_flush (self);
            s_dispatch (self, &slot->msg);
        }
    }
    s_flush (self);
    return received;
}

//  The inbox may hold messages (chat_zloop_watch): returns 1 if some may
//  still wait, 0 once it is empty, -1 if the context was terminated
static int
s_inbox_ready (void *arg)
{
    self_t *self = (self_t *) arg;
    s_drain (self);
    return self->context_gone? -1: self->inbox_empty? 0: 1;
}

//  A pipe command other than $TERM: STATUS sends storage_status now
static void
s_pipe_command (void *arg, const char *command)
{
    if (streq (command, "STATUS"))
        s_send_status ((self_t *) arg);
    else
        zsys_warning ("persistence: unexpected pipe command %s", command);
}

static int
s_pipe_ready (void *arg)
{
    self_t *self = (self_t *) arg;
    if (chat_pipe_drain (self->pipe, s_pipe_command, self) == -1)
        self->terminated = true;
    return self->terminated? -1: 0;
}


//  --------------------------------------------------------------------------
//  The actor

void
chat_persistence_actor (zsock_t *pipe, void *config)
{
    assert (config);
    chat_actor_thread_name (CHAT_ACTOR_PERSISTENCE);
    self_t *self = s_self_new (pipe, (const chat_config_t *) config);
    zsock_signal (pipe, 0);
    char error [256] = "";
    if (s_self_open (self, error, sizeof error) != 0) {
        chat_actor_report (pipe, error);        //  chatd prints it, once
        s_self_destroy (&self);
        return;
    }
    if (chat_zloop_watch (self->loop, pipe, &self->pipe_watch, s_pipe_ready, self) != 0
    ||  chat_zloop_watch (self->loop, self->inbox, &self->inbox_watch, s_inbox_ready, self) != 0) {
        chat_actor_report (pipe, "persistence: cannot watch its sockets");
        s_self_destroy (&self);
        return;
    }
    chat_actor_report (pipe, NULL);

    zloop_timer (self->loop, S_STATUS_INTERVAL_MS, 0, s_status_timer, self);
    s_send_status (self);

    //  We stop on $TERM only (chatd.c orders the shutdown); zloop returns
    //  0 when a signal interrupts the poll, so start it again
    while (!self->terminated) {
        zloop_start (self->loop);
        if (self->context_gone || zmq_errno () == ETERM)
            break;                      //  Context terminated
    }
    //  Store and commit what is already waiting before we go
    while (s_drain (self) > 0)
        ;
    s_self_destroy (&self);
}
