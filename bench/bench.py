#!/usr/bin/env python3
"""The benchmark suite of issues 4 and 13, run by bench/run.sh (`make bench`).

Starts the project's mock upstream once and the contenders against it -- the
mock itself (the floor), nginx as a plain reverse proxy (the ceiling for a
proxy that does no work), zju-chat-server with 1 worker, with its default
workers, on OpenAI's route, and with tokens and limits on -- and runs
scenarios S1-S6 on each. S1, S2 and S3, whose targets are ratios to nginx
under load that the whole machine shares, run in rounds (every contender started
beforehand, once per round, in a rotating order); the others run on one
contender at a time. For every run it
samples the contender's and the mock's process trees (peak summed RSS, CPU
seconds from /proc/PID/stat) and takes the load generator's own CPU from its
report, so that a number limited by the harness is flagged, not believed.
Prints a Markdown report and writes it to bench/results/YYYY-MM-DD-<host>.md.

`--verdicts RESULTS_JSON` prints a past run's verdicts again (the raw
results.json that every run leaves beside its logs).

`--smoke` runs the load generator for a few seconds against the mock and the
server instead, and exits non-zero if a stream failed its checks or if a
deliberately broken stream was not caught.

Sizes come from a table below; BENCH_QUICK=1 picks small ones, and any entry
can be overridden by env BENCH_<KEY> (e.g. BENCH_S2_DUR=5, BENCH_S3_SIZES=100,200).
BENCH_CONTENDERS and BENCH_SCENARIOS pick subsets (comma-separated).
Stdlib only; loopback only; every child process is bounded in time.
"""
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, os.environ.get("BUILD", "build"))
LOADGEN = os.path.join(BUILD, "zju-loadgen")
MOCK = os.path.join(BUILD, "zju-mock-upstream")
SERVER = os.path.join(BUILD, "zju-chat-server")
KEY = "bench-key-not-secret"  # ZJUCHAT_MIN_KEY_LEN (16) or longer
MODEL = "deepseek-v3-671b"
TICK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

FULL = {
    "mock_workers": 2,
    "s1_dur": 10, "s1_conns": 32,
    "s2_dur": 15, "s2_conc": 64, "s2_events": 20, "s2_delay": 10,
    "s3_sizes": [1000, 4000], "s3_events": 50, "s3_delay": 100,
    "s4_streams": 10000, "s4_events": 30, "s4_delay": 1000, "s4_rate": 2000,
    "s5_clients": 100, "s5_hold": 10, "s5_events": 1000000,
    "s6_n": 50, "s6_blocks": 10,
    "rounds": 5,
}
QUICK = dict(FULL, s1_dur=3, s2_dur=3, s3_sizes=[200, 500], s3_events=10,
             s4_streams=1000, s4_events=4, s5_hold=3, s6_n=10, s6_blocks=2, rounds=1)

COMMANDS = []  # every command run, for the report
MOCK_WORKERS = [1]  # set from the sizes table; used by the saturation flags


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def config():
    cfg = dict(QUICK if os.environ.get("BENCH_QUICK") == "1" else FULL)
    for k, v in list(cfg.items()):
        env = os.environ.get("BENCH_" + k.upper())
        if env is None:
            continue
        cfg[k] = [int(x) for x in env.split(",")] if isinstance(v, list) else int(env)
    return cfg


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, secs=10):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---- /proc sampling -------------------------------------------------------

def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s.rsplit(")", 1)[1].split()


def proc_tree(roots):
    """PIDs of roots and all their descendants."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            kids.setdefault(int(_stat_fields(d)[1]), []).append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    out, stack = [], list(roots)
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(kids.get(p, []))
    return out


def tree_cpu(pids):
    """utime+stime of the processes plus their waited-for children, seconds."""
    t = 0
    for p in pids:
        try:
            f = _stat_fields(p)
            t += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        except (OSError, IndexError, ValueError):
            pass
    return t / TICK


def tree_rss_kb(pids):
    kb = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/statm") as f:
                kb += int(f.read().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            pass
    return kb


def machine_cpu_s():
    """CPU seconds since boot from /proc/stat's first line: (busy, steal).
    busy is everything but idle and iowait, steal included: what the cores
    were not free for. steal is what the hypervisor took from them: in a VM,
    time every process here lost at once. One read for both."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    steal = v[7] if len(v) > 7 else 0
    return (sum(v[:8]) - v[3] - v[4]) / TICK, steal / TICK


class Sampler(threading.Thread):
    """Peak summed RSS of a process tree, sampled every 0.1 s (the tree is
    rescanned every second so that new workers are seen)."""

    def __init__(self, roots):
        super().__init__(daemon=True)
        self.roots = roots
        self.stop_ev = threading.Event()
        self.pids = proc_tree(roots)
        self.base_kb = tree_rss_kb(self.pids)
        self.peak_kb = self.base_kb
        self.t0 = time.time()
        self.series = []  # (seconds since start, summed RSS KB)
        self.cpu0 = tree_cpu(self.pids)
        self.cpu = 0.0

    def run(self):
        n = 0
        while not self.stop_ev.wait(0.1):
            n += 1
            if n % 10 == 0:
                self.pids = proc_tree(self.roots)
            kb = tree_rss_kb(self.pids)
            self.series.append((time.time() - self.t0, kb))
            self.peak_kb = max(self.peak_kb, kb)

    def peak_before(self, frac):
        """Peak RSS over the first frac of the run: equal to the final peak
        when memory stopped growing."""
        if not self.series:
            return self.peak_kb
        end = self.series[-1][0] * frac
        return max([self.base_kb] + [kb for t, kb in self.series if t <= end])

    def finish(self):
        self.stop_ev.set()
        self.join()
        self.pids = proc_tree(self.roots)
        self.peak_kb = max(self.peak_kb, tree_rss_kb(self.pids))
        self.cpu = tree_cpu(self.pids) - self.cpu0
        return self


# ---- processes ------------------------------------------------------------

class Proc:
    def __init__(self, name, cmd, logpath, env=None):
        self.name, self.cmd = name, cmd
        self.logf = open(logpath, "wb")
        self.logpath = logpath
        COMMANDS.append(("" if not env else " ".join(
            f"{k}={v}" for k, v in env.items()) + " ") + shlex.join(cmd))
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.p = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT,
                                  env=full_env, start_new_session=True)

    @property
    def pid(self):
        return self.p.pid

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)  # our own session only
                self.p.wait()
        self.logf.close()


# Each contender reaches the mock at an address of its own (the mock listens on
# all of them, --also-host). Through one address, a contender that ran after
# others met their upstream connections' TIME_WAIT sockets (4,000 of each
# contender's per S3-4000 round, 60 s each) in connect()'s search for a local
# port: 24% of its CPU in __inet_hash_connect and __inet_check_established,
# first-event p99 1.1-1.6 s, whichever contender came late (bench/README.md).
CONTENDER_HOSTS = {"nginx": "127.0.0.11", "server-w1": "127.0.0.12", "server": "127.0.0.13",
                   "server-v1": "127.0.0.14", "server-limits": "127.0.0.15",
                   "server-redis": "127.0.0.16"}


