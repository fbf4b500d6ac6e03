"""
CEL validation rules (``x-kubernetes-validations``) of a CRD's schema, as the API server applies
them (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#validation-rules).

Evaluated by cel-python (``celpy``), a real CEL implementation, with the Kubernetes library
functions that celpy lacks added (:data:`KUBERNETES_LIBRARY`). What is built here:

- **Compiling** (:func:`compile_rules`), once per CRD version; each expression's program is also
  cached by its text, so that validating the CRD and serving it compile a rule once. A rule that
  does not parse, or calls a function the sandbox does not implement, or reads an undeclared
  variable, refuses the CRD (``celcheck.rule_problems``), as Kubernetes refuses a CRD whose rule does not
  compile: never silently skipped. So do a bad ``messageExpression``, ``reason``, ``fieldPath``,
  and ``oldSelf`` where it cannot correlate.
- **Values** as the API server hands them to CEL: typed by the schema (``number`` is a double,
  ``format: duration``/``date-time`` strings are durations/timestamps), declared property names
  escaped (``namespace`` is ``__namespace__``: CEL reserves the word), and the root's
  ``metadata`` reduced to ``name`` and ``generateName``.
- **Evaluating** (:meth:`RuleTree.validate`): every rule at every level (root, properties,
  ``items``, ``additionalProperties``) with ``self`` bound to the value there. Transition rules
  (those reading ``oldSelf``) run only on updates, where the old value correlates: through
  properties and map keys, and in lists only ``x-kubernetes-list-type: map`` ones, by their keys;
  with ``optionalOldSelf: true`` they always run, ``oldSelf`` an optional (``hasValue()``,
  ``value()``, ``orValue()``). On updates an unchanged value's rules are not run again, save
  transition rules (validation ratcheting, as for the rest of the schema).
- **Errors** worded as the API server's (``spec: Invalid value: "object": <message>``, at
  ``<nil>`` for the root), by the rule's ``reason``, at its ``fieldPath``, with its
  ``messageExpression`` evaluated.

Not implemented: CEL's static type checking (a rule reading an undeclared field compiles here and
fails when evaluated), the cost budget, and the Kubernetes libraries for URLs, IPs, CIDRs,
quantities, semantic versions and ``format`` (a rule calling them refuses its CRD, saying so).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import celpy
import celpy.evaluation
import lark
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, Evaluator, base_functions

from sluice_sandbox.cellibrary import KUBERNETES_LIBRARY, OptionalValue
from sluice_sandbox.errors import FieldError, FieldErrorType

EMBEDDED_RESOURCE = "x-kubernetes-embedded-resource"
INT_OR_STRING = "x-kubernetes-int-or-string"
VALIDATIONS = "x-kubernetes-validations"
_MISSING: Any = object()  # no old value: a create, a new field, an uncorrelatable list item
ROOT_FIELD = "<nil>"  # how the API server names the root in a rule's error (a nil field.Path)


_MACROS = frozenset({"has", "dyn", "all", "exists", "exists_one", "map", "filter"})
_BOUND_BY_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_FUNCTIONS = frozenset(base_functions) | frozenset(KUBERNETES_LIBRARY) | _MACROS | {"min"}
# Identifiers a rule may read besides its variables: type names (e.g. `type(self) == string`).
_TYPE_NAMES = frozenset({"bool", "bytes", "double", "duration", "int", "list", "map", "null_type"})
_TYPE_NAMES |= {"string", "timestamp", "uint", "type"}


# ----- Compiling -----


class CompileError(Exception):
    """A CEL expression that the sandbox cannot compile; the message is worded as cel-go's."""


@dataclasses.dataclass(frozen=True)
class Program:
    """One compiled CEL expression, and what it reads."""

    text: str
    runner: celpy.Runner
    uses_old_self: bool

    def evaluate(self, variables: dict[str, Any]) -> Any:
        """The result; CELEvalError if the evaluation failed (celpy bugs included: never a 500)."""
        try:
            return self.runner.evaluate(variables)
        except CELEvalError as error:
            return error
        except Exception as error:
            return CELEvalError(str(error), type(error), error.args)


