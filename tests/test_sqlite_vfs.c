/*  =========================================================================
    test_sqlite_vfs.c - the SQLite backend's VFS gathers WAL writes and
    loses none of them

    A counting VFS is made the default before the backend first opens a
    database, so the backend's VFS (backends/sqlite_vfs.c) sits on top of
    it and every write it hands on is counted, per kind of file. Checks:
    a commit of many pages reaches the -wal file in a few large writes, not
    two per page; what is committed is there for another connection (on
    the default VFS, reading the file itself) at once and after a reopen,
    also for a commit larger than the VFS's buffer; a rolled-back batch
    leaves nothing, also when it had spilled frames into the WAL and
    another connection commits next; a write that fails fails the commit;
    with synchronous = normal nothing is gathered.
    =========================================================================
*/

#include "test_util.h"
#include "chat_backend.h"
#include "chat_config.h"
#include "../backends/sqlite_vfs.h"
#include <inttypes.h>
#include <sqlite3.h>

//  --------------------------------------------------------------------------
//  The counting VFS: the default one, with xWrite counted on -wal files

typedef struct {
    sqlite3_file base;
    sqlite3_file *real;
    const sqlite3_io_methods *methods;  //  The real file's
    bool wal;
} s_counted_t;

static sqlite3_vfs s_counting;
static sqlite3_io_methods s_counted_methods;
static int s_wal_writes;                //  xWrite calls on -wal files
static int64_t s_wal_bytes;             //  Bytes they wrote
static bool s_fail_gathered;            //  Fail the next write of many frames

#define S_REAL ((sqlite3_vfs *) s_counting.pAppData)

static int
s_counted_write (sqlite3_file *file, const void *data, int amount, sqlite3_int64 offset)
{
    s_counted_t *self = (s_counted_t *) file;
    if (self->wal) {
        if (s_fail_gathered && amount > 2 * 4120) {
            s_fail_gathered = false;
            return SQLITE_IOERR_WRITE;
        }
        s_wal_writes++;
        s_wal_bytes += amount;
    }
    return self->methods->xWrite (self->real, data, amount, offset);
}

//  Every other method forwards to the real file
#define S_FORWARD(name, proto, call) \
    static int name proto { s_counted_t *self = (s_counted_t *) file; return self->methods->call; }
S_FORWARD (s_c_close, (sqlite3_file *file), xClose (self->real))
S_FORWARD (s_c_read, (sqlite3_file *file, void *d, int n, sqlite3_int64 o), xRead (self->real, d, n, o))
S_FORWARD (s_c_truncate, (sqlite3_file *file, sqlite3_int64 n), xTruncate (self->real, n))
S_FORWARD (s_c_sync, (sqlite3_file *file, int f), xSync (self->real, f))
S_FORWARD (s_c_size, (sqlite3_file *file, sqlite3_int64 *n), xFileSize (self->real, n))
S_FORWARD (s_c_lock, (sqlite3_file *file, int l), xLock (self->real, l))
S_FORWARD (s_c_unlock, (sqlite3_file *file, int l), xUnlock (self->real, l))
S_FORWARD (s_c_reserved, (sqlite3_file *file, int *out), xCheckReservedLock (self->real, out))
S_FORWARD (s_c_control, (sqlite3_file *file, int op, void *arg), xFileControl (self->real, op, arg))
S_FORWARD (s_c_sector, (sqlite3_file *file), xSectorSize (self->real))
S_FORWARD (s_c_device, (sqlite3_file *file), xDeviceCharacteristics (self->real))
S_FORWARD (s_c_shm_map, (sqlite3_file *file, int r, int s, int e, void volatile **out), xShmMap (self->real, r, s, e, out))
S_FORWARD (s_c_shm_lock, (sqlite3_file *file, int o, int n, int f), xShmLock (self->real, o, n, f))
S_FORWARD (s_c_shm_unmap, (sqlite3_file *file, int d), xShmUnmap (self->real, d))
S_FORWARD (s_c_fetch, (sqlite3_file *file, sqlite3_int64 o, int n, void **out), xFetch (self->real, o, n, out))
S_FORWARD (s_c_unfetch, (sqlite3_file *file, sqlite3_int64 o, void *p), xUnfetch (self->real, o, p))

static void
s_c_barrier (sqlite3_file *file)
{
    s_counted_t *self = (s_counted_t *) file;
    self->methods->xShmBarrier (self->real);
}

