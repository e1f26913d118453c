"""The systemd unit, packaging/zju-chat-server.service, and its env file.

- As installed by `make install`, `systemd-analyze verify` finds nothing to
  say (its ExecStart binary and its Documentation= man page exist), and
  `systemd-analyze security` rates it (the score is printed).
- Its stop settings fit the server's drain: TimeoutStopSec outlasts
  DRAIN_TIMEOUT's default and the supervisor's grace, read from the code.
- packaging/env.example names only variables the server reads.
- This machine has no systemd as PID 1, so the service is run as systemd
  would run it, with what can be reproduced without it: the environment of
  Environment= and EnvironmentFile=, the ExecStart line with its ${VAR}s, an
  unprivileged user without capabilities and with no_new_privs, every mount
  read-only (ProtectSystem=strict) and a private /tmp, an empty working
  directory (RuntimeDirectory=). There it answers, streams through the mock,
  and on SIGTERM to its main process only (KillMode=mixed) lets a stream in
  flight finish and exits 0; a stream that never ends is cut at DRAIN_TIMEOUT
  and the server is gone well within TimeoutStopSec. Without a key it runs
  and says so, as the man page and the env file tell.
"""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from mockctl import Mock
import serverctl

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("ZJU_BUILD_DIR", "build-asan")
BUILD_DIR = os.path.join(ROOT, BUILD)
UNIT = os.path.join(ROOT, "packaging", "zju-chat-server.service")
ENV_EXAMPLE = os.path.join(ROOT, "packaging", "env.example")
KEY = os.environ.get("ZJU_TEST_KEY", "sk-systemd-test-not-a-real-key-0123")
SERVICE_UID = 61998  # an unused uid, as DynamicUser= picks one


def unit_settings(path=UNIT):
    """{"Section": {"Key": [values in order]}} of a unit file."""
    out, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = out.setdefault(line.strip("[]"), {})
                continue
            key, _, value = line.partition("=")
            section.setdefault(key, []).append(value)
    return out


def service(settings=None):
    return (settings or unit_settings())["Service"]


def seconds(value):
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    return int(m.group(1)) * (60 if m.group(2) == "min" else 1)


def config_c_defaults():
    with open(os.path.join(ROOT, "src/server/config.c")) as f:
        config = f.read()
    with open(os.path.join(ROOT, "src/server/main.c")) as f:
        main = f.read()
    drain = int(re.search(r'\{"DRAIN_TIMEOUT", (\d+),', config).group(1))
    grace = int(re.search(r"#define KILL_GRACE_S (\d+)", main).group(1))
    names = set(re.findall(r'(?:getenv|env_dup|env_long)\("([A-Z][A-Z0-9_]*)"', config))
    names |= set(re.findall(r'\{"([A-Z][A-Z0-9_]*)", ', config))
    return drain, grace, names


def env_file_lines(path):
    """NAME=VALUE of an EnvironmentFile, as systemd reads it."""
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            out.append((key.strip(), value))
    return out


def service_environment(env_file):
    """Environment= first, then EnvironmentFile= overriding it."""
    env = {}
    for line in service()["Environment"]:
        for word in shlex.split(line):
            key, _, value = word.partition("=")
            env[key] = value
    env.update(env_file_lines(env_file))
    return env


def exec_start(env):
    """ExecStart's words with ${NAME} expanded, the binary the built one."""
    (line,) = service()["ExecStart"]
    words = [re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), w) for w in line.split()]
    assert words[0] == "/usr/bin/zju-chat-server", words[0]
    return [os.path.join(BUILD_DIR, "zju-chat-server")] + words[1:]


# Run in new mount namespace, as root, before dropping to the service's
# user: every mount read-only but the API file systems (ProtectSystem=strict),
# a fresh /tmp (PrivateTmp=yes). Then setpriv: the unprivileged user with no
# groups, no capabilities in any set, no_new_privs (DynamicUser=yes,
# CapabilityBoundingSet=, NoNewPrivileges=yes); cwd its runtime directory.
CONFINE = r"""
set -e
findmnt -rn -o TARGET | while read -r m; do
    m=$(printf '%b' "$m")
    case $m in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
    mount -o remount,bind,ro "$m" 2>/dev/null || true
done
# the runtime directory lives under the real /tmp: enter it first
cd "$RUNTIME_DIRECTORY"
mount -t tmpfs -o mode=1777 tmpfs /tmp
touch /.zju-rw-probe 2>/dev/null && { echo "root still writable" >&2; exit 99; }
exec setpriv --reuid=$SERVICE_UID --regid=$SERVICE_UID --clear-groups --no-new-privs \
    --inh-caps=-all --bounding-set=-all "$@"
"""


def have_confinement():
    return (os.geteuid() == 0 and shutil.which("unshare") and shutil.which("setpriv")
            and shutil.which("findmnt"))


