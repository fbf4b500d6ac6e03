"""Generate the CustomResourceDefinitions in ``crds/`` from the pydantic API models.

Pydantic emits JSON Schema (draft 2020-12); the API server wants a Kubernetes
*structural* OpenAPI v3.0 schema. `structural_schema` bridges the two with a
chain of small, generic node transformations (one job each), so the same code
serves every resource in `operators.api.resources.RESOURCES`:

- every ``$ref`` inlined, ``$defs`` gone (CRDs cannot refer to definitions);
- ``anyOf: [X, {type: null}]`` from ``X | None`` collapsed to X (Kubernetes
  prunes nulls instead of storing them);
- ``title`` dropped (noise in ``kubectl explain``), descriptions kept;
- ``additionalProperties: false`` dropped (pruning already removes unknown
  fields, and the API server refuses ``false``); ``additionalProperties: true``
  (``dict[str, Any]``) becomes ``x-kubernetes-preserve-unknown-fields``;
- ``x-kubernetes-int-or-string`` nodes lose their ``type`` and ``anyOf``;
- ``const`` becomes a one-value ``enum``; numeric ``exclusiveMinimum`` becomes
  OpenAPI 3.0's boolean form;
- ``default`` kept only where it is a plain scalar valid for its node;
- an untyped node (``Any``) becomes ``x-kubernetes-preserve-unknown-fields``;
- keys in a fixed order, so the rendered YAML is byte-for-byte reproducible.

Anything that cannot be expressed structurally (a recursive model, a union of
types) raises `SchemaConversionError` naming the path, rather than producing a
CRD the API server would reject.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from operators.api.base import VERSION
from operators.api.resources import RESOURCES, PrinterColumn, ResourceType

Schema = dict[str, Any]
NodeTransform = Callable[[Schema, str], Schema]

CRD_API_VERSION = "apiextensions.k8s.io/v1"
INT_OR_STRING = "x-kubernetes-int-or-string"
PRESERVE_UNKNOWN = "x-kubernetes-preserve-unknown-fields"
JUNCTORS = ("allOf", "anyOf", "oneOf")

HEADER = (
    "# Generated from the models in operators/api/ by `sluice crds --output-dir crds`.\n"
    "# Do not edit by hand: change the models and regenerate.\n"
)


class SchemaConversionError(ValueError):
    """A model uses a construct a structural CRD schema cannot express."""


# --- walking ----------------------------------------------------------------


def map_children(node: Schema, fn: Callable[[Schema, str], Schema], *, into_junctors: bool = True) -> Schema:
    """A copy of `node` with `fn(child, path_segment)` applied to each sub-schema.

    Only real sub-schema positions are visited: the keys of ``properties`` are
    field names (a field may well be called ``title`` or ``default``), and
    ``enum``/``default``/``required`` hold values, not schemas.
    """
    out = dict(node)
    properties = node.get("properties")
    if isinstance(properties, dict):
        out["properties"] = {name: fn(sub, f".{name}") for name, sub in properties.items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            out[key] = fn(node[key], f".{key}")
    if into_junctors:
        for junctor in JUNCTORS:
            if isinstance(node.get(junctor), list):
                out[junctor] = [fn(sub, f".{junctor}[{i}]") for i, sub in enumerate(node[junctor])]
        if isinstance(node.get("not"), dict):
            out["not"] = fn(node["not"], ".not")
    return out


def map_schema(
    node: Schema, transform: NodeTransform, path: str = "", *, into_junctors: bool = True
) -> Schema:
    """Apply `transform` to every node, parents before children.

    Top-down, so a transformation that replaces a node (a ``$ref``, an
    optional's ``anyOf``) has its result walked in turn.
    """
    node = transform(node, path)
    return map_children(
        node,
        lambda sub, segment: map_schema(sub, transform, path + segment, into_junctors=into_junctors),
        into_junctors=into_junctors,
    )


# --- transformations, one job each ----------------------------------------


def inline_refs(schema: Schema) -> Schema:
    """Replace every ``$ref`` by the definition it points to; drop ``$defs``."""
    definitions: dict[str, Schema] = schema.get("$defs", {})
    root = {key: value for key, value in schema.items() if key != "$defs"}
    return _inline(root, definitions, "", ())


def _inline(node: Schema, definitions: Mapping[str, Schema], path: str, expanding: tuple[str, ...]) -> Schema:
    while "$ref" in node:
        name = _definition_name(node["$ref"], path)
        if name in expanding:
            raise SchemaConversionError(
                f"{path or '.'}: {name} contains itself; a CRD schema cannot be recursive"
            )
        if name not in definitions:
            raise SchemaConversionError(f"{path or '.'}: $ref to unknown definition {name}")
        # Keys next to the $ref (a field's description or default) are more
        # specific than the definition's (a model docstring), so they win.
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        node = {**definitions[name], **siblings}
        expanding = (*expanding, name)
    return map_children(node, lambda sub, segment: _inline(sub, definitions, path + segment, expanding))


def _definition_name(ref: str, path: str) -> str:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise SchemaConversionError(f"{path or '.'}: only local $refs can be inlined, not {ref}")
    return ref.removeprefix(prefix)


def collapse_optional(node: Schema, path: str) -> Schema:
    """``anyOf: [X, {type: null}]`` -> X, keeping the field's own keys over X's."""
    variants = node.get("anyOf")
    if not isinstance(variants, list) or {"type": "null"} not in variants:
        return node
    remaining = [variant for variant in variants if variant != {"type": "null"}]
    siblings = {key: value for key, value in node.items() if key != "anyOf"}
    if len(remaining) == 1:
        return {**remaining[0], **siblings}
    return {**siblings, "anyOf": remaining}


def drop_title(node: Schema, path: str) -> Schema:
    """Titles are pydantic's class and field names: noise in `kubectl explain`."""
    return {key: value for key, value in node.items() if key != "title"}


def const_to_enum(node: Schema, path: str) -> Schema:
    """OpenAPI v3.0 has no ``const`` (a one-value Literal); a one-value enum says the same."""
    if "const" not in node:
        return node
    out = {key: value for key, value in node.items() if key != "const"}
    out["enum"] = [node["const"]]
    return out


def openapi_exclusive_bounds(node: Schema, path: str) -> Schema:
    """JSON Schema's ``exclusiveMinimum: n`` is OpenAPI 3.0's ``minimum: n, exclusiveMinimum: true``."""
    out = dict(node)
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(exclusive)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[bound] = value
            out[exclusive] = True
    return out


def open_objects(node: Schema, path: str) -> Schema:
    """Map ``additionalProperties`` booleans to what a CRD can say.

    ``false`` (``extra="forbid"``) is refused by the API server and pointless:
    pruning drops unknown fields anyway. ``true`` (``dict[str, Any]``) means
    "keep whatever is there", which in a CRD is preserve-unknown-fields.
    """
    closed_or_open = node.get("additionalProperties")
    if not isinstance(closed_or_open, bool):
        return node
    out = {key: value for key, value in node.items() if key != "additionalProperties"}
    if closed_or_open:
        out[PRESERVE_UNKNOWN] = True
    return out


def int_or_string(node: Schema, path: str) -> Schema:
    """An int-or-string node carries no type: the marker is the whole contract."""
    if not node.get(INT_OR_STRING):
        return node
    out = {key: value for key, value in node.items() if key != "type"}
    if _is_union_of_types(node.get("anyOf")):
        del out["anyOf"]
    return out


def reject_unions(node: Schema, path: str) -> Schema:
    """A union of types is not structural; say which field, and what would work."""
    if _is_union_of_types(node.get("anyOf")) or _is_union_of_types(node.get("oneOf")):
        raise SchemaConversionError(
            f"{path or '.'}: a union of types cannot be a CRD field; "
            f"use one type, or int | str with json_schema_extra={{'{INT_OR_STRING}': True}}"
        )
    return node


def _is_union_of_types(variants: object) -> bool:
    return isinstance(variants, list) and any(isinstance(v, dict) and "type" in v for v in variants)


def keep_plain_defaults(node: Schema, path: str) -> Schema:
    """Keep a ``default`` only if it is a scalar the node itself accepts.

    The API server applies defaults before validating, so an invalid one would
    make every object invalid; ``None`` defaults (unset optionals) and
    container defaults (``default_factory``) are better left to the models.
    """
    if "default" not in node or _default_is_usable(node, node["default"]):
        return node
    return {key: value for key, value in node.items() if key != "default"}


_SCALAR_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _default_is_usable(node: Schema, value: object) -> bool:
    return _fits_type(node, value) and _fits_enum(node, value) and _fits_bounds(node, value)


def _fits_type(node: Schema, value: object) -> bool:
    if node.get(INT_OR_STRING):
        return isinstance(value, int | str) and not isinstance(value, bool)
    expected = _SCALAR_TYPES.get(str(node.get("type")))
    if expected is None:
        return False
    # bool is an int in Python, but not in JSON.
    if isinstance(value, bool) != (node.get("type") == "boolean"):
        return False
    return isinstance(value, expected)


def _fits_enum(node: Schema, value: object) -> bool:
    return "enum" not in node or value in node["enum"]


def _fits_bounds(node: Schema, value: object) -> bool:
    if isinstance(value, str):
        pattern = node.get("pattern")
        return (pattern is None or re.search(pattern, value) is not None) and (
            node.get("minLength", 0) <= len(value) <= node.get("maxLength", len(value))
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = node.get("minimum"), node.get("maximum")
        too_low = low is not None and (value <= low if node.get("exclusiveMinimum") else value < low)
        too_high = high is not None and (value >= high if node.get("exclusiveMaximum") else value > high)
        return not (too_low or too_high)
    return True


_SHAPE_KEYS = ("type", "properties", "items", "additionalProperties", "enum", "not", *JUNCTORS)


def untyped_means_anything(node: Schema, path: str) -> Schema:
    """A node with no shape at all (``Any``) accepts any JSON value.

    Structurally that is preserve-unknown-fields with no type. Applied outside
    junctors only: ``oneOf: [{required: [a]}]`` members are untyped on purpose.
    """
    if node.get(INT_OR_STRING) or node.get(PRESERVE_UNKNOWN) or any(key in node for key in _SHAPE_KEYS):
        return node
    return {**node, PRESERVE_UNKNOWN: True}


# Keywords first in the order people read them, then anything else sorted.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
)


def order_keys(node: Schema, path: str) -> Schema:
    """A fixed key order, so the rendered YAML does not depend on how it was built.

    Property names keep the model's field order: that is the order users read.
    """
    known = [key for key in _KEY_ORDER if key in node]
    rest = sorted(key for key in node if key not in _KEY_ORDER)
    return {key: node[key] for key in (*known, *rest)}


# Order matters: optionals collapse before anything looks at types, and
# defaults are judged once bounds and int-or-string are in their final form.
NODE_TRANSFORMS: tuple[NodeTransform, ...] = (
    collapse_optional,
    drop_title,
    const_to_enum,
    openapi_exclusive_bounds,
    open_objects,
    int_or_string,
    reject_unions,
    keep_plain_defaults,
)


def structural_schema(model: type[BaseModel]) -> Schema:
    """The model's JSON Schema as a Kubernetes structural OpenAPI v3 schema."""
    schema = inline_refs(model.model_json_schema(by_alias=True))
    for transform in NODE_TRANSFORMS:
        schema = map_schema(schema, transform)
    schema = map_schema(schema, untyped_means_anything, into_junctors=False)
    return map_schema(schema, order_keys)


# --- the CRD ----------------------------------------------------------------


def build_crd(resource: ResourceType) -> dict[str, Any]:
    """The CustomResourceDefinition that serves `resource`."""
    return {
        "apiVersion": CRD_API_VERSION,
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.crd_name,
            "labels": {"app.kubernetes.io/part-of": "sluice"},
        },
        "spec": {
            "group": resource.group,
            "names": _names(resource),
            "scope": resource.scope,
            "versions": [_version(resource)],
        },
    }


