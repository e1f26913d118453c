"""Test harness for zju-chat-server end-to-end tests.

Starts the real server binary (and the mock upstream) on loopback with a fresh
environment, and gives tests small HTTP, SSE and raw-socket helpers. Every
response (headers and body) and every server log is kept in one session
directory, so a final test can prove the API key never leaked anywhere.
Every wait here is bounded.
"""

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import mockctl
from proctools import children as _children, dechunk, free_port, refuses, rss_kb  # noqa: F401 (re-exported)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD_DIR = os.path.join(ROOT, os.environ.get("ZJU_BUILD_DIR", "build-asan"))
SERVER_BIN = os.path.join(BUILD_DIR, "zju-chat-server")
MOCK_BIN = mockctl.MOCK_BIN

# Distinctive, so a grep over everything the tests saw finds any leak.
# scripts/test.sh exports one per run (ZJU_TEST_KEY) and greps the whole log
# directory for it at the end.
KEY = os.environ.get("ZJU_TEST_KEY") or "sk-test-SECRET-4f9a"
DEFAULT_MODEL = "deepseek-r1-671b"

# Set ZJU_E2E_LOG_DIR to keep the logs and responses of a run; otherwise
# they live in a temporary directory removed at exit (failures already
# quote the relevant log tail).
LOG_DIR = os.environ.get("ZJU_E2E_LOG_DIR") or tempfile.mkdtemp(prefix="zju-e2e-server-")
os.makedirs(LOG_DIR, exist_ok=True)
if not os.environ.get("ZJU_E2E_LOG_DIR"):
    atexit.register(shutil.rmtree, LOG_DIR, True)
RESPONSES = os.path.join(LOG_DIR, "responses.bin")

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

_counter = [0]


def _next_id():
    _counter[0] += 1
    return _counter[0]


def have_binaries():
    return os.access(SERVER_BIN, os.X_OK) and os.access(MOCK_BIN, os.X_OK)


def record(data):
    """Appends bytes a client received to the session's response record."""
    with open(RESPONSES, "ab") as f:
        f.write(data)
        f.write(b"\n")


def base_env():
    """A fresh environment: nothing of ours (ZJU_*, PORT, ...) is inherited."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "ASAN_OPTIONS": os.environ.get(
            "ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1:strict_string_checks=1"
        ),
        "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
    }
    return env


def model(name=DEFAULT_MODEL, **directives):
    """A model name carrying mock directives: model(events=3, fault='drop_mid')."""
    if not directives:
        return name
    return name + "#" + ",".join(f"{k}={v}" for k, v in directives.items())


def wait_until(pred, timeout, step=0.02):
    """Polls pred() until truthy or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


# ---------------------------------------------------------------- responses


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value), order kept
        self.body = body

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:300]!r}>"


def _record_response(status, headers, body):
    record(b"%d " % status + "\r\n".join(f"{k}: {v}" for k, v in headers).encode("latin-1", "replace"))
    record(body)


def request(port, method, path, body=None, headers=None, timeout=10, host="127.0.0.1"):
    """One request on a fresh connection; returns a Response (body fully read)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        resp = Response(r.status, r.getheaders(), data)
    finally:
        conn.close()
    _record_response(resp.status, resp.headers, resp.body)
    return resp


def chat(port, payload, headers=None, timeout=15, content_type="application/json", path="/api/chat"):
    """POST /api/chat (or path) with a JSON payload (dict) or raw bytes."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    h = {}
    if content_type is not None:
        h["Content-Type"] = content_type
    h.update(headers or {})
    return request(port, "POST", path, body=body, headers=h, timeout=timeout)


# ---------------------------------------------------------------- SSE