class ConfinedService:
    """The unit's ExecStart under the reproduced restrictions."""

    def __init__(self, env_file_text):
        self.tmp = tempfile.mkdtemp(prefix="zju-systemd-")
        self.env_file = os.path.join(self.tmp, "env")
        with open(self.env_file, "w") as f:
            f.write(env_file_text)
        os.chmod(self.env_file, 0o640)  # as packaged: the service cannot read it
        self.runtime = os.path.join(self.tmp, "run")
        os.makedirs(self.runtime)
        os.chown(self.runtime, SERVICE_UID, SERVICE_UID)
        self.env = service_environment(self.env_file)
        self.argv = exec_start(self.env)
        log_dir = os.environ.get("ZJU_E2E_LOG_DIR") or self.tmp
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"systemd-service-{os.getpid()}-{id(self)}.log")
        self.proc = None

    def start(self):
        env = {"PATH": "/usr/bin:/bin", **self.env,
               "RUNTIME_DIRECTORY": self.runtime, "SERVICE_UID": str(SERVICE_UID)}
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            if k in os.environ:
                env[k] = os.environ[k]
        with open(self.log_path, "wb") as log:
            # unshare execs the shell, so the server ends up with this pid:
            # the service's main process
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", CONFINE, "sh",
                 *self.argv], env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        url_re = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
        deadline = time.time() + 20
        while time.time() < deadline:
            m = url_re.search(self.log())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited {self.proc.returncode}: {self.log()}")
            time.sleep(0.05)
        raise AssertionError("service did not listen: " + self.log())

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.tmp, True)


class UnitFileTest(unittest.TestCase):
    def test_installed_unit_verifies(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("no systemd-analyze")
        prefix = tempfile.mkdtemp(prefix="zju-unit-")
        self.addCleanup(shutil.rmtree, prefix, True)
        san = "1" if "asan" in BUILD else ""
        # a stand-in ldconfig: an install into a temporary prefix has no
        # business with the machine's loader cache
        fakebin = os.path.join(prefix, "fakebin")
        os.makedirs(fakebin)
        with open(os.path.join(fakebin, "ldconfig"), "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(os.path.join(fakebin, "ldconfig"), 0o755)
        subprocess.run(["make", "-s", "install", f"PREFIX={prefix}/usr", f"BUILD={BUILD}",
                        f"SAN={san}"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                       timeout=600, env=dict(os.environ, PATH=fakebin + ":" + os.environ["PATH"]))
        prefix += "/usr"
        unit = os.path.join(prefix, "lib/systemd/system/zju-chat-server.service")
        # verify checks that ExecStart's binary exists and that
        # Documentation=man:zju-chat-server(8) is a page man finds
        r = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True,
                           env=dict(os.environ, MANPATH=os.path.join(prefix, "share/man")))
        self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))
        # and it does complain about a unit that is wrong
        bad = os.path.join(prefix, "bad.service")
        with open(unit) as f, open(bad, "w") as out:
            out.write(f.read().replace("ExecStart=" + prefix, "ExecStart=/nonexistent"))
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", bad], capture_output=True,
                           text=True)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)

        r = subprocess.run(["systemd-analyze", "security", "--offline=yes", unit],
                           capture_output=True, text=True)
        m = re.search(r"Overall exposure level for zju-chat-server.service: ([\d.]+) (\w+)",
                      r.stdout + r.stderr)
        self.assertTrue(m, r.stdout[-2000:] + r.stderr)
        print(f"\n  systemd-analyze security: exposure {m.group(1)} {m.group(2)}", end=" ")
        self.assertLessEqual(float(m.group(1)), 2.0)

    def test_hardening(self):
        s = service()
        want = {"DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
                "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6", "CapabilityBoundingSet": "",
                "MemoryDenyWriteExecute": "yes", "LockPersonality": "yes",
                "RestrictNamespaces": "yes", "EnvironmentFile": "/etc/zju-chat/env",
                "Restart": "on-failure", "KillSignal": "SIGTERM", "KillMode": "mixed"}
        for key, value in want.items():
            self.assertEqual(s.get(key), [value], key)
        self.assertIn("@system-service", s["SystemCallFilter"])
        # exit 2 is a configuration error: restarting cannot fix it
        self.assertEqual(s["RestartPreventExitStatus"], ["2"])
        self.assertRegex(s["ExecStart"][0], r"^/usr/bin/zju-chat-server ")

    def test_stop_timeout_outlasts_the_drain(self):
        drain, grace, _ = config_c_defaults()
        stop = seconds(service()["TimeoutStopSec"][0])
        # the server is gone by DRAIN_TIMEOUT + the supervisor's grace; systemd
        # must not SIGKILL it before, and some seconds of slack for a busy host
        self.assertGreaterEqual(stop, drain + grace + 5, (stop, drain, grace))

    def test_env_example_names_known_variables(self):
        _, _, names = config_c_defaults()
        unit_env = {w.split("=")[0] for line in service()["Environment"] for w in line.split()}
        with open(ENV_EXAMPLE) as f:
            text = f.read()
        used = re.findall(r"(?m)^#?([A-Z][A-Z0-9_]*)=", text)
        self.assertIn("ZJU_API_KEY", used)
        for name in used:
            self.assertIn(name, names | unit_env, f"env.example sets {name}, which nothing reads")
        # shipped with every setting commented out: the defaults, no key
        self.assertEqual(env_file_lines(ENV_EXAMPLE), [])


