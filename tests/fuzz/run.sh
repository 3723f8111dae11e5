#!/usr/bin/env bash
#   run.sh - build every libFuzzer harness in tests/fuzz/ and run each one
#
#   Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET [BUILD_DIR]]
#
#   SECONDS_PER_TARGET  how long each harness fuzzes (default 10)
#   BUILD_DIR           where binaries, the grown corpus and crash inputs go
#                       (default: a new temporary directory, removed at the
#                       end unless a harness failed)
#   FUZZ_TARGETS        environment: run only these (space-separated), e.g.
#                       FUZZ_TARGETS="fuzz_frame" tests/fuzz/run.sh 120
#   FUZZ_JOBS           environment: libFuzzer -jobs/-workers (default 1)
#
#   Each harness is built with clang -fsanitize=fuzzer,address,undefined from
#   its own .c file and only the chatd sources it needs, then runs over its
#   committed seed corpus tests/fuzz/corpus/<target>/ (read only: new inputs
#   go to BUILD_DIR/corpus/<target>/), with tests/fuzz/<target>.dict when
#   there is one. A crash, a failed invariant (abort), a leak, a timeout or
#   out of memory fails the run and the input's path is printed; reproduce
#   it with BUILD_DIR/<target> <path>. Exit status: 0 when every harness
#   passed, 1 otherwise; 0 with a "skipped" line when clang is not installed.
set -u

if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz: skipped: clang is not installed (tools/install-deps.sh installs it)"
    exit 0
fi

seconds="${1:-10}"
build_dir="${2:-}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

case "$seconds" in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET [BUILD_DIR]]" >&2; exit 2 ;;
esac

#   target -> the chatd sources it needs, and the pkg-config modules
declare -A sources=(
    [fuzz_frame]="actors/chat_parse.c actors/chat_wire.c"
    [fuzz_credentials]="actors/chat_parse.c actors/chat_wire.c"
    [fuzz_cookie_origin]="actors/chat_parse.c actors/chat_wire.c"
    [fuzz_config]="config/config.c"
)
declare -A modules=(
    [fuzz_frame]="jansson"
    [fuzz_credentials]="jansson"
    [fuzz_cookie_origin]="jansson"
    [fuzz_config]="inih"
)
#   Longest input each harness is given: a frame up to a bit over the
#   default max_message_bytes, the others as long as real ones get
declare -A max_len=(
    [fuzz_frame]=8192
    [fuzz_credentials]=1024
    [fuzz_cookie_origin]=1024
    [fuzz_config]=4096
)
targets="${FUZZ_TARGETS:-fuzz_frame fuzz_credentials fuzz_cookie_origin fuzz_config}"
jobs="${FUZZ_JOBS:-1}"

temporary=0
if [ -z "$build_dir" ]; then
    build_dir="$(mktemp -d "${TMPDIR:-/tmp}/chatd-fuzz.XXXXXX")"
    temporary=1
fi
mkdir -p "$build_dir"
build_dir="$(cd "$build_dir" && pwd)"

cflags=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
        -Wall -Wextra -I"$root/include" -I"$here")

passed=0
failed=0
failed_names=""
for target in $targets; do
    if [ -z "${sources[$target]:-}" ]; then
        echo "fuzz: unknown target $target" >&2
        failed=$((failed + 1))
        failed_names="$failed_names $target"
        continue
    fi
    binary="$build_dir/$target"
    log="$build_dir/$target.log"
    corpus="$build_dir/corpus/$target"
    artifacts="$build_dir/artifacts/$target"
    seeds="$here/corpus/$target"
    rm -rf "$artifacts"                 #  Crashes of an earlier run do not count
    mkdir -p "$corpus" "$artifacts"

    #   Build
    src=()
    for s in ${sources[$target]}; do
        src+=("$root/$s")
    done
    # shellcheck disable=SC2046
    if ! clang "${cflags[@]}" $(pkg-config --cflags ${modules[$target]}) \
            -o "$binary" "$here/$target.c" "${src[@]}" \
            $(pkg-config --libs ${modules[$target]}) -lm >"$build_dir/$target.build.log" 2>&1; then
        echo "fuzz: $target: FAILED to build:"
        cat "$build_dir/$target.build.log"
        failed=$((failed + 1))
        failed_names="$failed_names $target"
        continue
    fi

    #   Run: the seeds are read, new inputs are written to $corpus only
    options=(-max_total_time="$seconds" -max_len="${max_len[$target]}" -timeout=10
             -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/")
    if [ -f "$here/$target.dict" ]; then
        options+=(-dict="$here/$target.dict")
    fi
    if [ "$jobs" -gt 1 ]; then
        options+=(-jobs="$jobs" -workers="$jobs")
    fi
    dirs=("$corpus")
    if [ -d "$seeds" ]; then
        dirs+=("$seeds")
    fi
    echo "fuzz: $target: running for ${seconds}s"
    (cd "$build_dir" && ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" \
        "$binary" "${options[@]}" "${dirs[@]}") >"$log" 2>&1
    rc=$?
    #   With -jobs the workers log to fuzz-N.log in the current directory
    if [ "$jobs" -gt 1 ]; then
        cat "$build_dir"/fuzz-*.log >>"$log" 2>/dev/null
        rm -f "$build_dir"/fuzz-*.log
    fi
    crashes="$(find "$artifacts" -type f 2>/dev/null)"
    execs="$(grep -h 'stat::number_of_executed_units' "$log" | awk '{ s += $2 } END { print s + 0 }')"
    speed="$(grep -h 'stat::average_exec_per_sec' "$log" | awk '{ s += $2 } END { print s + 0 }')"
    cov="$(grep -h -o 'cov: [0-9]*' "$log" | tail -1)"
    units="$(find "$corpus" -type f | wc -l)"
    if [ $rc -eq 0 ] && [ -z "$crashes" ]; then
        echo "fuzz: $target: passed: $execs runs, $speed exec/s, ${cov:-cov: ?}, $units new corpus inputs"
        passed=$((passed + 1))
    else
        echo "fuzz: $target: FAILED (exit $rc): log $log"
        grep -E 'ERROR:|invariant failed|SUMMARY:|Test unit written|^==[0-9]+==' "$log" | head -20
        for crash in $crashes; do
            echo "fuzz: $target: crash input: $crash"
            echo "fuzz: $target: reproduce: $binary $crash"
        done
        failed=$((failed + 1))
        failed_names="$failed_names $target"
    fi
done

echo "fuzz: $passed passed, $failed failed${failed_names:+ (${failed_names# })}"
if [ $failed -gt 0 ]; then
    echo "fuzz: binaries, logs and crash inputs kept in $build_dir"
    exit 1
fi
if [ $temporary -eq 1 ]; then
    rm -rf "$build_dir"
fi
exit 0
