/*  =========================================================================
    ws_front.c - ws-front: the HTTP and WebSocket front of chatd

    Owns the libwebsockets context and every client connection: WebSocket
    connections by conn_id, HTTP requests in flight by req_id (both from one
    counter), each with its queue of frames to write. Also owns a copy of the
    live sessions (auth sends every session it creates or revokes) so that it
    can decide a WebSocket upgrade at once, and the latest storage status.

    Talks to: auth (register, logout), rate-limiter (login, private_message,
    typing), hub (join, leave), persistence (history, sync, mark_read, lists).
    Receives from all of them; see include/chat_msg.h.

    The ZeroMQ inbox and the actor pipe are watched by the lws loop itself:
    a dup of each socket's ZMQ_FD is adopted as a raw file, and on each
    readable edge the socket is drained without blocking. lws runs on our
    own libuv loop (epoll), so an idle front sleeps in epoll_wait and a
    wakeup does not scan every connection; a message is written the moment
    it arrives. What one wake-up sends to the other actors is held and goes
    out as one burst just before the loop sleeps (a libuv prepare handle),
    so that each actor wakes once for it. Nothing here waits on disk or on
    password hashing: HTTP API
    requests are sent on and answered when the answer comes back. Frames
    are written only in WRITEABLE callbacks, in order, everything queued
    for a connection in one send; presence frames may wait a little to
    share that send. Keep-alive (pings, hang-ups) is done here too, at a
    cost that does not grow with the number of idle connections.
    =========================================================================
*/

#include "chat_actors.h"
#include "chat_config.h"
#include "chat_idmap.h"
#include "chat_msg.h"
#include "chat_parse.h"
#include "chat_wire.h"
#include <libwebsockets.h>
#include <sodium.h>
#include <uv.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <inttypes.h>
#include <malloc.h>
#include <strings.h>

//  Most messages handled per drain before yielding to the network
#define DRAIN_BATCH 2048
//  Cookie value: 32 random bytes in base64url is 43 chars
#define COOKIE_MAX 128
#define SESSION_HASH_SIZE 65
//  Most bytes of frames written to a connection in one send
#define WRITE_BATCH (64 * 1024)
//  Largest WebSocket frame header a server writes (unmasked, 64-bit length)
#define WS_HEADER_MAX 10
//  Frames queued at once (all connections) that count as a burst, after
//  which the heap is trimmed once the queues have drained
#define TRIM_AFTER_FRAMES 100000

//  jemalloc's control call, when the chatd binary is linked with jemalloc
//  (CMake option CHATD_JEMALLOC); a weak reference, so NULL otherwise.
//  Its "purge every arena" name, with jemalloc.h's MALLCTL_ARENAS_ALL
//  (4096) spelled out, since chatcore does not include that header.
extern int mallctl (const char *name, void *oldp, size_t *oldlenp,
                    void *newp, size_t newlen) __attribute__ ((weak));
#define JEMALLOC_PURGE_ALL "arena.4096.purge"

//  A frame to write, shared by every connection it fans out to
typedef struct {
    int refs;                           //  Queue entries pointing at it
    size_t len;                         //  Payload length
    unsigned char data [];              //  LWS_PRE bytes of headroom, then payload
} frame_t;

typedef struct qnode_t {
    struct qnode_t *next;               //  Next frame to write
    frame_t *frame;                     //  The frame (shared)
} qnode_t;

//  A WebSocket connection
typedef struct ws_conn_t {
    uint64_t id;                        //  conn_id, known to hub and presence
    struct lws *wsi;                    //  Never leaves this file
    uint64_t user_id;                   //  Who is connected
    char nickname [33];                 //  Their nickname
    char session [SESSION_HASH_SIZE];   //  Hash of the session it opened with
    char address [64];                  //  Client address
    bool ready;                         //  online_users queued: may write
    bool write_asked;                   //  A WRITEABLE callback is requested
    uint64_t last_rx_ms;                //  Loop time of the latest frame or pong
    bool ping_sent;                     //  Pinged since then
    bool ping_due;                      //  A ping goes out with the next write
    bool deferred;                      //  In self->deferred: presence frames wait
    qnode_t *head, *tail;               //  Frames waiting to be written
    size_t queued_bytes;                //  Their total size
    uint16_t close_code;                //  Close once the queue is flushed
    char close_reason [64];             //  With this reason
    bool close_now;                     //  Close without flushing
    lws_sorted_usec_list_t sul_close;   //  Deferred close (rate limit)
    uint16_t deferred_code;             //  Its code, reason in deferred_reason
    char deferred_reason [64];
    unsigned inflight;                  //  Private messages sent on, not yet answered
    bool paused;                        //  Reading stopped until answers catch up
    unsigned char *rx;                  //  Message being reassembled
    size_t rx_len, rx_cap;              //  Its length and capacity
    struct ws_conn_t *prev, *next;      //  All WebSocket connections, least recently heard first
} ws_conn_t;

//  An HTTP request waiting for its answer
typedef struct {
    uint64_t id;                        //  req_id
    struct lws *wsi;                    //  Never leaves this file
    int method;                         //  LWSHUMETH_*
    char path [64];                     //  Request path
    unsigned char *body;                //  Request body
    size_t body_len;                    //  Its length
    size_t body_expected;               //  Content-Length
    bool answered;                      //  Response ready to write
    int status;                         //  Response status
    unsigned char *response;            //  LWS_PRE headroom, then the body
    size_t response_len;                //  Body length
    const char *content_type;           //  Of the response
    char set_cookie [256];              //  Set-Cookie value or ""
    bool close_after;                   //  Hang up after answering
    int64_t deadline_ms;                //  Answer 503 if nothing by then
} http_req_t;

//  Per-session data lws keeps for each wsi
typedef struct {
    ws_conn_t *conn;                    //  When a WebSocket
    http_req_t *req;                    //  When an HTTP request is in flight
} pss_t;

//  A session as auth announced it
typedef struct {
    uint64_t user_id;                   //  Owner
    char nickname [33];                 //  Owner's nickname
    int64_t expires_ms;                 //  Wall clock expiry
} session_t;

typedef struct {
    chat_config_t cfg;                  //  Our copy of the configuration
    zsock_t *pipe;                      //  Actor pipe
    zsock_t *inbox;                     //  Our PULL inbox
    chat_outbox_t *outbox;              //  To the other actors
    chat_msg_t msg;                     //  Message being handled
    uv_loop_t loop;                     //  The event loop (libuv: epoll)
    bool loop_ready;                    //  loop initialised
    uv_prepare_t before_sleep;          //  Flushes the outbox before each poll
    bool before_sleep_ready;            //  before_sleep started
    struct lws_context *context;        //  libwebsockets, running on loop
    struct lws_vhost *vhost;            //  The one vhost
    struct lws *pipe_wsi;               //  The pipe's adopted fd in the loop
    struct lws *inbox_wsi;              //  The inbox's
    lws_sorted_usec_list_t sul_drain;   //  Re-arms a capped drain
    lws_sorted_usec_list_t sul_tick;    //  Once a second: HTTP deadlines
    lws_sorted_usec_list_t sul_presence;    //  Flushes the deferred connections
    uint64_t *deferred;                 //  conn_ids with presence frames waiting
    size_t deferred_count, deferred_cap;
    bool terminated;                    //  $TERM received
    uint64_t next_id;                   //  Last conn_id / req_id given
    chat_idmap_t conns;                 //  conn_id -> ws_conn_t
    chat_idmap_t reqs;                  //  req_id -> http_req_t
    chat_idmap_t user_conns;            //  user_id -> number of WebSockets
    zhashx_t *address_conns;            //  client address -> number of WebSockets
    ws_conn_t *ws_list;                 //  Every WebSocket connection, least recently heard first
    ws_conn_t *ws_tail;                 //  The most recently heard
    size_t ws_count;                    //  How many
    zhashx_t *sessions;                 //  session hash -> session_t
    chat_json_t json;                   //  Scratch buffer for outgoing JSON
    unsigned char *wbuf;                //  LWS_PRE + WRITE_BATCH: frames being written
    //  Health and metrics
    bool storage_up;                    //  Latest storage_status
    uint64_t storage_stored;            //  Messages stored, per persistence
    uint64_t storage_batches;           //  Batches committed, per persistence
    uint64_t http_requests;             //  HTTP requests received
    uint64_t frames_received;           //  WebSocket messages received
    uint64_t messages_acknowledged;     //  message_delivered sent
    uint64_t messages_failed;           //  message_failed sent
    uint64_t paused_total;              //  Times a connection stopped being read
    uint64_t frames_sent;               //  WebSocket frames written
    uint64_t frame_writes;              //  Writes they took (one per batch)
    size_t queued_frames;               //  Queue entries on all connections now
    size_t queued_peak;                 //  Most of them since the last trim
} self_t;

static int s_callback (struct lws *wsi, enum lws_callback_reasons reason,
                       void *user, void *in, size_t len);
static void s_keepalive (self_t *self);

//  Pings are ours (s_keepalive): an all-zero policy turns off lws's own
//  per-connection validity timers
static const lws_retry_bo_t s_no_lws_keepalive = { 0 };

