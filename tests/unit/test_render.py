"""Rendering of a Rollout's Deployments and Services, and the ownership helpers."""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any

import pytest

from operators.api.refs import RolloutRef
from operators.api.rollout import RolloutSpec
from operators.rollout.ownership import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REVISION_LABEL,
    ROLLOUT_LABEL,
    TRACK_LABEL,
    conflict_message,
    is_owned_by,
    managed_metadata,
)
from operators.rollout.render import (
    RenderError,
    canary_replicas,
    pod_selector,
    pod_template_revision,
    render_deployment,
    render_service,
)

REF = RolloutRef(name="web", namespace="shop", uid="0b5a-rollout-uid")


def template(labels: dict[str, str] | None = None, image: str = "ghcr.io/acme/web:1.4.2") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "web"} if labels is None else labels},
        "spec": {
            "containers": [
                {"name": "web", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}
            ]
        },
    }


def make_spec(**fields: Any) -> RolloutSpec:
    body: dict[str, Any] = {
        "replicas": 4,
        "template": template(),
        "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
        "service": {"port": 80, "targetPort": "http"},
    }
    body.update(fields)
    return RolloutSpec.model_validate(body)


# --- pod_selector -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, {ROLLOUT_LABEL: "web"}, id="defaults-to-rollout-label"),
        pytest.param(
            {
                "template": template({"app": "web", "tier": "front"}),
                "selector": {"matchLabels": {"app": "web"}},
            },
            {"app": "web", ROLLOUT_LABEL: "web"},
            id="explicit-subset",
        ),
        pytest.param(
            {"template": template({"app": "web", "tier": "front"}), "selector": {"matchLabels": {}}},
            {ROLLOUT_LABEL: "web"},
            id="empty-match-labels-defaults",
        ),
        pytest.param({"selector": {}}, {ROLLOUT_LABEL: "web"}, id="empty-selector-defaults"),
        pytest.param(
            {"template": template({"app": "web", TRACK_LABEL: "stable", ROLLOUT_LABEL: "other"})},
            {ROLLOUT_LABEL: "web"},
            id="template-labels-do-not-matter",
        ),
    ],
)
def test_pod_selector(fields: dict[str, Any], expected: dict[str, str]) -> None:
    assert pod_selector(REF, make_spec(**fields)) == expected


def test_pod_selector_without_selector_or_template_labels_selects_by_rollout() -> None:
    for bare in (template({}), {"spec": {"containers": [{"name": "web"}]}}):
        spec = make_spec(template=bare)
        assert pod_selector(REF, spec) == {ROLLOUT_LABEL: "web"}
        deployment = render_deployment(REF, spec, "canary", bare, "r1", replicas=1)
        assert deployment["spec"]["selector"] == {
            "matchLabels": {ROLLOUT_LABEL: "web", TRACK_LABEL: "canary"}
        }
        assert deployment["spec"]["template"]["metadata"]["labels"] == {
            ROLLOUT_LABEL: "web",
            TRACK_LABEL: "canary",
            REVISION_LABEL: "r1",
        }
        service = render_service(REF, spec, "stable", select_all_tracks=True)
        assert service["spec"]["selector"] == {ROLLOUT_LABEL: "web"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param(
            {"selector": {"matchLabels": {"tier": "front"}}},
            "tier=front not found",
            id="selector-not-in-template",
        ),
        pytest.param(
            {"selector": {"matchLabels": {"app": "api"}}}, "app=api not found", id="selector-value-differs"
        ),
        pytest.param(
            {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}},
            "matchExpressions is not supported yet",
            id="match-expressions",
        ),
        pytest.param(
            {
                "template": template({"app": "web", TRACK_LABEL: "stable"}),
                "selector": {"matchLabels": {TRACK_LABEL: "stable"}},
            },
            "Sluice sets",
            id="reserved-track-label",
        ),
        pytest.param(
            {
                "template": template({"app": "web", REVISION_LABEL: "abc"}),
                "selector": {"matchLabels": {REVISION_LABEL: "abc"}},
            },
            "Sluice sets",
            id="reserved-revision-label",
        ),
        pytest.param(
            {
                "template": template({"app": "web", ROLLOUT_LABEL: "web"}),
                "selector": {"matchLabels": {"app": "web", ROLLOUT_LABEL: "web"}},
            },
            f"cannot use {ROLLOUT_LABEL}",
            id="reserved-rollout-label",
        ),
        pytest.param({"template": template({"app": 1})}, "must map label names to strings", id="non-string"),  # type: ignore[dict-item]
    ],
)
def test_pod_selector_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        pod_selector(REF, make_spec(**fields))


