"""End-to-end tests of the OpenAI-compatible surface of zju-mock-upstream that
the gateway's OpenAI routes run against: GET /v1/models and /v1/models/{id}
(and their /_mock/config control), POST /v1/embeddings, chat requests with
OpenAI's optional fields, multimodal content parts and
stream_options.include_usage, and OpenAI's error shape everywhere."""
import base64
import http.client
import json
import math
import socket
import struct
import time
import unittest

import test_mock as tm
from mockctl import chat_body, raw_request, sse_data

KEY = tm.KEY
LLAVA = "llava-onevision-qwen2-7b-ov"
MODELS = ["deepseek-r1-671b", "deepseek-v3-671b", "deepseek-r1-distill-qwen", "qwen2.5-instruct",
          "QwQ-32B", LLAVA, "bge-m3", "bge-reranker-v2-m3"]


def request(port, method, path, body=None, key=KEY, headers=None, timeout=10):
    """(status, {lower header: value}, body bytes) of one request."""
    data = None if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Content-Type": "application/json"} if data is not None else {}
    if key is not None:
        hdrs["Authorization"] = "Bearer " + key
    hdrs.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=hdrs)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def embed(port, body, **kw):
    return request(port, "POST", "/v1/embeddings", body, **kw)


def expected_vector(text):
    """The mock's documented embedding of text (mock/embeddings.c), as float32
    values: FNV-1a 64 seeds splitmix64; 1024 signed 32-bit draws, normalised."""
    m64 = (1 << 64) - 1
    state = 0xcbf29ce484222325
    for b in text.encode():
        state = ((state ^ b) * 0x100000001b3) & m64
    raw = []
    for _ in range(1024):
        state = (state + 0x9E3779B97F4A7C15) & m64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m64
        z ^= z >> 31
        hi = z >> 32
        raw.append((hi - (1 << 32) if hi >= 1 << 31 else hi) / 2147483648.0)
    total = 0.0
    for r in raw:
        total += r * r
    norm = math.sqrt(total)
    return [struct.unpack("<f", struct.pack("<f", r / norm))[0] for r in raw]


def as_float32(values):
    return [struct.unpack("<f", struct.pack("<f", v))[0] for v in values]


class OpenAICase(tm.MockCase):
    def assert_openai_error(self, status, hdrs, body, want_status, code, param=None):
        """OpenAI's error shape: all four fields, param and code null if unset."""
        self.assertEqual(status, want_status, body)
        self.assertTrue(hdrs["content-type"].startswith("application/json"))
        err = json.loads(body)["error"]
        self.assertEqual(set(err), {"message", "type", "param", "code"}, err)
        self.assertTrue(err["message"])
        self.assertEqual(err["code"], code)
        self.assertEqual(err["param"], param)
        return err


