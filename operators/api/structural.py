"""Check a CRD's openAPIV3Schema against Kubernetes' structural-schema rules.

The API server refuses a v1 CRD whose schema is not structural, but only when
someone applies it to a cluster. This checker catches the same mistakes in a
unit test. It follows
https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
and the schema restrictions listed under "Validation" on the same page:

1. every field, ``additionalProperties`` value and array item (and the root)
   has a non-empty ``type``, unless it is ``x-kubernetes-int-or-string: true``
   or ``x-kubernetes-preserve-unknown-fields: true``;
2. whatever ``allOf``/``anyOf``/``oneOf``/``not`` say about a field or item is
   also specified outside them;
3. inside those junctors only value validations: no ``type``,
   ``additionalProperties``, ``description``, ``default``, ``nullable``,
   ``title`` or ``x-kubernetes-*`` (save the two int-or-string patterns);
4. the root's ``metadata`` restricts at most ``name`` and ``generateName``;

plus: no ``$ref`` (or other keywords a CRD cannot hold), ``properties`` and
``additionalProperties`` not both, ``additionalProperties`` not a boolean,
``uniqueItems`` not true, arrays with a single ``items`` schema.

One check goes beyond the API server: a ``required`` name that is not in
``properties`` is reported, because pruning removes unknown fields before
validation and such an object could never be valid.

Problems name the node with a dotted path, e.g. ``.spec.strategy.canary.steps.items``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Node = Mapping[str, Any]

INT_OR_STRING = "x-kubernetes-int-or-string"
PRESERVE_UNKNOWN = "x-kubernetes-preserve-unknown-fields"
EMBEDDED_RESOURCE = "x-kubernetes-embedded-resource"
JUNCTORS = ("allOf", "anyOf", "oneOf")

TYPES = frozenset({"array", "boolean", "integer", "number", "object", "string"})

# The fields of apiextensions/v1 JSONSchemaProps a CRD may set.
KEYWORDS = frozenset(
    {
        "$schema",
        "description",
        "type",
        "format",
        "title",
        "default",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "enum",
        "maxProperties",
        "minProperties",
        "required",
        "items",
        "allOf",
        "oneOf",
        "anyOf",
        "not",
        "properties",
        "additionalProperties",
        "additionalItems",
        "externalDocs",
        "example",
        "nullable",
        PRESERVE_UNKNOWN,
        EMBEDDED_RESOURCE,
        INT_OR_STRING,
        "x-kubernetes-list-map-keys",
        "x-kubernetes-list-type",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
    }
)

# Named by the Kubernetes docs as never allowed (``$defs`` is pydantic's name
# for ``definitions``).
FORBIDDEN = frozenset(
    {
        "$ref",
        "$defs",
        "definitions",
        "dependencies",
        "deprecated",
        "discriminator",
        "id",
        "patternProperties",
        "readOnly",
        "writeOnly",
        "xml",
    }
)

# What rule 3 keeps out of junctors (x-kubernetes-* are checked by prefix).
NOT_IN_JUNCTORS = ("type", "additionalProperties", "description", "default", "nullable", "title")

# The only metadata fields a CRD schema may restrict.
METADATA_FIELDS = frozenset({"name", "generateName"})

# The int-or-string spellings Kubernetes accepts inside a junctor (rule 3's exception).
INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]


def structural_problems(schema: Node) -> list[str]:
    """Every way `schema` (an openAPIV3Schema) breaks the structural rules; empty if none."""
    return list(_node_problems(schema, "", root=True))


def _show(path: str) -> str:
    return path or "."


# --- nodes outside junctors -------------------------------------------------


def _node_problems(node: Node, path: str, *, root: bool = False) -> Iterator[str]:
    yield from _keyword_problems(node, path)
    yield from _type_problems(node, path, root=root)
    yield from _shape_problems(node, path)
    yield from _int_or_string_problems(node, path)
    if root or node.get(EMBEDDED_RESOURCE):
        yield from _metadata_problems(node, path)
    yield from _required_problems(node, node, path)
    yield from _junctor_problems(node, node, path)
    for segment, child in _children(node):
        yield from _node_problems(child, path + segment)


def _children(node: Node) -> Iterator[tuple[str, Node]]:
    """The sub-schemas that describe fields and items (junctors aside)."""
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        for name, child in properties.items():
            if isinstance(child, Mapping):
                yield f".{name}", child
    for key in ("items", "additionalProperties"):
        child = node.get(key)
        if isinstance(child, Mapping):
            yield f".{key}", child


def _keyword_problems(node: Node, path: str) -> Iterator[str]:
    for key in node:
        if key in FORBIDDEN:
            yield f"{_show(path)}: {key} is not allowed in a CRD schema" + (
                " (inline the referenced schema)" if key in ("$ref", "$defs", "definitions") else ""
            )
        elif key not in KEYWORDS:
            yield f"{_show(path)}: {key} is not a CRD schema keyword"


def _type_problems(node: Node, path: str, *, root: bool) -> Iterator[str]:
    kind = node.get("type")
    if kind is None or kind == "":
        if not (node.get(INT_OR_STRING) or node.get(PRESERVE_UNKNOWN) is True):
            yield (
                f"{_show(path)}: type must be set (only x-kubernetes-int-or-string "
                "and x-kubernetes-preserve-unknown-fields nodes may omit it)"
            )
    elif not isinstance(kind, str) or kind not in TYPES:
        yield f"{_show(path)}: type {kind!r} is not one of {', '.join(sorted(TYPES))}"
    if root and kind not in (None, "", "object"):
        yield f"{_show(path)}: the root must be of type object"


def _shape_problems(node: Node, path: str) -> Iterator[str]:
    where = _show(path)
    if "properties" in node and "additionalProperties" in node:
        yield f"{where}: properties and additionalProperties cannot both be set"
    if isinstance(node.get("additionalProperties"), bool):
        yield (
            f"{where}: additionalProperties must be a schema, not a boolean "
            f"(pruning drops unknown fields; use {PRESERVE_UNKNOWN} to keep them)"
        )
    if node.get("uniqueItems") is True:
        yield f"{where}: uniqueItems cannot be true"
    if PRESERVE_UNKNOWN in node and node[PRESERVE_UNKNOWN] is not True:
        yield f"{where}: {PRESERVE_UNKNOWN} must be true or unset"
    if node.get("type") == "array" and not isinstance(node.get("items"), Mapping):
        yield f"{where}: an array needs items with a single schema"
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node and not isinstance(node[bound], bool):
            yield f"{where}: {bound} must be a boolean in OpenAPI v3.0 (with minimum/maximum)"


def _int_or_string_problems(node: Node, path: str) -> Iterator[str]:
    if node.get(INT_OR_STRING) and node.get("type"):
        yield f"{_show(path)}: an {INT_OR_STRING} node must not set type"


def _metadata_problems(node: Node, path: str) -> Iterator[str]:
    metadata = node.get("properties", {}).get("metadata")
    if not isinstance(metadata, Mapping):
        return
    where = f"{path}.metadata"
    if metadata.get("type") not in (None, "object"):
        yield f"{where}: metadata must be of type object"
    extra = sorted(set(metadata) - {"type", "description", "properties"})
    if extra:
        yield f"{where}: only name and generateName may be restricted, not {', '.join(extra)}"
    for name in sorted(set(metadata.get("properties", {})) - METADATA_FIELDS):
        yield f"{where}.{name}: only name and generateName may be restricted"


def _required_problems(node: Node, outer: Node, path: str) -> Iterator[str]:
    """Required names must be specified fields of `outer` (the node outside any junctor)."""
    if outer.get(PRESERVE_UNKNOWN) or isinstance(outer.get("additionalProperties"), Mapping):
        return
    known = outer.get("properties", {})
    for name in node.get("required", []):
        if name not in known:
            yield (
                f"{_show(path)}: required field {name} is not in properties "
                "(pruning would drop it, so no object could be valid)"
            )


# --- value validations inside junctors --------------------------------------


def _junctor_problems(node: Node, outer: Node, path: str) -> Iterator[str]:
    """Check the allOf/anyOf/oneOf/not of `node`, whose fields are specified by `outer`."""
    for junctor in JUNCTORS:
        members = node.get(junctor)
        if not isinstance(members, list):
            continue
        for index, member in enumerate(members):
            if _allowed_int_or_string(outer, junctor, index, members):
                continue
            yield from _value_validation_problems(member, outer, f"{path}.{junctor}[{index}]")
    if isinstance(node.get("not"), Mapping):
        yield from _value_validation_problems(node["not"], outer, f"{path}.not")


def _allowed_int_or_string(outer: Node, junctor: str, index: int, members: list[Any]) -> bool:
    """Rule 3's exception: the two exact spellings of int-or-string Kubernetes accepts."""
    if not outer.get(INT_OR_STRING):
        return False
    if junctor == "anyOf":
        return members == INT_OR_STRING_ANY_OF
    return junctor == "allOf" and index == 0 and members[0] == {"anyOf": INT_OR_STRING_ANY_OF}