def test_render_error_is_a_value_error() -> None:
    assert issubclass(RenderError, ValueError)


# --- Deployments --------------------------------------------------------------------------------


@pytest.mark.parametrize(("track", "name"), [("stable", "web"), ("canary", "web-canary")])
def test_render_deployment(track: Any, name: str) -> None:
    spec = make_spec()
    pod_template = template()
    before = copy.deepcopy(pod_template)

    deployment = render_deployment(REF, spec, track, pod_template, "abc1234567", replicas=3)

    assert pod_template == before, "the input template must not be mutated"
    assert (deployment["apiVersion"], deployment["kind"]) == ("apps/v1", "Deployment")
    meta = deployment["metadata"]
    assert (meta["name"], meta["namespace"]) == (name, "shop")
    assert meta["labels"] == {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: "web", TRACK_LABEL: track}
    assert meta["annotations"] == {REVISION_LABEL: "abc1234567"}
    assert meta["ownerReferences"] == [REF.owner_reference()]
    assert is_owned_by(deployment, REF)

    body = deployment["spec"]
    assert body["replicas"] == 3
    assert body["selector"] == {"matchLabels": {ROLLOUT_LABEL: "web", TRACK_LABEL: track}}
    assert body["revisionHistoryLimit"] == 2
    assert body["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
    }
    pod_labels = body["template"]["metadata"]["labels"]
    assert pod_labels == {
        "app": "web",
        ROLLOUT_LABEL: "web",
        TRACK_LABEL: track,
        REVISION_LABEL: "abc1234567",
    }
    # The selector must select the pods it creates, or the API server refuses the Deployment.
    assert body["selector"]["matchLabels"].items() <= pod_labels.items()
    assert body["template"]["spec"] == before["spec"]


def test_render_deployment_output_shares_nothing_with_input() -> None:
    pod_template = template()
    deployment = render_deployment(REF, make_spec(), "canary", pod_template, "r1", replicas=1)
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert pod_template["spec"]["containers"][0]["image"] == "ghcr.io/acme/web:1.4.2"


def test_render_deployment_accepts_read_only_mappings() -> None:
    """kopf hands out bodies as Mappings; the result is plain dicts either way."""
    frozen = MappingProxyType(
        {"metadata": MappingProxyType({"labels": {"app": "web"}}), "spec": {"containers": []}}
    )
    deployment = render_deployment(REF, make_spec(), "stable", frozen, "r1", replicas=1)
    assert type(deployment["spec"]["template"]) is dict
    assert type(deployment["spec"]["template"]["metadata"]) is dict


