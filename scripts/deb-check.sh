#!/usr/bin/env bash
# `make deb-check`: the packages of `make deb` on a Debian 12 that has never
# seen this project. In a clean bookworm minbase root (debootstrap, cached
# with scripts/fresh-check.sh's: same FRESH_CACHE), as root:
#   1. apt-get install ./zju-chat_*.deb ./libzjuchat1_*.deb
#      ./libzjuchat-dev_*.deb (their dependencies from Debian's mirror),
#      with man-db, gcc and curl, as a user would have them
#   2. /etc/zju-chat/env is a 0640 conffile; the unit is in place
#   3. the service as systemd would start it (a chroot has no systemd): the
#      unit's Environment=, then /etc/zju-chat/env, its ExecStart line with
#      ${VAR}s expanded, run as an unprivileged user with no capabilities
#      and no_new_privs; GET /healthz answers; with a key and ZJU_BASE_URL
#      (the packaged zju-mock-upstream) in the env file, POST /api/chat
#      answers 200; SIGTERM drains and it exits 0
#   4. zju-chat --version, man -w zju-chat-server (section 8) and zjuchat(3)
#   5. a program built with `cc prog.c $(pkg-config --cflags --libs
#      libzjuchat)` links libzjuchat.so.1 and runs against the mock
#   6. apt-get purge zju-chat removes /etc/zju-chat/env; installing it
#      again brings the conffile back
#   7. with systemd-nspawn (Debian's systemd-container) on this machine:
#      systemd and dbus go into the root, which boots under nspawn (sharing
#      this machine's network), so the packaged unit runs under a real
#      systemd with all its hardening: enabled and started at boot, as the
#      package's postinst asks; /healthz and a chat through the packaged
#      mock (a unit of its own); systemctl stop with a stream in flight
#      (the stream completes, Result=success, within TimeoutStopSec); a
#      killed main process is restarted (Restart=on-failure); a
#      configuration error (exit 2) is not; systemd-analyze security.
#      Without nspawn the step is skipped, and says so.
# Exit 0 only when all of it passed.
#   DEB_DIR=dir          the .debs (default build/deb)
#   FRESH_CACHE=dir      the debootstrap base and the downloaded .debs
#                        (default /var/cache/zju-fresh-check)
#   DEB_CHECK_WORK=dir   the root and the logs (default /tmp/zju-deb-check)
# Like fresh-check.sh it works in its own mount and PID namespaces, so the
# mounts and every process started in the root go away with it.
set -euo pipefail
self=$(readlink -f "$0")
cd "$(dirname "$self")/.."

DEBS=$(readlink -f "${DEB_DIR:-build/deb}")
CACHE=${FRESH_CACHE:-/var/cache/zju-fresh-check}
WORK=${DEB_CHECK_WORK:-/tmp/zju-deb-check}
ROOT=$WORK/root
KEY=sk-deb-check-not-a-real-key-0123456789
CHROOT_ENV=(env -i --default-signal HOME=/root TERM=dumb LC_ALL=C.UTF-8
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
say() { echo "deb-check: $*"; }

# ---------------------------------------------------------------- inside
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
    return 0
}

in_chroot() { chroot "$ROOT" "${CHROOT_ENV[@]}" bash -c "$1"; }

fail() {
    say "FAILED: $*"
    exit 1
}

