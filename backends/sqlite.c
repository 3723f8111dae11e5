/*  =========================================================================
    sqlite.c - the SQLite storage backend (include/chat_backend.h)

    Owns one SQLite connection per handle: the schema and its migrations,
    and one prepared statement per query, made once at open and reused.
    Called by persistence (messages, group commit) and auth (users,
    sessions), each on its own handle of the same file; WAL mode and a busy
    timeout let them work side by side. Talks to no actor.

    Time is stored as INTEGER milliseconds since the epoch (created_ms,
    expires_ms): exact, compact, compared and ordered as numbers, and
    formatted into RFC 3339 only at the edge (chat_timestamp_format).

    Write path. message_store_batch runs the prepared INSERT once per
    message (in-process, there is no round trip to save). Each
    conversation's two rows get their newest id once per transaction, not
    once per message: s_touch_add notes (pair, id) and s_touches_flush
    upserts each pair once, before the commit and before any statement of
    the open transaction reads conversations (seventeenth session in
    docs/benchmarks.md: at window 8 a conversation has about 8 messages a
    batch). What a batch costs is mostly the kernel: every commit
    writes each B-tree page it dirtied into the WAL (synchronous = FULL:
    and fdatasyncs it). A message appends to the table (the last page),
    and rewrites its two conversation rows in place (small rows, dense
    pages). Its client_id goes into memory and, with many others, later
    into the client_ids table, a sender's leaf at a time (migration 3,
    sqlite_client_ids.c: as a UNIQUE index it was one more dirty leaf a
    message). Its (sender, receiver, id) goes the same way into the
    message_pairs table (migration 4, sqlite_pairs.c: as the pair index of
    private_messages it was one more dirty leaf a message). Until
    migration 2 it also went into four per-user indexes (partner, sent,
    received, unread), each with a hot leaf per user, and is_read was a
    column; now the conversations table holds the read marker and the
    partner list that sync and conversations walk.
    Measured with chat-bench (1,000 users, window 8, 10 s, fresh database,
    synchronous = FULL, the 2-core VM), see docs/benchmarks.md:

                                  schema 1          schema 2 (now)
        acks/s                    28,900-31,200     33,100-43,900
        chatd CPU per message     44-48 us          35-38 us
        bytes written per message 4.5-4.8 KB        2.0-2.3 KB

    (schema 1 and 2 runs interleaved, three each, then three more of
    schema 2 on a quiet VM: the 41,700-43,900.)

    With the defaults (2 MB page cache, checkpoint every 1000 pages) a
    150-message batch also re-read pages with pread and checkpointed almost
    every commit, copying the same hot leaves into the database file again
    and again. Now: 64 MiB cache, 256 MiB mmap (since raised to the whole
    file, for history, below), checkpoint every 16384
    pages (64 MiB of WAL; by a thread of its own, off the commit path,
    sqlite_checkpoint.c), WAL cut back to 96 MiB. Measured with the real
    server and chat-bench (200 users, window 4, 8 s, synchronous = FULL,
    the 2-core VM loaded, load 5-7), on schema 1:

                                  defaults (before)  tuned (now)
        acks/s                    4,500-7,700        8,200-11,500
        bytes written per message 8.3-13.8 KB        7.3-9.3 KB
        persistence thread CPU    35-55 us/msg       28-38 us/msg
        chatd CPU                 86-117 us/msg      70-93 us/msg
        messages per batch        110-265            130-200

    (10 and 11 runs; the ranges are mostly the other load on the VM.)
    What remained was mostly pwrite of WAL frames (two calls per page) and
    the fdatasync per commit. With synchronous = FULL the database is now
    opened on chatd's VFS (sqlite_vfs.c), which gathers the frames of a
    commit and writes them with one call per 31 frames; docs/benchmarks.md
    has the before and after.

    Read path. Every query is bounded by what it returns, not by the size
    of the table. "A direction" below is one direction of a conversation:
    its ids in message_pairs up to through_id, then those in memory
    (sqlite_pairs.c), read in one transaction. History is two backward
    ranges of directions; sync merges the directions of the conversations
    with a message above after_id (last_id), one probe per message taken
    (s_sync); conversations is the user's rows, with a probe for each last
    message and a count of what is above the read marker; mark_read reads
    and moves one marker.

    What a history page costs from disk. The table is in id order, in
    which conversations are interleaved: a page of 50 messages joins to
    about 50 table pages. Read by pread, each is one random read when it
    is not in memory (10,000,000 messages, page cache dropped: p99 2.7-4.0
    ms a page). Read through the memory map, a miss is a page fault, and
    the kernel reads the file around it (the device's read_ahead_kb):
    one fault brings the neighbouring pages, which hold the same
    conversation's next messages. So the map covers the whole file, up to
    SQLite's own limit (2 GiB in Debian's build; past it pread again): p99 0.5-0.8
    ms from a cold start with the benchmark VM's 8 MiB read-ahead, 1.7 ms
    with 128 KiB, the same throughput (docs/benchmarks.md, ninth session).
    A pair index that carries the whole message, so that a page is read
    from a few index leaves, was measured too: 0.5-0.6 ms cold (with the
    8 MiB read-ahead; reading a few leaves, it depends little on it), but
    20 % fewer messages a second (larger entries, a leaf split every 25
    messages of a conversation), so it was not kept. The
    mapped pages count in VmRSS: they are the kernel's page cache of the
    file, shared and given back under memory pressure, not chatd's heap.
    =========================================================================
*/

#include "chat_backend.h"
#include "chat_wire.h"
#include "sqlite_vfs.h"
#include "sqlite_checkpoint.h"
#include "sqlite_client_ids.h"
#include "sqlite_pairs.h"
#include "sqlite_pcache.h"
#include <czmq.h>
#include <limits.h>
#include <sqlite3.h>

//  How long a statement waits for another handle's write lock
#define S_BUSY_TIMEOUT_MS   5000

//  Write path tuning, per handle (see the measurements above)
#define S_CACHE_SIZE            "-65536"        //  KiB: 64 MiB of page cache
#define S_MMAP_SIZE             "1099511627776" //  Memory map: the whole file (1
                                                //  TiB asked; SQLite cuts it to
                                                //  its SQLITE_MAX_MMAP_SIZE,
                                                //  2,147,418,112 in Debian's
                                                //  build; see "What a history
                                                //  page costs" above)
#define S_WAL_CHECKPOINT        16384           //  Pages: 64 MiB of WAL
#define S_CLIENT_IDS_MERGE_AT   65536           //  client_ids in memory before
                                                //  a merge (sqlite_client_ids.c)
#define S_PAIRS_MERGE_AT        65536           //  Pair ids in memory before a
                                                //  merge (sqlite_pairs.c)
#define S_JOURNAL_SIZE_LIMIT    "100663296"     //  WAL kept at most 96 MiB: the
                                                //  threshold and the commits made
                                                //  while it is copied, so that a
                                                //  WAL that started over is
                                                //  written over, not regrown

//  --------------------------------------------------------------------------
//  Migrations, applied in order at open inside one write transaction. Each
//  applied version is a row of schema_migrations. Never edit a migration
//  that has shipped: add the next one.

