"""
API errors as the Kubernetes API server words them: ``kind: Status`` bodies, and the field errors
of a 422 Invalid (``k8s.io/apimachinery/pkg/util/validation/field``), which kubectl prints as
``The Rollout "web" is invalid: spec.replicas: Invalid value: -1: …``.
"""

import dataclasses
import enum
import json
from collections.abc import Iterable, Sequence
from typing import Any, Self

import attrs
import kmock

from sluice_sandbox.resources import JsonObject, ResourceSpec


class FieldErrorType(enum.Enum):
    """The cause types of field errors: (the ``reason`` of a cause, the words its message starts with)."""

    REQUIRED = ("FieldValueRequired", "Required value")
    INVALID = ("FieldValueInvalid", "Invalid value")
    TYPE_INVALID = ("FieldValueTypeInvalid", "Invalid value")
    NOT_SUPPORTED = ("FieldValueNotSupported", "Unsupported value")
    DUPLICATE = ("FieldValueDuplicate", "Duplicate value")
    FORBIDDEN = ("FieldValueForbidden", "Forbidden")
    TOO_LONG = ("FieldValueTooLong", "Too long")
    TOO_MANY = ("FieldValueTooMany", "Too many")

    @property
    def reason(self) -> str:
        return self.value[0]

    @property
    def words(self) -> str:
        return self.value[1]


# Types whose messages never show the value (as field.Error.ErrorBody() does it).
_VALUELESS = frozenset({FieldErrorType.REQUIRED, FieldErrorType.FORBIDDEN, FieldErrorType.TOO_LONG})
_OMITTED = object()


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One problem with one field, e.g. ``spec.replicas: Invalid value: -1: must be non-negative``."""

    type: FieldErrorType
    field: str  # as Kubernetes writes paths: spec.steps[0].setWeight, metadata.labels[app]
    value: Any = _OMITTED
    detail: str = ""

    @classmethod
    def required(cls, field: str, detail: str = "") -> Self:
        return cls(FieldErrorType.REQUIRED, field, detail=detail)

    @classmethod
    def invalid(cls, field: str, value: Any, detail: str) -> Self:
        return cls(FieldErrorType.INVALID, field, value, detail)

    @classmethod
    def forbidden(cls, field: str, detail: str) -> Self:
        return cls(FieldErrorType.FORBIDDEN, field, detail=detail)

    @classmethod
    def not_supported(cls, field: str, value: Any, supported: Iterable[Any]) -> Self:
        choices = ", ".join(json.dumps(choice) for choice in supported)
        return cls(FieldErrorType.NOT_SUPPORTED, field, value, f"supported values: {choices}")

    def body(self) -> str:
        """The message without the field: what a Status cause's ``message`` holds."""
        text = self.type.words
        if self.type not in _VALUELESS and self.value is not _OMITTED:
            text = f"{text}: {format_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


@dataclasses.dataclass(frozen=True)
class GoValue:
    """A bad value shown exactly as Go prints it, e.g. a uint64 with ``%#v``: ``0x0``."""

    text: str


def format_value(value: Any) -> str:
    """A bad value as Go's ``%v``/``%q`` prints it in field errors (composites as compact JSON)."""
    if isinstance(value, GoValue):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return '"null"'
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@attrs.frozen
class ApiError(kmock.KubernetesError):
    """An API failure: raised in-process, and rendered as a ``kind: Status`` over HTTP."""

    @classmethod
    def not_found(cls, spec: ResourceSpec, name: str) -> Self:
        return cls(404, "NotFound", f'{spec.qualified_plural} "{name}" not found', _details(spec, name))

    @classmethod
    def already_exists(cls, spec: ResourceSpec, name: str) -> Self:
        return cls(
            409, "AlreadyExists", f'{spec.qualified_plural} "{name}" already exists', _details(spec, name)
        )

    @classmethod
    def conflict(cls, spec: ResourceSpec, name: str) -> Self:
        message = (
            f'Operation cannot be fulfilled on {spec.qualified_plural} "{name}": the object has '
            f"been modified; please apply your changes to the latest version and try again"
        )
        return cls(409, "Conflict", message, _details(spec, name))

    @classmethod
    def invalid(cls, spec: ResourceSpec, name: str | None, errors: Sequence[FieldError]) -> Self:
        """422 Invalid, worded as ``apierrors.NewInvalid()``: one cause per field error."""
        listed = str(errors[0]) if len(errors) == 1 else f"[{', '.join(str(error) for error in errors)}]"
        message = f'{spec.qualified_kind} "{name or ""}" is invalid: {listed}'
        causes = [
            {"reason": error.type.reason, "message": error.body(), "field": error.field} for error in errors
        ]
        details = {"name": name or "", "group": spec.group, "kind": spec.kind, "causes": causes}
        return cls(422, "Invalid", message, details)

    @classmethod
    def invalid_options(cls, kind: str, errors: Sequence[FieldError]) -> Self:
        """422 for bad request options: ``PatchOptions.meta.k8s.io "" is invalid: fieldManager: …``."""
        return cls.invalid(ResourceSpec("meta.k8s.io", "v1", kind.lower(), kind), "", errors)

    @classmethod
    def apply_conflict(cls, message: str, causes: Sequence[JsonObject]) -> Self:
        """
        409 of a server-side apply that would change fields other managers own, as
        ``apierrors.NewApplyConflict()``: one ``FieldManagerConflict`` cause per field.
        """
        return cls(409, "Conflict", message, {"causes": list(causes)})

    @classmethod
    def unprocessable(cls, spec: ResourceSpec, name: str, message: str) -> Self:
        return cls(422, "UnprocessableEntity", message, _details(spec, name))

    @classmethod
    def bad_request(cls, message: str) -> Self:
        return cls(400, "BadRequest", message, {})

    @classmethod
    def unsupported_media_type(cls, message: str) -> Self:
        return cls(415, "UnsupportedMediaType", message, {})

    @classmethod
    def not_acceptable(cls, message: str) -> Self:
        return cls(406, "NotAcceptable", message, {})

    @classmethod
    def method_not_allowed(cls, message: str) -> Self:
        return cls(405, "MethodNotAllowed", message, {})

    @classmethod
    def gone(cls, message: str) -> Self:
        return cls(410, "Expired", message, {})

    @classmethod
    def resource_not_found(cls) -> Self:
        return cls(404, "NotFound", "the server could not find the requested resource", {})

    def as_status(self) -> JsonObject:
        """The ``kind: Status`` body, for responses and for ``ERROR`` events in watch-streams."""
        status: JsonObject = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.status,
        }
        if self.details:
            status["details"] = self.details
        return status


def _details(spec: ResourceSpec, name: str) -> JsonObject:
    return {"name": name, "group": spec.group, "kind": spec.plural}