# Grammar nodes that, with one child, evaluate to their child's value (celpy's own methods for
# them return `visit_children(tree)[0]`). A rule's tree nests ~8 of them above every operand:
# jumping straight to the operand makes evaluation about twice as fast, and changes nothing else.
_PASS_THROUGH = frozenset(
    {"expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member"}
)


class _Evaluator(Evaluator):
    """celpy's tree-walking evaluator, skipping pass-through nodes."""

    def _visit_tree(self, tree: lark.Tree[Any]) -> Any:
        while tree.data in _PASS_THROUGH and len(tree.children) == 1:
            tree = tree.children[0]
        return super()._visit_tree(tree)

    def sub_evaluator(self, ast: lark.Tree[Any]) -> Evaluator:  # macros' sub-expressions, skipping too
        return _Evaluator(ast, activation=self.activation)


class _Runner(celpy.InterpretedRunner):
    """celpy's interpreter with :class:`_Evaluator`, and its base activation built once, not per call."""

    def __init__(self, environment: celpy.Environment, ast: lark.Tree[Any], functions: Any = None) -> None:
        super().__init__(environment, ast, functions)
        self._activation = self.new_activation()  # read-only during evaluations: each clones it

    def evaluate(self, context: Any) -> Any:
        return _Evaluator(ast=self.ast, activation=self._activation).evaluate(context)


def _cheaper_casts() -> None:
    """
    celpy's evaluator writes ``cast(Tuple[List[Result], Result], …)`` on every node: each
    subscripts typing generics, which hashes the ~20-member ``Result`` union, recomputed every
    time. That was half of a rule's evaluation time. Only ``cast()`` and annotations read these
    two aliases, and ``cast()`` ignores its type: as ``Any`` they hash at once (2.5x faster).
    """
    for alias in ("Result", "Result_Function"):
        if hasattr(celpy.evaluation, alias):
            setattr(celpy.evaluation, alias, Any)


_cheaper_casts()
_ENVIRONMENT = celpy.Environment(runner_class=_Runner)


@functools.lru_cache(maxsize=4096)
def compile_expression(text: str) -> Program:
    """
    An expression's program, compiled once per distinct text: the same rule in two CRDs (or in
    the CRD's validation and in its served resource) is compiled once. Raises CompileError.
    """
    try:
        tree = _ENVIRONMENT.compile(text)
    except CELParseError as error:
        raise CompileError(_syntax_error(text, error)) from None
    functions, identifiers, bound = _references(tree)
    unknown_functions = sorted(functions - _FUNCTIONS)
    if unknown_functions:
        raise CompileError(
            f"ERROR: <input>: undeclared reference to '{unknown_functions[0]}' "
            "(a function the sandbox's CEL library does not implement)"
        )
    unknown = sorted(identifiers - bound - _TYPE_NAMES - {"self", "oldSelf"})
    if unknown:
        raise CompileError(f"ERROR: <input>: undeclared reference to '{unknown[0]}' (in container '')")
    runner = _ENVIRONMENT.program(tree, functions=dict(KUBERNETES_LIBRARY))
    return Program(text, runner, uses_old_self="oldSelf" in identifiers)


def _syntax_error(text: str, error: CELParseError) -> str:
    line, column = error.line or 1, error.column or 1
    source = text.splitlines()[line - 1] if text.splitlines() else ""
    return f"ERROR: <input>:{line}:{column}: Syntax error\n | {source}\n | {'.' * (column - 1)}^"


