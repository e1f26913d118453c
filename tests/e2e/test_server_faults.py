"""What a frontend gets when the upstream misbehaves: error statuses (JSON,
HTML, empty, echoing the key), refused and black-holed connections, hangs
before headers and mid-stream, dropped connections, garbage, missing [DONE],
each timeout, heartbeats during silences, and the retry of a 503. After
every fault the server must still answer a normal request.

Every class runs once per chat route: as written for /api/chat (route
SEED), and as its ...V1 subclass at the end for /v1/chat/completions (route
OPENAI). The relay is the same; what differs is written out where it is
asserted: the error shapes (route.error_message), the statuses of upstream
errors (relayed_status), and [DONE] at the end of a stream that ended well
(route.done; never after an error event)."""

import json
import socket
import time
import unittest

from serverctl import (
    KEY,
    OPENAI,
    SEED,
    Mock,
    Server,
    ServerCase,
    chat,
    free_port,
    have_binaries,
    model,
    stream,
)


def relayed_status(route, upstream_status):
    """The status a client gets for an upstream error status (not 429), by
    route (README's error tables)."""
    if route is SEED:
        return 500  # the upstream's message relayed as {"error": "..."}
    if upstream_status in (401, 403):
        return 502  # the gateway's own key was refused: upstream_auth_failed
    if upstream_status >= 500:
        return 502  # upstream_error
    return upstream_status  # the client's request was refused: passed on


class OnRoute:
    """Requests on the class's chat route (SEED unless a ...V1 subclass)."""

    route = SEED

    def post(self, port, m, timeout=15, stream_mode=False):
        r = self.route
        if stream_mode:
            return stream(port, r.body(m, stream=True), timeout=timeout, path=r.path)
        return chat(port, r.body(m), timeout=timeout, path=r.path)

    def both(self, port, m, timeout=15):
        """The same request in non-stream and stream mode."""
        r = self.route
        h = {"Origin": "http://app.example"}
        return (chat(port, r.body(m), headers=h, timeout=timeout, path=r.path),
                stream(port, r.body(m, stream=True), headers=h, timeout=timeout, path=r.path))

    def error_body(self, x):
        """The JSON body of an error Response, or of a Stream answered with
        an error status."""
        return json.loads(x.raw if hasattr(x, "data") else x.body)

    def check_status(self, resp_or_stream, status, code=None):
        """An error answer with status in the route's shape, CORS; its
        message. code: OpenAI's error code (not checked on the seed's route)."""
        x = resp_or_stream
        self.assertEqual(x.status, status, (x.raw if hasattr(x, "data") else x.body)[:300])
        self.assertIsNotNone(x.header("access-control-allow-origin"))
        body = self.error_body(x)
        msg = self.route.error_message(body)
        if code is not None and self.route is OPENAI:
            self.assertEqual(self.route.error_code(body), code, body)
        return msg

    def check_error_end(self, s, events_before):
        """A 200 stream: events_before events, then one error event as the
        last, a clean end and no [DONE] on any route."""
        self.assertEqual(s.status, 200, s.raw[:300])
        self.assertTrue(s.clean_end, f"stream not ended properly: {s.error}")
        data = self.route.events(s)
        self.assertEqual(len(self.route.errors(s)), 1, s.raw[-500:])
        self.assertIn("error", data[-1], "the error event must be the last")
        self.assertFalse(self.route.saw_done(s), "no [DONE] after an error")
        self.assertEqual(len(data) - 1, events_before, s.raw[:1000])
        self.assertNotIn(KEY.encode(), s.raw)
        return data[-1]

    def check_ended_well(self, s):
        self.assertEqual(s.status, 200, s.raw[:300])
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(self.route.errors(s), [])
        self.assertEqual(self.route.saw_done(s), self.route.done, s.raw[-300:])