def start_mock(tmp, cfg):
    port = free_port()
    also = [a for h in CONTENDER_HOSTS.values() for a in ("--also-host", h)]
    m = Proc("mock", [MOCK, "--port", str(port), "--workers", str(cfg["mock_workers"]),
                      "--events", "20", "--delay-ms", "0", "--quiet"] + also,
             os.path.join(tmp, "mock.log"))
    if not wait_port(port, m.p):
        m.stop()
        # --quiet may not exist in every build of the mock: retry without it
        m = Proc("mock", [MOCK, "--port", str(port), "--workers", str(cfg["mock_workers"]),
                          "--events", "20", "--delay-ms", "0"] + also,
                 os.path.join(tmp, "mock.log"))
        if not wait_port(port, m.p):
            raise SystemExit("bench: the mock did not start; see " + m.logpath)
    return m, port


# Where nginx may spill bodies (both configurations; never used at these sizes).
NGINX_TEMP_PATHS = "".join(f"    {k}_temp_path {{tmp}}/ngx-{d};\n" for k, d in (
    ("client_body", "body"), ("proxy", "proxy"), ("fastcgi", "fcgi"), ("uwsgi", "uwsgi"),
    ("scgi", "scgi")))

NGINX_CONF = """
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 20000; multi_accept on; }}
http {{
    # nginx's default: one line per request, written at once, as the
    # server writes its own access log (it has no "off"); see bench/README.md.
    access_log {tmp}/nginx-access.log combined;
{temp_paths}    keepalive_requests 1000000;
    upstream mock {{ server {mhost}:{mport}; keepalive 1024; keepalive_requests 1000000; }}
    log_format conn '$connection $connection_requests $ssl_session_reused $server_port';
    server {{
        listen 127.0.0.1:{port} backlog=8192 reuseport;
        location = /api/chat {{
            proxy_pass http://mock/v1/chat/completions;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {key}";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
        location /v1/ {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
    server {{
        listen 127.0.0.1:{tport} ssl;
        listen 127.0.0.1:{tport_relay} ssl; # S6's nginx relay: its connections apart
        ssl_certificate {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        access_log {tmp}/tls-access.log conn;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def make_cert(tmp):
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", os.path.join(tmp, "key.pem"),
                    "-out", os.path.join(tmp, "cert.pem")],
                   check=True, capture_output=True, timeout=30)


def start_nginx(tmp, mport, workers=2, mhost="127.0.0.1"):
    port, tport, tport_relay = free_port(), free_port(), free_port()
    for d in ("ngx-body", "ngx-proxy", "ngx-fcgi", "ngx-uwsgi", "ngx-scgi"):
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
        os.chmod(os.path.join(tmp, d), 0o1777)  # workers may run as nobody
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(workers=workers, tmp=tmp, mhost=mhost, mport=mport,
                                  port=port, tport=tport, tport_relay=tport_relay, key=KEY))
    n = Proc("nginx", ["nginx", "-e", os.path.join(tmp, "nginx-error.log"), "-p", tmp,
                       "-c", conf], os.path.join(tmp, "nginx.log"))
    if not wait_port(port, n.p):
        raise SystemExit("bench: nginx did not start; see " + tmp + "/nginx-error.log")
    n.tport_relay = tport_relay
    return n, port, tport


BIG = 10 ** 9  # a limit the load never reaches


def quota_env(tmp, tag):
    """Settings and token for a server that counts everything and refuses
    nothing: one access token with every limit, and the address limits."""
    token = "bench-token-" + tag + "-0123456789abcdef"
    path = os.path.join(tmp, tag + "-tokens.conf")
    with open(path, "w") as f:
        f.write(f"{token} name=bench rpm={BIG} tpm={BIG} tpd={BIG} streams={BIG}\n")
    return {"ACCESS_TOKENS_FILE": path, "IP_RPM": str(BIG), "IP_TPM": str(BIG)}, token


def start_redis(tmp):
    port = free_port()
    r = Proc("redis", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                       "--save", "", "--appendonly", "no"], os.path.join(tmp, "redis.log"))
    if not wait_port(port, r.p):
        raise SystemExit("bench: redis-server did not start; see " + r.logpath)
    return r, port


def start_server(tmp, base_url, workers, tag, extra_env=None):
    port = free_port()
    cmd = [SERVER, "-b", f"127.0.0.1:{port}"]
    if workers:
        cmd += ["-w", str(workers)]
    env = {"ZJU_API_KEY": KEY, "ZJU_BASE_URL": base_url}
    # BENCH_SERVER_ENV="MAX_CONNECTIONS=10000 ..." measures a tuned server; the
    # default is the server exactly as a user starts it.
    for kv in os.environ.get("BENCH_SERVER_ENV", "").split():
        k, _, v = kv.partition("=")
        env[k] = v
    env.update(extra_env or {})
    s = Proc(tag, cmd, os.path.join(tmp, tag + ".log"), env)
    if not wait_port(port, s.p):
        raise SystemExit(f"bench: {tag} did not start; see {s.logpath}")
    time.sleep(0.3)  # let every worker reach accept()
    return s, port


# ---- load -----------------------------------------------------------------

def count_events(port, path, body, headers):
    """Data events (without [DONE]) in one stream: the exact number every
    stream of a run must carry."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=json.dumps(body).encode(),
                                 headers=dict(headers, **{"Content-Type": "application/json"}))
    with urllib.request.urlopen(req, timeout=60) as r:
        text = r.read().decode()
    n = 0
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [ln for ln in block.split("\n") if ln.startswith("data:")]
        if data and data[0][5:].strip() != "[DONE]":
            n += 1
    return n


def loadgen(target, label, args, wall):
    cmd = [LOADGEN, "--port", str(target["port"]), "--path", target["path"],
           "--label", label] + target["lgflags"] + args
    COMMANDS.append(shlex.join(cmd))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=wall)
    except subprocess.TimeoutExpired:
        return {"label": label, "error": "loadgen timed out"}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            res = json.loads(line)
            res["rc"] = out.returncode
            return res
    return {"label": label, "error": "no report: " + out.stderr[-300:]}


def wrk(target, label, conns, dur, model):
    body = ({"model": model, "messages": [{"role": "user", "content": "Hello, benchmark"}],
             "stream": False} if target["openai"] else
            {"user_content": "Hello, benchmark", "model": model, "stream": False})
    env = dict(os.environ, BENCH_BODY=json.dumps(body),
               BENCH_AUTH=f"Bearer {target.get('bearer') or KEY}" if target["auth"] else "")
    timef = tempfile.mktemp(prefix="wrk-time-")
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{dur}s", "--latency", "-s",
           os.path.join(ROOT, "bench", "post.lua"),
           f"http://127.0.0.1:{target['port']}{target['path']}"]
    COMMANDS.append(f"BENCH_BODY='{json.dumps(body)}' " + shlex.join(cmd))
    t0 = time.time()
    out = subprocess.run(["/usr/bin/time", "-f", "%U %S", "-o", timef] + cmd,
                         capture_output=True, text=True, env=env, timeout=dur + 60)
    elapsed = time.time() - t0
    res = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):  # post.lua's report, then its percentile grid
            res.update(json.loads(line))
    if "rps" not in res:
        res = {"label": label, "error": "no wrk report"}
    try:
        with open(timef) as f:
            u, s = f.read().split()[-2:]
        res["cpu_s"] = float(u) + float(s)
        res["cpu_pct"] = 100 * res["cpu_s"] / elapsed
        os.unlink(timef)
    except (OSError, ValueError):
        pass
    res["elapsed_s"] = elapsed
    return res


