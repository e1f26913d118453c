"""The chat page's route (src/server/static.c): GET/HEAD / and /assets/...

- Built in (no WEB_ROOT): the files of web/dist, byte for byte, with the
  page's security headers, ETag revalidation (304) and Content-Type.
- WEB_ROOT=/dir: that directory's files, and nothing outside it: dot
  segments, encoded dots, hidden files, symlinks that leave the root,
  directories and special files are all the same 404; a big file whole.
- WEB_ROOT=off: 404 as for any path without a route; a WEB_ROOT that is no
  directory stops the start with a message.
- RFC 9110 8.6: a 204 (the CORS preflight) and a 304 carry no
  Content-Length (the front used to send "Content-Length: 0" on both).
"""

import hashlib
import os
import shutil
import tempfile
import unittest

from serverctl import LOG_DIR, RawConn, Server, request
from test_config_checks import refused

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIST = os.path.join(ROOT, "web", "dist")
UPSTREAM = "http://127.0.0.1:9/v1"  # never called by these tests


def raw_get(port, path, method="GET", headers=""):
    """A request sent byte for byte (http.client and curl would tidy the path)."""
    c = RawConn(port)
    try:
        c.send(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode())
        return c.read_response(head_only=(method == "HEAD"))
    finally:
        c.sock.close()


def dist_files():
    out = {}
    for top, _dirs, files in os.walk(DIST):
        for f in files:
            full = os.path.join(top, f)
            out["/" + os.path.relpath(full, DIST)] = full
    return out


