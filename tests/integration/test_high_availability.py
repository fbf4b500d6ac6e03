"""High availability and sharding: real `sluice run` processes against the sandbox API server.

Each operator process talks to the API server through a recording proxy of its
own (tests/apiproxy.py), so every request is known to be that process's, be it
ours or kopf's. Lease durations are short (2 s / 1.5 s / 0.3 s) so that a
takeover takes seconds; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from operators.foundation.cluster import load_api_client
from operators.foundation.keys import ObjectKey
from operators.foundation.shard import object_shard
from operators.rollout.inventory import rollout_key
from operators.rollout.ownership import ROLLOUT_LABEL
from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.gateway import HTTPROUTE_CRD
from sluice_sandbox.prometheus import free_port
from tests.apiproxy import RecordingProxy, Request
from tests.harness import Harness, httproute, route_weights, sluice_crds, status_of
from tests.scenarios import IMAGE_V2, history_messages, looked_at, promoted, web_rollout

pytestmark = pytest.mark.integration

NS = "shop"
LEASE_NS = "default"
LEASE_DURATION = 2
RENEW_DEADLINE = 1.5
RETRY_PERIOD = 0.3
TIMEOUT = 60.0  # a deadline for slow machines, not an expected duration
_RUN = "import sys; from operators.cli import main; sys.exit(main(sys.argv[1:]))"


class OperatorProcess:
    """`sluice run` in a subprocess, through a recording proxy of its own."""

    def __init__(self, sandbox: SandboxThread, tmp: Path, identity: str, *extra: str) -> None:
        self.identity = identity
        self.proxy = RecordingProxy(sandbox.url).__enter__()
        kubeconfig = self.proxy.kubeconfig(sandbox.kubeconfig, tmp / f"{identity}.kubeconfig")
        self.health = f"http://127.0.0.1:{free_port()}/healthz"
        self.webhook_port = free_port()
        self.log = tmp / f"{identity}.log"
        args = [
            "run",
            "--kubeconfig",
            str(kubeconfig),
            "--all-namespaces",
            "--liveness",
            self.health,
            "--metrics-port",
            str(free_port()),
            "--webhook-port",
            str(self.webhook_port),
            "--webhook-addr",
            "127.0.0.1",
            "--webhook-configuration",
            "",
            "--identity",
            identity,
            "--lease-namespace",
            LEASE_NS,
            "--lease-duration",
            str(LEASE_DURATION),
            "--renew-deadline",
            str(RENEW_DEADLINE),
            "--retry-period",
            str(RETRY_PERIOD),
            *extra,
        ]
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _RUN, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(os.environ),
            )

    def probe(self) -> dict[str, Any] | None:
        """The liveness endpoint's JSON (kopf's probes: ours says whether this process leads)."""
        try:
            with urllib.request.urlopen(self.health, timeout=2) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except (OSError, ValueError):
            return None

    def serves_the_webhook(self) -> bool:
        """A Pod CREATE AdmissionReview to this process's webhook is answered (allowed)."""
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0b5e5e2c-1b0f-4a33-9c3e-1f1d3c2e4a5b",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": NS,
                "object": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "p", "namespace": NS},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                },
                "userInfo": {"username": "test"},
                "dryRun": False,
            },
        }
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # its self-signed certificate
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.webhook_port}/sidecarset-inject",
            data=json.dumps(review).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=context) as response:
                return bool(json.loads(response.read())["response"]["allowed"])
        except (OSError, ValueError, KeyError):
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        self.kill()
        try:
            self.process.wait(10)
        finally:
            self.proxy.__exit__()


@contextmanager
def operators(sandbox: SandboxThread, tmp: Path, *specs: tuple[str, ...]) -> Iterator[list[OperatorProcess]]:
    """Start one `sluice run` per spec (identity, extra args...); kill them all on the way out."""
    with ExitStack() as stack:
        started = []
        for identity, *extra in specs:
            process = OperatorProcess(sandbox, tmp, identity, *extra)
            stack.callback(process.close)
            started.append(process)
        try:
            yield started
        except BaseException as error:
            for process in started:
                error.add_note(f"--- {process.identity}'s log (last lines) ---\n{process.tail()}")
            raise


def wait_for(what: str, condition: Callable[[], Any], timeout: float = TIMEOUT, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)  # between polls, bounded by the deadline
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def lease(h: Harness, name: str) -> dict[str, Any]:
    """The spec of the Lease `name` ({} while there is none)."""
    body = h.cluster.get(ObjectKey("coordination.k8s.io/v1", "Lease", LEASE_NS, name))
    return dict((body or {}).get("spec") or {})