static int
s_counting_open (sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out)
{
    (void) vfs;
    s_counted_t *self = (s_counted_t *) file;
    memset (self, 0, sizeof *self);
    self->real = (sqlite3_file *) (self + 1);
    int rc = S_REAL->xOpen (S_REAL, name, self->real, flags, out);
    if (rc != SQLITE_OK || !self->real->pMethods) {
        self->base.pMethods = NULL;
        return rc != SQLITE_OK? rc: SQLITE_CANTOPEN;
    }
    self->methods = self->real->pMethods;
    self->wal = (flags & SQLITE_OPEN_WAL) != 0;
    self->base.pMethods = &s_counted_methods;
    return SQLITE_OK;
}

//  Install the counting VFS as the default, before anything else opens
static int
s_setup (void **state)
{
    (void) state;
    sqlite3_vfs *real = sqlite3_vfs_find (NULL);
    assert_non_null (real);
    s_counting = *real;
    s_counting.zName = "counting";
    s_counting.pAppData = real;
    s_counting.szOsFile = (int) sizeof (s_counted_t) + real->szOsFile;
    s_counting.xOpen = s_counting_open;
    s_counting.pNext = NULL;
    s_counted_methods = (sqlite3_io_methods) {
        3, s_c_close, s_c_read, s_counted_write, s_c_truncate, s_c_sync, s_c_size,
        s_c_lock, s_c_unlock, s_c_reserved, s_c_control, s_c_sector, s_c_device,
        s_c_shm_map, s_c_shm_lock, s_c_barrier, s_c_shm_unmap, s_c_fetch, s_c_unfetch
    };
    assert_int_equal (sqlite3_vfs_register (&s_counting, 1), SQLITE_OK);
    return 0;
}


//  --------------------------------------------------------------------------
//  Helpers

typedef struct {
    char *dir;
    chat_config_t cfg;
    chat_backend_t *db;
    const chat_backend_ops_t *ops;
    int64_t ann, ben;
} s_fixture_t;

static void
s_open (s_fixture_t *f, const char *synchronous)
{
    memset (f, 0, sizeof *f);
    f->dir = chat_test_tmpdir ();
    chat_config_defaults (&f->cfg);
    snprintf (f->cfg.sqlite_path, sizeof f->cfg.sqlite_path, "%s/chat.db", f->dir);
    snprintf (f->cfg.sqlite_synchronous, sizeof f->cfg.sqlite_synchronous, "%s", synchronous);
    f->ops = &chat_backend_sqlite;
    char error [256] = "";
    f->db = f->ops->open (&f->cfg, error, sizeof error);
    assert_non_null (f->db);
    assert_int_equal (f->ops->user_create (f->db, "ann", "h", 1, &f->ann), CHAT_DB_OK);
    assert_int_equal (f->ops->user_create (f->db, "ben", "h", 1, &f->ben), CHAT_DB_OK);
}

static void
s_close (s_fixture_t *f)
{
    f->ops->close (&f->db);
    chat_test_rmdir (&f->dir);
}

//  Store count messages of size bytes each in one transaction; commit or not
static void
s_store (s_fixture_t *f, int count, size_t size, const char *prefix, bool commit)
{
    chat_message_t *messages = (chat_message_t *) calloc ((size_t) count, sizeof *messages);
    int *results = (int *) calloc ((size_t) count, sizeof *results);
    char **ids = (char **) calloc ((size_t) count, sizeof *ids);
    char *content = (char *) malloc (size);
    memset (content, 'm', size);
    for (int i = 0; i < count; i++) {
        ids [i] = (char *) malloc (32);
        snprintf (ids [i], 32, "%s-%d", prefix, i);
        messages [i].from_user_id = i % 2? f->ann: f->ben;
        messages [i].to_user_id = i % 2? f->ben: f->ann;
        messages [i].content = content;
        messages [i].content_len = size;
        messages [i].client_id = ids [i];
    }
    assert_int_equal (f->ops->begin (f->db), CHAT_DB_OK);
    assert_int_equal (f->ops->message_store_batch (f->db, messages, (size_t) count, results, NULL),
                      CHAT_DB_OK);
    for (int i = 0; i < count; i++)
        assert_int_equal (results [i], CHAT_DB_OK);
    if (commit)
        assert_int_equal (f->ops->commit (f->db), CHAT_DB_OK);
    else
        f->ops->rollback (f->db);
    for (int i = 0; i < count; i++)
        free (ids [i]);
    free (ids);
    free (content);
    free (results);
    free (messages);
}

