#!/usr/bin/env python3
"""What one request and one relayed event cost, against nginx (`make cost`).

Runs zju-chat-server (-w 1) and nginx (one process: `master_process off`,
otherwise bench.py's plain reverse-proxy configuration) against the project's
mock upstream and measures, in one invocation:

- user-space instructions (valgrind --tool=callgrind) per non-stream request
  and per relayed event, and for the server how they split over the libraries;
- system calls (strace -c -f on the worker) per request and per event.

Intervals: the server's worker dumps its callgrind counters whenever
GET /healthz reaches srv_handle_health (`--dump-before`), nginx's process
when `callgrind_control --dump` asks it (a forked worker has no vgdb channel,
hence the two ways); each load runs between two dumps. An interval with no
load costs idle(t) = h + r*t (h: the marking request's own share, r: timers),
fitted from two idle intervals of different lengths and subtracted from every
load interval of the same length: per request = (interval - idle(t)) /
requests. Per event is the slope between two runs of the same number of
streams with E1 and E2 events each: (cost(E2) - cost(E1)) / (events2 -
events1), which leaves out everything a stream costs once (its request, the
status line, the end) whatever the route adds to it. strace is attached to the
worker only for each load (and once for an idle interval, whose rate is
subtracted the same way), on a second, uninstrumented run.

Prints a Markdown report and writes it to
bench/results/YYYY-MM-DD-<host>-cost[-COST_TAG].md. Sizes: COST_REQUESTS
(400), COST_CONC (8), COST_STREAMS (48), COST_EVENTS (4,16), COST_DELAY_MS (20:
events arrive one by one, as a model's tokens do; with 0 the mock writes them
in bursts and a read carries many, and with a few ms a loaded machine lets
them pile up: the report warns when nginx read fewer than 0.9 times per
event). Stdlib only, loopback only.
"""
import datetime
import glob
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B  # noqa: E402  (the mock, nginx's config, the token setup)

REQUESTS = int(os.environ.get("COST_REQUESTS", "400"))
CONC = int(os.environ.get("COST_CONC", "8"))
STREAMS = int(os.environ.get("COST_STREAMS", "48"))
EVENTS = [int(x) for x in os.environ.get("COST_EVENTS", "4,16").split(",")]
DELAY = int(os.environ.get("COST_DELAY_MS", "20"))
WARMUP = 40
MARK_FN = "srv_handle_health"

