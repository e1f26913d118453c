"""Access tokens (ACCESS_TOKENS_FILE), end to end against the real server and
the mock upstream: every API route wants Authorization: Bearer <token> (401
in the route's error shape, the upstream never called), a token's models=
refuses other models (403 naming the model), /healthz and CORS preflights
stay open, plain and sha256: tokens, the token's name in the access line,
SIGHUP reloading the file while a stream is in flight (the stream completes;
the new token works and the removed one is refused after; a restarted worker
serves the reloaded table), a bad file refused at start (exit 2, file:line)
and at reload (the old table kept, a log line), the open server without the
setting, and the tokens themselves never in a log line, a response or the
upstream's request."""
import hashlib
import json
import os
import re
import secrets
import signal
import tempfile
import time
import unittest

import serverctl as sc

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"
SEED = "/api/chat"

# Distinctive per run, so a grep over every log and response finds a leak.
RUN = secrets.token_hex(6)
ALICE = f"tok-alice-{RUN}-0123456789"  # plain in the file, some models only
BOB = f"tok-bob-{RUN}-abcdefghij"  # as sha256: in the file, any model
CAROL = f"tok-carol-{RUN}-klmnopqrst"  # added by a reload
ALL_TOKENS = (ALICE, BOB, CAROL)
ALICE_MODELS = "deepseek-v3-671b,bge-m3"


def sha256_hex(token):
    return hashlib.sha256(token.encode()).hexdigest()


def write_file(path, text):
    # A new file renamed into place, as an editor or config manager does: a
    # reload never sees half a file.
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def tokens_file(text):
    """A tokens file in a subdirectory of the log directory (inputs hold the
    tokens; the run's leak scans read only the files at its top)."""
    d = tempfile.mkdtemp(prefix="tokens-", dir=sc.LOG_DIR)
    path = os.path.join(d, "tokens.conf")
    write_file(path, text)
    return path


STANDARD = (
    "# the gateway's callers\n"
    f"{ALICE} name=alice models={ALICE_MODELS} rpm=60 tpm=100000 tpd=1000000 streams=2\n"
    "\n"
    f"sha256:{sha256_hex(BOB)}  name=bob   # the CI's token, stored hashed\n"
)


def bearer(token):
    return {"Authorization": "Bearer " + token}


def chat_body(model=None, stream=False):
    b = {"messages": [{"role": "user", "content": "hi"}]}
    if model:
        b["model"] = model
    if stream:
        b["stream"] = True
    return b


def seed_body(model=None, stream=False):
    b = {"user_content": "hi"}
    if model:
        b["model"] = model
    if stream:
        b["stream"] = True
    return b


def post(port, path, body, token=None, headers=None, timeout=15):
    h = {"Content-Type": "application/json"}
    if token is not None:
        h.update(bearer(token))
    h.update(headers or {})
    return sc.request(port, "POST", path, body=json.dumps(body).encode(), headers=h,
                      timeout=timeout)


def access_lines(log, path):
    return [l for l in log.splitlines() if f' access ' in l and f'"POST {path}"' in l]


class Harness(unittest.TestCase):
    workers = 2

    @classmethod
    def setUpClass(cls):
        cls.path = tokens_file(STANDARD)
        cls.mock = sc.Mock()
        cls.mock.start()
        cls.server = sc.Server(upstream=cls.mock.url, env={"ACCESS_TOKENS_FILE": cls.path},
                               workers=cls.workers)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
            assert_no_token_in(cls, cls.server.log() + cls.mock.stderr())
        finally:
            cls.mock.stop()

    def setUp(self):
        self.mock.reset()
        self.mock.reset_stats()

    def upstream_calls(self):
        st = self.mock.stats()
        return st["chat_requests"] + st["embedding_requests"]

    def assertSeedError(self, r, status):
        self.assertEqual(r.status, status, r)
        self.assertIn("application/json", r.header("Content-Type"))
        err = r.json()["error"]
        self.assertIsInstance(err, str, r.body)
        return err

    def assertOpenAIError(self, r, status, code):
        self.assertEqual(r.status, status, r)
        self.assertIn("application/json", r.header("Content-Type"))
        err = r.json()["error"]
        self.assertIsInstance(err, dict, r.body)
        self.assertEqual(err["code"], code, err)
        return err["message"]


