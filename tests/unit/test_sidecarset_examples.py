"""The SidecarSet examples are valid: against the generated CRD schema and the API models."""

from __future__ import annotations

from typing import Any

import pytest

from operators.api.resources import SIDECARSET
from operators.api.sidecarset import SidecarSetSpec
from operators.sidecarset.inject import inject, sidecar_from_spec
from operators.sidecarset.selection import matches
from tests.unit.test_examples import documents, errors, schema_validator

SIDECARSET_EXAMPLES = documents(SIDECARSET.kind)
ROLLOUTS = {param.values[0]["metadata"]["name"]: param.values[0] for param in documents("Rollout")}


def test_the_examples_are_found() -> None:
    assert {param.id for param in SIDECARSET_EXAMPLES} == {"sidecarset/log-agent.yaml:log-agent"}


@pytest.mark.parametrize("document", SIDECARSET_EXAMPLES)
def test_example_matches_the_crd_and_the_models(document: dict[str, Any]) -> None:
    assert errors(schema_validator(SIDECARSET), document) == []
    assert "namespace" not in document["metadata"], "SidecarSets are cluster-scoped"
    SidecarSetSpec.model_validate(document["spec"])


@pytest.mark.parametrize("document", SIDECARSET_EXAMPLES)
def test_example_injects_into_the_example_rollouts(document: dict[str, Any]) -> None:
    spec = SidecarSetSpec.model_validate(document["spec"])
    for name in ("api", "web"):
        template = ROLLOUTS[name]["spec"]["template"]
        assert matches(spec, template["metadata"]["labels"], "shop", {"env": "prod"})
        result = inject(template, [sidecar_from_spec(document["metadata"]["name"], spec)])
        assert not result.conflicts and result.injected == ("log-agent",)
