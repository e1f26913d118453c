#!/usr/bin/env bash
# What `make cost` runs: user-space instructions (callgrind) and system calls
# (strace) per non-stream request and per relayed event, zju-chat-server -w 1
# against nginx proxying the same mock; bench/cost.py does the work and writes
# bench/results/YYYY-MM-DD-<host>-cost.md. About 3-5 minutes on 2 cores.
# Sizes: COST_REQUESTS, COST_CONC, COST_STREAMS, COST_EVENTS, COST_DELAY_MS;
# COST_TAG=name suffixes the report's file name. Needs build/ (make), valgrind,
# strace, nginx-light and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
for bin in zju-loadgen zju-mock-upstream zju-chat-server; do
    if [ ! -x "$BUILD/$bin" ]; then
        echo "cost: $BUILD/$bin is missing: run make first" >&2
        exit 2
    fi
done
exec python3 bench/cost.py "$@"
