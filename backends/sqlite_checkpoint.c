/*  =========================================================================
    sqlite_checkpoint.c - the SQLite backend's checkpoints, off the commit
    path

    In WAL mode a commit appends the pages it changed to the -wal file. A
    checkpoint copies them back into the database file and syncs that file;
    once everything is copied, the next write transaction starts the WAL
    over from its beginning, so the file is written over in place instead
    of growing. SQLite's automatic checkpoint runs inside the COMMIT that
    passes the threshold: that commit, and every message queued behind it,
    waits for the copy and the sync of the database file (19-22 ms every
    0.7 s at 10,000 msgs/s on the benchmark VM: the p99 of the acks).
    Without checkpoints the WAL only grows, and syncing a growing file
    costs twice as much at the median (docs/benchmarks.md).

    So the backend's writer connections leave checkpoints to a checkpointer:
    a small czmq actor, started the first time it is needed, with its own
    connection to the same file. The writer's WAL hook (run by SQLite after
    each commit, with the size of the WAL) asks it for a checkpoint once the
    WAL holds the threshold. It runs PASSIVE checkpoints, which take
    neither the write lock nor a reader's lock: commits go on while it
    copies and syncs. Commits made meanwhile are copied by further rounds,
    each shorter than the one before, until a round had little left to do;
    then it answers. That last little tail the writer copies itself in its
    next WAL hook, when nothing can commit in between: then the WAL is all
    copied, and the next write transaction starts it over. If a reader
    still held an older snapshot the WAL does not start over; it stays
    above the threshold and the next commit asks again.

    The writer never waits for the checkpointer: asking is a send, and the
    answer is picked up, if it is there, by the next WAL hook. The two
    share nothing but the database file, whose locks SQLite takes.

    Used by backends/sqlite.c only.
    =========================================================================
*/

#include "sqlite_checkpoint.h"
#include <czmq.h>
#include <pthread.h>

//  A round that had at most this many frames to copy ends the rounds; the
//  writer copies what was committed during it
#define S_TAIL_FRAMES   256
//  Rounds per request at most (each one is shorter than the one before)
#define S_ROUNDS_MAX    16

//  What the checkpointer is given (copied: the writer may go first)
typedef struct {
    char *path;                         //  Database file
    char *vfs;                          //  VFS name or NULL
    char *synchronous;                  //  The writer's synchronous pragma
} s_args_t;

struct chat_sqlite_ckpt_t {
    sqlite3 *db;                        //  The writer connection (not ours)
    s_args_t args;                      //  For the checkpointer, when it starts
    int threshold;                      //  WAL pages that ask for a checkpoint
    zactor_t *checkpointer;             //  NULL until first needed
    bool asked;                         //  A request is out, not yet answered
    bool tail_due;                      //  Answered: the writer copies the tail
    bool broken;                        //  Checkpointer cannot run: checkpoint inline
    int last_pages;                     //  WAL size at the last hook
    chat_sqlite_ckpt_stats_t stats;     //  What was done
};


//  --------------------------------------------------------------------------
//  The checkpointer: its own connection; on CHECKPOINT, rounds of PASSIVE
//  checkpoints; answers with the number of rounds it ran

static int
s_checkpoint_rounds (sqlite3 *db)
{
    int rounds = 0;
    int copied_before = 0;
    while (rounds < S_ROUNDS_MAX) {
        int log = 0, copied = 0;
        int rc = sqlite3_wal_checkpoint_v2 (db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &copied);
        rounds++;
        if (rc != SQLITE_OK) {
            //  SQLITE_BUSY: another connection is checkpointing; else log
            if (rc != SQLITE_BUSY)
                zsys_warning ("sqlite checkpoint: %s", sqlite3_errmsg (db));
            break;
        }
        //  The WAL started over since the last round: begin counting again
        if (copied < copied_before)
            copied_before = 0;
        //  log is the WAL as this round found it: what it copied is what
        //  was committed since the round before began. Stop after a short
        //  round, or one that copied nothing (a reader holds older frames)
        bool done = log - copied_before <= S_TAIL_FRAMES || copied == copied_before;
        copied_before = copied;
        if (done)
            break;
    }
    return rounds;
}

