"""
Field sets, as server-side apply defines them (Kubernetes' structured-merge-diff library): which
fields of an object a manager owns, and the merge of an applied configuration into an object.

A field set is a set of paths; a path is a tuple of elements, each encoded as in ``fieldsV1``:
``f:<name>`` for a field, ``k:{"name":"app"}`` for an item of a list-map (its key fields, as
compact JSON), ``v:<json>`` for an item of a set. ``fieldsV1`` itself (:func:`encode`,
:func:`decode`) nests the elements, with ``{}`` for an owned leaf and ``".": {}`` for an owned
node that also has owned children (a list item, a map that an update added).

How lists merge comes from the schema (:class:`Shape`): a CRD's ``x-kubernetes-list-type``
(``map`` with ``x-kubernetes-list-map-keys``, ``set``; ``atomic`` and undeclared lists are
replaced whole) and ``x-kubernetes-map-type: atomic``; for built-ins (served without schemas) and
every object's ``metadata``, the keys that strategic merge patches use (:func:`patching.merge_key`),
``finalizers`` as a set, and the structs that Kubernetes declares atomic (label selectors, ...).
A list whose items do not fit its declared keys (a missing or repeated key) is treated as atomic.

Everything here is pure: functions of their arguments, which they never change.
"""

import copy
import enum
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from sluice_sandbox.patching import merge_key

Path = tuple[str, ...]
FieldSet = set[Path]

LIST_TYPE = "x-kubernetes-list-type"
LIST_MAP_KEYS = "x-kubernetes-list-map-keys"
MAP_TYPE = "x-kubernetes-map-type"

# Built-ins' lists of scalars that merge as sets (`+listType=set`); other scalar lists are atomic.
BUILTIN_SETS = frozenset({"finalizers"})
# Built-ins' maps and structs that are replaced whole (`+mapType=atomic`, `+structType=atomic`).
BUILTIN_ATOMIC_MAPS = frozenset(
    {
        "selector",
        "nodeSelector",
        "labelSelector",
        "namespaceSelector",
        "fieldRef",
        "resourceFieldRef",
        "configMapKeyRef",
        "secretKeyRef",
    }
)
# Metadata that only the server manages: client-sent values are ignored on every write (store.py).
SYSTEM_METADATA = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "selfLink",
)
# Never owned by anyone: identity and server-managed metadata (the API server's "stripped" fields).
_STRIPPED_ROOT = frozenset({"apiVersion", "kind"})
STRIPPED_METADATA = frozenset({"name", "namespace", "managedFields", *SYSTEM_METADATA})
METADATA: Path = ("f:metadata",)
_MISSING: Any = object()


class ListKind(enum.Enum):
    ATOMIC = "atomic"
    SET = "set"
    MAP = "map"


