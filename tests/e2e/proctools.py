"""Process and HTTP helpers shared by the end-to-end harness (serverctl.py)
and the soak driver (soak/soak.py). Stdlib only, no side effects on import."""

import os
import socket


def free_port():
    """A port nobody listens on right now (bind to 0, read it, close)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def refuses(port):
    """True when a connection to 127.0.0.1:port is refused (nobody listens)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def children(pid):
    """Direct children of pid, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(d))
    return sorted(out)


def rss_kb(pid):
    """Resident memory of pid in KB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def dechunk(b):
    """(body, terminated) of a chunked HTTP body; a chunk not followed by CRLF
    is bad framing (AssertionError); a short last chunk is kept, unterminated."""
    out, pos = bytearray(), 0
    while True:
        nl = b.find(b"\r\n", pos)
        if nl < 0:
            return bytes(out), False
        size = int(b[pos:nl].split(b";")[0], 16)
        if size == 0:
            return bytes(out), b[nl + 2 : nl + 4] == b"\r\n"
        if len(b) < nl + 4 + size:
            return bytes(out) + b[nl + 2 : nl + 2 + size], False
        out += b[nl + 2 : nl + 2 + size]
        if b[nl + 2 + size : nl + 4 + size] != b"\r\n":
            raise AssertionError("bad chunk framing")
        pos = nl + 4 + size
