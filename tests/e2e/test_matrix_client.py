"""Fault matrix, client rows (docs/FAULTS.md): hostile or broken clients
that test_server_contract.py / test_server_disconnect.py do not cover. Each
test checks the specified outcome, that the upstream was not called for a
request that never completed, and that a normal client is served right
after (or, for slow and idle clients, at the same time)."""

import json
import resource
import socket
import threading
import time
import unittest

from serverctl import RawConn, ServerCase, chat, model, request, stream


class ClientMatrix(ServerCase):
    server_env = {"REQUEST_TIMEOUT": "2", "MAX_BODY_BYTES": "4096"}

    def upstream_calls(self):
        return self.mock.stats()["chat_requests"]

    def refused(self, c, timeout=4):
        """The server answered 4xx or closed without answering; returns the
        status (None when it just closed)."""
        try:
            r = c.read_response(timeout=timeout)
        except (ConnectionError, OSError):
            return None
        self.assertGreaterEqual(r.status, 400, r)
        self.assertLess(r.status, 500, r)
        return r.status

    def test_request_one_byte_per_second(self):
        # A client dribbling a valid request at 1 byte/s must be cut off by
        # REQUEST_TIMEOUT (2 s) overall, not only after 2 s of silence;
        # meanwhile another client is served normally.
        c = RawConn(self.port, timeout=10)
        data = c.post_chat({"user_content": "slow"})
        result = {}

        def dribble():
            t0 = time.monotonic()
            try:
                for i in range(len(data)):
                    if time.monotonic() - t0 > 7:
                        break
                    c.send(data[i : i + 1])
                    time.sleep(1.0)
                result["closed"] = None
            except OSError:
                result["closed"] = time.monotonic() - t0

        before = self.upstream_calls()
        th = threading.Thread(target=dribble, daemon=True)
        th.start()
        time.sleep(0.5)
        self.assert_serves()  # other clients unaffected while it dribbles
        th.join(9)
        self.assertIsNotNone(result.get("closed"), "a 1 byte/s request held its connection for 7 s (REQUEST_TIMEOUT=2)")
        self.assertLess(result["closed"], 5)
        self.assertNotIn(b"HTTP/1.1 200", c.pending())
        c.close()
        self.assertEqual(self.upstream_calls(), before + 1)  # only assert_serves' stream
        self.assert_serves()

    def test_header_count_over_limit(self):
        # Many small headers adding up past MAX_HEADER_BYTES (16 KiB); the
        # single oversized header is test_server_contract's.
        c = RawConn(self.port)
        try:
            c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 20) for i in range(2000)) + b"\r\n")
            self.refused(c)
        finally:
            c.close()
        self.assert_serves()

    def test_declared_body_far_over_limit(self):
        # The answer comes before the body is sent: nobody waits for 100 MB.
        before = self.upstream_calls()
        c = RawConn(self.port)
        try:
            t0 = time.monotonic()
            c.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{")
            st = self.refused(c)
            self.assertIn(st, (None, 413))
            self.assertLess(time.monotonic() - t0, 3)
        finally:
            c.close()
        self.assertEqual(self.upstream_calls(), before)
        self.assert_serves()

    def test_chunked_body_over_limit(self):
        before = self.upstream_calls()
        c = RawConn(self.port)
        try:
            c.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            try:
                for _ in range(64):
                    c.send(b"400\r\n" + b"x" * 1024 + b"\r\n")
                c.send(b"0\r\n\r\n")
            except OSError:
                pass  # the server may close before we are done
            self.assertIn(self.refused(c), (None, 400, 413))
        finally:
            c.close()
        self.assertEqual(self.upstream_calls(), before)
        self.assert_serves()

    def test_valid_chunked_body_accepted(self):
        body = json.dumps({"user_content": "chunked"}).encode()
        c = RawConn(self.port)
        try:
            c.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                   + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (5, body[:5], len(body) - 5, body[5:]))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertIn("choices", r.json())
        finally:
            c.close()
        self.assertEqual(self.mock.last_body()["messages"][-1]["content"], "chunked")

    def test_invalid_chunked_encoding(self):
        cases = {
            "size not hex": b"zz\r\nabc\r\n0\r\n\r\n",
            "size overflow": b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            "negative size": b"-5\r\nabc\r\n0\r\n\r\n",
            "chunk longer than its size": b"2\r\n{\"user_content\": \"x\"}\r\n0\r\n\r\n",
        }
        before = self.upstream_calls()
        for name, chunked in cases.items():
            with self.subTest(name):
                c = RawConn(self.port)
                try:
                    c.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
                    self.refused(c)
                finally:
                    c.close()
        self.assertEqual(self.upstream_calls(), before)
        self.assert_serves()

    def test_body_shorter_than_content_length_then_eof(self):
        # The client half-closes after 20 of 100 bytes: no answer is owed,
        # the connection is closed promptly, the upstream is not called.
        # (Without the EOF it is test_server_contract's slow-body case.)
        before = self.upstream_calls()
        c = RawConn(self.port)
        try:
            c.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user_content\": \"h")
            c.sock.shutdown(socket.SHUT_WR)
            t0 = time.monotonic()
            self.assertTrue(c.wait_closed(4))
            self.assertLess(time.monotonic() - t0, 3)
            self.assertNotIn(b" 200 ", c.pending()[:20])
        finally:
            c.close()
        self.assertEqual(self.upstream_calls(), before)
        self.assert_serves()

    def test_expect_100_continue(self):
        body = json.dumps({"user_content": "expect"}).encode()
        c = RawConn(self.port)
        try:
            c.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
            interim = c.read_until(b"\r\n\r\n", timeout=3)
            self.assertTrue(interim.startswith(b"HTTP/1.1 100"), interim)
            c.send(body)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertIn("choices", r.json())
        finally:
            c.close()
        # Over the limit: refused without asking for the body.
        c = RawConn(self.port)
        try:
            c.send(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
            r = c.read_response(timeout=3)
            self.assertEqual(r.status, 413, r)
        except (ConnectionError, OSError):
            pass  # closing without a 100 is also a refusal
        finally:
            c.close()
        self.assert_serves()

    def test_pipelined_mixed_with_errors_in_order(self):
        # Ten requests in one write, errors among them: ten answers, in
        # order. (Two pipelined successes: test_server_contract.KeepAlive.)
        c = RawConn(self.port)
        payloads = []
        for i in range(10):
            if i % 3 == 1:
                payloads.append((400, c.post_chat(b'{"user_content": ""}')))
            elif i % 3 == 2:
                payloads.append((200, c.post_chat({"user_content": f"s{i}", "stream": True, "model": model(events=2)})))
            else:
                payloads.append((200, c.post_chat({"user_content": f"n{i}"})))
        try:
            c.send(b"".join(p for _, p in payloads))
            for i, (status, _) in enumerate(payloads):
                r = c.read_response(timeout=10)
                self.assertEqual(r.status, status, f"answer {i}: {r}")
                if i % 3 == 2:
                    self.assertTrue(r.body.startswith(b"data: "), r.body[:100])
                elif status == 200:
                    self.assertIn("choices", r.json())
        finally:
            c.close()
        self.assert_serves()


class IdleKeepAlive(ServerCase):
    """Thousands of idle keep-alive connections do not stop the server from
    serving others promptly."""

    server_env = {"REQUEST_TIMEOUT": "30"}
    workers = 2
    N = 3000

    def test_thousands_of_idle_connections(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < self.N + 200:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, self.N + 500), hard))
        socks = []
        try:
            t0 = time.monotonic()
            for i in range(self.N):
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                socks.append(s)
            # A third have been served once and sit idle on keep-alive.
            used = socks[: self.N // 3]
            for s in used:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in used:
                got = b""
                while b"\r\n\r\n" not in got:
                    got += s.recv(4096)
                self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:100])
            setup = time.monotonic() - t0
            self.assertLess(setup, 30)
            t1 = time.monotonic()
            self.assert_serves()
            r = chat(self.port, {"user_content": "hi"})
            self.assertEqual(r.status, 200, r)
            took = time.monotonic() - t1
            self.assertLess(took, 3, f"normal requests took {took:.1f} s beside {self.N} idle connections")
            # Still open: the server did not drop them to cope.
            alive = 0
            for s in socks[-50:]:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            for s in socks[-50:]:
                try:
                    if s.recv(4096).startswith(b"HTTP/1.1 200"):
                        alive += 1
                except OSError:
                    pass
            self.assertEqual(alive, 50)
        finally:
            for s in socks:
                s.close()
        self.assertTrue(request(self.port, "GET", "/healthz").status == 200)
        self.assert_serves()


if __name__ == "__main__":
    unittest.main()
