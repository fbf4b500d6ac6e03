"""
How writes change objects in the sandbox: the PATCH flavours, the generation rules,
and the Deployment status that the workload simulator writes.
"""

import copy
from typing import Any

import pytest

from sluice_sandbox.patching import (
    PatchError,
    PatchType,
    UnsupportedPatchError,
    apply_patch,
    json_patch,
    merge_patch,
    parse_patch_type,
    strategic_merge_patch,
)
from sluice_sandbox.store import bumps_generation, version_priority
from sluice_sandbox.workloads import READY_ANNOTATION, deployment_status, needs_status

# ----- RFC 7386 merge patch (the examples from the RFC's appendix A, plus nesting) -----


@pytest.mark.parametrize(
    "target, patch, expected",
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        (
            {"metadata": {"labels": {"a": "1", "b": "2"}}},
            {"metadata": {"labels": {"a": None}}},
            {"metadata": {"labels": {"b": "2"}}},
        ),
    ],
)
def test_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    original = copy.deepcopy(target)
    assert merge_patch(target, patch) == expected
    assert target == original  # never mutated


# ----- The strategic merge patch approximation -----

CONTAINERS: dict[str, Any] = {
    "spec": {
        "containers": [
            {
                "name": "app",
                "image": "app:1",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            },
            {"name": "sidecar", "image": "sidecar:1"},
        ]
    }
}


@pytest.mark.parametrize(
    "target, patch, expected",
    [
        pytest.param(
            CONTAINERS,
            {"spec": {"containers": [{"name": "app", "image": "app:2"}]}},
            {
                "spec": {
                    "containers": [
                        {**CONTAINERS["spec"]["containers"][0], "image": "app:2"},
                        CONTAINERS["spec"]["containers"][1],
                    ]
                }
            },
            id="containers-merge-by-name",
        ),
        pytest.param(
            CONTAINERS,
            {"spec": {"containers": [{"name": "new", "image": "new:1"}]}},
            {"spec": {"containers": [*CONTAINERS["spec"]["containers"], {"name": "new", "image": "new:1"}]}},
            id="containers-append-new",
        ),
        pytest.param(
            CONTAINERS,
            {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}},
            {"spec": {"containers": [CONTAINERS["spec"]["containers"][0]]}},
            id="containers-patch-delete",
        ),
        pytest.param(
            CONTAINERS,
            {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}},
            {"spec": {"containers": [{"name": "only", "image": "x"}]}},
            id="containers-patch-replace",
        ),
        pytest.param(
            {"env": [{"name": "A", "value": "1"}]},
            {"env": [{"name": "A", "value": None, "valueFrom": {"x": 1}}]},
            {"env": [{"name": "A", "valueFrom": {"x": 1}}]},
            id="env-null-deletes-a-field-of-an-item",
        ),
        pytest.param(
            {"ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"ports": [{"containerPort": 80, "name": "http"}]},
            {"ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]},
            id="container-ports-by-containerPort",
        ),
        pytest.param(
            {"ports": [{"port": 80, "targetPort": 8080}]},
            {"ports": [{"port": 80, "targetPort": 9090}]},
            {"ports": [{"port": 80, "targetPort": 9090}]},
            id="service-ports-by-port",
        ),
        pytest.param(
            {"volumeMounts": [{"name": "a", "mountPath": "/a"}]},
            {"volumeMounts": [{"name": "a", "mountPath": "/b"}]},
            {"volumeMounts": [{"name": "a", "mountPath": "/a"}, {"name": "a", "mountPath": "/b"}]},
            id="volume-mounts-by-mountPath",
        ),
        pytest.param(
            {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Synced", "status": "True"}]},
            {"conditions": [{"type": "Ready", "status": "True"}]},
            {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "True"}]},
            id="conditions-by-type",
        ),
        pytest.param(
            {"args": ["a", "b"]}, {"args": ["c"]}, {"args": ["c"]}, id="primitive-lists-are-replaced"
        ),
        pytest.param(
            {"tolerations": [{"key": "a"}]},
            {"tolerations": [{"key": "b"}]},
            {"tolerations": [{"key": "b"}]},
            id="lists-without-merge-keys-are-replaced",
        ),
        pytest.param(
            {"metadata": {"finalizers": ["a", "b", "c"]}},
            {"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}},
            {"metadata": {"finalizers": ["a", "c"]}},
            id="delete-from-primitive-list",
        ),
        pytest.param(
            {"spec": {"selector": {"a": "1"}, "x": 1}},
            {"spec": {"selector": {"$patch": "replace", "b": "2"}}},
            {"spec": {"selector": {"b": "2"}, "x": 1}},
            id="map-patch-replace",
        ),
        pytest.param(
            {"spec": {"a": 1}},
            {"$setElementOrder/containers": [{"name": "x"}], "spec": {"a": None}},
            {"spec": {}},
            id="client-side-apply-directives-are-ignored",
        ),
    ],
)
def test_strategic_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    original = copy.deepcopy(target)
    assert strategic_merge_patch(target, patch) == expected
    assert target == original