def _references(tree: lark.Tree[Any]) -> tuple[set[str], set[str], set[str]]:
    """The functions an expression calls, the identifiers it reads, and those its macros bind."""
    functions: set[str] = set()
    identifiers: set[str] = set()
    bound: set[str] = set()
    for node in tree.iter_subtrees():
        if node.data == "ident":
            identifiers.add(str(node.children[0]))
        elif node.data in ("ident_arg", "dot_ident_arg"):
            functions.add(str(node.children[0]))
        elif node.data == "member_dot_arg":
            name = str(node.children[1])
            functions.add(name)
            arguments = node.children[2] if len(node.children) > 2 else None
            if name in _BOUND_BY_MACROS and isinstance(arguments, lark.Tree) and arguments.children:
                variable = next(_idents(arguments.children[0]), None)
                if variable is not None:
                    bound.add(variable)
    return functions, identifiers, bound


def _idents(tree: Any) -> Iterator[str]:
    if isinstance(tree, lark.Tree):
        for node in tree.iter_subtrees():
            if node.data == "ident":
                yield str(node.children[0])


REASONS = {
    "FieldValueInvalid": FieldErrorType.INVALID,
    "FieldValueForbidden": FieldErrorType.FORBIDDEN,
    "FieldValueRequired": FieldErrorType.REQUIRED,
    "FieldValueDuplicate": FieldErrorType.DUPLICATE,
}


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a key of the outcome cache
class Rule:
    """One ``x-kubernetes-validations`` entry, compiled."""

    program: Program
    message: str
    message_expression: Program | None
    reason: FieldErrorType
    field_path: tuple[str, ...]  # the fieldPath's steps below the rule's level
    optional_old_self: bool

    @property
    def transition(self) -> bool:
        return self.program.uses_old_self

    @property
    def text(self) -> str:
        """The rule as its errors quote it: its message if it has one, else its expression."""
        return self.message or self.program.text.strip()


