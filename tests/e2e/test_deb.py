"""debian/ against the tree, without building the packages (make deb and
make deb-check do that, as root, in minutes): a staged `make install` with
debian/rules' variables puts each file where exactly one package's .install
claims it, and nothing is left unclaimed (dh_missing would fail the build);
debian/changelog's version is the Makefile's; libzjuchat1.symbols lists
exactly the functions of zjuchat.h, so a new public function is noticed here
rather than as a warning in a package build."""
import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from test_install import header_functions

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("ZJU_BUILD_DIR", "build-asan")
MULTIARCH = "x86_64-linux-gnu"


def rules_make_vars():
    with open(os.path.join(ROOT, "debian/rules")) as f:
        rules = f.read()
    m = re.search(r"^MAKE_VARS = (.*?)(?<!\\)$", rules, re.M | re.S)
    words = m.group(1).replace("\\\n", " ").split()
    return [w.replace("$(DEB_HOST_MULTIARCH)", MULTIARCH) for w in words
            if not w.startswith("BUILD=")]


class DebianDirTest(unittest.TestCase):
    def test_install_files_claim_every_installed_file(self):
        stage = tempfile.mkdtemp(prefix="zju-deb-stage-")
        self.addCleanup(shutil.rmtree, stage, True)
        san = "1" if "asan" in BUILD else ""
        subprocess.run(["make", "-s", "install", f"DESTDIR={stage}", f"BUILD={BUILD}", f"SAN={san}",
                        *rules_make_vars()], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       timeout=600)
        installed = set()
        for d, _, files in os.walk(stage):
            installed |= {os.path.relpath(os.path.join(d, f), stage) for f in files}
        claimed = {}
        for path in glob.glob(os.path.join(ROOT, "debian/*.install")):
            pkg = os.path.basename(path)[:-len(".install")]
            with open(path) as f:
                for line in f:
                    line = line.strip().replace("${DEB_HOST_MULTIARCH}", MULTIARCH)
                    if line and not line.startswith("#"):
                        self.assertNotIn(line, claimed, f"{line} in {pkg} and {claimed.get(line)}")
                        claimed[line] = pkg
        self.assertEqual(sorted(installed - set(claimed)), [], "installed, in no package")
        self.assertEqual(sorted(set(claimed) - installed), [], "claimed, not installed")
        # what goes where
        self.assertEqual(claimed["usr/bin/zju-chat-server"], "zju-chat")
        self.assertEqual(claimed["lib/systemd/system/zju-chat-server.service"], "zju-chat")
        self.assertEqual(claimed[f"usr/lib/{MULTIARCH}/libzjuchat.so.1"], "libzjuchat1")
        for dev in ("usr/include/zjuchat.h", f"usr/lib/{MULTIARCH}/libzjuchat.a",
                    f"usr/lib/{MULTIARCH}/libzjuchat.so", "usr/share/man/man3/zjuchat.3",
                    f"usr/lib/{MULTIARCH}/pkgconfig/libzjuchat.pc"):
            self.assertEqual(claimed[dev], "libzjuchat-dev", dev)
        with open(os.path.join(stage, f"usr/lib/{MULTIARCH}/pkgconfig/libzjuchat.pc")) as f:
            pc = f.read()
        self.assertIn(f"libdir=/usr/lib/{MULTIARCH}\n", pc)
        self.assertIn("includedir=/usr/include\n", pc)

    def test_versions_agree(self):
        with open(os.path.join(ROOT, "debian/changelog")) as f:
            deb = re.match(r"zju-chat \(([^)]+)\)", f.read()).group(1)
        with open(os.path.join(ROOT, "Makefile")) as f:
            make = re.search(r"^VERSION := (\S+)", f.read(), re.M).group(1)
        self.assertEqual(deb, make)

    def test_symbols_file_lists_the_header(self):
        with open(os.path.join(ROOT, "debian/libzjuchat1.symbols")) as f:
            lines = f.read().splitlines()
        self.assertEqual(lines[0], "libzjuchat.so.1 libzjuchat1 #MINVER#")
        symbols = {m.group(1) for m in map(re.compile(r"^ (\w+)@Base ").match, lines) if m}
        self.assertEqual(symbols, header_functions())


if __name__ == "__main__":
    unittest.main()
