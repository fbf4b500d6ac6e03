"""The generated CRDs: current, structural, and carrying DESIGN.md's field names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from operators.api.crdgen import (
    SchemaConversionError,
    build_crd,
    render_crds,
    stale_crds,
    structural_schema,
    write_crds,
)
from operators.api.resources import RESOURCES, ROLLOUT
from operators.api.structural import structural_problems

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"


def openapi_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="module")
def rollout_crd() -> dict[str, Any]:
    return build_crd(ROLLOUT)


@pytest.fixture(scope="module")
def rollout_schema(rollout_crd: dict[str, Any]) -> dict[str, Any]:
    return openapi_schema(rollout_crd)


def node_at(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The schema node for a dotted path; ``items`` steps into an array's items."""
    node = schema
    for segment in dotted.split("."):
        if segment == "items" and node.get("type") == "array":
            node = node["items"]
            continue
        properties = node.get("properties", {})
        assert segment in properties, f"{dotted}: no field {segment!r} (has {sorted(properties)})"
        node = properties[segment]
    return node


def schema_nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    """Every schema node, junctor members included (but not the field-name maps of `properties`)."""
    children = list(node.get("properties", {}).values())
    children += [
        node[key] for key in ("items", "additionalProperties", "not") if isinstance(node.get(key), dict)
    ]
    children += [member for junctor in ("allOf", "anyOf", "oneOf") for member in node.get(junctor, [])]
    return [node, *(sub for child in children for sub in schema_nodes(child))]


# --- the checked-in files ---------------------------------------------------


def test_checked_in_crds_are_current() -> None:
    stale = stale_crds(CRDS)
    assert not stale, (
        f"crds/ is out of date with the models ({', '.join(stale)}): run `sluice crds --output-dir crds`"
    )


def test_checked_in_crd_parses_to_the_generated_one(rollout_crd: dict[str, Any]) -> None:
    assert yaml.safe_load((CRDS / ROLLOUT.file_name).read_text()) == rollout_crd


def test_every_resource_has_a_crd_file() -> None:
    assert sorted(render_crds()) == sorted(resource.file_name for resource in RESOURCES)


def test_rendering_is_deterministic() -> None:
    assert render_crds() == render_crds()


def test_stale_crds_reports_missing_and_edited_files(tmp_path: Path) -> None:
    every = sorted(render_crds())  # one file per resource
    assert stale_crds(tmp_path) == every
    written = write_crds(tmp_path)
    assert sorted(written) == [tmp_path / name for name in every]
    assert stale_crds(tmp_path) == []
    (tmp_path / "rollout.yaml").write_text(render_crds()["rollout.yaml"].replace("sro", "ro"))
    assert stale_crds(tmp_path) == ["rollout.yaml"]


def test_write_crds_creates_the_directory(tmp_path: Path) -> None:
    write_crds(tmp_path / "deploy" / "crds")
    assert stale_crds(tmp_path / "deploy" / "crds") == []


# --- the CRD's identity -----------------------------------------------------


def test_rollout_crd_identity(rollout_crd: dict[str, Any]) -> None:
    assert rollout_crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert rollout_crd["kind"] == "CustomResourceDefinition"
    assert rollout_crd["metadata"]["name"] == "rollouts.sluice.dev"
    spec = rollout_crd["spec"]
    assert spec["group"] == "sluice.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "Rollout",
        "listKind": "RolloutList",
        "plural": "rollouts",
        "singular": "rollout",
        "shortNames": ["sro"],
        "categories": ["sluice"],
    }
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas.total",
            "labelSelectorPath": ".status.selector",
        },
    }


