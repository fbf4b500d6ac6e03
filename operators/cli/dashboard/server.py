"""The dashboard's HTTP server (aiohttp): the page, its live feed (Server-Sent Events) and the
buttons' endpoint, acting with the kubeconfig of the user who started it.

Since it holds the user's credentials, only the page it served may use it: every request must
name this server in Host (a DNS-rebinding page names its own domain), and every POST must carry
the token written into the page and, if the browser sends an Origin, this server's own. A
cross-site form can set neither the header nor the Origin; a cross-site fetch with a custom
header needs a CORS preflight, which is never granted.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from operators.cli.dashboard.actions import ACTIONS, action_patch
from operators.cli.dashboard.hub import Hub
from operators.foundation.cluster import Cluster, KubeError
from operators.rollout.inventory import rollout_key

TOKEN_HEADER = "X-Sluice-Token"
KEEPALIVE_SECONDS = 15.0  # a comment line now and then, so proxies and browsers keep the feed open
STATIC = {
    "app.js": "text/javascript",
    "app.css": "text/css",
}
SECURITY_HEADERS = {
    # The page loads nothing from elsewhere (it works offline) and may not be framed (clickjacking).
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _static(name: str) -> str:
    return (resources.files("operators.cli.dashboard") / "static" / name).read_text(encoding="utf-8")


def allowed_hosts(address: str, port: int) -> set[str]:
    """Host header values naming this server: its address, and the loopback names when on loopback."""
    names = {address, f"[{address}]" if ":" in address else address}
    if address in ("127.0.0.1", "::1", "localhost"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return {f"{name}:{port}" for name in names}


def make_app(hub: Hub, cluster: Cluster, hosts: Callable[[], set[str]], token: str) -> web.Application:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in hosts():
            raise web.HTTPMisdirectedRequest(text=f"this dashboard does not serve host {request.host!r}")
        if request.method == "POST":
            origin = request.headers.get("Origin")
            if origin is not None and origin != f"http://{request.host}":
                raise web.HTTPForbidden(text=f"cross-site request from {origin} refused")
            if not hmac.compare_digest(request.headers.get(TOKEN_HEADER, ""), token):
                raise web.HTTPForbidden(text=f"missing or wrong {TOKEN_HEADER}: use the dashboard's page")
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    page = _static("index.html").replace("__SLUICE_TOKEN__", token)

    async def index(_: web.Request) -> web.StreamResponse:
        return web.Response(text=page, content_type="text/html")

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(text=_static(name), content_type=STATIC[name])

    async def snapshot(_: web.Request) -> web.StreamResponse:
        return web.json_response(hub.snapshot())

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **SECURITY_HEADERS})
        await response.prepare(request)
        queue = hub.listen()
        try:
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    message = ": keep-alive\n\n"
                await response.write(message.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            hub.leave(queue)
        return response

    async def act(request: web.Request) -> web.StreamResponse:
        namespace, name, action = (request.match_info[k] for k in ("namespace", "name", "action"))
        if action not in ACTIONS:
            raise web.HTTPNotFound(text=f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
        patch = action_patch(action)
        try:
            await asyncio.to_thread(cluster.merge_patch, rollout_key(namespace, name), patch)
        except KubeError as error:  # e.g. 403: the user may not patch Rollouts; 404: it is gone
            return web.json_response({"ok": False, "message": error.message}, status=error.status)
        return web.json_response({"ok": True, "message": f"{action}: rollout {namespace}/{name}"})

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/api/events", events)
    app.router.add_post("/api/rollouts/{namespace}/{name}/{action}", act)
    return app


def new_token() -> str:
    return secrets.token_urlsafe(32)
