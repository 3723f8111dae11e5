/*  =========================================================================
    chat_msg.c - encode and decode the internal protocol (include/chat_msg.h)

    Used by every actor, by the tests that play an actor's neighbours, and by
    chat-tap. Owns no state beyond the objects it hands out.
    =========================================================================
*/

#include "chat_msg.h"
#include "chat_wire.h"
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <pthread.h>

typedef struct {
    const char *name;
    const char *picture;
    const char *fields;
    const char *path;
} s_command_t;

static const s_command_t s_commands [CHAT_CMD_COUNT] = {
#define X(id, name, picture, fields, path) { name, picture, fields, path },
    CHAT_COMMANDS (X)
#undef X
};

static const char *s_actor_names [CHAT_ACTOR_COUNT] = {
#define X(id, name) name,
    CHAT_ACTORS (X)
#undef X
};

//  One message waiting in a held outbox
typedef struct {
    void *handle;                                   //  The peer's PUSH socket
    chat_cmd_t cmd;                                 //  Its command
    zmq_msg_t body;                                 //  Its body, built
} s_held_t;

struct chat_outbox_t {
    chat_actor_t self_actor;                        //  Who sends
    zsock_t *peers [CHAT_ACTOR_COUNT];              //  PUSH per peer, on demand
    zsock_t *tap;                                   //  PUB to the tap proxy, or NULL
    bool held;                                      //  Queue sends until chat_outbox_flush
    s_held_t held_msgs [CHAT_OUTBOX_HOLD_MAX];      //  Queued while held, in order
    size_t nheld;                                   //  Number of them
};


const char *
chat_actor_name (chat_actor_t actor)
{
    assert (actor < CHAT_ACTOR_COUNT);
    return s_actor_names [actor];
}

const char *
chat_cmd_name (chat_cmd_t cmd)
{
    assert (cmd < CHAT_CMD_COUNT);
    return s_commands [cmd].name;
}

const char *
chat_cmd_picture (chat_cmd_t cmd)
{
    assert (cmd < CHAT_CMD_COUNT);
    return s_commands [cmd].picture;
}

const char *
chat_cmd_fields (chat_cmd_t cmd)
{
    assert (cmd < CHAT_CMD_COUNT);
    return s_commands [cmd].fields;
}

const char *
chat_cmd_path (chat_cmd_t cmd)
{
    assert (cmd < CHAT_CMD_COUNT);
    return s_commands [cmd].path;
}

chat_cmd_t
chat_cmd_lookup (const char *name, size_t len)
{
    for (int i = 0; i < CHAT_CMD_COUNT; i++)
        if (strlen (s_commands [i].name) == len && memcmp (s_commands [i].name, name, len) == 0)
            return (chat_cmd_t) i;
    return CHAT_CMD_COUNT;
}

chat_actor_t
chat_actor_lookup (const char *name)
{
    for (int i = 0; i < CHAT_ACTOR_COUNT; i++)
        if (streq (s_actor_names [i], name))
            return (chat_actor_t) i;
    return CHAT_ACTOR_COUNT;
}

void
chat_actor_endpoint (chat_actor_t actor, char *buf, size_t size)
{
    snprintf (buf, size, "inproc://chatd-%s", chat_actor_name (actor));
}


//  --------------------------------------------------------------------------
//  Receiving

static void
s_unlimited (zsock_t *sock)
{
    zsock_set_sndhwm (sock, 0);
    zsock_set_rcvhwm (sock, 0);
    zsock_set_linger (sock, 0);
}

