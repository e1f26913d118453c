"""Rate limits per client address (IP_RPM, IP_TPM) and per access token (its
rpm, tpm, tpd, streams) across the workers of one server, against the real
server and the mock upstream: the limiter's state is
in memory the workers share (src/server/ratelimit.c), so two workers enforce one
limit exactly. Over a limit: 429 with Retry-After in the route's error shape,
and the upstream is never called. A worker killed with SIGKILL while it may
hold the shared lock wedges nobody. Window arithmetic with an injected clock:
tests/unit/test_limits.c."""
import json
import os
import re
import secrets
import signal
import tempfile
import threading
import time
import unittest

import serverctl as sc

CHAT = "/v1/chat/completions"
ACCESS_RE = re.compile(r"\[(\d+)\] access (\S+) \"(\S+) (\S+)\" (\d+) .* tokens=(\S+)")


def chat(port, headers=None):
    return sc.chat(port, {"user_content": "hi"}, headers=headers)


def openai_chat(port, stream=False, headers=None):
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": stream}
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return sc.request(port, "POST", CHAT, body=json.dumps(body).encode(), headers=h)


def access_lines(server):
    """(pid, client, method, path, status, tokens) of every access line."""
    return [
        (int(m.group(1)), m.group(2), m.group(3), m.group(4), int(m.group(5)), m.group(6))
        for m in ACCESS_RE.finditer(server.log())
    ]


def upstream_calls(mock):
    st = mock.stats()
    return st["chat_requests"] + st["embedding_requests"]


