"""NUL inside request strings (issue 9; docs/FAULTS.md, "Deployment"):
{"user_content": "a\\u0000b"} is valid JSON and got 400. Now user_content
and system_content are forwarded intact, the NUL written upstream as
\\u0000; a model with a NUL (no model id has one) is a clear 400."""

import json
import unittest

from serverctl import ServerCase, chat, stream


class NulInStrings(ServerCase):
    def post(self, payload, sm):
        body = dict(payload, stream=sm)
        r = stream(self.port, body) if sm else chat(self.port, body)
        return r, (r.raw if sm else r.body)

    def test_user_content_with_nul_is_forwarded_intact(self):
        for sm in (False, True):
            with self.subTest(stream=sm):
                r, body = self.post({"user_content": "a\u0000b"}, sm)
                self.assertEqual(r.status, 200, body[:300])
                if sm:
                    self.assertTrue(r.clean_end, r.error)
                raw = self.mock.last()["body"]
                # Escaped on the wire, never a raw NUL, never cut at it.
                self.assertIn('{"role":"user","content":"a\\u0000b"}', raw)
                self.assertEqual(json.loads(raw)["messages"], [{"role": "user", "content": "a\u0000b"}])

    def test_system_content_with_nul_is_forwarded_intact(self):
        for sm in (False, True):
            with self.subTest(stream=sm):
                r, body = self.post({"user_content": "\u0000", "system_content": "s\u0000t\u0000"}, sm)
                self.assertEqual(r.status, 200, body[:300])
                self.assertEqual(
                    self.mock.last_body()["messages"],
                    [{"role": "system", "content": "s\u0000t\u0000"}, {"role": "user", "content": "\u0000"}],
                )

    def test_model_with_nul_is_refused(self):
        before = self.mock.stats()["chat_requests"]
        for sm in (False, True):
            with self.subTest(stream=sm):
                r = chat(self.port, {"user_content": "hi", "model": "deepseek\u0000-r1", "stream": sm})
                self.assert_error(r, 400)
                self.assertEqual(r.json()["error"], "model must not contain NUL")
        self.assertEqual(self.mock.stats()["chat_requests"], before)


if __name__ == "__main__":
    unittest.main()
