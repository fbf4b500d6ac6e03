"""
A CRD version's structural schema applied to custom objects, as the API server does on every write:

1. **Pruning**: fields the schema does not specify are dropped, except under
   ``x-kubernetes-preserve-unknown-fields: true``, and ``apiVersion``/``kind``/``metadata`` at the
   root and in ``x-kubernetes-embedded-resource`` objects. The dropped paths are returned, so that
   the caller can refuse them (``fieldValidation=Strict``) or warn about them (``Warn``).
2. **Defaulting**: ``default`` fills absent fields, and null ones that may not be null; nulls that
   may not be null and have no default are dropped. Defaults are applied top-down, so the fields
   of a defaulted object get their own defaults too.
3. **Validation**: the OpenAPI v3 subset that structural schemas use (``type``, ``nullable``,
   ``enum``, bounds with OpenAPI 3.0's boolean ``exclusiveMinimum``/``Maximum``, lengths,
   ``pattern``, item and property counts, ``uniqueItems``, ``required``, ``allOf``/``anyOf``/
   ``oneOf``/``not``), ``x-kubernetes-int-or-string``, and the uniqueness of
   ``x-kubernetes-list-type: set|map`` lists. Problems are :class:`FieldError` s worded as
   kube-openapi's errors (``spec.replicas in body should be greater than or equal to 0``).
   On updates, values equal to the stored ones are not validated again (the API server's
   validation ratcheting, on by default since Kubernetes 1.30): a label write does not fail on a
   field that an older schema allowed, and an update costs what its changes cost.
4. **CEL rules** (``x-kubernetes-validations``, see :mod:`sluice_sandbox.celrules`), when the
   steps before found nothing that blocks them (a wrong type, a missing required field…), as
   the API server does; their violations follow the schema's.

The schema is compiled once into a tree of nodes: a generic JSON Schema library was several
times slower, and this runs on every write of a custom object.

Not implemented: ``format`` checks (int32, date-time…), matching list items to old ones for
ratcheting (a changed list is validated whole; CEL rules do match map lists' items by key), and
pruning or validating ``metadata`` (the store checks names itself).

Each step works on a :class:`Part` of the object: a write through ``/status`` touches only the
status, and a write through the main endpoint of a resource with a status subresource touches
everything but the status (the store keeps the old one), as in the API server. (The CEL rules see
the whole object, as there; ratcheting skips the part that the write could not change.)
"""

import copy
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from sluice_sandbox.celrules import ROOT_FIELD, compile_rules
from sluice_sandbox.errors import FieldError, FieldErrorType

Path = tuple[str | int, ...]

PRESERVE_UNKNOWN = "x-kubernetes-preserve-unknown-fields"
EMBEDDED_RESOURCE = "x-kubernetes-embedded-resource"
INT_OR_STRING = "x-kubernetes-int-or-string"
LIST_TYPE = "x-kubernetes-list-type"
LIST_MAP_KEYS = "x-kubernetes-list-map-keys"
_ALWAYS_KEPT = frozenset({"apiVersion", "kind", "metadata"})  # at the root & in embedded resources
_MISSING: Any = object()  # no old value to compare with (a create, a new field)
_NOTHING: frozenset[str] = frozenset()


class Part(enum.Enum):
    WHOLE = "whole"
    MAIN = "main"  # everything but the status
    STATUS = "status"


