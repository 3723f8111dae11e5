#!/usr/bin/env bash
#   run-all.sh - build chatd with warnings as errors and run every test:
#   the cmocka actor and backend tests and the end-to-end tests, against
#   SQLite and a throw-away PostgreSQL cluster (tests/with-postgres.sh),
#   then the same suite again under AddressSanitizer and UBSan.
#
#   BUILD_DIR (default build-test) and SANITIZE=0 to skip the sanitizer pass.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-test}
jobs=$(nproc)

echo "== build ($build)"
cmake -S "$root" -B "$build" -DCHATD_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$jobs"

echo "== tests"
"$root/tests/with-postgres.sh" ctest --test-dir "$build" --output-on-failure -j2

if [ "${SANITIZE:-1}" != 0 ]; then
    echo "== tests under ASan and UBSan ($build-asan)"
    cmake -S "$root" -B "$build-asan" -DCHATD_WERROR=ON -DCHATD_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
    cmake --build "$build-asan" -j"$jobs"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$root/tests/with-postgres.sh" ctest --test-dir "$build-asan" --output-on-failure -j2
fi
