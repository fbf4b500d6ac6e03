"""`covers` (is the live object already what we render?) and `apply_body` (the body of an apply)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from operators.foundation.diff import apply_body, covers, same_spec

# ---- covers -------------------------------------------------------------------------------------

CONTAINER = {"name": "web", "image": "web:1"}
DEFAULTED_CONTAINER = {**CONTAINER, "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/x"}


@pytest.mark.parametrize(
    ("live", "desired", "expected"),
    [
        # dicts: live may hold more (defaults), never less or different
        ({"a": 1}, {"a": 1}, True),
        ({"a": 1, "b": 2}, {"a": 1}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": 1}, {"a": 2}, False),
        ({}, {}, True),
        ({"a": 1}, {}, True),
        ("not a dict", {"a": 1}, False),
        (None, {"a": 1}, False),
        ([{"a": 1}], {"a": 1}, False),
        # nested
        ({"spec": {"replicas": 3, "paused": False}}, {"spec": {"replicas": 3}}, True),
        ({"spec": {"replicas": 3}}, {"spec": {"replicas": 4}}, False),
        ({"spec": {}}, {"spec": {"template": {}}}, False),
        ({"a": {"b": {"c": "x", "d": "y"}}}, {"a": {"b": {"c": "x"}}}, True),
        ({"a": {"b": {"c": "x"}}}, {"a": {"b": {"c": "z"}}}, False),
        # lists: same length, item by item
        ([1, 2], [1, 2], True),
        ([2, 1], [1, 2], False),
        ([1, 2, 3], [1, 2], False),
        ([1], [1, 2], False),
        ([], [], True),
        ([1], [], False),
        ({"a": "x"}, {"a": []}, False),
        ({"a": []}, {"a": []}, True),
        # defaulted extra keys inside list items are not a difference...
        ([DEFAULTED_CONTAINER], [CONTAINER], True),
        ({"containers": [DEFAULTED_CONTAINER]}, {"containers": [CONTAINER]}, True),
        # ...but a removed or added item, or a changed field in one, is
        ([DEFAULTED_CONTAINER, {"name": "sidecar"}], [CONTAINER], False),
        ([DEFAULTED_CONTAINER], [CONTAINER, {"name": "sidecar"}], False),
        ([{**DEFAULTED_CONTAINER, "image": "web:2"}], [CONTAINER], False),
        ([{"name": "web"}], [CONTAINER], False),
        # bool is not int (in Python it is; in JSON it is not)
        (True, True, True),
        (False, False, True),
        (True, False, False),
        (1, True, False),
        (True, 1, False),
        (0, False, False),
        (False, 0, False),
        ({"weight": 1}, {"weight": True}, False),
        # int and float are the same number when equal (JSON has one number type)
        (1, 1.0, True),
        (1.0, 1, True),
        (0, 0.0, True),
        (1, 1.5, False),
        (2.5, 2.5, True),
        # numbers are not strings: the API server keeps int-or-string as written
        (80, "80", False),
        ("80", 80, False),
        ("http", "http", True),
        ("http", "https", False),
        # None: covered by None, and by a missing key (the API server drops nulls on write)
        (None, None, True),
        ("x", None, False),
        (None, "x", False),
        (0, None, False),
        ({"a": None}, {"a": None}, True),
        ({}, {"a": None}, True),
        ({"a": 0}, {"a": None}, False),
        # resource quantities compare by value under requests/limits, nowhere else
        ({"limits": {"cpu": "1"}}, {"limits": {"cpu": "1000m"}}, True),
        ({"requests": {"memory": "1Gi"}}, {"requests": {"memory": "1024Mi"}}, True),
        ({"requests": {"cpu": "500m"}}, {"requests": {"cpu": "0.5"}}, True),
        ({"requests": {"cpu": "2"}}, {"requests": {"cpu": 2}}, True),
        ({"requests": {"cpu": "1"}}, {"requests": {"cpu": "1100m"}}, False),
        ({"requests": {"memory": "1G"}}, {"requests": {"memory": "1Gi"}}, False),
        ({"env": "1"}, {"env": "1000m"}, False),
    ],
)
def test_covers(live: Any, desired: Any, expected: bool) -> None:
    assert covers(live, desired) is expected


def test_covers_a_deployment_the_api_server_defaulted() -> None:
    desired: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"sluice.dev/track": "stable"}},
        "spec": {
            "replicas": 4,
            "template": {"spec": {"containers": [CONTAINER]}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
        },
    }
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="u-1", resourceVersion="7", generation=2)
    live["metadata"]["labels"]["added-by-someone"] = "x"
    live["spec"]["progressDeadlineSeconds"] = 600
    live["spec"]["template"]["spec"]["containers"] = [DEFAULTED_CONTAINER]
    live["status"] = {"readyReplicas": 4}
    assert covers(live, desired)

    scaled = copy.deepcopy(live)
    scaled["spec"]["replicas"] = 2  # e.g. someone ran kubectl scale
    assert not covers(scaled, desired)


# ---- apply_body ----------------------------------------------------------------------------------


def live_object(kind: str = "Deployment", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1" if kind == "Service" else "apps/v1",
        "kind": kind,
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "u-1",
            "resourceVersion": "41",
            "labels": {"app.kubernetes.io/managed-by": "sluice", "team": "payments", "tier": "old"},
            "annotations": {
                "deployment.kubernetes.io/revision": "3",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "sluice.dev/revision": "aaa",
            },
        },
        "spec": spec,
        "status": {"observedGeneration": 3},
    }


def desired_object(kind: str = "Deployment", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1" if kind == "Service" else "apps/v1",
        "kind": kind,
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "labels": {"app.kubernetes.io/managed-by": "sluice", "tier": "web"},
            "annotations": {"sluice.dev/revision": "bbb"},
        },
        "spec": spec,
    }


def test_apply_body_carries_the_resource_version_over_as_a_precondition() -> None:
    body = apply_body(desired_object(replicas=2), live_object(replicas=4))
    assert body["metadata"]["resourceVersion"] == "41"
    assert body["spec"] == {"replicas": 2}
    assert (body["apiVersion"], body["kind"], body["metadata"]["name"]) == ("apps/v1", "Deployment", "web")


def test_apply_body_of_a_new_object_has_no_resource_version() -> None:
    assert "resourceVersion" not in apply_body(desired_object(replicas=2), None)["metadata"]


def test_apply_body_sends_only_our_fields() -> None:
    # Others' labels, annotations, finalizers and the Service's clusterIP stay theirs: an apply
    # leaves what it does not name alone, so nothing of theirs is copied back (and then owned by us).
    live = live_object("Service", clusterIP="10.96.0.12", ports=[{"port": 80}])
    live["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    body = apply_body(desired_object("Service", ports=[{"port": 8080}]), live)
    assert body["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "sluice", "tier": "web"}
    assert body["metadata"]["annotations"] == {"sluice.dev/revision": "bbb"}
    assert "finalizers" not in body["metadata"]
    assert body["spec"] == {"ports": [{"port": 8080}]}
    assert "status" not in body and "uid" not in body["metadata"]


def test_apply_body_leaves_nulls_out_at_every_depth() -> None:
    # In an apply, absence is how a field we owned goes away; a null would be a value to set.
    desired = desired_object(
        replicas=None, template={"spec": {"containers": [{"name": "app", "command": None}]}}
    )
    body = apply_body(desired, None)
    assert body["spec"] == {"template": {"spec": {"containers": [{"name": "app"}]}}}


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_apply_body_does_not_mutate_its_arguments(kind: str) -> None:
    live = live_object(kind, clusterIP="10.96.0.12", ports=[{"port": 80}])
    desired = desired_object(kind, ports=[{"port": 8080}])
    live_before, desired_before = copy.deepcopy(live), copy.deepcopy(desired)
    body = apply_body(desired, live)
    assert live == live_before
    assert desired == desired_before
    assert body["metadata"] is not desired["metadata"]


@pytest.mark.parametrize(
    ("live_spec", "desired_spec", "expected"),
    [
        ({"replicas": 2, "traffic": {"a": 1}}, {"replicas": 2, "traffic": {"a": 1}}, True),
        ({"replicas": 2.0}, {"replicas": 2}, True),
        # A field we no longer render (a component's route removed) must go: covers() alone says yes.
        ({"replicas": 2, "traffic": {"a": 1}}, {"replicas": 2}, False),
        ({"replicas": 2}, {"replicas": 3}, False),
    ],
)
def test_same_spec_sees_removed_fields(live_spec: Any, desired_spec: Any, expected: bool) -> None:
    desired = {**desired_object(), "spec": desired_spec}
    live = copy.deepcopy({**desired, "spec": live_spec})
    live["metadata"].update(uid="u-1", resourceVersion="7")
    live["status"] = {"observedGeneration": 3}
    assert same_spec(live, desired) is expected
