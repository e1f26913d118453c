"""The server as deployed: directly, behind the smallest nginx reverse proxy
(nginx's defaults: HTTP/1.0 and Connection: close upstream, response
buffering on) and behind docs/deploy/nginx.conf itself (TLS, kept-alive
HTTP/1.1 upstream, no buffering); with 1 and 2 workers. Through each front:
clients speaking HTTP/1.1 keep-alive, HTTP/1.1 with Connection: close and
HTTP/1.0; bodies of 1 KB, 17 KB, 64 KB and 900 KB (MAX_BODY_BYTES is 1 MiB);
stream and non-stream; one client after another (on one connection for
keep-alive, which must stay open) and 8 at once (3 rounds, all eight
size/stream mixes in flight together).

Every answer is checked: status 200; non-stream, the mock's chat.completion
with its content and a prompt_tokens that says the mock got the whole
user_content; stream, strict SSE framing, every event, the final one, a clean
end. Sequential requests also compare the user_content the mock received,
byte for byte. A slow stream's first event must reach the client long before
its last one is produced (nginx does not hold events back). nginx's error log
must stay free of errors, and the recommended front must reuse its upstream
connections. Beside the matrix, for the recommended front: its body limit
and MAX_BODY_BYTES agree to the byte, HTTP/2 (curl, as browsers) streams and
carries 900 KB, and with TRUSTED_PROXIES the access log names the client.
DeployedV1: the OpenAI-compatible routes with an access token (chat, stream
with [DONE], models, usage, a 401) and a token's rpm (429, Retry-After,
OpenAI's shape) from the same three client modes directly, through nginx's
defaults and through the recommended front; with the server down, that
front's own 502 (and 413; 504 with proxy_read_timeout templated down) in
the route's shape with CORS headers for the site's origin only.

One mock for the module; one server and one nginx per (front, workers). A
failing combination reports every failed request (front, workers, client
mode, size, stream, sequential or concurrent) with the server's log tail and
nginx's errors, not just the first one."""

import concurrent.futures
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
import unittest

import mockctl
import nginxctl
from proctools import free_port
from serverctl import DEFAULT_MODEL, Mock, Server, have_binaries, model, record, split_frames

SIZES = (1024, 17 * 1024, 64 * 1024, 900 * 1024)  # whole request body, bytes
MODES = ("keep-alive", "close", "http/1.0")
CONCURRENCY = 8
ROUNDS = 3  # requests per concurrent client: 24 per client mode, 6 of them 900 KB
EVENTS = 2  # content deltas per answer: short answers keep the matrix fast
ANSWER = "你好，"  # the mock's first EVENTS deltas (mock/content.c)
FILLER = "浙江大学 ZJU chat 🌍 求是创新。"  # 1-, 3- and 4-byte UTF-8
TIMEOUT = 10  # per request; a 900 KB one takes under 1 s here even loaded
MAX_FAILURES = 8  # per combination: then the rest is skipped (a hang costs TIMEOUT each)

# Slow stream: EVENTS_SLOW events DELAY_MS apart, so the last one is produced
# about (EVENTS_SLOW - 1) * DELAY_MS after the first.
EVENTS_SLOW, DELAY_MS = 5, 300
SLOW_ANSWER = "你好，世界 🌍!"


