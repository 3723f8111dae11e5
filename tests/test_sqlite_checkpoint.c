/*  =========================================================================
    test_sqlite_checkpoint.c - the SQLite backend's checkpoints run off the
    commit path and lose nothing

    A writer connection on chatd's VFS (as the backend opens one) gets its
    checkpoints from backends/sqlite_checkpoint.c with a small threshold
    (64 pages), then commits transactions of about a page each. Checks: the
    checkpointer (its own thread) runs the checkpoints and the WAL starts
    over, again and again, staying near the threshold; everything committed
    is in the file, whole, after the writer closes; a reader that holds an
    old snapshot keeps it, and the WAL does not start over under it, until
    it lets go; stopping the checkpointer while it works is clean.
    =========================================================================
*/

#include "test_util.h"
#include "../backends/sqlite_checkpoint.h"
#include "../backends/sqlite_vfs.h"
#include <dirent.h>
#include <sqlite3.h>

#define S_THRESHOLD 64                  //  WAL pages that ask for a checkpoint

typedef struct {
    char *dir;
    char path [512];
    sqlite3 *db;                        //  The writer
    sqlite3_stmt *insert;
    chat_sqlite_ckpt_t *ckpt;
    int rows;                           //  Committed so far
} s_fixture_t;

static void
s_open (s_fixture_t *f)
{
    memset (f, 0, sizeof *f);
    f->dir = chat_test_tmpdir ();
    snprintf (f->path, sizeof f->path, "%s/chat.db", f->dir);
    assert_int_equal (chat_sqlite_vfs_register (), 0);
    assert_int_equal (sqlite3_open_v2 (f->path, &f->db,
                                       SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                       CHAT_SQLITE_VFS), SQLITE_OK);
    sqlite3_busy_timeout (f->db, 5000);
    chat_test_sql (f->db, "PRAGMA journal_mode = WAL");
    chat_test_sql (f->db, "PRAGMA synchronous = FULL");
    chat_test_sql (f->db, "CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)");
    assert_int_equal (sqlite3_prepare_v2 (f->db, "INSERT INTO t (body) VALUES (zeroblob (3000))",
                                          -1, &f->insert, NULL), SQLITE_OK);
    f->ckpt = chat_sqlite_ckpt_new (f->db, f->path, CHAT_SQLITE_VFS,
                                    "PRAGMA synchronous = FULL", S_THRESHOLD);
    assert_non_null (f->ckpt);
}

//  One transaction of one row (a page of its own, and a few more)
static void
s_commit_row (s_fixture_t *f)
{
    assert_int_equal (sqlite3_step (f->insert), SQLITE_DONE);
    sqlite3_reset (f->insert);
    f->rows++;
}

//  Commit rows until the WAL has started over restarts times (or 10 s)
static void
s_commit_until_restarts (s_fixture_t *f, uint64_t restarts)
{
    int64_t deadline = zclock_mono () + 10000;
    while (chat_sqlite_ckpt_stats (f->ckpt).restarts < restarts && zclock_mono () < deadline)
        s_commit_row (f);
    assert_true (chat_sqlite_ckpt_stats (f->ckpt).restarts >= restarts);
}

