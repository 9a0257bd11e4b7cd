"""A real nginx with WebDAV PUT (as Bazel's docs configure it) on 127.0.0.1 and a free port, in a
temp prefix: the remote cache the remote-cache tests and the benchmark talk to; and a port that
refuses connections for as long as it is held."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Optional

TOKEN = "s3cr3t-token-do-not-log"  # the /auth/ location demands header X-Token: TOKEN

CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 128; }}
http {{
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/data;
        client_max_body_size 4g;
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:rw all:r;
        }}
        location /getonly/ {{  # a server that only answers GET (and HEAD): PUT is refused
            limit_except GET {{ deny all; }}
        }}
        location /auth/ {{
            if ($http_x_token != "{token}") {{ return 401; }}
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"""


def nginx_binary() -> Optional[str]:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 where nothing listens, for as long as the block runs: it stays bound
    (without listen(), so a connection is refused), so no other process can take it meanwhile,
    as it could a port bound, closed and then handed out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def _candidate_port() -> int:
    # nginx cannot listen on port 0 and say which port it got, so it is given a port that was
    # free a moment ago; start() retries with another if someone took it meanwhile
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """Start with ``start()``; ``url`` is the cache root; ``data`` is where the files land."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.data = prefix / "data"
        self.port = 0
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cache"

    def start(self, attempts: int = 5) -> Nginx:
        """Start nginx on a free port. Ready means nginx wrote its pid file, which it does
        after binding its listening socket (a connect alone could reach whoever took the port
        meanwhile); "Address already in use" means the port was taken: try another one."""
        binary = nginx_binary()
        assert binary, "nginx is not installed: run tests/sysdeps/nginx.sh"
        for d in ("data", "tmp"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        errors = []
        for _ in range(attempts):
            err = self._start_on(binary, _candidate_port())
            if err is None:
                return self
            errors.append(err)
            if "Address already in use" not in err:
                break
        raise RuntimeError("nginx did not start: " + " | ".join(errors))

    def _start_on(self, binary: str, port: int) -> Optional[str]:
        """None once nginx listens on ``port``, else why not."""
        self.port = port
        pidfile = self.prefix / "nginx.pid"
        pidfile.unlink(missing_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(CONF.format(prefix=self.prefix, port=port, token=TOKEN))
        proc = subprocess.Popen([binary, "-p", str(self.prefix), "-c", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                if proc.stderr is not None:
                    proc.stderr.close()
                log = self.prefix / "error.log"
                return (err + (log.read_text(errors="replace") if log.exists() else "")).strip() \
                    or f"nginx exited with {proc.returncode}"
            try:
                ready = pidfile.read_text().strip() == str(proc.pid)
            except FileNotFoundError:
                ready = False
            if ready:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                self.proc = proc
                return None
            time.sleep(0.02)
        proc.kill()
        proc.wait()
        return "nginx did not start listening within 30 s"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def files(self, kind: str) -> List[Path]:
        base = self.data / "cache" / kind
        return sorted(p for p in base.iterdir() if p.is_file()) if base.is_dir() else []