# The service's environment as systemd builds it: the unit's Environment=
# lines, then EnvironmentFile= (which wins). Prints NAME=VALUE lines.
service_env() {
    local unit=$1 line key val
    sed -n 's/^Environment=//p' "$unit" | tr ' ' '\n' | grep -E '^[A-Za-z_][A-Za-z0-9_]*='
    while IFS= read -r line || [ -n "$line" ]; do
        line=${line#"${line%%[![:space:]]*}"}
        case $line in '' | '#'* | ';'*) continue ;; esac
        key=${line%%=*}
        val=${line#*=}
        val=${val#"${val%%[![:space:]]*}"}
        val=${val%"${val##*[![:space:]]}"}
        # systemd strips one pair of quotes around a value
        case $val in \"*\" | \'*\') val=${val:1:${#val}-2} ;; esac
        echo "$key=$val"
    done <"$ROOT/etc/zju-chat/env"
}

# The unit's ExecStart with ${NAME} expanded from the service's environment.
exec_start() {
    local unit=$1 cmd name val
    cmd=$(sed -n 's/^ExecStart=//p' "$unit")
    while [[ $cmd =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
        name=${BASH_REMATCH[1]}
        val=$(service_env "$unit" | sed -n "s/^$name=//p" | tail -1)
        cmd=${cmd//\$\{$name\}/$val}
    done
    echo "$cmd"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

inside() {
    trap inside_cleanup EXIT
    mount -t proc proc "$ROOT/proc"
    mount -t sysfs sysfs "$ROOT/sys"
    mount --bind /dev "$ROOT/dev"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts"
    mount -t tmpfs tmpfs "$ROOT/dev/shm"
    mkdir -p "$CACHE/debs"
    mount --bind "$CACHE/debs" "$ROOT/var/cache/apt/archives"

    say "step 1: apt-get install the packages (log $WORK/install.log)"
    local started=$SECONDS
    in_chroot "apt-get update -qq && cd /tmp/debs &&
        apt-get install -y -qq --no-install-recommends ./zju-chat_*.deb ./libzjuchat1_*.deb \
            ./libzjuchat-dev_*.deb man-db gcc libc6-dev pkg-config curl" \
        >"$WORK/install.log" 2>&1 </dev/null || {
        tail -30 "$WORK/install.log"
        fail "apt-get install"
    }
    say "installed in $((SECONDS - started))s: $(in_chroot "dpkg-query -W zju-chat libzjuchat1 libzjuchat-dev" | tr '\t\n' '  ')"

    say "step 2: conffile and unit"
    local unit=$ROOT/lib/systemd/system/zju-chat-server.service
    [ -f "$unit" ] || fail "no $unit"
    local mode
    mode=$(stat -c '%a %U:%G' "$ROOT/etc/zju-chat/env")
    [ "$mode" = "640 root:root" ] || fail "/etc/zju-chat/env is $mode, want 640 root:root"
    grep -qx /etc/zju-chat/env "$ROOT/var/lib/dpkg/info/zju-chat.conffiles" ||
        fail "/etc/zju-chat/env is not a conffile"
    say "/etc/zju-chat/env: $mode, a conffile"

    say "step 3: the service's ExecStart, as a dynamic user would run it"
    local mock_port port
    mock_port=$(free_port)
    setsid chroot "$ROOT" "${CHROOT_ENV[@]}" setpriv --reuid=61999 --regid=61999 --clear-groups \
        --no-new-privs --inh-caps=-all --bounding-set=-all \
        zju-mock-upstream --port "$mock_port" --key "$KEY" >"$WORK/mock.log" 2>&1 </dev/null &
    local mock_pid=$!
    # As an admin would: the key and the upstream in /etc/zju-chat/env, the
    # port (5001 may be taken on this machine).
    port=$(free_port)
    printf 'ZJU_API_KEY=%s\nZJU_BASE_URL=http://127.0.0.1:%s/v1\nPORT=%s\n' "$KEY" "$mock_port" "$port" \
        >>"$ROOT/etc/zju-chat/env"
    local cmd
    cmd=$(exec_start "$unit")
    say "ExecStart: $cmd (LISTEN_HOST, PORT from the unit and the env file)"
    local envs=()
    mapfile -t envs < <(service_env "$unit")
    mkdir -p "$ROOT/run/zju-chat-server"
    chown 61999:61999 "$ROOT/run/zju-chat-server"
    # KillMode=mixed: the signal goes to the main process only.
    # shellcheck disable=SC2086 # ExecStart's words, as systemd splits them
    setsid chroot "$ROOT" env -i PATH=/usr/bin:/bin "${envs[@]}" \
        setpriv --reuid=61999 --regid=61999 --clear-groups --no-new-privs --inh-caps=-all \
        --bounding-set=-all bash -c 'cd /run/zju-chat-server && exec "$@"' - $cmd \
        >"$WORK/server.log" 2>&1 </dev/null &
    local deadline=$((SECONDS + 30)) url=http://127.0.0.1:$port
    until curl -sf -o "$WORK/healthz.json" --max-time 2 "$url/healthz"; do
        [ $SECONDS -lt $deadline ] || {
            tail -20 "$WORK/server.log"
            fail "no answer on $url/healthz"
        }
        sleep 0.3
    done
    say "GET /healthz: $(cat "$WORK/healthz.json")"
    grep -q '"key_set": true' "$WORK/healthz.json" || fail "the key of /etc/zju-chat/env is not set"
    local body
    body=$(curl -sS --max-time 30 -w ' %{http_code}' "$url/api/chat" -H 'Content-Type: application/json' \
        -d '{"user_content": "你好"}') || true
    [ "${body##* }" = 200 ] || fail "POST /api/chat: $body"
    say "POST /api/chat through the packaged mock: 200"
    local spid
    spid=$(pgrep -f -o "^/usr/bin/zju-chat-server -b 127.0.0.1:$port") || fail "no server process"
    [ "$(stat -c %u /proc/"$spid")" = 61999 ] || fail "the server does not run as the unprivileged user"
    kill -TERM "$spid"
    deadline=$((SECONDS + 45)) # the unit's TimeoutStopSec
    while kill -0 "$spid" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || fail "still running 45 s (TimeoutStopSec) after SIGTERM"
        sleep 0.2
    done
    grep -q 'server stopped' "$WORK/server.log" || fail "no 'server stopped' in the log"
    say "SIGTERM: drained and stopped"

    say "step 4: the commands and the man pages"
    local v
    v=$(in_chroot "zju-chat --version") || fail "zju-chat --version"
    say "zju-chat --version: $v"
    local page
    for page in "8 zju-chat-server" "1 zju-chat" "1 zju-mock-upstream" "3 zjuchat"; do
        v=$(in_chroot "man -w $page") || fail "man -w $page"
        say "man -w $page: $v"
    done

    say "step 5: a program built against libzjuchat-dev"
    cat >"$ROOT/tmp/prog.c" <<'EOF'
#include <stdio.h>
#include <zjuchat.h>

static int print_chunk(const zjuchat_chunk *chunk, void *userdata)
{
    size_t len;
    const char *text = zjuchat_chunk_content(chunk, &len);
    if (text)
        fwrite(text, 1, len, stdout);
    return 0;
}

int main(void)
{
    zjuchat_error err;
    zjuchat_client *client = zjuchat_client_new_from_env(&err);
    if (!client) {
        fprintf(stderr, "%s: %s\n", zjuchat_strerror(err.code), err.message);
        return 1;
    }
    zjuchat_request *req = zjuchat_request_new_simple(NULL, "hello", NULL);
    int rc = zjuchat_stream(client, req, print_chunk, NULL, &err) == ZJUCHAT_OK ? 0 : 1;
    if (rc)
        fprintf(stderr, "%s: %s\n", zjuchat_strerror(err.code), err.message);
    zjuchat_request_free(req);
    zjuchat_client_free(client);
    return rc;
}
EOF
    in_chroot "cd /tmp && cc -Wall -Werror prog.c -o prog \$(pkg-config --cflags --libs libzjuchat)" ||
        fail "compiling against libzjuchat-dev"
    # the whole output first: grep -q leaves ldd a SIGPIPE, which pipefail counts
    v=$(in_chroot "ldd /tmp/prog")
    grep -qE 'libzjuchat.so.1 => /(usr/)?lib/' <<<"$v" || fail "prog does not link libzjuchat.so.1: $v"
    v=$(in_chroot "ZJU_API_KEY=$KEY ZJU_BASE_URL=http://127.0.0.1:$mock_port/v1 /tmp/prog") ||
        fail "prog against the mock"
    say "prog (libzjuchat.so.1) streamed: ${v:0:60}"
    kill -TERM "$mock_pid"
    wait "$mock_pid" || fail "the mock did not stop cleanly on SIGTERM"

    say "step 6: apt-get purge zju-chat"
    in_chroot "apt-get purge -y -qq zju-chat" >>"$WORK/install.log" 2>&1 || fail "apt-get purge"
    [ ! -e "$ROOT/etc/zju-chat/env" ] || fail "/etc/zju-chat/env left after purge"
    [ ! -e "$ROOT/usr/bin/zju-chat-server" ] || fail "/usr/bin/zju-chat-server left after purge"
    say "purged: /etc/zju-chat/env and the commands are gone"
    in_chroot "cd /tmp/debs && apt-get install -y -qq ./zju-chat_*.deb" >>"$WORK/install.log" 2>&1 ||
        fail "installing zju-chat again"
    [ "$(stat -c %a "$ROOT/etc/zju-chat/env")" = 640 ] || fail "no /etc/zju-chat/env after installing again"
    say "installed again: /etc/zju-chat/env is back"

    if [ "${DEB_CHECK_BOOT:-0}" = 1 ]; then
        say "step 7 (preparing): systemd and dbus into the root, for the boot"
        in_chroot "apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus" \
            >>"$WORK/install.log" 2>&1 </dev/null || fail "installing systemd"
        [ -L "$ROOT/etc/systemd/system/multi-user.target.wants/zju-chat-server.service" ] ||
            fail "the package did not enable zju-chat-server.service"
    fi
    return 0
}

# ---------------------------------------------------------------- boot
# The root booted by systemd-nspawn: the packaged unit under a real systemd.
# Runs in its own PID and mount namespaces; every path is under $ROOT,
# which is checked to be set first.
ctr_pid=
ctr() { nsenter -t "$ctr_pid" -a "$@"; }
prop() { ctr systemctl show -P "$1" zju-chat-server.service; }
healthy() { curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$1/healthz"; }

boot_check() {
    [ -n "$ROOT" ] && [ "$ROOT" != / ] && [ -f "$ROOT/etc/os-release" ] || fail "bad root '$ROOT'"
    local port mock_port nspawn_pid deadline
    port=$(free_port)
    mock_port=$(free_port)
    # As an admin would: key and upstream in the env file (the upstream the
    # packaged mock, run as a unit of its own), a port free on this machine.
    printf 'ZJU_API_KEY=%s\nZJU_BASE_URL=http://127.0.0.1:%s/v1\nPORT=%s\n' "$KEY" "$mock_port" "$port" \
        >>"$ROOT/etc/zju-chat/env"
    printf '%s\n' '[Unit]' 'Description=the packaged mock upstream, for deb-check' \
        'Before=zju-chat-server.service' '[Service]' \
        "ExecStart=/usr/bin/zju-mock-upstream --port $mock_port --key $KEY" 'DynamicUser=yes' \
        '[Install]' 'WantedBy=multi-user.target' >"$ROOT/etc/systemd/system/zju-mock.service"
    ln -sf /etc/systemd/system/zju-mock.service "$ROOT/etc/systemd/system/multi-user.target.wants/"
    rm -f "$ROOT/usr/sbin/policy-rc.d"
    echo deb-check >"$ROOT/etc/hostname"

    say "step 7: boot the root with systemd-nspawn (console log $WORK/boot.log)"
    # --keep-unit --register=no: this machine's PID 1 is no systemd to ask
    systemd-nspawn -q -D "$ROOT" --boot --register=no --keep-unit >"$WORK/boot.log" 2>&1 </dev/null &
    nspawn_pid=$!
    deadline=$((SECONDS + 60))
    until healthy "$port"; do
        kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited: $(tail -5 "$WORK/boot.log")"
        [ $SECONDS -lt $deadline ] || fail "the service did not answer within 60 s of the boot"
        sleep 0.5
    done
    ctr_pid=$(pgrep -P "$nspawn_pid" | head -1)
    [ -n "$ctr_pid" ] || fail "no container init"
    local state user main
    state=$(prop ActiveState)
    [ "$state" = active ] || fail "zju-chat-server.service is $state"
    main=$(prop MainPID)
    user=$(ctr stat -c %u "/proc/$main") # a dynamic user: a uid without a passwd line
    say "booted: zju-chat-server.service active (enabled by the package), main pid $main, uid $user"
    [ "$user" != 0 ] || fail "the service runs as root"
    ctr grep -q '^Seccomp:[[:space:]]*2' "/proc/$main/status" || fail "no system call filter on the service"
    ctr grep -q '^CapEff:[[:space:]]*0*$' "/proc/$main/status" || fail "the service has capabilities"
    local body
    body=$(curl -sS --max-time 30 -w ' %{http_code}' "http://127.0.0.1:$port/api/chat" \
        -H 'Content-Type: application/json' -d '{"user_content": "你好"}') || true
    [ "${body##* }" = 200 ] || fail "POST /api/chat under systemd: $body"
    say "POST /api/chat through the packaged mock: 200"
    say "systemd-analyze security: $(ctr systemd-analyze security --no-pager zju-chat-server.service 2>&1 |
        sed -n 's/.*Overall exposure level for zju-chat-server.service: //p')"

    # systemctl stop while a 2 s stream is in flight
    curl -sS -N --max-time 60 "http://127.0.0.1:$port/api/chat" -H 'Content-Type: application/json' \
        -d '{"user_content": "hi", "stream": true, "model": "deepseek-r1-671b#events=20,delay=100"}' \
        >"$WORK/stream.txt" 2>&1 &
    local curl_pid=$! t0
    sleep 0.5
    t0=$SECONDS
    ctr systemctl stop zju-chat-server.service || fail "systemctl stop"
    wait "$curl_pid" || fail "the stream broke on systemctl stop: $(tail -c 300 "$WORK/stream.txt")"
    grep -q '"finish_reason": *"stop"' "$WORK/stream.txt" ||
        fail "the stream did not finish: $(tail -c 300 "$WORK/stream.txt")"
    [ "$(prop Result)" = success ] || fail "stop: Result=$(prop Result)"
    body=$(ctr journalctl -u zju-chat-server.service --no-pager)
    grep -q 'server stopped' <<<"$body" || fail "no 'server stopped' in the journal"
    say "systemctl stop with a stream in flight: the stream finished, Result=success, $((SECONDS - t0))s"

    # a crash restarts the service
    ctr systemctl start zju-chat-server.service || fail "systemctl start"
    main=$(prop MainPID)
    ctr systemctl kill --kill-whom=main --signal=KILL zju-chat-server.service
    deadline=$((SECONDS + 20))
    until [ "$(prop NRestarts)" = 1 ] && healthy "$port"; do
        [ $SECONDS -lt $deadline ] || fail "not restarted after SIGKILL (NRestarts=$(prop NRestarts))"
        sleep 0.5
    done
    say "SIGKILL to the main process: restarted (NRestarts=1), answering again"

    # a configuration error is not retried
    echo 'CORS_ORIGINS=' >>"$ROOT/etc/zju-chat/env"
    # (Type=exec: the restart job is done once the server runs; it exits 2
    # right after)
    ctr systemctl restart zju-chat-server.service || true
    deadline=$((SECONDS + 10))
    until [ "$(prop ActiveState)" = failed ]; do
        [ $SECONDS -lt $deadline ] || fail "bad env file: $(prop ActiveState) 10 s later, want failed"
        sleep 0.5
    done
    sleep 3 # RestartSec=2: a restart would have come by now
    [ "$(prop ExecMainStatus)" = 2 ] || fail "bad env file: exit $(prop ExecMainStatus), want 2"
    [ "$(prop ActiveState)" = failed ] || fail "bad env file: $(prop ActiveState), want failed"
    [ "$(prop NRestarts)" = 0 ] || fail "a configuration error was restarted ($(prop NRestarts))"
    say "a bad env file: exit 2, failed, not restarted; the journal: $(ctr journalctl \
        -u zju-chat-server.service --no-pager -o cat | grep CORS_ORIGINS | tail -1)"

    ctr systemctl poweroff || true
    deadline=$((SECONDS + 30))
    while kill -0 "$nspawn_pid" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || {
            kill -KILL "$nspawn_pid"
            fail "the container did not power off"
        }
        sleep 0.5
    done
    say "powered off"
    return 0
}

if [ "${1:-}" = --inside ]; then
    [ $$ = 1 ] || {
        echo "deb-check: --inside is for the script itself" >&2
        exit 2
    }
    inside
    exit $?
fi
if [ "${1:-}" = --boot ]; then
    [ $$ = 1 ] || {
        echo "deb-check: --boot is for the script itself" >&2
        exit 2
    }
    boot_check
    exit $?
fi

# ---------------------------------------------------------------- outside
[ "$(id -u)" = 0 ] || {
    echo "deb-check: needs root (debootstrap, chroot, mounts)" >&2
    exit 2
}
compgen -G "$DEBS/zju-chat_*.deb" >/dev/null || {
    echo "deb-check: no zju-chat_*.deb in $DEBS (make deb)" >&2
    exit 2
}
mkdir -p "$CACHE" "$WORK"
# The base and the .deb cache are fresh-check's too: one user at a time.
exec 9>"$CACHE/lock"
flock -w 1800 9 || {
    echo "deb-check: $CACHE is locked by another check" >&2
    exit 2
}
command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
mirror=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list 2>/dev/null |
    sed -n -E -e 's/^URIs:[[:space:]]*([^[:space:]]*\/debian)\/?([[:space:]].*)?$/\1/p' \
        -e 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]*\/debian)\/?[[:space:]]+bookworm[[:space:]].*/\2/p' |
    head -1 || true)
mirror=${mirror:-http://deb.debian.org/debian}

started=$SECONDS
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
    say "debootstrap took $((SECONDS - started))s"
fi
if [ -e "$ROOT" ]; then
    if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
        say "FAILED: $ROOT still has mounts (see findmnt); not touching it"
        exit 1
    fi
    rm -rf --one-file-system "$ROOT"
fi
cp -a "$base" "$ROOT"
rm -f "$ROOT"/var/cache/apt/archives/*.deb
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
# No init in a chroot: package scripts start no daemon (the service's
# postinst asks deb-systemd-invoke, which checks /run/systemd/system).
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
mkdir -p "$ROOT/tmp/debs"
cp "$DEBS"/zju-chat_*.deb "$DEBS"/libzjuchat1_*.deb "$DEBS"/libzjuchat-dev_*.deb "$ROOT/tmp/debs/"
say "packages: $(cd "$ROOT/tmp/debs" && echo *.deb)"

if command -v systemd-nspawn >/dev/null; then
    export DEB_CHECK_BOOT=1
else
    say "no systemd-nspawn here (apt-get install systemd-container): step 7, the boot, is skipped"
fi
rc=0
unshare --mount --propagation private --pid --fork --kill-child --mount-proc \
    bash "$self" --inside || rc=$?
if [ $rc = 0 ] && [ "${DEB_CHECK_BOOT:-0}" = 1 ]; then
    # its own PID namespace: whatever the container leaves dies with it
    unshare --mount --propagation private --pid --fork --kill-child --mount-proc \
        bash "$self" --boot || rc=$?
fi

if findmnt -rn -o TARGET | grep -q "^$ROOT/"; then
    say "mounts left under $ROOT; root kept"
else
    rm -rf --one-file-system "$ROOT"
fi
if [ $rc = 0 ]; then
    say "PASSED in $((SECONDS - started))s (logs in $WORK)"
else
    say "FAILED after $((SECONDS - started))s (logs in $WORK)"
fi
exit $rc
