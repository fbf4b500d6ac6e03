"""
The OpenAPI documents of the served resources: ``/openapi/v3`` (an index of one document per
group-version) and ``/openapi/v2`` (one document, JSON only).

What kubectl reads in them, and so what they must get right:

* ``kubectl apply`` validates with the server (``fieldValidation=Strict``) only if the PATCH
  operation of the object's group-version-kind lists a ``fieldValidation`` query parameter in the
  v3 document; otherwise it falls back to client-side validation with the v2 document, which it
  reads in protobuf only (so the sandbox's JSON-only v2 would fail every apply).
* It picks a strategic merge patch when that PATCH operation accepts
  ``application/strategic-merge-patch+json``, computing the patch from the v3 schema. Built-ins
  are served with an open schema (no ``x-kubernetes-patch-merge-key``), so that content type is
  not advertised: kubectl then computes strategic merge patches from its compiled-in types, which
  know the merge keys. Custom resources get merge patches, as from a real server.
* ``kubectl explain`` reads the schema whose ``x-kubernetes-group-version-kind`` matches: for
  custom resources, the CRD's ``openAPIV3Schema`` (with ``metadata`` as ObjectMeta).
"""

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from sluice_sandbox.patching import PatchType
from sluice_sandbox.resources import JsonObject, ResourceSpec

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META, LIST_META = f"{META}.ObjectMeta", f"{META}.ListMeta"
STATUS, DELETE_OPTIONS, PATCH = f"{META}.Status", f"{META}.DeleteOptions", f"{META}.Patch"
SCALE = "io.k8s.api.autoscaling.v1.Scale"
V2_MEDIA_TYPES = ("application/json", "application/yaml")
INFO = {"title": "Kubernetes", "version": "v1.32.0+sluice-sandbox"}

Ref = Callable[[str], JsonObject]


# ----- The resources' schemas -----


def definition_name(spec: ResourceSpec, kind: str | None = None) -> str:
    """As Kubernetes names them: io.k8s.api.apps.v1.Deployment, dev.sluice.v1alpha1.Rollout."""
    if spec.builtin:
        package = spec.group.split(".")[0] if spec.group else "core"
        return f"io.k8s.api.{package}.{spec.version}.{kind or spec.kind}"
    return f"{'.'.join(reversed(spec.group.split('.')))}.{spec.version}.{kind or spec.kind}"


def _gvk(spec: ResourceSpec, kind: str | None = None) -> JsonObject:
    return {"group": spec.group, "version": spec.version, "kind": kind or spec.kind}


def _string(description: str) -> JsonObject:
    return {"type": "string", "description": description}


