#!/usr/bin/env bash
# fuzz/replay.sh - replay every committed fuzz input without libFuzzer, as
# part of `make test`: builds each driver with fuzz/replay_main.c under ASan
# and UBSan (build-fuzz/replay/), runs it on fuzz/corpus/TARGET and
# fuzz/regressions/TARGET, and ends with
#   fuzz-replay: N passed, N failed
# where N counts targets (a target passes when all its files run clean:
# no sanitizer report, no abort, no leak).
#   FUZZ_BUILD=dir   build there instead of build-fuzz/
set -uo pipefail
cd "$(dirname "$0")/.."
bd=${FUZZ_BUILD:-build-fuzz}
export FUZZ_BUILD=$bd
mkdir -p "$bd" # a fresh clone has none: the build log goes there

bins=$(bash fuzz/build.sh replay 2>"$bd"/replay-build.log) || {
    cat "$bd"/replay-build.log
    echo "fuzz-replay: 0 passed, 1 failed (build)"
    exit 1
}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
passed=0
failed=0
for bin in $bins; do
    t=$(basename "$bin")
    dirs=()
    for d in fuzz/corpus/"$t" fuzz/regressions/"$t"; do
        [ -d "$d" ] && dirs+=("$d")
    done
    log=$bd/replay/$t.log
    # The server targets log to stderr; keep it in the log file and show it
    # only on failure.
    # (the subshell keeps the shell's "Aborted" notice out of the output)
    rc=$( (timeout 120 "$bin" "${dirs[@]}" >"$log" 2>&1; echo $?) 2>/dev/null)
    if [ "$rc" = 0 ]; then
        echo "fuzz-replay: $t ok ($(sed -n 's/^replayed \([0-9]*\) file.*/\1/p' "$log") files)"
        passed=$((passed + 1))
    else
        echo "fuzz-replay: $t FAILED (exit $rc), log $log:"
        grep -E -A12 'ERROR|runtime error|^fuzz_|SUMMARY' "$log" | head -40
        failed=$((failed + 1))
    fi
done
echo "fuzz-replay: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
