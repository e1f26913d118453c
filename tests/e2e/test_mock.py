"""End-to-end tests of zju-mock-upstream, the fake ZJU Chat API every other
test relies on: auth, validation, answer shapes, byte-exact SSE framing, each
scriptable fault, the stats counters, TLS, workers and 500 concurrent streams."""
import http.client
import json
import os
import re
import selectors
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

from mockctl import MOCK_BIN, Mock, chat_body, make_self_signed_cert, raw_request, sse_data

KEY = "sk-test"
CONTENT = ["你好", "，", "世界", " 🌍", "!", " 这是", "模拟", "回答", " 😀", "。"]
REASONING = ["嗯", "，让我", "想想", " 🤔", "..."]


def post(port, body, headers=None, key=KEY, path="/v1/chat/completions", timeout=10):
    """One request with http.client: (status, {lower header: value}, body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"}
    if key is not None:
        hdrs["Authorization"] = "Bearer " + key
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get(port, path, key=KEY):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer " + key} if key else {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def read_until_end(sock, limit=64 << 20):
    """Reads until EOF; returns (bytes, None) or (bytes, the exception)."""
    buf = bytearray()
    try:
        while len(buf) < limit:
            b = sock.recv(65536)
            if not b:
                return bytes(buf), None
            buf += b
    except OSError as e:
        return bytes(buf), e
    return bytes(buf), None


def split_response(raw):
    """(status, {lower header: value}, de-chunked body, complete?) of raw HTTP/1.1."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    if hdrs.get("transfer-encoding") != "chunked":
        n = int(hdrs.get("content-length", len(rest)))
        return status, hdrs, rest[:n], len(rest) >= n
    body = bytearray()
    while True:
        size_line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return status, hdrs, bytes(body), False
        size = int(size_line, 16)
        if size == 0:
            return status, hdrs, bytes(body), rest.startswith(b"\r\n")
        if len(rest) < size + 2:
            body += rest[:size]
            return status, hdrs, bytes(body), False
        body += rest[:size]
        rest = rest[size + 2:]


