"""Process-level defects found running the server and the CLI as users do
(issue 9): a second server on a port in use must fail instead of sharing the
port, the workers of one server still share it (the kernel spreads
connections over them) across crashes and restarts, an IPv6 listen address
is printed as a usable URL, and the CLI reads ./.env like the server does,
with the environment winning over the file."""

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import serverctl
from serverctl import (KEY, Mock, MockCase, RawConn, Server, base_env, model, refuses, request,
                       wait_until)
from test_server_process import owner_of, server_socket_inodes

CLI = os.path.join(serverctl.BUILD_DIR, "zju-chat")


def healthz_pid(port, host="127.0.0.1"):
    """The pid of the worker that answered /healthz on a new connection."""
    r = request(port, "GET", "/healthz", timeout=5, host=host)
    if r.status != 200:
        raise AssertionError(f"/healthz answered {r.status}: {r.body[:200]!r}")
    return r.json()["pid"]


def restarted(pids, victim):
    """Two workers, the victim not among them (one /proc snapshot)."""
    return len(pids) == 2 and victim not in pids


def pids_of_new_connections(port, n=40):
    return [healthz_pid(port) for _ in range(n)]


class SecondServerOnTheSamePort(MockCase):
    FIRST_ORIGIN = "https://a.example"

    def preflight_origin(self, port):
        """Access-Control-Allow-Origin of a preflight from another site."""
        r = request(port, "OPTIONS", "/api/chat", headers={
            "Origin": "https://other.example", "Access-Control-Request-Method": "POST"})
        return r.header("access-control-allow-origin")

    def check_refused(self, first, bind):
        second = Server(self.mock.base_url, env={"CORS_ORIGINS": "*", "PORT": first.port},
                        workers=2, bind=False, args=["-b", bind])
        second.start(wait=False)
        try:
            rc = second.wait_exit(10)
            self.assertIsNotNone(rc, f"a second server on {bind} is running, sharing the port")
            self.assertNotEqual(rc, 0)
            log = second.log()
            self.assertIn("address already in use", log.lower(), log[-1500:])
            self.assertIn(bind, log, "the error names the address")
            second.check_log()
        finally:
            second.kill()

    def test_second_server_fails_and_the_first_keeps_every_request(self):
        first = Server(self.mock.base_url, env={"CORS_ORIGINS": self.FIRST_ORIGIN},
                       workers=2).start()
        try:
            workers = first.workers_pids()
            self.assertEqual(len(workers), 2, workers)
            # the same address, and the wildcard that covers it
            for bind in (f"127.0.0.1:{first.port}", f"0.0.0.0:{first.port}"):
                with self.subTest(bind=bind):
                    self.check_refused(first, bind)
            for i in range(20):
                self.assertIn(healthz_pid(first.port), workers, f"request {i}: not the first server")
                self.assertNotEqual(self.preflight_origin(first.port), "*",
                                    f"request {i} answered with the second server's CORS")
        finally:
            first.stop()


    def test_two_servers_started_at_the_same_instant_one_runs(self):
        # Without the startup lock both could prove the port free before
        # either listened, then share it (seen in 1 of 40 rounds).
        for round_ in range(8):
            port = serverctl.free_port()
            both = [Server(self.mock.base_url, env={"PORT": port}, workers=2, bind=False,
                           args=["-b", f"127.0.0.1:{port}"]) for _ in range(2)]
            for s in both:
                s.start(wait=False)
            try:
                self.assertTrue(wait_until(lambda: any(s.proc.poll() is not None for s in both), 10),
                                f"round {round_}: both servers run on port {port}")
                gone = [s for s in both if s.proc.poll() is not None]
                self.assertEqual(len(gone), 1, f"round {round_}: both exited")
                self.assertNotEqual(gone[0].proc.returncode, 0)
                self.assertIn("address already in use", gone[0].log().lower())
                other = next(s for s in both if s is not gone[0])
                other.wait_ready()
            finally:
                for s in both:
                    if s.proc.poll() is None:
                        s.stop()
                    else:
                        s.kill()


