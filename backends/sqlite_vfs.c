/*  =========================================================================
    sqlite_vfs.c - the SQLite backend's VFS: WAL frames written in one go

    A commit in WAL mode appends each dirty page to the -wal file as a frame,
    with two pwrite calls per frame (its 24-byte header, then the page), and
    then syncs the file. A batch of 100 messages dirties 50 to 250 pages:
    100 to 500 system calls before the one that matters, the fsync. This
    VFS sits on top of the default one ("unix") and changes one thing: the
    writes to a -wal file that follow each other are gathered in a buffer
    and handed to the file in one pwrite (up to 31 frames), before anything
    else is done to that file (sync, read, truncate, size) or when the
    buffer is full.
    Everything else, and every other file, goes straight through.

    Why this is safe: SQLite only counts on what it wrote once it has
    synced it, and in WAL mode a commit becomes visible to other
    connections only after its frames are written and (synchronous = FULL)
    synced, which goes through the buffer first. Reads of the file flush
    first, so a frame is never read stale. Frames that did not commit (a
    large transaction spills pages to the WAL, then rolls back) are dropped
    when the WAL's write lock is released, before another connection can
    write at their offsets. With synchronous = NORMAL a
    commit is published without a sync of the -wal file, so the backend
    opens such databases on the default VFS instead (sqlite.c).

    A write that fails when the buffer is flushed fails the sync (or read,
    truncate...) that flushed it: the transaction then fails as a whole,
    as it would have on the pwrite itself, and nothing is acknowledged.

    Used by backends/sqlite.c only; holds no global state besides the VFS
    registered once per process.
    =========================================================================
*/

#include "sqlite_vfs.h"
#include <sqlite3.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <assert.h>

//  The most bytes gathered before they are written anyway: 31 frames of
//  4 KiB pages. The default VFS writes at most 128 KiB - 1 bytes per call
//  (unixWrite masks the size with 0x1ffff: a larger write loses its high
//  bits and fails as "disk full").
#define S_BUFFER_MAX    0x1ffff

//  A file opened through this VFS; the default VFS's file follows it in
//  the same allocation (szOsFile is the sum of both)
typedef struct s_file_t s_file_t;
struct s_file_t {
    sqlite3_file base;                  //  Our methods (must be first)
    sqlite3_file *real;                 //  The default VFS's file, just after us
    bool gather;                        //  A -wal file: writes are gathered
    unsigned char *buffer;              //  Bytes written, not yet handed on
    size_t length;                      //  How many
    sqlite3_int64 offset;               //  Where they go in the file
    s_file_t *database;                 //  A -wal file: its database file
    s_file_t *wal;                      //  A database file: its open -wal file
};

static sqlite3_vfs s_vfs;               //  This VFS, registered once
static pthread_once_t s_once = PTHREAD_ONCE_INIT;
static int s_register_rc = SQLITE_ERROR;

#define S_REAL_VFS ((sqlite3_vfs *) s_vfs.pAppData)


//  --------------------------------------------------------------------------
//  The gathering buffer

//  Hand what is gathered to the file. On failure the bytes are dropped:
//  the transaction that wrote them fails with the error.
static int
s_flush (s_file_t *self)
{
    if (self->length == 0)
        return SQLITE_OK;
    int rc = self->real->pMethods->xWrite (self->real, self->buffer, (int) self->length,
                                           self->offset);
    self->length = 0;
    return rc;
}


//  --------------------------------------------------------------------------
//  File methods: gather in xWrite, flush before anything else touches the
//  file, pass the rest through

//  Drop what is gathered: frames of a transaction that did not commit
//  (a commit syncs, which flushes). SQLite writes such frames when a large
//  transaction spills pages from its cache, and on rollback it only forgets
//  them: handed on later, they would overwrite the frames another
//  connection has committed at the same offsets since.
static void
s_discard (s_file_t *self)
{
    self->length = 0;
}

static int
s_close (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    s_discard (self);                   //  Anything left never committed
    if (self->database)
        self->database->wal = NULL;
    if (self->wal)
        self->wal->database = NULL;
    int rc = self->real->pMethods->xClose (self->real);
    free (self->buffer);
    self->buffer = NULL;
    return rc;
}

static int
s_read (sqlite3_file *file, void *data, int amount, sqlite3_int64 offset)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK? rc: self->real->pMethods->xRead (self->real, data, amount, offset);
}

