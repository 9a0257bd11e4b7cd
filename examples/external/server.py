"""A tiny local "API" for the external-data example: serves JSON documents over HTTP with an
ETag that changes on every publish (as a real API's does), in a thread of the caller."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Tuple


class DataServer:
    """``publish(path, obj)`` puts a document at ``path``; HEAD and GET answer with its ETag.
    ``fail_head`` makes HEAD answer 503 (a probe that fails); ``hits`` counts requests."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.docs: Dict[str, Tuple[bytes, str]] = {}
        self.version = 0
        self.fail_head = False
        self.hits: Dict[str, int] = {"HEAD": 0, "GET": 0}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def publish(self, path: str, obj: Any) -> str:
        """Serve ``obj`` (as JSON) at ``path`` under a new ETag; returns the ETag."""
        with self.lock:
            self.version += 1
            etag = f'"rates-{self.version}"'
            self.docs[path] = (json.dumps(obj, sort_keys=True).encode(), etag)
        return etag

    def start(self) -> DataServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> DataServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _handler(self) -> type:
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _answer(self, body: bool) -> None:
                with app.lock:
                    app.hits[self.command] += 1
                    doc = app.docs.get(self.path)
                    failing = app.fail_head and self.command == "HEAD"
                if failing or doc is None:
                    self.send_response(503 if failing else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data, etag = doc
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", etag)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                self._answer(body=True)

        return Handler