def expected_stream(first, model, reasoning, events, prompt_tokens, nl="\n"):
    """The exact SSE bytes the mock must send, given its first chunk (id, created)."""
    def chunk(delta, finish=None, usage=None):
        o = {"id": first["id"], "object": "chat.completion.chunk", "created": first["created"],
             "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            o["usage"] = usage
        return "data: " + json.dumps(o, ensure_ascii=False, separators=(",", ":")) + nl + nl

    out = chunk({"role": "assistant", "content": ""})
    out += "".join(chunk({"reasoning_content": REASONING[i % 5]}) for i in range(reasoning))
    out += "".join(chunk({"content": CONTENT[i % 10]}) for i in range(events))
    done = reasoning + events
    out += chunk({}, "stop", {"prompt_tokens": prompt_tokens, "completion_tokens": done,
                              "total_tokens": prompt_tokens + done})
    return (out + "data: [DONE]" + nl + nl).encode()


def prompt_tokens(*contents):
    return sum(4 + (len(c.encode()) + 3) // 4 for c in contents)


class MockCase(unittest.TestCase):
    args = ("--key", KEY)

    @classmethod
    def setUpClass(cls):
        if not os.access(MOCK_BIN, os.X_OK):
            raise RuntimeError(f"missing {MOCK_BIN}: run make asan")
        cls.mock = Mock(*cls.args).start()
        cls.port = cls.mock.port

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()

    def setUp(self):
        self.mock.reset()

    def stream_raw(self, model, timeout=10, **kw):
        s = raw_request(self.port, chat_body(model, stream=True, **kw), timeout=timeout)
        with s:
            raw, err = read_until_end(s)
        return raw, err

    def assert_error(self, status, hdrs, body, code, want_status):
        self.assertEqual(status, want_status, body)
        self.assertTrue(hdrs["content-type"].startswith("application/json"))
        err = json.loads(body)["error"]
        self.assertTrue(err["message"])
        self.assertEqual(err["type"], "invalid_request_error")
        self.assertEqual(err["code"], code)


class TestProtocol(MockCase):
    def test_auth_required(self):
        st, h, b = post(self.port, chat_body(), key=None)
        self.assert_error(st, h, b, "invalid_api_key", 401)
        st, h, b = post(self.port, chat_body(), key="sk-wrong")
        self.assert_error(st, h, b, "invalid_api_key", 401)
        self.assertNotIn(b"sk-wrong", b)  # only with echo_key=1
        st, h, b = post(self.port, chat_body(), key=KEY)
        self.assertEqual(st, 200, b)
        self.assertEqual(get(self.port, "/v1/models", key=None)[0], 401)

    def test_models_list(self):
        st, b = get(self.port, "/api/ai/v1/models")
        self.assertEqual(st, 200)
        o = json.loads(b)
        self.assertEqual(o["object"], "list")
        ids = [m["id"] for m in o["data"]]
        self.assertIn("deepseek-r1-671b", ids)
        self.assertIn("bge-reranker-v2-m3", ids)
        self.assertTrue(all(m["object"] == "model" and m["owned_by"] == "zju" for m in o["data"]))

    def test_validation_errors(self):
        msgs = [{"role": "user", "content": "hi"}]
        cases = [
            (b"not json", "invalid_json", 400),
            (b"[1,2]", "invalid_json", 400),
            ({"messages": msgs}, "missing_model", 400),
            ({"model": "", "messages": msgs}, "missing_model", 400),
            ({"model": 7, "messages": msgs}, "missing_model", 400),
            ({"model": "deepseek-v3-671b", "messages": []}, "invalid_messages", 400),
            ({"model": "deepseek-v3-671b", "messages": "hi"}, "invalid_messages", 400),
            ({"model": "deepseek-v3-671b", "messages": [{"role": "bot", "content": "x"}]},
             "invalid_messages", 400),
            ({"model": "deepseek-v3-671b", "messages": [{"role": "user"}]}, "invalid_messages", 400),
            ({"model": "deepseek-v3-671b", "messages": [{"role": "user", "content": 1}]},
             "invalid_messages", 400),
            ({"model": "deepseek-v3-671b", "messages": msgs, "stream": "yes"}, "invalid_type", 400),
            ({"model": "gpt-4", "messages": msgs}, "model_not_found", 404),
            ({"model": "deepseek-v3-671b#bogus=1", "messages": msgs}, "invalid_mock_directive", 400),
        ]
        for body, code, status in cases:
            with self.subTest(body=body):
                st, h, b = post(self.port, body)
                self.assert_error(st, h, b, code, status)
        st, h, b = post(self.port, chat_body(), headers={"Content-Type": "text/plain"})
        self.assert_error(st, h, b, "unsupported_media_type", 415)

    def test_unknown_paths_and_methods(self):
        st, b = get(self.port, "/v1/nothing")
        self.assertEqual(st, 404)
        self.assertIn("error", json.loads(b))
        st, b = get(self.port, "/v1/chat/completions")
        self.assertEqual(st, 405)

    def test_any_prefix_before_chat_completions(self):
        for path in ("/chat/completions", "/v1/chat/completions", "/api/ai/v1/chat/completions"):
            st, _, b = post(self.port, chat_body(), path=path)
            self.assertEqual(st, 200, path)

    def test_non_stream_shape_and_usage(self):
        st, h, b = post(self.port, chat_body("deepseek-r1-671b#events=5,reasoning=3",
                                             content="abcdefghij"))
        self.assertEqual(st, 200)
        self.assertEqual(h["content-type"], "application/json")
        o = json.loads(b)
        self.assertRegex(o["id"], r"^chatcmpl-\d+$")
        self.assertEqual(o["object"], "chat.completion")
        self.assertEqual(o["model"], "deepseek-r1-671b")  # '#...' stripped
        self.assertLess(abs(o["created"] - time.time()), 5)
        ch = o["choices"][0]
        self.assertEqual(ch["finish_reason"], "stop")
        self.assertEqual(ch["message"]["role"], "assistant")
        self.assertEqual(ch["message"]["content"], "".join(CONTENT[:5]))
        self.assertEqual(ch["message"]["reasoning_content"], "".join(REASONING[:3]))
        pt = prompt_tokens("abcdefghij")
        self.assertEqual(o["usage"], {"prompt_tokens": pt, "completion_tokens": 8,
                                      "total_tokens": pt + 8})
        # Models without reasoning have no reasoning_content and count no reasoning.
        o = json.loads(post(self.port, chat_body("deepseek-v3-671b"))[2])
        self.assertNotIn("reasoning_content", o["choices"][0]["message"])
        self.assertEqual(o["usage"]["completion_tokens"], 8)
        self.assertTrue(json.loads(post(self.port, chat_body("QwQ-32B"))[2])
                        ["choices"][0]["message"]["reasoning_content"])

    def test_stream_framing_is_byte_exact(self):
        raw, err = self.stream_raw("deepseek-r1-671b", content="héllo")
        self.assertIsNone(err)
        st, h, body, complete = split_response(raw)
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/event-stream"))
        self.assertEqual(h["transfer-encoding"], "chunked")
        self.assertTrue(complete)
        first = json.loads(sse_data(body)[0])
        want = expected_stream(first, "deepseek-r1-671b", 4, 8, prompt_tokens("héllo"))
        self.assertEqual(body, want)

    def test_golden_fixtures(self):
        fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "mock")
        for name, model in (("stream_r1_events3_reasoning2.sse", "deepseek-r1-671b#events=3,reasoning=2"),
                            ("stream_v3_garbage_crlf.sse", "deepseek-v3-671b#events=2,fault=garbage+crlf")):
            with self.subTest(name=name):
                raw, _ = self.stream_raw(model, content="你好 mock")
                body = split_response(raw)[2]
                body = re.sub(rb'"id":"chatcmpl-\d+"', b'"id":"chatcmpl-0"', body)
                body = re.sub(rb'"created":\d+', b'"created":0', body)
                with open(os.path.join(fixtures, name), "rb") as f:
                    self.assertEqual(body, f.read())

    def test_stream_content_equals_non_stream(self):
        for model in ("deepseek-r1-671b#events=23,reasoning=7", "qwen2.5-instruct#events=13"):
            with self.subTest(model=model):
                _, _, b = post(self.port, chat_body(model))
                msg = json.loads(b)["choices"][0]["message"]
                raw, _ = self.stream_raw(model)
                events = sse_data(split_response(raw)[2])
                self.assertEqual(events[-1], "[DONE]")
                chunks = [json.loads(e) for e in events[:-1]]
                self.assertEqual(chunks[0]["choices"][0]["delta"],
                                 {"role": "assistant", "content": ""})
                content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
                reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "")
                                    for c in chunks)
                self.assertEqual(content, msg["content"])
                self.assertEqual(reasoning, msg.get("reasoning_content", ""))
                self.assertIn("世界", content)
                self.assertIn("🌍", content)
                self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "stop")
                self.assertEqual(chunks[-1]["usage"], json.loads(b)["usage"])

    def test_header_and_suffix_directives_and_priority(self):
        st, _, b = post(self.port, chat_body("deepseek-v3-671b"), headers={"X-Mock": "events=2"})
        self.assertEqual(json.loads(b)["choices"][0]["message"]["content"], "你好，")
        # The model suffix wins over the header, which wins over the global config.
        self.mock.config(events=1)
        st, _, b = post(self.port, chat_body("deepseek-v3-671b#events=3"),
                        headers={"X-Mock": "events=2"})
        self.assertEqual(json.loads(b)["choices"][0]["message"]["content"], "你好，世界")
        st, _, b = post(self.port, chat_body("deepseek-v3-671b"))
        self.assertEqual(json.loads(b)["choices"][0]["message"]["content"], "你好")
        self.mock.config(reset=True)
        st, _, b = post(self.port, chat_body("deepseek-v3-671b"))
        self.assertEqual(json.loads(b)["choices"][0]["message"]["content"], "".join(CONTENT[:8]))

    def test_last_request_recorded(self):
        body = json.dumps(chat_body("mock-x", content="记录 me")).encode()
        post(self.port, body, headers={"X-Trace": "t1"})
        last = self.mock.last()
        self.assertEqual(last["method"], "POST")
        self.assertEqual(last["path"], "/v1/chat/completions")
        self.assertEqual(last["headers"]["authorization"], "Bearer " + KEY)
        self.assertEqual(last["headers"]["x-trace"], "t1")
        self.assertEqual(last["body"].encode(), body)


