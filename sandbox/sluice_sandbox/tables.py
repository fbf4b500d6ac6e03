"""
Server-side printing: ``meta.k8s.io/v1`` Tables, which ``kubectl get`` asks for with
``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` and prints as they come.

Custom resources get the columns of their CRD's ``additionalPrinterColumns`` (evaluated with
the simple JSONPath that CRDs use), or Name and Age without; the common built-ins get kubectl's
usual columns (a Deployment's READY, UP-TO-DATE, AVAILABLE…); any other resource Name and Age.
Each row carries the object's metadata (``includeObject=Metadata``), from which kubectl adds
the NAMESPACE column of ``-A`` and the labels of ``--show-labels``.
"""

import dataclasses
import datetime
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from sluice_sandbox import selectors
from sluice_sandbox.resources import JsonObject, ResourceSpec

TABLE_API_VERSIONS = ("v1", "v1beta1")
NONE = "<none>"

Cell = Any  # str | int | float | bool | None, as in the Table's JSON
Getter = Callable[[JsonObject], Cell]


def accepted_table_version(accept: str | None) -> str | None:
    """The ``meta.k8s.io`` version of Table that an ``Accept`` header asks for, if any."""
    for media_range in (accept or "").split(","):
        params = dict(_param(part) for part in media_range.split(";")[1:])
        if (
            params.get("as") == "Table"
            and params.get("g") == "meta.k8s.io"
            and (params.get("v") in TABLE_API_VERSIONS)
        ):
            return params["v"]
    return None


def _param(text: str) -> tuple[str, str]:
    key, _, value = text.strip().partition("=")
    return key.strip(), value.strip()


@dataclasses.dataclass(frozen=True)
class Column:
    name: str
    type: str
    get: Getter
    format: str = ""
    description: str = ""
    priority: int = 0  # > 0: shown only with `-o wide`

    def definition(self) -> JsonObject:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


def to_table(
    spec: ResourceSpec,
    objects: Sequence[JsonObject],
    *,
    resource_version: str,
    version: str = "v1",
    include_object: str = "Metadata",
) -> JsonObject:
    """A Table of the objects (one for a GET, all of a LIST or of a watch event)."""
    columns = columns_for(spec)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": [column.definition() for column in columns],
        "rows": [_row(columns, obj, include_object) for obj in objects],
    }


def _row(columns: Sequence[Column], obj: JsonObject, include_object: str) -> JsonObject:
    row: JsonObject = {"cells": [column.get(obj) for column in columns]}
    if include_object == "Object":
        row["object"] = obj
    elif include_object != "None":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {}),
        }
    return row


def columns_for(spec: ResourceSpec) -> list[Column]:
    if spec.printer_columns:
        return [NAME, *(_printer_column(column) for column in spec.printer_columns)]
    return list(BUILTIN_COLUMNS.get((spec.group, spec.kind), (NAME, AGE)))


# ----- CRDs' additionalPrinterColumns -----


def _printer_column(column: Mapping[str, Any]) -> Column:
    path = parse_json_path(column["jsonPath"])
    kind = column.get("type", "string")

    def get(obj: JsonObject) -> Cell:
        return _typed_cell(kind, next(evaluate_json_path(path, obj), None))

    return Column(
        column["name"],
        kind,
        get,
        column.get("format", ""),
        column.get("description", ""),
        column.get("priority", 0),
    )


