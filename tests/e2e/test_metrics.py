"""GET /metrics against the real server and the mock upstream: the registry
is in memory the workers share (src/server/metrics.c), so after N requests
spread over two workers every worker reports N; the text passes
`promtool check metrics` (Debian's prometheus package; skipped with the
reason when promtool is absent); the numbers follow what happened (time to
first byte and token, streams in flight, a client gone, an upstream retry,
rate limited requests, tokens by model); and only METRICS_ALLOW addresses
(the socket's peer, never a forwarded address) or a Bearer METRICS_TOKEN
get it, 403 in the seed's shape otherwise."""
import json
import os
import re
import shutil
import signal
import subprocess
import time
import unittest

import serverctl as sc

LINE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
ACCESS_RE = re.compile(r"\[(\d+)\] access (\S+) \"(\S+) (\S+)\" (\d+) ")
CHAT_200 = ("zju_http_requests_total", {"route": "/api/chat", "method": "POST", "status": "200"})


def get_metrics(port, host="127.0.0.1", headers=None):
    return sc.request(port, "GET", "/metrics", headers=headers, host=host)


def parse(text):
    """{(name, frozenset(labels)): value} of the samples of an exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(LABEL_RE.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, labels=None):
    return samples.get((name, frozenset((labels or {}).items())), 0.0)


def access(server):
    return [(int(m.group(1)), m.group(3), m.group(4), int(m.group(5)))
            for m in ACCESS_RE.finditer(server.log())]


def local_addresses():
    """This machine's non-loopback IPv4 addresses (ip -4 -o addr)."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [a for a in re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
            if not a.startswith("127.")]


