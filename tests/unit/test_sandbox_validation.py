"""Structural schemas in the sandbox: pruning, defaulting, validation, and custom-object admission."""

import copy
import pathlib
from typing import Any

import jsonschema
import pytest
import yaml

from sluice_sandbox.crds import CUSTOM_RESOURCE_DEFINITIONS, resources_from_crd
from sluice_sandbox.errors import ApiError, FieldError, FieldErrorType
from sluice_sandbox.resources import Admission, FieldValidation, ResourceSpec
from sluice_sandbox.validation import Part, StructuralSchema, render_path

REPO = pathlib.Path(__file__).resolve().parents[2]
ROLLOUT_CRD = yaml.safe_load((REPO / "crds" / "rollout.yaml").read_text())
ROLLOUT_SCHEMA = ROLLOUT_CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def example_rollout() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / "rollout-minimal.yaml").read_text()))


STRING, INTEGER = {"type": "string"}, {"type": "integer"}
ONE_OF = {
    "type": "object",
    "properties": {"a": STRING, "b": STRING},
    "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}


def messages(schema: dict[str, Any], value: Any) -> list[str]:
    wrapper = StructuralSchema({"type": "object", "properties": {"x": schema}})
    return [str(error) for error in wrapper.validate({"x": value})]


# ----- Validation: each keyword, worded as kube-openapi words it -----


@pytest.mark.parametrize(
    ("schema", "value", "expected"),
    [
        (
            {"type": "integer"},
            "five",
            ['x: Invalid value: "string": x in body must be of type integer: "string"'],
        ),
        ({"type": "integer"}, 1.0, []),  # an integral number is an integer, as in Go
        (
            {"type": "integer"},
            1.5,
            ['x: Invalid value: "number": x in body must be of type integer: "number"'],
        ),
        (
            {"type": "integer"},
            True,
            ['x: Invalid value: "boolean": x in body must be of type integer: "boolean"'],
        ),
        ({"type": "string"}, None, ['x: Invalid value: "null": x in body must be of type string: "null"']),
        ({"type": "string", "nullable": True}, None, []),
        ({"type": "object"}, [], ['x: Invalid value: "array": x in body must be of type object: "array"']),
        (
            {"type": "integer", "maximum": 100},
            101,
            ["x: Invalid value: 101: x in body should be less than or equal to 100"],
        ),
        (
            {"type": "integer", "maximum": 100, "exclusiveMaximum": True},
            100,
            ["x: Invalid value: 100: x in body should be less than 100"],
        ),
        (
            {"type": "integer", "minimum": 0},
            -1,
            ["x: Invalid value: -1: x in body should be greater than or equal to 0"],
        ),
        (
            {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
            0,
            ["x: Invalid value: 0: x in body should be greater than 0"],
        ),
        (
            {"type": "number", "multipleOf": 0.5},
            0.75,
            ["x: Invalid value: 0.75: x in body should be a multiple of 0.5"],
        ),
        (
            {"type": "string", "minLength": 1},
            "",
            ['x: Invalid value: "": x in body should be at least 1 chars long'],
        ),
        ({"type": "string", "maxLength": 3}, "long", ["x: Too long: may not be more than 3 bytes"]),
        (
            {"type": "string", "pattern": "^[0-9]+s$"},
            "5m",
            ["x: Invalid value: \"5m\": x in body should match '^[0-9]+s$'"],
        ),
        (
            {"type": "string", "enum": ["In", "NotIn"]},
            "Is",
            ['x: Unsupported value: "Is": supported values: "In", "NotIn"'],
        ),
        (
            {"type": "boolean", "enum": [True]},
            1,
            ['x: Invalid value: "integer": x in body must be of type boolean: "integer"'],
        ),
        (
            {"type": "array", "items": {"type": "string"}, "minItems": 1},
            [],
            ['x: Invalid value: "array": x in body should have at least 1 items'],
        ),
        (
            {"type": "array", "items": {"type": "string"}, "maxItems": 1},
            ["a", "b"],
            ["x: Too many: 2: must have at most 1 items"],
        ),
        (
            {"type": "array", "items": {"type": "integer", "maximum": 1}},
            [1, 2],
            ["x[1]: Invalid value: 2: x[1] in body should be less than or equal to 1"],
        ),
        (
            {"type": "object", "minProperties": 1},
            {},
            ['x: Invalid value: "object": x in body should have at least 1 properties'],
        ),
        (
            {"type": "object", "maxProperties": 1, "properties": {"a": INTEGER, "b": INTEGER}},
            {"a": 1, "b": 2},
            ["x: Too many: 2: must have at most 1 items"],
        ),
        (
            {"type": "object", "required": ["a", "b"], "properties": {"a": STRING, "b": STRING}},
            {},
            ["x.a: Required value", "x.b: Required value"],
        ),
        (
            {"type": "object", "additionalProperties": {"type": "string"}},
            {"k": 1},
            ['x.k: Invalid value: "integer": x.k in body must be of type string: "integer"'],
        ),
        ({"x-kubernetes-int-or-string": True}, "half", []),
        ({"x-kubernetes-int-or-string": True}, 2, []),
        (
            {"x-kubernetes-int-or-string": True},
            [2],
            ['x: Invalid value: "array": x in body must be of type integer,string: "array"'],
        ),
        (
            {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            ["a", "a"],
            ['x[1]: Duplicate value: "a"'],
        ),
        (
            {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "properties": {"type": {"type": "string"}, "status": {"type": "string"}},
                },
            },
            [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}],
            ['x[1]: Duplicate value: {"type":"Ready"}'],
        ),
        (
            ONE_OF,
            {"a": "", "b": ""},
            [
                'x: Invalid value: "object": "x" must validate one and only one schema (oneOf). '
                "Found 2 valid alternatives"
            ],
        ),
        (
            ONE_OF,
            {},
            [
                'x: Invalid value: "object": "x" must validate one and only one schema (oneOf). '
                "Found none valid",
                "x.a: Required value",
            ],
        ),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "anyOf": [{"required": ["a"]}]},
            {},
            [
                'x: Invalid value: "object": "x" must validate at least one schema (anyOf)',
                "x.a: Required value",
            ],
        ),
        (
            {"type": "string", "not": {"enum": ["no"]}},
            "no",
            ['x: Invalid value: "no": "x" must not validate the schema (not)'],
        ),
        (
            {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 3}]},
            5,
            ["x: Invalid value: 5: x in body should be less than or equal to 3"],
        ),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_validation_messages(schema: dict[str, Any], value: Any, expected: list[str]) -> None:
    assert messages(schema, value) == expected


