"""Configuration checks (issue 9): settings that used to be taken silently and
then misbehaved now stop the start with a clear message, or are normalised
with a warning.

- ZJU_API_KEY shorter than 16 characters: redaction is an exact match, so a
  key like "k" starred out every 'k' of replies and logs. Refused by the
  server and by the library (so the CLI), without quoting the key.
- CORS_ORIGINS="" used to mean '*'; "http://site.example/" (trailing slash)
  or any path never matched a browser's Origin.
- TRUSTED_PROXIES: behind a proxy every access line said 127.0.0.1;
  X-Forwarded-For / X-Real-IP are now believed from listed proxies only,
  walked from the right as nginx's real_ip_recursive does.
"""

import os
import re
import socket
import subprocess
import unittest

from serverctl import BUILD_DIR, Mock, Server, base_env, request, wait_until

CLI = os.path.join(BUILD_DIR, "zju-chat")
SHORT_KEY = "Zq7vShortKey15c"  # 15 characters, distinctive enough to grep for
KEY_16 = "sk-Zq7sixteen-16"    # exactly the minimum


def refused(env=None, key=None):
    """Starts a server that must refuse to start; returns (exit code, log)."""
    srv = Server("http://127.0.0.1:9/v1", env=env, key=key)
    srv.start(wait=False)
    rc = srv.wait_exit(10)
    srv.stopped = True
    if rc is None:
        srv.kill()
        raise AssertionError(f"server started instead of refusing: {srv.log()[-2000:]}")
    return rc, srv.log()