def make_body(size, stream, m):
    """(request body of exactly size bytes, its user_content)."""

    def encode(content):
        payload = {"user_content": content, "model": m, "stream": stream}
        return json.dumps(payload, ensure_ascii=False).encode()

    need = size - len(encode(""))
    text = (FILLER * (need // len(FILLER.encode()) + 1)).encode()[:need].decode("utf-8", "ignore")
    content = text + "a" * (need - len(text.encode()))
    body = encode(content)
    assert len(body) == size, (len(body), size)
    return body, content


def prompt_tokens(content):
    """What the mock counts for one user message (mock/chat.c)."""
    return 4 + (len(content.encode()) + 3) // 4


class Front:
    """Where clients connect: the server itself or an nginx before it."""

    def __init__(self, name, port, tls_context=None):
        self.name = name
        self.port = port
        self.tls_context = tls_context

    def connect(self, mode):
        if self.tls_context:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=TIMEOUT, context=self.tls_context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        if mode == "http/1.0":
            conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"  # http.client's own switch
        return conn


class Outcome:
    """One request as the client saw it."""

    def __init__(self):
        self.status = None
        self.headers = []
        self.chunks = []  # (seconds since sent, bytes)
        self.error = None
        self.kept = None  # the connection stayed open for the next request

    @property
    def body(self):
        return b"".join(c for _, c in self.chunks)

    def header(self, name):
        return next((v for k, v in self.headers if k.lower() == name), None)


def send(conn, mode, body):
    """Sends one POST /api/chat on conn and reads the whole answer."""
    out = Outcome()
    headers = {"Content-Type": "application/json"}
    if mode == "close":
        headers["Connection"] = "close"
    t0 = time.monotonic()
    try:
        conn.request("POST", "/api/chat", body=body, headers=headers)
        r = conn.getresponse()
        out.status, out.headers = r.status, r.getheaders()
        while True:
            data = r.read1(65536)
            if not data:
                break
            out.chunks.append((time.monotonic() - t0, data))
        out.kept = not r.will_close
        r.close()  # read1 leaves a finished Content-Length answer open
    except (OSError, http.client.HTTPException) as e:
        out.error = e
        conn.close()
    record(b"%d " % (out.status or 0) + out.body)
    return out


def check(out, stream, content, answer=ANSWER):
    """What is wrong with an answer ('' if nothing)."""
    if out.error is not None:
        return f"{type(out.error).__name__}: {out.error} (status {out.status}, {len(out.body)} bytes read)"
    if out.status != 200:
        return f"status {out.status}: {out.body[:300]!r}"
    want_tokens = prompt_tokens(content)
    try:
        if not stream:
            doc = json.loads(out.body)
            if doc.get("object") != "chat.completion":
                return f"not a chat.completion: {out.body[:300]!r}"
            if doc["choices"][0]["message"]["content"] != answer:
                return f"content {doc['choices'][0]['message']['content']!r}"
            if doc["usage"]["prompt_tokens"] != want_tokens:
                return f"mock counted {doc['usage']['prompt_tokens']} prompt tokens, not {want_tokens}"
            return ""
        if not (out.header("content-type") or "").startswith("text/event-stream"):
            return f"content-type {out.header('content-type')!r}"
        events = [json.loads(v) for kind, v in split_frames(out.body) if kind == "data"]
        if any("error" in e for e in events):
            return f"error event: {out.body[-300:]!r}"
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
        if text != answer:
            return f"streamed content {text!r} ({len(events)} events)"
        last = events[-1]
        if last["choices"][0].get("finish_reason") != "stop" or last["usage"]["prompt_tokens"] != want_tokens:
            return f"last event {json.dumps(last)[:300]}"
    except (AssertionError, ValueError, KeyError, IndexError, TypeError) as e:
        return f"{type(e).__name__}: {e}; body {out.body[:200]!r}...{out.body[-200:]!r}"
    return ""


def check_slow(out, content):
    """check() for the slow stream, and that it came incrementally: buffered,
    everything arrives at once; streamed, the first event comes about the
    whole span of the stream before its end."""
    problem = check(out, True, content, SLOW_ANSWER)
    if problem:
        return problem
    span = (EVENTS_SLOW - 1) * DELAY_MS / 1000.0
    t_first = next(t for t, c in out.chunks if b"data: " in c)
    t_last = out.chunks[-1][0]
    if t_last - t_first < span / 2:
        return (f"not incremental: first event at {t_first:.2f}s, end at {t_last:.2f}s, "
                f"{len(out.chunks)} reads (events {DELAY_MS} ms apart)")
    return ""


def curl_http2(port, body, cert, tmp, path="/api/chat", headers=()):
    """POST /api/chat over HTTP/2 with curl (what browsers speak to the
    recommended front; Python's stdlib has no HTTP/2), read as it comes."""
    body_path = os.path.join(tmp, "body.json")
    with open(body_path, "wb") as f:
        f.write(body)
    head = os.path.join(tmp, "headers.txt")
    cmd = ["curl", "-sS", "-N", "--http2", "--cacert", cert, "--max-time", str(TIMEOUT), "-D", head,
           "-H", "Content-Type: application/json", "--data-binary", "@" + body_path,
           *[arg for h in headers for arg in ("-H", h)], f"https://127.0.0.1:{port}{path}"]
    out = Outcome()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    while True:
        data = os.read(proc.stdout.fileno(), 65536)
        if not data:
            break
        out.chunks.append((time.monotonic() - t0, data))
    err = proc.communicate(timeout=TIMEOUT)[1]
    if proc.returncode != 0:
        out.error = RuntimeError(f"curl exited {proc.returncode}: {err.decode(errors='replace')}")
    with open(head, encoding="latin-1") as f:
        lines = [l.strip() for l in f if l.strip()]
    if lines:
        version, status = lines[0].split()[:2]
        out.status = int(status) if version == "HTTP/2" else f"{status} over {version}, not HTTP/2"
        out.headers = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:] if ":" in l]
    record(b"%s " % str(out.status).encode() + out.body)
    return out