class Shape:
    """
    What the merge rules of one value are: a CRD schema node, or a built-in's field name (with
    no schema, the field's name is what tells a list's merge key). Shapes are made once per
    schema node and field (children are cached): field management runs on every write.
    """

    __slots__ = ("_children", "_item", "builtin", "field", "root", "schema")

    def __init__(
        self,
        schema: Mapping[str, Any] | None = None,
        builtin: bool = True,
        field: str = "",
        root: bool = False,
    ) -> None:
        self.schema, self.builtin, self.field, self.root = schema, builtin, field, root
        self._children: dict[str, Shape] = {}
        self._item: Shape | None = None

    @classmethod
    def of_resource(cls, schema: Mapping[str, Any] | None, builtin: bool) -> "Shape":
        return cls(schema, builtin and schema is None, root=True)

    def child(self, key: str) -> "Shape":
        shape = self._children.get(key)
        if shape is None:
            shape = self._children[key] = self._make_child(key)
        return shape

    def _make_child(self, key: str) -> "Shape":
        if self.builtin or (self.root and key == "metadata"):
            return _builtin_shape(key)
        schema = self.schema or {}
        node = (schema.get("properties") or {}).get(key)
        if node is None and isinstance(schema.get("additionalProperties"), Mapping):
            node = schema["additionalProperties"]
        return Shape(node, False, key)

    def item(self) -> "Shape":
        if self._item is None:
            if self.builtin:
                self._item = self
            else:
                items = (self.schema or {}).get("items")
                self._item = Shape(items if isinstance(items, Mapping) else None, False)
        return self._item

    @property
    def atomic_map(self) -> bool:
        if self.builtin:
            return self.field in BUILTIN_ATOMIC_MAPS
        return (self.schema or {}).get(MAP_TYPE) == "atomic"

    def list_kind(self, items: Sequence[Any]) -> tuple[ListKind, tuple[str, ...]]:
        """How a list merges, given its items (all the items of the lists being compared)."""
        if self.builtin:
            if self.field in BUILTIN_SETS:
                return ListKind.SET, ()
            key = merge_key(self.field, items)
            return (ListKind.ATOMIC, ()) if key is None else (ListKind.MAP, (key,))
        schema = self.schema or {}
        list_type = schema.get(LIST_TYPE)
        if list_type == "set":
            return ListKind.SET, ()
        if list_type == "map" and schema.get(LIST_MAP_KEYS):
            return ListKind.MAP, tuple(schema[LIST_MAP_KEYS])
        return ListKind.ATOMIC, ()

    def elements(self, *lists: Sequence[Any]) -> list[list[str]] | None:
        """The path elements of the items of each list, or None if they merge as one (atomic)."""
        kind, keys = self.list_kind([item for items in lists for item in items])
        if kind is ListKind.ATOMIC:
            return None
        result: list[list[str]] = []
        for items in lists:
            if kind is ListKind.MAP:
                if not all(isinstance(item, Mapping) and all(key in item for key in keys) for item in items):
                    return None  # an item without its key cannot be told apart: the list is atomic
                elements = [key_element(item, keys) for item in items]
            else:
                if any(isinstance(item, Mapping | list) for item in items):
                    return None
                elements = [value_element(item) for item in items]
            if len(set(elements)) != len(elements):
                return None  # repeated keys (refused by validation where a schema declares them)
            result.append(elements)
        return result


_BUILTIN_SHAPES: dict[str, Shape] = {}


def _builtin_shape(field: str) -> Shape:
    """Built-ins' shapes depend on the field's name only: one per name, for all objects."""
    shape = _BUILTIN_SHAPES.get(field)
    if shape is None:
        shape = _BUILTIN_SHAPES[field] = Shape(None, True, field)
    return shape


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def key_element(item: Mapping[str, Any], keys: Iterable[str]) -> str:
    return "k:" + _json({key: item[key] for key in keys})


def value_element(value: Any) -> str:
    return "v:" + _json(value)


# ----- Paths as Kubernetes prints them in conflicts: .spec.containers[name="app"].image -----


def render_path(path: Path) -> str:
    text = ""
    for element in path:
        kind, _, value = element.partition(":")
        if kind == "f":
            text += f".{value}"
        elif kind == "k":
            fields = json.loads(value)
            text += "[" + ",".join(f"{key}={_json(fields[key])}" for key in sorted(fields)) + "]"
        elif kind == "v":
            text += f"[={value}]"
        else:
            text += f"[{value}]"
    return text


# ----- fieldsV1: the nested encoding of a set -----