def _names(resource: ResourceType) -> dict[str, Any]:
    names: dict[str, Any] = {
        "kind": resource.kind,
        "listKind": resource.list_kind,
        "plural": resource.plural,
        "singular": resource.singular,
    }
    if resource.short_names:
        names["shortNames"] = list(resource.short_names)
    if resource.categories:
        names["categories"] = list(resource.categories)
    return names


def _version(resource: ResourceType) -> dict[str, Any]:
    schema = root_schema(resource)
    return {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": _subresources(resource, schema),
        "additionalPrinterColumns": [_printer_column(column) for column in resource.printer_columns],
        "schema": {"openAPIV3Schema": schema},
    }


def _subresources(resource: ResourceType, schema: Schema) -> dict[str, Any]:
    """Every resource has /status; one that runs pods has /scale too, so autoscalers can drive it."""
    subresources: dict[str, Any] = {"status": {}}
    if resource.scale is not None:
        _check_scale_path(schema, resource.scale.spec_replicas_path, ".spec", "integer")
        _check_scale_path(schema, resource.scale.status_replicas_path, ".status", "integer")
        _check_scale_path(schema, resource.scale.label_selector_path, ".status", "string")
        subresources["scale"] = {
            "specReplicasPath": resource.scale.spec_replicas_path,
            "statusReplicasPath": resource.scale.status_replicas_path,
            "labelSelectorPath": resource.scale.label_selector_path,
        }
    return subresources


