"""The Rollout's /scale subresource: declared in its CRD, checked by the sandbox, fed by the engine.

What `kubectl scale`, an HPA or KEDA rely on: `.spec.replicas` to write, an integer count of pods and
a label selector string to read (the engine's side is in test_engine.py).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import yaml

from operators.api.crdgen import SchemaConversionError, build_crd, render_crds
from operators.api.resources import ROLLOUT, ScaleSubresource
from operators.rollout.scale import pod_count, selector_text
from sluice_sandbox.crds import CUSTOM_RESOURCE_DEFINITIONS, resources_from_crd
from sluice_sandbox.errors import ApiError
from sluice_sandbox.resources import Admission, ScaleSpec

ROLLOUT_CRD: dict[str, Any] = yaml.safe_load(render_crds()[ROLLOUT.file_name])
VERSION = ROLLOUT_CRD["spec"]["versions"][0]


def schema_at(path: str) -> dict[str, Any]:
    node: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
    for name in path.strip(".").split("."):
        node = node["properties"][name]
    return node


def test_the_rollout_crd_declares_scale_on_fields_of_the_right_types() -> None:
    scale = VERSION["subresources"]["scale"]
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas.total",
        "labelSelectorPath": ".status.selector",
    }
    assert VERSION["subresources"]["status"] == {}
    assert schema_at(scale["specReplicasPath"])["type"] == "integer"
    assert schema_at(scale["statusReplicasPath"])["type"] == "integer"
    assert schema_at(scale["labelSelectorPath"])["type"] == "string"


def test_replica_counts_show_with_wide_output_only() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert (columns["Desired"]["jsonPath"], columns["Desired"]["priority"]) == (".spec.replicas", 1)
    assert (columns["Current"]["jsonPath"], columns["Current"]["priority"]) == (".status.replicas.total", 1)


def test_other_kinds_have_no_scale() -> None:
    for name, text in render_crds().items():
        if name != ROLLOUT.file_name:
            assert "scale" not in yaml.safe_load(text)["spec"]["versions"][0]["subresources"], name


@pytest.mark.parametrize(
    ("scale", "words"),
    [
        pytest.param(
            ScaleSubresource(".spec.replica", ".status.replicas.total", ".status.selector"),
            "scale path .spec.replica must name a field of type integer under .spec",
            id="missing-field",
        ),
        pytest.param(
            ScaleSubresource(".spec.replicas", ".status.replicas", ".status.selector"),
            "scale path .status.replicas must name a field of type integer under .status",
            id="an-object-not-a-count",
        ),
        pytest.param(
            ScaleSubresource(".spec.replicas", ".status.replicas.total", ".spec.selector"),
            "scale path .spec.selector must name a field of type string under .status",
            id="selector-not-a-string-in-status",
        ),
    ],
)
def test_a_scale_path_the_schema_lacks_is_refused_at_generation(scale: ScaleSubresource, words: str) -> None:
    with pytest.raises(SchemaConversionError, match=words.replace(".", r"\.")):
        build_crd(dataclasses.replace(ROLLOUT, scale=scale))


def test_the_sandbox_serves_scale_as_the_crd_declares_it() -> None:
    [served] = resources_from_crd(ROLLOUT_CRD)
    assert served.scale == ScaleSpec(".spec.replicas", ".status.replicas.total", ".status.selector")
    assert "scale" in served.subresources


def crd_with_scale(**paths: Any) -> dict[str, Any]:
    crd = copy.deepcopy(ROLLOUT_CRD)
    crd["spec"]["versions"][0]["subresources"]["scale"] = paths
    return crd


FIELD = "spec.versions[0].subresources.scale"


@pytest.mark.parametrize(
    ("paths", "field", "words"),
    [
        pytest.param(
            {"statusReplicasPath": ".status.replicas.total"},
            f"{FIELD}.specReplicasPath",
            "Required value",
            id="spec-path-required",
        ),
        pytest.param(
            {"specReplicasPath": ".spec.replicas"},
            f"{FIELD}.statusReplicasPath",
            "Required value",
            id="status-path-required",
        ),
        pytest.param(
            {"specReplicasPath": ".status.replicas.total", "statusReplicasPath": ".status.replicas.total"},
            f"{FIELD}.specReplicasPath",
            "should be a json path under .spec",
            id="spec-path-under-spec",
        ),
        pytest.param(
            {"specReplicasPath": ".spec.replicas", "statusReplicasPath": "status.replicas"},
            f"{FIELD}.statusReplicasPath",
            "must be a simple json path starting with .",
            id="leading-dot",
        ),
        pytest.param(
            {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas.total",
                "labelSelectorPath": ".metadata.labels",
            },
            f"{FIELD}.labelSelectorPath",
            "should be a json path under either .spec or .status",
            id="selector-under-spec-or-status",
        ),
        pytest.param(
            {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.counts[0]"},
            f"{FIELD}.statusReplicasPath",
            "should be a json path under .status",
            id="no-array-notation",
        ),
    ],
)
def test_the_sandbox_refuses_a_crd_with_bad_scale_paths(
    paths: dict[str, Any], field: str, words: str
) -> None:
    assert CUSTOM_RESOURCE_DEFINITIONS.prepare is not None
    with pytest.raises(ApiError) as raised:
        CUSTOM_RESOURCE_DEFINITIONS.prepare(
            CUSTOM_RESOURCE_DEFINITIONS, crd_with_scale(**paths), Admission("create")
        )
    [cause] = raised.value.as_status()["details"]["causes"]
    assert cause["field"] == field and words in cause["message"]


def test_the_sandbox_accepts_the_generated_crd() -> None:
    assert CUSTOM_RESOURCE_DEFINITIONS.prepare is not None
    crd = copy.deepcopy(ROLLOUT_CRD)
    CUSTOM_RESOURCE_DEFINITIONS.prepare(CUSTOM_RESOURCE_DEFINITIONS, crd, Admission("create"))
    assert {c["type"] for c in crd["status"]["conditions"]} == {"NamesAccepted", "Established"}


def deployment_with(pods: int | None) -> dict[str, Any]:
    return {"spec": {"replicas": 9}, "status": {} if pods is None else {"replicas": pods, "readyReplicas": 0}}


def test_pod_count_is_the_pods_that_exist_not_the_pods_wanted() -> None:
    assert pod_count(deployment_with(3), deployment_with(2)) == 5
    assert pod_count(deployment_with(None), None) == 0, "a Deployment without status, or none at all"


def test_selector_text_is_sorted_label_pairs() -> None:
    assert selector_text({"sluice.dev/rollout": "web", "app": "web"}) == "app=web,sluice.dev/rollout=web"
    assert selector_text({}) == ""
