"""End-to-end tests of the gateway's OpenAI-compatible API, against the real
server and the mock upstream: POST /v1/chat/completions (the client's body
upstream byte for byte, the default model put in when none is named, the
upstream's answer and events byte for byte with [DONE]), POST /v1/embeddings,
the checks that answer 400 without calling the upstream, and every error in
OpenAI's shape {"error": {"message", "type", "param", "code"}}: the upstream's
client errors passed on, its refusal of the gateway's key as 502, 429 with
Retry-After, unreachable 503, timeout 504, and one error event after a stream
started."""
import json
import re
import unittest

import serverctl as sc
from proctools import free_port

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"


def post(port, path, body, headers=None, content_type="application/json", timeout=15):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h = {"Content-Type": content_type} if content_type else {}
    h.update(headers or {})
    return sc.request(port, "POST", path, body=data, headers=h, timeout=timeout)


def normalised(raw):
    """Bytes with the mock's per-request id and timestamp made constant."""
    raw = re.sub(rb"chatcmpl-\d+", b"chatcmpl-N", raw)
    return re.sub(rb'"created":\s*\d+', b'"created":0', raw)


def data_lines(raw):
    return [l[6:] for l in raw.replace(b"\r\n", b"\n").split(b"\n") if l.startswith(b"data: ")]


class Harness(unittest.TestCase):
    env = {}

    @classmethod
    def setUpClass(cls):
        cls.mock = sc.Mock()
        cls.mock.start()
        cls.server = sc.Server(upstream=cls.mock.url, env=cls.env)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.mock.stop()

    def setUp(self):
        self.mock.reset()

    def assertOpenAIError(self, r, status, code=None):
        self.assertEqual(r.status, status, r.body[:300])
        self.assertIn("application/json", r.header("Content-Type"))
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*")
        err = r.json()["error"]
        self.assertIsInstance(err, dict, r.body)
        self.assertIsInstance(err["message"], str)
        self.assertTrue(err["message"])
        self.assertIsInstance(err["type"], str)
        self.assertIn("param", err)
        self.assertIn("code", err)
        if code is not None:
            self.assertEqual(err["code"], code, err)
        return err

    def upstream_requests(self):
        st = self.mock.stats()
        return st["chat_requests"] + st["embedding_requests"]


