#!/usr/bin/env python3
"""Runs every tests/e2e/test_*.py (unittest, stdlib only) against the binaries
in $ZJU_BUILD_DIR (default build-asan) and prints 'e2e: N passed, N failed'."""
import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
pattern = sys.argv[1] if len(sys.argv) > 1 else "test_*.py"
suite = unittest.defaultTestLoader.discover(here, pattern=pattern, top_level_dir=here)
result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
bad = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
ok = result.testsRun - bad - len(result.skipped)
print(f"e2e: {ok} passed, {bad} failed, {len(result.skipped)} skipped")
sys.exit(1 if bad else 0)
