/*  =========================================================================
    postgres.c - the PostgreSQL storage backend (include/chat_backend.h)

    Owns one libpq connection per handle, the schema and its migrations, and
    the SQL behind every function of chat_backend_ops_t. Used by the
    persistence and auth actors, each through its own handle; talks to no
    actor. Same behaviour as backends/sqlite.c: the conformance suite
    tests/test_backend.c runs against both.

    Connection: [postgres] conninfo, with connect_timeout, TCP keepalives and
    tcp_user_timeout added when the string does not set them, so that a
    vanished server is noticed in seconds instead of hanging a call. When
    the server goes away every call answers CHAT_DB_UNAVAILABLE; the next
    call (ping in particular) reconnects with PQreset and statements are
    prepared again, each on its first use on the new connection. A
    read-only call that finds its connection dead retries once on a fresh
    one; nothing is retried inside a transaction: a transaction whose
    connection was lost fails as a whole (commit answers UNAVAILABLE).

    Timestamps: the caller's (or chat_now_ms ()) milliseconds go in as
    'epoch' + n * 1 ms, which is integer arithmetic in the server (no
    float rounding), and come back as extract (epoch) * 1000, exact numeric;
    so what is stored is what was acknowledged, to the millisecond.

    Group commit, measured (2-core VM shared with other builds, server on
    127.0.0.1, batches of 100 messages of 40 bytes, median of 200 batches,
    two runs each, by a throw-away libpq program):

                                        fsync off        fsync on, sync commit
        one round trip (ping)           50-120 us        50-120 us
        prepared INSERT per row,        13-27 ms         13-25 ms
          one transaction (this file)
        same, libpq pipeline mode       7-8 ms           5-8 ms
        one multi-row INSERT            3.5-3.8 ms       2.7-4.0 ms
        one transaction per message     18-28 ms         45-49 ms  (100 msgs)

    On this VM a WAL flush is cheap (~0.3 ms), so what a batch costs is
    round trips: per-row pays one per message (~130-200 us each with the
    insert), pipelining removes the wait (2-3x faster), a multi-row INSERT
    also the per-statement overhead (4-6x).

    So message_store_batch stores a whole batch in at most three round
    trips whatever its size: which users exist (one SELECT ... = ANY), one
    INSERT ... SELECT FROM unnest (arrays) ... ON CONFLICT DO NOTHING
    RETURNING (which updates the conversation rows too, see below), and
    only if some client_id was used before (or a user is unknown and the
    message has a client_id) one look-up of the first messages. The
    arrays go in PostgreSQL's binary format: one prepared statement of five
    parameters serves every batch size (no 65535 parameter limit, no
    chunking, no escaping). Duplicates inside the batch are resolved in C
    before the insert. Measured with the real server and chat-bench (200
    users, window 4, 8 s; the with-postgres.sh cluster, fsync and
    synchronous_commit off; the 2-core VM was loaded, load 5-6):

                                  per-row (before)   batch call (now)
        acks/s                    2,200-4,400        5,900-8,300
        persistence thread        34-38 us/msg       5.4-5.9 us/msg
        postgres server CPU       126-130 us/msg     47-49 us/msg
        chatd CPU                 89-97 us/msg       57-62 us/msg
        messages per batch        360-400            200-300

    Pipeline mode was not measured again: the multi-row statement was
    already twice as fast as pipelining in the table above.

    Schema (migration 2). private_messages keeps two indexes besides its
    primary key: client_id (sender_id, client_id), for deduplication, and
    conversation (sender_id, receiver_id, id), one direction of one
    conversation in id order. Migration 1 also had sent (sender_id, id),
    received (receiver_id, id) and unread (receiver_id, sender_id) WHERE
    NOT is_read: each is keyed by user, so each message inserted into one
    hot leaf per user in each, which is what limited write throughput
    (docs/benchmarks.md), and conversations read every message of the
    user (GROUP BY). They are replaced by the table conversations, one row
    per user and partner (one for oneself): last_id, the newest message
    between the two either way, and read_up_to, the messages from partner
    to user with an id up to it are read (the read state, which replaces
    private_messages.is_read). A message updates its two rows in place,
    in the statement that inserts it; they stay few and dense. chat-bench,
    500 users, window 8, 10 s, on a new database (the with-postgres.sh
    cluster, the 2-core VM shared with other builds), two runs each:
    17,200-17,400 acks/s with migration 1's schema, 19,700-21,800 with
    this one. Plans:

        message_store_batch   INSERT ... RETURNING, and in the same
                              statement (a data-modifying CTE) one upsert
                              of the conversation rows, grouped per key
        is_read of a message  id <= read_up_to of (its recipient, its
                              sender): a primary key look-up per message
                              returned
        history               two backward range scans of conversation
        sync                  the user's conversation rows with last_id >
                              after_id; per row two forward range scans of
                              conversation of at most limit + 1 ids, index
                              only; the lowest limit + 1 ids, then their
                              rows by primary key
        mark_read             the row, locked; newest id from partner to
                              reader (the end of a conversation range) as
                              the bound; the count a range of conversation
        conversations         the user's rows; last message by primary key;
                              unread, a range of conversation above
                              read_up_to

    EXPLAIN ANALYZE, PostgreSQL 15, on a database of 2,000 users and 2
    million messages (one user with 335 conversations and 200,000
    messages, the others about 40 and 1,000), custom and generic plans
    alike: every read above uses index scans only (conversations_pkey,
    private_messages_pkey, private_messages_conversation, index only for
    the counts, the maxima and sync's ids); the only sequential scan is of
    users, which the planner hashes for conversations while the table is
    small (2,000 rows). Nothing reads all of a user's messages: warm,
    conversations of the big user took 14-23 ms (migration 1: 240-430 ms),
    of a 40-conversation user 1-3 ms (7-12 ms), history 0.3-1 ms, sync
    from a recent id 0.3-2 ms, mark_read 0.2-0.5 ms. The price is sync from
    far back for a user with many conversations, since each one active
    since after_id is read up to limit + 1 ids each way: for the big user
    from id 0, 62,000 index entries, 33-55 ms (migration 1: 1 ms). Sync
    is for catching up after a reconnect, where few conversations moved.
    Migration 2 itself took 3.2 s on that database.
    =========================================================================
*/

#include "chat_backend.h"
#include "chat_wire.h"
#include <czmq.h>
#include <inttypes.h>
#include <libpq-fe.h>

//  A key of our own for pg_advisory_xact_lock while migrating ("chatd")
#define S_MIGRATION_LOCK_KEY    "6368617464"

//  Connection defaults, used unless [postgres] conninfo sets them
#define S_CONNECT_TIMEOUT_S     "5"
#define S_KEEPALIVES_IDLE_S     "10"
#define S_KEEPALIVES_INTERVAL_S "5"
#define S_KEEPALIVES_COUNT      "3"
#define S_TCP_USER_TIMEOUT_MS   "15000"

//  Most parameters any statement takes
#define S_MAX_PARAMS            6


//  --------------------------------------------------------------------------
//  Schema. Each entry is one migration, applied once in order inside the
//  migration transaction; its version is its position + 1. Never edit an
//  entry that has shipped: add a new one.

