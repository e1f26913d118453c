"""`make install PREFIX=...` installs a usable library and the commands: the
README's example and zjuchat(3)'s compile against the installed header through
pkg-config, link the shared library (which names its own dependencies), and
run against the installed mock upstream; the man pages of man/ are installed
and found by man; the systemd unit (its ExecStart at the installed server) and
the example env file too; a real install runs ldconfig, a staged one (DESTDIR)
does not; `make uninstall` removes it all. The man pages say what the code
does: every variable the server's config.c reads is in zju-chat-server(8),
every function of zjuchat.h in zjuchat(3), every option of --help in the
command's page; they render without groff warnings and lexgrog reads them."""
import glob
import os
import re
import select
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("ZJU_BUILD_DIR", "build-asan")
SAN = "1" if "asan" in BUILD else ""
MAN_PAGES = sorted(glob.glob(os.path.join(ROOT, "man", "*.[1-8]")))


def man_dest(page):
    return f"share/man/man{page.rsplit('.', 1)[1]}/{os.path.basename(page)}"


INSTALLED = ["include/zjuchat.h", "lib/libzjuchat.so.1", "lib/libzjuchat.so", "lib/libzjuchat.a",
             "lib/pkgconfig/libzjuchat.pc", "bin/zju-chat", "bin/zju-chat-server",
             "bin/zju-mock-upstream", "lib/systemd/system/zju-chat-server.service",
             "share/doc/zju-chat/env.example"] + [man_dest(p) for p in MAN_PAGES]
# The pages the issue names, by section.
MAN_NAMES = {"zju-chat": "1", "zjuchat": "3", "zju-chat-server": "8"}


def rendered(page, width=200):
    """The page as man shows it (plain text, no overstriking)."""
    env = {k: v for k, v in os.environ.items() if k != "MAN_KEEP_FORMATTING"}
    env.update(MANWIDTH=str(width), LC_ALL="C.UTF-8")
    out = subprocess.run(["man", "-l", page], env=env, check=True, capture_output=True,
                         text=True).stdout
    return re.sub(r".\x08", "", out)  # overstriking, should any be left


def man_example(page):
    """zjuchat(3)'s EXAMPLES program as a reader copies it from the screen."""
    text = rendered(page)
    start = text.index("#include <stdio.h>", text.index("EXAMPLES"))
    end = text.index("SEE ALSO", start)
    return textwrap.dedent(text[start:end]).rstrip() + "\n"


def header_groups():
    """zjuchat.h's functions by the banner comment they stand under."""
    with open(os.path.join(ROOT, "include/zjuchat.h")) as f:
        header = f.read()
    parts = re.split(r"/\* -{60,} \*/\n/\* (.+?) +\*/\n/\* -{60,} \*/", header)
    return {title: re.findall(r"(?m)^[a-z][^;(]*?\b\(?\*?(zjuchat_\w+)\)?\(", decls)
            for title, decls in zip(parts[1::2], parts[2::2])}