class WorkersShareThePort(MockCase):
    def test_new_connections_spread_over_both_workers(self):
        with Server(self.mock.base_url, workers=2) as srv:
            workers = srv.workers_pids()
            seen = pids_of_new_connections(srv.port)
            self.assertEqual(set(seen), set(workers), f"40 connections went to {sorted(set(seen))}")

    def test_crashed_worker_restarted_and_serving_on_the_same_port(self):
        with Server(self.mock.base_url, workers=2) as srv:
            victim = srv.workers_pids()[0]
            os.kill(victim, signal.SIGKILL)
            self.assertTrue(srv.wait_log("killed by signal 9"), srv.log()[-1500:])
            # One snapshot per check: two reads could see the victim still
            # listed and then already reaped, before its replacement exists.
            self.assertTrue(
                wait_until(lambda: restarted(srv.workers_pids(), victim), 5),
                f"worker not restarted: {srv.workers_pids()}")
            workers = srv.workers_pids()
            seen = pids_of_new_connections(srv.port)
            self.assertEqual(set(seen), set(workers), "the restarted worker serves its share")

    def test_worker_stopped_alone_is_replaced(self):
        # A worker told to stop by itself (kill -TERM <worker>) drains and
        # exits 0. The supervisor keeps its socket, where the kernel goes on
        # queueing a share of the connections: a replacement must serve them.
        with Server(self.mock.base_url, workers=2) as srv:
            victim = srv.workers_pids()[0]
            os.kill(victim, signal.SIGTERM)
            self.assertTrue(
                wait_until(lambda: restarted(srv.workers_pids(), victim), 5),
                f"worker not replaced: {srv.workers_pids()}")
            t0 = time.monotonic()
            seen = pids_of_new_connections(srv.port)
            self.assertLess(time.monotonic() - t0, 10)
            self.assertEqual(set(seen), set(srv.workers_pids()))

    def test_drain_refuses_new_connections_while_a_worker_awaits_restart(self):
        # The supervisor holds every worker's socket; on SIGTERM it must let
        # go of all of them, the dead worker's too, or the kernel would queue
        # connections there that nobody ever accepts.
        srv = Server(self.mock.base_url, env={"DRAIN_TIMEOUT": "10"}, workers=2).start()
        conns = []
        try:
            workers = srv.workers_pids()
            # streams until one worker has one, so the server stays up draining
            owner = None
            while owner is None and len(conns) < 20:
                c = RawConn(srv.port, timeout=10)
                c.send(c.post_chat({"user_content": "hi", "stream": True,
                                    "model": model(events=30, delay=100)}, keep_alive=False))
                c.unread(c.read_until(b"data: ", 5))
                conns.append(c)
                inode = server_socket_inodes(srv.port).get(c.sock.getsockname()[1], -1)
                owner = owner_of(workers, inode)
            self.assertIsNotNone(owner, "could not map a stream to its worker")
            os.kill(next(p for p in workers if p != owner), signal.SIGKILL)
            srv.send_signal(signal.SIGTERM)  # well before the 100 ms restart
            self.assertTrue(wait_until(lambda: refuses(srv.port), 2),
                            "new connections still accepted while draining")
            self.assertTrue(srv.proc.poll() is None, "the stream should keep it draining")
            self.assertEqual(srv.wait_exit(15), 0, srv.log()[-2000:])
        finally:
            for c in conns:
                c.close()
            srv.stop()


def have_ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


