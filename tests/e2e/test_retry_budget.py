"""The retry budget (issue 9; docs/FAULTS.md, "Deployment"): an upstream 429
with Retry-After: 7 held the client about 14 s (two retries) and the
client's own timeout fired first. Now no retry wait may end later than the
budget (ZJU_RETRY_BUDGET_MS, default 3000) after the call's start; beyond
it the client gets the 429 with Retry-After at once."""

import time
import unittest

from serverctl import MockCase, Server, ServerCase, chat, model, stream


def post(port, payload, stream_mode, timeout=30):
    """(status, Retry-After, seconds) of one /api/chat request."""
    body = dict(payload, stream=stream_mode)
    t0 = time.monotonic()
    r = stream(port, body, timeout=timeout) if stream_mode else chat(port, body, timeout=timeout)
    return r.status, r.header("retry-after"), time.monotonic() - t0


class DefaultBudget(ServerCase):
    def upstream_calls(self, before):
        return self.mock.stats()["chat_requests"] - before

    def test_long_retry_after_is_answered_at_once(self):
        for sm in (False, True):
            with self.subTest(stream=sm):
                before = self.mock.stats()["chat_requests"]
                status, retry_after, took = post(
                    self.port, {"user_content": "hi", "model": model(status=429, retry_after=7)}, sm)
                self.assertEqual(status, 429)
                self.assertEqual(retry_after, "7")
                self.assertLess(took, 1.5)
                self.assertEqual(self.upstream_calls(before), 1)

    def test_short_retry_after_is_retried(self):
        for sm in (False, True):
            with self.subTest(stream=sm):
                self.mock.config(fail_next=1, fail_status=429, retry_after=1)
                before = self.mock.stats()["chat_requests"]
                status, _, took = post(self.port, {"user_content": "hi", "model": model(events=2)}, sm)
                self.assertEqual(status, 200)
                self.assertGreaterEqual(took, 0.9)
                self.assertEqual(self.upstream_calls(before), 2)

    def test_a_run_of_503s_ends_within_the_budget(self):
        # Retry-After: 2 fits once in 3 s, not twice: one retry, then the error.
        for sm in (False, True):
            with self.subTest(stream=sm):
                before = self.mock.stats()["chat_requests"]
                status, _, took = post(
                    self.port, {"user_content": "hi", "model": model(status=503, retry_after=2)}, sm)
                self.assertEqual(status, 500)
                self.assertGreaterEqual(took, 1.9)
                self.assertLess(took, 3.0)
                self.assertEqual(self.upstream_calls(before), 2)


class BudgetSetting(MockCase):
    def test_configured_budget_bounds_the_wait(self):
        with Server(self.mock.base_url, env={"ZJU_RETRY_BUDGET_MS": "1500"}) as srv:
            self.mock.config(fail_next=5, fail_status=429, retry_after=1)
            before = self.mock.stats()["chat_requests"]
            status, retry_after, took = post(srv.port, {"user_content": "hi"}, False)
            self.assertEqual((status, retry_after), (429, "1"))
            self.assertGreaterEqual(took, 0.9)
            self.assertLess(took, 1.5)
            self.assertEqual(self.mock.stats()["chat_requests"] - before, 2)

    def test_zero_budget_never_retries(self):
        with Server(self.mock.base_url, env={"ZJU_RETRY_BUDGET_MS": "0"}) as srv:
            self.mock.config(fail_next=1, fail_status=503)
            before = self.mock.stats()["chat_requests"]
            status, _, _ = post(srv.port, {"user_content": "hi"}, False)
            self.assertEqual(status, 500)
            self.assertEqual(self.mock.stats()["chat_requests"] - before, 1)


if __name__ == "__main__":
    unittest.main()