def render_path(path: Path) -> str:
    """A path as Kubernetes writes it: ``spec.steps[0].setWeight``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text or "<root>"


class StructuralSchema:
    """One ``openAPIV3Schema``, compiled once, to prune, default and validate objects with."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        """Raises celrules.CompileError for a CEL rule that does not compile (see crds.py)."""
        self.schema = schema
        self._root = _Node(schema)
        self._rules = compile_rules(schema)
        # Validation of the main part must not require the status (kept from the stored object).
        properties = schema.get("properties") or {}
        self._main = (
            self._root
            if "status" not in properties
            else _Node(
                dict(
                    schema,
                    properties={key: value for key, value in properties.items() if key != "status"},
                    required=[name for name in schema.get("required", []) if name != "status"],
                )
            )
        )

    def prune(self, obj: dict[str, Any], part: Part = Part.WHOLE) -> list[str]:
        """Drop the fields that the schema does not specify, in place; return their paths."""
        unknown: list[str] = []
        self._root.prune_fields(obj, (), unknown, keep=_ALWAYS_KEPT, part=part)
        return unknown

    def default(self, obj: dict[str, Any], part: Part = Part.WHOLE) -> None:
        """Apply the schema's defaults in place (see the module's docs)."""
        self._root.default_fields(obj, keep=_ALWAYS_KEPT, part=part)

    def validate(
        self, obj: Mapping[str, Any], part: Part = Part.WHOLE, old: Mapping[str, Any] | None = None
    ) -> list[FieldError]:
        """
        The problems of the object's part, sorted by field. With the ``old`` object (an update),
        what did not change is not validated again: the API server's validation ratcheting, which
        also spares re-validating a whole Rollout when one field changes.
        """
        errors: list[FieldError] = []
        previous = _MISSING if old is None else old
        if part is not Part.STATUS:
            (self._main if part is Part.MAIN else self._root).check(obj, (), errors, previous)
        elif "status" in self._root.properties and "status" in obj:
            previous_status = previous.get("status", _MISSING) if isinstance(previous, Mapping) else _MISSING
            self._root.properties["status"].check(obj["status"], ("status",), errors, previous_status)
        errors.sort(key=lambda problem: problem.field)
        if self._rules is None:
            return errors
        if any(problem.type in _BLOCKING_CEL for problem in errors):
            return [*errors, FieldError.invalid(ROOT_FIELD, None, _CEL_NOT_CHECKED)]
        # The rules see the whole object whatever the part: what the write did not change is
        # equal to the old object's, and ratcheting skips it.
        return errors + self._rules.validate(obj, old)


# Schema errors after which the API server does not evaluate the CEL rules, which could not
# expect such values (apiextensions-apiserver's hasBlockingErr); it says so instead.
_BLOCKING_CEL = frozenset(
    {
        FieldErrorType.NOT_SUPPORTED,
        FieldErrorType.REQUIRED,
        FieldErrorType.TOO_LONG,
        FieldErrorType.TOO_MANY,
        FieldErrorType.TYPE_INVALID,
    }
)
_CEL_NOT_CHECKED = (
    "some validation rules were not checked because the object was invalid; "
    "correct the existing errors to complete validation"
)


def part_of(key: str, part: Part) -> bool:
    """Whether a top-level field of an object belongs to the part."""
    return part is Part.WHOLE or (key == "status") == (part is Part.STATUS)


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda value: isinstance(value, dict),
    "array": lambda value: isinstance(value, list),
    "string": lambda value: isinstance(value, str),
    "boolean": lambda value: isinstance(value, bool),
    "number": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    # Go decodes 1.0 into an integral number that passes as an integer; so does Kubernetes.
    "integer": lambda value: (
        (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer())
    ),
}


class _Node:
    """One schema node, with what pruning, defaulting and validation need of it at hand."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.type: str | None = schema.get("type")
        self.type_check = _TYPE_CHECKS.get(self.type or "")
        self.int_or_string = bool(schema.get(INT_OR_STRING))
        self.nullable = bool(schema.get("nullable"))
        self.enum: Sequence[Any] | None = schema.get("enum")
        self.required: Sequence[str] = schema.get("required") or ()
        self.properties = {key: _Node(child) for key, child in (schema.get("properties") or {}).items()}
        additional = schema.get("additionalProperties")
        self.additional = _Node(additional) if isinstance(additional, Mapping) else None
        self.items = _Node(schema["items"]) if isinstance(schema.get("items"), Mapping) else None
        self.keep_unknown = bool(schema.get(PRESERVE_UNKNOWN)) or additional is True
        self.embedded = bool(schema.get(EMBEDDED_RESOURCE))
        self.defaults = [
            (key, child["default"])
            for key, child in (schema.get("properties") or {}).items()
            if "default" in child
        ]
        self.all_of = [_Node(child) for child in schema.get("allOf") or ()]
        self.any_of = [_Node(child) for child in schema.get("anyOf") or ()]
        self.one_of = [_Node(child) for child in schema.get("oneOf") or ()]
        self.not_ = _Node(schema["not"]) if isinstance(schema.get("not"), Mapping) else None
        self.junctors = bool(self.all_of or self.any_of or self.one_of or self.not_)
        self.list_type: str | None = schema.get(LIST_TYPE)
        self.map_keys: Sequence[str] = schema.get(LIST_MAP_KEYS) or ()
        self.rules = [
            (keyword, _RULES[keyword], schema[keyword], schema) for keyword in _RULES if keyword in schema
        ]
        if "pattern" in schema:
            self.pattern = re.compile(schema["pattern"])
        # A leaf with nothing but a scalar type to check (most fields): checked inline by its parent.
        self.simple_type = (
            None
            if (
                self.type in (None, "object", "array")
                or self.nullable
                or self.enum is not None
                or self.rules
                or self.junctors
                or self.int_or_string
            )
            else self.type_check
        )

    def child(self, key: str) -> "_Node | None":
        return self.properties.get(key) or self.additional

    # Pruning and defaulting descend only into objects and arrays: scalars have nothing to prune
    # or default, and skipping them halves the calls (these run on every write).

    # ----- Pruning -----

    def prune(self, value: dict[str, Any] | list[Any], path: Path, unknown: list[str]) -> None:
        if isinstance(value, dict):
            self.prune_fields(value, path, unknown, keep=_ALWAYS_KEPT if self.embedded else _NOTHING)
        elif self.items is not None:
            for index, item in enumerate(value):
                if isinstance(item, dict | list):
                    self.items.prune(item, (*path, index), unknown)

    def prune_fields(
        self,
        obj: dict[str, Any],
        path: Path,
        unknown: list[str],
        *,
        keep: AbstractSet[str],
        part: Part = Part.WHOLE,
    ) -> None:
        for key in list(obj):
            if key in keep or not (path or part_of(key, part)):
                continue
            child = self.properties.get(key) or self.additional
            if child is None:
                if not self.keep_unknown:
                    del obj[key]
                    unknown.append(render_path((*path, key)))
            elif isinstance(obj[key], dict | list):
                child.prune(obj[key], (*path, key), unknown)

    # ----- Defaulting -----

    def default(self, value: dict[str, Any] | list[Any]) -> None:
        if isinstance(value, dict):
            self.default_fields(value, keep=_NOTHING)
        elif self.items is not None:
            for item in value:
                if isinstance(item, dict | list):
                    self.items.default(item)

    def default_fields(self, obj: dict[str, Any], *, keep: AbstractSet[str], part: Part = Part.WHOLE) -> None:
        """Nulls that may not be null go, absent fields get defaults, then the same for each field."""
        if part is not Part.STATUS:  # the status itself is never defaulted, only its fields
            if None in obj.values():
                for key in [key for key, value in obj.items() if value is None and key not in keep]:
                    child = self.child(key)
                    if child is not None and not child.nullable and part_of(key, part):
                        del obj[key]
            for key, default in self.defaults:
                if key not in obj and part_of(key, part):
                    obj[key] = copy.deepcopy(default) if isinstance(default, dict | list) else default
        for key, value in obj.items():
            if isinstance(value, dict | list) and key not in keep and part_of(key, part):
                child = self.properties.get(key) or self.additional
                if child is not None:
                    child.default(value)

    # ----- Validation -----

    def check(self, value: Any, path: Path, errors: list[FieldError], old: Any = _MISSING) -> None:
        """Add the value's problems to ``errors``; none if it equals ``old`` (see validate())."""
        unchanged = old is not _MISSING and type(value) is type(old) and value == old
        if unchanged or (value is None and self.nullable):
            return
        if self.type_check is not None and not self.type_check(value):
            errors.append(_type_error(path, str(self.type), value))
            return  # as kube-openapi: nothing else is checked on a value of the wrong type
        if self.int_or_string and not (isinstance(value, str) or _TYPE_CHECKS["integer"](value)):
            errors.append(_type_error(path, "integer,string", value))
            return
        if self.enum is not None and not any(_same(value, choice) for choice in self.enum):
            errors.append(FieldError.not_supported(render_path(path), value, self.enum))
        for keyword, rule, expected, schema in self.rules:
            detail = rule(self, value, expected, schema)
            if detail is not None:
                errors.append(_value_error(keyword, path, value, expected, detail))
        if isinstance(value, dict):
            self._check_object(value, path, errors, old if isinstance(old, dict) else {})
        elif isinstance(value, list):
            self._check_array(value, path, errors)
        if self.junctors:
            self._check_junctors(value, path, errors)

    def _check_object(
        self, value: dict[str, Any], path: Path, errors: list[FieldError], old: dict[str, Any]
    ) -> None:
        if self.required:
            errors.extend(
                FieldError.required(render_path((*path, name))) for name in self.required if name not in value
            )
        for key, item in value.items():
            child = self.properties.get(key) or self.additional
            if child is None:
                continue
            if child.simple_type is None:
                child.check(item, (*path, key), errors, old.get(key, _MISSING))
            elif not child.simple_type(item):
                errors.append(_type_error((*path, key), str(child.type), item))

    def _check_array(self, value: list[Any], path: Path, errors: list[FieldError]) -> None:
        if self.items is not None:
            for index, item in enumerate(value):  # items are not matched with old ones: all checked
                self.items.check(item, (*path, index), errors, _MISSING)
        if self.list_type in ("set", "map"):
            seen: list[Any] = []
            for index, item in enumerate(value):
                identity = (
                    {key: item.get(key) for key in self.map_keys}
                    if self.list_type == "map" and isinstance(item, dict)
                    else item
                )
                if identity in seen:
                    errors.append(FieldError(FieldErrorType.DUPLICATE, render_path((*path, index)), identity))
                seen.append(identity)

    def _check_junctors(self, value: Any, path: Path, errors: list[FieldError]) -> None:
        for child in self.all_of:
            child.check(value, path, errors, _MISSING)
        if self.not_ is not None and not self.not_.problems(value, path):
            errors.append(_value_error("not", path, value, None, "must not validate the schema (not)"))
        for junctor, alternatives in (("anyOf", self.any_of), ("oneOf", self.one_of)):
            if not alternatives:
                continue
            outcomes: list[list[FieldError]] = [child.problems(value, path) for child in alternatives]
            valid = sum(1 for outcome in outcomes if not outcome)
            if junctor == "anyOf" and valid == 0:
                detail = f'"{render_path(path)}" must validate at least one schema (anyOf)'
            elif junctor == "oneOf" and valid != 1:
                found = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
                detail = f'"{render_path(path)}" must validate one and only one schema (oneOf). {found}'
            else:
                continue
            errors.append(FieldError.invalid(render_path(path), _shown(value), detail))
            if valid == 0:  # what the closest alternative lacks, as kube-openapi reports it
                closest = min(outcomes, key=len)
                errors.extend(closest)

    def problems(self, value: Any, path: Path) -> list[FieldError]:
        errors: list[FieldError] = []
        self.check(value, path, errors, _MISSING)
        return errors


