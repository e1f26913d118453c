#!/usr/bin/env bash
# `make fresh-check`: the README's quick start on a machine that has never
# seen this project. Builds a clean Debian 12 (bookworm, minbase: what a
# container image or a minimal install has) with debootstrap, clones the
# checkout's commit into it, and there, as root:
#   1. apt-get update && apt-get install -y make   (the README's first line)
#   2. make run   in the background, until GET /healthz answers and a
#                 POST /api/chat (stream and not) works against the bundled
#                 mock; then SIGINT to its process group, as Ctrl-C would
#   3. make test  to the end; its "N passed, N failed" line is printed
# Exit 0 only when all of it passed. Needs root and Debian's mirror (the one
# this machine's apt uses). Not part of `make test`: it takes ~15 minutes.
#   FRESH_REF=commit       what to check (default HEAD; uncommitted edits are
#                          not part of it)
#   FRESH_CACHE=dir        debootstrap base kept between runs, and the .debs
#                          (default /var/cache/zju-fresh-check)
#   FRESH_WORK=dir         the root and the logs (default /tmp/zju-fresh-check;
#                          the root is deleted at the end, the logs stay)
#   FRESH_KEEP=1           keep the root too
#   FRESH_COMMAND='make fuzz FUZZ_SECONDS=5'
#                          run this as the first command instead of the quick
#                          start (any front-door target must work that way)
# Everything inside runs in its own mount and PID namespaces (unshare): the
# mounts and every process started in the root go away with it, whatever
# way this script ends; the inner part also unmounts and stops them itself.
set -euo pipefail
self=$(readlink -f "$0")
cd "$(dirname "$self")/.."

