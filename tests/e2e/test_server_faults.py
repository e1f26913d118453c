"""What a frontend gets when the upstream misbehaves: error statuses (JSON,
HTML, empty, echoing the key), refused and black-holed connections, hangs
before headers and mid-stream, dropped connections, garbage, missing [DONE],
each timeout, heartbeats during silences, and the retry of a 503. After
every fault the server must still answer a normal request."""

import json
import socket
import time
import unittest

from serverctl import (
    KEY,
    Mock,
    Server,
    ServerCase,
    chat,
    free_port,
    have_binaries,
    model,
    stream,
)


def both(port, m, timeout=15, **extra):
    """The same request in non-stream and stream mode."""
    r = chat(port, dict({"user_content": "hi", "model": m}, **extra), headers={"Origin": "http://app.example"}, timeout=timeout)
    s = stream(port, dict({"user_content": "hi", "stream": True, "model": m}, **extra), headers={"Origin": "http://app.example"}, timeout=timeout)
    return r, s


class UpstreamErrorStatus(ServerCase):
    """An upstream error status becomes a real status in both modes, never a
    200 stream: 500 with the upstream's message, key scrubbed."""

    def check_status(self, resp_or_stream, status):
        if hasattr(resp_or_stream, "data"):  # a Stream: turn into a Response-like check
            self.assertEqual(resp_or_stream.status, status, resp_or_stream.raw[:300])
            body = json.loads(resp_or_stream.raw)
            self.assertIsInstance(body.get("error"), str)
            self.assertIsNotNone(resp_or_stream.header("access-control-allow-origin"))
            return body["error"]
        return self.assert_error(resp_or_stream, status)

    def test_json_error_statuses_relay_message(self):
        for st in (400, 401, 403, 404, 422):
            with self.subTest(status=st):
                r, s = both(self.port, model(status=st))
                for x in (r, s):
                    msg = self.check_status(x, 500)
                    self.assertIn(f"injected status {st}", msg)
        self.assert_serves()

    def test_5xx_error_status(self):
        for st in (500, 502):
            with self.subTest(status=st):
                r, s = both(self.port, model(status=st))
                self.check_status(r, 500)
                self.check_status(s, 500)
        self.assert_serves()

    def test_html_error_body(self):
        r, s = both(self.port, model(status=502, body="html"))
        for x in (r, s):
            msg = self.check_status(x, 500)
            self.assertTrue(msg)
        self.assert_serves()

    def test_empty_error_body(self):
        r, s = both(self.port, model(status=400, body="empty"))
        self.check_status(r, 500)
        self.check_status(s, 500)

    def test_error_echoing_key_is_scrubbed(self):
        r, s = both(self.port, model(status=401, echo_key=1))
        for x in (r, s):
            msg = self.check_status(x, 500)
            self.assertIn("injected status 401", msg)
        self.assertNotIn(KEY.encode(), r.body)
        self.assertNotIn(KEY.encode(), s.raw)
        self.assertNotIn(KEY, json.dumps(r.headers) + json.dumps(s.headers))

    def test_big_error_body_bounded(self):
        r, s = both(self.port, model(fault="big_error"))
        self.check_status(r, 500)
        self.check_status(s, 500)
        self.assertLess(len(r.body), 64 * 1024)
        self.assertLess(len(s.raw), 64 * 1024)
        self.assert_serves()

    def test_429_passes_through_or_500(self):
        r, s = both(self.port, model(status=429, retry_after=1), timeout=20)
        for x in (r, s):
            if x.status == 429:
                self.assertEqual(x.header("retry-after"), "1")
            else:
                self.assertEqual(x.status, 500)
        self.assert_serves()

    def test_503_retried_on_non_stream(self):
        self.mock.config(fail_next=1, fail_status=503)
        before = self.mock.stats()["chat_requests"]
        r = chat(self.port, {"user_content": "hi"})
        self.assertEqual(r.status, 200, r)
        self.assertIn("choices", r.json())
        self.assertEqual(self.mock.stats()["chat_requests"], before + 2)


