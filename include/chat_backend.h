/*  =========================================================================
    chat_backend.h - the storage interface behind persistence and auth

    One struct of functions; backends/sqlite.c and backends/postgres.c each
    provide one. A backend handle is used by one thread only (each actor that
    needs storage opens its own handle); handles of one database may be open
    in several actors at once.

    Return codes: CHAT_DB_OK, CHAT_DB_NOT_FOUND, CHAT_DB_CONFLICT, or
    CHAT_DB_UNAVAILABLE when the database cannot be reached or failed (the
    caller may retry later; the backend reconnects on its next call).
    =========================================================================
*/

#ifndef CHAT_BACKEND_H_INCLUDED
#define CHAT_BACKEND_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "chat_config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CHAT_DB_OK            0
#define CHAT_DB_NOT_FOUND     1
#define CHAT_DB_CONFLICT      2
#define CHAT_DB_UNAVAILABLE  -1

typedef struct {
    int64_t id;                         //  user_id
    char nickname [33];                 //  As registered
    char password_hash [128];           //  Argon2id encoded string
} chat_user_t;

typedef struct {
    int64_t id;                         //  message_id
    int64_t from_user_id;               //  Sender
    int64_t to_user_id;                 //  Recipient
    const char *nickname;               //  Sender's nickname
    const char *content;                //  Exactly as sent (UTF-8)
    size_t content_len;                 //  In bytes
    int64_t created_ms;                 //  Milliseconds since the epoch, UTC
    bool is_read;                       //  Read by the recipient
    const char *client_id;              //  Sender's client id or NULL
} chat_message_t;

typedef struct {
    int64_t user_id;                    //  The conversation partner
    const char *nickname;               //  Partner's nickname
    chat_message_t last_message;        //  Newest message of the conversation
    int64_t unread;                     //  Messages from partner not yet read
} chat_conversation_t;

//  Called once per row; the pointers in the row are valid only during the call
typedef void (chat_user_fn) (const chat_user_t *user, void *ctx);
typedef void (chat_message_fn) (const chat_message_t *message, void *ctx);
typedef void (chat_conversation_fn) (const chat_conversation_t *conv, void *ctx);
typedef void (chat_session_fn) (const char *token_hash, int64_t user_id,
                                const char *nickname, int64_t expires_ms, void *ctx);

typedef struct chat_backend_t chat_backend_t;   //  A backend's own handle

typedef struct {
    const char *name;                   //  "sqlite", "postgres"

    //  Open a handle; applies pending migrations. On failure returns NULL
    //  and writes a one-line reason into error.
    chat_backend_t *(*open) (const chat_config_t *cfg, char *error, size_t size);
    void (*close) (chat_backend_t **self_p);
    //  CHAT_DB_OK if the database answers now (reconnecting if need be)
    int (*ping) (chat_backend_t *self);

    //  --- users ---
    //  Nickname is unique without regard to case: CHAT_DB_CONFLICT if taken
    int (*user_create) (chat_backend_t *self, const char *nickname,
                        const char *password_hash, int64_t now_ms, int64_t *user_id);
    //  Case-insensitive lookup
    int (*user_find) (chat_backend_t *self, const char *nickname, chat_user_t *user);
    int (*user_get) (chat_backend_t *self, int64_t user_id, chat_user_t *user);
    //  Every user, ordered by nickname (case-insensitive, then as stored)
    int (*users_list) (chat_backend_t *self, chat_user_fn *fn, void *ctx);

    //  --- sessions (only the hash of the token is ever stored) ---
    int (*session_create) (chat_backend_t *self, const char *token_hash,
                           int64_t user_id, int64_t now_ms, int64_t expires_ms);
    int (*session_delete) (chat_backend_t *self, const char *token_hash);
    //  Every session still valid at now_ms, with its user's nickname
    int (*sessions_live) (chat_backend_t *self, int64_t now_ms, chat_session_fn *fn, void *ctx);
    //  Delete sessions expired at now_ms, calling fn for each one deleted
    int (*sessions_expire) (chat_backend_t *self, int64_t now_ms, chat_session_fn *fn, void *ctx);

    //  --- messages ---
    //  Group commit: begin, store a batch (one or more calls of
    //  message_store_batch), commit. A failed commit means none of the
    //  transaction is stored; rollback drops it on purpose.
    int (*begin) (chat_backend_t *self);
    int (*commit) (chat_backend_t *self);
    int (*rollback) (chat_backend_t *self);
    //  Store count messages inside the open transaction, in array order: a
    //  later message gets a larger id, also across calls. For each message
    //  results [i] is:
    //    CHAT_DB_OK         stored: id, created_ms (now) and is_read (false)
    //                       set. Or a duplicate (duplicates [i] set): the
    //                       sender already used client_id, before or earlier
    //                       in this batch; nothing is stored and the message
    //                       is filled from the first one (id, to_user_id,
    //                       content, created_ms, is_read). The client_id
    //                       check comes first: a resend is a duplicate
    //                       whatever its recipient.
    //    CHAT_DB_NOT_FOUND  the sender or recipient does not exist; nothing
    //                       stored, its client_id stays free, the rest of the
    //                       batch goes on.
    //  Returns CHAT_DB_OK when every message has its result, else
    //  CHAT_DB_UNAVAILABLE (results are then undefined and the transaction
    //  must be rolled back). A stored message's content stays the caller's;
    //  a duplicate's points to the stored content (or to the earlier
    //  message's content in this batch), valid until the next call on this
    //  handle. duplicates may be NULL.
    int (*message_store_batch) (chat_backend_t *self, chat_message_t *messages, size_t count,
                                int *results, bool *duplicates);
    //  The `limit` newest messages between user and with whose id is below
    //  before_id (0: no bound), passed to fn in ascending id order.
    int (*history) (chat_backend_t *self, int64_t user_id, int64_t with_user_id,
                    int64_t before_id, int limit, chat_message_fn *fn, void *ctx,
                    bool *has_more);
    //  Messages to or from user with id above after_id, ascending, at most limit
    int (*sync) (chat_backend_t *self, int64_t user_id, int64_t after_id, int limit,
                 chat_message_fn *fn, void *ctx, bool *has_more);
    //  Mark every message from partner to reader with id <= up_to_id as read.
    //  *changed is the number of messages newly marked.
    int (*mark_read) (chat_backend_t *self, int64_t reader_id, int64_t partner_id,
                      int64_t up_to_id, int64_t *changed);
    //  One row per conversation partner, most recent conversation first
    int (*conversations) (chat_backend_t *self, int64_t user_id,
                          chat_conversation_fn *fn, void *ctx);
} chat_backend_ops_t;

extern const chat_backend_ops_t chat_backend_sqlite;
extern const chat_backend_ops_t chat_backend_postgres;

//  The backend named in the config, or NULL (backends/backend.c)
const chat_backend_ops_t *chat_backend_find (const char *name);

#ifdef __cplusplus
}
#endif

#endif