class Metrics(unittest.TestCase):
    def setUp(self):
        if not sc.have_binaries():
            self.fail("binaries missing: run make asan")
        self.mock = sc.Mock().start()
        self.addCleanup(self.mock.stop)

    def server(self, workers=2, **env):
        srv = sc.Server(self.mock.base_url, env=env, workers=workers).start()
        self.addCleanup(srv.stop)
        return srv

    def scrape(self, srv, **kw):
        r = get_metrics(srv.port, **kw)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8")
        return r.body.decode()

    def test_every_worker_reports_every_request(self):
        srv = self.server()
        n = 12
        for _ in range(n):
            self.assertEqual(sc.chat(srv.port, {"user_content": "hi"}).status, 200)
        pids = set(srv.workers_pids())
        served = {pid for pid, _, path, _ in access(srv) if path == "/api/chat"}
        self.assertEqual(served, pids, "the requests did not spread over both workers")
        answered = set()
        for _ in range(40):  # new connections until both workers answered
            samples = parse(self.scrape(srv))
            self.assertEqual(value(samples, *CHAT_200), n)
            self.assertEqual(value(samples, "zju_upstream_ttfb_seconds_count",
                                   {"route": "/api/chat", "method": "POST"}), n)
            self.assertEqual(value(samples, "zju_tokens_total",
                                   {"token": "", "model": sc.DEFAULT_MODEL, "type": "prompt"}),
                             5 * n)
            self.assertEqual(value(samples, "zju_model_requests_total",
                                   {"token": "", "model": sc.DEFAULT_MODEL}), n)
            answered = {pid for pid, _, path, _ in access(srv) if path == "/metrics"}
            if answered == pids:
                break
        self.assertEqual(answered, pids, "one worker never answered /metrics")

    def test_promtool_accepts_the_text(self):
        promtool = shutil.which("promtool")
        if not promtool:
            self.skipTest("promtool not installed (Debian package prometheus; "
                          "scripts/install-deps.sh --tests installs it)")
        srv = self.server(IP_RPM="8")

        def check(text):
            p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr + text)

        check(self.scrape(srv))  # before any request: families without samples
        sc.chat(srv.port, {"user_content": "hi"})
        sc.stream(srv.port, {"user_content": "hi", "stream": True})
        # a model id with a quote, a backslash and a newline (the mock takes
        # any mock-* model) becomes a label value, escaped
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True,
                "model": 'mock-odd"model\\name\nx'}
        sc.request(srv.port, "POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                   headers={"Content-Type": "application/json"})
        sc.request(srv.port, "POST", "/v1/embeddings", body=b'{"input": "hi"}',
                   headers={"Content-Type": "application/json"})
        sc.request(srv.port, "GET", "/nowhere")
        sc.request(srv.port, "GET", "/v1/models")
        for _ in range(6):
            sc.chat(srv.port, {"user_content": "hi"})  # the last ones: 429
        text = self.scrape(srv)
        check(text)
        samples = parse(text)
        self.assertGreater(value(samples, "zju_rate_limited_total", {"limit": "rpm"}), 0)
        self.assertIn('model="mock-odd\\"model\\\\name\\nx"', text)

    def test_numbers_follow_what_happened(self):
        srv = self.server(IP_RPM="1000")
        # a stream held open: one in flight, whichever worker is asked
        conn = sc.RawConn(srv.port)
        self.addCleanup(conn.close)
        conn.send(conn.post_chat({"user_content": "hi", "stream": True,
                                  "model": sc.model(events=4, delay=300)}))
        head = conn.read_response(head_only=True)
        self.assertEqual(head.status, 200)
        for _ in range(4):
            self.assertEqual(value(parse(self.scrape(srv)), "zju_streams_in_flight"), 1)
        conn.read_until(b"0\r\n\r\n", timeout=10)
        self.assertTrue(sc.wait_until(
            lambda: value(parse(self.scrape(srv)), "zju_streams_in_flight") == 0, 5))
        # a client that leaves mid-stream (after a few events, the first
        # token among them): a disconnect and a cancellation
        sc.stream(srv.port, {"user_content": "hi", "stream": True,
                             "model": sc.model(events=50, delay=100)},
                  on_chunk=lambda s, d: s.raw.count(b"data: ") < 4)
        self.assertTrue(srv.wait_log(re.compile(r'"POST /api/chat" 499 '), timeout=5))
        # one upstream 503, retried
        self.mock.config(fail_next=1, fail_status=503)
        self.assertEqual(sc.chat(srv.port, {"user_content": "hi"}).status, 200)
        samples = parse(self.scrape(srv))
        route = {"route": "/api/chat", "method": "POST"}
        self.assertEqual(value(samples, "zju_client_disconnects_total"), 1)
        self.assertEqual(value(samples, "zju_upstream_cancellations_total"), 1)
        self.assertGreaterEqual(value(samples, "zju_upstream_retries_total"), 1)
        self.assertEqual(value(samples, "zju_http_requests_total", dict(route, status="499")), 1)
        self.assertEqual(value(samples, "zju_http_requests_total", dict(route, status="200")), 2)
        # both streams had a first token; the plain reply has none
        self.assertEqual(value(samples, "zju_upstream_ttft_seconds_count", route), 2)
        self.assertEqual(value(samples, "zju_upstream_ttfb_seconds_count", route), 3)
        self.assertEqual(value(samples, "zju_http_request_duration_seconds_count", route), 3)
        # the held stream took >= 1.2 s: the histogram is in seconds
        self.assertGreaterEqual(value(samples, "zju_http_request_duration_seconds_sum", route), 1.2)
        self.assertEqual(value(samples, "zju_http_request_duration_seconds_bucket",
                               dict(route, le="+Inf")), 3)

    def test_only_allowed_addresses_or_the_token(self):
        token = "metrics-token-0123456789abcdef"
        srv = self.server(METRICS_ALLOW="10.0.0.0/8", METRICS_TOKEN=token,
                          TRUSTED_PROXIES="127.0.0.1")
        r = get_metrics(srv.port)
        self.assertEqual(r.status, 403, r)
        self.assertIsInstance(r.json()["error"], str)  # the seed's shape
        self.assertNotIn(b"zju_", r.body)
        # a forwarded address inside METRICS_ALLOW opens nothing: the peer decides
        r = get_metrics(srv.port, headers={"X-Forwarded-For": "10.1.2.3"})
        self.assertEqual(r.status, 403, r)
        for bad in ("Bearer wrong", "Bearer " + token[:-1], "Bearer " + token + "x",
                    "Basic " + token, token):
            self.assertEqual(get_metrics(srv.port, headers={"Authorization": bad}).status, 403,
                             bad)
        for good in ("Bearer " + token, "bearer " + token):
            r = get_metrics(srv.port, headers={"Authorization": good})
            self.assertEqual(r.status, 200, r)
            self.assertIn(b"zju_http_requests_total", r.body)
        # set but empty: no address at all, the token still opens it
        srv2 = self.server(METRICS_ALLOW="", METRICS_TOKEN=token)
        self.assertEqual(get_metrics(srv2.port).status, 403)
        self.assertEqual(get_metrics(srv2.port, headers={"Authorization": "Bearer " + token})
                         .status, 200)

    def test_loopback_only_by_default(self):
        addrs = local_addresses()
        if not addrs:
            self.skipTest("this machine has no non-loopback IPv4 address to connect from")
        port = sc.free_port()
        srv = sc.Server(self.mock.base_url, env={"PORT": str(port)}, workers=2, bind=False)
        srv.start()
        self.addCleanup(srv.stop)  # listens on 0.0.0.0
        r = get_metrics(port, host=addrs[0])
        self.assertEqual(r.status, 403, r)
        self.assertEqual(get_metrics(port).status, 200)
        self.assertEqual(sc.request(port, "GET", "/healthz", host=addrs[0]).status, 200)
        # and METRICS_ALLOW opens it to that address
        port2 = sc.free_port()
        srv2 = sc.Server(self.mock.base_url, workers=1, bind=False,
                         env={"PORT": str(port2), "METRICS_ALLOW": addrs[0] + "/32"})
        srv2.start()
        self.addCleanup(srv2.stop)
        self.assertEqual(get_metrics(port2, host=addrs[0]).status, 200)
        self.assertEqual(get_metrics(port2).status, 403)

    def test_bad_settings_stop_the_start(self):
        cases = [
            ({"METRICS_ALLOW": "10.0.0.0/33"}, 'METRICS_ALLOW entry "10.0.0.0/33"'),
            ({"METRICS_ALLOW": "localhost"}, 'METRICS_ALLOW entry "localhost"'),
            ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN"),
        ]
        for env, needle in cases:
            with self.subTest(env=env):
                srv = sc.Server(self.mock.base_url, env=env)
                srv.start(wait=False)
                self.assertEqual(srv.wait_exit(10), 2, srv.log())
                self.assertIn(needle, srv.log())
                self.assertNotIn("short", srv.log().replace("shorter", ""))

    def test_killed_workers_leave_no_stream_counted(self):
        # Every worker killed with streams open: the streams are gone, and
        # the restarted workers must not keep counting them in flight.
        srv = self.server()
        conns = []
        for _ in range(4):
            c = sc.RawConn(srv.port)
            self.addCleanup(c.close)
            c.send(c.post_chat({"user_content": "hi", "stream": True,
                                "model": sc.model(events=100, delay=200)}))
            self.assertEqual(c.read_response(head_only=True).status, 200)
            conns.append(c)
        self.assertEqual(value(parse(self.scrape(srv)), "zju_streams_in_flight"), 4)
        old = srv.workers_pids()
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        self.assertTrue(sc.wait_until(
            lambda: len(srv.workers_pids()) == 2 and not set(old) & set(srv.workers_pids()), 10))
        self.assertTrue(sc.wait_until(srv.healthy, 10))
        self.assertEqual(value(parse(self.scrape(srv)), "zju_streams_in_flight"), 0)


if __name__ == "__main__":
    unittest.main()
