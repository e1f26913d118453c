"""Key safety (issue 5): the run's key (ZJU_TEST_KEY, see scripts/test.sh)
must not reach any output. These tests provoke the paths most likely to
leak it -- an upstream that echoes the Authorization header, in debug mode,
through the server and through the CLI -- and put every byte they saw in
the run's log directory, which scripts/test.sh greps for the key at the end
of the whole suite (with the server, mock and response records of every
other test). They also check their own outputs directly."""

import os
import subprocess
import unittest

from serverctl import BUILD_DIR, KEY, LOG_DIR, Mock, Server, base_env, chat, have_binaries, model, stream

CLI = os.path.join(BUILD_DIR, "zju-chat")


class KeySafety(unittest.TestCase):
    def setUp(self):
        if not have_binaries():
            self.fail("binaries missing: run make asan")
        self.mock = Mock().start()
        self.addCleanup(self.mock.stop)

    def test_cli_outputs_with_echoing_upstream(self):
        self.assertTrue(os.access(CLI, os.X_OK), CLI)
        env = dict(base_env(), ZJU_API_KEY=KEY, ZJU_BASE_URL=self.mock.base_url)
        runs = [
            ["--retries", "0", "-m", model(status=401, echo_key=1), "hi"],
            ["--retries", "0", "--no-stream", "-m", model(status=401, echo_key=1), "hi"],
            ["--retries", "0", "--json", "-m", model(status=500, echo_key=1), "hi"],
            ["--retries", "0", "--json", "--no-stream", "-m", model(status=403, echo_key=1), "hi"],
            ["--retries", "0", "-m", model(events=2, fault="drop_mid"), "hi"],
            ["--retries", "0", "-m", model(events=2), "hi"],
        ]
        for i, args in enumerate(runs):
            with self.subTest(args=args):
                p = subprocess.run([CLI, *args], env=env, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
                with open(os.path.join(LOG_DIR, f"cli-{os.getpid()}-{i}.out"), "wb") as f:
                    f.write(b"$ zju-chat " + " ".join(args).encode() + b"\n" + p.stdout + b"\n--- stderr\n" + p.stderr)
                self.assertNotIn(KEY.encode(), p.stdout + p.stderr)
                if "echo_key=1" in args[-2]:
                    self.assertNotEqual(p.returncode, 0)
                    self.assertIn(b"injected status", p.stderr, "the upstream's message should still be shown")
        self.assertIn(KEY, self.mock.last()["headers"].get("authorization", ""), "the key must reach the upstream")

    def test_server_debug_mode_echoing_upstream(self):
        with Server(self.mock.base_url, env={"FLASK_DEBUG": "1", "DEBUG": "1"}) as srv:
            for m in (model(status=401, echo_key=1), model(status=429, echo_key=1, retry_after=1),
                      model(status=502, echo_key=1, body="html")):
                r = chat(srv.port, {"user_content": "hi", "model": m})
                self.assertGreaterEqual(r.status, 400)
                self.assertNotIn(KEY.encode(), r.body)
                s = stream(srv.port, {"user_content": "hi", "stream": True, "model": m})
                self.assertNotIn(KEY.encode(), s.raw)
            self.assertIn("debug", srv.log())
            self.assertNotIn(KEY, srv.log())


if __name__ == "__main__":
    unittest.main()