def test_render_deployment_overrides_user_track_labels_on_the_template() -> None:
    stale = template({"app": "web", TRACK_LABEL: "canary", REVISION_LABEL: "old"})
    deployment = render_deployment(REF, make_spec(), "stable", stale, "new", replicas=1)
    assert deployment["spec"]["template"]["metadata"]["labels"][TRACK_LABEL] == "stable"
    assert deployment["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] == "new"


def test_render_deployment_overrides_user_rollout_label_on_the_template() -> None:
    stale = template({"app": "web", ROLLOUT_LABEL: "other"})
    deployment = render_deployment(REF, make_spec(), "canary", stale, "r1", replicas=1)
    assert deployment["spec"]["template"]["metadata"]["labels"][ROLLOUT_LABEL] == "web"


@pytest.mark.parametrize("track", ["stable", "canary"])
def test_deployment_selector_ignores_template_label_changes(track: Any) -> None:
    """Deployment selectors are immutable: a new pod label in a release must not change them."""
    v1 = template({"app": "web", "version": "1"})
    v2 = template({"app": "web", "version": "2"})
    old = render_deployment(REF, make_spec(template=v1), track, v1, pod_template_revision(v1), replicas=2)
    new = render_deployment(REF, make_spec(template=v2), track, v2, pod_template_revision(v2), replicas=2)
    assert old["spec"]["selector"] == new["spec"]["selector"]
    assert old["spec"]["template"]["metadata"]["labels"]["version"] == "1"
    assert new["spec"]["template"]["metadata"]["labels"]["version"] == "2"
    for deployment in (old, new):
        assert deployment["spec"]["selector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )


def test_render_deployment_with_explicit_selector() -> None:
    spec = make_spec(
        template=template({"app": "web", "tier": "front"}), selector={"matchLabels": {"app": "web"}}
    )
    deployment = render_deployment(REF, spec, "stable", spec.template, "r1", replicas=1)
    assert deployment["spec"]["selector"] == {
        "matchLabels": {"app": "web", ROLLOUT_LABEL: "web", TRACK_LABEL: "stable"}
    }


EXPLICIT_APP = {"template": template(), "selector": {"matchLabels": {"app": "web"}}}


@pytest.mark.parametrize(
    ("fields", "pod_template", "replicas", "message"),
    [
        pytest.param(
            EXPLICIT_APP,
            template({"other": "x"}),
            1,
            "lacks the selector label",
            id="template-misses-selector",
        ),
        pytest.param(
            EXPLICIT_APP,
            {"spec": {"containers": []}},
            1,
            "lacks the selector label",
            id="template-without-metadata",
        ),
        pytest.param({}, template(), -1, "cannot be negative", id="negative-replicas"),
    ],
)
def test_render_deployment_errors(
    fields: dict[str, Any], pod_template: dict[str, Any], replicas: int, message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        render_deployment(REF, make_spec(**fields), "stable", pod_template, "r1", replicas=replicas)


def test_render_deployment_without_explicit_selector_accepts_any_template_labels() -> None:
    deployment = render_deployment(REF, make_spec(), "stable", template({"other": "x"}), "r1", replicas=1)
    assert deployment["spec"]["selector"] == {"matchLabels": {ROLLOUT_LABEL: "web", TRACK_LABEL: "stable"}}


# --- Services -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("track", "select_all", "name", "selector"),
    [
        ("stable", False, "web", {ROLLOUT_LABEL: "web", TRACK_LABEL: "stable"}),
        ("canary", False, "web-canary", {ROLLOUT_LABEL: "web", TRACK_LABEL: "canary"}),
        pytest.param("stable", True, "web", {ROLLOUT_LABEL: "web"}, id="stable-selects-all-tracks"),
        pytest.param(
            "canary",
            True,
            "web-canary",
            {ROLLOUT_LABEL: "web", TRACK_LABEL: "canary"},
            id="canary-stays-canary-only",
        ),
    ],
)
def test_render_service(track: Any, select_all: bool, name: str, selector: dict[str, str]) -> None:
    spec = make_spec(service={"port": 8080, "targetPort": "http"})
    service = render_service(REF, spec, track, select_all_tracks=select_all)

    assert (service["apiVersion"], service["kind"]) == ("v1", "Service")
    meta = service["metadata"]
    assert (meta["name"], meta["namespace"]) == (name, "shop")
    assert meta["labels"] == {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: "web", TRACK_LABEL: track}
    assert meta["ownerReferences"] == [REF.owner_reference()]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 8080, "targetPort": "http"}
    ]


def test_render_service_with_explicit_selector() -> None:
    spec = make_spec(selector={"matchLabels": {"app": "web"}})
    assert render_service(REF, spec, "canary")["spec"]["selector"] == {
        "app": "web",
        ROLLOUT_LABEL: "web",
        TRACK_LABEL: "canary",
    }


def test_render_service_numeric_target_port_and_defaults() -> None:
    assert render_service(REF, make_spec(), "stable")["spec"]["ports"][0]["port"] == 80
    numeric = render_service(REF, make_spec(service={"targetPort": 8080}), "stable")
    assert numeric["spec"]["ports"][0]["targetPort"] == 8080


# --- canary_replicas ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("replicas", "canary", "weight", "expected"),
    [
        # matchWeight: ceil(replicas * weight / 100), at least one pod for any traffic.
        (4, "matchWeight", 0, 0),
        (4, "matchWeight", 1, 1),
        (4, "matchWeight", 10, 1),
        (4, "matchWeight", 25, 1),
        (4, "matchWeight", 26, 2),
        (4, "matchWeight", 50, 2),
        (4, "matchWeight", 100, 4),
        (10, "matchWeight", 33, 4),
        (3, "matchWeight", 50, 2),
        (1, "matchWeight", 1, 1),
        (1, "matchWeight", 0, 0),
        (0, "matchWeight", 50, 0),
        (0, "matchWeight", 0, 0),
        # A fixed size is the user's choice, at every weight, including 0.
        (4, 2, 0, 2),
        (4, 2, 50, 2),
        (4, 10, 100, 10),
        (4, 0, 50, 0),
        (0, 1, 100, 1),
    ],
)
def test_canary_replicas(replicas: int, canary: int | str, weight: int, expected: int) -> None:
    spec = make_spec(
        replicas=replicas, strategy={"canary": {"steps": [{"setWeight": 50}], "canaryReplicas": canary}}
    )
    assert canary_replicas(spec, weight) == expected