def _check_scale_path(schema: Schema, path: str, under: str, kind: str) -> None:
    """A scale path must name a field of `kind` under `under` in the schema, or /scale reads nothing."""
    node: Schema | None = schema
    for name in path.removeprefix(".").split("."):
        node = (node or {}).get("properties", {}).get(name)
    if not path.startswith(f"{under}.") or node is None or node.get("type") != kind:
        raise SchemaConversionError(f"scale path {path} must name a field of type {kind} under {under}")


def _printer_column(column: PrinterColumn) -> dict[str, Any]:
    rendered: dict[str, Any] = {"name": column.name, "type": column.type, "jsonPath": column.json_path}
    if column.description:
        rendered["description"] = column.description
    if column.priority:
        rendered["priority"] = column.priority
    return rendered


def root_schema(resource: ResourceType) -> Schema:
    """The whole object: apiVersion, kind, metadata, spec (required) and status.

    The resource's `object_rules` (CEL) go here, at the root: rules there may read
    ``self.metadata.name``, as a Rollout's name rule does.
    """
    schema: Schema = {
        "description": resource.description,
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "description": "Versioned schema of this object, e.g. sluice.dev/v1alpha1.",
                "type": "string",
            },
            "kind": {"description": f"Always {resource.kind}.", "type": "string"},
            # Only name/generateName may be restricted here; the API server
            # validates the rest of ObjectMeta itself.
            "metadata": {"type": "object"},
            "spec": _described(
                structural_schema(resource.spec_model), f"The desired state of the {resource.kind}."
            ),
            "status": _described(
                structural_schema(resource.status_model),
                f"The observed state of the {resource.kind}, written by the operator.",
            ),
        },
    }
    if resource.object_rules:
        schema["x-kubernetes-validations"] = [rule.to_schema() for rule in resource.object_rules]
    return schema


