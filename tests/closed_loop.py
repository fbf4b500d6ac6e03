"""Closed-loop release scenarios: what tests/integration/test_closed_loop.py drives them with.

The loop under test: the traffic simulator turns the HTTPRoute's weights into requests, each
version serving them as its pod template says (``sandbox.sluice.dev/error-rate``,
``SANDBOX_LATENCY_MS``...); the real Prometheus scrapes them; the real operator's analysis reads
Prometheus and sets the weights again. The tests never set a metric: they release versions.

Throughout, tests/invariants.py checks that no route gives weight to a Service without ready
pods; and the simulated gateway's counters tell whether users saw a 503
(:func:`assert_no_gateway_errors`).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from operators.analysis.templates import QueryContext, render_query
from operators.api.rollout import Metric
from operators.foundation.cluster import KubeError
from operators.operator_thread import OperatorThread
from operators.rollout.ownership import STABLE
from sluice_sandbox.environment import Sandbox, SandboxOptions
from sluice_sandbox.exporter import UNAVAILABLE_CODE, MetricsExporter
from sluice_sandbox.prometheus import PrometheusServer
from sluice_sandbox.traffic import outages, selected_ready_pods
from tests.harness import POLL_SECONDS, Harness, deployment, httproute, route_weights, service, status_of
from tests.invariants import TrafficInvariant
from tests.scenarios import IMAGE_V1, RELEASE_TIMEOUT, Scene, error_rate_analysis, promoted, web_rollout

NAME = "web"
CANARY = f"{NAME}-canary"
# The analysis interval, which is also the queries' rate() window: at the sandbox's 1s scrape
# interval, 3s holds the three scrapes a rate needs to be steady.
INTERVAL = "3s"
INTERVAL_SECONDS = 3.0
READY_DELAY = 0.3
MAX_ERROR_RATE = 0.1
MAX_P99_SECONDS = 0.3
SAMPLE_SECONDS = 0.05
KUBECTL_TIMEOUT = 30.0


# ---- the sandbox ------------------------------------------------------------------------------------


def sandbox_in(directory: Path) -> Sandbox:
    """A sandbox (not started: use it as a context manager) with quick pods, its kubeconfig in `directory`."""
    return Sandbox(SandboxOptions(kubeconfig=directory / "kubeconfig", ready_delay=READY_DELAY))


def running_prometheus(sandbox: Sandbox) -> PrometheusServer:
    assert sandbox.prometheus is not None, "the sandbox runs no Prometheus of its own"
    return sandbox.prometheus


def stop_operator(sandbox: Sandbox) -> OperatorThread:
    """Stop the sandbox's operator; returns it (its options start the next one)."""
    assert sandbox.operator is not None, "the sandbox runs no operator"
    sandbox.operator.stop()
    return sandbox.operator


def start_operator(sandbox: Sandbox, stopped: OperatorThread) -> None:
    """A new operator with the options of the `stopped` one, as a restarted pod would be."""
    sandbox.operator = OperatorThread(stopped.options).start()


def restart_operator(sandbox: Sandbox) -> None:
    start_operator(sandbox, stop_operator(sandbox))


def scene_on(sandbox: Sandbox, namespace: str) -> Scene:
    """A Scene (tests/scenarios.py) in a new `namespace` of the sandbox."""
    assert sandbox.exporter is not None, "the sandbox is not started"
    harness = Harness(sandbox.options.kubeconfig)
    harness.ensure_namespace(namespace)
    return Scene(
        harness=harness,
        namespace=namespace,
        exporter=sandbox.exporter,
        prometheus_url=sandbox.prometheus_url,
        restart_operator=functools.partial(restart_operator, sandbox),
    )


# ---- the Rollout and its releases ------------------------------------------------------------------


