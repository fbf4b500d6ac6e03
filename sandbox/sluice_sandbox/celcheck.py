"""
A CRD's CEL rules, checked as the API server checks them when the CRD is written: each rule and
``messageExpression`` must compile, ``reason`` be one of the four, ``fieldPath`` name a field, and
``oldSelf`` appear only where old and new values correlate. The errors are worded as the API
server words them, the rule shown as the Go struct it prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice_sandbox.celrules import REASONS, VALIDATIONS, CompileError, compile_expression, parse_field_path
from sluice_sandbox.errors import FieldError, GoValue


def rule_problems(schema: Mapping[str, Any], field: str) -> list[FieldError]:
    """
    What is wrong with the rules of a schema (at ``field`` in the CRD), worded as the API server
    words it, e.g. ``….x-kubernetes-validations[0].rule: Invalid value: …: compilation failed: …``.
    """
    problems: list[FieldError] = []
    _check_node(schema, field, problems, correlatable=True)
    return problems


def _check_node(
    schema: Mapping[str, Any], field: str, problems: list[FieldError], *, correlatable: bool
) -> None:
    for index, entry in enumerate(schema.get(VALIDATIONS) or ()):
        problems.extend(_entry_problems(entry, schema, f"{field}.{VALIDATIONS}[{index}]", correlatable))
    for key, child in (schema.get("properties") or {}).items():
        if isinstance(child, Mapping):
            _check_node(child, f"{field}.properties[{key}]", problems, correlatable=correlatable)
    additional = schema.get("additionalProperties")
    if isinstance(additional, Mapping):
        _check_node(additional, f"{field}.additionalProperties", problems, correlatable=correlatable)
    items = schema.get("items")
    if isinstance(items, Mapping):
        by_keys = schema.get("x-kubernetes-list-type") == "map"
        _check_node(items, f"{field}.items", problems, correlatable=correlatable and by_keys)


def _entry_problems(
    entry: Any, schema: Mapping[str, Any], field: str, correlatable: bool
) -> list[FieldError]:
    if not isinstance(entry, Mapping) or not entry.get("rule"):
        return [FieldError.required(f"{field}.rule", "rule is not specified")]
    shown = _go_rule(entry)
    problems: list[FieldError] = []
    try:
        program = compile_expression(entry["rule"])
    except CompileError as error:
        return [FieldError.invalid(f"{field}.rule", shown, f"compilation failed: {error}")]
    if program.uses_old_self and not correlatable:
        problems.append(
            FieldError.invalid(
                f"{field}.rule",
                shown,
                "oldSelf cannot be used on the uncorrelatable portion of the schema within "
                f"{field.rsplit('.', 1)[0]}",
            )
        )
    if entry.get("optionalOldSelf") and not program.uses_old_self:
        problems.append(
            FieldError.invalid(
                f"{field}.optionalOldSelf", True, "may not be set if oldSelf is not used in rule"
            )
        )
    expression = entry.get("messageExpression")
    if expression:
        try:
            compile_expression(expression)
        except CompileError as error:
            problems.append(
                FieldError.invalid(
                    f"{field}.messageExpression", expression, f"messageExpression compilation failed: {error}"
                )
            )
    reason = entry.get("reason")
    if reason is not None and reason not in REASONS:
        problems.append(FieldError.not_supported(f"{field}.reason", reason, sorted(REASONS)))
    path = entry.get("fieldPath")
    if path:
        detail = _field_path_problem(str(path), schema)
        if detail:
            problems.append(FieldError.invalid(f"{field}.fieldPath", path, detail))
    return problems


def _go_rule(entry: Mapping[str, Any]) -> GoValue:
    """The rule as the API server shows it in its errors: the Go struct, printed with ``%#v``."""

    def quoted(key: str) -> str:
        return _go_quote(str(entry.get(key) or ""))

    reason = (
        "(*apiextensions.FieldValueErrorReason)(nil)"
        if entry.get("reason") is None
        else f"&{_go_quote(str(entry['reason']))}"
    )
    optional = (
        "(*bool)(nil)"
        if entry.get("optionalOldSelf") is None
        else f"&{str(entry['optionalOldSelf']).lower()}"
    )
    return GoValue(
        f"apiextensions.ValidationRule{{Rule:{quoted('rule')}, Message:{quoted('message')}, "
        f"MessageExpression:{quoted('messageExpression')}, Reason:{reason}, "
        f"FieldPath:{quoted('fieldPath')}, OptionalOldSelf:{optional}}}"
    )


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _field_path_problem(path: str, schema: Mapping[str, Any]) -> str | None:
    """Why the fieldPath does not name a field of the schema (None if it does)."""
    try:
        steps = parse_field_path(path)
    except CompileError:
        return "fieldPath must be a valid path: expected '.name' or '['key']' steps (no list indexes)"
    node: Mapping[str, Any] = schema
    for name in steps:
        properties = node.get("properties") or {}
        additional = node.get("additionalProperties")
        if name in properties:
            node = properties[name]
        elif isinstance(additional, Mapping):
            node = additional
        else:
            return f"fieldPath must be a valid path: does not refer to a valid field: {name}"
    return None
