"""End-to-end tests of GET /v1/models and GET /v1/models/{id} (issue 10),
against the real server and the mock upstream: the upstream's list served
as it is, kept for MODELS_CACHE_TTL (one upstream fetch for many requests,
and for many requests at once), the configured list (MODELS) when the
upstream's list is empty, broken, failing or hanging, or when no key is set,
a failed fetch not retried by every request, one model or a 404 in OpenAI's
shape, percent-decoded ids, and clients that leave while they wait (the
suite runs under ASan: a leak or a use after free fails the server's stop)."""
import http.client
import json
import os
import signal
import threading
import time
import unittest

import serverctl as sc

LIST = "/v1/models"
CONFIGURED = "cfg-alpha,cfg-beta.2:latest"
CONFIGURED_IDS = ["cfg-alpha", "cfg-beta.2:latest"]
MOCK_IDS = ["deepseek-r1-671b", "deepseek-v3-671b", "deepseek-r1-distill-qwen",
            "qwen2.5-instruct", "QwQ-32B", "llava-onevision-qwen2-7b-ov", "bge-m3",
            "bge-reranker-v2-m3"]


def get(port, path, timeout=10, method="GET", headers=None):
    return sc.request(port, method, path, headers=headers, timeout=timeout)


def mock_get(mock, path):
    """The mock's own answer to a GET with the key: what the server relays."""
    conn = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": "Bearer " + sc.KEY})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def ids(resp):
    return [m["id"] for m in resp.json()["data"]]


def fetches(mock):
    return mock.stats()["models_requests"]


class Harness(unittest.TestCase):
    """A fresh mock per test; each test starts the server it needs (the
    cache lives as long as the server)."""

    def setUp(self):
        self.mock = sc.Mock().start()
        self.addCleanup(self.mock.stop)

    def server(self, key=sc.KEY, **env):
        env.setdefault("MODELS", CONFIGURED)
        srv = sc.Server(self.mock.url, env=env, key=key).start()
        self.addCleanup(srv.stop)
        return srv

    def assertList(self, r, want_ids=None):
        self.assertEqual(r.status, 200, r)
        self.assertIn("application/json", r.header("Content-Type"))
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*")
        body = r.json()
        self.assertEqual(body["object"], "list")
        for m in body["data"]:
            self.assertEqual(set(m) >= {"id", "object", "created", "owned_by"}, True, m)
            self.assertEqual(m["object"], "model")
            self.assertIsInstance(m["created"], int)
            self.assertIsInstance(m["owned_by"], str)
        if want_ids is not None:
            self.assertEqual(ids(r), want_ids)
        return body

    def assertNotFound(self, r, model_id):
        self.assertEqual(r.status, 404, r)
        self.assertEqual(r.header("Access-Control-Allow-Origin"), "*")
        err = r.json()["error"]
        self.assertEqual(err["code"], "model_not_found")
        self.assertEqual(err["type"], "invalid_request_error")
        self.assertIn(model_id, err["message"])
        self.assertIn("param", err)