class UpstreamErrorStatus(OnRoute, ServerCase):
    """An upstream error status becomes a real status in both modes, never a
    200 stream, key scrubbed: on /api/chat 500 with the upstream's message;
    on /v1 the client's errors (400/404/422) pass on with the upstream's
    body, the gateway's key refused (401/403) and 5xx are 502."""

    def test_json_error_statuses_relay_message(self):
        for st in (400, 401, 403, 404, 422):
            with self.subTest(status=st):
                want = relayed_status(self.route, st)
                up = self.mock.direct(OPENAI.body(model(status=st)))
                r, s = self.both(self.port, model(status=st))
                for x in (r, s):
                    msg = self.check_status(x, want, "upstream_auth_failed" if want == 502 else None)
                    if self.route is SEED:
                        self.assertIn(f"injected status {st}", msg)
                    elif want == st:  # OpenAI's shape from the upstream passes as it is
                        self.assertEqual(self.error_body(x), up.json())
                    else:
                        self.assertIn(f"HTTP {st}", msg)
        self.assert_serves()

    def test_5xx_error_status(self):
        for st in (500, 502):
            with self.subTest(status=st):
                r, s = self.both(self.port, model(status=st))
                for x in (r, s):
                    msg = self.check_status(x, relayed_status(self.route, st), "upstream_error")
                    self.assertIn(f"injected status {st}", msg)
        self.assert_serves()

    def test_html_error_body(self):
        r, s = self.both(self.port, model(status=502, body="html"))
        for x in (r, s):
            msg = self.check_status(x, relayed_status(self.route, 502), "upstream_error")
            self.assertTrue(msg)
            self.assertNotIn("<html>", msg)
        self.assert_serves()

    def test_empty_error_body(self):
        r, s = self.both(self.port, model(status=400, body="empty"))
        for x in (r, s):
            msg = self.check_status(x, relayed_status(self.route, 400))
            self.assertIn("400", msg)

    def test_error_echoing_key_is_scrubbed(self):
        # 401: the gateway's key refused; 400: on /v1 the upstream's own body
        # is passed on, so the scrubbing must reach into it.
        for st in (401, 400):
            with self.subTest(status=st):
                r, s = self.both(self.port, model(status=st, echo_key=1))
                for x in (r, s):
                    msg = self.check_status(x, relayed_status(self.route, st))
                    if relayed_status(self.route, st) != 502:
                        self.assertIn(f"injected status {st}", msg)
                        self.assertIn("(Authorization: Bearer ", msg, "the echo is there, masked")
                self.assertNotIn(KEY.encode(), r.body)
                self.assertNotIn(KEY.encode(), s.raw)
                self.assertNotIn(KEY, json.dumps(r.headers) + json.dumps(s.headers))

    def test_big_error_body_bounded(self):
        r, s = self.both(self.port, model(fault="big_error"))
        self.check_status(r, relayed_status(self.route, 500))
        self.check_status(s, relayed_status(self.route, 500))
        self.assertLess(len(r.body), 64 * 1024)
        self.assertLess(len(s.raw), 64 * 1024)
        self.assert_serves()

    def test_429_passes_through_or_500(self):
        # /v1 promises the 429 and its Retry-After; /api/chat may answer 500.
        r, s = self.both(self.port, model(status=429, retry_after=1), timeout=20)
        for x in (r, s):
            if x.status == 429 or self.route is OPENAI:
                self.check_status(x, 429)
                self.assertEqual(x.header("retry-after"), "1")
            else:
                self.assertEqual(x.status, 500)
        self.assert_serves()

    def test_503_retried_on_non_stream(self):
        self.mock.config(fail_next=1, fail_status=503)
        before = self.mock.stats()["chat_requests"]
        r = chat(self.port, self.route.body(), path=self.route.path)
        self.assertEqual(r.status, 200, r)
        self.assertIn("choices", r.json())
        self.assertEqual(self.mock.stats()["chat_requests"], before + 2)


