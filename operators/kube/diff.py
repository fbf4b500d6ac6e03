"""Deciding whether a live object already is what we want, without writing it.

The API server fills in defaults (imagePullPolicy, strategy, clusterIP...), so
equality never holds; what matters is that everything we *render* is present
with the same value. Skipping needless writes keeps traffic objects untouched
across operator restarts and keeps API requests per step low.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def covers(live: Any, desired: Any) -> bool:
    """True when every field of ``desired`` is in ``live`` with the same value.

    Lists must have the same length and cover item by item: a removed container
    or backendRef is a difference, a defaulted field inside an item is not.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(key in live and covers(live[key], value) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(covers(a, b) for a, b in zip(live, desired, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(live) == float(desired)
    return bool(live == desired)


# Fields the API server owns on objects we replace whole: sending them back
# unchanged keeps a PUT from being refused (clusterIP is immutable) or racing.
_SERVER_OWNED_SPEC = {"Service": ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")}


def replacement(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The body for a PUT that turns ``live`` into ``desired`` and keeps what others own.

    Labels and annotations others added (kubectl, the Deployment controller)
    are kept; resourceVersion makes a concurrent change a 409 instead of a
    silent overwrite.
    """
    body = dict(desired)
    live_meta = live.get("metadata", {})
    meta = dict(desired.get("metadata", {}))
    meta["resourceVersion"] = live_meta.get("resourceVersion")
    meta["labels"] = {**(live_meta.get("labels") or {}), **(meta.get("labels") or {})}
    meta["annotations"] = {**(live_meta.get("annotations") or {}), **(meta.get("annotations") or {})}
    body["metadata"] = meta
    kept = _SERVER_OWNED_SPEC.get(str(desired.get("kind")), ())
    if kept:
        spec = dict(body.get("spec") or {})
        for name in kept:
            if name in (live.get("spec") or {}) and name not in spec:
                spec[name] = live["spec"][name]
        body["spec"] = spec
    return body
