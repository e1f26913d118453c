"""docs/deploy/'s two-instance deployment, started from its committed files
and used as its users would: a real redis-server, two zju-chat-server
instances (two workers each) both started with docs/deploy/instance.env,
and nginx (Debian's nginx-light) with docs/deploy/nginx-two-instances.conf
terminating TLS with a self-signed certificate made by `openssl req` here,
the mock upstream behind. The files are templated only for what a loopback
test must change: ports, certificate paths, the key, Redis's address, the
tokens file's path (tests/e2e/nginxctl.py, instance_env() below); every
replacement must match, so a file that changes shape fails the test.

Through nginx over HTTPS: requests reach both instances, which name the
client from nginx's X-Forwarded-For (TRUSTED_PROXIES), not a forged one; a
token with rpm=N gets exactly N answers and then 429s with Retry-After in
the route's error shape, however nginx spreads requests, fired at once; a
stream comes event by event; GET /v1/usage reports the token's use on both
instances together; the official `openai` package (tests/node/
deploy-client.mjs, the README's recipe with the token as its key) lists
models, answers, streams piece by piece, and raises AuthenticationError and
RateLimitError. One instance killed with a stream in flight on it: that
stream ends cut where the client sees it (no final chunk, no [DONE]) and is
not sent again to the other instance; nginx goes on with the other (every
non-stream request answered). Both down: nginx's own 502, in the route's
error shape, with CORS headers for the site's origin only, which the openai
package raises as an InternalServerError with nginx's message. A rolling
restart (SIGTERM to one instance): its stream in flight ends complete, every
request meanwhile is answered. Redis down: the instances go on uncounted
(REDIS_FAILURE=open, from instance.env), or answer 503 limits_unavailable
once through nginx (closed). With IP_RPM set, each client address has its
own limit across both instances, whatever X-Forwarded-For it sends."""

import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import unittest

import mockctl
import nginxctl
import serverctl as sc
import test_limits_redis as redis_tests

HERE = os.path.dirname(os.path.abspath(__file__))
INSTANCE_ENV = os.path.join(sc.ROOT, "docs", "deploy", "instance.env")
NODE_CLIENT = os.path.join(sc.ROOT, "tests", "node", "deploy-client.mjs")
NODE = shutil.which("node")
SITE_ORIGIN = "https://chat.example.edu.cn"  # the origin both shipped files name
TIMEOUT = 15

# One token per test, so the tests of one deployment do not share limits.
TOKENS = {
    "spread": ("tok-deploy-spread-5b1e9c3a7d2f4e6a8c0b", ""),
    "rpm": ("tok-deploy-rpm-2c4e6a8b0d1f3a5c7e9b1d", "rpm=6"),
    "usage": ("tok-deploy-usage-7f3b1d9e5c2a4b6d8f0a", "rpm=100 tpm=100000 tpd=1000000 streams=4"),
    "node": ("tok-deploy-node-9a8b7c6d5e4f3a2b1c0d9e", ""),
    "node-limited": ("tok-deploy-nodelim-1f2e3d4c5b6a7f8e9d0c", "rpm=1"),
    "stream": ("tok-deploy-stream-3d5f7b9a1c3e5a7c9e1b", ""),
    "redis": ("tok-deploy-redisdown-8e6c4a2f0d8b6a4e2c", "rpm=2"),
}


def bearer(name):
    return {"Authorization": "Bearer " + TOKENS[name][0]}


def instance_env(path, key, upstream, redis_url, tokens_file):
    """docs/deploy/instance.env with what a loopback test must change
    replaced (each line must be there once), and the mock as the upstream."""
    with open(INSTANCE_ENV) as f:
        text = f.read()
    for name, value in (("ZJU_API_KEY", key), ("ACCESS_TOKENS_FILE", tokens_file),
                        ("REDIS_URL", redis_url), ("TRUSTED_PROXIES", "127.0.0.1")):
        text, n = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        if n != 1:
            raise AssertionError(f"docs/deploy/instance.env: expected one {name}= line, found {n}")
    with open(path, "w") as f:
        f.write(text + f"ZJU_BASE_URL={upstream}\n")
    os.chmod(path, 0o600)
    return path


