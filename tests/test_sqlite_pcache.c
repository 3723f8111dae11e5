/*  =========================================================================
    test_sqlite_pcache.c - SQLite's process-wide set-up (backends/
    sqlite_pcache.c): no memory statistics, and a page cache that skips
    the truncations that would drop nothing, and only those

    chat_sqlite_setup runs first, before anything starts SQLite. Checks:
    it takes effect (once; later calls agree) and memory statistics stay
    at zero; commits whose b-tree splits moved pages through the locking
    page's number do not hand their truncation on; a transaction that grew
    the file and rolled back, whole or to a savepoint, does hand it on,
    and no page of what was rolled back is read again; with a cache much
    smaller than the data, pages are dropped and fetched again; the file
    passes integrity_check and a second connection reads the same rows.
    =========================================================================
*/

#include "test_util.h"
#include "../backends/sqlite_pcache.h"
#include <sqlite3.h>

typedef struct {
    char *dir;
    char path [512];
    sqlite3 *db;
    sqlite3_stmt *insert;
} s_fixture_t;

static void
s_assert_intact (sqlite3 *db)
{
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_prepare_v2 (db, "PRAGMA integrity_check", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_string_equal ((const char *) sqlite3_column_text (stmt, 0), "ok");
    sqlite3_finalize (stmt);
}

//  A table with an index on random keys: inserts split leaves all over
//  the index, and the balance swaps the new pages' numbers
static void
s_open (s_fixture_t *f, const char *cache_size)
{
    memset (f, 0, sizeof *f);
    f->dir = chat_test_tmpdir ();
    snprintf (f->path, sizeof f->path, "%s/pcache.db", f->dir);
    assert_int_equal (sqlite3_open_v2 (f->path, &f->db,
                                       SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                       NULL), SQLITE_OK);
    chat_test_sql (f->db, "PRAGMA journal_mode = WAL");
    chat_test_sql (f->db, cache_size);
    chat_test_sql (f->db, "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, body TEXT NOT NULL)");
    chat_test_sql (f->db, "CREATE INDEX t_k ON t (k)");
    assert_int_equal (sqlite3_prepare_v2 (f->db,
        "INSERT INTO t (k, body) VALUES (hex (randomblob (12)), ?1)", -1, &f->insert, NULL), SQLITE_OK);
}

static void
s_close (s_fixture_t *f)
{
    sqlite3_finalize (f->insert);
    assert_int_equal (sqlite3_close (f->db), SQLITE_OK);
    chat_test_rmdir (&f->dir);
}

//  Insert rows, each body tagged so that rolled-back rows can be told
static void
s_insert (s_fixture_t *f, int rows, const char *tag)
{
    char body [200];
    for (int i = 0; i < rows; i++) {
        snprintf (body, sizeof body, "%s-%06d-%0120d", tag, i, 0);
        sqlite3_bind_text (f->insert, 1, body, -1, SQLITE_TRANSIENT);
        assert_int_equal (sqlite3_step (f->insert), SQLITE_DONE);
        sqlite3_reset (f->insert);
    }
}


//  --------------------------------------------------------------------------

static void
test_setup_takes_effect (void **state)
{
    (void) state;
    //  main ran it first; again, it only reports
    assert_int_equal (chat_sqlite_setup (), 0);
    s_fixture_t f;
    s_open (&f, "PRAGMA cache_size = -8192");
    s_insert (&f, 200, "m");
    //  No statistics kept: nothing counted, however much was allocated
    assert_int_equal (sqlite3_memory_used (), 0);
    s_close (&f);
}

static void
test_commits_after_splits_skip_truncation (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f, "PRAGMA cache_size = -8192");
    chat_sqlite_pcache_stats_t before, after;
    chat_sqlite_pcache_stats (&before);
    //  300 commits of 50 rows: the index grows to hundreds of leaves
    for (int c = 0; c < 300; c++) {
        chat_test_sql (f.db, "BEGIN");
        s_insert (&f, 50, "c");
        chat_test_sql (f.db, "COMMIT");
    }
    chat_sqlite_pcache_stats (&after);
    uint64_t skipped = after.truncates_skipped - before.truncates_skipped;
    uint64_t forwarded = after.truncates_forwarded - before.truncates_forwarded;
    //  The splits moved pages through the locking page's number (what made
    //  SQLite's cache walk itself whole at the next commit)...
    assert_true (after.rekeys_parked - before.rekeys_parked > 10);
    //  ...and yet every commit's truncation to the database size was
    //  skipped: no page was above it
    assert_true (skipped >= 300);
    assert_true (forwarded < 10);
    assert_int_equal (chat_test_sql_int (f.db, "SELECT count (*) FROM t"), 15000);
    assert_true (chat_test_sql_int (f.db, "PRAGMA page_count") > 400);
    s_assert_intact (f.db);

    //  Another connection (its own cache) reads the same
    sqlite3 *other = NULL;
    assert_int_equal (sqlite3_open_v2 (f.path, &other, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal (chat_test_sql_int (other, "SELECT count (*) FROM t"), 15000);
    assert_int_equal (chat_test_sql_int (other, "SELECT count (DISTINCT k) FROM t INDEXED BY t_k"), 15000);
    s_assert_intact (other);
    sqlite3_close (other);
    s_close (&f);
}

static void
test_rollback_hands_truncation_on (void **state)
{
    (void) state;
    s_fixture_t f;
    s_open (&f, "PRAGMA cache_size = -8192");
    chat_test_sql (f.db, "BEGIN");
    s_insert (&f, 2000, "kept");
    chat_test_sql (f.db, "COMMIT");
    int64_t pages = chat_test_sql_int (f.db, "PRAGMA page_count");

    //  A transaction that grows the file by hundreds of pages, rolled back:
    //  its pages are above the database size and must leave the cache
    chat_sqlite_pcache_stats_t before, after;
    chat_sqlite_pcache_stats (&before);
    chat_test_sql (f.db, "BEGIN");
    s_insert (&f, 6000, "gone");
    assert_true (chat_test_sql_int (f.db, "PRAGMA page_count") > pages + 100);
    chat_test_sql (f.db, "ROLLBACK");
    chat_sqlite_pcache_stats (&after);
    assert_true (after.truncates_forwarded > before.truncates_forwarded);
    assert_int_equal (chat_test_sql_int (f.db, "PRAGMA page_count"), pages);

    //  The same page numbers are used again, for other rows: what is read
    //  back is those rows, never a page of the rolled-back ones
    chat_test_sql (f.db, "BEGIN");
    s_insert (&f, 3000, "new");
    chat_test_sql (f.db, "COMMIT");
    assert_int_equal (chat_test_sql_int (f.db, "SELECT count (*) FROM t WHERE body LIKE 'gone-%'"), 0);
    assert_int_equal (chat_test_sql_int (f.db, "SELECT count (*) FROM t WHERE body LIKE 'new-%'"), 3000);
    assert_int_equal (chat_test_sql_int (f.db, "SELECT count (*) FROM t INDEXED BY t_k WHERE k > ''"), 5000);
    s_assert_intact (f.db);

    //  The same with a savepoint, inside a transaction that commits
    chat_test_sql (f.db, "BEGIN");
    s_insert (&f, 500, "outer");
    chat_test_sql (f.db, "SAVEPOINT inner");
    s_insert (&f, 4000, "inner");
    chat_test_sql (f.db, "ROLLBACK TO inner");
    chat_test_sql (f.db, "RELEASE inner");
    s_insert (&f, 500, "after");
    chat_test_sql (f.db, "COMMIT");
    assert_int_equal (chat_test_sql_int (f.db, "SELECT count (*) FROM t WHERE body LIKE 'inner-%'"), 0);
    assert_int_equal (chat_test_sql_int (f.db, "SELECT count (*) FROM t"), 6000);
    assert_int_equal (chat_test_sql_int (f.db, "SELECT count (*) FROM t INDEXED BY t_k WHERE k > ''"), 6000);
    s_assert_intact (f.db);
    s_close (&f);
}

static void
test_small_cache_drops_and_refetches (void **state)
{
    (void) state;
    s_fixture_t f;
    //  50 pages of cache for thousands of pages of data
    s_open (&f, "PRAGMA cache_size = 50");
    for (int c = 0; c < 40; c++) {
        chat_test_sql (f.db, "BEGIN");
        s_insert (&f, 500, "s");
        chat_test_sql (f.db, "COMMIT");
    }
    assert_true (chat_test_sql_int (f.db, "PRAGMA page_count") > 1000);
    assert_int_equal (chat_test_sql_int (f.db, "SELECT count (*) FROM t"), 20000);
    assert_int_equal (chat_test_sql_int (f.db, "SELECT count (*) FROM t INDEXED BY t_k WHERE k > ''"), 20000);
    s_assert_intact (f.db);
    s_close (&f);
}

int
main (void)
{
    //  Before anything starts SQLite, as the backend does at its first open
    if (chat_sqlite_setup () != 0) {
        fprintf (stderr, "test_sqlite_pcache: SQLite started before chat_sqlite_setup\n");
        return 1;
    }
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_setup_takes_effect),
        cmocka_unit_test (test_commits_after_splits_skip_truncation),
        cmocka_unit_test (test_rollback_hands_truncation_on),
        cmocka_unit_test (test_small_cache_drops_and_refetches),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
