#!/bin/bash
# hotpath.sh - the issue-13 measure of one worker: callgrind instructions and
# strace system calls per non-stream request and per relayed event.
#   bash bench/hotpath.sh BUILD_DIR [callgrind|strace] [extra server env...]
# callgrind: worker total with the load minus its total with no load, divided
# by the requests (non-stream: 2,000 requests, 8 at a time; stream: 200
# streams x 100 events 20 ms apart, 20 at a time). strace: -c -f on the worker.
set -u
B=$(cd "$1" && pwd); MODE=${2:-callgrind}; shift 2; EXTRA=("$@")
T=$(mktemp -d /tmp/hotpath.XXXXXX)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
MP=$(port); "$B/zju-mock-upstream" --port $MP --workers 1 --events 100 --delay-ms 0 --quiet >$T/mock.log 2>&1 &
MOCK=$!; waitport $MP
run() { # $1 tag, $2 load: none|plain|stream
  local SP; SP=$(port)
  if [ $MODE = callgrind ]; then
    env ZJU_API_KEY=bench-key-not-secret ZJU_BASE_URL=http://127.0.0.1:$MP/v1 "${EXTRA[@]}" \
      valgrind --tool=callgrind --trace-children=no --callgrind-out-file=$T/cg.$1.%p \
      "$B/zju-chat-server" -w 1 -b 127.0.0.1:$SP >$T/srv.$1.log 2>&1 &
  else
    env ZJU_API_KEY=bench-key-not-secret ZJU_BASE_URL=http://127.0.0.1:$MP/v1 "${EXTRA[@]}" \
      "$B/zju-chat-server" -w 1 -b 127.0.0.1:$SP >$T/srv.$1.log 2>&1 &
  fi
  local S=$!; waitport $SP || { echo "server did not start"; cat $T/srv.$1.log; }
  sleep 1
  local W; W=$(pgrep -P $S | head -1); [ $MODE = callgrind ] && W=$(pgrep -P $S -f zju-chat-server | head -1)
  [ -z "$W" ] && W=$(pgrep -P $S | head -1)
  if [ $MODE = strace ]; then strace -c -f -p $W -o $T/strace.$1 & ST=$!; sleep 1; fi
  case $2 in
    plain) "$B/zju-loadgen" --port $SP --no-stream -n 2000 -c 8 --label plain >$T/lg.$1 2>&1 ;;
    stream) "$B/zju-loadgen" --port $SP -n 200 -c 20 --expect-events 102 --model "deepseek-v3-671b#delay=20" --label stream >$T/lg.$1 2>&1 ;;
    *) : ;;
  esac
  [ $MODE = strace ] && { kill -INT $ST; wait $ST; }
  kill -TERM $S; wait $S
  grep -h '^{' $T/lg.$1 2>/dev/null | cut -c1-200
  if [ $MODE = callgrind ]; then
    for f in $T/cg.$1.*; do echo "$1 $(grep -h '^totals:\|^summary:' $f | head -1) $f"; done
  else
    cat $T/strace.$1
  fi
}
if [ $MODE = callgrind ]; then run idle none; fi
run plain plain
run stream stream
kill $MOCK; wait $MOCK 2>/dev/null
echo "files in $T"