static void
s_checkpointer (zsock_t *pipe, void *arg)
{
    s_args_t *args = (s_args_t *) arg;
    pthread_setname_np (pthread_self (), "sqlite-ckpt");
    zsock_signal (pipe, 0);             //  zactor_new's handshake; READY follows
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2 (args->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                              args->vfs);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec (db, args->synchronous, NULL, NULL, NULL);
    //  Its own checkpoints only: closing it must not checkpoint on its own
    if (rc == SQLITE_OK)
        rc = sqlite3_db_config (db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);

    if (rc == SQLITE_OK) {
        zstr_send (pipe, "READY");
        while (true) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            assert (term || streq (command, "CHECKPOINT"));
            zstr_free (&command);
            if (term)
                break;
            zstr_sendf (pipe, "%d", s_checkpoint_rounds (db));
        }
    }
    else {
        zsys_error ("sqlite checkpoint: cannot open %s: %s", args->path,
                    db? sqlite3_errmsg (db): sqlite3_errstr (rc));
        zstr_send (pipe, "FAILED");
    }
    sqlite3_close (db);
}


//  --------------------------------------------------------------------------
//  The writer's side

//  Start the checkpointer; on failure the writer checkpoints inline
static int
s_start (chat_sqlite_ckpt_t *self)
{
    self->checkpointer = zactor_new (s_checkpointer, &self->args);
    assert (self->checkpointer);
    char *report = zstr_recv (self->checkpointer);
    bool ready = report && streq (report, "READY");
    zstr_free (&report);
    if (!ready) {
        zactor_destroy (&self->checkpointer);
        self->broken = true;
        return -1;
    }
    return 0;
}

//  Take the checkpointer's answer if it is there
static void
s_collect (chat_sqlite_ckpt_t *self)
{
    zsock_t *pipe = zactor_sock (self->checkpointer);
    if (!(zsock_events (pipe) & ZMQ_POLLIN))
        return;
    char *rounds = zstr_recv (pipe);
    if (rounds)
        self->stats.rounds += (uint64_t) atoi (rounds);
    zstr_free (&rounds);
    self->asked = false;
    self->tail_due = true;
}

//  Copy what the WAL holds that is not copied yet, here and now
static void
s_checkpoint_inline (chat_sqlite_ckpt_t *self)
{
    int rc = sqlite3_wal_checkpoint_v2 (self->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        zsys_warning ("sqlite checkpoint: %s", sqlite3_errmsg (self->db));
    self->stats.tails++;
}

//  SQLite calls this after each commit of the writer, with the WAL's size
//  in pages (frames)
static int
s_wal_hook (void *arg, sqlite3 *db, const char *name, int pages)
{
    chat_sqlite_ckpt_t *self = (chat_sqlite_ckpt_t *) arg;
    assert (db == self->db);
    (void) db;
    (void) name;
    if (pages < self->last_pages)
        self->stats.restarts++;
    self->last_pages = pages;
    if (pages > self->stats.max_pages)
        self->stats.max_pages = pages;
    if (self->asked)
        s_collect (self);

    if (pages < self->threshold)
        self->tail_due = false;         //  Started over: nothing left to do
    else
    if (self->tail_due || self->broken) {
        self->tail_due = false;
        s_checkpoint_inline (self);
    }
    else
    if (!self->asked
    &&  (self->checkpointer || s_start (self) == 0)) {
        zstr_send (self->checkpointer, "CHECKPOINT");
        self->asked = true;
        self->stats.asked++;
    }
    else
    if (self->broken)
        s_checkpoint_inline (self);
    return SQLITE_OK;
}

chat_sqlite_ckpt_t *
chat_sqlite_ckpt_new (sqlite3 *db, const char *path, const char *vfs,
                      const char *synchronous, int pages)
{
    assert (db);
    assert (path);
    assert (synchronous);
    assert (pages > 0);
    chat_sqlite_ckpt_t *self = (chat_sqlite_ckpt_t *) zmalloc (sizeof (chat_sqlite_ckpt_t));
    assert (self);
    self->db = db;
    self->threshold = pages;
    self->args.path = strdup (path);
    self->args.vfs = vfs? strdup (vfs): NULL;
    self->args.synchronous = strdup (synchronous);
    assert (self->args.path && (self->args.vfs || !vfs) && self->args.synchronous);
    //  Replaces SQLite's automatic checkpoint, which is a WAL hook too
    sqlite3_wal_hook (db, s_wal_hook, self);
    return self;
}

void
chat_sqlite_ckpt_destroy (chat_sqlite_ckpt_t **self_p)
{
    assert (self_p);
    chat_sqlite_ckpt_t *self = *self_p;
    if (self) {
        sqlite3_wal_autocheckpoint (self->db, self->threshold);
        zactor_destroy (&self->checkpointer);
        free (self->args.path);
        free (self->args.vfs);
        free (self->args.synchronous);
        free (self);
        *self_p = NULL;
    }
}

chat_sqlite_ckpt_stats_t
chat_sqlite_ckpt_stats (chat_sqlite_ckpt_t *self)
{
    assert (self);
    return self->stats;
}