# ----- RFC 6902 JSON patch -----

RV5 = {"resourceVersion": "5"}


@pytest.mark.parametrize(
    "ops, expected",
    [
        (
            [{"op": "add", "path": "/metadata/finalizers", "value": ["x"]}],
            {"metadata": {**RV5, "finalizers": ["x"]}, "spec": {"a": [1, 2]}},
        ),
        ([{"op": "replace", "path": "/spec/a/0", "value": 9}], {"metadata": RV5, "spec": {"a": [9, 2]}}),
        ([{"op": "remove", "path": "/spec/a/1"}], {"metadata": RV5, "spec": {"a": [1]}}),
        (
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": "5"},
                {"op": "add", "path": "/spec/b", "value": 1},
            ],
            {"metadata": RV5, "spec": {"a": [1, 2], "b": 1}},
        ),
        ([{"op": "move", "from": "/spec/a", "path": "/spec/b"}], {"metadata": RV5, "spec": {"b": [1, 2]}}),
    ],
)
def test_json_patch(ops: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    target = {"metadata": RV5, "spec": {"a": [1, 2]}}
    assert json_patch(target, ops) == expected
    assert target == {"metadata": RV5, "spec": {"a": [1, 2]}}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/metadata/resourceVersion", "value": "4"}],  # how kopf detects conflicts
        [{"op": "remove", "path": "/spec/missing"}],
        [{"op": "replace", "path": "/spec/a/7", "value": 1}],
        [{"op": "unknown", "path": "/spec"}],
        [{"path": "/spec"}],
        {"op": "add", "path": "/x", "value": 1},
    ],
)
def test_json_patch_errors(ops: Any) -> None:
    with pytest.raises(PatchError):
        json_patch({"metadata": {"resourceVersion": "5"}, "spec": {"a": [1, 2]}}, ops)


# ----- Patch types -----


@pytest.mark.parametrize(
    "content_type, patch_type",
    [
        ("application/merge-patch+json", PatchType.MERGE),
        ("application/merge-patch+json; charset=utf-8", PatchType.MERGE),
        ("application/json-patch+json", PatchType.JSON),
        ("application/strategic-merge-patch+json", PatchType.STRATEGIC),
        ("application/apply-patch+yaml", PatchType.APPLY),
    ],
)
def test_patch_types(content_type: str, patch_type: PatchType) -> None:
    assert parse_patch_type(content_type) is patch_type


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "", None])
def test_unknown_patch_types(content_type: str | None) -> None:
    with pytest.raises(UnsupportedPatchError):
        parse_patch_type(content_type)


def test_server_side_apply_is_no_function_of_the_object_alone() -> None:
    # What an apply removes depends on the object's managedFields: fieldmanager.apply() does it.
    with pytest.raises(UnsupportedPatchError, match="managedFields"):
        apply_patch(PatchType.APPLY, {}, {"spec": {}})


def test_patches_must_keep_an_object() -> None:
    with pytest.raises(PatchError):
        apply_patch(PatchType.MERGE, {"a": 1}, ["not", "an", "object"])


# ----- Generation rules -----

BASE: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"a": "1"}, "generation": 1},
    "spec": {"replicas": 1},
    "status": {"replicas": 1},
}


@pytest.mark.parametrize(
    "change, bumps",
    [
        ({"spec": {"replicas": 2}}, True),
        ({"spec": {"replicas": 1, "paused": True}}, True),
        ({"data": {"key": "value"}}, True),  # ConfigMaps, Secrets: no spec, but desired state all the same
        ({"metadata": {**BASE["metadata"], "labels": {"a": "2"}}}, False),
        ({"metadata": {**BASE["metadata"], "annotations": {"note": "x"}}}, False),
        ({"metadata": {**BASE["metadata"], "finalizers": ["x"]}}, False),
        ({"status": {"replicas": 5}}, False),
        ({"apiVersion": "apps/v1beta1"}, False),
        ({}, False),
    ],
)
def test_generation_rules(change: dict[str, Any], bumps: bool) -> None:
    assert bumps_generation(BASE, {**BASE, **change}) is bumps


