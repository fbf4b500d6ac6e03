"""Object identity: which Kubernetes object a key names, and where it lives in the REST API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectKey:
    """Identity of a Kubernetes object: apiVersion, kind, namespace ("" when cluster-scoped), name."""

    api_version: str
    kind: str
    namespace: str
    name: str


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    """The key of an object as the API server returns it (or as we render it)."""
    meta = obj.get("metadata", {})
    return ObjectKey(
        str(obj.get("apiVersion")), str(obj.get("kind")), meta.get("namespace") or "", str(meta.get("name"))
    )


def plural_of(kind: str) -> str:
    """The resource name of a kind, by the rule client-go's RESTMapper guesses with.

    Lower case, then ``-s`` (``HTTPRoute`` -> ``httproutes``), ``-es`` after an
    ``s`` and ``-ies`` for a final ``y`` after a consonant (``Gateway`` ->
    ``gateways``, where client-go's guess says ``gatewaies``). Every kind Sluice
    touches follows it, so a new provider's kind needs no table entry.
    """
    lower = kind.lower()
    if lower.endswith("s"):
        return f"{lower}es"
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return f"{lower[:-1]}ies"
    return f"{lower}s"
