"""
Kubernetes protobuf bodies, decoded into the JSON objects they stand for.

kubectl sends protobuf (``Content-Type: application/vnd.kubernetes.protobuf``) whenever it writes
through client-go's typed clientset, which defaults to protobuf for built-in kinds since client-go
1.31: ``kubectl create namespace|configmap|secret|serviceaccount|service|deployment``. A 415 does
not make it retry with JSON (client-go falls back only from CBOR), so the sandbox decodes them.
``kubectl apply``, ``create -f``, ``patch``, ``label`` and the rest send JSON.

The envelope is ``k8s\\0`` + a ``runtime.Unknown`` (``typeMeta``, ``raw``), ``raw`` being the object
in the messages of ``k8s.io/api``'s ``generated.proto``. Only the messages and fields that those
commands fill in are known here (:data:`MESSAGES`). The encoder writes every non-pointer field
of a Go struct, set or not, so an unknown field holding a zero value carries nothing and is
skipped; an unknown field with a value is refused (415) rather than silently dropped.
"""

import base64
import dataclasses
import datetime
from collections.abc import Iterator
from typing import Any

from sluice_sandbox.resources import JsonObject

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    """The body cannot be decoded (or holds what the sandbox does not know)."""


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    type: str  # string, bytes, int, bool, time, intorstr, quantity, map:<value type>, or a message's name
    repeated: bool = False
    keep_zero: bool = False  # a Go pointer: written only when set, so a zero is meant


def _f(name: str, type: str = "string", *, repeated: bool = False, pointer: bool = False) -> Field:
    return Field(name, type, repeated, pointer)


