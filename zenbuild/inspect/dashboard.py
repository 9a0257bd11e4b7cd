"""`zenbuild dashboard`: a local web page (stdlib HTTP server) with the run history and, per run,
the DAG drawn by Cytoscape.js + dagre (shipped in zenbuild/inspect/assets: it works offline)."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Optional, Tuple
from urllib.parse import parse_qs, urlparse

from zenbuild.config import Config
from zenbuild.errors import ZenbuildError
from zenbuild.graph import Graph
from zenbuild.inspect.history import find_run, list_runs, open_store
from zenbuild.inspect.render import STYLES, graph_data

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".txt": "text/plain"}
_ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Dashboard:
    """The data behind the page; one per server. Pipelines are traced once, under a lock."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._graphs: Dict[str, Tuple[Optional[Graph], str]] = {}
        self._lock = threading.Lock()

    def graph_of(self, pipeline: str) -> Tuple[Optional[Graph], str]:
        """The current DAG of a pipeline by its name, or None and why it cannot be loaded."""
        from zenbuild.errors import ZenbuildError
        from zenbuild.project import open_pipeline

        with self._lock:
            if pipeline not in self._graphs:
                try:
                    g: Optional[Graph] = open_pipeline(name=pipeline, config=self.config).graph
                    self._graphs[pipeline] = (g, "")
                except ZenbuildError as e:  # the page still shows the run's steps, without edges
                    self._graphs[pipeline] = (None, f"pipeline {pipeline} cannot be loaded: {e}")
            return self._graphs[pipeline]

    def runs(self, limit: int) -> Dict[str, Any]:
        if not os.path.isdir(self.config.store):
            return {"root": self.config.root, "runs": []}
        store = open_store(self.config)
        try:
            return {"root": self.config.root, "runs": list_runs(store, None, limit)}
        finally:
            store.close()

    def run(self, run_id: str) -> Dict[str, Any]:
        store = open_store(self.config)
        try:
            run = find_run(store, run_id)
        finally:
            store.close()
        graph, note = self.graph_of(run["pipeline"])
        run["graph"] = graph_data(graph, run, run["pipeline"])
        run["graph_note"] = note
        return run


def _handler(app: Dashboard) -> type:
    class Handler(BaseHTTPRequestHandler):
        server_version = "zenbuild-dashboard"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype + ("; charset=utf-8" if "json" in ctype or
                                                      ctype.startswith("text/") else ""))
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj: Any) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            url = urlparse(self.path)
            path = url.path
            try:
                if path in ("/", "/index.html"):
                    self._asset("dashboard.html")
                elif path.startswith("/assets/"):
                    self._asset(path[len("/assets/"):])
                elif path == "/api/runs":
                    limit = int(parse_qs(url.query).get("limit", ["100"])[0])
                    self._json(200, app.runs(max(1, min(limit, 1000))))
                elif path.startswith("/api/runs/"):
                    self._json(200, app.run(path[len("/api/runs/"):]))
                elif path == "/api/styles":
                    self._json(200, STYLES)
                else:
                    self._json(404, {"error": f"no such page: {path}"})
            except ZenbuildError as e:
                self._json(404, {"error": e.message})
            except (ValueError, KeyError) as e:
                self._json(400, {"error": str(e)})

        def _asset(self, name: str) -> None:
            full = os.path.join(ASSETS, name)
            if not _ASSET_NAME.match(name) or not os.path.isfile(full):
                self._json(404, {"error": f"no such asset: {name}"})
                return
            with open(full, "rb") as f:
                body = f.read()
            self._send(200, body, _TYPES.get(os.path.splitext(name)[1], "application/octet-stream"))

    return Handler


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(config: Config, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    server_class = _Server6 if ":" in host else ThreadingHTTPServer  # ":" : an IPv6 address
    try:
        server = server_class((host, port), _handler(Dashboard(config)))
    except OSError as e:
        raise ZenbuildError(
            f"cannot listen on {host}:{port}: {e.strerror}. Another program (maybe another "
            "dashboard) uses that port; pick another with --port, or --port 0 for any free port."
        ) from None
    server.daemon_threads = True
    return server


def serve(config: Config, host: str = "127.0.0.1", port: int = 8765,
          announce: Callable[[str], Any] = print) -> None:
    """Serve the dashboard until interrupted."""
    server = make_server(config, host, port)
    try:  # closed on every way out, a failed announce (a closed pipe) included
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        announce(f"zenbuild dashboard: http://{shown}:{bound_port}/ (Ctrl+C to stop)")
        if host not in ("127.0.0.1", "localhost", "::1"):
            announce(f"Warning: listening on {host}: anyone who can reach this machine can "
                     "read the run history and logs.")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
