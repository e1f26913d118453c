"""The order in which `make bench` runs its paired scenarios (bench.py
`schedule`). An S3-4000 leaves thousands of closed and idle connections on
the machine, and the S1 in the minute after it ran 20% slower, for nginx as
for the server; when a round ran S1, S2 and S3 on one contender before the
next, whichever contender came first after an S3 lost its round (S1 0.64x to
1.12x within one run). So: no S1 or S2 after any S3, no S1 after any S2, and
a ratio's two runs (a contender's and nginx's in the same round) close
together: within one scenario's round."""
import os
import sys
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench  # noqa: E402

NAMES = ["mock", "nginx", "server-w1", "server", "server-v1", "server-limits"]


class BenchSchedule(unittest.TestCase):
    def test_no_s1_or_s2_after_an_s3_and_no_s1_after_an_s2(self):
        runs = bench.schedule(NAMES, ["S1", "S2", "S3"], 3)
        seen = []
        for sc, _, _ in runs:
            if sc == "S1":
                self.assertNotIn("S2", seen)
                self.assertNotIn("S3", seen)
            if sc == "S2":
                self.assertNotIn("S3", seen)
            seen.append(sc)

    def test_every_contender_once_per_round_of_each_scenario(self):
        runs = bench.schedule(NAMES, ["S1", "S2", "S3"], 3)
        self.assertEqual(len(runs), 3 * 3 * len(NAMES))
        for sc in ("S1", "S2", "S3"):
            for rnd in range(3):
                got = [n for s, r, n in runs if s == sc and r == rnd]
                self.assertEqual(sorted(got), sorted(NAMES), (sc, rnd))
                # a round's runs are consecutive: nginx and a server of the
                # same round are at most one scenario's round apart
                idx = [i for i, (s, r, _) in enumerate(runs) if s == sc and r == rnd]
                self.assertEqual(idx, list(range(idx[0], idx[0] + len(NAMES))))

    def test_the_first_place_after_the_previous_round_rotates(self):
        firsts = [n for s, r, n in
                  (run for i, run in enumerate(bench.schedule(NAMES, ["S1"], 3))
                   if i % len(NAMES) == 0)]
        self.assertEqual(len(set(firsts)), 3)

    def test_only_the_scenarios_asked(self):
        runs = bench.schedule(["nginx", "server"], ["S2"], 2)
        self.assertEqual(runs, [("S2", 0, "nginx"), ("S2", 0, "server"),
                                ("S2", 1, "server"), ("S2", 1, "nginx")])


if __name__ == "__main__":
    unittest.main()
