#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] - what `make fuzz` runs: build every driver with
# libFuzzer, ASan and UBSan into build-fuzz/fuzz/, then run each for SECONDS
# (default 60) on a copy of its committed corpus (fuzz/corpus/TARGET), one
# after the other, and print executions, coverage and findings per target.
#   FUZZ_TARGETS="fuzz_sse fuzz_env"  run only these
#   FUZZ_WORK=dir                     where corpora copies and crashes go
#   FUZZ_BUILD=dir                    build there instead of build-fuzz/
# Crash inputs are left in $FUZZ_WORK/TARGET/ (crash-*, leak-*, timeout-*);
# a fixed one belongs in fuzz/regressions/TARGET/ so replay.sh keeps it.
# Exit status: 0 when no target found anything.
set -uo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
[ -n "$secs" ] || secs=60
work=${FUZZ_WORK:-${FUZZ_BUILD:-build-fuzz}/work}

bins=$(bash fuzz/build.sh fuzz ${FUZZ_TARGETS:-}) || {
    echo "fuzz: build failed"
    exit 2
}

# Per-target libFuzzer options: the longest input worth trying, and stderr
# closed for the server targets whose access log would flood the terminal
# (sanitizer reports still come out: libFuzzer redirects them first).
opts_of() {
    case $1 in
    fuzz_http) echo "-max_len=16384 -close_fd_mask=2" ;;
    fuzz_upstream) echo "-max_len=16384" ;;
    fuzz_chat_body) echo "-max_len=8192 -close_fd_mask=2" ;;
    fuzz_openai_body) echo "-max_len=8192" ;;
    *) echo "-max_len=4096" ;;
    esac
}

summary=()
total_found=0
for bin in $bins; do
    t=$(basename "$bin")
    dir=$work/$t
    mkdir -p "$dir/corpus"
    rm -f "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-*
    cp -r fuzz/corpus/"$t"/. "$dir/corpus/" 2>/dev/null
    dict=()
    [ -f fuzz/"$t".dict ] && dict=(-dict=fuzz/"$t".dict)
    echo "== $t: ${secs}s"
    "$bin" $(opts_of "$t") "${dict[@]}" -timeout=10 -rss_limit_mb=2048 \
        -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$dir/" \
        "$dir/corpus" fuzz/regressions/"$t" >"$dir/log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$dir/log" | tail -1)
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$dir/log" | tail -1)
    found=$(ls "$dir" | grep -c -E '^(crash|leak|timeout|oom)-')
    if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then
        found=1 # died without an artifact: count it, the log says why
    fi
    total_found=$((total_found + found))
    line="$t: ${runs:-0} execs (${eps:-0}/s), ${cov:-cov: ? ft: ?}, findings: $found"
    [ "$found" -gt 0 ] && line="$line (see $dir/log)"
    echo "$line"
    summary+=("$line")
done
echo "== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
[ "$total_found" -eq 0 ]