class ChatCompletions(Harness):
    def test_non_stream_is_the_upstreams_body(self):
        body = {"model": "deepseek-v3-671b", "messages": [{"role": "user", "content": "hi"}]}
        r = post(self.server.port, CHAT, body)
        self.assertEqual(r.status, 200, r.body)
        self.assertIn("application/json", r.header("Content-Type"))
        direct = self.mock.direct(body)
        self.assertEqual(normalised(r.body), normalised(direct.body))
        self.assertEqual(r.json()["object"], "chat.completion")

    def test_body_goes_upstream_byte_for_byte(self):
        # Odd spacing, key order, unknown and OpenAI-only fields: all kept.
        raw = (b'{ "messages" : [{"role":"user","content":"caf\\u00e9 \xe2\x9c\x93"}],'
               b'"model":"deepseek-v3-671b",  "temperature":0.25,"top_p":1,'
               b'"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],'
               b'"response_format":{"type":"text"},"reasoning_effort":"low",'
               b'"x_vendor_extension":{"a":[1,2,3]} }')
        r = post(self.server.port, CHAT, raw,
                 headers={"Authorization": "Bearer client-token-not-for-upstream",
                          "X-Custom": "client-header"})
        self.assertEqual(r.status, 200, r.body)
        last = self.mock.last()
        self.assertEqual(last["path"], "/v1/chat/completions")
        self.assertEqual(last["body"].encode(), raw)
        self.assertEqual(last["headers"]["authorization"], "Bearer " + sc.KEY)
        self.assertNotIn("x-custom", last["headers"])
        self.assertNotIn("client-token", json.dumps(last))

    def test_default_model_put_first_rest_unchanged(self):
        raw = b'{"messages":[{"role":"user","content":"hi"}], "stream": false}'
        r = post(self.server.port, CHAT, raw)
        self.assertEqual(r.status, 200, r.body)
        sent = self.mock.last()["body"].encode()
        self.assertEqual(sent, b'{"model":"%s",' % sc.DEFAULT_MODEL.encode() + raw[1:])
        self.assertEqual(r.json()["model"], sc.DEFAULT_MODEL)

    def test_stream_events_byte_for_byte_with_done(self):
        body = {"model": sc.model("deepseek-r1-671b", events=4, reasoning=2),
                "messages": [{"role": "user", "content": "hi"}], "stream": True}
        s = sc.stream(self.server.port, body, path=CHAT)
        self.assertEqual(s.status, 200)
        self.assertEqual(s.header("Content-Type"), "text/event-stream")
        self.assertTrue(s.clean_end, s.error)
        got = data_lines(s.raw)
        want = self.mock.direct(body, stream=True)
        self.assertEqual([normalised(x) for x in got], [normalised(x) for x in want])
        self.assertEqual(got[-1], b"[DONE]")
        events = [json.loads(x) for x in got[:-1]]
        reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content") or ""
                            for e in events if e["choices"])
        self.assertTrue(reasoning)

    def test_stream_usage_when_asked(self):
        body = {"model": sc.model("deepseek-v3-671b", events=3),
                "messages": [{"role": "user", "content": "hi"}], "stream": True,
                "stream_options": {"include_usage": True}}
        s = sc.stream(self.server.port, body, path=CHAT)
        events = [json.loads(x) for x in data_lines(s.raw)[:-1]]
        usage = [e["usage"] for e in events if e.get("usage")]
        self.assertEqual(len(usage), 1, events)
        self.assertGreater(usage[0]["total_tokens"], 0)

    def test_multimodal_parts_pass_through(self):
        content = [{"type": "text", "text": "what is this?"},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
        body = {"model": "llava-onevision-qwen2-7b-ov",
                "messages": [{"role": "user", "content": content}]}
        r = post(self.server.port, CHAT, body)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(json.loads(self.mock.last()["body"])["messages"][0]["content"], content)

    def test_bad_requests_are_400_without_upstream(self):
        before = self.upstream_requests()
        cases = [
            (b'{"messages": [', "not valid JSON"),
            (b'[1, 2]', "JSON object"),
            (b'{"model": "m"}', "messages"),
            (b'{"messages": []}', "messages"),
            (b'{"messages": {"role": "user"}}', "messages"),
            (b'{"messages": [1]}', "messages[0]"),
            (b'{"messages": [{"role": "user", "content": "x"}], "model": 5}', "model"),
            (b'{"messages": [{"role": "user", "content": "x"}], "model": ""}', "model"),
            (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        ]
        for raw, words in cases:
            with self.subTest(body=raw):
                err = self.assertOpenAIError(post(self.server.port, CHAT, raw), 400)
                self.assertIn(words, err["message"])
                self.assertEqual(err["type"], "invalid_request_error")
        self.assertEqual(self.upstream_requests(), before)

    def test_wrong_content_type_is_415(self):
        r = post(self.server.port, CHAT, b'{"messages":[{"role":"user","content":"x"}]}',
                 content_type="text/plain")
        self.assertOpenAIError(r, 415)

    def test_other_methods_405_with_allow(self):
        r = sc.request(self.server.port, "GET", CHAT)
        self.assertOpenAIError(r, 405)
        self.assertEqual(r.header("Allow"), "POST, OPTIONS")

    def test_unknown_v1_path_404_in_openai_shape(self):
        self.assertOpenAIError(sc.request(self.server.port, "GET", "/v1/assistants"), 404)

    def test_preflight_allows_sdk_headers(self):
        r = sc.request(self.server.port, "OPTIONS", CHAT, headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-stainless-os"})
        self.assertEqual(r.status, 204)
        self.assertIn("authorization", r.header("Access-Control-Allow-Headers"))

    def test_body_over_limit_413_in_openai_shape(self):
        big = b'{"messages":[{"role":"user","content":"' + b"x" * (1 << 20) + b'"}]}'
        self.assertOpenAIError(post(self.server.port, CHAT, big), 413)


class UpstreamErrors(Harness):
    env = {"ZJU_FIRST_BYTE_TIMEOUT_MS": "700"}

    def call(self, **directives):
        body = {"model": sc.model("deepseek-v3-671b", **directives),
                "messages": [{"role": "user", "content": "hi"}]}
        return post(self.server.port, CHAT, body)

    def test_client_errors_pass_with_their_message(self):
        for status in (400, 404, 422):
            with self.subTest(status=status):
                r = self.call(status=status)
                err = self.assertOpenAIError(r, status)
                # the mock's own OpenAI-shaped body, as it sent it
                self.assertEqual(r.json(), self.mock.direct(
                    {"model": sc.model("deepseek-v3-671b", status=status),
                     "messages": [{"role": "user", "content": "hi"}]}).json())
                self.assertNotEqual(err["type"], "upstream_error")

    def test_upstream_refusing_our_key_is_502(self):
        for status in (401, 403):
            with self.subTest(status=status):
                err = self.assertOpenAIError(self.call(status=status), 502,
                                             "upstream_auth_failed")
                self.assertIn("gateway's API key", err["message"])

    def test_429_passes_with_retry_after(self):
        r = self.call(status=429, retry_after=7)
        err = self.assertOpenAIError(r, 429)
        self.assertEqual(r.header("Retry-After"), "7")
        self.assertEqual(err["type"], "rate_limit_error")

    def test_upstream_5xx_is_502(self):
        self.assertOpenAIError(self.call(status=500), 502, "upstream_error")

    def test_timeout_is_504(self):
        self.assertOpenAIError(self.call(fault="hang_headers"), 504, "upstream_timeout")

    def test_error_after_stream_started_is_one_event(self):
        body = {"model": sc.model("deepseek-v3-671b", events=6, after=2, fault="drop_mid"),
                "messages": [{"role": "user", "content": "hi"}], "stream": True}
        s = sc.stream(self.server.port, body, path=CHAT)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        lines = data_lines(s.raw)
        self.assertNotIn(b"[DONE]", lines)
        last = json.loads(lines[-1])
        self.assertEqual(set(last["error"]), {"message", "type", "param", "code"})
        self.assertTrue(all("choices" in json.loads(x) for x in lines[:-1]))


class UpstreamUnreachable(unittest.TestCase):
    def test_503(self):
        server = sc.Server(upstream="http://127.0.0.1:%d/v1" % free_port())
        server.start()
        try:
            r = post(server.port, CHAT, {"messages": [{"role": "user", "content": "hi"}]})
            self.assertEqual(r.status, 503, r.body)
            self.assertEqual(r.json()["error"]["code"], "upstream_unreachable")
        finally:
            server.stop()


class Embeddings(Harness):
    def test_relayed_byte_for_byte(self):
        body = {"model": "bge-m3", "input": ["hello", "world"]}
        r = post(self.server.port, EMB, body)
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.body, _direct(self.mock, EMB, body))
        self.assertEqual(len(r.json()["data"]), 2)

    def test_default_model(self):
        r = post(self.server.port, EMB, b'{"input": "hello"}')
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(self.mock.last()["body"], '{"model":"bge-m3","input": "hello"}')

    def test_bad_input_400(self):
        before = self.upstream_requests()
        for raw in (b'{"model": "bge-m3"}', b'{"input": ""}', b'{"input": []}',
                    b'{"input": "x", "stream": true}', b'"x"'):
            with self.subTest(body=raw):
                self.assertOpenAIError(post(self.server.port, EMB, raw), 400)
        self.assertEqual(self.upstream_requests(), before)


def _direct(mock, path, body):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json",
                              "Authorization": "Bearer " + sc.KEY})
        return conn.getresponse().read()
    finally:
        conn.close()


if __name__ == "__main__":
    unittest.main()
