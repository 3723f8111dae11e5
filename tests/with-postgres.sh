#!/bin/sh
#   with-postgres.sh - run a command against a throw-away PostgreSQL server
#
#   tests/with-postgres.sh COMMAND ARGS...
#
#   Runs COMMAND with CHAT_TEST_PG_CONNINFO set and exits with its status.
#   If CHAT_TEST_PG_CONNINFO is already set, the command just runs.
#   Otherwise a new cluster is made in a temporary directory (initdb, trust
#   authentication, fsync off), started on a free port of 127.0.0.1 with its
#   socket in that directory, given a database `chatd_test`, and always
#   stopped and removed afterwards.
#
#   The command sees:
#     CHAT_TEST_PG_CONNINFO  host=127.0.0.1 port=PORT dbname=chatd_test user=postgres
#     CHAT_TEST_PG_DATADIR   the cluster's data directory
#     CHAT_TEST_PG_CTL       path of pg_ctl
#     CHAT_TEST_PG_RUNAS     prefix that runs a command as the cluster's owner
#                            ("/usr/sbin/runuser -u postgres --" as root, ""
#                            otherwise)
#     CHAT_TEST_PG_STOP      shell command that stops the server (waits)
#     CHAT_TEST_PG_START     shell command that starts it again (waits)
#   so a test can simulate an outage with system (getenv ("CHAT_TEST_PG_STOP")).
#   Port, address, socket directory and fsync live in the cluster's
#   postgresql.conf, so a plain `pg_ctl -D $CHAT_TEST_PG_DATADIR start` (as the
#   owner) brings the server back on the same port.
#
#   Works as root (the cluster is owned by the `postgres` user) or as any
#   other user (owned by that user). Needs PostgreSQL's initdb and pg_ctl on
#   PATH or in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql).

set -eu

if [ $# -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi
if [ -n "${CHAT_TEST_PG_CONNINFO:-}" ]; then
    exec "$@"
fi

#   Find PostgreSQL's server programs
bindir=""
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    bindir=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
else
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            bindir=$dir
            break
        fi
    done
fi
if [ -z "$bindir" ]; then
    echo "with-postgres.sh: initdb/pg_ctl not found (apt-get install postgresql)" >&2
    exit 2
fi

#   As root the cluster belongs to `postgres` (the server refuses to run as root)
runuser=""
su=""
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        echo "with-postgres.sh: running as root but there is no postgres user" >&2
        exit 2
    fi
    owner=postgres
    for candidate in "$(command -v runuser 2>/dev/null || true)" /usr/sbin/runuser /sbin/runuser; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            runuser=$candidate
            break
        fi
    done
    if [ -z "$runuser" ]; then
        su=$(command -v su 2>/dev/null || echo /bin/su)
    fi
else
    owner=$(id -un)
fi

#   quote ARGS...: the arguments as one shell-quoted string
quote () {
    quoted=""
    for arg in "$@"; do
        quoted="$quoted '$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'"
    done
    printf '%s' "$quoted"
}

#   The prefix a shell command line needs to run as the owner
if [ -n "$runuser" ]; then
    runas="$runuser -u postgres --"
elif [ -n "$su" ]; then
    runas="$su postgres -s /bin/sh -c"
else
    runas=""
fi

#   as_owner CMD ARGS...: run a command as the cluster's owner, from the
#   cluster's directory (the owner may not be allowed into the caller's cwd)
as_owner () {
    if [ -n "$runuser" ]; then
        (cd "$top" && "$runuser" -u postgres -- "$@")
    elif [ -n "$su" ]; then
        (cd "$top" && "$su" postgres -s /bin/sh -c "$(quote "$@")")
    else
        (cd "$top" && "$@")
    fi
}

top=$(mktemp -d "${TMPDIR:-/tmp}/chatd-pg.XXXXXX")
data="$top/data"
log="$top/server.log"
started=0

cleanup () {
    status=$?
    trap - EXIT INT TERM HUP
    if [ "$started" -eq 1 ] && [ -f "$data/postmaster.pid" ]; then
        as_owner "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$top"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ "$owner" != "$(id -un)" ]; then
    chown "$owner" "$top"
fi
chmod 700 "$top"

if ! as_owner "$bindir/initdb" -D "$data" -A trust -U postgres -E UTF8 --locale=C \
        --no-sync >"$top/initdb.log" 2>&1; then
    echo "with-postgres.sh: initdb failed:" >&2
    cat "$top/initdb.log" >&2
    exit 2
fi

free_port () {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket (); s.bind (("127.0.0.1", 0)); print (s.getsockname () [1])'
    else
        #   Pick a port in 20000..59999 with nothing listening (bash's /dev/tcp)
        while :; do
            candidate=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 40000 ))
            if ! bash -c "exec 3<>/dev/tcp/127.0.0.1/$candidate" 2>/dev/null; then
                echo "$candidate"
                return
            fi
        done
    fi
}

#   Another process may take the port between our check and the server's bind:
#   try a few ports
port=""
for attempt in 1 2 3 4 5; do
    candidate=$(free_port)
    #   The settings live in postgresql.conf, so a plain `pg_ctl start` by a
    #   test that stopped the server brings it back the same way
    cat >> "$data/postgresql.conf" <<EOF
# with-postgres.sh (attempt $attempt)
listen_addresses = '127.0.0.1'
port = $candidate
unix_socket_directories = '$top'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
EOF
    if as_owner "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null 2>&1; then
        port=$candidate
        started=1
        break
    fi
done
if [ -z "$port" ]; then
    echo "with-postgres.sh: the server did not start:" >&2
    cat "$log" >&2 2>/dev/null || true
    exit 2
fi

if ! as_owner "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -X -q \
        -v ON_ERROR_STOP=1 -c "CREATE DATABASE chatd_test" >"$top/createdb.log" 2>&1; then
    echo "with-postgres.sh: cannot create database chatd_test:" >&2
    cat "$top/createdb.log" >&2
    exit 2
fi

CHAT_TEST_PG_CONNINFO="host=127.0.0.1 port=$port dbname=chatd_test user=postgres"
CHAT_TEST_PG_DATADIR=$data
CHAT_TEST_PG_CTL=$bindir/pg_ctl
CHAT_TEST_PG_RUNAS=$runas
stop_cmd=$(quote "$bindir/pg_ctl" -D "$data" -m fast -w stop)
start_cmd=$(quote "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start)
if [ -n "$su" ]; then
    CHAT_TEST_PG_STOP="$runas $(quote "$stop_cmd") >/dev/null"
    CHAT_TEST_PG_START="$runas $(quote "$start_cmd") >/dev/null"
else
    CHAT_TEST_PG_STOP="$runas$stop_cmd >/dev/null"
    CHAT_TEST_PG_START="$runas$start_cmd >/dev/null"
fi
export CHAT_TEST_PG_CONNINFO CHAT_TEST_PG_DATADIR CHAT_TEST_PG_CTL CHAT_TEST_PG_RUNAS
export CHAT_TEST_PG_STOP CHAT_TEST_PG_START

set +e
"$@"
status=$?
set -e
exit "$status"
