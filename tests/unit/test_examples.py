"""The examples are valid Rollouts and Applications, and the CRD schema rejects the common mistakes.

The API server validates with the CRD's openAPIV3Schema; `jsonschema` stands in
for it here. Draft 4 is the JSON Schema draft OpenAPI v3.0 schemas follow (a
boolean ``exclusiveMinimum``), and it ignores the ``x-kubernetes-*`` keys.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from operators.api.application import ApplicationSpec
from operators.api.crdgen import build_crd
from operators.api.refs import ApplicationRef
from operators.api.resources import APPLICATION, ROLLOUT, ResourceType
from operators.api.rollout import RolloutSpec
from operators.application.render import render_application
from operators.application.types import ComponentTypes

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
COMPONENT_TYPES = EXAMPLES / "application" / "component-types"


def documents(kind: str) -> list[Any]:
    params = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == kind:
                params.append(pytest.param(doc, id=f"{path.relative_to(EXAMPLES)}:{doc['metadata']['name']}"))
    return params


ROLLOUT_EXAMPLES = documents(ROLLOUT.kind)
APPLICATION_EXAMPLES = documents(APPLICATION.kind)


def schema_validator(resource: ResourceType) -> jsonschema.Draft4Validator:
    schema = build_crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft4Validator:
    return schema_validator(ROLLOUT)


def errors(validator: jsonschema.Draft4Validator, document: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_examples_are_found() -> None:
    # Guards the parametrized tests below against passing on an empty list.
    names = {param.id.split(":")[0] for param in ROLLOUT_EXAMPLES if param.id}
    assert {"rollout-minimal.yaml", "rollout-analysis.yaml"} <= names


@pytest.mark.parametrize("document", ROLLOUT_EXAMPLES)
def test_example_matches_the_crd_schema(
    validator: jsonschema.Draft4Validator, document: dict[str, Any]
) -> None:
    assert document["apiVersion"] == "sluice.dev/v1alpha1"
    assert errors(validator, document) == []


@pytest.mark.parametrize("document", ROLLOUT_EXAMPLES)
def test_example_parses_with_the_models(document: dict[str, Any]) -> None:
    RolloutSpec.model_validate(document["spec"])


def test_the_application_examples_are_found() -> None:
    names = {param.id.split(":")[0] for param in APPLICATION_EXAMPLES if param.id}
    assert {"application/shop.yaml", "application/internal-api.yaml"} <= names


@pytest.mark.parametrize("document", APPLICATION_EXAMPLES)
def test_application_example_matches_the_crd_and_the_models(document: dict[str, Any]) -> None:
    assert errors(schema_validator(APPLICATION), document) == []
    ApplicationSpec.model_validate(document["spec"])


@pytest.mark.parametrize("document", APPLICATION_EXAMPLES)
def test_application_example_renders_valid_rollouts(
    validator: jsonschema.Draft4Validator, document: dict[str, Any]
) -> None:
    # With the example's own component type installed, as its comments say to.
    spec = ApplicationSpec.model_validate(document["spec"])
    ref = ApplicationRef(document["metadata"]["name"], document["metadata"]["namespace"], "uid")
    rendered = render_application(ref, spec, ComponentTypes(COMPONENT_TYPES).catalog())
    assert rendered.errors == {}
    assert sorted(rendered.rollouts) == sorted(c.name for c in spec.components)
    for rollout in rendered.rollouts.values():
        assert errors(validator, rollout) == []


def test_shop_example_has_a_canaried_web_and_a_worker() -> None:
    doc = yaml.safe_load((EXAMPLES / "application" / "shop.yaml").read_text())
    spec = ApplicationSpec.model_validate(doc["spec"])
    rendered = render_application(ApplicationRef("shop", "shop", "uid"), spec, ComponentTypes().catalog())
    web, worker = RolloutSpec.model_validate(rendered.rollouts["web"]["spec"]), rendered.rollouts["worker"]
    assert web.traffic is not None and web.strategy.canary.analysis is not None
    assert "service" not in worker["spec"] and "traffic" not in worker["spec"]


def test_readme_application_renders() -> None:
    # The README's GitOps section shows an Application inline; it must be one that works.
    readme = (REPO / "README.md").read_text()
    start = readme.index("```yaml\napiVersion: sluice.dev/v1alpha1\nkind: Application")
    doc = yaml.safe_load(readme[start + len("```yaml\n") : readme.index("```", start + 3)])
    spec = ApplicationSpec.model_validate(doc["spec"])
    rendered = render_application(ApplicationRef("shop", "shop", "uid"), spec, ComponentTypes().catalog())
    assert rendered.errors == {} and sorted(rendered.rollouts) == ["web", "worker"]


def test_analysis_example_shows_both_kinds_of_pause_and_metric() -> None:
    doc = yaml.safe_load((EXAMPLES / "rollout-analysis.yaml").read_text())
    canary = RolloutSpec.model_validate(doc["spec"]).strategy.canary
    pauses = [step.pause for step in canary.steps or [] if step.pause is not None]
    assert {pause.duration is None for pause in pauses} == {True, False}
    assert canary.analysis is not None
    metrics = canary.analysis.metrics
    assert any(m.query for m in metrics)
    assert any(m.template == "request-duration-p99" for m in metrics)


# --- invalid Rollouts -------------------------------------------------------

BASE: dict[str, Any] = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "web"},
    "spec": {
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "ghcr.io/acme/web:1.0.0"}]},
        },
        "service": {"port": 80},
        "traffic": {"gatewayAPI": {"parentRefs": [{"name": "public"}]}},
        "strategy": {
            "canary": {
                "steps": [{"setWeight": 20}, {"pause": {"duration": "30s"}}, {"setWeight": 100}],
                "analysis": {
                    "interval": "30s",
                    "metrics": [
                        {"name": "error-rate", "query": "vector(0)", "thresholdRange": {"max": 0.01}},
                    ],
                },
            }
        },
    },
}

Mutation = Callable[[dict[str, Any]], None]


def canary(doc: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = doc["spec"]["strategy"]["canary"]
    return node


def metric(doc: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = canary(doc)["analysis"]["metrics"][0]
    return node


def set_weight(weight: int) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        canary(doc)["steps"][0]["setWeight"] = weight

    return mutate


def no_steps(doc: dict[str, Any]) -> None:
    canary(doc)["steps"] = []


def weight_and_pause(doc: dict[str, Any]) -> None:
    canary(doc)["steps"][0] = {"setWeight": 20, "pause": {}}


def no_traffic_provider(doc: dict[str, Any]) -> None:
    doc["spec"]["traffic"] = {}


def empty_threshold_range(doc: dict[str, Any]) -> None:
    metric(doc)["thresholdRange"] = {}


def query_and_template(doc: dict[str, Any]) -> None:
    metric(doc)["template"] = "request-duration-p99"


def worded_duration(doc: dict[str, Any]) -> None:
    canary(doc)["steps"][1]["pause"]["duration"] = "30 seconds"


CANARY = ["spec", "strategy", "canary"]
METRIC = [*CANARY, "analysis", "metrics", 0]

INVALID = [
    pytest.param(set_weight(101), [*CANARY, "steps", 0, "setWeight"], "maximum", id="weight-101"),
    pytest.param(set_weight(-1), [*CANARY, "steps", 0, "setWeight"], "minimum", id="weight-negative"),
    pytest.param(no_steps, [*CANARY, "steps"], "minItems", id="zero-steps"),
    pytest.param(weight_and_pause, [*CANARY, "steps", 0], "maxProperties", id="setWeight-and-pause"),
    pytest.param(no_traffic_provider, ["spec", "traffic"], "minProperties", id="traffic-without-provider"),
    pytest.param(
        empty_threshold_range, [*METRIC, "thresholdRange"], "minProperties", id="empty-thresholdRange"
    ),
    pytest.param(query_and_template, METRIC, "oneOf", id="query-and-template"),
    pytest.param(
        worded_duration, [*CANARY, "steps", 1, "pause", "duration"], "pattern", id="duration-in-words"
    ),
]


def test_the_base_rollout_is_valid(validator: jsonschema.Draft4Validator) -> None:
    # Otherwise the rejections below could be about something else.
    assert errors(validator, BASE) == []
    RolloutSpec.model_validate(BASE["spec"])


@pytest.mark.parametrize(("mutate", "path", "rule"), INVALID)
def test_schema_rejects(
    validator: jsonschema.Draft4Validator, mutate: Mutation, path: list[str | int], rule: str
) -> None:
    doc = copy.deepcopy(BASE)
    mutate(doc)
    found = [(list(e.absolute_path), e.validator) for e in validator.iter_errors(doc)]
    assert (path, rule) in found, found


@pytest.mark.parametrize(("mutate", "path", "rule"), INVALID)
def test_models_reject_them_too(mutate: Mutation, path: list[str | int], rule: str) -> None:
    # The schema is the cheap first line; the models must never be laxer.
    doc = copy.deepcopy(BASE)
    mutate(doc)
    with pytest.raises(ValidationError):
        RolloutSpec.model_validate(doc["spec"])