CACHE=${FRESH_CACHE:-/var/cache/zju-fresh-check}
WORK=${FRESH_WORK:-/tmp/zju-fresh-check}
ROOT=$WORK/root
SRC=/root/zju-chat # the checkout, inside the root
# A login's environment and signal dispositions: this script may run under
# nohup in the background, which starts its commands with SIGINT ignored.
CHROOT_ENV=(env -i --default-signal HOME=/root TERM=dumb
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
say() { echo "fresh-check: $*"; }

# ---------------------------------------------------------------- inside
# bash fresh-check.sh --inside PORT: runs as PID 1 of new mount and PID
# namespaces (mounts made here are private to them).

# PIDs of the processes whose root directory is the chroot.
in_root() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(readlink "$p/root" 2>/dev/null)" = "$ROOT" ] && echo "${p#/proc/}"
    done
    return 0
}

inside_cleanup() {
    local pids
    pids=$(in_root)
    if [ -n "$pids" ]; then
        kill -KILL $pids 2>/dev/null || true
        sleep 0.5
    fi
    for m in var/cache/apt/archives dev/shm dev/pts dev sys proc; do
        mountpoint -q "$ROOT/$m" && { umount "$ROOT/$m" || umount -l "$ROOT/$m"; }
    done
    mountpoint -q "$ROOT" && { umount "$ROOT" || umount -l "$ROOT"; }
    return 0
}

in_chroot() { chroot "$ROOT" "${CHROOT_ENV[@]}" bash -c "$1"; }

inside() {
    local port=$1 url="http://127.0.0.1:$1"
    trap inside_cleanup EXIT
    # The root a mount of its own, as / is on a machine: unshare(1) and
    # systemd's sandboxing (tests/e2e/test_systemd.py) change the
    # propagation of /, which fails on a directory that is not a mount.
    mount --bind "$ROOT" "$ROOT"
    mount -t proc proc "$ROOT/proc"
    mount -t sysfs sysfs "$ROOT/sys"
    mount --bind /dev "$ROOT/dev"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts"
    mount -t tmpfs tmpfs "$ROOT/dev/shm"
    mkdir -p "$CACHE/debs"
    mount --bind "$CACHE/debs" "$ROOT/var/cache/apt/archives"

    say "step 1: apt-get update && apt-get install -y make"
    in_chroot "apt-get update -qq && apt-get install -y -qq make >/dev/null" >"$WORK/setup.log" 2>&1 || {
        tail -20 "$WORK/setup.log"
        say "FAILED: could not install make"
        return 1
    }

    if [ -n "${FRESH_COMMAND:-}" ]; then
        say "step 2: $FRESH_COMMAND (instead of the quick start), log $WORK/command.log"
        local crc=0
        in_chroot "cd $SRC && $FRESH_COMMAND" >"$WORK/command.log" 2>&1 </dev/null || crc=$?
        tail -15 "$WORK/command.log"
        say "$FRESH_COMMAND: exit $crc"
        return $crc
    fi

    say "step 2: make run (PORT=$port), log $WORK/run.log"
    # setsid: its own process group, which gets the SIGINT as Ctrl-C would.
    # (A background command of a script starts with SIGINT ignored, and make
    # and bash could not undo that: env restores the default first.)
    setsid env --default-signal=INT chroot "$ROOT" "${CHROOT_ENV[@]}" PORT="$port" bash -c "cd $SRC && exec make run" \
        >"$WORK/run.log" 2>&1 </dev/null &
    local run_pid=$! started=$SECONDS
    until curl -sf -o /dev/null --max-time 2 "$url/healthz"; do
        if ! kill -0 "$run_pid" 2>/dev/null; then
            tail -30 "$WORK/run.log"
            say "FAILED: make run exited before the server answered"
            return 1
        fi
        if [ $((SECONDS - started)) -gt "${FRESH_RUN_TIMEOUT:-2400}" ]; then
            tail -30 "$WORK/run.log"
            say "FAILED: no answer on $url/healthz after ${FRESH_RUN_TIMEOUT:-2400}s"
            return 1
        fi
        sleep 2
    done
    say "make run answers /healthz after $((SECONDS - started))s"
    local ok=1 body code
    grep -q "answers come from a MOCK upstream" "$WORK/run.log" || {
        say "no mock banner in the make run output"
        ok=0
    }
    local lib=$ROOT$SRC/build/libzjuchat.so.1
    for dep in libcurl libevent jansson yajl; do
        readelf -d "$lib" | grep NEEDED | grep -q "\[lib$dep\|\[$dep" || {
            say "$lib has no NEEDED entry for $dep"
            ok=0
        }
    done
    body=$(curl -sS --max-time 30 -w '\n%{http_code}' "$url/api/chat" \
        -H 'Content-Type: application/json' -d '{"user_content": "你好"}') || true
    code=${body##*$'\n'}
    if [ "$code" = 200 ] && grep -q '"choices"' <<<"$body"; then
        say "POST /api/chat: 200, $(grep -o '"content": *"[^"]*"' <<<"$body" | head -1)"
    else
        say "POST /api/chat failed: $body"
        ok=0
    fi
    body=$(curl -sS -N --max-time 60 -w '\n%{http_code}' "$url/api/chat" \
        -H 'Content-Type: application/json' -d '{"user_content": "你好", "stream": true}') || true
    code=${body##*$'\n'}
    local events
    events=$(grep -c '^data: ' <<<"$body" || true)
    if [ "$code" = 200 ] && [ "$events" -gt 1 ] && ! grep -q '^data: {"error"' <<<"$body"; then
        say "POST /api/chat stream: 200, $events events"
    else
        say "POST /api/chat stream failed: $(tail -c 600 <<<"$body")"
        ok=0
    fi

    kill -INT -- -"$run_pid"
    local stop_at=$((SECONDS + 60))
    while kill -0 "$run_pid" 2>/dev/null && [ $SECONDS -lt $stop_at ]; do sleep 0.5; done
    local rc=0
    if kill -0 "$run_pid" 2>/dev/null; then
        say "make run still running 60s after SIGINT"
        ok=0
    else
        wait "$run_pid" || rc=$?
        say "make run stopped by SIGINT (exit $rc)"
    fi
    sleep 1
    local left
    left=$(in_root)
    if [ -n "$left" ]; then
        say "processes left in the root after make run stopped:"
        ps -o pid,args -p "$(tr '\n' ',' <<<"$left" | sed 's/,$//')" || true
        ok=0
    fi
    tail -5 "$WORK/run.log"
    [ $ok = 1 ] || {
        say "FAILED: make run"
        return 1
    }

    say "step 3: make test, log $WORK/test.log"
    started=$SECONDS
    rc=0
    timeout -s KILL "${FRESH_TEST_TIMEOUT:-3600}" chroot "$ROOT" "${CHROOT_ENV[@]}" \
        bash -c "cd $SRC && make test" >"$WORK/test.log" 2>&1 </dev/null || rc=$?
    grep -E '^(FAILED|FAIL|ERROR):' "$WORK/test.log" | head -40 || true
    local summary
    summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/test.log" | tail -1 || true)
    say "make test: exit $rc after $((SECONDS - started))s: ${summary:-no summary line}"
    [ "$rc" = 0 ] && [ -n "$summary" ] && [ "${summary#* passed, }" = "0 failed" ]
}

if [ "${1:-}" = --inside ]; then
    [ $$ = 1 ] || {
        echo "fresh-check: --inside is for the script itself" >&2
        exit 2
    }
    inside "$2"
    exit $?
fi

# ---------------------------------------------------------------- outside

[ "$(id -u)" = 0 ] || {
    echo "fresh-check: needs root (debootstrap, chroot, mounts)" >&2
    exit 2
}
mkdir -p "$CACHE" "$WORK"
exec 9>"$CACHE/lock"
flock -n 9 || {
    echo "fresh-check: another fresh-check is running" >&2
    exit 2
}
command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# The Debian mirror of this machine's apt sources (deb822 or one-line).
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list 2>/dev/null |
    sed -n -E -e 's/^URIs:[[:space:]]*([^[:space:]]*\/debian)\/?([[:space:]].*)?$/\1/p' \
        -e 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]*\/debian)\/?[[:space:]]+bookworm[[:space:]].*/\2/p' |
    head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

base=$CACHE/bookworm-minbase
if [ ! -d "$base" ]; then
    say "debootstrap bookworm (minbase) from $mirror into $base"
    rm -rf "$base.tmp"
    debootstrap --variant=minbase bookworm "$base.tmp" "$mirror" >"$WORK/debootstrap.log" 2>&1 || {
        tail -20 "$WORK/debootstrap.log"
        say "FAILED: debootstrap"
        exit 1
    }
    mv "$base.tmp" "$base"
fi

# A root left by an earlier run: only delete it when nothing is mounted in it.
if [ -e "$ROOT" ]; then
    if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
        say "FAILED: $ROOT still has mounts (see findmnt); not touching it"
        exit 1
    fi
    rm -rf --one-file-system "$ROOT"
fi
say "copying the base into $ROOT"
cp -a "$base" "$ROOT"
rm -f "$ROOT"/var/cache/apt/archives/*.deb
# What a real machine has and a bare debootstrap lacks: /etc/hosts (so
# "localhost" resolves), and no daemons started by package scripts (a chroot
# has no init; nginx-light would start on the host's port 80).
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The CAs this machine adds to its trust store (e.g. a TLS-intercepting
# egress proxy's, as on the sandbox this was written on): a machine on this
# network has them too, or npm (tests/node) cannot reach its registry. The
# ca-certificates package, installed by install-deps.sh, takes them in.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
fi

commit=$(git rev-parse --verify "${FRESH_REF:-HEAD}^{commit}")
say "cloning commit $commit into $SRC"
git clone -q --no-hardlinks . "$ROOT$SRC"
git -C "$ROOT$SRC" checkout -q --detach "$commit"

# make run serves on :5001 unless PORT says otherwise; this machine may
# already use 5001.
port=5001
if ! python3 -c 'import socket,sys; s=socket.socket(); s.bind(("0.0.0.0", 5001))' 2>/dev/null; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    say "port 5001 is taken here: make run gets PORT=$port"
fi

rc=0
unshare --mount --propagation private --pid --fork --kill-child --mount-proc \
    bash "$self" --inside "$port" || rc=$?

if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
    say "mounts left under $ROOT; root kept"
elif [ "${FRESH_KEEP:-0}" != 1 ]; then
    rm -rf --one-file-system "$ROOT"
fi
if [ $rc = 0 ]; then
    say "PASSED (commit $commit; logs in $WORK)"
else
    say "FAILED (commit $commit; logs in $WORK)"
fi
exit $rc