class DeploymentMatrix(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not have_binaries():
            raise RuntimeError("binaries missing: run make asan")
        if not nginxctl.have_nginx():
            raise RuntimeError("nginx missing: make deps installs nginx-light")
        cls.tmp = tempfile.mkdtemp(prefix="zju-deploy-")
        cls.cert, cls.key = mockctl.make_self_signed_cert(cls.tmp)
        cls.tls = ssl.create_default_context(cafile=cls.cert)
        cls.mock = Mock().start()
        cls.bodies = {}
        for stream in (False, True):
            for size in SIZES:
                cls.bodies[size, stream] = make_body(size, stream, model(events=EVENTS, reasoning=0))
        cls.slow_body = make_body(1024, True, model(events=EVENTS_SLOW, reasoning=0, delay=DELAY_MS))

    @classmethod
    def tearDownClass(cls):
        try:
            cls.mock.stop()
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # ------------------------------------------------------------ fronts

    def start(self, front, workers, env=None):
        """Starts the server (and nginx) for one combination; returns a Front."""
        self.server = Server(self.mock.base_url, workers=workers, env=env).start()
        self.addCleanup(self.server.kill)
        self.nginx = None
        if front == "direct":
            return Front(front, self.server.port)
        if front == "minimal":
            port = free_port()
            self.nginx = nginxctl.Nginx(nginxctl.minimal_site(port, self.server.port), [port]).start()
            self.addCleanup(self.nginx.stop)
            return Front(front, port)
        tls_port, http_port = free_port(), free_port()
        site = nginxctl.recommended_site(tls_port, http_port, self.server.port, self.cert, self.key)
        self.nginx = nginxctl.Nginx(site, [tls_port, http_port]).start()
        self.addCleanup(self.nginx.stop)
        return Front(front, tls_port, self.tls)

    # ------------------------------------------------------------ runs

    def sequential(self, front, mode, failures, label):
        """Every size and stream mode, one after another (one connection for
        keep-alive); compares what the mock received, byte for byte."""
        conn = front.connect(mode)
        try:
            first_sock = None
            for i, (size, stream) in enumerate((sz, st) for st in (False, True) for sz in SIZES):
                if len(failures) >= MAX_FAILURES:
                    return
                body, content = self.bodies[size, stream]
                where = f"{label} mode={mode} size={size} stream={stream} sequential"
                out = send(conn, mode, body)
                problem = check(out, stream, content)
                if not problem:
                    got = self.mock.last_body()["messages"][-1]["content"]
                    if got != content:
                        problem = f"mock received user_content of {len(got)} chars, sent {len(content)}"
                if not problem and mode == "keep-alive":
                    if not out.kept:
                        problem = "keep-alive connection not kept"
                    elif i == 0:
                        first_sock = conn.sock
                    elif conn.sock is not first_sock:
                        problem = "keep-alive connection replaced"
                if problem:
                    failures.append(f"{where}: {problem}")
                if mode != "keep-alive" or out.error:
                    conn.close()
        finally:
            conn.close()

    def concurrent(self, front, mode, failures, label):
        """CONCURRENCY clients at once, ROUNDS requests each (on one
        connection for keep-alive): client k starts at the k-th size and
        stream mode and moves one on per round, so every round has all
        eight mixes in flight together."""
        combos = [(sz, st) for st in (False, True) for sz in SIZES]

        def client(k):
            conn = front.connect(mode)
            try:
                for j in range(ROUNDS):
                    if len(failures) >= MAX_FAILURES:
                        return
                    size, stream = combos[(j + k) % len(combos)]
                    body, content = self.bodies[size, stream]
                    out = send(conn, mode, body)
                    problem = check(out, stream, content)
                    if problem:  # list.append is atomic
                        failures.append(f"{label} mode={mode} size={size} stream={stream} client {k} of "
                                        f"{CONCURRENCY}, round {j + 1}: {problem}")
                    if mode != "keep-alive" or out.error:
                        conn.close()
            finally:
                conn.close()

        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(client, range(CONCURRENCY)))

    def slow_streams(self, front, failures, label):
        """One slow stream per client mode, at once: the first event must
        arrive long before the last one is produced."""
        body, content = self.slow_body

        def client(mode):
            conn = front.connect(mode)
            try:
                out = send(conn, mode, body)
            finally:
                conn.close()
            problem = check_slow(out, content)
            return f"{label} mode={mode} slow stream: {problem}" if problem else ""

        with concurrent.futures.ThreadPoolExecutor(len(MODES)) as pool:
            failures.extend(p for p in pool.map(client, MODES) if p)

    def hang_up(self, front, failures, label):
        """A browser tab closed mid-stream: the upstream call must end at
        once, through nginx too (it costs tokens until it does)."""
        body, _ = make_body(1024, True, model(events=100, reasoning=0, delay=DELAY_MS))
        conn = front.connect("keep-alive")
        try:
            conn.request("POST", "/api/chat", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            first = r.read1(65536)
        except (OSError, http.client.HTTPException) as e:
            failures.append(f"{label} hang-up: {type(e).__name__}: {e}")
            return
        finally:
            conn.close()
        if r.status != 200 or b"data: " not in first:
            failures.append(f"{label} hang-up: status {r.status}, first read {first[:200]!r}")
            return
        t0 = time.monotonic()
        left = self.mock.wait_stat("streams_active", lambda n: n == 0, timeout=3)["streams_active"]
        if left:
            failures.append(f"{label} hang-up: the upstream stream still open {time.monotonic() - t0:.1f}s "
                            "after the client left")

    def run_combination(self, front_name, workers):
        label = f"front={front_name} workers={workers}"
        t0 = time.monotonic()
        front = self.start(front_name, workers)
        failures = []
        self.slow_streams(front, failures, label)
        self.hang_up(front, failures, label)
        for mode in MODES:
            self.sequential(front, mode, failures, label)
            self.concurrent(front, mode, failures, label)
        if self.nginx is not None:
            failures += [f"{label}: nginx: {line}" for line in self.nginx.problems()]
        peers = re.findall(r" access (\S+) \"POST /api/chat\"", self.server.log())
        if front_name == "recommended":
            # Kept-alive upstream: far fewer server connections than requests.
            if len(set(peers)) * 4 > len(peers):
                failures.append(f"{label}: {len(set(peers))} upstream connections for {len(peers)} requests")
        took = time.monotonic() - t0
        if failures:
            log = self.server.log()[-3000:]
            nginx_log = self.nginx.log(2000) if self.nginx else ""
            more = " (the rest skipped)" if len(failures) >= MAX_FAILURES else ""
            self.fail(f"{len(failures)} failures{more} in {took:.1f}s:\n" + "\n".join(failures)
                      + f"\n--- server log tail:\n{log}\n--- nginx log tail:\n{nginx_log}")
        self.server.stop()  # exit 0, no sanitizer report, no key in the log
        print(f"[{label}: {took:.1f}s, {len(peers)} requests on {len(set(peers))} server connections] ",
              end="", flush=True)

    def test_direct_one_worker(self):
        self.run_combination("direct", 1)

    def test_direct_two_workers(self):
        self.run_combination("direct", 2)

    def test_nginx_minimal_one_worker(self):
        self.run_combination("minimal", 1)

    def test_nginx_minimal_two_workers(self):
        self.run_combination("minimal", 2)

    def test_nginx_recommended_one_worker(self):
        self.run_combination("recommended", 1)

    def test_nginx_recommended_two_workers(self):
        self.run_combination("recommended", 2)

    def test_nginx_recommended_body_limit_agrees_with_server(self):
        """client_max_body_size and MAX_BODY_BYTES are the same limit: a body
        of exactly 1 MiB is answered, one byte more is refused with a JSON
        413, by nginx and by the server alike."""
        self.assertEqual(nginxctl.deploy_setting("client_max_body_size"), "1m")
        front = self.start("recommended", 1)
        direct = Front("direct", self.server.port)
        at_limit, content = make_body(1 << 20, False, model(events=EVENTS, reasoning=0))
        over = make_body((1 << 20) + 1, False, model(events=EVENTS, reasoning=0))[0]
        for f in (front, direct):
            conn = f.connect("close")
            out = send(conn, "close", at_limit)
            conn.close()
            self.assertEqual(check(out, False, content), "", f.name)
            conn = f.connect("close")
            out = send(conn, "close", over)
            conn.close()
            self.assertEqual(out.status, 413, f"{f.name}: {out.body[:300]!r}")
            self.assertIsInstance(json.loads(out.body).get("error"), str, f.name)
        self.server.stop()

    def test_nginx_recommended_names_the_client(self):
        """The forwarding headers of docs/deploy/nginx.conf with the server's
        TRUSTED_PROXIES: the access log names the client (here 127.0.0.2, a
        second loopback address), not nginx and not an X-Forwarded-For the
        client made up."""
        front = self.start("recommended", 1, env={"TRUSTED_PROXIES": "127.0.0.1"})
        body, content = self.bodies[1024, False]
        conn = http.client.HTTPSConnection("127.0.0.1", front.port, timeout=TIMEOUT, context=self.tls,
                                           source_address=("127.0.0.2", 0))
        conn.request("POST", "/api/chat", body=body,
                     headers={"Content-Type": "application/json", "X-Forwarded-For": "203.0.113.9"})
        r = conn.getresponse()
        self.assertEqual(r.status, 200, r.read()[:300])
        r.read()
        conn.close()
        self.assertTrue(self.server.wait_log('access 127.0.0.2 "POST /api/chat" 200'), self.server.log()[-2000:])
        self.server.stop()

    def test_nginx_recommended_http2(self):
        """Browsers speak HTTP/2 to the recommended front: a slow stream
        still comes event by event, and a 900 KB body arrives whole."""
        front = self.start("recommended", 2)
        body, content = self.slow_body
        self.assertEqual(check_slow(curl_http2(front.port, body, self.cert, self.tmp), content), "")
        body, content = self.bodies[900 * 1024, False]
        self.assertEqual(check(curl_http2(front.port, body, self.cert, self.tmp), False, content), "")
        self.assertEqual(self.nginx.problems(), [])
        self.server.stop()


V1_TOKEN = "tok-matrix-v1-4d2b8f6a0c1e3a5b7d9f"
BROWSER_TOKEN = "tok-matrix-browser-8c6a4e2f0b1d3c5e7a9f"  # rpm=1
CHROMIUM = shutil.which("chromium")

# A page of the site's origin: it sends CALLS with fetch() as a frontend
# does (cross-origin, so the browser enforces CORS and preflights), and
# writes what it could read of each answer into #out.
BROWSER_PAGE = """<!doctype html><html><body><pre id="out">pending</pre><script>
(async () => {
  const results = [];
  for (const c of CALLS) {
    try {
      const r = await fetch(c.url, { method: 'POST', headers: c.headers, body: c.body });
      results.push({ status: r.status, retryAfter: r.headers.get('retry-after'), body: await r.text() });
    } catch (e) {
      results.push({ error: String(e) });
    }
  }
  document.getElementById('out').textContent = JSON.stringify(results);
})();
</script></body></html>"""


def browser_fetches(calls, cert, key, tmp):
    """Runs fetch() calls in headless Chromium (Debian's) from a page of
    https://chat.example.edu.cn (the origin docs/deploy/nginx.conf names,
    served here over TLS with our certificate; --host-resolver-rules maps
    the name). Returns what the page could read of each answer:
    {status, retryAfter, body} or {error} (CORS refused, network error)."""
    import html
    import http.server
    import threading

    page = BROWSER_PAGE.replace("CALLS", json.dumps(calls)).encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    try:
        r = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors",
             f"--user-data-dir={profile}", "--virtual-time-budget=20000",
             f"--host-resolver-rules=MAP chat.example.edu.cn 127.0.0.1:{httpd.server_address[1]}",
             "--dump-dom", SITE_ORIGIN + "/"],
            capture_output=True, text=True, timeout=90)
    finally:
        httpd.shutdown()
        httpd.server_close()
    m = re.search(r'<pre id="out">(.*?)</pre>', r.stdout, re.S)
    if not m or m.group(1) == "pending":
        raise AssertionError(f"the page did not finish: {r.stdout[-500:]!r} {r.stderr[-1000:]}")
    results = json.loads(html.unescape(m.group(1)))
    record(json.dumps(results).encode())
    return results
