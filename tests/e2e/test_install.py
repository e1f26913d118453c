"""`make install PREFIX=...` installs a usable library and the commands: the
README's example compiles against the installed header through pkg-config,
links the shared library (which names its own dependencies), and runs against
the installed mock upstream; the man pages of man/ are installed; a real
install runs ldconfig, a staged one (DESTDIR) does not; `make uninstall`
removes it all."""
import glob
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("ZJU_BUILD_DIR", "build-asan")
SAN = "1" if "asan" in BUILD else ""
MAN_PAGES = sorted(glob.glob(os.path.join(ROOT, "man", "*.[1-8]")))


def man_dest(page):
    return f"share/man/man{page.rsplit('.', 1)[1]}/{os.path.basename(page)}"


INSTALLED = ["include/zjuchat.h", "lib/libzjuchat.so.1", "lib/libzjuchat.so", "lib/libzjuchat.a",
             "lib/pkgconfig/libzjuchat.pc", "bin/zju-chat", "bin/zju-chat-server",
             "bin/zju-mock-upstream"] + [man_dest(p) for p in MAN_PAGES]


def installed_files(top):
    out = []
    for d, _, files in os.walk(top):
        out += [os.path.relpath(os.path.join(d, f), top) for f in files]
    return sorted(out)


class InstallTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="zju-install-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        # A stand-in ldconfig first on PATH, which records that it ran.
        self.fakebin = os.path.join(self.tmp, "fakebin")
        self.ldconfig_log = os.path.join(self.tmp, "ldconfig.log")
        os.makedirs(self.fakebin)
        fake = os.path.join(self.fakebin, "ldconfig")
        with open(fake, "w") as f:
            f.write(f'#!/bin/sh\necho "ldconfig $*" >> {self.ldconfig_log}\n')
        os.chmod(fake, stat.S_IRWXU)

    def make(self, *args, **env_extra):
        env = dict(os.environ, PATH=self.fakebin + ":" + os.environ.get("PATH", "/usr/bin:/bin"),
                   **env_extra)
        subprocess.run(["make", "-s", *args, f"BUILD={BUILD}", f"SAN={SAN}"], cwd=ROOT,
                       check=True, stdout=subprocess.DEVNULL, env=env, timeout=600)

    def ldconfig_runs(self):
        if not os.path.exists(self.ldconfig_log):
            return 0
        with open(self.ldconfig_log) as f:
            return len(f.readlines())

    def test_install_and_readme_example(self):
        prefix = os.path.join(self.tmp, "prefix")
        self.make("install", f"PREFIX={prefix}")
        for rel in INSTALLED:
            self.assertTrue(os.path.exists(os.path.join(prefix, rel)), rel)
        self.assertIn("share/man/man1/zju-chat.1", INSTALLED)
        if os.geteuid() == 0:
            self.assertEqual(self.ldconfig_runs(), 1, "a real install as root runs ldconfig")

        # The library names what it links against: a program linking only
        # -lzjuchat (as pkg-config says for a shared link) must get them.
        dyn = subprocess.run(["readelf", "-d", os.path.join(prefix, "lib", "libzjuchat.so.1")],
                             check=True, capture_output=True, text=True).stdout
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
        for dep in ["libcurl.so", "libevent", "libjansson.so", "libyajl.so"]:
            self.assertTrue(any(n.startswith(dep) for n in needed), f"no NEEDED {dep}: {needed}")

        readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
        example = re.search(r"```c\n(.*?)```", readme, re.S).group(1)
        src = os.path.join(self.tmp, "example.c")
        with open(src, "w", encoding="utf-8") as f:
            f.write(example)
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libzjuchat"],
                               env=env, check=True, capture_output=True,
                               text=True).stdout.split()
        exe = os.path.join(self.tmp, "example")
        cmd = ["cc", "-Wall", "-Werror", src, "-o", exe,
               f"-Wl,-rpath,{prefix}/lib"] + flags
        if SAN:
            cmd.insert(1, "-fsanitize=address,undefined")
        subprocess.run(cmd, check=True, timeout=120)
        ldd = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
        self.assertIn(os.path.join(prefix, "lib", "libzjuchat.so.1"), ldd)

        run_env = {k: v for k, v in os.environ.items() if not k.startswith("ZJU_")}
        r = subprocess.run([exe], env=run_env, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("ZJU_API_KEY", r.stderr)

        # The installed mock is the upstream: what a frontend developer
        # offline runs.
        mock = subprocess.Popen([os.path.join(prefix, "bin", "zju-mock-upstream"),
                                 "--host", "127.0.0.1", "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env)
        try:
            ready, _, _ = select.select([mock.stdout], [], [], 20)
            line = mock.stdout.readline().decode() if ready else ""
            m = re.match(r"listening on (http://127\.0\.0\.1:\d+)", line)
            self.assertTrue(m, f"installed mock did not start: {line!r}")
            run_env.update(ZJU_API_KEY="k-install-not-secret-0123", ZJU_BASE_URL=m.group(1) + "/v1")
            r = subprocess.run([exe], env=run_env, capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("你好", r.stdout)
        finally:
            mock.send_signal(signal.SIGTERM)
            try:
                rc = mock.wait(10)
            except subprocess.TimeoutExpired:
                mock.kill()
                rc = mock.wait()
        self.assertEqual(rc, 0, mock.stderr.read().decode(errors="replace")[-2000:])
        mock.stdout.close()
        mock.stderr.close()

        self.make("uninstall", f"PREFIX={prefix}")
        self.assertEqual(installed_files(prefix), [])
        if os.geteuid() == 0:
            self.assertEqual(self.ldconfig_runs(), 2, "a real uninstall as root runs ldconfig")

    def test_staged_install_runs_no_ldconfig(self):
        stage = os.path.join(self.tmp, "stage")
        self.make("install", "PREFIX=/usr/local", f"DESTDIR={stage}")
        for rel in INSTALLED:
            self.assertTrue(os.path.exists(os.path.join(stage, "usr/local", rel)), rel)
        with open(os.path.join(stage, "usr/local/lib/pkgconfig/libzjuchat.pc")) as f:
            self.assertIn("prefix=/usr/local\n", f.read())
        self.assertEqual(self.ldconfig_runs(), 0, "ldconfig ran for a DESTDIR (staged) install")
        self.make("uninstall", "PREFIX=/usr/local", f"DESTDIR={stage}")
        self.assertEqual(installed_files(stage), [])
        self.assertEqual(self.ldconfig_runs(), 0)


if __name__ == "__main__":
    unittest.main()
