"""Fault matrix, upstream rows (docs/FAULTS.md): the faults that
test_server_faults.py does not cover, or covers without checking that the
server answers a normal request right after. Each test provokes one fault
in both modes where both apply, checks the specified outcome, then checks
that a normal stream and a normal non-stream request are served."""

import json
import os
import tempfile
import time
import unittest

from serverctl import (
    KEY,
    LOG_DIR,
    Mock,
    Server,
    ServerCase,
    chat,
    free_port,
    have_binaries,
    model,
    stream,
)
from mockctl import make_self_signed_cert


def req(m, stream_mode):
    return {"user_content": "hi", "model": m, "stream": stream_mode}


def tls_stats(mock):
    """GET /_mock/stats over TLS without verification (the test trusts it)."""
    import http.client
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", mock.port, timeout=5, context=ctx)
    try:
        conn.request("GET", "/_mock/stats")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


class ServesAfter:
    def assert_serves_both(self, port):
        s = stream(port, req(model(events=3), True), timeout=10)
        self.assertEqual(s.status, 200, s.raw[:300])
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.errors(), [])
        self.assertEqual(s.content(), "你好，世界")
        r = chat(port, req(model(events=3), False), timeout=10)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["choices"][0]["message"]["content"], "你好，世界")


class UpstreamMatrix(ServerCase, ServesAfter):
    server_env = {
        "ZJU_FIRST_BYTE_TIMEOUT_MS": "1000",
        "ZJU_IDLE_TIMEOUT_MS": "1500",
        "HEARTBEAT_MS": "300",
    }

    def assert_json_error(self, status, body, expect):
        self.assertIn(status, expect, body[:300])
        err = json.loads(body)["error"]
        self.assertIsInstance(err, str)
        self.assertTrue(err)
        self.assertNotIn(KEY, err)
        return err

    def test_empty_error_body(self):
        r = chat(self.port, req(model(status=400, body="empty"), False))
        self.assert_json_error(r.status, r.body, (500,))
        s = stream(self.port, req(model(status=400, body="empty"), True))
        self.assert_json_error(s.status, s.raw, (500,))
        self.assert_serves_both(self.port)

    def test_key_echoed_in_error(self):
        for sm in (False, True):
            r = (stream if sm else chat)(self.port, req(model(status=401, echo_key=1), sm))
            body = r.raw if sm else r.body
            self.assert_json_error(r.status, body, (500,))
            self.assertNotIn(KEY.encode(), body)
            self.assertNotIn(KEY, json.dumps(r.headers))
        self.assert_serves_both(self.port)

    def test_garbage_lines(self):
        s = stream(self.port, req(model(events=5, fault="garbage"), True))
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.errors(), [])
        self.assertEqual(s.content(), "你好，世界 🌍!")
        self.assert_serves_both(self.port)

    def test_200_not_sse_non_stream(self):
        # A 200 whose body is not the JSON the contract relays: a JSON error
        # (5xx), never the upstream's bytes passed off as an answer, never a hang.
        t0 = time.monotonic()
        r = chat(self.port, req(model(fault="not_sse"), False))
        self.assertLess(time.monotonic() - t0, 5)
        if r.status == 200:
            r.json()  # relayed byte for byte only if it is JSON
        else:
            self.assert_json_error(r.status, r.body, (500, 502))
        self.assert_serves_both(self.port)

    def test_200_not_sse_stream(self):
        s = stream(self.port, req(model(fault="not_sse"), True), timeout=10)
        self.assertLess(s.t_end, 5)
        if s.status == 200:
            self.assertTrue(s.clean_end, s.error)
            self.assertEqual([e for e in s.json_events() if "error" not in e], [])
            self.assertLessEqual(len(s.errors()), 1)
        else:
            self.assert_json_error(s.status, s.raw, (500, 502))
        self.assert_serves_both(self.port)

    def test_fin_and_rst_mid_stream(self):
        # Both are in test_server_faults.MidStreamFaults; here side by side,
        # in both modes, with the serve-after check.
        for fault in ("drop_mid", "rst_mid"):
            with self.subTest(fault=fault):
                s = stream(self.port, req(model(events=10, fault=fault, after=3), True))
                self.assertEqual(s.status, 200)
                self.assertTrue(s.clean_end, s.error)
                self.assertEqual(len(s.errors()), 1)
                self.assertIn("error", s.json_events()[-1])
                r = chat(self.port, req(model(fault=fault), False))
                self.assert_json_error(r.status, r.body, (500, 502, 503))
                self.assert_serves_both(self.port)

    def test_very_slow_events_complete_with_heartbeats(self):
        # Three content events 1.2 s apart: slower than four heartbeat
        # periods, faster than the 1.5 s idle timeout. r1 reasoning=0.
        s = stream(self.port, req(model(events=3, reasoning=0, delay=1200), True), timeout=12)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.errors(), [])
        self.assertEqual(s.content(), "你好，世界")
        self.assertGreaterEqual(len(s.comments()), 6, "heartbeats expected in 1.2 s silences at 300 ms")
        self.assertTrue(all(c == b"ping" for c in s.comments()))
        self.assert_serves_both(self.port)