class TestFaults(MockCase):
    def test_status_bodies_and_retry_after(self):
        st, h, b = post(self.port, chat_body("deepseek-v3-671b#status=429,retry_after=7"))
        self.assertEqual(st, 429)
        self.assertEqual(h["retry-after"], "7")
        self.assertIn("message", json.loads(b)["error"])
        st, h, b = post(self.port, chat_body("deepseek-v3-671b#status=502,body=html"))
        self.assertEqual((st, h["content-type"]), (502, "text/html"))
        self.assertIn(b"<html>", b)
        st, h, b = post(self.port, chat_body("deepseek-v3-671b#status=503,body=empty"))
        self.assertEqual((st, b), (503, b""))

    def test_echo_key_puts_the_key_in_the_error(self):
        st, _, b = post(self.port, chat_body("deepseek-v3-671b#status=500,echo_key=1"))
        self.assertEqual(st, 500)
        self.assertIn("Bearer " + KEY, json.loads(b)["error"]["message"])
        st, _, b = post(self.port, chat_body(), key="sk-leak", headers={"X-Mock": "echo_key=1"})
        self.assertEqual(st, 401)
        self.assertIn("Bearer sk-leak", json.loads(b)["error"]["message"])

    def test_fail_next_then_normal(self):
        cfg = self.mock.config(fail_next=2, fail_status=503, retry_after=1)
        self.assertEqual(cfg["fail_next"], 2)
        got = [post(self.port, chat_body())[0] for _ in range(3)]
        self.assertEqual(got, [503, 503, 200])

    def test_think_delays_the_headers(self):
        t0 = time.monotonic()
        st, _, _ = post(self.port, chat_body("deepseek-v3-671b#think=300"))
        self.assertEqual(st, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)

    def test_delay_paces_events(self):
        t0 = time.monotonic()
        raw, err = self.stream_raw("deepseek-v3-671b#events=4,delay=100")
        self.assertIsNone(err)
        # 7 events (role, 4 content, finish, DONE): 6 gaps of 100 ms.
        self.assertGreaterEqual(time.monotonic() - t0, 0.59)
        self.assertEqual(sse_data(split_response(raw)[2])[-1], "[DONE]")

    def test_hang_headers_never_answers(self):
        s = raw_request(self.port, chat_body("deepseek-v3-671b#fault=hang_headers"), timeout=0.5)
        with s:
            self.assertRaises(socket.timeout, s.recv, 1)

    def test_hang_mid_goes_silent(self):
        s = raw_request(self.port, chat_body("deepseek-v3-671b#fault=hang_mid,after=3",
                                             stream=True), timeout=0.7)
        with s:
            raw, err = read_until_end(s)
        self.assertIsInstance(err, socket.timeout)
        events = sse_data(split_response(raw)[2])
        self.assertEqual(len(events), 3)

    def test_drop_mid_ends_with_fin(self):
        raw, err = self.stream_raw("deepseek-v3-671b#fault=drop_mid,after=2")
        self.assertIsNone(err)  # a clean EOF
        st, _, body, complete = split_response(raw)
        self.assertEqual(st, 200)
        self.assertFalse(complete)  # no terminating chunk
        self.assertEqual(len(sse_data(body)), 2)
        # A non-stream answer is cut inside its body (Content-Length not reached).
        s = raw_request(self.port, chat_body("deepseek-v3-671b#fault=drop_mid"))
        with s:
            raw, err = read_until_end(s)
        st, _, body, complete = split_response(raw)
        self.assertEqual((st, complete, err), (200, False, None))
        self.assertTrue(body)

    def test_rst_mid_resets(self):
        raw, err = self.stream_raw("deepseek-v3-671b#fault=rst_mid,after=1")
        self.assertIsInstance(err, ConnectionResetError)
        self.assertEqual(len(sse_data(split_response(raw)[2])), 1)

    def test_garbage_lines_interleaved(self):
        raw, _ = self.stream_raw("deepseek-v3-671b#fault=garbage,events=3")
        body = split_response(raw)[2]
        self.assertIn(b"\ndata: not json\n\n", body)
        self.assertIn(b": mock comment", body)
        self.assertIn(b"event: ping\n\n", body)
        real = [e for e in sse_data(body) if e != "not json"]
        self.assertEqual(real[-1], "[DONE]")
        self.assertEqual(len(real), 1 + 3 + 1 + 1)

    def test_no_done_and_truncate(self):
        raw, _ = self.stream_raw("deepseek-v3-671b#fault=no_done,events=2")
        st, _, body, complete = split_response(raw)
        events = sse_data(body)
        self.assertTrue(complete)
        self.assertNotIn("[DONE]", events)
        self.assertEqual(json.loads(events[-1])["choices"][0]["finish_reason"], "stop")
        raw, _ = self.stream_raw("deepseek-v3-671b#fault=truncate,events=2")
        st, _, body, complete = split_response(raw)
        events = sse_data(body)
        self.assertTrue(complete)  # the HTTP response itself ends normally
        self.assertEqual(len(events), 3)
        self.assertIsNone(json.loads(events[-1])["choices"][0]["finish_reason"])

    def test_not_sse(self):
        raw, _ = self.stream_raw("deepseek-v3-671b#fault=not_sse")
        st, h, body, _ = split_response(raw)
        self.assertEqual((st, h["content-type"]), (200, "text/plain"))
        self.assertNotIn(b"data:", body)

    def test_endless_line(self):
        raw, err = self.stream_raw("deepseek-v3-671b#fault=endless_line", timeout=20)
        st, h, body, complete = split_response(raw)
        self.assertEqual(st, 200)
        self.assertTrue(h["content-type"].startswith("text/event-stream"))
        self.assertEqual(len(body), 8 << 20)
        self.assertTrue(body.startswith(b"data: xxx"))
        self.assertNotIn(b"\n", body)
        self.assertFalse(complete)

    def test_big_error(self):
        st, h, b = post(self.port, chat_body("deepseek-v3-671b#fault=big_error"), timeout=20)
        self.assertEqual(st, 500)
        self.assertEqual(len(b), 16 << 20)
        self.assertEqual(json.loads(b)["error"]["code"], "big_error")

    def test_crlf(self):
        raw, _ = self.stream_raw("deepseek-r1-671b#fault=crlf")
        body = split_response(raw)[2]
        first = json.loads(sse_data(body)[0])
        self.assertEqual(body, expected_stream(first, "deepseek-r1-671b", 4, 8,
                                               prompt_tokens("hello"), nl="\r\n"))

    def test_split_writes_small_pieces(self):
        s = raw_request(self.port, chat_body("deepseek-v3-671b#split=5,events=4", stream=True))
        reads = []
        with s:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                reads.append(b)
        raw = b"".join(reads)
        st, _, body, complete = split_response(raw)
        self.assertTrue(complete)
        first = json.loads(sse_data(body)[0])
        self.assertEqual(body, expected_stream(first, "deepseek-v3-671b", 0, 4,
                                               prompt_tokens("hello")))
        # Each 5-byte piece is its own HTTP chunk, sent 1 ms apart: many reads,
        # and some HTTP chunk cuts a UTF-8 sequence ("你" is 3 bytes).
        self.assertGreater(len(reads), 20)
        self.assertIn(b"\r\n5\r\n", raw)
        pieces = [p for p in raw.split(b"\r\n") if p and len(p) <= 5]
        cut = [p for p in pieces if p and not _utf8_ok(p)]
        self.assertTrue(cut, "no piece cuts a multi-byte character")


