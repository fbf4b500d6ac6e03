"""The Application's API: its CRD (names, columns, DESIGN.md's fields) and what its models refuse."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from operators.api.application import ApplicationSpec
from operators.api.crdgen import build_crd
from operators.api.resources import APPLICATION
from operators.api.structural import structural_problems
from tests.unit.test_crds import node_at, openapi_schema

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return build_crd(APPLICATION)


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    return openapi_schema(crd)


def test_checked_in_crd_is_the_generated_one(crd: dict[str, Any]) -> None:
    assert yaml.safe_load((CRDS / "application.yaml").read_text()) == crd


def test_identity(crd: dict[str, Any]) -> None:
    assert crd["metadata"]["name"] == "applications.sluice.dev"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("sluice.dev", "Namespaced")
    assert spec["names"] == {
        "kind": "Application",
        "listKind": "ApplicationList",
        "plural": "applications",
        "singular": "application",
        "shortNames": ["sapp"],
        "categories": ["sluice"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_structural(schema: dict[str, Any]) -> None:
    assert structural_problems(schema) == []


def test_printer_columns(crd: dict[str, Any], schema: dict[str, Any]) -> None:
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["type"]) for c in columns] == [
        ("Phase", "string"),
        ("Components", "integer"),
        ("Ready", "string"),
        ("Age", "date"),
    ]
    for column in columns[:-1]:  # each resolves to a status field of its type (a typo shows an empty column)
        assert node_at(schema, column["jsonPath"].removeprefix("."))["type"] == column["type"]


@pytest.mark.parametrize(
    "dotted",
    [
        "spec.rollout.steps.items.setWeight",
        "spec.rollout.stepWeight",
        "spec.rollout.maxWeight",
        "spec.rollout.canaryReplicas",
        "spec.rollout.abortScaleDownDelaySeconds",
        "spec.rollout.analysis.interval",
        "spec.rollout.analysis.metrics.items.thresholdRange.max",
        "spec.rollout.progressDeadlineSeconds",
        "spec.rollout.paused",
        "spec.components.items.name",
        "spec.components.items.type",
        "spec.components.items.image",
        "spec.components.items.replicas",
        "spec.components.items.ports.items.name",
        "spec.components.items.ports.items.port",
        "spec.components.items.ports.items.expose",
        "spec.components.items.env.items.name",
        "spec.components.items.env.items.value",
        "spec.components.items.resources",
        "spec.components.items.properties",
        "spec.components.items.rollout.steps",
        "spec.components.items.route.parentRefs.items.name",
        "spec.components.items.route.hostnames",
        "status.observedGeneration",
        "status.phase",
        "status.components.items.name",
        "status.components.items.phase",
        "status.components.items.revision",
        "status.components.items.canaryWeight",
        "status.components.items.ready",
        "status.components.items.message",
        "status.conditions.items.type",
        "status.conditions.items.observedGeneration",
    ],
)
def test_design_field_exists(schema: dict[str, Any], dotted: str) -> None:
    node_at(schema, dotted)


def test_enums(schema: dict[str, Any]) -> None:
    assert node_at(schema, "status.phase")["enum"] == ["Running", "Progressing", "Degraded"]
    assert node_at(schema, "status.components.items.phase")["enum"] == [
        "Pending",
        "Initializing",
        "Progressing",
        "Paused",
        "Healthy",
        "Degraded",
        "Aborted",
        "Failed",
    ]


def test_components_and_ports_are_maps_keyed_by_name(schema: dict[str, Any]) -> None:
    # The API server then refuses two components (or ports) of the same name.
    for dotted in ("spec.components", "spec.components.items.ports", "status.components"):
        node = node_at(schema, dotted)
        assert (node["x-kubernetes-list-type"], node["x-kubernetes-list-map-keys"]) == ("map", ["name"])


def test_properties_and_resources_keep_whatever_is_written(schema: dict[str, Any]) -> None:
    for dotted in ("spec.components.items.properties", "spec.components.items.resources"):
        assert node_at(schema, dotted)["x-kubernetes-preserve-unknown-fields"] is True


# ---- what the models refuse ---------------------------------------------------------------------------

VALID: dict[str, Any] = {
    "components": [
        {"name": "web", "type": "webservice", "image": "web:1", "ports": [{"name": "http", "port": 80}]}
    ]
}


def component(doc: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = doc["components"][0]
    return node


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: component(d).update(name="Web"), "String should match pattern"),
        (lambda d: component(d).update(name="w" * 57), "at most 56 characters"),  # web-canary must fit 63
        (lambda d: component(d).update(name="1web"), "String should match pattern"),  # a Service name
        (lambda d: component(d).pop("image"), "Field required"),
        (lambda d: component(d).update(replicas=-1), "greater than or equal to 0"),
        (lambda d: component(d)["ports"][0].update(port=0), "greater than or equal to 1"),
        (lambda d: component(d)["ports"][0].update(name="http_port"), "String should match pattern"),
        (lambda d: d["components"].append(copy.deepcopy(component(d))), "component names must be unique"),
        (
            lambda d: d["components"].append({**copy.deepcopy(component(d)), "name": "web-canary"}),
            'components "web" and "web-canary" collide: a component cannot be named after another',
        ),
        (
            lambda d: component(d).update(image="NOT A VALID IMAGE::@@"),
            "invalid image 'NOT A VALID IMAGE::@@'",
        ),
        (lambda d: d.update(rollout={"steps": []}), "at least 1 item"),
        (lambda d: d.update(rollout={"analysis": {"interval": "soon"}}), "invalid duration"),
        (lambda d: component(d).update(typo=1), "Extra inputs are not permitted"),
    ],
    ids=[
        "upper-case-name",
        "long-name",
        "digit-first",
        "no-image",
        "negative-replicas",
        "port-0",
        "port-name",
        "duplicate-names",
        "canary-collision",
        "bad-image",
        "empty-steps",
        "bad-interval",
        "unknown-field",
    ],
)
def test_models_refuse(change: Any, message: str) -> None:
    doc = copy.deepcopy(VALID)
    change(doc)
    with pytest.raises(ValidationError, match=message):
        ApplicationSpec.model_validate(doc)


def test_the_valid_base_is_valid() -> None:
    ApplicationSpec.model_validate(VALID)