zsock_t *
chat_inbox_new (chat_actor_t actor)
{
    char endpoint [64];
    chat_actor_endpoint (actor, endpoint, sizeof endpoint);
    zsock_t *inbox = zsock_new (ZMQ_PULL);
    assert (inbox);
    s_unlimited (inbox);
    //  libzmq releases an inproc address asynchronously: an actor started
    //  again right after it stopped may find it taken for a moment
    int rc = zsock_bind (inbox, "%s", endpoint);
    for (int attempt = 0; rc != 0 && zmq_errno () == EADDRINUSE && attempt < 100; attempt++) {
        zclock_sleep (10);
        rc = zsock_bind (inbox, "%s", endpoint);
    }
    if (rc != 0) {
        zsys_error ("%s: cannot bind %s: %s", chat_actor_name (actor), endpoint, zmq_strerror (zmq_errno ()));
        zsock_destroy (&inbox);
    }
    return inbox;
}

void
chat_msg_init (chat_msg_t *m)
{
    memset (m, 0, sizeof *m);
    m->cmd = CHAT_CMD_COUNT;
}

void
chat_msg_release (chat_msg_t *m)
{
    free (m->buf);
    if (m->has_body)
        zmq_msg_close (&m->body);
    chat_msg_init (m);
}

//  Forget the previous message: its body frame, which its fields pointed
//  into, and its command
static void
s_msg_reset (chat_msg_t *m)
{
    if (m->has_body) {
        zmq_msg_close (&m->body);
        m->has_body = false;
    }
    m->cmd = CHAT_CMD_COUNT;
    m->nfields = 0;
}

//  Parse a decimal uint64; the whole text must be digits
static int
s_parse_u64 (const char *text, size_t len, uint64_t *value)
{
    if (len == 0 || len > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text [i] < '0' || text [i] > '9')
            return -1;
        uint64_t digit = (uint64_t) (text [i] - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return -1;
        v = v * 10 + digit;
    }
    *value = v;
    return 0;
}

//  Look the command frame up; logs an unknown one
static chat_cmd_t
s_decode_command (const void *data, size_t size)
{
    chat_cmd_t cmd = chat_cmd_lookup ((const char *) data, size);
    if (cmd == CHAT_CMD_COUNT)
        zsys_warning ("chat_msg: unknown command '%.*s'", (int) size, (const char *) data);
    return cmd;
}

//  Take the field at *offset of a body: a 4-byte little-endian length, the
//  bytes, a NUL. Returns 0 and moves *offset past it, or -1 if the body
//  ends inside it.
static int
s_field_next (const char *body, size_t size, size_t *offset, const char **data, size_t *len)
{
    if (size - *offset < 5)
        return -1;
    const unsigned char *prefix = (const unsigned char *) body + *offset;
    size_t length = (size_t) prefix [0] | (size_t) prefix [1] << 8
                  | (size_t) prefix [2] << 16 | (size_t) prefix [3] << 24;
    size_t start = *offset + 4;
    if (length > size - start - 1 || body [start + length] != 0)
        return -1;
    *data = body + start;
    *len = length;
    *offset = start + length + 1;
    return 0;
}

//  Decode a body in place: the fields point into it, so it must outlive
//  them
static int
s_decode_body (chat_cmd_t cmd, const char *body, size_t size, chat_msg_t *m)
{
    const char *picture = s_commands [cmd].picture;
    int nfields = (int) strlen (picture);
    size_t offset = 0;
    for (int index = 0; index < nfields; index++) {
        if (s_field_next (body, size, &offset, &m->s [index], &m->len [index]) != 0) {
            zsys_warning ("chat_msg: %s has %d whole fields, expected %d",
                          s_commands [cmd].name, index, nfields);
            return -1;
        }
        m->u [index] = 0;
        if (picture [index] == 'u' && s_parse_u64 (m->s [index], m->len [index], &m->u [index]) != 0) {
            zsys_warning ("chat_msg: %s field %d is not a number", s_commands [cmd].name, index + 1);
            return -1;
        }
    }
    if (offset != size) {
        zsys_warning ("chat_msg: %s has bytes after its %d fields", s_commands [cmd].name, nfields);
        return -1;
    }
    m->cmd = cmd;
    m->nfields = nfields;
    return 0;
}

