"""The server as a process tree: SIGTERM/SIGINT drain, a killed worker
restarted without hurting the other worker's streams, 500 concurrent
streams, and the final check that the API key appeared in no response and
no log line of the whole run."""

import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import unittest

from serverctl import (
    MockCase,
    RawConn,
    Server,
    chat,
    dechunk,
    model,
    refuses,
    scan_for_key,
    split_frames,
    stream,
    wait_until,
)


def start_streams(port, n, m):
    """Opens n stream requests and waits for each one's first event."""
    conns = []
    for _ in range(n):
        c = RawConn(port, timeout=10)
        c.send(c.post_chat({"user_content": "hi", "stream": True, "model": m}, keep_alive=False))
        conns.append(c)
    for c in conns:
        got = c.read_until(b"data: ", 5)
        c.unread(got)  # keep it for read_response
    return conns


def read_all_async(conns, timeout):
    """Reads every response in its own thread; returns a dict filled with
    index -> (Response or exception, seconds taken) and the threads."""
    results = {}
    t0 = time.monotonic()

    def run(i, c):
        try:
            results[i] = (c.read_response(timeout=timeout), time.monotonic() - t0)
        except Exception as e:  # an abrupt end is a result here
            results[i] = (e, time.monotonic() - t0)

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    return results, threads


def data_count(body):
    return sum(1 for kind, _ in split_frames(body) if kind == "data")


def server_socket_inodes(server_port):
    """client port -> inode of the server-side socket, from /proc/net/tcp."""
    out = {}
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            lport = int(fields[1].split(":")[1], 16)
            rport = int(fields[2].split(":")[1], 16)
            if lport == server_port and int(fields[9]):
                out[rport] = int(fields[9])
    return out


def owner_of(pids, inode):
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    pass
        except OSError:
            pass
    return None




class Drain(MockCase):
    # reasoning=4 default: role, 4 reasoning, 15 content, finish = 21 events.
    M = model(events=15, delay=80)
    EVENTS = 21

    def test_sigterm_drains_in_flight_streams(self):
        srv = Server(self.mock.base_url, env={"DRAIN_TIMEOUT": "10"}, workers=2).start()
        conns = []
        try:
            conns = start_streams(srv.port, 3, self.M)
            srv.send_signal(signal.SIGTERM)
            self.assertTrue(wait_until(lambda: refuses(srv.port), 2), "new connections still accepted while draining")
            results, threads = read_all_async(conns, 10)
            for t in threads:
                t.join(12)
            for i in range(len(conns)):
                r, _ = results[i]
                self.assertNotIsInstance(r, Exception, r)
                self.assertEqual(r.status, 200)
                self.assertEqual(data_count(r.body), self.EVENTS, r.body[-300:])
            rc = srv.wait_exit(8)
            self.assertEqual(rc, 0, srv.log()[-2000:])
        finally:
            for c in conns:
                c.close()
            srv.stop()

    def test_drain_deadline(self):
        srv = Server(self.mock.base_url, env={"DRAIN_TIMEOUT": "1"}).start()
        try:
            conns = start_streams(srv.port, 1, model(events=300, delay=100))
            t0 = time.monotonic()
            srv.send_signal(signal.SIGTERM)
            rc = srv.wait_exit(6)
            took = time.monotonic() - t0
            self.assertIsNotNone(rc, "server ignored its drain deadline")
            self.assertEqual(rc, 0, srv.log()[-2000:])
            self.assertLess(took, 4)
            self.assertTrue(conns[0].wait_closed(2), "client connection left open after exit")
            conns[0].close()
        finally:
            srv.stop()

    def test_sigint_stops_cleanly(self):
        srv = Server(self.mock.base_url, workers=2).start()
        r = chat(srv.port, {"user_content": "hi"})
        self.assertEqual(r.status, 200)
        srv.stop(sig=signal.SIGINT, timeout=10)


class WorkerCrash(MockCase):
    def test_killed_worker_restarted_others_unaffected(self):
        # r1 default reasoning=4: role, 4 reasoning, 25 content, finish.
        events = 31
        srv = Server(self.mock.base_url, workers=2).start()
        conns = []
        try:
            self.assertTrue(wait_until(lambda: len(srv.workers_pids()) == 2, 5), srv.workers_pids())
            workers = srv.workers_pids()
            conns = start_streams(srv.port, 12, model(events=25, delay=100))
            inodes = server_socket_inodes(srv.port)
            owner = [owner_of(workers, inodes.get(c.sock.getsockname()[1], -1)) for c in conns]
            self.assertNotIn(None, owner, "could not map every connection to a worker")
            victim = workers[0]
            on_victim = [i for i, o in enumerate(owner) if o == victim]
            survivors = [i for i, o in enumerate(owner) if o != victim]
            self.assertTrue(on_victim and survivors, f"all 12 connections on one worker: {owner}")
            os.kill(victim, signal.SIGKILL)
            results, threads = read_all_async(conns, 15)
            for t in threads:
                t.join(16)
            for i in survivors:
                r, _ = results[i]
                self.assertNotIsInstance(r, Exception, f"stream on the surviving worker broke: {r}")
                self.assertEqual(data_count(r.body), events)
                self.assertNotIn(b'"error"', r.body)
            for i in on_victim:
                r, took = results[i]
                self.assertLess(took, 3, "a stream of the killed worker hung")
                if not isinstance(r, Exception):
                    self.assertLess(data_count(r.body), events)
            self.assertTrue(
                wait_until(lambda: len(srv.workers_pids()) == 2 and victim not in srv.workers_pids(), 5),
                f"worker not restarted: {srv.workers_pids()}",
            )
            for _ in range(6):
                self.assertEqual(chat(srv.port, {"user_content": "hi"}).status, 200)
        finally:
            for c in conns:
                c.close()
            srv.stop()