def loop_analysis(prometheus_url: str, *, error_limit: int = 2) -> dict[str, Any]:
    """The built-in error rate and p99 latency of the canary, checked every INTERVAL."""
    analysis = error_rate_analysis(
        prometheus_url, error_limit=error_limit, interval=INTERVAL, max_error_rate=MAX_ERROR_RATE
    )
    error_rate = analysis["metrics"][0]
    latency = {"name": "latency-p99", "template": "request-duration-p99"}
    analysis["metrics"].append({**error_rate, **latency, "thresholdRange": {"max": MAX_P99_SECONDS}})
    return analysis


def loop_rollout(scene: Scene, steps: list[dict[str, Any]] | None = None, **analysis: Any) -> dict[str, Any]:
    """scenarios.web_rollout (4 replicas; 20%, a 1s pause, 50%, 100% by default) with loop_analysis."""
    return web_rollout(steps=steps, analysis=loop_analysis(scene.prometheus_url, **analysis))


def release(
    scene: Scene,
    image: str,
    *,
    annotations: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    spec: Mapping[str, Any] | None = None,
) -> int:
    """Release a version: `image`, with these pod `annotations` and container `env` (and no others),
    and `spec` merged into the same patch. Returns the Rollout's new generation."""
    h, ns = scene.harness, scene.namespace
    template = h.rollout(ns, NAME)["spec"]["template"]
    container = template["spec"]["containers"][0]
    container["image"] = image
    container.pop("env", None)
    if env:
        container["env"] = [{"name": key, "value": value} for key, value in env.items()]
    metadata = template.setdefault("metadata", {})
    # A merge patch merges maps: the previous version's annotations are removed with nulls.
    metadata["annotations"] = {**dict.fromkeys(metadata.get("annotations") or {}), **(annotations or {})}
    patched = h.patch_rollout(ns, NAME, {"spec": {**(spec or {}), "template": template}})
    return int(patched["metadata"]["generation"])


def builtin_query(template: str, namespace: str) -> str:
    """A built-in query template, rendered exactly as the analysis renders it for the canary."""
    metric = Metric.model_validate({"name": template, "template": template, "thresholdRange": {"max": 1}})
    return render_query(metric, QueryContext(namespace, NAME, CANARY, NAME, "", INTERVAL))


def requests_per_second(namespace: str, service: str) -> str:
    """The requests per second a Service serves, over the last INTERVAL."""
    return f'sum(rate(http_requests_total{{namespace="{namespace}",service="{service}"}}[{INTERVAL}]))'


def canary_weight(scene: Scene) -> int:
    return route_weights(scene.harness.get(httproute(scene.namespace, NAME))).get(CANARY, 0)


def managed_objects(scene: Scene) -> dict[str, Any]:
    """What the operator writes of each object it manages (status aside): equal means untouched."""
    h, ns = scene.harness, scene.namespace
    keys = [deployment(ns, NAME), deployment(ns, CANARY), service(ns, NAME), service(ns, CANARY)]
    written = {}
    for key in [*keys, httproute(ns, NAME)]:
        body = h.read(key)
        meta = body["metadata"]
        written[f"{key.kind}/{key.name}"] = (meta.get("labels"), meta.get("annotations"), body["spec"])
    return written


def image_of(scene: Scene, name: str) -> str:
    body = scene.harness.read(deployment(scene.namespace, name))
    return str(body["spec"]["template"]["spec"]["containers"][0]["image"])


# ---- waiting -------------------------------------------------------------------------------------------


def wait_status(
    scene: Scene, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = RELEASE_TIMEOUT
) -> dict[str, Any]:
    """Poll the Rollout until ``predicate(status)``; returns the Rollout."""
    return scene.harness.wait_rollout(
        scene.namespace, NAME, lambda body: predicate(status_of(body)), timeout, what
    )


def timed_wait(scene: Scene, read: Callable[[], Any], predicate: Callable[[Any], bool], what: str) -> float:
    """Poll ``read()`` until ``predicate`` holds; returns when (time.monotonic()) it was seen."""
    scene.harness.wait(read, predicate, RELEASE_TIMEOUT, what)
    return time.monotonic()


