"""CEL validation rules (x-kubernetes-validations) in the sandbox: compiled with their CRD, run by celpy."""

import copy
import pathlib
from typing import Any

import pytest
import yaml

from operators.api.application import COMPONENT_COLLISION_MESSAGE
from operators.api.rollout import NAME_MESSAGE, STRATEGY_ONE_OF
from sluice_sandbox.celcheck import rule_problems
from sluice_sandbox.celrules import compile_expression, compile_rules, escape
from sluice_sandbox.crds import CUSTOM_RESOURCE_DEFINITIONS, resources_from_crd
from sluice_sandbox.errors import ApiError
from sluice_sandbox.resources import Admission, ResourceSpec
from tests.harness import sluice_crds
from tests.reference import HTTPROUTES, ISTIO_NETWORKING, reference_file, upstream_crd

REPO = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = "spec.versions[0].schema.openAPIV3Schema"


def widget_crd(spec_schema: dict[str, Any], **root: Any) -> dict[str, Any]:
    """A CRD whose objects have the given spec (and root schema keywords, e.g. rules)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.dev"},
        "spec": {
            "group": "example.dev",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "properties": {"spec": spec_schema}, **root}
                    },
                }
            ],
        },
    }


def served(crd: dict[str, Any]) -> ResourceSpec:
    """The CRD's resource, once the CRD is admitted as the API server admits it."""
    assert CUSTOM_RESOURCE_DEFINITIONS.prepare is not None
    CUSTOM_RESOURCE_DEFINITIONS.prepare(CUSTOM_RESOURCE_DEFINITIONS, copy.deepcopy(crd), Admission("create"))
    return resources_from_crd(crd)[0]


def write(
    spec: ResourceSpec, obj: dict[str, Any], old: dict[str, Any] | None = None, name: str = "w"
) -> dict[str, Any]:
    """Admit a write of the object (an update of ``old`` if given); returns the admitted object."""
    body = copy.deepcopy(obj)
    body.setdefault("metadata", {}).setdefault("name", name)
    assert spec.prepare is not None
    spec.prepare(spec, body, Admission("update" if old else "create", old=copy.deepcopy(old)))
    return body