static int
s_write (sqlite3_file *file, const void *data, int amount, sqlite3_int64 offset)
{
    s_file_t *self = (s_file_t *) file;
    assert (amount >= 0);
    size_t size = (size_t) amount;
    if (!self->gather || !self->buffer)
        return self->real->pMethods->xWrite (self->real, data, amount, offset);
    //  The next bytes of what is gathered, and they fit: gather them
    if (self->length > 0
    &&  offset == self->offset + (sqlite3_int64) self->length
    &&  self->length + size <= S_BUFFER_MAX) {
        memcpy (self->buffer + self->length, data, size);
        self->length += size;
        return SQLITE_OK;
    }
    int rc = s_flush (self);
    if (rc != SQLITE_OK)
        return rc;
    if (size > S_BUFFER_MAX)
        return self->real->pMethods->xWrite (self->real, data, amount, offset);
    memcpy (self->buffer, data, size);
    self->length = size;
    self->offset = offset;
    return SQLITE_OK;
}

static int
s_truncate (sqlite3_file *file, sqlite3_int64 size)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK? rc: self->real->pMethods->xTruncate (self->real, size);
}

static int
s_sync (sqlite3_file *file, int flags)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK? rc: self->real->pMethods->xSync (self->real, flags);
}

static int
s_file_size (sqlite3_file *file, sqlite3_int64 *size)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK? rc: self->real->pMethods->xFileSize (self->real, size);
}

static int
s_lock (sqlite3_file *file, int level)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xLock (self->real, level);
}

static int
s_unlock (sqlite3_file *file, int level)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xUnlock (self->real, level);
}

static int
s_check_reserved_lock (sqlite3_file *file, int *out)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xCheckReservedLock (self->real, out);
}

static int
s_file_control (sqlite3_file *file, int op, void *arg)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK? rc: self->real->pMethods->xFileControl (self->real, op, arg);
}

static int
s_sector_size (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xSectorSize (self->real);
}

static int
s_device_characteristics (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xDeviceCharacteristics (self->real);
}

static int
s_shm_map (sqlite3_file *file, int region, int size, int extend, void volatile **out)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xShmMap (self->real, region, size, extend, out);
}

//  The WAL's write lock is slot 0 of the database file's shared-memory
//  locks. When it is released, whatever its -wal file still gathers did not
//  commit: drop it before another connection can write there.
static int
s_shm_lock (sqlite3_file *file, int offset, int n, int flags)
{
    s_file_t *self = (s_file_t *) file;
    if (self->wal
    &&  (flags & SQLITE_SHM_UNLOCK) && (flags & SQLITE_SHM_EXCLUSIVE)
    &&  offset == 0 && n >= 1)
        s_discard (self->wal);
    return self->real->pMethods->xShmLock (self->real, offset, n, flags);
}

static void
s_shm_barrier (sqlite3_file *file)
{
    s_file_t *self = (s_file_t *) file;
    self->real->pMethods->xShmBarrier (self->real);
}

static int
s_shm_unmap (sqlite3_file *file, int delete_flag)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xShmUnmap (self->real, delete_flag);
}

static int
s_fetch (sqlite3_file *file, sqlite3_int64 offset, int amount, void **out)
{
    s_file_t *self = (s_file_t *) file;
    int rc = s_flush (self);
    return rc != SQLITE_OK? rc: self->real->pMethods->xFetch (self->real, offset, amount, out);
}

static int
s_unfetch (sqlite3_file *file, sqlite3_int64 offset, void *page)
{
    s_file_t *self = (s_file_t *) file;
    return self->real->pMethods->xUnfetch (self->real, offset, page);
}

//  A wrapped file offers what the real one does: its methods' version
//  says which of the later methods (shared memory: 2, mmap: 3) exist
#define S_IO_METHODS(version) { \
    version, \
    s_close, s_read, s_write, s_truncate, s_sync, s_file_size, \
    s_lock, s_unlock, s_check_reserved_lock, s_file_control, \
    s_sector_size, s_device_characteristics, \
    s_shm_map, s_shm_lock, s_shm_barrier, s_shm_unmap, \
    s_fetch, s_unfetch }
static const sqlite3_io_methods s_io_methods [] = {
    S_IO_METHODS (1), S_IO_METHODS (2), S_IO_METHODS (3)
};

//  --------------------------------------------------------------------------
//  VFS methods: open wraps, the rest is the default VFS's

static bool
s_is_ours (sqlite3_file *file)
{
    return file->pMethods >= &s_io_methods [0] && file->pMethods <= &s_io_methods [2];
}

