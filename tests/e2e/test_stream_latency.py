"""A stream's first event leaves as soon as the upstream sends it, also on a
kept-alive connection: the reply's head and the first event are two small
writes, and with Nagle's algorithm on the client socket the second waited
for the client's delayed ACK (40 ms on Linux; bench S2's first-event p50
went from ~5 ms to 45 ms). The server sets TCP_NODELAY when a connection
first streams, as nginx does for unbuffered proxying."""
import json
import socket
import statistics
import time
import unittest

from serverctl import MockCase, Server, model, record

STREAMS = 12


def first_event_times(port, body):
    """Sends STREAMS streaming requests one after another on one keep-alive
    connection; returns, for each, the seconds from sending the request to
    the first complete data event."""
    req = (f"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for _ in range(STREAMS):
            t0 = time.monotonic()
            s.sendall(req)
            buf, first = b"", None
            while not buf.endswith(b"0\r\n\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise AssertionError(f"connection closed: {buf[-300:]!r}")
                buf += chunk
                if first is None and b"data: {" in buf and b"\n\n" in buf.split(b"data: {", 1)[1]:
                    first = time.monotonic() - t0
            assert buf.startswith(b"HTTP/1.1 200"), buf[:200]
            times.append(first)
    return times


class StreamLatency(MockCase):
    def test_first_event_is_not_held_by_nagle(self):
        # Events 60 ms apart: the first one is alone on the wire for a while.
        body = json.dumps({"user_content": "hi", "stream": True,
                           "model": model(events=3, delay=60)}).encode()
        with Server(self.mock.base_url, workers=1) as srv:
            times = first_event_times(srv.port, body)
        record(f"first event, ms: {[round(t * 1000, 1) for t in times]}".encode())
        median = statistics.median(times[2:])  # past TCP's quick-ACK start
        self.assertLess(median, 0.025, [round(t * 1000, 1) for t in times])

    def test_head_leaves_before_a_late_first_event(self):
        # The server holds a stream's head for the events of the same
        # upstream read (one writev, one wake-up of the client), and sends
        # it alone when none came: a model that thinks before its first
        # token must not keep the client from seeing the 200 meanwhile.
        # The mock sends its head at once and the first event 1.5 s later;
        # both upstream transports (libcurl's: the flush event).
        body = json.dumps({"user_content": "hi", "stream": True,
                           "model": model(events=2, first=1500)}).encode()
        req = (f"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        for engine in ("h1", "curl"):
            with self.subTest(engine=engine), \
                    Server(self.mock.base_url, workers=1,
                           env={"ZJU_UPSTREAM_ENGINE": engine}) as srv, \
                    socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                t0 = time.monotonic()
                s.sendall(req)
                buf, head_at, first_at = b"", None, None
                while not buf.endswith(b"0\r\n\r\n"):
                    chunk = s.recv(65536)
                    self.assertTrue(chunk, buf[-300:])
                    buf += chunk
                    if head_at is None and b"\r\n\r\n" in buf:
                        head_at = time.monotonic() - t0
                    if first_at is None and b"data: {" in buf:
                        first_at = time.monotonic() - t0
                record(f"{engine}: head at {head_at:.3f} s, first event at {first_at:.3f} s".encode())
                self.assertTrue(buf.startswith(b"HTTP/1.1 200"), buf[:200])
                self.assertLess(head_at, 0.5, "the head waited for the first event")
                self.assertGreaterEqual(first_at, 1.4, "the mock's first=1500 did not hold")


if __name__ == "__main__":
    unittest.main()