class TestModels(OpenAICase):
    def test_list_is_the_upstream_list(self):
        st, h, b = request(self.port, "GET", "/v1/models")
        self.assertEqual(st, 200, b)
        self.assertEqual(h["content-type"], "application/json")
        o = json.loads(b)
        self.assertEqual(o["object"], "list")
        self.assertEqual([m["id"] for m in o["data"]], MODELS)
        for m in o["data"]:
            self.assertEqual(set(m), {"id", "object", "created", "owned_by"})
            self.assertEqual(m["object"], "model")
            self.assertIsInstance(m["created"], int)
            self.assertEqual(m["owned_by"], "zju")

    def test_one_model_by_id(self):
        listed = {m["id"]: m for m in json.loads(request(self.port, "GET", "/v1/models")[2])["data"]}
        for mid in MODELS:
            with self.subTest(model=mid):
                st, _, b = request(self.port, "GET", "/v1/models/" + mid)
                self.assertEqual(st, 200, b)
                self.assertEqual(json.loads(b), listed[mid])
        # Any prefix, a trailing slash and percent-encoding all work.
        st, _, b = request(self.port, "GET", "/api/ai/v1/models/%51wQ-32B/")
        self.assertEqual((st, json.loads(b)["id"]), (200, "QwQ-32B"))

    def test_unknown_model_is_404_in_openai_shape(self):
        for mid in ("gpt-4", "mock-x", "bge-m3%00", "deepseek-r1-671b%23events=1"):
            with self.subTest(model=mid):
                st, h, b = request(self.port, "GET", "/v1/models/" + mid)
                err = self.assert_openai_error(st, h, b, 404, "model_not_found", "model")
                self.assertEqual(err["type"], "invalid_request_error")

    def test_auth_and_method(self):
        for path in ("/v1/models", "/v1/models/bge-m3"):
            with self.subTest(path=path):
                st, h, b = request(self.port, "GET", path, key=None)
                self.assert_openai_error(st, h, b, 401, "invalid_api_key")
                st, h, b = request(self.port, "GET", path, key="sk-wrong")
                self.assert_openai_error(st, h, b, 401, "invalid_api_key")
                self.assertNotIn(b"sk-wrong", b)
                st, h, b = request(self.port, "POST", path, {})
                self.assert_openai_error(st, h, b, 405, None)

    def test_control_empty(self):
        cfg = self.mock.config(models="empty")
        self.assertEqual(cfg["models"], "empty")
        st, _, b = request(self.port, "GET", "/v1/models")
        self.assertEqual((st, json.loads(b)), (200, {"object": "list", "data": []}))
        st, h, b = request(self.port, "GET", "/v1/models/deepseek-r1-671b")
        self.assert_openai_error(st, h, b, 404, "model_not_found", "model")
        # Only the listing is affected: chat still serves the model.
        self.assertEqual(tm.post(self.port, chat_body())[0], 200)

    def test_control_status(self):
        self.assertEqual(self.mock.config(models=503)["models"], 503)
        for path in ("/v1/models", "/v1/models/bge-m3"):
            st, h, b = request(self.port, "GET", path)
            err = self.assert_openai_error(st, h, b, 503, None)
            self.assertEqual(err["type"], "server_error")
        self.mock.config(models="404")
        st, h, b = request(self.port, "GET", "/v1/models")
        self.assert_openai_error(st, h, b, 404, None)
        self.assertEqual(tm.post(self.port, chat_body())[0], 200)

    def test_control_garbage(self):
        self.mock.config(models="garbage")
        st, h, b = request(self.port, "GET", "/v1/models")
        self.assertEqual((st, h["content-type"]), (200, "application/json"))
        self.assertRaises(ValueError, json.loads, b)

    def test_control_hang_and_client_close(self):
        self.mock.config(models="hang")
        self.mock.reset_stats()
        s = socket.create_connection(("127.0.0.1", self.port), timeout=0.5)
        with s:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n\r\n")
            self.assertRaises(socket.timeout, s.recv, 1)
        st = self.mock.wait_stat("connections_closed_by_client", lambda v: v == 1)
        self.assertEqual(st["connections_closed_by_client"], 1)
        self.assertEqual(st["models_requests"], 1)

    def test_control_think_and_reset(self):
        self.mock.config(models_think=300)
        t0 = time.monotonic()
        st, _, _ = request(self.port, "GET", "/v1/models")
        self.assertEqual(st, 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.29)
        self.mock.config(models=500)
        cfg = self.mock.reset()
        self.assertEqual((cfg["models"], cfg["models_think"]), ("list", 0))
        self.assertEqual(request(self.port, "GET", "/v1/models")[0], 200)

    def test_control_rejects_bad_values(self):
        for kw in ({"models": "sometimes"}, {"models": 200}, {"models": 600},
                   {"models_think": -1}, {"models_think": "soon"}):
            with self.subTest(kw=kw):
                self.assertRaisesRegex(RuntimeError, " 400 ", self.mock.config, **kw)
        self.assertEqual(self.mock.config()["models"], "list")

    def test_models_requests_counted_not_recorded(self):
        tm.post(self.port, chat_body("mock-x"))
        self.mock.reset_stats()
        request(self.port, "GET", "/v1/models")
        request(self.port, "GET", "/v1/models/nope")
        st = self.mock.stats()
        self.assertEqual((st["models_requests"], st["chat_requests"]), (2, 0))
        self.assertEqual(self.mock.last()["path"], "/v1/chat/completions")