class Ipv6Listen(MockCase):
    @unittest.skipUnless(have_ipv6_loopback(), "no IPv6 loopback on this machine")
    def test_bracketed_url_and_serves_on_ipv6_loopback(self):
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        s.close()
        srv = Server(self.mock.base_url, env={"PORT": port}, workers=2, bind=False,
                     args=["-b", f"[::1]:{port}"])
        srv.start(wait=False)
        try:
            def up():
                try:
                    return healthz_pid(port, host="::1")
                except OSError:
                    return None

            self.assertTrue(wait_until(up, 15, step=0.05), srv.log()[-2000:])
            self.assertIn(f"listening on http://[::1]:{port}\n", srv.log())
            self.assertNotIn(f"http://::1:{port}", srv.log())
            conn = http.client.HTTPConnection("::1", port, timeout=10)
            conn.request("POST", "/api/chat", body=b'{"user_content": "hi"}',
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            conn.close()
            self.assertEqual(r.status, 200)
            self.assertTrue(refuses(port), "bound to ::1 only, not 127.0.0.1")
        finally:
            srv.stop()


class CliReadsDotEnv(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(CLI, os.X_OK):
            raise AssertionError(f"{CLI} is not built")
        cls.mock = Mock().start()  # requires KEY, like the real API

    @classmethod
    def tearDownClass(cls):
        cls.mock.stop()

    def run_cli(self, env, cwd, *args):
        p = subprocess.run([CLI, "--retries", "0", *args], env=env, cwd=cwd,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=15)
        # kept with the run's logs, for the final key scan
        fd, path = tempfile.mkstemp(prefix="cli-", suffix=".out", dir=serverctl.LOG_DIR)
        with os.fdopen(fd, "wb") as f:
            f.write(p.stdout + b"\n" + p.stderr)
        return p

    def workdir(self, dotenv):
        d = tempfile.mkdtemp(prefix="cli-cwd-", dir=serverctl.LOG_DIR)
        with open(os.path.join(d, ".env"), "w") as f:
            f.write(dotenv)
        return d

    def asked(self, p):
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        self.assertTrue(p.stdout.strip(), "no answer printed")

    def test_key_and_base_url_from_dotenv_in_working_directory(self):
        cwd = self.workdir(f"# settings\nexport ZJU_API_KEY='{KEY}'\nZJU_BASE_URL={self.mock.url}\n")
        # without the file: exit 3 (no key), or 4 (the default upstream)
        self.asked(self.run_cli(base_env(), cwd, "--no-stream", "hello"))

    def test_environment_wins_over_dotenv(self):
        # the key only in the file, a dead upstream in the file and the
        # mock in the environment
        cwd = self.workdir(f"ZJU_API_KEY={KEY}\nZJU_BASE_URL=http://127.0.0.1:1/v1\n")
        env = dict(base_env(), ZJU_BASE_URL=self.mock.url)
        self.asked(self.run_cli(env, cwd, "--no-stream", "hello"))
        # a wrong key in the file, the right one in the environment
        cwd = self.workdir("ZJU_API_KEY=sk-wrong-key-from-dotenv-0000\n")
        env = dict(base_env(), ZJU_API_KEY=KEY, ZJU_BASE_URL=self.mock.url)
        self.asked(self.run_cli(env, cwd, "--no-stream", "hello"))

    def test_env_file_option(self):
        cwd = self.workdir("ZJU_BASE_URL=http://127.0.0.1:1/v1\n")  # not read with --env-file
        other = self.workdir(f"ZJU_API_KEY={KEY}\nZJU_BASE_URL={self.mock.url}\n")
        self.asked(self.run_cli(base_env(), cwd, "--env-file", os.path.join(other, ".env"), "hi"))
        missing = self.run_cli(base_env(), cwd, "--env-file", "/nonexistent/.env", "hi")
        self.assertEqual(missing.returncode, 3, missing.stderr)
        self.assertIn(b"/nonexistent/.env", missing.stderr)

    def test_malformed_dotenv_is_a_configuration_error(self):
        cwd = self.workdir(f"ZJU_API_KEY={KEY}\nthis line has no equals sign\n")
        p = self.run_cli(base_env(), cwd, "hi")
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn(b".env:2: expected KEY=VALUE", p.stderr)
        self.assertNotIn(KEY.encode(), p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()