//  Rows in the file and its integrity, seen by a new connection on the
//  default VFS after the writer has closed
static void
s_check_file (const char *path, int rows)
{
    sqlite3 *db = NULL;
    assert_int_equal (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY, "unix"), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, "SELECT count (*), min (length (body)) FROM t",
                                          -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_int_equal (sqlite3_column_int (stmt, 0), rows);
    assert_int_equal (sqlite3_column_int (stmt, 1), 3000);
    sqlite3_finalize (stmt);
    assert_int_equal (sqlite3_prepare_v2 (db, "PRAGMA integrity_check", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_string_equal ((const char *) sqlite3_column_text (stmt, 0), "ok");
    sqlite3_finalize (stmt);
    sqlite3_close (db);
}

static void
s_close (s_fixture_t *f)
{
    chat_sqlite_ckpt_destroy (&f->ckpt);
    assert_null (f->ckpt);
    sqlite3_finalize (f->insert);
    assert_int_equal (sqlite3_close (f->db), SQLITE_OK);
    s_check_file (f->path, f->rows);
    chat_test_rmdir (&f->dir);
}

//  True if this process has a thread of that name
static bool
s_thread_running (const char *name)
{
    DIR *tasks = opendir ("/proc/self/task");
    assert_non_null (tasks);
    bool found = false;
    struct dirent *entry;
    while (!found && (entry = readdir (tasks))) {
        char path [300], comm [64] = "";
        snprintf (path, sizeof path, "/proc/self/task/%s/comm", entry->d_name);
        FILE *file = fopen (path, "r");
        if (file) {
            if (fgets (comm, sizeof comm, file))
                comm [strcspn (comm, "\n")] = 0;
            fclose (file);
            found = streq (comm, name);
        }
    }
    closedir (tasks);
    return found;
}


//  --------------------------------------------------------------------------
//  Tests

//  The checkpointer copies the WAL back on its own thread, and the WAL
//  starts over again and again instead of growing
static void
test_checkpoints_in_background (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f);
    //  Below the threshold nothing is asked and no thread is started
    for (int i = 0; i < 10; i++)
        s_commit_row (&f);
    assert_int_equal (chat_sqlite_ckpt_stats (f.ckpt).asked, 0);
    assert_false (s_thread_running ("sqlite-ckpt"));

    s_commit_until_restarts (&f, 5);
    chat_sqlite_ckpt_stats_t stats = chat_sqlite_ckpt_stats (f.ckpt);
    assert_true (s_thread_running ("sqlite-ckpt"));
    //  Each restart followed an answered request, whose rounds ran on the
    //  checkpointer; the writer copied at most a tail per answer
    assert_true (stats.asked >= 5);
    assert_true (stats.rounds >= stats.asked - 1);
    assert_true (stats.tails <= stats.asked);
    //  The WAL stayed near the threshold: it was never left to grow
    assert_true (stats.max_pages < 20 * S_THRESHOLD);
    s_close (&f);
    assert_false (s_thread_running ("sqlite-ckpt"));
}

//  A reader's old snapshot stays whole: the WAL does not start over under
//  it, and does once it has let go
static void
test_reader_keeps_snapshot (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f);
    s_commit_row (&f);
    sqlite3 *reader = NULL;
    assert_int_equal (sqlite3_open_v2 (f.path, &reader, SQLITE_OPEN_READONLY, CHAT_SQLITE_VFS),
                      SQLITE_OK);
    sqlite3_busy_timeout (reader, 5000);
    chat_test_sql (reader, "BEGIN");
    sqlite3_stmt *count = NULL;
    assert_int_equal (sqlite3_prepare_v2 (reader, "SELECT count (*) FROM t", -1, &count, NULL),
                      SQLITE_OK);
    assert_int_equal (sqlite3_step (count), SQLITE_ROW);
    assert_int_equal (sqlite3_column_int (count, 0), 1);
    sqlite3_reset (count);

    //  Ten thresholds' worth of commits, checkpoints asked all along
    for (int i = 0; i < 10 * S_THRESHOLD; i++)
        s_commit_row (&f);
    zclock_sleep (100);                 //  Let the last answer come
    s_commit_row (&f);
    chat_sqlite_ckpt_stats_t stats = chat_sqlite_ckpt_stats (f.ckpt);
    assert_true (stats.asked >= 1);
    assert_int_equal (stats.restarts, 0);
    //  Still the reader's snapshot
    assert_int_equal (sqlite3_step (count), SQLITE_ROW);
    assert_int_equal (sqlite3_column_int (count, 0), 1);
    sqlite3_reset (count);
    chat_test_sql (reader, "COMMIT");

    //  Let go: the WAL starts over, and the reader sees everything
    s_commit_until_restarts (&f, 1);
    assert_int_equal (sqlite3_step (count), SQLITE_ROW);
    assert_int_equal (sqlite3_column_int (count, 0), f.rows);
    sqlite3_finalize (count);
    assert_int_equal (sqlite3_close (reader), SQLITE_OK);
    s_close (&f);
}

//  Stopped while it has a request in hand: it finishes its round, and
//  every commit is in the file
static void
test_stop_while_busy (void **state)
{
    (void) state;
    for (int run = 0; run < 5; run++) {
        s_fixture_t f;
        s_open (&f);
        while (chat_sqlite_ckpt_stats (f.ckpt).asked < 1)
            s_commit_row (&f);
        s_close (&f);
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_checkpoints_in_background),
        cmocka_unit_test (test_reader_keeps_snapshot),
        cmocka_unit_test (test_stop_while_busy),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