SITE_ORIGIN = "https://chat.example.edu.cn"  # the origin docs/deploy/nginx.conf names


def v1_request(conn, mode, method, path, payload=None, headers=None):
    """One request of any route on conn as a client of `mode` sends it."""
    out = Outcome()
    h = dict(headers or {})
    body = None
    if payload is not None:
        body = json.dumps(payload).encode()
        h["Content-Type"] = "application/json"
    if mode == "close":
        h["Connection"] = "close"
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        out.status, out.headers = r.status, r.getheaders()
        while True:
            data = r.read1(65536)
            if not data:
                break
            out.chunks.append((time.monotonic() - t0, data))
        out.kept = not r.will_close
        r.close()
    except (OSError, http.client.HTTPException) as e:
        out.error = e
        conn.close()
    record(b"%d " % (out.status or 0) + out.body)
    return out


def check_v1(out, what):
    """What is wrong with a /v1 answer ('' if nothing): what is
    'completion', 'stream', 'models', 'usage' or 'unauthorized'."""
    if out.error is not None:
        return f"{type(out.error).__name__}: {out.error} (status {out.status}, {len(out.body)} bytes read)"
    want = 401 if what == "unauthorized" else 200
    if out.status != want:
        return f"status {out.status}: {out.body[:300]!r}"
    try:
        if what == "stream":
            frames = [v for kind, v in split_frames(out.body) if kind == "data"]
            if frames[-1:] != [b"[DONE]"] or frames.count(b"[DONE]") != 1:
                return f"no [DONE] at the end: {out.body[-300:]!r}"
            events = [json.loads(v) for v in frames[:-1]]
            text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
            if text != ANSWER or events[-1]["choices"][0].get("finish_reason") != "stop":
                return f"streamed content {text!r}, last event {json.dumps(events[-1])[:200]}"
            return ""
        doc = json.loads(out.body)
        if what == "completion" and doc["choices"][0]["message"]["content"] != ANSWER:
            return f"content {doc['choices'][0]['message']['content']!r}"
        if what == "models" and DEFAULT_MODEL not in [m["id"] for m in doc["data"]]:
            return f"models {out.body[:300]!r}"
        if what == "usage" and (doc["object"], doc["token"]) != ("usage", "v1"):
            return f"usage {out.body[:300]!r}"
        if what == "unauthorized":
            if out.header("www-authenticate") != "Bearer" or not doc["error"]["message"]:
                return f"401 without WWW-Authenticate: Bearer or OpenAI's error: {out.headers} {out.body[:300]!r}"
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return f"{type(e).__name__}: {e}; body {out.body[:300]!r}"
    return ""