static const char *s_migrations [] = {
    //  1: everything
    //  users: nickname as registered; nickname_key is lower (nickname), so
    //  that uniqueness and lookups are without regard to case.
    "CREATE TABLE users ("
    "    id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "    nickname TEXT NOT NULL,"
    //  The UNIQUE index on nickname_key serves user_create's conflict
    //  check, user_find (nickname_key = lower (?)) and users_list's order.
    "    nickname_key TEXT NOT NULL UNIQUE,"
    "    password_hash TEXT NOT NULL,"
    "    created_ms INTEGER NOT NULL"
    ");"
    //  sessions: only the hex hash of the token is stored.
    //  The primary key serves session_create's conflict and session_delete.
    "CREATE TABLE sessions ("
    "    token_hash TEXT PRIMARY KEY,"
    "    user_id INTEGER NOT NULL REFERENCES users (id),"
    "    created_ms INTEGER NOT NULL,"
    "    expires_ms INTEGER NOT NULL"
    ");"
    //  sessions_live (expires_ms > now) and sessions_expire (expires_ms <= now)
    "CREATE INDEX sessions_expires ON sessions (expires_ms);"
    //  private_messages: the seed design, with created_ms (INTEGER ms since
    //  the epoch, see above) instead of created_at, and the sender's
    //  optional client_id. id is AUTOINCREMENT so that an id is never used
    //  twice: a later message always has a larger id. The foreign keys are
    //  enforced (PRAGMA foreign_keys = ON) and are what message_store's
    //  recipient check relies on.
    "CREATE TABLE private_messages ("
    "    id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "    sender_id INTEGER NOT NULL,"
    "    receiver_id INTEGER NOT NULL,"
    "    content TEXT NOT NULL,"
    "    created_ms INTEGER NOT NULL,"
    "    is_read BOOLEAN NOT NULL DEFAULT 0,"
    "    client_id TEXT,"
    "    FOREIGN KEY (sender_id) REFERENCES users (id),"
    "    FOREIGN KEY (receiver_id) REFERENCES users (id)"
    ");"
    //  message_store: dedupe on the sender's client_id (the UNIQUE conflict
    //  of the insert, then the look-up of the first message)
    "CREATE UNIQUE INDEX private_messages_client"
    "    ON private_messages (sender_id, client_id) WHERE client_id IS NOT NULL;"
    //  conversations: the skip scan over the partners the user wrote to
    //  (next receiver_id after the last one: one probe per partner);
    //  history: each direction of a conversation, newest first below
    //  before_id, LIMIT n+1 (a covering range scan bounded by the page);
    //  conversations: the latest message of each direction (max (id) for
    //  one sender/receiver pair is one probe)
    "CREATE INDEX private_messages_pair"
    "    ON private_messages (sender_id, receiver_id, id);"
    //  conversations: the skip scan over the partners who wrote to the
    //  user. Same shape as the pair index, so SQLite may also pick it for
    //  history's and the latest message's probes; either costs the same.
    "CREATE INDEX private_messages_partner"
    "    ON private_messages (receiver_id, sender_id, id);"
    //  sync: messages sent by the user above after_id, ascending, LIMIT n+1
    "CREATE INDEX private_messages_sent"
    "    ON private_messages (sender_id, id);"
    //  sync: messages received by the user above after_id, ascending, LIMIT n+1
    "CREATE INDEX private_messages_received"
    "    ON private_messages (receiver_id, id);"
    //  conversations: unread count per partner; mark_read: the rows to
    //  update. Only unread messages are in it, so both cost what is unread.
    "CREATE INDEX private_messages_unread"
    "    ON private_messages (receiver_id, sender_id) WHERE is_read = 0;"
    //  The seed's index on created_at is not kept: no query filters or
    //  orders by time. Every page, catch-up and "latest" is by id, which
    //  grows with time, and an extra index would only slow message_store.
    ,
    //  2: one row per conversation and side instead of four per-user
    //  indexes. Each of partner, sent, received and unread had one hot
    //  leaf per user, so a batch of messages dirtied (and wrote into the
    //  WAL) a page per user and index. A conversation row is updated in
    //  place: about 200 fit in a page, so a batch dirties a few pages.
    //  conversations: the user's partners (conversations, sync), the
    //  newest message either way (last_id: conversations' order and last
    //  message, sync's skip of quiet partners) and the read marker: the
    //  messages from partner to user with id <= read_up_to are read, the
    //  later ones are not. Read state was always an id prefix (mark_read
    //  only ever marked ids up to a bound, among those that existed), so
    //  the marker is exact and is_read is no longer stored per message.
    //  No foreign keys: the message insert that makes a row checked both.
    "CREATE TABLE conversations ("
    "    user_id INTEGER NOT NULL,"
    "    partner_id INTEGER NOT NULL,"
    "    last_id INTEGER NOT NULL,"
    "    read_up_to INTEGER NOT NULL DEFAULT 0,"
    "    PRIMARY KEY (user_id, partner_id)"
    ") WITHOUT ROWID;"
    //  Both sides of every pair that has messages; a conversation with
    //  oneself is one row
    "INSERT INTO conversations (user_id, partner_id, last_id, read_up_to)"
    "    SELECT user_id, partner_id, max (id), max (read_id) FROM ("
    "        SELECT sender_id AS user_id, receiver_id AS partner_id, id, 0 AS read_id"
    "          FROM private_messages"
    "        UNION ALL"
    "        SELECT receiver_id, sender_id, id, CASE WHEN is_read THEN id ELSE 0 END"
    "          FROM private_messages)"
    "    GROUP BY user_id, partner_id;"
    //  The pair index serves both directions of history, the partners'
    //  latest ids and unread counts; the client index dedupe (until
    //  migration 3). The rest go.
    "DROP INDEX private_messages_partner;"
    "DROP INDEX private_messages_sent;"
    "DROP INDEX private_messages_received;"
    "DROP INDEX private_messages_unread;"
    "ALTER TABLE private_messages DROP COLUMN is_read;"
    ,
    //  3: the client_ids a sender used, in a table of their own that is
    //  filled in sorted chunks (sqlite_client_ids.c), instead of a UNIQUE
    //  index of private_messages that took an entry (and dirtied the
    //  sender's leaf) with every message. Every message with an id up to
    //  client_ids_merged.through_id has its entry in client_ids; the later
    //  ones are read back from their rows.
    "CREATE TABLE client_ids ("
    "    sender_id INTEGER NOT NULL,"
    "    client_id TEXT NOT NULL,"
    "    message_id INTEGER NOT NULL,"
    "    PRIMARY KEY (sender_id, client_id)"
    ") WITHOUT ROWID;"
    "INSERT INTO client_ids (sender_id, client_id, message_id)"
    "    SELECT sender_id, client_id, id FROM private_messages WHERE client_id IS NOT NULL;"
    "CREATE TABLE client_ids_merged (through_id INTEGER NOT NULL);"
    "INSERT INTO client_ids_merged SELECT coalesce (max (id), 0) FROM private_messages;"
    "DROP INDEX private_messages_client;"
    ,
    //  4: the ids of each direction of a conversation, in a table of their
    //  own that is filled in sorted chunks (sqlite_pairs.c), instead of the
    //  pair index, which took an entry (and dirtied the pair's leaf) with
    //  every message. Every message with an id up to
    //  message_pairs_merged.through_id has its entry in message_pairs; the
    //  later ones are read back from their rows.
    "CREATE TABLE message_pairs ("
    "    sender_id INTEGER NOT NULL,"
    "    receiver_id INTEGER NOT NULL,"
    "    id INTEGER NOT NULL,"
    "    PRIMARY KEY (sender_id, receiver_id, id)"
    ") WITHOUT ROWID;"
    "INSERT INTO message_pairs (sender_id, receiver_id, id)"
    "    SELECT sender_id, receiver_id, id FROM private_messages ORDER BY 1, 2, 3;"
    "CREATE TABLE message_pairs_merged (through_id INTEGER NOT NULL);"
    "INSERT INTO message_pairs_merged SELECT coalesce (max (id), 0) FROM private_messages;"
    "DROP INDEX private_messages_pair;"
    ,
    NULL
};

//  --------------------------------------------------------------------------
//  Prepared statements, one per query

typedef enum {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_PING,
    S_USER_CREATE,
    S_USER_FIND,
    S_USER_GET,
    S_USERS_LIST,
    S_SESSION_CREATE,
    S_SESSION_DELETE,
    S_SESSIONS_LIVE,
    S_SESSIONS_EXPIRE,
    S_MESSAGE_INSERT,
    S_CONVERSATION_TOUCH,
    S_MESSAGE_FIRST,
    S_PAIR_BEFORE,
    S_BEGIN_READ,
    S_SYNC_PARTNERS,
    S_SYNC_NEXT,
    S_MESSAGE_BY_ID,
    S_READ_STATE,
    S_READ_UP_TO,
    S_CONVERSATIONS,
    S_STMT_COUNT
} s_stmt_id_t;

//  Whether message m is read: its id is at most the read marker of r, the
//  recipient's side of the conversation, which S_READ_JOIN joins
#define S_IS_READ       "m.id <= coalesce (r.read_up_to, 0)"
#define S_READ_JOIN \
    "  LEFT JOIN conversations AS r ON r.user_id = m.receiver_id AND r.partner_id = m.sender_id"

//  The columns of a message row, as s_message_from_row reads them, and the
//  tables they come from: m the message, s its sender, r as above
#define S_MESSAGE_COLUMNS \
    "m.id, m.sender_id, m.receiver_id, s.nickname, m.content, m.created_ms, " \
    S_IS_READ ", m.client_id"
#define S_MESSAGE_JOINS \
    "  JOIN users AS s ON s.id = m.sender_id" \
    S_READ_JOIN