def assert_no_token_in(case, text):
    for t in ALL_TOKENS:
        if t in text:
            line = next(l for l in text.splitlines() if t in l)
            raise AssertionError(f"an access token in a log line: {line[:300]}")


class Refused(Harness):
    def test_missing_token_401_in_each_routes_shape(self):
        for stream in (False, True):
            r = post(self.server.port, SEED, seed_body(stream=stream))
            msg = self.assertSeedError(r, 401)
            self.assertIn("access token is required", msg)
            self.assertEqual(r.header("WWW-Authenticate"), "Bearer")
            r = post(self.server.port, CHAT, chat_body(stream=stream))
            msg = self.assertOpenAIError(r, 401, "missing_access_token")
            self.assertEqual(r.json()["error"]["type"], "authentication_error")
            self.assertEqual(r.header("WWW-Authenticate"), "Bearer")
        r = post(self.server.port, EMB, {"input": "x"})
        self.assertOpenAIError(r, 401, "missing_access_token")
        self.assertEqual(self.upstream_calls(), 0, "the upstream was called")

    def test_model_list_needs_a_token(self):
        for path in ("/v1/models", "/v1/models/deepseek-v3-671b"):
            with self.subTest(path=path):
                r = sc.request(self.server.port, "GET", path)
                self.assertOpenAIError(r, 401, "missing_access_token")
                r = sc.request(self.server.port, "GET", path, headers=bearer(BOB))
                self.assertEqual(r.status, 200, r)

    def test_wrong_or_malformed_token_401_without_echo(self):
        wrong = ALICE[:-1] + "X"
        cases = [
            bearer(wrong),
            bearer(sha256_hex(BOB)),  # the digest in the file is not the token
            {"Authorization": "Basic " + ALICE},
            {"Authorization": ALICE},
            {"Authorization": "Bearer " + ALICE + " extra"},
            {"Authorization": "Bearer"},
        ]
        for h in cases:
            r = post(self.server.port, SEED, seed_body(), headers=h)
            msg = self.assertSeedError(r, 401)
            self.assertIn("not valid", msg)
            self.assertEqual(r.header("WWW-Authenticate"), 'Bearer error="invalid_token"')
            r = post(self.server.port, CHAT, chat_body(), headers=h)
            self.assertOpenAIError(r, 401, "invalid_access_token")
            for t in (wrong, ALICE):
                self.assertNotIn(t.encode(), r.body)
                self.assertNotIn(t, json.dumps(r.headers))
        self.assertEqual(self.upstream_calls(), 0, "the upstream was called")

    def test_two_authorization_headers_refused(self):
        conn = sc.RawConn(self.server.port)
        try:
            body = json.dumps(chat_body()).encode()
            conn.send(
                (f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Authorization: Bearer {BOB}\r\nAuthorization: Bearer {ALICE}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
            r = conn.read_response()
        finally:
            conn.close()
        self.assertOpenAIError(r, 401, "invalid_access_token")

    def test_model_not_allowed_403_upstream_never_called(self):
        r = post(self.server.port, CHAT, chat_body("deepseek-r1-671b"), token=ALICE)
        msg = self.assertOpenAIError(r, 403, "model_not_allowed")
        self.assertEqual(r.json()["error"]["type"], "permission_error")
        self.assertIn('"deepseek-r1-671b"', msg)
        self.assertNotIn(ALICE, msg)
        r = post(self.server.port, CHAT, chat_body("deepseek-r1-671b", stream=True), token=ALICE)
        self.assertOpenAIError(r, 403, "model_not_allowed")
        r = post(self.server.port, SEED, seed_body("deepseek-r1-671b"), token=ALICE)
        self.assertIn("deepseek-r1-671b", self.assertSeedError(r, 403))
        # no model named: the default one (deepseek-r1-671b) is checked too
        r = post(self.server.port, SEED, seed_body(), token=ALICE)
        self.assertSeedError(r, 403)
        r = post(self.server.port, CHAT, chat_body(), token=ALICE)
        self.assertOpenAIError(r, 403, "model_not_allowed")
        # a longer name that starts with an allowed one is another model
        r = post(self.server.port, CHAT, chat_body("deepseek-v3-671b-x"), token=ALICE)
        self.assertOpenAIError(r, 403, "model_not_allowed")
        r = post(self.server.port, CHAT, chat_body("deepseek-v3-671b" + "x" * 200), token=ALICE)
        self.assertOpenAIError(r, 403, "model_not_allowed")
        r = post(self.server.port, EMB, {"input": "x", "model": "text-embedding-3-small"},
                 token=ALICE)
        self.assertOpenAIError(r, 403, "model_not_allowed")
        self.assertEqual(self.upstream_calls(), 0, "the upstream was called")
        line = access_lines(self.server.log(), EMB)[-1]
        self.assertIn(" 403 ", line)
        self.assertIn("token_name=alice", line)


class Allowed(Harness):
    def test_plain_token_with_an_allowed_model_both_routes(self):
        r = post(self.server.port, CHAT, chat_body("deepseek-v3-671b"), token=ALICE)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["object"], "chat.completion")
        r = post(self.server.port, SEED, seed_body("deepseek-v3-671b"), token=ALICE)
        self.assertEqual(r.status, 200, r)
        r = post(self.server.port, EMB, {"input": "x"}, token=ALICE)  # default bge-m3
        self.assertEqual(r.status, 200, r)
        s = sc.stream(self.server.port, chat_body("deepseek-v3-671b", stream=True),
                      headers=bearer(ALICE), path=CHAT)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.data()[-1], b"[DONE]")

    def test_model_list_shows_what_the_token_may_use(self):
        full = sc.request(self.server.port, "GET", "/v1/models", headers=bearer(BOB)).json()
        ids = [m["id"] for m in full["data"]]
        self.assertIn("deepseek-r1-671b", ids)
        r = sc.request(self.server.port, "GET", "/v1/models", headers=bearer(ALICE))
        self.assertEqual(r.status, 200, r)
        self.assertEqual([m["id"] for m in r.json()["data"]],
                         [i for i in ids if i in ALICE_MODELS.split(",")])
        r = sc.request(self.server.port, "GET", "/v1/models/deepseek-r1-671b", headers=bearer(ALICE))
        self.assertOpenAIError(r, 404, "model_not_found")
        r = sc.request(self.server.port, "GET", "/v1/models/deepseek-v3-671b", headers=bearer(ALICE))
        self.assertEqual(r.json()["id"], "deepseek-v3-671b")

    def test_hashed_token_any_model(self):
        for model in ("deepseek-r1-671b", "deepseek-v3-671b", None):
            r = post(self.server.port, CHAT, chat_body(model), token=BOB)
            self.assertEqual(r.status, 200, r)
            r = post(self.server.port, SEED, seed_body(model), token=BOB)
            self.assertEqual(r.status, 200, r)
        # the scheme in any case (RFC 9110)
        r = post(self.server.port, SEED, seed_body(), headers={"Authorization": "bearer " + BOB})
        self.assertEqual(r.status, 200, r)

    def test_token_never_goes_upstream(self):
        """The library sends the server's key, and no header of the client."""
        for path, body in ((SEED, seed_body()), (CHAT, chat_body()), (EMB, {"input": "x"})):
            r = post(self.server.port, path, body, token=BOB)
            self.assertEqual(r.status, 200, r)
            last = self.mock.last()
            self.assertEqual(last["headers"]["authorization"], "Bearer " + sc.KEY, path)
            self.assertNotIn(BOB, json.dumps(last), path)
        s = sc.stream(self.server.port, seed_body(stream=True), headers=bearer(BOB))
        self.assertEqual(s.status, 200)
        last = self.mock.last()
        self.assertEqual(last["headers"]["authorization"], "Bearer " + sc.KEY)
        self.assertNotIn(BOB, json.dumps(last))

    def test_access_line_names_the_token(self):
        post(self.server.port, SEED, seed_body(), token=BOB)
        post(self.server.port, CHAT, chat_body("deepseek-v3-671b"), token=ALICE)
        post(self.server.port, CHAT, chat_body())
        sc.request(self.server.port, "GET", "/healthz")

        def lines():
            log = self.server.log()
            return access_lines(log, SEED), access_lines(log, CHAT)

        self.assertTrue(sc.wait_until(lambda: lines()[1] and " 401 " in lines()[1][-1], 3))
        seed, chat = lines()
        self.assertTrue(any(" 200 " in l and l.endswith("token_name=bob") for l in seed), seed)
        self.assertTrue(any(" 200 " in l and l.endswith("token_name=alice") for l in chat), chat)
        self.assertTrue(chat[-1].endswith("token_name=-"), chat[-1])
        health = [l for l in self.server.log().splitlines() if '"GET /healthz"' in l]
        self.assertTrue(health[-1].endswith("token_name=-"), health[-1])


