"""A GitOps tool and Sluice applying to the same Rollout and HTTPRoute never overwrite each other.

Flux applies everything with server-side apply (Argo CD can): the fields in Git
belong to its field manager. Sluice applies what it owns as its own manager,
``sluice``: a Rollout's status, the route's rules (the weights). Here a
"gitops" manager applies the Rollout and adds fields of its own to the
route, the real operator releases a new version through the sandbox's
server-side apply, and each side's fields are still there, owned by it.
"""

from __future__ import annotations

from typing import Any

import pytest

from operators.api.base import API_VERSION
from operators.foundation.cluster import APPLY_PATCH, FIELD_MANAGER, KubeError, object_path
from operators.foundation.keys import key_of
from operators.rollout.inventory import rollout_key
from tests import scenarios
from tests.harness import Harness, httproute, route_weights, status_of

GITOPS = "gitops"


def apply_as(h: Harness, manager: str, body: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
    """Server-side apply `body` as `manager`, the way Flux does (force off unless asked)."""
    query = {"fieldManager": manager, **({"force": "true"} if force else {})}
    return h.cluster.request("PATCH", object_path(key_of(body)), body, APPLY_PATCH, query=query)


def managers(obj: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The managedFields entries by (manager, operation, subresource)."""
    return {
        (entry["manager"], entry["operation"], entry.get("subresource", "")): entry.get("fieldsV1") or {}
        for entry in obj["metadata"].get("managedFields") or []
    }


def rollout_in_git(ns: str, image: str) -> dict[str, Any]:
    body = scenarios.web_rollout(steps=[{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 100}])
    body["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return {
        "apiVersion": API_VERSION,
        "kind": "Rollout",
        **body,
        "metadata": {"name": "web", "namespace": ns},
    }


def route_fields_in_git(ns: str) -> dict[str, Any]:
    """What the GitOps repository says of the route Sluice manages: a label and the hostnames."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": ns, "labels": {"team": "shop"}},
        "spec": {"hostnames": ["web.example.com"]},
    }


def test_gitops_and_sluice_apply_to_the_same_rollout_and_route(scene: scenarios.Scene) -> None:
    h, ns = scene.harness, scene.namespace
    h.ensure_namespace(ns)
    first, second = scene.images

    apply_as(h, GITOPS, rollout_in_git(ns, first))
    healthy = h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("phase") == "Healthy",
        scenarios.RELEASE_TIMEOUT,
        "the first release",
    )
    stable_before = status_of(healthy)["stableRevision"]
    apply_as(h, GITOPS, route_fields_in_git(ns))

    # A new version from Git: Sluice shifts the weights by applying the route's rules.
    apply_as(h, GITOPS, rollout_in_git(ns, second))
    done = h.wait_rollout(
        ns,
        "web",
        lambda r: scenarios.promoted(status_of(r), stable_before),
        scenarios.RELEASE_TIMEOUT,
        "the release from Git to be promoted",
    )
    assert scenarios.history_messages(done, "set-weight") == [
        "canary weight 0% -> 50%",
        "canary weight 50% -> 100%",
    ]

    route = h.read(httproute(ns, "web"))
    assert route["metadata"]["labels"]["team"] == "shop", "Sluice's applies kept the GitOps label"
    assert route["spec"]["hostnames"] == ["web.example.com"], "Sluice's applies kept the GitOps hostnames"
    assert route_weights(route) == {"web": 100, "web-canary": 0}
    owners = managers(route)
    assert "f:rules" in owners[(FIELD_MANAGER, "Apply", "")]["f:spec"]
    assert "f:hostnames" in owners[(GITOPS, "Apply", "")]["f:spec"]
    assert "f:hostnames" not in owners[(FIELD_MANAGER, "Apply", "")]["f:spec"]

    rollout = h.rollout(ns, "web")
    owners = managers(rollout)
    assert "f:template" in owners[(GITOPS, "Apply", "")]["f:spec"]
    assert "f:phase" in owners[(FIELD_MANAGER, "Apply", "status")]["f:status"]
    assert "f:status" not in owners[(GITOPS, "Apply", "")], "the GitOps manager owns no status"

    # Git applies the same again (a Flux reconcile): no conflict with Sluice, nothing changes.
    again = apply_as(h, GITOPS, rollout_in_git(ns, second))
    assert again["metadata"]["generation"] == rollout["metadata"]["generation"]
    assert status_of(again) == status_of(rollout), "the GitOps apply left Sluice's status alone"
    assert again["metadata"].get("finalizers") == rollout["metadata"].get("finalizers"), (
        "kopf's finalizer stays"
    )


def test_a_gitops_apply_of_the_weights_conflicts_with_sluice(scene: scenarios.Scene) -> None:
    h, ns = scene.harness, scene.namespace
    h.ensure_namespace(ns)
    apply_as(h, GITOPS, rollout_in_git(ns, scene.images[0]))
    h.wait_rollout(
        ns,
        "web",
        lambda r: status_of(r).get("phase") == "Healthy",
        scenarios.RELEASE_TIMEOUT,
        "the first release",
    )
    weights_in_git = route_fields_in_git(ns)
    weights_in_git["spec"]["rules"] = [{"backendRefs": [{"name": "web", "port": 80, "weight": 1}]}]

    with pytest.raises(KubeError) as refused:
        apply_as(h, GITOPS, weights_in_git)
    assert refused.value.status == 409
    assert f'conflict with "{FIELD_MANAGER}"' in refused.value.message
    assert ".spec.rules" in refused.value.message
    route = h.read(httproute(ns, "web"))
    assert route_weights(route) == {"web": 100, "web-canary": 0}, "the refused apply changed nothing"
    assert h.read(rollout_key(ns, "web"))["status"]["phase"] == "Healthy"