static const char *s_migrations [] = {
    //  1: users, sessions, private messages
    "CREATE TABLE users ("
    "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "    nickname text NOT NULL,"
    "    password_hash text NOT NULL,"
    "    created_at timestamptz NOT NULL"
    ");"
    //  user_create (conflict on any case), user_find
    "CREATE UNIQUE INDEX users_nickname_lower ON users (lower (nickname));"

    "CREATE TABLE sessions ("
    "    token_hash text PRIMARY KEY,"
    "    user_id bigint NOT NULL REFERENCES users (id),"
    "    created_at timestamptz NOT NULL,"
    "    expires_at timestamptz NOT NULL"
    ");"
    //  sessions_live, sessions_expire
    "CREATE INDEX sessions_expires_at ON sessions (expires_at);"

    "CREATE TABLE private_messages ("
    "    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    "    sender_id bigint NOT NULL REFERENCES users (id),"
    "    receiver_id bigint NOT NULL REFERENCES users (id),"
    "    content text NOT NULL,"
    "    created_at timestamptz NOT NULL,"
    "    is_read boolean NOT NULL DEFAULT false,"
    "    client_id text NULL"
    ");"
    //  message_store: a sender's client_id is stored once (dedupe), and the
    //  first message is found again by it
    "CREATE UNIQUE INDEX private_messages_client_id"
    "    ON private_messages (sender_id, client_id) WHERE client_id IS NOT NULL;"
    //  history: each direction of a conversation, newest first from
    //  before_id; conversations: last message per partner of a sender
    "CREATE INDEX private_messages_conversation"
    "    ON private_messages (sender_id, receiver_id, id);"
    //  sync: messages a user sent, from after_id up
    "CREATE INDEX private_messages_sent ON private_messages (sender_id, id);"
    //  sync: messages a user received, from after_id up; conversations:
    //  last message per partner of a receiver
    "CREATE INDEX private_messages_received ON private_messages (receiver_id, id);"
    //  conversations (unread counts) and mark_read: only unread rows
    "CREATE INDEX private_messages_unread"
    "    ON private_messages (receiver_id, sender_id) WHERE NOT is_read;",

    //  2: one row per conversation and user, updated in place, instead of
    //  the per-user indexes of private_messages (sent, received, unread)
    //  and its is_read flag: each per-user index took one insert per
    //  message into its hot leaf per user, and conversations scanned every
    //  message of the user. A message now inserts into the table, its
    //  primary key (ids only grow: one hot leaf in all) and the indexes
    //  conversation and (when it has a client_id) client_id, and updates
    //  two conversation rows in place, which stay dense and mostly in
    //  shared buffers.
    //
    //  message_store_batch: last_id = greatest (last_id, id) for (sender,
    //  recipient) and (recipient, sender). conversations: a user's rows,
    //  by the primary key. sync: a user's rows with last_id > after_id,
    //  each one or two range scans of private_messages_conversation.
    //  mark_read: moves read_up_to. Every message's is_read: its id <=
    //  read_up_to of (its recipient, its sender). No foreign keys: the
    //  message insert checked both users, and users are never deleted.
    "CREATE TABLE conversations ("
    "    user_id bigint NOT NULL,"
    "    partner_id bigint NOT NULL,"
    "    last_id bigint NOT NULL,"                  //  Newest message, either way
    "    read_up_to bigint NOT NULL DEFAULT 0,"     //  Partner's to user up to it are read
    "    PRIMARY KEY (user_id, partner_id)"
    ");"
    //  One row per user and partner of every message (one for a message to
    //  oneself). Read state has always been an id prefix (mark_read only
    //  marked messages up to an id that existed then), so read_up_to is the
    //  newest read message from partner to user, exactly
    "INSERT INTO conversations (user_id, partner_id, last_id, read_up_to)"
    " SELECT e.user_id, e.partner_id, max (e.id),"
    "        coalesce (max (e.id) FILTER (WHERE e.incoming AND e.is_read), 0)"
    "   FROM (SELECT sender_id AS user_id, receiver_id AS partner_id, id,"
    "                sender_id = receiver_id AS incoming, is_read"
    "           FROM private_messages"
    "         UNION ALL"
    "         SELECT receiver_id, sender_id, id, true, is_read"
    "           FROM private_messages WHERE receiver_id <> sender_id) AS e"
    "  GROUP BY e.user_id, e.partner_id;"
    //  Replaced by conversations: sync (sent, received), conversations and
    //  mark_read (unread, is_read). What stays: private_messages_client_id
    //  (message_store) and private_messages_conversation, which now serves
    //  history, sync, mark_read and the unread counts, each direction of a
    //  conversation a range of it
    "DROP INDEX private_messages_sent;"
    "DROP INDEX private_messages_received;"
    "DROP INDEX private_messages_unread;"
    "ALTER TABLE private_messages DROP COLUMN is_read;"
    //  Statistics for the new table now, not at autovacuum's next round
    "ANALYZE conversations;"
};

#define S_MIGRATION_COUNT   ((int) (sizeof s_migrations / sizeof s_migrations [0]))


//  --------------------------------------------------------------------------
//  Statements, prepared on a connection the first time they are used there

//  Milliseconds since the epoch (a bigint parameter) as timestamptz, and back
#define S_TS(param)     "(timestamptz 'epoch' + " param "::bigint * interval '1 millisecond')"
#define S_MS(column)    "(extract (epoch FROM " column ") * 1000)::bigint"

//  Whether message m is read: its id is at most read_up_to of r, its
//  recipient's conversation with its sender, which S_READ_JOIN joins
//  (every stored message has that row; without one, nothing is read).
//  A join, not a subquery per row: on a small conversations table the
//  planner made the subquery a sequential scan per message (a history
//  page of 50 took 2 ms instead of 1); a join lets it hash the table once
//  or probe the primary key, whichever is cheaper
#define S_IS_READ(m)    "(" m ".id <= coalesce (r.read_up_to, 0))"
#define S_READ_JOIN(m) \
    " LEFT JOIN conversations r ON r.user_id = " m ".receiver_id AND r.partner_id = " m ".sender_id"

//  A message row, as s_message_from_row reads it: m is private_messages, u
//  the sender in users
#define S_MESSAGE_COLUMNS \
    "m.id, m.sender_id, m.receiver_id, u.nickname, m.content, " \
    S_MS ("m.created_at") ", " S_IS_READ ("m") ", m.client_id"
#define S_MESSAGE_COLUMN_COUNT  8

typedef enum {
    S_PING,
    S_USER_CREATE,
    S_USER_FIND,
    S_USER_GET,
    S_USERS_LIST,
    S_SESSION_CREATE,
    S_SESSION_DELETE,
    S_SESSIONS_LIVE,
    S_SESSIONS_EXPIRE,
    S_BEGIN,
    S_COMMIT,
    S_USERS_EXIST,
    S_MESSAGE_INSERT_BATCH,
    S_MESSAGES_BY_CLIENT_ID,
    S_HISTORY,
    S_SYNC,
    S_MARK_READ,
    S_CONVERSATIONS,
    S_STMT_COUNT
} s_stmt_t;

typedef struct {
    const char *name;                   //  Prepared statement name
    const char *sql;                    //  Its text
    bool retry;                         //  Read-only: may run again on a new connection
} s_statement_t;

