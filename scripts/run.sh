#!/usr/bin/env bash
# What `make run` runs: starts build/zju-chat-server in the foreground.
# With ZJU_API_KEY unset (in the environment and in ./.env) it first starts
# the bundled mock upstream on a free loopback port, points the server at it
# and says loudly that answers come from a mock. With a key it serves the
# real API (ZJU_BASE_URL or the default https://chat.zju.edu.cn/api/ai/v1).
# Extra arguments go to the server, e.g. `bash scripts/run.sh -w 2`.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SERVER="$BUILD/zju-chat-server"
MOCK="$BUILD/zju-mock-upstream"
[ -x "$SERVER" ] || { echo "run.sh: $SERVER missing; run 'make' first" >&2; exit 1; }

key=${ZJU_API_KEY:-}
if [ -z "$key" ] && [ -f .env ]; then
    # Same lookup the server does: KEY=VALUE, optional export and quotes.
    key=$(sed -n -E "s/^[[:space:]]*(export[[:space:]]+)?ZJU_API_KEY[[:space:]]*=[[:space:]]*['\"]?([^'\"#[:space:]]*).*/\2/p" .env | tail -1)
fi

if [ -n "$key" ]; then
    echo "run.sh: ZJU_API_KEY is set: serving the real API (${ZJU_BASE_URL:-https://chat.zju.edu.cn/api/ai/v1})" >&2
    exec "$SERVER" "$@"
fi

[ -x "$MOCK" ] || { echo "run.sh: $MOCK missing; run 'make' first" >&2; exit 1; }

# Ctrl-C in a terminal sends SIGINT to the whole foreground process group
# (make, this shell and every child). If the mock got it too, it died under
# the streams the server was still draining, and a server SIGINTed by the
# terminal and again by the trap below took the second signal as "stop now".
# So the mock and the server each run in their own session (setsid: as a
# background child of a non-interactive shell it is no group leader, so
# setsid execs in place and $! is the program itself); only this shell gets
# the terminal's signals, and it stops them in order: the server first, with
# the signal it got (the server drains up to DRAIN_TIMEOUT; a second Ctrl-C
# is forwarded too and stops it at once), then the mock.
mocklog=$(mktemp -t zju-mock.XXXXXX)
setsid "$MOCK" --host 127.0.0.1 --port 0 >"$mocklog" 2>&1 </dev/null &
mock_pid=$!
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    kill -TERM "$mock_pid" 2>/dev/null || true
    wait "$mock_pid" 2>/dev/null || true
    rm -f "$mocklog"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
url=""
for _ in $(seq 1 100); do
    url=$(sed -n -E 's/.*listening on (http:\/\/127\.0\.0\.1:[0-9]+).*/\1/p' "$mocklog" | head -1)
    [ -n "$url" ] && break
    kill -0 "$mock_pid" 2>/dev/null || break
    sleep 0.05
done
if [ -z "$url" ]; then
    echo "run.sh: the mock upstream did not start:" >&2
    cat "$mocklog" >&2
    exit 1
fi

export ZJU_BASE_URL="$url/v1"
export ZJU_API_KEY="mock-key-not-secret"
cat >&2 <<BANNER
################################################################################
#  ZJU_API_KEY is not set: answers come from a MOCK upstream at $ZJU_BASE_URL
#  (canned text, not a real model). Set ZJU_API_KEY (environment or .env) to
#  serve the real ZJU Chat API.
################################################################################
BANNER
# Not exec: the mock must be stopped after the server.
setsid "$SERVER" "$@" &
server_pid=$!
status=""
stop() {
    status=$2
    kill -"$1" "$server_pid" 2>/dev/null || true
}
trap 'stop INT 130' INT
trap 'stop TERM 143' TERM
trap 'stop TERM 129' HUP
# wait returns early whenever a trapped signal arrives: wait again until the
# server is gone (its own status is the last wait's).
rc=0
while :; do
    rc=0
    wait "$server_pid" || rc=$?
    kill -0 "$server_pid" 2>/dev/null || break
done
server_pid=""
exit "${status:-$rc}"
