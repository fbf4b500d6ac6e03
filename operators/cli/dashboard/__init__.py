"""`sluice dashboard`: a web page of every Rollout, Application and SidecarSet, live, with the
release buttons; served on localhost with the user's kubeconfig (and so their permissions)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from aiohttp import web

from operators.cli.dashboard.hub import Hub
from operators.cli.dashboard.server import allowed_hosts, make_app, new_token
from operators.cli.dashboard.watch import Watchers
from operators.foundation.cluster import Cluster, load_api_client

DEFAULT_PORT = 3100  # kubectl argo rollouts dashboard's


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="serve a live web dashboard of releases on localhost",
        description="Serve a live web dashboard of Rollouts, Applications and SidecarSets, with "
        "promote, abort, retry, pause and resume buttons. It acts with your kubeconfig: it can see "
        "and do what you can.",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0: any free")
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", metavar="NAME", help="kubeconfig context (default: the current one)")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    asyncio.run(serve(args.address, args.port, args.kubeconfig, args.context))
    return 0


async def serve(address: str, port: int, kubeconfig: str | None, context: str | None) -> None:
    api = load_api_client(kubeconfig, context)
    hub = Hub()
    loop = asyncio.get_running_loop()

    def changed(kind: str, event: str, payload: Any) -> None:  # from the watch threads
        loop.call_soon_threadsafe(hub.changed, kind, event, payload)

    watchers = Watchers(api, changed)
    bound: list[int] = []  # the port, known once listening (--port 0)
    app = make_app(hub, Cluster(api), lambda: allowed_hosts(address, bound[0]), new_token())
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address, port)
        await site.start()
        bound.append(_port_of(runner))
        watchers.start()
        host = f"[{address}]" if ":" in address else address
        print(f"Sluice dashboard: http://{host}:{bound[0]}/  (Ctrl-C to stop)", flush=True)
        await asyncio.Event().wait()  # until interrupted
    finally:
        watchers.stop()
        await runner.cleanup()


def _port_of(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])