class Concurrency(MockCase):
    N = 500

    def test_500_concurrent_streams_complete(self):
        # deepseek-v3: role, 20 content deltas, finish = 22 events over ~1.1 s.
        m = "deepseek-v3-671b#events=20,delay=50"
        expect = 22
        srv = Server(self.mock.base_url, workers=2).start()
        try:
            base_rss = srv.rss_kb()
            body = json.dumps({"user_content": "hi", "stream": True, "model": m}).encode()
            req = (
                b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
            ) + body
            sel = selectors.DefaultSelector()
            bufs = [bytearray() for _ in range(self.N)]
            open_socks = {}
            t0 = time.monotonic()
            for i in range(self.N):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", srv.port))
                sel.register(s, selectors.EVENT_WRITE, i)
                open_socks[i] = s
            peak_active = 0
            peak_rss = base_rss
            next_sample = 0
            deadline = t0 + 25
            while open_socks and time.monotonic() < deadline:
                for key, ev in sel.select(timeout=0.5):
                    s, i = key.fileobj, key.data
                    if ev & selectors.EVENT_WRITE:
                        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                            sel.unregister(s)
                            s.close()
                            del open_socks[i]
                            continue
                        s.send(req)
                        sel.modify(s, selectors.EVENT_READ, i)
                    elif ev & selectors.EVENT_READ:
                        try:
                            data = s.recv(65536)
                        except OSError:
                            data = b""
                        if data:
                            bufs[i] += data
                        else:
                            sel.unregister(s)
                            s.close()
                            del open_socks[i]
                if time.monotonic() >= next_sample:
                    next_sample = time.monotonic() + 0.25
                    peak_active = max(peak_active, self.mock.stats()["streams_active"])
                    peak_rss = max(peak_rss, srv.rss_kb())
            took = time.monotonic() - t0
            for s in open_socks.values():
                s.close()
            ok = 0
            bad = []
            for i, raw in enumerate(bufs):
                try:
                    head, _, rest = bytes(raw).partition(b"\r\n\r\n")
                    self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:100])
                    if b"chunked" in head.lower():
                        rest, done = dechunk(rest)
                        self.assertTrue(done, "chunked body not terminated")
                    frames = split_frames(rest)
                    data = [v for k, v in frames if k == "data"]
                    self.assertEqual(len(data), expect)
                    self.assertFalse(any(b'"error"' in d for d in data))
                    ok += 1
                except Exception as e:
                    bad.append((i, repr(e)[:200]))
            print(
                f"  [{self.N} streams: {ok} complete in {took:.1f} s, peak upstream streams {peak_active},"
                f" server RSS {base_rss // 1024} -> {peak_rss // 1024} MB]",
                file=sys.stderr,
            )
            self.assertEqual(ok, self.N, f"{len(bad)} streams incomplete, e.g. {bad[:3]}")
            self.assertLess(took, 25)
        finally:
            srv.stop(timeout=20)




class KeyNeverLeaks(MockCase):
    """Runs last in this file (name order): provokes every path that could
    leak the key, in debug mode, then checks everything the whole run saw."""

    def test_zz_key_in_no_response_and_no_log(self):
        srv = Server(self.mock.base_url, env={"FLASK_DEBUG": "1", "DEBUG": "1", "ZJU_IDLE_TIMEOUT_MS": "800"}).start()
        try:
            for m in (model(status=401, echo_key=1), model(status=500, echo_key=1), model(status=502, body="html"), model(fault="big_error")):
                r = chat(srv.port, {"user_content": "hi", "model": m})
                self.assertEqual(r.status, 500)
                stream(srv.port, {"user_content": "hi", "stream": True, "model": m})
            s = stream(srv.port, {"user_content": "hi", "stream": True, "model": model(fault="hang_mid")})
            self.assertEqual(len(s.errors()), 1)
            stream(srv.port, {"user_content": "hi", "stream": True, "model": model(fault="drop_mid")})
            chat(srv.port, {"user_content": "hi", "model": model(events=2)})
        finally:
            srv.stop()
        self.assertIn("Bearer", self.mock.last()["headers"].get("authorization", ""), "the key must still reach the upstream")
        self.assertEqual(scan_for_key(), [], "the API key leaked into these files of the run")


if __name__ == "__main__":
    unittest.main()