static const s_statement_t s_statements [S_STMT_COUNT] = {
    [S_PING] = { "ping", "SELECT 1", true },

    //  $1 nickname, $2 password hash, $3 now ms. No row: the nickname is taken
    [S_USER_CREATE] = { "user_create",
        "INSERT INTO users (nickname, password_hash, created_at)"
        " VALUES ($1, $2, " S_TS ("$3") ")"
        " ON CONFLICT DO NOTHING RETURNING id", false },
    [S_USER_FIND] = { "user_find",
        "SELECT id, nickname, password_hash FROM users"
        " WHERE lower (nickname) = lower ($1::text)", true },
    [S_USER_GET] = { "user_get",
        "SELECT id, nickname, password_hash FROM users WHERE id = $1", true },
    //  Nicknames are ASCII; "C" makes the order bytewise whatever the
    //  database's collation, as SQLite's NOCASE then BINARY
    [S_USERS_LIST] = { "users_list",
        "SELECT id, nickname, password_hash FROM users"
        " ORDER BY lower (nickname) COLLATE \"C\", nickname COLLATE \"C\"", true },

    //  $1 token hash, $2 user id, $3 now ms, $4 expires ms. No row: the user
    //  does not exist or the hash is already stored
    [S_SESSION_CREATE] = { "session_create",
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at)"
        " SELECT $1::text, $2::bigint, " S_TS ("$3") ", " S_TS ("$4")
        " WHERE EXISTS (SELECT 1 FROM users WHERE id = $2::bigint)"
        " ON CONFLICT DO NOTHING RETURNING 1", false },
    [S_SESSION_DELETE] = { "session_delete",
        "DELETE FROM sessions WHERE token_hash = $1", false },
    [S_SESSIONS_LIVE] = { "sessions_live",
        "SELECT s.token_hash, s.user_id, u.nickname, " S_MS ("s.expires_at")
        " FROM sessions s JOIN users u ON u.id = s.user_id"
        " WHERE s.expires_at > " S_TS ("$1")
        " ORDER BY s.expires_at, s.token_hash", true },
    [S_SESSIONS_EXPIRE] = { "sessions_expire",
        "WITH gone AS (DELETE FROM sessions WHERE expires_at <= " S_TS ("$1")
        "              RETURNING token_hash, user_id, expires_at)"
        " SELECT g.token_hash, g.user_id, u.nickname, " S_MS ("g.expires_at")
        " FROM gone g JOIN users u ON u.id = g.user_id"
        " ORDER BY g.expires_at, g.token_hash", false },

    [S_BEGIN] = { "begin", "BEGIN", false },
    [S_COMMIT] = { "commit", "COMMIT", false },

    //  message_store_batch, one statement each per batch (the arrays are
    //  sent in binary format, so the statement text and its parameter
    //  count do not depend on the batch size). $1 user ids: those that exist
    [S_USERS_EXIST] = { "users_exist",
        "SELECT id FROM users WHERE id = ANY ($1::bigint[])", false },
    //  $1 senders, $2 recipients, $3 contents, $4 created ms, $5 client ids
    //  (NULL elements for none). Rows are inserted in array order (the
    //  ORDER BY is below the insert, which draws the ids from the identity
    //  as rows arrive), so ids increase in batch order; the answer is
    //  ordered by id, so it comes in that order too. A row whose client_id
    //  its sender used before (or earlier in the batch) is skipped: ON
    //  CONFLICT never raises, so the transaction survives. Every user was
    //  checked to exist just before.
    //  In the same statement (no extra round trip), the conversation rows
    //  of the stored messages: (sender, recipient) and (recipient, sender),
    //  one row for a message to oneself, last_id moved up to the newest id.
    //  ON CONFLICT DO UPDATE may touch a row once per statement, so one row
    //  per key (GROUP BY, max), inserted in key order so that writers on
    //  the same conversations lock their rows in the same order. The insert
    //  into private_messages is done before (conv reads its RETURNING rows).
    [S_MESSAGE_INSERT_BATCH] = { "message_insert_batch",
        "WITH ins AS ("
        "    INSERT INTO private_messages (sender_id, receiver_id, content, created_at, client_id)"
        "    SELECT b.sender_id, b.receiver_id, b.content, " S_TS ("$4") ", b.client_id"
        "      FROM unnest ($1::bigint[], $2::bigint[], $3::text[], $5::text[])"
        "           WITH ORDINALITY AS b (sender_id, receiver_id, content, client_id, ord)"
        "     ORDER BY b.ord"
        "    ON CONFLICT DO NOTHING RETURNING id, sender_id, receiver_id, client_id"
        "), conv AS ("
        "    INSERT INTO conversations AS c (user_id, partner_id, last_id)"
        "    SELECT e.user_id, e.partner_id, max (e.id)"
        "      FROM (SELECT sender_id AS user_id, receiver_id AS partner_id, id FROM ins"
        "            UNION ALL"
        "            SELECT receiver_id, sender_id, id FROM ins"
        "             WHERE receiver_id <> sender_id) AS e"
        "     GROUP BY e.user_id, e.partner_id"
        "     ORDER BY e.user_id, e.partner_id"
        "    ON CONFLICT (user_id, partner_id)"
        "    DO UPDATE SET last_id = greatest (c.last_id, excluded.last_id)"
        ")"
        " SELECT id, sender_id, client_id FROM ins ORDER BY id", false },
    //  $1 senders, $2 client ids: the first message of each pair, with the
    //  pair's position (1-based) in the arrays
    [S_MESSAGES_BY_CLIENT_ID] = { "messages_by_client_id",
        "SELECT k.ord, m.id, m.receiver_id, m.content, " S_MS ("m.created_at") ", " S_IS_READ ("m")
        "  FROM unnest ($1::bigint[], $2::text[]) WITH ORDINALITY AS k (sender_id, client_id, ord)"
        "  JOIN private_messages m ON m.sender_id = k.sender_id AND m.client_id = k.client_id"
        S_READ_JOIN ("m")
        " WHERE m.client_id IS NOT NULL", false },

    //  $1 user, $2 partner, $3 ids below, $4 limit + 1. Each direction is
    //  one backward range scan of private_messages_conversation of at most
    //  $4 rows; the newest $4 of both, newest first, joined to the
    //  recipients' conversation rows for is_read
    [S_HISTORY] = { "history",
        "SELECT " S_MESSAGE_COLUMNS " FROM ("
        "    (SELECT * FROM private_messages"
        "     WHERE sender_id = $1::bigint AND receiver_id = $2::bigint AND id < $3::bigint"
        "     ORDER BY id DESC LIMIT $4::bigint)"
        "    UNION ALL"
        "    (SELECT * FROM private_messages"
        "     WHERE sender_id = $2::bigint AND receiver_id = $1::bigint AND id < $3::bigint"
        "       AND $1::bigint <> $2::bigint"
        "     ORDER BY id DESC LIMIT $4::bigint)"
        ") AS m JOIN users u ON u.id = m.sender_id" S_READ_JOIN ("m")
        " ORDER BY m.id DESC LIMIT $4::bigint", true },
    //  $1 user, $2 ids above, $3 limit + 1, oldest first. Only the user's
    //  conversations with a message above $2 (their rows by the primary
    //  key, filtered on last_id), and in each, each direction one forward
    //  range scan of private_messages_conversation of at most $3 ids (a
    //  conversation with oneself is one direction), index only; the
    //  lowest $3 ids of all, then those rows by the primary key. So it
    //  costs at most 2 x $3 index entries per conversation active since
    //  $2, whatever the user's history holds, and $3 rows
    [S_SYNC] = { "sync",
        "SELECT " S_MESSAGE_COLUMNS " FROM ("
        "    SELECT x.id FROM conversations c"
        "    CROSS JOIN LATERAL ("
        "        (SELECT id FROM private_messages"
        "         WHERE sender_id = $1::bigint AND receiver_id = c.partner_id AND id > $2::bigint"
        "         ORDER BY id LIMIT $3::bigint)"
        "        UNION ALL"
        "        (SELECT id FROM private_messages"
        "         WHERE sender_id = c.partner_id AND receiver_id = $1::bigint AND id > $2::bigint"
        "           AND c.partner_id <> $1::bigint"
        "         ORDER BY id LIMIT $3::bigint)"
        "    ) AS x"
        "    WHERE c.user_id = $1::bigint AND c.last_id > $2::bigint"
        "    ORDER BY x.id LIMIT $3::bigint"
        ") AS k"
        " JOIN private_messages m ON m.id = k.id"
        " JOIN users u ON u.id = m.sender_id" S_READ_JOIN ("m")
        " ORDER BY m.id", true },
    //  $1 reader, $2 partner, $3 up to id. One row, the number of messages
    //  it marked read, when read_up_to moved; none when nothing changed.
    //  The conversation row is locked first (cur, materialized: before the
    //  update), so old_id is its latest read_up_to even when another handle
    //  moved it meanwhile. The new bound is $3, but never above the
    //  partner's newest message to the reader, so that a later message
    //  does not arrive read: the end of a range of
    //  private_messages_conversation, as is the count. Messages commit in
    //  id order (one persistence handle writes them, and a message insert
    //  holds its conversation rows until it commits), so no message below
    //  that bound can appear later and count as read unseen.
    [S_MARK_READ] = { "mark_read",
        "WITH cur AS MATERIALIZED ("
        "    SELECT read_up_to AS old_id,"
        "           least ($3::bigint, coalesce ((SELECT max (id) FROM private_messages"
        "                                         WHERE sender_id = $2::bigint"
        "                                           AND receiver_id = $1::bigint), 0)) AS new_id"
        "      FROM conversations"
        "     WHERE user_id = $1::bigint AND partner_id = $2::bigint FOR UPDATE"
        "), moved AS ("
        "    UPDATE conversations c SET read_up_to = cur.new_id FROM cur"
        "     WHERE c.user_id = $1::bigint AND c.partner_id = $2::bigint"
        "       AND cur.new_id > cur.old_id"
        "    RETURNING cur.old_id, cur.new_id"
        ")"
        " SELECT (SELECT count (*) FROM private_messages"
        "          WHERE sender_id = $2::bigint AND receiver_id = $1::bigint"
        "            AND id > mv.old_id AND id <= mv.new_id)"
        "   FROM moved mv", false },
    //  $1 user: partner, partner's nickname, last message, unread count.
    //  The user's conversation rows by the primary key, newest first; per
    //  row the last message by its primary key, and the unread count: a
    //  range of private_messages_conversation above read_up_to (with
    //  oneself, one's own messages to oneself, as before migration 2)
    [S_CONVERSATIONS] = { "conversations",
        "SELECT c.partner_id, p.nickname, " S_MESSAGE_COLUMNS ","
        "     (SELECT count (*) FROM private_messages n"
        "       WHERE n.sender_id = c.partner_id AND n.receiver_id = $1::bigint"
        "         AND n.id > c.read_up_to) AS unread"
        " FROM conversations c"
        " JOIN private_messages m ON m.id = c.last_id"
        " JOIN users u ON u.id = m.sender_id" S_READ_JOIN ("m")
        " JOIN users p ON p.id = c.partner_id"
        " WHERE c.user_id = $1::bigint"
        " ORDER BY c.last_id DESC", true },
};