def measured(contender_roots, mock_roots, fn):
    """Runs fn() while sampling the contender's and the mock's trees."""
    cs = Sampler(contender_roots)
    ms = Sampler(mock_roots) if mock_roots != contender_roots else None
    cs.start()
    if ms:
        ms.start()
    t0 = time.time()
    busy0, steal0 = machine_cpu_s()
    res = fn()
    res["wall_s"] = time.time() - t0
    busy1, steal1 = machine_cpu_s()
    busy = busy1 - busy0
    res["steal_s"] = round(steal1 - steal0, 2)
    cs.finish()
    res["rss_base_kb"] = cs.base_kb
    res["rss_peak_kb"] = cs.peak_kb
    res["rss_half_kb"] = cs.peak_before(0.5)
    res["cpu_contender_s"] = cs.cpu
    res["cpu_mock_s"] = ms.finish().cpu if ms else cs.cpu
    ours = res["cpu_mock_s"] + res.get("cpu_s", 0) + (cs.cpu if ms else 0)
    res["cpu_other_s"] = max(0.0, busy - ours - res["steal_s"])
    return res


def flags(res, ncpu):
    f = []
    wall = res.get("wall_s") or 1
    if res.get("cpu_pct", 0) >= 85:
        f.append("loadgen-bound")
    if res["cpu_mock_s"] / wall >= 0.85 * min(ncpu, MOCK_WORKERS[0]):
        f.append("mock-bound")
    total = res["cpu_mock_s"] + res.get("cpu_s", 0) + (
        res["cpu_contender_s"] if res["cpu_mock_s"] is not res["cpu_contender_s"] else 0)
    if total / wall >= 0.9 * ncpu:
        f.append("machine-saturated")
    if res.get("cpu_other_s", 0) / wall >= 0.2:
        f.append(f"noisy: other processes used {res['cpu_other_s']:.1f} CPU s")
    # Steal came in spells of 10-40 ms on this VM's host, and one stall of
    # 10-20 ms makes a p99 (bench/README.md); most stalls came with no steal
    # counted, so no flag does not mean a quiet host.
    if res.get("steal_s", 0) >= 0.2:
        f.append(f"host steal {res['steal_s']:.2f} s")
    if res.get("error"):
        f.append(res["error"])
    return f


# ---- scenarios ------------------------------------------------------------

def model_with(events, delay):
    return f"{MODEL}#events={events},delay={delay}"


def run_contender(name, target, roots, mock_roots, mock_port, cfg, scen, results, ncpu,
                  rnd=None):
    def rec(sc, res):
        res["contender"] = name
        res["scenario"] = sc
        if rnd is not None:
            res["round"] = rnd
        res["flags"] = flags(res, ncpu)
        results.append(res)
        brief = {k: v for k, v in res.items() if k not in POOLED}
        log(f"  {sc:4} {name:10} {json.dumps(brief)}")

    expect = {}

    def exp(events, delay):
        m = model_with(events, delay)
        if m not in expect:
            body = ({"model": m, "messages": [{"role": "user", "content": "x"}],
                     "stream": True})
            expect[m] = count_events(mock_port, "/v1/chat/completions", body,
                                     {"Authorization": f"Bearer {KEY}"})
        return ["--model", m, "--expect-events", str(expect[m])]

    if "S1" in scen:
        rec("S1", measured(roots, mock_roots, lambda: wrk(
            target, "S1", cfg["s1_conns"], cfg["s1_dur"], model_with(20, 0))))
    if "S2" in scen:
        a = exp(cfg["s2_events"], cfg["s2_delay"]) + [
            "-c", str(cfg["s2_conc"]), "-d", str(cfg["s2_dur"])]
        rec("S2", measured(roots, mock_roots, lambda: loadgen(
            target, "S2", a, cfg["s2_dur"] + 60)))
    # S5 before the held-stream runs, whose memory a process may keep.
    if "S5" in scen:
        a = ["--model", model_with(cfg["s5_events"], 0), "--slow-readers",
             "-c", str(cfg["s5_clients"]), "-d", str(cfg["s5_hold"]), "--rcvbuf", "4096"]
        rec("S5", measured(roots, mock_roots, lambda: loadgen(
            target, "S5", a, cfg["s5_hold"] + 60)))
    if "S3" in scen:
        for n in cfg["s3_sizes"]:
            a = exp(cfg["s3_events"], cfg["s3_delay"]) + [
                "-c", str(n), "-n", str(n), "--connect-rate", str(cfg["s4_rate"]),
                "--src-addrs", "4"]
            wall = cfg["s3_events"] * cfg["s3_delay"] / 1000 + n / cfg["s4_rate"] + 90
            rec(f"S3-{n}", measured(roots, mock_roots, lambda: loadgen(
                target, f"S3-{n}", a, wall)))
    if "S4" in scen:
        n = cfg["s4_streams"]
        a = exp(cfg["s4_events"], cfg["s4_delay"]) + [
            "-c", str(n), "-n", str(n), "--connect-rate", str(cfg["s4_rate"]),
            "--src-addrs", "8", "--timeout", "20"]
        wall = cfg["s4_events"] * cfg["s4_delay"] / 1000 + n / cfg["s4_rate"] + 90
        rec("S4", measured(roots, mock_roots, lambda: loadgen(target, "S4", a, wall)))



NGINX_RELAY_CONF = """
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/relay.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/relay-access.log combined;
{temp_paths}    upstream plain {{ server 127.0.0.1:{plain}; keepalive 16; }}
    upstream tls {{ server 127.0.0.1:{tls}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port_plain};
        location = /api/chat {{
            proxy_pass http://plain/v1/chat/completions;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {key}";
            proxy_buffering off;
        }}
    }}
    server {{
        listen 127.0.0.1:{port_tls};
        location = /api/chat {{
            proxy_pass https://tls/v1/chat/completions;
            proxy_http_version 1.1;
            proxy_ssl_session_reuse on;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer {key}";
            proxy_buffering off;
        }}
    }}
}}
"""

NGINX_CONF, NGINX_RELAY_CONF = (c.replace("{temp_paths}", NGINX_TEMP_PATHS)
                                  for c in (NGINX_CONF, NGINX_RELAY_CONF))


def start_nginx_relay(tmp, plain_port, tls_port):
    """nginx as the relay (the reference of issue 13) in front of the same
    plaintext and TLS upstreams as the server in S6, one worker like
    server-w1, keep-alive to both."""
    port_plain, port_tls = free_port(), free_port()
    conf = os.path.join(tmp, "nginx-relay.conf")
    with open(conf, "w") as f:
        f.write(NGINX_RELAY_CONF.format(tmp=tmp, plain=plain_port, tls=tls_port,
                                        port_plain=port_plain, port_tls=port_tls, key=KEY))
    n = Proc("nginx-relay", ["nginx", "-e", os.path.join(tmp, "nginx-relay-error.log"),
                             "-p", tmp, "-c", conf], os.path.join(tmp, "nginx-relay.log"))
    if not wait_port(port_tls, n.p):
        raise SystemExit("bench: the nginx relay did not start; see " + tmp +
                         "/nginx-relay-error.log")
    return n, port_plain, port_tls


