"""`make install PREFIX=...` installs a usable library: the README's example
compiles against the installed header through pkg-config, links the shared
library, and runs against the mock upstream."""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from mockctl import Mock

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("ZJU_BUILD_DIR", "build-asan")


class InstallTest(unittest.TestCase):
    def test_install_and_readme_example(self):
        prefix = tempfile.mkdtemp(prefix="zju-install-")
        try:
            san = "1" if "asan" in BUILD else ""
            subprocess.run(["make", "-s", "install", f"BUILD={BUILD}", f"SAN={san}",
                            f"PREFIX={prefix}"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL, timeout=300)
            for rel in ["include/zjuchat.h", "lib/libzjuchat.so.1", "lib/libzjuchat.a",
                        "lib/pkgconfig/libzjuchat.pc", "bin/zju-chat", "bin/zju-chat-server",
                        "share/man/man1/zju-chat.1"]:
                self.assertTrue(os.path.exists(os.path.join(prefix, rel)), rel)
            readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
            example = re.search(r"```c\n(.*?)```", readme, re.S).group(1)
            src = os.path.join(prefix, "example.c")
            with open(src, "w", encoding="utf-8") as f:
                f.write(example)
            env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
            flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libzjuchat"],
                                   env=env, check=True, capture_output=True,
                                   text=True).stdout.split()
            exe = os.path.join(prefix, "example")
            cmd = ["cc", "-Wall", "-Werror", src, "-o", exe,
                   f"-Wl,-rpath,{prefix}/lib"] + flags
            if san:
                cmd.insert(1, "-fsanitize=address,undefined")
            subprocess.run(cmd, check=True, timeout=120)
            ldd = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
            self.assertIn(os.path.join(prefix, "lib", "libzjuchat.so.1"), ldd)

            run_env = {k: v for k, v in os.environ.items() if not k.startswith("ZJU_")}
            r = subprocess.run([exe], env=run_env, capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1)
            self.assertIn("ZJU_API_KEY", r.stderr)
            with Mock() as mock:
                run_env.update(ZJU_API_KEY="k-install", ZJU_BASE_URL=mock.url)
                r = subprocess.run([exe], env=run_env, capture_output=True, text=True,
                                   timeout=30)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("你好", r.stdout)
        finally:
            shutil.rmtree(prefix, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
