"""Server-side printing in the sandbox: Tables as `kubectl get` asks for them."""

import datetime
import pathlib
from typing import Any

import pytest
import yaml

from sluice_sandbox.builtin_resources import BUILTIN_RESOURCES
from sluice_sandbox.crds import resources_from_crd
from sluice_sandbox.resources import ResourceSpec
from sluice_sandbox.tables import (
    accepted_table_version,
    age,
    evaluate_json_path,
    human_duration,
    parse_json_path,
    to_table,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
KUBECTL_GET = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


def builtin(kind: str) -> ResourceSpec:
    return next(spec for spec in BUILTIN_RESOURCES if spec.kind == kind)


def rollouts() -> ResourceSpec:
    [spec] = resources_from_crd(yaml.safe_load((REPO / "crds" / "rollout.yaml").read_text()))
    return spec


def cells(spec: ResourceSpec, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    table = to_table(spec, [obj], resource_version="7", **kwargs)
    names = [column["name"] for column in table["columnDefinitions"]]
    [row] = table["rows"]
    return dict(zip(names, row["cells"], strict=True))


def meta(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "shop", "creationTimestamp": None, **fields}


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (KUBECTL_GET, "v1"),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", "v1beta1"),
        ("application/json; as=Table; g=meta.k8s.io; v=v1", "v1"),
        ("application/json", None),
        ("application/json;as=Table;v=v2;g=meta.k8s.io", None),
        ("application/vnd.kubernetes.protobuf,application/json", None),
        (None, None),
    ],
)
def test_accepted_table_version(accept: str | None, version: str | None) -> None:
    assert accepted_table_version(accept) == version


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (150, "2m30s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (730 * 86400, "2y"),
        (731 * 86400, "2y1d"),
        (8 * 365 * 86400, "8y"),
    ],
)
def test_human_duration(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_age() -> None:
    now = datetime.datetime(2026, 1, 1, 0, 10, tzinfo=datetime.UTC)
    assert age("2026-01-01T00:00:00Z", now) == "10m"
    assert age(None) == "<unknown>" and age("yesterday") == "<invalid>"


@pytest.mark.parametrize(
    ("path", "obj", "values"),
    [
        (".status.phase", {"status": {"phase": "Healthy"}}, ["Healthy"]),
        ("{.status.phase}", {"status": {"phase": "Healthy"}}, ["Healthy"]),
        (".status.phase", {"status": {}}, []),
        (".spec.containers[0].image", {"spec": {"containers": [{"image": "a"}, {"image": "b"}]}}, ["a"]),
        (".spec.containers[*].image", {"spec": {"containers": [{"image": "a"}, {"image": "b"}]}}, ["a", "b"]),
        (".spec.containers[5].image", {"spec": {"containers": []}}, []),
        (
            '.status.conditions[?(@.type=="Ready")].status',
            {
                "status": {
                    "conditions": [
                        {"type": "Stalled", "status": "False"},
                        {"type": "Ready", "status": "True"},
                    ]
                }
            },
            ["True"],
        ),
    ],
)
def test_json_path(path: str, obj: dict[str, Any], values: list[Any]) -> None:
    assert list(evaluate_json_path(parse_json_path(path), obj)) == values


def test_unsupported_json_path() -> None:
    with pytest.raises(ValueError, match="unsupported JSONPath"):
        parse_json_path(".items..name")


def test_a_crd_gets_its_printer_columns() -> None:
    rollout = {
        "metadata": meta("web"),
        "spec": {"replicas": 4},
        "status": {
            "phase": "Progressing",
            "strategy": "Canary",
            "canaryWeight": 20,
            "currentStepIndex": 1,
            "stableRevision": "abc",
            "replicas": {"total": 5},
        },
    }
    assert cells(rollouts(), rollout) == {
        "Name": "web",
        "Phase": "Progressing",
        "Strategy": "Canary",
        "Weight": 20,
        "Step": 1,
        "Stable": "abc",
        "Canary": None,
        "Desired": 4,
        "Current": 5,
        "Age": None,
    }


@pytest.mark.parametrize(
    ("kind", "value", "cell"),
    [
        ("integer", 20, 20),
        ("integer", 2.0, 2),
        ("integer", "20", None),
        ("number", 1, 1.0),
        ("boolean", True, True),
        ("boolean", "yes", None),
        ("string", "x", "x"),
        ("string", 5, "5"),
        ("string", {"a": 1}, '{"a": 1}'),
        ("date", "garbage", "<invalid>"),
    ],
)
def test_printer_column_types(kind: str, value: Any, cell: Any) -> None:
    spec = ResourceSpec(
        "example.com",
        "v1",
        "things",
        "Thing",
        builtin=False,
        printer_columns=({"name": "Value", "type": kind, "jsonPath": ".spec.value"},),
    )
    assert cells(spec, {"metadata": meta("t"), "spec": {"value": value}})["Value"] == cell


def test_a_crd_without_columns_shows_name_and_age() -> None:
    spec = ResourceSpec("example.com", "v1", "things", "Thing", builtin=False)
    assert list(cells(spec, {"metadata": meta("t")})) == ["Name", "Age"]


def test_deployment_columns() -> None:
    deployment = {
        "metadata": meta("web"),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "spec": {
                    "containers": [{"name": "app", "image": "nginx:1"}, {"name": "proxy", "image": "envoy"}]
                }
            },
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert cells(builtin("Deployment"), deployment) == {
        "Name": "web",
        "Ready": "2/3",
        "Up-to-date": 3,
        "Available": 2,
        "Age": "<unknown>",
        "Containers": "app,proxy",
        "Images": "nginx:1,envoy",
        "Selector": "app=web",
    }
    wide = [
        column["name"]
        for column in to_table(builtin("Deployment"), [], resource_version="1")["columnDefinitions"]
        if column["priority"] > 0
    ]
    assert wide == ["Containers", "Images", "Selector"]  # shown only by `kubectl get -o wide`


@pytest.mark.parametrize(
    ("kind", "obj", "expected"),
    [
        (
            "Service",
            {
                "spec": {
                    "type": "NodePort",
                    "clusterIP": "10.0.0.1",
                    "selector": {"app": "web"},
                    "ports": [{"port": 80, "nodePort": 30001}, {"port": 53, "protocol": "UDP"}],
                }
            },
            {
                "Type": "NodePort",
                "Cluster-IP": "10.0.0.1",
                "External-IP": "<none>",
                "Port(s)": "80:30001/TCP,53/UDP",
                "Selector": "app=web",
            },
        ),
        ("Service", {"spec": {}}, {"Type": "ClusterIP", "Cluster-IP": "<none>", "Port(s)": "<none>"}),
        (
            "Pod",
            {
                "spec": {"containers": [{}, {}]},
                "status": {
                    "phase": "Running",
                    "containerStatuses": [
                        {"ready": True, "restartCount": 1},
                        {"ready": False, "restartCount": 2},
                    ],
                },
            },
            {"Ready": "1/2", "Status": "Running", "Restarts": "3", "IP": "<none>"},
        ),
        ("Namespace", {"status": {"phase": "Active"}}, {"Status": "Active"}),
        ("ConfigMap", {"data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}, {"Data": 3}),
        ("Secret", {"type": "Opaque", "data": {"a": ""}}, {"Type": "Opaque", "Data": 1}),
        (
            "ReplicaSet",
            {"spec": {"replicas": 2}, "status": {"replicas": 2, "readyReplicas": 1}},
            {"Desired": 2, "Current": 2, "Ready": 1},
        ),
        (
            "Event",
            {
                "type": "Warning",
                "reason": "InvalidSpec",
                "message": "bad",
                "involvedObject": {"kind": "Rollout", "name": "web"},
            },
            {"Type": "Warning", "Reason": "InvalidSpec", "Object": "rollout/web", "Message": "bad"},
        ),
        ("Lease", {}, {"Name": "x", "Age": "<unknown>"}),
    ],
)
def test_builtin_columns(kind: str, obj: dict[str, Any], expected: dict[str, Any]) -> None:
    shown = cells(builtin(kind), {"metadata": meta("x"), **obj})
    assert {name: shown[name] for name in expected} == expected


def test_terminating_pods() -> None:
    pod = {"metadata": meta("p", deletionTimestamp="2026-01-01T00:00:00Z"), "status": {"phase": "Running"}}
    assert cells(builtin("Pod"), pod)["Status"] == "Terminating"


@pytest.mark.parametrize(
    ("include_object", "expected"),
    [
        (
            "Metadata",
            {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "x", "labels": {"a": "b"}},
            },
        ),
        ("Object", {"metadata": {"name": "x", "labels": {"a": "b"}}, "data": {}}),
        ("None", None),
    ],
)
def test_rows_carry_the_object_kubectl_asks_for(include_object: str, expected: dict[str, Any] | None) -> None:
    obj = {"metadata": {"name": "x", "labels": {"a": "b"}}, "data": {}}
    table = to_table(
        builtin("ConfigMap"), [obj], resource_version="7", version="v1beta1", include_object=include_object
    )
    assert (table["kind"], table["apiVersion"], table["metadata"]) == (
        "Table",
        "meta.k8s.io/v1beta1",
        {"resourceVersion": "7"},
    )
    assert table["rows"][0].get("object") == expected