def _pure_json_schema(schema: Any) -> Any:
    """The schema without Kubernetes' extensions, for jsonschema to judge."""
    if isinstance(schema, dict):
        return {key: _pure_json_schema(value) for key, value in schema.items() if not key.startswith("x-")}
    return schema


@pytest.mark.parametrize(
    ("schema", "valid", "invalid"),
    [
        ({"type": "integer", "minimum": 1, "maximum": 5}, [1, 3, 5], [0, 6, "x", None, 2.5]),
        ({"type": "integer", "minimum": 1, "exclusiveMinimum": True}, [2], [1, 0]),
        (
            {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^a"},
            ["ab", "abc"],
            ["a", "abcd", "bc", 3],
        ),
        (
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2, "uniqueItems": True},
            [["a"], ["a", "b"]],
            [[], ["a", "b", "c"], ["a", "a"], [1]],
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}},
                "required": ["a"],
                "minProperties": 1,
            },
            [{"a": 1}],
            [{}, {"a": "x"}, []],
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
            },
            [{"a": 1}, {"b": 1}],
            [{}, {"a": 1, "b": 2}],
        ),
        ({"type": "string", "enum": ["x", "y"]}, ["x", "y"], ["z", 1]),
        ({"type": "number", "multipleOf": 3}, [0, 3, 9.0], [1, 4.5]),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_validation_agrees_with_jsonschema(
    schema: dict[str, Any], valid: list[Any], invalid: list[Any]
) -> None:
    reference = jsonschema.Draft4Validator(_pure_json_schema(schema))  # OpenAPI 3.0 bounds are Draft 4's
    for value in valid:
        assert reference.is_valid(value) and messages(schema, value) == [], value
    for value in invalid:
        assert not reference.is_valid(value) and messages(schema, value) != [], value


