"""Names and images that cannot exist are refused, at admission and by the operator, in the same words.

Issue 9: a 60-character Rollout (its 67-character canary Service), components
`cn` and `cn-canary` (one's canary objects are the other's stable ones), and a
SidecarSet image `NOT A VALID IMAGE::@@` were all accepted. Each rule is here
three times: the model refuses it (what the operator reports), the generated
CRD carries it (what the API server refuses), and both say the same thing.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from operators.api.application import (
    COMPONENT_COLLISION_MESSAGE,
    COMPONENT_COLLISION_RULE,
    COMPONENTS_MAX,
    ApplicationSpec,
)
from operators.api.base import IMAGE_PATTERN, describe_validation_error
from operators.api.crdgen import build_crd
from operators.api.refs import RolloutRef
from operators.api.resources import APPLICATION, ROLLOUT, SIDECARSET, ResourceType
from operators.api.rollout import NAME_MAX, NAME_MESSAGE, NAME_RULE, RolloutStatus
from operators.api.sidecarset import SidecarSetSpec
from operators.rollout import engine
from operators.rollout.inventory import managed_keys
from operators.rollout.render import name_problems, object_name
from operators.traffic.gateway_api import GatewayAPITraffic
from tests.unit.engine_world import make_spec
from tests.unit.test_crds import node_at, openapi_schema

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DIGEST = "sha256:" + "0123456789abcdef" * 4

GOOD_IMAGES = [
    "nginx",
    "nginx:1.27",
    "ghcr.io/acme/web:1.4.2",
    "localhost:5000/a/b:dev",
    "fluent-bit:3.1",
    "fluent/fluent-bit:3.1.9",
    "registry.k8s.io/pause:3.9",
    f"busybox@{DIGEST}",
    f"docker.io/library/nginx:1.27@{DIGEST}",
    "[::1]:5000/team/app:v2",
    "a__b/c---d.e_f:Tag_1.x-y",
    "Registry.Example.COM:443/app",  # a host may have capitals; the path may not
    "true",  # a lowercase path component, whatever YAML makes of it
]
BAD_IMAGES = [
    "NOT A VALID IMAGE::@@",
    "Nginx",  # upper case in the path
    "nginx:",  # empty tag
    "nginx:-1",  # a tag starts with a word character
    "nginx:" + "x" * 129,  # a tag has at most 128 characters
    "a//b",
    "a/",
    "-a",
    "a_",
    "a___b",  # separators: ".", "_", "__" or dashes
    "nginx@sha256:abc",  # a digest has at least 32 hex digits
    "img:1 # not a comment",
    "web:1\n",
]


# ---- Rollout names ------------------------------------------------------------------------------------


def ref(name: str) -> RolloutRef:
    return RolloutRef(name=name, namespace="shop", uid="uid")


@pytest.mark.parametrize(
    "name", ["web", "a", "w" * NAME_MAX, "web-2", "a1"], ids=["web", "one-letter", "longest", "dash", "digit"]
)
def test_names_that_can_exist_have_no_problems(name: str) -> None:
    assert name_problems(ref(name)) == []
    assert len(object_name(ref(name), "canary")) <= 63


@pytest.mark.parametrize(
    "name",
    ["w" * (NAME_MAX + 1), "w" * 60, "1web", "web.v2", "web-", "Web"],
    ids=["57-characters", "60-characters", "digit-first", "dot", "dash-last", "upper-case"],
)
def test_names_that_cannot_exist_say_why(name: str) -> None:
    [problem] = name_problems(ref(name))
    assert problem == f"invalid name {name!r} ({len(name)} characters): {NAME_MESSAGE}"


def test_the_message_explains_the_limit() -> None:
    assert NAME_MAX == 56
    assert "DNS-1035 label of at most 56 characters" in NAME_MESSAGE
    assert "its canary Service is <name>-canary" in NAME_MESSAGE


def test_the_engine_blocks_a_long_name_with_invalid_spec_and_plans_nothing() -> None:
    name = "w" * 60
    spec = make_spec()
    observed = engine.Observed(
        ref=ref(name),
        generation=1,
        annotations={},
        effective_template=spec.template,
        objects=dict.fromkeys(managed_keys(ref(name), spec)),
    )
    plan = engine.reconcile(spec, RolloutStatus(), observed, NOW)
    assert plan.objects == []
    stalled = {c.type: c for c in plan.status.conditions}["Stalled"]
    assert (stalled.status, stalled.reason) == ("True", "InvalidSpec")
    assert NAME_MESSAGE in plan.status.message
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]


def test_the_rollout_crd_has_the_name_rule_at_its_root() -> None:
    root = openapi_schema(build_crd(ROLLOUT))
    assert root["x-kubernetes-validations"] == [NAME_RULE]
    assert NAME_RULE == {
        "rule": "size(self.metadata.name) <= 56 "
        "&& self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "message": NAME_MESSAGE,
    }
    # Not on spec: CEL there cannot see metadata.
    assert "x-kubernetes-validations" not in root["properties"]["metadata"]


def test_only_the_rollout_has_rules_on_its_root() -> None:
    for resource in (APPLICATION, SIDECARSET):
        assert "x-kubernetes-validations" not in openapi_schema(build_crd(resource))


# ---- httpRoute ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["web", "web.shop", "a" * 253, "web-2.v1"])
def test_an_http_route_name_is_a_dns_subdomain(route: str) -> None:
    assert GatewayAPITraffic.model_validate({"httpRoute": route}).http_route == route


@pytest.mark.parametrize("route", ["Web", "web_route", "-web", "web.", "a" * 254, "web..shop"])
def test_an_http_route_name_that_cannot_exist_is_refused(route: str) -> None:
    with pytest.raises(ValidationError, match="httpRoute"):
        GatewayAPITraffic.model_validate({"httpRoute": route})


@pytest.mark.parametrize("resource", [ROLLOUT, APPLICATION], ids=lambda r: r.kind)
def test_the_crds_bound_the_http_route_name(resource: ResourceType) -> None:
    dotted = {
        ROLLOUT.kind: "spec.traffic.gatewayAPI.httpRoute",
        APPLICATION.kind: "spec.components.items.route.httpRoute",
    }[resource.kind]
    node = node_at(openapi_schema(build_crd(resource)), dotted)
    assert node["maxLength"] == 253
    assert re.fullmatch(node["pattern"], "web.shop") and not re.fullmatch(node["pattern"], "Web")


# ---- Application components ---------------------------------------------------------------------------


def components(*names: str) -> dict[str, Any]:
    return {"components": [{"name": n, "type": "worker", "image": "ghcr.io/acme/w:1"} for n in names]}


@pytest.mark.parametrize(
    ("names", "pairs"),
    [
        (("cn", "cn-canary"), [("cn", "cn-canary")]),
        (("cn-canary", "cn"), [("cn", "cn-canary")]),
        (("a", "a-canary", "a-canary-canary"), [("a", "a-canary"), ("a-canary", "a-canary-canary")]),
    ],
    ids=["cn-first", "cn-canary-first", "a-chain"],
)
def test_components_whose_names_collide_are_refused(
    names: tuple[str, ...], pairs: list[tuple[str, str]]
) -> None:
    with pytest.raises(ValidationError) as refused:
        ApplicationSpec.model_validate(components(*names))
    message = describe_validation_error(refused.value)
    for stable, canary in pairs:
        assert f'components "{stable}" and "{canary}"' in message
    assert message.endswith(f"collide: {COMPONENT_COLLISION_MESSAGE}")


@pytest.mark.parametrize(
    "names", [("web", "worker"), ("canary", "web-canary"), ("web", "web-canary2"), ("web-canary",)]
)
def test_names_merely_like_a_canary_are_fine(names: tuple[str, ...]) -> None:
    ApplicationSpec.model_validate(components(*names))


def test_the_application_crd_has_the_collision_rule_on_its_components() -> None:
    node = node_at(openapi_schema(build_crd(APPLICATION)), "spec.components")
    assert node["x-kubernetes-validations"] == [COMPONENT_COLLISION_RULE]
    assert COMPONENT_COLLISION_RULE["rule"] == "self.all(c, !self.exists(d, c.name == d.name + '-canary'))"
    assert COMPONENT_COLLISION_RULE["message"] == COMPONENT_COLLISION_MESSAGE
    # The rule compares every pair: the API server wants a bound to estimate its cost.
    assert node["maxItems"] == COMPONENTS_MAX
    names = node_at(openapi_schema(build_crd(APPLICATION)), "spec.components.items.name")
    assert names["maxLength"] == NAME_MAX and "name" in node["items"]["required"]


def test_too_many_components_are_refused() -> None:
    names = [f"c{i}" for i in range(COMPONENTS_MAX + 1)]
    with pytest.raises(ValidationError, match=f"at most {COMPONENTS_MAX} items"):
        ApplicationSpec.model_validate(components(*names))


# ---- images -------------------------------------------------------------------------------------------


def sidecarset(image: str, init: bool = False) -> dict[str, Any]:
    containers = [{"name": "agent", "image": image}]
    return {"selector": {}, "initContainers" if init else "containers": containers}


def application(image: str) -> dict[str, Any]:
    return {"components": [{"name": "web", "type": "worker", "image": image}]}


MODELS = [
    pytest.param(lambda image: SidecarSetSpec.model_validate(sidecarset(image)), id="sidecar"),
    pytest.param(lambda image: SidecarSetSpec.model_validate(sidecarset(image, init=True)), id="init"),
    pytest.param(lambda image: ApplicationSpec.model_validate(application(image)), id="component"),
]


@pytest.mark.parametrize("validate", MODELS)
@pytest.mark.parametrize("image", GOOD_IMAGES)
def test_models_take_image_references(validate: Any, image: str) -> None:
    validate(image)


@pytest.mark.parametrize("validate", MODELS)
@pytest.mark.parametrize("image", BAD_IMAGES)
def test_models_refuse_what_is_no_image_reference(validate: Any, image: str) -> None:
    with pytest.raises(ValidationError) as refused:
        validate(image)
    message = describe_validation_error(refused.value)
    assert f"invalid image {image!r}: an image reference is [registry[:port]/]name[:tag][@digest]" in message


def test_the_models_pattern_and_words_agree() -> None:
    with pytest.raises(ValidationError) as refused:
        SidecarSetSpec.model_validate(sidecarset("NOT A VALID IMAGE::@@"))
    assert describe_validation_error(refused.value) == (
        "spec.containers.0.image: invalid image 'NOT A VALID IMAGE::@@': an image reference is "
        "[registry[:port]/]name[:tag][@digest] with a lowercase name, e.g. ghcr.io/acme/web:1.4.2 "
        "or busybox@sha256:<64 hex digits>"
    )


IMAGE_FIELDS = [
    (SIDECARSET, "spec.containers.items.image"),
    (SIDECARSET, "spec.initContainers.items.image"),
    (APPLICATION, "spec.components.items.image"),
]


@pytest.mark.parametrize(("resource", "dotted"), IMAGE_FIELDS, ids=lambda x: getattr(x, "kind", x))
def test_the_crds_carry_the_image_pattern(resource: ResourceType, dotted: str) -> None:
    node = node_at(openapi_schema(build_crd(resource)), dotted)
    assert (node["type"], node["pattern"], node["minLength"]) == ("string", IMAGE_PATTERN, 1)
    assert node["description"].startswith("The container image: [registry[:port]/]name[:tag][@digest]")


def test_the_rollout_pod_template_is_kept_whole() -> None:
    image = node_at(openapi_schema(build_crd(ROLLOUT)), "spec.template.spec.containers.items.image")
    assert image == {"type": "string"}
    # The pod template is a PodTemplateSpec kept whole: the kubelet judges its images.
    assert make_spec(image="NOT A VALID IMAGE::@@").template["spec"]["containers"][0]["image"]


def schema_errors(resource: ResourceType, document: dict[str, Any]) -> list[str]:
    """What an OpenAPI validator (as the API server's) says of `document` (see test_examples.py)."""
    schema = openapi_schema(build_crd(resource))
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.validator}"
        for e in jsonschema.Draft4Validator(schema).iter_errors(document)
    ]


