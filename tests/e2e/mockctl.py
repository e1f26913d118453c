"""Test helper for the mock upstream (build dir from $ZJU_BUILD_DIR, default
build-asan): starts zju-mock-upstream on an ephemeral loopback port, drives its
/_mock control API, makes self-signed certificates and parses SSE bytes.
Stdlib only.

    with Mock("--events", "3") as m:
        client_base_url = m.url          # http://127.0.0.1:PORT/v1
        m.config(fail_next=2)
        m.config(models="hang")          # GET /v1/models never answers
        ...
        assert m.stats()["streams_completed"] == 1
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_DIR = os.path.join(ROOT, os.environ.get("ZJU_BUILD_DIR", "build-asan"))
MOCK_BIN = os.path.join(BUILD_DIR, "zju-mock-upstream")


def _env():
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1:strict_string_checks=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


class Mock:
    """A running zju-mock-upstream. Extra command-line arguments are passed as
    is; stop() (or leaving the with block) sends SIGTERM and asserts a clean
    exit, so sanitizer reports (leaks) fail the test."""

    def __init__(self, *args, timeout=10):
        self.args = list(args)
        self.timeout = timeout
        self.proc = None
        self.port = None
        self.scheme = "http"
        self.stderr_path = None

    def start(self):
        import tempfile

        # With ZJU_E2E_LOG_DIR set (scripts/test.sh), the mock's log is kept
        # there with the rest of the run, for the final key scan.
        self.keep_log = bool(os.environ.get("ZJU_E2E_LOG_DIR"))
        if self.keep_log:
            os.makedirs(os.environ["ZJU_E2E_LOG_DIR"], exist_ok=True)
        fd, self.stderr_path = tempfile.mkstemp(
            prefix="mock-", suffix=".err", dir=os.environ.get("ZJU_E2E_LOG_DIR") or None)
        with os.fdopen(fd, "wb") as err:
            self.proc = subprocess.Popen(
                [MOCK_BIN, "--port", "0", *self.args],
                stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=_env())
        line = self._read_line(self.timeout)
        prefix = "listening on "
        if not line.startswith(prefix):
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"mock did not start: {line!r} {self.stderr()}")
        url = line[len(prefix):].strip()
        self.scheme = url.split("://", 1)[0]
        self.port = int(url.rsplit(":", 1)[1])
        return self

    def _read_line(self, timeout):
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in buf and time.monotonic() < deadline:
                if not sel.select(deadline - time.monotonic()):
                    break
                chunk = os.read(self.proc.stdout.fileno(), 256)
                if not chunk:
                    break
                buf += chunk
        finally:
            sel.close()
        return buf.decode("utf-8", "replace")

    def stderr(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    @property
    def root(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def url(self):
        """The base URL a client is given (the chat API lives under it)."""
        return self.root + "/v1"

    base_url = url

    def _call(self, method, path, payload=None):
        body = None if payload is None else json.dumps(payload).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
        finally:
            conn.close()
        if r.status != 200:
            raise RuntimeError(f"mock {method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data)

    def stats(self):
        return self._call("GET", "/_mock/stats")

    def last(self):
        """The last chat or embeddings request: {"method","path","headers",
        "body"} or None (GET .../models is not recorded)."""
        try:
            return self._call("GET", "/_mock/last")
        except RuntimeError as e:
            if " 404 " in str(e):
                return None
            raise

    def config(self, **kw):
        """POST /_mock/config with keyword directives (fault="drop_mid",
        fail_next=2, reset=True, ...; models="list"|"empty"|"hang"|"garbage"|
        STATUS and models_think=MS for GET .../models); returns the resulting
        global config."""
        return self._call("POST", "/_mock/config", kw)

    def reset(self):
        return self.config(reset=True)

    def reset_stats(self):
        return self._call("POST", "/_mock/reset-stats")

    def wait_stat(self, name, pred, timeout=3.0):
        """Polls stats() until pred(stats[name]); returns the last stats."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            if pred(s[name]) or time.monotonic() >= deadline:
                return s
            time.sleep(0.02)

    def stop(self, timeout=10):
        """SIGTERM, wait, and assert exit code 0 (sanitizer reports fail)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("mock did not exit on SIGTERM: " + self.stderr())
        finally:
            proc.stdout.close()
        err = self.stderr()
        if not self.keep_log:
            os.unlink(self.stderr_path)
        if rc != 0:
            raise AssertionError(f"mock exited with {rc}: {err}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if exc[0] is None:
            self.stop()
        else:  # do not hide the test's own failure behind a stop failure
            try:
                self.stop()
            except AssertionError:
                pass


def make_self_signed_cert(directory):
    """Writes a self-signed certificate for 127.0.0.1 into directory; returns
    (cert_path, key_path)."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        check=True, capture_output=True, timeout=60)
    return cert, key


def sse_data(raw):
    """The data payloads (str) of an SSE byte stream, in order. Handles LF and
    CRLF line ends, comments, other fields and multi-line data."""
    out, data = [], None
    for line in raw.decode("utf-8").replace("\r\n", "\n").split("\n"):
        if line == "":
            if data is not None:
                out.append("\n".join(data))
            data = None
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data = (data or []) + [value]
    return out


def chat_body(model="deepseek-r1-671b", stream=False, content="hello", **extra):
    """A valid chat request body."""
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream is not None:
        body["stream"] = stream
    body.update(extra)
    return body


def raw_request(port, body, headers=None, path="/v1/chat/completions", key="sk-test",
                timeout=5):
    """Sends one POST (Connection: close) on a fresh socket; returns the
    connected socket (the caller reads the answer up to EOF) so tests can
    observe framing and early ends."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    hdrs = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json",
            "Content-Length": str(len(data)), "Connection": "close"}
    if key is not None:
        hdrs["Authorization"] = "Bearer " + key
    hdrs.update(headers or {})
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
    s.sendall(head.encode() + b"\r\n" + data)
    return s
