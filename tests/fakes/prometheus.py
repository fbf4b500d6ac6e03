"""A fake Prometheus over real HTTP: answers /api/v1/query from a table and counts every request.

A fake of the world, not of Sluice: the real metric provider queries it over
HTTP exactly as it queries a real Prometheus, so the shells' analysis runs
end to end in unit tests without a Prometheus process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# A query's answer: a number, or None for "no data".
Answer = Callable[[str], float | None]


class FakePrometheus:
    def __init__(self, answer: Answer, host: str = "127.0.0.1") -> None:
        self.answer = answer
        self.queries: list[str] = []
        self.requests = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self)

            do_POST = do_GET

            def log_message(self, *_: object) -> None:  # quiet: tests read `queries`
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _serve(self, request: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests += 1
        parts = urlsplit(request.path)
        query = (parse_qs(parts.query).get("query") or [""])[0]
        if parts.path != "/api/v1/query" or not query:
            request.send_response(404)
            request.end_headers()
            return
        with self._lock:
            self.queries.append(query)
        value = self.answer(query)
        result = [] if value is None else [{"metric": {}, "value": [time.time(), repr(float(value))]}]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.end_headers()
        request.wfile.write(body.encode())

    def start(self) -> FakePrometheus:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def fake_prometheus(answer: Answer, host: str = "127.0.0.1") -> Iterator[FakePrometheus]:
    server = FakePrometheus(answer, host).start()
    try:
        yield server
    finally:
        server.stop()
