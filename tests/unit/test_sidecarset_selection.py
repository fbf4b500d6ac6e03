"""SidecarSet matching and the API model's own checks."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from operators.api.base import LabelSelector
from operators.api.sidecarset import SidecarSetSpec, scaled
from operators.sidecarset.selection import (
    managed_by_sluice,
    matches,
    selector_matches,
    selector_query,
)
from tests.unit.sidecar_world import sidecarset_spec

WEB = {"tier": "web", "app": "shop"}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        pytest.param(None, WEB, True, id="absent-matches-all"),
        pytest.param({}, WEB, True, id="empty-matches-all"),
        pytest.param({"matchLabels": {"tier": "web"}}, WEB, True, id="labels"),
        pytest.param({"matchLabels": {"tier": "db"}}, WEB, False, id="labels-differ"),
        pytest.param(
            {"matchExpressions": [{"key": "app", "operator": "In", "values": ["shop"]}]}, WEB, True, id="in"
        ),
        pytest.param(
            {"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["shop"]}]},
            WEB,
            False,
            id="notin",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["y"]}]},
            WEB,
            True,
            id="notin-absent-key",
        ),
        pytest.param({"matchExpressions": [{"key": "app", "operator": "Exists"}]}, WEB, True, id="exists"),
        pytest.param(
            {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
            WEB,
            False,
            id="does-not-exist",
        ),
        pytest.param(
            {
                "matchLabels": {"tier": "web"},
                "matchExpressions": [{"key": "app", "operator": "DoesNotExist"}],
            },
            WEB,
            False,
            id="all-terms-must-hold",
        ),
    ],
)
def test_selector_matches(selector: dict[str, Any] | None, labels: dict[str, str], expected: bool) -> None:
    parsed = None if selector is None else LabelSelector.model_validate(selector)
    assert selector_matches(parsed, labels) is expected


@pytest.mark.parametrize(
    ("namespace_selector", "namespace", "namespace_labels", "expected"),
    [
        pytest.param(None, "shop", {}, True, id="default-any-namespace"),
        pytest.param(None, "kube-system", {}, False, id="default-excludes-kube-system"),
        pytest.param(None, "kube-public", {}, False, id="default-excludes-kube-public"),
        pytest.param({"matchLabels": {"env": "prod"}}, "shop", {"env": "prod"}, True, id="selected"),
        pytest.param({"matchLabels": {"env": "prod"}}, "shop", {"env": "dev"}, False, id="not-selected"),
    ],
)
def test_namespace_selection(
    namespace_selector: dict[str, Any] | None,
    namespace: str,
    namespace_labels: dict[str, str],
    expected: bool,
) -> None:
    spec = sidecarset_spec(namespaceSelector=namespace_selector)
    assert matches(spec, WEB, namespace, namespace_labels) is expected


def test_selector_query_says_the_same_as_the_selector() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"tier": "web"},
            "matchExpressions": [
                {"key": "app", "operator": "In", "values": ["shop", "cart"]},
                {"key": "canary", "operator": "NotIn", "values": ["yes"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector_query(selector) == "tier=web,app in (shop,cart),canary notin (yes),team,!legacy"
    assert selector_query(LabelSelector()) == ""


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"sluice.dev/rollout": "web"}, True),
        ({"app.kubernetes.io/managed-by": "sluice"}, True),
        ({"app.kubernetes.io/managed-by": "helm"}, False),
        ({}, False),
    ],
)
def test_managed_by_sluice(labels: dict[str, str], expected: bool) -> None:
    assert managed_by_sluice(labels) is expected


@pytest.mark.parametrize(
    ("value", "total", "round_up", "expected"),
    [
        (3, 10, False, 3),
        ("25%", 10, True, 3),
        ("25%", 10, False, 2),
        ("0%", 5, True, 0),
        ("100%", 4, False, 4),
    ],
)
def test_scaled(value: int | str, total: int, round_up: bool, expected: int) -> None:
    assert scaled(value, total, round_up=round_up) == expected


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"containers": []}, "at least one container", id="nothing-to-inject"),
        pytest.param(
            {"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]},
            "container names must be unique: a",
            id="duplicate-container",
        ),
        pytest.param(
            {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]},
            "volume names must be unique: v",
            id="duplicate-volume",
        ),
        pytest.param({"updateStrategy": {"maxUnavailable": "half"}}, "percentage", id="bad-percent"),
        pytest.param({"updateStrategy": {"partition": -1}}, "cannot be negative", id="negative-partition"),
        pytest.param({"updateStrategy": {"type": "OnDelete"}}, "RollingUpdate", id="unknown-type"),
        pytest.param(
            {"containers": [{"name": "a", "image": "x", "podInjectPolicy": "Anywhere"}]},
            "BeforeAppContainer",
            id="unknown-policy",
        ),
    ],
)
def test_spec_refuses(overrides: dict[str, Any], message: str) -> None:
    body = {"selector": {}, "containers": [{"name": "log-agent", "image": "fluent-bit:3.1"}], **overrides}
    with pytest.raises(ValidationError, match=message):
        SidecarSetSpec.model_validate(body)


def test_containers_keep_every_field() -> None:
    spec = sidecarset_spec(
        containers=[{"name": "a", "image": "x", "env": [{"name": "K", "value": "v"}], "volumeMounts": []}]
    )
    assert spec.to_api()["containers"][0] == {
        "name": "a",
        "image": "x",
        "env": [{"name": "K", "value": "v"}],
        "volumeMounts": [],
        "podInjectPolicy": "BeforeAppContainer",
    }