//  --------------------------------------------------------------------------
//  The handle

struct chat_backend_t {
    PGconn *conn;                       //  Our connection (may be broken)
    bool prepared [S_STMT_COUNT];       //  Statement prepared on this connection
    bool in_tx;                         //  Between begin and commit/rollback
    bool tx_failed;                     //  That transaction is lost: commit fails
    bool down;                          //  Connection lost and not yet restored
    PGresult *held;                     //  Backs pointers handed out, until next call
};

//  Parameters of one statement, in text format unless stated otherwise
typedef struct {
    int count;                          //  Parameters set
    const char *values [S_MAX_PARAMS];  //  Text (or bytes); NULL is SQL NULL
    int lengths [S_MAX_PARAMS];         //  Length in bytes, binary only
    int formats [S_MAX_PARAMS];         //  0 text, 1 binary
    char numbers [S_MAX_PARAMS][24];    //  Storage for integers as text
} s_params_t;


static void
s_param_text (s_params_t *params, const char *value)
{
    assert (params->count < S_MAX_PARAMS);
    params->values [params->count++] = value;
}

static void
s_param_int (s_params_t *params, int64_t value)
{
    assert (params->count < S_MAX_PARAMS);
    snprintf (params->numbers [params->count], sizeof params->numbers [0], "%" PRId64, value);
    params->values [params->count] = params->numbers [params->count];
    params->count++;
}

//  Bytes of a given length, sent in binary format (the text type's binary
//  form is its bytes, so nothing needs a terminating NUL or escaping)
static void
s_param_bytes (s_params_t *params, const char *value, size_t len)
{
    assert (params->count < S_MAX_PARAMS);
    assert (len <= INT32_MAX);
    params->values [params->count] = value;
    params->lengths [params->count] = (int) len;
    params->formats [params->count] = 1;
    params->count++;
}

static int64_t
s_int64 (const PGresult *res, int row, int column)
{
    return (int64_t) strtoll (PQgetvalue (res, row, column), NULL, 10);
}


//  --------------------------------------------------------------------------
//  Copy text into buf, collapsing line breaks and runs of white space, so
//  that libpq's multi-line messages make one log or error line

static void
s_one_line (char *buf, size_t size, const char *text)
{
    assert (size > 0);
    size_t used = 0;
    bool space = false;
    for (const char *c = text? text: ""; *c && used + 1 < size; c++) {
        if (*c == '\n' || *c == '\r' || *c == '\t' || *c == ' ') {
            space = used > 0;
            continue;
        }
        if (space && used + 2 < size)
            buf [used++] = ' ';
        space = false;
        buf [used++] = *c;
    }
    buf [used] = 0;
}


//  --------------------------------------------------------------------------
//  Server notices: warnings go to the log, the rest (NOTICE "already
//  exists, skipping" and the like) is dropped

