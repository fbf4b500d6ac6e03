"""Closed-loop judging (issue #14): canary against stable, minRequests, dry run, slo-burn-rate.

As in test_closed_loop.py, everything is real (the sandbox's API server, pods and traffic
simulator, a real Prometheus, the real operator) and no test sets a metric: each version fails
the share of requests its pod template says (``sandbox.sluice.dev/error-rate``), the stable
included, and what Prometheus sees of it decides the release.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from operators.analysis.templates import QueryContext, render_query
from operators.api.rollout import Metric
from sluice_sandbox.behaviour import ERROR_RATE_ANNOTATION
from sluice_sandbox.environment import Sandbox
from tests.closed_loop import (
    CANARY,
    INTERVAL,
    NAME,
    canary_weight,
    release,
    running_prometheus,
    sandbox_in,
    scene_on,
    traffic_invariant,
    wait_status,
    warnings,
)
from tests.harness import status_of
from tests.scenarios import IMAGE_V2, Scene, deploy_stable, promoted, web_rollout

pytestmark = pytest.mark.integration

IMAGE_V3 = "ghcr.io/acme/web:3.0.0"
BAD_DAY = {ERROR_RATE_ANNOTATION: "0.02"}  # 2% of requests fail: the stable's and a canary's
BROKEN = {ERROR_RATE_ANNOTATION: "0.2"}
# Two steps below 100%: a comparison needs the stable to serve requests in the window; promotion
# moves the rest of the traffic.
STEPS: list[dict[str, Any]] = [{"setWeight": 20}, {"setWeight": 50}]


@pytest.fixture(scope="module")
def sandbox(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with sandbox_in(tmp_path_factory.mktemp("judging")) as started:
        yield started


@pytest.fixture
def loop(sandbox: Sandbox, metrics_namespace: str) -> Iterator[Scene]:
    scene = scene_on(sandbox, metrics_namespace)
    with traffic_invariant(scene):
        yield scene


def analysis(scene: Scene, metrics: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    prometheus = {"address": scene.prometheus_url, "timeout": "2s"}
    return {
        "interval": INTERVAL,
        "failureLimit": 0,
        "errorLimit": 2,
        "inconclusiveLimit": 20,
        "minChecksPerStep": 1,
        "metrics": [{"prometheus": prometheus, **metric} for metric in metrics],
        **extra,
    }


def deploy_with(scene: Scene, body: dict[str, Any], annotations: dict[str, str]) -> str:
    body["spec"]["template"]["metadata"]["annotations"] = dict(annotations)
    return deploy_stable(scene, body)


def metric_of(status: dict[str, Any], name: str) -> dict[str, Any] | None:
    last = (status.get("analysis") or {}).get("lastCheck") or {}
    return next((m for m in last.get("metrics") or [] if m["name"] == name), None)


def test_compare_promotes_a_canary_as_bad_as_the_stable_and_rolls_back_a_worse_one(
    sandbox: Sandbox, loop: Scene
) -> None:
    compare = {"name": "vs-stable", "template": "request-error-rate", "compare": {"maxIncrease": 0.01}}
    # What a fixed 1% threshold says of the same versions: recorded, never gating (dryRun).
    fixed = {"name": "fixed-1pct", "template": "request-error-rate", "thresholdRange": {"max": 0.01}}
    body = web_rollout(steps=STEPS, analysis=analysis(loop, [compare, {**fixed, "dryRun": True}]))
    stable = deploy_with(loop, body, BAD_DAY)

    # The SLO burn rate of the 2% stable, through the real Prometheus: 0.02 / (1 - 0.99) = 2.
    burn = Metric(
        name="burn",
        template="slo-burn-rate",
        args={"objective": "0.99", "longWindow": "6s", "shortWindow": INTERVAL},
        threshold_range={"max": 14.4},
    )
    context = QueryContext(loop.namespace, NAME, CANARY, NAME, "", INTERVAL)
    promql = render_query(burn, context, "stable")
    assert running_prometheus(sandbox).wait_for(promql, lambda v: abs(v - 2.0) < 0.05) == pytest.approx(
        2, abs=0.05
    )

    # A canary as bad as the stable: promoted, while the fixed threshold failed it at every check.
    release(loop, IMAGE_V2, annotations=BAD_DAY)
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def noting(status: dict[str, Any]) -> bool:
        judged, dry = metric_of(status, "vs-stable"), metric_of(status, "fixed-1pct")
        if judged and dry and (judged, dry) not in seen:
            seen.append((judged, dry))
        return promoted(status, stable)

    done = wait_status(loop, noting, "the release to be promoted")
    assert seen, "no check was seen during the release"
    judged, dry = seen[0]
    assert judged["outcome"] == "Passed", judged
    assert judged["value"] == pytest.approx(0.02, abs=0.004)
    assert judged["stableValue"] == pytest.approx(0.02, abs=0.004)
    assert judged["message"].startswith("canary 0.0") and "vs stable 0.0" in judged["message"]
    assert (dry["outcome"], dry["dryRun"]) == ("Failed", True), dry
    assert any(
        "dry-run metric fixed-1pct Failed (not gating)" in e["message"]
        for e in warnings(loop, "DryRunMetric")
    )

    # A canary failing 20% against the 2% stable: rolled back at its first check.
    new_stable = status_of(done)["stableRevision"]
    release(loop, IMAGE_V3, annotations=BROKEN)
    degraded = wait_status(loop, lambda s: s.get("phase") == "Degraded", "the rollback")
    status = status_of(degraded)
    assert (status["stableRevision"], status["canaryWeight"], canary_weight(loop)) == (new_stable, 0, 0)
    rolled_back = metric_of(status, "vs-stable")
    assert rolled_back is not None and rolled_back["outcome"] == "Failed", status
    assert rolled_back["value"] == pytest.approx(0.2, abs=0.02)
    assert rolled_back["stableValue"] == pytest.approx(0.02, abs=0.004)
    assert " > 0.01)" in rolled_back["message"] and "vs-stable=" in status["message"], status["message"]


def test_a_canary_with_too_little_traffic_stays_inconclusive_under_min_requests(loop: Scene) -> None:
    errors = {"name": "error-rate", "template": "request-error-rate", "thresholdRange": {"max": 0.1}}
    # At 5% the canary gets 1 request a second of the simulator's 20: about 3 in a 3s window.
    steps: list[dict[str, Any]] = [{"setWeight": 5}, {"setWeight": 50}]
    body = web_rollout(steps=steps, analysis=analysis(loop, [errors], minRequests=100))
    deploy_stable(loop, body)
    release(loop, IMAGE_V2)

    held = wait_status(
        loop, lambda s: (s.get("analysis") or {}).get("inconclusive", 0) >= 2, "two inconclusive checks"
    )
    status = status_of(held)
    assert (status["phase"], status["currentStepIndex"], status["canaryWeight"]) == ("Progressing", 0, 5)
    assert status["analysis"]["passed"] == 0, "a check passed on too little traffic"
    last = status["analysis"]["lastCheck"]
    assert last["outcome"] == "Inconclusive"
    assert 0 < last["canaryRequests"] < 100, last
    [result] = last["metrics"]
    assert result["outcome"] == "Inconclusive"
    assert (
        f"the canary served {last['canaryRequests']:.0f} requests in 3s, fewer than minRequests 100"
        in (result["message"])
    )
    assert canary_weight(loop) == 5