def refusal(spec: ResourceSpec, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Status of a write that must be refused."""
    with pytest.raises(ApiError) as raised:
        write(spec, obj, old)
    status = raised.value.as_status()
    assert (status["code"], status["reason"]) == (422, "Invalid")
    return status


def causes(status: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(cause["field"], cause["reason"], cause["message"]) for cause in status["details"]["causes"]]


def crd_refusal(crd: dict[str, Any]) -> list[tuple[str, str, str]]:
    assert CUSTOM_RESOURCE_DEFINITIONS.prepare is not None
    with pytest.raises(ApiError) as raised:
        CUSTOM_RESOURCE_DEFINITIONS.prepare(CUSTOM_RESOURCE_DEFINITIONS, crd, Admission("create"))
    status = raised.value.as_status()
    assert (status["code"], status["reason"]) == (422, "Invalid")
    return causes(status)


# ----- Sluice's own rules -----


def sluice_crd(kind: str) -> dict[str, Any]:
    return next(crd for crd in sluice_crds() if crd["spec"]["names"]["kind"] == kind)


def example_rollout() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO / "examples" / "rollout-minimal.yaml").read_text()))


def test_a_rollout_named_beyond_56_characters_is_refused_at_the_root() -> None:
    rollouts = served(sluice_crd("Rollout"))
    rollout = example_rollout()
    rollout["metadata"]["name"] = "a" * 57
    status = refusal(rollouts, rollout)
    assert status["message"] == (
        f'Rollout.sluice.dev "{"a" * 57}" is invalid: <nil>: Invalid value: "object": {NAME_MESSAGE}'
    )
    assert causes(status) == [("<nil>", "FieldValueInvalid", f'Invalid value: "object": {NAME_MESSAGE}')]
    rollout["metadata"]["name"] = "a" * 56
    assert write(rollouts, rollout)["metadata"]["name"] == "a" * 56


def test_traffic_without_a_service_is_refused_at_the_spec() -> None:
    rollouts = served(sluice_crd("Rollout"))
    rollout = example_rollout()
    rollout["spec"].pop("service", None)
    rollout["spec"]["traffic"] = {"gatewayAPI": {"httpRoute": "web"}}
    [(field, reason, message)] = causes(refusal(rollouts, rollout))
    assert (field, reason) == ("spec", "FieldValueInvalid")
    assert message.startswith('Invalid value: "object": traffic routes to the Rollout')


@pytest.mark.parametrize("blue_green", [None, {}], ids=["neither", "both"])
def test_a_strategy_needs_exactly_one_of_canary_and_blue_green(blue_green: dict[str, Any] | None) -> None:
    rollouts = served(sluice_crd("Rollout"))
    rollout = example_rollout()
    if blue_green is None:
        rollout["spec"]["strategy"] = {}
    else:
        rollout["spec"]["strategy"]["blueGreen"] = blue_green
    assert causes(refusal(rollouts, rollout)) == [
        ("spec.strategy", "FieldValueInvalid", f'Invalid value: "object": {STRATEGY_ONE_OF}')
    ]
    rollout["spec"]["strategy"] = {"blueGreen": {}}
    assert write(rollouts, rollout)["spec"]["strategy"] == {"blueGreen": {"scaleDownDelaySeconds": 30}}


def test_colliding_components_are_refused_at_the_list() -> None:
    applications = served(sluice_crd("Application"))
    component = {"type": "worker", "image": "ghcr.io/acme/web:1"}
    app = {"spec": {"components": [{"name": "cn", **component}, {"name": "cn-canary", **component}]}}
    assert causes(refusal(applications, app)) == [
        ("spec.components", "FieldValueInvalid", f'Invalid value: "array": {COMPONENT_COLLISION_MESSAGE}')
    ]


def served_kinds() -> dict[str, ResourceSpec]:
    return {crd["spec"]["names"]["kind"]: served(crd) for crd in sluice_crds()}


def test_every_example_is_still_admitted() -> None:
    kinds = served_kinds()
    admitted = 0
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") in kinds:
                write(kinds[document["kind"]], document, name=document["metadata"]["name"])
                admitted += 1
    assert admitted >= 5


# ----- Rules at every level -----


LEVELS = {
    "type": "object",
    "x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must not exceed max"}],
    "properties": {
        "min": {"type": "integer"},
        "max": {"type": "integer"},
        "ports": {
            "type": "array",
            "x-kubernetes-validations": [{"rule": "self.size() <= 2", "message": "at most two ports"}],
            "items": {
                "type": "integer",
                "x-kubernetes-validations": [{"rule": "self > 1024", "message": "unprivileged ports only"}],
            },
        },
        "labels": {
            "type": "object",
            "additionalProperties": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self.lowerAscii() == self", "message": "lowercase"}],
            },
        },
    },
}


def test_rules_at_every_level_see_the_value_there_and_are_reported_together() -> None:
    widgets = served(widget_crd(LEVELS))
    good = {"spec": {"min": 1, "max": 2, "ports": [8080], "labels": {"app": "web"}}}
    assert write(widgets, good)["spec"] == good["spec"]
    bad = {"spec": {"min": 3, "max": 2, "ports": [80, 8080, 8443], "labels": {"app": "Web", "ok": "x"}}}
    status = refusal(widgets, bad)
    assert causes(status) == [
        ("spec", "FieldValueInvalid", 'Invalid value: "object": min must not exceed max'),
        ("spec.ports", "FieldValueInvalid", 'Invalid value: "array": at most two ports'),
        ("spec.ports[0]", "FieldValueInvalid", 'Invalid value: "integer": unprivileged ports only'),
        ("spec.labels[app]", "FieldValueInvalid", 'Invalid value: "string": lowercase'),
    ]
    assert status["message"].startswith(
        'Widget.example.dev "w" is invalid: [spec: Invalid value: "object": min must not exceed max, '
    )


def test_a_rule_without_a_message_quotes_itself() -> None:
    widgets = served(widget_crd({"type": "object", "x-kubernetes-validations": [{"rule": "has(self.a)"}]}))
    assert causes(refusal(widgets, {"spec": {}})) == [
        ("spec", "FieldValueInvalid", 'Invalid value: "object": failed rule: has(self.a)')
    ]


def test_reason_field_path_and_message_expression() -> None:
    schema = {
        "type": "object",
        "properties": {"replicas": {"type": "integer"}, "tier": {"type": "string"}},
        "x-kubernetes-validations": [
            {
                "rule": "self.replicas <= 10",
                "messageExpression": "'replicas: ' + string(self.replicas) + ' is more than 10'",
                "reason": "FieldValueForbidden",
                "fieldPath": ".replicas",
            },
            {"rule": "has(self.tier)", "message": "a tier is needed", "reason": "FieldValueRequired"},
            {"rule": "false", "reason": "FieldValueDuplicate", "fieldPath": "['tier']"},
            # A messageExpression that fails falls back on the message.
            {"rule": "self.replicas < 12", "message": "fewer than 12", "messageExpression": "self.nothing"},
        ],
    }
    widgets = served(widget_crd(schema))
    assert causes(refusal(widgets, {"spec": {"replicas": 12}})) == [
        ("spec.replicas", "FieldValueForbidden", "Forbidden: replicas: 12 is more than 10"),
        ("spec", "FieldValueRequired", "Required value: a tier is needed"),
        ("spec.tier", "FieldValueDuplicate", 'Duplicate value: "object"'),
        ("spec", "FieldValueInvalid", 'Invalid value: "object": fewer than 12'),
    ]


def test_a_rule_that_fails_to_evaluate_says_why() -> None:
    widgets = served(
        widget_crd(
            {"type": "object", "x-kubernetes-validations": [{"rule": "self.size == 1", "message": "m"}]}
        )
    )
    assert causes(refusal(widgets, {"spec": {}})) == [
        ("spec", "FieldValueInvalid", 'Invalid value: "object": no such key: size evaluating rule: m')
    ]


def test_schema_errors_that_block_the_rules_are_reported_instead_of_them() -> None:
    widgets = served(widget_crd(LEVELS))
    assert causes(refusal(widgets, {"spec": {"min": "one", "max": 0}})) == [
        (
            "spec.min",
            "FieldValueTypeInvalid",
            'Invalid value: "string": spec.min in body must be of type integer: "string"',
        ),
        (
            "<nil>",
            "FieldValueInvalid",
            'Invalid value: "null": some validation rules were not checked because the object was invalid; '
            "correct the existing errors to complete validation",
        ),
    ]


def test_unchanged_values_are_not_checked_again() -> None:
    widgets = served(widget_crd(LEVELS))
    stored = {"metadata": {"name": "w"}, "spec": {"min": 3, "max": 2, "ports": [80]}}  # from before the rules
    relabelled = copy.deepcopy(stored)
    relabelled["metadata"]["labels"] = {"team": "a"}
    write(widgets, relabelled, old=stored)  # ratcheting: no error for what did not change
    relabelled["spec"]["ports"] = [81]
    assert [cause[0] for cause in causes(refusal(widgets, relabelled, old=stored))] == [
        "spec",  # the spec changed, so its rule runs again
        "spec.ports[0]",
    ]


# ----- Transition rules -----


IMMUTABLE = {
    "type": "object",
    "properties": {
        "storageClass": {
            "type": "string",
            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "storageClass is immutable"}],
        },
        "replicas": {"type": "integer"},
    },
}


def test_a_transition_rule_runs_on_updates_only() -> None:
    widgets = served(widget_crd(IMMUTABLE))
    created = write(widgets, {"spec": {"storageClass": "fast", "replicas": 1}})  # no oldSelf: not run
    scaled = copy.deepcopy(created)
    scaled["spec"]["replicas"] = 2
    write(widgets, scaled, old=created)
    moved = copy.deepcopy(created)
    moved["spec"]["storageClass"] = "slow"
    assert causes(refusal(widgets, moved, old=created)) == [
        ("spec.storageClass", "FieldValueInvalid", 'Invalid value: "string": storageClass is immutable')
    ]
    # A field that is new on this update has no old self: its transition rules do not run.
    added = copy.deepcopy(created)
    del added["spec"]["storageClass"]
    write(widgets, {**added, "spec": {**added["spec"], "storageClass": "any"}}, old=added)


MAP_LIST = {
    "type": "object",
    "properties": {
        "volumes": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "size": {"type": "integer"}},
                "x-kubernetes-validations": [
                    {"rule": "self.size >= oldSelf.size", "message": "a volume cannot shrink"}
                ],
            },
        }
    },
}


def test_map_list_items_correlate_with_their_old_selves_by_key() -> None:
    widgets = served(widget_crd(MAP_LIST))
    created = write(widgets, {"spec": {"volumes": [{"name": "a", "size": 5}, {"name": "b", "size": 1}]}})
    # Reordered, one grown and one new: each item meets its old self by name, "c" has none.
    grown = {
        "spec": {"volumes": [{"name": "c", "size": 0}, {"name": "b", "size": 2}, {"name": "a", "size": 5}]}
    }
    write(widgets, {**created, **grown}, old=created)
    shrunk = {"spec": {"volumes": [{"name": "b", "size": 1}, {"name": "a", "size": 4}]}}
    assert causes(refusal(widgets, {**created, **shrunk}, old=created)) == [
        ("spec.volumes[1]", "FieldValueInvalid", 'Invalid value: "object": a volume cannot shrink')
    ]


def test_oldself_where_it_cannot_correlate_refuses_the_crd() -> None:
    atomic = copy.deepcopy(MAP_LIST)
    del atomic["properties"]["volumes"]["x-kubernetes-list-type"]
    del atomic["properties"]["volumes"]["x-kubernetes-list-map-keys"]
    [(field, reason, message)] = crd_refusal(widget_crd(atomic))
    assert field == f"{SCHEMA}.properties[spec].properties[volumes].items.x-kubernetes-validations[0].rule"
    assert reason == "FieldValueInvalid"
    assert "oldSelf cannot be used on the uncorrelatable portion of the schema" in message


def test_optional_old_self_runs_on_creates_too() -> None:
    rule = {
        "rule": "!oldSelf.hasValue() ? self <= 3 : self >= oldSelf.value()",
        "message": "starts at most at 3, then only grows",
        "optionalOldSelf": True,
    }
    widgets = served(
        widget_crd(
            {"type": "object", "properties": {"n": {"type": "integer", "x-kubernetes-validations": [rule]}}}
        )
    )
    refusal(widgets, {"spec": {"n": 4}})
    created = write(widgets, {"spec": {"n": 3}})
    write(widgets, {**created, "spec": {"n": 9}}, old=created)
    assert causes(refusal(widgets, {**created, "spec": {"n": 2}}, old=created))[0][0] == "spec.n"


# ----- Compiling: once, and a rule that does not compile refuses its CRD -----


@pytest.mark.parametrize(
    ("entry", "where", "words"),
    [
        ({"rule": "self.a =="}, "rule", "compilation failed: ERROR: <input>:1:8: Syntax error"),
        ({"rule": "self.url.isURL()"}, "rule", "undeclared reference to 'isURL'"),
        ({"rule": "sefl.a == 1"}, "rule", "undeclared reference to 'sefl'"),
        (
            {"rule": "true", "messageExpression": "'a' +"},
            "messageExpression",
            "messageExpression compilation failed",
        ),
        ({"rule": "true", "reason": "FieldValueWrong"}, "reason", 'Unsupported value: "FieldValueWrong"'),
        ({"rule": "true", "fieldPath": ".nothing"}, "fieldPath", "does not refer to a valid field"),
        (
            {"rule": "true", "optionalOldSelf": True},
            "optionalOldSelf",
            "may not be set if oldSelf is not used",
        ),
        ({"message": "no rule"}, "rule", "Required value"),
    ],
)
def test_a_rule_that_does_not_compile_refuses_the_crd(entry: dict[str, Any], where: str, words: str) -> None:
    crd = widget_crd(
        {"type": "object", "properties": {"a": {"type": "integer"}}, "x-kubernetes-validations": [entry]}
    )
    [(field, _, message)] = crd_refusal(crd)
    assert field == f"{SCHEMA}.properties[spec].x-kubernetes-validations[0].{where}"
    assert words in message


def test_the_refused_rule_is_shown_as_the_api_server_shows_it() -> None:
    crd = widget_crd({"type": "object", "x-kubernetes-validations": [{"rule": "self.a ==", "message": "m"}]})
    [(_, _, message)] = crd_refusal(crd)
    assert message.startswith(
        'Invalid value: apiextensions.ValidationRule{Rule:"self.a ==", Message:"m", MessageExpression:"", '
        'Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:"", OptionalOldSelf:(*bool)(nil)}: '
        "compilation failed: "
    )


def test_a_rule_is_compiled_once_per_text() -> None:
    crd = widget_crd(LEVELS)
    served(crd)  # the CRD's validation and its served resource: compiled by now
    before = compile_expression.cache_info()
    served(crd)
    resources_from_crd(crd)
    after = compile_expression.cache_info()
    assert after.misses == before.misses and after.hits > before.hits


def test_a_schema_without_rules_has_no_rule_tree() -> None:
    assert compile_rules({"type": "object", "properties": {"a": {"type": "string"}}}) is None


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("namespace", "__namespace__"),
        ("a-b", "a__dash__b"),
        ("x.y/z", "x__dot__y__slash__z"),
        ("a__b", "a__underscores__b"),
        ("plain", "plain"),
        ("1st", None),
    ],
)
def test_property_names_are_escaped_as_kubernetes_escapes_them(name: str, escaped: str | None) -> None:
    assert escape(name) == escaped


# ----- The Kubernetes library -----


@pytest.mark.parametrize(
    "rule",
    [
        "'AbC'.lowerAscii() == 'abc' && 'AbC'.upperAscii() == 'ABC' && '  x '.trim() == 'x'",
        "'a,b,c'.split(',') == ['a', 'b', 'c'] && ['a', 'b'].join('-') == 'a-b' && ['a'].join() == 'a'",
        "'hello'.indexOf('l') == 2 && 'hello'.lastIndexOf('l') == 3 && [1, 2, 1].lastIndexOf(1) == 2",
        "'hello'.substring(1, 3) == 'el' && 'hello'.charAt(1) == 'e' && 'aaa'.replace('a', 'b', 2) == 'bba'",
        "[1, 2, 3].isSorted() && ![2, 1].isSorted() && [1, 2, 3].sum() == 6 && [1, 5, 2].max() == 5",
        "[3, 1, 2].min() == 1 && [1, 2].exists_one(x, x == 2) && [1, 2].filter(x, x > 1) == [2]",
        "duration('1h30m') > duration('90s') && 'abc'.matches('^[a-c]+$') && 'abc'.contains('b')",
    ],
)
def test_the_kubernetes_library_functions(rule: str) -> None:
    widgets = served(widget_crd({"type": "object", "x-kubernetes-validations": [{"rule": rule}]}))
    write(widgets, {"spec": {}})


# ----- Upstream CRDs: every rule compiles, and HTTPRoute's are enforced -----


@pytest.mark.parametrize("relative", [HTTPROUTES, ISTIO_NETWORKING])
def test_every_rule_of_the_upstream_crds_compiles(relative: str) -> None:
    for crd in yaml.safe_load_all(reference_file(relative).read_text()):
        for index, version in enumerate(crd["spec"]["versions"]):
            schema = version["schema"]["openAPIV3Schema"]
            assert rule_problems(schema, f"spec.versions[{index}]") == []
        assert served(crd).kind in ("HTTPRoute", "VirtualService", "DestinationRule")


def route(**rule: Any) -> dict[str, Any]:
    backends = [{"name": "web", "port": 80, "weight": 90}, {"name": "web-canary", "port": 80, "weight": 10}]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"parentRefs": [{"name": "gateway"}], "rules": [{"backendRefs": backends, **rule}]},
    }


def test_an_httproute_as_sluice_writes_it_is_admitted() -> None:
    routes = served(upstream_crd(HTTPROUTES))
    admitted = write(routes, route())
    assert admitted["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]


def test_httproute_rules_are_enforced() -> None:
    routes = served(upstream_crd(HTTPROUTES))
    bad = route(
        matches=[{"path": {"type": "Exact", "value": "a//b"}}],
        timeouts={"request": "1s", "backendRequest": "2s"},
    )
    bad["spec"]["parentRefs"] = [{"name": "gateway"}, {"name": "gateway", "sectionName": "https"}]
    assert [(field, message.split(": ", 2)[2]) for field, _, message in causes(refusal(routes, bad))] == [
        (
            "spec.parentRefs",
            "sectionName must be specified when parentRefs includes 2 or more references to the same parent",
        ),
        (
            "spec.rules[0].matches[0].path",
            "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
        ),
        ("spec.rules[0].matches[0].path", "must not contain '//' when type one of ['Exact', 'PathPrefix']"),
        ("spec.rules[0].timeouts", "backendRequest timeout cannot be longer than request timeout"),
    ]


def test_httproute_parent_refs_in_other_namespaces_are_told_apart() -> None:
    """The rule reads `namespace` as `__namespace__`: CEL reserves the word."""
    routes = served(upstream_crd(HTTPROUTES))
    two = route()
    two["spec"]["parentRefs"] = [{"name": "gateway", "namespace": "a"}, {"name": "gateway", "namespace": "b"}]
    write(routes, two)
    two["spec"]["parentRefs"][1]["namespace"] = "a"
    assert causes(refusal(routes, two))[0][0] == "spec.parentRefs"