static int
s_open (sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags)
{
    (void) vfs;
    s_file_t *self = (s_file_t *) file;
    memset (self, 0, sizeof *self);
    self->real = (sqlite3_file *) (self + 1);
    int rc = S_REAL_VFS->xOpen (S_REAL_VFS, name, self->real, flags, out_flags);
    if (rc != SQLITE_OK || !self->real->pMethods) {
        self->base.pMethods = NULL;     //  Nothing to close
        return rc != SQLITE_OK? rc: SQLITE_CANTOPEN;
    }
    int version = self->real->pMethods->iVersion;
    version = version < 1? 1: version > 3? 3: version;
    self->gather = (flags & SQLITE_OPEN_WAL) != 0;
    if (self->gather) {
        //  Gather only with the database file known (also ours), whose
        //  write-lock release drops what did not commit
        sqlite3_file *database = sqlite3_database_file_object (name);
        if (database && s_is_ours (database) && !((s_file_t *) database)->wal) {
            self->database = (s_file_t *) database;
            self->database->wal = self;
            self->buffer = (unsigned char *) malloc (S_BUFFER_MAX);
        }
    }
    self->base.pMethods = &s_io_methods [version - 1];
    return SQLITE_OK;
}

static int
s_delete (sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    (void) vfs;
    return S_REAL_VFS->xDelete (S_REAL_VFS, name, sync_dir);
}

static int
s_access (sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    (void) vfs;
    return S_REAL_VFS->xAccess (S_REAL_VFS, name, flags, out);
}

static int
s_full_pathname (sqlite3_vfs *vfs, const char *name, int size, char *out)
{
    (void) vfs;
    return S_REAL_VFS->xFullPathname (S_REAL_VFS, name, size, out);
}

static void *
s_dl_open (sqlite3_vfs *vfs, const char *name)
{
    (void) vfs;
    return S_REAL_VFS->xDlOpen (S_REAL_VFS, name);
}

static void
s_dl_error (sqlite3_vfs *vfs, int size, char *out)
{
    (void) vfs;
    S_REAL_VFS->xDlError (S_REAL_VFS, size, out);
}

static void (*s_dl_sym (sqlite3_vfs *vfs, void *handle, const char *symbol)) (void)
{
    (void) vfs;
    return S_REAL_VFS->xDlSym (S_REAL_VFS, handle, symbol);
}

static void
s_dl_close (sqlite3_vfs *vfs, void *handle)
{
    (void) vfs;
    S_REAL_VFS->xDlClose (S_REAL_VFS, handle);
}

static int
s_randomness (sqlite3_vfs *vfs, int size, char *out)
{
    (void) vfs;
    return S_REAL_VFS->xRandomness (S_REAL_VFS, size, out);
}

static int
s_sleep (sqlite3_vfs *vfs, int microseconds)
{
    (void) vfs;
    return S_REAL_VFS->xSleep (S_REAL_VFS, microseconds);
}

static int
s_current_time (sqlite3_vfs *vfs, double *out)
{
    (void) vfs;
    return S_REAL_VFS->xCurrentTime (S_REAL_VFS, out);
}

static int
s_get_last_error (sqlite3_vfs *vfs, int size, char *out)
{
    (void) vfs;
    return S_REAL_VFS->xGetLastError (S_REAL_VFS, size, out);
}

static int
s_current_time_int64 (sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    (void) vfs;
    return S_REAL_VFS->xCurrentTimeInt64 (S_REAL_VFS, out);
}

static void
s_register (void)
{
    sqlite3_vfs *real = sqlite3_vfs_find (NULL);
    if (!real || real->iVersion < 2)
        return;
    s_vfs.iVersion = 2;
    s_vfs.szOsFile = (int) sizeof (s_file_t) + real->szOsFile;
    s_vfs.mxPathname = real->mxPathname;
    s_vfs.zName = CHAT_SQLITE_VFS;
    s_vfs.pAppData = real;
    s_vfs.xOpen = s_open;
    s_vfs.xDelete = s_delete;
    s_vfs.xAccess = s_access;
    s_vfs.xFullPathname = s_full_pathname;
    s_vfs.xDlOpen = s_dl_open;
    s_vfs.xDlError = s_dl_error;
    s_vfs.xDlSym = s_dl_sym;
    s_vfs.xDlClose = s_dl_close;
    s_vfs.xRandomness = s_randomness;
    s_vfs.xSleep = s_sleep;
    s_vfs.xCurrentTime = s_current_time;
    s_vfs.xGetLastError = s_get_last_error;
    s_vfs.xCurrentTimeInt64 = s_current_time_int64;
    s_register_rc = sqlite3_vfs_register (&s_vfs, 0);
}

int
chat_sqlite_vfs_register (void)
{
    pthread_once (&s_once, s_register);
    return s_register_rc == SQLITE_OK? 0: -1;
}