int
chat_msg_body_count (const void *body, size_t size)
{
    size_t offset = 0;
    int count = 0;
    const char *data;
    size_t len;
    for (; offset < size; count++)
        if (s_field_next ((const char *) body, size, &offset, &data, &len) != 0)
            return -1;
    return count;
}

int
chat_msg_decode_parts (const void *command, size_t command_size,
                       const void *body, size_t body_size, chat_msg_t *m)
{
    assert (m);
    s_msg_reset (m);
    chat_cmd_t cmd = s_decode_command (command, command_size);
    if (cmd == CHAT_CMD_COUNT)
        return -1;
    if (body_size > m->cap) {
        char *buf = (char *) realloc (m->buf, body_size);
        if (!buf)
            return -1;
        m->buf = buf;
        m->cap = body_size;
    }
    if (body_size)
        memcpy (m->buf, body, body_size);
    return s_decode_body (cmd, m->buf, body_size, m);
}

int
chat_msg_decode (zmsg_t *msg, chat_msg_t *m)
{
    assert (msg);
    assert (m);
    if (zmsg_size (msg) != 2) {
        s_msg_reset (m);
        zsys_warning ("chat_msg: message of %zu frames, expected 2", zmsg_size (msg));
        return -1;
    }
    zframe_t *command = zmsg_first (msg);
    zframe_t *body = zmsg_next (msg);
    return chat_msg_decode_parts (zframe_data (command), zframe_size (command),
                                  zframe_data (body), zframe_size (body), m);
}

int
chat_msg_recv (zsock_t *sock, chat_msg_t *m, bool nowait)
{
    assert (sock);
    assert (m);
    s_msg_reset (m);
    //  The command is received into command, the body into m->body, where
    //  the fields are decoded in place; any further frame is read and dropped
    void *handle = zsock_resolve (sock);
    zmq_msg_t command;
    zmq_msg_init (&command);
    int received = 0, rc = 0;
    while (true) {
        zmq_msg_t scratch;
        zmq_msg_t *part = received == 0 ? &command
                        : received == 1 ? &m->body : &scratch;
        if (part != &command)
            zmq_msg_init (part);
        if (zmq_msg_recv (part, handle, nowait && received == 0 ? ZMQ_DONTWAIT : 0) == -1) {
            rc = (zmq_errno () == EAGAIN && received == 0) ? 1 : -1;
            if (part != &command)
                zmq_msg_close (part);
            break;
        }
        if (part == &m->body)
            m->has_body = true;
        received++;
        bool more = zmq_msg_more (part);
        if (part == &scratch)
            zmq_msg_close (part);
        if (!more)
            break;
    }
    if (rc == 0 && received != 2) {
        zsys_warning ("chat_msg: message of %d frames, expected 2", received);
        rc = -1;
    }
    if (rc == 0) {
        chat_cmd_t cmd = s_decode_command (zmq_msg_data (&command), zmq_msg_size (&command));
        rc = cmd == CHAT_CMD_COUNT ? -1
           : s_decode_body (cmd, (const char *) zmq_msg_data (&m->body), zmq_msg_size (&m->body), m);
    }
    zmq_msg_close (&command);
    return rc;
}


//  --------------------------------------------------------------------------
//  Sending

chat_outbox_t *
chat_outbox_new (chat_actor_t self_actor, const char *tap_endpoint)
{
    chat_outbox_t *self = (chat_outbox_t *) zmalloc (sizeof (chat_outbox_t));
    assert (self);
    self->self_actor = self_actor;
    if (tap_endpoint && *tap_endpoint) {
        self->tap = zsock_new (ZMQ_PUB);
        assert (self->tap);
        s_unlimited (self->tap);
        if (zsock_connect (self->tap, "%s", CHAT_TAP_INPROC) != 0)
            zsock_destroy (&self->tap);
    }
    return self;
}