class RouteWeights:
    """The canary weight of an HTTPRoute, as a watch delivers every change, in a thread."""

    def __init__(self, kubeconfig: Path, namespace: str, name: str) -> None:
        self.api = kubernetes.client.CustomObjectsApi(load_api_client(str(kubeconfig)))
        self.namespace, self.name = namespace, name
        self.changes: list[tuple[float, int, int]] = []  # (time.monotonic(), canary weight, generation)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route-weights", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> RouteWeights:
        listed = self.api.list_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes"
        )
        for item in listed["items"]:
            self._record(item)
        self._version = listed["metadata"]["resourceVersion"]
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def weights(self) -> list[int]:
        """The canary weights in order, each change once."""
        return [weight for _, weight, _ in self.changes]

    def _record(self, route: dict[str, Any]) -> None:
        if route["metadata"]["name"] != self.name:
            return
        weight = route_weights(route).get(f"{self.name}-canary", 0)
        if not self.changes or self.changes[-1][1] != weight:
            self.changes.append((time.monotonic(), weight, route["metadata"].get("generation", 0)))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                watch = kubernetes.watch.Watch()
                for event in watch.stream(
                    self.api.list_namespaced_custom_object,
                    "gateway.networking.k8s.io",
                    "v1",
                    self.namespace,
                    "httproutes",
                    resource_version=self._version,
                    timeout_seconds=2,
                ):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(event["object"])
                    if self._stop.is_set():
                        watch.stop()
                self._version = watch.resource_version or self._version
        except BaseException as error:  # surfaced by the test
            self.error = error


def install(sandbox: SandboxThread) -> Harness:
    for crd in [*sluice_crds(), HTTPROUTE_CRD]:
        sandbox.run(sandbox.server.install_crd(crd))
    h = Harness(sandbox.kubeconfig)
    h.ensure_namespace(NS)
    return h


# ----- who wrote what -----

_KOPF = " kopf/"


def rollout_of(request: Request) -> str | None:
    """The Rollout a write was about: its own path, its objects' label, or an Event's involvedObject."""
    parts = request.path.strip("/").split("/")
    if "rollouts" in parts and len(parts) > parts.index("rollouts") + 1:
        return parts[parts.index("rollouts") + 1]
    body = request.body if isinstance(request.body, dict) else {}
    involved = body.get("involvedObject") or body.get("regarding") or {}
    if involved.get("kind") == "Rollout":
        return str(involved.get("name"))
    labels = (body.get("metadata") or {}).get("labels") or {}
    if labels.get(ROLLOUT_LABEL):
        return str(labels[ROLLOUT_LABEL])
    return None


def ours(request: Request) -> bool:
    """A write by Sluice's own code (not kopf's bookkeeping, not the Lease)."""
    return request.write and _KOPF not in request.user_agent and "/leases" not in request.path


def kopf_writes(process: OperatorProcess) -> list[Request]:
    return [r for r in process.proxy.writes() if _KOPF in r.user_agent]


def only_kopf_finalizers(requests: list[Request]) -> bool:
    """kopf's own writes with our handlers: its finalizer, added (or removed on deletion) by a JSON
    patch with a `test` on the resourceVersion (so of racing replicas one wins, the other gets a 422
    and finds it there on the next event); nothing else."""
    allowed = {("test", "/metadata/resourceVersion"), ("add", "/metadata/finalizers")}
    allowed |= {("replace", "/metadata/finalizers"), ("remove", "/metadata/finalizers")}
    for r in requests:
        operations = r.body if isinstance(r.body, list) else None
        if r.method != "PATCH" or operations is None:
            return False
        if any((op.get("op"), op.get("path")) not in allowed for op in operations):
            return False
    return True


# ----- two replicas: the leader killed mid-release -----