static void
s_notice_receiver (void *arg, const PGresult *res)
{
    (void) arg;
    const char *severity = PQresultErrorField (res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (severity && streq (severity, "WARNING")) {
        char line [512];
        s_one_line (line, sizeof line, PQresultErrorMessage (res));
        zsys_warning ("postgres: %s", line);
    }
}


//  --------------------------------------------------------------------------
//  Free the result that backs pointers handed out by the previous call

static void
s_release (chat_backend_t *self)
{
    if (self->held) {
        PQclear (self->held);
        self->held = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Connect again after the connection broke. Returns 0 or -1.

static int
s_reconnect (chat_backend_t *self)
{
    PQreset (self->conn);
    if (PQstatus (self->conn) != CONNECTION_OK) {
        if (!self->down) {
            char line [512];
            s_one_line (line, sizeof line, PQerrorMessage (self->conn));
            zsys_warning ("postgres: cannot reconnect: %s", line);
        }
        self->down = true;
        return -1;
    }
    memset (self->prepared, 0, sizeof self->prepared);
    if (self->down)
        zsys_info ("postgres: reconnected");
    self->down = false;
    return 0;
}


//  --------------------------------------------------------------------------
//  Run a statement. Returns its result (tuples or command OK; the caller
//  clears it), or NULL with *rc set: CHAT_DB_UNAVAILABLE when the server
//  cannot be reached or failed, CHAT_DB_CONFLICT / CHAT_DB_NOT_FOUND for a
//  unique / foreign key violation (the statements are written not to raise
//  those, but the mapping stays right if one does).

static PGresult *
s_exec (chat_backend_t *self, s_stmt_t stmt, const s_params_t *params, int *rc)
{
    assert (stmt < S_STMT_COUNT);
    s_release (self);
    *rc = CHAT_DB_UNAVAILABLE;

    //  A transaction never moves to another connection
    if (self->in_tx && (self->tx_failed || PQstatus (self->conn) != CONNECTION_OK)) {
        self->tx_failed = true;
        return NULL;
    }
    const s_statement_t *statement = &s_statements [stmt];
    int count = params? params->count: 0;
    for (int attempt = 0; ; attempt++) {
        if (PQstatus (self->conn) != CONNECTION_OK && s_reconnect (self))
            return NULL;

        PGresult *res = NULL;
        if (!self->prepared [stmt]) {
            res = PQprepare (self->conn, statement->name, statement->sql, count, NULL);
            if (PQresultStatus (res) == PGRES_COMMAND_OK) {
                self->prepared [stmt] = true;
                PQclear (res);
                res = NULL;
            }
        }
        if (self->prepared [stmt])
            res = PQexecPrepared (self->conn, statement->name, count,
                                  params? params->values: NULL,
                                  params? params->lengths: NULL,
                                  params? params->formats: NULL, 0);
        ExecStatusType status = PQresultStatus (res);
        if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK)
            return res;

        //  Failed: the connection is gone, or the statement failed
        bool lost = PQstatus (self->conn) != CONNECTION_OK;
        const char *sqlstate = res? PQresultErrorField (res, PG_DIAG_SQLSTATE): NULL;
        if (!lost && sqlstate && streq (sqlstate, "23505"))
            *rc = CHAT_DB_CONFLICT;
        else
        if (!lost && sqlstate && streq (sqlstate, "23503"))
            *rc = CHAT_DB_NOT_FOUND;
        char line [512];
        s_one_line (line, sizeof line, res? PQresultErrorMessage (res): PQerrorMessage (self->conn));
        PQclear (res);
        if (lost) {
            if (!self->down)
                zsys_warning ("postgres: connection lost (%s): %s", statement->name, line);
            self->down = true;
        }
        else
        if (*rc == CHAT_DB_UNAVAILABLE)
            zsys_error ("postgres: %s failed: %s", statement->name, line);

        if (self->in_tx)
            self->tx_failed = true;     //  The server aborted it
        else
        if (lost && statement->retry && attempt == 0)
            continue;                   //  Once more, on a new connection
        return NULL;
    }
}


//  --------------------------------------------------------------------------
//  Run SQL text (any number of statements) at open. Returns 0, or -1 with
//  "PostgreSQL <what> failed: <reason>" in error.

static int
s_exec_simple (PGconn *conn, const char *sql, const char *what, char *error, size_t size)
{
    PGresult *res = PQexec (conn, sql);
    ExecStatusType status = PQresultStatus (res);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
        PQclear (res);
        return 0;
    }
    char line [512];
    s_one_line (line, sizeof line, res? PQresultErrorMessage (res): PQerrorMessage (conn));
    snprintf (error, size, "PostgreSQL %s failed: %s", what, line);
    PQclear (res);
    return -1;
}

//  --------------------------------------------------------------------------
//  Apply the migrations this database lacks, in one transaction, one
//  opener at a time (the advisory lock). Returns 0, or -1 with the reason
//  in error.

static int
s_migrate (PGconn *conn, char *error, size_t size)
{
    if (s_exec_simple (conn,
            "BEGIN;"
            "SET LOCAL client_min_messages = warning;"
            "SELECT pg_advisory_xact_lock (" S_MIGRATION_LOCK_KEY ");"
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "    version integer PRIMARY KEY,"
            "    applied_at timestamptz NOT NULL"
            ")", "migration (lock)", error, size))
        goto failed;

    PGresult *res = PQexec (conn, "SELECT coalesce (max (version), 0) FROM schema_migrations");
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        char line [512];
        s_one_line (line, sizeof line, PQresultErrorMessage (res));
        snprintf (error, size, "PostgreSQL migration failed: %s", line);
        PQclear (res);
        goto failed;
    }
    int version = atoi (PQgetvalue (res, 0, 0));
    PQclear (res);
    if (version > S_MIGRATION_COUNT) {
        snprintf (error, size, "PostgreSQL schema version %d is newer than this chatd knows (%d)",
                  version, S_MIGRATION_COUNT);
        goto failed;
    }
    for (version++; version <= S_MIGRATION_COUNT; version++) {
        char what [64];
        snprintf (what, sizeof what, "migration %d", version);
        if (s_exec_simple (conn, s_migrations [version - 1], what, error, size))
            goto failed;
        char record [128];
        snprintf (record, sizeof record,
                  "INSERT INTO schema_migrations (version, applied_at) VALUES (%d, now ())",
                  version);
        if (s_exec_simple (conn, record, what, error, size))
            goto failed;
        zsys_info ("postgres: applied migration %d", version);
    }
    if (s_exec_simple (conn, "COMMIT", "migration (commit)", error, size))
        goto failed;
    return 0;

failed:
    PQclear (PQexec (conn, "ROLLBACK"));
    return -1;
}


//  --------------------------------------------------------------------------
//  open, close, ping

static void s_close (chat_backend_t **self_p);

static chat_backend_t *
s_open (const chat_config_t *cfg, char *error, size_t size)
{
    assert (cfg);
    assert (error && size > 0);
    *error = 0;

    //  Our defaults first: whatever the conninfo (expanded in place of
    //  dbname) sets comes after them and wins. client_encoding comes last
    //  because every string we exchange is UTF-8.
    const char *keywords [] = {
        "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "application_name",
        "dbname", "client_encoding", NULL
    };
    const char *values [] = {
        S_CONNECT_TIMEOUT_S, "1", S_KEEPALIVES_IDLE_S, S_KEEPALIVES_INTERVAL_S,
        S_KEEPALIVES_COUNT, S_TCP_USER_TIMEOUT_MS, "chatd",
        cfg->postgres_conninfo, "UTF8", NULL
    };
    chat_backend_t *self = (chat_backend_t *) zmalloc (sizeof (chat_backend_t));
    assert (self);
    self->conn = PQconnectdbParams (keywords, values, 1);
    if (!self->conn) {
        snprintf (error, size, "cannot connect to PostgreSQL: out of memory");
        goto failed;
    }
    if (PQstatus (self->conn) != CONNECTION_OK) {
        char line [512];
        s_one_line (line, sizeof line, PQerrorMessage (self->conn));
        snprintf (error, size, "cannot connect to PostgreSQL: %s", line);
        goto failed;
    }
    PQsetNoticeReceiver (self->conn, s_notice_receiver, NULL);
    if (s_migrate (self->conn, error, size))
        goto failed;
    return self;

failed:
    s_close (&self);
    return NULL;
}

static void
s_close (chat_backend_t **self_p)
{
    assert (self_p);
    chat_backend_t *self = *self_p;
    if (self) {
        s_release (self);
        //  An open transaction ends with the session: nothing of it is kept
        if (self->conn)
            PQfinish (self->conn);
        free (self);
        *self_p = NULL;
    }
}

static int
s_ping (chat_backend_t *self)
{
    assert (self);
    int rc;
    PGresult *res = s_exec (self, S_PING, NULL, &rc);
    if (!res)
        return CHAT_DB_UNAVAILABLE;
    PQclear (res);
    return CHAT_DB_OK;
}


//  --------------------------------------------------------------------------
//  Users

static void
s_user_from_row (const PGresult *res, int row, chat_user_t *user)
{
    memset (user, 0, sizeof *user);
    user->id = s_int64 (res, row, 0);
    snprintf (user->nickname, sizeof user->nickname, "%s", PQgetvalue (res, row, 1));
    snprintf (user->password_hash, sizeof user->password_hash, "%s", PQgetvalue (res, row, 2));
}

static int
s_user_create (chat_backend_t *self, const char *nickname, const char *password_hash,
               int64_t now_ms, int64_t *user_id)
{
    assert (self);
    assert (nickname);
    assert (password_hash);
    s_params_t params = { 0 };
    s_param_text (&params, nickname);
    s_param_text (&params, password_hash);
    s_param_int (&params, now_ms);
    int rc;
    PGresult *res = s_exec (self, S_USER_CREATE, &params, &rc);
    if (!res)
        return rc;
    rc = CHAT_DB_CONFLICT;
    if (PQntuples (res) == 1) {
        if (user_id)
            *user_id = s_int64 (res, 0, 0);
        rc = CHAT_DB_OK;
    }
    PQclear (res);
    return rc;
}

static int
s_user_lookup (chat_backend_t *self, s_stmt_t stmt, s_params_t *params, chat_user_t *user)
{
    int rc;
    PGresult *res = s_exec (self, stmt, params, &rc);
    if (!res)
        return rc;
    rc = CHAT_DB_NOT_FOUND;
    if (PQntuples (res) == 1) {
        if (user)
            s_user_from_row (res, 0, user);
        rc = CHAT_DB_OK;
    }
    PQclear (res);
    return rc;
}

