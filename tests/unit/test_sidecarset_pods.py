"""Pods outside Sluice: their facts, the in-place JSON patch, and the webhook's decision."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from operators.sidecarset.facts import pod_facts, rollout_facts, same_image
from operators.sidecarset.fleet import SidecarSetObject
from operators.sidecarset.inject import INJECTED_ANNOTATION, inject, records_of
from operators.sidecarset.inplace import image_patch
from operators.sidecarset.webhook import pod_injection
from tests.unit.sidecar_world import pod_template, sidecar, sidecarset_spec

S = "log-agent"


def running_pod(
    image: str = "fluent-bit:1", running: str | None = None, ready: bool = True
) -> dict[str, Any]:
    pod = inject(pod_template("app"), [sidecar(S, image)]).template
    pod["metadata"].update(name="p1", namespace="shop", resourceVersion="7")
    pod["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [
            {"name": S, "image": running or f"docker.io/library/{image}"},
            {"name": "app", "image": "docker.io/library/app:1"},
        ],
    }
    return pod


@pytest.mark.parametrize(
    ("running", "wanted", "same"),
    [
        ("docker.io/library/nginx:1.25", "nginx:1.25", True),
        ("docker.io/library/nginx:latest", "nginx", True),
        ("docker.io/acme/agent:2", "acme/agent:2", True),
        ("ghcr.io/acme/agent:2", "ghcr.io/acme/agent:2", True),
        ("localhost:5000/agent:2", "localhost:5000/agent:2", True),
        ("docker.io/library/nginx:1.25", "nginx:1.26", False),
        ("ghcr.io/acme/agent:2", "acme/agent:2", False),
    ],
)
def test_same_image(running: str, wanted: str, same: bool) -> None:
    assert same_image(running, wanted) is same


def test_pod_facts() -> None:
    facts = pod_facts(running_pod(), S)
    assert facts.key == "shop/p1" and facts.ready and not facts.restarting
    assert facts.record is not None and facts.record.revision == sidecar(S, "fluent-bit:1").revision
    assert facts.images == {S: (0, "fluent-bit:1")}
    assert pod_facts(running_pod(ready=False), S).ready is False
    restarting = running_pod(running="docker.io/library/fluent-bit:0")
    assert pod_facts(restarting, S).restarting
    assert pod_facts(running_pod(), "other").record is None


def test_image_patch_applies_cleanly_and_records_the_new_revision() -> None:
    pod = running_pod()
    new = sidecar(S, "fluent-bit:2")
    ops = image_patch(pod, new)
    assert {"op": "replace", "path": "/spec/containers/0/image", "value": "fluent-bit:2"} in ops
    assert ops[0]["op"] == "test", "refuses to land on a pod changed since it was read"
    after = jsonpatch.apply_patch(copy.deepcopy(pod), ops)
    assert after["spec"]["containers"][0]["image"] == "fluent-bit:2"
    assert after["spec"]["containers"][1] == pod["spec"]["containers"][1], "the app is untouched"
    assert records_of(after)[S].revision == new.revision


def test_image_patch_refuses_more_than_an_image_change() -> None:
    pod = running_pod()
    other = sidecar(S, "fluent-bit:2", containers=[{"name": S, "image": "fluent-bit:2", "args": ["-v"]}])
    assert image_patch(pod, other) == []
    assert image_patch(pod_template("app"), sidecar(S)) == [], "a pod without the sidecar"


def test_image_patch_test_op_fails_on_a_changed_pod() -> None:
    pod = running_pod()
    ops = image_patch(pod, sidecar(S, "fluent-bit:2"))
    pod["metadata"]["annotations"][INJECTED_ANNOTATION] = "{}"
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(pod, ops)


def sidecarsets(*specs: tuple[str, Any]) -> list[SidecarSetObject]:
    return [SidecarSetObject(name, 1, spec) for name, spec in specs]


@pytest.mark.parametrize(
    ("labels", "namespace", "sets", "injected"),
    [
        pytest.param({"tier": "web"}, "shop", [(S, sidecarset_spec())], [S], id="matches"),
        pytest.param({"tier": "db"}, "shop", [(S, sidecarset_spec())], None, id="no-match"),
        pytest.param(
            {"tier": "web"},
            "kube-system",
            [(S, sidecarset_spec(namespaceSelector={}))],
            None,
            id="kube-system-never",
        ),
        pytest.param(
            {"tier": "web", "sluice.dev/rollout": "web"},
            "shop",
            [(S, sidecarset_spec())],
            None,
            id="rollout-pods-have-theirs",
        ),
        pytest.param(
            {"tier": "web"},
            "shop",
            [(S, sidecarset_spec(injectionStrategy={"paused": True}))],
            None,
            id="injection-paused",
        ),
    ],
)
def test_webhook_decision(
    labels: dict[str, str], namespace: str, sets: list[tuple[str, Any]], injected: list[str] | None
) -> None:
    pod = pod_template("app", labels=labels)
    result = pod_injection(pod, namespace, {}, sidecarsets(*sets))
    assert (None if result is None else list(result.injected)) == injected


def test_rollout_facts_read_the_release_from_the_canary_only_while_status_names_it() -> None:
    def deployment(image: str, revision: str) -> dict[str, Any]:
        template = inject(pod_template("app"), [sidecar(S, image)]).template
        return {
            "metadata": {"annotations": {"sluice.dev/revision": revision}},
            "spec": {"template": template},
        }

    body = {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"template": pod_template("app")},
        "status": {"phase": "Progressing", "canaryRevision": "r2"},
    }
    stable, canary = deployment("fluent-bit:1", "r1"), deployment("fluent-bit:2", "r2")
    facts = rollout_facts(body, stable, canary, {"env": "prod"})
    new = sidecar(S, "fluent-bit:2").revision
    assert facts.releasing(S, new) and not facts.updated(S, new)
    body["status"] = {"phase": "Healthy"}
    assert rollout_facts(body, stable, canary, {}).canary == {}
