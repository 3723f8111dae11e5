/*  =========================================================================
    chat_msg.h - the internal protocol of chatd, declared in one place

    Every message between two actors is a ZeroMQ multipart message of two
    frames:

        frame 0      the command name, as the domain names it ("join", ...)
        frame 1      the body: the command's fields, in the order declared
                     below, each as a 4-byte little-endian length, that many
                     bytes, and one NUL byte

    Fields travel as text: numbers in decimal, strings as their bytes, JSON
    values as serialized JSON. chat-tap (tools/chat_tap.c) decodes every
    body with this same table. The fields share one frame because ZeroMQ
    pays for each frame on both sides (about 0.1 us a frame sent and
    received here): one frame a field made a stored message cost 36 frames
    over its four hops, the body makes it 8. The trailing NUL lets a
    receiver use each field as a C string where it lies in the frame.

    Topology: each actor binds one PULL inbox at inproc://chatd-<actor> and
    sends with PUSH sockets connected to the inboxes of the actors it talks
    to (chat_outbox_t below). High-water marks are unlimited so that two
    actors sending to each other can never deadlock; admission control at
    ws-front and rate-limiter bounds what is in flight.

    When a tap endpoint is configured every message sent is also published,
    prefixed by two frames: the sending actor and the receiving actor.

    Field types in a picture:
        u   unsigned 64-bit number (0 means "absent" where noted)
        s   string
        c   message content: shown by chat-tap only with --content
        x   secret (a password): never shown by chat-tap
        j   JSON text (may embed content: shown only with --content)
    =========================================================================
*/

#ifndef CHAT_MSG_H_INCLUDED
#define CHAT_MSG_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

//  The six actors. The name is also the inbox: inproc://chatd-<name>
#define CHAT_ACTORS(X)                          \
    X (WS_FRONT,     "ws-front")                \
    X (AUTH,         "auth")                    \
    X (HUB,          "hub")                     \
    X (PERSISTENCE,  "persistence")             \
    X (PRESENCE,     "presence")                \
    X (RATE_LIMITER, "rate-limiter")

typedef enum {
#define X(id, name) CHAT_ACTOR_##id,
    CHAT_ACTORS (X)
#undef X
    CHAT_ACTOR_COUNT
} chat_actor_t;