def _typed_cell(kind: str, value: Any) -> Cell:
    """As the API server's CRD table convertor does: a value of the wrong type is an empty cell."""
    if value is None:
        return None
    match kind:
        case "integer" if _is_number(value):
            return int(value)
        case "number" if _is_number(value):
            return float(value)
        case "boolean" if isinstance(value, bool):
            return value
        case "date" if isinstance(value, str):
            return age(value)
        case "string":
            return value if isinstance(value, str) else json.dumps(value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# The simple JSONPath of printer columns: `.status.phase`, `.spec.containers[0].image`,
# `.items[*].name`, `.status.conditions[?(@.type=="Ready")].status`.
_STEP_RE = re.compile(r"""\.([^.\[]+)|\[(\d+|\*)\]|\[\?\(@\.([\w.-]+)\s*==\s*["']([^"']*)["']\)\]""")
PathStep = tuple[str, Any]


def parse_json_path(text: str) -> list[PathStep]:
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]  # kubectl's template form, {.status.phase}
    steps: list[PathStep] = []
    position = 0
    while position < len(text):
        match = _STEP_RE.match(text, position)
        if match is None:
            raise ValueError(f"unsupported JSONPath: {text!r}")
        field, index, filter_key, filter_value = match.groups()
        if field is not None:
            steps.append(("field", field))
        elif index is not None:
            steps.append(("all", None) if index == "*" else ("index", int(index)))
        else:
            steps.append(("filter", (filter_key, filter_value)))
        position = match.end()
    return steps


def evaluate_json_path(steps: Sequence[PathStep], value: Any) -> Iterator[Any]:
    """All the values at the path (kubectl's printer columns show the first)."""
    if not steps:
        yield value
        return
    (kind, arg), rest = steps[0], steps[1:]
    found_field = kind == "field" and isinstance(value, Mapping) and arg in value
    found_index = kind == "index" and isinstance(value, list) and -len(value) <= arg < len(value)
    if found_field or found_index:
        yield from evaluate_json_path(rest, value[arg])
    elif kind in ("all", "filter") and isinstance(value, list):
        for item in value:
            if kind == "all" or (isinstance(item, Mapping) and str(item.get(arg[0])) == arg[1]):
                yield from evaluate_json_path(rest, item)


# ----- Ages, as kubectl shows them -----


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """``duration.HumanDuration`` of the time since an RFC 3339 timestamp: 5s, 3m20s, 2d4h…"""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(timestamp)
    except ValueError:
        return "<invalid>"
    return human_duration(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())