def object_schema(spec: ResourceSpec, ref: Ref) -> JsonObject:
    """The kind's schema: a CRD version's openAPIV3Schema, or an open one for a built-in."""
    if spec.schema is not None:
        schema = dict(spec.schema)
        properties = dict(schema.get("properties") or {})
    else:
        schema = {"type": "object", "description": f"{spec.kind} (served by the sandbox without its schema)."}
        properties = {
            field: {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            for field in ("spec", "status")
            if field != "status" or spec.status
        }
    properties.setdefault("apiVersion", _string("APIVersion defines the versioned schema of this object."))
    properties.setdefault("kind", _string("Kind is a string value representing the REST resource."))
    properties["metadata"] = ref(OBJECT_META)
    schema["properties"] = properties
    schema["x-kubernetes-group-version-kind"] = [_gvk(spec)]
    return schema


def _list_schema(spec: ResourceSpec, ref: Ref) -> JsonObject:
    return {
        "type": "object",
        "required": ["items"],
        "description": f"{spec.kind}List is a list of {spec.kind}.",
        "properties": {
            "apiVersion": _string("APIVersion of the list."),
            "kind": _string("Kind of the list."),
            "items": {"type": "array", "items": ref(definition_name(spec))},
            "metadata": ref(LIST_META),
        },
        "x-kubernetes-group-version-kind": [_gvk(spec, f"{spec.kind}List")],
    }


def _meta_schemas(ref: Ref) -> dict[str, JsonObject]:
    strings = {"type": "object", "additionalProperties": {"type": "string"}}
    return {
        OBJECT_META: {
            "type": "object",
            "description": "Standard object metadata.",
            "properties": {
                "name": _string("Name must be unique within a namespace."),
                "generateName": _string("A prefix the server uses to generate a unique name."),
                "namespace": _string("The namespace of the object."),
                "uid": _string("The unique id of the object, set by the server."),
                "resourceVersion": _string("The version of the object, for concurrency control and watches."),
                "generation": {"type": "integer", "description": "The generation of the desired state."},
                "creationTimestamp": _string("When the object was created."),
                "deletionTimestamp": _string(
                    "When the object will be deleted (once its finalizers are gone)."
                ),
                "labels": dict(strings, description="Labels, for selecting objects."),
                "annotations": dict(strings, description="Annotations, for tools and operators."),
                "finalizers": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "What must happen before the object is deleted.",
                },
                "ownerReferences": {
                    "type": "array",
                    "description": "The objects this object depends on.",
                    "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                },
            },
        },
        LIST_META: {
            "type": "object",
            "description": "Standard list metadata.",
            "properties": {
                "resourceVersion": _string("The version of the list, to watch from."),
                "continue": _string("The token for the next page."),
            },
        },
        STATUS: {
            "type": "object",
            "description": "The result of an operation that returns no object.",
            "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Status"}],
        },
        DELETE_OPTIONS: {
            "type": "object",
            "description": "Options of a deletion.",
            "properties": {
                "propagationPolicy": _string("Orphan, Background or Foreground."),
                "preconditions": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        PATCH: {"type": "object", "description": "A patch, in the format its content type says."},
        SCALE: {
            "type": "object",
            "description": "The scale subresource.",
            "properties": {
                "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                "status": {
                    "type": "object",
                    "properties": {"replicas": {"type": "integer"}, "selector": {"type": "string"}},
                },
                "metadata": ref(OBJECT_META),
            },
            "x-kubernetes-group-version-kind": [{"group": "autoscaling", "version": "v1", "kind": "Scale"}],
        },
    }


# ----- The operations on the resources' paths -----


@dataclasses.dataclass(frozen=True)
class Parameter:
    name: str
    where: str  # 'query' | 'path'
    description: str
    type: str = "string"


_PRETTY = Parameter("pretty", "query", "If 'true', the output is pretty printed.")
_WRITE = (
    Parameter("dryRun", "query", "When present, modifications are not persisted."),
    Parameter("fieldManager", "query", "The name of the actor making the change."),
    Parameter(
        "fieldValidation", "query", "Ignore, Warn or Strict: what to do with fields the schema does not know."
    ),
)
_LIST = tuple(
    Parameter(name, "query", description, type)
    for name, description, type in [
        ("labelSelector", "Restrict the objects by their labels.", "string"),
        ("fieldSelector", "Restrict the objects by their fields.", "string"),
        ("limit", "The most objects to return.", "integer"),
        ("continue", "The token of the next page.", "string"),
        ("resourceVersion", "The version to list or watch from.", "string"),
        ("timeoutSeconds", "How long a watch lasts.", "integer"),
        ("watch", "Watch for changes instead of listing.", "boolean"),
        ("allowWatchBookmarks", "Ask for BOOKMARK events.", "boolean"),
        ("sendInitialEvents", "Start a watch with the current objects.", "boolean"),
    ]
)
_DELETE = (
    Parameter("dryRun", "query", "When present, modifications are not persisted."),
    Parameter("gracePeriodSeconds", "query", "Ignored by the sandbox.", "integer"),
    Parameter("propagationPolicy", "query", "Orphan, Background or Foreground."),
)


@dataclasses.dataclass(frozen=True)
class Operation:
    path: str
    method: str  # get | post | put | patch | delete
    action: str  # x-kubernetes-action: list, post, get, put, patch, delete, deletecollection
    gvk: JsonObject
    parameters: tuple[Parameter, ...]
    response: str | None  # the definition returned
    body: str | None = None  # the definition sent (a PATCH sends the Patch definition)
    patch_types: tuple[str, ...] = ()

    @property
    def operation_id(self) -> str:
        group = "".join(word.capitalize() for word in self.gvk["group"].replace("-", ".").split("."))
        return f"{self.action}{group or 'Core'}{self.gvk['version'].capitalize()}{self.gvk['kind']}"


