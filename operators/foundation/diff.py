"""Deciding whether a live object already is what we want, without writing it.

The API server fills in defaults (imagePullPolicy, strategy, clusterIP...), so
equality never holds; what matters is that everything we *render* is present
with the same value. Skipping needless writes keeps traffic objects untouched
across operator restarts and keeps API requests per step low.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any


def covers(live: Any, desired: Any, *, quantities: bool = False) -> bool:
    """True when every field of ``desired`` is in ``live`` with the same value.

    Lists must have the same length and cover item by item: a removed container
    or backendRef is a difference, a defaulted field inside an item is not. A
    ``None`` we render for an absent key covers it (the API server drops nulls),
    and resource quantities compare by value (it rewrites ``1000m`` as ``1``).
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(
            (value is None and live.get(key) is None)
            or (key in live and covers(live[key], value, quantities=quantities or key in _QUANTITY_MAPS))
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(covers(a, b, quantities=quantities) for a, b in zip(live, desired, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(live) == float(desired)
    if quantities and live != desired:
        return same_quantity(live, desired)
    return bool(live == desired)


# Maps whose values are resource quantities (container resources, limit ranges...).
_QUANTITY_MAPS = frozenset({"requests", "limits"})
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIX = {
    None: Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50,
    "Ei": Decimal(2) ** 60,
}


def same_quantity(a: Any, b: Any) -> bool:
    """``"1000m"`` and ``"1"`` (or ``1``) are the same Kubernetes quantity."""
    first, second = _quantity(a), _quantity(b)
    return first is not None and first == second


def _quantity(value: Any) -> Decimal | None:
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        return None


def same_spec(live: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """`live` covers `desired`, and its spec has nothing `desired` lacks.

    For objects whose spec we render complete, defaults included (the Rollouts
    of an Application): there, a field missing from `desired` was removed on
    purpose (a component's route dropped) and must go from the live object too.
    """
    return covers(live, desired) and covers(desired.get("spec"), live.get("spec"))


def apply_body(desired: Mapping[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """The server-side apply body that makes the fields we own what ``desired`` says.

    Only our fields are sent: labels, annotations, finalizers and spec fields
    others own (kubectl, a GitOps tool, the API server's defaults such as a
    Service's clusterIP) stay theirs, with no need to copy them back. Nulls are
    left out: in an apply, absence is how a field we owned goes away. The live
    object's resourceVersion makes a concurrent change a 409 instead of a
    silent overwrite (a decision read from a watch that was behind).
    """
    body: dict[str, Any] = without_nulls(desired)
    if live is not None and live.get("metadata", {}).get("resourceVersion"):
        body["metadata"] = {
            **body.get("metadata", {}),
            "resourceVersion": live["metadata"]["resourceVersion"],
        }
    return body


def without_nulls(value: Any) -> Any:
    """`value` with every null map entry left out, at any depth."""
    if isinstance(value, Mapping):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


def plain(value: Any) -> Any:
    """A deep copy made of dicts and lists only (kopf bodies are Mappings, not dicts).

    What is kept exactly as found (a user's route rules) must not share lists with the input.
    """
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value
