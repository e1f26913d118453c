#!/usr/bin/env bash
# Runs the whole suite against the sanitizer build (build-asan/) and ends with
# one line "N passed, N failed" that CI reads.
#   scripts/test.sh          everything
#   scripts/test.sh unit     cmocka unit tests only
#   scripts/test.sh e2e      end-to-end tests only (tests/e2e/test_*.py, and
#                            tests/node/*.test.mjs with Node.js)
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
passed=0
failed=0
failures=()

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ZJU_BUILD_DIR=${ZJU_BUILD_DIR:-build-asan}

# One distinctive API key for the whole run, and one directory where the e2e
# tests leave every response, error event and log line (server, mock, CLI):
# the last step greps it for the key (tests/e2e/serverctl.py, mockctl.py).
export ZJU_TEST_KEY=${ZJU_TEST_KEY:-sk-zju-e2e-SECRET-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')}
own_log_dir=0
if [ -z "${ZJU_E2E_LOG_DIR:-}" ]; then
    ZJU_E2E_LOG_DIR=$(mktemp -d /tmp/zju-e2e-run-XXXXXX); own_log_dir=1
fi
export ZJU_E2E_LOG_DIR

if [ "$what" = all ]; then
    make -s asan -j"$(nproc)" || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
    if bash scripts/format-check.sh; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1)); failures+=("format-check")
    fi
fi

if [ "$what" = all ] || [ "$what" = unit ]; then
    for t in "$ZJU_BUILD_DIR"/tests/test_*; do
        [ -x "$t" ] || continue
        out=$("$t" 2>&1); rc=$?
        echo "$out"
        p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
        passed=$((passed + ${p:-0}))
        failed=$((failed + ${f:-0}))
        if [ $rc -ne 0 ] && [ "${f:-0}" = 0 ]; then
            failed=$((failed + 1)); failures+=("$t (exit $rc)")
        elif [ "${f:-0}" != 0 ]; then
            failures+=("$t")
        fi
    done
fi

# test_client once more with ZJU_UPSTREAM_ENGINE=h1: its blocking calls (on
# libcurl by default) then take the evented calls' own HTTP/1.1 transport, so
# every test of the library runs on both transports.
if { [ "$what" = all ] || [ "$what" = unit ]; } && [ -x "$ZJU_BUILD_DIR"/tests/test_client ]; then
    out=$(ZJU_UPSTREAM_ENGINE=h1 "$ZJU_BUILD_DIR"/tests/test_client 2>&1); rc=$?
    echo "$out" | tail -3
    p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ $rc -ne 0 ]; then
        [ "${f:-0}" = 0 ] && failed=$((failed + 1))
        failures+=("test_client with ZJU_UPSTREAM_ENGINE=h1")
    fi
fi

if { [ "$what" = all ] || [ "$what" = unit ]; } && [ -f fuzz/replay.sh ]; then
    # Every committed fuzz corpus file and past crash, replayed under ASan/UBSan.
    out=$(bash fuzz/replay.sh 2>&1); rc=$?
    echo "$out" | tail -20
    p=$(echo "$out" | sed -n 's/^fuzz-replay: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p' | tail -1)
    f=$(echo "$out" | sed -n 's/^fuzz-replay: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p' | tail -1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ -z "$p" ] || [ $rc -ne 0 ]; then failed=$((failed + 1)); failures+=("fuzz replay (exit $rc)"); fi
fi

if [ "$what" = all ] || [ "$what" = e2e ]; then
    out=$(python3 tests/e2e/run.py 2>&1); rc=$?
    echo "$out"
    p=$(echo "$out" | sed -n 's/^e2e: \([0-9]*\) passed, \([0-9]*\) failed.*/\1/p' | tail -1)
    f=$(echo "$out" | sed -n 's/^e2e: \([0-9]*\) passed, \([0-9]*\) failed.*/\2/p' | tail -1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ -z "$p" ]; then failed=$((failed + 1)); failures+=("e2e runner (exit $rc)"); fi

    # The browser-side client tests: Node.js's fetch and the npm packages of
    # tests/node/package-lock.json against the same binaries, logging into
    # the same directory (so the key scan below covers them). make deps
    # installs node, so a missing one is a failure. node --test reports a
    # failed after() hook in its exit status only, hence the rc check.
    if command -v node >/dev/null; then
        out=$(timeout -k 10 600 node --test --test-reporter=tap tests/node/*.test.mjs 2>&1); rc=$?
        if [ $rc -eq 0 ]; then
            echo "$out" | grep -E '^ *(not )?ok |^# (pass|fail|cancelled|skipped|todo) '
        else
            echo "$out"
        fi
        p=$(echo "$out" | sed -n 's/^# pass \([0-9]*\)$/\1/p' | tail -1)
        f=$(echo "$out" | sed -n 's/^# fail \([0-9]*\)$/\1/p' | tail -1)
        c=$(echo "$out" | sed -n 's/^# cancelled \([0-9]*\)$/\1/p' | tail -1)
        passed=$((passed + ${p:-0}))
        failed=$((failed + ${f:-0} + ${c:-0}))
        if [ -z "$p" ] || { [ $rc -ne 0 ] && [ $((${f:-0} + ${c:-0})) -eq 0 ]; }; then
            failed=$((failed + 1)); failures+=("node tests (exit $rc)")
        elif [ $rc -ne 0 ]; then
            failures+=("node tests (tests/node/)")
        fi
    else
        echo "node not found: make deps installs Node.js for tests/node/"
        failed=$((failed + 1)); failures+=("node tests (no node)")
    fi

    # Key safety over the whole run. Only the files the tests wrote at the
    # top of the directory are outputs (subdirectories hold inputs such as
    # .env files that must contain the key). The scan must have seen server
    # logs, mock logs and responses, or it would prove nothing.
    outs=$(find "$ZJU_E2E_LOG_DIR" -maxdepth 1 -type f | wc -l)
    leaks=$(find "$ZJU_E2E_LOG_DIR" -maxdepth 1 -type f -exec grep -lF -- "$ZJU_TEST_KEY" {} + 2>/dev/null)
    have_all=1
    # (The mock is quiet when all is well, so its logs may be empty.)
    for pat in 'server-*.err' 'responses.bin'; do
        [ -n "$(find "$ZJU_E2E_LOG_DIR" -maxdepth 1 -name "$pat" -size +0c | head -1)" ] || have_all=0
    done
    [ -n "$(find "$ZJU_E2E_LOG_DIR" -maxdepth 1 -name 'mock-*.err' | head -1)" ] || have_all=0
    if [ -z "$leaks" ] && [ "$have_all" = 1 ]; then
        echo "key-scan: the run's key in none of $outs output files of $ZJU_E2E_LOG_DIR"
        passed=$((passed + 1))
    else
        [ -n "$leaks" ] && echo "key-scan: the API key appears in:" $leaks
        [ "$have_all" = 1 ] || echo "key-scan: no server logs, mock logs or responses recorded in $ZJU_E2E_LOG_DIR"
        failed=$((failed + 1)); failures+=("key-scan ($ZJU_E2E_LOG_DIR kept)")
        own_log_dir=0
    fi
fi
[ "$own_log_dir" = 1 ] && rm -rf "$ZJU_E2E_LOG_DIR"

echo
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