//  Every command: id, name, picture, field names, and who sends it where.
//  A command has one frame layout wherever it travels; the path is only
//  documentation (chat-tap prints the real sender and receiver).
#define CHAT_COMMANDS(X) \
    /* --- HTTP API (req_id is ws-front's id of the pending HTTP request) */ \
    X (REGISTER,         "register",         "usx",    "req_id nickname password",                                  "ws-front > auth") \
    X (LOGIN,            "login",            "ussx",   "req_id address nickname password",                          "ws-front > rate-limiter > auth") \
    X (LOGIN_RESULT,     "login_result",     "ssu",    "address nickname ok",                                       "auth > rate-limiter") \
    X (LOGOUT,           "logout",           "us",     "req_id token_hash",                                         "ws-front > auth") \
    X (LIST_USERS,       "list_users",       "u",      "req_id",                                                    "ws-front > persistence") \
    X (USERS_LISTED,     "users_listed",     "uj",     "req_id users",                                              "persistence > presence") \
    X (LIST_CONVERSATIONS, "list_conversations", "uu", "req_id user_id",                                            "ws-front > persistence") \
    X (HTTP_RESPONSE,    "http_response",    "uujx",   "req_id status body set_cookie",                             "auth|persistence|presence|rate-limiter > ws-front") \
    /* --- sessions: auth owns them, ws-front keeps a copy to decide upgrades */ \
    X (SESSION_CREATED,  "session_created",  "susu",   "token_hash user_id nickname expires_at_ms",                 "auth > ws-front") \
    X (SESSION_REVOKED,  "session_revoked",  "ss",     "token_hash reason",                                         "auth > ws-front") \
    /* --- connections and presence */ \
    X (JOIN,             "join",             "uus",    "conn_id user_id nickname",                                  "ws-front > hub > presence") \
    X (LEAVE,            "leave",            "uus",    "conn_id user_id nickname",                                  "ws-front > hub > presence") \
    X (ONLINE_USERS,     "online_users",     "uj",     "conn_id users",                                             "presence > ws-front") \
    X (USER_ONLINE,      "user_online",      "us",     "user_id nickname",                                          "presence > ws-front") \
    X (USER_OFFLINE,     "user_offline",     "us",     "user_id nickname",                                          "presence > ws-front") \
    /* --- private messages */ \
    X (PRIVATE_MESSAGE,  "private_message",  "uususc", "conn_id user_id nickname to_user_id client_id content",     "ws-front > rate-limiter > persistence") \
    X (MESSAGE_STORED,   "message_stored",   "uuususcsu", "conn_id message_id from_user_id nickname to_user_id client_id content timestamp duplicate", "persistence > hub") \
    X (DELIVER_MESSAGE,  "deliver_message",  "usuususcsuu", "conn_id conn_ids message_id from_user_id nickname to_user_id client_id content timestamp online duplicate", "hub > ws-front") \
    X (MESSAGE_FAILED,   "message_failed",   "usussu", "conn_id client_id to_user_id error message retry_after_ms",  "rate-limiter|persistence > ws-front") \
    X (CLOSE_CONNECTION, "close_connection", "uus",    "conn_id code reason",                                       "rate-limiter > ws-front") \
    /* --- typing */ \
    X (TYPING,           "typing",           "uusuu",  "conn_id user_id nickname to_user_id is_typing",             "ws-front > rate-limiter > hub") \
    X (DELIVER_TYPING,   "deliver_typing",   "susu",   "conn_ids from_user_id nickname is_typing",                  "hub > ws-front") \
    /* --- history, catch-up, read state */ \
    X (LOAD_HISTORY,     "load_history",     "uuuuuj", "conn_id user_id with_user_id before_id limit request_id",   "ws-front > persistence") \
    X (HISTORY_LOADED,   "history_loaded",   "uujju",  "conn_id with_user_id request_id messages has_more",         "persistence > ws-front") \
    X (SYNC,             "sync",             "uuuuj",  "conn_id user_id after_id limit request_id",                 "ws-front > persistence") \
    X (SYNCED,           "synced",           "ujju",   "conn_id request_id messages has_more",                      "persistence > ws-front") \
    X (MARK_READ,        "mark_read",        "uuuu",   "conn_id user_id with_user_id up_to_id",                     "ws-front > persistence") \
    X (MESSAGES_READ,    "messages_read",    "uuu",    "by_user_id with_user_id up_to_id",                          "persistence > hub") \
    X (DELIVER_READ,     "deliver_read",     "suu",    "conn_ids by_user_id up_to_id",                              "hub > ws-front") \
    X (REQUEST_FAILED,   "request_failed",   "usjs",   "conn_id request_type request_id error",                     "persistence > ws-front") \
    /* --- health */ \
    X (STORAGE_STATUS,   "storage_status",   "uuu",    "up stored_total batches_total",                             "persistence > ws-front")

typedef enum {
#define X(id, name, picture, fields, path) CHAT_CMD_##id,
    CHAT_COMMANDS (X)
#undef X
    CHAT_CMD_COUNT
} chat_cmd_t;

//  Most fields any command has
#define CHAT_MAX_FIELDS 12

//  Largest message id, user id... all ids fit in 63 bits
//  A received message, decoded. Every field is available as NUL-terminated
//  text in s[i] (length len[i]); numeric fields (u) are also parsed in u[i].
//  Pointers stay valid until the next chat_msg_recv or chat_msg_decode on
//  the same chat_msg_t, or its chat_msg_release.
typedef struct {
    chat_cmd_t cmd;                     //  Which command
    int nfields;                        //  Number of fields decoded
    const char *s [CHAT_MAX_FIELDS];    //  Field i as text
    size_t len [CHAT_MAX_FIELDS];       //  Length of field i in bytes
    uint64_t u [CHAT_MAX_FIELDS];       //  Field i as number (u fields)
    char *buf;                          //  Copy of a body decoded from a zmsg
    size_t cap;                         //  Capacity of buf
    zmq_msg_t body;                     //  Body frame received: s [i] point into it
    bool has_body;                      //  body holds a frame to close
} chat_msg_t;