def test_the_example_rollout_is_valid_and_setweight_101_is_named() -> None:
    schema = StructuralSchema(ROLLOUT_SCHEMA)
    rollout = example_rollout()
    assert schema.validate(rollout) == []
    rollout["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = 101
    [error] = schema.validate(rollout)
    assert str(error) == (
        "spec.strategy.canary.steps[0].setWeight: Invalid value: 101: "
        "spec.strategy.canary.steps[0].setWeight in body should be less than or equal to 100"
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ((), "<root>"),
        (("spec",), "spec"),
        (("spec", "steps", 0, "setWeight"), "spec.steps[0].setWeight"),
        (("status", "conditions", 1), "status.conditions[1]"),
    ],
)
def test_render_path(path: tuple[str | int, ...], expected: str) -> None:
    assert render_path(path) == expected


# ----- Pruning -----

PRUNING_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "known": {"type": "string"},
                "nested": {"type": "object", "properties": {"a": {"type": "integer"}}},
                "open": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": True,
                    "properties": {"typed": {"type": "object", "properties": {"b": {"type": "integer"}}}},
                },
                "map": {
                    "type": "object",
                    "additionalProperties": {"type": "object", "properties": {"c": {"type": "integer"}}},
                },
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"d": {"type": "integer"}}},
                },
                "embedded": {
                    "type": "object",
                    "x-kubernetes-embedded-resource": True,
                    "properties": {"spec": {"type": "object"}},
                },
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}


@pytest.mark.parametrize(
    ("obj", "part", "expected", "unknown"),
    [
        ({"spec": {"known": "k", "extra": 1}}, Part.WHOLE, {"spec": {"known": "k"}}, ["spec.extra"]),
        (
            {"spec": {"nested": {"a": 1, "z": 2}}},
            Part.WHOLE,
            {"spec": {"nested": {"a": 1}}},
            ["spec.nested.z"],
        ),
        (
            {"spec": {"open": {"anything": {"goes": 1}, "typed": {"b": 1, "e": 2}}}},
            Part.WHOLE,
            {"spec": {"open": {"anything": {"goes": 1}, "typed": {"b": 1}}}},
            ["spec.open.typed.e"],
        ),
        (
            {"spec": {"map": {"k": {"c": 1, "f": 2}}}},
            Part.WHOLE,
            {"spec": {"map": {"k": {"c": 1}}}},
            ["spec.map.k.f"],
        ),
        (
            {"spec": {"items": [{"d": 1}, {"g": 2}]}},
            Part.WHOLE,
            {"spec": {"items": [{"d": 1}, {}]}},
            ["spec.items[1].g"],
        ),
        (
            {"spec": {"embedded": {**POD, "h": 1}}},
            Part.WHOLE,
            {"spec": {"embedded": POD}},
            ["spec.embedded.h"],
        ),
        (
            {"apiVersion": "v", "kind": "K", "metadata": {"any": 1}, "top": 1},
            Part.WHOLE,
            {"apiVersion": "v", "kind": "K", "metadata": {"any": 1}},
            ["top"],
        ),
        # A write through /status touches only the status, one through the main endpoint all but it.
        (
            {"spec": {"x": 1}, "status": {"phase": "P", "y": 2}},
            Part.STATUS,
            {"spec": {"x": 1}, "status": {"phase": "P"}},
            ["status.y"],
        ),
        (
            {"spec": {"x": 1}, "status": {"phase": "P", "y": 2}},
            Part.MAIN,
            {"spec": {}, "status": {"phase": "P", "y": 2}},
            ["spec.x"],
        ),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_pruning(obj: dict[str, Any], part: Part, expected: dict[str, Any], unknown: list[str]) -> None:
    assert StructuralSchema(PRUNING_SCHEMA).prune(obj, part) == unknown
    assert obj == expected


def test_a_root_preserving_unknown_fields_prunes_nothing_unknown() -> None:
    obj = {"spec": {"anything": 1}, "other": 2}
    assert StructuralSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}).prune(obj) == []
    assert obj == {"spec": {"anything": 1}, "other": 2}