class MidStreamFaults(ServerCase):
    """Faults after the upstream answered 200: the stream has started, so
    the client gets the events so far, one error event, then the end."""

    def check_error_end(self, s, events_before):
        self.assertEqual(s.status, 200, s.raw[:300])
        self.assertTrue(s.clean_end, f"stream not ended properly: {s.error}")
        data = s.json_events()
        self.assertEqual(len(s.errors()), 1, s.raw[-500:])
        self.assertIn("error", data[-1], "the error event must be the last")
        self.assertEqual(len(data) - 1, events_before, s.raw[:1000])
        self.assertNotIn(KEY.encode(), s.raw)

    def test_drop_mid(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(events=10, fault="drop_mid", after=3)})
        self.check_error_end(s, 3)
        self.assert_serves()

    def test_rst_mid(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(events=10, fault="rst_mid", after=4)})
        self.check_error_end(s, 4)
        self.assert_serves()

    def test_truncate_without_finish_or_done(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(events=4, reasoning=0, fault="truncate")})
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.content(), "你好，世界 🌍")
        self.assertLessEqual(len(s.errors()), 1)
        self.assert_serves()

    def test_no_done(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(events=4, fault="no_done")}, timeout=10)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.content(), "你好，世界 🌍")
        self.assertTrue(any(e.get("choices") and e["choices"][0].get("finish_reason") == "stop" for e in s.json_events()))
        self.assertLess(s.t_end, 5)
        self.assert_serves()

    def test_not_sse_answer(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(fault="not_sse")}, timeout=10)
        self.assertLess(s.t_end, 8)
        if s.status == 200:
            self.assertTrue(s.clean_end, s.error)
            s.frames()  # well-framed
            self.assertNotIn(b"this is not an event stream", s.raw)
            self.assertEqual([e for e in s.json_events() if "error" not in e], [])
        else:
            self.assertGreaterEqual(s.status, 500)
            self.assertIsInstance(json.loads(s.raw)["error"], str)
        self.assert_serves()

    def test_endless_line_capped(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(fault="endless_line")}, timeout=15)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertLess(len(s.raw), 64 * 1024, "an overlong upstream line must not be relayed")
        self.assertEqual(len(s.errors()), 1, s.raw[:500])
        self.assert_serves()

    def test_non_stream_dropped_mid_body(self):
        for fault in ("drop_mid", "rst_mid"):
            with self.subTest(fault=fault):
                r = chat(self.port, {"user_content": "hi", "model": model(fault=fault)}, headers={"Origin": "http://a.example"})
                self.assertIn(r.status, (500, 502, 503), r)
                self.assert_error(r, r.status)
        self.assert_serves()


class Unreachable(unittest.TestCase):
    """503 when the upstream cannot be reached, in both modes."""

    def test_refused(self):
        if not have_binaries():
            self.fail("binaries missing")
        dead = f"http://127.0.0.1:{free_port()}/v1"
        with Server(dead, env={"ZJU_CONNECT_TIMEOUT_MS": "1000"}) as srv:
            t0 = time.monotonic()
            r, s = both(srv.port, model())
            self.assertEqual(r.status, 503, r)
            self.assertIsInstance(r.json()["error"], str)
            self.assertIsNotNone(r.header("access-control-allow-origin"))
            self.assertEqual(s.status, 503, s.raw[:300])
            self.assertIsInstance(json.loads(s.raw)["error"], str)
            self.assertLess(time.monotonic() - t0, 20)

    def test_dns_failure(self):
        with Server("http://zju-chat-e2e.invalid/v1") as srv:
            r, s = both(srv.port, model())
            self.assertEqual(r.status, 503, r)
            self.assertIsInstance(r.json()["error"], str)
            self.assertEqual(s.status, 503, s.raw[:300])

    def test_connect_timeout(self):
        # A listener whose accept queue is full: loopback SYNs are dropped,
        # so connect() hangs until the client's connect timeout.
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        filler = socket.create_connection(hole.getsockname())
        try:
            url = f"http://127.0.0.1:{hole.getsockname()[1]}/v1"
            with Server(url, env={"ZJU_CONNECT_TIMEOUT_MS": "500"}) as srv:
                t0 = time.monotonic()
                r = chat(srv.port, {"user_content": "hi"}, timeout=20)
                took = time.monotonic() - t0
                self.assertIn(r.status, (503, 504), r)
                self.assertIsInstance(r.json()["error"], str)
                self.assertLess(took, 10)
                s = stream(srv.port, {"user_content": "hi", "stream": True}, timeout=20)
                self.assertIn(s.status, (503, 504), s.raw[:300])
        finally:
            filler.close()
            hole.close()


