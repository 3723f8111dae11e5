#!/bin/sh
#   jemalloc_check.sh CHATD
#
#   Checks that the chatd binary runs on jemalloc's malloc, not glibc's
#   (CMake option CHATD_JEMALLOC; see CMakeLists.txt): jemalloc prints its
#   statistics at exit when MALLOC_CONF asks for them, and only a process
#   whose malloc is jemalloc's reads MALLOC_CONF. chatd is started with a
#   configuration file that does not exist, so it exits at once (status 1).

set -u
CHATD=${1:?usage: jemalloc_check.sh CHATD}
out=$(MALLOC_CONF=stats_print:true "$CHATD" -c /nonexistent/chatd.ini 2>&1)
status=$?
if [ "$status" -ne 1 ]; then
    echo "FAIL - chatd exited $status with a missing config file (expected 1)"
    exit 1
fi
if ! printf '%s\n' "$out" | grep -q '^___ Begin jemalloc statistics ___$'; then
    echo "FAIL - chatd does not run on jemalloc (no statistics at exit)"
    exit 1
fi
echo "ok - chatd runs on jemalloc"