static int
s_user_find (chat_backend_t *self, const char *nickname, chat_user_t *user)
{
    assert (self);
    assert (nickname);
    s_params_t params = { 0 };
    s_param_text (&params, nickname);
    return s_user_lookup (self, S_USER_FIND, &params, user);
}

static int
s_user_get (chat_backend_t *self, int64_t user_id, chat_user_t *user)
{
    assert (self);
    s_params_t params = { 0 };
    s_param_int (&params, user_id);
    return s_user_lookup (self, S_USER_GET, &params, user);
}

static int
s_users_list (chat_backend_t *self, chat_user_fn *fn, void *ctx)
{
    assert (self);
    assert (fn);
    int rc;
    PGresult *res = s_exec (self, S_USERS_LIST, NULL, &rc);
    if (!res)
        return rc;
    int rows = PQntuples (res);
    for (int row = 0; row < rows; row++) {
        chat_user_t user;
        s_user_from_row (res, row, &user);
        fn (&user, ctx);
    }
    PQclear (res);
    return CHAT_DB_OK;
}


//  --------------------------------------------------------------------------
//  Sessions

static int
s_session_create (chat_backend_t *self, const char *token_hash, int64_t user_id,
                  int64_t now_ms, int64_t expires_ms)
{
    assert (self);
    assert (token_hash);
    s_params_t params = { 0 };
    s_param_text (&params, token_hash);
    s_param_int (&params, user_id);
    s_param_int (&params, now_ms);
    s_param_int (&params, expires_ms);
    int rc;
    PGresult *res = s_exec (self, S_SESSION_CREATE, &params, &rc);
    if (!res)
        return rc;
    bool stored = PQntuples (res) == 1;
    PQclear (res);
    if (stored)
        return CHAT_DB_OK;

    //  Nothing stored: an unknown user, or a hash that is there already
    rc = s_user_get (self, user_id, NULL);
    return rc == CHAT_DB_OK? CHAT_DB_CONFLICT: rc;
}

static int
s_session_delete (chat_backend_t *self, const char *token_hash)
{
    assert (self);
    assert (token_hash);
    s_params_t params = { 0 };
    s_param_text (&params, token_hash);
    int rc;
    PGresult *res = s_exec (self, S_SESSION_DELETE, &params, &rc);
    if (!res)
        return rc;
    rc = atoll (PQcmdTuples (res)) > 0? CHAT_DB_OK: CHAT_DB_NOT_FOUND;
    PQclear (res);
    return rc;
}

static int
s_sessions_each (chat_backend_t *self, s_stmt_t stmt, int64_t now_ms,
                 chat_session_fn *fn, void *ctx)
{
    s_params_t params = { 0 };
    s_param_int (&params, now_ms);
    int rc;
    PGresult *res = s_exec (self, stmt, &params, &rc);
    if (!res)
        return rc;
    int rows = PQntuples (res);
    for (int row = 0; fn && row < rows; row++)
        fn (PQgetvalue (res, row, 0), s_int64 (res, row, 1),
            PQgetvalue (res, row, 2), s_int64 (res, row, 3), ctx);
    PQclear (res);
    return CHAT_DB_OK;
}

static int
s_sessions_live (chat_backend_t *self, int64_t now_ms, chat_session_fn *fn, void *ctx)
{
    assert (self);
    return s_sessions_each (self, S_SESSIONS_LIVE, now_ms, fn, ctx);
}

static int
s_sessions_expire (chat_backend_t *self, int64_t now_ms, chat_session_fn *fn, void *ctx)
{
    assert (self);
    return s_sessions_each (self, S_SESSIONS_EXPIRE, now_ms, fn, ctx);
}


//  --------------------------------------------------------------------------
//  Transactions

static int
s_begin (chat_backend_t *self)
{
    assert (self);
    if (self->in_tx) {
        zsys_error ("postgres: begin: a transaction is open already");
        return CHAT_DB_UNAVAILABLE;
    }
    int rc;
    PGresult *res = s_exec (self, S_BEGIN, NULL, &rc);
    if (!res)
        return rc;
    PQclear (res);
    self->in_tx = true;
    self->tx_failed = false;
    return CHAT_DB_OK;
}

//  Leave a transaction that cannot commit: roll it back if the connection
//  still works (a lost connection took it with it)
static void
s_abandon (chat_backend_t *self)
{
    PGTransactionStatusType status = PQtransactionStatus (self->conn);
    if (status == PQTRANS_INTRANS || status == PQTRANS_INERROR)
        PQclear (PQexec (self->conn, "ROLLBACK"));
    self->in_tx = false;
    self->tx_failed = false;
}

static int
s_commit (chat_backend_t *self)
{
    assert (self);
    if (!self->in_tx) {
        zsys_error ("postgres: commit: no transaction is open");
        return CHAT_DB_UNAVAILABLE;
    }
    int rc;
    PGresult *res = s_exec (self, S_COMMIT, NULL, &rc);
    if (res) {
        //  COMMIT of a transaction that failed answers ROLLBACK, not an error
        rc = streq (PQcmdStatus (res), "COMMIT")? CHAT_DB_OK: CHAT_DB_UNAVAILABLE;
        PQclear (res);
        self->in_tx = false;
        self->tx_failed = false;
    }
    else {
        s_abandon (self);
        rc = CHAT_DB_UNAVAILABLE;
    }
    if (rc != CHAT_DB_OK)
        zsys_warning ("postgres: commit failed: the whole batch fails");
    return rc;
}

static int
s_rollback (chat_backend_t *self)
{
    assert (self);
    s_release (self);
    if (self->in_tx)
        s_abandon (self);
    //  A lost connection took the transaction with it, but say it is gone
    return PQstatus (self->conn) == CONNECTION_OK? CHAT_DB_OK: CHAT_DB_UNAVAILABLE;
}


//  --------------------------------------------------------------------------
//  Messages

static void
s_message_from_row (const PGresult *res, int row, int column, chat_message_t *message)
{
    message->id = s_int64 (res, row, column);
    message->from_user_id = s_int64 (res, row, column + 1);
    message->to_user_id = s_int64 (res, row, column + 2);
    message->nickname = PQgetvalue (res, row, column + 3);
    message->content = PQgetvalue (res, row, column + 4);
    message->content_len = (size_t) PQgetlength (res, row, column + 4);
    message->created_ms = s_int64 (res, row, column + 5);
    message->is_read = *PQgetvalue (res, row, column + 6) == 't';
    message->client_id = PQgetisnull (res, row, column + 7)? NULL: PQgetvalue (res, row, column + 7);
}

//  A one-dimensional array in PostgreSQL's binary format, built in place

#define S_INT8_OID      20
#define S_TEXT_OID      25

typedef struct {
    char *data;                         //  The bytes so far
    size_t size;                        //  Bytes used
    size_t cap;                         //  Bytes allocated
} s_array_t;

static void
s_array_put (s_array_t *array, const void *bytes, size_t len)
{
    if (array->size + len > array->cap) {
        array->cap = (array->size + len) * 2 + 256;
        array->data = (char *) realloc (array->data, array->cap);
        assert (array->data);
    }
    memcpy (array->data + array->size, bytes, len);
    array->size += len;
}

static void
s_array_u32 (s_array_t *array, uint32_t value)
{
    unsigned char bytes [4] = {
        (unsigned char) (value >> 24), (unsigned char) (value >> 16),
        (unsigned char) (value >> 8), (unsigned char) value
    };
    s_array_put (array, bytes, 4);
}

//  Header: one dimension of count elements of type oid, lower bound 1
static void
s_array_start (s_array_t *array, uint32_t oid, size_t count)
{
    assert (count <= INT32_MAX);
    array->size = 0;
    s_array_u32 (array, 1);             //  Dimensions
    s_array_u32 (array, 1);             //  May hold NULLs
    s_array_u32 (array, oid);
    s_array_u32 (array, (uint32_t) count);
    s_array_u32 (array, 1);             //  Lower bound
}