class Open(Harness):
    def test_healthz_and_preflight_need_no_token(self):
        r = sc.request(self.server.port, "GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        r = sc.request(self.server.port, "HEAD", "/healthz")
        self.assertEqual(r.status, 200, r)
        for path in (SEED, CHAT, EMB):
            # a browser's preflight carries no credentials, and must allow
            # the Authorization header the real request will send
            r = sc.request(self.server.port, "OPTIONS", path, headers={
                "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            self.assertEqual(r.status, 204, (path, r))
            self.assertIn("authorization", r.header("Access-Control-Allow-Headers").lower())
        # not an API route: still 404 / 405 as before
        self.assertEqual(sc.request(self.server.port, "GET", "/v1/nothing").status, 404)
        self.assertEqual(sc.request(self.server.port, "GET", SEED).status, 405)


class Reload(unittest.TestCase):
    """SIGHUP with a stream in flight, a bad file, a restarted worker. One
    worker, so that every request meets the reloaded worker."""

    def setUp(self):
        self.path = tokens_file(STANDARD)
        self.mock = sc.Mock().start()
        self.server = sc.Server(upstream=self.mock.url, env={"ACCESS_TOKENS_FILE": self.path},
                                workers=1).start()

    def tearDown(self):
        try:
            self.server.stop()
            assert_no_token_in(self, self.server.log() + self.mock.stderr())
        finally:
            self.mock.stop()

    def reloads(self):
        """Lines of a worker that (re)loaded the file."""
        return len(re.findall(r"\] access tokens: \d+ loaded from " + re.escape(self.path),
                              self.server.log()))

    def hup_and_wait(self, want_line):
        before = self.reloads()
        self.server.send_signal(signal.SIGHUP)
        if want_line:  # the supervisor's, then the worker's
            ok = self.server.wait_log(re.compile(want_line), 5) and sc.wait_until(
                lambda: self.reloads() >= before + 1, 5)
            self.assertTrue(ok, self.server.log()[-2000:])

    def test_reload_during_a_stream(self):
        self.mock.config(events=30, delay=60)  # ~2 s of events
        seen = {}

        def on_chunk(s, data):
            if "reloaded_at" in seen:
                return True
            # the stream is running: alice is taken out, carol comes in
            write_file(self.path, f"sha256:{sha256_hex(CAROL)} name=carol\n")
            self.hup_and_wait(r"SIGHUP: 1 access tokens in ")
            seen["reloaded_at"] = len(s.chunks)
            # new requests meet the new table while alice's stream goes on
            seen["carol"] = post(self.server.port, CHAT, chat_body(), token=CAROL).status
            seen["alice"] = post(self.server.port, CHAT, chat_body("deepseek-v3-671b"),
                                 token=ALICE).status
            seen["bob"] = post(self.server.port, SEED, seed_body(), token=BOB).status
            return True

        s = sc.stream(self.server.port, chat_body("deepseek-v3-671b", stream=True),
                      headers=bearer(ALICE), path=CHAT, on_chunk=on_chunk, timeout=30)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual([d for d in s.data() if b'"error"' in d], [])
        self.assertEqual(s.data()[-1], b"[DONE]")
        self.assertEqual(len(s.data()), len(self.mock.direct(
            chat_body("deepseek-v3-671b", stream=True), stream=True)), "events lost")
        self.assertIn("reloaded_at", seen, "the stream ended before the reload")
        self.assertGreater(len(s.chunks), seen["reloaded_at"], "nothing came after the reload")
        self.assertEqual((seen["carol"], seen["alice"], seen["bob"]), (200, 401, 401), seen)
        # after: the same
        self.assertEqual(post(self.server.port, SEED, seed_body(), token=CAROL).status, 200)
        self.assertEqual(post(self.server.port, SEED, seed_body("deepseek-v3-671b"),
                              token=ALICE).status, 401)
        # the stream's access line names the token it began with
        stream_line = [l for l in access_lines(self.server.log(), CHAT) if "stream=true" in l]
        self.assertTrue(stream_line and " 200 " in stream_line[-1], stream_line)
        self.assertTrue(stream_line[-1].endswith("token_name=alice"), stream_line[-1])

    def test_bad_file_on_reload_keeps_the_old_table(self):
        write_file(self.path, STANDARD + f"{CAROL} name=carol rpm=0\n")
        before = self.reloads()
        self.server.send_signal(signal.SIGHUP)
        want = f"{self.path}:5: rpm= wants a positive integer (leave it out for no limit); " \
               "keeping the 2 tokens loaded before"
        self.assertTrue(self.server.wait_log(want, 5), self.server.log()[-2000:])
        time.sleep(0.3)
        self.assertEqual(self.reloads(), before, "a worker reloaded a bad file")
        self.assertEqual(post(self.server.port, SEED, seed_body(), token=BOB).status, 200)
        self.assertEqual(post(self.server.port, SEED, seed_body(), token=CAROL).status, 401)
        # a missing file too
        os.unlink(self.path)
        self.server.send_signal(signal.SIGHUP)
        self.assertTrue(self.server.wait_log(
            f"{self.path}: cannot open: No such file or directory; keeping the 2 tokens", 5),
            self.server.log()[-2000:])
        self.assertEqual(post(self.server.port, SEED, seed_body(), token=BOB).status, 200)

    def test_restarted_worker_serves_the_reloaded_table(self):
        write_file(self.path, f"{CAROL} name=carol\n")
        self.hup_and_wait(r"SIGHUP: 1 access tokens in ")
        self.assertEqual(post(self.server.port, SEED, seed_body(), token=CAROL).status, 200)
        victim = self.server.workers_pids()[0]
        os.kill(victim, signal.SIGKILL)
        self.assertTrue(sc.wait_until(lambda: self.server.workers_pids() not in ([], [victim]), 5))
        self.server.wait_ready()
        self.assertEqual(post(self.server.port, SEED, seed_body(), token=CAROL).status, 200)
        self.assertEqual(post(self.server.port, SEED, seed_body(), token=BOB).status, 401)


class Startup(unittest.TestCase):
    def refused(self, env):
        srv = sc.Server("http://127.0.0.1:9/v1", env=env)
        srv.start(wait=False)
        rc = srv.wait_exit(10)
        srv.stopped = True
        if rc is None:
            srv.kill()
            raise AssertionError(f"server started instead of refusing: {srv.log()[-2000:]}")
        return rc, srv.log()

    def test_bad_file_stops_the_start_with_file_and_line(self):
        for text, line, why in (
            (STANDARD + f"{CAROL} name=alice\n", 5, 'name "alice" is already used on line 2'),
            (STANDARD + f"{ALICE} name=alice-again\n", 5, "the same token as line 2"),
            (f"# x\n{CAROL} name=carol models=a,,b\n", 2, "models= has an empty entry"),
            (f"{CAROL} name=carol {ALICE}\n", 1, "expected key=value"),
            ("sha256:abc name=x\n", 1, "64 hex digits"),
            (f"{CAROL} name=carol\ntoo-short name=y\n", 2, "shorter than 16"),
        ):
            path = tokens_file(text)
            rc, log = self.refused({"ACCESS_TOKENS_FILE": path})
            self.assertEqual(rc, 2, log)
            first = log.splitlines()[0]
            self.assertTrue(first.startswith(f"zju-chat-server: {path}:{line}: "), log)
            self.assertIn(why, first)
            assert_no_token_in(self, log)
        rc, log = self.refused({"ACCESS_TOKENS_FILE": "/nonexistent/tokens.conf"})
        self.assertEqual(rc, 2, log)
        self.assertIn("/nonexistent/tokens.conf: cannot open", log)

    def test_without_the_setting_the_api_is_open_and_says_so(self):
        with sc.Mock() as mock, sc.Server(mock.url) as srv:
            self.assertIn("WARNING: ACCESS_TOKENS_FILE is not set", srv.log())
            r = post(srv.port, SEED, seed_body())
            self.assertEqual(r.status, 200, r)
            r = post(srv.port, CHAT, chat_body(), token="anything-at-all-goes-here")
            self.assertEqual(r.status, 200, r)
            self.assertTrue(srv.wait_log(re.compile(r'"POST /v1/chat/completions" 200 .*token_name=-')))
            srv.stop()

    def test_a_file_without_tokens_refuses_every_api_request(self):
        path = tokens_file("# nobody yet\n")
        with sc.Mock() as mock, sc.Server(mock.url, env={"ACCESS_TOKENS_FILE": path}) as srv:
            self.assertIn(f"WARNING: access tokens: none in {path}", srv.log())
            self.assertEqual(post(srv.port, SEED, seed_body()).status, 401)
            self.assertEqual(post(srv.port, CHAT, chat_body(), token=BOB).status, 401)
            self.assertEqual(sc.request(srv.port, "GET", "/healthz").status, 200)
            srv.stop()

    def test_startup_line_counts_the_tokens(self):
        path = tokens_file(STANDARD)
        with sc.Mock() as mock, sc.Server(mock.url, env={"ACCESS_TOKENS_FILE": path}) as srv:
            self.assertIn(f"access tokens: 2 loaded from {path}", srv.log())
            self.assertNotIn("ACCESS_TOKENS_FILE is not set", srv.log())
            srv.stop()

    def test_the_example_file_loads(self):
        path = os.path.join(sc.ROOT, "docs", "deploy", "tokens.example")
        with sc.Mock() as mock, sc.Server(mock.url, env={"ACCESS_TOKENS_FILE": path}) as srv:
            self.assertIn(f"access tokens: 3 loaded from {path}", srv.log())
            srv.stop()


def tearDownModule():
    """After every test here: each response they received is in
    responses.bin (serverctl records them); none may hold a token."""
    with open(sc.RESPONSES, "rb") as f:
        data = f.read()
    for t in ALL_TOKENS:
        if t.encode() in data:
            raise AssertionError("an access token in a response (responses.bin)")


if __name__ == "__main__":
    unittest.main()