class ShortKey(unittest.TestCase):
    def test_server_refuses_a_short_key_without_quoting_it(self):
        rc, log = refused(key=SHORT_KEY)
        self.assertEqual(rc, 2, log)
        self.assertIn("ZJU_API_KEY", log)
        self.assertIn("16 characters", log)
        self.assertNotIn(SHORT_KEY, log)
        self.assertNotIn("15", log, "not even the key's length")

    def test_server_refuses_a_one_letter_key(self):
        rc, log = refused(key="k")
        self.assertEqual(rc, 2, log)
        self.assertIn("ZJU_API_KEY", log)

    def test_sixteen_characters_are_enough_and_model_names_stay_intact(self):
        self.assertEqual(len(KEY_16), 16)
        with Mock(key=KEY_16) as mock, Server(mock.base_url, key=KEY_16) as srv:
            r = request(srv.port, "POST", "/api/chat", body=b'{"user_content": "hi"}',
                        headers={"Content-Type": "application/json"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["model"], "deepseek-r1-671b")
            self.assertNotIn(KEY_16, r.body.decode())

    def test_cli_refuses_a_short_key(self):
        env = dict(base_env(), ZJU_API_KEY=SHORT_KEY, ZJU_BASE_URL="http://127.0.0.1:9/v1")
        p = subprocess.run([CLI, "--retries", "0", "hi"], env=env, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=15)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertEqual(p.returncode, 3, out)  # configuration error
        self.assertIn("16 characters", out)
        self.assertIn("ZJU_API_KEY", out)
        self.assertNotIn(SHORT_KEY, out)

    def test_cli_message_about_a_short_key_is_not_garbled(self):
        # The refused key is never sent, so masking it in the message only
        # garbled words that contain it ("*****er than 16 characters").
        env = dict(base_env(), ZJU_API_KEY="short", ZJU_BASE_URL="http://127.0.0.1:9/v1")
        p = subprocess.run([CLI, "--retries", "0", "hi"], env=env, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=15)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertEqual(p.returncode, 3, out)
        self.assertIn("shorter than 16 characters", out)


def preflight(port, origin):
    return request(port, "OPTIONS", "/api/chat",
                   headers={"Origin": origin, "Access-Control-Request-Method": "POST"})


class CorsOrigins(unittest.TestCase):
    def test_empty_is_refused_not_read_as_any_origin(self):
        for value in ("", " , "):
            with self.subTest(value=value):
                rc, log = refused(env={"CORS_ORIGINS": value})
                self.assertEqual(rc, 2, log)
                self.assertIn("CORS_ORIGINS is set but empty", log)

    def test_path_query_fragment_or_missing_scheme_refused_naming_the_entry(self):
        for bad in ("http://site.example/app", "http://site.example/?x=1",
                    "http://site.example#top", "site.example", "localhost:3000",
                    "http://user@site.example", "http:///site.example"):
            with self.subTest(bad=bad):
                rc, log = refused(env={"CORS_ORIGINS": f"https://ok.example, {bad}"})
                self.assertEqual(rc, 2, log)
                self.assertIn(f'CORS_ORIGINS entry "{bad}"', log)
                self.assertIn("scheme://host[:port]", log)

    def test_trailing_slash_case_and_default_port_normalised_with_a_warning(self):
        env = {"CORS_ORIGINS": "http://site.example/, HTTPS://App.Example:443, "
                               "http://dev.example:8080/"}
        with Server("http://127.0.0.1:9/v1", env=env) as srv:
            for origin in ("http://site.example", "https://app.example",
                           "http://dev.example:8080"):
                with self.subTest(origin=origin):
                    r = preflight(srv.port, origin)
                    self.assertEqual(r.status, 204, r)
                    self.assertEqual(r.header("access-control-allow-origin"), origin)
            for origin in ("http://dev.example", "https://site.example", "http://evil.example"):
                with self.subTest(origin=origin):
                    self.assertIsNone(preflight(srv.port, origin).header(
                        "access-control-allow-origin"))
            log = srv.log()
            self.assertRegex(log, r'WARNING: CORS_ORIGINS: "http://site.example/" taken as '
                                  r'"http://site.example"')
            self.assertIn('"HTTPS://App.Example:443" taken as "https://app.example"', log)


def access_client(srv, tag):
    """The client field of the access line for GET /healthz?case=TAG."""
    pat = re.compile(r' access (\S+) "GET /healthz\?case=' + re.escape(tag) + '"')
    m = wait_until(lambda: pat.search(srv.log()), 5)
    if not m:
        raise AssertionError(f"no access line for {tag}: {srv.log()[-2000:]}")
    return m.group(1)


def get(srv, tag, headers=()):
    """GET /healthz?case=TAG with header lines as given (repeats allowed)."""
    lines = [f"GET /healthz?case={tag} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    return access_client(srv, tag)


PEER = re.compile(r"^127\.0\.0\.1:\d+$")


class TrustedProxies(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("http://127.0.0.1:9/v1",
                         env={"TRUSTED_PROXIES": "127.0.0.1/32, 10.0.0.0/8 fd00::/8"}).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop()

    def test_forwarded_for_from_a_trusted_proxy(self):
        self.assertEqual(get(self.srv, "xff", [("X-Forwarded-For", "203.0.113.7")]),
                         "203.0.113.7")

    def test_spoofed_leftmost_entry_ignored(self):
        self.assertEqual(get(self.srv, "chain", [("X-Forwarded-For",
                                                  "198.51.100.9, 203.0.113.7")]),
                         "203.0.113.7")

    def test_trusted_hops_skipped_from_the_right(self):
        self.assertEqual(get(self.srv, "hops", [("X-Forwarded-For",
                                                 "198.51.100.9,203.0.113.7 , 10.1.2.3,fd00::5")]),
                         "203.0.113.7")

    def test_all_trusted_gives_the_leftmost(self):
        self.assertEqual(get(self.srv, "alltrusted", [("X-Forwarded-For", "10.9.9.9, 10.1.1.1")]),
                         "10.9.9.9")

    def test_a_second_header_line_from_the_proxy_counts(self):
        # the client's own line first, the proxy's appended after it
        self.assertEqual(get(self.srv, "twolines", [("X-Forwarded-For", "198.51.100.9"),
                                                     ("X-Forwarded-For", "203.0.113.7")]),
                         "203.0.113.7")

    def test_ipv6_and_port_forms(self):
        self.assertEqual(get(self.srv, "v6", [("X-Forwarded-For", "2001:DB8:0::1")]),
                         "2001:db8::1")
        self.assertEqual(get(self.srv, "v4port", [("X-Forwarded-For", "203.0.113.9:5555")]),
                         "203.0.113.9")
        self.assertEqual(get(self.srv, "v6port", [("X-Forwarded-For", "[2001:db8::2]:443")]),
                         "2001:db8::2")

    def test_real_ip_when_no_forwarded_for(self):
        self.assertEqual(get(self.srv, "realip", [("X-Real-IP", "203.0.113.8")]),
                         "203.0.113.8")
        self.assertEqual(get(self.srv, "both", [("X-Real-IP", "203.0.113.8"),
                                                ("X-Forwarded-For", "203.0.113.10")]),
                         "203.0.113.10")

    def test_garbage_ignored(self):
        for tag, headers in (
            ("junk", [("X-Forwarded-For", "not-an-ip")]),
            ("junkchain", [("X-Forwarded-For", "203.0.113.7, bogus")]),
            ("quote", [("X-Forwarded-For", '1.2.3.4" 200 0 model=x')]),
            ("junkreal", [("X-Real-IP", "203.0.113.8, 203.0.113.9")]),
            ("cidr", [("X-Forwarded-For", "203.0.113.0/24")]),
        ):
            with self.subTest(tag=tag):
                self.assertRegex(get(self.srv, tag, headers), PEER)
        self.assertNotIn("model=x", self.srv.log())

    def test_no_header_logs_the_peer(self):
        self.assertRegex(get(self.srv, "none"), PEER)


class UntrustedPeer(unittest.TestCase):
    def test_headers_ignored_unless_the_peer_is_trusted(self):
        for env in ({}, {"TRUSTED_PROXIES": "10.0.0.0/8"}, {"TRUSTED_PROXIES": ""}):
            with self.subTest(env=env), Server("http://127.0.0.1:9/v1", env=env) as srv:
                self.assertRegex(get(srv, "xff", [("X-Forwarded-For", "203.0.113.7")]), PEER)
                self.assertRegex(get(srv, "realip", [("X-Real-IP", "203.0.113.8")]), PEER)

    def test_bad_entry_stops_the_start(self):
        for bad in ("10.0.0.0/33", "not-a-cidr", "fd00::/129", "10.0.0.0/", "10.0.0/8",
                    "[::1]"):
            with self.subTest(bad=bad):
                rc, log = refused(env={"TRUSTED_PROXIES": f"127.0.0.1, {bad}"})
                self.assertEqual(rc, 2, log)
                self.assertIn(f'TRUSTED_PROXIES entry "{bad}"', log)


if __name__ == "__main__":
    unittest.main()