def _described(schema: Schema, fallback: str) -> Schema:
    """Give a top-level schema a description when its model has no docstring."""
    if "description" in schema:
        return schema
    return order_keys({**schema, "description": fallback}, "")


# --- rendering and files ----------------------------------------------------


class _CrdDumper(yaml.SafeDumper):
    """Block style throughout; multi-line text as literal blocks, as people write it."""

    def ignore_aliases(self, data: Any) -> bool:
        # Inlined definitions share objects (an enum used twice); anchors and
        # aliases would be correct YAML but unreadable in a CRD.
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_CrdDumper.add_representer(str, _represent_str)


def render_yaml(document: Mapping[str, Any]) -> str:
    """Deterministic YAML: insertion order (already canonical), no line folding."""
    body = yaml.dump(
        document,
        Dumper=_CrdDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )
    return HEADER + body


def render_crds() -> dict[str, str]:
    """File name -> YAML text of every Sluice CRD, e.g. ``{"rollout.yaml": "..."}``."""
    return {resource.file_name: render_yaml(build_crd(resource)) for resource in RESOURCES}


def write_crds(output_dir: str | Path) -> list[Path]:
    """Write every CRD into `output_dir` (created if needed); returns the paths written."""
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in render_crds().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale_crds(crds_dir: str | Path) -> list[str]:
    """Names of the CRD files in `crds_dir` that are missing or differ from the models."""
    directory = Path(crds_dir)
    return sorted(name for name, text in render_crds().items() if _read_or_none(directory / name) != text)


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
