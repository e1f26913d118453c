"""A client that goes away cancels its upstream transfer promptly, in every
phase (waiting for upstream headers, waiting for the first event,
mid-stream, non-stream); a client that stops reading pauses the upstream
and keeps the server's memory bounded.

Each class runs on /api/chat and, as its ...V1 subclass at the end, on
/v1/chat/completions: the relay is the same, the request body and the end
of a stream ([DONE] on /v1) differ (serverctl's SEED and OPENAI routes)."""

import socket
import sys
import time

from serverctl import (
    OPENAI,
    RawConn,
    ServerCase,
    base_env,
    model,
    wait_until,
)

CANCEL_LIMIT_S = 1.0


class ClientLeaves(ServerCase):
    # Default heartbeats (15 s) on purpose: nothing is written to the client
    # during these waits, so the server must notice the hang-up by itself.

    def start(self, m, stream=True):
        """Opens a connection, sends the request for model m on the class's
        route, waits until the upstream has it; returns the connection."""
        before = self.mock.stats()["chat_requests"]
        c = RawConn(self.port)
        c.send(c.post_chat(self.route.body(m, stream=stream), path=self.route.path))
        st = self.mock.wait_stat("chat_requests", lambda v: v > before, 3)
        self.assertGreater(st["chat_requests"], before, "the upstream never got the request")
        return c

    def leave_and_measure(self, c, how="close"):
        """Hangs up; returns seconds until the mock saw its upstream
        connection closed by the server."""
        before = self.mock.stats()["connections_closed_by_client"]
        t0 = time.monotonic()
        if how == "abort":
            c.abort()
        else:
            c.close()
        st = self.mock.wait_stat("connections_closed_by_client", lambda v: v > before, 3)
        took = time.monotonic() - t0
        self.assertGreater(st["connections_closed_by_client"], before, "upstream transfer was never cancelled")
        print(f"  [disconnect-to-cancel {self.route.name} {self._testMethodName}: {took * 1000:.0f} ms]", file=sys.stderr)
        return took

    def after_leaving(self):
        # Nothing is left running upstream, and the server still serves.
        st = self.mock.wait_stat("streams_active", lambda v: v == 0, 2)
        self.assertEqual(st["streams_active"], 0)
        self.assert_serves()

    def test_stream_waiting_for_upstream_headers(self):
        c = self.start(model(fault="hang_headers"))
        time.sleep(0.2)
        self.assertLess(self.leave_and_measure(c), CANCEL_LIMIT_S)
        self.after_leaving()

    def test_stream_upstream_thinking(self):
        c = self.start(model(think=20000))
        time.sleep(0.2)
        self.assertLess(self.leave_and_measure(c, "abort"), CANCEL_LIMIT_S)
        self.after_leaving()

    def test_stream_before_first_event(self):
        c = self.start(model(fault="hang_mid", after=0))
        r = c.read_response(head_only=True)
        self.assertEqual(r.status, 200, "the stream starts as soon as the upstream answered 2xx")
        time.sleep(0.2)
        self.assertLess(self.leave_and_measure(c), CANCEL_LIMIT_S)
        self.after_leaving()

    def test_mid_stream(self):
        c = self.start(model(events=2000, delay=20))
        c.read_until(b"data: ", 5)
        c.read_until(b"data: ", 5)
        c.read_until(b"data: ", 5)
        self.assertLess(self.leave_and_measure(c), CANCEL_LIMIT_S)
        self.after_leaving()

    def test_mid_stream_reset(self):
        c = self.start(model(events=2000, delay=20))
        c.read_until(b"data: ", 5)
        self.assertLess(self.leave_and_measure(c, "abort"), CANCEL_LIMIT_S)
        self.after_leaving()

    def test_non_stream_waiting(self):
        c = self.start(model(think=20000), stream=False)
        time.sleep(0.2)
        self.assertLess(self.leave_and_measure(c), CANCEL_LIMIT_S)
        self.after_leaving()

    def test_non_stream_mid_body(self):
        c = self.start(model(fault="hang_mid"), stream=False)
        time.sleep(0.3)
        self.assertLess(self.leave_and_measure(c), CANCEL_LIMIT_S)
        self.after_leaving()

    def test_half_close_after_request(self):
        # shutdown(SHUT_WR) after the request is how some clients say "done
        # sending"; whether it cancels is the server's choice, but it must
        # not crash or hang, and a full close must cancel.
        c = self.start(model(think=20000))
        before = self.mock.stats()["connections_closed_by_client"]
        c.sock.shutdown(socket.SHUT_WR)
        time.sleep(0.3)
        t0 = time.monotonic()
        c.close()
        st = self.mock.wait_stat("connections_closed_by_client", lambda v: v > before, 3)
        self.assertGreater(st["connections_closed_by_client"], before)
        self.assertLess(time.monotonic() - t0, CANCEL_LIMIT_S)
        self.after_leaving()