@dataclasses.dataclass
class RuleTree:
    """
    The schema nodes that have rules or lead to some, with what converting their values needs
    (:class:`Shape`). Branches without rules are not here: validation never walks them.
    """

    shape: Shape
    rules: list[Rule]
    properties: dict[str, RuleTree]
    additional: RuleTree | None = None
    items: RuleTree | None = None
    map_keys: tuple[str, ...] | None = None  # items correlate by these (x-kubernetes-list-type: map)
    transitions: bool = False  # a transition rule here or below: unchanged values still walked

    def validate(self, obj: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> list[FieldError]:
        """The violations of the object (``old``: the stored one, on updates), in walk order."""
        errors: list[FieldError] = []
        _Walk(errors).visit(self, obj, _MISSING if old is None else old, "")
        return errors


def compile_rules(schema: Mapping[str, Any]) -> RuleTree | None:
    """The rules of an ``openAPIV3Schema`` (None if it has none). Raises CompileError on a bad one.

    The CRD's rules were checked whole when it was written (`celcheck.rule_problems`, from crds.py).
    """
    return _tree(schema, _shape(schema, root=True))


def _tree(schema: Mapping[str, Any], shape: Shape) -> RuleTree | None:
    properties = {
        key: tree
        for key, child in (schema.get("properties") or {}).items()
        if key in shape.fields and (tree := _tree(child, shape.fields[key][1])) is not None
    }
    additional = schema.get("additionalProperties")
    additional_tree = (
        _tree(additional, shape.values) if isinstance(additional, Mapping) and shape.values else None
    )
    items = schema.get("items")
    items_tree = _tree(items, shape.items) if isinstance(items, Mapping) and shape.items else None
    rules = [_rule(entry) for entry in schema.get(VALIDATIONS) or ()]
    if not (rules or properties or additional_tree or items_tree):
        return None
    children = [*properties.values(), additional_tree, items_tree]
    return RuleTree(
        shape=shape,
        rules=rules,
        properties=properties,
        additional=additional_tree,
        items=items_tree,
        map_keys=tuple(schema.get("x-kubernetes-list-map-keys") or ())
        if schema.get("x-kubernetes-list-type") == "map"
        else None,
        transitions=any(rule.transition for rule in rules)
        or any(child.transitions for child in children if child is not None),
    )


def _rule(entry: Mapping[str, Any]) -> Rule:
    expression = entry.get("messageExpression")
    return Rule(
        program=compile_expression(entry["rule"]),
        message=str(entry.get("message") or "").strip(),
        message_expression=compile_expression(expression) if expression else None,
        reason=REASONS[entry.get("reason") or "FieldValueInvalid"],
        field_path=parse_field_path(entry.get("fieldPath") or ""),
        optional_old_self=bool(entry.get("optionalOldSelf")),
    )


# A fieldPath: `.name` steps and `['key']` steps (no list indexes), as Kubernetes parses it.
_PATH_STEP = re.compile(r"\.([A-Za-z0-9_-]+)|\['((?:[^'\\]|\\.)*)'\]")


def parse_field_path(path: str) -> tuple[str, ...]:
    steps: list[str] = []
    position = 0
    while position < len(path):
        match = _PATH_STEP.match(path, position)
        if match is None:
            raise CompileError(f"invalid fieldPath {path!r}")
        steps.append(match.group(1) if match.group(1) is not None else match.group(2))
        position = match.end()
    return tuple(steps)


def _render_field_path(base: str, shape: Shape, steps: tuple[str, ...]) -> str:
    """A rule's error field: its level, then its fieldPath (properties as `.x`, map keys as `[x]`)."""
    field = base
    for name in steps:
        if name in shape.fields:
            field = f"{field}.{name}" if field else name
            shape = shape.fields[name][1]
        else:
            field = f"{field}[{name}]"
            shape = shape.values or _ANY
    return field


# ----- Values, as the API server hands them to CEL -----


@dataclasses.dataclass(eq=False)  # hashed by identity: a key of the outcome cache
class Shape:
    """What converting a value to CEL needs of its schema node."""

    type: str = ""
    format: str = ""
    int_or_string: bool = False
    # name: (the name CEL reads it by, None if CEL cannot read it; its shape)
    fields: dict[str, tuple[str | None, Shape]] = dataclasses.field(default_factory=dict)
    values: Shape | None = None  # additionalProperties
    items: Shape | None = None
    embedded: bool = False  # apiVersion, kind and a reduced metadata are fields too


_ANY = Shape()


def _shape(schema: Mapping[str, Any], *, root: bool = False) -> Shape:
    fields = {
        key: (escape(key), _shape(child))
        for key, child in (schema.get("properties") or {}).items()
        if isinstance(child, Mapping)
    }
    additional = schema.get("additionalProperties")
    items = schema.get("items")
    return Shape(
        type=str(schema.get("type") or ""),
        format=str(schema.get("format") or ""),
        int_or_string=bool(schema.get(INT_OR_STRING)),
        fields=fields,
        values=_shape(additional) if isinstance(additional, Mapping) else None,
        items=_shape(items) if isinstance(items, Mapping) else None,
        embedded=root or bool(schema.get(EMBEDDED_RESOURCE)),
    )


# Words that CEL reserves: a property so named is read as __name__ (e.g. self.__namespace__).
_RESERVED = frozenset(
    "true false null in as break const continue else for function if import let loop package "  # noqa: SIM905
    "namespace return var void while".split()
)
_ESCAPED = re.compile(r"__|[-./]")
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}
_ESCAPABLE = re.compile(r"[A-Za-z_./-][A-Za-z0-9_./-]*")


def escape(name: str) -> str | None:
    """A property name as CEL reads it (Kubernetes' escaping); None if CEL cannot read it at all."""
    if name in _RESERVED:
        return f"__{name}__"
    if not _ESCAPABLE.fullmatch(name):
        return None
    return _ESCAPED.sub(lambda match: _ESCAPES[match.group(0)], name)


_EMBEDDED_METADATA = ("name", "generateName")  # all that CEL sees of an object's metadata