def encode(paths: Iterable[Path]) -> dict[str, Any]:
    """A set as ``fieldsV1``: elements nested, ``{}`` for owned leaves, ``.`` for owned parents."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})
        node["."] = {}
    return _sorted(tree)


def _sorted(node: dict[str, Any]) -> dict[str, Any]:
    """Leaves become ``{}``; keys in the order the API server writes them (``.`` first)."""
    if len(node) == 1 and "." in node:
        return {}
    return {key: {} if key == "." else _sorted(node[key]) for key in sorted(node)}


def decode(tree: Any, prefix: Path = ()) -> FieldSet:
    """The set that a ``fieldsV1`` tree encodes; ValueError if it is not one."""
    paths: FieldSet = set()
    _decode(tree, prefix, paths)
    return paths


def _decode(tree: Any, prefix: Path, out: FieldSet) -> None:
    if not isinstance(tree, Mapping):
        raise ValueError(f"not a fieldsV1 object: {tree!r}")
    for element, child in tree.items():
        if element == ".":
            continue
        if not isinstance(child, Mapping) or element[:2] not in ("f:", "k:", "v:", "i:"):
            raise ValueError(f"not a fieldsV1 element: {element!r}")
        path = (*prefix, element)
        if not child or "." in child:
            out.add(path)
        if child:
            _decode(child, path, out)


def contains(tree: Mapping[str, Any], path: Path) -> bool:
    """Whether the set that a ``fieldsV1`` tree encodes holds the path (without decoding it)."""
    node: Any = tree
    for element in path:
        node = node.get(element) if isinstance(node, Mapping) else None
        if node is None:
            return False
    return not node or "." in node


def under(path: Path, roots: Iterable[Path]) -> bool:
    """Whether the path is one of the roots or below one."""
    return any(path[: len(root)] == root for root in roots)


# ----- The fields of values -----


def owned_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object without what nobody owns: apiVersion, kind, and the server's metadata."""
    result = {key: value for key, value in obj.items() if key not in _STRIPPED_ROOT}
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        result["metadata"] = {key: value for key, value in meta.items() if key not in STRIPPED_METADATA}
    return result


def applied_fields(config: Mapping[str, Any], shape: Shape) -> FieldSet:
    """
    The fields an applied configuration sets (what its applier owns): leaves, atomic lists and
    maps, list items (and their fields); not the maps that only hold them.
    """
    out: FieldSet = set()
    _applied(owned_part(config), shape, (), out)
    out.discard(())
    out.discard(METADATA)
    return out


def _applied(value: Any, shape: Shape, path: Path, out: FieldSet) -> None:
    if isinstance(value, Mapping) and value and not shape.atomic_map:
        for key, child in value.items():
            _applied(child, shape.child(key), (*path, f"f:{key}"), out)
        return
    if isinstance(value, list):
        elements = shape.elements(value)
        if elements is not None:
            item_shape = shape.item()
            for element, item in zip(elements[0], value, strict=True):
                out.add((*path, element))
                if isinstance(item, Mapping):
                    _applied(item, item_shape, (*path, element), out)
            return
    out.add(path)


def all_fields(value: Any, shape: Shape, path: Path, out: FieldSet) -> None:
    """Every field of a value, the value's own path included: what an update that adds it owns."""
    out.add(path)
    if isinstance(value, Mapping) and not shape.atomic_map:
        for key, child in value.items():
            all_fields(child, shape.child(key), (*path, f"f:{key}"), out)
    elif isinstance(value, list):
        elements = shape.elements(value)
        if elements is not None:
            item_shape = shape.item()
            for element, item in zip(elements[0], value, strict=True):
                all_fields(item, item_shape, (*path, element), out)


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any], shape: Shape) -> tuple[FieldSet, FieldSet]:
    """
    What a write changed, from the old object to the new: the fields it set (added or modified,
    with all the fields of what it added) and the roots of what it removed. ``old`` is None for
    a create.
    """
    changed: FieldSet = set()
    removed: FieldSet = set()
    _compare(owned_part(old or {}), owned_part(new), shape, (), changed, removed)
    changed.discard(METADATA)
    removed.discard(METADATA)
    return changed, removed


def _compare(old: Any, new: Any, shape: Shape, path: Path, changed: FieldSet, removed: FieldSet) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping) and not shape.atomic_map:
        for key, value in new.items():
            previous = old.get(key, _MISSING)
            if previous is _MISSING:
                all_fields(value, shape.child(key), (*path, f"f:{key}"), changed)
            elif previous is not value and previous != value:
                _compare(previous, value, shape.child(key), (*path, f"f:{key}"), changed, removed)
        removed.update((*path, f"f:{key}") for key in old if key not in new)
        return
    if isinstance(old, list) and isinstance(new, list):
        elements = shape.elements(old, new)
        if elements is not None:
            item_shape = shape.item()
            old_items = dict(zip(elements[0], old, strict=True))
            for element, item in zip(elements[1], new, strict=True):
                previous = old_items.pop(element, _MISSING)
                if previous is _MISSING:
                    all_fields(item, item_shape, (*path, element), changed)
                elif previous != item:
                    _compare(previous, item, item_shape, (*path, element), changed, removed)
            removed.update((*path, element) for element in old_items)
            return
    # A leaf, an atomic list or map, or a value of another type: replaced whole.
    if isinstance(old, Mapping | list):
        removed.add(path)  # what it held goes with it
    all_fields(new, shape, path, changed)