class SlowReader(ServerCase):
    """Clients that stop reading a long, fast stream: the server pauses the
    upstream transfer instead of buffering it."""

    workers = 1
    # ASan keeps freed memory in a quarantine (256 MB by default), which RSS
    # would count as if it were buffered data; without it RSS shows what the
    # server really holds. Every other sanitizer check stays on.
    server_env = {"ASAN_OPTIONS": base_env()["ASAN_OPTIONS"] + ":quarantine_size_mb=0"}
    N_CLIENTS = 4
    EVENTS = 300000  # about 45 MB per stream if it were all buffered

    def open_stalled(self):
        c = RawConn(self.port, rcvbuf=4096)
        c.send(c.post_chat(self.route.body(model(events=self.EVENTS), stream=True), path=self.route.path))
        return c

    def test_memory_bounded_and_cancel_while_paused(self):
        base_rss = self.server.rss_kb()
        before = self.mock.stats()
        conns = [self.open_stalled() for _ in range(self.N_CLIENTS)]
        try:
            st = self.mock.wait_stat("streams_active", lambda v: v >= self.N_CLIENTS, 3)
            self.assertEqual(st["streams_active"], self.N_CLIENTS)
            peak = base_rss
            t_end = time.monotonic() + 3
            while time.monotonic() < t_end:
                peak = max(peak, self.server.rss_kb())
                time.sleep(0.1)
            st = self.mock.stats()
            growth_mb = (peak - base_rss) / 1024
            print(f"  [slow readers ({self.route.name}): {self.N_CLIENTS} stalled, server RSS {base_rss // 1024} -> {peak // 1024} MB]", file=sys.stderr)
            self.assertEqual(st["streams_completed"], before["streams_completed"], "the upstream must be paused, not drained")
            self.assertEqual(st["streams_active"], self.N_CLIENTS)
            self.assertLess(growth_mb, 40, f"server RSS grew {growth_mb:.0f} MB for {self.N_CLIENTS} stalled clients")
            # Leaving while paused still cancels at once.
            closed_before = st["connections_closed_by_client"]
            t0 = time.monotonic()
            for c in conns:
                c.abort()
            st = self.mock.wait_stat("connections_closed_by_client", lambda v: v >= closed_before + self.N_CLIENTS, 3)
            self.assertGreaterEqual(st["connections_closed_by_client"], closed_before + self.N_CLIENTS)
            self.assertLess(time.monotonic() - t0, CANCEL_LIMIT_S * 1.5)
        finally:
            for c in conns:
                c.close()
        self.assertTrue(wait_until(lambda: self.mock.stats()["streams_active"] == 0, 2))
        self.assert_serves()

    def test_resume_after_stall_delivers_everything(self):
        n = 20000
        c = RawConn(self.port)
        try:
            c.send(c.post_chat(self.route.body(model(events=n, reasoning=0), stream=True), keep_alive=False,
                               path=self.route.path))
            time.sleep(1.5)  # not reading: the server must pause, then resume
            r = c.read_response(timeout=30)
        finally:
            c.close()
        self.assertEqual(r.status, 200)
        # role, n contents, finish, and on /v1 the upstream's [DONE], last
        self.assertEqual(r.body.count(b"data: "), n + 2 + self.route.done)
        self.assertEqual(r.body.count(b"[DONE]"), int(self.route.done))
        if self.route.done:
            self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"), r.body[-200:])
        self.assertNotIn(b'"error"', r.body)


# ---------------------------------------------------------------- /v1


class ClientLeavesV1(ClientLeaves):
    route = OPENAI


class SlowReaderV1(SlowReader):
    route = OPENAI
