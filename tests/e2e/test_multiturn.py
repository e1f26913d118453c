"""Multi-turn /api/chat (issue 10): `messages` (a conversation's history,
content a string or OpenAI's content parts), with system_content prepended
and user_content appended, and temperature, top_p, max_tokens and stop;
each wrong type or range is a 400 that never reaches the upstream. Bodies of
the seed's form must still reach the upstream byte for byte as before: the
bytes recorded from the server before this change (commit 3ebc6cb) are in
tests/fixtures/seed_upstream_bodies.json."""

import json
import os
import unittest

from serverctl import DEFAULT_MODEL, ROOT, ServerCase, chat, model, stream

LLAVA = "llava-onevision-qwen2-7b-ov"
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "seed_upstream_bodies.json")

HISTORY = [
    {"role": "user", "content": "第一问"},
    {"role": "assistant", "content": "第一答 😀"},
    {"role": "system", "content": "mid-conversation instruction"},
    {"role": "user", "content": "second question"},
    {"role": "assistant", "content": ""},
]


def seed_cases(env):
    with open(FIXTURE, encoding="utf-8") as f:
        return [c for c in json.load(f)["cases"] if c["env"] == env]


class SeedFormBytes(ServerCase):
    """Seed-form bodies reach the upstream with the very bytes the server
    sent before messages existed."""

    def check_fixture(self, env):
        cases = seed_cases(env)
        self.assertGreater(len(cases), 2)
        for case in cases:
            with self.subTest(case["name"]):
                r = chat(self.port, case["request"].encode("utf-8"))
                self.assertEqual(r.status, 200, r)
                self.assertEqual(self.mock.last()["body"], case["upstream"])

    def test_seed_form_bytes_unchanged(self):
        self.check_fixture({})


class SeedFormBytesWithDefaultModel(SeedFormBytes):
    server_env = {"DEFAULT_MODEL": "deepseek-v3-671b"}

    def test_seed_form_bytes_unchanged(self):
        self.check_fixture(self.server_env)


