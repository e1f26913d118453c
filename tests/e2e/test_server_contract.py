"""zju-chat-server's HTTP contract, as a frontend sees it: the request the
upstream receives, the non-stream and stream answers byte for byte, every
client error status, CORS, keep-alive, /healthz and configuration (.env,
DEFAULT_MODEL, flags)."""

import json
import os
import re
import socket
import subprocess
import time
import unittest

from serverctl import (
    DEFAULT_MODEL,
    KEY,
    SERVER_BIN,
    Mock,
    RawConn,
    Server,
    ServerCase,
    base_env,
    chat,
    free_port,
    model,
    normalize,
    request,
    stream,
    wait_until,
)


class UpstreamRequest(ServerCase):
    """What the upstream receives for each shape of /api/chat request."""

    def sent(self, payload):
        before = self.mock.stats()["chat_requests"]
        r = chat(self.port, payload)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.mock.stats()["chat_requests"], before + 1)
        return self.mock.last()

    def test_defaults_model_no_system_not_stream(self):
        last = self.sent({"user_content": "你好 😀"})
        self.assertEqual(last["method"], "POST")
        self.assertTrue(last["path"].endswith("/v1/chat/completions"), last["path"])
        body = json.loads(last["body"]) if isinstance(last["body"], str) else last["body"]
        self.assertEqual(body["model"], DEFAULT_MODEL)
        self.assertEqual(body["messages"], [{"role": "user", "content": "你好 😀"}])
        self.assertFalse(body.get("stream", False))

    def test_key_header(self):
        last = self.sent({"user_content": "hi"})
        headers = {k.lower(): v for k, v in (last["headers"].items() if isinstance(last["headers"], dict) else last["headers"])}
        self.assertEqual(headers.get("authorization"), "Bearer " + KEY)
        self.assertIn("application/json", headers.get("content-type", ""))

    def test_model_null_means_default(self):
        self.sent({"user_content": "hi", "model": None})
        self.assertEqual(self.mock.last_body()["model"], DEFAULT_MODEL)

    def test_model_given(self):
        self.sent({"user_content": "hi", "model": "deepseek-v3-671b"})
        self.assertEqual(self.mock.last_body()["model"], "deepseek-v3-671b")

    def test_empty_system_sends_no_system_message(self):
        self.sent({"user_content": "hi", "system_content": ""})
        self.assertEqual(self.mock.last_body()["messages"], [{"role": "user", "content": "hi"}])

    def test_system_message_first(self):
        self.sent({"user_content": "hi", "system_content": "You are \"terse\"\n简洁"})
        self.assertEqual(
            self.mock.last_body()["messages"],
            [
                {"role": "system", "content": "You are \"terse\"\n简洁"},
                {"role": "user", "content": "hi"},
            ],
        )

    def test_stream_flag_forwarded(self):
        s = stream(self.port, {"user_content": "hi", "stream": True})
        self.assertEqual(s.status, 200)
        self.assertIs(self.mock.last_body()["stream"], True)


class Answers(ServerCase):
    """The answers themselves: non-stream byte for byte, stream framing."""

    def test_non_stream_body_is_upstream_bytes(self):
        r = chat(self.port, {"user_content": "hi", "model": "deepseek-r1-671b#reasoning=3,events=7"})
        self.assertEqual(r.status, 200, r)
        self.assertIn("application/json", r.header("content-type"))
        sent = self.mock.last()["body"]
        direct = self.mock.direct(sent.encode() if isinstance(sent, str) else json.dumps(sent).encode())
        self.assertEqual(direct.status, 200)
        self.assertEqual(normalize(r.body), normalize(direct.body))
        msg = r.json()["choices"][0]["message"]
        self.assertEqual(msg["content"], "你好，世界 🌍! 这是模拟")
        self.assertIn("usage", r.json())

    def check_stream(self, m, expect_events=None):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": m})
        self.assertEqual(s.status, 200, s.raw[:300])
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.header("content-type").split(";")[0].strip(), "text/event-stream")
        self.assertEqual(s.header("cache-control"), "no-cache")
        self.assertEqual(s.header("x-accel-buffering"), "no")
        frames = s.frames()  # asserts 'data: X\n\n' framing byte for byte
        data = [v for kind, v in frames if kind == "data"]
        self.assertNotIn(b"[DONE]", s.raw)
        sent = self.mock.last()["body"]
        direct = self.mock.direct(sent.encode() if isinstance(sent, str) else json.dumps(sent).encode(), stream=True)
        self.assertEqual(direct[-1], b"[DONE]")
        self.assertEqual([normalize(d) for d in data], [normalize(d) for d in direct[:-1]])
        if expect_events is not None:
            self.assertEqual(len(data), expect_events)
        return s

    def test_stream_framing_byte_exact(self):
        s = self.check_stream(model(events=10, reasoning=5))
        events = s.json_events()
        self.assertEqual(events[0]["choices"][0]["delta"].get("role"), "assistant")
        self.assertEqual(s.content(), "你好，世界 🌍! 这是模拟回答 😀。")
        reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content") or "" for e in events if e.get("choices"))
        self.assertEqual(reasoning, "嗯，让我想想 🤔...")
        self.assertTrue(events[-1]["choices"][0].get("finish_reason") or events[-1].get("usage"))

    def test_stream_crlf_upstream_relayed_as_lf(self):
        self.check_stream(model(events=5, fault="crlf"))

    def test_stream_split_upstream_writes(self):
        # Events written 7 bytes at a time, splitting UTF-8 sequences.
        self.check_stream(model(events=6, split=7))

    def test_stream_non_reasoning_model(self):
        self.check_stream("deepseek-v3-671b#events=4")

    def test_garbage_lines_skipped(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(events=5, fault="garbage")})
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        for d in s.data():
            json.loads(d)  # every relayed event is JSON
        self.assertEqual(s.content(), "你好，世界 🌍!")
        self.assertNotIn(b"[DONE]", s.raw)