class UpstreamList(Harness):
    def test_upstream_list_byte_for_byte(self):
        srv = self.server()
        r = get(srv.port, LIST)
        self.assertList(r, MOCK_IDS)
        status, direct = mock_get(self.mock, "/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual(r.body, direct)  # already OpenAI's shape: passed as it is

    def test_cached_one_fetch_within_the_ttl(self):
        srv = self.server()
        for _ in range(6):
            self.assertList(get(srv.port, LIST), MOCK_IDS)
        self.assertEqual(get(srv.port, LIST + "/bge-m3").status, 200)
        self.assertEqual(fetches(self.mock), 1)

    def test_fetched_again_after_the_ttl(self):
        srv = self.server(MODELS_CACHE_TTL=1)
        self.assertList(get(srv.port, LIST), MOCK_IDS)
        self.assertList(get(srv.port, LIST), MOCK_IDS)
        self.assertEqual(fetches(self.mock), 1)
        time.sleep(1.3)
        self.assertList(get(srv.port, LIST), MOCK_IDS)
        self.assertEqual(fetches(self.mock), 2)

    def test_ttl_zero_fetches_every_time(self):
        srv = self.server(MODELS_CACHE_TTL=0)
        for _ in range(3):
            self.assertList(get(srv.port, LIST), MOCK_IDS)
        self.assertEqual(fetches(self.mock), 3)

    def test_concurrent_requests_during_a_slow_fetch_share_it(self):
        self.mock.config(models_think=1000)
        srv = self.server()
        results = [None] * 10

        def one(i):
            path = LIST if i % 2 else LIST + "/deepseek-v3-671b"
            results[i] = get(srv.port, path, timeout=15)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        self.assertLess(time.monotonic() - t0, 10)
        for i, r in enumerate(results):
            self.assertIsNotNone(r, i)
            if i % 2:
                self.assertList(r, MOCK_IDS)
            else:
                self.assertEqual(r.json()["id"], "deepseek-v3-671b", r)
        self.assertEqual(fetches(self.mock), 1)

    def test_one_model_and_404(self):
        srv = self.server()
        r = get(srv.port, LIST + "/deepseek-v3-671b")
        self.assertEqual(r.status, 200, r)
        status, direct = mock_get(self.mock, "/v1/models/deepseek-v3-671b")
        self.assertEqual(r.json(), json.loads(direct))
        self.assertEqual(r.json()["object"], "model")
        self.assertNotFound(get(srv.port, LIST + "/no-such-model"), "no-such-model")
        # the configured list is not what the upstream's list is checked against
        self.assertNotFound(get(srv.port, LIST + "/cfg-alpha"), "cfg-alpha")

    def test_methods(self):
        srv = self.server()
        r = sc.request(srv.port, "POST", LIST, body=b"{}",
                       headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.header("Allow"), "GET, HEAD, OPTIONS")
        self.assertIsInstance(r.json()["error"], dict)
        r = sc.request(srv.port, "DELETE", LIST + "/bge-m3")
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.header("Allow"), "GET, HEAD, OPTIONS")
        head = get(srv.port, LIST, method="HEAD")
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b"")
        self.assertGreater(int(head.header("Content-Length")), 0)
        for path in (LIST, LIST + "/bge-m3"):
            r = get(srv.port, path, method="OPTIONS", headers={
                "Origin": "http://app.example", "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization"})
            self.assertEqual(r.status, 204, path)
        # "/v1/models/" names no model
        self.assertEqual(get(srv.port, LIST + "/").status, 404)


