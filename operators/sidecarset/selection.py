"""Which pods and Rollouts a SidecarSet matches: label selectors, as Kubernetes evaluates them.

A Rollout matches on its pod template's labels (what its pods will carry) and
its namespace's labels. Without a namespaceSelector every namespace but
kube-system and kube-public matches: sidecars in the control plane's own pods
are too easy to get wrong to be a default.
"""

from __future__ import annotations

from collections.abc import Mapping

from operators.api.base import LabelSelector, LabelSelectorRequirement
from operators.api.sidecarset import SidecarSetSpec
from operators.rollout.ownership import MANAGED_BY, MANAGED_BY_LABEL, ROLLOUT_LABEL

EXCLUDED_BY_DEFAULT = ("kube-system", "kube-public")


def selector_matches(selector: LabelSelector | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes semantics; an absent or empty selector matches everything."""
    if selector is None:
        return True
    if any(labels.get(key) != value for key, value in (selector.match_labels or {}).items()):
        return False
    return all(_requirement_holds(r, labels) for r in selector.match_expressions or ())


def _requirement_holds(requirement: LabelSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = requirement.key in labels
    values = requirement.values or []
    match requirement.operator:
        case "In":
            return present and labels[requirement.key] in values
        case "NotIn":
            return not present or labels[requirement.key] not in values
        case "Exists":
            return present
        case "DoesNotExist":
            return not present
    return False  # an operator the schema refuses: match nothing rather than everything


def namespace_matches(spec: SidecarSetSpec, namespace: str, namespace_labels: Mapping[str, str]) -> bool:
    if spec.namespace_selector is None:
        return namespace not in EXCLUDED_BY_DEFAULT
    return selector_matches(spec.namespace_selector, namespace_labels)


def matches(
    spec: SidecarSetSpec, labels: Mapping[str, str], namespace: str, namespace_labels: Mapping[str, str]
) -> bool:
    """Whether pods with `labels` in `namespace` get this SidecarSet's sidecars."""
    return namespace_matches(spec, namespace, namespace_labels) and selector_matches(spec.selector, labels)


def selected_for_update(spec: SidecarSetSpec, labels: Mapping[str, str]) -> bool:
    """Whether updateStrategy.selector lets a change reach pods (or a Rollout) with `labels`."""
    return selector_matches(spec.update_strategy.selector, labels)


def managed_by_sluice(labels: Mapping[str, str]) -> bool:
    """Pods of Rollouts get their sidecars at render time; the webhook and in-place updates leave them be."""
    return ROLLOUT_LABEL in labels or labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def selector_query(selector: LabelSelector) -> str:
    """The selector as a `labelSelector` query string, so the API server filters before sending."""
    terms = [f"{key}={value}" for key, value in sorted((selector.match_labels or {}).items())]
    for requirement in selector.match_expressions or ():
        values = ",".join(requirement.values or [])
        match requirement.operator:
            case "In":
                terms.append(f"{requirement.key} in ({values})")
            case "NotIn":
                terms.append(f"{requirement.key} notin ({values})")
            case "Exists":
                terms.append(requirement.key)
            case "DoesNotExist":
                terms.append(f"!{requirement.key}")
    return ",".join(terms)
