"""Header routes and mirroring with `traffic.istio`, in the closed loop: the real operator writes
VirtualService routes with Istio's `match` and `mirror`/`mirrorPercentage`, the sandbox's traffic
simulator routes by them (10% of its requests carry ``x-canary: always``), the real Prometheus
scrapes what each version served, and the analysis decides. No test sets a metric: the bad
version's pods fail half their requests. Every VirtualService version the sandbox stores is
checked against Istio's own schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

from sluice_sandbox.environment import Sandbox, SandboxOptions
from sluice_sandbox.exporter import ERROR_CODE, UNAVAILABLE_CODE
from sluice_sandbox.store import Change
from sluice_sandbox.traffic import DEFAULT_MARKED
from tests.closed_loop import (
    CANARY,
    NAME,
    READY_DELAY,
    assert_no_gateway_errors,
    gateway_snapshot,
    loop_analysis,
    release,
    scene_on,
    wait_status,
)
from tests.harness import virtualservice, virtualservice_crd
from tests.integration.test_header_and_mirror import BAD, HEADER_STEP, IMAGE_V3, MEASURED_REQUESTS, served
from tests.reference import ISTIO_NETWORKING, upstream_crd_of, upstream_schema
from tests.scenarios import IMAGE_V2, ISTIO, RELEASE_TIMEOUT, Scene, deploy_stable, web_rollout

pytestmark = pytest.mark.integration

HEADER_ROUTE = "sluice-header-testers"


@pytest.fixture(scope="module")
def istio_sandbox(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    directory: Path = tmp_path_factory.mktemp("istio-header-and-mirror")
    options = SandboxOptions(
        kubeconfig=directory / "kubeconfig", ready_delay=READY_DELAY, crds=[virtualservice_crd()]
    )
    with Sandbox(options) as sandbox:
        yield sandbox


@pytest.fixture
def loop(istio_sandbox: Sandbox, metrics_namespace: str) -> Scene:
    return scene_on(istio_sandbox, metrics_namespace)


@pytest.fixture
def written(istio_sandbox: Sandbox, loop: Scene) -> Iterator[list[dict[str, Any]]]:
    """Every VirtualService version of the test's namespace the sandbox stores; each is checked
    against Istio's schema at the end."""
    api = istio_sandbox.api
    assert api is not None
    seen: list[dict[str, Any]] = []

    def on_change(change: Change) -> None:
        if change.obj["metadata"].get("namespace") == loop.namespace:
            seen.append(change.obj)  # the store's objects are never changed in place: keeping them is safe

    async def subscribe() -> Any:
        return api.store.subscribe(("networking.istio.io", "virtualservices"), on_change)

    unsubscribe = api.run(subscribe())
    yield seen
    api.loop.call_soon_threadsafe(unsubscribe)
    validator = Draft7Validator(upstream_schema(upstream_crd_of("VirtualService", ISTIO_NETWORKING), "v1"))
    for obj in seen:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]
        assert errors == [], f"VirtualService rv {obj['metadata'].get('resourceVersion')}: {obj['spec']}"


def istio_rollout(scene: Scene, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return web_rollout(steps=steps, analysis=loop_analysis(scene.prometheus_url), traffic=ISTIO)


def http_routes(scene: Scene) -> list[dict[str, Any]]:
    return list(scene.harness.get(virtualservice(scene.namespace, NAME))["spec"]["http"])


def split_canary_weight(scene: Scene) -> int:
    """The canary's weight on the split route (the header route sends only marked requests)."""
    (split,) = [route for route in http_routes(scene) if not route["name"].startswith("sluice-")]
    return sum(int(d.get("weight", 0)) for d in split["route"] if d["destination"]["host"] == CANARY)


def wait_header_route(scene: Scene, present: bool) -> None:
    scene.harness.wait(
        lambda: [route["name"] for route in http_routes(scene)],
        lambda names: (HEADER_ROUTE in names) == present,
        RELEASE_TIMEOUT,
        f"the header route to be {'written' if present else 'removed'}",
    )


def test_an_istio_header_route_sends_only_matching_requests_and_a_bad_canary_is_rolled_back(
    loop: Scene, written: list[dict[str, Any]]
) -> None:
    steps: list[dict[str, Any]] = [HEADER_STEP, {"pause": {}}, {"setWeight": 50}, {"setWeight": 100}]
    deploy_stable(loop, istio_rollout(loop, steps))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    ns = loop.namespace

    release(loop, IMAGE_V2)
    wait_header_route(loop, True)
    (header,) = [route for route in http_routes(loop) if route["name"] == HEADER_ROUTE]
    assert header["match"] == [{"headers": {DEFAULT_MARKED.header: {"exact": DEFAULT_MARKED.value}}}]
    assert [route["name"] for route in http_routes(loop)] == [HEADER_ROUTE, "primary"], "first match wins"
    analysed = wait_status(
        loop,
        lambda s: s.get("phase") == "Paused" and s["analysis"]["passed"] >= 1,
        "a passing check on the header-routed requests, then the pause",
    )
    assert analysed["status"]["canaryWeight"] == 0 and split_canary_weight(loop) == 0
    canary_before, stable_before = served(loop.exporter, ns, CANARY)[0], served(loop.exporter, ns, NAME)[0]
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

    release(loop, IMAGE_V3, annotations=BAD)
    degraded = wait_status(loop, lambda s: s.get("phase") == "Degraded", "the bad release to be rolled back")
    assert not degraded["status"].get("headerRoutes")
    assert "error-rate" in degraded["status"]["message"], degraded["status"]["message"]
    wait_header_route(loop, False)
    assert split_canary_weight(loop) == 0
    assert_no_gateway_errors(loop.exporter, loop.namespace, NAME, gateway)  # 500s from the canary, no 503
    assert any(HEADER_ROUTE in [r["name"] for r in obj["spec"]["http"]] for obj in written)


def test_an_istio_mirrored_bad_canary_is_rolled_back_while_users_see_no_error(
    loop: Scene, written: list[dict[str, Any]]
) -> None:
    steps: list[dict[str, Any]] = [
        {"setMirrorRoute": {"name": "shadow", "percent": 50}},
        {"pause": {}},
        {"setWeight": 50},
        {"setWeight": 100},
    ]
    deploy_stable(loop, istio_rollout(loop, steps))
    gateway = gateway_snapshot(loop.exporter, loop.namespace)
    _, canary_errors_before = served(loop.exporter, loop.namespace, CANARY)
    release(loop, IMAGE_V2, annotations=BAD)
    degraded = wait_status(
        loop, lambda s: s.get("phase") == "Degraded", "the mirrored release to be rolled back"
    )
    assert "error-rate" in degraded["status"]["message"], degraded["status"]["message"]
    loop.harness.wait(
        lambda: http_routes(loop),
        lambda http: all("mirror" not in route for route in http),
        RELEASE_TIMEOUT,
        "the mirror to be removed",
    )
    _, canary_errors = served(loop.exporter, loop.namespace, CANARY)
    assert canary_errors > canary_errors_before, "the canary failed mirrored requests: analysis saw them"
    now = loop.exporter.gateway_totals(loop.namespace, NAME)
    for code in (ERROR_CODE, UNAVAILABLE_CODE):
        assert now[code] - gateway[code] == 0, f"users got {now[code] - gateway[code]:.1f} {code}s"
    assert sum(now.values()) > sum(gateway.values())
    mirrored = [route for obj in written for route in obj["spec"]["http"] if "mirror" in route]
    assert mirrored and all(route["mirrorPercentage"] == {"value": 50} for route in mirrored)
