"""The p99 targets of `make bench` pool the rounds (bench.py `tail_ratio`).

One run's p99 of first events (S2) or of requests (S1) is made by its one to
three worst stalls of the machine, each delaying twenty to thirty requests at
once, for nginx, the server and the mock alone alike: the per-round ratios of
one report spread from 0.4x to 3x. The verdict takes the p99 of every round's
samples together, from zju-loadgen's histogram (`ttfe_hist`) and from the
percentile grid bench/post.lua makes wrk print (`p_grid`). These tests check
the pooling against known distributions and against the tools' own p99."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, os.environ.get("ZJU_BUILD_DIR", "build-asan"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench  # noqa: E402


def hist(values):
    """A loadgen-style histogram of exact values (microseconds)."""
    counts = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return sorted([v, c] for v, c in counts.items())


def grid_uniform(top_ms, n):
    """wrk's percentile grid of n requests spread evenly over 0..top_ms."""
    ps = [50, 60, 70, 80, 85, 90] + [90 + i / 10 for i in range(1, 100)] + [99.95, 99.99]
    return {"requests": n, "p_grid": [[p, top_ms * p / 100] for p in ps] + [[100, top_ms]]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PooledMath(unittest.TestCase):
    def test_histograms_pool_into_the_p99_of_all_samples(self):
        # Round 1 had a stall that delayed 30 of its 1,000 streams by 20 ms;
        # round 2 had none. Alone, round 1's p99 is the stall (20 ms) and
        # round 2's 1 ms; together 30 of 2,000 (1.5%) are slow: still 20 ms.
        # With 15 slow of 2,000 (0.75%) the pooled p99 is 1 ms.
        r1 = {"ttfe_hist": hist([1000] * 970 + [20000] * 30)}
        r2 = {"ttfe_hist": hist([1000] * 1000)}
        self.assertEqual(bench.pooled_hist_pct([r1], 99), 20.0)
        self.assertEqual(bench.pooled_hist_pct([r2], 99), 1.0)
        self.assertEqual(bench.pooled_hist_pct([r1, r2], 99), 20.0)
        r3 = {"ttfe_hist": hist([1000] * 985 + [20000] * 15)}
        self.assertEqual(bench.pooled_hist_pct([r3, r2], 99), 1.0)
        self.assertIsNone(bench.pooled_hist_pct([r1, {"completed": 3}], 99))

    def test_wrk_grids_pool_as_the_mixture_of_the_distributions(self):
        # Uniform over 0..10 ms and over 0..20 ms, as many requests each: the
        # mixture's CDF is (min(x/10, 1) + x/20) / 2, which is 0.99 at 19.6 ms.
        a, b = grid_uniform(10.0, 1000), grid_uniform(20.0, 1000)
        self.assertAlmostEqual(bench.pooled_grid_pct([a], 99), 9.9, places=6)
        self.assertAlmostEqual(bench.pooled_grid_pct([a, b], 99), 19.6, places=6)
        # weighted by requests: 3,000 over 0..10 and 1,000 over 0..20 give
        # (3 + x/20) / 4 = 0.99 at x = 19.2 ms
        a3 = grid_uniform(10.0, 3000)
        self.assertAlmostEqual(bench.pooled_grid_pct([a3, b], 99), 19.2, places=6)
        self.assertIsNone(bench.pooled_grid_pct([a, {"requests": 5}], 99))

    def test_the_verdict_takes_the_pooled_ratio_and_shows_the_rounds(self):
        fast = hist([1000] * 1000)
        stall = hist([1000] * 970 + [4000] * 30)
        # The contender's stall fell in round 1, nginx's in round 2: the
        # per-round ratios are 4x and 0.25x; pooled, both have the same p99.
        results = [
            {"scenario": "S2", "contender": "server", "round": 0, "ttfe_p99_ms": 4.0,
             "ttfe_hist": stall},
            {"scenario": "S2", "contender": "nginx", "round": 0, "ttfe_p99_ms": 1.0,
             "ttfe_hist": fast},
            {"scenario": "S2", "contender": "server", "round": 1, "ttfe_p99_ms": 1.0,
             "ttfe_hist": fast},
            {"scenario": "S2", "contender": "nginx", "round": 1, "ttfe_p99_ms": 4.0,
             "ttfe_hist": stall},
        ]
        r, text = bench.tail_ratio(results, "S2", "server", "nginx", "ttfe_p99_ms")
        self.assertEqual(r, 1.0)
        self.assertIn("over all 2 rounds' samples", text)
        self.assertIn("4.00x, 0.25x", text)
        # without the pooled data (an older report): the median of the ratios
        for x in results:
            del x["ttfe_hist"]
        r, text = bench.tail_ratio(results, "S2", "server", "nginx", "ttfe_p99_ms")
        self.assertAlmostEqual(r, (4.0 + 0.25) / 2)
        self.assertIn("median of the rounds' ratios", text)


class PooledFromTheTools(unittest.TestCase):
    """What the tools print pools back to their own p99 for one run."""

    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.mock = subprocess.Popen(
            [os.path.join(BUILD, "zju-mock-upstream"), "--port", str(cls.port), "--quiet",
             "--key", "k"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", cls.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    @classmethod
    def tearDownClass(cls):
        cls.mock.send_signal(signal.SIGTERM)
        cls.mock.wait(timeout=10)

    def test_loadgen_histogram_gives_back_its_p99(self):
        p = subprocess.run(
            [os.path.join(BUILD, "zju-loadgen"), "--port", str(self.port), "--path",
             "/v1/chat/completions", "--openai-body", "--allow-done", "-H",
             "Authorization: Bearer k", "--model", "mock-x#events=3,delay=1",
             "--expect-events", "5", "-c", "8", "-n", "400"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        res = json.loads(p.stdout.splitlines()[0])
        self.assertEqual(res["completed"], 400)
        self.assertEqual(sum(c for _, c in res["ttfe_hist"]), 400)
        self.assertEqual(bench.pooled_hist_pct([res], 99), res["ttfe_p99_ms"])
        self.assertEqual(bench.pooled_hist_pct([res], 50), res["ttfe_p50_ms"])

    @unittest.skipUnless(shutil.which("wrk"), "wrk is not installed (make deps)")
    def test_wrk_grid_gives_back_its_p99(self):
        body = {"model": "mock-x", "messages": [{"role": "user", "content": "x"}],
                "stream": False}
        env = dict(os.environ, BENCH_BODY=json.dumps(body), BENCH_AUTH="Bearer k")
        p = subprocess.run(
            ["wrk", "-t1", "-c4", "-d1s", "-s", os.path.join(ROOT, "bench", "post.lua"),
             f"http://127.0.0.1:{self.port}/v1/chat/completions"],
            capture_output=True, text=True, env=env, timeout=60)
        res = {}
        for line in p.stdout.splitlines():
            if line.startswith("{"):
                res.update(json.loads(line))
        self.assertGreater(res.get("requests", 0), 100, p.stdout + p.stderr)
        grid = res["p_grid"]
        self.assertEqual(len(grid), 6 + 99 + 2 + 1)
        values = [v for _, v in grid]
        self.assertEqual(values, sorted(values))
        self.assertEqual(grid[-1], [100, res["max_ms"]])
        self.assertAlmostEqual(bench.pooled_grid_pct([res], 99), res["p99_ms"], places=3)


if __name__ == "__main__":
    unittest.main()
