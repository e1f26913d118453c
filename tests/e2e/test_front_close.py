"""Requests that end their connection (HTTP/1.0, or HTTP/1.1 with
Connection: close) and whose body arrives in more than one read: what nginx
sends its upstream by default for every long prompt. Each one must be
answered; on the old front every second one (one worker) got nothing.
(docs/FAULTS.md, "front": a closed connection's descriptor left registered
in libevent, so the next connection on the same number was never polled.)"""

import json
import socket
import time
import unittest

from serverctl import MockCase, Server, dechunk, model, record


def one_request(port, version, close_header, body, split, timeout=5):
    """Sends the request with its body in two writes (a pause between them
    forces a second read) and returns (status line, whole reply)."""
    head = (
        f"POST /api/chat HTTP/{version}\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close_header else "") + "\r\n"
    ).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(head + body[:split])
        time.sleep(0.02)
        s.sendall(body[split:])
        deadline = time.monotonic() + timeout
        data = b""
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
        record(data)
        return data.split(b"\r\n", 1)[0], data
    finally:
        s.close()


class ClosingRequestsWithLongBodies(MockCase):
    def check(self, workers, version, close_header, stream):
        with Server(self.mock.base_url, workers=workers) as srv:
            payload = {"user_content": "a" * 30000, "model": model(events=2), "stream": stream}
            body = json.dumps(payload).encode()
            for i in range(8):
                t0 = time.monotonic()
                status, data = one_request(srv.port, version, close_header, body, split=1000)
                took = time.monotonic() - t0
                self.assertTrue(status.endswith(b" 200 OK"), f"request {i}: {status!r} after {took:.1f}s")
                head, _, rest = data.partition(b"\r\n\r\n")
                if b"transfer-encoding: chunked" in head.lower():
                    rest, terminated = dechunk(rest)
                    self.assertTrue(terminated, rest[-200:])
                if stream:
                    self.assertIn(b'"finish_reason":"stop"', rest, rest[-300:])
                else:
                    self.assertEqual(json.loads(rest)["object"], "chat.completion")

    def test_http10_one_worker(self):
        self.check(1, "1.0", False, False)

    def test_http10_stream_one_worker(self):
        self.check(1, "1.0", False, True)

    def test_connection_close_one_worker(self):
        self.check(1, "1.1", True, False)

    def test_connection_close_stream_two_workers(self):
        self.check(2, "1.1", True, True)


if __name__ == "__main__":
    unittest.main()


class OverLimitBodiesGetTheirAnswer(MockCase):
    """A client that sends a body over MAX_BODY_BYTES whole (no Expect:
    100-continue, as browsers and most libraries do) must read the 413, not a
    reset: the server closes lingering, discarding the rest of the body,
    instead of closing a socket with unread input (docs/FAULTS.md)."""

    def post_whole(self, port, size):
        body = json.dumps({"user_content": "a" * size}).encode()
        head = (
            "POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://site.example\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(head + body)  # raises BrokenPipe/ConnectionReset on the old code
            data = b""
            while True:  # the server closes after a 413 (lingering): read to the end
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            record(data)
            return data
        finally:
            s.close()

    def test_413_reaches_a_client_that_sends_everything(self):
        with Server(self.mock.base_url, env={"MAX_BODY_BYTES": 100000}) as srv:
            for size in (150_000, 3_000_000, 20_000_000):
                data = self.post_whole(srv.port, size)
                self.assertTrue(data.startswith(b"HTTP/1.1 413 "), (size, data[:200]))
                # what a browser on another origin can read: JSON, with CORS
                head, _, body = data.partition(b"\r\n\r\n")
                self.assertIn(b"\r\naccess-control-allow-origin: ", head.lower(), (size, head))
                self.assertIsInstance(json.loads(body)["error"], str, (size, body[:200]))
            self.assertEqual(self.mock.stats()["chat_requests"], 0)
            # and the server still serves
            status, _ = one_request(srv.port, "1.1", True, json.dumps({"user_content": "hi"}).encode(), 5)
            self.assertTrue(status.endswith(b" 200 OK"), status)
