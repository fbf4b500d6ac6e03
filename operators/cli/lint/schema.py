"""Is a document a valid Sluice object? Checked against the API models the CRDs are generated from.

The models (`operators.api`) are the CRDs' source: their fields, bounds and
patterns become the structural schema, and their validators say what the CRDs'
CEL rules say (exactly one strategy, a verdict per metric, ...). The one rule the
models cannot see, a Rollout's name, is checked here as `rollout.NAME_RULE` says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from operators.api import rollout
from operators.api.base import API_VERSION, GROUP
from operators.api.resources import RESOURCES, ResourceType
from operators.cli.lint.documents import Document, FieldPath, Finding, Severity

KINDS: Mapping[str, ResourceType] = {resource.kind: resource for resource in RESOURCES}


@dataclass(frozen=True)
class Checked:
    """A Sluice object whose spec is valid: its kind, name, namespace and spec model."""

    kind: str
    name: str
    namespace: str
    spec: BaseModel


def check_object(document: Document) -> tuple[Checked | None, list[Finding]]:
    """The object's problems, and the object when it is a valid Sluice one (None otherwise)."""
    data = document.data
    if not isinstance(data, dict):
        return None, [document.finding((), Severity.ERROR, "a document must be a mapping (an object)")]
    kind, api_version = data.get("kind"), data.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return None, [document.finding((), Severity.ERROR, "an object needs apiVersion and kind")]
    resource = KINDS.get(kind)
    ours = api_version.split("/", 1)[0] == GROUP
    if resource is None and not ours:
        return None, [document.finding(("kind",), Severity.NOTE, f"skipped: {kind} is not a Sluice kind")]
    if resource is None:
        known = ", ".join(KINDS)
        return None, [
            document.finding(("kind",), Severity.ERROR, f"unknown kind {kind}: {GROUP} has {known}")
        ]
    if api_version != API_VERSION:
        message = f"apiVersion {api_version} is not served: use {API_VERSION}"
        return None, [document.finding(("apiVersion",), Severity.ERROR, message)]
    findings = _metadata_findings(document, resource)
    spec = data.get("spec")
    if not isinstance(spec, dict):
        return None, [*findings, document.finding((), Severity.ERROR, f"a {kind} needs a spec (an object)")]
    try:
        model = resource.spec_model.model_validate(spec)
    except ValidationError as error:
        return None, [*findings, *validation_findings(document, error)]
    if findings:
        return None, findings
    metadata = data["metadata"]
    namespace = str(metadata.get("namespace") or "default") if resource.scope == "Namespaced" else ""
    return Checked(kind, str(metadata["name"]), namespace, model), []


def _metadata_findings(document: Document, resource: ResourceType) -> list[Finding]:
    metadata = document.data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        return [document.finding(("metadata",), Severity.ERROR, "metadata.name is required")]
    if resource.kind == rollout.KIND and (
        len(name) > rollout.NAME_MAX or not re.fullmatch(rollout.NAME_PATTERN, name)
    ):
        return [document.finding(("metadata", "name"), Severity.ERROR, f"{name!r}: {rollout.NAME_MESSAGE}")]
    return []


def validation_findings(document: Document, error: ValidationError) -> list[Finding]:
    """One error per problem pydantic found in the spec, at the line of the field it is about."""
    findings = []
    for item in error.errors():
        path = present_path(document.data.get("spec"), item["loc"])
        dotted = ".".join(str(step) for step in ("spec", *path))
        message = str(item["msg"]).removeprefix("Value error, ")
        findings.append(document.finding(("spec", *path), Severity.ERROR, f"{dotted}: {message}"))
    return findings


def present_path(data: Any, loc: FieldPath) -> list[str | int]:
    """The steps of pydantic's `loc` that are in the data (its union and validator tags are not),
    plus a last one that is missing (a required field), so the message names it."""
    path: list[str | int] = []
    for step in loc:
        inside = isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data)
        if inside or (isinstance(data, dict) and step in data):
            data = data[step]
        elif isinstance(data, dict) and isinstance(step, str) and "[" not in step:
            path.append(step)  # a missing field: named, its parent's line reported
            break
        else:
            continue
        path.append(step)
    return path