class TestEmbeddings(OpenAICase):
    def test_one_string(self):
        st, h, b = embed(self.port, {"model": "bge-m3", "input": "你好 world"})
        self.assertEqual(st, 200, b)
        self.assertEqual(h["content-type"], "application/json")
        o = json.loads(b)
        self.assertEqual(set(o), {"object", "data", "model", "usage"})
        self.assertEqual((o["object"], o["model"]), ("list", "bge-m3"))
        self.assertEqual(len(o["data"]), 1)
        d = o["data"][0]
        self.assertEqual((d["object"], d["index"]), ("embedding", 0))
        self.assertEqual(len(d["embedding"]), 1024)
        self.assertAlmostEqual(math.sqrt(sum(x * x for x in d["embedding"])), 1.0, places=5)
        tokens = (len("你好 world".encode()) + 3) // 4
        self.assertEqual(o["usage"], {"prompt_tokens": tokens, "total_tokens": tokens})

    def test_vectors_are_the_documented_function_of_the_input(self):
        inputs = ["alpha", "beta", "alpha", "模拟 🌍"]
        st, _, b = embed(self.port, {"model": "bge-m3", "input": inputs})
        self.assertEqual(st, 200, b)
        o = json.loads(b)
        self.assertEqual([d["index"] for d in o["data"]], [0, 1, 2, 3])
        vecs = [as_float32(d["embedding"]) for d in o["data"]]
        for text, vec in zip(inputs, vecs):
            self.assertEqual(vec, expected_vector(text), text)
        self.assertEqual(vecs[0], vecs[2])
        self.assertNotEqual(vecs[0], vecs[1])
        # The same input alone gets the same vector as inside an array.
        one = json.loads(embed(self.port, {"model": "bge-m3", "input": "beta"})[2])
        self.assertEqual(as_float32(one["data"][0]["embedding"]), vecs[1])
        tokens = sum((len(t.encode()) + 3) // 4 for t in inputs)
        self.assertEqual(o["usage"], {"prompt_tokens": tokens, "total_tokens": tokens})

    def test_base64_encoding_carries_the_same_floats(self):
        body = {"model": "bge-m3", "input": ["one", "two"]}
        floats = json.loads(embed(self.port, body)[2])["data"]
        st, _, b = embed(self.port, dict(body, encoding_format="base64"))
        self.assertEqual(st, 200, b)
        for f, d in zip(floats, json.loads(b)["data"]):
            raw = base64.b64decode(d["embedding"], validate=True)
            self.assertEqual(len(raw), 4096)
            self.assertEqual(list(struct.unpack("<1024f", raw)), as_float32(f["embedding"]))
        st, _, b = embed(self.port, dict(body, encoding_format="float"))
        self.assertEqual(json.loads(b)["data"], floats)

    def test_invalid_input_is_400(self):
        for inp in (None, "", [], [""], ["a", ""], [1], [["a"]], 5, {"text": "a"}, ["x"] * 2049):
            with self.subTest(input=inp if not isinstance(inp, list) or len(inp) < 10 else "2049"):
                body = {"model": "bge-m3"}
                if inp is not None:
                    body["input"] = inp
                st, h, b = embed(self.port, body)
                self.assert_openai_error(st, h, b, 400, "invalid_input", "input")
        st, h, b = embed(self.port, {"model": "bge-m3", "input": "a", "encoding_format": "hex"})
        self.assert_openai_error(st, h, b, 400, "invalid_type", "encoding_format")
        self.assertEqual(embed(self.port, {"model": "bge-m3", "input": ["x"] * 2048})[0], 200)

    def test_model_errors(self):
        st, h, b = embed(self.port, {"model": "text-embedding-3-small", "input": "a"})
        self.assert_openai_error(st, h, b, 404, "model_not_found", "model")
        st, h, b = embed(self.port, {"model": "deepseek-v3-671b", "input": "a"})
        self.assert_openai_error(st, h, b, 400, "model_not_supported", "model")
        st, h, b = embed(self.port, {"input": "a"})
        self.assert_openai_error(st, h, b, 400, "missing_model", "model")
        self.assertEqual(embed(self.port, {"model": "mock-embed", "input": "a"})[0], 200)

    def test_auth_content_type_json_and_method(self):
        body = {"model": "bge-m3", "input": "a"}
        st, h, b = embed(self.port, body, key=None)
        self.assert_openai_error(st, h, b, 401, "invalid_api_key")
        st, h, b = embed(self.port, body, headers={"Content-Type": "text/plain"})
        self.assert_openai_error(st, h, b, 415, "unsupported_media_type")
        st, h, b = embed(self.port, b"not json")
        self.assert_openai_error(st, h, b, 400, "invalid_json")
        st, h, b = request(self.port, "GET", "/v1/embeddings")
        self.assert_openai_error(st, h, b, 405, None)
        self.assertEqual(request(self.port, "POST", "/api/ai/v1/embeddings", body)[0], 200)

    def test_directives_and_injected_failures_apply(self):
        st, h, b = embed(self.port, {"model": "bge-m3#status=429,retry_after=3", "input": "a"})
        self.assert_openai_error(st, h, b, 429, None)
        self.assertEqual(h["retry-after"], "3")
        st, _, b = embed(self.port, {"model": "bge-m3", "input": "a"}, headers={"X-Mock": "think=300"})
        self.assertEqual(st, 200)
        self.mock.config(fail_next=1, fail_status=502)
        self.assertEqual([embed(self.port, {"model": "bge-m3", "input": "a"})[0] for _ in range(2)],
                         [502, 200])
        s = raw_request(self.port, {"model": "bge-m3#fault=hang_headers", "input": "a"},
                        path="/v1/embeddings", timeout=0.5)
        with s:
            self.assertRaises(socket.timeout, s.recv, 1)
        # A *_mid fault cuts the body short of its Content-Length.
        s = raw_request(self.port, {"model": "bge-m3#fault=drop_mid", "input": "a"},
                        path="/v1/embeddings")
        with s:
            raw, err = tm.read_until_end(s)
        st, _, body, complete = tm.split_response(raw)
        self.assertEqual((st, complete, err), (200, False, None))

    def test_recorded_byte_for_byte_and_counted(self):
        self.mock.reset_stats()
        body = b'{ "input" : ["x", "\\u00e9"], "model":"bge-m3", "user": "u1", "dimensions": 8 }'
        st, _, _ = embed(self.port, body)
        self.assertEqual(st, 200)
        last = self.mock.last()
        self.assertEqual((last["method"], last["path"]), ("POST", "/v1/embeddings"))
        self.assertEqual(last["body"].encode(), body)
        st = self.mock.stats()
        self.assertEqual((st["embedding_requests"], st["chat_requests"]), (1, 0))


def expected_usage_stream(first, model, reasoning, events, prompt_tokens, finish=True, done=True):
    """The exact SSE bytes with stream_options.include_usage (OpenAI's shape)."""
    def chunk(choices, usage=None):
        o = {"id": first["id"], "object": "chat.completion.chunk", "created": first["created"],
             "model": model, "choices": choices, "usage": usage}
        return "data: " + json.dumps(o, ensure_ascii=False, separators=(",", ":")) + "\n\n"

    def delta(d, fin=None):
        return chunk([{"index": 0, "delta": d, "finish_reason": fin}])

    out = delta({"role": "assistant", "content": ""})
    out += "".join(delta({"reasoning_content": tm.REASONING[i % 5]}) for i in range(reasoning))
    out += "".join(delta({"content": tm.CONTENT[i % 10]}) for i in range(events))
    if finish:
        n = reasoning + events
        out += delta({}, "stop")
        out += chunk([], {"prompt_tokens": prompt_tokens, "completion_tokens": n,
                          "total_tokens": prompt_tokens + n})
    if done:
        out += "data: [DONE]\n\n"
    return out.encode()


class TestChat(OpenAICase):
    def stream_body(self, body):
        s = raw_request(self.port, body)
        with s:
            raw, err = tm.read_until_end(s)
        self.assertIsNone(err)
        st, h, b, complete = tm.split_response(raw)
        self.assertEqual(st, 200, b)
        self.assertTrue(complete)
        return b

    def test_openai_optional_and_unknown_fields_are_accepted(self):
        tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
        extra = {"temperature": 0.2, "top_p": 1, "max_tokens": 50, "max_completion_tokens": 60,
                 "n": 1, "seed": 7, "stop": ["\n"], "presence_penalty": 0, "frequency_penalty": 0.5,
                 "logprobs": False, "top_logprobs": None, "user": "u", "metadata": {"k": "v"},
                 "store": False, "tools": [tool], "tool_choice": "auto", "parallel_tool_calls": True,
                 "response_format": {"type": "json_object"}, "reasoning_effort": "low",
                 "logit_bias": {"50256": -100}, "service_tier": "auto", "a_future_field": [1, {}]}
        for stream in (False, True):
            with self.subTest(stream=stream):
                body = chat_body("deepseek-v3-671b", stream=stream, **extra)
                if stream:
                    self.assertEqual(sse_data(self.stream_body(body))[-1], "[DONE]")
                else:
                    st, _, b = tm.post(self.port, body)
                    self.assertEqual(st, 200, b)

    def test_body_recorded_byte_for_byte(self):
        body = ('{"messages":[{"role":"user","content":[{"type":"text","text":"看 \\u00e9"},'
                '{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo=",'
                '"detail":"low"}}]}],  "model" : "llava-onevision-qwen2-7b-ov", "temperature":0.70,'
                '"tools":[] , "x-extra":{"n":1e2}}').encode()
        st, _, b = tm.post(self.port, body)
        self.assertEqual(st, 200, b)
        self.assertEqual(self.mock.last()["body"].encode(), body)

    def test_wrong_types_are_400_naming_the_field(self):
        cases = {"temperature": "hot", "top_p": [1], "max_tokens": 1.5, "n": "1", "seed": True,
                 "stop": 5, "tools": {}, "tool_choice": 1, "response_format": "json",
                 "logprobs": "yes", "stream_options": True, "logit_bias": [], "stream": 1}
        for field, value in cases.items():
            with self.subTest(field=field):
                body = dict(chat_body("deepseek-v3-671b", stream=None), **{field: value})
                st, h, b = tm.post(self.port, body)
                self.assert_openai_error(st, h, b, 400, "invalid_type", field)
        # null means "not given" for every optional field.
        body = dict(chat_body("deepseek-v3-671b", stream=None), **{f: None for f in cases})
        self.assertEqual(tm.post(self.port, body)[0], 200)

    def test_messages_errors(self):
        bad = [
            None, [], "hi", [{"role": "bot", "content": "x"}], [{"role": "user"}],
            [{"role": "user", "content": []}], [{"role": "user", "content": 7}],
            [{"role": "user", "content": [{"type": "text"}]}],
            [{"role": "user", "content": [{"type": "text", "text": 1}]}],
            [{"role": "user", "content": [{"type": "audio", "data": "x"}]}],
            [{"role": "user", "content": ["plain string part"]}],
            [{"role": "user", "content": [{"type": "image_url", "image_url": "http://x/a.png"}]}],
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}],
            [{"role": "assistant", "content": None}],
        ]
        for msgs in bad:
            with self.subTest(messages=msgs):
                body = {"model": LLAVA}
                if msgs is not None:
                    body["messages"] = msgs
                st, h, b = tm.post(self.port, body)
                self.assert_openai_error(st, h, b, 400, "invalid_messages", "messages")

    def test_tool_turns_are_accepted(self):
        msgs = [{"role": "developer", "content": "be brief"},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
        st, _, b = tm.post(self.port, {"model": "deepseek-v3-671b", "messages": msgs})
        self.assertEqual(st, 200, b)
        self.assertEqual(json.loads(b)["usage"]["prompt_tokens"],
                         tm.prompt_tokens("be brief", "weather?", "", "sunny"))

    def test_multimodal_parts_for_llava(self):
        msgs = [{"role": "system", "content": [{"type": "text", "text": "You see images."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in "},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                    {"type": "text", "text": "this picture?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ",
                                                        "detail": "high"}}]}]
        want = tm.prompt_tokens("You see images.", "What is in this picture?")
        st, _, b = tm.post(self.port, {"model": LLAVA + "#events=3", "messages": msgs})
        self.assertEqual(st, 200, b)
        o = json.loads(b)
        self.assertEqual(o["model"], LLAVA)
        self.assertEqual(o["choices"][0]["message"]["content"], "".join(tm.CONTENT[:3]))
        self.assertEqual(o["usage"], {"prompt_tokens": want, "completion_tokens": 3,
                                      "total_tokens": want + 3})
        body = self.stream_body({"model": LLAVA, "messages": msgs, "stream": True})
        first = json.loads(sse_data(body)[0])
        self.assertEqual(body, tm.expected_stream(first, LLAVA, 0, 8, want))
        # mock-* models take images too (tests name their own models).
        self.assertEqual(tm.post(self.port, {"model": "mock-vision", "messages": msgs})[0], 200)

    def test_images_for_a_text_model_are_refused(self):
        msgs = [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
        for model in ("deepseek-v3-671b", "deepseek-r1-671b#events=1"):
            with self.subTest(model=model):
                st, h, b = tm.post(self.port, {"model": model, "messages": msgs})
                self.assert_openai_error(st, h, b, 400, "unsupported_content", "messages")
        # Text-only parts are fine for any chat model.
        msgs = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        self.assertEqual(tm.post(self.port, {"model": "deepseek-v3-671b", "messages": msgs})[0], 200)

    def test_model_errors(self):
        st, h, b = tm.post(self.port, chat_body("gpt-4o"))
        self.assert_openai_error(st, h, b, 404, "model_not_found", "model")
        st, h, b = tm.post(self.port, chat_body("gpt-4o#events=1"))
        self.assert_openai_error(st, h, b, 404, "model_not_found", "model")
        for model in ("bge-m3", "bge-reranker-v2-m3"):
            st, h, b = tm.post(self.port, chat_body(model))
            self.assert_openai_error(st, h, b, 400, "model_not_supported", "model")

    def test_include_usage_stream_is_openai_shaped(self):
        for model, reasoning in (("deepseek-r1-671b#events=3,reasoning=2", 2),
                                 ("deepseek-v3-671b#events=4", 0)):
            with self.subTest(model=model):
                body = self.stream_body(chat_body(model, stream=True, content="héllo",
                                                  stream_options={"include_usage": True}))
                first = json.loads(sse_data(body)[0])
                name = model.split("#")[0]
                self.assertEqual(body, expected_usage_stream(
                    first, name, reasoning, 4 if reasoning == 0 else 3, tm.prompt_tokens("héllo")))
                chunks = [json.loads(e) for e in sse_data(body)[:-1]]
                self.assertTrue(all("usage" in c for c in chunks))
                self.assertEqual([c for c in chunks if c["usage"]], [chunks[-1]])
                self.assertEqual(chunks[-1]["choices"], [])

    def test_without_include_usage_the_stream_is_unchanged(self):
        want_prompt = tm.prompt_tokens("hello")
        for opts in (None, {}, {"include_usage": False}, {"include_usage": None}):
            with self.subTest(stream_options=opts):
                extra = {} if opts is None else {"stream_options": opts}
                body = self.stream_body(chat_body("deepseek-v3-671b#events=2", stream=True, **extra))
                first = json.loads(sse_data(body)[0])
                self.assertEqual(body, tm.expected_stream(first, "deepseek-v3-671b", 0, 2,
                                                          want_prompt))

    def test_include_usage_with_stream_faults(self):
        opts = {"include_usage": True}
        pt = tm.prompt_tokens("hello")
        body = self.stream_body(chat_body("deepseek-v3-671b#events=2,fault=no_done", stream=True,
                                          stream_options=opts))
        first = json.loads(sse_data(body)[0])
        self.assertEqual(body, expected_usage_stream(first, "deepseek-v3-671b", 0, 2, pt, done=False))
        body = self.stream_body(chat_body("deepseek-v3-671b#events=2,fault=truncate", stream=True,
                                          stream_options=opts))
        first = json.loads(sse_data(body)[0])
        self.assertEqual(body, expected_usage_stream(first, "deepseek-v3-671b", 0, 2, pt,
                                                     finish=False, done=False))
        # The usage chunk counts as an event for after=N.
        s = raw_request(self.port, chat_body("deepseek-v3-671b#events=1,fault=drop_mid,after=4",
                                             stream=True, stream_options=opts))
        with s:
            raw, _ = tm.read_until_end(s)
        events = sse_data(tm.split_response(raw)[2])
        self.assertEqual(len(events), 4)
        self.assertEqual(json.loads(events[-1])["choices"], [])

    def test_stream_options_need_stream(self):
        for stream in (None, False):
            with self.subTest(stream=stream):
                st, h, b = tm.post(self.port, chat_body(stream=stream,
                                                        stream_options={"include_usage": True}))
                self.assert_openai_error(st, h, b, 400, "invalid_stream_options", "stream_options")
        st, h, b = tm.post(self.port, chat_body(stream=True, stream_options={"include_usage": "yes"}))
        self.assert_openai_error(st, h, b, 400, "invalid_type", "stream_options.include_usage")
        # null is "not given", with or without stream.
        self.assertEqual(tm.post(self.port, chat_body(stream=False, stream_options=None))[0], 200)

    def test_every_error_has_openai_shape(self):
        st, h, b = tm.post(self.port, chat_body(), key=None)
        self.assert_openai_error(st, h, b, 401, "invalid_api_key")
        st, h, b = tm.post(self.port, chat_body("deepseek-v3-671b#status=503"))
        self.assert_openai_error(st, h, b, 503, None)
        st, h, b = tm.post(self.port, chat_body("deepseek-v3-671b#bogus=1"))
        self.assert_openai_error(st, h, b, 400, "invalid_mock_directive")
        st, h, b = request(self.port, "GET", "/v1/chat/completions")
        self.assert_openai_error(st, h, b, 405, None)
        st, h, b = request(self.port, "GET", "/v1/nothing")
        self.assert_openai_error(st, h, b, 404, "unknown_url")
        st, h, b = tm.post(self.port, chat_body("deepseek-v3-671b#fault=big_error"), timeout=20)
        self.assert_openai_error(st, h, b, 500, "big_error")


if __name__ == "__main__":
    unittest.main()
