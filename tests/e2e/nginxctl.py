"""A real nginx (Debian's nginx-light, from `make deps`) in front of the server
for end-to-end tests, started on loopback by an ordinary process:

    nginx -p DIR -c DIR/nginx.conf -g 'daemon off; pid DIR/nginx.pid;'

with its error log, access log and temporary files inside DIR. The http{}
block repeats the settings of Debian 12's stock /etc/nginx/nginx.conf, so a
site behaves here as it does on a Debian host.

Two sites: minimal_site() is the smallest reverse proxy (nginx's defaults:
HTTP/1.0 and Connection: close upstream, response buffering on), and
recommended_site() is docs/deploy/nginx.conf itself, with only the listen
addresses, the upstream port and the certificate paths replaced. Each
replacement must match exactly where expected, so the test fails if the
shipped file changes shape instead of quietly testing something else.
Stdlib only.
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEPLOY_CONF = os.path.join(ROOT, "docs", "deploy", "nginx.conf")
TWO_INSTANCES_CONF = os.path.join(ROOT, "docs", "deploy", "nginx-two-instances.conf")
NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")

# Debian 12's /etc/nginx/nginx.conf, minus the paths that belong to the
# system (user, pid, logs, modules, the conf.d and sites-enabled includes).
MAIN_CONF = """\
worker_processes auto;
error_log {dir}/error.log notice;
events {{
    worker_connections 768;
}}
http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    access_log {dir}/access.log;
    gzip on;
{temp_paths}
    include {dir}/site.conf;
}}
"""


def have_nginx():
    return os.access(NGINX_BIN, os.X_OK)


def minimal_site(port, upstream_port):
    """The reverse proxy people write first: nothing but proxy_pass."""
    return (
        "server {\n"
        f"    listen 127.0.0.1:{port};\n"
        f"    location / {{ proxy_pass http://127.0.0.1:{upstream_port}; }}\n"
        "}\n"
    )


def _replace(text, pattern, repl, count, what, path=DEPLOY_CONF):
    new, n = re.subn(pattern, repl, text, flags=re.M)
    if n != count:
        raise AssertionError(f"{os.path.relpath(path, ROOT)}: expected {count} {what}, found {n}")
    return new


def _loopback_site(text, tls_port, http_port, cert, key, path):
    """The listens on our loopback ports (IPv6 ones dropped) and our
    certificate, in a shipped site file."""
    text = _replace(text, r"^(\s*)listen 443 ssl http2;$", rf"\1listen 127.0.0.1:{tls_port} ssl http2;",
                    1, "'listen 443 ssl http2;'", path)
    text = _replace(text, r"^(\s*)listen 80;$", rf"\1listen 127.0.0.1:{http_port};", 1, "'listen 80;'", path)
    text = _replace(text, r"^\s*listen \[::\]:\d+[^;]*;\n", "", 2, "IPv6 listens", path)
    text = _replace(text, r"^(\s*)ssl_certificate /etc/ssl/\S+;$", rf"\1ssl_certificate {cert};", 1,
                    "ssl_certificate under /etc/ssl", path)
    text = _replace(text, r"^(\s*)ssl_certificate_key /etc/ssl/\S+;$", rf"\1ssl_certificate_key {key};", 1,
                    "ssl_certificate_key under /etc/ssl", path)
    return text


def recommended_site(tls_port, http_port, upstream_port, cert, key, path=DEPLOY_CONF, read_timeout=None):
    """docs/deploy/nginx.conf for loopback: the IPv4 listens on our ports, the
    IPv6 ones dropped, the upstream server and the certificate replaced.
    read_timeout (e.g. "1s"): proxy_read_timeout too, for the one test of
    nginx's own 504 (the shipped 600 s is too long to wait for)."""
    with open(path) as f:
        text = f.read()
    text = _loopback_site(text, tls_port, http_port, cert, key, path)
    if read_timeout is not None:
        text = _replace(text, r"^(\s*)proxy_read_timeout 600s;$", rf"\1proxy_read_timeout {read_timeout};", 1,
                        "'proxy_read_timeout 600s;'", path)
    return _replace(text, r"^(\s*)server 127\.0\.0\.1:5001;$", rf"\g<1>server 127.0.0.1:{upstream_port};",
                    1, "upstream 'server 127.0.0.1:5001;'", path)


def two_instances_site(tls_port, http_port, upstream_ports, cert, key, path=TWO_INSTANCES_CONF):
    """docs/deploy/nginx-two-instances.conf for loopback: as recommended_site,
    and its two upstream servers (10.0.0.11:5001, 10.0.0.12:5001) on our
    loopback ports, their parameters kept."""
    with open(path) as f:
        text = f.read()
    text = _loopback_site(text, tls_port, http_port, cert, key, path)
    for address, port in zip(("10.0.0.11:5001", "10.0.0.12:5001"), upstream_ports):
        text = _replace(text, rf"^(\s*)server {re.escape(address)}( [^;]*)?;$",
                        rf"\g<1>server 127.0.0.1:{port}\2;", 1, f"upstream 'server {address} ...;'", path)
    return text


def deploy_setting(name, path=DEPLOY_CONF):
    """The value of the first `name value;` directive in the shipped file."""
    with open(path) as f:
        m = re.search(rf"^\s*{re.escape(name)}\s+([^;]+);", f.read(), re.M)
    return m.group(1).strip() if m else None


def _wait_listening(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


class Nginx:
    """nginx serving one site (text of a server{}/upstream{} file) from its
    own directory. ports: the ports the site listens on (waited for)."""

    def __init__(self, site, ports):
        self.site = site
        self.ports = list(ports)
        self.proc = None
        # Not under the tests' 0700 log directory: nginx's workers run as
        # nobody when started by root, and must reach their temp paths.
        self.dir = tempfile.mkdtemp(prefix="zju-nginx-")
        os.chmod(self.dir, 0o755)

    def path(self, name):
        return os.path.join(self.dir, name)

    def start(self, timeout=10):
        temp = []
        for d in TEMP_DIRS:
            os.makedirs(self.path(d))
            os.chmod(self.path(d), 0o1777)
            temp.append(f"    {d}_temp_path {self.path(d)};")
        with open(self.path("site.conf"), "w") as f:
            f.write(self.site)
        with open(self.path("nginx.conf"), "w") as f:
            f.write(MAIN_CONF.format(dir=self.dir, temp_paths="\n".join(temp)))
        cmd = [NGINX_BIN, "-p", self.dir, "-c", self.path("nginx.conf"), "-e", self.path("error.log"),
               "-g", f"daemon off; pid {self.path('nginx.pid')};"]
        with open(self.path("stderr.log"), "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        if not all(_wait_listening(p, self.proc, timeout) for p in self.ports):
            self.stop()
            raise RuntimeError(f"nginx did not start: {self.log()}")
        return self

    def log(self, tail=4000):
        """The tail of nginx's error log (and anything it printed)."""
        out = []
        for name in ("stderr.log", "error.log"):
            try:
                with open(self.path(name), "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)[-tail:]

    def problems(self):
        """Error log lines at [error] level or worse (warnings are fine)."""
        return [l for l in self.log(1 << 20).splitlines() if re.search(r"\[(error|crit|alert|emerg)\]", l)]

    def stop(self):
        """Stops nginx (SIGQUIT: graceful) and removes its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(3)  # SIGQUIT
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
