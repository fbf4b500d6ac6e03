"""Reading and writing a resource's status: what the three shells (Rollout, Application, SidecarSet) share.

A status is the operator's own record, but it can hold what this version
cannot read: written by an older or newer operator, or by hand. Such a status
must never make every pass raise; `read_status` keeps what it can read, drops
the fields it cannot (they are rebuilt from the cluster, which is the truth),
and says which, so the shell can report the repair once. `write_status`
applies only when the status changed, or when it was repaired.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from operators.foundation.cluster import Cluster
from operators.foundation.diff import apply_body, without_nulls
from operators.foundation.keys import ObjectKey

Status = TypeVar("Status", bound=BaseModel)

# A status with more unreadable fields than this is started afresh rather than repaired field by field.
_MAX_REPAIRS = 16


@dataclass(frozen=True)
class ReadStatus(Generic[Status]):
    status: Status
    # Top-level status fields that could not be read and were dropped, with pydantic's reason.
    dropped: Mapping[str, str] = field(default_factory=dict)
    # The object's resourceVersion when read: the status write is refused (409) if it changed since.
    resource_version: str | None = None

    @property
    def repaired(self) -> bool:
        return bool(self.dropped)

    def repair_message(self, kind: str) -> str:
        fields = "; ".join(f"{name}: {reason}" for name, reason in self.dropped.items())
        return (
            f"{kind} status could not be read (written by another version of Sluice, or by hand) "
            f"and was rebuilt from the cluster; dropped {fields}"
        )


def read_status(model: type[Status], body: Mapping[str, Any]) -> ReadStatus[Status]:
    """The object's status as `model`, dropping (and naming) the top-level fields it cannot read."""
    raw = body.get("status")
    version = (body.get("metadata") or {}).get("resourceVersion") or None
    data = dict(raw) if isinstance(raw, Mapping) else {}
    dropped: dict[str, str] = {} if raw is None or isinstance(raw, Mapping) else {"status": "not an object"}
    for _ in range(_MAX_REPAIRS):
        try:
            return ReadStatus(model.model_validate(data), dropped, version)
        except ValidationError as error:
            bad = {str(item["loc"][0]) if item["loc"] else "" for item in error.errors()}
            for name in sorted(bad):
                dropped[name or "status"] = _reason(error, name)
                data.pop(name, None)
            if "" in bad:
                break
    return ReadStatus(model(), {**dropped, "status": "too many unreadable fields"}, version)


def _reason(error: ValidationError, name: str) -> str:
    for item in error.errors():
        if (str(item["loc"][0]) if item["loc"] else "") == name:
            value = repr(item.get("input"))
            value = value if len(value) <= 40 else value[:37] + "..."
            return f"{item['msg'].removeprefix('Value error, ')} (found {value})"
    return "unreadable"


def status_document(status: BaseModel) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json")


def write_status(cluster: Cluster, key: ObjectKey, before: ReadStatus[Status], after: BaseModel) -> bool:
    """Apply `after` to the status subresource unless it equals what was read; True when written.

    Server-side apply as the operator's field manager: the status is ours, and
    a field we stop setting goes away. A repaired status is always written: the
    live one still holds what could not be read. The apply carries the
    resourceVersion the decision was based on: if the object changed since (a
    command, a new spec, or a copy read from a watch that was behind), the API
    server refuses it with 409 and the shell decides again on what is there now.

    Apply removes only the fields we applied before. A field someone else wrote
    (by hand, or an operator version that wrote status with merge patches) would
    linger; when the applied result still differs from ours, one merge patch
    with explicit nulls clears it, as rare as such statuses are.
    """
    new = status_document(after)
    if not before.repaired and new == status_document(before.status):
        return False
    metadata: dict[str, Any] = {"name": key.name}
    if key.namespace:
        metadata["namespace"] = key.namespace
    if before.resource_version:
        metadata["resourceVersion"] = before.resource_version
    body = {"apiVersion": key.api_version, "kind": key.kind, "metadata": metadata, "status": new}
    result = cluster.apply(apply_body(body, None), subresource="status")
    if not _holds(result.get("status") or {}, new):
        version = (result.get("metadata") or {}).get("resourceVersion")
        patch: dict[str, Any] = {
            "status": new,
            **({"metadata": {"resourceVersion": version}} if version else {}),
        }
        cluster.merge_patch(key, patch, subresource="status")
    return True


def _holds(live: Mapping[str, Any], document: Mapping[str, Any]) -> bool:
    """Does the live status say exactly what `document` says (a None field: absent)?"""
    return all(
        live.get(name) is None if value is None else live.get(name) == without_nulls(value)
        for name, value in document.items()
    )
