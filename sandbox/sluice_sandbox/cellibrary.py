"""
The Kubernetes CEL library functions that CEL rules may call and celpy lacks: the strings and
lists libraries (``lowerAscii()``, ``isSorted()``…), and the optional that ``oldSelf`` is under
``optionalOldSelf: true`` (``hasValue()``, ``value()``, ``orValue()``).

Each is a celpy custom function: it gets celpy values (the receiver first) and returns one, or a
CELEvalError for a misuse, as celpy's own functions do.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from celpy import celtypes
from celpy.evaluation import CELEvalError

# https://kubernetes.io/docs/reference/using-api/cel/#cel-options-language-features-and-libraries
# Functions receive and return celpy values; a misuse returns a CELEvalError, as celpy's own do.


def _error(message: str) -> CELEvalError:
    return CELEvalError(message, TypeError, ())


def _strings(function: Callable[..., Any]) -> Callable[..., Any]:
    """A string function: its receiver must be a string (a list's overload is chosen before)."""

    @functools.wraps(function)
    def checked(receiver: Any, *args: Any) -> Any:
        if not isinstance(receiver, celtypes.StringType):
            return _error(f"no such overload: {function.__name__} on {type(receiver).__name__}")
        try:
            return function(receiver, *args)
        except (TypeError, ValueError, IndexError) as problem:
            return _error(f"{function.__name__}: {problem}")

    return checked


def _lists(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def checked(receiver: Any, *args: Any) -> Any:
        if not isinstance(receiver, celtypes.ListType):
            return _error(f"no such overload: {function.__name__} on {type(receiver).__name__}")
        try:
            return function(receiver, *args)
        except (TypeError, ValueError) as problem:
            return _error(f"{function.__name__}: {problem}")

    return checked


@_strings
def _lower_ascii(text: str) -> celtypes.StringType:
    return celtypes.StringType("".join(c.lower() if c.isascii() else c for c in text))


@_strings
def _upper_ascii(text: str) -> celtypes.StringType:
    return celtypes.StringType("".join(c.upper() if c.isascii() else c for c in text))


@_strings
def _trim(text: str) -> celtypes.StringType:
    return celtypes.StringType(text.strip())


@_strings
def _char_at(text: str, index: int) -> celtypes.StringType:
    if not 0 <= index <= len(text):
        raise IndexError(f"index out of range: {index}")
    return celtypes.StringType(text[index : index + 1])


@_strings
def _substring(text: str, start: int, end: int | None = None) -> celtypes.StringType:
    end = len(text) if end is None else end
    if not 0 <= start <= end <= len(text):
        raise IndexError(f"index out of range: {start}, {end}")
    return celtypes.StringType(text[start:end])


@_strings
def _replace(text: str, old: str, new: str, limit: int = -1) -> celtypes.StringType:
    return celtypes.StringType(text.replace(old, new, limit))


@_strings
def _split(text: str, separator: str, limit: int = -1) -> celtypes.ListType:
    if limit == 0:
        return celtypes.ListType([])
    parts = list(text) if separator == "" else text.split(separator, limit - 1 if limit > 0 else -1)
    return celtypes.ListType([celtypes.StringType(part) for part in parts])


def _index_of(receiver: Any, needle: Any, start: int = 0) -> Any:
    if isinstance(receiver, celtypes.ListType):
        return celtypes.IntType(next((i for i, item in enumerate(receiver) if item == needle), -1))
    if isinstance(receiver, celtypes.StringType) and isinstance(needle, str):
        if not 0 <= start <= len(receiver):
            return _error(f"index out of range: {start}")
        return celtypes.IntType(receiver.find(needle, start))
    return _error(f"no such overload: indexOf on {type(receiver).__name__}")


def _last_index_of(receiver: Any, needle: Any) -> Any:
    if isinstance(receiver, celtypes.ListType):
        found = [i for i, item in enumerate(receiver) if item == needle]
        return celtypes.IntType(found[-1] if found else -1)
    if isinstance(receiver, celtypes.StringType) and isinstance(needle, str):
        return celtypes.IntType(receiver.rfind(needle))
    return _error(f"no such overload: lastIndexOf on {type(receiver).__name__}")


@_lists
def _join(items: list[Any], separator: str = "") -> celtypes.StringType:
    if not all(isinstance(item, str) for item in items):
        raise TypeError("join needs a list of strings")
    return celtypes.StringType(separator.join(items))


@_lists
def _is_sorted(items: list[Any]) -> celtypes.BoolType:
    return celtypes.BoolType(all(items[i] <= items[i + 1] for i in range(len(items) - 1)))


@_lists
def _sum(items: list[Any]) -> Any:
    return sum(items[1:], items[0]) if items else celtypes.IntType(0)


@_lists
def _max(items: list[Any]) -> Any:
    return max(items) if items else _error("max called on an empty list")


def _has_value(optional: Any) -> Any:
    if not isinstance(optional, OptionalValue):
        return _error("no such overload: hasValue")
    return celtypes.BoolType(optional.present)


def _value(optional: Any) -> Any:
    if not isinstance(optional, OptionalValue):
        return _error("no such overload: value")
    return optional.content if optional.present else _error("optional.none() dereference")


def _or_value(optional: Any, fallback: Any) -> Any:
    if not isinstance(optional, OptionalValue):
        return _error("no such overload: orValue")
    return optional.content if optional.present else fallback


@dataclasses.dataclass(frozen=True)
class OptionalValue:
    """``oldSelf`` under ``optionalOldSelf: true``: CEL's optional, with what rules call on it."""

    present: bool
    content: Any = None


KUBERNETES_LIBRARY: dict[str, Callable[..., Any]] = {
    # Kubernetes' strings library (cel-go's ext.Strings)
    "lowerAscii": _lower_ascii,
    "upperAscii": _upper_ascii,
    "trim": _trim,
    "charAt": _char_at,
    "substring": _substring,
    "replace": _replace,
    "split": _split,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "join": _join,
    # Kubernetes' list library (min() is celpy's own)
    "isSorted": _is_sorted,
    "sum": _sum,
    "max": _max,
    # Optionals, for optionalOldSelf
    "hasValue": _has_value,
    "value": _value,
    "orValue": _or_value,
}