def test_rollout_printer_columns(rollout_crd: dict[str, Any]) -> None:
    columns = rollout_crd["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["type"], c["jsonPath"]) for c in columns] == [
        ("Phase", "string", ".status.phase"),
        ("Strategy", "string", ".status.strategy"),
        ("Weight", "integer", ".status.canaryWeight"),
        ("Step", "integer", ".status.currentStepIndex"),
        ("Stable", "string", ".status.stableRevision"),
        ("Canary", "string", ".status.canaryRevision"),
        ("Desired", "integer", ".spec.replicas"),
        ("Current", "integer", ".status.replicas.total"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


@pytest.mark.parametrize("column", ["Phase", "Strategy", "Weight", "Step", "Stable", "Canary"])
def test_printer_columns_point_at_status_fields(
    rollout_crd: dict[str, Any], rollout_schema: dict[str, Any], column: str
) -> None:
    # A typo in a jsonPath shows an empty column, never an error: check each one resolves.
    columns = {c["name"]: c for c in rollout_crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    json_path = columns[column]["jsonPath"]
    node = node_at(rollout_schema, json_path.removeprefix("."))
    assert node["type"] == columns[column]["type"]


# --- the schema: DESIGN.md's names -------------------------------------------

SPEC_FIELDS = [
    "spec.replicas",
    "spec.selector",
    "spec.selector.matchLabels",
    "spec.template",
    "spec.template.metadata.labels",
    "spec.template.spec.containers",
    "spec.service.port",
    "spec.service.targetPort",
    "spec.traffic.gatewayAPI.httpRoute",
    "spec.traffic.gatewayAPI.parentRefs",
    "spec.traffic.gatewayAPI.parentRefs.items.name",
    "spec.traffic.gatewayAPI.parentRefs.items.namespace",
    "spec.traffic.gatewayAPI.hostnames",
    "spec.paused",
    "spec.progressDeadlineSeconds",
    "spec.strategy.canary.steps.items.setWeight",
    "spec.strategy.canary.steps.items.pause.duration",
    "spec.strategy.canary.stepWeight",
    "spec.strategy.canary.maxWeight",
    "spec.strategy.canary.canaryReplicas",
    "spec.strategy.canary.abortScaleDownDelaySeconds",
    "spec.strategy.canary.analysis.interval",
    "spec.strategy.canary.analysis.failureLimit",
    "spec.strategy.canary.analysis.inconclusiveLimit",
    "spec.strategy.canary.analysis.errorLimit",
    "spec.strategy.canary.analysis.minChecksPerStep",
    "spec.strategy.canary.analysis.metrics.items.name",
    "spec.strategy.canary.analysis.metrics.items.prometheus.address",
    "spec.strategy.canary.analysis.metrics.items.prometheus.timeout",
    "spec.strategy.canary.analysis.metrics.items.prometheus.headers",
    "spec.strategy.canary.analysis.metrics.items.prometheus.auth.bearerTokenSecretRef.key",
    "spec.strategy.canary.analysis.metrics.items.prometheus.auth.basicAuthSecretRef.name",
    "spec.strategy.canary.analysis.metrics.items.prometheus.tls.caSecretRef.key",
    "spec.strategy.canary.analysis.metrics.items.web.url",
    "spec.strategy.canary.analysis.metrics.items.web.jsonPath",
    "spec.strategy.canary.analysis.metrics.items.query",
    "spec.strategy.canary.analysis.metrics.items.template",
    "spec.strategy.canary.analysis.metrics.items.thresholdRange.min",
    "spec.strategy.canary.analysis.metrics.items.thresholdRange.max",
    "spec.strategy.canary.analysis.metrics.items.noData",
    "spec.strategy.canary.analysis.metrics.items.job.spec",
    "spec.strategy.canary.analysis.metrics.items.job.timeout",
]

STATUS_FIELDS = [
    "status.observedGeneration",
    "status.phase",
    "status.stableRevision",
    "status.canaryRevision",
    "status.currentStepIndex",
    "status.canaryWeight",
    "status.replicas.stable",
    "status.replicas.canary",
    "status.replicas.canaryReady",
    "status.analysis.passed",
    "status.analysis.failed",
    "status.analysis.inconclusive",
    "status.analysis.consecutiveErrors",
    "status.analysis.lastCheck.time",
    "status.analysis.lastCheck.outcome",
    "status.analysis.lastCheck.metrics.items.name",
    "status.analysis.lastCheck.metrics.items.value",
    "status.analysis.lastCheck.metrics.items.outcome",
    "status.history",
    "status.conditions.items.type",
    "status.conditions.items.status",
    "status.conditions.items.reason",
    "status.conditions.items.message",
    "status.conditions.items.lastTransitionTime",
    "status.conditions.items.observedGeneration",
    "status.message",
]


@pytest.mark.parametrize("dotted", SPEC_FIELDS + STATUS_FIELDS)
def test_design_field_exists(rollout_schema: dict[str, Any], dotted: str) -> None:
    node_at(rollout_schema, dotted)


def test_spec_is_required_and_top_level_is_a_kubernetes_object(rollout_schema: dict[str, Any]) -> None:
    assert rollout_schema["type"] == "object"
    assert rollout_schema["required"] == ["spec"]
    assert list(rollout_schema["properties"]) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert rollout_schema["properties"]["metadata"] == {"type": "object"}
    assert node_at(rollout_schema, "spec")["required"] == ["strategy"]  # template or workloadRef: a CEL rule


@pytest.mark.parametrize(
    ("dotted", "values"),
    [
        ("status.phase", ["Initializing", "Progressing", "Paused", "Healthy", "Degraded", "Aborted"]),
        ("spec.strategy.canary.analysis.metrics.items.noData", ["inconclusive", "fail", "pass"]),
        ("status.analysis.lastCheck.outcome", ["Passed", "Failed", "Inconclusive", "Error"]),
    ],
)
def test_enums_come_from_the_models(rollout_schema: dict[str, Any], dotted: str, values: list[str]) -> None:
    assert node_at(rollout_schema, dotted)["enum"] == values


@pytest.mark.parametrize(
    ("dotted", "default"),
    [
        ("spec.replicas", 1),
        ("spec.paused", False),
        ("spec.progressDeadlineSeconds", 600),
        ("spec.service.port", 80),
        ("spec.service.targetPort", "http"),
        ("spec.strategy.canary.canaryReplicas", "matchWeight"),
        ("spec.strategy.canary.analysis.interval", "60s"),
        ("spec.strategy.canary.analysis.inconclusiveLimit", 3),
        ("spec.strategy.canary.analysis.metrics.items.noData", "inconclusive"),
    ],
)
def test_scalar_defaults_are_kept(rollout_schema: dict[str, Any], dotted: str, default: object) -> None:
    assert node_at(rollout_schema, dotted)["default"] == default


@pytest.mark.parametrize(
    "dotted",
    ["spec.selector", "spec.service", "spec.traffic", "spec.strategy.canary.steps", "status.history"],
)
def test_no_defaults_for_optionals_and_containers(rollout_schema: dict[str, Any], dotted: str) -> None:
    assert "default" not in node_at(rollout_schema, dotted)


@pytest.mark.parametrize("dotted", ["spec.service.targetPort", "spec.strategy.canary.canaryReplicas"])
def test_int_or_string_fields_carry_no_type(rollout_schema: dict[str, Any], dotted: str) -> None:
    node = node_at(rollout_schema, dotted)
    assert node["x-kubernetes-int-or-string"] is True
    assert "type" not in node
    assert "anyOf" not in node


def test_string_maps_are_typed(rollout_schema: dict[str, Any]) -> None:
    for dotted in ("spec.selector.matchLabels", "status.handledCommands"):
        node = {key: value for key, value in node_at(rollout_schema, dotted).items() if key != "description"}
        assert node == {"type": "object", "additionalProperties": {"type": "string"}}


def test_pod_template_keeps_its_hand_written_schema(rollout_schema: dict[str, Any]) -> None:
    template = node_at(rollout_schema, "spec.template")
    assert template["x-kubernetes-preserve-unknown-fields"] is True
    assert template["required"] == ["spec"]
    containers = node_at(rollout_schema, "spec.template.spec.containers")
    assert containers["minItems"] == 1
    assert containers["items"]["x-kubernetes-preserve-unknown-fields"] is True


@pytest.mark.parametrize(
    ("dotted", "extra"),
    [
        ("spec.traffic", {"minProperties": 1, "maxProperties": 1}),
        ("spec.strategy.canary.steps.items", {"minProperties": 1, "maxProperties": 1}),
        ("spec.strategy.canary.analysis.metrics.items.thresholdRange", {"minProperties": 1}),
        ("spec.strategy.canary", {"oneOf": [{"required": ["steps"]}, {"required": ["stepWeight"]}]}),
        (
            "spec.strategy.canary.analysis.metrics.items",
            {
                "oneOf": [
                    {"required": ["query"]},
                    {"required": ["template"]},
                    {"required": ["web"]},
                    {"required": ["job"]},
                ]
            },
        ),
        ("spec.strategy.canary.steps.items.pause.duration", {"pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}),
    ],
)
def test_json_schema_extra_is_preserved(
    rollout_schema: dict[str, Any], dotted: str, extra: dict[str, Any]
) -> None:
    node = node_at(rollout_schema, dotted)
    assert {key: node.get(key) for key in extra} == extra


def test_descriptions_are_kept(rollout_schema: dict[str, Any]) -> None:
    # A field's own description...
    assert node_at(rollout_schema, "spec.paused")["description"].startswith("User intent")
    # ...and a model's docstring, where the field has none.
    assert node_at(rollout_schema, "spec.strategy.canary.steps.items")["description"].startswith(
        "One canary step"
    )


@pytest.mark.parametrize("keyword", ["$ref", "$defs", "title", "anyOf", "nullable", "const"])
def test_json_schema_only_keywords_are_gone(rollout_schema: dict[str, Any], keyword: str) -> None:
    offenders = [node for node in schema_nodes(rollout_schema) if keyword in node]
    assert not offenders


def test_no_closed_objects(rollout_schema: dict[str, Any]) -> None:
    assert all(node.get("additionalProperties") is not False for node in schema_nodes(rollout_schema))


def test_the_walk_sees_the_whole_schema(rollout_schema: dict[str, Any]) -> None:
    # Guards the two tests above against a walk that silently skips nodes.
    nodes = schema_nodes(rollout_schema)
    assert node_at(rollout_schema, "status.conditions.items.status") in nodes
    assert {"required": ["template"]} in nodes


# --- structural rules -------------------------------------------------------


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.kind)
def test_generated_schemas_are_structural(resource: Any) -> None:
    assert structural_problems(openapi_schema(build_crd(resource))) == []


GOOD_ROOT: dict[str, Any] = {"type": "object", "properties": {"spec": {"type": "object"}}}


def with_spec(spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"spec": spec}}


BROKEN_SCHEMAS = [
    pytest.param(
        with_spec(
            {"type": "object", "properties": {"steps": {"type": "array", "items": {"description": "x"}}}}
        ),
        ".spec.steps.items",
        "type must be set",
        id="untyped-item",
    ),
    pytest.param(
        with_spec({"type": "object", "properties": {"replicas": {}}}),
        ".spec.replicas",
        "type must be set",
        id="untyped-field",
    ),
    pytest.param({"properties": {"spec": {"type": "object"}}}, ".", "type must be set", id="untyped-root"),
    pytest.param(
        with_spec({"type": "object", "properties": {"service": {"$ref": "#/$defs/ServiceSpec"}}}),
        ".spec.service",
        "$ref is not allowed",
        id="ref",
    ),
    pytest.param(
        with_spec({"type": "object", "$defs": {}}),
        ".spec",
        "$defs is not allowed",
        id="defs",
    ),
    pytest.param(
        with_spec(
            {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "oneOf": [{"type": "object", "required": ["query"]}],
            }
        ),
        ".spec.oneOf[0]",
        "type is not allowed inside",
        id="type-in-oneOf",
    ),
    pytest.param(
        with_spec({"type": "object", "anyOf": [{"description": "no"}]}),
        ".spec.anyOf[0]",
        "description is not allowed inside",
        id="description-in-anyOf",
    ),
    pytest.param(
        with_spec(
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}},
                "allOf": [{"properties": {"a": {"default": 1}}}],
            }
        ),
        ".spec.allOf[0].a",
        "default is not allowed inside",
        id="default-in-allOf-field",
    ),
    pytest.param(
        with_spec({"type": "object", "not": {"x-kubernetes-preserve-unknown-fields": True}}),
        ".spec.not",
        "x-kubernetes-preserve-unknown-fields is not allowed inside",
        id="extension-in-not",
    ),
    pytest.param(
        with_spec({"type": "object", "anyOf": [{"properties": {"bar": {"minimum": 42}}}]}),
        ".spec.anyOf[0].bar",
        "not specified outside",
        id="junctor-field-not-specified-outside",
    ),
    pytest.param(
        with_spec(
            {
                "type": "object",
                "properties": {"labels": {"type": "string"}},
                "additionalProperties": {"type": "string"},
            }
        ),
        ".spec",
        "properties and additionalProperties cannot both be set",
        id="properties-and-additionalProperties",
    ),
    pytest.param(
        with_spec({"type": "object", "additionalProperties": False}),
        ".spec",
        "additionalProperties must be a schema",
        id="additionalProperties-false",
    ),
    pytest.param(
        with_spec({"type": "array"}),
        ".spec",
        "an array needs items",
        id="array-without-items",
    ),
    pytest.param(
        with_spec({"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
        ".spec",
        "uniqueItems cannot be true",
        id="uniqueItems",
    ),
    pytest.param(
        with_spec({"type": ["string", "null"]}),
        ".spec",
        "is not one of",
        id="type-list",
    ),
    pytest.param(
        with_spec({"x-kubernetes-int-or-string": True, "type": "string"}),
        ".spec",
        "must not set type",
        id="int-or-string-with-type",
    ),
    pytest.param(
        with_spec({"type": "integer", "minimum": 0, "exclusiveMinimum": 0}),
        ".spec",
        "exclusiveMinimum must be a boolean",
        id="json-schema-exclusive-bound",
    ),
    pytest.param(
        with_spec({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}),
        ".spec",
        "required field b is not in properties",
        id="required-unknown-field",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}},
        },
        ".metadata.labels",
        "only name and generateName",
        id="metadata-restriction",
    ),
    pytest.param(
        {"type": "array", "items": {"type": "string"}},
        ".",
        "the root must be of type object",
        id="root-not-object",
    ),
    pytest.param(
        with_spec({"type": "object", "const": 1}), ".spec", "const is not a CRD schema keyword", id="const"
    ),
]