def access_lines(server, path=None):
    """(client, path, status, token_name) of the instance's access lines."""
    out = []
    for m in re.finditer(r" access (\S+) \"\S+ (\S+)\" (\d+) .* token_name=(\S+)", server.log()):
        if path is None or m.group(2) == path:
            out.append((m.group(1), m.group(2), int(m.group(3)), m.group(4)))
    return out


class Deployment:
    """Redis, the mock, two instances and nginx, as docs/deploy/ says."""

    def __init__(self, env=None):
        self.env = env or {}  # beside instance.env (the environment wins over the file)
        self.tmp = tempfile.mkdtemp(prefix="zju-deploy2-")
        self.cert, self.key = mockctl.make_self_signed_cert(self.tmp)
        self.tls = ssl.create_default_context(cafile=self.cert)
        self.redis = self.mock = self.nginx = None
        self.instances = []

    def start(self):
        self.redis = redis_tests.Redis().start()
        self.mock = sc.Mock().start()
        # Inputs (the env file holds the key) live in a subdirectory: the
        # run's key scan reads only the outputs at the top of LOG_DIR.
        inputs = tempfile.mkdtemp(prefix="deploy2-", dir=sc.LOG_DIR)
        tokens = os.path.join(inputs, "tokens")
        with open(tokens, "w") as f:
            f.writelines(f"{tok} name={name} {limits}\n" for name, (tok, limits) in TOKENS.items())
        env_file = instance_env(os.path.join(inputs, "env"), sc.KEY, self.mock.base_url, self.redis.url(),
                                tokens)
        for _ in range(2):
            srv = sc.Server(None, env=self.env, key=None, workers=2, args=["--env-file", env_file]).start()
            self.instances.append(srv)
            if not sc.wait_until(lambda: srv.log().count("redis: connected;") == 2, 10):
                raise AssertionError(f"instance not connected to Redis: {srv.log()[-2000:]}")
        self.tls_port, http_port = sc.free_port(), sc.free_port()
        site = nginxctl.two_instances_site(self.tls_port, http_port, [s.port for s in self.instances],
                                           self.cert, self.key)
        self.nginx = nginxctl.Nginx(site, [self.tls_port, http_port]).start()
        return self

    def stop(self):
        """Stops everything; the instances still running must exit cleanly."""
        problems = []
        for srv in self.instances:
            try:
                srv.stop()
            except AssertionError as e:
                problems.append(str(e))
        for part in (self.nginx, self.mock, self.redis):
            if part is not None:
                try:
                    part.stop()
                except AssertionError as e:
                    problems.append(str(e))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if problems:
            raise AssertionError("\n".join(problems))

    # ------------------------------------------------------------ clients

    def connect(self, source="127.0.0.1"):
        return http.client.HTTPSConnection("127.0.0.1", self.tls_port, timeout=TIMEOUT, context=self.tls,
                                           source_address=(source, 0))

    def request(self, method, path, body=None, headers=None, source="127.0.0.1"):
        """One request through nginx over HTTPS; a serverctl Response."""
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn = self.connect(source)
        try:
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            resp = sc.Response(r.status, r.getheaders(), r.read())
        finally:
            conn.close()
        sc.record(b"%d " % resp.status + resp.body)
        return resp

    def stream(self, path, body, headers=None, on_chunk=None):
        """A streamed answer through nginx over HTTPS, read by serverctl.stream
        (chunks timed, clean_end only when the body ended well)."""
        return sc.stream(None, body, headers=headers, on_chunk=on_chunk, path=path,
                         connect=self.connect)

    def chat(self, route, token, content="hi", source="127.0.0.1", **fields):
        body = route.body(content=content)
        body.update(fields)
        return self.request("POST", route.path, body, bearer(token), source=source)

    def upstream_calls(self):
        return self.mock.stats()["chat_requests"]


