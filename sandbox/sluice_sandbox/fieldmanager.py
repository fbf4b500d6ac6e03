"""
Field management, as the API server does it (https://kubernetes.io/docs/reference/using-api/server-side-apply/):
``metadata.managedFields`` kept on every write, and server-side apply.

* An **Update** (create, replace, patch; :func:`record_update`) gives its manager the fields it
  changed, and takes them from every other manager. Its entry is one per manager, operation,
  apiVersion and subresource.
* An **Apply** (:func:`apply`) merges the applied configuration into the object (see
  :func:`fieldsets.merge`), and its manager owns exactly the fields it applied, shared with any
  manager that set them to the same values. Changing a field that another manager owns is a
  conflict (:class:`Conflicts`), unless forced: then the applier takes it over. Fields that the
  manager applied before and applies no more are removed, unless someone else owns them.

Entries are written as the API server writes them (``manager``, ``operation``, ``apiVersion``,
``time``, ``fieldsType: FieldsV1``, ``fieldsV1``, ``subresource``), Apply entries first, then by
time. The managedFields of a request's object replace the stored ones if they are valid and not
empty (``[{}]`` clears them), except through subresources, as in the API server.

Pure functions: they take the time of the write, and never change their arguments.
"""

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from sluice_sandbox.fieldsets import (
    FieldSet,
    Path,
    Shape,
    applied_fields,
    changes,
    contains,
    decode,
    encode,
    merge,
    removable,
    remove,
    render_path,
    under,
)

UPDATE, APPLY = "Update", "Apply"
MAX_MANAGER_LENGTH = 128  # the API server's limit, also where it truncates user agents

JsonObject = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Manager:
    """Who writes, and through which apiVersion and subresource."""

    name: str
    api_version: str
    subresource: str | None = None

    def identity(self, operation: str) -> tuple[str, str, str, str]:
        # Appliers keep one entry whichever version they apply through; updaters one per version.
        return self.name, operation, "" if operation == APPLY else self.api_version, self.subresource or ""


def manager_from_user_agent(user_agent: str | None) -> str:
    """The manager of a client that names no ``fieldManager``: ``kubectl/v1.32 (…)`` → ``kubectl``."""
    return (user_agent or "").split("/", 1)[0][:MAX_MANAGER_LENGTH]


def _identity(entry: Mapping[str, Any]) -> tuple[str, str, str, str]:
    operation = entry.get("operation", "")
    api_version = "" if operation == APPLY else entry.get("apiVersion", "")
    return entry.get("manager", ""), operation, api_version, entry.get("subresource", "")


def describe(entry: Mapping[str, Any]) -> str:
    """A manager as conflicts name it: ``"gitops"``, ``"kopf" using sluice.dev/v1alpha1``."""
    text = f'"{entry.get("manager", "")}"'
    if entry.get("subresource"):
        text += f' with subresource "{entry["subresource"]}"'
    if entry.get("operation") == UPDATE:
        text += f" using {entry.get('apiVersion', '')}"
    return text


def _entry(manager: Manager, operation: str, time: str, fields: FieldSet) -> JsonObject:
    entry: JsonObject = {
        "manager": manager.name,
        "operation": operation,
        "apiVersion": manager.api_version,
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": encode(fields),
    }
    if manager.subresource:
        entry["subresource"] = manager.subresource
    return entry


def _sorted(entries: Sequence[JsonObject]) -> list[JsonObject]:
    """In the API server's order: by operation (Apply first), time, manager, apiVersion, subresource."""
    return sorted(
        entries,
        key=lambda entry: (
            entry.get("operation", ""),
            entry.get("time") or "",
            entry.get("manager", ""),
            entry.get("apiVersion", ""),
            entry.get("subresource", ""),
        ),
    )


def _valid(entries: Any) -> list[JsonObject] | None:
    """The entries if they are a list of well-formed entries (cheaply checked), else None."""
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("fieldsV1", {}), Mapping):
            return None
        if entry.get("operation") not in (UPDATE, APPLY) or not isinstance(entry.get("manager", ""), str):
            return None
    return entries


def current_entries(
    old: Mapping[str, Any] | None, new: Mapping[str, Any], subresource: str | None
) -> list[JsonObject]:
    """
    The managedFields a write starts from: the request's if it sets valid ones (``[{}]``: none),
    else the stored object's. Writes through subresources never set them.
    """
    stored = _valid((old or {}).get("metadata", {}).get("managedFields")) or []
    if subresource is not None:
        return list(stored)
    requested = new.get("metadata", {}).get("managedFields")
    if requested == [{}]:
        return []
    return list(_valid(requested) or stored)