def to_cel(value: Any, shape: Shape) -> Any:
    """A JSON value as a CEL value of its schema's type."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int | float):
        if shape.type == "number" or (isinstance(value, float) and not value.is_integer()):
            return celtypes.DoubleType(value)
        return celtypes.IntType(int(value))
    if isinstance(value, str):
        return _string(value, shape.format)
    if isinstance(value, list):
        items = shape.items or _ANY
        return celtypes.ListType([to_cel(item, items) for item in value])
    if isinstance(value, dict):
        return _object(value, shape)
    return json_to_cel(value)


def _object(value: dict[str, Any], shape: Shape) -> celtypes.MapType:
    if shape.fields or shape.embedded:
        result = {}
        for key, item in value.items():
            name, field_shape = shape.fields.get(key, (None, _ANY))
            if name is not None:  # an undeclared field, or one CEL cannot name, is not seen
                result[celtypes.StringType(name)] = to_cel(item, field_shape)
        if shape.embedded:
            for key in ("apiVersion", "kind"):
                if isinstance(value.get(key), str):
                    result[celtypes.StringType(key)] = celtypes.StringType(value[key])
            metadata = value.get("metadata")
            if isinstance(metadata, dict):
                result[celtypes.StringType("metadata")] = celtypes.MapType(
                    {
                        celtypes.StringType(key): to_cel(metadata[key], _ANY)
                        for key in _EMBEDDED_METADATA
                        if key in metadata
                    }
                )
        return celtypes.MapType(result)
    values = shape.values or _ANY
    return celtypes.MapType({celtypes.StringType(key): to_cel(item, values) for key, item in value.items()})


def _string(value: str, format: str) -> Any:
    try:
        if format == "duration":
            return celtypes.DurationType(value)
        if format in ("date-time", "date"):
            return celtypes.TimestampType(value if format == "date-time" else f"{value}T00:00:00Z")
        if format == "byte":
            return celtypes.BytesType(base64.b64decode(value))
    except (ValueError, TypeError):
        pass  # a malformed value: format checks are not the rules' business; a string it stays
    return celtypes.StringType(value)


# ----- Evaluating -----


class _Walk:
    """One validation: walks the rule tree alongside the value and its old value."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors

    def visit(self, tree: RuleTree, value: Any, old: Any, path: str) -> None:
        unchanged = old is not _MISSING and type(value) is type(old) and value == old
        if unchanged and not tree.transitions:
            return  # ratcheting: nothing here or below is checked again
        if tree.rules and value is not None:
            self._rules(tree, value, old, path, transitions_only=unchanged)
        if isinstance(value, dict):
            previous = old if isinstance(old, dict) else {}
            for key, child in tree.properties.items():
                if key in value:
                    self.visit(child, value[key], previous.get(key, _MISSING), _child(path, key))
            if tree.additional is not None:
                for key, item in value.items():
                    if key not in tree.properties:
                        self.visit(tree.additional, item, previous.get(key, _MISSING), f"{path}[{key}]")
        elif isinstance(value, list) and tree.items is not None:
            olds = _correlated_items(tree.map_keys, value, old)
            for index, item in enumerate(value):
                self.visit(tree.items, item, olds[index], f"{path}[{index}]")

    def _rules(self, tree: RuleTree, value: Any, old: Any, path: str, *, transitions_only: bool) -> None:
        current, previous = _json(value), None if old is _MISSING else _json(old)
        for rule in tree.rules:
            if transitions_only and not rule.transition:
                continue
            if rule.transition and previous is None and not rule.optional_old_self:
                continue  # a transition rule needs the old value: not on creates
            error = _judge(rule, tree.shape, current, previous if rule.transition else None, path)
            if error is not None:
                self.errors.append(error)


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _correlated_items(map_keys: tuple[str, ...] | None, items: list[Any], old: Any) -> list[Any]:
    """Each item's old self: in a map list, the old item with the same keys; else none."""
    if map_keys is None or not isinstance(old, list):
        return [_MISSING] * len(items)
    by_keys = {_item_keys(map_keys, item): item for item in old if isinstance(item, dict)}
    return [
        by_keys.get(_item_keys(map_keys, item), _MISSING) if isinstance(item, dict) else _MISSING
        for item in items
    ]