static const struct lws_protocols s_protocols [] = {
    //  One protocol serves HTTP, WebSocket, and the adopted ZeroMQ fds.
    //  lws gives each connection a receive buffer of rx_buffer_size, plus
    //  LWS_PRE bytes of headroom and 4 more, for as long as it is open,
    //  and reads the socket at most that much at a time. 2 KiB in all
    //  keeps an idle connection small and still takes a client's burst of
    //  a dozen chat frames in one read (1 KiB cost 20 % of throughput at
    //  8 messages in flight per user, docs/benchmarks.md). A larger frame
    //  arrives in pieces, reassembled here in a buffer that lives only
    //  until the message is complete. 2,048 bytes is one of the
    //  allocator's size classes exactly. tx_packet_size lets a large
    //  frame go out in one send
    { "chatd", s_callback, sizeof (pss_t), 2048 - LWS_PRE - 4, 0, NULL, 65536 },
    { NULL, NULL, 0, 0, 0, NULL, 0 }
};



//  --------------------------------------------------------------------------
//  JSON output: events are written with chat_json (chat_wire.h) into one
//  reused buffer, then copied once into a frame shared by its recipients

static void
s_json_key_u64 (self_t *self, const char *key, uint64_t value)
{
    chat_json_key (&self->json, key);
    chat_json_u64 (&self->json, value);
}

static void
s_json_key_string (self_t *self, const char *key, const char *text, size_t len)
{
    chat_json_key (&self->json, key);
    chat_json_string (&self->json, text, len);
}

static void
s_json_key_bool (self_t *self, const char *key, bool value)
{
    chat_json_key (&self->json, key);
    chat_json_lit (&self->json, value ? "true" : "false");
}

//  Raw JSON value; absent when empty
static void
s_json_key_raw (self_t *self, const char *key, const char *json, size_t len)
{
    if (len) {
        chat_json_key (&self->json, key);
        chat_json_raw (&self->json, json, len);
    }
}

//  Start an event object: {"type":"..."
static void
s_json_begin (self_t *self, const char *type)
{
    self->json.len = 0;
    chat_json_lit (&self->json, "{");
    s_json_key_string (self, "type", type, strlen (type));
}

//  Close the object and copy it into a new frame
static frame_t *
s_json_frame (self_t *self)
{
    chat_json_lit (&self->json, "}");
    frame_t *frame = (frame_t *) malloc (sizeof (frame_t) + LWS_PRE + self->json.len);
    assert (frame);
    frame->refs = 0;
    frame->len = self->json.len;
    memcpy (frame->data + LWS_PRE, self->json.data, self->json.len);
    return frame;
}


//  --------------------------------------------------------------------------
//  WebSocket connections: queue frames, close

static void
s_frame_unref (frame_t *frame)
{
    if (--frame->refs <= 0)
        free (frame);
}

//  Ask for one WRITEABLE callback, unless one is asked already
static void
s_conn_want_write (ws_conn_t *conn)
{
    if (!conn->write_asked) {
        conn->write_asked = true;
        lws_callback_on_writable (conn->wsi);
    }
}

//  Presence frames (user_online, user_offline) may wait up to [websocket]
//  presence_delay_ms, so that a connection gets every presence change of
//  that time in one write instead of one write each: with thousands of
//  users coming and going, that is the difference between a few sends per
//  connection per second and one per connection per change. Any other
//  frame queued behind them writes them at once, in order.
static void
s_flush_deferred (lws_sorted_usec_list_t *sul)
{
    self_t *self = lws_container_of (sul, self_t, sul_presence);
    for (size_t i = 0; i < self->deferred_count; i++) {
        ws_conn_t *conn = (ws_conn_t *) chat_idmap_get (&self->conns, self->deferred [i]);
        if (conn && conn->deferred) {
            conn->deferred = false;
            if (conn->head)
                s_conn_want_write (conn);
        }
    }
    self->deferred_count = 0;
}

static void
s_conn_defer (self_t *self, ws_conn_t *conn)
{
    if (conn->write_asked || conn->deferred)
        return;
    if (self->cfg.websocket_presence_delay_ms == 0) {
        s_conn_want_write (conn);
        return;
    }
    if (self->deferred_count == self->deferred_cap) {
        self->deferred_cap = self->deferred_cap ? 2 * self->deferred_cap : 1024;
        self->deferred = (uint64_t *) realloc (self->deferred, self->deferred_cap * sizeof (uint64_t));
        assert (self->deferred);
    }
    if (self->deferred_count == 0)
        lws_sul_schedule (self->context, 0, &self->sul_presence, s_flush_deferred,
                          (lws_usec_t) self->cfg.websocket_presence_delay_ms * LWS_US_PER_MS);
    self->deferred [self->deferred_count++] = conn->id;
    conn->deferred = true;
}

//  Close a connection with a code: after what is queued (flush_first) or
//  at once. A client that does not read may never make its socket
//  writable again, so a timer hangs up on it regardless.
static void
s_conn_close (ws_conn_t *conn, uint16_t code, const char *reason, bool flush_first)
{
    conn->close_code = code;
    snprintf (conn->close_reason, sizeof conn->close_reason, "%s", reason);
    if (!flush_first)
        conn->close_now = true;
    s_conn_want_write (conn);
    lws_set_timeout (conn->wsi, PENDING_TIMEOUT_USER_OK, flush_first ? 10 : 1);
}

//  Queue a frame on a connection and ask to write: now, or with the next
//  presence flush (lazy). A client that does not read is cut off once its
//  queue passes max_queue_bytes.
static void
s_conn_push (self_t *self, ws_conn_t *conn, frame_t *frame, bool front, bool lazy)
{
    if (conn->close_now)
        return;
    //  A frame always enters an empty queue (a large sync answer is fine);
    //  a backlog past the limit means the client does not read
    if (conn->queued_bytes && conn->queued_bytes + frame->len > (size_t) self->cfg.limits_max_queue_bytes) {
        zsys_warning ("ws-front: connection %" PRIu64 " does not read; closing", conn->id);
        s_conn_close (conn, LWS_CLOSE_STATUS_POLICY_VIOLATION, "send queue full", false);
        return;
    }
    qnode_t *node = (qnode_t *) malloc (sizeof (qnode_t));
    assert (node);
    node->frame = frame;
    frame->refs++;
    if (front) {
        node->next = conn->head;
        conn->head = node;
        if (!conn->tail)
            conn->tail = node;
    }
    else {
        node->next = NULL;
        if (conn->tail)
            conn->tail->next = node;
        else
            conn->head = node;
        conn->tail = node;
    }
    conn->queued_bytes += frame->len;
    if (++self->queued_frames > self->queued_peak)
        self->queued_peak = self->queued_frames;
    //  Before online_users is queued nothing is written (it must be first)
    if (!conn->ready)
        return;
    if (lazy)
        s_conn_defer (self, conn);
    else
        s_conn_want_write (conn);
}

//  Take the head frame off a connection's queue
static void
s_conn_pop (self_t *self, ws_conn_t *conn)
{
    self->queued_frames--;
    qnode_t *node = conn->head;
    conn->head = node->next;
    if (!conn->head)
        conn->tail = NULL;
    conn->queued_bytes -= node->frame->len;
    s_frame_unref (node->frame);
    free (node);
}

//  Send a frame to one connection; frees it if nobody took it
static void
s_send_frame (self_t *self, ws_conn_t *conn, frame_t *frame)
{
    frame->refs++;
    if (conn)
        s_conn_push (self, conn, frame, false, false);
    s_frame_unref (frame);
}

//  Send a frame to every connection in a comma-separated id list
static void
s_send_frame_to_ids (self_t *self, const char *ids, frame_t *frame)
{
    frame->refs++;
    const char *cursor = ids;
    uint64_t id;
    while (chat_ids_next (&cursor, &id)) {
        ws_conn_t *conn = id ? (ws_conn_t *) chat_idmap_get (&self->conns, id) : NULL;
        if (conn)
            s_conn_push (self, conn, frame, false, false);
    }
    s_frame_unref (frame);
}

//  {"type":"error","error":CODE,"message":TEXT[,"request_id":...]}
static void
s_send_error (self_t *self, ws_conn_t *conn, const char *code, const char *message,
              const char *request_id, size_t request_id_len)
{
    s_json_begin (self, "error");
    s_json_key_string (self, "error", code, strlen (code));
    s_json_key_string (self, "message", message, strlen (message));
    s_json_key_raw (self, "request_id", request_id, request_id_len);
    s_send_frame (self, conn, s_json_frame (self));
}

static void
s_send_message_failed (self_t *self, ws_conn_t *conn, const char *client_id, size_t client_id_len,
                       uint64_t to_user_id, const char *code, const char *message, uint64_t retry_after_ms)
{
    s_json_begin (self, "message_failed");
    chat_json_key (&self->json, "client_id");
    if (client_id_len)
        chat_json_string (&self->json, client_id, client_id_len);
    else
        chat_json_lit (&self->json, "null");
    s_json_key_u64 (self, "to_user_id", to_user_id);
    s_json_key_string (self, "error", code, strlen (code));
    s_json_key_string (self, "message", message, strlen (message));
    if (streq (code, "rate_limited"))
        s_json_key_u64 (self, "retry_after_ms", retry_after_ms);
    s_send_frame (self, conn, s_json_frame (self));
    self->messages_failed++;
}