def wait_promoted(scene: Scene, stable_before: str) -> dict[str, Any]:
    return wait_status(
        scene,
        lambda s: promoted(s, stable_before),
        "the release to be promoted",
    )


def wait_paused_at(scene: Scene, step: int, weight: int, what: str) -> dict[str, Any]:
    return wait_status(
        scene,
        lambda s: (
            (s.get("phase"), s.get("currentStepIndex"), s.get("canaryWeight")) == ("Paused", step, weight)
        ),
        what,
    )


def wait_observed(
    scene: Scene, generation: int, predicate: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Wait until the operator has acted on `generation` of the spec and ``predicate(status)`` holds."""
    return wait_status(scene, lambda s: s.get("observedGeneration") == generation and predicate(s), what)


# ---- reading a release's record -----------------------------------------------------------------------


def release_log(body: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(action, message) of the history since the latest release started, oldest first."""
    entries = [(e["action"], e["message"]) for e in reversed(status_of(body).get("history") or [])]
    starts = [index for index, (action, _) in enumerate(entries) if action == "release-started"]
    return entries[starts[-1] :] if starts else []


def four_steps_log(stable: str, canary: str, *paused: tuple[str, str]) -> list[tuple[str, str]]:
    """The release log of web_rollout's default steps (20%, pause, 50%, 100%) run to promotion;
    `paused` are the entries the pause step records before it is done (e.g. a promote)."""
    return [
        ("release-started", f"release of revision {canary} started (stable {stable})"),
        ("set-weight", "canary weight 0% -> 20%"),
        ("step", "step 1/4 done"),
        *paused,
        ("step", "step 2/4 done"),
        ("set-weight", "canary weight 20% -> 50%"),
        ("step", "step 3/4 done"),
        ("set-weight", "canary weight 50% -> 100%"),
        ("step", "step 4/4 done"),
        ("promoted", f"revision {canary} promoted to stable"),
    ]


def warnings(scene: Scene, reason: str) -> list[dict[str, Any]]:
    return [
        event
        for event in scene.harness.events(scene.namespace, NAME)
        if (event.get("type"), event.get("reason")) == ("Warning", reason)
    ]


def assert_rolled_back(scene: Scene, body: Mapping[str, Any], stable: str, phase: str, event: str) -> None:
    """All traffic back on the untouched stable version; the Rollout and an Event say so."""
    status = status_of(body)
    assert status["phase"] == phase and status["canaryWeight"] == 0, status
    assert route_weights(scene.harness.get(httproute(scene.namespace, NAME))) == {NAME: 100, CANARY: 0}
    assert status["stableRevision"] == stable
    assert image_of(scene, NAME) == IMAGE_V1, "the stable version is untouched"
    scene.harness.wait(
        lambda: [e["message"] for e in warnings(scene, event)],
        lambda messages: status["message"] in messages,
        RELEASE_TIMEOUT,
        f"a Warning event {event} saying {status['message']!r}",
    )


# ---- the stable version serves throughout --------------------------------------------------------------


class StableSampler:
    """Samples the stable version in a thread while a release runs (a context manager).

    The stable version must serve at full strength throughout: neither its Deployment's
    readyReplicas nor the ready pods behind its Service ever under spec.replicas. Both are read:
    the workload simulator writes a Deployment's status only once none of its pods is starting,
    so during a rolling update only the pods tell how many serve. Between samples the sampler
    rests SAMPLE_SECONDS: its pace, not a wait.
    """

    def __init__(self, scene: Scene) -> None:
        self._harness = Harness(scene.harness.kubeconfig)  # its own client, for its own thread
        self._namespace = scene.namespace
        self.samples: list[tuple[int, int, int]] = []  # (readyReplicas, ready pods, spec.replicas)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stable-sampler", daemon=True)

    def __enter__(self) -> StableSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        stable = self._harness.read(service(self._namespace, NAME))
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                body = self._harness.read(deployment(self._namespace, NAME))
                pods = self._harness.cluster.list_objects("v1", "Pod", self._namespace)
            except KubeError:
                continue  # e.g. a slow answer under load: the next sample counts
            ready = int((body.get("status") or {}).get("readyReplicas") or 0)
            serving = len(selected_ready_pods(stable, pods))
            self.samples.append((ready, serving, int(body["spec"]["replicas"])))

    def shortfalls(self) -> list[tuple[int, int, int]]:
        return [sample for sample in self.samples if min(sample[:2]) < sample[2]]


def assert_stable_served(sandbox: Sandbox, sampler: StableSampler, namespace: str) -> None:
    """The stable version at full strength throughout, and its Service never without ready pods."""
    assert len(sampler.samples) > 10, f"too few samples of the stable Deployment: {sampler.samples}"
    short = sampler.shortfalls()
    assert not short, f"(readyReplicas, ready pods, spec.replicas) with the stable short: {short}"
    assert sandbox.traffic is not None
    assert not outages(sandbox.traffic.history, namespace=namespace, track=STABLE)


# ---- what users see: traffic only where pods serve, no 503 at the gateway --------------------------------


def traffic_invariant(scene: Scene) -> TrafficInvariant:
    """The scene's namespace checked for weight on Services without ready pods (tests/invariants.py),
    through a client of its own (the check polls in its own thread). Use it as a context manager."""
    return TrafficInvariant(Harness(scene.harness.kubeconfig).cluster, scene.namespace)


def gateway_snapshot(exporter: MetricsExporter, namespace: str, route: str = NAME) -> dict[str, float]:
    """The gateway's totals of `route` by status code, taken once it answers no 503 (its 503 count
    holds still between two reads). The traffic simulator counts by what it saw at its last tick
    (every 0.5s): right after an install, whose route may name pods that were still starting, the
    503s of that tick may still be counting though the pods are ready now."""
    deadline = time.monotonic() + RELEASE_TIMEOUT
    previous: dict[str, float] | None = None
    while True:
        try:
            totals: dict[str, float] | None = exporter.gateway_totals(namespace, route)
        except KeyError:
            totals = None  # not simulated yet
        if totals and previous and totals[UNAVAILABLE_CODE] == previous[UNAVAILABLE_CODE]:
            return totals
        if time.monotonic() >= deadline:
            what = "counted the route" if totals is None else f"stopped answering 503 (totals {totals})"
            raise AssertionError(f"the gateway of {namespace}/{route} never {what}")
        previous = totals
        time.sleep(POLL_SECONDS)  # polling interval, bounded by the deadline


def assert_no_gateway_errors(
    exporter: MetricsExporter, namespace: str, route: str, since: Mapping[str, float]
) -> None:
    """No request to `route` answered 503 since the `since` snapshot (:func:`gateway_snapshot`),
    and some were answered: users never met a backend without ready pods."""
    now = exporter.gateway_totals(namespace, route)
    served = sum(now.values()) - sum(since.values())
    failed = now.get(UNAVAILABLE_CODE, 0.0) - since.get(UNAVAILABLE_CODE, 0.0)
    assert served > 0, f"the gateway counted no request to {namespace}/{route} since the snapshot"
    assert failed == 0, (
        f"the gateway answered {failed:.1f} of {served:.1f} requests to {namespace}/{route} with 503: "
        "weight on a backend without ready pods"
    )


# ---- the real kubectl -----------------------------------------------------------------------------------

KUBECTL = shutil.which("kubectl")


def kubectl(scene: Scene, cache_dir: Path, *args: str) -> str:
    """Run the real kubectl on the scene's namespace; its output (it must succeed)."""
    assert KUBECTL is not None, "kubectl is not installed"
    command = [
        KUBECTL,
        f"--kubeconfig={scene.harness.kubeconfig}",
        f"--cache-dir={cache_dir}",
        f"--namespace={scene.namespace}",
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT, check=False)
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result.stdout