static void
s_array_int8 (s_array_t *array, int64_t value)
{
    s_array_u32 (array, 8);
    s_array_u32 (array, (uint32_t) ((uint64_t) value >> 32));
    s_array_u32 (array, (uint32_t) value);
}

//  Text bytes (UTF-8, the client encoding), or NULL
static void
s_array_text (s_array_t *array, const char *text, size_t len)
{
    if (!text) {
        s_array_u32 (array, UINT32_MAX);     //  -1: NULL
        return;
    }
    assert (len <= INT32_MAX);
    s_array_u32 (array, (uint32_t) len);
    s_array_put (array, text, len);
}

static int
s_int64_compare (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y? -1: x > y? 1: 0;
}

//  The key of a (sender, client_id) pair in message_store_batch's owners
static char *
s_owner_key (const chat_message_t *message)
{
    char *key = zsys_sprintf ("%" PRId64 " %s", message->from_user_id, message->client_id);
    assert (key);
    return key;
}

//  What message_store_batch knows of each message while it works
typedef enum {
    S_PENDING_NOT_FOUND,                //  A user is unknown, unless a duplicate
    S_PENDING_INSERT,                   //  To insert
    S_PENDING_CONFLICT,                 //  Insert skipped: a duplicate from before
    S_PENDING_EARLIER,                  //  Duplicate of an earlier one of the batch
    S_PENDING_DONE                      //  Result known
} s_pending_t;

//  A batch is at most three round trips whatever its size: which users
//  exist (one query), one INSERT of every new message (ON CONFLICT DO
//  NOTHING RETURNING), and, only when there are duplicates or unknown
//  users with a client_id, one look-up of the first messages. Duplicates
//  inside the batch are found here, before the insert, by (sender,
//  client_id); the first message that can be stored owns the client_id.

static int
s_message_store_batch (chat_backend_t *self, chat_message_t *messages, size_t count,
                       int *results, bool *duplicates)
{
    assert (self);
    assert (messages || count == 0);
    assert (results || count == 0);
    s_release (self);
    if (count == 0)
        return CHAT_DB_OK;
    assert (count <= INT32_MAX / 2);
    int64_t now_ms = chat_now_ms ();
    int rc = CHAT_DB_OK;
    PGresult *res = NULL;
    s_array_t arrays [4] = { { 0 } };
    s_pending_t *state = (s_pending_t *) calloc (count, sizeof (s_pending_t));
    size_t *earlier = (size_t *) calloc (count, sizeof (size_t));
    size_t *order = (size_t *) calloc (count, sizeof (size_t));
    int64_t *known = (int64_t *) calloc (2 * count, sizeof (int64_t));
    zhashx_t *owners = zhashx_new ();   //  "sender client_id" -> first index + 1
    assert (state && earlier && order && known && owners);

    //  1. Which senders and recipients exist
    s_array_start (&arrays [0], S_INT8_OID, 2 * count);
    for (size_t i = 0; i < count; i++) {
        s_array_int8 (&arrays [0], messages [i].from_user_id);
        s_array_int8 (&arrays [0], messages [i].to_user_id);
    }
    s_params_t params = { 0 };
    s_param_bytes (&params, arrays [0].data, arrays [0].size);
    res = s_exec (self, S_USERS_EXIST, &params, &rc);
    if (!res)
        goto done;
    rc = CHAT_DB_OK;                    //  s_exec leaves UNAVAILABLE there
    size_t nknown = (size_t) PQntuples (res);
    assert (nknown <= 2 * count);
    for (size_t row = 0; row < nknown; row++)
        known [row] = s_int64 (res, (int) row, 0);
    PQclear (res);
    res = NULL;
    qsort (known, nknown, sizeof (int64_t), s_int64_compare);
    if (duplicates)
        memset (duplicates, 0, count * sizeof (bool));

    //  2. Decide each message's fate as far as the batch alone tells
    size_t inserts = 0;
    for (size_t i = 0; i < count; i++) {
        chat_message_t *message = &messages [i];
        assert (message->content || message->content_len == 0);
        bool users = bsearch (&message->from_user_id, known, nknown, sizeof (int64_t), s_int64_compare)
                  && bsearch (&message->to_user_id, known, nknown, sizeof (int64_t), s_int64_compare);
        state [i] = users? S_PENDING_INSERT: S_PENDING_NOT_FOUND;
        if (message->client_id) {
            char *key = s_owner_key (message);
            size_t owner = (size_t) (uintptr_t) zhashx_lookup (owners, key);
            if (owner) {
                state [i] = S_PENDING_EARLIER;
                earlier [i] = owner - 1;
            }
            else
            if (users)
                zhashx_insert (owners, key, (void *) (uintptr_t) (i + 1));
            zstr_free (&key);
        }
        if (state [i] == S_PENDING_INSERT)
            order [inserts++] = i;
    }

    //  3. Insert the new ones in one statement
    if (inserts) {
        for (int a = 0; a < 4; a++)
            s_array_start (&arrays [a], a < 2? S_INT8_OID: S_TEXT_OID, inserts);
        for (size_t k = 0; k < inserts; k++) {
            chat_message_t *message = &messages [order [k]];
            s_array_int8 (&arrays [0], message->from_user_id);
            s_array_int8 (&arrays [1], message->to_user_id);
            s_array_text (&arrays [2], message->content? message->content: "", message->content_len);
            s_array_text (&arrays [3], message->client_id,
                          message->client_id? strlen (message->client_id): 0);
        }
        params.count = 0;
        s_param_bytes (&params, arrays [0].data, arrays [0].size);
        s_param_bytes (&params, arrays [1].data, arrays [1].size);
        s_param_bytes (&params, arrays [2].data, arrays [2].size);
        s_param_int (&params, now_ms);
        s_param_bytes (&params, arrays [3].data, arrays [3].size);
        res = s_exec (self, S_MESSAGE_INSERT_BATCH, &params, &rc);
        if (!res)
            goto done;
        rc = CHAT_DB_OK;                    //  s_exec leaves UNAVAILABLE there
        //  The rows come in insert order; a message without its row was
        //  skipped as a duplicate (no two of them share sender and client_id)
        size_t rows = (size_t) PQntuples (res);
        size_t row = 0;
        for (size_t k = 0; k < inserts; k++) {
            chat_message_t *message = &messages [order [k]];
            bool match = row < rows
                && s_int64 (res, (int) row, 1) == message->from_user_id
                && (message->client_id
                    ? !PQgetisnull (res, (int) row, 2)
                      && streq (PQgetvalue (res, (int) row, 2), message->client_id)
                    : PQgetisnull (res, (int) row, 2));
            if (match) {
                message->id = s_int64 (res, (int) row, 0);
                message->created_ms = now_ms;
                message->is_read = false;
                state [order [k]] = S_PENDING_DONE;
                results [order [k]] = CHAT_DB_OK;
                if (duplicates)
                    duplicates [order [k]] = false;
                row++;
            }
            else
                state [order [k]] = S_PENDING_CONFLICT;
        }
        PQclear (res);
        res = NULL;
        if (row != rows) {
            zsys_error ("postgres: message_insert_batch: %zu rows do not match the batch", rows - row);
            rc = CHAT_DB_UNAVAILABLE;
            goto done;
        }
    }

    //  4. Look up the first message of every client_id that was used before
    size_t lookups = 0;
    for (size_t i = 0; i < count; i++) {
        if (state [i] == S_PENDING_CONFLICT
        || (state [i] == S_PENDING_NOT_FOUND && messages [i].client_id))
            order [lookups++] = i;
        else
        if (state [i] == S_PENDING_NOT_FOUND) {
            results [i] = CHAT_DB_NOT_FOUND;
            state [i] = S_PENDING_DONE;
        }
    }
    if (lookups) {
        s_array_start (&arrays [0], S_INT8_OID, lookups);
        s_array_start (&arrays [1], S_TEXT_OID, lookups);
        for (size_t k = 0; k < lookups; k++) {
            chat_message_t *message = &messages [order [k]];
            s_array_int8 (&arrays [0], message->from_user_id);
            s_array_text (&arrays [1], message->client_id, strlen (message->client_id));
        }
        params.count = 0;
        s_param_bytes (&params, arrays [0].data, arrays [0].size);
        s_param_bytes (&params, arrays [1].data, arrays [1].size);
        res = s_exec (self, S_MESSAGES_BY_CLIENT_ID, &params, &rc);
        if (!res)
            goto done;
        rc = CHAT_DB_OK;                    //  s_exec leaves UNAVAILABLE there
        int rows = PQntuples (res);
        for (int row = 0; row < rows; row++) {
            int64_t ord = s_int64 (res, row, 0);
            assert (ord >= 1 && (size_t) ord <= lookups);
            size_t i = order [ord - 1];
            chat_message_t *message = &messages [i];
            if (state [i] == S_PENDING_NOT_FOUND) {
                //  A later message of this batch may own the client_id now:
                //  this one came first, so it was refused, not a duplicate
                char *key = s_owner_key (message);
                size_t owner = (size_t) (uintptr_t) zhashx_lookup (owners, key);
                zstr_free (&key);
                if (owner && state [owner - 1] == S_PENDING_DONE
                &&  messages [owner - 1].id == s_int64 (res, row, 1))
                    continue;
            }
            //  As the first one was stored; sender and client_id are the same
            message->id = s_int64 (res, row, 1);
            message->to_user_id = s_int64 (res, row, 2);
            message->content = PQgetvalue (res, row, 3);
            message->content_len = (size_t) PQgetlength (res, row, 3);
            message->created_ms = s_int64 (res, row, 4);
            message->is_read = *PQgetvalue (res, row, 5) == 't';
            state [i] = S_PENDING_DONE;
            results [i] = CHAT_DB_OK;
            if (duplicates)
                duplicates [i] = true;
        }
        self->held = res;               //  Backs the contents, until the next call
        res = NULL;
        for (size_t k = 0; k < lookups; k++) {
            size_t i = order [k];
            if (state [i] == S_PENDING_CONFLICT) {
                zsys_error ("postgres: message_store_batch: the first message of a client_id is gone");
                rc = CHAT_DB_UNAVAILABLE;
                goto done;
            }
            if (state [i] == S_PENDING_NOT_FOUND) {
                results [i] = CHAT_DB_NOT_FOUND;
                state [i] = S_PENDING_DONE;
            }
        }
    }

    //  5. Duplicates inside the batch answer what their first one got
    for (size_t i = 0; i < count; i++) {
        if (state [i] != S_PENDING_EARLIER)
            continue;
        const chat_message_t *first = &messages [earlier [i]];
        assert (earlier [i] < i && state [earlier [i]] == S_PENDING_DONE);
        assert (results [earlier [i]] == CHAT_DB_OK);
        messages [i].id = first->id;
        messages [i].to_user_id = first->to_user_id;
        messages [i].content = first->content;
        messages [i].content_len = first->content_len;
        messages [i].created_ms = first->created_ms;
        messages [i].is_read = first->is_read;
        results [i] = CHAT_DB_OK;
        if (duplicates)
            duplicates [i] = true;
        state [i] = S_PENDING_DONE;
    }

done:
    PQclear (res);
    for (int a = 0; a < 4; a++)
        free (arrays [a].data);
    zhashx_destroy (&owners);
    free (state);
    free (earlier);
    free (order);
    free (known);
    return rc;
}

