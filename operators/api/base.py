"""Shared building blocks of the Sluice API models: the group, label selectors, and the
vocabulary every model uses (`ApiModel`, durations, conditions), which lives in
`operators.foundation.model` so that providers below the API can use it too.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

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
    "IMAGE_PATTERN",
    "VERSION",
    "ApiModel",
    "Condition",
    "Duration",
    "Image",
    "LabelSelector",
    "LabelSelectorRequirement",
    "describe_validation_error",
    "parse_duration",
]

GROUP = "sluice.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "sluice"

# A container image reference, in the grammar of distribution's `reference` package (what
# Docker, containerd and the kubelet parse): [host[:port]/]path[:tag][@algorithm:hex]. The
# host is a DNS name or a bracketed IPv6 address; the path is lowercase components of
# alphanumerics joined by ".", "_", "__" or dashes, separated by "/". Character classes are
# spelled out (no \w) so that Go's RE2 (the API server), Rust (pydantic) and Python agree.
_ALPHANUMERIC = "[a-z0-9]+"
_PATH_COMPONENT = f"{_ALPHANUMERIC}(?:(?:[._]|__|-+){_ALPHANUMERIC})*"
_HOST_COMPONENT = "[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_NAME = f"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_PATTERN = f"^{_NAME}(?::{_TAG})?(?:@{_DIGEST})?$"
IMAGE_HELP = (
    "an image reference is [registry[:port]/]name[:tag][@digest] with a lowercase name, "
    "e.g. ghcr.io/acme/web:1.4.2 or busybox@sha256:<64 hex digits>"
)
_IMAGE = re.compile(IMAGE_PATTERN)


def _check_image(reference: str) -> str:
    if not _IMAGE.fullmatch(reference):
        raise ValueError(f"invalid image {reference!r}: {IMAGE_HELP}")
    return reference


# The pattern reaches the CRD (the API server refuses a bad image at admission with a 422);
# the validator says the same, in words, wherever a model is read.
Image = Annotated[
    str,
    AfterValidator(_check_image),
    Field(
        min_length=1,
        description="The container image: [registry[:port]/]name[:tag][@digest], "
        "e.g. ghcr.io/acme/web:1.4.2.",
        json_schema_extra={"pattern": IMAGE_PATTERN},
    ),
]


class LabelSelectorRequirement(ApiModel):
    key: str
    operator: str = Field(json_schema_extra={"enum": ["In", "NotIn", "Exists", "DoesNotExist"]})
    values: list[str] | None = None


class LabelSelector(ApiModel):
    """A Kubernetes label selector (matchLabels and matchExpressions)."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None
