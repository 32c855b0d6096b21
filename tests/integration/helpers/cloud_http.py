"""A loopback HTTP server whose routes a test swaps: the stand-in for cloud endpoints
(metadata services, key endpoints, Compute API, Resource Manager) in gcp.py and azure.py."""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Optional


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Any
    body: bytes


@dataclass
class Response:
    status: int = 200
    body: Any = ""
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Request], Optional[Response]]


@dataclass
class Loopback:
    url: str = ""
    host: str = ""
    routes: list[Route] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


def _handler(state: Loopback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            req = Request(self.command, parts.path, dict(urllib.parse.parse_qsl(parts.query)), self.headers,
                          self.rfile.read(length) if length else b"")
            state.requests.append(f"{self.command} {self.path}")
            resp = None
            for route in state.routes:
                resp = route(req)
                if resp is not None:
                    break
            resp = resp or Response(404, {"error": {"code": "NotFound", "message": f"no route for {parts.path}"}})
            body = resp.body if isinstance(resp.body, (bytes, str)) else json.dumps(resp.body)
            raw = body.encode() if isinstance(body, str) else body
            self.send_response(resp.status)
            for name, value in {"Content-Type": "application/json", **resp.headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = _serve

    return Handler


@contextlib.contextmanager
def loopback(*routes: Route) -> Iterator[Loopback]:
    state = Loopback(routes=list(routes))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.host = f"127.0.0.1:{server.server_address[1]}"
    state.url = f"http://{state.host}"
    thread = threading.Thread(target=server.serve_forever, name="cloud-http", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
