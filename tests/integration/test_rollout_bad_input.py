"""The real operator refuses bad input clearly and touches nothing.

A Rollout the API server accepted but Sluice cannot act on (a spec the models
refuse, a query template with a typo, a missing Gateway API, a selector that
selects nothing) must say why on its status, in a condition and an Event, and
must create or change no workload, Service or route.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import kmock
import pytest

from operators import cli
from operators.foundation.cluster import ResourceNotInstalled
from operators.foundation.diff import covers
from operators.operator import OperatorOptions
from sluice_sandbox.apiserver import SandboxThread
from sluice_sandbox.exporter import MetricsExporter
from sluice_sandbox.prometheus import PrometheusServer
from tests import scenarios
from tests.harness import (
    Harness,
    deployment,
    httproute,
    httproute_crd,
    route_weights,
    running_operator,
    service,
    sluice_crds,
    status_of,
)

TIMEOUT = 30.0  # a deadline for slow machines; each wait here normally ends within a second or two
NS = "shop"


@contextmanager
def operator_on(
    sandbox_api: SandboxThread, crds: list[dict[str, Any]], prometheus_url: str | None = None
) -> Iterator[Harness]:
    """The CRDs installed, the real operator running, and a harness with namespace NS."""
    for crd in crds:
        sandbox_api.run(sandbox_api.server.install_crd(crd))
    harness = Harness(sandbox_api.kubeconfig)
    harness.ensure_namespace(NS)
    options = OperatorOptions(
        all_namespaces=True,
        prometheus_url=prometheus_url,
        kubeconfig=str(sandbox_api.kubeconfig),
        liveness_endpoint=None,
    )
    with running_operator(options):
        yield harness


@pytest.fixture
def harness(sandbox_api: SandboxThread) -> Iterator[Harness]:
    """Sluice's and the Gateway API's CRDs, and the operator; no Prometheus."""
    with operator_on(sandbox_api, [*sluice_crds(), httproute_crd()]) as harness:
        yield harness


def conditions(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status_of(body).get("conditions") or []}


def wait_blocked(harness: Harness, reason: str, what: str, name: str = "web") -> dict[str, Any]:
    """Wait until the operator reports the Rollout Stalled for `reason`; returns the Rollout."""
    return harness.wait_rollout(
        NS,
        name,
        lambda r: (
            conditions(r).get("Stalled") == ("True", reason)
            and status_of(r).get("observedGeneration") == r["metadata"]["generation"]
        ),
        TIMEOUT,
        what,
    )


def wait_warning(harness: Harness, reason: str, name: str = "web") -> list[dict[str, Any]]:
    return list(
        harness.wait(
            lambda: [
                e for e in harness.events(NS, name) if (e.get("type"), e.get("reason")) == ("Warning", reason)
            ],
            bool,
            TIMEOUT,
            f"a Warning event {reason}",
        )
    )


def assert_nothing_created(harness: Harness, name: str = "web", route: bool = True) -> None:
    for key in (
        deployment(NS, name),
        deployment(NS, f"{name}-canary"),
        service(NS, name),
        service(NS, f"{name}-canary"),
    ):
        assert harness.get(key) is None, f"{key.kind} {key.name} was created"
    if route:
        assert harness.get(httproute(NS, name)) is None


# ---- a spec the models refuse ------------------------------------------------------------------


def inverted_threshold(body: dict[str, Any]) -> None:
    # The CRD schema cannot compare min with max, so the API server stores this one.
    body["spec"]["strategy"]["canary"]["analysis"] = {
        "metrics": [{"name": "error-rate", "query": "up", "thresholdRange": {"min": 2, "max": 1}}]
    }


def half_canary_replicas(body: dict[str, Any]) -> None:
    body["spec"]["strategy"]["canary"]["canaryReplicas"] = "half"


@pytest.mark.parametrize(
    ("spoil", "path", "words"),
    [
        (
            inverted_threshold,
            "spec.strategy.canary.analysis.metrics.0.thresholdRange",
            "thresholdRange min 2.0 is above max 1.0",
        ),
        (half_canary_replicas, "spec.strategy.canary", 'canaryReplicas must be "matchWeight" or a number'),
    ],
    ids=["threshold-min-above-max", "canaryReplicas-half"],
)
def test_a_spec_the_models_refuse_is_reported_and_nothing_is_created(
    harness: Harness, spoil: Callable[[dict[str, Any]], None], path: str, words: str
) -> None:
    body = scenarios.web_rollout()
    spoil(body)
    stored = harness.apply_rollout(NS, body)
    # Stored (with the schema's defaults filled in), the spoiled part as written.
    assert covers(stored["spec"]["strategy"], body["spec"]["strategy"]), "the API server stored it"

    blocked = wait_blocked(harness, "InvalidSpec", "the invalid spec to be reported")
    message = status_of(blocked)["message"]
    assert message.startswith("invalid Rollout: "), message
    assert f"{path}: {words}" in message
    assert conditions(blocked)["Ready"][0] == "False"
    [event] = wait_warning(harness, "InvalidSpec")
    assert event["message"] == message
    assert event["involvedObject"]["kind"] == "Rollout" and event["involvedObject"]["name"] == "web"
    assert_nothing_created(harness)

    # Another pass over the same problem (a spec change that does not fix it) says it again on
    # the status, for the new generation, but does not post the same Warning again.
    generation = harness.patch_rollout(NS, "web", {"spec": {"progressDeadlineSeconds": 61}})["metadata"][
        "generation"
    ]
    again = wait_blocked(harness, "InvalidSpec", "the new generation to be observed")
    assert again["metadata"]["generation"] == generation
    assert status_of(again)["message"] == message
    warnings = [e for e in harness.events(NS, "web") if e["reason"] == "InvalidSpec"]
    assert len(warnings) == 1, warnings
    assert_nothing_created(harness)


def test_fixing_an_invalid_spec_lets_the_rollout_deploy(harness: Harness) -> None:
    body = scenarios.web_rollout()
    half_canary_replicas(body)
    harness.apply_rollout(NS, body)
    wait_blocked(harness, "InvalidSpec", "the invalid spec to be reported")

    harness.patch_rollout(NS, "web", {"spec": {"strategy": {"canary": {"canaryReplicas": 1}}}})
    healthy = harness.wait_rollout(
        NS, "web", lambda r: status_of(r).get("phase") == "Healthy", TIMEOUT, "the fixed Rollout to deploy"
    )
    assert conditions(healthy)["Stalled"][0] == "False"
    assert not status_of(healthy)["message"].startswith("invalid Rollout")
    assert harness.get(deployment(NS, "web")) is not None


# ---- a selector that is not on the pods ----------------------------------------------------------


def test_a_selector_label_missing_from_the_template_is_reported(harness: Harness) -> None:
    body = scenarios.web_rollout()
    body["spec"]["selector"] = {"matchLabels": {"app": "web", "team": "payments"}}
    harness.apply_rollout(NS, body)

    blocked = wait_blocked(harness, "InvalidSpec", "the selector problem to be reported")
    message = status_of(blocked)["message"]
    assert "selector.matchLabels team=payments not found in template.metadata.labels" in message
    assert "app=web" not in message, "only the missing label is named"
    assert wait_warning(harness, "InvalidSpec")[0]["message"] == message
    assert_nothing_created(harness)


# ---- the Gateway API is not installed --------------------------------------------------------------


def answer_like_kube_apiserver(sandbox_api: SandboxThread) -> None:
    """Unknown API paths get a plain-text 404, as kube-apiserver's fallback handler answers
    (a JSON Status only from Kubernetes 1.36); the sandbox itself answers with a Status."""

    async def inject() -> None:  # on the server's loop: kmock's reactions are not thread-safe
        route = kmock.resource("gateway.networking.k8s.io", "v1", "httproutes")
        sandbox_api.server.emulator[route] << 404 << b"404 page not found\n"

    sandbox_api.run(inject())


@pytest.mark.parametrize("not_found", ["status", "plain-text"])
def test_a_missing_httproute_crd_is_reported_and_nothing_is_created(
    sandbox_api: SandboxThread, not_found: str
) -> None:
    if not_found == "plain-text":
        answer_like_kube_apiserver(sandbox_api)
    with operator_on(sandbox_api, sluice_crds()) as harness:
        harness.apply_rollout(NS, scenarios.web_rollout())
        blocked = wait_blocked(harness, "ProviderMissing", "the missing Gateway API to be reported")
        message = status_of(blocked)["message"]
        assert "is the HTTPRoute CRD (gateway.networking.k8s.io/v1) installed?" in message, message
        assert conditions(blocked)["Ready"][0] == "False"
        assert wait_warning(harness, "ProviderMissing")[0]["message"] == message
        assert_nothing_created(harness, route=False)
        with pytest.raises(ResourceNotInstalled):
            harness.get(httproute(NS, "web"))


# ---- a query template with a typo, on a Rollout already serving ------------------------------------

# absent() of a series that never exists is 1, so this is 0 at once: a passing check without
# waiting for Prometheus to scrape anything. It still uses a template variable, like real queries.
GOOD_QUERY = 'absent(sluice_no_such_series{service="{{ canary.service }}"}) - 1'
BAD_QUERY = GOOD_QUERY.replace("canary.service", "canry.service")


def query_analysis(prometheus_url: str, query: str) -> dict[str, Any]:
    return {
        "interval": "1s",
        "failureLimit": 0,
        "errorLimit": 2,
        "inconclusiveLimit": 20,
        "minChecksPerStep": 1,
        "metrics": [
            {
                "name": "canary-absent",
                "query": query,
                "prometheus": {"address": prometheus_url, "timeout": "2s"},
                "thresholdRange": {"max": 0.5},
            }
        ],
    }


@pytest.fixture
def scene(
    sandbox_api: SandboxThread, prometheus: PrometheusServer, metrics_exporter: MetricsExporter
) -> Iterator[scenarios.Scene]:
    with operator_on(sandbox_api, [*sluice_crds(), httproute_crd()], prometheus.url) as harness:

        def no_restart() -> None:
            raise AssertionError("these tests do not restart the operator")

        yield scenarios.Scene(
            harness=harness,
            namespace=NS,
            exporter=metrics_exporter,
            prometheus_url=prometheus.url,
            restart_operator=no_restart,
        )


# The typo in the analysis in force, or in the one that runs only after promotion: either stops the
# release before it starts, not once the stable already runs the new version.
@pytest.mark.parametrize("where", ["analysis", "postPromotionAnalysis"])
def test_an_undefined_query_variable_stops_the_release_before_it_starts(
    scene: scenarios.Scene, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    h = scene.harness
    steps = [{"setWeight": 50}, {"setWeight": 100}]
    body = scenarios.web_rollout(steps=steps, analysis=query_analysis(scene.prometheus_url, GOOD_QUERY))
    first = scenarios.deploy_stable(scene, copy.deepcopy(body))
    stable_before = h.get(deployment(NS, "web"))
    assert stable_before is not None

    # The new image and the typo arrive together, as one `kubectl apply` would bring them.
    containers = copy.deepcopy(body["spec"]["template"]["spec"]["containers"])
    containers[0]["image"] = scene.images[1]
    broken = query_analysis(scene.prometheus_url, BAD_QUERY)
    if where == "postPromotionAnalysis":
        broken["duration"] = "30s"
    generation = h.patch_rollout(
        NS,
        "web",
        {
            "spec": {
                "template": {"spec": {"containers": containers}},
                "strategy": {"canary": {where: broken}},
            }
        },
    )["metadata"]["generation"]
    blocked = wait_blocked(h, "InvalidSpec", "the bad query to be reported")
    assert blocked["metadata"]["generation"] == generation
    status = status_of(blocked)
    assert 'metric "canary-absent"' in status["message"] and "'canry'" in status["message"], status["message"]
    assert wait_warning(h, "InvalidSpec")[0]["message"] == status["message"]
    # The phase still says Healthy (the old revision serves), but a pipeline waiting on the
    # release with `sluice status --watch` must fail at once rather than pass.
    watch = ["status", "web", "-n", NS, "--kubeconfig", str(h.kubeconfig), "--watch", "--timeout", "10"]
    capsys.readouterr()
    assert cli.main(watch) == 1
    assert "'canry'" in capsys.readouterr().out

    # Nothing moved: no release, no canary pods, all traffic on the stable version.
    assert status["stableRevision"] == first
    assert status.get("canaryRevision") is None and status.get("canaryWeight", 0) == 0
    assert not scenarios.history_messages(blocked, "release-started")
    stable = h.get(deployment(NS, "web"))
    assert stable is not None
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == scene.images[0]
    assert stable["metadata"]["annotations"]["sluice.dev/revision"] == first
    assert stable["metadata"]["generation"] == stable_before["metadata"]["generation"], "stable not rewritten"
    canary = h.get(deployment(NS, "web-canary"))
    assert canary is not None and canary["spec"]["replicas"] == 0
    assert route_weights(h.get(httproute(NS, "web"))) == {"web": 100, "web-canary": 0}

    # Fixing the query (or dropping the verification after promotion) lets the same release go ahead.
    fixed = query_analysis(scene.prometheus_url, GOOD_QUERY) if where == "analysis" else None
    h.patch_rollout(NS, "web", {"spec": {"strategy": {"canary": {where: fixed}}}})
    done = h.wait_rollout(
        NS,
        "web",
        lambda r: scenarios.promoted(status_of(r), first),
        TIMEOUT,
        "the release to be promoted once the query is fixed",
    )
    assert conditions(done)["Stalled"][0] == "False"
    assert status_of(done)["analysis"]["passed"] >= 1, "the fixed query was really run"
    assert len(scenarios.history_messages(done, "release-started")) == 1
    promoted = h.get(deployment(NS, "web"))
    assert promoted is not None
    assert promoted["spec"]["template"]["spec"]["containers"][0]["image"] == scene.images[1]
    assert route_weights(h.get(httproute(NS, "web"))) == {"web": 100, "web-canary": 0}
