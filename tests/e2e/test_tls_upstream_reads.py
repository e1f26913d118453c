"""Reading a TLS upstream: bench S6 (issue 13) found the server's warm
first-event time 1.33-1.43x the plaintext path's. One cause was ours:
OpenSSL, without read-ahead, read every TLS record with two recv(2) calls
(its 5-byte header, then its body), and the answer's second record (the
chunked body's end) waited for another round of the event loop even when it
had come with the first: 4 reads and an extra epoll_wait per stream where
plaintext takes one read. With read-ahead the socket is read whole.

Read-ahead means TLS may hold bytes the loop cannot see, so an answer
followed by bytes nobody asked for must not go back to the pool with them
(the next call would read them as its answer)."""
import re
import socket
import ssl
import tempfile
import threading
import unittest

from mockctl import make_self_signed_cert
from serverctl import LOG_DIR, Server, chat, model

def req(stream_it=True):
    return {"model": model(events=5), "messages": [{"role": "user", "content": "hi"}],
            "stream": stream_it}


class TlsUpstreamReads(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tls-reads-", dir=LOG_DIR)
        self.cert, self.key = make_self_signed_cert(self.dir)

    def test_bytes_after_the_answer_are_not_pooled(self):
        # A TLS upstream that sends, after a complete answer, more bytes in a
        # record of their own in the same TCP segment: read ahead, they sit in
        # OpenSSL's buffer. The connection must be closed, not reused: the
        # next call gets a clean answer on a new connection.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        lsock = socket.create_server(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        body = b'{"id":"x","object":"chat.completion","created":1,"model":"m",' \
               b'"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},' \
               b'"finish_reason":"stop"}]}'
        answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body)) + body
        junk = b"HTTP/1.1 500 Junk\r\nContent-Length: 4\r\n\r\njunk"
        conns = []
        served = []  # requests read, per connection (in accept order)

        def serve_one(sock, first, k):
            # TLS over memory BIOs, so that two records leave in one write.
            inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(inc, outg, server_side=True)

            def flush():
                data = outg.read()
                if data:
                    sock.sendall(data)

            def pump():
                data = sock.recv(65536)
                if not data:
                    raise EOFError
                inc.write(data)

            def read_request():
                got = b""
                while True:
                    head, sep, rest = got.partition(b"\r\n\r\n")
                    m = re.search(rb"(?i)content-length: *(\d+)", head)
                    if sep and len(rest) >= (int(m.group(1)) if m else 0):
                        return
                    try:
                        got += tls.read(65536)
                    except ssl.SSLWantReadError:
                        flush()
                        pump()

            try:
                while True:
                    try:
                        tls.do_handshake()
                        flush()
                        break
                    except ssl.SSLWantReadError:
                        flush()
                        pump()
                while True:
                    read_request()
                    served[k] += 1
                    tls.write(answer)
                    if first:  # a second record, sent with the answer
                        tls.write(junk)
                        first = False
                    flush()
            except (OSError, EOFError, ssl.SSLError):
                return
            finally:
                sock.close()

        def accept_loop():
            while True:
                try:
                    s, _ = lsock.accept()
                except OSError:
                    return
                conns.append(s)
                served.append(0)
                threading.Thread(target=serve_one, args=(s, len(conns) == 1, len(conns) - 1),
                                 daemon=True).start()

        threading.Thread(target=accept_loop, daemon=True).start()
        try:
            with Server(f"https://127.0.0.1:{port}/v1", env={"ZJU_CA_FILE": self.cert},
                        workers=1) as srv:
                for i in range(3):
                    r = chat(srv.port, req(False), timeout=20)
                    self.assertEqual(r.status, 200, f"call {i}: {r.body[:300]!r}")
        finally:
            lsock.close()
        # Reused, the first connection would carry the second request (its
        # junk read as the answer, then recovered by the stale-connection
        # retry, so the statuses alone cannot tell).
        self.assertEqual(served[0], 1, "the connection with bytes after the answer was reused")
        self.assertEqual(len(conns), 2, "the connection with bytes after the answer was reused")


if __name__ == "__main__":
    unittest.main()
