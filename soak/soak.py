#!/usr/bin/env python3
"""Soak driver for zju-chat-server (issue 5, "Soak"): runs the server against
the mock upstream for a long time under mixed load and fails unless

  * every load generator request passed its checks (status, framing, event
    count: zju-loadgen exits 0 only then),
  * every chaos request (random upstream faults, random client hang-ups) that
    was read to its end got a well-formed answer or a well-formed error,
  * the API key appeared in no answer and no log line,
  * the server's resident memory and open descriptors end flat, no worker
    was restarted, and the server exits 0 on SIGTERM (under the ASan build
    that includes LeakSanitizer finding no leak at exit).

Load, all at once for --duration seconds:
  A  zju-loadgen, non-stream, keep-alive; rate set by concurrency and the
     mock's think time (c / think), so it does not just burn both cores;
  B  zju-loadgen, streams, one connection per stream;
  C  chaos threads here: each request picks an upstream fault (mock directive
     in the model suffix) and/or a client hang-up at a random point.

"Flat", precisely: split the samples taken under load into quarters; the mean
of the last quarter must be <= 1.10 x the mean of the second quarter plus a
slack (RSS: 4 MiB, descriptors: 16). The first quarter is warm-up (allocator
pools, upstream connection pools). After the load stops, no client
connection may remain open on the server's side (none ESTABLISHED or in
CLOSE_WAIT in /proc/net/tcp); what descriptors remain are the upstream
connection pool, reported.

Stdlib only; every wait is bounded.
"""

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
from proctools import children, dechunk, free_port, rss_kb  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = os.environ.get("ZJU_TEST_KEY") or "sk-soak-SECRET-%08x" % random.getrandbits(32)