# ----- Defaulting -----

DEFAULTING_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "default": {},
            "properties": {
                "replicas": {"type": "integer", "default": 1},
                "paused": {"type": "boolean", "default": False},
                "maybe": {"type": "string", "nullable": True, "default": "d"},
                "plain": {"type": "string"},
                "service": {"type": "object", "properties": {"port": {"type": "integer", "default": 80}}},
                "steps": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"weight": {"type": "integer", "default": 10}}},
                },
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "status": {"type": "object", "properties": {"weight": {"type": "integer", "default": 0}}},
    },
}


@pytest.mark.parametrize(
    ("obj", "part", "expected"),
    [
        ({}, Part.WHOLE, {"spec": {"replicas": 1, "paused": False, "maybe": "d"}}),  # defaults of a default
        ({"spec": {"replicas": 3}}, Part.WHOLE, {"spec": {"replicas": 3, "paused": False, "maybe": "d"}}),
        # Nulls: defaulted, dropped, kept (nullable).
        (
            {"spec": {"replicas": None, "plain": None, "maybe": None}},
            Part.WHOLE,
            {"spec": {"replicas": 1, "paused": False, "maybe": None}},
        ),
        (
            {"spec": {"service": {}, "steps": [{}, {"weight": 5}], "labels": {"a": None}}},
            Part.MAIN,
            {
                "spec": {
                    "replicas": 1,
                    "paused": False,
                    "maybe": "d",
                    "service": {"port": 80},
                    "steps": [{"weight": 10}, {"weight": 5}],
                    "labels": {},
                }
            },
        ),
        ({"spec": {}, "status": {}}, Part.STATUS, {"spec": {}, "status": {"weight": 0}}),
        ({"status": {}}, Part.MAIN, {"spec": {"replicas": 1, "paused": False, "maybe": "d"}, "status": {}}),
    ],
    ids=lambda value: repr(value)[:40],
)
def test_defaulting(obj: dict[str, Any], part: Part, expected: dict[str, Any]) -> None:
    StructuralSchema(DEFAULTING_SCHEMA).default(obj, part)
    assert obj == expected


# ----- Admission of custom objects, and of CRDs -----


def rollout_spec() -> ResourceSpec:
    [spec] = resources_from_crd(ROLLOUT_CRD)
    return spec


def admit(obj: dict[str, Any], admission: Admission) -> dict[str, Any]:
    spec = rollout_spec()
    assert spec.prepare is not None
    spec.prepare(spec, obj, admission)
    return obj


def test_admission_prunes_defaults_and_validates() -> None:
    rollout = example_rollout()
    rollout["spec"]["bogus"] = True
    admission = Admission("create", field_validation=FieldValidation.WARN)
    admitted = admit(rollout, admission)
    assert "bogus" not in admitted["spec"]
    assert admission.warnings == ['unknown field "spec.bogus"']
    assert admitted["spec"]["paused"] is False and admitted["spec"]["progressDeadlineSeconds"] == 600
    assert admitted["spec"]["strategy"]["canary"]["canaryReplicas"] == "matchWeight"


def test_strict_field_validation_refuses_unknown_fields() -> None:
    rollout = example_rollout()
    rollout["spec"]["bogus"] = True
    with pytest.raises(ApiError) as raised:
        admit(rollout, Admission("create", field_validation=FieldValidation.STRICT))
    assert (raised.value.status, raised.value.reason) == (400, "BadRequest")
    assert raised.value.message == (
        'Rollout in version "v1alpha1" cannot be handled as a Rollout: '
        'strict decoding error: unknown field "spec.bogus"'
    )