//  --------------------------------------------------------------------------
//  Sessions and origins

//  Hex BLAKE2b-256 of the session cookie's value, as auth stores it
static void
s_token_hash (const char *token, size_t len, char *hash_hex)
{
    unsigned char hash [32];
    crypto_generichash (hash, sizeof hash, (const unsigned char *) token, len, NULL, 0);
    sodium_bin2hex (hash_hex, SESSION_HASH_SIZE, hash, sizeof hash);
}

//  The live session the request's cookie names, or NULL; hash_hex gets its hash
static session_t *
s_request_session (self_t *self, struct lws *wsi, char *hash_hex)
{
    char header [4096], token [COOKIE_MAX];
    int length = lws_hdr_total_length (wsi, WSI_TOKEN_HTTP_COOKIE);
    if (length <= 0 || length >= (int) sizeof header
    ||  lws_hdr_copy (wsi, header, sizeof header, WSI_TOKEN_HTTP_COOKIE) < 0
    ||  !chat_cookie_get (header, "session", token, sizeof token))
        return NULL;
    s_token_hash (token, strlen (token), hash_hex);
    session_t *session = (session_t *) zhashx_lookup (self->sessions, hash_hex);
    if (session && session->expires_ms <= chat_now_ms ())
        session = NULL;
    return session;
}