# Upstream behaviours the chaos threads pick from: (model suffix, mode,
# what a complete answer may look like).
FAULTS = [
    ("", "ok"),
    ("fault=drop_mid,after=3", "err_event"),
    ("fault=rst_mid,after=2", "err_event"),
    ("fault=hang_mid,after=1", "err_event"),
    ("fault=garbage", "ok"),
    ("fault=garbage+crlf", "ok"),
    ("fault=no_done", "ok"),
    ("fault=truncate", "any200"),
    ("fault=not_sse", "any"),
    ("fault=endless_line", "err_event"),
    ("status=500", "status"),
    ("status=502,body=html", "status"),
    ("status=401,echo_key=1", "status"),
    ("status=400,body=empty", "status"),
    ("fault=big_error", "status"),
    ("fault=hang_headers", "status"),
    ("split=7", "ok"),
]
HANGUPS = ["none", "none", "before_headers", "after_headers", "mid_events_fin", "mid_events_rst"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def terminate(proc, grace):
    """SIGTERM (if still running), then SIGKILL after grace seconds; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def held_client_conns(port):
    """Connections to the server's port still ESTABLISHED or in CLOSE_WAIT
    (the client left, the server did not close) -- all load has stopped, so
    each one is a connection the server holds on to."""
    n = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] in ("01", "08"):
                n += 1
    return n


def read_line(proc, timeout):
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    deadline = time.monotonic() + timeout
    while b"\n" not in buf and time.monotonic() < deadline:
        if not sel.select(deadline - time.monotonic()):
            break
        chunk = os.read(proc.stdout.fileno(), 256)
        if not chunk:
            break
        buf += chunk
    sel.close()
    return buf.decode("utf-8", "replace")


# ---------------------------------------------------------------- chaos client


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = {}
        self.bad = []

    def add(self, what, ok=True, detail=None):
        with self.lock:
            self.n[what] = self.n.get(what, 0) + 1
            if not ok and len(self.bad) < 50:
                self.bad.append(detail)
            if not ok:
                self.n["bad"] = self.n.get("bad", 0) + 1


FRAME = re.compile(rb"(data: [^\n]*|:[^\n]*)\n\n")


def check_answer(raw, stream, mode):
    """Returns None if raw (a whole HTTP response read to EOF) is a
    well-formed answer or error for this request, else a reason."""
    if KEY.encode() in raw:
        return "API key in the answer"
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return "no complete header block: %r" % raw[:200]
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return "bad status line %r" % lines[0]
    hdr = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdr[k.strip().lower()] = v.strip()
    if "chunked" in hdr.get("transfer-encoding", "").lower():
        try:
            body, done = dechunk(rest)
        except AssertionError as e:
            return str(e)
        if not done:
            return "chunked body not terminated (status %d)" % status
    elif "content-length" in hdr:
        body = rest
        if len(body) != int(hdr["content-length"]):
            return "body %d bytes, Content-Length %s" % (len(body), hdr["content-length"])
    else:
        body = rest
    if status != 200:
        if mode == "ok":
            return "status %d for a healthy upstream: %r" % (status, body[:200])
        try:
            e = json.loads(body)
        except ValueError:
            return "error %d body not JSON: %r" % (status, body[:200])
        if not isinstance(e, dict) or not isinstance(e.get("error"), str) or not e["error"]:
            return "error %d body not {error: str}: %r" % (status, body[:200])
        return None
    if mode == "status":
        return "200 although the upstream answered an error"
    if not stream:
        try:
            json.loads(body)
        except ValueError:
            return "non-stream 200 body not JSON: %r" % body[:200]
        return None
    if "text/event-stream" not in hdr.get("content-type", ""):
        return "stream 200 without text/event-stream"
    pos, data = 0, []
    while pos < len(body):
        m = FRAME.match(body, pos)
        if not m:
            return "malformed SSE at %d: %r" % (pos, body[pos : pos + 100])
        if m.group(1).startswith(b"data: "):
            data.append(m.group(1)[6:])
        pos = m.end()
    errors = 0
    for i, d in enumerate(data):
        try:
            ev = json.loads(d)
        except ValueError:
            return "data frame not JSON: %r" % d[:100]
        if isinstance(ev, dict) and "error" in ev:
            errors += 1
            if i != len(data) - 1:
                return "error event not last"
    if errors > 1:
        return "%d error events" % errors
    if mode == "ok" and errors:
        return "error event for a healthy upstream: %r" % data[-1][:200]
    if mode == "err_event" and errors != 1:
        return "no error event after an upstream fault"
    return None


def chaos_one(port, rng, tally, stop):
    suffix, mode = rng.choice(FAULTS)
    stream = rng.random() < 0.7
    hang = rng.choice(HANGUPS)
    model = "deepseek-r1-671b#events=%d,delay=%d" % (rng.randint(1, 8), rng.choice((0, 5, 30)))
    if suffix:
        model += "," + suffix
    body = json.dumps({"user_content": "soak \u2028 \u00e9", "model": model, "stream": stream}).encode()
    req = (
        b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    ) + body
    kind = ("stream" if stream else "nonstream") + "_chaos"
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(req)
        if hang == "before_headers":
            time.sleep(rng.random() * 0.05)
            s.close()
            tally.add(kind + "_hangup")
            return
        buf = bytearray()
        want_events = rng.randint(1, 4)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionError, socket.timeout) as e:
                tally.add(kind, False, "recv failed: %r (model %s)" % (e, model))
                return
            if not chunk:
                break
            buf += chunk
            if hang == "after_headers" and b"\r\n\r\n" in buf:
                break
            if hang.startswith("mid_events") and buf.count(b"data: ") >= want_events:
                break
        else:
            tally.add(kind, False, "no end within 10 s (model %s)" % model)
            return
        if hang != "none" and chunk:
            if hang.endswith("rst"):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
            if KEY.encode() in buf:
                tally.add(kind, False, "API key in a partial answer")
            else:
                tally.add(kind + "_hangup")
            return
        why = check_answer(bytes(buf), stream, mode)
        tally.add(kind, why is None, None if why is None else "%s (model %s)" % (why, model))
    except OSError as e:
        tally.add(kind, False, "socket error %r (model %s)" % (e, model))
    finally:
        s.close()


def chaos_thread(port, seed, tally, stop, pause):
    rng = random.Random(seed)
    while not stop.is_set():
        chaos_one(port, rng, tally, stop)
        if pause:
            stop.wait(pause)


# ---------------------------------------------------------------- run


def flat(series, rel=0.10, slack=0.0):
    """(ok, q2 mean, q4 mean) for a list of numbers, per the module doc."""
    n = len(series)
    if n < 8:
        return True, None, None
    q = n // 4
    q2 = series[q : 2 * q]
    q4 = series[n - q :]
    m2 = sum(q2) / len(q2)
    m4 = sum(q4) / len(q4)
    return m4 <= m2 * (1 + rel) + slack, m2, m4


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--nonstream-conc", type=int, default=36, help="loadgen A connections")
    ap.add_argument("--think-ms", type=int, default=100, help="mock think time of A's requests")
    ap.add_argument("--stream-conc", type=int, default=24, help="loadgen B connections")
    ap.add_argument("--chaos", type=int, default=6, help="chaos threads")
    ap.add_argument("--chaos-pause", type=float, default=0.0)
    ap.add_argument("--min-nonstream", type=int, default=0)
    ap.add_argument("--min-streams", type=int, default=0)
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--check-flat", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--log-dir", default=None)
    a = ap.parse_args()

    build = os.path.join(ROOT, a.build)
    logdir = a.log_dir or tempfile.mkdtemp(prefix="zju-soak-")
    os.makedirs(logdir, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1"),
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    }
    failures = []
    mock_err = open(os.path.join(logdir, "mock.err"), "wb")
    mock = subprocess.Popen(
        [os.path.join(build, "zju-mock-upstream"), "--port", "0", "--key", KEY, "--quiet", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=mock_err, stdin=subprocess.DEVNULL, env=env,
    )
    line = read_line(mock, 10)
    if not line.startswith("listening on "):
        mock.kill()
        log("soak: mock did not start: %r" % line)
        return 1
    mock_url = line.split()[-1] + "/v1"
    port = free_port()
    senv = dict(env, ZJU_API_KEY=KEY, ZJU_BASE_URL=mock_url, FLASK_DEBUG="1",
                ZJU_FIRST_BYTE_TIMEOUT_MS="1500", ZJU_IDLE_TIMEOUT_MS="1500",
                HEARTBEAT_MS="500", REQUEST_TIMEOUT="5", DRAIN_TIMEOUT="10")
    srv_err_path = os.path.join(logdir, "server.err")
    srv_err = open(srv_err_path, "wb")
    srv = subprocess.Popen(
        [os.path.join(build, "zju-chat-server"), "-b", f"127.0.0.1:{port}", "-w", str(a.workers)],
        stdout=srv_err, stderr=srv_err, stdin=subprocess.DEVNULL, env=senv, cwd=logdir,
    )
    lgs = []
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        time.sleep(0.5)
        workers = children(srv.pid)
        pids = [srv.pid] + workers
        base_fds = sum(proc_fds(p) for p in pids)
        base_rss = sum(rss_kb(p) for p in pids)
        log(f"soak: server pid {srv.pid} workers {workers} on port {port}; idle RSS {base_rss} KB, fds {base_fds}; "
            f"{a.duration:.0f} s, logs in {logdir}")

        lg = os.path.join(build, "zju-loadgen")
        common = ["--port", str(port), "-d", str(int(a.duration)), "--timeout", "20"]
        lg_a = [lg, *common, "--no-stream", "-c", str(a.nonstream_conc), "--label", "nonstream",
                "--model", f"deepseek-v3-671b#events=3,think={a.think_ms}"]
        # deepseek-v3 with events=8: role + 8 content + finish = 10 data events.
        lg_b = [lg, *common, "-c", str(a.stream_conc), "--no-keepalive", "--src-addrs", "4", "--label", "streams",
                "--model", "deepseek-v3-671b#events=8,delay=60", "--expect-events", "10"]
        for cmd in (lg_a, lg_b):
            lgs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

        tally = Tally()
        stop = threading.Event()
        threads = [threading.Thread(target=chaos_thread, args=(port, 1000 + i, tally, stop, a.chaos_pause), daemon=True)
                   for i in range(a.chaos)]
        for t in threads:
            t.start()

        t0 = time.monotonic()
        samples = []  # (t, rss_kb, fds)
        while time.monotonic() - t0 < a.duration:
            time.sleep(min(a.sample, max(0.0, a.duration - (time.monotonic() - t0))))
            pids = [srv.pid] + children(srv.pid)
            samples.append((time.monotonic() - t0, sum(rss_kb(p) for p in pids), sum(proc_fds(p) for p in pids)))
            if srv.poll() is not None:
                failures.append(f"server exited during the run with {srv.returncode}")
                break
        stop.set()
        for t in threads:
            t.join(15)
        results = []
        for p in lgs:
            try:
                out, _ = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
                failures.append("loadgen did not finish")
            text = out.decode("utf-8", "replace")
            res = None
            for ln in text.splitlines():
                if ln.startswith("{"):
                    res = json.loads(ln)
            results.append(res)
            if p.returncode != 0 or res is None or res["failed"]:
                failures.append(f"loadgen {p.args[-1] if res is None else res['label']} failed (exit {p.returncode}): {text[-600:]}")
        time.sleep(3)  # keep-alive connections of A are closed by now
        pids = [srv.pid] + children(srv.pid)
        end_fds = sum(proc_fds(p) for p in pids)
        end_rss = sum(rss_kb(p) for p in pids)
        now_workers = children(srv.pid)
        if now_workers != workers:
            failures.append(f"workers changed during the run (a crash and restart): {workers} -> {now_workers}")

        # ---- report
        log("soak: samples (seconds, RSS KB of supervisor+workers, open fds):")
        for t, r, f in samples:
            log(f"  {t:7.1f}  {r:8d}  {f:6d}")
        ok_r, r2, r4 = flat([r for _, r, _ in samples], 0.10, 4096)
        ok_f, f2, f4 = flat([f for _, _, f in samples], 0.10, 16)
        if r2 is not None:
            log(f"soak: RSS mean Q2 {r2:.0f} KB, Q4 {r4:.0f} KB ({'flat' if ok_r else 'GROWING'}); "
                f"fds mean Q2 {f2:.1f}, Q4 {f4:.1f} ({'flat' if ok_f else 'GROWING'}); "
                f"after load: RSS {end_rss} KB, fds {end_fds} (idle baseline {base_fds})")
        if a.check_flat and not ok_r:
            failures.append(f"RSS not flat: Q2 {r2:.0f} KB -> Q4 {r4:.0f} KB")
        if not ok_f:
            failures.append(f"descriptors not flat: Q2 {f2:.1f} -> Q4 {f4:.1f}")
        held = held_client_conns(port)
        log(f"soak: client connections the server still holds after the load: {held}")
        if held:
            failures.append(f"{held} client connections still open (ESTABLISHED/CLOSE_WAIT) after the load")
        if f2 is not None and end_fds > f2 + 16:
            failures.append(f"descriptors after the load {end_fds} > loaded mean {f2:.0f} + 16")
        ns = (results[0] or {}).get("completed", 0) + tally.n.get("nonstream_chaos", 0)
        st = (results[1] or {}).get("completed", 0) + tally.n.get("stream_chaos", 0)
        hang = tally.n.get("stream_chaos_hangup", 0) + tally.n.get("nonstream_chaos_hangup", 0)
        log(f"soak: non-stream answered {ns} (loadgen {(results[0] or {}).get('completed')}, chaos {tally.n.get('nonstream_chaos', 0)}), "
            f"streams answered {st} (loadgen {(results[1] or {}).get('completed')}, chaos {tally.n.get('stream_chaos', 0)}), "
            f"client hang-ups {hang}, malformed {tally.n.get('bad', 0)}")
        for d in tally.bad[:10]:
            log("  malformed: " + str(d))
        if tally.n.get("bad"):
            failures.append(f"{tally.n['bad']} chaos answers malformed")
        if ns + hang < a.min_nonstream or st < a.min_streams:
            failures.append(f"too few requests: {ns} non-stream (need {a.min_nonstream}), {st} streams (need {a.min_streams})")
    finally:
        for p in lgs:
            if p.poll() is None:
                p.kill()
                p.wait()
        rc = terminate(srv, 25)
        mrc = terminate(mock, 15)
        srv_err.close()
        mock_err.close()
    if rc != 0:
        failures.append(f"server exit status {rc} after SIGTERM")
    if mrc != 0:
        failures.append(f"mock exit status {mrc}")
    with open(srv_err_path, "rb") as f:
        text = f.read()
    for mark in (b"LeakSanitizer", b"AddressSanitizer", b"runtime error:"):
        if mark in text:
            i = text.index(mark)
            failures.append("sanitizer report: " + text[max(0, i - 200) : i + 1500].decode("utf-8", "replace"))
    if KEY.encode() in text:
        failures.append("API key in the server log")
    access = text.count(b"POST /api/chat")
    log(f"soak: server log {len(text)} bytes, {access} access lines for /api/chat, exit {rc}")
    for f in failures:
        log("SOAK FAILED: " + f[:2000])
    if not failures:
        log("soak: PASSED")
        if not a.log_dir:
            import shutil

            shutil.rmtree(logdir, True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
