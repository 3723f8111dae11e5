/*  =========================================================================
    hub.c - the hub actor: routes messages between connections

    Owns the routing table user_id -> connection ids, learned from `join`
    and `leave` (sent by ws-front). Nothing else: no connection, no
    database. It sits on the hot path of every message:

        ws-front     > join / leave              > hub > presence
        persistence  > message_stored            > hub > deliver_message > ws-front
        rate-limiter > typing                    > hub > deliver_typing  > ws-front
        persistence  > messages_read             > hub > deliver_read    > ws-front

    A private message reaches the hub only once it is stored: it needs no
    route before that, so rate-limiter hands it to persistence directly,
    one thread hop (a wake-up) fewer per message than passing it through.
    Routes are looked up after the commit, so a connection that opens
    meanwhile gets the message either live or from its sync.

    The table maps user id to a small growable array of connection ids
    (chat_idmap: open addressing, no allocation per lookup).
    Lists of connection ids are built into one reused buffer, so routing a
    message allocates nothing beyond what the codec needs.
    =========================================================================
*/

#include "chat_actors.h"
#include "chat_config.h"
#include "chat_idmap.h"
#include "chat_msg.h"
#include <inttypes.h>

//  One user's connections
typedef struct {
    uint64_t *conns;                    //  Connection ids, unordered
    size_t count;                       //  Connections in use
    size_t cap;                         //  Capacity of conns
} s_route_t;

typedef struct {
    zsock_t *pipe;                      //  Actor command pipe
    zsock_t *inbox;                     //  Our PULL inbox (inproc://chatd-hub)
    chat_outbox_t *outbox;              //  PUSH sockets to presence, ws-front
    chat_msg_t msg;                     //  Last message received, decoded
    chat_idmap_t routes;                //  user_id -> s_route_t
    char *ids;                          //  Reused buffer for conn_ids lists
    size_t ids_cap;                     //  Capacity of ids
    size_t ids_len;                     //  Length of the list in ids
} self_t;


//  --------------------------------------------------------------------------
//  Routing table

static s_route_t *
s_route_find (self_t *self, uint64_t user_id)
{
    return user_id ? (s_route_t *) chat_idmap_get (&self->routes, user_id) : NULL;
}

//  Find or create the route of user_id
static s_route_t *
s_route_require (self_t *self, uint64_t user_id)
{
    assert (user_id);
    s_route_t *route = s_route_find (self, user_id);
    if (!route) {
        route = (s_route_t *) zmalloc (sizeof (s_route_t));
        assert (route);
        if (chat_idmap_put (&self->routes, user_id, route) != 0)
            assert (false);             //  Out of memory
    }
    return route;
}

static void
s_route_remove (self_t *self, uint64_t user_id)
{
    s_route_t *route = (s_route_t *) chat_idmap_remove (&self->routes, user_id);
    if (route) {
        free (route->conns);
        free (route);
    }
}

static void
s_route_add_conn (s_route_t *route, uint64_t conn_id)
{
    for (size_t i = 0; i < route->count; i++)
        if (route->conns [i] == conn_id)
            return;             //  Already there
    if (route->count == route->cap) {
        route->cap = route->cap? route->cap * 2: 4;
        route->conns = (uint64_t *) realloc (route->conns, route->cap * sizeof (uint64_t));
        assert (route->conns);
    }
    route->conns [route->count++] = conn_id;
}

//  Returns true if the route is now empty
static bool
s_route_remove_conn (s_route_t *route, uint64_t conn_id)
{
    for (size_t i = 0; i < route->count; i++)
        if (route->conns [i] == conn_id) {
            route->conns [i] = route->conns [--route->count];
            break;
        }
    return route->count == 0;
}


//  --------------------------------------------------------------------------
//  conn_ids lists, built in self->ids

static void
s_ids_reset (self_t *self)
{
    self->ids_len = 0;
    self->ids [0] = 0;
}

//  Append every connection of route except `except` (0: none)
static void
s_ids_append (self_t *self, s_route_t *route, uint64_t except)
{
    if (!route)
        return;
    //  Each id: up to 20 digits and a comma
    size_t need = self->ids_len + route->count * 21 + 1;
    if (need > self->ids_cap) {
        while (self->ids_cap < need)
            self->ids_cap *= 2;
        self->ids = (char *) realloc (self->ids, self->ids_cap);
        assert (self->ids);
    }
    for (size_t i = 0; i < route->count; i++) {
        if (route->conns [i] == except)
            continue;
        int n = snprintf (self->ids + self->ids_len, self->ids_cap - self->ids_len,
                          "%s%" PRIu64, self->ids_len? ",": "", route->conns [i]);
        self->ids_len += (size_t) n;
    }
}


//  --------------------------------------------------------------------------
//  Lifecycle

static self_t *
s_self_new (zsock_t *pipe, const chat_config_t *cfg)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    assert (self);
    self->pipe = pipe;
    self->inbox = chat_inbox_new (CHAT_ACTOR_HUB);
    self->outbox = chat_outbox_new (CHAT_ACTOR_HUB, cfg->server_tap);
    chat_msg_init (&self->msg);
    chat_idmap_init (&self->routes);
    self->ids_cap = 256;
    self->ids = (char *) malloc (self->ids_cap);
    assert (self->ids);
    s_ids_reset (self);
    return self;
}

