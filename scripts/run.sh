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
mocklog=$(mktemp -t zju-mock.XXXXXX)
"$MOCK" --host 127.0.0.1 --port 0 >"$mocklog" 2>&1 &
mock_pid=$!
cleanup() { kill "$mock_pid" 2>/dev/null || true; wait "$mock_pid" 2>/dev/null || true; rm -f "$mocklog"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
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
# Not exec: the trap must stop the mock when the server exits.
"$SERVER" "$@" &
server_pid=$!
trap 'kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid"; exit 143' TERM
trap 'kill -INT "$server_pid" 2>/dev/null; wait "$server_pid"; exit 130' INT
wait "$server_pid"
