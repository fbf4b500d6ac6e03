"""Closed-loop releases: traffic -> metrics -> analysis -> decision -> traffic again.

Everything runs in the sandbox (sandbox/sluice_sandbox/environment.py): the API server with simulated
pods, the traffic simulator sending requests by the HTTPRoute's weights, a real Prometheus
scraping them, and the real operator. No test sets a metric: a version behaves as its pod
template says (the ``sandbox.sluice.dev/error-rate`` annotation, the ``SANDBOX_LATENCY_MS``
variable), and what Prometheus sees of it decides the release.

One sandbox serves the module (a namespace per test); the tests that stop Prometheus or the
operator get their own, and come first: the module's sandbox starts with its first test, so it
never runs (and loads the machine) beside theirs.

Every scenario's namespace is watched throughout by tests/invariants.py (the `loop` fixtures):
no route may give weight to a Service without ready pods for longer than one reconcile.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sluice_sandbox.behaviour import ERROR_RATE_ANNOTATION, LATENCY_ENV
from sluice_sandbox.environment import Sandbox
from sluice_sandbox.prometheus import PrometheusServer
from sluice_sandbox.workloads import READY_ANNOTATION
from tests.closed_loop import (
    CANARY,
    INTERVAL_SECONDS,
    KUBECTL,
    MAX_ERROR_RATE,
    MAX_P99_SECONDS,
    NAME,
    StableSampler,
    assert_no_gateway_errors,
    assert_rolled_back,
    assert_stable_served,
    builtin_query,
    canary_weight,
    four_steps_log,
    gateway_snapshot,
    image_of,
    kubectl,
    loop_rollout,
    managed_objects,
    release,
    release_log,
    requests_per_second,
    running_prometheus,
    sandbox_in,
    scene_on,
    start_operator,
    stop_operator,
    timed_wait,
    traffic_invariant,
    wait_observed,
    wait_paused_at,
    wait_promoted,
    wait_status,
    warnings,
)
from tests.harness import deployment as deployment_key
from tests.harness import httproute, route_weights, status_of
from tests.scenarios import IMAGE_V1, IMAGE_V2, Scene, deploy_stable, history_messages

pytestmark = pytest.mark.integration

IMAGE_V3 = "ghcr.io/acme/web:3.0.0"
IMAGE_V4 = "ghcr.io/acme/web:4.0.0"
# Weight 20%, then a pause only a person ends, then 50%, another such pause, and 100%.
PAUSES: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {}},
    {"setWeight": 50},
    {"pause": {}},
    {"setWeight": 100},
]
# The shape four_steps_log() expects, with a pause only a person ends.
HELD_AT_20: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"setWeight": 100}]
# How much later than one analysis interval after a breach shows in Prometheus the canary may
# still have traffic. The interval bounds the wait for the next check (due one interval after
# the last); the margin covers the rest: waking the Rollout's loop, the two queries (loopback,
# milliseconds), writing the HTTPRoute (applied before anything else in the same pass), and this
# test's own polling (0.1s per poll, of Prometheus for t0, of the route for t1). A slow machine
# stretches each of these to tenths of a second; a missed check would add a whole interval.
DETECTION_MARGIN = 3.0
# A newer revision takes the traffic from the canary of the older at once: in the pass its watch
# event wakes, with no timer involved (an analysis check, a pause: seconds away).
SUPERSEDE_SECONDS = 2.0


@pytest.fixture(scope="module")
def shared_sandbox(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with sandbox_in(tmp_path_factory.mktemp("closed-loop")) as sandbox:
        yield sandbox


@pytest.fixture
def loop(shared_sandbox: Sandbox, metrics_namespace: str) -> Iterator[Scene]:
    """A namespace of the module's sandbox, its traffic checked throughout (tests/invariants.py)."""
    scene = scene_on(shared_sandbox, metrics_namespace)
    with traffic_invariant(scene):
        yield scene


@pytest.fixture
def own_sandbox(prometheus_binary: str, tmp_path: Path) -> Iterator[Sandbox]:
    """A sandbox for one test that stops its Prometheus or its operator."""
    with sandbox_in(tmp_path) as sandbox:
        yield sandbox


