"""The TLS context of an https upstream is built when a worker starts, not at
its first call: loading Debian's CA store (144 certificates) takes tens of
milliseconds, and every worker's first call paid it. Seen from outside: once
the server answers, its CA file is no longer read, so a file that goes away
(replaced at a certificate rotation, say) does not break the calls that
follow; and a ZJU_CA_FILE that cannot be read, or holds no certificate (a
key named by mistake, a truncated download), stops the start with a clear
message instead of failing every call later."""
import os
import shutil
import tempfile
import time
import unittest

from serverctl import LOG_DIR, Mock, Server, chat, model
from mockctl import make_self_signed_cert


def req(stream_it):
    return {"model": model(events=3), "messages": [{"role": "user", "content": "hi"}],
            "stream": stream_it}


class TlsContextAtStart(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tls-start-", dir=LOG_DIR)
        self.cert, self.key = make_self_signed_cert(self.dir)

    def test_every_worker_loads_the_ca_file_before_its_first_call(self):
        ca = os.path.join(self.dir, "ca-copy.pem")
        shutil.copy(self.cert, ca)
        with Mock("--tls-cert", self.cert, "--tls-key", self.key) as m, \
                Server(f"https://127.0.0.1:{m.port}/v1", env={"ZJU_CA_FILE": ca},
                       workers=2) as srv:
            time.sleep(1.0)  # both workers past their setup (one answered already)
            os.remove(ca)
            # Each call on a new client connection: the kernel spreads them
            # over both workers (all 24 on one: a chance of 2 in 2^24).
            for i in range(24):
                r = chat(srv.port, req(i % 2 == 0), timeout=20)
                self.assertEqual(r.status, 200, f"call {i}: {r.body[:300]!r}")
            pids = {line.split("]")[0].rsplit("[", 1)[1]
                    for line in srv.log().splitlines() if " access " in line}
            self.assertEqual(len(pids), 2, f"calls served by {pids}")

    def assert_start_refused(self, ca_file, says):
        srv = Server("https://127.0.0.1:9/v1", env={"ZJU_CA_FILE": ca_file})
        srv.start(wait=False)
        rc = srv.wait_exit(10)
        srv.stopped = True
        if rc is None:
            srv.kill()
            self.fail(f"server started with {ca_file} as its CA file: {srv.log()[-2000:]}")
        self.assertEqual(rc, 2, srv.log())
        self.assertIn(f"ZJU_CA_FILE {ca_file} {says}", srv.log())

    def test_an_unreadable_ca_file_stops_the_start(self):
        self.assert_start_refused(os.path.join(self.dir, "no-such-ca.pem"), "cannot be read")

    def test_a_ca_file_without_a_certificate_stops_the_start(self):
        # the key instead of the certificate, and a download cut short
        cut = os.path.join(self.dir, "cut.pem")
        with open(self.cert) as f, open(cut, "w") as out:
            out.write(f.read()[:200])
        for path in (self.key, cut):
            self.assert_start_refused(path, "holds no certificate")


if __name__ == "__main__":
    unittest.main()
