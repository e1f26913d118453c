"""ACCESS_LOG_FORMAT=json: one JSON object per access line, for log
pipelines (Loki, Elasticsearch, jq): every field of the text line, numbers
as numbers, unknown ones null, whatever bytes the client put in the path or
the model still a valid JSON string; the key and the access token never in
it; other values refused at start."""
import json
import socket
import unittest

import serverctl as sc
from test_config_checks import refused
from test_tokens import BOB, STANDARD, bearer, tokens_file


def access_objects(log):
    out = []
    for line in log.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))  # every such line must parse
    return out


class JsonAccessLog(unittest.TestCase):
    def test_fields_and_hostile_bytes(self):
        mock = sc.Mock()
        mock.start()
        srv = sc.Server(upstream=mock.url, env={"ACCESS_LOG_FORMAT": "json",
                                                "ACCESS_TOKENS_FILE": tokens_file(STANDARD)})
        srv.start()
        try:
            r = sc.request(srv.port, "POST", "/v1/chat/completions",
                           body=json.dumps({"model": "deepseek-v3-671b",
                                            "messages": [{"role": "user", "content": "hi"}]}).encode(),
                           headers=dict(bearer(BOB), **{"Content-Type": "application/json"}))
            self.assertEqual(r.status, 200, r)
            u = r.json()["usage"]
            # a path with quotes, a backslash, a control byte and invalid UTF-8
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as c:
                c.sendall(b'GET /x"\\%01\x01\xff?q="} HTTP/1.1\r\nHost: a\r\n'
                          b"Connection: close\r\n\r\n")
                while c.recv(4096):
                    pass

            def two():
                objs = access_objects(srv.log())
                return objs if len([o for o in objs if o["path"] != "/healthz"]) >= 2 else None
            objs = sc.wait_until(two, 5)
            self.assertTrue(objs, srv.log()[-2000:])
            chat = next(o for o in objs if o["path"] == "/v1/chat/completions")
            self.assertEqual(chat["method"], "POST")
            self.assertEqual(chat["status"], 200)
            self.assertEqual(chat["model"], "deepseek-v3-671b")
            self.assertIs(chat["stream"], False)
            self.assertEqual(chat["token_name"], "bob")
            self.assertEqual((chat["prompt_tokens"], chat["completion_tokens"], chat["total_tokens"]),
                             (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]))
            self.assertIs(chat["tokens_estimated"], False)
            self.assertIsInstance(chat["duration_ms"], int)
            self.assertIsInstance(chat["ttfb_ms"], int)
            self.assertIsInstance(chat["pid"], int)
            odd = next(o for o in objs if o["path"] not in ("/v1/chat/completions", "/healthz"))
            self.assertIn(odd["status"], (400, 404))
            self.assertIsNone(odd["total_tokens"])
            self.assertIsNone(odd["stream"])
            log = srv.log()
            self.assertNotIn(BOB, log)
            self.assertNotIn(sc.KEY, log)
        finally:
            srv.stop()
            mock.stop()

    def test_other_values_refused(self):
        rc, log = refused(env={"ACCESS_LOG_FORMAT": "xml"})
        self.assertEqual(rc, 2, log)
        self.assertIn("ACCESS_LOG_FORMAT must be text or json", log)


if __name__ == "__main__":
    unittest.main()
