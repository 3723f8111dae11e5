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

//  One frame waiting in a held outbox
typedef struct {
    void *handle;                                   //  The peer's PUSH socket
    zmq_msg_t part;                                 //  The frame, built
    bool more;                                      //  More frames of its message follow
} s_held_part_t;

struct chat_outbox_t {
    chat_actor_t self_actor;                        //  Who sends
    zsock_t *peers [CHAT_ACTOR_COUNT];              //  PUSH per peer, on demand
    zsock_t *tap;                                   //  PUB to the tap proxy, or NULL
    bool held;                                      //  Queue sends until chat_outbox_flush
    s_held_part_t *parts;                           //  Frames queued while held, in order
    size_t nparts;                                  //  Number of them
    size_t cap;                                     //  Slots in parts
    size_t nmessages;                               //  Messages they make up
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
    chat_msg_init (m);
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

//  Decode a message given as its parts: part 0 is the command
static int
s_decode_parts (const void **data, const size_t *size, int count, chat_msg_t *m)
{
    m->cmd = CHAT_CMD_COUNT;
    m->nfields = 0;
    if (count < 1)
        return -1;
    chat_cmd_t cmd = chat_cmd_lookup ((const char *) data [0], size [0]);
    if (cmd == CHAT_CMD_COUNT) {
        zsys_warning ("chat_msg: unknown command '%.*s'", (int) size [0], (const char *) data [0]);
        return -1;
    }
    const char *picture = s_commands [cmd].picture;
    int nfields = (int) strlen (picture);
    if (count != nfields + 1) {
        zsys_warning ("chat_msg: %s has %d fields, expected %d", s_commands [cmd].name, count - 1, nfields);
        return -1;
    }
    //  One buffer holds every field, each NUL-terminated
    size_t total = 0;
    for (int i = 1; i < count; i++)
        total += size [i] + 1;
    if (total > m->cap) {
        char *buf = (char *) realloc (m->buf, total);
        if (!buf)
            return -1;
        m->buf = buf;
        m->cap = total;
    }
    char *cursor = m->buf;
    for (int index = 0; index < nfields; index++) {
        size_t len = size [index + 1];
        if (len)
            memcpy (cursor, data [index + 1], len);
        cursor [len] = 0;
        m->s [index] = cursor;
        m->len [index] = len;
        m->u [index] = 0;
        if (picture [index] == 'u' && s_parse_u64 (cursor, len, &m->u [index]) != 0) {
            zsys_warning ("chat_msg: %s field %d is not a number", s_commands [cmd].name, index + 1);
            return -1;
        }
        cursor += len + 1;
    }
    m->cmd = cmd;
    m->nfields = nfields;
    return 0;
}

int
chat_msg_decode (zmsg_t *msg, chat_msg_t *m)
{
    assert (msg);
    assert (m);
    const void *data [CHAT_MAX_FIELDS + 1];
    size_t size [CHAT_MAX_FIELDS + 1];
    int count = 0;
    for (zframe_t *frame = zmsg_first (msg); frame; frame = zmsg_next (msg), count++) {
        if (count > CHAT_MAX_FIELDS) {
            m->cmd = CHAT_CMD_COUNT;
            zsys_warning ("chat_msg: message with too many frames");
            return -1;
        }
        data [count] = zframe_data (frame);
        size [count] = zframe_size (frame);
    }
    return s_decode_parts (data, size, count, m);
}

int
chat_msg_recv (zsock_t *sock, chat_msg_t *m, bool nowait)
{
    assert (sock);
    assert (m);
    //  Parts are received in place and decoded without building a zmsg
    zmq_msg_t parts [CHAT_MAX_FIELDS + 1];
    const void *data [CHAT_MAX_FIELDS + 1];
    size_t size [CHAT_MAX_FIELDS + 1];
    void *handle = zsock_resolve (sock);
    int count = 0, received = 0, rc = 0;
    //  Read every part, so a message is consumed whole even when malformed
    while (true) {
        zmq_msg_t scratch;
        zmq_msg_t *part = count <= CHAT_MAX_FIELDS ? &parts [count] : &scratch;
        zmq_msg_init (part);
        if (zmq_msg_recv (part, handle, nowait && received == 0 ? ZMQ_DONTWAIT : 0) == -1) {
            zmq_msg_close (part);
            rc = (zmq_errno () == EAGAIN && received == 0) ? 1 : -1;
            break;
        }
        received++;
        bool more = zmq_msg_more (part);
        if (part == &scratch)
            zmq_msg_close (part);
        else
            count++;
        if (!more)
            break;
    }
    if (rc == 0 && received > CHAT_MAX_FIELDS + 1) {
        zsys_warning ("chat_msg: message with too many frames");
        rc = -1;
    }
    if (rc == 0) {
        for (int i = 0; i < count; i++) {
            data [i] = zmq_msg_data (&parts [i]);
            size [i] = zmq_msg_size (&parts [i]);
        }
        rc = s_decode_parts (data, size, count, m);
    }
    for (int i = 0; i < count; i++)
        zmq_msg_close (&parts [i]);
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
        free (self->parts);
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

//  Encode the fields into a vector of (data, size) pairs; numbers are
//  rendered into numbuf. with_lengths: string args carry a size_t length.
typedef struct {
    const void *data [CHAT_MAX_FIELDS + 1];
    size_t size [CHAT_MAX_FIELDS + 1];
    char numbuf [CHAT_MAX_FIELDS][24];
    int count;
} s_parts_t;

static void
s_encode (s_parts_t *parts, chat_cmd_t cmd, bool with_lengths, va_list args)
{
    const char *picture = s_commands [cmd].picture;
    parts->data [0] = s_commands [cmd].name;
    parts->size [0] = strlen (s_commands [cmd].name);
    int index = 1;
    for (const char *p = picture; *p; p++, index++) {
        if (*p == 'u') {
            uint64_t value = va_arg (args, uint64_t);
            char *end = parts->numbuf [index - 1] + sizeof parts->numbuf [0];
            char *first = chat_u64_digits (value, end);
            parts->data [index] = first;
            parts->size [index] = (size_t) (end - first);
        }
        else {
            const char *text = va_arg (args, const char *);
            size_t len = with_lengths ? va_arg (args, size_t) : (text ? strlen (text) : 0);
            parts->data [index] = text ? text : "";
            parts->size [index] = text ? len : 0;
        }
    }
    parts->count = index;
}

static int
s_send_parts (void *handle, s_parts_t *parts)
{
    for (int i = 0; i < parts->count; i++)
        if (s_send_part (handle, parts->data [i], parts->size [i], i < parts->count - 1) != 0)
            return -1;
    return 0;
}

static int s_flush_held (chat_outbox_t *self);

//  Queue a message's frames in a held outbox; flushes first when the queue
//  is full, so that a long burst still reaches the peer in pieces
static int
s_hold_parts (chat_outbox_t *self, void *handle, s_parts_t *parts)
{
    if (self->nmessages >= CHAT_OUTBOX_HOLD_MAX)
        s_flush_held (self);
    if (self->nparts + (size_t) parts->count > self->cap) {
        size_t cap = self->cap? self->cap * 2: 256;
        while (cap < self->nparts + (size_t) parts->count)
            cap *= 2;
        s_held_part_t *grown = (s_held_part_t *) realloc (self->parts, cap * sizeof *grown);
        if (!grown)
            return -1;
        self->parts = grown;
        self->cap = cap;
    }
    for (int i = 0; i < parts->count; i++) {
        s_held_part_t *held = &self->parts [self->nparts + (size_t) i];
        if (zmq_msg_init_size (&held->part, parts->size [i]) != 0) {
            while (i-- > 0)
                zmq_msg_close (&self->parts [self->nparts + (size_t) i].part);
            return -1;
        }
        if (parts->size [i])
            memcpy (zmq_msg_data (&held->part), parts->data [i], parts->size [i]);
        held->handle = handle;
        held->more = i < parts->count - 1;
    }
    self->nparts += (size_t) parts->count;
    self->nmessages++;
    return 0;
}

static int
s_vsend (chat_outbox_t *self, chat_actor_t to, chat_cmd_t cmd, bool with_lengths, va_list args)
{
    assert (self);
    assert (cmd < CHAT_CMD_COUNT);
    zsock_t *sock = chat_outbox_socket (self, to);
    if (!sock)
        return -1;
    s_parts_t parts;
    s_encode (&parts, cmd, with_lengths, args);
    if (self->tap) {
        const char *from = chat_actor_name (self->self_actor);
        const char *dest = chat_actor_name (to);
        void *tap = zsock_resolve (self->tap);
        if (s_send_part (tap, from, strlen (from), true) == 0
        &&  s_send_part (tap, dest, strlen (dest), true) == 0)
            s_send_parts (tap, &parts);
    }
    int rc = self->held? s_hold_parts (self, zsock_resolve (sock), &parts)
                       : s_send_parts (zsock_resolve (sock), &parts);
    if (rc != 0)
        zsys_error ("%s: cannot send %s to %s: %s", chat_actor_name (self->self_actor),
                    s_commands [cmd].name, chat_actor_name (to), zmq_strerror (zmq_errno ()));
    return rc;
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


void
chat_outbox_hold (chat_outbox_t *self)
{
    assert (self);
    self->held = true;
}

//  Send every queued frame, in order, and empty the queue
static int
s_flush_held (chat_outbox_t *self)
{
    int rc = 0;
    for (size_t i = 0; i < self->nparts; i++) {
        s_held_part_t *held = &self->parts [i];
        int flags = (held->more? ZMQ_SNDMORE: 0) | ZMQ_DONTWAIT;
        if (zmq_msg_send (&held->part, held->handle, flags) == -1) {
            zsys_error ("%s: cannot send a held message: %s",
                        chat_actor_name (self->self_actor), zmq_strerror (zmq_errno ()));
            //  Drop the rest of this message; the next one starts clean
            zmq_msg_close (&held->part);
            while (self->parts [i].more && i + 1 < self->nparts)
                zmq_msg_close (&self->parts [++i].part);
            rc = -1;
        }
    }
    self->nparts = 0;
    self->nmessages = 0;
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

void
chat_actor_serve (zsock_t *pipe, zsock_t *inbox, chat_msg_t *msg,
                  chat_outbox_t *outbox, chat_handler_fn *handler, void *self)
{
    zpoller_t *poller = zpoller_new (pipe, inbox, NULL);
    assert (poller);
    zpoller_set_nonstop (poller, true);
    bool terminated = false;
    while (!terminated) {
        void *which = zpoller_wait (poller, -1);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            terminated = !command || streq (command, "$TERM");
            zstr_free (&command);
        }
        else
        if (which == inbox) {
            if (outbox)
                chat_outbox_hold (outbox);
            for (int count = 0; count < 1000; count++) {
                int rc = chat_msg_recv (inbox, msg, true);
                if (rc == 1)
                    break;              //  Nothing more waiting
                if (rc == 0)
                    handler (self, msg);
            }
            if (outbox)
                chat_outbox_flush (outbox);
        }
        else
        if (zmq_errno () == ETERM)
            break;                      //  Context terminated
    }
    zpoller_destroy (&poller);
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
