/*  =========================================================================
    test_sqlite_mmap.c - the SQLite backend reads its database file through
    a memory map of the whole file

    History pages read from disk come in by page faults, and the kernel
    reads the file around each fault (backends/sqlite.c, "What a history
    page costs from disk"): that only holds if the map covers the file, not
    its first 256 MiB as it once did. A database is made through the
    backend and closed; its file is then made 300 MiB long (a sparse tail
    beyond SQLite's own page count, as a file grown in chunks has), and
    opened again. Checks: after a history read this process maps the file
    whole; history, a new message and SQLite's integrity_check are as
    before.
    =========================================================================
*/

#include "test_util.h"
#include "chat_backend.h"
#include "chat_config.h"
#include <sqlite3.h>
#include <unistd.h>

//  Larger than the map the backend used to ask for (256 MiB)
#define S_FILE_BYTES    (300LL << 20)

//  Bytes of this process's address space that map the file at path
static long long
s_mapped_bytes (const char *path)
{
    FILE *maps = fopen ("/proc/self/maps", "r");
    assert_non_null (maps);
    long long total = 0;
    char line [1024];
    while (fgets (line, sizeof line, maps)) {
        unsigned long long start, end;
        char *name = strchr (line, '/');
        if (!name || sscanf (line, "%llx-%llx", &start, &end) != 2)
            continue;
        name [strcspn (name, "\n")] = 0;
        if (streq (name, path))
            total += (long long) (end - start);
    }
    fclose (maps);
    return total;
}

static void
s_on_message (const chat_message_t *message, void *ctx)
{
    (void) message;
    (*(int *) ctx)++;
}

//  Store one message from one user to another, in its own transaction
static void
s_store (chat_backend_t *db, int64_t from, int64_t to, const char *content)
{
    const chat_backend_ops_t *ops = &chat_backend_sqlite;
    chat_message_t message = {
        .from_user_id = from, .to_user_id = to,
        .content = content, .content_len = strlen (content)
    };
    int result = -1;
    assert_int_equal (ops->begin (db), CHAT_DB_OK);
    assert_int_equal (ops->message_store_batch (db, &message, 1, &result, NULL), CHAT_DB_OK);
    assert_int_equal (ops->commit (db), CHAT_DB_OK);
    assert_int_equal (result, CHAT_DB_OK);
}

static int
s_history_count (chat_backend_t *db, int64_t user, int64_t with)
{
    int count = 0;
    bool more = true;
    assert_int_equal (chat_backend_sqlite.history (db, user, with, 0, 50, s_on_message, &count, &more),
                      CHAT_DB_OK);
    assert_false (more);
    return count;
}

static void
test_whole_file_mapped (void **state)
{
    (void) state;
    const chat_backend_ops_t *ops = &chat_backend_sqlite;
    char *dir = chat_test_tmpdir ();
    chat_config_t cfg;
    chat_config_defaults (&cfg);
    snprintf (cfg.sqlite_path, sizeof cfg.sqlite_path, "%s/chat.db", dir);
    char error [256] = "";

    chat_backend_t *db = ops->open (&cfg, error, sizeof error);
    assert_non_null (db);
    int64_t ann = 0, ben = 0;
    assert_int_equal (ops->user_create (db, "ann", "h", 1, &ann), CHAT_DB_OK);
    assert_int_equal (ops->user_create (db, "ben", "h", 1, &ben), CHAT_DB_OK);
    s_store (db, ann, ben, "one");
    s_store (db, ben, ann, "two");
    ops->close (&db);

    assert_int_equal (truncate (cfg.sqlite_path, S_FILE_BYTES), 0);
    char *path = realpath (cfg.sqlite_path, NULL);
    assert_non_null (path);

    db = ops->open (&cfg, error, sizeof error);
    assert_non_null (db);
    assert_int_equal (s_history_count (db, ann, ben), 2);
    long long mapped = s_mapped_bytes (path);
    if (mapped < S_FILE_BYTES)
        fail_msg ("%lld bytes of %s are mapped, not the whole file (%lld)",
                  mapped, path, S_FILE_BYTES);
    s_store (db, ann, ben, "three");
    assert_int_equal (s_history_count (db, ben, ann), 3);
    ops->close (&db);

    sqlite3 *raw = NULL;
    sqlite3_stmt *stmt = NULL;
    assert_int_equal (sqlite3_open_v2 (cfg.sqlite_path, &raw, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_prepare_v2 (raw, "PRAGMA integrity_check", -1, &stmt, NULL), SQLITE_OK);
    assert_int_equal (sqlite3_step (stmt), SQLITE_ROW);
    assert_string_equal ((const char *) sqlite3_column_text (stmt, 0), "ok");
    sqlite3_finalize (stmt);
    sqlite3_close (raw);
    free (path);
    chat_test_rmdir (&dir);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_whole_file_mapped),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