class Stream:
    """What a client saw of one streamed answer: raw body bytes with timing."""

    def __init__(self):
        self.status = None
        self.headers = []
        self.chunks = []  # (seconds since request sent, bytes)
        self.t_headers = None
        self.t_end = None
        self.clean_end = False  # the chunked body was properly terminated
        self.error = None

    @property
    def raw(self):
        return b"".join(c for _, c in self.chunks)

    def header(self, name):
        return Response(self.status, self.headers, b"").header(name)

    def frames(self):
        return split_frames(self.raw)

    def data(self):
        """Payloads of the data: frames, in order (bytes)."""
        return [v for kind, v in self.frames() if kind == "data"]

    def comments(self):
        return [v for kind, v in self.frames() if kind == "comment"]

    def json_events(self):
        return [json.loads(d) for d in self.data()]

    def errors(self):
        return [e["error"] for e in self.json_events() if isinstance(e, dict) and "error" in e]

    def content(self):
        """The answer text assembled from the content deltas."""
        out = []
        for e in self.json_events():
            for c in e.get("choices", []) if isinstance(e, dict) else []:
                d = c.get("delta") or {}
                if isinstance(d.get("content"), str):
                    out.append(d["content"])
        return "".join(out)


FRAME_RE = re.compile(rb"(data: [^\n]*|:[^\n]*)\n\n")


def split_frames(raw):
    """Splits a relayed SSE body into ('data', payload) / ('comment', text)
    frames; fails on anything that is not exactly 'data: X\\n\\n' or a
    ': comment\\n\\n' (so framing is checked byte for byte)."""
    out = []
    pos = 0
    while pos < len(raw):
        m = FRAME_RE.match(raw, pos)
        if not m:
            raise AssertionError(f"malformed SSE framing at byte {pos}: {raw[pos:pos + 200]!r}")
        frame = m.group(1)
        if frame.startswith(b"data: "):
            out.append(("data", frame[6:]))
        else:
            out.append(("comment", frame[1:].strip()))
        pos = m.end()
    return out