SEED_BODY = {"user_content": "Hello, benchmark", "stream": False}
ROUTES = {  # name -> (path, loadgen flags)
    "/api/chat": ("/api/chat", []),
    "/v1/chat/completions": ("/v1/chat/completions", ["--openai-body", "--allow-done"]),
    "nginx": ("/api/chat", ["--openai-body", "--allow-done"]),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def model(events, delay):
    return f"{B.MODEL}#events={events},delay={delay}"


# ---- callgrind output: self cost per library ------------------------------

def group_of(obj, path):
    base = os.path.basename(obj)
    for pat, name in (("libc.so", "libc"), ("ld-linux", "libc"), ("libcurl", "libcurl"),
                      ("libevent", "libevent"), ("libjansson", "jansson"), ("libyajl", "yajl"),
                      ("libhttp_parser", "http_parser"), ("libssl", "openssl"),
                      ("libcrypto", "openssl"), ("libhiredis", "hiredis"), ("libpcre", "pcre"),
                      ("libz.so", "zlib")):
        if base.startswith(pat):
            return name
    if base == "zju-chat-server":
        if "/src/lib/" in path:
            return "libzjuchat (src/lib)"
        if "/src/server/" in path:
            return "server (src/server)"
        return "server (other)"
    return base or "?"


def parse_callgrind(path):
    """Self instructions per group of one dump: every cost line counts for its
    function, except the line after calls=, which is a call's inclusive cost;
    those into libc are summed by caller ("libc, called from X")."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    kind = {"ob": "ob", "cob": "ob", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl",
            "cfl": "fl", "fn": "fn", "cfn": "fn"}
    obj, fl, cur_file, cob, cfn = "", "", "", None, ""
    groups, total, skip = {}, 0, False
    calls_in = {}
    with open(path, errors="replace") as f:
        for line in f:
            c = line[:1]
            if c.isdigit() or c in "+-*":
                if skip:
                    # a call's inclusive cost: kept only to say who calls libc
                    skip = False
                    callee = group_of(cob if cob is not None else obj, "")
                    caller = group_of(obj, cur_file)
                    parts = line.split()
                    # (functions that call back into the program carry its cost)
                    back = re.match(r"(__libc_start|\(below main\)|qsort|bsearch|_dl_|"
                                    r"__pthread_once|pthread_once|__libc_dlopen)", cfn)
                    if callee == "libc" and caller != "libc" and not back and len(parts) >= 2:
                        key = "libc, called from " + caller
                        calls_in[key] = calls_in.get(key, 0) + int(parts[1])
                    cob, cfn = None, ""
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    n = int(parts[1])
                    g = group_of(obj, cur_file)
                    groups[g] = groups.get(g, 0) + n
                    total += n
                continue
            key, eq, val = line.rstrip("\n").partition("=")
            if not eq:
                continue
            if key == "calls":
                skip = True
                continue
            if key not in kind:
                continue
            m = re.match(r"\((\d+)\)(?: (.*))?$", val)
            table = names[kind[key]]
            if m:
                if m.group(2) is not None:
                    table[m.group(1)] = m.group(2)
                val = table.get(m.group(1), "?")
            if key == "ob":
                obj = val
            elif key == "cob":
                cob = val
            elif key == "cfn":
                cfn = val
            elif key == "fl":
                fl = cur_file = val
            elif key in ("fi", "fe"):
                cur_file = val
            elif key == "fn":
                cur_file = fl
    groups.update(calls_in)  # not part of the total: already in "libc"
    return total, groups


# ---- the contenders --------------------------------------------------------

class Contender:
    """One process under test: started plain or under callgrind; mark() ends
    an interval (callgrind) and returns its dump."""

    def __init__(self, tmp, name, mport, callgrind, extra_env=None, bearer=None,
                 base_url=None, nginx_text=None):
        self.tmp, self.name, self.callgrind, self.bearer = tmp, name, callgrind, bearer
        self.is_nginx = name == "nginx" or nginx_text is not None
        self.cgdir = os.path.join(tmp, f"cg-{name}")
        os.makedirs(self.cgdir, exist_ok=True)
        vg = ["valgrind", "--tool=callgrind", "--dump-instr=no",
              f"--callgrind-out-file={self.cgdir}/cg.%p"]
        self.port = B.free_port()
        if nginx_text is not None:  # a whole configuration, ports filled in
            conf = os.path.join(tmp, f"{name}.conf")
            self.port, self.port_tls = B.free_port(), B.free_port()
            text = nginx_text(self.port, self.port_tls)
            with open(conf, "w") as f:
                f.write(text.replace("master_process on;", "master_process off;"))
            cmd = ["nginx", "-e", os.path.join(tmp, f"{name}-error.log"), "-p", tmp, "-c", conf]
            env = {}
        elif name == "nginx":
            conf = os.path.join(tmp, "nginx-cost.conf")
            if not os.path.exists(os.path.join(tmp, "cert.pem")):
                B.make_cert(tmp)  # the config's TLS server, unused here
            for d in ("ngx-body", "ngx-proxy", "ngx-fcgi", "ngx-uwsgi", "ngx-scgi"):
                os.makedirs(os.path.join(tmp, d), exist_ok=True)
            text = B.NGINX_CONF.format(workers=1, tmp=tmp, mhost="127.0.0.1", mport=mport,
                                       port=self.port,
                                       tport=B.free_port(), tport_relay=B.free_port(),
                                       key=B.KEY)
            # one process does the work (and is the one valgrind started)
            text = text.replace("master_process on;", "master_process off;")
            with open(conf, "w") as f:
                f.write(text)
            cmd = ["nginx", "-e", os.path.join(tmp, "nginx-error.log"), "-p", tmp, "-c", conf]
            env = {}
        else:
            cmd = [B.SERVER, "-b", f"127.0.0.1:{self.port}", "-w", "1"]
            env = {"ZJU_API_KEY": B.KEY,
                   "ZJU_BASE_URL": base_url or f"http://127.0.0.1:{mport}/v1"}
            env.update(extra_env or {})
            vg += ["--vgdb=no", f"--dump-before={MARK_FN}"]
        if callgrind:
            cmd = vg + cmd
        tag = name + ("-cg" if callgrind else "")
        self.proc = B.Proc(tag, cmd, os.path.join(tmp, tag + ".log"), env)
        if not B.wait_port(self.port, self.proc.p, 90):
            raise SystemExit(f"cost: {tag} did not start; see {self.proc.logpath}")
        self.pid = self.proc.pid if self.is_nginx else self.health()
        self.seen = 0

    def health(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=60) as r:
            return json.loads(r.read())["pid"]

    def dumps(self):
        files = glob.glob(os.path.join(self.cgdir, f"cg.{self.pid}.*"))
        return sorted(files, key=lambda p: int(p.rsplit(".", 1)[1]))

    def mark(self):
        """Ends the current callgrind interval: the dump of what ran since the
        last mark."""
        n = len(self.dumps())
        if self.is_nginx:
            subprocess.run(["callgrind_control", "--dump", str(self.pid)], capture_output=True,
                           timeout=60, check=True)
        else:
            self.health()
        end = time.time() + 30
        while len(self.dumps()) <= n and time.time() < end:
            time.sleep(0.05)
        files = self.dumps()
        if len(files) <= n:
            raise SystemExit(f"cost: {self.name}: no callgrind dump appeared")
        path = files[-1]
        for _ in range(100):  # the worker writes it before answering; nginx may lag
            with open(path, errors="replace") as f:
                if "totals:" in f.read():
                    break
            time.sleep(0.05)
        return parse_callgrind(path)

    def stop(self):
        self.proc.stop()


def load(c, route, args, expect=None):
    path, flags = ROUTES["nginx" if c.name == "nginx" else route]
    cmd = [B.LOADGEN, "--port", str(c.port), "--path", path, "-c", str(CONC)] + flags + args
    if c.bearer:
        cmd += ["-H", f"Authorization: Bearer {c.bearer}"]
    if expect is not None:
        cmd += ["--expect-events", str(expect)]
    return run_loadgen(cmd, f"{c.name} {route}")


def run_loadgen(cmd, what):
    """One checked load: its report and wall time; any failed stream ends the run."""
    B.COMMANDS.append(shlex.join(cmd))
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    wall = time.time() - t0
    res = next((json.loads(ln) for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    if out.returncode != 0 or not res or res.get("failed"):
        raise SystemExit(f"cost: {what}: load failed: {out.stdout[-400:]}"
                         f" {out.stderr[-400:]}")
    return res, wall


def nonstream(c, route, n):
    return load(c, route, ["--no-stream", "-n", str(n), "--model", model(20, 0)])


def streams(c, route, events, expect):
    return load(c, route, ["-n", str(STREAMS), "--model", model(events, DELAY)], expect)


# ---- strace ----------------------------------------------------------------

class Strace:
    def __init__(self, pid, tmp):
        self.out = tempfile.mktemp(prefix="strace-", dir=tmp)
        self.p = subprocess.Popen(["strace", "-c", "-f", "-o", self.out, "-p", str(pid)],
                                  stderr=subprocess.PIPE, text=True)
        # attached once it says so (one line per thread)
        line = self.p.stderr.readline()
        if "attached" not in line:
            raise SystemExit("cost: strace could not attach: " + line)
        self.t0 = time.time()

    def stop(self):
        self.p.send_signal(signal.SIGINT)
        self.p.wait(30)
        wall = time.time() - self.t0
        calls = {}
        with open(self.out) as f:
            for ln in f:
                parts = ln.split()
                if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                    calls[parts[-1]] = int(parts[3])
        return calls, wall


def traced(c, tmp, fn):
    s = Strace(c.pid, tmp)
    res, _ = fn()
    calls, wall = s.stop()
    return res, calls, wall


# ---- arithmetic ------------------------------------------------------------

def sub(a, b, k=1.0):
    """a - k*b for {name: count} maps."""
    keys = set(a) | set(b)
    return {x: a.get(x, 0) - k * b.get(x, 0) for x in keys}


def scale(a, k):
    return {x: v * k for x, v in a.items()}


def idle_model(short, long_, t_short, t_long):
    """idle(t) = h + r*t per group, from two idle dumps."""
    r = scale(sub(long_, short), 1.0 / (t_long - t_short))
    h = sub(short, r, t_short)
    return lambda t: sub(h, r, -t)


def with_total(groups):
    g = dict(groups)
    g["total"] = sum(v for n, v in groups.items() if not n.startswith("libc, called"))
    return g


# ---- one contender, both measurements -------------------------------------

def measure_cg(tmp, name, mport, routes, expect, extra_env=None, bearer=None):
    out = {}
    c = Contender(tmp, name, mport, True, extra_env, bearer)
    try:
        for route in routes:  # warm every path once (connections, caches)
            nonstream(c, route, WARMUP)
            streams(c, route, EVENTS[0], expect[EVENTS[0]])
        c.mark()
        runs = {}
        for route in routes:
            res, wall = nonstream(c, route, REQUESTS)
            runs[(route, "req")] = (c.mark()[1], wall, res["completed"])
            for e in EVENTS:
                res, wall = streams(c, route, e, expect[e])
                runs[(route, e)] = (c.mark()[1], wall, res["events"])
        t_long = max(w for _, w, _ in runs.values())
        time.sleep(1.0)
        short = c.mark()[1]
        time.sleep(t_long)
        long_ = c.mark()[1]
        idle = idle_model(short, long_, 1.0, t_long)
        for route in routes:
            g, wall, n = runs[(route, "req")]
            per_req = scale(sub(g, idle(wall)), 1.0 / n)
            (g1, w1, e1), (g2, w2, e2) = runs[(route, EVENTS[0])], runs[(route, EVENTS[1])]
            work1, work2 = sub(g1, idle(w1)), sub(g2, idle(w2))
            per_ev = scale(sub(work2, work1), 1.0 / (e2 - e1))
            out[route] = {"ir_req": with_total(per_req), "ir_ev": with_total(per_ev),
                          "n_req": n, "n_ev": e2 - e1}
    finally:
        c.stop()
    return out


def measure_strace(tmp, name, mport, routes, expect, extra_env=None, bearer=None):
    out = {}
    c = Contender(tmp, name, mport, False, extra_env, bearer)
    try:
        for route in routes:
            nonstream(c, route, WARMUP)
            streams(c, route, EVENTS[0], expect[EVENTS[0]])
        runs = {}
        for route in routes:
            res, calls, wall = traced(c, tmp, lambda: nonstream(c, route, REQUESTS))
            runs[(route, "req")] = (calls, wall, res["completed"])
            for e in EVENTS:
                res, calls, wall = traced(c, tmp, lambda: streams(c, route, e, expect[e]))
                runs[(route, e)] = (calls, wall, res["events"])
        s = Strace(c.pid, tmp)
        time.sleep(2.0)
        idle_calls, idle_wall = s.stop()
        rate = scale(idle_calls, 1.0 / idle_wall)
        for route in routes:
            calls, wall, n = runs[(route, "req")]
            per_req = scale(sub(calls, rate, wall), 1.0 / n)
            (c1, w1, e1), (c2, w2, e2) = runs[(route, EVENTS[0])], runs[(route, EVENTS[1])]
            per_ev = scale(sub(sub(c2, rate, w2), sub(c1, rate, w1)), 1.0 / (e2 - e1))
            out[route] = {"sc_req": with_total(per_req), "sc_ev": with_total(per_ev)}
    finally:
        c.stop()
    return out


# ---- a TLS upstream (bench S6) ----------------------------------------------

TLS_STREAMS = int(os.environ.get("COST_TLS_STREAMS", "400"))


def tls_load(c, port, openai):
    """Streams of 5 events written at once (S6's), CONC at a time."""
    cmd = [B.LOADGEN, "--port", str(port), "--path", "/api/chat", "-c", str(CONC),
           "-n", str(TLS_STREAMS), "--model", model(5, 0)]
    if openai:
        cmd += ["--openai-body", "--allow-done"]
    return run_loadgen(cmd, f"{c.name} (TLS-upstream section)")


def measure_tls(tmp, nport, tport, tport_relay):
    """Instructions and system calls per stream request through a plaintext
    and through a TLS upstream (bench.py's nginx: plaintext on nport, TLS on
    tport), for the server and for nginx as the relay of the same two
    upstreams (bench.py's S6 reference). TLS minus plaintext is what the
    relay's own TLS costs: the noise-free part of S6."""
    cert = os.path.join(tmp, "cert.pem")
    ca_env = {"ZJU_CA_FILE": cert}
    out = {}
    legs = [("server", "plain", dict(base_url=f"http://127.0.0.1:{nport}/v1")),
            ("server", "tls", dict(base_url=f"https://127.0.0.1:{tport}/v1", extra_env=ca_env))]
    relay = dict(nginx_text=lambda pp, pt: B.NGINX_RELAY_CONF.format(
        tmp=tmp, plain=nport, tls=tport_relay, port_plain=pp, port_tls=pt, key=B.KEY))
    for name, legs_of in (("server", legs), ("nginx-relay", None)):
        for cg in (True, False):
            if name == "server":
                runs = [(tag, Contender(tmp, f"server-{tag}", 0, cg, **kw), None)
                        for _, tag, kw in legs_of]
            else:
                c = Contender(tmp, "nginx-relay", 0, cg, **relay)
                runs = [("plain", c, c.port), ("tls", c, c.port_tls)]
            try:
                for tag, c, port in runs:
                    port = port or c.port
                    tls_load(c, port, name != "server")  # warm: connections, caches
                    if cg:
                        c.mark()
                        res, wall = tls_load(c, port, name != "server")
                        g = c.mark()[1]
                        out.setdefault(name, {})["ir_" + tag] = with_total(
                            scale(g, 1.0 / res["completed"]))
                    else:
                        res, calls, wall = traced(c, tmp, lambda: tls_load(
                            c, port, name != "server"))
                        out.setdefault(name, {})["sc_" + tag] = with_total(
                            scale(calls, 1.0 / res["completed"]))
            finally:
                for c in {id(c): c for _, c, _ in runs}.values():
                    c.stop()
    return out


def tls_report(t):
    """The TLS section of the report."""
    if not t:
        return []
    rows = [("instructions per stream request, plaintext upstream", "ir_plain", k),
            ("instructions per stream request, TLS upstream", "ir_tls", k),
            ("system calls per stream request, plaintext upstream", "sc_plain",
             lambda x: f"{x:.2f}"),
            ("system calls per stream request, TLS upstream", "sc_tls", lambda x: f"{x:.2f}")]
    lines = ["", f"A TLS upstream (bench S6: the bench's nginx with a self-signed certificate "
             f"before the mock): {TLS_STREAMS} streams of 5 events written at once, {CONC} at a "
             f"time, through the relay with a plaintext and with a TLS upstream (connections "
             f"kept alive; idle not subtracted, both legs alike). nginx relays the same two "
             f"upstreams (one process, keep-alive, `proxy_ssl_session_reuse`).", "",
             "| per ... | nginx relay | server | x nginx |", "|---|---|---|---|"]
    for what, key, fmt in rows:
        a, b = t["nginx-relay"][key]["total"], t["server"][key]["total"]
        lines.append(f"| {what} | {fmt(a)} | {fmt(b)} | {b / a:.2f}x |")
    for what, key, fmt in (("instructions TLS adds", "ir", k),
                           ("system calls TLS adds", "sc", lambda x: f"{x:.2f}")):
        a = t["nginx-relay"][key + "_tls"]["total"] - t["nginx-relay"][key + "_plain"]["total"]
        b = t["server"][key + "_tls"]["total"] - t["server"][key + "_plain"]["total"]
        lines.append(f"| **{what}** | {fmt(a)} | {fmt(b)} | "
                     f"{(b / a if a else 0):.2f}x |")
    def changes(who):
        d = sub(t[who]["sc_tls"], t[who]["sc_plain"])
        items = sorted(((v, n) for n, v in d.items() if n != "total" and abs(v) >= 0.05),
                       reverse=True)
        return ", ".join(f"{n} {v:+.2f}" for v, n in items) or "none"
    lines += ["", f"OpenSSL's own code (libssl, libcrypto) per TLS request: server "
              f"{k(t['server']['ir_tls'].get('openssl', 0))}, nginx "
              f"{k(t['nginx-relay']['ir_tls'].get('openssl', 0))}. System calls that TLS "
              f"changes, server: {changes('server')}; nginx: {changes('nginx-relay')}."]
    return lines


# ---- report -----------------------------------------------------------------

def k(x):
    return f"{x / 1000:.1f}k"


def top_calls(m, limit=8):
    items = sorted(((v, n) for n, v in m.items() if n != "total" and v >= 0.05), reverse=True)
    return ", ".join(f"{n} {v:.2f}" for v, n in items[:limit]) or "-"


def report(res, cols, started, wall, tls=None):
    mach = B.machine()
    ng = res["nginx"]
    lines = [f"# Cost per request and per event: zju-chat-server vs nginx "
             f"({datetime.date.today().isoformat()}, {mach['host']}, git {mach['git']})", "",
             f"{mach['cpu']}, {mach['nproc']} cores, {mach['nginx']}, load at start "
             f"{started}; `bench/cost.py` in {wall:.0f} s. Instructions: callgrind on the "
             f"worker (nginx: its one process, `master_process off`), interval minus idle for "
             f"the same time; system calls: `strace -c -f` on the worker during the load only. "
             f"Non-stream: {REQUESTS} requests, {CONC} connections; per event: the slope "
             f"between {STREAMS} streams of {EVENTS[0]} and of {EVENTS[1]} events, "
             f"{DELAY} ms apart, {CONC} at a time (see bench/README.md).", ""]
    head = "| per ... | nginx |" + "".join(f" {lbl} | x nginx |" for lbl, _ in cols)
    lines += [head, "|" + "---|" * (2 + 2 * len(cols))]
    for key, what, fmt in (("ir_req", "non-stream request: user-space instructions", k),
                           ("sc_req", "non-stream request: system calls", lambda x: f"{x:.2f}"),
                           ("ir_ev", "relayed event: user-space instructions", k),
                           ("sc_ev", "relayed event: system calls", lambda x: f"{x:.2f}")):
        base = ng[key]["total"]
        row = f"| {what} | {fmt(base)} |"
        for _, cid in cols:
            v = res[cid][key]["total"]
            row += f" {fmt(v)} | {v / base:.2f}x |" if base else f" {fmt(v)} | - |"
        lines.append(row)
    reads = ng["sc_ev"].get("recvfrom", 0) + ng["sc_ev"].get("read", 0)
    if reads < 0.9:
        lines += ["", f"**Warning**: nginx read the upstream {reads:.2f} times per event: "
                  f"events arrived several to a read (a loaded machine?), so the per-event "
                  f"rows undercount; rerun, or raise COST_DELAY_MS.", ""]
    lines += ["", "System calls by name (per request; per event):", "",
              "| | per non-stream request | per relayed event |", "|---|---|---|"]
    for lbl, cid in [("nginx", "nginx")] + cols:
        lines.append(f"| {lbl} | {top_calls(res[cid]['sc_req'])} | {top_calls(res[cid]['sc_ev'])} |")
    for key, what in (("ir_req", "non-stream request"), ("ir_ev", "relayed event")):
        lines += ["", f"Instructions per {what}, each library's own code (callgrind, self cost "
                  f"by object; the server's binary split by source directory; libc's also by "
                  f"who called it, inclusive):", "",
                  "| library |" + "".join(f" {lbl} |" for lbl, _ in cols) + " nginx |",
                  "|" + "---|" * (2 + len(cols))]
        names = set()
        for _, cid in cols + [("nginx", "nginx")]:
            names |= {n for n, v in res[cid][key].items() if abs(v) >= 50}
        names.discard("total")
        def size(n):
            return -max(abs(res[cid][key].get(n, 0)) for _, cid in cols + [("", "nginx")])

        callers = sorted((n for n in names if n.startswith("libc, called")), key=size)
        order = []
        for n in sorted((n for n in names if n not in callers), key=size):
            order += [n] + (callers if n == "libc" else [])
        for n in order + ["total"]:
            label = "... " + n[6:] if n in callers else n  # "... called from X"
            row = f"| {label} |"
            for _, cid in cols + [("", "nginx")]:
                row += f" {k(res[cid][key].get(n, 0))} |"
            lines.append(row)
    lines += tls_report(tls)
    # each load's command once (ports and temporary paths vary run to run)
    cmds = []
    for c in B.COMMANDS:
        c = re.sub(r"(--port |127\.0\.0\.1:)\d+", r"\1PORT", c)
        c = re.sub(r"/tmp/zju-cost-[^/ ]+", "TMP", c)
        if c not in cmds:
            cmds.append(c)
    lines += ["", "Commands (PORT, TMP: this run's ports and directory):", "", "```"] + cmds + [
        "```", ""]
    return "\n".join(lines)


def main():
    for tool in ("valgrind", "callgrind_control", "strace", "nginx"):
        if not B.shutil.which(tool):
            raise SystemExit(f"cost: {tool} is missing (apt-get install valgrind strace nginx-light)")
    t0 = time.time()
    started = B.sh("cat /proc/loadavg")
    tmp = tempfile.mkdtemp(prefix="zju-cost-")
    cfg = dict(B.FULL, mock_workers=1)
    mock, mport = B.start_mock(tmp, cfg)
    res = {}
    try:
        expect = {}
        for e in EVENTS:
            body = {"model": model(e, 0), "messages": [{"role": "user", "content": "x"}],
                    "stream": True}
            expect[e] = B.count_events(mport, "/v1/chat/completions", body,
                                       {"Authorization": f"Bearer {B.KEY}"})
        limits_env, bearer = B.quota_env(tmp, "cost")
        both = ["/api/chat", "/v1/chat/completions"]
        plan = [("nginx", ["nginx"], None, None, "nginx"),
                ("server", both, None, None, ""),
                ("server", both, limits_env, bearer, "limits ")]
        for name, routes, env, tok, label in plan:
            log(f"cost: {label or name}: callgrind")
            cg = measure_cg(tmp, name, mport, routes, expect, env, tok)
            log(f"cost: {label or name}: strace")
            st = measure_strace(tmp, name, mport, routes, expect, env, tok)
            for r in routes:
                cid = "nginx" if name == "nginx" else label + r
                res[cid] = dict(cg[r], **st[r])
        tls = None
        if os.environ.get("COST_TLS", "1") != "0":
            log("cost: TLS upstream (S6): server and nginx relay, callgrind and strace")
            B.make_cert(tmp)
            ng, nport, tport = B.start_nginx(tmp, mport, workers=1)
            try:
                tls = measure_tls(tmp, nport, tport, ng.tport_relay)
            finally:
                ng.stop()
    finally:
        mock.stop()
    cols = [(f"server {r}", r) for r in ("/api/chat", "/v1/chat/completions")] + [
        (f"server {r}, tokens+limits", "limits " + r) for r in ("/api/chat", "/v1/chat/completions")]
    text = report(res, cols, started, time.time() - t0, tls)
    print(text)
    tag = os.environ.get("COST_TAG")
    name = (f"{datetime.date.today().isoformat()}-{socket.gethostname()}-cost"
            + (f"-{tag}" if tag else "") + ".md")
    os.makedirs(os.path.join(B.ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(B.ROOT, "bench", "results", name), "w") as f:
        f.write(text)
    log(f"cost: wrote bench/results/{name} ({time.time() - t0:.0f} s; logs in {tmp})")
    B.shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