void
chat_outbox_destroy (chat_outbox_t **self_p)
{
    assert (self_p);
    chat_outbox_t *self = *self_p;
    if (self) {
        chat_outbox_flush (self);
        for (int i = 0; i < CHAT_ACTOR_COUNT; i++)
            zsock_destroy (&self->peers [i]);
        zsock_destroy (&self->tap);
        free (self);
        *self_p = NULL;
    }
}

zsock_t *
chat_outbox_socket (chat_outbox_t *self, chat_actor_t to)
{
    assert (self);
    assert (to < CHAT_ACTOR_COUNT);
    if (!self->peers [to]) {
        char endpoint [64];
        chat_actor_endpoint (to, endpoint, sizeof endpoint);
        zsock_t *sock = zsock_new (ZMQ_PUSH);
        assert (sock);
        s_unlimited (sock);
        if (zsock_connect (sock, "%s", endpoint) != 0) {
            zsys_error ("%s: cannot connect %s", chat_actor_name (self->self_actor), endpoint);
            zsock_destroy (&sock);
            return NULL;
        }
        self->peers [to] = sock;
    }
    return self->peers [to];
}

//  Send one part; more says whether more parts follow
static int
s_send_part (void *handle, const void *data, size_t size, bool more)
{
    return zmq_send (handle, data, size, (more ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) == -1 ? -1 : 0;
}

//  The fields of a message to encode, as (data, size) pairs; numbers are
//  rendered into numbuf
typedef struct {
    const void *data [CHAT_MAX_FIELDS];
    size_t size [CHAT_MAX_FIELDS];
    char numbuf [CHAT_MAX_FIELDS][24];
    int count;
} s_fields_t;

//  Collect the arguments of a command. with_lengths: string args carry a
//  size_t length.
static void
s_collect (s_fields_t *fields, chat_cmd_t cmd, bool with_lengths, va_list args)
{
    const char *picture = s_commands [cmd].picture;
    int index = 0;
    for (const char *p = picture; *p; p++, index++) {
        if (*p == 'u') {
            uint64_t value = va_arg (args, uint64_t);
            char *end = fields->numbuf [index] + sizeof fields->numbuf [0];
            char *first = chat_u64_digits (value, end);
            fields->data [index] = first;
            fields->size [index] = (size_t) (end - first);
        }
        else {
            const char *text = va_arg (args, const char *);
            size_t len = with_lengths ? va_arg (args, size_t) : (text ? strlen (text) : 0);
            fields->data [index] = text ? text : "";
            fields->size [index] = text ? len : 0;
        }
    }
    fields->count = index;
}

//  Build the body frame of the fields (see the header for its layout)
static int
s_encode_body (zmq_msg_t *body, const void *const *data, const size_t *size, int count)
{
    size_t total = 0;
    for (int i = 0; i < count; i++) {
        if (size [i] > UINT32_MAX)
            return -1;
        total += 4 + size [i] + 1;
    }
    if (zmq_msg_init_size (body, total) != 0)
        return -1;
    unsigned char *cursor = (unsigned char *) zmq_msg_data (body);
    for (int i = 0; i < count; i++) {
        uint32_t len = (uint32_t) size [i];
        cursor [0] = (unsigned char) len;
        cursor [1] = (unsigned char) (len >> 8);
        cursor [2] = (unsigned char) (len >> 16);
        cursor [3] = (unsigned char) (len >> 24);
        if (len)
            memcpy (cursor + 4, data [i], len);
        cursor [4 + len] = 0;
        cursor += 4 + len + 1;
    }
    return 0;
}

zframe_t *
chat_msg_body (const char *const *fields, int count)
{
    assert (count >= 0 && count <= CHAT_MAX_FIELDS + 1);
    const void *data [CHAT_MAX_FIELDS + 1];
    size_t size [CHAT_MAX_FIELDS + 1];
    for (int i = 0; i < count; i++) {
        data [i] = fields [i];
        size [i] = strlen (fields [i]);
    }
    zmq_msg_t body;
    if (s_encode_body (&body, data, size, count) != 0)
        return NULL;
    zframe_t *frame = zframe_new (zmq_msg_data (&body), zmq_msg_size (&body));
    zmq_msg_close (&body);
    return frame;
}

static int s_flush_held (chat_outbox_t *self);

//  Send a command and its body (which is consumed) to a peer's socket now
static int
s_send_now (void *handle, chat_cmd_t cmd, zmq_msg_t *body)
{
    const char *name = s_commands [cmd].name;
    int rc = s_send_part (handle, name, strlen (name), true) == 0
          && zmq_msg_send (body, handle, ZMQ_DONTWAIT) != -1 ? 0 : -1;
    zmq_msg_close (body);
    return rc;
}

//  Queue a message in a held outbox; the body is moved in. Flushes first
//  when the queue is full, so that a long burst still reaches the peer in
//  pieces.
static void
s_hold (chat_outbox_t *self, void *handle, chat_cmd_t cmd, zmq_msg_t *body)
{
    if (self->nheld == CHAT_OUTBOX_HOLD_MAX)
        s_flush_held (self);
    s_held_t *held = &self->held_msgs [self->nheld++];
    held->handle = handle;
    held->cmd = cmd;
    zmq_msg_init (&held->body);
    zmq_msg_move (&held->body, body);
}

//  Publish a copy of the message on the tap: sender, receiver, command, body
static void
s_tap (chat_outbox_t *self, chat_actor_t to, chat_cmd_t cmd, zmq_msg_t *body)
{
    const char *from = chat_actor_name (self->self_actor);
    const char *dest = chat_actor_name (to);
    const char *name = s_commands [cmd].name;
    void *tap = zsock_resolve (self->tap);
    zmq_msg_t copy;
    zmq_msg_init (&copy);
    zmq_msg_copy (&copy, body);
    if (s_send_part (tap, from, strlen (from), true) != 0
    ||  s_send_part (tap, dest, strlen (dest), true) != 0
    ||  s_send_part (tap, name, strlen (name), true) != 0
    ||  zmq_msg_send (&copy, tap, ZMQ_DONTWAIT) == -1)
        zmq_msg_close (&copy);
}

//  Send, or queue when held, a command with its body (which is consumed)
static int
s_send_body (chat_outbox_t *self, chat_actor_t to, chat_cmd_t cmd, zmq_msg_t *body)
{
    zsock_t *sock = chat_outbox_socket (self, to);
    int rc = 0;
    if (!sock) {
        zmq_msg_close (body);
        rc = -1;
    }
    else {
        if (self->tap)
            s_tap (self, to, cmd, body);
        if (self->held)
            s_hold (self, zsock_resolve (sock), cmd, body);
        else
            rc = s_send_now (zsock_resolve (sock), cmd, body);
    }
    if (rc != 0)
        zsys_error ("%s: cannot send %s to %s: %s", chat_actor_name (self->self_actor),
                    s_commands [cmd].name, chat_actor_name (to), zmq_strerror (zmq_errno ()));
    return rc;
}

static int
s_vsend (chat_outbox_t *self, chat_actor_t to, chat_cmd_t cmd, bool with_lengths, va_list args)
{
    assert (self);
    assert (cmd < CHAT_CMD_COUNT);
    s_fields_t fields;
    s_collect (&fields, cmd, with_lengths, args);
    zmq_msg_t body;
    if (s_encode_body (&body, fields.data, fields.size, fields.count) != 0) {
        zsys_error ("%s: cannot encode %s", chat_actor_name (self->self_actor), s_commands [cmd].name);
        return -1;
    }
    return s_send_body (self, to, cmd, &body);
}

int
chat_send (chat_outbox_t *self, chat_actor_t to, chat_cmd_t cmd, ...)
{
    va_list args;
    va_start (args, cmd);
    int rc = s_vsend (self, to, cmd, false, args);
    va_end (args);
    return rc;
}

int
chat_sendn (chat_outbox_t *self, chat_actor_t to, chat_cmd_t cmd, ...)
{
    va_list args;
    va_start (args, cmd);
    int rc = s_vsend (self, to, cmd, true, args);
    va_end (args);
    return rc;
}

int
chat_forward (chat_outbox_t *self, chat_actor_t to, chat_msg_t *m)
{
    assert (self);
    assert (m);
    assert (m->cmd < CHAT_CMD_COUNT);
    assert (m->has_body);
    zmq_msg_t body;
    zmq_msg_init (&body);
    if (zmq_msg_copy (&body, &m->body) != 0) {
        zmq_msg_close (&body);
        return -1;
    }
    return s_send_body (self, to, m->cmd, &body);
}


void
chat_outbox_hold (chat_outbox_t *self)
{
    assert (self);
    self->held = true;
}

//  Send every queued message, in order, and empty the queue
static int
s_flush_held (chat_outbox_t *self)
{
    int rc = 0;
    for (size_t i = 0; i < self->nheld; i++) {
        s_held_t *held = &self->held_msgs [i];
        if (s_send_now (held->handle, held->cmd, &held->body) != 0) {
            zsys_error ("%s: cannot send a held %s: %s", chat_actor_name (self->self_actor),
                        s_commands [held->cmd].name, zmq_strerror (zmq_errno ()));
            rc = -1;
        }
    }
    self->nheld = 0;
    return rc;
}

int
chat_outbox_flush (chat_outbox_t *self)
{
    assert (self);
    self->held = false;
    return s_flush_held (self);
}


//  --------------------------------------------------------------------------
//  Start-up handshake

int
chat_actor_report (zsock_t *pipe, const char *error)
{
    return zstr_sendf (pipe, "%s%s%s", error ? "FAILED" : "READY", error ? " " : "", error ? error : "");
}

void
chat_actor_thread_name (chat_actor_t actor)
{
    pthread_setname_np (pthread_self (), chat_actor_name (actor));
}

int
chat_actor_started (zactor_t *actor, char *error, size_t size)
{
    char *report = zstr_recv (actor);
    int rc = -1;
    if (report && streq (report, "READY"))
        rc = 0;
    else
    if (error && size)
        snprintf (error, size, "%s", report && strlen (report) > 7 ? report + 7 : "actor did not start");
    zstr_free (&report);
    return rc;
}


//  --------------------------------------------------------------------------
//  Serving

static int s_watch_again (zloop_t *loop, int timer_id, void *arg);

//  Drain a watched socket; when it stopped early, come back before sleeping
static int
s_watch_run (chat_watch_t *watch)
{
    int rc = watch->drain (watch->self);
    if (rc == 1 && watch->again == -1)
        watch->again = zloop_timer (watch->loop, 0, 1, s_watch_again, watch);
    return rc == -1 ? -1 : 0;
}

static int
s_watch_again (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    chat_watch_t *watch = (chat_watch_t *) arg;
    watch->again = -1;                  //  One-shot: zloop dropped it
    return s_watch_run (watch);
}

static int
s_watch_ready (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) loop;
    (void) item;
    return s_watch_run ((chat_watch_t *) arg);
}

