"""
``coordination.k8s.io/v1`` Leases as the API server admits them, for leader election.

A Lease is a typed object: the API server decodes it into Go structs, so a field of the wrong
type (a string for ``leaseDurationSeconds``, a time that is not a MicroTime) fails the decoding
with 400 Bad Request, before any validation; unknown fields are dropped (with a warning, or
refused under ``fieldValidation=Strict``). Then it validates (``ValidateLeaseSpec``), refusing
with 422 Invalid a ``leaseDurationSeconds`` that is not positive and a negative
``leaseTransitions``. What it stores, it re-encodes: MicroTimes in UTC with exactly six
fractional digits (``2026-11-30T17:00:00.123456Z``), null fields left out, ``spec`` always
present. Updates must carry ``metadata.resourceVersion`` (the store's ``unconditional_update``),
so that two candidates cannot both take a Lease.

``spec.strategy`` and ``spec.preferredHolder`` belong to the CoordinatedLeaderElection feature,
off by default in the Kubernetes version the sandbox reports (1.32): decoded, then dropped.
"""

import datetime
import re
from typing import Any

from sluice_sandbox.errors import ApiError, FieldError
from sluice_sandbox.resources import Admission, FieldValidation, JsonObject, ResourceSpec

MICRO_TIME_LAYOUT = "2006-01-02T15:04:05.000000Z07:00"  # metav1.RFC3339Micro, as Go spells it
_MICRO_TIME = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{2}:\d{2}:\d{2})\.(?P<micros>\d{6})(?P<zone>Z|[+-]\d{2}:\d{2})$"
)
_INT32 = (-(2**31), 2**31 - 1)
_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec"})
_STRING_FIELDS = ("holderIdentity", "strategy", "preferredHolder")
_INT32_FIELDS = ("leaseDurationSeconds", "leaseTransitions")
_TIME_FIELDS = ("acquireTime", "renewTime")
_GATED_FIELDS = ("strategy", "preferredHolder")  # CoordinatedLeaderElection, off by default
_SPEC_FIELDS = frozenset({*_STRING_FIELDS, *_INT32_FIELDS, *_TIME_FIELDS})


def prepare_lease(spec: ResourceSpec, lease: JsonObject, admission: Admission) -> None:
    """Decode, prune, validate and normalise a Lease in place, as the API server does on a write."""
    body = lease.get("spec")
    if body is None:
        body = lease["spec"] = {}
    elif not isinstance(body, dict):
        reason = (
            f"json: cannot unmarshal {_json_type(body)} into Go struct field Lease.spec of type v1.LeaseSpec"
        )
        raise _undecodable(spec, reason)
    # Decoding first: a value of the wrong type fails it before unknown fields are looked at.
    for field in list(body):
        value = body[field]
        if value is None:
            del body[field]  # a nil pointer: left out of what is stored and served
        elif field in _STRING_FIELDS:
            if not isinstance(value, str):
                raise _undecodable(spec, _type_error(value, field, "string"))
        elif field in _INT32_FIELDS:
            if not _is_int32(value):
                raise _undecodable(spec, _type_error(value, field, "int32"))
        elif field in _TIME_FIELDS:
            body[field] = _micro_time(spec, field, value)

    unknown = [field for field in lease if field not in _TOP_LEVEL]
    unknown += [f"spec.{field}" for field in body if field not in _SPEC_FIELDS]
    if unknown and admission.field_validation is FieldValidation.STRICT:
        fields = ", ".join(f'unknown field "{path}"' for path in unknown)
        raise _undecodable(spec, f"strict decoding error: {fields}")
    if admission.field_validation is FieldValidation.WARN:
        admission.warnings.extend(f'unknown field "{path}"' for path in unknown)
    for path in unknown:
        parent, _, field = path.rpartition(".")
        (body if parent else lease).pop(field, None)
    for field in _GATED_FIELDS:
        body.pop(field, None)

    errors = []
    duration = body.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        errors.append(FieldError.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0"))
    transitions = body.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        errors.append(
            FieldError.invalid("spec.leaseTransitions", transitions, "must be greater than or equal to 0")
        )
    if errors:
        raise ApiError.invalid(spec, lease["metadata"].get("name"), errors)


def format_micro_time(moment: datetime.datetime) -> str:
    """A MicroTime as the API server writes it: UTC, six fractional digits."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _micro_time(spec: ResourceSpec, field: str, value: Any) -> str:
    """Parse as Go's time.Parse(RFC3339Micro): exactly six fractional digits, and a zone."""
    if not isinstance(value, str):
        raise _undecodable(spec, _type_error(value, field, "v1.MicroTime"))
    match = _MICRO_TIME.match(value)
    try:
        if match is None:
            raise ValueError("cannot parse")
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _undecodable(spec, f'parsing time "{value}" as "{MICRO_TIME_LAYOUT}": cannot parse') from None
    return format_micro_time(moment)


def _is_int32(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _INT32[0] <= value <= _INT32[1]


def _json_type(value: Any) -> str:
    """How Go's encoding/json names a JSON value in its errors (numbers with their text)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(value: Any, field: str, go_type: str) -> str:
    where = f"Go struct field LeaseSpec.spec.{field}"
    return f"json: cannot unmarshal {_json_type(value)} into {where} of type {go_type}"


def _undecodable(spec: ResourceSpec, reason: str) -> ApiError:
    return ApiError.bad_request(
        f'{spec.kind} in version "{spec.version}" cannot be handled as a {spec.kind}: {reason}'
    )
