/*  =========================================================================
    sqlite_pairs.h - each conversation direction's message ids, for the
    SQLite backend's history, sync, mark_read and conversations (see
    sqlite_pairs.c)
    =========================================================================
*/

#ifndef CHAT_SQLITE_PAIRS_H_INCLUDED
#define CHAT_SQLITE_PAIRS_H_INCLUDED

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

typedef struct chat_sqlite_pairs_t chat_sqlite_pairs_t;

//  What the pairs of one handle hold and did so far (tests, measurements)
typedef struct {
    size_t in_memory;                   //  Ids not yet only in the table
    int64_t merged_through;             //  Every id <= this is in the table
    uint64_t sweeps;                    //  Merges finished
    uint64_t merged;                    //  Entries written into the table
} chat_sqlite_pairs_stats_t;

//  Load, for the connection db (schema 4 or later), the ids of the
//  messages stored after the last merge; a merge starts when merge_at ids
//  are in memory. Call inside a transaction. NULL (logged) if db fails.
chat_sqlite_pairs_t *chat_sqlite_pairs_new (sqlite3 *db, const char *path, size_t merge_at);
void chat_sqlite_pairs_destroy (chat_sqlite_pairs_t **self_p);

//  Inside any transaction, first: take in the messages that other
//  connections stored since this one last looked. 0, or -1 (logged).
int chat_sqlite_pairs_begin (chat_sqlite_pairs_t *self);

//  The open write transaction stored message id from sender to receiver:
//  every message it stores, in id order. 0, or -1 (logged: out of
//  memory; the transaction must go).
int chat_sqlite_pairs_add (chat_sqlite_pairs_t *self, int64_t sender_id,
                           int64_t receiver_id, int64_t id);

//  Just before the COMMIT of a write transaction: write the next chunk of
//  a merge in progress, in the same transaction. 0, or -1 (logged; the
//  transaction must go).
int chat_sqlite_pairs_flush (chat_sqlite_pairs_t *self);

//  After COMMIT succeeded (of a write or a read transaction), or after
//  the transaction was rolled back
void chat_sqlite_pairs_committed (chat_sqlite_pairs_t *self);
void chat_sqlite_pairs_rolled_back (chat_sqlite_pairs_t *self);

//  Reading, inside a transaction after chat_sqlite_pairs_begin. The ids
//  of one direction are the message_pairs rows with id <= through, then
//  the ids in memory, which are all above through.
int64_t chat_sqlite_pairs_through (chat_sqlite_pairs_t *self);
//  The ids in memory from sender to receiver, ascending (*count of them;
//  NULL when none). Valid until the handle next stores or commits.
const int64_t *chat_sqlite_pairs_ids (chat_sqlite_pairs_t *self, int64_t sender_id,
                                      int64_t receiver_id, size_t *count);
//  Of ids [0 .. count), how many are at most bound (a binary search)
size_t chat_sqlite_pairs_rank (const int64_t *ids, size_t count, int64_t bound);

chat_sqlite_pairs_stats_t chat_sqlite_pairs_stats (chat_sqlite_pairs_t *self);

#endif
