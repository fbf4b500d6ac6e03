"""MetricTemplate and ClusterMetricTemplate in the closed loop: real operator, real Prometheus, real traffic.

A metric names a template (`template: NAME`); the operator looks it up in the Rollout's
namespace, then cluster-wide, then among the built-ins, each time a check starts. No test sets
a metric: versions serve as their pod templates say, and the templates' queries read what the
real Prometheus scraped of them. One step at 50%, checked every 3s: lean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.api.base import API_VERSION
from operators.foundation.keys import ObjectKey
from sluice_sandbox.environment import Sandbox
from tests.closed_loop import (
    INTERVAL,
    KUBECTL,
    MAX_ERROR_RATE,
    NAME,
    image_of,
    kubectl,
    release,
    sandbox_in,
    scene_on,
    wait_promoted,
    wait_status,
)
from tests.harness import deployment, status_of
from tests.scenarios import IMAGE_V2, RELEASE_TIMEOUT, Scene, deploy_stable, promoted, web_rollout

pytestmark = pytest.mark.integration

IMAGE_V3 = "ghcr.io/acme/web:3.0.0"

_CANARY = 'namespace="{{ namespace }}",service="{{ canary.service }}"'
# The share of the canary's requests answered with a code matching args.codes (5xx by default).
CODE_SHARE = f"""\
(
  sum(rate(http_requests_total{{{_CANARY},code=~"{{{{ args.codes }}}}"}}[{{{{ interval }}}}]))
  or vector(0)
)
/
sum(rate(http_requests_total{{{_CANARY}}}[{{{{ interval }}}}]))"""
# The same with the match negated: the share answered with any other code, about 1 for a healthy
# version, so a metric of at most MAX_ERROR_RATE fails on it.
OTHER_CODE_SHARE = CODE_SHARE.replace('code=~"', 'code!~"')


@pytest.fixture(scope="module")
def sandbox(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with sandbox_in(tmp_path_factory.mktemp("metric-templates")) as running:
        yield running


@pytest.fixture
def scene(sandbox: Sandbox, metrics_namespace: str) -> Scene:
    return scene_on(sandbox, metrics_namespace)


def template_key(kind: str, name: str, namespace: str = "") -> ObjectKey:
    return ObjectKey(API_VERSION, kind, namespace, name)


def create_template(
    scene: Scene, kind: str, name: str, query: str, namespace: str = "", **spec: Any
) -> dict[str, Any]:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata}
    return scene.harness.cluster.create({**body, "spec": {"query": query, "args": {"codes": "5.."}, **spec}})


def templated_rollout(template: str) -> dict[str, Any]:
    """web_rollout at one step of 50%, its one metric named by template (the verdict is the metric's)."""
    analysis = {
        "interval": INTERVAL,
        "failureLimit": 0,
        "errorLimit": 2,
        "inconclusiveLimit": 20,
        "minChecksPerStep": 1,
        "metrics": [{"name": "errors", "template": template, "thresholdRange": {"max": MAX_ERROR_RATE}}],
    }
    return web_rollout(steps=[{"setWeight": 50}], analysis=analysis)


def measured(body: dict[str, Any]) -> float:
    (metric,) = status_of(body)["analysis"]["lastCheck"]["metrics"]
    assert metric["name"] == "errors"
    return float(metric["value"])


def wait_rolled_back(scene: Scene, stable_before: str) -> dict[str, Any]:
    """The release once decided (rolled back, or promoted: then the test fails at once)."""
    decided = wait_status(
        scene,
        lambda s: s.get("phase") == "Degraded" or promoted(s, stable_before),
        "the release to be decided",
    )
    assert status_of(decided)["phase"] == "Degraded", status_of(decided)
    return decided


def test_a_namespaced_template_gates_releases_and_a_changed_one_changes_the_next_check(scene: Scene) -> None:
    h, ns = scene.harness, scene.namespace
    # No provider block anywhere: the operator's --prometheus-url.
    create_template(scene, "MetricTemplate", "errors", CODE_SHARE, ns)
    first = deploy_stable(scene, templated_rollout("errors"))

    release(scene, IMAGE_V2)
    done = wait_promoted(scene, first)
    assert measured(done) == 0, "the template's query with its default args: no 5xx"
    assert image_of(scene, NAME) == IMAGE_V2

    h.cluster.merge_patch(template_key("MetricTemplate", "errors", ns), {"spec": {"query": OTHER_CODE_SHARE}})
    release(scene, IMAGE_V3)
    failed = wait_rolled_back(scene, status_of(done)["stableRevision"])
    assert measured(failed) > 0.9, "the next check ran the changed query"
    assert "errors=" in status_of(failed)["message"]
    assert status_of(failed)["stableRevision"] == status_of(done)["stableRevision"]
    assert image_of(scene, NAME) == IMAGE_V2, "the stable version is untouched"


def test_a_cluster_template_serves_every_namespace_but_one_that_shadows_it(
    sandbox: Sandbox, scene: Scene
) -> None:
    shadowed = scene_on(sandbox, f"{scene.namespace[:55]}-shadow")
    name = f"errors-{scene.namespace}"[:63]  # cluster-wide: a name of this test's own
    create_template(
        scene,
        "ClusterMetricTemplate",
        name,
        CODE_SHARE,
        prometheus={"address": scene.prometheus_url, "timeout": "2s"},
    )
    create_template(shadowed, "MetricTemplate", name, OTHER_CODE_SHARE, shadowed.namespace)
    try:
        firsts = [deploy_stable(s, templated_rollout(name)) for s in (scene, shadowed)]
        for each in (scene, shadowed):
            release(each, IMAGE_V2)

        done = wait_promoted(scene, firsts[0])
        assert measured(done) == 0, "the ClusterMetricTemplate's query"
        failed = wait_rolled_back(shadowed, firsts[1])
        assert measured(failed) > 0.9, "the namespace's own MetricTemplate, over the cluster's"
    finally:
        scene.harness.cluster.delete(template_key("ClusterMetricTemplate", name))


def test_a_missing_template_deploys_nothing_until_it_exists(
    sandbox: Sandbox, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    h, ns = scene.harness, scene.namespace
    done_pass = f"Rollout {ns}/{NAME}: pass done"
    body = templated_rollout("team-errors")
    body["spec"]["template"]["spec"]["containers"][0]["image"] = scene.images[0]
    h.apply_rollout(ns, body)
    blocked = wait_status(
        scene,
        lambda s: (
            ("Stalled", "True", "InvalidSpec")
            in [(c["type"], c["status"], c["reason"]) for c in s.get("conditions") or []]
        ),
        "the Rollout to be refused",
    )
    assert status_of(blocked)["message"] == (
        f'metric "errors": unknown template "team-errors": no MetricTemplate "team-errors" in namespace '
        f'"{ns}", no ClusterMetricTemplate "team-errors", and no built-in template of that name '
        "(request-count, request-duration-p99, request-error-rate, slo-burn-rate)"
    )
    assert h.get(deployment(ns, NAME)) is None, "nothing deployed"

    # The template's arrival wakes the Rollout: it goes on without a spec change.
    create_template(scene, "MetricTemplate", "team-errors", CODE_SHARE, ns)
    h.wait_rollout(
        ns, NAME, lambda r: status_of(r).get("phase") == "Healthy", RELEASE_TIMEOUT, "the first revision"
    )
    h.wait(  # the pass that reports Healthy posts its Event after the status: let it land first
        lambda: h.events(ns, NAME),
        lambda events: any(e.get("reason") == "Healthy" for e in events),
        RELEASE_TIMEOUT,
        "the Healthy Event",
    )

    # Templates come from the watch cache: a pass that finds nothing to do asks for nothing.
    caplog.set_level(logging.DEBUG, logger="operators.rollout.reconciler")
    woken_at, since = time.time(), time.monotonic()
    h.patch_rollout(ns, NAME, {"metadata": {"annotations": {"example.com/note": "nothing to do"}}})
    h.wait(
        lambda: [r for r in caplog.records if r.created >= woken_at and r.getMessage().startswith(done_pass)],
        bool,
        RELEASE_TIMEOUT,
        "the annotation to wake the Rollout's loop",
    )
    asked = sandbox.requests.snapshot(user_agent="sluice-operator", since=since)
    assert [f"{r.method} {r.path}" for r in asked if not r.is_watch] == []


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_creates_and_lists_templates(scene: Scene, tmp_path: Path) -> None:
    name = f"p99-{scene.namespace}"[:63]
    manifest = tmp_path / "templates.yaml"
    spec = {"query": "up", "prometheus": {"address": "http://prometheus.monitoring:9090"}}
    manifest.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": API_VERSION,
                    "kind": "MetricTemplate",
                    "metadata": {"name": "p99"},
                    "spec": spec,
                },
                {
                    "apiVersion": API_VERSION,
                    "kind": "ClusterMetricTemplate",
                    "metadata": {"name": name},
                    "spec": spec,
                },
            ]
        )
    )
    try:
        assert "created" in kubectl(scene, tmp_path / "cache", "create", "-f", str(manifest))
        listed = kubectl(scene, tmp_path / "cache", "get", "metrictemplates")
        assert listed.split()[:3] == ["NAME", "PROMETHEUS", "AGE"], listed
        assert "p99" in listed and "http://prometheus.monitoring:9090" in listed
        assert name in kubectl(scene, tmp_path / "cache", "get", "clustermetrictemplates")
        wide = kubectl(scene, tmp_path / "cache", "get", "smt", "p99", "-o", "wide")
        assert "QUERY" in wide and " up " in f"{wide} "
    finally:
        scene.harness.cluster.delete(template_key("ClusterMetricTemplate", name))