static const char *s_sql [S_STMT_COUNT] = {
    //  IMMEDIATE takes the write lock now (waiting up to the busy timeout),
    //  so a batch never fails half way to upgrade a read lock
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_PING] = "SELECT max (version) FROM schema_migrations",

    [S_USER_CREATE] =
        "INSERT INTO users (nickname, nickname_key, password_hash, created_ms)"
        " VALUES (?1, lower (?1), ?2, ?3)",
    [S_USER_FIND] =
        "SELECT id, nickname, password_hash FROM users WHERE nickname_key = lower (?1)",
    [S_USER_GET] =
        "SELECT id, nickname, password_hash FROM users WHERE id = ?1",
    [S_USERS_LIST] =
        "SELECT id, nickname, password_hash FROM users ORDER BY nickname_key, nickname",

    [S_SESSION_CREATE] =
        "INSERT INTO sessions (token_hash, user_id, created_ms, expires_ms)"
        " VALUES (?1, ?2, ?3, ?4)",
    [S_SESSION_DELETE] =
        "DELETE FROM sessions WHERE token_hash = ?1",
    [S_SESSIONS_LIVE] =
        "SELECT t.token_hash, t.user_id, u.nickname, t.expires_ms"
        "  FROM sessions AS t JOIN users AS u ON u.id = t.user_id"
        " WHERE t.expires_ms > ?1 ORDER BY t.expires_ms",
    [S_SESSIONS_EXPIRE] =
        "DELETE FROM sessions WHERE expires_ms <= ?1"
        " RETURNING token_hash, user_id,"
        "  (SELECT nickname FROM users WHERE users.id = sessions.user_id), expires_ms",

    [S_MESSAGE_INSERT] =
        "INSERT INTO private_messages (sender_id, receiver_id, content, created_ms, client_id)"
        " VALUES (?1, ?2, ?3, ?4, ?5)",
    //  ?1 sender, ?2 recipient, ?3 the new message's id: both sides of the
    //  conversation exist and have it as their newest (ids only grow). With
    //  oneself the second row is the first one again, updated.
    [S_CONVERSATION_TOUCH] =
        "INSERT INTO conversations (user_id, partner_id, last_id)"
        " VALUES (?1, ?2, ?3), (?2, ?1, ?3)"
        " ON CONFLICT DO UPDATE SET last_id = excluded.last_id",
    [S_MESSAGE_FIRST] =
        "SELECT m.id, m.receiver_id, m.content, m.created_ms, " S_IS_READ
        "  FROM private_messages AS m"
        S_READ_JOIN
        " WHERE m.id = ?1",

    //  ?1 sender, ?2 receiver, ?3 bound, ?4 n: the newest n ids of that
    //  direction in message_pairs below the bound, newest first (a range
    //  of the table bounded by the page)
    [S_PAIR_BEFORE] =
        "SELECT id FROM message_pairs"
        " WHERE sender_id = ?1 AND receiver_id = ?2 AND id < ?3 ORDER BY id DESC LIMIT ?4",
    //  A read of several statements (s_read_begin): one snapshot
    [S_BEGIN_READ] = "BEGIN",
    //  ?1 user, ?2 after_id: the partners with a message above after_id
    [S_SYNC_PARTNERS] =
        "SELECT partner_id FROM conversations WHERE user_id = ?1 AND last_id > ?2",
    //  ?1 sender, ?2 recipient, ?3 bound, ?4 through_id: the next id of
    //  that direction in message_pairs above the bound, one probe
    [S_SYNC_NEXT] =
        "SELECT id FROM message_pairs"
        " WHERE sender_id = ?1 AND receiver_id = ?2 AND id > ?3 AND id <= ?4"
        " ORDER BY id LIMIT 1",
    //  ?1 message id
    [S_MESSAGE_BY_ID] =
        "SELECT " S_MESSAGE_COLUMNS
        "  FROM private_messages AS m"
        S_MESSAGE_JOINS
        " WHERE m.id = ?1",
    //  ?1 reader, ?2 partner, ?3 up_to_id, ?4 through_id: the reader's
    //  marker, and of the partner's messages to the reader in
    //  message_pairs the newest and how many are above the marker up to
    //  up_to_id (s_mark_read adds those in memory). No row: the two never
    //  exchanged a message.
    [S_READ_STATE] =
        "SELECT c.read_up_to,"
        "       coalesce ((SELECT id FROM message_pairs"
        "                   WHERE sender_id = ?2 AND receiver_id = ?1 AND id <= ?4"
        "                   ORDER BY id DESC LIMIT 1), 0),"
        "       (SELECT count (*) FROM message_pairs"
        "         WHERE sender_id = ?2 AND receiver_id = ?1"
        "           AND id > c.read_up_to AND id <= min (?3, ?4))"
        "  FROM conversations AS c WHERE c.user_id = ?1 AND c.partner_id = ?2",
    //  ?1 reader, ?2 partner, ?3 the new marker
    [S_READ_UP_TO] =
        "UPDATE conversations SET read_up_to = ?3"
        " WHERE user_id = ?1 AND partner_id = ?2 AND read_up_to < ?3",
    //  ?1 user, ?2 through_id: the user's conversation rows, newest first
    //  (sorted in memory: one row per partner). Per partner the last
    //  message is one probe by id, unread a count over the range of
    //  message_pairs above the read marker (s_conversations adds those in
    //  memory): what is unread, not the whole conversation.
    [S_CONVERSATIONS] =
        "SELECT " S_MESSAGE_COLUMNS ", c.partner_id, p.nickname,"
        "       (SELECT count (*) FROM message_pairs"
        "         WHERE sender_id = c.partner_id AND receiver_id = ?1"
        "           AND id > c.read_up_to AND id <= ?2),"
        "       c.read_up_to"
        "  FROM conversations AS c"
        "  JOIN private_messages AS m ON m.id = c.last_id"
        S_MESSAGE_JOINS
        "  JOIN users AS p ON p.id = c.partner_id"
        " WHERE c.user_id = ?1"
        " ORDER BY c.last_id DESC",
};

//  Number of columns S_MESSAGE_COLUMNS selects
#define S_MESSAGE_NCOLUMNS  8

//  --------------------------------------------------------------------------
//  A conversation the open transaction stored a message in: its two rows
//  get the newest such id at the next s_touches_flush. Until then only
//  last_id and a new row wait; read_up_to, which message rows join for
//  is_read (a duplicate's lookup in the same transaction, say), is not
//  what a touch changes, and a missing row reads as 0 as a new one would.

typedef struct {
    int64_t low;                        //  The two users, low <= high
    int64_t high;
    int64_t id;                         //  A message between them
} s_touch_t;


//  --------------------------------------------------------------------------
//  Structure of our handle

struct chat_backend_t {
    sqlite3 *db;                        //  The connection (one thread only)
    char *path;                         //  Database file, for log lines
    sqlite3_stmt *stmt [S_STMT_COUNT];  //  Prepared at open, reset after use
    char **held;                        //  Duplicates' stored contents, freed
                                        //  at the next batch (or close)
    size_t held_count;                  //  Entries of held in use
    size_t held_size;                   //  Entries allocated
    chat_sqlite_ckpt_t *checkpoints;    //  Checkpoints off the commit path
    chat_sqlite_ids_t *client_ids;      //  The senders' client_ids, made at
                                        //  the first begin (only the handle
                                        //  that stores messages has them)
    chat_sqlite_pairs_t *pairs;         //  The directions' newest ids, made
                                        //  at the first transaction that
                                        //  stores or reads messages
    s_touch_t *touches;                 //  One a message the open transaction
                                        //  stored, not yet in conversations
    size_t touch_count;                 //  Entries of touches in use
    size_t touch_size;                  //  Entries allocated
};


//  --------------------------------------------------------------------------
//  Log an SQLite failure and answer CHAT_DB_UNAVAILABLE

static int
s_fail (chat_backend_t *self, const char *what)
{
    zsys_error ("sqlite %s: %s: %s", self->path, what, sqlite3_errmsg (self->db));
    return CHAT_DB_UNAVAILABLE;
}

//  Reset a statement after use so that it holds no lock and no pointer

static void
s_done (sqlite3_stmt *stmt)
{
    sqlite3_reset (stmt);
    sqlite3_clear_bindings (stmt);
}

//  Copy a text column into a fixed buffer

static void
s_copy_text (char *dest, size_t size, sqlite3_stmt *stmt, int column)
{
    const char *text = (const char *) sqlite3_column_text (stmt, column);
    snprintf (dest, size, "%s", text? text: "");
}

static void
s_user_from_row (sqlite3_stmt *stmt, chat_user_t *user)
{
    memset (user, 0, sizeof (chat_user_t));
    user->id = sqlite3_column_int64 (stmt, 0);
    s_copy_text (user->nickname, sizeof user->nickname, stmt, 1);
    s_copy_text (user->password_hash, sizeof user->password_hash, stmt, 2);
}