def stream(port, payload, timeout=20, headers=None, on_chunk=None, path="/api/chat", connect=None):
    """POSTs a stream request and reads the answer as it arrives.

    on_chunk(stream, bytes) may return False to hang up right there.
    Never waits longer than timeout in total. connect() gives the connection
    to use instead of plain HTTP to 127.0.0.1:port (e.g. HTTPS to an nginx)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    s = Stream()
    t0 = time.monotonic()
    deadline = t0 + timeout
    conn = connect() if connect else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=h)
        r = conn.getresponse()
        s.t_headers = time.monotonic() - t0
        s.status = r.status
        s.headers = r.getheaders()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                s.error = TimeoutError("stream not finished within %.1fs" % timeout)
                break
            conn.sock.settimeout(left)
            try:
                data = r.read1(65536)
            except (http.client.IncompleteRead, ConnectionError, OSError) as e:
                s.error = e
                break
            if not data:
                s.clean_end = True
                break
            s.chunks.append((time.monotonic() - t0, data))
            if on_chunk is not None and on_chunk(s, data) is False:
                break
    finally:
        s.t_end = time.monotonic() - t0
        conn.close()
    _record_response(s.status or 0, s.headers, s.raw)
    return s


# ---------------------------------------------------------------- raw socket


class RawConn:
    """A plain TCP connection for keep-alive, pipelining and hang-up tests.
    Received bytes are kept in a buffer with a read offset, so parsing a
    long stream stays linear."""

    def __init__(self, port, timeout=5, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            # Before connect, so the window is small from the handshake on.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self._buf = bytearray()
        self._pos = 0
        self.closed = False

    def pending(self):
        """Bytes received and not consumed yet."""
        return bytes(self._buf[self._pos :])

    def unread(self, data):
        """Puts consumed bytes back in front of the buffer."""
        self._buf = bytearray(data) + self._buf[self._pos :]
        self._pos = 0

    def send(self, data):
        self.sock.sendall(data)

    def post_chat(self, payload, extra_headers="", keep_alive=True, path="/api/chat"):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            + ("" if keep_alive else "Connection: close\r\n")
            + extra_headers
            + "\r\n"
        )
        return head.encode() + body

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data within deadline; have %r" % self.pending()[-200:])
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise ConnectionError("peer closed; have %r" % self.pending()[-200:])
        if self._pos > (1 << 20) and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def _take(self, end):
        out = bytes(self._buf[self._pos : end])
        self._pos = end
        return out

    def read_until(self, token, timeout=5):
        deadline = time.monotonic() + timeout
        rel = 0  # relative to _pos: _fill may compact the buffer
        while True:
            i = self._buf.find(token, self._pos + rel)
            if i >= 0:
                return self._take(i + len(token))
            rel = max(0, len(self._buf) - self._pos - len(token) + 1)
            self._fill(deadline)

    def read_exact(self, n, deadline):
        while len(self._buf) - self._pos < n:
            self._fill(deadline)
        return self._take(self._pos + n)

    def read_response(self, timeout=10, head_only=False):
        """Reads one HTTP/1.1 response (Content-Length or chunked) off the
        connection, leaving any following bytes buffered for the next call."""
        deadline = time.monotonic() + timeout
        head = self.read_until(b"\r\n\r\n", timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = []
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.append((k.strip(), v.strip()))
        resp = Response(status, headers, b"")
        if head_only:
            return resp
        te = (resp.header("transfer-encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                size_line = self.read_until(b"\r\n", deadline - time.monotonic())
                size = int(size_line.split(b";")[0].strip(), 16)
                chunk = self.read_exact(size + 2, deadline)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        elif resp.header("content-length") is not None:
            body = self.read_exact(int(resp.header("content-length")), deadline)
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:
            try:
                while True:
                    self._fill(deadline)
            except ConnectionError:
                pass
            body = self._take(len(self._buf))
        resp.body = body
        _record_response(resp.status, resp.headers, resp.body)
        return resp

    def wait_closed(self, timeout):
        """True if the peer closes (EOF or reset) within timeout; data that
        arrives meanwhile stays readable (pending())."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._fill(deadline)
            except ConnectionError:
                return True
            except TimeoutError:
                return False
            except socket.timeout:
                return False
            except OSError:
                return True

    def abort(self):
        """Hangs up with a reset (SO_LINGER 0), like a killed browser tab."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        except OSError:
            pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------- routes


class SeedRoute:
    """POST /api/chat: {"user_content", "model", "stream"}; errors are
    {"error": "message"}; streams never carry [DONE]. The relay is the same
    for every chat route, so the tests of its guarantees (faults,
    disconnects) take a route and run once per route."""

    name = "api_chat"
    path = "/api/chat"
    done = False  # a stream that ends well ends with data: [DONE]

    def body(self, model=None, stream=None, content="hi"):
        b = {"user_content": content}
        if model is not None:
            b["model"] = model
        if stream is not None:
            b["stream"] = stream
        return b

    def error_message(self, obj):
        """The message of an error body or error event; fails on any other shape."""
        err = obj.get("error") if isinstance(obj, dict) else None
        if not isinstance(err, str) or not err:
            raise AssertionError(f"not a {self.path} error: {obj!r}")
        return err

    def error_code(self, obj):
        return None  # the seed's errors have no code

    def events(self, s):
        """The JSON events of a Stream, the end marker left out (and checked:
        last and once, on a route that has one)."""
        data = s.data()
        n = data.count(b"[DONE]")
        if n and not (self.done and n == 1 and data[-1] == b"[DONE]"):
            raise AssertionError(f"[DONE] misplaced on {self.path}: {s.raw[-300:]!r}")
        return [json.loads(d) for d in data if d != b"[DONE]"]

    def saw_done(self, s):
        return s.data()[-1:] == [b"[DONE]"]

    def errors(self, s):
        """The messages of the error events of a Stream."""
        return [self.error_message(e) for e in self.events(s) if isinstance(e, dict) and "error" in e]

    def content(self, s):
        """The answer text of a Stream, assembled from the content deltas."""
        return "".join(c["delta"]["content"] for e in self.events(s) if isinstance(e, dict)
                       for c in e.get("choices") or [] if isinstance((c.get("delta") or {}).get("content"), str))


class OpenAIRoute(SeedRoute):
    """POST /v1/chat/completions: OpenAI's body {"model", "messages",
    "stream"}; errors are {"error": {"message", "type", "param", "code"}};
    streams that end well end with data: [DONE]."""

    name = "v1_chat"
    path = "/v1/chat/completions"
    done = True

    def body(self, model=None, stream=None, content="hi"):
        b = {"messages": [{"role": "user", "content": content}]}
        if model is not None:
            b["model"] = model
        if stream is not None:
            b["stream"] = stream
        return b

    def error_message(self, obj):
        err = obj.get("error") if isinstance(obj, dict) else None
        if not (isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"]
                and isinstance(err.get("type"), str) and "param" in err and "code" in err):
            raise AssertionError(f"not an OpenAI error object: {obj!r}")
        return err["message"]

    def error_code(self, obj):
        self.error_message(obj)
        return obj["error"]["code"]


SEED = SeedRoute()
OPENAI = OpenAIRoute()


# ---------------------------------------------------------------- processes


class Mock(mockctl.Mock):
    """The mock upstream (tests/e2e/mockctl.py), requiring our KEY by default
    so a request with a wrong or missing key fails like the real API."""

    def __init__(self, *args, key=KEY, timeout=10):
        super().__init__(*((["--key", key] if key else []) + list(args)), timeout=timeout)

    def last_body(self):
        """The JSON body of the last chat request the mock received."""
        body = self.last()["body"]
        return json.loads(body) if isinstance(body, str) else body

    def direct(self, body, stream=False, timeout=10):
        """Sends a chat request straight to the mock (not through the
        server), with the key; returns a Response or, for streams, the list
        of raw data payloads (bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=data,
                headers={"Content-Type": "application/json", "Authorization": "Bearer " + KEY},
            )
            r = conn.getresponse()
            raw = r.read()
        finally:
            conn.close()
        if not stream:
            return Response(r.status, r.getheaders(), raw)
        out = []
        for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
            if line.startswith(b"data:"):
                out.append(line[5:].lstrip(b" "))
        return out