//  Names and pictures
const char *chat_actor_name (chat_actor_t actor);
const char *chat_cmd_name (chat_cmd_t cmd);
const char *chat_cmd_picture (chat_cmd_t cmd);
const char *chat_cmd_fields (chat_cmd_t cmd);     //  space-separated names
const char *chat_cmd_path (chat_cmd_t cmd);
//  Look a command up by name; returns CHAT_CMD_COUNT if unknown
chat_cmd_t chat_cmd_lookup (const char *name, size_t len);
//  Look an actor up by name; returns CHAT_ACTOR_COUNT if unknown
chat_actor_t chat_actor_lookup (const char *name);
//  Fill buf with "inproc://chatd-<name>"
void chat_actor_endpoint (chat_actor_t actor, char *buf, size_t size);

//  --- Receiving -----------------------------------------------------------
//  Create an actor's inbox: a PULL socket bound at its inproc endpoint.
zsock_t *chat_inbox_new (chat_actor_t actor);

void chat_msg_init (chat_msg_t *m);
void chat_msg_release (chat_msg_t *m);
//  Receive one message without blocking (ZMQ_DONTWAIT) if nowait, else
//  block. Returns 0 on success, 1 if nothing was waiting (nowait only),
//  -1 on a malformed message (logged and dropped) or a socket error.
int chat_msg_recv (zsock_t *sock, chat_msg_t *m, bool nowait);
//  Decode an already-received zmsg (consumes nothing; msg stays caller's).
int chat_msg_decode (zmsg_t *msg, chat_msg_t *m);
//  Decode a command frame and a body given as bytes (the body is copied).
//  Returns 0, or -1 (logged) if the command is unknown or the body does not
//  hold exactly the command's fields.
int chat_msg_decode_parts (const void *command, size_t command_size,
                           const void *body, size_t body_size, chat_msg_t *m);
//  How many whole fields a body holds, or -1 if it ends inside one
int chat_msg_body_count (const void *body, size_t size);
//  Build a body frame of count NUL-terminated fields, for tests and tools
//  that write raw messages. Returns NULL if it cannot be allocated.
zframe_t *chat_msg_body (const char *const *fields, int count);

//  --- Sending -------------------------------------------------------------
//  An actor's set of PUSH sockets, one per peer it talks to, created on
//  first use, plus the optional tap publisher.
typedef struct chat_outbox_t chat_outbox_t;

//  Create an outbox for `self_actor`. tap_endpoint is NULL or "" for none;
//  otherwise a PUB socket connects to it (the tap proxy binds it).
chat_outbox_t *chat_outbox_new (chat_actor_t self_actor, const char *tap_endpoint);
void chat_outbox_destroy (chat_outbox_t **self_p);
//  Send one command to an actor. Arguments follow the command's picture:
//  u: uint64_t, s/c/x/j: const char * (NULL sends an empty frame).
//  Never blocks (unlimited HWM, ZMQ_DONTWAIT). Returns 0 or -1.
int chat_send (chat_outbox_t *self, chat_actor_t to, chat_cmd_t cmd, ...);
//  As chat_send, with explicit lengths for s/c/x/j fields: each string
//  argument is followed by a size_t length.
int chat_sendn (chat_outbox_t *self, chat_actor_t to, chat_cmd_t cmd, ...);
//  Send a received message on, unchanged, to another actor. The body frame
//  is shared, not copied (m must come from chat_msg_recv). Returns 0 or -1.
int chat_forward (chat_outbox_t *self, chat_actor_t to, chat_msg_t *m);
//  The underlying socket to a peer (created on demand), e.g. for ZMQ_FD use
zsock_t *chat_outbox_socket (chat_outbox_t *self, chat_actor_t to);

//  --- Sending in bursts -----------------------------------------------------
//  A thread that is woken for each message it is sent pays the wake-up for
//  each: when a peer handles messages faster than they come, it goes back to
//  sleep between two sends. So an actor holds its outbox while it handles
//  what woke it and flushes before it sleeps again: between
//  chat_outbox_hold and chat_outbox_flush, chat_send only queues (the
//  frames are built at once, the arguments may go away); flush hands them
//  all to ZeroMQ back to back, in order, and the peer reads the burst in
//  one wake-up. Order to each peer is kept. A hold never outlasts
//  CHAT_OUTBOX_HOLD_MAX messages: the queue is flushed then and stays held,
//  so a long burst reaches the peer in pieces and the peer can start at
//  once. chat_outbox_destroy flushes.
#define CHAT_OUTBOX_HOLD_MAX 64
void chat_outbox_hold (chat_outbox_t *self);
//  Send what is queued and stop holding. Returns 0, or -1 if a frame could
//  not be sent (logged).
int chat_outbox_flush (chat_outbox_t *self);

