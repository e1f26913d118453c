#!/usr/bin/env bash
# fuzz/build.sh FLAVOUR [TARGET...] - build fuzz drivers into build-fuzz/FLAVOUR/
# ($FUZZ_BUILD/FLAVOUR/ when FUZZ_BUILD names another directory, so that two
# people can build at once).
#   FLAVOUR fuzz:   clang -fsanitize=fuzzer,address,undefined (libFuzzer main)
#   FLAVOUR replay: clang -fsanitize=address,undefined with fuzz/replay_main.c
# Sources are compiled once per flavour and rebuilt only when a .c or any
# header is newer than its object, so `make test` pays little for the replay.
# Prints the built binaries' paths, one per line, on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

flavour=${1:?usage: fuzz/build.sh fuzz|replay [target...]}
shift
CC=${FUZZ_CC:-clang}
out=${FUZZ_BUILD:-build-fuzz}/$flavour
mkdir -p "$out/obj"

PKG_CFLAGS=$(pkg-config --cflags libcurl libevent jansson yajl)
# -lcrypto: the server's access tokens (src/server/tokens.c); hiredis: the
# rate limits across instances (src/server/limits_redis.c)
PKG_LIBS="$(pkg-config --libs libcurl libevent jansson yajl hiredis) -lhttp_parser -lssl -lcrypto -lm -lpthread"
# Same language flags as the Makefile; -Werror only on our own drivers, so
# a warning in a file another engineer is editing cannot stop the fuzzing.
BASE="-std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -g -O1
      -fno-omit-frame-pointer -Iinclude -Isrc/lib -Isrc/server $PKG_CFLAGS"
case $flavour in
fuzz)
    SAN_CC="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
    SAN_LD="-fsanitize=fuzzer,address,undefined"
    ;;
replay)
    SAN_CC="-fsanitize=address,undefined -fno-sanitize-recover=undefined -DFUZZ_REPLAY"
    SAN_LD="-fsanitize=address,undefined"
    ;;
*)
    echo "unknown flavour $flavour" >&2
    exit 2
    ;;
esac

# What each driver links besides itself. A driver that #includes a server
# .c (to reach its static functions) must not link that file's object too.
LIB=$(ls src/lib/*.c)
server_but() { ls src/server/*.c | grep -v -e '/main\.c$' $(printf -- '-e /%s$ ' "$@"); }
sources_of() {
    case $1 in
    fuzz_sse) echo src/lib/sse.c ;;
    fuzz_scan) echo src/lib/scan.c src/lib/redact.c ;;
    fuzz_upstream) echo "$LIB" ;;
    fuzz_chat_body) echo "$LIB" "$(server_but)" ;; # chat_body.c, http_util.c and theirs
    fuzz_openai_body) echo "$LIB" "$(server_but)" ;;
    fuzz_env) echo src/lib/dotenv.c src/server/config.c src/lib/redact.c src/lib/error.c src/lib/ca_check.c ;;
    fuzz_http) echo "$LIB" "$(server_but)" ;;
    *)
        echo "fuzz/build.sh: no source list for $1" >&2
        return 1
        ;;
    esac
}

newest_header=$(ls -t include/*.h src/lib/*.h src/server/*.h 2>/dev/null | head -1 || true)
stale() { # stale OBJ SRC...
    [ -f "$1" ] || return 0
    local o=$1
    shift
    for s in "$@" "$newest_header"; do
        [ "$s" -nt "$o" ] && return 0
    done
    return 1
}

compile() { # compile SRC OBJ EXTRA_FLAGS
    if stale "$2" "$1"; then
        mkdir -p "$(dirname "$2")"
        $CC $BASE $SAN_CC $3 -c "$1" -o "$2"
    fi
}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for f in fuzz/fuzz_*.c; do
        t=$(basename "$f" .c)
        targets+=("$t")
    done
fi

# Objects shared by several drivers, built in parallel on both cores.
all_src=$(for t in "${targets[@]}"; do sources_of "$t"; done | tr ' ' '\n' | sort -u)
export CC BASE SAN_CC out newest_header
export -f compile stale
printf '%s\n' $all_src | xargs -r -P2 -I{} bash -c 'compile {} "$out/obj/{}.o" ""'

if [ "$flavour" = replay ]; then
    compile fuzz/replay_main.c "$out/obj/replay_main.o" "-Werror"
    extra_main="$out/obj/replay_main.o"
else
    extra_main=""
fi

for t in "${targets[@]}"; do
    srcs=$(sources_of "$t")
    objs=""
    for s in $srcs; do objs="$objs $out/obj/$s.o"; done
    # The driver may #include a server .c: rebuild it when any source changed.
    drv_obj="$out/obj/fuzz/$t.o"
    if stale "$drv_obj" "fuzz/$t.c" src/server/*.c src/lib/*.c; then
        mkdir -p "$(dirname "$drv_obj")"
        $CC $BASE $SAN_CC -Werror -c "fuzz/$t.c" -o "$drv_obj"
    fi
    # fuzz_env catches config.c's environment calls (see the driver)
    wrap=""
    [ "$t" = fuzz_env ] && wrap="-Wl,--wrap=setenv,--wrap=getenv"
    $CC $SAN_LD $wrap -o "$out/$t" "$drv_obj" $objs $extra_main $PKG_LIBS
    echo "$out/$t"
done