def human_duration(seconds: float) -> str:
    total = int(seconds)
    if total < -1:
        return "<invalid>"  # clocks may disagree by a second, not more
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes, hours, days = total // 60, total // 3600, total // 86400
    if minutes < 10:
        return _two_units(minutes, "m", total % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return _two_units(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return _two_units(days, "d", hours % 24, "h")
    if hours < 24 * 365 * 2:
        return f"{days}d"
    if hours < 24 * 365 * 8:
        return _two_units(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def _two_units(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}{small}{small_unit}" if small else f"{big}{big_unit}"


# ----- The built-ins' columns -----


def _at(*path: str) -> Getter:
    def get(obj: JsonObject) -> Cell:
        value: Any = obj
        for part in path:
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    return get


def _count(*path: str) -> Getter:
    get = _at(*path)
    return lambda obj: get(obj) or 0


def _containers(workload: JsonObject, field: str) -> str:
    containers = _at("spec", "template", "spec", "containers")(workload) or []
    return ",".join(str(container.get(field, "")) for container in containers)


def _selector(*path: str) -> Getter:
    get = _at(*path)

    def render(obj: JsonObject) -> Cell:
        selector = get(obj)
        if not isinstance(selector, Mapping) or not selector:
            return NONE
        if "matchLabels" in selector or "matchExpressions" in selector:
            selector = selectors.label_selector_from_dict(selector)
            return selectors.format_label_selector(selector) or NONE
        return ",".join(f"{key}={value}" for key, value in selector.items())  # a Service's plain map

    return render


def _pod_status(pod: JsonObject) -> Cell:
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    return status.get("reason") or status.get("phase") or "Pending"


def _pod_ready(pod: JsonObject) -> Cell:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len(_at("spec", "containers")(pod) or [])
    return f"{sum(1 for status in statuses if status.get('ready'))}/{total}"


def _service_ports(service: JsonObject) -> Cell:
    ports = _at("spec", "ports")(service) or []
    rendered = [
        f"{port.get('port')}{':' + str(port['nodePort']) if port.get('nodePort') else ''}"
        f"/{port.get('protocol', 'TCP')}"
        for port in ports
    ]
    return ",".join(rendered) or NONE


def _external_ips(service: JsonObject) -> Cell:
    ingress = _at("status", "loadBalancer", "ingress")(service) or []
    found = [
        *(_at("spec", "externalIPs")(service) or []),
        *(entry.get("ip") or entry.get("hostname") for entry in ingress),
    ]
    return ",".join(str(ip) for ip in found if ip) or NONE


def _event_object(event: JsonObject) -> Cell:
    involved = event.get("involvedObject") or event.get("regarding") or {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


def _event_last_seen(event: JsonObject) -> Cell:
    return age(
        event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp")
    )


NAME = Column(
    "Name",
    "string",
    _at("metadata", "name"),
    "name",
    "Name must be unique within a namespace. Cannot be updated.",
)
AGE = Column(
    "Age",
    "string",
    lambda obj: age(obj["metadata"].get("creationTimestamp")),
    "",
    "CreationTimestamp is a timestamp representing the server time when this object was created.",
)


def _workload_columns(*first: Column) -> tuple[Column, ...]:
    """Name, the workload's own columns, Age; with -o wide, its containers, images and selector."""
    return (
        NAME,
        *first,
        AGE,
        Column("Containers", "string", lambda obj: _containers(obj, "name"), priority=1),
        Column("Images", "string", lambda obj: _containers(obj, "image"), priority=1),
        Column("Selector", "string", _selector("spec", "selector"), priority=1),
    )


_EVENT_COLUMNS = (
    Column("Last Seen", "string", _event_last_seen),
    Column("Type", "string", _at("type")),
    Column("Reason", "string", _at("reason")),
    Column("Object", "string", _event_object),
    Column("Message", "string", lambda event: event.get("message") or event.get("note")),
)

BUILTIN_COLUMNS: dict[tuple[str, str], Sequence[Column]] = {
    ("apps", "Deployment"): _workload_columns(
        Column(
            "Ready",
            "string",
            lambda deployment: (
                f"{_count('status', 'readyReplicas')(deployment)}/{_count('spec', 'replicas')(deployment)}"
            ),
        ),
        Column("Up-to-date", "integer", _count("status", "updatedReplicas")),
        Column("Available", "integer", _count("status", "availableReplicas")),
    ),
    ("apps", "ReplicaSet"): _workload_columns(
        Column("Desired", "integer", _count("spec", "replicas")),
        Column("Current", "integer", _count("status", "replicas")),
        Column("Ready", "integer", _count("status", "readyReplicas")),
    ),
    ("", "Pod"): (
        NAME,
        Column("Ready", "string", _pod_ready),
        Column("Status", "string", _pod_status),
        Column(
            "Restarts",
            "string",
            lambda pod: str(
                sum(status.get("restartCount", 0) for status in _at("status", "containerStatuses")(pod) or [])
            ),
        ),
        AGE,
        Column("IP", "string", lambda pod: _at("status", "podIP")(pod) or NONE, priority=1),
        Column("Node", "string", lambda pod: _at("spec", "nodeName")(pod) or NONE, priority=1),
    ),
    ("", "Service"): (
        NAME,
        Column("Type", "string", lambda svc: _at("spec", "type")(svc) or "ClusterIP"),
        Column("Cluster-IP", "string", lambda svc: _at("spec", "clusterIP")(svc) or NONE),
        Column("External-IP", "string", _external_ips),
        Column("Port(s)", "string", _service_ports),
        AGE,
        Column("Selector", "string", _selector("spec", "selector"), priority=1),
    ),
    ("", "Namespace"): (NAME, Column("Status", "string", _at("status", "phase")), AGE),
    ("", "ConfigMap"): (
        NAME,
        Column("Data", "integer", lambda cm: len(cm.get("data") or {}) + len(cm.get("binaryData") or {})),
        AGE,
    ),
    ("", "Secret"): (
        NAME,
        Column("Type", "string", _at("type")),
        Column("Data", "integer", lambda secret: len(secret.get("data") or {})),
        AGE,
    ),
    ("", "Event"): _EVENT_COLUMNS,
    ("events.k8s.io", "Event"): _EVENT_COLUMNS,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): (
        NAME,
        Column("Created At", "date", _at("metadata", "creationTimestamp")),
    ),
}