class MultiTurn(ServerCase):
    def send(self, payload):
        """POSTs payload (both modes when it names no stream); returns the
        upstream's body as the mock received it, parsed."""
        r = stream(self.port, payload) if payload.get("stream") else chat(self.port, payload)
        body = r.raw if payload.get("stream") else r.body
        self.assertEqual(r.status, 200, body[:300])
        if payload.get("stream"):
            self.assertTrue(r.clean_end, r.error)
            self.assertEqual(r.errors(), [])
        return self.mock.last_body()

    def test_history_in_order_system_prepended_user_appended(self):
        for sm in (False, True):
            with self.subTest(stream=sm):
                up = self.send({"system_content": "be brief", "messages": HISTORY,
                                "user_content": "third question", "stream": sm})
                self.assertEqual(
                    up["messages"],
                    [{"role": "system", "content": "be brief"}] + HISTORY
                    + [{"role": "user", "content": "third question"}])
                self.assertEqual(up["model"], DEFAULT_MODEL)
                self.assertIs(up["stream"], sm)

    def test_messages_alone_go_as_given(self):
        for extra in ({}, {"user_content": None, "system_content": None},
                      {"system_content": ""}):
            with self.subTest(extra):
                up = self.send(dict({"messages": HISTORY[:4], "model": "deepseek-v3-671b"}, **extra))
                self.assertEqual(up["messages"], HISTORY[:4])
                self.assertEqual(up["model"], "deepseek-v3-671b")
        # A message's members keep their order on the wire.
        raw = self.mock.last()["body"]
        self.assertIn('"messages":[{"role":"user","content":"第一问"},', raw)

    def test_multimodal_parts_pass_unchanged(self):
        parts = [
            {"type": "text", "text": "What is in "},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "text", "text": "this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "high"}},
        ]
        history = [{"role": "system", "content": [{"type": "text", "text": "You see images."}]},
                   {"role": "user", "content": parts}]
        for name, sm in ((LLAVA, False), ("mock-vision", True)):
            with self.subTest(model=name):
                up = self.send({"model": name, "messages": history, "user_content": "and now?",
                                "stream": sm})
                self.assertEqual(up["messages"], history + [{"role": "user", "content": "and now?"}])
        # Text parts are for every model; which parts a model takes is the
        # upstream's call (an image for a text model: the mock's 400, relayed).
        up = self.send({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]})
        self.assertEqual(up["messages"], [{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
        before = self.mock.stats()["chat_requests"]
        r = chat(self.port, {"model": "deepseek-v3-671b", "messages": history})
        self.assertEqual(self.mock.stats()["chat_requests"], before + 1)
        self.assert_error(r, 500)
        self.assertIn("does not take images", r.json()["error"])

    def test_tool_turns_pass_unchanged(self):
        history = [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "name": "bot", "content": "It is sunny."},
        ]
        up = self.send({"messages": history, "user_content": "thanks"})
        self.assertEqual(up["messages"], history + [{"role": "user", "content": "thanks"}])

    def test_nul_in_history_is_kept(self):
        history = [{"role": "user", "content": "a\u0000b"},
                   {"role": "user", "content": [{"type": "text", "text": "c\u0000d"}]}]
        up = self.send({"messages": history, "user_content": "e\u0000"})
        self.assertEqual(up["messages"], history + [{"role": "user", "content": "e\u0000"}])
        raw = self.mock.last()["body"]
        self.assertIn('{"role":"user","content":"a\\u0000b"}', raw)
        self.assertIn('"text":"c\\u0000d"', raw)

    def test_each_parameter_passes_through(self):
        cases = [
            ("temperature", 0.3, 0.3), ("temperature", 0, 0.0), ("temperature", 2, 2.0),
            ("temperature", 1.5, 1.5), ("top_p", 0.9, 0.9), ("top_p", 0, 0.0), ("top_p", 1, 1.0),
            ("max_tokens", 1, 1), ("max_tokens", 4096, 4096),
            ("stop", "END", ["END"]), ("stop", ["a"], ["a"]), ("stop", ["a", "停", "\n\n", "d"], ["a", "停", "\n\n", "d"]),
        ]
        for field, value, sent in cases:
            for base in ({"user_content": "hi"}, {"messages": HISTORY[:2], "stream": True}):
                with self.subTest(field=field, value=value, base=list(base)):
                    up = self.send(dict(base, **{field: value}))
                    self.assertEqual(up[field], sent)
                    self.assertIsInstance(up[field], type(sent))
        # null means not given, like model and system_content.
        up = self.send({"user_content": "hi", "temperature": None, "top_p": None,
                        "max_tokens": None, "stop": None, "messages": None})
        for field in ("temperature", "top_p", "max_tokens", "stop"):
            self.assertNotIn(field, up)
        self.assertEqual(up["messages"], [{"role": "user", "content": "hi"}])
        # All at once: the sampling fields follow the model, before messages.
        self.send({"messages": HISTORY[:1], "temperature": 0.5, "top_p": 0.25,
                   "max_tokens": 10, "stop": ["x", "y"]})
        raw = self.mock.last()["body"]
        self.assertTrue(raw.startswith(
            '{"model":"deepseek-r1-671b","temperature":0.5,"top_p":0.25,"max_tokens":10,'
            '"stop":["x","y"],"messages":[{"role":"user","content":"第一问"}],"stream":false}'), raw)

    def test_stream_with_history_relays_the_answer(self):
        s = stream(self.port, {"messages": HISTORY, "user_content": "go on", "stream": True,
                               "model": model(events=4)})
        self.assertEqual(s.status, 200, s.raw[:300])
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.errors(), [])
        self.assertEqual(len([e for e in s.json_events() if e["choices"][0]["delta"].get("content")]), 4)
        self.assertEqual(self.mock.last_body()["messages"],
                         HISTORY + [{"role": "user", "content": "go on"}])

    def test_bad_values_are_400_and_never_reach_upstream(self):
        hist = [{"role": "user", "content": "hi"}]
        stops = "stop must be a non-empty string or an array of 1 to 4 non-empty strings"
        cases = [
            ({"messages": "hi"}, "messages must be an array of {role, content} objects"),
            ({"messages": {"role": "user", "content": "hi"}}, "messages must be an array"),
            ({"messages": 5, "user_content": "hi"}, "messages must be an array"),
            ({"messages": [5]}, "messages[0]: a message must be a JSON object"),
            ({"messages": hist + ["hi"]}, "messages[1]: a message must be a JSON object"),
            ({"messages": [{"content": "hi"}]},
             'messages[0]: role must be "system", "user", "assistant" or "tool"'),
            ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]: role must be"),
            ({"messages": [{"role": "developer", "content": "hi"}]}, "messages[0]: role must be"),
            ({"messages": [{"role": 1, "content": "hi"}]}, "messages[0]: role must be"),
            ({"messages": [{"role": "user\u0000", "content": "hi"}]}, "messages[0]: role must be"),
            ({"messages": hist + [{"role": "user"}]},
             "messages[1]: content must be a string or a non-empty array of content parts"),
            ({"messages": [{"role": "user", "content": 5}]}, "messages[0]: content must be"),
            ({"messages": [{"role": "user", "content": None}]}, "messages[0]: content must be"),
            ({"messages": [{"role": "assistant", "content": None}]}, "messages[0]: content must be"),
            ({"messages": [{"role": "user", "content": {"type": "text", "text": "x"}}]},
             "messages[0]: content must be"),
            ({"messages": [{"role": "user", "content": []}]}, "messages[0]: content must be"),
            ({"messages": [{"role": "user", "content": ["hi"]}]},
             'messages[0]: content[0] must be an object with a string "type"'),
            ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}]},
             "messages[0]: content[1] must be"),
            ({"messages": [{"role": "user", "content": [{"type": 1}]}]}, "messages[0]: content[0] must be"),
            ({"messages": []}, "messages is empty and there is no user_content: nothing to send"),
            ({"messages": [], "user_content": None}, "nothing to send"),
            ({"messages": hist, "user_content": ""}, "user_content must be a non-empty string"),
            ({"messages": hist, "user_content": 5}, "user_content must be a non-empty string"),
            ({"messages": hist, "system_content": 5}, "system_content must be a string"),
            ({"messages": hist, "model": 5}, "model must be a string"),
            ({"messages": hist, "stream": "yes"}, "stream must be a boolean"),
        ]
        for field, lo, hi in (("temperature", 0, 2), ("top_p", 0, 1)):
            msg = f"{field} must be a number from {lo} to {hi}"
            for v in ("0.5", True, [], {}, lo - 0.01, hi + 0.0001, -1, hi + 1):
                cases.append(({"user_content": "hi", field: v}, msg))
                cases.append(({"messages": hist, field: v}, msg))
        for v in (0, -5, 1.5, 64.0, "64", True, [64]):
            cases.append(({"user_content": "hi", "max_tokens": v}, "max_tokens must be a positive integer"))
        for v in ("", [], ["a", ""], ["a", "b", "c", "d", "e"], [1], 5, True, {"a": "b"}, ["a", None]):
            cases.append(({"messages": hist, "stop": v}, stops))
        for v in ("a\u0000", ["x", "y\u0000z"]):
            cases.append(({"user_content": "hi", "stop": v}, "stop must not contain NUL"))
        before = self.mock.stats()["chat_requests"]
        for body, want in cases:
            for sm in (False, True):
                payload = dict(body, stream=sm) if "stream" not in body else body
                with self.subTest(body=payload):
                    r = chat(self.port, payload)
                    err = self.assert_error(r, 400)
                    self.assertIn(want, err)
        self.assertEqual(self.mock.stats()["chat_requests"], before)


if __name__ == "__main__":
    unittest.main()