class MidStreamFaults(OnRoute, ServerCase):
    """Faults after the upstream answered 200: the stream has started, so
    the client gets the events so far, one error event, then the end (no
    [DONE] on /v1)."""

    def test_drop_mid(self):
        s = self.post(self.port, model(events=10, fault="drop_mid", after=3), stream_mode=True)
        self.check_error_end(s, 3)
        self.assert_serves()

    def test_rst_mid(self):
        s = self.post(self.port, model(events=10, fault="rst_mid", after=4), stream_mode=True)
        self.check_error_end(s, 4)
        self.assert_serves()

    def test_truncate_without_finish_or_done(self):
        s = self.post(self.port, model(events=4, reasoning=0, fault="truncate"), stream_mode=True)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(self.route.content(s), "你好，世界 🌍")
        errors = self.route.errors(s)
        self.assertLessEqual(len(errors), 1)
        if errors:  # a cut the gateway reports is not also ended as a success
            self.assertFalse(self.route.saw_done(s), s.raw[-300:])
        self.assert_serves()

    def test_no_done(self):
        # The upstream ends on its finish chunk without [DONE]: a complete
        # answer, so /v1 ends it the way its streams end (README: "streams
        # end with data: [DONE]").
        s = self.post(self.port, model(events=4, fault="no_done"), timeout=10, stream_mode=True)
        self.check_ended_well(s)
        self.assertEqual(self.route.content(s), "你好，世界 🌍")
        self.assertTrue(any(e.get("choices") and e["choices"][0].get("finish_reason") == "stop" for e in self.route.events(s)))
        self.assertLess(s.t_end, 5)
        self.assert_serves()

    def test_not_sse_answer(self):
        s = self.post(self.port, model(fault="not_sse"), timeout=10, stream_mode=True)
        self.assertLess(s.t_end, 8)
        if s.status == 200:
            self.assertTrue(s.clean_end, s.error)
            s.frames()  # well-framed
            self.assertNotIn(b"this is not an event stream", s.raw)
            self.assertEqual([e for e in self.route.events(s) if "error" not in e], [])
            self.assertFalse(self.route.saw_done(s))
        else:
            self.assertGreaterEqual(s.status, 500)
            self.route.error_message(json.loads(s.raw))
        self.assert_serves()

    def test_endless_line_capped(self):
        s = self.post(self.port, model(fault="endless_line"), timeout=15, stream_mode=True)
        self.assertLess(len(s.raw), 64 * 1024, "an overlong upstream line must not be relayed")
        self.check_error_end(s, 0)
        self.assert_serves()

    def test_non_stream_dropped_mid_body(self):
        for fault in ("drop_mid", "rst_mid"):
            with self.subTest(fault=fault):
                r = chat(self.port, self.route.body(model(fault=fault)), headers={"Origin": "http://a.example"},
                         path=self.route.path)
                self.assertIn(r.status, (500, 502, 503), r)
                self.assert_error(r, r.status)
        self.assert_serves()


class Unreachable(OnRoute, unittest.TestCase):
    """503 when the upstream cannot be reached, in both modes."""

    def test_refused(self):
        if not have_binaries():
            self.fail("binaries missing")
        dead = f"http://127.0.0.1:{free_port()}/v1"
        with Server(dead, env={"ZJU_CONNECT_TIMEOUT_MS": "1000"}) as srv:
            t0 = time.monotonic()
            r, s = self.both(srv.port, model())
            self.check_status(r, 503, "upstream_unreachable")
            self.check_status(s, 503, "upstream_unreachable")
            self.assertLess(time.monotonic() - t0, 20)

    def test_dns_failure(self):
        with Server("http://zju-chat-e2e.invalid/v1") as srv:
            r, s = self.both(srv.port, model())
            self.check_status(r, 503, "upstream_unreachable")
            self.check_status(s, 503, "upstream_unreachable")

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
                r = self.post(srv.port, None, timeout=20)
                took = time.monotonic() - t0
                self.assertIn(r.status, (503, 504), r)
                self.check_status(r, r.status)
                self.assertLess(took, 10)
                s = self.post(srv.port, None, timeout=20, stream_mode=True)
                self.assertIn(s.status, (503, 504), s.raw[:300])
                self.check_status(s, s.status)
        finally:
            filler.close()
            hole.close()