@pytest.mark.parametrize("weight", [-1, 101])
def test_canary_replicas_refuses_weights_out_of_range(weight: int) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        canary_replicas(make_spec(), weight)


# --- pod_template_revision ----------------------------------------------------------------------


def test_revision_is_ten_hex_chars() -> None:
    revision = pod_template_revision(template())
    assert len(revision) == 10
    assert int(revision, 16) >= 0


def test_revision_ignores_key_order() -> None:
    forward = template()
    backward = {
        "spec": {"containers": [dict(reversed(list(c.items()))) for c in forward["spec"]["containers"]]},
        "metadata": {"labels": {"app": "web"}},
    }
    assert list(backward) != list(forward)
    assert pod_template_revision(backward) == pod_template_revision(forward)
    assert pod_template_revision(MappingProxyType(forward)) == pod_template_revision(forward)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(template(image="ghcr.io/acme/web:1.4.3"), id="image"),
        pytest.param(template({"app": "web", "tier": "front"}), id="label"),
        pytest.param({**template(), "spec": {"containers": []}}, id="containers"),
    ],
)
def test_revision_changes_with_the_template(changed: dict[str, Any]) -> None:
    assert pod_template_revision(changed) != pod_template_revision(template())


# --- ownership ----------------------------------------------------------------------------------


def owner(uid: str, kind: str = "Rollout") -> dict[str, Any]:
    return {"apiVersion": "sluice.dev/v1alpha1", "kind": kind, "name": "web", "uid": uid, "controller": True}


MANAGED = {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: "web"}


@pytest.mark.parametrize(
    ("obj", "owned"),
    [
        pytest.param({"metadata": {"ownerReferences": [owner(REF.uid)]}}, True, id="owned"),
        pytest.param(
            {"metadata": {"ownerReferences": [owner("other"), owner(REF.uid)]}}, True, id="owned-among-others"
        ),
        pytest.param(
            {"metadata": {"labels": MANAGED, "ownerReferences": [owner("other-uid")]}}, False, id="other-uid"
        ),
        pytest.param({"metadata": {"labels": MANAGED}}, False, id="label-only"),
        pytest.param({"metadata": {"ownerReferences": []}}, False, id="empty-refs"),
        pytest.param({"metadata": {"ownerReferences": None}}, False, id="null-refs"),
        pytest.param({"metadata": {"name": "web"}}, False, id="no-refs"),
        pytest.param({}, False, id="no-metadata"),
        pytest.param(
            {"metadata": {"ownerReferences": [owner(REF.uid, kind="Application")]}}, False, id="other-kind"
        ),
    ],
)
def test_is_owned_by(obj: dict[str, Any], owned: bool) -> None:
    assert is_owned_by(obj, REF) is owned


def test_managed_metadata() -> None:
    meta = managed_metadata(REF, "web-canary", {"extra": "yes"})
    assert meta == {
        "name": "web-canary",
        "namespace": "shop",
        "labels": {"extra": "yes", MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: "web"},
        "ownerReferences": [REF.owner_reference()],
    }


def test_managed_labels_win_over_extra_labels() -> None:
    meta = managed_metadata(REF, "web", {MANAGED_BY_LABEL: "helm", ROLLOUT_LABEL: "api"})
    assert meta["labels"] == {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: "web"}


def test_conflict_message_names_object_and_the_way_out() -> None:
    message = conflict_message("Deployment", "web", "shop")
    assert "Deployment shop/web" in message
    assert "not managed by this Rollout" in message
    assert "rename the Rollout" in message
    assert "delete the Deployment" in message


def test_a_rollout_without_service_has_no_services_to_render() -> None:
    spec = make_spec(service=None)
    with pytest.raises(RenderError, match="no service"):
        render_service(REF, spec, "stable")
