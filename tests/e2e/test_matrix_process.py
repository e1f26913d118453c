"""Fault matrix, process rows (docs/FAULTS.md): descriptor exhaustion, and
SIGTERM with hundreds of streams in flight (with a drain deadline long
enough for all, and one too short). A worker killed with SIGKILL
mid-stream is test_server_process.WorkerCrash."""

import json
import resource
import selectors
import signal
import socket
import time
import unittest

from serverctl import (
    KEY,
    MockCase,
    RawConn,
    Server,
    chat,
    dechunk,
    model,
    refuses,
    split_frames,
    stream,
    wait_until,
)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime + stime, USER_HZ




class Swarm:
    """n stream requests on non-blocking sockets, read by one selector loop."""

    def __init__(self, port, n, payload):
        body = json.dumps(payload).encode()
        self.req = (
            b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        ) + body
        self.sel = selectors.DefaultSelector()
        self.bufs = [bytearray() for _ in range(n)]
        self.closed = [False] * n
        self.socks = {}
        for i in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.sel.register(s, selectors.EVENT_WRITE, i)
            self.socks[i] = s

    def pump(self, until, timeout):
        """Runs the loop until until() is true or timeout; returns until()."""
        deadline = time.monotonic() + timeout
        while self.socks and not until() and time.monotonic() < deadline:
            for key, ev in self.sel.select(timeout=0.2):
                s, i = key.fileobj, key.data
                if ev & selectors.EVENT_WRITE:
                    if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self._close(s, i)
                        continue
                    s.send(self.req)
                    self.sel.modify(s, selectors.EVENT_READ, i)
                else:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if data:
                        self.bufs[i] += data
                    else:
                        self._close(s, i)
        return until()

    def _close(self, s, i):
        self.sel.unregister(s)
        s.close()
        del self.socks[i]
        self.closed[i] = True

    def all_started(self):
        return all(b"data: " in b for b in self.bufs)

    def all_closed(self):
        return all(self.closed)

    def close(self):
        for s in list(self.socks.values()):
            s.close()
        self.sel.close()

    def outcome(self, i):
        """('complete', n_events) / ('error', n_events) / ('broken', why)."""
        raw = bytes(self.bufs[i])
        head, _, rest = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return ("broken", head[:80])
        body, done = dechunk(rest)
        if not done:
            return ("broken", "chunked body not terminated")
        try:
            data = [json.loads(v) for k, v in split_frames(body) if k == "data"]
        except (AssertionError, ValueError) as e:
            return ("broken", str(e)[:120])
        errs = [j for j, d in enumerate(data) if isinstance(d, dict) and "error" in d]
        if errs:
            return ("error", len(data)) if errs == [len(data) - 1] else ("broken", "error event not last")
        return ("complete", len(data))




class DescriptorExhaustion(MockCase):
    LIMIT = 64

    def test_keeps_serving_what_it_has_and_recovers(self):
        def low_fd_limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.LIMIT, self.LIMIT))

        srv = Server(self.mock.base_url, env={"REQUEST_TIMEOUT": "30"}, workers=1, preexec_fn=low_fd_limit).start()
        held = []
        try:
            worker = srv.workers_pids()[0]
            # A stream in flight before the descriptors run out.
            c = RawConn(srv.port, timeout=10)
            c.send(c.post_chat({"user_content": "hi", "stream": True, "model": model(events=30, delay=100)}, keep_alive=False))
            c.unread(c.read_until(b"data: ", 5))
            for _ in range(2 * self.LIMIT):
                held.append(socket.create_connection(("127.0.0.1", srv.port), timeout=2))
            self.assertTrue(wait_until(lambda: len(srv_fds(worker)) >= self.LIMIT - 2, 3),
                            f"worker never ran out of descriptors ({len(srv_fds(worker))} open)")
            cpu0 = cpu_seconds(worker)
            time.sleep(1.0)
            spent = cpu_seconds(worker) - cpu0
            self.assertLess(spent, 0.5, f"worker busy-loops while out of descriptors ({spent:.2f} s CPU in 1 s)")
            r = c.read_response(timeout=10)
            self.assertEqual(r.status, 200)
            data = [json.loads(v) for k, v in split_frames(r.body) if k == "data"]
            self.assertFalse(any("error" in d for d in data), r.body[-300:])
            self.assertEqual(len(data), 36)  # role, 4 reasoning, 30 content, finish
            c.close()
            for s in held:
                s.close()
            held = []
            t0 = time.monotonic()
            self.assertTrue(wait_until(srv.healthy, 5), "not serving after descriptors were freed")
            s = stream(srv.port, {"user_content": "hi", "stream": True, "model": model(events=3)}, timeout=10)
            self.assertEqual(s.status, 200)
            self.assertTrue(s.clean_end, s.error)
            self.assertEqual(s.errors(), [])
            self.assertEqual(chat(srv.port, {"user_content": "hi"}).status, 200)
            self.assertLess(time.monotonic() - t0, 6)
            self.assertEqual(srv.workers_pids(), [worker], "the worker died instead of coping")
        finally:
            for s in held:
                s.close()
            srv.stop()


