"""
Server-side apply against a running sandbox, with the real kubectl (``kubectl apply
--server-side``) and the real ``kubernetes`` client (a raw apply PATCH): every example applies,
a second manager's change of a field is a conflict naming its owner, ``--force-conflicts`` takes
the field over, and a field its applier stops applying is removed.
"""

from __future__ import annotations

import functools
import json
import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import yaml

from sluice_sandbox.apiserver import SandboxAPIServer, SandboxThread
from sluice_sandbox.builtin_resources import BUILTIN_RESOURCES
from sluice_sandbox.fieldsets import decode
from sluice_sandbox.resources import ResourceSpec
from tests.harness import httproute_crd
from tests.integration.test_sandbox_kubectl import Kubectl

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRDS = REPO / "crds"
NS = "shop"
# Kustomize's own configuration, not an object: `kubectl apply -k` reads it, not the API server.
NOT_MANIFESTS = {"kustomization.yaml"}
# examples/sharded/ has PodDisruptionBudgets, which the sandbox does not serve by default.
PDB = ResourceSpec(
    "policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short_names=("pdb",), status=True
)


@pytest.fixture
def sandbox(tmp_path: pathlib.Path) -> Iterator[SandboxThread]:
    factory = functools.partial(SandboxAPIServer, resources=(*BUILTIN_RESOURCES, PDB))
    with SandboxThread(kubeconfig=tmp_path / "kubeconfig", server_factory=factory) as running:
        yield running


@pytest.fixture
def kubectl(sandbox: SandboxThread, tmp_path: pathlib.Path) -> Kubectl:
    run = Kubectl(sandbox.kubeconfig, tmp_path / "kubectl-cache")
    run("create", "namespace", NS)
    return run


def managed(obj: dict[str, Any]) -> dict[tuple[str, str], set[tuple[str, ...]]]:
    """The decoded managedFields by (manager, operation)."""
    return {
        (entry["manager"], entry["operation"]): decode(entry["fieldsV1"])
        for entry in obj["metadata"].get("managedFields") or []
    }


def example_files() -> list[pathlib.Path]:
    return [path for path in sorted(EXAMPLES.rglob("*.yaml")) if path.name not in NOT_MANIFESTS]


def test_every_example_applies_server_side(kubectl: Kubectl, tmp_path: pathlib.Path) -> None:
    # The CRDs themselves, server-side: big schemas with list-maps of their own.
    assert "serverside-applied" in kubectl("apply", "--server-side", "-f", str(CRDS))
    upstream = tmp_path / "httproutes.yaml"
    upstream.write_text(yaml.safe_dump(httproute_crd()))
    kubectl("apply", "--server-side", "-f", str(upstream))
    kubectl("create", "namespace", "sluice-system")

    applied = 0
    for index, example in enumerate(example_files()):
        documents = [doc for doc in yaml.safe_load_all(example.read_text()) if doc]
        # Each file into a namespace of its own: several examples are a Rollout `web` in `shop`,
        # each a different shape of it, and each must apply as it is, not as a change of another.
        for document in documents:
            document["metadata"].pop("namespace", None)
        path = tmp_path / f"{index}-{example.name}"
        path.write_text(yaml.safe_dump_all(documents))
        namespace = ["-n", f"example-{index}"]
        kubectl("create", "namespace", namespace[1])
        output = kubectl("apply", "--server-side", "-f", str(path), *namespace)
        assert output.count("serverside-applied") == len(documents), f"{path}: {output}"
        again = kubectl("apply", "--server-side", "-f", str(path), *namespace)
        assert again.count("serverside-applied") == len(documents), f"{path} re-applied: {again}"

        listed = kubectl.json("get", "-f", str(path), *namespace, "--show-managed-fields")
        objects = listed["items"] if listed.get("kind") == "List" else [listed]
        for document, obj in zip(documents, objects, strict=True):
            if set(document) <= {"apiVersion", "kind", "metadata"} and set(document["metadata"]) <= {"name"}:
                continue  # e.g. a bare Namespace: nobody owns names, so the applier owns nothing
            owned = managed(obj)[("kubectl", "Apply")]
            assert ("f:metadata",) not in owned and ("f:kind",) not in owned
            top_fields = {
                f"f:{key}" for key in document if key not in ("apiVersion", "kind", "metadata", "status")
            }
            assert top_fields <= {path[0] for path in owned}, f"{path}: {document['metadata']['name']}"
            applied += 1
    assert applied >= 12