def _value_validation_problems(node: object, outer: Node, path: str) -> Iterator[str]:
    if not isinstance(node, Mapping):
        yield f"{path}: must be a schema"
        return
    yield from _keyword_problems(node, path)
    for key in node:
        if key in NOT_IN_JUNCTORS or key.startswith("x-kubernetes-"):
            yield f"{path}: {key} is not allowed inside allOf/anyOf/oneOf/not"
    yield from _required_problems(node, outer, path)
    yield from _junctor_problems(node, outer, path)
    yield from _nested_value_validation_problems(node, outer, path)


def _nested_value_validation_problems(node: Node, outer: Node, path: str) -> Iterator[str]:
    """Rule 2: a field or item a junctor talks about must also be specified outside it."""
    outer_properties = outer.get("properties", {})
    for name, child in node.get("properties", {}).items():
        if name not in outer_properties:
            yield f"{path}.{name}: not specified outside allOf/anyOf/oneOf/not"
        else:
            yield from _value_validation_problems(child, outer_properties[name], f"{path}.{name}")
    if "items" in node:
        if not isinstance(outer.get("items"), Mapping):
            yield f"{path}.items: not specified outside allOf/anyOf/oneOf/not"
        else:
            yield from _value_validation_problems(node["items"], outer["items"], f"{path}.items")