int
chat_zloop_watch (zloop_t *loop, zsock_t *sock, chat_watch_t *watch,
                  chat_drain_fn *drain, void *self)
{
    assert (loop);
    assert (sock);
    assert (watch);
    assert (drain);
    watch->loop = loop;
    watch->drain = drain;
    watch->self = self;
    zmq_pollitem_t item = { NULL, zsock_fd (sock), ZMQ_POLLIN, 0 };
    if (zloop_poller (loop, &item, s_watch_ready, watch) != 0)
        return -1;
    //  What came before the loop started may have raised no edge
    watch->again = zloop_timer (loop, 0, 1, s_watch_again, watch);
    return watch->again == -1 ? -1 : 0;
}

int
chat_inbox_drain (zsock_t *inbox, chat_msg_t *msg, chat_outbox_t *outbox, int max,
                  chat_handler_fn *handler, void *self)
{
    assert (inbox);
    assert (msg);
    assert (handler);
    int rc = 1;
    if (outbox)
        chat_outbox_hold (outbox);
    for (int count = 0; count < max && rc == 1; count++) {
        int received = chat_msg_recv (inbox, msg, true);
        if (received == 0)
            handler (self, msg);
        else
        if (received == 1)
            rc = 0;                     //  Nothing more waiting
        else
        if (zmq_errno () == ETERM)
            rc = -1;                    //  Else malformed: logged, dropped
    }
    if (outbox)
        chat_outbox_flush (outbox);
    return rc;
}