//  Hand rows [0, count) of res to fn, in ascending or descending row order
static void
s_messages_each (const PGresult *res, int count, bool reverse, chat_message_fn *fn, void *ctx)
{
    for (int index = 0; index < count; index++) {
        chat_message_t message;
        s_message_from_row (res, reverse? count - 1 - index: index, 0, &message);
        fn (&message, ctx);
    }
}

//  Run a page query asked for limit + 1 rows: pass the first `limit` to fn
//  (in reverse when the query returns newest first), has_more if there
//  was one more
static int
s_page (chat_backend_t *self, s_stmt_t statement, const s_params_t *params, int limit, bool reverse,
        chat_message_fn *fn, void *ctx, bool *has_more)
{
    int rc;
    PGresult *res = s_exec (self, statement, params, &rc);
    if (!res)
        return rc;
    int rows = PQntuples (res);
    if (has_more)
        *has_more = rows > limit;
    s_messages_each (res, rows > limit? limit: rows, reverse, fn, ctx);
    PQclear (res);
    return CHAT_DB_OK;
}

static int
s_history (chat_backend_t *self, int64_t user_id, int64_t with_user_id,
           int64_t before_id, int limit, chat_message_fn *fn, void *ctx, bool *has_more)
{
    assert (self);
    assert (fn);
    if (has_more)
        *has_more = false;
    if (limit < 0)
        limit = 0;
    s_params_t params = { 0 };
    s_param_int (&params, user_id);
    s_param_int (&params, with_user_id);
    s_param_int (&params, before_id > 0? before_id: INT64_MAX);
    s_param_int (&params, (int64_t) limit + 1);
    //  Newest first: the first `limit` rows, oldest of them first
    return s_page (self, S_HISTORY, &params, limit, true, fn, ctx, has_more);
}

static int
s_sync (chat_backend_t *self, int64_t user_id, int64_t after_id, int limit,
        chat_message_fn *fn, void *ctx, bool *has_more)
{
    assert (self);
    assert (fn);
    if (has_more)
        *has_more = false;
    if (limit < 0)
        limit = 0;
    s_params_t params = { 0 };
    s_param_int (&params, user_id);
    s_param_int (&params, after_id > 0? after_id: 0);
    s_param_int (&params, (int64_t) limit + 1);
    return s_page (self, S_SYNC, &params, limit, false, fn, ctx, has_more);
}

static int
s_mark_read (chat_backend_t *self, int64_t reader_id, int64_t partner_id,
             int64_t up_to_id, int64_t *changed)
{
    assert (self);
    if (changed)
        *changed = 0;
    s_params_t params = { 0 };
    s_param_int (&params, reader_id);
    s_param_int (&params, partner_id);
    s_param_int (&params, up_to_id);
    int rc;
    PGresult *res = s_exec (self, S_MARK_READ, &params, &rc);
    if (!res)
        return rc;
    //  A row when read_up_to moved: how many messages that marked read
    if (changed)
        *changed = PQntuples (res) == 1? s_int64 (res, 0, 0): 0;
    PQclear (res);
    return CHAT_DB_OK;
}

static int
s_conversations (chat_backend_t *self, int64_t user_id, chat_conversation_fn *fn, void *ctx)
{
    assert (self);
    assert (fn);
    s_params_t params = { 0 };
    s_param_int (&params, user_id);
    int rc;
    PGresult *res = s_exec (self, S_CONVERSATIONS, &params, &rc);
    if (!res)
        return rc;
    int rows = PQntuples (res);
    for (int row = 0; row < rows; row++) {
        chat_conversation_t conv;
        conv.user_id = s_int64 (res, row, 0);
        conv.nickname = PQgetvalue (res, row, 1);
        s_message_from_row (res, row, 2, &conv.last_message);
        conv.unread = s_int64 (res, row, 2 + S_MESSAGE_COLUMN_COUNT);
        fn (&conv, ctx);
    }
    PQclear (res);
    return CHAT_DB_OK;
}


//  --------------------------------------------------------------------------

const chat_backend_ops_t chat_backend_postgres = {
    .name = "postgres",
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
