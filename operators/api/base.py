"""Shared building blocks of the Sluice API models: the group, label selectors, and the
vocabulary every model uses (`ApiModel`, durations, conditions), which lives in
`operators.foundation.model` so that providers below the API can use it too.
"""

from __future__ import annotations

from pydantic import Field

from operators.foundation.model import (
    DURATION_PATTERN,
    ApiModel,
    Condition,
    Duration,
    describe_validation_error,
    parse_duration,
)

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "DURATION_PATTERN",
    "GROUP",
    "VERSION",
    "ApiModel",
    "Condition",
    "Duration",
    "LabelSelector",
    "LabelSelectorRequirement",
    "describe_validation_error",
    "parse_duration",
]

GROUP = "sluice.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "sluice"


class LabelSelectorRequirement(ApiModel):
    key: str
    operator: str = Field(json_schema_extra={"enum": ["In", "NotIn", "Exists", "DoesNotExist"]})
    values: list[str] | None = None


class LabelSelector(ApiModel):
    """A Kubernetes label selector (matchLabels and matchExpressions)."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None