@pytest.mark.parametrize(
    "versions, ordered",
    [
        (["v1beta1", "v1", "v1alpha1"], ["v1", "v1beta1", "v1alpha1"]),
        (["v1", "v2", "v2beta2", "v2beta1"], ["v2", "v1", "v2beta2", "v2beta1"]),
        (["foo", "v1alpha2", "v1alpha10"], ["v1alpha10", "v1alpha2", "foo"]),
    ],
)
def test_version_priority(versions: list[str], ordered: list[str]) -> None:
    assert sorted(versions, key=version_priority) == ordered


# ----- The Deployment status written by the workload simulator -----


def deployment(
    replicas: int | None,
    *,
    generation: int = 1,
    ready: str | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    annotations = {} if ready is None else {READY_ANNOTATION: ready}
    spec: dict[str, Any] = {"template": {"metadata": {"annotations": annotations}, "spec": {}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "metadata": {"name": "web", "namespace": "default", "generation": generation},
        "spec": spec,
        **({"status": status} if status is not None else {}),
    }


@pytest.mark.parametrize(
    "obj, replicas, updated, ready, available, unavailable",
    [
        (deployment(3), 3, 3, 3, 3, None),
        (deployment(0), 0, 0, 0, 0, None),
        (deployment(None), 1, 1, 1, 1, None),  # the API server's default of 1 replica
        (deployment(2, ready="true"), 2, 2, 2, 2, None),
        (deployment(2, ready="false"), 2, 2, 0, 0, 2),
    ],
)
def test_deployment_status_counts(
    obj: dict[str, Any], replicas: int, updated: int, ready: int, available: int, unavailable: int | None
) -> None:
    status = deployment_status(obj, timestamp="2030-01-01T00:00:00Z")
    assert status["replicas"] == replicas
    assert status["updatedReplicas"] == updated
    assert status["readyReplicas"] == ready
    assert status["availableReplicas"] == available
    assert status.get("unavailableReplicas") == unavailable


@pytest.mark.parametrize(
    "ready, available, progressing",
    [
        (None, ("True", "MinimumReplicasAvailable"), ("True", "NewReplicaSetAvailable")),
        ("false", ("False", "MinimumReplicasUnavailable"), ("True", "ReplicaSetUpdated")),
    ],
)
def test_deployment_status_conditions(
    ready: str | None, available: tuple[str, str], progressing: tuple[str, str]
) -> None:
    status = deployment_status(deployment(2, generation=7, ready=ready), timestamp="2030-01-01T00:00:00Z")
    assert status["observedGeneration"] == 7
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions == {"Available": available, "Progressing": progressing}
    assert 'ReplicaSet "web-' in status["conditions"][1]["message"]


def test_deployment_status_keeps_transition_times_of_unchanged_conditions() -> None:
    earlier = deployment_status(deployment(2), timestamp="2030-01-01T00:00:00Z")
    later = deployment_status(deployment(3, generation=2, status=earlier), timestamp="2030-01-02T00:00:00Z")
    assert [c["lastTransitionTime"] for c in later["conditions"]] == ["2030-01-01T00:00:00Z"] * 2
    assert [c["lastUpdateTime"] for c in later["conditions"]] == ["2030-01-02T00:00:00Z"] * 2

    stuck_deployment = deployment(3, generation=3, ready="false", status=later)
    stuck = deployment_status(stuck_deployment, timestamp="2030-01-03T00:00:00Z")
    available = next(c for c in stuck["conditions"] if c["type"] == "Available")
    assert available["lastTransitionTime"] == "2030-01-03T00:00:00Z"


@pytest.mark.parametrize(
    "obj, needed",
    [
        (deployment(1), True),
        (deployment(1, generation=2, status={"observedGeneration": 1}), True),
        (deployment(1, generation=2, status={"observedGeneration": 2}), False),
    ],
)
def test_needs_status(obj: dict[str, Any], needed: bool) -> None:
    assert needs_status(obj) is needed
