"""
Label and field selectors, as the Kubernetes API server parses and applies them.

Label selectors follow ``k8s.io/apimachinery/pkg/labels`` (``=``, ``==``, ``!=``, ``in``,
``notin``, ``key``, ``!key``, ``>``, ``<``); field selectors follow ``fields`` (``=``, ``==``,
``!=``) over dotted paths into the object (the API server allows only a few paths per
resource; the sandbox accepts any, which is a superset of what clients may send).
"""

import dataclasses
import enum
import re
from collections.abc import Iterable, Mapping
from typing import Any


class SelectorError(ValueError):
    """A selector that a real API server would refuse with 400 Bad Request."""


class Operator(enum.Enum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


@dataclasses.dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case Operator.EQUALS | Operator.IN:
                return present and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                # As in Kubernetes: an absent label is "not equal" to anything.
                return not present or value not in self.values
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present
            case Operator.GREATER_THAN | Operator.LESS_THAN:
                return present and _compare_int(value, self.operator, self.values)


def _compare_int(value: str | None, operator: Operator, values: frozenset[str]) -> bool:
    try:
        actual = int(value or "")
    except ValueError:
        return False  # a non-integer label never matches a numeric comparison
    (limit,) = (int(v) for v in values)
    return actual > limit if operator is Operator.GREATER_THAN else actual < limit


@dataclasses.dataclass(frozen=True)
class LabelSelector:
    """All requirements must match (Kubernetes has no OR in selectors)."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(req.matches(labels or {}) for req in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


# A label key: an optional DNS-subdomain prefix with a slash, then a name. A value: the same
# charset without slashes; it may be empty (`key=`). Validated loosely: no length limits.
_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(\s*([^()]*)\)\s*$")
_BINARY_RE = re.compile(rf"^\s*({_KEY})\s*(==|=|!=|>|<)\s*({_VALUE})\s*$")
_UNARY_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
_BINARY_OPERATORS = {
    "=": Operator.EQUALS,
    "==": Operator.EQUALS,
    "!=": Operator.NOT_EQUALS,
    ">": Operator.GREATER_THAN,
    "<": Operator.LESS_THAN,
}


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse the ``labelSelector`` query parameter (empty or absent selects everything)."""
    return LabelSelector(tuple(_parse_requirement(term) for term in _split_terms(text or "")))


def _split_terms(text: str) -> list[str]:
    # Commas separate requirements, except inside the parentheses of `in (a,b)` sets.
    terms: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced parentheses in selector: {text!r}")
        elif char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    if depth:
        raise SelectorError(f"unbalanced parentheses in selector: {text!r}")
    terms.append(text[start:])
    if len(terms) == 1 and not terms[0].strip():
        return []
    if any(not term.strip() for term in terms):
        raise SelectorError(f"empty requirement in selector: {text!r}")
    return terms


def _parse_requirement(term: str) -> Requirement:
    if match := _SET_RE.match(term):
        key, op, raw_values = match.groups()
        values = [value.strip() for value in raw_values.split(",")]
        if not all(_VALUE_RE.match(value) for value in values):
            raise SelectorError(f"invalid value in the set of requirement: {term!r}")
        return Requirement(key, Operator.IN if op == "in" else Operator.NOT_IN, frozenset(values))
    if match := _BINARY_RE.match(term):
        key, op, value = match.groups()
        operator = _BINARY_OPERATORS[op]
        if operator in (Operator.GREATER_THAN, Operator.LESS_THAN) and not value.lstrip("-").isdigit():
            raise SelectorError(f"for 'gt', 'lt' operators, the value must be an integer: {term!r}")
        return Requirement(key, operator, frozenset([value]))
    if match := _UNARY_RE.match(term):
        negation, key = match.groups()
        return Requirement(key, Operator.DOES_NOT_EXIST if negation else Operator.EXISTS)
    raise SelectorError(f"unable to parse requirement: {term!r}")


def label_selector_from_dict(selector: Mapping[str, Any] | None) -> LabelSelector:
    """
    Convert a structured ``metav1.LabelSelector`` (``matchLabels`` & ``matchExpressions``),
    as found in Deployments & Services, into a matcher. ``None`` selects everything.
    """
    requirements: list[Requirement] = [
        Requirement(key, Operator.EQUALS, frozenset([str(value)]))
        for key, value in (selector or {}).get("matchLabels", {}).items()
    ]
    operators = {
        "In": Operator.IN,
        "NotIn": Operator.NOT_IN,
        "Exists": Operator.EXISTS,
        "DoesNotExist": Operator.DOES_NOT_EXIST,
    }
    for expression in (selector or {}).get("matchExpressions", []):
        try:
            operator = operators[expression["operator"]]
        except KeyError:
            raise SelectorError(f"unsupported operator in {expression!r}") from None
        values = frozenset(str(value) for value in expression.get("values") or [])
        requirements.append(Requirement(expression["key"], operator, values))
    return LabelSelector(tuple(requirements))


def format_label_selector(selector: LabelSelector) -> str:
    """Render a selector back to its query-string form (e.g. for ``Scale.status.selector``)."""
    return ",".join(_format_requirement(req) for req in selector.requirements)


def _format_requirement(req: Requirement) -> str:
    values = sorted(req.values)
    match req.operator:
        case Operator.EQUALS | Operator.NOT_EQUALS:
            return f"{req.key}{req.operator.value}{values[0]}"
        case Operator.IN | Operator.NOT_IN:
            return f"{req.key} {req.operator.value} ({','.join(values)})"
        case Operator.EXISTS:
            return req.key
        case Operator.DOES_NOT_EXIST:
            return f"!{req.key}"
        case Operator.GREATER_THAN | Operator.LESS_THAN:
            return f"{req.key}{'>' if req.operator is Operator.GREATER_THAN else '<'}{values[0]}"


@dataclasses.dataclass(frozen=True)
class FieldRequirement:
    path: tuple[str, ...]
    value: str
    negated: bool = False

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (field_value(obj, self.path) == self.value) != self.negated


@dataclasses.dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all(req.matches(obj) for req in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)


_FIELD_RE = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(==|=|!=)\s*(.*?)\s*$")


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse the ``fieldSelector`` query parameter (empty or absent selects everything)."""
    requirements: list[FieldRequirement] = []
    for term in _split_escaped_commas(text or ""):
        match = _FIELD_RE.match(term)
        if not match:
            raise SelectorError(f"invalid field selector: {term!r}")
        path, op, value = match.groups()
        requirements.append(FieldRequirement(tuple(path.split(".")), _unescape(value), op == "!="))
    return FieldSelector(tuple(requirements))


def _split_escaped_commas(text: str) -> Iterable[str]:
    # Field values may contain escaped commas (`\,`), as in apimachinery's fields.EscapeValue().
    if not text.strip():
        return []
    return re.split(r"(?<!\\),", text)


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def field_value(obj: Mapping[str, Any], path: Iterable[str]) -> str:
    """A field as the API server compares it: a string; absent fields are empty strings."""
    current: Any = obj
    for part in path:
        if not isinstance(current, Mapping) or part not in current:
            return ""
        current = current[part]
    if isinstance(current, bool):
        return "true" if current else "false"
    return "" if current is None else str(current)
