#!/usr/bin/env bash
# Install the Debian 12 packages the build, tests and benchmarks need,
# only when something is missing (so repeated runs are quick and offline:
# every make that compiles calls this first, see the Makefile).
#   git              scripts/format-check.sh lists the tracked files with it
#   ca-certificates  the system CA store libcurl verifies the real API with
#                    (a recommendation apt skips with --no-install-recommends;
#                    a minimal Debian 12 has none)
#   time             /usr/bin/time, used by the benchmarks
#   libhiredis-dev   the Redis client of the rate limits shared across instances
#                    (REDIS_URL, src/server/limits_redis.c)
# With --tests (make test, make e2e) also Node.js and the npm packages of the
# client tests (tests/node/), and promtool (Debian's prometheus package,
# which also enables a prometheus service where systemd runs; none starts in
# a container) to check the /metrics text: building and running the server
# never needs them. redis-server too: tests/e2e/test_limits_redis.py and
# tests/unit/test_limits_redis.c start their own on loopback (Debian's
# package also enables a redis service where systemd runs; none starts in a
# container, and the tests never use one).
set -euo pipefail
for_tests=0
[ "${1:-}" = --tests ] && for_tests=1
pkgs=(build-essential pkg-config libcurl4-openssl-dev libevent-dev libjansson-dev libyajl-dev
      libcmocka-dev libedit-dev libssl-dev libhttp-parser-dev libhiredis-dev python3 curl openssl ca-certificates git clang-format
      clang libclang-rt-14-dev nginx-light wrk procps time)
# With --deb (make deb, scripts/build-deb.sh): dpkg-buildpackage's helpers
# and lintian; debootstrap for scripts/deb-check.sh's clean root, and
# systemd-nspawn (systemd-container) to boot it.
if [ "${1:-}" = --deb ]; then
    pkgs+=(debhelper dpkg-dev lintian debootstrap systemd-container)
fi
# One dpkg-query for all: "name status" per known package (unknown ones are
# simply not listed, and so count as missing).
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null |
            sed -n 's/^\([^ ]*\) .*ok installed$/\1/p' || true)
missing=()
for p in "${pkgs[@]}"; do
    grep -qxF "$p" <<<"$installed" || missing+=("$p")
done
# Node.js for the client tests (tests/node/): Debian's nodejs (18.x) and npm,
# only when there is no node or npm command at all. A node installed another
# way is kept: NodeSource's nodejs bundles npm and conflicts with Debian's.
if [ $for_tests = 1 ]; then
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v redis-server >/dev/null || missing+=(redis-server)
    # man: tests/e2e/test_install.py renders the installed pages, and
    # systemd-analyze verify looks up the unit's Documentation= with it
    # (a minimal Debian 12 has neither; test_systemd.py needs both).
    command -v man >/dev/null || missing+=(man-db)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
fi
# The chat page's browser test (tests/node/page.test.mjs): Debian's Chromium,
# driven by playwright-core with executablePath (no browser download), and
# fonts for the Chinese and emoji of the answers in its screenshots.
if [ $for_tests = 1 ]; then
    for p in chromium fonts-wqy-microhei fonts-noto-color-emoji; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The client tests' npm packages, exactly as tests/node/package-lock.json
# pins them, when they are missing or the lock file changed since. npm writes
# node_modules/.package-lock.json last, so an install cut short is redone.
node_dir=$(dirname "$0")/../tests/node
if [ $for_tests = 1 ] && [ -f "$node_dir/package-lock.json" ] &&
   ! [ "$node_dir/node_modules/.package-lock.json" -nt "$node_dir/package-lock.json" ]; then
    echo "install-deps: npm ci in tests/node" >&2
    npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error >/dev/null
fi
# The chat page's build packages (web/package-lock.json): `make web` builds
# web/dist with them, and a test rebuilds it to check the committed one.
web_dir=$(dirname "$0")/../web
if [ $for_tests = 1 ] && [ -f "$web_dir/package-lock.json" ] &&
   ! [ "$web_dir/node_modules/.package-lock.json" -nt "$web_dir/package-lock.json" ]; then
    echo "install-deps: npm ci in web" >&2
    npm ci --prefix "$web_dir" --no-audit --no-fund --loglevel=error >/dev/null
fi