# Field numbers as in k8s.io/api and k8s.io/apimachinery's generated.proto (proto2).
MESSAGES: dict[str, dict[int, Field]] = {
    "ObjectMeta": {
        1: _f("name"),
        2: _f("generateName"),
        3: _f("namespace"),
        5: _f("uid"),
        6: _f("resourceVersion"),
        7: _f("generation", "int"),
        8: _f("creationTimestamp", "time"),
        11: _f("labels", "map:string"),
        12: _f("annotations", "map:string"),
        13: _f("ownerReferences", "OwnerReference", repeated=True),
        14: _f("finalizers", repeated=True),
    },
    "OwnerReference": {
        1: _f("kind"),
        3: _f("name"),
        4: _f("uid"),
        5: _f("apiVersion"),
        6: _f("controller", "bool", pointer=True),
        7: _f("blockOwnerDeletion", "bool", pointer=True),
    },
    "LabelSelector": {
        1: _f("matchLabels", "map:string"),
        2: _f("matchExpressions", "LabelSelectorRequirement", repeated=True),
    },
    "LabelSelectorRequirement": {1: _f("key"), 2: _f("operator"), 3: _f("values", repeated=True)},
    "TypeMeta": {1: _f("apiVersion"), 2: _f("kind")},
    "LocalObjectReference": {1: _f("name")},
    "ObjectReference": {1: _f("kind"), 2: _f("namespace"), 3: _f("name"), 4: _f("uid"), 5: _f("apiVersion")},
    # core/v1
    "Namespace": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "NamespaceSpec"),
        3: _f("status", "NamespaceStatus"),
    },
    "NamespaceSpec": {1: _f("finalizers", repeated=True)},
    "NamespaceStatus": {1: _f("phase")},
    "ConfigMap": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("data", "map:string"),
        3: _f("binaryData", "map:bytes"),
        4: _f("immutable", "bool", pointer=True),
    },
    "Secret": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("data", "map:bytes"),
        3: _f("type"),
        4: _f("stringData", "map:string"),
        5: _f("immutable", "bool", pointer=True),
    },
    "ServiceAccount": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("secrets", "ObjectReference", repeated=True),
        3: _f("imagePullSecrets", "LocalObjectReference", repeated=True),
        4: _f("automountServiceAccountToken", "bool", pointer=True),
    },
    "Service": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "ServiceSpec"),
        3: _f("status", "ServiceStatus"),
    },
    "ServiceSpec": {
        1: _f("ports", "ServicePort", repeated=True),
        2: _f("selector", "map:string"),
        3: _f("clusterIP"),
        4: _f("type"),
        5: _f("externalIPs", repeated=True),
        7: _f("sessionAffinity"),
        8: _f("loadBalancerIP"),
        10: _f("externalName"),
        11: _f("externalTrafficPolicy"),
        17: _f("ipFamilyPolicy", pointer=True),
        18: _f("clusterIPs", repeated=True),
        19: _f("ipFamilies", repeated=True),
    },
    "ServicePort": {
        1: _f("name"),
        2: _f("protocol"),
        3: _f("port", "int"),
        4: _f("targetPort", "intorstr"),
        5: _f("nodePort", "int"),
        6: _f("appProtocol", pointer=True),
    },
    "ServiceStatus": {},
    "PodTemplateSpec": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PodSpec")},
    "PodSpec": {
        2: _f("containers", "Container", repeated=True),
        3: _f("restartPolicy"),
        4: _f("terminationGracePeriodSeconds", "int", pointer=True),
        6: _f("dnsPolicy"),
        7: _f("nodeSelector", "map:string"),
        8: _f("serviceAccountName"),
        10: _f("nodeName"),
        15: _f("imagePullSecrets", "LocalObjectReference", repeated=True),
        20: _f("initContainers", "Container", repeated=True),
    },
    "Container": {
        1: _f("name"),
        2: _f("image"),
        3: _f("command", repeated=True),
        4: _f("args", repeated=True),
        5: _f("workingDir"),
        6: _f("ports", "ContainerPort", repeated=True),
        7: _f("env", "EnvVar", repeated=True),
        8: _f("resources", "ResourceRequirements"),
        14: _f("imagePullPolicy"),
    },
    "ContainerPort": {
        1: _f("name"),
        2: _f("hostPort", "int"),
        3: _f("containerPort", "int"),
        4: _f("protocol"),
        5: _f("hostIP"),
    },
    "EnvVar": {1: _f("name"), 2: _f("value")},
    "ResourceRequirements": {1: _f("limits", "map:quantity"), 2: _f("requests", "map:quantity")},
    # apps/v1
    "Deployment": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "DeploymentSpec"),
        3: _f("status", "DeploymentStatus"),
    },
    "DeploymentSpec": {
        1: _f("replicas", "int", pointer=True),
        2: _f("selector", "LabelSelector"),
        3: _f("template", "PodTemplateSpec"),
        4: _f("strategy", "DeploymentStrategy"),
        5: _f("minReadySeconds", "int"),
        6: _f("revisionHistoryLimit", "int", pointer=True),
        7: _f("paused", "bool"),
        9: _f("progressDeadlineSeconds", "int", pointer=True),
    },
    "DeploymentStrategy": {1: _f("type"), 2: _f("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: _f("maxUnavailable", "intorstr"), 2: _f("maxSurge", "intorstr")},
    "DeploymentStatus": {},
}

# The kinds whose bodies can be decoded: (apiVersion, kind) -> message.
KINDS = {("v1", kind): kind for kind in ("Namespace", "ConfigMap", "Secret", "ServiceAccount", "Service")}
KINDS[("apps/v1", "Deployment")] = "Deployment"


def decode_object(body: bytes) -> JsonObject:
    """The JSON object of a protobuf request body (``k8s\\0`` + ``runtime.Unknown``)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the body does not start with the Kubernetes protobuf envelope (k8s\\0)")
    envelope = _message(body[len(MAGIC) :], {1: _f("typeMeta", "TypeMeta"), 2: _f("raw", "raw")})
    type_meta = envelope.get("typeMeta") or {}
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    message = KINDS.get((api_version, kind))
    if message is None:
        supported = ", ".join(sorted(kind for _, kind in KINDS))
        raise ProtobufError(
            f"the sandbox decodes protobuf bodies of {supported} only, not {api_version} {kind}"
        )
    return {
        "apiVersion": api_version,
        "kind": kind,
        **_message(envelope.get("raw", b""), MESSAGES[message], path=kind),
    }


# ----- The wire format -----


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field: ints for varints & fixed, bytes otherwise."""
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == _VARINT:
            value, position = _varint(data, position)
        elif wire_type == _BYTES:
            length, position = _varint(data, position)
            value, position = data[position : position + length], position + length
            if position > len(data):
                raise ProtobufError("truncated protobuf body")
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            value, position = int.from_bytes(data[position : position + size], "little"), position + size
        else:
            raise ProtobufError(f"unsupported protobuf wire type {wire_type}")
        yield number, wire_type, value


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ProtobufError("truncated protobuf varint")
        byte = data[position]
        result |= (byte & 0x7F) << shift
        position += 1
        if not byte & 0x80:
            return result, position
        shift += 7


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# ----- Messages -----


def _message(data: bytes, fields: dict[int, Field], path: str = "") -> JsonObject:
    result: JsonObject = {}
    for number, wire_type, raw in _fields(data):
        field = fields.get(number)
        if field is None:
            if _is_zero(wire_type, raw):
                continue  # a non-pointer Go field that was not set: nothing to lose
            raise ProtobufError(
                f"the sandbox cannot decode field {number} of {path or 'the message'} "
                f"(send the object as JSON, e.g. with kubectl apply -f)"
            )
        child_path = f"{path}.{field.name}"
        if field.type.startswith("map:"):
            key, value = _map_entry(raw, field.type.removeprefix("map:"), child_path)
            result.setdefault(field.name, {})[key] = value
        elif field.repeated:
            result.setdefault(field.name, []).extend(_values(wire_type, raw, field, child_path))
        else:
            value = _value(wire_type, raw, field.type, child_path)
            unset = not field.keep_zero and not isinstance(value, dict) and value in ("", 0, False)
            if value is None or unset:
                result.pop(field.name, None)  # the zero value of a non-pointer field: unset, as in JSON
            else:
                result[field.name] = value
    return result


def _is_zero(wire_type: int, raw: Any) -> bool:
    """A zero scalar, or an empty message or one of zeros only (what Go writes for an unset struct)."""
    if wire_type != _BYTES:
        return bool(raw == 0)
    try:
        return all(_is_zero(*field[1:]) for field in _fields(raw))
    except ProtobufError:
        return False  # not a message: a string, and not an empty one


def _values(wire_type: int, raw: Any, field: Field, path: str) -> list[Any]:
    if wire_type == _BYTES and field.type in ("int", "bool"):  # a packed repeated scalar
        return [_value(_VARINT, value, field.type, path) for _, _, value in _packed(raw)]
    return [_value(wire_type, raw, field.type, path)]


def _packed(data: bytes) -> Iterator[tuple[int, int, int]]:
    position = 0
    while position < len(data):
        value, position = _varint(data, position)
        yield 0, _VARINT, value


def _value(wire_type: int, raw: Any, type: str, path: str) -> Any:
    match type:
        case "string":
            return bytes(raw).decode("utf-8")
        case "bytes":
            return base64.b64encode(raw).decode("ascii")  # as JSON carries []byte
        case "raw":
            return bytes(raw)
        case "int":
            return _signed(raw)
        case "bool":
            return bool(raw)
        case "time":
            return _time(raw)
        case "intorstr":
            value = _message(raw, {1: _f("type", "int"), 2: _f("intVal", "int"), 3: _f("strVal")}, path)
            return value.get("strVal", "") if value.get("type") == 1 else value.get("intVal", 0) or None
        case "quantity":
            return _message(raw, {1: _f("string")}, path).get("string")
    return _message(raw, MESSAGES[type], path)


def _map_entry(raw: bytes, value_type: str, path: str) -> tuple[str, Any]:
    entry = _message(raw, {1: _f("key"), 2: Field("value", value_type, keep_zero=True)}, path)
    empty = {"string": "", "bytes": ""}.get(value_type)
    return entry.get("key", ""), entry.get("value", empty)


def _time(raw: bytes) -> str | None:
    seconds = _message(raw, {1: _f("seconds", "int"), 2: _f("nanos", "int")}).get("seconds", 0)
    if not seconds:
        return None  # the zero time: null in JSON
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
