#!/usr/bin/env bash
# Fails when a tracked C file differs from what .clang-format asks for.
cd "$(dirname "$0")/.."
bad=0
for f in $(git ls-files '*.c' '*.h'); do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then
        echo "format-check: $f is not formatted (run: make format)"; bad=1
    fi
done
[ $bad -eq 0 ] && echo "format-check: ok"
exit $bad
