"""The install manifests: they parse, and RBAC grants what the operator does and nothing more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"

# Every request the operator makes: (API group, resource, verb). kopf watches
# Rollouts and Deployments, patches Rollouts (finalizers) and their status; the
# reconciler reads and writes the objects a Rollout owns and posts Events.
NEEDED = [("sluice.dev", "rollouts", verb) for verb in ("get", "list", "watch", "patch")] + [
    ("sluice.dev", "rollouts/status", "patch"),
    ("apps", "deployments", "get"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
    ("apps", "deployments", "create"),
    ("apps", "deployments", "update"),
    ("", "services", "get"),
    ("", "services", "create"),
    ("", "services", "update"),
    ("gateway.networking.k8s.io", "httproutes", "get"),
    ("gateway.networking.k8s.io", "httproutes", "create"),
    ("gateway.networking.k8s.io", "httproutes", "update"),
    ("", "events", "create"),
]


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def cluster_role() -> dict[str, Any]:
    roles = [d for d in documents() if d["kind"] == "ClusterRole"]
    assert len(roles) == 1
    return roles[0]


def allows(role: dict[str, Any], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and verb in rule.get("verbs", [])
        for rule in role["rules"]
    )


@pytest.mark.parametrize(("group", "resource", "verb"), NEEDED, ids=lambda v: str(v) or "core")
def test_rbac_grants_what_the_operator_uses(group: str, resource: str, verb: str) -> None:
    assert allows(cluster_role(), group, resource, verb)


def test_rbac_is_least_privilege() -> None:
    role = cluster_role()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], (
            rule
        )
        # Owned objects are deleted by the garbage collector through owner references.
        assert "delete" not in rule["verbs"] and "deletecollection" not in rule["verbs"], rule
    for secret_like in ("secrets", "configmaps", "pods/exec"):
        assert not any(secret_like in rule["resources"] for rule in role["rules"])


def test_operator_runs_the_service_account_the_role_is_bound_to() -> None:
    docs = documents()
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert binding["roleRef"]["name"] == cluster_role()["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]
    container = pod["containers"][0]
    assert container["args"][0] == "run"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