class ClientErrors(ServerCase):
    """Every 4xx the server itself answers, as JSON with CORS headers; the
    upstream is never called for them."""

    server_env = {"MAX_BODY_BYTES": "4096"}

    def post(self, body, ctype="application/json"):
        before = self.mock.stats()["chat_requests"]
        r = chat(self.port, body, content_type=ctype, headers={"Origin": "http://app.example"})
        self.assertEqual(self.mock.stats()["chat_requests"], before, "upstream was called")
        return r

    def test_415_content_types(self):
        for ctype in (None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "multipart/form-data"):
            with self.subTest(ctype=ctype):
                self.assert_error(self.post(b'{"user_content": "hi"}', ctype), 415)

    def test_json_content_type_variants_accepted(self):
        for ctype in ("Application/JSON", "application/json; charset=utf-8", "APPLICATION/JSON;charset=UTF-8"):
            with self.subTest(ctype=ctype):
                r = chat(self.port, {"user_content": "hi"}, content_type=ctype)
                self.assertEqual(r.status, 200, r)

    def test_400_cases(self):
        cases = {
            "invalid JSON": b'{"user_content": ',
            "trailing garbage": b'{"user_content": "hi"} x',
            "invalid UTF-8": b'{"user_content": "\xff\xfe"}',
            "empty body": b"",
            "array": b'["hi"]',
            "string": b'"hi"',
            "null": b"null",
            "user_content missing": b'{"model": "deepseek-r1-671b"}',
            "user_content empty": b'{"user_content": ""}',
            "user_content null": b'{"user_content": null}',
            "user_content number": b'{"user_content": 42}',
            "user_content object": b'{"user_content": {"a": 1}}',
            "model number": b'{"user_content": "hi", "model": 5}',
            "model object": b'{"user_content": "hi", "model": {}}',
            "system_content number": b'{"user_content": "hi", "system_content": 1}',
            "system_content list": b'{"user_content": "hi", "system_content": ["a"]}',
            "stream string": b'{"user_content": "hi", "stream": "true"}',
            "stream number": b'{"user_content": "hi", "stream": 1}',
            "stream null": b'{"user_content": "hi", "stream": null}',
        }
        for name, body in cases.items():
            with self.subTest(name):
                self.assert_error(self.post(body), 400)

    def test_413_body_over_limit(self):
        big = json.dumps({"user_content": "x" * 5000}).encode()
        r = self.post(big)
        self.assert_error(r, 413)
        # Just under the limit is fine.
        ok = chat(self.port, {"user_content": "x" * 3000})
        self.assertEqual(ok.status, 200, ok)

    def test_error_statuses_do_not_break_keep_alive(self):
        c = RawConn(self.port)
        try:
            c.send(c.post_chat(b"not json"))
            self.assertEqual(c.read_response().status, 400)
            c.send(c.post_chat({"user_content": "hi"}))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
        finally:
            c.close()

    def test_unknown_path_is_not_served_as_chat(self):
        before = self.mock.stats()["chat_requests"]
        r = request(self.port, "POST", "/api/nothing", body=b'{"user_content": "hi"}', headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 404, r)
        self.assertEqual(self.mock.stats()["chat_requests"], before)

    def test_oversized_headers_rejected(self):
        c = RawConn(self.port)
        try:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
            try:
                r = c.read_response(timeout=5)
                self.assertGreaterEqual(r.status, 400, r)
            except (ConnectionError, OSError):
                pass  # closing the connection is an acceptable refusal
        finally:
            c.close()
        self.assertEqual(request(self.port, "GET", "/healthz").status, 200)