def tls_connections(tmp, port):
    """TLS connections the upstream nginx accepted on one of its ports, and the
    requests each carried."""
    conns = {}
    try:
        with open(os.path.join(tmp, "tls-access.log")) as f:
            for ln in f:
                w = ln.split()
                if len(w) >= 4 and w[3] == str(port):
                    conns[w[0]] = conns.get(w[0], 0) + 1
    except OSError:
        return None
    return conns


def run_s6(tmp, cfg, mock, nginx_plain, tls_port, tls_port_relay, results):
    """Sequential streams through a relay with a TLS upstream (nginx with a
    self-signed certificate in front of the mock) versus the same path in
    plaintext: with the upstream connection reused, requests 2..N cost no
    handshake. The plaintext and TLS servers run side by side and take
    turns in blocks of s6_n requests (s6_blocks each), so that the machine's
    drift hits both alike: one run of each after the other gave ratios of
    0.87x-2.29x for the same build (bench/README.md). nginx relaying the
    same two upstreams, measured in the same turns, is the reference."""
    cert = os.path.join(tmp, "cert.pem")
    ca_env = {"ZJU_CA_FILE": cert, "ZJU_CA_BUNDLE": cert, "CURL_CA_BUNDLE": cert,
              "SSL_CERT_FILE": cert}
    n, blocks = cfg["s6_n"], cfg["s6_blocks"]
    model = model_with(5, 0)
    procs, targets = [], {}
    try:
        for tag, url in (("plain", f"http://127.0.0.1:{nginx_plain}/v1"),
                         ("tls", f"https://127.0.0.1:{tls_port}/v1")):
            s, port = start_server(tmp, url, 1, f"server-s6-{tag}", ca_env)
            procs.append(s)
            targets[("server", tag)] = {"port": port, "path": "/api/chat", "lgflags": []}
        relay, rp, rt = start_nginx_relay(tmp, nginx_plain, tls_port_relay)
        procs.append(relay)
        for tag, port in (("plain", rp), ("tls", rt)):
            targets[("nginx", tag)] = {"port": port, "path": "/api/chat",
                                       "lgflags": ["--openai-body", "--allow-done"]}
        runs = {k: [] for k in targets}
        for b in range(blocks):
            order = ("plain", "tls") if b % 2 == 0 else ("tls", "plain")
            for who in ("server", "nginx"):
                for tag in order:
                    a = ["--model", model, "-c", "1", "-n", str(n), "--warmup", "1"]
                    runs[(who, tag)].append(loadgen(targets[(who, tag)],
                                                    f"S6-{who}-{tag}-{b}", a, 60))
    finally:
        for p in reversed(procs):
            p.stop()
    for who in ("server", "nginx"):
        out = {"contender": "server-w1" if who == "server" else "nginx-w1",
               "scenario": "S6", "requests": n, "blocks": blocks, "flags": []}
        for tag in ("plain", "tls"):
            rs = runs[(who, tag)]
            out[tag] = {
                "completed": sum(r.get("completed", 0) for r in rs),
                "failed": sum(r.get("failed", 0) for r in rs) + sum(1 for r in rs if "error" in r),
                "ttfe_p50_ms": [r.get("ttfe_p50_ms") for r in rs],
                "first_ttfe_ms": rs[0].get("first_ttfe_ms") if rs else None,
                "fail_reasons": [r.get("fail_reasons") or r.get("error") for r in rs
                                 if r.get("failed") or "error" in r][:3],
            }
        ratios = [t / p for t, p in zip(out["tls"]["ttfe_p50_ms"], out["plain"]["ttfe_p50_ms"])
                  if t and p]
        out["ratios"] = ratios
        out["ratio"] = median(ratios) if ratios else None
        conns = tls_connections(tmp, tls_port if who == "server" else tls_port_relay)
        out["tls_connections"] = len(conns) if conns is not None else None
        out["tls_requests"] = sum(conns.values()) if conns else 0
        results.append(out)
        log(f"  S6   {out['contender']}  {json.dumps(out)}")


# ---- report ---------------------------------------------------------------

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True,
                              timeout=10).stdout.strip() + ""
    except subprocess.SubprocessError:
        return "?"


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "host": socket.gethostname(), "nproc": os.cpu_count(), "cpu": cpu,
        "kernel": platform.release(),
        "nginx": sh("nginx -v 2>&1"), "wrk": sh("wrk -v 2>&1 | head -1"),
        "libevent": sh("pkg-config --modversion libevent"),
        "libcurl": sh("pkg-config --modversion libcurl"),
        "git": sh(f"git -C {shlex.quote(ROOT)} rev-parse --short HEAD"),
        "load": sh("cat /proc/loadavg"),
    }


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def label(r):
    return r["contender"] + (f" #{r['round'] + 1}" if "round" in r else "")


