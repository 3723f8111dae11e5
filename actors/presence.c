/*  =========================================================================
    presence.c - the presence actor: who is online

    Owns, for every user with at least one open connection, the set of that
    user's connection ids and their nickname. Talks to:

        hub         > join / leave       (forwarded from ws-front)
        persistence > users_listed       (GET /api/users, to add "online")
        presence    > online_users       > ws-front (for the new connection)
        presence    > user_online        > ws-front (first connection of a user)
        presence    > user_offline       > ws-front (last connection closed)
        presence    > http_response      > ws-front (GET /api/users)

    A set of connection ids rather than a count, so that a repeated join or
    leave for the same connection changes nothing.
    =========================================================================
*/

#include "chat_actors.h"
#include "chat_config.h"
#include "chat_idmap.h"
#include "chat_msg.h"
#include "chat_wire.h"
#include <inttypes.h>
#include <jansson.h>

//  One online user
typedef struct {
    uint64_t user_id;                   //  The user
    char *nickname;                     //  As given by the first join
    char *entry;                        //  {"user_id":..,"nickname":".."}, for online_users
    size_t entry_len;                   //  Its length
    uint64_t *conns;                    //  Open connection ids
    size_t count;                       //  Connections in conns
    size_t cap;                         //  Capacity of conns
} s_user_t;

typedef struct {
    zsock_t *pipe;                      //  Actor command pipe
    zsock_t *inbox;                     //  Our PULL inbox (inproc://chatd-presence)
    chat_outbox_t *outbox;              //  PUSH socket to ws-front
    chat_msg_t msg;                     //  Last message received, decoded
    chat_idmap_t users;                 //  user_id -> s_user_t, online users only
    chat_json_t json;                   //  Scratch buffer: online_users lists
} self_t;


//  --------------------------------------------------------------------------
//  Online users

static void
s_user_destroy (void **item_p)
{
    s_user_t *user = (s_user_t *) *item_p;
    if (user) {
        free (user->nickname);
        free (user->entry);
        free (user->conns);
        free (user);
        *item_p = NULL;
    }
}

static s_user_t *
s_user_new (uint64_t user_id, const char *nickname, size_t len)
{
    s_user_t *user = (s_user_t *) zmalloc (sizeof (s_user_t));
    assert (user);
    user->user_id = user_id;
    user->nickname = strndup (nickname, len);
    assert (user->nickname);
    //  Written once: every online_users list is these entries joined
    chat_json_t entry = { NULL, 0, 0 };
    chat_json_lit (&entry, "{");
    chat_json_key (&entry, "user_id");
    chat_json_u64 (&entry, user_id);
    chat_json_key (&entry, "nickname");
    chat_json_string (&entry, nickname, len);
    chat_json_lit (&entry, "}");
    user->entry = entry.data;
    user->entry_len = entry.len;
    return user;
}

//  Returns true if conn_id was not there yet
static bool
s_user_add_conn (s_user_t *user, uint64_t conn_id)
{
    for (size_t i = 0; i < user->count; i++)
        if (user->conns [i] == conn_id)
            return false;
    if (user->count == user->cap) {
        user->cap = user->cap? user->cap * 2: 4;
        user->conns = (uint64_t *) realloc (user->conns, user->cap * sizeof (uint64_t));
        assert (user->conns);
    }
    user->conns [user->count++] = conn_id;
    return true;
}

//  Returns true if conn_id was there
static bool
s_user_remove_conn (s_user_t *user, uint64_t conn_id)
{
    for (size_t i = 0; i < user->count; i++)
        if (user->conns [i] == conn_id) {
            user->conns [i] = user->conns [--user->count];
            return true;
        }
    return false;
}


//  --------------------------------------------------------------------------
//  Lifecycle

static self_t *
s_self_new (zsock_t *pipe, const chat_config_t *cfg)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    assert (self);
    self->pipe = pipe;
    self->inbox = chat_inbox_new (CHAT_ACTOR_PRESENCE);
    self->outbox = chat_outbox_new (CHAT_ACTOR_PRESENCE, cfg->server_tap);
    chat_msg_init (&self->msg);
    chat_idmap_init (&self->users);
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
        void *user;
        while (chat_idmap_next (&self->users, &cursor, &user_id, &user))
            s_user_destroy (&user);
        chat_idmap_release (&self->users);
        chat_json_release (&self->json);
        chat_msg_release (&self->msg);
        chat_outbox_destroy (&self->outbox);
        zsock_destroy (&self->inbox);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Commands

//  Send a JSON body as http_response; takes ownership of body
static void
s_send_http (self_t *self, uint64_t req_id, uint64_t status, json_t *body)
{
    char *text = body? json_dumps (body, JSON_COMPACT): NULL;
    chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_HTTP_RESPONSE,
               req_id, status, text? text: "{\"error\":\"internal\",\"message\":\"out of memory\"}", "");
    free (text);
    json_decref (body);
}

