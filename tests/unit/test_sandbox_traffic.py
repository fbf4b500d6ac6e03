"""The traffic simulator: pod behaviour, the split by route weights, the serving history, a tick."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sluice_sandbox.apiserver import SandboxAPIServer
from sluice_sandbox.behaviour import DEFAULT_LATENCY_SECONDS, Behaviour, pod_behaviour
from sluice_sandbox.exporter import MetricsExporter, TrafficSetting
from sluice_sandbox.gateway import HTTPROUTE_CRD
from sluice_sandbox.traffic import (
    PREVIEW_SHARE,
    ServingRecord,
    TrafficIndex,
    TrafficSimulator,
    gateway_traffic,
    never_stopped_serving,
    outages,
    route_split,
    selected_ready_pods,
    service_traffic,
)

HEALTHY = Behaviour()


def pod_with(
    annotations: dict[str, str] | None = None,
    env: dict[str, Any] | None = None,
    init_env: dict[str, Any] | None = None,
    sidecar_env: dict[str, Any] | None = None,
) -> dict[str, Any]:
    def container(name: str, values: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "name": name,
            "image": "x",
            "env": [{"name": k, "value": v} for k, v in (values or {}).items()],
        }

    return {
        "metadata": {"name": "p", "namespace": "ns", "annotations": annotations or {}},
        "spec": {
            "initContainers": [container("init", init_env)],
            "containers": [container("app", env), container("sidecar", sidecar_env)],
        },
    }


# ----- Behaviour: annotations or env, the worst wins, bad values ignored -----

BEHAVIOURS = {
    "default: healthy": (pod_with(), HEALTHY, 0),
    "annotations": (
        pod_with({"sandbox.sluice.dev/error-rate": "0.3", "sandbox.sluice.dev/latency-ms": "250"}),
        Behaviour(0.3, 0.25),
        0,
    ),
    "env of the app": (
        pod_with(env={"SANDBOX_ERROR_RATE": "0.1"}),
        Behaviour(0.1, DEFAULT_LATENCY_SECONDS),
        0,
    ),
    "env of a sidecar": (pod_with(sidecar_env={"SANDBOX_LATENCY_MS": "300"}), Behaviour(0.0, 0.3), 0),
    "env of an init container": (pod_with(init_env={"SANDBOX_ERROR_RATE": "1"}), Behaviour(1.0, 0.02), 0),
    "the worst wins": (
        pod_with(
            {"sandbox.sluice.dev/error-rate": "0.2", "sandbox.sluice.dev/latency-ms": "900"},
            env={"SANDBOX_ERROR_RATE": "0.5", "SANDBOX_LATENCY_MS": "100"},
            sidecar_env={"SANDBOX_ERROR_RATE": "0.05"},
        ),
        Behaviour(0.5, 0.9),
        0,
    ),
    "not a number: ignored": (pod_with({"sandbox.sluice.dev/error-rate": "lots"}), HEALTHY, 1),
    "out of range: ignored": (
        pod_with({"sandbox.sluice.dev/error-rate": "1.5"}, env={"SANDBOX_LATENCY_MS": "-5"}),
        HEALTHY,
        2,
    ),
    "nan and inf: ignored": (
        pod_with({"sandbox.sluice.dev/latency-ms": "inf"}, env={"SANDBOX_ERROR_RATE": "nan"}),
        HEALTHY,
        2,
    ),
    "a bad value does not hide a good one": (
        pod_with({"sandbox.sluice.dev/error-rate": "x"}, sidecar_env={"SANDBOX_ERROR_RATE": "0.4"}),
        Behaviour(0.4, 0.02),
        1,
    ),
    "bounds are valid": (
        pod_with({"sandbox.sluice.dev/error-rate": "1", "sandbox.sluice.dev/latency-ms": "0"}),
        Behaviour(1.0, 0.0),
        0,
    ),
    "env from a ConfigMap cannot be read: skipped": (
        {
            "metadata": {},
            "spec": {"containers": [{"name": "a", "env": [{"name": "SANDBOX_ERROR_RATE", "valueFrom": {}}]}]},
        },
        HEALTHY,
        0,
    ),
}


@pytest.mark.parametrize(("pod", "expected", "problems"), BEHAVIOURS.values(), ids=BEHAVIOURS.keys())
def test_pod_behaviour(pod: dict[str, Any], expected: Behaviour, problems: int) -> None:
    behaviour, found = pod_behaviour(pod)
    assert behaviour == expected
    assert len(found) == problems


def test_a_problem_says_where_and_what() -> None:
    _, [problem] = pod_behaviour(pod_with(sidecar_env={"SANDBOX_ERROR_RATE": "1.5"}))
    assert (
        problem
        == "env SANDBOX_ERROR_RATE of container sidecar='1.5' is not a number between 0 and 1: ignored"
    )


# ----- Routes: the split by weight -----


def route(*rules: list[tuple[str, Any]], namespace: str = "ns", name: str = "web") -> dict[str, Any]:
    """An HTTPRoute; each rule is [(service, weight or None for the default), ...]."""

    def backend(service: str, weight: Any) -> dict[str, Any]:
        ref: dict[str, Any] = {"name": service, "port": 80}
        if weight is not None:
            ref["weight"] = weight
        return ref

    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"rules": [{"backendRefs": [backend(*b) for b in rule]} for rule in rules]},
    }


def sluice_route(canary_weight: int, name: str = "web") -> dict[str, Any]:
    """As the Gateway API provider writes it: one rule, stable and canary."""
    return route([(name, 100 - canary_weight), (f"{name}-canary", canary_weight)], name=name)


SPLITS = {
    "weight 0": ([sluice_route(0)], {"web": (100, 100.0), "web-canary": (0, 0.0)}),
    "weight 10": ([sluice_route(10)], {"web": (90, 90.0), "web-canary": (10, 10.0)}),
    "weight 50": ([sluice_route(50)], {"web": (50, 50.0), "web-canary": (50, 50.0)}),
    "weight 100": ([sluice_route(100)], {"web": (0, 0.0), "web-canary": (100, 100.0)}),
    "weights are proportional": ([route([("a", 1), ("b", 3)])], {"a": (1, 25.0), "b": (3, 75.0)}),
    "the default weight is 1": ([route([("a", None), ("b", None)])], {"a": (1, 50.0), "b": (1, 50.0)}),
    "all weights 0: nobody": ([route([("a", 0), ("b", 0)])], {"a": (0, 0.0), "b": (0, 0.0)}),
    "rules share the route's requests": ([route([("a", 1)], [("b", 1)])], {"a": (1, 50.0), "b": (1, 50.0)}),
    "routes add up": (
        [sluice_route(10), route([("web", 1)], name="other")],
        {"web": (91, 190.0), "web-canary": (10, 10.0)},
    ),
    "a bad weight counts as 0": ([route([("a", "heavy"), ("b", 1)])], {"a": (0, 0.0), "b": (1, 100.0)}),
}


@pytest.mark.parametrize(("routes", "expected"), SPLITS.values(), ids=SPLITS.keys())
def test_route_split(routes: list[dict[str, Any]], expected: dict[str, tuple[int, float]]) -> None:
    split = route_split(routes, rps=100)
    assert split == {("ns", name): (weight, pytest.approx(rps)) for name, (weight, rps) in expected.items()}


def test_route_split_skips_other_kinds_and_honours_namespaces() -> None:
    routes = [
        route(
            [("web", 1), ("elsewhere", 1)],
        )
    ]
    routes[0]["spec"]["rules"][0]["backendRefs"][1].update(namespace="other")
    routes[0]["spec"]["rules"][0]["backendRefs"].append(
        {"group": "example.com", "kind": "Bucket", "name": "b", "weight": 2}
    )
    assert route_split(routes, rps=100) == {("ns", "web"): (1, 25.0), ("other", "elsewhere"): (1, 25.0)}


# ----- Services: their ready pods serve their share -----


def service(name: str, track: str | None = None, /, **selector: str) -> dict[str, Any]:
    labels = {"sluice.dev/track": track} if track else {}
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels}, "spec": {"selector": selector}}


def serving_pod(name: str, ready: bool = True, namespace: str = "ns", **labels: str) -> dict[str, Any]:
    error_rate = labels.pop("error_rate", None)
    pod = pod_with({"sandbox.sluice.dev/error-rate": error_rate} if error_rate else None)
    pod["metadata"].update(name=name, namespace=namespace, labels=labels)
    pod["status"] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return pod


SERVICES = [service("web", "stable", track="stable"), service("web-canary", "canary", track="canary")]


def settings(rps: float, error_rate: float = 0.0) -> TrafficSetting:
    return TrafficSetting(rps, error_rate, DEFAULT_LATENCY_SECONDS)


TRAFFIC = {
    "weight 10 on a bad canary": (
        sluice_route(10),
        [
            serving_pod("s1", track="stable"),
            serving_pod("s2", track="stable"),
            serving_pod("c1", track="canary", error_rate="0.3"),
        ],
        {"web": (2, (settings(90),)), "web-canary": (1, (settings(10, 0.3),))},
    ),
    "weight 0: no requests, the pods still counted": (
        sluice_route(0),
        [serving_pod("s1", track="stable"), serving_pod("c1", track="canary")],
        {"web": (1, (settings(100),)), "web-canary": (1, ())},
    ),
    "weight 100": (
        sluice_route(100),
        [serving_pod("s1", track="stable"), serving_pod("c1", track="canary")],
        {"web": (1, ()), "web-canary": (1, (settings(100),))},
    ),
    "no ready pods: nothing served": (
        sluice_route(50),
        [serving_pod("s1", ready=False, track="stable"), serving_pod("c1", track="other")],
        {"web": (0, ()), "web-canary": (0, ())},
    ),
    "versions mix by pod count": (
        sluice_route(0),
        [
            serving_pod("s1", track="stable"),
            serving_pod("s2", track="stable", error_rate="0.5"),
            serving_pod("s3", track="stable", error_rate="0.5"),
            serving_pod("s4", track="stable"),
        ],
        {"web": (4, (settings(50), settings(50, 0.5))), "web-canary": (0, ())},
    ),
    "pods of another namespace are not selected": (
        sluice_route(0),
        [serving_pod("s1", namespace="other", track="stable")],
        {"web": (0, ()), "web-canary": (0, ())},
    ),
}


@pytest.mark.parametrize(("the_route", "pods", "expected"), TRAFFIC.values(), ids=TRAFFIC.keys())
def test_service_traffic(
    the_route: dict[str, Any],
    pods: list[dict[str, Any]],
    expected: dict[str, tuple[int, tuple[TrafficSetting, ...]]],
) -> None:
    traffic = service_traffic([the_route], SERVICES, pods, rps=100)
    assert {name: (t.ready_pods, t.streams) for (_, name), t in traffic.items()} == expected
    assert {name: t.track for (_, name), t in traffic.items()} == {"web": "stable", "web-canary": "canary"}


def test_service_traffic_of_several_routes_and_missing_services() -> None:
    routes = [sluice_route(0), route([("api", 1), ("ghost", 1)], name="api")]
    pods = [serving_pod("s1", track="stable"), serving_pod("a1", app="api")]
    traffic = service_traffic(
        routes, [*SERVICES, service("api", app="api"), service("idle", app="idle")], pods, rps=10
    )
    assert set(traffic) == {("ns", "web"), ("ns", "web-canary"), ("ns", "api"), ("ns", "ghost")}  # not "idle"
    assert traffic["ns", "api"].streams == (settings(5),)
    ghost = traffic["ns", "ghost"]  # named by the route, but no such Service: nobody serves it
    assert (ghost.weight, ghost.rps, ghost.ready_pods, ghost.streams, ghost.track) == (1, 5.0, 0, (), None)


def test_service_without_a_selector_has_no_pods() -> None:
    traffic = service_traffic([route([("web", 1)])], [service("web")], [serving_pod("s1")], rps=10)
    assert traffic["ns", "web"].ready_pods == 0


def test_problems_are_reported_once_per_service() -> None:
    pods = [serving_pod(f"c{i}", track="canary", error_rate="oops") for i in range(3)]
    traffic = service_traffic([sluice_route(50)], SERVICES, pods, rps=10)
    assert len(traffic["ns", "web-canary"].problems) == 1
    assert traffic["ns", "web-canary"].streams == (settings(5),)  # the default behaviour


# ----- The gateway: what users see of each route -----

BOTH_READY = [serving_pod("s1", track="stable"), serving_pod("c1", track="canary")]
STABLE_ONLY = [serving_pod("s1", track="stable"), serving_pod("c1", ready=False, track="canary")]


def codes(ok: float = 0.0, errors: float = 0.0, unavailable: float = 0.0) -> dict[str, float]:
    return {"200": pytest.approx(ok), "500": pytest.approx(errors), "503": pytest.approx(unavailable)}


GATEWAY = {
    "canary without ready pods: its share answered 503": (sluice_route(20), STABLE_ONLY, codes(80, 0, 20)),
    "in proportion to its weight": (sluice_route(50), STABLE_ONLY, codes(50, 0, 50)),
    "both ready: no 503": (sluice_route(20), BOTH_READY, codes(100)),
    "weight 0 on an unready canary: no 503": (sluice_route(0), STABLE_ONLY, codes(100)),
    "all weights 0: nothing sent": (route([("web", 0), ("web-canary", 0)]), STABLE_ONLY, codes()),
    "a bad canary answers 500s, as its Service counts them": (
        sluice_route(10),
        [serving_pod("s1", track="stable"), serving_pod("c1", track="canary", error_rate="0.3")],
        codes(97, 3),
    ),
    "a backend Service that does not exist: 503": (
        route([("web", 1), ("ghost", 1)]),
        BOTH_READY,
        codes(50, 0, 50),
    ),
    "nobody ready at all": (sluice_route(50), [], codes(0, 0, 100)),
}


@pytest.mark.parametrize(("the_route", "pods", "expected"), GATEWAY.values(), ids=GATEWAY.keys())
def test_gateway_traffic(
    the_route: dict[str, Any], pods: list[dict[str, Any]], expected: dict[str, Any]
) -> None:
    assert gateway_traffic([the_route], SERVICES, pods, rps=100) == {
        ("ns", the_route["metadata"]["name"]): expected
    }


# ----- Terminating pods (KEP-1669): they serve only when a Service has no other ready pod -----


def leaving(pod: dict[str, Any]) -> dict[str, Any]:
    """The pod, deleted: terminating, its readiness as it was."""
    pod["metadata"].update(deletionTimestamp="2030-01-01T00:00:30.000000Z", deletionGracePeriodSeconds=30)
    return pod


ENDPOINTS = {
    "ready pods only": ([serving_pod("s1", track="stable"), serving_pod("s2", track="stable")], ["s1", "s2"]),
    "terminating pods are left out while another is ready": (
        [leaving(serving_pod("s1", track="stable")), serving_pod("s2", track="stable")],
        ["s2"],
    ),
    "unready pods are no help: terminating pods still ready serve": (
        [leaving(serving_pod("s1", track="stable")), serving_pod("s2", ready=False, track="stable")],
        ["s1"],
    ),
    "only terminating pods: those still ready serve": (
        [leaving(serving_pod("s1", track="stable")), leaving(serving_pod("s2", ready=False, track="stable"))],
        ["s1"],
    ),
    "terminating and no longer ready: nothing": (
        [leaving(serving_pod("s1", ready=False, track="stable"))],
        [],
    ),
}


@pytest.mark.parametrize(("pods", "expected"), ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_selected_ready_pods(pods: list[dict[str, Any]], expected: list[str]) -> None:
    assert [pod["metadata"]["name"] for pod in selected_ready_pods(SERVICES[0], pods)] == expected


def test_a_deleted_deployment_serves_from_its_terminating_pods() -> None:
    # Its pods terminating, the canary still answers, with its own behaviour: no 503.
    pods = [serving_pod("s1", track="stable"), leaving(serving_pod("c1", track="canary", error_rate="0.3"))]
    assert gateway_traffic([sluice_route(10)], SERVICES, pods, rps=100) == {("ns", "web"): codes(97, 3)}
    traffic = service_traffic([sluice_route(10)], SERVICES, pods, rps=100)
    assert (traffic["ns", "web-canary"].ready_pods, traffic["ns", "web-canary"].streams) == (
        1,
        (settings(10, 0.3),),
    )
    # A ready pod of the new version takes it all from the terminating one.
    pods.append(serving_pod("c2", track="canary"))
    assert gateway_traffic([sluice_route(10)], SERVICES, pods, rps=100) == {("ns", "web"): codes(100)}
    # Once its pods stop being ready (or are gone), the gateway answers 503.
    pods = [serving_pod("s1", track="stable"), leaving(serving_pod("c1", ready=False, track="canary"))]
    assert gateway_traffic([sluice_route(10)], SERVICES, pods, rps=100) == {("ns", "web"): codes(90, 0, 10)}


def test_gateway_traffic_is_per_route_and_skips_other_kinds() -> None:
    other = route([("web-canary", 1)], name="other")
    bucket = {"group": "example.com", "kind": "Bucket", "name": "b", "weight": 1}
    other["spec"]["rules"][0]["backendRefs"].append(bucket)  # half of `other`, unsimulated
    gateway = gateway_traffic([sluice_route(0), other], SERVICES, STABLE_ONLY, rps=10)
    assert gateway == {("ns", "web"): codes(10), ("ns", "other"): codes(0, 0, 5)}


# ----- The serving history -----


def record(at: float, weight: int, ready: int, service: str = "web", track: str = "stable") -> ServingRecord:
    return ServingRecord(at, "ns", service, track, weight, ready)


HISTORIES = {
    "always serving": ([record(0, 100, 2), record(1, 100, 2)], []),
    "starting up is no outage": ([record(0, 100, 0), record(1, 100, 0), record(2, 100, 2)], []),
    "no weight, no pods: no outage": ([record(0, 100, 2), record(1, 0, 0), record(2, 100, 2)], []),
    "one outage over consecutive ticks": (
        [record(0, 100, 2), record(1, 90, 0), record(2, 90, 0), record(3, 90, 1), record(4, 90, 0)],
        [(1, 2), (4, 4)],
    ),
    "another Service's outage is not this one's": (
        [
            record(0, 100, 2),
            record(0, 10, 1, "web-canary", "canary"),
            record(1, 10, 0, "web-canary", "canary"),
        ],
        [],
    ),
}


@pytest.mark.parametrize(("history", "spans"), HISTORIES.values(), ids=HISTORIES.keys())
def test_outages_of_the_stable_service(
    history: list[ServingRecord], spans: list[tuple[float, float]]
) -> None:
    found = outages(history, namespace="ns", service="web")
    assert [(o.start, o.end) for o in found] == spans
    assert never_stopped_serving(history, "ns", "web") is (not spans)
    assert outages(history, track="stable") == found


def test_an_outage_reads_well() -> None:
    [outage] = outages([record(0, 100, 1), record(1.25, 100, 0), record(2.5, 100, 0)])
    assert str(outage) == "ns/web had weight but no ready pod from 1.2s to 2.5s"


# ----- One tick on a Store, into a real exporter -----


def test_ticks_export_the_split_and_keep_unrouted_services_at_zero(caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_ticks(caplog))


async def _ticks(caplog: pytest.LogCaptureFixture) -> None:
    store = SandboxAPIServer().store  # the built-in resources, as the sandbox serves them
    await store.create("namespaces", {"metadata": {"name": "ns"}})
    now = [0.0]
    with MetricsExporter(clock=lambda: now[0]) as exporter:
        simulator = TrafficSimulator(store, exporter, rps=100, clock=lambda: now[0])
        assert await simulator.tick() == {}  # no HTTPRoute resource yet: no routes, no failure
        await store.install_crd(HTTPROUTE_CRD)  # the sandbox's own: quick to install, as permissive
        for body in [*SERVICES, service("api", app="api")]:
            await store.create("services", body)
        await store.create("pods", serving_pod("s1", track="stable"))
        await store.create("pods", serving_pod("c1", track="canary", error_rate="bad"))
        await store.create("httproutes", sluice_route(20))
        await store.create("httproutes", route([("api", 1)], name="api"))
        # The store ignores a status on create; pods get theirs as the kubelet would write it.
        for name in ("s1", "c1"):
            await store.patch_status("pods", "ns", name, {"status": serving_pod(name)["status"]})

        with caplog.at_level(logging.WARNING, logger="sluice_sandbox.traffic"):
            await simulator.tick()
            now[0] = 10.0
            await simulator.tick()
        assert exporter.counters("ns", "web").count == pytest.approx(800)
        assert exporter.counters("ns", "web-canary").count == pytest.approx(200)
        assert exporter.counters("ns", "api").count == 0  # no ready pods: nothing served
        assert len([r for r in caplog.records if "error-rate='bad'" in r.getMessage()]) == 1  # warned once

        await store.delete("httproutes", "ns", "web")  # web and web-canary are no longer routed
        await store.delete("services", "ns", "api")
        await simulator.tick()
        now[0] = 20.0
        await simulator.tick()
        assert exporter.counters("ns", "web").count == pytest.approx(800)  # kept, at zero traffic
        assert exporter.counters("ns", "web-canary").count == pytest.approx(200)
        with pytest.raises(KeyError):
            exporter.counters("ns", "api")  # routed, but the Service is gone: so is its series

        assert [(r.at, r.service, r.weight, r.ready_pods) for r in simulator.history[:3]] == [
            (0.0, "api", 1, 0),
            (0.0, "web", 80, 1),
            (0.0, "web-canary", 20, 1),
        ]
        assert simulator.stable_outages() == []
    store.close()


def test_ticks_count_503s_at_the_gateway_for_backends_without_ready_pods() -> None:
    asyncio.run(_gateway_ticks())


async def _gateway_ticks() -> None:
    store = SandboxAPIServer().store
    await store.create("namespaces", {"metadata": {"name": "ns"}})
    await store.install_crd(HTTPROUTE_CRD)
    now = [0.0]
    with MetricsExporter(clock=lambda: now[0]) as exporter:
        simulator = TrafficSimulator(store, exporter, rps=100, clock=lambda: now[0])
        for body in [*SERVICES, service("api", app="api")]:
            await store.create("services", body)
        for pod in [*STABLE_ONLY, serving_pod("a1", app="api")]:
            await store.create("pods", pod)
            await store.patch_status("pods", "ns", pod["metadata"]["name"], {"status": pod["status"]})
        await store.create("httproutes", sluice_route(20))  # 20% to a canary with no ready pod
        await store.create("httproutes", route([("web", 0), ("web-canary", 0)], name="idle"))
        await store.create("httproutes", route([("api", 1), ("web-canary", 0)], name="api"))

        await simulator.tick()
        now[0] = 10.0
        await simulator.tick()
        assert exporter.gateway_totals("ns", "web") == codes(800, 0, 200)
        assert exporter.gateway_totals("ns", "idle") == codes()  # all weights 0: sends nothing
        assert exporter.gateway_totals("ns", "api") == codes(1000)  # weight 0 on the unready canary
        # The Services' own counters are as before: an unready Service counts nothing.
        assert exporter.counters("ns", "web").count == pytest.approx(800)
        assert exporter.counters("ns", "web-canary").count == 0

        # The canary gets ready: no more 503s, the counts kept.
        await store.patch_status("pods", "ns", "c1", {"status": serving_pod("c1")["status"]})
        await simulator.tick()
        now[0] = 20.0
        await simulator.tick()
        assert exporter.gateway_totals("ns", "web") == codes(1800, 0, 200)

        await store.delete("httproutes", "ns", "web")
        await simulator.tick()
        with pytest.raises(KeyError):
            exporter.gateway_totals("ns", "web")  # the route is gone: so are its series
    store.close()


def preview_service(name: str, /, **selector: str) -> dict[str, Any]:
    body = service(name, "canary", **selector)
    body["metadata"]["labels"]["sluice.dev/preview"] = "true"
    return body


def test_a_blue_green_preview_gets_test_traffic_that_no_gateway_counts() -> None:
    routes = [route([("web", 1)])]
    services = [service("web", "stable", track="stable"), preview_service("web-preview", track="canary")]
    pods = [serving_pod("s1", track="stable"), serving_pod("c1", track="canary", error_rate="0.5")]
    traffic = service_traffic(routes, services, pods, rps=100)
    preview = traffic["ns", "web-preview"]
    assert (preview.weight, preview.rps, preview.ready_pods) == (0, 100 * PREVIEW_SHARE, 1)
    assert preview.streams == (settings(100 * PREVIEW_SHARE, 0.5),)
    assert traffic["ns", "web"].rps == 100
    # Users reach the route only: what the gateway answers knows nothing of the test traffic.
    assert gateway_traffic(routes, services, pods, rps=100)["ns", "web"]["500"] == 0
    # The simulator's index says the same as the pure function, change by change.
    index = TrafficIndex(100)
    for obj in services:
        index.put_service(("ns", obj["metadata"]["name"]), obj)
    for pod in pods:
        index.put_pod("ns", pod["metadata"]["name"], pod)
    index.refresh()
    assert index.traffic["ns", "web-preview"] == preview
    index.put_service(("ns", "web-preview"), None)
    index.refresh()
    assert ("ns", "web-preview") not in index.traffic