//  What chat_actor_serve's loop holds
typedef struct {
    zsock_t *pipe;                      //  The actor's pipe
    zsock_t *inbox;                     //  Its inbox
    chat_msg_t *msg;                    //  Where messages are received
    chat_outbox_t *outbox;              //  Held while a batch is handled, or NULL
    chat_handler_fn *handler;           //  Called for each message
    void *self;                         //  handler's argument
} s_serve_t;

int
chat_pipe_drain (zsock_t *pipe, chat_command_fn *on_command, void *self)
{
    assert (pipe);
    while (zsock_events (pipe) & ZMQ_POLLIN) {
        char *command = zstr_recv (pipe);
        bool terminated = !command || streq (command, "$TERM");
        if (!terminated && on_command)
            on_command (self, command);
        else
        if (!terminated)
            zsys_warning ("chat_msg: unexpected pipe command '%s'", command);
        zstr_free (&command);
        if (terminated)
            return -1;
    }
    return 0;
}

//  chat_actor_serve's pipe: only $TERM is expected
static int
s_serve_pipe (void *arg)
{
    return chat_pipe_drain (((s_serve_t *) arg)->pipe, NULL, NULL);
}

#define CHAT_SERVE_BATCH 1000           //  Most messages handled per wake-up
static int
s_serve_inbox (void *arg)
{
    s_serve_t *serve = (s_serve_t *) arg;
    return chat_inbox_drain (serve->inbox, serve->msg, serve->outbox, CHAT_SERVE_BATCH,
                             serve->handler, serve->self);
}