class Limits(ServerCase):
    """Slow clients cannot hold the server; in-flight requests are capped."""

    server_env = {"MAX_CONNECTIONS": "2", "REQUEST_TIMEOUT": "1"}

    def test_busy_over_limit_then_recovers(self):
        before = self.mock.stats()["chat_requests"]
        held = []
        try:
            for _ in range(2):
                c = RawConn(self.port)
                c.send(c.post_chat({"user_content": "hi", "stream": True, "model": model(think=10000)}))
                held.append(c)
            self.mock.wait_stat("chat_requests", lambda v: v >= before + 2, 3)
            t0 = time.monotonic()
            r = chat(self.port, {"user_content": "hi"}, headers={"Origin": "http://a.example"})
            self.assertLess(time.monotonic() - t0, 2)
            self.assert_error(r, 503)
            self.assertEqual(self.mock.stats()["chat_requests"], before + 2)
        finally:
            for c in held:
                c.close()
        self.assertTrue(wait_until(lambda: self.mock.stats()["streams_active"] == 0, 3))
        self.assertTrue(wait_until(lambda: chat(self.port, {"user_content": "hi"}).status == 200, 3))

    def test_slow_request_headers_cut_off(self):
        c = RawConn(self.port)
        try:
            c.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\n")
            t0 = time.monotonic()
            self.assertTrue(c.wait_closed(5), "a client that never finishes its headers holds a connection")
            self.assertLess(time.monotonic() - t0, 4)
        finally:
            c.close()

    def test_slow_request_body_cut_off(self):
        before = self.mock.stats()["chat_requests"]
        c = RawConn(self.port)
        try:
            c.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user")
            t0 = time.monotonic()
            self.assertTrue(c.wait_closed(5), "a client that never finishes its body holds a connection")
            self.assertLess(time.monotonic() - t0, 4)
            self.assertNotIn(b"HTTP/1.1 200", c.pending())
        finally:
            c.close()
        self.assertEqual(self.mock.stats()["chat_requests"], before)


class NoKey(unittest.TestCase):
    """Without ZJU_API_KEY the server starts, warns, answers 500 and never
    calls the upstream."""

    def test_500_and_upstream_untouched(self):
        with Mock() as mock, Server(mock.base_url, key=None) as srv:
            log = srv.log()
            self.assertIn("ZJU_API_KEY", log)
            for payload in ({"user_content": "hi"}, {"user_content": "hi", "stream": True}):
                r = chat(srv.port, payload, headers={"Origin": "http://x.example"})
                self.assertEqual(r.status, 500, r)
                self.assertIsInstance(r.json().get("error"), str)
                self.assertIsNotNone(r.header("access-control-allow-origin"))
            self.assertEqual(mock.stats()["chat_requests"], 0)

    def test_empty_key_is_no_key(self):
        with Mock() as mock, Server(mock.base_url, key="") as srv:
            r = chat(srv.port, {"user_content": "hi"})
            self.assertEqual(r.status, 500, r)
            self.assertEqual(mock.stats()["chat_requests"], 0)