class Limits(unittest.TestCase):
    def setUp(self):
        if not sc.have_binaries():
            self.fail("binaries missing: run make asan")
        self.mock = sc.Mock().start()
        self.addCleanup(self.mock.stop)

    def server(self, **env):
        srv = sc.Server(self.mock.base_url, env=env, workers=2).start()
        self.addCleanup(srv.stop)
        return srv

    def assert_limited(self, r, shape):
        self.assertEqual(r.status, 429, r)
        retry = r.header("Retry-After")
        self.assertIsNotNone(retry, r.headers)
        self.assertTrue(retry.isdigit() and 1 <= int(retry) <= 60, retry)
        err = r.json()["error"]
        if shape == "seed":
            self.assertIsInstance(err, str, r)
            self.assertIn("rate limit", err)
            self.assertIn(f"retry after {retry} s", err)
        else:
            self.assertEqual(err["code"], "rate_limited", r)
            self.assertEqual(err["type"], "rate_limit_error", r)
            self.assertIn("rate limit", err["message"])
        return int(retry)

    def test_a_fresh_worker_does_not_fault_the_table_in(self):
        """The shared table (LIMITS_KEYS x ~1 KB, 8 MB by default) is paged
        in only where keys live: a worker that starts must not read all of
        it (it did: 8 MB of RSS per worker, summed in the bench's RSS)."""
        srv = self.server(IP_RPM="100")
        self.assertEqual(sc.chat(srv.port, {"user_content": "hi"}).status, 200)
        for pid in srv.workers_pids():
            rss_kb, name = 0, ""
            with open(f"/proc/{pid}/smaps") as f:
                for line in f:
                    if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
                        name = line.split()[5] if len(line.split()) > 5 else ""
                    elif line.startswith("Rss:") and name.startswith("/dev/zero"):
                        rss_kb += int(line.split()[1])
            self.assertLess(rss_kb, 2048, f"worker {pid}: {rss_kb} kB of the shared region resident")

    def test_rpm_two_workers_exact(self):
        srv = self.server(IP_RPM="10")
        before = upstream_calls(self.mock)
        t0 = time.monotonic()
        results = [chat(srv.port) for _ in range(20)]  # a new connection each
        elapsed = time.monotonic() - t0
        self.assertLess(elapsed, 55, "the 20 requests must fit in one window")
        statuses = [r.status for r in results]
        self.assertEqual(statuses.count(200), 10, statuses)
        self.assertEqual(statuses.count(429), 10, statuses)
        # the first ten ran, then none: refused ones count for nothing
        self.assertEqual(statuses, [200] * 10 + [429] * 10)
        for r in results[10:]:
            retry = self.assert_limited(r, "seed")
            # the true wait: the ten leave the window 60 s after they came
            self.assertGreaterEqual(retry, 60 - elapsed - 1)
        self.assertEqual(upstream_calls(self.mock) - before, 10)
        # the OpenAI route counts on the same address, in its own shape
        self.assert_limited(openai_chat(srv.port), "openai")
        self.assert_limited(openai_chat(srv.port, stream=True), "openai")
        self.assertEqual(upstream_calls(self.mock) - before, 10)
        # both workers served and both refused: one limit, not one per worker
        lines = [l for l in access_lines(srv) if l[3] == "/api/chat"]
        self.assertEqual(len(lines), 20)
        pids = set(srv.workers_pids())
        self.assertEqual({l[0] for l in lines}, pids, lines)

    def test_tpm_two_workers_exact(self):
        # The mock's usage is deterministic: learn one request's total first.
        probe = sc.Server(self.mock.base_url, workers=1).start()
        try:
            self.assertEqual(chat(probe.port).status, 200)
            s = sc.stream(probe.port, {"user_content": "hi", "stream": True})
            self.assertEqual(s.status, 200)
            totals = [l[5] for l in access_lines(probe) if l[3] == "/api/chat"]
        finally:
            probe.stop()
        self.assertEqual(len(totals), 2, totals)
        self.assertEqual(totals[0], totals[1], "stream and non-stream usage differ")
        per = int(totals[0].split("/")[2])
        self.assertGreater(per, 0)
        # tokens count when the reply is known, a stream's at its end: one
        # after the other, ten replies reach the limit and the rest wait
        srv = self.server(IP_TPM=str(10 * per))
        before = upstream_calls(self.mock)
        statuses = []
        for i in range(20):
            if i % 2:
                statuses.append(chat(srv.port).status)
            else:
                s = sc.stream(srv.port, {"user_content": "hi", "stream": True})
                if s.status == 200:
                    self.assertTrue(s.clean_end, s.error)
                    # with a tpm limit a stream's usage must come: asked for
                    body = self.mock.last_body()
                    self.assertEqual(body.get("stream_options"), {"include_usage": True})
                statuses.append(s.status)
        self.assertEqual(statuses, [200] * 10 + [429] * 10)
        self.assertEqual(upstream_calls(self.mock) - before, 10)
        r = chat(srv.port)
        self.assert_limited(r, "seed")
        self.assertIn("tokens per minute", r.json()["error"])

        lines = [l for l in access_lines(srv) if l[3] == "/api/chat"]
        self.assertEqual({l[0] for l in lines}, set(srv.workers_pids()), lines)

    def test_limits_are_per_address_through_trusted_proxies(self):
        # The address the access log names (TRUSTED_PROXIES) is the key: two
        # clients behind one proxy have a limit each; a client's own
        # X-Forwarded-For is believed only from a trusted proxy.
        srv = self.server(IP_RPM="2", TRUSTED_PROXIES="127.0.0.1")
        a = {"X-Forwarded-For": "198.51.100.1"}
        b = {"X-Forwarded-For": "198.51.100.2"}
        self.assertEqual([chat(srv.port, a).status for _ in range(3)], [200, 200, 429])
        self.assertEqual([chat(srv.port, b).status for _ in range(3)], [200, 200, 429])
        # IPv6 clients by their /64: another address in it is the same client
        c1 = {"X-Forwarded-For": "2001:db8:1:2::1"}
        c2 = {"X-Forwarded-For": "2001:db8:1:2::ffff"}
        self.assertEqual([chat(srv.port, c1).status, chat(srv.port, c2).status], [200, 200])
        self.assertEqual(chat(srv.port, c1).status, 429)
        self.assertEqual(chat(srv.port, {"X-Forwarded-For": "2001:db8:1:3::1"}).status, 200)
        untrusted = self.server(IP_RPM="2")
        spoof = [chat(untrusted.port, {"X-Forwarded-For": f"203.0.113.{i}"}).status
                 for i in range(3)]
        self.assertEqual(spoof, [200, 200, 429])

    def test_other_routes_are_not_limited(self):
        srv = self.server(IP_RPM="1")
        self.assertEqual(chat(srv.port).status, 200)
        self.assertEqual(chat(srv.port).status, 429)
        for _ in range(3):
            self.assertEqual(sc.request(srv.port, "GET", "/healthz").status, 200)
            self.assertEqual(sc.request(srv.port, "OPTIONS", "/api/chat").status, 204)
            self.assertEqual(sc.request(srv.port, "GET", "/metrics").status, 200)

    def test_bad_settings_stop_the_start(self):
        cases = [
            ({"IP_RPM": "-1"}, "IP_RPM"),
            ({"IP_TPM": "ten"}, "IP_TPM"),
            ({"IP_RPM": "2000000000"}, "IP_RPM"),
            ({"LIMITS_KEYS": "0"}, "LIMITS_KEYS"),
        ]
        for env, name in cases:
            with self.subTest(env=env):
                srv = sc.Server(self.mock.base_url, env=env)
                srv.start(wait=False)
                self.assertEqual(srv.wait_exit(10), 2, srv.log())
                self.assertIn(name, srv.log())

    def test_worker_killed_under_load_wedges_nobody(self):
        # Load from many addresses (through a trusted proxy), so the workers
        # take the shared lock all the time; a worker killed with SIGKILL may
        # die holding it. The restarted worker and the other keep answering,
        # and the limits stay exact for a client that comes after.
        srv = self.server(IP_RPM="10", TRUSTED_PROXIES="127.0.0.1")
        stop = threading.Event()
        errors = []

        def load(n):
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    chat(srv.port, {"X-Forwarded-For": f"10.{n}.{i // 250}.{i % 250}"})
                except OSError:
                    pass  # the killed worker's connections
                except Exception as e:  # noqa: BLE001
                    errors.append(e)

        threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(3)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            victim = srv.workers_pids()[0]
            os.kill(victim, signal.SIGKILL)
            self.assertTrue(srv.wait_log(f"worker {victim} killed by signal 9", timeout=5))
            restarted = sc.wait_until(
                lambda: len(srv.workers_pids()) == 2 and victim not in srv.workers_pids(), 10)
            self.assertTrue(restarted, srv.log()[-2000:])
            time.sleep(1.0)  # load on the restarted worker too
        finally:
            stop.set()
            for t in threads:
                t.join(20)
        self.assertEqual(errors, [])
        loaded = [l for l in access_lines(srv) if l[1].startswith("10.")]
        self.assertGreater(len(loaded), 30, "too little load to mean anything")
        # a new client: exactly 10 of 20, from both workers, one new
        before = upstream_calls(self.mock)
        fresh = {"X-Forwarded-For": "192.0.2.200"}
        statuses = [chat(srv.port, fresh).status for _ in range(20)]
        self.assertEqual(statuses, [200] * 10 + [429] * 10)
        self.assertEqual(upstream_calls(self.mock) - before, 10)
        served = {l[0] for l in access_lines(srv) if l[1] == "192.0.2.200"}
        self.assertEqual(served, set(srv.workers_pids()))
        self.assertNotIn(victim, served)