def _same(left: Any, right: Any) -> bool:
    return bool(left == right) and isinstance(left, bool) == isinstance(right, bool)


def _bound(word: str, exclusive_key: str) -> Callable[[_Node, Any, Any, Mapping[str, Any]], str | None]:
    def rule(node: _Node, value: Any, limit: Any, schema: Mapping[str, Any]) -> str | None:
        if not _TYPE_CHECKS["number"](value):
            return None
        exclusive = bool(schema.get(exclusive_key))
        beyond = (
            (value > limit or (exclusive and value == limit))
            if word == "less"
            else (value < limit or (exclusive and value == limit))
        )
        return f"should be {word} than{'' if exclusive else ' or equal to'} {limit}" if beyond else None

    return rule


def _when(
    kind: type | tuple[type, ...], failed: Callable[[Any, Any], bool], detail: str
) -> Callable[[_Node, Any, Any, Mapping[str, Any]], str | None]:
    """A rule on values of one Python type: ``detail`` (formatted with the limit) when ``failed``."""

    def rule(node: _Node, value: Any, limit: Any, schema: Mapping[str, Any]) -> str | None:
        return detail.format(limit) if isinstance(value, kind) and failed(value, limit) else None

    return rule


def _multiple_of(node: _Node, value: Any, factor: Any, schema: Mapping[str, Any]) -> str | None:
    if not _TYPE_CHECKS["number"](value):
        return None
    quotient = value / factor
    return None if float(quotient).is_integer() else f"should be a multiple of {factor}"


