/*  =========================================================================
    sqlite_checkpoint.h - the SQLite backend's checkpoints, off the commit
    path (see sqlite_checkpoint.c)
    =========================================================================
*/

#ifndef CHAT_SQLITE_CHECKPOINT_H_INCLUDED
#define CHAT_SQLITE_CHECKPOINT_H_INCLUDED

#include <sqlite3.h>
#include <stdint.h>

typedef struct chat_sqlite_ckpt_t chat_sqlite_ckpt_t;

//  What a writer's checkpoints did so far
typedef struct {
    uint64_t asked;                     //  Checkpoints asked of the checkpointer
    uint64_t rounds;                    //  PASSIVE checkpoints it ran
    uint64_t tails;                     //  Tails the writer copied itself
    uint64_t restarts;                  //  Times the WAL started over
    int max_pages;                      //  Largest WAL seen after a commit
} chat_sqlite_ckpt_stats_t;

//  Take over the checkpoints of the writer connection db, on the database
//  file path: SQLite's automatic checkpoint is replaced by a WAL hook that
//  asks a checkpointer (its own thread and connection, opened on the VFS
//  vfs, NULL for the default, with the given synchronous pragma, e.g.
//  "PRAGMA synchronous = FULL") once the WAL holds pages pages. The
//  checkpointer starts the first time it is needed; if it cannot start,
//  the writer checkpoints inline, as SQLite would.
chat_sqlite_ckpt_t *chat_sqlite_ckpt_new (sqlite3 *db, const char *path, const char *vfs,
                                          const char *synchronous, int pages);

//  Stop the checkpointer (after the round it is in) and give the writer
//  back its own automatic checkpoints. Call before closing db.
void chat_sqlite_ckpt_destroy (chat_sqlite_ckpt_t **self_p);

//  What it did so far (for tests and measurements)
chat_sqlite_ckpt_stats_t chat_sqlite_ckpt_stats (chat_sqlite_ckpt_t *self);

#endif