@pytest.mark.parametrize(("schema", "path", "message"), BROKEN_SCHEMAS)
def test_structural_checker_reports_breakage_with_its_path(
    schema: dict[str, Any], path: str, message: str
) -> None:
    problems = structural_problems(schema)
    assert any(p.startswith(f"{path}: ") and message in p for p in problems), problems


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param(GOOD_ROOT, id="minimal"),
        pytest.param(with_spec({"x-kubernetes-int-or-string": True}), id="int-or-string"),
        pytest.param(
            with_spec(
                {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
            ),
            id="int-or-string-anyOf-pattern",
        ),
        pytest.param(with_spec({"x-kubernetes-preserve-unknown-fields": True}), id="anything"),
        pytest.param(
            {
                "type": "object",
                "properties": {
                    "metadata": {
                        "type": "object",
                        "properties": {"name": {"type": "string", "pattern": "^a"}},
                    },
                    "spec": {
                        "type": "object",
                        "description": "foo bar object",
                        "properties": {"bar": {"type": "integer"}},
                        "anyOf": [{"properties": {"bar": {"minimum": 42}}, "required": ["bar"]}],
                    },
                },
            },
            id="kubernetes-docs-structural-example",
        ),
    ],
)
def test_structural_checker_accepts_valid_schemas(schema: dict[str, Any]) -> None:
    assert structural_problems(schema) == []