//  The inproc endpoint that actors' tap PUB sockets connect to; the tap
//  proxy in chatd.c binds it (XSUB) and republishes on the configured
//  endpoint (XPUB).
#define CHAT_TAP_INPROC "inproc://chatd-tap"

//  --- Start-up handshake --------------------------------------------------
//  Every actor, after zsock_signal (pipe, 0), sends one more message on its
//  pipe: "READY" or "FAILED <one-line reason>", always, before it returns
//  (an actor that returned without reporting would leave the caller's
//  zactor_destroy waiting for a signal chat_actor_started consumed). chat_actor_started() reads
//  it on the caller's side; returns 0 if ready, else -1 and copies the reason.
int chat_actor_report (zsock_t *pipe, const char *error);   //  NULL = ready
//  Name the calling thread after the actor ("ws-front", ...), so that top -H,
//  perf and /proc/PID/task/*/comm show which actor spends what
void chat_actor_thread_name (chat_actor_t actor);
int chat_actor_started (zactor_t *actor, char *error, size_t size);

//  --- Serving -------------------------------------------------------------
//  The loop of an actor that only reacts to messages: sleep on the pipe and
//  the inbox, drain the inbox in bounded batches (so $TERM is never
//  starved), call handler for each message with outbox held (if not NULL)
//  and flush it after each batch; return on $TERM. Signals do not stop it:
//  chatd.c orders the shutdown. It is a zloop with both sockets watched by
//  chat_zloop_watch (below).
typedef void (chat_handler_fn) (void *self, chat_msg_t *msg);
void chat_actor_serve (zsock_t *pipe, zsock_t *inbox, chat_msg_t *msg,
                       chat_outbox_t *outbox, chat_handler_fn *handler, void *self);

//  Receive and handle up to max messages from inbox, with outbox (if not
//  NULL) held and flushed after them. Returns 0 once a receive found the
//  inbox empty, 1 if messages may still wait, -1 if the context was
//  terminated. Malformed messages are logged and dropped.
int chat_inbox_drain (zsock_t *inbox, chat_msg_t *msg, chat_outbox_t *outbox, int max,
                      chat_handler_fn *handler, void *self);

//  --- Serving in a zloop ----------------------------------------------------
//  zloop_reader has zmq_poll ask libzmq for the socket's events on every
//  pass (two system calls a socket a pass; each sleep is two passes).
//  chat_zloop_watch has the loop poll the socket's ZMQ_FD instead, which
//  only says that the socket's state may have changed. So drain (self) is
//  called then, and once when the loop starts, and must read the socket
//  until a receive finds nothing waiting (then return 0), or stop early
//  (return 1: it is called again before the loop sleeps), or return -1 to
//  end the loop. watch is the caller's, and must outlive the loop.
typedef int (chat_drain_fn) (void *self);
typedef struct {
    zloop_t *loop;                      //  The loop it is registered with
    chat_drain_fn *drain;               //  What reads the socket
    void *self;                         //  drain's argument
    int again;                          //  zloop timer that calls drain again, or -1
} chat_watch_t;
int chat_zloop_watch (zloop_t *loop, zsock_t *sock, chat_watch_t *watch,
                      chat_drain_fn *drain, void *self);
//  Read every command waiting on an actor's pipe (the drain of its pipe's
//  chat_zloop_watch): each but $TERM goes to on_command, or is logged if
//  that is NULL. Returns -1 on $TERM or a dead pipe, else 0.
typedef void (chat_command_fn) (void *self, const char *command);
int chat_pipe_drain (zsock_t *pipe, chat_command_fn *on_command, void *self);

//  --- Connection id lists ("conn_ids" fields): comma-separated decimal -----
//  Iterate: const char *p = list; uint64_t id; while (chat_ids_next (&p, &id)) ...
bool chat_ids_next (const char **cursor, uint64_t *id);

#ifdef __cplusplus
}
#endif

#endif
