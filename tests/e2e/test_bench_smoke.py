"""The benchmark harness itself works: `bench/run.sh --smoke` drives a few
seconds of checked streams through the mock and the server, and catches the
three broken streams it plants (dropped mid-way, a stray [DONE], a wrong
event count). Numbers are not judged here: benchmarks are not tests."""
import os
import subprocess
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("ZJU_BUILD_DIR", "build-asan")


class BenchSmoke(unittest.TestCase):
    def test_smoke_run_checks_streams(self):
        env = dict(os.environ, BUILD=BUILD)
        p = subprocess.run(["bash", "bench/run.sh", "--smoke"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=180)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out[-3000:])
        self.assertIn("smoke: ok", out)
        # the server run is there, and every one of its streams passed the checks
        self.assertRegex(out, r'"label": "smoke-server", [^\n]*"failed": 0,')
        # and each planted fault was caught by the load generator
        for reason in ("unclean_end", "done_seen", "event_count"):
            self.assertIn(f'"{reason}": 4', out)


if __name__ == "__main__":
    unittest.main()
