/*  =========================================================================
    chat_actors.h - the six actors of chatd

    Each is a czmq actor: start it with zactor_new (chat_X_actor, &config).
    The actor copies the config before it signals; the caller's copy can go
    away afterwards. After zactor_new returns, call chat_actor_started() to
    learn whether it came up (see chat_msg.h). Send "$TERM" (or
    zactor_destroy) to stop it.

        ws-front      HTTP and WebSocket (libwebsockets); owns the connections
        auth          users, passwords (Argon2id) and sessions
        rate-limiter  token buckets per user, login throttling
        hub           routes messages between connections; owns the routing table
        persistence   stores messages through the storage backend (group commit)
        presence      who is online, user_online / user_offline
    =========================================================================
*/

#ifndef CHAT_ACTORS_H_INCLUDED
#define CHAT_ACTORS_H_INCLUDED

#include <czmq.h>

#ifdef __cplusplus
extern "C" {
#endif

void chat_ws_front_actor (zsock_t *pipe, void *config);
void chat_auth_actor (zsock_t *pipe, void *config);
void chat_rate_limiter_actor (zsock_t *pipe, void *config);
void chat_hub_actor (zsock_t *pipe, void *config);
void chat_persistence_actor (zsock_t *pipe, void *config);
void chat_presence_actor (zsock_t *pipe, void *config);

#ifdef __cplusplus
}
#endif

#endif