def as_object(resource: ResourceType, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": resource.kind,
        "metadata": {"name": "x"},
        "spec": spec,
    }


@pytest.mark.parametrize("image", GOOD_IMAGES)
def test_the_schema_admits_image_references(image: str) -> None:
    assert schema_errors(SIDECARSET, as_object(SIDECARSET, sidecarset(image))) == []
    assert schema_errors(APPLICATION, as_object(APPLICATION, application(image))) == []


@pytest.mark.parametrize("image", [i for i in BAD_IMAGES if not i.endswith("\n")])
def test_the_schema_refuses_what_is_no_image_reference(image: str) -> None:
    # (A trailing newline passes Python's `$`, unlike Go's; the models refuse it, see above.)
    assert schema_errors(SIDECARSET, as_object(SIDECARSET, sidecarset(image))) == [
        "spec.containers.0.image: pattern"
    ]
    init = as_object(SIDECARSET, sidecarset(image, init=True))
    assert schema_errors(SIDECARSET, init) == ["spec.initContainers.0.image: pattern"]
    assert schema_errors(APPLICATION, as_object(APPLICATION, application(image))) == [
        "spec.components.0.image: pattern"
    ]


@pytest.mark.parametrize(
    "image", ["a" * 20_000 + "!", "a-" * 10_000 + "!", "a." * 10_000 + "/!", ("a.b:1/" * 2_000) + "!"]
)
def test_the_pattern_fails_fast_on_long_input(image: str) -> None:
    # Python's backtracking engine (the sandbox, jsonschema) must not take long to say no.
    pattern = re.compile(IMAGE_PATTERN)
    started = time.monotonic()
    assert pattern.fullmatch(image) is None
    assert time.monotonic() - started < 1
