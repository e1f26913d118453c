"""`make run` without a key (scripts/run.sh: the server in front of the
bundled mock) stopped with Ctrl-C while a stream is in flight: the terminal
sends SIGINT to the whole foreground process group. The server must drain
the stream to its end, and only then may the mock go; nothing is left
running afterwards."""
import os
import re
import signal
import subprocess
import threading
import time
import unittest

from proctools import children, free_port
from serverctl import LOG_DIR, ROOT, BUILD_DIR, base_env, have_binaries, model, request, stream, wait_until


def alive(pid):
    """Running (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def dotenv_has_key():
    try:
        with open(os.path.join(ROOT, ".env"), encoding="utf-8", errors="replace") as f:
            return re.search(r"^\s*(export\s+)?ZJU_API_KEY\s*=\s*['\"]?[^'\"#\s]", f.read(), re.M)
    except OSError:
        return False


@unittest.skipUnless(have_binaries(), "binaries missing: run make asan")
@unittest.skipIf(dotenv_has_key(), "./.env has ZJU_API_KEY: run.sh would serve the real API")
class CtrlCOnMakeRun(unittest.TestCase):
    # deepseek-v3 (no reasoning): role, 20 content deltas, finish = 22
    # events, 150 ms apart: about 3 s, most of it after the Ctrl-C.
    MODEL = model("deepseek-v3-671b", events=20, delay=150)
    EVENTS = 22

    def healthy(self, port):
        try:
            return request(port, "GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    def test_ctrl_c_drains_the_stream_then_stops_the_mock(self):
        port = free_port()
        env = dict(base_env(), BUILD=BUILD_DIR, DRAIN_TIMEOUT="20")
        log_path = os.path.join(LOG_DIR, f"server-run-script-{os.getpid()}.err")
        with open(log_path, "wb") as log:
            # Its own process group, standing for the terminal's foreground
            # job, with SIGINT at its default as a terminal's job has it (a
            # run started in the background, e.g. under nohup, would pass
            # SIGINT on ignored, and bash cannot trap a signal ignored at entry).
            proc = subprocess.Popen(["env", "--default-signal=INT", "bash", "scripts/run.sh",
                                     "-b", f"127.0.0.1:{port}", "-w", "1"],
                                    cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

        def read_log():
            with open(log_path, "rb") as f:
                return f.read().decode(errors="replace")

        started = []
        pids = []  # mock, server and its workers: none may outlive the test
        try:
            self.assertTrue(wait_until(lambda: self.healthy(port), 30), read_log()[-2000:])
            kids = children(proc.pid)
            mock = [p for p in kids if "zju-mock-upstream" in cmdline(p)]
            server = [p for p in kids if "zju-chat-server" in cmdline(p)]
            self.assertEqual((len(mock), len(server)), (1, 1), [cmdline(p) for p in kids])
            pids = mock + server + children(server[0])

            first_event = threading.Event()
            result = {}

            def on_chunk(s, data):
                first_event.set()

            def client():
                result["s"] = stream(port, {"user_content": "hi", "stream": True, "model": self.MODEL},
                                     timeout=30, on_chunk=on_chunk)
                first_event.set()

            t = threading.Thread(target=client)
            t.start()
            started.append(t)
            self.assertTrue(first_event.wait(15), "no event arrived")
            self.assertNotIn("s", result, "the stream ended before the Ctrl-C")
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
            t.join(35)
            self.assertFalse(t.is_alive(), "stream still open 35 s after the Ctrl-C")

            s = result["s"]
            self.assertEqual(s.status, 200)
            self.assertIsNone(s.error, f"{s.error}; {s.raw[-300:]!r}\n{read_log()[-2000:]}")
            self.assertTrue(s.clean_end, "the chunked body was not terminated")
            self.assertEqual(s.errors(), [], read_log()[-2000:])
            events = s.json_events()  # checks the SSE framing byte for byte
            self.assertEqual(len(events), self.EVENTS, s.raw[-300:])
            # The relay ends a stream without an error event only after the
            # upstream's [DONE]; the last event carries the finish reason.
            self.assertEqual(events[-1]["choices"][0].get("finish_reason"), "stop")

            try:
                rc = proc.wait(25)
            except subprocess.TimeoutExpired:
                self.fail("run.sh still running 25 s after the stream ended:\n" + read_log()[-2000:])
            self.assertEqual(rc, 130, read_log()[-2000:])
            self.assertTrue(wait_until(lambda: not any(alive(p) for p in pids), 5),
                            f"still running after run.sh exited: {[cmdline(p) for p in pids if alive(p)]}")
            self.assertIn("draining", read_log())
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for p in pids:
                if alive(p):
                    os.kill(p, signal.SIGKILL)
            for t in started:
                t.join(35)


if __name__ == "__main__":
    unittest.main()