def header_functions():
    return {fn for fns in header_groups().values() for fn in fns if not fn.endswith("_fn")}


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
        for name, sec in MAN_NAMES.items():
            self.assertIn(f"share/man/man{sec}/{name}.{sec}", INSTALLED)
            # man finds each page in its section under the prefix
            r = subprocess.run(["man", "-w", sec, name], capture_output=True, text=True,
                               env=dict(os.environ, MANPATH=os.path.join(prefix, "share/man")))
            self.assertEqual(r.stdout.strip(),
                             os.path.join(prefix, f"share/man/man{sec}/{name}.{sec}"), r.stderr)
        with open(os.path.join(prefix, "lib/systemd/system/zju-chat-server.service")) as f:
            unit = f.read()
        self.assertRegex(unit, rf"(?m)^ExecStart={re.escape(prefix)}/bin/zju-chat-server ")
        if os.geteuid() == 0:
            self.assertEqual(self.ldconfig_runs(), 1, "a real install as root runs ldconfig")

        # The library names what it links against: a program linking only
        # -lzjuchat (as pkg-config says for a shared link) must get them.
        dyn = subprocess.run(["readelf", "-d", os.path.join(prefix, "lib", "libzjuchat.so.1")],
                             check=True, capture_output=True, text=True).stdout
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
        for dep in ["libcurl.so", "libevent", "libjansson.so", "libyajl.so"]:
            self.assertTrue(any(n.startswith(dep) for n in needed), f"no NEEDED {dep}: {needed}")

        # It exports the header's functions and nothing else: internals
        # (zjuchat__*) are no ABI a program may come to depend on.
        dynsym = subprocess.run(["nm", "-D", "--defined-only",
                                 os.path.join(prefix, "lib", "libzjuchat.so.1")],
                                check=True, capture_output=True, text=True).stdout
        exported = {line.split()[-1] for line in dynsym.splitlines() if line.strip()}
        self.assertEqual(exported, header_functions())

        readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
        examples = {"readme": re.search(r"```c\n(.*?)```", readme, re.S).group(1),
                    "man3": man_example(os.path.join(prefix, "share/man/man3/zjuchat.3"))}
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libzjuchat"],
                               env=env, check=True, capture_output=True,
                               text=True).stdout.split()
        exes = {}
        for name, example in examples.items():
            src = os.path.join(self.tmp, f"{name}.c")
            with open(src, "w", encoding="utf-8") as f:
                f.write(example)
            exe = exes[name] = os.path.join(self.tmp, name)
            cmd = ["cc", "-Wall", "-Werror", src, "-o", exe,
                   f"-Wl,-rpath,{prefix}/lib"] + flags
            if SAN:
                cmd.insert(1, "-fsanitize=address,undefined")
            subprocess.run(cmd, check=True, timeout=120)
            ldd = subprocess.run(["ldd", exe], capture_output=True, text=True).stdout
            self.assertIn(os.path.join(prefix, "lib", "libzjuchat.so.1"), ldd)

        run_env = {k: v for k, v in os.environ.items() if not k.startswith("ZJU_")}
        for exe in exes.values():
            r = subprocess.run([exe], env=run_env, capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1, exe)
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
            r = subprocess.run([exes["readme"]], env=run_env, capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("你好", r.stdout)
            # zjuchat(3): a non-stream answer with its usage, then a stream
            r = subprocess.run([exes["man3"]], env=run_env, capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, r"\A.+\ntokens: [1-9][0-9]*\n.+\n\Z")
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

    def test_build_takes_packagers_flags(self):
        """CPPFLAGS, CFLAGS and LDFLAGS from the environment reach every
        compile and link, as dpkg-buildflags hands them to a package build
        (-D_FORTIFY_SOURCE=2 comes in CPPFLAGS)."""
        build = os.path.join(self.tmp, "flags-build")
        env = dict(os.environ, CPPFLAGS="-DZJU_PROBE_CPPFLAGS", CFLAGS="-DZJU_PROBE_CFLAGS",
                   LDFLAGS="-Wl,--defsym=zju_probe_ldflags=0")
        r = subprocess.run(["make", "-n", f"BUILD={build}", "all"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr[-2000:])
        compiles = [line for line in r.stdout.splitlines() if " -c " in line]
        outputs = r" -o \S*/(zju-chat|zju-chat-server|zju-mock-upstream|libzjuchat\.so\.1) "
        links = [line for line in r.stdout.splitlines() if re.search(outputs, line)]
        self.assertGreater(len(compiles), 20)
        self.assertEqual(len(links), 4, r.stdout[-3000:])
        for line in compiles:
            self.assertIn("-DZJU_PROBE_CPPFLAGS", line)
            self.assertIn("-DZJU_PROBE_CFLAGS", line)
        for line in links:
            self.assertIn("zju_probe_ldflags", line)

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


def section(text, title):
    """A top-level section of a rendered page: from its heading to the next."""
    m = re.search(rf"(?m)^{re.escape(title)}\n(.*?)(?=^[A-Z][A-Z ]+\n|\Z)", text, re.S)
    return m.group(1) if m else ""


def help_options(exe):
    """The long options --help lists (zju-mock-upstream: in its usage lines)."""
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    out = r.stdout + r.stderr
    opts = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z][a-z-]*)", out))
    opts |= set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", out.split("\n\n")[0]))
    return sorted(opts | {"--help"})