def table(results, scen):
    rows = [r for r in results if r["scenario"] == scen]
    if not rows:
        return []
    order = []
    for r in rows:
        if r["contender"] not in order:
            order.append(r["contender"])
    rows.sort(key=lambda r: (order.index(r["contender"]), r.get("round", 0)))
    if scen == "S1":
        head = ("| contender | req/s | p50 ms | p99 ms | errors | peak RSS MB | CPU s |"
                " mock CPU s | wrk CPU s | flags |")
        lines = [head, "|" + "---|" * 10]
        for r in rows:
            errs = sum(r.get(k, 0) for k in ("err_status", "err_connect", "err_read",
                                             "err_write", "err_timeout"))
            lines.append(f"| {label(r)} | {fmt(r.get('rps'))} | {fmt(r.get('p50_ms'), 2)}"
                         f" | {fmt(r.get('p99_ms'), 2)} | {errs} | {r['rss_peak_kb']/1024:.1f}"
                         f" | {r['cpu_contender_s']:.2f} | {r['cpu_mock_s']:.2f}"
                         f" | {fmt(r.get('cpu_s'), 2)} | {', '.join(r['flags'])} |")
        return lines
    if scen == "S5":
        lines = ["| contender | slow readers held | held s | base RSS MB |"
                 " peak RSS MB, 1st half | peak RSS MB | growth MB | CPU s | mock CPU s |"
                 " flags |", "|" + "---|" * 10]
        for r in rows:
            lines.append(f"| {label(r)} | {r.get('reached_first', 0)}/{r.get('concurrency', '?')}"
                         f" | {fmt(r.get('elapsed_s'))} | {r['rss_base_kb']/1024:.1f}"
                         f" | {r['rss_half_kb']/1024:.1f} | {r['rss_peak_kb']/1024:.1f}"
                         f" | {(r['rss_peak_kb']-r['rss_base_kb'])/1024:.1f}"
                         f" | {r['cpu_contender_s']:.2f} | {r['cpu_mock_s']:.2f}"
                         f" | {', '.join(r['flags'])} |")
        return lines
    lines = ["| contender | ok | failed | streams/s | events/s | TTFE p50 ms | TTFE p99 ms |"
             " warm TTFE p50/p99 ms |"
             " peak open | peak RSS MB | RSS growth KB/stream | CPU s | mock CPU s |"
             " loadgen CPU s (%) | others' CPU s | flags |", "|" + "---|" * 16]
    for r in rows:
        grow = (r["rss_peak_kb"] - r["rss_base_kb"]) / max(1, r.get("peak_active", 0) or 1)
        fails = r.get("failed", "-")
        # One stream per connection (S3, S4) leaves no warm sample.
        warm = (f"{fmt(r.get('ttfe_warm_p50_ms'), 2)}/{fmt(r.get('ttfe_warm_p99_ms'), 2)}"
                if r.get("ttfe_warm_p99_ms") else "-")
        if r.get("fail_reasons"):
            fails = f"{fails} {json.dumps(r['fail_reasons'])}"
        lines.append(f"| {label(r)} | {r.get('completed', '-')} | {fails}"
                     f" | {fmt(r.get('streams_per_s'))} | {fmt(r.get('events_per_s'), 0)}"
                     f" | {fmt(r.get('ttfe_p50_ms'), 2)} | {fmt(r.get('ttfe_p99_ms'), 2)}"
                     f" | {warm}"
                     f" | {r.get('peak_active', '-')} | {r['rss_peak_kb']/1024:.1f}"
                     f" | {grow:.1f} | {r['cpu_contender_s']:.2f} | {r['cpu_mock_s']:.2f}"
                     f" | {fmt(r.get('cpu_s'), 2)} ({fmt(r.get('cpu_pct'), 0)}%)"
                     f" | {r.get('cpu_other_s', 0):.1f} | {', '.join(r['flags'])} |")
    return lines


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return None if not n else xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def get(results, scen, who):
    """The contender's result; of several rounds, the median one (by req/s
    for S1, by first-event p99 for S2, by CPU seconds otherwise)."""
    rows = [r for r in results if r["scenario"] == scen and r["contender"] == who]
    if len(rows) <= 1:
        return rows[0] if rows else None
    key = ((lambda r: r.get("rps") or 0) if scen == "S1" else
           (lambda r: r.get("ttfe_p99_ms") or 0) if scen == "S2" else
           (lambda r: r["cpu_contender_s"]))
    return sorted(rows, key=key)[len(rows) // 2]


# What a run reports for pooling, too long for the log: loadgen's first-event
# histogram ([[upper bound us, count], ...]) and wrk's latency at a grid of
# percentiles ([[percentile, ms], ...]).
POOLED = ("ttfe_hist", "p_grid")


def pooled_hist_pct(rows, p):
    """The p-th percentile in ms of every row's first events together, from
    loadgen's histograms; None when a row has none (an older report)."""
    counts = {}
    for r in rows:
        if "ttfe_hist" not in r:
            return None
        for top, c in r["ttfe_hist"]:
            counts[top] = counts.get(top, 0) + c
    n = sum(counts.values())
    if not n:
        return None
    want, seen = max(1, int(n * p / 100 + 0.5)), 0
    for top in sorted(counts):
        seen += counts[top]
        if seen >= want:
            return top / 1000
    return None


def pooled_grid_pct(rows, p):
    """The p-th percentile in ms of every row's requests together, from wrk's
    percentile grids: the mixture of the rows' distributions (each weighted
    by its requests, linear between grid points) where it reaches p."""
    grids = []
    for r in rows:
        if not r.get("p_grid") or not r.get("requests"):
            return None
        grids.append((r["requests"], sorted((v, q) for q, v in r["p_grid"])))

    def cdf(grid, x):  # percent of the row's requests at or below x ms
        if x < grid[0][0]:
            return grid[0][1]  # below the grid's first point (p50): a bound
        for (v0, q0), (v1, q1) in zip(grid, grid[1:]):
            if x < v1:
                return q0 + (q1 - q0) * (x - v0) / (v1 - v0) if v1 > v0 else q1
        return 100.0

    total = sum(n for n, _ in grids)

    def mix(x):
        return sum(n * cdf(g, x) for n, g in grids) / total

    xs = sorted({v for _, g in grids for v, _ in g})
    prev = None
    for x in xs:
        f = mix(x)
        if f >= p:
            if prev is None or f == prev[1]:
                return x
            return prev[0] + (x - prev[0]) * (p - prev[1]) / (f - prev[1])
        prev = (x, f)
    return xs[-1] if xs else None


def pooled(results, scen, who, p):
    rows = [r for r in results if r["scenario"] == scen and r["contender"] == who]
    if not rows:
        return None
    return pooled_grid_pct(rows, p) if scen == "S1" else pooled_hist_pct(rows, p)


def paired(results, scen, who, base, value):
    """Median over the rounds of who's value / base's value in the same
    round (one round: the plain ratio), and every round's ratio."""
    mine = {r.get("round", 0): r for r in results
            if r["scenario"] == scen and r["contender"] == who}
    theirs = {r.get("round", 0): r for r in results
              if r["scenario"] == scen and r["contender"] == base}
    rs = []
    for k in sorted(mine):
        if k in theirs:
            a, b = value(mine[k]), value(theirs[k])
            if a is not None and b:
                rs.append(a / b)
    return median(rs), rs


def tail_ratio(results, scen, who, base, field):
    """A p99 against base's: the p99 of all rounds' samples together, who's
    over base's (the verdict), and its text with the median of the per-round
    ratios beside it. One run's p99 is made mostly by its one to three worst
    stalls of the machine, each delaying 20-36 requests at once, for every
    contender and for the mock alone (bench/README.md, 2026-12-01, session
    11): the rounds' ratios spread from 0.2x to 3.5x, and their median holds five
    of those lotteries where the pooled p99 holds all of them. Reports without
    the pooled data (before then) fall back to the median of the ratios."""
    m, rs = paired(results, scen, who, base, lambda x: x.get(field))
    a, b = pooled(results, scen, who, 99), pooled(results, scen, base, 99)
    if a is None or not b:
        return m, f"{m:.2f}x {base} (median of the rounds' ratios){rounds_text(rs)}"
    n = len([r for r in results if r["scenario"] == scen and r["contender"] == who])
    return a / b, (f"{a:.2f} vs {b:.2f} ms over all {n} rounds' samples, {a / b:.2f}x "
                   f"{base}; median of the rounds' ratios {m:.2f}x{rounds_text(rs)}")


def rounds_text(rs):
    return "" if len(rs) <= 1 else " (rounds: " + ", ".join(f"{x:.2f}x" for x in rs) + ")"


def verdicts(results, cfg):
    """One line per target of issue 13 (bench/README.md), for each server
    variant; ratios to nginx are medians of per-round ratios, but p99s are
    pooled over the rounds (tail_ratio)."""
    out = []

    def v(ok):
        return "PASS" if ok else "FAIL"

    for who in ("server", "server-v1", "server-limits", "server-redis", "server-w1"):
        ng = lambda sc: get(results, sc, "nginx")  # noqa: E731
        me = lambda sc: get(results, sc, who)  # noqa: E731
        if me("S1") and ng("S1") and me("S1").get("rps") and ng("S1").get("rps"):
            q, qs = paired(results, "S1", who, "nginx", lambda r: r.get("rps"))
            lat, lats = tail_ratio(results, "S1", who, "nginx", "p99_ms")
            out.append(f"- {who} S1: {me('S1')['rps']:.0f} vs nginx {ng('S1')['rps']:.0f}"
                       f" req/s (medians), {q:.2f}x nginx{rounds_text(qs)} (target >= 0.9x);"
                       f" p99 {lats} (target <= 1.2x): {v(q >= 0.9 and lat <= 1.2)}")
        if me("S2") and ng("S2") and "streams_per_s" in me("S2") and "streams_per_s" in ng("S2"):
            # A single run's p99 of first events is its 1% worst: one stall of
            # the machine (a few ms, every open stream at once) moves it for
            # nginx as for the server (bench/README.md, 2026-12-01). So the
            # p99 of every round's first events together (tail_ratio).
            a, b = me("S2"), ng("S2")
            r, rtext = tail_ratio(results, "S2", who, "nginx", "ttfe_p99_ms")
            w, _ = paired(results, "S2", who, "nginx", lambda x: x.get("ttfe_warm_p99_ms"))
            rows = [x for x in results if x["scenario"] == "S2" and x["contender"] == who]
            failed = sum(x.get("failed", 0) for x in rows)
            # Kept up: the 64 places stayed busy (streams/s x a stream's median
            # duration, Little's law). Not streams/s alone: with tokens counted
            # the upstream sends one more chunk, 10 ms later, and every stream
            # lasts longer by that (bench/README.md).
            busy, _ = paired(results, "S2", who, "nginx",
                             lambda x: x.get("streams_per_s", 0) * x.get("dur_p50_ms", 0))
            ok = failed == 0 and r is not None and (busy or 0) >= 0.99 and r <= 1.2
            out.append(f"- {who} S2: {a['streams_per_s']:.1f} vs nginx "
                       f"{b['streams_per_s']:.1f} streams/s (streams in flight "
                       f"{busy or 0:.2f}x nginx's), TTFE p99 {rtext}"
                       f" (target <= 1.2x), {failed} failed: {v(ok)}; "
                       f"on kept-alive connections only (no connection setup), TTFE p99 "
                       f"{w or 0:.2f}x")
        for n in cfg["s3_sizes"]:
            a, b = me(f"S3-{n}"), ng(f"S3-{n}")
            if a and b and "completed" in a:
                c, cs = paired(results, f"S3-{n}", who, "nginx",
                               lambda r: r["cpu_contender_s"])
                mem, _ = paired(results, f"S3-{n}", who, "nginx", lambda r: r["rss_peak_kb"])
                done = all(r.get("completed") == n for r in results
                           if r["scenario"] == f"S3-{n}" and r["contender"] == who)
                ok = done and c <= 1.0 and mem <= 1.0
                target = "" if n == max(cfg["s3_sizes"]) else " (informative)"
                out.append(f"- {who} S3-{n}{target}: {'all' if done else 'NOT all'} {n} "
                           f"streams complete in every round; CPU {c:.2f}x nginx"
                           f"{rounds_text(cs)} (target <= 1.0x); peak RSS {mem:.2f}x nginx "
                           f"({a['rss_peak_kb']/1024:.1f} vs {b['rss_peak_kb']/1024:.1f} MB; "
                           f"target <= 1.0x): {v(ok)}")
        a = me("S4")
        if a and "completed" in a:
            n = cfg["s4_streams"]
            per = (a["rss_peak_kb"] - a["rss_base_kb"]) / max(1, a.get("peak_active") or 1)
            ok = a["completed"] == n and per <= 16
            # One process needs two descriptors per stream (client, upstream)
            # and the server caps its calls at (hard limit - 128) / 2.
            import resource
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            cap = (hard - 128) // 2 if hard != resource.RLIM_INFINITY else n
            capped = (who == "server-w1" and not ok and a["completed"] == cap
                      and per <= 16)
            verdict = (f"not measurable here: one process may hold {cap} calls under "
                       f"this machine's descriptor limit of {hard}" if capped else v(ok))
            out.append(f"- {who} S4: {a['completed']}/{n} complete, peak {a.get('peak_active')} "
                       f"open, {per:.1f} KB RSS per open stream (target <= 16): {verdict}")
        a = me("S5")
        if a and "reached_first" in a:
            grow = (a["rss_peak_kb"] - a["rss_base_kb"]) / 1024
            late = (a["rss_peak_kb"] - a["rss_half_kb"]) / 1024
            out.append(f"- {who} S5: {a['reached_first']} slow readers held "
                       f"{a.get('elapsed_s', 0):.0f} s; RSS grew {grow:.1f} MB "
                       f"({grow*1024/max(1, a['reached_first']):.0f} KB per slow reader), "
                       f"of which {late:.1f} MB in the second half of the hold: "
                       f"{'bounded' if late <= 0.05 * max(grow, 1) else 'STILL GROWING'}")
    # Tokens, limits and metrics on: within 10% of the open server.
    for who in ("server-limits", "server-redis"):
        parts, ok = [], True
        if get(results, "S1", who) and get(results, "S1", "server"):
            q, qs = paired(results, "S1", who, "server", lambda r: r.get("rps"))
            parts.append(f"S1 req/s {q:.2f}x{rounds_text(qs)}")
            ok = ok and q >= 0.9
        s3 = f"S3-{max(cfg['s3_sizes'])}"
        if get(results, s3, who) and get(results, s3, "server"):
            c, cs = paired(results, s3, who, "server", lambda r: r["cpu_contender_s"])
            parts.append(f"{s3} CPU {c:.2f}x{rounds_text(cs)}")
            ok = ok and c <= 1.1
        a, b = get(results, "S2", who), get(results, "S2", "server")
        if a and b and a.get("ttfe_p99_ms") and b.get("ttfe_p99_ms"):
            r, rtext = tail_ratio(results, "S2", who, "server", "ttfe_p99_ms")
            parts.append(f"S2 TTFE p99 {rtext}")
            ok = ok and r <= 1.1
        if parts:
            out.append(f"- {who} against server (tokens, limits, metrics on; target: within"
                       f" 10%): {'; '.join(parts)}: {v(ok)}")
    s6, ref = get(results, "S6", "server-w1"), get(results, "S6", "nginx-w1")

    def s6_text(r):
        t, p = r["tls"], r["plain"]
        tm, pm = median([x for x in t["ttfe_p50_ms"] if x]), median(
            [x for x in p["ttfe_p50_ms"] if x])
        return (f"TTFE p50 {tm:.3f} ms vs plaintext {pm:.3f} ms, TLS/plaintext "
                f"{r['ratio']:.2f}x (median of the {len(r['ratios'])} blocks' ratios, "
                f"{min(r['ratios']):.2f}-{max(r['ratios']):.2f}); first (cold) "
                f"{t['first_ttfe_ms'] or 0:.2f} ms; {r['tls_connections']} TLS connection(s) "
                f"for {r['tls_requests']} requests; failed {t['failed']}+{p['failed']}")
    if s6 and s6["tls"]["completed"] and s6["plain"]["completed"] and s6["ratios"]:
        ok = (s6["tls"]["failed"] == 0 and s6["plain"]["failed"] == 0 and
              s6["ratio"] <= 1.10 and s6["tls_connections"] == 1)
        out.append(f"- server-w1 S6: TLS upstream, {s6['blocks']} blocks of {s6['requests']} "
                   f"sequential streams, taking turns with the plaintext path: {s6_text(s6)} "
                   f"(target <= 1.10x, one TLS connection): {v(ok)}")
        if ref and ref["ratios"]:
            out.append(f"  - reference, nginx relaying the same two upstreams in the same "
                       f"turns (one worker, keep-alive, proxy_ssl_session_reuse): "
                       f"{s6_text(ref)}")
            # The ratio as written measures OpenSSL's record work on both ends
            # against a ~0.3 ms loopback round trip, which nginx's relay does
            # not meet either (bench/README.md): issue 13's reference instead.
            rel = s6["ratio"] / ref["ratio"]
            ok = (s6["tls"]["failed"] == 0 and s6["plain"]["failed"] == 0 and
                  rel <= 1.10 and s6["tls_connections"] == 1)
            out.append(f"- server-w1 S6 against nginx relaying the same upstreams: TLS/plaintext "
                       f"{s6['ratio']:.2f}x vs nginx's {ref['ratio']:.2f}x ({rel:.2f}x; target: "
                       f"within 10%, one TLS connection): {v(ok)}")
    elif s6:
        why = s6["tls"].get("fail_reasons")
        out.append(f"- server-w1 S6: FAIL, no stream through the TLS upstream completed "
                   f"({json.dumps(why)}); see the server-s6-tls log")
    return out


def report(results, cfg, m, started, quick):
    lines = [f"# Benchmark {started:%Y-%m-%d %H:%M} on {m['host']}", "",
             f"- machine: {m['nproc']} cores, {m['cpu']}, Linux {m['kernel']}; "
             f"load average at start: {m['load']}",
             f"- versions: commit {m['git']}, {m['nginx']}, {m['wrk']}, "
             f"libevent {m['libevent']}, libcurl {m['libcurl']}",
             f"- sizes: {'BENCH_QUICK=1 ' if quick else ''}{json.dumps(cfg)}",
             "- every contender runs against the same mock upstream; TTFE = time from "
             "sending the request to the first data event (warm TTFE: only streams sent on "
             "an already open connection, without connection setup); RSS = peak of the summed "
             "VmRSS of the contender's process tree, sampled every 0.1 s; CPU = utime+stime "
             "from /proc/PID/stat over the run; flags name a result whose harness side "
             "(mock, load generator, or the whole 2-core machine) was saturated.", ""]
    names = {"S1": "S1 non-stream, wrk", "S2": "S2 short streams",
             "S4": "S4 held streams, 1 event/s", "S5": "S5 slow readers"}
    scens = []
    for r in results:
        if r["scenario"] not in scens and r["scenario"] != "S6":
            scens.append(r["scenario"])
    for sc in scens:
        title = names.get(sc, f"S3 held streams x{sc[3:]}" if sc.startswith("S3") else sc)
        lines += [f"## {title}", ""] + table(results, sc) + [""]
    lines += ["## Targets of issue 13", "",
              f"S1, S2 and S3 ran in {cfg['rounds']} round(s), every contender once per round in a "
              "rotating order (all started beforehand), scenario by scenario: every "
              "round of S1, then of S2, then of S3 (since 2026-12-01, session 10: a round "
              "ran S1, S2 and S3 on one contender before the next); a ratio is the median of the "
              "per-round ratios, except the p99s of S1 and S2: the p99 of every round's "
              "samples together (since 2026-12-01, session 11), with the per-round ratios "
              "beside it; the tables give every round.", ""]
    lines += verdicts(results, cfg) or ["- (no server run)"]
    lines += ["", "## Commands", "", "```"] + COMMANDS + ["```", ""]
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------

def start_contender(name, tmp, mock, mport, procs):
    """Starts one contender against the mock; returns (target, roots, stop),
    or None when its binary is not built."""
    if name == "mock":
        target = {"port": mport, "path": "/v1/chat/completions", "openai": True,
                  "auth": True, "lgflags": ["--openai-body", "--allow-done", "-H",
                                            f"Authorization: Bearer {KEY}"]}
        return target, [mock.pid], lambda: None
    if name == "nginx":
        ng, port, _ = start_nginx(tmp, mport, mhost=CONTENDER_HOSTS["nginx"])
        target = {"port": port, "path": "/api/chat", "openai": True, "auth": False,
                  "lgflags": ["--openai-body", "--allow-done"]}
        return target, [ng.pid], ng.stop
    if not os.access(SERVER, os.X_OK):
        log(f"bench: {SERVER} not built: skipping {name}")
        return None
    workers = 1 if name == "server-w1" else None
    extra, bearer = {}, None
    if name in ("server-limits", "server-redis"):
        # Access tokens, the token's and the address's limits, all far
        # above the load (nothing refused: the cost of counting), and
        # for server-redis the limiter in a redis-server of its own.
        extra, bearer = quota_env(tmp, name)
        if name == "server-redis":
            rd, rport = start_redis(tmp)
            procs.append(rd)
            extra["REDIS_URL"] = f"redis://127.0.0.1:{rport}/0"
    s, port = start_server(tmp, f"http://{CONTENDER_HOSTS.get(name, '127.0.0.1')}:{mport}/v1",
                           workers, name, extra)
    if name == "server-v1":  # OpenAI's route: nginx's body and [DONE]
        target = {"port": port, "path": "/v1/chat/completions", "openai": True,
                  "auth": False, "lgflags": ["--openai-body", "--allow-done"]}
    elif bearer:
        target = {"port": port, "path": "/api/chat", "openai": False, "auth": True,
                  "bearer": bearer, "lgflags": ["-H", f"Authorization: Bearer {bearer}"]}
    else:
        target = {"port": port, "path": "/api/chat", "openai": False, "auth": False,
                  "lgflags": []}
    return target, [s.pid], s.stop


# Scenarios whose result is a ratio to nginx under load that the whole machine
# shares: run in rounds, every contender once per round in a rotating order,
# all of them started beforehand, so that a noisy minute hits every contender
# alike; the report gives every round and the median of the per-round ratios.
# Every round of S1 runs before the first of S2, and S2's before S3's: the
# two runs of a ratio are at most one scenario's turn apart (S1: about a
# minute), not a whole round's S1+S2+S3 (about five), and no S1 or S2 runs
# after an S3. An S3-4000 leaves thousands of closed and idle connections on
# the machine for a minute or more, and the S1 right after it ran 20% slower,
# nginx's as the server's (2026-12-01, session 10: nginx alone 22.6k req/s
# before an S3-4000 and 17.9k after; the server 21.3k and 17.1k), so
# whichever contender came first after an S3 lost a round.
PAIRED = ("S1", "S2", "S3")


def schedule(names, scenarios, rounds):
    """The paired runs in order, as (scenario, round, contender): scenario by
    scenario in PAIRED's order, each in `rounds` rounds of every contender,
    the order rotating by one from round to round."""
    order = [sc for sc in PAIRED if sc in scenarios]
    runs = []
    for sc in order:
        for rnd in range(rounds):
            k = rnd % max(1, len(names))
            runs += [(sc, rnd, name) for name in names[k:] + names[:k]]
    return runs


def raise_fd_limit():
    """S4 holds 10,000 streams: one process (server-w1) needs a descriptor
    for each client and each upstream connection, more than a hard limit of
    20,000 leaves it (the server caps MAX_CONNECTIONS at (limit - 128) / 2
    and answers 503 beyond). Root may raise the hard limit; the contenders
    inherit it."""
    import resource
    want = 65536
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return
        except (ValueError, OSError):
            log(f"bench: cannot raise the descriptor limit above {hard}: "
                f"server-w1's S4 is capped at ({hard} - 128) / 2 streams")
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main_bench():
    cfg = config()
    raise_fd_limit()
    quick = os.environ.get("BENCH_QUICK") == "1"
    contenders = os.environ.get(
        "BENCH_CONTENDERS", "mock,nginx,server-w1,server,server-v1,server-limits").split(",")
    scen = os.environ.get("BENCH_SCENARIOS", "S1,S2,S3,S4,S5,S6").split(",")
    ncpu = os.cpu_count() or 1
    started = datetime.datetime.now()
    m = machine()
    tmp = tempfile.mkdtemp(prefix="zju-bench-")
    os.chmod(tmp, 0o755)
    make_cert(tmp)
    results = []
    MOCK_WORKERS[0] = cfg["mock_workers"]
    mock, mport = start_mock(tmp, cfg)
    procs = [mock]
    try:
        paired = [s for s in scen if s in PAIRED]
        if paired:
            live = {}
            try:
                for name in contenders:
                    c = start_contender(name, tmp, mock, mport, procs)
                    if c:
                        live[name] = c
                for sc, rnd, name in schedule(list(live), paired, cfg["rounds"]):
                    log(f"bench: round {rnd + 1}/{cfg['rounds']}: {sc} {name}")
                    target, roots, _ = live[name]
                    run_contender(name, target, roots, [mock.pid], mport, cfg, [sc], results,
                                  ncpu, rnd)
            finally:
                for _, _, stop in live.values():
                    stop()
        rest = [s for s in scen if s not in PAIRED]
        for name in contenders if any(s in rest for s in ("S2", "S4", "S5")) else []:
            log(f"bench: contender {name}")
            c = start_contender(name, tmp, mock, mport, procs)
            if not c:
                continue
            target, roots, stop = c
            try:
                run_contender(name, target, roots, [mock.pid], mport, cfg, rest, results,
                              ncpu)
            finally:
                stop()
        if "S6" in scen and os.access(SERVER, os.X_OK):
            log("bench: S6 (TLS upstream)")
            ng, nport, tport = start_nginx(tmp, mport, workers=1)
            try:
                run_s6(tmp, cfg, mock, nport, tport, ng.tport_relay, results)
            finally:
                ng.stop()
    finally:
        for p in procs:
            p.stop()
    text = report(results, cfg, m, started, quick)
    print(text)
    outdir = os.path.join(ROOT, "bench", "results")
    os.makedirs(outdir, exist_ok=True)
    suffix = ("-quick" if quick else "") + (
        "-" + os.environ["BENCH_TAG"] if os.environ.get("BENCH_TAG") else "")
    path = os.path.join(outdir, f"{started:%Y-%m-%d}-{m['host']}{suffix}.md")
    with open(path, "w") as f:
        f.write(text)
    with open(os.path.join(tmp, "results.json"), "w") as f:
        json.dump(results, f)
    log(f"bench: report written to {path}; raw results and logs in {tmp}")
    return 0


def main_smoke():
    """A few seconds of load against the mock and the server: every stream
    must pass its checks, and a stream broken on purpose must be caught."""
    cfg = dict(FULL, mock_workers=1)
    tmp = tempfile.mkdtemp(prefix="zju-bench-smoke-")
    mock, mport = start_mock(tmp, cfg)
    bad = []
    model = model_with(5, 10)
    try:
        body = {"model": model, "messages": [{"role": "user", "content": "x"}], "stream": True}
        n = count_events(mport, "/v1/chat/completions", body,
                         {"Authorization": f"Bearer {KEY}"})
        direct = {"port": mport, "path": "/v1/chat/completions",
                  "lgflags": ["--openai-body", "--allow-done", "-H",
                              f"Authorization: Bearer {KEY}"]}
        common = ["--model", model, "--expect-events", str(n), "-c", "8", "-d", "3",
                  "--timeout", "10"]
        r = loadgen(direct, "smoke-mock", common, 30)
        print(json.dumps(r))
        if r.get("rc") != 0 or r.get("completed", 0) == 0:
            bad.append("mock: streams failed their checks")
        # The checks must be able to fail: a stream cut after 2 events, one
        # with [DONE] where none is allowed, one event too many expected.
        for label, args in (
                ("smoke-broken", ["--model", model_with(5, 10) + ",fault=drop_mid,after=2",
                                  "--expect-events", str(n)]),
                ("smoke-done", ["--model", model, "--expect-events", str(n)]),
                ("smoke-count", ["--model", model, "--expect-events", str(n + 1)])):
            t = dict(direct)
            if label == "smoke-done":
                t["lgflags"] = ["--openai-body", "-H", f"Authorization: Bearer {KEY}"]
            r = loadgen(t, label, args + ["-c", "2", "-n", "4", "--timeout", "10"], 30)
            print(json.dumps(r))
            if r.get("rc") != 1 or r.get("failed", 0) != 4:
                bad.append(f"{label}: a broken stream was not caught")
        if os.access(SERVER, os.X_OK):
            s, sport = start_server(tmp, f"http://127.0.0.1:{mport}/v1", 1, "server-smoke")
            try:
                r = loadgen({"port": sport, "path": "/api/chat", "lgflags": []},
                            "smoke-server", common, 30)
                print(json.dumps(r))
                if r.get("rc") != 0 or r.get("completed", 0) == 0:
                    bad.append("server: streams failed their checks")
            finally:
                s.stop()
        else:
            print(f"smoke: {SERVER} not built: server part skipped")
    finally:
        mock.stop()
    for b in bad:
        print("smoke FAILED: " + b)
    print("smoke: " + ("ok" if not bad else "FAILED") + f" (logs in {tmp})")
    if not bad:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if bad else 0


def main_verdicts(path):
    """The verdicts of a past run again, from its results.json, by this file's
    rules (run with the same BENCH_* sizes as the run)."""
    with open(path) as f:
        results = json.load(f)
    print("\n".join(verdicts(results, config()) or ["- (no server run)"]))
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--verdicts"] and len(args) == 2:
        sys.exit(main_verdicts(args[1]))
    sys.exit(main_smoke() if "--smoke" in args else main_bench())
