#!/usr/bin/env bash
# What `make bench` runs: the benchmark suite of issue 4 (bench/bench.py does
# the work: contenders, scenarios S1-S6, the Markdown report written to
# bench/results/). Usage:
#   bash bench/run.sh            full run (about 10-15 minutes on 2 cores)
#   BENCH_QUICK=1 bash bench/run.sh   every scenario at small sizes (~1-2 min)
#   bash bench/run.sh --smoke    a few seconds of checked load against the mock
#                                and the server; non-zero exit on any failure
# Needs build/ (make), nginx-light, wrk, openssl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
for bin in zju-loadgen zju-mock-upstream; do
    if [ ! -x "$BUILD/$bin" ]; then
        echo "bench: $BUILD/$bin is missing: run make first" >&2
        exit 2
    fi
done
if [ "${1:-}" != --smoke ]; then
    for tool in nginx wrk openssl /usr/bin/time; do
        command -v "$tool" >/dev/null || { echo "bench: $tool is missing (make deps)" >&2; exit 2; }
    done
fi
exec python3 bench/bench.py "$@"