class Timeouts(ServerCase):
    """First-byte and idle timeouts, heartbeats during silences."""

    server_env = {
        "ZJU_FIRST_BYTE_TIMEOUT_MS": "1000",
        "ZJU_IDLE_TIMEOUT_MS": "1500",
        "HEARTBEAT_MS": "200",
    }

    def test_hang_before_headers_is_504(self):
        for m in (model(fault="hang_headers"), model(think=5000)):
            with self.subTest(model=m):
                t0 = time.monotonic()
                r = chat(self.port, {"user_content": "hi", "model": m}, headers={"Origin": "http://a.example"})
                self.assert_error(r, 504)
                self.assertLess(time.monotonic() - t0, 4)
                s = stream(self.port, {"user_content": "hi", "stream": True, "model": m}, timeout=10)
                self.assertEqual(s.status, 504, "a stream that never started is a real 504, not a 200")
                self.assertIsInstance(json.loads(s.raw)["error"], str)
                self.assertLess(s.t_end, 4)
        self.assert_serves()

    def test_idle_mid_stream_heartbeats_then_error_event(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(fault="hang_mid", after=2)}, timeout=10)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        frames = s.frames()
        data = [json.loads(v) for k, v in frames if k == "data"]
        self.assertEqual(len(data), 3, s.raw)  # two upstream events + the error
        self.assertIn("error", data[-1])
        pings = [v for k, v in frames if k == "comment"]
        self.assertGreaterEqual(len(pings), 4, "heartbeats expected during a 1.5 s silence at 200 ms")
        self.assertTrue(all(p == b"ping" for p in pings), pings)
        self.assertGreater(s.t_end, 1.2)
        self.assertLess(s.t_end, 4)
        self.assert_serves()

    def test_stream_starts_when_upstream_answers(self):
        # Upstream sends 200 then nothing: the client gets its 200 and
        # heartbeats at once, not after the first event.
        first = {}

        def on_chunk(st, data):
            first.setdefault("t", st.chunks[0][0])

        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(fault="hang_mid", after=0)}, timeout=10, on_chunk=on_chunk)
        self.assertEqual(s.status, 200)
        self.assertLess(s.t_headers, 1.0)
        self.assertLess(first["t"], 1.0, "a heartbeat should arrive within about one heartbeat period")
        data = s.json_events()
        self.assertEqual(len(data), 1)
        self.assertIn("error", data[0])

    def test_reasoning_counts_as_progress(self):
        # Eight upstream events 700 ms apart (4.9 s): no gap reaches the 1.5 s
        # idle timeout, although only reasoning arrives for the first 2.8 s.
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(reasoning=4, events=1, delay=700)}, timeout=15)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.errors(), [])
        self.assertEqual(s.content(), "你好")
        self.assertGreaterEqual(len(s.comments()), 6, "heartbeats between events 700 ms apart")

    def test_non_stream_hang_mid_body(self):
        t0 = time.monotonic()
        r = chat(self.port, {"user_content": "hi", "model": model(fault="hang_mid")})
        self.assertIn(r.status, (502, 504), r)
        self.assert_error(r, r.status)
        self.assertLess(time.monotonic() - t0, 5)
        self.assert_serves()

    def test_heartbeats_do_not_corrupt_events(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": "deepseek-v3-671b#events=3,delay=450,split=5"}, timeout=10)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end)
        self.assertEqual(s.content(), "你好，世界")
        self.assertGreaterEqual(len(s.comments()), 3)


class TotalTimeout(ServerCase):
    server_env = {"ZJU_TOTAL_TIMEOUT_MS": "2000", "HEARTBEAT_MS": "500"}

    def test_total_timeout_stream(self):
        s = stream(self.port, {"user_content": "hi", "stream": True, "model": model(events=100, delay=100)}, timeout=10)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(len(s.errors()), 1)
        self.assertIn("error", s.json_events()[-1])
        self.assertGreater(s.t_end, 1.5)
        self.assertLess(s.t_end, 4)
        self.assertGreater(len(s.data()), 5)

    def test_total_timeout_non_stream(self):
        t0 = time.monotonic()
        r = chat(self.port, {"user_content": "hi", "model": model(think=6000)})
        self.assert_error(r, 504)
        self.assertLess(time.monotonic() - t0, 4.5)


if __name__ == "__main__":
    unittest.main()