//  Every online user except user_id, as a JSON array in self->json: the
//  users' entries joined, so a list of N users costs N copies
static void
s_online_others (self_t *self, uint64_t user_id)
{
    chat_json_t *json = &self->json;
    json->len = 0;
    chat_json_lit (json, "[");
    size_t cursor = 0;
    uint64_t id;
    void *value;
    while (chat_idmap_next (&self->users, &cursor, &id, &value))
        if (id != user_id) {
            s_user_t *user = (s_user_t *) value;
            if (json->len > 1)
                chat_json_lit (json, ",");
            chat_json_raw (json, user->entry, user->entry_len);
        }
    chat_json_lit (json, "]");
}

//  join conn_id user_id nickname
static void
s_handle_join (self_t *self, chat_msg_t *m)
{
    uint64_t conn_id = m->u [0];
    uint64_t user_id = m->u [1];
    s_user_t *user = (s_user_t *) chat_idmap_get (&self->users, user_id);
    bool first = false;
    if (!user) {
        user = s_user_new (user_id, m->s [2], m->len [2]);
        if (chat_idmap_put (&self->users, user_id, user) != 0)
            assert (false);             //  Out of memory
        first = true;
    }
    s_user_add_conn (user, conn_id);

    //  The new connection's first frame: everyone else online
    s_online_others (self, user_id);
    chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_ONLINE_USERS,
                conn_id, self->json.data, self->json.len);
    if (first)
        chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_USER_ONLINE,
                   user_id, user->nickname);
}

//  leave conn_id user_id nickname
static void
s_handle_leave (self_t *self, chat_msg_t *m)
{
    uint64_t conn_id = m->u [0];
    uint64_t user_id = m->u [1];
    s_user_t *user = (s_user_t *) chat_idmap_get (&self->users, user_id);
    if (!user || !s_user_remove_conn (user, conn_id))
        return;                 //  Not a connection we know: nothing changes
    if (user->count == 0) {
        chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_USER_OFFLINE,
                   user_id, user->nickname);
        chat_idmap_remove (&self->users, user_id);
        void *item = user;
        s_user_destroy (&item);
    }
}

//  users_listed req_id users: add "online" to each, answer GET /api/users
static void
s_handle_users_listed (self_t *self, chat_msg_t *m)
{
    uint64_t req_id = m->u [0];
    json_error_t error;
    json_t *listed = json_loadb (m->s [1], m->len [1], 0, &error);
    json_t *users = json_array ();
    const char *problem = NULL;
    if (!json_is_array (listed))
        problem = "user list is not a JSON array";
    size_t index;
    json_t *entry;
    if (!problem)
        json_array_foreach (listed, index, entry) {
            json_t *id = json_object_get (entry, "user_id");
            json_t *nickname = json_object_get (entry, "nickname");
            if (!json_is_integer (id) || json_integer_value (id) <= 0 || !json_is_string (nickname)) {
                problem = "malformed user in user list";
                break;
            }
            json_array_append_new (users, json_pack ("{s:O,s:O,s:b}",
                                   "user_id", id, "nickname", nickname,
                                   "online", chat_idmap_get (&self->users, (uint64_t) json_integer_value (id)) != NULL));
        }
    if (problem) {
        zsys_error ("presence: users_listed: %s", problem);
        s_send_http (self, req_id, 500, json_pack ("{s:s,s:s}",
                     "error", "internal_error", "message", problem));
    }
    else
        s_send_http (self, req_id, 200, json_pack ("{s:O}", "users", users));
    json_decref (users);
    json_decref (listed);
}

static void
s_dispatch (void *self_, chat_msg_t *m)
{
    self_t *self = (self_t *) self_;
    switch (m->cmd) {
        case CHAT_CMD_JOIN:         s_handle_join (self, m); break;
        case CHAT_CMD_LEAVE:        s_handle_leave (self, m); break;
        case CHAT_CMD_USERS_LISTED: s_handle_users_listed (self, m); break;
        default:
            zsys_warning ("presence: unexpected command %s", chat_cmd_name (m->cmd));
            break;
    }
}

//  --------------------------------------------------------------------------
//  The actor

void
chat_presence_actor (zsock_t *pipe, void *config)
{
    assert (config);
    chat_actor_thread_name (CHAT_ACTOR_PRESENCE);
    self_t *self = s_self_new (pipe, (const chat_config_t *) config);
    zsock_signal (pipe, 0);
    if (!self->inbox) {
        chat_actor_report (pipe, "presence: cannot bind inproc://chatd-presence");
        s_self_destroy (&self);
        return;
    }
    chat_actor_report (pipe, NULL);

    chat_actor_serve (pipe, self->inbox, &self->msg, self->outbox, s_dispatch, self);
    s_self_destroy (&self);
}