//  Messages in the file, counted by a connection of its own on the
//  default VFS, the way another process would see them
static int64_t
s_count_raw (const char *path)
{
    sqlite3 *raw = NULL;
    assert_int_equal (sqlite3_open_v2 (path, &raw, SQLITE_OPEN_READONLY, "unix"), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (raw, "SELECT count (*) FROM private_messages", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    int64_t count = sqlite3_column_int64 (stmt, 0);
    sqlite3_finalize (stmt);
    sqlite3_close (raw);
    return count;
}


//  --------------------------------------------------------------------------
//  Tests

//  A commit of many pages reaches the -wal file in a few writes
static void
test_gathered (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f, "full");
    s_wal_writes = 0;
    s_wal_bytes = 0;
    //  200 messages of 400 bytes: about 30 table pages, plus index and
    //  conversation pages; each page is a frame of 4,120 bytes
    s_store (&f, 200, 400, "g", true);
    int64_t frames = s_wal_bytes / 4120;
    assert_true (frames >= 20);
    //  Ungathered this would be two writes per frame; gathered it is one
    //  per 31 frames (the buffer), plus the WAL header and the padding
    assert_true (s_wal_writes <= frames / 31 + 4);
    assert_int_equal (s_count_raw (f.cfg.sqlite_path), 200);
    s_close (&f);
}

//  Larger than the buffer, many times: all there, now and after a reopen
static void
test_large_commit (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f, "full");
    s_store (&f, 2000, 1000, "l", true);        //  About 2 MB of frames
    assert_int_equal (s_count_raw (f.cfg.sqlite_path), 2000);
    s_store (&f, 3, 10, "m", true);
    assert_int_equal (s_count_raw (f.cfg.sqlite_path), 2003);
    f.ops->close (&f.db);
    //  Reopened: the WAL is read back (and checkpointed) through the VFS
    char error [256] = "";
    f.db = f.ops->open (&f.cfg, error, sizeof error);
    assert_non_null (f.db);
    assert_int_equal (s_count_raw (f.cfg.sqlite_path), 2003);
    s_close (&f);
}

//  A rolled-back batch leaves nothing, and the next commit is whole
static void
test_rollback (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f, "full");
    s_store (&f, 500, 300, "r", false);
    assert_int_equal (s_count_raw (f.cfg.sqlite_path), 0);
    s_store (&f, 100, 300, "s", true);
    assert_int_equal (s_count_raw (f.cfg.sqlite_path), 100);
    s_close (&f);
}

static void
s_exec_ok (sqlite3 *db, const char *sql)
{
    char *error = NULL;
    int rc = sqlite3_exec (db, sql, NULL, NULL, &error);
    if (rc != SQLITE_OK)
        fail_msg ("%s: %s", sql, error? error: sqlite3_errstr (rc));
}

static sqlite3 *
s_connect (const char *path, const char *vfs)
{
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READWRITE, vfs), SQLITE_OK);
    s_exec_ok (db, "PRAGMA synchronous = FULL");
    return db;
}

//  Insert count rows of 1,000 copies of fill into scratch
static void
s_insert_rows (sqlite3 *db, int count, char fill)
{
    char sql [256];
    snprintf (sql, sizeof sql,
        "WITH RECURSIVE k (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < %d)"
        " INSERT INTO scratch SELECT n, printf ('%%.1000c', '%c') FROM k", count, fill);
    s_exec_ok (db, sql);
}