@unittest.skipUnless(have_confinement(), "needs root, unshare, setpriv")
class ServiceRunTest(unittest.TestCase):
    def service(self, text):
        svc = ConfinedService(text)
        self.addCleanup(svc.stop)
        return svc.start()

    def stop_and_time(self, svc, timeout):
        t0 = time.time()
        svc.proc.send_signal(signal.SIGTERM)  # KillMode=mixed: the main process only
        try:
            rc = svc.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"still running {timeout}s after SIGTERM: {svc.log()[-2000:]}")
        return rc, time.time() - t0

    def test_serves_confined_and_drains_a_stream_on_sigterm(self):
        with Mock("--key", KEY) as m:
            svc = self.service(f"# as an admin writes it\nZJU_API_KEY={KEY}\n"
                               f"ZJU_BASE_URL={m.url}\nPORT=0\n")
            self.assertEqual(svc.argv[1:], ["-b", "127.0.0.1:0"])  # LISTEN_HOST's default
            # the service's user, not root, and nothing it can write on /
            status = open(f"/proc/{svc.proc.pid}/status").read()
            self.assertRegex(status, rf"(?m)^Uid:\s+{SERVICE_UID}\s")
            self.assertRegex(status, r"(?m)^CapEff:\s+0+$")
            self.assertRegex(status, r"(?m)^NoNewPrivs:\s+1$")
            r = serverctl.request(svc.port, "GET", "/healthz")
            self.assertEqual(r.status, 200)
            self.assertTrue(r.json()["key_set"])
            r = serverctl.chat(svc.port, {"user_content": "hi"})
            self.assertEqual(r.status, 200, r.body)

            # a stream of 2 s in flight when systemctl stop comes
            result = {}
            first = threading.Event()

            def run():
                result["s"] = serverctl.stream(
                    svc.port, {"user_content": "hi", "stream": True,
                               "model": serverctl.model(events=20, delay=100)},
                    timeout=30, on_chunk=lambda *_: first.set())

            t = threading.Thread(target=run)
            t.start()
            self.assertTrue(first.wait(10))
            rc, took = self.stop_and_time(svc, seconds(service()["TimeoutStopSec"][0]))
            t.join(30)
            self.assertEqual(rc, 0, svc.log()[-2000:])
            s = result["s"]
            self.assertEqual((s.status, s.error, s.errors()), (200, None, []), s.raw[-500:])
            self.assertTrue(s.clean_end)
            finish = [c.get("finish_reason") for e in s.json_events() for c in e.get("choices", [])]
            self.assertEqual(finish[-1], "stop", s.raw[-500:])
            self.assertGreaterEqual(len(s.json_events()), 20)
            self.assertIn("server stopped", svc.log())
            print(f"\n  SIGTERM with a 2 s stream in flight: stream complete, exit 0 after "
                  f"{took:.1f}s", end=" ")

    def test_a_stream_that_never_ends_is_cut_within_timeout_stop_sec(self):
        with Mock("--key", KEY) as m:
            svc = self.service(f"ZJU_API_KEY={KEY}\nZJU_BASE_URL={m.url}\nPORT=0\n"
                               "DRAIN_TIMEOUT=1\n")
            result = {}
            first = threading.Event()

            def run():
                try:
                    result["s"] = serverctl.stream(
                        svc.port, {"user_content": "hi", "stream": True,
                                   "model": serverctl.model(fault="hang_mid")},
                        timeout=30, on_chunk=lambda *_: first.set())
                except Exception as e:  # the cut connection
                    result["e"] = e

            t = threading.Thread(target=run)
            t.start()
            self.assertTrue(first.wait(10))
            _, grace, _ = config_c_defaults()
            rc, took = self.stop_and_time(svc, seconds(service()["TimeoutStopSec"][0]))
            t.join(30)
            self.assertLessEqual(took, 1 + grace + 1, svc.log()[-2000:])
            self.assertIn("drain deadline reached", svc.log())
            print(f"\n  SIGTERM, DRAIN_TIMEOUT=1, a hanging stream: exit {rc} after {took:.1f}s",
                  end=" ")

    def test_without_a_key_it_runs_and_says_so(self):
        with open(ENV_EXAMPLE) as f:
            shipped = f.read()
        svc = self.service(shipped + "PORT=0\n")  # the env file as installed
        r = serverctl.request(svc.port, "GET", "/healthz")
        self.assertEqual((r.status, r.json()["key_set"]), (200, False))
        r = serverctl.chat(svc.port, {"user_content": "hi"})
        self.assertEqual(r.status, 500)
        self.assertIn("ZJU_API_KEY", r.json()["error"])
        self.assertIn("WARNING: ZJU_API_KEY is not set", svc.log())
        rc, _ = self.stop_and_time(svc, 45)
        self.assertEqual(rc, 0)


if __name__ == "__main__":
    unittest.main()