class Timeouts(OnRoute, ServerCase):
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
                r = self.post(self.port, m)
                self.check_status(r, 504, "upstream_timeout")
                self.assertLess(time.monotonic() - t0, 4)
                s = self.post(self.port, m, timeout=10, stream_mode=True)
                self.assertEqual(s.status, 504, "a stream that never started is a real 504, not a 200")
                self.check_status(s, 504, "upstream_timeout")
                self.assertLess(s.t_end, 4)
        self.assert_serves()

    def test_idle_mid_stream_heartbeats_then_error_event(self):
        s = self.post(self.port, model(fault="hang_mid", after=2), timeout=10, stream_mode=True)
        last = self.check_error_end(s, 2)  # two upstream events + the error
        if self.route is OPENAI:
            self.assertEqual(self.route.error_code(last), "upstream_timeout")
        pings = s.comments()
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

        r = self.route
        s = stream(self.port, r.body(model(fault="hang_mid", after=0), stream=True), timeout=10, on_chunk=on_chunk,
                   path=r.path)
        self.assertEqual(s.status, 200)
        self.assertLess(s.t_headers, 1.0)
        self.assertLess(first["t"], 1.0, "a heartbeat should arrive within about one heartbeat period")
        self.check_error_end(s, 0)

    def test_reasoning_counts_as_progress(self):
        # Eight upstream events 700 ms apart (4.9 s): no gap reaches the 1.5 s
        # idle timeout, although only reasoning arrives for the first 2.8 s.
        s = self.post(self.port, model(reasoning=4, events=1, delay=700), timeout=15, stream_mode=True)
        self.check_ended_well(s)
        self.assertEqual(self.route.content(s), "你好")
        self.assertGreaterEqual(len(s.comments()), 6, "heartbeats between events 700 ms apart")

    def test_non_stream_hang_mid_body(self):
        t0 = time.monotonic()
        r = self.post(self.port, model(fault="hang_mid"))
        self.assertIn(r.status, (502, 504), r)
        self.assert_error(r, r.status)
        self.assertLess(time.monotonic() - t0, 5)
        self.assert_serves()

    def test_heartbeats_do_not_corrupt_events(self):
        s = self.post(self.port, "deepseek-v3-671b#events=3,delay=450,split=5", timeout=10, stream_mode=True)
        self.check_ended_well(s)
        self.assertEqual(self.route.content(s), "你好，世界")
        self.assertGreaterEqual(len(s.comments()), 3)


class TotalTimeout(OnRoute, ServerCase):
    server_env = {"ZJU_TOTAL_TIMEOUT_MS": "2000", "HEARTBEAT_MS": "500"}

    def test_total_timeout_stream(self):
        s = self.post(self.port, model(events=100, delay=100), timeout=10, stream_mode=True)
        self.check_error_end(s, len(self.route.events(s)) - 1)  # whatever came in the 2 s, then the error
        self.assertGreater(s.t_end, 1.5)
        self.assertLess(s.t_end, 4)
        self.assertGreater(len(s.data()), 5)

    def test_total_timeout_non_stream(self):
        t0 = time.monotonic()
        r = self.post(self.port, model(think=6000))
        self.assert_error(r, 504)
        self.assertLess(time.monotonic() - t0, 4.5)


# ---------------------------------------------------------------- /v1

# The same classes on /v1/chat/completions (OpenAI's body and error shape,
# [DONE] at the end of a stream that ended well).


class UpstreamErrorStatusV1(UpstreamErrorStatus):
    route = OPENAI


class MidStreamFaultsV1(MidStreamFaults):
    route = OPENAI

    # test_no_done: the relay ends such a stream with data: [DONE] (docs/FAULTS.md).


class UnreachableV1(Unreachable):
    route = OPENAI
    # Not again on /v1 (4 s): a connect that times out fails before any
    # route-specific step, and test_refused checks /v1's 503 already.
    test_connect_timeout = None


class TimeoutsV1(Timeouts):
    route = OPENAI
    # Not again on /v1 (5.6 s): the idle clock is the library's, the same
    # for every route; /v1's heartbeats between slow events and its [DONE]
    # after them are test_heartbeats_do_not_corrupt_events.
    test_reasoning_counts_as_progress = None


class TotalTimeoutV1(TotalTimeout):
    route = OPENAI


if __name__ == "__main__":
    unittest.main()