//  Whether the request's Origin may act (see chat_origin_allowed)
static bool
s_origin_allowed (self_t *self, struct lws *wsi)
{
    char origin [256], host [256] = "";
    int origin_len = lws_hdr_total_length (wsi, WSI_TOKEN_ORIGIN);
    if (origin_len <= 0)
        return true;
    if (origin_len >= (int) sizeof origin || lws_hdr_copy (wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0)
        return false;
    if (lws_hdr_copy (wsi, host, sizeof host, WSI_TOKEN_HOST) < 0)
        *host = 0;
    return chat_origin_allowed (origin, host, self->cfg.http_allowed_origins);
}


//  --------------------------------------------------------------------------
//  HTTP: answer a request (always written from HTTP_WRITEABLE)

static void
s_req_answer_raw (http_req_t *req, int status, const char *content_type,
                  const char *body, size_t len, const char *set_cookie)
{
    if (req->answered)
        return;
    req->answered = true;
    req->status = status;
    req->content_type = content_type;
    req->response = (unsigned char *) malloc (LWS_PRE + len + 1);
    assert (req->response);
    if (len)
        memcpy (req->response + LWS_PRE, body, len);
    req->response_len = len;
    snprintf (req->set_cookie, sizeof req->set_cookie, "%s", set_cookie ? set_cookie : "");
    lws_callback_on_writable (req->wsi);
}

static void
s_req_answer (http_req_t *req, int status, const char *json_body, const char *set_cookie)
{
    s_req_answer_raw (req, status, "application/json", json_body, strlen (json_body), set_cookie);
}

static void
s_req_error (http_req_t *req, int status, const char *code, const char *message)
{
    char *body = NULL;
    json_t *object = json_pack ("{s:s, s:s}", "error", code, "message", message);
    body = json_dumps (object, JSON_COMPACT);
    s_req_answer (req, status, body, NULL);
    free (body);
    json_decref (object);
}

static void
s_req_destroy (self_t *self, http_req_t **req_p)
{
    http_req_t *req = *req_p;
    if (req) {
        chat_idmap_remove (&self->reqs, req->id);
        free (req->body);
        free (req->response);
        free (req);
        *req_p = NULL;
    }
}

static int
s_http_writeable (self_t *self, struct lws *wsi, pss_t *pss)
{
    http_req_t *req = pss->req;
    if (!req || !req->answered)
        return 0;
    unsigned char headers [LWS_PRE + 1024];
    unsigned char *start = headers + LWS_PRE, *p = start, *end = headers + sizeof headers - 1;
    int rc = 0;
    if (req->status == 204) {
        if (lws_add_http_header_status (wsi, 204, &p, end)
        ||  lws_add_http_header_content_length (wsi, 0, &p, end))
            rc = -1;
    }
    else
    if (lws_add_http_common_headers (wsi, (unsigned) req->status, req->content_type,
                                     req->response_len, &p, end))
        rc = -1;
    if (rc == 0 && *req->set_cookie
    &&  lws_add_http_header_by_name (wsi, (const unsigned char *) "set-cookie:",
            (const unsigned char *) req->set_cookie, (int) strlen (req->set_cookie), &p, end))
        rc = -1;
    if (rc == 0
    &&  lws_add_http_header_by_name (wsi, (const unsigned char *) "cache-control:",
            (const unsigned char *) "no-store", 8, &p, end))
        rc = -1;
    if (rc == 0 && lws_finalize_write_http_header (wsi, start, &p, end))
        rc = -1;
    if (rc == 0 && req->response_len
    &&  lws_write (wsi, req->response + LWS_PRE, req->response_len, LWS_WRITE_HTTP_FINAL)
            != (int) req->response_len)
        rc = -1;
    bool close_after = req->close_after;
    s_req_destroy (self, &pss->req);
    if (rc == 0 && !close_after && lws_http_transaction_completed (wsi))
        rc = -1;
    return close_after ? -1 : rc;
}


//  --------------------------------------------------------------------------
//  HTTP: the API

static void
s_api_credentials (self_t *self, http_req_t *req, bool login)
{
    const char *nickname, *password, *error;
    size_t nick_len, pass_len;
    json_t *body = chat_credentials_parse ((const char *) req->body, req->body_len,
                                           &nickname, &nick_len, &password, &pass_len, &error);
    if (!body) {
        s_req_error (req, 400, error, streq (error, "bad_json") ? "the body must be a JSON object"
                                    : "nickname and password must be strings");
        return;
    }
    if (login) {
        char address [128] = "";
        lws_get_peer_simple (req->wsi, address, sizeof address);
        chat_sendn (self->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_LOGIN, req->id,
                    address, strlen (address), nickname, nick_len, password, pass_len);
    }
    else
        chat_sendn (self->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_REGISTER, req->id,
                    nickname, nick_len, password, pass_len);
    json_decref (body);
}

static void
s_api_me (http_req_t *req, session_t *session)
{
    char body [128];
    snprintf (body, sizeof body, "{\"user_id\":%" PRIu64 ",\"nickname\":\"%s\"}",
              session->user_id, session->nickname);
    s_req_answer (req, 200, body, NULL);
}

static void
s_api_healthz (self_t *self, http_req_t *req)
{
    if (self->storage_up)
        s_req_answer (req, 200, "{\"status\":\"ok\"}", NULL);
    else
        s_req_answer (req, 503, "{\"status\":\"degraded\",\"storage\":\"unavailable\"}", NULL);
}

static void
s_api_metrics (self_t *self, http_req_t *req)
{
    char *text = zsys_sprintf (
        "# HELP chatd_connections Open WebSocket connections.\n"
        "# TYPE chatd_connections gauge\n"
        "chatd_connections %zu\n"
        "# HELP chatd_sessions Live sessions known to ws-front.\n"
        "# TYPE chatd_sessions gauge\n"
        "chatd_sessions %zu\n"
        "# HELP chatd_http_requests_total HTTP requests received.\n"
        "# TYPE chatd_http_requests_total counter\n"
        "chatd_http_requests_total %" PRIu64 "\n"
        "# HELP chatd_ws_frames_received_total WebSocket messages received.\n"
        "# TYPE chatd_ws_frames_received_total counter\n"
        "chatd_ws_frames_received_total %" PRIu64 "\n"
        "# HELP chatd_messages_acknowledged_total Private messages acknowledged (message_delivered).\n"
        "# TYPE chatd_messages_acknowledged_total counter\n"
        "chatd_messages_acknowledged_total %" PRIu64 "\n"
        "# HELP chatd_messages_failed_total Private messages refused (message_failed).\n"
        "# TYPE chatd_messages_failed_total counter\n"
        "chatd_messages_failed_total %" PRIu64 "\n"
        "# HELP chatd_storage_up Whether storage answers (1) or not (0).\n"
        "# TYPE chatd_storage_up gauge\n"
        "chatd_storage_up %d\n"
        "# HELP chatd_messages_stored_total Messages stored by persistence.\n"
        "# TYPE chatd_messages_stored_total counter\n"
        "chatd_messages_stored_total %" PRIu64 "\n"
        "# HELP chatd_storage_batches_total Transactions committed by persistence.\n"
        "# TYPE chatd_storage_batches_total counter\n"
        "chatd_storage_batches_total %" PRIu64 "\n"
        "# HELP chatd_connections_paused_total Times a connection was not read for back-pressure.\n"
        "# TYPE chatd_connections_paused_total counter\n"
        "chatd_connections_paused_total %" PRIu64 "\n"
        "# HELP chatd_ws_frames_sent_total WebSocket frames written to clients.\n"
        "# TYPE chatd_ws_frames_sent_total counter\n"
        "chatd_ws_frames_sent_total %" PRIu64 "\n"
        "# HELP chatd_ws_writes_total Writes those frames took (queued frames go out together).\n"
        "# TYPE chatd_ws_writes_total counter\n"
        "chatd_ws_writes_total %" PRIu64 "\n",
        self->ws_count, zhashx_size (self->sessions), self->http_requests,
        self->frames_received, self->messages_acknowledged, self->messages_failed,
        self->storage_up ? 1 : 0, self->storage_stored, self->storage_batches, self->paused_total,
        self->frames_sent, self->frame_writes);
    s_req_answer_raw (req, 200, "text/plain; version=0.0.4", text, strlen (text), NULL);
    zstr_free (&text);
}

//  Route a complete request (body received, if any)
static void
s_http_dispatch (self_t *self, http_req_t *req)
{
    const char *path = req->path;
    bool get = req->method == LWSHUMETH_GET;
    bool post = req->method == LWSHUMETH_POST;
    bool known = streq (path, "/api/register") || streq (path, "/api/login")
              || streq (path, "/api/logout") || streq (path, "/api/me")
              || streq (path, "/api/users") || streq (path, "/api/conversations")
              || streq (path, "/healthz") || streq (path, "/metrics") || streq (path, "/ws");
    if (!known) {
        s_req_error (req, 404, "not_found", "no such endpoint");
        return;
    }
    bool wants_post = streq (path, "/api/register") || streq (path, "/api/login")
                   || streq (path, "/api/logout");
    if ((wants_post && !post) || (!wants_post && !get)) {
        s_req_error (req, 405, "method_not_allowed", "method not allowed on this endpoint");
        return;
    }
    if (post && !s_origin_allowed (self, req->wsi)) {
        s_req_error (req, 403, "forbidden", "origin not allowed");
        return;
    }
    if (streq (path, "/api/register") || streq (path, "/api/login"))
        s_api_credentials (self, req, streq (path, "/api/login"));
    else
    if (streq (path, "/healthz"))
        s_api_healthz (self, req);
    else
    if (streq (path, "/metrics"))
        s_api_metrics (self, req);
    else {
        //  Everything else needs a session
        char hash [SESSION_HASH_SIZE];
        session_t *session = s_request_session (self, req->wsi, hash);
        if (!session)
            s_req_error (req, 401, "unauthorized", "no valid session");
        else
        if (streq (path, "/api/logout"))
            chat_send (self->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGOUT, req->id, hash);
        else
        if (streq (path, "/api/me"))
            s_api_me (req, session);
        else
        if (streq (path, "/api/users"))
            chat_send (self->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_LIST_USERS, req->id);
        else
        if (streq (path, "/api/conversations"))
            chat_send (self->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_LIST_CONVERSATIONS,
                       req->id, session->user_id);
        else
            s_req_error (req, 400, "bad_request", "this endpoint needs a WebSocket upgrade");
    }
}

//  LWS_CALLBACK_HTTP: a new request's headers are in
static int
s_http_request (self_t *self, struct lws *wsi, pss_t *pss)
{
    assert (!pss->req);
    http_req_t *req = (http_req_t *) zmalloc (sizeof (http_req_t));
    assert (req);
    req->id = ++self->next_id;
    req->wsi = wsi;
    req->deadline_ms = chat_now_ms () + self->cfg.http_request_timeout_ms;
    char *uri = NULL;
    int uri_len = 0;
    req->method = lws_http_get_uri_and_method (wsi, &uri, &uri_len);
    if (uri && uri_len > 0)
        snprintf (req->path, sizeof req->path, "%.*s", uri_len, uri);
    pss->req = req;
    chat_idmap_put (&self->reqs, req->id, req);
    self->http_requests++;

    char length [32] = "";
    if (lws_hdr_copy (wsi, length, sizeof length, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0)
        req->body_expected = strtoull (length, NULL, 10);
    if (lws_hdr_total_length (wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        //  Chunked bodies are not taken; with a Content-Length too they
        //  could smuggle a second request (RFC 9112 6.1): answer and hang up
        req->close_after = true;
        s_req_error (req, 400, "bad_request", "Transfer-Encoding is not supported; send a Content-Length");
    }
    else
    if (req->body_expected > (size_t) self->cfg.http_max_body_bytes) {
        req->close_after = true;
        s_req_error (req, 413, "payload_too_large", "request body too large");
    }
    else
    if (req->method != LWSHUMETH_POST || req->body_expected == 0)
        s_http_dispatch (self, req);
    //  Else wait for LWS_CALLBACK_HTTP_BODY_COMPLETION
    return 0;
}

static int
s_http_body (self_t *self, pss_t *pss, const void *in, size_t len)
{
    http_req_t *req = pss->req;
    if (!req || req->answered || !len)
        return 0;
    if (req->body_len + len > (size_t) self->cfg.http_max_body_bytes) {
        req->close_after = true;
        s_req_error (req, 413, "payload_too_large", "request body too large");
        return 0;
    }
    unsigned char *body = (unsigned char *) realloc (req->body, req->body_len + len + 1);
    assert (body);
    memcpy (body + req->body_len, in, len);
    req->body = body;
    req->body_len += len;
    return 0;
}

static void
s_http_body_complete (self_t *self, pss_t *pss)
{
    if (pss->req && !pss->req->answered)
        s_http_dispatch (self, pss->req);
}

//  Give the pages of freed memory back to the system: every arena's
//  unused pages under jemalloc, the free space of glibc's heaps otherwise
static void
s_heap_release (void)
{
    if (mallctl) {
        if (mallctl (JEMALLOC_PURGE_ALL, NULL, NULL, NULL, 0) != 0)
            zsys_warning ("ws-front: jemalloc would not purge its arenas");
    }
    else
        malloc_trim (0);
}

//  Once a second: answer requests nobody answered in time, keep-alive
static void
s_tick (lws_sorted_usec_list_t *sul)
{
    self_t *self = lws_container_of (sul, self_t, sul_tick);
    int64_t now = chat_now_ms ();
    size_t cursor = 0;
    uint64_t id;
    void *value;
    while (chat_idmap_next (&self->reqs, &cursor, &id, &value)) {
        http_req_t *req = (http_req_t *) value;
        if (!req->answered && req->deadline_ms <= now)
            s_req_error (req, 503, "unavailable", "the server did not answer in time");
    }
    s_keepalive (self);
    //  After a burst (thousands of users coming online at once queue
    //  presence frames on every connection) the freed queue entries are
    //  scattered through the heap: give those pages back once drained
    if (self->queued_peak >= TRIM_AFTER_FRAMES && self->queued_frames < self->queued_peak / 16) {
        s_heap_release ();
        self->queued_peak = self->queued_frames;
    }
    lws_sul_schedule (self->context, 0, &self->sul_tick, s_tick, LWS_US_PER_SEC);
}


//  --------------------------------------------------------------------------
//  WebSocket: upgrade, open, receive, write, close

//  Refuse an upgrade with a status and a JSON error; lws then hangs up
static int
s_refuse_upgrade (struct lws *wsi, int status, const char *code, const char *message)
{
    //  Written whole, by hand: at this point lws has not settled the
    //  request's HTTP version and its helpers would answer HTTP/1.0
    static const struct { int status; const char *text; } reasons [] = {
        { 400, "Bad Request" }, { 401, "Unauthorized" }, { 403, "Forbidden" },
        { 404, "Not Found" }, { 405, "Method Not Allowed" }, { 429, "Too Many Requests" },
        { 503, "Service Unavailable" }
    };
    const char *reason = "Error";
    for (size_t i = 0; i < sizeof reasons / sizeof reasons [0]; i++)
        if (reasons [i].status == status)
            reason = reasons [i].text;
    char body [256];
    int body_len = snprintf (body, sizeof body, "{\"error\":\"%s\",\"message\":\"%s\"}", code, message);
    unsigned char buf [LWS_PRE + 768];
    char *response = (char *) buf + LWS_PRE;
    int len = snprintf (response, sizeof buf - LWS_PRE,
                        "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                        "cache-control: no-store\r\nconnection: close\r\n\r\n%s",
                        status, reason, body_len, body);
    lws_write (wsi, (unsigned char *) response, (size_t) len, LWS_WRITE_HTTP);
    return 1;
}

//  LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: decide from what we hold, at once
static int
s_confirm_upgrade (self_t *self, struct lws *wsi, const char *upgrade)
{
    char uri [64] = "";
    char hash [SESSION_HASH_SIZE];
    if (!upgrade || strcasecmp (upgrade, "websocket") != 0)
        return s_refuse_upgrade (wsi, 400, "bad_request", "only websocket upgrades");
    char *method_uri = NULL;
    int method_uri_len = 0;
    int method = lws_http_get_uri_and_method (wsi, &method_uri, &method_uri_len);
    if (method_uri && method_uri_len > 0)
        snprintf (uri, sizeof uri, "%.*s", method_uri_len, method_uri);
    if (!streq (uri, "/ws"))
        return s_refuse_upgrade (wsi, 404, "not_found", "WebSocket endpoint is /ws");
    if (method != LWSHUMETH_GET)
        return s_refuse_upgrade (wsi, 405, "method_not_allowed", "a WebSocket upgrade is a GET");
    if (!s_origin_allowed (self, wsi))
        return s_refuse_upgrade (wsi, 403, "forbidden", "origin not allowed");
    session_t *session = s_request_session (self, wsi, hash);
    if (!session)
        return s_refuse_upgrade (wsi, 401, "unauthorized", "no valid session");
    if (self->ws_count >= (size_t) self->cfg.limits_max_connections)
        return s_refuse_upgrade (wsi, 503, "unavailable", "too many connections");
    uintptr_t mine = (uintptr_t) chat_idmap_get (&self->user_conns, session->user_id);
    if (mine >= (uintptr_t) self->cfg.limits_max_connections_per_user)
        return s_refuse_upgrade (wsi, 429, "too_many_connections", "too many connections for this user");
    char address [64] = "";
    lws_get_peer_simple (wsi, address, sizeof address);
    uintptr_t from_address = (uintptr_t) zhashx_lookup (self->address_conns, address);
    if (from_address >= (uintptr_t) self->cfg.limits_max_connections_per_address)
        return s_refuse_upgrade (wsi, 429, "too_many_connections", "too many connections from this address");
    return 0;
}

static void
s_address_conns_add (self_t *self, const char *address, int delta)
{
    uintptr_t count = (uintptr_t) zhashx_lookup (self->address_conns, address);
    count = (uintptr_t) ((intptr_t) count + delta);
    if (count)
        zhashx_update (self->address_conns, address, (void *) count);
    else
        zhashx_delete (self->address_conns, address);
}

static void
s_user_conns_add (self_t *self, uint64_t user_id, int delta)
{
    uintptr_t count = (uintptr_t) chat_idmap_get (&self->user_conns, user_id);
    count = (uintptr_t) ((intptr_t) count + delta);
    if (count)
        chat_idmap_put (&self->user_conns, user_id, (void *) count);
    else
        chat_idmap_remove (&self->user_conns, user_id);
}

//  --------------------------------------------------------------------------
//  Keep-alive. Connections are listed least recently heard first: a frame
//  or a pong moves its connection to the end. Once a second s_keepalive
//  looks at the head of the list only, pinging those silent for
//  ping_interval_s and hanging up on those silent for pong_timeout_s, so
//  it costs what is due, whatever the number of connections. (lws's own
//  validity timers are off: each of them is a sorted insert into one list
//  of every connection's timer, which made 10,000 idle connections cost a
//  fifth of a core.)

static void
s_ws_list_remove (self_t *self, ws_conn_t *conn)
{
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        self->ws_list = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    else
        self->ws_tail = conn->prev;
    conn->prev = conn->next = NULL;
}

static void
s_ws_list_append (self_t *self, ws_conn_t *conn)
{
    conn->prev = self->ws_tail;
    conn->next = NULL;
    if (self->ws_tail)
        self->ws_tail->next = conn;
    else
        self->ws_list = conn;
    self->ws_tail = conn;
}

//  The client was heard from
static void
s_conn_heard (self_t *self, ws_conn_t *conn)
{
    conn->last_rx_ms = uv_now (&self->loop);
    conn->ping_sent = false;
    if (conn != self->ws_tail) {
        s_ws_list_remove (self, conn);
        s_ws_list_append (self, conn);
    }
}

static void
s_keepalive (self_t *self)
{
    uint64_t now = uv_now (&self->loop);
    uint64_t ping_after = (uint64_t) self->cfg.websocket_ping_interval_s * 1000;
    uint64_t hangup_after = (uint64_t) self->cfg.websocket_pong_timeout_s * 1000;
    for (ws_conn_t *conn = self->ws_list; conn; conn = conn->next) {
        uint64_t silent = now - conn->last_rx_ms;
        if (silent < ping_after)
            break;              //  The rest were heard from later
        if (silent >= hangup_after) {
            //  (not one we stopped reading: its silence is ours)
            if (!conn->close_code && !conn->paused)
                s_conn_close (conn, LWS_CLOSE_STATUS_GOINGAWAY, "ping timeout", false);
        }
        else
        if (!conn->ping_sent) {
            conn->ping_sent = true;
            conn->ping_due = true;
            s_conn_want_write (conn);
        }
    }
}

//  LWS_CALLBACK_ESTABLISHED
static int
s_ws_established (self_t *self, struct lws *wsi, pss_t *pss)
{
    char hash [SESSION_HASH_SIZE];
    session_t *session = s_request_session (self, wsi, hash);
    if (!session)
        return -1;              //  Revoked between upgrade and now
    ws_conn_t *conn = (ws_conn_t *) zmalloc (sizeof (ws_conn_t));
    assert (conn);
    conn->id = ++self->next_id;
    conn->wsi = wsi;
    conn->user_id = session->user_id;
    snprintf (conn->nickname, sizeof conn->nickname, "%s", session->nickname);
    memcpy (conn->session, hash, SESSION_HASH_SIZE);
    conn->last_rx_ms = uv_now (&self->loop);
    s_ws_list_append (self, conn);
    self->ws_count++;
    chat_idmap_put (&self->conns, conn->id, conn);
    s_user_conns_add (self, conn->user_id, 1);
    lws_get_peer_simple (wsi, conn->address, sizeof conn->address);
    s_address_conns_add (self, conn->address, 1);
    pss->conn = conn;
    pss->req = NULL;
    chat_send (self->outbox, CHAT_ACTOR_HUB, CHAT_CMD_JOIN, conn->id, conn->user_id, conn->nickname);
    return 0;
}

//  LWS_CALLBACK_CLOSED
static void
s_ws_closed (self_t *self, pss_t *pss)
{
    ws_conn_t *conn = pss->conn;
    if (!conn)
        return;
    chat_send (self->outbox, CHAT_ACTOR_HUB, CHAT_CMD_LEAVE, conn->id, conn->user_id, conn->nickname);
    lws_sul_cancel (&conn->sul_close);
    chat_idmap_remove (&self->conns, conn->id);
    s_user_conns_add (self, conn->user_id, -1);
    s_address_conns_add (self, conn->address, -1);
    s_ws_list_remove (self, conn);
    self->ws_count--;
    while (conn->head)
        s_conn_pop (self, conn);
    free (conn->rx);
    free (conn);
    pss->conn = NULL;
}

//  Put a WebSocket text frame header for a payload of len bytes at out (a
//  server's frames are not masked); returns the header's size
static size_t
s_ws_header (unsigned char *out, size_t len)
{
    out [0] = 0x81;                     //  FIN, text
    if (len < 126) {
        out [1] = (unsigned char) len;
        return 2;
    }
    if (len <= 0xffff) {
        out [1] = 126;
        out [2] = (unsigned char) (len >> 8);
        out [3] = (unsigned char) len;
        return 4;
    }
    out [1] = 127;
    for (int i = 0; i < 8; i++)
        out [2 + i] = (unsigned char) ((uint64_t) len >> (56 - 8 * i));
    return 10;
}

//  Write the queued frames in one send: as many whole frames as fit in
//  WRITE_BATCH bytes, framed here and handed to lws as raw bytes (it
//  buffers what the socket does not take and flushes it before the next
//  WRITEABLE). A frame larger than the batch goes out alone through lws's
//  own framing. One send and no poll() per frame is what makes a broadcast
//  to thousands of connections, or a burst of answers to one, cheap.
static int
s_ws_write_batch (self_t *self, ws_conn_t *conn)
{
    unsigned char *out = self->wbuf + LWS_PRE;
    size_t used = 0, frames = 0;
    if (conn->ping_due) {
        //  FIN, ping, with a payload: lws reports no pong that is empty
        static const unsigned char ping [] = { 0x89, 5, 'c', 'h', 'a', 't', 'd' };
        memcpy (out, ping, sizeof ping);
        used = sizeof ping;
        conn->ping_due = false;
    }
    while (conn->head) {
        frame_t *frame = conn->head->frame;
        if (used + WS_HEADER_MAX + frame->len > WRITE_BATCH)
            break;
        used += s_ws_header (out + used, frame->len);
        memcpy (out + used, frame->data + LWS_PRE, frame->len);
        used += frame->len;
        s_conn_pop (self, conn);
        frames++;
    }
    self->frames_sent += frames;
    if (used) {
        self->frame_writes += frames > 0;
        return lws_write (conn->wsi, out, used, LWS_WRITE_HTTP) < (int) used ? -1 : 0;
    }
    if (!conn->head)
        return 0;
    //  The head frame alone is larger than a batch
    frame_t *frame = conn->head->frame;
    if (lws_write (conn->wsi, frame->data + LWS_PRE, frame->len, LWS_WRITE_TEXT) < (int) frame->len)
        return -1;
    s_conn_pop (self, conn);
    self->frames_sent++;
    self->frame_writes++;
    return 0;
}

//  LWS_CALLBACK_SERVER_WRITEABLE: write the queued frames (one batch), or
//  the close frame once the queue is flushed
static int
s_ws_writeable (self_t *self, ws_conn_t *conn)
{
    conn->write_asked = false;
    if (conn->close_now || (conn->close_code && !conn->head)) {
        //  Write the close frame ourselves, then hang up: lws's own deferred
        //  close frame is lost when a WRITEABLE callback returns -1 on the
        //  libuv loop (seen with lws 4.1.6)
        unsigned char frame [LWS_PRE + 2 + sizeof conn->close_reason];
        unsigned char *payload = frame + LWS_PRE;
        size_t reason_len = strlen (conn->close_reason);
        payload [0] = (unsigned char) (conn->close_code >> 8);
        payload [1] = (unsigned char) (conn->close_code & 0xff);
        memcpy (payload + 2, conn->close_reason, reason_len);
        lws_write (conn->wsi, payload, 2 + reason_len, (enum lws_write_protocol) 4);
        lws_close_reason (conn->wsi, (enum lws_close_status) conn->close_code,
                          (unsigned char *) conn->close_reason, reason_len);
        return -1;
    }
    if (!conn->ready)
        return 0;
    //  (lws flushes what a socket did not take before calling us; should
    //  some remain, the batch waits for the next callback)
    if (!lws_partial_buffered (conn->wsi) && s_ws_write_batch (self, conn) != 0)
        return -1;
    if (conn->head || conn->close_code)
        s_conn_want_write (conn);
    return 0;
}


//  --------------------------------------------------------------------------
//  WebSocket: client frames

//  Back-pressure: a connection with max_inflight_per_connection messages
//  unanswered is not read until half of them are answered, so a fast sender
//  is slowed by TCP instead of filling the actors' queues
static void
s_inflight_add (self_t *self, ws_conn_t *conn, int delta)
{
    unsigned limit = (unsigned) self->cfg.limits_max_inflight_per_connection;
    if (delta < 0 && conn->inflight == 0)
        return;
    conn->inflight = (unsigned) ((int) conn->inflight + delta);
    if (!conn->paused && conn->inflight >= limit) {
        conn->paused = true;
        self->paused_total++;
        lws_rx_flow_control (conn->wsi, 0);
    }
    else
    if (conn->paused && conn->inflight <= limit / 2) {
        conn->paused = false;
        lws_rx_flow_control (conn->wsi, 1);
        s_conn_heard (self, conn);      //  Its pongs may be behind what we did not read
    }
}

//  One complete text message from a client: parse, then answer or send on
static void
s_ws_message (self_t *self, ws_conn_t *conn, const unsigned char *data, size_t len)
{
    self->frames_received++;
    chat_frame_t frame;
    chat_frame_parse ((const char *) data, len, conn->user_id,
                      (size_t) self->cfg.limits_max_message_bytes, &frame);
    const char *nickname = conn->nickname;
    switch (frame.kind) {
        case CHAT_FRAME_PRIVATE_MESSAGE:
            chat_sendn (self->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_PRIVATE_MESSAGE,
                        conn->id, conn->user_id, nickname, strlen (nickname), frame.to_user_id,
                        frame.client_id, frame.client_id_len, frame.content, frame.content_len);
            s_inflight_add (self, conn, 1);
            break;
        case CHAT_FRAME_TYPING:
            chat_send (self->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_TYPING, conn->id,
                       conn->user_id, nickname, frame.to_user_id, (uint64_t) frame.is_typing);
            break;
        case CHAT_FRAME_LOAD_HISTORY:
            chat_send (self->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_LOAD_HISTORY, conn->id,
                       conn->user_id, frame.with_user_id, frame.before_id, frame.limit, frame.request_id);
            break;
        case CHAT_FRAME_SYNC:
            chat_send (self->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_SYNC, conn->id,
                       conn->user_id, frame.after_id, frame.limit, frame.request_id);
            break;
        case CHAT_FRAME_MARK_READ:
            chat_send (self->outbox, CHAT_ACTOR_PERSISTENCE, CHAT_CMD_MARK_READ, conn->id,
                       conn->user_id, frame.with_user_id, frame.up_to_id);
            break;
        case CHAT_FRAME_ERROR:
            s_send_error (self, conn, frame.error, frame.message, frame.request_id, strlen (frame.request_id));
            break;
        case CHAT_FRAME_MESSAGE_FAILED:
            s_send_message_failed (self, conn, frame.client_id, frame.client_id_len, frame.to_user_id,
                                   frame.error, frame.message, 0);
            break;
        case CHAT_FRAME_IGNORE:
            break;
    }
    chat_frame_release (&frame);
}

//  LWS_CALLBACK_RECEIVE: reassemble fragments, enforce the frame limits
static int
s_ws_receive (self_t *self, struct lws *wsi, ws_conn_t *conn, const void *in, size_t len)
{
    if (!conn)
        return -1;
    s_conn_heard (self, conn);
    if (lws_frame_is_binary (wsi)) {
        static const char reason [] = "binary frames are not accepted";
        lws_close_reason (wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE, (unsigned char *) reason, strlen (reason));
        return -1;
    }
    size_t remaining = lws_remaining_packet_payload (wsi);
    if (conn->rx_len + len + remaining > (size_t) self->cfg.limits_max_frame_bytes) {
        static const char reason [] = "frame too large";
        lws_close_reason (wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *) reason, strlen (reason));
        return -1;
    }
    bool complete = lws_is_final_fragment (wsi) && remaining == 0;
    if (complete && conn->rx_len == 0) {
        s_ws_message (self, conn, (const unsigned char *) in, len);
        return 0;
    }
    if (conn->rx_len + len > conn->rx_cap) {
        size_t cap = conn->rx_len + len + remaining;
        conn->rx = (unsigned char *) realloc (conn->rx, cap);
        assert (conn->rx);
        conn->rx_cap = cap;
    }
    memcpy (conn->rx + conn->rx_len, in, len);
    conn->rx_len += len;
    if (complete) {
        s_ws_message (self, conn, conn->rx, conn->rx_len);
        //  Given back at once: an idle connection holds no such buffer
        free (conn->rx);
        conn->rx = NULL;
        conn->rx_len = 0;
        conn->rx_cap = 0;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Messages from the other actors, one handler per command

static ws_conn_t *
s_conn (self_t *self, uint64_t conn_id)
{
    return conn_id ? (ws_conn_t *) chat_idmap_get (&self->conns, conn_id) : NULL;
}

static http_req_t *
s_req (self_t *self, uint64_t req_id)
{
    return req_id ? (http_req_t *) chat_idmap_get (&self->reqs, req_id) : NULL;
}

static void
s_handle_http_response (self_t *self, chat_msg_t *m)
{
    http_req_t *req = s_req (self, m->u [0]);
    if (req)
        s_req_answer_raw (req, (int) m->u [1], "application/json", m->s [2], m->len [2], m->s [3]);
}

static void
s_handle_session_created (self_t *self, chat_msg_t *m)
{
    if (m->len [0] != SESSION_HASH_SIZE - 1)
        return;
    session_t *session = (session_t *) zmalloc (sizeof (session_t));
    assert (session);
    session->user_id = m->u [1];
    snprintf (session->nickname, sizeof session->nickname, "%s", m->s [2]);
    session->expires_ms = (int64_t) m->u [3];
    zhashx_update (self->sessions, m->s [0], session);
}

static void
s_handle_session_revoked (self_t *self, chat_msg_t *m)
{
    zhashx_delete (self->sessions, m->s [0]);
    for (ws_conn_t *conn = self->ws_list; conn; conn = conn->next)
        if (streq (conn->session, m->s [0]))
            s_conn_close (conn, 4001, "session ended", false);
}

static void
s_handle_online_users (self_t *self, chat_msg_t *m)
{
    ws_conn_t *conn = s_conn (self, m->u [0]);
    if (!conn)
        return;
    s_json_begin (self, "online_users");
    s_json_key_raw (self, "users", m->s [1], m->len [1]);
    frame_t *frame = s_json_frame (self);
    frame->refs++;
    s_conn_push (self, conn, frame, true, false);   //  Always the first frame
    s_frame_unref (frame);
    conn->ready = true;
    s_conn_want_write (conn);
}

//  user_online / user_offline: every connection but the user's own, once
//  it has its online_users. Presence sends both down one pipe, in the order
//  it saw the changes, so a connection still waiting for its online_users
//  gets a list that already holds this change: sending it as well would
//  announce, say, a user the list already names.
static void
s_handle_user_presence (self_t *self, chat_msg_t *m, const char *type)
{
    s_json_begin (self, type);
    s_json_key_u64 (self, "user_id", m->u [0]);
    s_json_key_string (self, "nickname", m->s [1], m->len [1]);
    frame_t *frame = s_json_frame (self);
    frame->refs++;
    for (ws_conn_t *conn = self->ws_list; conn; conn = conn->next)
        if (conn->ready && conn->user_id != m->u [0])
            s_conn_push (self, conn, frame, false, true);
    s_frame_unref (frame);
}

//  A stored message: ack to the origin connection, the message to the others
static void
s_handle_deliver_message (self_t *self, chat_msg_t *m)
{
    //  conn_id conn_ids message_id from_user_id nickname to_user_id client_id content timestamp online duplicate
    if (m->len [1]) {
        s_json_begin (self, "private_message");
        s_json_key_u64 (self, "message_id", m->u [2]);
        s_json_key_u64 (self, "from_user_id", m->u [3]);
        s_json_key_u64 (self, "to_user_id", m->u [5]);
        s_json_key_string (self, "nickname", m->s [4], m->len [4]);
        s_json_key_string (self, "content", m->s [7], m->len [7]);
        s_json_key_string (self, "timestamp", m->s [8], m->len [8]);
        s_json_key_bool (self, "is_read", false);
        s_send_frame_to_ids (self, m->s [1], s_json_frame (self));
    }
    ws_conn_t *origin = s_conn (self, m->u [0]);
    if (origin) {
        s_json_begin (self, "message_delivered");
        s_json_key_u64 (self, "message_id", m->u [2]);
        chat_json_key (&self->json, "client_id");
        if (m->len [6])
            chat_json_string (&self->json, m->s [6], m->len [6]);
        else
            chat_json_lit (&self->json, "null");
        s_json_key_u64 (self, "to_user_id", m->u [5]);
        s_json_key_string (self, "timestamp", m->s [8], m->len [8]);
        s_json_key_bool (self, "online", m->u [9] != 0);
        s_send_frame (self, origin, s_json_frame (self));
        s_inflight_add (self, origin, -1);
    }
    self->messages_acknowledged++;
}

static void
s_handle_message_failed (self_t *self, chat_msg_t *m)
{
    ws_conn_t *conn = s_conn (self, m->u [0]);
    if (conn) {
        s_send_message_failed (self, conn, m->s [1], m->len [1], m->u [2], m->s [3], m->s [4], m->u [5]);
        s_inflight_add (self, conn, -1);
    }
}

static void
s_deferred_close (lws_sorted_usec_list_t *sul)
{
    ws_conn_t *conn = lws_container_of (sul, ws_conn_t, sul_close);
    s_conn_close (conn, conn->deferred_code, conn->deferred_reason, true);
}

//  The client kept sending past rate_limited answers. Acknowledgements of
//  its messages admitted just before may still be on their way through hub
//  and persistence: close after a short grace, flushing what is queued
static void
s_handle_close_connection (self_t *self, chat_msg_t *m)
{
    ws_conn_t *conn = s_conn (self, m->u [0]);
    if (conn && !conn->close_code && !conn->deferred_code) {
        conn->deferred_code = (uint16_t) m->u [1];
        snprintf (conn->deferred_reason, sizeof conn->deferred_reason, "%s", m->s [2]);
        lws_sul_schedule (self->context, 0, &conn->sul_close, s_deferred_close, 250 * LWS_US_PER_MS);
    }
}

static void
s_handle_deliver_typing (self_t *self, chat_msg_t *m)
{
    s_json_begin (self, "typing");
    s_json_key_u64 (self, "from_user_id", m->u [1]);
    s_json_key_string (self, "nickname", m->s [2], m->len [2]);
    s_json_key_bool (self, "is_typing", m->u [3] != 0);
    s_send_frame_to_ids (self, m->s [0], s_json_frame (self));
}

static void
s_handle_deliver_read (self_t *self, chat_msg_t *m)
{
    s_json_begin (self, "messages_read");
    s_json_key_u64 (self, "by_user_id", m->u [1]);
    s_json_key_u64 (self, "up_to_id", m->u [2]);
    s_send_frame_to_ids (self, m->s [0], s_json_frame (self));
}

static void
s_handle_history_loaded (self_t *self, chat_msg_t *m)
{
    ws_conn_t *conn = s_conn (self, m->u [0]);
    if (!conn)
        return;
    s_json_begin (self, "history_loaded");
    s_json_key_u64 (self, "with_user_id", m->u [1]);
    s_json_key_raw (self, "request_id", m->s [2], m->len [2]);
    s_json_key_raw (self, "messages", m->s [3], m->len [3]);
    s_json_key_bool (self, "has_more", m->u [4] != 0);
    s_send_frame (self, conn, s_json_frame (self));
}

static void
s_handle_synced (self_t *self, chat_msg_t *m)
{
    ws_conn_t *conn = s_conn (self, m->u [0]);
    if (!conn)
        return;
    s_json_begin (self, "synced");
    s_json_key_raw (self, "request_id", m->s [1], m->len [1]);
    s_json_key_raw (self, "messages", m->s [2], m->len [2]);
    s_json_key_bool (self, "has_more", m->u [3] != 0);
    s_send_frame (self, conn, s_json_frame (self));
}

static void
s_handle_request_failed (self_t *self, chat_msg_t *m)
{
    ws_conn_t *conn = s_conn (self, m->u [0]);
    if (conn)
        s_send_error (self, conn, m->s [3], "the request could not be served; retry later",
                      m->s [2], m->len [2]);
}

static void
s_handle_storage_status (self_t *self, chat_msg_t *m)
{
    self->storage_up = m->u [0] != 0;
    self->storage_stored = m->u [1];
    self->storage_batches = m->u [2];
}

static void
s_dispatch (self_t *self, chat_msg_t *m)
{
    switch (m->cmd) {
        case CHAT_CMD_HTTP_RESPONSE:    s_handle_http_response (self, m); break;
        case CHAT_CMD_SESSION_CREATED:  s_handle_session_created (self, m); break;
        case CHAT_CMD_SESSION_REVOKED:  s_handle_session_revoked (self, m); break;
        case CHAT_CMD_ONLINE_USERS:     s_handle_online_users (self, m); break;
        case CHAT_CMD_USER_ONLINE:      s_handle_user_presence (self, m, "user_online"); break;
        case CHAT_CMD_USER_OFFLINE:     s_handle_user_presence (self, m, "user_offline"); break;
        case CHAT_CMD_DELIVER_MESSAGE:  s_handle_deliver_message (self, m); break;
        case CHAT_CMD_MESSAGE_FAILED:   s_handle_message_failed (self, m); break;
        case CHAT_CMD_CLOSE_CONNECTION: s_handle_close_connection (self, m); break;
        case CHAT_CMD_DELIVER_TYPING:   s_handle_deliver_typing (self, m); break;
        case CHAT_CMD_DELIVER_READ:     s_handle_deliver_read (self, m); break;
        case CHAT_CMD_HISTORY_LOADED:   s_handle_history_loaded (self, m); break;
        case CHAT_CMD_SYNCED:           s_handle_synced (self, m); break;
        case CHAT_CMD_REQUEST_FAILED:   s_handle_request_failed (self, m); break;
        case CHAT_CMD_STORAGE_STATUS:   s_handle_storage_status (self, m); break;
        default:
            zsys_warning ("ws-front: unexpected %s", chat_cmd_name (m->cmd));
    }
}


//  --------------------------------------------------------------------------
//  The ZeroMQ side of the loop

//  Drain the inbox; ZMQ_FD is edge-triggered, so read until it is empty, or
//  stop after a batch and come back at once through a zero-delay timer.
static void s_drain_again (lws_sorted_usec_list_t *sul);

static void
s_drain_inbox (self_t *self)
{
    for (int count = 0; count < DRAIN_BATCH; count++) {
        int rc = chat_msg_recv (self->inbox, &self->msg, true);
        if (rc == 1)
            return;                     //  Empty: the next message raises an edge
        if (rc == 0)
            s_dispatch (self, &self->msg);
    }
    lws_sul_schedule (self->context, 0, &self->sul_drain, s_drain_again, 1);
}

static void
s_drain_again (lws_sorted_usec_list_t *sul)
{
    self_t *self = lws_container_of (sul, self_t, sul_drain);
    s_drain_inbox (self);
}

static void
s_drain_pipe (self_t *self)
{
    while (zsock_events (self->pipe) & ZMQ_POLLIN) {
        char *command = zstr_recv_nowait (self->pipe);
        if (command && streq (command, "$TERM"))
            self->terminated = true;
        zstr_free (&command);
        if (self->terminated)
            break;
    }
    if (self->terminated)
        uv_stop (&self->loop);
}

//  Just before the loop sleeps: send the burst this wake-up produced
static void
s_before_sleep (uv_prepare_t *handle)
{
    self_t *self = (self_t *) handle->data;
    chat_outbox_flush (self->outbox);
    chat_outbox_hold (self->outbox);
}

//  Whether bind:port can be listened on, tried before lws is started: a
//  context whose listen failed cannot be torn down cleanly on a foreign loop
static int
s_can_listen (const char *bind_address, int port, char *error, size_t size)
{
    struct sockaddr_storage address;
    memset (&address, 0, sizeof address);
    socklen_t length;
    struct sockaddr_in *v4 = (struct sockaddr_in *) &address;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *) &address;
    if (inet_pton (AF_INET, bind_address, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons ((uint16_t) port);
        length = sizeof *v4;
    }
    else
    if (inet_pton (AF_INET6, bind_address, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons ((uint16_t) port);
        length = sizeof *v6;
    }
    else {
        snprintf (error, size, "[server] bind: \"%s\" is not an IPv4 or IPv6 address", bind_address);
        return -1;
    }
    int fd = socket (address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    int rc = fd < 0 ? -1 : 0;
    if (rc == 0)
        setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (rc == 0 && bind (fd, (struct sockaddr *) &address, length) != 0)
        rc = -1;
    if (rc != 0)
        snprintf (error, size, "[server] port: cannot listen on %s port %d: %s",
                  bind_address, port, strerror (errno));
    if (fd >= 0)
        close (fd);
    return rc;
}

//  Adopt a dup of a ZeroMQ socket's fd into the lws loop (see shared notes)
static struct lws *
s_adopt_zsock (self_t *self, zsock_t *sock)
{
    lws_sock_file_fd_type fd;
    fd.filefd = dup (zsock_fd (sock));
    if (fd.filefd < 0)
        return NULL;
    struct lws *wsi = lws_adopt_descriptor_vhost (self->vhost, LWS_ADOPT_RAW_FILE_DESC, fd, "chatd", NULL);
    return wsi;
}


//  --------------------------------------------------------------------------
//  The one lws callback: dispatch on the reason

static int
s_callback (struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct lws_context *context = lws_get_context (wsi);
    self_t *self = context ? (self_t *) lws_context_user (context) : NULL;
    pss_t *pss = (pss_t *) user;
    if (!self)
        return lws_callback_http_dummy (wsi, reason, user, in, len);

    switch (reason) {
        case LWS_CALLBACK_RAW_RX_FILE:
            //  The pipe or the inbox: drain the one whose fd is readable.
            //  Asking an idle socket is not free: libzmq then looks at its
            //  command mailbox with getpid and poll, two system calls.
            if (wsi == self->pipe_wsi)
                s_drain_pipe (self);
            else
            if (wsi == self->inbox_wsi && !self->terminated)
                s_drain_inbox (self);
            return 0;
        case LWS_CALLBACK_RAW_CLOSE_FILE:
            return 0;
        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
            return s_confirm_upgrade (self, wsi, (const char *) in);
        case LWS_CALLBACK_ESTABLISHED:
            return s_ws_established (self, wsi, pss);
        case LWS_CALLBACK_RECEIVE:
            return s_ws_receive (self, wsi, pss->conn, in, len);
        case LWS_CALLBACK_RECEIVE_PONG:
            if (pss->conn)
                s_conn_heard (self, pss->conn);
            return 0;
        case LWS_CALLBACK_SERVER_WRITEABLE:
            return pss->conn ? s_ws_writeable (self, pss->conn) : 0;
        case LWS_CALLBACK_CLOSED:
            s_ws_closed (self, pss);
            return 0;
        case LWS_CALLBACK_HTTP:
            return s_http_request (self, wsi, pss);
        case LWS_CALLBACK_HTTP_BODY:
            return s_http_body (self, pss, in, len);
        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            s_http_body_complete (self, pss);
            return 0;
        case LWS_CALLBACK_HTTP_WRITEABLE:
            return s_http_writeable (self, wsi, pss);
        case LWS_CALLBACK_CLOSED_HTTP:
            if (pss)
                s_req_destroy (self, &pss->req);
            return 0;
        default:
            return lws_callback_http_dummy (wsi, reason, user, in, len);
    }
}


//  --------------------------------------------------------------------------
//  Actor

static void
s_session_destroy (void **item)
{
    free (*item);
    *item = NULL;
}

static void
s_self_destroy (self_t **self_p)
{
    assert (self_p);
    self_t *self = *self_p;
    if (self) {
        if (self->before_sleep_ready)
            uv_close ((uv_handle_t *) &self->before_sleep, NULL);
        if (self->context)
            lws_context_destroy (self->context);    //  Closes every wsi (callbacks run)
        //  (when lws could not listen, the loop is left as it is: its close
        //  callbacks point into lws's event-lib plugin, unloaded by now, and
        //  the process is about to exit with the error)
        if (self->loop_ready && !self->context)
            uv_loop_close (&self->loop);        //  Nothing of lws's on it
        else
        if (self->loop_ready && self->vhost) {
            //  Let lws finish closing its libuv handles; on a foreign loop
            //  lws then needs a second destroy to free the context itself
            uv_run (&self->loop, UV_RUN_DEFAULT);
            lws_context_destroy (self->context);
            uv_run (&self->loop, UV_RUN_DEFAULT);
            if (uv_loop_close (&self->loop) != 0)
                zsys_warning ("ws-front: event loop closed with handles open");
        }
        size_t cursor = 0;
        uint64_t id;
        void *value;
        while (chat_idmap_next (&self->reqs, &cursor, &id, &value)) {
            http_req_t *req = (http_req_t *) value;
            free (req->body);
            free (req->response);
            free (req);
        }
        chat_idmap_release (&self->reqs);
        chat_idmap_release (&self->conns);
        chat_idmap_release (&self->user_conns);
        zhashx_destroy (&self->address_conns);
        zhashx_destroy (&self->sessions);
        chat_outbox_destroy (&self->outbox);
        zsock_destroy (&self->inbox);
        chat_msg_release (&self->msg);
        chat_json_release (&self->json);
        free (self->wbuf);
        free (self->deferred);
        free (self);
        *self_p = NULL;
    }
}

static self_t *
s_self_new (zsock_t *pipe, const chat_config_t *cfg, char *error, size_t size)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    assert (self);
    self->cfg = *cfg;
    self->pipe = pipe;
    chat_msg_init (&self->msg);
    chat_idmap_init (&self->conns);
    chat_idmap_init (&self->reqs);
    chat_idmap_init (&self->user_conns);
    self->address_conns = zhashx_new ();     //  Values are counts, not owned
    self->sessions = zhashx_new ();
    zhashx_set_destructor (self->sessions, s_session_destroy);
    self->storage_up = true;
    self->wbuf = (unsigned char *) malloc (LWS_PRE + WRITE_BATCH);
    assert (self->wbuf);
    self->inbox = chat_inbox_new (CHAT_ACTOR_WS_FRONT);
    self->outbox = chat_outbox_new (CHAT_ACTOR_WS_FRONT, cfg->server_tap);
    if (!self->inbox) {
        snprintf (error, size, "ws-front: cannot bind its inbox");
        s_self_destroy (&self);
        return NULL;
    }

    //  [server] log_level sets how much libwebsockets says
    const char *level = cfg->server_log_level;
    int verbosity = streq (level, "debug") ? LLL_ERR | LLL_WARN | LLL_NOTICE | LLL_INFO
                  : streq (level, "info") || streq (level, "warning") ? LLL_ERR | LLL_WARN
                  : LLL_ERR;
    //  lws runs on our own libuv loop: epoll, so a wakeup costs the same
    //  with 100 connections as with 19,500 (the default loop polls them all)
    if (uv_loop_init (&self->loop) != 0) {
        snprintf (error, size, "ws-front: cannot create its event loop");
        s_self_destroy (&self);
        return NULL;
    }
    self->loop_ready = true;
    void *foreign_loops [1] = { &self->loop };
    struct lws_context_creation_info info;
    memset (&info, 0, sizeof info);
    info.foreign_loops = foreign_loops;
    info.port = cfg->server_port;
    info.iface = cfg->server_bind;
    info.protocols = s_protocols;
    info.user = self;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_LIBUV
                 | LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    //  [server] bind is an address: IPv4 listens on IPv4 only
    unsigned char address [sizeof (struct in6_addr)];
    if (inet_pton (AF_INET, cfg->server_bind, address) == 1)
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    if (s_can_listen (cfg->server_bind, cfg->server_port, error, size) != 0) {
        s_self_destroy (&self);
        return NULL;
    }
    info.retry_and_idle_policy = &s_no_lws_keepalive;
    info.timeout_secs = (unsigned) cfg->http_handshake_timeout_s;   //  Slow headers, bodies, handshakes
    info.timeout_secs_ah_idle = (unsigned) cfg->http_handshake_timeout_s;
    info.keepalive_timeout = cfg->http_idle_timeout_s;              //  Idle keep-alive connections
    info.pt_serv_buf_size = 64 * 1024;
    info.vhost_name = "chatd";
    //  lws reports a failed bind in several lines of its own; chatd prints one
    lws_set_log_level (0, NULL);
    self->context = lws_create_context (&info);
    lws_set_log_level (verbosity, NULL);
    self->vhost = self->context ? lws_get_vhost_by_name (self->context, "chatd") : NULL;
    if (self->vhost && lws_get_vhost_listen_port (self->vhost) != cfg->server_port)
        self->vhost = NULL;
    if (!self->vhost) {
        snprintf (error, size, "[server] port: cannot listen on %s port %d (in use, or not an address of this machine?)",
                  cfg->server_bind, cfg->server_port);
        s_self_destroy (&self);
        return NULL;
    }
    self->inbox_wsi = s_adopt_zsock (self, self->inbox);
    self->pipe_wsi = s_adopt_zsock (self, pipe);
    if (!self->inbox_wsi || !self->pipe_wsi) {
        snprintf (error, size, "ws-front: cannot watch its ZeroMQ sockets");
        s_self_destroy (&self);
        return NULL;
    }
    lws_sul_schedule (self->context, 0, &self->sul_tick, s_tick, LWS_US_PER_SEC);
    //  What the loop sends while it handles a wake-up is held, and goes to
    //  the other actors in one burst before it sleeps (chat_outbox_hold)
    chat_outbox_hold (self->outbox);
    uv_prepare_init (&self->loop, &self->before_sleep);
    self->before_sleep.data = self;
    uv_prepare_start (&self->before_sleep, s_before_sleep);
    self->before_sleep_ready = true;
    return self;
}

void
chat_ws_front_actor (zsock_t *pipe, void *args)
{
    char error [256] = "";
    chat_actor_thread_name (CHAT_ACTOR_WS_FRONT);
    self_t *self = s_self_new (pipe, (const chat_config_t *) args, error, sizeof error);
    zsock_signal (pipe, 0);
    if (!self) {
        chat_actor_report (pipe, error);
        return;
    }
    chat_actor_report (pipe, NULL);
    //  Libzmq raises the fd's edge only once a reader found the pipe empty:
    //  drain both sockets once before sleeping (sessions from auth are there)
    s_drain_pipe (self);
    s_drain_inbox (self);
    while (!self->terminated)
        uv_run (&self->loop, UV_RUN_DEFAULT);
    s_self_destroy (&self);
}