def _max_length(node: _Node, value: Any, limit: int, schema: Mapping[str, Any]) -> str | None:
    # Counted in characters (as kube-openapi does), worded as field.TooLong() words it.
    if not isinstance(value, str) or len(value) <= limit:
        return None
    return f"may not be more than {limit} {'byte' if limit == 1 else 'bytes'}"


def _pattern(node: _Node, value: Any, pattern: str, schema: Mapping[str, Any]) -> str | None:
    return None if not isinstance(value, str) or node.pattern.search(value) else f"should match '{pattern}'"


def _unique(node: _Node, value: Any, unique: bool, schema: Mapping[str, Any]) -> str | None:
    if not unique or not isinstance(value, list):
        return None
    return (
        "shouldn't contain duplicates"
        if any(value[i] == value[j] for i in range(len(value)) for j in range(i))
        else None
    )


_RULES: dict[str, Callable[[_Node, Any, Any, Mapping[str, Any]], str | None]] = {
    "maximum": _bound("less", "exclusiveMaximum"),
    "minimum": _bound("greater", "exclusiveMinimum"),
    "multipleOf": _multiple_of,
    "maxLength": _max_length,
    "minLength": _when(str, lambda value, limit: len(value) < limit, "should be at least {0} chars long"),
    "pattern": _pattern,
    "maxItems": _when(list, lambda value, limit: len(value) > limit, "must have at most {0} items"),
    "minItems": _when(list, lambda value, limit: len(value) < limit, "should have at least {0} items"),
    "uniqueItems": _unique,
    "maxProperties": _when(dict, lambda value, limit: len(value) > limit, "must have at most {0} items"),
    "minProperties": _when(
        dict, lambda value, limit: len(value) < limit, "should have at least {0} properties"
    ),
}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _shown(value: Any) -> Any:
    """The bad value in an ``Invalid value:`` message: scalars as they are, composites by type."""
    return _type_name(value) if isinstance(value, dict | list) else value


def _type_error(path: Path, expected: str, value: Any) -> FieldError:
    field, name = render_path(path), _type_name(value)
    detail = f'{field} in body must be of type {expected}: "{name}"'
    return FieldError(FieldErrorType.TYPE_INVALID, field, name, detail)


def _value_error(keyword: str, path: Path, value: Any, limit: Any, detail: str) -> FieldError:
    """Worded as kube-openapi's errors, which Kubernetes turns into field errors by their kind."""
    field = render_path(path)
    if keyword == "maxLength":
        return FieldError(FieldErrorType.TOO_LONG, field, value, detail)
    if keyword in ("maxItems", "maxProperties"):
        return FieldError(FieldErrorType.TOO_MANY, field, len(value), detail)
    if keyword == "not":
        return FieldError.invalid(field, _shown(value), f'"{field}" {detail}')
    return FieldError.invalid(field, _shown(value), f"{field} in body {detail}")