def _item_keys(map_keys: Sequence[str], item: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(repr(item.get(key)) for key in map_keys)


def _json(value: Any) -> str:
    """A value's canonical text: what a rule's outcome is cached by."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _variables(rule: Rule, shape: Shape, current: str, previous: str | None) -> dict[str, Any]:
    """``self``, and ``oldSelf`` for a transition rule (an optional under ``optionalOldSelf``)."""
    variables = {"self": to_cel(json.loads(current), shape)}
    if rule.transition:
        old = None if previous is None else to_cel(json.loads(previous), shape)
        variables["oldSelf"] = OptionalValue(previous is not None, old) if rule.optional_old_self else old
    return variables


def _outcome(rule: Rule, shape: Shape, current: str, previous: str | None) -> Any:
    """What a rule evaluates to on a value (and old value): from the cache if small enough."""
    if len(current) + len(previous or "") > _CACHED_SIZE:
        return rule.program.evaluate(_variables(rule, shape, current, previous))
    return _cached_outcome(rule, shape, current, previous)


# Values up to this size (JSON characters) have their outcomes cached: the small subtrees that
# writes repeat (a route's paths and filters), not whole objects, which every status write changes.
_CACHED_SIZE = 1024


@functools.lru_cache(maxsize=8192)  # at most ~8 MiB
def _cached_outcome(rule: Rule, shape: Shape, current: str, previous: str | None) -> Any:
    """
    A rule is a pure function of its values, and writes mostly repeat values: the operator
    rewrites a route with new weights, not new paths. The key holds the rule and the shape, so
    neither is collected (and its id reused) while cached.
    """
    return rule.program.evaluate(_variables(rule, shape, current, previous))


def _judge(rule: Rule, shape: Shape, current: str, previous: str | None, path: str) -> FieldError | None:
    """The rule's error, if the value breaks it (or the rule cannot be evaluated on it)."""
    field = path or ROOT_FIELD
    type_name = shape.type  # the API server shows the schema's type, never the value
    result = _outcome(rule, shape, current, previous)
    if isinstance(result, CELEvalError):
        return FieldError.invalid(field, type_name, _evaluation_error(result, rule))
    if not isinstance(result, celtypes.BoolType):
        return FieldError.invalid(
            field, type_name, f"rule did not evaluate to a bool ({type(result).__name__}): {rule.text}"
        )
    if result:
        return None
    if rule.field_path:
        field = _render_field_path(path, shape, rule.field_path)
    message = _message(rule, _variables(rule, shape, current, previous))
    if rule.reason is FieldErrorType.DUPLICATE:
        return FieldError(FieldErrorType.DUPLICATE, field, type_name)
    if rule.reason in (FieldErrorType.FORBIDDEN, FieldErrorType.REQUIRED):
        return FieldError(rule.reason, field, detail=message)
    return FieldError.invalid(field, type_name, message)


def _message(rule: Rule, variables: dict[str, Any]) -> str:
    """The messageExpression's string if it gives a usable one, else the message, else the rule."""
    if rule.message_expression is not None:
        text = rule.message_expression.evaluate(variables)
        if isinstance(text, str) and text.strip() and "\n" not in text:  # `+` makes a plain str
            return str(text)
    return rule.message or f"failed rule: {rule.program.text.strip()}"


def _evaluation_error(error: CELEvalError, rule: Rule) -> str:
    """Worded as the API server words a rule that fails to evaluate."""
    message, cause = (
        (error.args[0] if error.args else str(error)),
        (error.args[1] if len(error.args) > 1 else None),
    )
    if cause is KeyError and isinstance(message, str) and "no such member" in message:
        key = message.rsplit(":", 1)[-1].strip().strip("'")
        return f"no such key: {key} evaluating rule: {rule.text}"
    if cause is TypeError or "overload" in str(message):
        return (
            "'no such overload': call arguments did not match a supported operator, function or "
            f"macro signature for rule: {rule.text}"
        )
    return f"{message} evaluating rule: {rule.text}"