def run_node_client(d, *args):
    """tests/node/deploy-client.mjs against the deployment's nginx, trusting
    its certificate as a machine with the site's CA does
    (NODE_EXTRA_CA_CERTS); what it printed, as JSON."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "NODE_EXTRA_CA_CERTS": d.cert}
    proc = subprocess.run([NODE, NODE_CLIENT, f"https://127.0.0.1:{d.tls_port}", *args],
                          capture_output=True, text=True, timeout=60, env=env)
    sc.record(proc.stdout.encode() + proc.stderr.encode())
    if proc.returncode != 0:
        raise AssertionError(f"node exited {proc.returncode}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


@unittest.skipUnless(redis_tests.REDIS_SERVER and redis_tests.REDIS_CLI,
                     "redis-server is not installed (scripts/install-deps.sh --tests installs it)")
class TwoInstances(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not sc.have_binaries():
            raise RuntimeError("binaries missing: run make asan")
        if not nginxctl.have_nginx():
            raise RuntimeError("nginx missing: make deps installs nginx-light")
        cls.d = Deployment()
        try:
            cls.d.start()
        except BaseException:
            cls.d.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        problems = cls.d.nginx.problems()
        cls.d.stop()
        if problems:
            raise AssertionError("nginx errors:\n" + "\n".join(problems))

    def assert_limit_429(self, route, r):
        self.assertEqual(r.status, 429, r)
        retry = r.header("Retry-After")
        self.assertTrue(retry and retry.isdigit() and 1 <= int(retry) <= 60, r.headers)
        msg = route.error_message(r.json())  # the route's shape, or it fails
        self.assertIn("6 requests per minute for this access token", msg)
        self.assertIn("application/json", r.header("Content-Type"))
        if route is sc.OPENAI:
            self.assertEqual(r.json()["error"]["code"], "rate_limited", r)

    def test_requests_reach_both_instances_naming_the_client(self):
        """Through nginx over HTTPS, requests are spread over both instances,
        and each names the client (here 127.0.0.2), not nginx and not the
        X-Forwarded-For the client made up."""
        for i in range(8):
            route = (sc.SEED, sc.OPENAI)[i % 2]
            r = self.d.request("POST", route.path, route.body(), headers={
                **bearer("spread"), "X-Forwarded-For": "203.0.113.9"}, source="127.0.0.2")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("Strict-Transport-Security"), "max-age=31536000")
        served = [[l for l in access_lines(s) if l[3] == "spread"] for s in self.d.instances]
        print(f"\n  8 requests through nginx: {len(served[0])} + {len(served[1])} on the two instances")
        self.assertEqual(len(served[0]) + len(served[1]), 8, served)
        for lines in served:
            self.assertGreater(len(lines), 0, served)
            self.assertEqual({l[0] for l in lines}, {"127.0.0.2"}, lines)

    def test_token_rpm_exact_through_nginx_however_spread(self):
        """rpm=6: twelve requests at once (both routes, streams and not, on
        their own TLS connections) give exactly 6 answers and 6 x 429 with
        Retry-After in the route's shape, over both instances; the upstream
        is called 6 times."""
        before = self.d.upstream_calls()
        plan = [((sc.SEED, sc.OPENAI)[i % 2], i % 4 >= 2) for i in range(12)]

        def one(item):
            route, stream = item
            if stream:
                s = self.d.stream(route.path, route.body(stream=True), bearer("rpm"))
                return route, sc.Response(s.status, s.headers, s.raw), s
            return route, self.d.chat(route, "rpm"), None

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, plan))
        statuses = [r.status for _, r, _ in results]
        served = [len([l for l in access_lines(s) if l[3] == "rpm"]) for s in self.d.instances]
        print(f"\n  rpm=6, 12 at once through nginx: {statuses.count(200)} x 200, {statuses.count(429)} x 429; "
              f"instances took {served[0]} + {served[1]}")
        self.assertEqual(sorted(statuses), [200] * 6 + [429] * 6, statuses)
        for route, r, s in results:
            if r.status == 429:
                self.assert_limit_429(route, r)
            elif s is not None:  # an admitted stream is complete
                self.assertTrue(s.clean_end, s.error)
                self.assertEqual(route.errors(s), [])
                self.assertEqual(route.saw_done(s), route.done)
        self.assertTrue(sc.wait_until(lambda: self.d.upstream_calls() - before == 6, 3),
                        self.d.upstream_calls() - before)
        self.assertTrue(all(served), served)
        self.assertEqual(sum(served), 12)
        # and the next one, whichever instance, is refused as well
        for route in (sc.OPENAI, sc.SEED, sc.OPENAI):
            self.assert_limit_429(route, self.d.chat(route, "rpm"))

    def test_stream_event_by_event_over_tls(self):
        """A slow stream (5 events 300 ms apart) on /v1 through nginx over
        TLS: the first event arrives long before the last is produced, and
        the stream ends with [DONE] and a clean end."""
        m = sc.model(events=5, reasoning=0, delay=300)
        s = self.d.stream(sc.OPENAI.path, sc.OPENAI.body(model=m, stream=True), bearer("stream"))
        self.assertEqual(s.status, 200, s.raw[:300])
        self.assertTrue(s.clean_end, s.error)
        self.assertTrue(sc.OPENAI.saw_done(s))
        t_first = next(t for t, c in s.chunks if b'"content"' in c)
        t_last = s.chunks[-1][0]
        print(f"\n  stream through nginx: first event at {t_first:.2f} s, end at {t_last:.2f} s, "
              f"{len(s.chunks)} reads")
        self.assertGreater(t_last - t_first, 0.6, s.chunks)
        self.assertEqual(sc.OPENAI.content(s), "你好，世界 🌍!")

    def test_usage_sums_both_instances(self):
        """GET /v1/usage through nginx (so on either instance, over several
        asks) reports what the token used through both."""
        spent = 0
        for i in range(6):
            r = self.d.chat(sc.OPENAI, "usage")
            self.assertEqual(r.status, 200, r)
            spent += r.json()["usage"]["total_tokens"]
        served = [len([l for l in access_lines(s) if l[3] == "usage"]) for s in self.d.instances]
        self.assertTrue(all(served), served)
        want_used = {"rpm": 6, "tpm": spent, "tpd": spent, "streams": 0}
        limits = {"rpm": 100, "tpm": 100000, "tpd": 1000000, "streams": 4}

        def report():
            r = self.d.request("GET", "/v1/usage", headers=bearer("usage"))
            self.assertEqual(r.status, 200, r)
            return r.json()

        # tokens count at a reply's end, just after the client has it
        self.assertTrue(sc.wait_until(lambda: report()["used"] == want_used, 5), (report(), want_used))
        for _ in range(4):  # new TLS connections: both instances answer
            u = report()
            self.assertEqual((u["token"], u["limits"], u["used"]), ("usage", limits, want_used))
            self.assertEqual(u["remaining"], {k: limits[k] - want_used[k] for k in limits})
        asked = [len([l for l in access_lines(s, "/v1/usage") if l[3] == "usage"]) for s in self.d.instances]
        print(f"\n  /v1/usage through nginx: used {want_used}; instances answered {asked[0]} + {asked[1]}")
        self.assertTrue(all(asked), asked)

    @unittest.skipUnless(NODE, "node is not installed (make test-deps installs it)")
    def test_openai_package_through_nginx(self):
        """The official openai package (the README's recipe, the token as
        its key) through nginx over TLS, trusting the site's certificate
        as a machine with its CA does (NODE_EXTRA_CA_CERTS)."""
        slow = sc.model(events=5, reasoning=0, delay=300)
        out = run_node_client(self.d, TOKENS["node"][0], TOKENS["node-limited"][0], slow)
        print(f"\n  openai package through nginx: {json.dumps(out, ensure_ascii=False)[:400]}...")
        self.assertIn(sc.DEFAULT_MODEL, out["models"].get("ok", []), out["models"])
        done = out["completion"].get("ok")
        self.assertTrue(done and done["object"] == "chat.completion" and done["content"], out["completion"])
        pieces = out["stream"].get("ok", {}).get("pieces")
        self.assertTrue(pieces, out["stream"])
        self.assertEqual("".join(p for _, p in pieces), "你好，世界 🌍!")
        self.assertGreater(pieces[-1][0] - pieces[0][0], 600, pieces)  # ms: piece by piece
        wrong = out["wrongToken"].get("error", {})
        self.assertEqual((wrong.get("name"), wrong.get("status")), ("AuthenticationError", 401), out["wrongToken"])
        self.assertEqual(out["limitedFirst"], {"ok": "chat.completion"})
        limited = out["limitedSecond"].get("error", {})
        self.assertEqual((limited.get("name"), limited.get("status"), limited.get("code")),
                         ("RateLimitError", 429, "rate_limited"), out["limitedSecond"])
        self.assertTrue(limited.get("retryAfter", "").isdigit(), limited)


def metric(server, name):
    """The value of an unlabelled metric of one instance (its /metrics, read
    directly from loopback as METRICS_ALLOW permits)."""
    r = sc.request(server.port, "GET", "/metrics", timeout=5)
    m = re.search(rf"^{name} (\S+)$", r.body.decode(), re.M)
    return float(m.group(1)) if m else None


@unittest.skipUnless(redis_tests.REDIS_SERVER and redis_tests.REDIS_CLI,
                     "redis-server is not installed (scripts/install-deps.sh --tests installs it)")
class TwoInstancesFailover(unittest.TestCase):
    def setUp(self):
        if not sc.have_binaries():
            self.fail("binaries missing: run make asan")
        if not nginxctl.have_nginx():
            self.fail("nginx missing: make deps installs nginx-light")
        self.d = Deployment()
        self.addCleanup(self.d.stop)
        self.d.start()

    def test_instance_killed_then_both(self):
        d = self.d
        # A long stream through nginx; find the instance that carries it.
        got = []
        holder = {}

        def on_chunk(s, data):
            got.append(data)
            if len(got) == 1:
                holder["first"] = time.monotonic()
                carrying = [srv for srv in d.instances if metric(srv, "zju_streams_in_flight") == 1]
                holder["carrying"] = carrying
                holder["calls"] = d.upstream_calls()
                for srv in carrying:
                    srv.kill()  # SIGKILL, supervisor and workers: a crash
            return True

        m = sc.model(events=40, reasoning=0, delay=100)
        s = d.stream(sc.OPENAI.path, sc.OPENAI.body(model=m, stream=True), bearer("stream"), on_chunk=on_chunk)
        self.assertEqual(len(holder.get("carrying", [])), 1, holder)
        dead = holder["carrying"][0]
        alive = next(srv for srv in d.instances if srv is not dead)
        # The client sees the cut: no clean end, no [DONE], no finish.
        self.assertEqual(s.status, 200)
        self.assertFalse(s.clean_end, f"the cut stream ended as if complete: {s.raw[-300:]!r}")
        self.assertFalse(sc.OPENAI.saw_done(s), s.raw[-300:])
        events = [json.loads(x) for x in s.data() if x != b"[DONE]"]
        self.assertFalse(any(c.get("finish_reason") for e in events for c in e.get("choices", [])))
        print(f"\n  instance killed mid-stream: the client got {len(events)} events, then "
              f"{type(s.error).__name__}: {s.error}")
        # Not sent again: the mock got no other chat request, and its stream
        # for the dead instance is closed.
        self.assertEqual(d.mock.wait_stat("streams_active", lambda n: n == 0, timeout=5)["streams_active"], 0)
        self.assertEqual(d.upstream_calls(), holder["calls"])
        # nginx goes on with the other instance: every request answered.
        statuses = []
        for i in range(10):
            route = (sc.SEED, sc.OPENAI)[i % 2]
            statuses.append(d.chat(route, "spread").status)
        statuses.append(d.request("GET", "/v1/models", headers=bearer("spread")).status)
        s2 = d.stream(sc.OPENAI.path, sc.OPENAI.body(model=sc.model(events=3), stream=True), bearer("spread"))
        statuses.append(s2.status if s2.clean_end and sc.OPENAI.saw_done(s2) else f"{s2.status} cut")
        print(f"  then through nginx: {statuses}")
        self.assertEqual(statuses, [200] * 12)
        self.assertEqual(len([l for l in access_lines(alive) if l[3] == "spread"]), 12)
        # nginx logged only the dead instance's failures
        dead_port = f"127.0.0.1:{dead.port}"
        others = [p for p in d.nginx.problems() if dead_port not in p]
        self.assertEqual(others, [])
        # Both down: nginx's own 502 in the route's shape, readable by the
        # site's origin (CORS headers), by no other origin.
        alive.kill()
        for route in (sc.OPENAI, sc.SEED):
            r = d.request("POST", route.path, route.body(), {**bearer("spread"), "Origin": SITE_ORIGIN})
            self.assertEqual(r.status, 502, r)
            self.assertIn("unavailable", route.error_message(r.json()))
            self.assertEqual(r.header("Access-Control-Allow-Origin"), SITE_ORIGIN, r.headers)
            self.assertEqual(r.header("Vary"), "Origin", r.headers)
            r = d.request("POST", route.path, route.body(), {**bearer("spread"), "Origin": "https://evil.example"})
            self.assertEqual(r.status, 502, r)
            self.assertIsNone(r.header("Access-Control-Allow-Origin"), r.headers)
        # the browser's preflight before such a POST: answered by nginx (a
        # failed preflight would hide the 502 from the page)
        r = d.request("OPTIONS", sc.OPENAI.path, headers={
            "Origin": SITE_ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        self.assertEqual(r.status, 204, r)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), SITE_ORIGIN, r.headers)
        self.assertEqual(r.header("Access-Control-Allow-Headers"), "authorization,content-type", r.headers)
        self.assertIn("POST", r.header("Access-Control-Allow-Methods"), r.headers)
        # what the openai package makes of it: an APIError with nginx's message
        if NODE:
            out = run_node_client(d, TOKENS["spread"][0], "down")
            err = out["completion"].get("error", {})
            self.assertEqual((err.get("name"), err.get("status"), err.get("code")),
                             ("InternalServerError", 502, "gateway_unavailable"), out)
            self.assertIn("the chat server is unavailable", err.get("message"), out)

    def test_rolling_restart(self):
        """SIGTERM to one instance (a restart's first half) with a stream in
        flight on it: the stream ends complete, and every request sent
        through nginx meanwhile is answered, by the other instance (the
        draining one refuses new connections, so nginx moves on before
        anything was sent)."""
        d = self.d
        holder = {}

        def on_chunk(s, data):
            if "draining" not in holder:
                carrying = [srv for srv in d.instances if metric(srv, "zju_streams_in_flight") == 1]
                holder["draining"] = carrying
                for srv in carrying:
                    srv.send_signal(signal.SIGTERM)
            return True

        m = sc.model(events=20, reasoning=0, delay=100)
        reader = concurrent.futures.ThreadPoolExecutor(1)
        future = reader.submit(d.stream, sc.OPENAI.path, sc.OPENAI.body(model=m, stream=True), bearer("stream"),
                               on_chunk)
        self.assertTrue(sc.wait_until(lambda: "draining" in holder, 5), holder)
        self.assertEqual(len(holder["draining"]), 1, holder)
        draining = holder["draining"][0]
        self.assertTrue(draining.wait_log("worker draining"), draining.log()[-2000:])
        statuses = []
        while not future.done() and len(statuses) < 40:
            route = (sc.SEED, sc.OPENAI)[len(statuses) % 2]
            statuses.append(d.chat(route, "spread").status)
        result = future.result(timeout=TIMEOUT)
        reader.shutdown()
        print(f"\n  rolling restart: the draining instance's stream ended clean={result.clean_end}; "
              f"{len(statuses)} requests meanwhile: {sorted(set(statuses))}")
        self.assertTrue(result.clean_end and sc.OPENAI.saw_done(result), result.raw[-300:])
        self.assertEqual(sc.OPENAI.events(result)[-1]["choices"][0]["finish_reason"], "stop")
        self.assertGreater(len(statuses), 3)
        self.assertEqual(set(statuses), {200})
        self.assertEqual(draining.wait_exit(10), 0, draining.log()[-2000:])
        draining.stop()  # exit 0 seen; checks its log (no sanitizer report, no key)

    def test_redis_down_requests_go_on_uncounted(self):
        """REDIS_FAILURE=open (instance.env): with Redis gone, a token of
        rpm=2 is served past its limit through nginx, on both instances."""
        d = self.d
        self.assertEqual([d.chat(sc.OPENAI, "redis").status for _ in range(3)], [200, 200, 429])
        d.redis.stop()
        statuses = [d.chat(sc.OPENAI, "redis").status for _ in range(6)]
        print(f"\n  Redis down, rpm=2 token through nginx: {statuses}")
        self.assertEqual(statuses, [200] * 6)
        for srv in d.instances:
            self.assertTrue(srv.wait_log("redis: unreachable"), srv.log()[-2000:])


@unittest.skipUnless(redis_tests.REDIS_SERVER and redis_tests.REDIS_CLI,
                     "redis-server is not installed (scripts/install-deps.sh --tests installs it)")
class TwoInstancesOtherSettings(unittest.TestCase):
    """The deployment with one setting added beside instance.env."""

    def test_ip_rpm_per_client_across_instances(self):
        """IP_RPM=3 (set beside instance.env): through nginx each client
        address (127.0.0.3, 127.0.0.4) gets exactly 3 answers over both
        instances, whatever X-Forwarded-For it sends: nginx's header and
        TRUSTED_PROXIES name the client, so clients do not share nginx's
        limit and cannot pick their own."""
        d = Deployment(env={"IP_RPM": "3"})
        self.addCleanup(d.stop)
        d.start()
        got = {}
        for source in ("127.0.0.3", "127.0.0.4"):
            got[source] = [d.request("POST", sc.OPENAI.path, sc.OPENAI.body(), headers={
                **bearer("spread"), "X-Forwarded-For": f"198.51.100.{i}"}, source=source).status
                for i in range(5)]
        print(f"\n  IP_RPM=3 through nginx, two clients: {got}")
        self.assertEqual(got, {s: [200] * 3 + [429] * 2 for s in got})
        for srv in d.instances:
            lines = access_lines(srv, sc.OPENAI.path)
            self.assertTrue(lines and {l[0] for l in lines} <= {"127.0.0.3", "127.0.0.4"}, lines)
        self.assertEqual(d.redis.cli("EXISTS", "zju:ip:127.0.0.3"), "1")


    def test_redis_down_closed_503_through_nginx(self):
        """REDIS_FAILURE=closed (instead of instance.env's open): with Redis
        gone, a request with limits gets the instance's 503
        limits_unavailable with Retry-After, readable by the site's origin,
        passed on by nginx once (not tried again on the other instance,
        which shares the Redis), and the upstream is not called."""
        d = Deployment(env={"REDIS_FAILURE": "closed"})
        self.addCleanup(d.stop)
        d.start()
        self.assertEqual(d.chat(sc.OPENAI, "redis").status, 200)
        d.redis.stop()
        before = d.upstream_calls()
        for route in (sc.OPENAI, sc.SEED, sc.OPENAI, sc.SEED):
            r = d.request("POST", route.path, route.body(), {**bearer("redis"), "Origin": SITE_ORIGIN})
            self.assertEqual(r.status, 503, r)
            self.assertTrue((r.header("Retry-After") or "").isdigit(), r.headers)
            self.assertEqual(r.header("Access-Control-Allow-Origin"), SITE_ORIGIN, r.headers)
            self.assertIn("Retry-After", r.header("Access-Control-Expose-Headers") or "", r.headers)
            route.error_message(r.json())
            if route is sc.OPENAI:
                self.assertEqual(r.json()["error"]["code"], "limits_unavailable", r)
        self.assertEqual(d.upstream_calls(), before)
        refused = sum(len([l for l in access_lines(s) if l[2] == 503]) for s in d.instances)
        self.assertEqual(refused, 4)  # one instance answered each, none twice


if __name__ == "__main__":
    unittest.main()
