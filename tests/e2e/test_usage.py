"""Token counting for requests that carry an access token (the limits and
usage of the access issue need the tokens of every answer): a stream's
upstream is asked for usage (stream_options.include_usage) when the client
did not ask, and the usage-only chunk that brings is not passed to that
client; a client that asked gets it as sent; the access line carries the
upstream's numbers; a stream the client leaves is counted from what was
relayed, marked as an estimate ("~"). Without tokens the body goes upstream
unchanged (test_openai_api.py, test_multiturn.py)."""
import json
import re
import time
import unittest

import serverctl as sc
from test_tokens import BOB, STANDARD, bearer, tokens_file

CHAT = "/v1/chat/completions"
SEED = "/api/chat"


def events(raw):
    out = []
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            out.append(json.loads(line[6:]))
    return out


class Usage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mock = sc.Mock()
        cls.mock.start()
        cls.server = sc.Server(upstream=cls.mock.url,
                               env={"ACCESS_TOKENS_FILE": tokens_file(STANDARD)})
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        cls.mock.stop()

    def access_tokens(self, path, before):
        """The tokens= field of the access lines for path logged after
        `before` lines (waits for the line: it is written at the end)."""
        def lines():
            got = [l for l in self.server.log().splitlines()[before:]
                   if " access " in l and f'"POST {path}"' in l]
            return got
        got = sc.wait_until(lines, 5)
        self.assertTrue(got, "no access line")
        return re.search(r" tokens=(\S+)", got[-1]).group(1)

    def log_len(self):
        return len(self.server.log().splitlines())

    def test_v1_stream_asks_upstream_hides_the_usage_chunk(self):
        before = self.log_len()
        body = {"model": sc.model("deepseek-v3-671b", events=3),
                "messages": [{"role": "user", "content": "hi"}], "stream": True}
        s = sc.stream(self.server.port, body, headers=bearer(BOB), path=CHAT)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        sent = json.loads(self.mock.last()["body"])
        self.assertEqual(sent["stream_options"], {"include_usage": True})
        evs = events(s.raw)
        self.assertFalse([e for e in evs if e.get("usage") and not e.get("choices")], evs[-2:])
        self.assertTrue(s.raw.endswith(b"data: [DONE]\n\n"))
        tokens = self.access_tokens(CHAT, before)
        self.assertRegex(tokens, r"^\d+/\d+/\d+$")  # the upstream's, not an estimate
        self.assertNotEqual(tokens, "0/0/0")

    def test_v1_client_that_asked_gets_it_and_the_body_unchanged(self):
        raw = (b'{"model":"deepseek-v3-671b#events=3","messages":[{"role":"user","content":"hi"}],'
               b'"stream":true,"stream_options":{"include_usage":true}}')
        s = sc.stream(self.server.port, raw, headers=bearer(BOB), path=CHAT)
        self.assertEqual(self.mock.last()["body"].encode(), raw)
        usage = [e for e in events(s.raw) if e.get("usage") and not e.get("choices")]
        self.assertEqual(len(usage), 1)

    def test_v1_client_stream_options_kept_with_usage_added(self):
        body = {"model": sc.model("deepseek-v3-671b", events=2),
                "messages": [{"role": "user", "content": "hi"}], "stream": True,
                "stream_options": {"include_usage": False}}
        s = sc.stream(self.server.port, body, headers=bearer(BOB), path=CHAT)
        self.assertEqual(s.status, 200)
        self.assertEqual(json.loads(self.mock.last()["body"])["stream_options"],
                         {"include_usage": True})
        self.assertFalse([e for e in events(s.raw) if e.get("usage") and not e.get("choices")])

    def test_seed_stream_counted_without_a_usage_chunk(self):
        before = self.log_len()
        s = sc.stream(self.server.port, {"user_content": "hi", "stream": True,
                                         "model": sc.model("deepseek-v3-671b", events=3)},
                      headers=bearer(BOB))
        self.assertEqual(s.status, 200)
        self.assertTrue(json.loads(self.mock.last()["body"])["stream_options"]["include_usage"])
        self.assertFalse([e for e in events(s.raw) if "usage" in e and not e.get("choices")])
        self.assertRegex(self.access_tokens(SEED, before), r"^\d+/\d+/\d+$")

    def test_non_stream_body_unchanged(self):
        raw = b'{"model":"deepseek-v3-671b","messages":[{"role":"user","content":"hi"}]}'
        before = self.log_len()
        r = sc.request(self.server.port, "POST", CHAT, body=raw,
                       headers=dict(bearer(BOB), **{"Content-Type": "application/json"}))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.mock.last()["body"].encode(), raw)
        u = r.json()["usage"]
        self.assertEqual(self.access_tokens(CHAT, before),
                         f"{u['prompt_tokens']}/{u['completion_tokens']}/{u['total_tokens']}")

    def test_stream_left_mid_way_counts_an_estimate(self):
        before = self.log_len()
        body = {"model": sc.model("deepseek-v3-671b", events=50, delay=50),
                "messages": [{"role": "user", "content": "hi"}], "stream": True}
        got = []

        def on_chunk(s, data):
            got.append(data)
            return len(events(b"".join(got))) < 3  # hang up after 3 events

        sc.stream(self.server.port, body, headers=bearer(BOB), path=CHAT, on_chunk=on_chunk)
        tokens = self.access_tokens(CHAT, before)
        m = re.match(r"^~(\d+)/(\d+)/(\d+)$", tokens)
        self.assertTrue(m, tokens)
        self.assertGreater(int(m.group(2)), 0)
        self.assertEqual(int(m.group(1)) + int(m.group(2)), int(m.group(3)))


if __name__ == "__main__":
    unittest.main()