def operations(spec: ResourceSpec) -> Iterator[Operation]:
    """Every operation on the resource's paths, as the API server lists them."""
    prefix = f"/apis/{spec.group}/{spec.version}" if spec.group else "/api/v1"
    scoped = (
        f"{prefix}/namespaces/{{namespace}}/{spec.plural}" if spec.namespaced else (f"{prefix}/{spec.plural}")
    )
    kind, kind_list = definition_name(spec), definition_name(spec, f"{spec.kind}List")
    gvk = _gvk(spec)
    patch_types = tuple(patch.value for patch in (PatchType.JSON, PatchType.MERGE))
    yield Operation(scoped, "get", "list", gvk, _LIST, kind_list)
    yield Operation(scoped, "post", "post", gvk, _WRITE, kind, body=kind)
    if "deletecollection" in spec.verbs:
        yield Operation(scoped, "delete", "deletecollection", gvk, (*_DELETE, *_LIST), STATUS)
    if spec.namespaced:
        yield Operation(f"{prefix}/{spec.plural}", "get", "list", gvk, _LIST, kind_list)
    scale_gvk = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    for suffix, target, target_gvk in [
        ("", kind, gvk),
        *([("/status", kind, gvk)] if spec.status else []),
        *([("/scale", SCALE, scale_gvk)] if spec.scale else []),
    ]:
        path = f"{scoped}/{{name}}{suffix}"
        yield Operation(path, "get", "get", target_gvk, (), target)
        yield Operation(path, "put", "put", target_gvk, _WRITE, target, body=target)
        yield Operation(
            path,
            "patch",
            "patch",
            target_gvk,
            (*_WRITE, Parameter("force", "query", "Ignored by the sandbox.", "boolean")),
            target,
            body=PATCH,
            patch_types=patch_types,
        )
        if not suffix:  # subresources are not deleted
            yield Operation(path, "delete", "delete", gvk, _DELETE, STATUS, body=DELETE_OPTIONS)


def _path_parameters(path: str) -> list[Parameter]:
    names = [name for name in ("namespace", "name") if f"{{{name}}}" in path]
    return [Parameter(name, "path", f"The {name} of the object.") for name in names] + [_PRETTY]


def _paths(
    specs: Iterable[ResourceSpec],
    render_parameter: Callable[[Parameter], JsonObject],
    render_operation: Callable[[Operation], JsonObject],
) -> dict[str, JsonObject]:
    paths: dict[str, JsonObject] = {}
    for spec in specs:
        for operation in operations(spec):
            shared = [render_parameter(parameter) for parameter in _path_parameters(operation.path)]
            item = paths.setdefault(operation.path, {"parameters": shared})
            item[operation.method] = render_operation(operation)
    return paths


def _definitions(specs: Iterable[ResourceSpec], ref: Ref) -> dict[str, JsonObject]:
    definitions = _meta_schemas(ref)
    for spec in specs:
        definitions[definition_name(spec)] = object_schema(spec, ref)
        definitions[definition_name(spec, f"{spec.kind}List")] = _list_schema(spec, ref)
    return definitions


# ----- OpenAPI v3: an index, and one document per group-version -----


def _v3_ref(name: str) -> JsonObject:
    return {"$ref": f"#/components/schemas/{name}"}


def _v3_parameter(parameter: Parameter) -> JsonObject:
    return {
        "name": parameter.name,
        "in": parameter.where,
        "description": parameter.description,
        "required": parameter.where == "path",
        "schema": {"type": parameter.type, "uniqueItems": True},
    }


def _v3_operation(operation: Operation) -> JsonObject:
    result: JsonObject = {
        "operationId": operation.operation_id,
        "parameters": [_v3_parameter(parameter) for parameter in operation.parameters],
        "responses": {
            "200": {
                "description": "OK",
                "content": {media: {"schema": _v3_ref(operation.response)} for media in V2_MEDIA_TYPES},
            }
        }
        if operation.response
        else {"200": {"description": "OK"}},
        "x-kubernetes-action": operation.action,
        "x-kubernetes-group-version-kind": operation.gvk,
    }
    if operation.body is not None:
        content = {
            media: {"schema": _v3_ref(operation.body)} for media in operation.patch_types or V2_MEDIA_TYPES
        }
        result["requestBody"] = {"content": content, "required": operation.method != "delete"}
    return result