def test_an_invalid_object_is_a_422_naming_the_field() -> None:
    rollout = example_rollout()
    rollout["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = 101
    rollout["spec"]["replicas"] = -1
    with pytest.raises(ApiError) as raised:
        admit(rollout, Admission("create"))
    status = raised.value.as_status()
    assert status["code"] == 422 and status["reason"] == "Invalid"
    assert status["message"] == (
        'Rollout.sluice.dev "web" is invalid: ['
        "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0, "
        "spec.strategy.canary.steps[0].setWeight: Invalid value: 101: "
        "spec.strategy.canary.steps[0].setWeight in body should be less than or equal to 100]"
    )
    assert status["details"]["kind"] == "Rollout" and status["details"]["group"] == "sluice.dev"
    assert status["details"]["causes"][1] == {
        "reason": "FieldValueInvalid",
        "field": "spec.strategy.canary.steps[0].setWeight",
        "message": "Invalid value: 101: spec.strategy.canary.steps[0].setWeight in body should be less than "
        "or equal to 100",
    }


def test_status_writes_validate_only_the_status() -> None:
    stored = admit(example_rollout(), Admission("create"))
    stored["spec"]["replicas"] = "not validated here"  # as if stored before the schema said otherwise
    written = copy.deepcopy(stored)
    written["status"] = {"phase": "Healthy", "kopf": {"progress": {}}}
    admission = Admission("update", subresource="status", field_validation=FieldValidation.WARN, old=stored)
    admit(written, admission)
    assert written["status"]["canaryWeight"] == 0 and "kopf" not in written["status"]
    assert admission.warnings == ['unknown field "status.kopf"']

    written["status"]["phase"] = "Bogus"
    with pytest.raises(ApiError) as raised:
        admit(written, Admission("update", subresource="status", old=stored))
    # An unsupported value keeps the CEL rules from running, and the API server says so at <nil>.
    causes = raised.value.as_status()["details"]["causes"]
    assert [cause["field"] for cause in causes] == ["status.phase", "<nil>"]


def test_unchanged_fields_are_not_revalidated() -> None:
    stored = admit(example_rollout(), Admission("create"))
    stored["spec"]["replicas"] = -5  # stored before the schema forbade it
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"]["labels"] = {"team": "a"}
    admit(relabelled, Admission("update", old=stored))  # validation ratcheting: no error
    relabelled["spec"]["replicas"] = -6
    with pytest.raises(ApiError):
        admit(relabelled, Admission("update", old=stored))


def crd_with(schema: dict[str, Any] | None) -> dict[str, Any]:
    crd: dict[str, Any] = copy.deepcopy(ROLLOUT_CRD)
    version = crd["spec"]["versions"][0]
    if schema is None:
        del version["schema"]
    else:
        version["schema"]["openAPIV3Schema"] = schema
    return crd


@pytest.mark.parametrize(
    ("crd", "field", "words"),
    [
        (crd_with(None), "spec.versions[0].schema.openAPIV3Schema", "Required value: schemas are required"),
        (
            crd_with({"type": "object", "properties": {"spec": {"properties": {}}}}),
            "spec.versions[0].schema.openAPIV3Schema",
            "type must be set",
        ),
        (
            dict(ROLLOUT_CRD, metadata={"name": "wrong.sluice.dev"}),
            "metadata.name",
            'must be spec.names.plural+"."+spec.group',
        ),
    ],
)
def test_crds_are_validated(crd: dict[str, Any], field: str, words: str) -> None:
    assert CUSTOM_RESOURCE_DEFINITIONS.prepare is not None
    with pytest.raises(ApiError) as raised:
        CUSTOM_RESOURCE_DEFINITIONS.prepare(CUSTOM_RESOURCE_DEFINITIONS, crd, Admission("create"))
    [cause] = raised.value.as_status()["details"]["causes"]
    assert cause["field"] == field and words in cause["message"]


def test_field_errors_render_as_the_api_server_does() -> None:
    assert str(FieldError.required("spec.template")) == "spec.template: Required value"
    assert str(FieldError.forbidden("metadata.finalizers", "no new finalizers")) == (
        "metadata.finalizers: Forbidden: no new finalizers"
    )
    assert str(FieldError.invalid("spec.paused", True, "bad")) == "spec.paused: Invalid value: true: bad"
    assert str(FieldError(FieldErrorType.DUPLICATE, "x[1]", "a")) == 'x[1]: Duplicate value: "a"'
    assert str(FieldError.not_supported("p", None, ["a"])) == (
        'p: Unsupported value: "null": supported values: "a"'
    )