//  Read S_MESSAGE_COLUMNS; the pointers are the statement's until it moves on

static void
s_message_from_row (sqlite3_stmt *stmt, chat_message_t *message)
{
    message->id = sqlite3_column_int64 (stmt, 0);
    message->from_user_id = sqlite3_column_int64 (stmt, 1);
    message->to_user_id = sqlite3_column_int64 (stmt, 2);
    message->nickname = (const char *) sqlite3_column_text (stmt, 3);
    message->content = (const char *) sqlite3_column_text (stmt, 4);
    message->content_len = (size_t) sqlite3_column_bytes (stmt, 4);
    message->created_ms = sqlite3_column_int64 (stmt, 5);
    message->is_read = sqlite3_column_int (stmt, 6) != 0;
    message->client_id = (const char *) sqlite3_column_text (stmt, 7);
}

//  Run one statement with no result rows outside the prepared set (open only)

static int
s_exec (chat_backend_t *self, const char *sql)
{
    return sqlite3_exec (self->db, sql, NULL, NULL, NULL);
}


//  Free the copies of duplicates' contents handed out by the last batch

static void
s_held_free (chat_backend_t *self)
{
    for (size_t i = 0; i < self->held_count; i++)
        free (self->held [i]);
    self->held_count = 0;
}

//  A copy of len bytes (NUL-terminated), kept until the next batch

static char *
s_held_copy (chat_backend_t *self, const char *text, size_t len)
{
    if (self->held_count == self->held_size) {
        self->held_size = self->held_size? self->held_size * 2: 8;
        self->held = (char **) realloc (self->held, self->held_size * sizeof (char *));
        assert (self->held);
    }
    char *copy = (char *) malloc (len + 1);
    assert (copy);
    if (len)
        memcpy (copy, text, len);
    copy [len] = 0;
    self->held [self->held_count++] = copy;
    return copy;
}


//  --------------------------------------------------------------------------
//  Apply the migrations this database has not had yet

