"""Benchmark: what the sandbox itself costs at scale, in CPU seconds per simulated second.

Creates N Rollout-like object sets directly in the store, each as the operator would leave
it: a stable and a canary Deployment (their pods run by the workload simulator), a stable
and a canary Service, and an HTTPRoute splitting traffic between them (the traffic
simulator's input), all in one namespace (the worst case for per-namespace scans).
Clients follow the API over HTTP as the operator's kopf does: cluster-wide watches on
Deployments, Services and HTTPRoutes (by the ``sluice.dev/rollout`` label) and on pods.

Then it measures the CPU time of the sandbox's thread only (the API server, the store, both
simulators; not the clients) in two phases:

- **quiet**: nothing changes; the simulators tick and the watches idle;
- **churn**: every second, ``--steps`` Rollouts take a step: the route's weights move, and
  every other step the canary gets a new image (a rolling update: new pods, old pods
  terminating then removed); the client GETs what a reconcile pass reads (both
  Deployments, both Services, the route) and lists the Rollout's pods.

It prints figures; it asserts nothing. Usage:

    python bench/sandbox_bench.py [--rollouts 200] [--seconds 10] [--steps 10] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import io
import json
import logging
import pstats
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from sluice_sandbox.apiserver import SandboxThread, with_controllers
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.gateway import HTTPROUTE_CRD
from sluice_sandbox.store import Store
from sluice_sandbox.traffic import TrafficSimulator
from sluice_sandbox.workloads import WorkloadSimulator

NAMESPACE = "bench"
ROLLOUT_LABEL = "sluice.dev/rollout"
TRACK_LABEL = "sluice.dev/track"
DEADLINE = 300.0
WATCHED = (
    f"/apis/apps/v1/deployments?watch=true&labelSelector={ROLLOUT_LABEL}",
    f"/api/v1/services?watch=true&labelSelector={ROLLOUT_LABEL}",
    f"/apis/gateway.networking.k8s.io/v1/httproutes?watch=true&labelSelector={ROLLOUT_LABEL}",
    "/api/v1/pods?watch=true",
)


# ----- The objects of one Rollout -----


def deployment(rollout: str, track: str, replicas: int, image: str) -> dict[str, Any]:
    name = rollout if track == "stable" else f"{rollout}-canary"
    pod_labels = {"app": rollout, TRACK_LABEL: track}
    return {
        "metadata": {"name": name, "labels": {ROLLOUT_LABEL: rollout, TRACK_LABEL: track}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": pod_labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 80}]}]},
            },
        },
    }


def service(rollout: str, track: str) -> dict[str, Any]:
    name = rollout if track == "stable" else f"{rollout}-canary"
    return {
        "metadata": {"name": name, "labels": {ROLLOUT_LABEL: rollout, TRACK_LABEL: track}},
        "spec": {"selector": {"app": rollout, TRACK_LABEL: track}, "ports": [{"port": 80}]},
    }


def backends(rollout: str, canary_weight: int) -> list[dict[str, Any]]:
    return [
        {"name": rollout, "port": 80, "weight": 100 - canary_weight},
        {"name": f"{rollout}-canary", "port": 80, "weight": canary_weight},
    ]


def route(rollout: str) -> dict[str, Any]:
    return {
        "metadata": {"name": rollout, "labels": {ROLLOUT_LABEL: rollout}},
        "spec": {"parentRefs": [{"name": "public"}], "rules": [{"backendRefs": backends(rollout, 0)}]},
    }


async def create_rollouts(store: Store, names: list[str]) -> None:
    await store.create("namespaces", {"metadata": {"name": NAMESPACE}})
    await store.install_crd(HTTPROUTE_CRD)
    for name in names:
        await store.create("deployments", deployment(name, "stable", 2, "web:1"), NAMESPACE)
        await store.create("deployments", deployment(name, "canary", 1, "web:1"), NAMESPACE)
        await store.create("services", service(name, "stable"), NAMESPACE)
        await store.create("services", service(name, "canary"), NAMESPACE)
        await store.create("httproutes", route(name), NAMESPACE)


async def wait_rolled_out(store: Store, timeout: float) -> None:
    """Until every Deployment reports all its replicas ready and updated (one watch, event-driven)."""

    def done(obj: dict[str, Any]) -> bool:
        status, meta = obj.get("status") or {}, obj["metadata"]
        replicas = obj["spec"]["replicas"]
        return bool(
            status.get("observedGeneration") == meta.get("generation")
            and status.get("updatedReplicas")
            == status.get("readyReplicas")
            == status.get("replicas")
            == replicas
        )

    pending: set[str] = set()
    async with asyncio.timeout(timeout):
        listed = await store.list("deployments", NAMESPACE)
        pending = {obj["metadata"]["name"] for obj in listed["items"] if not done(obj)}
        if not pending:
            return
        since = listed["metadata"]["resourceVersion"]
        async with store.watch("deployments", NAMESPACE, resource_version=since) as events:
            async for event in events:
                obj = event["object"]
                if done(obj):
                    pending.discard(obj["metadata"]["name"])
                else:
                    pending.add(obj["metadata"]["name"])
                if not pending:
                    return


# ----- The client: kopf-like watches, and a reconcile pass's reads -----


class Client:
    def __init__(self, url: str) -> None:
        self.url = url
        self.events = 0
        self.requests = 0
        self.steps = 0
        self._session: aiohttp.ClientSession | None = None
        self._watches: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Client:
        headers = {"User-Agent": "sandbox-bench/1.0"}
        self._session = aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=None))
        self._watches = [asyncio.create_task(self._watch(path)) for path in WATCHED]
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self._watches:
            task.cancel()
        await asyncio.gather(*self._watches, return_exceptions=True)
        assert self._session is not None
        await self._session.close()

    async def _watch(self, path: str) -> None:
        assert self._session is not None
        self.requests += 1
        async with self._session.get(self.url + path) as response:
            async for line in response.content:
                if line.strip():
                    json.loads(line)  # as a client decodes it
                    self.events += 1

    async def get(self, path: str) -> Any:
        assert self._session is not None
        self.requests += 1
        async with self._session.get(self.url + path) as response:
            response.raise_for_status()
            return await response.json()

    async def patch(self, path: str, body: dict[str, Any]) -> None:
        assert self._session is not None
        self.requests += 1
        headers = {"Content-Type": "application/merge-patch+json"}
        async with self._session.patch(self.url + path, data=json.dumps(body), headers=headers) as response:
            response.raise_for_status()

    async def step(self, rollout: str, step: int) -> None:
        """One canary step: read like a reconcile pass, move the weight, now and then a new image."""
        self.steps += 1
        ns = f"/namespaces/{NAMESPACE}"
        for path in (
            f"/apis/apps/v1{ns}/deployments/{rollout}",
            f"/apis/apps/v1{ns}/deployments/{rollout}-canary",
            f"/api/v1{ns}/services/{rollout}",
            f"/api/v1{ns}/services/{rollout}-canary",
            f"/apis/gateway.networking.k8s.io/v1{ns}/httproutes/{rollout}",
            f"/api/v1{ns}/pods?labelSelector=app%3D{rollout}",
        ):
            await self.get(path)
        weight = (0, 10, 50, 100)[step % 4]
        await self.patch(
            f"/apis/gateway.networking.k8s.io/v1{ns}/httproutes/{rollout}",
            {"spec": {"rules": [{"backendRefs": backends(rollout, weight)}]}},
        )
        if step % 2 == 0:
            template = {"spec": {"containers": [{"name": "app", "image": f"web:{step + 2}"}]}}
            await self.patch(
                f"/apis/apps/v1{ns}/deployments/{rollout}-canary", {"spec": {"template": template}}
            )


# ----- Measuring the sandbox's thread -----


class ThreadClock:
    """The CPU time of one thread (the sandbox's event loop), and optionally its profile."""

    def __init__(self, sandbox: SandboxThread) -> None:
        self._sandbox = sandbox
        ident = sandbox.run(_thread_ident())
        self._clock = time.pthread_getcpuclockid(ident)
        self.profiler: cProfile.Profile | None = None

    def cpu(self) -> float:
        return time.clock_gettime(self._clock)

    def start_profile(self) -> None:
        self.profiler = cProfile.Profile()
        self._call(self.profiler.enable)  # cProfile profiles the thread that enables it

    def stop_profile(self) -> None:
        if self.profiler is not None:
            self._call(self.profiler.disable)

    def _call(self, function: Callable[[], None]) -> None:
        done = threading.Event()

        def call() -> None:
            function()
            done.set()

        self._sandbox.loop.call_soon_threadsafe(call)
        done.wait(10)


async def _thread_ident() -> int:
    return threading.get_ident()


def profile_summary(profiler: cProfile.Profile, limit: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


async def measure(
    name: str, clock: ThreadClock, seconds: float, load: Callable[[int], Awaitable[None]] | None = None
) -> tuple[float, float, float]:
    """
    CPU seconds of the sandbox per wall second over `seconds`, in all, and the wall seconds.
    `load(t)` runs once a second (when the sandbox cannot keep up, fewer rounds run: see the
    steps counted).
    """
    start_cpu, start = clock.cpu(), time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        if load is not None:
            await load(tick)
        tick += 1
        # The pace of the load (one round a second), not a wait for a condition.
        await asyncio.sleep(max(0.0, start + tick - time.monotonic()))
    elapsed, used = time.monotonic() - start, clock.cpu() - start_cpu
    print(f"{name}: {used / elapsed:.3f} CPU s per simulated s  ({elapsed:.1f}s)", flush=True)
    return used / elapsed, used, elapsed


async def run(args: argparse.Namespace, sandbox: SandboxThread, exporter: MetricsExporter) -> None:
    clock = ThreadClock(sandbox)
    names = [f"r{i:04d}" for i in range(args.rollouts)]
    cpu, started = clock.cpu(), time.monotonic()
    sandbox.run(create_rollouts(sandbox.store, names), timeout=DEADLINE)
    sandbox.run(wait_rolled_out(sandbox.store, DEADLINE), timeout=DEADLINE + 5)
    print(
        f"{args.rollouts} Rollouts created and rolled out in {time.monotonic() - started:.1f}s, "
        f"{clock.cpu() - cpu:.1f} CPU s",
        flush=True,
    )
    pods = len(sandbox.run(sandbox.store.list("pods", NAMESPACE))["items"])
    print(
        f"objects: {2 * len(names)} Deployments, {2 * len(names)} Services, "
        f"{len(names)} HTTPRoutes, {pods} pods"
    )

    async with Client(sandbox.url) as client:
        if args.profile:
            clock.start_profile()
        quiet, _, _ = await measure("quiet", clock, args.seconds)
        events_before, requests_before = client.events, client.requests
        steps = iter(range(10**9))

        async def churn(tick: int) -> None:
            await asyncio.gather(
                *(
                    client.step(names[(tick * args.steps + i) % len(names)], next(steps))
                    for i in range(args.steps)
                )
            )

        _, used, elapsed = await measure(f"churn ({args.steps} steps/s)", clock, args.seconds, churn)
        clock.stop_profile()
        print(
            f"churn: {client.steps} steps, {client.requests - requests_before} client requests, "
            f"{client.events - events_before} watch events delivered; "
            f"{1000 * used / max(client.steps, 1):.1f} CPU ms per step (all in), "
            f"{1000 * (used - quiet * elapsed) / max(client.steps, 1):.1f} over quiet"
        )
    log = getattr(sandbox.server, "requests", None)  # the request log, where the sandbox has one
    if log is not None:
        print(f"request log: {len(log.snapshot())} requests recorded")
    if clock.profiler is not None:
        print(profile_summary(clock.profiler, args.profile_lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rollouts", type=int, default=200, help="Rollout-like object sets (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    parser.add_argument("--steps", type=int, default=10, help="Rollout steps per second when churning")
    parser.add_argument("--profile", action="store_true", help="print the sandbox thread's cProfile")
    parser.add_argument("--profile-lines", type=int, default=40)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with MetricsExporter() as exporter:
        factory = with_controllers(
            functools.partial(WorkloadSimulator, ready_delay=0.2, stop_delay=1.0),
            functools.partial(TrafficSimulator, exporter=exporter),
        )
        with SandboxThread(server_factory=factory) as sandbox:
            asyncio.run(run(args, sandbox, exporter))
    return 0


if __name__ == "__main__":
    sys.exit(main())