def test_conflicts_force_and_removal_with_kubectl(kubectl: Kubectl, tmp_path: pathlib.Path) -> None:
    kubectl("apply", "--server-side", "-f", str(CRDS / "rollout.yaml"))
    rollout = yaml.safe_load((EXAMPLES / "rollout-minimal.yaml").read_text())
    rollout["metadata"]["labels"] = {"team": "shop", "tier": "web"}
    manifest = tmp_path / "rollout.yaml"
    manifest.write_text(yaml.safe_dump(rollout))
    kubectl("apply", "--server-side", "-f", str(manifest), "-n", NS)

    # Another manager sets the replicas to another value: refused, naming the owner and the field.
    other = json.loads(json.dumps(rollout))
    other["spec"] = {"replicas": rollout["spec"]["replicas"] + 2}
    del other["metadata"]["labels"]
    other_manifest = tmp_path / "other.yaml"
    other_manifest.write_text(yaml.safe_dump(other))
    error = kubectl.fails(
        "apply", "--server-side", "--field-manager", "other", "-f", str(other_manifest), "-n", NS
    )
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas' in error
    assert kubectl.json("get", "rollout", "web", "-n", NS)["spec"]["replicas"] == rollout["spec"]["replicas"]

    # The same value is no conflict: both own it.
    same = json.loads(json.dumps(other))
    same["spec"]["replicas"] = rollout["spec"]["replicas"]
    other_manifest.write_text(yaml.safe_dump(same))
    kubectl("apply", "--server-side", "--field-manager", "shared", "-f", str(other_manifest), "-n", NS)

    # Forced: the field moves to the other manager.
    other_manifest.write_text(yaml.safe_dump(other))
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        "other",
        "-f",
        str(other_manifest),
        "-n",
        NS,
    )
    taken = kubectl.json("get", "rollout", "web", "-n", NS, "--show-managed-fields")
    assert taken["spec"]["replicas"] == other["spec"]["replicas"]
    owners = managed(taken)
    assert owners[("other", "Apply")] == {("f:spec", "f:replicas")}
    assert ("f:spec", "f:replicas") not in owners[("kubectl", "Apply")]
    assert ("shared", "Apply") not in owners, "forced off every other owner: shared had nothing else"

    # kubectl's old manifest now conflicts in turn: the replicas are the other manager's.
    error = kubectl.fails("apply", "--server-side", "-f", str(manifest), "-n", NS)
    assert 'conflict with "other": .spec.replicas' in error

    # kubectl gives up the replicas and stops applying a label: the label is removed (nobody
    # else owns it), the replicas stay (the other manager's).
    del rollout["metadata"]["labels"]["tier"], rollout["spec"]["replicas"]
    manifest.write_text(yaml.safe_dump(rollout))
    kubectl("apply", "--server-side", "-f", str(manifest), "-n", NS)
    live = kubectl.json("get", "rollout", "web", "-n", NS)
    assert live["metadata"]["labels"] == {"team": "shop"}
    assert live["spec"]["replicas"] == other["spec"]["replicas"]

    shown = kubectl("get", "rollout", "web", "-n", NS, "-o", "yaml", "--show-managed-fields")
    assert "fieldsType: FieldsV1" in shown and "operation: Apply" in shown


def test_built_in_lists_merge_by_key_with_kubectl(kubectl: Kubectl, tmp_path: pathlib.Path) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "api", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "api"}},
            "template": {
                "metadata": {"labels": {"app": "api"}},
                "spec": {"containers": [{"name": "app", "image": "api:1"}]},
            },
        },
    }
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    kubectl("apply", "--server-side", "-f", str(manifest))
    # Another manager adds a sidecar container: a list-map item of its own, no conflict.
    sidecar = json.loads(json.dumps(deployment))
    sidecar["spec"]["template"]["spec"]["containers"] = [{"name": "proxy", "image": "envoy:1"}]
    del sidecar["spec"]["selector"]
    manifest.write_text(yaml.safe_dump(sidecar))
    kubectl("apply", "--server-side", "--field-manager", "injector", "-f", str(manifest))
    live = kubectl.json("get", "deployment", "api", "-n", NS, "--show-managed-fields")
    assert [c["name"] for c in live["spec"]["template"]["spec"]["containers"]] == ["app", "proxy"]
    proxy = ("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"proxy"}')
    assert proxy in managed(live)[("injector", "Apply")]
    assert live["spec"]["replicas"] == 1, "the API server's default, owned by no applier"


def test_raw_apply_patch_with_the_kubernetes_client(sandbox: SandboxThread, kubectl: Kubectl) -> None:
    client = kubernetes.config.new_client_from_config(config_file=str(sandbox.kubeconfig))
    core = kubernetes.client.CoreV1Api(client)
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"color": "blue"},
    }

    with pytest.raises(kubernetes.client.ApiException) as refused:
        core.patch_namespaced_config_map("settings", NS, body, _content_type="application/apply-patch+yaml")
    assert refused.value.status == 422
    assert (
        "fieldManager: Required value: is required for apply patch"
        in json.loads(refused.value.body)["message"]
    )

    # Apply creates the object (201), through a raw call of the API client.
    request = client.param_serialize(
        "PATCH",
        f"/api/v1/namespaces/{NS}/configmaps/settings",
        query_params=[("fieldManager", "gitops")],
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = client.call_api(*request)
    response.read()
    assert response.status == 201
    created = json.loads(response.data)
    assert managed(created) == {("gitops", "Apply"): {("f:data", "f:color")}}

    # An update by a client naming no manager: its User-Agent names it.
    core.patch_namespaced_config_map("settings", NS, {"data": {"color": "green"}})
    updated = core.read_namespaced_config_map("settings", NS)
    owners = {entry.manager: entry.operation for entry in updated.metadata.managed_fields}
    assert owners == {"OpenAPI-Generator": "Update"}, "the update took gitops' only field"

    with pytest.raises(kubernetes.client.ApiException) as conflict:
        core.patch_namespaced_config_map(
            "settings", NS, body, field_manager="gitops", _content_type="application/apply-patch+yaml"
        )
    status_body = json.loads(conflict.value.body)
    assert (conflict.value.status, status_body["reason"]) == (409, "Conflict")
    assert status_body["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": 'conflict with "OpenAPI-Generator" using v1',
            "field": ".data.color",
        }
    ]

    forced = core.patch_namespaced_config_map(
        "settings", NS, body, field_manager="gitops", force=True, _content_type="application/apply-patch+yaml"
    )
    assert forced.data == {"color": "blue"}
    assert [entry.manager for entry in forced.metadata.managed_fields] == ["gitops"]