static void
s_self_destroy (self_t **self_p)
{
    assert (self_p);
    self_t *self = *self_p;
    if (self) {
        size_t cursor = 0;
        uint64_t user_id;
        void *route;
        while (chat_idmap_next (&self->routes, &cursor, &user_id, &route)) {
            free (((s_route_t *) route)->conns);
            free (route);
        }
        chat_idmap_release (&self->routes);
        free (self->ids);
        chat_msg_release (&self->msg);
        chat_outbox_destroy (&self->outbox);
        zsock_destroy (&self->inbox);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Commands

//  join conn_id user_id nickname: add the route, forward to presence
static void
s_handle_join (self_t *self, chat_msg_t *m)
{
    if (m->u [1]) {
        s_route_t *route = s_route_require (self, m->u [1]);
        s_route_add_conn (route, m->u [0]);
    }
    chat_sendn (self->outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_JOIN,
                m->u [0], m->u [1], m->s [2], m->len [2]);
}

//  leave conn_id user_id nickname: drop the route, forward to presence
static void
s_handle_leave (self_t *self, chat_msg_t *m)
{
    s_route_t *route = s_route_find (self, m->u [1]);
    if (route && s_route_remove_conn (route, m->u [0]))
        s_route_remove (self, m->u [1]);
    chat_sendn (self->outbox, CHAT_ACTOR_PRESENCE, CHAT_CMD_LEAVE,
                m->u [0], m->u [1], m->s [2], m->len [2]);
}

//  message_stored conn_id message_id from_user_id nickname to_user_id
//  client_id content timestamp duplicate: one deliver_message to ws-front
static void
s_handle_message_stored (self_t *self, chat_msg_t *m)
{
    uint64_t origin = m->u [0];
    uint64_t from = m->u [2];
    uint64_t to = m->u [4];
    uint64_t duplicate = m->u [8];
    s_route_t *recipient = s_route_find (self, to);
    s_ids_reset (self);
    if (!duplicate) {
        s_ids_append (self, recipient, origin);
        if (from != to)
            s_ids_append (self, s_route_find (self, from), origin);
    }
    uint64_t online = recipient && recipient->count? 1: 0;
    chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_DELIVER_MESSAGE,
                origin, self->ids, self->ids_len, m->u [1], from,
                m->s [3], m->len [3], to, m->s [5], m->len [5],
                m->s [6], m->len [6], m->s [7], m->len [7], online, duplicate);
}

//  typing conn_id user_id nickname to_user_id is_typing: to the
//  recipient's connections, if any
static void
s_handle_typing (self_t *self, chat_msg_t *m)
{
    s_route_t *recipient = s_route_find (self, m->u [3]);
    if (!recipient || recipient->count == 0)
        return;
    s_ids_reset (self);
    s_ids_append (self, recipient, 0);
    chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_DELIVER_TYPING,
                self->ids, self->ids_len, m->u [1], m->s [2], m->len [2], m->u [4]);
}

//  messages_read by_user_id with_user_id up_to_id: to the partner's
//  connections, if any
static void
s_handle_messages_read (self_t *self, chat_msg_t *m)
{
    s_route_t *partner = s_route_find (self, m->u [1]);
    if (!partner || partner->count == 0)
        return;
    s_ids_reset (self);
    s_ids_append (self, partner, 0);
    chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_DELIVER_READ,
                self->ids, self->ids_len, m->u [0], m->u [2]);
}

static void
s_dispatch (void *self_, chat_msg_t *m)
{
    self_t *self = (self_t *) self_;
    switch (m->cmd) {
        case CHAT_CMD_JOIN:             s_handle_join (self, m); break;
        case CHAT_CMD_LEAVE:            s_handle_leave (self, m); break;
        case CHAT_CMD_MESSAGE_STORED:   s_handle_message_stored (self, m); break;
        case CHAT_CMD_TYPING:           s_handle_typing (self, m); break;
        case CHAT_CMD_MESSAGES_READ:    s_handle_messages_read (self, m); break;
        default:
            zsys_warning ("hub: unexpected command %s", chat_cmd_name (m->cmd));
            break;
    }
}

//  --------------------------------------------------------------------------
//  The actor

void
chat_hub_actor (zsock_t *pipe, void *config)
{
    assert (config);
    chat_actor_thread_name (CHAT_ACTOR_HUB);
    self_t *self = s_self_new (pipe, (const chat_config_t *) config);
    zsock_signal (pipe, 0);
    if (!self->inbox) {
        chat_actor_report (pipe, "hub: cannot bind inproc://chatd-hub");
        s_self_destroy (&self);
        return;
    }
    chat_actor_report (pipe, NULL);

    chat_actor_serve (pipe, self->inbox, &self->msg, self->outbox, s_dispatch, self);
    s_self_destroy (&self);
}
