"""The vocabulary of Sluice's resource models: camelCase on the wire, durations, conditions.

Every model speaks camelCase on the wire (what users write in YAML) and
snake_case in Python. Extra keys in ``json_schema_extra`` are copied verbatim
into the generated CRD, which is how cheap validation (min/max properties,
one-of) reaches the API server. Providers (traffic, metrics) describe their
configuration with these too, which is why they live below the API package.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base of every API model: camelCase aliases, unknown keys refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=False,
    )

    def to_api(self) -> dict[str, Any]:
        """The model as the API server stores it: camelCase, no unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def describe_validation_error(error: ValidationError, prefix: str = "spec") -> str:
    """``spec.strategy.canary.steps.0: a step has exactly one of setWeight or pause``."""
    parts = []
    for item in error.errors():
        path = ".".join(str(p) for p in (prefix, *item["loc"]))
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{path}: {message}")
    return "; ".join(parts)


# Go-style durations as Kubernetes users write them: 30s, 1m30s, 500ms, 2h.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> timedelta:
    """``"1m30s"`` -> 90 seconds. Raises ValueError with the offending text."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use a number with a unit, e.g. 30s, 5m, 1h30m, 500ms")
    seconds = sum(float(num) * _UNIT_SECONDS[unit] for num, unit in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(json_schema_extra={"pattern": DURATION_PATTERN}),
]


class Condition(ApiModel):
    """A Kubernetes-style condition, as kstatus, Argo CD and Flux read them."""

    type: str
    status: str = Field(json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None
