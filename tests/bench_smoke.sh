#!/bin/sh
#   bench_smoke.sh CHATD CHAT_BENCH
#
#   Starts chatd on a free port with a temporary SQLite database, runs a
#   short chat-bench (20 users, closed loop, window 1, 1 s warm-up, 2 s
#   window, --json) and checks its JSON line: acknowledged > 0,
#   delivered > 0, errors == 0, nothing lost. Then sends SIGTERM to chatd
#   and checks that it exits 0. Prints "N passed, M failed"; exit status is
#   non-zero when anything failed.

set -u
CHATD=${1:?usage: bench_smoke.sh CHATD CHAT_BENCH}
BENCH=${2:?usage: bench_smoke.sh CHATD CHAT_BENCH}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

passed=0
failed=0
ok ()   { passed=$((passed + 1)); echo "ok - $1"; }
fail () { failed=$((failed + 1)); echo "FAIL - $1"; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench_smoke.XXXXXX")
SERVER_PID=
cleanup () {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -9 "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

#   A free port: bind port 0 and read what the kernel chose
PORT=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

CHAT_SERVER_PORT=$PORT \
CHAT_SQLITE_PATH=$TMP/chat.db \
CHAT_AUTH_PASSWORD_OPSLIMIT=1 \
CHAT_AUTH_PASSWORD_MEMLIMIT_KIB=8192 \
CHAT_RATE_LIMIT_MESSAGES_PER_SECOND=1000000 \
CHAT_RATE_LIMIT_BURST=1000000 \
    "$CHATD" >"$TMP/chatd.log" 2>&1 &
SERVER_PID=$!

#   Wait until it answers /healthz (up to 10 s)
up=0
i=0
while [ $i -lt 100 ]; do
    if $PY -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$PORT/healthz', timeout=1)" 2>/dev/null; then
        up=1
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
    i=$((i + 1))
done
if [ $up -eq 1 ]; then ok "chatd answers /healthz on port $PORT"; else fail "chatd did not start"; cat "$TMP/chatd.log"; fi

if [ $up -eq 1 ]; then
    timeout 120 "$BENCH" --url "http://127.0.0.1:$PORT" --users 20 --window 1 \
        --duration 2 --warmup 1 --drain 5 --server-pid "$SERVER_PID" --json \
        >"$TMP/bench.json" 2>"$TMP/bench.err"
    rc=$?
    if [ $rc -eq 0 ]; then ok "chat-bench exits 0"; else fail "chat-bench exit status $rc"; cat "$TMP/bench.err"; fi
    cat "$TMP/bench.json"
    if $PY - "$TMP/bench.json" <<'EOF'
import json, sys
line = open(sys.argv[1]).read().strip().splitlines()[-1]
r = json.loads(line)
problems = []
if r["connected"] != 20: problems.append("connected %d of 20" % r["connected"])
if r["acknowledged"] <= 0: problems.append("nothing acknowledged")
if r["delivered"] <= 0: problems.append("nothing delivered")
if r["errors"] != 0: problems.append("errors: %s" % r["error_kinds"])
if r["lost"] != 0: problems.append("%d acks lost" % r["lost"])
if r["missing_deliveries"] != 0: problems.append("%d deliveries missing" % r["missing_deliveries"])
if r["ack_latency_us"]["n"] <= 0: problems.append("no ack latency samples")
if r["delivery_latency_us"]["n"] <= 0: problems.append("no delivery latency samples")
if problems:
    print("; ".join(problems))
    sys.exit(1)
EOF
    then ok "chat-bench JSON: acknowledged > 0, delivered > 0, errors == 0"
    else fail "chat-bench JSON checks"
    fi
fi

if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    i=0
    while kill -0 "$SERVER_PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        fail "chatd still running 10 s after SIGTERM"
    else
        wait "$SERVER_PID"
        rc=$?
        if [ $rc -eq 0 ]; then ok "chatd exits 0 on SIGTERM"; else fail "chatd exit status $rc on SIGTERM"; tail -5 "$TMP/chatd.log"; fi
    fi
    SERVER_PID=
else
    fail "chatd died during the run"
    tail -20 "$TMP/chatd.log"
fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
