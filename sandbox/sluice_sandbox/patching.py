"""
The PATCH flavours of the Kubernetes API, as pure functions over JSON-like objects.

* ``application/merge-patch+json`` — RFC 7386.
* ``application/json-patch+json`` — RFC 6902 (via the ``jsonpatch`` library, a kmock dependency).
* ``application/strategic-merge-patch+json`` — an approximation of Kubernetes' strategic merge:
  merge-patch semantics, except that lists of objects are merged by their merge key
  (``name`` for containers/env/volumes/…, ``type`` for conditions, and the few exceptions
  listed in ``MERGE_KEYS``), with ``$patch: delete|replace`` and ``$deleteFromPrimitiveList``.
* ``application/apply-patch+yaml`` — server-side apply: it needs the object's field ownership
  (``metadata.managedFields``), so it is not a function of the object and the patch alone; see
  :mod:`sluice_sandbox.fieldmanager`. It merges lists of built-ins by the same keys (:func:`merge_key`).

The functions never mutate their arguments and always return a new object.
"""

import copy
import enum
from collections.abc import Mapping, Sequence
from typing import Any

import jsonpatch
import jsonpointer


class PatchType(enum.StrEnum):
    MERGE = "application/merge-patch+json"
    JSON = "application/json-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"
    APPLY = "application/apply-patch+yaml"


class PatchError(ValueError):
    """The patch cannot be applied: Kubernetes answers 422 Unprocessable Entity."""


class UnsupportedPatchError(PatchError):
    """The patch type is unknown or unsupported: Kubernetes answers 415 Unsupported Media Type."""


def parse_patch_type(content_type: str | None) -> PatchType:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        return PatchType(media_type)
    except ValueError:
        raise UnsupportedPatchError(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{', '.join(t.value for t in PatchType)}"
        ) from None


def apply_patch(patch_type: PatchType, target: Mapping[str, Any], patch: Any) -> dict[str, Any]:
    """A merge, strategic-merge or JSON patch applied to a copy of the target."""
    match patch_type:
        case PatchType.MERGE:
            return _as_object(merge_patch(target, patch))
        case PatchType.STRATEGIC:
            return _as_object(strategic_merge_patch(target, patch))
        case PatchType.JSON:
            return _as_object(json_patch(target, patch))
        case PatchType.APPLY:
            # Which fields an apply removes depends on who owns them: see fieldmanager.apply().
            raise UnsupportedPatchError(
                "server-side apply needs the object's managedFields: see fieldmanager"
            )


def _as_object(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise PatchError("the patch would turn the object into a non-object")
    return result


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes a key, anything else replaces."""
    return _merge_in_place(copy.deepcopy(target), patch)


def _merge_in_place(target: Any, patch: Any) -> Any:
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_in_place(result.get(key), value)
    return result


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902. A failed ``test`` op or a bad path is a 422, as in Kubernetes."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, operations, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise PatchError(f"the test operation failed: {e}") from e
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
        raise PatchError(f"the JSON patch cannot be applied: {e}") from e
    except (TypeError, KeyError, IndexError, ValueError) as e:
        raise PatchError(f"the JSON patch is malformed: {e!r}") from e


# Strategic merge keys that are not simply `name` (or `type` for conditions), per the
# `patchMergeKey` tags in k8s.io/api. `ports` differs between containers and services, so it
# is resolved by which key the items actually carry. Server-side apply merges built-ins' lists
# by the same keys (their `x-kubernetes-list-map-keys`), see fieldsets.py.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "ports": ("containerPort", "port"),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "readinessGates": ("conditionType",),
}
_DEFAULT_MERGE_KEYS = ("name", "type")
_DIRECTIVE = "$patch"
_DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList/"


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """An approximation of Kubernetes' strategic merge patch (see the module docstring)."""
    return _strategic(copy.deepcopy(target), patch, field=None)


# The private helpers below own (and mutate) their `target`: it is a deep copy made once above.
def _strategic(target: Any, patch: Any, field: str | None) -> Any:
    if isinstance(patch, Mapping):
        return _strategic_map(target, patch)
    if isinstance(patch, list) and isinstance(target, list):
        return _strategic_list(target, patch, field)
    return _strip_directives(patch)


def _strategic_map(target: Any, patch: Mapping[str, Any]) -> Any:
    directive = patch.get(_DIRECTIVE)
    content = {key: value for key, value in patch.items() if key != _DIRECTIVE}
    if directive == "replace":
        return _strip_directives(content)
    result: dict[str, Any] = target if isinstance(target, dict) else {}
    for key, value in content.items():
        if key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
            name = key.removeprefix(_DELETE_FROM_PRIMITIVE_LIST)
            if isinstance(result.get(name), list):
                result[name] = [item for item in result[name] if item not in value]
        elif key.startswith("$"):
            continue  # $setElementOrder, $retainKeys: ordering/pruning hints of client-side apply
        elif value is None:
            result.pop(key, None)
        else:
            result[key] = _strategic(result.get(key), value, field=key)
    return result


def _strategic_list(target: list[Any], patch: list[Any], field: str | None) -> list[Any]:
    if any(isinstance(item, Mapping) and item.get(_DIRECTIVE) == "replace" for item in patch):
        return [
            _strip_directives(item)
            for item in patch
            if not (isinstance(item, Mapping) and item.get(_DIRECTIVE) == "replace")
        ]
    merge_key = _find_merge_key(target, patch, field)
    if merge_key is None:
        return [_strip_directives(item) for item in patch]  # atomic lists are replaced, as in merge-patch

    result = target
    for item in patch:
        index = next((i for i, old in enumerate(result) if old.get(merge_key) == item.get(merge_key)), None)
        if item.get(_DIRECTIVE) == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip_directives(item))
        else:
            result[index] = _strategic(result[index], item, field=None)
    return result


def _find_merge_key(target: Sequence[Any], patch: Sequence[Any], field: str | None) -> str | None:
    return merge_key(field, [*target, *patch])


def merge_key(field: str | None, items: Sequence[Any]) -> str | None:
    """
    The key that a built-in's list of objects (in the field ``field``) is merged by, judged by the
    items at hand: None for lists of scalars and lists whose items do not all carry the key.
    """
    if not items or not all(isinstance(item, Mapping) for item in items):
        return None
    candidates = MERGE_KEYS.get(field or "", _DEFAULT_MERGE_KEYS)
    for key in candidates:
        if all(key in item for item in items):
            return key
    return None


def _strip_directives(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _strip_directives(val) for key, val in value.items() if not key.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return copy.deepcopy(value)