class Unreachable(unittest.TestCase, ServesAfter):
    """503 in both modes; the server stays up, answers /healthz and answers
    the next request (again 503, promptly: not wedged)."""

    def check(self, srv, max_s=8):
        for _ in range(2):
            t0 = time.monotonic()
            r = chat(srv.port, req(model(), False), headers={"Origin": "http://a.example"}, timeout=20)
            self.assertEqual(r.status, 503, r)
            self.assertIsInstance(r.json()["error"], str)
            self.assertNotIn(KEY.encode(), r.body)
            self.assertIsNotNone(r.header("access-control-allow-origin"))
            s = stream(srv.port, req(model(), True), timeout=20)
            self.assertEqual(s.status, 503, s.raw[:300])
            self.assertIsInstance(json.loads(s.raw)["error"], str)
            self.assertLess(time.monotonic() - t0, max_s)
        self.assertTrue(srv.healthy())

    def setUp(self):
        if not have_binaries():
            self.fail("binaries missing: run make asan")

    def test_refused_then_serves(self):
        with Server(f"http://127.0.0.1:{free_port()}/v1") as srv:
            self.check(srv)

    def test_dns_failure_then_serves(self):
        with Server("http://zju-chat-e2e.invalid/v1") as srv:
            self.check(srv)

    def test_tls_bad_certificate(self):
        # The mock serves TLS with a self-signed certificate the server has
        # no CA for: the handshake fails, 503, and no request goes through.
        d = tempfile.mkdtemp(prefix="tls-", dir=LOG_DIR)
        cert, key = make_self_signed_cert(d)
        with Mock("--tls-cert", cert, "--tls-key", key) as tls_mock:
            self.assertEqual(tls_mock.scheme, "https")
            with Server(tls_mock.base_url, env={"ZJU_CONNECT_TIMEOUT_MS": "3000"}) as srv:
                self.check(srv)
                self.assertEqual(tls_stats(tls_mock)["chat_requests"], 0, "a request went through an untrusted TLS connection")
            # Trusting that certificate through ZJU_CA_FILE makes the same
            # upstream work, over one reused TLS connection.
            env = {"ZJU_CA_FILE": cert}
            with Server(tls_mock.base_url, env=env, workers=1) as srv:
                before = tls_stats(tls_mock)["connections_accepted"]
                for _ in range(3):
                    r = chat(srv.port, req(model(), False), timeout=20)
                    self.assertEqual(r.status, 200, r.body[:300])
                    s = stream(srv.port, req(model(), True), timeout=20)
                    self.assertEqual(s.status, 200, s.raw[:300])
                # one upstream connection, plus the stats request itself
                self.assertEqual(tls_stats(tls_mock)["connections_accepted"] - before, 2)
        os.unlink(key)


if __name__ == "__main__":
    unittest.main()