class ConfiguredList(Harness):
    def test_upstream_failures_give_the_configured_list_quickly(self):
        for mode in ("empty", "garbage", "500", "404"):
            with self.subTest(models=mode):
                self.mock.config(reset=True)
                self.mock.config(models=mode)
                srv = sc.Server(self.mock.url, env={"MODELS": CONFIGURED,
                                                    "ZJU_RETRY_BUDGET_MS": "0"}).start()
                try:
                    t0 = time.monotonic()
                    r = get(srv.port, LIST)
                    self.assertLess(time.monotonic() - t0, 3)
                    self.assertList(r, CONFIGURED_IDS)
                    one = get(srv.port, LIST + "/cfg-beta.2:latest")
                    self.assertEqual(one.status, 200, one)
                    self.assertEqual(one.json()["id"], "cfg-beta.2:latest")
                    self.assertEqual(one.json()["object"], "model")
                    self.assertNotFound(get(srv.port, LIST + "/bge-m3"), "bge-m3")
                    if mode != "empty":
                        self.assertTrue(srv.wait_log("model list failed"), srv.log()[-2000:])
                finally:
                    srv.stop()

    def test_failed_fetch_not_retried_by_every_request(self):
        self.mock.config(models="500")
        srv = self.server(ZJU_RETRY_BUDGET_MS=0, MODELS_CACHE_TTL=300)
        for _ in range(5):
            self.assertList(get(srv.port, LIST), CONFIGURED_IDS)
        self.assertEqual(fetches(self.mock), 1)
        self.assertEqual(srv.log().count("model list failed"), 1, srv.log()[-2000:])

    def test_failed_fetch_retried_after_the_negative_ttl(self):
        # the negative TTL is at most MODELS_CACHE_TTL
        self.mock.config(models="500")
        srv = self.server(ZJU_RETRY_BUDGET_MS=0, MODELS_CACHE_TTL=1)
        self.assertList(get(srv.port, LIST), CONFIGURED_IDS)
        self.mock.config(models="list")
        self.assertList(get(srv.port, LIST), CONFIGURED_IDS)
        self.assertEqual(fetches(self.mock), 1)
        time.sleep(1.3)
        self.assertList(get(srv.port, LIST), MOCK_IDS)
        self.assertEqual(fetches(self.mock), 2)

    def test_last_good_list_kept_while_the_upstream_fails(self):
        srv = self.server(ZJU_RETRY_BUDGET_MS=0, MODELS_CACHE_TTL=1)
        self.assertList(get(srv.port, LIST), MOCK_IDS)
        self.mock.config(models="503")
        time.sleep(1.3)
        self.assertList(get(srv.port, LIST), MOCK_IDS)
        self.assertEqual(fetches(self.mock), 2)
        self.assertIn("its last good list", srv.log())
        # an upstream that answers with no models is believed
        self.mock.config(models="empty")
        time.sleep(1.3)
        self.assertList(get(srv.port, LIST), CONFIGURED_IDS)

    def test_hanging_upstream_bounded_by_the_timeouts_worker_keeps_serving(self):
        self.mock.config(models="hang")
        srv = self.server(ZJU_FIRST_BYTE_TIMEOUT_MS=1500, ZJU_RETRY_BUDGET_MS=0)
        out = {}

        def fetch():
            t0 = time.monotonic()
            out["r"] = get(srv.port, LIST, timeout=15)
            out["t"] = time.monotonic() - t0

        t = threading.Thread(target=fetch)
        t.start()
        self.assertTrue(sc.wait_until(lambda: fetches(self.mock) == 1, 3))
        # the worker answers other requests while the fetch hangs
        t0 = time.monotonic()
        self.assertEqual(get(srv.port, "/healthz", timeout=5).status, 200)
        self.assertLess(time.monotonic() - t0, 1.0)
        s = sc.stream(srv.port, {"user_content": "hi", "stream": True,
                                 "model": sc.model(events=3)}, timeout=10)
        self.assertEqual(s.status, 200)
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(s.errors(), [])
        self.assertTrue(t.is_alive(), "the list did not wait for the fetch")
        t.join(15)
        self.assertList(out["r"], CONFIGURED_IDS)
        self.assertGreater(out["t"], 1.0)
        self.assertLess(out["t"], 6)

    def test_no_key_serves_the_configured_list_without_a_call(self):
        srv = self.server(key=None)
        self.assertList(get(srv.port, LIST), CONFIGURED_IDS)
        self.assertEqual(get(srv.port, LIST + "/cfg-alpha").json()["id"], "cfg-alpha")
        self.assertNotFound(get(srv.port, LIST + "/deepseek-v3-671b"), "deepseek-v3-671b")
        self.assertEqual(fetches(self.mock), 0)

    def test_default_list_default_model_first(self):
        srv = self.server(key=None, MODELS=None, DEFAULT_MODEL="my-default",
                          DEFAULT_EMBEDDING_MODEL="my-embedder")
        got = ids(get(srv.port, LIST))
        self.assertEqual(got[0], "my-default")
        self.assertEqual(got[1:-1], MOCK_IDS)
        self.assertEqual(got[-1], "my-embedder")
        srv2 = self.server(key=None, MODELS=None)
        self.assertEqual(ids(get(srv2.port, LIST)), MOCK_IDS)  # no repeats

    def test_ids_percent_decoded(self):
        srv = self.server(key=None, MODELS="org/name:v1.2, a+b ,plain,cfg-alpha,plain")
        self.assertEqual(ids(get(srv.port, LIST)), ["org/name:v1.2", "a+b", "plain", "cfg-alpha"])
        for path in ("org/name:v1.2", "org%2Fname%3Av1.2", "org%2fname:v1%2E2"):
            with self.subTest(path=path):
                r = get(srv.port, LIST + "/" + path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["id"], "org/name:v1.2")
        self.assertEqual(get(srv.port, LIST + "/a+b").json()["id"], "a+b")  # '+' is not ' '
        self.assertEqual(get(srv.port, LIST + "/a%2Bb").json()["id"], "a+b")
        self.assertNotFound(get(srv.port, LIST + "/plain%00"), "NUL")
        self.assertNotFound(get(srv.port, LIST + "/%zz"), "%zz")
        r = get(srv.port, LIST + "/caf%C3%A9")
        self.assertNotFound(r, "café")
        r = get(srv.port, LIST + "/%FF%FE")  # not UTF-8: still an OpenAI error
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json()["error"]["code"], "model_not_found")


class StubUpstream:
    """A minimal upstream (stdlib http.server) whose GET .../models answers
    `body`: for list shapes the mock does not make."""

    def __init__(self, body):
        import http.server

        payload = body if isinstance(body, bytes) else json.dumps(body).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/v1" % self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class UpstreamShapes(unittest.TestCase):
    def serve(self, body):
        stub = StubUpstream(body)
        self.addCleanup(stub.close)
        srv = sc.Server(stub.url, env={"MODELS": CONFIGURED}).start()
        self.addCleanup(srv.stop)
        return srv

    def test_entries_missing_openai_fields_are_filled_in(self):
        full = {"id": "full", "object": "model", "created": 7, "owned_by": "me", "extra": [1]}
        srv = self.serve({"data": [{"id": "bare"}, {"id": 5}, "x", full,
                                   {"id": "odd", "object": "engine", "created": "1"}]})
        r = get(srv.port, LIST)
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["object"], "list")
        self.assertEqual([m["id"] for m in body["data"]], ["bare", "full", "odd"])
        bare, got_full, odd = body["data"]
        self.assertEqual(bare["object"], "model")
        self.assertIsInstance(bare["created"], int)
        self.assertEqual(bare["owned_by"], "zju")
        self.assertEqual(got_full, full)
        self.assertEqual(odd["object"], "model")
        self.assertIsInstance(odd["created"], int)
        self.assertEqual(get(srv.port, LIST + "/bare").json(), bare)

    def test_json_that_is_not_a_list_gives_the_configured_list(self):
        for body in ({"models": ["a"]}, {"data": {"id": "a"}}, [1, 2], b"null"):
            with self.subTest(body=body):
                stub = StubUpstream(body)
                srv = sc.Server(stub.url, env={"MODELS": CONFIGURED}).start()
                try:
                    self.assertEqual(ids(get(srv.port, LIST)), CONFIGURED_IDS)
                finally:
                    srv.stop()
                    stub.close()


