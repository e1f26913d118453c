"""Rate limits shared by several server instances through Redis (REDIS_URL,
src/server/limits_redis.c), against a real redis-server this test starts on a
loopback port (Debian's package; the tests are skipped, saying so, only when
it is not installed): two instances of two workers each enforce one limit
exactly (rpm and tpm of an access token, IP_RPM), a stream the client left
still counts its tokens, and while Redis is away REDIS_FAILURE decides:
open lets requests through (logged once per worker, not per request),
closed answers 503 limits_unavailable; a Redis that comes back (restarted on
its port, or resumed after SIGSTOP) brings the limits back by itself, and a
Redis that stopped answering never holds a request longer than
REDIS_TIMEOUT_MS. GET /v1/usage on either instance reports what the token
used on both (the usage script); Redis away (killed or paused), it answers
"used": null at once or within the timeout. The Lua scripts' arithmetic:
tests/unit/test_limits_redis.c."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import serverctl as sc

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
CHAT = "/v1/chat/completions"
ALICE = "tok-redis-alice-8f2c4e6a1b3d5f7092a4c6e8"
BOB = "tok-redis-bob-1a3c5e7f9b2d4f6a8c0e2a4c6e"
ACCESS_RE = re.compile(r"\[(\d+)\] access (\S+) \"(\S+) (\S+)\" (\d+) .* tokens=(\S+)")


def bearer(token):
    return {"Authorization": "Bearer " + token}


def chat(port, token=None, timeout=15):
    return sc.chat(port, {"user_content": "hi"}, headers=bearer(token) if token else None,
                   timeout=timeout)


def openai_chat(port, token):
    body = {"messages": [{"role": "user", "content": "hi"}]}
    h = {"Content-Type": "application/json"}
    h.update(bearer(token))
    return sc.request(port, "POST", CHAT, body=json.dumps(body).encode(), headers=h)


def usage(port, token, timeout=10):
    return sc.request(port, "GET", "/v1/usage", headers=bearer(token), timeout=timeout)


def access_lines(server):
    """(pid, client, method, path, status, tokens) of every access line."""
    return [(int(m.group(1)), m.group(2), m.group(3), m.group(4), int(m.group(5)), m.group(6))
            for m in ACCESS_RE.finditer(server.log())]


class Redis:
    """redis-server on a loopback port, nothing saved to disk."""

    def __init__(self, port=None, args=(), password=None):
        self.port = port or sc.free_port()
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=sc.LOG_DIR)
        self.socket = os.path.join(self.dir, "redis.sock")
        self.args = list(args)
        self.password = password
        self.proc = None

    def start(self):
        extra = self.args + (["--requirepass", self.password] if self.password else [])
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "-::1",
             "--unixsocket", self.socket, "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log"), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not sc.wait_until(lambda: self.cli("PING") == "PONG", 10, step=0.05):
            self.stop()
            raise AssertionError(f"redis-server did not start on port {self.port}")
        return self

    def cli(self, *args):
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        try:
            r = subprocess.run([REDIS_CLI, "-p", str(self.port), *auth, *args],
                               capture_output=True, text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return None
        return r.stdout.strip()

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused one cannot exit
            self.proc.kill()  # no shutdown save: this is a crash, as tests want
            self.proc.wait(10)


@unittest.skipUnless(REDIS_SERVER and REDIS_CLI,
                     "redis-server is not installed (scripts/install-deps.sh --tests installs it)")
class RedisLimits(unittest.TestCase):
    def setUp(self):
        if not sc.have_binaries():
            self.fail("binaries missing: run make asan")
        self.mock = sc.Mock().start()
        self.addCleanup(self.mock.stop)
        self.redis = Redis().start()
        self.addCleanup(self.redis.stop)

    def tokens_file(self, text):
        d = tempfile.mkdtemp(prefix="tokens-", dir=sc.LOG_DIR)
        path = os.path.join(d, "tokens.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def server(self, workers=2, **env):
        env.setdefault("REDIS_URL", self.redis.url())
        srv = sc.Server(self.mock.base_url, env=env, workers=workers).start()
        self.addCleanup(srv.stop)
        # each worker reports its first connection (admits wait for it anyway)
        self.assertTrue(sc.wait_until(
            lambda: srv.log().count("redis: connected;") == workers, 10), srv.log()[-2000:])
        return srv

    def pair(self, **env):
        return self.server(**env), self.server(**env)

    def upstream_calls(self):
        return self.mock.stats()["chat_requests"]

    def assert_429(self, r):
        self.assertEqual(r.status, 429, r)
        retry = r.header("Retry-After")
        self.assertTrue(retry and retry.isdigit() and 1 <= int(retry) <= 60, r.headers)
        return int(retry)

    def test_token_rpm_across_two_instances_exact(self):
        path = self.tokens_file(f"{ALICE} name=alice rpm=10\n{BOB} name=bob\n")
        a, b = self.pair(ACCESS_TOKENS_FILE=path)
        before = self.upstream_calls()
        t0 = time.monotonic()
        results = [chat((a, b)[i % 2].port, ALICE) for i in range(20)]
        elapsed = time.monotonic() - t0
        statuses = [r.status for r in results]
        print(f"\n  token rpm=10 over two instances: {statuses.count(200)} x 200, "
              f"{statuses.count(429)} x 429 in {elapsed:.1f} s")
        self.assertEqual(statuses, [200] * 10 + [429] * 10)
        for r in results[10:]:
            retry = self.assert_429(r)
            self.assertGreaterEqual(retry, 60 - elapsed - 1)  # the true wait
            self.assertIn("10 requests per minute for this access token", r.json()["error"])
        self.assertEqual(self.upstream_calls() - before, 10)
        # both instances served and refused, each on both its workers
        for srv in (a, b):
            lines = [l for l in access_lines(srv) if l[3] == "/api/chat"]
            self.assertEqual(sorted(l[4] for l in lines), [200] * 5 + [429] * 5, lines)
        # the OpenAI route counts on the same token; bob is not limited by it
        self.assert_429(openai_chat(a.port, ALICE))
        self.assertEqual([chat(b.port, BOB).status for _ in range(12)], [200] * 12)
        # in Redis: the token's key, with the prefix, expiring by itself
        self.assertEqual(self.redis.cli("EXISTS", "zju:tok:alice"), "1")
        ttl = int(self.redis.cli("PTTL", "zju:tok:alice"))
        self.assertTrue(0 < ttl <= 60000, ttl)

    def test_token_tpm_across_two_instances_exact(self):
        path = self.tokens_file(f"{BOB} name=probe\n")
        probe = self.server(workers=1, ACCESS_TOKENS_FILE=path)
        self.assertEqual(chat(probe.port, BOB).status, 200)
        per = int([l for l in access_lines(probe) if l[3] == "/api/chat"][0][5].split("/")[2])
        self.assertGreater(per, 0)
        path = self.tokens_file(f"{ALICE} name=alice tpm={10 * per}\n")
        a, b = self.pair(ACCESS_TOKENS_FILE=path)
        statuses = []
        for i in range(20):
            srv = (a, b)[i % 2]
            if i % 4 < 2:
                statuses.append(chat(srv.port, ALICE).status)
            else:  # streams too: their usage counts at their end
                statuses.append(sc.stream(srv.port, {"user_content": "hi", "stream": True},
                                          headers=bearer(ALICE)).status)
        print(f"\n  token tpm={10 * per} ({per} a reply) over two instances: "
              f"{statuses.count(200)} x 200, {statuses.count(429)} x 429")
        self.assertEqual(statuses, [200] * 10 + [429] * 10)
        r = chat(a.port, ALICE)
        self.assert_429(r)
        self.assertIn("tokens per minute", r.json()["error"])
        day = self.redis.cli("HGETALL", "zju:tok:alice").split("\n")
        d_fields = [int(day[i + 1]) for i in range(0, len(day) - 1, 2) if day[i].startswith("d")]
        self.assertEqual(sum(d_fields), 10 * per)  # the day counts them too

    def test_usage_route_reports_both_instances_use(self):
        limits = {"rpm": 10, "tpm": 100000, "tpd": 1000000, "streams": 2}
        path = self.tokens_file(f"{ALICE} name=alice rpm=10 tpm=100000 tpd=1000000 "
                                f"streams=2\n")
        a, b = self.pair(ACCESS_TOKENS_FILE=path)
        spent = 0
        for i in range(6):
            r = openai_chat((a, b)[i % 2].port, ALICE)
            self.assertEqual(r.status, 200, r)
            spent += r.json()["usage"]["total_tokens"]
        self.assertGreater(spent, 0)
        want_used = {"rpm": 6, "tpm": spent, "tpd": spent, "streams": 0}
        want_left = {k: limits[k] - want_used[k] for k in limits}

        def reported(srv):
            r = usage(srv.port, ALICE)
            self.assertEqual(r.status, 200, r)
            return r.json()

        # a Redis that lost its scripts (SCRIPT FLUSH): sent again in full
        self.assertEqual(self.redis.cli("SCRIPT", "FLUSH"), "OK")
        for srv in (a, b):
            # tokens count at a reply's end (after the client has it): wait
            self.assertTrue(sc.wait_until(lambda: reported(srv)["used"] == want_used, 5),
                            (reported(srv), want_used))
            for _ in range(4):  # new connections: both workers of the instance
                u = reported(srv)
                self.assertEqual(u["limits"], limits)
                self.assertEqual(u["used"], want_used)
                self.assertEqual(u["remaining"], want_left)
        print(f"\n  /v1/usage on both instances: used {want_used}")
        for srv in (a, b):
            self.assertNotIn("a command failed", srv.log())
        # a report counts nothing: the 10 requests of the minute are all still there
        self.assertEqual([openai_chat(a.port, ALICE).status for _ in range(5)],
                         [200] * 4 + [429])
        # Redis gone: the report still answers, at once, without "used"
        self.redis.stop()
        for srv in (a, b):
            for _ in range(4):
                t0 = time.monotonic()
                r = usage(srv.port, ALICE)
                took = time.monotonic() - t0
                self.assertEqual(r.status, 200, r)
                self.assertIsNone(r.json()["used"], r.json())
                self.assertIsNone(r.json()["remaining"], r.json())
                self.assertEqual(r.json()["limits"], limits)
                self.assertLess(took, 3)

    def test_usage_route_with_redis_paused_answers_within_the_timeout(self):
        path = self.tokens_file(f"{ALICE} name=alice rpm=10\n")
        srv = self.server(workers=1, ACCESS_TOKENS_FILE=path, REDIS_TIMEOUT_MS="300")
        self.assertEqual(chat(srv.port, ALICE).status, 200)
        self.assertEqual(usage(srv.port, ALICE).json()["used"]["rpm"], 1)
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            times = []
            for _ in range(3):
                t0 = time.monotonic()
                r = usage(srv.port, ALICE, timeout=10)
                times.append(time.monotonic() - t0)
                self.assertEqual(r.status, 200, r)
                self.assertIsNone(r.json()["used"], r.json())
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        print(f"\n  /v1/usage with Redis paused: {', '.join(f'{t:.2f}' for t in times)} s")
        self.assertLess(max(times), 3)
        self.assertIn("no reply within 300 ms", srv.log())
        # back: the report is known again (the same window, the same count)
        self.assertTrue(sc.wait_until(
            lambda: (usage(srv.port, ALICE).json()["used"] or {}).get("rpm") == 1, 10),
            srv.log()[-2000:])
        self.assertTrue(srv.healthy())

    def test_ip_rpm_across_two_instances_exact(self):
        # one instance names the host (resolved on the loop), one its address
        a = self.server(IP_RPM="10", REDIS_PREFIX="gw1:",
                        REDIS_URL=f"redis://localhost:{self.redis.port}")
        b = self.server(IP_RPM="10", REDIS_PREFIX="gw1:")
        statuses = [chat((a, b)[i % 2].port).status for i in range(20)]
        print(f"\n  IP_RPM=10 over two instances: {statuses.count(200)} x 200, "
              f"{statuses.count(429)} x 429")
        self.assertEqual(statuses, [200] * 10 + [429] * 10)
        self.assertEqual(self.redis.cli("EXISTS", "gw1:ip:127.0.0.1"), "1")

    def test_token_streams_across_two_instances(self):
        path = self.tokens_file(f"{BOB} name=bob streams=1\n")
        a, b = self.pair(ACCESS_TOKENS_FILE=path)
        held = sc.RawConn(a.port)
        self.addCleanup(held.close)
        body = {"user_content": "hi", "stream": True, "model": sc.model(events=3, delay=300)}
        held.send(held.post_chat(body, extra_headers=f"Authorization: Bearer {BOB}\r\n"))
        self.assertEqual(held.read_response(head_only=True).status, 200)
        for srv in (b, a, b):  # the other instance knows the place is taken
            r = chat(srv.port, BOB)
            self.assertEqual(r.status, 429, r)
            self.assertEqual(r.header("Retry-After"), "1")
            self.assertIn("1 requests at once", r.json()["error"])
        held.read_until(b"0\r\n\r\n", timeout=10)
        # given back at its end: the other instance admits again
        self.assertTrue(sc.wait_until(lambda: chat(b.port, BOB).status == 200, 5))
        # and nothing stays held in Redis
        self.assertTrue(sc.wait_until(lambda: not any(
            f.startswith("h") for f in self.redis.cli("HKEYS", "zju:tok:bob").split("\n")), 5))

    def test_stream_left_mid_way_counts_its_tokens(self):
        path = self.tokens_file(f"{ALICE} name=alice tpm=100000\n")
        srv = self.server(ACCESS_TOKENS_FILE=path)
        body = {"user_content": "hi", "stream": True,
                "model": sc.model(events=50, delay=50)}
        got = []

        def on_chunk(s, data):
            got.append(data)
            return len(got) < 3  # hang up early

        sc.stream(srv.port, body, headers=bearer(ALICE), on_chunk=on_chunk)

        def counted():
            flat = self.redis.cli("HGETALL", "zju:tok:alice").split("\n")
            return sum(int(flat[i + 1]) for i in range(0, len(flat) - 1, 2)
                       if flat[i].startswith("t"))

        self.assertTrue(sc.wait_until(lambda: counted() > 0, 5), "no tokens counted")
        line = [l for l in access_lines(srv) if l[3] == "/api/chat"][-1]
        self.assertTrue(line[5].startswith("~"), line)  # the estimate
        self.assertEqual(counted(), int(line[5][1:].split("/")[2]))

    def wait_reconnected(self, srv, n):
        self.assertTrue(sc.wait_until(
            lambda: srv.log().count("redis: connected again") >= n, 10), srv.log()[-2000:])

    def test_redis_stopped_open_then_back(self):
        path = self.tokens_file(f"{ALICE} name=alice rpm=3\n")
        a, b = self.pair(ACCESS_TOKENS_FILE=path, REDIS_FAILURE="open")
        self.assertEqual([chat((a, b)[i % 2].port, ALICE).status for i in range(4)],
                         [200, 200, 200, 429])
        self.redis.stop()
        t0 = time.monotonic()
        during = [chat((a, b)[i % 2].port, ALICE).status for i in range(8)]
        took = time.monotonic() - t0
        print(f"\n  Redis down, REDIS_FAILURE=open: {during} in {took:.2f} s")
        self.assertEqual(during, [200] * 8)  # not counted: nothing to count on
        self.assertLess(took, 8)
        for srv in (a, b):  # once per worker, not per request
            self.assertEqual(srv.log().count("redis: unreachable"), 2, srv.log()[-3000:])
            self.assertIn("REDIS_FAILURE=open", srv.log())
        # the same port again (an empty Redis): limits are back by themselves
        self.redis.start()
        for srv in (a, b):
            self.wait_reconnected(srv, 2)
        after = [chat((a, b)[i % 2].port, ALICE).status for i in range(5)]
        print(f"  Redis back: {after}")
        self.assertEqual(after, [200, 200, 200, 429, 429])

    def test_redis_stopped_closed_503_then_back(self):
        path = self.tokens_file(f"{ALICE} name=alice rpm=100\n")
        srv = self.server(ACCESS_TOKENS_FILE=path, REDIS_FAILURE="closed")
        self.assertEqual(chat(srv.port, ALICE).status, 200)
        self.redis.stop()
        before = self.upstream_calls()
        r = chat(srv.port, ALICE)
        self.assertEqual(r.status, 503, r)
        self.assertTrue(r.header("Retry-After").isdigit(), r.headers)
        self.assertIsInstance(r.json()["error"], str)  # the seed's shape
        self.assertIn("rate limits are unavailable", r.json()["error"])
        r = openai_chat(srv.port, ALICE)
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json()["error"]["code"], "limits_unavailable")  # OpenAI's shape
        self.assertTrue(int(r.header("Retry-After")) >= 1)
        self.assertEqual(self.upstream_calls(), before)
        # a route without limits is not refused: /healthz answers
        self.assertTrue(srv.healthy())
        self.assertIn("REDIS_FAILURE=closed", srv.log())
        self.redis.start()
        self.wait_reconnected(srv, 2)
        self.assertEqual([chat(srv.port, ALICE).status for _ in range(4)], [200] * 4)

    def test_redis_paused_requests_bounded_by_the_timeout(self):
        path = self.tokens_file(f"{ALICE} name=alice rpm=100\n{BOB} name=bob rpm=2\n")
        srv = self.server(ACCESS_TOKENS_FILE=path, REDIS_FAILURE="open",
                          REDIS_TIMEOUT_MS="300")
        closed = self.server(ACCESS_TOKENS_FILE=path, REDIS_FAILURE="closed",
                             REDIS_TIMEOUT_MS="300")
        self.assertEqual(chat(srv.port, ALICE).status, 200)
        self.redis.proc.send_signal(signal.SIGSTOP)  # alive, connected, silent
        try:
            times = []
            for _ in range(6):
                t0 = time.monotonic()
                r = chat(srv.port, ALICE, timeout=10)
                times.append(time.monotonic() - t0)
                self.assertEqual(r.status, 200, r)
            t0 = time.monotonic()
            r = chat(closed.port, ALICE, timeout=10)
            closed_took = time.monotonic() - t0
            self.assertEqual(r.status, 503, r)
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        print(f"\n  Redis paused: open answered in {max(times):.2f} s at most, "
              f"closed in {closed_took:.2f} s")
        # the first ones wait the 300 ms once per worker, then none waits
        self.assertLess(max(times), 3)
        self.assertLess(closed_took, 3)
        self.assertIn("no reply within 300 ms", srv.log())
        self.assertLessEqual(srv.log().count("redis: unreachable"), 2)
        # resumed: every worker that noticed reconnects, and the limits hold
        # again (an idle worker sent nothing, noticed nothing)
        self.assertTrue(sc.wait_until(
            lambda: srv.log().count("redis: connected again") ==
            srv.log().count("redis: unreachable"), 10), srv.log()[-2000:])
        statuses = [chat(srv.port, BOB).status for _ in range(3)]
        self.assertEqual(statuses, [200, 200, 429], srv.log()[-2000:])

    def test_client_gone_and_drain_while_waiting_on_redis(self):
        # Redis paused: admits wait (up to the timeout) with their client
        # watched; one client hangs up meanwhile, then the server is asked
        # to stop. The verdict must not touch the freed request, the one
        # still waiting is answered, and the server exits 0 (ASan: no error,
        # no leak).
        srv = self.server(IP_RPM="100", REDIS_TIMEOUT_MS="1000")
        self.assertEqual(chat(srv.port).status, 200)
        self.redis.proc.send_signal(signal.SIGSTOP)
        try:
            gone = sc.RawConn(srv.port)
            gone.send(gone.post_chat({"user_content": "hi"}))
            result = {}
            t = threading.Thread(target=lambda: result.setdefault("r", chat(srv.port)))
            t.start()
            time.sleep(0.2)
            gone.abort()
            time.sleep(0.1)
            srv.send_signal(signal.SIGTERM)
            t.join(10)
        finally:
            self.redis.proc.send_signal(signal.SIGCONT)
        self.assertEqual(result["r"].status, 200)  # open: the verdict let it run
        self.assertEqual(srv.wait_exit(15), 0, srv.log()[-2000:])
        srv.stop()  # already gone: checks the log (no sanitizer report)
        self.assertIn("no reply within 1000 ms", srv.log())


@unittest.skipUnless(REDIS_SERVER and REDIS_CLI,
                     "redis-server is not installed (scripts/install-deps.sh --tests installs it)")
class RedisSettings(unittest.TestCase):
    def start_fails(self, **env):
        srv = sc.Server("http://127.0.0.1:9/v1", env=env)
        srv.start(wait=False)
        rc = srv.wait_exit(10)
        if rc is None:
            srv.kill()  # (the code before REDIS_* were read started anyway)
        srv.stopped = True
        self.assertIsNotNone(rc, "server kept running")
        self.assertNotEqual(rc, 0)
        return srv.log()

    def test_bad_settings_stop_the_start_without_quoting_the_password(self):
        for env, want in [
            ({"REDIS_URL": "rediss://:s3cr3t-pw@127.0.0.1:6379"}, "REDIS_URL must be"),
            ({"REDIS_URL": "redis://:s3cr3t-pw@127.0.0.1:99999"}, "REDIS_URL is not a valid"),
            ({"REDIS_URL": "redis://:s3cr3t-pw@127.0.0.1/x"}, "database number"),
            ({"REDIS_URL": "unix://relative"}, "unix:///absolute/path"),
            ({"REDIS_FAILURE": "maybe"}, "REDIS_FAILURE must be open or closed"),
            ({"REDIS_TIMEOUT_MS": "0"}, "REDIS_TIMEOUT_MS must be"),
            ({"REDIS_PREFIX": "a b"}, "REDIS_PREFIX must be"),
        ]:
            log = self.start_fails(**env)
            self.assertIn(want, log, env)
            self.assertNotIn("s3cr3t-pw", log)

    def test_unix_socket_password_and_database(self):
        redis = Redis(password="s3cr3t-pw%@").start()
        self.addCleanup(redis.stop)
        mock = sc.Mock().start()
        self.addCleanup(mock.stop)
        # the password percent-encoded in the URL, database 5, over the socket
        srv = sc.Server(mock.base_url, workers=1,
                        env={"REDIS_URL": f"redis://:s3cr3t-pw%25%40@127.0.0.1:{redis.port}/5",
                             "IP_RPM": "2"}).start()
        sock = sc.Server(mock.base_url, workers=1,
                         env={"REDIS_URL": f"unix://{redis.socket}", "IP_RPM": "2",
                              "REDIS_PREFIX": "s:"}).start()
        wrong = sc.Server(mock.base_url, workers=1,
                          env={"REDIS_URL": f"redis://:not-it@127.0.0.1:{redis.port}",
                               "IP_RPM": "2", "REDIS_FAILURE": "closed"}).start()
        try:
            self.assertEqual([chat(srv.port).status for _ in range(3)], [200, 200, 429])
            self.assertEqual(redis.cli("-n", "5", "EXISTS", "zju:ip:127.0.0.1"), "1")
            self.assertEqual(redis.cli("EXISTS", "zju:ip:127.0.0.1"), "0")
            # a wrong password: refused at AUTH, so no limits: closed says 503
            self.assertEqual(chat(wrong.port).status, 503)
            self.assertTrue(sc.wait_until(lambda: "AUTH refused" in wrong.log(), 5),
                            wrong.log())
            # none at all (over the socket): refused at the first command
            # (NOAUTH); open lets the request through, counted nowhere
            self.assertEqual(chat(sock.port).status, 200)
            self.assertTrue(sc.wait_until(lambda: "NOAUTH" in sock.log(), 5), sock.log())
        finally:
            for s_ in (srv, sock, wrong):
                s_.stop()
        for s_ in (srv, sock, wrong):
            self.assertNotIn("s3cr3t-pw", s_.log())
            self.assertNotIn("not-it", s_.log())

    def test_unix_socket(self):
        redis = Redis().start()
        self.addCleanup(redis.stop)
        mock = sc.Mock().start()
        self.addCleanup(mock.stop)
        srv = sc.Server(mock.base_url, workers=2,
                        env={"REDIS_URL": f"unix://{redis.socket}", "IP_RPM": "3"}).start()
        try:
            self.assertEqual([chat(srv.port).status for _ in range(5)],
                             [200, 200, 200, 429, 429])
            self.assertEqual(redis.cli("EXISTS", "zju:ip:127.0.0.1"), "1")
        finally:
            srv.stop()

    def test_password_never_logged_and_unreachable_is_not_fatal(self):
        # nothing listens there: the server starts, says so once per worker
        port = sc.free_port()
        srv = sc.Server("http://127.0.0.1:9/v1", workers=2,
                        env={"REDIS_URL": f"redis://:s3cr3t-pw@127.0.0.1:{port}/3",
                             "IP_RPM": "5"}).start()
        try:
            self.assertTrue(sc.wait_until(lambda: srv.log().count("redis: unreachable") == 2, 5),
                            srv.log())
            self.assertIn(f"127.0.0.1 port {port} (db 3", srv.log())
        finally:
            srv.stop()
        self.assertNotIn("s3cr3t-pw", srv.log())


if __name__ == "__main__":
    unittest.main()
