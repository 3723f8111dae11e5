/*  =========================================================================
    sqlite_client_ids.h - which client_ids each sender has used, for the
    SQLite backend's message_store (see sqlite_client_ids.c)
    =========================================================================
*/

#ifndef CHAT_SQLITE_CLIENT_IDS_H_INCLUDED
#define CHAT_SQLITE_CLIENT_IDS_H_INCLUDED

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

typedef struct chat_sqlite_ids_t chat_sqlite_ids_t;

//  What the ids of one handle hold and did so far (tests, measurements)
typedef struct {
    size_t in_memory;                   //  Client ids not yet only in the table
    int64_t merged_through;             //  Every id <= this is in the table
    uint64_t sweeps;                    //  Merges finished
    uint64_t merged;                    //  Entries written into the table
} chat_sqlite_ids_stats_t;

//  Load, for the connection db (schema 3 or later), the client_ids of the
//  messages stored after the last merge; a merge starts when merge_at
//  entries are in memory. Call inside a transaction. NULL (logged) if db
//  fails.
chat_sqlite_ids_t *chat_sqlite_ids_new (sqlite3 *db, const char *path, size_t merge_at);
void chat_sqlite_ids_destroy (chat_sqlite_ids_t **self_p);

//  Inside a write transaction, first: take in the messages that other
//  connections stored since this one last looked. 0, or -1 (logged).
int chat_sqlite_ids_begin (chat_sqlite_ids_t *self);

//  The id of the sender's message with this client_id, stored before or
//  earlier in the open transaction: 1 found (*message_id set), 0 not
//  used, -1 the database failed (logged). *key is set to the client_id's
//  key, for chat_sqlite_ids_add.
int chat_sqlite_ids_find (chat_sqlite_ids_t *self, int64_t sender_id,
                          const char *client_id, size_t len, uint64_t *key,
                          int64_t *message_id);

//  The open transaction stored message_id, with this client_id (key as
//  chat_sqlite_ids_find set it, which found it unused) or none (NULL):
//  every message it stores, in id order. 0, or -1 (logged: out of memory;
//  the transaction must go).
int chat_sqlite_ids_add (chat_sqlite_ids_t *self, int64_t sender_id,
                          const char *client_id, size_t len, uint64_t key,
                          int64_t message_id);

//  Just before COMMIT: write the next chunk of a merge in progress, in
//  the same transaction. 0, or -1 (logged; the transaction must go).
int chat_sqlite_ids_flush (chat_sqlite_ids_t *self);

//  After COMMIT succeeded, or after the transaction was rolled back
void chat_sqlite_ids_committed (chat_sqlite_ids_t *self);
void chat_sqlite_ids_rolled_back (chat_sqlite_ids_t *self);

chat_sqlite_ids_stats_t chat_sqlite_ids_stats (chat_sqlite_ids_t *self);

#endif
