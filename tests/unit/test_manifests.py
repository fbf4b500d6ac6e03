"""The install manifests: they parse, and hang together (RBAC's bindings, the webhook, the Deployment)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from operators.sidecarset.webhook import WEBHOOK_ID
from operators.webhook.server import DEFAULT_CONFIGURATION, DEFAULT_PORT, DEFAULT_SERVICE_HOSTS

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
SHARDED = Path(__file__).resolve().parents[2] / "examples" / "sharded"

# Leader election, in the operator's own namespace (a Role): the Lease read and renewed or taken over
# (get, update), created the first time, and the Leases of the installation listed to find another
# shard count's. tests/unit/test_leadership.py checks these are exactly the elector's requests.
LEASE_VERBS = ["get", "list", "create", "update"]

# That RBAC grants exactly the requests the operator makes, no fewer and no more, is proved from the
# requests themselves: tests/integration/test_rbac_from_requests.py. These tests check its shape.


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def cluster_role() -> dict[str, Any]:
    roles = [d for d in documents() if d["kind"] == "ClusterRole"]
    assert len(roles) == 1
    return roles[0]


def lease_role() -> dict[str, Any]:
    roles = [d for d in documents() if d["kind"] == "Role"]
    assert len(roles) == 1
    return roles[0]


def operator_deployment(docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    (deployment,) = [d for d in (docs or documents()) if d["kind"] == "Deployment"]
    return deployment


def test_rbac_is_least_privilege() -> None:
    role = cluster_role()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], (
            rule
        )
        # Owned objects are deleted by the garbage collector through owner references. The
        # exceptions: an Application deletes the Rollout of a component removed from its spec, a
        # Rollout prunes its oldest revision records, and a job metric's Job goes once judged.
        assert "deletecollection" not in rule["verbs"], rule
        if "delete" in rule["verbs"]:
            deletable = [
                (["sluice.dev"], ["rollouts"]),
                (["apps"], ["controllerrevisions"]),
                (["batch"], ["jobs"]),
            ]
            assert (rule["apiGroups"], rule["resources"]) in deletable, rule
    for secret_like in ("configmaps", "pods/exec"):
        assert not any(secret_like in rule["resources"] for rule in role["rules"])
    # Secrets a metric names (its credentials) are read one by one, by name: never listed or watched,
    # which would hold every Secret of the cluster in the operator's memory.
    secret_rules = [rule for rule in role["rules"] if "secrets" in rule["resources"]]
    assert [(rule["resources"], rule["verbs"]) for rule in secret_rules] == [(["secrets"], ["get"])]


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


def test_the_webhook_configuration_is_the_operators_and_fails_open() -> None:
    docs = documents()
    configuration = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
    assert configuration["metadata"]["name"] == DEFAULT_CONFIGURATION
    (webhook,) = configuration["webhooks"]
    assert webhook["failurePolicy"] == "Ignore" and webhook["sideEffects"] == "None"
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    excluded = webhook["namespaceSelector"]["matchExpressions"][0]
    assert excluded["key"] == "kubernetes.io/metadata.name" and excluded["operator"] == "NotIn"
    assert {"kube-system", "kube-public"} <= set(excluded["values"])
    skipped = {e["key"]: e["operator"] for e in webhook["objectSelector"]["matchExpressions"]}
    assert skipped == {"app.kubernetes.io/managed-by": "NotIn", "sluice.dev/rollout": "DoesNotExist"}
    client = webhook["clientConfig"]["service"]
    assert client["path"] == f"/{WEBHOOK_ID}"
    assert f"{client['name']}.{client['namespace']}.svc" in DEFAULT_SERVICE_HOSTS
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == client["name"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[service["spec"]["ports"][0]["targetPort"]] == DEFAULT_PORT
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert "webhook.yaml" in kustomization["resources"]


def test_admission_configurations_are_granted_by_name_only() -> None:
    rules = [r for r in cluster_role()["rules"] if "mutatingwebhookconfigurations" in r["resources"]]
    assert rules and all(r.get("resourceNames") == ["sluice-sidecar-injector"] for r in rules)


def test_component_types_come_from_an_optional_configmap() -> None:
    # Users add component types by creating the ConfigMap; without it the operator still starts.
    pod = next(d for d in documents() if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    directory = args[args.index("--component-types") + 1]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == directory)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"] == {"name": "sluice-component-types", "optional": True}
    # Mounted whole (not with subPath), so the kubelet updates the files and the types are read again.
    assert "subPath" not in mount and mount["readOnly"] is True


# ----- high availability: two replicas, one Lease -----


def test_the_lease_role_grants_exactly_what_leader_election_uses() -> None:
    role = lease_role()
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": LEASE_VERBS}
    ]
    # Namespaced: the operator touches no Lease outside its own namespace (the node heartbeats in
    # kube-node-lease, other controllers' elections), and none through the ClusterRole.
    assert not any("leases" in rule["resources"] for rule in cluster_role()["rules"])
    deployment = operator_deployment()
    assert role["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    (binding,) = [d for d in documents() if d["kind"] == "RoleBinding"]
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": deployment["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": deployment["metadata"]["namespace"],
        }
    ]


def test_the_operator_runs_two_replicas_with_leader_election() -> None:
    deployment = operator_deployment()
    assert deployment["spec"]["replicas"] >= 2
    # Two replicas never write at once (only the Lease's holder does), so a rolling update is safe.
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--no-leader-election" not in container["args"], "leader election is on (the default)"
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in container["env"]}
    # The Lease goes in the pod's namespace (the Role's); the pod's name starts its identity.
    assert env["POD_NAMESPACE"] == "metadata.namespace" and env["POD_NAME"] == "metadata.name"
    # A replica is ready (gets webhook requests) once it serves the webhook, leader or not.
    assert container["readinessProbe"]["tcpSocket"]["port"] == "webhook"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (budget,) = [d for d in documents() if d["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_sharded_example_is_the_operator_once_per_shard() -> None:
    """examples/sharded/: one Deployment per shard, each the base operator but for --shard and a label."""
    docs = [d for d in yaml.safe_load_all((SHARDED / "shards.yaml").read_text()) if d]
    base = operator_deployment()
    shards = [d for d in docs if d["kind"] == "Deployment"]
    indices = []
    selectors = []
    for shard in shards:
        pod = shard["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        spec = args[args.index("--shard") + 1]
        index, count = (int(part) for part in spec.split("/"))
        indices.append(index)
        assert count == len(shards), f"{spec}: every shard is of the same N, the number of Deployments"
        assert args[: args.index("--shard")] == base["spec"]["template"]["spec"]["containers"][0]["args"]
        # Apart from the flag and the shard label, the pod is exactly the base operator's.
        expected = copy.deepcopy(base)
        expected["spec"]["template"]["spec"]["containers"][0]["args"] = args
        for labels in (
            expected["metadata"]["labels"],
            expected["spec"]["selector"]["matchLabels"],
            expected["spec"]["template"]["metadata"]["labels"],
            expected["spec"]["template"]["spec"]["topologySpreadConstraints"][0]["labelSelector"][
                "matchLabels"
            ],
        ):
            labels["sluice.dev/shard"] = str(index)
        expected["metadata"]["name"] = f"sluice-operator-shard-{index}"
        assert shard == expected
        selectors.append(shard["spec"]["selector"]["matchLabels"])
    assert sorted(indices) == list(range(len(shards))) and len(shards) >= 2
    assert len({tuple(sorted(s.items())) for s in selectors}) == len(shards), "no two Deployments share pods"
    budgets = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert sorted(b["spec"]["selector"]["matchLabels"]["sluice.dev/shard"] for b in budgets) == [
        str(i) for i in range(len(shards))
    ]
    kustomization = yaml.safe_load((SHARDED / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["../../manifests", "shards.yaml"]
    deleted = [yaml.safe_load(p["patch"]) for p in kustomization["patches"]]
    assert {(d["kind"], d["metadata"]["name"]) for d in deleted} == {
        ("Deployment", "sluice-operator"),
        ("PodDisruptionBudget", "sluice-operator"),
    }
