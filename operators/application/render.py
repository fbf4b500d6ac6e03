"""An Application's desired Rollouts: each component rendered by its type (pure).

``render_application`` reads the spec and a catalog of component types and
returns, per component, the Rollout that should exist or the reason it cannot
be rendered. It talks to nobody; the reconciler compares the result with the
cluster and applies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from operators.api.application import ApplicationSpec, Component, RolloutDefaults
from operators.api.base import API_VERSION, describe_validation_error
from operators.api.refs import ApplicationRef
from operators.api.rollout import KIND as ROLLOUT_KIND
from operators.api.rollout import RolloutSpec
from operators.application.types import Catalog
from operators.rollout.ownership import MANAGED_BY, MANAGED_BY_LABEL
from operators.templating.sandbox import TemplateProblem

# On every Rollout an Application renders: which Application, so its events wake that Application.
APPLICATION_LABEL = "sluice.dev/application"
# Keys of a merged RolloutDefaults that go into the Rollout's spec; the others are its canary strategy.
SPEC_KEYS = ("progressDeadlineSeconds", "paused")
# Two ways to say the steps: an override that uses one drops the other from the defaults.
ALTERNATIVES = (("steps",), ("stepWeight", "maxWeight"))
# Without steps anywhere, a release is one step: the new version beside the old, then all of it.
DEFAULT_STEPS: list[dict[str, Any]] = [{"setWeight": 100}]


@dataclass(frozen=True)
class Rendered:
    """Per component name: the desired Rollout, or why there is none."""

    rollouts: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def render_application(ref: ApplicationRef, spec: ApplicationSpec, catalog: Catalog) -> Rendered:
    rendered = Rendered()
    for component in spec.components:
        try:
            rendered.rollouts[component.name] = render_component(ref, spec.rollout, component, catalog)
        except TemplateProblem as problem:
            rendered.errors[component.name] = str(problem)
    return rendered


def render_component(
    ref: ApplicationRef, defaults: RolloutDefaults | None, component: Component, catalog: Catalog
) -> dict[str, Any]:
    """The Rollout of one component; raises TemplateProblem with a message naming the component."""
    name = f'component "{component.name}"'
    try:
        component_type = catalog.lookup(component.type)
    except TemplateProblem as problem:
        raise TemplateProblem(f"{name}: {problem}") from None
    try:
        parts = component_type.render(template_variables(ref, component))
    except TemplateProblem as problem:
        raise TemplateProblem(f"{name} (type {component.type}): {problem}") from None
    strategy = merge_strategy(defaults, component.rollout)
    try:
        spec = rollout_spec(component, parts, strategy)
    except ValidationError as error:
        raise TemplateProblem(f"{name}: invalid Rollout: {describe_validation_error(error)}") from None
    return {
        "apiVersion": API_VERSION,
        "kind": ROLLOUT_KIND,
        "metadata": {
            "name": component.name,
            "namespace": ref.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, APPLICATION_LABEL: ref.name},
            "ownerReferences": [ref.owner_reference()],
        },
        # Complete, defaults included: the live Rollout can then be compared field for field.
        "spec": spec.to_api(),
    }


def template_variables(ref: ApplicationRef, component: Component) -> dict[str, Any]:
    """What a component type sees. Unset optional fields are there as None, so `if` works on them.

    Plain data, sent to the template worker, which names its mappings after where they sit
    (``component.properties``) for reporting undefined variables.
    """
    fields = {"name", "image", "replicas", "ports", "env", "resources", "route", "properties"}
    values = component.model_dump(by_alias=True, mode="json", include=fields)
    return {
        "component": values,
        "application": {"name": ref.name, "namespace": ref.namespace},
    }


def merge_strategy(defaults: RolloutDefaults | None, overrides: RolloutDefaults | None) -> dict[str, Any]:
    """`spec.rollout` with a component's `rollout` over it: objects deep-merged, lists replaced."""
    base = defaults.to_api() if defaults is not None else {}
    over = overrides.to_api() if overrides is not None else {}
    for group in ALTERNATIVES:
        if any(key in over for key in group):
            for other in ALTERNATIVES:
                if other != group:
                    for key in other:
                        base.pop(key, None)
    return deep_merge(base, over)


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merged key by key, anything else (lists too) replaced."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged


def rollout_spec(component: Component, parts: Mapping[str, Any], strategy: Mapping[str, Any]) -> RolloutSpec:
    """The Rollout's spec from what the type rendered and the merged strategy; raises ValidationError."""
    canary = {key: value for key, value in strategy.items() if key not in SPEC_KEYS}
    if "steps" not in canary and "stepWeight" not in canary:
        canary["steps"] = DEFAULT_STEPS
    body = {
        "replicas": component.replicas,
        **parts,
        **{key: strategy[key] for key in SPEC_KEYS if key in strategy},
        "strategy": {"canary": canary},
    }
    return RolloutSpec.model_validate(body)