class PageHeaders:
    def assert_page_headers(self, r):
        csp = r.header("content-security-policy") or ""
        for part in ("default-src 'self'", "script-src 'self'", "connect-src 'self'", "object-src 'none'"):
            self.assertIn(part, csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertEqual(r.header("x-content-type-options"), "nosniff")
        self.assertEqual(r.header("referrer-policy"), "no-referrer")
        self.assertEqual(r.header("cache-control"), "no-cache")
        self.assertTrue(r.header("etag"))


class BuiltIn(unittest.TestCase, PageHeaders):
    @classmethod
    def setUpClass(cls):
        cls.server = Server(UPSTREAM).start()
        cls.port = cls.server.port

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def test_every_dist_file_byte_for_byte(self):
        files = dist_files()
        self.assertIn("/index.html", files)
        for path, full in files.items():
            # index.html is the page at /, its only address
            r = request(self.port, "GET", "/" if path == "/index.html" else path)
            self.assertEqual(r.status, 200, path)
            with open(full, "rb") as f:
                self.assertEqual(r.body, f.read(), path)
            self.assert_page_headers(r)
        self.assertEqual(request(self.port, "GET", "/").header("content-type"), "text/html; charset=utf-8")

    def test_content_types(self):
        for path, ctype in (("/assets/main.js", "text/javascript; charset=utf-8"),
                            ("/assets/style.css", "text/css; charset=utf-8"),
                            ("/assets/favicon.svg", "image/svg+xml")):
            self.assertEqual(request(self.port, "GET", path).header("content-type"), ctype, path)

    def test_head_has_the_length_and_no_body(self):
        full = request(self.port, "GET", "/assets/main.js")
        r = raw_get(self.port, "/assets/main.js", "HEAD")
        self.assertEqual(r.status, 200)
        self.assertEqual(int(r.header("content-length")), len(full.body))
        self.assertEqual(r.header("etag"), full.header("etag"))

    def test_revalidation_304_without_content_length(self):
        etag = request(self.port, "GET", "/").header("etag")
        for inm in (etag, "W/" + etag, f'"nope", {etag}', "*"):
            r = raw_get(self.port, "/", headers=f"If-None-Match: {inm}\r\n")
            self.assertEqual(r.status, 304, inm)
            self.assertEqual(r.body, b"")
            self.assertEqual(r.header("etag"), etag)
            self.assertIsNone(r.header("content-length"), "RFC 9110 8.6: not 0 in a 304")
        self.assertEqual(raw_get(self.port, "/", headers='If-None-Match: "other"\r\n').status, 200)

    def test_preflight_204_without_content_length(self):
        c = RawConn(self.port)
        try:
            c.send(b"OPTIONS /api/chat HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n"
                   b"Access-Control-Request-Method: POST\r\n\r\n"
                   b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 204)
            self.assertIsNone(r.header("content-length"), "RFC 9110 8.6: never in a 204")
            self.assertEqual(c.read_response().status, 200, "keep-alive goes on after the 204")
        finally:
            c.sock.close()

    def test_unknown_and_unsafe_paths_404(self):
        for path in ("/assets/nope.js", "/assets/", "/assets/../index.html", "/assets/%2e%2e/index.html",
                     "/assets/.hidden", "/assets//main.js", "/index.html", "/nope"):
            r = raw_get(self.port, path)
            self.assertEqual(r.status, 404, path)

    def test_other_methods_405(self):
        r = request(self.port, "POST", "/", body=b"x", headers={"Content-Type": "text/plain"})
        self.assertEqual(r.status, 405)
        self.assertEqual(r.header("allow"), "GET, HEAD")

    def test_query_string_is_ignored(self):
        self.assertEqual(request(self.port, "GET", "/?x=1").status, 200)


class WebRoot(unittest.TestCase, PageHeaders):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="webroot-", dir=LOG_DIR)
        cls.root = os.path.join(cls.tmp, "site")
        os.makedirs(os.path.join(cls.root, "assets", "sub"))
        with open(os.path.join(cls.root, "index.html"), "w") as f:
            f.write("<p>my own page</p>\n")
        with open(os.path.join(cls.root, "assets", "sub", "a.css"), "w") as f:
            f.write("p{}")
        with open(os.path.join(cls.root, "assets", ".env"), "w") as f:
            f.write("SECRET=1\n")
        with open(os.path.join(cls.tmp, "outside.txt"), "w") as f:
            f.write("outside the root\n")
        os.symlink(os.path.join(cls.tmp, "outside.txt"), os.path.join(cls.root, "assets", "escape.txt"))
        os.symlink("/etc", os.path.join(cls.root, "assets", "etc"))
        os.symlink("sub/a.css", os.path.join(cls.root, "assets", "inside.css"))
        os.mkfifo(os.path.join(cls.root, "assets", "fifo.js"))
        # 5 MiB that is not the same byte over and over
        cls.big = hashlib.sha256(b"seed").digest() * (5 * 1024 * 1024 // 32)
        with open(os.path.join(cls.root, "assets", "big.bin"), "wb") as f:
            f.write(cls.big)
        # over the 64 MiB the server serves (sparse: no disk used)
        with open(os.path.join(cls.root, "assets", "huge.bin"), "wb") as f:
            f.truncate(64 * 1024 * 1024 + 1)
        cls.server = Server(UPSTREAM, env={"WEB_ROOT": cls.root}).start()
        cls.port = cls.server.port

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_serves_the_directory(self):
        r = request(self.port, "GET", "/")
        self.assertEqual((r.status, r.body), (200, b"<p>my own page</p>\n"))
        self.assert_page_headers(r)
        self.assertTrue(r.header("last-modified").endswith("GMT"))
        r = request(self.port, "GET", "/assets/sub/a.css")
        self.assertEqual((r.status, r.body, r.header("content-type")), (200, b"p{}", "text/css; charset=utf-8"))

    def test_symlink_inside_the_root_is_served(self):
        self.assertEqual(request(self.port, "GET", "/assets/inside.css").body, b"p{}")

    def test_nothing_outside_the_root(self):
        for path in ("/assets/escape.txt", "/assets/etc/passwd", "/assets/../../outside.txt",
                     "/assets/%2e%2e/%2e%2e/outside.txt", "/assets/..%2f..%2foutside.txt",
                     "/assets/.env", "/assets/sub", "/assets/fifo.js", "/assets/sub/", "/assets/big.bin/x",
                     "/assets/\\..\\outside.txt", "/assets/missing.js"):
            r = raw_get(self.port, path)
            self.assertEqual(r.status, 404, path)
            self.assertNotIn(b"outside the root", r.body)
            self.assertNotIn(b"root:", r.body)

    def test_big_file_whole(self):
        r = request(self.port, "GET", "/assets/big.bin", timeout=30)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("content-type"), "application/octet-stream")
        self.assertEqual(len(r.body), len(self.big))
        self.assertEqual(r.body, self.big)

    def test_too_big_a_file_is_refused_not_read(self):
        r = request(self.port, "GET", "/assets/huge.bin")
        self.assertEqual(r.status, 500)
        self.assertEqual(r.json(), {"error": "file too large to serve"})

    def test_etag_follows_the_file(self):
        path = os.path.join(self.root, "assets", "sub", "b.txt")
        with open(path, "w") as f:
            f.write("one")
        first = request(self.port, "GET", "/assets/sub/b.txt")
        self.assertEqual(raw_get(self.port, "/assets/sub/b.txt",
                                 headers=f"If-None-Match: {first.header('etag')}\r\n").status, 304)
        with open(path, "w") as f:
            f.write("two!")
        again = raw_get(self.port, "/assets/sub/b.txt", headers=f"If-None-Match: {first.header('etag')}\r\n")
        self.assertEqual((again.status, again.body), (200, b"two!"))
        head = raw_get(self.port, "/assets/sub/b.txt", "HEAD")
        self.assertEqual((head.status, head.header("content-length")), (200, "4"))


class Off(unittest.TestCase):
    def test_off_is_404(self):
        with Server(UPSTREAM, env={"WEB_ROOT": "off"}) as srv:
            for path in ("/", "/assets/main.js"):
                r = request(srv.port, "GET", path)
                self.assertEqual(r.status, 404, path)
                self.assertEqual(r.json(), {"error": "not found"})
            self.assertEqual(request(srv.port, "GET", "/healthz").status, 200)

    def test_not_a_directory_refuses_to_start(self):
        rc, log = refused(env={"WEB_ROOT": "/nonexistent/web"})
        self.assertNotEqual(rc, 0)
        self.assertIn("WEB_ROOT", log)
        self.assertIn("/nonexistent/web", log)
        rc, log = refused(env={"WEB_ROOT": "/etc/hostname"})
        self.assertIn("not a directory", log)


if __name__ == "__main__":
    unittest.main()