def srv_fds(pid):
    import os

    try:
        return os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []


class DrainMany(MockCase):
    N = 250

    def test_sigterm_with_hundreds_of_streams_all_complete(self):
        # deepseek-v3, 20 content deltas 100 ms apart: 22 events over ~2 s.
        srv = Server(self.mock.base_url, env={"DRAIN_TIMEOUT": "15"}, workers=2).start()
        sw = Swarm(srv.port, self.N, {"user_content": "hi", "stream": True, "model": "deepseek-v3-671b#events=20,delay=100"})
        try:
            self.assertTrue(sw.pump(sw.all_started, 15), "not every stream started")
            srv.send_signal(signal.SIGTERM)
            self.assertTrue(sw.pump(lambda: refuses(srv.port), 2), "new connections still accepted while draining")
            self.assertTrue(sw.pump(sw.all_closed, 15), "streams left open")
            outs = [sw.outcome(i) for i in range(self.N)]
            bad = [(i, o) for i, o in enumerate(outs) if o != ("complete", 22)]
            self.assertEqual(bad, [], f"{len(bad)} of {self.N} streams not complete")
            self.assertEqual(srv.wait_exit(10), 0, srv.log()[-2000:])
        finally:
            sw.close()
            srv.stop()

    def test_sigterm_drain_deadline_error_events(self):
        # 100 content deltas 100 ms apart cannot finish within DRAIN_TIMEOUT=1:
        # each stream ends well-framed with an error event, none just cut.
        srv = Server(self.mock.base_url, env={"DRAIN_TIMEOUT": "1"}, workers=2).start()
        n = 200
        sw = Swarm(srv.port, n, {"user_content": "hi", "stream": True, "model": "deepseek-v3-671b#events=100,delay=100"})
        try:
            self.assertTrue(sw.pump(sw.all_started, 15), "not every stream started")
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            self.assertTrue(sw.pump(lambda: refuses(srv.port), 2), "new connections still accepted while draining")
            self.assertTrue(sw.pump(sw.all_closed, 10), "streams left open past the deadline")
            self.assertLess(time.monotonic() - t0, 5)
            outs = [sw.outcome(i) for i in range(n)]
            kinds = {}
            for o in outs:
                kinds[o[0]] = kinds.get(o[0], 0) + 1
            broken = [(i, o) for i, o in enumerate(outs) if o[0] == "broken"]
            self.assertEqual(broken, [], f"outcomes {kinds}; streams cut without an error event, e.g. {broken[:3]}")
            self.assertEqual(srv.wait_exit(10), 0, srv.log()[-2000:])
            for b in sw.bufs:
                self.assertNotIn(KEY.encode(), b)
        finally:
            sw.close()
            srv.stop()


if __name__ == "__main__":
    unittest.main()


class DrainAfterVanishedClients(MockCase):
    def test_drain_is_prompt_after_clients_vanished_mid_reply(self):
        # Clients that reset their connection while their (non-stream) reply
        # is being produced or written must not be counted as in flight for
        # ever: with nothing running, SIGTERM ends the worker at once, not at
        # DRAIN_TIMEOUT.
        import random

        rng = random.Random(7)
        srv = Server(self.mock.base_url, env={"DRAIN_TIMEOUT": "20"}, workers=1).start()
        try:
            body = json.dumps({"user_content": "x" * 2000, "model": "deepseek-v3-671b#think=20,events=400"}).encode()
            req = (b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            for _ in range(150):
                s = socket.create_connection(("127.0.0.1", srv.port))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                s.sendall(req)
                time.sleep(rng.uniform(0.0, 0.04))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            time.sleep(1.5)  # every upstream call has ended by now
            r = chat(srv.port, {"user_content": "still serving", "model": model()})
            self.assertEqual(r.status, 200)
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            self.assertEqual(srv.wait_exit(30), 0, srv.log()[-2000:])
            took = time.monotonic() - t0
            self.assertLess(took, 5, f"drain waited {took:.1f} s with nothing in flight")
        finally:
            srv.stop()