# --- the converter, on models Rollout does not exercise ------------------------


class _Anything(BaseModel):
    blob: Any = None
    mode: Literal["fast"] = "fast"
    ratio: float = Field(default=0.5, gt=0)
    labels: dict[str, Any] = Field(default_factory=dict)


class _Defaults(BaseModel):
    # validate_default is off in ApiModel, so a model can carry a default its own schema refuses.
    below_minimum: int = Field(default=-1, ge=0)
    outside_enum: str = Field(default="x", json_schema_extra={"enum": ["a", "b"]})
    bool_for_int: int = True
    fine: int = Field(default=3, ge=0)


class _Node(BaseModel):
    children: list[_Node] = Field(default_factory=list)


class _Union(BaseModel):
    value: int | list[str]


def test_converter_handles_any_literal_and_exclusive_bounds() -> None:
    schema = structural_schema(_Anything)
    props = schema["properties"]
    assert props["blob"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert props["mode"]["enum"] == ["fast"]
    assert (props["ratio"]["minimum"], props["ratio"]["exclusiveMinimum"]) == (0, True)
    assert props["labels"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert structural_problems({"type": "object", "properties": {"spec": schema}}) == []


def test_converter_keeps_only_defaults_the_node_accepts() -> None:
    props = structural_schema(_Defaults)["properties"]
    assert {name: props[name].get("default") for name in props} == {
        "below_minimum": None,
        "outside_enum": None,
        "bool_for_int": None,
        "fine": 3,
    }


def test_converter_refuses_recursive_models() -> None:
    with pytest.raises(SchemaConversionError, match="cannot be recursive"):
        structural_schema(_Node)


def test_converter_refuses_unions_of_types() -> None:
    with pytest.raises(SchemaConversionError, match=r"\.value: a union of types"):
        structural_schema(_Union)
