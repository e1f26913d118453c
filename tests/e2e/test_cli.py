"""End-to-end tests of the zju-chat command against the mock upstream.

Each test runs the real binary ($ZJU_BUILD_DIR/zju-chat) the way a user would
and checks what a user would see: the answer text, where the reasoning goes,
JSON output, exit codes and error messages, and the interactive conversation
(driven through a pseudo-terminal). Everything stays on 127.0.0.1.
"""
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from mockctl import Mock

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("ZJU_BUILD_DIR", "build-asan"))
CLI = os.path.join(BUILD, "zju-chat")
# One key for the whole run (scripts/test.sh), so the final key scan covers
# the CLI's output too.
KEY = os.environ.get("ZJU_TEST_KEY") or "sk-test-SECRET-4f9a7c21"
LOG_DIR = os.environ.get("ZJU_E2E_LOG_DIR")
PLAIN = "deepseek-v3-671b"   # answers without reasoning
R1 = "deepseek-r1-671b"      # answers with reasoning_content deltas


def free_port():
    """A loopback port nobody listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_until(fd, pattern, timeout):
    """Reads fd until the bytes read match pattern (regex); returns them."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, buf):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timeout waiting for {pattern!r}; got {buf[-600:]!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # pty closed: the child exited
                chunk = b""
            if not chunk:
                raise AssertionError(f"EOF waiting for {pattern!r}; got {buf[-600:]!r}")
            buf += chunk
    return buf


def read_to_eof(fd, timeout):
    """Reads a pty until the child closes it; returns everything read."""
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not r:
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child exited and the pty is gone
            return buf
        if not chunk:
            return buf
        buf += chunk
    raise AssertionError(f"pty not closed in {timeout} s; got {buf[-600:]!r}")


class CliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(CLI, os.X_OK):
            raise AssertionError(f"{CLI} is not built")
        cls.mock = Mock().start()
        cls.base = cls.mock.url

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()  # asserts a clean exit of the mock

    # -- helpers ---------------------------------------------------------
    def env(self, **extra):
        env = dict(os.environ)
        env.pop("NO_COLOR", None)
        env.update(ZJU_API_KEY=KEY, ZJU_BASE_URL=self.base, LC_ALL="C.UTF-8")
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def run_cli(self, *args, stdin=subprocess.DEVNULL, input=None, env=None, timeout=15):
        p = subprocess.run([CLI, *args], stdin=None if input is not None else stdin,
                           input=input, capture_output=True, env=env or self.env(),
                           timeout=timeout)
        if LOG_DIR:  # recorded for the run's key scan
            fd, path = tempfile.mkstemp(prefix="cli-", suffix=".out", dir=LOG_DIR)
            with os.fdopen(fd, "wb") as f:
                f.write(p.stdout + b"\n" + p.stderr)
        return p

    def last_messages(self):
        """messages[] of the last chat request the mock received."""
        last = self.mock.last() or {}
        body = last.get("body")
        if isinstance(body, str):  # the request body exactly as sent
            body = json.loads(body)
        if not isinstance(body, dict) or "messages" not in body:
            raise AssertionError(f"no messages in /_mock/last: {last}")
        return body["messages"]

    def non_stream_json(self, model):
        p = self.run_cli("--no-stream", "--json", "-m", model, "hello")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().splitlines()
        self.assertEqual(len(lines), 1, "--json --no-stream prints one line")
        return json.loads(lines[0])

    # -- answers ---------------------------------------------------------
    def test_stream_output_equals_non_stream_content(self):
        content = self.non_stream_json(PLAIN)["choices"][0]["message"]["content"]
        self.assertTrue(any("\u4e00" <= c <= "\u9fff" for c in content), content)
        self.assertTrue(any(ord(c) >= 0x1F300 for c in content), "emoji expected")
        expected = content if content.endswith("\n") else content + "\n"
        streamed = self.run_cli("-m", PLAIN, "hello")
        self.assertEqual(streamed.returncode, 0, streamed.stderr)
        self.assertEqual(streamed.stdout.decode(), expected)
        whole = self.run_cli("--no-stream", "-m", PLAIN, "hello")
        self.assertEqual(whole.returncode, 0, whole.stderr)
        self.assertEqual(whole.stdout.decode(), expected)
        self.assertRegex(whole.stderr.decode(),
                         r"usage: prompt_tokens=\d+ completion_tokens=\d+ total_tokens=\d+")

    def test_reasoning_apart_from_answer_and_hidden_on_request(self):
        msg = self.non_stream_json(R1)["choices"][0]["message"]
        reasoning, content = msg["reasoning_content"], msg["content"]
        self.assertTrue(reasoning)
        for args in ([], ["--no-stream"]):
            p = self.run_cli(*args, "-m", R1, "why?")
            self.assertEqual(p.returncode, 0, p.stderr)
            out, err = p.stdout.decode(), p.stderr.decode()
            # stdout is a pipe: the answer alone there, the reasoning on stderr.
            self.assertEqual(out, content if content.endswith("\n") else content + "\n")
            self.assertIn("[thinking]\n" + reasoning, err)
            self.assertIn("[/thinking]", err)
            hidden = self.run_cli(*args, "--no-reasoning", "-m", R1, "why?")
            self.assertEqual(hidden.returncode, 0, hidden.stderr)
            self.assertEqual(hidden.stdout, p.stdout)
            self.assertNotIn("[thinking]", hidden.stderr.decode())
            self.assertNotIn(reasoning[:20], hidden.stderr.decode())

    def test_reasoning_dimmed_on_a_terminal(self):
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(CLI, [CLI, "-m", R1, "why?"], self.env(TERM="xterm"))
        try:
            out = read_to_eof(fd, 10)
        finally:
            _, status = os.waitpid(pid, 0)
            os.close(fd)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.assertIn(b"\x1b[2m[thinking]", out)
        self.assertNotIn(b"[/thinking]", out)

    def test_json_stream_is_one_chunk_per_line(self):
        content = self.non_stream_json(R1)["choices"][0]["message"]["content"]
        p = self.run_cli("--json", "-m", R1, "hello")
        self.assertEqual(p.returncode, 0, p.stderr)
        lines = p.stdout.decode().splitlines()
        chunks = [json.loads(line) for line in lines]
        self.assertGreater(len(chunks), 3)
        self.assertTrue(all(c["object"] == "chat.completion.chunk" for c in chunks))
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in chunks if c.get("choices"))
        self.assertEqual(text, content)
        self.assertNotIn("[thinking]", p.stderr.decode())

    def test_question_read_from_stdin(self):
        question = "第一行 question\nsecond line 🚀"
        p = self.run_cli("-m", PLAIN, "-s", "be brief", input=(question + "\n").encode())
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.last_messages(), [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": question}])
        empty = self.run_cli(input=b"  \n")
        self.assertEqual(empty.returncode, 2)

    def test_list_models(self):
        p = self.run_cli("--list-models")
        self.assertEqual(p.returncode, 0, p.stderr)
        models = p.stdout.decode().split()
        self.assertEqual(len(models), 8, models)
        for m in ("deepseek-r1-671b", "deepseek-v3-671b", "QwQ-32B", "bge-m3"):
            self.assertIn(m, models)

    # -- errors and exit codes ---------------------------------------------
    def test_no_key_is_a_configuration_error(self):
        p = self.run_cli("hello", env=self.env(ZJU_API_KEY=None))
        self.assertEqual(p.returncode, 3)
        self.assertIn("ZJU_API_KEY", p.stderr.decode())
        self.assertEqual(p.stdout, b"")

    def test_usage_errors_and_help(self):
        self.assertEqual(self.run_cli("--no-such-option").returncode, 2)
        self.assertEqual(self.run_cli("--timeout", "soon", "q").returncode, 2)
        key_arg = self.run_cli("--api-key", "x", "q")
        self.assertEqual(key_arg.returncode, 2)
        self.assertIn("ZJU_API_KEY", key_arg.stderr.decode())
        h = self.run_cli("--help")
        self.assertEqual(h.returncode, 0)
        for code in ("130", "3 configuration", "4 network", "5 timeout", "6 API",
                     "7 protocol"):
            self.assertIn(code, h.stdout.decode().replace("\n  ", " "))
        self.assertRegex(self.run_cli("--version").stdout.decode(), r"^zju-chat \d")

    def test_refused_connection_is_a_network_error(self):
        url = f"http://127.0.0.1:{free_port()}/v1"
        p = self.run_cli("--retries", "0", "-u", url, "hello")
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn("zju-chat: network error", p.stderr.decode())

    def test_hung_upstream_is_a_timeout(self):
        start = time.monotonic()
        p = self.run_cli("--retries", "0", "--timeout", "0.5", "-m",
                         PLAIN + "#fault=hang_headers", "hello")
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertLess(time.monotonic() - start, 5)
        self.assertIn("zju-chat: timeout", p.stderr.decode())

    def test_error_status_is_an_api_error_with_upstream_message(self):
        model = PLAIN + "#status=500"
        req = urllib.request.Request(
            self.base + "/chat/completions",
            data=json.dumps({"model": model, "messages": [
                {"role": "user", "content": "hi"}]}).encode(),
            headers={"Authorization": "Bearer " + KEY, "Content-Type": "application/json"})
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=5)
        upstream_msg = json.loads(cm.exception.read())["error"]["message"]
        for args in ([], ["--no-stream"]):
            p = self.run_cli(*args, "--retries", "0", "-m", model, "hello")
            self.assertEqual(p.returncode, 6, p.stderr)
            self.assertIn("zju-chat: API error", p.stderr.decode())
            self.assertIn("500", p.stderr.decode())
            self.assertIn(upstream_msg, p.stderr.decode())

    def test_malformed_reply_is_a_protocol_error(self):
        p = self.run_cli("--retries", "0", "-m", PLAIN + "#fault=not_sse", "hello")
        self.assertEqual(p.returncode, 7, p.stderr)
        self.assertIn("zju-chat: protocol error", p.stderr.decode())

    def test_key_never_printed_even_when_upstream_echoes_it(self):
        for args in ([], ["--no-stream"], ["--json"], ["--json", "--no-stream"]):
            for body in ("json", "html"):
                p = self.run_cli(*args, "--retries", "0", "-m",
                                 f"{PLAIN}#status=401,echo_key=1,body={body}", "hello")
                self.assertEqual(p.returncode, 6, p.stderr)
                self.assertNotIn(KEY.encode(), p.stdout + p.stderr)
                self.assertNotIn(b"SECRET", p.stdout + p.stderr)

    def test_sigint_mid_stream_exits_130_promptly(self):
        proc = subprocess.Popen([CLI, "-m", PLAIN + "#events=400,delay=25", "hello"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=self.env())
        try:
            first = read_until(proc.stdout.fileno(), rb".", 10)
            self.assertTrue(first)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(5)
            elapsed = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = proc.stderr.read().decode()
        proc.stdout.close()
        proc.stderr.close()
        self.assertEqual(rc, 130, err)
        self.assertLess(elapsed, 1.5)
        self.assertIn("cancelled", err)

    # -- interactive mode ----------------------------------------------------
    def test_interactive_conversation_keeps_turns(self):
        # Slow enough (30 events, 20 ms apart) for a Ctrl-C to land mid-answer.
        model = PLAIN + "#events=30,delay=20"
        content = self.non_stream_json(model)["choices"][0]["message"]["content"]
        pid, fd = pty.fork()
        if pid == 0:
            os.execve(CLI, [CLI, "-m", model], self.env(TERM="dumb"))
        try:
            read_until(fd, rb"you> ", 10)
            os.write(fd, "first 问题\r".encode())
            read_until(fd, rb"you> ", 10)
            os.write(fd, b"second question\r")
            read_until(fd, rb"you> ", 10)
            self.assertEqual(self.last_messages(), [
                {"role": "user", "content": "first 问题"},
                {"role": "assistant", "content": content},
                {"role": "user", "content": "second question"}])
            # Ctrl-C stops a slow answer and gives the prompt back.
            os.write(fd, b"/reset\r")
            read_until(fd, rb"you> ", 10)
            os.write(fd, b"slow one\r")
            time.sleep(0.2)
            os.write(fd, b"\x03")
            out = read_until(fd, rb"\[cancelled\][\s\S]*you> ", 5)
            self.assertIn(b"[cancelled]", out)
            os.write(fd, b"third\r")
            read_until(fd, rb"you> ", 10)
            self.assertEqual(self.last_messages(), [{"role": "user", "content": "third"}])
            os.write(fd, b"\x04")  # Ctrl-D leaves
            deadline = time.monotonic() + 5
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError("zju-chat did not exit on Ctrl-D")
                time.sleep(0.05)
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        finally:
            os.close(fd)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)


if __name__ == "__main__":
    unittest.main()
