#!/usr/bin/env bash
# `make deb`: the Debian packages zju-chat, libzjuchat1 and libzjuchat-dev
# (and their -dbgsym), built the ordinary way (debian/, dpkg-buildpackage
# -b) from this tree as it is now, edits not yet committed included, into
# DEB_OUT (default build/deb/). lintian then checks them; its tags go to
# DEB_OUT/lintian.txt and a summary to stdout (errors fail the build).
# Needs the packages of scripts/install-deps.sh --deb (make deb installs
# them). Builds in a copy, so the tree's build/ and build-asan/ stay as
# they are.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
out=$(readlink -f "${DEB_OUT:-build/deb}")
version=$(dpkg-parsechangelog -S Version)
make_version=$(sed -n 's/^VERSION := //p' Makefile)
[ "$version" = "$make_version" ] || {
    echo "build-deb: debian/changelog says $version, the Makefile's VERSION $make_version" >&2
    exit 1
}
src=$out/src/zju-chat-$version
rm -rf "$out"
mkdir -p "$src"
# The tracked files and the new ones git does not ignore, as they are on
# disk (a file deleted but not yet committed is left out).
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
    tar --null -T - -cf - | tar -xf - -C "$src"

echo "build-deb: dpkg-buildpackage -b in $src (log $out/build.log)"
if ! (cd "$src" && dpkg-buildpackage -b -us -uc -j"$(nproc)") >"$out/build.log" 2>&1; then
    tail -30 "$out/build.log"
    echo "build-deb: FAILED (log $out/build.log)" >&2
    exit 1
fi
# dpkg-buildpackage leaves its results beside the source directory.
mv "$out"/src/*.deb "$out"/src/*.changes "$out"/src/*.buildinfo "$out"/
rm -rf "$out/src"
ls -1 "$out"/*.deb

changes=$(ls "$out"/zju-chat_"$version"_*.changes)
lintian --info --display-info "$changes" >"$out/lintian.txt" 2>&1 || true
echo "build-deb: lintian $(grep -c '^[EWIP]: ' "$out/lintian.txt" || true) tag(s), $out/lintian.txt:"
sed -n 's/^\([EW]\): \([^:]*\): \([^ ]*\).*/\1 \2 \3/p' "$out/lintian.txt" | sort | uniq -c || true
if grep -q '^E: ' "$out/lintian.txt"; then
    echo "build-deb: lintian found errors" >&2
    exit 1
fi