class ManPageTest(unittest.TestCase):
    """The man pages against the code they describe, and as man shows them."""

    @classmethod
    def setUpClass(cls):
        cls.pages = {os.path.basename(p): p for p in MAN_PAGES}

    def page(self, name):
        self.assertIn(name, self.pages, f"man/{name} is missing")
        return rendered(self.pages[name])

    def test_pages_render_without_warnings(self):
        for name, sec in MAN_NAMES.items():
            self.assertIn(f"{name}.{sec}", self.pages)
        for name, path in self.pages.items():
            # -t: zjuchat(3) has a table ('\" t on its first line tells man)
            r = subprocess.run(["groff", "-t", "-man", "-Tutf8", "-ww", "-z", path],
                               capture_output=True, text=True)
            self.assertEqual((r.returncode, r.stderr), (0, ""), name)
            for width in ("80", "72"):
                r = subprocess.run(["man", "--warnings", "-l", "-Tutf8", path],
                                   capture_output=True, text=True,
                                   env=dict(os.environ, MANWIDTH=width, LC_ALL="C.UTF-8"))
                self.assertEqual((r.returncode, r.stderr), (0, ""), f"{name} at {width} columns")
            r = subprocess.run(["lexgrog", path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn(f'"{name.rsplit(".", 1)[0]} - ', r.stdout)

    def test_server_page_has_every_variable_of_config_c(self):
        with open(os.path.join(ROOT, "src/server/config.c")) as f:
            code = f.read()
        names = set(re.findall(r'(?:getenv|env_dup|env_long)\("([A-Z][A-Z0-9_]*)"', code))
        names |= set(re.findall(r'\{"([A-Z][A-Z0-9_]*)", ', code))  # the table of longs
        self.assertIn("ZJU_API_KEY", names)
        self.assertIn("DRAIN_TIMEOUT", names)
        env = section(self.page("zju-chat-server.8"), "ENVIRONMENT")
        readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
        for name in sorted(names):
            self.assertRegex(env, rf"(?m)^\s+(?:\S+, )*{name}\b", f"{name} not in ENVIRONMENT")
            self.assertIn(f"`{name}`", readme, f"{name} not in the README")

    def test_pages_have_every_option_of_help(self):
        for exe, page in (("zju-chat-server", "zju-chat-server.8"), ("zju-chat", "zju-chat.1"),
                          ("zju-mock-upstream", "zju-mock-upstream.1")):
            opts = help_options(os.path.join(ROOT, BUILD, exe))
            self.assertIn("--help", opts)
            text = section(self.page(page), "OPTIONS")
            for opt in opts:
                self.assertRegex(text, rf"(?<![\w-]){opt}(?![\w-])", f"{exe} {opt} not in {page}")

    def test_library_page_has_every_function_in_the_headers_groups(self):
        """zjuchat(3) lists each function of zjuchat.h in the group (a
        subsection) of the header's banner comment it stands under."""
        groups = header_groups()
        self.assertGreaterEqual(len(groups), 7, list(groups))
        text = section(self.page("zjuchat.3"), "DESCRIPTION")
        titles = re.findall(r"(?m)^   (\S.*)$", text)
        self.assertEqual([t for t in titles if t in groups], list(groups))
        total = 0
        for title, funcs in groups.items():
            self.assertTrue(funcs, title)
            start = text.index(f"   {title}\n")
            nxt = [text.index(f"   {t}\n") for t in titles if text.index(f"   {t}\n") > start]
            body = text[start:min(nxt) if nxt else len(text)]
            for fn in funcs:
                self.assertRegex(body, rf"\b{fn}\(", f"{fn} not in zjuchat(3) under {title}")
            total += len(funcs)
        self.assertGreaterEqual(total, 60)


if __name__ == "__main__":
    unittest.main()