static int
s_migrate (chat_backend_t *self, char *error, size_t size)
{
    sqlite3_stmt *stmt = NULL;
    int known = 0;
    while (s_migrations [known])
        known++;

    if (s_exec (self, "BEGIN IMMEDIATE") != SQLITE_OK)
        goto failed;
    if (s_exec (self, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version INTEGER PRIMARY KEY,"
                      " applied_at TEXT NOT NULL)") != SQLITE_OK)
        goto failed;
    if (sqlite3_prepare_v2 (self->db, "SELECT coalesce (max (version), 0) FROM schema_migrations",
                            -1, &stmt, NULL) != SQLITE_OK
    ||  sqlite3_step (stmt) != SQLITE_ROW)
        goto failed;
    int version = sqlite3_column_int (stmt, 0);
    sqlite3_finalize (stmt);
    stmt = NULL;
    if (version > known) {
        snprintf (error, size, "database %s has schema version %d, newer than this chatd (%d)",
                  self->path, version, known);
        s_exec (self, "ROLLBACK");
        return -1;
    }
    if (sqlite3_prepare_v2 (self->db,
            "INSERT INTO schema_migrations (version, applied_at)"
            " VALUES (?1, strftime ('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            -1, &stmt, NULL) != SQLITE_OK)
        goto failed;
    for (; version < known; version++) {
        if (s_exec (self, s_migrations [version]) != SQLITE_OK)
            goto failed;
        sqlite3_bind_int (stmt, 1, version + 1);
        if (sqlite3_step (stmt) != SQLITE_DONE)
            goto failed;
        sqlite3_reset (stmt);
        zsys_info ("sqlite %s: applied migration %d", self->path, version + 1);
    }
    sqlite3_finalize (stmt);
    stmt = NULL;
    if (s_exec (self, "COMMIT") != SQLITE_OK)
        goto failed;
    return 0;

failed:
    snprintf (error, size, "cannot migrate database %s: %s", self->path, sqlite3_errmsg (self->db));
    sqlite3_finalize (stmt);
    if (!sqlite3_get_autocommit (self->db))
        s_exec (self, "ROLLBACK");
    return -1;
}


//  --------------------------------------------------------------------------
//  Close a handle; rolls back a transaction left open

static void
s_close (chat_backend_t **self_p)
{
    assert (self_p);
    chat_backend_t *self = *self_p;
    if (self) {
        chat_sqlite_ckpt_destroy (&self->checkpoints);
        chat_sqlite_ids_destroy (&self->client_ids);
        chat_sqlite_pairs_destroy (&self->pairs);
        for (int i = 0; i < S_STMT_COUNT; i++)
            sqlite3_finalize (self->stmt [i]);
        if (self->db && sqlite3_close (self->db) != SQLITE_OK)
            zsys_error ("sqlite %s: close: %s", self->path, sqlite3_errmsg (self->db));
        s_held_free (self);
        free (self->held);
        free (self->touches);
        free (self->path);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Open a handle on cfg->sqlite_path, creating and migrating the database

static chat_backend_t *
s_open (const chat_config_t *cfg, char *error, size_t size)
{
    assert (cfg);
    assert (error);
    const char *synchronous = NULL;
    if (cfg->sqlite_synchronous [0] == 0 || streq (cfg->sqlite_synchronous, "full"))
        synchronous = "PRAGMA synchronous = FULL";
    else
    if (streq (cfg->sqlite_synchronous, "normal"))
        synchronous = "PRAGMA synchronous = NORMAL";
    else {
        snprintf (error, size, "[sqlite] synchronous: expected full or normal, not '%s'",
                  cfg->sqlite_synchronous);
        return NULL;
    }
    if (cfg->sqlite_path [0] == 0) {
        snprintf (error, size, "[sqlite] path: no database file given");
        return NULL;
    }
    chat_backend_t *self = (chat_backend_t *) zmalloc (sizeof (chat_backend_t));
    assert (self);
    self->path = strdup (cfg->sqlite_path);
    assert (self->path);

    //  SQLite's global settings, before it starts (sqlite_pcache.c); if it
    //  had started already, it runs on as it was
    chat_sqlite_setup ();

    //  With synchronous = FULL every commit syncs its WAL frames: then the
    //  frames can be written in one go (sqlite_vfs.c). NORMAL publishes a
    //  commit unsynced, so it stays on the default VFS.
    const char *vfs = NULL;
    if (streq (synchronous, "PRAGMA synchronous = FULL") && chat_sqlite_vfs_register () == 0)
        vfs = CHAT_SQLITE_VFS;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_open_v2 (self->path, &self->db,
                              SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                              vfs);
    if (rc != SQLITE_OK)
        goto cannot_open;
    sqlite3_busy_timeout (self->db, S_BUSY_TIMEOUT_MS);

    //  journal_mode answers the mode it is in now; WAL lets readers work
    //  while a batch commits
    if (sqlite3_prepare_v2 (self->db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL) != SQLITE_OK
    ||  sqlite3_step (stmt) != SQLITE_ROW)
        goto cannot_open;
    const char *mode = (const char *) sqlite3_column_text (stmt, 0);
    if (!mode || strcmp (mode, "wal") != 0)
        zsys_warning ("sqlite %s: journal mode is %s, not wal", self->path, mode? mode: "unknown");
    sqlite3_finalize (stmt);
    stmt = NULL;

    //  The queries' temporary b-trees (UNION, window, ORDER BY of a page)
    //  hold a page of rows at most: in memory, not in a temporary file
    //  The write path (measured, see the top of this file): a page cache
    //  that holds the hot index leaves, reads through a memory map instead
    //  of a pread per page, and a checkpoint every 64 MiB of WAL instead of
    //  every 4 MiB (below), so that a leaf rewritten by many commits is
    //  copied into the database file once
    if (s_exec (self, synchronous) != SQLITE_OK
    ||  s_exec (self, "PRAGMA cache_size = " S_CACHE_SIZE) != SQLITE_OK
    ||  s_exec (self, "PRAGMA mmap_size = " S_MMAP_SIZE) != SQLITE_OK
    ||  s_exec (self, "PRAGMA journal_size_limit = " S_JOURNAL_SIZE_LIMIT) != SQLITE_OK
    ||  s_exec (self, "PRAGMA temp_store = MEMORY") != SQLITE_OK
    ||  s_exec (self, "PRAGMA foreign_keys = ON") != SQLITE_OK)
        goto cannot_open;
    //  The recipient check depends on foreign keys: make sure they are on
    if (sqlite3_prepare_v2 (self->db, "PRAGMA foreign_keys", -1, &stmt, NULL) != SQLITE_OK
    ||  sqlite3_step (stmt) != SQLITE_ROW)
        goto cannot_open;
    if (sqlite3_column_int (stmt, 0) != 1) {
        snprintf (error, size, "cannot open database %s: this SQLite does not enforce foreign keys",
                  self->path);
        goto failed;
    }
    sqlite3_finalize (stmt);
    stmt = NULL;

    //  Checkpoints every 64 MiB of WAL, by a thread of their own (see
    //  sqlite_checkpoint.c); SQLite's own run inside the commit
    self->checkpoints = chat_sqlite_ckpt_new (self->db, self->path, vfs, synchronous,
                                              S_WAL_CHECKPOINT);

    if (s_migrate (self, error, size))
        goto failed;

    for (int i = 0; i < S_STMT_COUNT; i++)
        if (sqlite3_prepare_v3 (self->db, s_sql [i], -1, SQLITE_PREPARE_PERSISTENT,
                                &self->stmt [i], NULL) != SQLITE_OK) {
            snprintf (error, size, "cannot prepare statement %d on %s: %s",
                      i, self->path, sqlite3_errmsg (self->db));
            goto failed;
        }
    return self;

cannot_open:
    snprintf (error, size, "cannot open database %s: %s", self->path,
              self->db? sqlite3_errmsg (self->db): sqlite3_errstr (rc));
failed:
    sqlite3_finalize (stmt);
    s_close (&self);
    return NULL;
}


//  --------------------------------------------------------------------------
//  CHAT_DB_OK if the database file answers

static int
s_ping (chat_backend_t *self)
{
    assert (self);
    sqlite3_stmt *stmt = self->stmt [S_PING];
    int rc = sqlite3_step (stmt) == SQLITE_ROW? CHAT_DB_OK: s_fail (self, "ping");
    s_done (stmt);
    return rc;
}


//  --------------------------------------------------------------------------
//  Users

static int
s_user_create (chat_backend_t *self, const char *nickname, const char *password_hash,
               int64_t now_ms, int64_t *user_id)
{
    assert (self);
    assert (nickname);
    assert (password_hash);
    sqlite3_stmt *stmt = self->stmt [S_USER_CREATE];
    sqlite3_bind_text (stmt, 1, nickname, -1, SQLITE_STATIC);
    sqlite3_bind_text (stmt, 2, password_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (stmt, 3, now_ms);
    int rc = sqlite3_step (stmt);
    if (rc == SQLITE_DONE) {
        if (user_id)
            *user_id = sqlite3_last_insert_rowid (self->db);
        rc = CHAT_DB_OK;
    }
    else
    if (sqlite3_extended_errcode (self->db) == SQLITE_CONSTRAINT_UNIQUE)
        rc = CHAT_DB_CONFLICT;
    else
        rc = s_fail (self, "user_create");
    s_done (stmt);
    return rc;
}

//  Run a user look-up that answers at most one row

static int
s_user_one (chat_backend_t *self, sqlite3_stmt *stmt, chat_user_t *user, const char *what)
{
    int rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        if (user)
            s_user_from_row (stmt, user);
        rc = CHAT_DB_OK;
    }
    else
    if (rc == SQLITE_DONE)
        rc = CHAT_DB_NOT_FOUND;
    else
        rc = s_fail (self, what);
    s_done (stmt);
    return rc;
}

static int
s_user_find (chat_backend_t *self, const char *nickname, chat_user_t *user)
{
    assert (self);
    assert (nickname);
    sqlite3_stmt *stmt = self->stmt [S_USER_FIND];
    sqlite3_bind_text (stmt, 1, nickname, -1, SQLITE_STATIC);
    return s_user_one (self, stmt, user, "user_find");
}

static int
s_user_get (chat_backend_t *self, int64_t user_id, chat_user_t *user)
{
    assert (self);
    sqlite3_stmt *stmt = self->stmt [S_USER_GET];
    sqlite3_bind_int64 (stmt, 1, user_id);
    return s_user_one (self, stmt, user, "user_get");
}

static int
s_users_list (chat_backend_t *self, chat_user_fn *fn, void *ctx)
{
    assert (self);
    assert (fn);
    sqlite3_stmt *stmt = self->stmt [S_USERS_LIST];
    chat_user_t user;
    int rc;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        s_user_from_row (stmt, &user);
        fn (&user, ctx);
    }
    rc = rc == SQLITE_DONE? CHAT_DB_OK: s_fail (self, "users_list");
    s_done (stmt);
    return rc;
}


//  --------------------------------------------------------------------------
//  Sessions

static int
s_session_create (chat_backend_t *self, const char *token_hash, int64_t user_id,
                  int64_t now_ms, int64_t expires_ms)
{
    assert (self);
    assert (token_hash);
    sqlite3_stmt *stmt = self->stmt [S_SESSION_CREATE];
    sqlite3_bind_text (stmt, 1, token_hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64 (stmt, 2, user_id);
    sqlite3_bind_int64 (stmt, 3, now_ms);
    sqlite3_bind_int64 (stmt, 4, expires_ms);
    int rc = sqlite3_step (stmt);
    if (rc == SQLITE_DONE)
        rc = CHAT_DB_OK;
    else {
        int code = sqlite3_extended_errcode (self->db);
        if (code == SQLITE_CONSTRAINT_PRIMARYKEY || code == SQLITE_CONSTRAINT_UNIQUE)
            rc = CHAT_DB_CONFLICT;          //  That token hash exists
        else
        if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
            rc = CHAT_DB_NOT_FOUND;         //  No such user
        else
            rc = s_fail (self, "session_create");
    }
    s_done (stmt);
    return rc;
}

//  CHAT_DB_NOT_FOUND if there was no such session

static int
s_session_delete (chat_backend_t *self, const char *token_hash)
{
    assert (self);
    assert (token_hash);
    sqlite3_stmt *stmt = self->stmt [S_SESSION_DELETE];
    sqlite3_bind_text (stmt, 1, token_hash, -1, SQLITE_STATIC);
    int rc = sqlite3_step (stmt);
    if (rc == SQLITE_DONE)
        rc = sqlite3_changes (self->db) > 0? CHAT_DB_OK: CHAT_DB_NOT_FOUND;
    else
        rc = s_fail (self, "session_delete");
    s_done (stmt);
    return rc;
}

//  Call fn for each row of (token_hash, user_id, nickname, expires_ms)

static int
s_sessions_each (chat_backend_t *self, sqlite3_stmt *stmt, int64_t now_ms,
                 chat_session_fn *fn, void *ctx, const char *what)
{
    sqlite3_bind_int64 (stmt, 1, now_ms);
    int rc;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        const char *nickname = (const char *) sqlite3_column_text (stmt, 2);
        if (fn)
            fn ((const char *) sqlite3_column_text (stmt, 0), sqlite3_column_int64 (stmt, 1),
                nickname? nickname: "", sqlite3_column_int64 (stmt, 3), ctx);
    }
    rc = rc == SQLITE_DONE? CHAT_DB_OK: s_fail (self, what);
    s_done (stmt);
    return rc;
}

static int
s_sessions_live (chat_backend_t *self, int64_t now_ms, chat_session_fn *fn, void *ctx)
{
    assert (self);
    return s_sessions_each (self, self->stmt [S_SESSIONS_LIVE], now_ms, fn, ctx, "sessions_live");
}

//  The DELETE ... RETURNING deletes every expired row at its first step and
//  then hands them out one by one; the delete commits when it is done.

static int
s_sessions_expire (chat_backend_t *self, int64_t now_ms, chat_session_fn *fn, void *ctx)
{
    assert (self);
    return s_sessions_each (self, self->stmt [S_SESSIONS_EXPIRE], now_ms, fn, ctx, "sessions_expire");
}


//  --------------------------------------------------------------------------
//  Transactions

static int
s_step_once (chat_backend_t *self, s_stmt_id_t id, const char *what)
{
    sqlite3_stmt *stmt = self->stmt [id];
    int rc = sqlite3_step (stmt) == SQLITE_DONE? CHAT_DB_OK: s_fail (self, what);
    s_done (stmt);
    return rc;
}

//  Roll back what is open, if SQLite has not (after an I/O error)

static int
s_rollback (chat_backend_t *self)
{
    assert (self);
    self->touch_count = 0;
    if (self->client_ids)
        chat_sqlite_ids_rolled_back (self->client_ids);
    if (self->pairs)
        chat_sqlite_pairs_rolled_back (self->pairs);
    if (sqlite3_get_autocommit (self->db))
        return CHAT_DB_OK;
    return s_step_once (self, S_ROLLBACK, "rollback");
}

//  Inside a transaction, first: the directions' ids in memory, made (and
//  loaded) at the first transaction, caught up with other connections'
//  messages at each later one. 0, or -1 (logged).

static int
s_pairs_begin (chat_backend_t *self)
{
    if (!self->pairs) {
        self->pairs = chat_sqlite_pairs_new (self->db, self->path, S_PAIRS_MERGE_AT);
        return self->pairs? 0: -1;
    }
    return chat_sqlite_pairs_begin (self->pairs);
}

//  The client_ids of the messages stored since their last merge are read
//  in the first write transaction (persistence's: auth's handle never has
//  one)

static int
s_begin (chat_backend_t *self)
{
    assert (self);
    int rc = s_step_once (self, S_BEGIN, "begin");
    if (rc == CHAT_DB_OK && !self->client_ids)
        self->client_ids = chat_sqlite_ids_new (self->db, self->path, S_CLIENT_IDS_MERGE_AT);
    if (rc == CHAT_DB_OK
    &&  (!self->client_ids || chat_sqlite_ids_begin (self->client_ids) != 0
         || s_pairs_begin (self) != 0)) {
        s_rollback (self);
        rc = CHAT_DB_UNAVAILABLE;
    }
    return rc;
}

//  Note that message is in its conversation, for the next
//  s_touches_flush: 0, or -1 (logged) if memory runs out

static int
s_touch_add (chat_backend_t *self, const chat_message_t *message)
{
    if (self->touch_count == self->touch_size) {
        size_t size = self->touch_size? self->touch_size * 2: 256;
        s_touch_t *touches = (s_touch_t *) realloc (self->touches, size * sizeof (s_touch_t));
        if (!touches) {
            zsys_error ("sqlite %s: message_store (conversation): out of memory", self->path);
            return -1;
        }
        self->touches = touches;
        self->touch_size = size;
    }
    s_touch_t *touch = &self->touches [self->touch_count++];
    bool ascending = message->from_user_id <= message->to_user_id;
    touch->low = ascending? message->from_user_id: message->to_user_id;
    touch->high = ascending? message->to_user_id: message->from_user_id;
    touch->id = message->id;
    return 0;
}

//  By pair, then id: each pair's newest id ends its run
static int
s_touch_compare (const void *a, const void *b)
{
    const s_touch_t *x = (const s_touch_t *) a;
    const s_touch_t *y = (const s_touch_t *) b;
    if (x->low != y->low)
        return x->low < y->low? -1: 1;
    if (x->high != y->high)
        return x->high < y->high? -1: 1;
    return x->id < y->id? -1: x->id > y->id? 1: 0;
}

//  Make each noted conversation's newest message the newest of both its
//  rows: one upsert a conversation, in key order

static int
s_touches_flush (chat_backend_t *self)
{
    if (self->touch_count == 0)
        return CHAT_DB_OK;              //  (touches may still be NULL)
    qsort (self->touches, self->touch_count, sizeof (s_touch_t), s_touch_compare);
    sqlite3_stmt *stmt = self->stmt [S_CONVERSATION_TOUCH];
    int rc = CHAT_DB_OK;
    for (size_t i = 0; i < self->touch_count && rc == CHAT_DB_OK; i++) {
        const s_touch_t *touch = &self->touches [i];
        if (i + 1 < self->touch_count
        &&  touch [1].low == touch->low && touch [1].high == touch->high)
            continue;                   //  Not the newest of its pair
        sqlite3_bind_int64 (stmt, 1, touch->low);
        sqlite3_bind_int64 (stmt, 2, touch->high);
        sqlite3_bind_int64 (stmt, 3, touch->id);
        if (sqlite3_step (stmt) != SQLITE_DONE)
            rc = s_fail (self, "message_store (conversation)");
        s_done (stmt);
    }
    if (rc == CHAT_DB_OK)
        self->touch_count = 0;
    return rc;
}

//  A commit that fails rolls the whole batch back. The chunks of merges
//  in progress (client_ids, pairs) go in with it.

static int
s_commit (chat_backend_t *self)
{
    assert (self);
    assert (self->client_ids);          //  Every write transaction is s_begin's
    assert (self->pairs);
    int rc = s_touches_flush (self) == CHAT_DB_OK
          && chat_sqlite_ids_flush (self->client_ids) == 0
          && chat_sqlite_pairs_flush (self->pairs) == 0
           ? s_step_once (self, S_COMMIT, "commit"): CHAT_DB_UNAVAILABLE;
    if (rc == CHAT_DB_OK) {
        chat_sqlite_ids_committed (self->client_ids);
        chat_sqlite_pairs_committed (self->pairs);
    }
    else
        s_rollback (self);
    return rc;
}

//  A read of several statements (history, sync, conversations): in a
//  read transaction of its own, so that they and the pairs in memory see
//  one snapshot, unless the caller has a transaction open (whose
//  s_begin caught the pairs up, and whose conversations are brought up to
//  date first). *own_tx says which, for s_read_end.

static int
s_read_begin (chat_backend_t *self, bool *own_tx, const char *what)
{
    *own_tx = sqlite3_get_autocommit (self->db) != 0;
    if (!*own_tx) {
        assert (self->pairs);           //  Every write transaction is s_begin's
        return s_touches_flush (self);
    }
    if (s_step_once (self, S_BEGIN_READ, what) != CHAT_DB_OK)
        return CHAT_DB_UNAVAILABLE;
    if (s_pairs_begin (self) != 0) {
        s_rollback (self);
        return CHAT_DB_UNAVAILABLE;
    }
    return CHAT_DB_OK;
}

static void
s_read_end (chat_backend_t *self, bool own_tx, const char *what)
{
    if (!own_tx)
        return;
    if (s_step_once (self, S_COMMIT, what) == CHAT_DB_OK)
        chat_sqlite_pairs_committed (self->pairs);
    else
        s_rollback (self);
}


//  --------------------------------------------------------------------------
//  Fill message from the stored message id: the sender's first one with
//  this client_id

static int
s_message_first (chat_backend_t *self, chat_message_t *message, int64_t id)
{
    sqlite3_stmt *stmt = self->stmt [S_MESSAGE_FIRST];
    sqlite3_bind_int64 (stmt, 1, id);
    int rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        //  The content is copied so that it outlives the statement's reset
        const char *content = (const char *) sqlite3_column_text (stmt, 2);
        size_t content_len = (size_t) sqlite3_column_bytes (stmt, 2);
        message->id = sqlite3_column_int64 (stmt, 0);
        message->to_user_id = sqlite3_column_int64 (stmt, 1);
        message->content = s_held_copy (self, content? content: "", content_len);
        message->content_len = content_len;
        message->created_ms = sqlite3_column_int64 (stmt, 3);
        message->is_read = sqlite3_column_int (stmt, 4) != 0;
        rc = CHAT_DB_OK;
    }
    else
        rc = s_fail (self, "message_store (first of client_id)");
    s_done (stmt);
    return rc;
}

//  Store one message: an INSERT, its conversation noted for
//  s_touches_flush (the rows are written once a transaction). A client_id
//  the sender used before, committed or earlier in this transaction (so
//  also earlier in this batch), is looked up first (sqlite_client_ids.c),
//  so a resend is answered as a duplicate whatever its recipient. The
//  foreign keys check that sender and recipient exist (INTEGER PRIMARY
//  KEY probes; a failure is the statement's only, the transaction goes
//  on). Returns the message's result, or CHAT_DB_UNAVAILABLE.

static int
s_message_store_one (chat_backend_t *self, chat_message_t *message, int64_t now_ms,
                     bool *duplicate)
{
    assert (message->content || message->content_len == 0);
    assert (message->content_len <= INT_MAX);
    assert (self->client_ids);
    assert (self->pairs);
    *duplicate = false;
    size_t client_id_len = message->client_id? strlen (message->client_id): 0;
    uint64_t client_id_key = 0;
    if (message->client_id) {
        int64_t first_id = 0;
        int found = chat_sqlite_ids_find (self->client_ids, message->from_user_id,
                                          message->client_id, client_id_len,
                                          &client_id_key, &first_id);
        if (found < 0)
            return CHAT_DB_UNAVAILABLE;
        if (found) {
            int rc = s_message_first (self, message, first_id);
            *duplicate = rc == CHAT_DB_OK;
            return rc;
        }
    }
    sqlite3_stmt *stmt = self->stmt [S_MESSAGE_INSERT];
    sqlite3_bind_int64 (stmt, 1, message->from_user_id);
    sqlite3_bind_int64 (stmt, 2, message->to_user_id);
    sqlite3_bind_text (stmt, 3, message->content? message->content: "",
                       (int) message->content_len, SQLITE_STATIC);
    sqlite3_bind_int64 (stmt, 4, now_ms);
    if (message->client_id)
        sqlite3_bind_text (stmt, 5, message->client_id, (int) client_id_len, SQLITE_STATIC);
    else
        sqlite3_bind_null (stmt, 5);
    int rc = sqlite3_step (stmt);
    int code = sqlite3_extended_errcode (self->db);
    if (rc == SQLITE_DONE) {
        message->id = sqlite3_last_insert_rowid (self->db);
        message->created_ms = now_ms;
        message->is_read = false;
        rc = chat_sqlite_ids_add (self->client_ids, message->from_user_id, message->client_id,
                                  client_id_len, client_id_key, message->id) == 0
          && chat_sqlite_pairs_add (self->pairs, message->from_user_id, message->to_user_id,
                                    message->id) == 0
          && s_touch_add (self, message) == 0
           ? CHAT_DB_OK: CHAT_DB_UNAVAILABLE;
    }
    else
    if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
        rc = CHAT_DB_NOT_FOUND;
    else
        rc = s_fail (self, "message_store");
    s_done (stmt);
    return rc;
}

//  A batch is the prepared INSERT once per message, in order: with SQLite
//  in-process there is no round trip to save, and a multi-row INSERT would
//  turn one row's constraint failure into the whole statement's.

static int
s_message_store_batch (chat_backend_t *self, chat_message_t *messages, size_t count,
                       int *results, bool *duplicates)
{
    assert (self);
    assert (messages || count == 0);
    assert (results || count == 0);
    s_held_free (self);
    int64_t now_ms = chat_now_ms ();
    for (size_t i = 0; i < count; i++) {
        bool duplicate = false;
        int rc = s_message_store_one (self, &messages [i], now_ms, &duplicate);
        if (rc == CHAT_DB_UNAVAILABLE)
            return rc;
        results [i] = rc;
        if (duplicates)
            duplicates [i] = duplicate;
    }
    return CHAT_DB_OK;
}


//  --------------------------------------------------------------------------
//  Pass message id to fn: 0, or -1 if it cannot be read

static int
s_message_emit (chat_backend_t *self, int64_t id, chat_message_fn *fn, void *ctx)
{
    sqlite3_stmt *stmt = self->stmt [S_MESSAGE_BY_ID];
    sqlite3_bind_int64 (stmt, 1, id);
    int rc = sqlite3_step (stmt);
    if (rc == SQLITE_ROW) {
        chat_message_t message;
        s_message_from_row (stmt, &message);
        fn (&message, ctx);
    }
    s_done (stmt);
    return rc == SQLITE_ROW? 0: -1;
}


//  --------------------------------------------------------------------------
//  History: the limit newest messages between two users below before_id

//  The newest (at most want) ids of one direction below before into ids,
//  newest first: those in memory, then the table's. How many, or -1.
static int64_t
s_history_side (chat_backend_t *self, int64_t sender, int64_t receiver, int64_t before,
                int64_t want, int64_t *ids)
{
    size_t count;
    const int64_t *recent = chat_sqlite_pairs_ids (self->pairs, sender, receiver, &count);
    size_t below = chat_sqlite_pairs_rank (recent, count, before - 1);
    int64_t taken = 0;
    while (taken < want && below > 0)
        ids [taken++] = recent [--below];
    if (taken == want)
        return taken;
    //  The rest from the table, which holds the ids up to through_id
    int64_t through = chat_sqlite_pairs_through (self->pairs);
    sqlite3_stmt *stmt = self->stmt [S_PAIR_BEFORE];
    sqlite3_bind_int64 (stmt, 1, sender);
    sqlite3_bind_int64 (stmt, 2, receiver);
    sqlite3_bind_int64 (stmt, 3, before <= through? before: through + 1);
    sqlite3_bind_int64 (stmt, 4, want - taken);
    int rc;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW && taken < want)
        ids [taken++] = sqlite3_column_int64 (stmt, 0);
    s_done (stmt);
    return rc == SQLITE_ROW || rc == SQLITE_DONE? taken: -1;
}

//  Each direction's newest limit + 1 ids below before_id, merged newest
//  first; the newest limit are the page, passed to fn oldest first, and a
//  limit + 1st says there is more. A conversation with oneself is one
//  direction.
static int
s_history (chat_backend_t *self, int64_t user_id, int64_t with_user_id,
           int64_t before_id, int limit, chat_message_fn *fn, void *ctx, bool *has_more)
{
    assert (self);
    assert (fn);
    if (limit < 0)
        limit = 0;
    int64_t want = (int64_t) limit + 1;
    int64_t before = before_id > 0? before_id: INT64_MAX;
    //  Each side's ids and the merged page (a limit the caller did not
    //  clamp, and that memory cannot hold, is storage failing, not a crash)
    int64_t *ids = (int64_t *) malloc ((size_t) want * 3 * sizeof (int64_t));
    int64_t *sent = ids, *received = ids + want, *page = ids + 2 * want;
    bool more = false, own_tx = false;
    int rc = CHAT_DB_UNAVAILABLE;
    if (ids)
        rc = s_read_begin (self, &own_tx, "history (begin)");
    else
        zsys_error ("sqlite %s: history: out of memory for a page of %d", self->path, limit);
    if (rc != CHAT_DB_OK)
        goto done;
    int64_t sent_count = s_history_side (self, user_id, with_user_id, before, want, sent);
    int64_t received_count = with_user_id == user_id? 0
                           : s_history_side (self, with_user_id, user_id, before, want, received);
    if (sent_count < 0 || received_count < 0)
        rc = s_fail (self, "history");
    int64_t count = 0;
    for (int64_t i = 0, j = 0; rc == CHAT_DB_OK && count < want
                               && (i < sent_count || j < received_count);)
        page [count++] = j == received_count || (i < sent_count && sent [i] > received [j])
                       ? sent [i++]: received [j++];
    if (count > limit) {
        more = true;
        count = limit;
    }
    while (rc == CHAT_DB_OK && count > 0)
        if (s_message_emit (self, page [--count], fn, ctx))
            rc = s_fail (self, "history (message)");
    s_read_end (self, own_tx, "history (end)");

done:
    free (ids);
    if (has_more)
        *has_more = rc == CHAT_DB_OK && more;
    return rc;
}


//  --------------------------------------------------------------------------
//  Sync: messages to or from a user above after_id, ascending
//
//  A k-way merge. Each direction of each conversation with a message above
//  after_id is a stream of ids (message_pairs, then memory); a min-heap on each
//  stream's next id yields the user's messages in id order. The work is
//  one probe per stream to start, one per message taken, and one row per
//  message returned: O(partners + limit), whatever the conversations hold.
//  (A single query that takes a page from every conversation and keeps the
//  oldest page reads partners x limit entries: 0.56 s for a user with 300
//  busy conversations syncing from 0, with the persistence thread, and so
//  every message acknowledgement, waiting meanwhile.)

//  One direction of one conversation
typedef struct {
    int64_t sender;                     //  From
    int64_t receiver;                   //  To
    int64_t next;                       //  Its next id not yet taken
} s_stream_t;

//  The next id of stream above bound into stream->next; 0 when there is
//  none, -1 on failure. Below through_id it is the table's next, if it
//  has one; else the first in memory above the bound.
static int
s_stream_advance (chat_backend_t *self, s_stream_t *stream, int64_t bound)
{
    int64_t through = chat_sqlite_pairs_through (self->pairs);
    stream->next = 0;
    if (bound < through) {
        sqlite3_stmt *stmt = self->stmt [S_SYNC_NEXT];
        sqlite3_bind_int64 (stmt, 1, stream->sender);
        sqlite3_bind_int64 (stmt, 2, stream->receiver);
        sqlite3_bind_int64 (stmt, 3, bound);
        sqlite3_bind_int64 (stmt, 4, through);
        int rc = sqlite3_step (stmt);
        if (rc == SQLITE_ROW)
            stream->next = sqlite3_column_int64 (stmt, 0);
        s_done (stmt);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return -1;
        if (stream->next)
            return 0;
    }
    size_t count;
    const int64_t *recent = chat_sqlite_pairs_ids (self->pairs, stream->sender,
                                                   stream->receiver, &count);
    size_t at = chat_sqlite_pairs_rank (recent, count, bound);
    if (at < count)
        stream->next = recent [at];
    return 0;
}

//  Restore the heap order below slot i (smallest next at the top)
static void
s_heap_down (s_stream_t *heap, size_t count, size_t i)
{
    while (true) {
        size_t least = i, left = 2 * i + 1, right = left + 1;
        if (left < count && heap [left].next < heap [least].next)
            least = left;
        if (right < count && heap [right].next < heap [least].next)
            least = right;
        if (least == i)
            return;
        s_stream_t swap = heap [i];
        heap [i] = heap [least];
        heap [least] = swap;
        i = least;
    }
}

//  The user's streams with an id above after_id into *heap_p (a heap);
//  returns how many, or -1 on failure
static int64_t
s_sync_streams (chat_backend_t *self, int64_t user_id, int64_t after_id, s_stream_t **heap_p)
{
    size_t count = 0, size = 16;
    s_stream_t *heap = (s_stream_t *) malloc (size * sizeof (s_stream_t));
    assert (heap);
    sqlite3_stmt *stmt = self->stmt [S_SYNC_PARTNERS];
    sqlite3_bind_int64 (stmt, 1, user_id);
    sqlite3_bind_int64 (stmt, 2, after_id);
    int rc;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        int64_t partner = sqlite3_column_int64 (stmt, 0);
        if (count + 2 > size) {
            size *= 2;
            heap = (s_stream_t *) realloc (heap, size * sizeof (s_stream_t));
            assert (heap);
        }
        //  Sent, and received (a conversation with oneself is one stream)
        heap [count++] = (s_stream_t) { .sender = user_id, .receiver = partner };
        if (partner != user_id)
            heap [count++] = (s_stream_t) { .sender = partner, .receiver = user_id };
    }
    s_done (stmt);
    //  The partners statement is reset before the probes run
    size_t live = 0;
    for (size_t i = 0; rc == SQLITE_DONE && i < count; i++) {
        if (s_stream_advance (self, &heap [i], after_id))
            rc = SQLITE_ERROR;
        else
        if (heap [i].next)
            heap [live++] = heap [i];
    }
    for (size_t i = live / 2; i-- > 0;)
        s_heap_down (heap, live, i);
    *heap_p = heap;
    return rc == SQLITE_DONE? (int64_t) live: -1;
}