class DeployedV1(unittest.TestCase):
    """The OpenAI-compatible routes with access tokens and their limits,
    directly, through nginx's defaults (minimal_site) and through
    docs/deploy/nginx.conf (TLS), from HTTP/1.1 keep-alive, Connection:
    close and HTTP/1.0 clients; and nginx's own errors when the server is
    down. One server (two workers, ACCESS_TOKENS_FILE, CORS_ORIGINS as the
    deploy README says) behind both nginx fronts at once."""

    @classmethod
    def setUpClass(cls):
        if not have_binaries():
            raise RuntimeError("binaries missing: run make asan")
        if not nginxctl.have_nginx():
            raise RuntimeError("nginx missing: make deps installs nginx-light")
        cls.tmp = tempfile.mkdtemp(prefix="zju-deploy-v1-")
        cls.cert, cls.key = mockctl.make_self_signed_cert(cls.tmp)
        cls.tls = ssl.create_default_context(cafile=cls.cert)
        tokens = os.path.join(cls.tmp, "tokens")
        with open(tokens, "w") as f:
            f.write(f"{V1_TOKEN} name=v1\n")
            for front in ("direct", "minimal", "recommended"):
                f.write(f"tok-matrix-rpm-{front}-0123456789abcdef name=rpm-{front} rpm=3\n")
            f.write(f"{BROWSER_TOKEN} name=browser rpm=1\n")
        cls.mock = Mock().start()
        cls.server = Server(cls.mock.base_url, workers=2, env={
            "ACCESS_TOKENS_FILE": tokens, "TRUSTED_PROXIES": "127.0.0.1", "CORS_ORIGINS": SITE_ORIGIN}).start()
        cls.nginxes = []
        minimal_port = free_port()
        cls.nginxes.append(nginxctl.Nginx(nginxctl.minimal_site(minimal_port, cls.server.port),
                                          [minimal_port]).start())
        cls.tls_port, cls.http_port = free_port(), free_port()
        site = nginxctl.recommended_site(cls.tls_port, cls.http_port, cls.server.port, cls.cert, cls.key)
        cls.nginxes.append(nginxctl.Nginx(site, [cls.tls_port, cls.http_port]).start())
        cls.fronts = [Front("direct", cls.server.port), Front("minimal", minimal_port),
                      Front("recommended", cls.tls_port, cls.tls)]

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            for n in cls.nginxes:
                n.stop()
            cls.mock.stop()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_v1_with_a_token_from_every_client_through_every_front(self):
        """Chat (stream and not), models, usage and a 401, from each client
        mode, on one connection in a row where the mode keeps it."""
        auth = {"Authorization": "Bearer " + V1_TOKEN}
        chat_body = {"model": model(events=EVENTS, reasoning=0), "messages": [{"role": "user", "content": "hi"}]}
        steps = (("completion", "POST", "/v1/chat/completions", chat_body, auth),
                 ("stream", "POST", "/v1/chat/completions", {**chat_body, "stream": True}, auth),
                 ("models", "GET", "/v1/models", None, auth),
                 ("usage", "GET", "/v1/usage", None, auth),
                 ("unauthorized", "POST", "/v1/chat/completions", chat_body, {}),
                 ("completion", "POST", "/v1/chat/completions", chat_body, auth))
        failures = []
        for front in self.fronts:
            for mode in MODES:
                conn = front.connect(mode)
                first_sock = None
                for i, (what, method, path, payload, headers) in enumerate(steps):
                    out = v1_request(conn, mode, method, path, payload, headers)
                    problem = check_v1(out, what)
                    if not problem and mode == "keep-alive":
                        if i == 0:
                            first_sock = conn.sock
                        if not out.kept or conn.sock is not first_sock:
                            problem = "keep-alive connection not kept"
                    if problem:
                        failures.append(f"front={front.name} mode={mode} {what} ({method} {path}): {problem}")
                    if mode != "keep-alive" or out.error:
                        conn.close()
                conn.close()
        for n in self.nginxes:
            failures += [f"nginx: {line}" for line in n.problems()]
        self.assertEqual(failures, [], "\n" + "\n".join(failures) + "\n--- server log tail:\n"
                         + self.server.log()[-2000:])

    def test_token_rpm_through_every_front(self):
        """rpm=3: three answers, then 429 with Retry-After in OpenAI's shape,
        whichever front and client mode carries each request; a page of the
        site's origin may read that Retry-After (CORS exposes it)."""
        body = {"model": model(events=EVENTS, reasoning=0), "messages": [{"role": "user", "content": "hi"}]}
        for front in self.fronts:
            auth = {"Authorization": f"Bearer tok-matrix-rpm-{front.name}-0123456789abcdef", "Origin": SITE_ORIGIN}
            outs = []
            for i in range(5):
                mode = MODES[i % len(MODES)]
                conn = front.connect(mode)
                outs.append(v1_request(conn, mode, "POST", "/v1/chat/completions", body, auth))
                conn.close()
            self.assertEqual([o.status for o in outs], [200] * 3 + [429] * 2,
                             f"{front.name}: {[o.body[:200] for o in outs]}")
            for o in outs[3:]:
                # A page of another origin reads Retry-After only if the
                # answer exposes it (not a CORS-safelisted header).
                self.assertEqual(o.header("access-control-allow-origin"), SITE_ORIGIN, (front.name, o.headers))
                self.assertIn("retry-after", (o.header("access-control-expose-headers") or "").lower(),
                              (front.name, o.headers))
                retry = o.header("retry-after")
                self.assertTrue(retry and retry.isdigit() and 1 <= int(retry) <= 60, (front.name, o.headers))
                err = json.loads(o.body)["error"]
                self.assertEqual(err["code"], "rate_limited", (front.name, err))
                self.assertIn("3 requests per minute for this access token", err["message"])

    def test_chat_page_through_the_recommended_front(self):
        """The server's built-in chat page through docs/deploy/nginx.conf
        (TLS): the page and each asset it names arrive as the server sends
        them (its CSP kept), while /metrics stays unreachable from there.
        Fails on the old file, whose `location /` served /var/www/zju-chat."""
        def get(path):
            conn = http.client.HTTPSConnection("127.0.0.1", self.tls_port, timeout=TIMEOUT, context=self.tls)
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
            finally:
                conn.close()
        status, headers, body = get("/")
        self.assertEqual(status, 200, body[:300])
        self.assertTrue(headers.get("content-type", "").startswith("text/html"), headers)
        self.assertIn("script-src 'self'", headers.get("content-security-policy", ""), headers)
        assets = re.findall(rb'(?:src|href)="\.?/?(assets/[^"]+)"', body)
        self.assertGreaterEqual(len(assets), 2, body[:500])
        root = os.path.join(os.path.dirname(__file__), "..", "..", "web", "dist")
        for a in assets:
            status, headers, got = get("/" + a.decode())
            self.assertEqual(status, 200, a)
            with open(os.path.join(root, a.decode()), "rb") as f:
                self.assertEqual(got, f.read(), a)
        status, _, body = get("/metrics")
        self.assertEqual(status, 404, body[:300])
        self.assertNotIn(b"zju_", body)

    def test_v1_stream_over_http2(self):
        """/v1 as browsers reach the recommended front, over HTTP/2 (curl):
        a token's stream comes whole, ending with [DONE]."""
        body = json.dumps({"model": model(events=EVENTS, reasoning=0), "stream": True,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        out = curl_http2(self.tls_port, body, self.cert, self.tmp, "/v1/chat/completions",
                         ["Authorization: Bearer " + V1_TOKEN])
        self.assertEqual(check_v1(out, "stream"), "", out.body[-300:])

    def test_nginx_504_when_the_server_is_slow(self):
        """nginx's own 504 (the server silent past proxy_read_timeout, here
        templated down to 1 s; the upstream hangs before its headers): in
        the route's shape, with CORS headers for the site's origin."""
        tls_port, http_port = free_port(), free_port()
        site = nginxctl.recommended_site(tls_port, http_port, self.server.port, self.cert, self.key,
                                         read_timeout="1s")
        nginx = nginxctl.Nginx(site, [tls_port, http_port]).start()
        self.addCleanup(nginx.stop)
        front = Front("recommended-1s", tls_port, self.tls)
        auth = {"Authorization": "Bearer " + V1_TOKEN, "Origin": SITE_ORIGIN}
        hang = model(fault="hang_headers")
        before = self.mock.stats()["connections_closed_by_client"]
        for path, payload, shape in (
                ("/v1/chat/completions", {"model": hang, "messages": [{"role": "user", "content": "hi"}]}, dict),
                ("/api/chat", {"model": hang, "user_content": "hi"}, str)):
            conn = front.connect("close")
            out = v1_request(conn, "close", "POST", path, payload, auth)
            conn.close()
            self.assertEqual(out.status, 504, out.body[:300])
            self.assertEqual(out.header("access-control-allow-origin"), SITE_ORIGIN, out.headers)
            err = json.loads(out.body)["error"]
            self.assertIsInstance(err, shape, out.body)
            if shape is dict:
                self.assertEqual(err["code"], "gateway_timeout", err)
        # nginx gave up and closed: the server ends both upstream calls
        closed = self.mock.wait_stat("connections_closed_by_client", lambda n: n >= before + 2, timeout=5)
        self.assertGreaterEqual(closed["connections_closed_by_client"], before + 2, closed)

    @unittest.skipUnless(CHROMIUM, "chromium is not installed")
    def test_zz_browser_of_another_origin_reads_the_errors(self):
        """A real browser (headless Chromium) on the site's origin calling
        the recommended front cross-origin, as a frontend on its own host
        does: with the server up, it reads a 429's Retry-After (the server
        exposes it); with the server down, its POSTs (preflighted: a token
        and JSON) get through the preflight nginx answers itself and it
        reads nginx's 502, message and Retry-After. (zz: it stops the
        server; runs before ..._when_the_server_is_down, which needs it
        stopped too.)"""
        url = f"https://127.0.0.1:{self.tls_port}"
        headers = {"Content-Type": "application/json", "Authorization": "Bearer " + BROWSER_TOKEN}
        chat = json.dumps({"model": model(events=EVENTS, reasoning=0),
                           "messages": [{"role": "user", "content": "hi"}]})
        call = {"url": url + "/v1/chat/completions", "headers": headers, "body": chat}
        got = browser_fetches([call, call], self.cert, self.key, self.tmp)
        self.assertEqual([g.get("status") for g in got], [200, 429], got)
        self.assertTrue((got[1]["retryAfter"] or "").isdigit(), got)
        self.server.stop()
        got = browser_fetches([call, {"url": url + "/api/chat", "headers": headers,
                                      "body": json.dumps({"user_content": "hi"})}], self.cert, self.key, self.tmp)
        print(f"\n  Chromium on {SITE_ORIGIN}, the server down: {got}")
        self.assertEqual([(g.get("status"), g.get("retryAfter")) for g in got], [(502, "5"), (502, "5")], got)
        self.assertEqual(json.loads(got[0]["body"])["error"]["code"], "gateway_unavailable")
        self.assertEqual(json.loads(got[1]["body"])["error"], "the chat server is unavailable")

    def test_zz_nginx_errors_when_the_server_is_down(self):
        """The server gone: docs/deploy/nginx.conf answers its own 502 (and
        413) in the route's error shape, with CORS headers for the site's
        origin (a page of another origin can read it) and none for an origin
        not listed; plain HTTP still only redirects. (zz: runs last, it
        stops the server.)"""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=TIMEOUT)
        conn.request("GET", "/v1/models")
        r = conn.getresponse()
        r.read()
        conn.close()
        self.assertEqual((r.status, r.getheader("Location")), (301, "https://127.0.0.1/v1/models"))
        self.server.stop()
        front = self.fronts[2]
        auth = {"Authorization": "Bearer " + V1_TOKEN}
        for path, payload in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                              ("/api/chat", {"user_content": "hi"})):
            for origin, cors in ((SITE_ORIGIN, SITE_ORIGIN), ("https://elsewhere.example", None)):
                conn = front.connect("close")
                out = v1_request(conn, "close", "POST", path, payload, {**auth, "Origin": origin})
                conn.close()
                self.assertEqual(out.status, 502, out.body[:300])
                self.assertEqual(out.header("access-control-allow-origin"), cors, (path, origin, out.headers))
                self.assertEqual(out.header("vary"), "Origin", out.headers)
                self.assertEqual(out.header("retry-after"), "5", out.headers)
                if cors:
                    self.assertEqual(out.header("access-control-expose-headers"), "Retry-After", out.headers)
                self.assertIn("application/json", out.header("content-type"))
                err = json.loads(out.body)["error"]
                if path.startswith("/v1/"):
                    self.assertEqual((err["type"], err["code"]), ("server_error", "gateway_unavailable"), err)
                else:
                    self.assertIsInstance(err, str)
        # A body over the limit is nginx's too (413, before the server is
        # asked): the same shapes and CORS headers.
        for path, shape in (("/v1/chat/completions", dict), ("/api/chat", str)):
            conn = front.connect("close")
            out = v1_request(conn, "close", "POST", path, {"user_content": "a" * (1 << 20)},
                             {**auth, "Origin": SITE_ORIGIN})
            conn.close()
            self.assertEqual(out.status, 413, out.body[:300])
            self.assertEqual(out.header("access-control-allow-origin"), SITE_ORIGIN, out.headers)
            self.assertIsInstance(json.loads(out.body)["error"], shape, out.body)


if __name__ == "__main__":
    unittest.main()