def v3_document(specs: Iterable[ResourceSpec]) -> JsonObject:
    """The OpenAPI v3 document of one group-version's resources."""
    specs = list(specs)
    return {
        "openapi": "3.0.0",
        "info": INFO,
        "paths": _paths(specs, _v3_parameter, _v3_operation),
        "components": {"schemas": _definitions(specs, _v3_ref)},
    }


def group_version_path(group: str, version: str) -> str:
    """The key of a group-version in the v3 index: ``api/v1``, ``apis/apps/v1``."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


class OpenApiDocuments:
    """The documents of the served resources, rebuilt only when those change."""

    def __init__(self) -> None:
        self._key: object = None
        self._v3: dict[str, tuple[bytes, str]] = {}  # group-version path -> (JSON, hash)
        self._v2: bytes | None = None
        self._specs: list[ResourceSpec] = []

    def refresh(self, key: object, specs: Iterable[ResourceSpec]) -> None:
        """Forget the documents if the served resources changed (``key`` says whether they did)."""
        if key == self._key:
            return
        self._key, self._v2 = key, None
        by_group_version: dict[str, list[ResourceSpec]] = {}
        for spec in specs:
            by_group_version.setdefault(group_version_path(spec.group, spec.version), []).append(spec)
        self._v3 = {}
        for path, served in sorted(by_group_version.items()):
            document = json.dumps(v3_document(served)).encode()
            self._v3[path] = document, hashlib.sha256(document).hexdigest()[:32].upper()
        self._specs = [spec for served in by_group_version.values() for spec in served]

    def v3_index(self) -> JsonObject:
        return {
            "paths": {
                path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
                for path, (_, digest) in self._v3.items()
            }
        }

    def v3(self, path: str) -> bytes | None:
        entry = self._v3.get(path.strip("/"))
        return None if entry is None else entry[0]

    def v2(self) -> bytes:
        if self._v2 is None:
            self._v2 = json.dumps(v2_document(self._specs)).encode()
        return self._v2


# ----- OpenAPI v2: one document -----


def _v2_ref(name: str) -> JsonObject:
    return {"$ref": f"#/definitions/{name}"}


def _v2_schema(schema: Any) -> Any:
    """Swagger 2.0 has no nullable, oneOf, anyOf or not: dropped, as the API server drops them."""
    if isinstance(schema, Mapping):
        return {
            key: _v2_schema(value)
            for key, value in schema.items()
            if key not in ("nullable", "oneOf", "anyOf", "not")
        }
    if isinstance(schema, list):
        return [_v2_schema(item) for item in schema]
    return schema


def _v2_parameter(parameter: Parameter) -> JsonObject:
    return {
        "name": parameter.name,
        "in": parameter.where,
        "type": parameter.type,
        "uniqueItems": True,
        "required": parameter.where == "path",
        "description": parameter.description,
    }


def _v2_operation(operation: Operation) -> JsonObject:
    parameters = [_v2_parameter(parameter) for parameter in operation.parameters]
    if operation.body is not None:
        parameters.insert(
            0,
            {
                "name": "body",
                "in": "body",
                "required": operation.method != "delete",
                "schema": _v2_ref(operation.body),
            },
        )
    return {
        "operationId": operation.operation_id,
        "consumes": list(operation.patch_types or ["*/*"]),
        "produces": list(V2_MEDIA_TYPES),
        "schemes": ["https"],
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "OK",
                **({"schema": _v2_ref(operation.response)} if operation.response else {}),
            }
        },
        "x-kubernetes-action": operation.action,
        "x-kubernetes-group-version-kind": operation.gvk,
    }


def v2_document(specs: Iterable[ResourceSpec]) -> JsonObject:
    specs = list(specs)
    return {
        "swagger": "2.0",
        "info": INFO,
        "paths": _paths(specs, _v2_parameter, _v2_operation),
        "definitions": _v2_schema(_definitions(specs, _v2_ref)),
    }