class Cors(ServerCase):
    """Default CORS_ORIGINS is '*', with a warning naming the variable."""

    def test_startup_warning_names_variable(self):
        self.assertIn("CORS_ORIGINS", self.server.log())

    def test_success_error_and_preflight_allow_any(self):
        h = {"Origin": "http://app.example"}
        before = self.mock.stats()["chat_requests"]
        ok = chat(self.port, {"user_content": "hi"}, headers=h)
        self.assertEqual(ok.status, 200)
        self.assertIn(ok.header("access-control-allow-origin"), ("*", "http://app.example"))
        s = stream(self.port, {"user_content": "hi", "stream": True}, headers=h)
        self.assertIn(s.header("access-control-allow-origin"), ("*", "http://app.example"))
        bad = chat(self.port, b"{", headers=h)
        self.assertEqual(bad.status, 400)
        self.assertIn(bad.header("access-control-allow-origin"), ("*", "http://app.example"))
        pre = request(
            self.port,
            "OPTIONS",
            "/api/chat",
            headers={
                "Origin": "http://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        self.assertIn(pre.status, (200, 204), pre)
        self.assertIn(pre.header("access-control-allow-origin"), ("*", "http://app.example"))
        self.assertIn("POST", pre.header("access-control-allow-methods") or "")
        self.assertIn("content-type", (pre.header("access-control-allow-headers") or "").lower())
        self.assertEqual(self.mock.stats()["chat_requests"], before + 2, "a preflight must not call upstream")


class CorsList(ServerCase):
    server_env = {"CORS_ORIGINS": "http://a.example, https://b.example"}

    def test_listed_origin_echoed_with_vary(self):
        for origin in ("http://a.example", "https://b.example"):
            with self.subTest(origin=origin):
                r = chat(self.port, {"user_content": "hi"}, headers={"Origin": origin})
                self.assertEqual(r.status, 200)
                self.assertEqual(r.header("access-control-allow-origin"), origin)
                self.assertIn("origin", ",".join(r.header_all("vary")).lower())
                e = chat(self.port, b"[]", headers={"Origin": origin})
                self.assertEqual(e.status, 400)
                self.assertEqual(e.header("access-control-allow-origin"), origin)
                self.assertIn("origin", ",".join(e.header_all("vary")).lower())

    def test_other_origin_not_allowed(self):
        r = chat(self.port, {"user_content": "hi"}, headers={"Origin": "http://evil.example"})
        self.assertIsNone(r.header("access-control-allow-origin"))
        pre = request(
            self.port,
            "OPTIONS",
            "/api/chat",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        self.assertIsNone(pre.header("access-control-allow-origin"))

    def test_no_wildcard_warning(self):
        self.assertNotRegex(self.server.log(), r"CORS_ORIGINS[^\n]*\*")


class KeepAlive(ServerCase):
    def test_sequential_requests_one_connection(self):
        c = RawConn(self.port)
        try:
            for i in range(3):
                c.send(c.post_chat({"user_content": f"hi {i}"}))
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertIn("choices", r.json())
            c.send(c.post_chat({"user_content": "s", "stream": True, "model": model(events=3)}))
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertIn(b"data: ", r.body)
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
        finally:
            c.close()

    def test_pipelined_requests(self):
        c = RawConn(self.port)
        try:
            c.send(c.post_chat({"user_content": "one"}) + c.post_chat({"user_content": "two", "stream": True, "model": model(events=2)}))
            a = c.read_response()
            b = c.read_response()
            self.assertEqual((a.status, b.status), (200, 200))
            self.assertIn("choices", a.json())
            self.assertTrue(b.body.startswith(b"data: "), b.body[:100])
        finally:
            c.close()

    def test_upstream_connections_reused(self):
        # Each stats() call is itself one mock connection: count them out.
        before = self.mock.stats()["connections_accepted"]
        for i in range(5):
            self.assertEqual(chat(self.port, {"user_content": f"q{i}"}).status, 200)
            s = stream(self.port, {"user_content": f"s{i}", "stream": True, "model": model(events=2)})
            self.assertEqual(s.status, 200)
        upstream_conns = self.mock.stats()["connections_accepted"] - before - 1
        self.assertLessEqual(upstream_conns, 1, "10 sequential requests should share one upstream connection")

    def test_connection_close_honoured(self):
        c = RawConn(self.port)
        try:
            c.send(c.post_chat({"user_content": "hi"}, keep_alive=False))
            self.assertEqual(c.read_response().status, 200)
            self.assertTrue(c.wait_closed(3))
        finally:
            c.close()


class HealthAndLog(ServerCase):
    def test_healthz(self):
        before = self.mock.stats()["requests"]
        r = request(self.port, "GET", "/healthz")
        self.assertEqual(r.status, 200)
        # +1: the stats call itself is a request to the mock.
        self.assertEqual(self.mock.stats()["requests"], before + 1, "healthz must not call upstream")

    def test_one_access_line_per_request_with_fields(self):
        r = chat(self.port, {"user_content": "hi", "model": "mock-log-ns"})
        total_ns = r.json()["usage"]["total_tokens"]
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": "mock-log-st#events=3"})
        total_st = s.json_events()[-1]["usage"]["total_tokens"]
        chat(self.port, b"[1]", headers={})
        for marker, total in (("mock-log-ns", total_ns), ("mock-log-st", total_st)):
            self.assertTrue(self.server.wait_log(marker), self.server.log()[-1500:])
            lines = [l for l in self.server.log().splitlines() if marker in l]
            self.assertEqual(len(lines), 1, lines)
            line = lines[0]
            for part in ("127.0.0.1", "POST", "/api/chat", " 200 ", "stream"):
                self.assertIn(part, line)
            self.assertRegex(line, r"\d\d:\d\d:\d\d", "a time stamp")
            self.assertRegex(line, rf"\b{total}\b", "the total token count")

    def test_access_log_line(self):
        r = chat(self.port, {"user_content": "hi", "model": "deepseek-v3-671b"})
        self.assertEqual(r.status, 200)
        pat = re.compile(r"^.*POST.*/api/chat.*\b200\b.*deepseek-v3-671b.*$", re.M)
        self.assertTrue(self.server.wait_log(pat), self.server.log()[-2000:])
        chat(self.port, b"{")
        self.assertTrue(self.server.wait_log(re.compile(r"POST.*/api/chat.*\b400\b")), self.server.log()[-2000:])


class Configuration(unittest.TestCase):
    """Environment, .env file and flags."""

    def setUp(self):
        self.mock = Mock().start()

    def tearDown(self):
        self.mock.stop()

    def model_sent(self, srv):
        r = chat(srv.port, {"user_content": "hi"})
        self.assertEqual(r.status, 200, r)
        return self.mock.last_body()["model"]

    def test_default_model_env(self):
        with Server(self.mock.base_url, env={"DEFAULT_MODEL": "deepseek-v3-671b"}) as srv:
            self.assertEqual(self.model_sent(srv), "deepseek-v3-671b")
            r = chat(srv.port, {"user_content": "hi", "model": None})
            self.assertEqual(self.mock.last_body()["model"], "deepseek-v3-671b")

    def test_dotenv_in_working_directory(self):
        with Server(key=None, cwd=self.write_env(f"ZJU_API_KEY={KEY}\nZJU_BASE_URL={self.mock.base_url}\nDEFAULT_MODEL=QwQ-32B\n")) as srv:
            self.assertEqual(self.model_sent(srv), "QwQ-32B")

    def test_process_environment_wins_over_dotenv(self):
        cwd = self.write_env(f"ZJU_API_KEY=sk-wrong-from-file\nZJU_BASE_URL=http://127.0.0.1:9/v1\nDEFAULT_MODEL=QwQ-32B\n")
        with Server(self.mock.base_url, env={"DEFAULT_MODEL": "deepseek-v3-671b"}, cwd=cwd) as srv:
            self.assertEqual(self.model_sent(srv), "deepseek-v3-671b")

    def test_env_file_flag(self):
        d = self.write_env(f"export ZJU_API_KEY=\"{KEY}\"\n# a comment\nZJU_BASE_URL='{self.mock.base_url}'\nDEFAULT_MODEL=deepseek-v3-671b\n", name="custom.env")
        with Server(key=None, args=["--env-file", os.path.join(d, "custom.env")]) as srv:
            self.assertEqual(self.model_sent(srv), "deepseek-v3-671b")

    def test_port_env_without_bind_flag(self):
        port = free_port()
        with Server(self.mock.base_url, env={"PORT": port}, bind=False) as srv:
            self.assertEqual(srv.port, port)
            self.assertEqual(self.model_sent(srv), DEFAULT_MODEL)

    def test_default_workers_is_core_count(self):
        with Server(self.mock.base_url, workers=None) as srv:
            n = os.cpu_count()
            self.assertTrue(wait_until(lambda: len(srv.workers_pids()) == n, 5), f"{srv.workers_pids()} for {n} cores")
            self.assertEqual(self.model_sent(srv), DEFAULT_MODEL)

    def test_help(self):
        p = subprocess.run([SERVER_BIN, "--help"], env=base_env(), capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 0, p.stderr)
        text = (p.stdout + p.stderr).decode()
        for word in ("-b", "-w", "--env-file", "ZJU_API_KEY", "PORT"):
            self.assertIn(word, text)

    def test_debug_mode_serves(self):
        with Server(self.mock.base_url, env={"FLASK_DEBUG": "1"}) as srv:
            self.assertEqual(self.model_sent(srv), DEFAULT_MODEL)
            s = stream(srv.port, {"user_content": "hi", "stream": True, "model": model(events=3)})
            self.assertEqual(s.status, 200)
            self.assertTrue(s.clean_end)

    def write_env(self, text, name=".env"):
        import tempfile

        from serverctl import LOG_DIR

        d = tempfile.mkdtemp(prefix="envdir-", dir=LOG_DIR)
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
        return d


if __name__ == "__main__":
    unittest.main()