class Waiting(Harness):
    def test_clients_leaving_while_they_wait(self):
        self.mock.config(models_think=1500)
        srv = self.server()
        leavers = []
        for i in range(4):
            c = sc.RawConn(srv.port)
            c.send(b"GET /v1/models%s HTTP/1.1\r\nHost: x\r\n\r\n"
                   % (b"" if i % 2 else b"/bge-m3"))
            leavers.append(c)
        stayer = {}
        t = threading.Thread(target=lambda: stayer.setdefault("r", get(srv.port, LIST, timeout=15)))
        t.start()
        time.sleep(0.3)
        for i, c in enumerate(leavers):
            c.abort() if i % 2 else c.close()
        self.assertTrue(srv.wait_log(" 499 "), srv.log()[-2000:])
        t.join(15)
        self.assertList(stayer["r"], MOCK_IDS)
        self.assertEqual(fetches(self.mock), 1)
        # all of them left: the fetch still ends and fills the cache
        srv2 = self.server(MODELS_CACHE_TTL=300)
        self.mock.config(models_think=800)
        c = sc.RawConn(srv2.port)
        c.send(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        c.abort()
        self.assertTrue(sc.wait_until(lambda: fetches(self.mock) == 2, 3))
        time.sleep(1.0)
        self.assertList(get(srv2.port, LIST), MOCK_IDS)
        self.assertEqual(fetches(self.mock), 2)
        self.assertTrue(srv.healthy() and srv2.healthy())

    def test_stop_while_clients_wait(self):
        # the drain deadline answers waiting clients from what is at hand
        self.mock.config(models="hang")
        srv = sc.Server(self.mock.url, env={"MODELS": CONFIGURED, "DRAIN_TIMEOUT": "1"}).start()
        self.addCleanup(srv.kill)  # when a check fails before the stop
        out = {}
        t = threading.Thread(target=lambda: out.setdefault("r", get(srv.port, LIST, timeout=15)))
        t.start()
        self.assertTrue(sc.wait_until(lambda: fetches(self.mock) == 1, 3))
        srv.send_signal(signal.SIGTERM)
        t.join(15)
        self.assertList(out["r"], CONFIGURED_IDS)
        srv.stop()  # exit 0, no sanitizer report

    def test_stop_during_a_fetch_nobody_waits_for(self):
        self.mock.config(models="hang")
        srv = sc.Server(self.mock.url, env={"MODELS": CONFIGURED}).start()
        self.addCleanup(srv.kill)  # when a check fails before the stop
        c = sc.RawConn(srv.port)
        c.send(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(sc.wait_until(lambda: fetches(self.mock) == 1, 3))
        c.abort()
        time.sleep(0.2)
        srv.stop(timeout=10)


class Settings(unittest.TestCase):
    def refused(self, **env):
        srv = sc.Server("http://127.0.0.1:9/v1", env=env)
        srv.start(wait=False)
        rc = srv.wait_exit(10)
        srv.stopped = True
        if rc is None:
            srv.kill()
            self.fail("server started: " + srv.log()[-2000:])
        self.assertEqual(rc, 2, srv.log())
        return srv.log()

    def test_bad_values_stop_the_start(self):
        for env, words in (({"MODELS": ""}, "MODELS is set but empty"),
                           ({"MODELS": " , ,"}, "MODELS is set but empty"),
                           ({"MODELS": "good,bad id"}, '"bad id"'),
                           ({"MODELS": "x" * 128}, "at most 127"),
                           ({"MODELS_CACHE_TTL": "-1"}, "MODELS_CACHE_TTL"),
                           ({"MODELS_CACHE_TTL": "5m"}, "MODELS_CACHE_TTL"),
                           ({"MODELS_CACHE_TTL": "999999999"}, "MODELS_CACHE_TTL")):
            with self.subTest(env=env):
                self.assertIn(words, self.refused(**env))


if __name__ == "__main__":
    unittest.main()
