"""A recording proxy in front of an API server: which process sent which request.

Tests that run several operator processes give each its own proxy (and a
kubeconfig pointing at it), so every request in a proxy's log is that
process's, whatever client inside it sent it (ours or kopf's). Responses,
watch streams included, are passed through as they come.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import yaml

# Headers that belong to one connection, not to the request (RFC 9110, 7.6.1).
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
    "content-length",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    user_agent: str
    body: Any  # the JSON body of a write, else None
    status: int  # 0 when the response never came
    started: float  # time.monotonic() when the request came in

    @property
    def write(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")


class RecordingProxy:
    """An HTTP proxy on loopback forwarding to `upstream`, in a thread of its own. A context manager."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-proxy", daemon=True)
        self._runner: aiohttp.web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def writes(self) -> Iterator[Request]:
        return (r for r in self.requests if r.write)

    def kubeconfig(self, like: Path, path: Path) -> Path:
        """A copy of the kubeconfig `like`, with this proxy as the server."""
        config = yaml.safe_load(like.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = self.url
        path.write_text(yaml.safe_dump(config))
        return path

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()  # ends the upstream watches still streaming
        if self._runner is not None:
            await self._runner.cleanup()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _forward(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        assert self._session is not None
        started = time.monotonic()
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        status = 0
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body or None
            ) as upstream:
                status = upstream.status
                response = aiohttp.web.StreamResponse(
                    status=upstream.status,
                    headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP},
                )
                await response.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                except (ConnectionError, aiohttp.ClientError):
                    pass  # the client went away (a watch closed, a process killed), or the proxy stops
                return response
        finally:
            self._record(request, body, status, started)

    def _record(self, request: aiohttp.web.Request, body: bytes, status: int, started: float) -> None:
        parsed: Any = None
        if body and request.method not in ("GET", "HEAD"):
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
        entry = Request(
            method=request.method,
            path=request.path,
            query=request.query_string,
            user_agent=request.headers.get("User-Agent", ""),
            body=parsed,
            status=status,
            started=started,
        )
        with self._lock:
            self._requests.append(entry)