static int
s_sync (chat_backend_t *self, int64_t user_id, int64_t after_id, int limit,
        chat_message_fn *fn, void *ctx, bool *has_more)
{
    assert (self);
    assert (fn);
    if (limit < 0)
        limit = 0;
    bool more = false, own_tx;
    s_stream_t *heap = NULL;
    int rc = s_read_begin (self, &own_tx, "sync (begin)");
    if (rc != CHAT_DB_OK)
        goto done;
    int64_t live = s_sync_streams (self, user_id, after_id, &heap);
    int taken = 0;
    while (live > 0) {
        if (taken == limit) {
            more = true;                //  One more than the page: there is more
            break;
        }
        //  The smallest next id of all streams, then that stream moves on
        int64_t id = heap [0].next;
        if (s_message_emit (self, id, fn, ctx) || s_stream_advance (self, &heap [0], id)) {
            live = -1;
            break;
        }
        taken++;
        if (heap [0].next == 0)
            heap [0] = heap [--live];
        s_heap_down (heap, (size_t) live, 0);
    }
    if (live < 0)
        rc = s_fail (self, "sync");
    s_read_end (self, own_tx, "sync (end)");

done:
    free (heap);
    if (has_more)
        *has_more = rc == CHAT_DB_OK && more;
    return rc;
}


