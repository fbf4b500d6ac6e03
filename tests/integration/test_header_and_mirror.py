"""Header routes and mirroring in the closed loop: traffic -> Prometheus -> analysis -> the route.

The sandbox's traffic simulator marks 10% of its requests with ``x-canary: always`` (its
default) and honours the header rules and RequestMirror filters Sluice writes; the real
Prometheus scrapes what each version served; the real operator decides. No test sets a metric:
the bad version's pods fail half their requests (``sandbox.sluice.dev/error-rate``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sluice_sandbox.behaviour import ERROR_RATE_ANNOTATION
from sluice_sandbox.environment import Sandbox
from sluice_sandbox.exporter import ERROR_CODE, UNAVAILABLE_CODE, MetricsExporter
from sluice_sandbox.traffic import DEFAULT_MARKED
from tests.closed_loop import (
    CANARY,
    NAME,
    assert_no_gateway_errors,
    gateway_snapshot,
    loop_rollout,
    release,
    sandbox_in,
    scene_on,
    traffic_invariant,
    wait_status,
)
from tests.harness import httproute
from tests.scenarios import IMAGE_V2, RELEASE_TIMEOUT, Scene, deploy_stable

pytestmark = pytest.mark.integration

IMAGE_V3 = "ghcr.io/acme/web:3.0.0"
BAD = {ERROR_RATE_ANNOTATION: "0.5"}
HEADER_STEP = {
    "setHeaderRoute": {
        "name": "testers",
        "matches": [{"headers": [{"name": DEFAULT_MARKED.header, "value": DEFAULT_MARKED.value}]}],
    }
}
HEADER_RULE = "sluice-header-testers"
# Requests to count before the share the canary got is judged: at the sandbox's 50 requests/s, ~4s.
MEASURED_REQUESTS = 200.0


@pytest.fixture(scope="module")
def shared_sandbox(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with sandbox_in(tmp_path_factory.mktemp("header-and-mirror")) as sandbox:
        yield sandbox


@pytest.fixture
def loop(shared_sandbox: Sandbox, metrics_namespace: str) -> Iterator[Scene]:
    scene = scene_on(shared_sandbox, metrics_namespace)
    with traffic_invariant(scene):
        yield scene


def rule_names(scene: Scene) -> list[str]:
    route = scene.harness.get(httproute(scene.namespace, NAME))
    return [rule.get("name", "") for rule in route["spec"]["rules"]]


def weighted_canary_weight(scene: Scene) -> int:
    """The canary's weight on the route's weighted rule (the header rule sends only marked requests)."""
    route = scene.harness.get(httproute(scene.namespace, NAME))
    (weighted,) = [rule for rule in route["spec"]["rules"] if "name" not in rule]
    return sum(int(ref["weight"]) for ref in weighted["backendRefs"] if ref["name"] == CANARY)


def served(exporter: MetricsExporter, namespace: str, service: str) -> tuple[float, float]:
    """(requests, errors) the Service's pods served so far, as the next scrape would see them."""
    counters = exporter.counters(namespace, service)
    return counters.count, counters.errors


def wait_header_rule(scene: Scene, present: bool) -> None:
    scene.harness.wait(
        lambda: rule_names(scene),
        lambda names: (HEADER_RULE in names) == present,
        RELEASE_TIMEOUT,
        f"the header rule to be {'written' if present else 'removed'}",
    )


def test_a_header_route_sends_only_matching_requests_and_a_bad_canary_behind_it_is_rolled_back(
    loop: Scene,
) -> None:
    steps: list[dict[str, Any]] = [HEADER_STEP, {"pause": {}}, {"setWeight": 50}, {"setWeight": 100}]
    deploy_stable(loop, loop_rollout(loop, steps))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    ns = loop.namespace

    # A good version behind the header route: only the marked share reaches it, and it is analysed.
    release(loop, IMAGE_V2)
    wait_header_rule(loop, True)
    analysed = wait_status(
        loop,
        lambda s: s.get("phase") == "Paused" and s["analysis"]["passed"] >= 1,
        "a passing check on the header-routed requests, then the pause",
    )
    assert analysed["status"]["canaryWeight"] == 0 and weighted_canary_weight(loop) == 0
    canary_before, _ = served(loop.exporter, ns, CANARY)
    stable_before, _ = served(loop.exporter, ns, NAME)
    loop.harness.wait(
        lambda: served(loop.exporter, ns, CANARY)[0] + served(loop.exporter, ns, NAME)[0],
        lambda total: total - canary_before - stable_before >= MEASURED_REQUESTS,
        RELEASE_TIMEOUT,
        f"{MEASURED_REQUESTS} requests served",
    )
    canary = served(loop.exporter, ns, CANARY)[0] - canary_before
    stable = served(loop.exporter, ns, NAME)[0] - stable_before
    share = canary / (canary + stable)
    assert abs(share - DEFAULT_MARKED.share) < 0.02, f"the canary served {share:.3f} of the requests"

    # A bad version: a new release, the header route again, analysis fails, the route goes.
    release(loop, IMAGE_V3, annotations=BAD)
    degraded = wait_status(loop, lambda s: s.get("phase") == "Degraded", "the bad release to be rolled back")
    assert not degraded["status"].get("headerRoutes")
    assert "error-rate" in degraded["status"]["message"], degraded["status"]["message"]
    wait_header_rule(loop, False)
    assert weighted_canary_weight(loop) == 0
    assert_no_gateway_errors(loop.exporter, loop.namespace, NAME, gateway)  # 500s from the canary, no 503


def test_a_mirrored_bad_canary_is_rolled_back_while_users_see_no_error(loop: Scene) -> None:
    steps: list[dict[str, Any]] = [
        {"setMirrorRoute": {"name": "shadow", "percent": 50}},
        {"pause": {}},
        {"setWeight": 50},
        {"setWeight": 100},
    ]
    deploy_stable(loop, loop_rollout(loop, steps))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    _, canary_errors_before = served(loop.exporter, loop.namespace, CANARY)
    release(loop, IMAGE_V2, annotations=BAD)
    degraded = wait_status(
        loop, lambda s: s.get("phase") == "Degraded", "the mirrored release to be rolled back"
    )
    assert "error-rate" in degraded["status"]["message"], degraded["status"]["message"]
    route = loop.harness.get(httproute(loop.namespace, NAME))
    assert all("filters" not in rule for rule in route["spec"]["rules"]), "the mirror is removed"
    _, canary_errors = served(loop.exporter, loop.namespace, CANARY)
    assert canary_errors > canary_errors_before, "the canary failed mirrored requests: analysis saw them"
    now = loop.exporter.gateway_totals(loop.namespace, NAME)
    for code in (ERROR_CODE, UNAVAILABLE_CODE):
        assert now[code] - gateway[code] == 0, f"users got {now[code] - gateway[code]:.1f} {code}s"
    assert sum(now.values()) > sum(gateway.values())