@pytest.fixture
def own_loop(own_sandbox: Sandbox, metrics_namespace: str) -> Iterator[Scene]:
    scene = scene_on(own_sandbox, metrics_namespace)
    with traffic_invariant(scene):
        yield scene


# ---- Prometheus goes down mid-release ---------------------------------------------------------------------

# A timed pause needs a passing check to end: one down Prometheus cannot give. It is two
# intervals long, so a check comes during it whenever Prometheus is stopped within the first.
OUTAGE_STEPS = [HELD_AT_20[0], {"pause": {"duration": "6s"}}, *HELD_AT_20[2:]]


@dataclass
class Outage:
    """A release whose Prometheus went down once its first check had passed (at step 1, 20%)."""

    scene: Scene
    prometheus: PrometheusServer
    stable: str  # the stable revision
    gateway: dict[str, float]  # the gateway's totals before the release
    held: set[tuple[int, int]] = field(default_factory=set)  # (step, weight) seen until rolled back

    def wait(self, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """Wait until ``done(status)``, noting the step and weight of every status seen on the way."""

        def noting(status: dict[str, Any]) -> bool:
            if status.get("phase") != "Degraded":
                self.held.add((status["currentStepIndex"], status["canaryWeight"]))
            return done(status)

        return wait_status(self.scene, noting, what)


def prometheus_down_mid_release(sandbox: Sandbox, scene: Scene, error_limit: int) -> Outage:
    first = deploy_stable(scene, loop_rollout(scene, steps=OUTAGE_STEPS, error_limit=error_limit))
    gateway = gateway_snapshot(scene.exporter, scene.namespace)
    release(scene, IMAGE_V2)
    wait_status(scene, lambda s: s.get("currentStepIndex") == 1, "the first check to pass at 20%")
    prometheus = running_prometheus(sandbox)
    prometheus.stop()
    return Outage(scene, prometheus, first, gateway)


def test_a_release_holds_while_prometheus_is_down_and_goes_on_once_it_is_back(
    own_sandbox: Sandbox, own_loop: Scene
) -> None:
    # Prometheus is back after 2 errors (it restarts in well under a second): far from 7.
    outage = prometheus_down_mid_release(own_sandbox, own_loop, error_limit=6)
    outage.wait(
        lambda s: s["analysis"]["consecutiveErrors"] >= 2 and "pause over" in s["message"],
        "the pause to end with Prometheus down",
    )
    assert outage.held == {(1, 20)}, f"a step advanced while Prometheus was down: {outage.held}"
    assert canary_weight(own_loop) == 20

    outage.prometheus.start()
    done = wait_promoted(own_loop, outage.stable)
    assert release_log(done) == four_steps_log(outage.stable, status_of(done)["stableRevision"])
    assert status_of(done)["analysis"]["consecutiveErrors"] == 0
    assert_no_gateway_errors(own_loop.exporter, own_loop.namespace, NAME, outage.gateway)


def test_a_release_rolls_back_when_prometheus_stays_down_past_error_limit(
    own_sandbox: Sandbox, own_loop: Scene
) -> None:
    outage = prometheus_down_mid_release(own_sandbox, own_loop, error_limit=1)
    degraded = outage.wait(lambda s: s.get("phase") == "Degraded", "the rollback")
    assert outage.held == {(1, 20)}, f"a step advanced while Prometheus was down: {outage.held}"
    status = status_of(degraded)
    assert status["analysis"]["consecutiveErrors"] == 2, "rolled back at the first error past errorLimit 1"
    assert "errorLimit 1" in status["message"] and "unreachable" in status["message"], status["message"]
    assert_rolled_back(own_loop, degraded, outage.stable, "Degraded", "RolledBack")
    assert_no_gateway_errors(own_loop.exporter, own_loop.namespace, NAME, outage.gateway)


# ---- the operator restarts mid-release --------------------------------------------------------------------


def test_a_restarted_operator_resumes_at_the_same_step_with_the_same_weights(
    own_sandbox: Sandbox, own_loop: Scene
) -> None:
    loop = own_loop
    first = deploy_stable(loop, loop_rollout(loop, steps=HELD_AT_20))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    release(loop, IMAGE_V2)
    wait_paused_at(loop, 1, 20, "the release to pause at 20%")

    stopped = stop_operator(own_sandbox)
    before = status_of(loop.harness.rollout(loop.namespace, NAME))
    written = managed_objects(loop)
    start_operator(own_sandbox, stopped)
    # Analysis goes on during a pause: a newer check says the new operator has taken the Rollout up.
    after = wait_status(
        loop,
        lambda s: s["analysis"]["lastCheck"]["time"] != before["analysis"]["lastCheck"]["time"],
        "a check by the restarted operator",
    )
    status = status_of(after)
    assert (status["phase"], status["currentStepIndex"], status["canaryWeight"]) == ("Paused", 1, 20)
    assert status["analysis"]["passed"] > before["analysis"]["passed"], "its counters went on"
    assert managed_objects(loop) == written, "nothing rewritten: same weights, same pods"
    assert canary_weight(loop) == 20

    loop.harness.annotate(loop.namespace, NAME, "sluice.dev/promote", "after-restart")
    done = wait_promoted(loop, first)
    promoted = status_of(done)["stableRevision"]
    promote = ("promote", "pause ended by sluice.dev/promote")
    assert release_log(done) == four_steps_log(first, promoted, promote)
    assert_no_gateway_errors(loop.exporter, loop.namespace, NAME, gateway)


# ---- a healthy release ------------------------------------------------------------------------------


def test_a_healthy_release_is_promoted_step_by_step_while_the_stable_serves(
    shared_sandbox: Sandbox, loop: Scene
) -> None:
    first = deploy_stable(loop, loop_rollout(loop))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    with StableSampler(loop) as sampler:
        release(loop, IMAGE_V2)
        done = wait_promoted(loop, first)
    status = status_of(done)
    assert release_log(done) == four_steps_log(first, status["stableRevision"])
    analysis = status["analysis"]
    assert analysis["passed"] >= 3 and analysis["failed"] == 0, "a passing check at each weight"
    measured = {m["name"]: m["value"] for m in analysis["lastCheck"]["metrics"]}
    assert measured["error-rate"] == 0 and 0 < measured["latency-p99"] < MAX_P99_SECONDS, measured
    assert image_of(loop, NAME) == IMAGE_V2
    assert route_weights(loop.harness.get(httproute(loop.namespace, NAME))) == {NAME: 100, CANARY: 0}
    assert_stable_served(shared_sandbox, sampler, loop.namespace)
    # Invisible to users: not one request met a backend without ready pods. Prometheus has the
    # gateway's series too, as `sluice sandbox` users query them.
    assert_no_gateway_errors(loop.exporter, loop.namespace, NAME, gateway)
    answered = f'sum(gateway_http_requests_total{{namespace="{loop.namespace}",route="{NAME}",code="200"}})'
    running_prometheus(shared_sandbox).wait_for(answered, lambda requests: requests > 0)


# ---- bad releases: the loop takes the traffic back -----------------------------------------------------


@dataclass(frozen=True)
class BadVersion:
    behaviour: dict[str, dict[str, str]]  # release() keywords: pod annotations or container env
    metric: str
    template: str
    threshold: float
    measured: tuple[float, float]  # the range the analysis must have read the metric in


BAD_VERSIONS = [
    pytest.param(
        BadVersion(
            {"annotations": {ERROR_RATE_ANNOTATION: "0.3"}},
            "error-rate",
            "request-error-rate",
            MAX_ERROR_RATE,
            (0.29, 0.31),
        ),
        id="errors",
    ),
    # 400ms requests all land in the (0.25, 0.5] bucket, where histogram_quantile interpolates.
    pytest.param(
        BadVersion(
            {"env": {LATENCY_ENV: "400"}}, "latency-p99", "request-duration-p99", MAX_P99_SECONDS, (0.25, 0.5)
        ),
        id="slow",
    ),
]


@pytest.mark.parametrize("bad", BAD_VERSIONS)
def test_a_bad_release_loses_its_traffic_within_one_interval_of_the_breach(
    shared_sandbox: Sandbox, loop: Scene, bad: BadVersion
) -> None:
    prometheus = running_prometheus(shared_sandbox)
    first = deploy_stable(loop, loop_rollout(loop))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    query = builtin_query(bad.template, loop.namespace)
    with StableSampler(loop) as sampler:
        release(loop, IMAGE_V2, **bad.behaviour)
        loop.harness.wait(lambda: canary_weight(loop), bool, 60, "the canary to get traffic")
        breach = timed_wait(
            loop,
            lambda: prometheus.query(query),
            lambda value: value is not None and value > bad.threshold,
            f"{bad.metric} over {bad.threshold} in Prometheus",
        )
        no_traffic = timed_wait(loop, lambda: canary_weight(loop), lambda w: w == 0, "canary weight 0")
        degraded = wait_status(loop, lambda s: s.get("phase") == "Degraded", "the Rollout to say Degraded")
    assert no_traffic - breach <= INTERVAL_SECONDS + DETECTION_MARGIN, (
        f"the canary kept traffic {no_traffic - breach:.1f}s after the breach showed in Prometheus"
    )
    message = status_of(degraded)["message"]
    match = re.search(rf"{bad.metric}=([0-9.e+-]+) Failed", message)
    assert match, f"the message names the metric and its value: {message}"
    low, high = bad.measured
    assert low <= float(match.group(1)) <= high, message
    assert_rolled_back(loop, degraded, first, "Degraded", "RolledBack")
    assert_stable_served(shared_sandbox, sampler, loop.namespace)
    assert_no_gateway_errors(loop.exporter, loop.namespace, NAME, gateway)  # 500s from the canary, no 503


# ---- people steer a release with kubectl -----------------------------------------------------------------

needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


@pytest.fixture
def kubectl_cache(tmp_path: Path) -> Path:
    return tmp_path / "kubectl-cache"


@needs_kubectl
def test_promote_spec_paused_and_promote_full_with_kubectl(loop: Scene, kubectl_cache: Path) -> None:
    def run(*args: str) -> str:
        return kubectl(loop, kubectl_cache, *args)

    def paused(value: str) -> int:
        run("patch", "rollout", NAME, "--type=merge", "-p", f'{{"spec": {{"paused": {value}}}}}')
        return int(loop.harness.rollout(loop.namespace, NAME)["metadata"]["generation"])

    first = deploy_stable(loop, loop_rollout(loop, steps=PAUSES))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    release(loop, IMAGE_V2)
    wait_paused_at(loop, 1, 20, "the release to pause at 20%")

    held = paused("true")
    wait_observed(loop, held, lambda s: "paused by spec.paused" in s["message"], "spec.paused to hold")
    run("annotate", "rollout", NAME, "sluice.dev/promote=while-paused")
    ignored = wait_status(
        loop, lambda s: s["handledCommands"].get("promote") == "while-paused", "the promote to be handled"
    )
    status = status_of(ignored)
    assert (status["phase"], status["currentStepIndex"], status["canaryWeight"]) == ("Paused", 1, 20)
    assert history_messages(ignored, "promote") == [
        "ignored: spec.paused holds the release; set spec.paused to false to go on"
    ]

    resumed = paused("false")
    wait_observed(loop, resumed, lambda s: "paused until promoted" in s["message"], "the pause step again")
    run("annotate", "--overwrite", "rollout", NAME, "sluice.dev/promote=go")
    wait_paused_at(loop, 3, 50, "the release to pause at 50%")
    run("annotate", "rollout", NAME, "sluice.dev/promote-full=now")
    done = wait_promoted(loop, first)
    log = release_log(done)
    assert ("promote", "pause ended by sluice.dev/promote") in log
    assert log[-2:] == [
        ("promote-full", "remaining steps and analysis skipped"),
        ("promoted", f"revision {status_of(done)['stableRevision']} promoted to stable"),
    ], "100% was never set: promote-full went straight to promotion"
    assert image_of(loop, NAME) == IMAGE_V2
    assert_no_gateway_errors(loop.exporter, loop.namespace, NAME, gateway)


@needs_kubectl
def test_abort_then_retry_with_kubectl(loop: Scene, kubectl_cache: Path) -> None:
    first = deploy_stable(loop, loop_rollout(loop, steps=PAUSES))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    release(loop, IMAGE_V2)
    wait_paused_at(loop, 1, 20, "the release to pause at 20%")

    kubectl(loop, kubectl_cache, "annotate", "rollout", NAME, "sluice.dev/abort=stop")
    aborted = wait_status(loop, lambda s: s.get("phase") == "Aborted", "the abort")
    assert "aborted by the sluice.dev/abort annotation" in status_of(aborted)["message"]
    assert_rolled_back(loop, aborted, first, "Aborted", "Aborted")
    revision = status_of(aborted)["canaryRevision"]

    kubectl(loop, kubectl_cache, "annotate", "rollout", NAME, "sluice.dev/retry=again")
    retried = wait_paused_at(loop, 1, 20, "the retried release to pause at 20% again")
    assert history_messages(retried, "retry") == [f"release of revision {revision} retried"]
    assert len(history_messages(retried, "release-started")) == 2
    assert status_of(retried)["canaryRevision"] == revision
    assert_no_gateway_errors(loop.exporter, loop.namespace, NAME, gateway)


# ---- a newer release while one is in progress ------------------------------------------------------------


def test_the_newest_release_wins(shared_sandbox: Sandbox, loop: Scene) -> None:
    h, ns = loop.harness, loop.namespace
    first = deploy_stable(loop, loop_rollout(loop, steps=[{"setWeight": 20}, {"pause": {}}]))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    release(loop, IMAGE_V2)
    v2 = status_of(wait_paused_at(loop, 1, 20, "v2 to pause at 20%"))["canaryRevision"]

    with StableSampler(loop) as sampler:
        # v3's pods never get ready, so it never takes traffic: what the canary had was v2's.
        sent = time.monotonic()
        release(loop, IMAGE_V3, annotations={READY_ANNOTATION: "false"})
        lost = timed_wait(loop, lambda: canary_weight(loop), lambda w: w == 0, "v2's canary to lose traffic")
        assert lost - sent <= SUPERSEDE_SECONDS, f"v2's canary kept its traffic {lost - sent:.1f}s"
        waiting = wait_status(loop, lambda s: s.get("canaryRevision") != v2, "v3's release to start")
        v3 = status_of(waiting)["canaryRevision"]
        assert (status_of(waiting)["currentStepIndex"], status_of(waiting)["canaryWeight"]) == (0, 0)

        release(loop, IMAGE_V4)  # a healthy version, its template without the annotation
        v4 = status_of(wait_status(loop, lambda s: s.get("canaryRevision") not in (v2, v3), "v4's release"))[
            "canaryRevision"
        ]
        wait_paused_at(loop, 1, 20, "v4 to pause at 20%")
        h.annotate(ns, NAME, "sluice.dev/promote", "v4")
        done = wait_promoted(loop, first)

    assert status_of(done)["stableRevision"] == v4 and image_of(loop, NAME) == IMAGE_V4
    started = history_messages(done, "release-started")
    assert [m.split(" started")[0] for m in started] == [f"release of revision {r}" for r in (v2, v3, v4)]
    assert history_messages(done, "release-superseded") == [
        f"revision {v3} replaces {v2}",
        f"revision {v4} replaces {v3}",
    ]
    assert_stable_served(shared_sandbox, sampler, ns)
    assert_no_gateway_errors(loop.exporter, ns, NAME, gateway)  # v3, never ready, never had a request


# ---- input the schema accepts but that cannot work ------------------------------------------------------

UNDEFINED_VARIABLE = 'sum(rate(http_requests_total{service="{{ canry.service }}"}[{{ interval }}]))'


@pytest.mark.parametrize(
    ("metric", "words"),
    [
        (
            {"name": "requests", "query": UNDEFINED_VARIABLE, "thresholdRange": {"min": 1}},
            ['metric "requests"', "'canry'"],
        ),
        (
            {"name": "errors", "template": "request-error-ratio", "thresholdRange": {"max": 0.1}},
            ['metric "errors"', 'unknown template "request-error-ratio"'],
        ),
    ],
    ids=["undefined-query-variable", "unknown-template"],
)
def test_a_release_whose_query_cannot_render_is_refused_and_the_stable_keeps_serving(
    shared_sandbox: Sandbox, loop: Scene, metric: dict[str, Any], words: list[str]
) -> None:
    first = deploy_stable(loop, loop_rollout(loop))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    before = managed_objects(loop)
    analysis = loop_rollout(loop)["spec"]["strategy"]["canary"]["analysis"]
    analysis["metrics"].append(metric)
    with StableSampler(loop) as sampler:
        # The new image and the broken metric arrive together, as one `kubectl apply` brings them.
        generation = release(loop, IMAGE_V2, spec={"strategy": {"canary": {"analysis": analysis}}})
        blocked = wait_observed(
            loop,
            generation,
            lambda s: (
                ("Stalled", "True", "InvalidSpec")
                in [(c["type"], c["status"], c["reason"]) for c in s.get("conditions") or []]
            ),
            "the release to be refused",
        )
        message = status_of(blocked)["message"]
        assert all(word in message for word in words), message
        loop.harness.wait(
            lambda: [e["message"] for e in warnings(loop, "InvalidSpec")],
            lambda messages: messages == [message],
            30,
            "one Warning event saying so",
        )
        # The stable Service still gets (all) the route's traffic, as Prometheus sees it.
        served = requests_per_second(loop.namespace, NAME)
        running_prometheus(shared_sandbox).wait_for(served, lambda rps: rps > 0)

    status = status_of(blocked)
    assert status["stableRevision"] == first and status.get("canaryRevision") is None
    assert not history_messages(blocked, "release-started")
    assert managed_objects(loop) == before, "nothing written: no canary pods, no weight, stable untouched"
    assert image_of(loop, NAME) == IMAGE_V1
    assert_stable_served(shared_sandbox, sampler, loop.namespace)
    assert_no_gateway_errors(loop.exporter, loop.namespace, NAME, gateway)


# ---- a Deployment deleted mid-release: users never meet a backend without pods ------------------------


@pytest.mark.parametrize("deleted", [NAME, CANARY], ids=["stable", "canary"])
def test_a_deployment_deleted_mid_release_never_routes_users_to_nothing(loop: Scene, deleted: str) -> None:
    h, ns = loop.harness, loop.namespace
    first = deploy_stable(loop, loop_rollout(loop, HELD_AT_20))
    release(loop, IMAGE_V2)
    paused = wait_paused_at(loop, 1, 20, "the release to hold at 20%")
    gateway = gateway_snapshot(loop.exporter, ns)

    h.cluster.delete(deployment_key(ns, deleted))

    def back_and_ready(body: dict[str, Any] | None) -> bool:
        return body is not None and (body.get("status") or {}).get("readyReplicas", 0) >= 1

    back = h.wait(lambda: h.get(deployment_key(ns, deleted)), back_and_ready, 30, f"{deleted} to be back")
    weights = {NAME: 80, CANARY: 20}
    h.wait(lambda: route_weights(h.get(httproute(ns, NAME))), lambda w: w == weights, 30, "weights 80/20")
    # The stable comes back as the stable revision, never as the unchecked canary.
    expected = IMAGE_V1 if deleted == NAME else IMAGE_V2
    assert back["spec"]["template"]["spec"]["containers"][0]["image"] == expected
    after = status_of(h.rollout(ns, NAME))
    assert (after["phase"], after["currentStepIndex"], after["canaryWeight"]) == ("Paused", 1, 20)
    assert (after["stableRevision"], after["canaryRevision"]) == (first, status_of(paused)["canaryRevision"])
    assert_no_gateway_errors(loop.exporter, ns, NAME, gateway)
    if deleted == NAME:
        assert warnings(loop, "StableRecreated")
