/*  =========================================================================
    sqlite_vfs.h - the SQLite backend's VFS (see sqlite_vfs.c)
    =========================================================================
*/

#ifndef CHAT_SQLITE_VFS_H_INCLUDED
#define CHAT_SQLITE_VFS_H_INCLUDED

//  Its name, for sqlite3_open_v2
#define CHAT_SQLITE_VFS "chatd"

//  Register the VFS (once per process; later calls only report). Returns 0,
//  or -1 if it could not be registered.
int chat_sqlite_vfs_register (void);

#endif