# ----- Applying: the merge of a configuration, and the removal of fields no longer applied -----


def merge(live: Any, config: Any, shape: Shape) -> Any:
    """
    The configuration merged into the live value (a new value; both are left as they are): maps
    merge key by key (``null`` removes one), list-maps by key and sets by value (live items keep
    their order, new ones come last), anything else is replaced.
    """
    if isinstance(live, Mapping) and isinstance(config, Mapping) and not shape.atomic_map:
        result = dict(live)
        for key, value in config.items():
            if value is None:
                result.pop(key, None)
            elif key in result:
                result[key] = merge(result[key], value, shape.child(key))
            else:
                result[key] = copy.deepcopy(value)
        return result
    if isinstance(live, list) and isinstance(config, list):
        elements = shape.elements(live, config)
        if elements is not None:
            item_shape = shape.item()
            merged = list(live)
            index = {element: position for position, element in enumerate(elements[0])}
            for element, item in zip(elements[1], config, strict=True):
                position = index.get(element)
                if position is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[position] = merge(merged[position], item, item_shape)
            return merged
    return copy.deepcopy(config)


def removable(unapplied: FieldSet, keep: FieldSet) -> FieldSet:
    """
    Of the fields an applier no longer applies, those to remove: not those on the way to a field
    that someone keeps owning (a list item another manager owns a field of), nor the key fields
    of list items that stay.
    """
    ancestors = {path[:depth] for path in keep for depth in range(1, len(path))}
    candidates = unapplied - ancestors
    return {path for path in candidates if not (_is_key_field(path) and path[:-1] not in candidates)}


def _is_key_field(path: Path) -> bool:
    return (
        len(path) >= 2
        and path[-2].startswith("k:")
        and path[-1].startswith("f:")
        and path[-1][2:] in json.loads(path[-2][2:])
    )


def remove(obj: dict[str, Any], paths: Iterable[Path], keep: FieldSet) -> None:
    """
    Remove the fields at the paths from the object, in place; then the maps and lists that this
    leaves empty, unless they are in ``keep`` (someone owns them).
    """
    for path in sorted(paths, key=len):  # parents first: their children go with them
        trail = list(_trail(obj, path))
        if len(trail) != len(path):
            continue  # not there (any more)
        for depth in range(len(path) - 1, -1, -1):
            container = trail[depth - 1] if depth else obj  # the value at path[:depth]
            _delete(container, path[depth])
            if depth == 0 or container or path[:depth] in keep:
                break  # the container keeps a reason to exist


def _trail(obj: Any, path: Path) -> Iterator[Any]:
    """The values along a path, for as long as they exist."""
    node = obj
    for element in path:
        node = _find(node, element)
        if node is _MISSING:
            return
        yield node


def _find(container: Any, element: str) -> Any:
    kind, _, value = element.partition(":")
    if kind == "f" and isinstance(container, Mapping):
        return container.get(value, _MISSING)
    if isinstance(container, list):
        for item in container:
            if _is_element(item, kind, value):
                return item
    return _MISSING


def _is_element(item: Any, kind: str, value: str) -> bool:
    if kind == "k":
        fields = json.loads(value)
        return isinstance(item, Mapping) and all(
            item.get(key, _MISSING) == val for key, val in fields.items()
        )
    return kind == "v" and _json(item) == value


def _delete(container: Any, element: str) -> None:
    kind, _, value = element.partition(":")
    if kind == "f" and isinstance(container, dict):
        container.pop(value, None)
    elif isinstance(container, list):
        container[:] = [item for item in container if not _is_element(item, kind, value)]