def _utf8_ok(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


class TestStats(MockCase):
    def test_client_closing_mid_stream_is_counted(self):
        self.mock.reset_stats()
        s = raw_request(self.port, chat_body("deepseek-v3-671b#events=50,delay=50", stream=True))
        s.recv(4096)  # headers and the first event
        st = self.mock.wait_stat("streams_active", lambda v: v == 1)
        self.assertEqual(st["streams_active"], 1)
        s.close()
        t_close = self.mock.stats()["now_ms"]
        st = self.mock.wait_stat("connections_closed_by_client", lambda v: v == 1)
        self.assertEqual(st["connections_closed_by_client"], 1)
        self.assertEqual(st["streams_active"], 0)
        self.assertGreaterEqual(st["last_close_ms"], t_close - 5)
        self.assertLess(st["last_close_ms"] - t_close, 500)
        self.assertEqual(st["streams_completed"], 0)

    def test_client_closing_before_headers_is_counted(self):
        self.mock.reset_stats()
        s = raw_request(self.port, chat_body("deepseek-v3-671b#fault=hang_headers"))
        self.mock.wait_stat("chat_requests", lambda v: v == 1)
        s.close()
        st = self.mock.wait_stat("connections_closed_by_client", lambda v: v == 1)
        self.assertEqual(st["connections_closed_by_client"], 1)
        s = raw_request(self.port, chat_body("deepseek-v3-671b#think=5000"))
        self.mock.wait_stat("chat_requests", lambda v: v == 2)
        s.close()
        st = self.mock.wait_stat("connections_closed_by_client", lambda v: v == 2)
        self.assertEqual(st["connections_closed_by_client"], 2)

    def test_counters(self):
        self.mock.reset_stats()
        base_open = self.mock.stats()["connections_open"]
        for _ in range(3):
            self.stream_raw("deepseek-v3-671b")
        post(self.port, chat_body())
        st = self.mock.wait_stat("connections_open", lambda v: v == base_open)
        self.assertEqual(st["chat_requests"], 4)
        self.assertEqual(st["streams_completed"], 3)
        self.assertEqual(st["streams_active"], 0)
        self.assertEqual(st["connections_closed_by_client"], 0)
        self.assertGreaterEqual(st["connections_accepted"], 4)
        self.assertGreaterEqual(st["requests"], 4)


class TestTLS(unittest.TestCase):
    def test_https_with_curl(self):
        with tempfile.TemporaryDirectory() as d:
            cert, key = make_self_signed_cert(d)
            with Mock("--tls-cert", cert, "--tls-key", key) as m:
                self.assertTrue(m.url.startswith("https://127.0.0.1:"))
                p = subprocess.run(
                    ["curl", "-sS", "--max-time", "10", "--cacert", cert, "-N",
                     "-H", "Authorization: Bearer x", "-H", "Content-Type: application/json",
                     "-d", json.dumps(chat_body("deepseek-v3-671b#events=3", stream=True)),
                     m.url + "/chat/completions"], capture_output=True, timeout=20)
                self.assertEqual(p.returncode, 0, p.stderr)
                events = sse_data(p.stdout)
                self.assertEqual(events[-1], "[DONE]")
                self.assertEqual(len(events), 6)
                ctx = ssl.create_default_context(cafile=cert)
                conn = http.client.HTTPSConnection("127.0.0.1", m.port, context=ctx, timeout=5)
                conn.request("GET", "/v1/models", headers={"Authorization": "Bearer x"})
                self.assertEqual(conn.getresponse().status, 200)
                conn.close()

    def test_https_answers_on_a_kept_alive_connection_without_nagle_stalls(self):
        # Over TLS a reply's head and body leave as two records in two
        # writes; without TCP_NODELAY the second waited for the client's
        # delayed ACK: 40-47 ms for every non-stream answer (curl saw 45 ms),
        # which any latency measured through a TLS mock then carried.
        with tempfile.TemporaryDirectory() as d:
            cert, key = make_self_signed_cert(d)
            with Mock("--tls-cert", cert, "--tls-key", key) as m:
                ctx = ssl.create_default_context(cafile=cert)
                conn = http.client.HTTPSConnection("127.0.0.1", m.port, context=ctx, timeout=5)
                took = []
                try:
                    for _ in range(7):
                        t = time.monotonic()
                        conn.request("POST", "/v1/chat/completions",
                                     body=json.dumps(chat_body("deepseek-v3-671b#events=3")),
                                     headers={"Authorization": "Bearer x",
                                              "Content-Type": "application/json"})
                        r = conn.getresponse()
                        self.assertEqual(r.status, 200)
                        self.assertIn(b"chat.completion", r.read())
                        took.append(time.monotonic() - t)
                finally:
                    conn.close()
                took.sort()
                self.assertLess(took[3], 0.020, f"answers took {took} s")


class TestScale(unittest.TestCase):
    def test_500_concurrent_streams(self):
        n = 500
        with Mock("--events", "20", "--delay-ms", "20") as m:
            body = json.dumps(chat_body("deepseek-r1-671b", stream=True)).encode()
            req = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: Bearer k\r\nContent-Type: application/json\r\n"
                   f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            sel = selectors.DefaultSelector()
            bufs = {}
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", m.port))
                s.setblocking(False)
                s.sendall(req)
                bufs[s] = bytearray()
                sel.register(s, selectors.EVENT_READ)
            peak = m.stats()["streams_active"]
            deadline = time.monotonic() + 10
            while bufs and time.monotonic() < deadline:
                for key, _ in sel.select(0.5):
                    s = key.fileobj
                    b = s.recv(65536)
                    if b:
                        bufs[s] += b
                        continue
                    sel.unregister(s)
                    s.close()
                    raw = bytes(bufs.pop(s))
                    events = sse_data(split_response(raw)[2])
                    self.assertEqual(len(events), 1 + 4 + 20 + 1 + 1)
                    self.assertEqual(events[-1], "[DONE]")
                peak = max(peak, m.stats()["streams_active"]) if len(bufs) % 50 == 0 else peak
            for s in bufs:
                s.close()
            sel.close()
            self.assertEqual(len(bufs), 0, f"{len(bufs)} streams unfinished after 10 s")
            st = m.stats()
            self.assertEqual(st["streams_completed"], n)
            self.assertGreater(peak, 100)  # they really were concurrent

    def test_workers_share_the_port(self):
        with Mock("--workers", "2") as m:
            for _ in range(10):
                self.assertEqual(post(m.port, chat_body())[0], 200)

    def test_also_host_serves_the_same_port_on_more_addresses(self):
        # bench.py gives every contender an address of its own (--also-host),
        # so that one contender's TIME_WAIT sockets do not slow the next one's
        # connect(); each worker listens on each address, no other address.
        with Mock("--workers", "2", "--also-host", "127.0.0.11",
                  "--also-host", "127.0.0.12") as m:
            for host in ("127.0.0.1", "127.0.0.11", "127.0.0.12") * 3:
                conn = http.client.HTTPConnection(host, m.port, timeout=5)
                try:
                    conn.request("POST", "/v1/chat/completions",
                                 body=json.dumps(chat_body()),
                                 headers={"Authorization": "Bearer " + KEY,
                                          "Content-Type": "application/json"})
                    r = conn.getresponse()
                    self.assertEqual((host, r.status), (host, 200))
                    self.assertIn(b"chat.completion", r.read())
                finally:
                    conn.close()
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.13", m.port), timeout=2).close()

    def test_also_host_refuses_a_bad_address(self):
        p = subprocess.run([MOCK_BIN, "--port", "0", "--also-host", "not-an-address"],
                           capture_output=True, text=True, timeout=10)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("bad IPv4 host 'not-an-address'", p.stderr)


if __name__ == "__main__":
    unittest.main()