void
chat_actor_serve (zsock_t *pipe, zsock_t *inbox, chat_msg_t *msg,
                  chat_outbox_t *outbox, chat_handler_fn *handler, void *self)
{
    s_serve_t serve = { pipe, inbox, msg, outbox, handler, self };
    chat_watch_t pipe_watch, inbox_watch;
    zloop_t *loop = zloop_new ();
    assert (loop);
    zloop_set_nonstop (loop, true);     //  Signals do not stop us: chatd.c does
    if (chat_zloop_watch (loop, pipe, &pipe_watch, s_serve_pipe, &serve) == 0
    &&  chat_zloop_watch (loop, inbox, &inbox_watch, s_serve_inbox, &serve) == 0) {
        //  0: a signal interrupted the poll; -1: $TERM, or the context is gone
        while (zloop_start (loop) == 0)
            ;
    }
    else
        zsys_error ("chat_actor_serve: cannot watch the sockets");
    zloop_destroy (&loop);
}


//  --------------------------------------------------------------------------
//  Connection id lists

bool
chat_ids_next (const char **cursor, uint64_t *id)
{
    const char *p = *cursor;
    while (*p == ',')
        p++;
    if (*p < '0' || *p > '9')
        return false;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9') {
        uint64_t digit = (uint64_t) (*p++ - '0');
        if (v > (UINT64_MAX - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    *id = v;
    *cursor = p;
    return true;
}