def test_the_leader_killed_mid_release_the_other_takes_over_and_the_weights_never_move(
    sandbox_api: SandboxThread, tmp_path: Path
) -> None:
    h = install(sandbox_api)
    with operators(sandbox_api, tmp_path, ("op-a",), ("op-b",)) as (a, b):
        by_identity = {a.identity: a, b.identity: b}
        holder = wait_for("a leader", lambda: lease(h, "sluice-operator").get("holderIdentity"))
        leader, follower = by_identity[holder], by_identity[({"op-a", "op-b"} - {holder}).pop()]
        # Exactly one leads, by the Lease and by each process's own word; both serve the webhook.
        wait_for("both processes up", lambda: leader.probe() and follower.probe())
        assert leader.probe() == {"leading": True} and follower.probe() == {"leading": False}
        assert wait_for("the leader's webhook", leader.serves_the_webhook, timeout=20)
        assert wait_for("the follower's webhook", follower.serves_the_webhook, timeout=20)

        steps = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"setWeight": 100}]
        h.apply_rollout(NS, web_rollout(steps=steps))
        first = h.wait_rollout(
            NS, "web", lambda r: status_of(r).get("phase") == "Healthy", TIMEOUT, "Healthy"
        )
        stable = status_of(first)["stableRevision"]
        with RouteWeights(sandbox_api.kubeconfig, NS, "web") as route:
            h.set_image(NS, "web", IMAGE_V2)
            paused = h.wait_rollout(
                NS, "web", lambda r: status_of(r).get("phase") == "Paused", TIMEOUT, "the pause at 20%"
            )
            assert (status_of(paused)["currentStepIndex"], status_of(paused)["canaryWeight"]) == (1, 20)
            route_before = h.read(httproute(NS, "web"))
            transitions = lease(h, "sluice-operator")["leaseTransitions"]

            # The follower wrote nothing of ours: only kopf's finalizer, which every replica wants.
            assert [r for r in follower.proxy.writes() if ours(r)] == []
            assert only_kopf_finalizers(kopf_writes(follower))
            assert any(ours(r) for r in leader.proxy.writes())

            leader.kill(signal.SIGKILL)
            killed = time.monotonic()
            wait_for(
                "the follower to take the Lease",
                lambda: lease(h, "sluice-operator").get("holderIdentity") == follower.identity,
                poll=0.02,
            )
            takeover = time.monotonic() - killed
            print(f"takeover {takeover:.2f}s after SIGKILL (lease {LEASE_DURATION}s, retry {RETRY_PERIOD}s)")
            # Never before the Lease expired: the old leader's last renewal was at most one retry
            # period before the kill. (How soon after is the elector's unit tests' business, on a
            # fake clock: a wall-clock bound here would only measure the machine's load.)
            assert takeover >= LEASE_DURATION - RETRY_PERIOD, f"taken over after {takeover:.2f}s"
            assert lease(h, "sluice-operator")["leaseTransitions"] == transitions + 1

            # The new leader has looked at the Rollout (it reports a harmless spec change it saw)...
            after = looked_at(h, NS, "web", TIMEOUT, "the new leader to observe the Rollout")
            # ...and resumed it where it was, the route untouched.
            status = status_of(after)
            assert (status["phase"], status["currentStepIndex"], status["canaryWeight"]) == ("Paused", 1, 20)
            route_after = h.read(httproute(NS, "web"))
            assert route_after["metadata"]["generation"] == route_before["metadata"]["generation"]
            assert route_weights(route_after) == {"web": 80, "web-canary": 20}

            h.annotate(NS, "web", "sluice.dev/promote", "after-takeover")
            done = h.wait_rollout(
                NS, "web", lambda r: promoted(status_of(r), stable), TIMEOUT, "the release to be promoted"
            )
        assert route.error is None, route.error
        # Every weight the route ever had, in order: exactly the steps', then back to the stable.
        assert route.weights() == [0, 20, 50, 100, 0], route.changes
        assert [t for t, *_ in route.changes[2:]] and all(t > killed for t, *_ in route.changes[2:])
        assert len(history_messages(done, "release-started")) == 1, "the release was not restarted"
        # One writer at a time: the dead leader before the kill, the new one after.
        assert all(r.started < killed for r in leader.proxy.writes() if ours(r))
        assert all(r.started > killed for r in follower.proxy.writes() if ours(r))

        # A clean shutdown releases the Lease at once (no successor has to wait it out).
        follower.kill(signal.SIGTERM)
        assert follower.wait(30) == 0
        assert lease(h, "sluice-operator")["holderIdentity"] == ""


# ----- two shards: each Rollout has one writer -----


def test_two_shards_never_write_the_same_rollout(sandbox_api: SandboxThread, tmp_path: Path) -> None:
    h = install(sandbox_api)
    names = [f"app-{i}" for i in range(12)]
    by_shard: dict[int, list[str]] = {0: [], 1: []}
    for name in names:
        by_shard[object_shard(NS, name, 2)].append(name)
    chosen = by_shard[0][:2] + by_shard[1][:2]  # two of each
    with operators(
        sandbox_api, tmp_path, ("shard-0", "--shard", "0/2"), ("shard-1", "--shard", "1/2")
    ) as shards:
        for index, process in enumerate(shards):
            wait_for(
                f"shard {index} to lead its own Lease",
                lambda index=index, process=process: (
                    lease(h, f"sluice-operator-shard-{index}-of-2").get("holderIdentity") == process.identity
                ),
            )
        for name in chosen:
            h.apply_rollout(NS, web_rollout(name=name))
        for name in chosen:
            h.wait_rollout(
                NS, name, lambda r: status_of(r).get("phase") == "Healthy", TIMEOUT, f"{name} Healthy"
            )

        writers: dict[str, set[str]] = {name: set() for name in chosen}
        for process in shards:
            for request in process.proxy.writes():
                rollout = rollout_of(request)
                if ours(request) and rollout in writers:
                    writers[rollout].add(process.identity)
        assert writers == {name: {f"shard-{object_shard(NS, name, 2)}"} for name in chosen}
        # kopf, in both shards, only keeps its finalizer on every Rollout: added, no back and forth
        # (a second try at most, after losing the race to the other shard: a 422 on its `test`).
        for process in shards:
            finalizers = kopf_writes(process)
            assert only_kopf_finalizers(finalizers)
            per_rollout = [rollout_of(r) for r in finalizers]
            assert all(per_rollout.count(name) <= 2 for name in chosen), per_rollout
        # Deleting a Rollout is not held up by the finalizer both shards' kopf wanted on it.
        gone = chosen[0]
        h.cluster.delete(rollout_key(NS, gone))
        wait_for(f"{gone} to be deleted", lambda: h.cluster.get(rollout_key(NS, gone)) is None)
        for process in shards:
            assert only_kopf_finalizers(kopf_writes(process)), "on deletion too: its finalizer removed"