//  --------------------------------------------------------------------------
//  Mark messages from partner to reader up to up_to_id as read: move the
//  reader's marker for partner forward. Read and move in one transaction
//  (unless the caller has one open), so that the count is what moved.

static int
s_mark_read (chat_backend_t *self, int64_t reader_id, int64_t partner_id,
             int64_t up_to_id, int64_t *changed)
{
    assert (self);
    bool own_tx = sqlite3_get_autocommit (self->db) != 0;
    int64_t count = 0;
    int rc = own_tx? s_begin (self): s_touches_flush (self);
    if (rc != CHAT_DB_OK)
        goto done;

    //  The marker moves to up_to_id, but never past the partner's newest
    //  message, so that later messages stay unread; count is how many
    //  messages above the marker that marks. The table has the ids up to
    //  through_id, memory the rest.
    int64_t through = chat_sqlite_pairs_through (self->pairs);
    sqlite3_stmt *stmt = self->stmt [S_READ_STATE];
    sqlite3_bind_int64 (stmt, 1, reader_id);
    sqlite3_bind_int64 (stmt, 2, partner_id);
    sqlite3_bind_int64 (stmt, 3, up_to_id);
    sqlite3_bind_int64 (stmt, 4, through);
    int64_t target = 0;
    int step = sqlite3_step (stmt);
    if (step == SQLITE_ROW) {
        int64_t marker = sqlite3_column_int64 (stmt, 0);
        int64_t newest = sqlite3_column_int64 (stmt, 1);
        count = sqlite3_column_int64 (stmt, 2);
        size_t recent_count;
        const int64_t *recent = chat_sqlite_pairs_ids (self->pairs, partner_id, reader_id,
                                                       &recent_count);
        if (recent_count > 0)
            newest = recent [recent_count - 1];
        if (up_to_id > marker)
            count += (int64_t) (chat_sqlite_pairs_rank (recent, recent_count, up_to_id)
                              - chat_sqlite_pairs_rank (recent, recent_count, marker));
        target = up_to_id < newest? up_to_id: newest;
    }
    rc = step == SQLITE_ROW || step == SQLITE_DONE? CHAT_DB_OK: s_fail (self, "mark_read");
    s_done (stmt);

    //  Something newly read means the marker moves forward, to target
    if (rc == CHAT_DB_OK && count > 0) {
        stmt = self->stmt [S_READ_UP_TO];
        sqlite3_bind_int64 (stmt, 1, reader_id);
        sqlite3_bind_int64 (stmt, 2, partner_id);
        sqlite3_bind_int64 (stmt, 3, target);
        rc = sqlite3_step (stmt) == SQLITE_DONE? CHAT_DB_OK: s_fail (self, "mark_read");
        s_done (stmt);
    }
    else
        count = 0;
    if (own_tx)
        rc = rc == CHAT_DB_OK? s_commit (self): (s_rollback (self), rc);

done:
    if (changed)
        *changed = rc == CHAT_DB_OK? count: 0;
    return rc;
}