class ServerError(AssertionError):
    pass


class Server:
    """zju-chat-server on a free loopback port.

    env: extra variables (value None removes one); the base is a fresh env
    with ZJU_API_KEY=key and ZJU_BASE_URL=upstream unless given as None.
    cwd: working directory (default: a fresh empty one, so no stray .env)."""

    def __init__(self, upstream=None, env=None, key=KEY, workers=1, args=None, cwd=None, bind=True,
                 preexec_fn=None):
        self.env = base_env()
        if key is not None:
            self.env["ZJU_API_KEY"] = key
        if upstream is not None:
            self.env["ZJU_BASE_URL"] = upstream
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = str(v)
        self.workers = workers
        self.extra_args = list(args or [])
        self.cwd = cwd
        self.bind = bind
        self.preexec_fn = preexec_fn  # e.g. a lower RLIMIT_NOFILE
        self.proc = None
        self.port = None
        self.stopped = False

    def start(self, wait=True):
        n = _next_id()
        self.err_path = os.path.join(LOG_DIR, f"server-{n}.err")
        self.out_path = os.path.join(LOG_DIR, f"server-{n}.out")
        if self.cwd is None:
            self.cwd = tempfile.mkdtemp(prefix=f"cwd-{n}-", dir=LOG_DIR)
        cmd = [SERVER_BIN]
        if self.bind:
            self.port = free_port()
            cmd += ["-b", f"127.0.0.1:{self.port}"]
        else:
            self.port = int(self.env["PORT"])
        if self.workers is not None:
            cmd += ["-w", str(self.workers)]
        cmd += self.extra_args
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=err, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                preexec_fn=self.preexec_fn,
            )
        if wait:
            self.wait_ready()
        return self

    def healthy(self):
        try:
            return request(self.port, "GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    def wait_ready(self, timeout=15):
        def ready():
            if self.proc.poll() is not None:
                return "exited"
            return self.healthy()

        r = wait_until(ready, timeout, step=0.05)
        if r is not True:
            self.kill()
            raise ServerError(f"server not ready ({r}): {self.log()[-3000:]}")

    def log(self):
        out = []
        for p in (self.err_path, self.out_path):
            with open(p, "rb") as f:
                out.append(f.read().decode("utf-8", "replace"))
        return "".join(out)

    def wait_log(self, needle, timeout=3):
        """Waits until needle (a string or compiled regex) appears in the log."""
        if isinstance(needle, str):
            return wait_until(lambda: needle in self.log(), timeout)
        return wait_until(lambda: needle.search(self.log()), timeout)

    def workers_pids(self):
        return _children(self.proc.pid)

    def all_pids(self):
        return [self.proc.pid] + self.workers_pids()

    def rss_kb(self):
        """Resident memory of the supervisor and its workers, in KB."""
        return sum(rss_kb(p) for p in self.all_pids())

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def check_log(self):
        """Fails on sanitizer reports or the key in the log."""
        text = self.log()
        for mark in SANITIZER_MARKS:
            if mark in text:
                i = text.index(mark)
                raise ServerError(f"sanitizer report in server log: {text[max(0, i - 200):i + 3000]}")
        if KEY in text:
            line = next(l for l in text.splitlines() if KEY in l)
            raise ServerError(f"API key in server log: {line[:300]}")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stops the server and asserts it exited 0 with a clean log."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.kill()
            raise ServerError(f"server did not exit within {timeout}s of {sig!r}")
        self.check_log()
        if rc != 0:
            raise ServerError(f"server exited with {rc}: {self.log()[-3000:]}")

    def kill(self):
        self.stopped = True
        if self.proc and self.proc.poll() is None:
            for pid in self.workers_pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:
            # Do not mask the test's own failure; still leave nothing running.
            try:
                self.stop(timeout=5)
            except Exception:
                self.kill()


def normalize(b):
    """Blanks the per-request fields of a mock answer (id, created) so two
    answers to the same request compare byte for byte."""
    b = re.sub(rb'"id":"[^"]*"', b'"id":"X"', b)
    return re.sub(rb'"created":\d+', b'"created":0', b)


class MockCase(unittest.TestCase):
    """A fresh mock per test (self.mock); the test starts its own servers."""

    def setUp(self):
        if not have_binaries():
            self.fail("binaries missing: run make asan")
        self.mock = Mock().start()
        self.addCleanup(self.mock.stop)


class ServerCase(unittest.TestCase):
    """One mock and one server shared by a test class; the mock's global
    directives are reset before each test."""

    server_env = {}
    workers = 1
    mock_args = ()
    route = SEED  # the chat route of assert_error / assert_serves

    @classmethod
    def setUpClass(cls):
        if not have_binaries():
            raise RuntimeError(f"missing {SERVER_BIN} or {MOCK_BIN}: run make asan")
        cls.mock = Mock(*cls.mock_args).start()
        try:
            cls.server = Server(cls.mock.base_url, env=cls.server_env, workers=cls.workers).start()
        except BaseException:
            cls.mock.stop()
            raise
        cls.port = cls.server.port

    @classmethod
    def tearDownClass(cls):
        try:
            cls.server.stop()
        finally:
            cls.mock.stop()

    def setUp(self):
        self.mock.reset()

    def assert_error(self, resp, status, cors=True):
        """A JSON error answer in the route's shape (the seed's {"error":
        "<non-empty string>"}) with CORS; returns its message."""
        self.assertEqual(resp.status, status, resp)
        ctype = resp.header("content-type") or ""
        self.assertIn("application/json", ctype.lower(), resp.headers)
        body = resp.json()
        self.assertIsInstance(body, dict, resp)
        msg = self.route.error_message(body)
        if cors:
            self.assertIsNotNone(resp.header("access-control-allow-origin"), resp.headers)
        return msg

    def assert_serves(self, port=None, events=3):
        """A normal stream on the route right now gets every event and a
        clean end (with [DONE] where the route has one)."""
        r = self.route
        s = stream(port or self.port, r.body(model(events=events), stream=True), timeout=10, path=r.path)
        self.assertEqual(s.status, 200, s.raw[:300])
        self.assertTrue(s.clean_end, s.error)
        self.assertEqual(r.errors(s), [])
        self.assertEqual(r.saw_done(s), r.done, s.raw[-300:])
        self.assertTrue(r.events(s)[-1]["choices"][0].get("finish_reason"), s.raw[-300:])
        return s


def scan_for_key():
    """Files of the session (server, mock and CLI logs, every response)
    containing KEY."""
    hits = []
    for name in sorted(os.listdir(LOG_DIR)):
        if not (name.startswith(("server-", "mock-", "cli-")) or name == "responses.bin"):
            continue
        path = os.path.join(LOG_DIR, name)
        if not os.path.isfile(path):
            continue  # a test's working directory (its .env holds the key on purpose)
        with open(path, "rb") as f:
            if KEY.encode() in f.read():
                hits.append(name)
    return hits