RUN = secrets.token_hex(6)
ALICE = f"tok-alice-{RUN}-0123456789"
BOB = f"tok-bob-{RUN}-abcdefghij"
CAROL = f"tok-carol-{RUN}-klmnopqrst"


def bearer(token):
    return {"Authorization": "Bearer " + token}


class TokenLimits(unittest.TestCase):
    """An access token's rpm, tpm, tpd and streams (ACCESS_TOKENS_FILE)
    count on "tok:<name>", one count for every worker."""

    def setUp(self):
        if not sc.have_binaries():
            self.fail("binaries missing: run make asan")
        self.mock = sc.Mock().start()
        self.addCleanup(self.mock.stop)

    def server(self, tokens, **env):
        d = tempfile.mkdtemp(prefix="tokens-", dir=sc.LOG_DIR)
        path = os.path.join(d, "tokens.conf")
        with open(path, "w") as f:
            f.write(tokens)
        env["ACCESS_TOKENS_FILE"] = path
        srv = sc.Server(self.mock.base_url, env=env, workers=2).start()
        self.addCleanup(srv.stop)
        return srv

    def test_token_rpm_two_workers_exact(self):
        srv = self.server(f"{ALICE} name=alice rpm=10\n{BOB} name=bob\n")
        before = upstream_calls(self.mock)
        statuses = [openai_chat(srv.port, headers=bearer(ALICE)).status for _ in range(20)]
        self.assertEqual(statuses, [200] * 10 + [429] * 10)
        self.assertEqual(upstream_calls(self.mock) - before, 10)
        r = chat(srv.port, bearer(ALICE))
        self.assertEqual(r.status, 429)
        self.assertIn("10 requests per minute for this access token", r.json()["error"])
        self.assertTrue(1 <= int(r.header("Retry-After")) <= 60)
        # another token from the same address is not limited by alice's
        self.assertEqual([chat(srv.port, bearer(BOB)).status for _ in range(12)], [200] * 12)
        lines = [l for l in access_lines(srv) if l[3] in ("/api/chat", CHAT)]
        self.assertEqual({l[0] for l in lines}, set(srv.workers_pids()))
        # the metrics know the tokens by name
        m = sc.request(srv.port, "GET", "/metrics").body.decode()
        self.assertRegex(m, r'zju_tokens_total\{token="alice",model="[^"]+",type="prompt"\} \d+')
        self.assertRegex(m, r'zju_tokens_total\{token="bob",model="[^"]+",type="prompt"\} \d+')
        self.assertIn('zju_rate_limited_total{limit="rpm"} 11', m)

    def test_token_streams_in_flight(self):
        srv = self.server(f"{BOB} name=bob streams=1\n")
        held = sc.RawConn(srv.port)
        self.addCleanup(held.close)
        body = json.dumps({"user_content": "hi", "stream": True,
                           "model": sc.model(events=3, delay=300)}).encode()
        held.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + BOB.encode() + b"\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.assertEqual(held.read_response(head_only=True).status, 200)
        for _ in range(3):  # on either worker
            r = chat(srv.port, bearer(BOB))
            self.assertEqual(r.status, 429, r)
            self.assertEqual(r.header("Retry-After"), "1")
            self.assertIn("1 requests at once", r.json()["error"])
        held.read_until(b"0\r\n\r\n", timeout=10)
        self.assertTrue(sc.wait_until(lambda: chat(srv.port, bearer(BOB)).status == 200, 5))

    def test_token_tpm_and_tpd(self):
        # one reply's usage, then limits of two and three replies
        probe = self.server(f"{CAROL} name=probe\n")
        self.assertEqual(chat(probe.port, bearer(CAROL)).status, 200)
        per = int([l for l in access_lines(probe) if l[3] == "/api/chat"][0][5].split("/")[2])
        srv = self.server(f"{ALICE} name=alice tpm={2 * per}\n"
                          f"{CAROL} name=carol tpd={3 * per}\n")
        self.assertEqual([chat(srv.port, bearer(ALICE)).status for _ in range(4)],
                         [200, 200, 429, 429])
        self.assertIn("tokens per minute", chat(srv.port, bearer(ALICE)).json()["error"])
        # streams too: their usage comes at the end
        statuses = []
        for _ in range(5):
            s = sc.stream(srv.port, {"user_content": "hi", "stream": True},
                          headers=bearer(CAROL))
            statuses.append(s.status)
        self.assertEqual(statuses, [200, 200, 200, 429, 429])
        r = chat(srv.port, bearer(CAROL))
        self.assertIn("tokens per day", r.json()["error"])
        # the day's slot leaves the window 23h45m to 24h from now
        self.assertGreater(int(r.header("Retry-After")), 23 * 3600 + 44 * 60)
        self.assertLessEqual(int(r.header("Retry-After")), 24 * 3600)


if __name__ == "__main__":
    unittest.main()