//  --------------------------------------------------------------------------
//  Conversations: one row per partner, most recent first

static int
s_conversations (chat_backend_t *self, int64_t user_id, chat_conversation_fn *fn, void *ctx)
{
    assert (self);
    assert (fn);
    bool own_tx;
    int rc = s_read_begin (self, &own_tx, "conversations (begin)");
    if (rc != CHAT_DB_OK)
        return rc;
    sqlite3_stmt *stmt = self->stmt [S_CONVERSATIONS];
    sqlite3_bind_int64 (stmt, 1, user_id);
    sqlite3_bind_int64 (stmt, 2, chat_sqlite_pairs_through (self->pairs));
    chat_conversation_t conv;
    while ((rc = sqlite3_step (stmt)) == SQLITE_ROW) {
        s_message_from_row (stmt, &conv.last_message);
        conv.user_id = sqlite3_column_int64 (stmt, S_MESSAGE_NCOLUMNS);
        conv.nickname = (const char *) sqlite3_column_text (stmt, S_MESSAGE_NCOLUMNS + 1);
        conv.unread = sqlite3_column_int64 (stmt, S_MESSAGE_NCOLUMNS + 2);
        //  Plus the partner's messages in memory above the read marker
        int64_t marker = sqlite3_column_int64 (stmt, S_MESSAGE_NCOLUMNS + 3);
        size_t count;
        const int64_t *recent = chat_sqlite_pairs_ids (self->pairs, conv.user_id, user_id,
                                                       &count);
        conv.unread += (int64_t) (count - chat_sqlite_pairs_rank (recent, count, marker));
        fn (&conv, ctx);
    }
    rc = rc == SQLITE_DONE? CHAT_DB_OK: s_fail (self, "conversations");
    s_done (stmt);
    s_read_end (self, own_tx, "conversations (end)");
    return rc;
}


//  --------------------------------------------------------------------------

const chat_backend_ops_t chat_backend_sqlite = {
    .name = "sqlite",
    .open = s_open,
    .close = s_close,
    .ping = s_ping,
    .user_create = s_user_create,
    .user_find = s_user_find,
    .user_get = s_user_get,
    .users_list = s_users_list,
    .session_create = s_session_create,
    .session_delete = s_session_delete,
    .sessions_live = s_sessions_live,
    .sessions_expire = s_sessions_expire,
    .begin = s_begin,
    .commit = s_commit,
    .rollback = s_rollback,
    .message_store_batch = s_message_store_batch,
    .history = s_history,
    .sync = s_sync,
    .mark_read = s_mark_read,
    .conversations = s_conversations,
};