//  A transaction too big for its page cache spills frames into the WAL
//  before it commits. Rolled back, those frames must never reach the file:
//  another connection commits at the same offsets next, and the first
//  connection's next use of the file must not overwrite that commit.
static void
test_rollback_after_spill (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f, "full");                //  The schema, and the VFS registered
    f.ops->close (&f.db);
    const char *path = f.cfg.sqlite_path;

    //  2,000 rows, all in the database file (the WAL emptied)
    sqlite3 *a = s_connect (path, CHAT_SQLITE_VFS);
    s_exec_ok (a, "CREATE TABLE scratch (n INTEGER, body TEXT)");
    s_insert_rows (a, 2000, 'x');
    s_exec_ok (a, "PRAGMA wal_checkpoint (TRUNCATE)");
    //  Rewrite them all with a cache of 16 pages: each page is read from
    //  the database file and spilled to the WAL, none read back, so the
    //  last frames are still gathered at the rollback
    s_exec_ok (a, "PRAGMA cache_size = 16");
    int64_t before = s_wal_bytes;
    s_exec_ok (a, "BEGIN");
    s_exec_ok (a, "UPDATE scratch SET body = printf ('%.1000c', 'a')");
    assert_true (s_wal_bytes > before);             //  It did spill
    s_exec_ok (a, "ROLLBACK");

    //  b commits more than a spilled, over the same frames
    sqlite3 *b = s_connect (path, CHAT_SQLITE_VFS);
    s_exec_ok (b, "BEGIN IMMEDIATE");
    s_insert_rows (b, 3000, 'b');
    s_exec_ok (b, "COMMIT");

    //  a reads and writes again (and would hand on anything it still held)
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (a, "SELECT count (*) FROM scratch", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_int_equal (sqlite3_column_int64 (stmt, 0), 5000);
    sqlite3_finalize (stmt);
    s_exec_ok (a, "INSERT INTO scratch VALUES (5001, 'a')");

    //  A third connection, on the default VFS, finds the file whole
    sqlite3 *c = s_connect (path, "unix");
    assert_int_equal (sqlite3_prepare_v2 (c, "PRAGMA integrity_check", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_string_equal ((const char *) sqlite3_column_text (stmt, 0), "ok");
    sqlite3_finalize (stmt);
    assert_int_equal (sqlite3_prepare_v2 (c, "SELECT count (*), sum (body = printf ('%.1000c', 'b'))"
                                             " FROM scratch", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_int_equal (sqlite3_column_int64 (stmt, 0), 5001);
    assert_int_equal (sqlite3_column_int64 (stmt, 1), 3000);
    sqlite3_finalize (stmt);
    sqlite3_close (c);
    sqlite3_close (b);
    sqlite3_close (a);
    chat_test_rmdir (&f.dir);
}

//  A gathered write that fails fails the commit: nothing of the batch is
//  stored, and the next batch commits as usual
static void
test_failed_write (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f, "full");
    s_store (&f, 100, 300, "f", true);
    s_fail_gathered = true;
    chat_message_t messages [200];
    int results [200];
    char ids [200][16];
    memset (messages, 0, sizeof messages);
    for (int i = 0; i < 200; i++) {
        snprintf (ids [i], sizeof ids [i], "x-%d", i);
        messages [i].from_user_id = f.ann;
        messages [i].to_user_id = f.ben;
        messages [i].content = "lost";
        messages [i].content_len = 4;
        messages [i].client_id = ids [i];
    }
    assert_int_equal (f.ops->begin (f.db), CHAT_DB_OK);
    assert_int_equal (f.ops->message_store_batch (f.db, messages, 200, results, NULL), CHAT_DB_OK);
    assert_int_not_equal (f.ops->commit (f.db), CHAT_DB_OK);
    f.ops->rollback (f.db);
    assert_false (s_fail_gathered);                 //  The failure was used
    assert_int_equal (s_count_raw (f.cfg.sqlite_path), 100);
    s_store (&f, 50, 300, "g", true);
    assert_int_equal (s_count_raw (f.cfg.sqlite_path), 150);
    s_close (&f);
}

//  synchronous = normal publishes a commit without syncing the -wal file:
//  such a database is opened on the default VFS, nothing is gathered
static void
test_normal_not_gathered (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f, "normal");
    s_wal_writes = 0;
    s_wal_bytes = 0;
    s_store (&f, 200, 400, "n", true);
    int64_t frames = s_wal_bytes / 4120;
    assert_true (frames >= 20);
    assert_true (s_wal_writes >= 2 * frames);
    assert_int_equal (s_count_raw (f.cfg.sqlite_path), 200);
    s_close (&f);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_gathered),
        cmocka_unit_test (test_large_commit),
        cmocka_unit_test (test_rollback),
        cmocka_unit_test (test_rollback_after_spill),
        cmocka_unit_test (test_failed_write),
        cmocka_unit_test (test_normal_not_gathered),
    };
    return cmocka_run_group_tests (tests, s_setup, NULL);
}
