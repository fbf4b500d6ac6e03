"""The three shells, driven for real against an in-memory cluster and a fake Prometheus.

These are the fast tests that catch a shell passing the wrong thing to the
core (a metric's `args` dropped, an address not checked, a status that cannot
be read), which engine tests cannot see. See shell_world.py for the world.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from operators.api.base import API_VERSION
from operators.application.reconciler import ApplicationReconciler, application_key
from operators.application.types import ComponentTypes
from operators.foundation.keys import ObjectKey
from operators.rollout.inventory import rollout_key
from operators.sidecarset.reconciler import SidecarSetReconciler, sidecarset_key
from tests.fakes.prometheus import fake_prometheus
from tests.harness import sluice_crds
from tests.scenarios import IMAGE_V2, web_rollout
from tests.unit.shell_world import World, world

NS = "shop"


@pytest.fixture
def shell_world(tmp_path: Path) -> Iterator[World]:
    # Every query answers 0.001: a healthy canary unless a test says otherwise.
    with world(tmp_path, lambda query: 0.001) as built:
        yield built


def create_rollout(w: World, body: dict[str, Any]) -> None:
    w.cluster.create(
        {
            "apiVersion": API_VERSION,
            "kind": "Rollout",
            **body,
            "metadata": {**body["metadata"], "namespace": NS},
        }
    )


def rollout(w: World, name: str = "web") -> dict[str, Any]:
    body = w.cluster.get(rollout_key(NS, name))
    assert body is not None
    return body


def status(body: dict[str, Any]) -> dict[str, Any]:
    return dict(body.get("status") or {})


def events(w: World, name: str, reason: str) -> list[str]:
    items = w.cluster.list_objects("v1", "Event", NS)
    return [e["message"] for e in items if e["involvedObject"]["name"] == name and e["reason"] == reason]


def analysed(metric: dict[str, Any]) -> dict[str, Any]:
    body = web_rollout(
        steps=[{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 100}],
        analysis={"interval": "2s", "metrics": [{"thresholdRange": {"max": 0.5}, **metric}]},
    )
    body["spec"]["progressDeadlineSeconds"] = 3600
    return body


def release(w: World, body: dict[str, Any]) -> dict[str, Any]:
    """Deploy `body`, then release a new image and drive the Rollout shell until it is promoted."""
    shell = w.rollouts()
    create_rollout(w, body)
    name = body["metadata"]["name"]
    first = w.drive(
        lambda: shell.reconcile(NS, name),
        lambda: rollout(w, name),
        lambda r: status(r).get("phase") == "Healthy",
        "first deploy",
    )
    spec = copy.deepcopy(first["spec"])
    spec["template"]["spec"]["containers"][0]["image"] = IMAGE_V2
    w.cluster.merge_patch(rollout_key(NS, name), {"spec": {"template": spec["template"]}})
    before = status(first)["stableRevision"]
    return w.drive(
        lambda: shell.reconcile(NS, name),
        lambda: rollout(w, name),
        lambda r: status(r).get("phase") == "Healthy" and status(r).get("stableRevision") != before,
        "the release to be promoted",
    )


# --- Rollout ------------------------------------------------------------------------------------


def test_a_query_using_args_is_rendered_with_them_and_releases(shell_world: World) -> None:
    metric = {
        "name": "latency",
        "query": "histogram_quantile({{ args.quantile }}, "
        'rate(x{service="{{ canary.service }}"}[{{ interval }}]))',
        "args": {"quantile": "0.95"},
    }
    done = release(shell_world, analysed(metric))
    assert status(done)["analysis"]["passed"] >= 1
    assert 'histogram_quantile(0.95, rate(x{service="web-canary"}[2s]))' in shell_world.prometheus.queries


def test_a_metric_at_an_address_not_allowed_is_refused_before_any_request(shell_world: World) -> None:
    with fake_prometheus(lambda query: 0.0, host="127.0.0.2") as elsewhere:
        body = analysed({"name": "errors", "query": "up", "prometheus": {"address": elsewhere.url}})
        create_rollout(shell_world, body)
        shell = shell_world.rollouts()
        blocked = shell_world.drive(
            lambda: shell.reconcile(NS, "web"),
            lambda: rollout(shell_world),
            lambda r: bool(status(r).get("message")),
            "the Rollout to say why it is blocked",
        )
        host = elsewhere.url.removeprefix("http://")
        assert f"run the operator with --metric-hosts {host} to allow it" in status(blocked)["message"]
        assert {c["type"]: c["status"] for c in status(blocked)["conditions"]}["Stalled"] == "True"
        assert shell_world.cluster.get(ObjectKey("apps/v1", "Deployment", NS, "web")) is None
        assert elsewhere.requests == 0

        # Allowed by the operator's flag, the same metric is queried and the Rollout deploys.
        allowed = shell_world.rollouts(metric_hosts=[host])
        shell_world.drive(
            lambda: allowed.reconcile(NS, "web"),
            lambda: rollout(shell_world),
            lambda r: status(r).get("phase") == "Healthy",
            "the Rollout to deploy once its metric host is allowed",
        )


def test_a_status_it_cannot_read_is_reported_and_repaired(shell_world: World) -> None:
    # A newer Sluice's CRD knows a phase this one does not, and wrote it before being rolled back.
    [newer] = [crd for crd in sluice_crds() if crd["spec"]["names"]["kind"] == "Rollout"]
    status_schema = newer["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    status_schema["properties"]["phase"]["enum"].append("Verifying")
    shell_world.install_crd(newer)
    body = web_rollout(steps=[{"setWeight": 100}])
    create_rollout(shell_world, body)
    shell = shell_world.rollouts()
    shell_world.drive(
        lambda: shell.reconcile(NS, "web"),
        lambda: rollout(shell_world),
        lambda r: status(r).get("phase") == "Healthy",
        "deploy",
    )
    shell_world.cluster.merge_patch(
        rollout_key(NS, "web"), {"status": {"phase": "Verifying", "canaryWeight": 0}}, subresource="status"
    )

    shell.reconcile(NS, "web")  # must not raise, pass after pass
    repaired = shell_world.drive(
        lambda: shell.reconcile(NS, "web"),
        lambda: rollout(shell_world),
        lambda r: status(r).get("phase") == "Healthy",
        "repair",
    )
    assert status(repaired)["stableRevision"]
    [message] = events(shell_world, "web", "StatusRepaired")
    assert "dropped phase" in message and "'Verifying'" in message


def test_a_runaway_query_template_is_refused_while_another_rollout_releases(shell_world: World) -> None:
    runaway = analysed(
        {
            "name": "spin",
            "query": "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}up",
        }
    )
    runaway["metadata"]["name"] = "spin"
    create_rollout(shell_world, runaway)
    shell = shell_world.rollouts()
    blocked = shell_world.drive(
        lambda: shell.reconcile(NS, "spin"),
        lambda: rollout(shell_world, "spin"),
        lambda r: bool(status(r).get("message")),
        "the runaway template to be refused",
    )
    assert "longer than" in status(blocked)["message"]
    assert shell_world.cluster.get(ObjectKey("apps/v1", "Deployment", NS, "spin")) is None
    # The same reconciler goes on releasing others.
    release(shell_world, analysed({"name": "errors", "query": 'up{service="{{ canary.service }}"}'}))


def test_a_deleted_stable_deployment_comes_back_from_the_revision_history(shell_world: World) -> None:
    body = web_rollout(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}])
    body["spec"]["progressDeadlineSeconds"] = 3600
    create_rollout(shell_world, body)
    shell = shell_world.rollouts()
    stable = ObjectKey("apps/v1", "Deployment", NS, "web")
    shell_world.drive(
        lambda: shell.reconcile(NS, "web"),
        lambda: rollout(shell_world),
        lambda r: status(r).get("phase") == "Healthy",
        "first deploy",
    )
    template = copy.deepcopy(rollout(shell_world)["spec"]["template"])
    template["spec"]["containers"][0]["image"] = IMAGE_V2
    shell_world.cluster.merge_patch(rollout_key(NS, "web"), {"spec": {"template": template}})
    shell_world.drive(
        lambda: shell.reconcile(NS, "web"),
        lambda: rollout(shell_world),
        lambda r: status(r).get("phase") == "Paused",
        "the release to pause at 20%",
    )
    shell_world.cluster.delete(stable)
    shell_world.drive(
        lambda: shell.reconcile(NS, "web"),
        lambda: shell_world.cluster.get(stable),
        lambda d: d is not None and (d.get("status") or {}).get("readyReplicas") == 4,
        "the stable Deployment to be back and ready",
    )
    back = shell_world.cluster.get(stable)
    assert back is not None
    assert back["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/web:1.0.0"
    after = status(rollout(shell_world))
    assert (after["phase"], after["currentStepIndex"], after["canaryWeight"]) == ("Paused", 1, 20)
    assert events(shell_world, "web", "StableRecreated")


# --- Application and SidecarSet -----------------------------------------------------------------


def test_the_application_shell_renders_its_rollouts_and_reports_them(shell_world: World) -> None:
    shell = ApplicationReconciler(shell_world.cluster, ComponentTypes(None), clock=shell_world.clock)
    app = {
        "apiVersion": API_VERSION,
        "kind": "Application",
        "metadata": {"name": "shop", "namespace": NS},
        "spec": {
            "components": [
                {
                    "name": "web",
                    "type": "webservice",
                    "image": "ghcr.io/acme/web:1",
                    "ports": [{"name": "http", "port": 8080, "expose": 80}],
                }
            ]
        },
    }
    shell_world.cluster.create(app)
    shell.reconcile(NS, "shop")
    made = rollout(shell_world, "web")
    assert made["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/web:1"
    reported = shell_world.cluster.get(application_key(NS, "shop"))
    assert reported is not None
    assert [c["name"] for c in reported["status"]["components"]] == ["web"]


def test_the_sidecarset_shell_counts_the_rollouts_it_matches(shell_world: World) -> None:
    create_rollout(shell_world, web_rollout(steps=[{"setWeight": 100}]))
    shell_world.cluster.create(
        {
            "apiVersion": API_VERSION,
            "kind": "SidecarSet",
            "metadata": {"name": "log-agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "containers": [{"name": "log-agent", "image": "fluent-bit:3.1"}],
            },
        }
    )
    shell = SidecarSetReconciler(shell_world.cluster, clock=shell_world.clock)
    shell.reconcile("log-agent")
    body = shell_world.cluster.get(sidecarset_key("log-agent"))
    assert body is not None
    assert body["status"]["matchedRollouts"] == 1