def record_update(
    old: Mapping[str, Any] | None, new: JsonObject, manager: Manager, shape: Shape, *, time: str
) -> None:
    """
    Set the new object's managedFields after an Update by the manager (``old`` is None for a
    create): the fields it changed become its own, and no other manager's.
    """
    entries = current_entries(old, new, manager.subresource)
    changed, removed = changes(old, new, shape)
    if changed or removed:
        mine = manager.identity(UPDATE)
        mine_entry: Mapping[str, Any] | None = None
        kept: list[JsonObject] = []
        for entry in entries:
            if _identity(entry) == mine:
                mine_entry = entry
                mine_tree = entry.get("fieldsV1") or {}
            elif changed and any(contains(entry.get("fieldsV1") or {}, path) for path in changed):
                _keep(kept, entry, _fields(entry) - changed)
            else:
                kept.append(entry)  # untouched: not even decoded
        if mine_entry is not None and not removed and all(contains(mine_tree, path) for path in changed):
            kept.append({**mine_entry, "time": time})  # the usual: changing what it owns already
        else:
            previous = _fields(mine_entry) if mine_entry is not None else set()
            own = {path for path in previous if not under(path, removed)} | changed
            if own:
                kept.append(_entry(manager, UPDATE, time, own))
        entries = _sorted(kept)
    _set_managed_fields(new, entries)


def _fields(entry: Mapping[str, Any]) -> FieldSet:
    try:
        return decode(entry.get("fieldsV1") or {})
    except ValueError:
        return set()  # a malformed entry (written by a client) owns nothing


def _keep(entries: list[JsonObject], entry: Mapping[str, Any], fields: FieldSet) -> None:
    """Keep an entry with fewer fields; a manager left with none has no entry."""
    if fields:
        entries.append({**entry, "fieldsV1": encode(fields)})


def _set_managed_fields(obj: JsonObject, entries: list[JsonObject]) -> None:
    meta = obj.setdefault("metadata", {})
    if entries:
        meta["managedFields"] = entries
    else:
        meta.pop("managedFields", None)


@dataclasses.dataclass(frozen=True)
class Conflict:
    manager: str  # as described: '"gitops" using sluice.dev/v1alpha1'
    path: Path

    @property
    def field(self) -> str:
        return render_path(self.path)


class Conflicts(Exception):
    """An apply would change fields that other managers own: the API server's 409."""

    def __init__(self, conflicts: Sequence[Conflict]) -> None:
        self.conflicts = sorted(conflicts, key=lambda conflict: (conflict.manager, conflict.field))
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if len(self.conflicts) == 1:
            only = self.conflicts[0]
            return f"Apply failed with 1 conflict: conflict with {only.manager}: {only.field}"
        lines: list[str] = []
        for conflict in self.conflicts:
            heading = f"conflicts with {conflict.manager}:"
            if heading not in lines:
                lines.append(heading)
            lines.append(f"- {conflict.field}")
        return f"Apply failed with {len(self.conflicts)} conflicts: " + "\n".join(lines)

    @property
    def causes(self) -> list[JsonObject]:
        return [
            {
                "reason": "FieldManagerConflict",
                "message": f"conflict with {conflict.manager}",
                "field": conflict.field,
            }
            for conflict in self.conflicts
        ]


def config_part(config: Mapping[str, Any], subresource: str | None, has_status: bool) -> JsonObject:
    """
    What an apply may change: through ``/status``, only the status; through the main resource of
    a kind with a status subresource, everything but the status (ignored, as the API server does).
    """
    if subresource == "status":
        return {key: value for key, value in config.items() if key in ("apiVersion", "kind", "status")} | {
            "metadata": {
                key: value
                for key, value in (config.get("metadata") or {}).items()
                if key in ("name", "namespace", "resourceVersion")
            }
        }
    if has_status:
        return {key: value for key, value in config.items() if key != "status"}
    return dict(config)


def apply(
    live: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    manager: Manager,
    shape: Shape,
    *,
    force: bool,
    time: str,
) -> JsonObject:
    """
    The object after applying a configuration (``live`` is None if it does not exist yet), with
    its managedFields; raises :class:`Conflicts` unless forced. ``config`` is the part of the
    applied configuration that the endpoint may change (see :func:`config_part`).
    """
    applied = applied_fields(config, shape)
    # A copy of its own: the store's admission changes it in place (defaults), and `live` is stored.
    merged: JsonObject = copy.deepcopy(merge(live or {}, config, shape))
    merged.setdefault("metadata", {})
    changed, _ = changes(live, merged, shape)
    mine = manager.identity(APPLY)
    previous: FieldSet = set()
    previous_time: str | None = None
    others: list[tuple[JsonObject, FieldSet]] = []
    conflicts: list[Conflict] = []
    for entry in _valid((live or {}).get("metadata", {}).get("managedFields")) or []:
        if _identity(entry) == mine:
            previous, previous_time = _fields(entry), entry.get("time")
            continue
        fields = _fields(entry)
        taken = fields & changed
        if taken and not force:
            conflicts.extend(Conflict(describe(entry), path) for path in taken)
        others.append((entry, fields - taken))
    if conflicts:
        raise Conflicts(conflicts)

    owned_by_others: FieldSet = set().union(*(fields for _, fields in others))
    kept = applied | owned_by_others
    unapplied = removable(previous - kept, kept)
    if unapplied:
        remove(merged, unapplied, keep=kept)

    entries = [
        entry if fields == _fields(entry) else {**entry, "fieldsV1": encode(fields)}
        for entry, fields in others
        if fields
    ]
    if applied:
        # The time moves only if the object does (a no-op apply is no write at all).
        touched = changed or unapplied or previous_time is None
        entries.append(_entry(manager, APPLY, time if touched else str(previous_time), applied))
    _set_managed_fields(merged, _sorted(entries))
    return merged
